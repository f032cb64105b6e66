//! Phase two's steps: each resolves one part of the raw file, adds its problems and
//! gives a usable value (the default) for what is wrong, so that `Config::from_raw`
//! reports every problem at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::{CheckContext, reference, resolve_check};
use super::raw::{RawCheck, RawConfig, RawDatasource, RawHistory, RawUsage};
use super::{
    CheckConfig, DATABASE_URL_ENV, DEFAULT_LISTEN, DEFAULT_MAX_CONCURRENT_RUNS, DEFAULT_NAMESPACE,
    DEFAULT_SHUTDOWN_DELAY, DEFAULT_STARTUP_GRACE, DEFAULT_USAGE_DATASOURCE,
    DEFAULT_WATCH_INTERVAL, HistoryConfig, Retention, ShowDetails, Source, UsageConfig,
    default_compile_concurrency,
};
use crate::dburl::{DatasourceSpec, normalize_url};
use crate::problems::Problems;
use crate::{limits, units};

/// `listen`, or the default with a problem when it is not an address.
pub(super) fn listen_address(raw: &RawConfig, problems: &mut Problems) -> SocketAddr {
    let text = raw
        .listen
        .as_ref()
        .map_or(DEFAULT_LISTEN, |l| l.get_ref().as_str());
    text.parse().unwrap_or_else(|_| {
        let span = raw.listen.as_ref().map_or(0..0, Spanned::span);
        problems.add(
            span,
            "listen",
            format!("'{text}' is not an address like \"0.0.0.0:8080\""),
        );
        DEFAULT_LISTEN.parse().expect("the default is valid")
    })
}

/// `namespace`, the prefix of every metric name.
pub(super) fn metric_namespace(raw: &RawConfig, problems: &mut Problems) -> String {
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
    namespace
}

/// `show_details` and the `details_token` it may need.
pub(super) fn details(
    raw: &RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> (ShowDetails, Option<String>) {
    let details_token = raw
        .details_token
        .as_ref()
        .and_then(|t| expand(t.get_ref(), env).0);
    let show_details = raw.show_details.unwrap_or_default();
    if show_details == ShowDetails::WhenAuthorized && details_token.is_none() {
        let span = raw.details_token.as_ref().map_or(0..0, Spanned::span);
        problems.add(
            span,
            "details_token",
            "show_details = \"when-authorized\" needs a details_token (or its variable is unset)",
        );
    }
    (show_details, details_token)
}

/// `startup_grace`, `shutdown_delay` and `watch_interval` (more than zero).
pub(super) fn timings(raw: &RawConfig, problems: &mut Problems) -> (Duration, Duration, Duration) {
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
    (startup_grace, shutdown_delay, watch_interval)
}

/// Each `[datasources.NAME]`: its URL (from the environment when it is `${VAR}`, and
/// `main`'s replaced by `DATABASE_URL`), normalized and checked.
pub(super) fn resolve_datasources(
    raw: &BTreeMap<String, RawDatasource>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Vec<DatasourceSpec> {
    let mut datasources = Vec::new();
    for (name, ds) in raw {
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
            Ok(d) => {
                datasources.push(d.unsafe_allow_privileged_role(ds.unsafe_allow_privileged_role))
            }
            Err(e) => problems.add(ds.url.span(), key, e),
        }
    }
    datasources
}

/// Each `[checks.NAME]` of the config file, its plugin path relative to `base`.
pub(super) fn resolve_checks(
    raw: BTreeMap<String, Spanned<RawCheck>>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    datasources: &BTreeSet<String>,
    problems: &mut Problems,
) -> Vec<CheckConfig> {
    let mut checks = Vec::new();
    for (name, check) in raw {
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
        let mut oci = None;
        let plugin = match check.plugin.take() {
            Some(text) if text.get_ref().starts_with(crate::oci::reference::SCHEME) => {
                oci = reference(&text, &format!("{key}.plugin"), problems);
                PathBuf::from(text.into_inner())
            }
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
            datasources: Some(datasources),
        };
        let mut resolved = resolve_check(&name, check, plugin, Source::Config, &context, problems);
        resolved.oci = oci;
        checks.push(resolved);
    }
    checks
}

/// `[history]`: its datasource (by default `main`, when defined), this host's node
/// name, the bounds of the queue of results waiting for the store, and retention.
pub(super) fn resolve_history(
    raw: Option<Spanned<RawHistory>>,
    datasources: &BTreeMap<String, RawDatasource>,
    problems: &mut Problems,
) -> HistoryConfig {
    let raw = raw.map(Spanned::into_inner).unwrap_or_default();
    let datasource = match &raw.datasource {
        Some(name) if !datasources.contains_key(name.get_ref()) => {
            let message = format!(
                "no datasource named '{}' is defined under [datasources]",
                name.get_ref()
            );
            problems.add(name.span(), "history.datasource", message);
            None
        }
        Some(name) => Some(name.get_ref().clone()),
        None => datasources
            .contains_key(DEFAULT_USAGE_DATASOURCE)
            .then(|| DEFAULT_USAGE_DATASOURCE.to_owned()),
    };
    let node = raw.node.as_ref().and_then(|node| {
        let text = node.get_ref();
        let fits = !text.is_empty() && text.len() <= limits::HISTORY_NODE_MAX_BYTES;
        if fits && !text.chars().any(char::is_control) {
            return Some(text.clone());
        }
        let why = format!(
            "a node name has 1 to {} bytes and no control characters",
            limits::HISTORY_NODE_MAX_BYTES
        );
        problems.add(node.span(), "history.node", why);
        None
    });
    let queue_rows = match &raw.queue_rows {
        Some(n) if *n.get_ref() == 0 => {
            problems.add(n.span(), "history.queue_rows", "must be at least 1");
            limits::HISTORY_QUEUE_ROWS
        }
        Some(n) => *n.get_ref(),
        None => limits::HISTORY_QUEUE_ROWS,
    };
    let queue_bytes = match &raw.queue_bytes {
        None => limits::HISTORY_QUEUE_BYTES,
        Some(text) => units::parse_size(text.get_ref()).unwrap_or_else(|e| {
            problems.add(text.span(), "history.queue_bytes", e);
            limits::HISTORY_QUEUE_BYTES
        }),
    };
    let retention = history_retention(&raw, problems);
    HistoryConfig {
        datasource,
        node,
        migrate: raw.migrate.unwrap_or(true),
        queue_rows,
        queue_bytes,
        retention,
    }
}

/// `[history]`'s retentions, each at least [`limits::HISTORY_MIN_RETENTION`].
fn history_retention(raw: &RawHistory, problems: &mut Problems) -> Retention {
    let mut keep = |text: &Option<Spanned<String>>, key: &str, default: Duration| {
        let key = format!("history.{key}");
        let kept = duration(text, key.clone(), default, problems);
        match text {
            Some(text) if kept < limits::HISTORY_MIN_RETENTION => {
                let least = humantime::format_duration(limits::HISTORY_MIN_RETENTION);
                problems.add(text.span(), key, format!("must be at least {least}"));
                default
            }
            _ => kept,
        }
    };
    Retention {
        raw: keep(
            &raw.raw_retention,
            "raw_retention",
            limits::HISTORY_RAW_RETENTION,
        ),
        minute: keep(
            &raw.minute_retention,
            "minute_retention",
            limits::HISTORY_MINUTE_RETENTION,
        ),
        hour: keep(
            &raw.hour_retention,
            "hour_retention",
            limits::HISTORY_HOUR_RETENTION,
        ),
        day: keep(
            &raw.day_retention,
            "day_retention",
            limits::HISTORY_DAY_RETENTION,
        ),
    }
}

pub(super) fn resolve_usage(
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
pub(super) fn resolve_sqlite_path(url: &str, base: &Path) -> String {
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
pub(super) fn env_reference(value: &str) -> Option<&str> {
    value.strip_prefix("${").and_then(|v| v.strip_suffix('}'))
}

/// Expands a whole-value `${VAR}` reference: (value, is_secret). An unset variable
/// gives no value.
pub(super) fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> (Option<String>, bool) {
    match env_reference(value) {
        Some(var) => (env(var), true),
        None => (Some(value.to_owned()), false),
    }
}

/// The run and compile capacities (`max_concurrent_runs`, `compile_concurrency`,
/// `compile_memory`, `compile_timeout`), each checked against its range.
pub(super) fn run_and_compile_limits(
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

pub(super) fn duration(
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
