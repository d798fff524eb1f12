//! Rule 1 against Istio's injection template: tracepatch must never write into
//! `proxyMetadata` a value that Istio's injector would fail on or change.
//!
//! Istio renders each `proxyMetadata` entry into the injected containers' env with the
//! template line `value: "{{ $value }}"` (istio/istio,
//! `manifests/charts/istio-control/istio-discovery/files/injection-template.yaml`) and
//! parses the result as YAML. [`rendered`] does exactly that for one entry. The
//! properties:
//! - every value tracepatch writes into `proxyMetadata` comes back byte for byte;
//! - every variable of the annotation reaches the sidecar: through `proxyMetadata`, or,
//!   after a model of Istio's injection, directly when the apiserver calls again; and
//!   one that cannot go through `proxyMetadata` is named in a warning before injection.

use kube::core::admission::Operation;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tracepatch::config::Config;
use tracepatch::engine::{Engine, Kind};

/// The env Istio's template renders for one entry, parsed as YAML: the value the
/// sidecar gets, or the error that makes Istio's injector refuse the pod.
fn rendered(name: &str, value: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Env {
        name: String,
        value: String,
    }
    #[derive(serde::Deserialize)]
    struct Container {
        env: Vec<Env>,
    }
    let text = format!("env:\n    - name: {name}\n      value: \"{value}\"\n");
    // The name is a plain scalar: it must be read as that string, not a number, a
    // boolean or null (YAML 1.2 here; go-yaml v2's YAML 1.1 words such as `Y` are
    // covered by the Istio stand-in in tests/e2e).
    let untyped: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
    if untyped["env"][0]["name"] != serde_json::Value::String(name.to_owned()) {
        return Err(format!("name {name:?} is not read as that string"));
    }
    let c: Container = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
    match c.env.as_slice() {
        [e] if e.name == name => Ok(e.value.clone()),
        _ => Err(format!("not one entry named {name}: {text:?}")),
    }
}

fn admit(engine: &Engine, pod: &Value) -> (Value, Vec<String>) {
    let out = engine.admit(Kind::Pod, &Operation::Create, pod);
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &out.patch).expect("the patch applies");
    (
        patched,
        out.warnings.into_iter().map(|w| w.message).collect(),
    )
}

fn proxy_metadata(pod: &Value) -> Map<String, Value> {
    let text = pod
        .pointer("/metadata/annotations/proxy.istio.io~1config")
        .and_then(Value::as_str);
    let Some(text) = text else {
        return Map::new();
    };
    let config: Value = serde_json::from_str(text).expect("tracepatch writes JSON");
    match config.get("proxyMetadata") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// What Istio's injector does with the pod, for the env: appends `istio-proxy` with one
/// variable per `proxyMetadata` entry, as its template renders it; `Err` when the
/// template's YAML does not parse (Istio refuses the pod).
fn inject(pod: &Value, native: bool) -> Result<Value, String> {
    let mut env = Vec::new();
    for (name, value) in proxy_metadata(pod) {
        let value = value.as_str().ok_or("proxyMetadata value not a string")?;
        env.push(json!({"name": name, "value": rendered(&name, value)?}));
    }
    let mut pod = pod.clone();
    let (list, mut sidecar) = if native {
        (
            "initContainers",
            json!({"name": "istio-proxy", "restartPolicy": "Always"}),
        )
    } else {
        ("containers", json!({"name": "istio-proxy"}))
    };
    sidecar["image"] = json!("docker.io/istio/proxyv2:1.28.0");
    sidecar["env"] = Value::Array(env);
    let spec = pod["spec"].as_object_mut().ok_or("no spec")?;
    let entry = spec.entry(list).or_insert_with(|| json!([]));
    entry
        .as_array_mut()
        .ok_or("container list not a list")?
        .push(sidecar);
    Ok(pod)
}

fn sidecar_env(pod: &Value) -> Vec<(String, String)> {
    let lists = ["containers", "initContainers"];
    let sidecar = lists
        .iter()
        .filter_map(|l| pod["spec"][l].as_array())
        .flatten()
        .find(|c| c["name"] == "istio-proxy");
    sidecar
        .and_then(|c| c["env"].as_array())
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pod_with(vars: &[(String, Value)]) -> Value {
    let annotation: Map<String, Value> = vars.iter().cloned().collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "annotations": {"apm.datadoghq.com/env": Value::Object(annotation).to_string()}
        },
        "spec": {"containers": [{"name": "web", "image": "shop/web:1"}]}
    })
}

/// The text tracepatch gives a JSON value as an environment variable.
fn env_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Any string, with the characters that matter to YAML much more likely than chance.
fn value_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9_.,:/=-]{0,6}",
        1 => Just("\"".to_owned()),
        1 => Just("\\".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\t".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just("# ".to_owned()),
        1 => Just(": ".to_owned()),
        1 => Just("'".to_owned()),
        1 => Just("{{".to_owned()),
        1 => Just("\u{85}\u{2028}\u{feff}".to_owned()),
        2 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|p| p.concat())
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => value_text().prop_map(Value::String),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => prop::collection::vec(value_text(), 0..3).prop_map(|v| json!([{"service": v}])),
        1 => value_text().prop_map(|s| json!({"team": s})),
    ]
}

fn vars() -> impl Strategy<Value = Vec<(String, Value)>> {
    let name = prop_oneof![
        8 => "DD_[A-Z]{1,3}",
        1 => prop::sample::select(vec!["Y", "-1", "null", "-", "on", "true", "a.b", "_x"]).prop_map(str::to_owned),
    ];
    prop::collection::vec((name, value()), 1..6).prop_map(|mut v| {
        // One entry per name, so that the expected value of each is plain.
        let mut seen = std::collections::HashSet::new();
        v.retain(|(n, _)| seen.insert(n.clone()));
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_proxy_metadata_value_survives_istios_template(vars in vars()) {
        let engine = Engine::new(Config::default());
        let (admitted, _) = admit(&engine, &pod_with(&vars));
        for (name, value) in proxy_metadata(&admitted) {
            let value = value.as_str().expect("a string");
            prop_assert_eq!(rendered(&name, value), Ok(value.to_owned()), "{}", name);
        }
    }

    #[test]
    fn every_variable_reaches_the_sidecar_and_is_never_refused(vars in vars(), native in any::<bool>()) {
        let engine = Engine::new(Config::default());
        let (admitted, warnings) = admit(&engine, &pod_with(&vars));
        let metadata = proxy_metadata(&admitted);
        for (name, v) in &vars {
            if !metadata.contains_key(name) {
                prop_assert!(
                    warnings.iter().any(|w| w.starts_with(&format!("{name}: not written to proxyMetadata"))),
                    "{} left out of proxyMetadata without a warning: {:?}", name, warnings
                );
            } else {
                let want = env_text(v);
                prop_assert_eq!(metadata[name].as_str(), Some(want.as_str()));
            }
        }
        // Istio injects (never refuses), then the apiserver calls tracepatch again.
        let injected = inject(&admitted, native).map_err(TestCaseError::fail)?;
        let (reinvoked, warnings) = admit(&engine, &injected);
        prop_assert!(warnings.is_empty(), "{:?}", warnings);
        let env = sidecar_env(&reinvoked);
        for (name, v) in &vars {
            let last = env.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            let want = env_text(v);
            prop_assert_eq!(last, Some(want.as_str()), "{}", name);
        }
    }
}

#[test]
fn the_documented_sampling_rules_setting_no_longer_breaks_injection() {
    let sampling = json!([{"sample_rate": 0.5}]);
    let vars = [
        ("DD_ENV".to_owned(), json!("prod")),
        ("DD_TRACE_SAMPLING_RULES".to_owned(), sampling.clone()),
    ];
    let engine = Engine::new(Config::default());
    let (admitted, warnings) = admit(&engine, &pod_with(&vars));
    let metadata = proxy_metadata(&admitted);
    assert_eq!(metadata.get("DD_ENV"), Some(&json!("prod")));
    assert!(!metadata.contains_key("DD_TRACE_SAMPLING_RULES"));
    assert_eq!(
        warnings,
        [
            "DD_TRACE_SAMPLING_RULES: not written to proxyMetadata of proxy.istio.io/config: \
          Istio's injection template cannot carry it unchanged (a double quote ends the \
          quoted YAML value); set on the sidecar directly once Istio has injected it"
        ]
    );
    // What tracepatch did before: the same value in proxyMetadata makes Istio refuse.
    assert!(rendered("DD_TRACE_SAMPLING_RULES", &sampling.to_string()).is_err());

    let injected = inject(&admitted, false).expect("Istio injects");
    let (reinvoked, _) = admit(&engine, &injected);
    assert_eq!(
        sidecar_env(&reinvoked),
        [
            ("DD_ENV".to_owned(), "prod".to_owned()),
            (
                "DD_TRACE_SAMPLING_RULES".to_owned(),
                r#"[{"sample_rate":0.5}]"#.to_owned()
            )
        ]
    );
}

#[test]
fn with_the_direct_channel_off_the_warning_says_the_sidecar_does_not_get_it() {
    let config: Config = Config::parse(
        "tracerEnv:\n  sidecarEnv: false\n",
        std::path::Path::new("test.yaml"),
    )
    .unwrap();
    let engine = Engine::new(config);
    let vars = [("DD_TAGS".to_owned(), json!("a\\b"))];
    let (_, warnings) = admit(&engine, &pod_with(&vars));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].ends_with("sidecarEnv is off, so the sidecar does not get it"),
        "{warnings:?}"
    );
}
