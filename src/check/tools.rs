//! The tools kubeadm's preflight looks for on PATH, and the packages first boot installs.

use super::*;

// ---------------------------------------------------------------------------------------------
// 6. tools

/// Package names a cloud-config `user-data` installs on first boot (`packages:`).
pub(super) fn cloud_config_packages(user_data: Option<&str>) -> Vec<String> {
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

/// (tool, Debian package, required, why it is here): what a node of the catalog's Kubernetes
/// (1.34 to 1.36) needs on PATH. "Required" fails the check when the tool is absent and not
/// installed on first boot; the others warn.
///
/// kubeadm's preflight (`addExecChecks` in cmd/kubeadm/app/preflight/checks_linux.go) asks,
/// since 1.33, only for `crictl`, `mount` and `nsenter` (mandatory) and `touch` (a warning):
/// - `ip`, `iptables`, `ethtool` and `tc` were dropped in 1.33 (kubernetes/kubernetes#129131,
///   kubeadm#3132: kubelet no longer runs them; kube-proxy reports its own iptables needs);
/// - `socat` and `ebtables` in 1.31 (#127151, back-ported to 1.28-1.30);
/// - `conntrack` is asked for only below 1.32 (#126952: kube-proxy no longer runs it).
///
/// kube-proxy and flannel run from their images, which carry their own iptables and
/// conntrack. `iptables` stays required for piforge's own reason (below), and is what
/// `payload::NEEDED_PACKAGES` installs.
const TOOLS: [(&str, &str, bool, &str); 5] = [
    ("mount", "mount", true, "kubeadm preflight, mandatory"),
    (
        "nsenter",
        "util-linux",
        true,
        "kubeadm preflight, mandatory",
    ),
    (
        "crictl",
        "cri-tools",
        true,
        "kubeadm preflight, mandatory with a CRI runtime (the payload installs it)",
    ),
    (
        "iptables",
        "iptables",
        true,
        "the CNI portmap plugin, chained by flannel's CNI configuration, runs the host's \
         iptables for hostPort pods (kubeadm no longer checks it)",
    ),
    ("touch", "coreutils", false, "kubeadm preflight, a warning"),
];

/// Whether first boot installs piforge's package list from the card's `.debs` (offline, with
/// dpkg): the `.deb` list piforge writes names each package and every listed file is in the
/// card. `Some(number of .debs)` when it does.
pub(super) fn offline_packages(fs: &dyn RootFiles) -> Result<Option<usize>, String> {
    let Some(list) = fs.read_string(crate::payload::paths::DEBS_MANIFEST)? else {
        return Ok(None);
    };
    let packages: Vec<String> = fs
        .read_string(crate::payload::FIRST_BOOT_PACKAGES)?
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let mut names = Vec::new();
    for l in list
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
    {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 2 {
            continue;
        }
        let file = format!("{}/{}", crate::payload::paths::DEBS_DIR, w[0]);
        if !fs.exists(&file)? {
            return Ok(None);
        }
        names.push(w[1].to_string());
    }
    Ok(packages
        .iter()
        .all(|p| names.contains(p))
        .then_some(names.len()))
}

pub(super) fn tools(fs: &dyn RootFiles, packages: &[String]) -> Result<Vec<CheckItem>, String> {
    let path = PATH.join(":");
    let offline = offline_packages(fs)?;
    // An image whose apt lists nothing cannot install anything on first boot either. A source
    // file that does not parse counts as a source (apt may still read it).
    let no_sources = crate::apt::sources::read_sources(fs).is_ok_and(|s| s.is_empty());
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
        for (tool, pkg, _, _) in TOOLS.iter().filter(|t| t.2 == required) {
            if which(fs, tool)?.is_some() {
                present.push(tool.to_string());
            } else if packages.iter().any(|p| p == pkg || p == tool) {
                later.push(format!("{tool} ({pkg})"));
            } else {
                absent.push(format!("{tool} ({pkg})"));
            }
        }
        let offline_note = |n: usize| {
            format!(
                "{} installed on first boot from the card's {n} .debs in {} with dpkg \
                 (piforge-packages.service; no network needed)",
                join(&later),
                crate::payload::paths::DEBS_DIR
            )
        };
        let online_note = || {
            if no_sources {
                format!(
                    "{} to be installed on first boot with apt, but the image lists no apt \
                     source (/etc/apt/sources.list, /etc/apt/sources.list.d), so neither \
                     `piforge fetch` nor the node can get them: build from a base that has its \
                     apt sources, or add them and their key with an overlay (`overlays:` in \
                     cluster.yaml)",
                    join(&later)
                )
            } else {
                format!(
                    "{} installed on first boot (by cloud-init or piforge-packages.service with \
                     apt; needs network); to carry them in the card, run `piforge fetch` on \
                     your cluster.yaml before `piforge build` (it pins their .debs from the \
                     base's apt sources)",
                    join(&later)
                )
            }
        };
        let later_note = || match offline {
            Some(n) => offline_note(n),
            None => online_note(),
        };
        let it = if !absent.is_empty() {
            let mut reason = format!("missing: {}", join(&absent));
            if !later.is_empty() {
                let _ = write!(reason, "; {}", later_note());
            }
            // `touch`, the one optional tool, is a warning in kubeadm's preflight too.
            let status = if required { Status::Fail } else { Status::Warn };
            item(id, title, status, reason, path.clone())
        } else if !later.is_empty() {
            // The card's own .debs cover them: nothing is left to the network.
            let status = if offline.is_some() {
                Status::Pass
            } else {
                Status::Warn
            };
            item(
                id,
                title,
                status,
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
