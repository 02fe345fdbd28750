pub mod ext4;
pub mod fat;
mod fat_chains;
pub use fat_chains::locate as fat_locate;
pub(crate) mod root_files;

pub use root_files::{Ext4Files, RootFiles};

/// The most piforge reads of one configuration file of an image (os-release, dpkg status,
/// cmdline.txt, config.txt, fstab, cloud.cfg...): a sparse file claiming a huge size must
/// give a clear error, not an allocation of its size (issue 12 item 4). A large dpkg status
/// (a desktop image's, some 3,000 packages) is about 5 MiB.
pub const CONFIG_FILE_MAX: u64 = 16 << 20;
