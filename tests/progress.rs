//! Progress (issue 15 item 1): bars on a terminal (through a pseudo-terminal made by
//! `script`), one plain line per long step off a terminal, nothing with `--quiet`.

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::Command;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

fn spec(dir: &Path) -> std::path::PathBuf {
    let spec = dir.join("cluster.yaml");
    fs::write(
        &spec,
        format!(
            "name: lab\nimage:\n  source: {}\nkubernetes:\n  version: \"1.34.11\"\n\
             network:\n  gateway: 192.168.7.1\n  dns: [192.168.7.1]\nuser: pi\n\
             ssh_authorized_keys: [\"{KEY}\"]\nnodes:\n  - name: cp\n    role: control-plane\n    address: 192.168.7.10/24\n\
             \x20 - name: w1\n    role: worker\n",
            fixture("trixie.img.xz").display()
        ),
    )
    .unwrap();
    spec
}

fn build_args(dir: &Path, arts: &Path, out: &str) -> Vec<String> {
    [
        "build",
        dir.join("cluster.yaml").to_str().unwrap(),
        "--out",
        dir.join(out).to_str().unwrap(),
        "--artifacts",
        arts.to_str().unwrap(),
        "--allow-unpinned",
        // The raw image kept, and a compressed copy for the compress step (zst: the fastest).
        "--format",
        "img",
        "--format",
        "zst",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs piforge inside a pseudo-terminal (`script -qec`); returns what the terminal showed.
fn in_a_terminal(args: &[String], cache: &Path) -> (bool, String) {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_piforge").to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let out = Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .env("PIFORGE_CACHE", cache)
        .env("TERM", "xterm")
        .env("COLUMNS", "160")
        .output()
        .expect("script (bsdutils) runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn plain_lines_off_a_terminal_bars_on_one_and_quiet_silences_both() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), "1.34.11");
    spec(tmp.path());

    // Off a terminal: one line per step, each with its size, time and throughput.
    let r = Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(build_args(tmp.path(), &arts, "dist"))
        .env("PIFORGE_CACHE", &cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    for step in [
        "decompress",
        "payload init-control-plane",
        "payload worker",
        "copy cp",
        "copy w1",
        "compress cp.img.zst",
        "compress w1.img.zst",
    ] {
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with(&format!("piforge: {step}: ")))
            .collect();
        assert_eq!(lines.len(), 1, "{step}: {err}");
        assert!(
            lines[0].contains(" in ") && lines[0].contains(" s, ") && lines[0].ends_with("/s"),
            "{}",
            lines[0]
        );
    }
    // No terminal escapes in a log.
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");

    // --quiet: none of them (the one warning, the unpinned artifacts, stays).
    let mut quiet = vec!["--quiet".to_string()];
    quiet.extend(build_args(tmp.path(), &arts, "dist-quiet"));
    let r = Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(&quiet)
        .env("PIFORGE_CACHE", &cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("piforge: warning: ")),
        "{err}"
    );

    // On a terminal: bars (drawn with escapes, throughput and ETA), not log lines.
    let fresh = tmp.path().join("cache2");
    let (ok, shown) = in_a_terminal(&build_args(tmp.path(), &arts, "dist-tty"), &fresh);
    assert!(ok, "{shown}");
    for step in [
        "decompress",
        "payload init-control-plane",
        "copy cp",
        "copy w1",
        "compress cp.img.zst",
        "compress w1.img.zst",
    ] {
        assert!(shown.contains(step), "{step}: {shown}");
    }
    // Each bar is drawn in its own style from the start: never once in indicatif's default
    // (a full bar and `0/0`) before it.
    assert!(
        !shown.contains("0/0"),
        "a bar in the default style: {shown:?}"
    );
    assert!(shown.contains("eta") && shown.contains("/s"), "{shown}");
    assert!(shown.contains('\x1b'), "no terminal drawing: {shown:?}");
    assert!(!shown.contains("piforge: copy cp: "), "{shown}");
    assert!(tmp.path().join("dist-tty/w1.img").is_file());

    // --quiet on a terminal: no bar.
    let mut quiet = vec!["-q".to_string()];
    quiet.extend(build_args(tmp.path(), &arts, "dist-tty-quiet"));
    let (ok, shown) = in_a_terminal(&quiet, &fresh);
    assert!(ok, "{shown}");
    assert!(
        !shown.contains("copy cp") && !shown.contains("compress cp") && !shown.contains("eta"),
        "{shown}"
    );
}
