//! Work a node image shares with its role image, done once per role instead of once per node.
//!
//! A node image is a copy of its role's image with the node's layer written into it (a few
//! kilobytes: the MBR disk id, the FAT's seed and `cmdline.txt`, a few ext4 blocks). Its digests
//! are taken per [`CHUNK`] (4 MiB, at fixed offsets): the bmap's range checksums (the bmap's
//! ranges are cut at chunk boundaries, [`crate::bmap`]) and the compressed formats' chunk keys
//! ([`crate::compress`]). For each chunk, the node's bytes are compared with the same chunk of
//! the role image (both in the page cache: a read and a `memcmp`, a fraction of a SHA-256 of
//! the same bytes); where they are equal, a digest another node of the role already took of
//! that chunk is taken again instead of hashed.
//!
//! The comparison is of the bytes themselves, so no write path of the node layer can be
//! missed: the digests are those of the node's bytes whether they were reused or not (tests
//! build with and without the reuse and compare every file). The whole image's SHA-256 (for
//! `SHA256SUMS`) is not shared: node images differ at byte 440 (their disk id), and SHA-256
//! cannot restart at a later offset or skip zeros.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::compress::{ChunkKeys, CHUNK};

/// A role image, as the nodes made from it compare their chunks with it; and the digests
/// they took of chunks equal to its own.
pub struct RoleImage {
    file: File,
    bytes: u64,
    /// Whether later nodes of the build will ask (a role with one node learns nothing: its
    /// node neither compares nor records).
    share: bool,
    /// SHA-256 of byte ranges `[start, end)` of the role image, each inside one chunk.
    ranges: Mutex<HashMap<(u64, u64), [u8; 32]>>,
    /// SHA-256 of chunk `i` of the role image (the compressed formats' keys).
    keys: Mutex<HashMap<u64, [u8; 32]>>,
}

impl RoleImage {
    /// The role image `file` (read only: it must not change while nodes use it), shared by
    /// `nodes` node images of the build.
    pub fn new(file: File, nodes: usize) -> io::Result<RoleImage> {
        let bytes = file.metadata()?.len();
        Ok(RoleImage {
            file,
            bytes,
            share: nodes > 1,
            ranges: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// Whether chunk `[from, from + chunk.len())` of a node image, whose bytes are `chunk`, is
    /// the same in the role image (`buf`: room for a chunk, reused between calls).
    fn same(&self, from: u64, chunk: &[u8], buf: &mut Vec<u8>) -> io::Result<bool> {
        let to = from + chunk.len() as u64;
        if to > self.bytes {
            return Ok(false);
        }
        if is_hole(&self.file, from, to) {
            return Ok(chunk.iter().all(|&b| b == 0));
        }
        buf.resize(chunk.len(), 0);
        self.file.read_exact_at(buf, from)?;
        Ok(buf[..] == *chunk)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `[from, to)` of `f` is one hole (no data: reads as zeros without being read).
fn is_hole(f: &File, from: u64, to: u64) -> bool {
    // SAFETY: lseek on a valid descriptor with integer arguments; every read here is
    // positional, so the moved offset is used by nobody.
    let data = unsafe { libc::lseek(f.as_raw_fd(), from as libc::off_t, libc::SEEK_DATA) };
    if data < 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    data as u64 >= to
}

/// The compressed formats' chunk keys of one node image, taken from its role image's where the
/// chunk is the same.
pub struct NodeKeys<'a> {
    pub role: &'a RoleImage,
}

impl ChunkKeys for NodeKeys<'_> {
    fn key(&self, index: u64, chunk: &[u8]) -> io::Result<[u8; 32]> {
        let role = self.role;
        if !role.share {
            return Ok(Sha256::digest(chunk).into());
        }
        let mut buf = Vec::new();
        let same = role.same(index * CHUNK as u64, chunk, &mut buf)?;
        if same {
            if let Some(k) = lock(&role.keys).get(&index) {
                return Ok(*k);
            }
        }
        let key: [u8; 32] = Sha256::digest(chunk).into();
        if same {
            lock(&role.keys).insert(index, key);
        }
        Ok(key)
    }
}

/// SHA-256 and length of the image `file`, and in the same pass the SHA-256 of each byte range
/// `[start, end)` of `ranges` (increasing, not overlapping; the part of a range past the end of
/// the file counts for nothing): [`crate::output::sha256_sparse_ranges`], its data read once
/// per [`CHUNK`], with the checksums of ranges inside a chunk that is the same in `role` taken
/// from `role` when another node already hashed them. Chunks that are holes are hashed as
/// zeros without being read.
pub fn digests(
    file: &File,
    ranges: &[(u64, u64)],
    role: Option<&RoleImage>,
) -> io::Result<(String, u64, Vec<[u8; 32]>)> {
    let len = file.metadata()?.len();
    let role = role.filter(|r| r.share);
    let mut whole = Sha256::new();
    let mut sums: Vec<[u8; 32]> = Vec::with_capacity(ranges.len());
    // The range being hashed across chunks, and the next range to finish.
    let mut open = Sha256::new();
    let mut next = 0usize;
    let mut buf = vec![0u8; CHUNK];
    let mut role_buf = Vec::new();
    // Reads as zeros without being touched (calloc: fresh pages).
    let zeros = vec![0u8; CHUNK];
    let mut from = 0u64;
    while from < len {
        let to = (from + CHUNK as u64).min(len);
        let n = (to - from) as usize;
        let chunk: &[u8] = if is_hole(file, from, to) {
            &zeros[..n]
        } else {
            file.read_exact_at(&mut buf[..n], from)?;
            &buf[..n]
        };
        whole.update(chunk);
        // Whether the role image has the same chunk: asked once, when a range inside it
        // could be shared.
        let mut same: Option<bool> = None;
        while let Some(&(s, e)) = ranges.get(next) {
            if s >= to {
                break;
            }
            if s >= from && e <= to {
                let part = &chunk[(s - from) as usize..(e - from) as usize];
                let sum = match role {
                    None => Sha256::digest(part).into(),
                    Some(r) => {
                        let same = match same {
                            Some(v) => v,
                            None => *same.insert(r.same(from, chunk, &mut role_buf)?),
                        };
                        let known = if same {
                            lock(&r.ranges).get(&(s, e)).copied()
                        } else {
                            None
                        };
                        match known {
                            Some(k) => k,
                            None => {
                                let k: [u8; 32] = Sha256::digest(part).into();
                                if same {
                                    lock(&r.ranges).insert((s, e), k);
                                }
                                k
                            }
                        }
                    }
                };
                sums.push(sum);
                next += 1;
                continue;
            }
            let (a, b) = (s.max(from), e.min(to));
            if a < b {
                open.update(&chunk[(a - from) as usize..(b - from) as usize]);
            }
            if e > to {
                break;
            }
            sums.push(
                std::mem::replace(&mut open, Sha256::new())
                    .finalize()
                    .into(),
            );
            next += 1;
        }
        from = to;
    }
    // Ranges past the end: of the bytes the file had.
    while next < ranges.len() {
        sums.push(
            std::mem::replace(&mut open, Sha256::new())
                .finalize()
                .into(),
        );
        next += 1;
    }
    Ok((hex::encode(whole.finalize()), len, sums))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// The digests with a role image to share with are those of the node's own bytes, whether
    /// a chunk is the same as the role's or not, and whatever an earlier node recorded.
    #[test]
    fn shared_digests_are_the_node_bytes_digests() {
        let dir = tempfile::tempdir().unwrap();
        let c = CHUNK as u64;
        let role_path = dir.path().join("role.img");
        let f = File::create(&role_path).unwrap();
        f.write_all_at(&vec![5u8; CHUNK + 100], 10).unwrap();
        f.write_all_at(&[6u8; 4096], 3 * c + 4096).unwrap();
        f.set_len(5 * c + 1000).unwrap();
        drop(f);
        let ranges = [
            (0, 4096),
            (4096, c),
            (c, c + 8192),
            (c + 8192, 2 * c + 4096), // across a chunk boundary
            (3 * c, 3 * c + 12288),
            (4 * c, 4 * c + 4096), // a hole
            (5 * c, 5 * c + 4096), // past the end
        ];
        let role = RoleImage::new(File::open(&role_path).unwrap(), 3).unwrap();
        let node = |name: &str, edit: &[(u64, u8)]| {
            let p = dir.path().join(name);
            fs::copy(&role_path, &p).unwrap();
            let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
            for &(at, b) in edit {
                f.write_all_at(&[b], at).unwrap();
            }
            p
        };
        // The first node records; the second differs in chunks 0 and 3 where the first did
        // not, and must not get the first's (the role's) checksums there.
        let a = node("a.img", &[(3 * c + 5000, 1)]);
        let b = node("b.img", &[(100, 9), (3 * c + 4096, 7), (4 * c + 1, 1)]);
        for p in [&a, &b, &a] {
            let data = fs::read(p).unwrap();
            let file = File::open(p).unwrap();
            let want = crate::output::sha256_sparse_ranges(&file, &ranges).unwrap();
            assert_eq!(want.0, hex::encode(Sha256::digest(&data)));
            assert_eq!(digests(&file, &ranges, Some(&role)).unwrap(), want);
            assert_eq!(digests(&file, &ranges, None).unwrap(), want);
            let keys = NodeKeys { role: &role };
            for (i, chunk) in data.chunks(CHUNK).enumerate() {
                let k = keys.key(i as u64, chunk).unwrap();
                assert_eq!(k, <[u8; 32]>::from(Sha256::digest(chunk)), "chunk {i}");
            }
        }
        assert!(!lock(&role.ranges).is_empty() && !lock(&role.keys).is_empty());
    }
}
