//! Block maps in bmaptool's format (`<node>.img.bmap`, version 2.0): which 4 KiB blocks of an
//! image a flasher must write, each range with its SHA-256, so `bmaptool copy` writes only
//! those and verifies them.
//!
//! The mapped blocks come from the filesystems' own allocation, not from the content: stale
//! data in a free ext4 block or a free FAT cluster is left out. Mapped are
//! * the partition table (sector 0; with GPT also the primary and backup headers and entries);
//! * in a FAT partition: the reserved sectors, every FAT, the root directory (FAT12/16) and
//!   each cluster the FAT marks in use ([`crate::fs::fat_alloc`]);
//! * in an ext2/3/4 partition: every block its block bitmap marks, plus every group's
//!   superblock backup, descriptors, reserved GDT blocks, bitmaps and inode table
//!   ([`crate::fs::ext4::Ext4::used_blocks`]);
//! * everywhere else (gaps between partitions, after the last one, a partition whose
//!   filesystem is unknown or cannot be read): every block that is not all zeros.
//!
//! The file format follows bmaptool's `BmapCreate.py` (github.com/yoctoproject/bmaptool,
//! src/bmaptool/BmapCreate.py): ranges `first-last` (or one block number) in increasing order,
//! each with `chksum`, the SHA-256 of the range's bytes (the image's last block may be short:
//! only its bytes count, as bmaptool reads them); `BmapFileChecksum` is the SHA-256 of the
//! whole file with that field's value written as 64 `0`s (`BmapCopy.py` `_verify_bmap_checksum`
//! checks it the same way).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::disk::Overlay;
use crate::disk::{read_layout, Filesystem, Partition, Scheme, Slice, SECTOR};
use crate::fs::ext4::{Ext4, OpenMode, OpenOptions};

/// The block size of the map (bmaptool's, and the ext4 block size of Pi images).
pub const BLOCK: u64 = 4096;

/// Bytes a GPT's header and entry array take at either end of the disk (LBA 1-33, and the
/// last 33 sectors; plus the protective MBR at LBA 0).
const GPT_SECTORS: u64 = 33;

/// The mapped blocks of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMap {
    pub image_bytes: u64,
    /// `(first, last)` block numbers (inclusive), increasing, not overlapping, and cut at every
    /// [`crate::compress::CHUNK`] boundary (4 MiB): touching only there, so that a range's
    /// checksum covers bytes of one chunk and can be taken once for every node image that has
    /// the same chunk (`build::reuse`). bmaptool and `piforge flash` read touching ranges as
    /// one run.
    pub ranges: Vec<(u64, u64)>,
}

impl BlockMap {
    /// Blocks of the image (the last one may be short).
    pub fn blocks(&self) -> u64 {
        self.image_bytes.div_ceil(BLOCK)
    }

    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// The mapped ranges in bytes, `[start, end)` (the last block may be short: its end is the
    /// image's).
    pub fn byte_ranges(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .map(|&(first, last)| (first * BLOCK, ((last + 1) * BLOCK).min(self.image_bytes)))
            .collect()
    }

    /// Whether byte `at` of the image falls in a mapped block.
    pub fn is_mapped(&self, at: u64) -> bool {
        let b = at / BLOCK;
        let i = self.ranges.partition_point(|r| r.1 < b);
        i < self.ranges.len() && self.ranges[i].0 <= b
    }

    /// From byte ranges `(start, len)`: every block any of them touches.
    fn from_byte_ranges(image_bytes: u64, mut bytes: Vec<(u64, u64)>) -> BlockMap {
        bytes.retain(|r| r.1 > 0 && r.0 < image_bytes);
        bytes.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (start, len) in bytes {
            let end = start.saturating_add(len).min(image_bytes);
            let (first, last) = (start / BLOCK, (end - 1) / BLOCK);
            match ranges.last_mut() {
                Some(r) if first <= r.1 + 1 => r.1 = r.1.max(last),
                _ => ranges.push((first, last)),
            }
        }
        // Cut at the chunk boundaries.
        let per_chunk = crate::compress::CHUNK as u64 / BLOCK;
        let mut cut = Vec::with_capacity(ranges.len());
        for (mut first, last) in ranges {
            while first / per_chunk != last / per_chunk {
                let end = (first / per_chunk + 1) * per_chunk;
                cut.push((first, end - 1));
                first = end;
            }
            cut.push((first, last));
        }
        BlockMap {
            image_bytes,
            ranges: cut,
        }
    }
}

/// The image a map is made of: a file, or an image being written over another
/// ([`Overlay`]: its bytes as they will be once the file is filled in from the base).
#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a File, &'a Path),
    /// The overlay, and the path of its base image (opened by the ext4 sessions).
    Over(&'a Overlay, &'a Path),
}

impl Source<'_> {
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        match self {
            Source::File(f, _) => f.read_exact_at(buf, at),
            Source::Over(o, _) => o.read_exact_at(buf, at),
        }
    }

    fn next_data(&self, at: u64) -> io::Result<Option<u64>> {
        match self {
            Source::File(f, _) => crate::sparse::next_data(f, at),
            Source::Over(o, _) => o.next_data(at),
        }
    }

    /// The partition `[start, start + len)` as a device.
    fn slice(&self, start: u64, len: u64) -> Slice<BufReader<Box<dyn ReadSeek + '_>>> {
        let dev: Box<dyn ReadSeek + '_> = match *self {
            Source::File(f, _) => Box::new(f),
            Source::Over(o, _) => Box::new(o),
        };
        Slice::new(BufReader::new(dev), start, len)
    }

    /// The ext2/3/4 filesystem of the partition `[start, start + len)`, read-only.
    fn ext4(&self, start: u64, len: u64) -> Result<Ext4, crate::fs::ext4::Ext4Error> {
        let mut opts = OpenOptions::new(OpenMode::ReadOnly);
        let path = match self {
            Source::File(_, p) => p,
            Source::Over(o, p) => {
                o.align_within(start, start.saturating_add(len), 1024)
                    .map_err(|source| crate::fs::ext4::Ext4Error::Image {
                        image: p.to_path_buf(),
                        source,
                    })?;
                opts.split_into = Some(o.top().clone());
                opts.split_written = o.written();
                p
            }
        };
        Ext4::open_bounded(path, start, len, &opts)
    }
}

trait ReadSeek: io::Read + io::Seek + std::fmt::Debug {}
impl<T: io::Read + io::Seek + std::fmt::Debug> ReadSeek for T {}

/// The block map of the image at `path`, from its partition table and filesystems. An image
/// without a readable partition table is mapped by content (every non-zero block).
pub fn map_image(path: &Path) -> io::Result<BlockMap> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    map_source(Source::File(&file, path), size)
}

/// The block map of the image `over` will hold once its file is filled in from its base (at
/// `base`), as [`map_image`] would make it then.
pub fn map_over(over: &Overlay, base: &Path) -> io::Result<BlockMap> {
    map_source(Source::Over(over, base), over.len())
}

fn map_source(src: Source<'_>, size: u64) -> io::Result<BlockMap> {
    let mut bytes: Vec<(u64, u64)> = Vec::new();
    let layout = match read_layout(&mut src.slice(0, size)) {
        Ok(l) => l,
        Err(_) => {
            nonzero_ranges(src, 0, size, &mut bytes)?;
            return Ok(BlockMap::from_byte_ranges(size, bytes));
        }
    };
    bytes.push((0, SECTOR));
    if layout.scheme == Scheme::Gpt {
        bytes.push((SECTOR, GPT_SECTORS * SECTOR));
        let tail = GPT_SECTORS * SECTOR;
        bytes.push((size.saturating_sub(tail), tail));
    }
    let mut parts: Vec<&Partition> = layout.partitions.iter().collect();
    parts.sort_by_key(|p| p.start_bytes);
    let mut at = 0u64;
    for p in parts {
        let (start, end) = (p.start_bytes.min(size), p.end_bytes().min(size));
        if start > at {
            nonzero_ranges(src, at, start, &mut bytes)?;
        }
        partition_ranges(src, p, start, end, &mut bytes)?;
        at = at.max(end);
    }
    if at < size {
        nonzero_ranges(src, at, size, &mut bytes)?;
    }
    Ok(BlockMap::from_byte_ranges(size, bytes))
}

/// The bytes in use in one partition `[start, end)` of the image.
fn partition_ranges(
    src: Source<'_>,
    p: &Partition,
    start: u64,
    end: u64,
    out: &mut Vec<(u64, u64)>,
) -> io::Result<()> {
    let len = end - start;
    let used: Option<Vec<(u64, u64)>> = match p.filesystem {
        Filesystem::Vfat => crate::fs::fat_alloc::used_ranges(&mut src.slice(start, len), len)?,
        Filesystem::Ext2 | Filesystem::Ext3 | Filesystem::Ext4 => src
            .ext4(start, len)
            .and_then(|fs| {
                let bs = u64::from(fs.info().block_size);
                let runs = fs.used_blocks()?;
                Ok(runs
                    .into_iter()
                    .map(|(first, n)| (first.saturating_mul(bs), n.saturating_mul(bs)))
                    .collect())
            })
            .ok(),
        Filesystem::Unknown => None,
    };
    match used {
        Some(ranges) => {
            for (s, n) in ranges {
                let s = s.min(len);
                let n = n.min(len - s);
                if n > 0 {
                    out.push((start + s, n));
                }
            }
            Ok(())
        }
        // Not a filesystem this module reads (or one that cannot be read): keep every block
        // with data, so the map never misses anything.
        None => nonzero_ranges(src, start, end, out),
    }
}

/// Appends the 4 KiB-aligned blocks of `[from, to)` that are not all zeros (holes are skipped
/// without reading them).
fn nonzero_ranges(
    src: Source<'_>,
    from: u64,
    to: u64,
    out: &mut Vec<(u64, u64)>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        match src.next_data(at) {
            Ok(None) => return Ok(()), // only a hole from here on
            Ok(Some(data)) => {
                let d = data / BLOCK * BLOCK;
                if d >= to {
                    return Ok(());
                }
                at = at.max(d);
            }
            Err(_) => {} // cannot tell: read
        }
        let n = ((to - at) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], at)?;
        for (i, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
            if block.iter().any(|&b| b != 0) {
                out.push((at + (i as u64) * BLOCK, block.len() as u64));
            }
        }
        at += n as u64;
    }
    Ok(())
}

/// A size as bmaptool's comments show it.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The bmap file for `map`, reading the mapped ranges of `image` for their checksums.
pub fn render(map: &BlockMap, image: &File) -> io::Result<String> {
    let mut buf = vec![0u8; 1 << 20];
    let mut sums = Vec::with_capacity(map.ranges.len());
    for (from, to) in map.byte_ranges() {
        let mut h = Sha256::new();
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(buf.len());
            image.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        sums.push(h.finalize().into());
    }
    Ok(render_sums(map, &sums))
}

/// The bmap file for `map` with the SHA-256 of each range's bytes (one per range, in order:
/// of [`BlockMap::byte_ranges`]), e.g. from the pass that hashes the whole image
/// ([`crate::build::reuse::digests`]).
pub fn render_sums(map: &BlockMap, sums: &[[u8; 32]]) -> String {
    let mut x = String::new();
    let mapped = map.mapped_blocks();
    let blocks = map.blocks();
    let percent = if blocks == 0 {
        0.0
    } else {
        mapped as f64 * 100.0 / blocks as f64
    };
    // Writing to a String cannot fail.
    let _ = write!(
        x,
        r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. It is
     written by piforge from the filesystems' own allocation (partition
     table, FAT clusters in use, ext4 block bitmaps and metadata), in the
     format of bmaptool (github.com/yoctoproject/bmaptool). -->

<bmap version="2.0">
    <!-- Image size in bytes: {} -->
    <ImageSize> {} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {} </BlocksCount>

    <!-- Count of mapped blocks: {} or {:.1}% -->
    <MappedBlocksCount> {} </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>

    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has to be zero (all ASCII "0" symbols).  -->
    <BmapFileChecksum> "#,
        human(map.image_bytes),
        map.image_bytes,
        BLOCK,
        blocks,
        human(mapped * BLOCK),
        percent,
        mapped
    );
    let checksum_at = x.len();
    x.push_str(&"0".repeat(64));
    x.push_str(
        r#" </BmapFileChecksum>

    <!-- The block map which consists of elements which may either be a
         range of blocks or a single block. The 'chksum' attribute
         (if present) is the checksum of this blocks range. -->
    <BlockMap>
"#,
    );
    for (&(first, last), sum) in map.ranges.iter().zip(sums) {
        let sum = hex::encode(sum);
        if first == last {
            let _ = writeln!(x, "        <Range chksum=\"{sum}\"> {first} </Range>");
        } else {
            let _ = writeln!(
                x,
                "        <Range chksum=\"{sum}\"> {first}-{last} </Range>"
            );
        }
    }
    x.push_str("    </BlockMap>\n</bmap>\n");
    let sum = hex::encode(Sha256::digest(x.as_bytes()));
    x.replace_range(checksum_at..checksum_at + 64, &sum);
    x
}

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub map: BlockMap,
    pub bytes: u64,
    pub sha256: String,
}

/// Maps `image` and writes its bmap file to `dest` (whole or not at all).
pub fn write(image: &Path, dest: &Path) -> io::Result<Written> {
    let map = map_image(image)?;
    let text = render(&map, &File::open(image)?)?;
    let mut f = crate::output::AtomicFile::create(dest)?;
    f.file().write_all(text.as_bytes())?;
    f.commit()?;
    Ok(Written {
        map,
        bytes: text.len() as u64,
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_become_merged_block_ranges() {
        let m = BlockMap::from_byte_ranges(
            10 * BLOCK + 100,
            vec![
                (0, 512),
                (4096, 1),
                (3 * BLOCK + 5, BLOCK),
                (10 * BLOCK, 1 << 20),
            ],
        );
        assert_eq!(m.ranges, vec![(0, 1), (3, 4), (10, 10)]);
        assert_eq!(m.blocks(), 11);
        assert_eq!(m.mapped_blocks(), 5);
        assert!(m.is_mapped(4 * BLOCK + 7) && !m.is_mapped(2 * BLOCK));
        // Cut at every 4 MiB (1024 blocks).
        let m = BlockMap::from_byte_ranges(3 << 22, vec![(4096, (9 << 20) - 4096)]);
        assert_eq!(m.ranges, vec![(1, 1023), (1024, 2047), (2048, 2303)]);
        assert_eq!(m.mapped_blocks(), 2303);
        assert!(m.is_mapped(4 << 20) && !m.is_mapped(9 << 20));
    }

    #[test]
    fn the_file_checksum_is_over_the_file_with_zeros_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.img");
        let mut data = vec![0u8; 3 * BLOCK as usize + 10];
        data[BLOCK as usize] = 1;
        data[3 * BLOCK as usize + 9] = 2;
        std::fs::write(&p, &data).unwrap();
        let map = BlockMap::from_byte_ranges(data.len() as u64, vec![(BLOCK, 1), (3 * BLOCK, 10)]);
        let text = render(&map, &File::open(&p).unwrap()).unwrap();
        let start = text.find("<BmapFileChecksum> ").unwrap() + 19;
        let sum = &text[start..start + 64];
        let mut zeroed = text.clone();
        zeroed.replace_range(start..start + 64, &"0".repeat(64));
        assert_eq!(sum, hex::encode(Sha256::digest(zeroed.as_bytes())));
        // The short last block's checksum covers its 10 bytes only.
        let tail = hex::encode(Sha256::digest(&data[3 * BLOCK as usize..]));
        assert!(
            text.contains(&format!("<Range chksum=\"{tail}\"> 3 </Range>")),
            "{text}"
        );
    }
}
