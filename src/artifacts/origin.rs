//! Where a build's artifacts come from: an offline directory (`--artifacts DIR`), else the
//! cache, downloading what is missing.

use std::path::PathBuf;

use super::{fetch, from_dir, FetchOptions, FetchedArtifact, ProgressFn, Release, Result};

/// Where artifacts come from, for `piforge fetch`, `customize --kubernetes` and `build`.
#[derive(Debug, Clone)]
pub struct ArtifactSource {
    /// Files under their upstream names instead of downloads.
    pub dir: Option<PathBuf>,
    /// The lock file pinning digests.
    pub lock: PathBuf,
    pub allow_unpinned: bool,
    pub mirror: Option<String>,
    /// Re-verify upstream and replace changed lock entries (`piforge fetch --update`).
    pub update: bool,
    pub cache_dir: PathBuf,
}

/// The release artifacts: from the offline directory, else the cache (downloading what is
/// missing). Returns them with the warnings to show (unpinned digests recorded, ...).
pub fn release_artifacts(
    release: &Release,
    src: &ArtifactSource,
    progress: Option<ProgressFn<'_>>,
) -> Result<(Vec<FetchedArtifact>, Vec<String>)> {
    let arts = match &src.dir {
        Some(dir) => from_dir(release, dir, &src.lock, src.allow_unpinned)?,
        None => {
            let mut o = FetchOptions::new(&src.cache_dir, &src.lock);
            o.mirror = src.mirror.clone();
            o.update = src.update;
            o.allow_unpinned = src.allow_unpinned;
            o.progress = progress;
            fetch(release, &o)?
        }
    };
    let warnings = arts.iter().filter_map(|a| a.warning()).collect();
    Ok((arts, warnings))
}
