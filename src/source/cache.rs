//! The decompressed-image cache: `<cache>/images/<input-sha256>.img`, written sparse and
//! atomically (a temporary file in the same directory, renamed into place when whole).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{SourceError, CHUNK_SIZE};

/// The piforge cache directory: `$PIFORGE_CACHE`, else `$XDG_CACHE_HOME/piforge`, else
/// `$HOME/.cache/piforge`.
pub fn cache_dir() -> Result<PathBuf, SourceError> {
    let var = |name| std::env::var_os(name);
    resolve_cache_dir(var("PIFORGE_CACHE"), var("XDG_CACHE_HOME"), var("HOME"))
        .ok_or(SourceError::NoCacheDir)
}

fn resolve_cache_dir(
    piforge: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(piforge)
        // The XDG spec says to ignore a relative XDG_CACHE_HOME.
        .or_else(|| {
            set(xdg)
                .filter(|p| p.is_absolute())
                .map(|p| p.join("piforge"))
        })
        .or_else(|| set(home).map(|p| p.join(".cache").join("piforge")))
}

/// The size of a hole-or-data decision.
const BLOCK: usize = 4096;

const PARTIAL_PREFIX: &str = ".partial-";

/// Where the image decoded from the input with this SHA-256 is kept.
pub(crate) fn image_path(cache: &Path, sha256: &str) -> PathBuf {
    cache.join("images").join(format!("{sha256}.img"))
}

/// What went wrong while filling the cache: reading the decoder, or writing the file.
pub(crate) enum FillError {
    Decode(io::Error),
    Write(io::Error),
    /// The decoded image is not usable (its size or first sector, for the caller to judge).
    Rejected(SourceError),
    /// It decodes to more than this many bytes.
    TooLarge(u64),
    /// The cache filesystem has only `free` bytes left after `written` bytes.
    NoRoom {
        free: u64,
        written: u64,
    },
}

/// Bytes available to an unprivileged writer on `f`'s filesystem; `None` when unknown.
fn free_bytes(f: &File) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs on an open descriptor, writing into a buffer of the right type.
    if unsafe { libc::fstatvfs(f.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstatvfs succeeded and filled it.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let (avail, frsize) = (st.f_bavail as u64, st.f_frsize as u64);
    Some(avail.saturating_mul(frsize))
}

/// What [`fill`] checks while it writes.
pub(crate) struct FillChecks<H, C> {
    /// Sees the first decoded chunk (1 MiB, or the whole image when smaller) before anything
    /// is written: a stream that is no disk image stops there (issue 12 item 10).
    pub head: H,
    /// Sees the size before the rename.
    pub size: C,
    /// More decoded bytes than this stop the copy with [`FillError::TooLarge`].
    pub max: u64,
}

/// A decoded image in a locked temporary file of the cache's image directory, whole and
/// checked, waiting for its name ([`Filled::persist`]); removed when dropped.
pub(crate) struct Filled {
    tmp: tempfile::NamedTempFile,
    size: u64,
    /// Listed for the interrupt handler while it is written (it can be as large as the
    /// image; a later run would only sweep it a minute on, [`remove_stale_partials`]). Dropped
    /// after `tmp`: the file is gone or renamed by then.
    _listed: crate::output::ListedTemp,
}

impl Filled {
    /// Syncs the file, makes it read-only and renames it to `dest` (in the same directory),
    /// durably. Returns its size.
    pub(crate) fn persist(self, dest: &Path) -> io::Result<u64> {
        let file = self.tmp.as_file();
        file.set_permissions(fs::Permissions::from_mode(0o444))?;
        file.sync_all()?;
        self.tmp.persist(dest).map_err(|e| e.error)?;
        // Make the rename itself durable.
        if let Some(dir) = dest.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.size)
    }
}

/// Writes everything `decoded` yields into a new temporary file in `dir`: sparse, locked (other
/// piforge processes leave it alone; [`remove_stale_partials`] removes those of killed runs),
/// checked as it goes. On any error (a failed check included) the temporary file is removed:
/// nothing that failed validation is kept. The caller names it ([`Filled::persist`]), once it
/// knows the input's digest.
pub(crate) fn fill_temp<H, C>(
    dir: &Path,
    decoded: &mut dyn Read,
    checks: FillChecks<H, C>,
) -> Result<Filled, FillError>
where
    H: FnOnce(&[u8]) -> Result<(), SourceError>,
    C: FnOnce(u64) -> Result<(), SourceError>,
{
    fs::create_dir_all(dir).map_err(FillError::Write)?;
    remove_stale_partials(dir);

    let (tmp, listed) = crate::output::ListedTemp::create(|| {
        let t = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(dir)?;
        let path = t.path().to_path_buf();
        Ok((t, path))
    })
    .map_err(FillError::Write)?;
    // From here on, whatever fails drops `tmp` (removing the file) before `_listed`.
    let mut filled = Filled {
        tmp,
        size: 0,
        _listed: listed,
    };
    let file = filled.tmp.as_file();
    // Held until the file is closed: tells other piforge processes this file is being written.
    lock(file).map_err(FillError::Write)?;

    let mut head = Some(checks.head);
    let size = copy_sparse_checked(decoded, file, checks.max, &mut |chunk| match head.take() {
        Some(h) => h(chunk),
        None => Ok(()),
    })?;
    (checks.size)(size).map_err(FillError::Rejected)?;
    file.set_len(size).map_err(FillError::Write)?;
    filled.size = size;
    Ok(filled)
}

/// Copies `src` to `out` from offset 0, leaving a hole wherever a 4 KiB-aligned block is all
/// zeros. Returns the number of bytes copied; the caller sets the length (for a trailing hole).
#[cfg(test)]
pub(crate) fn copy_sparse(src: &mut dyn Read, out: &File) -> Result<u64, FillError> {
    copy_sparse_checked(src, out, u64::MAX, &mut |_| Ok(()))
}

/// Free space the cache filesystem must keep while an image is decoded into it, checked every
/// [`SPACE_CHECK_EVERY`] bytes: running it full would fail other programs too, and a decoder
/// fed a bomb is stopped with a clear message rather than ENOSPC.
const MIN_FREE: u64 = 256 << 20;
const SPACE_CHECK_EVERY: u64 = 64 << 20;

/// [`copy_sparse`] with checks: `chunk_check` sees each decoded chunk before it is written,
/// more than `max` bytes is [`FillError::TooLarge`], and the output's filesystem must keep
/// [`MIN_FREE`] bytes free.
fn copy_sparse_checked(
    src: &mut dyn Read,
    out: &File,
    max: u64,
    chunk_check: &mut dyn FnMut(&[u8]) -> Result<(), SourceError>,
) -> Result<u64, FillError> {
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut offset = 0u64;
    loop {
        let n = read_full(src, &mut buf).map_err(FillError::Decode)?;
        chunk_check(&buf[..n]).map_err(FillError::Rejected)?;
        if offset + n as u64 > max {
            return Err(FillError::TooLarge(max));
        }
        if offset.is_multiple_of(SPACE_CHECK_EVERY) && !is_zero(&buf[..n]) {
            if let Some(free) = free_bytes(out) {
                if free < MIN_FREE {
                    return Err(FillError::NoRoom {
                        free,
                        written: offset,
                    });
                }
            }
        }
        write_sparse(out, &buf[..n], offset).map_err(FillError::Write)?;
        offset += n as u64;
        if offset.is_multiple_of(SPACE_CHECK_EVERY) {
            start_writeback(out, offset - SPACE_CHECK_EVERY, SPACE_CHECK_EVERY);
        }
        if n < buf.len() {
            return Ok(offset);
        }
    }
}

/// Starts writing `len` bytes of `out` from `offset` to disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): the disk writes while the decoder, which is
/// bound by the CPU, makes the next chunks, so the fsync before the rename has only the last
/// window left to write. A hint: a failure here is left to that fsync to report.
fn start_writeback(out: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range on a valid descriptor with integer arguments.
    let _ =
        unsafe { libc::sync_file_range(out.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Fills `buf` unless the reader ends first; returns how much was read.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes `data` at `offset` (a multiple of [`BLOCK`]), one `pwrite` per run of data blocks;
/// runs of all-zero blocks are skipped and stay holes.
fn write_sparse(out: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut blocks = data.chunks(BLOCK).map(|b| (b.len(), is_zero(b))).peekable();
    let mut start = 0;
    while let Some((len, zero)) = blocks.next() {
        let mut end = start + len;
        while let Some(&(len, _)) = blocks.peek().filter(|(_, z)| *z == zero) {
            end += len;
            blocks.next();
        }
        if !zero {
            out.write_all_at(&data[start..end], offset + start as u64)?;
        }
        start = end;
    }
    Ok(())
}

fn is_zero(block: &[u8]) -> bool {
    // 64-byte chunks OR-folded: vectorised, with an early exit on the first chunk of data.
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

fn lock(file: &File) -> io::Result<()> {
    // SAFETY: flock on a valid, open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes temporary files of earlier runs that were killed while decoding: those nobody holds
/// locked and that have not changed for a minute. Best effort.
fn remove_stale_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(PARTIAL_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        let old = fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                SystemTime::now().duration_since(t).unwrap_or_default() > Duration::from_secs(60)
            });
        if old && File::open(&path).is_ok_and(|f| lock(&f).is_ok()) {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn cache_dir_precedence() {
        assert_eq!(
            resolve_cache_dir(os("/p"), os("/x"), os("/h")),
            Some("/p".into())
        );
        assert_eq!(
            resolve_cache_dir(os(""), os("/x"), os("/h")),
            Some("/x/piforge".into())
        );
        assert_eq!(
            resolve_cache_dir(None, os("rel"), os("/h")),
            Some("/h/.cache/piforge".into())
        );
        assert_eq!(
            resolve_cache_dir(None, None, os("/h")),
            Some("/h/.cache/piforge".into())
        );
        assert_eq!(resolve_cache_dir(None, None, None), None);
    }

    #[test]
    fn zero_blocks_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        // data, 8 MiB of zeros, data, a partial zero tail.
        let mut data = vec![0u8; 10 << 20];
        data[..BLOCK + 1].fill(0xAB);
        data[9 << 20..(9 << 20) + 3 * BLOCK].fill(0xCD);
        data[(9 << 20) + 3 * BLOCK + 100] = 1;
        let out = File::create(&path).unwrap();
        let n = copy_sparse(&mut &data[..], &out).ok().unwrap();
        assert_eq!(n, data.len() as u64);
        out.set_len(n).unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
        let allocated = fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");
    }

    #[test]
    fn stale_partials_are_removed_but_locked_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".partial-x.img-1");
        let busy = dir.path().join(".partial-x.img-2");
        let other = dir.path().join(".partial-y.img-1");
        for p in [&stale, &busy, &other] {
            fs::write(p, b"x").unwrap();
            let old = SystemTime::now() - Duration::from_secs(3600);
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let holder = File::open(&busy).unwrap();
        lock(&holder).unwrap();
        let recent = dir.path().join(".partial-abc123");
        fs::write(&recent, b"x").unwrap();
        let unrelated = dir.path().join("x.img");
        fs::write(&unrelated, b"x").unwrap();
        remove_stale_partials(dir.path());
        assert!(!stale.exists());
        assert!(busy.exists());
        assert!(!other.exists());
        assert!(recent.exists(), "changed less than a minute ago");
        assert!(unrelated.exists());
    }
}
