//! YAML to a tree of nodes that remember where they were written.
//!
//! yaml-rust2's own `Yaml` type drops positions, so this module reads its event parser and
//! builds its own tree. Scalars resolve like the YAML 1.2 core
//! schema (what Kubernetes tooling mostly agrees on): `null`/`~`/empty, `true`/`false`,
//! integers (decimal, `0o`, `0x`), floats, everything else a string; quoted and block scalars
//! are always strings. Anchors and aliases are resolved by cloning, with a budget so that a
//! "billion laughs" file cannot exhaust memory; `<<` merge keys are honoured because
//! Kubernetes YAML written by hand sometimes relies on them.
//!
//! The tree converts to `serde_json::Value` for typed deserialization, and answers "where is
//! `spec.http[0].route`?" for diagnostics.
//!
//! The parser is driven one event at a time ([`Parser::next_token`]), never through
//! `Parser::load`: `load` recurses once per nesting level, so a few kilobytes of `- - - …`
//! overflow the stack before any limit here could apply. Driven from a loop, nesting costs
//! only heap (the builder's explicit stack), and reading stops at [`MAX_DEPTH`].

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::resources::{FieldPath, PathSegment};

/// How many nodes aliases may expand to in one document before the document is rejected.
/// Real configs stay orders of magnitude below this; crafted ones would grow exponentially.
const MAX_ALIAS_EXPANSION: usize = 100_000;
/// How deeply collections may nest. Reading stops at the first collection deeper than this,
/// which keeps every later recursive walk of the tree (JSON conversion, serde, drop) far from
/// the stack limit. Istio resources nest a dozen levels at most.
const MAX_DEPTH: usize = 256;
/// How many documents one text may hold. Each becomes a resource to check, diff and compile;
/// a config of this many resources is already far beyond any mesh this control plane serves.
pub(crate) const MAX_DOCUMENTS: usize = 20_000;
/// The tag handle yaml-rust2 resolves `!!` to.
const CORE_TAG_HANDLE: &str = "tag:yaml.org,2002:";

/// A position in the source, both 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    /// Line, 1-based.
    pub line: usize,
    /// Column in characters, 1-based.
    pub column: usize,
}

impl Mark {
    /// yaml-rust2 counts lines from 1 but columns from 0.
    fn from_marker(marker: &Marker) -> Self {
        Mark {
            line: marker.line().max(1),
            column: marker.col() + 1,
        }
    }
}

/// A YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// Where the node starts (for a block mapping, its first key).
    pub mark: Mark,
    /// The value.
    pub value: NodeValue,
    /// Number of nodes in this subtree, for the alias expansion budget.
    size: usize,
}

/// The value of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NodeValue {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// A positive integer too large for i64.
    UInt(u64),
    /// A finite float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, keys unique.
    Map(Vec<Entry>),
}

/// One key/value pair of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    /// The key as text (keys must be scalars; `80:` is the key "80").
    pub key: String,
    /// Where the key is.
    pub key_mark: Mark,
    /// The value.
    pub value: Node,
}

/// Problems found while reading YAML.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum YamlError {
    /// The scanner or parser rejected the text; nothing after this point was read.
    #[error("YAML syntax error: {0}")]
    Syntax(String),
    /// A key appears twice in one mapping; YAML forbids it and the second would silently win.
    #[error("duplicate key {key:?} (first at line {first_line})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Line of the first occurrence.
        first_line: usize,
    },
    /// A sequence or mapping used as a mapping key.
    #[error("mapping keys must be scalars")]
    ComplexKey,
    /// `*name` without a matching `&name`.
    #[error("alias refers to an unknown anchor")]
    UnknownAlias,
    /// Aliases expand to too many nodes.
    #[error("aliases expand to more than {limit} nodes")]
    AliasBudget {
        /// The budget.
        limit: usize,
    },
    /// Collections nest too deeply; nothing after this point was read.
    #[error("collections nest more than {limit} levels deep")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The text holds too many documents; nothing after this point was read.
    #[error("more than {limit} documents in one file")]
    TooManyDocuments {
        /// The limit.
        limit: usize,
    },
    /// A scalar with an explicit core tag (`!!int`) that does not fit it.
    #[error("{value:?} is not a valid !!{tag}")]
    BadTaggedScalar {
        /// The scalar text.
        value: String,
        /// The tag suffix (`int`).
        tag: String,
    },
    /// `<<:` followed by something other than a mapping or a list of mappings.
    #[error("merge key `<<` needs a mapping or a list of mappings")]
    BadMerge,
}

/// A [`YamlError`] and where it happened.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Issue {
    /// Where.
    pub mark: Mark,
    /// What.
    pub error: YamlError,
}

/// One non-empty document of a stream.
#[derive(Debug)]
pub(crate) struct Document {
    /// The root node.
    pub root: Node,
    /// Problems inside this document; when non-empty the tree is not trustworthy.
    pub issues: Vec<Issue>,
}

/// Everything read from one text.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The documents completed before the end or before a syntax error; empty ones skipped.
    pub documents: Vec<Document>,
    /// The error that stopped reading, if any: a syntax error, or a limit
    /// ([`YamlError::TooDeep`], [`YamlError::TooManyDocuments`]).
    pub syntax_error: Option<Issue>,
}

/// Reads every document of `text`, stopping at the first syntax error or exceeded limit.
pub(crate) fn parse(text: &str) -> Parsed {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let syntax_error = loop {
        let (event, marker) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => {
                break Some(Issue {
                    mark: Mark::from_marker(e.marker()),
                    error: YamlError::Syntax(e.info().to_owned()),
                })
            }
        };
        let end = event == Event::StreamEnd;
        if let Err(stop) = builder.on(event, marker) {
            break Some(stop);
        }
        if end {
            break None;
        }
    };
    Parsed {
        documents: builder.documents,
        syntax_error,
    }
}

/// Which position of a located field to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The key naming the field (for unknown or missing fields).
    Key,
    /// The value when it is a scalar (for "invalid type: string "ten""), else the key.
    Value,
}

impl Node {
    fn new(mark: Mark, value: NodeValue) -> Self {
        let size = match &value {
            NodeValue::Seq(items) => items.iter().fold(1usize, |n, i| n.saturating_add(i.size)),
            NodeValue::Map(entries) => entries
                .iter()
                .fold(1usize, |n, e| n.saturating_add(e.value.size)),
            _ => 1,
        };
        Node { mark, value, size }
    }

    fn null(mark: Mark) -> Self {
        Node::new(mark, NodeValue::Null)
    }

    /// Whether the node is `null` (an empty document is one).
    pub fn is_null(&self) -> bool {
        matches!(self.value, NodeValue::Null)
    }

    /// A short name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "boolean",
            NodeValue::Int(_) | NodeValue::UInt(_) | NodeValue::Float(_) => "number",
            NodeValue::Str(_) => "string",
            NodeValue::Seq(_) => "sequence",
            NodeValue::Map(_) => "mapping",
        }
    }

    /// The value of key `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The tree as JSON, the form serde deserializes the typed resources from.
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::UInt(u) => Value::from(*u),
            // Floats are only ever built finite, so `from_f64` does not fail; null is the
            // conservative answer if that invariant were ever broken.
            NodeValue::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }

    /// Where the field at `path` is written. When the path leaves the tree (a missing field,
    /// say), the position of the deepest ancestor that exists: the key naming it if it has
    /// one, else the ancestor itself.
    pub fn locate(&self, path: &FieldPath, anchor: Anchor) -> Mark {
        let mut node = self;
        let mut key_mark: Option<Mark> = None;
        let mut complete = true;
        for segment in path.segments() {
            let next = match (segment, &node.value) {
                (PathSegment::Field(name), NodeValue::Map(_)) => node
                    .get(name)
                    .map(|entry| (&entry.value, Some(entry.key_mark))),
                (PathSegment::Index(i), NodeValue::Seq(items)) => {
                    items.get(*i).map(|item| (item, None))
                }
                // A map key that looks like a number ("80") may have come back as an index.
                (PathSegment::Index(i), NodeValue::Map(_)) => node
                    .get(&i.to_string())
                    .map(|entry| (&entry.value, Some(entry.key_mark))),
                _ => None,
            };
            match next {
                Some((child, mark)) => {
                    node = child;
                    key_mark = mark;
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        let scalar = !matches!(node.value, NodeValue::Seq(_) | NodeValue::Map(_));
        if complete && anchor == Anchor::Value && scalar {
            node.mark
        } else {
            key_mark.unwrap_or(node.mark)
        }
    }
}

/// A key read but whose value has not arrived yet.
#[derive(Debug)]
enum PendingKey {
    /// A usable key.
    Key(String, Mark),
    /// A collection used as key; its value is read and dropped.
    Invalid,
}

/// A collection being built.
#[derive(Debug)]
enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        anchor: usize,
        entries: Vec<Entry>,
        /// Key → line of its first occurrence, to find duplicates without a quadratic scan.
        seen: HashMap<String, usize>,
        /// Mappings named by `<<` keys, merged in at the end so explicit keys win.
        merges: Vec<Node>,
        key: Option<PendingKey>,
    },
}

/// The event receiver building [`Node`] trees, one per document.
#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    issues: Vec<Issue>,
    expanded: usize,
    documents: Vec<Document>,
}

impl Builder {
    /// Takes the next parser event. An error stops reading: the limit it names was exceeded.
    fn on(&mut self, event: Event, marker: Marker) -> Result<(), Issue> {
        let mark = Mark::from_marker(&marker);
        match event {
            Event::DocumentStart => {
                self.stack.clear();
                self.anchors.clear();
                self.root = None;
                self.issues.clear();
                self.expanded = 0;
            }
            Event::DocumentEnd => {
                // An empty document (nothing, or only comments) is a null scalar: skip it.
                if let Some(root) = self.root.take().filter(|r| !r.is_null()) {
                    if self.documents.len() >= MAX_DOCUMENTS {
                        return Err(Issue {
                            mark: root.mark,
                            error: YamlError::TooManyDocuments {
                                limit: MAX_DOCUMENTS,
                            },
                        });
                    }
                    self.documents.push(Document {
                        root,
                        issues: std::mem::take(&mut self.issues),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = self.stack.last_mut()
                {
                    // Keys are kept as written: `80:` is "80", as Kubernetes reads it.
                    *key = Some(PendingKey::Key(text.clone(), mark));
                    if anchor > 0 {
                        self.anchors
                            .insert(anchor, Node::new(mark, NodeValue::Str(text)));
                    }
                    return Ok(());
                }
                let value = match resolve_scalar(text, style, tag.as_ref()) {
                    Ok(value) => value,
                    Err(error) => {
                        self.issues.push(Issue { mark, error });
                        NodeValue::Null
                    }
                };
                let node = Node::new(mark, value);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node);
            }
            Event::Alias(anchor) => {
                let node = match self.anchors.get(&anchor) {
                    Some(target) => {
                        self.expanded = self.expanded.saturating_add(target.size);
                        if self.expanded > MAX_ALIAS_EXPANSION {
                            self.issues.push(Issue {
                                mark,
                                error: YamlError::AliasBudget {
                                    limit: MAX_ALIAS_EXPANSION,
                                },
                            });
                            // Keep the structure well-formed but stop copying.
                            self.anchors.clear();
                            Node::null(mark)
                        } else {
                            let mut copy = target.clone();
                            // Report problems inside the copy at the alias, not the anchor.
                            copy.mark = mark;
                            copy
                        }
                    }
                    None => {
                        self.issues.push(Issue {
                            mark,
                            error: YamlError::UnknownAlias,
                        });
                        Node::null(mark)
                    }
                };
                self.push(node);
            }
            Event::SequenceStart(anchor, _) => {
                self.enter(mark)?;
                self.stack.push(Frame::Seq {
                    mark,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.enter(mark)?;
                self.stack.push(Frame::Map {
                    mark,
                    anchor,
                    entries: Vec::new(),
                    seen: HashMap::new(),
                    merges: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let (node, anchor) = self.finish(frame);
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push(node);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// Checks that one more collection may open.
    fn enter(&self, mark: Mark) -> Result<(), Issue> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Issue {
                mark,
                error: YamlError::TooDeep { limit: MAX_DEPTH },
            });
        }
        Ok(())
    }

    /// Turns a finished collection into a node.
    fn finish(&mut self, frame: Frame) -> (Node, usize) {
        match frame {
            Frame::Seq {
                mark,
                anchor,
                items,
            } => (Node::new(mark, NodeValue::Seq(items)), anchor),
            Frame::Map {
                mark,
                anchor,
                mut entries,
                mut seen,
                merges,
                ..
            } => {
                // The event mark of a block mapping lies after its first key; the key itself is
                // where a reader looks. Flow mappings (`{`) start before their first key.
                let mark = entries
                    .first()
                    .map_or(mark, |first| first.key_mark.min(mark));
                for merged in merges {
                    if let NodeValue::Map(extra) = merged.value {
                        for entry in extra {
                            if !seen.contains_key(&entry.key) {
                                seen.insert(entry.key.clone(), entry.key_mark.line);
                                entries.push(entry);
                            }
                        }
                    }
                }
                (Node::new(mark, NodeValue::Map(entries)), anchor)
            }
        }
    }

    /// Places a finished node: as the document root, a sequence item, a mapping key or a
    /// mapping value.
    fn push(&mut self, node: Node) {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match frame {
            Frame::Seq { items, .. } => items.push(node),
            Frame::Map {
                entries,
                seen,
                merges,
                key,
                ..
            } => match key.take() {
                None => {
                    *key = Some(match &node.value {
                        NodeValue::Seq(_) | NodeValue::Map(_) => {
                            self.issues.push(Issue {
                                mark: node.mark,
                                error: YamlError::ComplexKey,
                            });
                            PendingKey::Invalid
                        }
                        // An aliased scalar used as a key.
                        _ => PendingKey::Key(scalar_text(&node), node.mark),
                    });
                }
                Some(PendingKey::Invalid) => {}
                Some(PendingKey::Key(name, key_mark)) if name == "<<" => match node.value {
                    NodeValue::Map(_) => merges.push(node),
                    NodeValue::Seq(items)
                        if items.iter().all(|i| matches!(i.value, NodeValue::Map(_))) =>
                    {
                        merges.extend(items);
                    }
                    _ => self.issues.push(Issue {
                        mark: key_mark,
                        error: YamlError::BadMerge,
                    }),
                },
                Some(PendingKey::Key(name, key_mark)) => {
                    if let Some(first_line) = seen.get(&name) {
                        self.issues.push(Issue {
                            mark: key_mark,
                            error: YamlError::DuplicateKey {
                                key: name,
                                first_line: *first_line,
                            },
                        });
                    } else {
                        seen.insert(name.clone(), key_mark.line);
                        entries.push(Entry {
                            key: name,
                            key_mark,
                            value: node,
                        });
                    }
                }
            },
        }
    }
}

/// The text of a scalar node, for use as a mapping key.
fn scalar_text(node: &Node) -> String {
    match &node.value {
        NodeValue::Null => String::new(),
        NodeValue::Bool(b) => b.to_string(),
        NodeValue::Int(i) => i.to_string(),
        NodeValue::UInt(u) => u.to_string(),
        NodeValue::Float(f) => f.to_string(),
        NodeValue::Str(s) => s.clone(),
        NodeValue::Seq(_) | NodeValue::Map(_) => String::new(),
    }
}

/// Resolves a scalar: explicit core tags first, then quoting, then the core schema.
fn resolve_scalar(
    text: String,
    style: TScalarStyle,
    tag: Option<&Tag>,
) -> Result<NodeValue, YamlError> {
    if let Some(tag) = tag.filter(|t| t.handle == CORE_TAG_HANDLE) {
        let resolved = match tag.suffix.as_str() {
            "null" => Some(NodeValue::Null),
            "bool" => resolve_bool(&text),
            "int" => resolve_int(&text),
            "float" => resolve_float(&text),
            // `!!str`, `!!binary`, `!!timestamp` and the rest are kept as text.
            _ => Some(NodeValue::Str(text.clone())),
        };
        return resolved.ok_or(YamlError::BadTaggedScalar {
            value: text,
            tag: tag.suffix.clone(),
        });
    }
    if style != TScalarStyle::Plain {
        return Ok(NodeValue::Str(text));
    }
    Ok(resolve_plain(text))
}

/// The core schema for a plain (unquoted, untagged) scalar.
fn resolve_plain(text: String) -> NodeValue {
    if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
        return NodeValue::Null;
    }
    resolve_bool(&text)
        .or_else(|| resolve_int(&text))
        .or_else(|| resolve_float(&text))
        .unwrap_or(NodeValue::Str(text))
}

fn resolve_bool(text: &str) -> Option<NodeValue> {
    match text {
        "true" | "True" | "TRUE" => Some(NodeValue::Bool(true)),
        "false" | "False" | "FALSE" => Some(NodeValue::Bool(false)),
        _ => None,
    }
}

/// `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`.
fn resolve_int(text: &str) -> Option<NodeValue> {
    if let Some(octal) = text.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).ok().map(NodeValue::Int);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(NodeValue::Int);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(NodeValue::Int(i));
    }
    // Only a positive number may spill over into u64.
    if !text.starts_with('-') {
        if let Ok(u) = digits.parse::<u64>() {
            return Some(NodeValue::UInt(u));
        }
    }
    // Beyond 64 bits: a float, as a JSON decoder would read it.
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(NodeValue::Float)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`. `.inf` and `.nan` are left as
/// strings: JSON cannot carry them and no field of the mesh's kinds wants them.
fn resolve_float(text: &str) -> Option<NodeValue> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            all_digits(int) && all_digits(frac) && (!int.is_empty() || !frac.is_empty())
        }
        None => !mantissa.is_empty() && all_digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(NodeValue::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let parsed = parse(text);
        assert!(parsed.syntax_error.is_none(), "{:?}", parsed.syntax_error);
        assert_eq!(parsed.documents.len(), 1);
        let doc = parsed.documents.into_iter().next().unwrap();
        assert!(doc.issues.is_empty(), "{:?}", doc.issues);
        doc.root
    }

    #[test]
    fn scalars_resolve_like_the_core_schema() {
        let root = one(concat!(
            "a: ~\nb: true\nc: 10\nd: -3\ne: 0x1f\nf: 1.5\ng: '10'\nh: v1\ni: .inf\n",
            "j: 1e3\nk: 18446744073709551615\nl: !!str 12\nm: \"true\"\nn: 0o17\no: .5\n",
        ));
        let json = root.to_json();
        assert_eq!(
            json,
            serde_json::json!({
                "a": null, "b": true, "c": 10, "d": -3, "e": 31, "f": 1.5, "g": "10",
                "h": "v1", "i": ".inf", "j": 1000.0, "k": 18446744073709551615u64,
                "l": "12", "m": "true", "n": 15, "o": 0.5,
            })
        );
    }

    #[test]
    fn bad_explicit_tag_is_an_issue() {
        let parsed = parse("a: !!int ten\n");
        assert_eq!(
            parsed.documents[0].issues,
            [Issue {
                // The scanner places a tagged scalar after its tag, at the offending text.
                mark: Mark {
                    line: 1,
                    column: 10
                },
                error: YamlError::BadTaggedScalar {
                    value: "ten".into(),
                    tag: "int".into()
                }
            }]
        );
    }

    #[test]
    fn skips_empty_documents_and_keeps_positions() {
        let parsed = parse("# header\n---\n---\n# nothing\n---\nkind: A\nspec:\n  x: [1, 2]\n");
        assert_eq!(parsed.documents.len(), 1);
        let root = &parsed.documents[0].root;
        assert_eq!(root.mark, Mark { line: 6, column: 1 });
        let x = FieldPath::root().field("spec").field("x");
        assert_eq!(root.locate(&x, Anchor::Value), Mark { line: 8, column: 3 });
        assert_eq!(
            root.locate(&x.index(1), Anchor::Value),
            Mark {
                line: 8,
                column: 10
            }
        );
        // Missing: falls back to the nearest ancestor's key.
        let missing = FieldPath::root().field("spec").field("y").field("z");
        assert_eq!(
            root.locate(&missing, Anchor::Key),
            Mark { line: 7, column: 1 }
        );
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let parsed = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(
            parsed.documents[0].issues,
            [Issue {
                mark: Mark { line: 3, column: 1 },
                error: YamlError::DuplicateKey {
                    key: "a".into(),
                    first_line: 1
                }
            }]
        );
    }

    #[test]
    fn anchors_aliases_and_merges() {
        let root = one("base: &b {x: 1, y: 2}\ncopy: *b\nmerged:\n  <<: *b\n  y: 3\n");
        assert_eq!(
            root.to_json(),
            serde_json::json!({
                "base": {"x": 1, "y": 2},
                "copy": {"x": 1, "y": 2},
                "merged": {"x": 1, "y": 3},
            })
        );
    }

    #[test]
    fn alias_bombs_are_stopped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let parsed = parse(&text);
        assert!(parsed.documents[0]
            .issues
            .iter()
            .any(|i| matches!(i.error, YamlError::AliasBudget { .. })));
    }

    #[test]
    fn deep_nesting_is_stopped() {
        let depth = MAX_DEPTH + 10;
        let text = format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let parsed = parse(&text);
        // Either the scanner's own flow limit or ours triggers; both stop reading.
        let error = parsed.syntax_error.expect("deep flow nesting was read");
        assert!(
            matches!(
                error.error,
                YamlError::TooDeep { .. } | YamlError::Syntax(_)
            ),
            "{error:?}"
        );
    }

    /// `- - - …` nests a block sequence per dash: 100,000 levels in 200 KB. Read on a thread
    /// with a small stack, so any recursion per level would overflow it.
    #[test]
    fn deep_block_nesting_stops_without_recursion() {
        let depth = 100_000;
        let text = format!("{}x\n", "- ".repeat(depth));
        let parsed = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || parse(&text))
            .unwrap()
            .join()
            .expect("parsing overflowed the stack");
        let error = parsed.syntax_error.expect("deep nesting was read");
        assert_eq!(error.error, YamlError::TooDeep { limit: MAX_DEPTH });
        // Reported where the first collection too many opens.
        assert_eq!(error.mark.line, 1);
        assert_eq!(error.mark.column, 2 * MAX_DEPTH + 1);
        assert!(parsed.documents.is_empty());
    }

    #[test]
    fn nesting_up_to_the_limit_is_read() {
        let text = format!("{}x\n", "- ".repeat(MAX_DEPTH));
        let parsed = parse(&text);
        assert!(parsed.syntax_error.is_none(), "{:?}", parsed.syntax_error);
        assert_eq!(parsed.documents.len(), 1);
    }

    #[test]
    fn too_many_documents_stop_reading() {
        let text = "a: 1\n---\n".repeat(MAX_DOCUMENTS + 5);
        let parsed = parse(&text);
        assert_eq!(parsed.documents.len(), MAX_DOCUMENTS);
        let error = parsed.syntax_error.expect("every document was read");
        assert_eq!(
            error.error,
            YamlError::TooManyDocuments {
                limit: MAX_DOCUMENTS
            }
        );
        assert_eq!(error.mark.line, 2 * MAX_DOCUMENTS + 1);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let parsed = parse("a: b\n  c: d: e\n");
        let issue = parsed.syntax_error.unwrap();
        assert_eq!(issue.mark, Mark { line: 2, column: 4 });
        assert_eq!(
            issue.error,
            YamlError::Syntax("mapping values are not allowed in this context".into())
        );
    }

    #[test]
    fn complex_keys_are_rejected() {
        let parsed = parse("? [a, b]\n: c\nd: e\n");
        assert_eq!(parsed.documents[0].issues.len(), 1);
        assert_eq!(parsed.documents[0].issues[0].error, YamlError::ComplexKey);
    }
}
