//! From the YAML tree to a [`Spec`]: types, defaults and every check, each problem reported at
//! the key or value to fix. Problems are collected, not returned at the first one; a value with
//! a problem is left out of the checks that depend on it, so one mistake gives one message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::yaml::{self, Item, Kind, Pos};
use super::{
    parse_go_duration, Cidr, Cni, Diagnostic, ImageSource, Kubernetes, Network, Node, Profile,
    Role, Source, Spec,
};

const TOP_KEYS: &[&str] = &[
    "name",
    "image",
    "kubernetes",
    "network",
    "user",
    "ssh_authorized_keys",
    "timezone",
    "overlays",
    "artifacts",
    "nodes",
];
const IMAGE_KEYS: &[&str] = &["source", "sha256"];
const KUBERNETES_KEYS: &[&str] = &[
    "version",
    "control_plane_endpoint",
    "pod_subnet",
    "service_subnet",
    "token_ttl",
    "cni",
];
const NETWORK_KEYS: &[&str] = &["interface", "gateway", "dns"];
const NODE_KEYS: &[&str] = &["name", "role", "address", "profile"];

const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
const DEFAULT_TOKEN_TTL: &str = "24h";
const DEFAULT_INTERFACE: &str = "eth0";
const DEFAULT_USER: &str = "pi";
const DEFAULT_TIMEZONE: &str = "Etc/UTC";

/// Collects the problems of one spec (and of the profiles it names).
struct Ctx<'a> {
    file: &'a str,
    base_dir: &'a Path,
    diagnostics: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_string(),
            pos,
            message: message.into(),
        });
    }

    fn resolve(&self, rel: &str) -> PathBuf {
        resolve(self.base_dir, rel)
    }

    /// Checks that `item` is a mapping with only `allowed` keys, each once.
    fn fields<'t>(&mut self, item: &'t Item, path: &str, allowed: &[&str]) -> Option<Fields<'t>> {
        let Kind::Map(entries) = &item.kind else {
            let what = if path.is_empty() {
                "the file".to_string()
            } else {
                path.to_string()
            };
            self.err(
                item.pos,
                format!(
                    "{what}: expected a mapping (`key: value` lines), found {}",
                    item.describe()
                ),
            );
            return None;
        };
        let mut fields = Fields {
            pos: item.pos,
            path: path.to_string(),
            entries: Vec::new(),
        };
        for (key, value) in entries {
            let Some(name) = key.as_str() else {
                self.err(
                    key.pos,
                    format!(
                        "{}: a key must be a plain name, not {}",
                        or_top(path),
                        key.describe()
                    ),
                );
                continue;
            };
            if !allowed.contains(&name) {
                let place = if path.is_empty() {
                    String::new()
                } else {
                    format!(" in {path}")
                };
                self.err(
                    key.pos,
                    format!(
                        "unknown key `{name}`{place}; allowed keys: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            if let Some((_, first, _)) = fields.entries.iter().find(|(n, _, _)| *n == name) {
                let line = first.pos.line;
                self.err(
                    key.pos,
                    format!("{}: duplicate key (first at line {line})", join(path, name)),
                );
                continue;
            }
            fields.entries.push((name, key, value));
        }
        Some(fields)
    }

    /// A required value: reports a missing key at the mapping, an empty value at the value.
    fn required<'t>(&mut self, fields: &Fields<'t>, name: &str) -> Option<&'t Item> {
        match fields.entry(name) {
            None => {
                let path = fields.path.as_str();
                let msg = if path.is_empty() {
                    format!("missing required key `{name}`")
                } else {
                    format!("{path}: missing required key `{name}`")
                };
                self.err(fields.pos, msg);
                None
            }
            Some((_, value)) if value.is_null() => {
                self.err(
                    value.pos,
                    format!("{}: a value is required", join(&fields.path, name)),
                );
                None
            }
            Some((_, value)) => Some(value),
        }
    }

    /// A scalar's text; reports lists and mappings.
    fn text<'t>(&mut self, item: &'t Item, path: &str) -> Option<&'t str> {
        match item.as_str() {
            Some(s) => Some(s),
            None => {
                self.err(
                    item.pos,
                    format!("{path}: expected a single value, found {}", item.describe()),
                );
                None
            }
        }
    }

    /// A list's items; a null value is an empty list.
    fn list<'t>(&mut self, item: &'t Item, path: &str, of_what: &str) -> Option<&'t [Item]> {
        match &item.kind {
            Kind::Seq(items) => Some(items),
            _ if item.is_null() => Some(&[]),
            _ => {
                self.err(
                    item.pos,
                    format!(
                        "{path}: expected a list of {of_what}, found {}",
                        item.describe()
                    ),
                );
                None
            }
        }
    }
}

/// A checked mapping: its known keys in source order.
struct Fields<'t> {
    pos: Pos,
    path: String,
    entries: Vec<(&'t str, &'t Item, &'t Item)>,
}

impl<'t> Fields<'t> {
    fn entry(&self, name: &str) -> Option<(&'t Item, &'t Item)> {
        self.entries
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, k, v)| (k, v))
    }

    /// The value of an optional key; `None` if absent or null.
    fn get(&self, name: &str) -> Option<&'t Item> {
        self.entry(name).map(|(_, v)| v).filter(|v| !v.is_null())
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn or_top(path: &str) -> &str {
    if path.is_empty() {
        "the file"
    } else {
        path
    }
}

/// `rel` against `base`, without a `./` in front when `base` is the current directory.
pub(super) fn resolve(base: &Path, rel: &str) -> PathBuf {
    let rel = Path::new(rel);
    if rel.is_absolute() || base.as_os_str().is_empty() || base == Path::new(".") {
        rel.to_path_buf()
    } else {
        base.join(rel)
    }
}

pub(super) fn check(
    text: &str,
    file: &str,
    base_dir: &Path,
    supported_versions: &[&str],
) -> Result<Spec, Vec<Diagnostic>> {
    let mut ctx = Ctx {
        file,
        base_dir,
        diagnostics: Vec::new(),
    };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            ctx.err(
                Pos::START,
                "the file is empty; expected cluster settings (`piforge init` writes an example)",
            );
            return Err(ctx.diagnostics);
        }
        Err(e) => {
            ctx.err(e.pos, e.message);
            return Err(ctx.diagnostics);
        }
    };
    let spec = convert(&mut ctx, &root, supported_versions);
    let mut diagnostics = ctx.diagnostics;
    match spec {
        Some(spec) if diagnostics.is_empty() => Ok(spec),
        _ => {
            // The spec's own problems first, then those in profiles, each by position.
            diagnostics.sort_by(|a, b| {
                (a.file != file, &a.file, a.pos).cmp(&(b.file != file, &b.file, b.pos))
            });
            diagnostics.dedup();
            Err(diagnostics)
        }
    }
}

/// A value that may have been written or may be the default: where to point when it clashes.
struct Placed<T> {
    value: T,
    /// `None` when defaulted.
    pos: Option<Pos>,
}

fn convert(ctx: &mut Ctx<'_>, root: &Item, supported_versions: &[&str]) -> Option<Spec> {
    let top = ctx.fields(root, "", TOP_KEYS)?;

    let name = ctx.required(&top, "name").and_then(|v| {
        let s = ctx.text(v, "name")?;
        check_label(ctx, v.pos, "name", s).then(|| s.to_string())
    });

    let image = ctx.required(&top, "image").and_then(|v| image(ctx, v));
    let kubernetes = kubernetes(ctx, top.get("kubernetes"), supported_versions);
    let network = network(ctx, top.get("network"));

    let user = match top.get("user") {
        None => Some(DEFAULT_USER.to_string()),
        Some(v) => ctx.text(v, "user").and_then(|s| {
            if s == "root" {
                ctx.err(
                    v.pos,
                    "user: must not be root; cloud-init makes a new login user",
                );
                None
            } else if !is_user_name(s) {
                ctx.err(
                    v.pos,
                    format!(
                        "user: `{s}` is not a valid Linux user name (a lowercase letter, then \
                         lowercase letters, digits, '_' or '-'; at most 32 characters)"
                    ),
                );
                None
            } else {
                Some(s.to_string())
            }
        }),
    };

    let keys = ssh_keys(ctx, &top);

    let timezone = match top.get("timezone") {
        None => Some(DEFAULT_TIMEZONE.to_string()),
        Some(v) => ctx.text(v, "timezone").and_then(|s| {
            if is_timezone(s) {
                Some(s.to_string())
            } else {
                ctx.err(
                    v.pos,
                    format!(
                        "timezone: `{s}` is not a time zone name like Europe/Lisbon or Etc/UTC"
                    ),
                );
                None
            }
        }),
    };

    let overlays = overlays(ctx, top.get("overlays"));
    let artifacts = match top.get("artifacts") {
        None => Some(None),
        Some(v) => ctx.text(v, "artifacts").map(|s| Some(ctx.resolve(s))),
    };

    let nodes_key = top.entry("nodes").map(|(k, _)| k.pos).unwrap_or(top.pos);
    let nodes = ctx
        .required(&top, "nodes")
        .and_then(|v| nodes(ctx, nodes_key, v));

    // Checks across sections, on the parts that are well-formed.
    if let (Some(nodes), Some(k)) = (&nodes, &kubernetes) {
        cross_check(ctx, nodes, k, network.as_ref());
    }

    let kubernetes = kubernetes?;
    let spec = Spec {
        name: name?,
        image: image?,
        kubernetes: Kubernetes {
            version: kubernetes.version,
            control_plane_endpoint: kubernetes.control_plane_endpoint,
            pod_subnet: kubernetes.pod_subnet.value,
            service_subnet: kubernetes.service_subnet.value,
            token_ttl: kubernetes.token_ttl,
            cni: kubernetes.cni,
        },
        network: network?.network,
        user: user?,
        ssh_authorized_keys: keys?,
        timezone: timezone?,
        overlays: overlays?,
        artifacts: artifacts?,
        nodes: nodes?.into_iter().map(|n| n.node).collect(),
        spec_path: resolve(ctx.base_dir, ctx.file_name_only()),
        spec_dir: if ctx.base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            ctx.base_dir.to_path_buf()
        },
    };
    Some(spec)
}

impl Ctx<'_> {
    fn file_name_only(&self) -> &str {
        Path::new(self.file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(self.file)
    }
}

fn image(ctx: &mut Ctx<'_>, item: &Item) -> Option<ImageSource> {
    let f = ctx.fields(item, "image", IMAGE_KEYS)?;
    let sha256 = match f.get("sha256") {
        None => Some(None),
        Some(v) => ctx.text(v, "image.sha256").and_then(|s| {
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Some(Some(s.to_ascii_lowercase()))
            } else {
                ctx.err(
                    v.pos,
                    format!("image.sha256: `{s}` is not a SHA-256 digest (64 hexadecimal digits)"),
                );
                None
            }
        }),
    };
    let source_item = ctx.required(&f, "source")?;
    let source = ctx.text(source_item, "image.source")?;
    let source = match source.split_once("://") {
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") =>
        {
            if f.get("sha256").is_none() {
                ctx.err(
                    source_item.pos,
                    "image.source is a URL, so image.sha256 is required (the digest published beside the image)",
                );
                return None;
            }
            Source::Url(source.to_string())
        }
        Some((scheme, _)) => {
            ctx.err(
                source_item.pos,
                format!(
                    "image.source: unsupported URL scheme `{scheme}`; use https:// or a file path"
                ),
            );
            return None;
        }
        None => Source::Path(ctx.resolve(source)),
    };
    Some(ImageSource {
        source,
        sha256: sha256?,
    })
}

struct KubeParts {
    version: String,
    control_plane_endpoint: Option<String>,
    pod_subnet: Placed<Cidr>,
    service_subnet: Placed<Cidr>,
    token_ttl: String,
    cni: Cni,
}

fn kubernetes(ctx: &mut Ctx<'_>, item: Option<&Item>, supported: &[&str]) -> Option<KubeParts> {
    let f = match item {
        Some(item) => ctx.fields(item, "kubernetes", KUBERNETES_KEYS)?,
        None => Fields {
            pos: Pos::START,
            path: "kubernetes".into(),
            entries: Vec::new(),
        },
    };

    let version = match f.get("version") {
        None => match newest(supported) {
            Some(v) => Some(v.to_string()),
            None => {
                ctx.err(
                    f.pos,
                    "kubernetes.version: no supported Kubernetes version to default to",
                );
                None
            }
        },
        Some(v) => ctx.text(v, "kubernetes.version").and_then(|s| {
            let bare = s.strip_prefix('v').unwrap_or(s);
            if supported.contains(&bare) {
                Some(bare.to_string())
            } else {
                ctx.err(
                    v.pos,
                    format!(
                        "kubernetes.version: {s} is not supported; supported versions: {}",
                        supported.join(", ")
                    ),
                );
                None
            }
        }),
    };

    let endpoint = match f.get("control_plane_endpoint") {
        None => Some(None),
        Some(v) => ctx
            .text(v, "kubernetes.control_plane_endpoint")
            .and_then(|s| {
                if is_host_port(s) {
                    Some(Some(s.to_string()))
                } else {
                    ctx.err(
                        v.pos,
                        format!(
                            "kubernetes.control_plane_endpoint: `{s}` is not host:port \
                             (e.g. 192.168.1.10:6443 or k8s.example.lan:6443)"
                        ),
                    );
                    None
                }
            }),
    };

    let pod_subnet = subnet(ctx, &f, "pod_subnet", DEFAULT_POD_SUBNET);
    let service_subnet = subnet(ctx, &f, "service_subnet", DEFAULT_SERVICE_SUBNET);
    if let (Some(pod), Some(svc)) = (&pod_subnet, &service_subnet) {
        if pod.value.overlaps(&svc.value) {
            // Both defaults never overlap, so one of them was written.
            let pos = svc.pos.or(pod.pos).unwrap_or(f.pos);
            ctx.err(
                pos,
                format!(
                    "kubernetes.service_subnet {} overlaps kubernetes.pod_subnet {}",
                    svc.value, pod.value
                ),
            );
        }
    }

    let token_ttl = match f.get("token_ttl") {
        None => Some(DEFAULT_TOKEN_TTL.to_string()),
        Some(v) => ctx.text(v, "kubernetes.token_ttl").and_then(|s| {
            if parse_go_duration(s).is_some() {
                Some(s.to_string())
            } else {
                ctx.err(
                    v.pos,
                    format!("kubernetes.token_ttl: `{s}` is not a duration like 24h, 90m or 1h30m (0 = never expires)"),
                );
                None
            }
        }),
    };

    let cni = match f.get("cni") {
        None => Some(Cni::Flannel),
        Some(v) => ctx.text(v, "kubernetes.cni").and_then(|s| match s {
            "flannel" => Some(Cni::Flannel),
            "none" => Some(Cni::None),
            _ => {
                ctx.err(v.pos, format!("kubernetes.cni: `{s}` is not supported; use flannel, or none to apply your own"));
                None
            }
        }),
    };

    Some(KubeParts {
        version: version?,
        control_plane_endpoint: endpoint?,
        pod_subnet: pod_subnet?,
        service_subnet: service_subnet?,
        token_ttl: token_ttl?,
        cni: cni?,
    })
}

fn subnet(ctx: &mut Ctx<'_>, f: &Fields<'_>, key: &str, default: &str) -> Option<Placed<Cidr>> {
    let path = format!("kubernetes.{key}");
    let Some(v) = f.get(key) else {
        return Some(Placed {
            value: default.parse().expect("default subnets parse"),
            pos: None,
        });
    };
    let s = ctx.text(v, &path)?;
    match s.parse::<Cidr>() {
        Err(e) => {
            ctx.err(
                v.pos,
                format!("{path}: `{s}` is not in CIDR form (address/length, e.g. {default}): {e}"),
            );
            None
        }
        Ok(c) if !c.is_network() => {
            ctx.err(
                v.pos,
                format!(
                    "{path}: {c} has host bits set; did you mean {}?",
                    c.network()
                ),
            );
            None
        }
        Ok(c) => Some(Placed {
            value: c,
            pos: Some(v.pos),
        }),
    }
}

/// The newest of `versions` by numeric comparison (`1.34.2` > `1.9.0`).
fn newest<'v>(versions: &[&'v str]) -> Option<&'v str> {
    let key = |v: &str| -> Vec<u64> {
        v.trim_start_matches('v')
            .split(['.', '-', '+'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    versions.iter().copied().max_by_key(|v| key(v))
}

struct NetworkParts {
    network: Network,
}

fn network(ctx: &mut Ctx<'_>, item: Option<&Item>) -> Option<NetworkParts> {
    let f = match item {
        Some(item) => ctx.fields(item, "network", NETWORK_KEYS)?,
        None => Fields {
            pos: Pos::START,
            path: "network".into(),
            entries: Vec::new(),
        },
    };
    let interface = match f.get("interface") {
        None => Some(DEFAULT_INTERFACE.to_string()),
        Some(v) => ctx.text(v, "network.interface").and_then(|s| {
            if is_interface_name(s) {
                Some(s.to_string())
            } else {
                ctx.err(v.pos, format!("network.interface: `{s}` is not a network interface name (1 to 15 characters, no '/', ':' or blanks)"));
                None
            }
        }),
    };
    let gateway = match f.get("gateway") {
        None => Some(None),
        Some(v) => ctx
            .text(v, "network.gateway")
            .and_then(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Some(Some(ip)),
                Err(_) => {
                    ctx.err(
                        v.pos,
                        format!("network.gateway: `{s}` is not an IP address"),
                    );
                    None
                }
            }),
    };
    let dns = match f.get("dns") {
        None => Some(Vec::new()),
        Some(v) => ctx
            .list(v, "network.dns", "IP addresses")
            .and_then(|items| {
                let mut ok = true;
                let mut dns = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let path = format!("network.dns[{i}]");
                    match ctx.text(item, &path).map(|s| (s, s.parse::<IpAddr>())) {
                        Some((_, Ok(ip))) => dns.push(ip),
                        Some((s, Err(_))) => {
                            ctx.err(item.pos, format!("{path}: `{s}` is not an IP address"));
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(dns)
            }),
    };
    Some(NetworkParts {
        network: Network {
            interface: interface?,
            gateway: gateway?,
            dns: dns?,
        },
    })
}

fn ssh_keys(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> Option<Vec<String>> {
    let item = match top.entry("ssh_authorized_keys") {
        Some((_, v)) => v,
        None => {
            ctx.err(
                top.pos,
                "missing required key `ssh_authorized_keys`: the login user has no password, so \
                 at least one ssh public key is needed",
            );
            return None;
        }
    };
    let items = ctx.list(item, "ssh_authorized_keys", "ssh public keys")?;
    if items.is_empty() {
        ctx.err(
            item.pos,
            "ssh_authorized_keys: at least one key is needed; the login user has no password",
        );
        return None;
    }
    let mut ok = true;
    let mut keys = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("ssh_authorized_keys[{i}]");
        let Some(s) = ctx.text(item, &path) else {
            ok = false;
            continue;
        };
        match check_ssh_key(s) {
            Ok(()) => keys.push(s.trim().to_string()),
            Err(why) => {
                ctx.err(
                    item.pos,
                    format!(
                        "{path}: not an OpenSSH public key (`ssh-ed25519 AAAA... you@host`): {why}"
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(keys)
}

fn overlays(ctx: &mut Ctx<'_>, item: Option<&Item>) -> Option<Vec<PathBuf>> {
    let Some(item) = item else {
        return Some(Vec::new());
    };
    let items = ctx.list(item, "overlays", "directories")?;
    let mut ok = true;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("overlays[{i}]");
        let Some(s) = ctx.text(item, &path) else {
            ok = false;
            continue;
        };
        let dir = ctx.resolve(s);
        if dir.is_dir() {
            out.push(dir);
        } else {
            let what = if dir.exists() {
                "not a directory"
            } else {
                "no such directory"
            };
            ctx.err(item.pos, format!("{path}: {}: {what}", dir.display()));
            ok = false;
        }
    }
    ok.then_some(out)
}

/// A node and where its parts were written.
struct NodeParts {
    node: Node,
    pos: Pos,
    name_pos: Pos,
    address_pos: Option<Pos>,
}

/// `key` is where `nodes:` is written, for problems of the list as a whole.
fn nodes(ctx: &mut Ctx<'_>, key: Pos, item: &Item) -> Option<Vec<NodeParts>> {
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

fn node(ctx: &mut Ctx<'_>, item: &Item, path: &str) -> Option<NodeParts> {
    let f = ctx.fields(item, path, NODE_KEYS)?;
    let name_item = ctx.required(&f, "name");
    let name = name_item.and_then(|v| {
        let p = format!("{path}.name");
        let s = ctx.text(v, &p)?;
        check_label(ctx, v.pos, &p, s).then(|| s.to_string())
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
    Some(NodeParts {
        node: Node {
            name: name?,
            role: role?,
            address: address?,
            profile: profile?,
        },
        pos: f.pos,
        name_pos: name_item?.pos,
        address_pos: address_item.map(|v| v.pos),
    })
}

fn node_address(ctx: &mut Ctx<'_>, v: &Item, path: &str) -> Option<Cidr> {
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
fn profile(ctx: &mut Ctx<'_>, key: &Item, v: &Item, path: &str) -> Option<Profile> {
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
    let root = match yaml::parse(&text) {
        Ok(root) => root,
        Err(e) => {
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
pub(super) fn parse_profile_text(
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
    match yaml::parse(text) {
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
fn cross_check(
    ctx: &mut Ctx<'_>,
    nodes: &[NodeParts],
    k: &KubeParts,
    network: Option<&NetworkParts>,
) {
    // The API server endpoint.
    if k.control_plane_endpoint.is_none() {
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

/// Reports a name that is not a DNS-1123 label; true if it is one.
fn check_label(ctx: &mut Ctx<'_>, pos: Pos, path: &str, s: &str) -> bool {
    if is_dns_label(s) {
        return true;
    }
    ctx.err(
        pos,
        format!(
            "{path}: `{s}` is not a DNS-1123 label (lowercase letters, digits and '-', starting \
             and ending with a letter or digit, at most 63 characters)"
        ),
    );
    false
}

pub(super) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS name made of labels (case-insensitive here: resolvers ignore case).
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(&l.to_ascii_lowercase()))
}

/// `host:port` with an IPv4 address, a `[IPv6]` address or a DNS name, and a port 1-65535.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        host.parse::<std::net::Ipv4Addr>().is_ok()
    } else {
        is_dns_name(host)
    };
    port_ok && host_ok
}

/// Debian's default NAME_REGEX (`^[a-z][-a-z0-9_]*\$?$`), at most 32 characters.
fn is_user_name(s: &str) -> bool {
    let body = s.strip_suffix('$').unwrap_or(s);
    let b = body.as_bytes();
    !b.is_empty()
        && s.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// A tz database name: `UTC`, `Europe/Lisbon`, `America/Argentina/Buenos_Aires`, `Etc/GMT+1`.
fn is_timezone(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'.'))
        })
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// An authorized_keys line without options: `TYPE BASE64 [comment]`, where the key blob starts
/// with its own type name (so that a mangled paste is caught).
fn check_ssh_key(line: &str) -> Result<(), String> {
    let mut words = line.split_whitespace();
    let kind = words.next().unwrap_or("");
    if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-")) {
        return Err(format!(
            "`{}` is not a key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, sk-...)",
            kind
        ));
    }
    let Some(b64) = words.next() else {
        return Err("the base64 key is missing".into());
    };
    let blob = base64_decode(b64).ok_or("the key is not valid base64")?;
    let inner = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|len| blob.get(4..4 + len));
    if inner != Some(kind.as_bytes()) {
        return Err(format!(
            "the key data is not a {kind} key (truncated or mangled?)"
        ));
    }
    Ok(())
}

/// Standard base64 with optional `=` padding.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
