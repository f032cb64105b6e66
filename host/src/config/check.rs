//! One check's table (`[checks.NAME]` in the config, or a dropped-in grant file),
//! resolved: limits, grants, metrics and settings, every problem located.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::grants::{Grants, HttpPolicy, Settings, SqlPolicy};
use super::raw::{RawCheck, RawThresholds};
use super::resolve::{duration, expand};
use super::{
    CheckConfig, DEFAULT_INTERVAL, DEFAULT_SLO_WINDOW, MIN_INTERVAL, STALE_AFTER_INTERVALS, Slo,
    Source, WINDOW_EXPECTED, Window,
};
use crate::limits::{self, Limits};
use crate::names::valid_metric_name;
use crate::problems::{Problem, Problems, parse_toml};
use crate::thresholds::{NagiosRange, Threshold};
use crate::units;

/// Resolves a grant file (the keys of a `[checks.NAME]` table) for check `name`:
/// `plugin` is the .wasm beside it, or `None` when there is none and the file names an
/// OCI reference in its own `plugin` key; `grants.sql` names are checked against
/// `datasources` when given.
pub fn grant_file(
    name: &str,
    plugin: Option<PathBuf>,
    source: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    datasources: Option<&BTreeSet<String>>,
) -> Result<CheckConfig, Vec<Problem>> {
    let text = source.unwrap_or_default();
    let mut raw: RawCheck = parse_toml(text)?;
    let mut problems = Problems {
        source: text,
        list: Vec::new(),
    };
    if !crate::names::valid_check_name(name) {
        problems.add(
            0..0,
            "(file name)",
            format!("'{name}' is not a check name: use letters, digits, '-' and '_'"),
        );
    }
    let (plugin, oci) = match (plugin, raw.plugin.take()) {
        (Some(wasm), None) => (wasm, None),
        (Some(wasm), Some(p)) => {
            let why = "the .wasm beside this file is its plugin; remove this key or the .wasm";
            problems.add(p.span(), "plugin", why);
            (wasm, None)
        }
        (None, Some(p)) if p.get_ref().starts_with(crate::oci::reference::SCHEME) => {
            let oci = reference(&p, "plugin", &mut problems);
            (PathBuf::from(p.into_inner()), oci)
        }
        (None, Some(p)) => {
            let why =
                "a grant file names only an oci:// reference; a file plugin is the .wasm beside it";
            problems.add(p.span(), "plugin", why);
            (PathBuf::new(), None)
        }
        (None, None) => {
            let why = "no .wasm beside this file and no plugin = \"oci://…\"";
            problems.add(0..0, "plugin", why);
            (PathBuf::new(), None)
        }
    };
    let context = CheckContext {
        key_prefix: String::new(),
        env,
        datasources,
    };
    let mut check = resolve_check(name, raw, plugin, Source::Folder, &context, &mut problems);
    check.oci = oci;
    problems.finish().map(|()| check)
}

/// The OCI reference `plugin` names (`oci://…`), or a problem at `key` naming the bad
/// part.
pub(super) fn reference(
    plugin: &Spanned<String>,
    key: &str,
    problems: &mut Problems,
) -> Option<crate::oci::Reference> {
    crate::oci::Reference::parse(plugin.get_ref())
        .map_err(|why| problems.add(plugin.span(), key, why))
        .ok()
}

/// What resolving a check needs besides the check itself.
pub(super) struct CheckContext<'a> {
    /// Prefix of problem keys: `checks.NAME.` in config.toml, empty in a grant file.
    pub(super) key_prefix: String,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// Names of the defined datasources; `None` when they are checked elsewhere
    /// (`healthhost check` defines them by flag or answers them with fixtures).
    pub(super) datasources: Option<&'a BTreeSet<String>>,
}

impl CheckContext<'_> {
    /// A problem's key for `field` of this check.
    fn key(&self, field: &str) -> String {
        format!("{}{field}", self.key_prefix)
    }
}

/// Resolves one check's table step by step; each step adds its problems and gives a
/// usable value for what is wrong, so every problem is reported at once.
pub(super) fn resolve_check(
    name: &str,
    raw: RawCheck,
    plugin: PathBuf,
    source: Source,
    context: &CheckContext,
    problems: &mut Problems,
) -> CheckConfig {
    let sha256 = pinned_sha256(&raw, context, problems);
    let (interval, max_age, limits) = schedule_and_limits(&raw, context, problems);
    let http = http_grant(&raw, context, problems);
    let sql = sql_grant(&raw, context, problems);
    let metrics = metric_grants(&raw, context, problems);
    let slo = service_level(&raw, context, problems);
    let thresholds = resolve_thresholds(&raw, context, problems);
    let settings = resolve_settings(name, raw.settings, context, problems);
    CheckConfig {
        name: name.to_owned(),
        plugin,
        critical: raw.critical,
        on_demand: raw.on_demand,
        interval,
        max_age,
        limits,
        grants: Grants { http, sql, metrics },
        settings,
        sha256,
        oci: None,
        source,
        slo,
        thresholds,
    }
}

/// `slo` (a percentage above 0 and below 100) and `slo_window` (one of the uptime
/// windows; it needs `slo`).
fn service_level(raw: &RawCheck, context: &CheckContext, problems: &mut Problems) -> Option<Slo> {
    let window = match &raw.slo_window {
        None => DEFAULT_SLO_WINDOW,
        Some(text) if raw.slo.is_none() => {
            let why = "is the window of `slo`, which is not set";
            problems.add(text.span(), context.key("slo_window"), why);
            return None;
        }
        Some(text) => match Window::parse(text.get_ref()) {
            Some(window) => window,
            None => {
                let why = format!("'{}' is not {WINDOW_EXPECTED}", text.get_ref());
                problems.add(text.span(), context.key("slo_window"), why);
                return None;
            }
        },
    };
    let text = raw.slo.as_ref()?;
    let percent = text.get_ref().trim().strip_suffix('%').map(str::trim);
    match percent.and_then(|p| p.parse::<f64>().ok()) {
        Some(p) if p > 0.0 && p < 100.0 => Some(Slo {
            target: p / 100.0,
            window,
        }),
        _ => {
            let why = format!(
                "'{}' is not a percentage above 0 and below 100, like \"99.9%\"",
                text.get_ref()
            );
            problems.add(text.span(), context.key("slo"), why);
            None
        }
    }
}

/// `thresholds`: per valid sample name, one or more tables of `warn` and `crit` Nagios
/// ranges (at least one of them) and the `labels` a judged sample carries.
fn resolve_thresholds(
    raw: &RawCheck,
    context: &CheckContext,
    problems: &mut Problems,
) -> Vec<Threshold> {
    let mut resolved = Vec::new();
    for (sample, tables) in &raw.thresholds {
        let key = context.key(&format!("thresholds.{sample}"));
        let span = tables.span();
        if !valid_metric_name(sample) {
            let why = format!("'{sample}' is not a sample name (letters, digits and _)");
            problems.add(span.clone(), key.clone(), why);
        }
        let tables = match tables.get_ref() {
            RawThresholds::One(one) => std::slice::from_ref(one),
            RawThresholds::Many(many) => many.as_slice(),
        };
        for table in tables {
            let mut range = |text: &Option<String>, level: &str| {
                let parsed = text.as_deref().map(NagiosRange::parse).transpose();
                parsed.unwrap_or_else(|why| {
                    problems.add(span.clone(), format!("{key}.{level}"), why);
                    None
                })
            };
            let (warn, crit) = (range(&table.warn, "warn"), range(&table.crit, "crit"));
            if table.warn.is_none() && table.crit.is_none() {
                let why = "needs `warn`, `crit` or both (Nagios ranges, like \"500\")";
                problems.add(span.clone(), key.clone(), why);
            }
            resolved.push(Threshold {
                sample: sample.clone(),
                labels: table.labels.clone().into_iter().collect(),
                warn,
                crit,
            });
        }
    }
    resolved
}

/// `sha256`, the digest the plugin file must have, in lower case.
fn pinned_sha256(
    raw: &RawCheck,
    context: &CheckContext,
    problems: &mut Problems,
) -> Option<String> {
    raw.sha256.as_ref().and_then(|pin| {
        let hex = pin.get_ref().to_ascii_lowercase();
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            Some(hex)
        } else {
            problems.add(
                pin.span(),
                context.key("sha256"),
                "not a SHA-256: 64 hex digits",
            );
            None
        }
    })
}

/// `interval` (at least [`MIN_INTERVAL`]), `max_age` (by default a few intervals and
/// the timeout) and the run's limits.
fn schedule_and_limits(
    raw: &RawCheck,
    context: &CheckContext,
    problems: &mut Problems,
) -> (Duration, Duration, Limits) {
    let key = |field: &str| context.key(field);
    let interval = duration(&raw.interval, key("interval"), DEFAULT_INTERVAL, problems);
    if interval < MIN_INTERVAL
        && let Some(text) = &raw.interval
    {
        problems.add(
            text.span(),
            key("interval"),
            format!(
                "must be at least {}",
                humantime::format_duration(MIN_INTERVAL)
            ),
        );
    }
    let timeout = duration(
        &raw.timeout,
        key("timeout"),
        limits::DEFAULT_TIMEOUT,
        problems,
    );
    let default_max_age = interval * STALE_AFTER_INTERVALS + timeout;
    let max_age = duration(&raw.max_age, key("max_age"), default_max_age, problems);
    let memory = match &raw.memory {
        None => limits::DEFAULT_MEMORY_BYTES,
        Some(text) => units::parse_size(text.get_ref()).unwrap_or_else(|e| {
            problems.add(text.span(), key("memory"), e);
            limits::DEFAULT_MEMORY_BYTES
        }),
    };
    let limits = Limits {
        timeout,
        fuel: raw
            .fuel
            .as_ref()
            .map_or(limits::DEFAULT_FUEL, |f| *f.get_ref()),
        memory,
    };
    if let Err(e) = limits.validate() {
        let span = raw.timeout.as_ref().map(Spanned::span).unwrap_or_default();
        problems.add(span, key("limits"), e);
    }
    (interval, max_age, limits)
}

/// `grants.http`: the origins the check may call.
fn http_grant(raw: &RawCheck, context: &CheckContext, problems: &mut Problems) -> HttpPolicy {
    let origins: Vec<&str> = raw
        .grants
        .http
        .iter()
        .map(|o| o.get_ref().as_str())
        .collect();
    HttpPolicy::parse(&origins).unwrap_or_else(|e| {
        let bad = raw
            .grants
            .http
            .iter()
            .find(|o| HttpPolicy::parse(&[o.get_ref()]).is_err());
        problems.add(
            bad.map_or(0..0, Spanned::span),
            context.key("grants.http"),
            e,
        );
        HttpPolicy::default()
    })
}

/// `grants.sql`: the datasources the check may query, each defined (when known here).
fn sql_grant(raw: &RawCheck, context: &CheckContext, problems: &mut Problems) -> SqlPolicy {
    for ds in &raw.grants.sql {
        if context
            .datasources
            .is_some_and(|known| !known.contains(ds.get_ref()))
        {
            problems.add(
                ds.span(),
                context.key("grants.sql"),
                format!(
                    "no datasource named '{}' is defined under [datasources]",
                    ds.get_ref()
                ),
            );
        }
    }
    SqlPolicy::new(raw.grants.sql.iter().map(|d| d.get_ref().clone()))
}

/// `grants.metrics`: the sample names the check may export, none of the host's own.
fn metric_grants(
    raw: &RawCheck,
    context: &CheckContext,
    problems: &mut Problems,
) -> BTreeSet<String> {
    let mut metrics = BTreeSet::new();
    for metric in &raw.grants.metrics {
        let m = metric.get_ref();
        if !crate::names::valid_metric_name(m) {
            problems.add(
                metric.span(),
                context.key("grants.metrics"),
                format!("'{m}' is not a metric name (letters, digits, '_')"),
            );
        } else if crate::names::reserved(m) {
            problems.add(
                metric.span(),
                context.key("grants.metrics"),
                format!(
                    "'{m}' is one of the host's own metrics, or one of their series \
                     (a name with or without _total, _count, _sum, _bucket, …)"
                ),
            );
        } else {
            metrics.insert(m.clone());
        }
    }
    metrics
}

/// `settings`: strings, numbers and booleans as text; a whole `${VAR}` value is read
/// from the environment and is a secret, and an unset variable leaves the key unset.
fn resolve_settings(
    name: &str,
    raw: BTreeMap<String, Spanned<toml::Value>>,
    context: &CheckContext,
    problems: &mut Problems,
) -> Settings {
    let mut settings = Settings::default();
    for (k, value) in raw {
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                problems.add(
                    value.span(),
                    context.key(&format!("settings.{k}")),
                    "a setting is a string, number or boolean",
                );
                continue;
            }
        };
        match expand(&text, context.env) {
            (Some(v), true) => settings.set_secret(k, v),
            (Some(v), false) => settings.set(k, v),
            (None, _) => {
                tracing::debug!(check = name, key = %k, "setting's environment variable is unset; the key stays unset")
            }
        }
    }
    settings
}
