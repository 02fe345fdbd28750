//! The JSON documents of an image: index (manifest list), manifest, and the two fields of the
//! config piforge checks (architecture, os). Only what piforge uses is read; unknown fields
//! are ignored, as the specs require of readers.

use serde::{Deserialize, Serialize};

use super::{digest_hex, media, Error, ImageRef, Result};

/// The most layers an image may have (real images have a few dozen at most).
const MAX_LAYERS: usize = 512;
/// The most entries an index may have.
const MAX_INDEX_ENTRIES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigPlatform {
    architecture: String,
    os: String,
}

/// One linux/arm64 image, resolved: every blob it needs is named here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageParts {
    pub image: ImageRef,
    /// What the reference resolved to: the index (manifest list) digest, or the manifest's own
    /// digest when the tag names a single-platform image.
    pub index_digest: String,
    /// The linux/arm64 manifest.
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl ImageParts {
    /// The manifest, config and layer descriptors: what an archive of the image holds.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut v = vec![&self.manifest, &self.config];
        v.extend(self.layers.iter());
        v
    }

    /// The bytes of every blob the image's archive holds.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs().iter().map(|d| d.size).sum()
    }
}

fn bad(image: &ImageRef, what: &str, reason: impl Into<String>) -> Error {
    Error::BadManifest {
        image: image.to_string(),
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn check_descriptor(image: &ImageRef, what: &str, d: &Descriptor) -> Result<()> {
    if digest_hex(&d.digest).is_none() {
        return Err(bad(
            image,
            what,
            format!("digest {:?} is not sha256:<64 lowercase hex>", d.digest),
        ));
    }
    if d.media_type.is_empty() || d.media_type.len() > 255 {
        return Err(bad(image, what, "a descriptor has no media type"));
    }
    Ok(())
}

/// What a manifest endpoint or a layout's top descriptor returned.
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

/// Parses `bytes` as an index or a manifest, by `media_type` (the HTTP Content-Type or the
/// descriptor's) or, when that is generic, by the document's own `mediaType` and shape.
pub fn parse_document(
    image: &ImageRef,
    what: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<Document> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(image, what, e.to_string()))?;
    let own = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    let is_index = media::is_index(media_type)
        || media::is_index(own)
        || (!media::is_manifest(media_type)
            && !media::is_manifest(own)
            && v.get("manifests").is_some());
    if is_index {
        let idx: Index = serde_json::from_value(v).map_err(|e| bad(image, what, e.to_string()))?;
        if idx.schema_version != 2 {
            return Err(bad(image, what, "schemaVersion is not 2"));
        }
        if idx.manifests.len() > MAX_INDEX_ENTRIES {
            return Err(bad(image, what, "too many manifests"));
        }
        for d in &idx.manifests {
            check_descriptor(image, what, d)?;
        }
        Ok(Document::Index(idx))
    } else {
        let m: Manifest = serde_json::from_value(v).map_err(|e| bad(image, what, e.to_string()))?;
        if m.schema_version != 2 {
            return Err(bad(image, what, "schemaVersion is not 2"));
        }
        if m.layers.len() > MAX_LAYERS {
            return Err(bad(image, what, "too many layers"));
        }
        check_descriptor(image, what, &m.config)?;
        for d in &m.layers {
            check_descriptor(image, what, d)?;
        }
        Ok(Document::Manifest(m))
    }
}

/// The linux/arm64 entry of an index (variant v8 or none preferred over others).
pub fn pick_arm64(idx: &Index) -> Option<&Descriptor> {
    let arm64 = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "arm64")
    };
    idx.manifests
        .iter()
        .filter(arm64)
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| matches!(p.variant.as_deref(), None | Some("v8")))
        })
        .or_else(|| idx.manifests.iter().find(arm64))
}

/// Checks that an image config says linux/arm64 (read only for those two fields).
pub fn check_config(image: &ImageRef, bytes: &[u8]) -> Result<()> {
    let c: ConfigPlatform =
        serde_json::from_slice(bytes).map_err(|e| bad(image, "the config", e.to_string()))?;
    if c.os != "linux" || c.architecture != "arm64" {
        return Err(Error::NoArm64 {
            image: image.to_string(),
        });
    }
    Ok(())
}

/// `sha256:` + the SHA-256 of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
