//! `piforge build --verify dist/SHA256SUMS`: rebuild into a temporary directory and compare.
//!
//! Every file the given `SHA256SUMS` lists must come out of the rebuild with the same digest,
//! and each listed file present beside it must have that digest too.
//! For a file that differs and is still beside that `SHA256SUMS`, the first differing byte is
//! found and explained: which partition of a node image it falls in, and in that partition's
//! filesystem which file (ext4: the block's inode and its path, as `debugfs icheck` and
//! `ncheck` find them; FAT: the file whose cluster chain holds it). A compressed image
//! (`.img.xz`, `.img.zst`) that differs is decompressed beside the rebuilt one, and the first
//! byte where the images inside differ is explained the same way.
//!
//! What the command line leaves unsaid is taken from the directory checked ([`recorded`]):
//! the formats its `manifest.json` lists, the epoch it was built at, and the URL its
//! `os_list.json` names the files under, so `build --verify dist/SHA256SUMS` alone rebuilds
//! what was built.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::formats::Format;
use super::{io_error, staging, BuildError, BuildOptions};
use crate::disk::{Filesystem, Image};

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// Files that matched.
    pub same: Vec<String>,
    /// One sentence per file that did not.
    pub differences: Vec<String>,
}

/// `name -> digest` of a `sha256sum` listing (at most 16 MiB).
fn read_sums(path: &Path) -> Result<BTreeMap<String, String>, BuildError> {
    let mut text = String::new();
    File::open(path)
        .map_err(io_error(path))?
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(io_error(path))?;
    let mut out = BTreeMap::new();
    for l in crate::digest::sum_lines(&text) {
        match (l.file, crate::digest::parse_sha256(l.digest)) {
            (Some(f), Some(d)) if !f.contains('/') => {
                out.insert(f.to_string(), d);
            }
            _ => {
                return Err(BuildError::State {
                    path: path.display().to_string(),
                    msg: "is not a SHA256SUMS piforge wrote (lines of `<sha256>  <file name>`)"
                        .into(),
                })
            }
        }
    }
    Ok(out)
}

/// Rebuilds as `opts` says into a temporary directory beside `sums` and compares.
pub fn verify(
    opts: &BuildOptions,
    sums: &Path,
    progress: Option<std::sync::Arc<dyn crate::progress::Progress>>,
) -> Result<Verified, BuildError> {
    let expected = read_sums(sums)?;
    let dir = match sums.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Beside the outputs (same filesystem: reflinks), under a name the output directory's
    // check treats as piforge's own; removed when done (`scratch` dropped) and when interrupted
    // (the handler exits without dropping anything: `output::cleanup_pending` removes it).
    let scratch = crate::output::Unfinished::new();
    let tmp_dir = scratch
        .make_dir(|| {
            Ok(tempfile::Builder::new()
                .prefix(staging::VERIFY_PREFIX)
                .tempdir_in(&dir)?
                .keep())
        })
        .map_err(io_error(&dir))?;
    let mut o = opts.clone();
    o.out_dir = tmp_dir.join("dist");
    // Every digest taken of the rebuilt bytes, none remembered from an earlier build.
    o.outputs.remember = false;
    // os_list.json names the files where they are checked, not where the rebuild writes.
    if o.outputs.os_list.as_deref() == Some("") {
        let real = std::fs::canonicalize(&dir).map_err(io_error(&dir))?;
        o.outputs.os_list = Some(crate::os_list::file_uri_dir(&real));
    }
    super::build(&o, progress)?;
    let got = read_sums(&o.out_dir.join(staging::SHA256SUMS))?;
    let mut v = Verified::default();
    for (name, want) in &expected {
        match got.get(name) {
            None => v
                .differences
                .push(format!("{name}: the rebuild does not make this file")),
            Some(d) if d == want => match beside(&dir.join(name), want) {
                // The rebuild agrees with the list, but the file the list is beside does not:
                // that copy changed since (or was never what the list says).
                Some(here) => {
                    let why = explain(name, &dir.join(name), &o.out_dir.join(name));
                    let why = why.strip_prefix(&format!("{name}: ")).unwrap_or(&why);
                    v.differences.push(format!(
                        "{name}: the file beside {} is not what it lists (its SHA-256 is \
                         {here}; the rebuild's is): {why}",
                        sums.display()
                    ))
                }
                None => v.same.push(name.clone()),
            },
            Some(_) => v
                .differences
                .push(explain(name, &dir.join(name), &o.out_dir.join(name))),
        }
    }
    for name in got.keys().filter(|n| !expected.contains_key(*n)) {
        v.differences.push(format!(
            "{name}: the rebuild makes this file, which {} does not list",
            sums.display()
        ));
    }
    Ok(v)
}

/// The SHA-256 of the regular file at `path` when it is not `want`; `None` when it is, or
/// when there is no such file (a list can be checked without the files it lists).
fn beside(path: &Path, want: &str) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    match crate::source::sha256_file(path) {
        Ok(d) if d == want => None,
        Ok(d) => Some(d),
        Err(e) => Some(format!("unreadable: {e}")),
    }
}

/// One sentence on how `old` and `new` differ.
fn explain(name: &str, old: &Path, new: &Path) -> String {
    let Ok(mut a) = File::open(old) else {
        return format!(
            "{name}: the digest differs ({} is not there to compare)",
            old.display()
        );
    };
    let (la, lb) = (
        a.metadata().map_or(0, |m| m.len()),
        std::fs::metadata(new).map_or(0, |m| m.len()),
    );
    let Ok(mut b) = File::open(new) else {
        return format!("{name}: the digest differs");
    };
    match first_difference(&mut a, &mut b) {
        Ok(Some(off)) => {
            let at = if name.ends_with(".img") {
                locate(new, off)
            } else if let Some(codec) = Packed::of(name) {
                inside_compressed(codec, old, new)
            } else {
                String::new()
            };
            let sizes = if la == lb {
                String::new()
            } else {
                format!(" ({la} bytes, the rebuild {lb})")
            };
            format!("{name}: first differs at byte {off}{sizes}{at}")
        }
        Ok(None) => format!("{name}: the digest differs, the bytes now agree (changed meanwhile?)"),
        Err(e) => format!("{name}: the digest differs ({e})"),
    }
}

/// A compressed image format `explain` looks inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packed {
    Xz,
    Zst,
}

impl Packed {
    fn of(name: &str) -> Option<Packed> {
        if name.ends_with(".img.xz") {
            Some(Packed::Xz)
        } else if name.ends_with(".img.zst") {
            Some(Packed::Zst)
        } else {
            None
        }
    }

    /// A reader of what `f` decompresses to (every stream or frame).
    fn reader(self, f: File) -> std::io::Result<Box<dyn Read>> {
        let r = std::io::BufReader::with_capacity(1 << 20, f);
        Ok(match self {
            Packed::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
            Packed::Zst => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        })
    }
}

/// `; decompressed, at byte N, in partition ...`: where the images inside two compressed
/// files first differ, explained in the rebuilt image (the raw one the rebuild kept beside
/// `new`, else `new` decompressed into a sparse scratch file, removed after).
fn inside_compressed(codec: Packed, old: &Path, new: &Path) -> String {
    let open = |p: &Path| File::open(p).and_then(|f| codec.reader(f));
    let off = match (open(old), open(new)) {
        (Ok(mut a), Ok(mut b)) => first_difference(&mut a, &mut b),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let off = match off {
        Ok(Some(off)) => off,
        Ok(None) => return "; decompressed, the images inside are the same bytes".into(),
        Err(e) => return format!("; decompressing the two: {e}"),
    };
    let raw = new.with_extension("");
    let at = if raw.is_file() {
        locate(&raw, off)
    } else {
        let scratch = new.with_extension("verify-raw");
        let at = match open(new).and_then(|mut r| unpack_sparse(&mut r, &scratch)) {
            Ok(()) => locate(&scratch, off),
            Err(_) => String::new(),
        };
        let _ = std::fs::remove_file(&scratch);
        at
    };
    format!("; decompressed, at byte {off}{at}")
}

/// Writes what `r` reads into a new file at `path`, its zero blocks left as holes.
fn unpack_sparse(r: &mut impl Read, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = read_full(r, &mut buf)?;
        if n == 0 {
            break;
        }
        for (i, block) in buf[..n].chunks(4096).enumerate() {
            if block.iter().any(|&b| b != 0) {
                f.write_all_at(block, at + (i as u64) * 4096)?;
            }
        }
        at += n as u64;
    }
    f.set_len(at)
}

/// How the directory `sums` lies in was built, as far as its files say: what
/// `build --verify` rebuilds with when the command line does not say otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The formats of the node files `manifest.json` lists (`img`, `xz`, `zst`, in that
    /// order); empty without a readable manifest.
    pub formats: Vec<Format>,
    /// The epoch `manifest.json` records (`SOURCE_DATE_EPOCH` of that build).
    pub epoch: Option<i64>,
    /// The URL `os_list.json` names the files under, unless it is a `file://` one (that is
    /// the directory itself, and the rebuild names wherever it is checked).
    pub base_url: Option<String>,
}

/// What the `manifest.json` and `os_list.json` beside `sums` say (each read up to 16 MiB;
/// anything missing or unreadable is left unsaid).
pub fn recorded(sums: &Path) -> Recorded {
    let dir = match sums.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let json = |name: &str| -> Option<serde_json::Value> {
        let mut text = String::new();
        File::open(dir.join(name))
            .ok()?
            .take(16 << 20)
            .read_to_string(&mut text)
            .ok()?;
        serde_json::from_str(&text).ok()
    };
    let mut r = Recorded::default();
    if let Some(m) = json("manifest.json") {
        r.epoch = m["epoch"].as_i64();
        let names: Vec<&str> = m["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["files"].as_array().into_iter().flatten())
            .filter_map(|f| f["name"].as_str())
            .collect();
        for (format, ext) in [
            (Format::Img, ".img"),
            (Format::Xz, ".img.xz"),
            (Format::Zst, ".img.zst"),
        ] {
            if names.iter().any(|n| n.ends_with(ext)) {
                r.formats.push(format);
            }
        }
    }
    if let Some(l) = json(super::formats::OS_LIST) {
        r.base_url = l["os_list"][0]["url"]
            .as_str()
            .filter(|u| !u.starts_with("file:"))
            .and_then(|u| u.rfind('/').map(|i| u[..=i].to_string()));
    }
    r
}

/// The first offset at which the two streams differ: where a byte differs, or where the
/// shorter one ends when it is the start of the other (`None`: the same bytes).
pub fn first_difference(a: &mut impl Read, b: &mut impl Read) -> std::io::Result<Option<u64>> {
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let na = read_full(a, &mut ba)?;
        let nb = read_full(b, &mut bb)?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(at + i as u64));
        }
        if na != nb {
            return Ok(Some(at + n as u64));
        }
        if n == 0 {
            return Ok(None);
        }
        at += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `, in partition N (label, fs) at byte M: WHAT` for an offset of a disk image.
pub fn locate(image: &Path, off: u64) -> String {
    let Ok(img) = Image::open(image) else {
        return String::new();
    };
    let layout = img.layout();
    let Some(p) = layout
        .partitions
        .iter()
        .find(|p| off >= p.start_bytes && off < p.end_bytes())
    else {
        let first = layout
            .partitions
            .iter()
            .map(|p| p.start_bytes)
            .min()
            .unwrap_or(0);
        return if off < 512 {
            ", in the partition table (MBR sector: disk id, partition entries)".into()
        } else if off < first {
            ", before the first partition (partition table area)".into()
        } else {
            ", outside every partition".into()
        };
    };
    let rel = off - p.start_bytes;
    let label = p.label.clone().unwrap_or_default();
    let what = match p.filesystem {
        Filesystem::Ext4 | Filesystem::Ext3 | Filesystem::Ext2 => {
            ext4_owner(image, p.start_bytes, rel, &img)
        }
        Filesystem::Vfat => {
            let f = match File::open(image) {
                Ok(f) => f,
                Err(e) => return format!(", in partition {} ({e})", p.index),
            };
            let mut slice = crate::disk::Slice::new(&f, p.start_bytes, p.size_bytes);
            crate::fs::fat_locate(&mut slice, rel).unwrap_or_else(|e| e.to_string())
        }
        _ => "a partition piforge does not read".into(),
    };
    format!(
        ", in partition {} ({label}, {:?}) at byte {rel}: {what}",
        p.index, p.filesystem
    )
}

/// The ext4 file holding byte `rel` of the filesystem at `start` in `image`, through
/// `debugfs icheck` (block to inode) and `ncheck` (inode to path).
fn ext4_owner(image: &Path, start: u64, rel: u64, img: &Image) -> String {
    let bs = match img.root_fs() {
        Ok(fs) => u64::from(fs.info().block_size),
        Err(_) => 4096,
    };
    let block = rel / bs;
    let dev = format!("{}?offset={start}", image.display());
    let run = |cmd: String| -> Option<String> {
        let out = std::process::Command::new("debugfs")
            .args(["-R", &cmd, &dev])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let Some(icheck) = run(format!("icheck {block}")) else {
        return format!("block {block} (debugfs, which names the file, is not installed)");
    };
    // "Block\tInode number\n<block>\t<inode>" or "<block>\t<block not found>".
    let ino = icheck
        .lines()
        .skip(1)
        .find_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
    let Some(ino) = ino else {
        return format!(
            "block {block}, filesystem metadata (superblock, group descriptors, bitmaps, inode \
             table or journal) or a free block"
        );
    };
    let path = run(format!("ncheck {ino}")).and_then(|t| {
        t.lines()
            .skip(1)
            .find_map(|l| l.split_once('\t').map(|(_, p)| p.trim().to_string()))
    });
    match path {
        Some(p) => format!("block {block}, inode {ino}: {p}"),
        None => format!("block {block}, inode {ino}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_directory_records_of_its_build() {
        let d = tempfile::tempdir().unwrap();
        let sums = d.path().join("SHA256SUMS");
        assert_eq!(recorded(&sums), Recorded::default());
        std::fs::write(
            d.path().join("manifest.json"),
            r#"{"epoch": 1700000000, "nodes": [
                {"name": "a", "files": [{"name": "a.img.zst"}, {"name": "a.img.bmap"}]},
                {"name": "b", "files": [{"name": "b.img.xz"}]}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("os_list.json"),
            r#"{"os_list": [{"url": "https://example.com/c/a.img.xz"}]}"#,
        )
        .unwrap();
        let r = recorded(&sums);
        assert_eq!(r.formats, [Format::Xz, Format::Zst]);
        assert_eq!(r.epoch, Some(1700000000));
        assert_eq!(r.base_url.as_deref(), Some("https://example.com/c/"));
        // A file:// list names the directory itself: the rebuild names where it checks.
        std::fs::write(
            d.path().join("os_list.json"),
            r#"{"os_list": [{"url": "file:///srv/dist/a.img.xz"}]}"#,
        )
        .unwrap();
        assert_eq!(recorded(&sums).base_url, None);
        // Not JSON: nothing recorded, no error (the rebuild then differs, and says where).
        std::fs::write(d.path().join("manifest.json"), "{").unwrap();
        assert_eq!(recorded(&sums).formats, []);
    }

    #[test]
    fn unpacked_images_keep_their_holes() {
        let d = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 << 20];
        data[5000] = 7;
        data[(3 << 20) - 1] = 9;
        let p = d.path().join("raw");
        unpack_sparse(&mut &data[..], &p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), data);
        use std::os::unix::fs::MetadataExt;
        // Two 4 KiB blocks of data; the rest holes.
        assert!(std::fs::metadata(&p).unwrap().blocks() * 512 <= 3 * 4096);
        // Never over an existing file.
        assert!(unpack_sparse(&mut &data[..], &p).is_err());
    }

    #[test]
    fn first_difference_finds_the_byte() {
        let a = vec![1u8; 3 << 20];
        let mut b = a.clone();
        assert_eq!(first_difference(&mut &a[..], &mut &b[..]).unwrap(), None);
        b[(2 << 20) + 17] = 0;
        assert_eq!(
            first_difference(&mut &a[..], &mut &b[..]).unwrap(),
            Some((2 << 20) + 17)
        );
        // One the start of the other: they differ where the shorter ends, either way round.
        assert_eq!(
            first_difference(&mut &a[..5], &mut &b[..]).unwrap(),
            Some(5)
        );
        assert_eq!(
            first_difference(&mut &b[..], &mut &a[..5]).unwrap(),
            Some(5)
        );
        assert_eq!(first_difference(&mut &a[..0], &mut &a[..0]).unwrap(), None);
    }

    #[test]
    fn a_file_cut_short_differs_where_it_ends() {
        let d = tempfile::tempdir().unwrap();
        let (old, new) = (d.path().join("old"), d.path().join("new"));
        std::fs::write(&old, b"hello").unwrap();
        std::fs::write(&new, b"hello world").unwrap();
        assert_eq!(
            explain("SBOM", &old, &new),
            "SBOM: first differs at byte 5 (5 bytes, the rebuild 11)"
        );
        // Inside compressed files too: a longer image inside is not "the same bytes".
        let xz = |p: &Path, data: &[u8]| {
            let mut e = liblzma::write::XzEncoder::new(File::create(p).unwrap(), 1);
            std::io::Write::write_all(&mut e, data).unwrap();
            e.finish().unwrap();
        };
        let (old, new) = (d.path().join("a/n.img.xz"), d.path().join("n.img.xz"));
        std::fs::create_dir(d.path().join("a")).unwrap();
        xz(&old, &[7u8; 5000]);
        xz(&new, &[7u8; 6000]);
        let said = explain("n.img.xz", &old, &new);
        assert!(said.contains("; decompressed, at byte 5000"), "{said}");
        // The rebuilt image unpacked to explain it is gone again.
        assert!(!d.path().join("n.img.verify-raw").exists());
    }
}
