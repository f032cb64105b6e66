//! Replicas and faults, for real: two `serve` processes on one PostgreSQL answer the
//! same history and uptime, and a restarted one still shows what it ran before; a
//! PostgreSQL server of the test's own, stopped and started again mid-run, costs no
//! result and no `/health` answer; a host killed with SIGKILL loses at most the results
//! it had not written yet; the status page shows the store's uptime over the window
//! asked for, each SLO, and the checks the config no longer has.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::journal::{
    ROLLED, each_grain, metric, on_demand, recorded, replica_config, run_until, start_replicas,
    terminate,
};

/// The history of `check` as `host` answers it, over the last hour.
async fn history(host: &Host, check: &str) -> Value {
    let (status, body) = host
        .json(&format!("/v1/checks/{check}/history?since=1h"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The nodes of a history's results.
fn nodes(body: &Value) -> BTreeSet<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn two_replicas_answer_the_same_history_and_a_restarted_one_keeps_its_past() {
    let server = Server::Postgres(postgres().await);
    let (name, url) = server.fresh_database().await;
    let (a, b) = start_replicas(&url, [2, 2]).await;
    // Once both have written their results, both answer the same history: every
    // replica's results, from the store.
    let mut same = None;
    for _ in 0..600 {
        let (from_a, from_b) = tokio::join!(history(&a, "shared"), history(&b, "shared"));
        let both = BTreeSet::from(["replica-a".to_owned(), "replica-b".to_owned()]);
        if from_a == from_b && nodes(&from_a) == both {
            same = Some(from_a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = same.expect("the replicas never answered the same history");
    assert_eq!(before["source"], "store");
    let runs = before["results"].as_array().unwrap().len();
    assert!(runs >= 4, "{before}");
    assert_eq!(before["uptime_24h"], 100.0);

    // Replica a restarts (a deploy): it still shows everything before the restart.
    let dir = terminate(a).await;
    let a = Host::start_in(dir, &replica_config(&url, "replica-a")).await;
    let after = history(&a, "shared").await;
    assert_eq!(after["results"], before["results"]);
    assert_eq!(after["uptime_24h"], before["uptime_24h"]);
    let (_, uptime) = a.json("/v1/checks/shared/uptime?window=24h").await;
    assert_eq!(uptime["runs"], runs);
    tokio::join!(terminate(a), terminate(b));
    server.exec(format!("DROP DATABASE {name}")).await;
}

/// A PostgreSQL server of the test's own, in a temporary folder, that the test can stop
/// and start again on the same port, as the real server's outage and return.
struct OwnPostgres {
    dir: TempDir,
    port: u16,
}

impl OwnPostgres {
    /// A new cluster (trust authentication, superuser `postgres`), started.
    fn start() -> OwnPostgres {
        let dir = TempDir::new();
        if is_root() {
            // PostgreSQL refuses to run as root: the cluster is the postgres user's.
            let chown = Command::new("chown")
                .args(["postgres:", &dir.0.display().to_string()])
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let data = dir.0.join("data").display().to_string();
        as_postgres(&[
            "initdb",
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = OwnPostgres { dir, port };
        server.up();
        server
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.0.display()
        );
        let data = self.dir.0.join("data").display().to_string();
        let log = self.dir.0.join("server.log").display().to_string();
        as_postgres(&[
            "pg_ctl", "-D", &data, "-l", &log, "-o", &options, "-w", "start",
        ]);
    }

    /// Stops the server (fast: open connections are cut, as in a crash or failover).
    fn down(&self) {
        let data = self.dir.0.join("data").display().to_string();
        as_postgres(&["pg_ctl", "-D", &data, "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.0.join("data").display().to_string();
        let _ = postgres_command(&["pg_ctl", "-D", &data, "-m", "immediate", "stop"]).output();
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// PostgreSQL's server program `args[0]` with the rest of `args`, as the postgres user
/// when the tests run as root.
fn postgres_command(args: &[&str]) -> Command {
    let program = server_program(args[0]);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(&args[1..]);
    command
}

fn as_postgres(args: &[&str]) {
    let out = postgres_command(args).output().unwrap_or_else(|e| {
        panic!("cannot run PostgreSQL's {}: {e}", args[0]);
    });
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// Where a PostgreSQL server program is: on the PATH, or in Debian's versioned folder.
fn server_program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin").join(name))
        .find(|p| p.is_file());
    on_path.or(debian).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server program {name} is not installed: the outage test runs a \
             server of its own (apt-get install postgresql)"
        )
    })
}

#[tokio::test]
async fn postgres_stopped_and_started_again_mid_run_costs_no_result() {
    let own = OwnPostgres::start();
    let config = format!(
        "shutdown_delay = \"0s\"\n[datasources.main]\nurl = {:?}\n{}",
        own.url(),
        on_demand("c", "pass", "")
    );
    let host = Host::start(&config).await;
    run_until(&host, "c", None, 2).await;

    own.down();
    let before = recorded(&host, "c", None).await.len();
    run_until(&host, "c", None, before + 3).await;
    let (status, _) = host.json("/health").await;
    assert_eq!(status, 200, "/health answers while the store is down");
    for _ in 0..600 {
        if metric(&host, "history_queued_results").await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&host, "history_queued_results").await >= 1.0);
    // The history answers from memory meanwhile, and says so.
    let (_, during) = host.json("/v1/checks/c/history").await;
    assert_eq!(during["source"], "memory", "{during}");

    own.up();
    for _ in 0..600 {
        if metric(&host, "history_queued_results").await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&host, "history_queued_results").await, 0.0);
    assert_eq!(metric(&host, "history_dropped_total").await, 0.0);
    let runs = recorded(&host, "c", None).await;
    terminate(host).await;

    let db = sqlx::PgPool::connect(&own.url()).await.unwrap();
    let at: Vec<i64> =
        sqlx::query_scalar("SELECT at_ms FROM hh_result WHERE check_name = 'c' ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(at.len(), runs.len(), "nothing lost, nothing twice");
    assert!(
        at.windows(2).all(|w| w[0] <= w[1]),
        "written in order: {at:?}"
    );
    let rolled: Vec<(String, i64, i64, i64)> = sqlx::query_as(ROLLED)
        .bind("c")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rolled, each_grain(at.len(), 0), "each result counted once");
    db.close().await;
}

/// `(check, at_ms)` of every result a host logged as recorded.
fn logged_results(lines: &[String]) -> BTreeSet<(String, i64)> {
    lines
        .iter()
        .filter(|l| l.contains("result recorded"))
        .map(|l| {
            let field = |name: &str| {
                let rest = l.split(&format!("{name}=")).nth(1).unwrap();
                rest.split_whitespace().next().unwrap().to_owned()
            };
            (field("check"), field("at_ms").parse().unwrap())
        })
        .collect()
}

/// How much of a second's worth of results a SIGKILL may cost: the results waiting
/// for the next write (the writer sends every second) and the write under way. The
/// write of a few dozen rows to SQLite takes milliseconds; the second second is for a
/// machine busy with other tests.
const KILL_LOSS_SPAN_MS: i64 = 2000;

#[tokio::test]
async fn sigkill_loses_at_most_the_results_not_yet_written() {
    // Twenty checks a second into the default SQLite store.
    let checks: String = (0..20)
        .map(|i| {
            format!(
                "[checks.c{i}]\nplugin = {:?}\ninterval = \"1s\"\n",
                test_artifacts::TRIVIAL
            )
        })
        .collect();
    let config = format!(
        "[datasources.main]\nurl = \"sqlite:data/app.db\"\n[history]\nnode = \"k\"\n{checks}"
    );
    let env = [("HEALTHHOST_LOG", "info,healthhost::health=debug")];
    let host = Host::start_with_env(&config, &env).await;
    for _ in 0..1200 {
        if logged_results(&host.log_lines()).len() >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.signal("KILL");
    let mut lines = host.log_lines();
    // Every line the host wrote before it died reaches the pipe's reader.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = host.log_lines();
        if now.len() == lines.len() {
            break;
        }
        lines = now;
    }
    let logged = logged_results(&lines);
    assert!(logged.len() >= 100, "{} results logged", logged.len());
    let dir = host.stop();

    let pool = sqlite(&dir.0.join("data/app.db")).await;
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT check_name, at_ms FROM hh_result")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored: BTreeSet<(String, i64)> = rows.iter().cloned().collect();
    assert_eq!(stored.len(), rows.len(), "no result twice");
    assert!(stored.is_subset(&logged), "only results the host recorded");
    let newest = logged.iter().map(|(_, at)| *at).max().unwrap();
    let lost: Vec<_> = logged.difference(&stored).collect();
    assert!(
        lost.iter().all(|(_, at)| *at > newest - KILL_LOSS_SPAN_MS),
        "only the last results are lost: {} of {}, newest {newest}: {lost:?}",
        lost.len(),
        logged.len()
    );
    // The rollups count exactly the stored results (written in one transaction).
    let rolled: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT grain, CAST(SUM(runs) AS BIGINT), CAST(SUM(fail) AS BIGINT), \
         CAST(SUM(latency_count) AS BIGINT) FROM hh_rollup GROUP BY grain ORDER BY grain",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rolled, each_grain(stored.len(), 0));
}

/// The `<tr>` of check `name` on a page.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("data-check=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name}: {html}"));
    let end = html[start..].find("</tr>").unwrap();
    &html[start..start + end]
}

#[tokio::test]
async fn the_page_shows_stored_uptime_over_its_window_the_slo_and_removed_checks() {
    let dir = TempDir::new();
    let plugins = dir.0.join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    drop_file(&plugins, "gone.toml", b"interval = \"1s\"\n");
    drop_file(
        &plugins,
        "gone.wasm",
        &std::fs::read(test_artifacts::TRIVIAL).unwrap(),
    );
    let config = format!(
        "watch_interval = \"100ms\"\n[datasources.main]\nurl = \"sqlite:data/app.db\"\n{}\
         slo = \"99.5%\"\nslo_window = \"7d\"\n",
        on_demand("kept", "pass", "")
    );
    let host = Host::start_in(dir, &config).await;
    run_until(&host, "kept", None, 2).await;
    host.wait_for("/v1/checks/gone/uptime", |s, b| s == 200 && b["runs"] != 0)
        .await;

    let (status, _, page) = host.get("/?window=7d").await;
    assert_eq!(status, 200);
    assert!(page.contains("Uptime (7d)"), "{page}");
    assert!(page.contains("<strong aria-current=\"page\">7d</strong>"));
    assert!(page.contains("href=\"/?window=90d\""));
    let kept = row(&page, "kept");
    assert!(kept.contains("100.000 %"), "{kept}");
    // The uptime answer's other numbers over the window: runs, errors, percentiles.
    assert!(kept.contains(" runs (0 failed, 0 errors) · p50 "), "{kept}");
    assert!(
        kept.contains("% of the window"),
        "the data began minutes ago: {kept}"
    );
    assert!(
        kept.contains("SLO 99.5 % (7d): 100 % of the error budget left"),
        "{kept}"
    );
    let (status, _, bad) = host.get("/?window=365d").await;
    assert_eq!(status, 400, "{bad}");

    // The drop-in goes: the page lists it as removed, its history is still there.
    std::fs::remove_file(host.dir.0.join("plugins.d/gone.wasm")).unwrap();
    host.wait_for("/health", |_, b| b["checks"].get("gone").is_none())
        .await;
    let mut page = String::new();
    for _ in 0..600 {
        page = host.get("/").await.2;
        if page.contains("id=\"removed\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (checks, removed) = page.split_once("id=\"removed\"").unwrap();
    assert!(
        !checks.contains("data-check=\"gone\""),
        "not among the checks"
    );
    assert!(row(removed, "gone").contains("100.000 %"), "{removed}");
    let body = history(&host, "gone").await;
    assert!(!body["results"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(body["source"], "store");
    let (status, _) = host.json("/v1/checks/never-was/history").await;
    assert_eq!(status, 404);
}
