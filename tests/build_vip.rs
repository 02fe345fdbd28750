//! `piforge build` with `kubernetes.vip`: kube-vip's static pod on every control plane (the
//! init node with super-admin.conf), the VIP as the endpoint everywhere, and spec errors.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

const K8S: &str = "1.34.11";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";
const MANIFEST: &str = "/etc/kubernetes/manifests/kube-vip.yaml";

/// Two control planes and a worker on 192.168.50.0/24, the VIP `vip`.
fn write_spec(dir: &Path, image: &Path, vip: &str) -> PathBuf {
    let spec = format!(
        "name: viplab
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
  vip: {vip}
network:
  interface: eth0
  gateway: 192.168.50.1
  dns: [192.168.50.1]
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
",
        image = image.display()
    );
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

fn build(spec: &Path, out: &Path, arts: &Path, cache: &Path) -> std::process::Output {
    build_with(spec, out, arts, cache, &[])
}

/// PyYAML's reading of a document, as JSON.
fn pyyaml(text: &str) -> serde_json::Value {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML (tests/install-deps.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML refused:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_control_plane_gets_kube_vip_and_every_node_the_vip_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = write_spec(tmp.path(), &fixture("trixie.img"), "192.168.50.9");
    let out = tmp.path().join("dist");
    let r = build(&spec, &out, &arts, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    for (node, kubeconfig) in [
        ("cp-1", "/etc/kubernetes/super-admin.conf"),
        ("cp-2", "/etc/kubernetes/admin.conf"),
    ] {
        let img = out.join(format!("{node}.img"));
        let (_, root) = offsets(&img, &cache);
        let text = debugfs(&img, root, &format!("cat {MANIFEST}"));
        let pod = pyyaml(&text);
        assert_eq!(pod["kind"], "Pod", "{node}: {text}");
        assert_eq!(pod["spec"]["hostNetwork"], true, "{node}");
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["image"], "ghcr.io/kube-vip/kube-vip:v1.0.3", "{node}");
        let env = c["env"].as_array().unwrap();
        let get = |k: &str| {
            env.iter()
                .find(|e| e["name"] == k)
                .and_then(|e| e["value"].as_str())
                .unwrap_or_else(|| panic!("{node}: no {k}"))
                .to_string()
        };
        assert_eq!(get("address"), "192.168.50.9");
        assert_eq!(get("vip_interface"), "eth0");
        assert_eq!(get("vip_arp"), "true");
        assert_eq!(get("vip_leaderelection"), "true");
        assert_eq!(
            pod["spec"]["volumes"][0]["hostPath"]["path"], kubeconfig,
            "{node}"
        );
        let stat = debugfs(&img, root, &format!("stat {MANIFEST}"));
        assert!(stat.contains("Mode:  0600"), "{node}: {stat}");

        let cfg = debugfs(&img, root, "cat /etc/piforge/kubeadm.yaml");
        let want = if node == "cp-1" {
            "controlPlaneEndpoint: \"192.168.50.9:6443\""
        } else {
            "apiServerEndpoint: \"192.168.50.9:6443\""
        };
        assert!(cfg.contains(want), "{node}: {cfg}");
        // The node's own API server still advertises its own address.
        assert!(
            cfg.contains(&format!(
                "advertiseAddress: \"192.168.50.{}\"",
                if node == "cp-1" { 10 } else { 12 }
            )),
            "{node}: {cfg}"
        );
        let script = debugfs(&img, root, "cat /usr/local/lib/piforge/kubeadm-first-boot");
        assert!(script.contains("kube_vip_to_admin_conf\n"), "{node}");
        let (code, log) = e2fsck(&img, root);
        assert_eq!(code, 0, "{node}: {log}");
    }

    // The worker runs no kube-vip, and joins through the VIP.
    let img = out.join("w-1.img");
    let (_, root) = offsets(&img, &cache);
    assert_eq!(debugfs(&img, root, &format!("cat {MANIFEST}")), "");
    let dir = debugfs(&img, root, "ls -l /etc/kubernetes");
    assert!(!dir.contains("manifests"), "{dir}");
    let cfg = debugfs(&img, root, "cat /etc/piforge/kubeadm.yaml");
    assert!(
        cfg.contains("apiServerEndpoint: \"192.168.50.9:6443\""),
        "{cfg}"
    );
    // The laptop's kubeconfig talks to the VIP too.
    let kc = fs::read_to_string(tmp.path().join("secrets/admin.kubeconfig")).unwrap();
    assert!(
        kc.contains("server: \"https://192.168.50.9:6443\"")
            || kc.contains("server: https://192.168.50.9:6443"),
        "{kc}"
    );

    // `piforge check` says what the endpoint is.
    let r = piforge(&["check", out.join("cp-1.img").to_str().unwrap()], &cache);
    let report = String::from_utf8_lossy(&r.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("control-plane endpoint"))
        .unwrap_or_else(|| panic!("no endpoint item:\n{report}"));
    assert!(line.contains("PASS"), "{line}");
    assert!(line.contains("VIP 192.168.50.9"), "{line}");
}

#[test]
fn a_vip_outside_the_control_planes_subnet_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = write_spec(tmp.path(), &fixture("trixie.img"), "192.168.51.9");
    let out = tmp.path().join("dist");
    let r = build(&spec, &out, &arts, &cache);
    assert_one_line_error(
        &r,
        "cluster.yaml:6:8: kubernetes.vip: 192.168.51.9 is not in the subnet 192.168.50.0/24 of cp-1's address",
    );
    assert!(!tmp.path().join("secrets").exists());
    assert!(!out.exists() || fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn dry_run_lists_kube_vip_in_both_control_plane_layers_only() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = write_spec(tmp.path(), &fixture("trixie.img"), "192.168.50.9");
    let out = tmp.path().join("dist");
    let r = build_with(&spec, &out, &arts, &cache, &["--dry-run"]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Each layer's listing, by its heading.
    let layer = |heading: &str| -> String {
        let start = text
            .find(heading)
            .unwrap_or_else(|| panic!("no {heading}:\n{text}"));
        let rest = &text[start + heading.len()..];
        rest[..rest.find("\n== ").unwrap_or(rest.len())].to_string()
    };
    for (heading, want) in [
        ("== role layer: init-control-plane", true),
        ("== role layer: join-control-plane", true),
        ("== role layer: worker", false),
        ("== common layer", false),
    ] {
        assert_eq!(
            layer(heading).contains(MANIFEST),
            want,
            "{heading}:\n{text}"
        );
    }
    assert!(!tmp.path().join("secrets").exists());
}
