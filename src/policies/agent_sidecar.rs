//! Rule 2 as a policy: agent pods get `sidecar.istio.io/inject: "false"` (label and
//! annotation) and, with `ambientOptOut`, `istio.io/dataplane-mode: none`, unless the
//! owner already set the inject label or annotation.

use super::cel::{GlobRegex, glob_regex, lit, selector};
use super::{
    Condition, Mutation, PatchKind, Policy, Resource, Variable, only_when, opt_out_condition,
};
use crate::config::{AgentSidecar, ImagePattern};
use crate::rules::agent_sidecar::{DATAPLANE_MODE, INJECT};

/// The policy, or `None` when the rule is off or can recognise no pod here.
pub fn policy(cfg: &AgentSidecar, opt_out: &str) -> Option<Policy> {
    if !cfg.enabled {
        return None;
    }
    let mut notes = Vec::new();
    let mut variables = vec![Variable::new(
        "labels",
        "The pod's labels (none: an empty map).",
        "object.?metadata.?labels.orValue({})",
    )];
    let by_labels: Vec<String> = cfg
        .selectors
        .iter()
        .filter_map(|s| selector(s, "variables.labels", &mut notes))
        .collect();
    let by_image = image_test(&cfg.images, &mut notes);
    if by_labels.is_empty() && by_image.is_none() {
        return None;
    }
    let mut is_agent = Vec::new();
    if !by_labels.is_empty() {
        variables.push(Variable::new(
            "agentByLabels",
            "Any agentSidecar.selectors entry matches the labels (Kubernetes label selector\n\
             semantics; Glob values as anchored regular expressions).",
            &by_labels.join(" ||\n"),
        ));
        is_agent.push("variables.agentByLabels");
    }
    if let Some(test) = by_image {
        variables.extend(image_variables());
        variables.push(Variable::new(
            "agentByImage",
            "Any container or init container runs an image of agentSidecar.images.",
            &format!("variables.repositories.exists(r,\n  {test})"),
        ));
        is_agent.push("variables.agentByImage");
    }
    let inject = lit(INJECT);
    let dataplane = lit(DATAPLANE_MODE);
    let ambient = if cfg.ambient_opt_out {
        format!(
            ",\n      ?{dataplane}: {dataplane} in variables.labels ? optional.none() : optional.of(\"none\")"
        )
    } else {
        String::new()
    };
    let expression = format!(
        "Object{{\n  metadata: Object.metadata{{\n    labels: {{\n      {inject}: \"false\"{ambient}\n    }},\n    annotations: {{\n      {inject}: \"false\"\n    }}\n  }}\n}}"
    );
    let agent_pod = only_when(
        "agent-pod",
        "the agent's pods (agentByLabels || agentByImage)",
        &is_agent.join(" || "),
        &variables,
    );
    let ambient_doc = if cfg.ambient_opt_out {
        format!(
            ",\nand label {DATAPLANE_MODE}: none unless it has that label (another value\n\
             is left as set)"
        )
    } else {
        String::new()
    };
    Some(Policy {
        rule: "agent-sidecar",
        about: format!(
            "Rule 2 (agent-sidecar): no Istio sidecar for the tracing agent's own pods.\n\
             A pod the agentSidecar selectors or images recognise gets label and annotation\n\
             {INJECT}: \"false\"{ambient_doc}.\n\
             Because the apiserver applies policies before it calls any mutating webhook,\n\
             Istio's injector sees the label whatever the webhook configurations are named\n\
             and whether or not tracepatch's webhook is up."
        ),
        resource: Resource::PODS,
        conditions: vec![
            opt_out_condition(opt_out),
            Condition::new(
                "inject-not-set-by-owner",
                "The owner's explicit choice wins: a pod that already has the inject label or\n\
                 annotation, whatever its value, is left alone.",
                &format!(
                    "!({inject} in object.?metadata.?labels.orValue({{}})) &&\n\
                     !({inject} in object.?metadata.?annotations.orValue({{}}))"
                ),
            ),
            agent_pod,
        ],
        variables,
        mutations: vec![Mutation {
            kind: PatchKind::ApplyConfiguration,
            comment:
                "ApplyConfiguration: the change is two entries in metadata.labels and one in\n\
                      metadata.annotations. Server-side apply merges them into the maps, creating\n\
                      a missing map and never touching other keys, and the keys (with '/') need\n\
                      no JSON Pointer escaping."
                    .into(),
            expression,
        }],
        notes,
    })
}

/// The CEL test on one normalized repository `r`, or `None` when no pattern can match.
fn image_test(images: &[ImagePattern], notes: &mut Vec<String>) -> Option<String> {
    let mut literals = Vec::new();
    let mut tests = Vec::new();
    for p in images {
        match p {
            ImagePattern::Literal(l) => literals.push(l.as_str()),
            ImagePattern::Glob { pattern, .. } => match glob_regex(pattern.as_str()) {
                GlobRegex::Regex(re) => tests.push(format!("r.matches({})", lit(&re))),
                GlobRegex::Never => {}
                GlobRegex::Unsupported(why) => notes.push(format!(
                    "image pattern {:?} has {why}: pods that only it matches are left to the webhook",
                    pattern.as_str()
                )),
            },
        }
    }
    if !literals.is_empty() {
        let items: Vec<String> = literals.iter().map(|l| lit(l)).collect();
        tests.insert(0, format!("r in [\n    {}\n  ]", items.join(",\n    ")));
    }
    if tests.is_empty() {
        None
    } else {
        Some(tests.join(" ||\n  "))
    }
}

/// The images of the pod, normalized as the webhook normalizes them: no digest, no tag
/// (a `:` after the last `/`), no `docker.io/` (`index.docker.io/`,
/// `registry-1.docker.io/`) and then no `library/` prefix. (The webhook drops `library/`
/// only from Docker Hub repositories; a repository that starts with `library/` is one,
/// so dropping that prefix wherever it starts the name is the same.)
fn image_variables() -> Vec<Variable> {
    vec![
        Variable::new(
            "images",
            "Images of the containers and init containers (a container without one has none).",
            "object.?spec.?containers.orValue([]).filter(c, has(c.image)).map(c, c.image) +\n\
             object.?spec.?initContainers.orValue([]).filter(c, has(c.image)).map(c, c.image)",
        ),
        Variable::new(
            "untagged",
            "Without the digest (from the first '@') and the tag (from a ':' after the last '/').",
            "variables.images.map(i, i.split(\"@\")[0]).map(i,\n  \
             i.substring(i.lastIndexOf(\"/\") + 1).indexOf(\":\") < 0 ? i :\n  \
             i.substring(0, i.lastIndexOf(\"/\") + 1 + i.substring(i.lastIndexOf(\"/\") + 1).indexOf(\":\")))",
        ),
        Variable::new(
            "repositories",
            "Without Docker Hub's implied prefixes: the repositories agentSidecar.images name.",
            "variables.untagged.map(i,\n  \
             i.startsWith(\"docker.io/\") ? i.substring(10) :\n  \
             i.startsWith(\"index.docker.io/\") ? i.substring(16) :\n  \
             i.startsWith(\"registry-1.docker.io/\") ? i.substring(21) : i\n\
             ).map(i, i.startsWith(\"library/\") ? i.substring(8) : i)",
        ),
    ]
}
