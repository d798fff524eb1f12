//! Hostile input and connection abuse (issue 6): whatever a client sends, the webhook
//! answers 4xx with one line saying why, or 200 with a patch that applies to the
//! request's object (often none, with a warning); never 5xx, never a panic, and a
//! misbehaving connection never stops others being served.
//!
//! Input cases go through the router without a socket (`tower::ServiceExt::oneshot`),
//! table-driven, every assertion naming its case; transport and connection cases go
//! over real TLS to a server on loopback (in-process, or the `tracepatch` binary when
//! its memory is measured).

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::{Client, TestCerts, pod_review, served_within_5s, serving, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use tracepatch::engine::Engine;
use tracepatch::server::{AdmissionState, Metrics, admission_router};

const MIB: usize = 1024 * 1024;
const LIMIT: usize = 7 * MIB;
/// The longest one-line reason accepted for a refusal.
const MAX_REASON: usize = 1024;

// ---------------------------------------------------------------------------------
// The router without a socket, and what every answer must satisfy.
// ---------------------------------------------------------------------------------

fn router() -> axum::Router {
    admission_router(Arc::new(AdmissionState {
        engine: Engine::default(),
        metrics: Arc::new(Metrics::new()),
        body_timeout: Duration::from_secs(5),
    }))
}

/// An answer, as far as the invariants are concerned.
#[derive(Debug)]
enum Got {
    /// 4xx, with the one-line reason.
    Refused(u16, String),
    /// 200, allowed, with the number of patch operations and the warnings.
    Admitted { ops: usize, warnings: Vec<String> },
}

/// What a case must get, beyond the invariants.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// This 4xx status, with a reason containing this text.
    Refused(u16, &'static str),
    /// 200 without a patch, and a warning containing this text ("" = no warning
    /// required).
    Unchanged(&'static str),
    /// 200 with a patch (which applies), and a warning containing this text ("" = no
    /// warning required).
    Patched(&'static str),
    /// 200, patch or not.
    Admitted,
    /// Anything that satisfies the invariants.
    Valid,
}

/// Sends `body` to `POST /mutate` through the router.
async fn post(body: Vec<u8>) -> (u16, String, Bytes) {
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
fn invariants(name: &str, request: &[u8], status: u16, ctype: &str, body: &[u8]) -> Got {
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
fn reference_parse(request: &[u8]) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(request);
    de.disable_recursion_limit();
    let value = serde::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// Checks one case: the invariants, then what it wants. On a thread with a 1 GiB stack
/// (reserved, not used), where a 100,000-deep reference value can be parsed and dropped.
fn judge(name: &str, request: &[u8], status: u16, ctype: &str, body: &[u8], want: Want) {
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

fn judge_here(name: &str, request: &[u8], status: u16, ctype: &str, body: &[u8], want: Want) {
    let got = invariants(name, request, status, ctype, body);
    let has = |warnings: &[String], text: &str| {
        text.is_empty() || warnings.iter().any(|w| w.contains(text))
    };
    match (want, &got) {
        (Want::Refused(s, text), Got::Refused(status, reason))
            if *status == s && reason.contains(text) => {}
        (Want::Unchanged(text), Got::Admitted { ops: 0, warnings }) if has(warnings, text) => {}
        (Want::Patched(text), Got::Admitted { ops, warnings })
            if *ops > 0 && has(warnings, text) => {}
        (Want::Admitted, Got::Admitted { .. }) | (Want::Valid, _) => {}
        _ => panic!("{name}: wanted {want:?}, got {got:?}"),
    }
}

async fn run_case(name: &str, body: Vec<u8>, want: Want) {
    let (status, ctype, answer) = post(body.clone()).await;
    judge(name, &body, status, &ctype, &answer, want);
}

// ---------------------------------------------------------------------------------
// Reviews to start from.
// ---------------------------------------------------------------------------------

fn review_of(kind: (&str, &str), operation: &str, object: Value) -> Value {
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
fn pod() -> Value {
    serde_json::from_slice(&pod_review()).unwrap()
}

/// A Datadog agent pod, found by label and image (patched: inject label/annotation).
fn agent_pod() -> Value {
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
fn service() -> Value {
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
fn cronjob() -> Value {
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

fn bases() -> [(&'static str, Value); 4] {
    [
        ("meshed pod", pod()),
        ("agent pod", agent_pod()),
        ("service", service()),
        ("cronjob", cronjob()),
    ]
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// `base` with `f` applied.
fn with(base: &Value, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = base.clone();
    f(&mut v);
    to_vec(&v)
}

/// The value at a JSON pointer, for editing.
fn at<'v>(v: &'v mut Value, ptr: &str) -> &'v mut Value {
    v.pointer_mut(ptr)
        .unwrap_or_else(|| panic!("no {ptr} in the base review"))
}

/// Sets the value at `ptr` (a JSON pointer into the review; the last field is added if
/// absent).
fn set(base: &Value, ptr: &str, value: Value) -> Vec<u8> {
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
fn splice(base: &Value, ptr: &str, raw: &[u8]) -> Vec<u8> {
    const MARK: &str = "\u{1}splice\u{1}";
    let text = String::from_utf8(with(base, |v| *at(v, ptr) = json!(MARK))).unwrap();
    let marker = serde_json::to_string(MARK).unwrap();
    let (head, tail) = text.split_once(&marker).unwrap();
    [head.as_bytes(), raw, tail.as_bytes()].concat()
}

// ---------------------------------------------------------------------------------
// 1. Hostile input through the router.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn truncated_reviews_are_refused_at_every_cut_point() {
    let reviews = [
        ("fixture pod review", pod_review()),
        (
            "meshed-pod bench review",
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/bench/meshed-pod-review.json"
            ))
            .unwrap(),
        ),
        ("agent pod", to_vec(&agent_pod())),
        ("service", to_vec(&service())),
        ("cronjob", to_vec(&cronjob())),
    ];
    for (what, full) in reviews {
        // Every cut point of the small reviews; every 7th of the 9 KB one, plus its ends.
        let step = if full.len() > 4096 { 7 } else { 1 };
        let cuts = (0..full.len())
            .filter(|c| c % step == 0 || *c < 64 || full.len() - c < 64)
            .collect::<Vec<_>>();
        for cut in cuts {
            let body = full[..cut].to_vec();
            let name = format!("{what} cut at byte {cut} of {}", full.len());
            // A prefix that is still JSON (only trailing whitespace cut) is a review.
            let want = if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
                Want::Admitted
            } else {
                Want::Refused(400, "not valid JSON")
            };
            run_case(&name, body, want).await;
        }
    }
}

#[tokio::test]
async fn invalid_json_is_refused_with_the_reason() {
    let review = String::from_utf8(pod_review()).unwrap();
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "empty",
            b"".to_vec(),
            Want::Refused(400, "not valid JSON: EOF while parsing"),
        ),
        (
            "whitespace",
            b" \n\t ".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "open brace",
            b"{".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "close brace",
            b"}".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "key without value",
            br#"{"apiVersion":}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "single quotes",
            br#"{'apiVersion': 'admission.k8s.io/v1'}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "trailing comma in object",
            br#"{"a":1,}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "trailing comma in array",
            br#"[1,]"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "missing colon",
            br#"{"a" 1}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        ("NaN", b"NaN".to_vec(), Want::Refused(400, "not valid JSON")),
        (
            "Infinity value",
            br#"{"a": Infinity}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "leading zero",
            br#"{"a": 01}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "bare minus",
            br#"{"a": -}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "huge exponent",
            br#"{"a": 1e999999}"#.to_vec(),
            Want::Refused(400, ""),
        ),
        (
            "truncated escape",
            br#"{"a": "\u00"}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "bad escape",
            br#"{"a": "\q"}"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "raw control character in a string",
            b"{\"a\": \"x\x01y\"}".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "raw newline in a string",
            b"{\"a\": \"x\ny\"}".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "unterminated string",
            br#"{"a": "x"#.to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "comment",
            b"// hi\n{}".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        ("nul", b"\0".to_vec(), Want::Refused(400, "not valid JSON")),
        (
            "partial literal",
            b"tru".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "number",
            b"7".to_vec(),
            Want::Refused(400, "expected a JSON object, found a scalar"),
        ),
        (
            "string",
            br#""AdmissionReview""#.to_vec(),
            Want::Refused(400, "expected a JSON object, found a string"),
        ),
        (
            "null",
            b"null".to_vec(),
            Want::Refused(400, "expected a JSON object, found null"),
        ),
        (
            "YAML instead of JSON",
            b"apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\n".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "byte-order mark before the review",
            [b"\xef\xbb\xbf".as_slice(), review.as_bytes()].concat(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "UTF-16 review",
            review.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "trailing garbage",
            format!("{review}garbage").into_bytes(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "a second review after the first",
            format!("{review}{review}").into_bytes(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "trailing NUL",
            format!("{review}\0").into_bytes(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            // Found by fuzzing: simd-json stopped at the NUL and accepted the rest.
            "NUL after a scalar inside the review",
            review
                .replacen("\"CREATE\"", "\"CREATE\"\0", 1)
                .into_bytes(),
            Want::Refused(400, "NUL byte"),
        ),
        (
            "NUL before the review",
            format!("\0{review}").into_bytes(),
            Want::Refused(400, "NUL byte at byte 0"),
        ),
        (
            "trailing whitespace",
            format!("{review} \n\r\n\t").into_bytes(),
            Want::Patched(""),
        ),
        (
            "invalid UTF-8 in a key",
            b"{\"api\xffVersion\": 1}".to_vec(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "invalid UTF-8 in the uid",
            review
                .replacen("0c9a8d74", "0c9a\u{1}", 1)
                .replace('\u{1}', "\u{fffd}")
                .into_bytes()
                .iter()
                .map(|b| if *b == 0xef { 0xff } else { *b })
                .collect(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "overlong UTF-8 encoding of '/'",
            review
                .replacen("apm.datadoghq.com/env", "apm.datadoghq.com\u{1}env", 1)
                .into_bytes()
                .iter()
                .flat_map(|b| if *b == 1 { vec![0xc0, 0xaf] } else { vec![*b] })
                .collect(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "UTF-8 surrogate half in the object",
            review
                .replacen("web-0", "web-\u{1}", 1)
                .into_bytes()
                .iter()
                .flat_map(|b| {
                    if *b == 1 {
                        vec![0xed, 0xa0, 0x80]
                    } else {
                        vec![*b]
                    }
                })
                .collect(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "lone surrogate escape in the uid",
            review.replacen("0c9a8d74", "\\ud800", 1).into_bytes(),
            Want::Refused(400, "surrogate"),
        ),
        (
            "lone surrogate escape in the object",
            review
                .replacen("\"web-0\"", "\"web-\\udc00\"", 2)
                .into_bytes(),
            Want::Refused(400, "surrogate"),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

#[tokio::test]
async fn deeply_nested_json_is_refused_or_ignored_without_a_crash() {
    const DEPTH: usize = 100_000;
    let open = "[".repeat(DEPTH);
    let closed = format!("{open}{}", "]".repeat(DEPTH));
    let objects = format!("{}{}", r#"{"a":"#.repeat(DEPTH), "}".repeat(DEPTH));
    let base = pod();
    let cases: Vec<(String, Vec<u8>, Want)> = vec![
        (
            "100,000 [ unclosed as the body".into(),
            open.clone().into_bytes(),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "100,000 [ closed as the body".into(),
            closed.clone().into_bytes(),
            Want::Refused(400, ""),
        ),
        (
            "100,000 nested objects as the body".into(),
            objects.clone().into_bytes(),
            Want::Refused(400, ""),
        ),
        (
            "100,000 [ unclosed as request.object".into(),
            splice(&base, "/request/object", open.as_bytes()),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "100,000 [ closed as request.object".into(),
            splice(&base, "/request/object", closed.as_bytes()),
            Want::Refused(400, ""),
        ),
        (
            "100,000 nested objects as request.object".into(),
            splice(&base, "/request/object", objects.as_bytes()),
            Want::Valid,
        ),
        (
            "100,000 [ closed in an unread field of the object".into(),
            splice(
                &base,
                "/request/object/spec/containers/0/image",
                closed.as_bytes(),
            ),
            Want::Valid,
        ),
        (
            "100,000 nested objects as metadata.labels".into(),
            splice(
                &agent_pod(),
                "/request/object/metadata/labels",
                objects.as_bytes(),
            ),
            Want::Valid,
        ),
        (
            "100,000 [ unclosed in request.oldObject".into(),
            splice(&service(), "/request/oldObject", open.as_bytes()),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "100,000 [ closed as a container's env".into(),
            splice(
                &base,
                "/request/object/spec/containers/1/env",
                closed.as_bytes(),
            ),
            Want::Valid,
        ),
        (
            "100,000 nested objects as the annotation JSON".into(),
            set(
                &base,
                "/request/object/metadata/annotations/apm.datadoghq.com~1env",
                json!(format!(r#"{{"DD_ENV": {objects}}}"#)),
            ),
            Want::Valid,
        ),
        (
            "100,000 [ unclosed in the annotation JSON".into(),
            set(
                &base,
                "/request/object/metadata/annotations/apm.datadoghq.com~1env",
                json!(format!(r#"{{"DD_ENV": {open}"#)),
            ),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "100,000 [ in proxy.istio.io/config (YAML flow)".into(),
            set(
                &base,
                "/request/object/metadata/annotations/proxy.istio.io~1config",
                json!(open),
            ),
            Want::Patched("proxy.istio.io/config: cannot be read"),
        ),
        (
            "100,000 { in proxy.istio.io/config (JSON)".into(),
            set(
                &base,
                "/request/object/metadata/annotations/proxy.istio.io~1config",
                json!(objects),
            ),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "20,000 { in proxy.istio.io/config (JSON, under 256 KiB)".into(),
            set(
                &base,
                "/request/object/metadata/annotations/proxy.istio.io~1config",
                json!(format!(
                    "{}{}",
                    r#"{"a":"#.repeat(20_000),
                    "}".repeat(20_000)
                )),
            ),
            Want::Patched("proxy.istio.io/config: cannot be read"),
        ),
        (
            "700-level YAML block nesting in proxy.istio.io/config (245 KB)".into(),
            set(
                &base,
                "/request/object/metadata/annotations/proxy.istio.io~1config",
                json!(
                    (0..700)
                        .map(|i| format!("{}k:\n", " ".repeat(i)))
                        .collect::<String>()
                ),
            ),
            Want::Patched("proxy.istio.io/config: cannot be read"),
        ),
    ];
    for (name, body, want) in cases {
        run_case(&name, body, want).await;
    }
}

#[tokio::test]
async fn megabyte_strings_within_the_limit_are_handled() {
    let big = |n: usize| "x".repeat(n);
    let base = pod();
    let env = "/request/object/metadata/annotations/apm.datadoghq.com~1env";
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "3 MB annotation variable value",
            set(
                &base,
                env,
                json!(format!(r#"{{"DD_TAGS": "{}"}}"#, big(3 * MIB))),
            ),
            Want::Unchanged("over the 256 KiB Kubernetes allows"),
        ),
        (
            "200 KB annotation variable value",
            set(
                &base,
                env,
                json!(format!(r#"{{"DD_TAGS": "{}"}}"#, big(200 * 1024))),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB annotation value that is not JSON",
            set(&base, env, json!(big(3 * MIB))),
            Want::Unchanged("over the 256 KiB Kubernetes allows"),
        ),
        (
            "200 KB annotation value that is not JSON",
            set(&base, env, json!(big(200 * 1024))),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "3 MB variable name",
            set(&base, env, json!(format!(r#"{{"{}": "x"}}"#, big(3 * MIB)))),
            Want::Unchanged("over the 256 KiB Kubernetes allows"),
        ),
        (
            // Kubernetes sets no length limit on a variable name.
            "200 KB variable name",
            set(
                &base,
                env,
                json!(format!(r#"{{"{}": "x"}}"#, big(200 * 1024))),
            ),
            Want::Patched(""),
        ),
        (
            "100,000 variables in the annotation",
            set(
                &base,
                env,
                json!(
                    serde_json::to_string(
                        &(0..100_000)
                            .map(|i| (format!("V{i}"), json!("x")))
                            .collect::<serde_json::Map<_, _>>()
                    )
                    .unwrap()
                ),
            ),
            Want::Unchanged("over the 256 KiB Kubernetes allows"),
        ),
        (
            "15,000 variables in the annotation (under 256 KiB)",
            set(
                &base,
                env,
                json!(
                    serde_json::to_string(
                        &(0..15_000)
                            .map(|i| (format!("V{i}"), json!("x")))
                            .collect::<serde_json::Map<_, _>>()
                    )
                    .unwrap()
                ),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB label value feeding DD_ENV",
            set(
                &base,
                "/request/object/metadata/labels/tags.datadoghq.com~1env",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB agent label value",
            set(
                &agent_pod(),
                "/request/object/metadata/labels/app",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB container name",
            set(
                &base,
                "/request/object/spec/containers/1/name",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB image",
            set(
                &agent_pod(),
                "/request/object/spec/containers/0/image",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "3 MB uid",
            set(&base, "/request/uid", json!(big(3 * MIB))),
            Want::Patched(""),
        ),
        (
            "3 MB namespace",
            set(&base, "/request/namespace", json!(big(3 * MIB))),
            Want::Patched(""),
        ),
        (
            "3 MB name",
            set(&base, "/request/name", json!(big(3 * MIB))),
            Want::Patched(""),
        ),
        (
            "3 MB kind",
            set(&base, "/request/kind/kind", json!(big(3 * MIB))),
            Want::Unchanged(""),
        ),
        (
            "3 MB apiVersion",
            set(&base, "/apiVersion", json!(big(3 * MIB))),
            Want::Refused(400, "unsupported apiVersion"),
        ),
        (
            "3 MB operation",
            set(&base, "/request/operation", json!(big(3 * MIB))),
            Want::Refused(400, "request.operation is"),
        ),
        (
            "3 MB CronJob name",
            set(
                &cronjob(),
                "/request/object/metadata/name",
                json!(big(3 * MIB)),
            ),
            Want::Unchanged("not a valid label value"),
        ),
        (
            "3 MB service port name",
            set(
                &service(),
                "/request/object/spec/ports/1/name",
                json!(big(3 * MIB)),
            ),
            Want::Patched(""),
        ),
        (
            "1 MB proxy.istio.io/config YAML",
            set(
                &base,
                "/request/object/metadata/annotations/proxy.istio.io~1config",
                json!(
                    (0..50_000)
                        .map(|i| format!("k{i}: v{i}\n"))
                        .collect::<String>()
                ),
            ),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "a review just under the limit",
            {
                let mut body = to_vec(&pod());
                let pad = LIMIT - body.len() - 64;
                body = with(&pod(), |v| {
                    v["request"]["object"]["metadata"]["labels"]["pad"] = json!(big(pad))
                });
                assert!(body.len() <= LIMIT);
                body
            },
            Want::Patched(""),
        ),
        (
            "just over the limit",
            vec![b' '; LIMIT + 1],
            Want::Refused(413, "request body exceeds 7340032 bytes"),
        ),
    ];
    for (name, body, want) in cases {
        assert!(body.len() <= LIMIT + 1, "{name}: {} bytes", body.len());
        run_case(name, body, want).await;
    }
}

#[tokio::test]
async fn wrong_types_in_every_field_the_rules_read() {
    let pod = pod();
    let agent = agent_pod();
    let svc = service();
    let cron = cronjob();
    let env = "/request/object/metadata/annotations/apm.datadoghq.com~1env";
    let proxy = "/request/object/metadata/annotations/proxy.istio.io~1config";
    let sidecar = "/request/object/spec/containers/1";
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "pod: metadata a list",
            set(&pod, "/request/object/metadata", json!([1, 2])),
            Want::Unchanged(""),
        ),
        (
            "pod: metadata a string",
            set(&pod, "/request/object/metadata", json!("m")),
            Want::Unchanged(""),
        ),
        (
            "agent: metadata a list",
            set(&agent, "/request/object/metadata", json!([])),
            Want::Unchanged("metadata is not a map"),
        ),
        (
            "pod: labels a list",
            set(&pod, "/request/object/metadata/labels", json!(["app"])),
            Want::Patched(""),
        ),
        (
            "agent: labels a list (found by image)",
            set(&agent, "/request/object/metadata/labels", json!(["app"])),
            Want::Patched("metadata.labels is not a map"),
        ),
        (
            "pod: annotations a string",
            set(&pod, "/request/object/metadata/annotations", json!("a")),
            Want::Unchanged(""),
        ),
        (
            "agent: annotations a string",
            set(&agent, "/request/object/metadata/annotations", json!("a")),
            Want::Patched("metadata.annotations is not a map"),
        ),
        (
            "agent: annotations a number",
            set(&agent, "/request/object/metadata/annotations", json!(5)),
            Want::Patched("metadata.annotations is not a map"),
        ),
        (
            "pod: env annotation a number",
            set(&pod, env, json!(8126)),
            Want::Unchanged("not a string"),
        ),
        (
            "pod: env annotation an object",
            set(&pod, env, json!({"DD_ENV": "prod"})),
            Want::Unchanged("not a string"),
        ),
        (
            "pod: env annotation null",
            set(&pod, env, Value::Null),
            Want::Unchanged("not a string"),
        ),
        (
            "pod: env annotation a bool",
            set(&pod, env, json!(true)),
            Want::Unchanged("not a string"),
        ),
        (
            "pod: env annotation JSON array",
            set(&pod, env, json!(r#"["DD_ENV", "prod"]"#)),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation JSON string",
            set(&pod, env, json!(r#""DD_ENV=prod""#)),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation JSON number",
            set(&pod, env, json!("8126")),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation JSON null",
            set(&pod, env, json!("null")),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation empty",
            set(&pod, env, json!("")),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation nested values",
            set(
                &pod,
                env,
                json!(r#"{"DD_ENV": {"a": [1, {"b": null}]}, "DD_X": [[[]]], "DD_N": null}"#),
            ),
            Want::Patched("DD_N is null"),
        ),
        (
            "pod: env annotation with trailing garbage",
            set(&pod, env, json!(r#"{"DD_ENV": "prod"} x"#)),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: proxy config a number",
            set(&pod, proxy, json!(1)),
            Want::Patched("not a string; left alone"),
        ),
        (
            "pod: proxy config a list",
            set(&pod, proxy, json!(["a"])),
            Want::Patched("not a string; left alone"),
        ),
        (
            "pod: proxy config a YAML list",
            set(&pod, proxy, json!("- a\n- b\n")),
            Want::Patched("cannot be read"),
        ),
        (
            "pod: proxy config YAML scalar",
            set(&pod, proxy, json!("just text")),
            Want::Patched("cannot be read"),
        ),
        (
            "pod: proxyMetadata a list",
            set(&pod, proxy, json!("proxyMetadata: [a, b]\n")),
            Want::Patched("proxyMetadata is not a map"),
        ),
        (
            "pod: proxyMetadata a JSON string",
            set(&pod, proxy, json!(r#"{"proxyMetadata": "x"}"#)),
            Want::Patched("proxyMetadata is not a map"),
        ),
        (
            "pod: spec a string",
            set(&pod, "/request/object/spec", json!("spec")),
            Want::Patched(""),
        ),
        (
            "pod: spec a list",
            set(&pod, "/request/object/spec", json!([{"containers": []}])),
            Want::Patched(""),
        ),
        (
            "pod: containers an object",
            set(
                &pod,
                "/request/object/spec/containers",
                json!({"name": "istio-proxy"}),
            ),
            Want::Patched(""),
        ),
        (
            "pod: containers a string",
            set(
                &pod,
                "/request/object/spec/containers",
                json!("istio-proxy"),
            ),
            Want::Patched(""),
        ),
        (
            "pod: containers a list of strings",
            set(
                &pod,
                "/request/object/spec/containers",
                json!(["web", "istio-proxy"]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: containers a list of lists",
            set(
                &pod,
                "/request/object/spec/containers",
                json!([[], [{"name": "istio-proxy"}]]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: container name a number",
            set(&pod, &format!("{sidecar}/name"), json!(7)),
            Want::Patched(""),
        ),
        (
            "pod: container name null",
            set(&pod, &format!("{sidecar}/name"), Value::Null),
            Want::Patched(""),
        ),
        (
            "pod: container name an object",
            set(&pod, &format!("{sidecar}/name"), json!({"istio-proxy": 1})),
            Want::Patched(""),
        ),
        (
            "pod: env a string",
            set(&pod, &format!("{sidecar}/env"), json!("DD_ENV=prod")),
            Want::Patched("env is not a list"),
        ),
        (
            "pod: env an object",
            set(&pod, &format!("{sidecar}/env"), json!({"DD_ENV": "prod"})),
            Want::Patched("env is not a list"),
        ),
        (
            "pod: env a number",
            set(&pod, &format!("{sidecar}/env"), json!(3)),
            Want::Patched("env is not a list"),
        ),
        (
            "pod: env null",
            set(&pod, &format!("{sidecar}/env"), Value::Null),
            Want::Patched(""),
        ),
        (
            "pod: env entries strings",
            set(&pod, &format!("{sidecar}/env"), json!(["DD_ENV", "prod"])),
            Want::Patched(""),
        ),
        (
            "pod: env entry name a number",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": 5, "value": "x"}]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: env entry name null",
            set(&pod, &format!("{sidecar}/env"), json!([{"name": null}])),
            Want::Patched(""),
        ),
        (
            "pod: env entry value a number",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "value": 5}]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: env entry value an object",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "value": {"a": 1}}]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: env valueFrom a string",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "valueFrom": "secret"}]),
            ),
            Want::Patched("set from valueFrom"),
        ),
        (
            "pod: env valueFrom a number",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "valueFrom": 0}]),
            ),
            Want::Patched("set from valueFrom"),
        ),
        (
            "pod: env valueFrom null",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "valueFrom": null, "value": "dev"}]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: native sidecar restartPolicy a list",
            with(&pod, |v| {
                let c = at(v, sidecar).take();
                *at(v, "/request/object/spec/containers") = json!([{"name": "web"}]);
                let mut c = c;
                c["restartPolicy"] = json!(["Always"]);
                v["request"]["object"]["spec"]["initContainers"] = json!([c]);
            }),
            Want::Patched(""),
        ),
        (
            "pod: initContainers a string",
            with(&pod, |v| {
                v["request"]["object"]["spec"]["initContainers"] = json!("istio-proxy")
            }),
            Want::Patched(""),
        ),
        (
            "agent: ports an object",
            set(
                &agent,
                "/request/object/spec/containers/0/ports",
                json!({"traceport": 8126}),
            ),
            Want::Patched(""),
        ),
        (
            "agent: containerPort a string",
            set(
                &agent,
                "/request/object/spec/containers/0/ports/0/containerPort",
                json!("8126"),
            ),
            Want::Patched(""),
        ),
        (
            "agent: image a number",
            set(&agent, "/request/object/spec/containers/0/image", json!(7)),
            Want::Patched(""),
        ),
        (
            "pod found only by image, image a list",
            with(&agent, |v| {
                v["request"]["object"]["metadata"]["labels"] = json!({});
                v["request"]["object"]["spec"]["containers"][0]["image"] =
                    json!(["gcr.io/datadoghq/agent:7"]);
            }),
            Want::Unchanged(""),
        ),
        (
            "agent: inject label a number",
            set(
                &agent,
                "/request/object/metadata/labels/sidecar.istio.io~1inject",
                json!(1),
            ),
            Want::Unchanged(""),
        ),
        (
            "agent: inject annotation an object",
            set(
                &agent,
                "/request/object/metadata/annotations/sidecar.istio.io~1inject",
                json!({}),
            ),
            Want::Unchanged(""),
        ),
        (
            "agent: dataplane-mode label a number",
            set(
                &agent,
                "/request/object/metadata/labels/istio.io~1dataplane-mode",
                json!(0),
            ),
            Want::Patched(""),
        ),
        (
            "agent: opt-out label a bool",
            set(
                &agent,
                "/request/object/metadata/labels/tracepatch.io~1enabled",
                json!(false),
            ),
            Want::Patched(""),
        ),
        (
            "service: spec a string",
            set(&svc, "/request/object/spec", json!("ports")),
            Want::Unchanged(""),
        ),
        (
            "service: ports a string",
            set(&svc, "/request/object/spec/ports", json!("8126")),
            Want::Unchanged(""),
        ),
        (
            "service: ports an object",
            set(
                &svc,
                "/request/object/spec/ports",
                json!({"name": "traceport", "port": 8126}),
            ),
            Want::Unchanged(""),
        ),
        (
            "service: ports a list of numbers",
            set(&svc, "/request/object/spec/ports", json!([8126])),
            Want::Unchanged(""),
        ),
        (
            "service: port number a string",
            set(&svc, "/request/object/spec/ports/1/port", json!("8126")),
            Want::Patched(""),
        ),
        (
            "service: unnamed port number a string",
            with(&svc, |v| {
                v["request"]["object"]["spec"]["ports"][1] =
                    json!({"port": "8126", "protocol": "TCP"});
            }),
            Want::Unchanged(""),
        ),
        (
            "service: port number negative",
            set(&svc, "/request/object/spec/ports/1/port", json!(-8126)),
            Want::Patched(""),
        ),
        (
            "service: port number a float",
            set(&svc, "/request/object/spec/ports/1/port", json!(8126.0)),
            Want::Patched(""),
        ),
        (
            "service: port number huge",
            set(&svc, "/request/object/spec/ports/1/port", json!(u64::MAX)),
            Want::Patched(""),
        ),
        (
            "service: protocol a number",
            set(&svc, "/request/object/spec/ports/1/protocol", json!(6)),
            Want::Unchanged(""),
        ),
        (
            "service: protocol null",
            set(&svc, "/request/object/spec/ports/1/protocol", Value::Null),
            Want::Patched(""),
        ),
        (
            "service: port name a number",
            set(&svc, "/request/object/spec/ports/1/name", json!(8126)),
            Want::Patched(""),
        ),
        (
            "service: appProtocol a number",
            set(&svc, "/request/object/spec/ports/1/appProtocol", json!(1)),
            Want::Valid,
        ),
        (
            "service: appProtocol an object",
            set(
                &svc,
                "/request/object/spec/ports/1/appProtocol",
                json!({"tcp": true}),
            ),
            Want::Valid,
        ),
        (
            "cronjob: spec a string",
            set(&cron, "/request/object/spec", json!("spec")),
            Want::Unchanged(""),
        ),
        (
            "cronjob: jobTemplate a string",
            set(&cron, "/request/object/spec/jobTemplate", json!("t")),
            Want::Unchanged(""),
        ),
        (
            "cronjob: jobTemplate.spec a list",
            set(&cron, "/request/object/spec/jobTemplate/spec", json!([])),
            Want::Unchanged(""),
        ),
        (
            "cronjob: template a string",
            set(
                &cron,
                "/request/object/spec/jobTemplate/spec/template",
                json!("t"),
            ),
            Want::Unchanged(""),
        ),
        (
            "cronjob: template metadata a string",
            set(
                &cron,
                "/request/object/spec/jobTemplate/spec/template/metadata",
                json!("m"),
            ),
            Want::Valid,
        ),
        (
            "cronjob: template labels a list",
            set(
                &cron,
                "/request/object/spec/jobTemplate/spec/template/metadata",
                json!({"labels": ["app"]}),
            ),
            Want::Valid,
        ),
        (
            "cronjob: jobTemplate metadata a number",
            set(&cron, "/request/object/spec/jobTemplate/metadata", json!(1)),
            Want::Valid,
        ),
        (
            "cronjob: name a number",
            set(&cron, "/request/object/metadata/name", json!(1)),
            Want::Unchanged("no name yet"),
        ),
        (
            "cronjob: app label a number",
            set(&cron, "/request/object/metadata/labels", json!({"app": 1})),
            Want::Patched(""),
        ),
        (
            "cronjob: metadata a list",
            set(&cron, "/request/object/metadata", json!([])),
            Want::Unchanged("no name yet"),
        ),
        (
            "review: request.kind a string",
            set(&pod, "/request/kind", json!("Pod")),
            Want::Refused(400, "request.kind must be an object"),
        ),
        (
            "review: request.kind.kind a number",
            set(&pod, "/request/kind/kind", json!(1)),
            Want::Refused(400, "request.kind must be an object"),
        ),
        (
            "review: operation a number",
            set(&pod, "/request/operation", json!(1)),
            Want::Refused(400, "request.operation is None"),
        ),
        (
            "review: operation lower case",
            set(&pod, "/request/operation", json!("create")),
            Want::Refused(400, "request.operation is"),
        ),
        (
            "review: uid a number",
            set(&pod, "/request/uid", json!(1)),
            Want::Refused(400, "request.uid is missing or empty"),
        ),
        (
            "review: uid an object",
            set(&pod, "/request/uid", json!({})),
            Want::Refused(400, "request.uid is missing or empty"),
        ),
        (
            "review: apiVersion a number",
            set(&pod, "/apiVersion", json!(1)),
            Want::Refused(400, "unsupported apiVersion"),
        ),
        (
            "review: kind a list",
            set(&pod, "/kind", json!(["AdmissionReview"])),
            Want::Refused(400, "expected AdmissionReview"),
        ),
        (
            "review: request a list",
            set(&pod, "/request", json!([])),
            Want::Refused(400, "request is a list"),
        ),
        (
            "review: request null",
            set(&pod, "/request", Value::Null),
            Want::Refused(400, "has no request"),
        ),
        (
            "review: dryRun a string",
            set(&pod, "/request/dryRun", json!("true")),
            Want::Patched(""),
        ),
        (
            "review: subResource a number",
            set(&pod, "/request/subResource", json!(1)),
            Want::Patched(""),
        ),
        (
            "review: namespace a number",
            set(&pod, "/request/namespace", json!(1)),
            Want::Patched(""),
        ),
        (
            "review: name a list",
            set(&pod, "/request/name", json!([])),
            Want::Patched(""),
        ),
        (
            "review: generateName a number",
            with(&pod, |v| {
                v["request"]["object"]["metadata"]["generateName"] = json!(1)
            }),
            Want::Patched(""),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

/// Every node of every base review, removed or replaced by each JSON type: whatever the
/// rules read, a wrong type is skipped, never a crash or a patch that does not apply.
#[tokio::test]
async fn every_field_replaced_by_every_type() {
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(p.clone());
                    pointers(child, p, out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    pointers(child, p, out);
                }
            }
            _ => {}
        }
    }
    let replacements = [
        ("null", Value::Null),
        ("true", json!(true)),
        ("-1", json!(-1)),
        ("1.5", json!(1.5)),
        ("\"\"", json!("")),
        ("\"8126\"", json!("8126")),
        ("[]", json!([])),
        ("[\"x\"]", json!(["x"])),
        ("{}", json!({})),
    ];
    let mut count = 0;
    for (base_name, base) in bases() {
        let mut ptrs = Vec::new();
        pointers(&base, String::new(), &mut ptrs);
        for ptr in &ptrs {
            let removed = with(&base, |v| {
                let (parent, last) = ptr.rsplit_once('/').unwrap();
                let last = last.replace("~1", "/").replace("~0", "~");
                match at(v, parent) {
                    Value::Object(m) => {
                        m.remove(&last);
                    }
                    Value::Array(a) => {
                        a.remove(last.parse::<usize>().unwrap());
                    }
                    _ => unreachable!(),
                }
            });
            run_case(&format!("{base_name}: {ptr} removed"), removed, Want::Valid).await;
            for (label, value) in &replacements {
                let body = set(&base, ptr, value.clone());
                run_case(&format!("{base_name}: {ptr} = {label}"), body, Want::Valid).await;
                count += 2;
            }
        }
    }
    assert!(count > 1000, "only {count} cases");
}

#[tokio::test]
async fn proxy_config_yaml_bombs_tags_and_anchors() {
    let base = pod();
    let proxy = "/request/object/metadata/annotations/proxy.istio.io~1config";
    // "Billion laughs": nine levels of ten aliases each, 10^9 strings if expanded.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let (prev, next) = (w[0], w[1]);
        bomb.push_str(&format!(
            "{next}: &{next} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    bomb.push_str("proxyMetadata: {X: *i}\n");
    let merge_bomb = format!("{bomb}base: &base {{k: *i}}\nproxyMetadata:\n  <<: *base\n");
    let cases: Vec<(&str, String, Want)> = vec![
        ("billion laughs", bomb.clone(), Want::Patched("")),
        (
            "billion laughs through a merge key",
            merge_bomb,
            Want::Patched(""),
        ),
        (
            "billion laughs as the whole config",
            format!("{bomb}x: *i\n"),
            Want::Patched(""),
        ),
        (
            "anchors and aliases to a map",
            "base: &m {DD_A: x}\nproxyMetadata: *m\n".into(),
            Want::Patched(""),
        ),
        (
            "alias to an undefined anchor",
            "proxyMetadata: *nope\n".into(),
            Want::Patched("cannot be read"),
        ),
        ("recursive alias", "a: &a [*a]\n".into(), Want::Patched("")),
        (
            "tags: !!binary",
            "proxyMetadata: !!binary aGVsbG8=\n".into(),
            Want::Patched(""),
        ),
        (
            "tags: !!str and !!int",
            "proxyMetadata: {A: !!str 1, B: !!int \"2\"}\nconcurrency: !!int 2\n".into(),
            Want::Patched(""),
        ),
        (
            "tags: custom local tag",
            "proxyMetadata: !custom {A: b}\n".into(),
            Want::Patched(""),
        ),
        (
            "tags: !!set and !!omap",
            "s: !!set {a, b}\no: !!omap [a: 1]\n".into(),
            Want::Patched(""),
        ),
        (
            "tags: verbatim",
            "proxyMetadata: !<tag:yaml.org,2002:map> {A: b}\n".into(),
            Want::Patched(""),
        ),
        (
            "directive and documents",
            "%YAML 1.2\n---\nproxyMetadata: {}\n...\n---\nx: 1\n".into(),
            Want::Patched(""),
        ),
        (
            "duplicate keys",
            "proxyMetadata: {A: 1}\nproxyMetadata: {B: 2}\n".into(),
            Want::Patched(""),
        ),
        ("complex key", "? [a, b]\n: c\n".into(), Want::Patched("")),
        (
            "tab indentation",
            "proxyMetadata:\n\tA: b\n".into(),
            Want::Patched(""),
        ),
        (
            "unterminated flow",
            "proxyMetadata: {A: [b\n".into(),
            Want::Patched("cannot be read"),
        ),
        (
            "invalid escape",
            "x: \"\\q\"\n".into(),
            Want::Patched("cannot be read"),
        ),
        ("NUL in YAML", "x: a\u{0}b\n".into(), Want::Patched("")),
        (
            "BOM in YAML",
            "\u{feff}proxyMetadata: {}\n".into(),
            Want::Patched(""),
        ),
        (
            "huge YAML, 100,000 keys",
            (0..100_000).map(|i| format!("k{i}: v{i}\n")).collect(),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "large YAML under 256 KiB, 15,000 keys",
            (0..15_000).map(|i| format!("k{i}: v{i}\n")).collect(),
            Want::Patched(""),
        ),
        (
            "huge YAML, 100,000 proxyMetadata entries",
            format!(
                "proxyMetadata:\n{}",
                (0..100_000)
                    .map(|i| format!("  K{i}: v\n"))
                    .collect::<String>()
            ),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "large YAML under 256 KiB, 20,000 proxyMetadata entries",
            format!(
                "proxyMetadata:\n{}",
                (0..20_000)
                    .map(|i| format!("  K{i}: v\n"))
                    .collect::<String>()
            ),
            Want::Patched(""),
        ),
        (
            "huge YAML, one 2 MB scalar",
            format!("x: {}\n", "y".repeat(2 * MIB)),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "100,000 anchors",
            (0..100_000).map(|i| format!("k{i}: &a{i} v\n")).collect(),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "15,000 anchors",
            (0..15_000).map(|i| format!("k{i}: &a{i} v\n")).collect(),
            Want::Patched(""),
        ),
        (
            "100,000 aliases to one anchor",
            format!("a: &a v\nl: [{}]\n", vec!["*a"; 100_000].join(",")),
            Want::Patched("over the 256 KiB Kubernetes allows"),
        ),
        (
            "60,000 aliases to one anchor",
            format!("a: &a v\nl: [{}]\n", vec!["*a"; 60_000].join(",")),
            Want::Patched(""),
        ),
        (
            "JSON with duplicate keys",
            r#"{"proxyMetadata": {"A": "1"}, "proxyMetadata": {"B": "2"}}"#.into(),
            Want::Patched(""),
        ),
        (
            "JSON with a lone surrogate",
            r#"{"proxyMetadata": {"A": "\ud800"}}"#.into(),
            Want::Patched(""),
        ),
    ];
    for (name, yaml, want) in cases {
        let started = Instant::now();
        run_case(
            &format!("proxy.istio.io/config: {name}"),
            set(&base, proxy, json!(yaml)),
            want,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "proxy.istio.io/config: {name}: took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn objects_that_are_not_objects_are_refused_for_every_handled_kind() {
    for (base_name, base) in [
        ("pod CREATE", pod()),
        ("service UPDATE", service()),
        ("cronjob CREATE", cronjob()),
    ] {
        for (what, value, reason) in [
            ("null", Value::Null, "request.object is null"),
            (
                "an array",
                json!([{"metadata": {}}]),
                "request.object is a list",
            ),
            (
                "a string",
                json!("{\"metadata\": {}}"),
                "request.object is a string",
            ),
            ("a number", json!(0), "request.object is a scalar"),
            ("a bool", json!(false), "request.object is a scalar"),
        ] {
            let name = format!("{base_name}: object {what}");
            run_case(
                &name,
                set(&base, "/request/object", value),
                Want::Refused(400, reason),
            )
            .await;
        }
        let name = format!("{base_name}: object missing");
        let body = with(&base, |v| {
            v["request"].as_object_mut().unwrap().remove("object");
        });
        run_case(&name, body, Want::Refused(400, "request.object is missing")).await;
        // Kinds and operations the rules do not handle are admitted without reading it.
        let body = with(&base, |v| {
            v["request"]["operation"] = json!("DELETE");
            v["request"]["object"] = json!("whatever");
        });
        run_case(
            &format!("{base_name}: DELETE with a string object"),
            body,
            Want::Unchanged(""),
        )
        .await;
    }
}

#[tokio::test]
async fn missing_parents_at_every_level() {
    // (base, the chain of fields a rule walks down to what it changes)
    let chains: [(&str, Value, &[&str]); 9] = [
        (
            "meshed pod: annotation",
            pod(),
            &["metadata", "annotations", "apm.datadoghq.com/env"],
        ),
        (
            "meshed pod: sidecar env",
            pod(),
            &["spec", "containers", "1", "env"],
        ),
        ("agent pod: labels", agent_pod(), &["metadata", "labels"]),
        (
            "agent pod: annotations",
            agent_pod(),
            &["metadata", "annotations"],
        ),
        (
            "agent pod: image",
            agent_pod(),
            &["spec", "containers", "0", "image"],
        ),
        ("service: port", service(), &["spec", "ports", "1", "name"]),
        (
            "cronjob: pod template labels",
            cronjob(),
            &["spec", "jobTemplate", "spec", "template", "metadata"],
        ),
        ("cronjob: name", cronjob(), &["metadata", "name"]),
        (
            "labelled cronjob",
            with(&cronjob(), |v| {
                v["request"]["object"]["metadata"]["labels"] = json!({"app": "report"});
                v["request"]["object"]["spec"]["jobTemplate"]["metadata"] = json!({"labels": {}});
                v["request"]["object"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"] =
                    json!({"labels": {"x": "y"}});
            })
            .pipe(|b| serde_json::from_slice(&b).unwrap()),
            &[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "metadata",
                "labels",
                "x",
            ],
        ),
    ];
    for (what, base, chain) in chains {
        for depth in 0..chain.len() {
            let parent = format!(
                "/request/object{}",
                chain[..depth]
                    .iter()
                    .map(|f| format!("/{}", f.replace('/', "~1")))
                    .collect::<String>()
            );
            let field = chain[depth];
            // The field removed, and set to null, at this level.
            let removed = with(&base, |v| match at(v, &parent) {
                Value::Object(m) => {
                    m.remove(field);
                }
                Value::Array(a) => {
                    a.truncate(field.parse().unwrap());
                }
                _ => {}
            });
            run_case(
                &format!("{what}: no {field} under {parent}"),
                removed,
                Want::Admitted,
            )
            .await;
            let nulled = set(
                &base,
                &format!("{parent}/{}", field.replace('/', "~1")),
                Value::Null,
            );
            run_case(
                &format!("{what}: {field} null under {parent}"),
                nulled,
                Want::Admitted,
            )
            .await;
        }
    }
    // The bare minimum of each kind.
    for (name, base, want) in [
        ("empty pod", pod(), Want::Unchanged("")),
        ("empty service", service(), Want::Unchanged("")),
        ("empty cronjob", cronjob(), Want::Unchanged("")),
    ] {
        run_case(name, set(&base, "/request/object", json!({})), want).await;
    }
    // An agent found by image only, with no metadata at all: every parent is created.
    let bare_agent = set(
        &agent_pod(),
        "/request/object",
        json!({"spec": {"containers": [{"name": "a", "image": "datadog/agent:7"}]}}),
    );
    run_case("agent pod without metadata", bare_agent, Want::Patched("")).await;
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[tokio::test]
async fn duplicate_keys() {
    let base = pod();
    let review = String::from_utf8(pod_review()).unwrap();
    let env = "/request/object/metadata/annotations/apm.datadoghq.com~1env";
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "two apiVersions, the same",
            review.replacen("{", "{\"apiVersion\": \"admission.k8s.io/v1\",", 1).into_bytes(),
            Want::Patched(""),
        ),
        (
            "two kinds, the same",
            review.replacen("{", "{\"kind\": \"AdmissionReview\",", 1).into_bytes(),
            Want::Patched(""),
        ),
        (
            "two uids, the same",
            review.replacen("\"uid\":", "\"uid\": \"0c9a8d74-9cb7-44dd-b98e-09fd62def2f4\", \"uid\":", 1).into_bytes(),
            Want::Patched(""),
        ),
        (
            "two operations, the same",
            review.replacen("\"operation\":", "\"operation\": \"CREATE\", \"operation\":", 1).into_bytes(),
            Want::Patched(""),
        ),
        (
            "two objects, the same",
            {
                let obj = serde_json::to_string(&base["request"]["object"]).unwrap();
                review.replacen("\"object\":", &format!("\"object\": {obj}, \"object\":"), 1).into_bytes()
            },
            Want::Patched(""),
        ),
        (
            "a duplicate label in metadata.labels",
            splice(&base, "/request/object/metadata/labels", br#"{"app": "web", "app": "web"}"#),
            Want::Patched(""),
        ),
        (
            "a duplicate variable in the annotation JSON",
            set(&base, env, json!(r#"{"DD_ENV": "dev", "DD_ENV": "prod"}"#)),
            Want::Patched(""),
        ),
        (
            "a duplicate annotation",
            splice(
                &base,
                "/request/object/metadata/annotations",
                br#"{"apm.datadoghq.com/env": "{\"DD_ENV\": \"prod\"}", "apm.datadoghq.com/env": "{\"DD_ENV\": \"prod\"}"}"#,
            ),
            Want::Patched(""),
        ),
        (
            "a duplicate env entry name in the sidecar",
            set(&base, "/request/object/spec/containers/1/env", json!([{"name": "DD_ENV", "value": "a"}, {"name": "DD_ENV", "value": "b"}])),
            Want::Patched(""),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

/// Duplicate keys with different values: the server reads the first, serde_json (and Go's
/// encoding/json, the apiserver's) the last. The apiserver never sends such a body, but
/// the answer must still be a patch that applies to the object as JSON parsers read it.
#[tokio::test]
async fn duplicate_keys_with_different_values() {
    let base = pod();
    let review = String::from_utf8(pod_review()).unwrap();
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "metadata: a map, then a string",
            splice(&base, "/request/object/metadata", br#"{"annotations": {"apm.datadoghq.com/env": "{\"DD_ENV\":\"x\"}"}}, "metadata": "m""#),
            Want::Valid,
        ),
        (
            "annotations: a map, then a list",
            splice(&base, "/request/object/metadata/annotations", br#"{"apm.datadoghq.com/env": "{\"DD_ENV\":\"x\"}"}, "annotations": []"#),
            Want::Valid,
        ),
        (
            "containers: with the sidecar, then empty",
            splice(&base, "/request/object/spec/containers", br#"[{"name": "istio-proxy"}], "containers": []"#),
            Want::Valid,
        ),
        (
            "env: a list, then a string",
            splice(&base, "/request/object/spec/containers/1/env", br#"[], "env": "x""#),
            Want::Valid,
        ),
        (
            "two uids, different",
            review.replacen("\"uid\":", "\"uid\": \"first\", \"uid\":", 1).into_bytes(),
            Want::Valid,
        ),
        (
            "two objects: an agent pod, then null",
            review
                .replacen(
                    "\"object\":",
                    "\"object\": {\"metadata\": {\"labels\": {\"app\": \"datadog-agent\"}}}, \"object\": null, \"ignored\":",
                    1,
                )
                .into_bytes(),
            Want::Valid,
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

// ---------------------------------------------------------------------------------
// Over the wire: bodies over the limit, fast and slow; a flood of idle connections.
// ---------------------------------------------------------------------------------

/// Writes `head`, then `body_chunks` with `pause` between them, over HTTP/1.1 and TLS,
/// until the server answers; the status line and how long it took. A write error after
/// the answer (the server closed the connection) is expected and ignored.
async fn raw_http1(
    addr: SocketAddr,
    certs: &TestCerts,
    head: String,
    body_chunks: impl Iterator<Item = Vec<u8>>,
    pause: Duration,
) -> (String, Duration) {
    let tls = tls_connect(addr, certs.ca_der(), &[b"http/1.1"]).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        (
            String::from_utf8_lossy(&got)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
            started.elapsed(),
        )
    });
    let writer = async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body_chunks {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if wr.write_all(&chunk).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        got = reader => got.unwrap(),
        () = async { writer.await; std::future::pending::<()>().await } => unreachable!(),
    }
}

#[tokio::test]
async fn bodies_far_over_the_limit_fast_and_slow_are_refused_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let (server, certs) = serving(dir.path(), &["--header-timeout", "1s"]).await;
    let head = |extra: &str| {
        format!(
            "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{extra}\r\n"
        )
    };
    let mib = |n: usize| (0..n).map(|_| vec![b' '; MIB]);
    let chunked = |n: usize| {
        (0..n).map(|_| {
            let mut c = format!("{:x}\r\n", MIB).into_bytes();
            c.extend(std::iter::repeat_n(b' ', MIB));
            c.extend_from_slice(b"\r\n");
            c
        })
    };

    // 1 GiB announced, sent fast: refused on the announcement.
    let (status, took) = raw_http1(
        server.addr,
        &certs,
        head("content-length: 1073741824\r\n"),
        mib(1024),
        Duration::ZERO,
    )
    .await;
    assert!(
        status.contains(" 413 "),
        "1 GiB announced, fast: {status:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "1 GiB announced, fast: {took:?}"
    );

    // 1 GiB announced, sent slowly (1 MiB every 200 ms): refused before the body.
    let (status, _) = raw_http1(
        server.addr,
        &certs,
        head("content-length: 1073741824\r\n"),
        mib(1024),
        Duration::from_millis(200),
    )
    .await;
    assert!(
        status.contains(" 413 "),
        "1 GiB announced, slow: {status:?}"
    );

    // Chunked, no length announced, 64 MiB sent fast: refused once 7 MiB have come.
    let (status, took) = raw_http1(
        server.addr,
        &certs,
        head("transfer-encoding: chunked\r\n"),
        chunked(64),
        Duration::ZERO,
    )
    .await;
    assert!(status.contains(" 413 "), "64 MiB chunked, fast: {status:?}");
    assert!(
        took < Duration::from_secs(5),
        "64 MiB chunked, fast: {took:?}"
    );

    // Chunked, sent slowly: cut off by the body timeout (the header timeout, 1 s).
    let (status, took) = raw_http1(
        server.addr,
        &certs,
        head("transfer-encoding: chunked\r\n"),
        chunked(64),
        Duration::from_millis(400),
    )
    .await;
    assert!(status.contains(" 408 "), "64 MiB chunked, slow: {status:?}");
    assert!(
        took < Duration::from_secs(5),
        "64 MiB chunked, slow: {took:?}"
    );

    // A small body that never finishes arriving: the same.
    let (status, _) = raw_http1(
        server.addr,
        &certs,
        head("content-length: 1000\r\n"),
        (0..1000).map(|_| vec![b' ']),
        Duration::from_millis(100),
    )
    .await;
    assert!(status.contains(" 408 "), "slow small body: {status:?}");

    // HTTP/2: 16 MiB in one request.
    let mut h2 = Client::connect(server.addr, certs.ca_der(), true).await;
    let (status, body) = h2.send("POST", "/mutate", vec![b' '; 16 * MIB]).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));

    // And the server still serves.
    let (status, _) = h2.send("POST", "/mutate", pod_review()).await;
    assert_eq!(status, 200);
    server.shutdown.cancel();
    server.done.await.unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The `tracepatch` binary on ephemeral ports; its admission address once it listens.
fn spawn_binary(certs: &TestCerts, extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracepatch"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ])
        .args(["--tls-cert", certs.cert.to_str().unwrap()])
        .args(["--tls-key", certs.key.to_str().unwrap()])
        .args(["--log-format", "json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The start-up log line names the address it listens on.
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(a) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
            break a;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// 2,000 TLS connections that finish the handshake and then say nothing, against
/// `--max-connections 256`: memory stays bounded by the limit (idle connections are
/// closed to make room for new ones), and a new client is still served.
#[tokio::test]
async fn a_flood_of_idle_connections_is_bounded_in_memory_and_does_not_stop_service() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path(), "serving");
    let (mut child, addr) = spawn_binary(&certs, &["--max-connections", "256"]);
    let pid = child.id();
    // Warm up: a few requests, so that the baseline includes the worker buffers.
    let mut client = Client::connect(addr, certs.ca_der(), true).await;
    for _ in 0..10 {
        assert_eq!(client.send("POST", "/mutate", pod_review()).await.0, 200);
    }
    drop(client);
    let before = rss_kib(pid);
    let mut idle = Vec::new();
    let mut peak = before;
    for i in 0..2000 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tls_connect(addr, certs.ca_der(), &[b"h2"]),
        )
        .await
        {
            Ok(conn) => idle.push(conn),
            Err(_) => panic!("connection {i} not accepted within 5 s"),
        }
        if i % 100 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    assert_eq!(served_within_5s(addr, certs.ca_der()).await, 200);
    peak = peak.max(rss_kib(pid));
    eprintln!("RSS {before} KiB before the flood, {peak} KiB at its peak");
    // Measured here: +3 MiB with the limit at 256; +21 MiB with it at 4,096 (all 2,000
    // kept open). The bound sits between.
    assert!(
        peak - before < 10 * 1024,
        "RSS grew from {before} KiB to {peak} KiB under 2,000 idle connections"
    );
    drop(idle);
    child.kill().unwrap();
    child.wait().unwrap();
}
