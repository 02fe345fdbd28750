//! The text forms of reports, for people: what `piforge inspect` and `piforge check` print
//! without `--json`. Above the fact-finding (`inspect`) and the rules (`check`); nothing
//! that reads or writes images imports it.

use std::fmt::Write;

use crate::check::{CheckItem, Status};
use crate::inspect::Report;
use crate::size::human;

/// An error and its causes as one sentence, `outer: cause: cause`, each message once: a
/// cause whose text the message before it already holds (a thiserror `"...: {0}"` over a
/// `#[from]` source, which `{:#}` would print twice, as in "partitions 1 and 2 overlap:
/// partitions 1 and 2 overlap") is left out.
pub fn error_sentence(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        cause = c.source();
    }
    out
}

/// `piforge inspect`: one aligned line per fact.
pub fn inspect(r: &Report) -> String {
    let mut s = String::new();
    let i = &r.input;
    let _ = writeln!(
        s,
        "image        {} ({}{})",
        i.path,
        i.format,
        if i.verified { ", sha256 verified" } else { "" }
    );
    let _ = writeln!(
        s,
        "sha256       {}",
        i.sha256.as_deref().unwrap_or("(not computed)")
    );
    let _ = writeln!(
        s,
        "size         {} ({})",
        i.image_bytes,
        human(i.image_bytes)
    );
    let os = r.os.as_ref();
    let _ = writeln!(
        s,
        "os           {}",
        os.and_then(|o| o.pretty_name.clone())
            .unwrap_or_else(|| "unknown".into())
    );
    let _ = writeln!(s, "table        {}, disk id {}", r.scheme, r.disk_id);
    let _ = writeln!(s, "partitions");
    for p in &r.partitions {
        let role = if p.index == r.boot_partition {
            "  boot"
        } else if p.index == r.root_partition {
            "  root"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  {}  start {:>11}  size {:>11} ({:>9})  type {:<8} {:<6} label {}{}",
            p.index,
            p.start_bytes,
            p.size_bytes,
            human(p.size_bytes),
            p.type_id,
            p.filesystem.to_string(),
            p.label.as_deref().unwrap_or("-"),
            role
        );
    }
    let _ = writeln!(
        s,
        "cmdline      {}",
        r.cmdline.as_deref().unwrap_or("(no cmdline.txt)")
    );
    let ci = &r.cloud_init;
    let _ = writeln!(
        s,
        "cloud-init   {}{}",
        if ci.installed {
            "installed"
        } else {
            "not installed"
        },
        match &ci.seed_dir {
            Some(d) => format!(
                ", NoCloud seed in {d}{}",
                if ci.seed_on_boot_partition {
                    " (boot partition)"
                } else {
                    ""
                }
            ),
            None => String::new(),
        }
    );
    let _ = writeln!(
        s,
        "swap         {} ({}): {}",
        serde_json::to_value(&r.swap.mechanism)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        if r.swap.active { "active" } else { "off" },
        r.swap.detail
    );
    let _ = writeln!(s, "machine-id   {}", r.machine_id);
    let _ = writeln!(s, "ext4         {}", r.ext4_features.join(" "));
    let _ = writeln!(
        s,
        "free         boot {}, root {}",
        human(r.free_bytes.boot),
        human(r.free_bytes.root)
    );
    s
}

/// `piforge check`: aligned columns of status, title, reason (what was read in brackets),
/// then a summary line.
pub fn check(items: &[CheckItem]) -> String {
    let w = items.iter().map(|i| i.title.len()).max().unwrap_or(0);
    let mut out = String::new();
    for i in items {
        let _ = writeln!(
            out,
            "{}  {:<w$}  {} [{}]",
            i.status.label(),
            i.title,
            i.reason,
            i.looked_at
        );
    }
    let count = |s| items.iter().filter(|i| i.status == s).count();
    let warnings = count(Status::Warn);
    let _ = writeln!(
        out,
        "{} passed, {warnings} {}, {} failed",
        count(Status::Pass),
        if warnings == 1 { "warning" } else { "warnings" },
        count(Status::Fail)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::error_sentence;

    #[derive(Debug, thiserror::Error)]
    enum Leaf {
        #[error("partitions 1 and 2 overlap")]
        Overlap,
    }

    #[derive(Debug, thiserror::Error)]
    enum Mid {
        #[error("root filesystem: {0}")]
        Repeats(#[from] Leaf),
        #[error("reading the table failed")]
        Adds(#[source] Leaf),
    }

    #[test]
    fn each_message_once() {
        let e = anyhow::Error::from(Mid::Repeats(Leaf::Overlap)).context("x.img");
        assert_eq!(
            error_sentence(e.as_ref()),
            "x.img: root filesystem: partitions 1 and 2 overlap"
        );
        assert_eq!(format!("{e:#}").matches("overlap").count(), 2, "{e:#}");
        let e = anyhow::Error::from(Mid::Adds(Leaf::Overlap));
        assert_eq!(
            error_sentence(e.as_ref()),
            "reading the table failed: partitions 1 and 2 overlap"
        );
        let e = anyhow::anyhow!("one");
        assert_eq!(error_sentence(e.as_ref()), "one");
    }
}
