//! Rule 1: tracer environment variables from a pod annotation into the Istio sidecar.
//!
//! Source: the annotations listed in the configuration (default
//! `apm.datadoghq.com/env`), each a JSON object of variables, then Datadog's unified
//! service tagging labels (`tags.datadoghq.com/env` → `DD_ENV`, ...) for names no
//! annotation set.
//!
//! Two ways into the sidecar, both on by default:
//! - before Istio injects: merged into `proxyMetadata` of the `proxy.istio.io/config`
//!   annotation, which Istio's injector turns into the sidecar's environment (and keeps
//!   on re-injection); only values its template carries unchanged ([`istio_template`]),
//!   the others with a warning when no sidecar is there yet to take them directly;
//! - sidecar already present (reinvocation after the injector, a sidecar in the
//!   manifest, or a native sidecar in `initContainers`): set on the container directly.

use std::collections::HashMap;
use std::fmt;

use jsonptr::Token;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Ctx, containers, idx, meta_map, meta_str};
use crate::config::TracerEnv;
use crate::names::is_env_var_name;
use crate::rules::json::Json;
use crate::text::shown;

mod istio_template;
mod keyed;
pub mod proxy_config;

use keyed::KeyIndex;

/// Istio's per-pod proxy configuration annotation.
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";

/// A variable to set, in the order it should appear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    pub name: String,
    pub value: String,
}

/// Applies rule 1 to a pod (or pod template) at the context's base.
pub fn apply<'a, J: Json<'a>>(pod: J, cfg: &TracerEnv, cx: &mut Ctx<'_>) {
    if !cfg.enabled {
        return;
    }
    let vars = match collect(pod, cfg, cx) {
        Some(vars) if !vars.is_empty() => vars,
        _ => return,
    };
    if cfg.proxy_metadata {
        let direct = cfg.sidecar_env && targets(pod, cfg).next().is_some();
        into_proxy_metadata(pod, &vars, direct, cfg.sidecar_env, cx);
    }
    if cfg.sidecar_env {
        into_containers(pod, &vars, cfg, cx);
    }
}

/// The variables the pod asks for, in order; `None` when an annotation is malformed:
/// the owner's intent is unknown, so the rule changes nothing.
fn collect<'a, J: Json<'a>>(pod: J, cfg: &TracerEnv, cx: &mut Ctx<'_>) -> Option<Vec<Var>> {
    let mut vars: Vec<Var> = Vec::new();
    let mut index = KeyIndex::default();
    let annotations = meta_map(pod, "annotations");
    for key in &cfg.annotations {
        let key = key.as_str();
        let Some(raw) = annotations.and_then(|a| a.get(key)) else {
            continue;
        };
        let Some(text) = raw.as_str() else {
            cx.warn(format!(
                "annotation {key}: not a string; no variables set from it"
            ));
            return None;
        };
        if text.len() > MAX_ANNOTATION_BYTES {
            cx.warn(format!(
                "annotation {key}: {} bytes, over the 256 KiB Kubernetes allows for all of an object's annotations; no variables set",
                text.len()
            ));
            return None;
        }
        let entries = match parse_object(text) {
            Ok(entries) => entries,
            Err(e) => {
                cx.warn(format!(
                    "annotation {key}: invalid JSON ({e}); no variables set, pod admitted unchanged by this rule"
                ));
                return None;
            }
        };
        for (name, raw) in entries {
            let Some(value) = env_text(raw) else {
                cx.warn(format!(
                    "annotation {key}: {} is null; skipped",
                    shown(&name)
                ));
                continue;
            };
            if !is_env_var_name(&name) {
                cx.warn(format!(
                    "annotation {key}: {:?} is not a valid environment variable name; skipped",
                    shown(&name)
                ));
                continue;
            }
            set(&mut vars, &mut index, name, value);
        }
    }
    let ust = &cfg.unified_service_tags;
    if ust.enabled {
        for (label, env) in &ust.labels {
            if vars.iter().any(|v| v.name == env.as_str()) {
                continue;
            }
            if let Some(value) = meta_str(pod, "labels", label.as_str())
                && !value.is_empty()
            {
                vars.push(Var {
                    name: env.as_str().to_owned(),
                    value: value.to_owned(),
                });
            }
        }
    }
    Some(vars)
}

/// Sets `name`, keeping the position of its first appearance and the latest value.
fn set(vars: &mut Vec<Var>, index: &mut KeyIndex, name: String, value: String) {
    match index.find(vars, &name, |v| v.name.as_str()) {
        Some(i) => vars[i].value = value,
        None => {
            index.pushed(&name, vars.len());
            vars.push(Var { name, value });
        }
    }
}

/// Channel 1: merge into `proxyMetadata` of `proxy.istio.io/config` the variables
/// Istio's injection template carries unchanged. Any other is left to the direct
/// channel: set in this same call when `direct` (a target container is already there),
/// else after Istio injected, when the apiserver calls again; a warning says so, or that
/// it is not set at all when `sidecar_env` is off.
fn into_proxy_metadata<'a, J: Json<'a>>(
    pod: J,
    vars: &[Var],
    direct: bool,
    sidecar_env: bool,
    cx: &mut Ctx<'_>,
) {
    let mut safe = Vec::with_capacity(vars.len());
    for var in vars {
        let reason = istio_template::unsafe_name_reason(&var.name)
            .or_else(|| istio_template::unsafe_reason(&var.value));
        match reason {
            None => safe.push((var.name.as_str(), var.value.as_str())),
            Some(_) if direct => {}
            Some(reason) => cx.warn(format!(
                "{}: not written to proxyMetadata of {PROXY_CONFIG}: Istio's injection template cannot carry it unchanged ({reason}); {}",
                shown(&var.name),
                if sidecar_env {
                    "set on the sidecar directly once Istio has injected it"
                } else {
                    "sidecarEnv is off, so the sidecar does not get it"
                }
            )),
        }
    }
    if safe.is_empty() {
        return;
    }
    let existing = meta_str(pod, "annotations", PROXY_CONFIG);
    if existing.is_none()
        && meta_map(pod, "annotations").is_some_and(|a| a.get(PROXY_CONFIG).is_some())
    {
        cx.warn(format!(
            "annotation {PROXY_CONFIG}: not a string; left alone"
        ));
        return;
    }
    if let Some(text) = existing.filter(|t| t.len() > MAX_ANNOTATION_BYTES) {
        cx.warn(format!(
            "annotation {PROXY_CONFIG}: {} bytes, over the 256 KiB Kubernetes allows for all of an object's annotations; left alone",
            text.len()
        ));
        return;
    }
    let merged = match proxy_config::merge_proxy_metadata(existing, safe) {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(reason) => {
            cx.warn(format!(
                "annotation {PROXY_CONFIG}: cannot be read ({reason}); left alone, variables set on the sidecar only if present"
            ));
            return;
        }
    };
    if let Err(e) = cx.ensure_map(pod, &["metadata", "annotations"]) {
        cx.warn(format!("{} is not a map; {PROXY_CONFIG} not set", e.field));
        return;
    }
    cx.add(
        [
            Token::new("metadata"),
            Token::new("annotations"),
            Token::new(PROXY_CONFIG),
        ],
        Value::String(merged),
    );
}

/// Kubernetes refuses an object whose annotations together exceed 256 KiB (checked by
/// validation, after admission): a larger annotation is not read at all.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// The largest patch channel 2 makes: the apiserver takes requests of at most 3 MiB, so
/// an object grown past that by our patch could not be stored anyway.
const MAX_CONTAINER_PATCH_BYTES: usize = 3 << 20;

/// The containers of the pod that get the variables directly: (list, index, container,
/// name).
fn targets<'a, 'c, J: Json<'a>>(
    pod: J,
    cfg: &'c TracerEnv,
) -> impl Iterator<Item = (&'static str, usize, J, &'a str)> + use<'a, 'c, J> {
    containers(pod).filter_map(move |(list, i, container)| {
        let name = container.get("name").and_then(J::as_str)?;
        let init = list == "initContainers";
        let native_sidecar = container.get("restartPolicy").and_then(J::as_str) == Some("Always");
        cfg.containers
            .selects(name, native_sidecar, init)
            .then_some((list, i, container, name))
    })
}

/// Channel 2: set on the target containers already in the pod.
fn into_containers<'a, J: Json<'a>>(pod: J, vars: &[Var], cfg: &TracerEnv, cx: &mut Ctx<'_>) {
    let targets = || targets(pod, cfg);
    // Every variable is copied into every target container: bound the product, so that
    // a hostile pod (thousands of variables, thousands of same-named containers) cannot
    // make a patch that exhausts memory.
    let var_bytes: usize = vars.iter().map(|v| v.name.len() + v.value.len() + 32).sum();
    let count = targets().count();
    if var_bytes.saturating_mul(count) > MAX_CONTAINER_PATCH_BYTES {
        cx.warn(format!(
            "{} variables into {count} containers would make a patch over {} MiB; containers left alone",
            vars.len(),
            MAX_CONTAINER_PATCH_BYTES >> 20
        ));
        return;
    }
    for (list, i, container, name) in targets() {
        let env = container.get("env");
        let env_tokens = || {
            [
                Token::new("spec"),
                Token::new(list),
                idx(i),
                Token::new("env"),
            ]
        };
        let mut ensured = false;
        let entries: Vec<(Option<&'a str>, J)> = env
            .into_iter()
            .flat_map(J::items)
            .map(|e| (e.get("name").and_then(J::as_str), e))
            .collect();
        // Kubernetes lets a name repeat; the last entry is the one that takes effect.
        // A hash index only when a linear search per variable would be slow (a hostile
        // annotation against a hostile env list).
        let by_name: Option<HashMap<&str, usize>> =
            (entries.len().saturating_mul(vars.len()) > 4096).then(|| {
                entries
                    .iter()
                    .enumerate()
                    .filter_map(|(j, (n, _))| n.map(|n| (n, j)))
                    .collect()
            });
        for var in vars {
            let found = match &by_name {
                Some(by_name) => by_name.get(var.name.as_str()).map(|&j| (j, entries[j].1)),
                None => entries
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, (n, _))| *n == Some(var.name.as_str()))
                    .map(|(j, (_, e))| (j, *e)),
            };
            match found {
                Some((j, entry)) => {
                    if entry.get("valueFrom").is_some_and(|v| !v.is_null()) {
                        cx.warn(format!(
                            "container {}: {} is set from valueFrom; left alone",
                            shown(name),
                            shown(&var.name)
                        ));
                        continue;
                    }
                    if entry.get("value").and_then(J::as_str).unwrap_or("") == var.value {
                        continue;
                    }
                    let [spec, l, c, e] = env_tokens();
                    cx.add(
                        [spec, l, c, e, idx(j), Token::new("value")],
                        json!(var.value),
                    );
                }
                None => {
                    if !ensured {
                        if !cx.ensure_array(env, env_tokens()) {
                            cx.warn(format!(
                                "container {}: env is not a list; left alone",
                                shown(name)
                            ));
                            break;
                        }
                        ensured = true;
                    }
                    let [spec, l, c, e] = env_tokens();
                    cx.add(
                        [spec, l, c, e, Token::new("-")],
                        json!({"name": var.name, "value": var.value}),
                    );
                }
            }
        }
    }
}

/// The text a JSON value becomes as an environment variable: strings as they are,
/// numbers and booleans as their JSON text, arrays and objects as compact JSON text;
/// `None` for null.
fn env_text(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).ok(),
        Some(b'n') | None => None,
        Some(b'[' | b'{') => Some(compact_json(text)),
        Some(_) => Some(text.to_owned()),
    }
}

/// Removes insignificant whitespace from valid JSON text, keeping key order and the
/// exact spelling of numbers.
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Parses a JSON object into its entries in document order, each value as its raw text.
pub fn parse_object(text: &str) -> Result<Vec<(String, &RawValue)>, serde_json::Error> {
    struct Entries<'a>(Vec<(String, &'a RawValue)>);

    impl<'de> serde::Deserialize<'de> for Entries<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entries<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object of environment variables")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        let v: &'de RawValue = map.next_value()?;
                        entries.push((k, v));
                    }
                    Ok(Entries(entries))
                }
            }
            d.deserialize_map(V)
        }
    }

    serde_json::from_str::<Entries<'_>>(text).map(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(json: &str) -> Vec<(String, Option<String>)> {
        parse_object(json)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, env_text(v)))
            .collect()
    }

    #[test]
    fn values_become_env_text() {
        let got = texts(
            r#"{ "S": "prod", "B": true, "N": 0.5, "E": 1e3, "Z": null,
                 "A": [ {"service": "a b", "sample_rate": 0.5} ], "O": {"z": 1, "a": "x\" y"} }"#,
        );
        let want = [
            ("S", Some("prod")),
            ("B", Some("true")),
            ("N", Some("0.5")),
            ("E", Some("1e3")),
            ("Z", None),
            ("A", Some(r#"[{"service":"a b","sample_rate":0.5}]"#)),
            ("O", Some(r#"{"z":1,"a":"x\" y"}"#)),
        ];
        assert_eq!(got.len(), want.len());
        for ((k, v), (wk, wv)) in got.iter().zip(want) {
            assert_eq!(k, wk);
            assert_eq!(v.as_deref(), wv, "{k}");
        }
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let got = texts(r#"{"DD_\u0045NV": "x"}"#);
        assert_eq!(got[0].0, "DD_ENV");
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = parse_object("{\n \"DD_ENV\": }").unwrap_err();
        assert!(err.to_string().contains("line 2 column"), "{err}");
        let err = parse_object("[1]").unwrap_err();
        assert!(err.to_string().contains("a JSON object"), "{err}");
    }
}
