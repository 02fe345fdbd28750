//! Writing outputs: sparse copies, and files that appear under their final name only when
//! whole (a temporary name in the same directory, renamed at the end; removed on error, and
//! on Ctrl-C and SIGTERM by the binary's handler calling [`cleanup_pending`]).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

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
                let _ = fs::remove_dir_all(d);
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
/// finished this way.
pub fn fill_around(src: &File, dst: &File, written: &[(u64, u64)]) -> io::Result<()> {
    let len = src.metadata()?.len();
    let mut buf = Vec::new();
    let mut copy = |from: u64, to: u64| -> io::Result<()> {
        if from < to && !kernel_copy(src, dst, from, to)? {
            buf.resize(1 << 20, 0);
            copy_range(&mut &*src, &mut &*dst, from, to, &mut buf)?;
        }
        Ok(())
    };
    crate::sparse::each_data(src, len, |data, hole| {
        // [data, hole) less the written ranges.
        let mut at = data;
        for &(s, e) in &written[written.partition_point(|r| r.1 <= data)..] {
            if s >= hole {
                break;
            }
            copy(at, s.max(at))?;
            at = at.max(e);
        }
        copy(at.min(hole), hole)
    })?;
    Ok(())
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
