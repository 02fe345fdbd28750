//! The output directory, changed only when a build is whole.
//!
//! A build writes everything into a staging directory inside the output directory
//! (`OUT/.piforge-staging.<random>`, made fresh with `mkdir` (0700), which fails rather than
//! follow anything planted at that name), then [`Staging::commit`] renames each file into
//! place, removes the files an earlier build wrote that this one no longer makes, and removes
//! the staging directory. Until the commit the output directory is as the last build left it;
//! a failed build, or an interrupted one ([`cleanup_staging`]), only removes its staging
//! directory.
//!
//! What piforge wrote is recorded in `OUT/manifest.json` (an output directory from before the
//! manifest: the files its `SHA256SUMS` lists). Any other file in the output directory makes
//! the build refuse, naming it: piforge never deletes what it did not write, and never lets
//! `dist/` hold an image it cannot vouch for. Names starting with `.piforge` are piforge's own
//! (staging directories, the output directory's lock).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::manifest::Manifest;
use super::{io_error, BuildError};

pub const MANIFEST: &str = "manifest.json";
pub const SHA256SUMS: &str = "SHA256SUMS";
pub const SBOM: &str = "sbom.spdx.json";
const STAGING_PREFIX: &str = ".piforge-staging.";
/// `build --verify`'s rebuild directory beside the outputs it checks.
pub const VERIFY_PREFIX: &str = ".piforge-verify.";
/// Names of files being renamed into place, written before the first rename and removed after
/// the last, so that a build killed half-way through the swap still knows them as its own.
const PENDING: &str = ".piforge-pending";
/// The manifest is small; a larger file is not one piforge wrote.
const MANIFEST_MAX: u64 = 16 << 20;

/// Staging directories of this process, and the lock a commit holds while it renames.
fn active() -> &'static Mutex<Vec<PathBuf>> {
    static A: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    A.get_or_init(|| Mutex::new(Vec::new()))
}

/// Removes every staging directory this process has open; returns how many there were. For
/// the Ctrl-C / SIGTERM handler, which then exits: a commit in progress (a few renames) is let
/// finish first, and none starts after (the registry's lock stays held, as with
/// [`crate::output::cleanup_pending`]).
pub fn cleanup_staging() -> usize {
    let list = active().lock().unwrap_or_else(|p| p.into_inner());
    for d in list.iter() {
        let _ = fs::remove_dir_all(d);
    }
    let n = list.len();
    std::mem::forget(list);
    n
}

/// A build's staging directory in an output directory.
#[derive(Debug)]
pub struct Staging {
    out: PathBuf,
    dir: PathBuf,
    /// Files in `out` an earlier build wrote, with the digest it recorded.
    owned: BTreeMap<String, String>,
    /// The earlier build's manifest, if any.
    previous: Option<Manifest>,
    committed: bool,
}

/// Reads `OUT/manifest.json` when it is a regular file piforge wrote.
fn read_manifest(path: &Path) -> Option<Manifest> {
    let md = fs::symlink_metadata(path).ok()?;
    if !md.file_type().is_file() || md.len() > MANIFEST_MAX {
        return None;
    }
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(MANIFEST_MAX)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// `name -> digest` of a `SHA256SUMS` piforge wrote (plain names, no directories).
fn read_sums(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(md) = fs::symlink_metadata(path) else {
        return out;
    };
    if !md.file_type().is_file() || md.len() > MANIFEST_MAX {
        return out;
    }
    if let Ok(text) = fs::read_to_string(path) {
        for l in crate::digest::sum_lines(&text) {
            if let (Some(f), Some(d)) = (l.file, crate::digest::parse_sha256(l.digest)) {
                if !f.contains('/') {
                    out.insert(f.to_string(), d);
                }
            }
        }
    }
    out
}

/// What an earlier build left in an output directory.
struct Previous {
    /// Files it wrote, with the digest it recorded (empty when it recorded none).
    owned: BTreeMap<String, String>,
    manifest: Option<Manifest>,
}

/// Checks, without changing anything, that every file in `out` (when it exists) is one
/// piforge wrote: run before any side effect of a build, and again when it starts writing.
pub fn check_out_dir(out: &Path) -> Result<(), BuildError> {
    match fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => check(out).map(|_| ()),
    }
}

fn check(out: &Path) -> Result<Previous, BuildError> {
    let previous = read_manifest(&out.join(MANIFEST));
    let sums = read_sums(&out.join(SHA256SUMS));
    let mut owned: BTreeMap<String, String> = BTreeMap::new();
    match &previous {
        Some(m) => {
            for n in &m.nodes {
                for f in &n.files {
                    owned.insert(f.name.clone(), f.sha256.clone());
                }
            }
            for f in &m.files {
                owned.insert(f.name.clone(), f.sha256.clone());
            }
            owned.insert(MANIFEST.into(), String::new());
            if out.join(SHA256SUMS).exists() {
                owned.insert(SHA256SUMS.into(), String::new());
            }
        }
        // An output directory from before the manifest: what its SHA256SUMS lists.
        None if !sums.is_empty() => {
            owned.extend(sums);
            owned.insert(SHA256SUMS.into(), String::new());
        }
        None => {}
    }
    if let Ok(text) = fs::read_to_string(out.join(PENDING)) {
        for l in text.lines().filter(|l| !l.is_empty() && !l.contains('/')) {
            owned.entry(l.to_string()).or_default();
        }
    }
    let mut foreign = Vec::new();
    for e in fs::read_dir(out).map_err(io_error(out))? {
        let e = e.map_err(io_error(out))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(".piforge")
            || owned.contains_key(&name)
            || name.starts_with(".work.")
            || name.ends_with(".piforge-tmp");
        if !ours {
            foreign.push(name);
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(BuildError::ForeignFiles {
            dir: out.display().to_string(),
            files: foreign.join(", "),
        });
    }
    Ok(Previous {
        owned,
        manifest: previous,
    })
}

impl Staging {
    /// Opens `out` (created when missing) for a build: checks that every file in it is one
    /// piforge wrote, removes what an interrupted build left, and makes the staging directory.
    pub fn begin(out: &Path) -> Result<Staging, BuildError> {
        fs::create_dir_all(out).map_err(io_error(out))?;
        let Previous {
            owned,
            manifest: previous,
        } = check(out)?;
        for e in fs::read_dir(out).map_err(io_error(out))? {
            let e = e.map_err(io_error(out))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(STAGING_PREFIX) || name.starts_with(VERIFY_PREFIX) {
                // An interrupted build's (the output directory's lock keeps two builds apart):
                // remove_dir_all removes a link itself, never what it points at.
                let _ = fs::remove_dir_all(e.path());
            } else if !owned.contains_key(&name)
                && (name.starts_with(".work.") || name.ends_with(".piforge-tmp"))
            {
                // Role images and temporary files of older piforge versions.
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        let mut list = active().lock().unwrap_or_else(|p| p.into_inner());
        use std::os::unix::fs::PermissionsExt;
        // mkdir(2) with a random name: fails on anything already there, link or not.
        let dir = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .rand_bytes(12)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(out)
            .map_err(io_error(out))?
            .keep();
        list.push(dir.clone());
        drop(list);
        Ok(Staging {
            out: out.to_path_buf(),
            dir,
            owned,
            previous,
            committed: false,
        })
    }

    /// The staging directory (0700): write every output here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The previous build's manifest.
    pub fn previous(&self) -> Option<&Manifest> {
        self.previous.as_ref()
    }

    /// The digest an earlier build recorded for `name` in the output directory, when it is
    /// there still (a regular file).
    pub fn previous_file(&self, name: &str) -> Option<&str> {
        let d = self.owned.get(name).filter(|d| !d.is_empty())?;
        let md = fs::symlink_metadata(self.out.join(name)).ok()?;
        md.file_type().is_file().then_some(d.as_str())
    }

    /// Puts the build in place: `staged` (names in the staging directory, renamed in this
    /// order: the manifest last) replace or join the output directory's files, `kept` (names
    /// already in the output directory) stay, and every other file an earlier build wrote is
    /// removed. Each staged file must be complete and synced.
    pub fn commit(mut self, staged: &[String], kept: &[String]) -> Result<(), BuildError> {
        let want: BTreeSet<&str> = staged.iter().chain(kept).map(String::as_str).collect();
        // The interrupt handler waits while the files move (milliseconds).
        let guard = active().lock().unwrap_or_else(|p| p.into_inner());
        let new: Vec<&str> = staged
            .iter()
            .map(String::as_str)
            .filter(|n| !self.owned.contains_key(*n))
            .collect();
        let pending = self.out.join(PENDING);
        if !new.is_empty() {
            let mut text = new.join("\n");
            text.push('\n');
            write_synced(&pending, text.as_bytes())?;
        }
        for name in staged {
            let (from, to) = (self.dir.join(name), self.out.join(name));
            fs::rename(&from, &to).map_err(io_error(&to))?;
        }
        for name in self.owned.keys() {
            if !want.contains(name.as_str()) {
                let p = self.out.join(name);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&p)(e)),
                }
            }
        }
        sync_dir(&self.out)?;
        let _ = fs::remove_file(&pending);
        self.committed = true;
        let _ = fs::remove_dir_all(&self.dir);
        drop(guard);
        self.unregister();
        Ok(())
    }

    fn unregister(&self) {
        active()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| d != &self.dir);
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
            self.unregister();
        }
    }
}

/// Writes a new file (never through a link) and syncs it.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_error(path))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(io_error(path))
}

fn sync_dir(dir: &Path) -> Result<(), BuildError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::manifest::{BaseImage, FileEntry, NodeEntry};

    fn manifest(files: &[&str]) -> Manifest {
        Manifest {
            piforge_version: "0".into(),
            cluster: "c".into(),
            spec_sha256: String::new(),
            epoch: 0,
            kubernetes_version: String::new(),
            base_image: BaseImage {
                file: String::new(),
                sha256: String::new(),
            },
            artifacts: vec![],
            debs: vec![],
            container_images: vec![],
            nodes: files
                .iter()
                .map(|f| NodeEntry {
                    name: f.to_string(),
                    role: "worker".into(),
                    address: None,
                    raw_image: None,
                    files: vec![FileEntry {
                        name: f.to_string(),
                        bytes: 1,
                        sha256: "d".repeat(64),
                    }],
                })
                .collect(),
            files: vec![],
        }
    }

    fn stage(s: &Staging, name: &str, data: &str) -> String {
        fs::write(s.dir().join(name), data).unwrap();
        name.to_string()
    }

    #[test]
    fn commit_replaces_removes_stale_and_keeps() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("dist");
        let s = Staging::begin(&out).unwrap();
        assert_eq!(
            fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let m = manifest(&["a.img", "b.img"]);
        let staged = vec![
            stage(&s, "a.img", "A1"),
            stage(&s, "b.img", "B1"),
            stage(&s, MANIFEST, &m.to_json()),
        ];
        s.commit(&staged, &[]).unwrap();
        assert_eq!(fs::read_to_string(out.join("a.img")).unwrap(), "A1");

        // b is no longer built and c is new; a stays as it was (a --node build of c).
        let s = Staging::begin(&out).unwrap();
        assert!(s.previous_file("a.img").is_some());
        let m = manifest(&["a.img", "c.img"]);
        let staged = vec![stage(&s, "c.img", "C1"), stage(&s, MANIFEST, &m.to_json())];
        let dir = s.dir().to_path_buf();
        s.commit(&staged, &["a.img".to_string()]).unwrap();
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.img", "c.img", MANIFEST]);
        assert!(!dir.exists(), "the staging directory stays");
    }

    #[test]
    fn a_failed_build_leaves_the_output_directory_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("dist");
        let s = Staging::begin(&out).unwrap();
        let staged = vec![
            stage(&s, "a.img", "A1"),
            stage(&s, MANIFEST, &manifest(&["a.img"]).to_json()),
        ];
        s.commit(&staged, &[]).unwrap();
        let s = Staging::begin(&out).unwrap();
        stage(&s, "a.img", "A2");
        stage(&s, "z.img", "Z");
        let dir = s.dir().to_path_buf();
        drop(s); // the build failed
        assert!(!dir.exists());
        assert_eq!(fs::read_to_string(out.join("a.img")).unwrap(), "A1");
        assert!(!out.join("z.img").exists());
        // An interrupted build's staging directory is removed by the next one.
        fs::create_dir(out.join(".piforge-staging.left")).unwrap();
        fs::write(out.join(".piforge-staging.left/x.img"), "x").unwrap();
        drop(Staging::begin(&out).unwrap());
        assert!(!out.join(".piforge-staging.left").exists());
        // cleanup_staging is not called here: it leaves the registry locked for good.
    }

    #[test]
    fn files_piforge_did_not_write_are_refused_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("dist");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("notes.txt"), "mine").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("x.img")).unwrap();
        let e = Staging::begin(&out).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("x.img"), "{e}");
        assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
        // An output directory from before the manifest: its SHA256SUMS vouches for its images.
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("dist");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("old.img"), "o").unwrap();
        fs::write(
            out.join(SHA256SUMS),
            format!("{}  old.img\n", "e".repeat(64)),
        )
        .unwrap();
        let s = Staging::begin(&out).unwrap();
        let staged = vec![
            stage(&s, "new.img", "n"),
            stage(&s, MANIFEST, &manifest(&["new.img"]).to_json()),
        ];
        s.commit(&staged, &[]).unwrap();
        assert!(!out.join("old.img").exists() && !out.join(SHA256SUMS).exists());
        assert!(out.join("new.img").exists());
    }
}
