//! The sandboxed runtime end to end, with real guests built from source: verdicts,
//! every broken limit, captured output, secret scrubbing, load errors, and that a
//! spinning guest does not hold up other runs.

use std::time::Duration;

use crate::common::*;
use healthhost::capabilities::sql::Datasources;
use healthhost::config::Compiler;
use healthhost::config::grants::{Grants, Settings};
use healthhost::limits::Limits;
use healthhost::runtime::{ErrorKind, LoadError, Outcome, Runtime};

#[tokio::test]
async fn trivial_check_passes_and_reports_its_costs() {
    let runtime = runtime();
    let plugin = load(
        &runtime,
        "trivial",
        test_artifacts::TRIVIAL,
        Grants::default(),
        Limits::default(),
    );
    let report = runtime.run(&plugin).await;
    assert_eq!(report.outcome, Outcome::Pass);
    assert_eq!(report.message.as_deref(), Some("ok"));
    assert!(report.fuel_consumed > 0, "fuel is metered: {report:?}");
    assert!(
        report.peak_memory_bytes > 0,
        "memory is measured: {report:?}"
    );
    assert_eq!(plugin.sha256().len(), 64);
}

#[tokio::test]
async fn plugin_verdicts_and_samples_come_through() {
    let runtime = runtime();
    for (mode, outcome) in [
        ("pass", Outcome::Pass),
        ("warn", Outcome::Warn),
        ("fail", Outcome::Fail),
    ] {
        let grants = Grants::default();
        let given = settings([("message", "all good")]);
        let report = misbehave(&runtime, grants, given, Limits::default(), mode).await;
        assert_eq!(report.outcome, outcome, "{mode}");
        assert_eq!(report.message.as_deref(), Some("all good"));
        assert_eq!(report.samples.len(), 1);
        assert_eq!(report.samples[0].name, "misbehave_value");
        assert_eq!(
            report.samples[0].labels,
            [("kind".to_owned(), "test".to_owned())]
        );
    }
}

#[tokio::test]
async fn spinning_guest_times_out() {
    let report = misbehave(
        &runtime(),
        Grants::default(),
        Settings::default(),
        quick(300),
        "spin",
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::Error(ErrorKind::Timeout),
        "{report:?}"
    );
    assert!(report.message.unwrap().contains("timed out after 300ms"));
}

#[tokio::test]
async fn spinning_guest_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 1_000_000,
        ..Limits::default()
    };
    let report = misbehave(
        &runtime(),
        Grants::default(),
        Settings::default(),
        limits,
        "spin",
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::Error(ErrorKind::OutOfFuel),
        "{report:?}"
    );
    assert!(report.fuel_consumed >= 1_000_000);
}

#[tokio::test]
async fn unbounded_allocation_is_reported_as_memory() {
    let limits = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let report = misbehave(
        &runtime(),
        Grants::default(),
        Settings::default(),
        limits,
        "alloc",
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::Error(ErrorKind::Memory),
        "{report:?}"
    );
    assert!(report.message.unwrap().contains("16MiB"));
    assert!(report.peak_memory_bytes <= 16 << 20);
    assert!(
        report.peak_memory_bytes > 8 << 20,
        "it did allocate: {}",
        report.peak_memory_bytes
    );
}

#[tokio::test]
async fn sleeping_in_a_host_call_past_the_deadline_times_out() {
    let report = misbehave(
        &runtime(),
        Grants::default(),
        Settings::default(),
        quick(300),
        "sleep",
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::Error(ErrorKind::Timeout),
        "{report:?}"
    );
}

#[tokio::test]
async fn panic_is_a_trap_explained_by_the_panic_message() {
    let report = misbehave(
        &runtime(),
        Grants::default(),
        Settings::default(),
        Limits::default(),
        "panic",
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::Error(ErrorKind::Trap),
        "{report:?}"
    );
    let message = report.message.unwrap();
    assert!(message.contains("misbehave: deliberate panic"), "{message}");
}

#[tokio::test]
async fn megabytes_of_stdout_are_discarded_not_fatal() {
    let report = misbehave(
        &runtime(),
        Grants::default(),
        Settings::default(),
        Limits::default(),
        "stdout",
    )
    .await;
    assert_eq!(report.outcome, Outcome::Pass, "{report:?}");
    assert_eq!(report.message.as_deref(), Some("printed"));
}

#[tokio::test]
async fn log_flood_is_capped_not_fatal() {
    let report = misbehave(
        &runtime(),
        Grants::default(),
        Settings::default(),
        Limits::default(),
        "log",
    )
    .await;
    assert_eq!(report.outcome, Outcome::Pass, "{report:?}");
    assert_eq!(report.message.as_deref(), Some("logged"));
}

#[tokio::test]
async fn secrets_are_scrubbed_from_the_message() {
    let grants = Grants::default();
    let mut given = Settings::default();
    given.set_secret("token", "123456:SECRET-token");
    let report = misbehave(&runtime(), grants, given, Limits::default(), "secret").await;
    let message = report.message.unwrap();
    assert!(!message.contains("SECRET"), "{message}");
    assert_eq!(message, "token is [REDACTED]");
}

#[tokio::test]
async fn config_returns_only_the_checks_own_settings() {
    let runtime = runtime();
    let grants = Grants::default();
    let given = settings([("key", "colour"), ("colour", "blue")]);
    let report = misbehave(&runtime, grants, given, Limits::default(), "config").await;
    assert_eq!(report.message.as_deref(), Some("blue"));
    let grants = Grants::default();
    let given = settings([("key", "PATH")]);
    let report = misbehave(&runtime, grants, given, Limits::default(), "config").await;
    assert_eq!(
        report.message.as_deref(),
        Some("unset"),
        "no environment leaks in"
    );
}

#[tokio::test]
async fn a_spinning_guest_does_not_hold_up_a_later_trivial_one() {
    let runtime = std::sync::Arc::new(runtime());
    let spinner = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            misbehave(
                &runtime,
                Grants::default(),
                Settings::default(),
                quick(3000),
                "spin",
            )
            .await
        }
    });
    // Let the spinner get going first (an ordering set-up, not a timing assertion).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let trivial = load(
        &runtime,
        "trivial",
        test_artifacts::TRIVIAL,
        Grants::default(),
        Limits::default(),
    );
    let report = runtime.run(&trivial).await;
    assert_eq!(report.outcome, Outcome::Pass);
    assert!(
        !spinner.is_finished(),
        "the trivial check finished while the spinner still ran"
    );
    let spun = spinner.await.unwrap();
    assert_eq!(spun.outcome, Outcome::Error(ErrorKind::Timeout));
}

#[tokio::test]
async fn load_rejects_garbage_core_modules_and_other_worlds() {
    let runtime = runtime();
    let load = |bytes: &[u8]| {
        runtime
            .load(
                "bad",
                bytes,
                Grants::default(),
                Settings::default(),
                Limits::default(),
            )
            .err()
            .unwrap()
    };

    let err = load(b"definitely not wasm");
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("magic bytes"), "{err}");

    let core_module = b"\0asm\x01\0\0\0";
    let err = load(core_module);
    assert!(err.to_string().contains("core module"), "{err}");

    let other_world = std::fs::read(test_artifacts::WRONG_WORLD).unwrap();
    let err = load(&other_world);
    assert!(matches!(err, LoadError::World { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("check 'bad': the component does not implement"),
        "{err}"
    );
}

/// A component exporting `check` (as a module, for the contract's names) that
/// instantiates `count` times a core module holding `memory` and `table`.
fn component_of_instances(count: u32, memory: bool, table: bool) -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentExportKind, ComponentExportSection, InstanceSection, MemorySection,
        MemoryType, Module, ModuleSection, RefType, TableSection, TableType,
    };
    let mut module = Module::new();
    if table {
        let mut tables = TableSection::new();
        tables.table(TableType {
            element_type: RefType::FUNCREF,
            table64: false,
            minimum: 1,
            maximum: None,
            shared: false,
        });
        module.section(&tables);
    }
    if memory {
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
    }
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    let mut instances = InstanceSection::new();
    for _ in 0..count {
        instances.instantiate(0, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
    }
    component.section(&instances);
    let mut exports = ComponentExportSection::new();
    exports.export("check", ComponentExportKind::Module, 0, None);
    component.section(&exports);
    component.finish()
}

#[tokio::test]
async fn a_component_over_its_share_of_the_pool_fails_its_own_load() {
    use healthhost::limits::{PLUGIN_CORE_INSTANCES, PLUGIN_MEMORIES, PLUGIN_TABLES};
    let runtime = runtime();
    for (wasm, says) in [
        (
            component_of_instances(PLUGIN_CORE_INSTANCES + 1, false, false),
            format!("{} core module instances", PLUGIN_CORE_INSTANCES + 1),
        ),
        (
            component_of_instances(PLUGIN_MEMORIES + 1, true, false),
            format!("{} Wasm linear memories", PLUGIN_MEMORIES + 1),
        ),
        (
            component_of_instances(PLUGIN_TABLES + 1, false, true),
            format!("{} tables", PLUGIN_TABLES + 1),
        ),
    ] {
        let err = runtime
            .load(
                "greedy",
                &wasm,
                Grants::default(),
                Settings::default(),
                Limits::default(),
            )
            .err()
            .unwrap();
        assert!(matches!(err, LoadError::Compiler { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&says), "{says}: {text}");
        assert!(text.contains("of the runtime's pool"), "{text}");
    }
    // At its share a component passes the pool and meets the contract's types.
    let err = runtime
        .load(
            "fits",
            &component_of_instances(PLUGIN_CORE_INSTANCES, false, false),
            Grants::default(),
            Settings::default(),
            Limits::default(),
        )
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::World { .. }), "{err}");
}

#[tokio::test]
async fn limits_outside_the_supported_range_are_load_errors() {
    let limits = Limits {
        memory: 100,
        ..Limits::default()
    };
    let wasm = std::fs::read(test_artifacts::TRIVIAL).unwrap();
    let err = runtime()
        .load("t", &wasm, Grants::default(), Settings::default(), limits)
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::Limits { .. }), "{err}");
}

#[tokio::test]
async fn every_compiler_enforces_fuel_the_deadline_and_memory() {
    for compiler in [
        Compiler::Cranelift,
        Compiler::CraneliftUnoptimized,
        Compiler::Winch,
    ] {
        let runtime = Runtime::with_compiler(Datasources::default(), compiler).unwrap();
        let run = |limits, mode| {
            misbehave(
                &runtime,
                Grants::default(),
                Settings::default(),
                limits,
                mode,
            )
        };
        let fuel = Limits {
            fuel: 1_000_000,
            ..Limits::default()
        };
        let memory = Limits {
            memory: 2 * 1024 * 1024,
            ..Limits::default()
        };
        for (limits, mode, expected) in [
            (Limits::default(), "pass", Outcome::Pass),
            (fuel, "spin", Outcome::Error(ErrorKind::OutOfFuel)),
            (quick(300), "spin", Outcome::Error(ErrorKind::Timeout)),
            (memory, "alloc", Outcome::Error(ErrorKind::Memory)),
        ] {
            let report = run(limits, mode).await;
            assert_eq!(report.outcome, expected, "{compiler:?} {mode}: {report:?}");
        }
    }
}

#[tokio::test]
async fn checks_of_the_same_bytes_share_one_compiled_copy_and_keep_their_own_settings() {
    let runtime = runtime();
    let with_mode = |mode: &str| {
        let settings = settings([("mode", mode)]);
        let wasm = test_artifacts::MISBEHAVE;
        load_with(
            &runtime,
            mode,
            wasm,
            Grants::default(),
            settings,
            Limits::default(),
        )
    };
    let (pass, fail) = (with_mode("pass"), with_mode("fail"));
    assert!(pass.shares_code_with(&fail));
    assert_eq!(runtime.distinct_components(), 1);
    assert_eq!(runtime.run(&pass).await.outcome, Outcome::Pass);
    assert_eq!(runtime.run(&fail).await.outcome, Outcome::Fail);

    let trivial = load(
        &runtime,
        "t",
        test_artifacts::TRIVIAL,
        Grants::default(),
        Limits::default(),
    );
    assert!(!trivial.shares_code_with(&pass));
    assert_eq!(runtime.distinct_components(), 2);
    // A copy lives while a check uses it: dropping one user keeps it for the other.
    drop(pass);
    assert_eq!(runtime.distinct_components(), 2);
    assert_eq!(runtime.run(&fail).await.outcome, Outcome::Fail);
    drop((fail, trivial));
    assert_eq!(runtime.distinct_components(), 0);
}
