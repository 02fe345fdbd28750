//! A check of a FAT volume's cluster chains before fatfs sees it.
//!
//! fatfs follows a directory's cluster chain until it ends, so a chain that loops back on
//! itself (FAT[2] = 2 for a FAT32 root directory) makes listing that directory, or opening
//! anything under it, run forever. Every chain is checked here at once: the FAT is read once
//! and walked as a graph of "cluster -> next cluster", where a cycle anywhere is refused. The
//! walk visits each cluster at most once, so it is bounded by the cluster count.

use std::io::{self, Read, Seek, SeekFrom};

/// The geometry the check needs, from the boot sector.
struct Geometry {
    fat_offset: u64,
    fat_bytes: u64,
    /// Data clusters; valid cluster numbers are `2..clusters + 2`.
    clusters: u32,
    bits: u8,
    /// Where cluster 2 starts, and a cluster's size, in bytes.
    data_offset: u64,
    cluster_bytes: u64,
    /// FAT12/16: the fixed root directory region `(offset, bytes)`; FAT32: `None` (the root
    /// directory is the chain at `root_cluster`).
    root_region: Option<(u64, u64)>,
    root_cluster: u32,
}

fn u16_at(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `None` when the boot sector is not one this check understands; fatfs then judges it.
fn geometry(bs: &[u8; 512]) -> Option<Geometry> {
    let bytes_per_sector = u16_at(bs, 11);
    let sectors_per_cluster = u32::from(bs[13]);
    let reserved = u16_at(bs, 14);
    let fats = u32::from(bs[16]);
    let root_entries = u16_at(bs, 17);
    let total = match u16_at(bs, 19) {
        0 => u32_at(bs, 32),
        n => n,
    };
    let fat_sectors = match u16_at(bs, 22) {
        0 => u32_at(bs, 36),
        n => n,
    };
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        || sectors_per_cluster == 0
        || fats == 0
        || fat_sectors == 0
    {
        return None;
    }
    let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let meta =
        u64::from(reserved) + u64::from(fats) * u64::from(fat_sectors) + u64::from(root_sectors);
    let data_sectors = u64::from(total).checked_sub(meta)?;
    let clusters = u32::try_from(data_sectors / u64::from(sectors_per_cluster)).ok()?;
    // The FAT type follows from the cluster count alone (Microsoft's FAT specification).
    let bits = match clusters {
        0..=4084 => 12,
        4085..=65524 => 16,
        _ => 32,
    };
    let fat_bytes = u64::from(fat_sectors) * u64::from(bytes_per_sector);
    let needed = (u64::from(clusters) + 2) * u64::from(bits) / 8 + 2;
    if needed > fat_bytes {
        return None;
    }
    let bps = u64::from(bytes_per_sector);
    let root_start = (u64::from(reserved) + u64::from(fats) * u64::from(fat_sectors)) * bps;
    Some(Geometry {
        fat_offset: u64::from(reserved) * bps,
        fat_bytes,
        clusters,
        bits,
        data_offset: meta * bps,
        cluster_bytes: u64::from(sectors_per_cluster) * bps,
        root_region: (bits != 32).then_some((root_start, u64::from(root_sectors) * bps)),
        root_cluster: u32_at(bs, 44),
    })
}

/// Next cluster of `c`, or `None` at the end of a chain (end mark, free, bad or out of range).
fn next(fat: &[u8], g: &Geometry, c: u32) -> Option<u32> {
    let n = match g.bits {
        12 => {
            let at = (c as usize * 3) / 2;
            let v = u16_at(fat, at);
            if c & 1 == 1 {
                v >> 4
            } else {
                v & 0xfff
            }
        }
        16 => u16_at(fat, c as usize * 2),
        _ => u32_at(fat, c as usize * 4) & 0x0fff_ffff,
    };
    (n >= 2 && n < g.clusters + 2).then_some(n)
}

/// The first cluster of a chain that loops, if any (reads the first FAT of the volume at the
/// start of `dev`). Leaves `dev` at its start, where fatfs expects it.
pub fn find_loop<D: Read + Seek>(dev: &mut D) -> io::Result<Option<u32>> {
    let found = walk(dev);
    dev.seek(SeekFrom::Start(0))?;
    found
}

fn walk<D: Read + Seek>(dev: &mut D) -> io::Result<Option<u32>> {
    let mut bs = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut bs)?;
    let Some(g) = geometry(&bs) else {
        return Ok(None);
    };
    let mut fat = vec![
        0u8;
        usize::try_from(g.fat_bytes)
            .unwrap_or(usize::MAX)
            .min(64 << 20)
    ];
    dev.seek(SeekFrom::Start(g.fat_offset))?;
    dev.read_exact(&mut fat)?;
    if ((u64::from(g.clusters) + 2) * u64::from(g.bits) / 8 + 2) > fat.len() as u64 {
        return Ok(None);
    }
    // 0: not seen; 1: on the chain being walked; 2: known to end.
    let mut state = vec![0u8; g.clusters as usize + 2];
    let mut path = Vec::new();
    for start in 2..g.clusters + 2 {
        let mut c = start;
        loop {
            match state[c as usize] {
                2 => break,
                1 => return Ok(Some(c)),
                _ => {}
            }
            state[c as usize] = 1;
            path.push(c);
            match next(&fat, &g, c) {
                Some(n) => c = n,
                None => break,
            }
        }
        for c in path.drain(..) {
            state[c as usize] = 2;
        }
    }
    Ok(None)
}

/// What holds byte `offset` of a FAT volume (at the start of `dev`): the boot sector, the
/// FAT, the root directory, or the file or directory whose cluster chain has that cluster
/// (path from the volume's root, long names where the directory has them), or a free cluster.
pub fn locate<D: Read + Seek>(dev: &mut D, offset: u64) -> io::Result<String> {
    let mut bs = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut bs)?;
    let Some(g) = geometry(&bs) else {
        return Ok("an unrecognized FAT volume".into());
    };
    if offset < g.fat_offset {
        return Ok("the FAT boot sector (reserved sectors)".into());
    }
    if offset < g.data_offset && g.root_region.is_none_or(|(r, _)| offset < r) {
        return Ok("the file allocation table".into());
    }
    if offset < g.data_offset {
        return Ok("the root directory".into());
    }
    let target = u32::try_from((offset - g.data_offset) / g.cluster_bytes)
        .ok()
        .and_then(|c| c.checked_add(2))
        .filter(|c| *c < g.clusters + 2);
    let Some(target) = target else {
        return Ok("past the last cluster".into());
    };
    let mut fat = vec![0u8; usize::try_from(g.fat_bytes).unwrap_or(0).min(64 << 20)];
    dev.seek(SeekFrom::Start(g.fat_offset))?;
    dev.read_exact(&mut fat)?;
    let chain = |start: u32| -> Vec<u32> {
        let mut out = Vec::new();
        let mut c = start;
        while c >= 2 && c < g.clusters + 2 && out.len() <= g.clusters as usize {
            out.push(c);
            match next(&fat, &g, c) {
                Some(n) => c = n,
                None => break,
            }
        }
        out
    };
    // (path, directory bytes), breadth first from the root; each directory visited once.
    let read_clusters = |dev: &mut D, cs: &[u32]| -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        for &c in cs.iter().take(4096) {
            let mut buf = vec![0u8; g.cluster_bytes as usize];
            dev.seek(SeekFrom::Start(
                g.data_offset + u64::from(c - 2) * g.cluster_bytes,
            ))?;
            dev.read_exact(&mut buf)?;
            data.extend_from_slice(&buf);
        }
        Ok(data)
    };
    let root = match g.root_region {
        Some((off, len)) => {
            let mut b = vec![0u8; len as usize];
            dev.seek(SeekFrom::Start(off))?;
            dev.read_exact(&mut b)?;
            b
        }
        None => {
            let cs = chain(g.root_cluster);
            if cs.contains(&target) {
                return Ok("the root directory".into());
            }
            read_clusters(dev, &cs)?
        }
    };
    let mut queue = vec![(String::new(), root)];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((dir, data)) = queue.pop() {
        let mut lfn: Vec<(u8, String)> = Vec::new();
        for e in data.chunks_exact(32) {
            match e[0] {
                0 => break,
                0xe5 => {
                    lfn.clear();
                    continue;
                }
                _ => {}
            }
            if e[11] == 0x0f {
                let units: Vec<u16> = [1..11, 14..26, 28..32]
                    .into_iter()
                    .flat_map(|r| {
                        e[r].chunks_exact(2)
                            .map(|p| u16::from_le_bytes([p[0], p[1]]))
                    })
                    .take_while(|&u| u != 0 && u != 0xffff)
                    .collect();
                lfn.push((e[0] & 0x1f, String::from_utf16_lossy(&units)));
                continue;
            }
            let name = if lfn.is_empty() {
                let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_string();
                let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
                if ext.is_empty() {
                    base
                } else {
                    format!("{base}.{ext}")
                }
            } else {
                lfn.sort_by_key(|(n, _)| *n);
                lfn.iter().map(|(_, s)| s.as_str()).collect()
            };
            lfn.clear();
            if e[11] & 0x08 != 0 || name == "." || name == ".." {
                continue; // the volume label, or a directory's links
            }
            let first = (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
                | u32::from(u16::from_le_bytes([e[26], e[27]]));
            let path = format!("{dir}/{name}");
            let cs = chain(first);
            if cs.contains(&target) {
                return Ok(path);
            }
            if e[11] & 0x10 != 0 && seen.insert(first) {
                queue.push((path, read_clusters(dev, &cs)?));
            }
        }
    }
    Ok(format!("cluster {target}, which no file uses"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    /// A FAT16 volume: 512-byte sectors, 1 sector per cluster, 1 reserved sector, one FAT of
    /// `fat_sectors`, 512 root entries (32 sectors), `clusters` data clusters.
    fn fat16(clusters: u32, fat_sectors: u16, fat: &[(u32, u16)]) -> Vec<u8> {
        let total = 1 + u32::from(fat_sectors) + 32 + clusters;
        let mut d = vec![0u8; total as usize * 512];
        d[0] = 0xeb;
        d[11..13].copy_from_slice(&512u16.to_le_bytes());
        d[13] = 1;
        d[14..16].copy_from_slice(&1u16.to_le_bytes());
        d[16] = 1;
        d[17..19].copy_from_slice(&512u16.to_le_bytes());
        d[32..36].copy_from_slice(&total.to_le_bytes());
        d[22..24].copy_from_slice(&fat_sectors.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
        for &(c, v) in fat {
            let at = 512 + c as usize * 2;
            d[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        d
    }

    #[test]
    fn chains_that_end_pass_and_a_cycle_anywhere_is_found() {
        // 2 -> 3 -> 4 -> end, 5 -> 6 -> end
        let ok = fat16(
            5000,
            20,
            &[(2, 3), (3, 4), (4, 0xffff), (5, 6), (6, 0xfff8)],
        );
        assert_eq!(find_loop(&mut Cursor::new(ok)).unwrap(), None);
        // 10 -> 11 -> 12 -> 11
        let bad = fat16(5000, 20, &[(10, 11), (11, 12), (12, 11)]);
        let mut dev = Cursor::new(bad);
        assert_eq!(find_loop(&mut dev).unwrap(), Some(11));
        assert_eq!(dev.position(), 0, "left at the start for fatfs");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_boot_sectors_and_fats_never_panic(
            bs in proptest::collection::vec(any::<u8>(), 512),
            fat in proptest::collection::vec(any::<u8>(), 0..65536),
        ) {
            let mut d = bs;
            d.extend_from_slice(&fat);
            let _ = find_loop(&mut Cursor::new(d));
        }

        #[test]
        fn arbitrary_fat16_tables_never_panic(
            entries in proptest::collection::vec((2u32..5002, any::<u16>()), 0..400),
        ) {
            let _ = find_loop(&mut Cursor::new(fat16(5000, 20, &entries)));
        }
    }
}
