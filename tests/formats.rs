//! `piforge build --format img|xz|zst`: the compressed images (judged by xz and zstd), the
//! bmap files (judged by bmaptool, and by e2fsck and fsck.vfat on an image holding only the
//! mapped blocks), os_list.json, and outputs that do not depend on the thread count.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const NODES: [&str; 2] = ["pi-cp-1", "pi-w-1"];

fn ok(r: &std::process::Output) {
    assert!(
        r.status.success(),
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
}

fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (see tests/install-deps.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn every_format_with_bmap_and_os_list_and_the_same_bytes_on_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = two_node_spec(tmp.path(), "formats", &fixture("trixie.img"));
    let dist = tmp.path().join("dist");
    let fmt = ["--format", "img", "--format", "xz", "--format", "zst"];
    let mut args = fmt.to_vec();
    args.extend(["--threads", "4", "--jobs", "2"]);
    ok(&build_with(&spec, &dist, &arts, &cache, &args));

    for node in NODES {
        let img = dist.join(format!("{node}.img"));
        let raw = fs::read(&img).unwrap();
        let xz = dist.join(format!("{node}.img.xz"));
        let zst = dist.join(format!("{node}.img.zst"));
        stdout_of(Command::new("xz").arg("-t").arg(&xz));
        assert!(
            stdout_of(Command::new("xz").arg("-dc").arg(&xz)) == raw,
            "{node}: xz -dc"
        );
        assert!(
            stdout_of(Command::new("xz").args(["-T0", "-dc"]).arg(&xz)) == raw,
            "{node}: xz -T0 -dc"
        );
        // One xz stream of many blocks (what lets readers decompress on several threads):
        // `xz --robot -lv` says `file <streams> <blocks> ...`.
        let list = String::from_utf8(stdout_of(
            Command::new("xz").args(["--robot", "-lv"]).arg(&xz),
        ))
        .unwrap();
        let file: Vec<&str> = list
            .lines()
            .find_map(|l| l.strip_prefix("file\t"))
            .unwrap_or_else(|| panic!("{list}"))
            .split('\t')
            .collect();
        assert_eq!(file[0], "1", "{node}: xz streams: {list}");
        assert!(
            file[1].parse::<u64>().unwrap() > 1,
            "{node}: xz blocks: {list}"
        );
        // Many zstd frames (each decompressible on its own), `zstd -lv`.
        let frames = String::from_utf8(stdout_of(Command::new("zstd").arg("-lv").arg(&zst)))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("# Zstandard Frames:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(frames > 1, "{node}: zstd frames: {frames}");
        stdout_of(Command::new("zstd").arg("-qt").arg(&zst));
        assert!(
            stdout_of(Command::new("zstd").arg("-qdc").arg(&zst)) == raw,
            "{node}: zstd -dc"
        );

        // bmaptool finds <node>.img.bmap beside both files, checks the bmap's own checksum
        // and every range's, and writes only the mapped blocks into a new (sparse, zeroed)
        // target: the image with its unmapped ranges zeroed.
        for src in [&img, &xz] {
            let target = tmp.path().join(format!("{node}.target"));
            let _ = fs::remove_file(&target);
            let out = Command::new("bmaptool")
                .arg("copy")
                .arg(src)
                .arg(&target)
                .output()
                .expect("bmaptool (bmap-tools)");
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success(),
                "bmaptool copy {}: {log}",
                src.display()
            );
            assert!(log.contains("discovered bmap file"), "{log}");
            assert_eq!(fs::metadata(&target).unwrap().len(), raw.len() as u64);
            let (boot, root) = offsets(&target, &cache);
            let (code, fsck) = e2fsck(&target, root);
            assert_eq!(
                code, 0,
                "{node}: e2fsck -fn on the mapped blocks only: {fsck}"
            );
            let part = tmp.path().join("boot.part");
            let boot_bytes = root - boot; // the FAT partition ends before the root starts
            let t = fs::read(&target).unwrap();
            fs::write(&part, &t[boot as usize..(boot + boot_bytes) as usize]).unwrap();
            let (code, fsck) = run_status("fsck.vfat", &["-n", part.to_str().unwrap()]);
            assert_eq!(
                code, 0,
                "{node}: fsck.vfat -n on the mapped blocks only: {fsck}"
            );
        }
        // The map is the filesystems' allocation, not the whole image.
        let map = piforge::bmap::map_image(&img).unwrap();
        assert!(map.mapped_blocks() * 2 < map.blocks(), "{map:?}");
    }

    // SHA256SUMS covers every file (the node files, os_list.json, the SBOM and the
    // manifest), and so does the manifest.
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 4 * NODES.len() + 3, "{sums}");
    for l in ["os_list.json", "manifest.json", "sbom.spdx.json"] {
        assert!(sums.contains(&format!("  {l}\n")), "{l}: {sums}");
    }
    sums_check(&dist);
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dist.join("manifest.json")).unwrap()).unwrap();
    for (n, node) in m["nodes"].as_array().unwrap().iter().zip(NODES) {
        let mut files: Vec<&str> = n["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        files.sort();
        let want: Vec<String> = ["img", "img.bmap", "img.xz", "img.zst"]
            .iter()
            .map(|e| format!("{node}.{e}"))
            .collect();
        assert_eq!(files, want);
        for f in n["files"].as_array().unwrap() {
            let p = dist.join(f["name"].as_str().unwrap());
            assert_eq!(f["sha256"], sha256(&p).as_str(), "{}", p.display());
            assert_eq!(f["bytes"], fs::metadata(&p).unwrap().len());
        }
    }
    let list: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dist.join("os_list.json")).unwrap()).unwrap();
    let entries = list["os_list"].as_array().unwrap();
    assert_eq!(entries.len(), NODES.len());
    let dir = fs::canonicalize(&dist).unwrap();
    for (e, node) in entries.iter().zip(NODES) {
        let xz = dist.join(format!("{node}.img.xz"));
        let img = dist.join(format!("{node}.img"));
        assert_eq!(e["name"], node);
        assert_eq!(e["url"], format!("file://{}/{node}.img.xz", dir.display()));
        assert_eq!(e["image_download_sha256"], sha256(&xz));
        assert_eq!(e["image_download_size"], fs::metadata(&xz).unwrap().len());
        assert_eq!(e["extract_sha256"], sha256(&img));
        assert_eq!(e["extract_size"], fs::metadata(&img).unwrap().len());
        assert_eq!(
            e["init_format"], "none",
            "Imager must not customise the node"
        );
    }

    // The same build on one thread, one node at a time, in another directory, with a cache
    // of its own (the first build's compressed chunks are kept in its cache): the same bytes
    // in every format.
    let dist1 = tmp.path().join("dist-1-thread");
    let mut args = fmt.to_vec();
    args.extend(["--threads", "1", "--jobs", "1"]);
    let cache1 = tmp.path().join("cache-1-thread");
    ok(&build_with(&spec, &dist1, &arts, &cache1, &args));
    for node in NODES {
        for ext in ["img", "img.xz", "img.zst", "img.bmap"] {
            let name = format!("{node}.{ext}");
            assert!(
                fs::read(dist.join(&name)).unwrap() == fs::read(dist1.join(&name)).unwrap(),
                "{name} differs between 4 threads and 1"
            );
        }
    }

    // Only xz: no raw image in dist, and the sums still check.
    let dist_xz = tmp.path().join("dist-xz");
    ok(&build_with(
        &spec,
        &dist_xz,
        &arts,
        &cache,
        &["--format", "xz"],
    ));
    assert_eq!(
        names(&dist_xz),
        [
            "SHA256SUMS",
            "manifest.json",
            "os_list.json",
            "pi-cp-1.img.bmap",
            "pi-cp-1.img.xz",
            "pi-w-1.img.bmap",
            "pi-w-1.img.xz",
            "sbom.spdx.json"
        ]
    );
    sums_check(&dist_xz);
    assert!(
        fs::read(dist_xz.join("pi-w-1.img.xz")).unwrap()
            == fs::read(dist.join("pi-w-1.img.xz")).unwrap()
    );
    // Without the raw image, os_list.json still gives Imager the raw image's size and digest
    // (from the manifest), which the xz file decompresses to.
    let list: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dist_xz.join("os_list.json")).unwrap()).unwrap();
    let raw = fs::read(dist.join("pi-w-1.img")).unwrap();
    assert_eq!(list["os_list"][1]["extract_size"], raw.len() as u64);
    assert_eq!(
        list["os_list"][1]["extract_sha256"],
        sha256(&dist.join("pi-w-1.img")).as_str()
    );

    // --verify rebuilds every format and agrees; a changed byte in a compressed file is found.
    let verify = || {
        verify_build(
            &spec,
            &arts,
            &dist_xz.join("SHA256SUMS"),
            &cache,
            &["--format", "xz"],
        )
    };
    let r = verify();
    ok(&r);
    assert!(String::from_utf8_lossy(&r.stdout).contains("verified"));
    {
        use std::os::unix::fs::FileExt;
        let p = dist_xz.join("pi-w-1.img.xz");
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 100).unwrap();
        f.write_all_at(&[b[0] ^ 1], 100).unwrap();
        // As if an earlier build had made these bytes: SHA256SUMS lists their digest.
        relist(&dist_xz, "pi-w-1.img.xz");
    }
    let r = verify();
    assert_eq!(r.status.code(), Some(1));
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.lines().any(|l| l.contains("pi-w-1.img.xz")
            && l.contains("byte 100")
            && l.contains("decompressing the two")),
        "{text}"
    );
    assert!(!text.contains("pi-cp-1"), "{text}");

    // A valid xz file of an image with one byte of the node's user-data changed: verify, given
    // no --format (the xz-only directory's manifest says it), decompresses the rebuilt file
    // (no raw image beside it) and names the file inside the image.
    let img = tmp.path().join("tampered.img");
    fs::copy(dist.join("pi-w-1.img"), &img).unwrap();
    let (boot, root) = offsets(&img, &cache);
    let data = fs::read(&img).unwrap();
    let needle = b"\nhostname: pi-w-1";
    let at = data[boot as usize..root as usize]
        .windows(needle.len())
        .position(|x| x == needle)
        .expect("user-data on the boot partition") as u64
        + boot
        + 1;
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&[data[at as usize] ^ 0x20], at).unwrap();
    }
    let packed = stdout_of(Command::new("xz").args(["-q", "-c", "-T1", img.to_str().unwrap()]));
    fs::write(dist_xz.join("pi-w-1.img.xz"), packed).unwrap();
    relist(&dist_xz, "pi-w-1.img.xz");
    let r = verify_build(&spec, &arts, &dist_xz.join("SHA256SUMS"), &cache, &[]);
    assert_eq!(r.status.code(), Some(1));
    let text = String::from_utf8_lossy(&r.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("pi-w-1.img.xz"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!("decompressed, at byte {at}"))
            && line.contains("partition 1")
            && line.contains("/user-data"),
        "{line}"
    );
    assert_eq!(text.matches("differs:").count(), 1, "{text}");
    assert!(String::from_utf8_lossy(&r.stderr).contains("--format xz"));
    // The decompressed scratch copy went with the rebuild.
    let left: Vec<_> = fs::read_dir(&dist_xz)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.iter().all(|n| n == ".piforge.lock"), "{left:?}");

    // Built again without --format xz: the xz files are removed as no longer built, the raw
    // images and bmap files take their place.
    ok(&build_with(&spec, &dist_xz, &arts, &cache, &[]));
    assert_eq!(
        names(&dist_xz),
        [
            "SHA256SUMS",
            "manifest.json",
            "os_list.json",
            "pi-cp-1.img",
            "pi-cp-1.img.bmap",
            "pi-w-1.img",
            "pi-w-1.img.bmap",
            "sbom.spdx.json"
        ]
    );
    sums_check(&dist_xz);
}

/// Rewrites `dir/SHA256SUMS`'s line for `name` with the file's digest now (as if an earlier
/// build had made its bytes); the line must change.
fn relist(dir: &Path, name: &str) {
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let listed: String = sums
        .lines()
        .map(|l| match l.split_once("  ") {
            Some((_, f)) if f == name => format!("{}  {name}\n", sha256(&dir.join(name))),
            _ => format!("{l}\n"),
        })
        .collect();
    assert_ne!(listed, sums, "{name}: the same digest");
    fs::write(dir.join("SHA256SUMS"), listed).unwrap();
}

/// `piforge build --verify SUMS` of `spec` with the stand-in artifacts, and `extra` options.
fn verify_build(
    spec: &Path,
    arts: &Path,
    sums: &Path,
    cache: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--artifacts",
        arts.to_str().unwrap(),
        "--allow-unpinned",
        "--verify",
        sums.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    piforge(&args, cache)
}

/// The `copies:` line a build printed.
fn copies_line_of(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("copies: "))
        .unwrap_or_else(|| panic!("no copies line: {stdout}"))
        .to_string()
}

/// The build's `copies: N <how> (S of their A 4 MiB chunks ...` line, checked to say that most
/// but not all of the nodes' chunks were known to be their role image's (a node's layer
/// touches a few).
fn copies_line(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("copies: "))
        .unwrap_or_else(|| panic!("no copies line: {stdout}"));
    let counts: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (s, a) = (counts[1], counts[2]);
    assert!(a > 0 && s > a / 2 && s < a, "{line}");
    line.to_string()
}

/// Nodes of one role are written over their role image and its data copied around the edits
/// (on a filesystem without reflinks, as the test directory's), and take the digests of the
/// chunks they share with their role image (the bmap's range checksums, the compressed
/// formats' chunk keys) from the node built before them: every file is the same as when each
/// node is a whole copy edited in place and hashes all of its own bytes (`--test-no-reuse`),
/// and the bmap of a node whose checksums were taken so still passes bmaptool, e2fsck and
/// fsck.vfat.
#[test]
fn digests_taken_from_the_role_image_change_no_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let more = "  - name: pi-w-2\n    role: worker\n    address: 192.168.50.12/24\n  - name: pi-w-3\n    role: worker\n    address: 192.168.50.13/24\n";
    let spec = cluster_spec(tmp.path(), "reuse", &fixture("trixie.img"), more);
    let fmt = ["--format", "img", "--format", "xz", "--format", "zst"];
    let shared = tmp.path().join("shared");
    let mut args = fmt.to_vec();
    args.extend(["--jobs", "2"]);
    let out = build_with(&spec, &shared, &arts, &cache, &args);
    ok(&out);
    // The three workers written over their role image (the test directory's filesystem has no
    // reflinks); the control plane, its role's only node, takes the role image itself.
    let line = copies_line(&out);
    assert!(
        line.starts_with("copies: 3 written over their role image"),
        "{line}"
    );
    let told = String::from_utf8_lossy(&out.stdout);
    assert!(
        told.lines()
            .any(|l| l.starts_with("compressed: xz ") && !l.starts_with("compressed: xz 0 of ")),
        "{told}"
    );
    let alone = tmp.path().join("alone");
    args.push("--test-no-reuse");
    ok(&build_with(&spec, &alone, &arts, &cache, &args));
    let files = names(&shared);
    assert_eq!(files, names(&alone));
    assert_eq!(files.len(), 4 * 4 + 4, "{files:?}");
    let (dir_a, dir_b) = (
        fs::canonicalize(&shared).unwrap(),
        fs::canonicalize(&alone).unwrap(),
    );
    for f in &files {
        let a = fs::read(shared.join(f)).unwrap();
        let b = fs::read(alone.join(f)).unwrap();
        if f.ends_with(".json") || f == "SHA256SUMS" {
            // os_list.json names the output directory (and the others list its digest).
            let a = String::from_utf8(a).unwrap();
            let a = a.replace(dir_a.to_str().unwrap(), dir_b.to_str().unwrap());
            if f == "os_list.json" {
                assert_eq!(a, String::from_utf8(b).unwrap(), "{f}");
            }
            continue;
        }
        assert!(a == b, "{f} differs with the role image's digests taken");
    }
    // SHA256SUMS agrees on every node file.
    let sums = |d: &Path| -> Vec<String> {
        fs::read_to_string(d.join("SHA256SUMS"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("pi-"))
            .map(String::from)
            .collect()
    };
    assert_eq!(sums(&shared), sums(&alone));
    assert_eq!(sums(&shared).len(), 16);
    // Built again: the role images' layers recorded what they wrote over the upstream image,
    // and the nodes' digests, taken by the first build, are remembered (the cache's nodes/):
    // the same files as `alone`, which hashed everything (--test-no-reuse remembers nothing).
    // (A build of the whole cluster makes the same cards as its first build; only a node
    // rebuilt alone carries /etc/piforge/rejoin.)
    let args: Vec<&str> = args
        .into_iter()
        .filter(|a| *a != "--test-no-reuse")
        .collect();
    let again = tmp.path().join("shared-again");
    let out = build_with(&spec, &again, &arts, &cache, &args);
    ok(&out);
    let line = copies_line(&out);
    assert!(
        line.ends_with(
            "; 4 of 4 with their digests remembered from an earlier build of the same bytes, \
             not taken again"
        ),
        "{line}"
    );
    // Every compressed chunk kept in the cache by the first build: none compressed again
    // (`alone`, which compressed everything, has the same bytes).
    let told = String::from_utf8_lossy(&out.stdout);
    for codec in ["xz", "zst"] {
        let line = told
            .lines()
            .find(|l| l.starts_with(&format!("compressed: {codec} ")))
            .unwrap_or_else(|| panic!("no compressed line for {codec}: {told}"));
        assert!(
            line.starts_with(&format!("compressed: {codec} 0 of ")),
            "{line}"
        );
    }
    same_node_files(&alone, &again, 16, "built again, the digests remembered");
    assert_eq!(sums(&again), sums(&alone));
    // Built again into the same directory, nothing changed: every node keeps the files the
    // build before left there (the same inodes: nothing written, hashed or compressed), and
    // they are still `alone`'s.
    use std::os::unix::fs::{FileExt, MetadataExt};
    let inodes = |d: &Path| -> Vec<(String, u64)> {
        names(d)
            .into_iter()
            .filter(|f| f.starts_with("pi-"))
            .map(|f| (f.clone(), fs::metadata(d.join(&f)).unwrap().ino()))
            .collect()
    };
    let before = inodes(&again);
    let out = build_with(&spec, &again, &arts, &cache, &args);
    ok(&out);
    let line = copies_line_of(&out);
    assert_eq!(
        line,
        "copies: 4 of 4 unchanged since the last build into this output directory (the files \
         it left there kept, as hard links, not written again)"
    );
    let told = String::from_utf8_lossy(&out.stdout);
    assert!(!told.contains("compressed: "), "{told}");
    assert_eq!(inodes(&again), before);
    same_node_files(&alone, &again, 16, "kept from the build before");
    assert_eq!(sums(&again), sums(&alone));
    // A file written to since (one byte of pi-w-3's image): that node is made again, the
    // others keep theirs, and its image is what it should be again.
    let w3 = again.join("pi-w-3.img");
    let first = fs::read(&w3).unwrap()[0];
    let f = fs::OpenOptions::new().write(true).open(&w3).unwrap();
    f.write_all_at(&[!first], 0).unwrap();
    drop(f);
    let out = build_with(&spec, &again, &arts, &cache, &args);
    ok(&out);
    let line = copies_line_of(&out);
    assert!(
        line.ends_with(
            "3 of 4 unchanged since the last build into this output directory (the files it \
             left there kept, as hard links, not written again)"
        ),
        "{line}"
    );
    let after = inodes(&again);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a == b, !name.starts_with("pi-w-3."), "{name}");
    }
    same_node_files(&alone, &again, 16, "a node written to since made again");
    sums_check(&again);
    // One node alone (`--node`): its three layers written over the upstream image into its
    // own file, one after the other, no role image; its files are those of the same node
    // built from role images (`--test-no-reuse`: the common and role layers on a copy of the
    // upstream image, the node's on that). Both are rebuilds of pi-w-2 (its card then
    // carries /etc/piforge/rejoin), as is the case for all but the first build of a node.
    let node_args = [&fmt[..], &["--node", "pi-w-2"]].concat();
    let one = tmp.path().join("one");
    let out = build_with(&spec, &one, &arts, &cache, &node_args);
    ok(&out);
    let line = copies_line_of(&out);
    assert!(
        line.starts_with("copies: the only node written over the upstream image"),
        "{line}"
    );
    let one_copied = tmp.path().join("one-copied");
    let no_reuse = [&node_args[..], &["--test-no-reuse"]].concat();
    ok(&build_with(&spec, &one_copied, &arts, &cache, &no_reuse));
    same_node_files(&one, &one_copied, 4, "built alone over the upstream image");
    // Built again, the same bytes: its digests are remembered from the build before (the
    // cache's nodes/), not taken, and every file is the same; the image is what SHA256SUMS
    // says (sha256sum of the file itself).
    let again = tmp.path().join("one-again");
    let out = build_with(&spec, &again, &arts, &cache, &node_args);
    ok(&out);
    let line = copies_line_of(&out);
    assert!(line.contains("digests remembered"), "{line}");
    same_node_files(&one, &again, 4, "its digests are remembered");
    // (Only the node files: os_list.json names the output directory.)
    assert_eq!(sums(&again), sums(&one));
    sums_check(&again);
    // `--verify` hashes what it rebuilds, never a remembered digest: with the memo made to
    // lie, a build believes it (the cache is trusted as its decompressed images are), and
    // --verify of that build's SHA256SUMS finds the image differs.
    // (One memo per node image: the four of the cluster's build, and this one.)
    let real = sha256(&again.join("pi-w-2.img"));
    let memos: Vec<(PathBuf, String)> = fs::read_dir(cache.join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), fs::read_to_string(&p).unwrap()))
        .collect();
    assert_eq!(memos.len(), 5, "{memos:?}");
    let mine: Vec<&(PathBuf, String)> = memos
        .iter()
        .filter(|(_, m)| m.starts_with(&format!("v1 {real} ")))
        .collect();
    assert_eq!(mine.len(), 1, "{memos:?}");
    let (path, memo) = mine[0];
    fs::write(path, memo.replacen(&real, &"0".repeat(64), 1)).unwrap();
    let lied = tmp.path().join("one-lied");
    ok(&build_with(&spec, &lied, &arts, &cache, &node_args));
    let listed = fs::read_to_string(lied.join("SHA256SUMS")).unwrap();
    assert!(listed.contains(&format!("{}  pi-w-2.img\n", "0".repeat(64))));
    let r = verify_build(&spec, &arts, &lied.join("SHA256SUMS"), &cache, &node_args);
    assert!(!r.status.success(), "--verify took the remembered digest");
    let told =
        String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);
    assert!(told.contains("pi-w-2.img:"), "{told}");
    assert!(!told.contains("pi-w-2.img.xz:"), "{told}");
    // The third worker's files: node images differ from each other (their disk ids).
    let w3 = shared.join("pi-w-3.img");
    assert!(fs::read(&w3).unwrap() != fs::read(shared.join("pi-w-2.img")).unwrap());
    // The bmap's ranges are cut at every 4 MiB (1024 blocks).
    let bmap = fs::read_to_string(shared.join("pi-w-3.img.bmap")).unwrap();
    let ranges: Vec<(u64, u64)> = bmap
        .lines()
        .filter_map(|l| l.split_once("\"> ")?.1.split_once(" </Range>"))
        .map(|(r, _)| match r.split_once('-') {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
            None => (r.parse().unwrap(), r.parse().unwrap()),
        })
        .collect();
    assert!(
        ranges.windows(2).any(|w| w[0].1 + 1 == w[1].0),
        "no range cut: {bmap}"
    );
    for w in ranges.windows(2) {
        assert!(
            w[0].1 + 1 < w[1].0 || w[1].0 % 1024 == 0,
            "touching away from a 4 MiB boundary: {w:?}"
        );
    }
    let target = tmp.path().join("w3.target");
    let out = Command::new("bmaptool")
        .arg("copy")
        .arg(shared.join("pi-w-3.img.xz"))
        .arg(&target)
        .output()
        .expect("bmaptool (bmap-tools)");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bmaptool copy: {log}");
    assert!(log.contains("discovered bmap file"), "{log}");
    let (boot, root) = offsets(&target, &cache);
    let (code, fsck) = e2fsck(&target, root);
    assert_eq!(code, 0, "e2fsck -fn on the mapped blocks only: {fsck}");
    let part = tmp.path().join("boot.part");
    let t = fs::read(&target).unwrap();
    fs::write(&part, &t[boot as usize..root as usize]).unwrap();
    let (code, fsck) = run_status("fsck.vfat", &["-n", part.to_str().unwrap()]);
    assert_eq!(code, 0, "fsck.vfat -n on the mapped blocks only: {fsck}");
}

/// An XFS with reflinks (`mkfs.xfs -m reflink=1`) loop-mounted on a directory, unmounted when
/// dropped. The tests run as root (as in CI): a missing mkfs.xfs or mount is a failure.
struct Xfs {
    dir: std::path::PathBuf,
}

impl Xfs {
    fn new(tmp: &Path) -> Xfs {
        let file = tmp.join("xfs.img");
        fs::File::create(&file).unwrap().set_len(1 << 30).unwrap();
        let (code, log) = run_status(
            "mkfs.xfs",
            &["-q", "-m", "reflink=1", file.to_str().unwrap()],
        );
        assert_eq!(code, 0, "mkfs.xfs (xfsprogs) -m reflink=1: {log}");
        let dir = tmp.join("xfs");
        fs::create_dir(&dir).unwrap();
        let (code, log) = run_status(
            "mount",
            &["-o", "loop", file.to_str().unwrap(), dir.to_str().unwrap()],
        );
        assert_eq!(code, 0, "mount -o loop (the tests run as root): {log}");
        Xfs { dir }
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
    }
}

/// Node images built on a filesystem with reflinks share their role image's blocks, and the
/// chunks still shared are read from the role image: every file is the same as when each node
/// is copied and hashed on its own (`--test-no-reuse`), in every format.
#[test]
fn reflinked_node_images_are_read_from_the_role_image() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let more = "  - name: pi-w-2\n    role: worker\n    address: 192.168.50.12/24\n";
    let spec = cluster_spec(tmp.path(), "reflink", &fixture("trixie.img"), more);
    let args = ["--format", "img", "--format", "xz", "--format", "zst"];
    let xfs = Xfs::new(tmp.path());
    let shared = xfs.dir.join("dist");
    let out = build_with(&spec, &shared, &arts, &cache, &args);
    ok(&out);
    // The two workers by reflink; the control plane, its role's only node, takes the role
    // image itself.
    let line = copies_line(&out);
    assert!(line.starts_with("copies: 2 by reflink ("), "{line}");
    assert!(
        line.ends_with("; 1 the role image itself (its role's only node)"),
        "{line}"
    );
    let alone = tmp.path().join("alone");
    let mut no_reuse = args.to_vec();
    no_reuse.push("--test-no-reuse");
    ok(&build_with(&spec, &alone, &arts, &cache, &no_reuse));
    let files = names(&shared);
    assert_eq!(files, names(&alone));
    assert_eq!(files.len(), 3 * 4 + 4, "{files:?}");
    for f in files.iter().filter(|f| f.starts_with("pi-")) {
        let a = fs::read(shared.join(f)).unwrap();
        assert!(
            a == fs::read(alone.join(f)).unwrap(),
            "{f} differs when reflinked"
        );
    }
    let sums = |d: &Path| -> Vec<String> {
        let text = fs::read_to_string(d.join("SHA256SUMS")).unwrap();
        text.lines()
            .filter(|l| l.contains(" pi-"))
            .map(String::from)
            .collect()
    };
    assert_eq!(sums(&shared), sums(&alone));
    assert_eq!(sums(&shared).len(), 3 * 4);
    // One node alone, its upstream image on the same XFS: a reflink of it, its layers
    // written into it; the same files as when it is built from role images. (From an image on
    // another filesystem, it is written over the image as on any filesystem.)
    let spec_dir = xfs.dir.join("spec");
    fs::create_dir(&spec_dir).unwrap();
    let image = xfs.dir.join("trixie.img");
    fs::copy(fixture("trixie.img"), &image).unwrap();
    let spec = cluster_spec(&spec_dir, "reflink", &image, more);
    let node_args = [&args[..], &["--node", "pi-w-2"]].concat();
    let no_reuse = [&node_args[..], &["--test-no-reuse"]].concat();
    // Built once first: the two compared are then both rebuilds (a rebuilt node's card
    // carries /etc/piforge/rejoin).
    ok(&build_with(
        &spec,
        &xfs.dir.join("first"),
        &arts,
        &cache,
        &no_reuse,
    ));
    let one = xfs.dir.join("one");
    let out = build_with(&spec, &one, &arts, &cache, &node_args);
    ok(&out);
    assert_eq!(
        copies_line_of(&out),
        "copies: the only node a reflink of the upstream image, its layers written into it"
    );
    let one_copied = xfs.dir.join("one-copied");
    ok(&build_with(&spec, &one_copied, &arts, &cache, &no_reuse));
    same_node_files(&one, &one_copied, 4, "built alone by reflink");
    // Built again: the layers written into the reflink recorded what they wrote, and its
    // digests are remembered from `one`.
    let again = xfs.dir.join("one-again");
    let out = build_with(&spec, &again, &arts, &cache, &node_args);
    ok(&out);
    assert_eq!(
        copies_line_of(&out),
        "copies: the only node a reflink of the upstream image, its layers written into it; \
         its digests remembered from an earlier build of the same bytes, not taken again"
    );
    same_node_files(
        &one,
        &again,
        4,
        "built again by reflink, its digests remembered",
    );
}

/// The node files (`pi-*`) of the build in `a`, `count` of them, are those in `b` byte for
/// byte.
fn same_node_files(a: &Path, b: &Path, count: usize, how: &str) {
    let node_files: Vec<String> = names(a)
        .into_iter()
        .filter(|f| f.starts_with("pi-"))
        .collect();
    assert_eq!(node_files.len(), count, "{node_files:?}");
    for f in &node_files {
        assert!(
            fs::read(a.join(f)).unwrap() == fs::read(b.join(f)).unwrap(),
            "{f} differs when {how}"
        );
    }
}

/// The files in `dir` but piforge's own dot files (the output directory's lock).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn stale_data_in_free_ext4_blocks_and_fat_clusters_is_not_mapped() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let img = tmp.path().join("stale.img");
    fs::copy(fixture("trixie.img"), &img).unwrap();
    let (boot, root) = offsets(&img, &cache);
    let before = piforge::bmap::map_image(&img).unwrap();
    // A free block of the root filesystem, per debugfs (not piforge), in the middle of it.
    let stats = debugfs(&img, root, "stats");
    let blocks: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("debugfs stats: Block count");
    let ffb = debugfs(&img, root, &format!("ffb 1 {}", blocks / 2));
    let free: u64 = ffb
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("debugfs ffb: {ffb}"));
    let at = root + free * 4096;
    assert!(
        !before.is_mapped(at),
        "free block {free} mapped in the fixture"
    );
    // Stale, non-zero data in it (what a deleted file leaves behind).
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&[0xa5u8; 4096], at).unwrap();
    }
    let after = piforge::bmap::map_image(&img).unwrap();
    assert!(
        !after.is_mapped(at),
        "a free ext4 block with stale data is mapped"
    );
    assert_eq!(before, after);
    // The same in free clusters of the FAT partition: its middle, past the few files at the
    // start of the fixture's boot partition (unmapped before; `mdir` lists the same files and
    // sizes before and after the write).
    let mid = boot + (root - boot) / 2 / 4096 * 4096;
    assert!(
        !before.is_mapped(mid),
        "the middle of the boot partition is mapped"
    );
    let listing = |img: &Path| {
        run(
            "mdir",
            &["-/", "-i", &format!("{}@@{boot}", img.display()), "::"],
        )
    };
    let files_before = listing(&img);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&[0x5au8; 65536], mid).unwrap();
    }
    assert_eq!(listing(&img), files_before);
    let after = piforge::bmap::map_image(&img).unwrap();
    assert!(
        !after.is_mapped(mid) && !after.is_mapped(mid + 65535),
        "free FAT clusters with stale data are mapped"
    );
    assert_eq!(before, after);
    // The same bytes outside any filesystem's allocation but outside every partition are
    // mapped: the gap before the boot partition is mapped by content.
    assert!(boot > 8192);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(b"not zero", 8192).unwrap();
    }
    assert!(piforge::bmap::map_image(&img).unwrap().is_mapped(8192));
}

/// Peak resident memory of the program `cmd` runs, in bytes, with its status and stderr.
///
/// Measured by GNU time (`%M`, its child's wait4 rusage), not by this test process's own wait4:
/// Linux starts a child's peak RSS at its parent's peak at fork (the copied address space's
/// high-water mark survives the exec), and this test binary's peak is that of whichever test
/// read two whole images. GNU time's own fork is of a small process.
fn run_with_peak_rss(cmd: &mut Command) -> (std::process::ExitStatus, String, u64) {
    let rss = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M").arg("-o").arg(rss.path());
    timed.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let out = timed
        .stdout(std::process::Stdio::null())
        .output()
        .expect("GNU time (/usr/bin/time, Debian package time) measures the peak RSS");
    let kib: u64 = fs::read_to_string(rss.path())
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no %M from /usr/bin/time"));
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        kib * 1024,
    )
}

/// Issue 13: peak RSS under 300 MB whatever the thread count. `--threads 32 --format xz` on an
/// image with ~25 distinct 4 MiB chunks of data (written into blocks no filesystem uses, so
/// every chunk is compressed): unbounded, 32 encoders of ~45 MiB each would run at once.
#[test]
fn xz_on_32_threads_stays_under_300_mb() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let img = tmp.path().join("full.img");
    fs::copy(fixture("trixie.img"), &img).unwrap();
    let map = piforge::bmap::map_image(&img).unwrap();
    let chunk = piforge::compress::CHUNK as u64;
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    let mut filled = 0;
    for i in 0..map.image_bytes / chunk {
        let (from, to) = (i * chunk, (i + 1) * chunk);
        if (from..to).step_by(4096).any(|at| map.is_mapped(at)) {
            continue;
        }
        // Distinct per chunk, quick to compress.
        let mut block = vec![0u8; 4096];
        for (j, b) in block.iter_mut().enumerate() {
            *b = (j as u64 * 31 + i * 7 + j as u64 / 97) as u8 | 1;
        }
        for at in (from..to).step_by(4096) {
            f.write_all_at(&block, at).unwrap();
        }
        filled += 1;
    }
    drop(f);
    assert!(filled >= 16, "only {filled} free chunks in the fixture");
    let spec = two_node_spec(tmp.path(), "formats", &img);
    let dist = tmp.path().join("dist");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_piforge"));
    cmd.args(["--quiet", "build", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&dist)
        .arg("--artifacts")
        .arg(&arts)
        .args([
            "--allow-unpinned",
            "--format",
            "xz",
            "--threads",
            "32",
            "--jobs",
            "2",
        ])
        .env("PIFORGE_CACHE", &cache)
        .env_remove("SOURCE_DATE_EPOCH");
    let (status, stderr, peak) = run_with_peak_rss(&mut cmd);
    assert!(status.success(), "{stderr}");
    // The reduction is said in one line.
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("--threads 32"))
        .collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(notes[0].contains("xz compresses on"), "{stderr}");
    assert!(peak < 300_000_000, "peak RSS {} MiB", peak >> 20);
    for node in NODES {
        stdout_of(
            Command::new("xz")
                .arg("-t")
                .arg(dist.join(format!("{node}.img.xz"))),
        );
    }
    eprintln!("peak RSS with --threads 32 --format xz: {} MiB", peak >> 20);
}

/// A build of `spec` into `out` that succeeds and whose `copies:` line says `what`.
fn built_saying(spec: &Path, out: &Path, arts: &Path, cache: &Path, extra: &[&str], what: &str) {
    let r = build_with(spec, out, arts, cache, extra);
    ok(&r);
    let line = copies_line_of(&r);
    assert!(line.contains(what), "{line}");
}

/// Images whose root partition grows (an overlay larger than the fixture's free space: the
/// common layer grows it, resize2fs in place) record the growth and their layers' writes over
/// the grown image, so they are named as images that do not grow are: built again, the
/// nodes' digests are remembered, and in place their files are kept; the files are always
/// those of builds that hashed everything (`--test-no-reuse`), for the cluster (role images)
/// and for one node alone (its layers over a copy of the upstream image).
#[test]
fn images_whose_root_grows_are_remembered_too() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let input = fixture("trixie.img");
    let spec = two_node_spec(tmp.path(), "grows", &input);
    // 40 MiB of data the fixture's 48 MiB root filesystem (about 32 MiB free) has no room for.
    let blob = tmp.path().join("big/opt/blob");
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    let data: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    fs::write(&blob, data).unwrap();
    let mut text = fs::read_to_string(&spec).unwrap();
    text.push_str(&format!(
        "overlays: [{}]\n",
        tmp.path().join("big").display()
    ));
    fs::write(&spec, text).unwrap();

    let first = tmp.path().join("first");
    let out = build_with(&spec, &first, &arts, &cache, &[]);
    ok(&out);
    let grown = fs::metadata(first.join("pi-w-1.img")).unwrap().len();
    let upstream = fs::metadata(&input).unwrap().len();
    assert!(grown > upstream, "{grown} bytes: the root did not grow");
    let alone = tmp.path().join("alone");
    ok(&build_with(
        &spec,
        &alone,
        &arts,
        &cache,
        &["--test-no-reuse"],
    ));
    same_node_files(&first, &alone, 4, "grown, through role images");
    let again = tmp.path().join("again");
    let out = build_with(&spec, &again, &arts, &cache, &[]);
    ok(&out);
    let line = copies_line_of(&out);
    assert!(
        line.ends_with(
            "2 of 2 with their digests remembered from an earlier build of the same bytes, \
             not taken again"
        ),
        "{line}"
    );
    same_node_files(&alone, &again, 4, "grown, built again");
    built_saying(
        &spec,
        &again,
        &arts,
        &cache,
        &[],
        "2 of 2 unchanged since the last build",
    );
    same_node_files(&alone, &again, 4, "grown, kept in place");

    // One node alone: its layers written into a copy of the upstream image, the common
    // layer's growth recorded on the way.
    let node = ["--node", "pi-w-1"];
    let one = tmp.path().join("one");
    built_saying(
        &spec,
        &one,
        &arts,
        &cache,
        &node,
        "(its root partition grows)",
    );
    let one_alone = tmp.path().join("one-alone");
    let no_reuse = [&node[..], &["--test-no-reuse"]].concat();
    ok(&build_with(&spec, &one_alone, &arts, &cache, &no_reuse));
    same_node_files(&one, &one_alone, 2, "grown, one node");
    let one_again = tmp.path().join("one-again");
    built_saying(
        &spec,
        &one_again,
        &arts,
        &cache,
        &node,
        "its digests remembered",
    );
    same_node_files(&one, &one_again, 2, "grown, one node built again");
    sums_check(&one_again);
}
