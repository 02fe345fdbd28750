//! The one YAML writer: every generated YAML file (cloud-init seed, kubeadm configuration,
//! kubeconfig, the NoCloud snippet) goes through [`write`].
//!
//! Documents are built by code as a [`Yaml`] tree (or converted from a `serde_json::Value`,
//! as the merged cloud-init user-data is) and written in block style that YAML 1.1 (PyYAML,
//! cloud-init) and YAML 1.2 readers both read back as the same value. The tests check that
//! with PyYAML as the reader.

use serde_json::Value;

/// A YAML node to write. Mappings keep the order they are given in.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    /// A string, written plain where that is unambiguous and quoted otherwise.
    Str(String),
    /// A string always written double-quoted: for values that come from the user, so that
    /// a reader sees at a glance that no value adds YAML of its own.
    Quoted(String),
    Seq(Vec<Yaml>),
    /// A list of strings on one line, `[a, b]` (readers that scan a line, such as piforge's
    /// own cloud.cfg.d facts, see it whole).
    FlowSeq(Vec<String>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    pub fn str(s: impl Into<String>) -> Yaml {
        Yaml::Str(s.into())
    }

    pub fn quoted(s: impl Into<String>) -> Yaml {
        Yaml::Quoted(s.into())
    }

    /// A mapping from `(key, value)` pairs, in order.
    pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Yaml)>) -> Yaml {
        Yaml::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// An empty mapping, written `{}`.
    pub fn empty_map() -> Yaml {
        Yaml::Map(Vec::new())
    }
}

impl From<&Value> for Yaml {
    fn from(v: &Value) -> Yaml {
        match v {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Bool(*b),
            Value::Number(n) => Yaml::Number(n.clone()),
            Value::String(s) => Yaml::Str(s.clone()),
            Value::Array(a) => Yaml::Seq(a.iter().map(Yaml::from).collect()),
            Value::Object(m) => Yaml::Map(m.iter().map(|(k, v)| (k.clone(), v.into())).collect()),
        }
    }
}

/// How block sequences sit under their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqIndent {
    /// `key:` then `  - item` (cloud-init's documentation style).
    Indented,
    /// `key:` then `- item` (the style of kubeadm and kubectl output).
    Flush,
}

/// One document of a stream: comment lines (each written as given, so each starts with `#`),
/// then the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub comments: Vec<String>,
    pub body: Yaml,
}

/// Writes `value` as YAML. Ends with a newline.
pub fn write(value: &Yaml, seq: SeqIndent) -> String {
    let mut out = String::new();
    let w = Writer { seq };
    match value {
        Yaml::Map(m) if !m.is_empty() => w.map(&mut out, m, 0),
        Yaml::Seq(a) if !a.is_empty() => w.seq(&mut out, a, 0),
        other => {
            w.inline(&mut out, other, 0);
            out.push('\n');
        }
    }
    out
}

/// Writes documents separated by `---`, each preceded by its comment lines.
pub fn write_stream(docs: &[Document], seq: SeqIndent) -> String {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        for c in &d.comments {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str(&write(&d.body, seq));
    }
    out
}

/// A JSON value as YAML, sequences indented (the cloud-init style).
pub fn to_yaml(value: &Value) -> String {
    write(&Yaml::from(value), SeqIndent::Indented)
}

/// Cloud-init user-data: the `#cloud-config` header, then `value` as YAML.
pub fn cloud_config(value: &Value) -> String {
    format!("#cloud-config\n{}", to_yaml(value))
}

struct Writer {
    seq: SeqIndent,
}

fn indent(out: &mut String, n: usize) {
    out.push_str(&" ".repeat(n));
}

impl Writer {
    fn map(&self, out: &mut String, m: &[(String, Yaml)], level: usize) {
        for (k, v) in m {
            indent(out, level);
            write_string(out, k, level, true);
            out.push(':');
            self.child(out, v, level);
        }
    }

    fn seq(&self, out: &mut String, a: &[Yaml], level: usize) {
        for v in a {
            indent(out, level);
            out.push('-');
            match v {
                // A mapping in a list starts on the dash line: `- key: value`.
                Yaml::Map(m) if !m.is_empty() => {
                    out.push(' ');
                    for (i, (k, v)) in m.iter().enumerate() {
                        if i > 0 {
                            indent(out, level + 2);
                        }
                        write_string(out, k, level + 2, true);
                        out.push(':');
                        self.child(out, v, level + 2);
                    }
                }
                // A list in a list always goes one level in, whatever the style.
                Yaml::Seq(inner) if !inner.is_empty() => {
                    out.push('\n');
                    self.seq(out, inner, level + 2);
                }
                _ => self.child(out, v, level),
            }
        }
    }

    /// The value after `key:` or `-`: nested collections go on the following lines.
    fn child(&self, out: &mut String, v: &Yaml, level: usize) {
        match v {
            Yaml::Map(m) if !m.is_empty() => {
                out.push('\n');
                self.map(out, m, level + 2);
            }
            Yaml::Seq(a) if !a.is_empty() => {
                out.push('\n');
                let at = match self.seq {
                    SeqIndent::Indented => level + 2,
                    SeqIndent::Flush => level,
                };
                self.seq(out, a, at);
            }
            _ => {
                out.push(' ');
                self.inline(out, v, level);
                out.push('\n');
            }
        }
    }

    fn inline(&self, out: &mut String, v: &Yaml, level: usize) {
        match v {
            Yaml::Null => out.push_str("null"),
            Yaml::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Yaml::Number(n) => out.push_str(&number_text(n)),
            Yaml::Str(s) => write_string(out, s, level, false),
            Yaml::Quoted(s) => double_quoted(out, s),
            Yaml::Seq(_) => out.push_str("[]"),
            Yaml::FlowSeq(items) => {
                out.push('[');
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    // Flow context has more indicators than block context; plain only for
                    // words such as `NoCloud` (letters, digits, `-`, `_`, `.`, `/`).
                    let word = s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
                    if word && is_plain_safe(s) {
                        out.push_str(s);
                    } else {
                        double_quoted(out, s);
                    }
                }
                out.push(']');
            }
            Yaml::Map(_) => out.push_str("{}"),
        }
    }
}

/// A number as both YAML 1.1 and 1.2 read it: an exponent needs a `.` in the mantissa and a
/// sign for YAML 1.1 (PyYAML reads `1e300` as a string), so `1e300` is written `1.0e+300`.
fn number_text(n: &serde_json::Number) -> String {
    let s = n.to_string();
    let Some((mantissa, exp)) = s.split_once(['e', 'E']) else {
        return s;
    };
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    let exp = if exp.starts_with(['-', '+']) {
        exp.to_string()
    } else {
        format!("+{exp}")
    };
    format!("{mantissa}e{exp}")
}

fn write_string(out: &mut String, s: &str, level: usize, is_key: bool) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if !is_key && is_literal_safe(s) {
        write_literal(out, s, level);
    } else {
        double_quoted(out, s);
    }
}

/// A double-quoted scalar. Besides `"` and `\\`, every character a reader might change is
/// escaped: control characters, and the line breaks and BOM that YAML 1.1 readers fold or drop
/// (NEL, LS, PS, U+FEFF).
fn double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_special_char(c) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn is_null_text(t: &str) -> bool {
    matches!(t, "" | "~" | "null" | "Null" | "NULL")
}

/// YAML 1.1 and 1.2 booleans (PyYAML's list, which cloud-init uses).
fn is_bool_text(t: &str) -> bool {
    matches!(
        t,
        "true"
            | "True"
            | "TRUE"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "false"
            | "False"
            | "FALSE"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// Whether `s` can be written as a plain scalar and read back as the same string by both
/// YAML 1.1 and 1.2 readers, in block context and as a key.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if is_null_text(s) || is_bool_text(s) || looks_numeric(s) {
        return false;
    }
    // Other YAML 1.1 booleans, and 1.1 timestamps.
    if matches!(s, "y" | "Y" | "n" | "N" | "=" | "<<") || looks_like_date(s) {
        return false;
    }
    if "?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if first == '-' && (s == "-" || s.starts_with("- ") || s.starts_with("---")) {
        return false;
    }
    if s.starts_with(' ') || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.contains('\t') {
        return false;
    }
    s.chars().all(|c| !is_special_char(c))
}

/// Characters a reader may not keep as they are outside double quotes.
fn is_special_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{85}')
}

/// Anything that starts like a number (`1`, `-1`, `.5`, `0x1f`, `1_000`, `1:30`, `.inf`, `.nan`)
/// is quoted: YAML 1.1 has many more number forms than 1.2.
fn looks_numeric(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    let t = t.strip_prefix('.').unwrap_or(t);
    t.starts_with(|c: char| c.is_ascii_digit())
        || matches!(t.to_ascii_lowercase().as_str(), "inf" | "nan")
}

fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// Multi-line text that a `|` block keeps exactly: no control characters except newlines, no
/// trailing blanks on a line (a reader keeps them, but they are easy to lose), no leading
/// blank on the first line (that would need an indentation indicator).
fn is_literal_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars()
            .all(|c| c == '\n' || c == '\t' || !is_special_char(c))
        && s.split('\n').all(|l| !l.ends_with([' ', '\t']))
}

fn write_literal(out: &mut String, s: &str, level: usize) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    let extra_blank_lines = std::iter::repeat_n("", trailing.saturating_sub(1));
    for line in body.split('\n').chain(extra_blank_lines) {
        out.push('\n');
        if !line.is_empty() {
            indent(out, level + 2);
            out.push_str(line);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
