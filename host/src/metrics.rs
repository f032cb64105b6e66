//! The Prometheus registry: the AdtroBot plan's metrics (names, help, labels and buckets as the
//! plan defines them), the host's own per-check metrics, HTTP instrumentation, and
//! process metrics — on one explicit registry, never the global one.
//!
//! Label values stay bounded: checks come from the config, outcomes from an enum, HTTP
//! handlers from matched routes only (unknown paths are never recorded), and plugin
//! samples reach `/metrics` only as [`crate::samples`] screens and admits them: valid,
//! bounded, granted, at most [`crate::limits::MAX_SERIES_PER_CHECK`] series per check.
//!
//! A scrape is rendered once and its text reused until something changes: every
//! change to a series is followed by [`Metrics::changed`], and a page is never older
//! than [`PAGE_TTL`] (for the process metrics, which change by themselves).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use prometheus::core::Collector;
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Counter, CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::instrumentator::{HttpMetrics, SUMMARIES, python_bounds};
use crate::runtime::{RunReport, Sample};
use crate::samples::{CHECK_LABEL, Dropped, admit};
use crate::sync::{lock, read, write};

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

/// How long gathered process metrics are reused. Reading `/proc` costs more than the
/// rest of a scrape, and CPU time and memory need no finer resolution than a second.
#[cfg(target_os = "linux")]
pub const PROCESS_METRICS_TTL: Duration = Duration::from_secs(1);

/// How long a rendered page is served again while nothing changes: the process
/// metrics' own cache period, so CPU time and memory are as fresh as they were before
/// pages were reused. A scrape costs ~50 µs to render; Prometheus scrapes every few
/// seconds, but load balancers and dashboards may poll far more often.
pub const PAGE_TTL: Duration = Duration::from_secs(1);

/// A rendered scrape and the change it reflects.
struct Page {
    generation: u64,
    at: Instant,
    text: Bytes,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// Bumped by [`Metrics::changed`]; a page rendered at an older one is stale.
    generation: AtomicU64,
    page: Mutex<Option<Page>>,
    namespace: String,
    #[cfg(target_os = "linux")]
    process: CachedProcess,
    /// The admitted samples of each check's latest run.
    samples: RwLock<BTreeMap<String, Vec<Sample>>>,
    /// Name, help and type of every family, so that families with no samples yet
    /// still show their `# HELP` and `# TYPE` lines.
    families: Vec<(String, String, &'static str)>,

    // The AdtroBot plan's metrics.
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
    /// prometheus-fastapi-instrumentator's families, without the namespace.
    pub http: HttpMetrics,

    // The host's own, per check.
    pub check_run_duration: HistogramVec,
    pub check_runs_total: IntCounterVec,
    pub check_last_run: GaugeVec,
    pub check_fuel: IntGaugeVec,
    pub check_peak_memory: IntGaugeVec,
    pub samples_dropped: IntCounterVec,
    pub plugin_loads: IntCounterVec,
    pub plugin_load_errors: IntCounterVec,
    pub plugin_load_failing: IntGaugeVec,
    pub plugin_loads_pending: IntGauge,
    pub compile_cache: IntCounterVec,
}

/// The process collector behind a short cache (see [`PROCESS_METRICS_TTL`]).
#[cfg(target_os = "linux")]
struct CachedProcess {
    collector: prometheus::process_collector::ProcessCollector,
    cache: Mutex<Option<(Instant, Vec<MetricFamily>)>>,
}

#[cfg(target_os = "linux")]
impl CachedProcess {
    fn gather(&self) -> Vec<MetricFamily> {
        let mut cache = lock(&self.cache);
        match &*cache {
            Some((at, families)) if at.elapsed() < PROCESS_METRICS_TTL => families.clone(),
            _ => {
                let mut families = self.collector.collect();
                fractional_cpu(&mut families);
                *cache = Some((Instant::now(), families.clone()));
                families
            }
        }
    }
}

/// Sets `process_cpu_seconds_total` to the CPU time with its fractions: the
/// collector divides clock ticks by their rate in integers, so the counter moves in
/// whole seconds (0, then 1 after 1.42 s).
#[cfg(target_os = "linux")]
fn fractional_cpu(families: &mut [MetricFamily]) {
    let Ok(stat) = procfs::process::Process::myself().and_then(|p| p.stat()) else {
        return;
    };
    let seconds = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    for family in families
        .iter_mut()
        .filter(|f| f.name() == "process_cpu_seconds_total")
    {
        for metric in family.mut_metric() {
            let mut counter = prometheus::proto::Counter::default();
            counter.set_value(seconds);
            metric.set_counter(counter);
        }
    }
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

        let samples_dropped = b.counter_vec(
            "plugin_samples_dropped_total",
            "Plugin samples kept out of /metrics, by reason (invalid-name, invalid-value, invalid-label, reserved-label, secret, too-large, too-many, not-granted, host-name, duplicate, series-cap)",
            &["check", "reason"],
        )?;
        let plugin_loads = b.counter_vec(
            "plugin_loads_total",
            "Versions of a dropped-in check loaded from the plugins folder",
            &["check"],
        )?;
        let plugin_load_errors = b.counter_vec(
            "plugin_load_errors_total",
            "Failed loads of a check's plugin file (invalid, wrong world, bad grant file, hash mismatch)",
            &["check"],
        )?;
        let plugin_load_failing = b.gauge_vec(
            "plugin_load_failing",
            "1 while the newest file of a check failed to load (an older version may still run)",
            &["check"],
        )?;
        let name = b.name("plugin_loads_pending");
        let help = "Plugins being compiled or waiting to be (start-up, and changed drop-ins)";
        let plugin_loads_pending =
            b.add(name.clone(), help, "gauge", IntGauge::new(&name, help)?)?;
        let compile_cache = b.counter_vec(
            "plugin_compile_cache_total",
            "Compile cache lookups by result (hit, miss, corrupt)",
            &["result"],
        )?;

        let http = HttpMetrics::register(&b.registry)?;
        for (name, help) in SUMMARIES {
            b.families
                .push((name.to_owned(), help.to_owned(), "summary"));
        }

        for period in ACTIVE_USER_PERIODS {
            active_users.with_label_values(&[period]).set(0);
        }
        for state in QUEUE_STATES {
            queue_depth.with_label_values(&[state]).set(0);
        }

        Ok(Metrics {
            registry: b.registry,
            namespace: namespace.to_owned(),
            #[cfg(target_os = "linux")]
            process: CachedProcess {
                collector: prometheus::process_collector::ProcessCollector::for_self(),
                cache: Mutex::new(None),
            },
            samples: RwLock::default(),
            generation: AtomicU64::new(0),
            page: Mutex::new(None),
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
            http,
            check_run_duration,
            check_runs_total,
            check_last_run,
            check_fuel,
            check_peak_memory,
            samples_dropped,
            plugin_loads,
            plugin_load_errors,
            plugin_load_failing,
            plugin_loads_pending,
            compile_cache,
        })
    }

    /// Records one finished run of `check`; its samples named in `granted` replace the
    /// check's previous ones in `/metrics`.
    pub fn record_run(
        &self,
        report: &RunReport,
        granted: &BTreeSet<String>,
        healthy: bool,
        finished_unix: f64,
    ) {
        let check = report.check.as_str();
        let (admitted, dropped) = admit(&report.samples, granted, |name| self.host_name(name));
        for (reason, count) in report.samples_dropped.iter().chain(&dropped) {
            self.samples_dropped
                .with_label_values(&[check, reason.label()])
                .inc_by(*count);
        }
        write(&self.samples).insert(check.to_owned(), admitted.into_iter().cloned().collect());
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
        self.changed();
    }

    /// Whether a plugin sample named `name` would be exported as `{namespace}_{name}`
    /// into a family of the host's (its own, the instrumentator's, the process
    /// collector's), counting series suffixes: a namespace can make one of them.
    pub fn host_name(&self, name: &str) -> bool {
        let exported = format!("{}_{name}", self.namespace);
        #[cfg(target_os = "linux")]
        let process = self.process.collector.desc();
        #[cfg(not(target_os = "linux"))]
        let process: Vec<&prometheus::core::Desc> = Vec::new();
        let families = self.families.iter().map(|(family, _, _)| family.as_str());
        families
            .chain(crate::instrumentator::FAMILIES)
            .chain(process.iter().map(|d| d.fq_name.as_str()))
            .any(|family| crate::names::collides(&exported, family))
    }

    /// Says that a series changed, so the next scrape renders a new page. Whoever
    /// changes one of the public metrics calls it after the change.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Removes every series of a check that no longer exists.
    pub fn forget(&self, check: &str) {
        // Errors only say a series did not exist.
        for vec in [
            &self.health_check_status,
            &self.check_fuel,
            &self.check_peak_memory,
            &self.plugin_load_failing,
        ] {
            let _ = vec.remove_label_values(&[check]);
        }
        let _ = self.check_run_duration.remove_label_values(&[check]);
        let _ = self.check_last_run.remove_label_values(&[check]);
        for vec in [&self.plugin_loads, &self.plugin_load_errors] {
            let _ = vec.remove_label_values(&[check]);
        }
        for outcome in crate::runtime::Outcome::ALL {
            let _ = self
                .check_runs_total
                .remove_label_values(&[check, outcome.label()]);
        }
        for reason in Dropped::ALL {
            let _ = self
                .samples_dropped
                .remove_label_values(&[check, reason.label()]);
        }
        write(&self.samples).remove(check);
        self.changed();
    }

    /// The admitted samples of every check, as gauge families `{namespace}_{name}` with
    /// the check's name as the `check` label.
    fn sample_families(&self) -> Vec<MetricFamily> {
        let samples = read(&self.samples);
        let mut families: BTreeMap<&str, MetricFamily> = BTreeMap::new();
        for (check, list) in samples.iter() {
            for sample in list {
                let family = families.entry(&sample.name).or_insert_with(|| {
                    let mut f = MetricFamily::default();
                    f.set_name(format!("{}_{}", self.namespace, sample.name));
                    f.set_help("Sample reported by a check plugin".to_owned());
                    f.set_field_type(MetricType::GAUGE);
                    f
                });
                let mut gauge = Gauge::default();
                gauge.set_value(sample.value);
                let mut metric = Metric::from_gauge(gauge);
                let labels = std::iter::once((CHECK_LABEL, check.as_str()))
                    .chain(sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map(|(k, v)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(k.to_owned());
                        pair.set_value(v.to_owned());
                        pair
                    })
                    .collect();
                metric.set_label(labels);
                family.mut_metric().push(metric);
            }
        }
        families.into_values().collect()
    }

    /// The Prometheus text exposition of every metric: the last page while nothing
    /// changed and it is younger than [`PAGE_TTL`], else a new one.
    pub fn scrape(&self) -> Bytes {
        // Read before rendering: a change during the render makes the page newer
        // than its label, never older.
        let generation = self.generation.load(Ordering::Acquire);
        let mut page = lock(&self.page);
        if let Some(p) = page.as_ref()
            && p.generation == generation
            && p.at.elapsed() < PAGE_TTL
        {
            return p.text.clone();
        }
        let text = Bytes::from(self.render());
        *page = Some(Page {
            generation,
            at: Instant::now(),
            text: text.clone(),
        });
        text
    }

    /// The Prometheus text exposition of every metric, rendered now.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        #[cfg(target_os = "linux")]
        families.extend(self.process.gather());
        families.extend(self.sample_families());
        families.extend(self.http.summaries());
        let mut text = TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| {
                tracing::error!("cannot encode the metrics: {e}");
                String::new()
            });
        for (name, help, kind) in &self.families {
            if !families.iter().any(|f| f.name() == name) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        python_bounds(&text)
    }
}

#[cfg(test)]
mod tests;
