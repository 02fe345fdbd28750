//! The secrets directory on the build host: private modes, whole-file writes, one writer at a time.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::PkiError;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Refuses a path that anyone but its owner may read, write or enter.
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), PkiError> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PkiError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700, or checks that an existing one is private.
pub(super) fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => check_private(dir, &meta),
        Ok(_) => Err(PkiError::NotADirectory(dir.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
            // The umask may have taken bits away; set exactly 0700.
            fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(io_err(dir))
        }
        Err(e) => Err(PkiError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Holds an exclusive `flock` on `dir/.lock` until dropped, so two builds never both generate.
pub(super) struct DirLock(#[allow(dead_code)] File);

pub(super) fn lock(dir: &Path) -> Result<DirLock, PkiError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a descriptor we own; it blocks until the other holder releases it.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(PkiError::Io {
            path,
            source: io::Error::last_os_error(),
        });
    }
    Ok(DirLock(file))
}

/// Reads a secrets file: `None` if it does not exist, an error if others may read it.
pub(super) fn read_private(path: &Path) -> Result<Option<String>, PkiError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PkiError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    if !meta.is_file() {
        return Err(PkiError::Malformed {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    check_private(path, &meta)?;
    let bytes = fs::read(path).map_err(io_err(path))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| PkiError::Malformed {
            path: path.to_path_buf(),
            reason: "not UTF-8 text".into(),
        })
}

/// Writes `contents` to `path` with mode 0600: a temporary file in the same directory (made
/// 0600 with `O_EXCL` under an unpredictable name, removed on error and on Ctrl-C; see
/// [`crate::output::AtomicFile`]), synced, then renamed into place, so a crash never leaves
/// half a key. A kill -9 leaves the temporary file: [`remove_stale_temps`] removes it on the
/// next run (issue 12 item 9).
pub(super) fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    let mut f = crate::output::AtomicFile::create_with_mode(path, 0o600).map_err(io_err(path))?;
    f.file().write_all(contents).map_err(io_err(path))?;
    f.commit().map_err(io_err(path))?;
    Ok(())
}

/// Removes the temporary files of writers that are gone (killed before they could clean up)
/// from `dir` and its subdirectories (`etcd/`, `hosts/NODE/`).
pub(super) fn remove_stale_temps(dir: &Path) {
    crate::output::remove_stale_temps(dir);
    for sub in [super::ETCD_DIR, super::host_keys::HOSTS_DIR] {
        let d = dir.join(sub);
        crate::output::remove_stale_temps(&d);
        if sub == super::host_keys::HOSTS_DIR {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    crate::output::remove_stale_temps(&e.path());
                }
            }
        }
    }
}

const PAIR_PREFIX: &str = ".pair.";
const PAIR_READY: &str = ".ready";

/// Writes two files that only make sense together (a key and its certificate, a private and a
/// public key) so that a crash or kill at any point leaves both or neither (issue 12 item 14:
/// a kill between `ca.key` and `ca.crt` left the key alone, and every later build refused the
/// half pair). Both are written (0600, synced) into a fresh 0700 directory beside them, which
/// is renamed to its `.ready` name when whole: that rename is the commit point. The files are
/// then moved into place and the directory removed. [`finish_pairs`], which runs under the
/// secrets lock before any pair is read, completes a pair that was committed but not moved and
/// removes one that never was. Both paths must be in one directory.
pub(super) fn write_private_pair(a: (&Path, &[u8]), b: (&Path, &[u8])) -> Result<(), PkiError> {
    let dir = match a.0.parent() {
        Some(d) if b.0.parent() == Some(d) => d,
        _ => {
            return Err(PkiError::Io {
                path: a.0.to_path_buf(),
                source: io::Error::other("a key pair must be in one directory"),
            })
        }
    };
    let staging = tempfile::Builder::new()
        .prefix(PAIR_PREFIX)
        .tempdir_in(dir)
        .map_err(io_err(dir))?;
    for (path, contents) in [a, b] {
        let name = path.file_name().ok_or_else(|| PkiError::Io {
            path: path.to_path_buf(),
            source: io::Error::other("no file name"),
        })?;
        let p = staging.path().join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_err(path))?;
        f.write_all(contents)
            .and_then(|_| f.sync_all())
            .map_err(io_err(path))?;
    }
    let mut ready = staging.path().as_os_str().to_owned();
    ready.push(PAIR_READY);
    let ready = std::path::PathBuf::from(ready);
    fs::rename(staging.path(), &ready).map_err(io_err(a.0))?;
    // The staging name is gone; nothing for its guard to remove.
    let _ = staging.keep();
    move_pair_into_place(dir, &ready)
}

/// Moves the files of a committed pair directory into `dir`, then removes it.
fn move_pair_into_place(dir: &Path, ready: &Path) -> Result<(), PkiError> {
    for e in fs::read_dir(ready).map_err(io_err(ready))? {
        let e = e.map_err(io_err(ready))?;
        fs::rename(e.path(), dir.join(e.file_name())).map_err(io_err(ready))?;
    }
    fs::remove_dir(ready).map_err(io_err(ready))
}

/// Completes the pairs [`write_private_pair`] committed in `dir` but did not move into place,
/// and removes those it never committed. Under the secrets lock only.
pub(super) fn finish_pairs(dir: &Path) -> Result<(), PkiError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PAIR_PREFIX) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if name.ends_with(PAIR_READY) {
            move_pair_into_place(dir, &e.path())?;
        } else {
            fs::remove_dir_all(e.path()).map_err(io_err(&e.path()))?;
        }
    }
    Ok(())
}
