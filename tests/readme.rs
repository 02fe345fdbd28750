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
    ssh_keygen(&key, "me@laptop");
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
                || w.contains("not pinned in")
                || w.contains("lists no apt source"),
            "a warning this flow should not give: {w}"
        );
    }
}

/// The release files of `k8s` (stand-ins, with their upstream checksum files) and a tiny image
/// per container image of the release, served by `reg` where `--mirror` looks for them.
fn serve_release(reg: &common::registry::Registry, tmp: &Path, k8s: &str) {
    use common::registry::{digest, tiny_image};
    let release = piforge::artifacts::Catalog::builtin()
        .unwrap()
        .release(k8s)
        .unwrap();
    let arts = stand_in_artifacts(&tmp.join("upstream-files"), k8s);
    for spec in release.artifacts() {
        let data = fs::read(arts.join(&spec.file_name)).unwrap();
        if let Some(cu) = &spec.checksum_url {
            let d = digest(&data).trim_start_matches("sha256:").to_string();
            reg.put_file(cu, format!("{d}  {}\n", spec.file_name).into_bytes());
        }
        reg.put_file(&spec.url, data);
    }
    for (n, i) in release.images().iter().enumerate() {
        let r = i.image.to_string();
        reg.put_image(
            &r,
            tiny_image(&format!("bin{n}"), format!("{r}\n").as_bytes(), true),
        );
    }
}

/// A bash run of a README block in `dir` with `bin` first on PATH.
fn run_block(
    script: &str,
    dir: &Path,
    bin: &Path,
    editor: &Path,
    cache: &Path,
) -> (String, String) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("EDITOR", editor)
        .env("PIFORGE_CACHE", cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{script}\n--\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The online route and the other commands (inspect, customize, --verify), as written. The
/// internet is a registry and file server on 127.0.0.1: the `piforge` on PATH is a wrapper
/// that adds `--mirror` (the existing option) to `fetch` and `build`, nothing else.
#[test]
fn online_flow_and_other_commands_run_as_written() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let reg = common::registry::Registry::start();
    serve_release(&reg, tmp.path(), "1.36.4");
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("piforge");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  fetch|build) c=$1; shift; exec {real} \"$c\" --mirror {url} \"$@\" ;;\nesac\nexec {real} \"$@\"\n",
            real = env!("CARGO_BIN_EXE_piforge"),
            url = reg.url()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The upstream image, downloaded beside cluster.yaml under the template's name.
    let work = tmp.path().join("work");
    let cluster = work.join("mycluster");
    fs::create_dir_all(&cluster).unwrap();
    fs::copy(
        fixture("trixie.img.xz"),
        cluster.join("2025-11-24-raspios-trixie-arm64-lite.img.xz"),
    )
    .unwrap();
    // The user's edit: a key of their own in place of the placeholder.
    let key = tmp.path().join("id_ed25519");
    ssh_keygen(&key, "me@laptop");
    let editor = bin.join("editor");
    fs::write(
        &editor,
        format!(
            "#!/bin/sh\nset -e\n\
             sed -i \"s|ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDER[A-Za-z]* you@laptop|$(cat {key}.pub)|\" \"$1\"\n",
            key = key.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cache = tmp.path().join("cache");

    let (stdout, stderr) = run_block(&block(&readme, "online"), &work, &bin, &editor, &cache);
    // Warnings: flannel's manifest recorded (no upstream checksum), and the fixture base's lack
    // of apt sources, said as it is (not "run piforge fetch", which was just run).
    for w in stderr.lines().filter(|l| l.contains("warning:")) {
        assert!(
            (w.contains("unpinned, recorded: flannel") && w.contains("now in the lock"))
                || (w.contains("lists no apt source") && !w.contains("run `piforge fetch")),
            "a warning this flow should not give: {w}"
        );
    }
    for n in ["pi-cp-1", "pi-w-1", "pi-w-2"] {
        assert!(
            cluster.join(format!("dist/{n}.img")).is_file(),
            "{n}: {stderr}"
        );
    }
    assert!(
        stdout.contains("== node layer: pi-cp-1"),
        "the dry run: {stdout}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    // The downloads went to the local server: release files, checksum files and images.
    let log = reg.log().join("\n");
    assert!(
        log.contains("dl.k8s.io/release/v1.36.4/bin/linux/arm64/kubeadm.sha256")
            && log.contains("/v2/pause/manifests/"),
        "{log}"
    );
    let lock = fs::read_to_string(cluster.join("piforge.lock")).unwrap();
    assert!(
        lock.contains("[[image]]") && lock.contains("kube-flannel.yml"),
        "{lock}"
    );

    let (stdout, stderr) = run_block(&block(&readme, "tools"), &cluster, &bin, &editor, &cache);
    assert!(stdout.contains("Debian GNU/Linux 13 (trixie)"), "{stdout}");
    assert!(cluster.join("custom.img").is_file(), "{stderr}");
    assert!(
        stdout.contains("cgroup_enable=memory"),
        "inspect of custom.img shows its cmdline: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("verified: ")),
        "--verify: {stdout}\n{stderr}"
    );
}
