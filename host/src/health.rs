//! Health: background scheduling of every check, the latest results, aggregation, and
//! the two response formats (the seed's JSON and the IETF health check draft).
//!
//! Each check runs on its own interval (first run at start-up) under a cap on runs in
//! flight; HTTP handlers only read the latest results and never wait on a plugin. A
//! result older than its check's `max_age` counts as failed ("stale"). Readiness: every
//! critical check has a result.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::CheckConfig;
use crate::metrics::Metrics;
use crate::runtime::{Outcome, Plugin, RunReport, Runtime};

/// A configured check and its loaded plugin.
pub struct Check {
    pub config: CheckConfig,
    pub plugin: Arc<Plugin>,
}

/// The latest result of one check.
#[derive(Clone)]
struct Latest {
    report: RunReport,
    finished: SystemTime,
    at: Instant,
}

/// Every check, its latest result, and the scheduler's shared state.
pub struct Health {
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    checks: Vec<Check>,
    latest: RwLock<BTreeMap<String, Latest>>,
    runs: Semaphore,
    shutting_down: AtomicBool,
}

/// One check as a response shows it.
pub struct CheckView {
    pub name: String,
    pub critical: bool,
    pub healthy: bool,
    /// `pass`/`warn`/`fail`, or `fail` for errors, stale and missing results.
    pub status: &'static str,
    pub outcome: Option<&'static str>,
    pub message: Option<String>,
    pub latency_ms: Option<f64>,
    pub age_seconds: Option<f64>,
    pub finished: Option<SystemTime>,
}

impl Health {
    /// Health over `checks`, runs capped at `max_concurrent_runs`.
    pub fn new(
        runtime: Arc<Runtime>,
        metrics: Arc<Metrics>,
        checks: Vec<Check>,
        max_concurrent_runs: usize,
    ) -> Health {
        for check in &checks {
            metrics
                .health_check_status
                .with_label_values(&[check.config.name.as_str()])
                .set(0);
        }
        Health {
            runtime,
            metrics,
            checks,
            latest: RwLock::default(),
            runs: Semaphore::new(max_concurrent_runs),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Starts one background loop per check; dropping or aborting the set stops them.
    pub fn spawn(self: &Arc<Self>) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for index in 0..self.checks.len() {
            let health = self.clone();
            set.spawn(async move {
                let interval = health.checks[index].config.interval;
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    health.run_once(index).await;
                }
            });
        }
        set
    }

    /// Runs check `index` once (waiting for a free run slot) and records the result.
    pub async fn run_once(&self, index: usize) {
        let check = &self.checks[index];
        let report = {
            let _permit = self
                .runs
                .acquire()
                .await
                .expect("the semaphore is never closed");
            self.runtime.run(&check.plugin).await
        };
        let finished = SystemTime::now();
        let unix = finished
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.metrics
            .record_run(&report, report.outcome.is_healthy(), unix);
        let latest = Latest {
            report,
            finished,
            at: Instant::now(),
        };
        self.latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(check.config.name.clone(), latest);
    }

    /// Marks the host as shutting down: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether every critical check has a result and the host is not shutting down.
    pub fn ready(&self) -> bool {
        if self.shutting_down.load(Ordering::SeqCst) {
            return false;
        }
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        self.checks
            .iter()
            .filter(|c| c.config.critical)
            .all(|c| latest.contains_key(&c.config.name))
    }

    /// Views of every check not in `exclude`, in name order.
    pub fn views(&self, exclude: &[String]) -> Vec<CheckView> {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        let mut views: Vec<CheckView> = self
            .checks
            .iter()
            .filter(|c| !exclude.contains(&c.config.name))
            .map(|c| view(&c.config, latest.get(&c.config.name)))
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// The view of one check, if it exists.
    pub fn view(&self, name: &str) -> Option<CheckView> {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        let check = self.checks.iter().find(|c| c.config.name == name)?;
        Some(view(&check.config, latest.get(name)))
    }

    /// Names of every check.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().map(|c| c.config.name.as_str())
    }
}

fn view(config: &CheckConfig, latest: Option<&Latest>) -> CheckView {
    let mut v = CheckView {
        name: config.name.clone(),
        critical: config.critical,
        healthy: false,
        status: "fail",
        outcome: None,
        message: Some("not checked yet".to_owned()),
        latency_ms: None,
        age_seconds: None,
        finished: None,
    };
    let Some(latest) = latest else { return v };
    let age = latest.at.elapsed();
    let report = &latest.report;
    v.outcome = Some(report.outcome.label());
    v.age_seconds = Some(round2(age.as_secs_f64()));
    v.finished = Some(latest.finished);
    v.latency_ms = latency_ms(report);
    if age > config.max_age {
        v.message = Some(format!(
            "stale: last result is {} old",
            humantime::format_duration(whole_seconds(age))
        ));
        return v;
    }
    v.healthy = report.outcome.is_healthy();
    v.status = match report.outcome {
        Outcome::Pass => "pass",
        Outcome::Warn => "warn",
        _ => "fail",
    };
    v.message = report.message.clone();
    v
}

/// The latency a check measured itself (a `*_latency_seconds` sample), in ms.
fn latency_ms(report: &RunReport) -> Option<f64> {
    report
        .samples
        .iter()
        .find(|s| s.name.ends_with("_latency_seconds") && s.labels.is_empty())
        .map(|s| round2(s.value * 1000.0))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Whether the checks add up to healthy: every critical one passes or warns.
pub fn healthy(views: &[CheckView]) -> bool {
    views.iter().filter(|v| v.critical).all(|v| v.healthy)
}

/// The seed's format: `{"status": "healthy"|"unhealthy", "checks": {name: {healthy,
/// message, latency_ms, ...}}}`. Without `details`, messages are null.
pub fn seed_json(views: &[CheckView], details: bool) -> Value {
    let checks: serde_json::Map<String, Value> = views
        .iter()
        .map(|v| (v.name.clone(), seed_check(v, details)))
        .collect();
    json!({
        "status": if healthy(views) { "healthy" } else { "unhealthy" },
        "checks": checks,
    })
}

/// One check in the seed's format, plus the host's extra fields.
pub fn seed_check(v: &CheckView, details: bool) -> Value {
    json!({
        "healthy": v.healthy,
        "message": if details { v.message.clone() } else { None },
        "latency_ms": v.latency_ms,
        "status": v.status,
        "outcome": v.outcome,
        "critical": v.critical,
        "age_seconds": v.age_seconds,
    })
}

/// The IETF draft format (draft-inadarei-api-health-check-06), `application/health+json`.
pub fn ietf_json(views: &[CheckView], details: bool) -> Value {
    let overall = if !healthy(views) {
        "fail"
    } else if views.iter().any(|v| v.status == "warn") {
        "warn"
    } else {
        "pass"
    };
    let mut checks = serde_json::Map::new();
    for v in views {
        let mut entry = json!({
            "componentId": v.name,
            "status": v.status,
            "affectsServiceHealth": v.critical,
        });
        if let Some(ms) = v.latency_ms {
            entry["observedValue"] = json!(ms);
            entry["observedUnit"] = json!("ms");
        }
        if let Some(finished) = v.finished {
            entry["time"] = json!(humantime::format_rfc3339_millis(finished).to_string());
        }
        // The draft keeps `output` for warn and fail.
        if details
            && v.status != "pass"
            && let Some(message) = &v.message
        {
            entry["output"] = json!(message);
        }
        checks.insert(format!("{}:responseTime", v.name), json!([entry]));
    }
    json!({
        "status": overall,
        "description": "healthhost",
        "checks": checks,
    })
}
