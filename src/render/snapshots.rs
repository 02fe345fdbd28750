//! Snapshot tests: every file `render` generates, for one fixed spec
//! (`testdata/cluster.yaml`: two control planes behind a VIP, a static worker, a DHCP worker
//! with a profile)
//! and fixed secrets, compared with the files in `testdata/snapshots/`. A change to any
//! generated file then shows in the diff of the snapshot. `PIFORGE_UPDATE_SNAPSHOTS=1 cargo
//! test --lib render::snapshots` rewrites them.
//!
//! The snapshots are judged too: PyYAML reads every YAML file, `cloud-init schema` every
//! user-data, `shellcheck` every first-boot script.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::cloud_init::{self, nocloud_snippet};
use super::first_boot::{first_boot_script, first_boot_unit};
use super::kube_vip;
use super::kubeadm::{self, render_config, ClusterParams, NodeParams, Role};
use super::kubeconfig;
use super::yaml::tests::{pyyaml, pyyaml_all};
use crate::spec::{self, GoDuration, Spec, Token};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/render/testdata")
}

fn fixed_spec() -> Spec {
    let dir = testdata();
    let text = fs::read_to_string(dir.join("cluster.yaml")).unwrap();
    spec::parse(&text, "cluster.yaml", &dir, &["1.34.2"]).unwrap_or_else(|e| panic!("{e}"))
}

/// Fixed secrets: derived from fixed bytes, never random.
fn fixed_cluster(spec: &Spec) -> ClusterParams {
    let ca_hash = hex::encode(Sha256::digest(b"piforge snapshot CA"));
    // The built-in catalog's etcd and CoreDNS of the spec's minor.
    let (etcd_image, coredns_image) = crate::artifacts::Catalog::builtin()
        .unwrap()
        .release(spec.kubernetes.version.rsplit_once('.').unwrap().0)
        .unwrap()
        .kubeadm_image_metas();
    ClusterParams {
        cluster_name: spec.name.clone(),
        kubernetes_version: spec.kubernetes.version.clone(),
        control_plane_endpoint: spec.control_plane_endpoint(),
        pod_subnet: spec.kubernetes.pod_subnet,
        service_subnet: spec.kubernetes.service_subnet,
        token: Token::parse("snap01.0123456789abcdef").unwrap(),
        token_ttl: GoDuration::from_secs(spec.kubernetes.token_ttl.as_secs()),
        ca_cert_hash: format!("sha256:{ca_hash}"),
        cri_socket: "unix:///run/containerd/containerd.sock".into(),
        cni: spec.kubernetes.cni.into(),
        etcd_image,
        coredns_image,
    }
}

fn pem(label: &str, what: &str) -> String {
    let body = hex::encode(Sha256::digest(format!("piforge snapshot {what}")));
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

/// The login groups of the snapshots: a Raspberry Pi OS-like base's, with `gpio` missing.
fn snapshot_groups() -> Vec<String> {
    let existing: Vec<String> = cloud_init::PI_GEN_USER_GROUPS
        .iter()
        .filter(|g| **g != "gpio")
        .map(|g| g.to_string())
        .chain(["systemd-journal".to_string()])
        .collect();
    cloud_init::login_groups(&[], &existing, None, &[])
}

/// Every generated file, by its snapshot name.
fn render_all() -> BTreeMap<String, String> {
    let spec = fixed_spec();
    let cluster = fixed_cluster(&spec);
    cluster.validate().unwrap();
    let mut files = BTreeMap::new();
    let first = spec.first_control_plane().name.clone();
    for node in &spec.nodes {
        let role = match node.role {
            spec::Role::Worker => Role::Worker,
            spec::Role::ControlPlane if node.name == first => Role::InitControlPlane,
            spec::Role::ControlPlane => Role::JoinControlPlane,
        };
        let np = NodeParams {
            name: node.name.to_string(),
            role,
            advertise_address: node.address.map(|a| a.addr.to_string()),
        };
        let kubeadm_config = render_config(&cluster, &np);
        let inputs = cloud_init::NodeInputs {
            cluster_name: spec.name.clone(),
            ca_cert_pem: pem("CERTIFICATE", "CA"),
            token: cluster.token.clone(),
            endpoint: cluster.control_plane_endpoint.clone(),
            kubeadm_config: kubeadm_config.clone(),
            artifact_digests: vec![("kubeadm".into(), hex::encode(Sha256::digest(b"kubeadm")))],
            base_image_sha256: hex::encode(Sha256::digest(b"base image")),
            role_digest: format!("root of {}", role.as_str()),
        };
        let seed = cloud_init::seed(&spec, node, &snapshot_groups(), &inputs);
        for (name, text) in seed.files() {
            files.insert(format!("{}/{name}", node.name), text.to_string());
        }
        files.insert(format!("{}/kubeadm.yaml", node.name), kubeadm_config);
        if role.is_control_plane() {
            let p = kube_vip::KubeVipParams::from_spec(&spec, "ghcr.io/kube-vip/kube-vip:v1.0.3")
                .expect("the fixed spec has a VIP");
            files.insert(
                format!("{}/kube-vip.yaml", node.name),
                kube_vip::manifest(&p, role),
            );
        }
    }
    files.insert(
        "admin.kubeconfig".into(),
        kubeconfig::render(
            &spec.name,
            &format!("https://{}", spec.control_plane_endpoint()),
            "kubernetes-admin",
            kubeconfig::Credentials {
                ca_cert_pem: &pem("CERTIFICATE", "CA"),
                client_cert_pem: &pem("CERTIFICATE", "admin"),
                client_key_pem: &pem("PRIVATE KEY", "admin key"),
            },
        ),
    );
    files.insert(
        "piforge-kubeadm.service".into(),
        first_boot_unit().to_string(),
    );
    for role in [Role::InitControlPlane, Role::JoinControlPlane, Role::Worker] {
        for cni in [kubeadm::Cni::Flannel, kubeadm::Cni::None] {
            let cni_name = match cni {
                kubeadm::Cni::Flannel => "flannel",
                kubeadm::Cni::None => "none",
            };
            files.insert(
                format!("kubeadm-first-boot/{}-{cni_name}", role.as_str()),
                first_boot_script(role, cni),
            );
        }
    }
    files.insert(
        "99-piforge-nocloud.cfg".into(),
        nocloud_snippet("system-boot"),
    );
    files.insert(
        "kube-flannel.yml".into(),
        kubeadm::patch_flannel(super::tests::FLANNEL, cluster.pod_subnet).unwrap(),
    );
    files
}

fn snapshot_dir() -> PathBuf {
    testdata().join("snapshots")
}

fn files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            files_under(&e.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

#[test]
fn every_rendered_file_matches_its_snapshot() {
    let files = render_all();
    let dir = snapshot_dir();
    if std::env::var_os("PIFORGE_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        let _ = fs::remove_dir_all(&dir);
        for (name, text) in &files {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
        }
    }
    let mut problems = Vec::new();
    for (name, text) in &files {
        match fs::read_to_string(dir.join(name)) {
            Ok(want) if &want == text => {}
            Ok(_) => problems.push(format!("{name} differs from its snapshot")),
            Err(_) => problems.push(format!("{name} has no snapshot")),
        }
    }
    let mut on_disk = Vec::new();
    files_under(&dir, "", &mut on_disk);
    for name in on_disk {
        if !files.contains_key(&name) {
            problems.push(format!("snapshot {name} is no longer rendered"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n(PIFORGE_UPDATE_SNAPSHOTS=1 rewrites the snapshots; review the diff)",
        problems.join("\n")
    );
}

fn run_oracle(cmd: &mut Command, what: &str, text: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run the oracle ({e}); see tests/install-deps.sh")
    });
    assert!(
        out.status.success(),
        "{what}:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rendered_files_pass_their_oracles() {
    let spec = fixed_spec();
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in render_all() {
        let path = tmp.path().join(name.replace('/', "_"));
        fs::write(&path, &text).unwrap();
        if name.starts_with("kubeadm-first-boot/") {
            run_oracle(
                Command::new("shellcheck").args(["-s", "sh"]).arg(&path),
                &name,
                &text,
            );
        } else if name.ends_with("/user-data") {
            run_oracle(
                Command::new("cloud-init")
                    .args(["schema", "--config-file"])
                    .arg(&path),
                &name,
                &text,
            );
            // PyYAML reads back exactly the user-data piforge built.
            let node = spec
                .nodes
                .iter()
                .find(|n| name.starts_with(&format!("{}/", n.name)))
                .unwrap();
            assert_eq!(
                pyyaml(&text),
                cloud_init::user_data(&spec, node, &snapshot_groups()),
                "{name}"
            );
        } else if name.ends_with("/network-config") {
            let node = spec
                .nodes
                .iter()
                .find(|n| name.starts_with(&format!("{}/", n.name)))
                .unwrap();
            assert_eq!(
                pyyaml(&text),
                cloud_init::network_config(&spec, node),
                "{name}"
            );
        } else if name.ends_with("kubeadm.yaml") {
            let docs = pyyaml_all(&text);
            let kinds: Vec<&str> = docs
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["kind"].as_str().unwrap())
                .collect();
            let want: &[&str] = if name.starts_with("cp1/") {
                &[
                    "InitConfiguration",
                    "ClusterConfiguration",
                    "KubeletConfiguration",
                ]
            } else {
                &["JoinConfiguration"]
            };
            assert_eq!(kinds, want, "{name}");
        } else if name.ends_with("/kube-vip.yaml") {
            let pod = pyyaml(&text);
            assert_eq!(pod["kind"], "Pod", "{name}");
            let want = if name.starts_with("cp1/") {
                kube_vip::SUPER_ADMIN_CONF
            } else {
                kube_vip::ADMIN_CONF
            };
            assert_eq!(
                pod["spec"]["volumes"][0]["hostPath"]["path"], want,
                "{name}"
            );
        } else if name.ends_with("meta-data")
            || name.ends_with(".cfg")
            || name.ends_with(".yml")
            || name.ends_with("kubeconfig")
        {
            assert!(pyyaml(&text).is_object(), "{name}");
        }
    }
}
