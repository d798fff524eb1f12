//! Property tests over generated Pods, Services and CronJobs (and workloads, and
//! configurations): random containers, init containers, env (value and valueFrom),
//! ports, labels and annotations, including keys with `/` and `~` and missing or null
//! metadata maps.
//!
//! For every generated object:
//! - the patch applies cleanly with the json-patch crate;
//! - the rules on the result produce an empty patch (idempotence);
//! - the result is exactly what a model of the four rules, written below from SPEC.md
//!   without calling the rule code, says: every field the rules own (port names,
//!   `targetPort`, `appProtocol`, the `app` labels, the agent labels and annotation,
//!   every target container's env, the settings in `proxy.istio.io/config`) has the
//!   expected value, and every other field is unchanged;
//! - env lists only grow at the end, in pods and in the pod templates of Deployments
//!   and CronJobs;
//! - what the rules add is what the apiserver accepts (label values, env names, port
//!   names) and the rewritten `proxy.istio.io/config` still parses.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tracepatch::admission;
use tracepatch::config::{Config, ContainerTargets, PortMode};
use tracepatch::engine::{Engine, Kind};
use tracepatch::names::{is_env_var_name, is_iana_svc_name, is_label_value};

// === generators ===

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("app".to_string()),
        Just("app.kubernetes.io/name".to_string()),
        Just("app.kubernetes.io/component".to_string()),
        Just("sidecar.istio.io/inject".to_string()),
        Just("istio.io/dataplane-mode".to_string()),
        Just("tracepatch.io/enabled".to_string()),
        Just("tags.datadoghq.com/env".to_string()),
        Just("tags.datadoghq.com/version".to_string()),
        Just("agent.datadoghq.com/component".to_string()),
        Just("a~b/c~1d".to_string()),
        Just("x/y/z".to_string()),
        "[a-z~/.]{1,12}",
    ]
}

fn label_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop_oneof![
            Just("true"), Just("false"), Just("datadog-agent"), Just("datadog"),
            Just("agent"), Just("prod"), Just("web"), Just("ambient"), Just("none"), Just(""),
        ]
        .prop_map(|s| json!(s)),
        2 => "[ -~]{0,20}".prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<i32>().prop_map(|n| json!(n)),
    ]
}

fn string_map() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        6 => prop::collection::btree_map(key(), label_value(), 0..6)
            .prop_map(|m| Some(Value::Object(m.into_iter().collect()))),
    ]
}

fn env_json() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("DD_ENV"),
        Just("DD_SERVICE"),
        Just("DD_VERSION"),
        Just("DD_X"),
        Just("1BAD"),
        Just("A B"),
        Just("dd.ok-name"),
        Just("POD_NAME"),
        // Valid environment variable names that YAML does not read as strings.
        Just("Y"),
        Just("null"),
        Just("-dash"),
    ];
    // Each value as the JSON text written in the annotation: numbers in any spelling,
    // arrays and objects with and without whitespace, strings with quotes and
    // backslashes (which Istio's template cannot carry).
    let value = prop_oneof![
        Just("\"prod\"".to_string()),
        Just("true".to_string()),
        Just("0.5".to_string()),
        Just("1e3".to_string()),
        Just("null".to_string()),
        Just(r#"[{"service":"a","sample_rate":0.5}]"#.to_string()),
        Just(r#"[ {"service": "a b", "sample_rate": 0.5} ]"#.to_string()),
        Just(r#"{"z": 1, "a": "x\" y"}"#.to_string()),
        "[ -~]{0,12}".prop_map(|s| json!(s).to_string()),
    ];
    prop_oneof![
        8 => prop::collection::vec((name, value), 0..6).prop_map(|pairs| {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}: {v}", json!(k)))
                .collect();
            format!("{{ {} }}", body.join(", "))
        }),
        1 => Just("{ \"DD_ENV\": }".to_string()),
        1 => Just("[1, 2]".to_string()),
    ]
}

fn proxy_config() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("proxyMetadata:\n  DD_ENV: staging\n  OTHER: \"1\"\nholdApplicationUntilProxyStarts: true\n".to_string()),
        Just("{\"concurrency\": 2, \"proxyMetadata\": {\"DD_ENV\": \"prod\"}}".to_string()),
        Just("proxyMetadata: [broken".to_string()),
        Just("".to_string()),
        Just("tracing:\n  sampling: 10.5\n".to_string()),
        Just("- a\n- b\n".to_string()),
        Just("proxyMetadata:\n  DD_ENV: prod\n".to_string()),
        Just("proxyMetadata: null\nconcurrency: 2\n".to_string()),
        Just("proxyMetadata: 3\n".to_string()),
    ]
}

fn annotations() -> impl Strategy<Value = Option<Value>> {
    (
        string_map(),
        prop::option::of(env_json()),
        prop::option::of(proxy_config()),
    )
        .prop_map(|(base, env, proxy)| {
            let mut map = match base {
                Some(Value::Object(m)) => m,
                other if env.is_none() && proxy.is_none() => return other,
                _ => Map::new(),
            };
            if let Some(e) = env {
                map.insert("apm.datadoghq.com/env".into(), json!(e));
            }
            if let Some(p) = proxy {
                map.insert("proxy.istio.io/config".into(), json!(p));
            }
            Some(Value::Object(map))
        })
}

fn env_entry() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("DD_ENV"),
        Just("DD_SERVICE"),
        Just("DD_X"),
        Just("PATH"),
        Just("dd.ok-name")
    ];
    let value = prop_oneof![
        "[a-z0-9]{0,6}",
        Just("prod".to_string()),
        Just("true".to_string())
    ];
    (name, 0..4u8, value).prop_map(|(name, shape, v)| match shape {
        0 => json!({"name": name, "value": v}),
        1 => json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}),
        2 => json!({"name": name}),
        _ => json!({"name": name, "value": v, "extra": {"unknown": [1, 2]}}),
    })
}

fn port(container: bool) -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just(None),
        Just(Some("traceport")),
        Just(Some("tcp-traceport")),
        Just(Some("http-trace")),
        Just(Some("dogstatsdport")),
        Just(Some("a-very-long-tp")),
        Just(Some("grpc")),
    ];
    let number = prop_oneof![Just(8126u16), Just(8125), Just(80), Just(4317)];
    let protocol = prop_oneof![
        Just(None),
        Just(Some("TCP")),
        Just(Some("UDP")),
        Just(Some("SCTP"))
    ];
    let app_protocol =
        prop_oneof![3 => Just(None), 1 => Just(Some("tcp")), 1 => Just(Some("http"))];
    let target = prop_oneof![
        Just(None),
        Just(Some(json!("traceport"))),
        Just(Some(json!(8126)))
    ];
    (name, number, protocol, app_protocol, target).prop_map(
        move |(name, number, protocol, app, target)| {
            let mut p = Map::new();
            if let Some(n) = name {
                p.insert("name".into(), json!(n));
            }
            p.insert(
                if container { "containerPort" } else { "port" }.into(),
                json!(number),
            );
            if let Some(proto) = protocol {
                p.insert("protocol".into(), json!(proto));
            }
            if !container {
                if let Some(a) = app {
                    p.insert("appProtocol".into(), json!(a));
                }
                if let Some(t) = target {
                    p.insert("targetPort".into(), t);
                }
            }
            Value::Object(p)
        },
    )
}

fn container() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("istio-proxy"),
        Just("app"),
        Just("agent"),
        Just("worker")
    ];
    let image = prop_oneof![
        Just("docker.io/istio/proxyv2:1.22.0"),
        Just("gcr.io/datadoghq/agent:7"),
        Just("datadog/cluster-agent"),
        Just("shop/web:1"),
        Just("gcr.io/datadoghq/dd-lib-java-init:v1"),
    ];
    let env = prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        4 => prop::collection::vec(env_entry(), 0..5).prop_map(|v| Some(Value::Array(v))),
    ];
    let ports = prop::option::of(prop::collection::vec(port(true), 0..3));
    let restart = prop_oneof![Just(None), Just(Some("Always"))];
    (name, image, env, ports, restart).prop_map(|(name, image, env, ports, restart)| {
        let mut c = Map::new();
        c.insert("name".into(), json!(name));
        c.insert("image".into(), json!(image));
        c.insert("resources".into(), json!({"limits": {"memory": "1Gi"}}));
        if let Some(e) = env {
            c.insert("env".into(), e);
        }
        if let Some(p) = ports {
            c.insert("ports".into(), Value::Array(p));
        }
        if let Some(r) = restart {
            c.insert("restartPolicy".into(), json!(r));
        }
        Value::Object(c)
    })
}

/// Container names are unique within a pod; generated lists may repeat, so dedupe.
fn unique_names(mut list: Vec<Value>, taken: &mut Vec<String>) -> Vec<Value> {
    list.retain(|c| {
        let n = c["name"].as_str().unwrap_or("").to_string();
        if taken.contains(&n) {
            false
        } else {
            taken.push(n);
            true
        }
    });
    list
}

fn pod() -> impl Strategy<Value = Value> {
    (
        string_map(),
        annotations(),
        prop::collection::vec(container(), 0..4),
        prop::collection::vec(container(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(labels, annotations, containers, inits, with_name)| {
            let mut meta = Map::new();
            if with_name {
                meta.insert("name".into(), json!("p"));
            }
            if let Some(l) = labels {
                meta.insert("labels".into(), l);
            }
            if let Some(a) = annotations {
                meta.insert("annotations".into(), a);
            }
            meta.insert("uid".into(), json!("u-1"));
            let mut taken = Vec::new();
            let containers = unique_names(containers, &mut taken);
            let inits = unique_names(inits, &mut taken);
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": meta,
                "spec": {"containers": containers, "initContainers": inits, "futureField": {"x": [1]}},
                "status": {"phase": "Pending"}
            })
        })
}

fn service() -> impl Strategy<Value = Value> {
    (string_map(), prop::collection::vec(port(false), 0..4)).prop_map(|(labels, ports)| {
        let mut meta = json!({"name": "svc", "namespace": "ns"});
        if let Some(l) = labels {
            meta["labels"] = l;
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"ports": ports, "selector": {"app": "x"}, "clusterIP": "None"}})
    })
}

fn cronjob() -> impl Strategy<Value = Value> {
    (
        string_map(),
        string_map(),
        string_map(),
        any::<bool>(),
        pod(),
    )
        .prop_map(|(labels, job_labels, tpl_labels, named, pod)| {
            let mut meta = Map::new();
            if named {
                meta.insert("name".into(), json!("nightly"));
            } else {
                meta.insert("generateName".into(), json!("nightly-"));
            }
            if let Some(l) = labels {
                meta.insert("labels".into(), l);
            }
            let mut template = pod;
            template.as_object_mut().unwrap().remove("apiVersion");
            template.as_object_mut().unwrap().remove("kind");
            template.as_object_mut().unwrap().remove("status");
            if let Some(l) = tpl_labels {
                template["metadata"]["labels"] = l;
            }
            let mut job_template = json!({"spec": {"template": template}});
            if let Some(l) = job_labels {
                job_template["metadata"] = json!({"labels": l});
            }
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
               "spec": {"schedule": "@daily", "jobTemplate": job_template}})
        })
}

fn deployment() -> impl Strategy<Value = Value> {
    pod().prop_map(|mut pod| {
        let obj = pod.as_object_mut().unwrap();
        obj.remove("apiVersion");
        obj.remove("kind");
        obj.remove("status");
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 2, "template": pod}})
    })
}

/// The switches the generated configuration turns, as the model reads them: the model
/// never looks inside `Config`, so that a wrong reading of a setting in the product
/// cannot cancel out in the comparison.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    /// Rule 3 in mode `name` (else `appProtocol`).
    name_mode: bool,
    /// Rule 3's `renamePodPorts`.
    rename_pod_ports: bool,
    /// Rule 1's target containers are `all` (else `istio-proxy`).
    all_containers: bool,
    /// Rule 1's channel into `proxyMetadata`.
    proxy_metadata: bool,
    /// Rule 1's channel onto the sidecar container.
    sidecar_env: bool,
    /// Rule 1 reads the unified service tagging labels.
    unified_service_tags: bool,
}

fn config() -> impl Strategy<Value = (Config, Knobs)> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(name_mode, rename, all, no_proxy_md, no_sidecar_env, no_ust)| {
                let mut c = Config::default();
                c.trace_port.mode = if name_mode {
                    PortMode::Name
                } else {
                    PortMode::AppProtocol
                };
                c.trace_port.rename_pod_ports = rename;
                if all {
                    c.tracer_env.containers = ContainerTargets::All;
                }
                c.tracer_env.proxy_metadata = !no_proxy_md;
                c.tracer_env.sidecar_env = !no_sidecar_env;
                c.tracer_env.unified_service_tags.enabled = !no_ust;
                let knobs = Knobs {
                    name_mode,
                    rename_pod_ports: rename,
                    all_containers: all,
                    proxy_metadata: !no_proxy_md,
                    sidecar_env: !no_sidecar_env,
                    unified_service_tags: !no_ust,
                };
                (c, knobs)
            },
        )
}

// === the model: each rule restated from SPEC.md on plain serde_json values ===
//
// `expected` gives the whole object the rules must produce. It calls nothing in the
// crate: each rule is written again here, from SPEC.md and the documented defaults
// (config/datadog.yaml), as directly as possible, so that the product and the model
// have to agree on every owned field (port names, targetPort, appProtocol, the `app`
// labels, the agent labels and annotation, every target container's env), not only on
// the fields the rules leave alone.

const INJECT: &str = "sidecar.istio.io/inject";
const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
const PROXY_CONFIG: &str = "proxy.istio.io/config";
const ENV_ANNOTATION: &str = "apm.datadoghq.com/env";

/// What the model expects of one `proxy.istio.io/config` annotation the rules rewrite:
/// its text is the product's to format (YAML stays YAML), so it is compared as the
/// settings it parses to.
struct ProxyConfigExpectation {
    /// JSON pointer of the annotation in the object.
    pointer: String,
    /// The settings it must parse to.
    settings: Value,
}

/// The object the rules must produce from `obj`, and the rewritten `proxy.istio.io/config`
/// annotations to compare as parsed settings.
fn expected(
    kind: Kind,
    obj: &Value,
    k: &Knobs,
    preview: bool,
) -> (Value, Vec<ProxyConfigExpectation>) {
    let mut out = obj.clone();
    let mut proxies = Vec::new();
    if opted_out(obj) {
        return (out, proxies);
    }
    match kind {
        Kind::Pod => expect_pod(&mut out, k, "", &mut proxies),
        Kind::Service => expect_service(&mut out, k),
        Kind::CronJob => expect_cronjob(&mut out),
        _ => {}
    }
    // Offline, the pod rules also apply to the pod template, as rule 4 left it.
    let template = match kind {
        Kind::Deployment => Some("/spec/template"),
        Kind::CronJob => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    };
    if let (true, Some(at)) = (preview, template)
        && let Some(pod) = out.pointer_mut(at).filter(|p| p.is_object())
    {
        expect_pod(pod, k, at, &mut proxies);
    }
    (out, proxies)
}

fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.pointer("/metadata/labels").and_then(Value::as_object)
}

fn label<'v>(obj: &'v Value, key: &str) -> Option<&'v str> {
    labels(obj).and_then(|l| l.get(key)).and_then(Value::as_str)
}

fn opted_out(obj: &Value) -> bool {
    label(obj, "tracepatch.io/enabled") == Some("false")
}

/// The map at `path` under `obj`, each missing or `null` level made a map; `None` if a
/// level is something else (the rules leave such an object alone there).
fn map_at<'v>(obj: &'v mut Value, path: &[&str]) -> Option<&'v mut Map<String, Value>> {
    let mut cur = obj;
    for field in path {
        if cur.is_null() {
            *cur = json!({});
        }
        let m = cur.as_object_mut()?;
        cur = m.entry(field.to_string()).or_insert(Value::Null);
    }
    if cur.is_null() {
        *cur = json!({});
    }
    cur.as_object_mut()
}

/// Rules 1, 2 and 3 (pod ports) on a pod or pod template; each reads the pod as it came.
fn expect_pod(pod: &mut Value, k: &Knobs, at: &str, proxies: &mut Vec<ProxyConfigExpectation>) {
    if opted_out(pod) {
        return;
    }
    let before = pod.clone();
    expect_tracer_env(&before, pod, k, at, proxies);
    expect_agent_sidecar(&before, pod);
    if k.rename_pod_ports {
        expect_pod_ports(&before, pod);
    }
}

// --- rule 1 ---

/// A Kubernetes environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// The annotation's members in the order written, each value as its JSON text; `None`
/// unless the text is one JSON object.
fn members_in_order(text: &str) -> Option<Vec<(String, String)>> {
    struct Members(Vec<(String, String)>);
    impl<'de> serde::Deserialize<'de> for Members {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Members;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Members, A::Error> {
                    let mut out = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        let v: Box<serde_json::value::RawValue> = map.next_value()?;
                        out.push((k, v.get().to_owned()));
                    }
                    Ok(Members(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Members>(text).ok().map(|m| m.0)
}

/// JSON text without the whitespace between tokens.
fn compact(text: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

/// SPEC: strings as they are; numbers and booleans as their JSON text; arrays and objects
/// as compact JSON text; `null` skipped.
fn env_value(raw: &str) -> Option<String> {
    match serde_json::from_str::<Value>(raw).ok()? {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Array(_) | Value::Object(_) => Some(compact(raw)),
        _ => Some(raw.trim().to_owned()),
    }
}

/// The variables the pod asks for, in order; `None` when the annotation is malformed (the
/// pod is then left alone by rule 1, the labels included).
fn tracer_vars(pod: &Value, k: &Knobs) -> Option<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let annotation = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .and_then(|a| a.get(ENV_ANNOTATION));
    if let Some(annotation) = annotation {
        for (name, raw) in members_in_order(annotation.as_str()?)? {
            let Some(value) = env_value(&raw) else {
                continue;
            };
            if !env_name_ok(&name) {
                continue;
            }
            // A name written twice keeps its first place and its last value.
            match vars.iter_mut().find(|(n, _)| *n == name) {
                Some(var) => var.1 = value,
                None => vars.push((name, value)),
            }
        }
    }
    if k.unified_service_tags {
        for (key, name) in [
            ("tags.datadoghq.com/env", "DD_ENV"),
            ("tags.datadoghq.com/service", "DD_SERVICE"),
            ("tags.datadoghq.com/version", "DD_VERSION"),
        ] {
            // The annotation wins.
            if vars.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Some(value) = label(pod, key).filter(|v| !v.is_empty()) {
                vars.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    Some(vars)
}

/// Istio renders each entry as `- name: {{ $key }}` and `value: "{{ $value }}"` and
/// parses the result as YAML, so only a variable whose value has no `"`, `\`, line break
/// or control character (SPEC), and whose name reads as a plain YAML string (a letter or
/// `_`, then letters, digits, `_`, `.`, `-`; not a YAML 1.1 boolean or null word), goes
/// into proxyMetadata. That these come through Istio's template unchanged is
/// tests/istio_template.rs's property; here it only decides which variables go there.
fn template_safe(name: &str, value: &str) -> bool {
    let value_ok = !value.chars().any(|c| {
        matches!(
            c,
            '"' | '\\' | '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        ) || c.is_control()
    });
    let mut chars = name.chars();
    let name_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !["y", "yes", "n", "no", "true", "false", "on", "off", "null"]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(name));
    value_ok && name_ok
}

/// A ProxyConfig as YAML or JSON, read as settings.
fn proxy_settings(text: &str) -> Option<Value> {
    let text = text.trim();
    if text.is_empty() {
        return Some(json!({}));
    }
    let v: Value = if text.starts_with('{') {
        serde_json::from_str(text).ok()?
    } else {
        serde_saphyr::from_str(text).ok()?
    };
    Some(if v.is_null() { json!({}) } else { v })
}

fn expect_tracer_env(
    before: &Value,
    pod: &mut Value,
    k: &Knobs,
    at: &str,
    proxies: &mut Vec<ProxyConfigExpectation>,
) {
    let Some(vars) = tracer_vars(before, k) else {
        return;
    };
    if vars.is_empty() {
        return;
    }
    if k.proxy_metadata {
        let safe: Vec<&(String, String)> =
            vars.iter().filter(|(n, v)| template_safe(n, v)).collect();
        let existing = before
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .and_then(|a| a.get(PROXY_CONFIG));
        let settings = match existing {
            None => Some(json!({})),
            Some(Value::String(text)) => proxy_settings(text),
            // Not a string, or not a map of settings: left alone.
            Some(_) => None,
        };
        if let Some(mut settings) = settings.filter(|s| !safe.is_empty() && s.is_object()) {
            let metadata = settings
                .as_object_mut()
                .unwrap()
                .entry("proxyMetadata")
                .or_insert(Value::Null);
            if metadata.is_null() {
                *metadata = json!({});
            }
            if let Some(metadata) = metadata.as_object_mut() {
                let mut changed = false;
                for (name, value) in safe {
                    if metadata.get(name).and_then(Value::as_str) != Some(value) {
                        metadata.insert(name.clone(), json!(value));
                        changed = true;
                    }
                }
                if changed {
                    let annotations = map_at(pod, &["metadata", "annotations"]).unwrap();
                    annotations.insert(PROXY_CONFIG.into(), json!("(compared as settings)"));
                    proxies.push(ProxyConfigExpectation {
                        pointer: format!("{at}/metadata/annotations/proxy.istio.io~1config"),
                        settings,
                    });
                }
            }
        }
    }
    if k.sidecar_env {
        for list in ["containers", "initContainers"] {
            let Some(containers) = pod.pointer_mut(&format!("/spec/{list}")) else {
                continue;
            };
            let Some(containers) = containers.as_array_mut() else {
                continue;
            };
            for c in containers.iter_mut().filter(|c| c.is_object()) {
                let Some(name) = c.get("name").and_then(Value::as_str) else {
                    continue;
                };
                // `istio-proxy`: a regular container, or a native sidecar (an init
                // container with restartPolicy Always); `all`: every container.
                let native = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
                let target =
                    k.all_containers || (name == "istio-proxy" && (list == "containers" || native));
                if target {
                    set_env(c, &vars);
                }
            }
        }
    }
}

/// SPEC: a variable already present (the last entry of that name, the one that takes
/// effect) gets the annotation's value, unless it is a `valueFrom` (left alone) or already
/// equal (no op); a new one is appended, in the annotation's order.
fn set_env(container: &mut Value, vars: &[(String, String)]) {
    let env = container.get("env").cloned().unwrap_or(Value::Null);
    let mut list = match &env {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        // Not a list: left alone.
        _ => return,
    };
    let existing = list.len();
    for (name, value) in vars {
        let found = list[..existing]
            .iter()
            .rposition(|e| e.get("name").and_then(Value::as_str) == Some(name.as_str()));
        match found {
            Some(j) => {
                let e = &mut list[j];
                if e.get("valueFrom").is_some_and(|v| !v.is_null()) {
                    continue;
                }
                if e.get("value").and_then(Value::as_str).unwrap_or("") != value {
                    e["value"] = json!(value);
                }
            }
            None => list.push(json!({"name": name, "value": value})),
        }
    }
    if env.as_array() != Some(&list) && !(env.is_null() && list.is_empty()) {
        container["env"] = Value::Array(list);
    }
}

// --- rule 2 ---

/// SPEC / config/datadog.yaml: the Datadog Agent's repositories.
fn datadog_image(image: &str) -> bool {
    let image = image.split('@').next().unwrap_or(image);
    let repo = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    };
    let repo = repo.strip_prefix("docker.io/").unwrap_or(repo);
    ["agent", "cluster-agent"].iter().any(|name| {
        [
            format!("gcr.io/datadoghq/{name}"),
            format!("datadog/{name}"),
            format!("public.ecr.aws/datadog/{name}"),
            format!("datadoghq.azurecr.io/{name}"),
            format!("registry.datadoghq.com/{name}"),
        ]
        .contains(&repo.to_owned())
            || repo.ends_with(&format!(".gcr.io/datadoghq/{name}"))
    })
}

fn is_agent(pod: &Value) -> bool {
    let l = |key| label(pod, key);
    let by_label = matches!(
        l("app"),
        Some(
            "datadog-agent"
                | "datadog-cluster-agent"
                | "datadog-cluster-checks-runner"
                | "datadog-clusterchecks"
        )
    ) || (matches!(
        l("app.kubernetes.io/component"),
        Some("agent" | "cluster-agent" | "clusterchecks-agent")
    ) && l("app.kubernetes.io/name").is_some_and(|n| n.contains("datadog")))
        || l("agent.datadoghq.com/component").is_some();
    let by_image = ["containers", "initContainers"].iter().any(|list| {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("image").and_then(Value::as_str))
            .any(datadog_image)
    });
    by_label || by_image
}

/// SPEC: an agent pod gets the inject label and annotation `"false"` and
/// `istio.io/dataplane-mode: none`, unless its owner set the inject label or annotation
/// (any value).
fn expect_agent_sidecar(before: &Value, pod: &mut Value) {
    if !is_agent(before) {
        return;
    }
    let stated = |map: &str| {
        before
            .pointer(&format!("/metadata/{map}"))
            .and_then(Value::as_object)
            .is_some_and(|m| m.contains_key(INJECT))
    };
    if stated("labels") || stated("annotations") {
        return;
    }
    if let Some(labels) = map_at(pod, &["metadata", "labels"]) {
        labels.insert(INJECT.into(), json!("false"));
        // An ambient mode the owner chose (a string) is kept.
        if !labels.get(DATAPLANE_MODE).is_some_and(Value::is_string) {
            labels.insert(DATAPLANE_MODE.into(), json!("none"));
        }
    }
    if let Some(annotations) = map_at(pod, &["metadata", "annotations"]) {
        annotations.insert(INJECT.into(), json!("false"));
    }
}

// --- rule 3 ---

/// The protocol Istio reads from a port name's prefix (`http-web`), if any.
fn istio_protocol(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let mut found = None;
    for p in [
        "grpc-web", "http2", "https", "http", "grpc", "mongo", "mysql", "redis", "tcp", "tls",
        "udp",
    ] {
        if found.is_none() && (lower == p || lower.starts_with(&format!("{p}-"))) {
            found = Some(p);
        }
    }
    found
}

/// A port the rules consider: TCP (the default protocol).
fn is_tcp(port: &Value) -> bool {
    matches!(port.get("protocol"), None | Some(Value::Null)) || port["protocol"] == "TCP"
}

/// The default matchers: name `traceport`, or number 8126.
fn is_trace_port(name: Option<&str>, number: Option<u64>) -> bool {
    name == Some("traceport") || number == Some(8126)
}

/// A container port name: an IANA service name (15 characters at most, lower case
/// letters, digits and single inner hyphens, at least one letter).
fn iana_name_ok(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A Service port name: an RFC 1123 label.
fn dns_label_ok(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// SPEC, opt-in `renamePodPorts`: container ports named `traceport` (or numbered 8126)
/// become `tcp-NAME`, if that is a valid port name not already used in the pod.
fn expect_pod_ports(before: &Value, pod: &mut Value) {
    let lists = ["containers", "initContainers"];
    let ports_of = |v: &Value, list: &str| -> Vec<Vec<Value>> {
        v.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    };
    let mut taken: Vec<String> = lists
        .iter()
        .flat_map(|l| ports_of(before, l))
        .flatten()
        .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    for list in lists {
        for (i, ports) in ports_of(before, list).iter().enumerate() {
            if !before
                .pointer(&format!("/spec/{list}/{i}"))
                .is_some_and(Value::is_object)
            {
                continue;
            }
            for (j, port) in ports.iter().enumerate() {
                let Some(name) = port.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let number = port.get("containerPort").and_then(Value::as_u64);
                if name.is_empty()
                    || !is_tcp(port)
                    || !is_trace_port(Some(name), number)
                    || istio_protocol(name).is_some()
                {
                    continue;
                }
                let new = format!("tcp-{name}");
                if !iana_name_ok(&new) || taken.contains(&new) {
                    continue;
                }
                pod["spec"][list][i]["ports"][j]["name"] = json!(new);
                taken.push(new);
            }
        }
    }
}

/// SPEC: matching TCP Service ports get `appProtocol: tcp` where none is set (mode
/// `appProtocol`), or the name `tcp-NAME` (`tcp` when unnamed), unique in the Service
/// (mode `name`); a port that already declares another protocol is left alone. With
/// `renamePodPorts`, a `targetPort: traceport` follows the pods' rename.
fn expect_service(svc: &mut Value, k: &Knobs) {
    let Some(ports) = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
    else {
        return;
    };
    let mut taken: Vec<String> = ports
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    for (i, port) in ports.iter().enumerate() {
        if !port.is_object() || !is_tcp(port) {
            continue;
        }
        let out = &mut svc["spec"]["ports"][i];
        if k.rename_pod_ports
            && let Some(target) = port.get("targetPort").and_then(Value::as_str)
            && target == "traceport"
        {
            out["targetPort"] = json!(format!("tcp-{target}"));
        }
        let name = port
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        if !is_trace_port(name, port.get("port").and_then(Value::as_u64)) {
            continue;
        }
        let app_protocol = port.get("appProtocol").and_then(Value::as_str);
        let declared = name.and_then(istio_protocol);
        if !k.name_mode {
            if app_protocol.is_none() && declared.is_none_or(|p| p == "tcp") {
                out["appProtocol"] = json!("tcp");
            }
            continue;
        }
        if app_protocol.is_some_and(|p| !p.eq_ignore_ascii_case("tcp")) {
            continue;
        }
        let new = match (name, declared) {
            (None, _) => "tcp".to_owned(),
            (Some(n), None) => format!("tcp-{n}"),
            (Some(_), Some(_)) => continue,
        };
        if dns_label_ok(&new) && !taken.contains(&new) {
            out["name"] = json!(new);
            taken.push(new);
        }
    }
}

// --- rule 4 ---

/// A Kubernetes label value: empty, or at most 63 characters, alphanumeric at both ends,
/// `-`, `_`, `.` inside.
fn label_value_ok(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

/// SPEC: a pod template without an `app` label gets one, and the job template too if it
/// has none: the CronJob's own `app` label, else the template's `app.kubernetes.io/name`,
/// else the CronJob's name. An existing `app` label is never changed.
fn expect_cronjob(cj: &mut Value) {
    let before = cj.clone();
    let Some(template) = before
        .pointer("/spec/jobTemplate/spec/template")
        .filter(|t| t.is_object())
    else {
        return;
    };
    let has_app = |v: Option<&Value>| v.and_then(labels).is_some_and(|l| l.contains_key("app"));
    if has_app(Some(template)) {
        return;
    }
    // The first non-empty source is the value (an empty label names no service).
    let non_empty = |v: &&str| !v.is_empty();
    let value = label(&before, "app")
        .filter(non_empty)
        .or_else(|| label(template, "app.kubernetes.io/name").filter(non_empty))
        .or_else(|| {
            before
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .filter(non_empty)
        })
        .filter(|v| label_value_ok(v));
    let Some(value) = value else {
        return;
    };
    if let Some(l) = map_at(
        cj,
        &[
            "spec",
            "jobTemplate",
            "spec",
            "template",
            "metadata",
            "labels",
        ],
    ) {
        l.insert("app".into(), json!(value));
    }
    if !has_app(before.pointer("/spec/jobTemplate"))
        && let Some(l) = map_at(cj, &["spec", "jobTemplate", "metadata", "labels"])
    {
        l.insert("app".into(), json!(value));
    }
}

// === the properties ===

/// Env lists only grow at the end; existing entries keep their name and valueFrom.
fn env_lists_only_grow(before: &Value, after: &Value) -> Result<(), String> {
    for list in ["containers", "initContainers"] {
        let (Some(b), Some(a)) = (
            before
                .pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array),
            after
                .pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array),
        ) else {
            continue;
        };
        for (cb, ca) in b.iter().zip(a) {
            let eb = cb
                .get("env")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ea = ca
                .get("env")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if ea.len() < eb.len() {
                return Err(format!("env shrank in {list}: {eb:?} -> {ea:?}"));
            }
            for (x, y) in eb.iter().zip(&ea) {
                let (mut x2, mut y2) = (x.clone(), y.clone());
                if let (Some(xo), Some(yo)) = (x2.as_object_mut(), y2.as_object_mut()) {
                    xo.remove("value");
                    yo.remove("value");
                }
                if x2 != y2 {
                    return Err(format!("env entry changed beyond its value: {x} -> {y}"));
                }
                if x.get("valueFrom").is_some() && x.get("value") != y.get("value") {
                    return Err(format!("a valueFrom entry was given a value: {x} -> {y}"));
                }
            }
        }
    }
    Ok(())
}

/// What the patch adds must be valid for the apiserver.
fn additions_are_valid(patch: &[json_patch::PatchOperation]) -> Result<(), String> {
    for op in patch {
        let json_patch::PatchOperation::Add(add) = op else {
            return Err(format!("rules only add, got {op:?}"));
        };
        let path = add.path.as_str();
        let s = add.value.as_str();
        if path.contains("/metadata/labels/") && !s.is_some_and(is_label_value) {
            return Err(format!("invalid label value at {path}: {}", add.value));
        }
        if path.ends_with("/env/-") && !add.value["name"].as_str().is_some_and(is_env_var_name) {
            return Err(format!("invalid env name: {}", add.value));
        }
        if path.contains("/ports/")
            && path.ends_with("/name")
            && path.contains("ontainers/")
            && !s.is_some_and(is_iana_svc_name)
        {
            return Err(format!("invalid container port name: {}", add.value));
        }
        if path.ends_with("proxy.istio.io~1config") {
            let text = s.ok_or("proxy config not a string")?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| format!("proxy config does not reparse: {e}"))?;
        }
    }
    Ok(())
}

/// Port names unique within a pod (all containers) or a Service stay unique.
fn port_names_stay_unique(before: &Value, after: &Value) -> Result<(), String> {
    fn names(v: &Value) -> Vec<Vec<String>> {
        let mut groups = Vec::new();
        let mut collect = |spec: &Value, lists: &[&str]| {
            let mut names = Vec::new();
            for list in lists {
                for item in spec
                    .get(*list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let ports = if *list == "ports" { Some(item) } else { None };
                    let entries: Vec<&Value> = match ports {
                        Some(p) => vec![p],
                        None => item
                            .get("ports")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .collect(),
                    };
                    for p in entries {
                        if let Some(n) = p.get("name").and_then(Value::as_str) {
                            names.push(n.to_string());
                        }
                    }
                }
            }
            groups.push(names);
        };
        for spec in [
            v.pointer("/spec"),
            v.pointer("/spec/template/spec"),
            v.pointer("/spec/jobTemplate/spec/template/spec"),
        ]
        .into_iter()
        .flatten()
        {
            collect(spec, &["containers", "initContainers"]);
            collect(spec, &["ports"]);
        }
        groups
    }
    let unique = |g: &Vec<String>| {
        let mut s = g.clone();
        s.sort();
        s.dedup();
        s.len() == g.len()
    };
    for (b, a) in names(before).iter().zip(names(after).iter()) {
        if unique(b) && !unique(a) {
            return Err(format!("port names became duplicated: {b:?} -> {a:?}"));
        }
    }
    Ok(())
}

fn check(
    engine: &Engine,
    knobs: &Knobs,
    kind: Kind,
    obj: &Value,
    preview: bool,
) -> Result<(), TestCaseError> {
    let run = |o: &Value| {
        if preview {
            engine.preview(kind, o)
        } else {
            engine.admit(kind, &kube::core::admission::Operation::Create, o)
        }
    };
    let out = run(obj);
    let mut patched = obj.clone();
    json_patch::patch(&mut patched, &out.patch).map_err(|e| {
        TestCaseError::fail(format!("patch does not apply: {e}\npatch: {:?}", out.patch))
    })?;
    let again = run(&patched);
    prop_assert!(
        again.patch.is_empty(),
        "not idempotent: {:?}\nafter: {patched}",
        again.patch
    );

    // The whole object is what the model of the rules says: every field the rules own
    // exactly, and every other field unchanged. A rewritten proxy.istio.io/config is
    // compared as the settings it parses to.
    let (mut want, proxies) = expected(kind, obj, knobs, preview);
    let mut got = patched.clone();
    for p in &proxies {
        let text = got
            .pointer(&p.pointer)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                TestCaseError::fail(format!(
                    "no {} in {patched}\npatch: {:?}",
                    p.pointer, out.patch
                ))
            })?;
        let settings = proxy_settings(text).ok_or_else(|| {
            TestCaseError::fail(format!("{} does not parse: {text:?}", p.pointer))
        })?;
        prop_assert_eq!(&settings, &p.settings, "{} is {:?}", p.pointer, text);
        *got.pointer_mut(&p.pointer).unwrap() = json!("(compared as settings)");
    }
    if got != want {
        // The first differing field, then both objects.
        let diff = first_difference(&want, &got, String::new());
        want = json!({"expected": want, "got": got});
        return Err(TestCaseError::fail(format!(
            "{diff}\n{want:#}\npatch: {:?}",
            out.patch
        )));
    }

    env_lists_only_grow(obj, &patched).map_err(TestCaseError::fail)?;
    for template in ["/spec/template", "/spec/jobTemplate/spec/template"] {
        if let Some(pod) = obj.pointer(template) {
            let after = patched.pointer(template).unwrap_or(&Value::Null);
            env_lists_only_grow(pod, after).map_err(TestCaseError::fail)?;
        }
    }
    additions_are_valid(&out.patch).map_err(TestCaseError::fail)?;
    port_names_stay_unique(obj, &patched).map_err(TestCaseError::fail)?;
    prop_assert_eq!(out.patch.is_empty(), out.applied.is_empty());
    Ok(())
}

/// Where two values first differ, as a JSON pointer and the two values there.
fn first_difference(want: &Value, got: &Value, at: String) -> String {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                if a.get(key) != b.get(key) {
                    let at = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                    return match (a.get(key), b.get(key)) {
                        (Some(x), Some(y)) => first_difference(x, y, at),
                        (x, y) => format!("at {at}: expected {x:?}, got {y:?}"),
                    };
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    return first_difference(x, y, format!("{at}/{i}"));
                }
            }
        }
        _ => {}
    }
    format!("at {at}: expected {want}, got {got}")
}

proptest! {
    // 512 cases by default; `PROPTEST_CASES=N` runs more (a long local run, or CI's).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn pods((cfg, knobs) in config(), pod in pod()) {
        check(&Engine::new(cfg), &knobs, Kind::Pod, &pod, false)?;
    }

    #[test]
    fn services((cfg, knobs) in config(), svc in service()) {
        check(&Engine::new(cfg), &knobs, Kind::Service, &svc, false)?;
    }

    #[test]
    fn cronjobs((cfg, knobs) in config(), cj in cronjob()) {
        check(&Engine::new(cfg.clone()), &knobs, Kind::CronJob, &cj, false)?;
        check(&Engine::new(cfg), &knobs, Kind::CronJob, &cj, true)?;
    }

    #[test]
    fn deployments_preview((cfg, knobs) in config(), d in deployment()) {
        check(&Engine::new(cfg), &knobs, Kind::Deployment, &d, true)?;
    }

    #[test]
    fn the_tape_and_serde_values_give_the_same_outcome(
        (cfg, _) in config(),
        obj in prop_oneof![pod(), service(), cronjob()],
        update in any::<bool>(),
    ) {
        let engine = Engine::new(cfg);
        let kind = Kind::from_type_meta(obj["apiVersion"].as_str().unwrap(), obj["kind"].as_str().unwrap());
        let mut bytes = serde_json::to_vec(&obj).unwrap();
        let tape = simd_json::to_tape(&mut bytes).unwrap();
        let op = if update { kube::core::admission::Operation::Update } else { kube::core::admission::Operation::Create };
        prop_assert_eq!(engine.admit(kind, &op, tape.as_value()), engine.admit(kind, &op, &obj));
    }

    #[test]
    fn reviews_always_allow(pod in pod(), uid in "[a-f0-9-]{1,36}") {
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": "CREATE", "userInfo": {}, "object": pod}
        })).unwrap();
        let reviewed = admission::review(&Engine::default(), &body).unwrap();
        let resp: Value = serde_json::from_slice(&reviewed.response_json()).unwrap();
        prop_assert_eq!(&resp["response"]["uid"], &json!(uid));
        prop_assert_eq!(&resp["response"]["allowed"], &json!(true));
        if let Some(w) = resp["response"]["warnings"].as_array() {
            prop_assert!(w.iter().all(|l| l.as_str().is_some_and(|s| !s.contains('\n') && s.chars().count() <= 256)));
        }
    }
}
