//! Phase 4 of a build: the changes as data, in layers.
//!
//! - the common layer: the node payload, the same for every node of the cluster;
//! - a role layer per kubeadm role in use (first control plane, other control planes,
//!   workers): the NoCloud pointer when the base needs one, the first-boot kubeadm unit and
//!   script, the CA on control planes, the pod network on the first control plane, and the
//!   site's overlays last (so they can override anything);
//! - a node layer per node: its disk id, kubeadm configuration and NoCloud seed (kilobytes).
//!
//! Nothing here writes; [`super::outputs`] applies the layers.

use std::fmt;
use std::fs;

use sha2::{Digest, Sha256};

use super::{io_error, BuildError, BuildOptions, Validated};
use crate::artifacts::{ArtifactName, FetchedArtifact, Release};
use crate::payload;
use crate::pki;
use crate::plan::{BootOp, Content, Grow, Owner, Plan, RootOp};
use crate::render::{cloud_init, first_boot, kube_vip, kubeadm, wifi};
use crate::spec::{self, Role, Spec};

/// A role's layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleLayer {
    pub role: kubeadm::Role,
    pub plan: Plan,
}

/// A node's layer, applied to a copy of its role's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayer {
    pub name: String,
    pub role: kubeadm::Role,
    pub spec_role: Role,
    pub address: Option<String>,
    pub plan: Plan,
}

/// Everything a build will change, layer by layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    pub common: Plan,
    pub roles: Vec<RoleLayer>,
    pub nodes: Vec<NodeLayer>,
}

impl BuildPlan {
    /// The common layer followed by a role's layer: what one role image gets.
    pub fn role_image_plan(&self, role: kubeadm::Role) -> Option<Plan> {
        let layer = self.roles.iter().find(|r| r.role == role)?;
        Some(self.common.then(&layer.plan))
    }
}

impl fmt::Display for BuildPlan {
    /// The `build --dry-run` listing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== common layer (every node)")?;
        write!(f, "{}", self.common)?;
        for r in &self.roles {
            writeln!(f, "\n== role layer: {}", role_key(r.role))?;
            write!(f, "{}", r.plan)?;
        }
        for n in &self.nodes {
            writeln!(
                f,
                "\n== node layer: {} ({}, {})",
                n.name,
                role_key(n.role),
                n.address.as_deref().unwrap_or("dhcp")
            )?;
            write!(f, "{}", n.plan)?;
        }
        Ok(())
    }
}

/// The kubeadm role of each node: the init node (see [`super::state::init_node`]) inits,
/// other control planes join as control planes, workers join.
pub(super) fn kubeadm_role(node: &spec::Node, init_node: Option<&str>) -> kubeadm::Role {
    match node.role {
        Role::Worker => kubeadm::Role::Worker,
        Role::ControlPlane if Some(node.name.as_str()) == init_node => {
            kubeadm::Role::InitControlPlane
        }
        Role::ControlPlane => kubeadm::Role::JoinControlPlane,
    }
}

/// The name of a role image (`<staging>/.roles/<key>.img`) and of a role in listings.
pub(super) fn role_key(r: kubeadm::Role) -> &'static str {
    match r {
        kubeadm::Role::InitControlPlane => "init-control-plane",
        kubeadm::Role::JoinControlPlane => "join-control-plane",
        kubeadm::Role::Worker => "worker",
    }
}

/// A card's MBR disk id, derived from the cluster and node names (never 0): unique per node,
/// the same on every rebuild.
pub fn disk_id(cluster: &str, node: &str) -> u32 {
    let h = Sha256::digest(format!("piforge disk id\0{cluster}\0{node}"));
    match u32::from_le_bytes([h[0], h[1], h[2], h[3]]) {
        0 => 1,
        id => id,
    }
}

fn root_write(plan: &mut Plan, path: &str, data: impl Into<Vec<u8>>, mode: u16) {
    plan.root.push(RootOp::Write {
        path: path.to_string(),
        content: Content::Bytes(data.into()),
        owner: Owner {
            mode,
            uid: 0,
            gid: 0,
        },
    });
}

/// What every node shares: the cluster parameters of the kubeadm configuration.
pub(super) fn cluster_params(
    spec: &Spec,
    release: &Release,
    secrets: &pki::Secrets,
    opts: &BuildOptions,
) -> Result<kubeadm::ClusterParams, BuildError> {
    let token = match &opts.token {
        Some(t) => spec::Token::parse(t).map_err(|_| BuildError::BadToken)?,
        None => spec::Token::parse(&secrets.token).map_err(BuildError::SecretsToken)?,
    };
    let (etcd_image, coredns_image) = release.kubeadm_image_metas();
    let cluster = kubeadm::ClusterParams {
        cluster_name: spec.name.clone(),
        kubernetes_version: spec.kubernetes.version.clone(),
        control_plane_endpoint: spec.control_plane_endpoint(),
        pod_subnet: spec.kubernetes.pod_subnet,
        service_subnet: spec.kubernetes.service_subnet,
        token,
        token_ttl: spec::GoDuration::from_secs(super::secrets::token_ttl_secs(spec).unwrap_or(0)),
        ca_cert_hash: secrets.discovery_hash(),
        cri_socket: "unix:///run/containerd/containerd.sock".into(),
        cni: spec.kubernetes.cni.into(),
        etcd_image,
        coredns_image,
    };
    cluster.validate()?;
    Ok(cluster)
}

/// Phase 4: every layer of the build, as data.
pub(super) fn plan(
    v: &Validated,
    secrets: &pki::Secrets,
    arts: &[FetchedArtifact],
    staged: &super::images::StagedImages,
    debs: &[crate::apt::CardDeb],
    opts: &BuildOptions,
) -> Result<BuildPlan, BuildError> {
    let spec = &v.spec;
    let cluster = cluster_params(spec, &v.release, secrets, opts)?;
    let mut common = Plan::new(opts.epoch);
    let base = &v.base_facts;
    payload::add_payload(
        &mut common,
        &v.release,
        arts,
        base,
        &payload::PayloadOptions {
            debs: debs.to_vec(),
            pi5_4k_pages: spec.image.pi5_4k_pages.is_some(),
        },
    )
    .map_err(payload::PayloadSetupError::from)?;

    let wanted: Vec<&spec::Node> = spec
        .nodes
        .iter()
        .filter(|n| v.nodes.iter().any(|w| *w == n.name))
        .collect();
    let mut roles: Vec<RoleLayer> = Vec::new();
    for node in &wanted {
        let role = kubeadm_role(node, v.init_node.as_deref());
        if roles.iter().any(|r| r.role == role) {
            continue;
        }
        let mut plan = role_layer(v, secrets, arts, &cluster, role, opts.epoch)?;
        // The role's container images (before the site's overlays, which role_layer added
        // last; an overlay never names these paths).
        let (archives, pull) = staged.for_role(spec, &v.release, role);
        super::images::add_role_images(&mut plan, &archives, &pull);
        roles.push(RoleLayer { role, plan });
    }
    let mut build = BuildPlan {
        common,
        roles,
        nodes: Vec::new(),
    };
    // The login user's groups: the base's default user's, as cluster.yaml adds or narrows.
    let groups = cloud_init::login_groups(
        &base.default_user_groups,
        &base.groups,
        spec.user_groups.as_deref(),
        &spec.extra_groups,
    );
    // What every node receives that its seed does not show, for its instance-id.
    let common_inputs = cloud_init::NodeInputs {
        cluster_name: spec.name.clone(),
        ca_cert_pem: secrets.ca.cert_pem.clone(),
        token: cluster.token.clone(),
        endpoint: cluster.control_plane_endpoint.clone(),
        artifact_digests: arts
            .iter()
            .map(|a| (a.spec.name.to_string(), a.sha256.clone()))
            .collect(),
        base_image_sha256: v.base.input_sha256.clone().unwrap_or_default(),
        kubeadm_config: String::new(),
        role_digest: String::new(),
    };
    for node in &wanted {
        let role = kubeadm_role(node, v.init_node.as_deref());
        let inputs = cloud_init::NodeInputs {
            role_digest: match build.role_image_plan(role) {
                Some(p) => plan_digest(&p, arts)?,
                None => String::new(),
            },
            ..common_inputs.clone()
        };
        let host_key = secrets.host_keys.get(node.name.as_str());
        let rejoin = v
            .rejoining
            .iter()
            .any(|n| *n == node.name)
            .then(|| rejoin_params(spec, node, &cluster));
        let extras = NodeExtras {
            groups: &groups,
            inputs,
            host_key,
            rejoin,
        };
        let mut plan = node_layer(spec, node, role, &cluster, extras, opts.epoch);
        if let Some(w) = spec.node_wifi(node) {
            wifi_layer(&mut plan, spec, node, w, base)?;
        }
        build.nodes.push(NodeLayer {
            name: node.name.to_string(),
            role,
            spec_role: node.role,
            address: node.address.map(|a| a.to_string()),
            plan,
        });
    }
    Ok(build)
}

/// What one kubeadm role adds to the common layer.
fn role_layer(
    v: &Validated,
    secrets: &pki::Secrets,
    arts: &[FetchedArtifact],
    cluster: &kubeadm::ClusterParams,
    role: kubeadm::Role,
    epoch: i64,
) -> Result<Plan, BuildError> {
    let mut plan = Plan::new(epoch);
    // cloud-init must find the seed on the boot partition.
    if !v.facts.cloud_init.seed_on_boot_partition {
        root_write(
            &mut plan,
            payload::paths::NOCLOUD_SNIPPET,
            cloud_init::nocloud_snippet(&v.facts.boot.label),
            0o644,
        );
    }
    // The first-boot kubeadm unit and script.
    root_write(
        &mut plan,
        first_boot::FIRST_BOOT_SCRIPT_PATH,
        first_boot::first_boot_script(role, cluster.cni),
        0o755,
    );
    let unit = payload::paths::unit(first_boot::FIRST_BOOT_UNIT_NAME);
    root_write(&mut plan, &unit, first_boot::first_boot_unit(), 0o644);
    let (link, target) = payload::paths::wants_link(first_boot::FIRST_BOOT_UNIT_NAME);
    plan.root.push(RootOp::Symlink {
        path: link,
        target,
        owner: Owner {
            mode: 0o777,
            uid: 0,
            gid: 0,
        },
    });
    // The CA (and shared keys) on control planes, keys 0600.
    if role.is_control_plane() {
        for f in secrets.control_plane_pki() {
            root_write(
                &mut plan,
                &format!("{}/{}", payload::paths::KUBERNETES_PKI, f.path),
                f.contents.clone(),
                f.mode as u16,
            );
        }
    }
    // kube-vip on every control plane when the endpoint is a VIP: in place before kubeadm
    // runs, so the init node's VIP comes up while `kubeadm init` waits for the API server.
    // 0600 like kubeadm's own manifests.
    if role.is_control_plane() {
        if let Some(image) = v.release.kube_vip_image() {
            if let Some(p) = kube_vip::KubeVipParams::from_spec(&v.spec, image) {
                root_write(
                    &mut plan,
                    payload::paths::KUBE_VIP_MANIFEST,
                    kube_vip::manifest(&p, role),
                    0o600,
                );
            }
        }
    }
    // The pod network, patched to the pod subnet, applied by the first control plane.
    if role == kubeadm::Role::InitControlPlane && cluster.cni == kubeadm::Cni::Flannel {
        if let Some(a) = arts.iter().find(|a| a.spec.name == ArtifactName::Flannel) {
            let text = fs::read_to_string(&a.path).map_err(io_error(&a.path))?;
            let patched = kubeadm::patch_flannel(&text, cluster.pod_subnet)?;
            root_write(&mut plan, payload::paths::FLANNEL_MANIFEST, patched, 0o644);
        }
    }
    // The site's own overlays last, so they can override anything.
    for o in &v.spec.overlays {
        crate::plan::add_root_overlay(&mut plan, o).map_err(|e| BuildError::Overlay {
            path: o.display().to_string(),
            msg: e.to_string(),
        })?;
    }
    Ok(plan)
}

/// What one node adds to its role's image: a disk id of its own (apply rewrites the
/// `PARTUUID=` references to it), its kubeadm configuration (0600: it holds the token) and
/// its NoCloud seed, and its SSH host key (root filesystem only: never the FAT partition).
/// What a node receives beside its spec entry and role: its login groups, the inputs of its
/// instance-id, and its host key.
struct NodeExtras<'a> {
    groups: &'a [String],
    inputs: cloud_init::NodeInputs,
    host_key: Option<&'a pki::HostKey>,
    /// On a card that replaces a node the cluster already had.
    rejoin: Option<first_boot::RejoinParams>,
}

/// `host:port` of an API server on `addr`.
fn api_server(addr: std::net::IpAddr) -> String {
    match addr {
        std::net::IpAddr::V4(a) => format!("{a}:{}", spec::DEFAULT_API_PORT),
        std::net::IpAddr::V6(a) => format!("[{a}]:{}", spec::DEFAULT_API_PORT),
    }
}

/// What a reimaged `node` needs to remove its old self: the endpoint first, then every other
/// control plane with a fixed address (without a VIP the endpoint may be this very node).
fn rejoin_params(
    spec: &Spec,
    node: &spec::Node,
    cluster: &kubeadm::ClusterParams,
) -> first_boot::RejoinParams {
    let mut servers = vec![cluster.control_plane_endpoint.clone()];
    for cp in spec.control_planes().filter(|cp| cp.name != node.name) {
        if let Some(a) = cp.address {
            let s = api_server(a.addr);
            if !servers.contains(&s) {
                servers.push(s);
            }
        }
    }
    first_boot::RejoinParams {
        node: node.name.to_string(),
        address: node.address.map(|a| a.addr.to_string()),
        cluster_name: cluster.cluster_name.clone(),
        kubernetes_version: format!("v{}", cluster.kubernetes_version.trim_start_matches('v')),
        endpoint: cluster.control_plane_endpoint.clone(),
        servers,
    }
}

fn node_layer(
    spec: &Spec,
    node: &spec::Node,
    role: kubeadm::Role,
    cluster: &kubeadm::ClusterParams,
    extras: NodeExtras<'_>,
    epoch: i64,
) -> Plan {
    let NodeExtras {
        groups,
        mut inputs,
        host_key,
        rejoin,
    } = extras;
    let mut plan = Plan::new(epoch);
    plan.grow = Grow::Off;
    plan.disk_id = Some(disk_id(&spec.name, &node.name));
    let np = kubeadm::NodeParams {
        name: node.name.to_string(),
        role,
        advertise_address: node.address.map(|a| a.addr.to_string()),
    };
    inputs.kubeadm_config = kubeadm::render_config(cluster, &np);
    root_write(
        &mut plan,
        payload::paths::KUBEADM_CONFIG,
        inputs.kubeadm_config.clone(),
        0o600,
    );
    // The node's own host key, as `ssh-keygen -A` would have made it (private 0600, public
    // 0644); the seed tells cloud-init neither to delete nor to regenerate host keys.
    if let Some(k) = host_key {
        let key = payload::paths::SSH_HOST_KEY;
        root_write(&mut plan, key, k.private_openssh.clone(), 0o600);
        root_write(
            &mut plan,
            payload::paths::SSH_HOST_KEY_PUB,
            k.public_openssh.clone(),
            0o644,
        );
        root_write(
            &mut plan,
            payload::paths::SSH_HOST_KEY_MARKER,
            pki::host_key_marker(node.name.as_str(), k),
            0o644,
        );
    }
    if let Some(r) = &rejoin {
        root_write(
            &mut plan,
            payload::paths::REJOIN,
            first_boot::rejoin_file(r),
            0o644,
        );
    }
    for (name, data) in cloud_init::seed(spec, node, groups, &inputs).files() {
        plan.boot.push(BootOp::Write {
            path: format!("/{name}"),
            content: Content::Bytes(data.into()),
        });
    }
    plan
}

/// A Wi-Fi node's connection where its base's network stack reads it (root filesystem,
/// 0600: it holds the PSK), and the regulatory domain as that base expects it.
fn wifi_layer(
    plan: &mut Plan,
    spec: &Spec,
    node: &spec::Node,
    w: &spec::Wifi,
    base: &payload::BaseFacts,
) -> Result<(), BuildError> {
    let addr = wifi::WifiAddressing {
        address: node.address,
        gateway: spec.network.gateway,
        dns: spec.network.dns.clone(),
    };
    if base.network_manager {
        // Raspberry Pi OS (NetworkManager, also when netplan is installed: NetworkManager
        // reads its own keyfiles whatever netplan generates).
        root_write(
            plan,
            payload::paths::NM_WIFI_CONNECTION,
            wifi::nm_keyfile(node.name.as_str(), w, &addr),
            0o600,
        );
        root_write(plan, payload::paths::NM_STATE, wifi::nm_state(), 0o644);
        plan.cmdline_add.push(wifi::regdom_cmdline_token(w));
    } else if base.netplan {
        root_write(
            plan,
            payload::paths::NETPLAN_WIFI,
            wifi::netplan_wifi(w, &addr),
            0o600,
        );
    } else {
        return Err(BuildError::NoWifiStack(node.name.to_string()));
    }
    Ok(())
}

/// A digest of a role image's plan content, so that a node's instance-id changes with it:
/// every operation's path, the bytes it writes (a file read from the host, such as a site
/// overlay's, is read and hashed; release artifacts are not read again: their digests go
/// into the instance-id by themselves), and the boot-partition settings.
fn plan_digest(plan: &Plan, arts: &[FetchedArtifact]) -> Result<String, BuildError> {
    let mut h = Sha256::new();
    for op in &plan.root {
        h.update(op.path().as_bytes());
        h.update([0]);
        match op {
            RootOp::Write {
                content: Content::Bytes(b),
                ..
            } => h.update(Sha256::digest(b)),
            // An image archive: its pinned digest is in the images list, hashed above.
            RootOp::Write {
                path,
                content: Content::Host { .. },
                ..
            } if path.starts_with(&format!("{}/", payload::paths::IMAGES_DIR)) => {}
            RootOp::Write {
                content: Content::Host { path, .. },
                ..
            } => match arts.iter().find(|a| a.path == *path) {
                Some(a) => h.update(a.sha256.as_bytes()),
                None => {
                    let f = fs::File::open(path).map_err(io_error(path))?;
                    let (digest, _) = crate::digest::sha256_reader(f).map_err(io_error(path))?;
                    h.update(digest.as_bytes());
                }
            },
            RootOp::Symlink { target, .. } => h.update(target.as_bytes()),
            _ => {}
        }
    }
    for t in &plan.cmdline_add {
        h.update(t.as_bytes());
        h.update([0]);
    }
    for (k, v) in &plan.config {
        h.update(format!("{k}={v}\0").as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_ids_differ_per_node_and_are_stable() {
        let a = disk_id("home", "pi-1");
        assert_eq!(a, disk_id("home", "pi-1"));
        assert_ne!(a, disk_id("home", "pi-2"));
        assert_ne!(a, disk_id("lab", "pi-1"));
        assert_ne!(a, 0);
    }
}
