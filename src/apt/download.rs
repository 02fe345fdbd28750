//! Downloads of repository files: a bounded InRelease into memory, and index files and
//! `.deb`s into piforge's content-addressed cache (`<cache>/artifacts/sha256/<hex>`, the one
//! the release artifacts use), checked against the size and SHA-256 a signed index gives.
//! A server that sends more bytes than announced is cut off at the announced size plus one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::artifacts::{cached_object, mirror_url, sha256_file};

/// The largest InRelease read (Debian's are about 200 KiB).
pub const INRELEASE_MAX: u64 = 16 << 20;

pub struct Downloader {
    agent: ureq::Agent,
    mirror: Option<String>,
    cache_dir: PathBuf,
}

impl Downloader {
    pub fn new(cache_dir: &Path, mirror: Option<String>) -> Result<Downloader, String> {
        if let Some(m) = &mirror {
            mirror_url(m, "https://example.invalid/").map_err(|e| e.to_string())?;
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("piforge/", env!("CARGO_PKG_VERSION")))
            .try_proxy_from_env(true)
            .build();
        Ok(Downloader {
            agent,
            mirror,
            cache_dir: cache_dir.to_path_buf(),
        })
    }

    fn source_url(&self, url: &str) -> Result<String, String> {
        match &self.mirror {
            Some(m) => mirror_url(m, url).map_err(|e| e.to_string()),
            None => Ok(url.to_string()),
        }
    }

    fn get(&self, url: &str) -> Result<ureq::Response, String> {
        let from = self.source_url(url)?;
        let mut last = String::new();
        for attempt in 0..3u64 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 * attempt));
            }
            match self.agent.get(&from).call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(s, _)) if s < 500 => {
                    return Err(format!("GET {from} failed with HTTP status {s}"))
                }
                Err(e) => last = format!("GET {from} failed: {e}"),
            }
        }
        Err(last)
    }

    /// A small file, at most `max` bytes.
    pub fn get_small(&self, url: &str, max: u64) -> Result<Vec<u8>, String> {
        let resp = self.get(url)?;
        let mut body = Vec::new();
        resp.into_reader()
            .take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("GET {url}: the body failed: {e}"))?;
        if body.len() as u64 > max {
            return Err(format!("{url} is larger than {} MiB", max >> 20));
        }
        Ok(body)
    }

    /// The cached file with this digest, re-hashed (a corrupt one is removed).
    pub fn cached(&self, sha256: &str) -> Result<Option<PathBuf>, String> {
        let path = cached_object(&self.cache_dir, sha256);
        if !path.is_file() {
            return Ok(None);
        }
        let (actual, _) = sha256_file(&path).map_err(|e| e.to_string())?;
        if actual == sha256 {
            return Ok(Some(path));
        }
        std::fs::remove_file(&path).map_err(|e| {
            format!(
                "cannot remove the corrupt cache file {}: {e}",
                path.display()
            )
        })?;
        Ok(None)
    }

    /// `url` in the cache under `sha256`: reused when there, else downloaded and checked
    /// against `size` and `sha256` (a file that differs is deleted; the error names both
    /// digests and `vouched_by`, the index that gave them).
    pub fn fetch(
        &self,
        url: &str,
        sha256: &str,
        size: u64,
        vouched_by: &str,
    ) -> Result<PathBuf, String> {
        if let Some(p) = self.cached(sha256)? {
            return Ok(p);
        }
        let objects = cached_object(&self.cache_dir, sha256);
        let dir = objects.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the cache directory {}: {e}", dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".apt-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
        let resp = self.get(url)?;
        let mut reader = resp.into_reader().take(size + 1);
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; crate::artifacts::BUF_SIZE];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(format!(
                        "GET {url}: the connection failed after {got} bytes: {e}"
                    ))
                }
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
            got += n as u64;
        }
        if got != size {
            return Err(format!(
                "{url} has {}{got} bytes, but {vouched_by} says {size}; the download was deleted",
                if got > size { "more than " } else { "" },
                got = got.min(size)
            ));
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            return Err(format!(
                "{url} has SHA-256 {actual}, but {vouched_by} says {sha256}; the download was deleted"
            ));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
        tmp.persist(&objects).map_err(|e| {
            format!(
                "cannot move the download into {}: {}",
                objects.display(),
                e.error
            )
        })?;
        Ok(objects)
    }
}
