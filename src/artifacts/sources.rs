//! Where a build's or `customize --kubernetes`'s artifacts come from: an offline directory,
//! else the cache (downloading what is missing), always checked against the lock.

use std::path::{Path, PathBuf};

use super::{
    cached_object, check_dir_artifacts, fetch, fetch_artifacts, from_dir, store_in_cache,
    ArtifactKind, ArtifactSpec, ChecksumKind, Error, FetchOptions, FetchedArtifact, Lock,
    LockEntry, ProgressFn, Release, Result,
};

/// Where artifacts come from, for a build, `customize --kubernetes` and `piforge fetch`.
#[derive(Debug, Clone)]
pub struct ArtifactSource {
    /// Offline: the files under their upstream names in this directory.
    pub dir: Option<PathBuf>,
    pub lock: PathBuf,
    pub allow_unpinned: bool,
    pub mirror: Option<String>,
    pub update: bool,
    pub cache_dir: PathBuf,
}

impl ArtifactSource {
    /// The release artifacts: from the offline directory (copied into the cache, so that the
    /// lock and the cache answer later builds), else the cache (downloading what is missing). Returns them with the warnings to show (unpinned digests recorded, ...).
    pub fn release_artifacts(
        &self,
        release: &Release,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<(Vec<FetchedArtifact>, Vec<String>)> {
        let arts = match &self.dir {
            Some(dir) => {
                let arts = from_dir(release, dir, &self.lock, self.allow_unpinned)?;
                // Later builds then need neither the directory nor the network.
                store_in_cache(&arts, &self.cache_dir)?;
                arts
            }
            None => {
                let mut o = FetchOptions::new(&self.cache_dir, &self.lock);
                o.mirror = self.mirror.clone();
                o.update = self.update;
                o.allow_unpinned = self.allow_unpinned;
                o.progress = progress;
                fetch(release, &o)?
            }
        };
        let warnings = warnings(&arts, &self.lock);
        Ok((arts, warnings))
    }

    /// Checks, writing nothing, what can be known before a build starts: every file of an
    /// offline directory is there and matches the lock; a mirror URL is well formed.
    pub fn check_available(&self, specs: &[ArtifactSpec]) -> Result<()> {
        match &self.dir {
            Some(dir) => check_dir_artifacts(specs, dir, &self.lock, self.allow_unpinned),
            None => match &self.mirror {
                Some(m) => super::mirror_url(m, "https://example.invalid/").map(|_| ()),
                None => Ok(()),
            },
        }
    }

    /// The name of the first artifact of `specs` that is not in the cache under its lock
    /// digest (so that using it would need a download), or `None`.
    pub fn first_not_cached(&self, specs: &[ArtifactSpec]) -> Result<Option<String>> {
        let lock = Lock::load(&self.lock)?;
        for s in specs {
            let cached = lock
                .get(&s.url)
                .is_some_and(|e| cached_object(&self.cache_dir, &e.sha256).is_file());
            if !cached {
                return Ok(Some(format!("{} ({})", s.name, s.url)));
            }
        }
        Ok(None)
    }
}

/// Downloads an upstream OS image into the artifact cache (resuming, verified against
/// `sha256` before it is used) and returns its path there; later calls use the cache
/// without the network.
pub fn fetch_image(
    url: &str,
    sha256: &str,
    cache_dir: &Path,
    mirror: Option<&str>,
    progress: Option<ProgressFn<'_>>,
) -> Result<PathBuf> {
    let file_name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("image")
        .to_string();
    let spec = ArtifactSpec {
        name: "image".into(),
        file_name,
        url: url.to_string(),
        checksum_url: None,
        checksum_kind: ChecksumKind::Bare,
        kind: ArtifactKind::Binary,
        members: Default::default(),
    };
    // A lock of one entry holding the spec's digest: the download is checked against it and
    // the cache answers later builds without the network.
    let lock_path = cache_dir.join("images").join(format!("{sha256}.lock"));
    if let Some(d) = lock_path.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::io("cannot create the cache directory", d, e))?;
    }
    let mut lock = Lock::load(&lock_path)?;
    lock.insert(LockEntry {
        name: spec.name.clone(),
        file: spec.file_name.clone(),
        url: spec.url.clone(),
        sha256: sha256.to_string(),
        size: 0,
    });
    lock.save(&lock_path)?;
    let mut o = FetchOptions::new(cache_dir, &lock_path);
    o.mirror = mirror.map(str::to_string);
    o.progress = progress;
    let got = fetch_artifacts(&[spec], &o)?;
    got.into_iter().next().map(|a| a.path).ok_or_else(|| {
        Error::io(
            "downloading",
            Path::new(url),
            std::io::Error::other("the download returned nothing"),
        )
    })
}

/// The warnings to show for `arts`: a changed lock entry each, and the artifacts recorded
/// with no published digest in one line that names them and the lock that now holds their
/// digests (eight lines saying the same thing would bury everything else).
fn warnings(arts: &[FetchedArtifact], lock: &Path) -> Vec<String> {
    let unpinned: Vec<&str> = arts
        .iter()
        .filter(|a| a.pin == super::Pin::Unpinned)
        .map(|a| a.spec.name.as_str())
        .collect();
    let mut out: Vec<String> = arts
        .iter()
        .filter(|a| a.pin != super::Pin::Unpinned)
        .filter_map(|a| a.warning())
        .collect();
    match unpinned.as_slice() {
        [] => {}
        [_] => out.extend(
            arts.iter()
                .filter(|a| a.pin == super::Pin::Unpinned)
                .filter_map(|a| a.warning()),
        ),
        names => out.push(format!(
            "unpinned, recorded: {} artifacts ({}) were verified against no published digest; \
             their SHA-256s as found are now pinned in {}, where you can check them",
            names.len(),
            names.join(", "),
            lock.display()
        )),
    }
    out
}
