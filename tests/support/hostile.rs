//! The hostile-input suite's shared part (issue 6): the admission router without a
//! socket, what every answer must satisfy whatever the input, what each case wants, and
//! the reviews the cases start from. Used by `tests/hostile_*.rs`.
//!
//! Every answer is checked against the same invariants: never 5xx; a 4xx is one
//! non-empty `text/plain` line of at most [`MAX_REASON`] bytes; a 200 is an
//! `admission.k8s.io/v1` AdmissionReview, `allowed: true`, the request's uid, bounded
//! one-line warnings, and a patch, if any, that applies to the request's object. Then
//! each case asserts its own [`Want`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracepatch::engine::Engine;
use tracepatch::server::{AdmissionState, Metrics, admission_router};

use super::pod_review;

pub const MIB: usize = 1024 * 1024;
pub const LIMIT: usize = 7 * MIB;
/// The longest one-line reason accepted for a refusal.
pub const MAX_REASON: usize = 1024;

// ---------------------------------------------------------------------------------
// The router without a socket, and what every answer must satisfy.
// ---------------------------------------------------------------------------------

pub fn router() -> axum::Router {
    admission_router(Arc::new(AdmissionState {
        engine: Engine::default(),
        metrics: Arc::new(Metrics::new()),
        body_timeout: Duration::from_secs(5),
    }))
}

/// An answer, as far as the invariants are concerned.
#[derive(Debug)]
pub enum Got {
    /// 4xx, with the one-line reason.
    Refused(u16, String),
    /// 200, allowed, with the number of patch operations and the warnings.
    Admitted { ops: usize, warnings: Vec<String> },
}

/// What a case must get, beyond the invariants.
#[derive(Clone, Copy, Debug)]
pub enum Want {
    /// This 4xx status, with a reason containing this text.
    Refused(u16, &'static str),
    /// This 4xx status, with exactly this reason line.
    RefusedWith(u16, &'static str),
    /// 200 without a patch, and a warning containing this text ("" = no warning
    /// required).
    Unchanged(&'static str),
    /// 200 with a patch (which applies), and a warning containing this text ("" = no
    /// warning required).
    Patched(&'static str),
    /// 200 with exactly this many patch operations (which apply) and exactly these
    /// warnings, in order.
    AdmittedWith {
        ops: usize,
        warnings: &'static [&'static str],
    },
    /// 200, patch or not: a valid AdmissionReview is never refused.
    Admitted,
}

/// Sends `body` to `POST /mutate` through the router.
pub async fn post(body: Vec<u8>) -> (u16, String, Bytes) {
    let req = http::Request::builder()
        .method("POST")
        .uri("/mutate")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, body)
}

/// Checks what holds for every answer, whatever the input, and classifies it:
/// - never 5xx, only 200 or 4xx;
/// - 4xx: `text/plain`, exactly one non-empty line of at most [`MAX_REASON`] bytes;
/// - 200: an `admission.k8s.io/v1` AdmissionReview, `allowed: true`, the request's uid;
///   at most 20 warnings of one line and at most 256 characters each; a patch, if
///   any, is base64 of an RFC 6902 patch that applies to the request's object.
pub fn invariants(name: &str, request: &[u8], status: u16, ctype: &str, body: &[u8]) -> Got {
    assert!(
        status == 200 || (400..500).contains(&status),
        "{name}: status {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    if status != 200 {
        assert!(
            ctype.starts_with("text/plain"),
            "{name}: content-type {ctype:?}"
        );
        let text = std::str::from_utf8(body).unwrap_or_else(|_| panic!("{name}: reason not UTF-8"));
        assert!(
            text.len() <= MAX_REASON + 1,
            "{name}: a reason of {} bytes: {}…",
            text.len(),
            text.chars().take(200).collect::<String>()
        );
        let line = text
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{name}: reason does not end with a newline: {text:?}"));
        assert!(
            !line.is_empty() && !line.contains(['\n', '\r']),
            "{name}: not one line: {text:?}"
        );
        return Got::Refused(status, line.to_owned());
    }
    assert!(
        ctype.starts_with("application/json"),
        "{name}: content-type {ctype:?}"
    );
    let resp: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{name}: the 200 answer is not JSON: {e}"));
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1", "{name}");
    assert_eq!(resp["kind"], "AdmissionReview", "{name}");
    let response = &resp["response"];
    assert_eq!(response["allowed"], true, "{name}: {response}");
    let review = reference_parse(request);
    if let Some(review) = &review {
        assert_eq!(
            response["uid"], review["request"]["uid"],
            "{name}: the answer's uid is not the request's"
        );
    }
    let warnings: Vec<String> = response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| w.as_str().expect("warnings are strings").to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(warnings.len() <= 20, "{name}: {} warnings", warnings.len());
    for w in &warnings {
        assert!(
            w.chars().count() <= 256 && !w.chars().any(char::is_control),
            "{name}: warning not one short line: {w:?}"
        );
    }
    let ops = match response.get("patch") {
        None | Some(Value::Null) => {
            assert!(
                response.get("patchType").is_none(),
                "{name}: patchType without a patch"
            );
            0
        }
        Some(patch) => {
            assert_eq!(response["patchType"], "JSONPatch", "{name}");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(
                    patch
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: patch not a string")),
                )
                .unwrap_or_else(|e| panic!("{name}: patch not base64: {e}"));
            let patch: json_patch::Patch = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{name}: patch is not a JSON Patch: {e}"));
            assert!(!patch.0.is_empty(), "{name}: an empty patch is sent");
            let review = review
                .unwrap_or_else(|| panic!("{name}: a patch for a request serde_json cannot read"));
            let mut object = review["request"]["object"].clone();
            if let Err(e) = json_patch::patch(&mut object, &patch) {
                panic!(
                    "{name}: the patch does not apply to the request's object: {e}\npatch: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(2000)])
                );
            }
            assert_eq!(
                response["auditAnnotations"]["applied-rules"]
                    .as_str()
                    .map(|s| !s.is_empty()),
                Some(true),
                "{name}: a patch without the rules that made it"
            );
            patch.0.len()
        }
    };
    Got::Admitted { ops, warnings }
}

/// The request as the apiserver's side reads it, for the invariants: serde_json without
/// its nesting limit (the webhook's parser has none either, and a patch must apply to
/// the deepest object it answered). Needs the big stack [`judge`] runs on.
pub fn reference_parse(request: &[u8]) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(request);
    de.disable_recursion_limit();
    let value = serde::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// Checks one case: the invariants, then what it wants. On a thread with a 1 GiB stack
/// (reserved, not used), where a 100,000-deep reference value can be parsed and dropped.
pub fn judge(name: &str, request: &[u8], status: u16, ctype: &str, body: &[u8], want: Want) {
    std::thread::scope(|scope| {
        let judged = std::thread::Builder::new()
            .stack_size(1 << 30)
            .spawn_scoped(scope, || {
                judge_here(name, request, status, ctype, body, want)
            })
            .expect("spawn the judging thread")
            .join();
        if let Err(panic) = judged {
            std::panic::resume_unwind(panic);
        }
    });
}

pub fn judge_here(name: &str, request: &[u8], status: u16, ctype: &str, body: &[u8], want: Want) {
    let got = invariants(name, request, status, ctype, body);
    let has = |warnings: &[String], text: &str| {
        text.is_empty() || warnings.iter().any(|w| w.contains(text))
    };
    match (want, &got) {
        (Want::Refused(s, text), Got::Refused(status, reason))
            if *status == s && reason.contains(text) => {}
        (Want::RefusedWith(s, line), Got::Refused(status, reason))
            if *status == s && reason == line => {}
        (Want::Unchanged(text), Got::Admitted { ops: 0, warnings }) if has(warnings, text) => {}
        (Want::Patched(text), Got::Admitted { ops, warnings })
            if *ops > 0 && has(warnings, text) => {}
        (
            Want::AdmittedWith {
                ops: n,
                warnings: w,
            },
            Got::Admitted { ops, warnings },
        ) if *ops == n && warnings == w => {}
        (Want::Admitted, Got::Admitted { .. }) => {}
        _ => panic!("{name}: wanted {want:?}, got {got:?}"),
    }
}

pub async fn run_case(name: &str, body: Vec<u8>, want: Want) {
    let (status, ctype, answer) = post(body.clone()).await;
    judge(name, &body, status, &ctype, &answer, want);
}

// ---------------------------------------------------------------------------------
// Reviews to start from.
// ---------------------------------------------------------------------------------

pub fn review_of(kind: (&str, &str), operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "2f2d5c4e-6f38-4a3b-9a8e-0d3f6b1c7a11",
            "kind": {"group": kind.0, "version": "v1", "kind": kind.1},
            "resource": {"group": kind.0, "version": "v1", "resource": "x"},
            "operation": operation,
            "namespace": "shop",
            "userInfo": {"username": "hostile"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    })
}

/// A meshed pod with the Datadog annotation and an injected istio-proxy (patched).
pub fn pod() -> Value {
    serde_json::from_slice(&pod_review()).unwrap()
}

/// A Datadog agent pod, found by label and image (patched: inject label/annotation).
pub fn agent_pod() -> Value {
    review_of(
        ("", "Pod"),
        "CREATE",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "datadog-agent-x1", "labels": {"app": "datadog-agent"}, "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7",
                "ports": [{"name": "traceport", "containerPort": 8126, "protocol": "TCP"}]}]}
        }),
    )
}

/// The agent's Service with the trace port, on UPDATE (patched: appProtocol).
pub fn service() -> Value {
    review_of(
        ("", "Service"),
        "UPDATE",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "datadog-agent", "labels": {"app": "datadog-agent"}},
            "spec": {"clusterIP": "None", "selector": {"app": "datadog-agent"}, "ports": [
                {"name": "dogstatsdport", "port": 8125, "protocol": "UDP", "targetPort": 8125},
                {"name": "traceport", "port": 8126, "protocol": "TCP", "targetPort": 8126}
            ]}
        }),
    )
}

/// A CronJob without app labels (patched: app labels on the job and pod templates).
pub fn cronjob() -> Value {
    review_of(
        ("batch", "CronJob"),
        "CREATE",
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "nightly-report", "namespace": "shop"},
            "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "report", "image": "shop/report:1"}]}}}}}
        }),
    )
}

pub fn bases() -> [(&'static str, Value); 4] {
    [
        ("meshed pod", pod()),
        ("agent pod", agent_pod()),
        ("service", service()),
        ("cronjob", cronjob()),
    ]
}

pub fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// `base` with `f` applied.
pub fn with(base: &Value, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = base.clone();
    f(&mut v);
    to_vec(&v)
}

/// The value at a JSON pointer, for editing.
pub fn at<'v>(v: &'v mut Value, ptr: &str) -> &'v mut Value {
    v.pointer_mut(ptr)
        .unwrap_or_else(|| panic!("no {ptr} in the base review"))
}

/// Sets the value at `ptr` (a JSON pointer into the review; the last field is added if
/// absent).
pub fn set(base: &Value, ptr: &str, value: Value) -> Vec<u8> {
    with(base, |v| {
        let (parent, last) = ptr.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        match at(v, parent) {
            Value::Object(m) => {
                m.insert(last, value);
            }
            Value::Array(a) => a[last.parse::<usize>().unwrap()] = value,
            other => panic!("{parent} is {other}, not a map or list"),
        }
    })
}

/// Replaces the raw text of the value at `ptr` with `raw` (for text serde_json would not
/// produce: duplicate keys, bad escapes, deep nesting).
pub fn splice(base: &Value, ptr: &str, raw: &[u8]) -> Vec<u8> {
    const MARK: &str = "\u{1}splice\u{1}";
    let text = String::from_utf8(with(base, |v| *at(v, ptr) = json!(MARK))).unwrap();
    let marker = serde_json::to_string(MARK).unwrap();
    let (head, tail) = text.split_once(&marker).unwrap();
    [head.as_bytes(), raw, tail.as_bytes()].concat()
}
