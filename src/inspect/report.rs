use std::path::Path;

use serde::Serialize;

use super::facts::{self, CloudInit, FstabEntry, OsRelease, RootFiles, Swap};
use crate::disk::{self, Image, Partition};
use crate::fs::Ext4Files;
use crate::source::{self, SourceImage};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Image(#[from] disk::ImageError),
    #[error("{0}")]
    Fs(String),
}

/// What the input was and how it was read.
#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    pub path: String,
    pub format: String,
    pub sha256: Option<String>,
    /// True when a digest from the user or a `.sha256`/`SHA256SUMS` file was checked.
    pub verified: bool,
    /// Size of the raw (decompressed) image.
    pub image_bytes: u64,
    /// The raw image piforge read (the input itself, or its decompressed copy in the cache).
    pub raw_path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootInfo {
    pub label: String,
    pub volume_id: String,
    pub fat_type: String,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RootInfo {
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub block_size: u64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FreeBytes {
    pub boot: u64,
    pub root: u64,
}

/// Everything `inspect` reports; the JSON form is this struct.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub input: InputInfo,
    pub scheme: disk::Scheme,
    pub disk_id: String,
    pub partitions: Vec<Partition>,
    pub boot_partition: u32,
    pub root_partition: u32,
    pub os: Option<OsRelease>,
    pub cmdline: Option<String>,
    pub boot: BootInfo,
    pub root: RootInfo,
    pub fstab: Vec<FstabEntry>,
    pub cloud_init: CloudInit,
    pub swap: Swap,
    pub machine_id: String,
    pub ext4_features: Vec<String>,
    pub free_bytes: FreeBytes,
}

/// Inspects an opened source image.
pub fn inspect(input: &Path, img: &SourceImage) -> Result<Report, InspectError> {
    let image = Image::open(&img.path)?;
    let (layout, boot_p, root_p) = (image.layout(), image.boot(), image.root());
    let fs_err = |what: &str, e: &dyn std::fmt::Display| InspectError::Fs(format!("{what}: {e}"));

    // Boot partition (FAT), read-only.
    let vol = image.boot_fs(0).map_err(|e| fs_err("boot partition", &e))?;
    let cmdline = vol
        .read_file("cmdline.txt")
        .map_err(|e| fs_err("boot partition", &e))?
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_string());
    let mut files: Vec<String> = vol
        .list("/")
        .map_err(|e| fs_err("boot partition", &e))?
        .into_iter()
        .map(|e| {
            if e.is_dir {
                format!("{}/", e.name)
            } else {
                e.name
            }
        })
        .collect();
    files.sort();
    let id = vol.volume_id();
    let boot = BootInfo {
        label: vol.label(),
        volume_id: format!("{:04X}-{:04X}", id >> 16, id & 0xffff),
        fat_type: vol.fat_type().to_string(),
        files,
    };
    let boot_free = vol.free_bytes().map_err(|e| fs_err("boot partition", &e))?;
    drop(vol);

    // Root partition (ext4) through libext2fs, read-only.
    let fs = image.root_fs().map_err(|e| fs_err("root partition", &e))?;
    let info = fs.info();
    let files = Ext4Files(&fs);
    let e = |e: String| InspectError::Fs(format!("root partition: {e}"));
    let os = facts::os_release(&files).map_err(e)?;
    let fstab = files
        .read_string("/etc/fstab")
        .map_err(e)?
        .map(|t| facts::parse_fstab(&t))
        .unwrap_or_default();
    let mount = facts::boot_mount(&fstab);
    let cloud_init = facts::cloud_init(&files, mount.as_deref(), Some(&boot.label)).map_err(e)?;
    let swap = facts::swap(&files).map_err(e)?;
    let machine_id = facts::machine_id(&files).map_err(e)?;

    Ok(Report {
        input: InputInfo {
            path: input.display().to_string(),
            format: img.format.to_string(),
            sha256: img.input_sha256.clone(),
            verified: img.verified,
            image_bytes: img.size,
            raw_path: img.path.display().to_string(),
        },
        scheme: layout.scheme,
        disk_id: layout.disk_id.clone(),
        boot_partition: boot_p.index,
        root_partition: root_p.index,
        partitions: layout.partitions.clone(),
        os,
        cmdline,
        boot,
        root: RootInfo {
            label: root_p.label.clone(),
            uuid: root_p.fs_uuid.clone(),
            block_size: u64::from(info.block_size),
            size_bytes: info.blocks_count * u64::from(info.block_size),
        },
        fstab,
        cloud_init,
        swap,
        machine_id,
        ext4_features: info.features.clone(),
        free_bytes: FreeBytes {
            boot: boot_free,
            root: info.free_blocks * u64::from(info.block_size),
        },
    })
}
