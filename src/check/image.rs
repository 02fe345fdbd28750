//! Reading what the checks need from an image: the boot partition's few files, and the root
//! filesystem through [`Ext4Files`].

use std::path::Path;

use super::{check, BootFiles, CheckItem};
use crate::disk::Image;
use crate::fs::Ext4Files;
use crate::inspect::InspectError;

/// The kubeadm-readiness check of a raw image.
pub fn check_image(raw: &Path) -> Result<Vec<CheckItem>, InspectError> {
    let image = Image::open(raw)?;
    let vol = image
        .boot_fs(0)
        .map_err(|e| InspectError::Fs(format!("boot partition: {e}")))?;
    let text = |name: &str| -> Result<Option<String>, InspectError> {
        Ok(vol
            .read_file(name)
            .map_err(|e| InspectError::Fs(format!("boot partition: {e}")))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    let boot = BootFiles {
        cmdline: text("cmdline.txt")?,
        config: text("config.txt")?,
        user_data: text("user-data")?,
    };
    let fs = image
        .root_fs()
        .map_err(|e| InspectError::Fs(format!("root partition: {e}")))?;
    let info = fs.info();
    let free = info.free_blocks * u64::from(info.block_size);
    let root = Ext4Files(&fs);
    let err = |e| InspectError::Fs(format!("root partition: {e}"));
    let mut items = check(&root, &boot).map_err(err)?;
    items.push(super::space::first_boot_room(&root, boot.cmdline.as_deref(), free).map_err(err)?);
    Ok(items)
}
