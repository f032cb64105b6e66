//! The metric families the host registers, in groups: the AdtroBot plan's
//! ([`PlanMetrics`], with its names, help, labels and buckets), the host's own per check
//! ([`CheckMetrics`]) and of plugin loads ([`PluginMetrics`]), and the `Builder` that
//! registers each under the namespace.

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

use super::MetricsError;

/// The plan's buckets for AI request durations, in seconds.
pub const AI_DURATION_BUCKETS: [f64; 7] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets for check run durations: health checks take milliseconds to seconds.
pub const CHECK_DURATION_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Buckets for HTTP request durations (prometheus-fastapi-instrumentator's defaults).
pub const HTTP_DURATION_BUCKETS: [f64; 3] = [0.1, 0.5, 1.0];
/// Periods of the plan's active-users gauge.
pub const ACTIVE_USER_PERIODS: [&str; 3] = ["dau", "wau", "mau"];
/// States of the plan's queue-depth gauge.
pub const QUEUE_STATES: [&str; 3] = ["pending", "failed", "completed"];

/// The AdtroBot plan's metrics, with its names, help, labels and buckets.
pub struct PlanMetrics {
    pub requests_total: IntCounterVec,
    pub errors_total: IntCounterVec,
    pub ai_request_duration: HistogramVec,
    pub ai_tokens_total: IntCounterVec,
    pub ai_cost_total: CounterVec,
    pub ai_requests_total: IntCounterVec,
    pub active_users: IntGaugeVec,
    pub subscription_conversions: IntCounter,
    pub revenue_total: Counter,
    pub queue_depth: IntGaugeVec,
    pub health_check_status: IntGaugeVec,
}

/// The host's metrics of each check's runs.
pub struct CheckMetrics {
    pub run_duration: HistogramVec,
    pub runs_total: IntCounterVec,
    pub last_run: GaugeVec,
    pub fuel: IntGaugeVec,
    pub peak_memory: IntGaugeVec,
    pub samples_dropped: IntCounterVec,
    /// A check's SLO target, as a fraction (0.999).
    pub slo_target: GaugeVec,
    /// What is left of a check's error budget over its SLO window, as a fraction.
    pub error_budget_remaining: GaugeVec,
}

/// The history store's writer (`journal`): what waits, what was written, what was lost.
pub struct HistoryMetrics {
    pub queued: IntGauge,
    pub written: IntCounter,
    pub dropped: IntCounter,
}

impl HistoryMetrics {
    pub(super) fn register(b: &mut Builder) -> Result<HistoryMetrics, MetricsError> {
        let queued = b.gauge(
            "history_queued_results",
            "Check results waiting to be written to the history store",
        )?;
        let written = b.counter(
            "history_written_total",
            "Check results written to the history store",
        )?;
        let dropped = b.counter(
            "history_dropped_total",
            "Check results the history store never got (queue full, or refused)",
        )?;
        Ok(HistoryMetrics {
            queued,
            written,
            dropped,
        })
    }
}

/// Alerting: transitions recorded, notifications delivered and waiting, episodes open.
pub struct AlertMetrics {
    /// Episode changes this replica recorded, by change (open, reminder, close).
    pub transitions: IntCounterVec,
    /// Delivery attempts by channel and result (sent, retried, failed).
    pub deliveries: IntCounterVec,
    pub delivery_duration: HistogramVec,
    /// Notifications waiting, by channel (as of the last read of the store).
    pub queued: IntGaugeVec,
    pub episodes_open: IntGauge,
    /// Results alerting never saw (its queue was full).
    pub dropped: IntCounter,
}

/// Buckets for one delivery attempt: a chat API answers in tens of milliseconds to
/// seconds; the channel's timeout (10 s by default) ends the rest.
pub const DELIVERY_DURATION_BUCKETS: [f64; 7] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl AlertMetrics {
    pub(super) fn register(b: &mut Builder) -> Result<AlertMetrics, MetricsError> {
        let transitions = b.counter_vec(
            "alert_transitions_total",
            "Alert episode changes this replica recorded in the store",
            &["change"],
        )?;
        let deliveries = b.counter_vec(
            "alert_deliveries_total",
            "Alert delivery attempts by channel and result (sent, retried, failed)",
            &["channel", "result"],
        )?;
        let delivery_duration = b.histogram_vec(
            "alert_delivery_duration_seconds",
            "Duration of one alert delivery attempt",
            &["channel"],
            &DELIVERY_DURATION_BUCKETS,
        )?;
        let queued = b.gauge_vec(
            "alert_queued_notifications",
            "Alert notifications waiting for delivery, by channel",
            &["channel"],
        )?;
        let episodes_open = b.gauge(
            "alert_episodes_open",
            "Alert episodes open (per rule and check)",
        )?;
        let dropped = b.counter(
            "alert_dropped_results_total",
            "Check results alerting did not evaluate (its queue was full)",
        )?;
        Ok(AlertMetrics {
            transitions,
            deliveries,
            delivery_duration,
            queued,
            episodes_open,
            dropped,
        })
    }
}

/// The host's metrics of plugin loads and compiles.
pub struct PluginMetrics {
    pub loads: IntCounterVec,
    pub load_errors: IntCounterVec,
    pub load_failing: IntGaugeVec,
    pub loads_pending: IntGauge,
    pub compile_cache: IntCounterVec,
}

/// Registers each family on one registry under the namespace, and remembers its name,
/// help and type.
pub(super) struct Builder {
    pub(super) ns: String,
    pub(super) registry: Registry,
    pub(super) families: Vec<(String, String, &'static str)>,
}

impl Builder {
    pub(super) fn name(&self, name: &str) -> String {
        format!("{}_{name}", self.ns)
    }

    pub(super) fn add<C: Collector + Clone + 'static>(
        &mut self,
        name: String,
        help: &str,
        kind: &'static str,
        c: C,
    ) -> Result<C, MetricsError> {
        self.registry.register(Box::new(c.clone()))?;
        self.families.push((name, help.to_owned(), kind));
        Ok(c)
    }

    pub(super) fn counter(&mut self, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
        let name = self.name(name);
        let c = IntCounter::new(&name, help)?;
        self.add(name, help, "counter", c)
    }

    pub(super) fn gauge(&mut self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        let name = self.name(name);
        let g = IntGauge::new(&name, help)?;
        self.add(name, help, "gauge", g)
    }

    pub(super) fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let name = self.name(name);
        let c = IntCounterVec::new(Opts::new(&name, help), labels)?;
        self.add(name, help, "counter", c)
    }

    pub(super) fn float_counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<CounterVec, MetricsError> {
        let name = self.name(name);
        let c = CounterVec::new(Opts::new(&name, help), labels)?;
        self.add(name, help, "counter", c)
    }

    pub(super) fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        let name = self.name(name);
        let g = IntGaugeVec::new(Opts::new(&name, help), labels)?;
        self.add(name, help, "gauge", g)
    }

    pub(super) fn histogram_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricsError> {
        let name = self.name(name);
        let h = HistogramVec::new(
            HistogramOpts::new(&name, help).buckets(buckets.to_vec()),
            labels,
        )?;
        self.add(name, help, "histogram", h)
    }
}

impl PlanMetrics {
    pub(super) fn register(b: &mut Builder) -> Result<PlanMetrics, MetricsError> {
        let requests_total = b.counter_vec(
            "requests_total",
            "Total HTTP requests",
            &["handler", "method", "status"],
        )?;
        let errors_total = b.counter_vec(
            "errors_total",
            "Total errors by type",
            &["handler", "error_type"],
        )?;
        let ai_request_duration = b.histogram_vec(
            "ai_request_duration_seconds",
            "AI request duration in seconds",
            &["operation", "model"],
            &AI_DURATION_BUCKETS,
        )?;
        let ai_tokens_total = b.counter_vec(
            "ai_tokens_total",
            "Total AI tokens used",
            &["operation", "model", "token_type"],
        )?;
        let ai_cost_total = b.float_counter_vec(
            "ai_cost_dollars_total",
            "Total AI cost in dollars",
            &["operation", "model"],
        )?;
        let ai_requests_total = b.counter_vec(
            "ai_requests_total",
            "Total AI requests",
            &["operation", "model", "status"],
        )?;
        let active_users = b.gauge_vec("active_users", "Active users count", &["period"])?;
        for period in ACTIVE_USER_PERIODS {
            active_users.with_label_values(&[period]).set(0);
        }
        let subscription_conversions = b.counter(
            "subscription_conversions_total",
            "Total subscription conversions",
        )?;
        let help = "Total revenue in rubles";
        let name = b.name("revenue_rubles_total");
        let revenue_total = b.add(name.clone(), help, "counter", Counter::new(&name, help)?)?;
        let queue_depth = b.gauge_vec("queue_depth", "Background queue depth", &["status"])?;
        for state in QUEUE_STATES {
            queue_depth.with_label_values(&[state]).set(0);
        }
        let health_check_status = b.gauge_vec(
            "health_check_status",
            "Health check status (1=healthy, 0=unhealthy)",
            &["check"],
        )?;
        Ok(PlanMetrics {
            requests_total,
            errors_total,
            ai_request_duration,
            ai_tokens_total,
            ai_cost_total,
            ai_requests_total,
            active_users,
            subscription_conversions,
            revenue_total,
            queue_depth,
            health_check_status,
        })
    }
}

impl CheckMetrics {
    pub(super) fn register(b: &mut Builder) -> Result<CheckMetrics, MetricsError> {
        let run_duration = b.histogram_vec(
            "check_run_duration_seconds",
            "Duration of one check run in seconds (instantiate and call)",
            &["check"],
            &CHECK_DURATION_BUCKETS,
        )?;
        let runs_total = b.counter_vec(
            "check_runs_total",
            "Check runs by outcome (pass, warn, fail, timeout, out-of-fuel, memory, trap, load)",
            &["check", "outcome"],
        )?;
        let help = "Unix time the check's last run finished";
        let name = b.name("check_last_run_timestamp_seconds");
        let last_run = GaugeVec::new(Opts::new(&name, help), &["check"])?;
        let last_run = b.add(name, help, "gauge", last_run)?;
        let fuel = b.gauge_vec(
            "check_fuel_consumed",
            "Fuel the check's last run burned",
            &["check"],
        )?;
        let peak_memory = b.gauge_vec(
            "check_peak_memory_bytes",
            "Peak linear memory of the check's last run",
            &["check"],
        )?;
        let samples_dropped = b.counter_vec(
            "plugin_samples_dropped_total",
            "Plugin samples kept out of /metrics, by reason (invalid-name, invalid-value, invalid-label, reserved-label, secret, too-large, too-many, not-granted, host-name, duplicate, series-cap)",
            &["check", "reason"],
        )?;
        let help = "The check's SLO target, as a fraction of runs up over its window";
        let name = b.name("check_slo_target");
        let slo_target = b.add(
            name.clone(),
            help,
            "gauge",
            GaugeVec::new(Opts::new(&name, help), &["check"])?,
        )?;
        let help = "What is left of the check's error budget over its SLO window (1 unspent, 0 spent, below 0 overspent)";
        let name = b.name("check_error_budget_remaining");
        let error_budget_remaining = b.add(
            name.clone(),
            help,
            "gauge",
            GaugeVec::new(Opts::new(&name, help), &["check"])?,
        )?;
        Ok(CheckMetrics {
            slo_target,
            error_budget_remaining,
            run_duration,
            runs_total,
            last_run,
            fuel,
            peak_memory,
            samples_dropped,
        })
    }
}

impl PluginMetrics {
    pub(super) fn register(b: &mut Builder) -> Result<PluginMetrics, MetricsError> {
        let loads = b.counter_vec(
            "plugin_loads_total",
            "Versions of a dropped-in check loaded from the plugins folder",
            &["check"],
        )?;
        let load_errors = b.counter_vec(
            "plugin_load_errors_total",
            "Failed loads of a check's plugin file (invalid, wrong world, bad grant file, hash mismatch)",
            &["check"],
        )?;
        let load_failing = b.gauge_vec(
            "plugin_load_failing",
            "1 while the newest file of a check failed to load (an older version may still run)",
            &["check"],
        )?;
        let loads_pending = b.gauge(
            "plugin_loads_pending",
            "Plugins being compiled or waiting to be (start-up, and changed drop-ins)",
        )?;
        let compile_cache = b.counter_vec(
            "plugin_compile_cache_total",
            "Compile cache lookups by result (hit, miss, corrupt)",
            &["result"],
        )?;
        Ok(PluginMetrics {
            loads,
            load_errors,
            load_failing,
            loads_pending,
            compile_cache,
        })
    }
}
