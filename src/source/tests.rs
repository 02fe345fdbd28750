//! End-to-end tests of `open_image`, with inputs made by the real `xz`, `zstd`, `gzip` and `zip`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::*;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An image-like sample: text-ish runs, pseudo-random runs and zeros, `mib` MiB long.
fn sample(mib: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(mib << 20);
    let mut i = 0usize;
    while data.len() < mib << 20 {
        match i % 4 {
            0 => (0..2048).for_each(|n| {
                data.extend_from_slice(format!("line {n} of {i}: piforge\n").as_bytes())
            }),
            1 => (0..(48 << 10)).for_each(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(x as u8);
            }),
            _ => data.resize(data.len() + (64 << 10), 0),
        }
        i += 1;
    }
    data.truncate(mib << 20);
    // A partition table, as every disk image has (the cache refuses data without one): one
    // Linux partition entry and the boot signature.
    data[446 + 4] = 0x83;
    data[510] = 0x55;
    data[511] = 0xAA;
    data
}

/// Runs a shell command in `dir`, which must succeed.
fn sh(dir: &Path, cmd: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Case {
    dir: tempfile::TempDir,
    cache: PathBuf,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        fs::create_dir(dir.path().join("in")).unwrap();
        Case { dir, cache }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("in").join(name)
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        path
    }

    fn sh(&self, cmd: &str) {
        sh(&self.dir.path().join("in"), cmd)
    }

    fn opts(&self) -> OpenOptions {
        OpenOptions {
            cache_dir: Some(self.cache.clone()),
            ..Default::default()
        }
    }

    fn open(&self, name: &str) -> Result<SourceImage, SourceError> {
        open_image(&self.path(name), &self.opts())
    }

    /// Every file in the cache's image directory, temporary ones included.
    fn cached_files(&self) -> Vec<String> {
        match fs::read_dir(self.cache.join("images")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn assert_decodes_to(&self, name: &str, data: &[u8], format: Format) -> SourceImage {
        let img = self.open(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.format, format);
        assert_eq!(img.size, data.len() as u64);
        assert_eq!(
            img.input_sha256,
            Some(sha256_file(self.path(name)).unwrap())
        );
        assert_eq!(
            sha256_file(&img.path).unwrap(),
            sha(data),
            "{name} decodes to other bytes"
        );
        assert!(!img.from_cache);
        img
    }

    fn assert_fails(&self, name: &str, needle: &str) -> String {
        let msg = match self.open(name) {
            Ok(img) => panic!("{name} opened as {img:?}"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(needle), "{msg:?} does not say {needle:?}");
        assert!(
            msg.contains(&self.path(name).display().to_string()),
            "{msg:?} does not name the file"
        );
        let key = sha256_file(self.path(name))
            .map(|s| format!("{s}.img"))
            .unwrap_or_default();
        let left: Vec<String> = self
            .cached_files()
            .into_iter()
            .filter(|f| f.starts_with('.') || *f == key)
            .collect();
        assert_eq!(left, Vec::<String>::new(), "{name} left files in the cache");
        msg
    }
}

/// The number of blocks in an xz file, as `xz --robot -l` counts them.
fn xz_blocks(path: &Path) -> usize {
    let out = Command::new("xz")
        .args(["--robot", "-l"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let totals = text.lines().find(|l| l.starts_with("totals")).unwrap();
    totals.split('\t').nth(2).unwrap().parse().unwrap()
}

#[test]
fn raw_is_used_in_place() {
    let c = Case::new();
    let data = sample(1, 1);
    let input = c.write("disk.img", &data);
    let img = c.open("disk.img").unwrap();
    assert_eq!(img.path, input);
    assert_eq!(
        (img.format, img.size, img.verified, img.from_cache),
        (Format::Raw, data.len() as u64, false, false)
    );
    assert_eq!(img.input_sha256, Some(sha(&data)));
    assert_eq!(fs::read(&input).unwrap(), data);
    assert_eq!(c.cached_files(), Vec::<String>::new());
}

#[test]
fn xz_multi_block_round_trips() {
    let c = Case::new();
    let data = sample(6, 2);
    c.write("os.img", &data);
    c.sh("xz -T2 --block-size=1MiB -c os.img > os.img.xz");
    assert!(xz_blocks(&c.path("os.img.xz")) >= 6);
    c.assert_decodes_to("os.img.xz", &data, Format::Xz);
}

#[test]
fn xz_concatenated_streams_decode_completely() {
    let c = Case::new();
    let (a, b) = (sample(1, 3), sample(2, 4));
    c.write("a", &a);
    c.write("b", &b);
    let ab = [a.clone(), b.clone()].concat();
    c.sh("xz -c a > two.xz && xz -T2 --block-size=1MiB -c b >> two.xz");
    c.assert_decodes_to("two.xz", &ab, Format::Xz);
    // Stream padding (null bytes, a multiple of 4) may follow any stream.
    c.sh("xz -c a > padded.xz && head -c 8 /dev/zero >> padded.xz && xz -c b >> padded.xz && head -c 4 /dev/zero >> padded.xz");
    c.sh("xz -t padded.xz");
    c.assert_decodes_to("padded.xz", &ab, Format::Xz);
    c.sh("xz -c a > badpad.xz && head -c 3 /dev/zero >> badpad.xz && xz -c b >> badpad.xz");
    c.assert_fails("badpad.xz", "multiple of 4");
    c.sh("xz -c a > garbage.xz && echo garbage >> garbage.xz");
    c.assert_fails("garbage.xz", "is not a valid xz stream");
}

#[test]
fn zstd_frames_round_trip() {
    let c = Case::new();
    let (a, b) = (sample(1, 5), sample(2, 6));
    c.write("a", &a);
    c.write("b", &b);
    c.sh("zstd -q -c a > two.zst && zstd -q -19 -c b >> two.zst");
    c.assert_decodes_to("two.zst", &[a, b].concat(), Format::Zstd);
    c.sh("zstd -q --long=30 -c a > long.zst");
    c.assert_decodes_to("long.zst", &sample(1, 5), Format::Zstd);
}

#[test]
fn gzip_members_round_trip() {
    let c = Case::new();
    let (a, b) = (sample(1, 7), sample(2, 8));
    c.write("a", &a);
    c.write("b", &b);
    c.sh("gzip -c a > two.gz && gzip -1 -c b >> two.gz");
    c.assert_decodes_to("two.gz", &[a, b].concat(), Format::Gzip);
}

#[test]
fn zip_stored_or_deflated_round_trips() {
    let c = Case::new();
    let data = sample(3, 9);
    c.write("dir/os.img", &data);
    c.sh("zip -q -0 stored.zip dir/os.img && zip -q -9 deflated.zip dir dir/os.img");
    let img = c.assert_decodes_to("stored.zip", &data, Format::Zip);
    assert_eq!(img.format.to_string(), "zip");
    c.assert_decodes_to("deflated.zip", &data, Format::Zip);
}

#[test]
fn zip_needs_exactly_one_image() {
    let c = Case::new();
    c.write("dir/a.img", &sample(1, 10));
    c.write("dir/b.img", &sample(1, 11));
    c.sh("zip -q two.zip dir dir/a.img dir/b.img && zip -q empty.zip dir");
    let msg = c.assert_fails("two.zip", "holds 2 files");
    assert!(
        msg.contains("dir/a.img") && msg.contains("dir/b.img"),
        "{msg}"
    );
    c.assert_fails("empty.zip", "holds no file");
    let zip = fs::read(c.path("two.zip")).unwrap();
    c.write("cut.zip", &zip[..zip.len() / 2]);
    c.assert_fails("cut.zip", "is not a valid zip archive");
}

#[test]
fn truncated_inputs_are_errors_and_leave_nothing_behind() {
    let c = Case::new();
    let data = sample(4, 12);
    c.write("os.img", &data);
    c.sh("xz -T2 --block-size=1MiB -k os.img && zstd -q -k os.img && gzip -k os.img && zip -q -0 os.zip os.img");
    for (name, noun) in [
        ("os.img.xz", "xz stream"),
        ("os.img.zst", "zstd stream"),
        ("os.img.gz", "gzip stream"),
    ] {
        let whole = fs::read(c.path(name)).unwrap();
        for cut in [whole.len() / 2, whole.len() - 13, whole.len() - 1] {
            let short = format!("short-{cut}-{name}");
            c.write(&short, &whole[..cut]);
            let msg = c.assert_fails(&short, &format!("is not a valid {noun}"));
            assert!(msg.ends_with("(truncated or corrupt)"), "{msg}");
        }
    }
}

#[test]
fn corrupt_xz_is_an_error() {
    let c = Case::new();
    let data = sample(4, 13);
    c.write("os.img", &data);
    c.sh("xz -T2 --block-size=1MiB -k os.img");
    let mut xz = fs::read(c.path("os.img.xz")).unwrap();
    let mid = xz.len() / 2;
    xz[mid] ^= 0x55;
    c.write("bad.img.xz", &xz);
    c.assert_fails("bad.img.xz", "is not a valid xz stream");
}

#[test]
fn decoded_size_must_be_whole_sectors() {
    let c = Case::new();
    c.sh("printf abc | xz > odd.xz && xz -c < /dev/null > empty.xz && : > empty.img && printf abc > odd.img");
    let msg = c.assert_fails(
        "odd.xz",
        "decompressed image is 3 bytes, not a whole number of 512-byte sectors",
    );
    assert!(msg.starts_with(&c.path("odd.xz").display().to_string()));
    c.assert_fails("empty.xz", "decompresses to an empty image");
    c.assert_fails("empty.img", "is an empty file");
    c.assert_fails(
        "odd.img",
        "is 3 bytes, not a whole number of 512-byte sectors",
    );
}

#[test]
fn unreadable_inputs_are_named() {
    let c = Case::new();
    c.write("x", b"");
    let msg = c.assert_fails("missing.img.xz", "cannot read");
    assert!(msg.contains("No such file or directory"), "{msg}");
    c.sh("mkdir d.img");
    c.assert_fails("d.img", "is not a regular file");
}

#[test]
fn sibling_sha256_file_is_checked() {
    let c = Case::new();
    let data = sample(1, 14);
    c.write("os.img", &data);
    c.sh("xz -k os.img && sha256sum os.img.xz > os.img.xz.sha256");
    let img = c.open("os.img.xz").unwrap();
    assert!(img.verified);

    // Bare hex works too; a wrong digest is an error naming both digests, before any decoding.
    let actual = img.input_sha256.clone().unwrap();
    let wrong = sha(b"something else");
    fs::remove_dir_all(&c.cache).unwrap();
    c.write("os.img.xz.sha256", format!("{wrong}\n").as_bytes());
    let msg = c.assert_fails("os.img.xz", "os.img.xz.sha256 expects");
    assert!(msg.contains(&wrong) && msg.contains(&actual), "{msg}");
    c.write("os.img.xz.sha256", actual.to_uppercase().as_bytes());
    assert!(c.open("os.img.xz").unwrap().verified);
}

#[test]
fn sha256sums_is_checked() {
    let c = Case::new();
    c.write("os.img", &sample(1, 15));
    c.write("other.img", &sample(1, 16));
    c.sh("xz -k os.img && xz -k other.img && sha256sum -b other.img.xz os.img.xz > SHA256SUMS");
    assert!(fs::read_to_string(c.path("SHA256SUMS"))
        .unwrap()
        .contains(" *os.img.xz"));
    assert!(c.open("os.img.xz").unwrap().verified);

    c.sh("sha256sum other.img.xz | sed 's/other/os/' > SHA256SUMS");
    fs::remove_dir_all(&c.cache).unwrap();
    let msg = c.assert_fails("os.img.xz", "SHA256SUMS expects");
    assert!(msg.contains("has SHA-256"), "{msg}");

    // A listing that does not name the input: nothing to verify against.
    c.sh("sha256sum other.img.xz > SHA256SUMS");
    assert!(!c.open("os.img.xz").unwrap().verified);
}

#[test]
fn sha256_option_wins_and_is_validated() {
    let c = Case::new();
    let data = sample(1, 17);
    let input = c.write("os.img", &data);
    c.sh(&format!("echo {} > os.img.sha256", sha(b"stale")));
    let opts = |sha256: &str| OpenOptions {
        sha256: Some(sha256.into()),
        ..c.opts()
    };
    assert!(open_image(&input, &opts(&sha(&data))).unwrap().verified);
    let msg = open_image(&input, &opts(&sha(b"x")))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("--sha256 expects") && msg.contains(&sha(b"x")),
        "{msg}"
    );
    let msg = open_image(&input, &opts("12ab")).unwrap_err().to_string();
    assert!(msg.contains("not a SHA-256 digest"), "{msg}");
}

#[test]
fn second_open_uses_the_cache() {
    let c = Case::new();
    let data = sample(2, 18);
    c.write("os.img", &data);
    c.sh("zstd -q os.img");
    let first = c.assert_decodes_to("os.img.zst", &data, Format::Zstd);
    assert_eq!(
        first.path,
        c.cache
            .join("images")
            .join(format!("{}.img", first.input_sha256.clone().unwrap()))
    );
    let meta = fs::metadata(&first.path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    std::thread::sleep(std::time::Duration::from_millis(20));

    let second = c.open("os.img.zst").unwrap();
    assert!(second.from_cache);
    assert_eq!(
        SourceImage {
            from_cache: false,
            ..second.clone()
        },
        first
    );
    assert_eq!(
        fs::metadata(&second.path).unwrap().modified().unwrap(),
        meta.modified().unwrap()
    );
    assert_eq!(c.cached_files().len(), 1);
}

#[test]
fn cached_image_is_sparse() {
    let c = Case::new();
    let mut data = sample(2, 19);
    data.resize(data.len() + (32 << 20), 0);
    data.extend_from_slice(&sample(1, 20));
    c.write("os.img", &data);
    c.sh("xz -0 -k os.img");
    let img = c.assert_decodes_to("os.img.xz", &data, Format::Xz);
    let allocated = fs::metadata(&img.path).unwrap().blocks() * 512;
    assert!(
        allocated < img.size - (30 << 20),
        "{allocated} of {} bytes allocated",
        img.size
    );
}

#[test]
fn progress_reports_both_passes() {
    let c = Case::new();
    let input = c.write("os.img", &sample(2, 21));
    c.sh("gzip os.img");
    let input = input.with_extension("img.gz");
    let total = fs::metadata(&input).unwrap().len();
    let rec = Arc::new(crate::progress::tests::Recorder::default());
    let opts = OpenOptions {
        progress: Some(rec.clone()),
        ..c.opts()
    };
    open_image(&input, &opts).unwrap();
    let seen = rec.calls();
    for phase in ["checksum", "decompress"] {
        let begin = seen
            .iter()
            .find(|p| p.0 == "begin" && p.1 == phase)
            .unwrap();
        let last = seen
            .iter()
            .rev()
            .find(|p| p.0 == "advance" && p.1 == phase)
            .unwrap();
        assert_eq!((last.2, begin.2), (total, total), "{phase:?}");
        assert!(
            seen.iter().any(|p| p.0 == "finish" && p.1 == phase),
            "{phase:?}"
        );
    }
}

#[test]
fn decoder_works_alone() {
    let c = Case::new();
    let (a, b) = (sample(1, 22), sample(1, 23));
    c.write("a", &a);
    c.write("b", &b);
    c.sh("xz -c a > ab.xz && xz -c b >> ab.xz");
    let xz = fs::read(c.path("ab.xz")).unwrap();
    assert_eq!(detect(&xz), Format::Xz);
    let mut out = Vec::new();
    decoder(Format::Xz, std::io::Cursor::new(xz))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(sha(&out), sha(&[a, b].concat()));
}

/// Issue 12 item 10: a stream that is no disk image stops at its first MiB and leaves
/// nothing in the cache (the old code wrote all of it and kept it, so every later run failed
/// on the cached garbage).
#[test]
fn data_without_a_partition_table_is_refused_and_not_cached() {
    let c = Case::new();
    c.sh("head -c 64M /dev/zero | xz -0 > zeros.img.xz");
    let msg = c.assert_fails(
        "zeros.img.xz",
        "decompresses to data without a partition table",
    );
    assert!(c.cached_files().is_empty(), "{msg}: {:?}", c.cached_files());
    // Text that is no image, shorter than a chunk: the same.
    c.sh("seq 1 100000 | head -c 51200 | gzip > text.img.gz");
    c.assert_fails("text.img.gz", "without a partition table");
    assert!(c.cached_files().is_empty());
}

/// Issue 12 item 10: the decompressed size is bounded (configurable), and nothing is kept.
#[test]
fn decompressed_size_is_capped() {
    let c = Case::new();
    let data = sample(3, 31);
    c.write("os.img", &data);
    c.sh("xz -0 os.img");
    let opts = OpenOptions {
        max_image_size: Some(2 << 20),
        ..c.opts()
    };
    let msg = open_image(&c.path("os.img.xz"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(
            "decompresses to more than 2097152 bytes, the most piforge accepts (--max-image-size)"
        ),
        "{msg}"
    );
    assert!(c.cached_files().is_empty(), "{:?}", c.cached_files());
    // At the bound exactly, or by default, it opens.
    let opts = OpenOptions {
        max_image_size: Some(3 << 20),
        ..c.opts()
    };
    assert_eq!(
        open_image(&c.path("os.img.xz"), &opts).unwrap().size,
        3 << 20
    );
}

/// A cache entry that fails validation (written by an older piforge, or by someone else) is
/// replaced by a fresh decode, never used.
#[test]
fn an_invalid_cache_entry_is_decoded_again() {
    let c = Case::new();
    let data = sample(1, 32);
    c.write("os.img", &data);
    c.sh("gzip os.img");
    let input = c.path("os.img.gz");
    let dest = cache::image_path(&c.cache, &sha256_file(&input).unwrap());
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(&dest, vec![0u8; 1 << 20]).unwrap();
    let img = c.assert_decodes_to("os.img.gz", &data, Format::Gzip);
    assert_eq!(img.path, dest);
    assert!(c.open("os.img.gz").unwrap().from_cache);
}

/// An input not remembered (a copy: another inode) is hashed while it is decoded; once its
/// digest is known to be cached, the decoding stops and the cached image is used, and no
/// temporary file is left. A wrong expected digest stops it the same way.
#[test]
fn a_copy_of_the_input_finds_the_cached_image() {
    let c = Case::new();
    let data = sample(8, 31);
    c.write("os.img", &data);
    c.sh("xz -k -T0 -0 os.img && cp os.img.xz copy.img.xz");
    let first = c.assert_decodes_to("os.img.xz", &data, Format::Xz);
    let second = c.open("copy.img.xz").unwrap();
    assert!(second.from_cache);
    assert_eq!(second.path, first.path);
    assert_eq!(second.input_sha256, first.input_sha256);
    assert_eq!(c.cached_files().len(), 1, "{:?}", c.cached_files());

    c.sh("cp os.img.xz third.img.xz");
    c.write("third.img.xz.sha256", sha(b"another input").as_bytes());
    fs::remove_dir_all(&c.cache).unwrap();
    c.assert_fails("third.img.xz", "third.img.xz.sha256 expects");
}
