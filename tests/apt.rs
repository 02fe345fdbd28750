//! OS packages from the base image's own apt sources (src/apt): a local apt repository built
//! here (tiny .debs made by dpkg-deb, Packages and Release written by the test, InRelease
//! signed by gpg with a throwaway key), served on 127.0.0.1, and a trixie-shaped base whose
//! sources and keyring point at it (made from the fixture with `piforge customize`). Judged
//! by gpg, dpkg-deb, debugfs, e2fsck and piforge check.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// gpg with its own home (a throwaway key, never the user's keyring).
fn gpg(home: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ])
        .args(args)
        .output()
        .expect("gpg is installed (tests/install-deps.sh)");
    assert!(
        out.status.success(),
        "gpg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn new_key(home: &Path, uid: &str) {
    fs::create_dir_all(home).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(home, fs::Permissions::from_mode(0o700)).unwrap();
    gpg(home, &["--quick-gen-key", uid, "ed25519", "sign", "never"]);
}

/// A .deb made by dpkg-deb: `usr/sbin/<name>` and a control file.
fn make_deb(dir: &Path, name: &str, version: &str, arch: &str, depends: &str) -> PathBuf {
    let root = dir.join(format!("src-{name}"));
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::create_dir_all(root.join("usr/sbin")).unwrap();
    let dep = if depends.is_empty() {
        String::new()
    } else {
        format!("Depends: {depends}\n")
    };
    fs::write(
        root.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: t <t@piforge.invalid>\n{dep}Description: piforge test package\n"),
    )
    .unwrap();
    fs::write(
        root.join(format!("usr/sbin/{name}")),
        format!("#!/bin/sh\necho {name}\n"),
    )
    .unwrap();
    let out = dir.join(format!("{name}_{version}_{arch}.deb"));
    run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-Zgzip",
            "--build",
            root.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}

struct Repo {
    root: PathBuf,
    gnupg: PathBuf,
    debs: Vec<PathBuf>,
}

impl Repo {
    /// `<root>/debian`: pool/main/*.deb, dists/trixie/{Release,InRelease}, main/binary-arm64
    /// Packages and Packages.gz.
    fn new(tmp: &Path) -> Repo {
        let root = tmp.join("served");
        let pool = root.join("debian/pool/main");
        fs::create_dir_all(&pool).unwrap();
        let debs = vec![
            make_deb(
                &pool,
                "iptables",
                "1.8.11-2",
                "arm64",
                "libpf-xtables (>= 1.8), libc6 (>= 2.36), netbase | pf-net",
            ),
            make_deb(&pool, "iptables", "1.8.9-1", "arm64", "libpf-xtables"),
            make_deb(&pool, "libpf-xtables", "1.8.11-2", "arm64", "libc6:any"),
            make_deb(&pool, "pf-net", "6.5", "all", ""),
            make_deb(&pool, "unrelated", "1", "arm64", ""),
        ];
        let gnupg = tmp.join("gnupg");
        new_key(&gnupg, "piforge test archive <archive@piforge.invalid>");
        let r = Repo { root, gnupg, debs };
        r.write_indexes();
        r
    }

    fn dists(&self) -> PathBuf {
        self.root.join("debian/dists/trixie")
    }

    /// Packages (by dpkg-scanpackages' own rules: one paragraph per .deb, with Filename,
    /// Size, SHA256), then Release and the signed InRelease.
    fn write_indexes(&self) {
        let bin = self.dists().join("main/binary-arm64");
        fs::create_dir_all(&bin).unwrap();
        let out = Command::new("dpkg-scanpackages")
            .args(["--arch", "arm64", "pool/main", "/dev/null"])
            .current_dir(self.root.join("debian"))
            .output()
            .expect("dpkg-scanpackages (dpkg-dev, tests/install-deps.sh)");
        assert!(out.status.success());
        fs::write(bin.join("Packages"), &out.stdout).unwrap();
        run(
            "sh",
            &[
                "-c",
                &format!("gzip -9nc {0}/Packages > {0}/Packages.gz", bin.display()),
            ],
        );
        let mut release = String::from("Origin: piforge-test\nSuite: trixie\nArchitectures: arm64\nComponents: main\nSHA256:\n");
        for f in [
            "main/binary-arm64/Packages",
            "main/binary-arm64/Packages.gz",
        ] {
            let p = self.dists().join(f);
            release.push_str(&format!(
                " {} {} {f}\n",
                sha256(&p),
                fs::metadata(&p).unwrap().len()
            ));
        }
        fs::write(self.dists().join("Release"), release).unwrap();
        self.sign(&self.gnupg);
    }

    fn sign(&self, home: &Path) {
        let rel = self.dists().join("Release");
        let inrel = self.dists().join("InRelease");
        gpg(
            home,
            &[
                "--clearsign",
                "-o",
                inrel.to_str().unwrap(),
                rel.to_str().unwrap(),
            ],
        );
    }

    fn keyring(&self) -> Vec<u8> {
        gpg(&self.gnupg, &["--export"]).stdout
    }
}

/// The trixie fixture with an apt source for `url` signed by `keyring` (deb822, Signed-By),
/// made by piforge customize on a copy (the fixture itself is never written).
fn base_image(tmp: &Path, url: &str, keyring: &[u8], cache: &Path) -> PathBuf {
    let ov = tmp.join("apt-overlay");
    fs::create_dir_all(ov.join("etc/apt/sources.list.d")).unwrap();
    fs::create_dir_all(ov.join("usr/share/keyrings")).unwrap();
    fs::write(
        ov.join("etc/apt/sources.list.d/debian.sources"),
        format!("Types: deb\nURIs: {url}/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/piforge-test-archive.pgp\n"),
    )
    .unwrap();
    fs::write(
        ov.join("usr/share/keyrings/piforge-test-archive.pgp"),
        keyring,
    )
    .unwrap();
    let out = tmp.join("base.img");
    trixie_with_overlay(&ov, &out, cache);
    out
}

/// Asserts that the card `img` lists iptables' three .debs in dependency order (what iptables
/// needs first) and holds them byte for byte as the repository has them; returns where each was
/// dumped to (`TMP/PREFIX-FILE`).
fn assert_card_holds_the_three_debs(l: &Lab, img: &Path, prefix: &str) -> Vec<PathBuf> {
    let (_, root) = offsets(img, &l.cache);
    let list = debugfs(img, root, "cat /etc/piforge/first-boot-debs");
    let files: Vec<&str> = list
        .lines()
        .filter(|x| !x.starts_with('#'))
        .filter_map(|x| x.split(' ').next())
        .collect();
    assert_eq!(
        files,
        [
            "libpf-xtables_1.8.11-2_arm64.deb",
            "pf-net_6.5_all.deb",
            "iptables_1.8.11-2_arm64.deb"
        ],
        "{list}"
    );
    files
        .into_iter()
        .map(|f| {
            let dumped = l.tmp.path().join(format!("{prefix}-{f}"));
            debugfs(
                img,
                root,
                &format!("dump /var/lib/piforge/debs/{f} {}", dumped.display()),
            );
            assert_eq!(
                sha256(&dumped),
                sha256(&l.repo.root.join("debian/pool/main").join(f)),
                "{f}"
            );
            dumped
        })
        .collect()
}

fn fetch(spec: &Path, arts: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    // --no-images: this test is about the OS packages (the container images have their own,
    // tests/images.rs); without it fetch warns that the artifacts directory holds no image.
    let mut a = vec![
        "fetch",
        spec.to_str().unwrap(),
        "--no-images",
        "--artifacts",
        arts.to_str().unwrap(),
        "--allow-unpinned",
    ];
    a.extend_from_slice(extra);
    piforge(&a, cache)
}

struct Lab {
    tmp: tempfile::TempDir,
    repo: Repo,
    server: Mirror,
    spec: PathBuf,
    arts: PathBuf,
    cache: PathBuf,
}

fn lab() -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let repo = Repo::new(tmp.path());
    let server = start_mirror(&repo.root);
    let base = base_image(tmp.path(), &server.url, &repo.keyring(), &cache);
    let dir = tmp.path().join("cluster");
    fs::create_dir_all(&dir).unwrap();
    let spec = two_node_spec(&dir, "aptlab", &base);
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    // The release artifacts pinned first, so that later fetches warn about nothing.
    let lock = dir.join("piforge.lock");
    let r = piforge(
        &[
            "fetch",
            "--kubernetes",
            K8S,
            "--artifacts",
            arts.to_str().unwrap(),
            "--allow-unpinned",
            "--lock",
            lock.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    Lab {
        tmp,
        repo,
        server,
        spec,
        arts,
        cache,
    }
}

#[test]
fn fetch_resolves_verifies_and_pins_and_the_card_installs_offline() {
    let l = lab();
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&r.stderr)
    );
    // iptables (the newest), its library, and the first alternative the base lacks (netbase
    // is in no source: pf-net); libc6 is in the base; `unrelated` is not needed.
    let lock = fs::read_to_string(l.spec.with_file_name("piforge.lock")).unwrap();
    let pinned: Vec<&str> = lock
        .lines()
        .filter_map(|x| x.strip_prefix("file = \""))
        .filter(|f| f.ends_with(".deb\""))
        .collect();
    assert_eq!(
        pinned,
        [
            "iptables_1.8.11-2_arm64.deb\"",
            "libpf-xtables_1.8.11-2_arm64.deb\"",
            "pf-net_6.5_all.deb\""
        ],
        "{lock}"
    );
    for d in &l.repo.debs {
        let name = d.file_name().unwrap().to_str().unwrap();
        let pinned = lock.contains(&format!("sha256 = \"{}\"", sha256(d)));
        assert_eq!(pinned, pinned_name(name), "{name}: {lock}");
    }
    assert!(lock.contains("why = \"iptables needs pf-net\""), "{lock}");
    assert!(
        lock.contains(&format!("source = \"{}/debian trixie main\"", l.server.url)),
        "{lock}"
    );
    assert!(stdout.contains("OS packages iptables: 3 .debs"), "{stdout}");

    // The build puts them in the card; they are byte for byte the repository's.
    let out = l.tmp.path().join("dist");
    let b = build_with(&l.spec, &out, &l.arts, &l.cache, &[]);
    let bout = String::from_utf8_lossy(&b.stdout);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert!(
        bout.contains("OS packages in every role's image: 3 .debs"),
        "{bout}"
    );
    let img = out.join("pi-w-1.img");
    for dumped in assert_card_holds_the_three_debs(&l, &img, "dumped") {
        // A real .deb: dpkg-deb reads it.
        assert!(
            run("dpkg-deb", &["-f", dumped.to_str().unwrap(), "Package"])
                .trim()
                .len()
                > 2
        );
    }
    let (_, root) = offsets(&img, &l.cache);
    assert_eq!(e2fsck(&img, root).0, 0);
    // The manifest and the SBOM list the three .debs: upstream URL (the lock's), size and
    // digest of the repository's files, and the SBOM still validates.
    let m = read_json(&out.join("manifest.json"));
    let sbom = read_json(&out.join("sbom.spdx.json"));
    spdx_check(&out.join("sbom.spdx.json"));
    let listed = m["debs"].as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["iptables", "libpf-xtables", "pf-net"], "{listed:?}");
    for (d, (version, arch)) in
        listed
            .iter()
            .zip([("1.8.11-2", "arm64"), ("1.8.11-2", "arm64"), ("6.5", "all")])
    {
        let name = d["name"].as_str().unwrap();
        let file = format!("{name}_{version}_{arch}.deb");
        let pool = l.repo.root.join("debian/pool/main").join(&file);
        let url = format!("{}/debian/pool/main/{file}", l.server.url);
        assert_eq!(d["version"], version);
        assert_eq!(d["arch"], arch);
        assert_eq!(d["file_name"], file.as_str());
        assert_eq!(d["url"], url.as_str());
        assert_eq!(d["sha256"], sha256(&pool).as_str());
        assert_eq!(d["bytes"], fs::metadata(&pool).unwrap().len());
        assert!(lock.contains(&format!("url = \"{url}\"")), "{lock}");
        let p = sbom_package(&sbom, name, version);
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(p["checksums"][0]["checksumValue"], sha256(&pool).as_str());
        assert_eq!(p["packageFileName"], file.as_str());
        assert_eq!(
            p["externalRefs"][0]["referenceLocator"],
            format!("pkg:deb/debian/{name}@{version}?arch={arch}").as_str()
        );
        // The repository is on 127.0.0.1, which SPDX takes for no download location: the
        // URL is in the comment.
        assert_eq!(p["downloadLocation"], "NOASSERTION");
        assert!(p["comment"].as_str().unwrap().contains(&url), "{p}");
    }
    // check says first boot needs no network for them.
    let c = piforge(&["check", img.to_str().unwrap()], &l.cache);
    let ctext = String::from_utf8_lossy(&c.stdout);
    assert!(
        ctext.contains("iptables (iptables) installed on first boot from the card's 3 .debs"),
        "{ctext}"
    );

    // A second fetch trusts the lock (no index is read: the server's indexes may go away).
    fs::remove_dir_all(l.repo.dists()).unwrap();
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("(as the lock pins them)"));
}

fn pinned_name(file: &str) -> bool {
    [
        "iptables_1.8.11-2_arm64.deb",
        "libpf-xtables_1.8.11-2_arm64.deb",
        "pf-net_6.5_all.deb",
    ]
    .contains(&file)
}

#[test]
fn a_bad_or_foreign_signature_is_refused() {
    let l = lab();
    // The Release changed after signing.
    let inrel = l.repo.dists().join("InRelease");
    let text = fs::read_to_string(&inrel)
        .unwrap()
        .replace("Origin: piforge-test", "Origin: piforge-tesT");
    fs::write(&inrel, text).unwrap();
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    assert_one_line_error(&r, "InRelease was refused: its signature is bad");
    assert!(!fs::read_to_string(l.spec.with_file_name("piforge.lock"))
        .unwrap_or_default()
        .contains("[[deb]]"));
    // Signed by a key the base does not trust.
    let other = l.tmp.path().join("other-gnupg");
    new_key(&other, "someone else <x@piforge.invalid>");
    l.repo.sign(&other);
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    assert_one_line_error(&r, "no key the base image trusts made its signature");
    // Not signed at all.
    fs::copy(l.repo.dists().join("Release"), &inrel).unwrap();
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    assert_one_line_error(&r, "it is not a signed file");
}

#[test]
fn a_changed_deb_or_index_is_refused() {
    let l = lab();
    // A Packages index that is not the one the Release signed.
    let pk = l.repo.dists().join("main/binary-arm64/Packages.gz");
    let good = fs::read(&pk).unwrap();
    fs::write(&pk, [&good[..], b"x"].concat()).unwrap();
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    assert_one_line_error(&r, "but the signed Release of");
    fs::write(&pk, &good).unwrap();
    // A .deb changed on the server after its index was signed: refused on first fetch ...
    let deb = l
        .repo
        .root
        .join("debian/pool/main/libpf-xtables_1.8.11-2_arm64.deb");
    let orig = fs::read(&deb).unwrap();
    let mut bad = orig.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    fs::write(&deb, &bad).unwrap();
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    assert_one_line_error(&r, "but the Packages index of");
    // ... and, once pinned, against the lock on a machine with an empty cache.
    fs::write(&deb, &orig).unwrap();
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    fs::write(&deb, &bad).unwrap();
    let fresh = l.tmp.path().join("fresh-cache");
    let out = l.tmp.path().join("dist");
    let b = build_with(&l.spec, &out, &l.arts, &fresh, &[]);
    assert_one_line_error(&b, "but the lock file");
    assert!(!out.join("pi-w-1.img").exists());
    // A changed .deb in --artifacts DIR is refused in the build's first phase: no secrets,
    // no output, whatever the cache holds.
    fs::write(&deb, &orig).unwrap();
    fs::write(l.arts.join("libpf-xtables_1.8.11-2_arm64.deb"), &bad).unwrap();
    let cluster = l.spec.parent().unwrap();
    // (The build above failed after its secrets were made, as a download does.)
    let _ = fs::remove_dir_all(cluster.join("secrets"));
    let out = l.tmp.path().join("dist-offline");
    let b = build_with(&l.spec, &out, &l.arts, &l.cache, &[]);
    assert_one_line_error(&b, "libpf-xtables_1.8.11-2_arm64.deb has SHA-256");
    assert!(!cluster.join("secrets").exists(), "secrets were written");
    assert!(!out.exists(), "an output was written");
}

/// `customize --kubernetes` puts the `.deb`s the lock pins into the image, as `build` does
/// (issue 11); without pins it says first boot uses apt, and the image carries none.
#[test]
fn customize_kubernetes_carries_the_pinned_debs_like_build() {
    let l = lab();
    let base = l.tmp.path().join("base.img");
    let lock = l.spec.with_file_name("piforge.lock");
    let customize =
        |out: &Path, lock: &Path| customize_kubernetes(&base, out, &l.arts, lock, &l.cache);
    // No .deb pinned yet: a warning, and the card installs with apt on first boot.
    let bare = l.tmp.path().join("bare.img");
    let r = customize(&bare, &lock);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("iptables not pinned in") && err.contains("with apt"),
        "{err}"
    );
    let (_, root) = offsets(&bare, &l.cache);
    let none = debugfs(&bare, root, "cat /etc/piforge/first-boot-debs");
    assert!(!none.contains(".deb"), "{none}");

    // Pinned by `fetch SPEC`: the same three .debs as build's card, byte for byte.
    let r = fetch(&l.spec, &l.arts, &l.cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = l.tmp.path().join("node.img");
    let r = customize(&out, &lock);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!String::from_utf8_lossy(&r.stderr).contains("not pinned"));
    assert_card_holds_the_three_debs(&l, &out, "c");
    let (_, root) = offsets(&out, &l.cache);
    assert_eq!(e2fsck(&out, root).0, 0);
    let c = piforge(&["check", out.to_str().unwrap()], &l.cache);
    let ctext = String::from_utf8_lossy(&c.stdout);
    assert!(ctext.contains("from the card's 3 .debs"), "{ctext}");
}
