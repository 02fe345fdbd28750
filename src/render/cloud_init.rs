//! The NoCloud seed of a node (user-data, meta-data, network-config) and the cloud.cfg.d
//! snippet that points cloud-init at it.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::yaml::{self, SeqIndent, Yaml};
use crate::spec::{Node, Spec};

/// Where [`nocloud_snippet`] goes on a base whose cloud-init has no seed location on the boot
/// partition.
pub const NOCLOUD_SNIPPET_PATH: &str = "/etc/cloud/cloud.cfg.d/99-piforge-nocloud.cfg";

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

/// The cloud-init user-data of a node (without the `#cloud-config` header).
pub fn user_data(spec: &Spec, node: &Node) -> Value {
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
            "groups": ["adm", "sudo", "systemd-journal"],
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

/// The node's NoCloud seed. The instance-id is a hash of everything the node is given
/// (`root_digest` stands for its root filesystem), so changing or reimaging a node makes
/// cloud-init run again.
pub fn seed(spec: &Spec, node: &Node, root_digest: &str) -> Seed {
    let ud = yaml::cloud_config(&user_data(spec, node));
    let nc = yaml::to_yaml(&network_config(spec, node));
    let mut h = Sha256::new();
    for part in [
        node.name.as_bytes(),
        ud.as_bytes(),
        nc.as_bytes(),
        root_digest.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let id = hex::encode(h.finalize());
    Seed {
        meta_data: meta_data(&format!("piforge-{}", &id[..16]), node.name.as_str()),
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
