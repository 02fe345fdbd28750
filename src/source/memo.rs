//! The input's SHA-256 remembered in the cache by the file's identity, so that a second build
//! from the same input does not read and hash it again (a 1 GB `.xz` is ~0.6 s of SHA-256, a
//! 2 GiB raw image 1.3 s, on one core of a machine with SHA instructions).
//!
//! The identity is what git's index trusts to tell an unchanged file (`git update-index`,
//! "racy git" in git's Documentation/technical/racy-git.txt): device, inode, size, and the
//! modification and status-change times to the nanosecond. The status-change time (`ctime`)
//! is set by the kernel on every write, truncation, rename or `utimes` and cannot be set back by
//! an unprivileged process, so a file changed in any way, or replaced by another, no longer
//! matches. A digest is remembered only when the file did not change while it was hashed, and
//! only when its last change is at least [`SETTLED_SECS`] old: on a filesystem whose
//! timestamps are coarse, a change in the same tick as the one remembered would look
//! unchanged (git's racy case), so a file that changed just now is hashed again next time.
//!
//! A memo is a one-line file `<cache>/digests/<dev>-<ino>`; one that cannot be read or does
//! not match is ignored (the input is hashed), and one that cannot be written is not an error.
//! The memo is no more trusted than the cache itself: whoever can write the cache can already
//! replace the decompressed images in it.

use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How old a file's last change must be for its digest to be remembered.
pub const SETTLED_SECS: i64 = 2;

/// What is remembered about a file: its SHA-256, or that its root filesystem passed
/// `e2fsck -fn` (a base image checked once, not at every build).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Digest,
    Checked,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Digest => "digests",
            Kind::Checked => "checked",
        }
    }

    /// Whether `value` is one this kind remembers (one word: a SHA-256, or a check's name).
    fn valid(self, value: &str) -> bool {
        match self {
            Kind::Digest => crate::digest::is_sha256_hex(value),
            Kind::Checked => {
                !value.is_empty()
                    && value.len() <= 64
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-@.".contains(&b))
            }
        }
    }
}

fn memo_path(cache: &Path, kind: Kind, meta: &Metadata) -> PathBuf {
    cache
        .join(kind.dir())
        .join(format!("{}-{}", meta.dev(), meta.ino()))
}

/// The line a memo holds for a file with `meta` and `value`.
fn line(meta: &Metadata, value: &str) -> String {
    format!(
        "v1 {} {} {} {} {} {value}\n",
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// The digest remembered for the file whose metadata is `meta`, when it still matches.
pub fn lookup(cache: &Path, meta: &Metadata) -> Option<String> {
    lookup_kind(cache, Kind::Digest, meta)
}

/// What is remembered of `kind` for the file whose metadata is `meta`, when it still matches.
pub fn lookup_kind(cache: &Path, kind: Kind, meta: &Metadata) -> Option<String> {
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(memo_path(cache, kind, meta))
        .ok()?;
    let mut text = String::new();
    (&mut f).take(256).read_to_string(&mut text).ok()?;
    let value = text.trim_end().rsplit(' ').next()?;
    (kind.valid(value) && text == line(meta, value)).then(|| value.to_string())
}

/// Remembers `sha256` for the file at `path`, whose metadata was `before` when its hashing
/// started: only if it is the same file, unchanged since, and its last change is settled.
pub fn store(cache: &Path, path: &Path, before: &Metadata, sha256: &str) {
    store_kind(cache, Kind::Digest, path, before, sha256);
}

/// [`store`] for any `kind` of `value`.
pub fn store_kind(cache: &Path, kind: Kind, path: &Path, before: &Metadata, value: &str) {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    store_at(cache, kind, path, before, value, clock);
}

/// [`store_kind`] at the time `clock` (seconds since the epoch).
fn store_at(cache: &Path, kind: Kind, path: &Path, before: &Metadata, value: &str, clock: i64) {
    let Ok(now) = fs::metadata(path) else { return };
    let same = line(&now, value) == line(before, value)
        && now.dev() == before.dev()
        && now.ino() == before.ino();
    if !kind.valid(value) || !same || clock - now.ctime() < SETTLED_SECS {
        return;
    }
    let dest = memo_path(cache, kind, &now);
    let Some(dir) = dest.parent() else { return };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let _ = crate::output::replace_unsynced(&dest, &[line(&now, value).as_bytes()]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    /// Sets the file's access and modification times (its ctime moves to now: the kernel
    /// sets it).
    fn set_times(path: &Path, secs: i64) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let t = libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        // SAFETY: a valid C string and two valid timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), 0) },
            0
        );
    }

    /// A digest is remembered only for a settled file, found again while the file is
    /// unchanged, and forgotten when it changes in any way: content of the same size, times
    /// set back, a new file under the same name; a damaged or planted memo is ignored.
    #[test]
    fn remembered_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let input = dir.path().join("in.img.xz");
        fs::write(&input, b"test").unwrap();
        let meta = fs::metadata(&input).unwrap();
        // Changed just now: not remembered.
        store_at(&cache, Kind::Digest, &input, &meta, DIGEST, meta.ctime());
        assert_eq!(lookup(&cache, &meta), None);
        // Settled: remembered, and found while nothing changed.
        store_at(
            &cache,
            Kind::Digest,
            &input,
            &meta,
            DIGEST,
            meta.ctime() + SETTLED_SECS,
        );
        assert_eq!(lookup(&cache, &meta).as_deref(), Some(DIGEST));
        assert_eq!(
            lookup(&cache, &fs::metadata(&input).unwrap()).as_deref(),
            Some(DIGEST)
        );

        // The same size, other bytes (a clock tick later: the kernel's timestamps are
        // coarse, which is why only settled files are remembered).
        std::thread::sleep(std::time::Duration::from_millis(20));
        File::options()
            .write(true)
            .open(&input)
            .unwrap()
            .write_all_at(b"T", 0)
            .unwrap();
        assert_eq!(lookup(&cache, &fs::metadata(&input).unwrap()), None);
        // Its times set back to the remembered ones: its ctime still moved.
        std::thread::sleep(std::time::Duration::from_millis(20));
        set_times(&input, meta.mtime());
        let now = fs::metadata(&input).unwrap();
        assert_eq!(now.mtime(), meta.mtime());
        if (now.ctime(), now.ctime_nsec()) != (meta.ctime(), meta.ctime_nsec()) {
            assert_eq!(lookup(&cache, &now), None);
        }
        // Another file under the same name.
        fs::remove_file(&input).unwrap();
        fs::write(&input, b"test").unwrap();
        let other = fs::metadata(&input).unwrap();
        if other.ino() != meta.ino() {
            assert_eq!(lookup(&cache, &other), None);
        }

        // A damaged memo, or a digest that is not one, is ignored.
        let memo = memo_path(&cache, Kind::Digest, &meta);
        fs::write(&memo, "v1 4 garbage\n").unwrap();
        assert_eq!(lookup(&cache, &meta), None);
        fs::write(&memo, line(&meta, "xyz")).unwrap();
        assert_eq!(lookup(&cache, &meta), None);
        // A memo that is a symlink is not followed.
        fs::remove_file(&memo).unwrap();
        let target = dir.path().join("planted");
        fs::write(&target, line(&meta, DIGEST)).unwrap();
        std::os::unix::fs::symlink(&target, &memo).unwrap();
        assert_eq!(lookup(&cache, &meta), None);
    }

    /// Each kind is remembered apart, and only values of its own form.
    #[test]
    fn kinds_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let input = dir.path().join("base.img");
        fs::write(&input, b"test").unwrap();
        let meta = fs::metadata(&input).unwrap();
        let later = meta.ctime() + SETTLED_SECS;
        store_at(
            &cache,
            Kind::Checked,
            &input,
            &meta,
            "e2fsck-fn@1024",
            later,
        );
        assert_eq!(
            lookup_kind(&cache, Kind::Checked, &meta).as_deref(),
            Some("e2fsck-fn@1024")
        );
        assert_eq!(lookup(&cache, &meta), None);
        store_at(&cache, Kind::Digest, &input, &meta, "not a digest", later);
        assert_eq!(lookup(&cache, &meta), None);
        store_at(&cache, Kind::Checked, &input, &meta, "two words", later);
        assert_eq!(
            lookup_kind(&cache, Kind::Checked, &meta).as_deref(),
            Some("e2fsck-fn@1024")
        );
    }

    /// A file that changes while it is hashed is not remembered.
    #[test]
    fn a_file_changed_while_hashed_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let input = dir.path().join("in.img");
        fs::write(&input, b"test").unwrap();
        let before = fs::metadata(&input).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&input, b"tesT").unwrap();
        store_at(
            &cache,
            Kind::Digest,
            &input,
            &before,
            DIGEST,
            before.ctime() + 100,
        );
        assert_eq!(lookup(&cache, &before), None);
        assert_eq!(lookup(&cache, &fs::metadata(&input).unwrap()), None);
    }
}
