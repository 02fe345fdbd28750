//! Which bytes of a FAT volume are in use: the reserved sectors (boot sector, FSInfo, backup
//! boot sector), every FAT, the FAT12/16 root directory, and each cluster whose FAT entry is
//! not free (0). The first FAT decides; a cluster free there but marked in a second copy is a
//! disagreement `fsck.vfat` repairs from the first.

use std::io::{self, Read, Seek, SeekFrom};

use super::fat_chains::{entry, geometry};

/// The FAT the walk reads at most (a FAT32 volume of 2 TiB with 32 KiB clusters has a 256 MiB
/// FAT; a boot partition's is under 1 MiB). Larger: `None`, and the caller maps the volume by
/// content instead.
const FAT_MAX: u64 = 64 << 20;

/// The byte ranges `(start, len)` in use in the FAT volume at the start of `dev` (`len` bytes
/// long), in increasing order and clipped to `len`; `None` when the boot sector is not one
/// this module understands (the caller then keeps every non-zero block).
pub fn used_ranges<D: Read + Seek>(dev: &mut D, len: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    let mut bs = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    if dev.read_exact(&mut bs).is_err() {
        return Ok(None);
    }
    let Some(g) = geometry(&bs) else {
        return Ok(None);
    };
    if g.fat_bytes > FAT_MAX || g.data_offset > len {
        return Ok(None);
    }
    let mut fat = vec![0u8; g.fat_bytes as usize];
    dev.seek(SeekFrom::Start(g.fat_offset))?;
    if dev.read_exact(&mut fat).is_err() {
        return Ok(None);
    }
    let mut out: Vec<(u64, u64)> = vec![(0, g.data_offset)];
    let mut push = |start: u64, n: u64| {
        let end = start.saturating_add(n).min(len);
        if end <= start {
            return;
        }
        match out.last_mut() {
            Some(last) if last.0 + last.1 == start => last.1 = end - last.0,
            _ => out.push((start, end - start)),
        }
    };
    for c in 2..g.clusters + 2 {
        if entry(&fat, &g, c) != 0 {
            push(
                g.data_offset + u64::from(c - 2) * g.cluster_bytes,
                g.cluster_bytes,
            );
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn metadata_and_clusters_in_use_only() {
        // FAT16: 512-byte sectors, 4 sectors per cluster, 1 reserved sector, 2 FATs of 20
        // sectors, 512 root entries (32 sectors), 5000 clusters.
        let (clusters, spc, fat_sectors) = (5000u32, 4u32, 20u16);
        let total = 1 + 2 * u32::from(fat_sectors) + 32 + clusters * spc;
        let mut d = vec![0u8; total as usize * 512];
        d[11..13].copy_from_slice(&512u16.to_le_bytes());
        d[13] = spc as u8;
        d[14..16].copy_from_slice(&1u16.to_le_bytes());
        d[16] = 2;
        d[17..19].copy_from_slice(&512u16.to_le_bytes());
        d[32..36].copy_from_slice(&total.to_le_bytes());
        d[22..24].copy_from_slice(&fat_sectors.to_le_bytes());
        for (c, v) in [(2u32, 3u16), (3, 0xffff), (7, 0xffff)] {
            let at = 512 + c as usize * 2;
            d[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        let len = d.len() as u64;
        let data = (1 + 40 + 32) * 512;
        let r = used_ranges(&mut Cursor::new(d), len).unwrap().unwrap();
        // Cluster 2 starts right after the root directory: it joins the metadata run.
        assert_eq!(r, vec![(0, data + 2 * 2048), (data + 5 * 2048, 2048)]);
    }

    #[test]
    fn not_a_fat_volume_is_none() {
        let d = vec![0u8; 4096];
        assert!(used_ranges(&mut Cursor::new(d), 4096).unwrap().is_none());
    }
}
