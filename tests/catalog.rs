//! Versions the user chooses without waiting for a piforge release: `--catalog FILE` (a
//! catalog laid over the built-in one) and `kubernetes.versions` in cluster.yaml. An artifact
//! of a version piforge never pinned goes through the same path as any other: checked
//! against its upstream checksum file (or recorded with `--allow-unpinned`), pinned in the
//! lock, verified on every later use. Judged by the lock's contents, sha256sum of the files
//! and debugfs on the built image.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

use piforge::artifacts::Catalog;

const K8S: &str = "1.34.11";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

fn write_spec(dir: &Path, kubernetes: &str) -> PathBuf {
    let spec = format!(
        "name: vers
image:
  source: {image}
kubernetes:
{kubernetes}
network:
  gateway: 192.168.60.1
  dns: [192.168.60.1]
ssh_authorized_keys: [\"{KEY}\"]
nodes:
  - name: cp
    role: control-plane
    address: 192.168.60.10/24
",
        image = fixture("trixie.img").display()
    );
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

/// The lock's `[[artifact]]` entry for `url`: its sha256.
fn lock_digest(lock: &Path, url: &str) -> Option<String> {
    let text = fs::read_to_string(lock).ok()?;
    let i = text.find(&format!("url = \"{url}\""))?;
    let entry = &text[text[..i].rfind("[[artifact]]")?..];
    let line = entry.lines().find(|l| l.starts_with("sha256 = "))?;
    Some(
        line.trim_start_matches("sha256 = ")
            .trim_matches('"')
            .to_string(),
    )
}

#[test]
fn cluster_versions_go_through_the_lock_like_any_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    // The stand-in tarball under containerd 2.1.5's upstream name (the catalog's 1.34 has a
    // later 2.1.x): the name the overridden version expands to.
    let catalog_ctd = Catalog::builtin().unwrap().release(K8S).unwrap();
    let old = catalog_ctd
        .artifact("containerd")
        .unwrap()
        .file_name
        .clone();
    let new_name = "containerd-static-2.1.5-linux-arm64.tar.gz";
    assert_ne!(old, new_name);
    fs::rename(arts.join(&old), arts.join(new_name)).unwrap();
    let spec = write_spec(
        tmp.path(),
        "  version: \"1.34.11\"\n  versions:\n    containerd: 2.1.5\n",
    );
    let out = tmp.path().join("dist");
    let lock = tmp.path().join("piforge.lock");
    let url = "https://github.com/containerd/containerd/releases/download/v2.1.5/containerd-static-2.1.5-linux-arm64.tar.gz";
    let a = arts.to_str().unwrap();
    let s = spec.to_str().unwrap();
    let o = out.to_str().unwrap();

    // Without --allow-unpinned, a file no lock pins and no checksum file vouches for is refused.
    let r = piforge(&["build", s, "--out", o, "--artifacts", a], &cache);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("--allow-unpinned"), "{err}");
    assert!(!out.join("cp.img").exists());
    assert_eq!(lock_digest(&lock, url), None);

    // With it, its digest as found is recorded under the overridden version's URL.
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let want = sha256(&arts.join(new_name));
    assert_eq!(lock_digest(&lock, url).as_deref(), Some(want.as_str()));
    // The catalog's own containerd URL is not in the lock: the override replaced it.
    let catalog_url = &catalog_ctd.artifact("containerd").unwrap().url;
    assert_eq!(lock_digest(&lock, catalog_url), None);
    // The card carries the overridden containerd (the stand-in tarball's binary).
    let img = out.join("cp.img");
    let (_, root) = offsets(&img, &cache);
    let listing = debugfs(&img, root, "stat /usr/local/bin/containerd");
    assert!(listing.contains("Type: regular"), "{listing}");
    let manifest = fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("2.1.5"), "{manifest}");

    // Verified on every use: a changed file under that name is refused, naming the lock.
    fs::write(arts.join(new_name), b"not the tarball that was pinned").unwrap();
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert_one_line_error(&r, "piforge.lock");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains(&want), "{err}");

    // An unknown component is refused at its place in cluster.yaml, before anything.
    let bad = write_spec(tmp.path(), "  versions:\n    etcd: 3.6.10\n");
    let r = piforge(&["build", bad.to_str().unwrap(), "--out", o], &cache);
    assert_one_line_error(
        &r,
        "cluster.yaml:6:5: unknown key `etcd` in kubernetes.versions",
    );
}

/// Lays out `<root>/<host>/<path>` for every artifact of `release` (the files of `arts` under
/// their upstream names) with the checksum files upstream publishes (`<hex>  <file>`).
fn mirror_tree(root: &Path, arts: &Path, release: &piforge::artifacts::Release) {
    for a in release.artifacts() {
        let to = |url: &str| root.join(url.trim_start_matches("https://"));
        let dest = to(&a.url);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(arts.join(&a.file_name), &dest).unwrap();
        if let Some(c) = &a.checksum_url {
            let line = format!("{}  {}\n", sha256(&dest), a.file_name);
            let path = to(c);
            // runc's one checksum file lists every architecture: append ours.
            let mut text = fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&line);
            fs::write(path, text).unwrap();
        }
    }
}

#[test]
fn a_catalog_file_adds_a_patch_release_fetched_and_pinned_like_the_builtin_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let mine = tmp.path().join("mine.toml");
    // A patch release piforge does not list yet: every other key comes from its minor.
    fs::write(
        &mine,
        "# my versions\n[[release]]\nkubernetes = \"1.34.12\"\n",
    )
    .unwrap();
    let release = Catalog::with_user_file(&mine)
        .unwrap()
        .release("1.34.12")
        .unwrap();
    let root = tmp.path().join("mirror");
    mirror_tree(&root, &arts, &release);
    let mirror = start_mirror(&root);
    let lock = tmp.path().join("piforge.lock");
    let fetch = |cache: &Path, catalog: Option<&Path>| {
        let mut args = vec![
            "fetch",
            "--kubernetes",
            "1.34.12",
            "--no-images",
            "--allow-unpinned",
            "--mirror",
            &mirror.url,
            "--lock",
            lock.to_str().unwrap(),
        ];
        if let Some(c) = catalog {
            args.extend(["--catalog", c.to_str().unwrap()]);
        }
        piforge(&args, cache)
    };

    // Not in the built-in catalog.
    let r = fetch(&tmp.path().join("c0"), None);
    assert_one_line_error(&r, "1.34.12 is not in the artifact catalog");

    let r = fetch(&tmp.path().join("c1"), Some(&mine));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let kubeadm = "https://dl.k8s.io/release/v1.34.12/bin/linux/arm64/kubeadm";
    let want = sha256(&arts.join("kubeadm"));
    assert_eq!(lock_digest(&lock, kubeadm).as_deref(), Some(want.as_str()));
    // Verified against its checksum file: only flannel's manifest (upstream publishes no
    // checksum) was recorded unpinned.
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("flannel") && !err.contains("kubeadm"), "{err}");

    // A kubeadm that changed upstream is refused against the lock, from an empty cache.
    let served = root.join("dl.k8s.io/release/v1.34.12/bin/linux/arm64/kubeadm");
    fs::write(&served, b"#!/bin/sh\necho changed\n").unwrap();
    let r = fetch(&tmp.path().join("c2"), Some(&mine));
    assert_one_line_error(&r, "lock file");
    assert!(String::from_utf8_lossy(&r.stderr).contains(&want));

    // A bad catalog file: one line, at its place.
    fs::write(
        &mine,
        "[[release]]\nkubernetes = \"1.34.12\"\nrunc = \"1.3/6\"\n",
    )
    .unwrap();
    let r = fetch(&tmp.path().join("c3"), Some(&mine));
    assert_one_line_error(&r, &format!("{}:3:8:", mine.display()));
    fs::write(&mine, "[[artifact]]\nname = \"helm\"\n").unwrap();
    let r = fetch(&tmp.path().join("c3"), Some(&mine));
    assert_one_line_error(&r, &format!("{}:2:8: artifact \"helm\"", mine.display()));
}
