//! The README's commands, run as written (issue 15 item 6): every fenced block after a
//! `<!-- readme-test: NAME -->` line is run by bash, line by line as a script, in a fresh
//! directory with `piforge` on PATH, against the fixtures.

mod common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::Command;

/// The body of the fenced block that follows `<!-- readme-test: {name} -->`.
fn block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- readme-test: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .unwrap_or_else(|| panic!("{marker} is not followed by a ```sh block"));
    body.split_once("\n```")
        .unwrap_or_else(|| panic!("the block after {marker} is not closed"))
        .0
        .to_string()
}

#[test]
fn offline_flow_runs_as_written() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let script = block(&readme, "offline");
    let tmp = tempfile::tempdir().unwrap();
    // `piforge` on PATH, as after `make install`.
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_piforge"), bin.join("piforge")).unwrap();
    // The release files the user downloaded elsewhere (stand-ins, the template's version).
    stand_in_artifacts(&tmp.path().join("k8s-artifacts"), "1.36.4");
    // The user's edit: the image, and a key of their own in place of the placeholder.
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let key = work.join("id_ed25519");
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "me@laptop",
            "-f",
            key.to_str().unwrap(),
        ],
    );
    let editor = bin.join("editor");
    fs::write(
        &editor,
        format!(
            "#!/bin/sh\nset -e\n\
             sed -i 's|source: ./2025-11-24-raspios-trixie-arm64-lite.img.xz|source: {image}|' \"$1\"\n\
             sed -i \"s|ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDER[A-Za-z]* you@laptop|$(cat {key}.pub)|\" \"$1\"\n",
            image = fixture("trixie.img.xz").display(),
            key = key.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(tmp.path())
        .env("PATH", path)
        .env("EDITOR", &editor)
        .env("PIFORGE_CACHE", tmp.path().join("cache"))
        // The build is offline: any request would go to a closed port.
        .env("https_proxy", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}\n--\n{stdout}\n{stderr}");
    let dist = tmp.path().join("mycluster/dist");
    for n in ["pi-cp-1", "pi-w-1", "pi-w-2"] {
        assert!(dist.join(format!("{n}.img")).is_file(), "{n}: {stderr}");
    }
    // The check ran on the control plane's image and nothing failed.
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    // The unpinned files are one warning, naming the lock. The others are true of this test's
    // inputs and each says what to do: the stand-in artifacts directory holds no container
    // image (`DIR/images/...`), and the fixture base lists no apt source for its OS packages.
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
    let unpinned: Vec<&&str> = warnings.iter().filter(|l| l.contains("unpinned")).collect();
    assert_eq!(unpinned.len(), 1, "{stderr}");
    assert!(unpinned[0].contains("piforge.lock"), "{stderr}");
    for w in &warnings {
        assert!(
            w.contains("unpinned")
                || w.contains("image(s) not in")
                || w.contains("container image(s) are not in the cards")
                || w.contains("OS packages")
                || w.contains("not pinned in"),
            "a warning this flow should not give: {w}"
        );
    }
}
