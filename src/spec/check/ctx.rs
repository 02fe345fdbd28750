//! The checker's context: where problems are collected, and typed access to a mapping's keys.

use std::path::{Path, PathBuf};

use super::super::values::is_dns_label;
use super::super::yaml::{Item, Kind, Pos};
use super::super::Diagnostic;

/// Collects the problems of one spec (and of the profiles it names).
pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) base_dir: &'a Path,
    pub(super) diagnostics: Vec<Diagnostic>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_string(),
            pos,
            message: message.into(),
        });
    }

    pub(in crate::spec) fn resolve(&self, rel: &str) -> PathBuf {
        resolve(self.base_dir, rel)
    }

    /// Checks that `item` is a mapping with only `allowed` keys, each once.
    pub(super) fn fields<'t>(
        &mut self,
        item: &'t Item,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'t>> {
        let Kind::Map(entries) = &item.kind else {
            let what = if path.is_empty() {
                "the file".to_string()
            } else {
                path.to_string()
            };
            self.err(
                item.pos,
                format!(
                    "{what}: expected a mapping (`key: value` lines), found {}",
                    item.describe()
                ),
            );
            return None;
        };
        let mut fields = Fields {
            pos: item.pos,
            path: path.to_string(),
            entries: Vec::new(),
        };
        for (key, value) in entries {
            let Some(name) = key.as_str() else {
                self.err(
                    key.pos,
                    format!(
                        "{}: a key must be a plain name, not {}",
                        or_top(path),
                        key.describe()
                    ),
                );
                continue;
            };
            if !allowed.contains(&name) {
                let place = if path.is_empty() {
                    String::new()
                } else {
                    format!(" in {path}")
                };
                self.err(
                    key.pos,
                    format!(
                        "unknown key `{name}`{place}; allowed keys: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            if let Some((_, first, _)) = fields.entries.iter().find(|(n, _, _)| *n == name) {
                let line = first.pos.line;
                self.err(
                    key.pos,
                    format!("{}: duplicate key (first at line {line})", join(path, name)),
                );
                continue;
            }
            fields.entries.push((name, key, value));
        }
        Some(fields)
    }

    /// A required value: reports a missing key at the mapping, an empty value at the value.
    pub(super) fn required<'t>(&mut self, fields: &Fields<'t>, name: &str) -> Option<&'t Item> {
        match fields.entry(name) {
            None => {
                let path = fields.path.as_str();
                let msg = if path.is_empty() {
                    format!("missing required key `{name}`")
                } else {
                    format!("{path}: missing required key `{name}`")
                };
                self.err(fields.pos, msg);
                None
            }
            Some((_, value)) if value.is_null() => {
                self.err(
                    value.pos,
                    format!("{}: a value is required", join(&fields.path, name)),
                );
                None
            }
            Some((_, value)) => Some(value),
        }
    }

    /// A scalar's text; reports lists and mappings.
    pub(super) fn text<'t>(&mut self, item: &'t Item, path: &str) -> Option<&'t str> {
        match item.as_str() {
            Some(s) => Some(s),
            None => {
                self.err(
                    item.pos,
                    format!("{path}: expected a single value, found {}", item.describe()),
                );
                None
            }
        }
    }

    /// A list's items; a null value is an empty list.
    pub(super) fn list<'t>(
        &mut self,
        item: &'t Item,
        path: &str,
        of_what: &str,
    ) -> Option<&'t [Item]> {
        match &item.kind {
            Kind::Seq(items) => Some(items),
            _ if item.is_null() => Some(&[]),
            _ => {
                self.err(
                    item.pos,
                    format!(
                        "{path}: expected a list of {of_what}, found {}",
                        item.describe()
                    ),
                );
                None
            }
        }
    }
}

/// A checked mapping: its known keys in source order.
pub(super) struct Fields<'t> {
    pub(super) pos: Pos,
    pub(super) path: String,
    pub(super) entries: Vec<(&'t str, &'t Item, &'t Item)>,
}

impl<'t> Fields<'t> {
    pub(super) fn entry(&self, name: &str) -> Option<(&'t Item, &'t Item)> {
        self.entries
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, k, v)| (k, v))
    }

    /// The value of an optional key; `None` if absent or null.
    pub(super) fn get(&self, name: &str) -> Option<&'t Item> {
        self.entry(name).map(|(_, v)| v).filter(|v| !v.is_null())
    }
}

pub(super) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(super) fn or_top(path: &str) -> &str {
    if path.is_empty() {
        "the file"
    } else {
        path
    }
}

/// `rel` against `base`, without a `./` in front when `base` is the current directory.
pub(in crate::spec) fn resolve(base: &Path, rel: &str) -> PathBuf {
    let rel = Path::new(rel);
    if rel.is_absolute() || base.as_os_str().is_empty() || base == Path::new(".") {
        rel.to_path_buf()
    } else {
        base.join(rel)
    }
}

/// Reports a name that is not a DNS-1123 label; true if it is one.
pub(super) fn check_label(ctx: &mut Ctx<'_>, pos: Pos, path: &str, s: &str) -> bool {
    if is_dns_label(s) {
        return true;
    }
    ctx.err(
        pos,
        format!(
            "{path}: `{s}` is not a DNS-1123 label (lowercase letters, digits and '-', starting \
             and ending with a letter or digit, at most 63 characters)"
        ),
    );
    false
}
