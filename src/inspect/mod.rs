//! `piforge inspect`: facts about an image, for people and (with `--json`) for programs.

pub mod facts;

mod report;
pub use report::*;
