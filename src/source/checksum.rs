//! SHA-256 of the input, and where the expected digest comes from.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::progress::{InputError, ProgressReader};
use super::SourceError;
use crate::digest::{parse_sha256, sha256_reader, sum_lines};
use crate::progress::{Progress, Task};

/// The SHA-256 of a file, as 64 lowercase hex digits.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String, SourceError> {
    sha256_with_progress(path.as_ref(), None)
}

pub(crate) fn sha256_with_progress(
    path: &Path,
    progress: Option<Arc<dyn Progress>>,
) -> Result<String, SourceError> {
    let read_error = |err: io::Error| SourceError::Read {
        path: path.to_path_buf(),
        err,
    };
    let file = File::open(path).map_err(read_error)?;
    let total = file.metadata().map_err(read_error)?.len();
    let reader = ProgressReader::new(file, progress.clone(), Task::Checksum, total);
    let (digest, _) = sha256_reader(reader)
        .map_err(|e| read_error(InputError::unwrap_from(e).unwrap_or_else(|e| e)))?;
    if let Some(p) = &progress {
        p.finish(Task::Checksum);
    }
    Ok(digest)
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
