//! The node's kubeadm configuration (`/etc/piforge/kubeadm.yaml`) and the Flannel manifest
//! fitted to the pod subnet. Pure rendering, no I/O.

use super::yaml::{self, Document, SeqIndent, Yaml};
use crate::spec::{Cidr, GoDuration, Token};

/// Where the node's kubeadm configuration goes on the root filesystem (mode 0600: it holds the
/// bootstrap token).
pub use crate::payload::paths::KUBEADM_CONFIG as CONFIG_PATH;

const KUBEADM_API: &str = "kubeadm.k8s.io/v1beta4";
const KUBELET_API: &str = "kubelet.config.k8s.io/v1beta1";
const DEFAULT_NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cni {
    /// piforge ships the Flannel manifest and the first control plane applies it.
    Flannel,
    /// No CNI is installed; nodes stay NotReady until the user installs one.
    None,
}

impl From<crate::spec::Cni> for Cni {
    fn from(c: crate::spec::Cni) -> Cni {
        match c {
            crate::spec::Cni::Flannel => Cni::Flannel,
            crate::spec::Cni::None => Cni::None,
        }
    }
}

/// Everything the nodes of one cluster share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterParams {
    pub cluster_name: String,
    /// `1.34.2` (a leading `v` is accepted too).
    pub kubernetes_version: String,
    /// `host:port` of the API server every node talks to, such as `192.168.1.10:6443`.
    pub control_plane_endpoint: String,
    pub pod_subnet: Cidr,
    pub service_subnet: Cidr,
    /// The bootstrap token (its `Debug` elides it).
    pub token: Token,
    /// The token's lifetime (zero: never expires), written in Go's form (`24h0m0s`).
    pub token_ttl: GoDuration,
    /// `sha256:` and 64 hex digits; see `pki::Secrets::discovery_hash`.
    pub ca_cert_hash: String,
    /// `unix:///run/containerd/containerd.sock`.
    pub cri_socket: String,
    pub cni: Cni,
    /// The etcd image the card carries (`etcd.local` in the ClusterConfiguration), `None` to
    /// leave it to kubeadm.
    pub etcd_image: Option<ImageMeta>,
    /// The CoreDNS image the card carries (`dns` in the ClusterConfiguration), `None` to
    /// leave it to kubeadm.
    pub coredns_image: Option<ImageMeta>,
}

/// kubeadm's `ImageMeta` of etcd or CoreDNS: which image it deploys, written into the
/// ClusterConfiguration. Without it kubeadm picks the tags compiled into its binary
/// (`SupportedEtcdVersion` for the control plane's minor, `CoreDNSVersion`), which need not be
/// the images the card holds; with it kubeadm asks for exactly these
/// (cmd/kubeadm/app/images/images.go, GetEtcdImage and GetDNSImage: `imageTag` and
/// `imageRepository` override the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    /// `imageRepository`, only when kubeadm's own would name another image (`None` for the
    /// catalog's images, which are at kubeadm's default place).
    pub repository: Option<String>,
    /// `imageTag`: `3.6.10-0`, `v1.14.2`.
    pub tag: String,
}

impl ImageMeta {
    fn yaml(&self) -> Yaml {
        let mut m = Vec::new();
        if let Some(r) = &self.repository {
            m.push(("imageRepository", Yaml::Quoted(r.clone())));
        }
        m.push(("imageTag", Yaml::Quoted(self.tag.clone())));
        Yaml::map(m)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The first control plane: runs `kubeadm init` with the pre-placed CA.
    InitControlPlane,
    /// Another control plane: `kubeadm join` with the shared keys pre-placed.
    JoinControlPlane,
    Worker,
}

impl Role {
    pub fn is_control_plane(self) -> bool {
        !matches!(self, Role::Worker)
    }

    /// `init-control-plane`, `join-control-plane`, `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::InitControlPlane => "init-control-plane",
            Role::JoinControlPlane => "join-control-plane",
            Role::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeParams {
    /// The node name (its hostname).
    pub name: String,
    pub role: Role,
    /// The address a control plane's API server advertises; kubeadm picks the address of the
    /// default route's interface when it is `None`. Ignored for workers.
    pub advertise_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeadmError {
    #[error("{what} {value:?} is not valid: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "the Flannel manifest has no \"Network\": \"10.244.0.0/16\" in its net-conf.json, \
         so piforge cannot set the pod subnet in it"
    )]
    FlannelNetworkNotFound,
}

impl ClusterParams {
    /// Checks the fields whose format kubeadm would only reject on the node, at first boot
    /// (the token, its ttl and the subnets are typed and checked when they are made).
    pub fn validate(&self) -> Result<(), KubeadmError> {
        let bad = |what, value: &str, reason| {
            Err(KubeadmError::Invalid {
                what,
                value: value.to_string(),
                reason,
            })
        };
        let hash = self.ca_cert_hash.strip_prefix("sha256:").unwrap_or("");
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad(
                "CA certificate hash",
                &self.ca_cert_hash,
                "it must be sha256: and 64 hex digits",
            );
        }
        let version = self.kubernetes_version.trim_start_matches('v');
        let parts: Vec<&str> = version.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return bad(
                "Kubernetes version",
                &self.kubernetes_version,
                "it must be MAJOR.MINOR.PATCH, such as 1.34.2",
            );
        }
        if !self.cri_socket.starts_with("unix:///") {
            return bad("CRI socket", &self.cri_socket, "it must be a unix:/// URL");
        }
        let (host, port) = self
            .control_plane_endpoint
            .rsplit_once(':')
            .unwrap_or(("", ""));
        if host.is_empty() || port.parse::<u16>().is_err() {
            return bad(
                "control-plane endpoint",
                &self.control_plane_endpoint,
                "it must be HOST:PORT",
            );
        }
        let name = &self.cluster_name;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("cluster name", name, "it must be non-empty, without spaces");
        }
        Ok(())
    }

    fn version_tag(&self) -> String {
        format!("v{}", self.kubernetes_version.trim_start_matches('v'))
    }
}

/// The node's `/etc/piforge/kubeadm.yaml`.
///
/// The first control plane gets an InitConfiguration (with the bootstrap token), a
/// ClusterConfiguration and a KubeletConfiguration (systemd cgroups, swap refused). The
/// others get a JoinConfiguration that discovers the API server with the token and pins the
/// CA by its hash; extra control planes add `controlPlane`, and kubeadm finds the shared CA
/// and keys already in `/etc/kubernetes/pki`. Joining nodes take their kubelet settings from
/// the cluster, so they get no KubeletConfiguration. Values from the spec are double-quoted,
/// so no field can add YAML of its own; call [`ClusterParams::validate`] first to catch bad
/// values at build time.
pub fn render_config(cluster: &ClusterParams, node: &NodeParams) -> String {
    fn q(s: impl Into<String>) -> Yaml {
        Yaml::Quoted(s.into())
    }
    let mut comments =
        vec!["# Written by piforge. Holds the bootstrap token: keep it 0600.".to_string()];
    // IfNotPresent (kubeadm's default, written out): the images piforge put in the card and
    // imported before kubeadm runs are used as they are. kubeadm's preflight ImagePull check
    // skips an image the runtime has under that policy and pulls only the missing ones
    // (cmd/kubeadm/app/preflight/checks.go, ImagePullCheck), the online fallback.
    let registration = Yaml::map([
        ("name", q(node.name.as_str())),
        ("criSocket", q(cluster.cri_socket.as_str())),
        ("imagePullPolicy", q("IfNotPresent")),
    ]);
    let docs = match node.role {
        Role::InitControlPlane => {
            let token = Yaml::map([
                ("token", q(cluster.token.secret())),
                ("ttl", q(cluster.token_ttl.to_string())),
                ("description", q("made by piforge for the cluster's nodes")),
                (
                    "usages",
                    Yaml::Seq(vec![Yaml::str("signing"), Yaml::str("authentication")]),
                ),
                (
                    "groups",
                    Yaml::Seq(vec![Yaml::str(DEFAULT_NODE_TOKEN_GROUP)]),
                ),
            ]);
            let mut init = vec![
                ("apiVersion", Yaml::str(KUBEADM_API)),
                ("kind", Yaml::str("InitConfiguration")),
                ("bootstrapTokens", Yaml::Seq(vec![token])),
                ("nodeRegistration", registration),
            ];
            if let Some(addr) = &node.advertise_address {
                init.push((
                    "localAPIEndpoint",
                    Yaml::map([("advertiseAddress", q(addr.as_str()))]),
                ));
            }
            let mut cluster_config = vec![
                ("apiVersion", Yaml::str(KUBEADM_API)),
                ("kind", Yaml::str("ClusterConfiguration")),
                ("clusterName", q(cluster.cluster_name.as_str())),
                ("kubernetesVersion", q(cluster.version_tag())),
                // kubeadm's default, written out: the card's images are named after it
                // (crate::artifacts::Release::kubeadm_images).
                (
                    "imageRepository",
                    q(crate::artifacts::KUBEADM_IMAGE_REPOSITORY),
                ),
                (
                    "controlPlaneEndpoint",
                    q(cluster.control_plane_endpoint.as_str()),
                ),
                (
                    "networking",
                    Yaml::map([
                        ("podSubnet", q(cluster.pod_subnet.to_string())),
                        ("serviceSubnet", q(cluster.service_subnet.to_string())),
                    ]),
                ),
            ];
            // etcd's and CoreDNS's tags, from the catalog: the images the card carries, not
            // the ones compiled into this kubeadm binary (README, "Container images in the card",
            // says what to do before `kubeadm upgrade`).
            if let Some(etcd) = &cluster.etcd_image {
                cluster_config.push(("etcd", Yaml::map([("local", etcd.yaml())])));
            }
            if let Some(dns) = &cluster.coredns_image {
                cluster_config.push(("dns", dns.yaml()));
            }
            let cluster_config = Yaml::map(cluster_config);
            let kubelet = Yaml::map([
                ("apiVersion", Yaml::str(KUBELET_API)),
                ("kind", Yaml::str("KubeletConfiguration")),
                ("cgroupDriver", Yaml::str("systemd")),
                ("failSwapOn", Yaml::Bool(true)),
            ]);
            vec![Yaml::map(init), cluster_config, kubelet]
        }
        Role::JoinControlPlane | Role::Worker => {
            if node.role == Role::JoinControlPlane {
                comments.push(
                    "# A joining control plane: the shared CA and keys (ca, sa, front-proxy-ca,"
                        .into(),
                );
                comments.push(
                    "# etcd/ca) must already be in /etc/kubernetes/pki; piforge puts them there."
                        .into(),
                );
            }
            let discovery = Yaml::map([(
                "bootstrapToken",
                Yaml::map([
                    (
                        "apiServerEndpoint",
                        q(cluster.control_plane_endpoint.as_str()),
                    ),
                    ("token", q(cluster.token.secret())),
                    (
                        "caCertHashes",
                        Yaml::Seq(vec![q(cluster.ca_cert_hash.as_str())]),
                    ),
                ]),
            )]);
            let mut join = vec![
                ("apiVersion", Yaml::str(KUBEADM_API)),
                ("kind", Yaml::str("JoinConfiguration")),
                ("discovery", discovery),
                ("nodeRegistration", registration),
            ];
            if node.role == Role::JoinControlPlane {
                join.push((
                    "controlPlane",
                    match &node.advertise_address {
                        Some(addr) => Yaml::map([(
                            "localAPIEndpoint",
                            Yaml::map([("advertiseAddress", q(addr.as_str()))]),
                        )]),
                        None => Yaml::empty_map(),
                    },
                ));
            }
            vec![Yaml::map(join)]
        }
    };
    let docs: Vec<Document> = docs
        .into_iter()
        .enumerate()
        .map(|(i, body)| Document {
            comments: if i == 0 {
                std::mem::take(&mut comments)
            } else {
                Vec::new()
            },
            body,
        })
        .collect();
    yaml::write_stream(&docs, SeqIndent::Flush)
}

/// Sets the pod network of the upstream Flannel manifest (`kube-flannel.yml`) to `pod_subnet`:
/// replaces `"Network": "10.244.0.0/16"` in its `net-conf.json`. Flannel must use the cluster's
/// pod subnet or pods get addresses the nodes do not route.
pub fn patch_flannel(manifest: &str, pod_subnet: Cidr) -> Result<String, KubeadmError> {
    const DEFAULT: &str = "\"Network\": \"10.244.0.0/16\"";
    if !manifest.contains(DEFAULT) {
        return Err(KubeadmError::FlannelNetworkNotFound);
    }
    Ok(manifest.replace(DEFAULT, &format!("\"Network\": \"{pod_subnet}\"")))
}
