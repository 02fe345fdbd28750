//! Container images for offline first boot: the subset of the OCI distribution API piforge
//! needs (anonymous pulls from registry.k8s.io and ghcr.io, with the Bearer token flow), a
//! content-addressed blob store (`<cache>/oci/blobs/sha256/<hex>`, shared by every cluster),
//! OCI image layouts and archives (read from `--artifacts DIR`, written into the card).
//!
//! Why not the `oci-client` crate: it is async over `reqwest` and `tokio`, which would add an
//! async runtime and a second HTTP and TLS stack beside the `ureq` + rustls piforge already
//! uses for every other download; the subset here (resolve a tag, pick linux/arm64, stream
//! blobs verified by digest) is a few hundred lines over `ureq`.
//!
//! Memory is bounded: manifests and indexes are read up to [`MAX_MANIFEST`] bytes; blobs are
//! streamed through a 256 KiB buffer, hashed on the way, and renamed into the store only when
//! their digest matches.

// Errors carry references, URLs and both digests; they are rare and end the operation.
#![allow(clippy::result_large_err)]

mod archive;
mod client;
mod error;
mod layout;
mod manifest;
mod reference;
mod store;

pub use archive::{archive_entries, archive_size, write_archive, ArchiveEntry};
pub use client::{cached_parts, Pulled, Registry, RegistryOptions};
pub use error::{Changed, Error, Result};
pub use layout::import_layout;
pub use manifest::{Descriptor, ImageParts, Index, Manifest, Platform};
pub use reference::ImageRef;
pub use store::BlobStore;

/// The largest manifest or index piforge reads (registries cap theirs at 4 MiB too).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// The I/O buffer for blobs.
pub(crate) const BUF_SIZE: usize = 256 * 1024;

/// Media types of the manifests and indexes piforge reads (OCI and Docker schema 2).
pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

    pub fn is_index(m: &str) -> bool {
        m == OCI_INDEX || m == DOCKER_LIST
    }

    pub fn is_manifest(m: &str) -> bool {
        m == OCI_MANIFEST || m == DOCKER_MANIFEST
    }
}

/// `sha256:<64 lowercase hex>` → the hex, or `None`.
pub fn digest_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| crate::digest::is_sha256_hex(h))
}
