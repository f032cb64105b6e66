//! Deciding a run's outcome from what happened: the plugin's verdict, or why there is
//! none (the limiter's state, the error's type, the stage it failed at), with the
//! plugin's texts scrubbed before they are cut.

use tokio::time::error::Elapsed;
use wasmtime::Trap;

use super::Plugin;
use super::error_chain;
use super::guest_error::{GuestError, guest_error};
use super::outcome::{ErrorKind, Outcome, RunReport};
use crate::capabilities::bindings::healthhost::plugin::types::{self as wit, Status};
use crate::limits::{Limits, REPORT_MAX_MESSAGE_BYTES};
use crate::samples::{self, Sample};
use crate::scrub::cut;

/// The error an epoch callback returns once the run's deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the run's deadline passed")]
pub(super) struct DeadlineExceeded;

/// Where a run failed, which decides the reason when nothing more specific is known.
pub(super) enum Stage {
    Instantiate,
    Call,
}

/// Puts the run's `result` into `report`: the plugin's verdict, message and samples,
/// or why there is none (decided by matching on what happened). Every text from the
/// plugin is scrubbed before it is cut to its cap.
pub(super) fn judge(
    report: &mut RunReport,
    plugin: &Plugin,
    result: Result<wasmtime::Result<wit::Report>, Elapsed>,
    stage: Stage,
    memory_refused: bool,
    stderr: &str,
) {
    let limits = plugin.limits;
    let scrub_cut = |text: &str| {
        plugin
            .scrubber
            .scrub_cut(text, REPORT_MAX_MESSAGE_BYTES)
            .into_owned()
    };
    match result {
        Ok(Ok(plugin_report)) => {
            report.outcome = verdict(plugin_report.status);
            report.message = plugin_report.message.as_deref().map(scrub_cut);
            let reported = plugin_report.samples.into_iter().map(Sample::from);
            (report.samples, report.samples_dropped) =
                samples::screen(reported.collect(), &plugin.scrubber);
        }
        Ok(Err(error)) => {
            let (kind, text) = classify(&error, memory_refused, stage, &limits);
            let text = scrub_cut(&text);
            // A trap's cause is in the guest's own words on its stderr (already
            // scrubbed): an uncaught exception's line, or a panic's last lines.
            let text = match (kind, guest_error(stderr)) {
                (ErrorKind::Trap, Some(GuestError::Exception(line))) => line,
                (ErrorKind::Trap, Some(GuestError::Tail(tail))) => {
                    format!("{text}; stderr: {tail}")
                }
                _ => text,
            };
            report.outcome = Outcome::Error(kind);
            report.message = Some(cut(&text, REPORT_MAX_MESSAGE_BYTES).to_owned());
        }
        Err(_elapsed) => {
            report.outcome = Outcome::Error(ErrorKind::Timeout);
            report.message = Some(timeout_message(&limits));
        }
    }
}

/// The plugin's verdict as an outcome.
fn verdict(status: Status) -> Outcome {
    match status {
        Status::Pass => Outcome::Pass,
        Status::Warn => Outcome::Warn,
        Status::Fail => Outcome::Fail,
    }
}

impl From<wit::Sample> for Sample {
    fn from(s: wit::Sample) -> Sample {
        Sample {
            name: s.name,
            labels: s.labels,
            value: s.value,
        }
    }
}

/// Decides why a run failed by matching on the limiter's state and the error's type.
fn classify(
    error: &wasmtime::Error,
    memory_refused: bool,
    stage: Stage,
    limits: &Limits,
) -> (ErrorKind, String) {
    if memory_refused {
        return (
            ErrorKind::Memory,
            format!(
                "memory limit of {} exceeded",
                crate::units::format_size(limits.memory)
            ),
        );
    }
    if error.is::<DeadlineExceeded>() {
        return (ErrorKind::Timeout, timeout_message(limits));
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => (
                ErrorKind::OutOfFuel,
                format!("fuel limit of {} exhausted", limits.fuel),
            ),
            Trap::Interrupt => (ErrorKind::Timeout, timeout_message(limits)),
            other => (ErrorKind::Trap, other.to_string()),
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (
            ErrorKind::Trap,
            format!("the plugin exited with status {}", exit.0),
        );
    }
    match stage {
        Stage::Instantiate => (
            ErrorKind::Load,
            format!("cannot instantiate: {}", error_chain(error)),
        ),
        Stage::Call => (ErrorKind::Trap, error_chain(error)),
    }
}

fn timeout_message(limits: &Limits) -> String {
    format!(
        "timed out after {}",
        humantime::format_duration(limits.timeout)
    )
}
