//! The cluster description (`cluster.yaml`): parsed, defaulted and checked before any image work.
//!
//! The YAML is read into a small position-annotated tree ([`yaml::Item`]) and converted into
//! [`Spec`] by hand, so that every problem is reported as `file:line:col: message` at the key or
//! value to fix. All problems are reported at once, one per line, sorted by position.
//!
//! Node profiles (cloud-init fragments) are parsed by the same reader into a
//! `serde_json::Value`; `render::yaml::to_yaml` writes such a value back as YAML for the
//! user-data. Values with a grammar of their own are typed once here ([`Cidr`],
//! [`GoDuration`], [`NodeName`], [`Token`]) so that nothing downstream re-checks a string.

mod check;
mod cidr;
#[cfg(test)]
mod tests;
mod values;
#[cfg(test)]
mod vip_tests;
mod wifi;
pub mod yaml;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cidr::{Cidr, CidrParseError};
pub use values::{is_dns_label, GoDuration, NodeName, Token, TokenError};
pub use wifi::{is_country, is_ssid, Wifi, WifiPsk};
pub use yaml::Pos;

/// The port of the Kubernetes API server when `control_plane_endpoint` is not given.
pub const DEFAULT_API_PORT: u16 = 6443;

/// A checked cluster description. Paths are resolved against the spec's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub image: ImageSource,
    pub kubernetes: Kubernetes,
    pub network: Network,
    /// The login user that cloud-init creates (ssh keys only, no password).
    pub user: String,
    pub ssh_authorized_keys: Vec<String>,
    /// `user_groups:`: the login user's supplementary groups, replacing the base's default
    /// user's (see `render::cloud_init::login_groups`); `None` keeps the base's.
    pub user_groups: Option<Vec<String>>,
    /// `extra_groups:`: groups added to the base's default user's (or to `user_groups`).
    pub extra_groups: Vec<String>,
    pub timezone: String,
    /// Where `timezone:` is written; `None` when it is absent (the default, Etc/UTC).
    pub timezone_pos: Option<Pos>,
    /// Extra root-filesystem overlays, in order; each is an existing directory.
    pub overlays: Vec<PathBuf>,
    /// An offline artifact directory (binaries and images), if given.
    pub artifacts: Option<PathBuf>,
    /// At least one, names and addresses unique, at least one control plane.
    pub nodes: Vec<Node>,
    /// The spec file as given to [`load`] (or `base_dir/file_name` for [`parse`]).
    pub spec_path: PathBuf,
    /// The directory relative paths in the spec were resolved against.
    pub spec_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    pub source: Source,
    /// Lowercase hex; always present for a URL.
    pub sha256: Option<String>,
    /// `image.pi5_4k_pages: true`: make a Pi 5 boot Raspberry Pi OS's 4K-page kernel
    /// (`kernel=kernel8.img`). Where the key's value is written when it is true (the build
    /// refuses it there on a base without that kernel); `None` when false or absent.
    pub pi5_4k_pages: Option<Pos>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    /// An `https://` (or `http://`) URL; the digest in [`ImageSource::sha256`] guards it.
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// Without a leading `v`, e.g. `1.34.2`; one of the supported versions.
    pub version: String,
    /// As written (`host:port`); see [`Spec::control_plane_endpoint`] for the effective one.
    pub control_plane_endpoint: Option<String>,
    /// A virtual IP that kube-vip (a static pod on every control plane, ARP mode) moves to
    /// whichever control plane leads; checked to sit in the fixed-address nodes' subnet and to
    /// collide with no node, gateway or DNS server.
    pub vip: Option<Ipv4Addr>,
    pub pod_subnet: Cidr,
    pub service_subnet: Cidr,
    /// As kubeadm reads it (`24h`, `1h30m`, `0` = never expires).
    pub token_ttl: GoDuration,
    pub cni: Cni,
    /// `kubernetes.versions`: `(component, version)` pairs, in the order written, replacing
    /// the catalog's versions of those components (`containerd`, `runc`, `cni_plugins`,
    /// `crictl`, `flannel`) for this cluster.
    pub versions: Vec<(String, String)>,
}

impl Kubernetes {
    /// The bootstrap token's lifetime; zero means it never expires.
    pub fn token_ttl_duration(&self) -> Duration {
        self.token_ttl.as_duration()
    }
}

/// The pod network add-on applied after `kubeadm init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cni {
    Flannel,
    /// Bring your own.
    None,
}

impl Cni {
    pub fn as_str(self) -> &'static str {
        match self {
            Cni::Flannel => "flannel",
            Cni::None => "none",
        }
    }
}

/// Settings for the nodes that have a fixed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub interface: String,
    /// Present whenever a node has a fixed address.
    pub gateway: Option<IpAddr>,
    /// Not empty whenever a node has a fixed address.
    pub dns: Vec<IpAddr>,
    /// Wi-Fi for every node (`network.wifi`), unless a node has its own.
    pub wifi: Option<Wifi>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The hostname and the Kubernetes node name.
    pub name: NodeName,
    pub role: Role,
    /// `None`: DHCP.
    pub address: Option<Cidr>,
    pub profile: Option<Profile>,
    /// The node's own Wi-Fi (`wifi:`), replacing `network.wifi` as a whole.
    pub wifi: Option<Wifi>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's cloud-init fragment, to be merged into the generated user-data.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Resolved against the spec's directory.
    pub path: PathBuf,
    /// Always a JSON object (an empty file gives an empty one).
    pub value: serde_json::Value,
}

impl Spec {
    /// The first node with role control-plane: the one that runs `kubeadm init`.
    ///
    /// A spec from [`load`] or [`parse`] always has one; panics on a hand-made spec without.
    pub fn first_control_plane(&self) -> &Node {
        self.control_planes()
            .next()
            .expect("a checked spec has a control-plane node")
    }

    /// The Wi-Fi a node joins: its own `wifi`, else `network.wifi`.
    pub fn node_wifi<'a>(&'a self, node: &'a Node) -> Option<&'a Wifi> {
        node.wifi.as_ref().or(self.network.wifi.as_ref())
    }

    pub fn control_planes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }

    pub fn workers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Worker)
    }

    /// `host:port` of the API server: `kubernetes.control_plane_endpoint` if given, else
    /// `kubernetes.vip` and port 6443, else the first control-plane node's address and port
    /// 6443 (`[addr]:6443` for IPv6).
    ///
    /// A checked spec always has one of the two; a hand-made spec with neither gets the first
    /// control plane's hostname.
    pub fn control_plane_endpoint(&self) -> String {
        if let Some(e) = &self.kubernetes.control_plane_endpoint {
            return e.clone();
        }
        if let Some(vip) = self.kubernetes.vip {
            return format!("{vip}:{DEFAULT_API_PORT}");
        }
        let cp = self.first_control_plane();
        match cp.address.map(|a| a.addr) {
            Some(IpAddr::V4(a)) => format!("{a}:{DEFAULT_API_PORT}"),
            Some(IpAddr::V6(a)) => format!("[{a}]:{DEFAULT_API_PORT}"),
            None => format!("{}:{DEFAULT_API_PORT}", cp.name),
        }
    }
}

/// One problem in a spec or profile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as named to the user (the spec's name as given, or a profile's resolved path).
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {}: {err}", path.display())]
    Read { path: PathBuf, err: io::Error },

    /// Every problem found, sorted by file and position; displayed one per line.
    #[error("{}", DisplayLines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl SpecError {
    /// The positioned problems (empty for a read error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            SpecError::Invalid(d) => d,
            SpecError::Read { .. } => &[],
        }
    }
}

struct DisplayLines<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Reads and checks a spec file and the profiles it names. `supported_versions` lists the
/// Kubernetes versions piforge has artifacts for; the newest is the default.
pub fn load(path: &Path, supported_versions: &[&str]) -> Result<Spec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|err| SpecError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    let file_name = path.display().to_string();
    let mut spec = parse(&text, &file_name, base_dir, supported_versions)?;
    spec.spec_path = path.to_path_buf();
    Ok(spec)
}

/// Checks spec text. `file_name` is used in messages; relative paths (profiles, overlays, the
/// image, artifacts) are resolved against `base_dir`, and profiles are read from there.
pub fn parse(
    text: &str,
    file_name: &str,
    base_dir: &Path,
    supported_versions: &[&str],
) -> Result<Spec, SpecError> {
    check::check(text, file_name, base_dir, supported_versions).map_err(SpecError::Invalid)
}

/// Parses a standalone cloud-init fragment (a node profile) into a JSON object.
pub fn parse_profile(text: &str, file_name: &str) -> Result<serde_json::Value, SpecError> {
    check::parse_profile_text(text, file_name).map_err(SpecError::Invalid)
}

/// The files `piforge init DIR` writes: `(path relative to DIR, content)`. The cluster.yaml
/// validates as written (given the image file later).
pub fn init_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("cluster.yaml", CLUSTER_TEMPLATE),
        ("node-profiles/control-plane.yaml", CONTROL_PLANE_PROFILE),
        ("node-profiles/worker.yaml", WORKER_PROFILE),
        ("overlays/site/.keep", ""),
    ]
}

const CLUSTER_TEMPLATE: &str = include_str!("../../examples/cluster.yaml");
const CONTROL_PLANE_PROFILE: &str = include_str!("../../node-profiles/control-plane.yaml");
const WORKER_PROFILE: &str = include_str!("../../node-profiles/worker.yaml");
