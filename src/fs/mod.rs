pub mod ext4;
pub mod fat;
mod fat_chains;
pub(crate) mod root_files;

pub use root_files::{Ext4Files, RootFiles};
