//! AdmissionReview in, AdmissionReview out: the one place that turns rule outcomes into
//! a response.
//!
//! The body is parsed once into a simd-json tape (strings borrowed from the body) and
//! the rules read the object through the [`Json`] view: no typed round trip (which
//! would drop fields from a newer Kubernetes) and no `serde_json::Value` tree, which on
//! a meshed pod costs several times everything else a request costs (BENCHMARKS.md).
//! kube's `AdmissionRequest<T>` needs a typed `T: Resource`, and its
//! `AdmissionResponse` writes the patch as an array of numbers, so the envelopes are
//! read and written here; the wire format is `admission.k8s.io/v1`, the patch
//! base64-encoded as the API documents; kube's `Operation` and `GroupVersionKind` are
//! reused.
//!
//! A mutating tracing webhook never blocks a workload: every answer to a valid review
//! is `allowed: true`. A body that is not a valid review gets a [`ReviewError`], which
//! the server turns into HTTP 400 with a one-line reason; the apiserver then applies
//! the configuration's `failurePolicy` (`Ignore`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use base64::Engine as _;
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde::Serialize;
use serde_json::Value;

use crate::engine::{Engine, Kind};
use crate::rules::json::Json;
use crate::rules::{Outcome, RuleId};
use crate::text::shown;

/// The only AdmissionReview version served (the apiserver sends what the webhook
/// configuration's `admissionReviewVersions` lists: `["v1"]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Largest request body accepted: 7 MiB. The apiserver accepts request bodies up to
/// 3 MiB (`--max-request-body-bytes`), and a review carries the object and, on UPDATE,
/// the old object, plus under 1 MiB of envelope — controller-runtime's webhook server
/// uses the same figure for the same reason.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// At most this many warnings per response; the apiserver may truncate large numbers.
const MAX_WARNINGS: usize = 20;
/// Warnings longer than this may be truncated by the apiserver.
const MAX_WARNING_CHARS: usize = 256;

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

/// What was decided about one request, for the response, the log line and metrics.
#[derive(Debug)]
pub struct Reviewed {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub operation: Operation,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    pub outcome: Outcome,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<&'static str, String>,
}

// === impl Reviewed ===

impl Reviewed {
    /// The response AdmissionReview, serialized.
    pub fn response_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.response()).unwrap_or_else(|_| self.fallback())
    }

    /// The response as a JSON value (for `tracepatch mutate` on a saved review).
    pub fn response_value(&self) -> Value {
        serde_json::to_value(self.response()).unwrap_or(Value::Null)
    }

    fn response(&self) -> ReviewOut<'_> {
        let out = &self.outcome;
        let patch = (!out.patch.is_empty())
            .then(|| serde_json::to_vec(&out.patch).ok())
            .flatten()
            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
        let mut audit_annotations = BTreeMap::new();
        if patch.is_some() {
            audit_annotations.insert("applied-rules", out.applied.to_string());
        }
        ReviewOut {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: ResponseOut {
                uid: &self.uid,
                allowed: true,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: warnings(out),
                audit_annotations,
            },
        }
    }

    /// Serializing plain strings and patch operations cannot fail; should it ever,
    /// still admit the object rather than block it.
    fn fallback(&self) -> Vec<u8> {
        let uid = serde_json::to_string(&self.uid).unwrap_or_else(|_| "\"\"".into());
        format!(
            r#"{{"apiVersion":"{API_VERSION}","kind":"AdmissionReview","response":{{"uid":{uid},"allowed":true}}}}"#
        )
        .into_bytes()
    }

    /// Rules that changed the object, for logs.
    pub fn applied(&self) -> Vec<&'static str> {
        self.outcome.applied.iter().map(RuleId::as_str).collect()
    }
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
            return Err(ReviewError::Decode(format!(
                "request.operation is {:?}, expected CREATE, UPDATE, DELETE or CONNECT",
                other.map(shown)
            )));
        }
    };
    let kind = Kind::from_group_kind(gvk.0, gvk.2);
    let handled = matches!(
        (kind, &operation),
        (Kind::Pod, Operation::Create)
            | (
                Kind::Service | Kind::CronJob,
                Operation::Create | Operation::Update
            )
    );
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

/// The warnings as sent: prefixed with the rule, one line, bounded in length and number.
fn warnings(out: &Outcome) -> Vec<String> {
    let total = out.warnings.len();
    let mut lines: Vec<String> = out
        .warning_lines()
        .take(if total > MAX_WARNINGS {
            MAX_WARNINGS - 1
        } else {
            MAX_WARNINGS
        })
        .map(|w| one_line(&w))
        .collect();
    if total > MAX_WARNINGS {
        lines.push(format!(
            "tracepatch: {} more warnings not shown",
            total - (MAX_WARNINGS - 1)
        ));
    }
    lines
}

/// Control characters become spaces; long text is cut at a character boundary.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_WARNING_CHARS)
        .collect();
    if s.chars().count() > MAX_WARNING_CHARS {
        out.pop();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review_of(request: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}),
        )
        .unwrap()
    }

    fn pod_request(object: Value) -> Value {
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        })
    }

    #[test]
    fn response_carries_uid_base64_patch_and_audit_annotation() {
        let body = review_of(pod_request(json!({
            "metadata": {"name": "agent", "labels": {"app": "datadog-agent"}},
            "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7"}]}
        })));
        let r = review(&Engine::default(), &body).unwrap();
        let resp: Value = serde_json::from_slice(&r.response_json()).unwrap();
        assert_eq!(resp["apiVersion"], API_VERSION);
        assert_eq!(resp["kind"], "AdmissionReview");
        assert_eq!(
            resp["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(resp["response"]["allowed"], true);
        assert_eq!(resp["response"]["patchType"], "JSONPatch");
        assert_eq!(
            resp["response"]["auditAnnotations"]["applied-rules"],
            "agent-sidecar"
        );
        let patch = base64::engine::general_purpose::STANDARD
            .decode(resp["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut pod = json!({"metadata": {"name": "agent", "labels": {"app": "datadog-agent"}}});
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(
            pod["metadata"]["labels"]["sidecar.istio.io/inject"],
            "false"
        );
    }

    #[test]
    fn nothing_to_change_means_no_patch_fields() {
        let body = review_of(pod_request(
            json!({"metadata": {"name": "web"}, "spec": {"containers": []}}),
        ));
        let r = review(&Engine::default(), &body).unwrap();
        let resp: Value = serde_json::from_slice(&r.response_json()).unwrap();
        assert_eq!(
            resp["response"],
            json!({"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true})
        );
    }

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

    #[test]
    fn warnings_are_bounded_and_single_line() {
        let mut out = Outcome::default();
        for i in 0..30 {
            out.ctx(RuleId::TracerEnv, jsonptr::Pointer::root())
                .warn(format!("line\nbreak {i} {}", "x".repeat(400)));
        }
        let w = warnings(&out);
        assert_eq!(w.len(), MAX_WARNINGS);
        assert!(
            w[..MAX_WARNINGS - 1]
                .iter()
                .all(|l| !l.contains('\n') && l.chars().count() <= MAX_WARNING_CHARS)
        );
        assert_eq!(
            w[MAX_WARNINGS - 1],
            "tracepatch: 11 more warnings not shown"
        );
    }
}
