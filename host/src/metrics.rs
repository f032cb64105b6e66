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
use prometheus::{HistogramVec, IntGaugeVec, Registry, TextEncoder};

use crate::instrumentator::{HttpMetrics, SUMMARIES, python_bounds};
use crate::runtime::RunReport;
use crate::samples::{CHECK_LABEL, Dropped, Sample, admit};
use crate::sync::{lock, read, write};
use families::{
    AlertMetrics, Builder, CheckMetrics, HTTP_DURATION_BUCKETS, HistoryMetrics, PlanMetrics,
    PluginMetrics,
};

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

    /// The AdtroBot plan's metrics.
    pub plan: PlanMetrics,

    // HTTP instrumentation.
    pub requests_in_progress: IntGaugeVec,
    pub request_duration: HistogramVec,
    /// prometheus-fastapi-instrumentator's families, without the namespace.
    pub http: HttpMetrics,

    /// The host's own, per check.
    pub checks: CheckMetrics,
    /// Plugin loading and compiling.
    pub plugins: PluginMetrics,
    /// The history store's writer.
    pub history: HistoryMetrics,
    /// Alerting's evaluator and deliverers.
    pub alerts: AlertMetrics,
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

impl Metrics {
    /// Registers every metric under `namespace` (e.g. `adtrobot`).
    pub fn new(namespace: &str) -> Result<Metrics, MetricsError> {
        let mut b = Builder {
            ns: namespace.to_owned(),
            registry: Registry::new(),
            families: Vec::new(),
        };
        let plan = PlanMetrics::register(&mut b)?;
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
        let checks = CheckMetrics::register(&mut b)?;
        let plugins = PluginMetrics::register(&mut b)?;
        let history = HistoryMetrics::register(&mut b)?;
        let alerts = AlertMetrics::register(&mut b)?;
        let http = HttpMetrics::register(&b.registry)?;
        for (name, help) in SUMMARIES {
            b.families
                .push((name.to_owned(), help.to_owned(), "summary"));
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
            plan,
            requests_in_progress,
            request_duration,
            http,
            checks,
            plugins,
            history,
            alerts,
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
            self.checks
                .samples_dropped
                .with_label_values(&[check, reason.label()])
                .inc_by(*count);
        }
        write(&self.samples).insert(check.to_owned(), admitted.into_iter().cloned().collect());
        self.checks
            .run_duration
            .with_label_values(&[check])
            .observe(report.latency.as_secs_f64());
        self.checks
            .runs_total
            .with_label_values(&[check, report.outcome.label()])
            .inc();
        self.checks
            .last_run
            .with_label_values(&[check])
            .set(finished_unix);
        self.checks
            .fuel
            .with_label_values(&[check])
            .set(i64::try_from(report.fuel_consumed).unwrap_or(i64::MAX));
        self.checks
            .peak_memory
            .with_label_values(&[check])
            .set(i64::try_from(report.peak_memory_bytes).unwrap_or(i64::MAX));
        self.plan
            .health_check_status
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
            &self.plan.health_check_status,
            &self.checks.fuel,
            &self.checks.peak_memory,
            &self.plugins.load_failing,
        ] {
            let _ = vec.remove_label_values(&[check]);
        }
        let _ = self.checks.run_duration.remove_label_values(&[check]);
        let _ = self.checks.last_run.remove_label_values(&[check]);
        let _ = self.checks.slo_target.remove_label_values(&[check]);
        let _ = self
            .checks
            .error_budget_remaining
            .remove_label_values(&[check]);
        for vec in [&self.plugins.loads, &self.plugins.load_errors] {
            let _ = vec.remove_label_values(&[check]);
        }
        for outcome in crate::runtime::Outcome::ALL {
            let _ = self
                .checks
                .runs_total
                .remove_label_values(&[check, outcome.label()]);
        }
        for reason in Dropped::ALL {
            let _ = self
                .checks
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

pub mod families;
#[cfg(test)]
mod tests;
