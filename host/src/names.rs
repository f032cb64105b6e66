//! Name rules shared across the host: metric and label names as Prometheus accepts
//! them, check names as files and URLs accept them, and the metric names the host
//! keeps for itself (a plugin sample may not take one).

/// Prometheus metric and label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Check and datasource names: letters, digits, `-` and `_` (they become file names,
/// URL path segments and label values).
pub fn valid_check_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The AdtroBot monitoring plan's metric names, without the namespace.
pub const PLAN_METRICS: [&str; 12] = [
    "requests_total",
    "errors_total",
    "ai_request_duration_seconds",
    "ai_tokens_total",
    "ai_cost_dollars_total",
    "ai_requests_total",
    "active_users",
    "subscription_conversions_total",
    "revenue_rubles_total",
    "queue_depth",
    "health_check_status",
    "requests_in_progress",
];

/// The host's own metric names (besides the plan's), without the namespace. Plugin
/// samples may not take these names, nor the plan's.
pub const HOST_METRICS: [&str; 12] = [
    "http_request_duration_seconds",
    "check_run_duration_seconds",
    "check_runs_total",
    "check_last_run_timestamp_seconds",
    "check_fuel_consumed",
    "check_peak_memory_bytes",
    "plugin_samples_dropped_total",
    "plugin_loads_total",
    "plugin_load_errors_total",
    "plugin_load_failing",
    "plugin_loads_pending",
    "plugin_compile_cache_total",
];

/// Whether `name` (without the namespace) belongs to the host.
pub fn reserved(name: &str) -> bool {
    PLAN_METRICS.contains(&name) || HOST_METRICS.contains(&name)
}
