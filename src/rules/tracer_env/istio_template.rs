//! What Istio's injection template can carry from `proxyMetadata` unchanged.
//!
//! Istio's sidecar injector renders every `proxyMetadata` entry into the injected
//! containers' env as text and then parses the result as YAML (istio/istio,
//! `manifests/charts/istio-control/istio-discovery/files/injection-template.yaml`):
//!
//! ```text
//!     {{- range $key, $value := .ProxyConfig.ProxyMetadata }}
//!     - name: {{ $key }}
//!       value: "{{ $value }}"
//!     {{- end }}
//! ```
//!
//! Go's `text/template` substitutes the value as it is, so the value becomes the inside
//! of a YAML double-quoted scalar. A `"` ends the scalar early (a YAML error: injection
//! fails and Istio's injector, `failurePolicy: Fail`, refuses the pod); a `\` starts an
//! escape (`a\b` arrives as `a` + backspace, `a\q` is an error); a line break is folded
//! into a space; control characters are refused by the YAML reader. Everything else on
//! one line comes back byte for byte, spaces at either end included.
//!
//! Rule 1 therefore writes a variable into `proxyMetadata` only when [`unsafe_reason`]
//! finds nothing; any other variable reaches the sidecar by the direct channel only.
//! Escaping the value for the template instead (`\"` for `"`) would make today's Istio
//! produce the right text, but it writes into the user's ProxyConfig a value that is not
//! the one asked for, read as-is by everything else that reads `proxyMetadata`, and it
//! turns into a wrong value (with literal backslashes) the day Istio quotes the value
//! properly. Leaving such values out is right under both.

/// Why the template cannot carry `value` unchanged, or `None` when it can.
///
/// Conservative on purpose: refusing a value Istio would have carried costs one warning
/// and the value arrives by the direct channel; accepting one it cannot carry costs a
/// refused pod. Tab, which YAML allows in a double-quoted scalar, is refused with the
/// other control characters.
pub fn unsafe_reason(value: &str) -> Option<&'static str> {
    value.chars().find_map(|c| match c {
        '"' => Some("a double quote ends the quoted YAML value"),
        '\\' => Some("a backslash starts a YAML escape"),
        '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
            Some("a line break is folded into a space")
        }
        '\u{feff}' | '\u{fffe}' | '\u{ffff}' => Some("a byte-order mark or non-character"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The env list Istio's template renders for one variable, parsed as YAML: the value
    /// the sidecar would get, or the parse error that makes Istio refuse the pod.
    fn rendered(name: &str, value: &str) -> Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Env {
            name: String,
            value: String,
        }
        let text = format!("env:\n- name: {name}\n  value: \"{value}\"\n");
        #[derive(serde::Deserialize)]
        struct Container {
            env: Vec<Env>,
        }
        let c: Container = serde_saphyr::from_str(&text).map_err(|e| e.to_string())?;
        match c.env.as_slice() {
            [e] if e.name == name => Ok(e.value.clone()),
            _ => Err(format!("unexpected env list from {text:?}")),
        }
    }

    #[test]
    fn safe_values_come_through_the_template_unchanged() {
        for v in [
            "prod",
            "",
            "  padded  ",
            "a # not a comment",
            "key: value",
            "tags:a,b",
            "café ☕ 𝄞",
            "{{ not a template }}",
            "'single'",
            "100%",
        ] {
            assert_eq!(unsafe_reason(v), None, "{v:?}");
            assert_eq!(rendered("DD_X", v).as_deref(), Ok(v), "{v:?}");
        }
    }

    #[test]
    fn unsafe_values_would_break_or_change_in_the_template() {
        for v in [
            r#"[{"sample_rate":0.5}]"#,
            r#"{"a":1}"#,
            r"team:a\b",
            r"a\q",
            "two\nlines",
            "cr\r",
        ] {
            assert!(unsafe_reason(v).is_some(), "{v:?}");
            assert_ne!(rendered("DD_X", v).as_deref(), Ok(v), "{v:?}");
        }
        assert!(unsafe_reason("tab\there").is_some());
        assert!(unsafe_reason("nul\0").is_some());
        assert!(unsafe_reason("bom\u{feff}").is_some());
        assert!(unsafe_reason("ls\u{2028}").is_some());
    }
}
