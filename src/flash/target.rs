//! The target of a flash: a block device (opened `O_EXCL`, so the kernel refuses it while a
//! filesystem on it is mounted; written and read back with `O_DIRECT` where the offsets
//! allow) or a regular file (resized to the image, holes punched where nothing is mapped).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// `_IO(0x12, 119)` and friends from `linux/fs.h`.
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;
const BLKFLSBUF: libc::c_ulong = 0x1261;
const BLKSSZGET: libc::c_ulong = 0x1268;
/// `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Block,
    File,
}

pub struct Target {
    pub path: PathBuf,
    pub kind: Kind,
    file: File,
    /// The device's logical block size (512 for a file): O_DIRECT offsets and lengths are
    /// multiples of it.
    pub logical_block: u64,
    /// Whether the descriptor has O_DIRECT set now.
    direct: bool,
    /// Regular files: ranges under writeback, oldest first, and their bytes.
    in_flight: std::collections::VecDeque<(u64, u64)>,
    in_flight_bytes: u64,
}

/// Bytes of a regular-file target allowed under writeback at once.
const WRITE_BEHIND: u64 = 64 << 20;

/// What the path names, before anything is opened for writing.
pub fn kind_of(path: &Path) -> io::Result<Option<Kind>> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => Ok(Some(Kind::Block)),
        Ok(m) if m.is_file() => Ok(Some(Kind::File)),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a block device nor a regular file",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The size of a block device in bytes.
pub fn block_size_bytes(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid for that.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

impl Target {
    /// Opens the target for writing: a block device exclusively (EBUSY while mounted) with
    /// O_DIRECT when the device takes it; a regular file (created 0600 when missing: the
    /// image holds the node's secrets) buffered.
    pub fn open(path: &Path) -> io::Result<Target> {
        match kind_of(path)? {
            Some(Kind::Block) => {
                let open = |flags| {
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_EXCL | flags)
                        .open(path)
                };
                let (file, direct) = match open(libc::O_DIRECT) {
                    Ok(f) => (f, true),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
                    Err(e) => return Err(e),
                };
                let mut ssz: libc::c_int = 0;
                // SAFETY: BLKSSZGET writes one int through the pointer.
                let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET as _, &mut ssz) };
                let logical_block = if r == 0 && ssz > 0 { ssz as u64 } else { 512 };
                Ok(Target {
                    path: path.to_path_buf(),
                    kind: Kind::Block,
                    file,
                    logical_block,
                    direct,
                    in_flight: Default::default(),
                    in_flight_bytes: 0,
                })
            }
            _ => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(path)?;
                Ok(Target {
                    path: path.to_path_buf(),
                    kind: Kind::File,
                    file,
                    logical_block: 512,
                    direct: false,
                    in_flight: Default::default(),
                    in_flight_bytes: 0,
                })
            }
        }
    }

    pub fn size(&self) -> io::Result<u64> {
        match self.kind {
            Kind::Block => block_size_bytes(&self.file),
            Kind::File => Ok(self.file.metadata()?.len()),
        }
    }

    /// A regular file becomes exactly `len` bytes long.
    pub fn set_file_len(&self, len: u64) -> io::Result<()> {
        if self.kind == Kind::File {
            self.file.set_len(len)?;
        }
        Ok(())
    }

    /// Discards `[start, start + len)` on a block device (BLKDISCARD); `Ok(false)` when the
    /// device does not support it. On a file: punches a hole (reads as zeros after).
    pub fn discard(&self, start: u64, len: u64) -> io::Result<bool> {
        if len == 0 {
            return Ok(true);
        }
        match self.kind {
            Kind::Block => {
                let range: [u64; 2] = [start, len];
                // SAFETY: BLKDISCARD reads two u64s (start, length) through the pointer.
                let r = unsafe { libc::ioctl(self.file.as_raw_fd(), BLKDISCARD as _, &range) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    return match e.raw_os_error() {
                        Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL) => {
                            Ok(false)
                        }
                        _ => Err(e),
                    };
                }
                Ok(true)
            }
            Kind::File => self.zero(start, len).map(|_| true),
        }
    }

    /// Makes `[start, start + len)` read as zeros: BLKZEROOUT on a device (offloaded where
    /// the device can, zeros written otherwise), a punched hole in a file (zeros written
    /// where the filesystem cannot punch).
    pub fn zero(&self, start: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        match self.kind {
            Kind::Block => {
                let range: [u64; 2] = [start, len];
                // SAFETY: BLKZEROOUT reads two u64s (start, length) through the pointer.
                let r = unsafe { libc::ioctl(self.file.as_raw_fd(), BLKZEROOUT as _, &range) };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            Kind::File => {
                // SAFETY: fallocate with integer arguments on a valid descriptor.
                let r = unsafe {
                    libc::fallocate(
                        self.file.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        start as libc::off_t,
                        len as libc::off_t,
                    )
                };
                if r == 0 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                    return Err(e);
                }
                let zeros = vec![0u8; 1 << 20];
                let mut at = start;
                while at < start + len {
                    let n = ((start + len - at) as usize).min(zeros.len());
                    self.file.write_all_at(&zeros[..n], at)?;
                    at += n as u64;
                }
                Ok(())
            }
        }
    }

    /// A second handle on the same target for reading only, with its own open file
    /// description (so its O_DIRECT flag is its own: a reader on another thread toggles it
    /// without touching this handle's), opened through `/proc/self/fd` so that it is the
    /// very file or device already open here, never whatever the path names now.
    pub fn reader(&self) -> io::Result<Target> {
        let me = self.file.metadata()?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))?;
        let it = file.metadata()?;
        if (it.dev(), it.ino(), it.rdev()) != (me.dev(), me.ino(), me.rdev()) {
            return Err(io::Error::other("the target changed while it was open"));
        }
        Ok(Target {
            path: self.path.clone(),
            kind: self.kind,
            file,
            logical_block: self.logical_block,
            direct: false,
            in_flight: Default::default(),
            in_flight_bytes: 0,
        })
    }

    /// Whether `(at, len)` can go through O_DIRECT (aligned to the logical block size; the
    /// buffer is page-aligned by the caller).
    fn aligned(&self, at: u64, len: usize) -> bool {
        at.is_multiple_of(self.logical_block) && (len as u64).is_multiple_of(self.logical_block)
    }

    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        if self.kind != Kind::Block || on == self.direct {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl F_GETFL/F_SETFL on a valid descriptor with integer flags.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = if on {
                flags | libc::O_DIRECT
            } else {
                flags & !libc::O_DIRECT
            };
            if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.direct = on;
        Ok(())
    }

    /// Writes `data` at `at`; O_DIRECT when aligned (the buffer must be page-aligned then).
    pub fn write_at(&mut self, data: &[u8], at: u64, direct_ok: bool) -> io::Result<()> {
        let want_direct = direct_ok && self.aligned(at, data.len()) && self.kind == Kind::Block;
        self.set_direct_if_possible(want_direct)?;
        write_all_at(&self.file, data, at)
    }

    /// Reads `buf.len()` bytes at `at`, O_DIRECT when aligned.
    pub fn read_at(&mut self, buf: &mut [u8], at: u64, direct_ok: bool) -> io::Result<()> {
        let want_direct = direct_ok && self.aligned(at, buf.len()) && self.kind == Kind::Block;
        self.set_direct_if_possible(want_direct)?;
        self.file.read_exact_at(buf, at)
    }

    fn set_direct_if_possible(&mut self, on: bool) -> io::Result<()> {
        match self.set_direct(on) {
            Err(e) if on && e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            r => r,
        }
    }

    /// Write-behind on a regular file: starts writeback of `[at, at + len)` now, and once
    /// more than [`WRITE_BEHIND`] bytes are under writeback waits for the oldest ranges, so
    /// dirty pages stay bounded and the writer is never throttled in large steps by the
    /// kernel's dirty-page balancing, while enough I/O stays in flight to keep the disk busy
    /// (the pattern of sync_file_range(2)'s notes). A no-op on block devices (O_DIRECT).
    pub fn write_behind(&mut self, at: u64, len: u64) {
        if self.kind != Kind::File {
            return;
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: sync_file_range with integer arguments on a valid descriptor; a failure
        // only leaves the work to the final fsync.
        unsafe {
            libc::sync_file_range(
                fd,
                at as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.in_flight.push_back((at, len));
        self.in_flight_bytes += len;
        while self.in_flight_bytes > WRITE_BEHIND {
            let Some((p, n)) = self.in_flight.pop_front() else {
                break;
            };
            self.in_flight_bytes -= n;
            // SAFETY: as above.
            unsafe {
                libc::sync_file_range(
                    fd,
                    p as libc::off64_t,
                    n as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                )
            };
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Drops the target's cached pages so the next reads come from the medium: BLKFLSBUF on
    /// a device (after a sync), `posix_fadvise(DONTNEED)` on both.
    pub fn drop_cache(&self) -> io::Result<()> {
        self.file.sync_all()?;
        let fd = self.file.as_raw_fd();
        if self.kind == Kind::Block {
            // SAFETY: BLKFLSBUF takes no argument.
            unsafe { libc::ioctl(fd, BLKFLSBUF as _, 0) };
        }
        // SAFETY: posix_fadvise with integer arguments on a valid descriptor.
        let r = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(())
    }
}

/// `pwrite` until everything is written; a write of 0 bytes (a device gone, a full file
/// system) is an error, never a silent short write.
fn write_all_at(file: &File, mut data: &[u8], mut at: u64) -> io::Result<()> {
    while !data.is_empty() {
        match file.write_at(data, at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the target took no more bytes (short write)",
                ))
            }
            Ok(n) => {
                data = &data[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
