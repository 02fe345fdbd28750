//! The Kubernetes node payload as plan operations: release binaries (from fetched or offline
//! artifacts), the built-in files of [`crate::payload_files`], enabled units, swap off, the OS
//! packages the base lacks, and the boot settings.

pub mod paths;

use std::collections::BTreeSet;
use std::path::Path;

use crate::artifacts::{self, ArtifactKind, ArtifactName, FetchedArtifact, Release};
use crate::fs::RootFiles;
use crate::payload_files::{self, SwapOffOp};
use crate::plan::{Content, Owner, Plan, RootOp};

pub use paths::{FIRST_BOOT_PACKAGES, FLANNEL_MANIFEST};

use paths::PACKAGES_UNIT as PACKAGES_UNIT_NAME;

/// A file of the built-in `first-boot` overlay (its presence is checked by the tests).
fn first_boot_file(path: &str) -> &'static [u8] {
    payload_files::builtin_file("first-boot", path).map_or(&[], |f| f.data)
}

/// The OS packages a node needs beyond what every base has, with the tool each provides
/// (first boot checks for the tool) and why it is there.
///
/// Trimmed to what current Kubernetes (the catalog's 1.34 to 1.36) needs:
/// - kubeadm's preflight checks only `mount`, `nsenter` (mandatory), `touch` (a warning;
///   util-linux, mount and coreutils: Essential in every Debian base) and crictl (the
///   payload's) on PATH:
///   `ip`, `iptables`, `ethtool` and `tc` were dropped in 1.33 (kubernetes/kubernetes#129131,
///   for kubeadm issue #3132), `socat` and `ebtables` in 1.31 (#127151, cherry-picked back to
///   1.28), `conntrack` in 1.32 (`addExecChecks` in cmd/kubeadm/app/preflight/checks_linux.go
///   asks for it only below 1.32.0: kube-proxy stopped needing it, #126952). kube-proxy and
///   flannel run from their images, which carry their own iptables and conntrack; containerd's
///   CRI does port-forwarding itself (no socat).
/// - `iptables` stays: the CNI `portmap` plugin, which flannel's CNI configuration chains
///   after its bridge, programs host ports by running the host's `iptables` binary
///   (containernetworking/plugins plugins/meta/portmap uses github.com/coreos/go-iptables,
///   which executes `iptables` from PATH). Raspberry Pi OS Lite does not ship it.
pub const NEEDED_PACKAGES: [(&str, &str, &str); 1] = [(
    "iptables",
    "iptables",
    "the CNI portmap plugin (chained by flannel) runs the host's iptables for hostPort pods",
)];

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the artifacts lack {0}")]
    Missing(ArtifactName),
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
    /// The pinned `.deb`s of the missing packages and their dependencies (`piforge fetch`),
    /// put in the card for `install-packages` to install offline with dpkg.
    pub debs: Vec<crate::apt::CardDeb>,
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

fn find(arts: &[FetchedArtifact], name: ArtifactName) -> Result<&FetchedArtifact, PayloadError> {
    arts.iter()
        .find(|a| a.spec.name == name)
        .ok_or(PayloadError::Missing(name))
}

/// The members of a tarball artifact to install, as (file name, content streamed from the
/// archive): the catalog's required members and those of its optional ones the archive holds,
/// in catalog order. A file or symlink the catalog does not list, a member present twice, or a
/// missing required member is an error (issue 12 item 13); nothing is read into memory.
// The visitor returns artifacts::Result, whose error is the artifacts module's own.
#[allow(clippy::result_large_err)]
fn tar_members(art: &FetchedArtifact) -> Result<Vec<(String, Content)>, PayloadError> {
    let members = &art.spec.members;
    let refuse = |msg: String| PayloadError::Archive {
        file: art.spec.file_name.clone(),
        msg,
    };
    let mut sizes: std::collections::BTreeMap<String, u64> = Default::default();
    let mut problem = None;
    artifacts::for_each_tar_entry(&art.path, |e, _| {
        let listed = |list: &[String]| list.contains(&e.path);
        let installed = listed(&members.required) || listed(&members.optional);
        match e.kind {
            artifacts::TarEntryKind::Dir => {}
            _ if listed(&members.ignored) => {}
            artifacts::TarEntryKind::File { size } if installed => {
                if sizes.insert(e.path.clone(), size).is_some() {
                    problem = Some(format!("holds {} twice", e.path));
                }
            }
            artifacts::TarEntryKind::File { .. } | artifacts::TarEntryKind::Symlink(_) => {
                problem = Some(format!(
                    "holds {}, which the catalog does not list for {} (it installs only {})",
                    e.path,
                    art.spec.name,
                    members
                        .required
                        .iter()
                        .chain(&members.optional)
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(problem.is_none())
    })?;
    if let Some(p) = problem {
        return Err(refuse(p));
    }
    if let Some(m) = members.required.iter().find(|m| !sizes.contains_key(*m)) {
        return Err(refuse(format!("lacks {m}")));
    }
    Ok(members
        .required
        .iter()
        .chain(&members.optional)
        .filter_map(|m| {
            let size = *sizes.get(m)?;
            let name = m.rsplit('/').next().unwrap_or(m).to_string();
            let content = Content::TarMember {
                archive: art.path.clone(),
                member: m.clone(),
                size,
            };
            Some((name, content))
        })
        .collect())
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
        .filter(|(p, _, _)| !installed.contains(*p))
        .map(|(p, _, _)| p.to_string())
        .collect())
}

/// What the payload needs to know about the base image's root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseFacts {
    /// Packages from [`NEEDED_PACKAGES`] the base lacks.
    pub missing_packages: Vec<String>,
    /// The symlinks `systemctl enable ssh` would make, when the base has sshd installed but
    /// not enabled (Raspberry Pi OS: pi-gen's stage2 runs `systemctl disable ssh` unless
    /// `ENABLE_SSH=1`, and cloud-init's ssh module does not enable the unit).
    pub ssh_enable: Vec<(String, String)>,
    /// SSH host keys the base ships (`/etc/ssh/ssh_host_*`): every card would share them.
    pub host_keys: Vec<String>,
    /// The groups in the base's `/etc/group`.
    pub groups: Vec<String>,
    /// The groups of the base cloud-init's default user (`system_info: default_user: groups:`
    /// in `/etc/cloud/cloud.cfg`, then `cloud.cfg.d/*.cfg` in order; the last one wins).
    pub default_user_groups: Vec<String>,
    /// Units of the base that delete and remake the host keys on first boot, masked so that
    /// the node keeps the key piforge writes for it (see [`SSH_KEY_REGENERATORS`]).
    pub ssh_key_regenerators: Vec<String>,
    /// NetworkManager is installed (Raspberry Pi OS): Wi-Fi goes in a keyfile.
    pub network_manager: bool,
    /// netplan is installed (Ubuntu): without NetworkManager, Wi-Fi goes in a netplan file.
    pub netplan: bool,
}

/// The names in an `/etc/group`.
fn group_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// `system_info.default_user.groups` of one cloud-init config file (a list, or cloud-init's
/// comma-separated string form); `None` when the file does not set it or is not YAML.
fn default_user_groups_in(text: &str) -> Option<Vec<String>> {
    let item = crate::spec::yaml::parse(text).ok()??;
    let v = crate::spec::yaml::to_json(&item).ok()?;
    match &v["system_info"]["default_user"]["groups"] {
        serde_json::Value::Array(a) => Some(
            a.iter()
                .filter_map(|g| g.as_str())
                .map(|g| g.trim().to_string())
                .collect(),
        ),
        serde_json::Value::String(s) => Some(
            s.split(',')
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect(),
        ),
        _ => None,
    }
}

fn read_default_user_groups(fs: &dyn RootFiles) -> Result<Vec<String>, PayloadError> {
    let mut files = vec!["/etc/cloud/cloud.cfg".to_string()];
    let mut extra: Vec<String> = fs
        .list("/etc/cloud/cloud.cfg.d")
        .map_err(PayloadError::Base)?
        .into_iter()
        .filter(|n| n.ends_with(".cfg"))
        .map(|n| format!("/etc/cloud/cloud.cfg.d/{n}"))
        .collect();
    extra.sort();
    files.extend(extra);
    let mut groups = Vec::new();
    for f in files {
        let text = fs.read_string(&f).map_err(PayloadError::Base)?;
        if let Some(g) = text.as_deref().and_then(default_user_groups_in) {
            groups = g;
        }
    }
    Ok(groups)
}

/// Raspberry Pi OS's `regenerate_ssh_host_keys.service` (raspberrypi-sys-mods) runs
/// `rm -f /etc/ssh/ssh_host_*_key*` then `ssh-keygen -A` on first boot; pi-gen enabled it up
/// to bookworm (stage2/01-sys-tweaks). It would replace the node's own key from the secrets
/// directory, so where the base has it, it is masked.
pub const SSH_KEY_REGENERATORS: [&str; 1] = ["regenerate_ssh_host_keys.service"];

/// Where Debian's openssh-server puts its unit (`/lib` is a link to it on merged-/usr bases).
const SSH_UNIT_FILES: [&str; 2] = [
    "/usr/lib/systemd/system/ssh.service",
    "/lib/systemd/system/ssh.service",
];

/// Reads [`BaseFacts`] from a root filesystem.
pub fn base_facts(fs: &dyn RootFiles) -> Result<BaseFacts, PayloadError> {
    let missing_packages = missing_packages(fs)?;
    let mut ssh_enable = Vec::new();
    let mut unit = None;
    for u in SSH_UNIT_FILES {
        if fs.exists(u).map_err(PayloadError::Base)? {
            unit = Some(u);
            break;
        }
    }
    if let Some(unit) = unit {
        let (link, _) = paths::wants_link("ssh.service");
        if !fs.exists(&link).map_err(PayloadError::Base)? {
            ssh_enable.push((link, unit.to_string()));
            // ssh.service's [Install] Alias=sshd.service, as systemctl enable makes it.
            let text = fs
                .read_string(unit)
                .map_err(PayloadError::Base)?
                .unwrap_or_default();
            let alias = "/etc/systemd/system/sshd.service";
            if text.lines().any(|l| l.trim() == "Alias=sshd.service")
                && !fs.exists(alias).map_err(PayloadError::Base)?
            {
                ssh_enable.push((alias.to_string(), unit.to_string()));
            }
        }
    }
    let host_keys = fs
        .list("/etc/ssh")
        .map_err(PayloadError::Base)?
        .into_iter()
        .filter(|n| n.starts_with("ssh_host_"))
        .map(|n| format!("/etc/ssh/{n}"))
        .collect();
    let groups = group_names(
        &fs.read_string("/etc/group")
            .map_err(PayloadError::Base)?
            .unwrap_or_default(),
    );
    let default_user_groups = read_default_user_groups(fs)?;
    let mut ssh_key_regenerators = Vec::new();
    for u in SSH_KEY_REGENERATORS {
        for dir in ["/usr/lib/systemd/system", "/lib/systemd/system"] {
            if fs
                .exists(&format!("{dir}/{u}"))
                .map_err(PayloadError::Base)?
            {
                ssh_key_regenerators.push(u.to_string());
                break;
            }
        }
    }
    let network_manager = fs
        .exists("/usr/sbin/NetworkManager")
        .map_err(PayloadError::Base)?;
    let netplan = fs.exists("/usr/sbin/netplan").map_err(PayloadError::Base)?;
    Ok(BaseFacts {
        missing_packages,
        ssh_enable,
        host_keys,
        groups,
        default_user_groups,
        ssh_key_regenerators,
        network_manager,
        netplan,
    })
}

/// Adds the node payload to a plan.
pub fn add_payload(
    plan: &mut Plan,
    release: &Release,
    arts: &[FetchedArtifact],
    base: &BaseFacts,
    opts: &PayloadOptions,
) -> Result<(), PayloadError> {
    let missing = &base.missing_packages;
    let first_op = plan.root.len();
    // Kubernetes binaries.
    for name in [
        ArtifactName::Kubeadm,
        ArtifactName::Kubelet,
        ArtifactName::Kubectl,
    ] {
        let a = find(arts, name)?;
        let content = Content::Host {
            path: a.path.clone(),
            size: a.size,
        };
        write(
            plan,
            &format!("{}/{name}", paths::BIN_DIR),
            content,
            ROOT_EXEC,
        );
    }
    // Container runtime: containerd's bin/ into /usr/local/bin, runc into /usr/local/sbin.
    for (name, content) in tar_members(find(arts, ArtifactName::Containerd)?)? {
        write(
            plan,
            &format!("{}/{name}", paths::BIN_DIR),
            content,
            ROOT_EXEC,
        );
    }
    let runc = find(arts, ArtifactName::Runc)?;
    let content = Content::Host {
        path: runc.path.clone(),
        size: runc.size,
    };
    write(
        plan,
        &format!("{}/runc", paths::SBIN_DIR),
        content,
        ROOT_EXEC,
    );
    for (name, content) in tar_members(find(arts, ArtifactName::CniPlugins)?)? {
        write(
            plan,
            &format!("{}/{name}", paths::CNI_BIN_DIR),
            content,
            ROOT_EXEC,
        );
    }
    for (name, content) in tar_members(find(arts, ArtifactName::Crictl)?)? {
        write(
            plan,
            &format!("{}/{name}", paths::BIN_DIR),
            content,
            ROOT_EXEC,
        );
    }
    // No artifact replaces another's file (a containerd tarball's `kubeadm`, say).
    let mut installed = BTreeSet::new();
    for op in &plan.root[first_op..] {
        if !installed.insert(op.path()) {
            return Err(PayloadError::Archive {
                file: op.path().to_string(),
                msg: "is installed by two artifacts; each must lay down its own files".into(),
            });
        }
    }
    if let Some(a) = arts
        .iter()
        .find(|a| a.spec.kind == ArtifactKind::Manifest && a.spec.name == ArtifactName::Flannel)
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
        let f = if f.path == paths::CONTAINERD_CONFIG {
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

    // OS packages the base lacks, installed on first boot by piforge-packages.service: from
    // the .debs in the card when piforge fetch pinned them, else with apt (network).
    if !missing.is_empty() {
        let mut list = String::from(
            "# OS packages a Kubernetes node needs that the base image lacks; installed on first\n\
             # boot by piforge-packages.service: with dpkg from the .debs in /var/lib/piforge/debs\n\
             # (listed in /etc/piforge/first-boot-debs) when the card has them, else with apt\n\
             # (needs the network).\n",
        );
        for p in missing {
            let why = NEEDED_PACKAGES
                .iter()
                .find(|(n, _, _)| n == p)
                .map_or("", |(_, _, why)| why);
            list.push_str(&format!("{p} # {why}\n"));
        }
        if !opts.debs.is_empty() {
            let mut manifest = String::from(
                "# The .debs in /var/lib/piforge/debs, in dependency order, pinned in piforge.lock:\n\
                 # FILE NAME VERSION ARCH SHA256 INSTALLED-KIB\n",
            );
            for d in &opts.debs {
                manifest.push_str(&format!(
                    "{} {} {} {} {} {}\n",
                    d.file, d.name, d.version, d.arch, d.sha256, d.installed_kib
                ));
                write(
                    plan,
                    &format!("{}/{}", paths::DEBS_DIR, d.file),
                    Content::Host {
                        path: d.path.clone(),
                        size: d.size,
                    },
                    ROOT_FILE,
                );
            }
            write(
                plan,
                paths::DEBS_MANIFEST,
                Content::Bytes(manifest.into_bytes()),
                ROOT_FILE,
            );
        }
        write(
            plan,
            FIRST_BOOT_PACKAGES,
            Content::Bytes(list.into_bytes()),
            ROOT_FILE,
        );
        write(
            plan,
            paths::INSTALL_PACKAGES_SCRIPT,
            Content::Bytes(first_boot_file(paths::INSTALL_PACKAGES_SCRIPT).to_vec()),
            ROOT_EXEC,
        );
        write(
            plan,
            &paths::unit(PACKAGES_UNIT_NAME),
            Content::Bytes(first_boot_file(&paths::unit(PACKAGES_UNIT_NAME)).to_vec()),
            ROOT_FILE,
        );
        let (link, target) = paths::wants_link(PACKAGES_UNIT_NAME);
        symlink(plan, &link, &target);
    }

    // sshd enabled where the base ships it disabled; no host keys shared by every card
    // (each node gets its own from the build's node layer).
    for (link, target) in &base.ssh_enable {
        symlink(plan, link, target);
    }
    for k in &base.host_keys {
        plan.root.push(RootOp::Remove { path: k.clone() });
    }
    // The node's host key comes from the secrets directory (the build's node layer); nothing
    // on the node may replace it.
    for u in &base.ssh_key_regenerators {
        symlink(plan, &format!("/etc/systemd/system/{u}"), "/dev/null");
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

/// Whether the 4K-page Pi 5 setting (`kernel=kernel8.img`) can apply to a base whose boot
/// partition holds `boot_files` (its top-level names): only where Raspberry Pi's kernel8.img is
/// there, as on Raspberry Pi OS. Ubuntu's and Debian's raspi images boot their own kernel
/// (`kernel=vmlinuz` in Ubuntu's config.txt, `vmlinuz-<version>` on Debian's) and have no
/// kernel8.img, so the setting would leave the card unbootable: the error says why.
pub fn pi5_4k_pages_supported(boot_files: &[String]) -> Result<(), String> {
    if boot_files
        .iter()
        .any(|f| f.eq_ignore_ascii_case("kernel8.img"))
    {
        return Ok(());
    }
    let own = boot_files
        .iter()
        .find(|f| f.to_ascii_lowercase().starts_with("vmlinuz"))
        .map(|k| format!(" ({k})"))
        .unwrap_or_default();
    Err(format!(
        "this base boots a kernel of its own{own}, not Raspberry Pi OS's kernel8.img (4K pages) \
         and kernel_2712.img (16K pages), and its boot partition has no kernel8.img to select: \
         the card would not boot; remove the key (it applies to Raspberry Pi OS only)"
    ))
}

/// Errors of [`node_payload`]: reading the base image, or laying out the payload.
#[derive(Debug, thiserror::Error)]
pub enum PayloadSetupError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Image(#[from] crate::disk::ImageError),
    #[error("root partition: {0}")]
    Ext4(#[from] crate::fs::ext4::Ext4Error),
}

/// Adds the Kubernetes node payload to a plan, reading which OS packages the base lacks from
/// the raw image `raw`; returns what it read of the base.
pub fn node_payload(
    plan: &mut Plan,
    raw: &Path,
    release: &Release,
    arts: &[FetchedArtifact],
    opts: &PayloadOptions,
) -> Result<BaseFacts, PayloadSetupError> {
    let base = read_base_facts(raw)?;
    add_payload(plan, release, arts, &base, opts)?;
    Ok(base)
}

/// Where a base keeps its time zones (tzdata): cloud-init's `timezone` module links
/// `/etc/localtime` to `/usr/share/zoneinfo/<zone>` and fails when that file is missing
/// (cloudinit/distros/__init__.py, `_find_tz_file`).
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Whether the base's tzdata has `zone`: `None` when the base has no `/usr/share/zoneinfo`
/// at all (nothing to compare with: the spec's check against the embedded tz list stands).
/// `zone` is a checked tz name (no `..`, no leading `/`).
pub fn zone_in(fs: &dyn RootFiles, zone: &str) -> Result<Option<bool>, String> {
    if !fs.exists(ZONEINFO)? {
        return Ok(None);
    }
    Ok(Some(fs.exists(&format!("{ZONEINFO}/{zone}"))?))
}

/// [`zone_in`] on the raw image `raw`'s root filesystem.
pub fn read_zone_in(raw: &Path, zone: &str) -> Result<Option<bool>, PayloadSetupError> {
    let fs = crate::disk::Image::open(raw)?.root_fs()?;
    zone_in(&crate::fs::Ext4Files(&fs), zone)
        .map_err(|e| PayloadSetupError::Payload(PayloadError::Base(e)))
}

/// [`BaseFacts`] of the raw image `raw`'s root filesystem.
pub fn read_base_facts(raw: &Path) -> Result<BaseFacts, PayloadSetupError> {
    let fs = crate::disk::Image::open(raw)?.root_fs()?;
    Ok(base_facts(&crate::fs::Ext4Files(&fs))?)
}

#[cfg(test)]
mod install_packages_tests;

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
        assert!(missing_packages(&fs).unwrap().is_empty());
        let fs = MemFiles::with(&[(
            "/var/lib/dpkg/status",
            "Package: iptables\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: socat\nStatus: install ok installed\n",
        )]);
        assert_eq!(missing_packages(&fs).unwrap(), ["iptables"]);
        assert_eq!(
            missing_packages(&MemFiles::default()).unwrap(),
            ["iptables"]
        );
    }

    #[test]
    fn zones_are_looked_up_in_the_base_tzdata() {
        let fs = MemFiles::with(&[
            ("/usr/share/zoneinfo/Europe/Lisbon", "TZif"),
            ("/usr/share/zoneinfo/Etc/UTC", "TZif"),
        ]);
        assert_eq!(zone_in(&fs, "Europe/Lisbon").unwrap(), Some(true));
        assert_eq!(zone_in(&fs, "America/Nuuk").unwrap(), Some(false));
        assert_eq!(zone_in(&fs, "Europe").unwrap(), Some(true));
        // No tzdata at all: nothing to compare with.
        assert_eq!(
            zone_in(&MemFiles::default(), "Europe/Lisbon").unwrap(),
            None
        );
    }

    #[test]
    fn ssh_is_enabled_where_the_base_disables_it_and_host_keys_go() {
        let unit = "[Unit]\nDescription=OpenBSD Secure Shell server\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n";
        // Raspberry Pi OS: installed, disabled, host keys removed by pi-gen.
        let fs = MemFiles::with(&[("/usr/lib/systemd/system/ssh.service", unit)]);
        let facts = base_facts(&fs).unwrap();
        assert_eq!(
            facts.ssh_enable,
            vec![
                (
                    "/etc/systemd/system/multi-user.target.wants/ssh.service".to_string(),
                    "/usr/lib/systemd/system/ssh.service".to_string()
                ),
                (
                    "/etc/systemd/system/sshd.service".to_string(),
                    "/usr/lib/systemd/system/ssh.service".to_string()
                ),
            ]
        );
        assert!(facts.host_keys.is_empty());
        // Already enabled, with host keys shipped: nothing to enable, the keys go.
        let fs = MemFiles::with(&[
            ("/lib/systemd/system/ssh.service", unit),
            (
                "/etc/systemd/system/multi-user.target.wants/ssh.service",
                "",
            ),
            ("/etc/ssh/ssh_host_ed25519_key", "k"),
            ("/etc/ssh/ssh_host_ed25519_key.pub", "p"),
            ("/etc/ssh/sshd_config", "x"),
        ]);
        let facts = base_facts(&fs).unwrap();
        assert!(facts.ssh_enable.is_empty());
        assert_eq!(
            facts.host_keys,
            [
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub"
            ]
        );
        // No sshd at all: nothing to enable.
        assert!(base_facts(&MemFiles::default())
            .unwrap()
            .ssh_enable
            .is_empty());
    }

    #[test]
    fn groups_and_the_default_users_groups_from_the_base() {
        let fs = MemFiles::with(&[
            (
                "/etc/group",
                "root:x:0:\nadm:x:4:pi\n# comment\nsudo:x:27:pi\nvideo:x:44:\ngpio:x:993:\n",
            ),
            (
                "/etc/cloud/cloud.cfg",
                "users: [default]\nsystem_info:\n  default_user:\n    name: debian\n    groups: [adm, audio, sudo, video]\n",
            ),
            ("/etc/cloud/cloud.cfg.d/05_logging.cfg", "output: {all: x}\n"),
        ]);
        let facts = base_facts(&fs).unwrap();
        assert_eq!(facts.groups, ["root", "adm", "sudo", "video", "gpio"]);
        assert_eq!(facts.default_user_groups, ["adm", "audio", "sudo", "video"]);
        // A later cloud.cfg.d file wins, in cloud-init's comma-separated form too.
        let fs = MemFiles::with(&[
            (
                "/etc/cloud/cloud.cfg",
                "system_info:\n  default_user:\n    groups: [adm]\n",
            ),
            (
                "/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg",
                "system_info:\n  default_user:\n    name: pi\n    groups: \"adm, dialout,gpio\"\n",
            ),
        ]);
        let facts = base_facts(&fs).unwrap();
        assert_eq!(facts.default_user_groups, ["adm", "dialout", "gpio"]);
        assert!(facts.groups.is_empty());
        // Not YAML: ignored, not an error.
        let fs = MemFiles::with(&[("/etc/cloud/cloud.cfg", "a: [b\n")]);
        assert!(base_facts(&fs).unwrap().default_user_groups.is_empty());
    }

    #[test]
    fn a_base_unit_that_remakes_host_keys_is_masked() {
        let fs = MemFiles::with(&[(
            "/lib/systemd/system/regenerate_ssh_host_keys.service",
            "[Service]\nExecStartPre=-/bin/sh -c \"rm -f -v /etc/ssh/ssh_host_*_key*\"\n",
        )]);
        let facts = base_facts(&fs).unwrap();
        assert_eq!(
            facts.ssh_key_regenerators,
            ["regenerate_ssh_host_keys.service"]
        );
        assert!(base_facts(&MemFiles::default())
            .unwrap()
            .ssh_key_regenerators
            .is_empty());
    }

    #[test]
    fn first_boot_script_is_valid_sh() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let script = first_boot_file(paths::INSTALL_PACKAGES_SCRIPT);
        assert!(!script.is_empty());
        assert_eq!(
            payload_files::builtin_file("first-boot", paths::INSTALL_PACKAGES_SCRIPT)
                .unwrap()
                .mode,
            0o755
        );
        std::fs::write(&p, script).unwrap();
        let ok = std::process::Command::new("sh")
            .arg("-n")
            .arg(&p)
            .status()
            .unwrap();
        assert!(ok.success());
        let unit = std::str::from_utf8(first_boot_file(&paths::unit(PACKAGES_UNIT_NAME))).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/lib/piforge/install-packages"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }
}
