//! The `nodes:` list, node profiles, and the checks that need the nodes together with the
//! other sections.

use super::*;

/// A node and where its parts were written.
pub(super) struct NodeParts {
    pub(super) node: Node,
    pub(super) pos: Pos,
    pub(super) name_pos: Pos,
    pub(super) address_pos: Option<Pos>,
}

/// `key` is where `nodes:` is written, for problems of the list as a whole.
pub(super) fn nodes(ctx: &mut Ctx<'_>, key: Pos, item: &Item) -> Option<Vec<NodeParts>> {
    let items = ctx.list(item, "nodes", "nodes")?;
    if items.is_empty() {
        ctx.err(item.pos, "nodes: at least one node is needed");
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match node(ctx, item, &format!("nodes[{i}]")) {
            Some(n) => out.push(n),
            None => ok = false,
        }
    }

    // Unique names and addresses.
    let mut names: HashMap<&str, Pos> = HashMap::new();
    let mut addresses: HashMap<IpAddr, (&str, Pos)> = HashMap::new();
    for (i, n) in out.iter().enumerate() {
        if let Some(first) = names.insert(&n.node.name, n.name_pos) {
            ctx.err(
                n.name_pos,
                format!(
                    "nodes[{i}].name: duplicate node name `{}` (first at line {})",
                    n.node.name, first.line
                ),
            );
            ok = false;
        }
        if let (Some(a), Some(pos)) = (n.node.address, n.address_pos) {
            if let Some((other, first)) = addresses.get(&a.addr) {
                ctx.err(
                    pos,
                    format!(
                        "nodes[{i}].address: {} is already {other}'s address (line {})",
                        a.addr, first.line
                    ),
                );
                ok = false;
            } else {
                addresses.insert(a.addr, (&n.node.name, pos));
            }
        }
    }

    if ok && !out.iter().any(|n| n.node.role == Role::ControlPlane) {
        ctx.err(
            key,
            "nodes: no node has role control-plane; one is needed to create the cluster",
        );
        ok = false;
    }
    ok.then_some(out)
}

pub(super) fn node(ctx: &mut Ctx<'_>, item: &Item, path: &str) -> Option<NodeParts> {
    let f = ctx.fields(item, path, NODE_KEYS)?;
    let name_item = ctx.required(&f, "name");
    let name = name_item.and_then(|v| {
        let p = format!("{path}.name");
        let s = ctx.text(v, &p)?;
        check_label(ctx, v.pos, &p, s)
            .then(|| NodeName::parse(s))
            .flatten()
    });
    let role = ctx.required(&f, "role").and_then(|v| {
        let p = format!("{path}.role");
        match ctx.text(v, &p)? {
            "control-plane" => Some(Role::ControlPlane),
            "worker" => Some(Role::Worker),
            s => {
                ctx.err(
                    v.pos,
                    format!("{p}: `{s}` is not a role; use control-plane or worker"),
                );
                None
            }
        }
    });
    let address_item = f.get("address");
    let address = match address_item {
        None => Some(None),
        Some(v) => node_address(ctx, v, &format!("{path}.address")).map(Some),
    };
    let profile = match f.entry("profile") {
        Some((key, v)) if !v.is_null() => {
            profile(ctx, key, v, &format!("{path}.profile")).map(Some)
        }
        _ => Some(None),
    };
    let wifi = match f.get("wifi") {
        None => Some(None),
        Some(v) => super::wifi::wifi(ctx, v, &format!("{path}.wifi")).map(Some),
    };
    Some(NodeParts {
        node: Node {
            name: name?,
            role: role?,
            address: address?,
            profile: profile?,
            wifi: wifi?,
        },
        pos: f.pos,
        name_pos: name_item?.pos,
        address_pos: address_item.map(|v| v.pos),
    })
}

pub(super) fn node_address(ctx: &mut Ctx<'_>, v: &Item, path: &str) -> Option<Cidr> {
    let s = ctx.text(v, path)?;
    let c = match s.parse::<Cidr>() {
        Ok(c) => c,
        Err(e) => {
            ctx.err(
                v.pos,
                format!("{path}: `{s}` is not in CIDR form (address/prefix length, e.g. 192.168.1.10/24): {e}"),
            );
            return None;
        }
    };
    let max = if c.addr.is_ipv4() { 32 } else { 128 };
    if c.prefix + 2 <= max && c.is_network() {
        ctx.err(
            v.pos,
            format!("{path}: {c} is the network address of its subnet, not a host address"),
        );
        return None;
    }
    if c.broadcast() == Some(c.addr) {
        ctx.err(
            v.pos,
            format!("{path}: {c} is the broadcast address of its subnet, not a host address"),
        );
        return None;
    }
    Some(c)
}

/// Reads and parses a profile. A missing or non-mapping file is reported at the `profile:` key
/// of the spec; bad YAML is reported in the profile file itself.
pub(super) fn profile(ctx: &mut Ctx<'_>, key: &Item, v: &Item, path: &str) -> Option<Profile> {
    let rel = ctx.text(v, path)?;
    let file = ctx.resolve(rel);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            ctx.err(
                key.pos,
                format!("{path}: cannot read {}: {e}", file.display()),
            );
            return None;
        }
    };
    let file_name = file.display().to_string();
    let root = match yaml::parse_without_aliases(&text) {
        Ok(root) => root,
        Err(e) => {
            if let Some((pos, message)) = e.unclosed_note() {
                ctx.diagnostics.push(Diagnostic {
                    file: file_name.clone(),
                    pos,
                    message,
                });
            }
            ctx.diagnostics.push(Diagnostic {
                file: file_name,
                pos: e.pos,
                message: e.message,
            });
            return None;
        }
    };
    let value = match root {
        None => serde_json::Value::Object(Default::default()),
        Some(root) if !matches!(root.kind, Kind::Map(_)) => {
            ctx.err(
                key.pos,
                format!(
                    "{path}: {} must hold a mapping of cloud-config keys (packages:, runcmd:, ...), not {}",
                    file.display(),
                    root.describe()
                ),
            );
            return None;
        }
        Some(root) => match yaml::to_json(&root) {
            Ok(v) => v,
            Err(e) => {
                ctx.diagnostics.push(Diagnostic {
                    file: file_name,
                    pos: e.pos,
                    message: e.message,
                });
                return None;
            }
        },
    };
    Some(Profile { path: file, value })
}

/// A standalone profile: any problem is reported in the profile file.
pub(in crate::spec) fn parse_profile_text(
    text: &str,
    file: &str,
) -> Result<serde_json::Value, Vec<Diagnostic>> {
    let diag = |pos, message| {
        vec![Diagnostic {
            file: file.to_string(),
            pos,
            message,
        }]
    };
    match yaml::parse_without_aliases(text) {
        Err(e) => Err(diag(e.pos, e.message)),
        Ok(None) => Ok(serde_json::Value::Object(Default::default())),
        Ok(Some(root)) if !matches!(root.kind, Kind::Map(_)) => Err(diag(
            root.pos,
            format!(
                "expected a mapping of cloud-config keys, found {}",
                root.describe()
            ),
        )),
        Ok(Some(root)) => yaml::to_json(&root).map_err(|e| diag(e.pos, e.message)),
    }
}

/// Checks that need the nodes together with the kubernetes and network sections.
pub(super) fn cross_check(
    ctx: &mut Ctx<'_>,
    nodes: &[NodeParts],
    k: &KubeParts,
    network: Option<&NetworkParts>,
) {
    // The API server endpoint.
    if k.control_plane_endpoint.is_none() && k.vip.is_none() {
        if let Some(cp) = nodes.iter().find(|n| n.node.role == Role::ControlPlane) {
            if cp.node.address.is_none() {
                ctx.err(
                    cp.pos,
                    "set kubernetes.control_plane_endpoint: the first control-plane node has no fixed address",
                );
            }
        }
    }

    // Fixed addresses need a gateway and DNS servers, and the gateway must be on-link.
    if let Some(net) = network {
        let mut reported_missing = false;
        for (i, n) in nodes.iter().enumerate() {
            let (Some(addr), Some(pos)) = (n.node.address, n.address_pos) else {
                continue;
            };
            let path = format!("nodes[{i}].address");
            match net.network.gateway {
                None if !reported_missing => {
                    ctx.err(
                        pos,
                        format!(
                            "{path}: a fixed address needs network.gateway (kubeadm takes the node's \
                             IP from its default route)"
                        ),
                    );
                }
                // Issue 12 item 14: a node at the router's address takes the network down.
                Some(gw) if addr.addr == gw => {
                    ctx.err(
                        pos,
                        format!(
                            "{path}: {gw} is network.gateway; a node needs an address of its own"
                        ),
                    );
                }
                Some(gw) if !addr.contains(gw) => {
                    ctx.err(
                        pos,
                        format!(
                            "{path}: network.gateway {gw} is not in this node's subnet {}",
                            addr.network()
                        ),
                    );
                }
                _ => {}
            }
            if net.network.dns.is_empty() && !reported_missing {
                ctx.err(
                    pos,
                    format!("{path}: a fixed address needs network.dns (the node's name servers)"),
                );
            }
            reported_missing = true;
        }
    }

    // Pod and service subnets must not overlap a node network.
    let mut seen = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (Some(addr), Some(addr_pos)) = (n.node.address, n.address_pos) else {
            continue;
        };
        let net = addr.network();
        if seen.contains(&net) {
            continue;
        }
        seen.push(net);
        for (key, subnet) in [
            ("pod_subnet", &k.pod_subnet),
            ("service_subnet", &k.service_subnet),
        ] {
            if subnet.value.overlaps(&net) {
                let (pos, what) = match subnet.pos {
                    Some(p) => (p, format!("kubernetes.{key} {}", subnet.value)),
                    None => (
                        addr_pos,
                        format!(
                            "nodes[{i}].address: the default kubernetes.{key} {} (set another)",
                            subnet.value
                        ),
                    ),
                };
                ctx.err(
                    pos,
                    format!("{what} overlaps the node network {net} of {}", n.node.name),
                );
            }
        }
    }
}
