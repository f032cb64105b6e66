//! Drop-in plugins end to end, through a real `healthhost serve`: adding, replacing,
//! breaking and removing files in the watched plugins folder while the host serves;
//! a hundred reloads under continuous `/health` load; the compile cache across
//! restarts (asserted by its lookup counter); and `healthhost list`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// Scans of the plugins folder in these tests: often, so that waits are short.
const WATCH: &str = "watch_interval = \"100ms\"\n";

/// Drops the misbehave guest in as check `name`, its grant file first.
fn drop_misbehave(dir: &Path, name: &str, grants: &str) {
    drop_file(dir, &format!("{name}.toml"), grants.as_bytes());
    drop_file(
        dir,
        &format!("{name}.wasm"),
        &read(test_artifacts::MISBEHAVE),
    );
}

fn read(wasm: &str) -> Vec<u8> {
    std::fs::read(wasm).unwrap()
}

/// The value of the series `line_prefix` (a metric name with its labels) in `/metrics`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metric(server: &Host, series: &str) -> Option<f64> {
    let (_, _, text) = server.get("/metrics").await;
    sample(&text, series)
}

/// Waits until `series` in `/metrics` has `value` (bounded; an ordering wait).
async fn wait_metric(server: &Host, series: &str, value: f64) {
    for _ in 0..600 {
        if metric(server, series).await == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, text) = server.get("/metrics").await;
    panic!("{series} never reached {value}:\n{text}");
}

/// Waits until `series` in `/metrics` is at least `value` (bounded).
async fn wait_metric_at_least(server: &Host, series: &str, value: f64) {
    for _ in 0..600 {
        if metric(server, series).await.is_some_and(|v| v >= value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, text) = server.get("/metrics").await;
    panic!("{series} never reached {value}:\n{text}");
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    &body["checks"][name]
}

#[tokio::test]
async fn drop_replace_break_and_remove_a_plugin_while_serving() {
    let dir = TempDir::new();
    let plugins = dir.0.join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    let config = format!(
        "{WATCH}[checks.fixed]\nplugin = {:?}\ninterval = \"1h\"\n",
        test_artifacts::TRIVIAL
    );
    let server = Host::start_in(dir, &config).await;
    let (_, body) = server
        .wait_for("/health", |_, b| check(b, "fixed")["outcome"] == "pass")
        .await;
    assert!(check(&body, "extra").is_null());

    // Dropped in: appears in /health and /metrics without a restart.
    drop_file(&plugins, "extra.wasm", &read(test_artifacts::TRIVIAL));
    let (status, body) = server
        .wait_for("/health", |_, b| check(b, "extra")["outcome"] == "pass")
        .await;
    assert_eq!(status, 200);
    assert_eq!(check(&body, "extra")["message"], "ok");
    assert_eq!(
        check(&body, "extra")["critical"],
        false,
        "no grant file: not critical"
    );
    wait_metric(
        &server,
        "adtrobot_health_check_status{check=\"extra\"}",
        1.0,
    )
    .await;

    // A new version with a grant file: the new behaviour shows, and its granted
    // sample reaches /metrics.
    drop_file(
        &plugins,
        "extra.toml",
        b"interval = \"1h\"\ngrants.metrics = [\"misbehave_value\"]\nsettings = { mode = \"warn\", message = \"second version\" }\n",
    );
    drop_file(&plugins, "extra.wasm", &read(test_artifacts::MISBEHAVE));
    let (_, body) = server
        .wait_for("/health", |_, b| check(b, "extra")["outcome"] == "warn")
        .await;
    assert_eq!(check(&body, "extra")["message"], "second version");
    assert!(check(&body, "extra")["load_error"].is_null());
    wait_metric(
        &server,
        "adtrobot_misbehave_value{check=\"extra\",kind=\"test\"}",
        1.0,
    )
    .await;

    // Broken replacements: each is reported, and the second version keeps running.
    let (wrong_world, misbehave) = (
        read(test_artifacts::WRONG_WORLD),
        read(test_artifacts::MISBEHAVE),
    );
    let broken: [(&str, &[u8], &str); 3] = [
        (
            "garbage",
            b"definitely not wasm",
            "not a valid WebAssembly component",
        ),
        (
            "another world",
            &wrong_world,
            "does not implement the healthhost:plugin/check world",
        ),
        ("unknown key", &misbehave, "invalid grant file"),
    ];
    let errors = "adtrobot_plugin_load_errors_total{check=\"extra\"}";
    for (what, wasm, expected) in broken {
        let before = metric(&server, errors).await.unwrap_or(0.0);
        if what == "unknown key" {
            drop_file(
                &plugins,
                "extra.toml",
                b"interval = \"1h\"\ncolour = \"blue\"\n",
            );
        }
        drop_file(&plugins, "extra.wasm", wasm);
        let (_, body) = server
            .wait_for("/health", |_, b| {
                check(b, "extra")["load_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(expected))
            })
            .await;
        assert_eq!(check(&body, "extra")["outcome"], "warn", "{what}: {body}");
        assert_eq!(check(&body, "extra")["message"], "second version", "{what}");
        // At least one more: a scan between writing the grant file and the plugin
        // loads (and counts) both changes.
        wait_metric_at_least(&server, errors, before + 1.0).await;
        assert_eq!(
            metric(&server, "adtrobot_plugin_load_failing{check=\"extra\"}").await,
            Some(1.0)
        );
    }

    // A pin that does not match is refused; the matching pin loads.
    let wrong = "0".repeat(64);
    drop_file(
        &plugins,
        "extra.toml",
        format!("interval = \"1h\"\nsha256 = \"{wrong}\"\nsettings.mode = \"fail\"\n").as_bytes(),
    );
    let (_, body) = server
        .wait_for("/health", |_, b| {
            check(b, "extra")["load_error"]
                .as_str()
                .is_some_and(|e| e.contains("pin says"))
        })
        .await;
    assert_eq!(check(&body, "extra")["outcome"], "warn");
    let right = sha256_hex(&misbehave);
    drop_file(
        &plugins,
        "extra.toml",
        format!("interval = \"1h\"\nsha256 = \"{right}\"\nsettings.mode = \"fail\"\n").as_bytes(),
    );
    let (status, body) = server
        .wait_for("/health", |_, b| check(b, "extra")["outcome"] == "fail")
        .await;
    assert_eq!(
        status, 200,
        "a dropped-in check is not critical unless it says so"
    );
    assert!(check(&body, "extra")["load_error"].is_null(), "{body}");

    // A file named like a configured check is refused; the configured one stays.
    drop_file(&plugins, "fixed.wasm", &read(test_artifacts::MISBEHAVE));
    let list = list_json(&server);
    let clash = list
        .iter()
        .find(|r| r["source"] == "folder" && r["name"] == "fixed")
        .unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(clash["status"], "error");
    assert!(
        clash["load_error"]
            .as_str()
            .unwrap()
            .contains("config file")
    );
    let (_, body) = server.json("/health").await;
    assert_eq!(check(&body, "fixed")["outcome"], "pass");

    // Deleted: gone from /health and /metrics.
    std::fs::remove_file(plugins.join("extra.wasm")).unwrap();
    server
        .wait_for("/health", |_, b| check(b, "extra").is_null())
        .await;
    let (_, _, text) = server.get("/metrics").await;
    assert!(!text.contains("check=\"extra\""), "{text}");
}

/// `healthhost list --json` for the host's config, asking the host for outcomes.
/// A package upgrade replaces (or deletes) the host's executable while it serves. The
/// host compiles in a child process of its own running binary, not of whatever file
/// now has its name, so a plugin dropped in afterwards still loads.
#[tokio::test]
async fn a_plugin_dropped_in_after_the_hosts_file_was_deleted_still_loads() {
    let dir = TempDir::new();
    let plugins = dir.0.join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    // A second name for the binary beside it (same file system), deleted once running.
    let bin = Path::new(BIN).with_file_name(format!("hh-deleted-{}", std::process::id()));
    let _ = std::fs::remove_file(&bin);
    std::fs::hard_link(BIN, &bin).unwrap();
    let server = Host::start_from(&bin, dir, WATCH).await;
    std::fs::remove_file(&bin).unwrap();

    drop_file(&plugins, "late.wasm", &read(test_artifacts::TRIVIAL));
    let (status, body) = server
        .wait_for("/health", |_, b| {
            check(b, "late")["outcome"] == "pass" || !check(b, "late")["load_error"].is_null()
        })
        .await;
    assert_eq!(check(&body, "late")["load_error"], Value::Null, "{body}");
    assert_eq!(status, 200, "{body}");
}

fn list_json(host: &Host) -> Vec<Value> {
    let output = Command::new(BIN)
        .args(["list", "--json", "--host", &host.base, "--config"])
        .arg(host.dir.0.join("config.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_hundred_reloads_under_load_fail_no_request() {
    const RELOADS: usize = 100;
    /// Resident memory may grow this much over the reloads (allocator slack, caches);
    /// a leak of each replaced plugin would exceed it.
    const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

    let dir = TempDir::new();
    let plugins = dir.0.join("plugins.d");
    let versions = [
        read(test_artifacts::TRIVIAL),
        read(test_artifacts::MISBEHAVE),
    ];
    drop_file(&plugins, "flip.wasm", &versions[0]);
    let server = Host::start_in(dir, WATCH).await;
    server
        .wait_for("/health", |_, b| check(b, "flip")["outcome"] == "pass")
        .await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (base, stop) = (server.base.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = client.get(format!("{base}/health")).send().await;
                let response = response.expect("a /health request failed during reloads");
                assert_eq!(response.status().as_u16(), 200);
                let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
                assert!(body["checks"]["flip"].is_object(), "{body}");
                answered += 1;
            }
            answered
        }));
    }

    let series = "adtrobot_plugin_loads_total{check=\"flip\"}";
    wait_metric(&server, series, 1.0).await;
    let mut rss_after_warmup = 0;
    for i in 1..=RELOADS {
        drop_file(&plugins, "flip.wasm", &versions[i % 2]);
        wait_metric(&server, series, (i + 1) as f64).await;
        if i == 10 {
            rss_after_warmup = proc_status_kib(server.child.id(), "VmRSS");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for task in load {
        answered += task.await.expect("a load task failed");
    }
    assert!(answered > 0);
    let growth = proc_status_kib(server.child.id(), "VmRSS").saturating_sub(rss_after_warmup);
    assert!(
        growth < RSS_GROWTH_BOUND_KIB,
        "resident memory grew by {growth} KiB over {RELOADS} reloads"
    );
    assert_eq!(
        metric(&server, "adtrobot_plugin_load_errors_total{check=\"flip\"}").await,
        None
    );
}

#[tokio::test]
async fn a_restart_with_a_warm_cache_compiles_nothing_and_a_corrupt_entry_is_recompiled() {
    let dir = TempDir::new();
    let plugins = dir.0.join("plugins.d");
    let files = [
        ("one", test_artifacts::TRIVIAL),
        ("two", test_artifacts::MISBEHAVE),
        ("three", test_artifacts::CHECK_TELEGRAM),
    ];
    for (name, wasm) in files {
        drop_file(&plugins, &format!("{name}.wasm"), &read(wasm));
    }
    let all_ran = |_: u16, b: &Value| files.iter().all(|(n, _)| has_run(check(b, n)));
    let hits = "adtrobot_plugin_compile_cache_total{result=\"hit\"}";
    let misses = "adtrobot_plugin_compile_cache_total{result=\"miss\"}";
    let corrupt = "adtrobot_plugin_compile_cache_total{result=\"corrupt\"}";

    let cold = Host::start_in(dir, WATCH).await;
    cold.wait_for("/health", all_ran).await;
    assert_eq!(metric(&cold, misses).await, Some(3.0));
    assert_eq!(metric(&cold, hits).await, None);
    let dir = cold.stop();

    let warm = Host::start_in(dir, WATCH).await;
    warm.wait_for("/health", all_ran).await;
    assert_eq!(metric(&warm, hits).await, Some(3.0));
    assert_eq!(metric(&warm, misses).await, None, "nothing was compiled");
    let dir = warm.stop();

    // Damage one entry: it is compiled again, never used.
    let entry = std::fs::read_dir(dir.0.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();
    let repaired = Host::start_in(dir, WATCH).await;
    let (_, body) = repaired.wait_for("/health", all_ran).await;
    assert_eq!(metric(&repaired, corrupt).await, Some(1.0));
    assert_eq!(metric(&repaired, hits).await, Some(2.0));
    for (name, _) in files {
        assert!(check(&body, name)["load_error"].is_null(), "{body}");
    }
}

#[tokio::test]
async fn list_shows_every_check_with_its_source_grants_and_last_outcome() {
    let dir = TempDir::new();
    let plugins = dir.0.join("plugins.d");
    drop_file(&plugins, "dropped.wasm", &read(test_artifacts::MISBEHAVE));
    drop_file(
        &plugins,
        "dropped.toml",
        b"critical = true\ninterval = \"1h\"\ntimeout = \"2s\"\ngrants.http = [\"http://127.0.0.1:9\"]\nsettings.mode = \"pass\"\n",
    );
    drop_file(&plugins, "broken.wasm", b"not wasm");
    let config = format!(
        "{WATCH}[checks.fixed]\nplugin = {:?}\ninterval = \"1h\"\n",
        test_artifacts::TRIVIAL
    );
    let server = Host::start_in(dir, &config).await;
    server
        .wait_for("/health", |_, b| {
            check(b, "dropped")["outcome"] == "pass" && check(b, "fixed")["outcome"] == "pass"
        })
        .await;

    let rows = list_json(&server);
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["broken", "dropped", "fixed"]);
    let dropped = &rows[1];
    assert_eq!(dropped["source"], "folder");
    assert_eq!(dropped["status"], "loaded");
    assert_eq!(dropped["critical"], true);
    assert_eq!(
        dropped["sha256"],
        sha256_hex(&read(test_artifacts::MISBEHAVE))
    );
    assert_eq!(dropped["interval_seconds"], 3600.0);
    assert_eq!(dropped["limits"]["timeout_seconds"], 2.0);
    assert_eq!(dropped["grants"]["http"][0], "http://127.0.0.1:9");
    assert_eq!(dropped["grants"]["settings"][0], "mode");
    assert_eq!(dropped["last"]["outcome"], "pass");
    assert_eq!(rows[0]["status"], "error");
    assert!(
        rows[0]["load_error"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component")
    );
    assert_eq!(rows[2]["source"], "config");

    let text = Command::new(BIN)
        .args(["list", "--host", &server.base, "--config"])
        .arg(server.dir.0.join("config.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("dropped (folder, critical): loaded"),
        "{text}"
    );
    assert!(text.contains("last     pass"), "{text}");
}

#[test]
fn list_escapes_control_characters_in_names_and_errors() {
    let dir = TempDir::new();
    let evil = "evil\nFORGED (config): loaded\x1b[2J";
    drop_file(
        &dir.0.join("plugins.d"),
        &format!("{evil}.wasm"),
        b"not wasm",
    );
    let config = dir.0.join("config.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:9\"\n").unwrap();

    let out = Command::new(BIN)
        .args(["list", "--config"])
        .arg(&config)
        .env("HEALTHHOST_LOG", "off")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text}");
    assert!(
        text.starts_with("evil\\nFORGED (config): loaded\\x1b[2J (folder): error\n"),
        "{text}"
    );

    let out = Command::new(BIN)
        .args(["list", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["name"], evil, "JSON keeps the name as it is");
}

// ------------------------------------------------------- statements that never end

/// Plugins whose statement never ends, dropped in beside a critical `database` check on
/// the same datasource.
const RUNAWAYS: usize = 5;
/// Timed-out runs to wait for: more than the datasource's pool holds connections.
const RUNAWAY_RUNS: f64 = 20.0;

/// Runs [`RUNAWAYS`] drop-ins whose `statement` (tagged with a unique comment) never
/// ends until [`RUNAWAY_RUNS`] of their runs have timed out, then removes them. Then:
/// no such statement still runs on the database (`running` counts them by tag), the
/// host's CPU is back to idle, and the `database` check on the same datasource passes.
async fn runaway_statements_stop_with_their_runs<F, Fut>(url: &str, statement: &str, running: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let dir = TempDir::new();
    let plugins = dir.0.join("plugins.d");
    let tag = unique_table("runaway");
    let statement = format!("{statement} /* {tag} */");
    for i in 0..RUNAWAYS {
        drop_misbehave(
            &plugins,
            &format!("spin{i}"),
            &format!(
                "interval = \"1s\"\ntimeout = \"300ms\"\ngrants.sql = [\"main\"]\n\
                 settings = {{ mode = \"sql\", statement = {statement:?} }}\n"
            ),
        );
    }
    let server = Host::start_in(
        dir,
        &format!(
            "{WATCH}[datasources.main]\nurl = \"{url}\"\n\
             [checks.database]\nplugin = \"{}\"\ncritical = true\ninterval = \"1s\"\n\
             timeout = \"2s\"\ngrants.sql = [\"main\"]\n",
            test_artifacts::CHECK_DATABASE
        ),
    )
    .await;

    for _ in 0..1200 {
        let (_, _, text) = server.get("/metrics").await;
        let timed_out: f64 = (0..RUNAWAYS)
            .filter_map(|i| {
                sample(
                    &text,
                    &format!("adtrobot_check_runs_total{{check=\"spin{i}\",outcome=\"fail\"}}"),
                )
            })
            .sum();
        if timed_out >= RUNAWAY_RUNS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = server.json("/health").await;
    assert_eq!(
        check(&body, "spin0")["message"],
        "timeout",
        "the runaway's own call times out: {body}"
    );
    for i in 0..RUNAWAYS {
        std::fs::remove_file(server.dir.0.join(format!("plugins.d/spin{i}.wasm"))).unwrap();
    }
    server
        .wait_for("/health", |_, body| body["checks"].get("spin0").is_none())
        .await;

    // Nothing of theirs still runs on the database (an ordering wait, bounded)...
    let mut left = running(tag.clone()).await;
    for _ in 0..200 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = running(tag.clone()).await;
    }
    assert_eq!(left, 0, "statements tagged {tag} still run on the database");
    // ... nor in the host: over two idle seconds it uses a fraction of one core (a
    // stranded statement would use all of one).
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 100,
        "the host used {used} ticks of CPU in 2 idle seconds"
    );
    // And the datasource's pool still serves the critical check.
    let (status, body) = server
        .wait_for("/health/database", |status, body| {
            status == 200 && body["checks"]["database"]["age_seconds"].as_f64() < Some(1.5)
        })
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn runaway_statements_stop_with_their_runs_on_sqlite() {
    let dir = TempDir::new();
    let file = dir.0.join("app.db");
    sqlite(&file).await.close().await;
    runaway_statements_stop_with_their_runs(
        &format!("sqlite://{}", file.display()),
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        |_| async { 0 }, // in-process: the CPU measure covers it
    )
    .await;
}

#[tokio::test]
async fn runaway_statements_stop_with_their_runs_on_postgres() {
    let admin = postgres().await;
    runaway_statements_stop_with_their_runs(
        POSTGRES_READER_URL,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        |tag| {
            let admin = admin.clone();
            async move {
                sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
                )
                .bind(tag)
                .fetch_one(&admin)
                .await
                .unwrap()
            }
        },
    )
    .await;
}

#[tokio::test]
async fn runaway_statements_stop_with_their_runs_on_mariadb() {
    let admin = mariadb().await;
    runaway_statements_stop_with_their_runs(
        MARIADB_READER_URL,
        "SELECT BENCHMARK(1000000000000, MD5('x'))",
        |tag| {
            let admin = admin.clone();
            async move {
                sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.PROCESSLIST \
                     WHERE COMMAND = 'Query' AND INFO LIKE CONCAT('%', ?, '%') AND ID <> CONNECTION_ID()",
                )
                .bind(tag)
                .fetch_one(&admin)
                .await
                .unwrap()
            }
        },
    )
    .await;
}

/// Host memory stays bounded whatever a plugin queries: values far past the cap are
/// refused by the database (SQLite's length limit, MariaDB's max_allowed_packet)
/// before the host holds them.
#[tokio::test]
async fn huge_sql_values_never_reach_host_memory() {
    mariadb().await;
    let dir = TempDir::new();
    let file = dir.0.join("app.db");
    sqlite(&file).await.close().await;
    let plugins = dir.0.join("plugins.d");
    for (name, url_key, statement) in [
        ("lite", "lite", "SELECT zeroblob(900000000)"),
        (
            "lite_text",
            "lite",
            "SELECT length(printf('%.*c', 900000000, 'x'))",
        ),
        ("maria", "maria", "SELECT REPEAT('x', 900000000)"),
    ] {
        drop_misbehave(
            &plugins,
            name,
            &format!(
                "interval = \"1h\"\ntimeout = \"5s\"\ngrants.sql = [\"{url_key}\"]\n\
                 settings = {{ mode = \"sql\", datasource = \"{url_key}\", statement = {statement:?} }}\n"
            ),
        );
    }
    let server = Host::start_in(
        dir,
        &format!(
            "{WATCH}[datasources.lite]\nurl = \"sqlite://{}\"\n\
             [datasources.maria]\nurl = \"{MARIADB_READER_URL}\"\n",
            file.display()
        ),
    )
    .await;
    let (_, body) = server
        .wait_for("/health", |_, b| {
            ["lite", "lite_text", "maria"]
                .iter()
                .all(|n| has_run(check(b, n)))
        })
        .await;
    assert_eq!(
        check(&body, "lite")["message"],
        "too-large:4194304",
        "{body}"
    );
    assert_eq!(
        check(&body, "lite_text")["message"],
        "rows:1 first:null",
        "{body}"
    );
    assert_eq!(
        check(&body, "maria")["message"],
        "rows:1 first:null",
        "{body}"
    );
    let peak = proc_status_kib(server.child.id(), "VmHWM");
    assert!(peak < 256 * 1024, "host peak RSS {peak} KiB");
}
