//! The configuration file: parsed with unknown keys rejected, then validated as a whole
//! so that every problem is reported at once with its file, line and key.
//!
//! Phase one (`RawConfig`) is the file as written (serde, `deny_unknown_fields`).
//! Phase two (`Config::from_raw`) resolves it: relative paths against the file's
//! folder, `${VAR}` values from the environment (such values are secrets), the
//! `DATABASE_URL` override of the `main` datasource, units, allowlists and limits.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::dburl::{DatasourceSpec, normalize_url};
use crate::limits::{self, Limits};
use crate::problems::{FileError, Problem, Problems, parse_toml};
use crate::units;

mod check;
pub mod grants;
mod raw;

use grants::{Grants, HttpPolicy, Settings, SqlPolicy};

pub use check::grant_file;
use check::{CheckContext, resolve_check};
use raw::*;

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
    /// Rows per request, 1 to [`limits::MAX_BATCH_CEILING`]; default
    /// [`limits::DEFAULT_MAX_BATCH`].
    pub max_batch: usize,
    /// Distinct label values per label, at least 1; default
    /// [`limits::DEFAULT_MAX_LABEL_VALUES`].
    pub max_label_values: usize,
    /// The datasource holding `ai_usage`; default [`DEFAULT_USAGE_DATASOURCE`].
    pub datasource: String,
    /// Whether `serve` creates and upgrades `ai_usage` at start (default true). Off
    /// for a schema another tool owns.
    pub migrate: bool,
}

/// The datasource holding the host's own tables when `[usage]` names none.
pub const DEFAULT_USAGE_DATASOURCE: &str = "main";

impl Config {
    /// The datasource holding `ai_usage`, if it is defined.
    pub fn usage_datasource(&self) -> Option<&DatasourceSpec> {
        self.datasources
            .iter()
            .find(|d| d.name() == self.usage.datasource)
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
    /// Sample names the check may export to `/metrics`.
    pub metrics: BTreeSet<String>,
    /// The SHA-256 (lower-case hex) the plugin file must have.
    pub sha256: Option<String>,
    pub source: Source,
}

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

    fn from_raw(
        raw: RawConfig,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Config {
        let listen_text = raw
            .listen
            .as_ref()
            .map_or(DEFAULT_LISTEN, |l| l.get_ref().as_str());
        let listen = listen_text.parse().unwrap_or_else(|_| {
            let span = raw.listen.as_ref().map_or(0..0, Spanned::span);
            problems.add(
                span,
                "listen",
                format!("'{listen_text}' is not an address like \"0.0.0.0:8080\""),
            );
            DEFAULT_LISTEN.parse().expect("the default is valid")
        });
        let namespace = raw
            .namespace
            .as_ref()
            .map_or(DEFAULT_NAMESPACE.to_owned(), |n| n.get_ref().clone());
        if !crate::names::valid_metric_name(&namespace) {
            let span = raw.namespace.as_ref().map_or(0..0, Spanned::span);
            problems.add(
                span,
                "namespace",
                format!("'{namespace}' is not a metric name prefix (letters, digits, '_')"),
            );
        }
        let details_token = raw
            .details_token
            .as_ref()
            .and_then(|t| expand(t.get_ref(), env).0);
        let show_details = raw.show_details.unwrap_or_default();
        if show_details == ShowDetails::WhenAuthorized && details_token.is_none() {
            let span = raw.details_token.as_ref().map_or(0..0, Spanned::span);
            problems.add(span, "details_token", "show_details = \"when-authorized\" needs a details_token (or its variable is unset)");
        }
        let (max_concurrent_runs, compile_concurrency, compile_memory, compile_timeout) =
            run_and_compile_limits(&raw, problems);
        let startup_grace = duration(
            &raw.startup_grace,
            "startup_grace".to_owned(),
            DEFAULT_STARTUP_GRACE,
            problems,
        );
        let shutdown_delay = duration(
            &raw.shutdown_delay,
            "shutdown_delay".to_owned(),
            DEFAULT_SHUTDOWN_DELAY,
            problems,
        );
        let watch_interval = duration(
            &raw.watch_interval,
            "watch_interval".to_owned(),
            DEFAULT_WATCH_INTERVAL,
            problems,
        );
        if watch_interval.is_zero()
            && let Some(text) = &raw.watch_interval
        {
            problems.add(text.span(), "watch_interval", "must be more than 0s");
        }
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

        let mut datasources = Vec::new();
        for (name, ds) in &raw.datasources {
            let (mut url, mut key) = match env_reference(ds.url.get_ref()) {
                Some(var) => match env(var) {
                    Some(url) => (
                        url,
                        format!("datasources.{name}.url (from the environment variable {var})"),
                    ),
                    None => {
                        problems.add(
                            ds.url.span(),
                            format!("datasources.{name}.url"),
                            format!("the environment variable {var} is not set"),
                        );
                        continue;
                    }
                },
                None => (ds.url.get_ref().clone(), format!("datasources.{name}.url")),
            };
            if name == "main"
                && let Some(over) = env(DATABASE_URL_ENV)
            {
                url = over;
                key = format!(
                    "datasources.{name}.url (replaced by the environment variable {DATABASE_URL_ENV})"
                );
            }
            let url = resolve_sqlite_path(&normalize_url(&url), base);
            match DatasourceSpec::parse(name, &url) {
                Ok(d) => datasources
                    .push(d.unsafe_allow_privileged_role(ds.unsafe_allow_privileged_role)),
                Err(e) => problems.add(ds.url.span(), key, e),
            }
        }

        let datasource_names: BTreeSet<String> = raw.datasources.keys().cloned().collect();
        let usage = resolve_usage(raw.usage, env, &raw.datasources, problems);

        let mut checks = Vec::new();
        for (name, check) in raw.checks {
            let span = check.span();
            let mut check = check.into_inner();
            let key = format!("checks.{name}");
            if !crate::names::valid_check_name(&name) {
                problems.add(
                    span.clone(),
                    key.clone(),
                    "a check name uses letters, digits, '-' and '_'",
                );
            }
            let plugin = match check.plugin.take() {
                Some(path) => base.join(path.get_ref()),
                None => {
                    problems.add(
                        span,
                        format!("{key}.plugin"),
                        "missing: the path of the .wasm component",
                    );
                    PathBuf::new()
                }
            };
            let context = CheckContext {
                key_prefix: format!("{key}."),
                env,
                datasources: Some(&datasource_names),
            };
            let resolved = resolve_check(&name, check, plugin, Source::Config, &context, problems);
            checks.push(resolved);
        }
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
        }
    }

    /// Resolves the grant file of the dropped-in check `name` (`source`, the text of
    /// `NAME.toml`, or `None` when there is none) for the plugin at `plugin`; its
    /// `grants.sql` may name this config's datasources.
    pub fn drop_in(
        &self,
        name: &str,
        plugin: PathBuf,
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

fn resolve_usage(
    raw: Option<Spanned<RawUsage>>,
    env: &dyn Fn(&str) -> Option<String>,
    datasources: &BTreeMap<String, RawDatasource>,
    problems: &mut Problems,
) -> UsageConfig {
    let span = raw.as_ref().map_or(0..0, Spanned::span);
    let raw = raw.map(Spanned::into_inner).unwrap_or_default();
    let mut token = |raw: &Option<Spanned<String>>, key: &str| match raw {
        Some(t) if t.get_ref().is_empty() => {
            problems.add(
                t.span(),
                key,
                "must not be empty (leave the key out to turn the endpoint off)",
            );
            None
        }
        Some(t) => expand(t.get_ref(), env).0.filter(|v| !v.is_empty()),
        None => None,
    };
    let (token, read_token) = (
        token(&raw.token, "usage.token"),
        token(&raw.read_token, "usage.read_token"),
    );
    let max_batch = match &raw.max_batch {
        Some(n) if !(1..=limits::MAX_BATCH_CEILING).contains(n.get_ref()) => {
            problems.add(
                n.span(),
                "usage.max_batch",
                format!("must be from 1 to {}", limits::MAX_BATCH_CEILING),
            );
            limits::DEFAULT_MAX_BATCH
        }
        Some(n) => *n.get_ref(),
        None => limits::DEFAULT_MAX_BATCH,
    };
    let max_label_values = match &raw.max_label_values {
        Some(n) if *n.get_ref() == 0 => {
            problems.add(n.span(), "usage.max_label_values", "must be at least 1");
            limits::DEFAULT_MAX_LABEL_VALUES
        }
        Some(n) => *n.get_ref(),
        None => limits::DEFAULT_MAX_LABEL_VALUES,
    };
    let datasource = raw
        .datasource
        .as_ref()
        .map_or(DEFAULT_USAGE_DATASOURCE, |d| d.get_ref().as_str())
        .to_owned();
    // The default datasource may be missing while the endpoints are off; a named one
    // must exist.
    let on = token.is_some() || read_token.is_some();
    if !datasources.contains_key(&datasource) && (raw.datasource.is_some() || on) {
        let at = raw.datasource.as_ref().map_or(span, Spanned::span);
        problems.add(
            at,
            "usage.datasource",
            format!("no datasource named '{datasource}' is defined under [datasources]"),
        );
    }
    UsageConfig {
        token,
        read_token,
        max_batch,
        max_label_values,
        datasource,
        migrate: raw.migrate.unwrap_or(true),
    }
}

/// `sqlite:` URLs with a relative path resolve against the config file's folder.
fn resolve_sqlite_path(url: &str, base: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    if rest.starts_with(':') || rest.starts_with('/') || rest.is_empty() {
        return url.to_owned();
    }
    format!("sqlite://{}", base.join(rest).display())
}

/// The variable a whole-value `${VAR}` reference names, if `value` is one.
fn env_reference(value: &str) -> Option<&str> {
    value.strip_prefix("${").and_then(|v| v.strip_suffix('}'))
}

/// Expands a whole-value `${VAR}` reference: (value, is_secret). An unset variable
/// gives no value.
fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> (Option<String>, bool) {
    match env_reference(value) {
        Some(var) => (env(var), true),
        None => (Some(value.to_owned()), false),
    }
}

/// The run and compile capacities (`max_concurrent_runs`, `compile_concurrency`,
/// `compile_memory`, `compile_timeout`), each checked against its range.
fn run_and_compile_limits(
    raw: &RawConfig,
    problems: &mut Problems,
) -> (usize, usize, u64, Duration) {
    let max_concurrent_runs = match &raw.max_concurrent_runs {
        Some(n) if !(1..=limits::MAX_CONCURRENT_RUNS).contains(n.get_ref()) => {
            problems.add(
                n.span(),
                "max_concurrent_runs",
                format!(
                    "must be between 1 and {} (the plugin pool holds that many runs, and as many critical ones)",
                    limits::MAX_CONCURRENT_RUNS
                ),
            );
            DEFAULT_MAX_CONCURRENT_RUNS
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_MAX_CONCURRENT_RUNS,
    };

    let compile_concurrency = match &raw.compile_concurrency {
        Some(n) if *n.get_ref() == 0 => {
            problems.add(n.span(), "compile_concurrency", "must be at least 1");
            default_compile_concurrency()
        }
        Some(n) => *n.get_ref(),
        None => default_compile_concurrency(),
    };
    let compile_memory = match &raw.compile_memory {
        None => limits::DEFAULT_COMPILE_MEMORY,
        Some(text) => limits::parse_compile_memory(text.get_ref()).unwrap_or_else(|e| {
            problems.add(text.span(), "compile_memory", e);
            limits::DEFAULT_COMPILE_MEMORY
        }),
    };
    let compile_timeout = duration(
        &raw.compile_timeout,
        "compile_timeout".to_owned(),
        limits::DEFAULT_COMPILE_TIMEOUT,
        problems,
    );
    if compile_timeout.is_zero()
        && let Some(text) = &raw.compile_timeout
    {
        problems.add(text.span(), "compile_timeout", "must be more than 0s");
    }
    (
        max_concurrent_runs,
        compile_concurrency,
        compile_memory,
        compile_timeout,
    )
}

fn duration(
    field: &Option<Spanned<String>>,
    key: String,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    match field {
        None => default,
        Some(text) => units::parse_duration(text.get_ref()).unwrap_or_else(|e| {
            problems.add(text.span(), key, e);
            default
        }),
    }
}

#[cfg(test)]
mod tests;
