//! The Kubernetes node payload on every fixture base, with stand-in artifacts laid out exactly
//! like the upstream release files; and `piforge fetch` through a mirror on 127.0.0.1.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

use piforge::artifacts::Catalog;

const K8S: &str = "1.34.11";

/// Stand-in artifacts under their upstream file names; returns (dir, file name -> upstream URL).
fn stand_in(dir: &Path) -> (PathBuf, Vec<(String, String)>) {
    let arts = stand_in_artifacts(&dir.join("artifacts"), K8S);
    let release = Catalog::builtin().unwrap().release(K8S).unwrap();
    let files = release
        .artifacts()
        .iter()
        .map(|s| (s.file_name.clone(), s.url.clone()))
        .collect();
    (arts, files)
}

fn fat_file(img: &Path, boot: u64, name: &str) -> String {
    run(
        "mtype",
        &[
            "-i",
            &format!("{}@@{boot}", img.display()),
            &format!("::{name}"),
        ],
    )
}

#[test]
fn payload_on_every_base_passes_check() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (arts, _) = stand_in(tmp.path());
    let lock = tmp.path().join("piforge.lock");
    for base in ["bookworm", "trixie", "ubuntu"] {
        let out = tmp.path().join(format!("{base}-node.img"));
        let r = customize_kubernetes(
            &fixture(&format!("{base}.img.xz")),
            &out,
            &arts,
            &lock,
            &cache,
        );
        assert!(
            r.status.success(),
            "{base}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            base != "bookworm" || err.contains("unpinned"),
            "the first run records unpinned digests and says so: {err}"
        );
        assert!(
            err.contains("--kubernetes puts no container image in the image"),
            "{err}"
        );

        // piforge check: nothing fails.
        let c = piforge(&["check", "--json", out.to_str().unwrap()], &cache);
        let items: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
        let fails: Vec<_> = items
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] == "fail")
            .collect();
        assert!(fails.is_empty(), "{base}: check fails: {fails:#?}");
        assert_eq!(c.status.code(), Some(0), "{base}");

        // The real checkers.
        let (boot, root) = offsets(&out, &cache);
        let (code, text) = e2fsck(&out, root);
        assert_eq!(code, 0, "{base}: e2fsck: {text}");
        let data = fs::read(&out).unwrap();
        let part = tmp.path().join("boot.part");
        fs::write(&part, &data[boot as usize..root as usize]).unwrap();
        let (code, text) = run_status("fsck.vfat", &["-n", part.to_str().unwrap()]);
        assert_eq!(code, 0, "{base}: fsck.vfat: {text}");

        // Files, modes, owners, content.
        for (path, mode) in [
            ("/usr/local/bin/kubeadm", "0755"),
            ("/usr/local/bin/kubelet", "0755"),
            ("/usr/local/bin/containerd", "0755"),
            ("/usr/local/bin/crictl", "0755"),
            ("/usr/local/sbin/runc", "0755"),
            ("/opt/cni/bin/bridge", "0755"),
            ("/etc/containerd/config.toml", "0644"),
            ("/etc/crictl.yaml", "0644"),
            ("/etc/modules-load.d/k8s.conf", "0644"),
            ("/etc/sysctl.d/99-kubernetes.conf", "0644"),
            (
                "/usr/local/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
                "0644",
            ),
        ] {
            let st = debugfs(&out, root, &format!("stat {path}"));
            assert!(
                st.contains(&format!("Mode:  {mode}")) && st.contains("User:     0   Group:     0"),
                "{base}: {path}: {st}"
            );
        }
        assert_eq!(
            debugfs(&out, root, "cat /usr/local/bin/kubeadm"),
            fs::read_to_string(arts.join("kubeadm")).unwrap()
        );
        let cfg = debugfs(&out, root, "cat /etc/containerd/config.toml");
        assert!(
            cfg.contains("SystemdCgroup = true") && cfg.contains("registry.k8s.io/pause:3.10.1"),
            "{cfg}"
        );
        assert!(debugfs(&out, root, "cat /etc/sysctl.d/99-kubernetes.conf")
            .contains("net.ipv4.ip_forward = 1"));
        // .wants symlinks resolve to units that exist in the image.
        for unit in ["containerd.service", "kubelet.service"] {
            let link = format!("/etc/systemd/system/multi-user.target.wants/{unit}");
            let st = debugfs(&out, root, &format!("stat {link}"));
            let target = st
                .split("Fast link dest: \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_else(|| panic!("{link}: {st}"));
            assert!(
                debugfs(&out, root, &format!("stat {target}")).contains("Type: regular"),
                "{base}: {link} -> {target}"
            );
        }
        // Missing OS packages are installed on first boot: iptables only (the portmap CNI
        // plugin runs it); kubeadm 1.33+ checks none of conntrack, socat, ebtables, ethtool.
        let pk = debugfs(&out, root, "cat /etc/piforge/first-boot-packages");
        assert!(pk.contains("\niptables # "), "{pk}");
        assert!(!pk.contains("conntrack") && !pk.contains("socat"), "{pk}");

        // cmdline.txt: one line, root= intact, each cgroup token once; config.txt block.
        let cmdline = fat_file(&out, boot, "cmdline.txt");
        assert_eq!(cmdline.lines().count(), 1);
        assert!(cmdline.contains("root="));
        assert_eq!(cmdline.matches("cgroup_enable=memory").count(), 1);
        // cgroup_memory=1 is ignored by 6.12 kernels: no longer added (issue 10 item 5).
        assert!(!cmdline.contains("cgroup_memory"), "{cmdline}");
        assert!(fat_file(&out, boot, "config.txt").contains("[all]\narm_64bit=1\n"));

        // Twice: customizing the node image again changes neither the tokens nor the block.
        let again = tmp.path().join(format!("{base}-again.img"));
        let r = customize_kubernetes(&out, &again, &arts, &lock, &cache);
        assert!(
            r.status.success(),
            "{base}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(fat_file(&again, boot, "cmdline.txt"), cmdline);
        assert_eq!(
            fat_file(&again, boot, "config.txt"),
            fat_file(&out, boot, "config.txt")
        );
        let (code, text) = e2fsck(&again, root);
        assert_eq!(code, 0, "{base}: e2fsck after a second payload: {text}");
        fs::remove_file(&again).unwrap();
        fs::remove_file(&out).unwrap();
    }
    // The lock pinned every artifact.
    let lock_text = fs::read_to_string(&lock).unwrap();
    for name in [
        "kubeadm",
        "containerd",
        "runc",
        "cni-plugins",
        "crictl",
        "flannel",
    ] {
        assert!(
            lock_text.contains(&format!("name = \"{name}\"")),
            "{lock_text}"
        );
    }
}

#[test]
fn artifacts_that_disagree_with_the_lock_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (arts, _) = stand_in(tmp.path());
    let lock = tmp.path().join("piforge.lock");
    let out = tmp.path().join("node.img");
    let input = fixture("trixie.img");
    assert!(customize_kubernetes(&input, &out, &arts, &lock, &cache)
        .status
        .success());
    fs::write(arts.join("kubeadm"), "#!/bin/sh\necho tampered\n").unwrap();
    fs::remove_file(&out).unwrap();
    let r = customize_kubernetes(&input, &out, &arts, &lock, &cache);
    assert_one_line_error(&r, "kubeadm");
    assert!(!out.exists());
}

#[test]
fn fetch_through_a_mirror_pins_and_reuses() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (arts, files) = stand_in(tmp.path());
    let root = tmp.path().join("mirror");
    let release = Catalog::builtin().unwrap().release(K8S).unwrap();
    for spec in release.artifacts() {
        let place = |url: &str| root.join(url.trim_start_matches("https://"));
        let dest = place(&spec.url);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(arts.join(&spec.file_name), &dest).unwrap();
        if let Some(cu) = &spec.checksum_url {
            let digest = sha256(&dest);
            let text = if spec.name == "runc" {
                format!(
                    "{}  runc.amd64\n{digest}  {}\n",
                    "0".repeat(64),
                    spec.file_name
                )
            } else {
                format!("{digest}  {}\n", spec.file_name)
            };
            fs::write(place(cu), text).unwrap();
        }
    }
    assert_eq!(files.len(), release.artifacts().len());
    let mirror = start_mirror(&root);
    let lock = tmp.path().join("piforge.lock");
    let args = [
        "fetch",
        "--kubernetes",
        K8S,
        "--mirror",
        &mirror.url,
        "--lock",
        lock.to_str().unwrap(),
        // This mirror serves files only (tests/images.rs serves a registry).
        "--no-images",
    ];
    // The flannel manifest has no upstream checksum: refused without --allow-unpinned.
    let r = piforge(&args, &cache);
    assert_one_line_error(&r, "flannel");
    let mut with = args.to_vec();
    with.push("--allow-unpinned");
    let r = piforge(&with, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains(&sha256(&arts.join("kubeadm"))), "{text}");
    let pinned = fs::read_to_string(&lock).unwrap();
    assert!(pinned.contains(&sha256(&arts.join("runc.arm64"))));
    // Upstream changes a file: the lock wins, and only --update replaces the entry.
    let k = root.join("dl.k8s.io/release/v1.34.11/bin/linux/arm64/kubeadm");
    fs::write(&k, "changed upstream\n").unwrap();
    fs::write(
        root.join("dl.k8s.io/release/v1.34.11/bin/linux/arm64/kubeadm.sha256"),
        format!("{}  kubeadm\n", sha256(&k)),
    )
    .unwrap();
    let r = piforge(&with, &cache);
    assert!(
        r.status.success(),
        "cached artifacts verified against the lock: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        fs::read_to_string(&lock).unwrap(),
        pinned,
        "the lock changed without --update"
    );
    let mut update = with.clone();
    update.push("--update");
    let r = piforge(&update, &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(fs::read_to_string(&lock).unwrap().contains(&sha256(&k)));
}

/// Repacks the stand-in containerd tarball in `arts` with `prepare` run in its unpacked tree
/// (which holds `bin/`), with GNU tar as the stand-in script does; `extra` are more tar
/// arguments (a member twice, say).
fn repack_containerd(arts: &Path, prepare: &str, extra: &[&str]) {
    let name = Catalog::builtin()
        .unwrap()
        .release(K8S)
        .unwrap()
        .artifacts()[..]
        .iter()
        .find(|a| a.name == "containerd")
        .unwrap()
        .file_name
        .clone();
    let tarball = arts.join(&name);
    let work = tempfile::tempdir().unwrap();
    let w = work.path().to_str().unwrap();
    run("tar", &["-xzf", tarball.to_str().unwrap(), "-C", w]);
    run("sh", &["-c", &format!("cd '{w}' && {prepare}")]);
    let mut args = vec!["-czf", tarball.to_str().unwrap(), "-C", w, "bin"];
    args.extend_from_slice(extra);
    run("tar", &args);
}

/// A failed run: exit 1 and, besides warnings (unpinned artifacts, packages left to apt), one
/// line naming `needle`.
fn assert_error_after_warnings(r: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("piforge: warning: "))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(needle),
        "stderr should say {needle:?}: {err}"
    );
}

/// Issue 12 item 13: a tarball installs only the members the catalog lists for it (a
/// containerd tarball must not lay down a kubeadm), each once, all the required ones; and a
/// symlink in --artifacts DIR is not followed.
#[test]
fn tarballs_install_only_their_listed_members() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = fixture("trixie.img");
    let out = tmp.path().join("node.img");
    for (prepare, extra, message) in [
        (
            "cp bin/ctr bin/kubeadm",
            &[][..],
            "holds bin/kubeadm, which the catalog does not list for containerd (it installs only bin/containerd, bin/containerd-shim-runc-v2, bin/ctr, bin/containerd-stress)",
        ),
        ("ln -s /etc/shadow bin/oops", &[], "holds bin/oops, which the catalog does not list"),
        ("rm bin/ctr", &[], "lacks bin/ctr"),
        ("true", &["--hard-dereference", "bin/ctr"], "holds bin/ctr twice"),
    ] {
        let case = tempfile::tempdir().unwrap();
        let (arts, _) = stand_in(case.path());
        repack_containerd(&arts, prepare, extra);
        let lock = case.path().join("piforge.lock");
        let r = customize_kubernetes(&input, &out, &arts, &lock, &cache);
        assert_error_after_warnings(&r, message);
        assert!(!out.exists(), "{prepare}: no output");
    }
    // Without containerd-stress (as Debian's containerd, repacked by the e2e artifacts): fine.
    let case = tempfile::tempdir().unwrap();
    let (arts, _) = stand_in(case.path());
    repack_containerd(&arts, "rm bin/containerd-stress", &[]);
    let r = customize_kubernetes(&input, &out, &arts, &case.path().join("l"), &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, root) = offsets(&out, &cache);
    let bin = debugfs(&out, root, "ls /usr/local/bin");
    assert!(
        bin.contains("ctr") && !bin.contains("containerd-stress"),
        "{bin}"
    );
    fs::remove_file(&out).unwrap();

    // A linked artifact is refused, not followed (the host file stays out of the image).
    let case = tempfile::tempdir().unwrap();
    let (arts, _) = stand_in(case.path());
    let secret = case.path().join("secret");
    fs::write(&secret, "host secret\n").unwrap();
    fs::remove_file(arts.join("kubeadm")).unwrap();
    std::os::unix::fs::symlink(&secret, arts.join("kubeadm")).unwrap();
    let r = customize_kubernetes(&input, &out, &arts, &case.path().join("l"), &cache);
    assert_error_after_warnings(
        &r,
        "kubeadm is a symbolic link; --artifacts DIR must hold the files themselves",
    );
    assert!(!out.exists());
}

/// Issue 12 item 4: tar members are streamed into the image. A 512 MiB `bin/containerd` in a
/// small tarball is installed under a 192 MiB address-space limit (the old code read every
/// member into memory and aborted), and arrives whole.
#[test]
fn a_huge_tar_member_is_streamed_under_a_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (arts, _) = stand_in(tmp.path());
    repack_containerd(
        &arts,
        "rm bin/containerd && truncate -s 512M bin/containerd",
        &[],
    );
    let out = tmp.path().join("node.img");
    let lock = tmp.path().join("piforge.lock");
    let input = fixture("trixie.img");
    let bin = env!("CARGO_BIN_EXE_piforge");
    let r = std::process::Command::new("prlimit")
        .arg(format!("--as={}", 192u64 << 20))
        .arg(bin)
        .args(customize_kubernetes_args(&input, &out, &arts, &lock))
        .env("PIFORGE_CACHE", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, root) = offsets(&out, &cache);
    let stat = debugfs(&out, root, "stat /usr/local/bin/containerd");
    assert!(stat.contains(&format!("Size: {}", 512u64 << 20)), "{stat}");
    let (code, fsck) = e2fsck(&out, root);
    assert_eq!(code, 0, "{fsck}");
}
