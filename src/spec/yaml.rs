//! A small position-annotated YAML tree on top of `saphyr-parser`'s events and its conversion
//! to a `serde_json::Value` (for cloud-init fragments). Writing YAML is `render::yaml`'s job.
//!
//! Every node keeps the line and column where it starts, so that the spec checks can point at
//! the offending key or value. Scalars keep their source text: `version: 1.30` stays `1.30`, not
//! the float `1.3`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::Value;

/// A position in a text file: line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, col: 1 };

    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: Kind,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Entries in source order; keys may repeat (the checks report duplicates).
    Map(Vec<(Item, Item)>),
    Seq(Vec<Item>),
    Scalar(Scalar),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain (unquoted, not a block scalar): only plain scalars can be null, bool or number.
    pub plain: bool,
    /// `!!str` and friends: the suffix of a core-schema tag, or the whole tag otherwise.
    pub tag: Option<String>,
}

impl Item {
    /// A plain `~`, `null` or empty scalar.
    pub fn is_null(&self) -> bool {
        match &self.kind {
            Kind::Scalar(s) => s.plain && s.tag.is_none() && is_null_text(&s.text),
            _ => false,
        }
    }

    /// The scalar's text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    /// "a mapping", "a list", "the value `3`": for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Map(_) => "a mapping".into(),
            Kind::Seq(_) => "a list".into(),
            Kind::Scalar(_) if self.is_null() => "an empty value".into(),
            Kind::Scalar(s) => format!("the value `{}`", s.text),
        }
    }
}

fn is_null_text(t: &str) -> bool {
    matches!(t, "" | "~" | "null" | "Null" | "NULL")
}

/// A YAML syntax problem: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    /// A flow collection (`[` or `{`) still open where the error was found, and where it
    /// opened: the likely cause of an error lines below it.
    pub unclosed: Option<(Pos, char)>,
}

impl SyntaxError {
    /// A second problem to report when a flow collection was left open: where it opened, and
    /// why it matters.
    pub fn unclosed_note(&self) -> Option<(Pos, String)> {
        let (pos, c) = self.unclosed?;
        let close = if c == '[' { ']' } else { '}' };
        Some((
            pos,
            format!(
                "this `{c}` is never closed; a missing `{close}` would explain the error at \
                 line {}, column {}",
                self.pos.line, self.pos.col
            ),
        ))
    }
}

/// Parses a stream holding at most one document. `Ok(None)` for an empty stream (only
/// comments or nothing).
pub fn parse(text: &str) -> Result<Option<Item>, SyntaxError> {
    let mut builder = Builder::default();
    feed(&mut builder, text)?;
    Ok(builder.root)
}

/// Like [`parse`], but an anchor (`&name`) or alias (`*name`) is an error: node profiles
/// become cloud-init user-data, where an alias would be written out expanded (a 300-byte
/// profile made 21.8 MB of user-data on the FAT partition, issue 12 item 4) and no profile
/// needs one.
pub fn parse_without_aliases(text: &str) -> Result<Option<Item>, SyntaxError> {
    let mut builder = Builder {
        no_aliases: true,
        ..Builder::default()
    };
    feed(&mut builder, text)?;
    Ok(builder.root)
}

/// The most an alias expansion may add to a tree, counted in nodes plus scalar bytes: far
/// more than any spec or configuration file needs, far less than a "billion laughs" alias
/// bomb (a 9-level one reached 3.8 GB when aliases were expanded without a bound).
pub const MAX_ALIAS_EXPANSION: usize = 1 << 20;

/// Parses a stream of any number of documents (`---` between them), for reading files such
/// as a multi-document kubeadm configuration. Empty documents are left out.
pub fn parse_documents(text: &str) -> Result<Vec<Item>, SyntaxError> {
    let mut builder = Builder {
        many: true,
        ..Builder::default()
    };
    feed(&mut builder, text)?;
    Ok(builder.documents_done)
}

fn feed(builder: &mut Builder, text: &str) -> Result<(), SyntaxError> {
    let lines: Vec<&str> = text.lines().collect();
    // The character a collection starts with: `[` or `{` for a flow collection.
    let opener = |pos: Pos| {
        lines
            .get(pos.line.wrapping_sub(1))
            .and_then(|l| l.chars().nth(pos.col.wrapping_sub(1)))
            .filter(|c| matches!(c, '[' | '{'))
    };
    // For each open collection, where its flow bracket is (None for a block collection).
    let mut open: Vec<Option<(Pos, char)>> = Vec::new();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            unclosed: open.iter().rev().find_map(|o| *o),
            pos: Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: format!("invalid YAML: {}", e.info()),
        })?;
        match &event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                let pos = Pos::of(&span);
                open.push(opener(pos).map(|c| (pos, c)));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                open.pop();
            }
            _ => {}
        }
        builder.event(event, &span)?;
    }
    Ok(())
}

#[derive(Default)]
struct Builder {
    /// Open collections: the node being filled, its anchor id, and a pending key for maps.
    stack: Vec<(Item, usize, Option<Item>)>,
    /// Anchored nodes and their weights (see [`weight`]).
    anchors: HashMap<usize, (Item, usize)>,
    /// What aliases have added so far, against [`MAX_ALIAS_EXPANSION`].
    expanded: usize,
    /// Refuse anchors and aliases ([`parse_without_aliases`]).
    no_aliases: bool,
    documents: usize,
    root: Option<Item>,
    /// Accept several documents, collecting them in `documents_done`.
    many: bool,
    documents_done: Vec<Item>,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        let pos = Pos::of(span);
        let anchored = match &event {
            Event::Scalar(_, _, a, _) | Event::SequenceStart(a, _) | Event::MappingStart(a, _) => {
                *a != 0
            }
            Event::Alias(_) => true,
            _ => false,
        };
        if self.no_aliases && anchored {
            return Err(SyntaxError {
                unclosed: None,
                pos,
                message: "anchors and aliases (`&name`, `*name`) are not accepted here; write \
                          the values out"
                    .into(),
            });
        }
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 && !self.many {
                    return Err(SyntaxError {
                        unclosed: None,
                        pos,
                        message: "more than one YAML document (`---`): keep one document per file"
                            .into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| {
                    if t.is_yaml_core_schema() {
                        t.suffix.clone()
                    } else {
                        format!("{}{}", t.handle, t.suffix)
                    }
                });
                let item = Item {
                    kind: Kind::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                        tag,
                    }),
                    pos,
                };
                self.finish(item, anchor);
            }
            Event::Alias(id) => {
                let Some((target, w)) = self.anchors.get(&id) else {
                    return Err(SyntaxError {
                        unclosed: None,
                        pos,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                self.expanded = self.expanded.saturating_add(*w);
                if self.expanded > MAX_ALIAS_EXPANSION {
                    return Err(SyntaxError {
                        unclosed: None,
                        pos,
                        message: format!(
                            "aliases expand to more than {MAX_ALIAS_EXPANSION} nodes and bytes \
                             (an alias bomb?); write the values out"
                        ),
                    });
                }
                let mut item = target.clone();
                item.pos = pos;
                self.finish(item, 0);
            }
            Event::SequenceStart(anchor, _) => {
                let item = Item {
                    kind: Kind::Seq(Vec::new()),
                    pos,
                };
                self.stack.push((item, anchor, None));
            }
            Event::MappingStart(anchor, _) => {
                let item = Item {
                    kind: Kind::Map(Vec::new()),
                    pos,
                };
                self.stack.push((item, anchor, None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((item, anchor, _)) = self.stack.pop() {
                    self.finish(item, anchor);
                }
            }
            Event::DocumentEnd => {
                if self.many {
                    self.documents_done.extend(self.root.take());
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// A node is complete: remember its anchor and put it into its parent (or make it the root).
    fn finish(&mut self, item: Item, anchor: usize) {
        if anchor != 0 {
            // The weight walk is bounded: the node is made of source text and of expansions
            // already counted against the bound.
            self.anchors.insert(anchor, (item.clone(), weight(&item)));
        }
        match self.stack.last_mut() {
            None => self.root = Some(item),
            Some((parent, _, pending)) => match &mut parent.kind {
                Kind::Seq(items) => items.push(item),
                Kind::Map(entries) => match pending.take() {
                    None => *pending = Some(item),
                    Some(key) => entries.push((key, item)),
                },
                Kind::Scalar(_) => unreachable!("scalars are never on the stack"),
            },
        }
    }
}

/// The size of a tree as alias expansion counts it: one per node plus each scalar's bytes.
fn weight(item: &Item) -> usize {
    match &item.kind {
        Kind::Scalar(s) => 1 + s.text.len(),
        Kind::Seq(items) => items.iter().map(weight).fold(1, usize::saturating_add),
        Kind::Map(entries) => entries
            .iter()
            .map(|(k, v)| weight(k).saturating_add(weight(v)))
            .fold(1, usize::saturating_add),
    }
}

/// Converts a tree to JSON the way cloud-init (PyYAML, YAML 1.1) would read it, so that the
/// meaning survives a trip through `render::yaml::to_yaml`: plain `yes`/`no`/`on`/`off` are booleans as
/// well as `true`/`false`; plain decimal integers and floats are numbers; numbers with a leading
/// zero such as a file mode `0644` stay strings (cloud-init reads modes given as strings in
/// octal, and YAML 1.1 and 1.2 disagree on them); everything else is a string.
pub fn to_json(item: &Item) -> Result<Value, SyntaxError> {
    Ok(match &item.kind {
        Kind::Scalar(s) => scalar_to_json(s),
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Kind::Map(entries) => {
            let mut map = serde_json::Map::new();
            let mut seen: HashMap<String, Pos> = HashMap::new();
            for (key, value) in entries {
                let Kind::Scalar(k) = &key.kind else {
                    return Err(SyntaxError {
                        unclosed: None,
                        pos: key.pos,
                        message: format!(
                            "a mapping key must be a plain value, not {}",
                            key.describe()
                        ),
                    });
                };
                if let Some(first) = seen.insert(k.text.clone(), key.pos) {
                    return Err(SyntaxError {
                        unclosed: None,
                        pos: key.pos,
                        message: format!(
                            "duplicate key `{}` (first at line {})",
                            k.text, first.line
                        ),
                    });
                }
                map.insert(k.text.clone(), to_json(value)?);
            }
            Value::Object(map)
        }
    })
}

fn scalar_to_json(s: &Scalar) -> Value {
    let text = s.text.as_str();
    match s.tag.as_deref() {
        Some("str") => return Value::String(s.text.clone()),
        Some("int") | Some("float") => {
            if let Some(n) = number(text) {
                return n;
            }
            return Value::String(s.text.clone());
        }
        _ => {}
    }
    if !s.plain {
        return Value::String(s.text.clone());
    }
    if is_null_text(text) {
        return Value::Null;
    }
    if let Some(b) = boolean(text) {
        return Value::Bool(b);
    }
    number(text).unwrap_or_else(|| Value::String(s.text.clone()))
}

/// YAML 1.1 and 1.2 booleans (PyYAML's list, which cloud-init uses).
fn boolean(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// Decimal integers without a leading zero, and decimal fractions (`1.5`); `None` for anything
/// that YAML 1.1 and 1.2 read differently (octal `0644`, hex, `1_000`, `1e3`, sexagesimal, `.inf`).
fn number(t: &str) -> Option<Value> {
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (whole, frac) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || (whole.len() > 1 && whole.starts_with('0')) {
        return None;
    }
    match frac {
        None => t.parse::<i64>().ok().map(Value::from),
        Some(f) if all_digits(f) => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Some(_) => None,
    }
}
