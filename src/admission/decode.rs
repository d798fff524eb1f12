//! Decoding an AdmissionReview body: parsed once into a simd-json tape (strings
//! borrowed from the body), the envelope checked, the object handed to the rules through
//! the `Json` view. Anything that is not a review we can answer is a [`ReviewError`].

use std::cell::RefCell;

use kube::core::GroupVersionKind;
use kube::core::admission::Operation;

use super::{API_VERSION, Reviewed};
use crate::engine::{Engine, Kind};
use crate::rules::Outcome;
use crate::rules::json::Json;
use crate::text::shown;

/// Why a body is not an AdmissionReview we can answer. The `Display` text is the
/// one-line reason sent back with HTTP 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// Not JSON, or a field of the wrong type.
    #[error("invalid AdmissionReview: {0}")]
    Decode(String),
    /// Another apiVersion than admission.k8s.io/v1.
    #[error("unsupported apiVersion {0:?}: only admission.k8s.io/v1 is served")]
    ApiVersion(String),
    /// Another kind than AdmissionReview.
    #[error("kind is {0:?}, expected AdmissionReview")]
    Kind(String),
    /// No `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// Empty or missing `request.uid`.
    #[error("request.uid is missing or empty")]
    NoUid,
    /// The rules need the object and it is not a JSON object.
    #[error("request.object is {0}, expected a JSON object")]
    NotAnObject(&'static str),
}

/// Decodes a review body and runs the rules.
pub fn review(engine: &Engine, body: &[u8]) -> Result<Reviewed, ReviewError> {
    // simd-json unescapes strings in place; the copy is a memcpy of the body.
    // simd-json stops at a NUL byte after a scalar and accepts what came before; NUL is
    // never valid in JSON text (not whitespace, and escaped inside strings).
    if let Some(at) = memchr::memchr(0, body) {
        return Err(ReviewError::Decode(format!(
            "not valid JSON: a NUL byte at byte {at}"
        )));
    }
    if let Some(at) = lone_surrogate(body) {
        return Err(ReviewError::Decode(format!(
            "not valid JSON: a \\u escape at byte {at} is half of a UTF-16 surrogate pair"
        )));
    }
    let mut buf = body.to_vec();
    let tape = parse(&mut buf).map_err(|e| ReviewError::Decode(json_error(body, &e)))?;
    let root = tape.as_value();
    if !root.is_object() {
        return Err(ReviewError::Decode(format!(
            "expected a JSON object, found {}",
            root.type_name()
        )));
    }
    match root.get("apiVersion").and_then(Json::as_str) {
        Some(API_VERSION) => {}
        other => {
            return Err(ReviewError::ApiVersion(
                shown(other.unwrap_or("")).into_owned(),
            ));
        }
    }
    match root.get("kind").and_then(Json::as_str) {
        Some("AdmissionReview") => {}
        other => return Err(ReviewError::Kind(shown(other.unwrap_or("")).into_owned())),
    }
    let request = match root.get("request") {
        Some(r) if r.is_object() => r,
        Some(r) if !r.is_null() => {
            return Err(ReviewError::Decode(format!(
                "request is {}, expected an object",
                r.type_name()
            )));
        }
        _ => return Err(ReviewError::NoRequest),
    };
    let field = |name: &str| request.get(name).and_then(Json::as_str);
    let uid = field("uid")
        .filter(|u| !u.is_empty())
        .ok_or(ReviewError::NoUid)?;
    let gvk = request
        .get("kind")
        .and_then(|k| {
            Some((
                k.get("group")?.as_str()?,
                k.get("version")?.as_str()?,
                k.get("kind")?.as_str()?,
            ))
        })
        .ok_or_else(|| {
            ReviewError::Decode(
                "request.kind must be an object with group, version and kind".into(),
            )
        })?;
    let operation = match field("operation") {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        Some("DELETE") => Operation::Delete,
        Some("CONNECT") => Operation::Connect,
        other => {
            let got = match other {
                Some(op) => format!("{:?}", shown(op)),
                None => "missing or not a string".to_owned(),
            };
            return Err(ReviewError::Decode(format!(
                "request.operation is {got}, expected CREATE, UPDATE, DELETE or CONNECT"
            )));
        }
    };
    let kind = Kind::from_group_kind(gvk.0, gvk.2);
    let handled = kind.admitted_by(&operation).is_some();
    let subresource = field("subResource").is_some_and(|s| !s.is_empty());
    let object = request.get("object");
    let outcome = if handled && !subresource {
        match object {
            Some(obj) if obj.is_object() => engine.admit(kind, &operation, obj),
            Some(other) => return Err(ReviewError::NotAnObject(other.type_name())),
            None => return Err(ReviewError::NotAnObject("missing")),
        }
    } else {
        Outcome::default()
    };
    let name = field("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            object
                .and_then(|o| o.get("metadata"))
                .and_then(|m| m.get("generateName"))
                .and_then(Json::as_str)
                .map(|g| format!("{g}*"))
        })
        .unwrap_or_default();
    let dry_run = request
        .get("dryRun")
        .and_then(|d| simd_json::prelude::ValueAsScalar::as_bool(&d))
        .unwrap_or(false);
    Ok(Reviewed {
        uid: uid.to_owned(),
        kind: GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2),
        operation,
        namespace: field("namespace").unwrap_or("").to_owned(),
        name,
        dry_run,
        outcome,
    })
}

/// Bodies up to this size reuse the thread's parser buffers; larger ones (rare, up to
/// [`MAX_BODY_BYTES`]) get their own, so a single huge request does not leave every
/// worker thread holding megabytes.
const REUSE_BUFFERS_UP_TO: usize = 256 * 1024;

thread_local! {
    static BUFFERS: RefCell<simd_json::Buffers> = RefCell::new(simd_json::Buffers::new(16 * 1024));
}

fn parse(buf: &mut [u8]) -> simd_json::Result<simd_json::tape::Tape<'_>> {
    if buf.len() > REUSE_BUFFERS_UP_TO {
        return simd_json::to_tape(buf);
    }
    BUFFERS.with_borrow_mut(|buffers| simd_json::to_tape_with_buffers(buf, buffers))
}

/// The byte offset of a `\u` escape that is half of a UTF-16 surrogate pair without its
/// other half (`"\ud800"`). Go's decoder (the apiserver's) never reads one as the
/// request's bytes and simd-json decodes some of them inconsistently, so such a body is
/// refused. A fast scan: bodies without `\u` escapes cost one `memmem` pass.
fn lone_surrogate(body: &[u8]) -> Option<usize> {
    let hex = |at: usize| -> Option<u16> {
        let digits = body.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut skip_until = 0;
    for at in memchr::memmem::find_iter(body, b"\\u") {
        if at < skip_until {
            continue;
        }
        // `\\u` is an escaped backslash and a letter: count the backslashes before.
        let backslashes = body[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 1 {
            continue;
        }
        match hex(at + 2) {
            Some(0xD800..=0xDBFF) => {
                let low = body.get(at + 6..at + 8) == Some(b"\\u".as_slice())
                    && matches!(hex(at + 8), Some(0xDC00..=0xDFFF));
                if !low {
                    return Some(at);
                }
                skip_until = at + 12;
            }
            Some(0xDC00..=0xDFFF) => return Some(at),
            _ => {}
        }
    }
    None
}

/// Why a body is not JSON, in serde_json's words (`expected value at line 1 column 1`),
/// which name the line and column; simd-json's own are terse. Only on the error path.
fn json_error(body: &[u8], simd: &simd_json::Error) -> String {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => format!("not valid JSON: {e}"),
        Ok(_) => format!("not valid JSON: {simd}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{pod_request, review_of};
    use serde_json::json;

    #[test]
    fn lone_surrogate_escapes_are_found_and_pairs_and_escaped_backslashes_are_not() {
        let cases: [(&[u8], Option<usize>); 9] = [
            (br#"{"a":"\ud800"}"#, Some(6)),
            (br#"{"a":"\udc00x"}"#, Some(6)),
            (br#"{"a":"x\uD800\u0041"}"#, Some(7)),
            (br#"{"a":"\ud83d\ude00"}"#, None),
            (br#"{"a":"\\ud800"}"#, None),
            (br#"{"a":"\\\ud800"}"#, Some(8)),
            (br#"{"a":"\u003c\u00e9"}"#, None),
            (br#"{"a":"\ud8"}"#, None),
            (br#"{"a":"\ud83d\ude00\udc00"}"#, Some(18)),
        ];
        for (body, want) in cases {
            assert_eq!(
                lone_surrogate(body),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_nul_byte_anywhere_is_refused_by_name() {
        let body = review_of(pod_request(json!({"metadata": {}, "spec": {}})));
        for at in [0, 1, body.len() / 2, body.len() - 1, body.len()] {
            let mut b = body.clone();
            b.insert(at, 0);
            let err = review(&Engine::default(), &b).unwrap_err().to_string();
            assert!(err.contains(&format!("NUL byte at byte {at}")), "{err}");
        }
    }

    #[test]
    fn lone_surrogate_in_a_review_is_refused_by_name() {
        let mut body = review_of(pod_request(json!({"metadata": {}, "spec": {}})));
        let text = String::from_utf8(body.clone()).unwrap();
        body = text
            .replacen("\"uid\":\"", "\"uid\":\"\\ud800", 1)
            .into_bytes();
        let err = review(&Engine::default(), &body).unwrap_err();
        assert!(err.to_string().contains("surrogate"), "{err}");
    }

    #[test]
    fn refusals_echo_at_most_64_characters_of_what_the_client_sent() {
        let long = "v".repeat(10_000);
        let body = serde_json::to_vec(&json!({
            "apiVersion": long, "kind": "AdmissionReview", "request": {}
        }))
        .unwrap();
        let err = review(&Engine::default(), &body).unwrap_err().to_string();
        assert!(err.len() < 150, "{} bytes: {err}", err.len());
        assert!(err.contains(&format!("{}…", "v".repeat(64))), "{err}");
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "operation": long}
        }))
        .unwrap();
        let err = review(&Engine::default(), &body).unwrap_err().to_string();
        assert!(err.len() < 200, "{} bytes: {err}", err.len());
    }
}
