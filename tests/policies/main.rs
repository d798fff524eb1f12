//! The shipped MutatingAdmissionPolicies are `tracepatch policies`' output: the kustomize
//! component's file (manifests/policies/) and the Helm chart's copy
//! (manifests/helm/tracepatch/files/) must equal what the command prints for the default
//! configuration, or this test fails. `UPDATE_GOLDEN=1 cargo test --test policies`
//! rewrites both from the command; review the diff before committing it.
//!
//! Whether the policies do what the webhook does is checked on a real apiserver by
//! tests/policies/run.sh (this directory).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const COMPONENT_FILE: &str = "manifests/policies/mutatingadmissionpolicies.yaml";
const CHART_FILE: &str = "manifests/helm/tracepatch/files/mutatingadmissionpolicies.yaml";
const CHART_TEMPLATE: &str = "manifests/helm/tracepatch/templates/mutatingadmissionpolicies.yaml";
/// The line the chart's template replaces with the release's excluded namespaces.
const EXCLUDED_LINE: &str = r#"values: ["kube-system", "tracepatch"]"#;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tracepatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracepatch"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tracepatch: {e}"))
}

fn policies_output(args: &[&str]) -> String {
    let out = tracepatch(&[&["policies"], args].concat());
    assert!(
        out.status.success(),
        "tracepatch policies {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn shipped_files_are_the_commands_output() {
    let rendered = policies_output(&[]);
    // The command prints what the library renders.
    let library = tracepatch::policies::render(
        &tracepatch::config::Config::default(),
        &tracepatch::policies::Options::default(),
    )
    .expect("renders");
    assert_eq!(rendered, library.yaml);
    let mut drifted = Vec::new();
    for file in [COMPONENT_FILE, CHART_FILE] {
        let path = repo(file);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &rendered).expect("writes");
            continue;
        }
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        if shipped != rendered {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "{drifted:?} differ from `tracepatch policies`: run UPDATE_GOLDEN=1 cargo test --test policies and review the diff"
    );
}

#[test]
fn the_component_installs_the_file() {
    let text = std::fs::read_to_string(repo("manifests/policies/kustomization.yaml")).unwrap();
    let k: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1alpha1");
    assert_eq!(k["kind"], "Component");
    assert_eq!(
        k["resources"],
        serde_json::json!(["mutatingadmissionpolicies.yaml"])
    );
}

#[test]
fn the_chart_template_includes_the_copy_off_by_default() {
    let template = std::fs::read_to_string(repo(CHART_TEMPLATE)).unwrap();
    assert!(template.contains(r#"{{- if (.Values.policies | default dict).enabled }}"#));
    assert!(template.contains(r#".Files.Get "files/mutatingadmissionpolicies.yaml""#));
    assert!(template.contains(r#"{{- $marker := "values: [\"kube-system\", \"tracepatch\"]" }}"#));
    // The line the template replaces is in the file, once per policy.
    let file = std::fs::read_to_string(repo(CHART_FILE)).unwrap();
    let policies = file.matches("kind: MutatingAdmissionPolicy\n").count();
    assert!(policies >= 3);
    assert_eq!(file.matches(EXCLUDED_LINE).count(), policies);
    // ...and the header the template drops ends at the first document.
    assert!(file.starts_with("# "));
    assert!(file.contains("\n---\n# Rule 2"));
}

#[test]
fn v1beta1_differs_only_in_the_api_version() {
    let v1 = policies_output(&[]);
    let beta = policies_output(&["--api-version", "v1beta1"]);
    assert_eq!(
        beta.replace(
            "admissionregistration.k8s.io/v1beta1\n",
            "admissionregistration.k8s.io/v1\n"
        ),
        v1
    );
    assert_eq!(
        beta.matches("apiVersion: admissionregistration.k8s.io/v1beta1\n")
            .count(),
        6
    );
}

#[test]
fn namespace_and_config_options() {
    let out = policies_output(&["--namespace", "observability"]);
    assert!(out.contains(r#"values: ["kube-system", "observability"]"#));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "agentSidecar:\n  enabled: false\ncronJobApp:\n  enabled: false\n",
    )
    .unwrap();
    let out = policies_output(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.matches("kind: MutatingAdmissionPolicy\n").count(), 1);
    assert!(out.contains("name: tracepatch-trace-port\n"));
    std::fs::write(
        &cfg,
        "agentSidecar:\n  images: ['registry.example.com/**/agent', datadog/agent]\n",
    )
    .unwrap();
    let out = tracepatch(&["policies", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("note: left to the webhook: agent-sidecar: image pattern \"registry.example.com/**/agent\""),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let out = tracepatch(&["policies", "--namespace", "Not_A_Namespace"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: \"Not_A_Namespace\" is not a valid namespace name (RFC 1123 label)\n"
    );
    assert!(out.stdout.is_empty());
    let out = tracepatch(&["policies", "--api-version", "v2"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses it");
    let out = tracepatch(&["policies", "--config", "/nonexistent/x.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: cannot read config /nonexistent/x.yaml")
    );
}
