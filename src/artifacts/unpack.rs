//! Reading the artifact tarballs (containerd, CNI plugins, crictl), to lay their files
//! into a root filesystem.

use super::{Error, Result, BUF_SIZE};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEntryKind {
    /// A regular file and its contents.
    File(Vec<u8>),
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
    for_each_tar_entry(path, |e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `visit` with each entry of the tarball at `path`, streaming (one file's contents
/// in memory at a time). An absolute path, a `..` component, a non-UTF-8 name, or an
/// entry other than a file, directory or symlink (hard link, device, fifo) is an error.
pub fn for_each_tar_entry(
    path: &Path,
    mut visit: impl FnMut(TarEntry) -> Result<()>,
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
                let mut data =
                    Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(1 << 30));
                entry.read_to_end(&mut data).map_err(archive_err)?;
                TarEntryKind::File(data)
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
        visit(TarEntry {
            path: rel,
            mode,
            kind,
        })?;
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
                        kind: TarEntryKind::File(b"BRIDGE".to_vec())
                    },
                    TarEntry {
                        path: "bin".into(),
                        mode: 0o755,
                        kind: TarEntryKind::Dir
                    },
                    TarEntry {
                        path: "bin/containerd".into(),
                        mode: 0o755,
                        kind: TarEntryKind::File(b"CTD".to_vec())
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
}
