//! OCI archives for the card: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) in a tar, which `ctr images import` reads. The bytes depend only on
//! the image and the build epoch (sorted entries, root owner, fixed modes and times), so a
//! rebuild writes the same card.
//!
//! The archive's `index.json` names the linux/arm64 manifest itself (not the upstream
//! multi-platform index, whose other platforms the card does not carry), annotated with
//! `io.containerd.image.name` (the full reference, which containerd's importer uses as the
//! image name: containerd `images/archive/importer.go`, `imageName`) and
//! `org.opencontainers.image.ref.name` (the tag).

use std::io::Write;

use super::{media, BlobStore, Error, ImageParts, Result};

/// One member of an archive: its path and size (0 for directories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub path: String,
    pub size: u64,
    pub dir: bool,
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The archive's `index.json`.
fn index_json(parts: &ImageParts) -> Vec<u8> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "io.containerd.image.name".into(),
        parts.image.to_string().into(),
    );
    if parts.image.is_tag() {
        annotations.insert(
            "org.opencontainers.image.ref.name".into(),
            parts.image.reference.clone().into(),
        );
    }
    let desc = serde_json::json!({
        "mediaType": parts.manifest.media_type,
        "digest": parts.manifest.digest,
        "size": parts.manifest.size,
        "platform": {"architecture": "arm64", "os": "linux"},
        "annotations": annotations,
    });
    let idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [desc],
    });
    // serde_json keeps insertion order only with preserve_order; the default map sorts keys,
    // which is just as deterministic.
    serde_json::to_vec(&idx).unwrap_or_default()
}

/// The archive's members in order, with their contents where they are small.
fn members(parts: &ImageParts) -> Vec<(ArchiveEntry, Option<Vec<u8>>)> {
    let index = index_json(parts);
    let mut out = vec![
        (
            ArchiveEntry {
                path: "oci-layout".into(),
                size: OCI_LAYOUT.len() as u64,
                dir: false,
            },
            Some(OCI_LAYOUT.to_vec()),
        ),
        (
            ArchiveEntry {
                path: "index.json".into(),
                size: index.len() as u64,
                dir: false,
            },
            Some(index),
        ),
        (
            ArchiveEntry {
                path: "blobs/".into(),
                size: 0,
                dir: true,
            },
            None,
        ),
        (
            ArchiveEntry {
                path: "blobs/sha256/".into(),
                size: 0,
                dir: true,
            },
            None,
        ),
    ];
    let mut blobs: Vec<(String, u64)> = parts
        .blobs()
        .iter()
        .map(|d| (d.digest.trim_start_matches("sha256:").to_string(), d.size))
        .collect();
    blobs.sort();
    blobs.dedup();
    for (hex, size) in blobs {
        out.push((
            ArchiveEntry {
                path: format!("blobs/sha256/{hex}"),
                size,
                dir: false,
            },
            None,
        ));
    }
    out
}

/// The members of the archive [`write_archive`] writes.
pub fn archive_entries(parts: &ImageParts) -> Vec<ArchiveEntry> {
    members(parts).into_iter().map(|(e, _)| e).collect()
}

/// The exact size of the archive [`write_archive`] writes: a 512-byte header per member,
/// contents padded to 512 bytes, and the two zero blocks that end a tar.
pub fn archive_size(parts: &ImageParts) -> u64 {
    archive_entries(parts)
        .iter()
        .map(|e| 512 + e.size.div_ceil(512) * 512)
        .sum::<u64>()
        + 1024
}

/// Writes the archive of `parts` to `out`, every blob read from `store` and verified against
/// its digest on the way; `mtime` is the build epoch.
pub fn write_archive(
    parts: &ImageParts,
    store: &BlobStore,
    out: impl Write,
    mtime: i64,
) -> Result<()> {
    let name = parts.image.to_string();
    let io = |e: std::io::Error| Error::Io {
        context: "cannot write the archive of",
        path: name.clone().into(),
        source: e,
    };
    let mut b = tar::Builder::new(out);
    for (e, data) in members(parts) {
        let mut h = tar::Header::new_ustar();
        h.set_path(&e.path).map_err(io)?;
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime.max(0) as u64);
        if e.dir {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, std::io::empty()).map_err(io)?;
            continue;
        }
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(e.size);
        h.set_cksum();
        match data {
            Some(bytes) => b.append(&h, &bytes[..]).map_err(io)?,
            None => {
                let digest = format!("sha256:{}", e.path.trim_start_matches("blobs/sha256/"));
                let r = store.open_verified(&name, &digest)?;
                b.append(&h, r).map_err(io)?;
            }
        }
    }
    b.into_inner().map_err(io)?.flush().map_err(io)?;
    Ok(())
}
