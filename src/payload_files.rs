//! The built-in node payload: the files a kubeadm node needs, embedded at compile time from
//! the repository's `overlays/k8s/` (root filesystem) and `firmware/` (boot partition settings).
//!
//! The layout follows the upstream "without a package manager" install (units in
//! `/usr/local/lib/systemd/system`, binaries in `/usr/local/bin`), so upstream documentation
//! applies to the nodes. Everything here is data; the caller plans and applies it.

use std::fmt;

/// A file to place in the root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedFile {
    /// Absolute path in the image, e.g. `/etc/crictl.yaml`.
    pub path: &'static str,
    pub mode: u16,
    pub data: &'static [u8],
    /// The data holds `{{NAME}}` placeholders: pass it through [`render`] before writing.
    pub template: bool,
}

impl EmbeddedFile {
    /// The data as text (every embedded file is UTF-8, checked by the tests).
    pub fn text(&self) -> &'static str {
        std::str::from_utf8(self.data).unwrap_or("")
    }
}

/// Embeds `overlays/k8s<path>` as the file `<path>`: the source path is the image path, so the
/// two cannot drift apart.
macro_rules! overlay_file {
    ($path:literal, $mode:literal) => {
        overlay_file!($path, $path, $mode, false)
    };
    ($path:literal, $source:literal, $mode:literal, $template:literal) => {
        EmbeddedFile {
            path: $path,
            mode: $mode,
            data: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/overlays/k8s",
                $source
            )),
            template: $template,
        }
    };
}

/// containerd 2.x config (version 3); a template with `PAUSE_IMAGE`.
pub const CONTAINERD_CONFIG_V3: EmbeddedFile = overlay_file!(
    "/etc/containerd/config.toml",
    "/etc/containerd/config.toml",
    0o644,
    true
);
/// containerd 1.7 config (version 2), written to the same path; a template with `PAUSE_IMAGE`.
pub const CONTAINERD_CONFIG_V2: EmbeddedFile = overlay_file!(
    "/etc/containerd/config.toml",
    "/etc/containerd/config-v2.toml",
    0o644,
    true
);

static K8S_OVERLAY: &[EmbeddedFile] = &[
    CONTAINERD_CONFIG_V3,
    overlay_file!("/etc/crictl.yaml", 0o644),
    overlay_file!("/etc/modules-load.d/k8s.conf", 0o644),
    overlay_file!("/etc/sysctl.d/99-kubernetes.conf", 0o644),
    overlay_file!("/etc/rpi/swap.conf.d/90-piforge.conf", 0o644),
    overlay_file!("/etc/systemd/zram-generator.conf", 0o644),
    overlay_file!("/usr/local/lib/systemd/system/containerd.service", 0o644),
    overlay_file!("/usr/local/lib/systemd/system/kubelet.service", 0o644),
    overlay_file!(
        "/usr/local/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
        0o644
    ),
];

/// The files every Kubernetes node gets, for containerd 2.x (the test
/// `overlay_dir_and_list_agree` keeps this list and `overlays/k8s/` in step). Templates (see
/// [`EmbeddedFile::template`]) must be rendered first; for containerd 1.7 use
/// [`containerd_config`] in place of the `/etc/containerd/config.toml` entry.
pub fn k8s_overlay() -> &'static [EmbeddedFile] {
    K8S_OVERLAY
}

/// The containerd config for a containerd major version (1 for 1.7, 2 and later for 2.x).
pub fn containerd_config(containerd_major: u32) -> &'static EmbeddedFile {
    if containerd_major >= 2 {
        &CONTAINERD_CONFIG_V3
    } else {
        &CONTAINERD_CONFIG_V2
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("template placeholder {{{{{0}}}}} has no value")]
    Missing(String),
    #[error("value given for {0}, which the template does not use")]
    Unused(String),
    #[error("malformed placeholder at byte {0}: expected {{{{NAME}}}} with NAME in A-Z, 0-9, _")]
    Malformed(usize),
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Splits a template into literal text and placeholder names, in order.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, RenderError> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut at = 0;
    while let Some(open) = rest.find("{{") {
        out.push(Piece::Text(&rest[..open]));
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(RenderError::Malformed(at + open))?;
        let name = &after[..close];
        if !is_name(name) {
            return Err(RenderError::Malformed(at + open));
        }
        out.push(Piece::Var(name));
        let used = open + 2 + close + 2;
        at += used;
        rest = &rest[used..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// The placeholder names a template uses, sorted and without repeats.
pub fn placeholders(template: &str) -> Result<Vec<String>, RenderError> {
    let mut names: Vec<String> = pieces(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(n) => Some(n.to_string()),
            Piece::Text(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Replaces every `{{NAME}}` with its value, in one pass (values are not expanded again).
/// Errors on a placeholder without a value, on a value no placeholder uses (a misspelt name),
/// and on a `{{` that does not open a well-formed placeholder.
pub fn render(template: &str, vars: &[(&str, &str)]) -> Result<String, RenderError> {
    let pieces = pieces(template)?;
    let mut out = String::with_capacity(template.len());
    for p in &pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => {
                let (_, v) = vars
                    .iter()
                    .find(|(k, _)| k == name)
                    .ok_or_else(|| RenderError::Missing(name.to_string()))?;
                out.push_str(v);
            }
        }
    }
    for (k, _) in vars {
        if !pieces.iter().any(|p| matches!(p, Piece::Var(n) if n == k)) {
            return Err(RenderError::Unused(k.to_string()));
        }
    }
    Ok(out)
}

/// Lines of a settings file without blank lines and `#` comments.
fn content_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn settings(text: &str) -> Vec<(String, String)> {
    content_lines(text)
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

const CMDLINE_ADD: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/firmware/cmdline.add"));
const CONFIG_SETTINGS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/firmware/config.txt.settings"
));
const PI5_4K_PAGES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/firmware/pi5-4k-pages.settings"
));

/// Tokens piforge adds to cmdline.txt (`cgroup_enable=memory cgroup_memory=1`).
pub fn cmdline_tokens() -> Vec<String> {
    content_lines(CMDLINE_ADD)
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// `key=value` settings piforge puts in config.txt (`arm_64bit=1`).
pub fn config_settings() -> Vec<(String, String)> {
    settings(CONFIG_SETTINGS)
}

/// The optional Pi 5 setting that selects the 4K-page kernel (`kernel=kernel8.img`).
pub fn pi5_4k_pages_settings() -> Vec<(String, String)> {
    settings(PI5_4K_PAGES)
}

/// Where the units of the payload live in the image.
pub use crate::payload::paths::UNIT_DIR;

/// A unit to enable, as `systemctl enable` would: a symlink
/// `/etc/systemd/system/<wanted_by>.wants/<unit>` -> `/usr/local/lib/systemd/system/<unit>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enable {
    pub unit: &'static str,
    pub wanted_by: &'static str,
}

impl Enable {
    /// The symlink to create.
    pub fn link_path(&self) -> String {
        format!("/etc/systemd/system/{}.wants/{}", self.wanted_by, self.unit)
    }
    /// What it points at (absolute, as systemctl writes it).
    pub fn link_target(&self) -> String {
        format!("{UNIT_DIR}/{}", self.unit)
    }
}

static ENABLE: &[Enable] = &[
    Enable {
        unit: "containerd.service",
        wanted_by: "multi-user.target",
    },
    Enable {
        unit: "kubelet.service",
        wanted_by: "multi-user.target",
    },
];

/// Units to enable (their `[Install] WantedBy=` lines, checked by the tests).
pub fn enable_units() -> &'static [Enable] {
    ENABLE
}

/// One step that turns swap off, beyond the files in [`k8s_overlay`] (which cover rpi-swap
/// and zram-generator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapOffOp {
    /// `systemctl mask`: a symlink `/etc/systemd/system/<unit>` -> `/dev/null` (replacing
    /// whatever is there). Harmless on a base that lacks the unit.
    MaskUnit(&'static str),
    /// Remove this path (file or symlink) if it exists.
    RemoveIfExists(&'static str),
}

impl SwapOffOp {
    /// For `MaskUnit`: the symlink to create and its target.
    pub fn mask_link(&self) -> Option<(String, &'static str)> {
        match self {
            SwapOffOp::MaskUnit(u) => Some((format!("/etc/systemd/system/{u}"), "/dev/null")),
            SwapOffOp::RemoveIfExists(_) => None,
        }
    }
}

impl fmt::Display for SwapOffOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwapOffOp::MaskUnit(u) => write!(f, "mask {u} (/etc/systemd/system/{u} -> /dev/null)"),
            SwapOffOp::RemoveIfExists(p) => write!(f, "remove {p} if present"),
        }
    }
}

static SWAP_OFF: &[SwapOffOp] = &[
    // Raspberry Pi OS bookworm: dphys-swapfile.
    SwapOffOp::RemoveIfExists("/etc/systemd/system/multi-user.target.wants/dphys-swapfile.service"),
    SwapOffOp::MaskUnit("dphys-swapfile.service"),
];

/// Steps that turn swap off on every supported base, in order.
pub fn swap_off_ops() -> &'static [SwapOffOp] {
    SWAP_OFF
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn all_files() -> Vec<EmbeddedFile> {
        let mut v = k8s_overlay().to_vec();
        v.push(CONTAINERD_CONFIG_V2);
        v
    }

    #[test]
    fn embedded_files_are_nonempty_utf8_with_absolute_paths() {
        for f in all_files() {
            assert!(
                f.path.starts_with('/') && !f.path.contains(".."),
                "{}",
                f.path
            );
            assert!(!f.data.is_empty(), "{} is empty", f.path);
            assert!(
                std::str::from_utf8(f.data).is_ok(),
                "{} is not UTF-8",
                f.path
            );
            assert!(f.data.ends_with(b"\n"), "{} lacks a final newline", f.path);
            assert_eq!(f.mode, 0o644, "{}", f.path);
            assert_eq!(f.template, f.text().contains("{{"), "{}", f.path);
        }
        let mut paths: Vec<&str> = k8s_overlay().iter().map(|f| f.path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), k8s_overlay().len(), "duplicate paths");
    }

    /// Every file under overlays/k8s is embedded (config-v2.toml as the 1.7 alternative).
    #[test]
    fn overlay_dir_and_list_agree() {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else {
                    out.push(format!("/{}", p.strip_prefix(root).unwrap().display()));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("overlays/k8s");
        let mut on_disk = Vec::new();
        walk(&root, &root, &mut on_disk);
        on_disk.retain(|p| p != "/etc/containerd/config-v2.toml");
        on_disk.sort();
        let mut listed: Vec<String> = k8s_overlay().iter().map(|f| f.path.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }

    #[test]
    fn containerd_configs_render_with_systemd_cgroup() {
        for (major, runtime_table) in [
            (
                2,
                "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]",
            ),
            (
                1,
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]",
            ),
        ] {
            let f = containerd_config(major);
            assert_eq!(f.path, "/etc/containerd/config.toml");
            assert_eq!(placeholders(f.text()).unwrap(), vec!["PAUSE_IMAGE"]);
            let out = render(f.text(), &[("PAUSE_IMAGE", "registry.k8s.io/pause:3.10.1")]).unwrap();
            assert!(!out.contains("{{"), "{out}");
            let after = &out[out.find(runtime_table).expect(runtime_table)..];
            assert!(after.contains("SystemdCgroup = true"), "{out}");
            assert!(out.contains("\"registry.k8s.io/pause:3.10.1\""));
            assert!(out.contains("bin_dir = \"/opt/cni/bin\""));
            assert!(out.contains("conf_dir = \"/etc/cni/net.d\""));
        }
        let v3 = render(CONTAINERD_CONFIG_V3.text(), &[("PAUSE_IMAGE", "p:1")]).unwrap();
        assert!(v3.contains("version = 3"));
        assert!(v3.contains(
            "[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = \"p:1\""
        ));
        let v2 = render(CONTAINERD_CONFIG_V2.text(), &[("PAUSE_IMAGE", "p:1")]).unwrap();
        assert!(v2.contains("version = 2") && v2.contains("sandbox_image = \"p:1\""));
    }

    #[test]
    fn render_errors() {
        assert_eq!(render("a {{X}} b {{X}}", &[("X", "1")]).unwrap(), "a 1 b 1");
        assert_eq!(render("no placeholders", &[]).unwrap(), "no placeholders");
        // values are not expanded again
        assert_eq!(render("{{A}}", &[("A", "{{B}}")]).unwrap(), "{{B}}");
        assert_eq!(
            render("{{PAUSE_IMAGE}}", &[]),
            Err(RenderError::Missing("PAUSE_IMAGE".into()))
        );
        assert_eq!(
            render(
                "{{PAUSE_IMAGE}}",
                &[("PAUSE_IMAGE", "x"), ("PAUSE_IMGAE", "y")]
            ),
            Err(RenderError::Unused("PAUSE_IMGAE".into()))
        );
        assert_eq!(
            render("ab {{x}}", &[("x", "1")]),
            Err(RenderError::Malformed(3))
        );
        assert_eq!(render("{{X", &[("X", "1")]), Err(RenderError::Malformed(0)));
        assert_eq!(
            render("{{X}} {{}}", &[("X", "1")]),
            Err(RenderError::Malformed(6))
        );
        assert!(render(CONTAINERD_CONFIG_V3.text(), &[]).is_err());
    }

    #[test]
    fn kubelet_units_use_usr_local_bin() {
        let find = |p: &str| k8s_overlay().iter().find(|f| f.path == p).unwrap().text();
        let dropin = find("/usr/local/lib/systemd/system/kubelet.service.d/10-kubeadm.conf");
        assert!(dropin
            .contains("\nExecStart=\nExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS"));
        assert!(dropin.contains("EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env"));
        assert!(!dropin.contains("/usr/bin/kubelet"));
        let unit = find("/usr/local/lib/systemd/system/kubelet.service");
        assert!(unit.contains("ExecStart=/usr/local/bin/kubelet\n"));
        let containerd = find("/usr/local/lib/systemd/system/containerd.service");
        assert!(containerd.contains("ExecStart=/usr/local/bin/containerd\n"));
        assert!(containerd.contains("Delegate=yes") && containerd.contains("Type=notify"));
        assert!(find("/etc/crictl.yaml")
            .contains("runtime-endpoint: unix:///run/containerd/containerd.sock"));
        let zram = find("/etc/systemd/zram-generator.conf");
        assert!(!zram.lines().any(|l| l.trim_start().starts_with('[')));
    }

    #[test]
    fn enabled_units_exist_and_are_wanted_by_their_target() {
        for e in enable_units() {
            let unit = k8s_overlay()
                .iter()
                .find(|f| f.path == e.link_target())
                .unwrap_or_else(|| panic!("{} is not in the overlay", e.link_target()));
            assert!(unit.text().contains(&format!("WantedBy={}", e.wanted_by)));
        }
        assert_eq!(
            enable_units()[0].link_path(),
            "/etc/systemd/system/multi-user.target.wants/containerd.service"
        );
    }

    #[test]
    fn firmware_settings() {
        assert_eq!(
            cmdline_tokens(),
            vec!["cgroup_enable=memory", "cgroup_memory=1"]
        );
        assert_eq!(
            config_settings(),
            vec![("arm_64bit".to_string(), "1".to_string())]
        );
        assert_eq!(
            pi5_4k_pages_settings(),
            vec![("kernel".to_string(), "kernel8.img".to_string())]
        );
    }

    #[test]
    fn swap_off_masks_dphys() {
        assert!(swap_off_ops().contains(&SwapOffOp::MaskUnit("dphys-swapfile.service")));
        assert_eq!(
            SwapOffOp::MaskUnit("dphys-swapfile.service").mask_link(),
            Some((
                "/etc/systemd/system/dphys-swapfile.service".to_string(),
                "/dev/null"
            ))
        );
    }
}
