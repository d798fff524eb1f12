//! The MutatingWebhookConfiguration that registers tracepatch, rendered from the rules
//! configuration: `tracepatch webhook-config`. `manifests/mutatingwebhookconfiguration.yaml`
//! is this output for the default profile, and the Helm chart reads its
//! `matchConditions` from a file this module renders too (a test fails when either
//! drifts), so the conditions are written once, by the program.

mod conditions;

use std::fmt::Write as _;

pub use conditions::{CONDITION_NAME, Conditions, render as render_conditions};

use crate::config::Config;

/// Where the apiserver reaches the webhook, and what the configuration carries.
#[derive(Clone, Debug)]
pub struct Options {
    /// `metadata.name`; must sort before Istio's injector (`istio-…`).
    pub name: String,
    /// The namespace tracepatch runs in (excluded from its own webhooks).
    pub namespace: String,
    /// The Service in front of it.
    pub service: String,
    /// A URL instead of the Service (a webhook outside the cluster).
    pub url: Option<String>,
    /// The base64 CA bundle, when not managed at run time.
    pub ca_bundle: Option<String>,
    /// Render `matchConditions` (Kubernetes 1.28+; GA in 1.30).
    pub match_conditions: bool,
}

/// One webhook of the configuration.
struct Hook {
    name: &'static str,
    group: &'static str,
    resource: &'static str,
    operations: &'static str,
}

const HOOKS: [Hook; 3] = [
    Hook {
        name: "pods.tracepatch.io",
        group: "",
        resource: "pods",
        operations: r#""CREATE""#,
    },
    Hook {
        name: "services.tracepatch.io",
        group: "",
        resource: "services",
        operations: r#""CREATE", "UPDATE""#,
    },
    Hook {
        name: "cronjobs.tracepatch.io",
        group: "batch",
        resource: "cronjobs",
        operations: r#""CREATE", "UPDATE""#,
    },
];

const HEADER: &str = "\
# Registers tracepatch with the apiserver: pods (CREATE), services and batch cronjobs
# (CREATE, UPDATE), all sent to POST /mutate.
# Rendered by `tracepatch webhook-config`; do not edit by hand (a test compares them).
#
# The name matters. The apiserver calls mutating webhook configurations one after the
# other, sorted by metadata.name (a plain byte-wise string comparison). Istio's sidecar
# injector is `istio-sidecar-injector[-<revision>]` or `istio-revision-tag-<tag>`, and
# Datadog's admission controller is `datadog-webhook`; `00-tracepatch` sorts before all
# of them ('0' < 'd' < 'i'), so tracepatch sees every pod before Istio injects its
# sidecar. That is the only way rule 2 can work (the apiserver cannot take an injected
# sidecar back out) and what lets rule 1 write `proxyMetadata` for Istio to read. Do not
# rename it to something that sorts after `istio-`.
";

const NO_CA_BUNDLE: &str = "\
#
# No caBundle here: in self-managed certificate mode the server writes its CA into every
# webhook below at run time. Leaving the field out of this file (instead of writing an
# empty one) means a later `kubectl apply` of this file does not wipe it.
";

/// The whole MutatingWebhookConfiguration as YAML, with comments.
pub fn render(config: &Config, opts: &Options) -> String {
    let conditions = render_conditions(config);
    let mut out = String::with_capacity(8192);
    out.push_str(HEADER);
    if opts.ca_bundle.is_none() {
        out.push_str(NO_CA_BUNDLE);
    }
    let _ = write!(
        out,
        "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: tracepatch
    app.kubernetes.io/instance: tracepatch
    app.kubernetes.io/version: \"{version}\"
    app.kubernetes.io/component: admission-webhook
webhooks:
",
        name = opts.name,
        version = env!("CARGO_PKG_VERSION"),
    );
    for (i, hook) in HOOKS.iter().enumerate() {
        let first = i == 0;
        let expression = match hook.resource {
            "pods" => &conditions.pods,
            "services" => &conditions.services,
            _ => &conditions.cronjobs,
        };
        render_hook(&mut out, config, opts, hook, first, expression);
    }
    out
}

/// The `matchConditions` of every webhook, as a YAML map from webhook name to list: the
/// file the Helm chart includes.
pub fn render_conditions_file(config: &Config) -> String {
    let c = render_conditions(config);
    let mut out = String::from(
        "# matchConditions of each tracepatch webhook for the default rules configuration.\n\
         # Rendered by `tracepatch webhook-config --conditions-only`; do not edit by hand.\n",
    );
    for (hook, expression) in HOOKS.iter().zip([&c.pods, &c.services, &c.cronjobs]) {
        let _ = writeln!(out, "{}:", hook.name);
        condition_list(&mut out, "  ", expression);
    }
    out
}

fn render_hook(
    out: &mut String,
    config: &Config,
    opts: &Options,
    hook: &Hook,
    first: bool,
    expression: &str,
) {
    let comment = |out: &mut String, text: &str| {
        if first {
            for line in text.lines() {
                let _ = writeln!(out, "    # {line}");
            }
        }
    };
    let _ = write!(
        out,
        "  - name: {name}
    rules:
      - apiGroups: [\"{group}\"]
        apiVersions: [\"v1\"]
        resources: [\"{resource}\"]
        operations: [{operations}]
        scope: Namespaced
    clientConfig:
",
        name = hook.name,
        group = hook.group,
        resource = hook.resource,
        operations = hook.operations,
    );
    match &opts.url {
        Some(url) => {
            let _ = writeln!(out, "      url: {url}/mutate");
        }
        None => {
            let _ = write!(
                out,
                "      service:
        name: {}
        namespace: {}
        path: /mutate
        port: 443
",
                opts.service, opts.namespace
            );
        }
    }
    if let Some(ca) = &opts.ca_bundle {
        let _ = writeln!(out, "      caBundle: {ca}");
    }
    comment(
        out,
        "A tracing webhook must never block a workload: if tracepatch is down or slow, the\n\
         object is admitted as it is.",
    );
    out.push_str("    failurePolicy: Ignore\n");
    comment(
        out,
        "The rules are pure and write nothing anywhere, so dry-run requests are safe.",
    );
    out.push_str("    sideEffects: None\n    admissionReviewVersions: [\"v1\"]\n");
    comment(
        out,
        "Called again if a later webhook (Istio's injector) changes the pod, so that an\n\
         injected istio-proxy container also gets the tracer variables. The rules are\n\
         idempotent, so a second call changes nothing else.",
    );
    out.push_str("    reinvocationPolicy: IfNeeded\n");
    comment(
        out,
        "Also receive requests made through another version of the same resource\n\
         (converted to the one in `rules`).",
    );
    out.push_str("    matchPolicy: Equivalent\n");
    comment(
        out,
        "The webhook answers in microseconds; the timeout bounds what a hung or unreachable\n\
         webhook adds to every pod creation (the apiserver waits this long before\n\
         failurePolicy: Ignore admits the object), while leaving ample room for a TLS\n\
         handshake on a busy cluster. The API default, 10 s, would be felt by every rollout.",
    );
    out.push_str("    timeoutSeconds: 3\n");
    comment(
        out,
        "Never kube-system (cluster-critical pods must not depend on us), never our own\n\
         namespace (the webhook must not be in the path of its own pods), and never a\n\
         namespace that opted out with the opt-out label set to \"false\". NotIn also\n\
         matches namespaces without the label.",
    );
    let opt_out = config.opt_out.label.as_str();
    let _ = write!(
        out,
        "    namespaceSelector:
      matchExpressions:
        - key: kubernetes.io/metadata.name
          operator: NotIn
          values: [\"kube-system\", \"{ns}\"]
        - key: {opt_out}
          operator: NotIn
          values: [\"false\"]
",
        ns = opts.namespace,
    );
    comment(
        out,
        "An object that opted out with the opt-out label set to \"false\" is not even sent.",
    );
    let _ = write!(
        out,
        "    objectSelector:
      matchExpressions:
        - key: {opt_out}
          operator: NotIn
          values: [\"false\"]
"
    );
    if opts.match_conditions {
        comment(
            out,
            "Evaluated by the apiserver (Kubernetes 1.28+): an object that no enabled rule could\n\
             change or warn about is not sent at all. Rendered from the rules configuration;\n\
             a condition that cannot be evaluated would skip the call, so every optional\n\
             field is tested with has() first.",
        );
        out.push_str("    matchConditions:\n");
        condition_list(out, "      ", expression);
    }
}

/// `- name: …\n  expression: |-\n    …` at `indent`.
fn condition_list(out: &mut String, indent: &str, expression: &str) {
    let _ = writeln!(out, "{indent}- name: {CONDITION_NAME}");
    let _ = writeln!(out, "{indent}  expression: |-");
    for line in expression.lines() {
        let _ = writeln!(out, "{indent}    {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            name: "00-tracepatch".into(),
            namespace: "tracepatch".into(),
            service: "tracepatch".into(),
            url: None,
            ca_bundle: None,
            match_conditions: true,
        }
    }

    #[test]
    fn renders_valid_yaml_with_one_condition_per_webhook() {
        let text = render(&Config::default(), &opts());
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let hooks = doc["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 3);
        for hook in hooks {
            let mc = hook["matchConditions"].as_array().unwrap();
            assert_eq!(mc.len(), 1);
            assert_eq!(mc[0]["name"], CONDITION_NAME);
            assert!(
                mc[0]["expression"]
                    .as_str()
                    .unwrap()
                    .starts_with("object != null && (")
            );
        }
        assert!(doc["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    }

    #[test]
    fn url_and_ca_bundle_replace_the_service() {
        let mut o = opts();
        o.url = Some("https://127.0.0.1:8443".into());
        o.ca_bundle = Some("Q0E=".into());
        o.match_conditions = false;
        let doc: serde_json::Value =
            serde_saphyr::from_str(&render(&Config::default(), &o)).unwrap();
        let cc = &doc["webhooks"][1]["clientConfig"];
        assert_eq!(cc["url"], "https://127.0.0.1:8443/mutate");
        assert_eq!(cc["caBundle"], "Q0E=");
        assert!(cc.get("service").is_none());
        assert!(doc["webhooks"][1].get("matchConditions").is_none());
    }
}
