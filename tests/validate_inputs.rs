//! Inputs are validated before any side effect (issue 11): a broken OCI image layout under
//! `--artifacts DIR/images/` fails the build before the secrets, the lock or any output are
//! written. Judged by what exists on disk afterwards.

mod common;
use common::registry::tiny_image;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

const K8S: &str = "1.34.11";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

fn write_spec(dir: &Path) -> PathBuf {
    let spec = format!(
        "name: val
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
network:
  gateway: 192.168.80.1
  dns: [192.168.80.1]
ssh_authorized_keys: [\"{KEY}\"]
nodes:
  - name: cp
    role: control-plane
    address: 192.168.80.10/24
",
        image = fixture("trixie.img").display()
    );
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

#[test]
fn a_broken_image_layout_is_refused_before_the_secrets_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("arts"), K8S);
    let spec = write_spec(tmp.path());
    let out = tmp.path().join("dist");
    let pause = "registry.k8s.io/pause:3.10.1";
    let image = piforge::oci::ImageRef::parse(pause).unwrap();
    let layout = arts.join("images").join(image.layout_name());
    let tiny = tiny_image("pause", b"pause stand-in\n", true);
    tiny.write_layout(&layout, pause, &image.reference);
    // One blob's bytes changed after the layout was written: its digest no longer matches.
    let blobs = layout.join("blobs/sha256");
    let victim = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap() != tiny.top_digest().trim_start_matches("sha256:"))
        .unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&victim, bytes).unwrap();

    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&layout.display().to_string()) || err.contains("pause"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Nothing of the user's was written: no secrets, no lock, no output directory.
    assert!(
        !tmp.path().join("secrets").exists(),
        "secrets written before the images were checked"
    );
    assert!(!tmp.path().join("piforge.lock").exists());
    assert!(!out.exists());

    // The same layout whole: the build goes through (and then writes the secrets).
    fs::remove_dir_all(&layout).unwrap();
    tiny.write_layout(&layout, pause, &image.reference);
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(tmp.path().join("secrets/ca.key").exists());
    let lock = fs::read_to_string(tmp.path().join("piforge.lock")).unwrap();
    assert!(lock.contains(pause), "{lock}");
}
