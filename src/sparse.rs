//! What a file's blocks are, asked of the filesystem instead of read: where its data and holes
//! are (`SEEK_DATA`/`SEEK_HOLE`), and which of its blocks are the very blocks of another file
//! (`FIEMAP`, after a reflink copy).
//!
//! Every reader of images goes through here: the sparse copy and the digests skip holes,
//! the block map skips them, and a node image made by reflink reads the blocks it still
//! shares with its role image from the role image's page cache.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// The start of the first data at or after `at` (`SEEK_DATA`): `None` when only a hole
/// follows. A filesystem that cannot tell holes (`EINVAL`, `EOPNOTSUPP`) has data everywhere.
pub fn next_data(f: &File, at: u64) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a valid descriptor with integer arguments. It moves the file offset:
    // callers read positionally (or seek before they read).
    let data = unsafe { libc::lseek(f.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
    if data >= 0 {
        return Ok(Some(data as u64));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some(at)),
        _ => Err(e),
    }
}

/// The end of the data that starts at `data` (`SEEK_HOLE`), at most `len`; `len` when the
/// filesystem cannot tell.
pub fn data_end(f: &File, data: u64, len: u64) -> u64 {
    // SAFETY: as in `next_data`.
    let hole = unsafe { libc::lseek(f.as_raw_fd(), data as libc::off_t, libc::SEEK_HOLE) };
    if hole < 0 {
        len
    } else {
        (hole as u64).min(len)
    }
}

/// Calls `each(start, end)` for every run of data in the first `len` bytes of `f`, in order
/// (holes skipped; a filesystem that cannot tell has one run, all of it).
pub fn each_data(
    f: &File,
    len: u64,
    mut each: impl FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut pos = 0u64;
    while pos < len {
        // No more data: the rest is a hole.
        let Some(data) = next_data(f, pos)? else {
            break;
        };
        let data = data.min(len);
        let hole = data_end(f, data, len);
        if hole <= data {
            break;
        }
        each(data, hole)?;
        pos = hole;
    }
    Ok(())
}

/// Whether `[from, to)` of `f` is one hole (reads as zeros without being read). `false` when
/// the filesystem cannot tell, or cannot be asked: the bytes are then read.
pub fn is_hole(f: &File, from: u64, to: u64) -> bool {
    match next_data(f, from) {
        Ok(None) => true,
        Ok(Some(d)) => d >= to,
        Err(_) => false,
    }
}

/// Fills `buf` with the bytes of `f` from `at`, reading only its data: the holes inside are
/// zeroed here instead of read. Reading a hole through the page cache costs a fresh zeroed
/// page per 4 KiB, copied out and later reclaimed; the chunks of an image that are part data,
/// part hole (most of a root filesystem's chunks) are hashed faster this way. A filesystem
/// that cannot tell holes has data everywhere: everything is read. The file must be at least
/// `at + buf.len()` bytes long.
pub fn read_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = at + buf.len() as u64;
    let mut pos = at;
    while pos < end {
        let data = match next_data(f, pos)? {
            Some(d) => d.clamp(pos, end),
            // Only a hole follows, up to the file's end, which must not come before `end`.
            None if f.metadata()?.len() >= end => end,
            None => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        };
        buf[(pos - at) as usize..(data - at) as usize].fill(0);
        if data >= end {
            break;
        }
        // Past its data the file may end (a length set by `set_len` ends in a hole): SEEK_HOLE
        // at most `end`, and the read tells a file shorter than promised.
        let stop = data_end(f, data, end).max(data + 1).min(end);
        f.read_exact_at(&mut buf[(data - at) as usize..(stop - at) as usize], data)?;
        pos = stop;
    }
    Ok(())
}

/// One extent of a file as `FIEMAP` reports it: bytes `[lo, hi)` of the file are the disk's
/// bytes from `phys` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    lo: u64,
    hi: u64,
    phys: u64,
    /// Allocated but unwritten (reads as zeros).
    unwritten: bool,
}

/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)` (linux/fs.h).
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Flags under which an extent's physical address says nothing about its bytes: unknown or
/// not yet allocated, encoded or encrypted, packed with other files' data.
const FIEMAP_EXTENT_OPAQUE: u32 = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

const BATCH: usize = 256;

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; BATCH],
}

/// The extents of `f`'s first `len` bytes, its dirty pages written first (`FIEMAP_FLAG_SYNC`),
/// physically contiguous neighbours joined. `None` when the filesystem cannot say, or an
/// extent's address means nothing (see [`FIEMAP_EXTENT_OPAQUE`]): nobody may then conclude
/// that two files share blocks.
fn extents(f: &File, len: u64) -> Option<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::new();
    let mut at = 0u64;
    // A file of N extents needs N / BATCH calls; the bound only stops a filesystem that
    // would never say LAST.
    for _ in 0..1 << 20 {
        if at >= len {
            return Some(out);
        }
        let mut m = Box::new(Fiemap {
            start: at,
            length: len - at,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); BATCH],
        });
        // SAFETY: FS_IOC_FIEMAP reads and writes a `struct fiemap` with room for
        // `extent_count` extents, which `m` is (repr(C), the kernel's layout).
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *m as *mut Fiemap) };
        if r != 0 {
            return None;
        }
        let n = (m.mapped_extents as usize).min(BATCH);
        if n == 0 {
            return Some(out);
        }
        let mut last = false;
        for e in &m.extents[..n] {
            if e.flags & FIEMAP_EXTENT_OPAQUE != 0 || e.length == 0 {
                return None;
            }
            let x = Extent {
                lo: e.logical,
                hi: e.logical.checked_add(e.length)?,
                phys: e.physical,
                unwritten: e.flags & FIEMAP_EXTENT_UNWRITTEN != 0,
            };
            if !push(&mut out, x) {
                return None;
            }
            last |= e.flags & FIEMAP_EXTENT_LAST != 0;
            at = at.max(x.hi);
        }
        if last {
            return Some(out);
        }
    }
    None
}

/// Appends extent `x` to `map` (in order), joined to the last one when it continues it on
/// the disk. `false` when it overlaps the last one (not a map).
fn push(map: &mut Vec<Extent>, x: Extent) -> bool {
    match map.last_mut() {
        Some(p)
            if p.hi == x.lo
                && p.unwritten == x.unwritten
                && p.phys.checked_add(p.hi - p.lo) == Some(x.phys) =>
        {
            p.hi = x.hi
        }
        Some(p) if x.lo < p.hi => return false,
        _ => map.push(x),
    }
    true
}

/// The pieces of `map` inside `[a, b)`, clipped, each with its physical address at its own
/// start.
fn pieces(map: &[Extent], a: u64, b: u64) -> impl Iterator<Item = Extent> + '_ {
    let first = map.partition_point(|e| e.hi <= a);
    map[first..]
        .iter()
        .take_while(move |e| e.lo < b)
        .map(move |e| {
            let lo = e.lo.max(a);
            Extent {
                lo,
                hi: e.hi.min(b),
                phys: e.phys + (lo - e.lo),
                unwritten: e.unwritten,
            }
        })
}

/// A file's extents, to compare other files with ([`SharedBlocks::of`]).
pub struct BlockMap {
    extents: Vec<Extent>,
}

impl BlockMap {
    /// The block map of `f`'s first `len` bytes; `None` when the filesystem cannot give one.
    pub fn of(f: &File, len: u64) -> Option<BlockMap> {
        extents(f, len).map(|extents| BlockMap { extents })
    }
}

/// Which `chunk`-sized pieces of one file read the same as another file at the same offsets:
/// those that are the very blocks of the other file (or holes in both), whatever was written
/// to the files, because a write to a shared block gives the writer a new block (copy on
/// write); or, for a file made by copying the other around what was written into it, those
/// that nothing was written into.
pub struct SharedBlocks {
    chunks: Vec<bool>,
}

impl SharedBlocks {
    /// The chunks of `file` (its first `len` bytes) that are `base`'s blocks. Dirty pages of
    /// `file` are written first, so that a block being rewritten is not counted. `None` when
    /// the filesystem cannot say.
    pub fn of(file: &File, len: u64, base: &BlockMap, chunk: u64) -> Option<SharedBlocks> {
        if chunk == 0 {
            return None;
        }
        let map = extents(file, len)?;
        let mut chunks = Vec::with_capacity(len.div_ceil(chunk) as usize);
        let mut a = 0;
        while a < len {
            let b = (a + chunk).min(len);
            chunks.push(pieces(&map, a, b).eq(pieces(&base.extents, a, b)));
            a = b;
        }
        Some(SharedBlocks { chunks })
    }

    /// The chunks of a file of `len` bytes, copied from its base except for the byte ranges
    /// `written` (increasing), that no written range touches.
    pub fn untouched(len: u64, chunk: u64, written: &[(u64, u64)]) -> SharedBlocks {
        let n = len.div_ceil(chunk.max(1)) as usize;
        let mut chunks = vec![true; n];
        for &(s, e) in written {
            if s >= e || s >= len {
                continue;
            }
            let (a, b) = (s / chunk.max(1), (e.min(len) - 1) / chunk.max(1));
            for c in chunks.iter_mut().take(b as usize + 1).skip(a as usize) {
                *c = false;
            }
        }
        SharedBlocks { chunks }
    }

    /// Whether chunk `i` is the base file's blocks.
    pub fn shared(&self, i: u64) -> bool {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.chunks.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// How many chunks are shared.
    pub fn count(&self) -> usize {
        self.chunks.iter().filter(|&&s| s).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_and_data_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let f = File::create(&p).unwrap();
        f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        f.set_len(4 << 20).unwrap();
        let f = File::open(&p).unwrap();
        // tmpfs and ext4 both tell holes; a filesystem that cannot would say data everywhere.
        assert_eq!(next_data(&f, 0).unwrap(), Some(1 << 20));
        assert_eq!(data_end(&f, 1 << 20, 4 << 20), (1 << 20) + 4096);
        assert_eq!(next_data(&f, 2 << 20).unwrap(), None);
        assert!(is_hole(&f, 0, 1 << 20));
        assert!(!is_hole(&f, 0, (1 << 20) + 1));
        assert!(is_hole(&f, 2 << 20, 4 << 20));
    }

    /// Data and holes read back as the file's bytes, whatever the window; a file shorter than
    /// the window is an error, not zeros.
    #[test]
    fn reads_skip_holes_and_return_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let f = File::create(&p).unwrap();
        f.set_len(3 << 20).unwrap();
        for (at, v) in [(0u64, 7u8), (1 << 20, 8), ((2 << 20) + 100, 9)] {
            f.write_all_at(&[v; 5000], at).unwrap();
        }
        let f = File::open(&p).unwrap();
        let whole = std::fs::read(&p).unwrap();
        for (at, n) in [
            (0u64, 3usize << 20),
            (3000, 10_000),
            ((1 << 20) - 10, 5020),
            ((1 << 20) + 4999, 4_000_000 - (1 << 20)),
            (2 << 20, 1 << 20),
        ] {
            let n = n.min(whole.len() - at as usize);
            let mut buf = vec![0xAAu8; n];
            read_at(&f, &mut buf, at).unwrap();
            assert!(
                buf == whole[at as usize..at as usize + n],
                "at {at}, {n} bytes"
            );
        }
        let mut over = vec![0u8; 4096];
        let e = read_at(&f, &mut over, (3 << 20) - 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Ending in data, then past the end.
        let g = dir.path().join("g");
        std::fs::write(&g, [5u8; 100]).unwrap();
        let g = File::open(&g).unwrap();
        assert!(read_at(&g, &mut [0u8; 101], 0).is_err());
    }

    fn ext(lo: u64, hi: u64, phys: u64) -> Extent {
        Extent {
            lo,
            hi,
            phys,
            unwritten: false,
        }
    }

    /// A map as [`extents`] makes it from what FIEMAP says.
    fn map(x: &[Extent]) -> Vec<Extent> {
        let mut m = Vec::new();
        for &e in x {
            assert!(push(&mut m, e));
        }
        m
    }

    #[test]
    fn chunks_compare_by_physical_block() {
        let base = [ext(0, 100, 1000), ext(200, 400, 5000)];
        // The same blocks, split differently.
        let split = map(&[ext(0, 60, 1000), ext(60, 100, 1060), ext(200, 400, 5000)]);
        assert_eq!(split, base);
        assert!(
            !push(&mut split.clone(), ext(399, 500, 1)),
            "an overlap is refused"
        );
        // One block rewritten elsewhere (copy on write) at 300..310.
        let cow = [
            ext(0, 100, 1000),
            ext(200, 300, 5000),
            ext(300, 310, 9000),
            ext(310, 400, 5110),
        ];
        assert!(pieces(&cow, 0, 256).eq(pieces(&base, 0, 256)));
        assert!(!pieces(&cow, 256, 400).eq(pieces(&base, 256, 400)));
        // Data where the base has a hole, and a hole where it has data.
        assert!(!pieces(&[ext(0, 100, 1000), ext(120, 130, 7)], 0, 128).eq(pieces(&base, 0, 128)));
        assert!(!pieces(&[ext(0, 50, 1000)], 0, 128).eq(pieces(&base, 0, 128)));
        // Unwritten is not written, even at the same address.
        let mut u = base;
        u[0].unwritten = true;
        assert!(!pieces(&u, 0, 128).eq(pieces(&base, 0, 128)));
    }

    /// Two separate files never share blocks, whatever their bytes: a plain copy is compared
    /// by reading it, not by its block map.
    #[test]
    fn a_plain_copy_shares_no_block() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, vec![3u8; 1 << 20]).unwrap();
        std::fs::write(&b, vec![3u8; 1 << 20]).unwrap();
        let (fa, fb) = (File::open(&a).unwrap(), File::open(&b).unwrap());
        let Some(base) = BlockMap::of(&fa, 1 << 20) else {
            return; // this filesystem has no FIEMAP (tmpfs): nothing can be shared
        };
        if let Some(s) = SharedBlocks::of(&fb, 1 << 20, &base, 1 << 18) {
            assert_eq!(s.count(), 0);
        }
        // A file compared with itself shares every chunk.
        let own = SharedBlocks::of(&fa, 1 << 20, &base, 1 << 18).unwrap();
        assert_eq!(own.count(), 4);
    }
}
