//! The master boot record: the one place that knows its byte layout, for reading (the four
//! primary entries, the disk id) and for writing (disk id, a grown entry, the protective entry of
//! a GPT disk).
//!
//! The four primary entries are parsed here rather than by `mbrman`, whose reader panics on some
//! malformed tables (an entry starting at sector 0, found by the property tests).

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Bytes 440..444: the 32-bit disk signature, the prefix of `PARTUUID=<id>-0N`.
const DISK_ID_AT: usize = 440;
/// Bytes 446..510: four 16-byte primary entries.
const TABLE_AT: usize = 446;
const ENTRY_BYTES: usize = 16;
/// The type byte of the one entry a GPT disk's protective MBR has.
pub const PROTECTIVE: u8 = 0xee;

/// One primary entry as stored (LBA fields in sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    /// 1-based, as Linux numbers partitions.
    pub index: u32,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

impl MbrEntry {
    pub fn is_used(&self) -> bool {
        self.kind != 0 && self.sectors != 0
    }
}

/// The first sector of a disk, with the boot signature checked.
#[derive(Clone)]
pub struct Mbr {
    raw: [u8; 512],
}

impl std::fmt::Debug for Mbr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbr")
            .field("disk_id", &format_args!("{:08x}", self.disk_id()))
            .field("entries", &self.entries())
            .finish()
    }
}

impl Mbr {
    /// The MBR in `raw`, or `None` when the boot signature 55 AA is missing.
    pub fn from_bytes(raw: [u8; 512]) -> Option<Mbr> {
        (raw[510..512] == [0x55, 0xaa]).then_some(Mbr { raw })
    }

    /// Reads sector 0 of `dev`; `None` when it has no boot signature.
    pub fn read_from<D: Read + Seek>(dev: &mut D) -> io::Result<Option<Mbr>> {
        let mut raw = [0u8; 512];
        dev.seek(SeekFrom::Start(0))?;
        dev.read_exact(&mut raw)?;
        Ok(Mbr::from_bytes(raw))
    }

    /// Writes sector 0 back.
    pub fn write_into<D: Write + Seek>(&self, dev: &mut D) -> io::Result<()> {
        dev.seek(SeekFrom::Start(0))?;
        dev.write_all(&self.raw)
    }

    pub fn disk_id(&self) -> u32 {
        u32::from_le_bytes(le4(&self.raw, DISK_ID_AT))
    }

    pub fn set_disk_id(&mut self, id: u32) {
        self.raw[DISK_ID_AT..DISK_ID_AT + 4].copy_from_slice(&id.to_le_bytes());
    }

    /// The four primary entries, used or not.
    pub fn entries(&self) -> [MbrEntry; 4] {
        std::array::from_fn(|i| {
            let e = TABLE_AT + i * ENTRY_BYTES;
            MbrEntry {
                index: i as u32 + 1,
                kind: self.raw[e + 4],
                start: u32::from_le_bytes(le4(&self.raw, e + 8)),
                sectors: u32::from_le_bytes(le4(&self.raw, e + 12)),
            }
        })
    }

    /// A protective MBR (an entry of type 0xEE) announces a GPT.
    pub fn is_protective(&self) -> bool {
        self.entries().iter().any(|e| e.kind == PROTECTIVE)
    }

    /// Sets the length of primary entry `index` (1-based) and its last CHS address to the
    /// "beyond CHS" marker, as fdisk does for large disks. `false` when there is no such entry.
    pub fn set_sectors(&mut self, index: u32, sectors: u32) -> bool {
        let Some(e) = Self::entry_at(index) else {
            return false;
        };
        self.raw[e + 5..e + 8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        self.raw[e + 12..e + 16].copy_from_slice(&sectors.to_le_bytes());
        true
    }

    /// Makes every protective (0xEE) entry cover a disk of `disk_sectors` sectors (capped at
    /// 2^32-1, as the UEFI specification says).
    pub fn set_protective_size(&mut self, disk_sectors: u64) {
        let size = u32::try_from(disk_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
        for e in self.entries() {
            if e.kind == PROTECTIVE {
                if let Some(at) = Self::entry_at(e.index) {
                    self.raw[at + 12..at + 16].copy_from_slice(&size.to_le_bytes());
                }
            }
        }
    }

    fn entry_at(index: u32) -> Option<usize> {
        (1..=4)
            .contains(&index)
            .then(|| TABLE_AT + (index as usize - 1) * ENTRY_BYTES)
    }
}

fn le4(raw: &[u8], at: usize) -> [u8; 4] {
    [raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_edits_and_writes_back_only_what_changed() {
        let mut raw = [0u8; 512];
        raw[0] = 0xfa; // boot code stays
        raw[510] = 0x55;
        raw[511] = 0xaa;
        raw[446 + 16 + 4] = 0x83;
        raw[446 + 16 + 8..446 + 16 + 12].copy_from_slice(&100u32.to_le_bytes());
        raw[446 + 16 + 12..446 + 16 + 16].copy_from_slice(&50u32.to_le_bytes());
        let mut m = Mbr::from_bytes(raw).unwrap();
        assert_eq!(m.entries()[1].start, 100);
        assert!(m.entries()[1].is_used() && !m.entries()[0].is_used());
        m.set_disk_id(0x1122_3344);
        assert!(m.set_sectors(2, 4096));
        assert!(!m.set_sectors(5, 1));
        let mut disk = Cursor::new(vec![0u8; 1024]);
        m.write_into(&mut disk).unwrap();
        let d = disk.into_inner();
        assert_eq!(&d[440..444], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&d[446 + 16 + 5..446 + 16 + 8], &[0xfe, 0xff, 0xff]);
        assert_eq!(&d[446 + 16 + 12..446 + 16 + 16], &4096u32.to_le_bytes());
        assert_eq!(d[0], 0xfa);
        assert_eq!(&d[512..], &[0u8; 512][..]);
        let back = Mbr::read_from(&mut Cursor::new(d)).unwrap().unwrap();
        assert_eq!(back.disk_id(), 0x1122_3344);
        assert!(Mbr::from_bytes([0u8; 512]).is_none());
    }

    #[test]
    fn protective_entry_is_capped() {
        let mut raw = [0u8; 512];
        raw[510] = 0x55;
        raw[511] = 0xaa;
        raw[446 + 4] = PROTECTIVE;
        let mut m = Mbr::from_bytes(raw).unwrap();
        assert!(m.is_protective());
        m.set_protective_size(1 << 40);
        assert_eq!(m.entries()[0].sectors, u32::MAX);
        m.set_protective_size(2048);
        assert_eq!(m.entries()[0].sectors, 2047);
    }
}
