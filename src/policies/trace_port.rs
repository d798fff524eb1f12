//! Rule 3 as policies: Service trace ports declared TCP (`appProtocol: tcp`, or the
//! `tcp-` name prefix in mode `name`), and, with `renamePodPorts`, container ports
//! renamed and Service `targetPort`s following them.

use super::cel::{list, lit};
use super::{
    Condition, Mutation, PatchKind, Policy, Resource, Variable, only_when, opt_out_condition,
};
use crate::config::{PortMatcher, PortMode, TracePort};
use crate::names::is_iana_svc_name;

/// Protocol prefixes Istio reads from a port name (`<protocol>[-<suffix>]`), as the
/// webhook's rule knows them.
pub const ISTIO_PROTOCOLS: [&str; 11] = [
    "http", "http2", "https", "grpc", "grpc-web", "mongo", "mysql", "redis", "tcp", "tls", "udp",
];

/// A port is TCP when its protocol is absent or `TCP` (the apiserver defaults it).
const IS_TCP: &str = "p.?protocol.orValue(\"TCP\") == \"TCP\"";

/// The Service policy, or `None` when the rule is off.
pub fn service_policy(cfg: &TracePort, opt_out: &str) -> Option<Policy> {
    if !cfg.enabled || cfg.ports.is_empty() {
        return None;
    }
    let matches = port_matches(&cfg.ports, "port");
    let mut variables = vec![Variable::new(
        "ports",
        "The Service's ports (none: an empty list).",
        "object.?spec.?ports.orValue([])",
    )];
    let mut mutations = Vec::new();
    // For each mutation, whether it patches anything.
    let mut changes: Vec<String> = Vec::new();
    let what = match cfg.mode {
        PortMode::AppProtocol => {
            let wanted = format!(
                "{IS_TCP} &&\n  \
                 ({matches}) &&\n  \
                 !has(p.appProtocol) &&\n  \
                 !{}",
                declares_protocol("p.?name.orValue(\"\")", false)
            );
            changes.push(format!("variables.ports.exists(p,\n  {wanted})"));
            mutations.push(Mutation {
                kind: PatchKind::JsonPatch,
                comment: JSON_PATCH_WHY.into(),
                expression: format!(
                    "variables.ports.transformList(i, p,\n  \
                     {wanted},\n  \
                     JSONPatch{{op: \"add\", path: \"/spec/ports/\" + string(i) + \"/appProtocol\", value: \"tcp\"}})"
                ),
            });
            "A matching TCP port gets appProtocol: tcp when it has no appProtocol and its name\n\
             declares no other protocol to Istio (http-..., grpc-..., ...); an existing\n\
             appProtocol is left alone."
        }
        PortMode::Name => {
            variables.push(Variable::new(
                "portNames",
                "Every port name the Service has.",
                "variables.ports.filter(p, has(p.name)).map(p, p.name)",
            ));
            variables.push(Variable::new(
                "newNames",
                "The name each port would get: tcp-NAME, or tcp for an unnamed port.",
                "variables.ports.map(p, p.?name.orValue(\"\") == \"\" ? \"tcp\" : \"tcp-\" + p.name)",
            ));
            variables.push(Variable::new(
                "renames",
                "Ports to rename, before the uniqueness check: matching TCP ports with no\n\
                 appProtocol other than tcp, whose name declares no protocol yet, and whose new\n\
                 name is a valid port name (DNS label).",
                &format!(
                    "variables.ports.transformList(i, p,\n  \
                     {IS_TCP} &&\n  \
                     ({matches}) &&\n  \
                     (!has(p.appProtocol) || p.appProtocol.lowerAscii() == \"tcp\") &&\n  \
                     !{} &&\n  \
                     variables.newNames[i].size() <= 63 &&\n  \
                     variables.newNames[i].matches(\"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$\"),\n  \
                     {{\"path\": \"/spec/ports/\" + string(i) + \"/name\", \"name\": variables.newNames[i]}})",
                    declares_protocol("p.?name.orValue(\"\")", true)
                ),
            ));
            // A rename is made exactly when some candidate's new name is not taken: the
            // first candidate with that name gets it.
            changes.push("variables.renames.exists(c, !(c.name in variables.portNames))".into());
            mutations.push(Mutation {
                kind: PatchKind::JsonPatch,
                comment: format!(
                    "{JSON_PATCH_WHY}\n\
                     Names stay unique as the webhook keeps them: a new name is not given when\n\
                     another port already has it, nor to a second port that would get the same\n\
                     new name as an earlier one (the first, in list order, gets it)."
                ),
                expression: "variables.renames.transformList(n, c,\n  \
                     !(c.name in variables.portNames) &&\n  \
                     variables.renames.map(d, d.name).indexOf(c.name) == n,\n  \
                     JSONPatch{op: \"add\", path: c.path, value: c.name})"
                    .into(),
            });
            "A matching TCP port is renamed NAME -> tcp-NAME (an unnamed one: tcp) unless its\n\
             name already declares a protocol, it has an appProtocol other than tcp, or the\n\
             new name is taken."
        }
    };
    if cfg.rename_pod_ports {
        let targets = renamed_targets(&cfg.ports);
        if !targets.is_empty() {
            let follows = format!(
                "{IS_TCP} &&\n  \
                 has(p.targetPort) && type(p.targetPort) == string &&\n  \
                 p.targetPort in {}",
                list(&targets)
            );
            changes.push(format!("variables.ports.exists(p,\n  {follows})"));
            mutations.insert(
                0,
                Mutation {
                    kind: PatchKind::JsonPatch,
                    comment: "renamePodPorts: a TCP port's targetPort naming a container port the pod\n\
                              policy renames follows the rename (in either mode). JSONPatch: one\n\
                              field of chosen list entries, by index."
                        .into(),
                    expression: format!(
                        "variables.ports.transformList(i, p,\n  \
                         {follows},\n  \
                         JSONPatch{{op: \"add\", path: \"/spec/ports/\" + string(i) + \"/targetPort\", value: \"tcp-\" + p.targetPort}})"
                    ),
                },
            );
        }
    }
    Some(Policy {
        rule: "trace-port",
        about: format!(
            "Rule 3 (trace-port) on Services: the agent's trace port declared TCP to Istio, so\n\
             that automatic protocol selection does not take it for HTTP.\n{what}"
        ),
        resource: Resource::SERVICES,
        conditions: vec![
            opt_out_condition(opt_out),
            changes_something(&changes, &variables),
        ],
        variables,
        mutations,
        notes: Vec::new(),
    })
}

const JSON_PATCH_WHY: &str = "JSONPatch: the change is one field of chosen entries of spec.ports, addressed by\n\
index, decided entry by entry. An apply configuration would merge list entries by\n\
their key (port, protocol), which cannot tell apart two entries with the same key.";

/// The opt-in pod policy of rule 3 (`renamePodPorts`), or `None`.
pub fn pod_policy(cfg: &TracePort, opt_out: &str) -> Option<Policy> {
    if !cfg.enabled || !cfg.rename_pod_ports || cfg.ports.is_empty() {
        return None;
    }
    let matches = port_matches(&cfg.ports, "containerPort");
    let candidates = |list: &str| {
        format!(
            "object.?spec.?{list}.orValue([]).transformList(ci, c,\n  \
             c.?ports.orValue([]).transformList(k, p,\n    \
             {IS_TCP} &&\n    \
             p.?name.orValue(\"\") != \"\" &&\n    \
             ({matches}) &&\n    \
             !{} &&\n    \
             (\"tcp-\" + p.name).size() <= 15 &&\n    \
             (\"tcp-\" + p.name).matches(\"^[a-z0-9]+(-[a-z0-9]+)*$\") &&\n    \
             (\"tcp-\" + p.name).matches(\"[a-z]\"),\n    \
             {{\"path\": \"/spec/{list}/\" + string(ci) + \"/ports/\" + string(k) + \"/name\", \"name\": \"tcp-\" + p.name}})\n\
             ).flatten()",
            declares_protocol("p.name", true)
        )
    };
    let variables = vec![
        Variable::new(
            "podPortNames",
            "Every port name of the pod's containers and init containers.",
            "(object.?spec.?containers.orValue([]) + object.?spec.?initContainers.orValue([]))\n  \
             .map(c, c.?ports.orValue([]).filter(p, has(p.name)).map(p, p.name)).flatten()",
        ),
        Variable::new(
            "renames",
            "Container ports to rename, before the uniqueness check, containers first, then\n\
             init containers, each in order.",
            &format!(
                "{} +\n{}",
                candidates("containers"),
                candidates("initContainers")
            ),
        ),
    ];
    // A rename is made exactly when some candidate's new name is not taken (the first
    // candidate with that name gets it).
    let renames_one = "variables.renames.exists(c, !(c.name in variables.podPortNames))".to_owned();
    Some(Policy {
        rule: "trace-port-pods",
        about:
            "Rule 3 (trace-port) on Pods, because renamePodPorts is on: a matching TCP container\n\
                port named NAME (no protocol prefix) becomes tcp-NAME when that is a valid\n\
                container port name (15 characters at most) not taken in the pod."
                .into(),
        resource: Resource::PODS,
        conditions: vec![
            opt_out_condition(opt_out),
            changes_something(&[renames_one], &variables),
        ],
        variables,
        mutations: vec![Mutation {
            kind: PatchKind::JsonPatch,
            comment:
                "JSONPatch: one field of chosen entries of nested lists, by index. Names stay\n\
                      unique as the webhook keeps them (the first port in that order gets a\n\
                      contested new name)."
                    .into(),
            expression: "variables.renames.transformList(n, c,\n  \
                 !(c.name in variables.podPortNames) &&\n  \
                 variables.renames.map(d, d.name).indexOf(c.name) == n,\n  \
                 JSONPatch{op: \"add\", path: c.path, value: c.name})"
                .into(),
        }],
        notes: Vec::new(),
    })
}

/// Whether port `p` matches any matcher, by name and/or by the number in `field`.
fn port_matches(matchers: &[PortMatcher], field: &str) -> String {
    let alternatives: Vec<String> = matchers
        .iter()
        .map(|m| {
            let mut parts = Vec::new();
            if let Some(name) = &m.name {
                parts.push(format!("p.?name.orValue(\"\") == {}", lit(name)));
            }
            if let Some(port) = m.port {
                parts.push(format!("p.?{field}.orValue(0) == {}", port.get()));
            }
            parts.join(" && ")
        })
        .collect();
    alternatives.join(" || ")
}

/// Whether the port name `name` (a CEL string) declares a protocol to Istio
/// (`<protocol>` or `<protocol>-...`, ASCII case-insensitively); with `tcp` false, a
/// protocol other than tcp.
fn declares_protocol(name: &str, tcp: bool) -> String {
    let protocols = ISTIO_PROTOCOLS.iter().filter(|p| tcp || **p != "tcp");
    format!(
        "{}.exists(q, {name}.lowerAscii() == q || {name}.lowerAscii().startsWith(q + \"-\"))",
        list(protocols)
    )
}

/// The `targetPort` names a Service port follows when pods are renamed: the matchers'
/// names that the pod policy renames (no protocol prefix, `tcp-NAME` a valid container
/// port name).
pub fn renamed_targets(matchers: &[PortMatcher]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for n in matchers.iter().filter_map(|m| m.name.as_ref()) {
        if protocol_prefix(n).is_none()
            && is_iana_svc_name(&format!("tcp-{n}"))
            && !names.contains(n)
        {
            names.push(n.clone());
        }
    }
    names
}

/// The protocol an Istio port name declares, if any: `http-web` → `http`.
pub fn protocol_prefix(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    ISTIO_PROTOCOLS
        .iter()
        .filter(|p| {
            lower == **p
                || lower
                    .strip_prefix(**p)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
        .max_by_key(|p| p.len())
        .copied()
}

/// The matchCondition of a policy whose mutations each patch only where their test
/// (`changes`, one per mutation) holds.
fn changes_something(changes: &[String], variables: &[Variable]) -> Condition {
    let any = if changes.len() == 1 {
        changes[0].clone()
    } else {
        changes
            .iter()
            .map(|c| format!("({c})"))
            .collect::<Vec<_>>()
            .join(" ||\n")
    };
    only_when(
        "changes-something",
        "an object a mutation below changes",
        &any,
        variables,
    )
}
