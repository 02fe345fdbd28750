//! `kubernetes.vip`: parsing, the default endpoint, and every check with its position.

use super::*;

const VERSIONS: &[&str] = &["1.34.2"];
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL76qBYQMQL4UqFY0umO4uSshKLPgM+YU9Y3ZbhqK9VN me@laptop";

/// Two control planes at .10 and .11 of 192.168.1.0/24, a worker at .20; `kubernetes` is
/// line 2, `network` line 3.
fn spec(kubernetes: &str, network: &str) -> String {
    format!(
        "name: t\nkubernetes: {kubernetes}\nnetwork: {network}\nimage: {{source: x.img}}\n\
         ssh_authorized_keys: [\"{KEY}\"]\nnodes:\n\
         \x20 - {{name: cp1, role: control-plane, address: 192.168.1.10/24}}\n\
         \x20 - {{name: cp2, role: control-plane, address: 192.168.1.11/24}}\n\
         \x20 - {{name: w1, role: worker, address: 192.168.1.20/24}}\n"
    )
}

const NET: &str = "{gateway: 192.168.1.1, dns: [192.168.1.2, 9.9.9.9]}";

fn check(text: &str) -> Result<Spec, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.img"), "").unwrap();
    parse(text, "cluster.yaml", dir.path(), VERSIONS).map_err(|e| e.to_string())
}

#[track_caller]
fn refused(text: &str, want: &[&str]) {
    let got = check(text).expect_err("the spec should be refused");
    assert_eq!(got, want.join("\n"), "for spec:\n{text}");
}

#[test]
fn vip_makes_the_default_endpoint() {
    let s = check(&spec("{vip: 192.168.1.9}", NET)).unwrap();
    assert_eq!(s.kubernetes.vip, Some("192.168.1.9".parse().unwrap()));
    assert_eq!(s.control_plane_endpoint(), "192.168.1.9:6443");
    // The same endpoint written out is accepted.
    let s = check(&spec(
        "{vip: 192.168.1.9, control_plane_endpoint: \"192.168.1.9:6443\"}",
        NET,
    ))
    .unwrap();
    assert_eq!(s.control_plane_endpoint(), "192.168.1.9:6443");
    // Without a VIP, the first control plane's address, as before.
    let s = check(&spec("{}", NET)).unwrap();
    assert_eq!(s.kubernetes.vip, None);
    assert_eq!(s.control_plane_endpoint(), "192.168.1.10:6443");
}

#[test]
fn vip_with_dhcp_control_planes_is_checked_against_the_fixed_nodes() {
    let text = spec("{vip: 192.168.1.9}", NET)
        .replace("control-plane, address: 192.168.1.10/24", "control-plane")
        .replace("control-plane, address: 192.168.1.11/24", "control-plane");
    let s = check(&text).unwrap();
    // The DHCP first control plane needs no endpoint of its own: the VIP is one.
    assert_eq!(s.control_plane_endpoint(), "192.168.1.9:6443");
    refused(
        &text.replace("192.168.1.9}", "10.0.0.9}"),
        &["cluster.yaml:2:19: kubernetes.vip: 10.0.0.9 is not in the subnet 192.168.1.0/24 of w1's address; kube-vip announces it by ARP, so it must be a free address of the control planes' network"],
    );
    let all_dhcp = text.replace("worker, address: 192.168.1.20/24", "worker");
    refused(
        &all_dhcp,
        &["cluster.yaml:2:19: kubernetes.vip: 192.168.1.9 needs nodes with fixed addresses, so that piforge can check it is a free address of their network (kube-vip announces it there by ARP)"],
    );
}

#[test]
fn vip_must_be_a_free_host_address_of_the_control_planes_subnet() {
    let cases: &[(&str, &str)] = &[
        ("192.168.2.9", "kubernetes.vip: 192.168.2.9 is not in the subnet 192.168.1.0/24 of cp1's address; kube-vip announces it by ARP, so it must be a free address of the control planes' network"),
        ("192.168.1.0", "kubernetes.vip: 192.168.1.0 is the network address of 192.168.1.0/24, not a host address"),
        ("192.168.1.255", "kubernetes.vip: 192.168.1.255 is the broadcast address of 192.168.1.0/24, not a host address"),
        ("192.168.1.11", "kubernetes.vip: 192.168.1.11 is already the address of cp2 (nodes[1], line 8); the VIP must be a free address"),
        ("192.168.1.20", "kubernetes.vip: 192.168.1.20 is already the address of w1 (nodes[2], line 9); the VIP must be a free address"),
        ("192.168.1.1", "kubernetes.vip: 192.168.1.1 is network.gateway; the VIP must be a free address"),
        ("192.168.1.2", "kubernetes.vip: 192.168.1.2 is in network.dns; the VIP must be a free address"),
    ];
    for (vip, message) in cases {
        refused(
            &spec(&format!("{{vip: {vip}}}"), NET),
            &[&format!("cluster.yaml:2:19: {message}")],
        );
    }
}

#[test]
fn vip_must_be_an_ipv4_address() {
    refused(
        &spec("{vip: fd00::9}", NET),
        &["cluster.yaml:2:19: kubernetes.vip: fd00::9 is IPv6; kube-vip's ARP mode serves an IPv4 address"],
    );
    refused(
        &spec("{vip: k8s.lan}", NET),
        &["cluster.yaml:2:19: kubernetes.vip: `k8s.lan` is not an IPv4 address (e.g. 192.168.1.9)"],
    );
}

#[test]
fn explicit_endpoint_must_name_the_vip_and_its_port() {
    refused(
        &spec(
            "{vip: 192.168.1.9, control_plane_endpoint: \"192.168.1.10:6443\"}",
            NET,
        ),
        &["cluster.yaml:2:56: kubernetes.control_plane_endpoint: host 192.168.1.10 differs from kubernetes.vip 192.168.1.9; leave control_plane_endpoint out (it defaults to 192.168.1.9:6443) or make them agree"],
    );
    refused(
        &spec(
            "{vip: 192.168.1.9, control_plane_endpoint: \"k8s.lan:6443\"}",
            NET,
        ),
        &["cluster.yaml:2:56: kubernetes.control_plane_endpoint: host k8s.lan differs from kubernetes.vip 192.168.1.9; leave control_plane_endpoint out (it defaults to 192.168.1.9:6443) or make them agree"],
    );
    refused(
        &spec(
            "{vip: 192.168.1.9, control_plane_endpoint: \"192.168.1.9:8443\"}",
            NET,
        ),
        &["cluster.yaml:2:56: kubernetes.control_plane_endpoint: port 8443: with kubernetes.vip the API server is reached on its own port 6443, since kube-vip's ARP mode moves the address and forwards no port"],
    );
}
