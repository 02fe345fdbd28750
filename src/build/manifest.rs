//! `dist/manifest.json` and `dist/sbom.spdx.json`: what a build made, from what.
//!
//! The manifest is also the record of which files in the output directory piforge wrote (see
//! [`super::staging`]): a later build removes those it no longer makes and refuses to touch
//! anything else. Both files hold only build inputs (no path of the machine, no wall-clock
//! time), so the same inputs give the same bytes.

use serde::{Deserialize, Serialize};

use crate::artifacts::{ComponentVersions, FetchedArtifact};

/// One file in the output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// One node and the files made for it (the raw image, and any other format of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub role: String,
    /// The fixed address, `None` for a DHCP node.
    pub address: Option<String>,
    /// The node's raw image, whether the output directory keeps it (`--format img`) or only
    /// its compressed copies (Raspberry Pi Imager checks what it wrote against this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_image: Option<RawImage>,
    pub files: Vec<FileEntry>,
}

/// Size and digest of a node's raw image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawImage {
    pub bytes: u64,
    pub sha256: String,
}

/// A release artifact installed in the images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub name: String,
    pub version: String,
    pub file_name: String,
    pub url: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A pinned `.deb` piforge put into the cards (every card: the common layer carries them, and
/// first boot installs them from the card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebEntry {
    pub name: String,
    pub version: String,
    /// `arm64` or `all`.
    pub arch: String,
    pub file_name: String,
    /// Where it comes from upstream, as the lock pins it.
    pub url: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A container image piforge put into the cards, as an OCI archive their first boot imports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// `registry/repository`, e.g. `registry.k8s.io/pause`.
    pub name: String,
    /// The tag asked for; `None` when the image is named by digest.
    pub tag: Option<String>,
    /// The reference as the catalog writes it (`registry.k8s.io/pause:3.10.1`).
    pub reference: String,
    /// What the reference resolved to (`sha256:...`): the index's digest, or the manifest's
    /// when the tag names a single-platform image; the lock pins it.
    pub digest: String,
    /// Where that index (or manifest) is fetched from upstream:
    /// `https://<registry>/v2/<repository>/manifests/<digest>`.
    pub url: String,
    /// The archive's file name in the card, and its size.
    pub archive: String,
    pub bytes: u64,
    /// The spec roles whose cards carry it (`control-plane`, `worker`), sorted.
    pub roles: Vec<String>,
}

/// The upstream image the nodes were made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    /// Its file name (not its path: the manifest does not depend on where inputs live).
    pub file: String,
    /// SHA-256 of the file as given (compressed or not).
    pub sha256: String,
}

/// `dist/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub piforge_version: String,
    pub cluster: String,
    /// SHA-256 of the cluster spec file's bytes.
    pub spec_sha256: String,
    /// The build epoch (`SOURCE_DATE_EPOCH`): every timestamp in the images.
    pub epoch: i64,
    pub kubernetes_version: String,
    pub base_image: BaseImage,
    pub artifacts: Vec<ArtifactEntry>,
    /// The `.deb`s in the cards, sorted by name (none when the base lacks no package, or the
    /// lock does not pin them all: first boot then installs them with apt). `default`: a
    /// manifest an earlier piforge wrote, read back by the next build, has no such field.
    #[serde(default)]
    pub debs: Vec<DebEntry>,
    /// The container images in the cards, sorted by reference (`default`: as `debs`).
    #[serde(default)]
    pub container_images: Vec<ImageEntry>,
    pub nodes: Vec<NodeEntry>,
    /// Files for the whole build (the SBOM, ...), not `SHA256SUMS` or this manifest.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Every file name the manifest accounts for (nodes' and the build's).
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .flat_map(|n| n.files.iter())
            .chain(self.files.iter())
            .map(|f| f.name.as_str())
    }

    /// The manifest as written: pretty JSON, one trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// An artifact's version from the release's component versions.
pub fn artifact_version(v: &ComponentVersions, name: &str) -> String {
    match name {
        "containerd" => &v.containerd,
        "runc" => &v.runc,
        "cni-plugins" => &v.cni_plugins,
        "crictl" => &v.crictl,
        "flannel" => &v.flannel,
        _ => &v.kubernetes,
    }
    .clone()
}

pub fn artifact_entries(v: &ComponentVersions, arts: &[FetchedArtifact]) -> Vec<ArtifactEntry> {
    let mut out: Vec<ArtifactEntry> = arts
        .iter()
        .map(|a| ArtifactEntry {
            name: a.spec.name.to_string(),
            version: artifact_version(v, &a.spec.name),
            file_name: a.spec.file_name.clone(),
            url: a.spec.url.clone(),
            sha256: a.sha256.clone(),
            bytes: a.size,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What piforge put into the cards besides the release artifacts, for the manifest.
#[derive(Debug, Clone, Default)]
pub struct Added {
    pub debs: Vec<DebEntry>,
    pub container_images: Vec<ImageEntry>,
}

/// The manifest's entries for the `.deb`s in the cards, sorted (they come in the order they
/// install, which is not the manifest's business).
pub fn deb_entries(debs: &[crate::apt::CardDeb]) -> Vec<DebEntry> {
    let mut out: Vec<DebEntry> = debs
        .iter()
        .map(|d| DebEntry {
            name: d.name.clone(),
            version: d.version.clone(),
            arch: d.arch.clone(),
            file_name: d.file.clone(),
            url: d.url.clone(),
            sha256: d.sha256.clone(),
            bytes: d.size,
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.arch, &a.version).cmp(&(&b.name, &b.arch, &b.version)));
    out
}

/// One installed package of the base image, from its dpkg status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// The installed packages of a dpkg status file (`Status: install ok installed`), sorted by
/// name.
pub fn installed_packages(status: &str) -> Vec<DebPackage> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let (mut name, mut version, mut arch, mut ok) = (None, None, None, false);
        for l in stanza.lines() {
            if let Some(v) = l.strip_prefix("Package:") {
                name = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Version:") {
                version = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Architecture:") {
                arch = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Status:") {
                ok = v.trim() == "install ok installed";
            }
        }
        if let (Some(n), true) = (name, ok) {
            out.push(DebPackage {
                name: n.to_string(),
                version: version.unwrap_or("").to_string(),
                arch: arch.unwrap_or("").to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.arch.cmp(&b.arch)));
    out.dedup();
    out
}

/// An SPDX identifier: `SPDXRef-` then letters, digits, `.` and `-` only (SPDX 2.3 §3.2).
fn spdx_id(kind: &str, name: &str, i: usize) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{i}-{clean}")
}

/// Percent-encodes what a purl component may not hold literally: all but ASCII letters,
/// digits, `.`, `-`, `_`, `~`, and the bytes of `keep`.
fn purl_enc(s: &str, keep: &[u8]) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ if keep.contains(&b) => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `pkg:deb/<distro>/<name>@<version>?arch=<arch>` (purl spec, type deb), percent-encoding
/// what a purl may not hold literally (`+` in `libstdc++6`, `:` in an epoch).
fn deb_purl(distro: &str, p: &DebPackage) -> String {
    let enc = |s: &str| purl_enc(s, &[]);
    format!(
        "pkg:deb/{}/{}@{}?arch={}",
        enc(distro),
        enc(&p.name),
        enc(&p.version),
        enc(&p.arch)
    )
}

/// `pkg:oci/<name>@sha256:<hex>?repository_url=<registry/repository>&tag=<tag>` (purl spec,
/// type oci): the name is the repository's last part, the version the digest. Written as the
/// purl test vectors' canonical form: the digest's `:` kept, the `/` of `repository_url`
/// encoded, the qualifiers sorted by key.
fn oci_purl(i: &ImageEntry) -> String {
    let enc = |s: &str| purl_enc(s, b":");
    let last = i.name.rsplit('/').next().unwrap_or(&i.name);
    let mut p = format!(
        "pkg:oci/{}@{}?repository_url={}",
        enc(&last.to_ascii_lowercase()),
        enc(&i.digest),
        enc(&i.name)
    );
    if let Some(t) = &i.tag {
        p.push_str(&format!("&tag={}", enc(t)));
    }
    p
}

/// `url` as an SPDX `downloadLocation`, or `NOASSERTION` when its host is not a domain name
/// (`http://127.0.0.1:8080/...`, a local mirror or registry): SPDX's validator (pyspdxtools)
/// accepts only a domain name ending in a 2-5 letter label there, and one such URL would make
/// the whole document invalid. The manifest keeps the URL either way.
fn download_location(url: &str) -> String {
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .map(|h| h.rsplit_once('@').map_or(h, |(_, h)| h))
        .map(|h| match h.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => h,
        })
        .unwrap_or("");
    let labels: Vec<&str> = host.split('.').collect();
    let ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && labels.last().is_some_and(|t| {
            (2..=5).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_lowercase())
        });
    if ok {
        url.to_string()
    } else {
        "NOASSERTION".to_string()
    }
}

/// The SPDX 2.3 JSON document for a build: the base image (with the packages its dpkg status
/// lists as installed) and everything piforge added: every release artifact, `.deb` and
/// container image, with its upstream URL and digest. `distro` is the base's os-release `ID`
/// (for package URLs).
pub fn sbom(m: &Manifest, distro: &str, packages: &[DebPackage]) -> String {
    use serde_json::json;
    let created = {
        let c = crate::clock::civil(m.epoch);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    };
    let noassert = "NOASSERTION";
    let base_id = "SPDXRef-Base-Image".to_string();
    let (mut pkgs, mut rels) = (Vec::new(), Vec::new());
    // A package, with no license or copyright asserted (piforge does not analyse them), and
    // its relationship `rel` from `from`.
    let mut add = |mut pkg: serde_json::Value, from: &str, rel: &str| {
        if let Some(o) = pkg.as_object_mut() {
            for k in ["licenseConcluded", "licenseDeclared", "copyrightText"] {
                o.insert(k.into(), noassert.into());
            }
        }
        rels.push(json!({
            "spdxElementId": from,
            "relationshipType": rel,
            "relatedSpdxElement": pkg["SPDXID"].clone(),
        }));
        pkgs.push(pkg);
    };
    add(
        json!({
            "SPDXID": base_id,
            "name": m.base_image.file,
            "downloadLocation": noassert,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": m.base_image.sha256}],
            "primaryPackagePurpose": "OPERATING-SYSTEM",
        }),
        "SPDXRef-DOCUMENT",
        "DESCRIBES",
    );
    for (i, a) in m.artifacts.iter().enumerate() {
        let id = spdx_id("Artifact", &a.name, i);
        add(
            json!({
                "SPDXID": id,
                "name": a.name,
                "versionInfo": a.version,
                "packageFileName": a.file_name,
                "downloadLocation": download_location(&a.url),
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": a.sha256}],
                "primaryPackagePurpose": if a.name == "flannel" { "FILE" } else { "APPLICATION" },
                "comment": "added by piforge",
            }),
            "SPDXRef-DOCUMENT",
            "DESCRIBES",
        );
    }
    // What piforge added is described by the document, as the artifacts are (the base's own
    // packages are contained in the base).
    for (i, d) in m.debs.iter().enumerate() {
        let id = spdx_id("CardDeb", &d.name, i);
        let purl = deb_purl(
            distro,
            &DebPackage {
                name: d.name.clone(),
                version: d.version.clone(),
                arch: d.arch.clone(),
            },
        );
        add(
            json!({
                "SPDXID": id,
                "name": d.name,
                "versionInfo": d.version,
                "packageFileName": d.file_name,
                "downloadLocation": download_location(&d.url),
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": d.sha256}],
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl,
                }],
                "primaryPackagePurpose": "INSTALL",
                "comment": format!(
                    "added by piforge: in every card, installed on first boot; from {}",
                    d.url
                ),
            }),
            "SPDXRef-DOCUMENT",
            "DESCRIBES",
        );
    }
    for (i, c) in m.container_images.iter().enumerate() {
        let id = spdx_id("Image", &c.name, i);
        add(
            json!({
                "SPDXID": id,
                "name": c.name,
                "versionInfo": c.tag.as_deref().unwrap_or(&c.digest),
                "packageFileName": c.archive,
                "downloadLocation": download_location(&c.url),
                "filesAnalyzed": false,
                // The digest names the index (or manifest) at the download location.
                "checksums": [{
                    "algorithm": "SHA256",
                    "checksumValue": c.digest.trim_start_matches("sha256:"),
                }],
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": oci_purl(c),
                }],
                "primaryPackagePurpose": "CONTAINER",
                "comment": format!(
                    "added by piforge: in the cards of the roles {}, imported on first boot; {}",
                    c.roles.join(", "),
                    c.reference
                ),
            }),
            "SPDXRef-DOCUMENT",
            "DESCRIBES",
        );
    }
    for (i, p) in packages.iter().enumerate() {
        let id = spdx_id("Deb", &p.name, i);
        add(
            json!({
                "SPDXID": id,
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": noassert,
                "filesAnalyzed": false,
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": deb_purl(distro, p),
                }],
            }),
            &base_id,
            "CONTAINS",
        );
    }
    // The namespace must be unique per document: derived from the manifest's content.
    let ns = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(m.to_json().as_bytes()))
    };
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("piforge cluster {}", m.cluster),
        "documentNamespace": format!("https://piforge.invalid/spdx/{}/{ns}", m.cluster),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: piforge-{}", m.piforge_version)],
        },
        "packages": pkgs,
        "relationships": rels,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libstdc++6\nStatus: install ok installed\nArchitecture: arm64\nVersion: 14.2.0-19\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: bash\nStatus: install ok installed\nArchitecture: arm64\nVersion: 5.2.37-2+b5\n";

    fn manifest() -> Manifest {
        Manifest {
            piforge_version: "0.1.0".into(),
            cluster: "lab".into(),
            spec_sha256: "0".repeat(64),
            epoch: 1_704_067_200,
            kubernetes_version: "1.34.11".into(),
            base_image: BaseImage {
                file: "trixie.img.xz".into(),
                sha256: "a".repeat(64),
            },
            artifacts: vec![ArtifactEntry {
                name: "kubeadm".into(),
                version: "1.34.11".into(),
                file_name: "kubeadm".into(),
                url: "https://dl.k8s.io/release/v1.34.11/bin/linux/arm64/kubeadm".into(),
                sha256: "b".repeat(64),
                bytes: 10,
            }],
            debs: vec![DebEntry {
                name: "iptables".into(),
                version: "1:1.8.11-2".into(),
                arch: "arm64".into(),
                file_name: "iptables_1.8.11-2_arm64.deb".into(),
                url:
                    "http://deb.debian.org/debian/pool/main/i/iptables/iptables_1.8.11-2_arm64.deb"
                        .into(),
                sha256: "d".repeat(64),
                bytes: 20,
            }],
            container_images: vec![ImageEntry {
                name: "registry.k8s.io/coredns/coredns".into(),
                tag: Some("v1.12.1".into()),
                reference: "registry.k8s.io/coredns/coredns:v1.12.1".into(),
                digest: format!("sha256:{}", "e".repeat(64)),
                url: format!(
                    "https://registry.k8s.io/v2/coredns/coredns/manifests/sha256:{}",
                    "e".repeat(64)
                ),
                archive: "registry.k8s.io_coredns_coredns_v1.12.1.tar".into(),
                bytes: 30,
                roles: vec!["control-plane".into(), "worker".into()],
            }],
            nodes: vec![NodeEntry {
                name: "pi-1".into(),
                role: "control-plane".into(),
                address: None,
                raw_image: None,
                files: vec![FileEntry {
                    name: "pi-1.img".into(),
                    bytes: 1,
                    sha256: "c".repeat(64),
                }],
            }],
            files: vec![],
        }
    }

    #[test]
    fn dpkg_status_lists_installed_packages_only() {
        let p = installed_packages(STATUS);
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "libstdc++6"]);
        assert_eq!(p[0].version, "5.2.37-2+b5");
        assert_eq!(
            deb_purl("debian", &p[1]),
            "pkg:deb/debian/libstdc%2B%2B6@14.2.0-19?arch=arm64"
        );
    }

    #[test]
    fn manifest_round_trips_and_names_its_files() {
        let m = manifest();
        let back: Manifest = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.file_names().collect::<Vec<_>>(), ["pi-1.img"]);
    }

    /// A manifest an earlier piforge wrote (no `debs`, no `container_images`) is still read:
    /// the next build takes the previous one's file list from it.
    #[test]
    fn a_manifest_without_debs_or_images_is_read() {
        let mut v: serde_json::Value = serde_json::from_str(&manifest().to_json()).unwrap();
        let o = v.as_object_mut().unwrap();
        assert!(o.remove("debs").is_some() && o.remove("container_images").is_some());
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert!(back.debs.is_empty() && back.container_images.is_empty());
        assert_eq!(back.nodes, manifest().nodes);
    }

    #[test]
    fn purls_of_what_piforge_added() {
        let m = manifest();
        assert_eq!(
            oci_purl(&m.container_images[0]),
            format!(
                "pkg:oci/coredns@sha256:{}?repository_url=registry.k8s.io%2Fcoredns%2Fcoredns&tag=v1.12.1",
                "e".repeat(64)
            )
        );
        let by_digest = ImageEntry {
            name: "127.0.0.1:5000/pause".into(),
            tag: None,
            ..m.container_images[0].clone()
        };
        assert_eq!(
            oci_purl(&by_digest),
            format!(
                "pkg:oci/pause@sha256:{}?repository_url=127.0.0.1:5000%2Fpause",
                "e".repeat(64)
            )
        );
    }

    /// A URL on an address, or a host name without a domain, is not one SPDX validators take.
    #[test]
    fn download_location_only_for_domain_names() {
        for ok in [
            "https://dl.k8s.io/release/v1.34.11/bin/linux/arm64/kubeadm",
            "http://deb.debian.org:80/debian/pool/main/a.deb",
            "https://registry.k8s.io/v2/pause/manifests/sha256:ab",
        ] {
            assert_eq!(download_location(ok), ok);
        }
        for no in [
            "http://127.0.0.1:8080/debian/pool/main/a.deb",
            "http://localhost/a.deb",
            "https://[::1]:5000/v2/a/manifests/sha256:ab",
            "file:///srv/a.deb",
            "not a url",
        ] {
            assert_eq!(download_location(no), "NOASSERTION", "{no}");
        }
    }

    /// The fields SPDX 2.3 requires (document creation information §6, package information
    /// §7: name, SPDXID, downloadLocation; filesAnalyzed false so that no verification code is
    /// due), identifiers in the allowed alphabet, unique, and every relationship's ends known.
    #[test]
    fn sbom_has_the_required_spdx_fields() {
        let m = manifest();
        let doc: serde_json::Value =
            serde_json::from_str(&sbom(&m, "debian", &installed_packages(STATUS))).unwrap();
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["dataLicense"], "CC0-1.0");
        assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
        assert!(doc["name"].as_str().unwrap().contains("lab"));
        assert!(doc["documentNamespace"]
            .as_str()
            .unwrap()
            .starts_with("https://"));
        assert_eq!(doc["creationInfo"]["created"], "2024-01-01T00:00:00Z");
        assert_eq!(doc["creationInfo"]["creators"][0], "Tool: piforge-0.1.0");
        let pkgs = doc["packages"].as_array().unwrap();
        // The base, the artifact, the .deb and the image piforge added, the base's 2 packages.
        assert_eq!(pkgs.len(), 1 + 1 + 1 + 1 + 2);
        let mut ids = std::collections::BTreeSet::new();
        for p in pkgs {
            let id = p["SPDXID"].as_str().unwrap();
            assert!(id.starts_with("SPDXRef-"));
            assert!(id[8..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
            assert!(ids.insert(id.to_string()), "duplicate {id}");
            assert!(p["name"].is_string() && p["downloadLocation"].is_string());
            assert_eq!(p["filesAnalyzed"], false);
        }
        let kubeadm = pkgs.iter().find(|p| p["name"] == "kubeadm").unwrap();
        assert_eq!(kubeadm["downloadLocation"], m.artifacts[0].url);
        assert_eq!(
            kubeadm["checksums"][0]["checksumValue"],
            m.artifacts[0].sha256
        );
        let deb = pkgs.iter().find(|p| p["name"] == "iptables").unwrap();
        assert_eq!(deb["downloadLocation"], m.debs[0].url);
        assert_eq!(deb["versionInfo"], "1:1.8.11-2");
        assert_eq!(deb["checksums"][0]["checksumValue"], m.debs[0].sha256);
        assert_eq!(
            deb["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/iptables@1%3A1.8.11-2?arch=arm64"
        );
        let image = &m.container_images[0];
        let img = pkgs.iter().find(|p| p["name"] == image.name).unwrap();
        assert_eq!(img["downloadLocation"], image.url);
        assert_eq!(img["versionInfo"], "v1.12.1");
        assert_eq!(img["checksums"][0]["checksumValue"], "e".repeat(64));
        assert_eq!(img["externalRefs"][0]["referenceLocator"], oci_purl(image));
        assert_eq!(img["primaryPackagePurpose"], "CONTAINER");
        // What piforge added is described by the document, as the artifacts are.
        let rels = doc["relationships"].as_array().unwrap();
        for p in [kubeadm, deb, img] {
            assert!(rels.iter().any(|r| r["spdxElementId"] == "SPDXRef-DOCUMENT"
                && r["relationshipType"] == "DESCRIBES"
                && r["relatedSpdxElement"] == p["SPDXID"]));
        }
        for r in doc["relationships"].as_array().unwrap() {
            for end in ["spdxElementId", "relatedSpdxElement"] {
                let id = r[end].as_str().unwrap();
                assert!(id == "SPDXRef-DOCUMENT" || ids.contains(id), "{id}");
            }
        }
        // An artifact fetched from a local mirror (`--catalog` URLs on an address) keeps its
        // URL in the manifest, but not in the SBOM, whose validators would refuse it.
        let mut local = m.clone();
        local.artifacts[0].url = "http://127.0.0.1:8080/kubeadm".into();
        let doc: serde_json::Value = serde_json::from_str(&sbom(&local, "debian", &[])).unwrap();
        let kubeadm = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "kubeadm");
        assert_eq!(kubeadm.unwrap()["downloadLocation"], "NOASSERTION");
    }
}
