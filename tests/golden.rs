//! Golden tests: `tests/fixtures/<rule>/<case>/` holds an input (`input.yaml` or
//! `input.json`), an optional `config.yaml`, and the expected `patch.json` (one patch
//! per document, as `tracepatch mutate --patch` prints), `output.yaml` (as
//! `tracepatch mutate` prints) and `warnings.txt` (as printed to stderr).
//!
//! Every case also checks that the expected patch applies to the input and gives the
//! expected output, and that the rules on that output change nothing (idempotence). A
//! saved AdmissionReview gets the same checks on its `request.object`: the response's
//! patch applies to it, gives what `tracepatch mutate` gives for the object alone, and a
//! second review of the patched object (the apiserver's reinvocation) gets no patch.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected files and then fails,
//! naming the files it rewrote, so that such a run is never taken for a passing one;
//! review the diff, commit it, and run again without `UPDATE_GOLDEN`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;
use tracepatch::config::Config;
use tracepatch::engine::Engine;
use tracepatch::mutate::{self, Output};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases = Vec::new();
    for rule in std::fs::read_dir(&root).unwrap() {
        let rule = rule.unwrap().path();
        if !rule.is_dir() {
            continue;
        }
        for case in std::fs::read_dir(&rule).unwrap() {
            let case = case.unwrap().path();
            if case.is_dir() {
                cases.push(case);
            }
        }
    }
    cases.sort();
    cases
}

/// `<rule>/<case>`.
fn case_name(case: &Path) -> String {
    let part = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
    format!("{}/{}", part(case.parent().unwrap()), part(case))
}

fn input_of(case: &Path) -> Vec<u8> {
    for name in ["input.yaml", "input.json"] {
        if let Ok(bytes) = std::fs::read(case.join(name)) {
            return bytes;
        }
    }
    panic!("{}: no input.yaml or input.json", case.display());
}

fn engine_for(case: &Path) -> Engine {
    let path = case.join("config.yaml");
    Engine::new(if path.exists() {
        Config::load(&path).unwrap()
    } else {
        Config::default()
    })
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// The comparisons of one run: mismatches, and under `UPDATE_GOLDEN` the files rewritten.
#[derive(Default)]
struct Golden {
    failures: Vec<String>,
    rewritten: Vec<String>,
}

impl Golden {
    /// Compares `actual` with the expected file; with `UPDATE_GOLDEN`, writes it instead
    /// (when it differs) and records that it did.
    fn check(&mut self, case: &Path, file: &str, actual: &str) {
        let path = case.join(file);
        let expected = std::fs::read_to_string(&path).ok();
        if updating() {
            if expected.as_deref() != Some(actual) {
                std::fs::write(&path, actual).unwrap();
                self.rewritten.push(path.display().to_string());
            }
            return;
        }
        let expected = expected.unwrap_or_else(|| panic!("missing {}", path.display()));
        if expected != actual {
            self.failures.push(format!(
                "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                path.display()
            ));
        }
    }
}

#[test]
fn golden_fixtures() {
    let cases = cases();
    assert!(cases.len() >= 30, "fixtures missing: found {}", cases.len());
    let mut golden = Golden::default();
    for case in &cases {
        let engine = engine_for(case);
        let input = input_of(case);
        let patch = mutate::run(&engine, &input, Output::Patch)
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let yaml = mutate::run(&engine, &input, Output::Yaml).unwrap();
        let warnings: String = yaml.warnings.iter().map(|w| format!("{w}\n")).collect();
        golden.check(case, "patch.json", &patch.stdout);
        golden.check(case, "output.yaml", &yaml.stdout);
        golden.check(case, "warnings.txt", &warnings);

        // The expected patch applies to the input and gives the expected output.
        let docs = mutate::parse_documents(&input).unwrap();
        let patches: Vec<json_patch::Patch> = patch
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), patches.len(), "{}", case.display());
        let expected_out = mutate::parse_documents(yaml.stdout.as_bytes()).unwrap();
        if docs.iter().any(|d| d["kind"] == "AdmissionReview") {
            check_review(case, &engine, &docs, &patches, &expected_out);
            continue;
        }
        for (i, (mut doc, p)) in docs.into_iter().zip(&patches).enumerate() {
            json_patch::patch(&mut doc, p).unwrap_or_else(|e| {
                panic!(
                    "{} document {}: patch does not apply: {e}",
                    case.display(),
                    i + 1
                )
            });
            assert_eq!(
                doc,
                expected_out[i],
                "{} document {}",
                case.display(),
                i + 1
            );
        }
        // Idempotent: the rules on their own output change nothing.
        let again = mutate::run(&engine, yaml.stdout.as_bytes(), Output::Patch).unwrap();
        assert!(
            again.stdout.lines().all(|l| l == "[]"),
            "{}: not idempotent, second run patch: {}",
            case.display(),
            again.stdout
        );
    }
    assert!(
        !updating(),
        "UPDATE_GOLDEN is set: rewrote {} file(s){}; nothing was compared with the \
         expected files. Review the diff, commit it, and run again without UPDATE_GOLDEN.",
        golden.rewritten.len(),
        if golden.rewritten.is_empty() {
            " (every expected file already matched)".to_owned()
        } else {
            format!(":\n  {}", golden.rewritten.join("\n  "))
        }
    );
    assert!(
        golden.failures.is_empty(),
        "{} golden mismatches:\n{}",
        golden.failures.len(),
        golden.failures.join("\n")
    );
}

/// A saved AdmissionReview: the response is the server's for this request, its patch is
/// the one in patch.json, applies to `request.object` and gives what `tracepatch mutate`
/// gives for that object; the apiserver calling again with the patched object gets no
/// patch.
fn check_review(
    case: &Path,
    engine: &Engine,
    docs: &[Value],
    patches: &[json_patch::Patch],
    responses: &[Value],
) {
    let name = case.display();
    assert_eq!(docs.len(), 1, "{name}: one review per fixture");
    let (review, patch, response) = (&docs[0], &patches[0], &responses[0]);
    let request = &review["request"];
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1", "{name}");
    assert_eq!(response["kind"], "AdmissionReview", "{name}");
    let answer = &response["response"];
    assert_eq!(answer["uid"], request["uid"], "{name}: the request's uid");
    assert_eq!(answer["allowed"], true, "{name}");

    // The response carries the same patch as patch.json, base64 as the API says.
    if patch.0.is_empty() {
        assert!(answer.get("patch").is_none(), "{name}: {answer}");
    } else {
        assert_eq!(answer["patchType"], "JSONPatch", "{name}");
        let sent = base64::engine::general_purpose::STANDARD
            .decode(answer["patch"].as_str().expect("a base64 string"))
            .unwrap_or_else(|e| panic!("{name}: patch not base64: {e}"));
        let sent: json_patch::Patch = serde_json::from_slice(&sent).unwrap();
        assert_eq!(&sent, patch, "{name}: the response's patch is patch.json's");
    }

    // The patch applies to the object and gives what `mutate` gives for the object alone.
    let mut object = request["object"].clone();
    json_patch::patch(&mut object, patch)
        .unwrap_or_else(|e| panic!("{name}: patch does not apply to request.object: {e}"));
    let alone = serde_json::to_vec(&request["object"]).unwrap();
    let offline = mutate::run(engine, &alone, Output::Json).unwrap();
    let offline: Value = serde_json::from_str(&offline.stdout).unwrap();
    assert_eq!(
        object, offline,
        "{name}: the review's patch and `mutate` on the object disagree"
    );

    // Idempotent: the apiserver's reinvocation with the patched object gets no patch.
    let mut again = review.clone();
    again["request"]["object"] = object;
    let again = serde_json::to_vec(&again).unwrap();
    let second = mutate::run(engine, &again, Output::Patch).unwrap();
    assert_eq!(
        second.stdout, "[]\n",
        "{name}: not idempotent, second review's patch: {}",
        second.stdout
    );
    let second = mutate::run(engine, &again, Output::Json).unwrap();
    let second: Value = serde_json::from_str(&second.stdout).unwrap();
    assert!(
        second["response"].get("patch").is_none() && second["response"]["allowed"] == true,
        "{name}: second review's response: {second}"
    );
}

/// What each case is for: whether it changes the object, and the warnings it must give
/// (one entry per line of warnings.txt, each a phrase that line contains). A new
/// fixture must be added here: its name is a promise this table makes checkable.
const CASES: &[Case] = &[
    changes("admission/pod-review", &[]),
    changes(
        "agent-sidecar/ambient-mode-set",
        &["istio.io/dataplane-mode=\"ambient\"; left as set"],
    ),
    changes("agent-sidecar/cluster-agent-deployment", &[]),
    changes("agent-sidecar/datadog-agent-daemonset", &[]),
    changes("agent-sidecar/helm-chart-labels", &[]),
    changes("agent-sidecar/image-only-no-metadata-maps", &[]),
    unchanged("agent-sidecar/inject-annotation-false", &[]),
    unchanged(
        "agent-sidecar/inject-annotation-true",
        &["sidecar.istio.io/inject=\"true\""],
    ),
    unchanged(
        "agent-sidecar/inject-label-true",
        &["sidecar.istio.io/inject=\"true\""],
    ),
    unchanged("agent-sidecar/not-an-agent", &[]),
    unchanged("agent-sidecar/opted-out", &[]),
    changes("cronjob-app/annotated-pod-template", &[]),
    changes("cronjob-app/cronjob-app-label", &[]),
    changes("cronjob-app/empty-app-label", &[]),
    unchanged("cronjob-app/generate-name", &["no name yet (generateName)"]),
    changes("cronjob-app/no-labels", &[]),
    changes("cronjob-app/template-app-kubernetes-io-name", &[]),
    unchanged("cronjob-app/template-has-app", &[]),
    changes("trace-port/datadog-agent-headless-service", &[]),
    unchanged(
        "trace-port/existing-app-protocol",
        &["appProtocol is \"http\"; left alone"],
    ),
    unchanged(
        "trace-port/name-conflict",
        &["already named \"tcp-traceport\""],
    ),
    changes("trace-port/name-mode", &[]),
    changes("trace-port/name-mode-rename-pod-ports", &[]),
    changes(
        "trace-port/name-mode-two-unnamed-ports",
        &["already named \"tcp\""],
    ),
    changes(
        "trace-port/pod-ports-renamed",
        &["15-character port name limit"],
    ),
    unchanged("trace-port/pods-untouched-by-default", &[]),
    changes("trace-port/unnamed-port-by-number", &[]),
    changes("tracer-env/before-injection", &[]),
    changes(
        "tracer-env/collisions",
        &["DD_FROM_SECRET is set from valueFrom; left alone"],
    ),
    changes("tracer-env/containers-all", &[]),
    changes("tracer-env/deployment-template", &[]),
    changes("tracer-env/existing-proxy-config", &[]),
    unchanged(
        "tracer-env/invalid-json",
        &["invalid JSON (trailing comma at line 1 column 21)"],
    ),
    changes(
        "tracer-env/invalid-names",
        &[
            "\"1BAD\" is not a valid environment variable name",
            "\"HAS SPACE\" is not a valid environment variable name",
            "\"A=B\" is not a valid environment variable name",
        ],
    ),
    changes("tracer-env/istio-injected-pod", &[]),
    changes(
        "tracer-env/malformed-proxy-config",
        &["proxy.istio.io/config: cannot be read"],
    ),
    changes("tracer-env/native-sidecar", &[]),
    unchanged("tracer-env/no-metadata-maps", &[]),
    changes("tracer-env/template-safety-after-injection", &[]),
    changes(
        "tracer-env/template-safety-before-injection",
        &[
            "DD_TRACE_SAMPLING_RULES: not written to proxyMetadata",
            "DD_TRACE_SPAN_TAGS: not written to proxyMetadata",
            "DD_QUOTE: not written to proxyMetadata",
            "DD_BACKSLASH: not written to proxyMetadata",
            "DD_NEWLINE: not written to proxyMetadata",
            "DD_TAB: not written to proxyMetadata",
        ],
    ),
    changes("tracer-env/template-safety-native-sidecar", &[]),
    changes("tracer-env/unified-service-tags", &[]),
    changes("tracer-env/value-types", &["DD_UNSET is null; skipped"]),
];

struct Case {
    name: &'static str,
    changes: bool,
    warns: &'static [&'static str],
}

const fn changes(name: &'static str, warns: &'static [&'static str]) -> Case {
    Case {
        name,
        changes: true,
        warns,
    }
}

const fn unchanged(name: &'static str, warns: &'static [&'static str]) -> Case {
    Case {
        name,
        changes: false,
        warns,
    }
}

#[test]
fn every_case_changes_or_warns_as_its_name_says() {
    // This reads the expected files, which golden_fixtures rewrites under UPDATE_GOLDEN.
    assert!(
        !updating(),
        "UPDATE_GOLDEN is set: golden_fixtures is rewriting the files this test reads; \
         run again without UPDATE_GOLDEN"
    );
    let cases = cases();
    let names: Vec<String> = cases.iter().map(|c| case_name(c)).collect();
    for c in CASES {
        assert!(
            names.iter().any(|n| n == c.name),
            "{}: in the table, but no such fixture",
            c.name
        );
    }
    for case in &cases {
        let name = case_name(case);
        let Some(Case { changes, warns, .. }) = CASES.iter().find(|c| c.name == name) else {
            panic!("{name}: a fixture missing from CASES (say what it changes and warns)");
        };
        let patch = std::fs::read_to_string(case.join("patch.json")).unwrap();
        let changed = patch.lines().any(|l| l != "[]");
        assert_eq!(changed, *changes, "{name}: patch.json is {patch}");

        // The warnings: as many lines as the case gives reasons, each the reason it
        // names, each from the case's rule, each saying which object.
        let warnings = std::fs::read_to_string(case.join("warnings.txt")).unwrap();
        let lines: Vec<&str> = warnings.lines().collect();
        assert_eq!(
            lines.len(),
            warns.len(),
            "{name}: warnings.txt is {warnings:?}, expected one line for each of {warns:?}"
        );
        let rule = name.split('/').next().unwrap();
        for (line, reason) in lines.iter().zip(warns.iter()) {
            assert!(
                line.contains(reason),
                "{name}: warning {line:?} does not say {reason:?}"
            );
            assert!(
                line.contains(&format!(": tracepatch {rule}: ")),
                "{name}: warning {line:?} is not from rule {rule}"
            );
            let (object, _) = line.split_once(": tracepatch ").unwrap();
            assert!(
                object.contains('/') && !object.is_empty(),
                "{name}: warning {line:?} does not name the object"
            );
        }
    }
}
