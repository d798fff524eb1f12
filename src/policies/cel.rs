//! Pieces of CEL: string literals, label selectors and glob patterns, each written so
//! that the apiserver's CEL (cel-go, with Kubernetes' libraries) decides exactly what
//! the webhook's Rust decides, or, where it cannot, decides "no" (the policy then does
//! nothing and leaves the object to the webhook).

use std::fmt::Write as _;

use crate::config::{LabelSelector, Operator};

/// A CEL double-quoted string literal. Printable ASCII is written as is (with `\` and
/// `"` escaped); everything else as a `\u`/`\U` escape, so the expression stays ASCII
/// and fits a YAML literal block whatever the configuration holds.
pub fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// A list literal of strings: `["a", "b"]`.
pub fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| lit(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A glob pattern as a regular expression, or why it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GlobRegex {
    /// RE2 syntax (also Rust's `regex` syntax), anchored, matching exactly the strings
    /// the glob matches.
    Regex(String),
    /// The glob matches no string (a character class with only reversed ranges).
    Never,
    /// Not translated; the reason, for the output's comments.
    Unsupported(&'static str),
}

/// Translates a pattern as the `glob` crate (0.3) reads it with default options: `?` is
/// any one character, `*` any run of characters (including `/`), `[...]` and `[!...]`
/// a character class with `a-z` ranges, anything else itself, case-sensitive. The
/// tokenizing follows `glob::Pattern::new` step by step; `**` (a recursive wildcard,
/// with its own rule for `/`) is not translated.
pub fn glob_regex(pattern: &str) -> GlobRegex {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("(?s)^");
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '?' => {
                re.push('.');
                i += 1;
            }
            '*' => {
                let start = i;
                while i < chars.len() && chars[i] == '*' {
                    i += 1;
                }
                if i - start > 1 {
                    return GlobRegex::Unsupported("a recursive wildcard (**)");
                }
                re.push_str(".*");
            }
            '[' => {
                // The glob crate's rule: `[!` needs a closing `]` at least two characters
                // on (so `[!]]` is "not `]`"); `[` needs one at least one character on
                // (so `[]]` is "`]`").
                let (negated, body_start, search_from) =
                    if i + 4 <= chars.len() && chars[i + 1] == '!' {
                        (true, i + 2, i + 3)
                    } else if i + 3 <= chars.len() && chars[i + 1] != '!' {
                        (false, i + 1, i + 2)
                    } else {
                        return GlobRegex::Unsupported("an unclosed character class");
                    };
                let Some(j) = chars[search_from..].iter().position(|c| *c == ']') else {
                    return GlobRegex::Unsupported("an unclosed character class");
                };
                let body = &chars[body_start..search_from + j];
                let class = char_class(body);
                match (negated, class.is_empty()) {
                    (false, true) => return GlobRegex::Never,
                    (true, true) => re.push('.'),
                    (false, false) => {
                        let _ = write!(re, "[{class}]");
                    }
                    (true, false) => {
                        let _ = write!(re, "[^{class}]");
                    }
                }
                i = search_from + j + 1;
            }
            c => {
                push_literal(&mut re, c);
                i += 1;
            }
        }
    }
    re.push('$');
    GlobRegex::Regex(re)
}

/// The inside of a regex character class for a glob class body: single characters and
/// `a-z` ranges (a range whose end is before its start matches nothing, as in the glob
/// crate, and is left out). Every character is written as `\x{…}`.
fn char_class(body: &[char]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < body.len() {
        if i + 3 <= body.len() && body[i + 1] == '-' {
            let (a, b) = (body[i], body[i + 2]);
            if a <= b {
                let _ = write!(out, "\\x{{{:x}}}-\\x{{{:x}}}", a as u32, b as u32);
            }
            i += 3;
        } else {
            let _ = write!(out, "\\x{{{:x}}}", body[i] as u32);
            i += 1;
        }
    }
    out
}

/// A character outside a class, matching itself: letters, digits and a few characters
/// that are plain in both RE2 and Rust's regex as they are, the metacharacters behind
/// `\\`, anything else as `\x{…}` (Rust reads `\<` as a word boundary, RE2 as `<`).
fn push_literal(re: &mut String, c: char) {
    if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | ':' | '@' | ',' | '=' | '%') {
        re.push(c);
    } else if matches!(
        c,
        '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
    ) {
        re.push('\\');
        re.push(c);
    } else {
        let _ = write!(re, "\\x{{{:x}}}", c as u32);
    }
}

/// A label selector (plus `Glob`) as a CEL boolean over `labels` (a `map(string,
/// string)` expression), or `None` when it can match no pod here; untranslatable parts
/// are pushed to `notes` and count as "no match".
pub fn selector(sel: &LabelSelector, labels: &str, notes: &mut Vec<String>) -> Option<String> {
    let mut parts = Vec::new();
    for (k, v) in &sel.match_labels {
        let k = lit(k.as_str());
        parts.push(format!("({k} in {labels} && {labels}[{k}] == {})", lit(v)));
    }
    for r in &sel.match_expressions {
        let k = lit(r.key.as_str());
        parts.push(match r.operator {
            Operator::In => format!("({k} in {labels} && {labels}[{k}] in {})", list(&r.values)),
            Operator::NotIn => {
                format!("!({k} in {labels} && {labels}[{k}] in {})", list(&r.values))
            }
            Operator::Exists => format!("{k} in {labels}"),
            Operator::DoesNotExist => format!("!({k} in {labels})"),
            Operator::Glob => {
                let mut alternatives = Vec::new();
                for v in &r.values {
                    match glob_regex(v) {
                        GlobRegex::Regex(re) => {
                            alternatives.push(format!("{labels}[{k}].matches({})", lit(&re)))
                        }
                        GlobRegex::Never => {}
                        GlobRegex::Unsupported(why) => notes.push(format!(
                            "label {} glob {:?} has {why}: pods that only it matches are left to the webhook",
                            r.key.as_str(),
                            v
                        )),
                    }
                }
                if alternatives.is_empty() {
                    return None;
                }
                format!("({k} in {labels} && ({}))", alternatives.join(" || "))
            }
        });
    }
    Some(if parts.is_empty() {
        // An empty selector matches everything (the configuration refuses one).
        "true".to_owned()
    } else if parts.len() == 1 {
        parts.swap_remove(0)
    } else {
        format!("({})", parts.join(" && "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_backslashes_and_non_ascii() {
        assert_eq!(
            lit("sidecar.istio.io/inject"),
            r#""sidecar.istio.io/inject""#
        );
        assert_eq!(lit(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(lit("é\n😀"), r#""\u00e9\u000a\U0001f600""#);
        assert_eq!(list(["a", "b"]), r#"["a", "b"]"#);
    }

    #[test]
    fn globs_translate_token_by_token() {
        let re = |p: &str| match glob_regex(p) {
            GlobRegex::Regex(r) => r,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(re("*datadog*"), "(?s)^.*datadog.*$");
        assert_eq!(
            re("*.gcr.io/datadoghq/agent"),
            r"(?s)^.*\.gcr\.io/datadoghq/agent$"
        );
        assert_eq!(re("a?[b-d][!x]"), r"(?s)^a.[\x{62}-\x{64}][^\x{78}]$");
        assert_eq!(re("[]]"), r"(?s)^[\x{5d}]$");
        assert_eq!(re("[!]]"), r"(?s)^[^\x{5d}]$");
        assert_eq!(re("x[!z-a]"), "(?s)^x.$");
        assert_eq!(glob_regex("x[z-a]"), GlobRegex::Never);
        assert!(matches!(glob_regex("a/**/b"), GlobRegex::Unsupported(_)));
    }
}
