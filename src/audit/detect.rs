//! Findings from raw objects, without the API: what the rules would change, and the
//! states the webhook cannot repair at admission because the object already exists.
//!
//! Every decision about what a rule would change is the [`Engine`]'s, called exactly as
//! the webhook calls it (`admit`, operation CREATE). A pod is run through one engine per
//! pod rule (the same configuration with the other rules switched off), so that each
//! finding carries the patch of its own rule and that patch applies on its own.
//! What is added here is only the reading of the result: which pod already runs an
//! `istio-proxy` that a restart must remove or refill, which Job or pod of a CronJob ran
//! without the label.

use std::collections::BTreeMap;

use json_patch::PatchOperation;
use kube::core::admission::Operation;
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::engine::{Engine, Kind};
use crate::rules::agent_sidecar::{self, INJECT};
use crate::rules::json::Json;
use crate::rules::{Outcome, RuleId, containers, meta_str};

/// The sidecar Istio injects.
pub const ISTIO_PROXY: &str = "istio-proxy";

/// At most this many variable names are listed in a reason.
const MAX_NAMES: usize = 5;

/// The rules' raw JSON view ([`Json`]) and the one thing more the audit reads: a boolean
/// (`ownerReferences[].controller`).
pub trait View<'a>: Json<'a> {
    fn as_bool(self) -> Option<bool>;

    /// The member at `path`.
    fn at(self, path: &[&str]) -> Option<Self> {
        path.iter().try_fold(self, |v, k| v.get(k))
    }

    /// The `i`th element of an array.
    fn nth(self, i: usize) -> Option<Self> {
        self.items().nth(i)
    }

    /// The string at `path`.
    fn str_at(self, path: &[&str]) -> Option<&'a str> {
        self.at(path).and_then(Self::as_str)
    }
}

impl<'a> View<'a> for &'a Value {
    fn as_bool(self) -> Option<bool> {
        Value::as_bool(self)
    }
}

/// What is wrong, as a stable code (`-o json`'s `finding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingType {
    /// An agent pod runs an `istio-proxy` sidecar (rule 2 came too late).
    AgentSidecarInjected,
    /// A meshed pod's `istio-proxy` lacks the annotation's variables, or has other values.
    SidecarEnvMissing,
    /// A pod the rules would change that was admitted without tracepatch (no running
    /// sidecar is wrong yet; its replacement would be admitted differently).
    MissedAdmission,
    /// A Service whose trace port Istio would take for HTTP (rule 3 would change it).
    TracePortHttp,
    /// A Service whose trace port is TCP to Istio by its name (`tcp-…`) but that rule 3
    /// would still give `appProtocol: tcp`.
    TracePortImplicit,
    /// A CronJob without the `app` label on its pod template (rule 4 would change it).
    CronjobAppMissing,
    /// A Job or pod of such a CronJob: a run traced as a service of its own.
    CronjobRunUnlabelled,
}

/// How a finding is fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixAction {
    /// The object is patched in place (`tracepatch audit --fix` or the command).
    Patch,
    /// The owner is restarted (`kubectl rollout restart`), so that new pods are admitted.
    Restart,
    /// The pod is deleted; its owner replaces it (or, without one, it is created again
    /// from its manifest).
    DeletePod,
    /// Nothing to do on this object: it follows from another finding's fix.
    None,
}

/// The owner a pod's fix acts on (the top of its ownerReferences walk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// The fix of a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fix {
    pub action: FixAction,
    /// The command that fixes it, when there is one.
    pub command: Option<String>,
    /// What else to know (who replaces a deleted pod, what a run follows).
    pub note: Option<String>,
    /// Why `--fix` could not apply it.
    pub error: Option<String>,
}

/// One finding: an object, the rule, what is wrong, the rule's patch and the fix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub rule: &'static str,
    pub finding: FindingType,
    pub reason: String,
    /// What the rule would change (RFC 6902), as the webhook would at admission.
    pub patch: Vec<PatchOperation>,
    pub owner: Option<Owner>,
    pub fix: Fix,
    /// The version the finding was made on, for the `test` precondition of a fix.
    #[serde(skip)]
    pub resource_version: Option<String>,
}

/// The rules' engines, one per pod rule, and the whole configuration's.
pub struct Detector {
    engine: Engine,
    tracer_env: Engine,
    agent_sidecar: Engine,
    pod_ports: Engine,
}

/// What the object scanned is, for the findings' `kind`.
pub const POD: &str = "Pod";
pub const SERVICE: &str = "Service";
pub const CRONJOB: &str = "CronJob";
pub const JOB: &str = "Job";

// === impl FindingType ===

impl FindingType {
    /// Whether the fix is a restart of the pod's owner (found by the owner walk).
    pub fn needs_owner(self) -> bool {
        matches!(
            self,
            FindingType::AgentSidecarInjected
                | FindingType::SidecarEnvMissing
                | FindingType::MissedAdmission
        )
    }
}

// === impl Fix ===

impl Fix {
    /// `kubectl rollout restart` of a Deployment, DaemonSet or StatefulSet.
    pub fn restart(namespace: &str, resource: &str, name: &str) -> Fix {
        Fix {
            action: FixAction::Restart,
            command: Some(format!(
                "kubectl -n {namespace} rollout restart {resource}/{name}"
            )),
            note: None,
            error: None,
        }
    }

    /// Delete the pod, with a note on what replaces it.
    pub fn delete_pod(namespace: &str, name: &str, note: String) -> Fix {
        Fix {
            action: FixAction::DeletePod,
            command: Some(format!("kubectl -n {namespace} delete pod {name}")),
            note: Some(note),
            error: None,
        }
    }

    /// Patch in place: `kubectl patch` with the rule's JSON Patch.
    pub fn patch(namespace: &str, resource: &str, name: &str, patch: &[PatchOperation]) -> Fix {
        let json = serde_json::to_string(patch).unwrap_or_default();
        Fix {
            action: FixAction::Patch,
            command: Some(format!(
                "kubectl -n {namespace} patch {resource} {name} --type=json -p {}",
                shell_quote(&json)
            )),
            note: Some("or: tracepatch audit --fix".into()),
            error: None,
        }
    }

    /// Nothing to do here.
    pub fn none(note: String) -> Fix {
        Fix {
            action: FixAction::None,
            command: None,
            note: Some(note),
            error: None,
        }
    }

    /// What the table shows: the command, else the note.
    pub fn text(&self) -> &str {
        self.command
            .as_deref()
            .or(self.note.as_deref())
            .unwrap_or("-")
    }
}

/// `s` in single quotes for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

// === impl Finding ===

impl Finding {
    fn new<'a, J: View<'a>>(
        kind: &'static str,
        obj: J,
        rule: RuleId,
        finding: FindingType,
        reason: String,
        patch: Vec<PatchOperation>,
        fix: Fix,
    ) -> Finding {
        Finding {
            kind,
            namespace: meta(obj, "namespace").to_owned(),
            name: meta(obj, "name").to_owned(),
            rule: rule.as_str(),
            finding,
            reason,
            patch,
            owner: None,
            fix,
            resource_version: Some(meta(obj, "resourceVersion").to_owned())
                .filter(|v| !v.is_empty()),
        }
    }

    /// The order of a report: namespace, kind, name, rule, finding.
    pub fn sort_key(&self) -> (&str, &str, &str, &str, FindingType) {
        (
            &self.namespace,
            self.kind,
            &self.name,
            self.rule,
            self.finding,
        )
    }
}

/// `metadata.<field>` as a string, `""` when absent.
pub fn meta<'a, J: View<'a>>(obj: J, field: &str) -> &'a str {
    obj.str_at(&["metadata", field]).unwrap_or("")
}

/// `NS/Kind/NAME` for messages.
pub fn describe<'a, J: View<'a>>(kind: &str, obj: J) -> String {
    format!("{}/{kind}/{}", meta(obj, "namespace"), meta(obj, "name"))
}

// === impl Detector ===

impl Detector {
    pub fn new(engine: Engine) -> Self {
        let only = |rule: RuleId| {
            let mut c: Config = engine.config().clone();
            c.tracer_env.enabled &= rule == RuleId::TracerEnv;
            c.agent_sidecar.enabled &= rule == RuleId::AgentSidecar;
            c.trace_port.enabled &= rule == RuleId::TracePort;
            c.cron_job_app.enabled &= rule == RuleId::CronJobApp;
            Engine::new(c)
        };
        Detector {
            tracer_env: only(RuleId::TracerEnv),
            agent_sidecar: only(RuleId::AgentSidecar),
            pod_ports: only(RuleId::TracePort),
            engine,
        }
    }

    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    /// Whether a namespace (or any object) carries the opt-out label set to `"false"`.
    pub fn opted_out<'a, J: View<'a>>(&self, obj: J) -> bool {
        self.engine.opted_out(obj)
    }

    /// The findings on a pod that still runs. The fix of each is a restart of its owner,
    /// filled in by the owner walk.
    pub fn pod<'a, J: View<'a>>(&self, pod: J, warnings: &mut Vec<String>) -> Vec<Finding> {
        let mut found = Vec::new();
        if self.engine.opted_out(pod) || finished(pod) {
            return found;
        }
        let pending = || Fix::none(String::new());
        let who = describe(POD, pod);

        // Rule 2: an agent pod that already runs a sidecar needs a new pod; one without
        // the inject label would get it from the webhook.
        let out = admit(&self.agent_sidecar, Kind::Pod, pod, &who, warnings);
        let cfg = &self.config().agent_sidecar;
        let agent = cfg.enabled && agent_sidecar::is_agent(pod, cfg);
        if agent && runs_istio_proxy(pod) && !says_inject_true(pod) {
            found.push(Finding::new(
                POD,
                pod,
                RuleId::AgentSidecar,
                FindingType::AgentSidecarInjected,
                format!(
                    "agent pod runs {ISTIO_PROXY}: the sidecar intercepts the traffic the agent receives and sends"
                ),
                out.patch,
                pending(),
            ));
        } else if !out.patch.is_empty() {
            found.push(Finding::new(
                POD,
                pod,
                RuleId::AgentSidecar,
                FindingType::MissedAdmission,
                format!("agent pod lacks {INJECT}=\"false\" (admitted without tracepatch)"),
                out.patch,
                pending(),
            ));
        }

        // Rule 1, as if at admission: a change to a sidecar's env is a sidecar running
        // without the variables (or with other values).
        let out = admit(&self.tracer_env, Kind::Pod, pod, &who, warnings);
        if !out.patch.is_empty() {
            let changes = env_changes(pod, &out.patch);
            let (finding, reason) = if changes.is_empty() {
                (
                    FindingType::MissedAdmission,
                    "proxy.istio.io/config lacks the tracer variables in proxyMetadata (admitted without tracepatch)".to_owned(),
                )
            } else {
                (FindingType::SidecarEnvMissing, env_reason(&changes))
            };
            found.push(Finding::new(
                POD,
                pod,
                RuleId::TracerEnv,
                finding,
                reason,
                out.patch,
                pending(),
            ));
        }

        // Rule 3's opt-in part: container ports cannot be renamed on a running pod.
        let out = admit(&self.pod_ports, Kind::Pod, pod, &who, warnings);
        if !out.patch.is_empty() {
            found.push(Finding::new(
                POD,
                pod,
                RuleId::TracePort,
                FindingType::MissedAdmission,
                "trace port of a container not renamed with the tcp- prefix (admitted without tracepatch)".into(),
                out.patch,
                pending(),
            ));
        }
        found
    }

    /// Rule 3 on a Service: its trace port declared TCP, or a finding.
    pub fn service<'a, J: View<'a>>(&self, svc: J, warnings: &mut Vec<String>) -> Option<Finding> {
        let who = describe(SERVICE, svc);
        let out = admit(&self.engine, Kind::Service, svc, &who, warnings);
        if out.patch.is_empty() {
            return None;
        }
        let ports = touched_ports(svc, &out.patch);
        let untyped: Vec<&str> = ports
            .iter()
            .filter(|(_, tcp_named)| !tcp_named)
            .map(|(p, _)| p.as_str())
            .collect();
        let (finding, reason) = if untyped.is_empty() {
            let named: Vec<&str> = ports.iter().map(|(p, _)| p.as_str()).collect();
            (
                FindingType::TracePortImplicit,
                format!(
                    "trace port {} is TCP to Istio by its name only; appProtocol: tcp would say so",
                    named.join(", ")
                ),
            )
        } else {
            (
                FindingType::TracePortHttp,
                format!(
                    "trace port {} not declared TCP: Istio may take the trace uploads for HTTP and trace them",
                    untyped.join(", ")
                ),
            )
        };
        let fix = Fix::patch(
            meta(svc, "namespace"),
            "service",
            meta(svc, "name"),
            &out.patch,
        );
        Some(Finding::new(
            SERVICE,
            svc,
            RuleId::TracePort,
            finding,
            reason,
            out.patch,
            fix,
        ))
    }

    /// Rule 4 on a CronJob: the `app` label on its templates, or a finding.
    pub fn cronjob<'a, J: View<'a>>(
        &self,
        cronjob: J,
        warnings: &mut Vec<String>,
    ) -> Option<Finding> {
        let who = describe(CRONJOB, cronjob);
        let out = admit(&self.engine, Kind::CronJob, cronjob, &who, warnings);
        if out.patch.is_empty() {
            return None;
        }
        let label = self.config().cron_job_app.label.as_str();
        let suffix = format!("/labels/{}", label.replace('~', "~0").replace('/', "~1"));
        let value = out
            .patch
            .iter()
            .find_map(|op| match op {
                PatchOperation::Add(a) if a.path.as_str().ends_with(&suffix) => a.value.as_str(),
                _ => None,
            })
            .unwrap_or("");
        let reason = format!(
            "no {label} label on the pod template: every run traces as a service of its own (would set {label}={value})"
        );
        let fix = Fix::patch(
            meta(cronjob, "namespace"),
            "cronjob",
            meta(cronjob, "name"),
            &out.patch,
        );
        Some(Finding::new(
            CRONJOB,
            cronjob,
            RuleId::CronJobApp,
            FindingType::CronjobAppMissing,
            reason,
            out.patch,
            fix,
        ))
    }

    /// A Job (`kind` [`JOB`]) or pod ([`POD`]) of a CronJob that lacks the label: a run
    /// without it, if the object lacks it too.
    pub fn cronjob_run<'a, J: View<'a>>(
        &self,
        kind: &'static str,
        obj: J,
        cronjob: &str,
    ) -> Option<Finding> {
        let cfg = &self.config().cron_job_app;
        if !cfg.enabled || self.engine.opted_out(obj) {
            return None;
        }
        let labelled = if kind == JOB {
            obj.at(&["spec", "template", "metadata", "labels", cfg.label.as_str()])
                .is_some()
        } else {
            meta_str(obj, "labels", cfg.label.as_str()).is_some()
        };
        if labelled {
            return None;
        }
        let label = cfg.label.as_str();
        let mut f = Finding::new(
            kind,
            obj,
            RuleId::CronJobApp,
            FindingType::CronjobRunUnlabelled,
            format!(
                "run of cronjob/{cronjob} without the {label} label: traced as a service of its own"
            ),
            Vec::new(),
            Fix::none(format!(
                "later runs get the label once cronjob/{cronjob} is fixed"
            )),
        );
        f.owner = Some(Owner {
            kind: CRONJOB.into(),
            name: cronjob.to_owned(),
        });
        Some(f)
    }
}

/// The engine's outcome as the webhook would get it, its warnings said.
fn admit<'a, J: View<'a>>(
    engine: &Engine,
    kind: Kind,
    obj: J,
    who: &str,
    warnings: &mut Vec<String>,
) -> Outcome {
    let out = engine.admit(kind, &Operation::Create, obj);
    warnings.extend(out.warning_lines().map(|w| format!("{who}: {w}")));
    out
}

/// A pod that has stopped, or is going: nothing of it to restart.
fn finished<'a, J: View<'a>>(pod: J) -> bool {
    let phase = pod.str_at(&["status", "phase"]).unwrap_or("");
    matches!(phase, "Succeeded" | "Failed")
        || pod
            .at(&["metadata", "deletionTimestamp"])
            .is_some_and(|t| !t.is_null())
}

/// Whether the pod runs an `istio-proxy`: a container, or a native sidecar (an init
/// container with `restartPolicy: Always`).
pub fn runs_istio_proxy<'a, J: View<'a>>(pod: J) -> bool {
    containers(pod).any(|(list, _, c)| {
        c.str_at(&["name"]) == Some(ISTIO_PROXY)
            && (list == "containers" || c.str_at(&["restartPolicy"]) == Some("Always"))
    })
}

/// The owner said `"true"` to injection on this pod: explicit intent, which rule 2
/// leaves alone, and which a restart would not change.
fn says_inject_true<'a, J: View<'a>>(pod: J) -> bool {
    ["labels", "annotations"]
        .into_iter()
        .any(|map| meta_str(pod, map, INJECT).is_some_and(|v| v.eq_ignore_ascii_case("true")))
}

/// A container's variables that rule 1 would add or change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvChange {
    pub missing: Vec<String>,
    pub different: Vec<String>,
}

/// The variables each container would get from the patch (`/spec/<list>/<i>/env/...`).
pub fn env_changes<'a, J: View<'a>>(
    pod: J,
    patch: &[PatchOperation],
) -> BTreeMap<String, EnvChange> {
    let mut changes: BTreeMap<String, EnvChange> = BTreeMap::new();
    for op in patch {
        let tokens: Vec<String> = op
            .path()
            .tokens()
            .map(|t| t.decoded().into_owned())
            .collect();
        let [spec, list, i, env, rest @ ..] = tokens.as_slice() else {
            continue;
        };
        if spec != "spec"
            || !matches!(list.as_str(), "containers" | "initContainers")
            || env != "env"
        {
            continue;
        }
        let container = pod
            .at(&["spec", list])
            .and_then(|l| l.nth(i.parse::<usize>().unwrap_or(usize::MAX)));
        let cname = container
            .and_then(|c| c.str_at(&["name"]))
            .unwrap_or("?")
            .to_owned();
        match (rest, op) {
            ([dash], PatchOperation::Add(a)) if dash == "-" => {
                if let Some(name) = a.value.get("name").and_then(Value::as_str) {
                    changes
                        .entry(cname)
                        .or_default()
                        .missing
                        .push(name.to_owned());
                }
            }
            ([j, value], _) if value == "value" => {
                let name = container
                    .and_then(|c| c.get("env"))
                    .and_then(|e| e.nth(j.parse::<usize>().unwrap_or(usize::MAX)))
                    .and_then(|e| e.str_at(&["name"]))
                    .unwrap_or("?");
                changes
                    .entry(cname)
                    .or_default()
                    .different
                    .push(name.to_owned());
            }
            _ => {}
        }
    }
    changes
}

fn env_reason(changes: &BTreeMap<String, EnvChange>) -> String {
    let mut parts = Vec::new();
    for (container, change) in changes {
        let mut what = Vec::new();
        if !change.missing.is_empty() {
            what.push(format!("lacks {}", names(&change.missing)));
        }
        if !change.different.is_empty() {
            what.push(format!("has other values for {}", names(&change.different)));
        }
        parts.push(format!("{container} {}", what.join(" and ")));
    }
    parts.join("; ")
}

/// `A, B, C` (at most [`MAX_NAMES`], then `and N more`).
fn names(list: &[String]) -> String {
    let shown = list
        .iter()
        .take(MAX_NAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match list.len().saturating_sub(MAX_NAMES) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// The Service ports a patch touches, as `NAME/NUMBER`, and whether the name already
/// declares TCP to Istio (`tcp`, `tcp-…`).
fn touched_ports<'a, J: View<'a>>(svc: J, patch: &[PatchOperation]) -> Vec<(String, bool)> {
    let mut seen: Vec<usize> = Vec::new();
    for op in patch {
        let mut tokens = op.path().tokens();
        let (Some(a), Some(b), Some(i)) = (tokens.next(), tokens.next(), tokens.next()) else {
            continue;
        };
        if a.decoded() != "spec" || b.decoded() != "ports" {
            continue;
        }
        if let Ok(i) = i.decoded().parse::<usize>()
            && !seen.contains(&i)
        {
            seen.push(i);
        }
    }
    seen.iter()
        .map(|&i| {
            let port = svc.at(&["spec", "ports"]).and_then(|p| p.nth(i));
            let name = port
                .and_then(|p| p.str_at(&["name"]))
                .filter(|n| !n.is_empty());
            let number = port.and_then(|p| p.get("port")).and_then(J::as_u64);
            let label = match (name, number) {
                (Some(n), Some(p)) => format!("{n}/{p}"),
                (Some(n), None) => n.to_owned(),
                (None, Some(p)) => p.to_string(),
                (None, None) => format!("#{i}"),
            };
            let tcp_named = name.is_some_and(|n| n == "tcp" || n.starts_with("tcp-"));
            (label, tcp_named)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detector() -> Detector {
        Detector::new(Engine::default())
    }

    fn agent_pod(with_sidecar: bool, native: bool) -> Value {
        let mut pod = json!({
            "metadata": {"name": "agent-x", "namespace": "dd", "resourceVersion": "7",
                         "labels": {"app": "datadog-agent"}},
            "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7"}]},
            "status": {"phase": "Running"}
        });
        if with_sidecar {
            let proxy = json!({"name": "istio-proxy", "image": "istio/proxyv2:1.24.0"});
            if native {
                let mut p = proxy;
                p["restartPolicy"] = json!("Always");
                pod["spec"]["initContainers"] = json!([p]);
            } else {
                pod["spec"]["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(proxy);
            }
        }
        pod
    }

    fn meshed_pod(env: Value) -> Value {
        json!({
            "metadata": {"name": "web-0", "namespace": "shop",
                         "annotations": {"apm.datadoghq.com/env": "{\"DD_ENV\":\"prod\",\"DD_VERSION\":\"2\"}"}},
            "spec": {"containers": [
                {"name": "app", "image": "web"},
                {"name": "istio-proxy", "image": "istio/proxyv2", "env": env}
            ]}
        })
    }

    #[test]
    fn agent_pod_with_a_sidecar_needs_a_new_pod() {
        for native in [false, true] {
            let mut w = Vec::new();
            let found = detector().pod(&agent_pod(true, native), &mut w);
            assert_eq!(found.len(), 1, "{found:?}");
            let f = &found[0];
            assert_eq!(f.finding, FindingType::AgentSidecarInjected);
            assert_eq!(f.rule, "agent-sidecar");
            assert_eq!(
                (f.kind, f.namespace.as_str(), f.name.as_str()),
                (POD, "dd", "agent-x")
            );
            assert!(!f.patch.is_empty());
            assert!(f.finding.needs_owner());
            assert_eq!(f.resource_version.as_deref(), Some("7"));
        }
    }

    #[test]
    fn agent_pod_without_a_sidecar_missed_admission_only() {
        let mut w = Vec::new();
        let found = detector().pod(&agent_pod(false, false), &mut w);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].finding, FindingType::MissedAdmission);
        // Labelled as the webhook would: nothing.
        let mut pod = agent_pod(false, false);
        let out = Engine::default().admit(Kind::Pod, &Operation::Create, &pod);
        json_patch::patch(&mut pod, &out.patch).unwrap();
        assert!(detector().pod(&pod, &mut w).is_empty());
    }

    #[test]
    fn agent_pod_saying_inject_true_is_left_alone() {
        let mut pod = agent_pod(true, false);
        pod["metadata"]["labels"][INJECT] = json!("true");
        let mut w = Vec::new();
        assert!(detector().pod(&pod, &mut w).is_empty());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("dd/Pod/agent-x: tracepatch agent-sidecar:"),
            "{w:?}"
        );
    }

    #[test]
    fn a_sidecar_labelled_false_is_still_running() {
        let mut pod = agent_pod(true, false);
        pod["metadata"]["labels"][INJECT] = json!("false");
        let found = detector().pod(&pod, &mut Vec::new());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].finding, FindingType::AgentSidecarInjected);
        assert!(found[0].patch.is_empty());
    }

    #[test]
    fn opted_out_and_finished_pods_are_skipped() {
        let mut pod = agent_pod(true, false);
        pod["metadata"]["labels"]["tracepatch.io/enabled"] = json!("false");
        assert!(detector().pod(&pod, &mut Vec::new()).is_empty());
        let mut pod = agent_pod(true, false);
        pod["status"]["phase"] = json!("Succeeded");
        assert!(detector().pod(&pod, &mut Vec::new()).is_empty());
        let mut pod = agent_pod(true, false);
        pod["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert!(detector().pod(&pod, &mut Vec::new()).is_empty());
    }

    #[test]
    fn sidecar_env_missing_and_different() {
        let pod = meshed_pod(json!([{"name": "DD_ENV", "value": "staging"}]));
        let found = detector().pod(&pod, &mut Vec::new());
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.finding, FindingType::SidecarEnvMissing);
        assert_eq!(f.rule, "tracer-env");
        assert_eq!(
            f.reason,
            "istio-proxy lacks DD_VERSION and has other values for DD_ENV"
        );
        // The patch is the engine's, whole: applied, the pod is clean.
        let mut fixed = pod.clone();
        json_patch::patch(&mut fixed, &f.patch).unwrap();
        assert!(detector().pod(&fixed, &mut Vec::new()).is_empty());
    }

    #[test]
    fn annotation_without_sidecar_is_a_missed_admission() {
        let mut pod = meshed_pod(json!([]));
        pod["spec"]["containers"].as_array_mut().unwrap().pop();
        let found = detector().pod(&pod, &mut Vec::new());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].finding, FindingType::MissedAdmission);
        assert_eq!(found[0].rule, "tracer-env");
    }

    #[test]
    fn service_trace_port() {
        let svc = json!({"metadata": {"name": "datadog-agent", "namespace": "dd", "resourceVersion": "3"},
            "spec": {"ports": [{"name": "dogstatsd", "port": 8125, "protocol": "UDP"},
                               {"name": "traceport", "port": 8126}]}});
        let f = detector().service(&svc, &mut Vec::new()).unwrap();
        assert_eq!(f.finding, FindingType::TracePortHttp);
        assert!(
            f.reason
                .starts_with("trace port traceport/8126 not declared TCP"),
            "{}",
            f.reason
        );
        assert_eq!(f.fix.action, FixAction::Patch);
        assert_eq!(
            f.fix.command.as_deref(),
            Some(
                r#"kubectl -n dd patch service datadog-agent --type=json -p '[{"op":"add","path":"/spec/ports/1/appProtocol","value":"tcp"}]'"#
            )
        );
        let mut ok = svc.clone();
        json_patch::patch(&mut ok, &f.patch).unwrap();
        assert!(detector().service(&ok, &mut Vec::new()).is_none());
        let mut named = svc.clone();
        named["spec"]["ports"][1]["name"] = json!("tcp-traceport");
        let f = detector().service(&named, &mut Vec::new()).unwrap();
        assert_eq!(f.finding, FindingType::TracePortImplicit);
        assert!(
            f.reason
                .starts_with("trace port tcp-traceport/8126 is TCP to Istio by its name only"),
            "{}",
            f.reason
        );
    }

    #[test]
    fn cronjob_and_its_runs() {
        let cj = json!({"metadata": {"name": "report", "namespace": "batch"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        let f = detector().cronjob(&cj, &mut Vec::new()).unwrap();
        assert_eq!(f.finding, FindingType::CronjobAppMissing);
        assert!(f.reason.ends_with("(would set app=report)"), "{}", f.reason);
        let job = json!({"metadata": {"name": "report-1", "namespace": "batch"},
            "spec": {"template": {"metadata": {"labels": {"job-name": "report-1"}}}}});
        let r = detector().cronjob_run(JOB, &job, "report").unwrap();
        assert_eq!(r.finding, FindingType::CronjobRunUnlabelled);
        assert_eq!(r.fix.action, FixAction::None);
        assert_eq!(
            r.owner,
            Some(Owner {
                kind: CRONJOB.into(),
                name: "report".into()
            })
        );
        let pod = json!({"metadata": {"name": "report-1-x", "namespace": "batch", "labels": {"app": "report"}}});
        assert!(detector().cronjob_run(POD, &pod, "report").is_none());
        let pod = json!({"metadata": {"name": "report-1-x", "namespace": "batch"}});
        assert!(detector().cronjob_run(POD, &pod, "report").is_some());
    }

    #[test]
    fn names_are_bounded() {
        let list: Vec<String> = (0..7).map(|i| format!("V{i}")).collect();
        assert_eq!(names(&list), "V0, V1, V2, V3, V4 and 2 more");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
