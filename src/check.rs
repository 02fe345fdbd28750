//! `piforge check`: does an image hold what a kubeadm node needs (PI-FACTS.md, "What a kubeadm
//! node on a Pi needs")? A static check of the image's files, before any card is flashed.
//!
//! Pure: the root filesystem is read through [`RootFiles`] and the boot partition's few files
//! are passed in as text, so every rule is tested on in-memory trees.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::inspect::facts::{self, RootFiles, SwapMechanism};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One finding. `id` is stable (kebab-case) for scripts; `title` and `reason` are for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub reason: String,
    /// What was read to decide: a path in the image, a boot file or a cmdline token.
    pub looked_at: String,
}

/// The boot partition's files that matter here (`None` when the file is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootFiles {
    pub cmdline: Option<String>,
    pub config: Option<String>,
    /// The NoCloud seed `user-data` (cloud-config).
    pub user_data: Option<String>,
}

/// Where kubeadm's preflight looks for tools.
pub const PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// systemd's unit search path in the image, most important first (`/lib` for unmerged /usr).
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

const CONTAINERD_SOCKET: &str = "unix:///run/containerd/containerd.sock";

/// Kubelet configuration files piforge or kubeadm leave in an image.
const KUBELET_CONFIGS: [&str; 2] = ["/var/lib/kubelet/config.yaml", "/etc/piforge/kubeadm.yaml"];

fn item(
    id: &'static str,
    title: &'static str,
    status: Status,
    reason: impl Into<String>,
    looked_at: impl Into<String>,
) -> CheckItem {
    CheckItem {
        id,
        title,
        status,
        reason: reason.into(),
        looked_at: looked_at.into(),
    }
}

/// Runs every check; the items come in a fixed order.
pub fn check(fs: &dyn RootFiles, boot: &BootFiles) -> Result<Vec<CheckItem>, String> {
    let mut packages = cloud_config_packages(boot.user_data.as_deref());
    // Packages piforge's own first-boot unit installs (bases without cloud-init too).
    if let Some(list) = fs.read_string(crate::payload::FIRST_BOOT_PACKAGES)? {
        packages.extend(
            list.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    let mut items = vec![arch(fs)?];
    items.extend(cgroups(boot.cmdline.as_deref()));
    items.push(swap(fs)?);
    items.push(kernel_modules(fs)?);
    items.extend(sysctls(fs)?);
    items.extend(tools(fs, &packages)?);
    items.extend(containerd(fs)?);
    items.extend(kubelet(fs)?);
    items.extend(identity(fs)?);
    items.push(pi5_pages(boot.config.as_deref()));
    items.push(cgroup_driver(fs)?);
    Ok(items)
}

/// True when nothing failed (warnings are fine).
pub fn exit_ok(items: &[CheckItem]) -> bool {
    items.iter().all(|i| i.status != Status::Fail)
}

/// Aligned columns: status, title, reason (what was read in brackets), then a summary line.
pub fn render_text(items: &[CheckItem]) -> String {
    let w = items.iter().map(|i| i.title.len()).max().unwrap_or(0);
    let mut out = String::new();
    for i in items {
        let _ = writeln!(
            out,
            "{}  {:<w$}  {} [{}]",
            i.status.label(),
            i.title,
            i.reason,
            i.looked_at
        );
    }
    let count = |s| items.iter().filter(|i| i.status == s).count();
    let _ = writeln!(
        out,
        "{} passed, {} warnings, {} failed",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// helpers

/// The first of `names` that exists.
fn first_existing(fs: &dyn RootFiles, names: &[&str]) -> Result<Option<String>, String> {
    for n in names {
        if fs.exists(n)? {
            return Ok(Some(n.to_string()));
        }
    }
    Ok(None)
}

/// Where `tool` is on [`PATH`], if anywhere.
fn which(fs: &dyn RootFiles, tool: &str) -> Result<Option<String>, String> {
    let paths: Vec<String> = PATH.iter().map(|d| format!("{d}/{tool}")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    first_existing(fs, &refs)
}

/// `*.conf` files of config directories that override each other by file name (the first
/// directory wins), ordered by file name, as systemd-modules-load and systemd-sysctl read them.
fn conf_files(fs: &dyn RootFiles, dirs: &[&str]) -> Result<Vec<String>, String> {
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for d in dirs {
        for n in fs.list(d)? {
            if n.ends_with(".conf") {
                by_name
                    .entry(n.clone())
                    .or_insert_with(|| format!("{d}/{n}"));
            }
        }
    }
    Ok(by_name.into_values().collect())
}

/// Config lines without blanks and `#`/`;` comments.
fn config_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
}

fn join(v: &[String]) -> String {
    v.join(", ")
}

// ---------------------------------------------------------------------------------------------
// 1. 64-bit userland

/// `(package, architecture)` of installed packages in a dpkg status file (first stanza wins).
fn dpkg_architectures(status: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stanza in status.split("\n\n") {
        let (mut pkg, mut arch, mut installed) = (None, None, false);
        for l in stanza.lines() {
            if let Some(v) = l.strip_prefix("Package:") {
                pkg = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Architecture:") {
                arch = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Status:") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(p), Some(a), true) = (pkg, arch, installed) {
            out.entry(p.to_string()).or_insert_with(|| a.to_string());
        }
    }
    out
}

fn arch(fs: &dyn RootFiles) -> Result<CheckItem, String> {
    const ID: &str = "arch-arm64";
    const TITLE: &str = "64-bit userland";
    const STATUS: &str = "/var/lib/dpkg/status";
    if let Some(text) = fs.read_string(STATUS)? {
        let archs = dpkg_architectures(&text);
        // dpkg's own architecture is the native one; the others back it up.
        let core = ["dpkg", "base-files", "bash", "coreutils", "libc6"];
        if let Some((pkg, a)) = core.iter().find_map(|p| archs.get(*p).map(|a| (p, a))) {
            return Ok(match a.as_str() {
                "arm64" => item(
                    ID,
                    TITLE,
                    Status::Pass,
                    format!("package {pkg} is arm64"),
                    STATUS,
                ),
                "armhf" | "armel" => item(
                    ID,
                    TITLE,
                    Status::Fail,
                    format!(
                        "package {pkg} is {a}: a 32-bit userland (Kubernetes dropped 32-bit arm \
                         in 1.27); start from the arm64 image"
                    ),
                    STATUS,
                ),
                other => item(
                    ID,
                    TITLE,
                    Status::Fail,
                    format!("package {pkg} is built for {other}, not arm64"),
                    STATUS,
                ),
            });
        }
    }
    const ARM64: &str = "/usr/lib/aarch64-linux-gnu";
    const ARMHF: &str = "/usr/lib/arm-linux-gnueabihf";
    Ok(if fs.exists(ARM64)? {
        item(ID, TITLE, Status::Pass, "arm64 libraries present", ARM64)
    } else if fs.exists(ARMHF)? {
        item(
            ID,
            TITLE,
            Status::Fail,
            "only 32-bit (armhf) libraries: Kubernetes dropped 32-bit arm in 1.27",
            ARMHF,
        )
    } else {
        item(
            ID,
            TITLE,
            Status::Warn,
            "cannot tell: no dpkg status and no multiarch library directory",
            format!("{STATUS}, {ARM64}"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// 2. cgroups

fn cgroups(cmdline: Option<&str>) -> Vec<CheckItem> {
    const MEM: &str = "cgroup-memory";
    const MEM_T: &str = "memory cgroup controller";
    const V2: &str = "cgroup-v2";
    const V2_T: &str = "cgroup v2";
    let Some(cmdline) = cmdline else {
        return vec![
            item(
                MEM,
                MEM_T,
                Status::Fail,
                "the boot partition has no cmdline.txt",
                "cmdline.txt",
            ),
            item(
                V2,
                V2_T,
                Status::Warn,
                "the boot partition has no cmdline.txt",
                "cmdline.txt",
            ),
        ];
    };
    // The kernel applies cgroup_enable/cgroup_disable in order, after the firmware's
    // cgroup_disable=memory from the device tree; the last mention of memory wins.
    let mut memory: Option<(bool, &str)> = None;
    let mut hierarchy: Option<&str> = None;
    for t in cmdline.split_whitespace() {
        if let Some(v) = t.strip_prefix("cgroup_enable=") {
            if v.split(',').any(|c| c == "memory") {
                memory = Some((true, t));
            }
        } else if let Some(v) = t.strip_prefix("cgroup_disable=") {
            if v.split(',').any(|c| c == "memory") {
                memory = Some((false, t));
            }
        } else if t.starts_with("systemd.unified_cgroup_hierarchy=") {
            hierarchy = Some(t);
        }
    }
    let mem = match memory {
        Some((true, t)) => item(
            MEM,
            MEM_T,
            Status::Pass,
            format!("{t} is on the kernel command line"),
            t,
        ),
        Some((false, t)) => item(
            MEM,
            MEM_T,
            Status::Fail,
            format!("{t} turns the memory controller off; remove it and add cgroup_enable=memory"),
            t,
        ),
        None => item(
            MEM,
            MEM_T,
            Status::Fail,
            "cgroup_enable=memory is missing, so the firmware's cgroup_disable=memory stands; add \
             cgroup_enable=memory to cmdline.txt",
            "cmdline.txt: cgroup_enable=memory",
        ),
    };
    let v1 = hierarchy.filter(|t| {
        let v = t.split_once('=').map_or("", |(_, v)| v);
        matches!(v, "0" | "false" | "no" | "off")
    });
    let v2 = match v1 {
        Some(t) => item(
            V2,
            V2_T,
            Status::Fail,
            format!("{t} boots cgroup v1, which kubelet 1.35 and later refuse; remove it"),
            t,
        ),
        None => item(
            V2,
            V2_T,
            Status::Pass,
            "nothing on the kernel command line asks for cgroup v1",
            "cmdline.txt: systemd.unified_cgroup_hierarchy",
        ),
    };
    vec![mem, v2]
}

// ---------------------------------------------------------------------------------------------
// 3. swap

/// Whether a kubelet config in the image sets `failSwapOn: false`.
fn fail_swap_off(fs: &dyn RootFiles) -> Result<Option<&'static str>, String> {
    for p in KUBELET_CONFIGS {
        if let Some(t) = fs.read_string(p)? {
            if yaml_values(&t, "failSwapOn").iter().any(|v| v == "false") {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

fn swap(fs: &dyn RootFiles) -> Result<CheckItem, String> {
    const ID: &str = "swap-off";
    const TITLE: &str = "swap off";
    let s = facts::swap(fs)?;
    let looked_at = match s.mechanism {
        SwapMechanism::DphysSwapfile => {
            "/etc/dphys-swapfile, /etc/systemd/system/dphys-swapfile.service".to_string()
        }
        SwapMechanism::RpiSwap => "/etc/rpi/swap.conf, /etc/rpi/swap.conf.d".to_string(),
        SwapMechanism::ZramGenerator => s.detail.clone(),
        SwapMechanism::None => {
            "/etc/dphys-swapfile, /etc/rpi/swap.conf, zram-generator.conf".to_string()
        }
    };
    let mechanism = match s.mechanism {
        SwapMechanism::DphysSwapfile => "dphys-swapfile",
        SwapMechanism::RpiSwap => "rpi-swap",
        SwapMechanism::ZramGenerator => "zram-generator",
        SwapMechanism::None => "no swap",
    };
    Ok(if !s.active {
        item(
            ID,
            TITLE,
            Status::Pass,
            format!("{mechanism}: {}", s.detail),
            looked_at,
        )
    } else if let Some(cfg) = fail_swap_off(fs)? {
        item(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "{mechanism} makes swap on boot ({}), tolerated by failSwapOn: false in {cfg}",
                s.detail
            ),
            looked_at,
        )
    } else {
        item(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "{mechanism} makes swap on boot ({}); kubelet refuses to start with swap on",
                s.detail
            ),
            looked_at,
        )
    })
}

// ---------------------------------------------------------------------------------------------
// 4. kernel modules

fn kernel_modules(fs: &dyn RootFiles) -> Result<CheckItem, String> {
    const ID: &str = "kernel-modules";
    const TITLE: &str = "kernel modules at boot";
    let files = conf_files(
        fs,
        &[
            "/etc/modules-load.d",
            "/usr/local/lib/modules-load.d",
            "/usr/lib/modules-load.d",
            "/lib/modules-load.d",
        ],
    )?;
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for f in &files {
        if let Some(t) = fs.read_string(f)? {
            for m in config_lines(&t) {
                found.entry(m.to_string()).or_insert_with(|| f.clone());
            }
        }
    }
    let need = ["overlay", "br_netfilter"];
    let missing: Vec<String> = need
        .iter()
        .filter(|m| !found.contains_key(**m))
        .map(|m| m.to_string())
        .collect();
    Ok(if missing.is_empty() {
        let wher: Vec<String> = need
            .iter()
            .map(|m| format!("{m} ({})", found[*m]))
            .collect();
        item(
            ID,
            TITLE,
            Status::Pass,
            format!("loaded at boot: {}", join(&wher)),
            "/etc/modules-load.d/*.conf",
        )
    } else {
        item(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "not loaded at boot: {}; list them in /etc/modules-load.d/k8s.conf",
                join(&missing)
            ),
            "/etc/modules-load.d/*.conf",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// 5. sysctl

/// The sysctl settings the image applies at boot: key -> (value, file). systemd-sysctl reads
/// `sysctl.d` files in file-name order (later ones win); `/etc/sysctl.conf` counts when Debian's
/// `99-sysctl.conf` link does not already bring it in, and then last.
fn sysctl_settings(fs: &dyn RootFiles) -> Result<BTreeMap<String, (String, String)>, String> {
    let mut files = conf_files(
        fs,
        &[
            "/etc/sysctl.d",
            "/usr/local/lib/sysctl.d",
            "/usr/lib/sysctl.d",
            "/lib/sysctl.d",
        ],
    )?;
    if !files.iter().any(|f| f.ends_with("/99-sysctl.conf")) {
        files.push("/etc/sysctl.conf".to_string());
    }
    let mut out = BTreeMap::new();
    for f in &files {
        let Some(t) = fs.read_string(f)? else {
            continue;
        };
        for l in config_lines(&t) {
            if let Some((k, v)) = l.split_once('=') {
                let k = k.trim().trim_start_matches('-').replace('/', ".");
                out.insert(k, (v.trim().to_string(), f.clone()));
            }
        }
    }
    Ok(out)
}

fn sysctls(fs: &dyn RootFiles) -> Result<Vec<CheckItem>, String> {
    const WHERE: &str = "/etc/sysctl.d/*.conf, /etc/sysctl.conf";
    let s = sysctl_settings(fs)?;
    const FWD: &str = "net.ipv4.ip_forward";
    let fwd = match s.get(FWD) {
        Some((v, f)) if v == "1" => item(
            "sysctl-ip-forward",
            "IPv4 forwarding",
            Status::Pass,
            format!("{FWD} = 1"),
            f.clone(),
        ),
        Some((v, f)) => item(
            "sysctl-ip-forward",
            "IPv4 forwarding",
            Status::Fail,
            format!("{FWD} = {v}; kubeadm's preflight needs 1"),
            f.clone(),
        ),
        None => item(
            "sysctl-ip-forward",
            "IPv4 forwarding",
            Status::Fail,
            format!("{FWD} is not set (the kernel default is 0); kubeadm's preflight needs 1"),
            WHERE,
        ),
    };
    let bridge = [
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
    ];
    let not_set: Vec<String> = bridge
        .iter()
        .filter(|k| s.get(**k).map(|(v, _)| v.as_str()) != Some("1"))
        .map(|k| match s.get(*k) {
            Some((v, _)) => format!("{k} = {v}"),
            None => format!("{k} not set"),
        })
        .collect();
    let br = if not_set.is_empty() {
        item(
            "sysctl-bridge-nf",
            "bridge netfilter sysctls",
            Status::Pass,
            "bridge-nf-call-iptables and -ip6tables = 1",
            WHERE,
        )
    } else {
        item(
            "sysctl-bridge-nf",
            "bridge netfilter sysctls",
            Status::Warn,
            format!("{}; bridge-based CNIs need 1", join(&not_set)),
            WHERE,
        )
    };
    Ok(vec![fwd, br])
}

// ---------------------------------------------------------------------------------------------
// 6. tools

/// Package names a cloud-config `user-data` installs on first boot (`packages:`).
fn cloud_config_packages(user_data: Option<&str>) -> Vec<String> {
    let Some(text) = user_data else {
        return Vec::new();
    };
    if !text.trim_start().starts_with("#cloud-config") {
        return Vec::new();
    }
    let clean = |s: &str| -> Option<String> {
        let s = s.trim().trim_start_matches('[').trim_end_matches(']');
        let s = s
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        let s = s.split('=').next().unwrap_or("").trim();
        (!s.is_empty()).then(|| s.to_string())
    };
    let mut out = Vec::new();
    let mut in_list = false;
    for line in text.lines() {
        let l = match line.find(" #") {
            Some(i) => &line[..i],
            None => line,
        };
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let indent = l.len() - l.trim_start().len();
        let t = l.trim();
        if in_list {
            if let Some(rest) = t.strip_prefix('-') {
                out.extend(clean(rest));
                continue;
            }
            if indent > 0 {
                continue;
            }
            in_list = false;
        }
        if indent == 0 {
            if let Some(rest) = t.strip_prefix("packages:") {
                let rest = rest.trim();
                if let Some(flow) = rest.strip_prefix('[') {
                    // `[a, b, [c, 1.0]]`: names and (harmlessly) version strings
                    out.extend(flow.split(',').filter_map(clean));
                } else {
                    in_list = true;
                }
            }
        }
    }
    out
}

/// (tool, Debian package, required by kubeadm's preflight). crictl is mandatory in kubeadm's
/// preflight too; conntrack only for Kubernetes before 1.32.
const TOOLS: [(&str, &str, bool); 11] = [
    ("ip", "iproute2", true),
    ("iptables", "iptables", true),
    ("mount", "mount", true),
    ("nsenter", "util-linux", true),
    ("crictl", "cri-tools", true),
    ("ebtables", "ebtables", false),
    ("ethtool", "ethtool", false),
    ("socat", "socat", false),
    ("tc", "iproute2", false),
    ("touch", "coreutils", false),
    ("conntrack", "conntrack", false),
];

fn tools(fs: &dyn RootFiles, packages: &[String]) -> Result<Vec<CheckItem>, String> {
    let path = PATH.join(":");
    let mut out = Vec::new();
    for required in [true, false] {
        let (id, title) = if required {
            ("tools-required", "required tools on PATH")
        } else {
            ("tools-optional", "optional tools on PATH")
        };
        let mut absent = Vec::new();
        let mut later = Vec::new();
        let mut present = Vec::new();
        for (tool, pkg, _) in TOOLS.iter().filter(|t| t.2 == required) {
            if which(fs, tool)?.is_some() {
                present.push(tool.to_string());
            } else if packages.iter().any(|p| p == pkg || p == tool) {
                later.push(format!("{tool} ({pkg})"));
            } else {
                absent.push(format!("{tool} ({pkg})"));
            }
        }
        let later_note = || {
            format!(
                "{} installed on first boot (by cloud-init or piforge-packages.service; needs network)",
                join(&later)
            )
        };
        let it = if !absent.is_empty() {
            let mut reason = format!("missing: {}", join(&absent));
            if !later.is_empty() {
                let _ = write!(reason, "; {}", later_note());
            }
            let status = if required { Status::Fail } else { Status::Warn };
            item(id, title, status, reason, path.clone())
        } else if !later.is_empty() {
            item(
                id,
                title,
                Status::Warn,
                later_note(),
                format!(
                    "{path}, user-data packages, {}",
                    crate::payload::FIRST_BOOT_PACKAGES
                ),
            )
        } else {
            item(
                id,
                title,
                Status::Pass,
                format!("found: {}", join(&present)),
                path.clone(),
            )
        };
        out.push(it);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 7, 8. containerd and kubelet

/// Whether `text` (containerd's config.toml) sets `SystemdCgroup = true` in a runc options table.
fn systemd_cgroup_for_runc(text: &str) -> bool {
    let mut table = String::new();
    for l in config_lines(text) {
        let l = l.split(" #").next().unwrap_or(l).trim();
        if l.starts_with('[') {
            table = l.to_string();
        } else if let Some((k, v)) = l.split_once('=') {
            if k.trim() == "SystemdCgroup"
                && v.trim() == "true"
                && table.contains("runc")
                && table.contains("options")
            {
                return true;
            }
        }
    }
    false
}

/// How systemd would see a unit in the image.
struct UnitState {
    masked: bool,
    /// Where the unit file is, if anywhere.
    file: Option<String>,
    /// `/etc/systemd/system/*.wants/<unit>` entries: (path, its symlink target, resolves).
    wants: Vec<(String, Option<String>, bool)>,
}

fn unit_state(fs: &dyn RootFiles, unit: &str) -> Result<UnitState, String> {
    let masked = facts::unit_masked(fs, unit)?;
    let mut file = None;
    for d in UNIT_DIRS {
        let p = format!("{d}/{unit}");
        if fs.read(&p)?.is_some_and(|b| !b.is_empty()) {
            file = Some(p);
            break;
        }
    }
    let mut wants = Vec::new();
    for d in fs.list("/etc/systemd/system")? {
        if !d.ends_with(".wants") {
            continue;
        }
        let p = format!("/etc/systemd/system/{d}/{unit}");
        if fs.exists(&p)? {
            let target = fs.read_link(&p)?;
            let resolves = fs.read(&p)?.is_some_and(|b| !b.is_empty());
            wants.push((p, target, resolves));
        }
    }
    Ok(UnitState {
        masked,
        file,
        wants,
    })
}

fn unit_enabled(
    fs: &dyn RootFiles,
    id: &'static str,
    title: &'static str,
    unit: &str,
) -> Result<CheckItem, String> {
    let s = unit_state(fs, unit)?;
    let wants_glob = format!("/etc/systemd/system/*.wants/{unit}");
    if s.masked {
        return Ok(item(
            id,
            title,
            Status::Fail,
            format!("{unit} is masked"),
            format!("/etc/systemd/system/{unit}"),
        ));
    }
    let Some(file) = s.file else {
        return Ok(item(
            id,
            title,
            Status::Fail,
            format!("no {unit} unit file"),
            UNIT_DIRS[..3].join(", "),
        ));
    };
    if let Some((p, target, _)) = s.wants.iter().find(|w| !w.2) {
        let to = target
            .as_deref()
            .map_or(String::new(), |t| format!(" -> {t}"));
        return Ok(item(
            id,
            title,
            Status::Fail,
            format!("{p}{to} does not lead to a unit file in the image"),
            p.clone(),
        ));
    }
    Ok(match s.wants.first() {
        None => item(
            id,
            title,
            Status::Fail,
            format!(
                "{file} exists but is not enabled: create \
                 /etc/systemd/system/multi-user.target.wants/{unit} -> {file}"
            ),
            wants_glob,
        ),
        Some((p, target, _)) => {
            let to = target.as_deref().unwrap_or(&file);
            item(
                id,
                title,
                Status::Pass,
                format!("enabled: {p} -> {to}"),
                wants_glob,
            )
        }
    })
}

fn containerd(fs: &dyn RootFiles) -> Result<Vec<CheckItem>, String> {
    let mut out = Vec::new();
    let bins = ["/usr/local/bin/containerd", "/usr/bin/containerd"];
    out.push(match first_existing(fs, &bins)? {
        Some(p) => item(
            "containerd",
            "containerd binary",
            Status::Pass,
            format!("found {p}"),
            p,
        ),
        None => item(
            "containerd",
            "containerd binary",
            Status::Fail,
            "no containerd binary",
            bins.join(", "),
        ),
    });

    const CFG: &str = "/etc/containerd/config.toml";
    const CFG_T: &str = "containerd SystemdCgroup";
    out.push(match fs.read_string(CFG)? {
        None => item(
            "containerd-config",
            CFG_T,
            Status::Fail,
            "no config.toml: containerd's default runs runc with cgroupfs, not systemd",
            CFG,
        ),
        Some(t) if config_lines(&t).any(|l| l.contains("{{")) => item(
            "containerd-config",
            CFG_T,
            Status::Fail,
            "holds an unrendered {{placeholder}}",
            CFG,
        ),
        Some(t) if systemd_cgroup_for_runc(&t) => item(
            "containerd-config",
            CFG_T,
            Status::Pass,
            "runc runs with SystemdCgroup = true",
            CFG,
        ),
        Some(_) => item(
            "containerd-config",
            CFG_T,
            Status::Fail,
            "SystemdCgroup = true is not set in runc's options; kubelet's cgroupDriver is systemd",
            CFG,
        ),
    });

    let runc = [
        "/usr/local/sbin/runc",
        "/usr/local/bin/runc",
        "/usr/sbin/runc",
        "/usr/bin/runc",
    ];
    out.push(match first_existing(fs, &runc)? {
        Some(p) => item("runc", "runc", Status::Pass, format!("found {p}"), p),
        None => item(
            "runc",
            "runc",
            Status::Fail,
            "no runc binary",
            runc.join(", "),
        ),
    });

    const CNI: &str = "/opt/cni/bin";
    let mut missing = Vec::new();
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        if !fs.exists(&format!("{CNI}/{p}"))? {
            missing.push(p.to_string());
        }
    }
    out.push(if missing.is_empty() {
        item(
            "cni-plugins",
            "CNI plugins",
            Status::Pass,
            "bridge, host-local, loopback, portmap found",
            CNI,
        )
    } else {
        item(
            "cni-plugins",
            "CNI plugins",
            Status::Fail,
            format!("missing: {}", join(&missing)),
            CNI,
        )
    });

    const CRICTL: &str = "/etc/crictl.yaml";
    let endpoint = fs.read_string(CRICTL)?.map(|t| {
        config_lines(&t)
            .filter_map(|l| l.strip_prefix("runtime-endpoint:"))
            .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
            .last()
    });
    let ok = |e: &str| e == CONTAINERD_SOCKET || e == "unix:///var/run/containerd/containerd.sock";
    out.push(match endpoint {
        Some(Some(e)) if ok(&e) => item(
            "crictl-config",
            "crictl endpoint",
            Status::Pass,
            format!("runtime-endpoint: {e}"),
            CRICTL,
        ),
        Some(Some(e)) => item(
            "crictl-config",
            "crictl endpoint",
            Status::Warn,
            format!("runtime-endpoint is {e}, not {CONTAINERD_SOCKET}"),
            CRICTL,
        ),
        Some(None) => item(
            "crictl-config",
            "crictl endpoint",
            Status::Warn,
            format!("no runtime-endpoint; set it to {CONTAINERD_SOCKET}"),
            CRICTL,
        ),
        None => item(
            "crictl-config",
            "crictl endpoint",
            Status::Warn,
            format!(
                "missing: crictl guesses the socket; point runtime-endpoint at {CONTAINERD_SOCKET}"
            ),
            CRICTL,
        ),
    });

    out.push(unit_enabled(
        fs,
        "containerd-enabled",
        "containerd.service enabled",
        "containerd.service",
    )?);
    Ok(out)
}

/// The program of the last non-empty `ExecStart=` in a unit or drop-in (prefixes such as `-`
/// and `@` dropped); `Some("")` when it is only reset.
fn exec_start(text: &str) -> Option<String> {
    let mut last = None;
    for l in config_lines(text) {
        if let Some(v) = l.strip_prefix("ExecStart=") {
            let prog = v.trim().trim_start_matches(['-', '@', '+', '!', ':']);
            last = Some(prog.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    last
}

fn kubelet(fs: &dyn RootFiles) -> Result<Vec<CheckItem>, String> {
    let mut out = Vec::new();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for b in ["kubelet", "kubeadm", "kubectl"] {
        match which(fs, b)? {
            Some(p) => found.push(p),
            None => missing.push(b.to_string()),
        }
    }
    out.push(if missing.is_empty() {
        item(
            "kube-binaries",
            "kubelet, kubeadm, kubectl",
            Status::Pass,
            format!("found {}", join(&found)),
            PATH.join(":"),
        )
    } else {
        item(
            "kube-binaries",
            "kubelet, kubeadm, kubectl",
            Status::Fail,
            format!("missing: {}", join(&missing)),
            PATH.join(":"),
        )
    });

    out.push(unit_enabled(
        fs,
        "kubelet-enabled",
        "kubelet.service enabled",
        "kubelet.service",
    )?);

    const ID: &str = "kubeadm-dropin";
    const TITLE: &str = "kubelet 10-kubeadm.conf drop-in";
    let candidates: Vec<String> = UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/kubelet.service.d/10-kubeadm.conf"))
        .collect();
    let mut dropin = None;
    for p in &candidates {
        if let Some(t) = fs.read_string(p)? {
            dropin = Some((p.clone(), t));
            break;
        }
    }
    out.push(match dropin {
        None => item(
            ID,
            TITLE,
            Status::Fail,
            "missing: without it kubelet ignores kubeadm's configuration and flags",
            candidates[..3].join(", "),
        ),
        Some((p, t)) => match exec_start(&t) {
            _ if !t.contains("$KUBELET_KUBEADM_ARGS") => item(
                ID,
                TITLE,
                Status::Fail,
                "its ExecStart does not pass $KUBELET_KUBEADM_ARGS",
                p,
            ),
            Some(prog) if !prog.is_empty() => {
                if fs.exists(&prog)? {
                    item(ID, TITLE, Status::Pass, format!("runs {prog}"), p)
                } else {
                    item(
                        ID,
                        TITLE,
                        Status::Fail,
                        format!("ExecStart runs {prog}, which is not in the image"),
                        p,
                    )
                }
            }
            _ => item(ID, TITLE, Status::Fail, "sets no ExecStart", p),
        },
    });
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 9. per-node identity

fn identity(fs: &dyn RootFiles) -> Result<Vec<CheckItem>, String> {
    let mut out = Vec::new();
    const MID: &str = "/etc/machine-id";
    let state = facts::machine_id(fs)?;
    out.push(match state.as_str() {
        "empty" | "uninitialized" => item(
            "machine-id",
            "machine-id not baked in",
            Status::Pass,
            format!("{state}: systemd makes a new one on first boot"),
            MID,
        ),
        "missing" => item(
            "machine-id",
            "machine-id not baked in",
            Status::Warn,
            "missing: systemd makes one on first boot only if the root fs is writable then; ship it empty",
            MID,
        ),
        _ => item(
            "machine-id",
            "machine-id not baked in",
            Status::Fail,
            "holds a fixed id: every node would share it (and its DHCP lease); empty it",
            MID,
        ),
    });

    let keys: Vec<String> = fs
        .list("/etc/ssh")?
        .into_iter()
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    out.push(if keys.is_empty() {
        item(
            "ssh-host-keys",
            "no shared ssh host keys",
            Status::Pass,
            "no ssh host keys in the image",
            "/etc/ssh/ssh_host_*",
        )
    } else {
        item(
            "ssh-host-keys",
            "no shared ssh host keys",
            Status::Fail,
            format!("every node would share {}; remove them", join(&keys)),
            "/etc/ssh/ssh_host_*",
        )
    });

    const DBUS: &str = "/var/lib/dbus/machine-id";
    out.push(if let Some(t) = fs.read_link(DBUS)? {
        item("dbus-machine-id", "D-Bus machine-id", Status::Pass, format!("a symlink to {t}"), DBUS)
    } else {
        match fs.read(DBUS)? {
            Some(b) if !b.iter().all(u8::is_ascii_whitespace) => item(
                "dbus-machine-id",
                "D-Bus machine-id",
                Status::Warn,
                "holds a fixed id that every node would share; remove it or link it to /etc/machine-id",
                DBUS,
            ),
            Some(_) => item("dbus-machine-id", "D-Bus machine-id", Status::Pass, "empty", DBUS),
            None => item("dbus-machine-id", "D-Bus machine-id", Status::Pass, "absent", DBUS),
        }
    });
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 10. Pi 5 page size

/// The `kernel=` setting a Pi 5 reads from config.txt: the last one under `[all]`, `[pi5]` or
/// before any section (other model or conditional filters do not apply to every Pi 5 boot).
fn pi5_kernel(config: &str) -> Option<String> {
    let mut applies = true;
    let mut kernel = None;
    for l in config_lines(config) {
        if l.starts_with('[') && l.ends_with(']') {
            applies = matches!(
                l[1..l.len() - 1].trim().to_ascii_lowercase().as_str(),
                "all" | "pi5"
            );
        } else if applies {
            if let Some(v) = l.strip_prefix("kernel=") {
                kernel = Some(v.trim().to_string());
            }
        }
    }
    kernel
}

fn pi5_pages(config: Option<&str>) -> CheckItem {
    const ID: &str = "pi5-page-size";
    const TITLE: &str = "Pi 5 4K-page kernel";
    const WHY: &str = "a Pi 5 boots the 16K-page kernel_2712.img, on which some container images \
                       (jemalloc, some JITs) crash; add kernel=kernel8.img under [all] or [pi5]";
    match config.map(pi5_kernel) {
        None => item(
            ID,
            TITLE,
            Status::Warn,
            format!("no config.txt: {WHY}"),
            "config.txt",
        ),
        Some(Some(k)) if k == "kernel8.img" => item(
            ID,
            TITLE,
            Status::Pass,
            "kernel=kernel8.img: 4K pages on a Pi 5",
            "config.txt: kernel=",
        ),
        Some(Some(k)) => item(
            ID,
            TITLE,
            Status::Warn,
            format!("kernel={k}; {WHY}"),
            "config.txt: kernel=",
        ),
        Some(None) => item(ID, TITLE, Status::Warn, WHY, "config.txt: kernel="),
    }
}

// ---------------------------------------------------------------------------------------------
// 11. kubelet cgroup driver

/// Values of `key:` anywhere in a YAML text (any depth, any document), comments removed.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.split(" #").next().unwrap_or(l).trim();
            let v = l.strip_prefix(key)?.strip_prefix(':')?;
            Some(v.trim().trim_matches(['"', '\'']).to_string())
        })
        .collect()
}

fn cgroup_driver(fs: &dyn RootFiles) -> Result<CheckItem, String> {
    const ID: &str = "cgroup-driver";
    const TITLE: &str = "kubelet cgroupDriver";
    for p in KUBELET_CONFIGS {
        let Some(t) = fs.read_string(p)? else {
            continue;
        };
        let values = yaml_values(&t, "cgroupDriver");
        return Ok(match values.last() {
            Some(v) if values.iter().all(|v| v == "systemd") => {
                item(ID, TITLE, Status::Pass, format!("cgroupDriver: {v}"), p)
            }
            Some(_) => item(
                ID,
                TITLE,
                Status::Warn,
                format!(
                    "cgroupDriver: {}; containerd runs runc with SystemdCgroup, use systemd",
                    values.join(", ")
                ),
                p,
            ),
            None => item(
                ID,
                TITLE,
                Status::Warn,
                "no cgroupDriver; set cgroupDriver: systemd to match containerd",
                p,
            ),
        });
    }
    Ok(item(
        ID,
        TITLE,
        Status::Pass,
        "no kubelet configuration in the image; kubeadm (1.22 and later) writes cgroupDriver: systemd",
        KUBELET_CONFIGS.join(", "),
    ))
}

#[cfg(test)]
mod tests;
