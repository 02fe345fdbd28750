//! The FAT boot partition through `fatfs`, with every timestamp taken from one fixed clock.
//!
//! fatfs 0.3.6 writes broken `.` and `..` entries in directories it creates (fsck.vfat: "Expected
//! a valid '.' entry in this slot"), so this module never creates directories: files go into the
//! root or into directories the image already has, and asking for a new directory is an error.

use std::io::{self, Read, Seek, Write};

use crate::clock;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("the boot partition is not a FAT filesystem fatfs can read: {0}")]
    Open(io::Error),
    #[error("{path} on the boot partition is more than the {max} bytes piforge reads of a configuration file")]
    TooBig { path: String, max: u64 },
    #[error("{path} would replace {existing} on the boot partition (FAT names ignore case); use the existing name")]
    CaseCollision { path: String, existing: String },
    #[error("reading {path} on the boot partition failed: {source}")]
    Read { path: String, source: io::Error },
    #[error("writing {path} on the boot partition failed: {source}")]
    Write { path: String, source: io::Error },
    #[error("{path} needs the directory {dir} on the boot partition, which does not exist (piforge does not create directories on FAT)")]
    NoDir { path: String, dir: String },
    #[error("the boot partition has {free} bytes free, {path} needs {needed}")]
    NoSpace {
        path: String,
        needed: u64,
        free: u64,
    },
    #[error("closing the boot partition failed: {0}")]
    Close(io::Error),
    #[error("the boot partition's FAT is corrupt: the cluster chain through cluster {cluster} loops back on itself (repair it with fsck.vfat)")]
    ChainLoop { cluster: u32 },
}

/// One entry of a FAT directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatEntry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// A clock for fatfs: every time it is asked, it says the build epoch.
#[derive(Debug)]
struct FixedClock {
    date_time: fatfs::DateTime,
}

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.date_time.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.date_time
    }
}

fn fat_date_time(epoch: i64) -> fatfs::DateTime {
    // FAT stores local time from 1980 to 2107 with 2-second resolution; piforge writes UTC.
    let c = clock::civil(epoch.clamp(315_532_800, 4_354_819_198));
    fatfs::DateTime {
        date: fatfs::Date {
            year: c.year as u16,
            month: c.month as u16,
            day: c.day as u16,
        },
        time: fatfs::Time {
            hour: c.hour as u16,
            min: c.minute as u16,
            sec: c.second as u16,
            millis: 0,
        },
    }
}

fn time_provider(epoch: i64) -> &'static dyn fatfs::TimeProvider {
    // fatfs wants a 'static provider; one small allocation per distinct epoch, kept for the
    // process's life, is the price.
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CLOCKS: OnceLock<Mutex<HashMap<i64, &'static FixedClock>>> = OnceLock::new();
    let map = CLOCKS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry(epoch).or_insert_with(|| {
        Box::leak(Box::new(FixedClock {
            date_time: fat_date_time(epoch),
        }))
    })
}

/// An open FAT filesystem on a device (usually a [`crate::disk::Slice`] of the image).
pub struct FatVolume<D: Read + Write + Seek> {
    fs: fatfs::FileSystem<D>,
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl<D: Read + Write + Seek> FatVolume<D> {
    /// Opens the filesystem; `epoch` is the build clock for anything written.
    ///
    /// A FAT whose cluster chains loop is refused first: fatfs would follow such a directory
    /// chain forever (see [`super::fat_chains`]).
    pub fn open(mut dev: D, epoch: i64) -> Result<Self, FatError> {
        if let Some(cluster) = super::fat_chains::find_loop(&mut dev).map_err(FatError::Open)? {
            return Err(FatError::ChainLoop { cluster });
        }
        let opts = fatfs::FsOptions::new()
            .update_accessed_date(false)
            .time_provider(time_provider(epoch));
        let fs = fatfs::FileSystem::new(dev, opts).map_err(FatError::Open)?;
        Ok(FatVolume { fs })
    }

    pub fn label(&self) -> String {
        self.fs.volume_label().trim_end().to_string()
    }

    pub fn volume_id(&self) -> u32 {
        self.fs.volume_id()
    }

    pub fn fat_type(&self) -> &'static str {
        match self.fs.fat_type() {
            fatfs::FatType::Fat12 => "fat12",
            fatfs::FatType::Fat16 => "fat16",
            fatfs::FatType::Fat32 => "fat32",
        }
    }

    /// Free space in bytes.
    pub fn free_bytes(&self) -> Result<u64, FatError> {
        let s = self.fs.stats().map_err(|source| FatError::Read {
            path: "/".into(),
            source,
        })?;
        Ok(u64::from(s.free_clusters()) * u64::from(s.cluster_size()))
    }

    pub fn cluster_size(&self) -> u64 {
        u64::from(self.fs.cluster_size())
    }

    /// Reads a file; `Ok(None)` when it does not exist.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, FatError> {
        let err = |source| FatError::Read {
            path: path.to_string(),
            source,
        };
        let mut f = match self.fs.root_dir().open_file(rel(path)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        // Every file piforge reads here is a configuration file (cmdline.txt, config.txt):
        // bounded, as a corrupt FAT can claim any size.
        let max = crate::fs::CONFIG_FILE_MAX;
        let mut buf = Vec::new();
        (&mut f).take(max + 1).read_to_end(&mut buf).map_err(err)?;
        if buf.len() as u64 > max {
            return Err(FatError::TooBig {
                path: path.to_string(),
                max,
            });
        }
        Ok(Some(buf))
    }

    /// Lists a directory ("" or "/" for the root), without `.` and `..`.
    pub fn list(&self, dir: &str) -> Result<Vec<FatEntry>, FatError> {
        let err = |source| FatError::Read {
            path: dir.to_string(),
            source,
        };
        let d = if rel(dir).is_empty() {
            self.fs.root_dir()
        } else {
            self.fs.root_dir().open_dir(rel(dir)).map_err(err)?
        };
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(err)?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            out.push(FatEntry {
                name,
                is_dir: e.is_dir(),
                size: e.len(),
            });
        }
        Ok(out)
    }

    /// Creates or replaces a file with `data`; its parent directory must already exist.
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), FatError> {
        let p = rel(path);
        let err = |source| FatError::Write {
            path: path.to_string(),
            source,
        };
        if let Some((dir, _)) = p.rsplit_once('/') {
            if let Err(e) = self.fs.root_dir().open_dir(dir) {
                if e.kind() == io::ErrorKind::NotFound {
                    return Err(FatError::NoDir {
                        path: path.to_string(),
                        dir: format!("/{dir}"),
                    });
                }
                return Err(err(e));
            }
        }
        // FAT ignores case: `CMDLINE.TXT` would silently become the image's `cmdline.txt`
        // (issue 12 item 14). An entry with lower-case letters has its case on record (a long
        // name); an all-upper-case one may be a bare 8.3 name whose case is unknown, so only
        // the former is a collision.
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        if let Ok(entries) = self.list(dir) {
            if let Some(e) = entries.iter().find(|e| {
                e.name != name
                    && e.name.eq_ignore_ascii_case(name)
                    && e.name.chars().any(|c| c.is_ascii_lowercase())
            }) {
                return Err(FatError::CaseCollision {
                    path: path.to_string(),
                    existing: if dir.is_empty() {
                        format!("/{}", e.name)
                    } else {
                        format!("/{dir}/{}", e.name)
                    },
                });
            }
        }
        let old = round_up(self.file_len(p)?.unwrap_or(0), self.cluster_size());
        let needed = round_up(data.len() as u64, self.cluster_size());
        let free = self.free_bytes()? + old;
        if needed > free {
            return Err(FatError::NoSpace {
                path: path.to_string(),
                needed,
                free,
            });
        }
        let mut f = self.fs.root_dir().create_file(p).map_err(err)?;
        f.truncate().map_err(err)?;
        f.write_all(data).map_err(err)?;
        f.flush().map_err(err)?;
        Ok(())
    }

    /// The size of a file, from its directory entry; `Ok(None)` when it does not exist.
    pub fn file_len(&self, path: &str) -> Result<Option<u64>, FatError> {
        let p = rel(path);
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        let entries = match self.list(dir) {
            Ok(e) => e,
            Err(FatError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        Ok(entries
            .iter()
            .find(|e| !e.is_dir && e.name.eq_ignore_ascii_case(name))
            .map(|e| e.size))
    }

    /// Removes a file; `Ok(false)` when it did not exist.
    pub fn remove(&mut self, path: &str) -> Result<bool, FatError> {
        match self.fs.root_dir().remove(rel(path)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(FatError::Write {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Writes the FSInfo sector, clears the dirty flag and flushes: call after writing.
    pub fn close(self) -> Result<(), FatError> {
        self.fs.unmount().map_err(FatError::Close)
    }
}

fn round_up(n: u64, to: u64) -> u64 {
    if to == 0 {
        n
    } else {
        n.div_ceil(to) * to
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::process::Command;

    fn sh(cmd: &str, args: &[&str]) -> (bool, String) {
        let o = Command::new(cmd).args(args).output().unwrap();
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&o.stderr));
        (o.status.success(), s)
    }

    /// A FAT32 filesystem at byte 1 MiB of a file, like a partition.
    fn make_fat(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let part = dir.join("part.fat");
        let (ok, out) = sh(
            "mkfs.vfat",
            &[
                "-C",
                "-F",
                "32",
                "-S",
                "512",
                "-s",
                "1",
                "-n",
                "BOOTFS",
                "-i",
                "1234ABCD",
                part.to_str().unwrap(),
                "40960",
            ],
        );
        assert!(ok, "{out}");
        let (ok, out) = sh("mmd", &["-i", part.to_str().unwrap(), "::overlays"]);
        assert!(ok, "{out}");
        let img = dir.join("disk.img");
        let mut data = vec![0u8; 1 << 20];
        data.extend(std::fs::read(&part).unwrap());
        std::fs::write(&img, data).unwrap();
        (img, part)
    }

    fn open(img: &std::path::Path, epoch: i64) -> FatVolume<crate::disk::Slice<std::fs::File>> {
        let f = OpenOptions::new().read(true).write(true).open(img).unwrap();
        let len = f.metadata().unwrap().len() - (1 << 20);
        FatVolume::open(crate::disk::Slice::new(f, 1 << 20, len), epoch).unwrap()
    }

    /// fsck.vfat has no offset option: the partition bytes are checked on their own.
    fn fsck(img: &std::path::Path) -> std::path::PathBuf {
        let data = std::fs::read(img).unwrap();
        let part = img.with_extension("check");
        std::fs::write(&part, &data[1 << 20..]).unwrap();
        let (ok, out) = sh("fsck.vfat", &["-n", part.to_str().unwrap()]);
        assert!(ok, "fsck.vfat -n failed: {out}");
        part
    }

    fn fsck_and_type(img: &std::path::Path, path: &str) -> String {
        let part = fsck(img);
        let (ok, out) = sh(
            "mtype",
            &["-i", part.to_str().unwrap(), &format!("::{path}")],
        );
        assert!(ok, "{out}");
        out
    }

    #[test]
    fn a_looping_root_directory_chain_is_refused_not_followed_forever() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, part) = make_fat(tmp.path());
        let mut data = std::fs::read(&img).unwrap();
        let bs = 1 << 20;
        let reserved = u16::from_le_bytes([data[bs + 14], data[bs + 15]]) as usize;
        let root = u32::from_le_bytes(data[bs + 44..bs + 48].try_into().unwrap());
        // FAT[root] = root: the root directory's chain points back at itself.
        let at = bs + reserved * 512 + root as usize * 4;
        data[at..at + 4].copy_from_slice(&root.to_le_bytes());
        std::fs::write(&img, &data).unwrap();
        std::fs::write(&part, &data[bs..]).unwrap();
        let (ok, out) = sh("fsck.vfat", &["-n", part.to_str().unwrap()]);
        assert!(!ok, "fsck.vfat calls the looping FAT clean: {out}");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let len = f.metadata().unwrap().len() - (1 << 20);
        let e = FatVolume::open(crate::disk::Slice::new(f, 1 << 20, len), 0)
            .err()
            .expect("opened a FAT whose root directory chain loops");
        assert!(
            matches!(e, FatError::ChainLoop { cluster } if cluster == root),
            "{e}"
        );
        assert!(e.to_string().contains("loops back on itself"), "{e}");
    }

    #[test]
    fn write_replace_remove_stay_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, _) = make_fat(tmp.path());
        let mut v = open(&img, crate::clock::DEFAULT_EPOCH);
        assert_eq!(v.label(), "BOOTFS");
        assert_eq!(v.volume_id(), 0x1234_abcd);
        v.write_file(
            "/cmdline.txt",
            b"console=tty1 root=PARTUUID=1-02 rootwait\n",
        )
        .unwrap();
        v.write_file("user-data", &b"#cloud-config\n".repeat(2000))
            .unwrap();
        v.write_file("/overlays/piforge.dtbo", b"dtbo").unwrap();
        v.close().unwrap();
        assert_eq!(
            fsck_and_type(&img, "cmdline.txt"),
            "console=tty1 root=PARTUUID=1-02 rootwait\n"
        );

        // Replace with shorter content, then remove, in a second session.
        let mut v = open(&img, crate::clock::DEFAULT_EPOCH);
        v.write_file("user-data", b"#cloud-config\nhostname: a\n")
            .unwrap();
        assert!(v.remove("/overlays/piforge.dtbo").unwrap());
        assert!(!v.remove("/nope.txt").unwrap());
        assert_eq!(v.file_len("user-data").unwrap(), Some(26));
        assert_eq!(v.file_len("nope").unwrap(), None);
        v.close().unwrap();
        assert_eq!(
            fsck_and_type(&img, "user-data"),
            "#cloud-config\nhostname: a\n"
        );
        let v = open(&img, 0);
        assert_eq!(v.label(), "BOOTFS");
        assert_eq!(v.volume_id(), 0x1234_abcd);
        assert_eq!(v.read_file("/overlays/piforge.dtbo").unwrap(), None);
    }

    #[test]
    fn new_directories_are_refused_and_space_is_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, _) = make_fat(tmp.path());
        let mut v = open(&img, crate::clock::DEFAULT_EPOCH);
        let e = v.write_file("/newdir/x.txt", b"x").unwrap_err();
        assert!(matches!(e, FatError::NoDir { .. }), "{e}");
        let free = v.free_bytes().unwrap();
        let e = v
            .write_file("/big.bin", &vec![1u8; free as usize + 4096])
            .unwrap_err();
        assert!(matches!(e, FatError::NoSpace { .. }), "{e}");
        assert_eq!(v.file_len("/big.bin").unwrap(), None);
        v.close().unwrap();
        fsck(&img);
    }

    #[test]
    fn same_edits_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, _) = make_fat(tmp.path());
        let img2 = tmp.path().join("disk2.img");
        std::fs::copy(&img, &img2).unwrap();
        for (i, p) in [&img, &img2].into_iter().enumerate() {
            if i == 1 {
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            let mut v = open(p, 1_700_000_000);
            v.write_file("/meta-data", b"instance-id: x\n").unwrap();
            v.close().unwrap();
        }
        assert_eq!(std::fs::read(&img).unwrap(), std::fs::read(&img2).unwrap());
        // The timestamp written is the build clock: 2023-11-14 22:13:20 UTC.
        let data = std::fs::read(&img).unwrap();
        let part = tmp.path().join("p");
        std::fs::write(&part, &data[1 << 20..]).unwrap();
        let (_, out) = sh("mdir", &["-i", part.to_str().unwrap(), "::meta-data"]);
        assert!(out.contains("2023-11-14") && out.contains("22:13"), "{out}");
    }
}
