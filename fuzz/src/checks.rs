//! The invariants the fuzz targets check, shared with `tests/fuzz_regressions.rs`
//! (which includes this file with `#[path]`), so a saved input is replayed by the normal
//! `cargo test` against exactly what the fuzzer checked.
//!
//! Every check panics with a message naming the broken invariant; libFuzzer records the
//! input as a crash.

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::Value;
use tracepatch::Outcome;
use tracepatch::admission;
use tracepatch::config::Config;
use tracepatch::engine::{Engine, Kind};
use tracepatch::mutate::{self, Output};

/// The configurations an input is checked under, chosen by its first byte
/// ([`engine_for`]): the defaults, the opt-in and non-default modes, and the shipped
/// OpenTelemetry Collector profile.
pub const CONFIGS: [(&str, &str); 4] = [
    ("default", ""),
    (
        "name-mode-rename-pod-ports",
        "tracePort:\n  mode: name\n  renamePodPorts: true\n",
    ),
    ("containers-all", "tracerEnv:\n  containers: all\n"),
    (
        "otel-collector",
        include_str!("../../config/otel-collector.yaml"),
    ),
];

/// The engine for selector byte `b` (`b % 4` indexes [`CONFIGS`]).
pub fn engine_for(b: u8) -> &'static Engine {
    static ENGINES: OnceLock<Vec<Engine>> = OnceLock::new();
    let engines = ENGINES.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|(name, text)| {
                let config = Config::parse(text, Path::new(name))
                    .unwrap_or_else(|e| panic!("fuzz config {name} is invalid: {e}"));
                Engine::new(config)
            })
            .collect()
    });
    &engines[usize::from(b) % engines.len()]
}

/// Splits a fuzz input into its engine (first byte) and the rest.
pub fn split_input(data: &[u8]) -> Option<(&'static Engine, &[u8])> {
    let (&selector, rest) = data.split_first()?;
    Some((engine_for(selector), rest))
}

// === review ===

/// `admission::review` on `body`, and when it answers, everything the answer promises.
pub fn check_review(engine: &Engine, body: &[u8]) {
    let reviewed = match admission::review(engine, body) {
        Ok(r) => r,
        Err(e) => {
            assert_one_line(&e.to_string(), "review error (sent as the HTTP 400 reason)");
            return;
        }
    };
    // What the server's tape read: serde_json, which like the tape (src/json.rs) and
    // Go's decoder reads the last of duplicate keys.
    let doc: Value = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        // serde_json stops at 128 levels of nesting; the apiserver's decoder and the
        // tape go deeper, so a deep body is valid and only this reference cannot read
        // it (fuzz/regressions/review/nesting-200).
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => return,
        Err(e) => panic!("review accepted a body that serde_json refuses: {e}"),
    };
    let request = &doc["request"];
    assert_eq!(
        request["uid"].as_str(),
        Some(reviewed.uid.as_str()),
        "uid read from the request"
    );

    let response_bytes = reviewed.response_json();
    let resp: Value = serde_json::from_slice(&response_bytes).unwrap_or_else(|e| {
        panic!(
            "response is not JSON ({e}): {}",
            String::from_utf8_lossy(&response_bytes)
        )
    });
    assert_eq!(resp["apiVersion"], admission::API_VERSION);
    assert_eq!(resp["kind"], "AdmissionReview");
    let r = &resp["response"];
    assert_eq!(r["uid"], request["uid"], "response uid is the request's");
    assert_eq!(r["allowed"], true, "a tracing webhook never blocks");
    if let Some(warnings) = r.get("warnings") {
        let warnings = warnings.as_array().expect("warnings is a list");
        assert!(!warnings.is_empty(), "an empty warnings list is omitted");
        assert!(warnings.len() <= 20, "at most 20 warnings");
        for w in warnings {
            let w = w.as_str().expect("a warning is a string");
            assert!(
                !w.chars().any(char::is_control),
                "warning has a control character: {w:?}"
            );
            assert!(w.chars().count() <= 256, "warning too long: {w:?}");
        }
    }

    let patch = match r.get("patch") {
        Some(p) => {
            assert_eq!(r["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().expect("patch is a string"))
                .expect("patch is base64");
            let patch: json_patch::Patch =
                serde_json::from_slice(&bytes).expect("patch is an RFC 6902 patch");
            assert!(!patch.0.is_empty(), "an empty patch is omitted");
            assert!(
                !reviewed.outcome.applied.is_empty(),
                "a patch names its rules"
            );
            assert_eq!(
                r["auditAnnotations"]["applied-rules"],
                reviewed.outcome.applied.to_string()
            );
            patch
        }
        None => {
            assert!(r.get("patchType").is_none(), "patchType without a patch");
            assert!(r.get("auditAnnotations").is_none(), "rules named, no patch");
            json_patch::Patch(Vec::new())
        }
    };
    assert_eq!(
        patch.0, reviewed.outcome.patch,
        "the response carries the outcome's patch"
    );

    // The same rules on a serde_json::Value of the object (what `mutate`, the tests
    // and the idempotence check read) decide exactly what they decided on the tape.
    let kind = Kind::from_group_kind(&reviewed.kind.group, &reviewed.kind.kind);
    let subresource = request
        .get("subResource")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let object = request.get("object").filter(|o| o.is_object());
    let expected = match object {
        Some(o) if !subresource => engine.admit(kind, &reviewed.operation, o),
        _ => Outcome::default(),
    };
    assert_eq!(
        reviewed.outcome, expected,
        "the tape and serde_json::Value views disagree"
    );
    if patch.0.is_empty() {
        return;
    }

    // The patch applies to the object, and the rules on the result change nothing.
    let object = object.expect("a patch implies an object");
    let mut patched = object.clone();
    if let Err(e) = json_patch::patch(&mut patched, &patch) {
        panic!("patch does not apply: {e}\npatch: {patch:?}\nobject: {object}");
    }
    let again = engine.admit(kind, &reviewed.operation, &patched);
    assert!(
        again.patch.is_empty(),
        "not idempotent: second patch {:?}\npatched object: {patched}",
        again.patch
    );
    // And through the server path: the apiserver's reinvocation sends the patched object.
    let mut doc = doc;
    doc["request"]["object"] = patched;
    let body = serde_json::to_vec(&doc).expect("a Value serializes");
    let again = admission::review(engine, &body).expect("the reinvocation is a valid review");
    assert!(
        again.outcome.patch.is_empty(),
        "not idempotent on reinvocation: {:?}",
        again.outcome.patch
    );
}

// === mutate ===

/// `mutate::run` on `input` in every output format, and when it succeeds, everything
/// its output promises.
pub fn check_mutate(engine: &Engine, input: &[u8]) {
    let runs = (
        mutate::run(engine, input, Output::Patch),
        mutate::run(engine, input, Output::Yaml),
        mutate::run(engine, input, Output::Json),
    );
    let (as_patch, as_yaml, as_json) = match runs {
        (Ok(p), Ok(y), Ok(j)) => (p, y, j),
        (Err(a), Err(b), Err(c)) => {
            assert_eq!(a, b, "the output format changed the error");
            assert_eq!(a, c, "the output format changed the error");
            assert_one_line(&a.to_string(), "mutate error");
            return;
        }
        other => panic!("the output format changed the verdict: {other:?}"),
    };
    assert_eq!(as_patch.warnings, as_yaml.warnings);
    assert_eq!(as_patch.warnings, as_json.warnings);
    for w in &as_patch.warnings {
        assert_one_line(w, "mutate warning");
    }

    let docs = mutate::parse_documents(input).expect("run accepted what parse_documents refuses");
    let lines: Vec<&str> = as_patch.stdout.lines().collect();
    assert_eq!(lines.len(), docs.len(), "one patch per document");
    let mut expected = Vec::with_capacity(docs.len());
    let mut is_review = Vec::with_capacity(docs.len());
    for (doc, line) in docs.iter().zip(&lines) {
        let patch: json_patch::Patch = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("patch line is not a patch ({e}): {line}"));
        let review = doc.get("kind").and_then(Value::as_str) == Some("AdmissionReview");
        if review {
            let body = serde_json::to_vec(doc).expect("a Value serializes");
            let r = admission::review(engine, &body).expect("mutate answered a review");
            assert_eq!(patch.0, r.outcome.patch);
            // And everything the server promises about that answer.
            check_review(engine, &body);
            expected.push(r.response_value());
        } else {
            let mut patched = doc.clone();
            if let Err(e) = json_patch::patch(&mut patched, &patch) {
                panic!("patch does not apply: {e}\npatch: {line}\ndocument: {doc}");
            }
            expected.push(patched);
        }
        is_review.push(review);
    }

    // The YAML and JSON outputs read back to the patched documents.
    let back = mutate::parse_documents(as_yaml.stdout.as_bytes()).unwrap_or_else(|e| {
        panic!(
            "YAML output does not read back: {e}\n--- output:\n{}",
            as_yaml.stdout
        )
    });
    assert_eq!(
        back, expected,
        "YAML output reads back differently\n--- output:\n{}",
        as_yaml.stdout
    );
    let back: Vec<Value> = serde_json::Deserializer::from_str(&as_json.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("JSON output reads back");
    assert_eq!(back, expected, "JSON output reads back differently");

    // Idempotence: `mutate` on its own YAML output (the manifests, not the review
    // responses) gives an empty patch for every document.
    let chunks = yaml_documents(&as_yaml.stdout);
    assert_eq!(
        chunks.len(),
        docs.len(),
        "YAML output splits into its documents"
    );
    let manifests: Vec<&str> = chunks
        .iter()
        .zip(&is_review)
        .filter(|(_, review)| !**review)
        .map(|(c, _)| *c)
        .collect();
    if manifests.is_empty() {
        return;
    }
    let rerun = manifests.join("---\n");
    let again = mutate::run(engine, rerun.as_bytes(), Output::Patch).unwrap_or_else(|e| {
        panic!("mutate refuses its own output: {e}\n--- output:\n{rerun}");
    });
    let lines: Vec<&str> = again.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        manifests.len(),
        "one patch per re-read document"
    );
    for line in lines {
        assert_eq!(line, "[]", "not idempotent on its own output:\n{rerun}");
    }
}

/// The documents of `mutate`'s YAML output, which separates them with `---` lines.
fn yaml_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line == "---\n" {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    if start < text.len() || !docs.is_empty() {
        docs.push(&text[start..]);
    }
    docs
}

fn assert_one_line(s: &str, what: &str) {
    assert!(!s.contains(['\n', '\r']), "{what} is not one line: {s:?}");
}
