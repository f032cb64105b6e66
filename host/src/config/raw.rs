//! The config file as written: serde's view, with spans for locating problems. Every
//! table refuses unknown keys. `super` resolves it into [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{Compiler, ShowDetails};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address to listen on, e.g. "0.0.0.0:8080".
    pub(super) listen: Option<Spanned<String>>,
    /// Prefix of every metric name.
    pub(super) namespace: Option<Spanned<String>>,
    /// Who sees check messages in /health: "always", "never" or "when-authorized".
    pub(super) show_details: Option<ShowDetails>,
    /// Bearer token that authorizes details when `show_details = "when-authorized"`.
    pub(super) details_token: Option<Spanned<String>>,
    /// Runs in flight at once across all checks.
    pub(super) max_concurrent_runs: Option<Spanned<usize>>,
    /// Plugins compiled at once.
    pub(super) compile_concurrency: Option<Spanned<usize>>,
    /// The code generator: "cranelift", "cranelift-unoptimized" or "winch".
    pub(super) compiler: Option<Compiler>,
    /// The writable memory a plugin's compiler process may use, like "2GiB".
    pub(super) compile_memory: Option<Spanned<String>>,
    /// How long one plugin's compile may take, like "2m".
    pub(super) compile_timeout: Option<Spanned<String>>,
    /// How long after start a critical check still loading does not fail /health.
    pub(super) startup_grace: Option<Spanned<String>>,
    /// Time between SIGTERM (readiness turns 503) and closing the listener.
    pub(super) shutdown_delay: Option<Spanned<String>>,
    /// Folder of dropped-in checks (`NAME.wasm` + optional `NAME.toml`).
    pub(super) plugins_dir: Option<PathBuf>,
    /// How often the plugins folder is scanned, e.g. "1s".
    pub(super) watch_interval: Option<Spanned<String>>,
    /// Folder of compiled plugins; "" turns the cache off.
    pub(super) cache_dir: Option<PathBuf>,
    /// Named databases checks may be granted.
    #[serde(default)]
    pub(super) datasources: BTreeMap<String, RawDatasource>,
    /// The checks, by name.
    #[serde(default)]
    pub(super) checks: BTreeMap<String, Spanned<RawCheck>>,
    /// `POST /v1/ai-usage` and the `usage` report.
    pub(super) usage: Option<Spanned<RawUsage>>,
    /// Where check results are kept beyond memory.
    pub(super) history: Option<Spanned<RawHistory>>,
    /// Notifications: channels, and the rules that send to them.
    pub(super) alerts: Option<Spanned<RawAlerts>>,
    /// How to reach OCI registries, by host[:port].
    #[serde(default)]
    pub(super) registries: BTreeMap<String, Spanned<RawRegistry>>,
    /// Who vouches for OCI plugins, by registry or repository prefix.
    #[serde(default)]
    pub(super) trust: BTreeMap<String, Spanned<RawTrust>>,
    /// An OCI image layout folder (`healthhost mirror`) plugins are loaded from first.
    pub(super) registry_mirror: Option<PathBuf>,
    /// The trust root of keyless signatures.
    pub(super) sigstore: Option<Spanned<RawSigstore>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub(super) insecure: bool,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    /// One operation's deadline, like "5m".
    pub(super) timeout: Option<Spanned<String>>,
    /// PEM certificates to trust besides the system's, relative to the config's folder.
    pub(super) ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrust {
    /// Cosign public keys (PEM files), relative to the config's folder.
    #[serde(default)]
    pub(super) keys: Vec<PathBuf>,
    /// Load unsigned plugins under this prefix.
    #[serde(default)]
    pub(super) unsafe_allow_unsigned: bool,
    /// Certificate identities whose keyless signatures are trusted.
    #[serde(default)]
    pub(super) keyless: Vec<RawIdentity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    /// The certificate's subject: an e-mail or a URI.
    pub(super) identity: String,
    /// The OIDC issuer that vouched for it.
    pub(super) issuer: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigstore {
    /// Fulcio's root certificates (PEM files), relative to the config's folder.
    #[serde(default)]
    pub(super) fulcio_roots: Vec<PathBuf>,
    /// Rekor's public keys (PEM files), relative to the config's folder.
    #[serde(default)]
    pub(super) rekor_keys: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    /// The status page's address, for links in messages.
    pub(super) public_url: Option<Spanned<String>>,
    /// Bearer token of `/v1/maintenance`; usually "${HEALTHHOST_ADMIN_TOKEN}".
    pub(super) admin_token: Option<Spanned<String>>,
    /// Maintenance windows: one-off or weekly.
    #[serde(default)]
    pub(super) maintenance: Vec<Spanned<RawMaintenance>>,
    #[serde(default)]
    pub(super) channels: BTreeMap<String, Spanned<RawChannel>>,
    #[serde(default)]
    pub(super) rules: BTreeMap<String, Spanned<RawRule>>,
}

/// A maintenance window as written: `start` and `end`, or `weekly` and `time_zone`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaintenance {
    /// Check names or globs; every check when left out.
    pub(super) checks: Option<Vec<String>>,
    /// RFC 3339 instants, like "2026-12-10T02:00:00Z".
    pub(super) start: Option<Spanned<String>>,
    pub(super) end: Option<Spanned<String>>,
    /// A day and times, like "Sun 02:00-04:00".
    pub(super) weekly: Option<Spanned<String>>,
    /// The IANA zone of `weekly`, like "Europe/Moscow"; UTC when left out.
    pub(super) time_zone: Option<Spanned<String>>,
    pub(super) reason: Option<String>,
}

/// A channel as written: one flat table whose `type` says which keys apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    /// telegram | webhook | slack | pagerduty.
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    pub(super) api_url: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
    /// Telegram chat ids, as strings or integers.
    pub(super) chat_ids: Option<Spanned<Vec<toml::Value>>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) secret: Option<Spanned<String>>,
    pub(super) headers: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) routing_key: Option<Spanned<String>>,
    /// One attempt's time limit, like "10s".
    pub(super) timeout: Option<Spanned<String>>,
    /// How long a message is retried before it counts as failed, like "24h".
    pub(super) give_up_after: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    /// Check names or globs (`*`, `?`).
    #[serde(default)]
    pub(super) checks: Vec<Spanned<String>>,
    /// Whether every critical check is included.
    #[serde(default)]
    pub(super) critical: bool,
    pub(super) channels: Spanned<Vec<Spanned<String>>>,
    /// Consecutive non-up results of one replica that open an episode.
    pub(super) after: Option<Spanned<u32>>,
    /// How long results must have been non-up before an episode opens, like "2m".
    #[serde(rename = "for")]
    pub(super) hold: Option<Spanned<String>>,
    /// Consecutive up results that close it.
    pub(super) recover_after: Option<Spanned<u32>>,
    /// A reminder while an episode stays open, like "1h".
    pub(super) repeat: Option<Spanned<String>>,
    /// How long changes wait to go out together, like "10s".
    pub(super) group_wait: Option<Spanned<String>>,
    /// Alert on the checks' SLO error-budget burn instead of on runs of failures.
    #[serde(default)]
    pub(super) slo_burn: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    /// The datasource results are written to.
    pub(super) datasource: Option<Spanned<String>>,
    /// This host's name in the rows.
    pub(super) node: Option<Spanned<String>>,
    /// Whether `serve` creates and upgrades the history tables at start.
    pub(super) migrate: Option<bool>,
    /// Results waiting for the store, at most.
    pub(super) queue_rows: Option<Spanned<usize>>,
    /// Message bytes of the results waiting, at most, like "16MiB".
    pub(super) queue_bytes: Option<Spanned<String>>,
    /// How long results are kept, like "7d".
    pub(super) raw_retention: Option<Spanned<String>>,
    /// How long the minute, hour and day rollups are kept.
    pub(super) minute_retention: Option<Spanned<String>>,
    pub(super) hour_retention: Option<Spanned<String>>,
    pub(super) day_retention: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsage {
    /// Bearer token writers present; usually "${HEALTHHOST_USAGE_TOKEN}". None: the
    /// endpoint is off.
    pub(super) token: Option<Spanned<String>>,
    /// Bearer token readers of `GET /v1/usage/summary` present; usually
    /// "${HEALTHHOST_USAGE_READ_TOKEN}". None: that endpoint is off.
    pub(super) read_token: Option<Spanned<String>>,
    /// Rows one request may carry.
    pub(super) max_batch: Option<Spanned<usize>>,
    /// Distinct operation (and model) label values before `other`.
    pub(super) max_label_values: Option<Spanned<usize>>,
    /// The datasource holding `ai_usage`.
    pub(super) datasource: Option<Spanned<String>>,
    /// Whether `serve` creates and upgrades `ai_usage` at start.
    pub(super) migrate: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatasource {
    pub(super) url: Spanned<String>,
    /// Lets plugins use a role with powers over the database server's programs and
    /// files (see `Datasource::check_role`).
    #[serde(default)]
    pub(super) unsafe_allow_privileged_role: bool,
}

/// A check as written: a `[checks.NAME]` table, or a dropped-in check's grant file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    /// Path of the .wasm component (in config.toml; a grant file has none).
    pub(super) plugin: Option<Spanned<String>>,
    /// Hex SHA-256 the plugin file must have.
    pub(super) sha256: Option<Spanned<String>>,
    /// Whether a failure makes /health answer 503.
    #[serde(default)]
    pub(super) critical: bool,
    /// Run when /health asks (result reused for `interval`) instead of in the background.
    #[serde(default)]
    pub(super) on_demand: bool,
    /// How often to run, e.g. "30s".
    pub(super) interval: Option<Spanned<String>>,
    /// Age after which a result counts as failed, e.g. "2m".
    pub(super) max_age: Option<Spanned<String>>,
    /// Wall-clock limit per run, e.g. "3s".
    pub(super) timeout: Option<Spanned<String>>,
    /// Fuel per run.
    pub(super) fuel: Option<Spanned<u64>>,
    /// Linear memory per run, e.g. "64MiB".
    pub(super) memory: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) grants: RawGrants,
    #[serde(default)]
    pub(super) settings: BTreeMap<String, Spanned<toml::Value>>,
    /// The share of runs that must be up, like "99.9%".
    pub(super) slo: Option<Spanned<String>>,
    /// The window the SLO is measured over: 24h, 7d, 30d, 90d or 365d.
    pub(super) slo_window: Option<Spanned<String>>,
    /// Host-evaluated thresholds, by sample name: one table, or several (one per label
    /// set).
    #[serde(default)]
    pub(super) thresholds: BTreeMap<String, Spanned<RawThresholds>>,
}

/// The thresholds of one sample name: one table, or an array of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawThresholds {
    One(RawThreshold),
    Many(Vec<RawThreshold>),
}

/// `warn` and `crit` Nagios ranges, for the samples carrying `labels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThreshold {
    pub(super) warn: Option<String>,
    pub(super) crit: Option<String>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrants {
    #[serde(default)]
    pub(super) http: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) sql: Vec<Spanned<String>>,
    /// Sample names the check may export to /metrics (as `{namespace}_{name}`).
    #[serde(default)]
    pub(super) metrics: Vec<Spanned<String>>,
}
