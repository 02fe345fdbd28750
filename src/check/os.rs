//! Checks of the operating system: a 64-bit userland, cgroups on the kernel command line,
//! swap, kernel modules and sysctls loaded at boot.

use super::*;

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

pub(super) fn arch(fs: &dyn RootFiles) -> Result<CheckItem, String> {
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

pub(super) fn cgroups(cmdline: Option<&str>) -> Vec<CheckItem> {
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
            // A file that is not YAML sets nothing (kubelet would not start with it anyway).
            let values = super::runtime::yaml_values(&t, "failSwapOn").unwrap_or_default();
            if values.iter().any(|v| v == "false") {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

pub(super) fn swap(fs: &dyn RootFiles) -> Result<CheckItem, String> {
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

pub(super) fn kernel_modules(fs: &dyn RootFiles) -> Result<CheckItem, String> {
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

pub(super) fn sysctls(fs: &dyn RootFiles) -> Result<Vec<CheckItem>, String> {
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
