//! Property tests over generated Pods, Services and CronJobs (and workloads, and
//! configurations): random containers, init containers, env (value and valueFrom),
//! ports, labels and annotations, including keys with `/` and `~` and missing or null
//! metadata maps.
//!
//! For every generated object:
//! - the patch applies cleanly with the json-patch crate;
//! - the rules on the result produce an empty patch (idempotence);
//! - every JSON value the rules do not own is unchanged;
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
    ];
    let value = prop_oneof![
        Just(json!("prod")),
        Just(json!(true)),
        Just(json!(0.5)),
        Just(json!(1e3)),
        Just(Value::Null),
        Just(json!([{"service": "a", "sample_rate": 0.5}])),
        Just(json!({"z": 1, "a": "x"})),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    prop_oneof![
        8 => prop::collection::vec((name, value), 0..6).prop_map(|pairs| {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", json!(k), v))
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
    (name, 0..4u8, "[a-z0-9]{0,6}").prop_map(|(name, shape, v)| match shape {
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

fn config() -> impl Strategy<Value = Config> {
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
                c
            },
        )
}

// === the properties ===

/// Removes what the rules own, then empty maps and lists (parents the rules may have
/// created), so what is left must be identical before and after.
fn without_owned(v: &Value) -> Value {
    const OWNED_KEYS: [&str; 5] = [
        "sidecar.istio.io/inject",
        "istio.io/dataplane-mode",
        "proxy.istio.io/config",
        "app",
        "appProtocol",
    ];
    fn strip(v: &Value, parent_key: &str) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, child) in m {
                    let owned_here = match parent_key {
                        "labels" | "annotations" => OWNED_KEYS.contains(&k.as_str()),
                        "ports" | "port" => k == "appProtocol" || k == "name" || k == "targetPort",
                        // Checked entry by entry in `env_lists_only_grow`.
                        "containers" | "initContainers" => k == "env",
                        _ => false,
                    };
                    if owned_here {
                        continue;
                    }
                    let child = strip(child, k);
                    let empty = match &child {
                        Value::Null => true,
                        Value::Object(o) => o.is_empty(),
                        Value::Array(a) => a.is_empty(),
                        _ => false,
                    };
                    if !empty {
                        out.insert(k.clone(), child);
                    }
                }
                Value::Object(out)
            }
            // Entries of ports and env lists: their parent key is the list's.
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| {
                        strip(
                            x,
                            if parent_key == "ports" {
                                "port"
                            } else {
                                parent_key
                            },
                        )
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    strip(v, "")
}

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

fn check(engine: &Engine, kind: Kind, obj: &Value, preview: bool) -> Result<(), TestCaseError> {
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
    prop_assert_eq!(without_owned(obj), without_owned(&patched));
    env_lists_only_grow(obj, &patched).map_err(TestCaseError::fail)?;
    if let Some(pod) = obj.pointer("/spec/template") {
        let after = patched.pointer("/spec/template").unwrap_or(&Value::Null);
        env_lists_only_grow(pod, after).map_err(TestCaseError::fail)?;
    }
    additions_are_valid(&out.patch).map_err(TestCaseError::fail)?;
    port_names_stay_unique(obj, &patched).map_err(TestCaseError::fail)?;
    prop_assert_eq!(out.patch.is_empty(), out.applied.is_empty());
    Ok(())
}

proptest! {
    // 512 cases by default; `PROPTEST_CASES=N` runs more (a long local run, or CI's).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn pods(cfg in config(), pod in pod()) {
        check(&Engine::new(cfg), Kind::Pod, &pod, false)?;
    }

    #[test]
    fn services(cfg in config(), svc in service()) {
        check(&Engine::new(cfg), Kind::Service, &svc, false)?;
    }

    #[test]
    fn cronjobs(cfg in config(), cj in cronjob()) {
        check(&Engine::new(cfg.clone()), Kind::CronJob, &cj, false)?;
        check(&Engine::new(cfg), Kind::CronJob, &cj, true)?;
    }

    #[test]
    fn deployments_preview(cfg in config(), d in deployment()) {
        check(&Engine::new(cfg), Kind::Deployment, &d, true)?;
    }

    #[test]
    fn the_tape_and_serde_values_give_the_same_outcome(
        cfg in config(),
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
