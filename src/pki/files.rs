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

/// Writes `contents` to `path` with mode 0600: a temporary file in the same directory, synced,
/// then renamed into place, so a crash never leaves half a key.
pub(super) fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A leftover temporary file from a crash keeps its old mode; make sure.
        f.set_permissions(Permissions::from_mode(0o600))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}
