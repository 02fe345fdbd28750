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
//!
//! A node image made by reflink (btrfs, XFS with `reflink=1`) is compared without reading it:
//! the chunks whose blocks are still the role image's own ([`SharedBlocks`], from `FIEMAP`
//! after the node's writes are on disk; a write to a shared block gets a new block) are the
//! role's bytes, and are read from the role image, whose pages the build already has in
//! memory, instead of from the node's blocks, which no page cache holds yet.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::compress::{ChunkKeys, CHUNK};
use crate::sparse::{is_hole, read_at, BlockMap, SharedBlocks};

/// A role image, as the nodes made from it compare their chunks with it; and the digests
/// they took of chunks equal to its own.
pub struct RoleImage {
    file: File,
    bytes: u64,
    /// Whether later nodes of the build will ask (a role with one node learns nothing: its
    /// node neither compares nor records).
    share: bool,
    /// Its blocks, asked for when the first node made by reflink needs them (`None` inside:
    /// the filesystem cannot say).
    blocks: OnceLock<Option<BlockMap>>,
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
            blocks: OnceLock::new(),
            ranges: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// How the node image `node` (of `len` bytes, written: its layer applied) shares with this
    /// role image; `reflinked` when it was made by reflink, so that its blocks are compared.
    pub fn node(&self, node: &File, len: u64, reflinked: bool) -> Sharing<'_> {
        let blocks = match reflinked && len == self.bytes {
            true => self
                .blocks
                .get_or_init(|| BlockMap::of(&self.file, self.bytes))
                .as_ref()
                .and_then(|b| SharedBlocks::of(node, len, b, CHUNK as u64)),
            false => None,
        };
        Sharing {
            role: self,
            blocks,
            written: None,
        }
    }

    /// How a node image of `len` bytes made by copying this role image around the byte
    /// ranges `written` ([`crate::output::fill_around`]) shares with it: the chunks nothing
    /// was written into are the role's bytes, and the rest of the others too (read from the
    /// role image: the node's file need not be filled in yet).
    pub fn node_written(&self, len: u64, written: &[(u64, u64)]) -> Sharing<'_> {
        let same_len = len == self.bytes;
        Sharing {
            role: self,
            blocks: same_len.then(|| SharedBlocks::untouched(len, CHUNK as u64, written)),
            written: same_len.then(|| written.to_vec()),
        }
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

/// One node image's view of its role image: which of its chunks are the role's blocks.
pub struct Sharing<'a> {
    role: &'a RoleImage,
    blocks: Option<SharedBlocks>,
    /// Made by writing over the role image ([`RoleImage::node_written`]): the ranges written
    /// into the node's file. Its other bytes are read from the role image, so that the node's
    /// file may still be being filled in from it while the digests are taken.
    written: Option<Vec<(u64, u64)>>,
}

impl Sharing<'_> {
    /// Whether chunk `i` is the role image's blocks (its bytes then are the role's).
    fn shared(&self, i: u64) -> bool {
        self.blocks.as_ref().is_some_and(|b| b.shared(i))
    }

    /// How many chunks are the role image's blocks (none when the node was not made by
    /// reflink, or the filesystem cannot say).
    pub fn shared_chunks(&self) -> usize {
        self.blocks.as_ref().map_or(0, |b| b.count())
    }

    /// Whether chunk `i` of the node image, whose bytes are `chunk`, is the same in the role
    /// image (blocks shared, else compared byte for byte), asked only when other nodes of the
    /// role can use the answer.
    fn same(&self, i: u64, chunk: &[u8], buf: &mut Vec<u8>) -> io::Result<bool> {
        if self.shared(i) {
            return Ok(true);
        }
        self.role.same(i * CHUNK as u64, chunk, buf)
    }
}

/// The compressed formats' chunk keys of one node image, taken from its role image's where the
/// chunk is the same.
pub struct NodeKeys<'a> {
    pub sharing: &'a Sharing<'a>,
}

impl ChunkKeys for NodeKeys<'_> {
    fn key(&self, index: u64, chunk: &[u8]) -> io::Result<[u8; 32]> {
        let role = self.sharing.role;
        if !role.share {
            return Ok(Sha256::digest(chunk).into());
        }
        let mut buf = Vec::new();
        let same = self.sharing.same(index, chunk, &mut buf)?;
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

    fn source(&self, index: u64) -> Option<&File> {
        self.sharing
            .shared(index)
            .then_some(&self.sharing.role.file)
    }
}

/// SHA-256 and length of the image `file`, and in the same pass the SHA-256 of each byte range
/// `[start, end)` of `ranges` (increasing, not overlapping; the part of a range past the end of
/// the file counts for nothing), its data read once per [`CHUNK`]. With a role image to share
/// with, the checksums of ranges inside a chunk that is the same as the role's are taken from
/// there when another node already hashed them, and chunks that are the role's blocks are
/// read from the role image. Chunks that are holes are hashed as zeros without being read.
///
/// The whole image's SHA-256 is taken on a thread of its own, fed the chunks this thread
/// reads (three 4 MiB buffers go round), and the ranges' here, on each chunk before it is
/// handed over: the mapped bytes are hashed twice, and on two cores that costs the wall time
/// of the longer of the two. The whole image's hash is the longer (every byte, holes included),
/// so it is the one left alone on its core: the reads, the holes' zeros and the comparisons
/// with the role image are all done on the other.
pub fn digests(
    file: &File,
    ranges: &[(u64, u64)],
    sharing: Option<&Sharing<'_>>,
) -> io::Result<(String, u64, Vec<[u8; 32]>)> {
    let len = file.metadata()?.len();
    // Reads as zeros without being touched (calloc: fresh pages).
    let zeros = vec![0u8; CHUNK];
    let mut sums = RangeSums::new(ranges, sharing);
    std::thread::scope(|s| {
        // Chunks to the whole-image hasher (`None`: `n` zeros), and its buffers back.
        let (to_whole, chunks) = mpsc::sync_channel::<(usize, Option<Vec<u8>>)>(2);
        let (back, free) = mpsc::channel::<Vec<u8>>();
        let zeros = &zeros;
        let hasher = s.spawn(move || {
            let mut whole = Sha256::new();
            for (n, buf) in chunks {
                match buf {
                    Some(b) => {
                        whole.update(&b[..n]);
                        // The reader may have stopped: the buffer is then dropped here.
                        let _ = back.send(b);
                    }
                    None => whole.update(&zeros[..n]),
                }
            }
            hex::encode(whole.finalize())
        });
        let mut buffers = 0;
        let mut from = 0u64;
        let read = (|| -> io::Result<()> {
            while from < len {
                let to = (from + CHUNK as u64).min(len);
                let n = (to - from) as usize;
                let index = from / CHUNK as u64;
                let (src, over) = match sharing {
                    Some(s) if s.shared(index) => (&s.role.file, None),
                    Some(s) => (file, s.written.as_deref().map(|w| (&s.role.file, w))),
                    None => (file, None),
                };
                let chunk = match over.is_none() && is_hole(src, from, to) {
                    true => {
                        sums.chunk(from, &zeros[..n])?;
                        None
                    }
                    false => {
                        let mut buf = match free.try_recv() {
                            Ok(b) => b,
                            Err(_) if buffers < 3 => {
                                buffers += 1;
                                vec![0u8; CHUNK]
                            }
                            // The hasher holds them all: wait for one.
                            Err(_) => free.recv().map_err(|_| {
                                io::Error::other("the image's hasher stopped early")
                            })?,
                        };
                        match over {
                            Some((base, w)) => {
                                crate::disk::read_over(base, file, w, &mut buf[..n], from, read_at)?
                            }
                            None => read_at(src, &mut buf[..n], from)?,
                        }
                        sums.chunk(from, &buf[..n])?;
                        Some(buf)
                    }
                };
                if to_whole.send((n, chunk)).is_err() {
                    // The hasher only stops by panicking: told by the join below.
                    return Ok(());
                }
                from = to;
            }
            Ok(())
        })();
        drop(to_whole);
        let whole = hasher
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        read?;
        Ok((whole, len, sums.finish()))
    })
}

/// The range checksums of [`digests`], taken from the image's chunks in order.
struct RangeSums<'a, 'r> {
    ranges: &'a [(u64, u64)],
    /// Whom to ask whether a chunk is the same: only when other nodes can use the answer.
    asked: Option<&'a Sharing<'r>>,
    sums: Vec<[u8; 32]>,
    /// The range being hashed across chunks, and the next range to finish.
    open: Sha256,
    next: usize,
    role_buf: Vec<u8>,
}

impl<'a, 'r> RangeSums<'a, 'r> {
    fn new(ranges: &'a [(u64, u64)], sharing: Option<&'a Sharing<'r>>) -> Self {
        RangeSums {
            ranges,
            asked: sharing.filter(|s| s.role.share),
            sums: Vec::with_capacity(ranges.len()),
            open: Sha256::new(),
            next: 0,
            role_buf: Vec::new(),
        }
    }

    /// The chunk `[from, from + chunk.len())`, whose bytes are `chunk`: the ranges it holds
    /// whole are summed (or their sums taken from the role image's), the parts of those
    /// that cross its edges added to the open range.
    fn chunk(&mut self, from: u64, chunk: &[u8]) -> io::Result<()> {
        let to = from + chunk.len() as u64;
        let index = from / CHUNK as u64;
        // Whether the role image has the same chunk: asked once, when a range inside it
        // could be shared.
        let mut same: Option<bool> = None;
        while let Some(&(s, e)) = self.ranges.get(self.next) {
            if s >= to {
                break;
            }
            if s >= from && e <= to {
                let part = &chunk[(s - from) as usize..(e - from) as usize];
                let sum = match self.asked {
                    None => Sha256::digest(part).into(),
                    Some(r) => {
                        let same = match same {
                            Some(v) => v,
                            None => *same.insert(r.same(index, chunk, &mut self.role_buf)?),
                        };
                        let known = if same {
                            lock(&r.role.ranges).get(&(s, e)).copied()
                        } else {
                            None
                        };
                        match known {
                            Some(k) => k,
                            None => {
                                let k: [u8; 32] = Sha256::digest(part).into();
                                if same {
                                    lock(&r.role.ranges).insert((s, e), k);
                                }
                                k
                            }
                        }
                    }
                };
                self.sums.push(sum);
                self.next += 1;
                continue;
            }
            let (a, b) = (s.max(from), e.min(to));
            if a < b {
                self.open
                    .update(&chunk[(a - from) as usize..(b - from) as usize]);
            }
            if e > to {
                break;
            }
            self.close();
        }
        Ok(())
    }

    fn close(&mut self) {
        let done = std::mem::replace(&mut self.open, Sha256::new());
        self.sums.push(done.finalize().into());
        self.next += 1;
    }

    /// The sums, one per range; ranges past the end count the bytes the file had.
    fn finish(mut self) -> Vec<[u8; 32]> {
        while self.next < self.ranges.len() {
            self.close();
        }
        self.sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// The digests [`digests`] must give for a file holding `data`: computed from the bytes.
    fn bytes_digests(data: &[u8], ranges: &[(u64, u64)]) -> (String, u64, Vec<[u8; 32]>) {
        let sums = ranges
            .iter()
            .map(|&(s, e)| {
                let (s, e) = ((s as usize).min(data.len()), (e as usize).min(data.len()));
                Sha256::digest(&data[s..e]).into()
            })
            .collect();
        (hex::encode(Sha256::digest(data)), data.len() as u64, sums)
    }

    /// Alone (no role image), the digests are the bytes' across holes, chunk boundaries and
    /// the end of the file.
    #[test]
    fn range_digests_come_from_the_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.img");
        let f = File::create(&p).unwrap();
        let c = CHUNK as u64;
        // Data, a hole, data across a chunk boundary, a trailing hole.
        f.write_all_at(&[7u8; 5000], 0).unwrap();
        f.write_all_at(&vec![9u8; CHUNK], c - 4096).unwrap();
        f.set_len(3 * c + 100).unwrap();
        let data = fs::read(&p).unwrap();
        let ranges = [
            (0, 4096),
            (4096, 8192),
            (c - 10, c + 3),
            (3 * c, 4 * c), // past the end: the bytes there are
        ];
        let got = digests(&File::open(&p).unwrap(), &ranges, None).unwrap();
        assert_eq!(got, bytes_digests(&data, &ranges));
        assert_eq!(got.1, 3 * c + 100);
    }

    /// A node compared with a role image whose blocks it shares (here: the role's own file,
    /// every chunk shared when the filesystem has `FIEMAP`) reads the role's bytes, and its
    /// digests are still its own bytes'.
    #[test]
    fn shared_blocks_are_read_from_the_role_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("role.img");
        let f = File::create(&p).unwrap();
        f.write_all_at(&vec![4u8; CHUNK + 7], 100).unwrap();
        f.set_len(3 * CHUNK as u64).unwrap();
        drop(f);
        let data = fs::read(&p).unwrap();
        let role = RoleImage::new(File::open(&p).unwrap(), 2).unwrap();
        let node = File::open(&p).unwrap();
        let sharing = role.node(&node, data.len() as u64, true);
        if crate::sparse::BlockMap::of(&node, data.len() as u64).is_some() {
            assert_eq!(sharing.shared_chunks(), 3);
        }
        let ranges = [(0, 4096), (4096, CHUNK as u64 + 4096)];
        for _ in 0..2 {
            let got = digests(&node, &ranges, Some(&sharing)).unwrap();
            assert_eq!(got, bytes_digests(&data, &ranges));
        }
        // A node of another length is never taken for the role's blocks.
        assert_eq!(role.node(&node, 1, true).shared_chunks(), 0);
    }

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
            let want = bytes_digests(&data, &ranges);
            let sharing = role.node(&file, data.len() as u64, false);
            assert_eq!(digests(&file, &ranges, Some(&sharing)).unwrap(), want);
            assert_eq!(digests(&file, &ranges, None).unwrap(), want);
            let keys = NodeKeys { sharing: &sharing };
            for (i, chunk) in data.chunks(CHUNK).enumerate() {
                let k = keys.key(i as u64, chunk).unwrap();
                assert_eq!(k, <[u8; 32]>::from(Sha256::digest(chunk)), "chunk {i}");
            }
        }
        assert!(!lock(&role.ranges).is_empty() && !lock(&role.keys).is_empty());
    }
}
