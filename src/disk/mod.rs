//! The disk image: partition tables (MBR and GPT), finding the boot and root partitions, the
//! [`Image`] handle that opens an image once and hands out filesystems bounded to their
//! partitions, and every write to the partition table (disk id, growth).
//!
//! | file | owns |
//! | --- | --- |
//! | `image.rs` | [`Image`]: open once, layout, bounded FAT and ext4 handles, table writes |
//! | `layout.rs` | reading the table into a [`DiskLayout`], choosing boot and root |
//! | `mbr.rs` | the one MBR reader/writer (entries, disk id, protective entry) |
//! | `gpt_check.rs` | GPT header sanity checks before the `gpt` crate parses them |
//! | `probe.rs` | a filesystem's type, label and UUID from its first sectors |
//! | `grow.rs` | growing the last partition (MBR/GPT) and ext4 (`resize2fs`) |
//! | `fsck.rs` | checking the root filesystem (`e2fsck -fn`) before writing into it |
//! | `io.rs` | [`Slice`] (a partition as a device) and [`ReadOnly`] |

mod fsck;
mod gpt_check;
mod grow;
mod image;
mod io;
mod layout;
mod mbr;
mod probe;

pub use fsck::{check_ext4, FsckError};
pub use grow::{align_up, resize2fs, resize2fs_version, GrowError, ALIGN};
pub use image::{BootFs, BootFsMut, Image, ImageError};
pub use io::{add_range, around, read_over, split, Device, Overlay, ReadOnly, Slice};
pub use layout::{
    read_layout, DiskError, DiskLayout, Filesystem, Partition, Scheme, BOOT_LABELS, ROOT_LABELS,
    SECTOR,
};
pub use mbr::{Mbr, MbrEntry};
pub use probe::{probe_bytes, probe_fs, FsProbe};

#[cfg(test)]
pub(crate) mod test_disk;
