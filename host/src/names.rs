//! Name rules shared across the host: metric and label names as Prometheus accepts
//! them, check names as files and URLs accept them, and the metric names the host
//! keeps for itself (a plugin sample may not take one, nor one that differs from it
//! by a series suffix such as a histogram's `_count`).

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
pub const HOST_METRICS: [&str; 23] = [
    "http_request_duration_seconds",
    "check_run_duration_seconds",
    "check_runs_total",
    "check_last_run_timestamp_seconds",
    "check_fuel_consumed",
    "check_peak_memory_bytes",
    "check_slo_target",
    "check_error_budget_remaining",
    "plugin_samples_dropped_total",
    "plugin_loads_total",
    "plugin_load_errors_total",
    "plugin_load_failing",
    "plugin_loads_pending",
    "plugin_compile_cache_total",
    "history_queued_results",
    "history_written_total",
    "history_dropped_total",
    "alert_transitions_total",
    "alert_deliveries_total",
    "alert_delivery_duration_seconds",
    "alert_queued_notifications",
    "alert_episodes_open",
    "alert_dropped_results_total",
];

/// Suffixes that name a family's series: a counter's `_total` and `_created`, a
/// histogram's or summary's `_bucket`, `_count` and `_sum`, a gauge histogram's
/// `_gcount` and `_gsum`, an info's `_info`. Prometheus and OpenMetrics add them to a
/// family's name or take them off a series' name, so two families whose names differ
/// by one of them can write the same series.
pub const SERIES_SUFFIXES: [&str; 8] = [
    "_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info",
];

/// `name` without one series suffix, if it has one.
fn stem(name: &str) -> &str {
    SERIES_SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// Whether families named `a` and `b` could write a series of the same name (or be
/// read as one family): the same name, or names that differ by series suffixes.
pub fn collides(a: &str, b: &str) -> bool {
    let (sa, sb) = (stem(a), stem(b));
    a == b || sa == sb || sa == b || a == sb
}

/// Whether `name` (without the namespace) belongs to the host: one of its families'
/// names, or such a name with a series suffix added or taken off.
pub fn reserved(name: &str) -> bool {
    PLAN_METRICS
        .iter()
        .chain(HOST_METRICS.iter())
        .any(|taken| collides(name, taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_is_reserved_with_every_series_suffix() {
        // Host histograms, counters and gauges, and the plan's.
        for name in [
            "check_run_duration_seconds",
            "check_run_duration_seconds_count",
            "check_run_duration_seconds_sum",
            "check_run_duration_seconds_bucket",
            "check_runs_total",
            "check_runs",
            "check_runs_created",
            "check_runs_count",
            "queue_depth_info",
            "ai_request_duration_seconds_sum",
            "requests",
        ] {
            assert!(reserved(name), "{name}");
        }
        for name in [
            "db_latency_seconds",
            "check_runs_total_rate",
            "queue",
            "sum",
        ] {
            assert!(!reserved(name), "{name}");
        }
    }

    #[test]
    fn collisions_are_symmetric() {
        for (a, b) in [
            ("x", "x"),
            ("x_count", "x"),
            ("x_sum", "x_total"),
            ("x_total_sum", "x_total"),
        ] {
            assert!(collides(a, b) && collides(b, a), "{a} {b}");
        }
        assert!(!collides("x", "y_count"));
    }
}
