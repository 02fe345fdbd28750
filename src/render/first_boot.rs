//! The unit and script that put a node into the cluster on its first boot, unattended.
//! Both are plain files under `overlays/first-boot/`; the script is a template with
//! `{{NAME}}` placeholders (see [`crate::payload_files::render`]) filled per role.
//!
//! Retrying: the script loops by itself, with a backoff of 10 s doubling to 5 minutes; a
//! failed kubeadm attempt is cleaned up with `kubeadm reset` and tried again. The unit is
//! `Type=exec` with `Restart=on-failure` (for a crash of the script itself), not oneshot: a
//! oneshot that loops would hold `multi-user.target` back until the cluster formed, since a
//! target waits for the units it wants. Both directives load on systemd 252 (bookworm) and 257
//! (trixie); `systemd-analyze verify` on 252 accepts `Type=oneshot` with `Restart=on-failure`
//! too, and refuses only `Restart=always`/`on-success` for oneshot.
//!
//! Before kubeadm the script waits for the clock (up to 5 minutes for systemd-timesyncd's first
//! sync: a Pi has no real-time clock) and for the OS tools `piforge-packages.service` installs
//! beside the boot (`install-packages`), showing that step's state in the status file.
//!
//! State, in `/var/lib/piforge` (root only): `kubeadm-started` while kubeadm may have left
//! half a node behind, `cni-pending` after `kubeadm init` until Flannel is applied, and `pki/`,
//! a copy of the pre-placed CA, because `kubeadm reset` deletes `/etc/kubernetes/pki`. The
//! unit runs while the node has no `kubelet.conf`, or while either marker says a step was cut
//! short by a reboot; a node joined by hand is left alone. A kube-vip manifest placed by
//! piforge is kept in `kube-vip.yaml` there too (`kubeadm reset` empties the manifests
//! directory), and switched from `super-admin.conf` to `admin.conf` after `kubeadm init`.
//!
//! A reimaged control plane (`/etc/piforge/rejoin`, [`rejoin_file`]) first removes its old
//! etcd member and Node object through a surviving API server, with a one-hour client
//! certificate made from the CA on its card; see the script's `forget_old_node`.

use super::kubeadm::{Cni, Role};

// The paths are the payload's, defined once in `payload::paths`.
pub use crate::payload::paths::{
    FIRST_BOOT_SCRIPT as FIRST_BOOT_SCRIPT_PATH, FIRST_BOOT_UNIT as FIRST_BOOT_UNIT_NAME,
    FLANNEL_MANIFEST as FLANNEL_MANIFEST_PATH, REJOIN as REJOIN_PATH, STATUS_FILE as STATUS_PATH,
};

const UNIT: &str =
    include_str!("../../overlays/first-boot/usr/local/lib/systemd/system/piforge-kubeadm.service");
pub(crate) const SCRIPT_TEMPLATE: &str =
    include_str!("../../overlays/first-boot/usr/local/lib/piforge/kubeadm-first-boot");

/// The `piforge-kubeadm.service` unit (see the module docs for why it is not oneshot).
pub fn first_boot_unit() -> &'static str {
    UNIT
}

/// The script `/usr/local/lib/piforge/kubeadm-first-boot` for a node of `role`: it waits for
/// containerd, runs `kubeadm init` (first control plane) or `kubeadm join` with
/// `/etc/piforge/kubeadm.yaml` until it succeeds, then on the first control plane applies
/// Flannel when `cni` is [`Cni::Flannel`]. After every step it writes the phase to
/// `/boot/firmware/piforge-status.txt`. It holds no secret: the token is only in the config.
pub fn first_boot_script(role: Role, cni: Cni) -> String {
    let (phase, command) = match role {
        // The token is in the config; --skip-token-print keeps it out of the join command
        // kubeadm prints at the end (redact would drop that line anyway).
        Role::InitControlPlane => (
            "kubeadm-init",
            r#"kubeadm init --config "$CONFIG" --skip-token-print"#,
        ),
        Role::JoinControlPlane | Role::Worker => {
            ("kubeadm-join", r#"kubeadm join --config "$CONFIG""#)
        }
    };
    // Only the first control plane applies the CNI; the others get it from the cluster.
    let cni = match (role, cni) {
        (Role::InitControlPlane, Cni::Flannel) => "flannel",
        _ => "none",
    };
    let verb = command.split(" --").next().unwrap_or(command);
    let vars = [
        ("ROLE", role.as_str()),
        ("CNI", cni),
        ("STATUS_PATH", STATUS_PATH),
        ("FLANNEL_MANIFEST", FLANNEL_MANIFEST_PATH),
        ("KUBE_VIP_MANIFEST", super::kube_vip::MANIFEST_PATH),
        ("SUPER_ADMIN_CONF", super::kube_vip::SUPER_ADMIN_CONF),
        ("ADMIN_CONF", super::kube_vip::ADMIN_CONF),
        ("REJOIN", REJOIN_PATH),
        ("PHASE", phase),
        ("VERB", verb),
        ("COMMAND", command),
    ];
    // The template and the names are both fixed at compile time; the tests render every
    // role and CNI, so this cannot fail at run time.
    crate::payload_files::render(SCRIPT_TEMPLATE, &vars)
        .expect("the first-boot script template and its values agree (tested)")
}

/// What a card that replaces a node the cluster already had (a reimage) needs to remove the
/// old node's leftovers before it joins: see [`rejoin_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejoinParams {
    /// The node's name, as the old card registered it (Node object, etcd member name).
    pub node: String,
    /// Its fixed address, if any (the old etcd member's peer URL is on it).
    pub address: Option<String>,
    pub cluster_name: String,
    /// `v1.34.11`.
    pub kubernetes_version: String,
    /// The control-plane endpoint (`host:port`).
    pub endpoint: String,
    /// The API servers to ask, in order: the endpoint, then the other control planes with a
    /// fixed address (`host:port`; an IPv6 host in brackets).
    pub servers: Vec<String>,
}

/// `/etc/piforge/rejoin`: `key=value` lines that `kubeadm-first-boot` reads on a card that
/// replaces a node of the cluster. A control plane uses them to make itself a short-lived
/// client certificate from the CA on its card and remove its old etcd member and Node object
/// through a surviving API server before `kubeadm join --control-plane`; a worker only names
/// the node it replaces in its status (kubeadm lets it join under the old name once the old
/// Node is no longer Ready). No secret. Every value is a node name, an address, a version or
/// a `host:port` list, checked by the spec and the kubeadm parameters before it gets here.
pub fn rejoin_file(p: &RejoinParams) -> String {
    format!(
        "# Written by piforge: this card replaces the node {node}, which the cluster already had.\n\
         # kubeadm-first-boot removes what the old card left in the cluster (its etcd member and\n\
         # Node object) before it joins; see piforge-status.txt on the boot partition.\n\
         node={node}\n\
         address={address}\n\
         cluster={cluster}\n\
         version={version}\n\
         endpoint={endpoint}\n\
         servers={servers}\n",
        node = p.node,
        address = p.address.as_deref().unwrap_or(""),
        cluster = p.cluster_name,
        version = p.kubernetes_version,
        endpoint = p.endpoint,
        servers = p.servers.join(" "),
    )
}

/// The commands that remove a reimaged node's leftovers by hand, run where kubectl reaches
/// the cluster: the fallback when the card cannot do it itself (its status file shows the
/// same commands). A worker's old Node needs removing only when it stays Ready.
pub fn manual_rejoin_commands(node: &str, control_plane: bool) -> Vec<String> {
    let mut out = Vec::new();
    if control_plane {
        let etcdctl = "kubectl -n kube-system exec etcd-<a surviving control plane> -- etcdctl \
             --endpoints https://127.0.0.1:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt \
             --cert /etc/kubernetes/pki/etcd/server.crt --key /etc/kubernetes/pki/etcd/server.key";
        out.push(format!("{etcdctl} member list"));
        out.push(format!(
            "{etcdctl} member remove <the ID of {node} in that list>"
        ));
    }
    out.push(format!("kubectl delete node {node}"));
    out
}
