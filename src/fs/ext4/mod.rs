//! The root filesystem: ext2/3/4 read and edited in user space through
//! e2fsprogs' libext2fs (no mount, no loop device, no root).
//!
//! [`Ext4`] is one session on a filesystem that sits at a byte offset inside
//! an image file. Read-only sessions read the image directly. Read-write
//! sessions are transactions:
//!
//! * every block libext2fs writes goes into an anonymous scratch file (an
//!   overlay), never into the image;
//! * [`Ext4::commit`] lets libext2fs flush its bitmaps, group descriptors and
//!   superblock (into the overlay), then copies the overlay into the image and
//!   fsyncs it;
//! * dropping a session without `commit` (after an error, say) leaves the image
//!   byte-for-byte unchanged. A session in which an edit failed half-way is
//!   *poisoned*: further edits and `commit` are refused, so a half-written
//!   filesystem is never claimed clean.
//!
//! # One clock
//! Every timestamp a session writes (inode atime/mtime/ctime/crtime/dtime,
//! directory mtimes, the superblock's `s_wtime`) comes from the clock given
//! at open time ([`OpenOptions::clock`], normally the build's
//! `SOURCE_DATE_EPOCH`) or from [`Attrs::mtime`]; libext2fs' own stamps read
//! `fs->now`, which the shim pins to that clock. Allocation in libext2fs is
//! goal-based and the directory hash seed comes from the superblock, so the
//! same edits on the same image give a byte-identical image.
//!
//! # Hash-indexed directories
//! libext2fs 1.47's `ext2fs_link` inserts into htree directories itself,
//! splitting leaves and growing the index, so indexes stay valid. Only
//! when a tree is at its maximum depth does it give up; that is reported as
//! an error instead of growing the directory outside the index.
//!
//! # Threads
//! [`Ext4`] is `Send` (the libext2fs handle has no thread affinity and the
//! shim keeps no per-thread state) but not `Sync`: even reads update
//! libext2fs' internal caches, so one session must not be used from two
//! threads at once.

mod ffi;
#[cfg(test)]
mod tests;

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::path::{Path, PathBuf};

/// Inode number of the root directory.
const ROOT_INO: u32 = 2;
/// Blocks a directory may need to take one more entry (a new leaf block and,
/// for an indexed directory, an index block).
const DIR_GROWTH_BLOCKS: u64 = 2;
/// Size of the buffer used to stream file contents.
const CHUNK: usize = 1 << 20;

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;

// Superblock feature bits (ext2_fs.h).
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_EXTENTS: u32 = 0x40;
const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;
const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;

/// Features libext2fs 1.47 can read (`EXT2_LIB_FEATURE_*_SUPP`).
const LIB_INCOMPAT_SUPP: u32 = 0x2
    | 0x8
    | 0x10
    | 0x4
    | 0x40
    | 0x200
    | 0x400
    | 0x100
    | 0x80
    | 0x8000
    | 0x10000
    | 0x20000
    | 0x2000
    | 0x4000;
/// Features a read-write session accepts: what libext2fs writes correctly
/// and this module's space accounting understands. Left out on purpose:
/// mmp (random sequence numbers), ea_inode, encrypt, casefold, bigalloc
/// (cluster accounting), quota and project (quota files would go stale),
/// shared_blocks, read-only, verity, replica.
const WRITE_COMPAT: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x200 | 0x400 | 0x800 | 0x1000;
const WRITE_INCOMPAT: u32 = 0x2 | 0x10 | 0x40 | 0x80 | 0x200 | 0x2000 | 0x4000 | 0x8000;
const WRITE_RO_COMPAT: u32 = 0x1 | 0x2 | 0x8 | 0x10 | 0x20 | 0x40 | 0x400;

/// Feature names as e2fsprogs (libe2p) prints them, per bit.
const COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x40, "lazy_bg"),
    (0x100, "snapshot_bitmap"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x800, "replica"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

/// Whether a session may change the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    ReadOnly,
    ReadWrite,
}

/// How to open a filesystem; see [`Ext4::open_with`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub mode: OpenMode,
    /// The one clock (seconds since the epoch, non-zero) for every timestamp
    /// the session writes. `None`: the filesystem's own last write time, so a
    /// session without a clock still never writes the wall-clock time.
    pub clock: Option<i64>,
    /// Where the overlay scratch file of a read-write session goes (it holds
    /// about as many bytes as the session writes). Default: the image's
    /// directory.
    pub scratch_dir: Option<PathBuf>,
    /// Write straight into the image, with no overlay scratch file: faster (every block is
    /// written once), but a failed session leaves the image half-edited. Only for callers that
    /// edit a throwaway copy and discard it on error (`customize` does).
    pub direct: bool,
}

impl OpenOptions {
    pub fn new(mode: OpenMode) -> Self {
        OpenOptions {
            mode,
            clock: None,
            scratch_dir: None,
            direct: false,
        }
    }
}

/// Ownership, permissions and time for something created or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask);
    /// ignored for symlinks, which are always `0o777`.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, also used as the access time. The change and
    /// creation times come from the session clock.
    pub mtime: i64,
}

/// What kind of inode a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// Device, FIFO or socket.
    Other,
}

impl FileKind {
    fn from_mode(mode: u16) -> FileKind {
        match mode & S_IFMT {
            S_IFREG => FileKind::File,
            S_IFDIR => FileKind::Dir,
            S_IFLNK => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }
}

/// Facts about one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: u32,
    pub kind: FileKind,
    /// Permission bits (`0o7777` mask).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub nlink: u16,
}

/// One entry of a directory listing ("." and ".." are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name; bytes that are not UTF-8 are replaced (U+FFFD).
    pub name: String,
    pub kind: FileKind,
    pub ino: u32,
}

/// Facts about the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub label: String,
    /// Lower-case hex, 8-4-4-4-12.
    pub uuid: String,
    pub block_size: u32,
    pub blocks_count: u64,
    /// Free blocks, counting the blocks reserved for root.
    pub free_blocks: u64,
    pub reserved_blocks: u64,
    pub inodes_count: u32,
    pub free_inodes: u32,
    pub inode_size: u16,
    /// Enabled features, named and ordered as `dumpe2fs -h` prints them.
    pub features: Vec<String>,
    /// The superblock's last write time.
    pub last_write_time: i64,
}

/// Everything that can go wrong; each message is one sentence naming the
/// image or path and, for library failures, libext2fs' own error text.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("cannot open image {image}: {source}")]
    Image {
        image: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a scratch file in {dir} for editing {image}: {source}")]
    Scratch {
        image: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{image} has no ext2/3/4 filesystem at byte offset {offset}")]
    NotExt4 { image: PathBuf, offset: u64 },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} has a journal that needs \
         recovery; let e2fsck replay it first"
    )]
    NeedsRecovery { image: PathBuf, offset: u64 },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} is marked as having errors; \
         repair it with e2fsck first"
    )]
    ErrorState { image: PathBuf, offset: u64 },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} {reason}; check it with e2fsck \
         first"
    )]
    NotClean {
        image: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} uses features piforge cannot \
         {action}: {}", features.join(", ")
    )]
    UnsupportedFeatures {
        image: PathBuf,
        offset: u64,
        action: &'static str,
        features: Vec<String>,
    },
    #[error("{image} is being edited by another piforge session")]
    Busy { image: PathBuf },
    #[error("the clock for editing {image} must be a non-zero number of seconds")]
    InvalidClock { image: PathBuf },
    #[error("{path} does not exist in the ext4 filesystem")]
    NotFound { path: String },
    #[error("{path} is not a directory in the ext4 filesystem")]
    NotADirectory { path: String },
    #[error("{path} is a directory in the ext4 filesystem")]
    IsADirectory { path: String },
    #[error("{path} is not a symbolic link in the ext4 filesystem")]
    NotASymlink { path: String },
    #[error("{path} is not a regular file in the ext4 filesystem")]
    NotAFile { path: String },
    #[error("{path} is not a directory that is empty")]
    DirectoryNotEmpty { path: String },
    #[error("{path:?} is not a usable ext4 path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("cannot {op} {path}: the filesystem was opened read-only")]
    ReadOnly { op: &'static str, path: String },
    #[error(
        "not enough space in the ext4 filesystem for {path}: it needs {needed_bytes} bytes but \
         only {free_bytes} bytes are free"
    )]
    NoSpace {
        path: String,
        needed_bytes: u64,
        free_bytes: u64,
    },
    #[error("cannot create {path}: the ext4 filesystem has no free inodes left")]
    NoFreeInodes { path: String },
    #[error("the content for {path} was {actual} bytes long, not the {expected} bytes announced")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("reading the content for {path} failed: {source}")]
    Source {
        path: String,
        source: std::io::Error,
    },
    #[error("writing the content of {path} out failed: {source}")]
    Sink {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "this ext4 edit session already failed ({first_error}); drop it, which leaves the image \
         unchanged"
    )]
    Poisoned { first_error: String },
    #[error("could not {op} {path} in the ext4 filesystem: {message}")]
    Lib {
        op: &'static str,
        path: String,
        code: i64,
        message: String,
    },
}

type Result<T> = std::result::Result<T, Ext4Error>;

/// What a path to create already names: its inode and facts.
type Existing = Option<(u32, ffi::PfStat)>;

/// An open ext2/3/4 filesystem inside an image file. See the module docs
/// for the transaction, clock and threading rules.
pub struct Ext4 {
    handle: *mut ffi::PfFs,
    image: PathBuf,
    mode: OpenMode,
    clock: i64,
    block_size: u64,
    extents: bool,
    poisoned: Option<String>,
    /// The overlay's backing file; it must outlive `handle`.
    _scratch: Option<File>,
}

// SAFETY: the handle is owned exclusively by this value; libext2fs and the
// shim keep no thread-local state for it, so moving it to another thread is
// fine. `Ext4` is deliberately not `Sync` (the raw pointer field keeps it so).
unsafe impl Send for Ext4 {}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: the handle came from pf_open and is released once.
            unsafe { ffi::pf_abort(self.handle) };
            self.handle = std::ptr::null_mut();
        }
    }
}

/// An errcode as i64 (`long` is 32 bits on some targets).
#[allow(clippy::unnecessary_cast)]
fn code64(code: c_long) -> i64 {
    code as i64
}

/// libext2fs' text for an error code.
fn lib_message(code: c_long) -> String {
    // SAFETY: error_message returns a pointer to a static or thread-safe
    // buffer holding a NUL-terminated string.
    unsafe {
        let p = ffi::pf_error_message(code);
        if p.is_null() {
            format!("error {code}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

macro_rules! et {
    ($name:ident) => {
        // SAFETY: a constant defined in shim.c.
        unsafe { ffi::$name }
    };
}

/// Names of the feature bits set in `mask`, in bit order (`FEATURE_C12`-style
/// for bits e2fsprogs does not know, as libe2p prints them).
fn names_of(mask: u32, table: &[(u32, &str)], letter: char) -> Vec<String> {
    (0..32)
        .map(|b| 1u32 << b)
        .filter(|bit| mask & bit != 0)
        .map(|bit| match table.iter().find(|(m, _)| *m == bit) {
            Some((_, n)) => (*n).to_string(),
            None => format!("FEATURE_{letter}{}", bit.trailing_zeros()),
        })
        .collect()
}

fn feature_names(compat: u32, incompat: u32, ro_compat: u32) -> Vec<String> {
    let mut v = names_of(compat, COMPAT_NAMES, 'C');
    v.extend(names_of(incompat, INCOMPAT_NAMES, 'I'));
    v.extend(names_of(ro_compat, RO_COMPAT_NAMES, 'R'));
    v
}

/// The fields of the primary superblock the open checks need, read
/// directly so the refusals do not depend on libext2fs' opinion.
struct RawSuper {
    wtime: i64,
    state: u16,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    last_orphan: u32,
}

fn read_raw_super(image: &Path, offset: u64) -> Result<Option<RawSuper>> {
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
    if let Err(e) = f.read_exact_at(&mut sb, start) {
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
    Ok(Some(RawSuper {
        wtime: i64::from(u32_at(0x30)) | (i64::from(sb[0x274]) << 32),
        state: u16_at(0x3A),
        compat: u32_at(0x5C),
        incompat: u32_at(0x60),
        ro_compat: u32_at(0x64),
        last_orphan: u32_at(0xE8),
    }))
}

/// Components of an absolute path to create or change: no ".", "..", empty
/// names beyond repeated slashes, NUL bytes or names over 255 bytes.
fn components(path: &str) -> Result<Vec<&str>> {
    let bad = |reason| Ext4Error::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(bad("it must be absolute"));
    }
    if path.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for c in &comps {
        if *c == "." || *c == ".." {
            return Err(bad("it contains a \".\" or \"..\" component"));
        }
        if c.len() > 255 {
            return Err(bad("a component is longer than 255 bytes"));
        }
    }
    Ok(comps)
}

/// Parent directory path and final name of a path to create or change.
fn split_parent(path: &str) -> Result<(String, &str)> {
    let comps = components(path)?;
    match comps.split_last() {
        Some((name, dirs)) => Ok((format!("/{}", dirs.join("/")), name)),
        None => Err(Ext4Error::InvalidPath {
            path: path.to_string(),
            reason: "it names the root directory",
        }),
    }
}

fn cstring(path: &str, s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| Ext4Error::InvalidPath {
        path: path.to_string(),
        reason: "it contains a NUL byte",
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

unsafe extern "C" fn collect_entry(
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
            },
        )
    }

    /// Open with every option spelled out.
    ///
    /// Refuses (in both modes) a filesystem whose journal needs recovery or
    /// that uses features libext2fs cannot read; refuses to write one marked
    /// as having errors, not cleanly unmounted, with orphans pending, or using
    /// features outside the set this module writes correctly.
    pub fn open_with(image: &Path, offset: u64, opts: &OpenOptions) -> Result<Ext4> {
        let rw = opts.mode == OpenMode::ReadWrite;
        let img = || image.to_path_buf();
        let raw = read_raw_super(image, offset)?.ok_or_else(|| Ext4Error::NotExt4 {
            image: img(),
            offset,
        })?;

        if raw.incompat & INCOMPAT_RECOVER != 0 {
            return Err(Ext4Error::NeedsRecovery {
                image: img(),
                offset,
            });
        }
        let unreadable = raw.incompat & !LIB_INCOMPAT_SUPP;
        if unreadable != 0 {
            return Err(Ext4Error::UnsupportedFeatures {
                image: img(),
                offset,
                action: "read",
                features: feature_names(0, unreadable, 0),
            });
        }
        if rw {
            if raw.state & STATE_ERROR != 0 {
                return Err(Ext4Error::ErrorState {
                    image: img(),
                    offset,
                });
            }
            if raw.state & STATE_VALID == 0 {
                return Err(Ext4Error::NotClean {
                    image: img(),
                    offset,
                    reason: "was not cleanly unmounted",
                });
            }
            if raw.last_orphan != 0 || raw.ro_compat & RO_COMPAT_ORPHAN_PRESENT != 0 {
                return Err(Ext4Error::NotClean {
                    image: img(),
                    offset,
                    reason: "has orphaned inodes pending",
                });
            }
            let (c, i, r) = (
                raw.compat & !WRITE_COMPAT,
                raw.incompat & !WRITE_INCOMPAT,
                raw.ro_compat & !WRITE_RO_COMPAT,
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

        let scratch = if rw && !opts.direct {
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
        let scratch_fd = scratch.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: cpath is a valid C string, handle a valid out pointer; the
        // scratch file stays open for the lifetime of the handle.
        let code = unsafe {
            ffi::pf_open(
                cpath.as_ptr(),
                offset,
                c_int::from(rw),
                clock,
                scratch_fd,
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
            mode: opts.mode,
            clock,
            block_size: 0,
            extents: false,
            poisoned: None,
            _scratch: scratch,
        };
        let info = fs.raw_info();
        fs.block_size = u64::from(info.block_size);
        fs.extents = info.incompat & INCOMPAT_EXTENTS != 0;
        Ok(fs)
    }

    fn raw_info(&self) -> ffi::PfInfo {
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

    fn lib_err(&self, code: c_long, op: &'static str, path: &str) -> Ext4Error {
        if code == et!(pf_et_block_alloc_fail) {
            return Ext4Error::NoSpace {
                path: path.to_string(),
                needed_bytes: self.block_size,
                free_bytes: self.free_bytes(),
            };
        }
        if code == et!(pf_et_inode_alloc_fail) {
            return Ext4Error::NoFreeInodes {
                path: path.to_string(),
            };
        }
        Ext4Error::Lib {
            op,
            path: path.to_string(),
            code: code64(code),
            message: lib_message(code),
        }
    }

    fn check(&self, code: c_long, op: &'static str, path: &str) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(self.lib_err(code, op, path))
        }
    }

    // ---------------------------------------------------------------- reading

    fn abs(path: &str) -> Result<CString> {
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
    fn namei(&self, path: &str, follow: bool) -> Result<Option<u32>> {
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

    fn lookup_in(&self, dir: u32, name: &str, path: &str) -> Result<Option<u32>> {
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

    fn stat_raw(&self, ino: u32, path: &str) -> Result<ffi::PfStat> {
        let mut st = ffi::PfStat::default();
        // SAFETY: live handle, valid out pointer.
        let code = unsafe { ffi::pf_stat(self.handle, ino, &mut st) };
        self.check(code, "read the inode of", path)?;
        Ok(st)
    }

    fn stat_ino(&self, ino: u32, path: &str) -> Result<Stat> {
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
    fn dir_ino(&self, path: &str) -> Result<u32> {
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

    fn file_ino(&self, path: &str) -> Result<(u32, u64)> {
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
    fn list_raw(&self, dir: u32, path: &str) -> Result<Vec<(Vec<u8>, u32, FileKind)>> {
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

    // ---------------------------------------------------------------- writing

    fn writable(&self, op: &'static str, path: &str) -> Result<()> {
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
    fn mutate<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = f(self);
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    fn need_space(&self, path: &str, blocks: u64, reclaim: u64, inode: bool) -> Result<()> {
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

    fn set_meta(
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
    fn prepare(&self, path: &str) -> Result<(u32, CString, Existing)> {
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

    fn stream_into(
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

    fn empty_dir(&mut self, dir: u32, path: &str) -> Result<()> {
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

    fn xattr_name_ok(path: &str, name: &str) -> Result<()> {
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

    /// Flush and close. For a read-write session this is the only moment the
    /// image changes: libext2fs' metadata is flushed into the overlay, the
    /// overlay copied into the image and the image fsynced. A poisoned
    /// session is discarded instead (the image stays unchanged).
    pub fn commit(mut self) -> Result<()> {
        if let Some(first_error) = self.poisoned.take() {
            return Err(Ext4Error::Poisoned { first_error });
        }
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        // SAFETY: handle came from pf_open and is released here, once
        // (Drop sees a null handle).
        let code = unsafe { ffi::pf_commit(handle) };
        if code != 0 {
            return Err(Ext4Error::Lib {
                op: "write back the filesystem to",
                path: self.image.display().to_string(),
                code: code64(code),
                message: lib_message(code),
            });
        }
        Ok(())
    }
}

/// See [`Ext4::blocks_needed_for_file`].
fn blocks_for_size(size: u64, block_size: u64, extents: bool) -> u64 {
    let data = size.div_ceil(block_size);
    if data == 0 {
        return 0;
    }
    let mut meta = 0u64;
    if extents {
        // worst case: one extent per block; 4 fit in the inode, each tree
        // block holds (block_size - 12) / 12 entries
        let per_block = (block_size - 12) / 12;
        let mut entries = data;
        while entries > 4 {
            let blocks = entries.div_ceil(per_block);
            meta += blocks;
            entries = blocks;
        }
    } else {
        // 12 direct pointers, then single, double and triple indirect blocks
        let per = block_size / 4;
        let mut rest = data.saturating_sub(12);
        if rest > 0 {
            meta += 1;
            rest = rest.saturating_sub(per);
        }
        if rest > 0 {
            let n = rest.min(per * per);
            meta += 1 + n.div_ceil(per);
            rest -= n;
        }
        if rest > 0 {
            meta += 1 + rest.div_ceil(per * per) + rest.div_ceil(per);
        }
    }
    data + meta
}
