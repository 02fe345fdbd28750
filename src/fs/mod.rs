pub mod ext4;
pub mod fat;
pub(crate) mod root_files;

pub use root_files::{Ext4Files, RootFiles};
