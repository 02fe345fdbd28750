//! OS packages for the card: the `.deb`s a node needs that its base image lacks, taken from
//! the base image's own apt sources and verified the way apt verifies them, so first boot
//! installs them with `dpkg` and needs no network.
//!
//! 1. [`read_base`]: the base's apt sources with their keys ([`sources`]) and its dpkg status.
//! 2. [`fetch`] (`piforge fetch SPEC`): each suite's `InRelease`, its signature checked with
//!    the base's keyring ([`verify`]); the `Packages` indexes of its components (arm64 and
//!    all), checked against the Release's SHA-256 and size ([`index`]); the wanted packages
//!    and every dependency the base lacks ([`resolve`]); the `.deb`s, checked against the
//!    index's SHA-256 and size, into the content-addressed cache ([`download`]); and every one
//!    pinned in `piforge.lock` (`[[deb]]`).
//! 3. [`card_debs`] (every build): the pinned `.deb`s, re-hashed against the lock (fetched
//!    again by their URL when the cache lacks them), leaving out what the base already has.

pub mod control;
pub mod download;
pub mod index;
pub mod resolve;
pub mod sources;
pub mod verify;
pub mod version;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::artifacts::{DebEntry, Lock};
use crate::fs::RootFiles;

pub use resolve::Installed;
pub use sources::AptSource;

/// Errors: each one sentence.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error("reading the base image's apt configuration: {0}")]
    Base(String),
    #[error("apt source {repo}: {msg}")]
    Source { repo: String, msg: String },
    #[error("resolving the OS packages: {0}")]
    Resolve(String),
    #[error("{0}")]
    Download(String),
    #[error(transparent)]
    Lock(#[from] Box<crate::artifacts::Error>),
    #[error("--dry-run does not download: the pinned package {0} is not in the cache; run `piforge fetch` first")]
    NotCached(String),
}

/// What piforge reads of the base image for its packages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseApt {
    pub sources: Vec<AptSource>,
    pub installed: BTreeMap<String, Installed>,
}

/// Reads the base's apt sources, their keys and its dpkg status.
pub fn read_base(fs: &dyn RootFiles) -> Result<BaseApt, AptError> {
    let sources = sources::read_sources(fs).map_err(AptError::Base)?;
    let status = fs
        .read_string("/var/lib/dpkg/status")
        .map_err(AptError::Base)?
        .unwrap_or_default();
    let installed = resolve::installed(&status)
        .map_err(|e| AptError::Base(format!("/var/lib/dpkg/status: {e}")))?;
    Ok(BaseApt { sources, installed })
}

/// A `.deb` to put in the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardDeb {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Its file name in the card.
    pub file: String,
    /// The verified file on the host (in the cache).
    pub path: PathBuf,
    /// Where it is downloaded from upstream (the lock's URL, not a `--mirror`'s): the
    /// manifest and the SBOM name it.
    pub url: String,
    pub sha256: String,
    pub size: u64,
    pub installed_kib: u64,
    pub why: String,
}

/// How [`fetch`] works.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub cache_dir: PathBuf,
    pub lock_path: PathBuf,
    pub mirror: Option<String>,
    /// Resolve again against the repositories even when the lock covers every package.
    pub update: bool,
}

/// What [`fetch`] did.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub debs: Vec<CardDeb>,
    /// True when the repositories were read (else the lock was enough).
    pub resolved: bool,
    /// Why nothing could be fetched (a base without apt sources): first boot uses apt.
    pub unavailable: Option<String>,
}

/// The wanted packages the base does not have.
fn missing<'a>(base: &BaseApt, wanted: &'a [String]) -> Vec<&'a String> {
    wanted
        .iter()
        .filter(|w| !base.installed.contains_key(*w))
        .collect()
}

/// `piforge fetch`: pins and downloads the `.deb`s `wanted` needs on this base (see the
/// module docs). With a lock that already pins every missing wanted package (and no
/// `update`), the repositories are not read and the lock decides.
pub fn fetch(base: &BaseApt, wanted: &[String], opts: &FetchOptions) -> Result<Fetched, AptError> {
    let boxed = |e| AptError::Lock(Box::new(e));
    let mut lock = Lock::load(&opts.lock_path).map_err(boxed)?;
    let need = missing(base, wanted);
    if need.is_empty() {
        return Ok(Fetched::default());
    }
    let dl = download::Downloader::new(&opts.cache_dir, opts.mirror.clone())
        .map_err(AptError::Download)?;
    let covered = need.iter().all(|w| lock.debs().any(|d| &d.name == *w));
    if covered && !opts.update {
        let debs = card_debs(
            base,
            wanted,
            &lock,
            &opts.cache_dir,
            Some(&dl),
            &opts.lock_path,
        )?;
        return Ok(Fetched {
            debs,
            resolved: false,
            unavailable: None,
        });
    }
    if base.sources.is_empty() {
        return Ok(Fetched {
            unavailable: Some(
                "the base image lists no apt source (/etc/apt/sources.list, /etc/apt/sources.list.d) to take them from; first boot installs them with apt (needs the network)".into(),
            ),
            ..Default::default()
        });
    }
    let candidates = read_indexes(base, &dl)?;
    let wanted_missing: Vec<String> = need.iter().map(|s| s.to_string()).collect();
    let res = resolve::resolve(&wanted_missing, &base.installed, &candidates)
        .map_err(AptError::Resolve)?;
    let mut entries = Vec::new();
    let mut debs = Vec::new();
    for c in &res.packages {
        let src = &base.sources[c.source];
        let url = format!("{}/{}", src.uri, c.filename);
        let vouched = format!("the Packages index of {}", c.origin);
        let path = dl
            .fetch(&url, &c.sha256, c.size, &vouched)
            .map_err(AptError::Download)?;
        let file = c
            .filename
            .rsplit('/')
            .next()
            .unwrap_or(&c.filename)
            .to_string();
        let why = res.reasons.get(&c.name).cloned().unwrap_or_default();
        entries.push(DebEntry {
            name: c.name.clone(),
            version: c.version.clone(),
            arch: c.arch.clone(),
            file: file.clone(),
            url: url.clone(),
            source: c.origin.clone(),
            why: why.clone(),
            sha256: c.sha256.clone(),
            size: c.size,
            installed_kib: c.installed_kib,
        });
        debs.push(CardDeb {
            name: c.name.clone(),
            version: c.version.clone(),
            arch: c.arch.clone(),
            file,
            path,
            url,
            sha256: c.sha256.clone(),
            size: c.size,
            installed_kib: c.installed_kib,
            why,
        });
    }
    let before = lock.clone();
    lock.set_debs(entries);
    if lock != before {
        lock.save(&opts.lock_path).map_err(boxed)?;
    }
    Ok(Fetched {
        debs,
        resolved: true,
        unavailable: None,
    })
}

/// Every candidate of every source: InRelease verified, Packages indexes checked and read.
fn read_indexes(
    base: &BaseApt,
    dl: &download::Downloader,
) -> Result<Vec<index::Candidate>, AptError> {
    let scratch = tempfile::tempdir()
        .map_err(|e| AptError::Download(format!("cannot create a temporary directory: {e}")))?;
    let mut candidates = Vec::new();
    for (i, src) in base.sources.iter().enumerate() {
        let err = |msg: String| AptError::Source {
            repo: src.name(),
            msg,
        };
        let url = format!("{}/dists/{}/InRelease", src.uri, src.suite);
        let signed = dl.get_small(&url, download::INRELEASE_MAX).map_err(err)?;
        let release =
            verify::verify_inrelease(&signed, &src.keyring, scratch.path()).map_err(|m| {
                err(format!(
                    "{url} was refused: {m} (keys from {})",
                    src.keys_from
                ))
            })?;
        let files = index::release_files(&release).map_err(|m| err(format!("{url}: {m}")))?;
        for comp in &src.components {
            for arch in [sources::ARCH, "all"] {
                let Some(f) = index::packages_index(&files, comp, arch) else {
                    if arch == sources::ARCH {
                        return Err(err(format!(
                            "its Release lists no {comp}/binary-{arch}/Packages index"
                        )));
                    }
                    continue;
                };
                let iurl = format!("{}/dists/{}/{}", src.uri, src.suite, f.path);
                let path = dl
                    .fetch(
                        &iurl,
                        &f.sha256,
                        f.size,
                        &format!("the signed Release of {}", src.name()),
                    )
                    .map_err(AptError::Download)?;
                let origin = format!("{} {comp}", src.name());
                index::read_packages(&path, &f.path, i, &origin, &mut candidates)
                    .map_err(|m| err(format!("{iurl}: {m}")))?;
            }
        }
    }
    // A package listed in both binary-arm64 and binary-all (Debian lists arch-all packages in
    // both) is one candidate.
    candidates
        .sort_by(|a, b| (&a.name, &a.version, a.source).cmp(&(&b.name, &b.version, b.source)));
    candidates.dedup_by(|a, b| a.name == b.name && a.version == b.version && a.sha256 == b.sha256);
    Ok(candidates)
}

/// The pinned `.deb`s to put in a card built from `base`: every `[[deb]]` of the lock except
/// those the base already has at the same or a newer version, re-hashed from the cache
/// (downloaded by their URL, checked against the lock, when `dl` is given and the cache lacks
/// them). Empty when the base lacks none of `wanted`.
pub fn card_debs(
    base: &BaseApt,
    wanted: &[String],
    lock: &Lock,
    cache_dir: &Path,
    dl: Option<&download::Downloader>,
    lock_path: &Path,
) -> Result<Vec<CardDeb>, AptError> {
    if missing(base, wanted).is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for d in dependency_order(lock) {
        if base
            .installed
            .get(&d.name)
            .is_some_and(|i| version::compare(&i.version, &d.version) != std::cmp::Ordering::Less)
        {
            continue;
        }
        let vouched = format!("the lock file {}", lock_path.display());
        let path = match dl {
            Some(dl) => dl
                .fetch(&d.url, &d.sha256, d.size, &vouched)
                .map_err(AptError::Download)?,
            None => {
                let p = crate::artifacts::cached_object(cache_dir, &d.sha256);
                let ok = p.is_file()
                    && crate::artifacts::sha256_file(&p)
                        .map(|(s, _)| s == d.sha256)
                        .unwrap_or(false);
                if !ok {
                    return Err(AptError::NotCached(format!("{} {}", d.name, d.version)));
                }
                p
            }
        };
        out.push(CardDeb {
            name: d.name.clone(),
            version: d.version.clone(),
            arch: d.arch.clone(),
            file: d.file.clone(),
            path,
            url: d.url.clone(),
            sha256: d.sha256.clone(),
            size: d.size,
            installed_kib: d.installed_kib,
            why: d.why.clone(),
        });
    }
    Ok(out)
}

/// [`read_base`] of the raw image `raw`'s root filesystem.
pub fn read_base_image(raw: &Path) -> Result<BaseApt, AptError> {
    let img = crate::disk::Image::open(raw).map_err(|e| AptError::Base(e.to_string()))?;
    let fs = img.root_fs().map_err(|e| AptError::Base(e.to_string()))?;
    read_base(&crate::fs::Ext4Files(&fs))
}

/// Which pinned packages a build puts in the card, or why none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardPackages {
    pub debs: Vec<CardDeb>,
    /// Missing packages the lock pins no `.deb` for: first boot installs them with apt.
    pub unpinned: Vec<String>,
}

impl CardPackages {
    /// The `.deb` bytes and the room they take installed.
    pub fn sizes(&self) -> (u64, u64) {
        (
            self.debs.iter().map(|d| d.size).sum(),
            self.debs.iter().map(|d| d.installed_kib * 1024).sum(),
        )
    }
}

/// For a build: the pinned `.deb`s of the packages the base lacks, when the lock pins every
/// one of them (else none, and `unpinned` names those it lacks). Files come from `dir` (an
/// offline `--artifacts` directory, under their file names), else the cache, else are
/// downloaded when `download` is set; each is checked against the lock.
pub fn build_packages(
    base: &BaseApt,
    wanted: &[String],
    lock_path: &Path,
    cache_dir: &Path,
    dir: Option<&Path>,
    mirror: Option<String>,
    download: bool,
) -> Result<CardPackages, AptError> {
    let lock = Lock::load(lock_path).map_err(|e| AptError::Lock(Box::new(e)))?;
    let need = missing(base, wanted);
    let unpinned: Vec<String> = need
        .iter()
        .filter(|w| !lock.debs().any(|d| d.name == ***w))
        .map(|w| w.to_string())
        .collect();
    if need.is_empty() || !unpinned.is_empty() {
        return Ok(CardPackages {
            debs: Vec::new(),
            unpinned,
        });
    }
    if let Some(dir) = dir {
        // Offline: a pinned file in the directory is checked and copied into the cache.
        for d in lock.debs() {
            let p = dir.join(&d.file);
            if p.is_file() {
                seed_cache(&p, d, cache_dir, lock_path)?;
            }
        }
    }
    let dl = if download {
        Some(download::Downloader::new(cache_dir, mirror).map_err(AptError::Download)?)
    } else {
        None
    };
    let debs = card_debs(base, wanted, &lock, cache_dir, dl.as_ref(), lock_path)?;
    Ok(CardPackages {
        debs,
        unpinned: Vec::new(),
    })
}

/// For a build's first phase, before anything is written: every pinned `.deb` an offline
/// `--artifacts` directory holds (under its file name) is checked against the lock. Nothing
/// is copied; a lock without `[[deb]]` entries checks nothing.
pub fn check_offline_debs(lock_path: &Path, dir: &Path) -> Result<(), AptError> {
    let lock = Lock::load(lock_path).map_err(|e| AptError::Lock(Box::new(e)))?;
    for d in lock.debs() {
        let p = dir.join(&d.file);
        if p.is_file() {
            check_offline_deb(&p, d, lock_path)?;
        }
    }
    Ok(())
}

/// The SHA-256 of the offline file `p`, which must be the lock's for the package `d`.
fn check_offline_deb(p: &Path, d: &DebEntry, lock_path: &Path) -> Result<String, AptError> {
    let (sha, _) = crate::artifacts::sha256_file(p).map_err(|e| AptError::Lock(Box::new(e)))?;
    if sha != d.sha256 {
        return Err(AptError::Download(format!(
            "{} has SHA-256 {sha}, but the lock file {} says {} for package {}",
            p.display(),
            lock_path.display(),
            d.sha256,
            d.name
        )));
    }
    Ok(sha)
}

/// Copies the offline file `p` of the pinned package `d` into the cache, checked.
fn seed_cache(p: &Path, d: &DebEntry, cache_dir: &Path, lock_path: &Path) -> Result<(), AptError> {
    let sha = check_offline_deb(p, d, lock_path)?;
    let obj = crate::artifacts::cached_object(cache_dir, &sha);
    if obj.is_file() {
        return Ok(());
    }
    let fail = |e: std::io::Error| {
        AptError::Download(format!(
            "cannot copy {} into the cache {}: {e}",
            p.display(),
            obj.display()
        ))
    };
    if let Some(parent) = obj.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let tmp = obj.with_extension("part");
    std::fs::copy(p, &tmp).map_err(fail)?;
    std::fs::rename(&tmp, &obj).map_err(fail)
}

/// The lock's packages with what each needs before it: `why` records the edge the resolver
/// took (`<package> needs <relation>`), so a package goes after everything below it in that
/// tree (deepest first, then by name). dpkg orders one `dpkg -i` of them all by itself; the
/// order keeps the list readable and a partial install sensible.
fn dependency_order(lock: &Lock) -> Vec<&DebEntry> {
    let parent: BTreeMap<&str, &str> = lock
        .debs()
        .filter_map(|d| Some((d.name.as_str(), d.why.split_once(" needs ")?.0)))
        .collect();
    let depth = |name: &str| {
        let mut n = name;
        let mut d = 0usize;
        while let Some(p) = parent.get(n) {
            d += 1;
            n = *p;
            if d > parent.len() {
                break;
            }
        }
        d
    };
    let mut v: Vec<&DebEntry> = lock.debs().collect();
    v.sort_by(|a, b| {
        depth(&b.name)
            .cmp(&depth(&a.name))
            .then(a.name.cmp(&b.name))
    });
    v
}
