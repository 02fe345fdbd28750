//! The container runtime and kubelet: containerd and its config.toml, runc, the CNI plugins,
//! crictl, the kubelet binaries, units and drop-in, and the kubelet configuration.

use super::*;
use crate::spec::yaml::{self, Item, Kind};

// ---------------------------------------------------------------------------------------------
// 7, 8. containerd and kubelet

/// Whether `text` (containerd's config.toml) sets `SystemdCgroup = true` in a runc options
/// table (any table whose path names `runc` and `options`, for config versions 2 and 3).
/// `Err` with the parser's message when the file is not valid TOML.
pub(super) fn systemd_cgroup_for_runc(text: &str) -> Result<bool, String> {
    fn walk(table: &toml::Table, path: &mut Vec<String>) -> bool {
        table.iter().any(|(k, v)| match v {
            toml::Value::Table(t) => {
                path.push(k.clone());
                let found = walk(t, path);
                path.pop();
                found
            }
            toml::Value::Boolean(true) if k == "SystemdCgroup" => {
                let p = path.join(".");
                p.contains("runc") && p.contains("options")
            }
            _ => false,
        })
    }
    let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    Ok(walk(&table, &mut Vec::new()))
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

pub(super) fn containerd(fs: &dyn RootFiles) -> Result<Vec<CheckItem>, String> {
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

    const CFG: &str = paths::CONTAINERD_CONFIG;
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
        Some(t) => match systemd_cgroup_for_runc(&t) {
            Ok(true) => item(
                "containerd-config",
                CFG_T,
                Status::Pass,
                "runc runs with SystemdCgroup = true",
                CFG,
            ),
            Ok(false) => item(
                "containerd-config",
                CFG_T,
                Status::Fail,
                "SystemdCgroup = true is not set in runc's options; kubelet's cgroupDriver is systemd",
                CFG,
            ),
            Err(e) => item(
                "containerd-config",
                CFG_T,
                Status::Fail,
                format!("not valid TOML ({e}); containerd would not start"),
                CFG,
            ),
        },
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

    const CNI: &str = paths::CNI_BIN_DIR;
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
    // The last `runtime-endpoint` of the top-level mapping; a file that is not YAML has none.
    let endpoint = fs.read_string(CRICTL)?.map(|t| {
        yaml::parse(&t)
            .ok()
            .flatten()
            .and_then(|doc| top_level_values(&doc, "runtime-endpoint").pop())
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

pub(super) fn kubelet(fs: &dyn RootFiles) -> Result<Vec<CheckItem>, String> {
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
// 11. kubelet cgroup driver

/// The scalar values of `key` in a mapping (in order; a key may repeat).
fn top_level_values(doc: &Item, key: &str) -> Vec<String> {
    let Kind::Map(entries) = &doc.kind else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|(k, _)| k.as_str() == Some(key))
        .filter_map(|(_, v)| v.as_str().map(str::to_string))
        .collect()
}

/// The scalar values of `key` at any depth of every document of a YAML text (a kubeadm
/// configuration holds several); `Err` with where and why when the text is not YAML.
pub(super) fn yaml_values(text: &str, key: &str) -> Result<Vec<String>, String> {
    fn walk(item: &Item, key: &str, out: &mut Vec<String>) {
        match &item.kind {
            Kind::Map(entries) => {
                for (k, v) in entries {
                    match v.as_str() {
                        Some(s) if k.as_str() == Some(key) => out.push(s.to_string()),
                        _ => walk(v, key, out),
                    }
                }
            }
            Kind::Seq(items) => items.iter().for_each(|i| walk(i, key, out)),
            Kind::Scalar(_) => {}
        }
    }
    let docs =
        yaml::parse_documents(text).map_err(|e| format!("line {}: {}", e.pos.line, e.message))?;
    let mut out = Vec::new();
    for d in &docs {
        walk(d, key, &mut out);
    }
    Ok(out)
}

pub(super) fn cgroup_driver(fs: &dyn RootFiles) -> Result<CheckItem, String> {
    const ID: &str = "cgroup-driver";
    const TITLE: &str = "kubelet cgroupDriver";
    for p in KUBELET_CONFIGS {
        let Some(t) = fs.read_string(p)? else {
            continue;
        };
        let values = match yaml_values(&t, "cgroupDriver") {
            Ok(v) => v,
            Err(e) => {
                return Ok(item(
                    ID,
                    TITLE,
                    Status::Warn,
                    format!("not valid YAML ({e}); kubelet would not read it"),
                    p,
                ))
            }
        };
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
            // kubeadm 1.22 and later default an unset cgroupDriver to systemd ("Configuring a
            // cgroup driver", kubernetes.io/docs/tasks/administer-cluster/kubeadm/
            // configure-cgroup-driver), and a joining node's kubelet takes the cluster's
            // KubeletConfiguration (the kubelet-config ConfigMap `kubeadm init` uploaded), not
            // one of its own: nothing to fix in either case.
            None if p == paths::KUBEADM_CONFIG => {
                let why = if t.contains("kind: JoinConfiguration") {
                    "a joining node's kubelet takes the cluster's KubeletConfiguration \
                     (kubeadm's kubelet-config ConfigMap)"
                } else {
                    "not set; kubeadm (1.22 and later) defaults it to systemd"
                };
                item(ID, TITLE, Status::Pass, why, p)
            }
            // kubelet's own default is cgroupfs; kubeadm writes this file on the node.
            None => item(
                ID,
                TITLE,
                Status::Warn,
                "no cgroupDriver (kubelet then uses cgroupfs, containerd systemd); kubeadm \
                 writes this file on first boot: remove it from the image",
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
