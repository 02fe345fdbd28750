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
    #[error("reading {path} on the boot partition failed: {source}")]
    Read { path: String, source: io::Error },
    #[error("writing {path} on the boot partition failed: {source}")]
    Write { path: String, source: io::Error },
    #[error("{path} needs the directory {dir} on the boot partition, which does not exist (piforge does not create directories on FAT)")]
    NoDir { path: String, dir: String },
    #[error("the boot partition has {free} bytes free, {path} needs {needed}")]
    NoSpace { path: String, needed: u64, free: u64 },
    #[error("closing the boot partition failed: {0}")]
    Close(io::Error),
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
    pub fn open(dev: D, epoch: i64) -> Result<Self, FatError> {
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
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(err)?;
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
