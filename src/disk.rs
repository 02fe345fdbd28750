//! Partition tables (MBR through `mbrman`, GPT through `gpt`) and finding the boot and root
//! partitions of a Raspberry Pi image by type, label and filesystem magic, never by index alone.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::Serialize;

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

/// Facts read from a filesystem's first sectors (boot sector or superblock) without a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsProbe {
    pub filesystem: Filesystem,
    /// Volume label as the filesystem stores it (trailing spaces/NULs trimmed).
    pub label: Option<String>,
    /// ext: the filesystem UUID; FAT: the volume id as `XXXX-XXXX` (what blkid calls UUID).
    pub uuid: Option<String>,
}

impl FsProbe {
    fn unknown() -> Self {
        FsProbe {
            filesystem: Filesystem::Unknown,
            label: None,
            uuid: None,
        }
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
    pub fn end_bytes(&self) -> u64 {
        self.start_bytes + self.size_bytes
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
const MBR_PROTECTIVE: u8 = 0xee;

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
    let mut mbr = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut mbr)?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Err(DiskError::NoTable);
    }
    // A protective MBR (one entry of type 0xEE) announces GPT.
    let protective = (0..4).any(|i| mbr[446 + i * 16 + 4] == MBR_PROTECTIVE);
    let (scheme, disk_id, mut parts) = if protective {
        read_gpt(dev)?
    } else {
        read_mbr(dev, &mbr)?
    };
    if parts.is_empty() {
        return Err(DiskError::NoPartitions);
    }
    parts.sort_by_key(|p| p.start_bytes);
    for p in &parts {
        if p.end_bytes() > image_bytes {
            return Err(DiskError::PastEnd {
                index: p.index,
                end: p.end_bytes(),
                size: image_bytes,
            });
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

fn read_mbr<D: Read + Seek>(_dev: &mut D, raw: &[u8; 512]) -> Result<TableRead, DiskError> {
    // The four primary entries are parsed here rather than by mbrman, whose reader panics on
    // some malformed tables (an entry at LBA 0); mbrman is used to write tables we validated.
    let disk_id = format!(
        "{:08x}",
        u32::from_le_bytes([raw[440], raw[441], raw[442], raw[443]])
    );
    let mut parts = Vec::new();
    for i in 0..4usize {
        let e = &raw[446 + i * 16..446 + (i + 1) * 16];
        let sys = e[4];
        let start = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        let sectors = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
        if sys == 0 || sectors == 0 {
            continue;
        }
        let index = i as u32 + 1;
        if matches!(sys, 0x05 | 0x0f | 0x85) {
            return Err(DiskError::Mbr(format!(
                "partition {index} is an extended partition; logical partitions are not supported"
            )));
        }
        if start == 0 {
            return Err(DiskError::Mbr(format!(
                "partition {index} starts at sector 0, on top of the partition table"
            )));
        }
        parts.push(Partition {
            index,
            start_bytes: u64::from(start) * SECTOR,
            size_bytes: u64::from(sectors) * SECTOR,
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
        let sectors = p
            .last_lba
            .checked_sub(p.first_lba)
            .ok_or_else(|| DiskError::Gpt(format!("partition {i} ends before it starts")))?
            + 1;
        parts.push(Partition {
            index: i,
            start_bytes: p.first_lba * SECTOR,
            size_bytes: sectors * SECTOR,
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

/// Reads a filesystem's identity from its first sectors: FAT boot sector or ext superblock.
pub fn probe_fs<D: Read + Seek>(dev: &mut D, start: u64, size: u64) -> io::Result<FsProbe> {
    if size < 2048 {
        return Ok(FsProbe::unknown());
    }
    let mut buf = [0u8; 2048];
    dev.seek(SeekFrom::Start(start))?;
    dev.read_exact(&mut buf)?;
    Ok(probe_bytes(&buf))
}

/// Probes the first 2 KiB of a partition (pure: used by the fuzz target too).
pub fn probe_bytes(buf: &[u8; 2048]) -> FsProbe {
    let sb = &buf[1024..];
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) == 0xef53 {
        let compat = u32::from_le_bytes([sb[0x5c], sb[0x5d], sb[0x5e], sb[0x5f]]);
        let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
        // extents (0x40), 64bit (0x80), flex_bg (0x200) make it ext4; a journal alone ext3.
        let filesystem = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            Filesystem::Ext4
        } else if compat & 0x4 != 0 {
            Filesystem::Ext3
        } else {
            Filesystem::Ext2
        };
        let u = &sb[0x68..0x78];
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            hex::encode(&u[0..4]),
            hex::encode(&u[4..6]),
            hex::encode(&u[6..8]),
            hex::encode(&u[8..10]),
            hex::encode(&u[10..16])
        );
        return FsProbe {
            filesystem,
            label: clean_label(&sb[0x78..0x88]),
            uuid: Some(uuid),
        };
    }
    let bps = u16::from_le_bytes([buf[11], buf[12]]);
    let jump_ok = buf[0] == 0xeb || buf[0] == 0xe9;
    if jump_ok && buf[510..512] == [0x55, 0xaa] && matches!(bps, 512 | 1024 | 2048 | 4096) {
        // FAT32 has a zero 16-bit sectors-per-FAT field and its extended BPB at 64.
        let fat32 = u16::from_le_bytes([buf[22], buf[23]]) == 0;
        let (sig_at, id_at, label_at) = if fat32 { (66, 67, 71) } else { (38, 39, 43) };
        if buf[sig_at] == 0x29 || buf[sig_at] == 0x28 {
            let id =
                u32::from_le_bytes([buf[id_at], buf[id_at + 1], buf[id_at + 2], buf[id_at + 3]]);
            let label = clean_label(&buf[label_at..label_at + 11]).filter(|l| l != "NO NAME");
            return FsProbe {
                filesystem: Filesystem::Vfat,
                label,
                uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff)),
            };
        }
    }
    FsProbe::unknown()
}

fn clean_label(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let s = String::from_utf8_lossy(&raw[..end]).trim_end().to_string();
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
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

/// A read-only view of a device that refuses writes (for libraries that want `Write`).
#[derive(Debug)]
pub struct ReadOnly<D>(pub D);

impl<D: Read> Read for ReadOnly<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl<D: Seek> Seek for ReadOnly<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}
impl<D> Write for ReadOnly<D> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the image is opened read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A window `[start, start+len)` of a device, seen as a device of its own: a partition.
#[derive(Debug)]
pub struct Slice<D> {
    inner: D,
    start: u64,
    len: u64,
    pos: u64,
}

impl<D: Seek> Slice<D> {
    pub fn new(inner: D, start: u64, len: u64) -> Self {
        Slice {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: Read + Seek> Read for Slice<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Write + Seek> Write for Slice<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let n = (buf.len() as u64).min(left) as usize;
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<D: Seek> Seek for Slice<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn slice_bounds_reads_and_writes() {
        let mut s = Slice::new(Cursor::new(vec![0u8; 100]), 10, 20);
        s.write_all(&[1u8; 20]).unwrap();
        assert!(s.write(&[1]).is_err());
        s.seek(SeekFrom::Start(0)).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![1u8; 20]);
        let inner = s.into_inner().into_inner();
        assert_eq!(inner[9], 0);
        assert_eq!(inner[10], 1);
        assert_eq!(inner[30], 0);
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests standing in for a fuzzer (cargo fuzz needs a nightly toolchain): no byte
    //! pattern in the first sectors may make table reading or probing panic.
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
