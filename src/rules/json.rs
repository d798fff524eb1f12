//! A read-only view of raw JSON: what the rules need from an object, and nothing more.
//!
//! The rules read raw JSON, never typed structs (a typed round trip would drop fields
//! from a newer Kubernetes). Two representations implement this view:
//! - `&serde_json::Value`, for `tracepatch mutate`, tests and anything that already
//!   holds a `Value`;
//! - [`Tape`], the admission path: simd-json's tape of the request body, with strings
//!   borrowed from the body. Building a `serde_json::Value` of a 9 KB meshed pod costs
//!   several times what the rules and the rest of the request cost together (see
//!   BENCHMARKS.md); the tape costs about one pass over the bytes.
//!
//! Both give the rules the same answers (a property test compares whole outcomes).
//! Handles are `Copy` and borrow the document for `'a`.

use serde_json::Value;

/// A handle to one JSON value in a document that lives for `'a`.
pub trait Json<'a>: Copy + 'a {
    /// The member `key` of an object (`None` if absent or not an object).
    fn get(self, key: &str) -> Option<Self>;
    /// The string, if this is a string.
    fn as_str(self) -> Option<&'a str>;
    /// The number, if this is a non-negative integer.
    fn as_u64(self) -> Option<u64>;
    fn is_null(self) -> bool;
    fn is_object(self) -> bool;
    fn is_array(self) -> bool;
    /// The elements, if this is an array (else nothing).
    fn items(self) -> impl Iterator<Item = Self> + 'a;
    /// The members, if this is an object (else nothing).
    fn entries(self) -> impl Iterator<Item = (&'a str, Self)> + 'a;

    /// The JSON type, for messages.
    fn type_name(self) -> &'static str {
        if self.is_null() {
            "null"
        } else if self.is_object() {
            "a map"
        } else if self.is_array() {
            "a list"
        } else if self.as_str().is_some() {
            "a string"
        } else {
            "a scalar"
        }
    }
}

/// A handle into a parsed simd-json tape.
pub type Tape<'a> = simd_json::tape::Value<'a, 'a>;

// === impl Json for &Value ===

impl<'a> Json<'a> for &'a Value {
    fn get(self, key: &str) -> Option<Self> {
        Value::get(self, key)
    }

    fn as_str(self) -> Option<&'a str> {
        Value::as_str(self)
    }

    fn as_u64(self) -> Option<u64> {
        Value::as_u64(self)
    }

    fn is_null(self) -> bool {
        Value::is_null(self)
    }

    fn is_object(self) -> bool {
        Value::is_object(self)
    }

    fn is_array(self) -> bool {
        Value::is_array(self)
    }

    fn items(self) -> impl Iterator<Item = Self> + 'a {
        self.as_array().into_iter().flatten()
    }

    fn entries(self) -> impl Iterator<Item = (&'a str, Self)> + 'a {
        self.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
    }
}

// === impl Json for Tape ===

impl<'a> Json<'a> for Tape<'a> {
    fn get(self, key: &str) -> Option<Self> {
        // The last of duplicate keys, as serde_json and Go's decoder (the apiserver's)
        // read them: the apiserver never sends duplicates, but a patch must apply to
        // the object as the apiserver reads it. (A scan of every key: members are
        // skipped by their tape length, so this costs no more than a miss.)
        self.as_object()?
            .iter()
            .filter(|(k, _)| *k == key)
            .last()
            .map(|(_, v)| v)
    }

    fn as_str(self) -> Option<&'a str> {
        simd_json::prelude::ValueIntoString::into_string(self)
    }

    fn as_u64(self) -> Option<u64> {
        simd_json::prelude::ValueAsScalar::as_u64(&self)
    }

    fn is_null(self) -> bool {
        simd_json::prelude::ValueAsScalar::as_null(&self).is_some()
    }

    fn is_object(self) -> bool {
        self.as_object().is_some()
    }

    fn is_array(self) -> bool {
        self.as_array().is_some()
    }

    fn items(self) -> impl Iterator<Item = Self> + 'a {
        self.as_array().into_iter().flat_map(|a| a.iter())
    }

    fn entries(self) -> impl Iterator<Item = (&'a str, Self)> + 'a {
        self.as_object().into_iter().flat_map(|o| o.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk<'a, J: Json<'a>>(v: J) -> Vec<String> {
        let mut out = Vec::new();
        for (k, member) in v.entries() {
            out.push(format!("{k}:{}", member.type_name()));
        }
        if let Some(list) = v.get("list") {
            out.extend(
                list.items()
                    .map(|i| format!("{:?}/{:?}", i.as_str(), i.as_u64())),
            );
        }
        out.push(format!("{:?}", v.get("s").and_then(|s| s.as_str())));
        out.push(format!("{:?}", v.get("missing").map(|m| m.is_null())));
        out.push(format!(
            "{:?}",
            v.get("s").and_then(|s| s.get("x")).is_some()
        ));
        out
    }

    #[test]
    fn serde_value_and_tape_agree() {
        let text = r#"{"s": "a\"b", "n": null, "list": ["x", 8126, -1, 1.5], "o": {"k": true}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let mut buf = text.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut buf).unwrap();
        let mut from_value = walk(&value);
        let mut from_tape = walk(tape.as_value());
        // serde_json orders object members by key; the tape keeps document order.
        from_value[..4].sort();
        from_tape[..4].sort();
        assert_eq!(from_value, from_tape);
        assert_eq!(
            from_tape[4..7],
            ["Some(\"x\")/None", "None/Some(8126)", "None/None"]
        );
    }

    #[test]
    fn duplicate_keys_read_as_the_last_like_serde_json_and_go() {
        let text = br#"{"a": {"x": 1}, "b": 2, "a": [3]}"#;
        let value: Value = serde_json::from_slice(text).unwrap();
        let mut buf = text.to_vec();
        let tape = simd_json::to_tape(&mut buf).unwrap();
        let root = tape.as_value();
        assert!(Json::get(&value, "a").is_some_and(|a| a.is_array()));
        assert!(Json::get(root, "a").is_some_and(|a| a.is_array()));
        assert_eq!(Json::get(root, "b").and_then(Json::as_u64), Some(2));
        assert!(Json::get(root, "c").is_none());
    }
}
