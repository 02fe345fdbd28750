//! [`Image`]: a disk image opened once, with its layout read once, handing out filesystem
//! handles bounded to their partitions and owning every write to the partition table.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use super::fsck::{self, FsckError};
use super::grow::{self, GrowError};
use super::io::{Device, Overlay, ReadOnly, Slice};
use super::layout::{read_layout, DiskError, DiskLayout, Partition, Scheme};
use super::mbr::Mbr;
use crate::fs::ext4::{Ext4, Ext4Error, OpenMode, OpenOptions};
use crate::fs::fat::{FatError, FatVolume};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot open {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {source}")]
    Disk { path: String, source: DiskError },
    #[error("{path} has no FAT boot partition ({found})")]
    NoBoot { path: String, found: String },
    #[error("{path} has no ext4 root partition ({found})")]
    NoRoot { path: String, found: String },
    #[error("cannot write the partition table of {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("{path} is opened read-only, so its partition table cannot change")]
    ReadOnly { path: String },
    #[error("{path} has a GPT partition table; only an MBR has a 32-bit disk id")]
    NotMbr { path: String },
    #[error(transparent)]
    Grow(#[from] GrowError),
    #[error(transparent)]
    Fsck(#[from] FsckError),
    #[error("root filesystem: {0}")]
    Ext4(#[from] Ext4Error),
}

/// The boot partition of a read-only [`Image`], through fatfs.
pub type BootFs<'a> = FatVolume<ReadOnly<Slice<&'a Device>>>;
/// The boot partition of a writable [`Image`], through fatfs.
pub type BootFsMut<'a> = FatVolume<Slice<&'a Device>>;

/// A raw disk image with a boot (FAT) and a root (ext4) partition.
///
/// The file is opened once and its partition table read once; the FAT handle reads and writes
/// only inside the boot partition ([`Slice`]) and the ext4 handle only inside the root partition
/// (the shim refuses I/O past its end and a superblock that claims more). Every change to the
/// partition table (disk id, growth) goes through here.
///
/// Opened over another image ([`Image::open_over`]), it reads that image and writes into a new
/// file ([`Overlay`]), which then holds only the bytes written.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    file: Device,
    writable: bool,
    layout: DiskLayout,
    boot: Partition,
    root: Partition,
}

fn describe(layout: &DiskLayout) -> String {
    let parts: Vec<String> = layout
        .partitions
        .iter()
        .map(|p| format!("partition {} is {} ({})", p.index, p.filesystem, p.type_id))
        .collect();
    parts.join(", ")
}

impl Image {
    /// Opens a raw image for reading and finds its boot and root partitions.
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        Self::open_mode(path, false)
    }

    /// Opens a raw image for editing (a throwaway copy: see `apply`).
    pub fn open_rw(path: &Path) -> Result<Image, ImageError> {
        Self::open_mode(path, true)
    }

    fn open_mode(path: &Path, writable: bool) -> Result<Image, ImageError> {
        let shown = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|source| ImageError::Io {
                path: shown.clone(),
                source,
            })?;
        let (layout, boot, root) = Self::read(&file, &shown)?;
        Ok(Image {
            path: path.to_path_buf(),
            file: Device::File(file),
            writable,
            layout,
            boot,
            root,
        })
    }

    /// Opens the raw image `base` for editing without changing it: every write goes into
    /// `top` instead (set to `base`'s length), reads see those writes over `base`'s bytes,
    /// and [`Image::written`] tells which bytes `top` holds. `written` are the ranges `top`
    /// already holds (an earlier session's [`Image::written`]: layers applied one after the
    /// other into one file; none for an empty file). The root partition cannot grow this way.
    pub fn open_over(
        base: &Path,
        top: std::sync::Arc<File>,
        written: &[(u64, u64)],
    ) -> Result<Image, ImageError> {
        let shown = base.display().to_string();
        let io_err = |source| ImageError::Io {
            path: shown.clone(),
            source,
        };
        let file = File::open(base).map_err(io_err)?;
        let overlay = Overlay::new(file, top, written).map_err(io_err)?;
        // The partition table as the layers before left it.
        let (layout, boot, root) = Self::read_from(&overlay, &shown)?;
        Ok(Image {
            path: base.to_path_buf(),
            file: Device::Overlay(overlay),
            writable: true,
            layout,
            boot,
            root,
        })
    }

    /// Opened over another image: the byte ranges written so far (increasing, disjoint);
    /// `None` for an image edited in place.
    pub fn written(&self) -> Option<Vec<(u64, u64)>> {
        match &self.file {
            Device::Overlay(o) => Some(o.written()),
            Device::File(_) => None,
        }
    }

    /// Opened over another image: records the ranges a root filesystem session wrote into it
    /// ([`crate::fs::ext4::Ext4::commit_written`]).
    pub fn mark_written(&self, ranges: &[(u64, u64)]) {
        if let Device::Overlay(o) = &self.file {
            o.mark_written(ranges);
        }
    }

    fn read(file: &File, shown: &str) -> Result<(DiskLayout, Partition, Partition), ImageError> {
        Self::read_from(file, shown)
    }

    fn read_from<D>(dev: D, shown: &str) -> Result<(DiskLayout, Partition, Partition), ImageError>
    where
        D: io::Read + io::Seek + std::fmt::Debug,
    {
        let layout = read_layout(&mut BufReader::new(dev)).map_err(|source| ImageError::Disk {
            path: shown.to_string(),
            source,
        })?;
        let boot = layout
            .boot_partition()
            .cloned()
            .ok_or_else(|| ImageError::NoBoot {
                path: shown.to_string(),
                found: describe(&layout),
            })?;
        let root = layout
            .root_partition()
            .cloned()
            .ok_or_else(|| ImageError::NoRoot {
                path: shown.to_string(),
                found: describe(&layout),
            })?;
        Ok((layout, boot, root))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn layout(&self) -> &DiskLayout {
        &self.layout
    }

    pub fn scheme(&self) -> Scheme {
        self.layout.scheme
    }

    /// The boot (FAT) partition.
    pub fn boot(&self) -> &Partition {
        &self.boot
    }

    /// The root (ext4) partition.
    pub fn root(&self) -> &Partition {
        &self.root
    }

    /// The boot filesystem, read-only; `epoch` is the fatfs clock.
    pub fn boot_fs(&self, epoch: i64) -> Result<BootFs<'_>, FatError> {
        let b = &self.boot;
        FatVolume::open(
            ReadOnly(Slice::new(&self.file, b.start_bytes, b.size_bytes)),
            epoch,
        )
    }

    /// The boot filesystem for editing (the image must be opened with [`Image::open_rw`]).
    pub fn boot_fs_mut(&mut self, epoch: i64) -> Result<BootFsMut<'_>, FatError> {
        if !self.writable {
            return Err(FatError::Open(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the image is opened read-only",
            )));
        }
        let b = &self.boot;
        FatVolume::open(Slice::new(&self.file, b.start_bytes, b.size_bytes), epoch)
    }

    /// The root filesystem, read-only.
    pub fn root_fs(&self) -> Result<Ext4, Ext4Error> {
        self.root_fs_with(&OpenOptions::new(OpenMode::ReadOnly))
    }

    /// The root filesystem with `opts` (read-write needs [`Image::open_rw`]). The session is
    /// bounded to the root partition.
    ///
    /// Opened over another image, a read-write session writes into the overlay's file
    /// ([`OpenOptions::split_into`]); record what it wrote with [`Image::mark_written`].
    pub fn root_fs_with(&self, opts: &OpenOptions) -> Result<Ext4, Ext4Error> {
        if opts.mode == OpenMode::ReadWrite && !self.writable {
            return Err(Ext4Error::ReadOnly {
                op: "edit the root filesystem of",
                path: self.path.display().to_string(),
            });
        }
        let split;
        let opts = match &self.file {
            // Both modes see the bytes written so far into `top`; whole 1 KiB units of the
            // filesystem, as the shim reads them (ext4 sessions write whole units anyway).
            Device::Overlay(o) => {
                let r = &self.root;
                o.align_within(r.start_bytes, r.start_bytes + r.size_bytes, 1024)
                    .map_err(|source| Ext4Error::Image {
                        image: self.path.clone(),
                        source,
                    })?;
                let mut split_opts = opts.clone();
                split_opts.split_into = Some(o.top().clone());
                split_opts.split_written = o.written();
                split = split_opts;
                &split
            }
            _ => opts,
        };
        Ext4::open_bounded(
            &self.path,
            self.root.start_bytes,
            self.root.size_bytes,
            opts,
        )
    }

    /// Checks the root filesystem before anything writes into it: the bounded open's refusals
    /// (larger than its partition, journal to recover, error state, ...), then `e2fsck -fn`
    /// (see [`fsck`]); a damaged one is refused with e2fsck's first complaint.
    pub fn check_root(&self) -> Result<(), ImageError> {
        drop(self.root_fs()?);
        Ok(fsck::check_ext4(&self.path, self.root.start_bytes)?)
    }

    fn writable(&self) -> Result<(), ImageError> {
        if self.writable {
            Ok(())
        } else {
            Err(ImageError::ReadOnly {
                path: self.path.display().to_string(),
            })
        }
    }

    /// Sets the MBR disk id (bytes 440..444, the `PARTUUID=<id>-0N` prefix).
    pub fn set_disk_id(&mut self, id: u32) -> Result<(), ImageError> {
        self.writable()?;
        let path = self.path.display().to_string();
        if self.layout.scheme != Scheme::Mbr {
            return Err(ImageError::NotMbr { path });
        }
        let werr = |source| ImageError::Write {
            path: path.clone(),
            source,
        };
        let mut mbr = Mbr::read_from(&mut &self.file)
            .map_err(werr)?
            .ok_or_else(|| werr(io::Error::other("the MBR boot signature is gone")))?;
        mbr.set_disk_id(id);
        mbr.write_into(&mut &self.file).map_err(werr)?;
        self.layout.disk_id = format!("{id:08x}");
        Ok(())
    }

    /// Grows the root partition (which must be the last) to at least `new_bytes`, rounded up to
    /// [`grow::ALIGN`], and its ext4 filesystem to fill it; the layout is read again afterwards.
    /// Returns the new image size. `epoch` pins resize2fs's clock.
    ///
    /// The filesystem is checked first ([`Image::check_root`]) and the check recorded
    /// (`s_lastcheck`), so resize2fs runs without `-f` and keeps its own refusals (error
    /// state, not cleanly unmounted, a size past the device, smaller than its minimum).
    pub fn grow_root(&mut self, new_bytes: u64, epoch: i64) -> Result<u64, ImageError> {
        self.writable()?;
        let path = self.path.display().to_string();
        let cannot = |path| ImageError::Write {
            path,
            source: io::Error::other("an image written over another cannot grow"),
        };
        // Refused before anything is written.
        if let Device::Overlay(_) = self.file {
            return Err(cannot(path));
        }
        self.check_root()?;
        let mut opts = OpenOptions::new(OpenMode::ReadWrite);
        opts.clock = Some(epoch);
        let mut fs = self.root_fs_with(&opts)?;
        fs.record_check()?;
        fs.commit()?;
        let Device::File(file) = &mut self.file else {
            return Err(cannot(path));
        };
        let len = grow::grow_partition(
            file,
            &self.path,
            &self.layout,
            self.root.index,
            new_bytes,
            epoch,
        )?;
        let (layout, boot, root) = Self::read(file, &path)?;
        self.layout = layout;
        self.boot = boot;
        self.root = root;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    //! Judged by sfdisk, e2fsck, fsck.vfat and debugfs, not by piforge's own reader.
    use super::*;
    use crate::disk::align_up;

    use crate::disk::test_disk::{make_disk, sh, BOOT_START, ROOT_START};

    fn sfdisk_id(img: &Path) -> String {
        let (ok, out) = sh("sfdisk", &["-J", img.to_str().unwrap()], None);
        assert!(ok, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["partitiontable"]["id"].as_str().unwrap().to_string()
    }

    #[test]
    fn finds_both_partitions_and_hands_out_bounded_filesystems() {
        let tmp = tempfile::tempdir().unwrap();
        let img = make_disk(tmp.path(), false);
        let image = Image::open(&img).unwrap();
        assert_eq!(image.scheme(), Scheme::Mbr);
        assert_eq!(image.layout().disk_id, "11223344");
        assert_eq!(image.boot().start_bytes, BOOT_START * 512);
        assert_eq!(image.root().start_bytes, ROOT_START * 512);
        let vol = image.boot_fs(0).unwrap();
        assert_eq!(vol.label(), "bootfs");
        drop(vol);
        let fs = image.root_fs().unwrap();
        assert_eq!(fs.info().label, "rootfs");
        // Read-only: no table writes, no read-write filesystem.
        let mut image = image;
        assert!(matches!(
            image.set_disk_id(1),
            Err(ImageError::ReadOnly { .. })
        ));
        assert!(matches!(
            image.grow_root(64 << 20, 1),
            Err(ImageError::ReadOnly { .. })
        ));
        assert!(image.boot_fs_mut(0).is_err());
        let rw = OpenOptions::new(OpenMode::ReadWrite);
        assert!(matches!(
            image.root_fs_with(&rw),
            Err(Ext4Error::ReadOnly { .. })
        ));
    }

    #[test]
    fn disk_id_and_growth_go_through_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let img = make_disk(tmp.path(), false);
        let mut image = Image::open_rw(&img).unwrap();
        image.set_disk_id(0xdead_beef).unwrap();
        assert_eq!(image.layout().disk_id, "deadbeef");
        assert_eq!(sfdisk_id(&img), "0xdeadbeef");
        let len = image
            .grow_root(100 << 20, crate::clock::DEFAULT_EPOCH)
            .unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), len);
        // The layout was read again: the handle now sees the grown partition.
        assert_eq!(image.root().size_bytes, align_up(100 << 20));
        assert_eq!(image.layout().disk_id, "deadbeef");
        let fs = image.root_fs().unwrap();
        let info = fs.info();
        assert_eq!(
            info.blocks_count * u64::from(info.block_size),
            align_up(100 << 20)
        );
        drop(fs);
        drop(image);
        let (ok, out) = sh("sfdisk", &["-V", img.to_str().unwrap()], None);
        assert!(ok, "{out}");
        assert_eq!(sfdisk_id(&img), "0xdeadbeef");
        let (ok, out) = sh(
            "e2fsck",
            &[
                "-fn",
                &format!("{}?offset={}", img.display(), ROOT_START * 512),
            ],
            None,
        );
        assert!(ok, "{out}");
        let data = std::fs::read(&img).unwrap();
        let boot = tmp.path().join("boot.part");
        let b = (BOOT_START * 512) as usize;
        std::fs::write(&boot, &data[b..b + (16384 * 512)]).unwrap();
        let (ok, out) = sh("fsck.vfat", &["-n", boot.to_str().unwrap()], None);
        assert!(ok, "{out}");
    }

    #[test]
    fn a_gpt_disk_has_no_mbr_disk_id_to_set() {
        let tmp = tempfile::tempdir().unwrap();
        let img = make_disk(tmp.path(), true);
        let before = std::fs::read(&img).unwrap();
        let mut image = Image::open_rw(&img).unwrap();
        assert_eq!(image.scheme(), Scheme::Gpt);
        assert!(matches!(
            image.set_disk_id(7),
            Err(ImageError::NotMbr { .. })
        ));
        drop(image);
        assert!(std::fs::read(&img).unwrap() == before, "the image changed");
    }

    #[test]
    fn an_image_without_a_root_partition_is_one_sentence() {
        let tmp = tempfile::tempdir().unwrap();
        let img = make_disk(tmp.path(), false);
        // Wipe the ext4 superblock magic.
        let mut data = std::fs::read(&img).unwrap();
        let at = (ROOT_START * 512 + 1024 + 0x38) as usize;
        data[at..at + 2].copy_from_slice(&[0, 0]);
        std::fs::write(&img, &data).unwrap();
        let e = Image::open(&img).unwrap_err();
        assert!(matches!(e, ImageError::NoRoot { .. }), "{e}");
        assert!(e.to_string().contains("has no ext4 root partition"), "{e}");
    }
}
