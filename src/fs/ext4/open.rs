//! Opening a session (with the refusals that protect the image), facts about the filesystem,
//! and committing.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_long, c_void};
use std::path::{Path, PathBuf};

use super::*;

/// The fields of the primary superblock the open checks need, read
/// directly so the refusals do not depend on libext2fs' opinion.
pub(super) struct RawSuper {
    /// What `s_blocks_count` and `s_log_block_size` claim the filesystem spans, in bytes
    /// (`None` when that does not fit in 64 bits).
    bytes: Option<u64>,
    wtime: i64,
    state: u16,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    last_orphan: u32,
}

/// The primary superblock of the filesystem at `offset` of `image`, as a session with `opts`
/// sees it (the bytes [`OpenOptions::split_written`] covers read from `split_into`).
pub(super) fn read_raw_super(
    image: &Path,
    offset: u64,
    opts: &OpenOptions,
) -> Result<Option<RawSuper>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(image).map_err(|source| Ext4Error::Image {
        image: image.into(),
        source,
    })?;
    let mut sb = [0u8; 1024];
    let start = offset.checked_add(1024).ok_or(Ext4Error::NotExt4 {
        image: image.into(),
        offset,
    })?;
    let read = match &opts.split_into {
        Some(top) => {
            crate::disk::read_over(&f, top, &opts.split_written, &mut sb, start, |f, b, at| {
                f.read_exact_at(b, at)
            })
        }
        None => f.read_exact_at(&mut sb, start),
    };
    if let Err(e) = read {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(Ext4Error::Image {
                image: image.into(),
                source: e,
            })
        };
    }
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16_at(0x38) != 0xEF53 {
        return Ok(None);
    }
    let incompat = u32_at(0x60);
    // s_blocks_count_hi counts only with the 64bit feature (EXT4_FEATURE_INCOMPAT_64BIT).
    let hi = if incompat & 0x80 != 0 {
        u32_at(0x150)
    } else {
        0
    };
    let blocks = (u64::from(hi) << 32) | u64::from(u32_at(0x4));
    let bytes = 1024u64
        .checked_shl(u32_at(0x18))
        .filter(|bs| bs.trailing_zeros() == 10 + u32_at(0x18))
        .and_then(|bs| blocks.checked_mul(bs));
    Ok(Some(RawSuper {
        bytes,
        wtime: i64::from(u32_at(0x30)) | (i64::from(sb[0x274]) << 32),
        state: u16_at(0x3A),
        compat: u32_at(0x5C),
        incompat,
        ro_compat: u32_at(0x64),
        last_orphan: u32_at(0xE8),
    }))
}

/// The shim's `sizeof` of each struct shared with Rust against `ffi.rs` (both sides also assert
/// the layouts at compile time; this catches a shim built from another source).
pub(super) fn check_layouts() -> Result<()> {
    // SAFETY: plain functions of the shim returning sizeof.
    let (info, stat) = unsafe { (ffi::pf_sizeof_info(), ffi::pf_sizeof_stat()) };
    if info == std::mem::size_of::<ffi::PfInfo>() && stat == std::mem::size_of::<ffi::PfStat>() {
        return Ok(());
    }
    Err(Ext4Error::Lib {
        op: "use",
        path: "the libext2fs shim".into(),
        code: 0,
        message: format!(
            "its struct sizes ({info}, {stat}) differ from piforge's ({}, {}): rebuild piforge",
            std::mem::size_of::<ffi::PfInfo>(),
            std::mem::size_of::<ffi::PfStat>()
        ),
    })
}

impl Ext4 {
    /// Open the filesystem at byte `offset` of `image`. A read-write session
    /// opened this way uses the filesystem's last write time as its clock;
    /// builds use [`Ext4::open_with_clock`].
    pub fn open(image: &Path, offset: u64, mode: OpenMode) -> Result<Ext4> {
        Self::open_with(image, offset, &OpenOptions::new(mode))
    }

    /// Open with `epoch` (e.g. `SOURCE_DATE_EPOCH`) as the session clock.
    pub fn open_with_clock(image: &Path, offset: u64, mode: OpenMode, epoch: i64) -> Result<Ext4> {
        Self::open_with(
            image,
            offset,
            &OpenOptions {
                mode,
                clock: Some(epoch),
                scratch_dir: None,
                direct: false,
                split_into: None,
                split_written: Vec::new(),
            },
        )
    }

    /// Open with every option spelled out.
    ///
    /// Refuses (in both modes) a filesystem whose journal needs recovery or
    /// that uses features libext2fs cannot read; refuses to write one marked
    /// as having errors, not cleanly unmounted, with orphans pending, or using
    /// features outside the set this module writes correctly.
    ///
    /// The session may use every byte of `image` from `offset` on; new code opens the root
    /// filesystem through [`crate::disk::Image`], which bounds it to its partition.
    pub fn open_with(image: &Path, offset: u64, opts: &OpenOptions) -> Result<Ext4> {
        Self::open_bounded(image, offset, u64::MAX, opts)
    }

    /// Open the filesystem in the `length` bytes at `offset` of `image` (a partition). The shim
    /// refuses any read or write past `offset + length`, and a superblock that claims more
    /// than `length` bytes is refused here, before libext2fs sees it.
    pub fn open_bounded(
        image: &Path,
        offset: u64,
        length: u64,
        opts: &OpenOptions,
    ) -> Result<Ext4> {
        let rw = opts.mode == OpenMode::ReadWrite;
        let img = || image.to_path_buf();
        check_layouts()?;
        let raw = read_raw_super(image, offset, opts)?.ok_or_else(|| Ext4Error::NotExt4 {
            image: img(),
            offset,
        })?;
        match raw.bytes {
            Some(fs_bytes) if fs_bytes <= length => {}
            None if length == u64::MAX => {}
            fs_bytes => {
                return Err(Ext4Error::LargerThanPartition {
                    image: img(),
                    offset,
                    fs_bytes: fs_bytes.unwrap_or(u64::MAX),
                    part_bytes: length,
                })
            }
        }

        if raw.incompat & incompat_recover() != 0 {
            return Err(Ext4Error::NeedsRecovery {
                image: img(),
                offset,
            });
        }
        let unreadable = raw.incompat & !lib_incompat_supp();
        if unreadable != 0 {
            return Err(Ext4Error::UnsupportedFeatures {
                image: img(),
                offset,
                action: "read",
                features: feature_names(0, unreadable, 0),
            });
        }
        if rw {
            if raw.state & state_error() != 0 {
                return Err(Ext4Error::ErrorState {
                    image: img(),
                    offset,
                });
            }
            if raw.state & state_valid() == 0 {
                return Err(Ext4Error::NotClean {
                    image: img(),
                    offset,
                    reason: "was not cleanly unmounted",
                });
            }
            if raw.last_orphan != 0 || raw.ro_compat & ro_compat_orphan_present() != 0 {
                return Err(Ext4Error::NotClean {
                    image: img(),
                    offset,
                    reason: "has orphaned inodes pending",
                });
            }
            let (c, i, r) = (
                raw.compat & !write_compat(),
                raw.incompat & !write_incompat(),
                raw.ro_compat & !write_ro_compat(),
            );
            if c | i | r != 0 {
                return Err(Ext4Error::UnsupportedFeatures {
                    image: img(),
                    offset,
                    action: "write",
                    features: feature_names(c, i, r),
                });
            }
        }

        let clock = match opts.clock {
            Some(0) => return Err(Ext4Error::InvalidClock { image: img() }),
            Some(c) => c,
            // fs->now == 0 would mean "ask time()" to libext2fs
            None => raw.wtime.max(1),
        };

        let split = opts.split_into.clone();
        let scratch = if rw && !opts.direct && split.is_none() {
            let dir = match &opts.scratch_dir {
                Some(d) => d.clone(),
                None => match image.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                },
            };
            Some(
                tempfile::tempfile_in(&dir).map_err(|source| Ext4Error::Scratch {
                    image: img(),
                    dir,
                    source,
                })?,
            )
        } else {
            None
        };

        use std::os::unix::ffi::OsStrExt;
        let cpath = CString::new(image.as_os_str().as_bytes()).map_err(|_| Ext4Error::Image {
            image: img(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path contains a NUL byte",
            ),
        })?;
        let mut handle = std::ptr::null_mut();
        let runs: Vec<u64> = match split {
            Some(_) => opts
                .split_written
                .iter()
                .flat_map(|&(s, e)| [s, e.saturating_sub(s)])
                .collect(),
            None => Vec::new(),
        };
        let scratch_fd = scratch.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: cpath is a valid C string, handle a valid out pointer; the
        // scratch file stays open for the lifetime of the handle.
        let code = unsafe {
            ffi::pf_open(
                cpath.as_ptr(),
                offset,
                length,
                c_int::from(rw),
                clock,
                scratch_fd,
                split.as_ref().map_or(-1, |f| f.as_raw_fd()),
                runs.as_ptr(),
                (runs.len() / 2) as u64,
                &mut handle,
            )
        };
        if code != 0 {
            if code == c_long::from(libc::EWOULDBLOCK) {
                return Err(Ext4Error::Busy { image: img() });
            }
            if code > 0 && code < 4096 {
                return Err(Ext4Error::Image {
                    image: img(),
                    source: std::io::Error::from_raw_os_error(code as i32),
                });
            }
            if code == et!(pf_et_past_partition) {
                return Err(Ext4Error::PastPartition {
                    image: img(),
                    offset,
                    length,
                    op: "open the filesystem",
                    path: "/".into(),
                });
            }
            if code == et!(pf_et_bad_magic) {
                return Err(Ext4Error::NotExt4 {
                    image: img(),
                    offset,
                });
            }
            if code == et!(pf_et_unsupp_feature) || code == et!(pf_et_ro_unsupp_feature) {
                return Err(Ext4Error::UnsupportedFeatures {
                    image: img(),
                    offset,
                    action: if rw { "write" } else { "read" },
                    features: vec![lib_message(code)],
                });
            }
            return Err(Ext4Error::Lib {
                op: "open the filesystem in",
                path: image.display().to_string(),
                code: code64(code),
                message: lib_message(code),
            });
        }
        let mut fs = Ext4 {
            handle,
            image: img(),
            offset,
            length,
            mode: opts.mode,
            clock,
            block_size: 0,
            extents: false,
            poisoned: None,
            _scratch: scratch,
            _split: split,
        };
        let info = fs.raw_info();
        fs.block_size = u64::from(info.block_size);
        fs.extents = info.incompat & incompat_extents() != 0;
        Ok(fs)
    }

    pub(super) fn raw_info(&self) -> ffi::PfInfo {
        let mut info = ffi::PfInfo::default();
        // SAFETY: handle is live; info is a valid out pointer.
        unsafe { ffi::pf_get_info(self.handle, &mut info) };
        info
    }

    /// Label, UUID, sizes, counts and features.
    pub fn info(&self) -> FsInfo {
        let i = self.raw_info();
        let label_bytes: Vec<u8> = i
            .label
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        let u = i.uuid;
        let hex =
            |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
        FsInfo {
            label: String::from_utf8_lossy(&label_bytes).into_owned(),
            uuid: format!(
                "{}-{}-{}-{}-{}",
                hex(0..4),
                hex(4..6),
                hex(6..8),
                hex(8..10),
                hex(10..16)
            ),
            block_size: i.block_size,
            blocks_count: i.blocks_count,
            free_blocks: i.free_blocks,
            reserved_blocks: i.reserved_blocks,
            inodes_count: i.inodes_count,
            free_inodes: i.free_inodes,
            inode_size: i.inode_size,
            features: feature_names(i.compat, i.incompat, i.ro_compat),
            last_write_time: i.wtime as i64,
        }
    }

    /// The session clock.
    pub fn clock(&self) -> i64 {
        self.clock
    }

    /// Free space in bytes (blocks reserved for root included).
    pub fn free_bytes(&self) -> u64 {
        self.raw_info().free_blocks * self.block_size
    }

    /// Blocks a regular file of `size` bytes takes: its data blocks plus the
    /// extent tree (or indirect) blocks for the worst case of one extent per
    /// block. The directory entry is not included (see [`DIR_GROWTH_BLOCKS`]).
    pub fn blocks_needed_for_file(&self, size: u64) -> u64 {
        blocks_for_size(size, self.block_size, self.extents)
    }

    /// [`Ext4::blocks_needed_for_file`] in bytes.
    pub fn bytes_needed_for_file(&self, size: u64) -> u64 {
        self.blocks_needed_for_file(size) * self.block_size
    }

    /// Flush and close. For a read-write session this is the only moment the
    /// image changes: libext2fs' metadata is flushed into the overlay, the
    /// overlay copied into the image and the image fsynced. A poisoned
    /// session is discarded instead (the image stays unchanged).
    pub fn commit(self) -> Result<()> {
        self.commit_written().map(drop)
    }

    /// [`Ext4::commit`], returning the byte ranges `[start, end)` of the image the session
    /// wrote (increasing, not touching; in 1 KiB units). A session with no overlay (`direct`)
    /// reports none. For a split session ([`OpenOptions::split_into`]) these are the ranges of
    /// the other image that now hold the filesystem's new bytes; the image is not synced.
    pub fn commit_written(mut self) -> Result<Vec<(u64, u64)>> {
        if let Some(first_error) = self.poisoned.take() {
            return Err(Ext4Error::Poisoned { first_error });
        }
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        unsafe extern "C" fn written(ctx: *mut c_void, off: u64, len: u64) {
            // SAFETY: ctx is the Vec passed below, alive and not otherwise borrowed for the
            // whole of pf_commit.
            let runs = unsafe { &mut *(ctx as *mut Vec<(u64, u64)>) };
            runs.push((off, off.saturating_add(len)));
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        // SAFETY: handle came from pf_open and is released here, once (Drop sees a null
        // handle); the callback only pushes into `runs`.
        let code = unsafe {
            ffi::pf_commit(
                handle,
                Some(written),
                &mut runs as *mut Vec<(u64, u64)> as *mut c_void,
            )
        };
        if code == et!(pf_et_past_partition) {
            return Err(self.lib_err(code, "write back", "the filesystem"));
        }
        if code != 0 {
            return Err(Ext4Error::Lib {
                op: "write back the filesystem to",
                path: self.image.display().to_string(),
                code: code64(code),
                message: lib_message(code),
            });
        }
        Ok(runs)
    }
}
