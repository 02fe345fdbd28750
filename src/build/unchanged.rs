//! A node that did not change since the build before into the same output directory keeps
//! that build's files: they are hard-linked into the staging directory instead of written,
//! hashed and compressed again. On a filesystem without reflinks (ext4) an unchanged node
//! otherwise costs a full copy of its image: 10 nodes of a 2 GiB image built again took
//! 14.5 s, nearly all of it writing ten images that were already there.
//!
//! A node image is known by its key ([`super::digest_memo::key`]: what its bytes are made of,
//! the delta over its base included), each of its files by a key of the node's key, the kind
//! of file and the program that made it ([`file_key`]). After a build is put in place, the
//! cache gets a record of the output directory (`<cache>/outputs/<id>`, named by the
//! directory's device and inode, the newest [`KEEP`]; nothing is added to the directory
//! itself) listing each file the build made there: its key, its digest and size, and the
//! identity of the file as it lies there (device, inode, size, modification time to the
//! nanosecond, mode). The next build into the same directory with the same cache takes a
//! node's files from there when every one of them still has the identity recorded, has the
//! digest the directory's manifest lists, and was made under the key this build computes for
//! it; anything else (a file written to, replaced, touched, a record damaged or from another
//! program) makes the node again. This is the trust `make` and `rsync` give a file's size and
//! time, and the cache is trusted as it is for the decompressed images every node is made
//! from.
//!
//! `build --verify` and `--test-no-reuse` never take files: they rebuild everything.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::FileEntry;
use crate::digest::is_sha256_hex;

/// How many output directories' records the cache keeps.
pub const KEEP: usize = 64;

const HEADER: &str = "piforge outputs v1";

/// Where the cache keeps the record of the output directory `out` (`None`: it cannot be
/// identified, e.g. it is gone).
fn record_path(cache: &Path, out: &Path) -> Option<PathBuf> {
    let m = fs::symlink_metadata(out).ok()?;
    let id = Sha256::digest(format!("piforge output directory\0{} {}", m.dev(), m.ino()));
    Some(cache.join("outputs").join(hex::encode(id)))
}

/// What identifies a file's bytes without reading them: the same inode, not written to since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    mode: u32,
}

impl Identity {
    fn of(path: &Path) -> Option<Identity> {
        let m = fs::symlink_metadata(path).ok()?;
        m.file_type().is_file().then(|| Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            mode: m.mode(),
        })
    }
}

/// A file the record lists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    key: String,
    sha256: String,
    bytes: u64,
    id: Identity,
}

/// A node's raw image as the record lists it (its digest is the manifest's `raw_image` even
/// when the raw image is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordedNode {
    key: String,
    sha256: String,
    bytes: u64,
}

/// One node's files as a build made them, for the record.
pub struct Made {
    pub node: String,
    /// The node image's key.
    pub key: String,
    pub raw_sha256: String,
    pub raw_bytes: u64,
    /// Each file with its kind ([`file_key`]).
    pub files: Vec<(FileEntry, String)>,
}

/// The key of a file of kind `kind` (`img`, `bmap`, or a compressed format's encoder) made
/// from the node image with key `node_key` by this program: another piforge (or another build
/// of it) may write the same image into a different file, so its files are never taken.
pub fn file_key(node_key: &str, kind: &str) -> String {
    crate::digest::sha256_hex_of(&[
        b"piforge output file v1\0",
        node_key.as_bytes(),
        b"\0",
        kind.as_bytes(),
        b"\0",
        program().as_bytes(),
    ])
}

/// This program: its version and its executable's size and time (a rebuilt binary is another
/// program, whatever its version says).
fn program() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| fs::metadata(p).ok());
    match exe {
        Some(m) => format!(
            "{} {} {}.{}",
            env!("CARGO_PKG_VERSION"),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ),
        None => format!("{} unknown", env!("CARGO_PKG_VERSION")),
    }
}

/// What the output directory holds from the build before, as its record says and its files
/// still are.
#[derive(Debug, Default)]
pub struct Earlier {
    out: PathBuf,
    files: BTreeMap<String, Recorded>,
    nodes: BTreeMap<String, RecordedNode>,
}

/// The files taken for a node: its entries in build order, and its raw image's digest and size.
pub struct Taken {
    pub files: Vec<FileEntry>,
    pub raw_sha256: String,
    pub raw_bytes: u64,
}

impl Earlier {
    /// The record of `out` in `cache`, keeping only files the manifest lists with the same
    /// digest (`listed`: the digest the output directory's manifest or SHA256SUMS gives a
    /// name) and that have not changed since. A missing or damaged record is an empty one.
    pub fn read(out: &Path, cache: &Path, listed: impl Fn(&str) -> Option<String>) -> Earlier {
        let mut e = Earlier {
            out: out.to_path_buf(),
            ..Earlier::default()
        };
        let Some(Ok(text)) = record_path(cache, out).map(|p| read_small(&p)) else {
            return e;
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return e;
        }
        let written = match lines
            .next()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .as_deref()
        {
            Some(["stamp", s, ns]) => match (s.parse(), ns.parse()) {
                (Ok(s), Ok(ns)) => (s, ns),
                _ => return e,
            },
            _ => return e,
        };
        for l in lines {
            let f: Vec<&str> = l.split(' ').collect();
            match f.as_slice() {
                ["node", name, key, sha, bytes] if is_sha256_hex(key) && is_sha256_hex(sha) => {
                    let Ok(bytes) = bytes.parse() else { continue };
                    e.nodes.insert(
                        name.to_string(),
                        RecordedNode {
                            key: key.to_string(),
                            sha256: sha.to_string(),
                            bytes,
                        },
                    );
                }
                ["file", name, key, sha, bytes, dev, ino, len, mt, mtn, mode]
                    if is_sha256_hex(key) && is_sha256_hex(sha) && plain_name(name) =>
                {
                    let (Ok(bytes), Ok(dev), Ok(ino), Ok(len), Ok(mt), Ok(mtn), Ok(mode)) = (
                        bytes.parse(),
                        dev.parse(),
                        ino.parse(),
                        len.parse(),
                        mt.parse(),
                        mtn.parse(),
                        mode.parse(),
                    ) else {
                        continue;
                    };
                    let id = Identity {
                        dev,
                        ino,
                        len,
                        mtime: mt,
                        mtime_nsec: mtn,
                        mode,
                    };
                    // A file last written in the tick of the record's stamp could be written
                    // again without its time changing ([`record`] waits for the tick to pass).
                    let same = listed(name).is_some_and(|d| d == *sha)
                        && bytes == len
                        && (id.mtime, id.mtime_nsec) < written
                        && Identity::of(&out.join(name)) == Some(id);
                    if same {
                        e.files.insert(
                            name.to_string(),
                            Recorded {
                                key: key.to_string(),
                                sha256: sha.to_string(),
                                bytes,
                                id,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        e
    }

    /// Whether every one of `names` is there unchanged (a node whose files are not all there
    /// is made again, and its key not worth computing first).
    pub fn has_all(&self, node: &str, names: &[String]) -> bool {
        self.nodes.contains_key(node) && names.iter().all(|n| self.files.contains_key(n))
    }

    /// Links the files of `node` (`names` with their kinds, in the build's order) from the
    /// output directory into `dir` when every one was made under this key (the node image
    /// `key`) and is still as recorded. The raw image `<node>.img`, when one of them, replaces
    /// the one in `dir` (the node image just made, not needed then). `None`: nothing was
    /// changed in `dir` and the node is to be made.
    pub fn take(
        &self,
        node: &str,
        key: &str,
        names: &[(String, String)],
        dir: &Path,
    ) -> Option<Taken> {
        let n = self.nodes.get(node).filter(|n| n.key == key)?;
        let wanted: Vec<(&String, &Recorded)> = names
            .iter()
            .map(|(name, kind)| {
                let r = self.files.get(name)?;
                (r.key == file_key(key, kind)).then_some((name, r))
            })
            .collect::<Option<_>>()?;
        // Each one linked under a temporary name and checked to be the inode recorded, then
        // all renamed into place: a failure on the way leaves `dir` as it was.
        let mut linked: Vec<(PathBuf, PathBuf)> = Vec::new();
        let undo = |linked: &[(PathBuf, PathBuf)]| {
            for (tmp, _) in linked {
                let _ = fs::remove_file(tmp);
            }
        };
        for (name, r) in &wanted {
            let tmp = dir.join(format!(".{name}.earlier"));
            let ok = fs::hard_link(self.out.join(name), &tmp).is_ok();
            if ok {
                linked.push((tmp.clone(), dir.join(name)));
            }
            if !ok || Identity::of(&tmp) != Some(r.id) {
                undo(&linked);
                return None;
            }
        }
        for (tmp, to) in &linked {
            if fs::rename(tmp, to).is_err() {
                // Renames within one directory do not fail but for a full disk of inodes
                // or the like; what was renamed is in `dir` and the caller's node fails.
                undo(&linked);
                return None;
            }
        }
        Some(Taken {
            files: wanted
                .iter()
                .map(|(name, r)| FileEntry {
                    name: name.to_string(),
                    bytes: r.bytes,
                    sha256: r.sha256.clone(),
                })
                .collect(),
            raw_sha256: n.sha256.clone(),
            raw_bytes: n.bytes,
        })
    }

    /// The record's lines for `node`, a node of the spec this build did not make (`--node`)
    /// whose files stay: carried into the new record while they are as recorded.
    fn kept_lines(&self, node: &str, names: &[String], text: &mut String) {
        if let Some(n) = self.nodes.get(node) {
            text.push_str(&format!("node {node} {} {} {}\n", n.key, n.sha256, n.bytes));
            for name in names {
                if let Some(r) = self.files.get(name) {
                    push_file(text, name, &r.key, &r.sha256, r.bytes, r.id);
                }
            }
        }
    }
}

fn push_file(text: &mut String, name: &str, key: &str, sha: &str, bytes: u64, id: Identity) {
    text.push_str(&format!(
        "file {name} {key} {sha} {bytes} {} {} {} {} {} {}\n",
        id.dev, id.ino, id.len, id.mtime, id.mtime_nsec, id.mode
    ));
}

/// A file name the record may name: one plain name in the output directory.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

/// The record, read only when small (a damaged or planted one is ignored, never followed).
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a file"));
    }
    let mut text = String::new();
    f.take(16 << 20).read_to_string(&mut text)?;
    Ok(text)
}

/// A time of the output directory's filesystem later than `newest` (a file's time there): a
/// file made in it, written to until its time moves past `newest` (a tick of the clock, a few
/// milliseconds), and removed. `None` when that cannot be done or the clock does not move.
fn stamp_after(out: &Path, newest: (i64, i64)) -> Option<(i64, i64)> {
    use std::io::Write;
    let mut probe = tempfile::Builder::new()
        .prefix(".piforge-tick.")
        .suffix(".piforge-tmp")
        .tempfile_in(out)
        .ok()?;
    for _ in 0..100 {
        let m = probe.as_file().metadata().ok()?;
        let t = (m.mtime(), m.mtime_nsec());
        if t > newest {
            return Some(t);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        probe.write_all(b".").ok()?;
    }
    None
}

/// Writes the record of the output directory `out` into `cache` once the build is in place:
/// the files of `made` as they lie there now, and those of `kept` nodes (name and file names)
/// as the earlier record had them. Not writing it is not an error: the next build makes every
/// node.
///
/// File times come from a clock that ticks every few milliseconds: a file written again in
/// the tick of its last write keeps its time. So the record carries a stamp, a time of the
/// directory's filesystem in a later tick than every file it lists ([`stamp_after`]), and
/// [`Earlier::read`] trusts only files older than the stamp: any write after the record
/// changes a file's time.
pub fn record(
    out: &Path,
    cache: &Path,
    made: &[Made],
    earlier: &Earlier,
    kept: &[(String, Vec<String>)],
) {
    let Some(path) = record_path(cache, out) else {
        return;
    };
    let mut text = String::new();
    let mut newest = (i64::MIN, i64::MIN);
    for m in made {
        text.push_str(&format!(
            "node {} {} {} {}\n",
            m.node, m.key, m.raw_sha256, m.raw_bytes
        ));
        for (f, kind) in &m.files {
            if let Some(id) = Identity::of(&out.join(&f.name)) {
                newest = newest.max((id.mtime, id.mtime_nsec));
                let key = file_key(&m.key, kind);
                push_file(&mut text, &f.name, &key, &f.sha256, f.bytes, id);
            }
        }
    }
    for (node, names) in kept {
        for name in names {
            if let Some(r) = earlier.files.get(name) {
                newest = newest.max((r.id.mtime, r.id.mtime_nsec));
            }
        }
        earlier.kept_lines(node, names, &mut text);
    }
    let Some((s, ns)) = stamp_after(out, newest) else {
        return;
    };
    let head = format!("{HEADER}\nstamp {s} {ns}\n");
    crate::output::store_newest(&path, &[head.as_bytes(), text.as_bytes()], KEEP);
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn entry(name: &str, data: &[u8]) -> FileEntry {
        FileEntry {
            name: name.to_string(),
            bytes: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }
    }

    /// An output directory `out` and a cache beside it.
    struct Dirs {
        _tmp: tempfile::TempDir,
        out: PathBuf,
        cache: PathBuf,
    }

    /// An output directory with pi-1's image and map, recorded in the cache; and their
    /// entries.
    fn built() -> (Dirs, Vec<FileEntry>) {
        let tmp = tempfile::tempdir().unwrap();
        let (out, cache) = (tmp.path().join("out"), tmp.path().join("cache"));
        fs::create_dir(&out).unwrap();
        fs::write(out.join("pi-1.img"), b"image bytes").unwrap();
        fs::write(out.join("pi-1.img.bmap"), b"map").unwrap();
        let files = vec![
            entry("pi-1.img", b"image bytes"),
            entry("pi-1.img.bmap", b"map"),
        ];
        let made = Made {
            node: "pi-1".into(),
            key: K.into(),
            raw_sha256: files[0].sha256.clone(),
            raw_bytes: 11,
            files: vec![
                (files[0].clone(), "img".into()),
                (files[1].clone(), "bmap".into()),
            ],
        };
        record(&out, &cache, &[made], &Earlier::default(), &[]);
        let d = Dirs {
            _tmp: tmp,
            out,
            cache,
        };
        (d, files)
    }

    fn listed(files: &[FileEntry]) -> impl Fn(&str) -> Option<String> + '_ {
        move |n| files.iter().find(|f| f.name == n).map(|f| f.sha256.clone())
    }

    fn names() -> Vec<(String, String)> {
        vec![
            ("pi-1.img".into(), "img".into()),
            ("pi-1.img.bmap".into(), "bmap".into()),
        ]
    }

    fn the_record(d: &Dirs) -> PathBuf {
        record_path(&d.cache, &d.out).unwrap()
    }

    #[test]
    fn unchanged_files_are_linked_under_the_same_key_only() {
        let (d, files) = built();
        // The record is in the cache; the output directory holds only what it held.
        assert!(the_record(&d).is_file());
        assert_eq!(fs::read_dir(&d.out).unwrap().count(), 2);
        let stage = d.out.join("stage");
        fs::create_dir(&stage).unwrap();
        fs::write(stage.join("pi-1.img"), b"made again").unwrap();
        let e = Earlier::read(&d.out, &d.cache, listed(&files));
        assert!(e.has_all("pi-1", &["pi-1.img".into(), "pi-1.img.bmap".into()]));
        assert!(!e.has_all("pi-2", &["pi-1.img".into()]));
        // Another key, another kind: nothing taken, the staging directory untouched.
        assert!(e.take("pi-1", K2, &names(), &stage).is_none());
        let wrong_kind = vec![("pi-1.img".to_string(), "xz-5".to_string())];
        assert!(e.take("pi-1", K, &wrong_kind, &stage).is_none());
        assert_eq!(fs::read(stage.join("pi-1.img")).unwrap(), b"made again");
        assert_eq!(fs::read_dir(&stage).unwrap().count(), 1);
        let t = e.take("pi-1", K, &names(), &stage).unwrap();
        assert_eq!(t.files, files);
        assert_eq!(
            (t.raw_sha256.as_str(), t.raw_bytes),
            (&*files[0].sha256, 11)
        );
        assert_eq!(fs::read(stage.join("pi-1.img")).unwrap(), b"image bytes");
        let (a, b) = (
            fs::metadata(stage.join("pi-1.img")).unwrap(),
            fs::metadata(d.out.join("pi-1.img")).unwrap(),
        );
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "a hard link");
        assert_eq!(
            fs::read_dir(&stage).unwrap().count(),
            2,
            "no temporary left"
        );
        // Another cache, another directory: no record.
        assert!(Earlier::read(&d.out, &d.out, listed(&files))
            .files
            .is_empty());
        assert!(Earlier::read(&stage, &d.cache, listed(&files))
            .files
            .is_empty());
    }

    #[test]
    fn a_file_written_to_touched_replaced_or_unlisted_is_not_taken() {
        type Change = fn(&Path);
        let changes: [(&str, Change); 5] = [
            ("written", |p| {
                let f = fs::OpenOptions::new().write(true).open(p).unwrap();
                std::os::unix::fs::FileExt::write_at(&f, b"X", 0).unwrap();
            }),
            ("touched", |p| {
                let f = fs::File::options().write(true).open(p).unwrap();
                f.set_modified(std::time::UNIX_EPOCH).unwrap();
            }),
            ("replaced", |p| {
                fs::remove_file(p).unwrap();
                fs::write(p, b"image bytes").unwrap();
            }),
            ("a link", |p| {
                let real = p.with_extension("real");
                fs::rename(p, &real).unwrap();
                std::os::unix::fs::symlink(&real, p).unwrap();
            }),
            ("chmod", |p| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
            }),
        ];
        for (what, change) in changes {
            let (d, files) = built();
            change(&d.out.join("pi-1.img"));
            let e = Earlier::read(&d.out, &d.cache, listed(&files));
            assert!(!e.has_all("pi-1", &["pi-1.img".into()]), "{what}");
            assert!(e.take("pi-1", K, &names(), &d.out).is_none(), "{what}");
        }
        // Listed with another digest by the manifest (or not at all).
        let (d, _) = built();
        let e = Earlier::read(&d.out, &d.cache, |_| Some(K2.to_string()));
        assert!(e.take("pi-1", K, &names(), &d.out).is_none());
        // A damaged record: an empty one.
        for bad in [
            "piforge outputs v9\n",
            "piforge outputs v1\nnode pi-1 x y z\nfile\n",
            "piforge outputs v1\nstamp x 1\n",
        ] {
            let (d, files) = built();
            let good = fs::read_to_string(the_record(&d)).unwrap();
            let body = good.lines().skip(2).collect::<Vec<_>>().join("\n");
            fs::write(the_record(&d), format!("{bad}{body}\n")).unwrap();
            let e = Earlier::read(&d.out, &d.cache, listed(&files));
            assert!(e.files.is_empty() && e.nodes.is_empty(), "{bad}");
        }
        // A stamp no later than the files (a write in their tick would not show): they are
        // not trusted.
        let (d, files) = built();
        let good = fs::read_to_string(the_record(&d)).unwrap();
        let m = fs::metadata(d.out.join("pi-1.img")).unwrap();
        let mut lines: Vec<String> = good.lines().map(String::from).collect();
        lines[1] = format!("stamp {} {}", m.mtime(), m.mtime_nsec());
        fs::write(the_record(&d), lines.join("\n") + "\n").unwrap();
        let e = Earlier::read(&d.out, &d.cache, listed(&files));
        assert!(!e.files.contains_key("pi-1.img"));
        // A record that is a link: not followed.
        let (d, files) = built();
        let real = d.cache.join("record-elsewhere");
        fs::rename(the_record(&d), &real).unwrap();
        std::os::unix::fs::symlink(&real, the_record(&d)).unwrap();
        assert!(Earlier::read(&d.out, &d.cache, listed(&files))
            .files
            .is_empty());
    }

    #[test]
    fn kept_nodes_stay_in_the_record() {
        let (d, files) = built();
        let e = Earlier::read(&d.out, &d.cache, listed(&files));
        assert_eq!(e.files.len(), 2);
        record(
            &d.out,
            &d.cache,
            &[],
            &e,
            &[(
                "pi-1".into(),
                vec!["pi-1.img".into(), "pi-1.img.bmap".into()],
            )],
        );
        let again = Earlier::read(&d.out, &d.cache, listed(&files));
        assert_eq!(again.files, e.files);
        assert_eq!(again.nodes, e.nodes);
    }
}
