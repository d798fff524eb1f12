//! The rules configuration: one YAML file holding every rule's settings.
//!
//! Every key is optional; an omitted key keeps its built-in default, and the built-in
//! defaults are the Datadog profile. A file with an unknown key, a value of the wrong
//! type, or a bad pattern or name is refused with the file, the line and the reason,
//! because a webhook in every pod's admission path must not start half-configured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
#[derive(Clone, Debug, PartialEq)]
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

/// A Kubernetes-style label selector, with one extra operator: `Glob`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", try_from = "RawLabelSelector")]
pub struct LabelSelector {
    pub match_labels: BTreeMap<LabelKey, String>,
    pub match_expressions: Vec<LabelRequirement>,
}

/// One requirement of a [`LabelSelector`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", try_from = "RawLabelRequirement")]
pub struct LabelRequirement {
    pub key: LabelKey,
    pub operator: Operator,
    #[serde(default)]
    pub values: Vec<String>,
    /// `values` compiled, for `Glob`.
    #[serde(skip)]
    patterns: Vec<glob::Pattern>,
}

/// Label requirement operators.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// The label value matches one of `values` as a glob pattern (`*datadog*`).
    Glob,
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

/// Matches a port by name and/or number; both must match when both are given.
/// Only TCP ports (protocol absent or `TCP`) ever match.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", try_from = "RawPortMatcher")]
pub struct PortMatcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
}

/// Rule 4 settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CronJobApp {
    pub enabled: bool,
    /// The label that names the service of a trace.
    pub label: LabelKey,
}

/// A label or annotation key, validated as a Kubernetes qualified name
/// (`[prefix/]name`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelKey(String);

/// An environment variable name, validated as Kubernetes validates one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvName(String);

/// A port number, 1 to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortNumber(u16);

/// An image repository pattern: a literal (compared as is, the common case) or a glob
/// (`*`, `?`, `[...]`), written in Docker's normalized form (`datadog/agent`, not
/// `docker.io/library/...`).
#[derive(Clone, Debug)]
pub enum ImagePattern {
    Literal(String),
    /// A glob, with the literal text after its last wildcard: a repository must end
    /// with it, which rules out most candidates before the (backtracking) glob match.
    Glob {
        pattern: glob::Pattern,
        suffix: String,
    },
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

/// The shapes as written, checked by `TryFrom` so that errors carry the line.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct RawLabelSelector {
    match_labels: BTreeMap<LabelKey, String>,
    match_expressions: Vec<LabelRequirement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLabelRequirement {
    key: LabelKey,
    operator: Operator,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPortMatcher {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<PortNumber>,
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
                reason: strip_location(&e.without_snippet().to_string()),
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
    pub const EXAMPLE: &'static str = include_str!("../config/datadog.yaml");
}

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
        .map(|(l, e)| (LabelKey::known(l), EnvName(e.into())))
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
                    port: Some(PortNumber(8126)),
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

impl<'de> Deserialize<'de> for ContainerTargets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let names = match Raw::deserialize(d)? {
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        if names.iter().any(|n| n == "all") {
            return Ok(Self::All);
        }
        if let Some(bad) = names.iter().find(|n| !is_dns_label(n)) {
            return Err(serde::de::Error::custom(format!(
                "container name {bad:?} is not a valid container name (RFC 1123 label)"
            )));
        }
        Ok(Self::Named(names))
    }
}

impl Serialize for ContainerTargets {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::All => ["all"].serialize(s),
            Self::Named(names) => names.serialize(s),
        }
    }
}

// === impl LabelKey ===

impl LabelKey {
    /// A key known valid at compile time (the built-in defaults).
    fn known(s: &str) -> Self {
        debug_assert!(is_qualified_name(s), "{s}");
        Self(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for LabelKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if is_qualified_name(&s) {
            Ok(Self(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "{s:?} is not a valid label or annotation key ([prefix/]name)"
            )))
        }
    }
}

impl Serialize for LabelKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

// === impl EnvName ===

impl EnvName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if is_env_var_name(&s) {
            Ok(Self(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "{s:?} is not a valid environment variable name"
            )))
        }
    }
}

impl Serialize for EnvName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

// === impl PortNumber ===

impl PortNumber {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PortNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u16::deserialize(d)?;
        if n == 0 {
            return Err(serde::de::Error::custom(
                "port 0 is not a valid port (1-65535)",
            ));
        }
        Ok(Self(n))
    }
}

// === impl ImagePattern ===

impl ImagePattern {
    /// Parses a pattern, dropping Docker Hub's implied `docker.io/` and `library/`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = normalize_repository(s);
        if s.is_empty() {
            return Err("empty image pattern".into());
        }
        if !s.contains(['*', '?', '[']) {
            return Ok(Self::Literal(s.to_owned()));
        }
        let pattern = glob::Pattern::new(s)
            .map_err(|e| format!("bad pattern {s:?}: {} at character {}", e.msg, e.pos))?;
        let suffix = s
            .rfind(['*', '?', ']'])
            .map_or(s, |i| &s[i + 1..])
            .to_owned();
        Ok(Self::Glob { pattern, suffix })
    }

    /// Whether a normalized repository (see [`normalize_repository`]) matches.
    pub fn matches(&self, repository: &str) -> bool {
        match self {
            Self::Literal(l) => l == repository,
            Self::Glob { pattern, suffix } => {
                repository.ends_with(suffix.as_str()) && pattern.matches(repository)
            }
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Literal(l) => l,
            Self::Glob { pattern, .. } => pattern.as_str(),
        }
    }
}

impl PartialEq for ImagePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<'de> Deserialize<'de> for ImagePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ImagePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_str().serialize(s)
    }
}

/// An image reference or repository in Docker's normalized form: without a tag or
/// digest, and without Docker Hub's implied `docker.io/` (or `index.docker.io/`) and
/// `library/` prefixes. `docker.io/datadog/agent:7@sha256:…` → `datadog/agent`.
pub fn normalize_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let repo = match image[last_slash..].find(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    };
    let repo = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|p| repo.strip_prefix(p))
        .unwrap_or(repo);
    // `library/` is implied only for Docker Hub images, which have no registry host.
    let hub = repo.split_once('/').is_none_or(|(first, _)| {
        !(first.contains('.') || first.contains(':') || first == "localhost")
    });
    if hub {
        repo.strip_prefix("library/").unwrap_or(repo)
    } else {
        repo
    }
}

// === impl LabelSelector, LabelRequirement, PortMatcher ===

impl TryFrom<RawLabelSelector> for LabelSelector {
    type Error = String;

    fn try_from(raw: RawLabelSelector) -> Result<Self, String> {
        if raw.match_labels.is_empty() && raw.match_expressions.is_empty() {
            return Err("an empty selector would match every pod".into());
        }
        Ok(Self {
            match_labels: raw.match_labels,
            match_expressions: raw.match_expressions,
        })
    }
}

impl TryFrom<RawLabelRequirement> for LabelRequirement {
    type Error = String;

    fn try_from(raw: RawLabelRequirement) -> Result<Self, String> {
        let needs_values = matches!(
            raw.operator,
            Operator::In | Operator::NotIn | Operator::Glob
        );
        if needs_values && raw.values.is_empty() {
            return Err(format!("operator {:?} needs values", raw.operator));
        }
        if !needs_values && !raw.values.is_empty() {
            return Err(format!("operator {:?} takes no values", raw.operator));
        }
        Self::new(raw.key, raw.operator, raw.values)
    }
}

impl LabelRequirement {
    /// A requirement, with `Glob` values compiled.
    pub fn new(key: LabelKey, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let patterns = if operator == Operator::Glob {
            values
                .iter()
                .map(|v| {
                    glob::Pattern::new(v)
                        .map_err(|e| format!("bad pattern {v:?}: {} at character {}", e.msg, e.pos))
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            key,
            operator,
            values,
            patterns,
        })
    }

    /// For `Glob`: whether `value` matches one of the patterns.
    pub fn glob_matches(&self, value: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(value))
    }
}

impl TryFrom<RawPortMatcher> for PortMatcher {
    type Error = String;

    fn try_from(raw: RawPortMatcher) -> Result<Self, String> {
        if raw.name.is_none() && raw.port.is_none() {
            return Err("a port matcher needs a name, a port, or both".into());
        }
        if let Some(name) = &raw.name
            && !is_dns_label(name)
        {
            return Err(format!("{name:?} is not a valid port name"));
        }
        Ok(Self {
            name: raw.name,
            port: raw.port,
        })
    }
}

// === validation helpers (Kubernetes' own rules) ===

/// `[-._a-zA-Z][-._a-zA-Z0-9]*`: the rule every Kubernetes version accepts for
/// `env[].name` (newer versions relax it; we produce names every version takes).
pub fn is_env_var_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || matches!(b, b'-' | b'.' | b'_') => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// A label value: at most 63 characters, empty or alphanumeric at both ends with
/// `-`, `_`, `.` inside.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then a name part that
/// is a non-empty label value.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return false;
    }
    !name.is_empty() && is_label_value(name)
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or `-`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// IANA service name, as Kubernetes checks container port names: at most 15
/// characters of lowercase alphanumerics and `-`, at least one letter, no `-` at
/// either end and no `--`.
pub fn is_iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// saphyr's plain message ends with " at line L, column C"; the location is reported
/// separately, so drop the duplicate.
fn strip_location(msg: &str) -> String {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
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
        let c = parse(include_str!("../config/otel-collector.yaml")).unwrap();
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

    #[test]
    fn env_var_names_follow_kubernetes() {
        for ok in ["DD_ENV", "_x", "a.b-c", "-x"] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1ABC", "A B", "A=B", "Ä"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }

    #[test]
    fn qualified_names_follow_kubernetes() {
        for ok in ["app", "sidecar.istio.io/inject", "a_b.c-d"] {
            assert!(is_qualified_name(ok), "{ok}");
        }
        for bad in ["", "/x", "a/", "-a", "Bad.Prefix/x", "a/b/c"] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
    }
}
