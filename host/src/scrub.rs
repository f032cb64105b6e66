//! Removes secret values from every text that leaves a plugin: report messages, sample
//! names and labels, log lines, captured stdout/stderr, trap and error texts.
//!
//! A secret can travel in a URL (a Telegram bot token is part of the path), so it is
//! also found percent-encoded: every byte of it may be written literally or as `%XX`,
//! in either hex case, in any mix (`abc`, `%61bc`, `%61%62%63`, `%6A`/`%6a`).
//! [`Scrubber::scrub_cut`] scrubs *before* it cuts a text to its cap, so a secret
//! straddling the cut is removed whole instead of leaking its prefix.
//!
//! What it cannot catch is a secret the plugin transforms (base64, reversed, split
//! across lines or reports): a plugin that holds a secret can always leak it; the
//! scrubber stops the accidents (an error text with the URL in it), not the plugin.

use std::borrow::Cow;
use std::ops::Range;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Bytes one secret byte may take in a text: `%XX`.
const ENCODED_BYTE_LEN: usize = 3;

/// The set of secret values to remove. Cheap to clone behind an `Arc`.
#[derive(Debug, Default, Clone)]
pub struct Scrubber {
    secrets: Vec<Vec<u8>>,
    /// Bytes that can start an occurrence: each secret's first byte, and `%`.
    starts: Box<[bool]>,
}

impl Scrubber {
    /// A scrubber for these secrets; empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        secrets.sort();
        secrets.dedup();
        let mut starts = vec![false; 256];
        for secret in &secrets {
            starts[usize::from(secret[0])] = true;
            starts[usize::from(b'%')] = true;
        }
        Scrubber {
            secrets,
            starts: starts.into_boxed_slice(),
        }
    }

    /// The most bytes an occurrence of a secret can span (every byte encoded): a text
    /// cut this far past a point still holds whole any occurrence that starts there.
    pub fn lookahead(&self) -> usize {
        self.secrets.iter().map(Vec::len).max().unwrap_or(0) * ENCODED_BYTE_LEN
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.scrub_cut(text, usize::MAX)
    }

    /// `text` scrubbed, then cut to at most `max` bytes at a character boundary. Only
    /// the part of `text` that can reach the result is searched, so a long text costs
    /// no more than a short one.
    pub fn scrub_cut<'t>(&self, text: &'t str, max: usize) -> Cow<'t, str> {
        let bytes = text.as_bytes();
        let mut out: Vec<u8> = Vec::new();
        let mut copied: usize = 0;
        while out.len() < max {
            let room = max - out.len();
            let before = copied.saturating_add(room).min(bytes.len());
            let Some(found) = self.next_occurrence(bytes, copied, before) else {
                break;
            };
            out.extend_from_slice(&bytes[copied..found.start]);
            out.extend_from_slice(REDACTED.as_bytes());
            copied = found.end;
        }
        if copied == 0 && out.is_empty() {
            return Cow::Borrowed(cut(text, max));
        }
        if out.len() < max {
            let rest = &bytes[copied..];
            out.extend_from_slice(&rest[..rest.len().min(max - out.len())]);
        }
        let text = String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Cow::Owned(cut(&text, max).to_owned())
    }

    /// The first occurrence of any secret that starts in `from..before`, extended over
    /// every occurrence overlapping it.
    fn next_occurrence(&self, text: &[u8], from: usize, before: usize) -> Option<Range<usize>> {
        if self.secrets.is_empty() {
            return None;
        }
        let start = (from..before).find(|&i| {
            self.starts.get(usize::from(text[i])) == Some(&true)
                && self.longest_at(text, i).is_some()
        })?;
        let mut end = self.longest_at(text, start)?;
        let mut at = start + 1;
        while at < end {
            if let Some(overlap) = self.longest_at(text, at) {
                end = end.max(overlap);
            }
            at += 1;
        }
        Some(start..end)
    }

    /// The end of the longest secret occurring at `start`.
    fn longest_at(&self, text: &[u8], start: usize) -> Option<usize> {
        self.secrets
            .iter()
            .filter_map(|secret| match_at(text, start, secret))
            .max()
    }
}

/// The end of an occurrence of `secret` at `start`, each of its bytes written literally
/// or as `%XX` (either hex case).
fn match_at(text: &[u8], start: usize, secret: &[u8]) -> Option<usize> {
    if !secret.contains(&b'%') {
        // Then a byte matches one way at most, so one position is followed.
        return secret.iter().try_fold(start, |at, &byte| {
            step(text, at, byte).into_iter().flatten().next()
        });
    }
    // A `%` in the secret may match `%` or `%25`: follow every reachable position.
    let mut ends = vec![start];
    let mut next = Vec::new();
    for &byte in secret {
        next.clear();
        for &at in &ends {
            next.extend(step(text, at, byte).into_iter().flatten());
        }
        next.sort_unstable();
        next.dedup();
        if next.is_empty() {
            return None;
        }
        std::mem::swap(&mut ends, &mut next);
    }
    ends.last().copied()
}

/// Where a match of `byte` at `at` ends: written literally, or as `%XX`.
fn step(text: &[u8], at: usize, byte: u8) -> [Option<usize>; 2] {
    let here = text.get(at).copied();
    let literal = (here == Some(byte)).then_some(at + 1);
    let encoded = (here == Some(b'%') && decode(text.get(at + 1..at + 3)) == Some(byte))
        .then_some(at + ENCODED_BYTE_LEN);
    [literal, encoded]
}

/// The byte two hex digits (either case) stand for.
fn decode(hex: Option<&[u8]>) -> Option<u8> {
    let digit = |d: u8| char::from(d).to_digit(16);
    match hex? {
        [high, low] => Some((digit(*high)? * 16 + digit(*low)?) as u8),
        _ => None,
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_secrets_literal_and_percent_encoded_in_any_case_and_mix() {
        let s = Scrubber::new(["123:ABC def", ""]);
        let cases = [
            ("token 123:ABC def here", "token [REDACTED] here"),
            ("GET /bot123%3AABC%20def/getMe", "GET /bot[REDACTED]/getMe"),
            ("GET /bot123%3aABC%20def/getMe", "GET /bot[REDACTED]/getMe"),
            (
                "%31%32%33%3A%41%42%43%20%64%65%66",
                "[REDACTED]", // every byte encoded
            ),
            ("%31%32%33%3a%41%42%43%20%64%65%66!", "[REDACTED]!"),
            ("1%323:A%42C def", "[REDACTED]"),
            ("123:ABC%2520def", "123:ABC%2520def"), // double encoding is another text
            ("123:ABC de", "123:ABC de"),
            ("123%3", "123%3"),
            ("nothing secret", "nothing secret"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(s.scrub(text), expected, "{text}");
        }
    }

    #[test]
    fn a_percent_in_the_secret_matches_literally_or_encoded() {
        let s = Scrubber::new(["50%off"]);
        for text in ["50%off", "50%25off", "50%25%6Fff", "%35%30%25off"] {
            assert_eq!(s.scrub(text), REDACTED, "{text}");
        }
        assert_eq!(s.scrub("50%2off"), "50%2off");
    }

    #[test]
    fn longer_and_overlapping_secrets_are_removed_whole() {
        let s = Scrubber::new(["abc", "abcdef"]);
        assert_eq!(s.scrub("x abcdef y abc"), "x [REDACTED] y [REDACTED]");
        let s = Scrubber::new(["abcd", "cdefgh"]);
        assert_eq!(s.scrub("-abcdefgh-"), "-[REDACTED]-");
        let s = Scrubber::new(["aa"]);
        assert_eq!(s.scrub("aaa b aa"), "[REDACTED] b [REDACTED]");
    }

    #[test]
    fn scrubs_before_cutting() {
        let s = Scrubber::new(["Zq9SECRET"]);
        // Every way the secret can straddle a 10-byte cut.
        for pad in 1..10 {
            let text = format!("{}Zq9SECRET tail", "x".repeat(pad));
            let out = s.scrub_cut(&text, 10);
            assert!(out.len() <= 10, "{out}");
            assert!(!out.contains("Zq"), "pad {pad}: {out}");
            assert_eq!(out, cut(&format!("{}[REDACTED] tail", "x".repeat(pad)), 10));
        }
        // Encoded, straddling the cut.
        let out = s.scrub_cut("xxxxxxxx%5Aq9SECRET", 10);
        assert_eq!(out, "xxxxxxxx[R");
        // Many secrets in a row: the result is still cut, nothing of them leaks.
        let text = "Zq9SECRET".repeat(100);
        assert_eq!(s.scrub_cut(&text, 25), "[REDACTED][REDACTED][REDA");
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
        let s = Scrubber::new(["é"]);
        assert_eq!(
            s.scrub_cut("aé%C3%A9é", 100),
            "a[REDACTED][REDACTED][REDACTED]"
        );
        assert_eq!(s.scrub_cut("héllo", 2), "h[", "scrubbed, then cut");
        assert_eq!(s.scrub_cut("hello wörld", 8), "hello w");
    }

    #[test]
    fn without_secrets_or_matches_the_text_is_borrowed() {
        let none = Scrubber::new([]);
        assert_eq!(none.lookahead(), 0);
        assert!(matches!(none.scrub("text %41"), Cow::Borrowed("text %41")));
        assert!(matches!(none.scrub_cut("text", 2), Cow::Borrowed("te")));
        let some = Scrubber::new(["secret"]);
        assert_eq!(some.lookahead(), 18);
        assert!(matches!(
            some.scrub("plain 100%"),
            Cow::Borrowed("plain 100%")
        ));
    }
}
