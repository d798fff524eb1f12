//! The response AdmissionReview: `allowed: true` always, the patch base64-encoded as
//! the API documents, warnings bounded in number and length, the rules that changed the
//! object in `auditAnnotations`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use super::{API_VERSION, Reviewed};
use crate::rules::Outcome;
use crate::text::one_line;

/// At most this many warnings per response; the apiserver may truncate large numbers.
const MAX_WARNINGS: usize = 20;
/// Warnings longer than this may be truncated by the apiserver.
const MAX_WARNING_CHARS: usize = 256;

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
        .map(|w| {
            // Most lines need no change: keep the String the rule made.
            let changed = match one_line(&w, MAX_WARNING_CHARS - 1) {
                Cow::Owned(line) => Some(line),
                Cow::Borrowed(_) => None,
            };
            changed.unwrap_or(w)
        })
        .collect();
    if total > MAX_WARNINGS {
        lines.push(format!(
            "tracepatch: {} more warnings not shown",
            total - (MAX_WARNINGS - 1)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review;
    use crate::admission::testing::{pod_request, review_of};
    use crate::engine::Engine;
    use crate::rules::RuleId;
    use serde_json::json;

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
