//! Loading checks into a [`CheckSet`]: the config file's checks, and the plugins folder
//! (drop-ins) with its grant files, watched while the host runs.
//!
//! A scan decides what to load and marks those entries `loading` at once; the
//! [`Loader`] compiles them in parallel (at most `compile_concurrency` at a time), and
//! each enters the running set as soon as it is ready, so a slow plugin never holds
//! back the others, and `serve` answers while they compile.
//!
//! Every `NAME.wasm` in the folder is a check named `NAME`; `NAME.toml` beside it holds
//! its grants, settings, limits, interval, critical flag and optional `sha256` pin, in
//! the schema of a `[checks.NAME]` table. A file is loaded once it has not changed for
//! [`SETTLE_TIME`] (so a file being copied in is not loaded half-written; dropping it in
//! by renaming a finished file is instant), and again whenever its size or
//! modification time, or its grant file's, changes. A file that fails to load (invalid
//! wasm, another world, a bad grant file, a hash that does not match its pin) leaves
//! the previous version of that check running and is reported; a file that is gone
//! takes its check with it. The next set is computed aside and swapped in whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use crate::config::{CheckConfig, Config, Source};
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
        let oci = self
            .oci
            .as_ref()
            .ok_or_else(|| error("plugins by OCI reference need the OCI store".to_owned()))?;
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

/// Size and modification time: what tells a changed file from the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) len: u64,
    modified: SystemTime,
}

impl Fingerprint {
    fn of(path: &Path) -> Option<Fingerprint> {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(Fingerprint {
            len: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    fn settled(&self, settle: Duration) -> bool {
        self.modified.elapsed().is_ok_and(|age| age >= settle)
    }
}

/// One dropped-in check as found on disk.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) wasm: PathBuf,
    pub(super) grants: PathBuf,
    /// The plugin file's and the grant file's fingerprints.
    pub(super) print: (Fingerprint, Option<Fingerprint>),
}

/// The `*.wasm` files of `dir` by stem; a folder that does not exist holds none.
fn scan_folder(dir: &Path) -> std::io::Result<BTreeMap<String, Found>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut found = BTreeMap::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let (Some(stem), Some(print)) = (
            path.file_stem().and_then(|s| s.to_str()),
            Fingerprint::of(&path),
        ) else {
            continue;
        };
        let grants = path.with_extension("toml");
        found.insert(
            stem.to_owned(),
            Found {
                print: (print, Fingerprint::of(&grants)),
                wasm: path,
                grants,
            },
        );
    }
    Ok(found)
}

/// The plugins folder of one config, and what was last attempted from it.
pub struct Folder {
    config: Arc<Config>,
    /// The fingerprints each check's last load attempt saw.
    seen: BTreeMap<String, (Fingerprint, Option<Fingerprint>)>,
}

/// How a scan treats files.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    /// Load files whose last attempt failed even if they did not change (SIGHUP).
    pub retry_failed: bool,
    /// How long a file must be unchanged to be loaded.
    pub settle: Duration,
}

impl Folder {
    /// The plugins folder of `config`.
    pub fn new(config: Arc<Config>) -> Folder {
        Folder {
            config,
            seen: BTreeMap::new(),
        }
    }

    /// The set that follows `current` given the folder's contents now, with the files
    /// to load marked loading, and their loads; `None` when nothing changed.
    pub fn scan(&mut self, current: &CheckSet, scan: Scan) -> Option<(CheckSet, Vec<Load>)> {
        let dir = &self.config.plugins_dir;
        let found = match scan_folder(dir) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(folder = %dir.display(), error = %e, "cannot read the plugins folder; keeping the current checks");
                return None;
            }
        };
        let mut next = CheckSet::default();
        let mut removed = false;
        for (name, entry) in &current.entries {
            if entry.source == Source::Config {
                next.entries.insert(name.clone(), entry.clone());
            } else if !found.contains_key(name) {
                tracing::info!(check = %name, "plugin file removed; check removed");
                removed = true;
            }
        }
        self.seen.retain(|name, _| found.contains_key(name));

        let mut to_load = Vec::new();
        for (name, file) in found {
            if next.entries.contains_key(&name) {
                let message = format!(
                    "a check named '{name}' is defined in the config file; rename this file"
                );
                if self.seen.insert(name, file.print) != Some(file.print) {
                    tracing::warn!(file = %file.wasm.display(), "{message}");
                }
                next.rejected.insert(file.wasm, message);
                continue;
            }
            let previous = current.entries.get(&name).cloned();
            let unchanged = self.seen.get(&name) == Some(&file.print);
            let failed = previous.as_ref().is_some_and(|e| e.load_error.is_some());
            let settled = file.print.0.settled(scan.settle)
                && file.print.1.is_none_or(|p| p.settled(scan.settle));
            if (unchanged && !(scan.retry_failed && failed)) || !settled {
                if let Some(previous) = previous {
                    next.entries.insert(name, previous);
                }
                continue;
            }
            to_load.push((name, file, previous));
        }
        if to_load.is_empty() && !removed && next.rejected == current.rejected {
            return None;
        }
        let loads: Vec<Load> = to_load
            .into_iter()
            .map(|(name, file, previous)| {
                self.seen.insert(name.clone(), file.print);
                // Critical as its grant file says, so that readiness waits for it.
                let check = load_grants(&self.config, &name, &file)
                    .map(Box::new)
                    .map_err(Arc::new);
                let critical = match &check {
                    Ok(c) => c.critical,
                    Err(_) => previous.as_ref().is_some_and(|p| p.critical),
                };
                Load::new(name, What::Folder(file, check), critical, previous)
            })
            .collect();
        for load in &loads {
            next.entries.insert(load.name.clone(), load.pending());
        }
        Some((next, loads))
    }
}

/// The check a dropped-in file makes under its grant file (if any).
fn load_grants(config: &Config, name: &str, file: &Found) -> Result<CheckConfig, LoadError> {
    let text =
        match file.print.1 {
            Some(_) => Some(std::fs::read_to_string(&file.grants).map_err(|error| {
                LoadError::GrantRead {
                    path: file.grants.display().to_string(),
                    error,
                }
            })?),
            None => None,
        };
    config
        .drop_in(name, file.wasm.clone(), text.as_deref(), |v| {
            std::env::var(v).ok()
        })
        .map_err(|problems| {
            let at = file.grants.display();
            let located: Vec<String> = problems.iter().map(|p| format!("{at}:{p}")).collect();
            LoadError::Grants {
                problems: located.join("; "),
            }
        })
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
