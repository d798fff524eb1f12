//! Structure-aware inputs: `arbitrary` builds Pods, Services, CronJobs, workloads and
//! Lists (containers, init containers, env with value/valueFrom, ports, labels,
//! annotations with `apm.datadoghq.com/env` JSON and `proxy.istio.io/config` YAML or
//! JSON, keys with `/` and `~`), wrapped in AdmissionReviews or manifest streams, so
//! the fuzzer spends its time in the rules rather than in the JSON parser's error paths.
//!
//! Every level can also come out missing, `null` or of the wrong type, and most strings
//! are drawn from pools of meaningful values with an arbitrary string as the fallback.

// Generated values live for one fuzz iteration; boxing the large variants buys nothing.
#![allow(clippy::large_enum_variant)]

use arbitrary::Arbitrary;
use serde_json::{Map, Value, json};
use tracepatch::ProxyConfigNode as Node;

// === strings ===

/// A string: one of a pool of meaningful values, or anything.
#[derive(Arbitrary, Debug)]
pub enum S<const POOL: usize> {
    Pool(u8),
    Any(String),
}

const P_KEY: usize = 0;
const P_LABEL_VALUE: usize = 1;
const P_CONTAINER: usize = 2;
const P_IMAGE: usize = 3;
const P_ENV_NAME: usize = 4;
const P_PORT_NAME: usize = 5;
const P_PROTOCOL: usize = 6;
const P_APP_PROTOCOL: usize = 7;
const P_UID: usize = 8;
const P_OBJECT_NAME: usize = 9;
const P_PROXY_CONFIG: usize = 10;
const P_ENV_ANNOTATION: usize = 11;
const P_SUBRESOURCE: usize = 12;
const P_RESTART: usize = 13;

const POOLS: [&[&str]; 14] = [
    // P_KEY: label and annotation keys the rules read, and awkward pointer tokens.
    &[
        "app",
        "app.kubernetes.io/name",
        "app.kubernetes.io/component",
        "sidecar.istio.io/inject",
        "istio.io/dataplane-mode",
        "tracepatch.io/enabled",
        "tags.datadoghq.com/env",
        "tags.datadoghq.com/service",
        "tags.datadoghq.com/version",
        "agent.datadoghq.com/component",
        "apm.datadoghq.com/env",
        "proxy.istio.io/config",
        "tracepatch.io/env",
        "a~b/c~1d",
        "x/y/z",
        "~",
        "/",
        "~1",
        "~0",
        "",
        "-",
        "0",
    ],
    // P_LABEL_VALUE
    &[
        "true",
        "false",
        "TRUE",
        "datadog-agent",
        "datadog-cluster-agent",
        "datadog-cluster-checks-runner",
        "prod-datadog",
        "agent",
        "cluster-agent",
        "clusterchecks-agent",
        "opentelemetry-collector",
        "none",
        "ambient",
        "prod",
        "web",
        "",
        "a b",
        "line\nbreak",
        "x~y/z",
        "-leading",
        "0123456789012345678901234567890123456789012345678901234567890123",
        "v1.2.3",
    ],
    // P_CONTAINER
    &[
        "istio-proxy",
        "app",
        "agent",
        "worker",
        "",
        "istio-proxy ",
        "ISTIO-PROXY",
    ],
    // P_IMAGE
    &[
        "docker.io/istio/proxyv2:1.22.0",
        "gcr.io/datadoghq/agent:7",
        "eu.gcr.io/datadoghq/agent",
        "datadog/agent:latest",
        "datadog/cluster-agent",
        "index.docker.io/datadog/agent@sha256:ab",
        "public.ecr.aws/datadog/cluster-agent:7",
        "registry.datadoghq.com/agent:7",
        "otel/opentelemetry-collector-contrib:0.98.0",
        "ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-k8s:0.9",
        "docker.io/library/nginx:1",
        "shop/web:1",
        "localhost:5000/datadog/agent",
        "gcr.io/datadoghq/dd-lib-java-init:v1",
        "",
        ":",
        "@",
        "/",
    ],
    // P_ENV_NAME
    &[
        "DD_ENV",
        "DD_SERVICE",
        "DD_VERSION",
        "DD_TRACE_SAMPLING_RULES",
        "DD_X",
        "PATH",
        "1BAD",
        "A B",
        "dd.ok-name",
        "",
        "É",
        "_",
    ],
    // P_PORT_NAME
    &[
        "traceport",
        "tcp-traceport",
        "http-trace",
        "TCP-x",
        "grpc-web",
        "dogstatsdport",
        "a-very-long-tp",
        "otlp-grpc",
        "otlp-http",
        "zipkin",
        "tcp",
        "tcp-",
        "http",
        "",
        "tcp-otlp-grpc",
        "tcp-zipkin",
    ],
    // P_PROTOCOL
    &["TCP", "UDP", "SCTP", "tcp", ""],
    // P_APP_PROTOCOL
    &["tcp", "TCP", "http", "kubernetes.io/h2c", ""],
    // P_UID
    &["705ab4f5-6393-11e8-b7cc-42010a800002", "u", "\u{2028}"],
    // P_OBJECT_NAME
    &["web-0", "nightly", "datadog-agent-x2kqp", "", "a\nb", "x/y"],
    // P_PROXY_CONFIG: raw annotation texts (the generated ones come from `ProxyConfig`).
    &[
        "",
        "~",
        "null",
        "proxyMetadata: [broken",
        "- a\n- b\n",
        "proxyMetadata:\n",
        "proxyMetadata: {}\n",
        "{\"proxyMetadata\": null}",
        "# only a comment\n",
        "proxyMetadata:\n  DD_ENV: !!str 1\n",
        "proxyMetadata: &m {DD_ENV: prod}\nother: *m\n",
        "? [complex]\n: key\n",
        "proxyMetadata:\n  DD_ENV: a\n  DD_ENV: b\n",
        "{\"a\": 1, \"a\": 2}",
        "proxyMetadata:\n  DD_ENV: 1\n",
        "proxyMetadata:\n  DD_ENV: \"prod\"\n",
        "tracing:\n  sampling: 10.5\nproxyMetadata:\n  OTHER: \"1\"\n",
        "--- \nproxyMetadata: {}\n",
        "proxyMetadata: {DD_ENV: prod}\n...\n",
        "proxyMetadata:\n  DD_ENV: |\n    multi\n    line\n",
        "concurrency: 0x10\nproxyMetadata: {}\n",
        "{}",
        "[]",
        "\"text\"",
    ],
    // P_ENV_ANNOTATION: raw annotation texts.
    &[
        "{}",
        "{ \"DD_ENV\": }",
        "[1, 2]",
        "{\"DD_ENV\": \"prod\", \"DD_ENV\": \"staging\"}",
        "{\"DD_\\u0045NV\": \"x\"}",
        "{\"DD_ENV\": \"prod\"} trailing",
        "null",
        "",
        " { \"DD_ENV\" : 1e3 , \"B\" : [ 1 , { \"a\" : \"x y\" } ] } ",
        "{\"A\": -0, \"B\": 1.0, \"C\": 12345678901234567890123}",
        "{\"A\": \"\\ud800\"}",
    ],
    // P_SUBRESOURCE
    &["", "status", "ephemeralcontainers"],
    // P_RESTART
    &["Always", "Never", "OnFailure", "always"],
];

impl<const POOL: usize> S<POOL> {
    pub fn get(&self) -> String {
        match self {
            S::Pool(i) => {
                let pool = POOLS[POOL];
                pool[usize::from(*i) % pool.len()].to_owned()
            }
            S::Any(s) => s.clone(),
        }
    }

    pub fn value(&self) -> Value {
        Value::String(self.get())
    }
}

// === generic shapes ===

/// A JSON scalar, for fields of the wrong type.
#[derive(Arbitrary, Debug)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(S<P_LABEL_VALUE>),
    EmptyList,
}

impl Scalar {
    fn value(&self) -> Value {
        match self {
            Scalar::Bool(b) => json!(b),
            Scalar::Int(n) => json!(n),
            Scalar::Float(f) => json!(f),
            Scalar::Str(s) => s.value(),
            Scalar::EmptyList => json!([]),
        }
    }
}

/// A field that is usually what it should be, but may be missing, null or wrong.
#[derive(Arbitrary, Debug)]
pub enum Shape<T> {
    Ok(T),
    Missing,
    Null,
    Wrong(Scalar),
}

impl<T> Shape<T> {
    fn put(&self, map: &mut Map<String, Value>, key: &str, f: impl FnOnce(&T) -> Value) {
        match self {
            Shape::Ok(t) => {
                map.insert(key.into(), f(t));
            }
            Shape::Missing => {}
            Shape::Null => {
                map.insert(key.into(), Value::Null);
            }
            Shape::Wrong(s) => {
                map.insert(key.into(), s.value());
            }
        }
    }
}

fn string_map(entries: &[(S<P_KEY>, LabelValue)]) -> Value {
    Value::Object(entries.iter().map(|(k, v)| (k.get(), v.value())).collect())
}

#[derive(Arbitrary, Debug)]
pub enum LabelValue {
    Str(S<P_LABEL_VALUE>),
    Other(Scalar),
}

impl LabelValue {
    fn value(&self) -> Value {
        match self {
            LabelValue::Str(s) => s.value(),
            LabelValue::Other(s) => s.value(),
        }
    }
}

// === metadata and annotations ===

#[derive(Arbitrary, Debug)]
pub struct Meta {
    name: Option<S<P_OBJECT_NAME>>,
    generate_name: Option<S<P_OBJECT_NAME>>,
    labels: Shape<Vec<(S<P_KEY>, LabelValue)>>,
    annotations: Shape<Annotations>,
    extra: bool,
}

impl Meta {
    fn value(&self) -> Value {
        let mut m = Map::new();
        if let Some(n) = &self.name {
            m.insert("name".into(), n.value());
        }
        if let Some(g) = &self.generate_name {
            m.insert("generateName".into(), g.value());
        }
        self.labels.put(&mut m, "labels", |l| string_map(l));
        self.annotations
            .put(&mut m, "annotations", Annotations::value);
        if self.extra {
            m.insert(
                "managedFields".into(),
                json!([{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}]),
            );
        }
        Value::Object(m)
    }
}

#[derive(Arbitrary, Debug)]
pub struct Annotations {
    plain: Vec<(S<P_KEY>, LabelValue)>,
    env: Option<(EnvAnnotationKey, EnvAnnotation)>,
    proxy: Option<ProxyAnnotation>,
}

impl Annotations {
    fn value(&self) -> Value {
        let mut m = match string_map(&self.plain) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if let Some((key, env)) = &self.env {
            m.insert(key.get().into(), env.value());
        }
        if let Some(p) = &self.proxy {
            m.insert("proxy.istio.io/config".into(), p.value());
        }
        Value::Object(m)
    }
}

#[derive(Arbitrary, Debug)]
pub enum EnvAnnotationKey {
    Datadog,
    Neutral,
}

impl EnvAnnotationKey {
    fn get(&self) -> &'static str {
        match self {
            EnvAnnotationKey::Datadog => "apm.datadoghq.com/env",
            EnvAnnotationKey::Neutral => "tracepatch.io/env",
        }
    }
}

/// The `apm.datadoghq.com/env` annotation.
#[derive(Arbitrary, Debug)]
pub enum EnvAnnotation {
    Object {
        vars: Vec<(S<P_ENV_NAME>, EnvValue)>,
        spaced: bool,
    },
    Raw(S<P_ENV_ANNOTATION>),
    NotAString(Scalar),
}

#[derive(Arbitrary, Debug)]
pub enum EnvValue {
    Str(S<P_LABEL_VALUE>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<S<P_LABEL_VALUE>>),
    Map(Vec<(S<P_KEY>, i32)>),
    Number(NumberText),
}

#[derive(Arbitrary, Debug)]
pub enum NumberText {
    Exp,
    NegZero,
    Trailing,
    Big,
}

impl EnvValue {
    fn text(&self) -> String {
        match self {
            EnvValue::Str(s) => json!(s.get()).to_string(),
            EnvValue::Int(n) => n.to_string(),
            EnvValue::Float(f) => json!(f).to_string(),
            EnvValue::Bool(b) => b.to_string(),
            EnvValue::Null => "null".into(),
            EnvValue::List(l) => Value::Array(l.iter().map(S::value).collect()).to_string(),
            EnvValue::Map(entries) => {
                let body: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{}: {v}", json!(k.get())))
                    .collect();
                format!("{{ {} }}", body.join(" , "))
            }
            EnvValue::Number(n) => match n {
                NumberText::Exp => "1e3".into(),
                NumberText::NegZero => "-0".into(),
                NumberText::Trailing => "0.50".into(),
                NumberText::Big => "123456789012345678901234567890".into(),
            },
        }
    }
}

impl EnvAnnotation {
    fn value(&self) -> Value {
        match self {
            EnvAnnotation::Object { vars, spaced } => {
                let sep = if *spaced { " , " } else { "," };
                let body: Vec<String> = vars
                    .iter()
                    .map(|(k, v)| format!("{}:{}", json!(k.get()), v.text()))
                    .collect();
                Value::String(format!("{{{}}}", body.join(sep)))
            }
            EnvAnnotation::Raw(s) => s.value(),
            EnvAnnotation::NotAString(s) => s.value(),
        }
    }
}

/// The `proxy.istio.io/config` annotation.
#[derive(Arbitrary, Debug)]
pub enum ProxyAnnotation {
    Generated(ProxyConfig),
    Raw(S<P_PROXY_CONFIG>),
    NotAString(Scalar),
}

#[derive(Arbitrary, Debug)]
pub struct ProxyConfig {
    json: bool,
    before: Vec<(S<P_KEY>, ProxyScalar)>,
    metadata: Shape<Vec<(S<P_ENV_NAME>, ProxyScalar)>>,
    after: Vec<(S<P_KEY>, ProxyScalar)>,
}

#[derive(Arbitrary, Debug)]
pub enum ProxyScalar {
    Str(S<P_LABEL_VALUE>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<S<P_LABEL_VALUE>>),
}

impl ProxyScalar {
    fn node(&self) -> Node {
        match self {
            ProxyScalar::Str(s) => Node::Str(s.get()),
            ProxyScalar::Int(n) => Node::I64(*n),
            ProxyScalar::Float(f) if f.is_finite() => Node::F64(*f),
            ProxyScalar::Float(_) => Node::F64(0.5),
            ProxyScalar::Bool(b) => Node::Bool(*b),
            ProxyScalar::Null => Node::Null,
            ProxyScalar::List(l) => Node::Seq(l.iter().map(|s| Node::Str(s.get())).collect()),
        }
    }
}

fn entries<const P: usize>(list: &[(S<P>, ProxyScalar)]) -> Vec<(String, Node)> {
    let mut out: Vec<(String, Node)> = Vec::new();
    for (k, v) in list {
        let k = k.get();
        // Duplicate keys come from the raw pool; generated ones stay readable.
        if k != "proxyMetadata" && !out.iter().any(|(o, _)| *o == k) {
            out.push((k, v.node()));
        }
    }
    out
}

impl ProxyAnnotation {
    fn value(&self) -> Value {
        match self {
            ProxyAnnotation::Generated(c) => {
                let mut root = entries(&c.before);
                let metadata = match &c.metadata {
                    Shape::Ok(vars) => Some(Node::Map(entries(vars))),
                    Shape::Missing => None,
                    Shape::Null => Some(Node::Null),
                    Shape::Wrong(_) => Some(Node::Seq(vec![Node::Str("x".into())])),
                };
                if let Some(m) = metadata {
                    root.push(("proxyMetadata".into(), m));
                }
                for (k, v) in entries(&c.after) {
                    if !root.iter().any(|(o, _)| *o == k) {
                        root.push((k, v));
                    }
                }
                let root = Node::Map(root);
                let text = if c.json {
                    serde_json::to_string(&root).unwrap_or_default()
                } else {
                    serde_saphyr::to_string(&root).unwrap_or_default()
                };
                Value::String(text)
            }
            ProxyAnnotation::Raw(s) => s.value(),
            ProxyAnnotation::NotAString(s) => s.value(),
        }
    }
}

// === containers ===

#[derive(Arbitrary, Debug)]
pub struct Container {
    name: Shape<S<P_CONTAINER>>,
    image: Option<S<P_IMAGE>>,
    env: Shape<Vec<EnvEntry>>,
    ports: Shape<Vec<Shape<Port>>>,
    restart_policy: Option<S<P_RESTART>>,
    extra: bool,
}

impl Container {
    fn value(&self) -> Value {
        let mut c = Map::new();
        self.name.put(&mut c, "name", S::value);
        if let Some(i) = &self.image {
            c.insert("image".into(), i.value());
        }
        self.env.put(&mut c, "env", |list| {
            Value::Array(list.iter().map(EnvEntry::value).collect())
        });
        self.ports.put(&mut c, "ports", |list| ports(list, true));
        if let Some(r) = &self.restart_policy {
            c.insert("restartPolicy".into(), r.value());
        }
        if self.extra {
            c.insert("resources".into(), json!({"limits": {"memory": "1Gi"}}));
            c.insert("futureField".into(), json!({"x": [1, {"y": null}]}));
        }
        Value::Object(c)
    }
}

#[derive(Arbitrary, Debug)]
pub enum EnvEntry {
    Value(S<P_ENV_NAME>, S<P_LABEL_VALUE>),
    ValueFrom(S<P_ENV_NAME>),
    ValueFromNull(S<P_ENV_NAME>, S<P_LABEL_VALUE>),
    NameOnly(S<P_ENV_NAME>),
    ValueNotAString(S<P_ENV_NAME>, Scalar),
    NoName(S<P_LABEL_VALUE>),
    NotAnObject(Scalar),
}

impl EnvEntry {
    fn value(&self) -> Value {
        match self {
            EnvEntry::Value(n, v) => json!({"name": n.get(), "value": v.get()}),
            EnvEntry::ValueFrom(n) => {
                json!({"name": n.get(), "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}})
            }
            EnvEntry::ValueFromNull(n, v) => {
                json!({"name": n.get(), "value": v.get(), "valueFrom": null})
            }
            EnvEntry::NameOnly(n) => json!({"name": n.get()}),
            EnvEntry::ValueNotAString(n, v) => json!({"name": n.get(), "value": v.value()}),
            EnvEntry::NoName(v) => json!({"value": v.get()}),
            EnvEntry::NotAnObject(s) => s.value(),
        }
    }
}

#[derive(Arbitrary, Debug)]
pub struct Port {
    name: Option<Shape<S<P_PORT_NAME>>>,
    number: Option<PortNumber>,
    protocol: Option<Shape<S<P_PROTOCOL>>>,
    app_protocol: Option<Shape<S<P_APP_PROTOCOL>>>,
    target_port: Option<TargetPort>,
}

#[derive(Arbitrary, Debug)]
pub enum PortNumber {
    TracePort,
    StatsD,
    Http,
    OtlpGrpc,
    OtlpHttp,
    Zipkin,
    Any(u16),
    Negative,
    Float,
    AsString,
    Huge,
}

impl PortNumber {
    fn value(&self) -> Value {
        match self {
            PortNumber::TracePort => json!(8126),
            PortNumber::StatsD => json!(8125),
            PortNumber::Http => json!(80),
            PortNumber::OtlpGrpc => json!(4317),
            PortNumber::OtlpHttp => json!(4318),
            PortNumber::Zipkin => json!(9411),
            PortNumber::Any(n) => json!(n),
            PortNumber::Negative => json!(-8126),
            PortNumber::Float => json!(8126.0),
            PortNumber::AsString => json!("8126"),
            PortNumber::Huge => json!(u64::MAX),
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum TargetPort {
    Name(S<P_PORT_NAME>),
    Number(PortNumber),
}

fn ports(list: &[Shape<Port>], container: bool) -> Value {
    let mut out = Vec::new();
    for p in list {
        let mut holder = Map::new();
        p.put(&mut holder, "p", |p| p.value(container));
        match holder.remove("p") {
            Some(v) => out.push(v),
            None => out.push(json!({})),
        }
    }
    Value::Array(out)
}

impl Port {
    fn value(&self, container: bool) -> Value {
        let mut p = Map::new();
        if let Some(n) = &self.name {
            n.put(&mut p, "name", S::value);
        }
        if let Some(n) = &self.number {
            let key = if container { "containerPort" } else { "port" };
            p.insert(key.into(), n.value());
        }
        if let Some(proto) = &self.protocol {
            proto.put(&mut p, "protocol", S::value);
        }
        if !container {
            if let Some(a) = &self.app_protocol {
                a.put(&mut p, "appProtocol", S::value);
            }
            match &self.target_port {
                Some(TargetPort::Name(n)) => {
                    p.insert("targetPort".into(), n.value());
                }
                Some(TargetPort::Number(n)) => {
                    p.insert("targetPort".into(), n.value());
                }
                None => {}
            }
        }
        Value::Object(p)
    }
}

// === objects ===

#[derive(Arbitrary, Debug)]
pub struct PodTemplate {
    meta: Shape<Meta>,
    spec: Shape<PodSpec>,
}

#[derive(Arbitrary, Debug)]
pub struct PodSpec {
    containers: Shape<Vec<Shape<Container>>>,
    init_containers: Shape<Vec<Shape<Container>>>,
}

fn containers(list: &[Shape<Container>]) -> Value {
    let mut out = Vec::new();
    for c in list {
        let mut holder = Map::new();
        c.put(&mut holder, "c", Container::value);
        out.push(holder.remove("c").unwrap_or_else(|| json!({})));
    }
    Value::Array(out)
}

impl PodTemplate {
    fn fill(&self, m: &mut Map<String, Value>) {
        self.meta.put(m, "metadata", Meta::value);
        self.spec.put(m, "spec", |s| {
            let mut spec = Map::new();
            s.containers.put(&mut spec, "containers", |l| containers(l));
            s.init_containers
                .put(&mut spec, "initContainers", |l| containers(l));
            spec.insert("restartPolicy".into(), json!("Always"));
            Value::Object(spec)
        });
    }

    fn value(&self) -> Value {
        let mut m = Map::new();
        self.fill(&mut m);
        Value::Object(m)
    }
}

#[derive(Arbitrary, Debug)]
pub enum Workload {
    Deployment,
    DeploymentV1beta1,
    DaemonSet,
    StatefulSet,
    ReplicaSet,
    Job,
}

#[derive(Arbitrary, Debug)]
pub enum Object {
    Pod(PodTemplate),
    Service {
        meta: Shape<Meta>,
        ports: Shape<Vec<Shape<Port>>>,
    },
    CronJob {
        meta: Shape<Meta>,
        job_meta: Shape<Meta>,
        template: Shape<PodTemplate>,
    },
    Workload {
        kind: Workload,
        meta: Shape<Meta>,
        template: Shape<PodTemplate>,
    },
    ConfigMap {
        meta: Shape<Meta>,
        data: Vec<(S<P_KEY>, S<P_LABEL_VALUE>)>,
    },
}

impl Object {
    /// `(apiVersion, group, kind)` as a manifest and a review would name it.
    pub fn type_meta(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Object::Pod(_) => ("v1", "", "Pod"),
            Object::Service { .. } => ("v1", "", "Service"),
            Object::CronJob { .. } => ("batch/v1", "batch", "CronJob"),
            Object::Workload { kind, .. } => match kind {
                Workload::Deployment => ("apps/v1", "apps", "Deployment"),
                Workload::DeploymentV1beta1 => ("extensions/v1beta1", "extensions", "Deployment"),
                Workload::DaemonSet => ("apps/v1", "apps", "DaemonSet"),
                Workload::StatefulSet => ("apps/v1", "apps", "StatefulSet"),
                Workload::ReplicaSet => ("apps/v1", "apps", "ReplicaSet"),
                Workload::Job => ("batch/v1", "batch", "Job"),
            },
            Object::ConfigMap { .. } => ("v1", "", "ConfigMap"),
        }
    }

    pub fn value(&self) -> Value {
        let (api_version, _, kind) = self.type_meta();
        let mut m = Map::new();
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
        match self {
            Object::Pod(t) => {
                t.fill(&mut m);
                m.insert("status".into(), json!({"phase": "Pending"}));
            }
            Object::Service { meta, ports: p } => {
                meta.put(&mut m, "metadata", Meta::value);
                let mut spec = Map::new();
                p.put(&mut spec, "ports", |l| ports(l, false));
                spec.insert("selector".into(), json!({"app": "x"}));
                m.insert("spec".into(), Value::Object(spec));
            }
            Object::CronJob {
                meta,
                job_meta,
                template,
            } => {
                meta.put(&mut m, "metadata", Meta::value);
                let mut job = Map::new();
                job_meta.put(&mut job, "metadata", Meta::value);
                let mut job_spec = Map::new();
                template.put(&mut job_spec, "template", PodTemplate::value);
                job.insert("spec".into(), Value::Object(job_spec));
                m.insert(
                    "spec".into(),
                    json!({"schedule": "@daily", "jobTemplate": job}),
                );
            }
            Object::Workload { meta, template, .. } => {
                meta.put(&mut m, "metadata", Meta::value);
                let mut spec = Map::new();
                template.put(&mut spec, "template", PodTemplate::value);
                spec.insert("replicas".into(), json!(2));
                m.insert("spec".into(), Value::Object(spec));
            }
            Object::ConfigMap { meta, data } => {
                meta.put(&mut m, "metadata", Meta::value);
                let data: Map<String, Value> =
                    data.iter().map(|(k, v)| (k.get(), v.value())).collect();
                m.insert("data".into(), Value::Object(data));
            }
        }
        Value::Object(m)
    }
}

// === AdmissionReview ===

#[derive(Arbitrary, Debug)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

#[derive(Arbitrary, Debug)]
pub struct Review {
    pub config: u8,
    object: Shape<Object>,
    /// The review names another kind than the object's (or none at all).
    kind_override: Option<Object>,
    operation: Operation,
    sub_resource: Option<S<P_SUBRESOURCE>>,
    uid: S<P_UID>,
    name: Option<S<P_OBJECT_NAME>>,
    dry_run: Option<bool>,
    old_object: bool,
    pretty: bool,
}

impl Review {
    pub fn value(&self) -> Value {
        let named = match (&self.kind_override, &self.object) {
            (Some(o), _) | (None, Shape::Ok(o)) => o.type_meta(),
            (None, _) => ("v1", "", "Pod"),
        };
        let (_, group, kind) = named;
        let version = if group == "extensions" {
            "v1beta1"
        } else {
            "v1"
        };
        let mut req = Map::new();
        req.insert("uid".into(), self.uid.value());
        req.insert(
            "kind".into(),
            json!({"group": group, "version": version, "kind": kind}),
        );
        req.insert(
            "resource".into(),
            json!({"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())}),
        );
        if let Some(s) = &self.sub_resource {
            req.insert("subResource".into(), s.value());
        }
        if let Some(n) = &self.name {
            req.insert("name".into(), n.value());
        }
        req.insert("namespace".into(), json!("shop"));
        let op = match self.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        };
        req.insert("operation".into(), json!(op));
        req.insert(
            "userInfo".into(),
            json!({"username": "system:serviceaccount:kube-system:replicaset-controller"}),
        );
        self.object.put(&mut req, "object", Object::value);
        if self.old_object {
            let old = req.get("object").cloned().unwrap_or(Value::Null);
            req.insert("oldObject".into(), old);
        } else {
            req.insert("oldObject".into(), Value::Null);
        }
        if let Some(d) = self.dry_run {
            req.insert("dryRun".into(), json!(d));
        }
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": req,
        })
    }

    pub fn body(&self) -> Vec<u8> {
        let v = self.value();
        let out = if self.pretty {
            serde_json::to_vec_pretty(&v)
        } else {
            serde_json::to_vec(&v)
        };
        out.unwrap_or_default()
    }
}

// === manifest streams for `mutate` ===

#[derive(Arbitrary, Debug)]
pub enum Doc {
    Object(Object),
    List(Vec<Object>),
    Review(Review),
    /// A document that is not a mapping, or is empty, or only a comment.
    Odd(OddDoc),
}

#[derive(Arbitrary, Debug)]
pub enum OddDoc {
    Scalar(Scalar),
    Empty,
    Comment,
}

#[derive(Arbitrary, Debug)]
pub enum Format {
    Yaml,
    Json,
    JsonPretty,
}

#[derive(Arbitrary, Debug)]
pub struct Manifests {
    pub config: u8,
    docs: Vec<Doc>,
    format: Format,
    leading_separator: bool,
    bom: bool,
    crlf: bool,
}

impl Manifests {
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.bom {
            out.push('\u{feff}');
        }
        let yaml = matches!(self.format, Format::Yaml);
        if self.leading_separator && yaml {
            out.push_str("---\n");
        }
        for (i, doc) in self.docs.iter().enumerate() {
            let value = match doc {
                Doc::Object(o) => Some(o.value()),
                Doc::List(items) => Some(json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": items.iter().map(Object::value).collect::<Vec<_>>(),
                })),
                Doc::Review(r) => Some(r.value()),
                Doc::Odd(OddDoc::Scalar(s)) => Some(s.value()),
                Doc::Odd(OddDoc::Empty) => None,
                Doc::Odd(OddDoc::Comment) => {
                    if yaml {
                        out.push_str("# a comment\n");
                    }
                    None
                }
            };
            if yaml && i > 0 {
                out.push_str("---\n");
            }
            if let Some(v) = value {
                let text = match self.format {
                    Format::Yaml => serde_saphyr::to_string(&v).unwrap_or_default(),
                    Format::Json => serde_json::to_string(&v).unwrap_or_default() + "\n",
                    Format::JsonPretty => {
                        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
                    }
                };
                out.push_str(&text);
            }
        }
        if self.crlf {
            out = out.replace('\n', "\r\n");
        }
        out
    }
}
