//! Hostile input (issue 6) in the fields the rules and the review decoder read: each
//! field of each rule's input given each wrong JSON type (one test per rule, and one for
//! the review envelope), every node of a Pod, Service and CronJob review removed or
//! replaced by every JSON type, objects that are not objects, and parents missing at
//! every level. Each case through the router without a socket.

mod support;

use serde_json::{Value, json};
use support::hostile::*;

/// Rule 1's inputs in the pod's metadata: the metadata, labels and annotations maps, the tracer annotation and `proxy.istio.io/config`, each of a wrong JSON type.
#[tokio::test]
async fn wrong_types_in_pod_metadata_and_the_tracer_annotations() {
    let pod = pod();
    let env = "/request/object/metadata/annotations/apm.datadoghq.com~1env";
    let proxy = "/request/object/metadata/annotations/proxy.istio.io~1config";
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "pod: metadata a list",
            set(&pod, "/request/object/metadata", json!([1, 2])),
            Want::Unchanged(""),
        ),
        (
            "pod: metadata a string",
            set(&pod, "/request/object/metadata", json!("m")),
            Want::Unchanged(""),
        ),
        (
            "pod: labels a list",
            set(&pod, "/request/object/metadata/labels", json!(["app"])),
            Want::Patched(""),
        ),
        (
            "pod: annotations a string",
            set(&pod, "/request/object/metadata/annotations", json!("a")),
            Want::Unchanged(""),
        ),
        (
            "pod: env annotation a number",
            set(&pod, env, json!(8126)),
            Want::Unchanged("not a string"),
        ),
        (
            "pod: env annotation an object",
            set(&pod, env, json!({"DD_ENV": "prod"})),
            Want::Unchanged("not a string"),
        ),
        (
            "pod: env annotation null",
            set(&pod, env, Value::Null),
            Want::Unchanged("not a string"),
        ),
        (
            "pod: env annotation a bool",
            set(&pod, env, json!(true)),
            Want::Unchanged("not a string"),
        ),
        (
            "pod: env annotation JSON array",
            set(&pod, env, json!(r#"["DD_ENV", "prod"]"#)),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation JSON string",
            set(&pod, env, json!(r#""DD_ENV=prod""#)),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation JSON number",
            set(&pod, env, json!("8126")),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation JSON null",
            set(&pod, env, json!("null")),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation empty",
            set(&pod, env, json!("")),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: env annotation nested values",
            set(
                &pod,
                env,
                json!(r#"{"DD_ENV": {"a": [1, {"b": null}]}, "DD_X": [[[]]], "DD_N": null}"#),
            ),
            Want::Patched("DD_N is null"),
        ),
        (
            "pod: env annotation with trailing garbage",
            set(&pod, env, json!(r#"{"DD_ENV": "prod"} x"#)),
            Want::Unchanged("invalid JSON"),
        ),
        (
            "pod: proxy config a number",
            set(&pod, proxy, json!(1)),
            Want::Patched("not a string; left alone"),
        ),
        (
            "pod: proxy config a list",
            set(&pod, proxy, json!(["a"])),
            Want::Patched("not a string; left alone"),
        ),
        (
            "pod: proxy config a YAML list",
            set(&pod, proxy, json!("- a\n- b\n")),
            Want::Patched("cannot be read"),
        ),
        (
            "pod: proxy config YAML scalar",
            set(&pod, proxy, json!("just text")),
            Want::Patched("cannot be read"),
        ),
        (
            "pod: proxyMetadata a list",
            set(&pod, proxy, json!("proxyMetadata: [a, b]\n")),
            Want::Patched("proxyMetadata is not a map"),
        ),
        (
            "pod: proxyMetadata a JSON string",
            set(&pod, proxy, json!(r#"{"proxyMetadata": "x"}"#)),
            Want::Patched("proxyMetadata is not a map"),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

/// Rule 1's inputs in the pod's spec: the container lists, a container's name, env and its entries, a native sidecar's restartPolicy, each of a wrong JSON type.
#[tokio::test]
async fn wrong_types_in_pod_containers_and_env() {
    let pod = pod();
    let sidecar = "/request/object/spec/containers/1";
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "pod: spec a string",
            set(&pod, "/request/object/spec", json!("spec")),
            Want::Patched(""),
        ),
        (
            "pod: spec a list",
            set(&pod, "/request/object/spec", json!([{"containers": []}])),
            Want::Patched(""),
        ),
        (
            "pod: containers an object",
            set(
                &pod,
                "/request/object/spec/containers",
                json!({"name": "istio-proxy"}),
            ),
            Want::Patched(""),
        ),
        (
            "pod: containers a string",
            set(
                &pod,
                "/request/object/spec/containers",
                json!("istio-proxy"),
            ),
            Want::Patched(""),
        ),
        (
            "pod: containers a list of strings",
            set(
                &pod,
                "/request/object/spec/containers",
                json!(["web", "istio-proxy"]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: containers a list of lists",
            set(
                &pod,
                "/request/object/spec/containers",
                json!([[], [{"name": "istio-proxy"}]]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: container name a number",
            set(&pod, &format!("{sidecar}/name"), json!(7)),
            Want::Patched(""),
        ),
        (
            "pod: container name null",
            set(&pod, &format!("{sidecar}/name"), Value::Null),
            Want::Patched(""),
        ),
        (
            "pod: container name an object",
            set(&pod, &format!("{sidecar}/name"), json!({"istio-proxy": 1})),
            Want::Patched(""),
        ),
        (
            "pod: env a string",
            set(&pod, &format!("{sidecar}/env"), json!("DD_ENV=prod")),
            Want::Patched("env is not a list"),
        ),
        (
            "pod: env an object",
            set(&pod, &format!("{sidecar}/env"), json!({"DD_ENV": "prod"})),
            Want::Patched("env is not a list"),
        ),
        (
            "pod: env a number",
            set(&pod, &format!("{sidecar}/env"), json!(3)),
            Want::Patched("env is not a list"),
        ),
        (
            "pod: env null",
            set(&pod, &format!("{sidecar}/env"), Value::Null),
            Want::Patched(""),
        ),
        (
            "pod: env entries strings",
            set(&pod, &format!("{sidecar}/env"), json!(["DD_ENV", "prod"])),
            Want::Patched(""),
        ),
        (
            "pod: env entry name a number",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": 5, "value": "x"}]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: env entry name null",
            set(&pod, &format!("{sidecar}/env"), json!([{"name": null}])),
            Want::Patched(""),
        ),
        (
            "pod: env entry value a number",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "value": 5}]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: env entry value an object",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "value": {"a": 1}}]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: env valueFrom a string",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "valueFrom": "secret"}]),
            ),
            Want::Patched("set from valueFrom"),
        ),
        (
            "pod: env valueFrom a number",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "valueFrom": 0}]),
            ),
            Want::Patched("set from valueFrom"),
        ),
        (
            "pod: env valueFrom null",
            set(
                &pod,
                &format!("{sidecar}/env"),
                json!([{"name": "DD_ENV", "valueFrom": null, "value": "dev"}]),
            ),
            Want::Patched(""),
        ),
        (
            "pod: native sidecar restartPolicy a list",
            with(&pod, |v| {
                let c = at(v, sidecar).take();
                *at(v, "/request/object/spec/containers") = json!([{"name": "web"}]);
                let mut c = c;
                c["restartPolicy"] = json!(["Always"]);
                v["request"]["object"]["spec"]["initContainers"] = json!([c]);
            }),
            Want::Patched(""),
        ),
        (
            "pod: initContainers a string",
            with(&pod, |v| {
                v["request"]["object"]["spec"]["initContainers"] = json!("istio-proxy")
            }),
            Want::Patched(""),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

/// Rule 2's inputs: an agent pod's metadata, labels, annotations, images and ports, each of a wrong JSON type.
#[tokio::test]
async fn wrong_types_in_agent_pods() {
    let agent = agent_pod();
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "agent: metadata a list",
            set(&agent, "/request/object/metadata", json!([])),
            Want::Unchanged("metadata is not a map"),
        ),
        (
            "agent: labels a list (found by image)",
            set(&agent, "/request/object/metadata/labels", json!(["app"])),
            Want::Patched("metadata.labels is not a map"),
        ),
        (
            "agent: annotations a string",
            set(&agent, "/request/object/metadata/annotations", json!("a")),
            Want::Patched("metadata.annotations is not a map"),
        ),
        (
            "agent: annotations a number",
            set(&agent, "/request/object/metadata/annotations", json!(5)),
            Want::Patched("metadata.annotations is not a map"),
        ),
        (
            "agent: ports an object",
            set(
                &agent,
                "/request/object/spec/containers/0/ports",
                json!({"traceport": 8126}),
            ),
            Want::Patched(""),
        ),
        (
            "agent: containerPort a string",
            set(
                &agent,
                "/request/object/spec/containers/0/ports/0/containerPort",
                json!("8126"),
            ),
            Want::Patched(""),
        ),
        (
            "agent: image a number",
            set(&agent, "/request/object/spec/containers/0/image", json!(7)),
            Want::Patched(""),
        ),
        (
            "pod found only by image, image a list",
            with(&agent, |v| {
                v["request"]["object"]["metadata"]["labels"] = json!({});
                v["request"]["object"]["spec"]["containers"][0]["image"] =
                    json!(["gcr.io/datadoghq/agent:7"]);
            }),
            Want::Unchanged(""),
        ),
        (
            "agent: inject label a number",
            set(
                &agent,
                "/request/object/metadata/labels/sidecar.istio.io~1inject",
                json!(1),
            ),
            Want::Unchanged(""),
        ),
        (
            "agent: inject annotation an object",
            set(
                &agent,
                "/request/object/metadata/annotations/sidecar.istio.io~1inject",
                json!({}),
            ),
            Want::Unchanged(""),
        ),
        (
            "agent: dataplane-mode label a number",
            set(
                &agent,
                "/request/object/metadata/labels/istio.io~1dataplane-mode",
                json!(0),
            ),
            Want::Patched(""),
        ),
        (
            "agent: opt-out label a bool",
            set(
                &agent,
                "/request/object/metadata/labels/tracepatch.io~1enabled",
                json!(false),
            ),
            Want::Patched(""),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

/// Rule 3's inputs: a Service's spec, ports and each port field, each of a wrong JSON type.
#[tokio::test]
async fn wrong_types_in_service_ports() {
    let svc = service();
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "service: spec a string",
            set(&svc, "/request/object/spec", json!("ports")),
            Want::Unchanged(""),
        ),
        (
            "service: ports a string",
            set(&svc, "/request/object/spec/ports", json!("8126")),
            Want::Unchanged(""),
        ),
        (
            "service: ports an object",
            set(
                &svc,
                "/request/object/spec/ports",
                json!({"name": "traceport", "port": 8126}),
            ),
            Want::Unchanged(""),
        ),
        (
            "service: ports a list of numbers",
            set(&svc, "/request/object/spec/ports", json!([8126])),
            Want::Unchanged(""),
        ),
        (
            "service: port number a string",
            set(&svc, "/request/object/spec/ports/1/port", json!("8126")),
            Want::Patched(""),
        ),
        (
            "service: unnamed port number a string",
            with(&svc, |v| {
                v["request"]["object"]["spec"]["ports"][1] =
                    json!({"port": "8126", "protocol": "TCP"});
            }),
            Want::Unchanged(""),
        ),
        (
            "service: port number negative",
            set(&svc, "/request/object/spec/ports/1/port", json!(-8126)),
            Want::Patched(""),
        ),
        (
            "service: port number a float",
            set(&svc, "/request/object/spec/ports/1/port", json!(8126.0)),
            Want::Patched(""),
        ),
        (
            "service: port number huge",
            set(&svc, "/request/object/spec/ports/1/port", json!(u64::MAX)),
            Want::Patched(""),
        ),
        (
            "service: protocol a number",
            set(&svc, "/request/object/spec/ports/1/protocol", json!(6)),
            Want::Unchanged(""),
        ),
        (
            "service: protocol null",
            set(&svc, "/request/object/spec/ports/1/protocol", Value::Null),
            Want::Patched(""),
        ),
        (
            "service: port name a number",
            set(&svc, "/request/object/spec/ports/1/name", json!(8126)),
            Want::Patched(""),
        ),
        (
            "service: appProtocol a number",
            set(&svc, "/request/object/spec/ports/1/appProtocol", json!(1)),
            Want::AdmittedWith {
                ops: 1,
                warnings: &[],
            },
        ),
        (
            "service: appProtocol an object",
            set(
                &svc,
                "/request/object/spec/ports/1/appProtocol",
                json!({"tcp": true}),
            ),
            Want::AdmittedWith {
                ops: 1,
                warnings: &[],
            },
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

/// Rule 4's inputs: a CronJob's spec, job and pod templates, their metadata and labels, its name, each of a wrong JSON type.
#[tokio::test]
async fn wrong_types_in_cronjob_templates() {
    let cron = cronjob();
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "cronjob: spec a string",
            set(&cron, "/request/object/spec", json!("spec")),
            Want::Unchanged(""),
        ),
        (
            "cronjob: jobTemplate a string",
            set(&cron, "/request/object/spec/jobTemplate", json!("t")),
            Want::Unchanged(""),
        ),
        (
            "cronjob: jobTemplate.spec a list",
            set(&cron, "/request/object/spec/jobTemplate/spec", json!([])),
            Want::Unchanged(""),
        ),
        (
            "cronjob: template a string",
            set(
                &cron,
                "/request/object/spec/jobTemplate/spec/template",
                json!("t"),
            ),
            Want::Unchanged(""),
        ),
        (
            "cronjob: template metadata a string",
            set(
                &cron,
                "/request/object/spec/jobTemplate/spec/template/metadata",
                json!("m"),
            ),
            Want::AdmittedWith {
                ops: 3,
                warnings: &[
                    "tracepatch cronjob-app: spec.jobTemplate.spec.template.metadata is not a map; app label not set there",
                ],
            },
        ),
        (
            "cronjob: template labels a list",
            set(
                &cron,
                "/request/object/spec/jobTemplate/spec/template/metadata",
                json!({"labels": ["app"]}),
            ),
            Want::AdmittedWith {
                ops: 3,
                warnings: &[
                    "tracepatch cronjob-app: spec.jobTemplate.spec.template.metadata.labels is not a map; app label not set there",
                ],
            },
        ),
        (
            "cronjob: jobTemplate metadata a number",
            set(&cron, "/request/object/spec/jobTemplate/metadata", json!(1)),
            Want::AdmittedWith {
                ops: 3,
                warnings: &[
                    "tracepatch cronjob-app: spec.jobTemplate.metadata is not a map; app label not set there",
                ],
            },
        ),
        (
            "cronjob: name a number",
            set(&cron, "/request/object/metadata/name", json!(1)),
            Want::Unchanged("no name yet"),
        ),
        (
            "cronjob: app label a number",
            set(&cron, "/request/object/metadata/labels", json!({"app": 1})),
            Want::Patched(""),
        ),
        (
            "cronjob: metadata a list",
            set(&cron, "/request/object/metadata", json!([])),
            Want::Unchanged("no name yet"),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

/// The AdmissionReview around the object: apiVersion, kind, request and its fields, each of a wrong JSON type.
#[tokio::test]
async fn wrong_types_in_the_review_envelope() {
    let pod = pod();
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "review: request.kind a string",
            set(&pod, "/request/kind", json!("Pod")),
            Want::Refused(400, "request.kind must be an object"),
        ),
        (
            "review: request.kind.kind a number",
            set(&pod, "/request/kind/kind", json!(1)),
            Want::Refused(400, "request.kind must be an object"),
        ),
        (
            "review: operation a number",
            set(&pod, "/request/operation", json!(1)),
            Want::Refused(400, "request.operation is missing or not a string"),
        ),
        (
            "review: operation lower case",
            set(&pod, "/request/operation", json!("create")),
            Want::Refused(400, "request.operation is"),
        ),
        (
            "review: uid a number",
            set(&pod, "/request/uid", json!(1)),
            Want::Refused(400, "request.uid is missing or empty"),
        ),
        (
            "review: uid an object",
            set(&pod, "/request/uid", json!({})),
            Want::Refused(400, "request.uid is missing or empty"),
        ),
        (
            "review: apiVersion a number",
            set(&pod, "/apiVersion", json!(1)),
            Want::Refused(400, "unsupported apiVersion"),
        ),
        (
            "review: kind a list",
            set(&pod, "/kind", json!(["AdmissionReview"])),
            Want::Refused(400, "expected AdmissionReview"),
        ),
        (
            "review: request a list",
            set(&pod, "/request", json!([])),
            Want::Refused(400, "request is a list"),
        ),
        (
            "review: request null",
            set(&pod, "/request", Value::Null),
            Want::Refused(400, "has no request"),
        ),
        (
            "review: dryRun a string",
            set(&pod, "/request/dryRun", json!("true")),
            Want::Patched(""),
        ),
        (
            "review: subResource a number",
            set(&pod, "/request/subResource", json!(1)),
            Want::Patched(""),
        ),
        (
            "review: namespace a number",
            set(&pod, "/request/namespace", json!(1)),
            Want::Patched(""),
        ),
        (
            "review: name a list",
            set(&pod, "/request/name", json!([])),
            Want::Patched(""),
        ),
        (
            "review: generateName a number",
            with(&pod, |v| {
                v["request"]["object"]["metadata"]["generateName"] = json!(1)
            }),
            Want::Patched(""),
        ),
    ];
    for (name, body, want) in cases {
        run_case(name, body, want).await;
    }
}

/// Every node of every base review, removed or replaced by each JSON type: whatever the
/// rules read, a wrong type is skipped, never a crash or a patch that does not apply;
/// each answer is the one [`sweep_want`] states.
#[tokio::test]
async fn every_field_replaced_by_every_type() {
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(p.clone());
                    pointers(child, p, out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    pointers(child, p, out);
                }
            }
            _ => {}
        }
    }
    let replacements = [
        ("null", Value::Null),
        ("true", json!(true)),
        ("-1", json!(-1)),
        ("1.5", json!(1.5)),
        ("\"\"", json!("")),
        ("\"8126\"", json!("8126")),
        ("[]", json!([])),
        ("[\"x\"]", json!(["x"])),
        ("{}", json!({})),
    ];
    let mut count = 0;
    for (base_name, base) in bases() {
        let mut ptrs = Vec::new();
        pointers(&base, String::new(), &mut ptrs);
        for ptr in &ptrs {
            let removed = with(&base, |v| {
                let (parent, last) = ptr.rsplit_once('/').unwrap();
                let last = last.replace("~1", "/").replace("~0", "~");
                match at(v, parent) {
                    Value::Object(m) => {
                        m.remove(&last);
                    }
                    Value::Array(a) => {
                        a.remove(last.parse::<usize>().unwrap());
                    }
                    _ => unreachable!(),
                }
            });
            let name = format!("{base_name}: {ptr} removed");
            run_case(&name, removed, sweep_want(ptr, None)).await;
            for (label, value) in &replacements {
                let body = set(&base, ptr, value.clone());
                let name = format!("{base_name}: {ptr} = {label}");
                run_case(&name, body, sweep_want(ptr, Some(value))).await;
                count += 2;
            }
        }
    }
    assert!(count > 1000, "only {count} cases");
}

const KIND: &str =
    "invalid AdmissionReview: request.kind must be an object with group, version and kind";

/// What a base review with the value at `ptr` replaced by `value` (removed: `None`) must
/// get. Inside `request.object` anything is a valid review: 200, whatever the rules make
/// of it. The envelope's fields the server reads are refused with their reason when
/// wrong; the others (dryRun, name, namespace, options, resource, requestKind,
/// requestResource, userInfo, oldObject) are not read, so 200.
fn sweep_want(ptr: &str, value: Option<&Value>) -> Want {
    let text = value.and_then(Value::as_str);
    let refused = |line| Want::RefusedWith(400, line);
    match ptr {
        p if p.starts_with("/request/object/") => Want::Admitted,
        "/request/object" => match value {
            None => refused("request.object is missing, expected a JSON object"),
            Some(Value::Null) => refused("request.object is null, expected a JSON object"),
            Some(Value::Object(_)) => Want::AdmittedWith {
                ops: 0,
                warnings: &[],
            },
            Some(Value::Array(_)) => refused("request.object is a list, expected a JSON object"),
            Some(Value::String(_)) => refused("request.object is a string, expected a JSON object"),
            Some(_) => refused("request.object is a scalar, expected a JSON object"),
        },
        "/apiVersion" => refused(match text {
            Some("8126") => "unsupported apiVersion \"8126\": only admission.k8s.io/v1 is served",
            _ => "unsupported apiVersion \"\": only admission.k8s.io/v1 is served",
        }),
        "/kind" => refused(match text {
            Some("8126") => "kind is \"8126\", expected AdmissionReview",
            _ => "kind is \"\", expected AdmissionReview",
        }),
        "/request" => refused(match value {
            None | Some(Value::Null) => "AdmissionReview has no request",
            Some(Value::Object(_)) => "request.uid is missing or empty",
            Some(Value::Array(_)) => {
                "invalid AdmissionReview: request is a list, expected an object"
            }
            Some(Value::String(_)) => {
                "invalid AdmissionReview: request is a string, expected an object"
            }
            Some(_) => "invalid AdmissionReview: request is a scalar, expected an object",
        }),
        "/request/uid" => match text {
            Some(uid) if !uid.is_empty() => Want::Admitted,
            _ => refused("request.uid is missing or empty"),
        },
        "/request/kind" => refused(KIND),
        "/request/kind/group" | "/request/kind/version" | "/request/kind/kind" => match text {
            Some(_) => Want::Admitted,
            None => refused(KIND),
        },
        "/request/operation" => refused(match text {
            Some("") => {
                "invalid AdmissionReview: request.operation is \"\", expected CREATE, UPDATE, DELETE or CONNECT"
            }
            Some("8126") => {
                "invalid AdmissionReview: request.operation is \"8126\", expected CREATE, UPDATE, DELETE or CONNECT"
            }
            _ => {
                "invalid AdmissionReview: request.operation is missing or not a string, expected CREATE, UPDATE, DELETE or CONNECT"
            }
        }),
        _ => Want::Admitted,
    }
}

#[tokio::test]
async fn objects_that_are_not_objects_are_refused_for_every_handled_kind() {
    for (base_name, base) in [
        ("pod CREATE", pod()),
        ("service UPDATE", service()),
        ("cronjob CREATE", cronjob()),
    ] {
        for (what, value, reason) in [
            ("null", Value::Null, "request.object is null"),
            (
                "an array",
                json!([{"metadata": {}}]),
                "request.object is a list",
            ),
            (
                "a string",
                json!("{\"metadata\": {}}"),
                "request.object is a string",
            ),
            ("a number", json!(0), "request.object is a scalar"),
            ("a bool", json!(false), "request.object is a scalar"),
        ] {
            let name = format!("{base_name}: object {what}");
            run_case(
                &name,
                set(&base, "/request/object", value),
                Want::Refused(400, reason),
            )
            .await;
        }
        let name = format!("{base_name}: object missing");
        let body = with(&base, |v| {
            v["request"].as_object_mut().unwrap().remove("object");
        });
        run_case(&name, body, Want::Refused(400, "request.object is missing")).await;
        // Kinds and operations the rules do not handle are admitted without reading it.
        let body = with(&base, |v| {
            v["request"]["operation"] = json!("DELETE");
            v["request"]["object"] = json!("whatever");
        });
        run_case(
            &format!("{base_name}: DELETE with a string object"),
            body,
            Want::Unchanged(""),
        )
        .await;
    }
}

#[tokio::test]
async fn missing_parents_at_every_level() {
    // (base, the chain of fields a rule walks down to what it changes)
    let chains: [(&str, Value, &[&str]); 9] = [
        (
            "meshed pod: annotation",
            pod(),
            &["metadata", "annotations", "apm.datadoghq.com/env"],
        ),
        (
            "meshed pod: sidecar env",
            pod(),
            &["spec", "containers", "1", "env"],
        ),
        ("agent pod: labels", agent_pod(), &["metadata", "labels"]),
        (
            "agent pod: annotations",
            agent_pod(),
            &["metadata", "annotations"],
        ),
        (
            "agent pod: image",
            agent_pod(),
            &["spec", "containers", "0", "image"],
        ),
        ("service: port", service(), &["spec", "ports", "1", "name"]),
        (
            "cronjob: pod template labels",
            cronjob(),
            &["spec", "jobTemplate", "spec", "template", "metadata"],
        ),
        ("cronjob: name", cronjob(), &["metadata", "name"]),
        (
            "labelled cronjob",
            with(&cronjob(), |v| {
                v["request"]["object"]["metadata"]["labels"] = json!({"app": "report"});
                v["request"]["object"]["spec"]["jobTemplate"]["metadata"] = json!({"labels": {}});
                v["request"]["object"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"] =
                    json!({"labels": {"x": "y"}});
            })
            .pipe(|b| serde_json::from_slice(&b).unwrap()),
            &[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "metadata",
                "labels",
                "x",
            ],
        ),
    ];
    for (what, base, chain) in chains {
        for depth in 0..chain.len() {
            let parent = format!(
                "/request/object{}",
                chain[..depth]
                    .iter()
                    .map(|f| format!("/{}", f.replace('/', "~1")))
                    .collect::<String>()
            );
            let field = chain[depth];
            // The field removed, and set to null, at this level.
            let removed = with(&base, |v| match at(v, &parent) {
                Value::Object(m) => {
                    m.remove(field);
                }
                Value::Array(a) => {
                    a.truncate(field.parse().unwrap());
                }
                _ => {}
            });
            run_case(
                &format!("{what}: no {field} under {parent}"),
                removed,
                Want::Admitted,
            )
            .await;
            let nulled = set(
                &base,
                &format!("{parent}/{}", field.replace('/', "~1")),
                Value::Null,
            );
            run_case(
                &format!("{what}: {field} null under {parent}"),
                nulled,
                Want::Admitted,
            )
            .await;
        }
    }
    // The bare minimum of each kind.
    for (name, base, want) in [
        ("empty pod", pod(), Want::Unchanged("")),
        ("empty service", service(), Want::Unchanged("")),
        ("empty cronjob", cronjob(), Want::Unchanged("")),
    ] {
        run_case(name, set(&base, "/request/object", json!({})), want).await;
    }
    // An agent found by image only, with no metadata at all: every parent is created.
    let bare_agent = set(
        &agent_pod(),
        "/request/object",
        json!({"spec": {"containers": [{"name": "a", "image": "datadog/agent:7"}]}}),
    );
    run_case("agent pod without metadata", bare_agent, Want::Patched("")).await;
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}
