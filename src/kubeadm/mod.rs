//! What a node needs to form or join the cluster on first boot, as text: the kubeadm
//! configuration (`/etc/piforge/kubeadm.yaml`), the systemd unit that runs it once, the script
//! that unit runs, and the Flannel manifest fitted to the pod subnet. Pure rendering, no I/O.

mod firstboot;

#[cfg(test)]
mod tests;

pub use firstboot::{
    first_boot_script, first_boot_unit, FIRST_BOOT_SCRIPT_PATH, FIRST_BOOT_UNIT_NAME,
    FLANNEL_MANIFEST_PATH, STATUS_PATH,
};

/// Where the node's kubeadm configuration goes on the root filesystem (mode 0600: it holds the
/// bootstrap token).
pub const CONFIG_PATH: &str = "/etc/piforge/kubeadm.yaml";

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

/// Everything the nodes of one cluster share.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterParams {
    pub cluster_name: String,
    /// `1.34.2` (a leading `v` is accepted too).
    pub kubernetes_version: String,
    /// `host:port` of the API server every node talks to, such as `192.168.1.10:6443`.
    pub control_plane_endpoint: String,
    pub pod_subnet: String,
    pub service_subnet: String,
    /// The bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub token: String,
    /// The token's lifetime as a Go duration (`24h0m0s`; `0s` never expires); see [`go_duration`].
    pub token_ttl: String,
    /// `sha256:` and 64 hex digits; see `pki::Secrets::discovery_hash`.
    pub ca_cert_hash: String,
    /// `unix:///run/containerd/containerd.sock`.
    pub cri_socket: String,
    pub cni: Cni,
}

impl std::fmt::Debug for ClusterParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterParams")
            .field("cluster_name", &self.cluster_name)
            .field("kubernetes_version", &self.kubernetes_version)
            .field("control_plane_endpoint", &self.control_plane_endpoint)
            .field("pod_subnet", &self.pod_subnet)
            .field("service_subnet", &self.service_subnet)
            .field("token", &"[elided]")
            .field("token_ttl", &self.token_ttl)
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field("cri_socket", &self.cri_socket)
            .field("cni", &self.cni)
            .finish()
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

/// A Go `time.Duration` string for whole seconds, as kubeadm writes them: `0s`, `45s`,
/// `1m30s`, `24h0m0s`.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// The `ttl` of a bootstrap token: `None` (never expires) is `0s`, which kubeadm reads the same way.
pub fn token_ttl(ttl_secs: Option<u64>) -> String {
    go_duration(ttl_secs.unwrap_or(0))
}

impl ClusterParams {
    /// Checks the fields whose format kubeadm would only reject on the node, at first boot.
    pub fn validate(&self) -> Result<(), KubeadmError> {
        let bad = |what, value: &str, reason| {
            Err(KubeadmError::Invalid {
                what,
                value: value.to_string(),
                reason,
            })
        };
        if !crate::pki::is_valid_token(&self.token) {
            return bad(
                "bootstrap token",
                "[elided]",
                "it must match [a-z0-9]{6}.[a-z0-9]{16}",
            );
        }
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
        if !is_go_duration(&self.token_ttl) {
            return bad(
                "token ttl",
                &self.token_ttl,
                "it must be a Go duration such as 24h0m0s or 0s",
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
        for (what, v) in [
            ("cluster name", &self.cluster_name),
            ("pod subnet", &self.pod_subnet),
            ("service subnet", &self.service_subnet),
        ] {
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(what, v, "it must be non-empty, without spaces");
            }
        }
        Ok(())
    }

    fn version_tag(&self) -> String {
        format!("v{}", self.kubernetes_version.trim_start_matches('v'))
    }
}

/// Whether `s` is a Go duration of hours, minutes and seconds (`24h0m0s`, `90m`, `0s`).
fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    let mut units = "hms";
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Some(unit) = rest[digits..].chars().next() else {
            return false;
        };
        let Some(pos) = units.find(unit) else {
            return false;
        };
        if digits == 0 {
            return false;
        }
        units = &units[pos + 1..];
        rest = &rest[digits + 1..];
    }
    true
}

/// A YAML double-quoted scalar.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The node's `/etc/piforge/kubeadm.yaml`.
///
/// The first control plane gets an InitConfiguration (with the bootstrap token), a
/// ClusterConfiguration and a KubeletConfiguration (systemd cgroups, swap refused). The
/// others get a JoinConfiguration that discovers the API server with the token and pins the
/// CA by its hash; extra control planes add `controlPlane`, and kubeadm finds the shared CA
/// and keys already in `/etc/kubernetes/pki`. Joining nodes take their kubelet settings from
/// the cluster, so they get no KubeletConfiguration. Values are quoted, so no field can add
/// YAML of its own; call [`ClusterParams::validate`] first to catch bad values at build time.
pub fn render_config(cluster: &ClusterParams, node: &NodeParams) -> String {
    let mut out = String::from("# Written by piforge. Holds the bootstrap token: keep it 0600.\n");
    match node.role {
        Role::InitControlPlane => {
            out += &format!(
                "apiVersion: {KUBEADM_API}\n\
                 kind: InitConfiguration\n\
                 bootstrapTokens:\n\
                 - token: {token}\n  \
                   ttl: {ttl}\n  \
                   description: \"made by piforge for the cluster's nodes\"\n  \
                   usages:\n  \
                   - signing\n  \
                   - authentication\n  \
                   groups:\n  \
                   - {DEFAULT_NODE_TOKEN_GROUP}\n",
                token = q(&cluster.token),
                ttl = q(&cluster.token_ttl),
            );
            out += &node_registration(cluster, node);
            if let Some(addr) = &node.advertise_address {
                out += &format!("localAPIEndpoint:\n  advertiseAddress: {}\n", q(addr));
            }
            out += &format!(
                "---\n\
                 apiVersion: {KUBEADM_API}\n\
                 kind: ClusterConfiguration\n\
                 clusterName: {name}\n\
                 kubernetesVersion: {version}\n\
                 controlPlaneEndpoint: {endpoint}\n\
                 networking:\n  \
                   podSubnet: {pods}\n  \
                   serviceSubnet: {services}\n\
                 ---\n\
                 apiVersion: {KUBELET_API}\n\
                 kind: KubeletConfiguration\n\
                 cgroupDriver: systemd\n\
                 failSwapOn: true\n",
                name = q(&cluster.cluster_name),
                version = q(&cluster.version_tag()),
                endpoint = q(&cluster.control_plane_endpoint),
                pods = q(&cluster.pod_subnet),
                services = q(&cluster.service_subnet),
            );
        }
        Role::JoinControlPlane | Role::Worker => {
            if node.role == Role::JoinControlPlane {
                out += "# A joining control plane: the shared CA and keys (ca, sa, front-proxy-ca,\n\
                        # etcd/ca) must already be in /etc/kubernetes/pki; piforge puts them there.\n";
            }
            out += &format!(
                "apiVersion: {KUBEADM_API}\n\
                 kind: JoinConfiguration\n\
                 discovery:\n  \
                   bootstrapToken:\n    \
                     apiServerEndpoint: {endpoint}\n    \
                     token: {token}\n    \
                     caCertHashes:\n    \
                     - {hash}\n",
                endpoint = q(&cluster.control_plane_endpoint),
                token = q(&cluster.token),
                hash = q(&cluster.ca_cert_hash),
            );
            out += &node_registration(cluster, node);
            if node.role == Role::JoinControlPlane {
                match &node.advertise_address {
                    Some(addr) => {
                        out += &format!(
                            "controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: {}\n",
                            q(addr)
                        )
                    }
                    None => out += "controlPlane: {}\n",
                }
            }
        }
    }
    out
}

fn node_registration(cluster: &ClusterParams, node: &NodeParams) -> String {
    format!(
        "nodeRegistration:\n  name: {}\n  criSocket: {}\n",
        q(&node.name),
        q(&cluster.cri_socket)
    )
}

/// Sets the pod network of the upstream Flannel manifest (`kube-flannel.yml`) to `pod_subnet`:
/// replaces `"Network": "10.244.0.0/16"` in its `net-conf.json`. Flannel must use the cluster's
/// pod subnet or pods get addresses the nodes do not route.
pub fn patch_flannel(manifest: &str, pod_subnet: &str) -> Result<String, KubeadmError> {
    if pod_subnet.is_empty()
        || !pod_subnet
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b".:/".contains(&b))
    {
        return Err(KubeadmError::Invalid {
            what: "pod subnet",
            value: pod_subnet.to_string(),
            reason: "it must be a CIDR such as 10.244.0.0/16",
        });
    }
    const DEFAULT: &str = "\"Network\": \"10.244.0.0/16\"";
    if !manifest.contains(DEFAULT) {
        return Err(KubeadmError::FlannelNetworkNotFound);
    }
    Ok(manifest.replace(DEFAULT, &format!("\"Network\": \"{pod_subnet}\"")))
}
