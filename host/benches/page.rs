//! The status page's cost: rendering `/` for 50 checks with full histories (1,440
//! results each, a failure every 97 runs, distinct messages), that is every row's
//! sparkline and outcome strip computed from its history read in place, and the
//! template; the target is under 5 ms. Also prints the page's size and what the 50
//! histories hold in memory (the target is under 10 MiB).
//!
//! `cargo bench -p healthhost --bench page`; results go into BENCHMARKS.md.

use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use healthhost::health::history::History;
use healthhost::health::{CheckState, CheckView};
use healthhost::limits::HISTORY_MAX_ENTRIES;
use healthhost::runtime::Outcome;
use healthhost::server::page::{StatusPage, view};

const CHECKS: usize = 50;

fn checks(now: SystemTime) -> Vec<(CheckView, History)> {
    let start = now - Duration::from_secs(HISTORY_MAX_ENTRIES as u64 * 60);
    (0..CHECKS)
        .map(|c| {
            let mut history = History::default();
            for i in 0..HISTORY_MAX_ENTRIES {
                let failed = (i + c) % 97 == 0;
                let outcome = if failed { Outcome::Fail } else { Outcome::Pass };
                let message = format!("check {c}: run {i} {}", if failed { "down" } else { "ok" });
                let latency = 5.0 + ((i * 7 + c) % 50) as f64;
                history.push(
                    start + Duration::from_secs(i as u64 * 60),
                    outcome,
                    Some(latency),
                    Some(&message),
                );
            }
            let view = CheckView {
                name: format!("check-{c:02}"),
                critical: c % 3 == 0,
                healthy: true,
                state: CheckState::Reported(Outcome::Pass),
                message: Some("ok".into()),
                latency_ms: Some(12.5),
                age_seconds: Some(30.0),
                finished: Some(now),
                load_error: None,
                pending: false,
                digest: None,
            };
            (view, history)
        })
        .collect()
}

fn render(checks: &mut [(CheckView, History)], now: SystemTime) -> String {
    let rows = checks
        .iter_mut()
        .map(|(v, h)| {
            h.scan(now, |records, uptime| {
                view::row(v, records, uptime, now, true)
            })
        })
        .collect();
    StatusPage::new(rows, true, now).html()
}

fn page(c: &mut Criterion) {
    let now = SystemTime::now();
    let mut checks = checks(now);
    let memory: usize = checks.iter().map(|(_, h)| h.heap_bytes()).sum();
    let html = render(&mut checks, now);
    println!(
        "{CHECKS} checks x {HISTORY_MAX_ENTRIES} results: histories hold {memory} bytes ({:.2} MiB); the page is {} bytes",
        memory as f64 / (1 << 20) as f64,
        html.len()
    );
    c.bench_function("render / (50 checks x 1,440 results)", |b| {
        b.iter(|| render(&mut checks, now))
    });
}

criterion_group!(benches, page);
criterion_main!(benches);
