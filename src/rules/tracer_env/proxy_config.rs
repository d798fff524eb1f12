//! Istio's `proxy.istio.io/config` pod annotation: a ProxyConfig as YAML or JSON.
//!
//! Rule 1 merges variables into its `proxyMetadata` map. The annotation may already
//! hold other settings (`holdApplicationUntilProxyStarts`, `tracing`, its own
//! `proxyMetadata`), so it is read into an order-preserving tree, changed only where
//! needed, and written back in the format it came in (YAML stays YAML). A new
//! annotation is written as compact JSON, which Istio reads like YAML and which is
//! cheapest to read again when the apiserver reinvokes the webhook.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::keyed::KeyIndex;

/// A YAML/JSON value that keeps the order of map keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// Merges the `(name, value)` pairs into `proxyMetadata` of the annotation text
/// (absent: a new annotation). `Ok(None)` when every variable is already there with its
/// value; `Err(reason)` when the text is not a ProxyConfig we can safely rewrite.
pub fn merge_proxy_metadata<'v>(
    existing: Option<&str>,
    vars: impl IntoIterator<Item = (&'v str, &'v str)>,
) -> Result<Option<String>, String> {
    let text = existing.unwrap_or("").trim();
    let json = text.is_empty() || text.starts_with('{');
    let mut root = if text.is_empty() {
        Node::Map(Vec::new())
    } else if json {
        serde_json::from_str::<Node>(text).map_err(|e| e.to_string())?
    } else {
        serde_saphyr::from_str::<Node>(text).map_err(|e| e.without_snippet().to_string())?
    };
    if root == Node::Null {
        root = Node::Map(Vec::new());
    }
    let Node::Map(entries) = &mut root else {
        return Err("not a map of settings".into());
    };
    let pos = match entries.iter().position(|(k, _)| k == "proxyMetadata") {
        Some(pos) => pos,
        None => {
            entries.push(("proxyMetadata".into(), Node::Map(Vec::new())));
            entries.len() - 1
        }
    };
    let metadata = &mut entries[pos].1;
    if *metadata == Node::Null {
        *metadata = Node::Map(Vec::new());
    }
    let Node::Map(metadata) = metadata else {
        return Err("proxyMetadata is not a map".into());
    };
    let mut changed = false;
    let mut index = KeyIndex::default();
    for (name, value) in vars {
        match index.find(metadata, name, |(k, _)| k.as_str()) {
            Some(i) => {
                let v = &mut metadata[i].1;
                if !matches!(v, Node::Str(s) if s == value) {
                    *v = Node::Str(value.to_owned());
                    changed = true;
                }
            }
            None => {
                index.pushed(name, metadata.len());
                metadata.push((name.to_owned(), Node::Str(value.to_owned())));
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    let out = if json {
        serde_json::to_string(&root).map_err(|e| e.to_string())?
    } else {
        serde_saphyr::to_string(&root).map_err(|e| e.to_string())?
    };
    Ok(Some(out))
}

// === impl Node ===

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::I64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::U64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::F64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        let mut index = KeyIndex::default();
        while let Some(key) = map.next_key::<String>()? {
            if index.find(&entries, &key, |(k, _)| k.as_str()).is_some() {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value()?;
            index.pushed(&key, entries.len());
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::I64(n) => s.serialize_i64(*n),
            Node::U64(n) => s.serialize_u64(*n),
            Node::F64(n) => s.serialize_f64(*n),
            Node::Str(v) => s.serialize_str(v),
            Node::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a str)> {
        pairs.iter().copied()
    }

    #[test]
    fn new_annotation_lists_variables_in_order() {
        let out = merge_proxy_metadata(
            None,
            vars(&[("DD_ENV", "prod"), ("B", "true"), ("A", "0.5")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            out,
            r#"{"proxyMetadata":{"DD_ENV":"prod","B":"true","A":"0.5"}}"#
        );
        let reread = merge_proxy_metadata(
            Some(&out),
            vars(&[("DD_ENV", "prod"), ("B", "true"), ("A", "0.5")]),
        );
        assert_eq!(reread, Ok(None));
    }

    #[test]
    fn yaml_with_other_settings_keeps_them_in_place() {
        let existing = "holdApplicationUntilProxyStarts: true\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n  DD_ENV: staging\ntracing:\n  sampling: 10.5\n";
        let out = merge_proxy_metadata(
            Some(existing),
            vars(&[("DD_ENV", "prod"), ("DD_SERVICE", "web")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            out,
            "holdApplicationUntilProxyStarts: true\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n  DD_ENV: prod\n  DD_SERVICE: web\ntracing:\n  sampling: 10.5\n"
        );
    }

    #[test]
    fn json_stays_json() {
        let out = merge_proxy_metadata(Some(r#"{"concurrency": 2}"#), vars(&[("DD_ENV", "prod")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            r#"{"concurrency":2,"proxyMetadata":{"DD_ENV":"prod"}}"#
        );
    }

    #[test]
    fn malformed_is_refused_with_a_reason() {
        assert!(
            merge_proxy_metadata(Some("proxyMetadata: [unclosed"), vars(&[("A", "b")])).is_err()
        );
        assert!(merge_proxy_metadata(Some("- a list"), vars(&[("A", "b")])).is_err());
        assert!(merge_proxy_metadata(Some("proxyMetadata: 3"), vars(&[("A", "b")])).is_err());
        assert!(merge_proxy_metadata(Some("{\"a\": 1"), vars(&[("A", "b")])).is_err());
        assert!(merge_proxy_metadata(Some("a: 1\na: 2\n"), vars(&[("A", "b")])).is_err());
    }
}
