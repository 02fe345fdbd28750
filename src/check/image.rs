//! Reading what the checks need from an image: the boot partition's few files, and the root
//! filesystem through [`Ext4Files`].

use std::fs::File;
use std::path::Path;

use super::{check, BootFiles, CheckItem};
use crate::disk::{self, Slice};
use crate::fs::ext4::{Ext4, OpenMode};
use crate::fs::fat::FatVolume;
use crate::fs::Ext4Files;
use crate::inspect::{layout_of, InspectError};

/// The kubeadm-readiness check of a raw image.
pub fn check_image(raw: &Path) -> Result<Vec<CheckItem>, InspectError> {
    let (_, boot_p, root_p) = layout_of(raw)?;
    let f = File::open(raw).map_err(|source| InspectError::Io {
        path: raw.display().to_string(),
        source,
    })?;
    let vol = FatVolume::open(
        disk::ReadOnly(Slice::new(f, boot_p.start_bytes, boot_p.size_bytes)),
        0,
    )
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
    let fs = Ext4::open(raw, root_p.start_bytes, OpenMode::ReadOnly)
        .map_err(|e| InspectError::Fs(format!("root partition: {e}")))?;
    check(&Ext4Files(&fs), &boot).map_err(|e| InspectError::Fs(format!("root partition: {e}")))
}
