//! Anonymous pulls over the OCI distribution API, with `ureq`.
//!
//! registry.k8s.io serves anonymous pulls directly (blobs by redirect); ghcr.io answers the
//! first request with `401` and `WWW-Authenticate: Bearer realm="https://ghcr.io/token",
//! service="ghcr.io",scope="repository:<name>:pull"`: a GET of the realm with `service` and
//! `scope` returns `{"token": ...}` (or `access_token`), sent back as `Authorization: Bearer`
//! (distribution spec, "Token Authentication"). A token is kept per repository for the run.
//!
//! With a mirror, every upstream URL `https://<host>/<path>` is fetched from
//! `<mirror>/<host>/<path>`, as for the other artifacts; a realm on `https://` is mapped the
//! same way, and a plain-http realm is accepted only on this machine (loopback).

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use super::error::Changed;
use super::manifest::{check_config, digest_of, parse_document, pick_arm64, Document};
use super::{media, BlobStore, Descriptor, Error, ImageParts, ImageRef, Result, MAX_MANIFEST};

/// How [`Registry`] connects.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `<mirror>/<host>/<path>` for every upstream URL (see the module docs).
    pub mirror: Option<String>,
    pub timeout: Duration,
    /// Further attempts after a transport failure or HTTP 5xx/429.
    pub retries: u32,
    pub retry_delay: Duration,
    pub proxy_from_env: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            mirror: None,
            timeout: Duration::from_secs(30),
            retries: 3,
            retry_delay: Duration::from_secs(1),
            proxy_from_env: true,
        }
    }
}

/// What [`Registry::pull`] did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub parts: ImageParts,
    /// Bytes downloaded in this pull (blobs already in the store are not fetched again).
    pub downloaded: u64,
}

/// A client for anonymous pulls.
pub struct Registry {
    agent: ureq::Agent,
    opts: RegistryOptions,
    tokens: HashMap<String, String>,
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

type Attempt = crate::artifacts::Attempt<Error>;

fn is_loopback_url(url: &str) -> bool {
    let rest = match url.strip_prefix("http://") {
        Some(r) => r,
        None => return false,
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// The `key="value"` parameters of a `Bearer` challenge.
fn bearer_params(header: &str) -> Option<HashMap<String, String>> {
    let rest = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut out = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        out.insert(key.trim().to_ascii_lowercase(), value.to_string());
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Result<Registry> {
        if let Some(m) = &opts.mirror {
            crate::artifacts::mirror_url(m, "https://example.invalid/").map_err(|_| {
                Error::Transport {
                    url: m.clone(),
                    attempts: 0,
                    reason: "the mirror is not an http:// or https:// base URL".into(),
                }
            })?;
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(opts.timeout)
            .timeout_read(opts.timeout)
            .timeout_write(opts.timeout)
            .user_agent(concat!("piforge/", env!("CARGO_PKG_VERSION")))
            .try_proxy_from_env(opts.proxy_from_env)
            .build();
        Ok(Registry {
            agent,
            opts,
            tokens: HashMap::new(),
        })
    }

    /// An upstream https URL as this client fetches it (through the mirror when set).
    fn source_url(&self, url: &str) -> String {
        match &self.opts.mirror {
            Some(m) => crate::artifacts::mirror_url(m, url).unwrap_or_else(|_| url.to_string()),
            None => url.to_string(),
        }
    }

    fn with_retries<T>(&self, url: &str, once: impl FnMut() -> Result<T, Attempt>) -> Result<T> {
        crate::artifacts::retrying(
            self.opts.retries,
            self.opts.retry_delay,
            once,
            |attempts, reason| Error::Transport {
                url: url.to_string(),
                attempts,
                reason,
            },
        )
    }

    /// GET `upstream` (mapped through the mirror) for `image`, with the repository's token,
    /// fetching one on a `401` Bearer challenge and trying once more.
    fn get(
        &mut self,
        image: &ImageRef,
        upstream: &str,
        accept: Option<&str>,
    ) -> Result<ureq::Response> {
        let url = self.source_url(upstream);
        let key = format!("{}/{}", image.registry, image.repository);
        for round in 0..2 {
            let token = self.tokens.get(&key).cloned();
            let resp = self.with_retries(&url, || {
                let mut req = self.agent.get(&url);
                if let Some(a) = accept {
                    req = req.set("Accept", a);
                }
                if let Some(t) = &token {
                    req = req.set("Authorization", &format!("Bearer {t}"));
                }
                match req.call() {
                    Ok(r) => Ok(Ok(r)),
                    Err(ureq::Error::Status(401, r)) => Ok(Err(r)),
                    Err(ureq::Error::Status(s, _)) if s >= 500 || s == 429 || s == 408 => {
                        Err(Attempt::Retry(format!("HTTP status {s}")))
                    }
                    Err(ureq::Error::Status(status, _)) => Err(Attempt::Fatal(Error::HttpStatus {
                        url: url.clone(),
                        status,
                    })),
                    Err(ureq::Error::Transport(t)) => Err(Attempt::Retry(t.to_string())),
                }
            })?;
            match resp {
                Ok(r) => return Ok(r),
                Err(challenge) if round == 0 => {
                    let header = challenge
                        .header("WWW-Authenticate")
                        .unwrap_or("")
                        .to_string();
                    let token = self.token(&url, &header)?;
                    self.tokens.insert(key.clone(), token);
                }
                Err(_) => {
                    return Err(Error::HttpStatus { url, status: 401 });
                }
            }
        }
        Err(Error::HttpStatus { url, status: 401 })
    }

    /// Answers a Bearer challenge: GET realm?service=...&scope=... → the token.
    fn token(&self, url: &str, header: &str) -> Result<String> {
        let p = bearer_params(header).ok_or_else(|| Error::NoBearerChallenge {
            url: url.to_string(),
        })?;
        let realm =
            p.get("realm")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| Error::NoBearerChallenge {
                    url: url.to_string(),
                })?;
        let realm_url = if realm.starts_with("https://") {
            self.source_url(realm)
        } else if is_loopback_url(realm) {
            realm.clone()
        } else {
            return Err(Error::InsecureRealm {
                url: url.to_string(),
                realm: realm.clone(),
            });
        };
        let mut q = Vec::new();
        for k in ["service", "scope"] {
            if let Some(v) = p.get(k) {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        let sep = if realm_url.contains('?') { '&' } else { '?' };
        let full = if q.is_empty() {
            realm_url
        } else {
            format!("{realm_url}{sep}{}", q.join("&"))
        };
        let body = self.with_retries(&full, || {
            let resp = match self.agent.get(&full).call() {
                Ok(r) => r,
                Err(ureq::Error::Status(s, _)) if s >= 500 => {
                    return Err(Attempt::Retry(format!("HTTP status {s}")))
                }
                Err(ureq::Error::Status(status, _)) => {
                    return Err(Attempt::Fatal(Error::HttpStatus {
                        url: full.clone(),
                        status,
                    }))
                }
                Err(ureq::Error::Transport(t)) => return Err(Attempt::Retry(t.to_string())),
            };
            let mut b = Vec::new();
            resp.into_reader()
                .take(1 << 20)
                .read_to_end(&mut b)
                .map_err(|e| Attempt::Retry(e.to_string()))?;
            Ok(b)
        })?;
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Tok = serde_json::from_slice(&body).map_err(|e| Error::Transport {
            url: full.clone(),
            attempts: 1,
            reason: format!("the token answer is not JSON: {e}"),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| Error::Transport {
                url: full,
                attempts: 1,
                reason: "the token answer holds no token".into(),
            })
    }

    /// A manifest or index by tag or digest: (bytes, content type, digest).
    fn manifest(&mut self, image: &ImageRef, reference: &str) -> Result<(Vec<u8>, String, String)> {
        let upstream = image.manifest_url(reference);
        let resp = self.get(image, &upstream, Some(ACCEPT))?;
        let ctype = resp
            .header("Content-Type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let header_digest = resp.header("Docker-Content-Digest").map(str::to_string);
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Transport {
                url: upstream.clone(),
                attempts: 1,
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(Error::TooLarge {
                image: image.to_string(),
                what: "the manifest".into(),
                limit: MAX_MANIFEST,
            });
        }
        let digest = digest_of(&bytes);
        let mismatch = |actual: String| Error::BlobMismatch {
            image: image.to_string(),
            digest: reference.to_string(),
            actual,
        };
        if reference.starts_with("sha256:") && digest != reference {
            return Err(mismatch(digest));
        }
        if let Some(h) = header_digest {
            if h.starts_with("sha256:") && h != digest {
                return Err(mismatch(format!("{digest} (the registry said {h})")));
            }
        }
        Ok((bytes, ctype, digest))
    }

    /// Pulls the linux/arm64 image of `image` into `store`. With `pinned` (the lock's index
    /// and manifest digests), a tag that resolves to anything else is refused before any
    /// blob is fetched ([`Error::DigestChanged`], naming `pinned_by`).
    pub fn pull(
        &mut self,
        image: &ImageRef,
        store: &BlobStore,
        pinned: Option<(&str, &str)>,
        pinned_by: &str,
    ) -> Result<Pulled> {
        let name = image.to_string();
        let changed = |what: &'static str, pinned: &str, now: &str| Error::DigestChanged {
            changed: Changed {
                image: name.clone(),
                what,
                pinned: pinned.to_string(),
                now: now.to_string(),
            },
            pinned_by: pinned_by.to_string(),
        };
        let (bytes, ctype, top) = self.manifest(image, &image.reference)?;
        if let Some((index, _)) = pinned {
            if top != index {
                return Err(changed("the tag's digest", index, &top));
            }
        }
        let mut downloaded = bytes.len() as u64;
        store.put_reader(&name, &top, bytes.len() as u64, &bytes[..])?;
        let (manifest_desc, manifest) = match parse_document(image, "the manifest", &ctype, &bytes)?
        {
            Document::Manifest(m) => (
                Descriptor {
                    media_type: m
                        .media_type
                        .clone()
                        .unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
                    digest: top.clone(),
                    size: bytes.len() as u64,
                    platform: None,
                    annotations: None,
                },
                m,
            ),
            Document::Index(idx) => {
                let d = pick_arm64(&idx).cloned().ok_or_else(|| Error::NoArm64 {
                    image: name.clone(),
                })?;
                if let Some((_, m)) = pinned {
                    if d.digest != m {
                        return Err(changed("its linux/arm64 manifest", m, &d.digest));
                    }
                }
                let (mb, mtype, md) = self.manifest(image, &d.digest)?;
                downloaded += mb.len() as u64;
                store.put_reader(&name, &md, mb.len() as u64, &mb[..])?;
                match parse_document(image, "the arm64 manifest", &mtype, &mb)? {
                    Document::Manifest(m) => (
                        Descriptor {
                            platform: None,
                            annotations: None,
                            size: mb.len() as u64,
                            ..d
                        },
                        m,
                    ),
                    Document::Index(_) => {
                        return Err(Error::BadManifest {
                            image: name.clone(),
                            what: "the arm64 manifest".into(),
                            reason: "it is another index".into(),
                        })
                    }
                }
            }
        };
        if let Some((_, m)) = pinned {
            if manifest_desc.digest != m {
                return Err(changed(
                    "its linux/arm64 manifest",
                    m,
                    &manifest_desc.digest,
                ));
            }
        }
        let mut blobs = vec![manifest.config.clone()];
        blobs.extend(manifest.layers.iter().cloned());
        for d in &blobs {
            if store.has(&d.digest, d.size) {
                continue;
            }
            let upstream = image.blob_url(&d.digest);
            let resp = self.get(image, &upstream, None)?;
            store.put_reader(&name, &d.digest, d.size, resp.into_reader())?;
            downloaded += d.size;
        }
        let config = store.read_small(&name, &manifest.config.digest, MAX_MANIFEST)?;
        check_config(image, &config)?;
        Ok(Pulled {
            parts: ImageParts {
                image: image.clone(),
                index_digest: top,
                manifest: manifest_desc,
                config: manifest.config,
                layers: manifest.layers,
            },
            downloaded,
        })
    }
}

/// The image `image` from the store alone, as pinned (`index` and `manifest` digests): no
/// network. `None` when a blob is missing; an error when one is corrupt or not arm64.
pub fn cached_parts(
    store: &BlobStore,
    image: &ImageRef,
    index: &str,
    manifest: &str,
) -> Result<Option<ImageParts>> {
    let name = image.to_string();
    if !store.path(manifest).is_file() {
        return Ok(None);
    }
    let bytes = store.read_small(&name, manifest, MAX_MANIFEST)?;
    let m = match parse_document(image, "the arm64 manifest", "", &bytes)? {
        Document::Manifest(m) => m,
        Document::Index(_) => {
            return Err(Error::BadManifest {
                image: name,
                what: "the arm64 manifest".into(),
                reason: "it is an index".into(),
            })
        }
    };
    let mut all = vec![&m.config];
    all.extend(m.layers.iter());
    if all.iter().any(|d| !store.has(&d.digest, d.size)) {
        return Ok(None);
    }
    let config = store.read_small(&name, &m.config.digest, MAX_MANIFEST)?;
    check_config(image, &config)?;
    Ok(Some(ImageParts {
        image: image.clone(),
        index_digest: index.to_string(),
        manifest: Descriptor {
            media_type: m
                .media_type
                .clone()
                .unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
            digest: manifest.to_string(),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        },
        config: m.config,
        layers: m.layers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let p = bearer_params(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:flannel-io/flannel:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://ghcr.io/token");
        assert_eq!(p["service"], "ghcr.io");
        assert_eq!(p["scope"], "repository:flannel-io/flannel:pull");
        assert!(bearer_params("Basic realm=\"x\"").is_none());
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
        assert!(is_loopback_url("http://127.0.0.1:8080/token"));
        assert!(is_loopback_url("http://localhost/token"));
        assert!(!is_loopback_url("http://evil.example/token"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example/token"));
    }
}
