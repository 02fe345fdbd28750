//! The output directory of `piforge build`: exactly the spec's nodes' files, swapped in whole,
//! with `SHA256SUMS` (checked by `sha256sum -c`), `manifest.json` and an SPDX SBOM; builds
//! that agree byte for byte whatever the machine's settings; `build --verify`.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const K8S: &str = "1.34.11";
/// A build epoch that is not the default: 2026-01-01T00:00:00Z.
const EPOCH: i64 = 1_767_225_600;
/// The epoch both reproducible builds are made at (SOURCE_DATE_EPOCH), another one.
const REPRO_EPOCH: &str = "1700000000";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

fn write_spec(dir: &Path, nodes: &[(&str, &str)]) -> PathBuf {
    let mut spec = format!(
        "name: outlab
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
network:
  gateway: 192.168.60.1
  dns: [192.168.60.1]
ssh_authorized_keys: [\"{KEY}\"]
nodes:
",
        image = fixture("trixie.img.xz").display()
    );
    for (i, (name, role)) in nodes.iter().enumerate() {
        spec.push_str(&format!(
            "  - name: {name}\n    role: {role}\n    address: 192.168.60.{}/24\n",
            10 + i
        ));
    }
    fs::create_dir_all(dir).unwrap();
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

/// The files in `dir`, but the output directory's lock (`.piforge.lock`, which stays: it is
/// piforge's own, not an output).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".piforge.lock")
        .collect();
    v.sort();
    v
}

fn ok(r: &Output) {
    assert!(
        r.status.success(),
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn dist_holds_exactly_the_spec_nodes_and_is_swapped_in_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = write_spec(
        tmp.path(),
        &[
            ("pi-cp-1", "control-plane"),
            ("pi-w-1", "worker"),
            ("pi-w-2", "worker"),
        ],
    );
    let out = tmp.path().join("dist");
    // With SOURCE_DATE_EPOCH (which build_with removes), not the default epoch.
    let r = Command::new(env!("CARGO_BIN_EXE_piforge"))
        .arg("--quiet")
        .args(["build", "--spec", spec.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .args([
            "--artifacts",
            arts.to_str().unwrap(),
            "--allow-unpinned",
            "--json",
        ])
        .env("PIFORGE_CACHE", &cache)
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .output()
        .unwrap();
    ok(&r);
    let meta = [
        "SHA256SUMS".to_string(),
        "manifest.json".into(),
        "os_list.json".into(),
        "sbom.spdx.json".into(),
    ];
    // Each node's raw image and its bmap file (the default format).
    let node_files = |nodes: &[&str]| -> Vec<String> {
        nodes
            .iter()
            .flat_map(|n| [format!("{n}.img"), format!("{n}.img.bmap")])
            .collect()
    };
    let mut want: Vec<String> = node_files(&["pi-cp-1", "pi-w-1", "pi-w-2"])
        .into_iter()
        .chain(meta.iter().cloned())
        .collect();
    want.sort();
    assert_eq!(names(&out), want);
    sums_check(&out);
    // SHA256SUMS lists every file but itself.
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), want.len() - 1);
    // --json prints the manifest, which agrees with the files.
    let printed: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(printed, m);
    assert_eq!(m["kubernetes_version"], K8S);
    assert_eq!(m["base_image"]["file"], "trixie.img.xz");
    assert_eq!(
        m["base_image"]["sha256"],
        sha256(&fixture("trixie.img.xz")).as_str()
    );
    assert_eq!(m["spec_sha256"], sha256(&spec).as_str());
    assert_eq!(m["piforge_version"], env!("CARGO_PKG_VERSION"));
    let arts_listed = m["artifacts"].as_array().unwrap();
    assert!(arts_listed.len() >= 7, "{arts_listed:?}");
    for a in arts_listed {
        let file = arts.join(a["file_name"].as_str().unwrap());
        assert_eq!(a["sha256"], sha256(&file).as_str(), "{a}");
        assert!(a["url"].as_str().unwrap().starts_with("https://"));
        assert!(!a["version"].as_str().unwrap().is_empty());
    }
    for n in m["nodes"].as_array().unwrap() {
        let files = n["files"].as_array().unwrap();
        assert_eq!(files.len(), 2, "{n}");
        for f in files {
            let p = out.join(f["name"].as_str().unwrap());
            assert_eq!(f["sha256"], sha256(&p).as_str());
            assert_eq!(f["bytes"], fs::metadata(&p).unwrap().len());
        }
        let img = out.join(format!("{}.img", n["name"].as_str().unwrap()));
        assert_eq!(n["raw_image"]["sha256"], sha256(&img).as_str());
    }
    let listed: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["sbom.spdx.json", "os_list.json"]);
    // No .deb or container image in these cards (no lock pins a .deb, no OCI layout): the
    // fields are there, empty.
    assert_eq!(m["debs"], serde_json::json!([]));
    assert_eq!(m["container_images"], serde_json::json!([]));
    // The SBOM: SPDX 2.3, the artifacts with their URLs, the base's packages by purl.
    let sbom: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("sbom.spdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let pkgs = sbom["packages"].as_array().unwrap();
    assert!(pkgs.iter().any(|p| p["name"] == "kubeadm"
        && p["downloadLocation"]
            .as_str()
            .unwrap()
            .contains("dl.k8s.io")));
    assert!(
        pkgs.iter().any(|p| p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .is_some_and(|l| l.starts_with("pkg:deb/"))),
        "no base package in the SBOM"
    );

    // SPDX's own validator accepts it.
    spdx_check(&out.join("sbom.spdx.json"));
    // The epoch is SOURCE_DATE_EPOCH's, and so is the SBOM's creation time.
    assert_eq!(m["epoch"], EPOCH);
    assert_eq!(sbom["creationInfo"]["created"], "2026-01-01T00:00:00Z");

    // A node removed and another renamed: their old images go.
    let spec = write_spec(
        tmp.path(),
        &[("pi-cp-1", "control-plane"), ("pi-w-9", "worker")],
    );
    ok(&build_with(&spec, &out, &arts, &cache, &["--jobs", "2"]));
    let mut want: Vec<String> = node_files(&["pi-cp-1", "pi-w-9"])
        .into_iter()
        .chain(meta.iter().cloned())
        .collect();
    want.sort();
    assert_eq!(names(&out), want);
    sums_check(&out);
    // Without SOURCE_DATE_EPOCH, the default epoch.
    assert_eq!(
        read_json(&out.join("manifest.json"))["epoch"],
        piforge::clock::DEFAULT_EPOCH
    );
    let before_sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();

    // A --node build keeps the other nodes' images and lists them.
    ok(&build_with(
        &spec,
        &out,
        &arts,
        &cache,
        &["--node", "pi-w-9"],
    ));
    assert_eq!(names(&out), want);
    // pi-w-9 is now a reimaged node (new instance-id, /etc/piforge/rejoin): its image changes;
    // the control plane's image and its SHA256SUMS line stay as they were.
    let after = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let line = |sums: &str, name: &str| {
        sums.lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .map(str::to_string)
    };
    assert!(line(&before_sums, "pi-cp-1.img").is_some());
    assert_eq!(
        line(&after, "pi-cp-1.img"),
        line(&before_sums, "pi-cp-1.img")
    );
    assert!(line(&after, "pi-w-9.img").is_some(), "{after}");
    sums_check(&out);

    // A file piforge did not write: refused, named, untouched; nothing else changes.
    fs::write(out.join("notes.txt"), "mine").unwrap();
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert_one_line_error(&r, "notes.txt");
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    fs::remove_file(out.join("notes.txt")).unwrap();

    // A build that fails while applying (an overlay file would replace /usr/lib): dist/ is
    // as the last build left it, and no staging directory stays.
    let site = tmp.path().join("overlays/site/usr");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("lib"), "not a directory").unwrap();
    let text = fs::read_to_string(&spec).unwrap();
    fs::write(
        &spec,
        text.replace("nodes:\n", "overlays: [overlays/site]\nnodes:\n"),
    )
    .unwrap();
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(names(&out), want);
    assert_eq!(fs::read_to_string(out.join("SHA256SUMS")).unwrap(), after);
    sums_check(&out);
}

/// Two builds of one spec in every format, in different output directories, working
/// directories and caches, with different TZ, locale, umask, --jobs and --threads: the same
/// SHA256SUMS. Then `--verify` of one of them, given neither the formats, nor the epoch, nor
/// the URL (taken from the directory checked), agrees; and names the file inside the image of
/// a byte changed since, in a raw image and inside compressed ones.
#[test]
fn builds_are_reproducible_and_verify_names_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = write_spec(
        &tmp.path().join("spec"),
        &[
            ("pi-cp-1", "control-plane"),
            ("pi-w-1", "worker"),
            ("pi-w-2", "worker"),
        ],
    );
    let run =
        |cwd: &Path, out: &str, env: &[(&str, &str)], umask: &str, jobs: &str, threads: &str| {
            fs::create_dir_all(cwd).unwrap();
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("umask {umask}; exec \"$@\""))
                .arg("sh")
                .arg(env!("CARGO_BIN_EXE_piforge"))
                .args(["build", "--spec", spec.to_str().unwrap(), "--out", out])
                .args(["--artifacts", arts.to_str().unwrap(), "--allow-unpinned"])
                .args(["--jobs", jobs, "--threads", threads])
                .args(["--format", "img", "--format", "xz", "--format", "zst"])
                // os_list.json names where the files are published: the same URL for both.
                .args(["--base-url", "https://example.invalid/dist/"])
                .current_dir(cwd)
                .env("SOURCE_DATE_EPOCH", REPRO_EPOCH)
                .env_remove("LC_ALL");
            for (k, v) in env {
                c.env(k, v);
            }
            let r = c.output().unwrap();
            ok(&r);
        };
    let a = tmp.path().join("a");
    let b = tmp.path().join("elsewhere/b");
    run(
        &a,
        "dist",
        &[
            ("TZ", "UTC"),
            ("LANG", "C"),
            ("PIFORGE_CACHE", a.join("cache").to_str().unwrap()),
        ],
        "022",
        "1",
        "1",
    );
    run(
        &b,
        b.join("out/dist").to_str().unwrap(),
        &[
            ("TZ", "Pacific/Chatham"),
            ("LANG", "fr_FR.UTF-8"),
            ("LC_ALL", "de_DE.UTF-8"),
            (
                "PIFORGE_CACHE",
                tmp.path().join("cache-b").to_str().unwrap(),
            ),
        ],
        "077",
        "3",
        "3",
    );
    let (da, db) = (a.join("dist"), b.join("out/dist"));
    let sums = fs::read_to_string(da.join("SHA256SUMS")).unwrap();
    assert_eq!(sums, fs::read_to_string(db.join("SHA256SUMS")).unwrap());
    sums_check(&db);
    for ext in ["img", "img.xz", "img.zst", "img.bmap"] {
        assert!(sums.contains(&format!("  pi-w-2.{ext}\n")), "{sums}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(da.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["epoch"].to_string(), REPRO_EPOCH);

    // --verify agrees with an untouched build.
    let cache = a.join("cache");
    let verify = |dist: &Path| {
        piforge(
            &[
                "build",
                "--spec",
                spec.to_str().unwrap(),
                "--artifacts",
                arts.to_str().unwrap(),
                "--verify",
                dist.join("SHA256SUMS").to_str().unwrap(),
            ],
            &cache,
        )
    };
    let r = verify(&da);
    ok(&r);
    assert!(String::from_utf8_lossy(&r.stdout).contains("verified"));
    // SOURCE_DATE_EPOCH unset (`piforge` removes it), no --format, no --base-url: all three
    // taken from the directory checked, and said.
    let said = String::from_utf8_lossy(&r.stderr);
    assert!(
        said.contains(&format!(
            "--format img,xz,zst, --base-url https://example.invalid/dist/, \
             SOURCE_DATE_EPOCH={REPRO_EPOCH}"
        )),
        "{said}"
    );
    assert_eq!(names(&da), names(&db), "--verify left something behind");

    // A listed file changed since, its line in SHA256SUMS not: the rebuild agrees with the
    // list, the file does not, and that is a difference too, with where it is.
    let w2 = da.join("pi-w-2.img");
    let (_, w2_root) = offsets(&w2, &cache);
    flip(&w2, w2_root + 1024 + 40);
    let r = verify(&da);
    assert_eq!(r.status.code(), Some(1));
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("differs: pi-w-2.img: the file beside")
                && l.contains("is not what it lists")
                && l.contains(&format!("first differs at byte {}", w2_root + 1064))
                && l.contains("partition 2")),
        "{text}"
    );
    assert_eq!(text.matches("differs:").count(), 1, "{text}");
    flip(&w2, w2_root + 1024 + 40);

    // A byte changed in the control plane's kubeadm.yaml (ext4) and in a worker's user-data
    // (FAT): each is named, with the partition and the file.
    let cp = da.join("pi-cp-1.img");
    let (boot_off, root_off) = offsets(&cp, &cache);
    let bmap = debugfs(&cp, root_off, "bmap /etc/piforge/kubeadm.yaml 0");
    let block: u64 = bmap.trim().parse().expect("bmap");
    let bs: u64 = debugfs(&cp, root_off, "stats")
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    flip(&cp, root_off + block * bs + 3);
    let w = da.join("pi-w-1.img");
    let (wboot, wroot) = offsets(&w, &cache);
    let data = fs::read(&w).unwrap();
    // The node's own user-data (the base's seed may linger in clusters fatfs freed).
    let needle = b"\nhostname: pi-w-1";
    let seed_at = data[wboot as usize..wroot as usize]
        .windows(needle.len())
        .position(|x| x == needle)
        .expect("user-data on the boot partition") as u64
        + wboot;
    flip(&w, seed_at + 1);
    let _ = boot_off;
    // The same changes inside compressed files: the tampered images compressed anew.
    let pack = |cmd: &str, img: &Path, out: &Path| {
        let r = Command::new(cmd)
            .args(["-q", "-c", img.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(r.status.success(), "{cmd}");
        fs::write(out, r.stdout).unwrap();
    };
    pack("xz", &w, &da.join("pi-w-1.img.xz"));
    pack("zstd", &cp, &da.join("pi-cp-1.img.zst"));
    // As if an earlier build had made these bytes: SHA256SUMS lists their digests.
    let mut listed = String::new();
    for l in sums.lines() {
        let (_, f) = l.split_once("  ").unwrap();
        listed.push_str(&format!("{}  {f}\n", sha256(&da.join(f))));
    }
    fs::write(da.join("SHA256SUMS"), listed).unwrap();
    let r = verify(&da);
    assert_eq!(r.status.code(), Some(1));
    let text = String::from_utf8_lossy(&r.stdout);
    let cp_line = text
        .lines()
        .find(|l| l.contains("pi-cp-1.img"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        cp_line.contains(&format!("byte {}", root_off + block * bs + 3))
            && cp_line.contains("partition 2")
            && cp_line.contains("/etc/piforge/kubeadm.yaml"),
        "{cp_line}"
    );
    let w_line = text
        .lines()
        .find(|l| l.contains("pi-w-1.img"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        w_line.contains(&format!("byte {}", seed_at + 1))
            && w_line.contains("partition 1")
            && w_line.contains("/user-data"),
        "{w_line}"
    );
    // Inside the compressed files: the byte of the image inside, explained the same way.
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("differs: {name}:")))
            .unwrap_or_else(|| panic!("{name}: {text}"))
    };
    let xz_line = line("pi-w-1.img.xz");
    assert!(
        xz_line.contains(&format!("decompressed, at byte {}", seed_at + 1))
            && xz_line.contains("partition 1")
            && xz_line.contains("/user-data"),
        "{xz_line}"
    );
    let zst_line = line("pi-cp-1.img.zst");
    assert!(
        zst_line.contains(&format!(
            "decompressed, at byte {}",
            root_off + block * bs + 3
        )) && zst_line.contains("/etc/piforge/kubeadm.yaml"),
        "{zst_line}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("differs:")).count(),
        4,
        "{text}"
    );
    assert!(!text.contains("pi-w-2.img"), "{text}");
    assert!(String::from_utf8_lossy(&r.stderr).contains("differs"));
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, at).unwrap();
}
