//! The configuration file: parsed with unknown keys rejected, then validated as a whole
//! so that every problem is reported at once with its file, line and key.
//!
//! Phase one (`RawConfig`) is the file as written (serde, `deny_unknown_fields`).
//! Phase two (`Config::from_raw`) resolves it: relative paths against the file's
//! folder, `${VAR}` values from the environment (such values are secrets), the
//! `DATABASE_URL` override of the `main` datasource, units, allowlists and limits.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::dburl::DatasourceSpec;
use crate::limits::Limits;
use crate::problems::{FileError, Problem, Problems, parse_toml};
use crate::thresholds::Threshold;

pub mod alerts;
mod check;
pub mod grants;
pub mod maintenance;
mod oci;
mod raw;
mod resolve;

use grants::{Grants, Settings};

pub use check::grant_file;
use raw::RawConfig;
use resolve::{
    details, listen_address, metric_namespace, resolve_checks, resolve_datasources,
    resolve_history, resolve_usage, run_and_compile_limits, timings,
};

/// Where the host listens when the file says nothing: loopback, so a first run exposes
/// nothing; set `listen = "0.0.0.0:8080"` for probes from outside the pod.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Metric namespace when the file says nothing: the AdtroBot bot's.
pub const DEFAULT_NAMESPACE: &str = "adtrobot";
/// How often a check runs when it says nothing.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// A result older than this many intervals (plus the timeout) is stale.
pub const STALE_AFTER_INTERVALS: u32 = 3;
/// Runs in flight at once across all checks, when the file says nothing.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 8;
/// Shortest interval: more often than this a health check only loads its dependency.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long after start a critical check whose plugin is still compiling does not make
/// `/health` fail: a cold start of a thousand small plugins on two cores compiles for
/// about two minutes (`/readyz` stays 503 until critical checks have run either way).
pub const DEFAULT_STARTUP_GRACE: Duration = Duration::from_secs(180);

/// Plugins compiled at once when the file says nothing: one per core, since a compile
/// keeps a core busy (wasmtime's own parallelism inside one compile fills the gaps).
pub fn default_compile_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// How long the host keeps serving after SIGTERM with `/readyz` at 503, when the file
/// says nothing: Kubernetes sends SIGTERM while endpoints still route to the pod, and
/// removing it takes a probe period or two, well within the 30 s grace period. SIGINT
/// (Ctrl-C in a terminal) does not wait.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);
/// The drop-in folder, relative to the config file, when the file says nothing.
pub const DEFAULT_PLUGINS_DIR: &str = "plugins.d";
/// How often the drop-in folder is scanned for changes when the file says nothing:
/// a new check shows up within a second, and a scan of an unchanged folder is a few
/// `stat` calls.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// The environment variable that overrides the `main` datasource's URL.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// The code generator that compiles plugins. Every one enforces fuel, epochs and
/// memory limits the same way; they trade compile time and memory against run speed
/// (BENCHMARKS.md, "Compilers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compiler {
    /// Cranelift, optimising: the fastest code, the slowest compile.
    #[default]
    Cranelift,
    /// Cranelift without optimisations: a faster compile, slower code.
    CraneliftUnoptimized,
    /// Winch, wasmtime's baseline compiler: the fastest compile, the slowest code.
    Winch,
}

impl Compiler {
    /// Its name, as the config file and the flag spell it.
    pub fn name(self) -> &'static str {
        match self {
            Compiler::Cranelift => "cranelift",
            Compiler::CraneliftUnoptimized => "cranelift-unoptimized",
            Compiler::Winch => "winch",
        }
    }
}

/// Who sees check messages in `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ShowDetails {
    /// Everyone (as the AdtroBot plan has it).
    #[default]
    Always,
    /// Nobody: statuses only.
    Never,
    /// Callers presenting `Authorization: Bearer <details_token>`.
    WhenAuthorized,
}

/// A resolved, valid configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub namespace: String,
    pub show_details: ShowDetails,
    pub details_token: Option<String>,
    pub max_concurrent_runs: usize,
    /// Plugins compiled at once; default: the machine's cores.
    pub compile_concurrency: usize,
    /// The code generator of every plugin.
    pub compiler: Compiler,
    /// The writable memory a plugin's compiler process may use, in bytes.
    pub compile_memory: u64,
    /// How long one plugin's compile may take before its compiler process is killed.
    pub compile_timeout: Duration,
    /// How long after start a critical check still loading does not count as failing.
    pub startup_grace: Duration,
    pub shutdown_delay: Duration,
    pub datasources: Vec<DatasourceSpec>,
    pub checks: Vec<CheckConfig>,
    /// The drop-in folder.
    pub plugins_dir: PathBuf,
    pub watch_interval: Duration,
    /// The compile cache's folder; `None` when turned off.
    pub cache_dir: Option<PathBuf>,
    pub usage: UsageConfig,
    pub history: HistoryConfig,
    pub alerts: alerts::AlertsConfig,
    /// Registries, trust and the mirror, for plugins by OCI reference.
    pub oci: crate::oci::settings::OciConfig,
}

/// Where a check comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A `[checks.NAME]` table of the config file.
    Config,
    /// A `.wasm` file in the plugins folder.
    Folder,
}

/// The `[usage]` section, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageConfig {
    /// The bearer token of `POST /v1/ai-usage`; `None` (no key, an unset variable or
    /// an empty value) turns the endpoint off.
    pub token: Option<String>,
    /// The bearer token of `GET /v1/usage/summary` (cost data: only this token reads
    /// it, not [`UsageConfig::token`]); `None` turns that endpoint off.
    pub read_token: Option<String>,
    /// Rows per request, 1 to [`crate::limits::MAX_BATCH_CEILING`]; default
    /// [`crate::limits::DEFAULT_MAX_BATCH`].
    pub max_batch: usize,
    /// Distinct label values per label, at least 1; default
    /// [`crate::limits::DEFAULT_MAX_LABEL_VALUES`].
    pub max_label_values: usize,
    /// The datasource holding `ai_usage`; default [`DEFAULT_USAGE_DATASOURCE`].
    pub datasource: String,
    /// Whether `serve` creates and upgrades `ai_usage` at start (default true). Off
    /// for a schema another tool owns.
    pub migrate: bool,
}

/// The datasource holding the host's own tables when `[usage]` names none.
pub const DEFAULT_USAGE_DATASOURCE: &str = "main";

/// The windows an uptime is read over (`GET /v1/checks/{check}/uptime`, `slo_window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// What `window` may be, as a 400 says it.
pub const WINDOW_EXPECTED: &str = "one of 24h, 7d, 30d, 90d, 365d";

impl Window {
    /// The window named `name`, exactly as [`Window::as_str`] spells it.
    pub fn parse(name: &str) -> Option<Window> {
        [
            Window::Day,
            Window::Week,
            Window::Month,
            Window::Quarter,
            Window::Year,
        ]
        .into_iter()
        .find(|w| w.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
            Window::Quarter => "90d",
            Window::Year => "365d",
        }
    }

    pub fn duration(self) -> Duration {
        let days = match self {
            Window::Day => 1,
            Window::Week => 7,
            Window::Month => 30,
            Window::Quarter => 90,
            Window::Year => 365,
        };
        Duration::from_secs(days * 86_400)
    }
}

/// Where check results are kept beyond memory (`[history]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// The datasource results are written to; `None` keeps them in memory only (no
    /// `[history]` section and no `main` datasource).
    pub datasource: Option<String>,
    /// This host's name in the rows; `None`: the host name and the listen port, which
    /// `serve` decides (so two processes on one machine differ).
    pub node: Option<String>,
    /// Whether `serve` creates and upgrades the history tables at start (default true).
    pub migrate: bool,
    /// Results waiting for the store, at most; beyond it the oldest are dropped.
    pub queue_rows: usize,
    /// Message bytes of the results waiting, at most.
    pub queue_bytes: u64,
    /// How long the store keeps each kind of row.
    pub retention: Retention,
}

/// How long the history store keeps results and each grain of rollups; older rows are
/// pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw: Duration,
    pub minute: Duration,
    pub hour: Duration,
    pub day: Duration,
}

impl Config {
    /// The datasource holding `ai_usage`, if it is defined.
    pub fn usage_datasource(&self) -> Option<&DatasourceSpec> {
        self.datasources
            .iter()
            .find(|d| d.name() == self.usage.datasource)
    }

    /// The datasource check results are written to, if any.
    pub fn history_datasource(&self) -> Option<&DatasourceSpec> {
        let name = self.history.datasource.as_deref()?;
        self.datasources.iter().find(|d| d.name() == name)
    }
}

/// One check, resolved.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub name: String,
    pub plugin: PathBuf,
    pub critical: bool,
    /// Run when asked for, the result reused for `interval`, not in the background.
    pub on_demand: bool,
    pub interval: Duration,
    pub max_age: Duration,
    pub limits: Limits,
    pub grants: Grants,
    /// Its settings and secrets.
    pub settings: Settings,
    /// The SHA-256 (lower-case hex) the plugin file must have.
    pub sha256: Option<String>,
    /// The OCI reference the plugin comes from (`plugin = "oci://…"`); `plugin` is
    /// then the verified file in the cache, once fetched.
    pub oci: Option<crate::oci::Reference>,
    pub source: Source,
    /// Its service level objective, if it has one.
    pub slo: Option<Slo>,
    /// Ranges the host judges its samples by (`thresholds`).
    pub thresholds: Vec<Threshold>,
}

/// A check's service level objective: the share of runs that must be up over a
/// window (`slo = "99.9%"`, `slo_window = "30d"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// The target as a fraction, e.g. 0.999.
    pub target: f64,
    pub window: Window,
}

/// One multi-window burn-rate alert of the SRE workbook.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnPair {
    /// The share of the error budget spent within `long` that fires it.
    pub share: f64,
    pub long: Duration,
    /// The short window, which must burn as fast, so that a burn that stopped clears.
    pub short: Duration,
    /// `critical` (page) or `warning` (ticket).
    pub severity: &'static str,
}

/// The burn-rate pairs, as the share of the error budget spent within the long window:
/// 2 % in an hour and 5 % in six hours page, 10 % in three days makes a ticket. With a
/// 30-day SLO these are the workbook's burn rates 14.4, 6 and 1. `slo_burn` rules and
/// `healthhost rules` both use them.
pub const BURN_PAIRS: [BurnPair; 3] = [
    BurnPair {
        share: 0.02,
        long: Duration::from_secs(3600),
        short: Duration::from_secs(300),
        severity: "critical",
    },
    BurnPair {
        share: 0.05,
        long: Duration::from_secs(6 * 3600),
        short: Duration::from_secs(1800),
        severity: "critical",
    },
    BurnPair {
        share: 0.10,
        long: Duration::from_secs(72 * 3600),
        short: Duration::from_secs(6 * 3600),
        severity: "warning",
    },
];

impl BurnPair {
    /// The pairs that fit in an SLO `window` (a long window must be shorter).
    pub fn fitting(window: Duration) -> impl Iterator<Item = &'static BurnPair> {
        BURN_PAIRS.iter().filter(move |p| p.long < window)
    }

    /// The burn rate that fires it for an SLO over `window`.
    pub fn rate(&self, window: Duration) -> f64 {
        self.share * window.as_secs_f64() / self.long.as_secs_f64()
    }
}

/// The window of an SLO when `slo_window` says nothing: a month, as SLOs usually are.
pub const DEFAULT_SLO_WINDOW: Window = Window::Month;

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, FileError> {
        let base = path.parent().unwrap_or(Path::new("."));
        crate::problems::load("config", path, |source| {
            Config::parse(source, base, |name| std::env::var(name).ok())
        })
    }

    /// Parses and validates `source`; relative paths resolve against `base`, `${VAR}`
    /// values through `env`.
    pub fn parse(
        source: &str,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig = parse_toml(source)?;
        let mut problems = Problems {
            source,
            list: Vec::new(),
        };
        let config = Config::from_raw(raw, base, &env, &mut problems);
        problems.finish().map(|()| config)
    }

    /// Resolves `raw` step by step; each step adds its problems and gives a usable
    /// value (the default) for what is wrong, so every problem is reported at once.
    fn from_raw(
        raw: RawConfig,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Config {
        let listen = listen_address(&raw, problems);
        let namespace = metric_namespace(&raw, problems);
        let (show_details, details_token) = details(&raw, env, problems);
        let (max_concurrent_runs, compile_concurrency, compile_memory, compile_timeout) =
            run_and_compile_limits(&raw, problems);
        let (startup_grace, shutdown_delay, watch_interval) = timings(&raw, problems);
        let plugins_dir = base.join(
            raw.plugins_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_PLUGINS_DIR)),
        );
        let cache_dir = match &raw.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(base.join(dir)),
            None => Some(crate::cache::default_dir()),
        };
        let datasources = resolve_datasources(&raw.datasources, base, env, problems);
        let datasource_names: BTreeSet<String> = raw.datasources.keys().cloned().collect();
        let usage = resolve_usage(raw.usage, env, &raw.datasources, problems);
        let history = resolve_history(raw.history, &raw.datasources, problems);
        let checks = resolve_checks(raw.checks, base, env, &datasource_names, problems);
        let alerts =
            alerts::resolve_alerts(raw.alerts, env, history.datasource.is_some(), problems);
        let oci = oci::resolve_oci(
            oci::RawOci {
                registries: raw.registries,
                trust: raw.trust,
                mirror: raw.registry_mirror,
                sigstore: raw.sigstore,
            },
            base,
            env,
            problems,
        );
        Config {
            listen,
            namespace,
            show_details,
            details_token,
            max_concurrent_runs,
            compile_concurrency,
            compiler: raw.compiler.unwrap_or_default(),
            compile_memory,
            compile_timeout,
            startup_grace,
            shutdown_delay,
            datasources,
            checks,
            plugins_dir,
            watch_interval,
            cache_dir,
            usage,
            history,
            alerts,
            oci,
        }
    }

    /// Resolves the grant file of the dropped-in check `name` (`source`, the text of
    /// `NAME.toml`, or `None` when there is none) for the plugin at `plugin` (`None`:
    /// no .wasm, the file names an OCI reference); its `grants.sql` may name this
    /// config's datasources.
    pub fn drop_in(
        &self,
        name: &str,
        plugin: Option<PathBuf>,
        source: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<CheckConfig, Vec<Problem>> {
        let datasources: BTreeSet<String> = self
            .datasources
            .iter()
            .map(|d| d.name().to_owned())
            .collect();
        grant_file(name, plugin, source, &env, Some(&datasources))
    }
}

#[cfg(test)]
mod alert_tests;
#[cfg(test)]
mod tests;
