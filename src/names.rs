//! Kubernetes' rules for names: label keys and values, environment variable names, DNS
//! labels and subdomains, port names. The configuration validates what a user writes
//! with them, and the rules check what they are about to write.
//!
//! The two names the configuration holds as text are validated newtypes: a
//! [`LabelKey`] or an [`EnvName`] that exists is valid.

use serde::{Deserialize, Serialize};

/// A label or annotation key, validated as a Kubernetes qualified name
/// (`[prefix/]name`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct LabelKey(String);

/// An environment variable name, validated as Kubernetes validates one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct EnvName(String);

// === impl LabelKey ===

impl LabelKey {
    /// A key known valid at compile time (the built-in defaults).
    pub(crate) fn known(s: &str) -> Self {
        debug_assert!(is_qualified_name(s), "{s}");
        Self(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LabelKey {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if is_qualified_name(&s) {
            Ok(Self(s))
        } else {
            Err(format!(
                "{s:?} is not a valid label or annotation key ([prefix/]name)"
            ))
        }
    }
}

// === impl EnvName ===

impl EnvName {
    /// A name known valid at compile time (the built-in defaults).
    pub(crate) fn known(s: &str) -> Self {
        debug_assert!(is_env_var_name(s), "{s}");
        Self(s.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if is_env_var_name(&s) {
            Ok(Self(s))
        } else {
            Err(format!("{s:?} is not a valid environment variable name"))
        }
    }
}

// === validators ===

/// `[-._a-zA-Z][-._a-zA-Z0-9]*`: the rule every Kubernetes version accepts for
/// `env[].name` (newer versions relax it; we produce names every version takes).
pub fn is_env_var_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || matches!(b, b'-' | b'.' | b'_') => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// A label value: at most 63 characters, empty or alphanumeric at both ends with
/// `-`, `_`, `.` inside.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then a name part that
/// is a non-empty label value.
pub(crate) fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return false;
    }
    !name.is_empty() && is_label_value(name)
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or `-`, alphanumeric at both ends.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// IANA service name, as Kubernetes checks container port names: at most 15
/// characters of lowercase alphanumerics and `-`, at least one letter, no `-` at
/// either end and no `--`.
pub fn is_iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names_follow_kubernetes() {
        for ok in ["DD_ENV", "_x", "a.b-c", "-x"] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1ABC", "A B", "A=B", "Ä"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }

    #[test]
    fn qualified_names_follow_kubernetes() {
        for ok in ["app", "sidecar.istio.io/inject", "a_b.c-d"] {
            assert!(is_qualified_name(ok), "{ok}");
        }
        for bad in ["", "/x", "a/", "-a", "Bad.Prefix/x", "a/b/c"] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
    }
}
