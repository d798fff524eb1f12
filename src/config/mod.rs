//! The rules configuration: one YAML file holding every rule's settings.
//!
//! Every key is optional; an omitted key keeps its built-in default, and the built-in
//! defaults are the Datadog profile. A file with an unknown key, a value of the wrong
//! type, or a bad pattern or name is refused with the file, the line and the reason,
//! because a webhook in every pod's admission path must not start half-configured.
//!
//! This module is the schema and its validation; the built-in defaults are in
//! `defaults`. The matchers a rule evaluates (label selectors and image patterns,
//! port matchers) live beside the rule that evaluates them and are re-exported here,
//! and the Kubernetes name validators are in [`crate::names`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::names::is_dns_label;
use crate::text::strip_location;

pub use crate::names::{EnvName, LabelKey};
pub use crate::rules::agent_sidecar::{ImagePattern, LabelRequirement, LabelSelector, Operator};
pub use crate::rules::trace_port::{PortMatcher, PortNumber};

mod defaults;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Objects carrying this label with the value `"false"` are left alone.
    pub opt_out: OptOut,
    /// Rule 1: tracer environment variables from a pod annotation.
    pub tracer_env: TracerEnv,
    /// Rule 2: no Istio sidecar for the tracing agent's own pods.
    pub agent_sidecar: AgentSidecar,
    /// Rule 3: the agent's trace port declared to Istio as TCP.
    pub trace_port: TracePort,
    /// Rule 4: an `app` label on CronJob pod templates.
    pub cron_job_app: CronJobApp,
}

/// The opt-out label.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OptOut {
    /// Label key; an object (or, through the webhook's namespaceSelector, a namespace)
    /// labelled with it set to `"false"` is not mutated.
    pub label: LabelKey,
}

/// Rule 1 settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TracerEnv {
    pub enabled: bool,
    /// Pod annotations whose value is a JSON object of environment variables, read in
    /// this order (a later annotation wins for a name set by both).
    pub annotations: Vec<LabelKey>,
    /// Merge the variables into `proxyMetadata` of the `proxy.istio.io/config`
    /// annotation, which Istio's injector turns into the sidecar's environment.
    pub proxy_metadata: bool,
    /// Set the variables directly on sidecar containers already in the pod.
    pub sidecar_env: bool,
    /// Names of the containers that receive the variables directly; `all` means every
    /// container of the pod.
    pub containers: ContainerTargets,
    /// Datadog's unified service tagging labels, feeding `DD_ENV`, `DD_SERVICE`,
    /// `DD_VERSION` unless an annotation sets them.
    pub unified_service_tags: UnifiedServiceTags,
}

/// Unified service tagging settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct UnifiedServiceTags {
    pub enabled: bool,
    /// Pod label → environment variable it feeds.
    pub labels: BTreeMap<LabelKey, EnvName>,
}

/// Which containers receive variables directly.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "OneOrMany")]
pub enum ContainerTargets {
    /// Every container of the pod (regular and init containers).
    All,
    /// Containers with one of these names, in `spec.containers`, or in
    /// `spec.initContainers` with `restartPolicy: Always` (native sidecars).
    Named(Vec<String>),
}

/// Rule 2 settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSidecar {
    pub enabled: bool,
    /// Also label agent pods `istio.io/dataplane-mode: none`, keeping them out of an
    /// ambient-mode mesh.
    pub ambient_opt_out: bool,
    /// A pod is an agent pod if any selector matches its labels...
    pub selectors: Vec<LabelSelector>,
    /// ...or any of its containers runs an image whose repository matches one of these
    /// glob patterns (the tag and digest are ignored; `docker.io/` is implied).
    pub images: Vec<ImagePattern>,
}

/// Rule 3 settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TracePort {
    pub enabled: bool,
    /// How the port is declared TCP to Istio.
    pub mode: PortMode,
    /// The trace ports; a port matching any entry is declared TCP.
    pub ports: Vec<PortMatcher>,
    /// Also rename matching pod container ports `NAME` → `tcp-NAME` (and Service
    /// `targetPort: NAME` with them). Off by default: see README for the caveat.
    pub rename_pod_ports: bool,
}

/// How rule 3 declares a port TCP.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PortMode {
    /// `appProtocol: tcp` on the Service port (Kubernetes 1.18+).
    #[default]
    AppProtocol,
    /// The Service port name gets the `tcp-` prefix.
    Name,
}

/// Rule 4 settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CronJobApp {
    pub enabled: bool,
    /// The label that names the service of a trace.
    pub label: LabelKey,
}

/// `containers:` as written: one name or a list of names.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, or a value does not fit the schema.
    #[error("invalid config {path}:{line}:{column}: {reason}")]
    Invalid {
        path: PathBuf,
        line: u64,
        column: u64,
        reason: String,
    },
    /// The file parsed, but the settings contradict each other.
    #[error("invalid config {path}: {reason}")]
    Inconsistent { path: PathBuf, reason: String },
}

// === impl Config ===

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // An empty file (or one holding only comments) means "all defaults".
        if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        }) {
            return Ok(Self::default());
        }
        let config: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                reason: strip_location(&e.without_snippet().to_string()).to_owned(),
            }
        })?;
        config.check().map_err(|reason| ConfigError::Inconsistent {
            path: path.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    /// Checks that span sections of the file.
    fn check(&self) -> Result<(), String> {
        if let ContainerTargets::Named(names) = &self.tracer_env.containers
            && names.is_empty()
        {
            return Err("tracerEnv.containers: list at least one container name, or all".into());
        }
        Ok(())
    }

    /// The documented example configuration: the built-in defaults, with comments.
    pub const EXAMPLE: &'static str = include_str!("../../config/datadog.yaml");
}

// === impl ContainerTargets ===

impl ContainerTargets {
    /// Whether a container of this name, in this list, receives the variables.
    pub fn selects(&self, name: &str, native_sidecar: bool, init: bool) -> bool {
        match self {
            Self::All => true,
            Self::Named(names) => (!init || native_sidecar) && names.iter().any(|n| n == name),
        }
    }
}

impl TryFrom<OneOrMany> for ContainerTargets {
    type Error = String;

    fn try_from(raw: OneOrMany) -> Result<Self, String> {
        let names = match raw {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if names.iter().any(|n| n == "all") {
            return Ok(Self::All);
        }
        if let Some(bad) = names.iter().find(|n| !is_dns_label(n)) {
            return Err(format!(
                "container name {bad:?} is not a valid container name (RFC 1123 label)"
            ));
        }
        Ok(Self::Named(names))
    }
}

impl Serialize for ContainerTargets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::All => ["all"].serialize(s),
            Self::Named(names) => names.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    #[test]
    fn empty_file_is_the_datadog_profile() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# nothing\n").unwrap(), Config::default());
    }

    #[test]
    fn shipped_example_equals_the_defaults() {
        assert_eq!(parse(Config::EXAMPLE).unwrap(), Config::default());
    }

    #[test]
    fn shipped_otel_profile_loads() {
        let c = parse(include_str!("../../config/otel-collector.yaml")).unwrap();
        let ports: Vec<_> = c
            .trace_port
            .ports
            .iter()
            .filter_map(|p| p.port)
            .map(|p| p.get())
            .collect();
        for p in [4317, 4318, 9411] {
            assert!(ports.contains(&p), "{p} missing from {ports:?}");
        }
        assert!(!c.agent_sidecar.images.is_empty());
    }

    #[test]
    fn unknown_key_is_refused_with_line() {
        let err = parse("tracerEnv:\n  enabled: true\n  annotation: [x]\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("invalid config test.yaml:3:"), "{msg}");
        assert!(msg.contains("unknown field `annotation`"), "{msg}");
    }

    #[test]
    fn wrong_type_is_refused_with_line() {
        let err = parse("tracePort:\n  mode: name\n  ports:\n    - port: seventy\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("invalid config test.yaml:4:"), "{msg}");
    }

    #[test]
    fn bad_pattern_is_refused_with_line_and_reason() {
        let err = parse("agentSidecar:\n  images:\n    - 'gcr.io/[datadoghq/agent'\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("invalid config test.yaml:3:"), "{msg}");
        assert!(msg.contains("bad pattern"), "{msg}");
    }

    #[test]
    fn bad_mode_and_bad_names_are_refused() {
        assert!(parse("tracePort:\n  mode: udp\n").is_err());
        assert!(parse("tracerEnv:\n  annotations: ['not a key']\n").is_err());
        assert!(
            parse("tracerEnv:\n  unifiedServiceTags:\n    labels:\n      a/b: 1BAD\n").is_err()
        );
        assert!(parse("tracePort:\n  ports:\n    - port: 0\n").is_err());
        assert!(parse("tracePort:\n  ports:\n    - {}\n").is_err());
        assert!(parse("agentSidecar:\n  selectors:\n    - {}\n").is_err());
        assert!(
            parse("agentSidecar:\n  selectors:\n    - matchExpressions:\n        - {key: app, operator: In}\n")
                .is_err()
        );
    }

    #[test]
    fn containers_all_means_every_container() {
        let c = parse("tracerEnv:\n  containers: all\n").unwrap();
        assert_eq!(c.tracer_env.containers, ContainerTargets::All);
        assert!(c.tracer_env.containers.selects("app", false, true));
        let d = Config::default();
        assert!(d.tracer_env.containers.selects("istio-proxy", false, false));
        assert!(!d.tracer_env.containers.selects("istio-proxy", false, true));
        assert!(d.tracer_env.containers.selects("istio-proxy", true, true));
    }
}
