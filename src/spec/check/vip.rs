//! `kubernetes.vip`: the virtual IP kube-vip serves the API server on.
//!
//! kube-vip in ARP mode adds the address to `network.interface` of the leading control plane
//! and answers ARP for it, so it must be an unused host address of the network the control
//! planes sit on: inside their subnet (not its network or broadcast address), and none of
//! the nodes' addresses, the gateway or a DNS server. The endpoint is then `VIP:6443`; an
//! explicit `control_plane_endpoint` must name the same host, and port 6443, since ARP mode
//! only moves the address (kube-vip forwards no port).

use super::nodes::NodeParts;
use super::*;

pub(super) fn check_vip(
    ctx: &mut Ctx<'_>,
    nodes: &[NodeParts],
    k: &KubeParts,
    network: Option<&NetworkParts>,
) {
    let Some(placed) = &k.vip else {
        return;
    };
    let vip = placed.value;
    let ip = IpAddr::V4(vip);
    let pos = placed.pos.unwrap_or(Pos::START);

    if let (Some(endpoint), Some(epos)) = (&k.control_plane_endpoint, k.endpoint_pos) {
        // A checked endpoint is host:port; an IPv6 host is bracketed and never equals an IPv4.
        let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, ""));
        if host != vip.to_string() {
            ctx.err(
                epos,
                format!(
                    "kubernetes.control_plane_endpoint: host {host} differs from kubernetes.vip \
                     {vip}; leave control_plane_endpoint out (it defaults to {vip}:{}) or make \
                     them agree",
                    crate::spec::DEFAULT_API_PORT
                ),
            );
        } else if port != crate::spec::DEFAULT_API_PORT.to_string() {
            ctx.err(
                epos,
                format!(
                    "kubernetes.control_plane_endpoint: port {port}: with kubernetes.vip the API \
                     server is reached on its own port {}, since kube-vip's ARP mode moves the \
                     address and forwards no port",
                    crate::spec::DEFAULT_API_PORT
                ),
            );
        }
    }

    let fixed: Vec<&NodeParts> = nodes.iter().filter(|n| n.node.address.is_some()).collect();
    if fixed.is_empty() {
        ctx.err(
            pos,
            format!(
                "kubernetes.vip: {vip} needs nodes with fixed addresses, so that piforge can check \
                 it is a free address of their network (kube-vip announces it there by ARP)"
            ),
        );
        return;
    }
    // The control planes carry kube-vip, so their subnets are the ones that matter; without a
    // fixed control plane, the fixed nodes' subnets stand for the network.
    let cps: Vec<&NodeParts> = fixed
        .iter()
        .copied()
        .filter(|n| n.node.role == Role::ControlPlane)
        .collect();
    let judges = if cps.is_empty() { &fixed } else { &cps };
    let mut subnets: Vec<Cidr> = Vec::new();
    for n in judges {
        let Some(addr) = n.node.address else { continue };
        let net = addr.network();
        if subnets.contains(&net) {
            continue;
        }
        subnets.push(net);
        if !addr.contains(ip) {
            ctx.err(
                pos,
                format!(
                    "kubernetes.vip: {vip} is not in the subnet {net} of {}'s address; kube-vip \
                     announces it by ARP, so it must be a free address of the control planes' \
                     network",
                    n.node.name
                ),
            );
        } else if net.addr == ip || addr.broadcast() == Some(ip) {
            let what = if net.addr == ip {
                "network"
            } else {
                "broadcast"
            };
            ctx.err(
                pos,
                format!("kubernetes.vip: {vip} is the {what} address of {net}, not a host address"),
            );
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if n.node.address.map(|a| a.addr) == Some(ip) {
            let line = n.address_pos.map_or(n.pos.line, |p| p.line);
            ctx.err(
                pos,
                format!(
                    "kubernetes.vip: {vip} is already the address of {} (nodes[{i}], line {line}); \
                     the VIP must be a free address",
                    n.node.name
                ),
            );
        }
    }
    if let Some(net) = network {
        if net.network.gateway == Some(ip) {
            ctx.err(
                pos,
                format!("kubernetes.vip: {vip} is network.gateway; the VIP must be a free address"),
            );
        }
        if net.network.dns.contains(&ip) {
            ctx.err(
                pos,
                format!("kubernetes.vip: {vip} is in network.dns; the VIP must be a free address"),
            );
        }
    }
}
