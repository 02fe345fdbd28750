//! Property tests standing in for a fuzzer (issue 12, "done when"): bytes flipped in the
//! superblock, group descriptors, inode table, directory blocks and extent trees of the
//! trixie-shaped fixture's root filesystem (as it is, with metadata_csum, and without it, where
//! no checksum catches a flip), then `inspect`, `check` and `customize` run on it as child
//! processes under a memory limit (`prlimit --as`) and a timeout. The properties:
//! - no crash: never exit 101 (a panic) or death by a signal, never AddressSanitizer's report;
//! - no hang: every run ends within the timeout;
//! - no silent damage: when customize exits 0, `e2fsck -fn` finds its output clean;
//! - the input is never modified.
//!
//! The cases come from a fixed seed (the same every run, so CI is reproducible); set
//! `PIFORGE_CORRUPTION_CASES` for more per variant and `PIFORGE_CORRUPTION_SEED` for others.
//! Under `make test-asan` (PIFORGE_ASAN=1) the memory limit is left out: AddressSanitizer
//! reserves terabytes of address space for its shadow memory.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Address space each run may use (the unbounded allocations reached 256 GiB).
const MEMORY_LIMIT: u64 = 1 << 30;
/// Seconds a run may take before it counts as a hang.
const TIMEOUT_SECS: u32 = 60;
/// Cases per variant (with checksums, without): 3 piforge runs and an e2fsck each. With
/// metadata_csum nearly every flip is caught at open, so fewer cases tell as much.
const CASES: [u32; 2] = [8, 14];
/// The exit status AddressSanitizer is told to use (ASAN_OPTIONS in the Makefile), so that
/// its report is not mistaken for piforge's own exit 1.
const ASAN_EXIT: i32 = 86;

/// A byte range of the image (absolute offsets) with a name for messages.
#[derive(Debug, Clone)]
struct Region {
    name: String,
    start: u64,
    len: u64,
}

fn stat_field(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in debugfs stats:\n{stats}"))
}

/// `imap PATH`: the byte offset of PATH's inode in the filesystem.
fn inode_offset(img: &Path, root: u64, path: &str, block_size: u64) -> u64 {
    let out = debugfs(img, root, &format!("imap {path}"));
    // "Inode 2 is part of block group 0\n\tlocated at block 1058, offset 0x0100"
    let block: u64 = out
        .split("located at block ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or_else(|| panic!("imap {path}: {out}"));
    let off = out
        .split("offset 0x")
        .nth(1)
        .and_then(|r| u64::from_str_radix(r.trim(), 16).ok())
        .unwrap_or_else(|| panic!("imap {path}: {out}"));
    block * block_size + off
}

/// The first data block of PATH (a directory's first block).
fn first_block(img: &Path, root: u64, path: &str) -> u64 {
    let out = debugfs(img, root, &format!("blocks {path}"));
    out.split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("blocks {path}: {out}"))
}

/// The regions of `img`'s root filesystem (at byte `root`) the flips go into.
fn regions(img: &Path, root: u64) -> Vec<Region> {
    let stats = debugfs(img, root, "stats");
    let bs = stat_field(&stats, "Block size:");
    let groups =
        stat_field(&stats, "Block count:").div_ceil(stat_field(&stats, "Blocks per group:"));
    let first_data = stat_field(&stats, "First block:");
    let inode_size = stat_field(&stats, "Inode size:");
    let r = |name: &str, start: u64, len: u64| Region {
        name: name.to_string(),
        start: root + start,
        len,
    };
    let mut v = vec![
        r("superblock", 1024, 1024),
        r("group descriptors", (first_data + 1) * bs, groups * 64),
    ];
    // " Group  0: block bitmap at 7, inode bitmap at 23, inode table at 39": a bit of the
    // block bitmap flipped from 1 to 0 is the stale bitmap that made new files overwrite old
    // ones (issue 12 item 7).
    let group0 = stats
        .lines()
        .find(|l| l.trim_start().starts_with("Group  0:"))
        .unwrap_or_else(|| panic!("no group 0 in debugfs stats:\n{stats}"));
    let at = |what: &str| -> u64 {
        group0
            .split(what)
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what} in {group0}"))
    };
    let per_group = stat_field(&stats, "Blocks per group:");
    let inodes_per_group = stat_field(&stats, "Inodes per group:");
    v.push(r(
        "block bitmap",
        at("block bitmap at ") * bs,
        (per_group / 8).min(bs),
    ));
    v.push(r(
        "inode bitmap",
        at("inode bitmap at ") * bs,
        (inodes_per_group / 8).min(bs),
    ));
    for path in ["/", "/etc", "/usr/lib", "/var/lib/dpkg"] {
        let ino = inode_offset(img, root, path, bs);
        v.push(r(&format!("inode of {path}"), ino, inode_size));
        // i_block: the extent tree's root (header and entries) in the inode.
        v.push(r(&format!("extent tree of {path}"), ino + 40, 60));
        v.push(r(
            &format!("directory block of {path}"),
            first_block(img, root, path) * bs,
            bs,
        ));
    }
    for path in [
        "/etc/os-release",
        "/usr/lib/os-release",
        "/var/lib/dpkg/status",
    ] {
        let ino = inode_offset(img, root, path, bs);
        v.push(r(&format!("extent tree of {path}"), ino + 40, 60));
    }
    v
}

/// One piforge run: `timeout` and, unless under AddressSanitizer, `prlimit --as`.
fn guarded(args: &[&str], cache: &Path) -> (Option<i32>, String) {
    let asan = std::env::var_os("PIFORGE_ASAN").is_some_and(|v| v == "1");
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &TIMEOUT_SECS.to_string()]);
    if !asan {
        cmd.arg("prlimit").arg(format!("--as={MEMORY_LIMIT}"));
    }
    let out = cmd
        .arg(env!("CARGO_BIN_EXE_piforge"))
        .args(args)
        .env("PIFORGE_CACHE", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("timeout and prlimit (coreutils, util-linux) run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The properties for one corrupted image; `Ok(true)` when customize wrote an output.
fn judge(img: &Path, work: &Path, overlay: &Path) -> Result<bool, TestCaseError> {
    let cache = work.join("cache");
    // Size, modification and change times (any write through write(2) or a mapping changes
    // them): hashing all of a 120 MB image twice per case would cost more than the runs.
    let fingerprint = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(p).unwrap();
        (
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    };
    let before = fingerprint(img);
    let out = work.join("out.img");
    let _ = fs::remove_file(&out);
    let image = img.to_str().unwrap();
    let runs: [Vec<&str>; 3] = [
        vec!["inspect", image],
        vec!["check", image],
        vec![
            "customize",
            image,
            "-o",
            out.to_str().unwrap(),
            "--root-overlay",
            overlay.to_str().unwrap(),
            "--grow",
            "auto",
        ],
    ];
    let mut wrote = false;
    for args in &runs {
        let (code, text) = guarded(args, &cache);
        let what = args[0];
        prop_assert!(
            !text.contains("AddressSanitizer") && code != Some(ASAN_EXIT),
            "{what}: AddressSanitizer: {text}"
        );
        prop_assert!(code.is_some(), "{what}: killed by a signal: {text}");
        prop_assert!(
            code != Some(124) && code != Some(137),
            "{what}: hung ({TIMEOUT_SECS} s)"
        );
        prop_assert!(code != Some(101), "{what}: crashed: {text}");
        if what == "customize" && code == Some(0) {
            wrote = true;
            let (_, out_root) = offsets(&out, &cache);
            let (fsck, report) = e2fsck(&out, out_root);
            prop_assert_eq!(
                fsck,
                0,
                "customize exited 0 but e2fsck -fn finds its output damaged:\n{}",
                report
            );
        }
    }
    prop_assert_eq!(fingerprint(img), before, "the input changed");
    Ok(wrote)
}

/// A copy of the trixie fixture; `checksums: false` turns metadata_csum off (tune2fs on the
/// root partition copied out and back), so that nothing but the checks catches a flip.
fn variant(dir: &Path, checksums: bool) -> (PathBuf, u64) {
    let img = dir.join(if checksums { "csum.img" } else { "nocsum.img" });
    fs::copy(fixture("trixie.img"), &img).unwrap();
    let (_, root) = offsets(&img, dir);
    if !checksums {
        let stats = debugfs(&img, root, "stats");
        let bytes = stat_field(&stats, "Block count:") * stat_field(&stats, "Block size:");
        let part = dir.join("root.part");
        let data = fs::read(&img).unwrap();
        fs::write(&part, &data[root as usize..(root + bytes) as usize]).unwrap();
        run("tune2fs", &["-O", "^metadata_csum", part.to_str().unwrap()]);
        // The orphan file's blocks kept their checksum tails: e2fsck rebuilds them.
        let (code, out) = run_status("e2fsck", &["-fy", part.to_str().unwrap()]);
        assert!(code == 0 || code == 1, "e2fsck -fy after tune2fs: {out}");
        let mut data = data;
        data[root as usize..(root + bytes) as usize].copy_from_slice(&fs::read(&part).unwrap());
        fs::write(&img, data).unwrap();
        assert!(!debugfs(&img, root, "stats").contains("metadata_csum"));
    }
    let (code, out) = e2fsck(&img, root);
    assert_eq!(code, 0, "the pristine variant is clean: {out}");
    (img, root)
}

fn small_overlay(dir: &Path) -> PathBuf {
    let o = dir.join("overlay");
    for i in 0..24 {
        let d = o.join(format!("opt/piforge/d{}", i % 4));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("f{i}.conf")),
            format!("value={i}\n").repeat(i * 40),
        )
        .unwrap();
    }
    fs::create_dir_all(o.join("etc/piforge")).unwrap();
    fs::write(o.join("etc/piforge/node.conf"), "a=1\n").unwrap();
    o
}

fn run_variant(checksums: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (pristine, root) = variant(tmp.path(), checksums);
    let regions = regions(&pristine, root);
    let overlay = small_overlay(tmp.path());
    let cases = std::env::var("PIFORGE_CORRUPTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES[usize::from(!checksums)]);
    let seed: u64 = std::env::var("PIFORGE_CORRUPTION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    seed_bytes[8] = u8::from(checksums);
    let config = Config {
        cases,
        // Each case runs four processes: a short shrink is all the time allows.
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let n = regions.len();
    // A region, then 1 to 4 (position in it, XOR mask) pairs.
    let strategy = (
        0..n,
        proptest::collection::vec((any::<u64>(), 1u8..=255), 1..=4),
    );
    let (tried, written) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    let case_img = tmp.path().join("case.img");
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let result = runner.run(&strategy, |(ri, flips)| {
        let region = &regions[ri];
        // A sparse copy (the image is mostly holes), then only the flipped bytes rewritten.
        let _ = fs::remove_file(&case_img);
        run(
            "cp",
            &[
                "--sparse=always",
                pristine.to_str().unwrap(),
                case_img.to_str().unwrap(),
            ],
        );
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&case_img)
            .unwrap();
        let mut what = Vec::new();
        for (pos, mask) in &flips {
            let at = region.start + pos % region.len;
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ mask], at).unwrap();
            what.push(format!("{at:#x}^{mask:#04x}"));
        }
        drop(f);
        tried.set(tried.get() + 1);
        let wrote = judge(&case_img, &work, &overlay).map_err(|e| {
            TestCaseError::fail(format!("{} ({}): {e}", region.name, what.join(" ")))
        })?;
        written.set(written.get() + u32::from(wrote));
        Ok(())
    });
    // How many flips customize accepted (each output then passed e2fsck) and refused.
    eprintln!(
        "{} variant: {} corrupted images, customize wrote {} (clean by e2fsck -fn) and refused {}",
        if checksums {
            "metadata_csum"
        } else {
            "no-checksum"
        },
        tried.get(),
        written.get(),
        tried.get() - written.get()
    );
    if let Err(e) = result {
        panic!(
            "{} variant: {e}",
            if checksums {
                "metadata_csum"
            } else {
                "no-checksum"
            }
        );
    }
}

#[test]
fn flipped_bytes_with_metadata_csum() {
    run_variant(true);
}

#[test]
fn flipped_bytes_without_metadata_csum() {
    run_variant(false);
}
