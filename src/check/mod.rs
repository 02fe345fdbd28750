//! `piforge check`: does an image hold what a kubeadm node needs (PI-FACTS.md, "What a kubeadm
//! node on a Pi needs")? A static check of the image's files, before any card is flashed.
//!
//! The rules are pure: the root filesystem is read through [`RootFiles`] and the boot
//! partition's few files are passed in as text, so every rule is tested on in-memory trees.
//! [`check_image`] reads them from an image. By topic: `os` (64-bit userland, cgroups, swap,
//! modules, sysctls), `tools` (kubeadm's preflight tools), `runtime` (containerd, runc, CNI,
//! crictl, kubelet and its configuration), `identity` (per-node ids, the Pi 5 kernel),
//! `endpoint` (the control-plane endpoint of a node image: VIP, DNS name or node address).
//! The text form of the result is [`crate::text::check`].

mod endpoint;
mod identity;
mod image;
mod images;
mod os;
mod runtime;
mod space;
#[cfg(test)]
mod tests;
mod tools;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::fs::RootFiles;
use crate::inspect::facts::{self, SwapMechanism};

use identity::{identity, pi5_pages};
pub use image::check_image;
use os::{arch, cgroups, kernel_modules, swap, sysctls};
use runtime::{cgroup_driver, containerd, kubelet};
use tools::{cloud_config_packages, tools};
#[cfg(test)]
use {
    identity::pi5_kernel,
    runtime::{systemd_cgroup_for_runc, yaml_values},
};

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
    paths::UNIT_DIR,
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

use crate::payload::paths;

const CONTAINERD_SOCKET: &str = "unix:///run/containerd/containerd.sock";

/// Kubelet configuration files piforge or kubeadm leave in an image.
const KUBELET_CONFIGS: [&str; 2] = ["/var/lib/kubelet/config.yaml", paths::KUBEADM_CONFIG];

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
    items.extend(endpoint::endpoint(fs)?);
    items.extend(images::container_images(fs)?);
    Ok(items)
}

/// True when nothing failed (warnings are fine).
pub fn exit_ok(items: &[CheckItem]) -> bool {
    items.iter().all(|i| i.status != Status::Fail)
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
