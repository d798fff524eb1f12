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
//! The name is substituted unquoted (`- name: {{ $key }}`), so it is a plain YAML
//! scalar, typed by the go-yaml v2 that Istio's `sigs.k8s.io/yaml` uses: `Y`, `off` or
//! `null` are not strings there, `-1` is a number, `-` starts a list.
//!
//! Rule 1 therefore writes a variable into `proxyMetadata` only when [`unsafe_reason`]
//! finds nothing in its value and [`unsafe_name_reason`] nothing in its name; any other
//! variable reaches the sidecar by the direct channel only.
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

/// Why the template cannot carry the variable name `name` as a string, or `None`.
///
/// Only `[A-Za-z_][A-Za-z0-9_.-]*` that is not one of YAML 1.1's boolean or null words:
/// go-yaml v2 reads a number only from a plain scalar that starts with a digit, a sign
/// or a dot, so one of that form is always a string. Again conservative: a
/// refused name still reaches the sidecar by the direct channel.
pub fn unsafe_name_reason(name: &str) -> Option<&'static str> {
    const WORDS: [&str; 9] = ["y", "yes", "n", "no", "true", "false", "on", "off", "null"];
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Some(
            "an unquoted YAML name must start with a letter or _ and go on with letters, digits, _, . or -",
        );
    }
    if WORDS.iter().any(|w| w.eq_ignore_ascii_case(name)) {
        return Some("an unquoted YAML name that reads as a boolean or null");
    }
    None
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
    fn names_that_yaml_would_not_read_as_strings_are_refused() {
        for n in [
            "DD_ENV",
            "_X",
            "dd_trace_1",
            "YES_PLEASE",
            "Nope",
            "dd.tags-ok",
        ] {
            assert_eq!(unsafe_name_reason(n), None, "{n}");
        }
        for n in ["Y", "yes", "Off", "NULL", "-1", "-", "1A", ".5", ".inf", ""] {
            assert!(unsafe_name_reason(n).is_some(), "{n}");
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
