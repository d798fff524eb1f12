//! Rule 4 as a policy: an `app` label (the configured key) on a CronJob's pod template
//! and job template, where absent.

use super::cel::lit;
use super::{
    Condition, Mutation, PatchKind, Policy, Resource, Variable, only_when, opt_out_condition,
};
use crate::config::CronJobApp;

/// The label on the pod template the value falls back to, after the CronJob's own.
const NAME_LABEL: &str = "app.kubernetes.io/name";

/// The policy, or `None` when the rule is off.
pub fn policy(cfg: &CronJobApp, opt_out: &str) -> Option<Policy> {
    if !cfg.enabled {
        return None;
    }
    let key = lit(cfg.label.as_str());
    let name_label = lit(NAME_LABEL);
    const T: &str = "object.?spec.?jobTemplate.?spec.?template";
    let variables = vec![
        Variable::new(
            "value",
            "The first of these that is set and not empty (an empty label names no\n\
             service). (With generateName the name is not known yet at admission: nothing\n\
             is set.)",
            &format!(
                "object.?metadata.?labels[?{key}].optFlatMap(v, v != \"\" ? optional.of(v) : optional.none())\n  \
                 .or({T}.?metadata.?labels[?{name_label}].optFlatMap(v, v != \"\" ? optional.of(v) : optional.none()))\n  \
                 .or(object.?metadata.?name)\n  \
                 .orValue(\"\")"
            ),
        ),
        Variable::new(
            "valid",
            "A non-empty valid label value (63 characters at most, alphanumeric at both\n\
             ends, '-', '_', '.' inside).",
            "variables.value != \"\" && variables.value.size() <= 63 &&\n\
             variables.value.matches(\"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$\")",
        ),
    ];
    let valid_value = only_when(
        "valid-value",
        "a CronJob that gets a label (valid)",
        "variables.valid",
        &variables,
    );
    Some(Policy {
        rule: "cronjob-app",
        about: format!(
            "Rule 4 (cronjob-app): every run of a CronJob traces as one service. A pod template\n\
             without the label {label} gets it, and the job template too where it has none;\n\
             the value is the CronJob's own {label} label, else the pod template's\n\
             {NAME_LABEL}, else the CronJob's name. An existing label is never changed.",
            label = cfg.label.as_str()
        ),
        resource: Resource::CRONJOBS,
        conditions: vec![
            opt_out_condition(opt_out),
            Condition::new(
                "pod-template-without-label",
                "A pod template that has the label already is left alone.",
                &format!("{T}.hasValue() &&\n!({key} in {T}.?metadata.?labels.orValue({{}}))"),
            ),
            valid_value,
        ],
        variables,
        mutations: vec![Mutation {
            kind: PatchKind::ApplyConfiguration,
            comment:
                "ApplyConfiguration: one map entry in each of two nested metadata.labels that\n\
                      may be missing at any level; the merge creates missing levels (a JSON Patch\n\
                      needs one add per missing parent) and touches no other key. The job\n\
                      template's entry is only given where that label is absent."
                    .into(),
            expression: format!(
                "Object{{\n  \
                 spec: Object.spec{{\n    \
                 jobTemplate: Object.spec.jobTemplate{{\n      \
                 metadata: Object.spec.jobTemplate.metadata{{\n        \
                 labels: {{\n          \
                 ?{key}: {key} in object.?spec.?jobTemplate.?metadata.?labels.orValue({{}})\n            \
                 ? optional.none() : optional.of(variables.value)\n        \
                 }}\n      \
                 }},\n      \
                 spec: Object.spec.jobTemplate.spec{{\n        \
                 template: Object.spec.jobTemplate.spec.template{{\n          \
                 metadata: Object.spec.jobTemplate.spec.template.metadata{{\n            \
                 labels: {{{key}: variables.value}}\n          \
                 }}\n        \
                 }}\n      \
                 }}\n    \
                 }}\n  \
                 }}\n\
                 }}"
            ),
        }],
        notes: Vec::new(),
    })
}
