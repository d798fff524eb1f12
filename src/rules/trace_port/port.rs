//! Port matchers: which Service and container ports are the agent's trace port.

use serde::{Deserialize, Serialize};

use crate::names::is_dns_label;

/// Matches a port by name and/or number; both must match when both are given.
/// Only TCP ports (protocol absent or `TCP`) ever match.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", try_from = "RawPortMatcher")]
pub struct PortMatcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
}

/// A port number, 1 to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u16")]
pub struct PortNumber(u16);

/// The shape as written, checked by `TryFrom` so that errors carry the line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPortMatcher {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<PortNumber>,
}

// === impl PortMatcher ===

impl PortMatcher {
    /// Whether a port with this name and number matches.
    pub fn matches(&self, name: Option<&str>, number: Option<u64>) -> bool {
        self.name.as_deref().is_none_or(|want| name == Some(want))
            && self
                .port
                .is_none_or(|want| number == Some(u64::from(want.get())))
    }
}

impl TryFrom<RawPortMatcher> for PortMatcher {
    type Error = String;

    fn try_from(raw: RawPortMatcher) -> Result<Self, String> {
        if raw.name.is_none() && raw.port.is_none() {
            return Err("a port matcher needs a name, a port, or both".into());
        }
        if let Some(name) = &raw.name
            && !is_dns_label(name)
        {
            return Err(format!("{name:?} is not a valid port name"));
        }
        Ok(Self {
            name: raw.name,
            port: raw.port,
        })
    }
}

// === impl PortNumber ===

impl PortNumber {
    /// A port known valid at compile time (the built-in defaults); 0 would be refused.
    pub(crate) const fn known(n: u16) -> Self {
        Self(n)
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for PortNumber {
    type Error = &'static str;

    fn try_from(n: u16) -> Result<Self, Self::Error> {
        if n == 0 {
            return Err("port 0 is not a valid port (1-65535)");
        }
        Ok(Self(n))
    }
}
