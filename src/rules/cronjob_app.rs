//! Rule 4: an `app` label on CronJob pod templates.
//!
//! The service name of a trace comes from the pod's `app` label. Without it, a CronJob's
//! pods are named after each generated Job, so every run becomes a new service. If the
//! pod template has no `app` label, it gets one (and the job template too, if it has
//! none): the CronJob's own `app` label, else the pod template's
//! `app.kubernetes.io/name`, else the CronJob's name. An existing label is never changed.

use jsonptr::Token;
use serde_json::Value;

use super::{Ctx, meta_str};
use crate::config::CronJobApp;
use crate::names::is_label_value;
use crate::rules::json::Json;
use crate::text::shown;

const JOB_TEMPLATE: [&str; 4] = ["spec", "jobTemplate", "metadata", "labels"];
const POD_TEMPLATE: [&str; 6] = [
    "spec",
    "jobTemplate",
    "spec",
    "template",
    "metadata",
    "labels",
];

/// Applies rule 4 to a CronJob.
pub fn apply<'a, J: Json<'a>>(cronjob: J, cfg: &CronJobApp, cx: &mut Ctx<'_>) {
    if !cfg.enabled {
        return;
    }
    let key = cfg.label.as_str();
    let Some(pod_template) = cronjob
        .get("spec")
        .and_then(|s| s.get("jobTemplate"))
        .and_then(|j| j.get("spec"))
        .and_then(|s| s.get("template"))
        .filter(|t| t.is_object())
    else {
        return;
    };
    if label(Some(pod_template), key).is_some() {
        return;
    }
    // An empty label names no service: the next source is used.
    let non_empty = |v: &&str| !v.is_empty();
    let value = meta_str(cronjob, "labels", key)
        .filter(non_empty)
        .or_else(|| meta_str(pod_template, "labels", "app.kubernetes.io/name").filter(non_empty))
        .or_else(|| {
            cronjob
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(J::as_str)
                .filter(non_empty)
        });
    let Some(value) = value else {
        cx.warn(format!(
            "CronJob has no name yet (generateName) and no label to copy; {key} label not set"
        ));
        return;
    };
    if !is_label_value(value) {
        cx.warn(format!(
            "{:?} is not a valid label value; {key} label not set",
            shown(value)
        ));
        return;
    }
    for (fields, present) in [
        (&POD_TEMPLATE[..], false),
        (
            &JOB_TEMPLATE[..],
            label(job_template(cronjob), key).is_some(),
        ),
    ] {
        if present {
            continue;
        }
        if let Err(e) = cx.ensure_map(cronjob, fields) {
            cx.warn(format!(
                "{} is not a map; {key} label not set there",
                e.field
            ));
            continue;
        }
        cx.add(
            fields
                .iter()
                .map(|f| Token::new(*f))
                .chain([Token::new(key)]),
            Value::String(value.to_owned()),
        );
    }
}

fn job_template<'a, J: Json<'a>>(cronjob: J) -> Option<J> {
    cronjob.get("spec").and_then(|s| s.get("jobTemplate"))
}

fn label<'a, J: Json<'a>>(obj: Option<J>, key: &str) -> Option<J> {
    obj?.get("metadata")?.get("labels")?.get(key)
}
