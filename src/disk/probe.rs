//! Probing a partition's filesystem from its first sectors (FAT boot sector, ext superblock),
//! without a driver.

use std::io::{self, Read, Seek, SeekFrom};

use serde::Serialize;

use super::layout::Filesystem;

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
