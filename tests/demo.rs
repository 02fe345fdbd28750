//! `make demo`'s path (tests/fixtures/demo.sh, which the Makefile runs) with the built binary:
//! it must succeed offline, put every container image and the .debs in the cards, and warn of
//! nothing a user cannot act on (issue 15): the only warnings are the one-line summaries of
//! what `--allow-unpinned` recorded (naming the lock), and every WARN of `piforge check` says
//! what to change in cluster.yaml. The check lines are aligned.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

#[test]
fn demo_builds_whole_cards_and_warns_only_of_what_a_user_can_change() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/demo.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(fixtures())
        .arg(&demo)
        .arg(env!("CARGO_BIN_EXE_piforge"))
        .arg("1.36.4")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n--\n{stderr}");

    // Warnings: the unpinned release files and the unpinned images, one line each.
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    for w in &warnings {
        assert!(
            w.contains("unpinned, recorded") && w.contains("piforge.lock"),
            "a warning the demo should not give: {w}"
        );
    }
    assert!(warnings[1].contains("9 images"), "{stderr}");

    // The build table: each column starts at one offset in every row.
    let table: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("pi-") && l.contains(" MiB  sha256 "))
        .collect();
    assert_eq!(table.len(), 3, "{stdout}");
    for needle in ["dist/", " MiB", "sha256 "] {
        let at: Vec<usize> = table.iter().map(|l| l.find(needle).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{needle}: {stdout}");
    }

    // check: nothing failed; each WARN names the cluster.yaml key that changes it.
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("dist/") && l.contains(" passed, "))
        .collect();
    assert_eq!(summaries.len(), 3, "{stdout}");
    let column: Vec<usize> = summaries
        .iter()
        .map(|l| l.find(" passed").unwrap())
        .collect();
    assert!(column.windows(2).all(|w| w[0] == w[1]), "{stdout}");
    for s in &summaries {
        assert!(s.ends_with(" 0 failed"), "{stdout}");
    }
    let warns: Vec<&str> = stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("WARN ") || l.starts_with("FAIL "))
        .collect();
    for w in &warns {
        assert!(
            w.starts_with("WARN") && w.contains("in cluster.yaml"),
            "a WARN that says nothing to change in cluster.yaml: {w}"
        );
    }
    assert!(
        !stdout.contains("needs network") && !stdout.contains("pulled at first boot"),
        "{stdout}"
    );

    // The cards hold the images and the .deb (judged by debugfs, not by piforge).
    let cache = demo.join("cache");
    for (node, images) in [("pi-cp-1", 9), ("pi-w-1", 5), ("pi-w-2", 5)] {
        let img = demo.join(format!("dist/{node}.img"));
        let (_, root) = offsets(&img, &cache);
        let list = debugfs(&img, root, "cat /etc/piforge/images.list");
        let listed = list
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(listed, images, "{node}: {list}");
        let archives = debugfs(&img, root, "ls -p /var/lib/piforge/images");
        assert_eq!(
            archives.matches(".tar/").count(),
            images,
            "{node}: {archives}"
        );
        let debs = debugfs(&img, root, "ls /var/lib/piforge/debs");
        assert!(
            debs.contains("iptables_1.8.11-2_arm64.deb"),
            "{node}: {debs}"
        );
        let (code, text) = e2fsck(&img, root);
        assert_eq!(code, 0, "{node}: e2fsck: {text}");
    }

    // The manifest and the SBOM list the .deb and every image in the cards, with the digests
    // of the files the demo made (sha256sum of the .deb, of each layout's top manifest).
    let dist = demo.join("dist");
    let m = read_json(&dist.join("manifest.json"));
    let sbom = read_json(&dist.join("sbom.spdx.json"));
    spdx_check(&dist.join("sbom.spdx.json"));
    let deb = demo.join("mirror/deb.debian.org/debian/pool/main/iptables_1.8.11-2_arm64.deb");
    let url = "http://deb.debian.org/debian/pool/main/iptables_1.8.11-2_arm64.deb";
    assert_eq!(m["debs"].as_array().unwrap().len(), 1, "{}", m["debs"]);
    let d = &m["debs"][0];
    assert_eq!(d["name"], "iptables");
    assert_eq!(d["url"], url);
    assert_eq!(d["sha256"], sha256(&deb).as_str());
    let p = sbom_package(&sbom, "iptables", "1.8.11-2");
    assert_eq!(p["downloadLocation"], url);
    assert_eq!(p["checksums"][0]["checksumValue"], sha256(&deb).as_str());
    assert_eq!(
        p["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/iptables@1.8.11-2?arch=arm64"
    );
    let images = m["container_images"].as_array().unwrap();
    assert_eq!(images.len(), 9, "{images:?}");
    for e in images {
        let image = piforge::oci::ImageRef::parse(e["reference"].as_str().unwrap()).unwrap();
        let layout = demo.join("artifacts/images").join(image.layout_name());
        let top = read_json(&layout.join("index.json"))["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let hex = top.trim_start_matches("sha256:");
        assert_eq!(sha256(&layout.join("blobs/sha256").join(hex)), hex);
        assert_eq!(e["digest"], top.as_str(), "{e}");
        let p = sbom_package(&sbom, e["name"].as_str().unwrap(), &image.reference);
        assert_eq!(p["checksums"][0]["checksumValue"], hex);
        assert!(
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap()
                .starts_with(&format!(
                    "pkg:oci/{}@{top}?repository_url=",
                    image.repository.rsplit('/').next().unwrap()
                )),
            "{p}"
        );
    }
}
