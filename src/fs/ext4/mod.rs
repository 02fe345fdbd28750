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

// Error codes the shim exports; used as `et!(pf_et_file_not_found)`.
macro_rules! et {
    ($name:ident) => {
        // SAFETY: a constant defined in shim.c.
        unsafe { $crate::fs::ext4::ffi::$name }
    };
}

mod alloc;
mod error;
mod features;
mod ffi;
mod open;
mod paths;
mod read;
#[cfg(test)]
mod tests;
mod write;

pub use error::Ext4Error;

use std::ffi::CStr;
use std::fs::File;
use std::os::raw::c_long;
use std::path::PathBuf;

use features::*;
use paths::*;

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
    /// A read-write session that writes into this other image instead (same layout, the
    /// filesystem at the same offset; bytes it does not write are left as they are): the
    /// image opened is only read. [`Ext4::commit_written`] tells which bytes were written.
    /// For a node image made from its role image without copying it first. A read-only
    /// session reads it too, where [`OpenOptions::split_written`] says it holds the bytes.
    pub split_into: Option<std::sync::Arc<File>>,
    /// The byte ranges `[start, end)` of the image (image offsets, increasing) that
    /// `split_into` already holds, written by earlier sessions: the session reads them from
    /// there, so that a chain of sessions over one image each sees the ones before. Inside
    /// the filesystem they must cover whole 1 KiB units of it.
    pub split_written: Vec<(u64, u64)>,
}

impl OpenOptions {
    pub fn new(mode: OpenMode) -> Self {
        OpenOptions {
            mode,
            clock: None,
            scratch_dir: None,
            direct: false,
            split_into: None,
            split_written: Vec::new(),
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

type Result<T> = std::result::Result<T, Ext4Error>;

/// What a path to create already names: its inode and facts.
type Existing = Option<(u32, ffi::PfStat)>;

/// An open ext2/3/4 filesystem inside an image file. See the module docs
/// for the transaction, clock and threading rules.
pub struct Ext4 {
    handle: *mut ffi::PfFs,
    image: PathBuf,
    /// Where the filesystem starts in the image and how many bytes it may use (the shim
    /// refuses I/O past them).
    offset: u64,
    length: u64,
    mode: OpenMode,
    clock: i64,
    block_size: u64,
    extents: bool,
    poisoned: Option<String>,
    /// The overlay's backing file; it must outlive `handle`.
    _scratch: Option<File>,
    /// The image a split session writes into ([`OpenOptions::split_into`]), kept open for the
    /// handle's lifetime.
    _split: Option<std::sync::Arc<File>>,
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

impl Ext4 {
    pub(super) fn lib_err(&self, code: c_long, op: &'static str, path: &str) -> Ext4Error {
        // SAFETY: a live handle (or null, which the shim accepts).
        let refused = unsafe { ffi::pf_io_refused(self.handle) } != 0;
        if code == et!(pf_et_past_partition) || refused {
            return Ext4Error::PastPartition {
                image: self.image.clone(),
                offset: self.offset,
                length: self.length,
                op,
                path: path.to_string(),
            };
        }
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

    pub(super) fn check(&self, code: c_long, op: &'static str, path: &str) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(self.lib_err(code, op, path))
        }
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
