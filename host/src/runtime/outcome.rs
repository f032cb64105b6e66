//! What one run produced: the outcome (the plugin's verdict, or why there is none) and
//! the measurements of the run. Outcomes are decided by matching on what happened,
//! never on message text, and drive exit codes, `/health` and metric labels.

use std::time::Duration;

use serde::Serialize;

use crate::capabilities::Refusal;
use crate::limits::{DIAGNOSTIC_MAX_TEXT_BYTES, REPORT_MAX_MESSAGE_BYTES};
use crate::samples::{Drops, Sample};
use crate::scrub::{Scrubber, cut};
use crate::thresholds::{Level, Threshold, crossings};

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

impl RunReport {
    /// Judges the samples by `thresholds`: the outcome becomes the worse of the
    /// plugin's verdict and theirs (a run that gave no verdict stays an error), and
    /// each crossing is added to the message, within the message's cap.
    pub fn judge_thresholds(&mut self, thresholds: &[Threshold]) {
        if thresholds.is_empty() || matches!(self.outcome, Outcome::Error(_)) {
            return;
        }
        let crossings = crossings(&self.samples, thresholds);
        let Some(worst) = crossings.iter().map(|c| c.level).max() else {
            return;
        };
        let said = crossings.iter().map(|c| c.describe());
        let message: Vec<String> = self.message.take().into_iter().chain(said).collect();
        self.message = Some(cut(&message.join("; "), REPORT_MAX_MESSAGE_BYTES).to_owned());
        let verdict = match worst {
            Level::Warn => Outcome::Warn,
            Level::Crit => Outcome::Fail,
        };
        if verdict.exit_code() > self.outcome.exit_code() {
            self.outcome = verdict;
        }
    }
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

    fn report(outcome: Outcome, message: Option<&str>, samples: Vec<Sample>) -> RunReport {
        RunReport {
            check: "db".to_owned(),
            outcome,
            message: message.map(str::to_owned),
            samples,
            samples_dropped: Default::default(),
            latency: Duration::from_millis(5),
            fuel_consumed: 1,
            peak_memory_bytes: 1,
            calls: Default::default(),
        }
    }

    #[test]
    fn the_worse_of_the_verdict_and_the_thresholds_wins_and_is_said() {
        use crate::thresholds::tests::threshold;
        let latency = |v| vec![Sample::of("db_latency_seconds", &[], v)];
        let t = [threshold("db_latency_seconds", &[], "0.5", "2")];
        let mut quiet = report(Outcome::Pass, Some("ok"), latency(0.2));
        quiet.judge_thresholds(&t);
        assert_eq!(
            (quiet.outcome, quiet.message.as_deref()),
            (Outcome::Pass, Some("ok"))
        );
        let mut slow = report(Outcome::Pass, Some("ok"), latency(0.7));
        slow.judge_thresholds(&t);
        assert_eq!(slow.outcome, Outcome::Warn);
        assert_eq!(
            slow.message.as_deref(),
            Some("ok; warn threshold \"0.5\" crossed: db_latency_seconds = 0.7")
        );
        let mut down = report(Outcome::Warn, None, latency(2.5));
        down.judge_thresholds(&t);
        assert_eq!(down.outcome, Outcome::Fail);
        assert_eq!(
            down.message.as_deref(),
            Some("crit threshold \"2\" crossed: db_latency_seconds = 2.5")
        );
        // The plugin's worse verdict stays; the crossing is still said.
        let mut failed = report(Outcome::Fail, Some("refused"), latency(0.7));
        failed.judge_thresholds(&t);
        assert_eq!(failed.outcome, Outcome::Fail);
        assert!(failed.message.unwrap().starts_with("refused; warn"));
        // A run without a verdict is left alone.
        let error = Outcome::Error(ErrorKind::Timeout);
        let mut timed_out = report(error, Some("deadline"), latency(9.0));
        timed_out.judge_thresholds(&t);
        assert_eq!(
            (timed_out.outcome, timed_out.message.as_deref()),
            (error, Some("deadline"))
        );
    }
}
