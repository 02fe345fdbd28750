//! piforge: turn one upstream Raspberry Pi image into ready-to-flash Kubernetes node images,
//! editing filesystems in user space (no root, no loop devices, no chroot).

pub mod apply;
pub mod apt;
pub mod artifacts;
pub mod bmap;
pub mod bootcfg;
pub mod build;
pub mod check;
pub mod clock;
pub mod compress;
pub mod customize;
pub mod digest;
pub mod disk;
pub mod flash;
pub mod fs;
pub mod inspect;
pub mod oci;
pub mod os_list;
pub mod output;
pub mod payload;
pub mod payload_files;
pub mod pki;
pub mod plan;
pub mod progress;
pub mod render;
pub mod size;
pub mod source;
pub mod sparse;
pub mod spec;
pub mod text;
