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
    pub files: Vec<FileEntry>,
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

/// `pkg:deb/<distro>/<name>@<version>?arch=<arch>` (purl spec, type deb), percent-encoding
/// what a purl may not hold literally (`+` in `libstdc++6`, `:` in an epoch).
fn deb_purl(distro: &str, p: &DebPackage) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    format!(
        "pkg:deb/{}/{}@{}?arch={}",
        enc(distro),
        enc(&p.name),
        enc(&p.version),
        enc(&p.arch)
    )
}

/// The SPDX 2.3 JSON document for a build: the base image (with the packages its dpkg status
/// lists as installed) and every release artifact piforge added, with its upstream URL and
/// digest. `distro` is the base's os-release `ID` (for package URLs).
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
    let mut pkgs = vec![json!({
        "SPDXID": base_id,
        "name": m.base_image.file,
        "downloadLocation": noassert,
        "filesAnalyzed": false,
        "checksums": [{"algorithm": "SHA256", "checksumValue": m.base_image.sha256}],
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": noassert,
        "licenseDeclared": noassert,
        "copyrightText": noassert,
    })];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": base_id,
    })];
    for (i, a) in m.artifacts.iter().enumerate() {
        let id = spdx_id("Artifact", &a.name, i);
        pkgs.push(json!({
            "SPDXID": id,
            "name": a.name,
            "versionInfo": a.version,
            "packageFileName": a.file_name,
            "downloadLocation": a.url,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": a.sha256}],
            "primaryPackagePurpose": if a.name == "flannel" { "FILE" } else { "APPLICATION" },
            "comment": "added by piforge",
            "licenseConcluded": noassert,
            "licenseDeclared": noassert,
            "copyrightText": noassert,
        }));
        rels.push(json!({
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": id,
        }));
    }
    for (i, p) in packages.iter().enumerate() {
        let id = spdx_id("Deb", &p.name, i);
        pkgs.push(json!({
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
            "licenseConcluded": noassert,
            "licenseDeclared": noassert,
            "copyrightText": noassert,
        }));
        rels.push(json!({
            "spdxElementId": base_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
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
            nodes: vec![NodeEntry {
                name: "pi-1".into(),
                role: "control-plane".into(),
                address: None,
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
        assert_eq!(pkgs.len(), 1 + 1 + 2);
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
        for r in doc["relationships"].as_array().unwrap() {
            for end in ["spdxElementId", "relatedSpdxElement"] {
                let id = r[end].as_str().unwrap();
                assert!(id == "SPDXRef-DOCUMENT" || ids.contains(id), "{id}");
            }
        }
    }
}
