//! Reading partition tables (MBR through [`super::mbr`], GPT through `gpt` after
//! [`super::gpt_check`]) and finding the boot and root partitions of a Raspberry Pi image by
//! type, label and filesystem magic, never by index alone.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use serde::Serialize;

use super::io::ReadOnly;
use super::mbr::Mbr;
use super::probe::probe_fs;

pub const SECTOR: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("the image is {0} bytes, too small to hold a partition table")]
    TooSmall(u64),
    #[error("the image has no partition table (no MBR boot signature 55 AA at byte 510)")]
    NoTable,
    #[error("the partition table lists no partitions")]
    NoPartitions,
    #[error("the MBR partition table cannot be read: {0}")]
    Mbr(String),
    #[error("the GPT partition table cannot be read: {0}")]
    Gpt(String),
    #[error("partition {index} ends at byte {end}, past the end of the image ({size} bytes): the image is truncated or the table is corrupt")]
    PastEnd { index: u32, end: u64, size: u64 },
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: u32, b: u32 },
    #[error("reading the image failed: {0}")]
    Io(#[from] io::Error),
}

/// Which partition-table scheme the image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Mbr,
    Gpt,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Mbr => "mbr",
            Scheme::Gpt => "gpt",
        })
    }
}

/// What the first bytes of a partition say it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// FAT12/16/32 (`variant` is "fat12", "fat16" or "fat32").
    Vfat,
    Ext2,
    Ext3,
    Ext4,
    Unknown,
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Filesystem::Vfat => "vfat",
            Filesystem::Ext2 => "ext2",
            Filesystem::Ext3 => "ext3",
            Filesystem::Ext4 => "ext4",
            Filesystem::Unknown => "unknown",
        })
    }
}

/// One partition of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based, as Linux numbers them (`PARTUUID=<disk id>-0N`, `/dev/mmcblk0pN`).
    pub index: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// MBR: the type byte as `0x0c`; GPT: the type GUID.
    #[serde(rename = "type")]
    pub type_id: String,
    /// A readable name for the type ("W95 FAT32 (LBA)", "Linux", "EFI System", ...).
    pub type_name: String,
    /// GPT partition name (MBR has none).
    pub name: Option<String>,
    pub label: Option<String>,
    pub filesystem: Filesystem,
    pub fs_uuid: Option<String>,
}

impl Partition {
    /// Where the partition ends (a layout from [`read_layout`] never overflows here).
    pub fn end_bytes(&self) -> u64 {
        self.start_bytes.saturating_add(self.size_bytes)
    }
}

/// The partition table of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskLayout {
    pub scheme: Scheme,
    /// MBR: the 32-bit disk signature (bytes 440..443) as 8 lowercase hex digits, the prefix of
    /// `PARTUUID=<id>-0N`; GPT: the disk GUID.
    pub disk_id: String,
    pub image_bytes: u64,
    pub partitions: Vec<Partition>,
}

/// MBR type bytes that hold a FAT filesystem.
const MBR_FAT_TYPES: [u8; 6] = [0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e];
const MBR_LINUX: u8 = 0x83;
const MBR_EFI: u8 = 0xef;

/// GPT type GUIDs (upper case, as `uuid` prints them in `Display` upper form).
const GPT_EFI: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const GPT_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
const GPT_LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const GPT_ROOT_ARM64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";

/// Boot-partition labels used by the supported upstream images, best first.
pub const BOOT_LABELS: [&str; 4] = ["bootfs", "system-boot", "RASPIFIRM", "boot"];
/// Root-partition labels used by the supported upstream images, best first.
pub const ROOT_LABELS: [&str; 4] = ["rootfs", "writable", "RASPIROOT", "root"];

fn mbr_type_name(t: u8) -> &'static str {
    match t {
        0x01 => "FAT12",
        0x04 | 0x06 => "FAT16",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x05 | 0x0f | 0x85 => "Extended",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xee => "GPT protective",
        0xef => "EFI System",
        _ => "unknown",
    }
}

fn gpt_type_name(guid: &str) -> &'static str {
    match guid {
        GPT_EFI => "EFI System",
        GPT_BASIC_DATA => "Microsoft basic data",
        GPT_LINUX_FS => "Linux filesystem",
        GPT_ROOT_ARM64 => "Linux root (ARM-64)",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        _ => "unknown",
    }
}

/// Reads the partition table of an image and probes each partition's filesystem.
pub fn read_layout<D: Read + Seek + fmt::Debug>(dev: &mut D) -> Result<DiskLayout, DiskError> {
    let image_bytes = dev.seek(SeekFrom::End(0))?;
    if image_bytes < 2 * SECTOR {
        return Err(DiskError::TooSmall(image_bytes));
    }
    let mbr = Mbr::read_from(dev)?.ok_or(DiskError::NoTable)?;
    // A protective MBR (one entry of type 0xEE) announces GPT.
    let (scheme, disk_id, mut parts) = if mbr.is_protective() {
        super::gpt_check::check_headers(dev, image_bytes)?;
        read_gpt(dev)?
    } else {
        read_mbr(&mbr)?
    };
    if parts.is_empty() {
        return Err(DiskError::NoPartitions);
    }
    parts.sort_by_key(|p| p.start_bytes);
    for p in &parts {
        // Checked: a GPT entry can claim up to 2^64-1 sectors.
        match p.start_bytes.checked_add(p.size_bytes) {
            Some(end) if end <= image_bytes => {}
            end => {
                return Err(DiskError::PastEnd {
                    index: p.index,
                    end: end.unwrap_or(u64::MAX),
                    size: image_bytes,
                })
            }
        }
    }
    for w in parts.windows(2) {
        if w[0].end_bytes() > w[1].start_bytes {
            return Err(DiskError::Overlap {
                a: w[0].index,
                b: w[1].index,
            });
        }
    }
    for p in parts.iter_mut() {
        let probe = probe_fs(dev, p.start_bytes, p.size_bytes)?;
        p.filesystem = probe.filesystem;
        p.label = probe.label;
        p.fs_uuid = probe.uuid;
    }
    parts.sort_by_key(|p| p.index);
    Ok(DiskLayout {
        scheme,
        disk_id,
        image_bytes,
        partitions: parts,
    })
}

type TableRead = (Scheme, String, Vec<Partition>);

fn read_mbr(mbr: &Mbr) -> Result<TableRead, DiskError> {
    let disk_id = format!("{:08x}", mbr.disk_id());
    let mut parts = Vec::new();
    for e in mbr.entries().into_iter().filter(|e| e.is_used()) {
        let (index, sys) = (e.index, e.kind);
        if matches!(sys, 0x05 | 0x0f | 0x85) {
            return Err(DiskError::Mbr(format!(
                "partition {index} is an extended partition; logical partitions are not supported"
            )));
        }
        if e.start == 0 {
            return Err(DiskError::Mbr(format!(
                "partition {index} starts at sector 0, on top of the partition table"
            )));
        }
        parts.push(Partition {
            index,
            start_bytes: u64::from(e.start) * SECTOR,
            size_bytes: u64::from(e.sectors) * SECTOR,
            type_id: format!("0x{sys:02x}"),
            type_name: mbr_type_name(sys).to_string(),
            name: None,
            label: None,
            filesystem: Filesystem::Unknown,
            fs_uuid: None,
        });
    }
    Ok((Scheme::Mbr, disk_id, parts))
}

fn read_gpt<D: Read + Seek + fmt::Debug>(dev: &mut D) -> Result<TableRead, DiskError> {
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(ReadOnly(dev))
        .map_err(|e| DiskError::Gpt(e.to_string()))?;
    let disk_id = gpt.guid().to_string();
    let mut parts = Vec::new();
    for (&i, p) in gpt.partitions() {
        if !p.is_used() {
            continue;
        }
        let type_guid = p.part_type_guid.guid.to_string().to_uppercase();
        let bad = |what: &str| DiskError::Gpt(format!("partition {i} {what}"));
        let sectors = p
            .last_lba
            .checked_sub(p.first_lba)
            .ok_or_else(|| bad("ends before it starts"))?
            .checked_add(1)
            .ok_or_else(|| bad("is larger than any disk"))?;
        let bytes = |n: u64| {
            n.checked_mul(SECTOR)
                .ok_or_else(|| bad("is larger than any disk"))
        };
        parts.push(Partition {
            index: i,
            start_bytes: bytes(p.first_lba)?,
            size_bytes: bytes(sectors)?,
            type_name: gpt_type_name(&type_guid).to_string(),
            type_id: type_guid,
            name: Some(p.name.clone()).filter(|n| !n.is_empty()),
            label: None,
            filesystem: Filesystem::Unknown,
            fs_uuid: None,
        });
    }
    Ok((Scheme::Gpt, disk_id, parts))
}

impl DiskLayout {
    pub fn partition(&self, index: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.index == index)
    }

    /// The boot (firmware) partition: a FAT filesystem in a FAT/EFI-typed partition, preferring
    /// the labels the upstream images use.
    pub fn boot_partition(&self) -> Option<&Partition> {
        let fat: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.filesystem == Filesystem::Vfat && self.is_fat_type(p))
            .collect();
        pick_by_label(&fat, &BOOT_LABELS)
    }

    /// The root partition: an ext4 filesystem in a Linux-typed partition, preferring the labels
    /// the upstream images use.
    pub fn root_partition(&self) -> Option<&Partition> {
        let ext: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.filesystem == Filesystem::Ext4 && self.is_linux_type(p))
            .collect();
        pick_by_label(&ext, &ROOT_LABELS)
    }

    fn is_fat_type(&self, p: &Partition) -> bool {
        match self.scheme {
            Scheme::Mbr => parse_mbr_type(&p.type_id)
                .map(|t| MBR_FAT_TYPES.contains(&t) || t == MBR_EFI)
                .unwrap_or(false),
            Scheme::Gpt => p.type_id == GPT_EFI || p.type_id == GPT_BASIC_DATA,
        }
    }

    fn is_linux_type(&self, p: &Partition) -> bool {
        match self.scheme {
            Scheme::Mbr => parse_mbr_type(&p.type_id) == Some(MBR_LINUX),
            Scheme::Gpt => p.type_id == GPT_LINUX_FS || p.type_id == GPT_ROOT_ARM64,
        }
    }
}

fn parse_mbr_type(s: &str) -> Option<u8> {
    u8::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

fn pick_by_label<'a>(cands: &[&'a Partition], labels: &[&str]) -> Option<&'a Partition> {
    for want in labels {
        if let Some(p) = cands.iter().find(|p| {
            p.label
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(want))
        }) {
            return Some(p);
        }
    }
    cands.first().copied()
}

#[cfg(test)]
mod tests {
    use super::super::probe::probe_bytes;
    use super::*;
    use std::io::Cursor;

    fn mbr_disk(entries: &[(u8, u32, u32)], size: usize) -> Vec<u8> {
        let mut d = vec![0u8; size];
        d[440..444].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        for (i, &(t, start, sectors)) in entries.iter().enumerate() {
            let e = 446 + i * 16;
            d[e + 4] = t;
            d[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            d[e + 12..e + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        d[510] = 0x55;
        d[511] = 0xaa;
        d
    }

    #[test]
    fn reads_mbr_disk_id_and_partitions() {
        let d = mbr_disk(&[(0x0c, 8, 16), (0x83, 24, 8)], 32 * 512);
        let l = read_layout(&mut Cursor::new(d)).unwrap();
        assert_eq!(l.scheme, Scheme::Mbr);
        assert_eq!(l.disk_id, "1234abcd");
        assert_eq!(l.partitions.len(), 2);
        assert_eq!(l.partitions[0].start_bytes, 8 * 512);
        assert_eq!(l.partitions[1].type_id, "0x83");
        // No filesystem inside: neither boot nor root is found.
        assert!(l.boot_partition().is_none());
        assert!(l.root_partition().is_none());
    }

    #[test]
    fn rejects_missing_table_and_past_end() {
        let d = vec![0u8; 4096];
        assert!(matches!(
            read_layout(&mut Cursor::new(d)),
            Err(DiskError::NoTable)
        ));
        let d = mbr_disk(&[(0x0c, 8, 100)], 32 * 512);
        let e = read_layout(&mut Cursor::new(d)).unwrap_err();
        assert!(matches!(e, DiskError::PastEnd { index: 1, .. }), "{e}");
        let d = mbr_disk(&[], 32 * 512);
        assert!(matches!(
            read_layout(&mut Cursor::new(d)),
            Err(DiskError::NoPartitions)
        ));
        let d = mbr_disk(&[(0x0c, 8, 10), (0x83, 12, 4)], 32 * 512);
        assert!(matches!(
            read_layout(&mut Cursor::new(d)),
            Err(DiskError::Overlap { .. })
        ));
    }

    #[test]
    fn probes_ext_and_fat_superblocks() {
        let mut b = [0u8; 2048];
        b[1024 + 0x38] = 0x53;
        b[1024 + 0x39] = 0xef;
        b[1024 + 0x60] = 0x40; // extents
        b[1024 + 0x78..1024 + 0x7e].copy_from_slice(b"rootfs");
        let p = probe_bytes(&b);
        assert_eq!(p.filesystem, Filesystem::Ext4);
        assert_eq!(p.label.as_deref(), Some("rootfs"));

        let mut b = [0u8; 2048];
        b[0] = 0xeb;
        b[11] = 0x00;
        b[12] = 0x02; // 512 bytes per sector
        b[66] = 0x29;
        b[67..71].copy_from_slice(&0xabcd_1234u32.to_le_bytes());
        b[71..82].copy_from_slice(b"bootfs     ");
        b[510] = 0x55;
        b[511] = 0xaa;
        let p = probe_bytes(&b);
        assert_eq!(p.filesystem, Filesystem::Vfat);
        assert_eq!(p.label.as_deref(), Some("bootfs"));
        assert_eq!(p.uuid.as_deref(), Some("ABCD-1234"));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests standing in for a fuzzer (cargo fuzz needs a nightly toolchain): no byte
    //! pattern in the first sectors may make table reading or probing panic.
    use super::super::probe::probe_bytes;
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..8192)) {
            let _ = read_layout(&mut Cursor::new(data));
        }

        #[test]
        fn arbitrary_mbr_entries_never_panic(
            entries in proptest::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 0..4),
            tail in proptest::collection::vec(any::<u8>(), 0..16384),
            gpt_header in any::<bool>(),
        ) {
            let mut d = vec![0u8; 512];
            for (i, (t, s, n)) in entries.iter().enumerate() {
                let e = 446 + i * 16;
                d[e + 4] = if gpt_header && i == 0 { 0xee } else { *t };
                d[e + 8..e + 12].copy_from_slice(&(s % 64).to_le_bytes());
                d[e + 12..e + 16].copy_from_slice(&(n % 64).to_le_bytes());
            }
            d[510] = 0x55;
            d[511] = 0xaa;
            if gpt_header {
                let mut h = tail.clone();
                h.resize(h.len().max(512), 0);
                h[..8].copy_from_slice(b"EFI PART");
                d.extend_from_slice(&h);
            } else {
                d.extend_from_slice(&tail);
            }
            if let Ok(l) = read_layout(&mut Cursor::new(d.clone())) {
                for p in &l.partitions {
                    prop_assert!(p.end_bytes() <= d.len() as u64);
                }
            }
        }

        #[test]
        fn probe_never_panics(data in proptest::collection::vec(any::<u8>(), 2048)) {
            let mut b = [0u8; 2048];
            b.copy_from_slice(&data);
            let _ = probe_bytes(&b);
        }
    }
}
