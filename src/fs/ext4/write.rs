//! The write side: creating, replacing and removing files, directories and symlinks, and
//! changing attributes. Every mutation poisons the session when it fails half-way.

use std::ffi::CString;
use std::io::Read;
use std::os::raw::{c_int, c_void};

use super::*;

impl Ext4 {
    pub(super) fn writable(&self, op: &'static str, path: &str) -> Result<()> {
        if self.mode != OpenMode::ReadWrite {
            return Err(Ext4Error::ReadOnly {
                op,
                path: path.to_string(),
            });
        }
        if let Some(first_error) = &self.poisoned {
            return Err(Ext4Error::Poisoned {
                first_error: first_error.clone(),
            });
        }
        Ok(())
    }

    /// Run a mutation; if it fails, the session is poisoned.
    pub(super) fn mutate<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = f(self);
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    pub(super) fn need_space(
        &self,
        path: &str,
        blocks: u64,
        reclaim: u64,
        inode: bool,
    ) -> Result<()> {
        let info = self.raw_info();
        let avail = info.free_blocks + reclaim;
        if blocks > avail {
            return Err(Ext4Error::NoSpace {
                path: path.to_string(),
                needed_bytes: blocks * self.block_size,
                free_bytes: avail * self.block_size,
            });
        }
        if inode && info.free_inodes == 0 {
            return Err(Ext4Error::NoFreeInodes {
                path: path.to_string(),
            });
        }
        Ok(())
    }

    pub(super) fn set_meta(
        &self,
        ino: u32,
        path: &str,
        attrs: &Attrs,
        set_mode: bool,
        new_inode: bool,
    ) -> Result<()> {
        // SAFETY: live handle.
        let code = unsafe {
            ffi::pf_set_meta(
                self.handle,
                ino,
                c_int::from(set_mode),
                attrs.mode & 0o7777,
                1,
                attrs.uid,
                attrs.gid,
                1,
                attrs.mtime,
                attrs.mtime,
                self.clock,
                c_int::from(new_inode),
            )
        };
        self.check(code, "set the attributes of", path)
    }

    /// Create every missing directory of `path` (following existing
    /// symlinks to directories, e.g. `/lib` -> `usr/lib`). `attrs` apply to
    /// the directories created; existing ones are left as they are.
    pub fn mkdir_p(&mut self, path: &str, attrs: &Attrs) -> Result<()> {
        self.writable("create", path)?;
        let comps = components(path)?;
        let mut cur = ROOT_INO;
        let mut cur_path = String::new();
        for c in comps {
            cur_path.push('/');
            cur_path.push_str(c);
            match self.namei(&cur_path, true)? {
                Some(ino) => {
                    if self.stat_raw(ino, &cur_path)?.mode & S_IFMT != S_IFDIR {
                        return Err(Ext4Error::NotADirectory { path: cur_path });
                    }
                    cur = ino;
                }
                None => {
                    // a dangling symlink is in the way
                    if self.lookup_in(cur, c, &cur_path)?.is_some() {
                        return Err(Ext4Error::NotADirectory { path: cur_path });
                    }
                    self.need_space(&cur_path, 1 + DIR_GROWTH_BLOCKS, 0, true)?;
                    let name = cstring(&cur_path, c.as_bytes())?;
                    let parent = cur;
                    let p = cur_path.clone();
                    cur = self.mutate(|s| {
                        let mut ino = 0u32;
                        // SAFETY: live handle, valid C string and out pointer.
                        let code =
                            unsafe { ffi::pf_mkdir(s.handle, parent, name.as_ptr(), &mut ino) };
                        s.check(code, "create the directory", &p)?;
                        s.set_meta(ino, &p, attrs, true, true)?;
                        Ok(ino)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Resolve the parent of a path to create, and what is there already.
    pub(super) fn prepare(&self, path: &str) -> Result<(u32, CString, Existing)> {
        let (parent_path, name) = split_parent(path)?;
        let parent = self.dir_ino(&parent_path)?;
        let existing = match self.lookup_in(parent, name, path)? {
            Some(ino) => Some((ino, self.stat_raw(ino, path)?)),
            None => None,
        };
        Ok((parent, cstring(path, name.as_bytes())?, existing))
    }

    /// Create or replace the regular file `path` with `data`.
    pub fn write_file(&mut self, path: &str, data: &[u8], attrs: &Attrs) -> Result<()> {
        let mut reader = data;
        self.write_file_from(path, &mut reader, data.len() as u64, attrs)
    }

    /// Create or replace the regular file `path` with exactly `size` bytes
    /// streamed from `reader` (never held in memory at once).
    ///
    /// A replaced path gets a new inode (like `install` or dpkg): other hard
    /// links keep the old content, and old extended attributes do not carry
    /// over. A symlink at `path` is replaced, not followed. The space is
    /// checked before anything changes: [`Ext4Error::NoSpace`] leaves the
    /// session usable.
    pub fn write_file_from(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        size: u64,
        attrs: &Attrs,
    ) -> Result<()> {
        self.writable("write", path)?;
        let (parent, name, existing) = self.prepare(path)?;
        let mut reclaim = 0;
        if let Some((_, st)) = &existing {
            if st.mode & S_IFMT == S_IFDIR {
                return Err(Ext4Error::IsADirectory {
                    path: path.to_string(),
                });
            }
            if st.links == 1 {
                reclaim = st.blocks;
            }
        }
        let growth = if existing.is_some() {
            0
        } else {
            DIR_GROWTH_BLOCKS
        };
        let reuses_inode = existing.as_ref().is_some_and(|(_, st)| st.links == 1);
        self.need_space(
            path,
            self.blocks_needed_for_file(size) + growth,
            reclaim,
            !reuses_inode,
        )?;
        if i64::try_from(size).is_err() {
            return Err(Ext4Error::NoSpace {
                path: path.to_string(),
                needed_bytes: size,
                free_bytes: self.free_bytes(),
            });
        }

        self.mutate(|s| {
            if let Some((old, _)) = existing {
                // SAFETY: live handle, valid C string.
                let code = unsafe { ffi::pf_unlink(s.handle, parent, name.as_ptr(), old) };
                s.check(code, "remove the old", path)?;
            }
            let mut ino = 0u32;
            // SAFETY: live handle, valid C string and out pointer.
            let code = unsafe {
                ffi::pf_create_file(
                    s.handle,
                    parent,
                    name.as_ptr(),
                    attrs.mode & 0o7777,
                    size,
                    &mut ino,
                )
            };
            s.check(code, "create", path)?;

            // The shim allocates the whole file first and then writes each
            // chunk in as few runs as the allocation allows.
            let mut writer = std::ptr::null_mut();
            // SAFETY: live handle and out pointer.
            let code = unsafe { ffi::pf_write_open(s.handle, ino, size, &mut writer) };
            s.check(code, "open", path)?;
            let streamed = s.stream_into(writer, reader, size, path);
            // SAFETY: the writer is open and closed exactly once.
            let close = unsafe { ffi::pf_write_close(writer, c_int::from(streamed.is_ok())) };
            streamed?;
            s.check(close, "finish writing", path)?;
            s.set_meta(ino, path, attrs, true, true)
        })
    }

    pub(super) fn stream_into(
        &self,
        writer: *mut c_void,
        reader: &mut dyn Read,
        size: u64,
        path: &str,
    ) -> Result<()> {
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Ext4Error::Source {
                        path: path.to_string(),
                        source,
                    })
                }
            };
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > size {
                return Err(Ext4Error::SizeMismatch {
                    path: path.to_string(),
                    expected: size,
                    actual: total,
                });
            }
            // SAFETY: the writer is open; buf[..n] is initialised.
            let code = unsafe { ffi::pf_write(writer, buf.as_ptr().cast(), n) };
            self.check(code, "write", path)?;
        }
        if total != size {
            return Err(Ext4Error::SizeMismatch {
                path: path.to_string(),
                expected: size,
                actual: total,
            });
        }
        Ok(())
    }

    /// Create (or replace a non-directory at) `path` as a symlink to
    /// `target`: a fast symlink stored in the inode when shorter than 60
    /// bytes, else one block. `attrs.mode` is ignored (symlinks are 0777).
    pub fn symlink(&mut self, path: &str, target: &str, attrs: &Attrs) -> Result<()> {
        self.writable("create", path)?;
        let ctarget = cstring(path, target.as_bytes())?;
        if target.is_empty() || target.len() as u64 >= self.block_size {
            return Err(Ext4Error::InvalidPath {
                path: path.to_string(),
                reason: "a symlink target must be non-empty and shorter than the block size",
            });
        }
        let (parent, name, existing) = self.prepare(path)?;
        let mut reclaim = 0;
        if let Some((_, st)) = &existing {
            if st.mode & S_IFMT == S_IFDIR {
                return Err(Ext4Error::IsADirectory {
                    path: path.to_string(),
                });
            }
            if st.links == 1 {
                reclaim = st.blocks;
            }
        }
        let data_blocks = if target.len() < 60 { 0 } else { 1 };
        let growth = if existing.is_some() {
            0
        } else {
            DIR_GROWTH_BLOCKS
        };
        self.need_space(path, data_blocks + growth, reclaim, existing.is_none())?;
        self.mutate(|s| {
            if let Some((old, _)) = existing {
                // SAFETY: live handle, valid C string.
                let code = unsafe { ffi::pf_unlink(s.handle, parent, name.as_ptr(), old) };
                s.check(code, "remove the old", path)?;
            }
            let mut ino = 0u32;
            // SAFETY: live handle, valid C strings and out pointer.
            let code = unsafe {
                ffi::pf_symlink(s.handle, parent, name.as_ptr(), ctarget.as_ptr(), &mut ino)
            };
            s.check(code, "create the symlink", path)?;
            s.set_meta(ino, path, attrs, false, true)
        })
    }

    /// Remove the file, symlink or other non-directory `path` (the final
    /// component is not followed). The inode and its blocks are freed when
    /// its last link goes; other hard links keep it alive.
    pub fn remove(&mut self, path: &str) -> Result<()> {
        self.writable("remove", path)?;
        let (parent, name, existing) = self.prepare(path)?;
        let (ino, st) = existing.ok_or_else(|| Ext4Error::NotFound {
            path: path.to_string(),
        })?;
        if st.mode & S_IFMT == S_IFDIR {
            return Err(Ext4Error::IsADirectory {
                path: path.to_string(),
            });
        }
        self.mutate(|s| {
            // SAFETY: live handle, valid C string.
            let code = unsafe { ffi::pf_unlink(s.handle, parent, name.as_ptr(), ino) };
            s.check(code, "remove", path)
        })
    }

    /// Remove `path` and, if it is a directory, everything below it.
    /// Symlinks are removed, never followed.
    pub fn remove_tree(&mut self, path: &str) -> Result<()> {
        self.writable("remove", path)?;
        let (parent, name, existing) = self.prepare(path)?;
        let (ino, st) = existing.ok_or_else(|| Ext4Error::NotFound {
            path: path.to_string(),
        })?;
        self.mutate(|s| {
            if st.mode & S_IFMT == S_IFDIR {
                s.empty_dir(ino, path)?;
                // SAFETY: live handle, valid C string.
                let code = unsafe { ffi::pf_rmdir(s.handle, parent, name.as_ptr(), ino) };
                s.check(code, "remove the directory", path)
            } else {
                // SAFETY: live handle, valid C string.
                let code = unsafe { ffi::pf_unlink(s.handle, parent, name.as_ptr(), ino) };
                s.check(code, "remove", path)
            }
        })
    }

    pub(super) fn empty_dir(&mut self, dir: u32, path: &str) -> Result<()> {
        for (name, ino, kind) in self.list_raw(dir, path)? {
            let child = join(path, &String::from_utf8_lossy(&name));
            let cname = cstring(&child, &name)?;
            if kind == FileKind::Dir {
                self.empty_dir(ino, &child)?;
                // SAFETY: live handle, valid C string.
                let code = unsafe { ffi::pf_rmdir(self.handle, dir, cname.as_ptr(), ino) };
                self.check(code, "remove the directory", &child)?;
            } else {
                // SAFETY: live handle, valid C string.
                let code = unsafe { ffi::pf_unlink(self.handle, dir, cname.as_ptr(), ino) };
                self.check(code, "remove", &child)?;
            }
        }
        Ok(())
    }

    /// Records in the superblock that the filesystem was checked (`s_lastcheck`: the session
    /// clock, or the last mount time if that is later), as `e2fsck -f` does after a clean run.
    /// For a filesystem the caller has just checked ([`crate::disk::Image::grow_root`] does,
    /// so that resize2fs runs without `-f`).
    pub fn record_check(&mut self) -> Result<()> {
        self.writable("record a check of", "/")?;
        // SAFETY: a live read-write handle.
        let code = unsafe { ffi::pf_mark_checked(self.handle) };
        self.check(code, "record a check of", "/")
    }

    /// Set permissions, owner and times of `path` (not following a final
    /// symlink; a symlink's permissions stay 0777). ctime becomes the clock.
    pub fn set_attrs(&mut self, path: &str, attrs: &Attrs) -> Result<()> {
        self.writable("change", path)?;
        let ino = self
            .namei(path, false)?
            .ok_or_else(|| Ext4Error::NotFound {
                path: path.to_string(),
            })?;
        let is_link = self.stat_raw(ino, path)?.mode & S_IFMT == S_IFLNK;
        self.mutate(|s| s.set_meta(ino, path, attrs, !is_link, false))
    }

    pub(super) fn xattr_name_ok(path: &str, name: &str) -> Result<()> {
        if name.is_empty() || !name.contains('.') || name.len() > 255 || name.contains('\0') {
            return Err(Ext4Error::InvalidPath {
                path: format!("{path} ({name})"),
                reason: "an extended attribute name must look like namespace.name",
            });
        }
        Ok(())
    }

    /// Set the extended attribute `name` (e.g. `security.capability`) of
    /// `path`, not following a final symlink.
    pub fn set_xattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<()> {
        self.writable("change", path)?;
        Self::xattr_name_ok(path, name)?;
        let ino = self
            .namei(path, false)?
            .ok_or_else(|| Ext4Error::NotFound {
                path: path.to_string(),
            })?;
        // the attributes may have to move to (or grow) an EA block
        self.need_space(path, 1, 0, false)?;
        let cname = cstring(path, name.as_bytes())?;
        self.mutate(|s| {
            // SAFETY: live handle, valid C string; value is a live slice.
            let code = unsafe {
                ffi::pf_xattr_put(
                    s.handle,
                    ino,
                    cname.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                )
            };
            s.check(code, "set an extended attribute of", path)
        })
    }

    /// Remove the extended attribute `name` of `path` if it is set.
    pub fn remove_xattr(&mut self, path: &str, name: &str) -> Result<()> {
        self.writable("change", path)?;
        Self::xattr_name_ok(path, name)?;
        if self.get_xattr(path, name)?.is_none() {
            return Ok(());
        }
        let ino = self
            .namei(path, false)?
            .ok_or_else(|| Ext4Error::NotFound {
                path: path.to_string(),
            })?;
        let cname = cstring(path, name.as_bytes())?;
        self.mutate(|s| {
            // SAFETY: live handle, valid C string; NULL value means remove.
            let code =
                unsafe { ffi::pf_xattr_put(s.handle, ino, cname.as_ptr(), std::ptr::null(), 0) };
            s.check(code, "remove an extended attribute of", path)
        })
    }
}
