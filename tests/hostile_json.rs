//! Hostile input (issue 6), as JSON: reviews cut at every byte, syntax errors, encodings
//! and bytes JSON does not allow, 100,000-deep nesting (valid and not), and duplicate
//! keys with the same and with different values. Each case through the router without
//! a socket, checked against the invariants of `support::hostile` and its own answer.

mod support;

use serde_json::json;
use support::hostile::*;
use support::pod_review;

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
            Want::RefusedWith(
                400,
                "invalid AdmissionReview: not valid JSON: InvalidNumber at character 6 ('1')",
            ),
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
            // A number out of f64's range inside a review the apiserver could not have
            // stored (Go's encoding/json refuses it too).
            "a number out of range in an unread field of the review",
            review
                .replacen("\"shop/web:1.4.2\"", "1e400", 1)
                .into_bytes(),
            Want::RefusedWith(
                400,
                "invalid AdmissionReview: not valid JSON: InvalidNumber at character 976 ('1')",
            ),
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
    // `{"a":{"a":…0}}`: valid JSON. `{"a":{"a":…}}` with no innermost value: not JSON.
    let objects = format!("{}0{}", r#"{"a":"#.repeat(DEPTH), "}".repeat(DEPTH));
    let no_value = format!("{}{}", r#"{"a":"#.repeat(DEPTH), "}".repeat(DEPTH));
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
            Want::RefusedWith(
                400,
                "invalid AdmissionReview: expected a JSON object, found a list",
            ),
        ),
        (
            "100,000 nested objects as the body".into(),
            objects.clone().into_bytes(),
            Want::RefusedWith(
                400,
                "unsupported apiVersion \"\": only admission.k8s.io/v1 is served",
            ),
        ),
        (
            "100,000 nested objects with no innermost value as the body".into(),
            no_value.clone().into_bytes(),
            Want::RefusedWith(
                400,
                "invalid AdmissionReview: not valid JSON: expected value at line 1 column 500001",
            ),
        ),
        (
            "100,000 [ unclosed as request.object".into(),
            splice(&base, "/request/object", open.as_bytes()),
            Want::Refused(400, "not valid JSON"),
        ),
        (
            "100,000 [ closed as request.object".into(),
            splice(&base, "/request/object", closed.as_bytes()),
            Want::RefusedWith(400, "request.object is a list, expected a JSON object"),
        ),
        (
            "100,000 nested objects as request.object".into(),
            splice(&base, "/request/object", objects.as_bytes()),
            Want::AdmittedWith {
                ops: 0,
                warnings: &[],
            },
        ),
        (
            "100,000 nested objects with no innermost value as request.object".into(),
            splice(&base, "/request/object", no_value.as_bytes()),
            Want::RefusedWith(
                400,
                "invalid AdmissionReview: not valid JSON: expected value at line 1 column 500178",
            ),
        ),
        (
            "100,000 [ closed in an unread field of the object".into(),
            splice(
                &base,
                "/request/object/spec/containers/0/image",
                closed.as_bytes(),
            ),
            Want::AdmittedWith {
                ops: 3,
                warnings: &[],
            },
        ),
        (
            "100,000 nested objects as metadata.labels".into(),
            splice(
                &agent_pod(),
                "/request/object/metadata/labels",
                objects.as_bytes(),
            ),
            Want::AdmittedWith {
                ops: 3,
                warnings: &[],
            },
        ),
        (
            "100,000 nested objects with no innermost value as metadata.labels".into(),
            splice(
                &agent_pod(),
                "/request/object/metadata/labels",
                no_value.as_bytes(),
            ),
            Want::RefusedWith(
                400,
                "invalid AdmissionReview: not valid JSON: expected value at line 1 column 500241",
            ),
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
            Want::AdmittedWith {
                ops: 3,
                warnings: &[],
            },
        ),
        (
            "100,000 nested objects as the annotation JSON".into(),
            set(
                &base,
                "/request/object/metadata/annotations/apm.datadoghq.com~1env",
                json!(format!(r#"{{"DD_ENV": {objects}}}"#)),
            ),
            Want::AdmittedWith {
                ops: 0,
                warnings: &[
                    "tracepatch tracer-env: annotation apm.datadoghq.com/env: 600013 bytes, over the 256 KiB Kubernetes allows for all of an object's annotations; no variables set",
                ],
            },
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
            Want::AdmittedWith {
                ops: 0,
                warnings: &[],
            },
        ),
        (
            "annotations: a map, then a list",
            splice(&base, "/request/object/metadata/annotations", br#"{"apm.datadoghq.com/env": "{\"DD_ENV\":\"x\"}"}, "annotations": []"#),
            Want::AdmittedWith {
                ops: 0,
                warnings: &[],
            },
        ),
        (
            "containers: with the sidecar, then empty",
            splice(&base, "/request/object/spec/containers", br#"[{"name": "istio-proxy"}], "containers": []"#),
            Want::AdmittedWith {
                ops: 1,
                warnings: &[],
            },
        ),
        (
            "env: a list, then a string",
            splice(&base, "/request/object/spec/containers/1/env", br#"[], "env": "x""#),
            Want::AdmittedWith {
                ops: 1,
                warnings: &["tracepatch tracer-env: container istio-proxy: env is not a list; left alone"],
            },
        ),
        (
            "two uids, different",
            review.replacen("\"uid\":", "\"uid\": \"first\", \"uid\":", 1).into_bytes(),
            Want::AdmittedWith {
                ops: 3,
                warnings: &[],
            },
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
            Want::RefusedWith(400, "request.object is null, expected a JSON object"),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}
