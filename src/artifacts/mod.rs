//! The arm64 release artifacts a node image needs (kubeadm, kubelet, kubectl, containerd,
//! runc, CNI plugins, crictl, the flannel manifest): where they come from, which digests
//! they must have, and a verified local copy of each.
//!
//! - [`Catalog`] (the embedded `artifacts.toml`) maps a Kubernetes version to a [`Release`]:
//!   the matching component versions and the upstream URL of every artifact.
//! - The lock file ([`Lock`], `piforge.lock` beside the spec) pins the SHA-256 of every
//!   artifact once fetched, like `Cargo.lock` or `go.sum`: on first fetch the digest comes
//!   from the upstream checksum file; afterwards only the lock is trusted, and only
//!   `update` may change an entry.
//! - [`fetch`] downloads into a content-addressed cache (`<cache>/artifacts/sha256/<hex>`),
//!   resuming partial downloads with HTTP `Range`; [`from_dir`] takes the files from a
//!   directory instead (offline builds).
//! - [`tar_entries`] reads the tarballs, for laying their files into the root filesystem.
//!
//! The library never prints: warnings come back as data ([`FetchedArtifact::warning`]).

// Errors carry the URLs, paths and both digests their messages name; they are rare and
// end the operation, so their size is no cost worth boxing them for.
#![allow(clippy::result_large_err)]

mod catalog;
mod checksum;
mod error;
mod fetch;
pub(crate) use fetch::{retrying, Attempt};
mod image_sources;
mod images;
mod lock;
mod offline;
mod sources;
mod unpack;

pub use catalog::{
    ArtifactKind, ArtifactName, ArtifactSpec, Catalog, ChecksumKind, ComponentVersions, Release,
    OVERRIDABLE,
};
pub use checksum::parse_checksum;
pub use error::{DigestSource, Error, Result, OFFLINE};
pub use fetch::{
    cached_object, fetch, fetch_artifacts, mirror_url, FetchOptions, FetchedArtifact, Pin,
    ProgressFn,
};
pub use image_sources::{FetchedImage, ImageFetch, ImageSet};
pub use images::{manifest_images, ImageNeeds, ImageSpec, ImageUse, KUBEADM_IMAGE_REPOSITORY};
pub use lock::{DebEntry, ImageLockEntry, Lock, LockEntry, LOCK_HEADER};
pub use offline::{check_dir_artifacts, from_dir, from_dir_artifacts, store_in_cache};
pub use sources::{fetch_image, ArtifactSource};
pub use unpack::{for_each_tar_entry, tar_entries, with_tar_member, TarEntry, TarEntryKind};

use std::path::Path;

pub(crate) use crate::digest::is_sha256_hex;

/// Size of the I/O buffer used for downloading (see STYLE.md).
pub(crate) const BUF_SIZE: usize = 256 * 1024;

/// SHA-256 (lowercase hex) and size of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    crate::digest::sha256_reader(file).map_err(|e| Error::io("cannot read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (hex, size) = sha256_file(&p).unwrap();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(size, 3);
        assert!(is_sha256_hex(&hex));
        assert!(!is_sha256_hex(&hex.to_uppercase()));
        assert!(!is_sha256_hex("abc"));
    }
}
