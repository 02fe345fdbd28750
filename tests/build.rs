//! `piforge build`: a three-node cluster (one control plane, two workers, one of them on DHCP)
//! over the trixie- and Ubuntu-shaped fixtures, judged by cloud-init, openssl, debugfs,
//! mtools, e2fsck, fsck.vfat and piforge check.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

const K8S: &str = "1.34.11";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

fn artifacts(dir: &Path) -> PathBuf {
    stand_in_artifacts(&dir.join("artifacts"), K8S)
}

fn write_spec(dir: &Path, image: &Path) -> PathBuf {
    fs::create_dir_all(dir.join("node-profiles")).unwrap();
    fs::create_dir_all(dir.join("overlays/site/etc")).unwrap();
    fs::write(dir.join("overlays/site/etc/site.conf"), "site=1\n").unwrap();
    fs::write(
        dir.join("node-profiles/worker.yaml"),
        "packages: [htop]\nruncmd:\n  - [touch, /var/lib/piforge-worker-profile]\n",
    )
    .unwrap();
    let spec = format!(
        "name: testlab
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
  pod_subnet: 10.244.0.0/16
  service_subnet: 10.96.0.0/12
  token_ttl: 24h
  cni: flannel
network:
  interface: eth0
  gateway: 192.168.50.1
  dns: [192.168.50.1]
user: pi
ssh_authorized_keys: [\"{KEY}\"]
timezone: Europe/Lisbon
overlays: [overlays/site]
nodes:
  - name: pi-cp-1
    role: control-plane
    address: 192.168.50.10/24
  - name: pi-w-1
    role: worker
    address: 192.168.50.11/24
    profile: node-profiles/worker.yaml
  - name: pi-w-2
    role: worker
",
        image = image.display()
    );
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

/// A test directory holding the stand-in artifacts and the spec over `image`:
/// (the directory, its cache, artifacts, spec and output `dist`, not made).
fn lab(image: &Path) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = artifacts(tmp.path());
    let spec = write_spec(tmp.path(), image);
    let out = tmp.path().join("dist");
    (tmp, cache, arts, spec, out)
}

fn build(spec: &Path, out: &Path, arts: &Path, cache: &Path) -> std::process::Output {
    build_with(spec, out, arts, cache, &[])
}

fn openssl_hash(ca: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | sha256sum",
            ca.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn build_and_check(base: &str) {
    let (tmp, cache, arts, spec, out) = lab(&fixture(&format!("{base}.img.xz")));
    let r = build(&spec, &out, &arts, &cache);
    assert!(
        r.status.success(),
        "{base}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let stdout = String::from_utf8_lossy(&r.stdout);
    let secrets = tmp.path().join("secrets");
    let token = fs::read_to_string(secrets.join("token"))
        .unwrap()
        .trim()
        .to_string();
    let ca_key = fs::read_to_string(secrets.join("ca.key")).unwrap();
    assert!(
        !stdout.contains(&token) && !String::from_utf8_lossy(&r.stderr).contains(&token),
        "the token was printed"
    );
    // Token format.
    let (a, b) = token.split_once('.').unwrap();
    assert!(
        a.len() == 6
            && b.len() == 16
            && token
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.')
    );
    let want_hash = format!("sha256:{}", openssl_hash(&secrets.join("ca.crt")));

    // The admin kubeconfig's client certificate verifies against the CA.
    let kc = fs::read_to_string(secrets.join("admin.kubeconfig")).unwrap();
    let cert_b64 = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data:"))
        .unwrap()
        .trim();
    let pem = tmp.path().join("admin.pem");
    let decoded = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo {cert_b64} | base64 -d > {}", pem.display()))
        .status()
        .unwrap();
    assert!(decoded.success());
    let (code, text) = run_status(
        "openssl",
        &[
            "verify",
            "-CAfile",
            secrets.join("ca.crt").to_str().unwrap(),
            pem.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "openssl verify: {text}");
    assert!(
        kc.contains("server: \"https://192.168.50.10:6443\""),
        "{kc}"
    );

    let mut ids = Vec::new();
    let mut disk_ids = Vec::new();
    for (node, addr) in [
        ("pi-cp-1", Some("192.168.50.10/24")),
        ("pi-w-1", Some("192.168.50.11/24")),
        ("pi-w-2", None),
    ] {
        let img = out.join(format!("{node}.img"));
        let (boot, root) = offsets(&img, &cache);
        let boot_size = root - boot;
        // The seed: hostname, instance-id, network config; cloud-init accepts the user-data.
        let fat = format!("{}@@{boot}", img.display());
        let ud = run("mtype", &["-i", &fat, "::user-data"]);
        let md = run("mtype", &["-i", &fat, "::meta-data"]);
        let nc = run("mtype", &["-i", &fat, "::network-config"]);
        assert!(ud.starts_with("#cloud-config\n"), "{ud}");
        assert!(ud.contains(&format!("hostname: {node}")), "{ud}");
        assert!(
            ud.contains("192.168.50.11 pi-w-1"),
            "/etc/hosts lists the fixed nodes: {ud}"
        );
        assert!(ud.contains(KEY));
        // The login user's groups: pi-gen's and the base cloud-init default user's, only those
        // the fixture's /etc/group has (root, adm, sudo, users, ...: no gpio, no video).
        assert!(
            ud.contains("  - groups:\n      - adm\n      - users\n      - sudo\n    lock_passwd"),
            "{base} {node}: {ud}"
        );
        let udf = tmp.path().join(format!("{node}.user-data"));
        fs::write(&udf, &ud).unwrap();
        let (code, text) = run_status(
            "cloud-init",
            &["schema", "--config-file", udf.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{base} {node}: cloud-init schema: {text}");
        assert!(md.contains(&format!("local-hostname: {node}")), "{md}");
        let id = md
            .lines()
            .find_map(|l| l.strip_prefix("instance-id: "))
            .unwrap()
            .to_string();
        ids.push(id);
        match addr {
            Some(a) => assert!(
                nc.contains(a) && nc.contains("192.168.50.1") && nc.contains("dhcp4: false"),
                "{nc}"
            ),
            None => assert!(
                nc.contains("dhcp4: true") && !nc.contains("addresses"),
                "{nc}"
            ),
        }
        if node == "pi-w-1" {
            assert!(
                ud.contains("htop") && ud.contains("/var/lib/piforge-worker-profile"),
                "profile merged: {ud}"
            );
        }
        // Every card its own MBR disk id, and cmdline.txt and fstab point at it.
        let disk_id = sfdisk_json(&img)["partitiontable"]["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x")
            .to_string();
        disk_ids.push(disk_id.clone());
        let cmdline = run("mtype", &["-i", &fat, "::cmdline.txt"]);
        let fstab = debugfs(&img, root, "cat /etc/fstab");
        if base == "trixie" {
            assert!(
                cmdline.contains(&format!("root=PARTUUID={disk_id}-02 ")),
                "{cmdline}"
            );
            assert!(fstab.contains(&format!("PARTUUID={disk_id}-02")), "{fstab}");
            assert!(fstab.contains(&format!("PARTUUID={disk_id}-01")), "{fstab}");
        }
        assert_eq!(cmdline.lines().count(), 1);
        // kubeadm configuration: root filesystem only, 0600 root:root.
        let st = debugfs(&img, root, "stat /etc/piforge/kubeadm.yaml");
        assert!(
            st.contains("Mode:  0600") && st.contains("User:     0   Group:     0"),
            "{st}"
        );
        // Compared without quotes: the YAML may quote any scalar.
        let cfg = debugfs(&img, root, "cat /etc/piforge/kubeadm.yaml").replace('"', "");
        assert!(
            cfg.contains(&token),
            "{node}: the token is in the kubeadm config"
        );
        if node == "pi-cp-1" {
            assert!(
                cfg.contains("kind: InitConfiguration") && cfg.contains("podSubnet: 10.244.0.0/16"),
                "{cfg}"
            );
            let st = debugfs(&img, root, "stat /etc/kubernetes/pki/ca.key");
            assert!(
                st.contains("Mode:  0600") && st.contains("User:     0   Group:     0"),
                "{st}"
            );
            assert_eq!(
                debugfs(&img, root, "cat /etc/kubernetes/pki/ca.key"),
                ca_key
            );
            assert!(
                debugfs(&img, root, "cat /usr/local/share/piforge/kube-flannel.yml")
                    .contains("10.244.0.0/16")
            );
        } else {
            assert!(cfg.contains("kind: JoinConfiguration"), "{cfg}");
            assert!(
                cfg.contains(&want_hash),
                "{node}: caCertHashes is not {want_hash}: {cfg}"
            );
            assert!(
                cfg.contains("apiServerEndpoint: 192.168.50.10:6443"),
                "{cfg}"
            );
            assert!(
                !debugfs(&img, root, "ls /etc/kubernetes/pki").contains("ca.key"),
                "a worker has the CA key"
            );
        }
        assert_eq!(debugfs(&img, root, "cat /etc/site.conf"), "site=1\n");
        assert!(debugfs(
            &img,
            root,
            "stat /etc/systemd/system/multi-user.target.wants/piforge-kubeadm.service"
        )
        .contains("symlink"));
        // No byte of the token or the CA key on the boot partition.
        let data = fs::read(&img).unwrap();
        let bootfs = &data[boot as usize..(boot + boot_size) as usize];
        assert!(
            !contains(bootfs, token.as_bytes()),
            "{node}: the token is on the FAT partition"
        );
        for line in ca_key.lines().filter(|l| l.len() > 20) {
            assert!(
                !contains(bootfs, line.as_bytes()),
                "{node}: the CA key is on the FAT partition"
            );
        }
        // The real checkers, and piforge check.
        let (code, text) = e2fsck(&img, root);
        assert_eq!(code, 0, "{node}: e2fsck: {text}");
        let part = tmp.path().join("boot.part");
        fs::write(&part, bootfs).unwrap();
        let (code, text) = run_status("fsck.vfat", &["-n", part.to_str().unwrap()]);
        assert_eq!(code, 0, "{node}: fsck.vfat: {text}");
        let c = piforge(&["check", img.to_str().unwrap()], &cache);
        assert!(
            c.status.success(),
            "{base} {node}: check: {}",
            String::from_utf8_lossy(&c.stdout)
        );
        // The card is small as built; the base grows it on first boot, and check says so.
        let text = String::from_utf8_lossy(&c.stdout);
        let room = text
            .lines()
            .find(|l| l.contains("room in the root filesystem for first boot"))
            .unwrap_or_else(|| panic!("{base} {node}: {text}"));
        assert!(room.starts_with("PASS"), "{base} {node}: {room}");
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "instance-ids are per node");
    disk_ids.sort();
    disk_ids.dedup();
    assert_eq!(disk_ids.len(), 3, "disk ids are per card");

    // Building again gives identical images.
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    // The three images and their bmap files, os_list.json, manifest.json and sbom.spdx.json.
    assert_eq!(sums.lines().filter(|l| l.ends_with(".img")).count(), 3);
    assert_eq!(sums.lines().filter(|l| l.ends_with(".img.bmap")).count(), 3);
    assert_eq!(sums.lines().count(), 9, "{sums}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        fs::read_to_string(out.join("SHA256SUMS")).unwrap(),
        sums,
        "{base}: a rebuild differs"
    );
    sums_check(&out);
}

#[test]
fn three_nodes_on_trixie() {
    build_and_check("trixie");
}

#[test]
fn three_nodes_on_ubuntu() {
    build_and_check("ubuntu");
}

#[test]
fn a_base_without_cloud_init_is_refused() {
    let (_tmp, cache, arts, spec, out) = lab(&fixture("bookworm.img"));
    let r = build(&spec, &out, &arts, &cache);
    assert_one_line_error(&r, "has no cloud-init");
    assert!(String::from_utf8_lossy(&r.stderr).contains("trixie"));
    assert!(!out.join("pi-cp-1.img").exists());
}

#[test]
fn spec_errors_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let spec = write_spec(tmp.path(), &fixture("trixie.img"));
    let text = fs::read_to_string(&spec)
        .unwrap()
        .replace("name: pi-w-2", "name: Pi_W_2")
        .replace("timezone:", "timezon:");
    fs::write(&spec, text).unwrap();
    let r = piforge(&["build", "--spec", spec.to_str().unwrap()], &cache);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("cluster.yaml:16:1") && err.contains("timezon"),
        "{err}"
    );
    assert!(
        err.contains("cluster.yaml:26:11") && err.contains("Pi_W_2"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn reimage_one_node_with_a_fresh_token() {
    let (tmp, cache, arts, spec, out) = lab(&fixture("trixie.img"));
    let w1_build = |token_args: &[&str]| {
        let mut args = vec!["--node", "pi-w-1"];
        args.extend_from_slice(token_args);
        build_with(&spec, &out, &arts, &cache, &args)
    };
    let kubeadm_yaml = || {
        let img = out.join("pi-w-1.img");
        let (_, root) = offsets(&img, &cache);
        debugfs(&img, root, "cat /etc/piforge/kubeadm.yaml")
    };
    let fresh = "abcdef.0123456789abcdef";
    let r = w1_build(&["--token", fresh]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("kubectl delete node pi-w-1"), "{stdout}");
    assert!(!stdout.contains(fresh), "the token was printed");
    assert!(out.join("pi-w-1.img").exists() && !out.join("pi-cp-1.img").exists());
    assert!(kubeadm_yaml().contains(fresh));
    let r = piforge(
        &["build", "--spec", spec.to_str().unwrap(), "--node", "nope"],
        &cache,
    );
    assert_one_line_error(&r, "nope");
    let r = piforge(
        &[
            "build",
            "--spec",
            spec.to_str().unwrap(),
            "--token",
            "short",
        ],
        &cache,
    );
    assert_one_line_error(&r, "--token");

    // Issue 12 item 14: a --token argument is visible to every local user in ps; --token-file
    // FILE (its first line) or - (standard input) keeps it out of the process list.
    let from_file = "qwerty.0123456789qwerty";
    let token_file = tmp.path().join("token.txt");
    fs::write(&token_file, format!("  {from_file}  \nnot this line\n")).unwrap();
    let tf = token_file.to_str().unwrap();
    let r = w1_build(&["--token-file", tf]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(kubeadm_yaml().contains(from_file));
    let from_stdin = "zxcvbn.0123456789zxcvbn";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(["build", "--spec", spec.to_str().unwrap(), "--out"])
        .arg(&out)
        .arg("--artifacts")
        .arg(&arts)
        .args(["--allow-unpinned", "--node", "pi-w-1", "--token-file", "-"])
        .env("PIFORGE_CACHE", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{from_stdin}").unwrap();
    }
    let r = child.wait_with_output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(kubeadm_yaml().contains(from_stdin));
    fs::write(&token_file, "\n").unwrap();
    let r = w1_build(&["--token-file", tf]);
    assert_one_line_error(&r, "holds no token on its first line");
}

#[test]
fn image_from_a_url_is_downloaded_verified_and_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = artifacts(tmp.path());
    let served = tmp.path().join("www");
    fs::create_dir_all(&served).unwrap();
    fs::copy(
        fixture("trixie.img.xz"),
        served.join("raspios-trixie.img.xz"),
    )
    .unwrap();
    let server = start_mirror(&served);
    let url = format!("{}/raspios-trixie.img.xz", server.url);
    let digest = sha256(&served.join("raspios-trixie.img.xz"));
    let spec = write_spec(tmp.path(), Path::new("PLACEHOLDER"));
    let text = fs::read_to_string(&spec).unwrap();
    let with_url = text.replace(
        "  source: PLACEHOLDER\n",
        &format!("  source: {url}\n  sha256: \"{digest}\"\n"),
    );
    fs::write(&spec, &with_url).unwrap();
    let out = tmp.path().join("dist");
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("pi-w-2.img").exists());
    // A wrong digest is refused, naming both.
    fs::write(&spec, with_url.replace(&digest, &"1".repeat(64))).unwrap();
    let r = build(
        &spec,
        &tmp.path().join("dist2"),
        &arts,
        &tmp.path().join("cache2"),
    );
    assert_one_line_error(&r, &"1".repeat(64));
    assert!(String::from_utf8_lossy(&r.stderr).contains(&digest));
    // The cache answers a rebuild without the server.
    fs::write(&spec, &with_url).unwrap();
    drop(server);
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// The files under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(d: &Path, root: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(&p, root, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

#[test]
fn dry_run_prints_every_layer_and_writes_nothing() {
    let (tmp, cache, arts, spec, out) = lab(&fixture("trixie.img"));
    let before = tree(tmp.path());
    let r = build_with(&spec, &out, &arts, &cache, &["--dry-run"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    for heading in [
        "== common layer (every node)",
        "== role layer: init-control-plane",
        "== role layer: worker",
        "== node layer: pi-cp-1 (init-control-plane, 192.168.50.10/24)",
        "== node layer: pi-w-1 (worker, 192.168.50.11/24)",
        "== node layer: pi-w-2 (worker, dhcp)",
    ] {
        assert!(stdout.contains(heading), "{heading} missing:\n{stdout}");
    }
    // The payload in the common layer, the CA in the control plane's role layer only, the
    // kubeadm configuration (0600), the seed and a disk id in every node layer.
    let section = |h: &str| {
        let i = stdout.find(h).unwrap();
        let rest = &stdout[i + h.len()..];
        rest[..rest.find("\n==").unwrap_or(rest.len())].to_string()
    };
    assert!(section("== common layer").contains("root  write    /usr/local/bin/kubeadm"));
    assert!(section("== role layer: init-control-plane")
        .contains("root  write    /etc/kubernetes/pki/ca.key"));
    assert!(!section("== role layer: worker").contains("/etc/kubernetes/pki/"));
    assert!(section("== role layer: worker").contains("/etc/site.conf"));
    for node in ["pi-cp-1", "pi-w-1", "pi-w-2"] {
        let s = section(&format!("== node layer: {node}"));
        assert!(
            s.contains("root  write    /etc/piforge/kubeadm.yaml"),
            "{s}"
        );
        assert!(s.contains("0600 0:0"), "{s}");
        for f in ["/user-data", "/meta-data", "/network-config"] {
            assert!(s.contains(&format!("boot  write    {f}")), "{s}");
        }
        assert!(s.contains("disk  id"), "{s}");
    }
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains("secrets would be created"), "{stderr}");
    // Nothing was written beside the spec: no secrets, no lock, no output directory.
    let mut after = tree(tmp.path());
    after.retain(|p| !p.starts_with("cache"));
    let mut before = before;
    before.retain(|p| !p.starts_with("cache"));
    assert_eq!(before, after);
    // No secret reaches the terminal.
    assert!(!stdout.contains("BEGIN") && !stderr.contains("BEGIN"));

    // With secrets in place (after a real build), the dry run lists the same layers and a
    // later build still gives the images the first one did.
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let r = piforge(
        &[
            "build",
            "--spec",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--artifacts",
            arts.to_str().unwrap(),
            "--dry-run",
        ],
        &cache,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!String::from_utf8_lossy(&r.stderr).contains("would be created"));
    assert_eq!(fs::read_to_string(out.join("SHA256SUMS")).unwrap(), sums);
}

/// Issue 15 items 2 and 5: what the spec and the local files reveal (a missing image, an
/// unknown time zone, the template's placeholder key) is reported at once, each at its
/// file:line:col, before anything is written: no secrets, lock, output or cache entry.
#[test]
fn every_spec_problem_is_reported_together_before_any_side_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = artifacts(tmp.path());
    let spec = write_spec(tmp.path(), &tmp.path().join("missing.img.xz"));
    let text = fs::read_to_string(&spec)
        .unwrap()
        .replace("Europe/Lisbon", "Europe/Lisboa")
        .replace(
            KEY,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxREPLACExWITHxYOURxOWNxPUBLICKEY you@laptop",
        );
    fs::write(&spec, text).unwrap();
    let out = tmp.path().join("dist");
    let r = build(&spec, &out, &arts, &cache);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    let at = |line: usize, col: usize| format!("{}:{line}:{col}: ", spec.display());
    for (pos, needle) in [
        (at(3, 11), "image.source: "),
        (at(15, 23), "the template's placeholder key"),
        (at(16, 11), "did you mean Europe/Lisbon?"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(&pos) && l.contains(needle)),
            "{pos}{needle}: {err}"
        );
    }
    assert!(err.contains("missing.img.xz: no such file"), "{err}");
    for written in ["secrets", "piforge.lock", "dist", "cache"] {
        assert!(
            !tmp.path().join(written).exists(),
            "{written} was written: {err}"
        );
    }
}

#[test]
fn base_and_artifact_problems_are_found_before_any_secret_is_written() {
    // A base without cloud-init.
    let (tmp, cache, arts, spec, out) = lab(&fixture("bookworm.img"));
    let nothing_written = || {
        for written in ["secrets", "piforge.lock"] {
            assert!(!tmp.path().join(written).exists(), "{written} was written");
        }
    };
    let r = build(&spec, &out, &arts, &cache);
    assert_one_line_error(&r, "has no cloud-init");
    nothing_written();
    // An offline directory that lacks an artifact.
    let spec = write_spec(tmp.path(), &fixture("trixie.img"));
    fs::remove_file(arts.join("kubeadm")).unwrap();
    let r = build(&spec, &out, &arts, &cache);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("kubeadm"));
    nothing_written();
    assert!(!out.exists());
}

#[test]
fn reimaging_the_init_node_joins_or_is_refused() {
    let (tmp, cache, arts, spec, out) = lab(&fixture("trixie.img"));
    let node_build = |extra: &[&str]| {
        let mut args = vec!["--node", "pi-cp-1"];
        args.extend_from_slice(extra);
        build_with(&spec, &out, &arts, &cache, &args)
    };
    // The first build records the init node (0600, beside the secrets).
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let state = tmp.path().join("secrets/cluster-state.json");
    let text = fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"init_node\": \"pi-cp-1\""), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (_, root) = offsets(&out.join("pi-cp-1.img"), &cache);
    let cfg = debugfs(
        &out.join("pi-cp-1.img"),
        root,
        "cat /etc/piforge/kubeadm.yaml",
    );
    assert!(cfg.contains("kind: InitConfiguration"), "{cfg}");

    // Rebuilding the only control plane alone would start a second cluster: refused, and
    // the card from the first build is left as it was.
    let before = sha256(&out.join("pi-cp-1.img"));
    let r = node_build(&[]);
    assert_one_line_error(&r, "--new-cluster");
    assert_eq!(sha256(&out.join("pi-cp-1.img")), before);
    // Asked for, it inits again.
    let r = node_build(&["--new-cluster"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let cfg = debugfs(
        &out.join("pi-cp-1.img"),
        root,
        "cat /etc/piforge/kubeadm.yaml",
    );
    assert!(cfg.contains("kind: InitConfiguration"), "{cfg}");

    // With a second control plane in the spec, the reimaged init node joins it as a control
    // plane, with the shared keys in place.
    let text = fs::read_to_string(&spec).unwrap().replace(
        "  - name: pi-w-1\n",
        "  - name: pi-cp-2\n    role: control-plane\n    address: 192.168.50.12/24\n  - name: pi-w-1\n",
    );
    fs::write(&spec, text).unwrap();
    let r = node_build(&[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let img = out.join("pi-cp-1.img");
    let cfg = debugfs(&img, root, "cat /etc/piforge/kubeadm.yaml");
    assert!(cfg.contains("kind: JoinConfiguration"), "{cfg}");
    assert!(!cfg.contains("kind: InitConfiguration"), "{cfg}");
    assert!(cfg.contains("controlPlane:"), "{cfg}");
    for f in ["ca.key", "sa.key", "front-proxy-ca.key", "etcd/ca.key"] {
        let stat = debugfs(&img, root, &format!("stat /etc/kubernetes/pki/{f}"));
        assert!(stat.contains("Mode:  0600"), "{f}: {stat}");
    }
    // It is a reimage (the cluster had it): the card names whom it replaces and which API
    // servers to ask (the endpoint, here its own address, then pi-cp-2), so its first boot
    // removes the old etcd member and Node object before joining.
    let rejoin = debugfs(&img, root, "cat /etc/piforge/rejoin");
    for line in [
        "node=pi-cp-1",
        "address=192.168.50.10",
        "cluster=testlab",
        &format!("version=v{K8S}"),
        "endpoint=192.168.50.10:6443",
        "servers=192.168.50.10:6443 192.168.50.12:6443",
    ] {
        assert!(rejoin.lines().any(|l| l == line), "{line}: {rejoin}");
    }
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("kubectl delete node pi-cp-1"), "{stdout}");
    assert!(
        stdout.contains("member remove <the ID of pi-cp-1"),
        "{stdout}"
    );
    // The recorded init node is unchanged by a reimage.
    assert!(fs::read_to_string(&state)
        .unwrap()
        .contains("\"init_node\": \"pi-cp-1\""));
    // pi-cp-2 is new to the cluster: no rejoin file, nothing to run first; it is recorded,
    // so building it alone again is a reimage.
    let r = build_with(&spec, &out, &arts, &cache, &["--node", "pi-cp-2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let img2 = out.join("pi-cp-2.img");
    let stat = debugfs(&img2, root, "stat /etc/piforge/rejoin");
    assert!(!stat.contains("Mode:"), "{stat}");
    assert!(!String::from_utf8_lossy(&r.stdout).contains("kubectl delete node"));
    let text = fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"pi-cp-2\""), "{text}");
    let r = build_with(&spec, &out, &arts, &cache, &["--node", "pi-cp-2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(debugfs(&img2, root, "cat /etc/piforge/rejoin").contains("node=pi-cp-2\n"));
}

/// The instance-id in a built card's meta-data.
fn built_instance_id(img: &Path, cache: &Path) -> String {
    let (boot, _) = offsets(img, cache);
    let md = run(
        "mtype",
        &["-i", &format!("{}@@{boot}", img.display()), "::meta-data"],
    );
    md.lines()
        .find_map(|l| l.strip_prefix("instance-id: "))
        .unwrap_or_else(|| panic!("{md}"))
        .to_string()
}

/// Issue 16 item 2: a reimage with a new token gets a new instance-id (cloud-init runs
/// again); the output directory and which nodes are built with it do not change it.
#[test]
fn instance_id_follows_the_token_not_the_output_or_the_build_order() {
    let (tmp, cache, arts, spec, _) = lab(&fixture("trixie.img"));
    let a = tmp.path().join("dist-a");
    let r = build(&spec, &a, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let full = built_instance_id(&a.join("pi-w-1.img"), &cache);
    let node_build = |out: &Path, extra: &[&str]| {
        let mut args = vec!["--node", "pi-w-1"];
        args.extend_from_slice(extra);
        let r = build_with(&spec, out, &arts, &cache, &args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        built_instance_id(&out.join("pi-w-1.img"), &cache)
    };
    // Alone, into another directory: the same card, the same id.
    assert_eq!(node_build(&tmp.path().join("dist-b"), &[]), full);
    // A fresh token: a new instance.
    let fresh = node_build(
        &tmp.path().join("dist-c"),
        &["--token", "abcdef.0123456789abcdef"],
    );
    assert_ne!(fresh, full);
    // Another cluster (new secrets: another CA and token) with the same node names: another id.
    let other = tempfile::tempdir().unwrap();
    let spec2 = write_spec(other.path(), &fixture("trixie.img"));
    let r = build(&spec2, &other.path().join("dist"), &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_ne!(
        built_instance_id(&other.path().join("dist/pi-w-1.img"), &cache),
        full
    );
}

/// Issue 12 items 9 and 14, through real signals to a real build:
/// - a second build into the same `--out` fails at once with one sentence naming the first
///   (they raced on `.work` before: the output directory is now locked, `OUT/.piforge.lock`);
/// - what a build killed with -9 left in OUT (its staging directory, a temporary image) is
///   removed by the next build, under the lock;
/// - SIGTERM (as Ctrl-C) after the first node image was committed runs the same cleanup as a
///   failure: no node image, work directory or temporary file stays in OUT, and no temporary
///   file or half key pair in the secrets directory.
#[test]
fn a_second_build_into_one_out_is_refused_and_an_interrupted_build_leaves_nothing() {
    let (tmp, cache, arts, spec, _) = lab(&fixture("trixie.img"));
    // 96 MiB that is not zeros (so every copy of it costs time): slow enough to catch the
    // build between its first and its last node image.
    let big: Vec<u8> = (0..96u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    fs::create_dir_all(tmp.path().join("overlays/site/opt")).unwrap();
    fs::write(tmp.path().join("overlays/site/opt/big.bin"), big).unwrap();
    let out = tmp.path().join("dist");
    fs::create_dir_all(out.join(".piforge-staging.dead12/.roles")).unwrap();
    fs::write(
        out.join(".piforge-staging.dead12/.roles/init-control-plane.img"),
        "ca.key inside",
    )
    .unwrap();
    let stale = out.join(".pi-w-1.img.999999999.Zx8Yw7Vu6Ts5.piforge-tmp");
    fs::write(&stale, "token inside").unwrap();

    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(["build", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--artifacts")
        .arg(&arts)
        .arg("--allow-unpinned")
        .env("PIFORGE_CACHE", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    // Node images are written into the build's staging directory, swapped into OUT at the end.
    let staged = |name: &str| {
        fs::read_dir(&out).unwrap().flatten().any(|e| {
            let dir = e.file_name().to_string_lossy().into_owned();
            dir.starts_with(".piforge-staging.")
                && dir != ".piforge-staging.dead12"
                && e.path().join(name).exists()
        })
    };
    while !staged("pi-cp-1.img") {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the build ended before its first node image was seen"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no node image after 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    run("kill", &["-STOP", &pid]);
    assert!(
        !staged("pi-w-2.img"),
        "the build was too fast to interrupt; make big.bin bigger"
    );
    assert_eq!(
        fs::read_to_string(out.join(".piforge.lock"))
            .unwrap()
            .trim(),
        pid
    );
    assert!(
        !out.join(".piforge-staging.dead12").exists(),
        "a dead build's work directory stayed"
    );
    assert!(!stale.exists(), "a dead build's temporary image stayed");

    let second = build(&spec, &out, &arts, &cache);
    assert_one_line_error(
        &second,
        &format!(
            "another piforge build (process {pid}) is writing into {}; wait for it to finish",
            out.display()
        ),
    );

    run("kill", &["-TERM", &pid]);
    run("kill", &["-CONT", &pid]);
    let done = first.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        [".piforge.lock"],
        "an interrupted build left these in OUT"
    );
    for p in tree(&tmp.path().join("secrets")) {
        assert!(
            !p.contains("piforge-tmp") && !p.contains(".pair."),
            "left in secrets/: {p}"
        );
    }

    // The lock went with the process: the next build runs and writes every image.
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for n in ["pi-cp-1", "pi-w-1", "pi-w-2"] {
        assert!(out.join(format!("{n}.img")).exists());
    }
}

/// Entries of `dir` whose names start with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// `build --spec SPEC --out OUT --artifacts ARTS --allow-unpinned EXTRA...`, as arguments.
fn build_args(spec: &Path, out: &Path, arts: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--spec"].map(String::from).to_vec();
    args.push(spec.display().to_string());
    args.push("--out".into());
    args.push(out.display().to_string());
    args.push("--artifacts".into());
    args.push(arts.display().to_string());
    args.push("--allow-unpinned".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts piforge with `args`, waits until `ready()`, stops the process, asks `during()`
/// whether it is still in the phase under test, sends `signal` and lets it go on. Returns
/// that answer and how the process ended.
fn interrupt(
    args: &[String],
    cache: &Path,
    signal: &str,
    ready: impl Fn() -> bool,
    during: impl Fn() -> bool,
) -> (bool, std::process::Output) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(args)
        .env("PIFORGE_CACHE", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !ready() {
        if child.try_wait().unwrap().is_some() {
            // Ended before the phase was seen: not in it.
            return (false, child.wait_with_output().unwrap());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready after 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    run("kill", &["-STOP", &pid]);
    let in_phase = during();
    run("kill", &[signal, &pid]);
    run("kill", &["-CONT", &pid]);
    (in_phase, child.wait_with_output().unwrap())
}

/// SIGTERM while an xz input is decoded into an empty cache: the partly decoded image
/// (`<cache>/images/.partial-*`, up to the image's size) goes with the process, not a minute
/// later with the next run that decodes.
#[test]
fn sigterm_while_decompressing_leaves_no_partial_image_in_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    // Eight fixture images back to back (xz streams concatenate): ~1 GB decoded, sparse, a few
    // seconds of decoding to land in.
    let big = tmp.path().join("big.img.xz");
    fs::write(&big, fs::read(fixture("trixie.img.xz")).unwrap().repeat(8)).unwrap();
    let spec = write_spec(tmp.path(), &big);
    let arts = artifacts(tmp.path());
    for attempt in 0..3 {
        let cache = tmp.path().join(format!("cache-{attempt}"));
        let images = cache.join("images");
        let partials = || named(&images, ".partial-");
        let named_images = || {
            named(&images, "")
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "img"))
                .count()
        };
        let (decoding, r) = interrupt(
            &build_args(&spec, &tmp.path().join("dist"), &arts, &[]),
            &cache,
            "-TERM",
            || !partials().is_empty(),
            // Decoding still: its temporary file there, no image named yet.
            || !partials().is_empty() && named_images() == 0,
        );
        if !decoding {
            // The signal would have landed after the phase: again, with a fresh cache.
            continue;
        }
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(130), "{err}");
        assert!(err.contains("interrupted"), "{err}");
        assert_eq!(partials(), Vec::<PathBuf>::new(), "left in the cache");
        return;
    }
    panic!("the decoding was never caught in 3 attempts; make big.img.xz bigger");
}

/// SIGINT (Ctrl-C) while `build --verify` rebuilds: its rebuild directory
/// (`dist/.piforge-verify.*`) goes with the process.
#[test]
fn sigint_during_verify_leaves_no_rebuild_directory() {
    let (_tmp, cache, arts, spec, out) = lab(&fixture("trixie.img"));
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let sums = out.join("SHA256SUMS");
    let verifying = || named(&out, ".piforge-verify.");
    // The rebuild is under way once its own staging directory is there.
    let rebuilding = || {
        verifying()
            .iter()
            .any(|d| !named(&d.join("dist"), ".piforge-staging.").is_empty())
    };
    for _ in 0..3 {
        let (during, r) = interrupt(
            &build_args(&spec, &out, &arts, &["--verify", sums.to_str().unwrap()]),
            &cache,
            "-INT",
            rebuilding,
            rebuilding,
        );
        if !during {
            assert!(verifying().is_empty());
            continue;
        }
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(130), "{err}");
        assert_eq!(
            verifying(),
            Vec::<PathBuf>::new(),
            "left in {}",
            out.display()
        );
        // The outputs the verify compared with are as they were.
        sums_check(&out);
        return;
    }
    panic!("the rebuild was never caught in 3 attempts");
}

/// `image.pi5_4k_pages: true` in cluster.yaml: Raspberry Pi OS gets `kernel=kernel8.img` in
/// its config.txt (in piforge's `[all]` block); Ubuntu, whose config.txt boots its own
/// `vmlinuz`, is refused at the key before anything is written.
#[test]
fn pi5_4k_pages_from_the_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = artifacts(tmp.path());
    let out = tmp.path().join("dist");
    for base in ["trixie", "ubuntu"] {
        let spec = write_spec(tmp.path(), &fixture(&format!("{base}.img")));
        let text = fs::read_to_string(&spec).unwrap();
        let text = text.replacen("image:\n", "image:\n  pi5_4k_pages: true\n", 1);
        fs::write(&spec, text).unwrap();
        let r = build_with(&spec, &out, &arts, &cache, &["--node", "pi-w-2"]);
        if base == "ubuntu" {
            assert_one_line_error(&r, "cluster.yaml:3:17: image.pi5_4k_pages: this base boots a kernel of its own (vmlinuz)");
            assert!(!out.join("pi-w-2.img").exists());
            assert!(!tmp.path().join("secrets").exists(), "secrets were written");
            continue;
        }
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let img = out.join("pi-w-2.img");
        let (boot, _) = offsets(&img, &cache);
        let config = run(
            "mtype",
            &["-i", &format!("{}@@{boot}", img.display()), "::config.txt"],
        );
        // After the last [all] line, so the [pi5] section of the base does not swallow it.
        let all = config.rfind("\n[all]\n").unwrap();
        assert!(config[all..].contains("\nkernel=kernel8.img\n"), "{config}");
        fs::remove_dir_all(&out).unwrap();
        fs::remove_dir_all(tmp.path().join("secrets")).unwrap();
    }
}

/// Issue 12 item 7 through `build`: the base's root filesystem is checked before the common
/// layer is written into its copy (on the base, beside the copy); a damaged one (a stale block
/// bitmap) is refused with e2fsck's first complaint naming the base, and nothing appears in
/// dist/. A base that passed once is remembered in the cache, and damaged afterwards in place
/// it is checked again and refused.
#[test]
fn a_damaged_base_is_refused_by_build() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = artifacts(tmp.path());
    let img = tmp.path().join("damaged.img");
    fs::copy(fixture("trixie.img"), &img).unwrap();
    // Settled (a base changed in the last 2 s is not remembered), then built once: it passes.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let spec = write_spec(tmp.path(), &img);
    let clean = tmp.path().join("clean");
    let r = build(&spec, &clean, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let remembered = fs::read_dir(cache.join("checked")).map_or(0, |d| d.count());
    assert_eq!(remembered, 1, "the base's check is remembered");
    let (_, root) = offsets(&img, &cache);
    let blocks = debugfs(&img, root, "blocks /");
    let block = blocks.split_whitespace().next().unwrap().to_string();
    let dev = format!("{}?offset={root}", img.display());
    run("debugfs", &["-w", "-R", &format!("freeb {block}"), &dev]);
    let (code, fsck) = e2fsck(&img, root);
    assert_eq!(code, 4, "the image should now be damaged: {fsck}");
    let out = tmp.path().join("dist");
    let r = build(&spec, &out, &arts, &cache);
    assert_one_line_error(&r, "is damaged (e2fsck -fn: Block bitmap differences:");
    // The check ran on the base itself (beside its copy), so the message names the input.
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains(&format!(
            "the root filesystem of {} is damaged",
            img.display()
        )),
        "{stderr}"
    );
    assert!(!out.join("pi-cp-1.img").exists());
    // Nothing of the build is left in the output directory (no staging directory, no copy).
    let left: Vec<String> = fs::read_dir(&out)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".piforge.lock")
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in dist/: {left:?}");
}

/// `timezone:` must be a zone the base's own tzdata has (cloud-init links /etc/localtime to
/// it): a zone in the tz database but not in the base's /usr/share/zoneinfo is a spec error at
/// its line, before any secret, lock entry or image; one the base has builds.
#[test]
fn a_time_zone_the_base_lacks_is_refused_at_its_line_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = artifacts(tmp.path());
    // The trixie fixture with a trimmed tzdata: Europe/Lisbon and Etc/UTC only.
    let ov = tmp.path().join("tz-overlay");
    fs::create_dir_all(ov.join("usr/share/zoneinfo/Europe")).unwrap();
    fs::create_dir_all(ov.join("usr/share/zoneinfo/Etc")).unwrap();
    fs::write(ov.join("usr/share/zoneinfo/Europe/Lisbon"), "TZif2").unwrap();
    fs::write(ov.join("usr/share/zoneinfo/Etc/UTC"), "TZif2").unwrap();
    let base = tmp.path().join("base.img");
    trixie_with_overlay(&ov, &base, &cache);
    let spec = write_spec(tmp.path(), &base);
    let text = fs::read_to_string(&spec).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("timezone:"))
        .unwrap()
        + 1;
    fs::write(
        &spec,
        text.replace("timezone: Europe/Lisbon", "timezone: America/Nuuk"),
    )
    .unwrap();
    let out = tmp.path().join("dist");
    let r = build(&spec, &out, &arts, &cache);
    assert_one_line_error(
        &r,
        &format!("cluster.yaml:{line}:11: timezone: `America/Nuuk` is not in the base image's /usr/share/zoneinfo/"),
    );
    assert!(!tmp.path().join("secrets").exists(), "secrets were written");
    assert!(!tmp.path().join("piforge.lock").exists());
    assert!(!out.exists());
    // A zone the base has: built, and the seed sets it.
    fs::write(&spec, text).unwrap();
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let img = out.join("pi-w-1.img");
    let (boot, _) = offsets(&img, &cache);
    assert!(mtype(&img, boot, "user-data").contains("timezone: Europe/Lisbon"));
}

/// A raw base with no expected digest is hashed on a thread of its own beside the build; one
/// with its digest beside it (`base.img.sha256`) is hashed and checked before anything else.
/// Both record the base's SHA-256 (sha256sum's, holes included) in the manifest and give the
/// same node images (the digest is part of each node's instance-id, so the background digest
/// must be in before the plan); a wrong digest beside it stops the build with nothing in dist/.
#[test]
fn a_raw_base_is_hashed_beside_the_build_and_checked_first_when_a_digest_is_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = artifacts(tmp.path());
    let img = tmp.path().join("base.img");
    run(
        "cp",
        &[
            "--sparse=always",
            fixture("trixie.img").to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    let digest = sha256(&img);
    let spec = write_spec(tmp.path(), &img);
    let manifest_digest = |out: &Path| -> String {
        let m: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
        m["base_image"]["sha256"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let node_sums = |out: &Path| -> Vec<String> {
        fs::read_to_string(out.join("SHA256SUMS"))
            .unwrap()
            .lines()
            .filter(|l| l.ends_with(".img"))
            .map(str::to_string)
            .collect()
    };

    let beside = tmp.path().join("dist-beside");
    let r = build(&spec, &beside, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(manifest_digest(&beside), digest);

    fs::write(
        tmp.path().join("base.img.sha256"),
        format!("{digest}  base.img\n"),
    )
    .unwrap();
    let first = tmp.path().join("dist-first");
    let r = build(&spec, &first, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(manifest_digest(&first), digest);
    let sums = node_sums(&first);
    assert_eq!(sums.len(), 3, "{sums:?}");
    assert_eq!(node_sums(&beside), sums);

    let wrong = "0".repeat(64);
    fs::write(
        tmp.path().join("base.img.sha256"),
        format!("{wrong}  base.img\n"),
    )
    .unwrap();
    let refused = tmp.path().join("dist-refused");
    let r = build(&spec, &refused, &arts, &cache);
    assert_one_line_error(&r, &format!("has SHA-256 {digest}, but"));
    let left: Vec<String> = fs::read_dir(&refused)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in dist/: {left:?}");
}
