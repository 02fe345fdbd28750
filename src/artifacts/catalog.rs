//! The catalog of arm64 release artifacts (`artifacts.toml`, embedded in the binary).
//!
//! Format: `[[artifact]]` tables describe each artifact once, with URL patterns;
//! `[[release]]` tables give, per supported Kubernetes version, the component versions
//! that fill those patterns. Placeholders:
//!
//! | placeholder | allowed in | value |
//! | --- | --- | --- |
//! | `{kubernetes}` `{containerd}` `{runc}` `{cni_plugins}` `{crictl}` `{flannel}` | `file`, `url`, `checksum_url` | the release's version (no leading `v`) |
//! | `{file}` | `url`, `checksum_url` | the expanded `file` |
//! | `{url}` | `checksum_url` | the expanded `url` |
//!
//! Parsing validates everything (unknown keys or placeholders, https-only URLs, plain file
//! names, version syntax), so expanding a [`Release`] cannot fail afterwards.

use super::{Error, Result};
use file::Place;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;

mod file;
mod values;

use values::{check_members, check_url, is_image_reference, is_version, parse_kube_version};

const BUILTIN: &str = include_str!("../../artifacts.toml");

/// The most a `--catalog FILE` may hold (the built-in catalog is under 10 KiB).
const MAX_USER_CATALOG: u64 = 1 << 20;

/// The component versions `kubernetes.versions` in cluster.yaml may replace (the URL
/// placeholders other than `{kubernetes}`, which `kubernetes.version` chooses).
pub const OVERRIDABLE: [&str; 5] = ["containerd", "runc", "cni_plugins", "crictl", "flannel"];

/// What an artifact is, which says how it is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArtifactKind {
    /// A single executable (kubeadm, kubelet, kubectl, runc).
    #[serde(rename = "binary")]
    Binary,
    /// A gzip-compressed tarball (containerd, CNI plugins, crictl); see [`super::tar_entries`].
    #[serde(rename = "tar.gz")]
    TarGz,
    /// A Kubernetes manifest (flannel).
    #[serde(rename = "manifest")]
    Manifest,
}

/// The artifacts the node payload installs, by their catalog names. The payload looks them
/// up by this enum, never by a string, and the built-in catalog must have every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactName {
    Kubeadm,
    Kubelet,
    Kubectl,
    Containerd,
    Runc,
    CniPlugins,
    Crictl,
    Flannel,
}

impl ArtifactName {
    pub const ALL: [ArtifactName; 8] = [
        ArtifactName::Kubeadm,
        ArtifactName::Kubelet,
        ArtifactName::Kubectl,
        ArtifactName::Containerd,
        ArtifactName::Runc,
        ArtifactName::CniPlugins,
        ArtifactName::Crictl,
        ArtifactName::Flannel,
    ];

    /// The `name` in `artifacts.toml` and `piforge.lock`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactName::Kubeadm => "kubeadm",
            ArtifactName::Kubelet => "kubelet",
            ArtifactName::Kubectl => "kubectl",
            ArtifactName::Containerd => "containerd",
            ArtifactName::Runc => "runc",
            ArtifactName::CniPlugins => "cni-plugins",
            ArtifactName::Crictl => "crictl",
            ArtifactName::Flannel => "flannel",
        }
    }
}

impl std::fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<ArtifactName> for String {
    fn eq(&self, other: &ArtifactName) -> bool {
        self == other.as_str()
    }
}

/// How an upstream checksum file is parsed; see [`super::parse_checksum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumKind {
    /// One digest, optionally followed by our file name (`dl.k8s.io` `.sha256`, crictl).
    #[serde(rename = "bare")]
    Bare,
    /// `sha256sum` output, `<hex>  <file name>` lines: the line for our file is used
    /// (containerd `.sha256sum`, runc `runc.sha256sum`, CNI `.sha256`).
    #[serde(rename = "sha256sum")]
    Sha256sum,
}

/// One artifact of one release, with its URLs expanded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactSpec {
    /// Short name, e.g. `kubeadm`, `containerd`.
    pub name: String,
    /// Upstream file name (the last URL segment), e.g. `containerd-static-2.1.4-linux-arm64.tar.gz`.
    pub file_name: String,
    /// Upstream URL (https).
    pub url: String,
    /// URL of the upstream checksum file; `None` when upstream publishes none
    /// (the digest is then pinned in the lock on first fetch, with `allow_unpinned`).
    pub checksum_url: Option<String>,
    /// How the checksum file is parsed (meaningless without `checksum_url`).
    pub checksum_kind: ChecksumKind,
    pub kind: ArtifactKind,
    /// The members of a tarball that may be installed (empty for other kinds).
    pub members: Members,
}

/// The members of a tarball artifact (normalized paths such as `bin/ctr`, `./bridge` written
/// as `bridge`) that piforge installs. Anything else in the archive is refused, so a tarball
/// cannot lay down a file it was not pinned for, such as a second `kubeadm` (issue 12 item 13).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Members {
    /// Installed; an archive without one of them is refused.
    pub required: Vec<String>,
    /// Installed when present.
    pub optional: Vec<String>,
    /// Present upstream, never installed (LICENSE, README.md).
    pub ignored: Vec<String>,
}

/// The component versions of one release, as written in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentVersions {
    /// Kubernetes version, `X.Y.Z` (kubeadm, kubelet, kubectl).
    pub kubernetes: String,
    pub containerd: String,
    pub runc: String,
    pub cni_plugins: String,
    pub crictl: String,
    pub flannel: String,
    /// The sandbox ("pause") image this kubeadm expects, e.g. `registry.k8s.io/pause:3.10.1`;
    /// containerd's `sandbox_image` must match it.
    pub pause_image: String,
    /// The kube-vip image the control planes run as a static pod when the spec has a
    /// `kubernetes.vip`, e.g. `ghcr.io/kube-vip/kube-vip:v1.0.3`. Optional so that a catalog
    /// without one still serves clusters without a VIP. Pinned by tag only until container
    /// images are fetched and locked like the other artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_vip_image: Option<String>,
    /// The etcd image this kubeadm deploys (see [`super::images`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_image: Option<String>,
    /// The CoreDNS image this kubeadm deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coredns_image: Option<String>,
    /// The images of the flannel manifest at this release's flannel version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flannel_images: Vec<String>,
}

impl ComponentVersions {
    /// Value of a version placeholder, `None` for an unknown name.
    fn placeholder(&self, name: &str) -> Option<&str> {
        Some(match name {
            "kubernetes" => &self.kubernetes,
            "containerd" => &self.containerd,
            "runc" => &self.runc,
            "cni_plugins" => &self.cni_plugins,
            "crictl" => &self.crictl,
            "flannel" => &self.flannel,
            _ => return None,
        })
    }
}

/// One supported Kubernetes version with its component versions and artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    versions: ComponentVersions,
    artifacts: Vec<ArtifactSpec>,
}

impl Release {
    /// The Kubernetes version, `X.Y.Z`.
    pub fn kubernetes(&self) -> &str {
        &self.versions.kubernetes
    }

    /// All component versions (and the pause image).
    pub fn versions(&self) -> &ComponentVersions {
        &self.versions
    }

    /// The pause image kubeadm expects for this version.
    pub fn pause_image(&self) -> &str {
        &self.versions.pause_image
    }

    /// The kube-vip image for a cluster with a VIP, if the catalog names one.
    pub fn kube_vip_image(&self) -> Option<&str> {
        self.versions.kube_vip_image.as_deref()
    }

    /// Every artifact of this release, in catalog order.
    pub fn artifacts(&self) -> Vec<ArtifactSpec> {
        self.artifacts.clone()
    }

    /// The artifact called `name`, if the catalog has one.
    pub fn artifact(&self, name: &str) -> Option<&ArtifactSpec> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// The payload artifact `name`, if the catalog has it.
    pub fn payload_artifact(&self, name: ArtifactName) -> Option<&ArtifactSpec> {
        self.artifact(name.as_str())
    }
}

/// The parsed, validated catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// Newest Kubernetes version first.
    releases: Vec<Release>,
    /// The artifact patterns, to expand a release again with other component versions
    /// (`kubernetes.versions` in cluster.yaml).
    templates: Vec<Template>,
}

/// A URL or file-name pattern split into literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Lit(String),
    Var(String),
}

fn parse_pattern(
    pattern: &str,
    allowed_extra: &[&str],
) -> std::result::Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                out.push(Segment::Lit(rest.to_string()));
                break;
            }
            Some(i) => {
                if rest.as_bytes()[i] == b'}' {
                    return Err(format!("{pattern:?} has a '}}' without '{{'"));
                }
                if i > 0 {
                    out.push(Segment::Lit(rest[..i].to_string()));
                }
                let after = &rest[i + 1..];
                let end = after
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .filter(|&e| after.as_bytes()[e] == b'}')
                    .ok_or_else(|| {
                        format!("{pattern:?} has a '{{' without '}}' after a placeholder name")
                    })?;
                let name = &after[..end];
                let known = VERSION_PLACEHOLDERS.contains(&name) || allowed_extra.contains(&name);
                if !known {
                    let mut all: Vec<&str> = VERSION_PLACEHOLDERS.to_vec();
                    all.extend_from_slice(allowed_extra);
                    return Err(format!(
                        "{pattern:?} uses the unknown placeholder {{{name}}} (known here: {})",
                        all.iter()
                            .map(|n| format!("{{{n}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                out.push(Segment::Var(name.to_string()));
                rest = &after[end + 1..];
            }
        }
    }
    Ok(out)
}

const VERSION_PLACEHOLDERS: [&str; 6] = [
    "kubernetes",
    "containerd",
    "runc",
    "cni_plugins",
    "crictl",
    "flannel",
];

fn expand(segments: &[Segment], versions: &ComponentVersions, extra: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for seg in segments {
        match seg {
            Segment::Lit(l) => s.push_str(l),
            Segment::Var(v) => {
                // parse_pattern admitted only known names, so one of these matches.
                let value = versions
                    .placeholder(v)
                    .or_else(|| extra.iter().find(|(k, _)| k == v).map(|(_, val)| *val))
                    .unwrap_or_default();
                s.push_str(value);
            }
        }
    }
    s
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    name: String,
    kind: ArtifactKind,
    members: Members,
    file: Vec<Segment>,
    url: Vec<Segment>,
    checksum: Option<(Vec<Segment>, ChecksumKind)>,
    /// Where `url` and `checksum_url` were written, for a URL that expands badly.
    url_at: String,
    checksum_at: Option<String>,
}

/// Flannel's images tagged `v{old}` (the flannel image itself; its CNI-plugin image has a
/// version of its own) retagged `v{new}`.
fn follow_flannel(images: &[String], old: &str, new: &str) -> Vec<String> {
    let old_tag = format!(":v{old}");
    images
        .iter()
        .map(|i| match i.strip_suffix(&old_tag) {
            Some(name) => format!("{name}:v{new}"),
            None => i.clone(),
        })
        .collect()
}

/// A release's artifacts: every template expanded with `v`. An error names where the
/// pattern that expanded badly was written.
fn expand_release(
    templates: &[Template],
    v: ComponentVersions,
) -> std::result::Result<Release, (String, String)> {
    let mut artifacts = Vec::new();
    for t in templates {
        let file_name = expand(&t.file, &v, &[]);
        let url = expand(&t.url, &v, &[("file", &file_name)]);
        check_url("url", &url)
            .map_err(|m| (t.url_at.clone(), format!("artifact {:?}: {m}", t.name)))?;
        let checksum_url = t
            .checksum
            .as_ref()
            .map(|(c, _)| expand(c, &v, &[("file", &file_name), ("url", &url)]));
        if let Some(c) = &checksum_url {
            check_url("checksum_url", c).map_err(|m| {
                (
                    t.checksum_at.clone().unwrap_or_else(|| t.url_at.clone()),
                    format!("artifact {:?}: {m}", t.name),
                )
            })?;
        }
        artifacts.push(ArtifactSpec {
            name: t.name.clone(),
            file_name,
            url,
            checksum_url,
            checksum_kind: t.checksum.as_ref().map_or(ChecksumKind::Bare, |(_, k)| *k),
            kind: t.kind,
            members: t.members.clone(),
        });
    }
    Ok(Release {
        versions: v,
        artifacts,
    })
}

impl Catalog {
    /// The catalog embedded in piforge (`artifacts.toml` at the repository root).
    pub fn builtin() -> Result<Catalog> {
        Catalog::parse(BUILTIN, "artifacts.toml (built in)")
    }

    /// Parses and validates a catalog; `origin` names it in error messages
    /// (`origin:line:col: problem`).
    pub fn parse(text: &str, origin: &str) -> Result<Catalog> {
        let raw = file::read(text, origin)?;
        Catalog::from_entries(raw.artifacts, raw.releases)
    }

    /// The built-in catalog with a user's catalog file (`--catalog FILE`) laid over it.
    ///
    /// The file has the format of `artifacts.toml`, every table optional:
    /// - an `[[artifact]]` names one of the built-in artifacts and replaces the keys it sets
    ///   (a different `url`, say); an artifact piforge would not install is refused;
    /// - a `[[release]]` of a Kubernetes minor the built-in catalog has replaces that minor's
    ///   release, taking every key it does not set from it (so `kubernetes = "1.36.5"` alone
    ///   is a new patch release with the same components); a release of another minor is
    ///   added and must set every required key.
    ///
    /// Problems are reported as `FILE:line:col: problem`.
    pub fn with_user_file(path: &Path) -> Result<Catalog> {
        let origin = path.display().to_string();
        let text = file::read_bounded(path, MAX_USER_CATALOG)
            .map_err(|e| Error::io("cannot read the catalog file", path, e))?;
        Catalog::with_user_text(&text, &origin)
    }

    /// [`Catalog::with_user_file`] on text already read.
    pub fn with_user_text(text: &str, origin: &str) -> Result<Catalog> {
        let builtin = file::read(BUILTIN, "artifacts.toml (built in)")?;
        let user = file::read(text, origin)?;
        let (artifacts, releases) = file::overlay(builtin, user)?;
        Catalog::from_entries(artifacts, releases)
    }

    /// The built-in catalog, or the built-in one with `user_file` laid over it.
    pub fn load(user_file: Option<&Path>) -> Result<Catalog> {
        match user_file {
            Some(p) => Catalog::with_user_file(p),
            None => Catalog::builtin(),
        }
    }

    fn from_entries(
        raw_artifacts: Vec<file::ArtifactEntry>,
        raw_releases: Vec<file::ReleaseEntry>,
    ) -> Result<Catalog> {
        if raw_artifacts.is_empty() {
            return Err(Error::Catalog {
                at: file::first_origin(&raw_releases).unwrap_or_default(),
                msg: "it has no [[artifact]]".into(),
            });
        }
        if raw_releases.is_empty() {
            return Err(Error::Catalog {
                at: raw_artifacts[0].name.origin(),
                msg: "it has no [[release]]".into(),
            });
        }

        let mut templates: Vec<Template> = Vec::new();
        for a in &raw_artifacts {
            let ctx = |at: &dyn Place, m: String| at.err(format!("artifact {:?}: {m}", a.name.v));
            let name = &a.name;
            if name.v.is_empty()
                || !name
                    .v
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(ctx(
                    name,
                    "the name must be lowercase letters, digits and '-'".into(),
                ));
            }
            if templates.iter().any(|t: &Template| t.name == name.v) {
                return Err(ctx(name, "the name appears twice".into()));
            }
            let missing = |key: &str| ctx(name, format!("missing `{key}`"));
            let kind = a.kind.as_ref().ok_or_else(|| missing("kind"))?;
            let file_at = a.file.as_ref().ok_or_else(|| missing("file"))?;
            let url_at = a.url.as_ref().ok_or_else(|| missing("url"))?;
            let f = &file_at.v;
            if f.is_empty() || f.contains(['/', '\\']) || f.starts_with('.') {
                return Err(ctx(
                    file_at,
                    format!("file {f:?} must be a plain file name"),
                ));
            }
            let file = parse_pattern(f, &[]).map_err(|m| ctx(file_at, m))?;
            let url = parse_pattern(&url_at.v, &["file"]).map_err(|m| ctx(url_at, m))?;
            let checksum = match (&a.checksum_url, &a.checksum_kind) {
                (Some(c), Some(k)) => Some((
                    parse_pattern(&c.v, &["file", "url"]).map_err(|m| ctx(c, m))?,
                    k.v,
                )),
                (None, None) => None,
                (Some(c), None) => return Err(ctx(c, "checksum_url needs a checksum_kind".into())),
                (None, Some(k)) => return Err(ctx(k, "checksum_kind without checksum_url".into())),
            };
            let members_at = a
                .members
                .as_ref()
                .or(a.optional_members.as_ref())
                .or(a.ignored_members.as_ref())
                .map_or(name.at_ref(), |m| m.at_ref());
            let value =
                |m: &Option<file::At<Vec<String>>>| m.as_ref().map_or(Vec::new(), |m| m.v.clone());
            let members = check_members(
                kind.v,
                Members {
                    required: value(&a.members),
                    optional: value(&a.optional_members),
                    ignored: value(&a.ignored_members),
                },
            )
            .map_err(|m| ctx(members_at, m))?;
            templates.push(Template {
                name: name.v.clone(),
                kind: kind.v,
                members,
                file,
                url,
                checksum,
                url_at: url_at.origin(),
                checksum_at: a.checksum_url.as_ref().map(|c| c.origin()),
            });
        }

        let mut releases: Vec<(Release, (u64, u64, u64))> = Vec::new();
        for r in raw_releases {
            let k = &r.kubernetes;
            let ctx = |at: &dyn Place, m: String| at.err(format!("release {:?}: {m}", k.v));
            let parsed = parse_kube_version(&k.v).ok_or_else(|| {
                ctx(
                    k,
                    "kubernetes must be a version X.Y.Z without a leading 'v'".into(),
                )
            })?;
            let missing: Vec<&str> = r.missing();
            if !missing.is_empty() {
                return Err(ctx(
                    k,
                    format!(
                        "missing field{} {} (a release of a minor the built-in catalog lacks \
                         must set every one)",
                        if missing.len() == 1 { "" } else { "s" },
                        missing
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            for (field, at) in r.version_fields() {
                if !is_version(&at.v) {
                    return Err(ctx(
                        at,
                        format!(
                            "{field} = {:?} is not a version (letters, digits, '.', '_', '+', '-')",
                            at.v
                        ),
                    ));
                }
            }
            let v = r.versions();
            if let Some(at) = &r.kube_vip_image {
                if !is_image_reference(&at.v) {
                    return Err(ctx(
                        at,
                        format!(
                            "kube_vip_image {:?} is not an image reference with a tag or digest \
                             (such as ghcr.io/kube-vip/kube-vip:v1.0.3)",
                            at.v
                        ),
                    ));
                }
            }
            for (field, at, image) in r.images() {
                if let Err(e) = crate::oci::ImageRef::parse(image) {
                    return Err(ctx(at, format!("{field}: {e}")));
                }
                // Written into the ClusterConfiguration as etcd's and CoreDNS's ImageMeta.
                let component = match field {
                    "etcd_image" => "etcd",
                    "coredns_image" => "coredns",
                    _ => continue,
                };
                if let Err(e) = super::images::kubeadm_image_meta(component, image) {
                    return Err(ctx(at, format!("{field}: {e}")));
                }
            }
            if let Some((other, _)) = releases
                .iter()
                .find(|(_, p)| (p.0, p.1) == (parsed.0, parsed.1))
            {
                return Err(ctx(
                    k,
                    format!(
                        "minor version {}.{} appears twice (also {})",
                        parsed.0,
                        parsed.1,
                        other.kubernetes()
                    ),
                ));
            }
            let release = expand_release(&templates, v).map_err(|(at, m)| Error::Catalog {
                at,
                msg: format!("release {:?}: {m}", k.v),
            })?;
            releases.push((release, parsed));
        }
        releases.sort_by_key(|r| std::cmp::Reverse(r.1));
        Ok(Catalog {
            releases: releases.into_iter().map(|(r, _)| r).collect(),
            templates,
        })
    }

    /// The release for `k8s_version` (as [`Catalog::release`]) with some component versions
    /// replaced: `overrides` are `(component, version)` pairs such as `("containerd",
    /// "2.1.5")`, the keys of `kubernetes.versions` in cluster.yaml ([`OVERRIDABLE`]). Every
    /// artifact URL is expanded again with the new versions, so an artifact the lock has not
    /// seen goes through the first-fetch path (upstream checksum file, or `--allow-unpinned`)
    /// and is pinned like any other. Flannel's images of the old flannel version (tag
    /// `v{flannel}`) follow a new flannel version.
    pub fn release_with(
        &self,
        k8s_version: &str,
        overrides: &[(String, String)],
    ) -> Result<Release> {
        let base = self.release(k8s_version)?;
        if overrides.is_empty() {
            return Ok(base);
        }
        let mut v = base.versions.clone();
        for (component, version) in overrides {
            let version = version.trim_start_matches('v');
            if !is_version(version) || !OVERRIDABLE.contains(&component.as_str()) {
                return Err(Error::Catalog {
                    at: "kubernetes.versions".into(),
                    msg: format!(
                        "{component}: {version:?} cannot replace a component version (known \
                         components: {})",
                        OVERRIDABLE.join(", ")
                    ),
                });
            }
            if component == "flannel" {
                v.flannel_images = follow_flannel(&v.flannel_images, &v.flannel, version);
            }
            match component.as_str() {
                "containerd" => v.containerd = version.to_string(),
                "runc" => v.runc = version.to_string(),
                "cni_plugins" => v.cni_plugins = version.to_string(),
                "crictl" => v.crictl = version.to_string(),
                _ => v.flannel = version.to_string(),
            }
        }
        expand_release(&self.templates, v).map_err(|(at, msg)| Error::Catalog {
            at,
            msg: format!("with kubernetes.versions: {msg}"),
        })
    }

    /// The release for `k8s_version`: an exact `X.Y.Z` or a minor `X.Y`, with or without a
    /// leading `v`. The error lists the supported versions.
    pub fn release(&self, k8s_version: &str) -> Result<Release> {
        let want = k8s_version.trim().trim_start_matches('v');
        let found = self.releases.iter().find(|r| {
            let k = r.kubernetes();
            k == want
                || k.strip_prefix(want)
                    .is_some_and(|rest| rest.starts_with('.') && want.matches('.').count() == 1)
        });
        found.cloned().ok_or_else(|| Error::UnsupportedVersion {
            requested: k8s_version.to_string(),
            supported: self.supported_versions().join(", "),
        })
    }

    /// All releases, newest Kubernetes version first.
    pub fn releases(&self) -> &[Release] {
        &self.releases
    }

    /// The supported Kubernetes versions, newest first (`X.Y.Z`).
    pub fn supported_versions(&self) -> Vec<&str> {
        self.releases.iter().map(|r| r.kubernetes()).collect()
    }
}

impl FromStr for Catalog {
    type Err = Error;

    fn from_str(text: &str) -> Result<Catalog> {
        Catalog::parse(text, "(string)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
[[artifact]]
name = "kubeadm"
kind = "binary"
file = "kubeadm"
url = "https://dl.k8s.io/release/v{kubernetes}/bin/linux/arm64/{file}"
checksum_url = "{url}.sha256"
checksum_kind = "bare"

[[artifact]]
name = "flannel"
kind = "manifest"
file = "kube-flannel.yml"
url = "https://github.com/flannel-io/flannel/releases/download/v{flannel}/{file}"

[[release]]
kubernetes = "1.9.1"
containerd = "2.1.4"
runc = "1.3.3"
cni_plugins = "1.8.0"
crictl = "1.9.0"
flannel = "0.27.3"
pause_image = "registry.k8s.io/pause:3.10.1"

[[release]]
kubernetes = "1.10.0"
containerd = "2.1.4"
runc = "1.3.3"
cni_plugins = "1.8.0"
crictl = "1.10.0"
flannel = "0.27.3"
pause_image = "registry.k8s.io/pause:3.10.1"
"#;

    #[test]
    fn builtin_catalog_has_1_36_1_35_and_1_34_with_every_component() {
        let cat = Catalog::builtin().unwrap();
        for (minor, pause) in [
            ("1.36", "registry.k8s.io/pause:3.10.2"),
            ("1.35", "registry.k8s.io/pause:3.10.1"),
            ("1.34", "registry.k8s.io/pause:3.10.1"),
        ] {
            let r = cat.release(minor).unwrap();
            assert!(r.kubernetes().starts_with(&format!("{minor}.")));
            assert_eq!(r.pause_image(), pause);
            for n in ArtifactName::ALL {
                assert!(r.payload_artifact(n).is_some(), "{minor} lacks {n}");
            }
            let names: Vec<String> = r.artifacts().into_iter().map(|a| a.name).collect();
            for want in [
                "kubeadm",
                "kubelet",
                "kubectl",
                "containerd",
                "runc",
                "cni-plugins",
                "crictl",
                "flannel",
            ] {
                assert!(
                    names.iter().any(|n| n == want),
                    "{minor} lacks {want}: {names:?}"
                );
            }
            for a in r.artifacts() {
                assert!(a.url.starts_with("https://"), "{a:?}");
                assert!(a.url.ends_with(&format!("/{}", a.file_name)), "{a:?}");
                assert!(!a.url.contains(['{', '}']), "{a:?}");
                // Every artifact of the built-in catalog is one the payload knows by name.
                assert!(
                    ArtifactName::ALL.iter().any(|n| a.name == *n),
                    "{} is not an ArtifactName",
                    a.name
                );
                // Everything but the flannel manifest has an upstream checksum file.
                assert_eq!(a.checksum_url.is_none(), a.name == "flannel", "{a:?}");
            }
        }
        let r = cat.release("1.34").unwrap();
        let kubeadm = r.artifact("kubeadm").unwrap();
        assert_eq!(
            kubeadm.url,
            format!(
                "https://dl.k8s.io/release/v{}/bin/linux/arm64/kubeadm",
                r.kubernetes()
            )
        );
        assert_eq!(
            kubeadm.checksum_url.as_deref(),
            Some(&*format!("{}.sha256", kubeadm.url))
        );
        let ctd = r.artifact("containerd").unwrap();
        let c = &r.versions().containerd;
        // 2.1.5 was a security release (GHSA-pwhc-rpq9-4c8w, GHSA-m6hq-p25p-ffr2).
        let patch: u32 = c.strip_prefix("2.1.").and_then(|p| p.parse().ok()).unwrap();
        assert!(patch >= 5, "containerd {c} lacks the 2.1.5 security fixes");
        assert_eq!(
            ctd.file_name,
            format!("containerd-static-{c}-linux-arm64.tar.gz")
        );
        assert_eq!(ctd.kind, ArtifactKind::TarGz);
        assert_eq!(ctd.checksum_kind, ChecksumKind::Sha256sum);
        let runc = r.artifact("runc").unwrap();
        assert_eq!(
            runc.checksum_url.as_deref(),
            Some(&*format!(
                "https://github.com/opencontainers/runc/releases/download/v{}/runc.sha256sum",
                r.versions().runc
            ))
        );
    }

    #[test]
    fn release_lookup_by_patch_or_minor_and_error_lists_versions() {
        let cat: Catalog = SMALL.parse().unwrap();
        assert_eq!(cat.supported_versions(), ["1.10.0", "1.9.1"]);
        assert_eq!(cat.release("v1.9.1").unwrap().kubernetes(), "1.9.1");
        assert_eq!(cat.release("1.10").unwrap().kubernetes(), "1.10.0");
        // "1.1" must not match "1.10.0".
        for bad in ["1.1", "1.9.2", "1", "1.9.1.0", ""] {
            let e = cat.release(bad).unwrap_err().to_string();
            assert!(e.contains("supported: 1.10.0, 1.9.1"), "{bad}: {e}");
        }
        let r = cat.release("1.9").unwrap();
        let f = r.artifact("flannel").unwrap();
        assert_eq!(
            f.url,
            "https://github.com/flannel-io/flannel/releases/download/v0.27.3/kube-flannel.yml"
        );
        assert_eq!(f.checksum_url, None);
        assert_eq!(f.kind, ArtifactKind::Manifest);
        assert_eq!(
            r.artifact("kubeadm").unwrap().checksum_url.as_deref(),
            Some("https://dl.k8s.io/release/v1.9.1/bin/linux/arm64/kubeadm.sha256")
        );
    }

    fn err_of(text: &str) -> String {
        Catalog::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn invalid_catalogs_are_refused_with_a_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "{kubernetes}/bin/linux",
                "{kubernetess}/bin/linux",
                "unknown placeholder {kubernetess}",
            ),
            (
                "checksum_url = \"{url}.sha256\"",
                "checksum_url = \"{url}.sha256\"\nmirror = 1",
                "unknown field",
            ),
            (
                "https://dl.k8s.io",
                "http://dl.k8s.io",
                "not an https:// URL",
            ),
            (
                "file = \"kubeadm\"",
                "file = \"bin/kubeadm\"",
                "plain file name",
            ),
            (
                "file = \"kubeadm\"",
                "file = \"kubeadm-{url}\"",
                "unknown placeholder {url}",
            ),
            ("kubernetes = \"1.9.1\"", "kubernetes = \"v1.9.1\"", "X.Y.Z"),
            (
                "runc = \"1.3.3\"",
                "runc = \"1.3.3/../x\"",
                "is not a version",
            ),
            (
                "kubernetes = \"1.10.0\"",
                "kubernetes = \"1.9.7\"",
                "appears twice",
            ),
            ("checksum_kind = \"bare\"", "", "needs a checksum_kind"),
            (
                "{kubernetes}/bin/linux",
                "{kubernetes/bin/linux",
                "without '}'",
            ),
            (
                "checksum_kind = \"bare\"",
                "checksum_kind = \"md5\"",
                "unknown variant",
            ),
            (
                "pause_image = \"registry.k8s.io/pause:3.10.1\"",
                "",
                "missing field",
            ),
        ];
        for (from, to, want) in cases {
            assert!(SMALL.contains(from), "{from}");
            let e = err_of(&SMALL.replacen(from, to, 1));
            assert!(
                e.contains(want) && e.contains("test.toml"),
                "{from} -> {to}: {e}"
            );
        }
        assert!(err_of("").contains("no [[artifact]]"));
    }

    #[test]
    fn kube_vip_image_is_optional_and_checked() {
        // Every built-in release names one, with a tag.
        let cat = Catalog::builtin().unwrap();
        for minor in ["1.36", "1.35", "1.34"] {
            let release = cat.release(minor).unwrap();
            let image = release.kube_vip_image().unwrap();
            assert!(
                image.starts_with("ghcr.io/kube-vip/kube-vip:v"),
                "{minor}: {image}"
            );
        }
        // A catalog without one still parses; its releases just have none.
        let small = Catalog::parse(SMALL, "test.toml").unwrap();
        assert_eq!(small.release("1.9").unwrap().kube_vip_image(), None::<&str>);
        let pause = "pause_image = \"registry.k8s.io/pause:3.10.1\"";
        let with = |image: &str| {
            SMALL.replacen(pause, &format!("{pause}\nkube_vip_image = \"{image}\""), 1)
        };
        for good in [
            "ghcr.io/kube-vip/kube-vip:v1.0.3",
            "registry.lan:5000/kube-vip:v1.0.3",
            &format!("ghcr.io/kube-vip/kube-vip@sha256:{}", "ab".repeat(32)),
        ] {
            let cat = Catalog::parse(&with(good), "test.toml").unwrap();
            let release = cat.release("1.9").unwrap();
            assert_eq!(release.kube_vip_image(), Some(good));
        }
        for bad in [
            "ghcr.io/kube-vip/kube-vip",
            "ghcr.io/kube-vip/kube-vip:",
            "ghcr.io/kube-vip/kube-vip:v1 0",
            "ghcr.io/kube-vip/kube-vip@sha256:abc",
            "registry.lan:5000/kube-vip",
        ] {
            let e = err_of(&with(bad));
            assert!(
                e.contains("kube_vip_image") && e.contains("test.toml"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn tarball_members_are_listed_and_checked() {
        let cat = Catalog::builtin().unwrap();
        for r in cat.releases() {
            for a in r.artifacts() {
                assert_eq!(
                    a.kind == ArtifactKind::TarGz,
                    !a.members.required.is_empty()
                );
            }
            let ctd = r
                .artifacts()
                .into_iter()
                .find(|a| a.name == "containerd")
                .unwrap();
            assert_eq!(
                ctd.members.required,
                ["bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"]
            );
        }
        let with = |members: &str| {
            let text = BUILTIN.replace(
                "members = [\"crictl\"]",
                &format!("members = [\"crictl\"]\n{members}"),
            );
            Catalog::parse(&text, "t.toml")
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        for (extra, want) in [
            (
                "optional_members = [\"../kubeadm\"]",
                "is not a normalized relative path",
            ),
            ("optional_members = [\"crictl\"]", "is listed twice"),
            (
                "optional_members = [\"x/crictl\"]",
                "two members are installed as \"crictl\"",
            ),
        ] {
            let e = with(extra);
            assert!(e.contains(want), "{extra}: {e}");
        }
        let no_members = BUILTIN.replace("members = [\"crictl\"]\n", "");
        let e = Catalog::parse(&no_members, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a tar.gz artifact needs `members`"), "{e}");
        let binary_members = BUILTIN.replacen(
            "checksum_kind = \"bare\"\n",
            "checksum_kind = \"bare\"\nmembers = [\"x\"]\n",
            1,
        );
        let e = Catalog::parse(&binary_members, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only a tar.gz artifact has members"), "{e}");
    }
    /// A user's catalog file: entries replace or extend the built-in ones; problems are
    /// reported at `file:line:col` of the value (positions checked by counting in the text).
    #[test]
    fn a_user_file_replaces_and_extends_the_builtin_catalog() {
        let builtin = Catalog::builtin().unwrap();
        let b136 = builtin.release("1.36").unwrap();
        // A new patch of a built-in minor, one component changed: the rest is inherited.
        let text = "# mine\n[[release]]\nkubernetes = \"1.36.5\"\ncontainerd = \"2.2.8\"\n\n\
                    [[release]]\nkubernetes = \"1.37.0\"\ncontainerd = \"2.3.4\"\nrunc = \"1.4.3\"\n\
                    cni_plugins = \"1.9.1\"\ncrictl = \"1.37.0\"\nflannel = \"0.28.4\"\n\
                    pause_image = \"registry.k8s.io/pause:3.10.2\"\n\n\
                    [[artifact]]\nname = \"runc\"\nurl = \"https://mirror.lan/runc/v{runc}/{file}\"\n";
        let cat = Catalog::with_user_text(text, "mine.toml").unwrap();
        assert_eq!(
            cat.supported_versions(),
            ["1.37.0", "1.36.5", "1.35.8", "1.34.11"]
        );
        let r = cat.release("1.36").unwrap();
        assert_eq!(r.versions().containerd, "2.2.8");
        assert_eq!(r.versions().runc, b136.versions().runc);
        assert_eq!(r.pause_image(), b136.pause_image());
        assert_eq!(r.versions().etcd_image, b136.versions().etcd_image);
        assert_eq!(
            r.artifact("containerd").unwrap().url,
            "https://github.com/containerd/containerd/releases/download/v2.2.8/containerd-static-2.2.8-linux-arm64.tar.gz"
        );
        assert_eq!(
            r.artifact("kubeadm").unwrap().url,
            "https://dl.k8s.io/release/v1.36.5/bin/linux/arm64/kubeadm"
        );
        // The runc artifact's url replaced, its checksum_url (a full URL) kept.
        let runc = r.artifact("runc").unwrap();
        assert_eq!(
            runc.url,
            format!("https://mirror.lan/runc/v{}/runc.arm64", r.versions().runc)
        );
        assert_eq!(
            runc.checksum_url,
            b136.artifact("runc").unwrap().checksum_url
        );
        let new = cat.release("1.37").unwrap();
        assert_eq!(new.versions().containerd, "2.3.4");
        assert_eq!(new.versions().etcd_image, None);

        // Problems, each at its place in the user's file.
        let at = |text: &str, needle: &str| {
            let off = text.find(needle).unwrap();
            let line = text[..off].matches('\n').count() + 1;
            let col = off - text[..off].rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("mine.toml:{line}:{col}")
        };
        let cases: &[(&str, &str, &str)] = &[
            (
                "[[release]]\nkubernetes = \"1.36.5\"\ncontainerd = \"2.2/8\"\n",
                "\"2.2/8\"",
                "is not a version",
            ),
            (
                "[[release]]\nkubernetes = \"1.37.0\"\ncontainerd = \"2.3.4\"\n",
                "\"1.37.0\"",
                "missing fields `runc`, `cni_plugins`, `crictl`, `flannel`, `pause_image`",
            ),
            (
                "[[artifact]]\nname = \"helm\"\nurl = \"https://x.lan/h\"\n",
                "\"helm\"",
                "not an artifact piforge installs",
            ),
            (
                "[[artifact]]\nname = \"runc\"\nurl = \"http://mirror.lan/{file}\"\n",
                "\"http://",
                "not an https:// URL",
            ),
            (
                "[[artifact]]\nname = \"crictl\"\nurl = \"https://m.lan/{crictll}/{file}\"\n",
                "\"https://m.lan/{crictll}",
                "unknown placeholder {crictll}",
            ),
            (
                "[[release]]\nkubernetes = \"1.36.5\"\nrunc = 1.4\n",
                "1.4\n",
                "invalid type",
            ),
            (
                "[[release]]\nkubernetes = \"1.36.5\"\ncontainerd_version = \"2\"\n",
                "containerd_version",
                "unknown field",
            ),
            (
                "[[release]]\nkubernetes = \"1.36.5\"\n[[release]]\nkubernetes = \"1.36.6\"\n",
                "\"1.36.6\"",
                "appears twice in this file",
            ),
            (
                "[[release]]\nkubernetes = \"1.36.5\"\netcd_image = \"registry.k8s.io/etcd-fast:3.6.10-0\"\n",
                "\"registry.k8s.io/etcd-fast",
                "kubeadm names its etcd image REPOSITORY/etcd:TAG",
            ),
            ("[[release]\nkubernetes = \"1.36.5\"\n", "\nkubernetes", ""),
        ];
        for (text, needle, want) in cases {
            let e = Catalog::with_user_text(text, "mine.toml")
                .unwrap_err()
                .to_string();
            let place = at(text, needle);
            let place = if needle.starts_with('\n') {
                // A TOML syntax error is reported where toml stopped reading.
                "mine.toml:1:".to_string()
            } else {
                place
            };
            assert!(e.starts_with(&place), "{text}: want {place}: {e}");
            assert!(e.contains(want), "{text}: want {want}: {e}");
        }
    }

    #[test]
    fn cluster_versions_replace_components_and_their_urls() {
        let cat = Catalog::builtin().unwrap();
        let base = cat.release("1.34").unwrap();
        let o = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(cat.release_with("1.34", &[]).unwrap(), base);
        let r = cat
            .release_with(
                "1.34",
                &o(&[
                    ("containerd", "2.1.5"),
                    ("runc", "v1.3.4"),
                    ("flannel", "0.27.4"),
                ]),
            )
            .unwrap();
        assert_eq!(r.versions().containerd, "2.1.5");
        assert_eq!(r.versions().runc, "1.3.4");
        assert_eq!(r.versions().cni_plugins, base.versions().cni_plugins);
        let ctd = r.artifact("containerd").unwrap();
        assert_eq!(ctd.file_name, "containerd-static-2.1.5-linux-arm64.tar.gz");
        assert_eq!(
            ctd.checksum_url.as_deref(),
            Some("https://github.com/containerd/containerd/releases/download/v2.1.5/containerd-static-2.1.5-linux-arm64.tar.gz.sha256sum")
        );
        assert_eq!(
            r.artifact("runc").unwrap().url,
            "https://github.com/opencontainers/runc/releases/download/v1.3.4/runc.arm64"
        );
        // Flannel's own image follows the flannel version; its CNI plugin image does not.
        assert!(r
            .versions()
            .flannel_images
            .contains(&"ghcr.io/flannel-io/flannel:v0.27.4".to_string()));
        assert!(r
            .versions()
            .flannel_images
            .contains(&"ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1".to_string()));
        // kubeadm and the rest are untouched.
        assert_eq!(r.artifact("kubeadm"), base.artifact("kubeadm"));
        for bad in [
            ("etcd", "3.6.0"),
            ("kubernetes", "1.35.0"),
            ("containerd", "2.1/5"),
        ] {
            let e = cat
                .release_with("1.34", &o(&[bad]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("kubernetes.versions") && e.contains(bad.0),
                "{e}"
            );
        }
    }

    /// Issue 10 item 5: every built-in release is at or past the security releases named
    /// there (containerd 2.0.7 / 2.1.5, runc 1.3.4, flannel 0.27.4, CNI plugins 1.9.0).
    #[test]
    fn builtin_releases_are_past_the_security_releases() {
        let num = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap()).collect() };
        for r in Catalog::builtin().unwrap().releases() {
            let v = r.versions();
            let c = num(&v.containerd);
            let floor = match (c[0], c[1]) {
                (2, 0) => vec![2, 0, 7],
                (2, 1) => vec![2, 1, 5],
                (2, _) => vec![2, 2, 0],
                _ => panic!("{}: containerd {} is not 2.x", r.kubernetes(), v.containerd),
            };
            assert!(
                c >= floor,
                "{}: containerd {}",
                r.kubernetes(),
                v.containerd
            );
            assert!(
                num(&v.runc) >= vec![1, 3, 4],
                "{}: runc {}",
                r.kubernetes(),
                v.runc
            );
            assert!(num(&v.flannel) >= vec![0, 27, 4], "{}", v.flannel);
            assert!(num(&v.cni_plugins) >= vec![1, 9, 0], "{}", v.cni_plugins);
            // crictl follows the Kubernetes minor.
            let k = num(r.kubernetes());
            assert_eq!(
                num(&v.crictl)[..2],
                k[..2],
                "{}: crictl {}",
                r.kubernetes(),
                v.crictl
            );
        }
    }
}
