//! The Prometheus registry: the seed's metrics (names, help, labels and buckets as the
//! seed defines them), the host's own per-check metrics, HTTP instrumentation, and
//! process metrics — on one explicit registry, never the global one.
//!
//! Label values stay bounded: checks come from the config, outcomes from an enum, HTTP
//! handlers from matched routes only (unknown paths are never recorded).

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::runtime::RunReport;

/// The seed's buckets for AI request durations, in seconds.
pub const AI_DURATION_BUCKETS: [f64; 7] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets for check run durations: health checks take milliseconds to seconds.
pub const CHECK_DURATION_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Buckets for HTTP request durations (prometheus-fastapi-instrumentator's defaults).
pub const HTTP_DURATION_BUCKETS: [f64; 3] = [0.1, 0.5, 1.0];
/// Periods of the seed's active-users gauge.
pub const ACTIVE_USER_PERIODS: [&str; 3] = ["dau", "wau", "mau"];
/// States of the seed's queue-depth gauge.
pub const QUEUE_STATES: [&str; 3] = ["pending", "failed", "completed"];

/// The seed's metric names (Task 2), without the namespace.
pub const SEED_METRICS: [&str; 12] = [
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

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// Name, help and type of every family, so that families with no samples yet
    /// still show their `# HELP` and `# TYPE` lines.
    families: Vec<(String, String, &'static str)>,

    // The seed's metrics (Task 2).
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

    // HTTP instrumentation.
    pub requests_in_progress: IntGaugeVec,
    pub request_duration: HistogramVec,

    // The host's own, per check.
    pub check_run_duration: HistogramVec,
    pub check_runs_total: IntCounterVec,
    pub check_last_run: GaugeVec,
    pub check_fuel: IntGaugeVec,
    pub check_peak_memory: IntGaugeVec,
}

/// A metric name that the registry refused (a duplicate or an invalid namespace).
#[derive(Debug, thiserror::Error)]
#[error("cannot register metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

struct Builder {
    ns: String,
    registry: Registry,
    families: Vec<(String, String, &'static str)>,
}

impl Builder {
    fn name(&self, name: &str) -> String {
        format!("{}_{name}", self.ns)
    }

    fn add<C: Collector + Clone + 'static>(
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

    fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let name = self.name(name);
        let c = IntCounterVec::new(Opts::new(&name, help), labels)?;
        self.add(name, help, "counter", c)
    }

    fn float_counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<CounterVec, MetricsError> {
        let name = self.name(name);
        let c = CounterVec::new(Opts::new(&name, help), labels)?;
        self.add(name, help, "counter", c)
    }

    fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        let name = self.name(name);
        let g = IntGaugeVec::new(Opts::new(&name, help), labels)?;
        self.add(name, help, "gauge", g)
    }

    fn histogram_vec(
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

impl Metrics {
    /// Registers every metric under `namespace` (e.g. `adtrobot`).
    pub fn new(namespace: &str) -> Result<Metrics, MetricsError> {
        let mut b = Builder {
            ns: namespace.to_owned(),
            registry: Registry::new(),
            families: Vec::new(),
        };
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
        let name = b.name("subscription_conversions_total");
        let subscription_conversions = IntCounter::new(&name, "Total subscription conversions")?;
        let subscription_conversions = b.add(
            name,
            "Total subscription conversions",
            "counter",
            subscription_conversions,
        )?;
        let name = b.name("revenue_rubles_total");
        let revenue_total = Counter::new(&name, "Total revenue in rubles")?;
        let revenue_total = b.add(name, "Total revenue in rubles", "counter", revenue_total)?;
        let queue_depth = b.gauge_vec("queue_depth", "Background queue depth", &["status"])?;
        let health_check_status = b.gauge_vec(
            "health_check_status",
            "Health check status (1=healthy, 0=unhealthy)",
            &["check"],
        )?;

        let requests_in_progress = b.gauge_vec(
            "requests_in_progress",
            "HTTP requests being served",
            &["handler", "method"],
        )?;
        let request_duration = b.histogram_vec(
            "http_request_duration_seconds",
            "HTTP request duration in seconds",
            &["handler", "method"],
            &HTTP_DURATION_BUCKETS,
        )?;

        let check_run_duration = b.histogram_vec(
            "check_run_duration_seconds",
            "Duration of one check run in seconds (instantiate and call)",
            &["check"],
            &CHECK_DURATION_BUCKETS,
        )?;
        let check_runs_total = b.counter_vec(
            "check_runs_total",
            "Check runs by outcome (pass, warn, fail, timeout, out-of-fuel, memory, trap, load)",
            &["check", "outcome"],
        )?;
        let name = b.name("check_last_run_timestamp_seconds");
        let check_last_run = GaugeVec::new(
            Opts::new(&name, "Unix time the check's last run finished"),
            &["check"],
        )?;
        let check_last_run = b.add(
            name,
            "Unix time the check's last run finished",
            "gauge",
            check_last_run,
        )?;
        let check_fuel = b.gauge_vec(
            "check_fuel_consumed",
            "Fuel the check's last run burned",
            &["check"],
        )?;
        let check_peak_memory = b.gauge_vec(
            "check_peak_memory_bytes",
            "Peak linear memory of the check's last run",
            &["check"],
        )?;

        #[cfg(target_os = "linux")]
        b.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        for period in ACTIVE_USER_PERIODS {
            active_users.with_label_values(&[period]).set(0);
        }
        for state in QUEUE_STATES {
            queue_depth.with_label_values(&[state]).set(0);
        }

        Ok(Metrics {
            registry: b.registry,
            families: b.families,
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
            requests_in_progress,
            request_duration,
            check_run_duration,
            check_runs_total,
            check_last_run,
            check_fuel,
            check_peak_memory,
        })
    }

    /// Records one finished run of `check`.
    pub fn record_run(&self, report: &RunReport, healthy: bool, finished_unix: f64) {
        let check = report.check.as_str();
        self.check_run_duration
            .with_label_values(&[check])
            .observe(report.latency.as_secs_f64());
        self.check_runs_total
            .with_label_values(&[check, report.outcome.label()])
            .inc();
        self.check_last_run
            .with_label_values(&[check])
            .set(finished_unix);
        self.check_fuel
            .with_label_values(&[check])
            .set(i64::try_from(report.fuel_consumed).unwrap_or(i64::MAX));
        self.check_peak_memory
            .with_label_values(&[check])
            .set(i64::try_from(report.peak_memory_bytes).unwrap_or(i64::MAX));
        self.health_check_status
            .with_label_values(&[check])
            .set(i64::from(healthy));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut text = TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default();
        for (name, help, kind) in &self.families {
            if !families.iter().any(|f| f.name() == name) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_metric_is_exposed_even_before_it_has_samples() {
        let text = Metrics::new("adtrobot").unwrap().render();
        for name in SEED_METRICS {
            assert!(
                text.contains(&format!("# TYPE adtrobot_{name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(
            text.contains("adtrobot_active_users{period=\"dau\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn ai_duration_uses_the_seeds_buckets() {
        let m = Metrics::new("x").unwrap();
        m.ai_request_duration
            .with_label_values(&["tarot", "m"])
            .observe(3.0);
        let text = m.render();
        for le in ["0.5", "1", "2.5", "5", "10", "30", "60"] {
            assert!(
                text.contains(&format!("le=\"{le}\"")),
                "bucket {le} missing:\n{text}"
            );
        }
    }
}
