//! Escapes the characters in plugin text that could forge output: a newline starts a
//! line the host did not write, ESC and OSC sequences drive the terminal, bidi
//! controls reorder what is shown. Every plugin log line, captured stdout/stderr line
//! and the human output of `healthhost check` and `healthhost list` pass through
//! [`escape_controls`]. JSON output stays raw: JSON escapes them itself.
//!
//! Escapes are Rust-style and readable: `\n`, `\r`, `\t`, `\x1b` for other ASCII
//! controls, `\u{85}` beyond ASCII. Everything else, backslashes included, is kept.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character escaped; borrowed when there is none.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(forges) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if forges(c) && c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if forges(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Control characters (C0, DEL, C1), the Unicode line and paragraph separators, and
/// the bidirectional formatting characters.
fn forges(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_output_and_keeps_the_rest() {
        let cases = [
            ("plain text", "plain text"),
            ("line\nforged", "line\\nforged"),
            ("a\r\nb", "a\\r\\nb"),
            ("col\tcol", "col\\tcol"),
            ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
            ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
            ("nul\0del\x7f", "nul\\x00del\\x7f"),
            ("c1\u{85}\u{9b}", "c1\\u{85}\\u{9b}"),
            ("sep\u{2028}x\u{2029}", "sep\\u{2028}x\\u{2029}"),
            ("bidi\u{202e}cba\u{2066}", "bidi\\u{202e}cba\\u{2066}"),
            ("kept: é ü 日本 \\n \" '", "kept: é ü 日本 \\n \" '"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(escape_controls(text), expected, "{text:?}");
        }
    }

    #[test]
    fn text_without_controls_is_borrowed() {
        assert!(matches!(escape_controls("ok é"), Cow::Borrowed("ok é")));
    }
}
