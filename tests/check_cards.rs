//! Issue 16 item 3: `piforge check` passes piforge's own cards. For every card `build` writes
//! (the init control plane, a joining control plane, workers on a fixed address and on DHCP)
//! from every fixture base build supports (Raspberry Pi OS trixie with zram swap active,
//! Ubuntu, and trixie shipping ssh host keys), check reports no FAIL, and every WARN says what
//! to change in cluster.yaml. The cards carry their container images (tiny OCI layouts made by
//! tests/fixtures/make-images.py), as after `piforge fetch`.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

const K8S: &str = "1.34.11";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

fn write_spec(dir: &Path, image: &Path) -> PathBuf {
    let spec = format!(
        "name: checklab
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
network:
  gateway: 192.168.50.1
  dns: [192.168.50.1]
user: pi
ssh_authorized_keys: [\"{KEY}\"]
nodes:
  - name: cp-1
    role: control-plane
    address: 192.168.50.10/24
  - name: cp-2
    role: control-plane
    address: 192.168.50.12/24
  - name: w-1
    role: worker
    address: 192.168.50.11/24
  - name: w-2
    role: worker
",
        image = image.display()
    );
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

/// The trixie fixture with ssh host keys in /etc/ssh, as a base that ships them has.
fn with_host_keys(tmp: &Path, cache: &Path) -> PathBuf {
    let ov = tmp.join("keys-overlay");
    fs::create_dir_all(ov.join("etc/ssh")).unwrap();
    ssh_keygen(&ov.join("etc/ssh/ssh_host_ed25519_key"), "root@base");
    fs::write(
        ov.join(".piforge-attrs"),
        "/etc/ssh/ssh_host_ed25519_key 0600 0 0\n",
    )
    .unwrap();
    let out = tmp.join("keys.img");
    trixie_with_overlay(&ov, &out, cache);
    out
}

#[test]
fn check_passes_every_card_build_writes_from_every_base() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-images.py");
    run(
        "python3",
        &[script.to_str().unwrap(), arts.to_str().unwrap(), K8S],
    );
    let keys = with_host_keys(tmp.path(), &cache);
    for (name, base) in [
        ("trixie (zram swap)", fixture("trixie.img")),
        ("ubuntu", fixture("ubuntu.img")),
        ("trixie with host keys", keys),
    ] {
        let dir = tmp.path().join(name.replace(' ', "-"));
        fs::create_dir_all(&dir).unwrap();
        let spec = write_spec(&dir, &base);
        let out = dir.join("dist");
        let r = build_with(&spec, &out, &arts, &cache, &[]);
        assert!(
            r.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        for node in ["cp-1", "cp-2", "w-1", "w-2"] {
            let img = out.join(format!("{node}.img"));
            let c = piforge(&["check", "--json", img.to_str().unwrap()], &cache);
            let v: serde_json::Value =
                serde_json::from_slice(&c.stdout).unwrap_or_else(|e| panic!("{name} {node}: {e}"));
            let items = v.as_array().unwrap_or_else(|| panic!("{name} {node}: {v}"));
            assert!(items.len() > 20, "{name} {node}: {v}");
            for i in items {
                let status = i["status"].as_str().unwrap_or_default().to_uppercase();
                assert!(["PASS", "WARN", "FAIL"].contains(&status.as_str()), "{i}");
                let reason = i["reason"].as_str().unwrap_or_default();
                assert_ne!(status, "FAIL", "{name} {node}: {i}");
                if status == "WARN" {
                    assert!(
                        reason.contains("cluster.yaml"),
                        "{name} {node}: a WARN that names nothing to change in cluster.yaml: {i}"
                    );
                }
            }
            assert!(c.status.success(), "{name} {node}");
            // The base's host keys are gone; the node's own is the only one.
            let keys = items
                .iter()
                .find(|i| i["title"] == "no shared ssh host keys")
                .unwrap_or_else(|| panic!("{name} {node}: no host-key item"));
            assert_eq!(keys["status"], "pass", "{name} {node}: {keys}");
            assert!(
                keys["reason"].as_str().unwrap_or_default().contains(node),
                "{name} {node}: {keys}"
            );
        }
    }
}
