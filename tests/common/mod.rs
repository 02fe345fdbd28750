//! Shared helpers for the integration tests: fixtures, the built binary, the real oracles.
#![allow(dead_code)]

pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The directory holding the generated fixture images (made once per test binary).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("PIFORGE_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-fixtures.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("running tests/fixtures/make-fixtures.sh");
        assert!(
            out.status.success(),
            "fixture generation failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Runs the piforge binary with `args` and an isolated cache directory, `--quiet` (no
/// progress lines: stderr holds only warnings and errors, which the tests judge).
pub fn piforge(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_piforge"))
        .arg("--quiet")
        .args(args)
        .env("PIFORGE_CACHE", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("running piforge")
}

/// Runs a command and returns its stdout; panics with its stderr when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns (exit code, stdout+stderr).
pub fn run_status(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

/// `sfdisk -J` of an image, parsed.
pub fn sfdisk_json(img: &Path) -> serde_json::Value {
    let s = run("sfdisk", &["-J", img.to_str().unwrap()]);
    serde_json::from_str(&s).expect("sfdisk -J output is JSON")
}

/// `blkid -p` of the filesystem at a byte offset: TYPE, LABEL, UUID.
pub fn blkid_at(img: &Path, offset: u64) -> std::collections::BTreeMap<String, String> {
    let s = run(
        "blkid",
        &[
            "-p",
            "-o",
            "export",
            "-O",
            &offset.to_string(),
            img.to_str().unwrap(),
        ],
    );
    s.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `debugfs -R CMD 'img?offset=N'` output.
pub fn debugfs(img: &Path, offset: u64, cmd: &str) -> String {
    run(
        "debugfs",
        &["-R", cmd, &format!("{}?offset={offset}", img.display())],
    )
}

/// `e2fsck -fn` on the ext4 filesystem at `offset`: (exit code, output).
pub fn e2fsck(img: &Path, offset: u64) -> (i32, String) {
    run_status(
        "e2fsck",
        &["-fn", &format!("{}?offset={offset}", img.display())],
    )
}

/// `mtype` of a file on the FAT filesystem at `offset`.
pub fn mtype(img: &Path, offset: u64, path: &str) -> String {
    run(
        "mtype",
        &[
            "-i",
            &format!("{}@@{offset}", img.display()),
            &format!("::{path}"),
        ],
    )
}

pub fn sha256(path: &Path) -> String {
    let s = run("sha256sum", &[path.to_str().unwrap()]);
    s.split_whitespace().next().unwrap_or_default().to_string()
}

/// Asserts a failed run: non-zero exit, one line on stderr, containing `needle`, no panic.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr, got: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr should mention {needle:?}: {err}"
    );
}

/// Stand-in release artifacts of one Kubernetes version, laid out like the upstream files
/// (tests/fixtures/make-artifacts.sh).
pub fn stand_in_artifacts(out: &Path, kubernetes: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-artifacts.sh");
    run(
        "bash",
        &[script.to_str().unwrap(), out.to_str().unwrap(), kubernetes],
    );
    out.to_path_buf()
}

/// Byte offsets of the boot (FAT) and root (ext4) partitions, found with tools independent of
/// piforge: `sfdisk -J` for the table, `blkid -p` for what each partition holds (the first vfat
/// and the first ext4 partition, in table order). `_cache` is unused (kept for the callers).
pub fn offsets(img: &Path, _cache: &Path) -> (u64, u64) {
    let sf = sfdisk_json(img);
    let table = &sf["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let starts: Vec<u64> = table["partitions"]
        .as_array()
        .expect("sfdisk -J lists partitions")
        .iter()
        .map(|p| p["start"].as_u64().expect("sfdisk start") * sector)
        .collect();
    let find = |ty: &str| {
        starts
            .iter()
            .copied()
            .find(|&s| blkid_at(img, s).get("TYPE").map(String::as_str) == Some(ty))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {ty} partition by sfdisk -J and blkid",
                    img.display()
                )
            })
    };
    (find("vfat"), find("ext4"))
}

/// A mirror on 127.0.0.1 (python3 -m http.server) laid out as <mirror>/<host>/<path>.
pub struct Mirror {
    child: std::process::Child,
    pub url: String,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_mirror(root: &Path) -> Mirror {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
            root.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 for the test mirror");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port = line
        .split(" port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"));
    Mirror {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// `piforge build --spec SPEC --out OUT --artifacts ARTS --allow-unpinned EXTRA...`.
pub fn build_with(spec: &Path, out: &Path, arts: &Path, cache: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--artifacts",
        arts.to_str().unwrap(),
        "--allow-unpinned",
    ];
    args.extend_from_slice(extra);
    piforge(&args, cache)
}

/// The Kubernetes version of the stand-in artifacts the tests build with.
pub const K8S: &str = "1.34.11";
/// The SSH key the test specs authorize.
pub const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

/// `sha256sum -c --strict SHA256SUMS` in `dir` passes (the real oracle for an output
/// directory: every file is what the build says), with sha256sum's complaints on failure.
pub fn sums_check(dir: &Path) {
    let check = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sha256sum -c in {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// SPDX's own validator accepts the SBOM at `path` (`pyspdxtools -i`; tests/install-deps.sh
/// installs spdx-tools): the real oracle for `sbom.spdx.json`.
pub fn spdx_check(path: &Path) {
    let v = Command::new("pyspdxtools")
        .arg("-i")
        .arg(path)
        .output()
        .expect("pyspdxtools (python3 -m pip install spdx-tools) must be installed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        v.status.success() && !said.contains("ERROR") && !said.contains("issues"),
        "pyspdxtools {}: {said}",
        path.display()
    );
}

/// The JSON file at `path`.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The SBOM package whose `name` is `name` and `versionInfo` `version`, with the SPDX ids
/// the document DESCRIBES (what piforge added is described by the document).
pub fn sbom_package<'a>(
    sbom: &'a serde_json::Value,
    name: &str,
    version: &str,
) -> &'a serde_json::Value {
    let p = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name && p["versionInfo"] == version)
        .unwrap_or_else(|| panic!("no package {name} {version} in the SBOM"));
    assert!(
        sbom["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == "SPDXRef-DOCUMENT"
                && r["relationshipType"] == "DESCRIBES"
                && r["relatedSpdxElement"] == p["SPDXID"]
        }),
        "the document does not describe {name}"
    );
    p
}

/// Writes DIR/cluster.yaml: cluster `name` over `image`, Kubernetes [`K8S`] with flannel and the
/// default subnets, static addresses on eth0 in 192.168.50.0/24, and two nodes: the control
/// plane pi-cp-1 (.10) and the worker pi-w-1 (.11).
pub fn two_node_spec(dir: &Path, name: &str, image: &Path) -> PathBuf {
    cluster_spec(dir, name, image, "")
}

/// [`two_node_spec`] with `more_nodes` (YAML list items, each line indented two spaces) after
/// pi-w-1.
pub fn cluster_spec(dir: &Path, name: &str, image: &Path, more_nodes: &str) -> PathBuf {
    let spec = format!(
        "name: {name}
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
  pod_subnet: 10.244.0.0/16
  service_subnet: 10.96.0.0/12
  cni: flannel
network:
  interface: eth0
  gateway: 192.168.50.1
  dns: [192.168.50.1]
user: pi
ssh_authorized_keys: [\"{KEY}\"]
nodes:
  - name: pi-cp-1
    role: control-plane
    address: 192.168.50.10/24
  - name: pi-w-1
    role: worker
    address: 192.168.50.11/24
{more_nodes}",
        image = image.display()
    );
    let p = dir.join("cluster.yaml");
    std::fs::write(&p, spec).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    p
}

/// A new ed25519 key pair without passphrase at `key` and `key.pub` (`ssh-keygen -q -t ed25519`).
pub fn ssh_keygen(key: &Path, comment: &str) {
    let k = key.to_str().expect("key path is UTF-8");
    run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", k],
    );
}

/// `piforge customize INPUT -o OUT ARGS...`, which must succeed (a base made for a test).
pub fn customize_ok(input: &Path, out: &Path, args: &[&str], cache: &Path) {
    let mut a = vec![
        "customize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    let r = piforge(&a, cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// Whether `needle` (not empty) occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The bytes of every file on the FAT partition at `boot`, copied out with `mcopy -s` into
/// SCRATCH/fat and concatenated; asserts the cloud-init seed was among them.
pub fn fat_file_bytes(img: &Path, boot: u64, scratch: &Path) -> Vec<u8> {
    let dir = scratch.join("fat");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fat = format!("{}@@{boot}", img.display());
    run(
        "mcopy",
        &["-s", "-n", "-i", &fat, "::*", dir.to_str().unwrap()],
    );
    let mut all = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                all.extend(std::fs::read(&p).unwrap());
            }
        }
    }
    assert!(
        contains(&all, b"#cloud-config"),
        "mcopy copied the seed out"
    );
    all
}

/// The arguments of `piforge customize INPUT -o OUT --kubernetes K8S --artifacts ARTS
/// --allow-unpinned --lock LOCK`.
pub fn customize_kubernetes_args<'a>(
    input: &'a Path,
    out: &'a Path,
    arts: &'a Path,
    lock: &'a Path,
) -> Vec<&'a str> {
    vec![
        "customize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--kubernetes",
        K8S,
        "--artifacts",
        arts.to_str().unwrap(),
        "--allow-unpinned",
        "--lock",
        lock.to_str().unwrap(),
    ]
}

/// `piforge customize INPUT -o OUT --kubernetes K8S --artifacts ARTS --allow-unpinned --lock LOCK`.
pub fn customize_kubernetes(
    input: &Path,
    out: &Path,
    arts: &Path,
    lock: &Path,
    cache: &Path,
) -> Output {
    piforge(&customize_kubernetes_args(input, out, arts, lock), cache)
}

/// The trixie fixture with the root overlay `overlay`, written to `out` by `piforge customize`.
pub fn trixie_with_overlay(overlay: &Path, out: &Path, cache: &Path) {
    let o = overlay.to_str().unwrap();
    customize_ok(&fixture("trixie.img"), out, &["--root-overlay", o], cache);
}
