//! What `healthhost check` tells a plugin author beside the verdict: settings given
//! but never read (with the nearest key the plugin did read), settings read but not
//! given, calls the host refused and why, and samples `serve` would keep out of
//! `/metrics` and why. Each is something a check "passes" with in a test and then
//! gets wrong in production without a word.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::capabilities::Refusal;
use crate::config::grants::Settings;
use crate::escape::escape_controls;
use crate::runtime::RunReport;
use crate::samples::{self, Dropped};

/// Everything worth a plugin author's attention in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Diagnostics {
    /// Settings the check was given and never read: a misspelling, or a leftover.
    pub settings_unread: Vec<Unread>,
    /// Settings the check read and was not given: its own default applied.
    pub settings_missing: Vec<String>,
    /// Calls the host refused.
    pub refused: Vec<Refusal>,
    /// Samples `serve` would not export, with why.
    pub samples_not_exported: Vec<NotExported>,
}

/// A setting given and never read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unread {
    pub key: String,
    /// The read-but-not-given key it most likely meant.
    pub did_you_mean: Option<String>,
}

/// A sample `serve` would keep out of `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotExported {
    pub name: String,
    pub reason: Dropped,
}

impl Diagnostics {
    /// The diagnostics of `report` for a check given `settings` and allowed to export
    /// the sample names `metrics`.
    pub fn of(report: &RunReport, settings: &Settings, metrics: &BTreeSet<String>) -> Diagnostics {
        let read = &report.calls.settings_read;
        let given: Vec<&str> = settings.keys().map(|(k, _)| k).collect();
        let settings_missing: Vec<String> = read
            .iter()
            .filter(|k| !given.contains(&k.as_str()))
            .cloned()
            .collect();
        let settings_unread = given
            .iter()
            .filter(|k| !read.iter().any(|r| r == *k))
            .map(|k| Unread {
                key: (*k).to_owned(),
                did_you_mean: nearest(k, &settings_missing),
            })
            .collect();
        let samples_not_exported =
            samples::verdicts(&report.samples, metrics, crate::names::reserved)
                .filter_map(|(sample, reason)| {
                    Some(NotExported {
                        name: sample.name.clone(),
                        reason: reason?,
                    })
                })
                .collect();
        Diagnostics {
            settings_unread,
            settings_missing,
            refused: report.calls.refused.clone(),
            samples_not_exported,
        }
    }

    /// One `note:` line each, for people; the plugin's text has its control
    /// characters escaped.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let mut note = |text: String| {
            out.push_str("  note: ");
            out.push_str(&escape_controls(&text));
            out.push('\n');
        };
        for u in &self.settings_unread {
            let hint = match &u.did_you_mean {
                Some(key) => format!("; did you mean '{key}'?"),
                None => String::new(),
            };
            note(format!(
                "setting '{}' was given but never read{hint}",
                u.key
            ));
        }
        for key in &self.settings_missing {
            note(format!(
                "setting '{key}' was read but not given (the plugin's default applied)"
            ));
        }
        for r in &self.refused {
            note(format!(
                "{} call refused: {} ({})",
                r.capability, r.call, r.why
            ));
        }
        for s in &self.samples_not_exported {
            let why = match s.reason {
                Dropped::NotGranted => "its name is not in grants.metrics".to_owned(),
                other => other.label().to_owned(),
            };
            note(format!("serve would not export sample '{}': {why}", s.name));
        }
        out
    }
}

/// The candidate closest to `key` in edit distance, if close enough to be a typo: at
/// most a third of the longer name, and at least one edit allowed.
fn nearest(key: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (distance(key, c), c))
        .filter(|(d, c)| *d <= (key.len().max(c.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

/// Levenshtein distance in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("slowms", "slow_ms"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }

    #[test]
    fn nearest_suggests_only_likely_typos() {
        let read = vec!["slow_ms".to_owned(), "timeout_ms".to_owned()];
        assert_eq!(nearest("slowms", &read).as_deref(), Some("slow_ms"));
        assert_eq!(nearest("timeoutms", &read).as_deref(), Some("timeout_ms"));
        assert_eq!(nearest("colour", &read), None);
    }
}
