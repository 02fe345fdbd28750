//! Container images for offline first boot, against a registry served by the test on
//! 127.0.0.1 (tests/common/registry.rs; ghcr.io's Bearer token flow included) and OCI layouts
//! in `--artifacts DIR`: `piforge fetch` pulls and pins them, refuses a changed digest; a build
//! puts each role's images into its cards as OCI archives (listed with debugfs, their tar
//! content checked), and stays byte-reproducible.

mod common;

use common::registry::{digest, tiny_image, Registry, TestImage};
use common::*;
use piforge::artifacts::Catalog;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const K8S: &str = "1.34.11";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

/// A tiny image per catalog image of the release, each with its own file.
fn images(seed: &str) -> Vec<(String, TestImage)> {
    let release = Catalog::builtin().unwrap().release(K8S).unwrap();
    release
        .images()
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let r = i.image.to_string();
            // kube-vip's tag names one manifest (no index), as some registries serve.
            let index = !r.contains("kube-vip");
            (
                r.clone(),
                tiny_image(
                    &format!("bin{n}"),
                    format!("{seed} {r}\n").as_bytes(),
                    index,
                ),
            )
        })
        .collect()
}

/// Serves the release files (the stand-ins, with checksum files) from `reg`.
fn serve_files(reg: &Registry, tmp: &Path) {
    let arts = stand_in_artifacts(&tmp.join("files"), K8S);
    let release = Catalog::builtin().unwrap().release(K8S).unwrap();
    for spec in release.artifacts() {
        let data = fs::read(arts.join(&spec.file_name)).unwrap();
        if let Some(cu) = &spec.checksum_url {
            let d = digest(&data).trim_start_matches("sha256:").to_string();
            let text = if spec.name == "runc" {
                format!("{}  runc.amd64\n{d}  {}\n", "0".repeat(64), spec.file_name)
            } else {
                format!("{d}  {}\n", spec.file_name)
            };
            reg.put_file(cu, text.into_bytes());
        }
        reg.put_file(&spec.url, data);
    }
}

fn fetch(reg: &Registry, lock: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    let url = reg.url();
    let mut args = vec![
        "fetch",
        "--kubernetes",
        K8S,
        "--mirror",
        &url,
        "--lock",
        lock.to_str().unwrap(),
        "--allow-unpinned",
    ];
    args.extend_from_slice(extra);
    piforge(&args, cache)
}

#[test]
fn fetch_pulls_pins_reuses_and_refuses_a_changed_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    serve_files(&reg, tmp.path());
    let imgs = images("one");
    for (r, i) in &imgs {
        reg.put_image(r, i.clone());
    }
    let lock = tmp.path().join("piforge.lock");
    let cache = tmp.path().join("cache");
    let r = fetch(&reg, &lock, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.contains(&format!("{} images verified", imgs.len())),
        "{out}"
    );
    // Every image is pinned: what its tag resolved to, and its arm64 manifest.
    let text = fs::read_to_string(&lock).unwrap();
    for (r, i) in &imgs {
        assert!(
            text.contains(&format!(
                "reference = \"{r}\"\nindex = \"{}\"",
                i.top_digest()
            )),
            "{r}\n{text}"
        );
    }
    // ghcr.io's token flow was used: a 401, the token, the retry.
    let log = reg.log();
    assert!(
        log.iter().any(|p| p.starts_with("/ghcr.io/token?")),
        "{log:?}"
    );
    // The blobs are in the content-addressed cache, verified.
    for (_, i) in &imgs {
        for (d, (_, bytes)) in &i.blobs {
            let p = cache
                .join("oci/blobs/sha256")
                .join(d.trim_start_matches("sha256:"));
            assert_eq!(fs::read(&p).unwrap(), *bytes, "{}", p.display());
        }
    }
    // A second fetch uses the cache: no registry request at all.
    let before = reg.log().iter().filter(|p| p.contains("/v2/")).count();
    let r = fetch(&reg, &lock, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        reg.log().iter().filter(|p| p.contains("/v2/")).count(),
        before
    );
    assert_eq!(fs::read_to_string(&lock).unwrap(), text);
    // Upstream moves a tag: a fresh cache must fetch it and is refused, in one sentence.
    let (moved, _) = &imgs[0];
    reg.put_image(moved, tiny_image("other", b"changed upstream\n", true));
    let fresh = tmp.path().join("cache2");
    let r = fetch(&reg, &lock, &fresh, &[]);
    assert_one_line_error(&r, moved);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains(&imgs[0].1.top_digest()) && err.contains("--update"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&lock).unwrap(),
        text,
        "the lock is unchanged"
    );
    // --update accepts the new digest.
    let r = fetch(&reg, &lock, &fresh, &["--update"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let updated = fs::read_to_string(&lock).unwrap();
    assert!(!updated.contains(&imgs[0].1.top_digest()), "{updated}");
    // A registry that serves a blob with other bytes than its digest is refused.
    let mut bad = tiny_image("bad", b"x\n", true);
    for (_, (_, bytes)) in bad.blobs.iter_mut() {
        if bytes.len() > 20 && bytes[0] == 0x1f {
            bytes[12] ^= 0xff;
        }
    }
    reg.put_image(&imgs[1].0, bad);
    let r = fetch(
        &reg,
        &tmp.path().join("other.lock"),
        &tmp.path().join("cache3"),
        &[],
    );
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("piforge: error: blob sha256:")
            && last.contains(&imgs[1].0)
            && last.contains("deleted"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn write_spec(dir: &Path, image: &Path) -> PathBuf {
    let spec = format!(
        "name: imglab
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
  pod_subnet: 10.244.0.0/16
  service_subnet: 10.96.0.0/12
  cni: flannel
network:
  interface: eth0
  gateway: 192.168.60.1
  dns: [192.168.60.1]
user: pi
ssh_authorized_keys: [\"{KEY}\"]
nodes:
  - name: cp
    role: control-plane
    address: 192.168.60.10/24
  - name: w
    role: worker
",
        image = image.display()
    );
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

/// OCI layouts of every image under `arts/images/`: directories, and one as an OCI archive.
fn write_layouts(arts: &Path, imgs: &[(String, TestImage)]) {
    for (n, (r, i)) in imgs.iter().enumerate() {
        let image = piforge::oci::ImageRef::parse(r).unwrap();
        let dir = arts.join("images").join(image.layout_name());
        i.write_layout(&dir, r, &image.reference);
        if n == 1 {
            // The same tree as a tar (an oci-archive).
            let tar = format!("{}.tar", dir.display());
            let st = Command::new("tar")
                .args(["-cf", &tar, "-C", dir.to_str().unwrap(), "."])
                .status()
                .unwrap();
            assert!(st.success());
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}

/// The image archives in a card and their sizes, by file name (debugfs's `ls -l`).
fn archive_sizes(img: &Path, cache: &Path) -> BTreeMap<String, u64> {
    let (_, root) = offsets(img, cache);
    debugfs(img, root, "ls -l /var/lib/piforge/images")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && f[f.len() - 1].ends_with(".tar"))
        .map(|f| (f[f.len() - 1].to_string(), f[f.len() - 4].parse().unwrap()))
        .collect()
}

/// The bytes of the image archives in a card, as `piforge` prints sizes.
fn archive_bytes(img: &Path, cache: &Path) -> String {
    piforge::size::human(archive_sizes(img, cache).values().sum())
}

fn ls_images(img: &Path, cache: &Path) -> Vec<String> {
    let (_, root) = offsets(img, cache);
    debugfs(img, root, "ls -l /var/lib/piforge/images")
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .filter(|n| n.ends_with(".tar"))
        .collect()
}

/// `out`'s manifest lists every image of `imgs` its cards carry, with the digest its layout's index.json
/// points at (which the test made: [`TestImage::top_digest`]), the roles whose cards carry it
/// and the size of its archive in those cards; the SBOM has each as an OCI package with that
/// digest and its purl, and SPDX's validator accepts it.
fn assert_manifest_and_sbom_list_the_images(
    out: &Path,
    imgs: &[(String, TestImage)],
    cache: &Path,
) {
    let m = read_json(&out.join("manifest.json"));
    let sbom = read_json(&out.join("sbom.spdx.json"));
    spdx_check(&out.join("sbom.spdx.json"));
    let listed = m["container_images"].as_array().unwrap();
    let (cp, w) = (
        archive_sizes(&out.join("cp.img"), cache),
        archive_sizes(&out.join("w.img"), cache),
    );
    // The control plane's cards carry every image of the build (kube-vip's only with a VIP).
    let carried: Vec<&(String, TestImage)> = imgs
        .iter()
        .filter(|(r, _)| {
            let archive = piforge::oci::ImageRef::parse(r)
                .unwrap()
                .archive_file_name();
            cp.contains_key(&archive)
        })
        .collect();
    assert_eq!(carried.len(), 9);
    assert_eq!(listed.len(), carried.len(), "{listed:?}");
    let refs: Vec<&str> = listed
        .iter()
        .map(|e| e["reference"].as_str().unwrap())
        .collect();
    let mut sorted = refs.clone();
    sorted.sort();
    assert_eq!(refs, sorted, "sorted by reference");
    for (r, i) in carried {
        let image = piforge::oci::ImageRef::parse(r).unwrap();
        let e = listed
            .iter()
            .find(|e| e["reference"] == r.as_str())
            .unwrap_or_else(|| panic!("{r} not in the manifest"));
        let name = format!("{}/{}", image.registry, image.repository);
        let digest = i.top_digest();
        let archive = image.archive_file_name();
        assert_eq!(e["name"], name.as_str());
        assert_eq!(e["tag"], image.reference.as_str());
        assert_eq!(e["digest"], digest.as_str(), "{r}");
        let url = format!(
            "https://{}/v2/{}/manifests/{digest}",
            image.registry, image.repository
        );
        assert_eq!(e["url"], url.as_str());
        assert_eq!(e["archive"], archive.as_str());
        assert_eq!(e["bytes"], cp[&archive], "{r}");
        let roles: Vec<&str> = e["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        if w.contains_key(&archive) {
            assert_eq!(roles, ["control-plane", "worker"], "{r}");
            assert_eq!(e["bytes"], w[&archive], "{r}");
        } else {
            assert_eq!(roles, ["control-plane"], "{r}");
        }
        let p = sbom_package(&sbom, &name, &image.reference);
        assert_eq!(p["primaryPackagePurpose"], "CONTAINER");
        assert_eq!(p["downloadLocation"], url.as_str());
        assert_eq!(p["packageFileName"], archive.as_str());
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(
            p["checksums"][0]["checksumValue"],
            digest.trim_start_matches("sha256:")
        );
        let last = image.repository.rsplit('/').next().unwrap();
        assert_eq!(
            p["externalRefs"][0]["referenceLocator"],
            format!(
                "pkg:oci/{last}@{digest}?repository_url={}%2F{}&tag={}",
                image.registry,
                image.repository.replace('/', "%2F"),
                image.reference
            )
            .as_str()
        );
    }
}

#[test]
fn artifacts_layouts_go_into_the_cards_offline_and_reproducibly() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("arts"), K8S);
    let imgs = images("layout");
    write_layouts(&arts, &imgs);
    let spec = write_spec(tmp.path(), &fixture("trixie.img"));
    let out = tmp.path().join("dist");
    // Dry run: the bytes each role's cards carry.
    let r = piforge(
        &[
            "build",
            spec.to_str().unwrap(),
            "--artifacts",
            arts.to_str().unwrap(),
            "--allow-unpinned",
            "--dry-run",
        ],
        &cache,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let dry = String::from_utf8_lossy(&r.stderr);
    assert!(
        dry.contains("images: init-control-plane: 9 in the card"),
        "{dry}"
    );
    assert!(dry.contains("images: worker: 5 in the card"), "{dry}");
    let plan = String::from_utf8_lossy(&r.stdout);
    assert!(
        plan.contains("/var/lib/piforge/images/registry.k8s.io_etcd_3.6.10-0.tar"),
        "{plan}"
    );
    assert!(!out.exists(), "a dry run writes nothing");

    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let summary = String::from_utf8_lossy(&r.stdout);
    assert!(
        summary.contains("images: init-control-plane: 9 in the card"),
        "{summary}"
    );
    let lock = fs::read_to_string(tmp.path().join("piforge.lock")).unwrap();
    assert_eq!(lock.matches("[[image]]").count(), 9, "{lock}");
    // The bytes each role adds, as the summary and the dry run report them: its cards'
    // archives.
    for (role, img) in [("init-control-plane", "cp.img"), ("worker", "w.img")] {
        let line = summary
            .lines()
            .find(|l| l.contains(&format!("images: {role}: ")))
            .unwrap_or_else(|| panic!("{summary}"));
        let bytes = archive_bytes(&out.join(img), &cache);
        assert!(
            line.ends_with(&format!(", {bytes} added to the root filesystem")),
            "{line} ({bytes} in {img})"
        );
        assert!(dry.contains(line.trim()), "{dry}\n{line}");
    }
    // No staging directory is left beside the outputs.
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with(".piforge-images")),
        "{left:?}"
    );

    let cp = out.join("cp.img");
    let w = out.join("w.img");
    let cp_list = ls_images(&cp, &cache);
    let w_list = ls_images(&w, &cache);
    assert_eq!(cp_list.len(), 9, "{cp_list:?}");
    let mut want_w: Vec<String> = [
        format!("registry.k8s.io_kube-proxy_v{K8S}.tar"),
        "registry.k8s.io_pause_3.10.1.tar".to_string(),
        "registry.k8s.io_coredns_coredns_v1.12.1.tar".to_string(),
        "ghcr.io_flannel-io_flannel_v0.28.4.tar".to_string(),
        "ghcr.io_flannel-io_flannel-cni-plugin_v1.7.1-flannel1.tar".to_string(),
    ]
    .to_vec();
    want_w.sort();
    let mut got_w = w_list.clone();
    got_w.sort();
    assert_eq!(got_w, want_w);
    assert!(cp_list
        .iter()
        .any(|n| n.starts_with("registry.k8s.io_kube-apiserver_")));
    assert!(
        !cp_list.iter().any(|n| n.contains("kube-vip")),
        "no VIP, no kube-vip"
    );
    for img in [&cp, &w] {
        let (_, root) = offsets(img, &cache);
        let (code, fsck) = e2fsck(img, root);
        assert_eq!(code, 0, "{fsck}");
        // The unit is enabled and ordered before kubelet and kubeadm.
        let unit = debugfs(
            img,
            root,
            "cat /usr/local/lib/systemd/system/piforge-images.service",
        );
        assert!(
            unit.contains("Before=kubelet.service piforge-kubeadm.service"),
            "{unit}"
        );
        let wants = debugfs(
            img,
            root,
            "stat /etc/systemd/system/multi-user.target.wants/piforge-images.service",
        );
        assert!(wants.contains("Type: symlink"), "{wants}");
        let c = piforge(&["check", img.to_str().unwrap()], &cache);
        let text = String::from_utf8_lossy(&c.stdout);
        assert!(
            text.contains("images: ") && text.contains("in card (offline)"),
            "{text}"
        );
    }
    // Each archive in the card is an OCI layout tar: its index names the image, every blob
    // hashes to its name, and the layer holds the image's file.
    let (_, root) = offsets(&w, &cache);
    let dump_dir = tmp.path().join("dump");
    fs::create_dir_all(&dump_dir).unwrap();
    for (r, i) in imgs
        .iter()
        .filter(|(r, _)| r.contains("pause") || r.contains("flannel-cni"))
    {
        let name = piforge::oci::ImageRef::parse(r)
            .unwrap()
            .archive_file_name();
        let dst = dump_dir.join(&name);
        debugfs(
            &w,
            root,
            &format!("dump /var/lib/piforge/images/{name} {}", dst.display()),
        );
        let x = dump_dir.join(format!("{name}.x"));
        fs::create_dir_all(&x).unwrap();
        run(
            "tar",
            &["-xf", dst.to_str().unwrap(), "-C", x.to_str().unwrap()],
        );
        let listing = run("tar", &["-tvf", dst.to_str().unwrap()]);
        assert!(
            listing
                .lines()
                .all(|l| l.contains("root/root") || l.contains("0/0")),
            "{listing}"
        );
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(x.join("index.json")).unwrap()).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"]["io.containerd.image.name"], r.as_str());
        assert_eq!(m["platform"]["architecture"], "arm64");
        for e in fs::read_dir(x.join("blobs/sha256")).unwrap() {
            let p = e.unwrap().path();
            let want = p.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(sha256(&p), want);
        }
        // The layer (the only gzip blob) holds the image's file.
        let layer = i
            .blobs
            .iter()
            .find(|(_, (m, _))| m.ends_with("tar+gzip"))
            .map(|(d, _)| d.clone())
            .unwrap();
        let lp = x
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:"));
        let content = run("tar", &["-xzOf", lp.to_str().unwrap(), &i.file.0]);
        assert_eq!(content.as_bytes(), &i.file.1[..]);
        // Pinned in the card's list with the digest the lock holds.
        let list = debugfs(&w, root, "cat /etc/piforge/images.list");
        assert!(
            list.contains(&format!("{name} {r} {}", i.top_digest())),
            "{list}"
        );
    }
    assert_manifest_and_sbom_list_the_images(&out, &imgs, &cache);
    // Building again gives identical cards, manifest and SBOM.
    let first = sha256(&cp);
    let first_w = sha256(&w);
    let first_meta = ["manifest.json", "sbom.spdx.json"].map(|f| sha256(&out.join(f)));
    fs::remove_dir_all(&out).unwrap();
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(sha256(&out.join("cp.img")), first);
    assert_eq!(sha256(&out.join("w.img")), first_w);
    assert_eq!(
        ["manifest.json", "sbom.spdx.json"].map(|f| sha256(&out.join(f))),
        first_meta
    );

    // A layout whose image differs from the pin is refused, naming the image, and no card
    // is written.
    let (r0, _) = &imgs[0];
    let image = piforge::oci::ImageRef::parse(r0).unwrap();
    let dir = arts.join("images").join(image.layout_name());
    fs::remove_dir_all(&dir).unwrap();
    tiny_image("x", b"tampered\n", true).write_layout(&dir, r0, &image.reference);
    let out2 = tmp.path().join("dist2");
    let r = build_with(&spec, &out2, &arts, &cache, &[]);
    assert_one_line_error(&r, r0);
    assert!(!out2.join("cp.img").exists());

    // Without etcd's layout the control plane's card lacks it: the build and check say the
    // node pulls it (the card is not offline), the worker's card is whole.
    let partial = stand_in_artifacts(&tmp.path().join("partial"), K8S);
    let without_etcd: Vec<(String, TestImage)> = images("layout")
        .into_iter()
        .filter(|(r, _)| !r.contains("/etcd:"))
        .collect();
    assert_eq!(without_etcd.len(), imgs.len() - 1);
    write_layouts(&partial, &without_etcd);
    let out3 = tmp.path().join("dist3");
    let r = build_with(&spec, &out3, &partial, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("will be pulled on first boot"));
    let summary = String::from_utf8_lossy(&r.stdout);
    assert!(
        summary.contains("images: init-control-plane: 8 in the card")
            && summary.contains("pulled at first boot (not in the cache or --artifacts DIR): registry.k8s.io/etcd:3.6.10-0"),
        "{summary}"
    );
    let c = piforge(&["check", out3.join("cp.img").to_str().unwrap()], &cache);
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(
        text.contains("images: 8 in card, 1 pulled at first boot")
            && text.contains("needs the network: registry.k8s.io/etcd:3.6.10-0"),
        "{text}"
    );
    let c = piforge(&["check", out3.join("w.img").to_str().unwrap()], &cache);
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(text.contains("images: 5 in card (offline)"), "{text}");
}

#[test]
fn the_import_script_imports_labels_once_and_records_its_time() {
    // The script against stand-in `ctr` (a shell function log) in a fake root.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("overlays/first-boot/usr/local/lib/piforge/import-images");
    let sc = Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(&script)
        .output()
        .expect("shellcheck");
    assert!(
        sc.status.success(),
        "{}",
        String::from_utf8_lossy(&sc.stdout)
    );
    fs::create_dir_all(root.join("etc/piforge")).unwrap();
    fs::create_dir_all(root.join("var/lib/piforge/images")).unwrap();
    fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    fs::write(
        root.join("etc/piforge/images.list"),
        "# x\na.tar registry.k8s.io/pause:3.10.1 sha256:1\nb.tar ghcr.io/x/y:v1 sha256:2\n",
    )
    .unwrap();
    for f in ["a.tar", "b.tar"] {
        fs::write(root.join("var/lib/piforge/images").join(f), "tar").unwrap();
    }
    let log = root.join("ctr.log");
    fs::write(
        root.join("usr/local/bin/ctr"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\n[ \"$3 $4\" = \"images ls\" ] && exit 0\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    run(
        "chmod",
        &["755", root.join("usr/local/bin/ctr").to_str().unwrap()],
    );
    let go = || {
        Command::new("sh")
            .arg(&script)
            .env("PIFORGE_ROOT", root)
            .output()
            .unwrap()
    };
    let r = go();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let calls = fs::read_to_string(&log).unwrap();
    let root_s = root.display().to_string();
    assert!(
        calls.contains(&format!(
            "-n k8s.io images import --platform linux/arm64 {root_s}/var/lib/piforge/images/a.tar"
        )),
        "{calls}"
    );
    assert!(
        calls.contains(
            "-n k8s.io images label registry.k8s.io/pause:3.10.1 io.cri-containerd.pinned=pinned"
        ),
        "{calls}"
    );
    assert!(
        calls.contains("-n k8s.io images label ghcr.io/x/y:v1 io.cri-containerd.pinned=pinned"),
        "{calls}"
    );
    let status = fs::read_to_string(root.join("var/lib/piforge/images-status")).unwrap();
    assert!(status.starts_with("ok: 2 images imported in "), "{status}");
    assert!(root.join("var/lib/piforge/images-imported").exists());
    assert!(
        !root.join("var/lib/piforge/images/a.tar").exists(),
        "imported archives are removed"
    );
    // A failing import is named in the status; the stamp is not written.
    fs::remove_file(root.join("var/lib/piforge/images-imported")).unwrap();
    fs::write(root.join("var/lib/piforge/images/a.tar"), "tar").unwrap();
    fs::write(
        root.join("usr/local/bin/ctr"),
        "#!/bin/sh\ncase \"$*\" in *import*a.tar*) echo broken >&2; exit 1;; esac\nexit 0\n",
    )
    .unwrap();
    let r = go();
    assert!(!r.status.success());
    let status = fs::read_to_string(root.join("var/lib/piforge/images-status")).unwrap();
    assert!(
        status.starts_with("failed: ") && status.contains("registry.k8s.io/pause:3.10.1"),
        "{status}"
    );
    assert!(!root.join("var/lib/piforge/images-imported").exists());
}
