//! One check's table (`[checks.NAME]` in the config, or a dropped-in grant file),
//! resolved: limits, grants, metrics and settings, every problem located.

use super::*;

/// Resolves a grant file (the keys of a `[checks.NAME]` table without `plugin`) for
/// check `name`; `grants.sql` names are checked against `datasources` when given.
pub fn grant_file(
    name: &str,
    plugin: PathBuf,
    source: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    datasources: Option<&BTreeSet<String>>,
) -> Result<CheckConfig, Vec<Problem>> {
    let text = source.unwrap_or_default();
    let raw: RawCheck = parse_toml(text)?;
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
    if let Some(p) = &raw.plugin {
        problems.add(
            p.span(),
            "plugin",
            "a grant file's plugin is the .wasm file beside it; remove this key",
        );
    }
    let context = CheckContext {
        key_prefix: String::new(),
        env,
        datasources,
    };
    let check = resolve_check(name, raw, plugin, Source::Folder, &context, &mut problems);
    problems.finish().map(|()| check)
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

pub(super) fn resolve_check(
    name: &str,
    raw: RawCheck,
    plugin: PathBuf,
    source: Source,
    context: &CheckContext,
    problems: &mut Problems,
) -> CheckConfig {
    let key = |field: &str| format!("{}{field}", context.key_prefix);
    let env = context.env;
    let sha256 = raw.sha256.as_ref().and_then(|pin| {
        let hex = pin.get_ref().to_ascii_lowercase();
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            Some(hex)
        } else {
            problems.add(pin.span(), key("sha256"), "not a SHA-256: 64 hex digits");
            None
        }
    });
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

    let origins: Vec<&str> = raw
        .grants
        .http
        .iter()
        .map(|o| o.get_ref().as_str())
        .collect();
    let http = HttpPolicy::parse(&origins).unwrap_or_else(|e| {
        let bad = raw
            .grants
            .http
            .iter()
            .find(|o| HttpPolicy::parse(&[o.get_ref()]).is_err());
        problems.add(bad.map_or(0..0, Spanned::span), key("grants.http"), e);
        HttpPolicy::default()
    });
    for ds in &raw.grants.sql {
        if context
            .datasources
            .is_some_and(|known| !known.contains(ds.get_ref()))
        {
            problems.add(
                ds.span(),
                key("grants.sql"),
                format!(
                    "no datasource named '{}' is defined under [datasources]",
                    ds.get_ref()
                ),
            );
        }
    }
    let sql = SqlPolicy::new(raw.grants.sql.iter().map(|d| d.get_ref().clone()));

    let mut metrics = BTreeSet::new();
    for metric in &raw.grants.metrics {
        let m = metric.get_ref();
        if !crate::names::valid_metric_name(m) {
            problems.add(
                metric.span(),
                key("grants.metrics"),
                format!("'{m}' is not a metric name (letters, digits, '_')"),
            );
        } else if crate::names::reserved(m) {
            problems.add(
                metric.span(),
                key("grants.metrics"),
                format!(
                    "'{m}' is one of the host's own metrics, or one of their series \
                     (a name with or without _total, _count, _sum, _bucket, …)"
                ),
            );
        } else {
            metrics.insert(m.clone());
        }
    }

    let mut settings = Settings::default();
    for (k, value) in raw.settings {
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                problems.add(
                    value.span(),
                    key(&format!("settings.{k}")),
                    "a setting is a string, number or boolean",
                );
                continue;
            }
        };
        match expand(&text, env) {
            (Some(v), true) => settings.set_secret(k, v),
            (Some(v), false) => settings.set(k, v),
            (None, _) => {
                tracing::debug!(check = name, key = %k, "setting's environment variable is unset; the key stays unset")
            }
        }
    }
    CheckConfig {
        name: name.to_owned(),
        plugin,
        critical: raw.critical,
        on_demand: raw.on_demand,
        interval,
        max_age,
        limits,
        grants: Grants {
            http,
            sql,
            settings,
        },
        metrics,
        sha256,
        source,
    }
}
