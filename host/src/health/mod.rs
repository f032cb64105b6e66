//! Health: the set of checks, background scheduling of every check, the latest
//! results, aggregation, and the two response formats (the AdtroBot plan's JSON and the IETF
//! health check draft).
//!
//! The set of checks can be replaced while the host runs ([`Health::apply`], for
//! drop-ins): handlers read one snapshot of the set, so a request in flight during a
//! reload is answered from a consistent set. Each loaded check runs on its own
//! interval (first run at once) under a cap on runs in flight, scheduled on the
//! plugin threads where its runs happen; a result is recorded
//! only while its check is still the current version. HTTP handlers read the latest
//! results and never wait on a plugin — except for on-demand checks
//! ([`Health::refresh`]), which run when asked for once their result is older than
//! their interval, with concurrent requests merged into one run. A result older than its check's
//! `max_age` counts as failed ("stale"). Readiness: every critical check has a result.
//! Each recorded result also goes into the check's [`History`] (the last day, or the
//! last 1,440 results), which goes when the check is removed.

pub mod dropins;
pub mod folder;
pub mod history;
pub mod load;
pub mod slo;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::alerts::Alerts;
use crate::config::{CheckConfig, Source};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::runtime::{LoadError, Outcome, Plugin, RunReport, Runner, Runtime};
use crate::sync::{lock, read, write};
use history::History;

/// How long a finished load waits to enter the set with the others finishing
/// meanwhile: each new set copies the whole set and is compared with the one before,
/// so a thousand plugins loading at start-up must not make a thousand sets.
pub const LOAD_BATCH: Duration = Duration::from_millis(10);

/// A check that is loaded: its config and its compiled plugin.
pub struct Check {
    pub config: CheckConfig,
    pub plugin: Arc<Plugin>,
    /// Held by the one request that runs an on-demand check; the others wait for its
    /// result instead of starting runs of their own.
    gate: tokio::sync::Mutex<()>,
}

impl Check {
    pub fn new(config: CheckConfig, plugin: Plugin) -> Check {
        Check {
            config,
            plugin: Arc::new(plugin),
            gate: tokio::sync::Mutex::new(()),
        }
    }
}

/// One named check of the set: the version that runs, if any, and why the last
/// attempt to load it failed, if it did.
#[derive(Clone)]
pub struct Entry {
    pub source: Source,
    /// The plugin file.
    pub file: PathBuf,
    /// Whether its failure makes `/health` 503 (from the running version, or from the
    /// grant file of a version that failed to load).
    pub critical: bool,
    /// The version that runs; a failed reload keeps the previous one here.
    pub check: Option<Arc<Check>>,
    /// Why the newest file could not be loaded.
    pub load_error: Option<Arc<LoadError>>,
    /// The load of the newest file in progress, if one is: only its result may
    /// replace this entry (a newer file starts a newer load).
    pub loading: Option<u64>,
}

impl Entry {
    /// Whether this entry runs the same version as `other` and fails to load alike:
    /// all that [`Health::apply`] acts on.
    fn acts_like(&self, other: &Entry) -> bool {
        let same_check = match (&self.check, &other.check) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        same_check && self.load_error.is_some() == other.load_error.is_some()
    }

    /// An entry for a check that loaded.
    pub fn loaded(check: Check) -> Entry {
        Entry {
            source: check.config.source,
            file: check.config.plugin.clone(),
            critical: check.config.critical,
            check: Some(Arc::new(check)),
            load_error: None,
            loading: None,
        }
    }
}

/// Every check by name, and dropped-in files that could not become one.
#[derive(Clone, Default)]
pub struct CheckSet {
    pub entries: BTreeMap<String, Entry>,
    /// Files of the plugins folder refused before loading (a name clash), with why.
    pub rejected: BTreeMap<PathBuf, String>,
}

/// The latest result of one check.
#[derive(Clone)]
struct Latest {
    report: RunReport,
    finished: SystemTime,
    at: Instant,
}

/// The check set, the latest results, and the scheduler's shared state.
pub struct Health {
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    set: RwLock<Arc<CheckSet>>,
    /// The set's loaded on-demand checks: what every `/health` request looks through,
    /// found once per set instead of in all of a thousand checks per request.
    on_demand: RwLock<Arc<[Arc<Check>]>>,
    latest: RwLock<BTreeMap<String, Latest>>,
    /// The recent results of each check that has any.
    history: Mutex<BTreeMap<String, History>>,
    /// The scheduling task of each running check version.
    tasks: Mutex<BTreeMap<String, (Arc<Check>, AbortHandle)>>,
    /// Run slots: critical checks have their own, so no number of slow or hanging
    /// non-critical checks can delay a critical one (and the pool holds both).
    runs: Semaphore,
    critical_runs: Semaphore,
    shutting_down: AtomicBool,
    /// Held while a change of the set is computed and applied, so that changes made
    /// from different tasks (the folder watcher, finished loads) never undo each other.
    editing: Mutex<()>,
    /// Finished loads waiting to enter the set: name, load id and new entry.
    finished: Mutex<Vec<(String, u64, Entry)>>,
    /// When the host started, and how long after that a critical check still loading
    /// does not count as failing.
    started: Instant,
    startup_grace: Duration,
    /// Where each recorded result also goes, when history is kept in a store.
    journal: Option<Arc<Journal>>,
    /// Alerting's evaluator, when rules are configured.
    alerts: Option<Arc<Alerts>>,
}

/// Where a check stands, as health decides it. Responses put it into words at the
/// edges (`wire`, the status page); nothing decides a state from its words.
#[derive(Debug, Clone)]
pub enum CheckState {
    /// Its plugin is being compiled, and no version of it runs yet.
    Loading,
    /// No version of it runs: its plugin did not load, for this reason.
    NotLoaded(Arc<LoadError>),
    /// A version runs, with no result yet.
    NotRun,
    /// Its latest result is older than its `max_age`: the outcome no longer counts.
    Stale { outcome: Outcome, age: Duration },
    /// Its latest result, current.
    Reported(Outcome),
}

/// One check as a response shows it.
pub struct CheckView {
    pub name: String,
    pub critical: bool,
    pub healthy: bool,
    pub state: CheckState,
    /// The latest run's own message, while its result is current.
    pub message: Option<String>,
    pub latency_ms: Option<f64>,
    pub age_seconds: Option<f64>,
    pub finished: Option<SystemTime>,
    /// Why its newest file did not load (an older version may still run).
    pub load_error: Option<Arc<LoadError>>,
    /// Still loading within the start-up grace: not counted as failing.
    pub pending: bool,
    /// The manifest digest of the running plugin, when it came by OCI reference.
    pub digest: Option<String>,
}

impl Health {
    /// Health with no checks yet, runs capped at `max_concurrent_runs` (that many
    /// critical ones besides, in slots of their own); a critical
    /// check still loading within `startup_grace` of now does not count as failing.
    pub fn new(
        runtime: Arc<Runtime>,
        metrics: Arc<Metrics>,
        max_concurrent_runs: usize,
        startup_grace: Duration,
    ) -> Health {
        Health {
            runtime,
            metrics,
            set: RwLock::default(),
            on_demand: RwLock::new(Arc::new([])),
            latest: RwLock::default(),
            history: Mutex::default(),
            tasks: Mutex::default(),
            runs: Semaphore::new(max_concurrent_runs),
            critical_runs: Semaphore::new(max_concurrent_runs),
            shutting_down: AtomicBool::new(false),
            editing: Mutex::default(),
            finished: Mutex::default(),
            started: Instant::now(),
            startup_grace,
            journal: None,
            alerts: None,
        }
    }

    /// The same, with every recorded result also queued for the history store.
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Health {
        self.journal = Some(journal);
        self
    }

    /// The same, with every recorded result also evaluated by alerting's rules.
    pub fn with_alerts(mut self, alerts: Arc<Alerts>) -> Health {
        self.alerts = Some(alerts);
        self
    }

    /// Computes the next set from the current one with `change` and applies it, unless
    /// `change` returns `None`; no other change runs in between.
    pub fn edit<R>(
        self: &Arc<Self>,
        change: impl FnOnce(&CheckSet) -> Option<(CheckSet, R)>,
    ) -> Option<R> {
        let _editing = lock(&self.editing);
        let (next, result) = change(&self.set())?;
        self.apply(next);
        Some(result)
    }

    /// Puts the result of load `load` in place within [`LOAD_BATCH`], with those of
    /// the other loads that finished meanwhile, each if its load is still the newest
    /// of its check (a newer file, or the check's removal, discards it).
    pub fn finish_load(self: &Arc<Self>, name: String, load: u64, entry: Entry) {
        let first = {
            let mut finished = lock(&self.finished);
            finished.push((name, load, entry));
            finished.len() == 1
        };
        if !first {
            return;
        }
        let health = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LOAD_BATCH).await;
            health.edit(|current| {
                let mut next: Option<CheckSet> = None;
                for (name, load, entry) in std::mem::take(&mut *lock(&health.finished)) {
                    if current.entries.get(&name).and_then(|e| e.loading) == Some(load) {
                        let next = next.get_or_insert_with(|| current.clone());
                        next.entries.insert(name, entry);
                    }
                }
                next.map(|next| (next, ()))
            });
        });
    }

    /// Checks whose newest file is still loading, of all checks.
    pub fn loading(&self) -> (usize, usize) {
        let set = self.set();
        let loading = set.entries.values().filter(|e| e.loading.is_some()).count();
        (loading, set.entries.len())
    }

    /// The current set of checks.
    pub fn set(&self) -> Arc<CheckSet> {
        read(&self.set).clone()
    }

    /// Makes `set` the current set in one step, then starts the versions that are new,
    /// stops those that are gone or replaced, and forgets the results and metrics of
    /// removed checks. Entries whose running version and load failure did not change
    /// are left as they are.
    pub fn apply(self: &Arc<Self>, set: CheckSet) {
        let set = Arc::new(set);
        let previous = std::mem::replace(&mut *write(&self.set), set.clone());
        *write(&self.on_demand) = set
            .entries
            .values()
            .filter_map(|e| e.check.as_ref())
            .filter(|c| c.config.on_demand)
            .cloned()
            .collect();
        let mut tasks = lock(&self.tasks);
        tasks.retain(|name, (check, task)| {
            let current = set.entries.get(name).and_then(|e| e.check.as_ref());
            let keep = current.is_some_and(|c| Arc::ptr_eq(c, check));
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, entry) in &set.entries {
            if previous
                .entries
                .get(name)
                .is_some_and(|p| p.acts_like(entry))
            {
                continue;
            }
            self.metrics
                .plugins
                .load_failing
                .with_label_values(&[name.as_str()])
                .set(i64::from(entry.load_error.is_some()));
            let Some(check) = &entry.check else {
                self.metrics
                    .plan
                    .health_check_status
                    .with_label_values(&[name.as_str()])
                    .set(0);
                continue;
            };
            if tasks.contains_key(name) || check.config.on_demand {
                continue;
            }
            if !self.has_result(name) {
                self.metrics
                    .plan
                    .health_check_status
                    .with_label_values(&[name.as_str()])
                    .set(0);
            }
            let (health, scheduled) = (self.clone(), check.clone());
            let task = self
                .runtime
                .spawn(|runner| health.schedule(runner, scheduled));
            tasks.insert(name.clone(), (check.clone(), task.abort_handle()));
        }
        self.metrics.changed();
        drop(tasks);
        write(&self.latest).retain(|name, _| {
            let keep = set.entries.contains_key(name);
            if !keep {
                self.metrics.forget(name);
            }
            keep
        });
        lock(&self.history).retain(|name, _| set.entries.contains_key(name));
    }

    fn has_result(&self, name: &str) -> bool {
        read(&self.latest).contains_key(name)
    }

    /// Runs `check` on its interval until aborted, on the plugin threads: the runs
    /// happen in place, and only recording a result touches what HTTP handlers read.
    async fn schedule(self: Arc<Self>, runner: Runner, check: Arc<Check>) {
        let mut ticker = tokio::time::interval(check.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.run_once(&check, runner.run(&check.plugin)).await;
        }
    }

    /// Runs the on-demand checks whose name `wanted` accepts and whose result is
    /// missing or older than their interval, concurrently; a request that finds a run
    /// of the same check in progress waits for its result. Failures are reused like
    /// passes.
    pub async fn refresh(&self, wanted: impl Fn(&str) -> bool) {
        let on_demand = read(&self.on_demand).clone();
        let due = on_demand
            .iter()
            .filter(|c| wanted(&c.config.name))
            .map(|check| async move {
                let _gate = check.gate.lock().await;
                if !self.fresh(&check.config.name, check.config.interval) {
                    self.run_once(check, self.runtime.run(&check.plugin)).await;
                }
            });
        futures_util::future::join_all(due).await;
    }

    /// Whether check `name` is still waiting for load `id`: neither a newer load nor
    /// a removal has replaced it.
    pub fn is_loading(&self, name: &str, id: u64) -> bool {
        self.set()
            .entries
            .get(name)
            .is_some_and(|e| e.loading == Some(id))
    }

    fn fresh(&self, name: &str, ttl: Duration) -> bool {
        let latest = read(&self.latest);
        latest.get(name).is_some_and(|l| l.at.elapsed() < ttl)
    }

    /// Stops every check's schedule.
    pub fn stop(&self) {
        let mut tasks = lock(&self.tasks);
        for (_, (_, task)) in std::mem::take(&mut *tasks) {
            task.abort();
        }
    }

    /// Runs `check` once with `run` (after waiting for a free run slot of its kind,
    /// critical or not) and records
    /// the result, unless the check was replaced or removed meanwhile.
    async fn run_once(&self, check: &Arc<Check>, run: impl Future<Output = RunReport>) {
        let mut report = {
            let slots = if check.config.critical {
                &self.critical_runs
            } else {
                &self.runs
            };
            let _permit = slots
                .acquire()
                .await
                .expect("the semaphore is never closed");
            run.await
        };
        report.judge_thresholds(&check.config.thresholds);
        let name = &check.config.name;
        let set = self.set();
        let current = set.entries.get(name).and_then(|e| e.check.as_ref());
        if !current.is_some_and(|c| Arc::ptr_eq(c, check)) {
            return;
        }
        let finished = SystemTime::now();
        let unix = finished
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.metrics.record_run(
            &report,
            &check.config.grants.metrics,
            report.outcome.is_healthy(),
            unix,
        );
        // The page's sparkline needs a point for every run: the run's own duration
        // when the check measures no latency of its own.
        let latency = latency_ms(&report).or(Some(round2(report.latency.as_secs_f64() * 1000.0)));
        self.remember(&check.config, finished, &report, latency);
        let latest = Latest {
            report,
            finished,
            at: Instant::now(),
        };
        write(&self.latest).insert(name.clone(), latest);
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
        let set = self.set();
        let latest = read(&self.latest);
        set.entries
            .iter()
            .filter(|(_, e)| e.critical)
            .all(|(name, _)| latest.contains_key(name))
    }

    /// Views of every check not in `exclude`, in name order.
    pub fn views(&self, exclude: &[String]) -> Vec<CheckView> {
        let set = self.set();
        let latest = read(&self.latest);
        let grace = self.in_grace();
        set.entries
            .iter()
            .filter(|(name, _)| !exclude.contains(name))
            .map(|(name, entry)| view(name, entry, latest.get(name), grace))
            .collect()
    }

    fn in_grace(&self) -> bool {
        self.started.elapsed() < self.startup_grace
    }

    /// The view of one check, if it exists.
    pub fn view(&self, name: &str) -> Option<CheckView> {
        let set = self.set();
        let entry = set.entries.get(name)?;
        let latest = read(&self.latest);
        Some(view(name, entry, latest.get(name), self.in_grace()))
    }
}

fn view(name: &str, entry: &Entry, latest: Option<&Latest>, grace: bool) -> CheckView {
    let mut v = CheckView {
        name: name.to_owned(),
        critical: entry.critical,
        healthy: false,
        state: CheckState::NotRun,
        message: None,
        latency_ms: None,
        age_seconds: None,
        finished: None,
        load_error: entry.load_error.clone(),
        pending: false,
        digest: entry
            .check
            .as_ref()
            .and_then(|c| c.config.oci.as_ref()?.digest.clone()),
    };
    let Some(config) = entry.check.as_ref().map(|c| &c.config) else {
        if entry.loading.is_some() {
            v.state = CheckState::Loading;
            v.pending = grace;
        } else if let Some(error) = &entry.load_error {
            v.state = CheckState::NotLoaded(error.clone());
        }
        return v;
    };
    let Some(latest) = latest else { return v };
    let age = latest.at.elapsed();
    let report = &latest.report;
    v.age_seconds = Some(round2(age.as_secs_f64()));
    v.finished = Some(latest.finished);
    v.latency_ms = latency_ms(report);
    if age > config.max_age {
        v.state = CheckState::Stale {
            outcome: report.outcome,
            age,
        };
        return v;
    }
    v.healthy = report.outcome.is_healthy();
    v.state = CheckState::Reported(report.outcome);
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

/// Whether the checks add up to healthy: every critical one passes or warns, or is
/// still loading within the start-up grace.
pub fn healthy(views: &[CheckView]) -> bool {
    views
        .iter()
        .filter(|v| v.critical && !v.pending)
        .all(|v| v.healthy)
}
