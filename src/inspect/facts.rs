//! What an image's files say about it: OS release, cloud-init, swap, fstab, machine id.
//! Pure: everything is read through [`RootFiles`], so it is tested on in-memory trees.

use serde::Serialize;

pub use crate::fs::RootFiles;
use crate::spec::yaml::{self, Item, Kind};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    pub id: Option<String>,
    pub id_like: Option<String>,
    pub version_id: Option<String>,
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
}

/// Parses os-release(5): `KEY=value` lines, values optionally quoted.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => os.id = Some(v),
            "ID_LIKE" => os.id_like = Some(v),
            "VERSION_ID" => os.version_id = Some(v),
            "VERSION_CODENAME" => os.version_codename = Some(v),
            "PRETTY_NAME" => os.pretty_name = Some(v),
            _ => {}
        }
    }
    os
}

pub fn os_release(fs: &dyn RootFiles) -> Result<Option<OsRelease>, String> {
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(t) = fs.read_string(p)? {
            return Ok(Some(parse_os_release(&t)));
        }
    }
    Ok(None)
}

/// Where cloud-init looks for its NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudInit {
    pub installed: bool,
    /// The directory of the running system that holds the seed (`seedfrom: file:///boot/firmware`),
    /// or `LABEL=<label>` when NoCloud finds it by filesystem label (`fs_label: system-boot`).
    pub seed_dir: Option<String>,
    /// True when the seed lives on the image's boot (FAT) partition.
    pub seed_on_boot_partition: bool,
    /// The `datasource_list` line as configured, if any.
    pub datasource_list: Option<String>,
    /// The config files that said so.
    pub configured_in: Vec<String>,
}

/// Where the boot partition is mounted on the running system, from fstab.
pub fn boot_mount(fstab: &[FstabEntry]) -> Option<String> {
    fstab
        .iter()
        .find(|e| e.fstype == "vfat" && e.mountpoint.starts_with("/boot"))
        .map(|e| e.mountpoint.clone())
}

pub fn cloud_init(
    fs: &dyn RootFiles,
    boot_mountpoint: Option<&str>,
    boot_label: Option<&str>,
) -> Result<CloudInit, String> {
    let installed = fs.exists("/usr/bin/cloud-init")? || fs.exists("/etc/cloud/cloud.cfg")?;
    let mut files = vec!["/etc/cloud/cloud.cfg".to_string()];
    for name in fs.list("/etc/cloud/cloud.cfg.d")? {
        if name.ends_with(".cfg") {
            files.push(format!("/etc/cloud/cloud.cfg.d/{name}"));
        }
    }
    let mut seed_dir = None;
    let mut datasource_list = None;
    let mut configured_in = Vec::new();
    // Later files override earlier ones, as cloud-init merges them in lexical order.
    for f in &files {
        let Some(text) = fs.read_string(f)? else {
            continue;
        };
        // A file that is not YAML is skipped, as cloud-init skips it (with a warning).
        let Ok(Some(doc)) = yaml::parse(&text) else {
            continue;
        };
        let mut said = false;
        for (key, value) in entries(&doc) {
            match key {
                "datasource_list" => {
                    datasource_list = Some(flow_text(value));
                    said = true;
                }
                "datasource" => {
                    let nocloud = entries(value).filter(|(k, _)| *k == "NoCloud");
                    for (k, v) in nocloud.flat_map(|(_, v)| entries(v)) {
                        match (k, v.as_str()) {
                            ("seedfrom", Some(v)) => {
                                if let Some(dir) = v.strip_prefix("file://") {
                                    let dir = dir.trim_end_matches('/');
                                    seed_dir = Some(if dir.is_empty() {
                                        "/".into()
                                    } else {
                                        dir.into()
                                    });
                                    said = true;
                                }
                            }
                            ("fs_label", Some(v)) if !v.is_empty() => {
                                seed_dir = Some(format!("LABEL={v}"));
                                said = true;
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if said {
            configured_in.push(f.clone());
        }
    }
    let seed_on_boot_partition = match &seed_dir {
        Some(d) if d.starts_with("LABEL=") => {
            boot_label.is_some_and(|b| d["LABEL=".len()..].eq_ignore_ascii_case(b))
        }
        Some(d) => boot_mountpoint.is_some_and(|m| m == d),
        None => false,
    };
    Ok(CloudInit {
        installed,
        seed_dir,
        seed_on_boot_partition,
        datasource_list,
        configured_in,
    })
}

/// The entries of a mapping with scalar keys, in order (nothing for anything else).
fn entries(item: &Item) -> impl Iterator<Item = (&str, &Item)> {
    let list: &[(Item, Item)] = match &item.kind {
        Kind::Map(e) => e,
        _ => &[],
    };
    list.iter().filter_map(|(k, v)| Some((k.as_str()?, v)))
}

/// A value as one line: a scalar's text, a list as `[a, b]`, a mapping as `{k: v}`.
fn flow_text(item: &Item) -> String {
    match &item.kind {
        Kind::Scalar(s) => s.text.clone(),
        Kind::Seq(items) => {
            let parts: Vec<String> = items.iter().map(flow_text).collect();
            format!("[{}]", parts.join(", "))
        }
        Kind::Map(e) => {
            let parts: Vec<String> = e
                .iter()
                .map(|(k, v)| format!("{}: {}", flow_text(k), flow_text(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapMechanism {
    /// Raspberry Pi OS bookworm: `/etc/dphys-swapfile`.
    DphysSwapfile,
    /// Raspberry Pi OS trixie: `rpi-swap` (zram or file).
    RpiSwap,
    /// systemd's zram-generator.
    ZramGenerator,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Swap {
    pub mechanism: SwapMechanism,
    /// Whether it would make swap on boot as configured.
    pub active: bool,
    /// What decided it (file and setting).
    pub detail: String,
}

const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";

/// Whether `unit` is masked in `/etc/systemd/system`: a symlink to `/dev/null`, or (as
/// systemd.unit(5) also counts it) an empty file there. A symlink whose target is missing from
/// the image (its `/dev` is empty) reads as `None`, and counts as masked too, because systemd
/// could not load it either.
pub fn unit_masked(fs: &dyn RootFiles, unit: &str) -> Result<bool, String> {
    let path = format!("/etc/systemd/system/{unit}");
    if let Some(target) = fs.read_link(&path)? {
        if target == "/dev/null" {
            return Ok(true);
        }
    }
    if !fs.exists(&path)? {
        return Ok(false);
    }
    Ok(match fs.read(&path)? {
        None => true,
        Some(b) => b.is_empty(),
    })
}

/// How swap is set up on the image. Raspberry Pi OS bookworm uses dphys-swapfile and trixie
/// rpi-swap; when both are present (for instance rpi-swap settings layered onto bookworm) the
/// first that is active is reported, so one still-enabled mechanism is never hidden.
/// zram-generator alone is considered only when neither is present (rpi-swap drives zram
/// itself on trixie).
pub fn swap(fs: &dyn RootFiles) -> Result<Swap, String> {
    let found: Vec<Swap> = [rpi_swap(fs)?, dphys_swapfile(fs)?]
        .into_iter()
        .flatten()
        .collect();
    if let Some(s) = found.iter().find(|s| s.active).or(found.first()) {
        return Ok(s.clone());
    }
    for p in [
        "/etc/systemd/zram-generator.conf",
        "/usr/lib/systemd/zram-generator.conf",
    ] {
        if let Some(t) = fs.read_string(p)? {
            let active = t.lines().any(|l| l.trim().starts_with("[zram"));
            return Ok(Swap {
                mechanism: SwapMechanism::ZramGenerator,
                active,
                detail: p.to_string(),
            });
        }
    }
    Ok(Swap {
        mechanism: SwapMechanism::None,
        active: false,
        detail: "no swap configuration found".into(),
    })
}

/// trixie: rpi-swap reads /etc/rpi/swap.conf then /etc/rpi/swap.conf.d/*.conf.
fn rpi_swap(fs: &dyn RootFiles) -> Result<Option<Swap>, String> {
    let mut rpi_conf = Vec::new();
    if fs.exists("/etc/rpi/swap.conf")? {
        rpi_conf.push("/etc/rpi/swap.conf".to_string());
    }
    for n in fs.list("/etc/rpi/swap.conf.d")? {
        if n.ends_with(".conf") {
            rpi_conf.push(format!("/etc/rpi/swap.conf.d/{n}"));
        }
    }
    if rpi_conf.is_empty() && !fs.exists("/usr/lib/systemd/system/rpi-swap.service")? {
        return Ok(None);
    }
    let mut mechanism = "zram".to_string();
    let mut from = "default".to_string();
    for f in &rpi_conf {
        if let Some(t) = fs.read_string(f)? {
            for l in t.lines() {
                if let Some(v) = l.trim().strip_prefix("Mechanism=") {
                    mechanism = v.trim().to_string();
                    from = f.clone();
                }
            }
        }
    }
    Ok(Some(Swap {
        mechanism: SwapMechanism::RpiSwap,
        active: mechanism != "none",
        detail: format!("Mechanism={mechanism} ({from})"),
    }))
}

/// bookworm: dphys-swapfile.service, enabled in multi-user.target, sized by /etc/dphys-swapfile.
fn dphys_swapfile(fs: &dyn RootFiles) -> Result<Option<Swap>, String> {
    if !fs.exists("/etc/dphys-swapfile")? {
        return Ok(None);
    }
    let masked = unit_masked(fs, "dphys-swapfile.service")?;
    let enabled = fs.exists(&format!("{WANTS}/dphys-swapfile.service"))?;
    let size = fs
        .read_string("/etc/dphys-swapfile")?
        .and_then(|t| {
            t.lines()
                .filter_map(|l| l.trim().strip_prefix("CONF_SWAPSIZE="))
                .next_back()
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "default".into());
    let state = if masked {
        "masked"
    } else if enabled {
        "enabled"
    } else {
        "not enabled"
    };
    Ok(Some(Swap {
        mechanism: SwapMechanism::DphysSwapfile,
        active: !masked && enabled && size != "0",
        detail: format!("CONF_SWAPSIZE={size}, dphys-swapfile.service {state}"),
    }))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FstabEntry {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
}

pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| FstabEntry {
                device: f[0].to_string(),
                mountpoint: f[1].to_string(),
                fstype: f[2].to_string(),
                options: f.get(3).unwrap_or(&"defaults").to_string(),
            })
        })
        .collect()
}

/// The state of `/etc/machine-id`: "empty" and "uninitialized" make systemd generate one on
/// first boot; "set" means every card from this image would share one id.
pub fn machine_id(fs: &dyn RootFiles) -> Result<String, String> {
    Ok(match fs.read_string("/etc/machine-id")? {
        None => "missing".into(),
        Some(t) if t.trim().is_empty() => "empty".into(),
        Some(t) if t.trim() == "uninitialized" => "uninitialized".into(),
        Some(_) => "set".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::root_files::tests::{LinkFiles, MemFiles};

    #[test]
    fn masked_dphys_swapfile_is_off() {
        let wants = "/etc/systemd/system/multi-user.target.wants/dphys-swapfile.service";
        let base = || {
            LinkFiles::new()
                .file("/etc/dphys-swapfile", "CONF_SWAPSIZE=512\n")
                .file("/lib/systemd/system/dphys-swapfile.service", "[Unit]\n")
                .link(wants, "/lib/systemd/system/dphys-swapfile.service")
                .dir("/dev")
        };
        assert!(swap(&base()).unwrap().active);
        // masked, even while still linked into multi-user.target.wants
        let masked = base().link("/etc/systemd/system/dphys-swapfile.service", "/dev/null");
        assert!(unit_masked(&masked, "dphys-swapfile.service").unwrap());
        let s = swap(&masked).unwrap();
        assert!(!s.active, "{s:?}");
        assert!(s.detail.contains("masked"), "{s:?}");
        // a reader without read_link still sees the dangling /dev/null link as masked
        let m = MemFiles::with(&[
            ("/etc/dphys-swapfile", "CONF_SWAPSIZE=512\n"),
            (wants, ""),
            ("/etc/systemd/system/dphys-swapfile.service", ""),
        ]);
        assert!(!swap(&m).unwrap().active);
        // an override unit with content is not a mask
        let over = base().file("/etc/systemd/system/dphys-swapfile.service", "[Unit]\n");
        assert!(!unit_masked(&over, "dphys-swapfile.service").unwrap());
        assert!(swap(&over).unwrap().active);
    }

    #[test]
    fn rpi_swap_settings_do_not_hide_an_active_dphys_swapfile() {
        // piforge's rpi-swap drop-in layered onto bookworm, without masking dphys-swapfile
        let fs = MemFiles::with(&[
            ("/etc/dphys-swapfile", "CONF_SWAPSIZE=512\n"),
            (
                "/etc/systemd/system/multi-user.target.wants/dphys-swapfile.service",
                "[Unit]\n",
            ),
            (
                "/etc/rpi/swap.conf.d/90-piforge.conf",
                "[Main]\nMechanism=none\n",
            ),
        ]);
        let s = swap(&fs).unwrap();
        assert_eq!(s.mechanism, SwapMechanism::DphysSwapfile);
        assert!(s.active);
    }

    #[test]
    fn os_release_quoted_and_bare() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\nVERSION_CODENAME=trixie\nVERSION_ID=\"13\"\n",
        );
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_codename.as_deref(), Some("trixie"));
        assert_eq!(os.version_id.as_deref(), Some("13"));
    }

    #[test]
    fn cloud_init_seedfrom_and_fs_label() {
        let fs = MemFiles::with(&[
            ("/usr/bin/cloud-init", "#!/bin/sh"),
            ("/etc/cloud/cloud.cfg", "users: [default]\n"),
            (
                "/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg",
                "datasource_list: [NoCloud, None]\ndatasource:\n  NoCloud:\n    seedfrom: file:///boot/firmware/\n",
            ),
        ]);
        let c = cloud_init(&fs, Some("/boot/firmware"), Some("bootfs")).unwrap();
        assert!(c.installed);
        assert_eq!(c.seed_dir.as_deref(), Some("/boot/firmware"));
        assert!(c.seed_on_boot_partition);
        assert_eq!(c.datasource_list.as_deref(), Some("[NoCloud, None]"));

        let fs = MemFiles::with(&[
            ("/etc/cloud/cloud.cfg", "x: 1\n"),
            (
                "/etc/cloud/cloud.cfg.d/99-fake_cloud.cfg",
                "datasource: { NoCloud: { fs_label: system-boot } }\n",
            ),
        ]);
        let c = cloud_init(&fs, Some("/boot/firmware"), Some("system-boot")).unwrap();
        assert_eq!(c.seed_dir.as_deref(), Some("LABEL=system-boot"));
        assert!(c.seed_on_boot_partition);

        let c = cloud_init(&MemFiles::default(), None, None).unwrap();
        assert!(!c.installed);
        assert_eq!(c.seed_dir, None);
    }

    #[test]
    fn cloud_cfg_files_are_read_as_yaml() {
        let fs = MemFiles::with(&[
            ("/usr/bin/cloud-init", "#!/bin/sh"),
            // Block lists, a comment that mentions a seed, a seed outside NoCloud.
            (
                "/etc/cloud/cloud.cfg",
                "# seedfrom: file:///nowhere/\ndatasource_list:\n  - NoCloud\n  - None\n\
                 datasource:\n  Ec2:\n    seedfrom: file:///ec2/\n",
            ),
            // Not YAML: skipped, as cloud-init skips it.
            (
                "/etc/cloud/cloud.cfg.d/10_broken.cfg",
                "datasource: {NoCloud: {fs_label: x}\n",
            ),
            // Later files win.
            (
                "/etc/cloud/cloud.cfg.d/90_seed.cfg",
                "datasource:\n  NoCloud:\n    seedfrom: \"file:///boot/firmware/\"\n",
            ),
        ]);
        let c = cloud_init(&fs, Some("/boot/firmware"), None).unwrap();
        assert_eq!(c.datasource_list.as_deref(), Some("[NoCloud, None]"));
        assert_eq!(c.seed_dir.as_deref(), Some("/boot/firmware"));
        assert!(c.seed_on_boot_partition);
        assert_eq!(
            c.configured_in,
            ["/etc/cloud/cloud.cfg", "/etc/cloud/cloud.cfg.d/90_seed.cfg"]
        );
        // Only the comment and the Ec2 seed: no NoCloud seed.
        let only_base = MemFiles::with(&[(
            "/etc/cloud/cloud.cfg",
            "# seedfrom: file:///nowhere/\ndatasource:\n  Ec2:\n    seedfrom: file:///ec2/\n",
        )]);
        assert_eq!(cloud_init(&only_base, None, None).unwrap().seed_dir, None);
    }

    #[test]
    fn swap_mechanisms() {
        let fs = MemFiles::with(&[
            ("/etc/dphys-swapfile", "CONF_SWAPSIZE=512\n"),
            (
                "/etc/systemd/system/multi-user.target.wants/dphys-swapfile.service",
                "",
            ),
        ]);
        let s = swap(&fs).unwrap();
        assert_eq!(s.mechanism, SwapMechanism::DphysSwapfile);
        assert!(s.active);

        let fs = MemFiles::with(&[
            ("/etc/rpi/swap.conf", "[Main]\nMechanism=zram\n"),
            (
                "/etc/rpi/swap.conf.d/90-piforge.conf",
                "[Main]\nMechanism=none\n",
            ),
        ]);
        let s = swap(&fs).unwrap();
        assert_eq!(s.mechanism, SwapMechanism::RpiSwap);
        assert!(!s.active, "{s:?}");

        assert_eq!(
            swap(&MemFiles::default()).unwrap().mechanism,
            SwapMechanism::None
        );
    }

    #[test]
    fn fstab_and_machine_id() {
        let f = parse_fstab(
            "proc /proc proc defaults 0 0\nPARTUUID=5a7e0b1c-01  /boot/firmware  vfat    defaults 0 2\n# c\n",
        );
        assert_eq!(f.len(), 2);
        assert_eq!(boot_mount(&f).as_deref(), Some("/boot/firmware"));
        let fs = MemFiles::with(&[("/etc/machine-id", "")]);
        assert_eq!(machine_id(&fs).unwrap(), "empty");
        let fs = MemFiles::with(&[("/etc/machine-id", "0123456789abcdef0123456789abcdef\n")]);
        assert_eq!(machine_id(&fs).unwrap(), "set");
    }
}
