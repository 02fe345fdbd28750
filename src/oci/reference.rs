//! Image references: `registry/repository:tag` (or `@sha256:...`), always with the registry
//! host, as the catalog and kubeadm write them.

use super::{Error, Result};

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// `registry.k8s.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `kube-apiserver`, `coredns/coredns`, `flannel-io/flannel`.
    pub repository: String,
    /// The tag (`v1.34.11`) or the digest (`sha256:...`) asked for.
    pub reference: String,
}

impl ImageRef {
    /// Parses `host/path:tag` or `host/path@sha256:hex`. The first component must be a
    /// registry host (it has a `.` or a `:`, or is `localhost`): a short Docker Hub name
    /// would leave it to the runtime which registry is meant.
    pub fn parse(s: &str) -> Result<ImageRef> {
        let bad = || Error::BadReference(s.to_string());
        let (name, reference) = match s.split_once('@') {
            Some((n, d)) => {
                super::digest_hex(d).ok_or_else(bad)?;
                (n, d.to_string())
            }
            None => {
                let (n, t) = s.rsplit_once(':').ok_or_else(bad)?;
                if n.rsplit('/').next().is_some_and(|last| last.contains(':')) || t.contains('/') {
                    return Err(bad());
                }
                let tag_ok = !t.is_empty()
                    && t.len() <= 128
                    && t.as_bytes()[0] != b'.'
                    && t.as_bytes()[0] != b'-'
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !tag_ok {
                    return Err(bad());
                }
                (n, t.to_string())
            }
        };
        let (registry, repository) = name.split_once('/').ok_or_else(bad)?;
        let host_ok = !registry.is_empty()
            && (registry.contains(['.', ':']) || registry == "localhost")
            && registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.as_bytes()[0].is_ascii_alphanumeric()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !host_ok || !repo_ok {
            return Err(bad());
        }
        Ok(ImageRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            reference,
        })
    }

    /// True when the reference is a tag (not a digest).
    pub fn is_tag(&self) -> bool {
        !self.reference.starts_with("sha256:")
    }

    /// `https://<registry>/v2/<repository>/manifests/<reference>`.
    pub fn manifest_url(&self, reference: &str) -> String {
        format!(
            "https://{}/v2/{}/manifests/{reference}",
            self.registry, self.repository
        )
    }

    /// `https://<registry>/v2/<repository>/blobs/<digest>`.
    pub fn blob_url(&self, digest: &str) -> String {
        format!(
            "https://{}/v2/{}/blobs/{digest}",
            self.registry, self.repository
        )
    }

    /// The reference's last part as a file name: the tag, or `sha256-<hex>` for a digest.
    fn reference_part(&self) -> String {
        self.reference.replace(':', "-")
    }

    /// Where `--artifacts DIR` holds this image, relative to `DIR/images/`: an OCI image
    /// layout directory `<registry>/<repository>_<tag>/`, or the same name with `.tar` (an
    /// OCI archive: that directory's tree in a tar). E.g. `registry.k8s.io/coredns/coredns_v1.12.1`.
    pub fn layout_name(&self) -> String {
        format!(
            "{}/{}_{}",
            self.registry.replace(':', "_"),
            self.repository,
            self.reference_part()
        )
    }

    /// The archive's file name in the card: every `/` of [`Self::layout_name`] as `_`, `.tar`.
    pub fn archive_file_name(&self) -> String {
        format!("{}.tar", self.layout_name().replace('/', "_"))
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.is_tag() { ':' } else { '@' };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_name_their_files() {
        let r = ImageRef::parse("registry.k8s.io/coredns/coredns:v1.12.1").unwrap();
        assert_eq!(r.registry, "registry.k8s.io");
        assert_eq!(r.repository, "coredns/coredns");
        assert_eq!(r.reference, "v1.12.1");
        assert_eq!(r.to_string(), "registry.k8s.io/coredns/coredns:v1.12.1");
        assert_eq!(r.layout_name(), "registry.k8s.io/coredns/coredns_v1.12.1");
        assert_eq!(
            r.archive_file_name(),
            "registry.k8s.io_coredns_coredns_v1.12.1.tar"
        );
        assert_eq!(
            r.manifest_url("v1.12.1"),
            "https://registry.k8s.io/v2/coredns/coredns/manifests/v1.12.1"
        );
        let local = ImageRef::parse("127.0.0.1:5000/pause:3.10").unwrap();
        assert_eq!(local.registry, "127.0.0.1:5000");
        assert_eq!(local.layout_name(), "127.0.0.1_5000/pause_3.10");
        let d = format!("ghcr.io/kube-vip/kube-vip@sha256:{}", "ab".repeat(32));
        let r = ImageRef::parse(&d).unwrap();
        assert!(!r.is_tag());
        assert_eq!(r.to_string(), d);
        for bad in [
            "pause:3.10",
            "docker.io/library/busybox",
            "registry.k8s.io/pause:",
            "registry.k8s.io/Pause:3.10",
            "registry.k8s.io/pause:3.10/x",
            "registry.k8s.io/../pause:1",
            "registry.k8s.io//pause:1",
            "registry.k8s.io/pause@sha256:abc",
            "registry.k8s.io/pause:-x",
            "registry.k8s.io/pause:a b",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
