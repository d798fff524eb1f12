//! Which rules apply to which object: kind dispatch, the opt-out label, pod templates.
//!
//! The admission path ([`Engine::admit`]) mirrors the shipped webhook configuration:
//! Pods on CREATE, Services and CronJobs on CREATE and UPDATE. That table is written
//! once, `Kind::admitted_by`; the decoder reads it too (whether the object is needed).
//! The offline path ([`Engine::preview`]) also applies the pod rules to the pod
//! templates of workloads, which is what a user wants to see before installing: the
//! pods those templates make are what the webhook will mutate.

use jsonptr::{Pointer, PointerBuf};
use kube::core::admission::Operation;
use serde_json::Value;

use crate::config::Config;
use crate::rules::json::Json;
use crate::rules::{Outcome, RuleId, agent_sidecar, cronjob_app, meta_str, trace_port, tracer_env};

/// The kinds tracepatch knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Service,
    CronJob,
    Deployment,
    DaemonSet,
    StatefulSet,
    ReplicaSet,
    Job,
    Other,
}

/// Which rules the webhook runs on an object (see [`Kind::admitted_by`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// Rules 1, 2 and the opt-in part of 3.
    PodRules,
    /// Rule 3 on a Service.
    TracePort,
    /// Rule 4.
    CronJobApp,
}

/// The rules with their configuration.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    config: Config,
}

// === impl Kind ===

impl Kind {
    /// From an API group and kind (`""`/`Pod`, `batch`/`CronJob`, ...).
    pub fn from_group_kind(group: &str, kind: &str) -> Kind {
        match (group, kind) {
            ("", "Pod") => Kind::Pod,
            ("", "Service") => Kind::Service,
            ("batch", "CronJob") => Kind::CronJob,
            ("batch", "Job") => Kind::Job,
            ("apps", "Deployment") => Kind::Deployment,
            ("apps", "DaemonSet") => Kind::DaemonSet,
            ("apps", "StatefulSet") => Kind::StatefulSet,
            ("apps", "ReplicaSet") => Kind::ReplicaSet,
            _ => Kind::Other,
        }
    }

    /// From a manifest's `apiVersion` and `kind`. Old group versions (`extensions/v1beta1`
    /// in the vendor guides) are accepted for workloads: their pod templates are the same.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Kind {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let group = match (group, kind) {
            ("extensions", "Deployment" | "DaemonSet" | "ReplicaSet") => "apps",
            _ => group,
        };
        Kind::from_group_kind(group, kind)
    }

    /// The rules the webhook runs on an object of this kind for `operation`; `None`:
    /// the object is admitted as it is. The one table of kinds and operations.
    pub(crate) fn admitted_by(self, operation: &Operation) -> Option<Admitted> {
        let create = matches!(operation, Operation::Create);
        let update = matches!(operation, Operation::Update);
        match self {
            // A pod's containers and ports cannot change after creation.
            Kind::Pod if create => Some(Admitted::PodRules),
            Kind::Service if create || update => Some(Admitted::TracePort),
            Kind::CronJob if create || update => Some(Admitted::CronJobApp),
            _ => None,
        }
    }

    /// Where a workload keeps its pod template.
    fn pod_template(self) -> Option<&'static [&'static str]> {
        match self {
            Kind::Deployment
            | Kind::DaemonSet
            | Kind::StatefulSet
            | Kind::ReplicaSet
            | Kind::Job => Some(&["spec", "template"]),
            Kind::CronJob => Some(&["spec", "jobTemplate", "spec", "template"]),
            _ => None,
        }
    }
}

// === impl Engine ===

impl Engine {
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The rules for an object arriving at the webhook.
    pub fn admit<'a, J: Json<'a>>(&self, kind: Kind, operation: &Operation, obj: J) -> Outcome {
        let mut out = Outcome::default();
        if self.opted_out(obj) {
            return out;
        }
        match kind.admitted_by(operation) {
            Some(Admitted::PodRules) => self.pod_rules(obj, Pointer::root(), &mut out),
            Some(Admitted::TracePort) => {
                let mut cx = out.ctx(RuleId::TracePort, Pointer::root());
                trace_port::apply_service(obj, &self.config.trace_port, &mut cx);
            }
            Some(Admitted::CronJobApp) => {
                let mut cx = out.ctx(RuleId::CronJobApp, Pointer::root());
                cronjob_app::apply(obj, &self.config.cron_job_app, &mut cx);
            }
            None => {}
        }
        out
    }

    /// The rules applied offline to a manifest: the admission rules for Pods, Services
    /// and CronJobs, plus the pod rules on the pod template of workloads.
    pub fn preview(&self, kind: Kind, obj: &Value) -> Outcome {
        let mut out = self.admit(kind, &Operation::Create, obj);
        let Some(template) = kind.pod_template() else {
            return out;
        };
        if self.opted_out(obj) {
            return out;
        }
        // Pods are made from the template as the object-level rules left it (a CronJob
        // with a new `app` label), so the pod rules read the patched object.
        let patched;
        let doc = if out.patch.is_empty() {
            obj
        } else {
            let mut copy = obj.clone();
            if json_patch::patch(&mut copy, &out.patch).is_err() {
                // Cannot happen for our own patches (property-tested); never half-apply.
                return out;
            }
            patched = copy;
            &patched
        };
        let Some(pod) = template.iter().try_fold(doc, |v: &Value, f| v.get(*f)) else {
            return out;
        };
        if !pod.is_object() {
            return out;
        }
        let base = PointerBuf::from_tokens(template.iter().copied());
        let mut pod_out = Outcome::default();
        self.pod_rules(pod, &base, &mut pod_out);
        out.extend(pod_out);
        out
    }

    /// Rules 1, 2 and the opt-in part of 3, on a pod or pod template at `base`.
    fn pod_rules<'a, J: Json<'a>>(&self, pod: J, base: &Pointer, out: &mut Outcome) {
        if self.opted_out(pod) {
            return;
        }
        let c = &self.config;
        tracer_env::apply(pod, &c.tracer_env, &mut out.ctx(RuleId::TracerEnv, base));
        agent_sidecar::apply(
            pod,
            &c.agent_sidecar,
            &mut out.ctx(RuleId::AgentSidecar, base),
        );
        trace_port::apply_pod(pod, &c.trace_port, &mut out.ctx(RuleId::TracePort, base));
    }

    /// Whether the object carries the opt-out label set to `"false"`.
    pub fn opted_out<'a, J: Json<'a>>(&self, obj: J) -> bool {
        meta_str(obj, "labels", self.config.opt_out.label.as_str()) == Some("false")
    }
}
