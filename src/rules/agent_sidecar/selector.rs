//! Label selectors: which pods are a tracing agent's, by their labels.
//!
//! Kubernetes' label selector (`matchLabels`, `matchExpressions` with `In`, `NotIn`,
//! `Exists`, `DoesNotExist`), plus one operator of our own: `Glob`, a label value
//! matching a glob pattern (`*datadog*`). Patterns are compiled when the configuration
//! is read, so matching a pod allocates nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::LabelKey;

/// A Kubernetes-style label selector, with one extra operator: `Glob`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", try_from = "RawLabelSelector")]
pub struct LabelSelector {
    pub match_labels: BTreeMap<LabelKey, String>,
    pub match_expressions: Vec<LabelRequirement>,
}

/// One requirement of a [`LabelSelector`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", try_from = "RawLabelRequirement")]
pub struct LabelRequirement {
    pub key: LabelKey,
    pub operator: Operator,
    #[serde(default)]
    pub values: Vec<String>,
    /// `values` compiled, for `Glob`.
    #[serde(skip)]
    patterns: Vec<glob::Pattern>,
}

/// Label requirement operators.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// The label value matches one of `values` as a glob pattern (`*datadog*`).
    Glob,
}

/// The shapes as written, checked by `TryFrom` so that errors carry the line.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct RawLabelSelector {
    match_labels: BTreeMap<LabelKey, String>,
    match_expressions: Vec<LabelRequirement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLabelRequirement {
    key: LabelKey,
    operator: Operator,
    #[serde(default)]
    values: Vec<String>,
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Kubernetes label selector semantics, plus `Glob`; `get` looks up a label value.
    pub fn matches<'v>(&self, get: impl Fn(&str) -> Option<&'v str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| get(k.as_str()) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| {
                let value = get(r.key.as_str());
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    Operator::NotIn => value.is_none_or(|v| r.values.iter().all(|x| x != v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                    Operator::Glob => {
                        value.is_some_and(|v| r.patterns.iter().any(|p| p.matches(v)))
                    }
                }
            })
    }
}

impl TryFrom<RawLabelSelector> for LabelSelector {
    type Error = String;

    fn try_from(raw: RawLabelSelector) -> Result<Self, String> {
        if raw.match_labels.is_empty() && raw.match_expressions.is_empty() {
            return Err("an empty selector would match every pod".into());
        }
        Ok(Self {
            match_labels: raw.match_labels,
            match_expressions: raw.match_expressions,
        })
    }
}

// === impl LabelRequirement ===

impl LabelRequirement {
    /// A requirement, with `Glob` values compiled.
    pub fn new(key: LabelKey, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let patterns = if operator == Operator::Glob {
            values
                .iter()
                .map(|v| {
                    glob::Pattern::new(v)
                        .map_err(|e| format!("bad pattern {v:?}: {} at character {}", e.msg, e.pos))
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            key,
            operator,
            values,
            patterns,
        })
    }
}

impl TryFrom<RawLabelRequirement> for LabelRequirement {
    type Error = String;

    fn try_from(raw: RawLabelRequirement) -> Result<Self, String> {
        let needs_values = matches!(
            raw.operator,
            Operator::In | Operator::NotIn | Operator::Glob
        );
        if needs_values && raw.values.is_empty() {
            return Err(format!("operator {:?} needs values", raw.operator));
        }
        if !needs_values && !raw.values.is_empty() {
            return Err(format!("operator {:?} takes no values", raw.operator));
        }
        Self::new(raw.key, raw.operator, raw.values)
    }
}
