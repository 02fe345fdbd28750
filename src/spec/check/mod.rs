//! From the YAML tree to a [`Spec`]: types, defaults and every check, each problem reported at
//! the key or value to fix. Problems are collected, not returned at the first one; a value with
//! a problem is left out of the checks that depend on it, so one mistake gives one message.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

mod ctx;
mod formats;
mod nodes;
mod vip;
mod wifi;

pub(super) use ctx::resolve;
#[cfg(test)]
pub(super) use formats::PLACEHOLDER_KEY_DATA;
pub(super) use nodes::parse_profile_text;

use ctx::{check_label, Ctx, Fields};
use formats::{
    check_ssh_key, is_host_port, is_interface_name, is_known_timezone, is_timezone, is_user_name,
    nearest_timezone,
};
use nodes::{cross_check, nodes};

use super::yaml::{self, Item, Kind, Pos};
use super::{
    Cidr, Cni, Diagnostic, GoDuration, ImageSource, Kubernetes, Network, Node, NodeName, Profile,
    Role, Source, Spec,
};

const TOP_KEYS: &[&str] = &[
    "name",
    "image",
    "kubernetes",
    "network",
    "user",
    "ssh_authorized_keys",
    "user_groups",
    "extra_groups",
    "timezone",
    "overlays",
    "artifacts",
    "nodes",
];
const IMAGE_KEYS: &[&str] = &["source", "sha256", "pi5_4k_pages"];
const KUBERNETES_KEYS: &[&str] = &[
    "version",
    "control_plane_endpoint",
    "vip",
    "pod_subnet",
    "service_subnet",
    "token_ttl",
    "cni",
    "versions",
];
const NETWORK_KEYS: &[&str] = &["interface", "gateway", "dns", "wifi"];
const NODE_KEYS: &[&str] = &["name", "role", "address", "profile", "wifi"];

const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
/// 24h: kubeadm's own default.
const DEFAULT_TOKEN_TTL: GoDuration = GoDuration::from_secs(24 * 3600);
const DEFAULT_INTERFACE: &str = "eth0";
const DEFAULT_USER: &str = "pi";
const DEFAULT_TIMEZONE: &str = "Etc/UTC";

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
            let note = e.unclosed_note();
            ctx.err(e.pos, e.message);
            if let Some((pos, note)) = note {
                ctx.err(pos, note);
            }
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
    let user_groups = match top.get("user_groups") {
        None => Some(None),
        Some(v) => group_list(ctx, v, "user_groups").map(Some),
    };
    let extra_groups = match top.get("extra_groups") {
        None => Some(Vec::new()),
        Some(v) => group_list(ctx, v, "extra_groups"),
    };

    let timezone = match top.get("timezone") {
        None => Some(DEFAULT_TIMEZONE.to_string()),
        Some(v) => ctx.text(v, "timezone").and_then(|s| {
            if is_timezone(s) && is_known_timezone(s) {
                Some(s.to_string())
            } else if is_timezone(s) {
                let hint = match nearest_timezone(s) {
                    Some(z) => format!("did you mean {z}?"),
                    None => "see the names in /usr/share/zoneinfo, such as Europe/Lisbon or \
                             Etc/UTC"
                        .to_string(),
                };
                ctx.err(
                    v.pos,
                    format!("timezone: `{s}` is not in the tz database; {hint}"),
                );
                None
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
        Some(v) => ctx.text(v, "artifacts").and_then(|s| {
            let dir = ctx.resolve(s);
            if dir.is_dir() {
                Some(Some(dir))
            } else {
                let what = if dir.exists() {
                    "not a directory"
                } else {
                    "no such directory"
                };
                ctx.err(v.pos, format!("artifacts: {}: {what}", dir.display()));
                None
            }
        }),
    };

    let nodes_key = top.entry("nodes").map(|(k, _)| k.pos).unwrap_or(top.pos);
    let nodes = ctx
        .required(&top, "nodes")
        .and_then(|v| nodes(ctx, nodes_key, v));

    // Checks across sections, on the parts that are well-formed.
    if let (Some(nodes), Some(k)) = (&nodes, &kubernetes) {
        cross_check(ctx, nodes, k, network.as_ref());
        vip::check_vip(ctx, nodes, k, network.as_ref());
    }

    let kubernetes = kubernetes?;
    let spec = Spec {
        name: name?,
        image: image?,
        kubernetes: Kubernetes {
            version: kubernetes.version,
            control_plane_endpoint: kubernetes.control_plane_endpoint,
            vip: kubernetes.vip.map(|v| v.value),
            pod_subnet: kubernetes.pod_subnet.value,
            service_subnet: kubernetes.service_subnet.value,
            token_ttl: kubernetes.token_ttl,
            cni: kubernetes.cni,
            versions: kubernetes.versions,
        },
        network: network?.network,
        user: user?,
        ssh_authorized_keys: keys?,
        user_groups: user_groups?,
        extra_groups: extra_groups?,
        timezone: timezone?,
        timezone_pos: top.get("timezone").map(|v| v.pos),
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
    let pi5_4k_pages = match f.get("pi5_4k_pages") {
        None => Some(None),
        Some(v) => match &v.kind {
            Kind::Scalar(s) if s.plain && (s.text == "true" || s.text == "false") => {
                Some((s.text == "true").then_some(v.pos))
            }
            _ => {
                ctx.err(v.pos, "image.pi5_4k_pages: expected true or false");
                None
            }
        },
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
        None => {
            let path = ctx.resolve(source);
            // Found now, with every other problem, not after the build has begun.
            let problem = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => None,
                Ok(_) => Some("not a regular file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file"),
                Err(_) => Some("cannot be read"),
            };
            if let Some(problem) = problem {
                ctx.err(
                    source_item.pos,
                    format!("image.source: {}: {problem}", path.display()),
                );
                return None;
            }
            Source::Path(path)
        }
    };
    Some(ImageSource {
        source,
        sha256: sha256?,
        pi5_4k_pages: pi5_4k_pages?,
    })
}

struct KubeParts {
    version: String,
    control_plane_endpoint: Option<String>,
    /// Where `control_plane_endpoint` is written.
    endpoint_pos: Option<Pos>,
    vip: Option<Placed<Ipv4Addr>>,
    pod_subnet: Placed<Cidr>,
    service_subnet: Placed<Cidr>,
    token_ttl: GoDuration,
    cni: Cni,
    versions: Vec<(String, String)>,
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

    let vip = match f.get("vip") {
        None => Some(None),
        Some(v) => ctx.text(v, "kubernetes.vip").and_then(|s| match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Some(Some(Placed {
                value: a,
                pos: Some(v.pos),
            })),
            Ok(IpAddr::V6(_)) => {
                ctx.err(
                    v.pos,
                    format!("kubernetes.vip: {s} is IPv6; kube-vip's ARP mode serves an IPv4 address"),
                );
                None
            }
            Err(_) => {
                ctx.err(
                    v.pos,
                    format!("kubernetes.vip: `{s}` is not an IPv4 address (e.g. 192.168.1.9)"),
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
        None => Some(DEFAULT_TOKEN_TTL),
        Some(v) => ctx.text(v, "kubernetes.token_ttl").and_then(|s| {
            if let Some(d) = GoDuration::parse(s) {
                Some(d)
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

    let versions = match f.get("versions") {
        None => Some(Vec::new()),
        Some(v) => component_versions(ctx, v),
    };

    Some(KubeParts {
        versions: versions?,
        version: version?,
        control_plane_endpoint: endpoint?,
        endpoint_pos: f.get("control_plane_endpoint").map(|v| v.pos),
        vip: vip?,
        pod_subnet: pod_subnet?,
        service_subnet: service_subnet?,
        token_ttl: token_ttl?,
        cni: cni?,
    })
}

/// `kubernetes.versions`: component versions replacing the catalog's for this cluster
/// (`containerd: 2.1.5`), each a version `X.Y.Z` (a leading `v` is dropped), each component
/// one whose version is a URL placeholder of the catalog (see
/// [`crate::artifacts::OVERRIDABLE`]).
fn component_versions(ctx: &mut Ctx<'_>, item: &Item) -> Option<Vec<(String, String)>> {
    let f = ctx.fields(item, "kubernetes.versions", &crate::artifacts::OVERRIDABLE)?;
    let mut ok = true;
    let mut out = Vec::new();
    for (name, _, value) in &f.entries {
        let path = format!("kubernetes.versions.{name}");
        let Some(s) = ctx.text(value, &path) else {
            ok = false;
            continue;
        };
        let bare = s.strip_prefix('v').unwrap_or(s);
        if is_component_version(bare) {
            out.push((name.to_string(), bare.to_string()));
        } else {
            ctx.err(
                value.pos,
                format!("{path}: `{s}` is not a release version like 2.1.5 (MAJOR.MINOR.PATCH)"),
            );
            ok = false;
        }
    }
    ok.then_some(out)
}

/// `MAJOR.MINOR.PATCH`, optionally followed by `-` or `+` and letters, digits, `.` or `-`
/// (`1.7.1-flannel1`, `2.2.0-rc.1`).
pub(super) fn is_component_version(s: &str) -> bool {
    let (core, rest) = match s.find(['-', '+']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
        && (s.len() == core.len()
            || (!rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')))
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
    let wifi = match f.get("wifi") {
        None => Some(None),
        Some(v) => wifi::wifi(ctx, v, "network.wifi").map(Some),
    };
    Some(NetworkParts {
        network: Network {
            interface: interface?,
            gateway: gateway?,
            dns: dns?,
            wifi: wifi?,
        },
    })
}

/// `user_groups:` or `extra_groups:`: a list of distinct group names (an empty list is
/// allowed: `user_groups: []` gives the user no supplementary group).
fn group_list(ctx: &mut Ctx<'_>, item: &Item, key: &str) -> Option<Vec<String>> {
    let items = ctx.list(item, key, "group names")?;
    let mut ok = true;
    let mut groups: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{key}[{i}]");
        let Some(g) = ctx.text(item, &path) else {
            ok = false;
            continue;
        };
        if !is_user_name(g) || g.ends_with('$') {
            ctx.err(
                item.pos,
                format!(
                    "{path}: `{g}` is not a valid group name (a lowercase letter, then lowercase \
                     letters, digits, '_' or '-'; at most 32 characters)"
                ),
            );
            ok = false;
        } else if groups.iter().any(|x| x == g) {
            ctx.err(item.pos, format!("{path}: `{g}` is listed twice"));
            ok = false;
        } else {
            groups.push(g.to_string());
        }
    }
    ok.then_some(groups)
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
