//! Micro-benchmarks of the runtime's hot path: one run of a trivial check
//! (fresh store, instantiate from the pre-instantiated handle, call, drop), and one run
//! whose check makes host-call round trips (a config lookup, a SQLite query in this
//! process, and one in a worker process as `serve` runs it), each run
//! in place on the plugin threads as a check's schedule runs it; the trivial check
//! handed over from another runtime, as on-demand checks and `check` run it; and that
//! hand-off alone: an empty task spawned on a multi-thread tokio runtime and awaited
//! from a current-thread one.
//!
//! `cargo bench -p healthhost --bench run`; results go into BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use healthhost::capabilities::sql::{Datasource, Datasources};
use healthhost::config::grants::{Grants, Settings, SqlPolicy};
use healthhost::limits::Limits;
use healthhost::runtime::{Outcome, Plugin, Runtime};

fn load(runtime: &Runtime, wasm: &str, grants: Grants, settings: Settings) -> Arc<Plugin> {
    let path = std::path::Path::new(wasm);
    Arc::new(
        runtime
            .load_file("bench", path, None, grants, settings, Limits::default())
            .unwrap(),
    )
}

fn runs(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sqlite = || {
        let mut datasources = Datasources::default();
        datasources.insert(Datasource::parse("mem", "sqlite::memory:").unwrap());
        datasources
    };
    let runtime = Runtime::new(sqlite()).unwrap();

    let trivial = load(
        &runtime,
        test_artifacts::TRIVIAL,
        Grants::default(),
        Settings::default(),
    );
    let mut settings = Settings::default();
    settings.set("mode", "config");
    settings.set("key", "mode");
    let config = load(
        &runtime,
        test_artifacts::MISBEHAVE,
        Grants::default(),
        settings,
    );
    let mut sql_settings = Settings::default();
    sql_settings.set("mode", "sql");
    sql_settings.set("datasource", "mem");
    sql_settings.set("statement", "SELECT 1");
    let sql_grants = Grants {
        sql: SqlPolicy::new(["mem"]),
        ..Grants::default()
    };
    let sql = load(
        &runtime,
        test_artifacts::MISBEHAVE,
        sql_grants.clone(),
        sql_settings.clone(),
    );
    for plugin in [&trivial, &config, &sql] {
        let report = tokio.block_on(runtime.run(plugin));
        assert_eq!(report.outcome, Outcome::Pass, "{report:?}");
    }

    // As `serve` runs a check on its schedule: in place, from a task on the plugin
    // threads of `runtime`.
    let scheduled_on = |runtime: &Runtime, plugin: &Arc<Plugin>, iters: u64| {
        let plugin = plugin.clone();
        let task = runtime.spawn(move |runner| async move {
            let started = Instant::now();
            for _ in 0..iters {
                black_box(runner.run(&plugin).await);
            }
            started.elapsed()
        });
        tokio.block_on(task).unwrap()
    };
    let scheduled = |plugin: &Arc<Plugin>, iters: u64| scheduled_on(&runtime, plugin, iters);
    let mut group = c.benchmark_group("run");
    group.bench_function("trivial check", |b| {
        b.iter_custom(|iters| scheduled(&trivial, iters))
    });
    group.bench_function("check with 3 config lookups", |b| {
        b.iter_custom(|iters| scheduled(&config, iters))
    });
    group.bench_function("check with 1 SQLite round trip", |b| {
        b.iter_custom(|iters| scheduled(&sql, iters))
    });
    {
        // As `serve` and `check` run statements: in a worker process of the host
        // binary. A runtime of its own (its threads and ticker), alive only here, so
        // that it weighs on no other row.
        let mut isolated = sqlite();
        isolated.run_in_workers(std::path::Path::new(env!("CARGO_BIN_EXE_healthhost")));
        let worker_runtime = Runtime::new(isolated).unwrap();
        let sql_in_worker = load(
            &worker_runtime,
            test_artifacts::MISBEHAVE,
            sql_grants,
            sql_settings,
        );
        let report = tokio.block_on(worker_runtime.run(&sql_in_worker));
        assert_eq!(report.outcome, Outcome::Pass, "{report:?}");
        group.bench_function("check with 1 SQLite round trip, in a worker", |b| {
            b.iter_custom(|iters| scheduled_on(&worker_runtime, &sql_in_worker, iters))
        });
    }
    // As an on-demand check and `healthhost check` run: handed to the plugin threads
    // from another runtime, and awaited there.
    group.bench_function("trivial check, handed over", |b| {
        b.to_async(&tokio).iter(|| runtime.run(&trivial))
    });
    group.finish();

    let plugin_threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("hand-off alone (empty task on the plugin runtime)", |b| {
        b.to_async(&tokio)
            .iter(|| async { plugin_threads.spawn(async {}).await.unwrap() })
    });
}

criterion_group!(benches, runs);
criterion_main!(benches);
