//! The wire formats of `/health` and `/health/{check}`, as serde types defined once:
//! the AdtroBot plan's document ([`HealthDoc`], one check a [`CheckDoc`]) and the IETF
//! health check draft's ([`IetfDoc`], `application/health+json`). The server writes
//! them; `healthhost list` reads a running host's `/health` back with the same types.
//! Also a check's history ([`HistoryDoc`], `GET /v1/checks/{check}/history`).
//! Fields are declared in alphabetical order, the order of the bytes on the wire.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::history::Record;
use super::{CheckState, CheckView, healthy};
use crate::journal::results::Stored;
use crate::runtime::Outcome;

/// The status an outcome shows as: `pass`, `warn`, or `fail` for a failure and for
/// every error.
pub fn status(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "pass",
        Outcome::Warn => "warn",
        _ => "fail",
    }
}

impl CheckState {
    /// `pass`/`warn`/`fail`: `fail` for errors, stale and missing results.
    pub fn status(&self) -> &'static str {
        match self {
            CheckState::Reported(outcome) => status(*outcome),
            _ => "fail",
        }
    }

    /// The outcome's label (a stale result keeps its own), `loading`, or none before
    /// a result.
    pub fn outcome(&self) -> Option<&'static str> {
        match self {
            CheckState::Loading => Some("loading"),
            CheckState::NotLoaded(_) | CheckState::NotRun => None,
            CheckState::Stale { outcome, .. } | CheckState::Reported(outcome) => {
                Some(outcome.label())
            }
        }
    }
}

/// The message a response shows for `view`: the run's own while its result is
/// current, else what the state is.
pub fn message(view: &CheckView) -> Option<String> {
    Some(match view.state {
        CheckState::Reported(_) => return view.message.clone(),
        CheckState::Loading => "loading: the plugin is being compiled".to_owned(),
        CheckState::NotLoaded(_) => "not loaded".to_owned(),
        CheckState::NotRun => "not checked yet".to_owned(),
        CheckState::Stale { age, .. } => format!(
            "stale: last result is {} old",
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        ),
    })
}

/// The plan's `/health` document: `{"checks": {name: …}, "status": "healthy"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthDoc {
    pub checks: BTreeMap<String, CheckDoc>,
    /// `healthy` or `unhealthy`.
    pub status: String,
}

/// One check in the plan's format, plus the host's extra fields; `/health/{check}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckDoc {
    /// Seconds since the result was recorded; none before the first.
    pub age_seconds: Option<f64>,
    pub critical: bool,
    pub healthy: bool,
    pub latency_ms: Option<f64>,
    /// Why the plugin file does not load (with details only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
    /// The check's message (with details only).
    pub message: Option<String>,
    /// `pass`, `warn`, `fail`, an error reason, `stale`, `loading`; none before a run.
    pub outcome: Option<String>,
    /// `pass`, `warn` or `fail`.
    pub status: String,
    /// The manifest digest of a plugin by OCI reference (with details only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl HealthDoc {
    /// The document of `views`; without `details`, messages are null.
    pub fn of(views: &[CheckView], details: bool) -> HealthDoc {
        HealthDoc {
            checks: views
                .iter()
                .map(|v| (v.name.clone(), CheckDoc::of(v, details)))
                .collect(),
            status: if healthy(views) {
                "healthy"
            } else {
                "unhealthy"
            }
            .to_owned(),
        }
    }
}

impl CheckDoc {
    /// One check's entry; without `details`, its message and load error are left out.
    pub fn of(v: &CheckView, details: bool) -> CheckDoc {
        CheckDoc {
            age_seconds: v.age_seconds,
            critical: v.critical,
            healthy: v.healthy,
            latency_ms: v.latency_ms,
            load_error: v
                .load_error
                .as_ref()
                .filter(|_| details)
                .map(ToString::to_string),
            message: message(v).filter(|_| details),
            outcome: v.state.outcome().map(str::to_owned),
            status: v.state.status().to_owned(),
            digest: v.digest.clone().filter(|_| details),
        }
    }
}

/// The IETF draft's document (draft-inadarei-api-health-check-06).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IetfDoc {
    /// `NAME:responseTime` → the check's one measurement.
    pub checks: BTreeMap<String, [IetfCheck; 1]>,
    pub description: &'static str,
    /// `pass`, `warn` or `fail`.
    pub status: &'static str,
}

/// One check in the IETF draft's format.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IetfCheck {
    pub affects_service_health: bool,
    pub component_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_unit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<f64>,
    /// The message of a check that warns or fails (with details only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub status: &'static str,
    /// When the result was recorded, RFC 3339 with milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

impl IetfDoc {
    /// The document of `views`; without `details`, no `output`.
    pub fn of(views: &[CheckView], details: bool) -> IetfDoc {
        let status = if !healthy(views) {
            "fail"
        } else if views
            .iter()
            .any(|v| matches!(v.state, CheckState::Reported(Outcome::Warn)))
        {
            "warn"
        } else {
            "pass"
        };
        let checks = views
            .iter()
            .map(|v| {
                let check = IetfCheck {
                    affects_service_health: v.critical,
                    component_id: v.name.clone(),
                    observed_unit: v.latency_ms.map(|_| "ms"),
                    observed_value: v.latency_ms,
                    // The draft keeps `output` for warn and fail.
                    output: message(v).filter(|_| {
                        details && !matches!(v.state, CheckState::Reported(Outcome::Pass))
                    }),
                    status: v.state.status(),
                    time: v
                        .finished
                        .map(|t| humantime::format_rfc3339_millis(t).to_string()),
                };
                (format!("{}:responseTime", v.name), [check])
            })
            .collect();
        IetfDoc {
            checks,
            description: "healthhost",
            status,
        }
    }
}

/// A check's recent results: `GET /v1/checks/{check}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryDoc {
    pub check: String,
    /// The results from `since` on, oldest first.
    pub results: Vec<ResultDoc>,
    /// The earliest time asked for, RFC 3339 with milliseconds.
    pub since: String,
    /// Where the results come from: `store` (every replica's, this host's newest from
    /// memory until written) or `memory` (this host's only: no history store, or it
    /// could not be read).
    pub source: &'static str,
    /// Whether older results from `since` on were left out: an answer holds the
    /// newest ones only (at most 10,000).
    pub truncated: bool,
    /// Percent of the last day's runs that passed or warned, to 0.01; null without
    /// results.
    pub uptime_24h: Option<f64>,
    /// The maintenance windows that covered the check since `since` (left out when
    /// none did): its alerts were silent then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<MaintenanceDoc>,
}

/// A maintenance window in a check's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceDoc {
    /// RFC 3339.
    pub start: String,
    pub end: String,
    pub reason: Option<String>,
}

/// One result of a check's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultDoc {
    /// When the run finished, RFC 3339 with milliseconds.
    pub at: String,
    /// The latency the check measured itself, in ms, as `/health` has it.
    pub latency_ms: Option<f64>,
    /// The check's message (with details only).
    pub message: Option<String>,
    /// The host (replica) that ran it: its `[history] node`.
    pub node: String,
    /// `pass`, `warn`, `fail` or an error reason.
    pub outcome: String,
    /// `pass`, `warn` or `fail` (errors are `fail`).
    pub status: String,
}

impl ResultDoc {
    /// A result `node` holds in memory; without `details`, no message.
    pub fn of_record(record: &Record, node: &str, details: bool) -> ResultDoc {
        ResultDoc::new(
            record.at(),
            node.to_owned(),
            record.outcome().label().to_owned(),
            record.latency_ms(),
            record.message().filter(|_| details).map(str::to_owned),
        )
    }

    /// A result read from the history store; without `details`, no message.
    pub fn of_stored(stored: Stored, details: bool) -> ResultDoc {
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(stored.at_ms).unwrap_or(0));
        ResultDoc::new(
            at,
            stored.node,
            stored.outcome,
            stored.latency_ms,
            stored.message.filter(|_| details),
        )
    }

    fn new(
        at: SystemTime,
        node: String,
        outcome: String,
        latency_ms: Option<f64>,
        message: Option<String>,
    ) -> ResultDoc {
        // A label this version does not know (a newer replica's) shows as failed.
        let status = Outcome::from_label(&outcome).map_or("fail", status);
        ResultDoc {
            at: humantime::format_rfc3339_millis(at).to_string(),
            latency_ms: latency_ms.map(|ms| (ms * 100.0).round() / 100.0),
            message,
            node,
            status: status.to_owned(),
            outcome,
        }
    }
}
