//! Loading checks into a [`CheckSet`]: the config file's checks, and the plugins folder
//! (drop-ins) with its grant files, watched while the host runs.
//!
//! A scan decides what to load and marks those entries `loading` at once; the
//! [`Loader`] compiles them in parallel (at most `compile_concurrency` at a time), and
//! each enters the running set as soon as it is ready, so a slow plugin never holds
//! back the others, and `serve` answers while they compile.
//!
//! What the folder holds, and when a file is loaded again, is `folder`'s. A file that
//! fails to load (invalid wasm, another world, a bad grant file, a hash that does not
//! match its pin, a plugin by OCI reference that fails verification) leaves the
//! previous version of that check running and is reported; a file that is gone takes
//! its check with it. The next set is computed aside and swapped in whole.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::health::folder::{Folder, Scan};
use crate::health::load::{Load, What};
use crate::health::{Check, CheckSet, Entry, Health};
use crate::metrics::Metrics;
use crate::runtime::{LoadError, Runtime};
use crate::sync::lock;

/// How long a plugin or grant file must be unchanged before it is loaded: long enough
/// for a copy in progress to show a new size or modification time at the next scan.
pub const SETTLE_TIME: Duration = Duration::from_millis(500);

/// Plugins read and waiting for a compile slot, per slot: enough that a compile never
/// waits for a read, few enough that a thousand files (a Python plugin is ~40 MB) are
/// never all in memory at once, nor read by a thousand threads.
pub const READ_AHEAD: usize = 2;

/// How often the log reports the progress of a batch of loads.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Says whether a load is still wanted: not replaced by a newer load of its check,
/// nor its check removed.
type Wanted = Box<dyn Fn() -> bool + Send + Sync>;

/// Runs `work` on a blocking thread; its panic goes on in the caller.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The config file's checks, each marked loading, and their loads.
pub fn configured(config: &Config) -> (CheckSet, Vec<Load>) {
    let mut set = CheckSet::default();
    let loads: Vec<Load> = config
        .checks
        .iter()
        .map(|c| {
            Load::new(
                c.name.clone(),
                What::Config(Box::new(c.clone())),
                c.critical,
                None,
            )
        })
        .collect();
    for load in &loads {
        set.entries.insert(load.name.clone(), load.pending());
    }
    (set, loads)
}

/// Compiles loads on blocking threads, at most `concurrency` at a time, and reports
/// their progress.
pub struct Loader {
    runtime: Arc<Runtime>,
    /// The store plugins by OCI reference are fetched and verified from.
    oci: Option<Arc<crate::oci::Oci>>,
    metrics: Option<Arc<Metrics>>,
    /// Compile slots.
    permits: Arc<Semaphore>,
    /// Loads that may hold their plugin in memory: read, compiling, or between.
    in_hand: Arc<Semaphore>,
    progress: Mutex<Progress>,
}

/// The loads since the last time none was pending.
#[derive(Default)]
struct Progress {
    started: Option<Instant>,
    total: usize,
    done: usize,
}

impl Loader {
    pub fn new(
        runtime: Arc<Runtime>,
        oci: Option<Arc<crate::oci::Oci>>,
        metrics: Option<Arc<Metrics>>,
        concurrency: usize,
    ) -> Arc<Loader> {
        let concurrency = concurrency.max(1);
        Arc::new(Loader {
            runtime,
            oci,
            metrics,
            permits: Arc::new(Semaphore::new(concurrency)),
            in_hand: Arc::new(Semaphore::new(concurrency * (1 + READ_AHEAD))),
            progress: Mutex::default(),
        })
    }

    /// Starts `loads`; each result replaces its entry in `health` when ready.
    pub fn spawn(self: &Arc<Self>, mut loads: Vec<Load>, health: Arc<Health>) {
        if loads.is_empty() {
            return;
        }
        // Permits are granted in order: small plugins never queue behind big ones.
        loads.sort_by_cached_key(Load::size);
        if self.begin(loads.len()) {
            tokio::spawn(self.clone().report_progress());
        }
        for load in loads {
            let (loader, health) = (self.clone(), health.clone());
            let wanted: Wanted = {
                let (health, name, id) = (health.clone(), load.name.clone(), load.id);
                Box::new(move || health.is_loading(&name, id))
            };
            tokio::spawn(async move {
                let (name, id, entry) = loader.load(load, wanted).await;
                health.finish_load(name, id, entry);
            });
        }
    }

    /// Runs `loads` and returns every result (for `validate` and `list`).
    pub async fn load_all(self: &Arc<Self>, mut loads: Vec<Load>) -> Vec<(String, Entry)> {
        self.begin(loads.len());
        loads.sort_by_cached_key(Load::size);
        let mut tasks = tokio::task::JoinSet::new();
        for load in loads {
            let loader = self.clone();
            tasks.spawn(async move { loader.load(load, Box::new(|| true)).await });
        }
        let mut entries = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok((name, _, entry)) = done {
                entries.push((name, entry));
            }
        }
        entries
    }

    /// Counts `n` more loads; whether they start a new batch.
    fn begin(&self, n: usize) -> bool {
        let mut p = lock(&self.progress);
        let new = p.done == p.total;
        if new {
            *p = Progress {
                started: Some(Instant::now()),
                ..Progress::default()
            };
        }
        p.total += n;
        self.set_pending(p.total - p.done);
        new
    }

    /// Sets the pending gauge; called after each load, it also publishes that load's
    /// counters (loads, load errors, compile cache lookups).
    fn set_pending(&self, pending: usize) {
        if let Some(m) = &self.metrics {
            m.plugins
                .loads_pending
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            m.changed();
        }
    }

    /// Reads one plugin once few enough are in hand, then compiles it when a slot is
    /// free, while `wanted`: its name, load id and new entry.
    async fn load(self: Arc<Self>, mut load: Load, wanted: Wanted) -> (String, u64, Entry) {
        // A pull waits on the network, not on a slot: other loads go on meanwhile.
        let fetched = match load.oci() {
            Some(reference) => Some(self.fetch(&load.name, reference, &wanted).await),
            None => None,
        };
        let in_hand = self.in_hand.clone().acquire_owned().await;
        let (load, read) = match fetched {
            Some(Err(e)) => (load, Err(e)),
            fetched => {
                load.fetched = fetched.and_then(Result::ok);
                blocking(move || {
                    let read = load.read();
                    (load, read)
                })
                .await
            }
        };
        let result = match read {
            Ok((check, wasm)) => {
                let permit = self.permits.clone().acquire_owned().await;
                let runtime = self.runtime.clone();
                // Compiles (blocking CPU) while `wanted`.
                let result = blocking(move || {
                    let (grants, settings) = (check.grants.clone(), check.settings.clone());
                    let plugin = runtime.load_while(
                        &check.name,
                        &wasm,
                        grants,
                        settings,
                        check.limits,
                        &wanted,
                    );
                    plugin.map(|p| Check::new(check, p)).map_err(Arc::new)
                })
                .await;
                drop(permit);
                result
            }
            Err(e) => Err(e),
        };
        drop(in_hand);
        let entry = match result {
            Ok(check) => {
                if matches!(load.what, What::Folder(..)) {
                    tracing::info!(check = %load.name, sha256 = %check.plugin.sha256(), "loaded plugin from the plugins folder");
                    if let Some(m) = &self.metrics {
                        m.plugins
                            .loads
                            .with_label_values(&[load.name.as_str()])
                            .inc();
                    }
                }
                Entry::loaded(check)
            }
            Err(error) => self.failed(&load, error),
        };
        let mut p = lock(&self.progress);
        p.done += 1;
        self.set_pending(p.total - p.done);
        (load.name, load.id, entry)
    }

    /// The verified component of the plugin at `reference`; `serve`'s store waits out
    /// a registry it cannot reach while the load is `wanted`.
    async fn fetch(
        &self,
        name: &str,
        reference: &crate::oci::Reference,
        wanted: &Wanted,
    ) -> Result<crate::oci::Fetched, Arc<LoadError>> {
        let error = |reason: String| {
            Arc::new(LoadError::Oci {
                check: name.to_owned(),
                reason,
            })
        };
        let oci = self.oci.as_ref().ok_or_else(|| {
            error(format!(
                "{reference}: no [trust] entry of the config covers it; add one and restart"
            ))
        })?;
        let fetched = oci
            .fetch_waiting(reference, wanted)
            .await
            .map_err(|e| error(e.to_string()))?;
        tracing::info!(check = %name, digest = %fetched.digest, signed_by = %fetched.signed_by.as_ref().map_or("nobody (unsigned allowed)".to_owned(), ToString::to_string), "verified plugin {reference}");
        Ok(fetched)
    }

    /// The entry of a check whose new file did not load: its previous version, if any,
    /// with the error.
    fn failed(&self, load: &Load, error: Arc<LoadError>) -> Entry {
        let name = load.name.as_str();
        let keeps = load.previous.as_ref().is_some_and(|p| p.check.is_some());
        tracing::warn!(
            check = %name,
            %error,
            "plugin not loaded; {}",
            if keeps { "the previous version keeps running" } else { "the check has no running version" }
        );
        if let Some(m) = &self.metrics {
            m.plugins.load_errors.with_label_values(&[name]).inc();
        }
        Entry {
            load_error: Some(error),
            loading: None,
            ..load.previous.clone().unwrap_or_else(|| load.pending())
        }
    }

    /// Logs the batch's progress every [`PROGRESS_EVERY`] while it lasts, then its
    /// total.
    async fn report_progress(self: Arc<Self>) {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let p = lock(&self.progress);
            let elapsed = p.started.map_or(Duration::ZERO, |s| s.elapsed());
            if p.done == p.total {
                tracing::info!(
                    "loaded {} plugin(s) in {}",
                    p.total,
                    humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64))
                );
                return;
            }
            let rate = p.done as f64 / elapsed.as_secs_f64().max(0.001);
            let left = if p.done == 0 {
                "unknown".to_owned()
            } else {
                let seconds = (p.total - p.done) as f64 / rate;
                humantime::format_duration(Duration::from_secs(seconds.ceil() as u64)).to_string()
            };
            tracing::info!(
                "loading plugins: {} of {} done ({rate:.1}/s, about {left} left)",
                p.done,
                p.total
            );
        }
    }
}

/// Rescans the plugins folder every `interval`, and at once on SIGHUP (which also
/// retries files whose last load failed), marking what changed as loading in `health`
/// and handing the loads to `loader`.
pub async fn watch(
    mut folder: Folder,
    loader: Arc<Loader>,
    health: Arc<Health>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = hangups();
    loop {
        let retry_failed = tokio::select! {
            _ = ticker.tick() => false,
            () = next_hangup(&mut hangup) => {
                tracing::info!("SIGHUP: reloading the plugins folder");
                true
            }
        };
        let scan = Scan {
            retry_failed,
            settle: SETTLE_TIME,
        };
        if let Some(loads) = health.edit(|current| folder.scan(current, scan)) {
            loader.spawn(loads, health.clone());
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(
            |e| tracing::warn!(error = %e, "cannot listen for SIGHUP; the folder is still watched"),
        )
        .ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

/// Resolves at the next SIGHUP; never where there are none.
async fn next_hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        signal.recv().await;
        return;
    }
    let _ = hangups;
    std::future::pending::<()>().await
}
