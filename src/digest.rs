//! SHA-256 digests, in one place for inputs (`source`) and release artifacts (`artifacts`):
//! hashing a stream, telling a digest from anything else, and reading `sha256sum` listings.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// The size of the hashing buffer: 8 KiB buffers spend the time in syscalls.
const BUF_SIZE: usize = 256 << 10;

/// The SHA-256, in hex, of `parts` one after the other: a key made of a tag and its fields
/// (the caller puts in whatever separates them).
pub fn sha256_hex_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// SHA-256 (64 lowercase hex digits) and length of everything `r` yields.
pub fn sha256_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut size = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// A writer that hashes what passes through it: an output's digest and size, known when its
/// last byte is written, with no second pass over the file.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: io::Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The SHA-256 (lowercase hex) and length of everything written, and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        (hex::encode(self.hasher.finalize()), self.bytes, self.inner)
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `token` as a SHA-256 digest in lowercase, when it is one: 64 hex digits of either case.
pub fn parse_sha256(token: &str) -> Option<String> {
    (token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| token.to_ascii_lowercase())
}

/// True for a SHA-256 digest in the form the lock and the cache use: 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One line of a `sha256sum` listing: the digest as written (not yet validated) and the
/// file name, if the line has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SumLine<'a> {
    pub digest: &'a str,
    pub file: Option<&'a str>,
}

/// The lines of a `sha256sum` listing: `hex  name`, `hex *name` (binary mode) or a bare `hex`;
/// blank lines and `#` comments skipped. The name is given without the `*` and without a
/// leading `./` (callers that match by base name strip directories themselves).
pub fn sum_lines(text: &str) -> Vec<SumLine<'_>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| match line.split_once(char::is_whitespace) {
            None => SumLine {
                digest: line,
                file: None,
            },
            Some((digest, rest)) => {
                let file = rest.trim_start();
                let file = file.strip_prefix('*').unwrap_or(file);
                let file = file.strip_prefix("./").unwrap_or(file);
                SumLine {
                    digest,
                    file: Some(file).filter(|f| !f.is_empty()),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_writer_matches_a_second_pass() {
        use std::io::Write as _;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = HashingWriter::new(Vec::new());
        for chunk in data.chunks(4097) {
            w.write_all(chunk).unwrap();
        }
        let (digest, n, inner) = w.finish();
        assert_eq!(inner, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(digest, sha256_reader(&data[..]).unwrap().0);
    }

    #[test]
    fn sum_lines_formats() {
        let text = "ABC  a.img.xz\n\ndef *b.img\n# comment\n0123\n999 ./c.img\n";
        let got: Vec<(&str, Option<&str>)> =
            sum_lines(text).iter().map(|l| (l.digest, l.file)).collect();
        assert_eq!(
            got,
            [
                ("ABC", Some("a.img.xz")),
                ("def", Some("b.img")),
                ("0123", None),
                ("999", Some("c.img"))
            ]
        );
    }

    #[test]
    fn digests() {
        let d = "A".repeat(64);
        assert_eq!(parse_sha256(&d), Some("a".repeat(64)));
        assert_eq!(parse_sha256(&"a".repeat(63)), None);
        assert_eq!(parse_sha256(&"g".repeat(64)), None);
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&d));
        assert!(!is_sha256_hex("abc"));
    }

    #[test]
    fn hashing_agrees_with_sha256sum() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&data).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let want = String::from_utf8(out.stdout).unwrap();
        let (hex, size) = sha256_reader(&data[..]).unwrap();
        assert_eq!(Some(hex.as_str()), want.split_whitespace().next());
        assert_eq!(size, data.len() as u64);
    }
}
