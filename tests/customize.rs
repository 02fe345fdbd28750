//! `piforge customize` on every fixture, judged by e2fsck, fsck.vfat, debugfs, mtools, sfdisk.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

const BASES: [&str; 3] = ["bookworm", "trixie", "ubuntu"];

/// The FAT partition as a file of its own (fsck.vfat has no offset option).
fn boot_part(img: &Path, boot_off: u64, dir: &Path) -> PathBuf {
    let sf = sfdisk_json(img);
    let p = sf["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["start"].as_u64().unwrap() * 512 == boot_off)
        .unwrap()
        .clone();
    let size = p["size"].as_u64().unwrap() * 512;
    let data = fs::read(img).unwrap();
    let out = dir.join("boot.part");
    fs::write(&out, &data[boot_off as usize..(boot_off + size) as usize]).unwrap();
    out
}

/// Both filesystems clean by the real checkers, and the partition table valid.
fn assert_clean(img: &Path, cache: &Path) -> (u64, u64) {
    let (boot, root) = offsets(img, cache);
    let (code, out) = e2fsck(img, root);
    assert_eq!(code, 0, "e2fsck -fn on {}: {out}", img.display());
    let tmp = tempfile::tempdir().unwrap();
    let part = boot_part(img, boot, tmp.path());
    let (code, out) = run_status("fsck.vfat", &["-n", part.to_str().unwrap()]);
    assert_eq!(code, 0, "fsck.vfat -n: {out}");
    let (code, out) = run_status("sfdisk", &["-V", img.to_str().unwrap()]);
    assert_eq!(code, 0, "sfdisk -V: {out}");
    (boot, root)
}

fn stat_field(img: &Path, root: u64, path: &str) -> String {
    debugfs(img, root, &format!("stat {path}"))
}

/// A root overlay exercising the cases the issue names.
fn make_overlay(dir: &Path) -> PathBuf {
    let o = dir.join("overlay");
    fs::create_dir_all(o.join("etc/piforge/a/b/c")).unwrap();
    fs::create_dir_all(o.join("usr/bin")).unwrap();
    fs::create_dir_all(o.join("etc/kubernetes/pki")).unwrap();
    fs::write(o.join("etc/piforge/a/b/c/deep.conf"), "deep=1\n").unwrap();
    // Replace an existing file with longer content.
    fs::write(
        o.join("etc/hostname"),
        "a-much-longer-hostname-than-raspberrypi-or-ubuntu\n".repeat(40),
    )
    .unwrap();
    for i in 0..150 {
        fs::write(
            o.join(format!("usr/bin/pf-tool-{i:03}")),
            format!("#!/bin/sh\necho {i}\n"),
        )
        .unwrap();
        fs::set_permissions(
            o.join(format!("usr/bin/pf-tool-{i:03}")),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    fs::write(
        o.join("etc/kubernetes/pki/ca.key"),
        "-----BEGIN EC PRIVATE KEY-----\n",
    )
    .unwrap();
    symlink("/usr/bin/pf-tool-001", o.join("usr/bin/pf-short")).unwrap();
    symlink(
        format!("/etc/piforge/{}", "x".repeat(80)),
        o.join("etc/piforge/long-link"),
    )
    .unwrap();
    // An overlay directory with other permissions does not change an existing one in the image.
    fs::set_permissions(o.join("usr"), fs::Permissions::from_mode(0o775)).unwrap();
    fs::write(
        o.join(".piforge-attrs"),
        "/etc/kubernetes/pki/ca.key 0600 0 0\n/etc/piforge/a 0750 1000 1000\n",
    )
    .unwrap();
    o
}

/// Asserts that no piforge temporary file (`*piforge-tmp*`) is left in `dir`.
fn assert_no_temporaries(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("piforge-tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

fn customize(args: &[&str], cache: &Path) -> std::process::Output {
    let mut a = vec!["customize"];
    a.extend_from_slice(args);
    piforge(&a, cache)
}

/// `customize INPUT -o OUT --root-overlay OVERLAY EXTRA...`.
fn customize_overlay(
    input: &Path,
    out: &Path,
    overlay: &Path,
    extra: &[&str],
    cache: &Path,
) -> std::process::Output {
    let mut a = vec![
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--root-overlay",
        overlay.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    customize(&a, cache)
}

#[test]
fn overlays_and_boot_edits_on_every_base() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let overlay = make_overlay(tmp.path());
    let boot_ov = tmp.path().join("boot");
    fs::create_dir_all(boot_ov.join("overlays")).unwrap();
    fs::write(boot_ov.join("piforge.txt"), "hello from piforge\n").unwrap();
    fs::write(boot_ov.join("overlays/piforge-test.dtbo"), "dtbo").unwrap();
    for base in BASES {
        let input = fixture(&format!("{base}.img.xz"));
        let before = sha256(&input);
        let out = tmp.path().join(format!("{base}-out.img"));
        let o = customize(
            &[
                input.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--root-overlay",
                overlay.to_str().unwrap(),
                "--boot-overlay",
                boot_ov.to_str().unwrap(),
                "--cmdline-add",
                "cgroup_enable=memory",
                "--cmdline-add",
                "cgroup_memory=1",
                "--config",
                "arm_64bit=1",
                "--rm",
                "/usr/bin/tool-0001",
                "--rm",
                "/etc/systemd/system/getty.target.wants",
            ],
            &cache,
        );
        assert!(
            o.status.success(),
            "{base}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(sha256(&input), before, "the input was modified");
        let (boot, root) = assert_clean(&out, &cache);

        // Content, mode and owner read back by debugfs.
        assert_eq!(
            debugfs(&out, root, "cat /etc/piforge/a/b/c/deep.conf"),
            "deep=1\n"
        );
        assert!(debugfs(&out, root, "cat /etc/hostname").starts_with("a-much-longer-hostname"));
        let st = stat_field(&out, root, "/etc/kubernetes/pki/ca.key");
        assert!(
            st.contains("Mode:  0600") && st.contains("User:     0"),
            "{base}: {st}"
        );
        let st = stat_field(&out, root, "/etc/piforge/a");
        assert!(
            st.contains("Mode:  0750") && st.contains("User:  1000"),
            "{base}: {st}"
        );
        let st = stat_field(&out, root, "/usr");
        assert!(
            st.contains("Mode:  0755"),
            "{base}: an existing directory changed mode: {st}"
        );
        let st = stat_field(&out, root, "/usr/bin/pf-tool-149");
        assert!(st.contains("Mode:  0755"), "{base}: {st}");
        assert_eq!(
            debugfs(&out, root, "cat /usr/bin/pf-tool-149"),
            "#!/bin/sh\necho 149\n"
        );
        // Symlinks, fast and slow.
        assert!(debugfs(&out, root, "stat /usr/bin/pf-short")
            .contains("Fast link dest: \"/usr/bin/pf-tool-001\""));
        assert!(debugfs(&out, root, "stat /etc/piforge/long-link").contains("Type: symlink"));
        // The hash-indexed /usr/bin still is one, and still lists every entry.
        let ls = debugfs(&out, root, "ls -l /usr/bin");
        assert!(ls.contains("pf-tool-000") && ls.contains("pf-tool-149"));
        assert!(!ls.contains(" tool-0001 "), "--rm of a file");
        assert!(
            debugfs(&out, root, "htree /usr/bin").contains("Root node dump"),
            "{base}: /usr/bin lost its index"
        );
        assert!(
            !debugfs(&out, root, "ls /etc/systemd/system").contains("getty.target.wants"),
            "--rm of a tree"
        );
        // An untouched file keeps its capability xattr.
        assert!(debugfs(&out, root, "ea_list /usr/bin/ping").contains("security.capability"));

        // Boot partition: overlay files, cmdline and config edits.
        let part = boot_part(&out, boot, tmp.path());
        let img = format!("{}", part.display());
        assert_eq!(
            run("mtype", &["-i", &img, "::piforge.txt"]),
            "hello from piforge\n"
        );
        assert_eq!(
            run("mtype", &["-i", &img, "::overlays/piforge-test.dtbo"]),
            "dtbo"
        );
        let cmdline = run("mtype", &["-i", &img, "::cmdline.txt"]);
        assert_eq!(cmdline.lines().count(), 1);
        assert!(
            cmdline.ends_with(" cgroup_enable=memory cgroup_memory=1\n"),
            "{cmdline}"
        );
        assert!(cmdline.contains("root="));
        let config = run("mtype", &["-i", &img, "::config.txt"]);
        assert!(
            config.contains("[all]\narm_64bit=1\n# --- piforge: end ---\n"),
            "{config}"
        );
    }
}

#[test]
fn running_twice_is_idempotent_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = fixture("trixie.img");
    let a = tmp.path().join("a.img");
    let b = tmp.path().join("b.img");
    let c = tmp.path().join("c.img");
    let opts = [
        "--cmdline-add",
        "cgroup_enable=memory",
        "--cmdline-add",
        "cgroup_memory=1",
        "--config",
        "arm_64bit=1",
        "--config",
        "kernel=kernel8.img",
    ];
    let overlay = make_overlay(tmp.path());
    for out in [&a, &b] {
        let mut args = vec![input.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(&opts);
        args.extend_from_slice(&["--root-overlay", overlay.to_str().unwrap()]);
        let o = customize(&args, &cache);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(
        sha256(&a),
        sha256(&b),
        "same input, options and epoch must give the same bytes"
    );

    // Customizing the output again with the same boot edits changes nothing there.
    let mut args = vec![a.to_str().unwrap(), "-o", c.to_str().unwrap()];
    args.extend_from_slice(&opts);
    let o = customize(&args, &cache);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (boot, _) = assert_clean(&c, &cache);
    let pa = boot_part(&a, boot, tmp.path());
    let ca = run("mtype", &["-i", pa.to_str().unwrap(), "::cmdline.txt"]);
    let conf_a = run("mtype", &["-i", pa.to_str().unwrap(), "::config.txt"]);
    let pc = boot_part(&c, boot, tmp.path());
    assert_eq!(
        run("mtype", &["-i", pc.to_str().unwrap(), "::cmdline.txt"]),
        ca
    );
    assert_eq!(
        run("mtype", &["-i", pc.to_str().unwrap(), "::config.txt"]),
        conf_a
    );
    assert_eq!(ca.matches("cgroup_enable=memory").count(), 1);
}

#[test]
fn big_file_and_growth() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let o = tmp.path().join("big");
    fs::create_dir_all(o.join("opt/payload")).unwrap();
    // 60 MB of non-zero data: more than the fixtures' root filesystems have free.
    let mut data = Vec::with_capacity(60_000_000);
    let mut x: u32 = 1;
    while data.len() < 60_000_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    fs::write(o.join("opt/payload/big.bin"), &data).unwrap();
    for base in BASES {
        let input = fixture(&format!("{base}.img"));
        let (_, root_in) = offsets(&input, &cache);
        let stats = debugfs(&input, root_in, "stats");
        let field = |k: &str| -> u64 {
            stats
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap()
        };
        let free_before = field("Free blocks:") * field("Block size:");
        let out = tmp.path().join(format!("{base}-big.img"));
        let r = customize_overlay(&input, &out, &o, &[], &cache);
        assert!(
            r.status.success(),
            "{base}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let (_, root) = assert_clean(&out, &cache);
        assert!(
            std::fs::metadata(&out).unwrap().len() > std::fs::metadata(&input).unwrap().len(),
            "{base}: the image did not grow"
        );
        let dumped = tmp.path().join("dumped.bin");
        debugfs(
            &out,
            root,
            &format!("dump /opt/payload/big.bin {}", dumped.display()),
        );
        assert!(
            fs::read(&dumped).unwrap() == data,
            "{base}: the 60 MB file reads back differently"
        );
        assert!(
            free_before < 60_000_000,
            "{base}: the fixture had room already, growth is untested"
        );
    }
}

#[test]
fn grow_off_with_too_little_space_fails_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let o = tmp.path().join("big");
    fs::create_dir_all(&o).unwrap();
    let f = fs::File::create(o.join("big.bin")).unwrap();
    f.set_len(200 << 20).unwrap();
    drop(f);
    let out = tmp.path().join("never.img");
    let input = fixture("trixie.img");
    let r = customize_overlay(&input, &out, &o, &["--grow", "off"], &cache);
    assert_one_line_error(&r, "--grow off");
    assert!(!out.exists(), "no output on failure");
    assert_no_temporaries(tmp.path());
}

#[test]
fn dry_run_lists_changes_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let overlay = make_overlay(tmp.path());
    let out = tmp.path().join("never.img");
    let input = fixture("bookworm.img");
    let r = customize(
        &[
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--dry-run",
            "--root-overlay",
            overlay.to_str().unwrap(),
            "--cmdline-add",
            "cgroup_enable=memory",
            "--rm",
            "/etc/motd",
        ],
        &cache,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = String::from_utf8_lossy(&r.stdout);
    for needle in [
        "root  write    /etc/kubernetes/pki/ca.key  31 B  0600 0:0",
        "root  mkdir    /etc/piforge/a  0750 1000:1000",
        "root  symlink  /usr/bin/pf-short -> /usr/bin/pf-tool-001",
        "root  remove   /etc/motd",
        "boot  cmdline  add cgroup_enable=memory",
    ] {
        assert!(text.contains(needle), "dry run lacks {needle:?}:\n{text}");
    }
    assert!(!out.exists());
}

#[test]
fn bad_customize_input() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = fixture("trixie.img");
    let out = tmp.path().join("o.img");
    let i = input.to_str().unwrap();
    let o = out.to_str().unwrap();
    for (bad, needle) in [
        (["--root-overlay", "/nonexistent/dir"], "not a directory"),
        (["--config", "novalue"], "KEY=VALUE"),
        (["--grow", "lots"], "--grow"),
        (["--rm", "relative/path"], "absolute"),
        (["--cmdline-add", "two tokens"], "token"),
        (["--grow", "1M"], "never shrinks"),
    ] {
        assert_one_line_error(
            &customize(&[&[i, "-o", o][..], &bad].concat(), &cache),
            needle,
        );
    }
    assert!(!out.exists());
}

#[test]
fn interrupted_run_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let o = tmp.path().join("slow");
    fs::create_dir_all(&o).unwrap();
    // 150 MB to write: long enough to interrupt.
    fs::write(o.join("big.bin"), vec![0x5au8; 150 << 20]).unwrap();
    for signal in ["-INT", "-TERM"] {
        let out = tmp.path().join("interrupted.img");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_piforge"))
            .args([
                "customize",
                fixture("trixie.img").to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--root-overlay",
                o.to_str().unwrap(),
            ])
            .env("PIFORGE_CACHE", &cache)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temporary output exists, then interrupt.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let tmp_exists = || {
            fs::read_dir(tmp.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains("piforge-tmp"))
        };
        while !tmp_exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(tmp_exists(), "the run never started writing");
        run("kill", &[signal, &child.id().to_string()]);
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "{signal}: the run finished before the signal; make the overlay bigger"
        );
        assert!(!out.exists(), "{signal}: an interrupted run left OUT");
        assert!(
            !tmp_exists(),
            "{signal}: an interrupted run left its temporary file"
        );
    }
}

#[test]
fn gpt_image_grows_with_backup_header_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let o = tmp.path().join("big");
    fs::create_dir_all(&o).unwrap();
    fs::write(o.join("big.bin"), vec![0xa5u8; 60 << 20]).unwrap();
    let out = tmp.path().join("gpt-out.img");
    let r = customize_overlay(&fixture("gpt.img"), &out, &o, &[], &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (code, text) = run_status("sgdisk", &["-v", out.to_str().unwrap()]);
    assert!(
        code == 0 && text.contains("No problems found"),
        "sgdisk -v: {text}"
    );
    assert_clean(&out, &cache);
    assert!(fs::metadata(&out).unwrap().len() > fs::metadata(fixture("gpt.img")).unwrap().len());
}

/// Hardening #12 item 3: a root filesystem whose superblock claims more blocks than its
/// partition holds (here: the partition entry shrunk under it, a third partition in the freed
/// space) is refused with one sentence, and nothing is written.
#[test]
fn root_filesystem_larger_than_its_partition_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let img = tmp.path().join("short-root.img");
    fs::copy(fixture("trixie.img"), &img).unwrap();
    let sf = sfdisk_json(&img);
    let parts = sf["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .clone();
    let root = &parts[1];
    let (start, size) = (
        root["start"].as_u64().unwrap(),
        root["size"].as_u64().unwrap(),
    );
    let keep = size - 16384; // 8 MiB less than the filesystem
    let shrink = std::process::Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q", "-N", "2"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("{start},{keep}\n").as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(shrink.success(), "sfdisk -N 2");
    let append = std::process::Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q", "--append"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("start={}, size=16384, type=83\n", start + keep).as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(append.success(), "sfdisk --append");
    let after = sfdisk_json(&img);
    let after_parts = after["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(after_parts.len(), 3, "{after}");
    assert_eq!(after_parts[1]["size"].as_u64(), Some(keep));
    let before = sha256(&img);

    let o = tmp.path().join("overlay");
    fs::create_dir_all(o.join("etc")).unwrap();
    fs::write(o.join("etc/piforge-test"), b"x\n").unwrap();
    let out = tmp.path().join("never.img");
    for extra in [
        &["--root-overlay", o.to_str().unwrap()][..],
        &["--grow", "1G"][..],
    ] {
        let mut args = vec![img.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let r = customize(&args, &cache);
        assert_one_line_error(&r, "more than the 41943040 bytes of its partition");
        assert!(
            !out.exists(),
            "no output when the root filesystem overflows its partition"
        );
    }
    assert_eq!(
        sha256(&img),
        before,
        "the input and its third partition are unchanged"
    );
    assert_no_temporaries(tmp.path());
}

/// Issue 12 item 12: an overlay file named `etc`, or a symlink `usr -> /tmp`, used to delete
/// the whole existing tree. Now refused (no output) unless the tree is removed with --rm first.
#[test]
fn overlay_entry_named_like_a_directory_does_not_wipe_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = fixture("bookworm.img");
    let out = tmp.path().join("o.img");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());

    let file_overlay = tmp.path().join("file");
    fs::create_dir_all(&file_overlay).unwrap();
    fs::write(file_overlay.join("etc"), b"not a directory\n").unwrap();
    let link_overlay = tmp.path().join("link");
    fs::create_dir_all(&link_overlay).unwrap();
    symlink("/tmp", link_overlay.join("usr")).unwrap();

    for (overlay, path, with) in [
        (&file_overlay, "/etc", "file"),
        (&link_overlay, "/usr", "symlink"),
    ] {
        let r = customize(
            &[i, "-o", o, "--root-overlay", overlay.to_str().unwrap()],
            &cache,
        );
        assert_one_line_error(
            &r,
            &format!("{path} is a directory with files in it and the plan would replace it with a {with}; remove it first with --rm {path}"),
        );
        assert!(!out.exists(), "no output when a tree would be replaced");
    }

    // Meant: --rm first, then the file takes the place of the tree (/boot holds firmware/);
    // an empty directory (/home in the fixture) is replaced without --rm.
    let small = tmp.path().join("small");
    fs::create_dir_all(&small).unwrap();
    fs::write(small.join("boot"), b"now a file\n").unwrap();
    fs::write(small.join("home"), b"also a file\n").unwrap();
    let r = customize(
        &[
            i,
            "-o",
            o,
            "--rm",
            "/boot",
            "--root-overlay",
            small.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, root) = assert_clean(&out, &cache);
    assert_eq!(debugfs(&out, root, "cat /boot"), "now a file\n");
    assert_eq!(debugfs(&out, root, "cat /home"), "also a file\n");
    assert!(debugfs(&out, root, "ls -l /etc").contains("hostname"));

    // The dry run says what --rm takes away.
    let r = customize(&[i, "--dry-run", "--rm", "/boot"], &cache);
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stdout)
        .contains("root  remove   /boot  (with everything under it)"));
}

/// Issue 12 item 14: `-o` naming the input (directly, or through a symlink or hard link) is
/// refused and the input is left as it was.
#[test]
fn output_equal_to_the_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = tmp.path().join("in.img");
    fs::copy(fixture("bookworm.img"), &input).unwrap();
    let before = sha256(&input);
    let link = tmp.path().join("link.img");
    symlink(&input, &link).unwrap();
    let hard = tmp.path().join("hard.img");
    fs::hard_link(&input, &hard).unwrap();
    let i = input.to_str().unwrap();
    for out in [&input, &link, &hard] {
        let r = customize(
            &[i, "-o", out.to_str().unwrap(), "--rm", "/etc/motd"],
            &cache,
        );
        assert_one_line_error(
            &r,
            "is the input image itself; write the output to another file",
        );
        assert_eq!(sha256(&input), before, "the input is unchanged");
    }
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Issue 12 item 14: FAT ignores case, so a boot overlay's `CMDLINE.TXT` would silently
/// replace the image's `cmdline.txt`; refused, as are two overlay names differing in case.
#[test]
fn boot_overlay_names_differing_only_in_case_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = fixture("trixie.img");
    let out = tmp.path().join("o.img");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let upper = tmp.path().join("upper");
    fs::create_dir_all(&upper).unwrap();
    fs::write(upper.join("CMDLINE.TXT"), "console=tty1 init=/bin/sh\n").unwrap();
    let r = customize(
        &[i, "-o", o, "--boot-overlay", upper.to_str().unwrap()],
        &cache,
    );
    assert_one_line_error(
        &r,
        "/CMDLINE.TXT would replace /cmdline.txt on the boot partition (FAT names ignore case)",
    );
    assert!(!out.exists());
    let twins = tmp.path().join("twins");
    fs::create_dir_all(&twins).unwrap();
    fs::write(twins.join("a.txt"), "a\n").unwrap();
    fs::write(twins.join("A.TXT"), "b\n").unwrap();
    let r = customize(
        &[i, "-o", o, "--boot-overlay", twins.to_str().unwrap()],
        &cache,
    );
    assert_one_line_error(
        &r,
        "holds /A.TXT and /a.txt, one file on FAT (names ignore case)",
    );
    // The same name in the same case is an ordinary replacement.
    let same = tmp.path().join("same");
    fs::create_dir_all(&same).unwrap();
    fs::write(
        same.join("cmdline.txt"),
        "console=tty1 root=/dev/mmcblk0p2\n",
    )
    .unwrap();
    let r = customize(
        &[i, "-o", o, "--boot-overlay", same.to_str().unwrap()],
        &cache,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// A copy of `fixture` with `debugfs -w -R CMD` run on its root filesystem.
fn debugfs_edited(fixture_name: &str, dir: &Path, cmds: &[&str]) -> (PathBuf, u64) {
    let img = dir.join(format!("{fixture_name}-edited.img"));
    fs::copy(fixture(&format!("{fixture_name}.img")), &img).unwrap();
    let (_, root) = offsets(&img, dir);
    let dev = format!("{}?offset={root}", img.display());
    for cmd in cmds {
        let (code, out) = run_status("debugfs", &["-w", "-R", cmd, &dev]);
        assert_eq!(code, 0, "debugfs {cmd}: {out}");
    }
    (img, root)
}

/// Issue 12 item 7: on a filesystem whose block bitmap is stale (blocks in use marked free, no
/// checksum to notice), libext2fs gave new files the root directory's blocks and customize
/// reported success. Now e2fsck -fn runs first and its first complaint is the error; the input
/// is untouched and no output appears. inspect (read-only) still reads the image.
#[test]
fn a_damaged_root_filesystem_is_refused_with_e2fscks_complaint() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (img, root) = {
        let img = tmp.path().join("probe.img");
        fs::copy(fixture("trixie.img"), &img).unwrap();
        let (_, root) = offsets(&img, &cache);
        let blocks = debugfs(&img, root, "blocks /");
        let block = blocks.split_whitespace().next().unwrap().to_string();
        debugfs_edited("trixie", tmp.path(), &[&format!("freeb {block}")])
    };
    let (code, fsck) = e2fsck(&img, root);
    assert_eq!(code, 4, "the fixture should now be damaged: {fsck}");
    let before = sha256(&img);
    let o = make_overlay(tmp.path());
    let out = tmp.path().join("out.img");
    let r = customize_overlay(&img, &out, &o, &[], &cache);
    assert_one_line_error(&r, "is damaged (e2fsck -fn: Block bitmap differences:");
    assert!(!out.exists());
    assert_eq!(sha256(&img), before, "the input changed");
    let r = piforge(&["inspect", img.to_str().unwrap()], &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// Issue 12 item 7: growth ran `resize2fs -f`, skipping resize2fs's own checks. Without `-f`
/// resize2fs insists on a check since the last mount; an image mounted after its last check
/// (as pi-gen leaves its images: it mounts the root to fill it) still grows, because piforge
/// checks it with e2fsck and records the check first.
#[test]
fn an_image_mounted_since_its_last_check_grows_without_forcing_resize2fs() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // Mounted on 2024-06-01, last checked 2024-01-01.
    let (img, root) = debugfs_edited(
        "trixie",
        tmp.path(),
        &["ssv mtime 20240601000000", "ssv lastcheck 20240101000000"],
    );
    let out = tmp.path().join("out.img");
    let r = piforge(
        &[
            "customize",
            img.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--grow",
            "96M",
            "--cmdline-add",
            "quiet",
        ],
        &cache,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_clean(&out, &cache);
    let stats = debugfs(&out, root, "stats");
    let lastcheck = stats
        .lines()
        .find(|l| l.starts_with("Last checked:"))
        .unwrap();
    assert!(
        lastcheck.contains("2024") && lastcheck.contains("Jun"),
        "{lastcheck}"
    );
}

/// Issue 12 item 14: `--grow auto` counted bytes only, so an overlay of many small files on a
/// filesystem with room but few free inodes failed half-way. Now it grows for the inodes too;
/// `--grow off` says why it cannot.
#[test]
fn grow_auto_grows_for_a_shortage_of_inodes() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let img = fixture("trixie.img");
    let (_, root) = offsets(&img, &cache);
    let stats = debugfs(&img, root, "stats");
    let field = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {stats}"))
    };
    let free_inodes = field("Free inodes:");
    let o = tmp.path().join("many");
    fs::create_dir_all(&o).unwrap();
    for i in 0..free_inodes + 200 {
        fs::write(o.join(format!("f{i}")), "").unwrap();
    }
    let out = tmp.path().join("out.img");
    let args = |grow: &'static str| {
        vec![
            "customize".to_string(),
            img.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--root-overlay".into(),
            o.display().to_string(),
            "--grow".into(),
            grow.into(),
        ]
    };
    let run_args = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        piforge(&a, &cache)
    };
    let r = run_args(args("off"));
    assert_one_line_error(&r, "are free, and --grow off forbids growing it");
    assert!(!out.exists());
    let r = run_args(args("auto"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("root partition grown to"),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert_clean(&out, &cache);
    let listing = debugfs(&out, root, "ls -l /");
    assert!(
        listing.contains(&format!("f{}", free_inodes + 199)),
        "{listing}"
    );
}
