//! Removes secret values from every text the host emits about a check: report
//! messages, log lines, captured stdout/stderr and error texts. A secret can travel in
//! a URL (a Telegram bot token is part of the path), so its percent-encoded form is
//! removed too.

use std::borrow::Cow;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The set of secret values to remove. Cheap to clone behind an `Arc`.
#[derive(Debug, Default, Clone)]
pub struct Scrubber {
    /// Longest first, so a secret that contains another is removed whole.
    needles: Vec<String>,
}

impl Scrubber {
    /// A scrubber for these secrets; empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<String> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .flat_map(|s| {
                let encoded = percent_encode(s);
                [s.to_owned(), encoded]
            })
            .collect();
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Scrubber { needles }
    }

    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = Cow::Owned(out.replace(needle.as_str(), REDACTED));
            }
        }
        out
    }
}

/// Percent-encodes everything but unreserved URL characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_plain_and_percent_encoded_secrets() {
        let s = Scrubber::new(["123:ABC def", ""]);
        assert_eq!(s.scrub("token 123:ABC def here"), "token [REDACTED] here");
        assert_eq!(
            s.scrub("GET /bot123%3AABC%20def/getMe failed"),
            "GET /bot[REDACTED]/getMe failed"
        );
        assert_eq!(s.scrub("nothing secret"), "nothing secret");
    }

    #[test]
    fn longer_secret_wins_over_its_prefix() {
        let s = Scrubber::new(["abc", "abcdef"]);
        assert_eq!(s.scrub("x abcdef y abc"), "x [REDACTED] y [REDACTED]");
    }

    #[test]
    fn empty_scrubber_changes_nothing() {
        let s = Scrubber::new([]);
        assert!(s.is_empty());
        assert!(matches!(s.scrub("text"), Cow::Borrowed("text")));
    }
}
