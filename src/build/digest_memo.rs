//! The digests of a node image remembered in the cache by what makes its bytes, so that
//! rebuilding a node that did not change (every CI run, the same spec built again) does not
//! hash its whole image again: 1.3 s of SHA-256 per 2 GiB on one core, the larger part of
//! such a build.
//!
//! Every layer of a build records the byte ranges it writes ([`super::edits::edit_recorded`],
//! [`crate::apply::apply_over`]): a node image is, byte for byte, the image it was made from
//! everywhere except those ranges. The upstream image is named by the input's SHA-256 (the
//! decompressed image is a function of the input's bytes; a raw input is the base itself, its
//! digest taken or remembered by its identity, [`crate::source::memo`]). So a node written
//! over the upstream image (a one-node build) has its bytes fixed by: the input's digest, the
//! image's length, and the written ranges with their bytes; its key is the SHA-256 of those
//! (the written bytes read back from the node's file: the size of the delta, a few megabytes
//! of kernel and cloud-init settings, up to the common layer's binaries) and of the block map's
//! ranges, whose checksums are remembered with the image's digest. A role image gets a key the
//! same way ([`key`] with no ranges), and the nodes made from it take that key where a one-node
//! build takes the input's digest. A layer that grows the root partition (resize2fs, in place,
//! writing where it will) has the image grown on its own first: the grown image is named by
//! the image before it, what was written into that, and the growth (the new root size, the
//! clock, resize2fs's version: [`growth`], [`grown`]), and the layers' writes are recorded
//! over it from there.
//!
//! A memo is a file `<cache>/nodes/<key>` naming the image's SHA-256, its size and the range
//! checksums; one that cannot be read, does not parse or does not fit the image (size, number
//! of ranges) is ignored and the image hashed; one that cannot be written is not an error.
//! `build --verify` never uses them: it must hash what it rebuilt. The memo is no more trusted
//! than the cache itself: whoever can write the cache can already replace the decompressed
//! images in it, which every node is made from. The oldest memos beyond [`KEEP`] are removed.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::digest::is_sha256_hex;
use crate::sparse::read_at;

/// How many memos the cache keeps (each a few kilobytes: one line per block-map range).
pub const KEEP: usize = 256;

/// What is remembered of a node image: its SHA-256 and size, and its block map's range
/// checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub bytes: u64,
    pub sums: Vec<[u8; 32]>,
}

/// The key of a node image of `len` bytes made from the base whose input has SHA-256
/// `base_sha256`, with `written` (sorted, disjoint `[start, end)` ranges) read from `top`, and
/// whose block map has `ranges`.
pub fn key(
    base_sha256: &str,
    len: u64,
    top: &File,
    written: &[(u64, u64)],
    ranges: &[(u64, u64)],
) -> io::Result<String> {
    let mut h = Sha256::new();
    h.update(b"piforge node image over its base, v1\0");
    h.update(base_sha256.as_bytes());
    h.update(len.to_le_bytes());
    h.update((written.len() as u64).to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    for &(start, end) in written {
        h.update(start.to_le_bytes());
        h.update(end.to_le_bytes());
        let mut at = start;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            read_at(top, &mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
        }
    }
    h.update((ranges.len() as u64).to_le_bytes());
    for &(s, e) in ranges {
        h.update(s.to_le_bytes());
        h.update(e.to_le_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// A growth of the root partition (`resize2fs`, in place: no range of it is recorded) of an
/// image into which `delta` was written since its base was named ([`key`] with no base, taken
/// before the growth), to a root partition of `root_bytes`, the clock at `epoch`, by
/// `resize2fs` `tool`: the grown image is named by the image before it and this ([`grown`]).
/// The growth is a function of those (the same growth, the same bytes: `disk::grow`'s test,
/// and the split growth's in `apply`).
pub fn growth(delta: &str, root_bytes: u64, epoch: i64, tool: &str) -> String {
    crate::digest::sha256_hex_of(&[
        b"piforge root growth v1\0",
        delta.as_bytes(),
        &root_bytes.to_le_bytes(),
        &epoch.to_le_bytes(),
        tool.as_bytes(),
    ])
}

/// What names the image grown ([`growth`]) from the image named `before`.
pub fn grown(before: &str, growth: &str) -> String {
    crate::digest::sha256_hex_of(&[
        b"piforge grown image v1\0",
        before.as_bytes(),
        b"\0",
        growth.as_bytes(),
    ])
}

fn memo_path(cache: &Path, key: &str) -> PathBuf {
    cache.join("nodes").join(key)
}

/// The text of a memo.
fn render(d: &Digests) -> String {
    let mut t = format!("v1 {} {} {}\n", d.sha256, d.bytes, d.sums.len());
    for s in &d.sums {
        t.push_str(&hex::encode(s));
        t.push('\n');
    }
    t
}

fn parse(text: &str) -> Option<Digests> {
    let mut lines = text.lines();
    let mut head = lines.next()?.split(' ');
    let (Some("v1"), Some(sha256), Some(bytes), Some(count), None) = (
        head.next(),
        head.next(),
        head.next(),
        head.next(),
        head.next(),
    ) else {
        return None;
    };
    let (bytes, count) = (bytes.parse().ok()?, count.parse::<usize>().ok()?);
    if !is_sha256_hex(sha256) {
        return None;
    }
    let mut sums = Vec::new();
    for l in lines {
        if !is_sha256_hex(l) {
            return None;
        }
        let mut s = [0u8; 32];
        hex::decode_to_slice(l, &mut s).ok()?;
        sums.push(s);
    }
    (sums.len() == count).then(|| Digests {
        sha256: sha256.to_string(),
        bytes,
        sums,
    })
}

/// The digests remembered under `key` for an image of `len` bytes whose block map has
/// `ranges` ranges, if any.
pub fn lookup(cache: &Path, key: &str, len: u64, ranges: usize) -> Option<Digests> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(memo_path(cache, key))
        .ok()?;
    // 65 bytes a range, and the first line: anything longer is not a memo of this image.
    let limit = 128 + 65 * ranges as u64;
    let mut text = String::new();
    f.take(limit + 1).read_to_string(&mut text).ok()?;
    let d = parse(&text)?;
    (d.bytes == len && d.sums.len() == ranges).then_some(d)
}

/// Remembers `digests` under `key` (written whole, then renamed into place), and removes the
/// oldest memos beyond [`KEEP`].
pub fn store(cache: &Path, key: &str, digests: &Digests) {
    crate::output::store_newest(&memo_path(cache, key), &[render(digests).as_bytes()], KEEP);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::FileExt;

    const BASE: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn digests(n: usize) -> Digests {
        Digests {
            sha256: BASE.replace('9', "8"),
            bytes: 1 << 20,
            sums: (0..n).map(|i| [i as u8; 32]).collect(),
        }
    }

    /// The key changes with every input that makes the image's bytes or its map: the base,
    /// the length, a written byte, where a range was written, the map's ranges.
    #[test]
    fn the_key_is_of_everything_that_makes_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let top = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("top"))
            .unwrap();
        top.write_all_at(&[7u8; 3000], 0).unwrap();
        let w = [(0u64, 1000u64), (2000, 3000)];
        let r = [(0u64, 4096u64)];
        let k = key(BASE, 1 << 20, &top, &w, &r).unwrap();
        assert_eq!(k, key(BASE, 1 << 20, &top, &w, &r).unwrap());
        let other_base = BASE.replace('a', "b");
        let others = [
            key(&other_base, 1 << 20, &top, &w, &r).unwrap(),
            key(BASE, 2 << 20, &top, &w, &r).unwrap(),
            key(BASE, 1 << 20, &top, &[(0, 1000), (2000, 2999)], &r).unwrap(),
            key(BASE, 1 << 20, &top, &[(0, 1000), (1999, 3000)], &r).unwrap(),
            key(BASE, 1 << 20, &top, &w, &[(0, 8192)]).unwrap(),
            key(BASE, 1 << 20, &top, &w, &[]).unwrap(),
        ];
        for o in &others {
            assert_ne!(&k, o);
        }
        // A byte inside a written range; one outside them changes nothing (the base's).
        top.write_all_at(b"x", 1500).unwrap();
        assert_eq!(k, key(BASE, 1 << 20, &top, &w, &r).unwrap());
        top.write_all_at(b"x", 2500).unwrap();
        assert_ne!(k, key(BASE, 1 << 20, &top, &w, &r).unwrap());
    }

    /// A memo is found for the image it was stored for, and ignored when it does not fit
    /// the image, is damaged, or is a planted symlink.
    #[test]
    fn memos_are_found_only_when_whole_and_fitting() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let k = BASE;
        assert_eq!(lookup(cache, k, 1 << 20, 3), None);
        store(cache, k, &digests(3));
        assert_eq!(lookup(cache, k, 1 << 20, 3), Some(digests(3)));
        assert_eq!(lookup(cache, k, 2 << 20, 3), None, "another size");
        assert_eq!(
            lookup(cache, k, 1 << 20, 2),
            None,
            "another number of ranges"
        );

        let path = memo_path(cache, k);
        let text = fs::read_to_string(&path).unwrap();
        for damaged in [
            text.replacen("v1", "v2", 1),
            text[..text.len() - 10].to_string(),
            text.replacen(&hex::encode([1u8; 32]), &"g".repeat(64), 1),
            format!("{text}{}\n", hex::encode([9u8; 32])),
            String::new(),
        ] {
            fs::write(&path, &damaged).unwrap();
            assert_eq!(lookup(cache, k, 1 << 20, 3), None, "{damaged:?}");
        }
        fs::remove_file(&path).unwrap();
        let elsewhere = dir.path().join("planted");
        fs::write(&elsewhere, render(&digests(3))).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert_eq!(
            lookup(cache, k, 1 << 20, 3),
            None,
            "a symlink is not followed"
        );
    }

    /// Beyond the number kept, the oldest memos go when one is stored; other files stay.
    #[test]
    fn the_oldest_memos_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = dir.path().join("nodes");
        fs::create_dir_all(&nodes).unwrap();
        fs::write(nodes.join("README"), "not a memo").unwrap();
        let keys: Vec<String> = (0..5u8).map(|i| hex::encode([i; 32])).collect();
        for (i, k) in keys[..4].iter().enumerate() {
            fs::write(nodes.join(k), render(&digests(1))).unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(1_000_000 + i as u64);
            File::options()
                .write(true)
                .open(nodes.join(k))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        crate::output::store_newest(&nodes.join(&keys[4]), &[render(&digests(1)).as_bytes()], 3);
        let left: Vec<bool> = keys.iter().map(|k| nodes.join(k).exists()).collect();
        assert_eq!(left, [false, false, true, true, true]);
        assert!(nodes.join("README").exists());
    }
}
