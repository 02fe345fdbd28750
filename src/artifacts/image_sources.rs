//! Where a build's and `piforge fetch`'s container images come from: OCI layouts under
//! `--artifacts DIR/images/`, else the blob store (`<cache>/oci/`), pulling what is missing
//! from the registries (or `--mirror`); always checked against the `[[image]]` pins of the
//! lock. An image with no source (not in DIR, or not cached on a dry run) is reported as
//! missing: the node then pulls it on first boot, the online fallback.

use std::path::{Path, PathBuf};

use super::{ArtifactSource, Error, ImageLockEntry, ImageSpec, Lock, Pin, Result};
use crate::oci::{self, BlobStore, ImageParts, Registry, RegistryOptions};

/// A verified image, every blob of it in the blob store.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    pub spec: ImageSpec,
    pub parts: ImageParts,
    pub pin: Pin,
    /// With `update`: the pin the lock had before, when it changed.
    pub replaced: Option<String>,
}

impl FetchedImage {
    /// A line to show when something deserves attention (as [`super::FetchedArtifact::warning`]).
    pub fn warning(&self) -> Option<String> {
        match (&self.pin, &self.replaced) {
            (Pin::Unpinned, _) => Some(format!(
                "unpinned, recorded: image {} had no lock entry; its digest {} is now in the lock",
                self.spec.image, self.parts.index_digest
            )),
            (_, Some(old)) => Some(format!(
                "image {}: lock entry changed from {old} to {}",
                self.spec.image, self.parts.index_digest
            )),
            _ => None,
        }
    }
}

/// Images recorded from `--artifacts DIR` with no lock entry, in one line naming them and the
/// lock that now holds their digests (as the release files' own summary: nine lines saying the
/// same thing would bury everything else). One image keeps its own line, with its digest.
fn unpinned_warning(images: &[FetchedImage], lock: &Path) -> Option<String> {
    let unpinned: Vec<&FetchedImage> = images.iter().filter(|i| i.pin == Pin::Unpinned).collect();
    match unpinned.as_slice() {
        [] => None,
        [one] => one.warning(),
        all => Some(format!(
            "unpinned, recorded: {} images ({}) had no lock entry; their digests as found are \
             now pinned in {}, where you can check them",
            all.len(),
            all.iter()
                .map(|i| i.spec.image.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            lock.display()
        )),
    }
}

/// What [`ArtifactSource::images`] found.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    pub images: Vec<FetchedImage>,
    /// Images with no source here: pulled by the node on first boot.
    pub missing: Vec<ImageSpec>,
    pub warnings: Vec<String>,
}

/// How [`ArtifactSource::images`] may get what the store lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFetch {
    /// Pull from the registries (or the mirror).
    Pull,
    /// Use only the artifacts directory or the store (a dry run): the rest is missing.
    Local,
}

impl ArtifactSource {
    /// The blob store of this source's cache.
    pub fn blob_store(&self) -> Result<BlobStore> {
        Ok(BlobStore::new(&self.cache_dir)?)
    }

    /// Where `--artifacts DIR` holds `spec`'s layout directory or archive, if it does.
    pub fn image_layout(&self, spec: &ImageSpec) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?.join("images");
        let base = dir.join(spec.image.layout_name());
        let tar = PathBuf::from(format!("{}.tar", base.display()));
        [base, tar]
            .into_iter()
            .find(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// The images `specs`, verified against the lock (whose new pins are written when every
    /// image succeeded and `how` is [`ImageFetch::Pull`] or a directory recorded unpinned ones).
    pub fn images(&self, specs: &[ImageSpec], how: ImageFetch) -> Result<ImageSet> {
        let original = Lock::load(&self.lock)?;
        let mut lock = original.clone();
        let store = self.blob_store()?;
        let mut set = ImageSet::default();
        let mut registry = None;
        for spec in specs {
            let reference = spec.image.to_string();
            let pinned = lock.image(&reference).cloned();
            let got = if self.dir.is_some() {
                match self.image_layout(spec) {
                    Some(path) => {
                        Some(self.image_from_layout(spec, &path, &store, pinned.as_ref())?)
                    }
                    None => None,
                }
            } else {
                let cached = match (&pinned, self.update) {
                    (Some(p), false) => {
                        oci::cached_parts(&store, &spec.image, &p.index, &p.manifest)?
                    }
                    _ => None,
                };
                match (cached, how) {
                    (Some(parts), _) => Some((parts, Pin::Lock)),
                    (None, ImageFetch::Local) => None,
                    (None, ImageFetch::Pull) => {
                        if registry.is_none() {
                            registry = Some(Registry::new(RegistryOptions {
                                mirror: self.mirror.clone(),
                                ..Default::default()
                            })?);
                        }
                        let reg = registry.as_mut().expect("set above");
                        let pin = pinned
                            .as_ref()
                            .filter(|_| !self.update)
                            .map(|p| (p.index.as_str(), p.manifest.as_str()));
                        let by = format!("the lock file {}", self.lock.display());
                        let pulled = reg.pull(&spec.image, &store, pin, &by)?;
                        let how = if pin.is_some() {
                            Pin::Lock
                        } else {
                            Pin::Upstream
                        };
                        Some((pulled.parts, how))
                    }
                }
            };
            let Some((parts, pin)) = got else {
                set.missing.push(spec.clone());
                continue;
            };
            let replaced = match pin {
                Pin::Lock => None,
                Pin::Upstream | Pin::Unpinned => lock
                    .insert_image(ImageLockEntry {
                        reference: reference.clone(),
                        index: parts.index_digest.clone(),
                        manifest: parts.manifest.digest.clone(),
                        size: parts.blob_bytes(),
                    })
                    .map(|old| old.index)
                    .filter(|old| *old != parts.index_digest),
            };
            let f = FetchedImage {
                spec: spec.clone(),
                parts,
                pin,
                replaced,
            };
            if f.pin != Pin::Unpinned {
                set.warnings.extend(f.warning());
            }
            set.images.push(f);
        }
        set.warnings
            .extend(unpinned_warning(&set.images, &self.lock));
        if lock != original {
            lock.save(&self.lock)?;
        }
        Ok(set)
    }

    /// Checks, before a build writes anything of the user's (secrets, lock, outputs), every
    /// image of `specs` that `--artifacts DIR/images/` holds: the layout or archive is read
    /// whole, its blobs verified into the blob store (the cache, as the base image is) and its
    /// digests compared with the lock's pins (an image the lock lacks needs
    /// `allow_unpinned`). The lock is not written. An image the directory lacks is not an
    /// error here (the node pulls it on first boot, with a warning from the build).
    pub fn check_image_layouts(&self, specs: &[ImageSpec]) -> Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        let lock = Lock::load(&self.lock)?;
        let store = self.blob_store()?;
        for spec in specs {
            if let Some(path) = self.image_layout(spec) {
                let pinned = lock.image(&spec.image.to_string()).cloned();
                self.image_from_layout(spec, &path, &store, pinned.as_ref())?;
            }
        }
        Ok(())
    }

    /// One image from `--artifacts DIR`, checked against its pin.
    fn image_from_layout(
        &self,
        spec: &ImageSpec,
        path: &Path,
        store: &BlobStore,
        pinned: Option<&ImageLockEntry>,
    ) -> Result<(ImageParts, Pin)> {
        let parts = oci::import_layout(path, &spec.image, store)?;
        match pinned {
            Some(p) if p.index == parts.index_digest && p.manifest == parts.manifest.digest => {
                Ok((parts, Pin::Lock))
            }
            Some(p) => {
                let (what, pinned, now) = if p.index != parts.index_digest {
                    ("its digest", p.index.clone(), parts.index_digest.clone())
                } else {
                    (
                        "its linux/arm64 manifest",
                        p.manifest.clone(),
                        parts.manifest.digest.clone(),
                    )
                };
                Err(Error::Oci(oci::Error::DigestChanged {
                    changed: oci::Changed {
                        image: format!("{} in {}", spec.image, path.display()),
                        what,
                        pinned,
                        now,
                    },
                    pinned_by: format!("the lock file {}", self.lock.display()),
                }))
            }
            None if self.allow_unpinned => Ok((parts, Pin::Unpinned)),
            None => Err(Error::ImageNotInLock {
                image: spec.image.to_string(),
                path: path.to_path_buf(),
                lock: self.lock.clone(),
            }),
        }
    }
}
