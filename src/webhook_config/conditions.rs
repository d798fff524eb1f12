//! `matchConditions`: CEL the apiserver evaluates before it calls tracepatch, rendered
//! from the rules configuration, so that objects no rule could change or warn about are
//! never sent.
//!
//! Each expression must be true for every object some enabled rule could change or warn
//! about (a false one is a silent miss) and should be false for as many others as
//! possible. It must never fail to evaluate: a condition that errors makes the
//! apiserver apply the webhook's `failurePolicy` (`Ignore`: the call is skipped), so
//! every optional field is guarded with `has()` before it is read. Where a rule's test
//! is hard to state exactly in CEL (a protocol, a rename in name mode) the condition
//! asks less and lets more through: the rules decide.
//!
//! The CEL used stays inside what both Kubernetes (cel-go) and the tests' interpreter
//! (cel-rust) implement: `has()`, `in`, `exists`, `matches` (RE2 syntax shared with
//! Rust's regex crate), `string()`, `&&`, `||`, `!`.

use std::fmt::Write as _;

use crate::config::{AgentSidecar, Config, ImagePattern, LabelSelector, Operator, TracePort};

/// The name of the one condition each webhook carries (conditions are ANDed; ours is a
/// single disjunction).
pub const CONDITION_NAME: &str = "tracepatch-rules-may-apply";

/// Docker Hub prefixes an image reference may carry that its normalized repository
/// drops (see `normalize_repository`).
const HUB_PREFIXES: [&str; 3] = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"];

/// One expression per webhook; `false` when no enabled rule acts on that kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conditions {
    pub pods: String,
    pub services: String,
    pub cronjobs: String,
}

// === impl Conditions ===

impl Conditions {
    /// The expression of the webhook named `name` (`pods.tracepatch.io`, ...).
    pub fn for_webhook(&self, name: &str) -> Option<&str> {
        match name {
            "pods.tracepatch.io" => Some(&self.pods),
            "services.tracepatch.io" => Some(&self.services),
            "cronjobs.tracepatch.io" => Some(&self.cronjobs),
            _ => None,
        }
    }
}

/// Renders the conditions for a configuration.
pub fn render(config: &Config) -> Conditions {
    Conditions {
        pods: or_false(pod_terms(config)),
        services: or_false(service_terms(&config.trace_port)),
        cronjobs: or_false(cronjob_terms(config)),
    }
}

/// `a || b || ...` on lines of their own, guarded against a null object (DELETE, never
/// registered, but a condition must not fail on it).
fn or_false(terms: Vec<String>) -> String {
    if terms.is_empty() {
        return "false".to_owned();
    }
    let mut out = String::from("object != null && (\n");
    for (i, t) in terms.iter().enumerate() {
        let sep = if i + 1 < terms.len() { " ||" } else { "" };
        let _ = writeln!(out, "  {t}{sep}");
    }
    out.push(')');
    out
}

/// Rules 1, 2 and the opt-in part of 3, which act on pods.
fn pod_terms(config: &Config) -> Vec<String> {
    let mut terms = Vec::new();
    let env = &config.tracer_env;
    if env.enabled && (env.proxy_metadata || env.sidecar_env) {
        let keys: Vec<&str> = env.annotations.iter().map(|k| k.as_str()).collect();
        if !keys.is_empty() {
            terms.push(any_key_in("object.metadata", "annotations", &keys));
        }
        let ust = &env.unified_service_tags;
        if ust.enabled && !ust.labels.is_empty() {
            let keys: Vec<&str> = ust.labels.keys().map(|k| k.as_str()).collect();
            terms.push(any_key_in("object.metadata", "labels", &keys));
        }
    }
    terms.extend(agent_terms(&config.agent_sidecar));
    let tp = &config.trace_port;
    if tp.enabled && tp.rename_pod_ports {
        let port = port_matches(tp, "containerPort");
        if port != "false" {
            for list in ["containers", "initContainers"] {
                terms.push(format!(
                    "(has(object.spec) && has(object.spec.{list}) && object.spec.{list}.exists(c, has(c.ports) && c.ports.exists(p, {port})))"
                ));
            }
        }
    }
    terms
}

/// Rule 2: any agent selector matches the pod's labels, or any image matches.
fn agent_terms(cfg: &AgentSidecar) -> Vec<String> {
    if !cfg.enabled {
        return Vec::new();
    }
    let mut terms: Vec<String> = cfg.selectors.iter().map(selector).collect();
    if let Some(re) = images_regex(&cfg.images) {
        for list in ["containers", "initContainers"] {
            terms.push(format!(
                "(has(object.spec) && has(object.spec.{list}) && object.spec.{list}.exists(c, has(c.image) && c.image.matches({})))",
                lit(&re)
            ));
        }
    }
    terms
}

/// Rule 3 on Services: a port that a matcher selects (any protocol: the rule checks
/// TCP), or, with `renamePodPorts`, a `targetPort` naming a port the pod rule renames.
fn service_terms(tp: &TracePort) -> Vec<String> {
    if !tp.enabled {
        return Vec::new();
    }
    let mut port = port_matches(tp, "port");
    if tp.rename_pod_ports {
        let names: Vec<String> = tp
            .ports
            .iter()
            .filter_map(|m| m.name.as_deref())
            .map(lit)
            .collect();
        if !names.is_empty() {
            port = format!(
                "{port} || (has(p.targetPort) && string(p.targetPort) in [{}])",
                names.join(", ")
            );
        }
    }
    if port == "false" {
        return Vec::new();
    }
    vec![format!(
        "(has(object.spec) && has(object.spec.ports) && object.spec.ports.exists(p, {port}))"
    )]
}

/// Rule 4: a pod template without the label (the job template's label is only set
/// together with the pod template's).
fn cronjob_terms(config: &Config) -> Vec<String> {
    let cfg = &config.cron_job_app;
    if !cfg.enabled {
        return Vec::new();
    }
    let t = "object.spec.jobTemplate.spec.template";
    vec![format!(
        "(has(object.spec) && has(object.spec.jobTemplate) && has(object.spec.jobTemplate.spec) && has({t}) && !(has({t}.metadata) && has({t}.metadata.labels) && {} in {t}.metadata.labels))",
        lit(cfg.label.as_str())
    )]
}

/// Whether a port (`p`) matches any matcher: by name and/or by the number in `field`.
fn port_matches(tp: &TracePort, field: &str) -> String {
    let alternatives: Vec<String> = tp
        .ports
        .iter()
        .map(|m| {
            let mut parts = Vec::new();
            if let Some(name) = &m.name {
                parts.push(format!("(has(p.name) && p.name == {})", lit(name)));
            }
            if let Some(port) = m.port {
                parts.push(format!("(has(p.{field}) && p.{field} == {})", port.get()));
            }
            parts.join(" && ")
        })
        .filter(|s| !s.is_empty())
        .collect();
    if alternatives.is_empty() {
        "false".to_owned()
    } else {
        alternatives.join(" || ")
    }
}

/// `(has(M.F) && [k1, k2].exists(k, k in M.F))`, e.g. any of these annotations.
fn any_key_in(parent: &str, field: &str, keys: &[&str]) -> String {
    let list: Vec<String> = keys.iter().map(|k| lit(k)).collect();
    format!(
        "(has({parent}) && has({parent}.{field}) && [{}].exists(k, k in {parent}.{field}))",
        list.join(", ")
    )
}

/// A label selector on the pod's labels, exactly as Kubernetes (plus `Glob`) reads it.
fn selector(sel: &LabelSelector) -> String {
    const LABELS: &str = "object.metadata.labels";
    let present = |k: &str| {
        format!(
            "(has(object.metadata) && has({LABELS}) && {} in {LABELS})",
            lit(k)
        )
    };
    let value = |k: &str| format!("{LABELS}[{}]", lit(k));
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .map(|(k, v)| {
            format!(
                "({} && {} == {})",
                present(k.as_str()),
                value(k.as_str()),
                lit(v)
            )
        })
        .collect();
    for r in &sel.match_expressions {
        let k = r.key.as_str();
        let values = || {
            let v: Vec<String> = r.values.iter().map(|v| lit(v)).collect();
            format!("[{}]", v.join(", "))
        };
        parts.push(match r.operator {
            Operator::In => format!("({} && {} in {})", present(k), value(k), values()),
            Operator::NotIn => format!("(!{} || !({} in {}))", present(k), value(k), values()),
            Operator::Exists => present(k),
            Operator::DoesNotExist => format!("!{}", present(k)),
            Operator::Glob => {
                let alts: Vec<String> = r.values.iter().map(|g| glob_regex(g)).collect();
                format!(
                    "({} && {}.matches({}))",
                    present(k),
                    value(k),
                    lit(&format!("^(?:{})$", alts.join("|")))
                )
            }
        });
    }
    match parts.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", parts.join(" && ")),
    }
}

/// One regular expression that an image reference matches whenever its normalized
/// repository matches one of the patterns: optional Docker Hub prefix and `library/`,
/// the repository, an optional tag (no `/` after the `:`) and an optional digest.
fn images_regex(patterns: &[ImagePattern]) -> Option<String> {
    if patterns.is_empty() {
        return None;
    }
    let hubs: Vec<String> = HUB_PREFIXES.iter().map(|p| regex_escape(p)).collect();
    let repos: Vec<String> = patterns
        .iter()
        .map(|p| match p {
            ImagePattern::Literal(l) => regex_escape(l),
            ImagePattern::Glob { pattern, .. } => glob_regex(pattern.as_str()),
        })
        .collect();
    Some(format!(
        "^(?:{})?(?:library/)?(?:{})(?::[^/@]*)?(?:@.*)?$",
        hubs.join("|"),
        repos.join("|")
    ))
}

/// A glob pattern (as the `glob` crate reads it: `*`, `?`, `[...]`, `[!...]`) as a
/// regular expression that matches at least what the glob matches.
fn glob_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 8);
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                // A class matches one character: any character is a superset, and
                // needs no translation of the glob's class syntax.
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
                out.push('.');
            }
            c => out.push_str(&regex_escape(&c.to_string())),
        }
    }
    out
}

/// Escapes the characters that are special in RE2 and Rust's regex.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A CEL string literal.
fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_literals_escape_quotes_and_backslashes() {
        assert_eq!(lit(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn globs_become_anchorable_regexes() {
        assert_eq!(glob_regex("*datadog*"), ".*datadog.*");
        assert_eq!(glob_regex("a.b?[xy]"), r"a\.b..");
    }

    #[test]
    fn every_rule_off_means_no_call() {
        let config: Config = Config::parse(
            "tracerEnv: {enabled: false}\nagentSidecar: {enabled: false}\ntracePort: {enabled: false}\ncronJobApp: {enabled: false}\n",
            std::path::Path::new("off.yaml"),
        )
        .unwrap();
        let c = render(&config);
        assert_eq!(
            (c.pods.as_str(), c.services.as_str(), c.cronjobs.as_str()),
            ("false", "false", "false")
        );
    }
}
