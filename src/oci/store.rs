//! The content-addressed blob store: `<cache>/oci/blobs/sha256/<hex>`, shared by every
//! cluster built on this machine. A blob enters only through [`BlobStore::put_reader`], which
//! hashes it while it is written to a temporary file and renames it into place only when the
//! digest matches; readers re-verify on every use ([`BlobStore::open_verified`]).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{digest_hex, Error, Result, BUF_SIZE};

#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// The store under `cache_dir` (created when missing).
    pub fn new(cache_dir: &Path) -> Result<BlobStore> {
        let root = cache_dir.join("oci");
        let s = BlobStore {
            blobs: root.join("blobs").join("sha256"),
            tmp: root.join("tmp"),
        };
        for d in [&s.blobs, &s.tmp] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io("cannot create the image cache", d, e))?;
        }
        Ok(s)
    }

    /// Where the blob `digest` (`sha256:<hex>`) is kept (it may not be there).
    pub fn path(&self, digest: &str) -> PathBuf {
        self.blobs
            .join(digest_hex(digest).unwrap_or("invalid-digest"))
    }

    /// True when the store has a file of `size` bytes for `digest` (its content is verified
    /// when it is used).
    pub fn has(&self, digest: &str, size: u64) -> bool {
        digest_hex(digest).is_some()
            && std::fs::metadata(self.path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Copies `r` into the store as `digest`, reading at most `size` bytes and hashing on the
    /// way; a blob of another length or digest is deleted and refused.
    pub fn put_reader(
        &self,
        image: &str,
        digest: &str,
        size: u64,
        mut r: impl Read,
    ) -> Result<PathBuf> {
        let want = digest_hex(digest).ok_or_else(|| Error::BadManifest {
            image: image.to_string(),
            what: "a descriptor".into(),
            reason: format!("digest {digest:?} is not sha256:<64 lowercase hex>"),
        })?;
        // A layer can be hundreds of MB, and nothing sweeps this directory: listed for the
        // interrupt handler while it is written ([`crate::output::ListedTemp`]).
        let (made, listed) = crate::output::ListedTemp::create(|| {
            let t = tempfile::Builder::new()
                .prefix(".blob.")
                .tempfile_in(&self.tmp)?;
            let path = t.path().to_path_buf();
            Ok((t, path))
        })
        .map_err(|e| Error::io("cannot create a file in", &self.tmp, e))?;
        // Declared in this order so that `tmp` (removing the file on an error) drops first.
        let _listed = listed;
        let mut tmp = made;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF_SIZE];
        let mut done = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("cannot read blob", Path::new(digest), e)),
            };
            done += n as u64;
            if done > size {
                return Err(Error::TooLarge {
                    image: image.to_string(),
                    what: format!("blob {digest}"),
                    limit: size,
                });
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != want || done != size {
            return Err(Error::BlobMismatch {
                image: image.to_string(),
                digest: digest.to_string(),
                actual: format!("sha256:{actual} ({done} bytes, {size} expected)"),
            });
        }
        let path = self.path(digest);
        tmp.persist(&path)
            .map_err(|e| Error::io("cannot move the blob into the cache", &path, e.error))?;
        Ok(path)
    }

    /// The blob `digest`, read whole (at most `limit` bytes) and verified.
    pub fn read_small(&self, image: &str, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.path(digest);
        let f = File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
        let mut bytes = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("cannot read", &path, e))?;
        if bytes.len() as u64 > limit {
            return Err(Error::TooLarge {
                image: image.to_string(),
                what: format!("blob {digest}"),
                limit,
            });
        }
        let actual = super::manifest::digest_of(&bytes);
        if actual != digest {
            return Err(Error::BlobMismatch {
                image: image.to_string(),
                digest: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// A reader over the blob that fails at its end unless the bytes hash to `digest`.
    pub fn open_verified(&self, image: &str, digest: &str) -> Result<VerifiedBlob> {
        let path = self.path(digest);
        let file = File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
        Ok(VerifiedBlob {
            file,
            hasher: Sha256::new(),
            want: digest.to_string(),
            image: image.to_string(),
        })
    }
}

/// See [`BlobStore::open_verified`].
pub struct VerifiedBlob {
    file: File,
    hasher: Sha256,
    want: String,
    image: String,
}

impl Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 {
            let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
            if actual != self.want {
                return Err(std::io::Error::other(format!(
                    "cached blob {} of {} has SHA-256 {actual}: the cache is corrupt, run `piforge fetch` again",
                    self.want, self.image
                )));
            }
        } else {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}
