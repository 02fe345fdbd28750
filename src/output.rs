//! Writing outputs: sparse copies, and files that appear under their final name only when
//! whole (a temporary name in the same directory, renamed at the end; removed on error, and
//! on Ctrl-C and SIGTERM by the binary's handler calling [`cleanup_pending`]).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::disk::{around, split};

/// Temporary outputs to remove if the process is interrupted.
fn pending() -> &'static Mutex<Vec<PathBuf>> {
    static P: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(Vec::new()))
}

/// Removes every temporary output still being written, then whatever an [`Unfinished`] job
/// holds (the same cleanup as the job failing); returns how many temporary files there were.
/// For the binary's Ctrl-C / SIGTERM handler, which then exits. The registries' locks stay
/// held (and are leaked) afterwards, so that no new temporary file appears between the
/// cleanup and the exit: [`AtomicFile::create`] blocks instead.
///
/// Temporary files go first: an output renamed into place after that cannot exist (its
/// temporary file is gone), and one renamed before is then seen by the [`Unfinished`] pass.
pub fn cleanup_pending() -> usize {
    let list = pending().lock().unwrap_or_else(|p| p.into_inner());
    for p in list.iter() {
        let _ = fs::remove_file(p);
    }
    let n = list.len();
    std::mem::forget(list);
    let jobs = unfinished().lock().unwrap_or_else(|p| p.into_inner());
    for (_, entry) in jobs.iter() {
        entry.undo();
    }
    std::mem::forget(jobs);
    n
}

/// A temporary file made by someone other than [`AtomicFile`] (the cache's decoded image,
/// `<cache>/images/.partial-*`, as large as the image), listed for [`cleanup_pending`] until
/// this is dropped: the owner removes the file itself (or renames it into place) before.
#[derive(Debug)]
pub struct ListedTemp(PathBuf);

impl ListedTemp {
    /// Runs `make`, which creates a file and returns it with its path, under the registry's
    /// lock, and lists the path: the interrupt handler sees no file or a listed one, never an
    /// unlisted one it would leave behind (as for [`AtomicFile::create`]).
    pub fn create<T>(make: impl FnOnce() -> io::Result<(T, PathBuf)>) -> io::Result<(T, Self)> {
        let mut list = pending().lock().unwrap_or_else(|p| p.into_inner());
        let (made, path) = make()?;
        list.push(path.clone());
        Ok((made, ListedTemp(path)))
    }
}

impl Drop for ListedTemp {
    fn drop(&mut self) {
        pending()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| p != &self.0);
    }
}

/// What an unfinished job made, to undo if it fails or is interrupted.
#[derive(Debug)]
enum Made {
    /// A directory the job created: removed with everything in it.
    Dir(PathBuf),
    /// A file the job is about to write (or replace): removed unless it is still the file
    /// that was there before (device and inode), so an older output the job never reached
    /// stays.
    Output {
        path: PathBuf,
        before: Option<(u64, u64)>,
    },
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Made {
    fn undo(&self) {
        match self {
            Made::Dir(d) => {
                // On an interrupt the job's threads still run beside the handler: a file they
                // make in the directory while it is being removed fails the removal, so it is
                // tried again.
                for _ in 0..5 {
                    if fs::remove_dir_all(d).is_ok() || fs::symlink_metadata(d).is_err() {
                        break;
                    }
                }
            }
            Made::Output { path, before } => {
                let now = identity(path);
                if now.is_some() && now != *before {
                    let _ = fs::remove_file(path);
                }
            }
        }
    }
}

fn unfinished() -> &'static Mutex<Vec<(u64, Made)>> {
    static U: OnceLock<Mutex<Vec<(u64, Made)>>> = OnceLock::new();
    U.get_or_init(|| Mutex::new(Vec::new()))
}

/// The outputs of a job (a build) that must appear all together or not at all: until
/// [`Unfinished::finish`], what it registered is removed when it is dropped (the job failed)
/// and when the process is interrupted ([`cleanup_pending`]), so that Ctrl-C runs the same
/// cleanup as a failure (issue 12 item 9).
#[derive(Debug)]
pub struct Unfinished {
    id: u64,
}

impl Unfinished {
    pub fn new() -> Unfinished {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Unfinished {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn add(&self, made: Made) {
        unfinished()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.id, made));
    }

    /// A directory the job created (a work or staging directory).
    pub fn dir(&self, path: &Path) {
        self.add(Made::Dir(path.to_path_buf()));
    }

    /// Makes a directory with `make` (which returns its path) and registers it, under the
    /// registry's lock: an interrupt finds it registered or not yet made.
    pub fn make_dir(&self, make: impl FnOnce() -> io::Result<PathBuf>) -> io::Result<PathBuf> {
        let mut all = unfinished().lock().unwrap_or_else(|p| p.into_inner());
        let d = make()?;
        all.push((self.id, Made::Dir(d.clone())));
        Ok(d)
    }

    /// A file the job is about to write; register it before writing it.
    pub fn output(&self, path: &Path) {
        self.add(Made::Output {
            path: path.to_path_buf(),
            before: identity(path),
        });
    }

    /// The job is whole: keep everything.
    pub fn finish(self) {
        self.forget();
    }

    fn forget(&self) -> Vec<Made> {
        let mut all = unfinished().lock().unwrap_or_else(|p| p.into_inner());
        let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(id, _)| *id == self.id);
        *all = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }
}

impl Default for Unfinished {
    fn default() -> Self {
        Unfinished::new()
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        for made in self.forget() {
            made.undo();
        }
    }
}

/// Whether `name` is the name of an [`AtomicFile`]'s temporary file.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

const TEMP_SUFFIX: &str = ".piforge-tmp";

/// Removes the [`AtomicFile`] temporary files in `dir` whose writer is no longer running (it
/// was killed before it could clean up: `kill -9`, a power cut), and returns how many. A file
/// whose process still runs (or whose name carries no process id) is left alone.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_temp_name(&name) || e.file_type().map_or(true, |t| t.is_dir()) {
            continue;
        }
        let stem = &name[..name.len() - TEMP_SUFFIX.len()];
        let pid = stem
            .rsplit('.')
            .nth(1)
            .and_then(|p| p.parse::<libc::pid_t>().ok())
            .filter(|p| *p > 0);
        let Some(pid) = pid else { continue };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// How much a cache directory holds: entries, and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub files: usize,
    pub bytes: u64,
}

/// Writes the cache entry `dest` (its parts, whole, renamed into place: never half-written)
/// and keeps the newest `keep` entries of its directory ([`remove_oldest`]). Failing to is not
/// an error: a cache entry missing is work done again.
pub fn store_newest(dest: &Path, parts: &[&[u8]], keep: usize) {
    let Some(dir) = dest.parent() else { return };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let _ = replace_unsynced(dest, parts);
    remove_stale_temps(dir);
    let keep = Bound {
        files: keep,
        bytes: u64::MAX,
    };
    remove_oldest(dir, keep, keep);
}

/// Removes the least recently modified entries of the cache directory `dir` (regular files
/// named by a SHA-256; anything else, temporary files included, is left alone) once they hold
/// more than `max`, until they hold no more than `to`.
pub fn remove_oldest(dir: &Path, max: Bound, to: Bound) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(crate::digest::is_sha256_hex)
        })
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                (
                    m.modified().unwrap_or(std::time::UNIX_EPOCH),
                    m.len(),
                    e.path(),
                )
            })
        })
        .collect();
    let (mut files, mut bytes) = (found.len(), found.iter().map(|f| f.1).sum::<u64>());
    if files <= max.files && bytes <= max.bytes {
        return;
    }
    found.sort();
    for (_, len, path) in found {
        if files <= to.files && bytes <= to.bytes {
            break;
        }
        if fs::remove_file(&path).is_ok() {
            files -= 1;
            bytes -= len;
        }
    }
}

/// A file being written under a temporary name beside its final path.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    committed: bool,
}

impl AtomicFile {
    /// Creates a temporary file beside `dest`, mode 0644 (less the umask): see
    /// [`AtomicFile::create_with_mode`].
    pub fn create(dest: &Path) -> io::Result<AtomicFile> {
        AtomicFile::create_with_mode(dest, 0o644)
    }

    /// Creates `.NAME.<pid>.<random>.piforge-tmp` beside `dest`, with `mode` (less the umask).
    /// The process id lets [`remove_stale_temps`] tell a killed writer's file from a live one.
    ///
    /// The name is unpredictable and the file is made with `O_CREAT|O_EXCL` (which never
    /// follows a symlink), so a link planted at a guessed temporary name cannot make piforge
    /// write through it; [`AtomicFile::commit`] renames this file, which replaces whatever
    /// entry is at `dest` (a symlink there is replaced, not followed).
    pub fn create_with_mode(dest: &Path, mode: u32) -> io::Result<AtomicFile> {
        use std::os::unix::fs::PermissionsExt;
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the output path has no file name",
                )
            })?
            .to_string_lossy()
            .into_owned();
        // Created and listed under the lock the interrupt handler takes: the handler sees
        // either no file or a listed one, never an unlisted one it would leave behind.
        let mut list = pending().lock().unwrap_or_else(|p| p.into_inner());
        let umask = current_umask();
        let (file, tmp) = tempfile::Builder::new()
            .prefix(&format!(".{name}.{}.", std::process::id()))
            .suffix(TEMP_SUFFIX)
            .rand_bytes(12)
            .permissions(fs::Permissions::from_mode(mode & !umask))
            .tempfile_in(&dir)?
            .keep()
            .map_err(|e| e.error)?;
        list.push(tmp.clone());
        drop(list);
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            file,
            committed: false,
        })
    }

    /// The temporary path (for tools that open the file by name, such as libext2fs).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes to disk and renames into place.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

/// Writes `parts` one after the other into a new file that replaces `dest` whole (an
/// [`AtomicFile`] renamed over it), mode 0644 less the umask, not synced: for the cache's memos,
/// which are checked when read and cost only their recomputation when a crash loses them.
/// The caller may ignore the error (a memo not written is no failure).
pub fn replace_unsynced(dest: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut f = AtomicFile::create_with_mode(dest, 0o644)?;
    for p in parts {
        f.file().write_all(p)?;
    }
    fs::rename(&f.tmp, &f.dest)?;
    f.committed = true;
    Ok(())
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
        pending()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| p != &self.tmp);
    }
}

/// The process's umask (read by setting it and setting it back).
fn current_umask() -> u32 {
    // SAFETY: umask(2) cannot fail; the value is restored at once. Another thread creating a
    // file between the two calls would get mode & !0o022 at worst, the common umask.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    }
}

/// Copies `src` into `dst` (both from byte 0), keeping holes: only the data ranges the source
/// file has allocated are copied. A source that is already sparse (the cache writes holes) is
/// copied inside the kernel; a fully allocated one is read, and its all-zero blocks become
/// holes.
pub fn sparse_copy(src: &File, dst: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let md = src.metadata()?;
    let len = md.len();
    let already_sparse = md.blocks().saturating_mul(512) < len / 10 * 9;
    // A new file is extended only: truncating it to 0 first would make ext4 write it all
    // out when it is closed (its `auto_da_alloc` for files rewritten by truncation).
    if dst.metadata()?.len() != 0 {
        dst.set_len(0)?;
    }
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    crate::sparse::each_data(src, len, |data, hole| {
        if !already_sparse || !kernel_copy(src, dst, data, hole)? {
            copy_range(&mut &*src, &mut &*dst, data, hole, &mut buf)?;
        }
        Ok(())
    })?;
    Ok(len)
}

/// Fills `dst` (as long as `src`) with `src`'s data outside `written` (increasing, disjoint
/// byte ranges that `dst` already holds): `dst` then is `src` with those ranges replaced. The
/// data is copied inside the kernel where it can be; `src`'s holes stay holes where nothing
/// was written. A node image edited over its role image ([`crate::apply::apply_over`]) is
/// finished this way, or by [`fill_around_direct`].
pub fn fill_around(src: &File, dst: &File, written: &[(u64, u64)]) -> io::Result<()> {
    let len = src.metadata()?.len();
    let mut copy = buffered_copier(src, dst);
    crate::sparse::each_data(src, len, |data, hole| {
        around(written, data, hole, &mut copy)
    })
}

/// Copies byte ranges of `src` into `dst` at the same offsets, through the page cache: inside
/// the kernel where it can, else through a buffer.
fn buffered_copier<'a>(
    src: &'a File,
    dst: &'a File,
) -> impl FnMut(u64, u64) -> io::Result<()> + 'a {
    let mut buf = Vec::new();
    move |from: u64, to: u64| -> io::Result<()> {
        if from < to && !kernel_copy(src, dst, from, to)? {
            buf.resize(1 << 20, 0);
            copy_range(&mut &*src, &mut &*dst, from, to, &mut buf)?;
        }
        Ok(())
    }
}

/// The alignment of direct writes: a filesystem block (and a multiple of any disk's sector).
const DIRECT_BLOCK: u64 = 4096;

/// [`fill_around`], writing `src`'s data to `dst` (the file at `dst_path`) with `O_DIRECT`:
/// read from `src`'s pages into one reused, aligned buffer and written from it to the disk,
/// never through `dst`'s page cache. Only the 4 KiB blocks that a written range touches are
/// copied through the page cache, around the bytes written (they share pages with them).
///
/// A copy into the page cache puts every byte into a page the kernel has just allocated (on
/// this project's virtual machines, a page the host may have to back first), then writes it
/// back and frees it: measured against `dd oflag=direct`, a 1.1 GB copy and sync took
/// 1.4-2.2 s against 0.8-1.0 s (BENCHMARKS.md). A node image's digests read the chunks nothing
/// was written into from the role image, not from the node image, so nothing is lost by
/// leaving its data out of the page cache. Returns how many bytes went directly; 0 when the
/// filesystem refuses `O_DIRECT` (tmpfs): everything was then copied as by [`fill_around`].
pub fn fill_around_direct(
    src: &File,
    dst: &File,
    dst_path: &Path,
    written: &[(u64, u64)],
) -> io::Result<u64> {
    let Some(direct) = open_direct(dst, dst_path)? else {
        fill_around(src, dst, written)?;
        return Ok(0);
    };
    let len = src.metadata()?.len();
    // The blocks the written ranges touch.
    let mut near: Vec<(u64, u64)> = Vec::with_capacity(written.len());
    for &(s, e) in written {
        let (a, b) = (
            s / DIRECT_BLOCK * DIRECT_BLOCK,
            e.div_ceil(DIRECT_BLOCK).saturating_mul(DIRECT_BLOCK),
        );
        crate::disk::add_range(&mut near, a, b.min(len.max(e)));
    }
    let mut raw = vec![0u8; crate::compress::CHUNK + DIRECT_BLOCK as usize];
    let skip = raw.as_ptr().align_offset(DIRECT_BLOCK as usize);
    let buf = &mut raw[skip..skip + crate::compress::CHUNK];
    let mut buffered = buffered_copier(src, dst);
    let mut direct_bytes = 0u64;
    let mut refused = false;
    let mut copy_direct = |from: u64,
                           to: u64,
                           buffered: &mut dyn FnMut(u64, u64) -> io::Result<()>|
     -> io::Result<()> {
        // The whole blocks inside directly, the ends (the file's last, partial block) through
        // the page cache.
        let (a, b) = (
            from.next_multiple_of(DIRECT_BLOCK),
            to / DIRECT_BLOCK * DIRECT_BLOCK,
        );
        if refused || a >= b {
            return buffered(from, to);
        }
        buffered(from, a)?;
        let mut at = a;
        while at < b {
            let n = ((b - at) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], at)?;
            match direct.write_all_at(&buf[..n], at) {
                Ok(()) => direct_bytes += n as u64,
                // Refused after all (a device with larger sectors): the rest through the page
                // cache. Nothing was written by the refused call.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && direct_bytes == 0 => {
                    refused = true;
                    return buffered(at, to);
                }
                Err(e) => return Err(e),
            }
            at += n as u64;
        }
        buffered(b, to)
    };
    crate::sparse::each_data(src, len, |data, hole| {
        split(&near, data, hole, |a, b, near_written| match near_written {
            true => around(written, a, b, &mut buffered),
            false => copy_direct(a, b, &mut buffered),
        })
    })?;
    Ok(direct_bytes)
}

/// `dst` (the file at `path`) opened a second time for writing with `O_DIRECT`; `None` when
/// its filesystem refuses `O_DIRECT`. The new descriptor must be the same file (it is opened
/// by name: nothing followed, and checked).
fn open_direct(dst: &File, path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = match fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (a, b) = (dst.metadata()?, f.metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(io::Error::other(format!(
            "{} was replaced while it was written",
            path.display()
        )));
    }
    Ok(Some(f))
}

/// Copies `[from, to)` inside the kernel (`copy_file_range`: no trip through user space, and a
/// reflink on filesystems that share blocks). `Ok(false)`: not supported here, nothing copied.
fn kernel_copy(src: &File, dst: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut at = from;
    while at < to {
        let mut off_in = at as libc::loff_t;
        let mut off_out = at as libc::loff_t;
        let want = ((to - at) as usize).min(1 << 30);
        // SAFETY: valid descriptors and pointers to local offsets.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS)
                    | Some(libc::EXDEV)
                    | Some(libc::EINVAL)
                    | Some(libc::EOPNOTSUPP)
            );
            if unsupported && at == from {
                return Ok(false);
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the source image ended early",
            ));
        }
        at += n as u64;
    }
    Ok(true)
}

fn copy_range(
    src: &mut &File,
    dst: &mut &File,
    from: u64,
    to: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    src.seek(SeekFrom::Start(from))?;
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        src.read_exact(&mut buf[..n])?;
        write_sparse(dst, at, &buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Writes `data` at `at`, leaving 4 KiB blocks that are all zero unwritten (holes, as the
/// destination was extended with `set_len`).
pub fn write_sparse<W: Write + Seek>(dst: &mut W, at: u64, data: &[u8]) -> io::Result<()> {
    const BLK: usize = 4096;
    let mut i = 0;
    while i < data.len() {
        // Find the next run of non-zero blocks.
        let start = i;
        while i < data.len() && is_zero(&data[i..(i + BLK).min(data.len())]) {
            i += BLK;
        }
        let run_start = i.min(data.len());
        while i < data.len() && !is_zero(&data[i..(i + BLK).min(data.len())]) {
            i += BLK;
        }
        let run_end = i.min(data.len());
        if run_end > run_start {
            dst.seek(SeekFrom::Start(at + run_start as u64))?;
            dst.write_all(&data[run_start..run_end])?;
        }
        if start == i {
            break;
        }
    }
    Ok(())
}

/// How [`copy_image`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// The destination shares the source's blocks (`FICLONE`: btrfs, XFS with reflink=1,
    /// bcachefs); the copy took no data I/O.
    Reflink,
    /// Data ranges copied, holes kept ([`sparse_copy`]).
    Sparse,
    /// No copy: the source itself was renamed (it had no other use).
    Renamed,
    /// Written over the source into a new file, then the source's data copied around what
    /// was written ([`crate::apply::apply_over`], [`fill_around`]).
    Around,
}

/// `FICLONE` = `_IOW(0x94, 9, int)` (linux/fs.h), spelled out: not every libc crate version
/// exports it.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Starts writing `[at, at + len)` of `f` to disk (`len` 0: to the end of the file) without
/// waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); a filesystem without it is left
/// to the caller's fsync.
pub fn start_writeback(f: &File, at: u64, len: u64) -> io::Result<()> {
    // SAFETY: sync_file_range on a valid descriptor with integer arguments.
    let r = unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            at as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ESPIPE)
        ) {
            return Err(e);
        }
    }
    Ok(())
}

/// Syncs `f`, then drops its pages from the page cache (`posix_fadvise(DONTNEED)`, which
/// drops clean pages only: hence the sync first). For a finished output nothing reads again:
/// a build writing ten 2 GB images then keeps about one image's worth of them cached instead
/// of all ten, pushing out what the build (its role images) and the rest of the machine still
/// use, and each next image's pages are taken from the ones the last one freed. On a virtual
/// machine whose host backs guest memory only when first touched (virtio-balloon, virtio-mem)
/// that is also the difference between a copy at memory speed and one that waits for the host
/// on every new page (measured in BENCHMARKS.md: 2.5-3.5 s against 1.0-1.7 s per 1.1 GB copy).
/// A filesystem that ignores the advice loses nothing.
pub fn sync_and_drop(f: &File) -> io::Result<()> {
    f.sync_all()?;
    // SAFETY: posix_fadvise with integer arguments on a valid descriptor; it only advises.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    Ok(())
}

/// Makes `dst` (an empty file opened for writing) a copy of `src`: a reflink where the
/// filesystem shares blocks between files, else a sparse copy.
pub fn clone_or_copy(src: &mut File, dst: &mut File) -> io::Result<CopyKind> {
    if reflink(src, dst)? {
        return Ok(CopyKind::Reflink);
    }
    sparse_copy(src, dst)?;
    Ok(CopyKind::Sparse)
}

/// Makes `dst` (an empty file opened for writing) share `src`'s blocks (`FICLONE`); `false`
/// when the filesystem cannot (or the two are on different filesystems): nothing done.
pub fn reflink(src: &File, dst: &File) -> io::Result<bool> {
    // SAFETY: ioctl on two valid descriptors; FICLONE takes the source descriptor by value.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Not supported by this filesystem, or across two filesystems.
        Some(libc::EOPNOTSUPP)
        | Some(libc::ENOTTY)
        | Some(libc::EINVAL)
        | Some(libc::EXDEV)
        | Some(libc::ENOSYS)
        | Some(libc::EPERM) => Ok(false),
        _ => Err(e),
    }
}

/// Copies the image `src` to a new file `dst` (created with `O_CREAT|O_EXCL`, so never through
/// a link; mode `mode` less the umask), by [`clone_or_copy`]. Not synced: the caller syncs
/// once, when the file is complete.
pub fn copy_image(src: &Path, dst: &Path, mode: u32) -> io::Result<CopyKind> {
    let mut s = File::open(src)?;
    clone_or_copy(&mut s, &mut new_image_file(dst, mode)?)
}

/// A new, empty file at `path` (never through a link, never an existing file) with `mode`,
/// open for reading and writing.
pub fn new_image_file(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn is_zero(b: &[u8]) -> bool {
    // Compiles to wide compares; fast enough next to the I/O.
    b.iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// What a job that fails leaves: nothing it made or replaced, everything it never reached.
    #[test]
    fn an_unfinished_job_takes_back_what_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        fs::write(p("kept.img"), "older build, never reached").unwrap();
        fs::write(p("replaced.img"), "older build").unwrap();
        fs::create_dir(p(".work.x")).unwrap();
        fs::write(p(".work.x/role.img"), "role").unwrap();
        let job = Unfinished::new();
        job.dir(&p(".work.x"));
        for n in ["kept.img", "replaced.img", "new.img"] {
            job.output(&p(n));
        }
        let mut f = AtomicFile::create(&p("replaced.img")).unwrap();
        f.file().write_all(b"this build").unwrap();
        f.commit().unwrap();
        fs::write(p("new.img"), "this build").unwrap();
        drop(job);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["kept.img"]);
        // A finished job keeps everything.
        let job = Unfinished::new();
        job.output(&p("new.img"));
        fs::write(p("new.img"), "whole").unwrap();
        job.finish();
        assert!(p("new.img").exists());
    }

    #[test]
    fn planted_links_are_never_written_through() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let dest = dir.path().join("out.img");
        // Links at the temporary names an attacker could guess (the old scheme was
        // .NAME.piforge-tmp-PID), and at the output itself.
        symlink(
            &victim,
            dir.path()
                .join(format!(".out.img.piforge-tmp-{}", std::process::id())),
        )
        .unwrap();
        symlink(&victim, &dest).unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        // The name carries the process id (for the stale-file cleanup) and 12 random
        // characters after it: not guessable, and never the same twice.
        let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
        let random = name
            .strip_prefix(&format!(".out.img.{}.", std::process::id()))
            .and_then(|r| r.strip_suffix(".piforge-tmp"))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(random.len(), 12, "{name}");
        let g = AtomicFile::create(&dest).unwrap();
        assert_ne!(g.path(), f.path());
        drop(g);
        f.file().write_all(b"new image").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let meta = fs::symlink_metadata(&dest).unwrap();
        assert!(meta.file_type().is_file(), "the output is still a link");
        assert_eq!(fs::read(&dest).unwrap(), b"new image");
        // A private output is 0600 from its creation on.
        let p = dir.path().join("secret.img");
        let mut f = AtomicFile::create_with_mode(&p, 0o600).unwrap();
        assert_eq!(
            f.file().metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
        f.commit().unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn sparse_copy_keeps_content_and_holes() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let mut f = File::create(&a).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 10_000]).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(&vec![0u8; 1 << 20]).unwrap(); // allocated zeros
        f.write_all(b"tail").unwrap();
        drop(f);
        let b = tmp.path().join("b");
        let src = File::open(&a).unwrap();
        let dst = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&b)
            .unwrap();
        sparse_copy(&src, &dst).unwrap();
        drop(dst);
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert!(
            mb.blocks() <= ma.blocks(),
            "the copy allocated more than the source"
        );

        // A fully allocated source: its zero blocks become holes.
        let c = tmp.path().join("c");
        let mut data = vec![0u8; 8 << 20];
        data[..4096].fill(1);
        data[(6 << 20)..(6 << 20) + 10].fill(2);
        fs::write(&c, &data).unwrap();
        let d = tmp.path().join("d");
        let src = File::open(&c).unwrap();
        let dst = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&d)
            .unwrap();
        sparse_copy(&src, &dst).unwrap();
        drop(dst);
        assert_eq!(fs::read(&d).unwrap(), data);
        let md = fs::metadata(&d).unwrap();
        assert!(
            md.blocks() * 512 < 200 << 10,
            "copy allocated {} bytes",
            md.blocks() * 512
        );
        assert!(
            md.blocks() * 512 < 200 << 10,
            "copy allocated {} bytes",
            md.blocks() * 512
        );
    }

    /// Both fills make the source with the written ranges replaced, its holes left holes (a
    /// range written into one of them too); the direct one writes the blocks no written range
    /// touches with `O_DIRECT` (ext4 here and in CI: refusing it would fail this test) and
    /// copies the blocks around the written bytes through the page cache.
    #[test]
    fn fills_around_written_ranges_directly_or_not() {
        use std::os::unix::fs::FileExt;
        let tmp = tempfile::tempdir().unwrap();
        let src_p = tmp.path().join("src");
        // Ends in a partial block.
        let len: u64 = (24 << 20) + 3 * 512;
        let f = File::create(&src_p).unwrap();
        f.set_len(len).unwrap();
        let pattern = |at: u64, n: usize| -> Vec<u8> {
            (0..n).map(|i| ((at + i as u64) % 251) as u8 + 1).collect()
        };
        for (at, n) in [
            (0u64, 1usize << 20),
            (3 << 20, 5 << 20),
            ((16 << 20) + 4096, 4096),
            (len - 2000, 2000),
        ] {
            f.write_all_at(&pattern(at, n), at).unwrap();
        }
        drop(f);
        let written = [
            (440u64, 446u64),
            (1000, 5000),
            ((4 << 20) + 100, (4 << 20) + 200),
            (10 << 20, (10 << 20) + 8192),
            (len - 10, len),
        ];
        let mut expect = fs::read(&src_p).unwrap();
        for &(s, e) in &written {
            expect[s as usize..e as usize].fill(0xEE);
        }
        for direct in [false, true] {
            let p = tmp.path().join(format!("dst-{direct}"));
            let dst = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&p)
                .unwrap();
            dst.set_len(len).unwrap();
            for &(s, e) in &written {
                dst.write_all_at(&vec![0xEE; (e - s) as usize], s).unwrap();
            }
            let src = File::open(&src_p).unwrap();
            let n = match direct {
                true => fill_around_direct(&src, &dst, &p, &written).unwrap(),
                false => {
                    fill_around(&src, &dst, &written).unwrap();
                    0
                }
            };
            drop(dst);
            assert!(fs::read(&p).unwrap() == expect, "direct: {direct}");
            if direct {
                assert!(n >= 5 << 20, "only {n} bytes went directly");
            }
            let d = File::open(&p).unwrap();
            assert!(crate::sparse::is_hole(&d, 9 << 20, 10 << 20));
            assert!(crate::sparse::is_hole(&d, 1 << 20, 3 << 20));
        }
        // A file replaced under its name is refused, not written.
        let other = tmp.path().join("other");
        fs::write(&other, b"x").unwrap();
        let dst = File::open(tmp.path().join("dst-true")).unwrap();
        let src = File::open(&src_p).unwrap();
        assert!(fill_around_direct(&src, &dst, &other, &written).is_err());
    }

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out.img");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.file().write_all(b"x").unwrap();
        assert!(!dest.exists());
        let t = f.path().to_path_buf();
        assert!(t.exists());
        f.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"x");
        assert!(!t.exists());

        let dest2 = tmp.path().join("never.img");
        let f = AtomicFile::create(&dest2).unwrap();
        let t = f.path().to_path_buf();
        drop(f);
        assert!(
            !dest2.exists() && !t.exists(),
            "an abandoned output leaves nothing"
        );
    }
}
