use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::yaml;
use super::*;
use crate::render::yaml::{cloud_config, to_yaml};

const VERSIONS: &[&str] = &["1.33.6", "1.34.2", "1.32.10"];
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL76qBYQMQL4UqFY0umO4uSshKLPgM+YU9Y3ZbhqK9VN me@laptop";

/// A directory with the files specs refer to: profiles and an overlay.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, content) in init_files() {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    fs::write(
        dir.path().join("node-profiles/bad.yaml"),
        "packages: [htop\nruncmd: []\n",
    )
    .unwrap();
    fs::write(dir.path().join("node-profiles/list.yaml"), "- htop\n").unwrap();
    // The image the specs name (`image: {source: x.img}`): it must exist.
    fs::write(dir.path().join("x.img"), "").unwrap();
    fs::create_dir_all(dir.path().join("artifacts")).unwrap();
    fs::write(
        dir.path().join("node-profiles/dup.yaml"),
        "packages: []\n# x\npackages: [vim]\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("node-profiles/empty.yaml"),
        "#cloud-config\n",
    )
    .unwrap();
    dir
}

fn parse_in(dir: &Path, text: &str) -> Result<Spec, SpecError> {
    parse(text, "cluster.yaml", dir, VERSIONS)
}

/// A small valid spec with `extra` lines inserted after line 1 (so positions below it move).
fn minimal(extra: &str) -> String {
    format!(
        "name: t\n{extra}image: {{source: x.img}}\nssh_authorized_keys: [\"{KEY}\"]\nnodes:\n  - {{name: cp, role: control-plane, address: 192.168.1.10/24}}\n"
    )
}

/// A minimal spec whose network section is `network` (inserted at line 2).
fn with_network(network: &str) -> String {
    minimal(&format!("network: {network}\n"))
}

const NET: &str = "{gateway: 192.168.1.1, dns: [192.168.1.1]}";

/// Asserts that checking `text` fails with exactly these lines.
#[track_caller]
fn assert_errors(text: &str, expected: &[&str]) {
    let dir = workdir();
    let err = parse_in(dir.path(), text).expect_err("the spec should be refused");
    let got = err.to_string();
    let want = expected
        .join("\n")
        .replace("$DIR", &dir.path().display().to_string());
    assert_eq!(got, want, "for spec:\n{text}");
}

#[track_caller]
fn assert_error(text: &str, expected: &str) {
    assert_errors(text, &[expected]);
}

/// The problems checking `text` reports, one string each.
fn errors(text: &str) -> Vec<String> {
    let dir = workdir();
    match parse_in(dir.path(), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[track_caller]
fn ok(text: &str) -> Spec {
    let dir = workdir();
    parse_in(dir.path(), text).unwrap_or_else(|e| panic!("{e}\nfor spec:\n{text}"))
}

const FULL: &str = r#"name: homelab
image:
  source: https://downloads.example.org/2025-11-24-raspios-trixie-arm64-lite.img.xz
  sha256: "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
kubernetes:
  version: "1.33.6"
  control_plane_endpoint: "k8s.home.lan:6443"
  pod_subnet: "10.42.0.0/16"
  service_subnet: "10.43.0.0/16"
  token_ttl: "1h30m"
  cni: none
network:
  interface: end0
  gateway: 192.168.1.1
  dns: [192.168.1.1, "1.1.1.1"]
user: admin
ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL76qBYQMQL4UqFY0umO4uSshKLPgM+YU9Y3ZbhqK9VN me@laptop"]
timezone: Europe/Lisbon
overlays: [overlays/site]
artifacts: ./artifacts
nodes:
  - name: pi-cp-1
    role: control-plane
    address: 192.168.1.10/24
    profile: node-profiles/control-plane.yaml
  - name: pi-w-1
    role: worker
    address: 192.168.1.11/24
  - name: pi-w-2
    role: worker
"#;

#[test]
fn full_example_parses_with_every_field() {
    let dir = workdir();
    let spec = parse_in(dir.path(), FULL).unwrap();
    let d = dir.path();
    assert_eq!(spec.name, "homelab");
    assert_eq!(
        spec.image,
        ImageSource {
            source: Source::Url(
                "https://downloads.example.org/2025-11-24-raspios-trixie-arm64-lite.img.xz".into()
            ),
            sha256: Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789".into()),
            pi5_4k_pages: None,
        }
    );
    assert_eq!(
        spec.kubernetes,
        Kubernetes {
            version: "1.33.6".into(),
            control_plane_endpoint: Some("k8s.home.lan:6443".into()),
            vip: None,
            pod_subnet: "10.42.0.0/16".parse().unwrap(),
            service_subnet: "10.43.0.0/16".parse().unwrap(),
            token_ttl: GoDuration::parse("1h30m").unwrap(),
            cni: Cni::None,
            versions: Vec::new(),
        }
    );
    assert_eq!(spec.kubernetes.token_ttl_duration().as_secs(), 5400);
    assert_eq!(
        spec.network,
        Network {
            interface: "end0".into(),
            gateway: Some("192.168.1.1".parse().unwrap()),
            dns: vec![
                "192.168.1.1".parse::<IpAddr>().unwrap(),
                "1.1.1.1".parse().unwrap()
            ],
            wifi: None,
        }
    );
    assert_eq!(spec.user, "admin");
    assert_eq!(spec.ssh_authorized_keys, vec![KEY.to_string()]);
    assert_eq!(spec.timezone, "Europe/Lisbon");
    assert_eq!(spec.overlays, vec![d.join("overlays/site")]);
    assert_eq!(spec.artifacts, Some(d.join("./artifacts")));
    assert_eq!(spec.spec_dir, d);
    assert_eq!(spec.spec_path, d.join("cluster.yaml"));

    let names: Vec<_> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["pi-cp-1", "pi-w-1", "pi-w-2"]);
    let roles: Vec<_> = spec.nodes.iter().map(|n| n.role).collect();
    assert_eq!(roles, [Role::ControlPlane, Role::Worker, Role::Worker]);
    assert_eq!(
        spec.nodes[0].address,
        Some("192.168.1.10/24".parse().unwrap())
    );
    assert_eq!(spec.nodes[2].address, None);
    let profile = spec.nodes[0].profile.as_ref().unwrap();
    assert_eq!(profile.path, d.join("node-profiles/control-plane.yaml"));
    assert_eq!(profile.value["packages"], json!(["htop"]));
    assert_eq!(
        profile.value["write_files"][0]["permissions"],
        json!("0644")
    );
    assert!(spec.nodes[1].profile.is_none());

    assert_eq!(spec.first_control_plane().name, "pi-cp-1");
    assert_eq!(spec.control_plane_endpoint(), "k8s.home.lan:6443");
    assert_eq!(spec.workers().count(), 2);
}

#[test]
fn defaults() {
    let spec = ok(&with_network(NET));
    assert_eq!(
        spec.kubernetes.version, "1.34.2",
        "the newest, whatever the list order"
    );
    assert_eq!(spec.kubernetes.control_plane_endpoint, None);
    assert_eq!(spec.control_plane_endpoint(), "192.168.1.10:6443");
    assert_eq!(spec.kubernetes.pod_subnet.to_string(), "10.244.0.0/16");
    assert_eq!(spec.kubernetes.service_subnet.to_string(), "10.96.0.0/12");
    assert_eq!(spec.kubernetes.token_ttl, GoDuration::from_secs(24 * 3600));
    assert_eq!(spec.kubernetes.token_ttl_duration().as_secs(), 24 * 3600);
    assert_eq!(spec.kubernetes.cni, Cni::Flannel);
    assert_eq!(spec.network.interface, "eth0");
    assert_eq!(spec.user, "pi");
    assert_eq!(spec.timezone, "Etc/UTC");
    assert!(spec.overlays.is_empty());
    assert_eq!(spec.artifacts, None);
    assert_eq!(spec.image.sha256, None);
    assert!(spec.nodes[0].profile.is_none());
}

#[test]
fn null_values_of_optional_keys_are_defaults() {
    let spec = ok(&minimal(&format!("kubernetes:\nuser: ~\nnetwork: {NET}\n")));
    assert_eq!(spec.user, "pi");
    assert_eq!(spec.kubernetes.cni, Cni::Flannel);
}

#[test]
fn version_keeps_its_text_and_accepts_a_v() {
    let spec = ok(&minimal(&format!(
        "kubernetes: {{version: v1.32.10}}\nnetwork: {NET}\n"
    )));
    assert_eq!(spec.kubernetes.version, "1.32.10");
}

#[test]
fn ipv6_nodes() {
    let spec = ok("name: t\nimage: {source: x.img}\nssh_authorized_keys: [\"KEY\"]\nnetwork: {gateway: \"fd00::1\", dns: [\"fd00::1\"]}\nnodes:\n  - {name: cp, role: control-plane, address: \"fd00::10/64\"}\n".replace("KEY", KEY).as_str());
    assert_eq!(spec.control_plane_endpoint(), "[fd00::10]:6443");
}

#[test]
fn relative_paths_resolve_against_the_spec_dir() {
    let dir = workdir();
    fs::create_dir_all(dir.path().join("sub")).unwrap();
    fs::create_dir_all(dir.path().join("img")).unwrap();
    fs::create_dir_all(dir.path().join("cache/art")).unwrap();
    fs::write(dir.path().join("img/os.img.xz"), "").unwrap();
    let text = minimal(&format!(
        "network: {NET}\noverlays: [overlays/site, ../{}/overlays/site]\nartifacts: cache/art\n",
        dir.path().file_name().unwrap().to_str().unwrap()
    ))
    .replace("x.img", "img/os.img.xz");
    let path = dir.path().join("cluster.yaml");
    fs::write(&path, &text).unwrap();
    let spec = load(&path, VERSIONS).unwrap();
    assert_eq!(spec.spec_path, path);
    assert_eq!(spec.spec_dir, dir.path());
    assert_eq!(
        spec.image.source,
        Source::Path(dir.path().join("img/os.img.xz"))
    );
    assert_eq!(spec.artifacts, Some(dir.path().join("cache/art")));
    assert_eq!(spec.overlays[0], dir.path().join("overlays/site"));
    assert!(spec.overlays[1].is_dir());

    // An absolute path stays as it is.
    let abs = dir.path().join("overlays/site");
    let text = minimal(&format!(
        "network: {NET}\noverlays: [\"{}\"]\n",
        abs.display()
    ))
    .replace("x.img", &dir.path().join("x.img").display().to_string());
    assert_eq!(
        parse(&text, "c.yaml", Path::new("/nonexistent"), VERSIONS)
            .unwrap()
            .overlays,
        vec![abs]
    );

    // A spec in the current directory (the crate's, when testing): paths are not prefixed
    // with "./".
    let text = minimal(&format!("network: {NET}\n")).replace("x.img", "Cargo.toml");
    let spec = parse(&text, "cluster.yaml", Path::new(""), VERSIONS).unwrap();
    assert_eq!(spec.image.source, Source::Path(PathBuf::from("Cargo.toml")));
    assert_eq!(spec.spec_dir, PathBuf::from("."));
}

#[test]
fn load_reports_a_missing_file() {
    let err = load(Path::new("/nonexistent/cluster.yaml"), VERSIONS).unwrap_err();
    assert!(matches!(err, SpecError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/cluster.yaml: "),
        "{err}"
    );
}

#[test]
fn load_names_the_file_as_given() {
    let dir = workdir();
    let path = dir.path().join("my.yaml");
    fs::write(&path, "name: Bad\n").unwrap();
    let err = load(&path, VERSIONS).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "\n{}:1:7: name: `Bad` is not a DNS-1123 label",
            path.display()
        )),
        "{err}"
    );
}

// ---- every validation error, with its position ----

#[test]
fn yaml_syntax_error() {
    assert_errors(
        "name: t\nnodes: [a\nimage: x\n",
        &[
            "cluster.yaml:3:6: invalid YAML: illegal placement of ':' indicator",
            "cluster.yaml:2:8: this `[` is never closed; a missing `]` would explain the error at line 3, column 6",
        ],
    );
}

#[test]
fn empty_file_and_wrong_top_level() {
    assert_error(
        "# nothing\n",
        "cluster.yaml:1:1: the file is empty; expected cluster settings (`piforge init` writes an example)",
    );
    assert_error(
        "- a\n- b\n",
        "cluster.yaml:1:1: the file: expected a mapping (`key: value` lines), found a list",
    );
}

#[test]
fn unknown_keys() {
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes:\n  tokn_ttl: 1h\n")),
        "cluster.yaml:4:3: unknown key `tokn_ttl` in kubernetes; allowed keys: version, control_plane_endpoint, vip, pod_subnet, service_subnet, token_ttl, cni, versions",
    );
    assert_error(
        &minimal(&format!("network: {NET}\nnodess: []\n")),
        "cluster.yaml:3:1: unknown key `nodess`; allowed keys: name, image, kubernetes, network, user, ssh_authorized_keys, user_groups, extra_groups, timezone, overlays, artifacts, nodes",
    );
    assert_error(
        &with_network("{gateway: 192.168.1.1, dns: [192.168.1.1], mtu: 1500}"),
        "cluster.yaml:2:53: unknown key `mtu` in network; allowed keys: interface, gateway, dns, wifi",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("role: control-plane,", "role: control-plane, hostname: x,"),
        "cluster.yaml:6:37: unknown key `hostname` in nodes[0]; allowed keys: name, role, address, profile, wifi",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n"))
            .replace("{source: x.img}", "{source: x.img, md5: abc}"),
        "cluster.yaml:3:24: unknown key `md5` in image; allowed keys: source, sha256, pi5_4k_pages",
    );
}

#[test]
fn duplicate_keys() {
    assert_error(
        &minimal(&format!("network: {NET}\nname: u\n")),
        "cluster.yaml:3:1: name: duplicate key (first at line 1)",
    );
}

#[test]
fn missing_required_keys() {
    assert_errors(
        "user: pi\n",
        &[
            "cluster.yaml:1:1: missing required key `name`",
            "cluster.yaml:1:1: missing required key `image`",
            "cluster.yaml:1:1: missing required key `ssh_authorized_keys`: the login user has no password, so at least one ssh public key is needed",
            "cluster.yaml:1:1: missing required key `nodes`",
        ],
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("name: cp, ", ""),
        "cluster.yaml:6:5: nodes[0]: missing required key `name`",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("name: t", "name:"),
        "cluster.yaml:1:5: name: a value is required",
    );
}

#[test]
fn wrong_types() {
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace(
            "nodes:\n  - {name: cp, role: control-plane, address: 192.168.1.10/24}",
            "nodes: 3",
        ),
        "cluster.yaml:5:8: nodes: expected a list of nodes, found the value `3`",
    );
    assert_error(
        &minimal(&format!("network: {NET}\nuser: [a, b]\n")),
        "cluster.yaml:3:7: user: expected a single value, found a list",
    );
    assert_error(&minimal("network: eth0\n"), "cluster.yaml:2:10: network: expected a mapping (`key: value` lines), found the value `eth0`");
    assert_error(
        &with_network("{gateway: 192.168.1.1, dns: 192.168.1.1}"),
        "cluster.yaml:2:38: network.dns: expected a list of IP addresses, found the value `192.168.1.1`",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("  - {name: cp,", "  - cp\n  - {name: cp,"),
        "cluster.yaml:6:5: nodes[0]: expected a mapping (`key: value` lines), found the value `cp`",
    );
    assert_error(
        &minimal(&format!(
            "network: {NET}\nkubernetes: {{cni: {{name: flannel}}}}\n"
        )),
        "cluster.yaml:3:19: kubernetes.cni: expected a single value, found a mapping",
    );
}

#[test]
fn nodes_empty_and_no_control_plane() {
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace(
            "nodes:\n  - {name: cp, role: control-plane, address: 192.168.1.10/24}",
            "nodes: []",
        ),
        "cluster.yaml:5:8: nodes: at least one node is needed",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("control-plane", "worker"),
        "cluster.yaml:5:1: nodes: no node has role control-plane; one is needed to create the cluster",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("control-plane", "master"),
        "cluster.yaml:6:22: nodes[0].role: `master` is not a role; use control-plane or worker",
    );
}

#[test]
fn node_names_must_be_unique_dns_labels() {
    let dup = minimal(&format!("network: {NET}\n")) + "  - name: cp\n    role: worker\n";
    assert_error(
        &dup,
        "cluster.yaml:7:11: nodes[1].name: duplicate node name `cp` (first at line 6)",
    );
    for (bad, col) in [("Pi-1", 12), ("pi_1", 12), ("-pi", 12), ("pi-", 12)] {
        let text =
            minimal(&format!("network: {NET}\n")).replace("name: cp", &format!("name: \"{bad}\""));
        assert_error(
            &text,
            &format!("cluster.yaml:6:{col}: nodes[0].name: `{bad}` is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"),
        );
    }
    let long = "a".repeat(64);
    let text = minimal(&format!("network: {NET}\n")).replace("name: cp", &format!("name: {long}"));
    assert!(parse_in(workdir().path(), &text)
        .unwrap_err()
        .to_string()
        .contains("is not a DNS-1123 label"));
    ok(&minimal(&format!("network: {NET}\n"))
        .replace("name: cp", &format!("name: {}", "a".repeat(63))));
    assert_error(&minimal(&format!("network: {NET}\n")).replace("name: t", "name: Home_Lab"), "cluster.yaml:1:7: name: `Home_Lab` is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)");
}

#[test]
fn duplicate_addresses() {
    let text = minimal(&format!("network: {NET}\n"))
        + "  - {name: w, role: worker, address: 192.168.1.10/16}\n";
    assert_error(
        &text,
        "cluster.yaml:7:38: nodes[1].address: 192.168.1.10 is already cp's address (line 6)",
    );
}

#[test]
fn addresses_must_be_cidr() {
    let cases = [
        ("192.168.1.10", "no prefix length (`/24`)"),
        ("192.168.1.10/33", "the prefix length is over 32"),
        ("192.168.1/24", "not an IP address before the `/`"),
        ("192.168.1.10/x", "the prefix length is not a number"),
    ];
    for (bad, why) in cases {
        let text = minimal(&format!("network: {NET}\n")).replace("192.168.1.10/24", bad);
        assert_error(
            &text,
            &format!("cluster.yaml:6:46: nodes[0].address: `{bad}` is not in CIDR form (address/prefix length, e.g. 192.168.1.10/24): {why}"),
        );
    }
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("192.168.1.10/24", "192.168.1.0/24"),
        "cluster.yaml:6:46: nodes[0].address: 192.168.1.0/24 is the network address of its subnet, not a host address",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("192.168.1.10/24", "192.168.1.255/24"),
        "cluster.yaml:6:46: nodes[0].address: 192.168.1.255/24 is the broadcast address of its subnet, not a host address",
    );
}

#[test]
fn gateway_and_dns() {
    assert_error(
        &with_network("{gateway: 192.168.2.1, dns: [192.168.1.1]}"),
        "cluster.yaml:6:46: nodes[0].address: network.gateway 192.168.2.1 is not in this node's subnet 192.168.1.0/24",
    );
    // Issue 12 item 14: a node at the gateway's address was accepted.
    assert_error(
        &with_network("{gateway: 192.168.1.10, dns: [192.168.1.1]}"),
        "cluster.yaml:6:46: nodes[0].address: 192.168.1.10 is network.gateway; a node needs an address of its own",
    );
    assert_error(
        &with_network("{gateway: 192.168.1, dns: [192.168.1.1]}"),
        "cluster.yaml:2:20: network.gateway: `192.168.1` is not an IP address",
    );
    assert_error(
        &with_network("{gateway: 192.168.1.1, dns: [192.168.1.1, dns.google]}"),
        "cluster.yaml:2:52: network.dns[1]: `dns.google` is not an IP address",
    );
    assert_errors(
        &minimal(""),
        &[
            "cluster.yaml:5:46: nodes[0].address: a fixed address needs network.gateway (kubeadm takes the node's IP from its default route)",
            "cluster.yaml:5:46: nodes[0].address: a fixed address needs network.dns (the node's name servers)",
        ],
    );
    // DHCP-only clusters need neither (but then an endpoint).
    let dhcp = minimal("kubernetes: {control_plane_endpoint: \"cp.lan:6443\"}\n")
        .replace(", address: 192.168.1.10/24", "");
    assert_eq!(ok(&dhcp).control_plane_endpoint(), "cp.lan:6443");
    assert_error(&with_network("{interface: \"eth 0\"}"), "cluster.yaml:2:22: network.interface: `eth 0` is not a network interface name (1 to 15 characters, no '/', ':' or blanks)");
}

#[test]
fn dhcp_first_control_plane_needs_an_endpoint() {
    let text = minimal(&format!("network: {NET}\n")).replace(", address: 192.168.1.10/24", "")
        + "  - {name: cp2, role: control-plane, address: 192.168.1.11/24}\n";
    assert_error(&text, "cluster.yaml:6:5: set kubernetes.control_plane_endpoint: the first control-plane node has no fixed address");
}

#[test]
fn subnets_must_not_overlap() {
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes:\n  pod_subnet: 10.0.0.0/8\n")),
        "cluster.yaml:4:15: kubernetes.service_subnet 10.96.0.0/12 overlaps kubernetes.pod_subnet 10.0.0.0/8",
    );
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes:\n  pod_subnet: 10.244.0.0/16\n  service_subnet: 10.244.128.0/17\n")),
        "cluster.yaml:5:19: kubernetes.service_subnet 10.244.128.0/17 overlaps kubernetes.pod_subnet 10.244.0.0/16",
    );
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes:\n  pod_subnet: 192.168.0.0/16\n")),
        "cluster.yaml:4:15: kubernetes.pod_subnet 192.168.0.0/16 overlaps the node network 192.168.1.0/24 of cp",
    );
    // A defaulted subnet is reported at the node.
    let text = minimal("network: {gateway: 10.100.0.1, dns: [10.100.0.1]}\n")
        .replace("192.168.1.10/24", "10.100.0.10/9");
    assert_error(
        &text,
        "cluster.yaml:6:46: nodes[0].address: the default kubernetes.service_subnet 10.96.0.0/12 (set another) overlaps the node network 10.0.0.0/9 of cp",
    );
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes: {{pod_subnet: 10.244.0.1/16}}\n")),
        "cluster.yaml:3:26: kubernetes.pod_subnet: 10.244.0.1/16 has host bits set; did you mean 10.244.0.0/16?",
    );
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes: {{service_subnet: 10.96.0.0}}\n")),
        "cluster.yaml:3:30: kubernetes.service_subnet: `10.96.0.0` is not in CIDR form (address/length, e.g. 10.96.0.0/12): no prefix length (`/24`)",
    );
}

#[test]
fn version_must_be_supported() {
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes: {{version: 1.30}}\n")),
        "cluster.yaml:3:23: kubernetes.version: 1.30 is not supported; supported versions: 1.33.6, 1.34.2, 1.32.10",
    );
    let err = parse_in(workdir().path(), &minimal(&format!("network: {NET}\n")));
    assert!(err.is_ok());
    let none = parse(
        &minimal(&format!("network: {NET}\n")),
        "cluster.yaml",
        workdir().path(),
        &[],
    )
    .unwrap_err();
    assert_eq!(
        none.to_string(),
        "cluster.yaml:1:1: kubernetes.version: no supported Kubernetes version to default to"
    );
}

#[test]
fn component_versions_replace_the_catalogs() {
    let spec = ok(&minimal(&format!(
        "network: {NET}\nkubernetes:\n  versions:\n    containerd: 2.1.5\n    runc: v1.3.4\n    cni_plugins: \"1.9.0\"\n    flannel: 0.27.4\n"
    )));
    assert_eq!(
        spec.kubernetes.versions,
        [
            ("containerd".to_string(), "2.1.5".to_string()),
            ("runc".to_string(), "1.3.4".to_string()),
            ("cni_plugins".to_string(), "1.9.0".to_string()),
            ("flannel".to_string(), "0.27.4".to_string()),
        ]
    );
    assert_eq!(
        ok(&minimal(&format!("network: {NET}\n")))
            .kubernetes
            .versions,
        []
    );
    assert_errors(
        &minimal(&format!(
            "network: {NET}\nkubernetes:\n  versions:\n    containerd: 2.1\n    etcd: 3.6.10\n    runc: [1.3.4]\n    crictl: 1.34.0/../x\n    flannel: 0.27.4\n    flannel: 0.27.5\n"
        )),
        &[
            "cluster.yaml:5:17: kubernetes.versions.containerd: `2.1` is not a release version like 2.1.5 (MAJOR.MINOR.PATCH)",
            "cluster.yaml:6:5: unknown key `etcd` in kubernetes.versions; allowed keys: containerd, runc, cni_plugins, crictl, flannel",
            "cluster.yaml:7:11: kubernetes.versions.runc: expected a single value, found a list",
            "cluster.yaml:8:13: kubernetes.versions.crictl: `1.34.0/../x` is not a release version like 2.1.5 (MAJOR.MINOR.PATCH)",
            "cluster.yaml:10:5: kubernetes.versions.flannel: duplicate key (first at line 9)",
        ],
    );
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes:\n  versions: 2.1.5\n")),
        "cluster.yaml:4:13: kubernetes.versions: expected a mapping (`key: value` lines), found the value `2.1.5`",
    );
    for good in ["1.7.1-flannel1", "2.2.0-rc.1", "10.20.30"] {
        assert!(super::check::is_component_version(good), "{good}");
    }
    for bad in [
        "1.2",
        "1.2.3.4",
        "1..3",
        "1.2.3-",
        "1.2.3-a/b",
        "01234567890.1.1",
        "v1.2.3",
        "",
    ] {
        assert!(!super::check::is_component_version(bad), "{bad}");
    }
}

#[test]
fn endpoint_must_be_host_port() {
    for bad in [
        "192.168.1.10",
        "192.168.1.10:",
        "192.168.1.10:99999",
        "cp:0",
        "under_score:6443",
        "1.2.3:6443",
        "fd00::1:6443",
        "[fd00::zz]:6443",
    ] {
        assert_error(
            &minimal(&format!("network: {NET}\nkubernetes: {{control_plane_endpoint: \"{bad}\"}}\n")),
            &format!("cluster.yaml:3:38: kubernetes.control_plane_endpoint: `{bad}` is not host:port (e.g. 192.168.1.10:6443 or k8s.example.lan:6443)"),
        );
    }
    for good in [
        "192.168.1.10:6443",
        "[fd00::1]:6443",
        "k8s.Home.lan:443",
        "cp:6443",
    ] {
        ok(&minimal(&format!(
            "network: {NET}\nkubernetes: {{control_plane_endpoint: \"{good}\"}}\n"
        )));
    }
}

#[test]
fn token_ttl_is_a_go_duration() {
    for good in [
        "24h", "90m", "1h30m", "0", "0s", "1.5h", "300ms", "2h45m10s",
    ] {
        ok(&minimal(&format!(
            "network: {NET}\nkubernetes: {{token_ttl: \"{good}\"}}\n"
        )));
    }
    for bad in ["24", "1d", "-1h", "h", "1h 30m", "1..5h", ""] {
        let text = minimal(&format!(
            "network: {NET}\nkubernetes: {{token_ttl: \"{bad}\"}}\n"
        ));
        assert_error(
            &text,
            &format!("cluster.yaml:3:25: kubernetes.token_ttl: `{bad}` is not a duration like 24h, 90m or 1h30m (0 = never expires)"),
        );
    }
    let d = |s: &str| GoDuration::parse(s).unwrap().as_duration();
    assert_eq!(d("1h30m").as_secs(), 5400);
    assert_eq!(d("1.5h").as_secs(), 5400);
    assert_eq!(d("300ms").as_millis(), 300);
    assert_eq!(GoDuration::parse("0"), Some(GoDuration::ZERO));
}

#[test]
fn cni_is_flannel_or_none() {
    assert_error(
        &minimal(&format!("network: {NET}\nkubernetes: {{cni: calico}}\n")),
        "cluster.yaml:3:19: kubernetes.cni: `calico` is not supported; use flannel, or none to apply your own",
    );
}

/// Issue 12 item 4: aliases are expanded within a bound (a "billion laughs" cluster.yaml is
/// one error at the alias that crosses it, not gigabytes), and a profile accepts none.
#[test]
fn alias_bombs_are_bounded_and_profiles_take_no_aliases() {
    let mut bomb = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*l{}", i - 1);
        bomb.push_str(&format!(
            "l{i}: &l{i} [{}]\n",
            [prev.as_str(); 9].join(", ")
        ));
    }
    let dir = workdir();
    let err = parse_in(dir.path(), &minimal(&bomb))
        .unwrap_err()
        .to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("cluster.yaml:")
            && err.ends_with(&format!(
                "aliases expand to more than {} nodes and bytes (an alias bomb?); write the values out",
                yaml::MAX_ALIAS_EXPANSION
            )),
        "{err}"
    );
    // Ordinary aliases still work in cluster.yaml.
    let spec = ok(&with_network("{gateway: &gw 192.168.1.1, dns: [*gw]}"));
    assert_eq!(
        spec.network.dns,
        vec!["192.168.1.1".parse::<IpAddr>().unwrap()]
    );

    // A profile: any anchor or alias is refused, at its place in the profile.
    fs::write(
        dir.path().join("node-profiles/alias.yaml"),
        "packages: [htop]\nruncmd: &r [[echo, hi]]\nbootcmd: *r\n",
    )
    .unwrap();
    let spec = minimal(&format!("network: {NET}\n")).replace(
        "address: 192.168.1.10/24",
        "address: 192.168.1.10/24, profile: node-profiles/alias.yaml",
    );
    let err = parse_in(dir.path(), &spec).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}/node-profiles/alias.yaml:2:9: anchors and aliases (`&name`, `*name`) are not accepted here; write the values out",
            dir.path().display()
        )
    );
    // (Profiles used to accept `j: &x [1]` / `k: *x`; issue 12 asks for none.)
    let err = parse_profile("a: &x 1\nb: *x\n", "p.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("p.yaml:1:4: anchors and aliases"), "{err}");
}

#[test]
fn profiles() {
    // Bad YAML: reported in the profile file.
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace(
            "address: 192.168.1.10/24",
            "address: 192.168.1.10/24, profile: node-profiles/bad.yaml",
        ),
        "$DIR/node-profiles/bad.yaml:1:11: this `[` is never closed; a missing `]` would explain the error at line 2, column 7\n$DIR/node-profiles/bad.yaml:2:7: invalid YAML: illegal placement of ':' indicator",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace(
            "address: 192.168.1.10/24",
            "address: 192.168.1.10/24, profile: node-profiles/dup.yaml",
        ),
        "$DIR/node-profiles/dup.yaml:3:1: duplicate key `packages` (first at line 1)",
    );
    // Missing, or not a mapping: reported at the `profile:` key.
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("address: 192.168.1.10/24", "address: 192.168.1.10/24, profile: node-profiles/nope.yaml"),
        "cluster.yaml:6:63: nodes[0].profile: cannot read $DIR/node-profiles/nope.yaml: No such file or directory (os error 2)",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace("address: 192.168.1.10/24", "address: 192.168.1.10/24, profile: node-profiles/list.yaml"),
        "cluster.yaml:6:63: nodes[0].profile: $DIR/node-profiles/list.yaml must hold a mapping of cloud-config keys (packages:, runcmd:, ...), not a list",
    );
    // An empty profile (comments only) is an empty mapping.
    let spec = ok(&minimal(&format!("network: {NET}\n")).replace(
        "address: 192.168.1.10/24",
        "address: 192.168.1.10/24, profile: node-profiles/empty.yaml",
    ));
    assert_eq!(spec.nodes[0].profile.as_ref().unwrap().value, json!({}));
}

#[test]
fn profile_values_keep_their_meaning_for_cloud_init() {
    let v = parse_profile(
        "a: yes\nb: 0644\nc: \"0644\"\nd: 12\ne: 1.5\nf: ~\ng: 'true'\nh: 1e3\ni: !!str 12\nl: |\n  two\n  lines\n",
        "p.yaml",
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"a": true, "b": "0644", "c": "0644", "d": 12, "e": 1.5, "f": null, "g": "true",
               "h": "1e3", "i": "12", "l": "two\nlines\n"})
    );
    let err = parse_profile("[1, 2]\n", "p.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:1:1: expected a mapping of cloud-config keys, found a list"
    );
    let err = parse_profile("a: 1\n---\nb: 2\n", "p.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:2:1: more than one YAML document (`---`): keep one document per file"
    );
}

#[test]
fn image_source_and_digest() {
    let url_no_sha = minimal(&format!("network: {NET}\n")).replace(
        "{source: x.img}",
        "{source: \"https://example.org/os.img.xz\"}",
    );
    assert_error(
        &url_no_sha,
        "cluster.yaml:3:17: image.source is a URL, so image.sha256 is required (the digest published beside the image)",
    );
    let bad_sha = minimal(&format!("network: {NET}\n"))
        .replace("{source: x.img}", "{source: x.img, sha256: abc}");
    assert_error(
        &bad_sha,
        "cluster.yaml:3:32: image.sha256: `abc` is not a SHA-256 digest (64 hexadecimal digits)",
    );
    let ftp = minimal(&format!("network: {NET}\n"))
        .replace("{source: x.img}", "{source: \"ftp://h/x.img\"}");
    assert_error(&ftp, "cluster.yaml:3:17: image.source: unsupported URL scheme `ftp`; use https:// or a file path");
    let local_sha = minimal(&format!("network: {NET}\n")).replace(
        "{source: x.img}",
        &format!("{{source: x.img, sha256: {}}}", "A".repeat(64)),
    );
    assert_eq!(ok(&local_sha).image.sha256, Some("a".repeat(64)));
}

/// Issue 12 item 8: one entry must stay one authorized_keys line, of a type sshd knows.
#[test]
fn ssh_keys_cannot_inject_lines() {
    let with_key = |k: &str| minimal(&format!("network: {NET}\n")).replace(KEY, k);
    let good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL76qBYQMQL4UqFY0umO4uSshKLPgM+YU9Y3ZbhqK9VN";
    // YAML double-quoted escapes: each decodes to the character in the message.
    for (escape, code) in [
        ("\\n", "000A"),
        ("\\r", "000D"),
        ("\\u2028", "2028"),
        ("\\u2029", "2029"),
        ("\\x85", "0085"),
        ("\\0", "0000"),
        ("\\e", "001B"),
    ] {
        let injected = format!("{good} me{escape}command=\\\"sh\\\" {good} evil");
        assert_error(
            &with_key(&injected),
            &format!(
                "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): it contains the control or line-break character U+{code}; write one key per list item, on one line"
            ),
        );
    }
    // A line break inside the base64 is refused too, not split into a shorter valid key.
    assert!(parse_in(Path::new("."), &with_key(&format!("{good}\\n"))).is_err());
    // A tab between the fields is blank, as sshd reads it.
    ok(&with_key(&format!("{good}\\tme@laptop")));
    // A prefix of a known type is not a known type.
    assert_error(
        &with_key("ssh-foo AAAAB3NzaC1mb28="),
        "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): `ssh-foo` is not a key type sshd accepts here; use one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, sk-ecdsa-sha2-nistp256@openssh.com, sk-ssh-ed25519@openssh.com",
    );
    // The written entry is the key as given, on one line.
    let spec = ok(&with_key(&format!("{good} me@laptop")));
    assert_eq!(spec.ssh_authorized_keys, vec![format!("{good} me@laptop")]);
}

#[test]
fn ssh_keys() {
    let with_key = |k: &str| minimal(&format!("network: {NET}\n")).replace(KEY, k);
    assert_error(
        &with_key("AAAAC3NzaC1lZDI1NTE5 me"),
        "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): `AAAAC3NzaC1lZDI1NTE5` is not a key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, sk-...)",
    );
    assert_error(
        &with_key("ssh-ed25519"),
        "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): the base64 key is missing",
    );
    assert_error(
        &with_key("ssh-ed25519 AAAA*C3Nz"),
        "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): the key is not valid base64 (truncated?)",
    );
    assert_error(
        &with_key("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIL76qBYQMQL4UqFY0umO4uSshKLPgM+YU9Y3ZbhqK9VN"),
        "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): the key data is not a whole ssh-rsa key (truncated or mangled?)",
    );
    assert_error(
        &with_key("ssh-ed25519 AAAAC3NzaC1lZDI1"),
        "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): the key data is not a whole ssh-ed25519 key (truncated or mangled?)",
    );
    // Real keys of other types (made by ssh-keygen), and security-key shapes built field by
    // field; each cut short by a few characters is refused though its base64 still decodes.
    let sk = |fields: &[&[u8]]| {
        use base64::Engine as _;
        let mut blob = Vec::new();
        for f in fields {
            blob.extend_from_slice(&(f.len() as u32).to_be_bytes());
            blob.extend_from_slice(f);
        }
        base64::engine::general_purpose::STANDARD.encode(blob)
    };
    let sk_ed = format!(
        "sk-ssh-ed25519@openssh.com {}",
        sk(&[b"sk-ssh-ed25519@openssh.com", &[7; 32], b"ssh:"])
    );
    let sk_ecdsa = format!(
        "sk-ecdsa-sha2-nistp256@openssh.com {}",
        sk(&[
            b"sk-ecdsa-sha2-nistp256@openssh.com",
            b"nistp256",
            &[4; 65],
            b"ssh:"
        ])
    );
    for good in [
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJtaGofDPMyvt4L7J10Wq/M9XxCmUQsyVi1WVxTr2ub9D5QWNq2j1kMsgY1cYdRsmb5OSwTxXTXhFAXXwjw4O+8=",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQChhL7i/g7Fn7yfMZmoApyVASfLlV/fXiT1qG6U/5h7OZE20lOoviqLmOzgk70vXzGFfiE/WygnD7wqPaPdQ9XyR9VXWFf283M7HPa/RO2OtP6RMxBWjSa4FYT2g/cPLqcunqYFVN4mSP+BqjPF/0+VAZlDbiPk8zUvrVTH/G+Orw==",
        &sk_ed,
        &sk_ecdsa,
    ] {
        ok(&with_key(&format!("{good} comment with spaces")));
        let (kind, data) = good.split_once(' ').unwrap();
        let data = data.trim_end_matches('=');
        for cut in [2, 4, 8] {
            let short = format!("{kind} {}", &data[..data.len() - cut]);
            let e = errors(&with_key(&short));
            assert!(
                e.len() == 1
                    && (e[0].contains(&format!("the key data is not a whole {kind} key"))
                        || e[0].contains("not valid base64")),
                "{short}: {e:?}"
            );
        }
    }
    // Cut after the type name, as a paste that lost its end.
    assert_error(
        &with_key("ssh-rsa AAAAB3NzaC1yc2E="),
        &format!("{}the key data is not a whole ssh-rsa key (truncated or mangled?)", "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): "),
    );
    // The template's placeholder is refused where it is written.
    assert_error(
        &with_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxREPLACExWITHxYOURxOWNxPUBLICKEY you@laptop"),
        "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): this is the template's placeholder key, with which nobody can log in; replace it with your own public key (the line in ~/.ssh/id_ed25519.pub; `ssh-keygen -t ed25519` makes one)",
    );
    assert_error(
        &minimal(&format!("network: {NET}\n")).replace(&format!("[\"{KEY}\"]"), "[]"),
        "cluster.yaml:4:22: ssh_authorized_keys: at least one key is needed; the login user has no password",
    );
}

#[test]
fn user_names() {
    for bad in ["Pi", "1pi", "pi user", "p.i"] {
        assert_error(
            &minimal(&format!("network: {NET}\nuser: \"{bad}\"\n")),
            &format!("cluster.yaml:3:7: user: `{bad}` is not a valid Linux user name (a lowercase letter, then lowercase letters, digits, '_' or '-'; at most 32 characters)"),
        );
    }
    assert_error(
        &minimal(&format!("network: {NET}\nuser: root\n")),
        "cluster.yaml:3:7: user: must not be root; cloud-init makes a new login user",
    );
    ok(&minimal(&format!("network: {NET}\nuser: k8s_admin-2\n")));
}

#[test]
fn login_user_groups() {
    let spec = ok(&minimal(&format!("network: {NET}\n")));
    assert_eq!(spec.user_groups, None);
    assert!(spec.extra_groups.is_empty());
    let spec = ok(&minimal(&format!(
        "network: {NET}\nuser_groups: [sudo, video]\nextra_groups: [docker]\n"
    )));
    assert_eq!(
        spec.user_groups,
        Some(vec!["sudo".to_string(), "video".to_string()])
    );
    assert_eq!(spec.extra_groups, ["docker"]);
    assert_eq!(
        ok(&minimal(&format!("network: {NET}\nuser_groups: []\n"))).user_groups,
        Some(vec![])
    );
    assert_errors(
        &minimal(&format!(
            "network: {NET}\nuser_groups: [sudo, Video, sudo]\nextra_groups: gpio\n"
        )),
        &[
            "cluster.yaml:3:21: user_groups[1]: `Video` is not a valid group name (a lowercase letter, then lowercase letters, digits, '_' or '-'; at most 32 characters)",
            "cluster.yaml:3:28: user_groups[2]: `sudo` is listed twice",
            "cluster.yaml:4:15: extra_groups: expected a list of group names, found the value `gpio`",
        ],
    );
}

/// Issue 15 item 2: an unclosed bracket is reported where the parser gives up and where the
/// bracket opened, lines above it.
#[test]
fn unclosed_brackets_point_at_the_opening_one() {
    let text = minimal(&format!("network: {NET}\n"))
        .replace(&format!("[\"{KEY}\"]"), &format!("[\"{KEY}\""));
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0], "cluster.yaml:5:1: invalid YAML: invalid indentation");
    assert_eq!(
        e[1],
        "cluster.yaml:4:22: this `[` is never closed; a missing `]` would explain the error at line 5, column 1"
    );
    let text = minimal("network: {gateway: 192.168.1.1, dns: [192.168.1.1]\n");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[1].starts_with("cluster.yaml:2:10: this `{` is never closed; a missing `}` would explain the error at line "),
        "{e:?}"
    );
    // A block-style document with an error has no bracket to point at.
    let e = errors("name: t\nuser: pi\n  bad: 1\nfoo: [a]\n");
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn timezone_and_overlays() {
    assert_error(
        &minimal(&format!("network: {NET}\ntimezone: \"../etc/passwd\"\n")),
        "cluster.yaml:3:11: timezone: `../etc/passwd` is not a time zone name like Europe/Lisbon or Etc/UTC",
    );
    ok(&minimal(&format!(
        "network: {NET}\ntimezone: America/Argentina/Buenos_Aires\n"
    )));
    // Well-formed but not a zone: the nearest name is suggested (issue 15 item 2).
    assert_error(
        &minimal(&format!("network: {NET}\ntimezone: Europe/Lisboa\n")),
        "cluster.yaml:3:11: timezone: `Europe/Lisboa` is not in the tz database; did you mean Europe/Lisbon?",
    );
    assert_error(
        &minimal(&format!("network: {NET}\ntimezone: america/new_york\n")),
        "cluster.yaml:3:11: timezone: `america/new_york` is not in the tz database; did you mean America/New_York?",
    );
    assert_error(
        &minimal(&format!("network: {NET}\ntimezone: Nowhere/Atall\n")),
        "cluster.yaml:3:11: timezone: `Nowhere/Atall` is not in the tz database; see the names in /usr/share/zoneinfo, such as Europe/Lisbon or Etc/UTC",
    );
    for z in [
        "UTC",
        "Etc/UTC",
        "Europe/Kyiv",
        "Asia/Kolkata",
        "America/Ciudad_Juarez",
    ] {
        ok(&minimal(&format!("network: {NET}\ntimezone: {z}\n")));
    }
    assert_error(
        &minimal(&format!(
            "network: {NET}\noverlays: [overlays/site, overlays/nope]\n"
        )),
        "cluster.yaml:3:27: overlays[1]: $DIR/overlays/nope: no such directory",
    );
}

#[test]
fn all_errors_are_reported_in_order() {
    let text = "name: Bad\nimage: {source: x.img}\nuser: Root\nssh_authorized_keys: [x]\nnodes:\n  - {name: a, role: worker}\n  - {name: a, role: boss}\nextra: 1\n";
    assert_errors(
        text,
        &[
            "cluster.yaml:1:7: name: `Bad` is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)",
            "cluster.yaml:3:7: user: `Root` is not a valid Linux user name (a lowercase letter, then lowercase letters, digits, '_' or '-'; at most 32 characters)",
            "cluster.yaml:4:23: ssh_authorized_keys[0]: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): `x` is not a key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, sk-...)",
            "cluster.yaml:7:21: nodes[1].role: `boss` is not a role; use control-plane or worker",
            "cluster.yaml:8:1: unknown key `extra`; allowed keys: name, image, kubernetes, network, user, ssh_authorized_keys, user_groups, extra_groups, timezone, overlays, artifacts, nodes",
        ],
    );
}

// ---- init templates ----

#[test]
fn init_templates_validate() {
    let dir = tempfile::tempdir().unwrap();
    for (rel, content) in init_files() {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    // As written, the template names an image that is not there yet and a placeholder key:
    // both are refused, at their lines, in one report.
    let path = dir.path().join("cluster.yaml");
    let template = fs::read_to_string(&path).unwrap();
    let line_of = |needle: &str| template.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let err = load(&path, VERSIONS).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    let image = dir
        .path()
        .join("./2025-11-24-raspios-trixie-arm64-lite.img.xz");
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(
        lines[0],
        format!(
            "{}:{}:11: image.source: {}: no such file",
            path.display(),
            line_of("source: ./2025"),
            image.display()
        )
    );
    assert!(
        lines[1].starts_with(&format!(
            "{}:{}:5: ssh_authorized_keys[0]: not an OpenSSH public key",
            path.display(),
            line_of("PLACEHOLDER")
        )) && lines[1].contains("the template's placeholder key"),
        "{err}"
    );
    // With an image and a key of one's own, it is a valid spec.
    fs::write(&image, "").unwrap();
    let edited = template.replace(
        super::check::PLACEHOLDER_KEY_DATA,
        "AAAAC3NzaC1lZDI1NTE5AAAAIL76qBYQMQL4UqFY0umO4uSshKLPgM+YU9Y3ZbhqK9VN",
    );
    fs::write(&path, edited).unwrap();
    let spec = load(&path, VERSIONS).unwrap();
    assert_eq!(spec.nodes.len(), 3);
    assert_eq!(spec.control_planes().count(), 1);
    assert_eq!(
        spec.first_control_plane().address,
        Some("192.168.1.10/24".parse().unwrap())
    );
    assert!(
        spec.nodes
            .iter()
            .any(|n| n.role == Role::Worker && n.address.is_none()),
        "one worker on DHCP"
    );
    assert_eq!(spec.control_plane_endpoint(), "192.168.1.10:6443");
    assert_eq!(spec.overlays, vec![dir.path().join("overlays/site")]);
    let cp = spec.nodes[0].profile.as_ref().unwrap();
    assert_eq!(cp.value["packages"], json!(["htop"]));
    assert!(cp.value["runcmd"].is_array());
    assert_eq!(cp.value["write_files"][0]["path"], json!("/etc/motd"));
    let w = spec.nodes[2].profile.as_ref().unwrap();
    assert_eq!(w.path, dir.path().join("node-profiles/worker.yaml"));
    for (rel, content) in init_files() {
        if rel.ends_with(".yaml") {
            assert!(content.starts_with('#'), "{rel} starts with a comment");
        }
    }
}

#[test]
fn repo_profiles_are_the_init_profiles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (rel, content) in init_files() {
        let repo_path = if rel == "cluster.yaml" {
            root.join("examples/cluster.yaml")
        } else if rel.starts_with("node-profiles/") {
            root.join(rel)
        } else {
            continue;
        };
        assert_eq!(fs::read_to_string(repo_path).unwrap(), content, "{rel}");
    }
}

#[test]
fn template_mentions_every_key() {
    let (_, template) = init_files()
        .into_iter()
        .find(|(p, _)| *p == "cluster.yaml")
        .unwrap();
    for key in [
        "name:",
        "image:",
        "source:",
        "sha256:",
        "kubernetes:",
        "version:",
        "control_plane_endpoint:",
        "pod_subnet:",
        "service_subnet:",
        "token_ttl:",
        "cni:",
        "network:",
        "interface:",
        "gateway:",
        "dns:",
        "user:",
        "ssh_authorized_keys:",
        "timezone:",
        "overlays:",
        "artifacts:",
        "nodes:",
        "role:",
        "address:",
        "profile:",
    ] {
        assert!(template.contains(key), "{key}");
    }
}

// ---- the YAML emitter ----

#[test]
fn emitted_yaml_reads_back_as_the_same_value() {
    let value = json!({
        "packages": ["htop", "vim"],
        "package_upgrade": true,
        "write_files": [
            {"path": "/etc/motd", "permissions": "0644", "content": "hello\nworld\n"},
            {"path": "/etc/x", "content": "no newline\nat end"},
            {"path": "/etc/y", "content": "two newlines\n\n", "owner": "root:root"},
            {"path": "/etc/z", "content": " leading space\n", "encoding": "text/plain"},
        ],
        "runcmd": [["sh", "-c", "echo 'a: b' # not a comment"], "systemctl enable --now x"],
        "strings": ["yes", "no", "on", "null", "~", "", "12", "1.5", "0x1f", "1_000", "-", "- a", "a: b", "#x",
                     "x #y", "@x", "`x", "!x", "&x", "*x", "|", ">", "%x", "'q'", "\"q\"", "[a]", "{a}", "a,b", "2025-11-24",
                     "tab\there", "trailing ", " leading", "é ünïcode", "back\\slash", "cr\r\nlf", ".inf", "y", "N", "<<", "a:", "?x", "---"],
        "numbers": [0, -1, 12, 1.5],
        "nested": {"empty_map": {}, "empty_list": [], "null": null, "deep": {"a": [{"b": [1, {"c": "d"}]}]}},
        "weird key: x": 1,
        "0644": "key that looks like a number",
    });
    let text = to_yaml(&value);
    let back = yaml::to_json(&yaml::parse(&text).unwrap().unwrap()).unwrap();
    assert_eq!(back, value, "emitted:\n{text}");
    // Multi-line strings are literal blocks, and plain strings stay plain.
    assert!(
        text.contains("content: |\n      hello\n      world\n"),
        "{text}"
    );
    assert!(text.contains("- htop\n"), "{text}");
    assert!(text.contains("permissions: \"0644\""), "{text}");
    assert!(cloud_config(&json!({"a": 1})).starts_with("#cloud-config\na: 1\n"));
}

#[test]
fn emitted_yaml_is_read_the_same_by_pyyaml() {
    // PyYAML (YAML 1.1) is what cloud-init reads user-data with: the real oracle.
    // A missing python3 or PyYAML fails the test (tests/install-deps.sh installs them).
    let value = json!({
        "a": ["yes", "no", "on", "off", "y", "n", "0644", "0x1f", "1_000", "1:30", "2025-11-24", "~", "null", "", ".5", "1e3", "=", "<<"],
        "b": {"text": "x\ny\n", "keep": "x\n\n", "strip": "x\ny", "tab": "a\tb\nc\n", "n": 1.5, "m": -3, "t": true, "z": null},
        "c": [{"d": 1, "e": [1, 2]}, [], {}],
        "unicode": "é – ✓",
    });
    let text = to_yaml(&value);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("u.yaml");
    fs::write(&file, &text).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8'))))"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, value, "emitted:\n{text}");
}

#[test]
fn init_profiles_pass_cloud_init_schema() {
    // cloud-init itself is the oracle (tests/install-deps.sh installs it).
    let dir = tempfile::tempdir().unwrap();
    for (rel, content) in init_files() {
        if !rel.starts_with("node-profiles/") {
            continue;
        }
        let value = parse_profile(content, rel).unwrap();
        for (name, text) in [
            ("as-written.yaml", content.to_string()),
            ("emitted.yaml", cloud_config(&value)),
        ] {
            let file = dir.path().join(name);
            fs::write(&file, &text).unwrap();
            let out = std::process::Command::new("cloud-init")
                .args(["schema", "-c"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{rel} ({name}) fails cloud-init schema:\n{}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `network.wifi` written block-style at line 5 (after `network:`, gateway and dns).
fn with_wifi(wifi_lines: &str) -> String {
    minimal(&format!(
        "network:\n  gateway: 192.168.1.1\n  dns: [192.168.1.1]\n  wifi:\n{wifi_lines}"
    ))
}

#[test]
fn wifi_parses_cluster_wide_and_per_node() {
    let dir = workdir();
    fs::write(dir.path().join("cp.psk"), "cp passphrase\n").unwrap();
    let text = with_wifi("    ssid: home net\n    psk: \"correct horse\"\n    country: PT\n")
        .replace(
            "  - {name: cp, role: control-plane, address: 192.168.1.10/24}\n",
            "  - {name: cp, role: control-plane, address: 192.168.1.10/24}\n  - name: zero\n    role: worker\n    wifi: {ssid: attic, psk_file: cp.psk, country: GB, hidden: true}\n",
        );
    let spec = parse_in(dir.path(), &text).unwrap_or_else(|e| panic!("{e}"));
    let all = spec.network.wifi.as_ref().unwrap();
    assert_eq!(
        (
            all.ssid.as_str(),
            all.psk.expose(),
            all.country.as_str(),
            all.hidden
        ),
        ("home net", "correct horse", "PT", false)
    );
    let cp = spec.node_wifi(&spec.nodes[0]).unwrap();
    assert_eq!(cp.ssid, "home net");
    let zero = spec.node_wifi(&spec.nodes[1]).unwrap();
    assert_eq!(
        (
            zero.ssid.as_str(),
            zero.psk.expose(),
            zero.country.as_str(),
            zero.hidden
        ),
        ("attic", "cp passphrase", "GB", true)
    );
    // The key never shows in a Debug print of the spec.
    assert!(!format!("{spec:?}").contains("correct horse"));
    assert!(!format!("{spec:?}").contains("cp passphrase"));
    // Without network.wifi: no Wi-Fi.
    assert!(ok(&minimal(
        "network: {gateway: 192.168.1.1, dns: [192.168.1.1]}\n"
    ))
    .network
    .wifi
    .is_none());
}

#[test]
fn wifi_errors_name_file_line_and_column() {
    let long = "x".repeat(33);
    assert_errors(
        &with_wifi(&format!(
            "    ssid: {long}\n    psk: short\n    country: UK\n    hidden: maybe\n"
        )),
        &[
            "cluster.yaml:6:11: network.wifi.ssid: an SSID has 1 to 32 bytes and no control characters (this one has 33 bytes)",
            "cluster.yaml:7:10: network.wifi.psk: a passphrase has 8 to 63 characters (or give the key as 64 hex digits)",
            "cluster.yaml:8:14: network.wifi.country: `UK` is not an ISO 3166 country code (two capital letters, such as PT, GB or US): it sets the Wi-Fi regulatory domain",
            "cluster.yaml:9:13: network.wifi.hidden: expected true or false",
        ],
    );
    assert_error(
        &with_wifi("    ssid: home\n    psk: \"pässwörter\"\n    country: PT\n"),
        "cluster.yaml:7:10: network.wifi.psk: a passphrase is printable ASCII only (no tabs, newlines or accents)",
    );
    assert_error(
        &with_wifi("    ssid: home\n    country: PT\n"),
        "cluster.yaml:6:5: network.wifi: missing required key `psk` (or `psk_file`, a file holding it)",
    );
    assert_error(
        &with_wifi(
            "    ssid: home\n    psk: \"correct horse\"\n    psk_file: k.psk\n    country: PT\n",
        ),
        "cluster.yaml:8:15: network.wifi: give psk or psk_file, not both",
    );
    assert_error(
        &with_wifi("    ssid: home\n    psk_file: nope.psk\n    country: PT\n"),
        "cluster.yaml:7:15: network.wifi.psk_file: cannot read $DIR/nope.psk: No such file or directory (os error 2)",
    );
    assert_error(
        &with_wifi("    ssid: home\n    psk: \"correct horse\"\n"),
        "cluster.yaml:6:5: network.wifi: missing required key `country`",
    );
    // A bad key in a psk_file is reported at psk_file, without the key.
    let dir = workdir();
    fs::write(dir.path().join("bad.psk"), "tiny\n").unwrap();
    let err = parse_in(
        dir.path(),
        &with_wifi("    ssid: home\n    psk_file: bad.psk\n    country: PT\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("cluster.yaml:7:15: network.wifi.psk_file: the key in "),
        "{err}"
    );
    assert!(
        err.contains("8 to 63 characters") && !err.contains("tiny"),
        "{err}"
    );
    // A node's own wifi is checked at its own path.
    assert_error(
        &minimal("network: {gateway: 192.168.1.1, dns: [192.168.1.1]}\n").replace(
            "address: 192.168.1.10/24}",
            "address: 192.168.1.10/24, wifi: {ssid: a, psk: \"correct horse\", country: pt}}",
        ),
        "cluster.yaml:6:110: nodes[0].wifi.country: `pt` is not an ISO 3166 country code (two capital letters, such as PT, GB or US): it sets the Wi-Fi regulatory domain",
    );
}

#[test]
fn image_pi5_4k_pages_is_a_boolean_placed_at_its_value() {
    let spec = |image: &str| {
        format!(
            "name: t\nnetwork: {{gateway: 192.168.1.1, dns: [192.168.1.1]}}\nimage:\n{image}ssh_authorized_keys: [\"{KEY}\"]\nnodes:\n  - {{name: cp, role: control-plane, address: 192.168.1.10/24}}\n"
        )
    };
    let s = ok(&spec("  source: x.img\n  pi5_4k_pages: true\n"));
    let pos = s.image.pi5_4k_pages.expect("set");
    assert_eq!((pos.line, pos.col), (5, 17));
    assert_eq!(
        ok(&spec("  source: x.img\n  pi5_4k_pages: false\n"))
            .image
            .pi5_4k_pages,
        None
    );
    assert_eq!(ok(&spec("  source: x.img\n")).image.pi5_4k_pages, None);
    assert_error(
        &spec("  source: x.img\n  pi5_4k_pages: yes please\n"),
        "cluster.yaml:5:17: image.pi5_4k_pages: expected true or false",
    );
}
