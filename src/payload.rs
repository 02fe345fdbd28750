//! The Kubernetes node payload as plan operations: release binaries (from fetched or offline
//! artifacts), the built-in files of [`crate::payload_files`], enabled units, swap off, the OS
//! packages the base lacks, and the boot settings.

use std::collections::BTreeSet;

use crate::artifacts::{self, ArtifactKind, FetchedArtifact, Release};
use crate::fs::RootFiles;
use crate::payload_files::{self, SwapOffOp};
use crate::plan::{Content, Owner, Plan, RootOp};

/// The list of packages `piforge-packages.service` installs on first boot.
pub const FIRST_BOOT_PACKAGES: &str = "/etc/piforge/first-boot-packages";
const INSTALL_SCRIPT: &[u8] =
    include_bytes!("../overlays/first-boot/usr/local/lib/piforge/install-packages");
const PACKAGES_UNIT: &[u8] =
    include_bytes!("../overlays/first-boot/usr/local/lib/systemd/system/piforge-packages.service");
/// Where the pod-network manifest goes (applied by the first control plane after init).
pub const FLANNEL_MANIFEST: &str = "/usr/local/share/piforge/kube-flannel.yml";

/// Debian packages kubeadm's preflight looks for, with the tool each provides.
pub const NEEDED_PACKAGES: [(&str, &str); 5] = [
    ("iptables", "iptables"),
    ("conntrack", "conntrack"),
    ("socat", "socat"),
    ("ethtool", "ethtool"),
    ("ebtables", "ebtables"),
];

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the artifacts lack {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Artifact(Box<artifacts::Error>),
    #[error("{file}: {msg}")]
    Archive { file: String, msg: String },
    #[error("rendering {path}: {msg}")]
    Render { path: String, msg: String },
    #[error("containerd version {0:?} is not MAJOR.MINOR.PATCH")]
    BadVersion(String),
    #[error("reading the base image: {0}")]
    Base(String),
}

impl From<artifacts::Error> for PayloadError {
    fn from(e: artifacts::Error) -> Self {
        PayloadError::Artifact(Box::new(e))
    }
}

/// Options of the payload beyond the release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadOptions {
    /// Select the 4K-page kernel on a Pi 5 (`kernel=kernel8.img`).
    pub pi5_4k_pages: bool,
}

const ROOT_EXEC: Owner = Owner {
    mode: 0o755,
    uid: 0,
    gid: 0,
};
const ROOT_FILE: Owner = Owner {
    mode: 0o644,
    uid: 0,
    gid: 0,
};
const ROOT_LINK: Owner = Owner {
    mode: 0o777,
    uid: 0,
    gid: 0,
};

fn write(plan: &mut Plan, path: &str, content: Content, owner: Owner) {
    plan.root.push(RootOp::Write {
        path: path.to_string(),
        content,
        owner,
    });
}

fn symlink(plan: &mut Plan, path: &str, target: &str) {
    plan.root.push(RootOp::Symlink {
        path: path.to_string(),
        target: target.to_string(),
        owner: ROOT_LINK,
    });
}

fn find<'a>(
    arts: &'a [FetchedArtifact],
    name: &'static str,
) -> Result<&'a FetchedArtifact, PayloadError> {
    arts.iter()
        .find(|a| a.spec.name == name)
        .ok_or(PayloadError::Missing(name))
}

/// The regular files of a tarball whose path (after `strip`) has no further directory:
/// `bin/containerd` with strip `bin/`, `./bridge` with strip `./`.
fn tar_files(
    art: &FetchedArtifact,
    strip: &str,
) -> Result<Vec<(String, u32, Vec<u8>)>, PayloadError> {
    let mut out = Vec::new();
    for e in artifacts::tar_entries(&art.path)? {
        let artifacts::TarEntry { path, mode, kind } = e;
        if let artifacts::TarEntryKind::File(data) = kind {
            let p = path.trim_start_matches("./");
            let Some(name) = p.strip_prefix(strip.trim_start_matches("./")) else {
                continue;
            };
            if !name.is_empty() && !name.contains('/') {
                out.push((name.to_string(), mode, data));
            }
        }
    }
    if out.is_empty() {
        return Err(PayloadError::Archive {
            file: art.spec.file_name.clone(),
            msg: format!("holds no files under {strip:?}"),
        });
    }
    Ok(out)
}

/// Packages from [`NEEDED_PACKAGES`] the base's dpkg status does not list as installed.
pub fn missing_packages(fs: &dyn RootFiles) -> Result<Vec<String>, PayloadError> {
    let status = fs
        .read_string("/var/lib/dpkg/status")
        .map_err(PayloadError::Base)?
        .unwrap_or_default();
    let mut installed = BTreeSet::new();
    for stanza in status.split("\n\n") {
        let mut name = None;
        let mut ok = false;
        for l in stanza.lines() {
            if let Some(v) = l.strip_prefix("Package:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("Status:") {
                ok = v.trim().ends_with(" installed") && v.contains("install ok");
            }
        }
        if let (Some(n), true) = (name, ok) {
            installed.insert(n);
        }
    }
    Ok(NEEDED_PACKAGES
        .iter()
        .filter(|(p, _)| !installed.contains(*p))
        .map(|(p, _)| p.to_string())
        .collect())
}

/// Adds the node payload to a plan.
pub fn add_payload(
    plan: &mut Plan,
    release: &Release,
    arts: &[FetchedArtifact],
    missing: &[String],
    opts: &PayloadOptions,
) -> Result<(), PayloadError> {
    // Kubernetes binaries.
    for name in ["kubeadm", "kubelet", "kubectl"] {
        let a = find(arts, name)?;
        let content = Content::Host {
            path: a.path.clone(),
            size: a.size,
        };
        write(plan, &format!("/usr/local/bin/{name}"), content, ROOT_EXEC);
    }
    // Container runtime: containerd's bin/ into /usr/local/bin, runc into /usr/local/sbin.
    for (name, _, data) in tar_files(find(arts, "containerd")?, "bin/")? {
        write(
            plan,
            &format!("/usr/local/bin/{name}"),
            Content::Bytes(data),
            ROOT_EXEC,
        );
    }
    let runc = find(arts, "runc")?;
    let content = Content::Host {
        path: runc.path.clone(),
        size: runc.size,
    };
    write(plan, "/usr/local/sbin/runc", content, ROOT_EXEC);
    for (name, _, data) in tar_files(find(arts, "cni-plugins")?, "./")? {
        write(
            plan,
            &format!("/opt/cni/bin/{name}"),
            Content::Bytes(data),
            ROOT_EXEC,
        );
    }
    for (name, _, data) in tar_files(find(arts, "crictl")?, "")? {
        write(
            plan,
            &format!("/usr/local/bin/{name}"),
            Content::Bytes(data),
            ROOT_EXEC,
        );
    }
    if let Some(a) = arts
        .iter()
        .find(|a| a.spec.kind == ArtifactKind::Manifest && a.spec.name == "flannel")
    {
        let content = Content::Host {
            path: a.path.clone(),
            size: a.size,
        };
        write(plan, FLANNEL_MANIFEST, content, ROOT_FILE);
    }

    // Built-in files; containerd's config for its major version, with the pause image.
    let major: u32 = release
        .versions()
        .containerd
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| PayloadError::BadVersion(release.versions().containerd.clone()))?;
    let vars = [("PAUSE_IMAGE", release.pause_image())];
    for f in payload_files::k8s_overlay() {
        let f = if f.path == payload_files::CONTAINERD_CONFIG_V3.path {
            payload_files::containerd_config(major)
        } else {
            f
        };
        let data = if f.template {
            payload_files::render(f.text(), &vars)
                .map_err(|e| PayloadError::Render {
                    path: f.path.to_string(),
                    msg: e.to_string(),
                })?
                .into_bytes()
        } else {
            f.data.to_vec()
        };
        let owner = Owner {
            mode: f.mode,
            uid: 0,
            gid: 0,
        };
        write(plan, f.path, Content::Bytes(data), owner);
    }
    for e in payload_files::enable_units() {
        symlink(plan, &e.link_path(), &e.link_target());
    }
    for op in payload_files::swap_off_ops() {
        match op {
            SwapOffOp::RemoveIfExists(p) => plan.root.push(RootOp::Remove {
                path: p.to_string(),
            }),
            SwapOffOp::MaskUnit(_) => {
                if let Some((link, target)) = op.mask_link() {
                    symlink(plan, &link, target);
                }
            }
        }
    }

    // OS packages the base lacks, installed on first boot by piforge-packages.service.
    if !missing.is_empty() {
        let mut list = String::from(
            "# OS packages kubeadm needs that the base image lacks; installed on first boot by\n\
             # piforge-packages.service (needs the network).\n",
        );
        for p in missing {
            list.push_str(p);
            list.push('\n');
        }
        write(
            plan,
            FIRST_BOOT_PACKAGES,
            Content::Bytes(list.into_bytes()),
            ROOT_FILE,
        );
        write(
            plan,
            "/usr/local/lib/piforge/install-packages",
            Content::Bytes(INSTALL_SCRIPT.to_vec()),
            ROOT_EXEC,
        );
        let unit = format!("{}/piforge-packages.service", payload_files::UNIT_DIR);
        write(
            plan,
            &unit,
            Content::Bytes(PACKAGES_UNIT.to_vec()),
            ROOT_FILE,
        );
        symlink(
            plan,
            "/etc/systemd/system/multi-user.target.wants/piforge-packages.service",
            &unit,
        );
    }

    // Boot partition: cgroup tokens and config.txt settings.
    for t in payload_files::cmdline_tokens() {
        if !plan.cmdline_add.contains(&t) {
            plan.cmdline_add.push(t);
        }
    }
    plan.config.extend(payload_files::config_settings());
    if opts.pi5_4k_pages {
        plan.config.extend(payload_files::pi5_4k_pages_settings());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::root_files::tests::MemFiles;

    #[test]
    fn missing_packages_from_dpkg_status() {
        let fs = MemFiles::with(&[(
            "/var/lib/dpkg/status",
            "Package: iptables\nStatus: install ok installed\nVersion: 1\n\nPackage: socat\nStatus: deinstall ok config-files\n\nPackage: ethtool\nStatus: install ok installed\n",
        )]);
        assert_eq!(
            missing_packages(&fs).unwrap(),
            ["conntrack", "socat", "ebtables"]
        );
        assert_eq!(missing_packages(&MemFiles::default()).unwrap().len(), 5);
    }

    #[test]
    fn first_boot_script_is_valid_sh() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, INSTALL_SCRIPT).unwrap();
        let ok = std::process::Command::new("sh")
            .arg("-n")
            .arg(&p)
            .status()
            .unwrap();
        assert!(ok.success());
        let unit = std::str::from_utf8(PACKAGES_UNIT).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/lib/piforge/install-packages"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }
}
