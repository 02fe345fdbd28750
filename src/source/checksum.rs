//! SHA-256 of the input, and where the expected digest comes from.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::SourceError;
use crate::digest::{parse_sha256, sum_lines};
use crate::progress::{Progress, Task};

/// The SHA-256 of a file, as 64 lowercase hex digits.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String, SourceError> {
    sha256_with_progress(path.as_ref(), None)
}

pub(crate) fn sha256_with_progress(
    path: &Path,
    progress: Option<Arc<dyn Progress>>,
) -> Result<String, SourceError> {
    sha256_reporting(path, None, progress)
}

/// [`sha256_file`] that gives up (with an error) soon after `cancel` is set: for a digest
/// taken on a thread of its own while the caller does other work, which stops it when that
/// work fails. Reports to `progress` as [`Task::Checksum`].
pub fn sha256_file_cancellable(
    path: &Path,
    cancel: &AtomicBool,
    progress: Option<Arc<dyn Progress>>,
) -> Result<String, SourceError> {
    sha256_reporting(path, Some(cancel), progress)
}

fn sha256_reporting(
    path: &Path,
    cancel: Option<&AtomicBool>,
    progress: Option<Arc<dyn Progress>>,
) -> Result<String, SourceError> {
    let read_error = |err: io::Error| SourceError::Read {
        path: path.to_path_buf(),
        err,
    };
    let file = File::open(path).map_err(read_error)?;
    let total = file.metadata().map_err(read_error)?.len();
    if let Some(p) = &progress {
        p.begin(Task::Checksum, Some(total));
    }
    let digest = sha256_holes_unread(&file, total, cancel, &mut |done| {
        if let Some(p) = &progress {
            p.advance(Task::Checksum, done);
        }
    })
    .map_err(read_error)?;
    if let Some(p) = &progress {
        p.finish(Task::Checksum);
    }
    Ok(digest)
}

/// The SHA-256 of the first `len` bytes of `file`, its holes hashed as the zeros they read as
/// without reading them (`SEEK_DATA`/`SEEK_HOLE`; a filesystem without them is read whole):
/// a sparse 2 GiB image holding 400 MB of data costs 400 MB of reads and no copy of zeros out
/// of the kernel, only the hashing. The same digest as reading the file front to back (tested
/// against sha256sum). `advance` is told the offset reached after each piece.
fn sha256_holes_unread(
    file: &File,
    len: u64,
    cancel: Option<&AtomicBool>,
    advance: &mut dyn FnMut(u64),
) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(io::Error::other("cancelled"));
        }
        let (data, hole) = next_data(file, pos, len)?;
        while pos < data {
            let n = (data - pos).min(ZEROS.len() as u64) as usize;
            h.update(&ZEROS[..n]);
            pos += n as u64;
            if pos.is_multiple_of(1 << 20) || pos == data {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(io::Error::other("cancelled"));
                }
                advance(pos);
            }
        }
        while pos < hole {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(io::Error::other("cancelled"));
            }
            let n = (hole - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos)?;
            h.update(&buf[..n]);
            pos += n as u64;
            advance(pos);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The next run of data at or after `pos` in a file of `len` bytes: `(start, end)`, both at
/// most `len`; `(len, len)` when only a hole is left ([`crate::sparse`]).
fn next_data(file: &File, pos: u64, len: u64) -> io::Result<(u64, u64)> {
    Ok(match crate::sparse::next_data(file, pos)? {
        None => (len, len),
        Some(d) => {
            let d = d.min(len);
            (d, crate::sparse::data_end(file, d, len).max(d))
        }
    })
}

/// An expected digest and where it was found, for messages ("--sha256", "/x/SHA256SUMS").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub digest: String,
    pub from: String,
}

/// Checks that `value` is a SHA-256 digest and returns it in lowercase.
pub(crate) fn parse_digest(value: &str, from: &str) -> Result<String, SourceError> {
    let v = value.trim();
    parse_sha256(v).ok_or_else(|| SourceError::BadDigest {
        from: from.to_string(),
        value: v.to_string(),
    })
}

/// The expected digest of `input`: from the user if given, else from `INPUT.sha256`, else from
/// `SHA256SUMS` in the same directory. `None` when there is none to be had.
pub(crate) fn expected_digest(
    input: &Path,
    from_user: Option<&str>,
) -> Result<Option<Expected>, SourceError> {
    if let Some(value) = from_user {
        let from = "--sha256".to_string();
        return Ok(Some(Expected {
            digest: parse_digest(value, &from)?,
            from,
        }));
    }
    let Some(name) = input.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    let dir = input
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);

    let sibling = dir.join(format!("{name}.sha256"));
    if let Some(text) = read_if_exists(&sibling)? {
        let from = sibling.display().to_string();
        let lines = sum_lines(&text);
        let chosen = match lines.iter().find(|l| l.file.is_none_or(|f| f == name)) {
            Some(line) => Some(line),
            // One line naming another file: the input was renamed; the sibling is still its sum.
            None if lines.len() == 1 => lines.first(),
            None => None,
        };
        let Some(line) = chosen else {
            return Err(SourceError::BadDigest {
                from,
                value: text.trim().chars().take(80).collect(),
            });
        };
        return Ok(Some(Expected {
            digest: parse_digest(line.digest, &from)?,
            from,
        }));
    }

    let sums = dir.join("SHA256SUMS");
    if let Some(text) = read_if_exists(&sums)? {
        let from = sums.display().to_string();
        if let Some(line) = sum_lines(&text).into_iter().find(|l| l.file == Some(name)) {
            return Ok(Some(Expected {
                digest: parse_digest(line.digest, &from)?,
                from,
            }));
        }
    }
    Ok(None)
}

fn read_if_exists(path: &Path) -> Result<Option<String>, SourceError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(SourceError::ChecksumFile {
            path: path.to_path_buf(),
            err,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_must_be_64_hex_digits() {
        let d = "A".repeat(64);
        assert_eq!(
            parse_digest(&format!(" {d}\n"), "x").unwrap(),
            "a".repeat(64)
        );
        assert!(parse_digest(&"a".repeat(63), "x").is_err());
        assert!(parse_digest(&"g".repeat(64), "x").is_err());
        let msg = parse_digest("zz", "--sha256").unwrap_err().to_string();
        assert!(msg.contains("--sha256") && msg.contains("zz"), "{msg}");
    }

    fn sha256sum(path: &Path) -> String {
        let out = std::process::Command::new("sha256sum")
            .arg(path)
            .output()
            .expect("sha256sum (coreutils) is needed");
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    }

    /// Holes are hashed as zeros without being read: a sparse file with a hole at the start,
    /// data runs of odd lengths between holes and a trailing hole hashes as sha256sum reads it;
    /// so do an all-hole file and one whose data ends at its last byte.
    #[test]
    fn sparse_files_hash_as_sha256sum_reads_them() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let dir = tempfile::tempdir().unwrap();
        // (name, length, data runs as (offset, length))
        type Case<'a> = (&'a str, u64, &'a [(u64, usize)]);
        let cases: [Case<'_>; 3] = [
            (
                "mixed",
                40 << 20,
                &[(3 << 20, 4096 * 3 + 17), (9 << 20, 5 << 20), (20 << 20, 1)],
            ),
            ("holes", 7 << 20, &[]),
            (
                "tail",
                (6 << 20) + 512,
                &[(0, 100), ((6 << 20) - 3584, 4096)],
            ),
        ];
        for (name, len, runs) in cases {
            let path = dir.path().join(name);
            let f = File::create(&path).unwrap();
            f.set_len(len).unwrap();
            for &(at, n) in runs {
                let data: Vec<u8> = (0..n)
                    .map(|i| ((i as u32).wrapping_mul(2654435761) >> 7) as u8 | 1)
                    .collect();
                f.write_all_at(&data, at).unwrap();
            }
            f.sync_all().unwrap();
            drop(f);
            let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
            assert!(
                allocated < len,
                "{name}: the file should be sparse ({allocated} of {len})"
            );
            assert_eq!(sha256_file(&path).unwrap(), sha256sum(&path), "{name}");
        }
    }

    #[test]
    fn sha256_agrees_with_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let out = std::process::Command::new("sha256sum")
            .arg(&path)
            .output()
            .unwrap();
        let expected = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            expected.split_whitespace().next().unwrap()
        );
        let missing = sha256_file(dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("nope") && missing.contains("No such file"),
            "{missing}"
        );
    }
}
