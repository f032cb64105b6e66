//! Tests of the metrics registry: every family of the plan is exposed, plugin samples
//! are exported as granted, and the exposition parses.

use super::*;
use crate::names::{HOST_METRICS, PLAN_METRICS};

#[test]
fn every_plan_metric_is_exposed_even_before_it_has_samples() {
    let text = Metrics::new("adtrobot").unwrap().render();
    for name in PLAN_METRICS {
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

fn granted(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn every_registered_family_is_a_plan_or_host_name() {
    let m = Metrics::new("ns").unwrap();
    let (ours, instrumentator): (Vec<&str>, Vec<&str>) = m
        .families
        .iter()
        .map(|(name, _, _)| name.as_str())
        .partition(|name| name.starts_with("ns_"));
    let registered: BTreeSet<&str> = ours.iter().map(|n| &n[3..]).collect();
    let known: BTreeSet<&str> = PLAN_METRICS.into_iter().chain(HOST_METRICS).collect();
    assert_eq!(registered, known);
    assert!(
        instrumentator
            .iter()
            .all(|n| crate::instrumentator::FAMILIES.contains(n)),
        "{instrumentator:?}"
    );
}

#[test]
fn granted_samples_are_exported_with_the_check_label_and_replaced_by_the_next_run() {
    let m = Metrics::new("ns").unwrap();
    // A page rendered before the runs: each run must make the next scrape a new one.
    assert!(!scraped(&m).contains("check=\"db\""));
    let mut report = RunReport {
        check: "db".to_owned(),
        outcome: crate::runtime::Outcome::Pass,
        message: None,
        samples: vec![
            Sample::of("db_latency_seconds", &[], 0.25),
            Sample::of("db_rows", &[("table", "jobs")], 7.0),
            Sample::of("not_granted", &[], 1.0),
        ],
        samples_dropped: crate::samples::Drops::from([(Dropped::TooLarge, 2)]),
        latency: std::time::Duration::from_millis(3),
        fuel_consumed: 1,
        peak_memory_bytes: 1,
        calls: Default::default(),
    };
    let grant = granted(&["db_latency_seconds", "db_rows"]);
    m.record_run(&report, &grant, true, 0.0);
    let text = scraped(&m);
    assert!(
        text.contains("ns_db_latency_seconds{check=\"db\"} 0.25"),
        "{text}"
    );
    assert!(
        text.contains("ns_db_rows{check=\"db\",table=\"jobs\"} 7"),
        "{text}"
    );
    assert!(text.contains("# TYPE ns_db_rows gauge"), "{text}");
    assert!(!text.contains("ns_not_granted"), "{text}");
    assert!(
        text.contains("ns_plugin_samples_dropped_total{check=\"db\",reason=\"not-granted\"} 1"),
        "{text}"
    );

    assert!(
        text.contains("ns_plugin_samples_dropped_total{check=\"db\",reason=\"too-large\"} 2"),
        "drops the run screened out are counted too: {text}"
    );

    report.samples = vec![Sample::of("db_latency_seconds", &[], 0.5)];
    m.record_run(&report, &grant, true, 0.0);
    let text = scraped(&m);
    assert!(
        text.contains("ns_db_latency_seconds{check=\"db\"} 0.5"),
        "{text}"
    );
    assert!(!text.contains("ns_db_rows"), "{text}");
}

/// A scrape's text.
fn scraped(m: &Metrics) -> String {
    String::from_utf8(m.scrape().to_vec()).unwrap()
}

#[test]
fn a_change_announced_by_changed_reaches_the_next_scrape() {
    let m = Metrics::new("ns").unwrap();
    assert!(!scraped(&m).contains("ns_requests_total{"));
    m.plan
        .requests_total
        .with_label_values(&["/x", "GET", "2xx"])
        .inc();
    m.changed();
    let text = scraped(&m);
    assert!(
        text.contains("ns_requests_total{handler=\"/x\",method=\"GET\",status=\"2xx\"} 1"),
        "{text}"
    );
}

#[test]
fn ai_duration_uses_the_plans_buckets() {
    let m = Metrics::new("x").unwrap();
    m.plan
        .ai_request_duration
        .with_label_values(&["tarot", "m"])
        .observe(3.0);
    let text = m.render();
    // Spelled as the Python client spells them.
    for le in ["0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf"] {
        assert!(
            text.contains(&format!(
                "x_ai_request_duration_seconds_bucket{{model=\"m\",operation=\"tarot\",le=\"{le}\"}}"
            )),
            "bucket {le} missing:\n{text}"
        );
    }
}

#[test]
fn a_sample_whose_exported_name_a_host_family_writes_is_dropped_and_counted() {
    // The namespace can turn a granted name into another family's: `http_request` +
    // `duration_seconds` is the instrumentator's histogram, `process` + `cpu_seconds`
    // the process collector's counter, and a histogram's `_count` its own series.
    for (namespace, name) in [
        ("http_request", "duration_seconds"),
        ("http_request", "duration_seconds_count"),
        ("process", "cpu_seconds"),
        ("ns", "check_run_duration_seconds_sum"),
    ] {
        let m = Metrics::new(namespace).unwrap();
        assert!(m.host_name(name), "{namespace}_{name}");
        let report = RunReport {
            check: "db".to_owned(),
            outcome: crate::runtime::Outcome::Pass,
            message: None,
            samples: vec![Sample::of(name, &[], 4242.0), Sample::of("rows", &[], 2.0)],
            samples_dropped: Default::default(),
            latency: std::time::Duration::from_millis(3),
            fuel_consumed: 1,
            peak_memory_bytes: 1,
            calls: Default::default(),
        };
        m.record_run(&report, &granted(&[name, "rows"]), true, 0.0);
        let text = m.render();
        // The dropped sample's value appears nowhere (the host's own series with its
        // name, if any, holds the host's value).
        assert!(!text.contains(" 4242\n"), "{text}");
        assert!(
            text.contains(&format!("{namespace}_rows{{check=\"db\"}} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{namespace}_plugin_samples_dropped_total{{check=\"db\",reason=\"host-name\"}} 1"
            )),
            "{text}"
        );
        // No family is described twice.
        let mut helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        let all = helps.len();
        helps.sort();
        helps.dedup_by(|a, b| a.split(' ').nth(2) == b.split(' ').nth(2));
        assert_eq!(helps.len(), all, "{text}");
    }
    assert!(!Metrics::new("ns").unwrap().host_name("db_rows"));
}
