//! Unit tests of the renderer: structure, escaping, each configuration option. Whether
//! the CEL does what the webhook does is checked on a real apiserver
//! (`tests/policies/run.sh`); the glob translation also differentially here.

use std::path::Path;

use kube::core::admission::Operation;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::engine::{Engine, Kind};

fn config(text: &str) -> Config {
    Config::parse(text, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn rendered(cfg: &Config, opts: &Options) -> Rendered {
    render(cfg, opts).unwrap()
}

/// The documents of the output, parsed.
fn docs(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut chunk = String::new();
    for line in text.lines().chain(["---"]) {
        if line == "---" {
            let v: Value =
                serde_saphyr::from_str(&chunk).unwrap_or_else(|e| panic!("{e}\n{chunk}"));
            if !v.is_null() {
                out.push(v);
            }
            chunk.clear();
        } else {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    out
}

fn default_docs() -> Vec<Value> {
    docs(&rendered(&Config::default(), &Options::default()).yaml)
}

/// The policy document named `tracepatch-<rule>`.
fn policy<'a>(docs: &'a [Value], rule: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == "MutatingAdmissionPolicy"
                && d["metadata"]["name"] == format!("tracepatch-{rule}")
        })
        .unwrap_or_else(|| panic!("no policy for {rule}"))
}

fn names(docs: &[Value], kind: &str) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every CEL expression of a policy (conditions, variables, mutations), joined.
fn all_cel(p: &Value) -> String {
    let spec = &p["spec"];
    let mut out = String::new();
    for list in ["matchConditions", "variables"] {
        for item in spec[list].as_array().into_iter().flatten() {
            out.push_str(item["expression"].as_str().unwrap());
            out.push('\n');
        }
    }
    for m in spec["mutations"].as_array().unwrap() {
        let field = match m["patchType"].as_str().unwrap() {
            "ApplyConfiguration" => "applyConfiguration",
            "JSONPatch" => "jsonPatch",
            other => panic!("patchType {other}"),
        };
        out.push_str(m[field]["expression"].as_str().unwrap());
        out.push('\n');
    }
    out
}

#[test]
fn default_profile_has_a_policy_and_a_binding_per_rule() {
    let r = rendered(&Config::default(), &Options::default());
    assert_eq!(
        r.policies,
        [
            "tracepatch-agent-sidecar",
            "tracepatch-trace-port",
            "tracepatch-cronjob-app"
        ]
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let d = docs(&r.yaml);
    assert_eq!(d.len(), 6);
    assert_eq!(names(&d, "MutatingAdmissionPolicy"), r.policies);
    assert_eq!(names(&d, "MutatingAdmissionPolicyBinding"), r.policies);
    for doc in &d {
        assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/name"],
            "tracepatch"
        );
        if doc["kind"] == "MutatingAdmissionPolicyBinding" {
            assert_eq!(doc["spec"]["policyName"], doc["metadata"]["name"]);
            assert!(doc["spec"].get("matchResources").is_none());
        }
    }
}

#[test]
fn each_policy_matches_what_the_webhook_configuration_matches() {
    let d = default_docs();
    for (rule, group, resource, operations) in [
        ("agent-sidecar", "", "pods", json!(["CREATE"])),
        ("trace-port", "", "services", json!(["CREATE", "UPDATE"])),
        (
            "cronjob-app",
            "batch",
            "cronjobs",
            json!(["CREATE", "UPDATE"]),
        ),
    ] {
        let spec = &policy(&d, rule)["spec"];
        assert_eq!(spec["failurePolicy"], "Ignore", "{rule}");
        assert_eq!(spec["reinvocationPolicy"], "IfNeeded", "{rule}");
        let c = &spec["matchConstraints"];
        assert_eq!(
            c["resourceRules"],
            json!([{"apiGroups": [group], "apiVersions": ["v1"], "resources": [resource],
                    "operations": operations, "scope": "Namespaced"}]),
            "{rule}"
        );
        assert_eq!(c["matchPolicy"], "Equivalent");
        assert_eq!(
            c["namespaceSelector"],
            json!({"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "tracepatch"]},
                {"key": "tracepatch.io/enabled", "operator": "NotIn", "values": ["false"]}]})
        );
        assert_eq!(
            c["objectSelector"],
            json!({"matchExpressions": [
                {"key": "tracepatch.io/enabled", "operator": "NotIn", "values": ["false"]}]})
        );
        let conditions = spec["matchConditions"].as_array().unwrap();
        assert_eq!(conditions[0]["name"], "not-opted-out");
        assert_eq!(
            conditions[0]["expression"],
            r#"object.?metadata.?labels[?"tracepatch.io/enabled"].orValue("") != "false""#
        );
    }
}

#[test]
fn patch_types_per_rule() {
    let d = default_docs();
    let kinds = |rule: &str| -> Vec<String> {
        policy(&d, rule)["spec"]["mutations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["patchType"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kinds("agent-sidecar"), ["ApplyConfiguration"]);
    assert_eq!(kinds("trace-port"), ["JSONPatch"]);
    assert_eq!(kinds("cronjob-app"), ["ApplyConfiguration"]);
}

#[test]
fn agent_sidecar_cel_for_the_default_profile() {
    let d = default_docs();
    let p = policy(&d, "agent-sidecar");
    let cel = all_cel(p);
    // The owner's word wins, label or annotation.
    assert!(
        cel.contains(r#"!("sidecar.istio.io/inject" in object.?metadata.?labels.orValue({})) &&"#)
    );
    assert!(
        cel.contains(
            r#"!("sidecar.istio.io/inject" in object.?metadata.?annotations.orValue({}))"#
        )
    );
    // Selectors: In, and a Glob as an anchored regular expression, Exists.
    assert!(cel.contains(r#"("app" in variables.labels && variables.labels["app"] in ["datadog-agent", "datadog-cluster-agent", "datadog-cluster-checks-runner", "datadog-clusterchecks"])"#));
    assert!(
        cel.contains(r#"variables.labels["app.kubernetes.io/name"].matches("(?s)^.*datadog.*$")"#)
    );
    assert!(cel.contains(r#""agent.datadoghq.com/component" in variables.labels"#));
    // Images: literals in one list, globs as regular expressions.
    assert!(cel.contains(r#""gcr.io/datadoghq/agent","#));
    assert!(cel.contains(r#"r.matches("(?s)^.*\\.gcr\\.io/datadoghq/agent$")"#));
    // The change.
    assert!(cel.contains(r#""sidecar.istio.io/inject": "false""#));
    assert!(cel.contains(
        r#"?"istio.io/dataplane-mode": "istio.io/dataplane-mode" in variables.labels ? optional.none() : optional.of("none")"#
    ));
    let vars: Vec<&str> = p["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        vars,
        [
            "labels",
            "agentByLabels",
            "images",
            "untagged",
            "repositories",
            "agentByImage"
        ]
    );
}

#[test]
fn ambient_opt_out_off_leaves_out_the_dataplane_label() {
    let cfg = config("agentSidecar:\n  ambientOptOut: false\n");
    let cel = all_cel(policy(
        &docs(&rendered(&cfg, &Options::default()).yaml),
        "agent-sidecar",
    ));
    assert!(!cel.contains("istio.io/dataplane-mode"), "{cel}");
    assert!(cel.contains(r#""sidecar.istio.io/inject": "false""#));
}

#[test]
fn agent_sidecar_selectors_only_or_images_only() {
    let cfg = config("agentSidecar:\n  images: []\n");
    let p = policy(
        &docs(&rendered(&cfg, &Options::default()).yaml),
        "agent-sidecar",
    )
    .clone();
    assert!(!all_cel(&p).contains("agentByImage"));
    let cfg = config(
        "agentSidecar:\n  selectors:\n    - matchLabels: {app: otel-collector}\n      matchExpressions:\n        - {key: tier, operator: NotIn, values: [dev]}\n        - {key: canary, operator: DoesNotExist}\n  images: [otel/opentelemetry-collector*]\n",
    );
    let cel = all_cel(policy(
        &docs(&rendered(&cfg, &Options::default()).yaml),
        "agent-sidecar",
    ));
    assert!(
        cel.contains(
            r#"("app" in variables.labels && variables.labels["app"] == "otel-collector")"#
        )
    );
    assert!(
        cel.contains(r#"!("tier" in variables.labels && variables.labels["tier"] in ["dev"])"#)
    );
    assert!(cel.contains(r#"!("canary" in variables.labels)"#));
    assert!(cel.contains(r#"r.matches("(?s)^otel/opentelemetry-collector.*$")"#));
    assert!(!cel.contains("r in ["), "no literal images: {cel}");
}

#[test]
fn unsupported_globs_are_noted_and_match_nothing() {
    let cfg = config(
        "agentSidecar:\n  selectors:\n    - matchExpressions:\n        - {key: app, operator: Glob, values: ['a/**']}\n  images: ['registry.example.com/**/agent']\n",
    );
    let r = rendered(&cfg, &Options::default());
    // Neither can be said in CEL: no pod is an agent's for the policy, so no policy.
    assert!(
        !r.policies.contains(&"tracepatch-agent-sidecar".to_owned()),
        "{:?}",
        r.policies
    );
    let cfg = config(
        "agentSidecar:\n  selectors:\n    - matchExpressions:\n        - {key: app, operator: Glob, values: ['a/**', 'x*']}\n  images: ['registry.example.com/**/agent', datadog/agent]\n",
    );
    let r = rendered(&cfg, &Options::default());
    assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
    assert!(
        r.notes[0].starts_with("agent-sidecar: label app glob \"a/**\" has a recursive wildcard")
    );
    assert!(
        r.notes[1].starts_with("agent-sidecar: image pattern \"registry.example.com/**/agent\"")
    );
    assert!(
        r.yaml
            .contains("# Not expressed in CEL, so left to the webhook:\n# - label app glob")
    );
    let cel = all_cel(policy(&docs(&r.yaml), "agent-sidecar"));
    assert!(cel.contains(r#"variables.labels["app"].matches("(?s)^x.*$")"#));
    assert!(!cel.contains("**"));
}

/// `expression` without its double-quoted string literals.
fn outside_literals(expression: &str) -> String {
    let mut out = String::new();
    let (mut in_lit, mut escaped) = (false, false);
    for c in expression.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_lit => escaped = true,
            '"' => in_lit = !in_lit,
            c if !in_lit => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn inlined_variables_keep_literals_word_boundaries_and_order() {
    let vars = [
        Variable::new("ports", "", "object.?spec.?ports.orValue([])"),
        Variable::new("portNames", "", "variables.ports.map(p, p.name)"),
        Variable::new(
            "renames",
            "",
            "variables.portNames.filter(n, n != \"variables.ports\")",
        ),
    ];
    assert_eq!(
        inline_variables("size(variables.renames) > 0", &vars),
        "size((((object.?spec.?ports.orValue([])).map(p, p.name)).filter(n, n != \"variables.ports\"))) > 0"
    );
    // A literal that reads like a reference, escaped quotes in it, an identifier that only
    // ends in "variables", and an unknown variable are all left as they are.
    assert_eq!(
        inline_variables(
            r#""a\"variables.ports" + xvariables.ports + variables.other"#,
            &vars
        ),
        r#""a\"variables.ports" + xvariables.ports + variables.other"#
    );
    // A variable reads only the ones before it: a later one's name is not replaced there.
    assert_eq!(
        inline_variables(
            "variables.ports",
            &[Variable::new("ports", "", "variables.renames")]
        ),
        "(variables.renames)"
    );
}

#[test]
fn every_policy_runs_its_mutations_only_where_they_change_something() {
    let configs = [
        Config::default(),
        config("tracePort:\n  mode: name\n  ports:\n    - {name: traceport, port: 8126}\n"),
        config(
            "tracePort:\n  renamePodPorts: true\n  ports:\n    - name: traceport\n    - port: 8126\n",
        ),
        config(
            "tracePort:\n  mode: name\n  renamePodPorts: true\n  ports:\n    - name: traceport\n",
        ),
        config("agentSidecar:\n  selectors: []\n  images: [\"example.com/agent*\"]\n"),
    ];
    for cfg in &configs {
        let d = docs(&rendered(cfg, &Options::default()).yaml);
        for name in names(&d, "MutatingAdmissionPolicy") {
            let rule = name.trim_start_matches("tracepatch-");
            let conditions = policy(&d, rule)["spec"]["matchConditions"]
                .as_array()
                .unwrap();
            let last = conditions.last().unwrap();
            let expected = match rule {
                "agent-sidecar" => "agent-pod",
                "cronjob-app" => "valid-value",
                _ => "changes-something",
            };
            assert_eq!(last["name"], expected, "{name}");
            for c in conditions {
                let cel = c["expression"].as_str().unwrap();
                // The apiserver refuses a matchCondition that reads variables.
                assert!(
                    !outside_literals(cel).contains("variables."),
                    "{name}: {cel}"
                );
            }
            // No mutation keeps a branch that changes nothing: the condition decides.
            assert!(!all_cel(policy(&d, rule)).contains("Object{}"), "{name}");
        }
    }
}

#[test]
fn trace_port_app_protocol_mode() {
    let d = default_docs();
    let m = &policy(&d, "trace-port")["spec"]["mutations"][0]["jsonPatch"]["expression"];
    let cel = m.as_str().unwrap();
    assert!(cel.contains(r#"p.?protocol.orValue("TCP") == "TCP""#));
    assert!(cel.contains(r#"(p.?name.orValue("") == "traceport" || p.?port.orValue(0) == 8126)"#));
    assert!(cel.contains("!has(p.appProtocol)"));
    assert!(cel.contains(r#"["http", "http2", "https", "grpc", "grpc-web", "mongo", "mysql", "redis", "tls", "udp"].exists"#));
    assert!(cel.contains(r#"path: "/spec/ports/" + string(i) + "/appProtocol", value: "tcp""#));
    assert_eq!(
        policy(&d, "trace-port")["spec"]["mutations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn trace_port_name_mode_keeps_names_unique() {
    let cfg = config("tracePort:\n  mode: name\n  ports:\n    - {name: traceport, port: 8126}\n");
    let d = docs(&rendered(&cfg, &Options::default()).yaml);
    let p = policy(&d, "trace-port");
    let cel = all_cel(p);
    assert!(cel.contains(r#"(p.?name.orValue("") == "traceport" && p.?port.orValue(0) == 8126)"#));
    assert!(cel.contains(r#"p.appProtocol.lowerAscii() == "tcp""#));
    assert!(cel.contains(r#"["http", "http2", "https", "grpc", "grpc-web", "mongo", "mysql", "redis", "tcp", "tls", "udp"].exists"#));
    assert!(cel.contains("!(c.name in variables.portNames)"));
    assert!(cel.contains("variables.renames.map(d, d.name).indexOf(c.name) == n"));
    assert!(!cel.contains("appProtocol\", value"));
    assert!(
        names(&d, "MutatingAdmissionPolicy")
            .iter()
            .all(|n| n != "tracepatch-trace-port-pods")
    );
}

#[test]
fn rename_pod_ports_adds_the_pod_policy_and_target_ports() {
    let cfg = config(
        "tracePort:\n  renamePodPorts: true\n  ports:\n    - name: traceport\n    - name: http-trace\n    - name: a-very-long-port\n    - port: 8126\n",
    );
    let r = rendered(&cfg, &Options::default());
    assert_eq!(
        r.policies,
        [
            "tracepatch-agent-sidecar",
            "tracepatch-trace-port",
            "tracepatch-trace-port-pods",
            "tracepatch-cronjob-app"
        ]
    );
    let d = docs(&r.yaml);
    let svc = &policy(&d, "trace-port")["spec"]["mutations"];
    assert_eq!(svc.as_array().unwrap().len(), 2);
    let target = svc[0]["jsonPatch"]["expression"].as_str().unwrap();
    // Only names the pod policy renames: no protocol prefix, tcp-NAME at most 15.
    assert!(
        target.contains(r#"p.targetPort in ["traceport"]"#),
        "{target}"
    );
    let pods = policy(&d, "trace-port-pods");
    assert_eq!(
        pods["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
        json!(["pods"])
    );
    assert_eq!(
        pods["spec"]["matchConstraints"]["resourceRules"][0]["operations"],
        json!(["CREATE"])
    );
    let cel = all_cel(pods);
    assert!(cel.contains(r#""/spec/containers/" + string(ci) + "/ports/" + string(k) + "/name""#));
    assert!(cel.contains(r#""/spec/initContainers/" + string(ci)"#));
    assert!(cel.contains(r#"p.?containerPort.orValue(0) == 8126"#));
    assert!(cel.contains(r#"("tcp-" + p.name).size() <= 15"#));
}

#[test]
fn cronjob_app_uses_the_configured_label() {
    let d = default_docs();
    let cel = all_cel(policy(&d, "cronjob-app"));
    assert!(cel.contains(
        r#"!("app" in object.?spec.?jobTemplate.?spec.?template.?metadata.?labels.orValue({}))"#
    ));
    assert!(cel.contains(r#"object.?metadata.?labels[?"app"]"#));
    assert!(cel.contains(r#".or(object.?spec.?jobTemplate.?spec.?template.?metadata.?labels[?"app.kubernetes.io/name"].optFlatMap(v, v != "" ? optional.of(v) : optional.none()))"#));
    assert!(cel.contains(".or(object.?metadata.?name)"));
    assert!(cel.contains(r#"labels: {"app": variables.value}"#));

    let cfg = config("cronJobApp:\n  label: example.com/service\n");
    let cel = all_cel(policy(
        &docs(&rendered(&cfg, &Options::default()).yaml),
        "cronjob-app",
    ));
    assert!(cel.contains(r#"labels: {"example.com/service": variables.value}"#));
    assert!(cel.contains(r#"?"example.com/service": "example.com/service" in object.?spec.?jobTemplate.?metadata.?labels.orValue({})"#));
    assert!(!cel.contains(r#""app""#));
}

#[test]
fn keys_with_a_slash_are_quoted_for_cel_and_never_put_in_a_json_pointer() {
    let cfg = config(
        "optOut:\n  label: example.com/tracing-opt-out\ncronJobApp:\n  label: example.com/app\nagentSidecar:\n  selectors:\n    - matchLabels: {\"agents.example.com/kind\": 'say \"hi\" \\ bye'}\n",
    );
    let r = rendered(&cfg, &Options::default());
    let d = docs(&r.yaml);
    for p in d.iter().filter(|d| d["kind"] == "MutatingAdmissionPolicy") {
        let c = &p["spec"]["matchConstraints"];
        assert_eq!(
            c["objectSelector"]["matchExpressions"][0]["key"],
            "example.com/tracing-opt-out"
        );
        assert_eq!(
            c["namespaceSelector"]["matchExpressions"][1]["key"],
            "example.com/tracing-opt-out"
        );
        assert_eq!(
            p["spec"]["matchConditions"][0]["expression"],
            r#"object.?metadata.?labels[?"example.com/tracing-opt-out"].orValue("") != "false""#
        );
        // JSON Pointers only ever hold fixed field names and indexes.
        let cel = all_cel(p);
        for (at, _) in cel.match_indices("path: ") {
            let path = &cel[at..cel[at..].find(',').map_or(cel.len(), |e| at + e)];
            assert!(!path.contains("example.com"), "{path}");
        }
    }
    let cel = all_cel(policy(&d, "agent-sidecar"));
    assert!(
        cel.contains(r#"variables.labels["agents.example.com/kind"] == "say \"hi\" \\ bye""#),
        "{cel}"
    );
    // The YAML keys with '/' are written plain and read back as they are.
    assert!(
        r.yaml
            .contains("\n        - key: example.com/tracing-opt-out\n"),
        "{}",
        r.yaml
    );
}

#[test]
fn disabled_rules_produce_no_policy() {
    let cfg = config("agentSidecar: {enabled: false}\n");
    assert_eq!(
        rendered(&cfg, &Options::default()).policies,
        ["tracepatch-trace-port", "tracepatch-cronjob-app"]
    );
    let cfg = config("tracePort: {enabled: false, renamePodPorts: true}\n");
    assert_eq!(
        rendered(&cfg, &Options::default()).policies,
        ["tracepatch-agent-sidecar", "tracepatch-cronjob-app"]
    );
    let cfg = config("cronJobApp: {enabled: false}\n");
    assert_eq!(
        rendered(&cfg, &Options::default()).policies,
        ["tracepatch-agent-sidecar", "tracepatch-trace-port"]
    );
    let cfg = config(
        "agentSidecar: {enabled: false}\ntracePort: {enabled: false}\ncronJobApp: {enabled: false}\ntracerEnv: {enabled: false}\n",
    );
    let r = rendered(&cfg, &Options::default());
    assert!(r.policies.is_empty());
    assert!(docs(&r.yaml).is_empty());
    assert!(r.yaml.contains("# No policy: rules 2-4 are all disabled"));
}

#[test]
fn tracer_env_settings_do_not_change_the_policies() {
    let a = rendered(&Config::default(), &Options::default());
    let b = rendered(
        &config("tracerEnv:\n  enabled: false\n  containers: all\n"),
        &Options::default(),
    );
    assert_eq!(a, b);
}

#[test]
fn api_version_and_namespace_options() {
    let opts = Options {
        api_version: ApiVersion::V1beta1,
        namespace: "observability".into(),
    };
    let d = docs(&rendered(&Config::default(), &opts).yaml);
    for doc in &d {
        assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1beta1");
    }
    assert_eq!(
        policy(&d, "trace-port")["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"]
            [0]["values"],
        json!(["kube-system", "observability"])
    );
    let bad = Options {
        namespace: "Not_A_Namespace".into(),
        ..Options::default()
    };
    assert!(matches!(
        render(&Config::default(), &bad),
        Err(PolicyError::InvalidNamespace(_))
    ));
}

#[test]
fn the_excluded_namespaces_line_is_the_one_the_chart_replaces() {
    // manifests/helm/tracepatch/templates/mutatingadmissionpolicies.yaml replaces this
    // exact text with the release's namespaces.
    let y = rendered(&Config::default(), &Options::default()).yaml;
    assert_eq!(
        y.matches(r#"values: ["kube-system", "tracepatch"]"#)
            .count(),
        3
    );
}

#[test]
fn every_expression_is_a_literal_block_of_printable_ascii() {
    let r = rendered(&Config::default(), &Options::default());
    assert!(r.yaml.is_ascii());
    assert!(r.yaml.contains("expression: |-\n"));
    assert!(!r.yaml.contains('\t'));
}

/// The webhook's own decisions, for the helpers the renderer precomputes.
#[test]
fn protocol_prefixes_and_renamed_targets_agree_with_the_webhook() {
    let engine = Engine::default();
    for name in [
        "traceport",
        "http",
        "http-x",
        "HTTP-x",
        "http2",
        "https-x",
        "grpc",
        "grpc-web-x",
        "tcp",
        "tcp-x",
        "TCP",
        "tcpx",
        "httpbin",
        "udp-x",
        "tls",
        "mongo-",
        "redisx",
        "mysql-a",
    ] {
        let svc =
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"name": name, "port": 8126}]}});
        let out = engine.admit(Kind::Service, &Operation::Create, &svc);
        let adds = !out.patch.is_empty();
        assert_eq!(
            adds,
            protocol_prefix(name).is_none_or(|p| p == "tcp"),
            "{name}: {:?}",
            out.patch
        );
    }
    let cfg = config(
        "tracePort:\n  renamePodPorts: true\n  ports:\n    - name: traceport\n    - name: http-trace\n    - name: a-very-long-port\n    - name: abcdefghijk\n    - name: abcdefghijkl\n",
    );
    let targets = renamed_targets(&cfg.trace_port.ports);
    let engine = Engine::new(cfg.clone());
    for m in &cfg.trace_port.ports {
        let name = m.name.clone().unwrap();
        let svc = json!({"spec": {"ports": [{"name": "x", "port": 1, "targetPort": name}]}});
        let out = engine.admit(Kind::Service, &Operation::Create, &svc);
        assert_eq!(!out.patch.is_empty(), targets.contains(&name), "{name}");
    }
    assert_eq!(targets, ["traceport", "abcdefghijk"]);
}

/// Evaluates `s.matches(re)` with cel-rust (Rust's regex crate, the syntax RE2 shares).
fn cel_matches(re: &str, s: &str) -> bool {
    let program = ::cel::Program::compile(&format!("s.matches({})", super::cel::lit(re))).unwrap();
    let mut ctx = ::cel::Context::default();
    ctx.add_variable("s", s).unwrap();
    match program.execute(&ctx) {
        Ok(::cel::Value::Bool(b)) => b,
        other => panic!("{re}: {other:?}"),
    }
}

#[test]
fn glob_translations_match_what_the_glob_crate_matches() {
    for (pattern, s) in [
        ("*datadog*", "prod-datadog"),
        ("*datadog*", "data dog"),
        ("*.gcr.io/datadoghq/agent", "eu.gcr.io/datadoghq/agent"),
        ("*.gcr.io/datadoghq/agent", "gcr.io/datadoghq/agent"),
        ("a?c", "a\nc"),
        ("[!a]", "\n"),
        ("x[]]y", "x]y"),
        ("(a|b)+$", "(a|b)+$"),
        ("<a>", "<a>"),
        ("é*", "éx"),
    ] {
        let glob = glob::Pattern::new(pattern).unwrap().matches(s);
        match glob_regex(pattern) {
            GlobRegex::Regex(re) => assert_eq!(cel_matches(&re, s), glob, "{pattern} {s:?} {re}"),
            other => panic!("{pattern}: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512)
    ))]

    /// Random globs over a small alphabet (with every glob token) against random
    /// strings over the same alphabet: the regular expression decides as the glob crate.
    #[test]
    fn glob_regex_agrees_with_the_glob_crate(
        pattern in "([ab./\\-!\\]\n]|\\*|\\?|\\[!?[ab\\-\\]!]{1,4}\\]){0,8}",
        s in "[ab./\\-!\\]\n]{0,8}",
    ) {
        let Ok(glob) = glob::Pattern::new(&pattern) else { return Ok(()); };
        match glob_regex(&pattern) {
            GlobRegex::Regex(re) => prop_assert_eq!(cel_matches(&re, &s), glob.matches(&s), "{} {:?}", re, s),
            GlobRegex::Never => prop_assert!(!glob.matches(&s)),
            GlobRegex::Unsupported(_) => prop_assert!(pattern.contains("**")),
        }
    }
}
