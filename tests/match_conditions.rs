//! The webhook's `matchConditions` against the rules, differentially: for every golden
//! fixture and for generated objects, "some rule changes or warns about the object"
//! must imply "the condition is true" (a false condition means the apiserver never
//! calls tracepatch: a silent miss), and no condition may fail to evaluate (the
//! apiserver would then apply `failurePolicy: Ignore` and skip the call: also a miss).
//!
//! The conditions are evaluated by cel-rust (the `cel` crate). The expressions use only
//! what it and Kubernetes' cel-go both implement (see `src/webhook_config/conditions.rs`).
//! A census over 10,000 generated objects counts how many irrelevant ones the
//! conditions keep from the webhook.

use std::path::Path;

use cel::{Context, Program};
use kube::core::admission::Operation;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use tracepatch::config::Config;
use tracepatch::engine::{Engine, Kind};
use tracepatch::webhook_config::render_conditions;

/// Compiled conditions of one configuration, with its engine.
struct Subject {
    engine: Engine,
    pods: Program,
    services: Program,
    cronjobs: Program,
}

impl Subject {
    fn new(config: Config) -> Self {
        let c = render_conditions(&config);
        let compile = |e: &str| {
            Program::compile(e).unwrap_or_else(|err| panic!("does not compile: {err}\n{e}"))
        };
        Subject {
            pods: compile(&c.pods),
            services: compile(&c.services),
            cronjobs: compile(&c.cronjobs),
            engine: Engine::new(config),
        }
    }

    /// The condition's value for the object, or why it could not be evaluated.
    fn condition(&self, kind: Kind, obj: &Value) -> Result<bool, String> {
        let program = match kind {
            Kind::Pod => &self.pods,
            Kind::Service => &self.services,
            Kind::CronJob => &self.cronjobs,
            other => panic!("no webhook for {other:?}"),
        };
        let mut ctx = Context::default();
        ctx.add_variable("object", cel::to_value(obj).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("not a bool: {other:?}")),
            Err(e) => Err(format!("evaluation error: {e}")),
        }
    }

    /// Whether the webhook would change or warn about the object, on every operation
    /// its webhook is registered for.
    fn relevant(&self, kind: Kind, obj: &Value) -> bool {
        let ops: &[Operation] = match kind {
            Kind::Pod => &[Operation::Create],
            _ => &[Operation::Create, Operation::Update],
        };
        ops.iter().any(|op| {
            let out = self.engine.admit(kind, op, obj);
            !out.patch.is_empty() || !out.warnings.is_empty()
        })
    }

    /// The property: relevant implies true, and the condition always evaluates.
    fn check(&self, kind: Kind, obj: &Value) -> Result<bool, String> {
        // The opt-out label is handled by the webhook's objectSelector, before any
        // condition; such objects never reach either.
        if self.engine.opted_out(obj) {
            return Ok(false);
        }
        let cond = self
            .condition(kind, obj)
            .map_err(|e| format!("{e}\nobject: {obj}"))?;
        if self.relevant(kind, obj) && !cond {
            return Err(format!(
                "the rules change or warn about this {kind:?}, but the condition is false:\n{obj}"
            ));
        }
        Ok(cond)
    }
}

fn config(yaml: &str) -> Config {
    Config::parse(yaml, Path::new("test.yaml")).unwrap()
}

/// Configurations covering every option that changes a condition.
fn configs() -> Vec<(&'static str, Config)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        ("default", Config::default()),
        (
            "otel-collector",
            Config::load(&root.join("config/otel-collector.yaml")).unwrap(),
        ),
        (
            "name mode, pod ports renamed, no tags",
            config(
                "tracePort:\n  mode: name\n  renamePodPorts: true\n  ports:\n    - name: traceport\n    - port: 4317\n    - name: zipkin\n      port: 9411\ntracerEnv:\n  unifiedServiceTags:\n    enabled: false\n  annotations: [apm.datadoghq.com/env, tracepatch.io/tracer-env]\n",
            ),
        ),
        (
            "glob and negative selectors",
            config(
                "agentSidecar:\n  images: [\"*/otel/*collector*\", \"grafana/agent\"]\n  selectors:\n    - matchExpressions:\n        - {key: app, operator: Glob, values: [\"*-agent\", \"coll?ctor\"]}\n        - {key: tier, operator: NotIn, values: [web]}\n    - matchExpressions:\n        - {key: agent, operator: Exists}\n        - {key: canary, operator: DoesNotExist}\ncronJobApp:\n  label: service\n",
            ),
        ),
        (
            "only rule 4",
            config(
                "tracerEnv: {enabled: false}\nagentSidecar: {enabled: false}\ntracePort: {enabled: false}\n",
            ),
        ),
    ]
}

// === generated objects ===

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &[T]) -> impl Strategy<Value = T> + use<T> {
    prop::sample::select(items.to_vec())
}

fn string_map(
    keys: &'static [&'static str],
    values: &'static [&'static str],
) -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.8,
        prop::collection::btree_map(pick(keys), pick(values), 0..4).prop_map(|m| json!(m)),
    )
}

const LABEL_KEYS: &[&str] = &[
    "app",
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "agent.datadoghq.com/component",
    "tags.datadoghq.com/env",
    "tags.datadoghq.com/service",
    "tier",
    "agent",
    "canary",
    "team",
    "sidecar.istio.io/inject",
];
const LABEL_VALUES: &[&str] = &[
    "web",
    "datadog-agent",
    "datadog-cluster-agent",
    "agent",
    "cluster-agent",
    "prod-datadog",
    "otel-agent",
    "collector",
    "true",
    "false",
    "",
];
const ANNOTATION_KEYS: &[&str] = &[
    "apm.datadoghq.com/env",
    "tracepatch.io/tracer-env",
    "proxy.istio.io/config",
    "sidecar.istio.io/inject",
    "kubectl.kubernetes.io/last-applied-configuration",
    "prometheus.io/scrape",
];
const ANNOTATION_VALUES: &[&str] = &[
    r#"{"DD_ENV":"prod"}"#,
    r#"{"DD_TRACE_SAMPLING_RULES":[{"sample_rate":0.5}]}"#,
    "{}",
    r#"{"DD_ENV": }"#,
    "true",
    "proxyMetadata: {A: b}",
    "",
];
const IMAGES: &[&str] = &[
    "nginx:1.27",
    "docker.io/library/nginx",
    "registry.k8s.io/pause:3.10",
    "gcr.io/datadoghq/agent:7.52.0",
    "datadog/agent",
    "docker.io/datadog/cluster-agent:7@sha256:abcd",
    "public.ecr.aws/datadog/agent:7",
    "gcr.io/datadoghq/agentx",
    "myregistry.local:5000/datadog/agent",
    "otel/opentelemetry-collector-contrib:0.100.0",
    "ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-k8s:0.1",
    "grafana/agent:v0.40",
    "shop/web:1.4.2",
];
const PORT_NAMES: &[&str] = &[
    "traceport",
    "tcp-traceport",
    "http",
    "grpc-otlp",
    "otlp-grpc",
    "zipkin",
    "dogstatsd",
    "",
];
const PORTS: &[u64] = &[80, 443, 8126, 8125, 4317, 4318, 9411, 8080];

fn port(number_field: &'static str) -> impl Strategy<Value = Value> {
    (
        pick(PORT_NAMES),
        pick(PORTS),
        prop::option::of(pick(&["TCP", "UDP"])),
        prop::option::weighted(0.2, pick(&["tcp", "http", "TCP"])),
        prop::option::weighted(
            0.3,
            prop_oneof![
                pick(PORTS).prop_map(|p| json!(p)),
                pick(PORT_NAMES).prop_map(|n| json!(n))
            ],
        ),
    )
        .prop_map(move |(name, number, protocol, app_protocol, target)| {
            let mut p = json!({ number_field: number });
            if !name.is_empty() {
                p["name"] = json!(name);
            }
            if let Some(protocol) = protocol {
                p["protocol"] = json!(protocol);
            }
            if number_field == "port" {
                if let Some(a) = app_protocol {
                    p["appProtocol"] = json!(a);
                }
                if let Some(t) = target {
                    p["targetPort"] = t;
                }
            }
            p
        })
}

fn container(name: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (
        pick(name),
        prop::option::weighted(0.95, pick(IMAGES)),
        prop::option::weighted(0.3, prop::collection::vec(port("containerPort"), 0..3)),
        prop::option::weighted(0.2, Just(json!([{"name": "DD_ENV", "value": "dev"}]))),
    )
        .prop_map(|(name, image, ports, env)| {
            let mut c = json!({ "name": name });
            if let Some(image) = image {
                c["image"] = json!(image);
            }
            if let Some(ports) = ports {
                c["ports"] = json!(ports);
            }
            if let Some(env) = env {
                c["env"] = env;
            }
            c
        })
}

fn metadata() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.95, pick(&["web", "agent-x1", "nightly"])),
        string_map(LABEL_KEYS, LABEL_VALUES),
        prop::option::weighted(0.5, string_map(ANNOTATION_KEYS, ANNOTATION_VALUES)),
    )
        .prop_map(|(name, labels, annotations)| {
            let mut m = json!({});
            if let Some(name) = name {
                m["name"] = json!(name);
            } else {
                m["generateName"] = json!("gen-");
            }
            if let Some(l) = labels {
                m["labels"] = l;
            }
            if let Some(Some(a)) = annotations {
                m["annotations"] = a;
            }
            m
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.98, metadata()),
        prop::collection::vec(container(&["web", "istio-proxy", "agent", "app"]), 0..3),
        prop::option::weighted(
            0.2,
            prop::collection::vec(container(&["init", "istio-proxy"]), 0..2),
        ),
        prop::bool::weighted(0.02),
    )
        .prop_map(|(meta, containers, init, no_spec)| {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
            if let Some(m) = meta {
                pod["metadata"] = m;
            }
            if !no_spec {
                pod["spec"] = json!({ "containers": containers });
                if let Some(init) = init {
                    let init: Vec<Value> = init
                        .into_iter()
                        .map(|mut c| {
                            if c["name"] == "istio-proxy" {
                                c["restartPolicy"] = json!("Always");
                            }
                            c
                        })
                        .collect();
                    pod["spec"]["initContainers"] = json!(init);
                }
            }
            pod
        })
}

fn service() -> impl Strategy<Value = Value> {
    (
        metadata(),
        prop::option::weighted(0.97, prop::collection::vec(port("port"), 0..4)),
    )
        .prop_map(|(meta, ports)| {
            let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"type": "ClusterIP"}});
            if let Some(ports) = ports {
                s["spec"]["ports"] = json!(ports);
            }
            s
        })
}

fn cronjob() -> impl Strategy<Value = Value> {
    (
        metadata(),
        prop::option::weighted(0.9, string_map(LABEL_KEYS, LABEL_VALUES)),
        prop::option::weighted(0.9, string_map(&["app", "service", "app.kubernetes.io/name", "team"], LABEL_VALUES)),
        0..5u8,
    )
        .prop_map(|(meta, job_labels, pod_labels, shape)| {
            let mut cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta});
            let pod_meta = match pod_labels {
                Some(Some(l)) => json!({"labels": l}),
                Some(None) => json!({}),
                None => Value::Null,
            };
            let mut template = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "shop/report:1"}]}});
            if !pod_meta.is_null() {
                template["metadata"] = pod_meta;
            }
            let mut job = json!({"spec": {"template": template}});
            if let Some(Some(l)) = job_labels {
                job["metadata"] = json!({"labels": l});
            }
            cj["spec"] = match shape {
                0 => json!({"schedule": "0 3 * * *"}),
                1 => json!({"schedule": "0 3 * * *", "jobTemplate": {}}),
                _ => json!({"schedule": "0 3 * * *", "jobTemplate": job}),
            };
            cj
        })
}

fn object() -> impl Strategy<Value = (Kind, Value)> {
    prop_oneof![
        3 => pod().prop_map(|p| (Kind::Pod, p)),
        1 => service().prop_map(|s| (Kind::Service, s)),
        1 => cronjob().prop_map(|c| (Kind::CronJob, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2048),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_false_condition_never_hides_an_object_the_rules_change((kind, obj) in object(), which in 0..5usize) {
        thread_local! {
            static SUBJECTS: Vec<(&'static str, Subject)> =
                configs().into_iter().map(|(n, c)| (n, Subject::new(c))).collect();
        }
        SUBJECTS.with(|subjects| {
            let (name, subject) = &subjects[which % subjects.len()];
            subject.check(kind, &obj).map_err(|e| TestCaseError::fail(format!("[{name}] {e}")))
        })?;
    }
}

/// Every golden fixture: its Pods, Services and CronJobs, and the pod templates of its
/// workloads as the pods they become.
#[test]
fn golden_fixtures_that_the_rules_change_are_always_sent() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let subjects: Vec<(&str, Subject)> = configs()
        .into_iter()
        .map(|(n, c)| (n, Subject::new(c)))
        .collect();
    let mut relevant = 0;
    let mut checked = 0;
    for rule in std::fs::read_dir(&root).unwrap() {
        for case in std::fs::read_dir(rule.unwrap().path()).unwrap() {
            let case = case.unwrap().path();
            for input in ["input.yaml", "input.json"] {
                let Ok(bytes) = std::fs::read(case.join(input)) else {
                    continue;
                };
                let Ok(docs) = tracepatch::mutate::parse_documents(&bytes) else {
                    continue;
                };
                let case_config = case.join("config.yaml");
                let own = case_config.exists().then(|| {
                    (
                        "fixture's own",
                        Subject::new(Config::load(&case_config).unwrap()),
                    )
                });
                for doc in docs {
                    for (kind, obj) in admitted_objects(&doc) {
                        for (name, subject) in subjects.iter().chain(own.iter()) {
                            checked += 1;
                            if subject.relevant(kind, &obj) {
                                relevant += 1;
                            }
                            if let Err(e) = subject.check(kind, &obj) {
                                panic!("{} [{name}]: {e}", case.display());
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked > 150 && relevant > 60,
        "{checked} checked, {relevant} relevant"
    );
}

/// The objects a manifest puts through the webhook: itself (Pod, Service, CronJob), the
/// pod a workload's template becomes, or the object inside a saved AdmissionReview.
fn admitted_objects(doc: &Value) -> Vec<(Kind, Value)> {
    let api = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    if kind == "AdmissionReview" {
        return admitted_objects(&doc["request"]["object"]);
    }
    if kind == "List" {
        return doc["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(admitted_objects)
            .collect();
    }
    let k = Kind::from_type_meta(api, kind);
    let mut out = Vec::new();
    if matches!(k, Kind::Pod | Kind::Service | Kind::CronJob) {
        out.push((k, doc.clone()));
    }
    let template = match k {
        Kind::CronJob => doc.pointer("/spec/jobTemplate/spec/template"),
        Kind::Pod | Kind::Service | Kind::Other => None,
        _ => doc.pointer("/spec/template"),
    };
    if let Some(t) = template.filter(|t| t.is_object()) {
        let mut pod = t.clone();
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        out.push((Kind::Pod, pod));
    }
    out
}

/// 10,000 generated objects under the default profile: every relevant one is sent, and
/// most irrelevant ones are not. The counts are printed (`--nocapture`).
#[test]
fn census_of_ten_thousand_generated_objects() {
    let subject = Subject::new(Config::default());
    let mut runner = TestRunner::deterministic();
    let strategy = object();
    let (mut relevant, mut irrelevant, mut irrelevant_sent) = (0u32, 0u32, 0u32);
    for _ in 0..10_000 {
        let (kind, obj) = strategy.new_tree(&mut runner).unwrap().current();
        if subject.engine.opted_out(&obj) {
            continue;
        }
        let sent = subject.check(kind, &obj).unwrap_or_else(|e| panic!("{e}"));
        if subject.relevant(kind, &obj) {
            relevant += 1;
        } else {
            irrelevant += 1;
            irrelevant_sent += u32::from(sent);
        }
    }
    let filtered = irrelevant - irrelevant_sent;
    println!(
        "census: {relevant} relevant (all sent); {irrelevant} irrelevant, of which {filtered} filtered out ({:.1}%) and {irrelevant_sent} sent",
        f64::from(filtered) * 100.0 / f64::from(irrelevant.max(1))
    );
    assert!(
        relevant > 1000 && irrelevant > 1000,
        "{relevant} / {irrelevant}"
    );
    assert!(
        f64::from(filtered) >= 0.8 * f64::from(irrelevant),
        "only {filtered} of {irrelevant} irrelevant objects filtered"
    );
}

#[test]
fn a_condition_that_forgot_a_rule_is_caught() {
    // The harness itself: a condition that ignores rule 4 must fail the check.
    let subject = Subject::new(Config::default());
    let broken = Subject {
        cronjobs: Program::compile("false").unwrap(),
        ..subject
    };
    let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
    assert!(broken.check(Kind::CronJob, &cj).is_err());
    assert_eq!(
        broken.check(
            Kind::Pod,
            &json!({"metadata": {"name": "x"}, "spec": {"containers": []}})
        ),
        Ok(false)
    );
}
