//! Golden tests: `tests/fixtures/<rule>/<case>/` holds an input (`input.yaml` or
//! `input.json`), an optional `config.yaml`, and the expected `patch.json` (one patch
//! per document, as `tracepatch mutate --patch` prints), `output.yaml` (as
//! `tracepatch mutate` prints) and `warnings.txt` (as printed to stderr).
//!
//! Every case also checks that the expected patch applies to the input and gives the
//! expected output, and that the rules on that output change nothing (idempotence).
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected files; review the
//! diff before committing it.

use std::path::{Path, PathBuf};

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

fn check(case: &Path, file: &str, actual: &str, failures: &mut Vec<String>) {
    let path = case.join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing {}", path.display()));
    if expected != actual {
        failures.push(format!(
            "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ));
    }
}

#[test]
fn golden_fixtures() {
    let cases = cases();
    assert!(cases.len() >= 30, "fixtures missing: found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let engine = engine_for(case);
        let input = input_of(case);
        let patch = mutate::run(&engine, &input, Output::Patch)
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let yaml = mutate::run(&engine, &input, Output::Yaml).unwrap();
        let warnings: String = yaml.warnings.iter().map(|w| format!("{w}\n")).collect();
        check(case, "patch.json", &patch.stdout, &mut failures);
        check(case, "output.yaml", &yaml.stdout, &mut failures);
        check(case, "warnings.txt", &warnings, &mut failures);

        // The expected patch applies to the input and gives the expected output.
        let docs = mutate::parse_documents(&input).unwrap();
        let patches: Vec<json_patch::Patch> = patch
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), patches.len(), "{}", case.display());
        let expected_out = mutate::parse_documents(yaml.stdout.as_bytes()).unwrap();
        let is_review = docs.iter().any(|d| d["kind"] == "AdmissionReview");
        if !is_review {
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
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_case_changes_or_warns_as_its_name_says() {
    // A fixture whose expected patch is empty must be a case meant to change nothing;
    // this guards against regenerating goldens over a regression that silently
    // disables a rule.
    let unchanged = [
        "agent-sidecar/inject-annotation-false",
        "agent-sidecar/inject-annotation-true",
        "agent-sidecar/inject-label-true",
        "agent-sidecar/not-an-agent",
        "agent-sidecar/opted-out",
        "cronjob-app/generate-name",
        "cronjob-app/template-has-app",
        "trace-port/existing-app-protocol",
        "trace-port/name-conflict",
        "trace-port/pods-untouched-by-default",
        "tracer-env/invalid-json",
        "tracer-env/no-metadata-maps",
    ];
    for case in cases() {
        let name = format!(
            "{}/{}",
            case.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            case.file_name().unwrap().to_str().unwrap()
        );
        let patch = std::fs::read_to_string(case.join("patch.json")).unwrap();
        let empty = patch
            .lines()
            .all(|l| l == "[]" || l.contains("\"response\""));
        let review = case.join("input.json").exists();
        if review {
            let v: Value = serde_json::from_str(patch.lines().next().unwrap()).unwrap();
            assert!(
                v.as_array().is_some_and(|a| !a.is_empty()),
                "{name}: review should be patched"
            );
            continue;
        }
        assert_eq!(
            empty,
            unchanged.contains(&name.as_str()),
            "{name}: patch.json is {patch}"
        );
    }
}
