//! `tracepatch mutate`: the rules offline, on manifests or a saved AdmissionReview.
//!
//! Input is YAML or JSON, one or many documents. Pods, Services and CronJobs get the
//! admission rules; Deployments, DaemonSets, StatefulSets, ReplicaSets, Jobs and
//! CronJobs also get the pod rules on their pod template (what their pods will get); a
//! `List` gets them per item; an AdmissionReview gets the response the server would
//! send. Other kinds pass through unchanged.
//!
//! Every document is read and mutated before anything is printed, so bad input gives
//! one error line and an empty standard output, never half a result.

use std::fmt::Write as _;

use jsonptr::PointerBuf;
use serde_json::Value;

use crate::admission;
use crate::engine::{Engine, Kind};
use crate::rules::Outcome;
use crate::text::strip_location;

/// How to print the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Mutated documents as YAML, separated by `---`.
    Yaml,
    /// Mutated documents as JSON, one after another.
    Json,
    /// The RFC 6902 patch of each document, one JSON array per line.
    Patch,
}

/// Why the input could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    /// The bytes are not UTF-8.
    #[error("input is not UTF-8 text (byte {0})")]
    NotUtf8(usize),
    /// A document does not parse.
    #[error("document {index} (line {line}): {reason}")]
    Parse {
        index: usize,
        line: u64,
        reason: String,
    },
    /// A document parses but is not a mapping.
    #[error(
        "document {index} (line {line}): not a Kubernetes object (expected a mapping, found {found})"
    )]
    NotAnObject {
        index: usize,
        line: u64,
        found: &'static str,
    },
    /// An AdmissionReview document that the server would refuse.
    #[error("document {index} (line {line}): {reason}")]
    Review {
        index: usize,
        line: u64,
        reason: admission::ReviewError,
    },
}

/// The result of a run: what goes to standard output, and one warning line each to
/// standard error.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mutated {
    pub stdout: String,
    pub warnings: Vec<String>,
}

/// One input document and where it started.
struct Doc {
    value: Value,
    line: u64,
}

/// Reads, mutates and renders all documents of `input`.
pub fn run(engine: &Engine, input: &[u8], output: Output) -> Result<Mutated, InputError> {
    let text = std::str::from_utf8(input).map_err(|e| InputError::NotUtf8(e.valid_up_to()))?;
    let docs = read_documents(text)?;
    let mut result = Mutated::default();
    let mut rendered: Vec<Value> = Vec::with_capacity(docs.len());
    let mut patches: Vec<Value> = Vec::with_capacity(docs.len());
    for (i, doc) in docs.into_iter().enumerate() {
        let index = i + 1;
        let line = doc.line;
        let mut value = doc.value;
        if !value.is_object() {
            return Err(InputError::NotAnObject {
                index,
                line,
                found: type_name(&value),
            });
        }
        let type_str = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (api_version, kind_name) = (type_str("apiVersion"), type_str("kind"));
        if kind_name == "AdmissionReview" {
            let body = serde_json::to_vec(&value).unwrap_or_default();
            let reviewed =
                admission::review(engine, &body).map_err(|reason| InputError::Review {
                    index,
                    line,
                    reason,
                })?;
            let who = describe(&reviewed.kind.kind, &reviewed.namespace, &reviewed.name);
            result.warnings.extend(
                reviewed
                    .outcome
                    .warning_lines()
                    .map(|w| format!("{who}: {w}")),
            );
            patches.push(serde_json::to_value(&reviewed.outcome.patch).unwrap_or(Value::Null));
            rendered.push(reviewed.response_value());
            continue;
        }
        let outcome = if is_list(&kind_name, &value) {
            list_outcome(engine, &value)
        } else {
            engine.preview(Kind::from_type_meta(&api_version, &kind_name), &value)
        };
        let who = describe_object(&value);
        result
            .warnings
            .extend(outcome.warning_lines().map(|w| format!("{who}: {w}")));
        if !outcome.patch.is_empty() {
            // Our patches always apply (property-tested); if one ever did not, the
            // document is printed unchanged rather than half-mutated.
            let mut copy = value.clone();
            if json_patch::patch(&mut copy, &outcome.patch).is_ok() {
                value = copy;
            }
        }
        patches.push(serde_json::to_value(&outcome.patch).unwrap_or(Value::Null));
        rendered.push(value);
    }
    result.stdout = match output {
        Output::Yaml => render_yaml(&rendered),
        Output::Json => rendered
            .iter()
            .map(|v| serde_json::to_string_pretty(v).unwrap_or_default() + "\n")
            .collect(),
        Output::Patch => patches
            .iter()
            .map(|p| serde_json::to_string(p).unwrap_or_default() + "\n")
            .collect(),
    };
    Ok(result)
}

/// The documents of `input`, parsed, in order (empty documents dropped).
pub fn parse_documents(input: &[u8]) -> Result<Vec<Value>, InputError> {
    let text = std::str::from_utf8(input).map_err(|e| InputError::NotUtf8(e.valid_up_to()))?;
    Ok(read_documents(text)?.into_iter().map(|d| d.value).collect())
}

/// Each item of a `List` as if it were its own document.
fn list_outcome(engine: &Engine, list: &Value) -> Outcome {
    let mut out = Outcome::default();
    let Some(items) = list.get("items").and_then(Value::as_array) else {
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let t = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
        let kind = Kind::from_type_meta(t("apiVersion"), t("kind"));
        let mut item_out = engine.preview(kind, item);
        let base = PointerBuf::from_tokens(["items".to_owned(), i.to_string()]);
        for op in &mut item_out.patch {
            rebase(op, &base);
        }
        out.extend(item_out);
    }
    out
}

fn rebase(op: &mut json_patch::PatchOperation, base: &PointerBuf) {
    use json_patch::PatchOperation as P;
    let path = match op {
        P::Add(o) => &mut o.path,
        P::Remove(o) => &mut o.path,
        P::Replace(o) => &mut o.path,
        P::Move(o) => &mut o.path,
        P::Copy(o) => &mut o.path,
        P::Test(o) => &mut o.path,
    };
    *path = base.concat(path);
}

fn is_list(kind: &str, value: &Value) -> bool {
    kind.ends_with("List") && value.get("items").is_some_and(Value::is_array)
}

/// Splits YAML or JSON input into documents. JSON input (starting with `{`) is read as
/// a stream of JSON values; anything else as YAML documents separated by `---`.
fn read_documents(text: &str) -> Result<Vec<Doc>, InputError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        return read_json(text);
    }
    let mut docs = Vec::new();
    for (start_line, chunk) in yaml_chunks(text) {
        if chunk
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let index = docs.len() + 1;
        let value: Value = serde_saphyr::from_str(chunk).map_err(|e| InputError::Parse {
            index,
            line: start_line + e.location().map_or(1, |l| l.line()) - 1,
            reason: strip_location(&e.without_snippet().to_string()).to_owned(),
        })?;
        if value.is_null() {
            continue;
        }
        docs.push(Doc {
            value,
            line: start_line,
        });
    }
    Ok(docs)
}

fn read_json(text: &str) -> Result<Vec<Doc>, InputError> {
    let mut docs = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let offset = stream.byte_offset();
        match stream.next() {
            None => return Ok(docs),
            Some(Ok(value)) => {
                let skipped = text[offset..].len() - text[offset..].trim_start().len();
                docs.push(Doc {
                    value,
                    line: line_of(text, offset + skipped),
                });
            }
            Some(Err(e)) => {
                return Err(InputError::Parse {
                    index: docs.len() + 1,
                    line: e.line() as u64,
                    reason: strip_location(&e.to_string()).to_owned(),
                });
            }
        }
    }
}

/// YAML documents: split at lines that are `---` (optionally followed by a space and
/// more) or `...`, with the 1-based line where each document's text starts.
fn yaml_chunks(text: &str) -> Vec<(u64, &str)> {
    let mut chunks = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1u64;
    let mut offset = 0usize;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let separator = bare == "---" || bare.starts_with("--- ") || bare == "...";
        if separator {
            chunks.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = n as u64 + 2;
        }
        offset += line.len();
    }
    chunks.push((start_line, &text[start..]));
    chunks
}

fn line_of(text: &str, offset: usize) -> u64 {
    text[..offset.min(text.len())].matches('\n').count() as u64 + 1
}

fn render_yaml(docs: &[Value]) -> String {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        match serde_saphyr::to_string(doc) {
            Ok(text) => out.push_str(&text),
            // A serde_json::Value always serializes; keep the output whole regardless.
            Err(e) => {
                let _ = writeln!(out, "# cannot render document {}: {e}", i + 1);
            }
        }
    }
    out
}

/// `Kind/namespace/name` of a manifest, for warnings.
fn describe_object(v: &Value) -> String {
    let t = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let m = |k: &str| {
        v.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let name = if m("name").is_empty() && !m("generateName").is_empty() {
        format!("{}*", m("generateName"))
    } else {
        m("name").to_owned()
    };
    describe(t("kind"), m("namespace"), &name)
}

fn describe(kind: &str, namespace: &str, name: &str) -> String {
    let kind = if kind.is_empty() { "object" } else { kind };
    let name = if name.is_empty() { "(unnamed)" } else { name };
    let who = if namespace.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{namespace}/{name}")
    };
    // Each warning is one line on stderr: a name with a line break (invalid, but a
    // manifest on disk can hold one) is shown escaped.
    if who.contains(char::is_control) {
        who.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().collect()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        who
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_yaml(input: &str) -> Result<Mutated, InputError> {
        run(&Engine::default(), input.as_bytes(), Output::Yaml)
    }

    #[test]
    fn yaml_documents_are_split_and_counted() {
        let chunks = yaml_chunks("a: 1\n---\nb: 2\n--- # c\nc: 3\n...\n");
        let starts: Vec<u64> = chunks.iter().map(|c| c.0).collect();
        assert_eq!(starts, [1, 3, 5, 7]);
    }

    #[test]
    fn parse_error_names_document_and_absolute_line() {
        let err = run_yaml("kind: Pod\n---\nkind: Service\nspec: [\n").unwrap_err();
        assert!(
            matches!(
                err,
                InputError::Parse {
                    index: 2,
                    line: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.starts_with("document 2 (line 4): "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn json_stream_errors_name_the_document() {
        let err = run(
            &Engine::default(),
            b"{\"kind\":\"Pod\"}\n{\"kind\": }",
            Output::Json,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                InputError::Parse {
                    index: 2,
                    line: 2,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn scalar_document_is_refused() {
        let err = run_yaml("just a string\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1 (line 1): not a Kubernetes object (expected a mapping, found a string)"
        );
    }

    #[test]
    fn other_kinds_pass_through_and_comments_only_documents_vanish() {
        let out = run_yaml("# header\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: \"true\"\n").unwrap();
        assert_eq!(
            out.stdout,
            "apiVersion: v1\ndata:\n  a: \"true\"\nkind: ConfigMap\nmetadata:\n  name: x\n"
        );
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn a_name_with_a_line_break_still_gives_one_line_warnings() {
        // Found by fuzz/mutate_structured (fuzz/regressions/mutate/cronjob-name-newline).
        let out = run_yaml(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: \"a\\nb\"\nspec:\n  jobTemplate:\n    spec:\n      template: {}\n",
        )
        .unwrap();
        assert!(!out.warnings.is_empty());
        for w in &out.warnings {
            assert!(!w.contains('\n'), "{w:?}");
            assert!(w.starts_with("CronJob/a\\nb: "), "{w:?}");
        }
    }

    #[test]
    fn numbers_pass_through_exactly() {
        // Found by fuzz/mutate_structured (fuzz/regressions/mutate/float-json-round-trip):
        // without serde_json's `float_roundtrip`, a long float read and printed again
        // changed in its last digit on every pass.
        let input =
            r#"{"kind": "ConfigMap", "x": 1.8196359856169283e+217, "y": 4.899215403885894e+252}"#;
        let once = run(&Engine::default(), input.as_bytes(), Output::Json).unwrap();
        let twice = run(&Engine::default(), once.stdout.as_bytes(), Output::Json).unwrap();
        assert_eq!(once.stdout, twice.stdout);
        let read = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(read(&once.stdout), read(input));
    }

    #[test]
    fn not_utf8_is_refused() {
        let err = run(&Engine::default(), b"kind: \xff\n", Output::Yaml).unwrap_err();
        assert_eq!(err, InputError::NotUtf8(6));
    }
}
