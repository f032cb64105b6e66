//! What one run produced: the outcome (the plugin's verdict, or why there is none) and
//! the measurements of the run. Outcomes are decided by matching on what happened,
//! never on message text, and drive exit codes, `/health` and metric labels.

use std::time::Duration;

use serde::Serialize;

use crate::capabilities::Refusal;
use crate::limits::DIAGNOSTIC_MAX_TEXT_BYTES;
use crate::samples::{Drops, Sample};
use crate::scrub::Scrubber;

/// The result of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "reason")]
pub enum Outcome {
    /// The plugin says the dependency works.
    Pass,
    /// The plugin says it works but needs attention. Counts as healthy.
    Warn,
    /// The plugin says the dependency is down.
    Fail,
    /// The plugin could not say: the check itself is broken or over a limit
    /// (Nagios UNKNOWN).
    Error(ErrorKind),
}

/// Why a run produced no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The run's wall-clock limit passed.
    Timeout,
    /// The run burned all its fuel.
    OutOfFuel,
    /// The run asked for more memory than its limit.
    Memory,
    /// The guest trapped (panicked, aborted, hit `unreachable`, exited).
    Trap,
    /// The plugin could not be compiled, linked or instantiated.
    Load,
}

impl ErrorKind {
    /// The label used in metrics and JSON.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfFuel => "out-of-fuel",
            ErrorKind::Memory => "memory",
            ErrorKind::Trap => "trap",
            ErrorKind::Load => "load",
        }
    }
}

impl Outcome {
    /// Every outcome, for walking the label values of a metric.
    pub const ALL: [Outcome; 8] = [
        Outcome::Pass,
        Outcome::Warn,
        Outcome::Fail,
        Outcome::Error(ErrorKind::Timeout),
        Outcome::Error(ErrorKind::OutOfFuel),
        Outcome::Error(ErrorKind::Memory),
        Outcome::Error(ErrorKind::Trap),
        Outcome::Error(ErrorKind::Load),
    ];

    /// The label used in metrics and JSON: `pass`, `warn`, `fail`, or the error reason.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
            Outcome::Error(kind) => kind.label(),
        }
    }

    /// The outcome of a label [`Outcome::label`] gave.
    pub fn from_label(label: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.label() == label)
    }

    /// Whether the dependency counts as up (`pass` or `warn`).
    pub fn is_healthy(self) -> bool {
        matches!(self, Outcome::Pass | Outcome::Warn)
    }

    /// The Nagios exit code: 0 pass, 1 warn, 2 fail, 3 could not run.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Pass => 0,
            Outcome::Warn => 1,
            Outcome::Fail => 2,
            Outcome::Error(_) => 3,
        }
    }
}

/// Everything known about one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The check's name.
    pub check: String,
    /// Pass, warn, fail, or why there is no verdict.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The plugin's message, or the host's explanation of an error; secrets removed.
    pub message: Option<String>,
    /// The samples the plugin reported that passed [`crate::samples::screen`]: valid,
    /// within the caps, secrets removed.
    pub samples: Vec<Sample>,
    /// How many other samples it reported, by why they were dropped.
    pub samples_dropped: Drops,
    /// Wall-clock time of the run (instantiation and call).
    #[serde(serialize_with = "millis")]
    #[serde(rename = "latency_ms")]
    pub latency: Duration,
    /// Fuel burned.
    pub fuel_consumed: u64,
    /// Most linear memory held at once, in bytes.
    pub peak_memory_bytes: u64,
    /// What the run asked the host for that a plugin author wants to know about.
    #[serde(skip)]
    pub calls: Calls,
}

/// The run's calls, as `healthhost check` explains them (see `crate::diagnose`).
#[derive(Debug, Clone, Default)]
pub struct Calls {
    /// Setting keys the plugin read, in order, whether set or not.
    pub settings_read: Vec<String>,
    /// Calls the host refused.
    pub refused: Vec<Refusal>,
}

impl Calls {
    /// The calls with every text scrubbed, then cut to [`DIAGNOSTIC_MAX_TEXT_BYTES`]:
    /// the capabilities hold their texts raw (`capabilities::held`), and the run's
    /// report scrubs them all here, so no text a plugin influenced (a key, a call, a
    /// reason that quotes either) can reach an output unscrubbed.
    pub(super) fn scrubbed(self, scrubber: &Scrubber) -> Calls {
        let text = |t: String| {
            scrubber
                .scrub_cut(&t, DIAGNOSTIC_MAX_TEXT_BYTES)
                .into_owned()
        };
        Calls {
            settings_read: self.settings_read.into_iter().map(text).collect(),
            refused: self
                .refused
                .into_iter()
                .map(|r| Refusal {
                    call: text(r.call),
                    why: text(r.why),
                    ..r
                })
                .collect(),
        }
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 100_000.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_nagios() {
        assert_eq!(Outcome::Pass.exit_code(), 0);
        assert_eq!(Outcome::Warn.exit_code(), 1);
        assert_eq!(Outcome::Fail.exit_code(), 2);
        assert_eq!(Outcome::Error(ErrorKind::Timeout).exit_code(), 3);
    }

    #[test]
    fn serializes_outcome_with_reason() {
        let json = serde_json::to_value(Outcome::Error(ErrorKind::OutOfFuel)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"outcome": "error", "reason": "out-of-fuel"})
        );
        let json = serde_json::to_value(Outcome::Pass).unwrap();
        assert_eq!(json, serde_json::json!({"outcome": "pass"}));
    }
}
