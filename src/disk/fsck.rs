//! Checking the root filesystem before piforge writes into it (issue 12 item 7).
//!
//! libext2fs trusts the bitmaps and group descriptors it reads: on a filesystem whose block
//! bitmap is stale (and without `metadata_csum` to notice), a new directory or file is given
//! blocks that already belong to another file, and the output is corrupt although every call
//! succeeded. Only a full scan of the inode tables and directories tells a stale bitmap from a
//! true one, which is what e2fsck's five passes are. libext2fs' own checks do not do it:
//! `ext2fs_check_desc` validates the group descriptors only, and no library call compares the
//! bitmaps with the blocks the inodes use. So the check is e2fsck itself, read-only (`-n`:
//! it opens the image `O_RDONLY` and answers "no" to every question) and forced (`-f`: a full
//! check even when the superblock says clean), on the partition in place through its
//! `image?offset=N` syntax (unix_io's `offset` option): no copy, no root, no loop device.
//! The partition bound holds because [`crate::fs::ext4::Ext4::open_bounded`] has already
//! refused a superblock claiming more blocks than the partition has, so every block e2fsck
//! reads lies inside it; and e2fsck only reads.
//!
//! e2fsck's exit status is the verdict (0: no problem; 4: problems left uncorrected, as `-n`
//! leaves them all; 8: it could not check); the first line that is neither its banner nor a
//! pass heading nor a "Fix? no" answer is the complaint shown to the user.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// Lines of e2fsck's output a damaged filesystem's first complaint can hold at most.
const COMPLAINT_CHARS: usize = 300;
/// e2fsck's output kept: the first complaint is near the start; the rest is drained unread.
const OUTPUT_CAP: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(
        "the root filesystem of {image} is damaged (e2fsck -fn: {complaint}); piforge does not \
         write into a damaged filesystem: repair a copy with `e2fsck -f` or use an intact image"
    )]
    Damaged { image: String, complaint: String },
    #[error("e2fsck could not check the root filesystem of {image}: {detail}")]
    Failed { image: String, detail: String },
    #[error("e2fsck could not be run ({0}); install e2fsprogs")]
    NoE2fsck(std::io::Error),
}

/// Runs `e2fsck -fn` on the ext4 filesystem at byte `offset` of `image`; `Ok` when it finds
/// nothing wrong.
pub fn check_ext4(image: &Path, offset: u64) -> Result<(), FsckError> {
    let (reader, writer) = std::io::pipe().map_err(FsckError::NoE2fsck)?;
    let writer2 = writer.try_clone().map_err(FsckError::NoE2fsck)?;
    let mut cmd = Command::new("e2fsck");
    cmd.arg("-fn")
        .arg(format!("{}?offset={offset}", image.display()))
        // The host's /etc/e2fsck.conf (broken_system_clock, ...) must not change the verdict,
        // and the complaint is matched and shown in English.
        .env("E2FSCK_CONFIG", "/dev/null")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        // One pipe for both streams keeps e2fsck's order (problems go to stdout, open errors
        // to stderr).
        .stdout(writer)
        .stderr(writer2);
    let mut child = cmd.spawn().map_err(FsckError::NoE2fsck)?;
    // The pipe's write ends live in `cmd` too: dropped so that reading ends with e2fsck.
    drop(cmd);
    let mut out = Vec::new();
    let mut reader = reader;
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(FsckError::NoE2fsck(e));
            }
        }
    }
    let status = child.wait().map_err(FsckError::NoE2fsck)?;
    let text = String::from_utf8_lossy(&out);
    let shown = image.display().to_string();
    match status.code() {
        Some(0) => Ok(()),
        Some(code) if code & 8 == 0 && code & 4 != 0 => Err(FsckError::Damaged {
            image: shown,
            complaint: first_complaint(&text)
                .unwrap_or_else(|| format!("exit status {code}, no message")),
        }),
        _ => Err(FsckError::Failed {
            image: shown,
            detail: first_complaint(&text).unwrap_or_else(|| format!("{status}")),
        }),
    }
}

/// The first line of e2fsck's output that says something is wrong: not the version banner,
/// a pass heading, an answer ("Fix? no"), the summary or a blank line. Continuation lines
/// (indented, such as the extent after "Inode 12 has an invalid extent") are joined to it.
pub fn first_complaint(output: &str) -> Option<String> {
    let noise = |l: &str| {
        let t = l.trim();
        t.is_empty()
            || t.starts_with("e2fsck ")
            || t.starts_with("Pass ")
            || t.ends_with("? no")
            || t.ends_with("? yes")
            || t.contains("WARNING: Filesystem still has errors")
    };
    let mut lines = output.lines().skip_while(|l| noise(l));
    let mut complaint = lines.next()?.trim().to_string();
    for l in lines {
        if !(l.starts_with('\t') || l.starts_with("  ")) || noise(l) {
            break;
        }
        complaint.push(' ');
        complaint.push_str(l.trim());
    }
    let complaint = complaint.trim_end_matches(['.', ':']).to_string();
    Some(if complaint.chars().count() > COMPLAINT_CHARS {
        let cut: String = complaint.chars().take(COMPLAINT_CHARS).collect();
        format!("{cut}...")
    } else {
        complaint
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_complaint_skips_banner_passes_and_answers() {
        let out = "e2fsck 1.47.2 (1-Jan-2025)\nPass 1: Checking inodes, blocks, and sizes\n\
                   Pass 5: Checking group summary information\n\
                   Block bitmap differences:  +(300--304)\nFix? no\n\n\
                   Free blocks count wrong for group #0 (9797, counted=9802).\nFix? no\n";
        assert_eq!(
            first_complaint(out).unwrap(),
            "Block bitmap differences:  +(300--304)"
        );
        let out = "Pass 1: Checking inodes, blocks, and sizes\nInode 12 has an invalid extent\n\
                   \t(logical block 0, invalid physical block 99999, len 1)\nClear? no\n";
        assert_eq!(
            first_complaint(out).unwrap(),
            "Inode 12 has an invalid extent (logical block 0, invalid physical block 99999, len 1)"
        );
        assert_eq!(first_complaint("e2fsck 1.47.2 (1-Jan-2025)\n\n"), None);
    }

    #[test]
    fn a_stale_block_bitmap_is_named_and_a_clean_filesystem_passes() {
        use crate::disk::test_disk::{make_disk, sh, ROOT_START};
        let tmp = tempfile::tempdir().unwrap();
        let img = make_disk(tmp.path(), false);
        let offset = ROOT_START * 512;
        check_ext4(&img, offset).unwrap();
        // The root directory's block marked free: what made new directories overwrite old
        // ones.
        let dev = format!("{}?offset={offset}", img.display());
        let (ok, out) = sh("debugfs", &["-R", "blocks /", &dev], None);
        assert!(ok, "{out}");
        let block = out
            .split_whitespace()
            .find(|w| w.parse::<u64>().is_ok())
            .unwrap_or_else(|| panic!("no block of / in {out}"))
            .to_string();
        let (ok, out) = sh(
            "debugfs",
            &["-w", "-R", &format!("freeb {block}"), &dev],
            None,
        );
        assert!(ok, "{out}");
        let before = std::fs::read(&img).unwrap();
        let e = check_ext4(&img, offset).unwrap_err();
        assert!(e.to_string().contains("Block bitmap differences"), "{e}");
        assert!(std::fs::read(&img).unwrap() == before, "the check wrote");
    }
}
