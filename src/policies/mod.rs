//! Rules 2–4 as MutatingAdmissionPolicies: `tracepatch policies`.
//!
//! A MutatingAdmissionPolicy is a CEL mutation the apiserver applies itself, before it
//! calls any mutating webhook. For rule 2 that removes the two ways the webhook can
//! fail it (tracepatch down or slow with `failurePolicy: Ignore`, and a webhook
//! configuration that sorts before `00-tracepatch`), and for rules 3 and 4 it saves a
//! round trip per object. This module renders the policies and their bindings from the
//! same [`Config`] the webhook reads, with the webhook's resources, operations,
//! selectors, opt-out and precedence, so that an object gets the same change either way;
//! with both installed, the webhook finds the change made and adds nothing (its rules
//! are idempotent).
//!
//! Every expression reads optional fields through optional chaining (`?.`, `orValue`)
//! or `has()`, so that it cannot fail on a missing field: with `failurePolicy: Ignore` a
//! failing expression would silently skip the mutation. Where CEL cannot state the
//! webhook's test exactly, the policy decides "no" and leaves the object to the webhook
//! (see [`Rendered::notes`]). Rule 1 stays in the webhook.
//!
//! The renderer is pure: configuration in, YAML text out.

mod agent_sidecar;
mod cel;
mod cronjob_app;
mod trace_port;
mod yaml;

use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;

use crate::config::{Config, ConfigError};
use yaml::{MapBuilder, Node, write_comment, write_document};

pub use cel::{GlobRegex, glob_regex};
pub use trace_port::{protocol_prefix, renamed_targets};

/// Which version of the admissionregistration API to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApiVersion {
    /// `admissionregistration.k8s.io/v1`: Kubernetes 1.36 and later.
    #[default]
    V1,
    /// `admissionregistration.k8s.io/v1beta1`: Kubernetes 1.34 and 1.35, with the
    /// `MutatingAdmissionPolicy` feature gate and that API version enabled.
    V1beta1,
}

impl FromStr for ApiVersion {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s {
            "v1" => Ok(Self::V1),
            "v1beta1" => Ok(Self::V1beta1),
            other => Err(PolicyError::ApiVersion(other.to_owned())),
        }
    }
}

/// What the policies are rendered for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub api_version: ApiVersion,
    /// The namespace tracepatch runs in: excluded, with `kube-system`, as the webhook
    /// excludes them.
    pub namespace: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_version: ApiVersion::V1,
            namespace: "tracepatch".into(),
        }
    }
}

/// Why the policies could not be rendered or printed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `--namespace` is not a namespace name.
    #[error("{0:?} is not a valid namespace name (RFC 1123 label)")]
    InvalidNamespace(String),
    /// `--api-version` is neither `v1` nor `v1beta1`.
    #[error("unknown API version {0:?}: v1 or v1beta1")]
    ApiVersion(String),
    /// The configuration file was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Standard output could not be written.
    #[error("cannot write standard output: {0}")]
    Write(#[source] std::io::Error),
}

/// The rendered policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Multi-document YAML: each policy, then its binding.
    pub yaml: String,
    /// The names of the policies (and of their bindings), in order.
    pub policies: Vec<String>,
    /// What CEL could not express for this configuration, which the policies leave to
    /// the webhook (also written as comments in `yaml`).
    pub notes: Vec<String>,
}

/// `tracepatch policies`: the policies for the configuration file (or the built-in
/// profile) on standard output, and each note (what is left to the webhook) as a line on
/// standard error.
pub fn run(config: Option<&Path>, api_version: &str, namespace: &str) -> Result<(), PolicyError> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let opts = Options {
        api_version: api_version.parse()?,
        namespace: namespace.to_owned(),
    };
    let rendered = render(&config, &opts)?;
    let mut stderr = std::io::stderr().lock();
    for note in &rendered.notes {
        let _ = writeln!(stderr, "note: left to the webhook: {note}");
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(rendered.yaml.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        // `tracepatch policies | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(PolicyError::Write(e)),
    }
}

/// The name every policy and binding starts with.
pub const NAME_PREFIX: &str = "tracepatch-";

/// Renders the policies and bindings for the enabled rules 2–4 of `config`.
pub fn render(config: &Config, opts: &Options) -> Result<Rendered, PolicyError> {
    if !is_dns_label(&opts.namespace) {
        return Err(PolicyError::InvalidNamespace(opts.namespace.clone()));
    }
    let opt_out = config.opt_out.label.as_str();
    let policies: Vec<Policy> = [
        agent_sidecar::policy(&config.agent_sidecar, opt_out),
        trace_port::service_policy(&config.trace_port, opt_out),
        trace_port::pod_policy(&config.trace_port, opt_out),
        cronjob_app::policy(&config.cron_job_app, opt_out),
    ]
    .into_iter()
    .flatten()
    .collect();

    let mut yaml = String::with_capacity(32 * 1024);
    write_comment(&mut yaml, HEADER, 0);
    let notes: Vec<String> = policies
        .iter()
        .flat_map(|p| p.notes.iter().map(move |n| format!("{}: {n}", p.rule)))
        .collect();
    if policies.is_empty() {
        write_comment(
            &mut yaml,
            "\nNo policy: rules 2-4 are all disabled in this configuration.",
            0,
        );
    }
    for p in &policies {
        yaml.push_str("---\n");
        let mut about = p.about.clone();
        if !p.notes.is_empty() {
            about.push_str("\nNot expressed in CEL, so left to the webhook:");
            for n in &p.notes {
                about.push_str("\n- ");
                about.push_str(n);
            }
        }
        write_comment(&mut yaml, &about, 0);
        write_document(&mut yaml, &p.policy_node(config, opts));
        yaml.push_str("---\n");
        write_document(&mut yaml, &p.binding_node(opts));
    }
    Ok(Rendered {
        yaml,
        policies: policies.iter().map(Policy::name).collect(),
        notes,
    })
}

const HEADER: &str = "\
MutatingAdmissionPolicies for tracepatch's rules 2-4 (agent-sidecar, trace-port,
cronjob-app), rendered by `tracepatch policies` from the rules configuration. Do not
edit by hand: render again (a test compares the shipped copies with the output).

The apiserver applies these itself, before it calls any mutating webhook, whatever the
webhook configurations are named, and whether or not tracepatch's webhook is up.
Rule 1 (tracer-env) stays in the webhook. With both installed, the webhook receives
objects these policies already changed and changes nothing more (its rules are
idempotent). Each policy acts on the objects, operations, namespaces and opt-outs the
webhook acts on, and changes exactly what the webhook would change, or nothing.

failurePolicy: Ignore, as the webhook's: a tracing policy must never block a workload.
An expression that failed would then skip the mutation silently, so every expression
reads optional fields through has() or optional chaining (?.) and cannot fail on a
missing field.
reinvocationPolicy: IfNeeded, as the webhook's: if a later webhook changes the object,
the policy runs again on the result (it changes nothing it has already changed).";

/// One policy, before rendering.
struct Policy {
    /// The rule's name; the policy is `tracepatch-<rule>`.
    rule: &'static str,
    /// The comment above the policy.
    about: String,
    resource: Resource,
    conditions: Vec<Condition>,
    variables: Vec<Variable>,
    mutations: Vec<Mutation>,
    /// What CEL could not express here (left to the webhook).
    notes: Vec<String>,
}

/// The resource a policy matches, as in the webhook configuration's rules.
#[derive(Clone, Copy)]
struct Resource {
    group: &'static str,
    resource: &'static str,
    operations: &'static [&'static str],
}

impl Resource {
    const PODS: Resource = Resource {
        group: "",
        resource: "pods",
        operations: &["CREATE"],
    };
    const SERVICES: Resource = Resource {
        group: "",
        resource: "services",
        operations: &["CREATE", "UPDATE"],
    };
    const CRONJOBS: Resource = Resource {
        group: "batch",
        resource: "cronjobs",
        operations: &["CREATE", "UPDATE"],
    };
}

struct Condition {
    name: &'static str,
    comment: String,
    expression: String,
}

struct Variable {
    name: &'static str,
    comment: String,
    expression: String,
}

struct Mutation {
    kind: PatchKind,
    comment: String,
    expression: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchKind {
    ApplyConfiguration,
    JsonPatch,
}

impl Condition {
    fn new(name: &'static str, comment: &str, expression: &str) -> Self {
        Self {
            name,
            comment: comment.to_owned(),
            expression: expression.to_owned(),
        }
    }
}

impl Variable {
    fn new(name: &'static str, comment: &str, expression: &str) -> Self {
        Self {
            name,
            comment: comment.to_owned(),
            expression: expression.to_owned(),
        }
    }
}

/// The object's own opt-out label, read on the object being admitted: the selectors
/// match an UPDATE when either the old or the new object matches, while the webhook
/// leaves an object alone when the new one is labelled.
fn opt_out_condition(opt_out: &str) -> Condition {
    Condition::new(
        "not-opted-out",
        &format!(
            "An object labelled {opt_out}: \"false\" is left alone (on UPDATE the\n\
             objectSelector also lets through an object whose old version was not labelled)."
        ),
        &format!(
            "object.?metadata.?labels[?{}].orValue(\"\") != \"false\"",
            cel::lit(opt_out)
        ),
    )
}

/// The matchCondition that lets the policy's mutations run only on `what` (the objects
/// they change), given as `test` over the variables. Without it every object of the
/// resource pays for a patch: the apiserver encodes, patches and decodes the whole object
/// even when the patch is empty, and then runs the policies a second time (kube-apiserver
/// v1.36.2: two invocations per unrelated pod or Service, none with the condition).
fn only_when(name: &'static str, what: &str, test: &str, variables: &[Variable]) -> Condition {
    Condition::new(
        name,
        &format!(
            "Only {what}: the apiserver would encode and patch any other object\n\
             too, even with an empty patch, and then run the policies again. The variables\n\
             are written out: a matchCondition cannot read them."
        ),
        &inline_variables(test, variables),
    )
}

/// `expression` with every `variables.NAME` replaced by that variable's own expression,
/// in parentheses, recursively: for matchConditions, which the apiserver compiles
/// without the policy's variables ("undeclared reference to 'variables'"). A variable's
/// expression reads only `object` and the variables before it, so the substitution keeps
/// its meaning; string literals are copied as they are, whatever they hold.
fn inline_variables(expression: &str, variables: &[Variable]) -> String {
    const PREFIX: &str = "variables.";
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expression.len());
    let mut rest = expression;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            // A double-quoted literal (the only kind these expressions use), to its
            // closing quote; `\` escapes the next character.
            let mut end = rest.len();
            let mut escaped = false;
            for (i, ch) in rest.char_indices().skip(1) {
                match ch {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        let starts_token = !out.ends_with(|p: char| is_ident(p) || p == '.');
        if starts_token && let Some(after) = rest.strip_prefix(PREFIX) {
            let len = after.find(|ch: char| !is_ident(ch)).unwrap_or(after.len());
            if let Some(at) = variables.iter().position(|v| v.name == &after[..len]) {
                out.push('(');
                out.push_str(&inline_variables(
                    &variables[at].expression,
                    &variables[..at],
                ));
                out.push(')');
                rest = &after[len..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// RFC 1123 label: what a namespace name is.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn labels(component: &str) -> Node {
    MapBuilder::new()
        .entry("app.kubernetes.io/name", Node::str("tracepatch"))
        .entry("app.kubernetes.io/instance", Node::str("tracepatch"))
        .entry(
            "app.kubernetes.io/version",
            Node::str(env!("CARGO_PKG_VERSION")),
        )
        .entry("app.kubernetes.io/component", Node::str(component))
        .build()
}

fn api_version(opts: &Options) -> &'static str {
    match opts.api_version {
        ApiVersion::V1 => "admissionregistration.k8s.io/v1",
        ApiVersion::V1beta1 => "admissionregistration.k8s.io/v1beta1",
    }
}

/// `key NotIn [values]`.
fn not_in(key: &str, values: Vec<String>) -> Node {
    MapBuilder::new()
        .entry("key", Node::str(key))
        .entry("operator", Node::str("NotIn"))
        .entry("values", Node::Flow(values))
        .build()
}

impl Policy {
    fn name(&self) -> String {
        format!("{NAME_PREFIX}{}", self.rule)
    }

    fn policy_node(&self, config: &Config, opts: &Options) -> Node {
        let opt_out = config.opt_out.label.as_str();
        let r = self.resource;
        let rule = MapBuilder::new()
            .entry("apiGroups", Node::Flow(vec![r.group.into()]))
            .entry("apiVersions", Node::Flow(vec!["v1".into()]))
            .entry("resources", Node::Flow(vec![r.resource.into()]))
            .entry(
                "operations",
                Node::Flow(r.operations.iter().map(|o| o.to_string()).collect()),
            )
            .entry("scope", Node::str("Namespaced"))
            .build();
        let constraints = MapBuilder::new()
            .commented(
                "The webhook's resources and operations.",
                "resourceRules",
                Node::Seq(vec![rule]),
            )
            .commented(
                "Also requests made through another version of the resource.",
                "matchPolicy",
                Node::str("Equivalent"),
            )
            .commented(
                &format!(
                    "The webhook's namespaces: never kube-system, never tracepatch's own, never\n\
                     one labelled {opt_out}: \"false\" (NotIn also matches a namespace without\n\
                     the label)."
                ),
                "namespaceSelector",
                MapBuilder::new()
                    .entry(
                        "matchExpressions",
                        Node::Seq(vec![
                            not_in(
                                "kubernetes.io/metadata.name",
                                vec!["kube-system".into(), opts.namespace.clone()],
                            ),
                            not_in(opt_out, vec!["false".into()]),
                        ]),
                    )
                    .build(),
            )
            .commented(
                &format!("An object labelled {opt_out}: \"false\" is left alone."),
                "objectSelector",
                MapBuilder::new()
                    .entry(
                        "matchExpressions",
                        Node::Seq(vec![not_in(opt_out, vec!["false".into()])]),
                    )
                    .build(),
            )
            .build();
        let conditions = self
            .conditions
            .iter()
            .map(|c| {
                MapBuilder::new()
                    .commented(&c.comment, "name", Node::str(c.name))
                    .entry("expression", Node::Block(c.expression.clone()))
                    .build()
            })
            .collect();
        let variables = self
            .variables
            .iter()
            .map(|v| {
                MapBuilder::new()
                    .commented(&v.comment, "name", Node::str(v.name))
                    .entry("expression", Node::Block(v.expression.clone()))
                    .build()
            })
            .collect();
        let mutations = self
            .mutations
            .iter()
            .map(|m| {
                let (kind, field) = match m.kind {
                    PatchKind::ApplyConfiguration => ("ApplyConfiguration", "applyConfiguration"),
                    PatchKind::JsonPatch => ("JSONPatch", "jsonPatch"),
                };
                MapBuilder::new()
                    .commented(&m.comment, "patchType", Node::str(kind))
                    .entry(
                        field,
                        MapBuilder::new()
                            .entry("expression", Node::Block(m.expression.clone()))
                            .build(),
                    )
                    .build()
            })
            .collect();
        let mut spec = MapBuilder::new()
            .entry("failurePolicy", Node::str("Ignore"))
            .entry("reinvocationPolicy", Node::str("IfNeeded"))
            .entry("matchConstraints", constraints)
            .entry("matchConditions", Node::Seq(conditions));
        if !self.variables.is_empty() {
            spec = spec.entry("variables", Node::Seq(variables));
        }
        spec = spec.entry("mutations", Node::Seq(mutations));
        MapBuilder::new()
            .entry("apiVersion", Node::str(api_version(opts)))
            .entry("kind", Node::str("MutatingAdmissionPolicy"))
            .entry(
                "metadata",
                MapBuilder::new()
                    .entry("name", Node::str(self.name()))
                    .entry("labels", labels("admission-policy"))
                    .build(),
            )
            .entry("spec", spec.build())
            .build()
    }

    /// The binding: the policy everywhere its own constraints allow.
    fn binding_node(&self, opts: &Options) -> Node {
        MapBuilder::new()
            .entry("apiVersion", Node::str(api_version(opts)))
            .entry("kind", Node::str("MutatingAdmissionPolicyBinding"))
            .entry(
                "metadata",
                MapBuilder::new()
                    .entry("name", Node::str(self.name()))
                    .entry("labels", labels("admission-policy"))
                    .build(),
            )
            .commented(
                "Everywhere the policy's matchConstraints allow.",
                "spec",
                MapBuilder::new()
                    .entry("policyName", Node::str(self.name()))
                    .build(),
            )
            .build()
    }
}

#[cfg(test)]
mod tests;
