//! A small YAML writer for the policy documents: block maps and sequences, flow lists
//! of strings, literal block scalars for CEL, and comments, which a serializer cannot
//! write. Every scalar is written plain only when YAML reads it back as the same
//! string; anything else is double-quoted (JSON string syntax, a subset of YAML's).

use std::fmt::Write as _;

#[cfg(test)]
use serde_json::{Map, Value};

/// A YAML value with comments.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Str(String),
    /// A string written as a literal block (`|-`) even when it is one line, where that
    /// reads back the same: CEL, whose quotes would otherwise be escaped.
    Block(String),
    /// A list of strings written in flow style: `["a", "b"]`.
    Flow(Vec<String>),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key of a map, with the comment lines written above it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub comment: Vec<String>,
    pub key: String,
    pub value: Node,
}

impl Node {
    pub fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    /// The value as JSON (what a YAML parser reads back).
    #[cfg(test)]
    pub fn to_json(&self) -> Value {
        match self {
            Node::Str(s) | Node::Block(s) => Value::String(s.clone()),
            Node::Flow(items) => Value::Array(items.iter().cloned().map(Value::String).collect()),
            Node::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

/// A map built entry by entry.
#[derive(Default)]
pub struct MapBuilder(Vec<Entry>);

impl MapBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entry(mut self, key: &str, value: Node) -> Self {
        self.0.push(Entry {
            comment: Vec::new(),
            key: key.to_owned(),
            value,
        });
        self
    }

    /// An entry with comment lines above it (`text` is split at line breaks).
    pub fn commented(mut self, comment: &str, key: &str, value: Node) -> Self {
        self.0.push(Entry {
            comment: comment.lines().map(str::to_owned).collect(),
            key: key.to_owned(),
            value,
        });
        self
    }

    pub fn build(self) -> Node {
        Node::Map(self.0)
    }
}

/// Writes `node` (a map) as one document's body.
pub fn write_document(out: &mut String, node: &Node) {
    match node {
        Node::Map(entries) => write_map(out, entries, 0),
        other => {
            write_inline(out, other, 0);
            out.push('\n');
        }
    }
}

/// Comment lines, `# ` prefixed, at `indent`.
pub fn write_comment(out: &mut String, text: &str, indent: usize) {
    for line in text.lines() {
        pad(out, indent);
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
}

fn write_map(out: &mut String, entries: &[Entry], indent: usize) {
    for e in entries {
        write_comment(out, &e.comment.join("\n"), indent);
        pad(out, indent);
        write_entry(out, e, indent);
    }
}

/// `key: value` (the indentation of the key is already written).
fn write_entry(out: &mut String, e: &Entry, indent: usize) {
    out.push_str(&scalar(&e.key));
    out.push(':');
    match &e.value {
        Node::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            write_map(out, entries, indent + 2);
        }
        Node::Seq(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent + 2);
        }
        other => {
            out.push(' ');
            write_inline(out, other, indent + 2);
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        match item {
            Node::Map(entries) if !entries.is_empty() => {
                // Comments of the first entry go above the dash.
                write_comment(out, &entries[0].comment.join("\n"), indent);
                pad(out, indent);
                out.push_str("- ");
                write_entry(out, &entries[0], indent + 2);
                for e in &entries[1..] {
                    write_comment(out, &e.comment.join("\n"), indent + 2);
                    pad(out, indent + 2);
                    write_entry(out, e, indent + 2);
                }
            }
            Node::Seq(inner) if !inner.is_empty() => {
                pad(out, indent);
                out.push_str("-\n");
                write_seq(out, inner, indent + 2);
            }
            other => {
                pad(out, indent);
                out.push_str("- ");
                write_inline(out, other, indent + 2);
                out.push('\n');
            }
        }
    }
}

/// A value that fits after `key: ` or `- `: scalars, flow lists, empty collections, and
/// multi-line strings as literal blocks indented to `indent`.
fn write_inline(out: &mut String, node: &Node, indent: usize) {
    match node {
        Node::Str(s) | Node::Block(s)
            if block_safe(s) && (s.contains('\n') || matches!(node, Node::Block(_))) =>
        {
            out.push_str(if s.ends_with('\n') { "|" } else { "|-" });
            for line in s.lines() {
                out.push('\n');
                if !line.is_empty() {
                    pad(out, indent);
                    out.push_str(line);
                }
            }
        }
        Node::Str(s) | Node::Block(s) => out.push_str(&scalar(s)),
        Node::Flow(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&quoted(item));
            }
            out.push(']');
        }
        Node::Seq(_) => out.push_str("[]"),
        Node::Map(_) => out.push_str("{}"),
    }
}

/// Whether a string can be written as a literal block scalar and read back unchanged:
/// not empty, printable characters only, no line break other than `\n`, a first
/// line that does not start with a space (that would need an indentation indicator) and
/// at most one trailing line break.
fn block_safe(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with([' ', '\n'])
        && !s.ends_with("\n\n")
        && !s.contains(" \n")
        && s.chars().all(|c| c == '\n' || !c.is_control())
        && s.lines().all(|l| !l.trim().is_empty() || l.is_empty())
}

/// A key or scalar: plain when YAML reads it back as this same string, else quoted.
pub fn scalar(s: &str) -> String {
    if plain_safe(s) {
        s.to_owned()
    } else {
        quoted(s)
    }
}

/// A double-quoted scalar (JSON's string syntax, which YAML reads the same).
pub fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Plain scalars: a letter first (so never a number), then letters, digits, `.`, `_`,
/// `/`, `-`; and not one of YAML 1.1's booleans or null.
fn plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "y" | "yes" | "n" | "no" | "true" | "false" | "on" | "off" | "null"
        )
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(node: &Node) -> Value {
        let mut out = String::new();
        write_document(&mut out, node);
        serde_saphyr::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"))
    }

    #[test]
    fn scalars_that_yaml_would_retype_are_quoted() {
        for s in [
            "true", "False", "yes", "no", "on", "off", "null", "y", "N", "0.1.0", "8126", "1e3",
            "", " x", "x: y", "#x", "- x", "~", "a b", "ä",
        ] {
            let node = MapBuilder::new().entry(s, Node::str(s)).build();
            assert_eq!(round_trip(&node), serde_json::json!({ s: s }), "{s:?}");
        }
        assert_eq!(scalar("sidecar.istio.io/inject"), "sidecar.istio.io/inject");
        assert_eq!(scalar("false"), "\"false\"");
    }

    #[test]
    fn nested_maps_sequences_blocks_and_comments_read_back() {
        let node = MapBuilder::new()
            .commented("a comment\n\nover two paragraphs", "a", Node::str("3"))
            .entry(
                "list",
                Node::Seq(vec![
                    MapBuilder::new()
                        .commented("first", "name", Node::str("x"))
                        .entry("expression", Node::str("a &&\n  b\n\nc"))
                        .build(),
                    Node::str("plain"),
                    Node::Seq(vec![Node::str("1")]),
                ]),
            )
            .entry(
                "flow",
                Node::Flow(vec!["kube-system".into(), "x\"y".into()]),
            )
            .entry("empty", Node::Map(Vec::new()))
            .entry("none", Node::Seq(Vec::new()))
            .entry("trailing", Node::str("one\ntwo\n"))
            .entry("spaced", Node::str(" lead\nx"))
            .entry("cel", Node::Block("a[\"b\"] == 'c'".into()))
            .entry("cel2", Node::Block(" x".into()))
            .build();
        assert_eq!(round_trip(&node), node.to_json());
    }
}
