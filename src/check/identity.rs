//! What must differ between nodes (machine-id, ssh host keys) and the Pi 5 kernel choice.

use super::*;

// ---------------------------------------------------------------------------------------------
// 9. per-node identity

pub(super) fn identity(fs: &dyn RootFiles) -> Result<Vec<CheckItem>, String> {
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

    out.push(ssh_host_keys(fs)?);

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

/// No host key every card would share. A key is fine when it is the pair piforge wrote for
/// one node (its marker names the node and the key's fingerprint, and the pair matches it);
/// that no other card holds the same key cannot be told from one image, so the reason says
/// where to compare (the build's `secrets/known_hosts`).
fn ssh_host_keys(fs: &dyn RootFiles) -> Result<CheckItem, String> {
    use crate::payload::paths::{SSH_HOST_KEY, SSH_HOST_KEY_MARKER, SSH_HOST_KEY_PUB};
    const ID: &str = "ssh-host-keys";
    const TITLE: &str = "no shared ssh host keys";
    const WHERE: &str = "/etc/ssh/ssh_host_*";
    let keys: Vec<String> = fs
        .list("/etc/ssh")?
        .into_iter()
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    if keys.is_empty() {
        return Ok(item(
            ID,
            TITLE,
            Status::Pass,
            "no ssh host keys in the image",
            WHERE,
        ));
    }
    let marker = fs
        .read_string(SSH_HOST_KEY_MARKER)?
        .and_then(|t| crate::pki::parse_host_key_marker(&t));
    let Some((node, fingerprint)) = marker else {
        return Ok(item(
            ID,
            TITLE,
            Status::Fail,
            format!("every node would share {}; remove them", join(&keys)),
            WHERE,
        ));
    };
    let ours = [file_name(SSH_HOST_KEY), file_name(SSH_HOST_KEY_PUB)];
    let others: Vec<String> = keys
        .iter()
        .filter(|k| !ours.contains(&k.as_str()))
        .cloned()
        .collect();
    if !others.is_empty() {
        return Ok(item(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "besides the key piforge wrote for node {node}, every node would share {}; \
                 remove them",
                join(&others)
            ),
            WHERE,
        ));
    }
    let private = fs.read_string(SSH_HOST_KEY)?.unwrap_or_default();
    let public = fs.read_string(SSH_HOST_KEY_PUB)?.unwrap_or_default();
    Ok(
        match crate::pki::installed_pair_fingerprint(&private, &public) {
            Err(why) => item(
                ID,
                TITLE,
                Status::Fail,
                format!("the host key piforge wrote for node {node} is damaged: {why}"),
                SSH_HOST_KEY,
            ),
            Ok(fp) if fp != fingerprint => item(
                ID,
                TITLE,
                Status::Fail,
                format!(
                    "the host key is {fp}, not the {fingerprint} piforge wrote for node {node}: \
                     it was replaced after the build"
                ),
                SSH_HOST_KEY,
            ),
            Ok(fp) => item(
                ID,
                TITLE,
                Status::Pass,
                format!(
                    "only the host key piforge made for node {node} ({fp}); one image cannot \
                     show that no other card has it: compare with the build's \
                     secrets/known_hosts (`ssh-keygen -lf`)"
                ),
                SSH_HOST_KEY,
            ),
        },
    )
}

/// The file name of a path under /etc/ssh.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

// ---------------------------------------------------------------------------------------------
// 10. Pi 5 page size

/// The `kernel=` setting a Pi 5 reads from config.txt: the last one under `[all]`, `[pi5]` or
/// before any section (other model or conditional filters do not apply to every Pi 5 boot).
pub(super) fn pi5_kernel(config: &str) -> Option<String> {
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

pub(super) fn pi5_pages(config: Option<&str>) -> CheckItem {
    const ID: &str = "pi5-page-size";
    const TITLE: &str = "Pi 5 4K-page kernel";
    const WHY: &str = "a Pi 5 boots the 16K-page kernel_2712.img, on which some container images \
                       (jemalloc, some JITs) crash; for Pi 5 nodes set `image.pi5_4k_pages: \
                       true` in cluster.yaml (kernel=kernel8.img in config.txt)";
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
        Some(Some(k)) if k == "kernel_2712.img" => item(
            ID,
            TITLE,
            Status::Warn,
            format!("kernel={k}; {WHY}"),
            "config.txt: kernel=",
        ),
        // Ubuntu's config.txt boots `vmlinuz`, its own kernel: piforge does not choose its
        // page size (image.pi5_4k_pages is refused on such a base).
        Some(Some(k)) => item(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "kernel={k}: the base boots a kernel of its own, whose page size piforge does not \
                 set (image.pi5_4k_pages applies to Raspberry Pi OS only); if containers crash \
                 on a Pi 5 with jemalloc page-size errors, check `getconf PAGESIZE` on the node"
            ),
            "config.txt: kernel=",
        ),
        Some(None) => item(ID, TITLE, Status::Warn, WHY, "config.txt: kernel="),
    }
}
