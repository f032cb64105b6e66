//! Loading checks into a [`CheckSet`]: the config file's checks, and the plugins folder
//! (drop-ins) with its grant files, watched while the host runs.
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
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Config, Problem, Source};
use crate::health::{Check, CheckSet, Entry, Health};
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// How long a plugin or grant file must be unchanged before it is loaded: long enough
/// for a copy in progress to show a new size or modification time at the next scan.
pub const SETTLE_TIME: Duration = Duration::from_millis(500);

/// Loads every check of the config file: the set, and a message per check that did
/// not load (such a check is in the set with its error, not running).
pub fn configured(config: &Config, runtime: &Runtime) -> (CheckSet, Vec<String>) {
    let mut set = CheckSet::default();
    let mut errors = Vec::new();
    for check in &config.checks {
        let loaded = runtime.load_file(
            &check.name,
            &check.plugin,
            check.sha256.as_deref(),
            check.grants.clone(),
            check.limits,
        );
        let entry = match loaded {
            Ok(plugin) => Entry::loaded(Check::new(check.clone(), plugin)),
            Err(e) => {
                errors.push(e.to_string());
                Entry {
                    source: Source::Config,
                    file: check.plugin.clone(),
                    critical: check.critical,
                    check: None,
                    load_error: Some(e.to_string()),
                }
            }
        };
        set.entries.insert(check.name.clone(), entry);
    }
    (set, errors)
}

/// Size and modification time: what tells a changed file from the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
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
struct Found {
    wasm: PathBuf,
    grants: PathBuf,
    /// The plugin file's and the grant file's fingerprints.
    print: (Fingerprint, Option<Fingerprint>),
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
    runtime: Arc<Runtime>,
    metrics: Option<Arc<Metrics>>,
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
    /// The folder of `config`; load failures are counted in `metrics` when given.
    pub fn new(
        config: Arc<Config>,
        runtime: Arc<Runtime>,
        metrics: Option<Arc<Metrics>>,
    ) -> Folder {
        Folder {
            config,
            runtime,
            metrics,
            seen: BTreeMap::new(),
        }
    }

    /// The set that follows `current` given the folder's contents now, or `None` when
    /// nothing changed. Compiling runs on a blocking thread.
    pub async fn next(&mut self, current: &CheckSet, scan: Scan) -> Option<CheckSet> {
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

        let loads: Vec<(String, Found)> = to_load
            .iter()
            .map(|(name, file, _)| (name.clone(), file.clone()))
            .collect();
        let (config, runtime) = (self.config.clone(), self.runtime.clone());
        let results = tokio::task::spawn_blocking(move || {
            loads
                .iter()
                .map(|(name, file)| load_drop_in(&config, &runtime, name, file))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for ((name, file, previous), result) in to_load.into_iter().zip(results) {
            self.seen.insert(name.clone(), file.print);
            let entry = match result {
                Ok(check) => {
                    tracing::info!(check = %name, sha256 = %check.plugin.sha256(), "loaded plugin from the plugins folder");
                    if let Some(m) = &self.metrics {
                        m.plugin_loads.with_label_values(&[name.as_str()]).inc();
                    }
                    Entry::loaded(check)
                }
                Err(error) => self.failed(&name, &file, previous, error),
            };
            next.entries.insert(name, entry);
        }
        Some(next)
    }

    /// The entry of a check whose new file did not load: its previous version, if any,
    /// with the error.
    fn failed(&self, name: &str, file: &Found, previous: Option<Entry>, error: String) -> Entry {
        let keeps = previous.as_ref().is_some_and(|p| p.check.is_some());
        tracing::warn!(
            check = %name,
            %error,
            "plugin not loaded; {}",
            if keeps { "the previous version keeps running" } else { "the check has no running version" }
        );
        if let Some(m) = &self.metrics {
            m.plugin_load_errors.with_label_values(&[name]).inc();
        }
        let previous = previous.unwrap_or(Entry {
            source: Source::Folder,
            file: file.wasm.clone(),
            critical: false,
            check: None,
            load_error: None,
        });
        Entry {
            load_error: Some(error),
            ..previous
        }
    }
}

/// Reads the grant file (if any) and loads the plugin under it.
fn load_drop_in(
    config: &Config,
    runtime: &Runtime,
    name: &str,
    file: &Found,
) -> Result<Check, String> {
    let text = match file.print.1 {
        Some(_) => Some(
            std::fs::read_to_string(&file.grants)
                .map_err(|e| format!("cannot read {}: {e}", file.grants.display()))?,
        ),
        None => None,
    };
    let check = config
        .drop_in(name, file.wasm.clone(), text.as_deref(), |v| {
            std::env::var(v).ok()
        })
        .map_err(|problems| grant_problems(&file.grants, &problems))?;
    let plugin = runtime
        .load_file(
            name,
            &file.wasm,
            check.sha256.as_deref(),
            check.grants.clone(),
            check.limits,
        )
        .map_err(|e| e.to_string())?;
    Ok(Check::new(check, plugin))
}

fn grant_problems(path: &Path, problems: &[Problem]) -> String {
    let list: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect();
    format!("invalid grant file: {}", list.join("; "))
}

/// Rescans the plugins folder every `interval`, and at once on SIGHUP (which also
/// retries files whose last load failed), swapping each new set into `health`.
pub async fn watch(mut folder: Folder, health: Arc<Health>, interval: Duration) {
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
        if let Some(set) = folder.next(&health.set(), scan).await {
            health.apply(set);
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
