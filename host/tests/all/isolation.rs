//! Isolation between plugins, through real `healthhost serve` and `validate`
//! processes: a critical check runs whatever its neighbours hold (run slots of its
//! own); a plugin crafted to keep the compiler busy is stopped at its time limit,
//! when its file goes away and when the host stops, so it costs neither a core nor
//! the host's exit; a SQL statement cannot take the host's memory with one row (on
//! SQLite, PostgreSQL and MariaDB) nor keep a core busy after its run with one SQLite
//! function call (statements run in workers killed with their call). A component over
//! its share of the engine's pool is in `runtime`; sample names that collide with the
//! host's series in the metrics unit tests.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// A component that keeps Cranelift busy for minutes: a core module of functions
/// that each hold 20,000 values live at once (register allocation is quadratic in
/// them: one such function takes ~25 s on the CI machine), exported as `check` for
/// the contract's names. Given the time it compiles, and then fails to load (its
/// export is not the function).
pub fn slow_to_compile() -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, Component, ComponentExportKind, ComponentExportSection, ExportKind,
        ExportSection, Function, FunctionSection, Instruction, Module, ModuleSection, TypeSection,
        ValType,
    };
    const LIVE: i64 = 20_000;
    const FUNCTIONS: u32 = 16;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I64], [ValType::I64]);
    let mut body = Function::new([]);
    for k in 1..=LIVE {
        body.instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::I64Const(k))
            .instruction(&Instruction::I64Mul);
    }
    for _ in 1..LIVE {
        body.instruction(&Instruction::I64Add);
    }
    body.instruction(&Instruction::End);
    let (mut functions, mut code, mut exports) = (
        FunctionSection::new(),
        CodeSection::new(),
        ExportSection::new(),
    );
    for i in 0..FUNCTIONS {
        functions.function(0);
        code.function(&body);
        exports.export(&format!("f{i}"), ExportKind::Func, i);
    }
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&exports)
        .section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    let mut outer = ComponentExportSection::new();
    outer.export("check", ComponentExportKind::Module, 0, None);
    component.section(&outer);
    component.finish()
}

/// The parent of process `pid`, if it is alive (`/proc/PID/stat`, after the name).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    // State, then the parent's pid; a zombie is as good as gone.
    let mut fields = after_name.split(' ');
    let state = fields.next()?;
    (state != "Z").then_some(())?;
    fields.next()?.parse().ok()
}

/// The compiler processes (`healthhost compile-plugin`) that `host` started.
fn compilers(host: u32) -> Vec<u32> {
    all_children(host)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("compile-plugin"))
        })
        .collect()
}

/// The processes `host` started that are alive.
fn all_children(host: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent(pid) == Some(host))
        .collect()
}

/// Polls `probe` until it gives a value (bounded; an ordering wait).
async fn wait_until<T>(what: &str, probe: impl Fn() -> Option<T>) -> T {
    for _ in 0..1200 {
        if let Some(value) = probe() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not after a minute");
}

fn write_config(dir: &Path, config: &str) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_compile_past_its_time_limit_fails_its_own_load() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("slow.wasm"), slow_to_compile()).unwrap();
    let config = write_config(
        &dir.0,
        "compile_timeout = \"1s\"\ncache_dir = \"\"\n\
         [checks.slow]\nplugin = \"slow.wasm\"\ncritical = false\n",
    );
    let out = healthhost(&["validate", "--config", &config]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("check 'slow': cannot compile the plugin: it takes longer than the compile time limit of 1s (`compile_timeout`)"),
        "{err}"
    );

    // A time limit of nothing is a config problem, named.
    let config = write_config(&dir.0, "compile_timeout = \"0s\"\n");
    let out = healthhost(&["validate", "--config", &config]);
    assert!(stderr(&out).contains("compile_timeout"), "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test]
async fn a_compile_whose_file_goes_away_is_killed_and_the_host_serves_on() {
    let server = Host::start(&format!(
        "watch_interval = \"100ms\"\n\
         [checks.canary]\nplugin = {:?}\ninterval = \"1s\"\n",
        test_artifacts::TRIVIAL
    ))
    .await;
    let plugins = server.dir.0.join("plugins.d");
    drop_file(&plugins, "slow.wasm", &slow_to_compile());
    let host = server.child.id();
    let compiler = wait_until("a compiler process", || compilers(host).first().copied()).await;
    std::fs::remove_file(plugins.join("slow.wasm")).unwrap();
    wait_until("the compiler killed", || {
        parent(compiler).is_none().then_some(())
    })
    .await;
    let (status, body) = server
        .wait_for("/health", |_, b| b["checks"]["slow"].is_null())
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn sigterm_ends_serve_within_the_delay_whatever_is_compiling() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("slow.wasm"), slow_to_compile()).unwrap();
    let mut server = Host::start_in(
        dir,
        "shutdown_delay = \"1s\"\n\
         [checks.slow]\nplugin = \"slow.wasm\"\ncritical = false\n",
    )
    .await;
    let host = server.child.id();
    let compiler = wait_until("a compiler process", || compilers(host).first().copied()).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &host.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let sent = Instant::now();
    let exit = tokio::task::spawn_blocking(move || {
        let exit = server.child.wait().unwrap();
        (exit, sent.elapsed(), server)
    });
    // The bound: shutdown_delay (1 s) and at most 5 s more. Without the stop
    // the host waits for the compile, minutes.
    let (exit, took, _server) = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .expect("serve did not exit within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert_eq!(parent(compiler), None, "the compiler outlived the host");
}

#[tokio::test]
async fn a_critical_check_runs_on_whatever_its_neighbours_hold() {
    // Every non-critical run slot held by a neighbour that hangs in a host call for
    // a minute: the critical check has slots of its own and passes every run.
    let mut config = String::from("max_concurrent_runs = 2\n");
    for n in 0..4 {
        config.push_str(&format!(
            "[checks.hang{n}]\nplugin = {:?}\ncritical = false\ntimeout = \"60s\"\n\
             interval = \"1s\"\nsettings.mode = \"sleep\"\n",
            test_artifacts::MISBEHAVE
        ));
    }
    config.push_str(&format!(
        "[checks.canary]\nplugin = {:?}\ncritical = true\ninterval = \"1s\"\n",
        test_artifacts::TRIVIAL
    ));
    let server = Host::start(&config).await;
    server.wait_loaded().await;
    let runs = |outcome: &'static str| {
        let server = &server;
        async move {
            let (_, _, text) = server.get("/metrics").await;
            let series = parse_exposition(&text).unwrap();
            series_value(
                &series,
                "adtrobot_check_runs_total",
                &[("check", "canary"), ("outcome", outcome)],
            )
            .unwrap_or(0.0)
        }
    };
    for _ in 0..1200 {
        if runs("pass").await >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(runs("pass").await >= 5.0, "the canary did not run");
    for outcome in [
        "fail",
        "warn",
        "timeout",
        "trap",
        "load",
        "memory",
        "out-of-fuel",
    ] {
        assert_eq!(runs(outcome).await, 0.0, "{outcome}");
    }
    let (status, body) = server.json("/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["canary"]["status"], "pass", "{body}");
}

/// A host with datasource `main` at `url` and one non-critical check `attacker` that
/// runs `statement` on it once, under `timeout`, in `dir`.
async fn attacker(dir: TempDir, url: &str, statement: &str, timeout: &str) -> Host {
    Host::start_in(
        dir,
        &format!(
            "[datasources.main]\nurl = {url:?}\n\
             [checks.attacker]\nplugin = {:?}\ncritical = false\ninterval = \"1h\"\n\
             timeout = \"{timeout}\"\ngrants.sql = [\"main\"]\n\
             settings = {{ mode = \"sql\", statement = {statement:?} }}\n",
            test_artifacts::MISBEHAVE,
        ),
    )
    .await
}

/// [`attacker`] on an empty SQLite database of its own.
async fn sqlite_attacker(statement: &str, timeout: &str) -> Host {
    let dir = TempDir::new();
    let db = dir.0.join("app.db");
    sqlite(&db).await.close().await;
    let url = format!("sqlite://{}", db.display());
    attacker(dir, &url, statement, timeout).await
}

/// CPU the host and every process it started used over `window`, in cores.
async fn cores_used(host: u32, window: Duration) -> f64 {
    let ticks = || {
        let children: u64 = all_children(host).into_iter().map(cpu_ticks).sum();
        cpu_ticks(host) + children
    };
    let before = ticks();
    tokio::time::sleep(window).await;
    let used = ticks().saturating_sub(before) as f64;
    // Clock ticks are 100 a second on Linux.
    used / 100.0 / window.as_secs_f64()
}

#[tokio::test]
async fn a_sqlite_function_that_runs_for_minutes_stops_with_its_run() {
    // One virtual-machine step of minutes: `instr` of a 4 MB text and a 2 MB needle
    // that almost matches everywhere. SQLite's progress handler never sees it.
    let statement = "SELECT instr(printf('%.*c', 4000000, 'a'), \
                     printf('%.*c', 2000000, 'a') || 'b')";
    let server = sqlite_attacker(statement, "2s").await;
    let (_, body) = server
        .wait_for("/health", |_, b| has_run(&b["checks"]["attacker"]))
        .await;
    assert_ne!(body["checks"]["attacker"]["outcome"], "pass", "{body}");
    // Within 3 s of the run's end the statement no longer costs the machine.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cores = cores_used(server.child.id(), Duration::from_secs(2)).await;
    assert!(cores < 0.3, "the host still uses {cores:.2} cores");
    assert_eq!(server.json("/livez").await.0, 200);
}

#[tokio::test]
async fn a_row_of_many_large_values_does_not_grow_the_host_on_any_dialect() {
    // 100 values of 4 MB each, each under the value cap: 400 MB in one row, which
    // SQLite builds whole, and sqlx reads whole from PostgreSQL and MariaDB, before
    // the host can count a byte of it.
    postgres().await.close().await;
    mariadb().await.close().await;
    let row = |value: &str| {
        let columns: Vec<String> = (0..100).map(|i| format!("{value} AS c{i}")).collect();
        format!("SELECT {}", columns.join(", "))
    };
    let sqlite_row = row("printf('%.*c', 4000000, 'x')");
    let mut hosts = vec![("sqlite", sqlite_attacker(&sqlite_row, "30s").await)];
    for (dialect, url, value) in [
        ("postgres", POSTGRES_READER_URL, "repeat('x', 4000000)"),
        ("mariadb", MARIADB_READER_URL, "REPEAT('x', 4000000)"),
    ] {
        let host = attacker(TempDir::new(), url, &row(value), "30s").await;
        hosts.push((dialect, host));
    }
    for (dialect, server) in hosts {
        let (_, body) = server
            .wait_for("/health", |_, b| has_run(&b["checks"]["attacker"]))
            .await;
        let message = body["checks"]["attacker"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("too-large") || message.contains("worker process ended"),
            "{dialect}: {body}"
        );
        let peak = proc_status_kib(server.child.id(), "VmHWM");
        assert!(
            peak < 256 * 1024,
            "{dialect}: the host peaked at {} MiB",
            peak / 1024
        );
        assert_eq!(server.json("/livez").await.0, 200);
    }
}
