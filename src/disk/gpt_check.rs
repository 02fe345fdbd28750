//! Sanity checks on GPT headers before the `gpt` crate sees them.
//!
//! The crate trusts the header's partition-entry size and count: an entry size other than 128
//! (0, 1, 65536, 0xFFFFFFFF, with a valid CRC) makes it panic, and a huge count makes it
//! allocate without bound. piforge reads only the layout the UEFI specification describes, so
//! each header found (primary at LBA 1, its backup, the last sector) is checked here first.

use std::io::{Read, Seek, SeekFrom};

use super::layout::{DiskError, SECTOR};

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The entry size of every GPT in practice, and the only one the `gpt` crate handles.
const ENTRY_BYTES: u32 = 128;
/// More entries than any partitioning tool writes (128 is the default; 16384 entries take
/// 2 MiB), so a corrupt count cannot make piforge read or allocate without bound.
const MAX_ENTRIES: u32 = 16384;

/// Checks every GPT header the disk has; a sector without the signature is not a header.
pub fn check_headers<D: Read + Seek>(dev: &mut D, image_bytes: u64) -> Result<(), DiskError> {
    let sectors = image_bytes / SECTOR;
    let primary = read_sector(dev, 1, sectors)?;
    let mut backup_lba = sectors.checked_sub(1);
    if let Some(h) = &primary {
        check_header(h, "primary", sectors)?;
        backup_lba = Some(u64_at(h, 32));
    }
    if let Some(lba) = backup_lba.filter(|&l| l > 1) {
        if let Some(h) = read_sector(dev, lba, sectors)? {
            check_header(&h, "backup", sectors)?;
        }
    }
    Ok(())
}

fn read_sector<D: Read + Seek>(
    dev: &mut D,
    lba: u64,
    sectors: u64,
) -> Result<Option<[u8; 512]>, DiskError> {
    if lba >= sectors {
        return Ok(None);
    }
    let mut buf = [0u8; 512];
    dev.seek(SeekFrom::Start(lba * SECTOR))?;
    dev.read_exact(&mut buf)?;
    Ok((&buf[..8] == SIGNATURE).then_some(buf))
}

fn check_header(h: &[u8; 512], which: &str, sectors: u64) -> Result<(), DiskError> {
    let bad = |what: String| DiskError::Gpt(format!("the {which} GPT header {what}"));
    let header_size = u32_at(h, 12);
    if !(92..=512).contains(&header_size) {
        return Err(bad(format!(
            "says it is {header_size} bytes long (92 to 512 are valid)"
        )));
    }
    let count = u32_at(h, 80);
    let entry = u32_at(h, 84);
    if entry != ENTRY_BYTES {
        return Err(bad(format!(
            "has {entry}-byte partition entries; piforge reads only the standard {ENTRY_BYTES}"
        )));
    }
    if count > MAX_ENTRIES {
        return Err(bad(format!(
            "lists {count} partition entries, more than the {MAX_ENTRIES} piforge accepts"
        )));
    }
    let first = u64_at(h, 72);
    let end = u64::from(count)
        .checked_mul(u64::from(entry))
        .map(|b| b.div_ceil(SECTOR))
        .and_then(|n| first.checked_add(n));
    match end {
        Some(end) if first >= 1 && end <= sectors => Ok(()),
        _ => Err(bad(format!(
            "puts its partition entries at sector {first}, outside the {sectors}-sector image"
        ))),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::super::layout::read_layout;
    use super::*;
    use std::io::Cursor;

    /// CRC-32 (IEEE), as GPT uses it.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A 1 MiB disk with a protective MBR and a primary GPT whose CRCs are valid, holding one
    /// partition `first..=last` and entries of `entry_size` bytes.
    fn disk(entry_size: u32, count: u32, first: u64, last: u64) -> Vec<u8> {
        let sectors = 2048u64;
        let mut d = vec![0u8; (sectors * SECTOR) as usize];
        d[446 + 4] = 0xee;
        d[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        d[446 + 12..446 + 16].copy_from_slice(&((sectors - 1) as u32).to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
        // One 128-byte entry at LBA 2 (whatever the header claims the size is).
        let e = 2 * SECTOR as usize;
        d[e..e + 16].copy_from_slice(&[0xaf; 16]); // a type GUID that is not "unused"
        d[e + 16..e + 32].copy_from_slice(&[0x11; 16]);
        d[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
        d[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
        let entries_len = (u64::from(count) * u64::from(entry_size)).min(32 * SECTOR) as usize;
        let entries_crc = crc32(&d[e..e + entries_len]);
        let h = SECTOR as usize;
        d[h..h + 8].copy_from_slice(SIGNATURE);
        d[h + 8..h + 12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        d[h + 12..h + 16].copy_from_slice(&92u32.to_le_bytes());
        d[h + 24..h + 32].copy_from_slice(&1u64.to_le_bytes());
        d[h + 32..h + 40].copy_from_slice(&(sectors - 1).to_le_bytes());
        d[h + 40..h + 48].copy_from_slice(&34u64.to_le_bytes());
        d[h + 48..h + 56].copy_from_slice(&(sectors - 34).to_le_bytes());
        d[h + 56..h + 72].copy_from_slice(&[0x22; 16]);
        d[h + 72..h + 80].copy_from_slice(&2u64.to_le_bytes());
        d[h + 80..h + 84].copy_from_slice(&count.to_le_bytes());
        d[h + 84..h + 88].copy_from_slice(&entry_size.to_le_bytes());
        d[h + 88..h + 92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&d[h..h + 92]);
        d[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
        d
    }

    #[test]
    fn odd_entry_sizes_are_refused_not_panicked_on() {
        for size in [0u32, 1, 64, 65536, u32::MAX] {
            let e = read_layout(&mut Cursor::new(disk(size, 128, 34, 100))).unwrap_err();
            assert!(e.to_string().contains("partition entries"), "{size}: {e}");
        }
        let e = read_layout(&mut Cursor::new(disk(128, u32::MAX, 34, 100))).unwrap_err();
        assert!(e.to_string().contains("more than the 16384"), "{e}");
    }

    #[test]
    fn an_entry_ending_at_the_last_possible_sector_is_an_error() {
        let e = read_layout(&mut Cursor::new(disk(128, 128, 34, u64::MAX))).unwrap_err();
        assert!(
            matches!(e, DiskError::Gpt(_) | DiskError::PastEnd { .. }),
            "{e}"
        );
        let e = read_layout(&mut Cursor::new(disk(128, 128, 0, u64::MAX))).unwrap_err();
        assert!(e.to_string().contains("larger than any disk"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Headers with valid CRCs and arbitrary entry geometry and partition bounds: an error
        /// or a layout inside the disk, never a panic.
        #[test]
        fn valid_crc_headers_never_panic(
            entry in proptest::prop_oneof![
                proptest::prelude::Just(128u32),
                proptest::prelude::any::<u32>()
            ],
            count in proptest::prop_oneof![
                proptest::prelude::Just(128u32),
                0u32..300,
                proptest::prelude::any::<u32>()
            ],
            first in proptest::prelude::any::<u64>(),
            last in proptest::prelude::any::<u64>(),
            small in proptest::prelude::any::<bool>(),
        ) {
            let (first, last) = if small { (first % 4096, last % 4096) } else { (first, last) };
            if let Ok(l) = read_layout(&mut Cursor::new(disk(entry, count, first, last))) {
                for p in &l.partitions {
                    proptest::prop_assert!(p.start_bytes.checked_add(p.size_bytes).is_some());
                    proptest::prop_assert!(p.end_bytes() <= 2048 * SECTOR);
                }
            }
        }
    }

    #[test]
    fn a_valid_table_still_reads() {
        let l = read_layout(&mut Cursor::new(disk(128, 128, 34, 100))).unwrap();
        assert_eq!(l.partitions.len(), 1);
        assert_eq!(l.partitions[0].start_bytes, 34 * SECTOR);
        assert_eq!(l.partitions[0].size_bytes, 67 * SECTOR);
    }
}
