//! `piforge inspect` on every fixture and input format, judged against sfdisk, blkid, debugfs
//! and mtools reading the same raw image.

mod common;
use common::*;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

struct Expect {
    name: &'static str,
    boot_label: &'static str,
    root_label: &'static str,
    os_id: &'static str,
    codename: &'static str,
    cloud_init: bool,
    seed_dir: Option<&'static str>,
    swap: &'static str,
}

const FIXTURES: [Expect; 3] = [
    Expect {
        name: "bookworm",
        boot_label: "bootfs",
        root_label: "rootfs",
        os_id: "debian",
        codename: "bookworm",
        cloud_init: false,
        seed_dir: None,
        swap: "dphys-swapfile",
    },
    Expect {
        name: "trixie",
        boot_label: "bootfs",
        root_label: "rootfs",
        os_id: "debian",
        codename: "trixie",
        cloud_init: true,
        seed_dir: Some("/boot/firmware"),
        swap: "rpi-swap",
    },
    Expect {
        name: "ubuntu",
        boot_label: "system-boot",
        root_label: "writable",
        os_id: "ubuntu",
        codename: "noble",
        cloud_init: true,
        seed_dir: Some("LABEL=system-boot"),
        swap: "none",
    },
];

fn inspect_json(input: &Path, cache: &Path) -> Value {
    let out = piforge(&["inspect", "--json", input.to_str().unwrap()], cache);
    assert!(
        out.status.success(),
        "inspect {} failed: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// Checks a report against what the real tools say about the raw image.
fn check_against_oracles(r: &Value, raw: &Path, e: &Expect) {
    let sf = sfdisk_json(raw);
    let table = &sf["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let parts = r["partitions"].as_array().expect("partitions[]");
    let sf_parts = table["partitions"].as_array().expect("sfdisk partitions");
    assert_eq!(parts.len(), sf_parts.len(), "{}: partition count", e.name);
    for (p, s) in parts.iter().zip(sf_parts) {
        let start = s["start"].as_u64().unwrap() * sector;
        let size = s["size"].as_u64().unwrap() * sector;
        assert_eq!(p["start_bytes"].as_u64(), Some(start), "{}: start", e.name);
        assert_eq!(p["size_bytes"].as_u64(), Some(size), "{}: size", e.name);
        let ty = s["type"].as_str().unwrap();
        let want = if table["label"] == "dos" {
            format!("0x{:0>2}", ty)
        } else {
            ty.to_uppercase()
        };
        assert_eq!(p["type"].as_str(), Some(want.as_str()), "{}: type", e.name);
        let blk = blkid_at(raw, start);
        assert_eq!(
            p["filesystem"].as_str(),
            blk.get("TYPE").map(String::as_str),
            "{}: filesystem of partition at {start}",
            e.name
        );
        assert_eq!(
            p["label"].as_str(),
            blk.get("LABEL").map(String::as_str),
            "{}: label",
            e.name
        );
    }
    let id = table["id"].as_str().unwrap();
    let want_id = if table["label"] == "dos" {
        id.trim_start_matches("0x").to_lowercase()
    } else {
        id.to_uppercase()
    };
    assert_eq!(
        r["disk_id"].as_str().map(str::to_uppercase),
        Some(want_id.to_uppercase())
    );

    let idx = |label: &str| {
        parts
            .iter()
            .find(|p| p["label"] == label)
            .and_then(|p| p["index"].as_u64())
    };
    assert_eq!(
        r["boot_partition"].as_u64(),
        idx(e.boot_label),
        "{}",
        e.name
    );
    assert_eq!(
        r["root_partition"].as_u64(),
        idx(e.root_label),
        "{}",
        e.name
    );
    let part = |i: &Value| {
        parts
            .iter()
            .find(|p| p["index"] == *i)
            .and_then(|p| p["start_bytes"].as_u64())
            .unwrap()
    };
    let boot_off = part(&r["boot_partition"]);
    let root_off = part(&r["root_partition"]);

    // OS release, from the root filesystem through debugfs.
    let os = debugfs(raw, root_off, "cat /usr/lib/os-release");
    assert!(
        os.contains(&format!("VERSION_CODENAME={}", e.codename)),
        "{os}"
    );
    assert_eq!(r["os"]["id"], e.os_id);
    assert_eq!(r["os"]["version_codename"], e.codename);

    // cmdline.txt, through mtools.
    let cmdline = mtype(raw, boot_off, "cmdline.txt");
    assert_eq!(
        r["cmdline"].as_str(),
        Some(cmdline.trim_end()),
        "{}",
        e.name
    );

    assert_eq!(r["cloud_init"]["installed"], e.cloud_init, "{}", e.name);
    assert_eq!(
        r["cloud_init"]["seed_dir"].as_str(),
        e.seed_dir,
        "{}",
        e.name
    );
    if e.seed_dir.is_some() {
        assert_eq!(r["cloud_init"]["seed_on_boot_partition"], true);
    }
    assert_eq!(r["swap"]["mechanism"], e.swap, "{}", e.name);
    assert_eq!(r["machine_id"], "empty", "{}", e.name);

    // ext4 features: the same set debugfs lists.
    let feat = debugfs(raw, root_off, "features");
    let want: BTreeSet<&str> = feat
        .split_once(':')
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let got: BTreeSet<&str> = r["ext4_features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(got, want, "{}: ext4 features", e.name);

    // Free space: debugfs stats (root) and mdir (boot).
    let stats = debugfs(raw, root_off, "stats");
    let field = |k: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{k} in debugfs stats"))
    };
    let root_free = field("Free blocks:") * field("Block size:");
    assert_eq!(
        r["free_bytes"]["root"].as_u64(),
        Some(root_free),
        "{}",
        e.name
    );
    let mdir = run(
        "mdir",
        &["-i", &format!("{}@@{boot_off}", raw.display()), "::"],
    );
    let boot_free: u64 = mdir
        .lines()
        .find(|l| l.contains("bytes free"))
        .and_then(|l| l.split("bytes free").next())
        .map(|n| n.split_whitespace().collect::<String>())
        .and_then(|n| n.parse().ok())
        .expect("mdir prints bytes free");
    assert_eq!(
        r["free_bytes"]["boot"].as_u64(),
        Some(boot_free),
        "{}",
        e.name
    );
}

#[test]
fn inspect_every_fixture_in_every_format() {
    let cache = tempfile::tempdir().unwrap();
    for e in &FIXTURES {
        let raw = fixture(&format!("{}.img", e.name));
        let before = sha256(&raw);
        for file in [
            format!("{}.img", e.name),
            format!("{}.img.xz", e.name),
            format!("{}.img.zst", e.name),
            format!("{}.img.gz", e.name),
            format!("{}.zip", e.name),
        ] {
            let input = fixture(&file);
            let r = inspect_json(&input, cache.path());
            check_against_oracles(&r, &raw, e);
            assert_eq!(r["input"]["sha256"].as_str(), Some(sha256(&input).as_str()));
            assert_eq!(
                r["input"]["image_bytes"].as_u64(),
                Some(std::fs::metadata(&raw).unwrap().len())
            );
        }
        assert_eq!(sha256(&raw), before, "inspect must not modify its input");
    }
}

#[test]
fn inspect_gpt_fixture() {
    let cache = tempfile::tempdir().unwrap();
    let raw = fixture("gpt.img");
    let r = inspect_json(&raw, cache.path());
    assert_eq!(r["scheme"], "gpt");
    let e = Expect {
        name: "gpt",
        ..FIXTURES[1]
    };
    check_against_oracles(&r, &raw, &e);
}

#[test]
fn inspect_text_output_names_the_essentials() {
    let cache = tempfile::tempdir().unwrap();
    let raw = fixture("trixie.img");
    let out = piforge(&["inspect", raw.to_str().unwrap()], cache.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "disk id",
        "bootfs",
        "rootfs",
        "rootwait resize",
        "/boot/firmware",
        "rpi-swap",
        "orphan_file",
    ] {
        assert!(
            text.contains(needle),
            "text output lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn concatenated_xz_streams_decode_completely() {
    let cache = tempfile::tempdir().unwrap();
    let r = inspect_json(&fixture("trixie-concat.img.xz"), cache.path());
    let raw = fixture("trixie.img");
    assert_eq!(
        r["input"]["image_bytes"].as_u64(),
        Some(std::fs::metadata(&raw).unwrap().len())
    );
    // The decompressed copy in the cache is the whole image, byte for byte.
    let cached = Path::new(r["input"]["raw_path"].as_str().unwrap());
    assert_eq!(sha256(cached), sha256(&raw));
}

#[test]
fn second_run_uses_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let input = fixture("bookworm.img.xz");
    let r1 = inspect_json(&input, cache.path());
    let cached = Path::new(r1["input"]["raw_path"].as_str().unwrap()).to_path_buf();
    assert!(cached.starts_with(cache.path()), "{}", cached.display());
    let m1 = std::fs::metadata(&cached).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r2 = inspect_json(&input, cache.path());
    assert_eq!(r2["input"]["raw_path"], r1["input"]["raw_path"]);
    let m2 = std::fs::metadata(&cached).unwrap().modified().unwrap();
    assert_eq!(m1, m2, "the cached image was written again");
    // Written sparse: fewer blocks allocated than its length.
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&cached).unwrap();
    assert!(md.blocks() * 512 < md.len(), "cache file is not sparse");
}

/// Issue 12 item 4: a sparse configuration file with a huge size (256 GiB `os-release` or
/// dpkg `status`) is one clear error for inspect and check (those that read it), under a 512 MiB address-space
/// limit; the old code allocated up to its size and aborted.
#[test]
fn a_huge_sparse_config_file_is_a_clear_error_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    for (file, commands) in [
        ("/usr/lib/os-release", &["inspect"][..]),
        ("/var/lib/dpkg/status", &["check"][..]),
    ] {
        let img = tmp.path().join("huge.img");
        std::fs::copy(fixture("trixie.img"), &img).unwrap();
        let (_, root) = offsets(&img, &cache);
        let huge = 256u64 << 30;
        run(
            "debugfs",
            &[
                "-w",
                "-R",
                &format!("sif {file} size {huge}"),
                &format!("{}?offset={root}", img.display()),
            ],
        );
        assert!(debugfs(&img, root, &format!("stat {file}")).contains(&format!("Size: {huge}")));
        for cmd in commands {
            let r = std::process::Command::new("prlimit")
                .arg(format!("--as={}", 512u64 << 20))
                .arg(env!("CARGO_BIN_EXE_piforge"))
                .args(["--quiet", cmd, img.to_str().unwrap()])
                .env("PIFORGE_CACHE", &cache)
                .output()
                .expect("prlimit (util-linux) runs");
            assert_one_line_error(
                &r,
                // (os-release is read through its /etc/os-release link.)
                &format!(
                    "{} in the root filesystem is {huge} bytes, more than the 16777216 bytes piforge reads of a configuration file",
                    file.rsplit('/').next().unwrap()
                ),
            );
        }
    }
}
