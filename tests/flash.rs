//! `piforge flash` and `piforge reimage`, to regular files and to loop devices (`losetup`;
//! the tests run as root here and in CI: a missing losetup or loop device is a failure).
//! Judged by bmaptool (our target equals `bmaptool copy`'s), e2fsck -fn, fsck.vfat -n and
//! sfdisk, never by piforge's own reader.

mod common;
use common::*;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const TOKEN: &str = "abcdef.0123456789abcdef";

fn ok(r: &std::process::Output) -> String {
    assert!(
        r.status.success(),
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// One build shared by the tests: pi-cp-1 as .img, .img.xz and .img.zst with its .bmap.
struct Built {
    _tmp: tempfile::TempDir,
    dist: PathBuf,
    cache: PathBuf,
}

fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
        let spec = two_node_spec(tmp.path(), "flash", &fixture("trixie.img"));
        let dist = tmp.path().join("dist");
        let args = [
            "--node", "pi-cp-1", "--format", "img", "--format", "xz", "--format", "zst",
        ];
        ok(&build_with(&spec, &dist, &arts, &cache, &args));
        Built {
            _tmp: tmp,
            dist,
            cache,
        }
    })
}

fn image() -> PathBuf {
    built().dist.join("pi-cp-1.img")
}

/// The mapped block ranges `(first, last)` of a bmap file (bmaptool's format, read here with
/// string matching, independent of piforge's reader).
fn bmap_ranges(bmap: &Path) -> Vec<(u64, u64)> {
    let text = fs::read_to_string(bmap).unwrap();
    text.lines()
        .filter(|l| l.contains("<Range"))
        .map(|l| {
            let v = l
                .split('>')
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .trim();
            match v.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (v.parse().unwrap(), v.parse().unwrap()),
            }
        })
        .collect()
}

fn flash(args: &[&str]) -> std::process::Output {
    let mut a = vec!["flash"];
    a.extend_from_slice(args);
    Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(&a)
        .env("PIFORGE_CACHE", &built().cache)
        .stdin(Stdio::null())
        .output()
        .expect("running piforge")
}

/// `bmaptool copy IMAGE` into a new file: what a correct flash of the image looks like
/// (mapped ranges from the image, zeros elsewhere).
fn bmaptool_copy(src: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("bmaptool.out");
    let _ = fs::remove_file(&out);
    let r = Command::new("bmaptool")
        .arg("copy")
        .arg(src)
        .arg(&out)
        .output()
        .expect("bmaptool (bmap-tools; tests/install-deps.sh)");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    fs::read(&out).unwrap()
}

/// e2fsck -fn and fsck.vfat -n on the partitions of a flashed image (`len` bytes of `dev`).
fn fsck_partitions(dev: &Path, len: u64, dir: &Path) {
    let copy = dir.join("fsck.img");
    let mut data = fs::read(dev).unwrap_or_else(|e| panic!("{}: {e}", dev.display()));
    data.truncate(len as usize);
    fs::write(&copy, &data).unwrap();
    let (boot, root) = offsets(&copy, dir);
    let (code, out) = e2fsck(&copy, root);
    assert_eq!(code, 0, "e2fsck -fn: {out}");
    let part = dir.join("boot.part");
    fs::write(&part, &data[boot as usize..root as usize]).unwrap();
    let (code, out) = run_status("fsck.vfat", &["-n", part.to_str().unwrap()]);
    assert_eq!(code, 0, "fsck.vfat -n: {out}");
}

/// A loop device over a file, detached when dropped.
struct Loop {
    dev: PathBuf,
    backing: PathBuf,
}

impl Loop {
    /// A loop device of `bytes` filled with a pattern (stale data from an earlier life).
    fn new(dir: &Path, name: &str, bytes: usize) -> Loop {
        let backing = dir.join(name);
        let pattern: Vec<u8> = (0..bytes).map(|i| 0xa5 ^ (i / 4096) as u8).collect();
        fs::write(&backing, pattern).unwrap();
        let mut last = String::new();
        for _ in 0..5 {
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&backing)
                .output()
                .expect("losetup (util-linux/mount): the loop-device tests need it, as root");
            if out.status.success() {
                let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return Loop {
                    dev: PathBuf::from(dev),
                    backing,
                };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("losetup -f --show failed (tests need root and loop devices): {last}");
    }

    fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dev).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).output();
    }
}

/// Asserts `got` is the image on every mapped range and `rest` (the bmap's unmapped bytes)
/// equals what bmaptool copy leaves there (zeros).
fn assert_flashed(got: &[u8], reference: &[u8], img: &[u8], ranges: &[(u64, u64)]) {
    assert!(got.len() >= img.len());
    for &(a, b) in ranges {
        let (s, e) = (
            (a * 4096) as usize,
            (((b + 1) * 4096) as usize).min(img.len()),
        );
        assert!(
            got[s..e] == img[s..e],
            "mapped blocks {a}-{b} differ from the image"
        );
    }
    assert_eq!(reference.len(), img.len());
    if got[..img.len()] != reference[..] {
        let at = got.iter().zip(reference).position(|(x, y)| x != y).unwrap();
        panic!("the target differs from bmaptool copy's at byte {at} (unmapped bytes not zeroed?)");
    }
}

#[test]
fn to_files_from_every_format_equal_bmaptool_copy_and_fsck_passes() {
    let b = built();
    let tmp = tempfile::tempdir().unwrap();
    let img = fs::read(image()).unwrap();
    let ranges = bmap_ranges(&b.dist.join("pi-cp-1.img.bmap"));
    let reference = bmaptool_copy(&image(), tmp.path());
    for ext in ["img", "img.xz", "img.zst"] {
        let src = b.dist.join(format!("pi-cp-1.{ext}"));
        let target = tmp.path().join(format!("card.{ext}"));
        // A target larger than the image, full of a pattern.
        fs::write(&target, vec![0x5au8; img.len() + (8 << 20)]).unwrap();
        let out = ok(&flash(&[src.to_str().unwrap(), target.to_str().unwrap()]));
        assert!(
            out.contains("pi-cp-1.img.bmap"),
            "{ext}: the bmap beside it: {out}"
        );
        assert!(out.contains("verified in"), "{out}");
        let got = fs::read(&target).unwrap();
        assert_eq!(got.len(), img.len(), "{ext}: the file is the image's size");
        assert_flashed(&got, &reference, &img, &ranges);
    }
    fsck_partitions(
        &tmp.path().join("card.img.xz"),
        img.len() as u64,
        tmp.path(),
    );
    // Without a .bmap the map is computed from the filesystems: the same result.
    let lone = tmp.path().join("lone.img");
    fs::copy(image(), &lone).unwrap();
    let target = tmp.path().join("card.lone");
    let out = ok(&flash(&[lone.to_str().unwrap(), target.to_str().unwrap()]));
    assert!(out.contains("computed from its filesystems"), "{out}");
    assert_flashed(&fs::read(&target).unwrap(), &reference, &img, &ranges);
}

#[test]
fn to_a_loop_device_prefilled_with_a_pattern() {
    let tmp = tempfile::tempdir().unwrap();
    let img = fs::read(image()).unwrap();
    let lo = Loop::new(tmp.path(), "disk", img.len() + (16 << 20));
    let xz = built().dist.join("pi-cp-1.img.xz");
    let out = ok(&flash(&[
        xz.to_str().unwrap(),
        lo.path(),
        "--force",
        "--yes",
    ]));
    assert!(out.contains("loop") && out.contains("verified in"), "{out}");
    let ranges = bmap_ranges(&built().dist.join("pi-cp-1.img.bmap"));
    let reference = bmaptool_copy(&image(), tmp.path());
    let got = fs::read(&lo.dev).unwrap();
    // The loop device offloads zeroing: every unmapped byte of the image's extent is zero.
    assert_flashed(&got, &reference, &img, &ranges);
    fsck_partitions(&lo.dev, img.len() as u64, tmp.path());
    let sf = run("sfdisk", &["-d", lo.path()]);
    assert!(sf.contains("type=c") && sf.contains("type=83"), "{sf}");
}

/// A bmaptool map (foreign: what it leaves out are the image file's holes, which must read
/// as zeros) of many ranges, to a loop device full of a pattern: each unmapped range is
/// discarded and zeroed on its own, and the image's whole extent reads back as the image.
#[test]
fn a_bmaptool_map_of_many_ranges_to_a_loop_device_reads_back_as_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let img = fs::read(image()).unwrap();
    let sparse = tmp.path().join("sparse.img");
    let bmap = tmp.path().join("sparse.bmap");
    let (s, m) = (sparse.to_str().unwrap(), bmap.to_str().unwrap());
    run("cp", &["--sparse=always", image().to_str().unwrap(), s]);
    run("bmaptool", &["-q", "create", "-o", m, s]);
    let ranges = bmap_ranges(&bmap);
    assert!(ranges.len() > 8, "a map of many ranges: {ranges:?}");
    let lo = Loop::new(tmp.path(), "disk", img.len() + (16 << 20));
    let out = ok(&flash(&[s, lo.path(), "--bmap", m, "--force", "--yes"]));
    assert!(out.contains("verified in"), "{out}");
    let got = fs::read(&lo.dev).unwrap();
    if got[..img.len()] != img[..] {
        let at = got.iter().zip(&img).position(|(x, y)| x != y).unwrap();
        let block = at as u64 / 4096;
        let mapped = ranges.iter().any(|&(a, b)| a <= block && block <= b);
        panic!("byte {at} differs from the image (mapped: {mapped})");
    }
    fsck_partitions(&lo.dev, img.len() as u64, tmp.path());
}

#[test]
fn a_corruption_between_write_and_verify_is_caught_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ranges = bmap_ranges(&built().dist.join("pi-cp-1.img.bmap"));
    // A byte in the middle of the largest mapped range.
    let &(a, b) = ranges.iter().max_by_key(|(a, b)| b - a).unwrap();
    let at = (a + (b - a) / 2) * 4096 + 123;
    let want = format!("blocks {a}-{b}");
    let img = fs::read(image()).unwrap();
    let lo = Loop::new(tmp.path(), "disk", img.len());
    let file = tmp.path().join("card");
    for target in [lo.path(), file.to_str().unwrap()] {
        let r = flash(&[
            image().to_str().unwrap(),
            target,
            "--force",
            "--yes",
            "--test-corrupt-before-verify",
            &at.to_string(),
            // Without a terminal each finished step prints a plain line; the failure must
            // still be the only line left.
            "--quiet",
        ]);
        assert_one_line_error(&r, &want);
        let stdout = String::from_utf8_lossy(&r.stdout);
        assert!(
            !stdout.contains("wrote"),
            "no success line after a failure: {stdout}"
        );
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("verify failed"), "{err}");
    }
}

/// The target's bytes are the same before and after a refused run.
fn refused(target: &Path, args: &[&str], needle: &str) {
    let before = sha256(target);
    let r = flash(args);
    assert_one_line_error(&r, needle);
    assert_eq!(
        sha256(target),
        before,
        "a refused run wrote to {}",
        target.display()
    );
}

#[test]
fn mounted_too_small_not_removable_and_unconfirmed_devices_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image();
    let src = img.to_str().unwrap();
    let len = fs::metadata(&img).unwrap().len() as usize;

    // Mounted: an ext4 filesystem on the loop device, mounted.
    let mounted = Loop::new(tmp.path(), "mounted", len + (1 << 20));
    run("mkfs.ext4", &["-q", "-F", mounted.path()]);
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    run("mount", &[mounted.path(), mnt.to_str().unwrap()]);
    let r = flash(&[src, mounted.path(), "--force", "--yes"]);
    let _ = Command::new("umount").arg(&mnt).output();
    assert_one_line_error(&r, &format!("is mounted at {}", mnt.display()));

    let small = Loop::new(tmp.path(), "small", len / 2);
    refused(
        &small.backing,
        &[src, small.path(), "--force", "--yes"],
        "use a larger card",
    );

    let fine = Loop::new(tmp.path(), "fine", len);
    refused(
        &fine.backing,
        &[src, fine.path(), "--yes"],
        "is not a removable disk",
    );
    refused(
        &fine.backing,
        &[src, fine.path(), "--force"],
        "standard input is not a terminal",
    );
    // The bmap beside a raw image must describe that image.
    let other = tmp.path().join("other.img");
    fs::write(&other, vec![0u8; 4 << 20]).unwrap();
    let bmap = built().dist.join("pi-cp-1.img.bmap");
    refused(
        &fine.backing,
        &[
            other.to_str().unwrap(),
            fine.path(),
            "--force",
            "--yes",
            "--bmap",
            bmap.to_str().unwrap(),
        ],
        "not a usable block map",
    );
}

#[test]
fn a_writer_killed_midway_leaves_no_partition_table() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image();
    let len = fs::metadata(&img).unwrap().len() as usize;
    let lo = Loop::new(tmp.path(), "disk", len);
    let file = tmp.path().join("card");
    for target in [lo.path().to_string(), file.to_str().unwrap().to_string()] {
        // A card that held a valid image before.
        ok(&flash(&[
            img.to_str().unwrap(),
            &target,
            "--force",
            "--yes",
            "--no-verify",
        ]));
        assert!(run("sfdisk", &["-d", &target]).contains("type=83"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_piforge"))
            .args(["flash", img.to_str().unwrap(), &target, "--force", "--yes"])
            .args(["--test-pause-after", &(4u64 << 20).to_string()])
            .env("PIFORGE_CACHE", &built().cache)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(child.stderr.take().unwrap());
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("paused after"), "{line}");
        // SIGKILL on the loop device; SIGTERM (the Ctrl-C handler's path) on the file.
        let sigterm = target == file.to_str().unwrap();
        if sigterm {
            run("kill", &["-TERM", &child.id().to_string()]);
        } else {
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        if sigterm {
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
            assert_eq!(status.code(), Some(130), "{rest}");
            assert!(rest.contains("it holds no partition table now"), "{rest}");
        }
        let (code, out) = run_status("sfdisk", &["-d", &target]);
        assert!(
            code != 0 && !out.contains("type="),
            "{target}: a partition table after a killed write: {out}"
        );
    }
}

#[test]
fn flash_spec_node_and_reimage_write_what_build_and_flash_write() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = two_node_spec(tmp.path(), "flash", &fixture("trixie.img"));
    let dist = tmp.path().join("dist");
    // The first build makes the secrets and the cluster state.
    ok(&build_with(&spec, &dist, &arts, &cache, &[]));
    let piforge = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_piforge"))
            .args(args)
            .env("PIFORGE_CACHE", &cache)
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let spec_s = spec.to_str().unwrap();
    let arts_s = arts.to_str().unwrap();
    let img = dist.join("pi-w-1.img");
    let a = tmp.path().join("a.card");
    ok(&piforge(&[
        "flash",
        img.to_str().unwrap(),
        a.to_str().unwrap(),
    ]));
    let b = tmp.path().join("b.card");
    let out = ok(&piforge(&[
        "flash",
        "--spec",
        spec_s,
        "--node",
        "pi-w-1",
        b.to_str().unwrap(),
        "--artifacts",
        arts_s,
        "--allow-unpinned",
    ]));
    assert!(out.contains("built pi-w-1"), "{out}");
    // `--node` of a cluster that exists is a partial build: the card replaces a node the
    // cluster had (it removes its old self before joining), as `build --node` makes it.
    let dist_node = tmp.path().join("dist-node");
    ok(&build_with(
        &spec,
        &dist_node,
        &arts,
        &cache,
        &["--node", "pi-w-1"],
    ));
    let a_node = tmp.path().join("a-node.card");
    ok(&piforge(&[
        "flash",
        dist_node.join("pi-w-1.img").to_str().unwrap(),
        a_node.to_str().unwrap(),
    ]));
    assert!(
        fs::read(&a_node).unwrap() == fs::read(&b).unwrap(),
        "flash --spec --node differs from build --node + flash"
    );
    assert!(
        fs::read(&a).unwrap() != fs::read(&b).unwrap(),
        "a --node card is the same as the full build's: it would not replace the old node"
    );

    // --all with a target per node ({node}): no terminal needed; a summary table.
    let cards = tmp.path().join("cards");
    fs::create_dir(&cards).unwrap();
    let pattern = cards.join("{node}.card");
    let out = ok(&piforge(&[
        "flash",
        "--spec",
        spec_s,
        "--all",
        pattern.to_str().unwrap(),
        "--artifacts",
        arts_s,
        "--allow-unpinned",
    ]));
    assert!(
        out.contains("Label this card: pi-cp-1") && out.contains("Label this card: pi-w-1"),
        "{out}"
    );
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("node "))
        .collect();
    assert_eq!(table.len(), 3, "{out}");
    assert!(
        table[1].starts_with("pi-cp-1") && table[1].ends_with("written, verified"),
        "{out}"
    );
    assert!(fs::read(cards.join("pi-w-1.card")).unwrap() == fs::read(&a).unwrap());
    // Without a terminal and without {node}, --all refuses (it would ask for each card).
    let r = piforge(&["flash", "--spec", spec_s, "--all", b.to_str().unwrap()]);
    assert_one_line_error(&r, "terminal");

    // A worker (the cluster state lists it: the card replaces it): joins, with the commands
    // to run by hand should it say it could not remove its old self. Before the
    // --new-cluster reimage below, which starts a state that does not list the worker.
    let e = tmp.path().join("e.card");
    let out = ok(&piforge(&[
        "reimage",
        "--spec",
        spec_s,
        "--node",
        "pi-w-1",
        e.to_str().unwrap(),
        "--token",
        TOKEN,
        "--artifacts",
        arts_s,
        "--allow-unpinned",
    ]));
    assert!(
        out.contains("kubeadm join") && out.contains("kubectl delete node pi-w-1"),
        "{out}"
    );
    assert!(!out.contains(TOKEN), "the token is never printed: {out}");
    let dist3 = tmp.path().join("dist3");
    ok(&build_with(
        &spec,
        &dist3,
        &arts,
        &cache,
        &["--node", "pi-w-1", "--token", TOKEN],
    ));
    let f = tmp.path().join("f.card");
    ok(&piforge(&[
        "flash",
        dist3.join("pi-w-1.img").to_str().unwrap(),
        f.to_str().unwrap(),
    ]));
    assert!(
        fs::read(&e).unwrap() == fs::read(&f).unwrap(),
        "reimage of a worker differs from build --node"
    );
    // The reimaged worker is not the first build's worker: a new instance-id (the token).
    assert!(fs::read(&e).unwrap() != fs::read(&a).unwrap());
    // reimage = build --node (with the fresh token) + flash.
    let dist2 = tmp.path().join("dist2");
    ok(&build_with(
        &spec,
        &dist2,
        &arts,
        &cache,
        &["--node", "pi-cp-1", "--token", TOKEN, "--new-cluster"],
    ));
    let c = tmp.path().join("c.card");
    ok(&piforge(&[
        "flash",
        dist2.join("pi-cp-1.img").to_str().unwrap(),
        c.to_str().unwrap(),
    ]));
    let d = tmp.path().join("d.card");
    let out = ok(&piforge(&[
        "reimage",
        "--spec",
        spec_s,
        "--node",
        "pi-cp-1",
        d.to_str().unwrap(),
        "--token",
        TOKEN,
        "--new-cluster",
        "--artifacts",
        arts_s,
        "--allow-unpinned",
    ]));
    assert!(
        fs::read(&c).unwrap() == fs::read(&d).unwrap(),
        "reimage differs from build --node + flash"
    );
    assert!(out.contains("kubeadm init"), "{out}");
}

#[test]
fn on_a_terminal_it_asks_and_writes_only_after_yes() {
    // `script` (util-linux) gives piforge a terminal on standard input.
    let tmp = tempfile::tempdir().unwrap();
    let img = image();
    let len = fs::metadata(&img).unwrap().len() as usize;
    let lo = Loop::new(tmp.path(), "disk", len);
    let ask = |answer: &str| {
        let cmd = format!(
            "{} flash {} {} --force",
            env!("CARGO_BIN_EXE_piforge"),
            img.display(),
            lo.path()
        );
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("PIFORGE_CACHE", &built().cache)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux)");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), answer.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let before = sha256(&lo.backing);
    let (code, out) = ask("no\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Type yes") && out.contains("was not confirmed; nothing was written"),
        "{out}"
    );
    assert!(
        out.contains("loop, no partition table piforge reads"),
        "{out}"
    );
    assert_eq!(sha256(&lo.backing), before);
    let (code, out) = ask("yes\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verified in"), "{out}");
    assert!(run("sfdisk", &["-d", lo.path()]).contains("type=83"));
}

/// A disk in a fake sysfs (`ROOT/sys/block/NAME` -> `ROOT/sys/devices/UNDER/NAME`, with
/// `removable` and `size`) and its device node (`ROOT/dev/NAME`, an empty regular file).
fn fake_disk(root: &Path, name: &str, under: &str, removable: &str, sectors: u64) {
    let real = root.join("sys/devices").join(under).join(name);
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join("removable"), removable).unwrap();
    fs::write(real.join("size"), format!("{sectors}\n")).unwrap();
    fs::create_dir_all(root.join("sys/block")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    let link = root.join("sys/block").join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(&real, link).unwrap();
        fs::write(root.join("dev").join(name), b"").unwrap();
    }
}

/// Kills the child when a test panics, so a failed wait never leaves it polling.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn flash_all_wait_writes_the_card_that_appears_and_stops_on_ctrl_c() {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = two_node_spec(tmp.path(), "flash", &fixture("trixie.img"));
    let devs = tmp.path().join("devices");
    // There before the run: the system disk.
    fake_disk(&devs, "sda", "pci0/ata1/host0/target0/block", "0", 1 << 21);
    let child = Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(["flash", "--spec", spec.to_str().unwrap(), "--all", "--wait"])
        .args(["--yes", "--test-devices", devs.to_str().unwrap()])
        .args(["--artifacts", arts.to_str().unwrap(), "--allow-unpinned"])
        .env("PIFORGE_CACHE", &cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let (tx, rx) = mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str, secs: u64| {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(l) => seen.push(l),
                Err(_) => panic!("no {needle:?} within {secs} s; stderr: {seen:#?}"),
            }
        }
    };
    // The build, then the question for the first node.
    wait_for("Insert the card for pi-cp-1", 900);
    // A new fixed disk is not a card; a USB reader's card (sysfs removable 0) is.
    fake_disk(&devs, "sdb", "pci0/ata2/host1/target1/block", "0", 1 << 21);
    std::thread::sleep(Duration::from_millis(1500));
    fake_disk(
        &devs,
        "sdc",
        "pci0/usb2/2-1/2-1:1.0/host3/block",
        "0",
        1 << 21,
    );
    let found = wait_for("found ", 30);
    assert!(found.ends_with("/dev/sdc"), "{found}");
    wait_for("Insert the card for pi-w-1", 300);
    // A card the desktop mounted as it came in: named once, with where it is mounted, and
    // not written while mounted (the wait goes on).
    fake_disk(
        &devs,
        "sdd",
        "pci0/usb3/3-1/3-1:1.0/host4/block",
        "0",
        1 << 21,
    );
    let part = devs.join("sys/devices/pci0/usb3/3-1/3-1:1.0/host4/block/sdd/sdd1");
    fs::create_dir_all(&part).unwrap();
    fs::write(part.join("partition"), "1\n").unwrap();
    fs::create_dir_all(devs.join("proc/self")).unwrap();
    fs::write(
        devs.join("proc/self/mountinfo"),
        format!(
            "40 25 0:77 / /media/u/bootfs rw - vfat {} rw\n",
            devs.join("dev/sdd1").display()
        ),
    )
    .unwrap();
    let told = wait_for("is mounted", 30);
    assert!(
        told.contains("/dev/sdd is mounted (at /media/u/bootfs): unmount it"),
        "{told}"
    );
    let quiet_until = Instant::now() + Duration::from_millis(3500);
    while let Ok(l) = rx.recv_timeout(quiet_until.saturating_duration_since(Instant::now())) {
        assert!(
            !l.contains("is mounted") && !l.contains("found "),
            "while mounted: {l}"
        );
    }
    // Ctrl-C while waiting: the handler ends the run at once (130), the private build
    // directory is removed.
    let t = Instant::now();
    run("kill", &["-INT", &child.0.id().to_string()]);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still waiting after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("Label this card: pi-cp-1"), "{out}");
    let left: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".flash-build"))
        .collect();
    assert!(left.is_empty(), "the build directory was left: {left:?}");
    // The card found holds pi-cp-1's image: fsck passes, its meta-data names the node.
    let card = devs.join("dev/sdc");
    let len = fs::metadata(&card).unwrap().len();
    fsck_partitions(&card, len, tmp.path());
    let (boot, _) = offsets(&card, tmp.path());
    let meta = mtype(&card, boot, "meta-data");
    assert!(meta.contains("pi-cp-1"), "{meta}");
    for never in ["sdb", "sdd"] {
        assert_eq!(
            fs::metadata(devs.join("dev").join(never)).unwrap().len(),
            0,
            "{never} was written"
        );
    }
}
