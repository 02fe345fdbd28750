//! Bad input gets one clear sentence on stderr and exit code 1, never a panic.

mod common;
use common::*;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

fn inspect(input: &Path, cache: &Path) -> std::process::Output {
    piforge(&["inspect", input.to_str().unwrap()], cache)
}

fn truncated_copy(src: &Path, dir: &Path, name: &str, keep: f64) -> PathBuf {
    let data = fs::read(src).unwrap();
    let p = dir.join(name);
    fs::write(&p, &data[..(data.len() as f64 * keep) as usize]).unwrap();
    p
}

/// A copy of the raw trixie fixture with `patch` applied at byte `at`.
fn patched_raw(dir: &Path, name: &str, at: u64, patch: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::copy(fixture("trixie.img"), &p).unwrap();
    let mut f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(patch).unwrap();
    p
}

fn no_leftovers(cache: &Path) {
    let images = cache.join("images");
    if images.exists() {
        let left: Vec<_> = fs::read_dir(&images).unwrap().collect();
        assert!(
            left.is_empty(),
            "cache holds leftovers after a failure: {left:?}"
        );
    }
}

#[test]
fn truncated_compressed_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    for (src, name, needle) in [
        ("trixie.img.xz", "t.img.xz", "xz"),
        ("trixie.img.zst", "t.img.zst", "zstd"),
        ("trixie.img.gz", "t.img.gz", "gzip"),
        ("trixie.zip", "t.zip", "zip"),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let p = truncated_copy(&fixture(src), tmp.path(), name, 0.5);
        let out = inspect(&p, cache.path());
        assert_one_line_error(&out, needle);
        no_leftovers(cache.path());
    }
}

#[test]
fn corrupt_xz_in_the_middle() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut data = fs::read(fixture("trixie.img.xz")).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let p = tmp.path().join("corrupt.img.xz");
    fs::write(&p, data).unwrap();
    assert_one_line_error(&inspect(&p, cache.path()), "xz");
    no_leftovers(cache.path());
}

#[test]
fn not_a_disk_image() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("notes.img");
    fs::write(&p, "these are my notes, not a disk image\n".repeat(100)).unwrap();
    assert_one_line_error(
        &inspect(&p, tmp.path()),
        "not a whole number of 512-byte sectors",
    );

    let p = tmp.path().join("notes4k.img");
    let mut text = "these are my notes, not a disk image\n"
        .repeat(120)
        .into_bytes();
    text.truncate(4096);
    fs::write(&p, text).unwrap();
    assert_one_line_error(&inspect(&p, tmp.path()), "no partition table");

    let p = tmp.path().join("zeros.img");
    fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    assert_one_line_error(&inspect(&p, tmp.path()), "no partition table");
    // Said once, by every command that reads an image (issue 15 item 7: it was said twice).
    for cmd in ["inspect", "check"] {
        let r = piforge(&[cmd, p.to_str().unwrap()], tmp.path());
        assert_one_line_error(&r, "no partition table");
        assert_eq!(
            String::from_utf8_lossy(&r.stderr)
                .matches("no partition table")
                .count(),
            1,
            "{cmd}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }

    let p = tmp.path().join("tiny.img");
    fs::write(&p, b"x").unwrap();
    assert_one_line_error(
        &inspect(&p, tmp.path()),
        "not a whole number of 512-byte sectors",
    );
    fs::write(&p, [0u8; 512]).unwrap();
    assert_one_line_error(&inspect(&p, tmp.path()), "too small");
}

#[test]
fn partition_past_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let p = truncated_copy(&fixture("trixie.img"), tmp.path(), "cut.img", 0.6);
    assert_one_line_error(&inspect(&p, tmp.path()), "past the end of the image");
}

#[test]
fn no_fat_or_no_ext4_partition() {
    let tmp = tempfile::tempdir().unwrap();
    // Partition 1's type byte set to Linux (0x83): no FAT-typed partition is left.
    let p = patched_raw(tmp.path(), "nofat.img", 446 + 4, &[0x83]);
    assert_one_line_error(&inspect(&p, tmp.path()), "no FAT boot partition");

    // The ext4 superblock magic wiped: no ext4 filesystem is left.
    let layout = sfdisk_json(&fixture("trixie.img"));
    let root_start = layout["partitiontable"]["partitions"][1]["start"]
        .as_u64()
        .unwrap()
        * 512;
    let p = patched_raw(tmp.path(), "noext4.img", root_start + 1024 + 0x38, &[0, 0]);
    assert_one_line_error(&inspect(&p, tmp.path()), "no ext4 root partition");
}

#[test]
fn checksum_mismatch_names_both_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("trixie.img.xz");
    let wrong = "0".repeat(64);
    let out = piforge(
        &["inspect", "--sha256", &wrong, input.to_str().unwrap()],
        tmp.path(),
    );
    assert_one_line_error(&out, &wrong);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&sha256(&input)), "{err}");
    no_leftovers(tmp.path());

    // A sibling .sha256 file that disagrees.
    let copy = tmp.path().join("trixie.img.xz");
    fs::copy(&input, &copy).unwrap();
    fs::write(
        tmp.path().join("trixie.img.xz.sha256"),
        format!("{wrong}  trixie.img.xz\n"),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    assert_one_line_error(&inspect(&copy, cache.path()), &wrong);

    // ...and one that agrees is accepted and reported as verified.
    fs::write(
        tmp.path().join("trixie.img.xz.sha256"),
        format!("{}  trixie.img.xz\n", sha256(&input)),
    )
    .unwrap();
    let out = piforge(&["inspect", "--json", copy.to_str().unwrap()], cache.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["input"]["verified"], true);
}

#[test]
fn unreadable_path() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("does-not-exist.img.xz");
    assert_one_line_error(&inspect(&p, tmp.path()), "does-not-exist.img.xz");
    // A directory is not an image either.
    assert_one_line_error(
        &inspect(tmp.path(), tmp.path()),
        &tmp.path().display().to_string(),
    );
}

/// Issue 12 item 14: each message once ("partitions 2 and 1 overlap: partitions 2 and 1
/// overlap" before), for inspect, customize and check alike.
#[test]
fn error_chains_say_each_sentence_once() {
    let tmp = tempfile::tempdir().unwrap();
    // Partition 2 made to start inside partition 1 (sector 8200).
    let p = patched_raw(
        tmp.path(),
        "overlap.img",
        446 + 16 + 8,
        &8200u32.to_le_bytes(),
    );
    let out = tmp.path().join("o.img");
    for args in [
        vec!["inspect", p.to_str().unwrap()],
        vec!["check", p.to_str().unwrap()],
        vec![
            "customize",
            p.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--rm",
            "/x",
        ],
    ] {
        let r = piforge(&args, tmp.path());
        assert_one_line_error(&r, "partitions 2 and 1 overlap");
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(
            err.trim_end(),
            format!(
                "piforge: error: {}: partitions 2 and 1 overlap",
                p.display()
            ),
            "{args:?}"
        );
    }
}
