//! A catalog file as written: its tables with where each value sits (`file:line:col`), and
//! a user's file laid over the built-in one (`--catalog FILE`).
//!
//! Every key is read optional here; which keys a complete entry needs is checked after the
//! overlay, so a user's entry may set only what it changes.

use serde::Deserialize;
use toml::Spanned;

use super::super::Error;
use super::{ArtifactKind, ArtifactName, ChecksumKind, ComponentVersions};

/// A value and where it was written (`file:line:col`).
#[derive(Debug, Clone)]
pub(super) struct At<T> {
    pub(super) v: T,
    at: String,
}

/// Something with a place in a file, to report a problem at.
pub(super) trait Place {
    fn origin(&self) -> String;

    fn err(&self, msg: String) -> Error {
        Error::Catalog {
            at: self.origin(),
            msg,
        }
    }
}

impl<T> Place for At<T> {
    fn origin(&self) -> String {
        self.at.clone()
    }
}

impl<T> At<T> {
    /// This value's place, for a problem of the entry it belongs to.
    pub(super) fn at_ref(&self) -> &dyn Place {
        self
    }
}

/// Where a problem of a whole file is reported when it names no entry.
impl Place for String {
    fn origin(&self) -> String {
        self.clone()
    }
}

/// An `[[artifact]]` table, every key but `name` optional until checked.
#[derive(Debug, Clone)]
pub(super) struct ArtifactEntry {
    pub(super) name: At<String>,
    pub(super) kind: Option<At<ArtifactKind>>,
    pub(super) file: Option<At<String>>,
    pub(super) url: Option<At<String>>,
    pub(super) checksum_url: Option<At<String>>,
    pub(super) checksum_kind: Option<At<ChecksumKind>>,
    pub(super) members: Option<At<Vec<String>>>,
    pub(super) optional_members: Option<At<Vec<String>>>,
    pub(super) ignored_members: Option<At<Vec<String>>>,
}

/// A `[[release]]` table.
#[derive(Debug, Clone)]
pub(super) struct ReleaseEntry {
    pub(super) kubernetes: At<String>,
    pub(super) containerd: Option<At<String>>,
    pub(super) runc: Option<At<String>>,
    pub(super) cni_plugins: Option<At<String>>,
    pub(super) crictl: Option<At<String>>,
    pub(super) flannel: Option<At<String>>,
    pub(super) pause_image: Option<At<String>>,
    pub(super) kube_vip_image: Option<At<String>>,
    pub(super) etcd_image: Option<At<String>>,
    pub(super) coredns_image: Option<At<String>>,
    pub(super) flannel_images: Option<At<Vec<String>>>,
}

impl ReleaseEntry {
    /// The required keys it lacks.
    pub(super) fn missing(&self) -> Vec<&'static str> {
        [
            ("containerd", self.containerd.is_none()),
            ("runc", self.runc.is_none()),
            ("cni_plugins", self.cni_plugins.is_none()),
            ("crictl", self.crictl.is_none()),
            ("flannel", self.flannel.is_none()),
            ("pause_image", self.pause_image.is_none()),
        ]
        .into_iter()
        .filter(|(_, m)| *m)
        .map(|(k, _)| k)
        .collect()
    }

    /// The component versions (each a URL placeholder), once [`Self::missing`] is empty.
    pub(super) fn version_fields(&self) -> Vec<(&'static str, &At<String>)> {
        let mut out = vec![("kubernetes", &self.kubernetes)];
        for (k, v) in [
            ("containerd", &self.containerd),
            ("runc", &self.runc),
            ("cni_plugins", &self.cni_plugins),
            ("crictl", &self.crictl),
            ("flannel", &self.flannel),
        ] {
            if let Some(v) = v {
                out.push((k, v));
            }
        }
        out
    }

    /// Every image reference with its key and place.
    pub(super) fn images(&self) -> Vec<(&'static str, &dyn Place, &str)> {
        let mut out = Vec::new();
        for (k, v) in [
            ("etcd_image", &self.etcd_image),
            ("coredns_image", &self.coredns_image),
            ("pause_image", &self.pause_image),
        ] {
            if let Some(v) = v {
                out.push((k, v as &dyn Place, v.v.as_str()));
            }
        }
        if let Some(f) = &self.flannel_images {
            // One place for the list: toml gives no span per array item through serde.
            out.extend(
                f.v.iter()
                    .map(|i| ("flannel_images", f as &dyn Place, i.as_str())),
            );
        }
        out
    }

    /// The values, once [`Self::missing`] is empty (a missing one is then empty text, which
    /// the checks refuse).
    pub(super) fn versions(&self) -> ComponentVersions {
        let s = |v: &Option<At<String>>| v.as_ref().map_or(String::new(), |v| v.v.clone());
        ComponentVersions {
            kubernetes: self.kubernetes.v.clone(),
            containerd: s(&self.containerd),
            runc: s(&self.runc),
            cni_plugins: s(&self.cni_plugins),
            crictl: s(&self.crictl),
            flannel: s(&self.flannel),
            pause_image: s(&self.pause_image),
            kube_vip_image: self.kube_vip_image.as_ref().map(|v| v.v.clone()),
            etcd_image: self.etcd_image.as_ref().map(|v| v.v.clone()),
            coredns_image: self.coredns_image.as_ref().map(|v| v.v.clone()),
            flannel_images: self
                .flannel_images
                .as_ref()
                .map_or(Vec::new(), |v| v.v.clone()),
        }
    }

    /// `Major.minor` of `kubernetes`, when it has that shape.
    fn minor(&self) -> Option<(u64, u64)> {
        super::parse_kube_version(&self.kubernetes.v).map(|(a, b, _)| (a, b))
    }
}

/// The place of the first release, for a problem of the whole file.
pub(super) fn first_origin(releases: &[ReleaseEntry]) -> Option<String> {
    releases.first().map(|r| r.kubernetes.origin())
}

/// Reads at most `max` bytes of UTF-8 text from `path`; a longer file is an error.
pub(super) fn read_bounded(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "it is larger than {} KiB, which no catalog needs",
            max >> 10
        )));
    }
    Ok(text)
}

/// A parsed catalog file.
pub(super) struct Entries {
    pub(super) artifacts: Vec<ArtifactEntry>,
    pub(super) releases: Vec<ReleaseEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(rename = "artifact", default)]
    artifacts: Vec<Spanned<RawArtifact>>,
    #[serde(rename = "release", default)]
    releases: Vec<Spanned<RawRelease>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    name: Spanned<String>,
    kind: Option<Spanned<ArtifactKind>>,
    file: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    checksum_url: Option<Spanned<String>>,
    checksum_kind: Option<Spanned<ChecksumKind>>,
    members: Option<Spanned<Vec<String>>>,
    optional_members: Option<Spanned<Vec<String>>>,
    ignored_members: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    kubernetes: Spanned<String>,
    containerd: Option<Spanned<String>>,
    runc: Option<Spanned<String>>,
    cni_plugins: Option<Spanned<String>>,
    crictl: Option<Spanned<String>>,
    flannel: Option<Spanned<String>>,
    pause_image: Option<Spanned<String>>,
    kube_vip_image: Option<Spanned<String>>,
    etcd_image: Option<Spanned<String>>,
    coredns_image: Option<Spanned<String>>,
    flannel_images: Option<Spanned<Vec<String>>>,
}

/// `origin:line:col` of byte `offset` in `text` (1-based, columns in characters).
fn position(origin: &str, text: &str, offset: usize) -> String {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{origin}:{line}:{col}")
}

/// Parses a catalog file, keeping where each value is. A TOML error (syntax, an unknown key,
/// a wrong type) is reported where toml found it.
pub(super) fn read(text: &str, origin: &str) -> Result<Entries, Error> {
    let raw: RawFile = toml::from_str(text).map_err(|e| Error::Catalog {
        at: match e.span() {
            Some(s) => position(origin, text, s.start),
            None => origin.to_string(),
        },
        msg: e.message().trim_end().to_string(),
    })?;
    let at = |s: std::ops::Range<usize>| position(origin, text, s.start);
    fn conv<T>(s: Spanned<T>, at: &dyn Fn(std::ops::Range<usize>) -> String) -> At<T> {
        let place = at(s.span());
        At {
            v: s.into_inner(),
            at: place,
        }
    }
    let artifacts = raw
        .artifacts
        .into_iter()
        .map(|a| {
            let a = a.into_inner();
            ArtifactEntry {
                name: conv(a.name, &at),
                kind: a.kind.map(|v| conv(v, &at)),
                file: a.file.map(|v| conv(v, &at)),
                url: a.url.map(|v| conv(v, &at)),
                checksum_url: a.checksum_url.map(|v| conv(v, &at)),
                checksum_kind: a.checksum_kind.map(|v| conv(v, &at)),
                members: a.members.map(|v| conv(v, &at)),
                optional_members: a.optional_members.map(|v| conv(v, &at)),
                ignored_members: a.ignored_members.map(|v| conv(v, &at)),
            }
        })
        .collect();
    let releases = raw
        .releases
        .into_iter()
        .map(|r| {
            let r = r.into_inner();
            ReleaseEntry {
                kubernetes: conv(r.kubernetes, &at),
                containerd: r.containerd.map(|v| conv(v, &at)),
                runc: r.runc.map(|v| conv(v, &at)),
                cni_plugins: r.cni_plugins.map(|v| conv(v, &at)),
                crictl: r.crictl.map(|v| conv(v, &at)),
                flannel: r.flannel.map(|v| conv(v, &at)),
                pause_image: r.pause_image.map(|v| conv(v, &at)),
                kube_vip_image: r.kube_vip_image.map(|v| conv(v, &at)),
                etcd_image: r.etcd_image.map(|v| conv(v, &at)),
                coredns_image: r.coredns_image.map(|v| conv(v, &at)),
                flannel_images: r.flannel_images.map(|v| conv(v, &at)),
            }
        })
        .collect();
    Ok(Entries {
        artifacts,
        releases,
    })
}

/// `user` laid over `builtin`: see [`super::Catalog::with_user_file`].
pub(super) fn overlay(
    builtin: Entries,
    user: Entries,
) -> Result<(Vec<ArtifactEntry>, Vec<ReleaseEntry>), Error> {
    let mut artifacts = builtin.artifacts;
    let mut seen: Vec<String> = Vec::new();
    for u in user.artifacts {
        if seen.contains(&u.name.v) {
            return Err(u.name.err(format!(
                "artifact {:?}: appears twice in this file",
                u.name.v
            )));
        }
        seen.push(u.name.v.clone());
        let Some(base) = artifacts.iter_mut().find(|a| a.name.v == u.name.v) else {
            let known: Vec<&str> = ArtifactName::ALL.iter().map(|n| n.as_str()).collect();
            return Err(u.name.err(format!(
                "artifact {:?}: not an artifact piforge installs (a catalog file may change \
                 {}; a new one would never reach a card)",
                u.name.v,
                known.join(", ")
            )));
        };
        fn take<T>(to: &mut Option<At<T>>, from: Option<At<T>>) {
            if from.is_some() {
                *to = from;
            }
        }
        base.name = u.name;
        take(&mut base.kind, u.kind);
        take(&mut base.file, u.file);
        take(&mut base.url, u.url);
        take(&mut base.checksum_url, u.checksum_url);
        take(&mut base.checksum_kind, u.checksum_kind);
        take(&mut base.members, u.members);
        take(&mut base.optional_members, u.optional_members);
        take(&mut base.ignored_members, u.ignored_members);
    }
    let mut releases = builtin.releases;
    let mut user_minors: Vec<(u64, u64)> = Vec::new();
    for u in user.releases {
        // A malformed version is reported by the checks that follow, at its place.
        let Some(minor) = u.minor() else {
            releases.push(u);
            continue;
        };
        if user_minors.contains(&minor) {
            return Err(u.kubernetes.err(format!(
                "release {:?}: minor version {}.{} appears twice in this file",
                u.kubernetes.v, minor.0, minor.1
            )));
        }
        user_minors.push(minor);
        match releases.iter().position(|r| r.minor() == Some(minor)) {
            Some(i) => {
                let mut base = releases.remove(i);
                // Flannel's images of the inherited list follow a new flannel version.
                if let (Some(new), Some(old), None) = (&u.flannel, &base.flannel, &u.flannel_images)
                {
                    if let Some(list) = &mut base.flannel_images {
                        list.v = super::follow_flannel(&list.v, &old.v, &new.v);
                    }
                }
                let pick = |from: Option<At<String>>, base: Option<At<String>>| from.or(base);
                releases.push(ReleaseEntry {
                    kubernetes: u.kubernetes,
                    containerd: pick(u.containerd, base.containerd),
                    runc: pick(u.runc, base.runc),
                    cni_plugins: pick(u.cni_plugins, base.cni_plugins),
                    crictl: pick(u.crictl, base.crictl),
                    flannel: pick(u.flannel, base.flannel),
                    pause_image: pick(u.pause_image, base.pause_image),
                    kube_vip_image: pick(u.kube_vip_image, base.kube_vip_image),
                    etcd_image: pick(u.etcd_image, base.etcd_image),
                    coredns_image: pick(u.coredns_image, base.coredns_image),
                    flannel_images: u.flannel_images.or(base.flannel_images),
                });
            }
            None => releases.push(u),
        }
    }
    Ok((artifacts, releases))
}
