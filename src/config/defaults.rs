//! The built-in defaults: the Datadog profile (documented, key by key, in
//! `config/datadog.yaml`, which a test reads back and compares with these).

use std::collections::BTreeMap;

use super::{
    AgentSidecar, ContainerTargets, CronJobApp, EnvName, ImagePattern, LabelKey, LabelRequirement,
    LabelSelector, Operator, OptOut, PortMatcher, PortMode, PortNumber, TracePort, TracerEnv,
    UnifiedServiceTags,
};

impl Default for OptOut {
    fn default() -> Self {
        Self {
            label: LabelKey::known("tracepatch.io/enabled"),
        }
    }
}

impl Default for TracerEnv {
    fn default() -> Self {
        Self {
            enabled: true,
            annotations: vec![LabelKey::known("apm.datadoghq.com/env")],
            proxy_metadata: true,
            sidecar_env: true,
            containers: ContainerTargets::Named(vec!["istio-proxy".into()]),
            unified_service_tags: UnifiedServiceTags::default(),
        }
    }
}

impl Default for UnifiedServiceTags {
    fn default() -> Self {
        let labels = [
            ("tags.datadoghq.com/env", "DD_ENV"),
            ("tags.datadoghq.com/service", "DD_SERVICE"),
            ("tags.datadoghq.com/version", "DD_VERSION"),
        ]
        .into_iter()
        .map(|(l, e)| (LabelKey::known(l), EnvName::known(e)))
        .collect();
        Self {
            enabled: true,
            labels,
        }
    }
}

impl Default for AgentSidecar {
    fn default() -> Self {
        let req = |key: &str, operator: Operator, values: &[&str]| {
            LabelRequirement::new(
                LabelKey::known(key),
                operator,
                values.iter().map(|v| v.to_string()).collect(),
            )
        };
        let selector = |reqs: Vec<Result<LabelRequirement, String>>| LabelSelector {
            match_labels: BTreeMap::new(),
            // The built-in requirements are valid (a test loads them back from the
            // documented file and compares); an invalid one would be dropped, not panic.
            match_expressions: reqs.into_iter().flatten().collect(),
        };
        let selectors = vec![
            // The plain manifests in Datadog's guides.
            selector(vec![req(
                "app",
                Operator::In,
                &[
                    "datadog-agent",
                    "datadog-cluster-agent",
                    "datadog-cluster-checks-runner",
                    "datadog-clusterchecks",
                ],
            )]),
            // Datadog's Helm chart: app.kubernetes.io/component on a Datadog-named app.
            selector(vec![
                req(
                    "app.kubernetes.io/component",
                    Operator::In,
                    &["agent", "cluster-agent", "clusterchecks-agent"],
                ),
                req("app.kubernetes.io/name", Operator::Glob, &["*datadog*"]),
            ]),
            // The Datadog Operator.
            selector(vec![req(
                "agent.datadoghq.com/component",
                Operator::Exists,
                &[],
            )]),
        ];
        let images = [
            "gcr.io/datadoghq/agent",
            "*.gcr.io/datadoghq/agent",
            "datadog/agent",
            "public.ecr.aws/datadog/agent",
            "datadoghq.azurecr.io/agent",
            "registry.datadoghq.com/agent",
            "gcr.io/datadoghq/cluster-agent",
            "*.gcr.io/datadoghq/cluster-agent",
            "datadog/cluster-agent",
            "public.ecr.aws/datadog/cluster-agent",
            "datadoghq.azurecr.io/cluster-agent",
            "registry.datadoghq.com/cluster-agent",
        ]
        .into_iter()
        .filter_map(|p| ImagePattern::parse(p).ok())
        .collect();
        Self {
            enabled: true,
            ambient_opt_out: true,
            selectors,
            images,
        }
    }
}

impl Default for TracePort {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: PortMode::AppProtocol,
            ports: vec![
                PortMatcher {
                    name: Some("traceport".into()),
                    port: None,
                },
                PortMatcher {
                    name: None,
                    port: Some(PortNumber::known(8126)),
                },
            ],
            rename_pod_ports: false,
        }
    }
}

impl Default for CronJobApp {
    fn default() -> Self {
        Self {
            enabled: true,
            label: LabelKey::known("app"),
        }
    }
}
