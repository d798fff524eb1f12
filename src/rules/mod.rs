//! The four rules, as pure functions: a raw JSON object and the configuration in,
//! JSON Patch operations and warnings out.
//!
//! Rules never deserialize the object into typed structs (a typed round trip would drop
//! fields from a newer Kubernetes); they read the raw JSON through the [`Json`] view
//! ([`json`]: a `serde_json::Value` offline, the request's simd-json tape in the server)
//! and describe changes as RFC 6902 operations. Each rule is idempotent: run on its own output it
//! produces no operation, because the apiserver may call us again
//! (`reinvocationPolicy: IfNeeded`).
//!
//! A rule writes through a [`Ctx`], which knows where the rule's object sits in the
//! document (a Pod, or the pod template of a Deployment), records warnings under the
//! rule's name, and adds missing parent maps (`/metadata/labels`) exactly once even when
//! two rules need the same parent.

pub mod agent_sidecar;
pub mod cronjob_app;
pub mod json;
pub mod trace_port;
pub mod tracer_env;

use std::fmt;

use json_patch::{AddOperation, PatchOperation};
use jsonptr::{Pointer, PointerBuf, Token};
use serde_json::{Map, Value};

use json::Json;

/// The rules, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleId {
    /// Rule 1: tracer environment from an annotation.
    TracerEnv,
    /// Rule 2: no sidecar for agent pods.
    AgentSidecar,
    /// Rule 3: trace port protocol.
    TracePort,
    /// Rule 4: app label for CronJob pod templates.
    CronJobApp,
}

/// A skipped input, said to the user (kubectl prints AdmissionResponse warnings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub rule: RuleId,
    pub message: String,
}

/// Everything the rules decided about one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Operations to apply in order.
    pub patch: Vec<PatchOperation>,
    /// Inputs that were skipped, and why.
    pub warnings: Vec<Warning>,
    /// Rules that changed the object.
    pub applied: RuleSet,
}

/// A small set of [`RuleId`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSet(u8);

/// A rule's view of the output: its object's location and the shared outcome.
pub struct Ctx<'o> {
    out: &'o mut Outcome,
    base: &'o Pointer,
    rule: RuleId,
    start: usize,
}

/// Why a parent could not be made a map.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAMap {
    /// Dotted path of the offending field, relative to the rule's object.
    pub field: String,
}

// === impl RuleId ===

impl RuleId {
    pub const ALL: [RuleId; 4] = [
        RuleId::TracerEnv,
        RuleId::AgentSidecar,
        RuleId::TracePort,
        RuleId::CronJobApp,
    ];

    /// The name used in audit annotations, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::TracerEnv => "tracer-env",
            RuleId::AgentSidecar => "agent-sidecar",
            RuleId::TracePort => "trace-port",
            RuleId::CronJobApp => "cronjob-app",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl RuleSet ===

impl RuleSet {
    pub(crate) fn insert(&mut self, rule: RuleId) {
        self.0 |= rule.bit();
    }

    pub fn contains(self, rule: RuleId) -> bool {
        self.0 & rule.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = RuleId> {
        RuleId::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Display for RuleSet {
    /// Comma-separated rule names, e.g. `tracer-env,agent-sidecar`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.as_str())?;
        }
        Ok(())
    }
}

// === impl Outcome ===

impl Outcome {
    /// A context for `rule` acting on the object at `base` in the document.
    pub(crate) fn ctx<'o>(&'o mut self, rule: RuleId, base: &'o Pointer) -> Ctx<'o> {
        let start = self.patch.len();
        Ctx {
            out: self,
            base,
            rule,
            start,
        }
    }

    /// Appends another outcome computed on the document after this one's patch.
    pub(crate) fn extend(&mut self, other: Outcome) {
        self.patch.extend(other.patch);
        self.warnings.extend(other.warnings);
        self.applied.0 |= other.applied.0;
    }

    /// The warnings as the lines a user sees.
    pub fn warning_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.warnings
            .iter()
            .map(|w| format!("tracepatch {}: {}", w.rule, w.message))
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// Records a skipped input.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.out.warnings.push(Warning {
            rule: self.rule,
            message: message.into(),
        });
    }

    /// The absolute pointer of `tokens` under the rule's object.
    pub fn ptr<'t>(&self, tokens: impl IntoIterator<Item = Token<'t>>) -> PointerBuf {
        let mut p = self.base.to_buf();
        for t in tokens {
            p.push_back(t);
        }
        p
    }

    /// `add` at `tokens` (relative to the rule's object). On an object member this
    /// creates or replaces; on an array, `-` appends.
    pub fn add<'t>(&mut self, tokens: impl IntoIterator<Item = Token<'t>>, value: Value) {
        let path = self.ptr(tokens);
        self.out
            .patch
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Makes sure the map at `fields` (relative to the rule's object) exists, adding each
    /// missing (or `null`) level as `{}` unless an earlier operation already did.
    /// Fails, naming the field, if a level exists but is not a map.
    pub fn ensure_map<'a, J: Json<'a>>(&mut self, obj: J, fields: &[&str]) -> Result<(), NotAMap> {
        let mut cur = Some(obj);
        for depth in 0..fields.len() {
            let next = cur.and_then(|v| v.get(fields[depth]));
            match next {
                Some(v) if v.is_object() => {}
                Some(v) if !v.is_null() => {
                    return Err(NotAMap {
                        field: fields[..=depth].join("."),
                    });
                }
                _ => {
                    let path = self.ptr(fields[..=depth].iter().map(|f| Token::new(*f)));
                    self.add_once(path, Value::Object(Map::new()));
                }
            }
            cur = next;
        }
        Ok(())
    }

    /// Same as [`Ctx::ensure_map`] for an array (e.g. a container's `env`); `false` if
    /// it exists but is not an array.
    pub fn ensure_array<'a, 't, J: Json<'a>>(
        &mut self,
        existing: Option<J>,
        tokens: impl IntoIterator<Item = Token<'t>>,
    ) -> bool {
        match existing {
            Some(v) if v.is_array() => true,
            Some(v) if !v.is_null() => false,
            _ => {
                let path = self.ptr(tokens);
                self.add_once(path, Value::Array(Vec::new()));
                true
            }
        }
    }

    /// Adds an empty parent unless an earlier operation (of any rule) already did.
    fn add_once(&mut self, path: PointerBuf, value: Value) {
        let done = self
            .out
            .patch
            .iter()
            .any(|op| matches!(op, PatchOperation::Add(a) if a.path == path));
        if !done {
            self.out
                .patch
                .push(PatchOperation::Add(AddOperation { path, value }));
        }
    }
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        if self.out.patch.len() > self.start {
            self.out.applied.insert(self.rule);
        }
    }
}

// === helpers for reading raw objects ===

/// `obj.metadata.<map>.<key>` as a string, if it is one.
pub fn meta_str<'a, J: Json<'a>>(obj: J, map: &str, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(map)?.get(key)?.as_str()
}

/// `obj.metadata.<map>` if it is a map.
pub fn meta_map<'a, J: Json<'a>>(obj: J, map: &str) -> Option<J> {
    obj.get("metadata")?.get(map).filter(|m| m.is_object())
}

/// The containers of a pod spec, with the list they are in: `(list, index, container)`.
/// Entries that are not objects are skipped (their index still counts).
pub fn containers<'a, J: Json<'a>>(pod: J) -> impl Iterator<Item = (&'static str, usize, J)> + 'a {
    let spec = pod.get("spec");
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(move |list| {
            spec.and_then(|s| s.get(list))
                .into_iter()
                .flat_map(|l| l.items())
                .enumerate()
                .filter(|(_, c)| c.is_object())
                .map(move |(i, c)| (list, i, c))
        })
}

/// A token for an array index.
pub fn idx(i: usize) -> Token<'static> {
    Token::from(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parents_are_added_once_across_rules() {
        let obj = json!({"metadata": {"name": "x"}});
        let mut out = Outcome::default();
        {
            let mut cx = out.ctx(RuleId::TracerEnv, Pointer::root());
            cx.ensure_map(&obj, &["metadata", "annotations"]).unwrap();
            cx.add(
                [
                    Token::new("metadata"),
                    Token::new("annotations"),
                    Token::new("a"),
                ],
                json!("1"),
            );
        }
        {
            let mut cx = out.ctx(RuleId::AgentSidecar, Pointer::root());
            cx.ensure_map(&obj, &["metadata", "annotations"]).unwrap();
            cx.add(
                [
                    Token::new("metadata"),
                    Token::new("annotations"),
                    Token::new("b/c"),
                ],
                json!("2"),
            );
        }
        let mut doc = obj.clone();
        json_patch::patch(&mut doc, &out.patch).unwrap();
        assert_eq!(
            doc["metadata"]["annotations"],
            json!({"a": "1", "b/c": "2"})
        );
        assert_eq!(out.patch.len(), 3, "{:?}", out.patch);
        assert_eq!(out.patch[2].path().as_str(), "/metadata/annotations/b~1c");
        assert!(
            out.applied.contains(RuleId::TracerEnv) && out.applied.contains(RuleId::AgentSidecar)
        );
        assert_eq!(out.applied.to_string(), "tracer-env,agent-sidecar");
    }

    #[test]
    fn missing_metadata_is_created_level_by_level() {
        let obj = json!({"kind": "Pod"});
        let mut out = Outcome::default();
        out.ctx(RuleId::AgentSidecar, Pointer::root())
            .ensure_map(&obj, &["metadata", "labels"])
            .unwrap();
        let mut doc = obj.clone();
        json_patch::patch(&mut doc, &out.patch).unwrap();
        assert_eq!(doc, json!({"kind": "Pod", "metadata": {"labels": {}}}));
    }

    #[test]
    fn a_parent_of_the_wrong_type_is_reported_not_replaced() {
        let obj = json!({"metadata": {"labels": ["a"]}});
        let mut out = Outcome::default();
        let err = out
            .ctx(RuleId::AgentSidecar, Pointer::root())
            .ensure_map(&obj, &["metadata", "labels"])
            .unwrap_err();
        assert_eq!(err.field, "metadata.labels");
        assert!(out.patch.is_empty());
        assert!(out.applied.is_empty());
    }

    #[test]
    fn rule_that_only_warns_is_not_applied() {
        let mut out = Outcome::default();
        out.ctx(RuleId::TracePort, Pointer::root()).warn("x");
        assert!(out.applied.is_empty());
        assert_eq!(
            out.warning_lines().collect::<Vec<_>>(),
            ["tracepatch trace-port: x"]
        );
    }
}
