//! Rule 3: the agent's trace port declared to Istio as TCP.
//!
//! Istio's automatic protocol selection can take the trace port (8126, `traceport`) for
//! HTTP and then trace the traces. Istio decides a protocol from the **Service** port:
//! its `appProtocol`, else its name prefix (`tcp-…`). So Services are where this rule
//! acts: `appProtocol: tcp` (default mode) or the `tcp-` name prefix (mode `name`).
//!
//! Pod container ports carry no `appProtocol` and Istio does not read their names, so
//! pods are left alone unless `renamePodPorts` is on; then container ports are renamed
//! too, and a Service `targetPort` naming such a port follows the rename (in either
//! mode: a Service that kept targeting the old name would lose the renamed pods).

use std::collections::HashSet;

use jsonptr::Token;
use serde_json::Value;

use super::{Ctx, containers, idx};
use crate::config::{PortMode, TracePort};
use crate::names::{is_dns_label, is_iana_svc_name};
use crate::rules::json::Json;
use crate::text::shown;

mod port;

pub use port::{PortMatcher, PortNumber};

/// Protocol prefixes Istio reads from a port name (`<protocol>[-<suffix>]`).
const ISTIO_PROTOCOLS: [&str; 11] = [
    "http", "http2", "https", "grpc", "grpc-web", "mongo", "mysql", "redis", "tcp", "tls", "udp",
];

/// Applies rule 3 to a Service.
pub fn apply_service<'a, J: Json<'a>>(svc: J, cfg: &TracePort, cx: &mut Ctx<'_>) {
    if !cfg.enabled {
        return;
    }
    let Some(ports) = svc.get("spec").and_then(|s| s.get("ports")) else {
        return;
    };
    // Every port name, with the names this pass gives (so that two unnamed matching
    // ports do not both become `tcp`); made when first needed.
    let mut taken: Option<HashSet<String>> = None;
    for (i, port) in ports.items().enumerate() {
        if !port.is_object() || !is_tcp(port) {
            continue;
        }
        let name = port
            .get("name")
            .and_then(J::as_str)
            .filter(|n| !n.is_empty());
        let number = port.get("port").and_then(J::as_u64);
        let label = || describe(name, number);
        if cfg.rename_pod_ports {
            follow_target_port(port, i, cfg, cx);
        }
        if !matches(cfg, name, number) {
            continue;
        }
        let app_protocol = port.get("appProtocol").and_then(J::as_str);
        match cfg.mode {
            PortMode::AppProtocol => match (app_protocol, name.and_then(protocol_prefix)) {
                (Some(p), _) if p.eq_ignore_ascii_case("tcp") => {}
                (Some(p), _) => cx.warn(format!(
                    "service port {}: appProtocol is {:?}; left alone, Istio will treat the trace port as {}",
                    label(),
                    shown(p),
                    shown(p)
                )),
                (None, Some(p)) if p != "tcp" => cx.warn(format!(
                    "service port {}: its name declares protocol {p}; left alone",
                    label()
                )),
                (None, _) => cx.add(
                    [Token::new("spec"), Token::new("ports"), idx(i), Token::new("appProtocol")],
                    Value::String("tcp".into()),
                ),
            },
            PortMode::Name => {
                if let Some(p) = app_protocol.filter(|p| !p.eq_ignore_ascii_case("tcp")) {
                    cx.warn(format!(
                        "service port {}: appProtocol {:?} overrides the port name in Istio; left alone",
                        label(),
                        shown(p)
                    ));
                    continue;
                }
                let new_name = match name {
                    None => "tcp".to_owned(),
                    Some(n) => match protocol_prefix(n) {
                        Some("tcp") => continue,
                        Some(p) => {
                            cx.warn(format!(
                                "service port {}: its name declares protocol {p}; left alone",
                    label()
                            ));
                            continue;
                        }
                        None => format!("tcp-{n}"),
                    },
                };
                if !is_dns_label(&new_name) {
                    cx.warn(format!(
                        "service port {}: {:?} would not be a valid port name; left alone",
                        label(),
                        shown(&new_name)
                    ));
                    continue;
                }
                let taken = taken.get_or_insert_with(|| {
                    ports
                        .items()
                        .filter_map(|p| p.get("name").and_then(J::as_str))
                        .map(str::to_owned)
                        .collect()
                });
                if taken.contains(&new_name) {
                    cx.warn(format!(
                        "service port {}: another port is already named {new_name:?}; left alone",
                    label()
                    ));
                    continue;
                }
                cx.add(
                    [Token::new("spec"), Token::new("ports"), idx(i), Token::new("name")],
                    Value::String(new_name.clone()),
                );
                taken.insert(new_name);
            }
        }
    }
}

/// Applies rule 3's opt-in part to a pod (or pod template): container ports renamed.
pub fn apply_pod<'a, J: Json<'a>>(pod: J, cfg: &TracePort, cx: &mut Ctx<'_>) {
    if !cfg.enabled || !cfg.rename_pod_ports {
        return;
    }
    // Every port name in the pod, with the names this pass gives.
    let mut taken: HashSet<String> = containers(pod)
        .flat_map(|(_, _, c)| port_list(c))
        .filter_map(|p| p.get("name").and_then(J::as_str))
        .map(str::to_owned)
        .collect();
    for (list, i, container) in containers(pod) {
        let cname = container.get("name").and_then(J::as_str).unwrap_or("?");
        for (k, port) in port_list(container).enumerate() {
            if !port.is_object() || !is_tcp(port) {
                continue;
            }
            let Some(name) = port
                .get("name")
                .and_then(J::as_str)
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            let number = port.get("containerPort").and_then(J::as_u64);
            if !matches(cfg, Some(name), number) || protocol_prefix(name).is_some() {
                continue;
            }
            let new_name = format!("tcp-{name}");
            if !is_iana_svc_name(&new_name) {
                cx.warn(format!(
                    "container {} port {}: {:?} would exceed the 15-character port name limit; left alone",
                    shown(cname),
                    shown(name),
                    shown(&new_name)
                ));
                continue;
            }
            if taken.contains(&new_name) {
                cx.warn(format!(
                    "container {} port {name}: the pod already has a port named {new_name:?}; left alone",
                    shown(cname)
                ));
                continue;
            }
            cx.add(
                [
                    Token::new("spec"),
                    Token::new(list),
                    idx(i),
                    Token::new("ports"),
                    idx(k),
                    Token::new("name"),
                ],
                Value::String(new_name.clone()),
            );
            taken.insert(new_name);
        }
    }
}

/// A Service `targetPort: NAME` follows the pod port rename `NAME` → `tcp-NAME`.
fn follow_target_port<'a, J: Json<'a>>(port: J, i: usize, cfg: &TracePort, cx: &mut Ctx<'_>) {
    let Some(target) = port.get("targetPort").and_then(J::as_str) else {
        return;
    };
    // The pod rule renames by name only when it has the container port's name; a
    // matcher by number alone cannot be checked from the Service.
    let renamed_by_pods = cfg.ports.iter().any(|m| m.name.as_deref() == Some(target))
        && protocol_prefix(target).is_none();
    if !renamed_by_pods {
        return;
    }
    let new_target = format!("tcp-{target}");
    if !is_iana_svc_name(&new_target) {
        return;
    }
    cx.add(
        [
            Token::new("spec"),
            Token::new("ports"),
            idx(i),
            Token::new("targetPort"),
        ],
        Value::String(new_target),
    );
}

fn port_list<'a, J: Json<'a>>(container: J) -> impl Iterator<Item = J> + 'a {
    container.get("ports").into_iter().flat_map(J::items)
}

/// Whether a port is TCP (the protocol defaults to TCP).
fn is_tcp<'a, J: Json<'a>>(port: J) -> bool {
    match port.get("protocol") {
        None => true,
        Some(p) => p.is_null() || p.as_str() == Some("TCP"),
    }
}

/// Whether any matcher selects this port.
fn matches(cfg: &TracePort, name: Option<&str>, number: Option<u64>) -> bool {
    cfg.ports.iter().any(|m| m.matches(name, number))
}

/// The protocol an Istio port name declares, if any: `http-web` → `http`.
fn protocol_prefix(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    ISTIO_PROTOCOLS
        .iter()
        .filter(|p| {
            lower == **p
                || lower
                    .strip_prefix(**p)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
        // `grpc-web` must win over `grpc`.
        .max_by_key(|p| p.len())
        .copied()
}

fn describe(name: Option<&str>, number: Option<u64>) -> String {
    match (name, number) {
        (Some(n), Some(p)) => format!("{} ({p})", shown(n)),
        (Some(n), None) => shown(n).into_owned(),
        (None, Some(p)) => p.to_string(),
        (None, None) => "(unnamed)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_protocol_prefixes() {
        assert_eq!(protocol_prefix("tcp-traceport"), Some("tcp"));
        assert_eq!(protocol_prefix("tcp"), Some("tcp"));
        assert_eq!(protocol_prefix("HTTP-x"), Some("http"));
        assert_eq!(protocol_prefix("grpc-web-x"), Some("grpc-web"));
        assert_eq!(protocol_prefix("traceport"), None);
        assert_eq!(protocol_prefix("tcpx"), None);
        assert_eq!(protocol_prefix("httpbin"), None);
    }
}
