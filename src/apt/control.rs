//! Debian control files (deb822): `Field: value` lines, continuation lines starting with a
//! blank, paragraphs separated by blank lines. The one reader for Release, Packages, the dpkg
//! status and deb822 `.sources` files.
//!
//! [`Paragraphs`] streams paragraphs from any `BufRead` with a bound on each line and each
//! paragraph, so a hostile Packages file cannot make piforge hold more than one paragraph.

use std::io::BufRead;

/// The longest line and the largest paragraph read; Debian's largest Packages paragraphs are
/// a few KiB (long descriptions are in the Translation files, not Packages).
pub const LINE_MAX: usize = 1 << 20;
pub const PARAGRAPH_MAX: usize = 4 << 20;

/// One paragraph: its fields in order, names as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    pub fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of a field (names compare without case, as dpkg does), trimmed; continuation
    /// lines are joined with `\n`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole control text (a Release, a status file, a `.sources` file). `#` comment
/// lines are skipped (deb822 `.sources` allows them; other files have none).
pub fn parse(text: &str) -> Result<Vec<Paragraph>, String> {
    let mut out = Vec::new();
    let mut p = Paragraphs::new(text.as_bytes());
    while let Some(para) = p.next_paragraph()? {
        out.push(para);
    }
    Ok(out)
}

/// Paragraphs read one at a time from a reader.
pub struct Paragraphs<R> {
    reader: R,
    line: Vec<u8>,
    /// Line number, for errors.
    lineno: u64,
}

impl<R: BufRead> Paragraphs<R> {
    pub fn new(reader: R) -> Self {
        Paragraphs {
            reader,
            line: Vec::new(),
            lineno: 0,
        }
    }

    /// Reads one line (without its `\n`) into `self.line`, at most [`LINE_MAX`] bytes;
    /// false at the end.
    fn read_line(&mut self) -> Result<bool, String> {
        self.line.clear();
        loop {
            let buf = self
                .reader
                .fill_buf()
                .map_err(|e| format!("cannot read line {}: {e}", self.lineno + 1))?;
            if buf.is_empty() {
                if self.line.is_empty() {
                    return Ok(false);
                }
                break;
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > LINE_MAX + 1 {
                return Err(format!(
                    "line {} is longer than {} KiB",
                    self.lineno + 1,
                    LINE_MAX >> 10
                ));
            }
            self.line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if done {
                self.line.pop();
                break;
            }
        }
        self.lineno += 1;
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok(true)
    }

    /// The next paragraph, `None` at the end.
    pub fn next_paragraph(&mut self) -> Result<Option<Paragraph>, String> {
        let mut para = Paragraph::default();
        let mut bytes = 0usize;
        while self.read_line()? {
            let line = String::from_utf8_lossy(&self.line);
            if line.trim().is_empty() {
                if para.fields.is_empty() {
                    continue;
                }
                return Ok(Some(para));
            }
            if line.starts_with('#') {
                continue;
            }
            bytes += line.len();
            if bytes > PARAGRAPH_MAX {
                return Err(format!(
                    "the paragraph ending at line {} is larger than {} MiB",
                    self.lineno,
                    PARAGRAPH_MAX >> 20
                ));
            }
            if line.starts_with([' ', '\t']) {
                match para.fields.last_mut() {
                    Some((_, v)) => {
                        v.push('\n');
                        v.push_str(line.trim());
                    }
                    None => {
                        return Err(format!(
                            "line {} continues a field, but no field precedes it",
                            self.lineno
                        ))
                    }
                }
                continue;
            }
            match line.split_once(':') {
                Some((name, value)) if !name.is_empty() && !name.contains(' ') => {
                    para.fields
                        .push((name.to_string(), value.trim().to_string()));
                }
                _ => {
                    return Err(format!(
                        "line {} is neither `Field: value` nor a continuation",
                        self.lineno
                    ))
                }
            }
        }
        Ok((!para.fields.is_empty()).then_some(para))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_fields_and_continuations() {
        let text = "Package: a\nVersion: 1.0\nDescription: short\n long line\n .\n\n\n# c\npackage: b\r\nDepends: x (>= 1), y | z\n";
        let p = parse(text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("package"), Some("a"));
        assert_eq!(p[0].get("Description"), Some("short\nlong line\n."));
        assert_eq!(p[1].get("Package"), Some("b"));
        assert_eq!(p[1].get("depends"), Some("x (>= 1), y | z"));
        assert!(parse(" x\n").unwrap_err().contains("line 1 continues"));
        assert!(parse("Package a\n")
            .unwrap_err()
            .contains("line 1 is neither"));
    }

    #[test]
    fn a_huge_line_or_paragraph_is_refused_not_held() {
        let long = format!("Package: {}\n", "a".repeat(LINE_MAX + 10));
        assert!(parse(&long).unwrap_err().contains("longer than 1024 KiB"));
        let many = "Field: 0123456789012345678901234567890123456789\n".repeat(200_000);
        assert!(parse(&many).unwrap_err().contains("larger than 4 MiB"));
    }
}
