//! `--artifacts DIR` for images: an OCI image layout directory
//! (`DIR/images/<registry>/<repository>_<tag>/` with `oci-layout`, `index.json` and
//! `blobs/sha256/`), or the same tree in a tar (`..._<tag>.tar`, an OCI archive as
//! `skopeo copy ... oci-archive:` or `ctr images export` write). Every blob piforge needs is
//! copied into the blob store and verified against its digest.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::manifest::{check_config, parse_document, pick_arm64, Document};
use super::{
    digest_hex, media, BlobStore, Descriptor, Error, ImageParts, ImageRef, Result, MAX_MANIFEST,
};

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadLayout {
        what: "image layout",
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

enum Source {
    Dir(PathBuf),
    /// Every blob of the tar is in the store already.
    Tar,
}

/// Reads `path` (a layout directory or an OCI archive) holding `image`: returns the image's
/// linux/arm64 parts, every blob of them in `store`, verified.
pub fn import_layout(path: &Path, image: &ImageRef, store: &BlobStore) -> Result<ImageParts> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("cannot read", path, e))?;
    let (index, source) = if meta.is_dir() {
        let layout = read_small_file(&path.join("oci-layout"))?;
        check_layout_file(path, &layout)?;
        (
            read_small_file(&path.join("index.json"))?,
            Source::Dir(path.to_path_buf()),
        )
    } else if meta.is_file() {
        (read_tar(path, image, store)?, Source::Tar)
    } else {
        return Err(bad(
            path,
            "it is neither a directory nor a regular file (a link is not followed)",
        ));
    };
    let name = image.to_string();
    let ensure = |d: &Descriptor| -> Result<()> {
        let hex = digest_hex(&d.digest)
            .ok_or_else(|| bad(path, format!("digest {:?} is not sha256", d.digest)))?;
        if store.has(&d.digest, d.size) {
            return Ok(());
        }
        match &source {
            Source::Dir(dir) => {
                let f = dir.join("blobs").join("sha256").join(hex);
                let m =
                    std::fs::symlink_metadata(&f).map_err(|e| Error::io("cannot read", &f, e))?;
                if !m.is_file() {
                    return Err(bad(
                        path,
                        format!("blobs/sha256/{hex} is not a regular file"),
                    ));
                }
                let file = File::open(&f).map_err(|e| Error::io("cannot open", &f, e))?;
                store.put_reader(&name, &d.digest, d.size, file).map(|_| ())
            }
            Source::Tar => Err(bad(
                path,
                format!("it has no blobs/sha256/{hex} of {} bytes", d.size),
            )),
        }
    };
    let idx = match parse_document(image, "index.json", media::OCI_INDEX, &index)? {
        Document::Index(i) => i,
        Document::Manifest(_) => return Err(bad(path, "index.json is not an index")),
    };
    let top = choose(&idx.manifests, image)
        .ok_or_else(|| bad(path, format!("index.json names no image {name} (annotation io.containerd.image.name or org.opencontainers.image.ref.name), and holds more than one")))?
        .clone();
    ensure(&top)?;
    let top_bytes = store.read_small(&name, &top.digest, MAX_MANIFEST)?;
    let (manifest_desc, manifest) =
        match parse_document(image, "the image", &top.media_type, &top_bytes)? {
            Document::Manifest(m) => (top.clone(), m),
            Document::Index(i) => {
                let d = pick_arm64(&i).cloned().ok_or_else(|| Error::NoArm64 {
                    image: name.clone(),
                })?;
                ensure(&d)?;
                let b = store.read_small(&name, &d.digest, MAX_MANIFEST)?;
                match parse_document(image, "the arm64 manifest", &d.media_type, &b)? {
                    Document::Manifest(m) => (d, m),
                    Document::Index(_) => {
                        return Err(bad(path, "the arm64 manifest is another index"))
                    }
                }
            }
        };
    ensure(&manifest.config)?;
    for l in &manifest.layers {
        ensure(l)?;
    }
    let config = store.read_small(&name, &manifest.config.digest, MAX_MANIFEST)?;
    check_config(image, &config)?;
    Ok(ImageParts {
        image: image.clone(),
        index_digest: top.digest.clone(),
        manifest: Descriptor {
            platform: None,
            annotations: None,
            ..manifest_desc
        },
        config: manifest.config,
        layers: manifest.layers,
    })
}

/// The index entry for `image`: by full name, by tag, or the only one.
fn choose<'a>(entries: &'a [Descriptor], image: &ImageRef) -> Option<&'a Descriptor> {
    let full = image.to_string();
    let by = |key: &str, want: &str| {
        entries.iter().find(|d| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .is_some_and(|v| v == want)
        })
    };
    by("io.containerd.image.name", &full)
        .or_else(|| by("org.opencontainers.image.ref.name", &image.reference))
        .or_else(|| by("org.opencontainers.image.ref.name", &full))
        .or_else(|| (entries.len() == 1).then(|| &entries[0]))
}

fn read_small_file(p: &Path) -> Result<Vec<u8>> {
    let m = std::fs::symlink_metadata(p).map_err(|e| Error::io("cannot read", p, e))?;
    if !m.is_file() {
        return Err(bad(p, "not a regular file"));
    }
    let mut v = Vec::new();
    File::open(p)
        .and_then(|f| f.take(MAX_MANIFEST + 1).read_to_end(&mut v))
        .map_err(|e| Error::io("cannot read", p, e))?;
    if v.len() as u64 > MAX_MANIFEST {
        return Err(bad(p, "larger than 4 MiB"));
    }
    Ok(v)
}

fn check_layout_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(path, format!("oci-layout: {e}")))?;
    if v.get("imageLayoutVersion")
        .and_then(|x| x.as_str())
        .is_none()
    {
        return Err(bad(path, "oci-layout has no imageLayoutVersion"));
    }
    Ok(())
}

/// Streams an OCI archive: every `blobs/sha256/<hex>` member into the store (verified against
/// its name), `index.json` (and `oci-layout`) into memory. Returns `index.json`.
fn read_tar(path: &Path, image: &ImageRef, store: &BlobStore) -> Result<Vec<u8>> {
    let name = image.to_string();
    let f = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut ar = tar::Archive::new(f);
    let mut index = None;
    let mut layout = None;
    let entries = ar
        .entries()
        .map_err(|e| Error::io("cannot read", path, e))?;
    for entry in entries {
        let mut e = entry.map_err(|e| Error::io("cannot read", path, e))?;
        let p = e
            .path()
            .map_err(|e| Error::io("cannot read", path, e))?
            .to_string_lossy()
            .into_owned();
        let p = p.trim_start_matches("./").to_string();
        let kind = e.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(path, format!("member {p:?} is not a regular file")));
        }
        let size = e.size();
        if p == "index.json" || p == "oci-layout" {
            if size > MAX_MANIFEST {
                return Err(bad(path, format!("{p} is larger than 4 MiB")));
            }
            let mut v = Vec::new();
            e.read_to_end(&mut v)
                .map_err(|e| Error::io("cannot read", path, e))?;
            if p == "index.json" {
                index = Some(v);
            } else {
                layout = Some(v);
            }
        } else if let Some(hex) = p.strip_prefix("blobs/sha256/") {
            let digest = format!("sha256:{hex}");
            if digest_hex(&digest).is_none() {
                return Err(bad(
                    path,
                    format!("member {p:?} is not named by a sha256 digest"),
                ));
            }
            if !store.has(&digest, size) {
                store.put_reader(&name, &digest, size, &mut e)?;
            }
        }
        // Anything else (a manifest.json of docker-archive compatibility, ...) is ignored.
    }
    check_layout_file(
        path,
        &layout.ok_or_else(|| bad(path, "it has no oci-layout"))?,
    )?;
    index.ok_or_else(|| bad(path, "it has no index.json"))
}
