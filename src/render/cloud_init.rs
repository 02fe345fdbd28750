//! The NoCloud seed of a node (user-data, meta-data, network-config) and the cloud.cfg.d
//! snippet that points cloud-init at it.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::yaml::{self, SeqIndent, Yaml};
use crate::spec::{Node, Spec, Token};

/// Where [`nocloud_snippet`] goes on a base whose cloud-init has no seed location on the boot
/// partition.
pub use crate::payload::paths::NOCLOUD_SNIPPET as NOCLOUD_SNIPPET_PATH;

/// Merges a node profile into generated user-data: profile keys win, except lists, which
/// are appended (runcmd, write_files, packages, ...), and mappings, which merge key by key.
pub fn merge_profile(base: &mut Map<String, Value>, profile: &Map<String, Value>) {
    for (k, v) in profile {
        match (base.get_mut(k), v) {
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b.iter().cloned()),
            (Some(Value::Object(a)), Value::Object(b)) => merge_profile(a, b),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The groups pi-gen adds Raspberry Pi OS's first user to (`stage2/01-sys-tweaks/01-run.sh`):
/// what people running sensors, cameras and serial devices on a Pi expect.
pub const PI_GEN_USER_GROUPS: [&str; 15] = [
    "adm", "dialout", "cdrom", "audio", "users", "sudo", "video", "games", "plugdev", "input",
    "gpio", "spi", "i2c", "netdev", "render",
];

/// The login user's supplementary groups. With `user_groups` (from cluster.yaml), those;
/// otherwise the groups of the base's default user (pi-gen's list, the base cloud-init's
/// `default_user` groups, and `systemd-journal`), keeping only those the base's `/etc/group`
/// has: cloud-init would create a missing one as an ordinary, useless group (`gpio` on
/// Ubuntu). `extra_groups` are added last. Groups named in cluster.yaml are kept even when
/// the base lacks them (cloud-init creates them: a profile may rely on that). When the base's
/// `/etc/group` could not be read (`existing` empty), the old fixed `adm`, `sudo`,
/// `systemd-journal`.
pub fn login_groups(
    base_default: &[String],
    existing: &[String],
    user_groups: Option<&[String]>,
    extra: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = match user_groups {
        Some(g) => g.to_vec(),
        None if existing.is_empty() => vec!["adm".into(), "sudo".into(), "systemd-journal".into()],
        None => PI_GEN_USER_GROUPS
            .iter()
            .map(|g| g.to_string())
            .chain(base_default.iter().cloned())
            .chain(["systemd-journal".to_string()])
            .filter(|g| existing.contains(g))
            .collect(),
    };
    out.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|g| seen.insert(g.clone()));
    out
}

/// The cloud-init user-data of a node (without the `#cloud-config` header); `groups` are the
/// login user's supplementary groups (see [`login_groups`]).
///
/// `users:` without `default`: cloud-init then creates only piforge's user, not the distro's
/// default one as well (`debian`, `ubuntu`, or Raspberry Pi OS's), which would be a second
/// sudo account nobody set a key for; `user:` would instead rename that default user, whose
/// definition differs per base. The default user's groups are kept through `groups`.
pub fn user_data(spec: &Spec, node: &Node, groups: &[String]) -> Value {
    let mut hosts = String::from(
        "# Written by piforge (cloud-init write_files).\n127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    );
    hosts.push_str(&format!("127.0.1.1 {}\n", node.name));
    for n in &spec.nodes {
        if let Some(a) = &n.address {
            hosts.push_str(&format!("{} {}\n", a.addr, n.name));
        }
    }
    let mut ud = json!({
        "hostname": node.name.as_str(),
        "preserve_hostname": false,
        "manage_etc_hosts": false,
        "timezone": spec.timezone,
        "ssh_pwauth": false,
        // The node's host key is piforge's (secrets/hosts/<node>/, written to the root
        // filesystem by the build): cloud-init's ssh module (cc_ssh) must not delete it
        // (`ssh_deletekeys`, default true) nor add other types (`ssh_genkeytypes`, default
        // rsa, ecdsa, ed25519), so the node keeps one identity across reimages. cc_ssh
        // skips a listed type whose key file exists, so `[ed25519]` makes nothing while
        // piforge's key is there (and one if it were lost); the schema refuses `[]`.
        "ssh_deletekeys": false,
        "ssh_genkeytypes": ["ed25519"],
        "disable_root": true,
        "users": [{
            "name": spec.user,
            "groups": groups,
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": true,
            "ssh_authorized_keys": spec.ssh_authorized_keys,
        }],
        "write_files": [{
            "path": "/etc/hosts",
            "content": hosts,
            "permissions": "0644",
            "owner": "root:root",
        }],
    });
    if let (Value::Object(base), Some(p)) = (&mut ud, &node.profile) {
        if let Value::Object(profile) = &p.value {
            merge_profile(base, profile);
        }
    }
    ud
}

/// The node's netplan v2 network-config: its fixed address, or DHCP.
pub fn network_config(spec: &Spec, node: &Node) -> Value {
    let iface = &spec.network.interface;
    let eth = match &node.address {
        Some(a) => {
            let mut e = json!({
                "dhcp4": false,
                "dhcp6": false,
                "addresses": [a.to_string()],
                "nameservers": {"addresses": spec.network.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
            });
            if let Some(gw) = spec.network.gateway {
                // `0.0.0.0/0`, not netplan's `default`: cloud-init 25.1 (Debian and Raspberry
                // Pi OS trixie) rejects `to: default` ("Address default is not a valid ip
                // network") and fails its local stage, leaving the node unconfigured (found by
                // `make e2e`).
                e["routes"] = json!([{"to": "0.0.0.0/0", "via": gw.to_string()}]);
            }
            e
        }
        None => json!({"dhcp4": true}),
    };
    // A Wi-Fi node's address (fixed or DHCP) lives on its Wi-Fi connection, which the build
    // writes to the root filesystem (it holds the PSK, which must not reach this FAT file).
    // Its Ethernet port is then only a DHCP extra, `optional` so that boot never waits for a
    // cable (a Zero 2 W has none).
    let eth = if spec.node_wifi(node).is_some() {
        json!({"dhcp4": true, "optional": true})
    } else {
        eth
    };
    let mut ethernets = Map::new();
    ethernets.insert(iface.clone(), eth);
    json!({"version": 2, "ethernets": ethernets})
}

/// The three files of a node's NoCloud seed, as written to the boot partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

impl Seed {
    /// `(file name on the boot partition, content)`, in a fixed order.
    pub fn files(&self) -> [(&'static str, &str); 3] {
        [
            ("user-data", &self.user_data),
            ("meta-data", &self.meta_data),
            ("network-config", &self.network_config),
        ]
    }
}

/// What a node receives besides its seed files, for its instance-id: everything that, when
/// it changes, should make cloud-init treat the card as a new instance (see [`instance_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInputs {
    pub cluster_name: String,
    /// The cluster CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The bootstrap token the node's kubeadm configuration carries (its `Debug` elides it).
    pub token: Token,
    /// The control-plane endpoint (`host:port`).
    pub endpoint: String,
    /// The node's kubeadm configuration as written to its root filesystem.
    pub kubeadm_config: String,
    /// `(artifact name, SHA-256)` of every release artifact of the payload (any order).
    pub artifact_digests: Vec<(String, String)>,
    /// The SHA-256 of the base image as given.
    pub base_image_sha256: String,
    /// A digest of what the node's role image gets beyond the artifacts (the built-in files,
    /// the first-boot script, the CA, the site's overlays).
    pub role_digest: String,
}

/// The instance-id of a node: `piforge-` and 16 hex digits of a SHA-256 over its name, its
/// user-data (user, keys, time zone, hosts, profile), its network-config and every field of
/// [`NodeInputs`], each length-prefixed. Nothing else goes in: not the output directory, not
/// which other nodes are built with it or in which order, not another node's profile. The
/// token and the CA are in the hash, never in the id's input text: 64 bits of a SHA-256 over a
/// token of 82 random bits tell nothing about it.
pub fn instance_id(
    node: &Node,
    user_data: &str,
    network_config: &str,
    inputs: &NodeInputs,
) -> String {
    let mut artifacts = inputs.artifact_digests.clone();
    artifacts.sort();
    let artifacts: String = artifacts
        .iter()
        .map(|(name, digest)| format!("{name} {digest}\n"))
        .collect();
    let mut h = Sha256::new();
    for (label, part) in [
        ("node", node.name.as_str()),
        ("user-data", user_data),
        ("network-config", network_config),
        ("cluster", &inputs.cluster_name),
        ("ca", &inputs.ca_cert_pem),
        ("token", inputs.token.secret()),
        ("endpoint", &inputs.endpoint),
        ("kubeadm", &inputs.kubeadm_config),
        ("artifacts", &artifacts),
        ("base", &inputs.base_image_sha256),
        ("role", &inputs.role_digest),
    ] {
        for p in [label, part] {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
    }
    let id = hex::encode(h.finalize());
    format!("piforge-{}", &id[..16])
}

/// The node's NoCloud seed. The instance-id is a hash of everything the node is given (see
/// [`instance_id`]), so changing or reimaging a node makes cloud-init run again.
pub fn seed(spec: &Spec, node: &Node, groups: &[String], inputs: &NodeInputs) -> Seed {
    let ud = yaml::cloud_config(&user_data(spec, node, groups));
    let nc = yaml::to_yaml(&network_config(spec, node));
    Seed {
        meta_data: meta_data(&instance_id(node, &ud, &nc, inputs), node.name.as_str()),
        user_data: ud,
        network_config: nc,
    }
}

/// NoCloud meta-data: the instance-id and the hostname.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    yaml::write(
        &Yaml::map([
            ("instance-id", Yaml::str(instance_id)),
            ("local-hostname", Yaml::str(hostname)),
        ]),
        SeqIndent::Indented,
    )
}

/// A NoCloud pointer for a base whose cloud-init has no seed location on the boot partition:
/// read the seed from the filesystem labelled `boot_label`.
pub fn nocloud_snippet(boot_label: &str) -> String {
    let body = Yaml::map([
        (
            "datasource_list",
            Yaml::FlowSeq(vec!["NoCloud".into(), "None".into()]),
        ),
        (
            "datasource",
            Yaml::map([("NoCloud", Yaml::map([("fs_label", Yaml::str(boot_label))]))]),
        ),
    ]);
    yaml::write_stream(
        &[yaml::Document {
            comments: vec![
                "# Written by piforge: read the NoCloud seed from the boot partition.".into(),
            ],
            body,
        }],
        SeqIndent::Indented,
    )
}
