//! The shipped webhook configuration is the program's output: the plain manifest, the
//! chart's matchConditions file and the chart's copy of the default rules configuration
//! (which decides whether those conditions apply) fail this test when they drift.
//! `tracepatch webhook-config > manifests/mutatingwebhookconfiguration.yaml` and
//! `tracepatch webhook-config --conditions-only > manifests/helm/tracepatch/files/match-conditions.yaml`
//! bring them back.

use std::path::Path;

use tracepatch::config::Config;
use tracepatch::webhook_config::{Options, render, render_conditions_file};

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn same(path: &str, rendered: &str, command: &str) {
    let shipped = read(path);
    assert!(
        shipped == rendered,
        "{path} is not what `{command}` prints; run it to bring the file back in step.\n--- shipped\n{shipped}\n--- rendered\n{rendered}"
    );
}

#[test]
fn plain_manifest_is_the_rendered_default() {
    let opts = Options {
        name: "00-tracepatch".into(),
        namespace: "tracepatch".into(),
        service: "tracepatch".into(),
        url: None,
        ca_bundle: None,
        match_conditions: true,
    };
    same(
        "manifests/mutatingwebhookconfiguration.yaml",
        &render(&Config::default(), &opts),
        "tracepatch webhook-config",
    );
}

#[test]
fn chart_conditions_are_the_rendered_default() {
    same(
        "manifests/helm/tracepatch/files/match-conditions.yaml",
        &render_conditions_file(&Config::default()),
        "tracepatch webhook-config --conditions-only",
    );
}

#[test]
fn chart_default_configuration_is_the_built_in_one() {
    same(
        "manifests/helm/tracepatch/files/default-config.yaml",
        Config::EXAMPLE,
        "tracepatch config default",
    );
    let parsed = Config::parse(Config::EXAMPLE, Path::new("default-config.yaml")).unwrap();
    assert_eq!(parsed, Config::default());
}
