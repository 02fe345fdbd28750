//! The read side: lookups, stat, file contents, symlinks, directories, extended attributes.

use std::ffi::CString;
use std::io::Write;
use std::os::raw::{c_char, c_int, c_void};

use super::*;

pub(super) unsafe extern "C" fn collect_entry(
    ctx: *mut c_void,
    name: *const c_char,
    name_len: usize,
    ino: u32,
    file_type: c_int,
) -> c_int {
    // SAFETY: ctx is the Vec passed by list_raw; name points at name_len
    // bytes inside libext2fs' directory block buffer for this call.
    let out = &mut *(ctx as *mut Vec<(Vec<u8>, u32, c_int)>);
    let bytes = std::slice::from_raw_parts(name as *const u8, name_len);
    out.push((bytes.to_vec(), ino, file_type));
    0
}

impl Ext4 {
    pub(super) fn abs(path: &str) -> Result<CString> {
        if !path.starts_with('/') {
            return Err(Ext4Error::InvalidPath {
                path: path.to_string(),
                reason: "it must be absolute",
            });
        }
        cstring(path, path.as_bytes())
    }

    /// Inode of `path`, None when it does not exist. Symlinks in the
    /// intermediate components are followed inside the filesystem; the final
    /// one only when `follow`.
    pub(super) fn namei(&self, path: &str, follow: bool) -> Result<Option<u32>> {
        let c = Self::abs(path)?;
        let mut ino = 0u32;
        // SAFETY: live handle, valid C string and out pointer.
        let code = unsafe { ffi::pf_namei(self.handle, c.as_ptr(), c_int::from(follow), &mut ino) };
        if code == 0 {
            Ok(Some(ino))
        } else if code == et!(pf_et_file_not_found) {
            Ok(None)
        } else if code == et!(pf_et_no_directory) {
            Err(Ext4Error::NotADirectory {
                path: path.to_string(),
            })
        } else {
            Err(self.lib_err(code, "look up", path))
        }
    }

    pub(super) fn lookup_in(&self, dir: u32, name: &str, path: &str) -> Result<Option<u32>> {
        let c = cstring(path, name.as_bytes())?;
        let mut ino = 0u32;
        // SAFETY: live handle, valid C string and out pointer.
        let code = unsafe { ffi::pf_lookup(self.handle, dir, c.as_ptr(), &mut ino) };
        if code == 0 {
            Ok(Some(ino))
        } else if code == et!(pf_et_file_not_found) {
            Ok(None)
        } else {
            Err(self.lib_err(code, "look up", path))
        }
    }

    pub(super) fn stat_raw(&self, ino: u32, path: &str) -> Result<ffi::PfStat> {
        let mut st = ffi::PfStat::default();
        // SAFETY: live handle, valid out pointer.
        let code = unsafe { ffi::pf_stat(self.handle, ino, &mut st) };
        self.check(code, "read the inode of", path)?;
        Ok(st)
    }

    pub(super) fn stat_ino(&self, ino: u32, path: &str) -> Result<Stat> {
        let st = self.stat_raw(ino, path)?;
        Ok(Stat {
            ino,
            kind: FileKind::from_mode(st.mode),
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            size: st.size,
            mtime: st.mtime,
            nlink: st.links,
        })
    }

    /// The inode `path` names, or None if it does not exist. The final
    /// component is not followed if it is a symlink (like `lstat`).
    pub fn stat(&self, path: &str) -> Result<Option<Stat>> {
        match self.namei(path, false)? {
            Some(ino) => Ok(Some(self.stat_ino(ino, path)?)),
            None => Ok(None),
        }
    }

    /// The directory `path` resolves to (following symlinks).
    pub(super) fn dir_ino(&self, path: &str) -> Result<u32> {
        let ino = self.namei(path, true)?.ok_or_else(|| Ext4Error::NotFound {
            path: path.to_string(),
        })?;
        if self.stat_raw(ino, path)?.mode & S_IFMT != S_IFDIR {
            return Err(Ext4Error::NotADirectory {
                path: path.to_string(),
            });
        }
        Ok(ino)
    }

    pub(super) fn file_ino(&self, path: &str) -> Result<(u32, u64)> {
        let ino = self.namei(path, true)?.ok_or_else(|| Ext4Error::NotFound {
            path: path.to_string(),
        })?;
        let st = self.stat_raw(ino, path)?;
        match st.mode & S_IFMT {
            S_IFREG => Ok((ino, st.size)),
            S_IFDIR => Err(Ext4Error::IsADirectory {
                path: path.to_string(),
            }),
            _ => Err(Ext4Error::NotAFile {
                path: path.to_string(),
            }),
        }
    }

    /// Content of the regular file `path`, following symlinks (absolute
    /// targets resolve inside the filesystem, not on the host).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let (_, size) = self.file_ino(path)?;
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 30));
        self.read_file_to(path, &mut out)?;
        Ok(out)
    }

    /// Content of the configuration file `path`, refused with [`Ext4Error::TooBig`] past
    /// [`crate::fs::CONFIG_FILE_MAX`] before anything is allocated (the size is the inode's,
    /// which a sparse file can make huge at no cost).
    pub fn read_config(&self, path: &str) -> Result<Vec<u8>> {
        let (_, size) = self.file_ino(path)?;
        let max = crate::fs::CONFIG_FILE_MAX;
        if size > max {
            return Err(Ext4Error::TooBig {
                path: path.to_string(),
                size,
                max,
            });
        }
        self.read_file(path)
    }

    /// Stream the content of the regular file `path` into `sink`; returns the
    /// number of bytes copied.
    pub fn read_file_to(&self, path: &str, sink: &mut dyn Write) -> Result<u64> {
        let (ino, size) = self.file_ino(path)?;
        let mut file = std::ptr::null_mut();
        // SAFETY: live handle and out pointer.
        let code = unsafe { ffi::pf_file_open(self.handle, ino, 0, &mut file) };
        self.check(code, "open", path)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        let result = loop {
            // Never ask for more than the file size: libext2fs 1.47.0 returns
            // the whole inline area (60 bytes and more) for inline-data files.
            let want = usize::try_from(size - total)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            if want == 0 {
                break Ok(total);
            }
            let mut got = 0usize;
            // SAFETY: file is open; buf has at least `want` writable bytes.
            let code = unsafe { ffi::pf_file_read(file, buf.as_mut_ptr().cast(), want, &mut got) };
            if code != 0 {
                break Err(self.lib_err(code, "read", path));
            }
            let got = got.min(want);
            if got == 0 {
                break Ok(total);
            }
            if let Err(source) = sink.write_all(&buf[..got]) {
                break Err(Ext4Error::Sink {
                    path: path.to_string(),
                    source,
                });
            }
            total += got as u64;
        };
        // SAFETY: file is open and closed exactly once.
        let close = unsafe { ffi::pf_file_close(file) };
        let total = result?;
        self.check(close, "close", path)?;
        if total != size {
            return Err(Ext4Error::Lib {
                op: "read",
                path: path.to_string(),
                code: 0,
                message: format!("read {total} bytes of {size}"),
            });
        }
        Ok(total)
    }

    /// Target of the symlink `path` (the final component is not followed).
    pub fn read_link(&self, path: &str) -> Result<String> {
        let ino = self
            .namei(path, false)?
            .ok_or_else(|| Ext4Error::NotFound {
                path: path.to_string(),
            })?;
        let st = self.stat_raw(ino, path)?;
        if st.mode & S_IFMT != S_IFLNK {
            return Err(Ext4Error::NotASymlink {
                path: path.to_string(),
            });
        }
        let cap = usize::try_from(st.size).unwrap_or(usize::MAX).min(1 << 20);
        let mut buf = vec![0u8; cap];
        let mut len = 0usize;
        // SAFETY: live handle; buf has cap writable bytes.
        let code =
            unsafe { ffi::pf_readlink(self.handle, ino, buf.as_mut_ptr().cast(), cap, &mut len) };
        self.check(code, "read the symlink", path)?;
        buf.truncate(len);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Entries of `dir` except "." and "..", raw names, in on-disk order.
    pub(super) fn list_raw(&self, dir: u32, path: &str) -> Result<Vec<(Vec<u8>, u32, FileKind)>> {
        let mut raw: Vec<(Vec<u8>, u32, c_int)> = Vec::new();
        // SAFETY: live handle; the callback only pushes into `raw`, which
        // outlives the call.
        let code = unsafe {
            ffi::pf_list_dir(
                self.handle,
                dir,
                collect_entry,
                (&mut raw as *mut Vec<(Vec<u8>, u32, c_int)>).cast(),
            )
        };
        self.check(code, "list", path)?;
        let mut out = Vec::with_capacity(raw.len());
        for (name, ino, ft) in raw {
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match ft {
                1 => FileKind::File,
                2 => FileKind::Dir,
                7 => FileKind::Symlink,
                3..=6 => FileKind::Other,
                // no filetype feature: ask the inode
                _ => FileKind::from_mode(self.stat_raw(ino, path)?.mode),
            };
            out.push((name, ino, kind));
        }
        Ok(out)
    }

    /// Entries of the directory `path` (following symlinks), "." and ".."
    /// left out, in on-disk order.
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let dir = self.dir_ino(path)?;
        Ok(self
            .list_raw(dir, path)?
            .into_iter()
            .map(|(name, ino, kind)| DirEntry {
                name: String::from_utf8_lossy(&name).into_owned(),
                kind,
                ino,
            })
            .collect())
    }

    /// Value of the extended attribute `name` (e.g. `security.capability`)
    /// of `path` (not following a final symlink), None when it is not set.
    pub fn get_xattr(&self, path: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let ino = self
            .namei(path, false)?
            .ok_or_else(|| Ext4Error::NotFound {
                path: path.to_string(),
            })?;
        let cname = cstring(path, name.as_bytes())?;
        let mut value: *mut c_void = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: live handle, valid C string and out pointers.
        let code =
            unsafe { ffi::pf_xattr_get(self.handle, ino, cname.as_ptr(), &mut value, &mut len) };
        if code == et!(pf_et_ea_key_not_found) {
            return Ok(None);
        }
        self.check(code, "read extended attributes of", path)?;
        // SAFETY: on success value points at len malloc'd bytes we now own.
        let v = unsafe {
            let v = std::slice::from_raw_parts(value as *const u8, len).to_vec();
            ffi::pf_free(value);
            v
        };
        Ok(Some(v))
    }
}
