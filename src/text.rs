//! Text from outside (an object, a request, a file) as our messages show it.
//!
//! Warnings, refusals, log lines and `tracepatch mutate`'s stderr echo what a client
//! sent. Every such echo goes through [`one_line`]: control characters escaped (`\n`),
//! so that a message stays one line wherever it is printed (found by fuzzing:
//! fuzz/regressions/mutate/env-name-newline), and a bound on its length, so that a
//! hostile object cannot make a message long.

use std::borrow::Cow;

/// The longest user-sent value a warning or a refusal echoes, in characters.
pub const MAX_SHOWN_CHARS: usize = 64;

/// `s` on one line, control characters escaped (`\n`, `\u{0}`), and at most
/// `max_chars` characters of that; when cut, `…` follows. Borrowed when nothing
/// changes.
pub fn one_line(s: &str, max_chars: usize) -> Cow<'_, str> {
    let fits = s.char_indices().nth(max_chars).is_none();
    if fits && !s.contains(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)) + 8);
    let mut count = 0usize;
    for c in s.chars() {
        let escape = c.is_control().then(|| c.escape_default());
        let width = escape.as_ref().map_or(1, ExactSizeIterator::len);
        if count + width > max_chars {
            out.push('…');
            break;
        }
        count += width;
        match escape {
            Some(e) => out.extend(e),
            None => out.push(c),
        }
    }
    out.into()
}

/// A user-sent string as a warning or refusal echoes it: [`one_line`], at most
/// [`MAX_SHOWN_CHARS`] characters, so the reason after it stays readable.
pub fn shown(s: &str) -> Cow<'_, str> {
    one_line(s, MAX_SHOWN_CHARS)
}

/// A YAML or JSON parser's message without its trailing ` at line L, column C` (and a
/// leading `error: `): the location is reported separately, so drop the duplicate.
pub fn strip_location(msg: &str) -> &str {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_values_are_one_line_and_bounded() {
        assert_eq!(shown("DD_ENV"), "DD_ENV");
        assert_eq!(shown("a\nb\u{0}c"), "a\\nb\\u{0}c");
        let long = format!("{}\n", "x".repeat(100));
        assert_eq!(shown(&long), format!("{}…", "x".repeat(64)));
    }

    #[test]
    fn the_bound_counts_escapes_and_leaves_short_text_borrowed() {
        assert!(matches!(one_line("plain", 5), Cow::Borrowed("plain")));
        assert_eq!(one_line("abcdef", 5), "abcde…");
        assert_eq!(one_line("ab\ncd", 3), "ab…");
        assert_eq!(one_line("ab\ncd", 4), "ab\\n…");
        let breaks = "\n".repeat(1000);
        let cut = one_line(&breaks, 255);
        assert!(cut.chars().count() <= 256, "{}", cut.chars().count());
    }

    #[test]
    fn locations_are_stripped_once() {
        assert_eq!(
            strip_location("error: unknown field `x` at line 3, column 5"),
            "unknown field `x`"
        );
        assert_eq!(strip_location("expected value"), "expected value");
    }
}
