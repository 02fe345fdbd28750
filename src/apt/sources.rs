//! The base image's apt sources and the keys apt trusts for them, read from its root
//! filesystem the way apt reads them (sources.list(5)):
//!
//! - one-line `deb [options] URI SUITE COMPONENT...` entries in `/etc/apt/sources.list` and
//!   `/etc/apt/sources.list.d/*.list`;
//! - deb822 paragraphs (`Types`, `URIs`, `Suites`, `Components`, `Signed-By`, `Enabled`,
//!   `Architectures`) in `/etc/apt/sources.list.d/*.sources` (Raspberry Pi OS trixie ships
//!   `debian.sources` and `raspi.sources`, Ubuntu 24.04 `ubuntu.sources`);
//! - `Signed-By` names keyring files (or holds an armored key block inline); a source without
//!   it is checked against `/etc/apt/trusted.gpg` and `/etc/apt/trusted.gpg.d/*.{gpg,asc}`.

use base64::Engine;

use super::control;
use crate::fs::RootFiles;

/// The only architectures a node takes packages of.
pub const ARCH: &str = "arm64";

/// One repository suite and its components, with the keys that must sign its InRelease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// The repository's base URL, without a trailing `/`.
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// The binary OpenPGP keyring (concatenated transferable public keys) that signs it.
    pub keyring: Vec<u8>,
    /// Where the keys came from, for messages.
    pub keys_from: String,
    /// Where the entry was read.
    pub file: String,
}

impl AptSource {
    /// `URI SUITE`, as messages and the lock name a source.
    pub fn name(&self) -> String {
        format!("{} {}", self.uri, self.suite)
    }
}

/// What apt writes where no `Signed-By` is given.
const TRUSTED: &str = "/etc/apt/trusted.gpg";
const TRUSTED_D: &str = "/etc/apt/trusted.gpg.d";

/// Every enabled `deb` source of the base image, in apt's reading order (sources.list, then
/// sources.list.d in file name order), with its keyring.
pub fn read_sources(fs: &dyn RootFiles) -> Result<Vec<AptSource>, String> {
    let mut files = vec!["/etc/apt/sources.list".to_string()];
    for n in fs.list("/etc/apt/sources.list.d")? {
        if n.ends_with(".list") || n.ends_with(".sources") {
            files.push(format!("/etc/apt/sources.list.d/{n}"));
        }
    }
    let mut out = Vec::new();
    for f in files {
        let Some(text) = fs.read_string(&f)? else {
            continue;
        };
        let entries = if f.ends_with(".sources") {
            deb822_entries(&text).map_err(|e| format!("{f}: {e}"))?
        } else {
            one_line_entries(&text).map_err(|e| format!("{f}: {e}"))?
        };
        for e in entries {
            let (keyring, keys_from) =
                keyring_for(fs, &e.signed_by).map_err(|m| format!("{f}: {m}"))?;
            for suite in &e.suites {
                out.push(AptSource {
                    uri: e.uri.trim_end_matches('/').to_string(),
                    suite: suite.clone(),
                    components: e.components.clone(),
                    keyring: keyring.clone(),
                    keys_from: keys_from.clone(),
                    file: f.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// A source entry as written, before its keys are read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    uri: String,
    suites: Vec<String>,
    components: Vec<String>,
    signed_by: Option<String>,
}

fn arch_ok(list: Option<&str>) -> bool {
    list.is_none_or(|l| l.split([',', ' ', '\n']).any(|a| a.trim() == ARCH))
}

/// `deb [opt=value ...] URI SUITE COMPONENT...` lines; `deb-src` and comments skipped.
fn one_line_entries(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb") else {
            continue;
        };
        if !rest.starts_with([' ', '\t']) {
            continue; // deb-src
        }
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        let mut arch = None;
        if let Some(r) = rest.strip_prefix('[') {
            let (opts, after) = r
                .split_once(']')
                .ok_or_else(|| format!("line {}: `[` without `]`", n + 1))?;
            for o in opts.split_whitespace() {
                match o.split_once('=') {
                    Some(("signed-by", v)) => signed_by = Some(v.to_string()),
                    Some(("arch", v)) => arch = Some(v.to_string()),
                    _ => {}
                }
            }
            rest = after.trim_start();
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() < 3 {
            return Err(format!(
                "line {}: a deb line needs a URI, a suite and a component",
                n + 1
            ));
        }
        if !arch_ok(arch.as_deref()) {
            continue;
        }
        out.push(Entry {
            uri: words[0].to_string(),
            suites: vec![words[1].to_string()],
            components: words[2..].iter().map(|s| s.to_string()).collect(),
            signed_by,
        });
    }
    Ok(out)
}

/// deb822 paragraphs; several URIs give one entry each.
fn deb822_entries(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for p in control::parse(text)? {
        let list = |f: &str| -> Vec<String> {
            p.get(f)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        if !list("Types").iter().any(|t| t == "deb") {
            continue;
        }
        if p.get("Enabled").is_some_and(|v| v.trim() == "no") {
            continue;
        }
        if !arch_ok(p.get("Architectures")) {
            continue;
        }
        let suites = list("Suites");
        let components = list("Components");
        if suites.is_empty() || components.is_empty() {
            return Err(
                "a deb paragraph needs Suites and Components (flat repositories are not supported)"
                    .into(),
            );
        }
        for uri in list("URIs") {
            out.push(Entry {
                uri,
                suites: suites.clone(),
                components: components.clone(),
                signed_by: p.get("Signed-By").map(str::to_string),
            });
        }
    }
    Ok(out)
}

/// The binary keyring of a `Signed-By` value (file names, or an inline armored key), or of
/// apt's global trusted keys when there is none.
fn keyring_for(
    fs: &dyn RootFiles,
    signed_by: &Option<String>,
) -> Result<(Vec<u8>, String), String> {
    let mut ring = Vec::new();
    let from;
    match signed_by {
        Some(v) if v.contains("BEGIN PGP PUBLIC KEY BLOCK") => {
            ring = dearmor(v).ok_or("its inline Signed-By key block is not valid ASCII armor")?;
            from = "the inline Signed-By key".to_string();
        }
        Some(v) => {
            let files: Vec<&str> = v
                .split([',', ' ', '\n'])
                .filter(|s| !s.is_empty())
                .collect();
            for f in &files {
                if !f.starts_with('/') {
                    // A fingerprint pins a key of the global keyrings: those are read below.
                    continue;
                }
                let bytes = fs.read(f)?.ok_or_else(|| {
                    format!("Signed-By names {f}, which the base image does not have")
                })?;
                ring.extend(keyring_bytes(f, &bytes)?);
            }
            if ring.is_empty() {
                return global_keyring(fs);
            }
            from = files.join(", ");
        }
        None => return global_keyring(fs),
    }
    Ok((ring, from))
}

fn global_keyring(fs: &dyn RootFiles) -> Result<(Vec<u8>, String), String> {
    let mut ring = Vec::new();
    let mut files = Vec::new();
    if let Some(b) = fs.read(TRUSTED)? {
        ring.extend(keyring_bytes(TRUSTED, &b)?);
        files.push(TRUSTED.to_string());
    }
    for n in fs.list(TRUSTED_D)? {
        if n.ends_with(".gpg") || n.ends_with(".asc") {
            let f = format!("{TRUSTED_D}/{n}");
            if let Some(b) = fs.read(&f)? {
                ring.extend(keyring_bytes(&f, &b)?);
                files.push(f);
            }
        }
    }
    Ok((ring, files.join(", ")))
}

/// A keyring file's binary form: `.asc` files (and any file that is armored) are dearmored.
fn keyring_bytes(path: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(bytes).ok();
    match text.filter(|t| t.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
        Some(t) => dearmor(t).ok_or_else(|| format!("{path} is not valid ASCII armor")),
        None => Ok(bytes.to_vec()),
    }
}

/// The binary packets of every `PUBLIC KEY BLOCK` in an ASCII-armored text (RFC 4880 §6.2;
/// armor headers and the CRC line skipped; deb822 writes empty lines inside a field as `.`).
pub fn dearmor(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    let mut found = false;
    while let Some(l) = lines.next() {
        if l != "-----BEGIN PGP PUBLIC KEY BLOCK-----" {
            continue;
        }
        // Armor headers end at the first empty line (or `.` in deb822).
        let mut body = String::new();
        let mut in_headers = true;
        let mut ended = false;
        for l in lines.by_ref() {
            if l == "-----END PGP PUBLIC KEY BLOCK-----" {
                ended = true;
                break;
            }
            if in_headers {
                if l.is_empty() || l == "." {
                    in_headers = false;
                } else if !l.contains(": ") {
                    // No header block at all: this is already base64.
                    in_headers = false;
                    body.push_str(l);
                }
                continue;
            }
            if l.starts_with('=') || l == "." {
                continue;
            }
            body.push_str(l);
        }
        if !ended {
            return None;
        }
        out.extend(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .ok()?,
        );
        found = true;
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::root_files::tests::MemFiles;

    const ASC: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\nAQID\nBAU=\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";

    #[test]
    fn one_line_and_deb822_sources_with_their_keys() {
        let inline = "Types: deb\nURIs: http://inline.test/r\nSuites: s\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n BgcI\n -----END PGP PUBLIC KEY BLOCK-----\n";
        let fs = MemFiles(
            [
                (
                    "/etc/apt/sources.list",
                    "# comment\ndeb http://deb.test/debian/ trixie main contrib\ndeb-src http://deb.test/debian trixie main\ndeb [arch=amd64] http://x86.test/d s main\n",
                ),
                ("/etc/apt/trusted.gpg.d/a.gpg", "\u{1}bin"),
                ("/etc/apt/trusted.gpg.d/b.asc", ASC),
                ("/etc/apt/trusted.gpg.d/ignored.txt", "x"),
                (
                    "/etc/apt/sources.list.d/raspi.sources",
                    "Types: deb deb-src\nURIs: http://archive.test/\nSuites: trixie trixie-updates\nComponents: main\nSigned-By: /usr/share/keyrings/r.pgp\n\nTypes: deb\nURIs: http://off.test/\nSuites: x\nComponents: main\nEnabled: no\n",
                ),
                ("/etc/apt/sources.list.d/z.sources", inline),
                ("/usr/share/keyrings/r.pgp", "RING"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        );
        let s = read_sources(&fs).unwrap();
        let names: Vec<String> = s.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "http://deb.test/debian trixie",
                "http://archive.test trixie",
                "http://archive.test trixie-updates",
                "http://inline.test/r s"
            ]
        );
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(s[0].keyring, b"\x01bin\x01\x02\x03\x04\x05");
        assert_eq!(
            s[0].keys_from,
            "/etc/apt/trusted.gpg.d/a.gpg, /etc/apt/trusted.gpg.d/b.asc"
        );
        assert_eq!(s[1].keyring, b"RING");
        assert_eq!(s[3].keyring, [6, 7, 8]);
        // A Signed-By file the base lacks is an error naming it.
        let fs = MemFiles::with(&[(
            "/etc/apt/sources.list",
            "deb [signed-by=/usr/share/keyrings/none.gpg] http://d.test/ s main\n",
        )]);
        let e = read_sources(&fs).unwrap_err();
        assert!(e.contains("/usr/share/keyrings/none.gpg"), "{e}");
    }

    #[test]
    fn bad_armor_is_refused() {
        assert_eq!(dearmor(ASC).unwrap(), [1, 2, 3, 4, 5]);
        assert!(dearmor("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAQID\n").is_none());
        assert!(dearmor(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!\n-----END PGP PUBLIC KEY BLOCK-----"
        )
        .is_none());
        assert!(dearmor("nothing").is_none());
    }
}
