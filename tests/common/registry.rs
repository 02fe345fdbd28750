//! A small OCI registry on 127.0.0.1 for the tests, laid out like piforge's `--mirror`:
//! `/<registry host>/v2/<repository>/manifests/<tag or digest>`, `.../blobs/<digest>`, and any
//! other path from a file map (release files). Repositories of `ghcr.io` need a Bearer token:
//! a request without one gets `401` with `WWW-Authenticate: Bearer realm=...` pointing at
//! `/ghcr.io/token` on this server, as ghcr.io does. Also builds tiny valid arm64 images.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// One image: its documents and blobs.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// (media type, bytes) of what the tag resolves to: an index, or a manifest.
    pub top: (String, Vec<u8>),
    /// Every other blob by digest: the arm64 manifest, the config, the layer.
    pub blobs: HashMap<String, (String, Vec<u8>)>,
    /// The file the layer holds and its content.
    pub file: (String, Vec<u8>),
}

impl TestImage {
    pub fn top_digest(&self) -> String {
        digest(&self.top.1)
    }

    /// Writes the image as an OCI image layout directory (`oci-layout`, `index.json`,
    /// `blobs/sha256/`), the top descriptor annotated with the reference.
    pub fn write_layout(&self, dir: &Path, reference: &str, tag: &str) {
        let b = dir.join("blobs/sha256");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let mut all = self.blobs.clone();
        all.insert(self.top_digest(), self.top.clone());
        for (d, (_, bytes)) in &all {
            std::fs::write(b.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": self.top.0,
                "digest": self.top_digest(),
                "size": self.top.1.len(),
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": tag,
                }
            }]
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// A tiny linux/arm64 image: one gzip layer holding `file` with `content`, a config saying
/// arm64/linux, an OCI manifest; with `index`, an OCI index listing an amd64 manifest (not
/// served) beside the arm64 one.
pub fn tiny_image(file: &str, content: &[u8], index: bool) -> TestImage {
    let mut tar_bytes = Vec::new();
    {
        let mut t = tar::Builder::new(&mut tar_bytes);
        let mut h = tar::Header::new_ustar();
        h.set_path(file).unwrap();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        t.append(&h, content).unwrap();
        t.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "arm64",
        "os": "linux",
        "config": {"Entrypoint": [format!("/{file}")]},
        "rootfs": {"type": "layers", "diff_ids": [digest(&tar_bytes)]},
    }))
    .unwrap();
    const M: &str = "application/vnd.oci.image.manifest.v1+json";
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": M,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let mut blobs = HashMap::new();
    blobs.insert(
        digest(&config),
        (
            "application/vnd.oci.image.config.v1+json".to_string(),
            config,
        ),
    );
    blobs.insert(
        digest(&layer),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
            layer,
        ),
    );
    let top = if index {
        blobs.insert(digest(&manifest), (M.to_string(), manifest.clone()));
        let idx = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": M, "digest": format!("sha256:{}", "1".repeat(64)), "size": 100,
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": M, "digest": digest(&manifest), "size": manifest.len(),
                 "platform": {"architecture": "arm64", "os": "linux"}},
            ],
        }))
        .unwrap();
        ("application/vnd.oci.image.index.v1+json".to_string(), idx)
    } else {
        (M.to_string(), manifest)
    };
    TestImage {
        top,
        blobs,
        file: (file.to_string(), content.to_vec()),
    }
}

#[derive(Default)]
struct State {
    /// "host/repo" -> tag -> image
    images: HashMap<String, HashMap<String, TestImage>>,
    files: HashMap<String, Vec<u8>>,
    log: Vec<String>,
}

pub struct Registry {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Registry {
    pub fn start() -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: the server stops when told, or after 10 minutes whatever happens.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || {
                            let _ = handle(stream, &st, addr);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Registry {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The base URL to pass as `--mirror`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `image` under `reference` (`host/repo:tag`), replacing what was there.
    pub fn put_image(&self, reference: &str, image: TestImage) {
        let (name, tag) = reference.rsplit_once(':').unwrap();
        self.state
            .lock()
            .unwrap()
            .images
            .entry(name.to_string())
            .or_default()
            .insert(tag.to_string(), image);
    }

    /// Serves `bytes` at the upstream `url` (`https://host/path`).
    pub fn put_file(&self, url: &str, bytes: Vec<u8>) {
        let path = format!("/{}", url.trim_start_matches("https://"));
        self.state.lock().unwrap().files.insert(path, bytes);
    }

    /// The paths requested so far.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

fn handle(mut s: TcpStream, state: &Mutex<State>, addr: SocketAddr) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 || buf.len() > 65536 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.lines();
    let target = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let auth = lines
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let st = &mut *state.lock().unwrap();
    st.log.push(target.clone());
    if let Some(b) = st.files.get(path) {
        return respond(&mut s, "200 OK", &[], &b.clone());
    }
    if path == "/ghcr.io/token" {
        let scope = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("scope="))
            .unwrap_or("")
            .replace("%3A", ":")
            .replace("%2F", "/");
        let repo = scope
            .strip_prefix("repository:")
            .and_then(|r| r.strip_suffix(":pull"));
        return match repo {
            Some(r) if query.contains("service=ghcr.io") => {
                let body = serde_json::to_vec(
                    &serde_json::json!({"token": format!("tok-{}", r.replace('/', "-"))}),
                )
                .unwrap();
                respond(
                    &mut s,
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    &body,
                )
            }
            _ => respond(&mut s, "400 Bad Request", &[], b"bad scope"),
        };
    }
    // /<host>/v2/<repo...>/(manifests|blobs)/<ref>
    let rest = path.trim_start_matches('/');
    let Some((host, after)) = rest.split_once("/v2/") else {
        return respond(&mut s, "404 Not Found", &[], b"");
    };
    let (repo, kind, reference) = match after.rsplit_once("/manifests/") {
        Some((r, x)) => (r, "manifests", x),
        None => match after.rsplit_once("/blobs/") {
            Some((r, x)) => (r, "blobs", x),
            None => return respond(&mut s, "404 Not Found", &[], b""),
        },
    };
    if host == "ghcr.io" && auth != format!("Bearer tok-{}", repo.replace('/', "-")) {
        let challenge = format!(
            "Bearer realm=\"http://{addr}/ghcr.io/token\",service=\"ghcr.io\",scope=\"repository:{repo}:pull\""
        );
        return respond(
            &mut s,
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge)],
            b"",
        );
    }
    let Some(tags) = st.images.get(&format!("{host}/{repo}")) else {
        return respond(&mut s, "404 Not Found", &[], b"");
    };
    let found = if kind == "manifests" && !reference.starts_with("sha256:") {
        tags.get(reference).map(|i| i.top.clone())
    } else {
        tags.values().find_map(|i| {
            if i.top_digest() == reference {
                Some(i.top.clone())
            } else {
                i.blobs.get(reference).cloned()
            }
        })
    };
    match found {
        Some((media, bytes)) => {
            let mut h = vec![("Content-Type", media)];
            if kind == "manifests" {
                h.push(("Docker-Content-Digest", digest(&bytes)));
            }
            respond(&mut s, "200 OK", &h, &bytes)
        }
        None => respond(&mut s, "404 Not Found", &[], b""),
    }
}
