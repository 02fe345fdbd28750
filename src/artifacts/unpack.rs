//! Reading the artifact tarballs (containerd, CNI plugins, crictl), to lay their files
//! into a root filesystem.

use super::{Error, Result, BUF_SIZE};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEntryKind {
    /// A regular file of this many bytes. Its contents are never held in memory: a visitor of
    /// [`for_each_tar_entry`] reads them from a stream, and [`with_tar_member`] streams one
    /// member into a writer (a 1 GiB member of a small tarball must not need 1 GiB of memory).
    File {
        size: u64,
    },
    Dir,
    /// A symbolic link and its target, verbatim (the caller decides where it may point).
    Symlink(String),
}

/// One entry of a tarball, its path normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Relative path without `./` or empty components, e.g. `bin/containerd`, `bridge`.
    pub path: String,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    pub kind: TarEntryKind,
}

/// Every entry of the tarball at `path` (gzip-compressed or not, told by magic bytes), in
/// archive order; the root entry `./` is left out. See [`for_each_tar_entry`].
pub fn tar_entries(path: &Path) -> Result<Vec<TarEntry>> {
    let mut out = Vec::new();
    for_each_tar_entry(path, |e, _| {
        out.push(e);
        Ok(true)
    })?;
    Ok(out)
}

/// Streams the regular file `member` (a normalized path, as [`TarEntry::path`]) of the tarball
/// at `archive` to `f`, with its size; `f`'s reader yields exactly that many bytes. A member
/// that is absent, not a regular file, or present twice is an error.
pub fn with_tar_member<T, E: From<Error>>(
    archive: &Path,
    member: &str,
    f: impl FnOnce(&mut dyn Read, u64) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let mut f = Some(f);
    let mut out: Option<std::result::Result<T, E>> = None;
    let member_err = |reason: &str| Error::ArchiveEntry {
        archive: archive.to_path_buf(),
        entry: member.to_string(),
        reason: reason.into(),
    };
    for_each_tar_entry(archive, |e, data| {
        if e.path != member {
            return Ok(true);
        }
        let TarEntryKind::File { size } = e.kind else {
            return Err(member_err("is not a regular file"));
        };
        let Some(f) = f.take() else {
            return Err(member_err("is in the archive twice"));
        };
        out = Some(f(data, size));
        // Keep reading after success only to find a second copy; stop on the first error.
        Ok(matches!(out, Some(Ok(_))))
    })?;
    match out {
        Some(r) => r,
        None => Err(member_err("is not in the archive").into()),
    }
}

/// Calls `visit` with each entry of the tarball at `path` and a reader of its contents
/// (empty but for regular files), streaming: nothing is held in memory. `visit` returns
/// whether to go on. An absolute path, a `..` component, a non-UTF-8 name, or an entry other
/// than a file, directory or symlink (hard link, device, fifo) is an error.
pub fn for_each_tar_entry(
    path: &Path,
    mut visit: impl FnMut(TarEntry, &mut dyn Read) -> Result<bool>,
) -> Result<()> {
    let archive_err = |source| Error::Archive {
        archive: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut reader = BufReader::with_capacity(BUF_SIZE, file);
    let gzip = reader
        .fill_buf()
        .map_err(archive_err)?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let raw = String::from_utf8(entry.path_bytes().into_owned()).map_err(|e| {
            Error::ArchiveEntry {
                archive: path.to_path_buf(),
                entry: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                reason: "is not UTF-8".into(),
            }
        })?;
        let entry_err = |reason: &str| Error::ArchiveEntry {
            archive: path.to_path_buf(),
            entry: raw.clone(),
            reason: reason.into(),
        };
        let rel = normalize(&raw).map_err(entry_err)?;
        let header = entry.header();
        let mode = header.mode().map_err(archive_err)? & 0o7777;
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                TarEntryKind::File { size: entry.size() }
            }
            tar::EntryType::Directory => TarEntryKind::Dir,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| entry_err("is a symlink without a target"))?;
                let target = String::from_utf8(target.into_owned())
                    .map_err(|_| entry_err("is a symlink whose target is not UTF-8"))?;
                TarEntryKind::Symlink(target)
            }
            // Metadata entries, applied by the tar crate to the entries they describe.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => return Err(entry_err(&format!("is of an unsupported type ({other:?})"))),
        };
        let Some(rel) = rel else {
            continue; // "./": the archive's root directory
        };
        let go_on = visit(
            TarEntry {
                path: rel,
                mode,
                kind,
            },
            &mut entry,
        )?;
        if !go_on {
            break;
        }
    }
    Ok(())
}

/// `./bin/x` -> `bin/x`; `./` -> None; absolute or `..` -> the reason it is refused.
fn normalize(raw: &str) -> std::result::Result<Option<String>, &'static str> {
    if raw.starts_with('/') {
        return Err("is an absolute path");
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("has a '..' component"),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a tar with raw header paths (the tar crate's `append_data` refuses `..`,
    /// which is exactly what we need to feed in).
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, ty, data) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            }
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            if *ty == tar::EntryType::Symlink {
                h.set_link_name("containerd").unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_gzip_and_plain_tarballs_with_normalized_paths() {
        let tar = raw_tar(&[
            ("./", tar::EntryType::Directory, b""),
            ("./bridge", tar::EntryType::Regular, b"BRIDGE"),
            ("bin/", tar::EntryType::Directory, b""),
            ("bin/containerd", tar::EntryType::Regular, b"CTD"),
            ("bin/ctd-link", tar::EntryType::Symlink, b""),
        ]);
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("a.tgz", gz(&tar)), ("a.tar", tar.clone())] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let got = tar_entries(&p).unwrap();
            assert_eq!(
                got,
                vec![
                    TarEntry {
                        path: "bridge".into(),
                        mode: 0o755,
                        kind: TarEntryKind::File { size: 6 }
                    },
                    TarEntry {
                        path: "bin".into(),
                        mode: 0o755,
                        kind: TarEntryKind::Dir
                    },
                    TarEntry {
                        path: "bin/containerd".into(),
                        mode: 0o755,
                        kind: TarEntryKind::File { size: 3 }
                    },
                    TarEntry {
                        path: "bin/ctd-link".into(),
                        mode: 0o755,
                        kind: TarEntryKind::Symlink("containerd".into())
                    },
                ]
            );
        }
    }

    #[test]
    fn refuses_escaping_paths_and_odd_entries() {
        let dir = tempfile::tempdir().unwrap();
        for (name, ty, want) in [
            ("/etc/passwd", tar::EntryType::Regular, "absolute path"),
            ("bin/../../etc/passwd", tar::EntryType::Regular, "'..'"),
            ("..", tar::EntryType::Directory, "'..'"),
            ("dev/null", tar::EntryType::Char, "unsupported type"),
            ("bin/ctr", tar::EntryType::Link, "unsupported type"),
        ] {
            let p = dir.path().join("bad.tgz");
            std::fs::write(&p, gz(&raw_tar(&[(name, ty, b"x")]))).unwrap();
            let e = tar_entries(&p).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("bad.tgz") && e.contains(name),
                "{name}: {e}"
            );
        }
        let p = dir.path().join("truncated.tgz");
        let full = gz(&raw_tar(&[(
            "bin/containerd",
            tar::EntryType::Regular,
            &[7u8; 5000],
        )]));
        std::fs::write(&p, &full[..full.len() / 2]).unwrap();
        assert!(matches!(tar_entries(&p), Err(Error::Archive { .. })));
    }

    #[test]
    fn streams_one_member_and_refuses_absent_twice_or_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tgz");
        let tar = raw_tar(&[
            ("bin/", tar::EntryType::Directory, b""),
            ("bin/ctr", tar::EntryType::Regular, b"CTR"),
            ("bin/containerd", tar::EntryType::Regular, b"CONTAINERD"),
            ("bin/link", tar::EntryType::Symlink, b""),
            ("bin/ctr", tar::EntryType::Regular, b"AGAIN"),
        ]);
        std::fs::write(&p, gz(&tar)).unwrap();
        let read = |member: &str| {
            with_tar_member(&p, member, |r, size| -> Result<(Vec<u8>, u64)> {
                let mut v = Vec::new();
                r.read_to_end(&mut v).unwrap();
                Ok((v, size))
            })
        };
        assert_eq!(
            read("bin/containerd").unwrap(),
            (b"CONTAINERD".to_vec(), 10)
        );
        for (member, want) in [
            ("bin/ctr", "is in the archive twice"),
            ("bin/none", "is not in the archive"),
            ("bin/link", "is not a regular file"),
            ("bin", "is not a regular file"),
        ] {
            let e = read(member).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(member), "{member}: {e}");
        }
    }
}
