//! Rule 2: no Istio sidecar for the tracing agent's own pods.
//!
//! An Envoy sidecar in the agent's pod would intercept the traces the agent receives
//! and the data it sends. Agent pods are recognised by label selectors or by container
//! image (configuration; the Datadog profile is the default) and get
//! `sidecar.istio.io/inject: "false"` as a label (what current Istio's injector
//! objectSelector honours) and as an annotation (what older Istio honours), plus
//! `istio.io/dataplane-mode: none` to keep them out of an ambient mesh.
//!
//! This only works if we run before Istio's injector: the apiserver cannot take a
//! sidecar back out. If the owner already set the inject label or annotation, the pod is
//! left alone: explicit intent wins.
//!
//! What makes a pod an agent's is configuration: label selectors ([`LabelSelector`])
//! and image patterns ([`ImagePattern`]), evaluated here.

use jsonptr::Token;
use serde_json::Value;

use super::{Ctx, containers, meta_map, meta_str};
use crate::config::AgentSidecar;
use crate::rules::json::Json;
use crate::text::shown;

mod image;
mod selector;

pub use image::ImagePattern;
pub use selector::{LabelRequirement, LabelSelector, Operator};

use image::normalize_repository;

/// Istio's injection switch, as label and annotation.
pub const INJECT: &str = "sidecar.istio.io/inject";
/// Istio ambient mode's per-pod switch.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// Applies rule 2 to a pod (or pod template).
pub fn apply<'a, J: Json<'a>>(pod: J, cfg: &AgentSidecar, cx: &mut Ctx<'_>) {
    if !cfg.enabled || !is_agent(pod, cfg) {
        return;
    }
    let label = meta_map(pod, "labels").and_then(|l| l.get(INJECT));
    let annotation = meta_map(pod, "annotations").and_then(|a| a.get(INJECT));
    if label.is_some() || annotation.is_some() {
        if [label, annotation]
            .into_iter()
            .flatten()
            .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true")))
        {
            cx.warn(format!(
                "tracing agent pod has {INJECT}=\"true\": Istio will inject a sidecar that intercepts the agent's traffic; left as set"
            ));
        }
        return;
    }
    let labels_ok = match cx.ensure_map(pod, &["metadata", "labels"]) {
        Ok(()) => true,
        Err(e) => {
            cx.warn(format!("{} is not a map; agent pod not labelled", e.field));
            false
        }
    };
    if labels_ok {
        cx.add(label_path(INJECT), Value::String("false".into()));
        if cfg.ambient_opt_out {
            match meta_str(pod, "labels", DATAPLANE_MODE) {
                None => cx.add(label_path(DATAPLANE_MODE), Value::String("none".into())),
                Some("none") => {}
                Some(other) => cx.warn(format!(
                    "tracing agent pod has {DATAPLANE_MODE}={:?}; left as set",
                    shown(other)
                )),
            }
        }
    }
    match cx.ensure_map(pod, &["metadata", "annotations"]) {
        Ok(()) => cx.add(
            [
                Token::new("metadata"),
                Token::new("annotations"),
                Token::new(INJECT),
            ],
            Value::String("false".into()),
        ),
        Err(e) => cx.warn(format!("{} is not a map; agent pod not annotated", e.field)),
    }
}

fn label_path(key: &str) -> [Token<'_>; 3] {
    [
        Token::new("metadata"),
        Token::new("labels"),
        Token::new(key),
    ]
}

/// Whether the pod is a tracing agent's, by its labels or its images.
pub fn is_agent<'a, J: Json<'a>>(pod: J, cfg: &AgentSidecar) -> bool {
    let labels = meta_map(pod, "labels");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(J::as_str);
    if cfg.selectors.iter().any(|s| s.matches(label)) {
        return true;
    }
    if cfg.images.is_empty() {
        return false;
    }
    containers(pod).any(|(_, _, c)| {
        c.get("image")
            .and_then(J::as_str)
            .is_some_and(|image| image_matches(image, cfg))
    })
}

/// Whether an image reference's repository matches a configured pattern (both in
/// Docker's normalized form: no tag or digest, no implied `docker.io/`).
pub fn image_matches(image: &str, cfg: &AgentSidecar) -> bool {
    let repo = normalize_repository(image);
    cfg.images.iter().any(|p| p.matches(repo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    #[test]
    fn datadog_images_match_in_every_spelling() {
        let cfg = Config::default().agent_sidecar;
        for image in [
            "gcr.io/datadoghq/agent:7.52.0",
            "gcr.io/datadoghq/agent",
            "eu.gcr.io/datadoghq/agent:7",
            "datadog/agent:latest",
            "docker.io/datadog/agent:7",
            "index.docker.io/datadog/agent",
            "public.ecr.aws/datadog/agent:7@sha256:0123",
            "gcr.io/datadoghq/cluster-agent:7.52.0",
            "datadog/cluster-agent:latest",
            "registry.datadoghq.com/agent:7",
        ] {
            assert!(image_matches(image, &cfg), "{image}");
        }
        for image in [
            "gcr.io/datadoghq/dd-lib-java-init:v1",
            "nginx",
            "datadog/agent-ish",
            "myregistry.local:5000/datadog/agent",
            "gcr.io/datadoghq/agentx",
        ] {
            assert!(!image_matches(image, &cfg), "{image}");
        }
    }

    #[test]
    fn helm_chart_labels_need_a_datadog_name() {
        let cfg = Config::default().agent_sidecar;
        let pod =
            |labels: Value| json!({"metadata": {"labels": labels}, "spec": {"containers": []}});
        assert!(is_agent(
            &pod(
                json!({"app.kubernetes.io/component": "agent", "app.kubernetes.io/name": "prod-datadog"})
            ),
            &cfg
        ));
        assert!(!is_agent(
            &pod(
                json!({"app.kubernetes.io/component": "agent", "app.kubernetes.io/name": "fluentd"})
            ),
            &cfg
        ));
        assert!(is_agent(
            &pod(json!({"agent.datadoghq.com/component": "agent"})),
            &cfg
        ));
        assert!(is_agent(
            &pod(json!({"app": "datadog-cluster-agent"})),
            &cfg
        ));
        assert!(!is_agent(&pod(json!({"app": "web"})), &cfg));
    }
}
