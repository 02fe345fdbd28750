use std::path::Path;

use serde::Serialize;

use super::facts::{self, CloudInit, FstabEntry, OsRelease, RootFiles, Swap};
use crate::disk::{self, Image, Partition};
use crate::fs::ext4::Ext4;
use crate::fs::ext4::Ext4Error;
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

/// Root-filesystem reads through libext2fs.
pub struct Ext4Files<'a>(pub &'a Ext4);

impl RootFiles for Ext4Files<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match self.0.read_file(path) {
            Ok(b) => Ok(Some(b)),
            Err(Ext4Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    fn exists(&self, path: &str) -> Result<bool, String> {
        Ok(self.0.stat(path).map_err(|e| e.to_string())?.is_some())
    }
    fn read_link(&self, path: &str) -> Result<Option<String>, String> {
        match self.0.stat(path).map_err(|e| e.to_string())? {
            Some(st) if st.kind == crate::fs::ext4::FileKind::Symlink => {
                self.0.read_link(path).map(Some).map_err(|e| e.to_string())
            }
            _ => Ok(None),
        }
    }
    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        match self.0.read_dir(dir) {
            Ok(entries) => {
                let mut v: Vec<String> = entries.into_iter().map(|e| e.name).collect();
                v.sort();
                Ok(v)
            }
            Err(Ext4Error::NotFound { .. }) | Err(Ext4Error::NotADirectory { .. }) => {
                Ok(Vec::new())
            }
            Err(e) => Err(e.to_string()),
        }
    }
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

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl Report {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let i = &self.input;
        let _ = writeln!(
            s,
            "image        {} ({}{})",
            i.path,
            i.format,
            if i.verified { ", sha256 verified" } else { "" }
        );
        let _ = writeln!(
            s,
            "sha256       {}",
            i.sha256.as_deref().unwrap_or("(not computed)")
        );
        let _ = writeln!(
            s,
            "size         {} ({})",
            i.image_bytes,
            human(i.image_bytes)
        );
        let os = self.os.as_ref();
        let _ = writeln!(
            s,
            "os           {}",
            os.and_then(|o| o.pretty_name.clone())
                .unwrap_or_else(|| "unknown".into())
        );
        let _ = writeln!(s, "table        {}, disk id {}", self.scheme, self.disk_id);
        let _ = writeln!(s, "partitions");
        for p in &self.partitions {
            let role = if p.index == self.boot_partition {
                "  boot"
            } else if p.index == self.root_partition {
                "  root"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  {}  start {:>11}  size {:>11} ({:>9})  type {:<8} {:<6} label {}{}",
                p.index,
                p.start_bytes,
                p.size_bytes,
                human(p.size_bytes),
                p.type_id,
                p.filesystem.to_string(),
                p.label.as_deref().unwrap_or("-"),
                role
            );
        }
        let _ = writeln!(
            s,
            "cmdline      {}",
            self.cmdline.as_deref().unwrap_or("(no cmdline.txt)")
        );
        let ci = &self.cloud_init;
        let _ = writeln!(
            s,
            "cloud-init   {}{}",
            if ci.installed {
                "installed"
            } else {
                "not installed"
            },
            match &ci.seed_dir {
                Some(d) => format!(
                    ", NoCloud seed in {d}{}",
                    if ci.seed_on_boot_partition {
                        " (boot partition)"
                    } else {
                        ""
                    }
                ),
                None => String::new(),
            }
        );
        let _ = writeln!(
            s,
            "swap         {} ({}): {}",
            serde_json::to_value(&self.swap.mechanism)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            if self.swap.active { "active" } else { "off" },
            self.swap.detail
        );
        let _ = writeln!(s, "machine-id   {}", self.machine_id);
        let _ = writeln!(s, "ext4         {}", self.ext4_features.join(" "));
        let _ = writeln!(
            s,
            "free         boot {}, root {}",
            human(self.free_bytes.boot),
            human(self.free_bytes.root)
        );
        s
    }
}

/// The kubeadm-readiness check of a raw image (see [`crate::check`]).
pub fn check_image(raw: &Path) -> Result<Vec<crate::check::CheckItem>, InspectError> {
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
    let boot = crate::check::BootFiles {
        cmdline: text("cmdline.txt")?,
        config: text("config.txt")?,
        user_data: text("user-data")?,
    };
    let fs = image
        .root_fs()
        .map_err(|e| InspectError::Fs(format!("root partition: {e}")))?;
    crate::check::check(&Ext4Files(&fs), &boot)
        .map_err(|e| InspectError::Fs(format!("root partition: {e}")))
}
