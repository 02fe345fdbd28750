//! Downloading artifacts into a content-addressed cache, verified against the lock or,
//! on first fetch, against the upstream checksum file.
//!
//! Cache layout under `cache_dir`:
//! - `artifacts/sha256/<hex>`: verified artifacts, named by their SHA-256;
//! - `artifacts/partial/<url hash>-<file name>.part`: downloads in progress, resumed with
//!   an HTTP `Range` request (by a retry, or by the next run).

use super::error::DigestSource;
use super::{
    is_sha256_hex, parse_checksum, sha256_file, ArtifactSpec, Error, Lock, LockEntry, Release,
    Result, BUF_SIZE,
};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::progress::{Progress, Task};

/// Where download progress goes: [`Task::Download`] with the artifact's file name, begun for
/// every attempt, advanced after every buffer, finished once the file is verified and in the
/// cache; never called for a cache hit.
pub type ProgressFn<'a> = &'a dyn Progress;

/// How [`fetch`] works. Build with [`FetchOptions::new`] and set the public fields.
#[derive(Clone)]
pub struct FetchOptions<'a> {
    /// Root of the cache (`<cache_dir>/artifacts/...`).
    pub cache_dir: PathBuf,
    /// The lock file (`piforge.lock` beside the spec); missing means empty.
    pub lock_path: PathBuf,
    /// A base URL serving every upstream under `<mirror>/<upstream host>/<upstream path>`:
    /// with `http://mirror.example:8080/pi`, `https://dl.k8s.io/release/v1.34.2/bin/linux/arm64/kubeadm`
    /// is fetched from `http://mirror.example:8080/pi/dl.k8s.io/release/v1.34.2/bin/linux/arm64/kubeadm`.
    /// Checksum files are fetched the same way. The lock records the upstream URLs.
    pub mirror: Option<String>,
    /// Re-verify against upstream checksum files and replace lock entries that differ
    /// (`piforge fetch --update`). Without it, an existing lock entry is the only truth.
    pub update: bool,
    /// Accept artifacts with no upstream checksum file (the flannel manifest) and no
    /// lock entry: their digest as downloaded is recorded in the lock.
    pub allow_unpinned: bool,
    pub progress: Option<ProgressFn<'a>>,
    /// Connect timeout, and the longest wait for any read or write on the connection.
    pub timeout: Duration,
    /// Further attempts after a failed one (connection refused or dropped, HTTP 5xx);
    /// a retry resumes the partial download.
    pub retries: u32,
    /// Pause before retry `n` is `n * retry_delay`.
    pub retry_delay: Duration,
    /// Use the proxy named by `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`. `NO_PROXY` is not
    /// read (ureq 2 ignores it): turn this off for a mirror the proxy cannot reach.
    pub proxy_from_env: bool,
}

impl<'a> FetchOptions<'a> {
    /// Defaults: no mirror, no update, no unpinned artifacts, no progress, 30 s timeout,
    /// 3 retries 1 s apart (growing), the proxy from the environment.
    pub fn new(cache_dir: impl Into<PathBuf>, lock_path: impl Into<PathBuf>) -> Self {
        FetchOptions {
            cache_dir: cache_dir.into(),
            lock_path: lock_path.into(),
            mirror: None,
            update: false,
            allow_unpinned: false,
            progress: None,
            timeout: Duration::from_secs(30),
            retries: 3,
            retry_delay: Duration::from_secs(1),
            proxy_from_env: true,
        }
    }
}

/// What an artifact's digest was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The existing lock entry.
    Lock,
    /// The upstream checksum file; the digest is now in the lock.
    Upstream,
    /// Nothing: no upstream checksum and no lock entry, accepted with `allow_unpinned`;
    /// its digest is now in the lock.
    Unpinned,
}

/// A verified artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedArtifact {
    pub spec: ArtifactSpec,
    /// The verified file (in the cache for [`fetch`], in the directory for [`super::from_dir`]).
    pub path: PathBuf,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    pub size: u64,
    pub pin: Pin,
    /// With `update`: the digest the lock had before, when it changed.
    pub replaced: Option<String>,
}

impl FetchedArtifact {
    /// A line for the caller to print on stderr, when something deserves attention:
    /// an unpinned artifact recorded on trust, or a lock entry changed by `update`.
    pub fn warning(&self) -> Option<String> {
        match (&self.pin, &self.replaced) {
            (Pin::Unpinned, _) => Some(format!(
                "unpinned, recorded: {} ({}) was verified against no published digest; its SHA-256 {} is now in the lock",
                self.spec.name,
                self.path.display(),
                self.sha256
            )),
            (_, Some(old)) => Some(format!(
                "{} ({}): lock entry changed from SHA-256 {} to {}",
                self.spec.name, self.spec.url, old, self.sha256
            )),
            _ => None,
        }
    }
}

/// `url` as served by `mirror` (see [`FetchOptions::mirror`]).
pub fn mirror_url(mirror: &str, url: &str) -> Result<String> {
    let base = mirror.trim_end_matches('/');
    let ok_base = ["http://", "https://"].iter().any(|s| {
        base.strip_prefix(s)
            .is_some_and(|h| !h.is_empty() && !h.starts_with('/'))
    }) && !base.contains(['?', '#', ' ']);
    if !ok_base {
        return Err(Error::BadMirror(mirror.to_string()));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| Error::BadMirror(format!("{mirror} (cannot map {url})")))?;
    Ok(format!("{base}/{rest}"))
}

/// Fetches every artifact of `release`; see [`fetch_artifacts`].
pub fn fetch(release: &Release, opts: &FetchOptions) -> Result<Vec<FetchedArtifact>> {
    fetch_artifacts(&release.artifacts(), opts)
}

/// Fetches `specs` into the cache, verified, and returns them in the same order.
///
/// For each artifact: with a lock entry (and no `update`), its digest is expected and the
/// upstream checksum file is not read; otherwise the digest comes from the upstream
/// checksum file (or, with `allow_unpinned` and none upstream, from the download itself)
/// and is recorded. A cached file with the expected digest is used without any request.
/// A download with another digest is deleted and the error names both digests. The lock
/// is written (only if it changed) when every artifact succeeded.
pub fn fetch_artifacts(
    specs: &[ArtifactSpec],
    opts: &FetchOptions,
) -> Result<Vec<FetchedArtifact>> {
    if let Some(m) = &opts.mirror {
        mirror_url(m, "https://example.invalid/")?;
    }
    let original = Lock::load(&opts.lock_path)?;
    let mut lock = original.clone();
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(opts.timeout)
        .timeout_read(opts.timeout)
        .timeout_write(opts.timeout)
        .user_agent(concat!("piforge/", env!("CARGO_PKG_VERSION")))
        .try_proxy_from_env(opts.proxy_from_env)
        .build();
    let cache = Cache::new(&opts.cache_dir)?;
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        out.push(fetch_one(&agent, &cache, &mut lock, spec, opts)?);
    }
    if lock != original {
        lock.save(&opts.lock_path)?;
    }
    Ok(out)
}

/// Where the cache keeps the verified file with digest `sha256` (it may not be there).
pub fn cached_object(cache_dir: &Path, sha256: &str) -> PathBuf {
    cache_dir.join("artifacts").join("sha256").join(sha256)
}

struct Cache {
    objects: PathBuf,
    partial: PathBuf,
}

impl Cache {
    fn new(cache_dir: &Path) -> Result<Cache> {
        let root = cache_dir.join("artifacts");
        let c = Cache {
            objects: root.join("sha256"),
            partial: root.join("partial"),
        };
        for d in [&c.objects, &c.partial] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io("cannot create the cache directory", d, e))?;
        }
        Ok(c)
    }

    fn object(&self, sha256: &str) -> PathBuf {
        self.objects.join(sha256)
    }

    fn part(&self, spec: &ArtifactSpec) -> PathBuf {
        let h = hex::encode(Sha256::digest(spec.url.as_bytes()));
        self.partial
            .join(format!("{}-{}.part", &h[..16], spec.file_name))
    }

    /// The cached object with this digest, re-hashed; a corrupt one is removed.
    fn lookup(&self, sha256: &str) -> Result<Option<(PathBuf, u64)>> {
        let path = self.object(sha256);
        if !path.is_file() {
            return Ok(None);
        }
        let (actual, size) = sha256_file(&path)?;
        if actual == sha256 {
            return Ok(Some((path, size)));
        }
        std::fs::remove_file(&path)
            .map_err(|e| Error::io("cannot remove the corrupt cache file", &path, e))?;
        Ok(None)
    }
}

fn fetch_one(
    agent: &ureq::Agent,
    cache: &Cache,
    lock: &mut Lock,
    spec: &ArtifactSpec,
    opts: &FetchOptions,
) -> Result<FetchedArtifact> {
    let locked = lock.get(&spec.url).map(|e| e.sha256.clone());
    let source_url = |url: &str| match &opts.mirror {
        Some(m) => mirror_url(m, url),
        None => Ok(url.to_string()),
    };

    // Which digest the artifact must have, and on whose word.
    let (expected, pin): (Option<(String, DigestSource)>, Pin) =
        match (&locked, &spec.checksum_url) {
            (Some(d), _) if !opts.update => (
                Some((d.clone(), DigestSource::Lock(opts.lock_path.clone()))),
                Pin::Lock,
            ),
            (_, Some(checksum_url)) => {
                let from = source_url(checksum_url)?;
                let text = get_small(agent, &from, opts)?;
                let digest = parse_checksum(&text, spec.checksum_kind, &spec.file_name)
                    .ok_or_else(|| Error::NoChecksumInFile {
                        url: from.clone(),
                        file: spec.file_name.clone(),
                    })?;
                (Some((digest, DigestSource::Upstream(from))), Pin::Upstream)
            }
            // `update` cannot re-verify an artifact upstream publishes no checksum for: unless
            // told to re-record it, keep trusting the lock.
            (Some(d), None) if !opts.allow_unpinned => (
                Some((d.clone(), DigestSource::Lock(opts.lock_path.clone()))),
                Pin::Lock,
            ),
            (_, None) if opts.allow_unpinned => (None, Pin::Unpinned),
            (_, None) => {
                return Err(Error::NoUpstreamChecksum {
                    name: spec.name.clone(),
                    url: spec.url.clone(),
                    lock: opts.lock_path.clone(),
                })
            }
        };

    let cached = match &expected {
        Some((d, _)) => cache.lookup(d)?,
        None => None,
    };
    let (path, sha256, size) = match cached {
        Some((path, size)) => (
            path,
            expected
                .as_ref()
                .map(|(d, _)| d.clone())
                .unwrap_or_default(),
            size,
        ),
        None => {
            let part = cache.part(spec);
            let url = source_url(&spec.url)?;
            download(agent, &url, &part, spec, opts)?;
            let (actual, size) = sha256_file(&part)?;
            if let Some((want, from)) = &expected {
                if *want != actual {
                    // Best effort: the mismatch is the error to report; a part left
                    // behind would only be resumed and re-verified by the next run.
                    let _ = std::fs::remove_file(&part);
                    return Err(Error::DigestMismatch {
                        file: spec.file_name.clone(),
                        url,
                        expected: want.clone(),
                        actual,
                        expected_from: from.clone(),
                    });
                }
            }
            let path = cache.object(&actual);
            std::fs::rename(&part, &path)
                .map_err(|e| Error::io("cannot move the download into the cache", &path, e))?;
            if let Some(p) = opts.progress {
                p.finish(Task::Download(&spec.file_name));
            }
            (path, actual, size)
        }
    };
    debug_assert!(is_sha256_hex(&sha256));

    let replaced = match pin {
        Pin::Lock => None,
        Pin::Upstream | Pin::Unpinned => {
            let entry = LockEntry {
                name: spec.name.clone(),
                file: spec.file_name.clone(),
                url: spec.url.clone(),
                sha256: sha256.clone(),
                size,
            };
            lock.insert(entry)
                .map(|old| old.sha256)
                .filter(|old| *old != sha256)
        }
    };
    Ok(FetchedArtifact {
        spec: spec.clone(),
        path,
        sha256,
        size,
        pin,
        replaced,
    })
}

/// One attempt's failure: worth another try (its reason), or final.
pub(crate) enum Attempt<E = Error> {
    Retry(String),
    Fatal(E),
}

/// Runs `once` up to `1 + retries` times, pausing `delay` times the attempt number between
/// attempts; after the last retryable failure, the error is `exhausted(attempts, reason)`.
/// The one retry loop of the HTTP clients (release files, apt, container images).
pub(crate) fn retrying<T, E>(
    retries: u32,
    delay: std::time::Duration,
    mut once: impl FnMut() -> std::result::Result<T, Attempt<E>>,
    exhausted: impl FnOnce(u32, String) -> E,
) -> std::result::Result<T, E> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match once() {
            Ok(v) => return Ok(v),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(reason)) => {
                if attempt > retries {
                    return Err(exhausted(attempt, reason));
                }
                std::thread::sleep(delay.saturating_mul(attempt));
            }
        }
    }
}

/// Runs `once` up to `1 + opts.retries` times, pausing between attempts.
fn with_retries<T>(
    url: &str,
    opts: &FetchOptions,
    once: impl FnMut() -> Result<T, Attempt>,
) -> Result<T> {
    retrying(opts.retries, opts.retry_delay, once, |attempts, reason| {
        Error::Transport {
            url: url.to_string(),
            attempts,
            reason,
        }
    })
}

/// Sends the request; sorts failures into fatal (4xx) and worth retrying.
fn call(url: &str, req: ureq::Request) -> Result<ureq::Response, Attempt> {
    match req.call() {
        Ok(resp) => Ok(resp),
        Err(ureq::Error::Status(status, _)) if status >= 500 || status == 408 || status == 429 => {
            Err(Attempt::Retry(format!("HTTP status {status}")))
        }
        Err(ureq::Error::Status(status, _)) => Err(Attempt::Fatal(Error::HttpStatus {
            url: url.to_string(),
            status,
        })),
        Err(ureq::Error::Transport(t)) => Err(Attempt::Retry(t.to_string())),
    }
}

/// A small text file (a checksum file), at most 1 MiB.
fn get_small(agent: &ureq::Agent, url: &str, opts: &FetchOptions) -> Result<String> {
    const LIMIT: u64 = 1 << 20;
    with_retries(url, opts, || {
        let resp = call(url, agent.get(url))?;
        if resp.status() != 200 {
            return Err(Attempt::Fatal(Error::HttpStatus {
                url: url.to_string(),
                status: resp.status(),
            }));
        }
        let mut body = Vec::new();
        resp.into_reader()
            .take(LIMIT + 1)
            .read_to_end(&mut body)
            .map_err(|e| Attempt::Retry(format!("reading the body: {e}")))?;
        if body.len() as u64 > LIMIT {
            return Err(Attempt::Fatal(Error::Transport {
                url: url.to_string(),
                attempts: 1,
                reason: "a checksum file larger than 1 MiB".into(),
            }));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
}

/// `bytes START-END/TOTAL` -> (START, TOTAL if given).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// Downloads `url` into `part`, resuming what `part` already holds.
fn download(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    spec: &ArtifactSpec,
    opts: &FetchOptions,
) -> Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    with_retries(url, opts, || {
        let have = match std::fs::metadata(part) {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        let mut req = agent.get(url);
        if have > 0 {
            req = req.set("Range", &format!("bytes={have}-"));
        }
        let resp = match call(url, req) {
            Err(Attempt::Fatal(Error::HttpStatus { status: 416, .. })) if have > 0 => {
                // Our partial file is not a prefix the server recognizes: start over.
                remove_part(part)?;
                return Err(Attempt::Retry(
                    "the server refused to resume (HTTP 416)".into(),
                ));
            }
            r => r?,
        };
        let io_err = |context, e| Attempt::Fatal(Error::io(context, part, e));
        let (mut file, mut done, total) = match resp.status() {
            206 if have > 0 => {
                let range = resp.header("Content-Range").and_then(parse_content_range);
                match range {
                    Some((start, total)) if start == have => {
                        let f = OpenOptions::new()
                            .append(true)
                            .open(part)
                            .map_err(|e| io_err("cannot open", e))?;
                        (f, have, total)
                    }
                    _ => {
                        remove_part(part)?;
                        return Err(Attempt::Retry(format!(
                            "the server answered the range from byte {have} with Content-Range {:?}",
                            resp.header("Content-Range").unwrap_or("")
                        )));
                    }
                }
            }
            200 => {
                // A full body (the server ignored our Range, or we sent none): start over.
                let total = resp
                    .header("Content-Length")
                    .and_then(|v| v.trim().parse().ok());
                let f = File::create(part).map_err(|e| io_err("cannot create", e))?;
                (f, 0, total)
            }
            status => {
                return Err(Attempt::Fatal(Error::HttpStatus {
                    url: url.to_string(),
                    status,
                }))
            }
        };
        if let Some(p) = opts.progress {
            p.begin(Task::Download(&spec.file_name), total);
            p.advance(Task::Download(&spec.file_name), done);
        }
        let mut body = resp.into_reader();
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    file.flush().map_err(|e| io_err("cannot write", e))?;
                    return Err(Attempt::Retry(format!(
                        "the connection failed after {done} bytes: {e}"
                    )));
                }
            };
            file.write_all(&buf[..n])
                .map_err(|e| io_err("cannot write", e))?;
            done += n as u64;
            if let Some(p) = opts.progress {
                p.advance(Task::Download(&spec.file_name), done);
            }
        }
        file.sync_all().map_err(|e| io_err("cannot write", e))?;
        match total {
            Some(t) if t != done => Err(Attempt::Retry(format!(
                "the body ended after {done} of {t} bytes"
            ))),
            _ => Ok(()),
        }
    })
}

fn remove_part(part: &Path) -> Result<(), Attempt> {
    match std::fs::remove_file(part) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Attempt::Fatal(Error::io(
            "cannot remove the partial download",
            part,
            e,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_puts_the_upstream_host_in_the_path() {
        let u = "https://dl.k8s.io/release/v1.34.2/bin/linux/arm64/kubeadm";
        for m in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            assert_eq!(
                mirror_url(m, u).unwrap(),
                "http://127.0.0.1:8080/dl.k8s.io/release/v1.34.2/bin/linux/arm64/kubeadm"
            );
        }
        assert_eq!(
            mirror_url("https://m.example/pi/", "https://github.com/a/b").unwrap(),
            "https://m.example/pi/github.com/a/b"
        );
        for bad in [
            "ftp://x",
            "127.0.0.1:8080",
            "http://",
            "http:///x",
            "http://x?y=1",
        ] {
            assert!(
                matches!(mirror_url(bad, u), Err(Error::BadMirror(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
