//! The kube-vip static pod (`/etc/kubernetes/manifests/kube-vip.yaml`) that serves
//! `kubernetes.vip` on every control plane. Pure rendering, no I/O.
//!
//! kube-vip runs in ARP mode with leader election: the control plane holding the
//! `plndr-cp-lock` lease adds the VIP to its interface and answers ARP for it; when that node
//! goes away another takes the lease and the address. The fields follow the manifest
//! `kube-vip manifest pod --arp --controlplane --leaderElection` generates (kube-vip
//! `pkg/kubevip/config_generator.go`) and kubespray's template built from it for v1.0.3
//! (`roles/kubernetes/node/templates/manifests/kube-vip.manifest.j2`): `vip_subnet` is the
//! name of the former `vip_cidr` since 0.9, and the container keeps only NET_ADMIN and
//! NET_RAW.
//!
//! The bootstrap problem of Kubernetes 1.29 and later (kube-vip issue #684, and kube-vip's
//! static-pod documentation): during `kubeadm init`, `admin.conf` is bound to the
//! `kubeadm:cluster-admins` group, whose RBAC binding does not exist until the API server is
//! up, so kube-vip cannot take its lease and the VIP that kubeadm waits on never appears. The
//! node that runs `kubeadm init` therefore starts with `super-admin.conf` (`system:masters`),
//! and the first-boot script switches the manifest to `admin.conf` once init succeeded
//! (`super-admin.conf` should not stay in use). Joining control planes get `admin.conf` from
//! `kubeadm join --control-plane`, which writes it before it starts the kubelet.

use std::net::Ipv4Addr;

use super::kubeadm::Role;
use super::yaml::{self, Document, SeqIndent, Yaml};

/// Where the manifest goes: the kubelet's static pod directory (kubeadm's preflight checks
/// only its own four manifests there, so a file placed before `kubeadm init` or `join` is
/// accepted; kubernetes `cmd/kubeadm/app/preflight/checks.go`).
pub const MANIFEST_PATH: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
pub const SUPER_ADMIN_CONF: &str = "/etc/kubernetes/super-admin.conf";
/// The lease the control planes compete for (kube-vip's default name, written out).
pub const LEASE_NAME: &str = "plndr-cp-lock";

/// What the manifest needs from the spec and the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVipParams {
    /// `ghcr.io/kube-vip/kube-vip:v1.0.3` (from the catalog).
    pub image: String,
    pub vip: Ipv4Addr,
    /// The API server's port (6443).
    pub port: u16,
    /// The interface that carries the VIP (`network.interface`).
    pub interface: String,
}

impl KubeVipParams {
    /// The parameters for `spec`'s VIP with the catalog's `image`; `None` without a VIP.
    pub fn from_spec(spec: &crate::spec::Spec, image: &str) -> Option<KubeVipParams> {
        Some(KubeVipParams {
            image: image.to_string(),
            vip: spec.kubernetes.vip?,
            // The spec's checks keep the endpoint's port at the API server's own with a VIP.
            port: crate::spec::DEFAULT_API_PORT,
            interface: spec.network.interface.clone(),
        })
    }
}

/// The kubeconfig kube-vip starts with on a control plane of `role`: `super-admin.conf` on
/// the node that runs `kubeadm init` (until the first-boot script switches it), `admin.conf`
/// elsewhere.
pub fn kubeconfig_for(role: Role) -> &'static str {
    match role {
        Role::InitControlPlane => SUPER_ADMIN_CONF,
        Role::JoinControlPlane | Role::Worker => ADMIN_CONF,
    }
}

/// The static pod manifest for a control plane of `role`. Workers run no kube-vip; asking
/// for one gives the `admin.conf` variant, which is what a control plane joins with.
pub fn manifest(p: &KubeVipParams, role: Role) -> String {
    fn env(name: &str, value: impl Into<String>) -> Yaml {
        Yaml::map([("name", Yaml::str(name)), ("value", Yaml::quoted(value))])
    }
    let env = vec![
        env("vip_arp", "true"),
        env("port", p.port.to_string()),
        env("vip_interface", p.interface.as_str()),
        env("vip_subnet", "32"),
        env("cp_enable", "true"),
        env("cp_namespace", "kube-system"),
        env("vip_leaderelection", "true"),
        env("vip_leasename", LEASE_NAME),
        env("vip_leaseduration", "5"),
        env("vip_renewdeadline", "3"),
        env("vip_retryperiod", "1"),
        env("address", p.vip.to_string()),
    ];
    let container = Yaml::map([
        ("name", Yaml::str("kube-vip")),
        ("image", Yaml::quoted(p.image.as_str())),
        // The image comes from the registry on first boot; IfNotPresent keeps a running node
        // independent of it after that.
        ("imagePullPolicy", Yaml::str("IfNotPresent")),
        ("args", Yaml::Seq(vec![Yaml::str("manager")])),
        ("env", Yaml::Seq(env)),
        (
            "securityContext",
            Yaml::map([(
                "capabilities",
                Yaml::map([
                    (
                        "add",
                        Yaml::Seq(vec![Yaml::str("NET_ADMIN"), Yaml::str("NET_RAW")]),
                    ),
                    ("drop", Yaml::Seq(vec![Yaml::str("ALL")])),
                ]),
            )]),
        ),
        (
            "volumeMounts",
            Yaml::Seq(vec![Yaml::map([
                // kube-vip reads its kubeconfig from this path in the container.
                ("mountPath", Yaml::str(ADMIN_CONF)),
                ("name", Yaml::str("kubeconfig")),
            ])]),
        ),
    ]);
    let pod = Yaml::map([
        ("apiVersion", Yaml::str("v1")),
        ("kind", Yaml::str("Pod")),
        (
            "metadata",
            Yaml::map([
                ("name", Yaml::str("kube-vip")),
                ("namespace", Yaml::str("kube-system")),
            ]),
        ),
        (
            "spec",
            Yaml::map([
                ("containers", Yaml::Seq(vec![container])),
                // The API server's certificate names `kubernetes`; kube-vip reaches the local
                // one through it.
                (
                    "hostAliases",
                    Yaml::Seq(vec![Yaml::map([
                        ("hostnames", Yaml::Seq(vec![Yaml::str("kubernetes")])),
                        ("ip", Yaml::str("127.0.0.1")),
                    ])]),
                ),
                ("hostNetwork", Yaml::Bool(true)),
                (
                    "volumes",
                    Yaml::Seq(vec![Yaml::map([
                        ("name", Yaml::str("kubeconfig")),
                        (
                            "hostPath",
                            Yaml::map([
                                ("path", Yaml::str(kubeconfig_for(role))),
                                ("type", Yaml::str("File")),
                            ]),
                        ),
                    ])]),
                ),
            ]),
        ),
    ]);
    let mut comments = vec![
        "# Written by piforge: kube-vip serves the control-plane endpoint's virtual IP."
            .to_string(),
    ];
    if role == Role::InitControlPlane {
        comments.push(
            "# super-admin.conf until `kubeadm init` is done (kube-vip issue #684); the first-boot"
                .into(),
        );
        comments.push("# script then switches the volume to admin.conf.".into());
    }
    yaml::write_stream(
        &[Document {
            comments,
            body: pod,
        }],
        SeqIndent::Flush,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::yaml::tests::pyyaml;
    use serde_json::{json, Value};

    fn params() -> KubeVipParams {
        KubeVipParams {
            image: "ghcr.io/kube-vip/kube-vip:v1.0.3".into(),
            vip: "192.168.1.9".parse().unwrap(),
            port: 6443,
            interface: "eth0".into(),
        }
    }

    /// The manifest read back by piforge's own YAML reader, as JSON.
    fn own_reader(text: &str) -> Value {
        let item = crate::spec::yaml::parse(text).unwrap().unwrap();
        crate::spec::yaml::to_json(&item).unwrap()
    }

    fn env_of(pod: &Value) -> Vec<(String, String)> {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    // Kubernetes refuses an env value that is not a string.
                    e["value"]
                        .as_str()
                        .expect("env values are strings")
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn manifest_is_a_static_pod_in_arp_mode_with_leader_election() {
        for role in [Role::InitControlPlane, Role::JoinControlPlane] {
            let text = manifest(&params(), role);
            let pod = pyyaml(&text);
            assert_eq!(pod, own_reader(&text), "both readers agree:\n{text}");
            assert_eq!(pod["apiVersion"], "v1");
            assert_eq!(pod["kind"], "Pod");
            assert_eq!(pod["metadata"]["namespace"], "kube-system");
            assert_eq!(pod["spec"]["hostNetwork"], json!(true));
            let c = &pod["spec"]["containers"][0];
            assert_eq!(c["image"], "ghcr.io/kube-vip/kube-vip:v1.0.3");
            assert_eq!(c["args"], json!(["manager"]));
            assert_eq!(
                c["securityContext"]["capabilities"]["add"],
                json!(["NET_ADMIN", "NET_RAW"])
            );
            let env = env_of(&pod);
            let get = |k: &str| {
                env.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_else(|| panic!("no {k} in {env:?}"))
            };
            assert_eq!(get("address"), "192.168.1.9");
            assert_eq!(get("vip_interface"), "eth0");
            assert_eq!(get("port"), "6443");
            assert_eq!(get("vip_arp"), "true");
            assert_eq!(get("cp_enable"), "true");
            assert_eq!(get("vip_leaderelection"), "true");
            assert_eq!(get("vip_leasename"), LEASE_NAME);
            // The kubeconfig is mounted where kube-vip reads it.
            assert_eq!(
                c["volumeMounts"],
                json!([{"mountPath": "/etc/kubernetes/admin.conf", "name": "kubeconfig"}])
            );
        }
    }

    #[test]
    fn only_the_init_node_starts_with_super_admin_conf() {
        let host_path = |role| {
            let pod = pyyaml(&manifest(&params(), role));
            let v = &pod["spec"]["volumes"][0];
            assert_eq!(v["name"], "kubeconfig");
            assert_eq!(v["hostPath"]["type"], "File");
            v["hostPath"]["path"].as_str().unwrap().to_string()
        };
        assert_eq!(
            host_path(Role::InitControlPlane),
            "/etc/kubernetes/super-admin.conf"
        );
        assert_eq!(
            host_path(Role::JoinControlPlane),
            "/etc/kubernetes/admin.conf"
        );
        let init = manifest(&params(), Role::InitControlPlane);
        let join = manifest(&params(), Role::JoinControlPlane);
        assert!(!join.contains("super-admin"), "{join}");
        // The first-boot script's sed finds exactly one line to switch.
        let line = format!("path: {SUPER_ADMIN_CONF}");
        assert_eq!(init.matches(&line).count(), 1, "{init}");
    }

    #[test]
    fn spec_values_cannot_add_yaml() {
        let mut p = params();
        p.image = "x:1\nhostPID: true".into();
        let pod = pyyaml(&manifest(&p, Role::JoinControlPlane));
        assert_eq!(pod["spec"]["containers"][0]["image"], "x:1\nhostPID: true");
        assert!(pod["spec"].get("hostPID").is_none());
    }
}
