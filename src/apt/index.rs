//! A suite's signed `Release` (the SHA-256 and size of every index file) and its `Packages`
//! indexes, read into the few fields resolving and downloading need.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::control::{self, Paragraphs};
use super::sources::ARCH;

/// The largest Packages index piforge decompresses: Debian trixie's main/binary-arm64 is
/// about 100 MiB uncompressed.
pub const PACKAGES_MAX: u64 = 1 << 30;

/// An index file the Release lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// The `SHA256` list of a Release text.
pub fn release_files(release: &str) -> Result<BTreeMap<String, IndexFile>, String> {
    let paras = control::parse(release)?;
    let p = paras.first().ok_or("its Release is empty")?;
    let list = p.get("SHA256").ok_or("its Release has no SHA256 list")?;
    let mut out = BTreeMap::new();
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [sha, size, path] = w[..] else {
            return Err(format!("its Release has a bad SHA256 line {line:?}"));
        };
        if !crate::digest::is_sha256_hex(sha) {
            return Err(format!("its Release has a bad SHA-256 for {path}"));
        }
        let size = size
            .parse()
            .map_err(|_| format!("its Release has a bad size for {path}"))?;
        out.insert(
            path.to_string(),
            IndexFile {
                path: path.to_string(),
                sha256: sha.to_string(),
                size,
            },
        );
    }
    Ok(out)
}

/// The Packages index of `component` for `arch` the Release lists, preferring xz, then gzip,
/// then plain.
pub fn packages_index<'a>(
    files: &'a BTreeMap<String, IndexFile>,
    component: &str,
    arch: &str,
) -> Option<&'a IndexFile> {
    ["xz", "gz", ""].iter().find_map(|ext| {
        let p = format!(
            "{component}/binary-{arch}/Packages{}{ext}",
            if ext.is_empty() { "" } else { "." }
        );
        files.get(&p)
    })
}

/// One binary package of a repository (Architecture arm64 or all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `Pre-Depends` then `Depends`, as written.
    pub depends: String,
    pub provides: String,
    /// Relative to the repository's base URL.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// `Installed-Size`, KiB.
    pub installed_kib: u64,
    /// Index into the sources the resolver was given.
    pub source: usize,
    /// `URI SUITE COMPONENT`.
    pub origin: String,
}

/// Reads a Packages index (xz, gzip or plain, told by its name) into candidates, bounded.
pub fn read_packages(
    path: &Path,
    index_name: &str,
    source: usize,
    origin: &str,
    out: &mut Vec<Candidate>,
) -> Result<(), String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let raw: Box<dyn Read> = if index_name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(file))
    } else if index_name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let bounded = Bounded {
        inner: raw,
        left: PACKAGES_MAX,
    };
    parse_packages(
        BufReader::with_capacity(crate::artifacts::BUF_SIZE, bounded),
        source,
        origin,
        out,
    )
}

/// A reader that fails once it has given `left` bytes.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!(
                "it decompresses to more than {} MiB",
                PACKAGES_MAX >> 20
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

pub fn parse_packages(
    reader: impl BufRead,
    source: usize,
    origin: &str,
    out: &mut Vec<Candidate>,
) -> Result<(), String> {
    let mut paras = Paragraphs::new(reader);
    while let Some(p) = paras.next_paragraph()? {
        let arch = p.get("Architecture").unwrap_or("");
        if arch != ARCH && arch != "all" {
            continue;
        }
        let field = |f: &str| {
            p.get(f).ok_or_else(|| {
                format!(
                    "a paragraph ({}) has no {f}",
                    p.get("Package").unwrap_or("?")
                )
            })
        };
        let name = field("Package")?.to_string();
        let sha256 = field("SHA256")?.to_string();
        if !crate::digest::is_sha256_hex(&sha256) {
            return Err(format!("{name} has a bad SHA256"));
        }
        let filename = field("Filename")?.to_string();
        if filename.starts_with('/')
            || filename.split('/').any(|c| c == ".." || c.is_empty())
            || !filename.ends_with(".deb")
        {
            return Err(format!("{name} has a bad Filename {filename:?}"));
        }
        let size = field("Size")?
            .parse()
            .map_err(|_| format!("{name} has a bad Size"))?;
        let depends = [p.get("Pre-Depends"), p.get("Depends")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        out.push(Candidate {
            version: field("Version")?.to_string(),
            arch: arch.to_string(),
            depends,
            provides: p.get("Provides").unwrap_or("").to_string(),
            filename,
            size,
            sha256,
            installed_kib: p
                .get("Installed-Size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            source,
            origin: origin.to_string(),
            name,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_lists_and_packages() {
        let sha = "a".repeat(64);
        let rel = format!("Origin: T\nSuite: s\nSHA256:\n {sha} 10 main/binary-arm64/Packages\n {sha} 5 main/binary-arm64/Packages.xz\n");
        let files = release_files(&rel).unwrap();
        assert_eq!(
            packages_index(&files, "main", "arm64").unwrap().path,
            "main/binary-arm64/Packages.xz"
        );
        assert!(packages_index(&files, "contrib", "arm64").is_none());
        assert!(release_files("Origin: T\n")
            .unwrap_err()
            .contains("no SHA256"));
        assert!(release_files("SHA256:\n zz 1 p\n")
            .unwrap_err()
            .contains("bad SHA-256"));
        let pk = format!("Package: a\nVersion: 1\nArchitecture: arm64\nDepends: b\nPre-Depends: c\nFilename: pool/a.deb\nSize: 3\nSHA256: {sha}\nInstalled-Size: 12\n\nPackage: x86\nArchitecture: amd64\n\nPackage: d\nVersion: 2\nArchitecture: all\nFilename: pool/d.deb\nSize: 1\nSHA256: {sha}\n");
        let mut out = Vec::new();
        parse_packages(pk.as_bytes(), 0, "o", &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].depends, "c, b");
        assert_eq!(out[0].installed_kib, 12);
        assert_eq!(out[1].arch, "all");
        let bad = pk.replace("pool/a.deb", "../a.deb");
        assert!(parse_packages(bad.as_bytes(), 0, "o", &mut Vec::new())
            .unwrap_err()
            .contains("bad Filename"));
    }
}
