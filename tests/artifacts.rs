//! The artifacts library against a local HTTP server (127.0.0.1 only, no internet):
//! pinning in the lock, the content-addressed cache, resuming with `Range`, digest
//! mismatches, HTTP errors, `update`, and offline builds from a directory.

use piforge::artifacts::{
    fetch, fetch_artifacts, from_dir, tar_entries, ArtifactSpec, Catalog, Error, FetchOptions,
    Lock, Pin, Release, TarEntryKind,
};
use piforge::progress::{Progress, Task};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- a tiny HTTP server

#[derive(Clone)]
enum Route {
    /// Served whole, or from the requested byte with `Range: bytes=N-`.
    File(Vec<u8>),
    /// Like `File`, but the first request gets the headers and half the body, then the
    /// connection is closed.
    DropOnce(Vec<u8>),
    /// Every request gets half the body, then the connection is closed.
    DropAlways(Vec<u8>),
    /// Drops the first request half way, then answers a `Range` request with a full 200.
    IgnoresRange(Vec<u8>),
    /// Sends the headers, then nothing for 2 s.
    Stall,
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    range: Option<String>,
}

struct Server {
    addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, l, s) = (routes.clone(), log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: the server stops when told, or after 120 s whatever happens.
            let deadline = Instant::now() + Duration::from_secs(120);
            let served: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, l, served) = (r.clone(), l.clone(), served.clone());
                        std::thread::spawn(move || {
                            let _ = handle(stream, &r, &l, &served);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            addr,
            routes,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn mirror(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `data` for the upstream `url` (under the mirror layout).
    fn put(&self, url: &str, route: Route) {
        self.routes.lock().unwrap().insert(mirror_path(url), route);
    }

    fn requests_for(&self, url: &str) -> Vec<Request> {
        let p = mirror_path(url);
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == p)
            .cloned()
            .collect()
    }

    fn request_count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mirror_path(url: &str) -> String {
    format!("/{}", url.strip_prefix("https://").unwrap())
}

fn handle(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    log: &Mutex<Vec<Request>>,
    served: &Mutex<HashMap<String, u32>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let path = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    log.lock().unwrap().push(Request {
        path: path.clone(),
        range: range.clone(),
    });
    let nth = {
        let mut s = served.lock().unwrap();
        let n = s.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let route = routes.lock().unwrap().get(&path).cloned();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let reply = |stream: &mut TcpStream, status: &str, headers: &str, body: &[u8], cut: bool| {
        let len = if cut { body.len() / 2 } else { body.len() };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body[..len])?;
        stream.flush()?;
        if cut {
            stream.shutdown(std::net::Shutdown::Both)?;
        }
        Ok::<(), std::io::Error>(())
    };
    let serve_file = |stream: &mut TcpStream, data: &[u8], honour_range: bool| match start {
        Some(s) if honour_range && s < data.len() => reply(
            stream,
            "206 Partial Content",
            &format!(
                "Content-Range: bytes {s}-{}/{}\r\n",
                data.len() - 1,
                data.len()
            ),
            &data[s..],
            false,
        ),
        Some(_) if honour_range => reply(stream, "416 Range Not Satisfiable", "", b"", false),
        _ => reply(stream, "200 OK", "", data, false),
    };
    match route {
        None => reply(&mut stream, "404 Not Found", "", b"not found", false),
        Some(Route::File(d)) => serve_file(&mut stream, &d, true),
        Some(Route::DropOnce(d)) if nth == 1 => reply(&mut stream, "200 OK", "", &d, true),
        Some(Route::DropOnce(d)) => serve_file(&mut stream, &d, true),
        Some(Route::DropAlways(d)) => reply(&mut stream, "200 OK", "", &d, true),
        Some(Route::IgnoresRange(d)) if nth == 1 => reply(&mut stream, "200 OK", "", &d, true),
        Some(Route::IgnoresRange(d)) => serve_file(&mut stream, &d, false),
        Some(Route::Stall) => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
            )?;
            stream.flush()?;
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- stand-in artifacts

const CATALOG: &str = r#"
[[artifact]]
name = "kubeadm"
kind = "binary"
file = "kubeadm"
url = "https://dl.k8s.io/release/v{kubernetes}/bin/linux/arm64/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[artifact]]
name = "containerd"
kind = "tar.gz"
file = "containerd-static-{containerd}-linux-arm64.tar.gz"
url = "https://github.com/containerd/containerd/releases/download/v{containerd}/{file}"
checksum_url = "{url}.sha256sum"
checksum_kind = "sha256sum"
members = ["bin/containerd"]

[[artifact]]
name = "runc"
kind = "binary"
file = "runc.arm64"
url = "https://github.com/opencontainers/runc/releases/download/v{runc}/{file}"
checksum_url = "https://github.com/opencontainers/runc/releases/download/v{runc}/runc.sha256sum"
checksum_kind = "sha256sum"

[[artifact]]
name = "cni-plugins"
kind = "tar.gz"
file = "cni-plugins-linux-arm64-v{cni_plugins}.tgz"
url = "https://github.com/containernetworking/plugins/releases/download/v{cni_plugins}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "sha256sum"
members = ["bridge"]

[[artifact]]
name = "crictl"
kind = "tar.gz"
file = "crictl-v{crictl}-linux-arm64.tar.gz"
url = "https://github.com/kubernetes-sigs/cri-tools/releases/download/v{crictl}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"
members = ["crictl"]

[[artifact]]
name = "flannel"
kind = "manifest"
file = "kube-flannel.yml"
url = "https://github.com/flannel-io/flannel/releases/download/v{flannel}/{file}"

[[release]]
kubernetes = "9.99.1"
containerd = "8.1.0"
runc = "7.0.1"
cni_plugins = "6.2.0"
crictl = "9.99.0"
flannel = "5.0.0"
pause_image = "registry.test/pause:1"
"#;

/// Artifacts for the failure cases, each with its own URL.
const FAULTS: &str = r#"
[[artifact]]
name = "bad-digest"
kind = "binary"
file = "bad.bin"
url = "https://files.test/v{kubernetes}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[artifact]]
name = "drops-once"
kind = "binary"
file = "drops-once.bin"
url = "https://files.test/v{kubernetes}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[artifact]]
name = "ignores-range"
kind = "binary"
file = "ignores-range.bin"
url = "https://files.test/v{kubernetes}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[artifact]]
name = "drops-always"
kind = "binary"
file = "drops-always.bin"
url = "https://files.test/v{kubernetes}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[artifact]]
name = "missing"
kind = "binary"
file = "missing.bin"
url = "https://files.test/v{kubernetes}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[artifact]]
name = "no-checksum-file"
kind = "binary"
file = "no-sum.bin"
url = "https://files.test/v{kubernetes}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[artifact]]
name = "stalls"
kind = "binary"
file = "stalls.bin"
url = "https://files.test/v{kubernetes}/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[release]]
kubernetes = "9.99.1"
containerd = "8.1.0"
runc = "7.0.1"
cni_plugins = "6.2.0"
crictl = "9.99.0"
flannel = "5.0.0"
pause_image = "registry.test/pause:1"
"#;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic filler that differs per seed.
fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed as u32)
                .to_le_bytes()[1]
        })
        .collect()
}

fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).unwrap();
    e.finish().unwrap()
}

/// Stand-ins for every artifact of [`CATALOG`], by name: (contents, URL).
struct StandIns {
    files: HashMap<String, (Vec<u8>, String)>,
}

impl StandIns {
    fn serve(server: &Server, release: &Release) -> StandIns {
        let mut files = HashMap::new();
        for spec in release.artifacts() {
            let data = match spec.name.as_str() {
                "kubeadm" => blob(1, 300_000),
                "containerd" => tgz(&[
                    ("bin/containerd", &blob(2, 50_000)),
                    ("bin/containerd-shim-runc-v2", &blob(3, 20_000)),
                    ("bin/ctr", &blob(4, 10_000)),
                ]),
                "runc" => blob(5, 100_000),
                "cni-plugins" => tgz(&[
                    ("./bridge", &blob(6, 9_000)),
                    ("./loopback", &blob(7, 4_000)),
                ]),
                "crictl" => tgz(&[("crictl", &blob(8, 30_000))]),
                "flannel" => {
                    b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kube-flannel\n".to_vec()
                }
                other => panic!("no stand-in for {other}"),
            };
            let digest = sha(&data);
            if let Some(c) = &spec.checksum_url {
                let text = match spec.name.as_str() {
                    "kubeadm" => digest.clone(), // bare, no newline, like dl.k8s.io
                    "runc" => format!(
                        "{}  runc.amd64\n{digest}  runc.arm64\n{}  runc.armhf\n",
                        sha(b"amd64"),
                        sha(b"armhf")
                    ),
                    _ => format!("{digest}  {}\n", spec.file_name),
                };
                server.put(c, Route::File(text.into_bytes()));
            }
            server.put(&spec.url, Route::File(data.clone()));
            files.insert(spec.name.clone(), (data, spec.url.clone()));
        }
        StandIns { files }
    }

    fn data(&self, name: &str) -> &[u8] {
        &self.files[name].0
    }
}

fn release(text: &str) -> Release {
    text.parse::<Catalog>().unwrap().release("9.99").unwrap()
}

fn opts<'a>(server: &Server, dir: &Path) -> FetchOptions<'a> {
    let mut o = FetchOptions::new(dir.join("cache"), dir.join("piforge.lock"));
    o.mirror = Some(server.mirror());
    o.proxy_from_env = false; // the server is on 127.0.0.1, whatever proxy is set
    o.retry_delay = Duration::from_millis(20);
    o.timeout = Duration::from_secs(5);
    o
}

/// The FAULTS release's artifact `name`, served by `route`, with a checksum file holding
/// `checksum`.
fn serve_fault(server: &Server, name: &str, route: Route, checksum: String) -> ArtifactSpec {
    let spec = release(FAULTS).artifact(name).unwrap().clone();
    server.put(&spec.url, route);
    server.put(
        spec.checksum_url.as_deref().unwrap(),
        Route::File(checksum.into_bytes()),
    );
    spec
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Records download progress as `(file name, bytes done, total when known)`, and which
/// downloads finished.
#[derive(Default)]
struct ProgressLog {
    totals: Mutex<HashMap<String, Option<u64>>>,
    calls: Mutex<Vec<(String, u64, Option<u64>)>>,
    finished: Mutex<Vec<String>>,
}

impl Progress for ProgressLog {
    fn begin(&self, task: Task<'_>, total: Option<u64>) {
        self.totals
            .lock()
            .unwrap()
            .insert(task.label().to_string(), total);
    }
    fn advance(&self, task: Task<'_>, done: u64) {
        let total = self
            .totals
            .lock()
            .unwrap()
            .get(&task.label())
            .copied()
            .flatten();
        self.calls
            .lock()
            .unwrap()
            .push((task.label().to_string(), done, total));
    }
    fn finish(&self, task: Task<'_>) {
        self.finished.lock().unwrap().push(task.label().to_string());
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn first_fetch_pins_upstream_digests_and_the_second_uses_the_cache() {
    let server = Server::start();
    let rel = release(CATALOG);
    let stand = StandIns::serve(&server, &rel);
    let dir = tempfile::tempdir().unwrap();
    let hook = ProgressLog::default();
    let mut o = opts(&server, dir.path());
    o.allow_unpinned = true; // the flannel manifest has no upstream checksum
    o.progress = Some(&hook);

    let got = fetch(&rel, &o).unwrap();
    assert_eq!(got.len(), 6);
    for a in &got {
        let data = stand.data(&a.spec.name);
        assert_eq!(a.sha256, sha(data), "{}", a.spec.name);
        assert_eq!(a.size, data.len() as u64);
        assert_eq!(
            a.path,
            dir.path().join("cache/artifacts/sha256").join(&a.sha256)
        );
        assert_eq!(std::fs::read(&a.path).unwrap(), data);
        let want_pin = if a.spec.name == "flannel" {
            Pin::Unpinned
        } else {
            Pin::Upstream
        };
        assert_eq!(a.pin, want_pin, "{}", a.spec.name);
        assert_eq!(a.warning().is_some(), a.spec.name == "flannel");
    }
    let flannel_warning = got[5].warning().unwrap();
    assert!(
        flannel_warning.contains("unpinned, recorded") && flannel_warning.contains(&got[5].sha256)
    );
    // Progress ends at the full size of each artifact, and each download is finished.
    let calls = hook.calls.lock().unwrap().clone();
    let last_kubeadm = calls.iter().rev().find(|c| c.0 == "kubeadm").unwrap();
    assert_eq!((last_kubeadm.1, last_kubeadm.2), (300_000, Some(300_000)));
    let finished = hook.finished.lock().unwrap().clone();
    let mut files: Vec<String> = got.iter().map(|a| a.spec.file_name.clone()).collect();
    files.sort();
    let mut finished_sorted = finished.clone();
    finished_sorted.sort();
    assert_eq!(finished_sorted, files);

    // The lock: header, every upstream URL (not the mirror) with its digest and size,
    // entries sorted by name.
    let lock_path = dir.path().join("piforge.lock");
    let text = std::fs::read_to_string(&lock_path).unwrap();
    assert!(
        text.starts_with("# generated by piforge; commit this file\n"),
        "{text}"
    );
    assert!(!text.contains("127.0.0.1"), "{text}");
    let lock = Lock::load(&lock_path).unwrap();
    let names: Vec<&str> = lock.entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cni-plugins",
            "containerd",
            "crictl",
            "flannel",
            "kubeadm",
            "runc"
        ]
    );
    for a in &got {
        let e = lock.get(&a.spec.url).unwrap();
        assert_eq!(
            (&e.sha256, e.size, &e.file),
            (&a.sha256, a.size, &a.spec.file_name)
        );
    }

    // The tarballs read back with normalized paths.
    let entries = |name: &str| -> Vec<String> {
        let a = got.iter().find(|a| a.spec.name == name).unwrap();
        tar_entries(&a.path)
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.kind, TarEntryKind::File { .. }))
            .map(|e| e.path)
            .collect()
    };
    assert_eq!(
        entries("containerd"),
        ["bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"]
    );
    assert_eq!(entries("cni-plugins"), ["bridge", "loopback"]);
    assert_eq!(entries("crictl"), ["crictl"]);

    // Second fetch, without --allow-unpinned: everything from the lock and the cache, not
    // one request (not even for checksum files), the lock byte for byte the same.
    let before = server.request_count();
    let o2 = opts(&server, dir.path());
    let again = fetch(&rel, &o2).unwrap();
    assert_eq!(server.request_count(), before);
    assert!(again
        .iter()
        .all(|a| a.pin == Pin::Lock && a.warning().is_none()));
    assert_eq!(
        again.iter().map(|a| &a.sha256).collect::<Vec<_>>(),
        got.iter().map(|a| &a.sha256).collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), text);

    // A corrupted cache object is noticed, removed and downloaded again.
    let kubeadm = &got[0];
    std::fs::write(&kubeadm.path, b"bit rot").unwrap();
    fetch_artifacts(std::slice::from_ref(&kubeadm.spec), &o2).unwrap();
    assert_eq!(std::fs::read(&kubeadm.path).unwrap(), stand.data("kubeadm"));
    assert_eq!(server.requests_for(&kubeadm.spec.url).len(), 2);
}

#[test]
fn an_artifact_without_upstream_checksum_needs_allow_unpinned() {
    let server = Server::start();
    let rel = release(CATALOG);
    let _stand = StandIns::serve(&server, &rel);
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&rel, &opts(&server, dir.path())).unwrap_err();
    assert!(matches!(e, Error::NoUpstreamChecksum { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("--allow-unpinned") && msg.contains("kube-flannel.yml"),
        "{msg}"
    );
    assert!(!dir.path().join("piforge.lock").exists());
}

#[test]
fn a_wrong_upstream_digest_names_both_and_leaves_nothing_in_the_cache() {
    let server = Server::start();
    let data = blob(9, 70_000);
    let claimed = sha(b"something else");
    let spec = serve_fault(
        &server,
        "bad-digest",
        Route::File(data.clone()),
        claimed.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let e = fetch_artifacts(std::slice::from_ref(&spec), &opts(&server, dir.path())).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&claimed) && msg.contains(&sha(&data)) && msg.contains("bad.bin"),
        "{msg}"
    );
    assert!(msg.contains("/files.test/v9.99.1/bad.bin.sha256"), "{msg}");
    assert_eq!(
        files_under(&dir.path().join("cache")),
        Vec::<PathBuf>::new()
    );
    assert!(!dir.path().join("piforge.lock").exists());
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let server = Server::start();
    let data = blob(10, 600_001);
    let spec = serve_fault(
        &server,
        "drops-once",
        Route::DropOnce(data.clone()),
        sha(&data),
    );
    let dir = tempfile::tempdir().unwrap();
    let got = fetch_artifacts(std::slice::from_ref(&spec), &opts(&server, dir.path())).unwrap();
    assert_eq!(std::fs::read(&got[0].path).unwrap(), data);
    let reqs = server.requests_for(&spec.url);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(&*format!("bytes={}-", data.len() / 2))
    );
    // No partial file is left behind.
    assert_eq!(
        files_under(&dir.path().join("cache")),
        vec![got[0].path.clone()]
    );
}

#[test]
fn a_server_that_ignores_range_gets_a_fresh_download() {
    let server = Server::start();
    let data = blob(11, 400_000);
    let spec = serve_fault(
        &server,
        "ignores-range",
        Route::IgnoresRange(data.clone()),
        sha(&data),
    );
    let dir = tempfile::tempdir().unwrap();
    let got = fetch_artifacts(std::slice::from_ref(&spec), &opts(&server, dir.path())).unwrap();
    assert_eq!(std::fs::read(&got[0].path).unwrap(), data);
    let reqs = server.requests_for(&spec.url);
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].range.is_some(), "{reqs:?}");
}

#[test]
fn retries_are_bounded_and_the_error_names_the_url() {
    let server = Server::start();
    let data = blob(12, 100_000);
    let spec = serve_fault(
        &server,
        "drops-always",
        Route::DropAlways(data.clone()),
        sha(&data),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&server, dir.path());
    o.retries = 2;
    let e = fetch_artifacts(std::slice::from_ref(&spec), &o).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Transport { attempts: 3, .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "{}/files.test/v9.99.1/drops-always.bin",
            server.mirror()
        )),
        "{msg}"
    );
    assert_eq!(server.requests_for(&spec.url).len(), 3);

    // The next run resumes the partial download the failed one left.
    let parts = files_under(&dir.path().join("cache/artifacts/partial"));
    assert_eq!(parts.len(), 1);
    assert_eq!(
        std::fs::metadata(&parts[0]).unwrap().len(),
        data.len() as u64 / 2
    );
    server.put(&spec.url, Route::File(data.clone()));
    let got = fetch_artifacts(std::slice::from_ref(&spec), &o).unwrap();
    assert_eq!(std::fs::read(&got[0].path).unwrap(), data);
    let reqs = server.requests_for(&spec.url);
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[3].range.as_deref(), Some("bytes=50000-"));
    assert!(files_under(&dir.path().join("cache/artifacts/partial")).is_empty());
}

#[test]
fn a_stalled_connection_times_out() {
    let server = Server::start();
    let spec = serve_fault(&server, "stalls", Route::Stall, sha(b"x"));
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&server, dir.path());
    o.timeout = Duration::from_millis(300);
    o.retries = 1;
    let t0 = Instant::now();
    let e = fetch_artifacts(&[spec], &o).unwrap_err();
    assert!(matches!(e, Error::Transport { attempts: 2, .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn http_404_is_a_clear_error() {
    let server = Server::start();
    let rel = release(FAULTS);
    let dir = tempfile::tempdir().unwrap();
    // The artifact is missing (its checksum file is there).
    let spec = rel.artifact("missing").unwrap().clone();
    server.put(
        spec.checksum_url.as_deref().unwrap(),
        Route::File(sha(b"x").into_bytes()),
    );
    let e = fetch_artifacts(std::slice::from_ref(&spec), &opts(&server, dir.path())).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::HttpStatus { status: 404, .. }), "{msg}");
    assert!(
        msg.contains("404") && msg.contains("/files.test/v9.99.1/missing.bin"),
        "{msg}"
    );
    assert_eq!(
        server.requests_for(&spec.url).len(),
        1,
        "a 404 is not retried"
    );
    // The checksum file is missing.
    let spec = rel.artifact("no-checksum-file").unwrap().clone();
    server.put(&spec.url, Route::File(b"x".to_vec()));
    let e = fetch_artifacts(std::slice::from_ref(&spec), &opts(&server, dir.path())).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("404") && msg.contains("no-sum.bin.sha256"),
        "{msg}"
    );
    assert!(
        server.requests_for(&spec.url).is_empty(),
        "nothing downloaded without a digest"
    );
    // A checksum file that lists only other files.
    let other = format!("{}  other.bin\n", sha(b"x"));
    server.put(
        spec.checksum_url.as_deref().unwrap(),
        Route::File(other.into_bytes()),
    );
    let e = fetch_artifacts(std::slice::from_ref(&spec), &opts(&server, dir.path())).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::NoChecksumInFile { .. }), "{msg}");
    assert!(
        msg.contains("no-sum.bin.sha256 has no SHA-256 for no-sum.bin"),
        "{msg}"
    );
    assert!(server.requests_for(&spec.url).is_empty());
}

#[test]
fn the_lock_is_the_truth_and_only_update_changes_it() {
    let server = Server::start();
    let rel = release(CATALOG);
    let stand = StandIns::serve(&server, &rel);
    let spec = rel.artifact("kubeadm").unwrap().clone();
    let checksum_url = spec.checksum_url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("piforge.lock");
    let o = opts(&server, dir.path());
    let first = fetch_artifacts(std::slice::from_ref(&spec), &o).unwrap();
    let good = first[0].sha256.clone();

    // 1. A lock entry that disagrees with the file: fails naming both digests, deletes
    //    the download, and leaves the lock alone; upstream's checksum is not consulted.
    let wrong = sha(b"not kubeadm");
    let tampered = std::fs::read_to_string(&lock_path)
        .unwrap()
        .replace(&good, &wrong);
    std::fs::write(&lock_path, &tampered).unwrap();
    let sums_before = server.requests_for(&checksum_url).len();
    let e = fetch_artifacts(std::slice::from_ref(&spec), &o).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&wrong) && msg.contains(&good) && msg.contains("piforge.lock"),
        "{msg}"
    );
    assert_eq!(server.requests_for(&checksum_url).len(), sums_before);
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), tampered);
    assert_eq!(
        files_under(&dir.path().join("cache")),
        vec![first[0].path.clone()]
    );

    // 2. `update` re-verifies upstream and fixes the entry (from the cache: no download).
    let gets_before = server.requests_for(&spec.url).len();
    let mut upd = opts(&server, dir.path());
    upd.update = true;
    let fixed = fetch_artifacts(std::slice::from_ref(&spec), &upd).unwrap();
    assert_eq!(fixed[0].sha256, good);
    assert_eq!(fixed[0].replaced.as_deref(), Some(&*wrong));
    assert!(fixed[0].warning().unwrap().contains(&wrong));
    assert_eq!(server.requests_for(&spec.url).len(), gets_before);
    assert_eq!(
        Lock::load(&lock_path)
            .unwrap()
            .get(&spec.url)
            .unwrap()
            .sha256,
        good
    );

    // 3. Upstream replaces the file and its checksum: without update, the lock wins.
    let new_data = blob(42, 300_000);
    server.put(&spec.url, Route::File(new_data.clone()));
    server.put(&checksum_url, Route::File(sha(&new_data).into_bytes()));
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    let e = fetch_artifacts(std::slice::from_ref(&spec), &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&good) && e.contains(&sha(&new_data)), "{e}");
    assert_eq!(
        Lock::load(&lock_path)
            .unwrap()
            .get(&spec.url)
            .unwrap()
            .sha256,
        good
    );
    let got = fetch_artifacts(std::slice::from_ref(&spec), &upd).unwrap();
    assert_eq!(got[0].sha256, sha(&new_data));
    assert_eq!(
        Lock::load(&lock_path)
            .unwrap()
            .get(&spec.url)
            .unwrap()
            .sha256,
        sha(&new_data)
    );
    assert_ne!(stand.data("kubeadm"), &new_data[..]);
}

#[test]
fn offline_from_dir_checks_the_lock() {
    let rel = release(CATALOG);
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let lock_path = dir.path().join("piforge.lock");
    for (i, spec) in rel.artifacts().iter().enumerate() {
        std::fs::write(files.join(&spec.file_name), blob(i as u8, 1000 + i)).unwrap();
    }

    // No lock entries, no --allow-unpinned: refused, with what to do.
    let msg = from_dir(&rel, &files, &lock_path, false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("--allow-unpinned") && !msg.contains("piforge fetch"),
        "{msg}"
    );
    assert!(!lock_path.exists());

    // --allow-unpinned: accepted, recorded, one warning each.
    let got = from_dir(&rel, &files, &lock_path, true).unwrap();
    assert_eq!(got.len(), 6);
    for a in &got {
        assert_eq!(a.pin, Pin::Unpinned);
        assert_eq!(a.path, files.join(&a.spec.file_name));
        assert!(a.warning().unwrap().contains("unpinned, recorded"));
        assert_eq!(
            Lock::load(&lock_path)
                .unwrap()
                .get(&a.spec.url)
                .unwrap()
                .sha256,
            a.sha256
        );
    }
    let lock_text = std::fs::read_to_string(&lock_path).unwrap();

    // With the entries: verified, no warnings, the lock untouched.
    let again = from_dir(&rel, &files, &lock_path, false).unwrap();
    assert!(again
        .iter()
        .all(|a| a.pin == Pin::Lock && a.warning().is_none()));
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), lock_text);

    // A file that disagrees with its entry: both digests named, even with --allow-unpinned,
    // and the user's file is left alone.
    let runc = files.join("runc.arm64");
    std::fs::write(&runc, b"tampered").unwrap();
    let want = Lock::load(&lock_path)
        .unwrap()
        .get(&rel.artifact("runc").unwrap().url)
        .unwrap()
        .sha256
        .clone();
    let e = from_dir(&rel, &files, &lock_path, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&want) && e.contains(&sha(b"tampered")) && e.contains("runc.arm64"),
        "{e}"
    );
    assert!(runc.exists());

    // A missing file names the upstream file name.
    std::fs::remove_file(&runc).unwrap();
    let e = from_dir(&rel, &files, &lock_path, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("runc.arm64") && e.contains("missing"), "{e}");
}

#[test]
fn offline_from_dir_accepts_what_fetch_pinned() {
    let server = Server::start();
    let rel = release(CATALOG);
    let _stand = StandIns::serve(&server, &rel);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&server, dir.path());
    o.allow_unpinned = true;
    let fetched = fetch(&rel, &o).unwrap();
    drop(server); // offline from here on
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    for a in &fetched {
        std::fs::copy(&a.path, files.join(&a.spec.file_name)).unwrap();
    }
    let got = from_dir(&rel, &files, &dir.path().join("piforge.lock"), false).unwrap();
    assert!(got
        .iter()
        .zip(&fetched)
        .all(|(g, f)| g.pin == Pin::Lock && g.sha256 == f.sha256));
}

/// Issue 15 item 4: a host that never answers (an address no one routes to, here with a short
/// timeout and no retry) fails with a message naming the ways to work offline.
#[test]
fn an_unreachable_host_names_the_offline_options() {
    let rel = release(CATALOG);
    let dir = tempfile::tempdir().unwrap();
    let mut o = FetchOptions::new(dir.path().join("cache"), dir.path().join("piforge.lock"));
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737) and 10.255.255.1 sits in private space: nothing
    // answers either; a blackholed connect times out, an unreachable one fails at once.
    o.mirror = Some("http://10.255.255.1:9".into());
    o.proxy_from_env = false;
    o.timeout = Duration::from_secs(1);
    o.retries = 0;
    let started = std::time::Instant::now();
    let e = fetch(&rel, &o).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(20), "{e}");
    // (A sandbox whose gateway answers every address gives an HTTP status instead.)
    assert!(
        e.contains("failed after 1 attempt(s)") || e.contains("failed with HTTP status"),
        "{e}"
    );
    assert!(
        e.contains("--artifacts DIR")
            && e.contains("`artifacts: DIR` in cluster.yaml")
            && e.contains("--mirror URL"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(!dir.path().join("piforge.lock").exists());
}
