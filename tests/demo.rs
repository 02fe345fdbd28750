//! `make demo`'s path (tests/fixtures/demo.sh, which the Makefile runs) with the built binary:
//! it must succeed offline, put every container image and the .debs in the cards, and warn of
//! nothing a user cannot act on (issue 15): the only warnings are the one-line summaries of
//! what `--allow-unpinned` recorded (naming the lock), and every WARN of `piforge check` says
//! what to change in cluster.yaml. The check lines are aligned.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

#[test]
fn demo_builds_whole_cards_and_warns_only_of_what_a_user_can_change() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(fixtures())
        .arg(&demo)
        .arg(env!("CARGO_BIN_EXE_piforge"))
        .arg("1.36.4")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n--\n{stderr}");

    // Warnings: the unpinned release files and the unpinned images, one line each.
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    for w in &warnings {
        assert!(
            w.contains("unpinned, recorded") && w.contains("piforge.lock"),
            "a warning the demo should not give: {w}"
        );
    }
    assert!(warnings[1].contains("9 images"), "{stderr}");

    // The build table: each column starts at one offset in every row.
    let table: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("pi-") && l.contains(" MiB  sha256 "))
        .collect();
    assert_eq!(table.len(), 3, "{stdout}");
    for needle in ["dist/", " MiB", "sha256 "] {
        let at: Vec<usize> = table.iter().map(|l| l.find(needle).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{needle}: {stdout}");
    }

    // check: nothing failed; each WARN names the cluster.yaml key that changes it.
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("dist/") && l.contains(" passed, "))
        .collect();
    assert_eq!(summaries.len(), 3, "{stdout}");
    let column: Vec<usize> = summaries
        .iter()
        .map(|l| l.find(" passed").unwrap())
        .collect();
    assert!(column.windows(2).all(|w| w[0] == w[1]), "{stdout}");
    for s in &summaries {
        assert!(s.ends_with(" 0 failed"), "{stdout}");
    }
    let warns: Vec<&str> = stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("WARN ") || l.starts_with("FAIL "))
        .collect();
    for w in &warns {
        assert!(
            w.starts_with("WARN") && w.contains("in cluster.yaml"),
            "a WARN that says nothing to change in cluster.yaml: {w}"
        );
    }
    assert!(
        !stdout.contains("needs network") && !stdout.contains("pulled at first boot"),
        "{stdout}"
    );

    // The cards hold the images and the .deb (judged by debugfs, not by piforge).
    let cache = demo.join("cache");
    for (node, images) in [("pi-cp-1", 9), ("pi-w-1", 5), ("pi-w-2", 5)] {
        let img = demo.join(format!("dist/{node}.img"));
        let (_, root) = offsets(&img, &cache);
        let list = debugfs(&img, root, "cat /etc/piforge/images.list");
        let listed = list
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(listed, images, "{node}: {list}");
        let archives = debugfs(&img, root, "ls -p /var/lib/piforge/images");
        assert_eq!(
            archives.matches(".tar/").count(),
            images,
            "{node}: {archives}"
        );
        let debs = debugfs(&img, root, "ls /var/lib/piforge/debs");
        assert!(
            debs.contains("iptables_1.8.11-2_arm64.deb"),
            "{node}: {debs}"
        );
        let (code, text) = e2fsck(&img, root);
        assert_eq!(code, 0, "{node}: e2fsck: {text}");
    }
}
