//! The HTTP metrics the bot's Python app exported through
//! prometheus-fastapi-instrumentator, with the bot's settings, so that dashboards and
//! alerts written for the bot work unchanged: the library's five default families,
//! under its names (no namespace), labels and buckets, and the Python client's
//! spelling of bucket bounds (`le="1.0"`).
//!
//! The bot's settings and what they mean here: `should_group_status_codes` (status
//! `2xx`, `4xx`, …), `should_ignore_untemplated` (only matched routes are recorded),
//! `excluded_handlers=["/health", "/metrics"]` (patterns searched in the route, so
//! `/health/{check}` is excluded too). The library's defaults: request and response
//! sizes are the `Content-Length` headers (0 without one), summaries without
//! quantiles, the high-resolution histogram for every status.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::sync::lock;
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Summary};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// prometheus-fastapi-instrumentator's `latency_lowr_buckets` default.
pub const LOWR_BUCKETS: [f64; 3] = [0.1, 0.5, 1.0];
/// prometheus-fastapi-instrumentator's `latency_highr_buckets` default.
pub const HIGHR_BUCKETS: [f64; 21] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    7.5, 10.0, 30.0, 60.0,
];
/// Route patterns the bot excludes (`excluded_handlers`), searched in the route.
pub const EXCLUDED_HANDLERS: [&str; 2] = ["/health", "/metrics"];

/// The family names, for reserving them and for the table in `docs/metrics.md`.
pub const FAMILIES: [&str; 5] = [
    "http_requests_total",
    "http_request_size_bytes",
    "http_response_size_bytes",
    "http_request_duration_highr_seconds",
    "http_request_duration_seconds",
];

const REQUEST_SIZE_HELP: &str = "Content length of incoming requests by handler. Only value of header is respected. Otherwise ignored. No percentile calculated. ";
const RESPONSE_SIZE_HELP: &str = "Content length of outgoing responses by handler. Only value of header is respected. Otherwise ignored. No percentile calculated. ";

/// The summaries' names and help texts: [`HttpMetrics::summaries`] leaves out those
/// with no series yet, whose `# HELP` and `# TYPE` lines the caller writes.
pub const SUMMARIES: [(&str, &str); 2] = [
    ("http_request_size_bytes", REQUEST_SIZE_HELP),
    ("http_response_size_bytes", RESPONSE_SIZE_HELP),
];

/// One request, as the middleware saw it.
pub struct Observation<'a> {
    /// The matched route, e.g. `/v1/ai-usage`.
    pub handler: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub seconds: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// The instrumentator's families.
pub struct HttpMetrics {
    requests_total: IntCounterVec,
    duration: HistogramVec,
    duration_highr: Histogram,
    /// Count and sum of request and response sizes, by handler: summaries without
    /// quantiles, which the Rust client has no type for.
    sizes: Mutex<BTreeMap<String, Sizes>>,
}

#[derive(Default, Clone, Copy)]
struct Sizes {
    count: u64,
    request_sum: f64,
    response_sum: f64,
}

impl HttpMetrics {
    /// Registers the counter and histograms; the summaries are rendered by
    /// [`HttpMetrics::summaries`].
    pub fn register(registry: &Registry) -> prometheus::Result<HttpMetrics> {
        let requests_total = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "Total number of requests by method, status and handler.",
            ),
            &["method", "status", "handler"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important. ",
            )
            .buckets(LOWR_BUCKETS.to_vec()),
            &["method", "handler"],
        )?;
        let duration_highr = Histogram::with_opts(
            HistogramOpts::new(
                "http_request_duration_highr_seconds",
                "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations. ",
            )
            .buckets(HIGHR_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(requests_total.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(duration_highr.clone()))?;
        Ok(HttpMetrics {
            requests_total,
            duration,
            duration_highr,
            sizes: Mutex::default(),
        })
    }

    /// Whether requests to `route` are recorded (see the module's header).
    pub fn records(route: &str) -> bool {
        !EXCLUDED_HANDLERS.iter().any(|p| route.contains(p))
    }

    /// Records one request to a route that [`HttpMetrics::records`].
    pub fn observe(&self, o: &Observation<'_>) {
        let status = format!("{}xx", o.status / 100);
        self.requests_total
            .with_label_values(&[o.method, status.as_str(), o.handler])
            .inc();
        self.duration
            .with_label_values(&[o.method, o.handler])
            .observe(o.seconds);
        self.duration_highr.observe(o.seconds);
        let mut sizes = lock(&self.sizes);
        let entry = sizes.entry(o.handler.to_owned()).or_default();
        entry.count += 1;
        entry.request_sum += o.request_bytes as f64;
        entry.response_sum += o.response_bytes as f64;
    }

    /// The two size summaries, one series per handler seen (bounded: only matched
    /// routes are recorded); none before the first request, since the encoder refuses
    /// a family without series (see [`SUMMARIES`]).
    pub fn summaries(&self) -> Vec<MetricFamily> {
        let sizes = lock(&self.sizes);
        if sizes.is_empty() {
            return Vec::new();
        }
        let family = |name: &str, help: &str, sum: fn(&Sizes) -> f64| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_owned());
            f.set_help(help.to_owned());
            f.set_field_type(MetricType::SUMMARY);
            for (handler, s) in sizes.iter() {
                let mut label = LabelPair::default();
                label.set_name("handler".to_owned());
                label.set_value(handler.clone());
                let mut summary = Summary::default();
                summary.set_sample_count(s.count);
                summary.set_sample_sum(sum(s));
                let mut m = Metric::default();
                m.set_label(vec![label]);
                m.set_summary(summary);
                f.mut_metric().push(m);
            }
            f
        };
        vec![
            family(SUMMARIES[0].0, SUMMARIES[0].1, |s| s.request_sum),
            family(SUMMARIES[1].0, SUMMARIES[1].1, |s| s.response_sum),
        ]
    }
}

/// `value` as the Python client writes `le` and `quantile` label values
/// (`floatToGoString`): `1.0`, `0.025`, `+Inf`.
pub fn python_float(value: f64) -> String {
    if value == f64::INFINITY {
        return "+Inf".to_owned();
    }
    if value == f64::NEG_INFINITY {
        return "-Inf".to_owned();
    }
    if value.is_nan() {
        return "NaN".to_owned();
    }
    // Python's repr: the shortest round-trip digits, with a `.0` on whole numbers,
    // and exponents from 1e16 up (and below 1e-4) written `1e+16`, `1e-05`.
    let abs = value.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let text = format!("{value:?}");
    // Go switches to exponents sooner than Python: from seven integer digits.
    match text.find('.') {
        Some(dot) if value > 0.0 && dot > 6 => {
            let digits = format!("{}{}", &text[1..dot], &text[dot + 1..]);
            let mantissa = format!("{}.{digits}", &text[..1]);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => text,
    }
}

/// The text exposition with every `le="…"` bound spelled as the Python client does
/// (the Rust client writes `le="1"`; Prometheus stores label values as written, so
/// a dashboard's `le="1.0"` would find nothing). Plugins cannot set `le`.
pub fn python_bounds(text: &str) -> String {
    const KEY: &str = "le=\"";
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let (head, tail) = rest.split_at(at + KEY.len());
        out.push_str(head);
        // A label starts after `{` or `,` (a value cannot hold `,le="`: its quotes
        // are escaped); `handle="…"` is another label.
        if !matches!(rest[..at].chars().next_back(), Some('{' | ',')) {
            rest = tail;
            continue;
        }
        let end = tail.find('"').unwrap_or(tail.len());
        let bound = &tail[..end];
        match bound.parse::<f64>() {
            Ok(v) => out.push_str(&python_float(v)),
            Err(_) => out.push_str(bound),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_as_the_python_client_spells_them() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (0.025, "0.025"),
            (2.5, "2.5"),
            (10.0, "10.0"),
            (60.0, "60.0"),
            (0.0, "0.0"),
            (f64::INFINITY, "+Inf"),
            (1e-5, "1e-05"),
            (123456.0, "123456.0"),
            (1234567.0, "1.234567e+06"),
            (1e20, "1e+20"),
        ];
        for (value, python) in cases {
            assert_eq!(python_float(value), python, "{value}");
        }
    }

    #[test]
    fn bounds_are_rewritten_and_nothing_else() {
        let text = "h_bucket{le=\"1\"} 3\nh_bucket{a=\"le=\\\"2\\\"\",le=\"+Inf\"} 4\nc{handle=\"1\",table=\"2\"} 1\n";
        assert_eq!(
            python_bounds(text),
            "h_bucket{le=\"1.0\"} 3\nh_bucket{a=\"le=\\\"2\\\"\",le=\"+Inf\"} 4\nc{handle=\"1\",table=\"2\"} 1\n"
        );
    }

    #[test]
    fn the_bots_exclusions_cover_health_and_metrics_routes() {
        for route in ["/health", "/health/{check}", "/metrics"] {
            assert!(!HttpMetrics::records(route), "{route}");
        }
        for route in ["/livez", "/readyz", "/v1/ai-usage"] {
            assert!(HttpMetrics::records(route), "{route}");
        }
    }
}
