//! Editors for the boot partition's `cmdline.txt` and `config.txt`: pure string in, string out.

/// Marks the block piforge owns at the end of config.txt.
pub const CONFIG_BEGIN: &str = "# --- piforge: begin (managed block, edits here are replaced) ---";
pub const CONFIG_END: &str = "# --- piforge: end ---";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootCfgError {
    #[error("cmdline.txt must be one line, found {0} non-empty lines")]
    MultiLine(usize),
    #[error("{0:?} is not a single cmdline token (no spaces or newlines allowed)")]
    BadToken(String),
    #[error("{0:?} is not a config.txt setting of the form KEY=VALUE")]
    BadSetting(String),
    #[error("config.txt has a piforge begin marker without an end marker")]
    BrokenBlock,
}

fn check_token(t: &str) -> Result<(), BootCfgError> {
    if t.is_empty() || t.chars().any(char::is_whitespace) {
        return Err(BootCfgError::BadToken(t.to_string()));
    }
    Ok(())
}

/// The key of a cmdline token (`root=PARTUUID=...` -> `root`, `quiet` -> `quiet`).
fn token_key(t: &str) -> &str {
    t.split_once('=').map_or(t, |(k, _)| k)
}

/// Adds and removes kernel command-line tokens, keeping order and every other token.
///
/// A token to add that is already present (exactly) is left where it is, so running twice
/// changes nothing. A `KEY=VALUE` token replaces an existing token with the same key in place
/// (so `cgroup_memory=1` overrides `cgroup_memory=0`), except for keys the kernel accepts more
/// than once (`console`, `cgroup_enable`, ...), which are appended. `remove` takes exact tokens
/// or bare keys (`quiet`, `init`) and removes every match. The result is one line with a single
/// trailing newline.
pub fn edit_cmdline(text: &str, add: &[String], remove: &[String]) -> Result<String, BootCfgError> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() > 1 {
        return Err(BootCfgError::MultiLine(lines.len()));
    }
    let mut tokens: Vec<String> = lines
        .first()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    for r in remove {
        check_token(r)?;
        // An exact token, or for a bare key (`quiet`, `init`) every token with that key.
        let bare_key = !r.contains('=');
        tokens.retain(|t| t != r && !(bare_key && token_key(t) == r));
    }
    const MULTI: [&str; 5] = [
        "console",
        "cgroup_enable",
        "cgroup_disable",
        "modprobe.blacklist",
        "dtoverlay",
    ];
    for a in add {
        check_token(a)?;
        if tokens.iter().any(|t| t == a) {
            continue;
        }
        let key = token_key(a);
        let keyed = a.contains('=') && !MULTI.contains(&key);
        match tokens
            .iter()
            .position(|t| keyed && t.contains('=') && token_key(t) == key)
        {
            Some(i) => tokens[i] = a.clone(),
            None => tokens.push(a.clone()),
        }
    }
    Ok(format!("{}\n", tokens.join(" ")))
}

/// Sets `key=value` settings in config.txt inside one piforge block at the end of the file,
/// opened by an `[all]` line so no conditional section (`[pi5]`, `[cm4]`) swallows it.
///
/// The block is rebuilt from the settings already in it plus `set` (a later value for the same
/// key wins), so running twice changes nothing. Everything outside the block is kept as is.
pub fn edit_config(text: &str, set: &[(String, String)]) -> Result<String, BootCfgError> {
    for (k, v) in set {
        if k.is_empty() || k.contains(['=', '\n', ' ', '[']) || v.contains('\n') {
            return Err(BootCfgError::BadSetting(format!("{k}={v}")));
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let begin = lines.iter().position(|l| l.trim() == CONFIG_BEGIN);
    let (outside, mut settings): (Vec<&str>, Vec<(String, String)>) = match begin {
        None => (lines.clone(), Vec::new()),
        Some(b) => {
            let end = lines[b..]
                .iter()
                .position(|l| l.trim() == CONFIG_END)
                .map(|e| b + e)
                .ok_or(BootCfgError::BrokenBlock)?;
            let inside = lines[b + 1..end]
                .iter()
                .filter(|l| l.trim() != "[all]" && !l.trim().is_empty())
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let mut out: Vec<&str> = lines[..b].to_vec();
            out.extend_from_slice(&lines[end + 1..]);
            (out, inside)
        }
    };
    for (k, v) in set {
        match settings.iter_mut().find(|(sk, _)| sk == k) {
            Some(s) => s.1 = v.clone(),
            None => settings.push((k.clone(), v.clone())),
        }
    }
    let mut out: Vec<String> = outside.iter().map(|l| l.to_string()).collect();
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    if !settings.is_empty() {
        out.push(String::new());
        out.push(CONFIG_BEGIN.to_string());
        out.push("[all]".to_string());
        out.extend(settings.iter().map(|(k, v)| format!("{k}={v}")));
        out.push(CONFIG_END.to_string());
    }
    Ok(format!("{}\n", out.join("\n")))
}

/// Parses `KEY=VALUE` as given on the command line (`--config arm_64bit=1`).
pub fn parse_setting(s: &str) -> Result<(String, String), BootCfgError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(BootCfgError::BadSetting(s.to_string())),
    }
}

/// `text` with every `PARTUUID=<old>-` (any case of the hex id) replaced by
/// `PARTUUID=<new>-`: the references of cmdline.txt and /etc/fstab to an MBR disk id.
pub fn retarget_partuuid(text: &str, old: &str, new: &str) -> String {
    text.replace(
        &format!("PARTUUID={}-", old.to_lowercase()),
        &format!("PARTUUID={new}-"),
    )
    .replace(
        &format!("PARTUUID={}-", old.to_uppercase()),
        &format!("PARTUUID={new}-"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOKWORM: &str = "console=serial0,115200 console=tty1 root=PARTUUID=5a7e0b1c-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

    #[test]
    fn partuuid_references_follow_a_new_disk_id() {
        let fstab = "proc /proc proc defaults 0 0\nPARTUUID=5A7E0B1C-01 /boot/firmware vfat defaults 0 2\nPARTUUID=5a7e0b1c-02 / ext4 defaults,noatime 0 1\n";
        let out = retarget_partuuid(fstab, "5a7e0b1c", "0000beef");
        assert_eq!(out.matches("PARTUUID=0000beef-0").count(), 2, "{out}");
        assert!(!out.to_lowercase().contains("5a7e0b1c"), "{out}");
        let cmd = retarget_partuuid(BOOKWORM, "5A7E0B1C", "0000beef");
        assert!(cmd.contains("root=PARTUUID=0000beef-02 "), "{cmd}");
        // Another disk's id is left alone.
        assert_eq!(
            retarget_partuuid(BOOKWORM, "11111111", "0000beef"),
            BOOKWORM
        );
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cmdline_add_is_idempotent_and_keeps_order() {
        let add = v(&["cgroup_enable=memory", "cgroup_memory=1"]);
        let once = edit_cmdline(BOOKWORM, &add, &[]).unwrap();
        let twice = edit_cmdline(&once, &add, &[]).unwrap();
        assert_eq!(once, twice);
        assert!(once.starts_with("console=serial0,115200 console=tty1 root=PARTUUID=5a7e0b1c-02 "));
        assert!(once.ends_with(
            "init=/usr/lib/raspberrypi-sys-mods/firstboot cgroup_enable=memory cgroup_memory=1\n"
        ));
        assert_eq!(once.matches("cgroup_enable=memory").count(), 1);
        assert_eq!(once.lines().count(), 1);
    }

    #[test]
    fn cmdline_remove_by_token_and_key_and_replace_by_key() {
        let out = edit_cmdline(
            BOOKWORM,
            &v(&["rootwait", "fsck.repair=no"]),
            &v(&["quiet", "init"]),
        )
        .unwrap();
        assert!(!out.contains("quiet"));
        assert!(!out.contains("init="));
        assert!(out.contains("rootfstype=ext4 fsck.repair=no rootwait"));
        assert!(out.contains("root=PARTUUID=5a7e0b1c-02"));
        // console may appear several times: a new one is appended, not substituted.
        let out = edit_cmdline(BOOKWORM, &v(&["console=ttyAMA0,115200"]), &[]).unwrap();
        assert_eq!(out.matches("console=").count(), 3);
    }

    #[test]
    fn cmdline_rejects_bad_input() {
        assert_eq!(
            edit_cmdline("a\nb\n", &[], &[]),
            Err(BootCfgError::MultiLine(2))
        );
        assert!(matches!(
            edit_cmdline(BOOKWORM, &v(&["a b"]), &[]),
            Err(BootCfgError::BadToken(_))
        ));
        // No trailing newline in, exactly one out.
        assert_eq!(edit_cmdline("rootwait", &[], &[]).unwrap(), "rootwait\n");
    }

    const CONFIG: &str = "dtparam=audio=on\narm_64bit=1\n\n[cm4]\notg_mode=1\n\n[pi5]\ndtoverlay=dwc2,dr_mode=host\n\n[all]\n";

    #[test]
    fn config_block_after_all_and_idempotent() {
        let set = vec![
            ("arm_64bit".to_string(), "1".to_string()),
            ("kernel".to_string(), "kernel8.img".to_string()),
        ];
        let once = edit_config(CONFIG, &set).unwrap();
        let twice = edit_config(&once, &set).unwrap();
        assert_eq!(once, twice);
        let lines: Vec<&str> = once.lines().collect();
        let b = lines.iter().position(|l| *l == CONFIG_BEGIN).unwrap();
        assert_eq!(lines[b + 1], "[all]");
        assert_eq!(&lines[b + 2..b + 4], &["arm_64bit=1", "kernel=kernel8.img"]);
        assert_eq!(lines.last(), Some(&CONFIG_END));
        assert!(once.starts_with("dtparam=audio=on\narm_64bit=1\n\n[cm4]"));
        // A later run with another value replaces it in the block, keeps the others.
        let third = edit_config(&once, &[("kernel".into(), "kernel_2712.img".into())]).unwrap();
        assert!(third.contains("kernel=kernel_2712.img\n"));
        assert!(!third.contains("kernel=kernel8.img"));
        assert!(third.contains("[all]\narm_64bit=1\nkernel=kernel_2712.img\n# --- piforge: end"));
        assert_eq!(third.matches(CONFIG_BEGIN).count(), 1);
    }

    #[test]
    fn config_rejects_bad_settings() {
        assert!(parse_setting("novalue").is_err());
        assert_eq!(parse_setting("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(edit_config("", &[("a b".into(), "1".into())]).is_err());
        assert_eq!(
            edit_config(&format!("x=1\n{CONFIG_BEGIN}\n[all]\n"), &[]),
            Err(BootCfgError::BrokenBlock)
        );
    }
}
