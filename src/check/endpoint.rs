//! The control-plane endpoint of a piforge node image: a VIP served by kube-vip, a DNS name,
//! or one node's address (a single point of failure once there are several control planes).

use std::net::IpAddr;

use serde_json::Value;

use super::*;
use crate::render::kube_vip::MANIFEST_PATH as KUBE_VIP;

const KUBEADM: &str = crate::payload::paths::KUBEADM_CONFIG;
const ID: &str = "control-plane-endpoint";
const TITLE: &str = "control-plane endpoint";

fn yaml_docs(text: &str) -> Vec<Value> {
    crate::spec::yaml::parse_documents(text)
        .map(|docs| {
            docs.iter()
                .filter_map(|d| crate::spec::yaml::to_json(d).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The endpoint item, for images that piforge made into a node (a kubeadm configuration that
/// names the endpoint); `None` for any other image.
pub(super) fn endpoint(fs: &dyn RootFiles) -> Result<Option<CheckItem>, String> {
    let Some(cfg) = fs.read_string(KUBEADM)? else {
        return Ok(None);
    };
    let docs = yaml_docs(&cfg);
    let endpoint = docs.iter().find_map(|d| {
        d["controlPlaneEndpoint"]
            .as_str()
            .or_else(|| d["discovery"]["bootstrapToken"]["apiServerEndpoint"].as_str())
    });
    // A configuration without an endpoint is not one piforge wrote: nothing to judge.
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    // A joining control plane: the cluster has at least two.
    let joining_control_plane = docs
        .iter()
        .any(|d| d["kind"] == "JoinConfiguration" && d.get("controlPlane").is_some());
    let host = endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');

    if let Some(manifest) = fs.read_string(KUBE_VIP)? {
        let pods = yaml_docs(&manifest);
        let address = pods.first().and_then(|pod| {
            pod["spec"]["containers"][0]["env"]
                .as_array()?
                .iter()
                .find(|e| e["name"] == "address")?["value"]
                .as_str()
                .map(str::to_string)
        });
        let looked = format!("{KUBE_VIP}, {KUBEADM}");
        return Ok(Some(match address {
            Some(a) if a == host => item(
                ID,
                TITLE,
                Status::Pass,
                format!("VIP {a} served by kube-vip ({endpoint}): the API survives losing a control plane"),
                looked,
            ),
            Some(a) => item(
                ID,
                TITLE,
                Status::Fail,
                format!("kube-vip serves {a}, but kubeadm uses {endpoint}: they must agree"),
                looked,
            ),
            None => item(
                ID,
                TITLE,
                Status::Fail,
                "the kube-vip manifest has no `address` to serve".to_string(),
                looked,
            ),
        }));
    }
    Ok(Some(match host.parse::<IpAddr>() {
        Err(_) => item(
            ID,
            TITLE,
            Status::Pass,
            format!("a DNS name ({endpoint}): it must lead to a running control plane"),
            KUBEADM,
        ),
        Ok(_) if joining_control_plane => item(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "a node address ({endpoint}) in a cluster with several control planes: losing \
                 that node takes the API away from every node; set kubernetes.vip in cluster.yaml"
            ),
            KUBEADM,
        ),
        Ok(_) => item(
            ID,
            TITLE,
            Status::Pass,
            format!(
                "a node address ({endpoint}), no kube-vip: fine for one control plane; with \
                 several, set kubernetes.vip"
            ),
            KUBEADM,
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::root_files::tests::LinkFiles;
    use crate::render::kube_vip::{self, KubeVipParams};
    use crate::render::kubeadm::{self, ClusterParams, NodeParams, Role};
    use crate::spec::{GoDuration, Token};

    fn cluster(endpoint: &str) -> ClusterParams {
        ClusterParams {
            cluster_name: "home".into(),
            kubernetes_version: "1.34.2".into(),
            control_plane_endpoint: endpoint.into(),
            pod_subnet: "10.244.0.0/16".parse().unwrap(),
            service_subnet: "10.96.0.0/12".parse().unwrap(),
            token: Token::parse("abcdef.0123456789abcdef").unwrap(),
            token_ttl: GoDuration::from_secs(3600),
            ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
            cri_socket: "unix:///run/containerd/containerd.sock".into(),
            cni: kubeadm::Cni::Flannel,
            etcd_image: None,
            coredns_image: None,
        }
    }

    fn node_image(endpoint: &str, role: Role, vip: Option<&str>) -> LinkFiles {
        let np = NodeParams {
            name: "n".into(),
            role,
            advertise_address: Some("192.168.1.10".into()),
        };
        let mut fs =
            LinkFiles::new().file(KUBEADM, &kubeadm::render_config(&cluster(endpoint), &np));
        if let Some(vip) = vip {
            let p = KubeVipParams {
                image: "ghcr.io/kube-vip/kube-vip:v1.0.3".into(),
                vip: vip.parse().unwrap(),
                port: 6443,
                interface: "eth0".into(),
            };
            fs = fs.file(KUBE_VIP, &kube_vip::manifest(&p, role));
        }
        fs
    }

    fn check(fs: &LinkFiles) -> CheckItem {
        endpoint(fs)
            .unwrap()
            .expect("a node image has an endpoint item")
    }

    #[test]
    fn a_vip_served_by_kube_vip_passes_on_every_control_plane() {
        for role in [Role::InitControlPlane, Role::JoinControlPlane] {
            let i = check(&node_image("192.168.1.9:6443", role, Some("192.168.1.9")));
            assert_eq!(i.status, Status::Pass, "{i:?}");
            assert!(
                i.reason.starts_with("VIP 192.168.1.9 served by kube-vip"),
                "{i:?}"
            );
            assert!(i.looked_at.contains(KUBE_VIP), "{i:?}");
        }
        // kube-vip announcing another address than the one kubeadm uses cannot work.
        let i = check(&node_image(
            "192.168.1.9:6443",
            Role::InitControlPlane,
            Some("192.168.1.8"),
        ));
        assert_eq!(i.status, Status::Fail, "{i:?}");
    }

    #[test]
    fn a_node_address_warns_only_where_several_control_planes_are_known() {
        // A joining control plane: at least two control planes, one of them the endpoint.
        let i = check(&node_image(
            "192.168.1.10:6443",
            Role::JoinControlPlane,
            None,
        ));
        assert_eq!(i.status, Status::Warn, "{i:?}");
        assert!(i.reason.contains("set kubernetes.vip"), "{i:?}");
        for role in [Role::InitControlPlane, Role::Worker] {
            let i = check(&node_image("192.168.1.10:6443", role, None));
            assert_eq!(i.status, Status::Pass, "{i:?}");
            assert!(
                i.reason.starts_with("a node address (192.168.1.10:6443)"),
                "{i:?}"
            );
        }
        // A worker of a VIP cluster has no kube-vip but names the VIP: an address it cannot
        // tell from a node's, so not a failure.
        let i = check(&node_image("192.168.1.9:6443", Role::Worker, None));
        assert_eq!(i.status, Status::Pass, "{i:?}");
    }

    #[test]
    fn a_dns_name_passes_and_a_plain_base_has_no_item() {
        let i = check(&node_image(
            "k8s.home.lan:6443",
            Role::JoinControlPlane,
            None,
        ));
        assert_eq!(i.status, Status::Pass, "{i:?}");
        assert!(
            i.reason.starts_with("a DNS name (k8s.home.lan:6443)"),
            "{i:?}"
        );
        assert_eq!(endpoint(&LinkFiles::new()).unwrap(), None);
    }
}
