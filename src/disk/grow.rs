//! Growing the root partition: extend the image file, grow the last partition in the MBR or GPT
//! (GPT: move the backup header and fix the protective MBR), then grow ext4 with `resize2fs`
//! (libext2fs has no resize call; resize2fs accepts `image?offset=N`). Callers go through
//! [`super::Image::grow_root`].

use std::fs::File;
use std::path::Path;
use std::process::Command;

use super::layout::{DiskLayout, Scheme, SECTOR};
use super::mbr::Mbr;

/// Partitions end on 4 MiB boundaries, as the upstream images align them.
pub const ALIGN: u64 = 4 << 20;
/// Sectors the backup GPT (header and 128 entries) takes at the end of the disk.
const GPT_BACKUP_SECTORS: u64 = 33;

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error(
        "the root partition ({index}) is not the last partition on the disk, so it cannot grow"
    )]
    NotLast { index: u32 },
    #[error("partition {0} is not in the partition table")]
    NoPartition(u32),
    #[error("the root partition would need {0} sectors, more than an MBR can describe")]
    TooBig(u64),
    #[error("growing the image file {path} failed: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("rewriting the GPT failed: {0}")]
    Gpt(String),
    #[error("the image has no MBR to rewrite (no boot signature 55 AA at byte 510)")]
    NoMbr,
    #[error("resize2fs could not be run ({0}); install e2fsprogs")]
    NoResize2fs(std::io::Error),
    #[error("resize2fs failed to grow the root filesystem: {0}")]
    Resize2fs(String),
}

/// Rounds up to the partition alignment.
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Grows partition `index` (which must be the last one) of the image `f` (opened read-write,
/// found at `image`) to `new_bytes` and the ext4 filesystem inside it to fill it. Returns the
/// new image size in bytes. `epoch` pins resize2fs's clock.
pub(super) fn grow_partition(
    f: &mut File,
    image: &Path,
    layout: &DiskLayout,
    index: u32,
    new_bytes: u64,
    epoch: i64,
) -> Result<u64, GrowError> {
    let part = layout
        .partition(index)
        .ok_or(GrowError::NoPartition(index))?;
    if layout
        .partitions
        .iter()
        .any(|p| p.start_bytes > part.start_bytes)
    {
        return Err(GrowError::NotLast { index });
    }
    let new_bytes = align_up(new_bytes.max(part.size_bytes));
    let too_big = || GrowError::TooBig(new_bytes / SECTOR);
    let end = part
        .start_bytes
        .checked_add(new_bytes)
        .ok_or_else(too_big)?;
    let image_len = match layout.scheme {
        Scheme::Mbr => end,
        Scheme::Gpt => end
            .checked_add(GPT_BACKUP_SECTORS * SECTOR)
            .ok_or_else(too_big)?,
    }
    .max(layout.image_bytes);
    let io = |source| GrowError::Io {
        path: image.display().to_string(),
        source,
    };
    if layout.scheme == Scheme::Mbr {
        // Checked before the file grows, so a refusal leaves it as it was.
        let sectors = new_bytes / SECTOR;
        let sectors32 = u32::try_from(sectors).map_err(|_| GrowError::TooBig(sectors))?;
        let mut mbr = Mbr::read_from(f).map_err(io)?.ok_or(GrowError::NoMbr)?;
        if !mbr.set_sectors(index, sectors32) {
            return Err(GrowError::NoPartition(index));
        }
        f.set_len(image_len).map_err(io)?;
        mbr.write_into(f).map_err(io)?;
    } else {
        f.set_len(image_len).map_err(io)?;
        grow_gpt(f, index, end / SECTOR - 1, image_len / SECTOR)?;
    }
    f.sync_all().map_err(io)?;
    resize2fs(image, part.start_bytes, new_bytes, epoch)?;
    Ok(image_len)
}

fn grow_gpt(
    f: &mut std::fs::File,
    index: u32,
    last_lba: u64,
    disk_sectors: u64,
) -> Result<(), GrowError> {
    let gerr = |e: &dyn std::fmt::Display| GrowError::Gpt(e.to_string());
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(&mut *f)
        .map_err(|e| gerr(&e))?;
    let mut parts = disk.partitions().clone();
    let p = parts.get_mut(&index).ok_or(GrowError::NoPartition(index))?;
    p.last_lba = last_lba;
    // Rebuilds both headers for the new disk size: the backup moves to the last sector.
    disk.update_partitions(parts).map_err(|e| gerr(&e))?;
    disk.write_inplace().map_err(|e| gerr(&e))?;
    drop(disk);
    // The protective MBR's 0xEE entry covers the whole disk (capped at 2^32-1 sectors).
    let io = |source| GrowError::Io {
        path: "protective MBR".into(),
        source,
    };
    let mut mbr = Mbr::read_from(f).map_err(io)?.ok_or(GrowError::NoMbr)?;
    mbr.set_protective_size(disk_sectors);
    mbr.write_into(f).map_err(io)
}

/// The first line `resize2fs` prints of itself (`resize2fs 1.47.2 (1-Jan-2025)`), asked once
/// per process: what a growth's bytes depend on besides the image, its size and the clock
/// (the digests of grown images are remembered by it, `build/digest_memo.rs`). `unknown` when
/// it cannot be run (a growth then fails anyway).
pub fn resize2fs_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        Command::new("resize2fs")
            .stdin(std::process::Stdio::null())
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .find(|l| l.starts_with("resize2fs "))
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string())
    })
}

/// Runs `resize2fs 'image?offset=N' SIZEk` with its clock pinned to `epoch`.
///
/// Without `-f`: resize2fs refuses a filesystem marked with errors or not cleanly unmounted,
/// or not checked since its last mount (`s_lastcheck < s_mtime`), and a size past the device
/// or below its minimum. [`super::Image::grow_root`] checks the filesystem with e2fsck and
/// records the check before calling this (issue 12 item 7: `-f` skipped all of that).
///
/// resize2fs ignores the offset when it sizes a regular file: after growing, it truncates the
/// file to the new filesystem size, cutting off the end of an image whose filesystem starts at
/// an offset. It only does so when the image's descriptor is not 0 (`if (fd > 0)` in
/// resize/main.c), so the child starts with standard input closed and its open() of the image
/// gets descriptor 0. The image's length is checked afterwards all the same.
pub fn resize2fs(image: &Path, offset: u64, bytes: u64, epoch: i64) -> Result<(), GrowError> {
    use std::os::unix::process::CommandExt;
    let len_before = std::fs::metadata(image)
        .map_err(|source| GrowError::Io {
            path: image.display().to_string(),
            source,
        })?
        .len();
    let mut cmd = Command::new("resize2fs");
    cmd.arg(format!("{}?offset={offset}", image.display()))
        .arg(format!("{}K", bytes / 1024))
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: close(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(0);
            Ok(())
        });
    }
    let out = cmd.output().map_err(GrowError::NoResize2fs)?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let last = msg
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(GrowError::Resize2fs(last.trim().to_string()));
    }
    let len_after = std::fs::metadata(image)
        .map_err(|source| GrowError::Io {
            path: image.display().to_string(),
            source,
        })?
        .len();
    if len_after != len_before {
        return Err(GrowError::Resize2fs(format!(
            "it changed the image length from {len_before} to {len_after} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::read_layout;

    fn rw(img: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(img)
            .unwrap()
    }

    use crate::disk::test_disk::{make_disk, sh};

    const ROOT_START: u64 = crate::disk::test_disk::ROOT_START * 512;

    fn block_count(img: &Path) -> u64 {
        let (ok, out) = sh(
            "debugfs",
            &[
                "-R",
                "stats",
                &format!("{}?offset={ROOT_START}", img.display()),
            ],
            None,
        );
        assert!(ok, "{out}");
        out.lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    fn grow_and_check(gpt: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let img = make_disk(tmp.path(), gpt);
        let layout = read_layout(&mut std::fs::File::open(&img).unwrap()).unwrap();
        let root = layout.partition(2).unwrap().clone();
        let new_len = grow_partition(
            &mut rw(&img),
            &img,
            &layout,
            2,
            100 << 20,
            crate::clock::DEFAULT_EPOCH,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), new_len);
        let after = read_layout(&mut std::fs::File::open(&img).unwrap()).unwrap();
        let p = after.partition(2).unwrap();
        assert_eq!(p.start_bytes, root.start_bytes);
        assert_eq!(p.size_bytes, align_up(100 << 20));
        assert_eq!(after.disk_id, layout.disk_id);
        if gpt {
            let (ok, out) = sh("sgdisk", &["-v", img.to_str().unwrap()], None);
            assert!(ok && out.contains("No problems found"), "{out}");
        } else {
            let (ok, out) = sh("sfdisk", &["-V", img.to_str().unwrap()], None);
            assert!(ok, "{out}");
        }
        let (ok, out) = sh(
            "e2fsck",
            &["-fn", &format!("{}?offset={ROOT_START}", img.display())],
            None,
        );
        assert!(ok, "{out}");
        assert_eq!(
            block_count(&img) * 1024,
            align_up(100 << 20),
            "ext4 fills the partition"
        );
    }

    #[test]
    fn grows_mbr_root() {
        grow_and_check(false);
    }

    #[test]
    fn grows_gpt_root_and_moves_backup_header() {
        grow_and_check(true);
    }

    #[test]
    fn same_growth_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let a = make_disk(tmp.path(), false);
        let b = tmp.path().join("copy.img");
        std::fs::copy(&a, &b).unwrap();
        for (i, img) in [&a, &b].into_iter().enumerate() {
            if i == 1 {
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            let layout = read_layout(&mut std::fs::File::open(img).unwrap()).unwrap();
            grow_partition(&mut rw(img), img, &layout, 2, 64 << 20, 1_700_000_000).unwrap();
        }
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "two growths differ"
        );
    }

    #[test]
    fn refuses_a_partition_that_is_not_last() {
        let tmp = tempfile::tempdir().unwrap();
        let img = make_disk(tmp.path(), false);
        let layout = read_layout(&mut std::fs::File::open(&img).unwrap()).unwrap();
        let e = grow_partition(&mut rw(&img), &img, &layout, 1, 64 << 20, 0).unwrap_err();
        assert!(matches!(e, GrowError::NotLast { index: 1 }), "{e}");
    }
}
