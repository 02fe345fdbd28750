//! Offline builds: the artifacts are files in a directory, under their upstream names.

use super::{
    sha256_file, ArtifactSpec, Error, FetchedArtifact, Lock, LockEntry, Pin, Release, Result,
};
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Takes every artifact of `release` from `dir`; see [`from_dir_artifacts`].
pub fn from_dir(
    release: &Release,
    dir: &Path,
    lock_path: &Path,
    allow_unpinned: bool,
) -> Result<Vec<FetchedArtifact>> {
    from_dir_artifacts(&release.artifacts(), dir, lock_path, allow_unpinned)
}

/// Takes `specs` from `dir` (`dir/<upstream file name>`), each checked against the lock.
///
/// A file without a lock entry is an error that says to run `piforge fetch` or pass
/// `--allow-unpinned`; with `allow_unpinned` its digest is recorded in the lock and the
/// result says so ([`Pin::Unpinned`], [`FetchedArtifact::warning`]). A file whose digest
/// differs from its lock entry is an error naming both digests (the file is left alone:
/// it is the user's). The lock is written only if entries were added.
pub fn from_dir_artifacts(
    specs: &[ArtifactSpec],
    dir: &Path,
    lock_path: &Path,
    allow_unpinned: bool,
) -> Result<Vec<FetchedArtifact>> {
    let mut lock = Lock::load(lock_path)?;
    let (out, added) = check_dir(specs, dir, &mut lock, lock_path, allow_unpinned)?;
    if added {
        lock.save(lock_path)?;
    }
    Ok(out)
}

/// Checks that `dir` holds every artifact of `specs`, each matching its lock entry (or, with
/// `allow_unpinned`, without one), and writes nothing: what [`from_dir_artifacts`] would
/// take, found before a build has any side effect.
pub fn check_dir_artifacts(
    specs: &[ArtifactSpec],
    dir: &Path,
    lock_path: &Path,
    allow_unpinned: bool,
) -> Result<()> {
    let mut lock = Lock::load(lock_path)?;
    check_dir(specs, dir, &mut lock, lock_path, allow_unpinned).map(|_| ())
}

/// The artifacts of `specs` in `dir`, checked against `lock`; unpinned ones (with
/// `allow_unpinned`) are added to `lock`, and the flag says whether any was.
fn check_dir(
    specs: &[ArtifactSpec],
    dir: &Path,
    lock: &mut Lock,
    lock_path: &Path,
    allow_unpinned: bool,
) -> Result<(Vec<FetchedArtifact>, bool)> {
    let mut added = false;
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let path = dir.join(&spec.file_name);
        // A link is not followed: it could make any host file (a 0600 key, say) an artifact
        // installed 0755 in the image, as overlays refuse links to outside files too.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::LinkedArtifact { path });
        }
        if !path.is_file() {
            return Err(Error::MissingFile {
                name: spec.name.clone(),
                dir: dir.to_path_buf(),
                file: spec.file_name.clone(),
                url: spec.url.clone(),
            });
        }
        let (sha256, size) = sha256_file(&path)?;
        let pin = match lock.get(&spec.url) {
            Some(entry) if entry.sha256 == sha256 => Pin::Lock,
            Some(entry) => {
                return Err(Error::LocalMismatch {
                    path,
                    url: spec.url.clone(),
                    expected: entry.sha256.clone(),
                    actual: sha256,
                    lock: lock_path.to_path_buf(),
                })
            }
            None if allow_unpinned => {
                lock.insert(LockEntry {
                    name: spec.name.clone(),
                    file: spec.file_name.clone(),
                    url: spec.url.clone(),
                    sha256: sha256.clone(),
                    size,
                });
                added = true;
                Pin::Unpinned
            }
            None => {
                return Err(Error::NotInLock {
                    name: spec.name.clone(),
                    path,
                    lock: lock_path.to_path_buf(),
                })
            }
        };
        out.push(FetchedArtifact {
            spec: spec.clone(),
            path,
            sha256,
            size,
            pin,
            replaced: None,
        });
    }
    Ok((out, added))
}

/// Copies the verified files of an offline directory into the content-addressed cache
/// (`<cache>/artifacts/sha256/<hex>`, where [`super::fetch`] looks first), so that a later
/// build finds them through the lock with no directory and no network. Each copy is hashed
/// as it is written and renamed into place only when it has the digest that was verified (a
/// file changed in between is refused); objects already cached are left alone.
pub fn store_in_cache(arts: &[FetchedArtifact], cache_dir: &Path) -> Result<()> {
    for a in arts {
        let object = super::cached_object(cache_dir, &a.sha256);
        if object.is_file() {
            continue;
        }
        let objects = object.parent().unwrap_or(cache_dir);
        std::fs::create_dir_all(objects)
            .map_err(|e| Error::io("cannot create the cache directory", objects, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(objects)
            .map_err(|e| Error::io("cannot write in the cache directory", objects, e))?;
        let mut src =
            std::fs::File::open(&a.path).map_err(|e| Error::io("cannot open", &a.path, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; super::BUF_SIZE];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("cannot read", &a.path, e)),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != a.sha256 {
            return Err(Error::Io {
                context: "changed while it was copied into the cache",
                path: a.path.clone(),
                source: std::io::Error::other(format!("SHA-256 {actual} instead of {}", a.sha256)),
            });
        }
        tmp.persist(&object)
            .map_err(|e| Error::io("cannot move into the cache", &object, e.error))?;
    }
    Ok(())
}
