//! Check history in the store (`[history]`): every recorded result reaches the
//! `hh_result` table, with its node and its scrubbed message, and the rollups count it
//! once at every grain, from the default SQLite and from two replicas on one
//! PostgreSQL, which then answer the same uptime; a store that is down or cut off never
//! delays `/health`, and its queue stays within its bounds and drains, in order and
//! complete, when the store is back.
//!
//! The checks here run on demand, so the test decides how many runs there are, and the
//! in-memory history (`/v1/checks/{check}/history`) says how many the host recorded:
//! after a SIGTERM the store must hold exactly those.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::common::*;

/// An on-demand misbehave check named `name` in `mode`.
fn on_demand(name: &str, mode: &str, extra: &str) -> String {
    format!(
        "[checks.{name}]\nplugin = {:?}\non_demand = true\ninterval = \"1s\"\n\
         settings.mode = \"{mode}\"\n{extra}\n",
        test_artifacts::MISBEHAVE
    )
}

/// The results `host` recorded for `check`, from its in-memory history.
async fn recorded(host: &Host, check: &str) -> Vec<Value> {
    let (_, body) = host.json(&format!("/v1/checks/{check}/history")).await;
    body["results"].as_array().cloned().unwrap_or_default()
}

/// Asks `/health` until `check` has run `runs` times in all (an on-demand result is
/// reused for its one-second interval, so this takes about `runs` seconds).
async fn run_until(host: &Host, check: &str, runs: usize) {
    for _ in 0..600 {
        let (status, _) = host.json("/health").await;
        assert!(status == 200 || status == 503, "{status}");
        if recorded(host, check).await.len() >= runs {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{check} did not run {runs} times");
}

/// The value of the host metric `name` (without the namespace).
async fn metric(host: &Host, name: &str) -> f64 {
    let (_, _, text) = host.get("/metrics").await;
    let series = parse_exposition(&text).unwrap();
    series_value(&series, &format!("adtrobot_{name}"), &[]).unwrap_or(0.0)
}

/// Sends SIGTERM and waits for the host to exit (it flushes its history first).
async fn terminate(mut host: Host) -> TempDir {
    host.signal("TERM");
    tokio::task::spawn_blocking(move || {
        let exit = host.child.wait().unwrap();
        assert_eq!(exit.code(), Some(0));
        host.stop()
    })
    .await
    .unwrap()
}

/// `(node, outcome, message)` of every stored result of `check`, oldest first.
const STORED: &str =
    "SELECT node, outcome, message FROM hh_result WHERE check_name = $1 ORDER BY id";
/// The runs, failures and latencies of `check` the rollups of each grain count, over
/// all buckets.
const ROLLED: &str = "SELECT grain, CAST(SUM(runs) AS BIGINT), CAST(SUM(fail) AS BIGINT), \
     CAST(SUM(latency_count) AS BIGINT) FROM hh_rollup WHERE check_name = $1 \
     GROUP BY grain ORDER BY grain";

/// `(grain, runs, failures, latencies)` for each grain: `n`, `fail` and `n`.
fn each_grain(n: usize, fail: usize) -> Vec<(String, i64, i64, i64)> {
    let (n, fail) = (n as i64, fail as i64);
    ["d", "h", "m"].map(|g| (g.to_owned(), n, fail, n)).to_vec()
}

#[tokio::test]
async fn every_result_reaches_the_default_sqlite_store_with_node_and_scrubbed_message() {
    let config = format!(
        "shutdown_delay = \"0s\"\n[datasources.main]\nurl = \"sqlite:data/app.db\"\n\
         [history]\nnode = \"replica-a\"\n{}",
        on_demand(
            "secretive",
            "secret",
            "settings.token = \"${HH_JOURNAL_TOKEN}\""
        )
    );
    let host = Host::start_with_env(&config, &[("HH_JOURNAL_TOKEN", "hunter2-SECRET")]).await;
    run_until(&host, "secretive", 3).await;
    let runs = recorded(&host, "secretive").await.len();
    let dir = terminate(host).await;

    let pool = sqlite(&dir.0.join("data/app.db")).await;
    let stored: Vec<(String, String, Option<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(STORED.replace("$1", "?")))
            .bind("secretive")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored.len(),
        runs,
        "every recorded result, no more: {stored:?}"
    );
    for (node, outcome, message) in &stored {
        assert_eq!(node, "replica-a");
        assert_eq!(outcome, "fail");
        assert_eq!(message.as_deref(), Some("token is [REDACTED]"));
    }
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM hh_result WHERE message LIKE '%SECRET%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
    // The rollups count the same runs at every grain: all failed, all with a latency.
    let rolled: Vec<(String, i64, i64, i64)> =
        sqlx::query_as(sqlx::AssertSqlSafe(ROLLED.replace("$1", "?")))
            .bind("secretive")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rolled, each_grain(runs, runs));
}

#[tokio::test]
async fn two_replicas_write_one_postgres_table_each_as_its_node() {
    let server = Server::Postgres(postgres().await);
    let (name, url) = server.fresh_database().await;
    let config = |node: &str| {
        format!(
            "shutdown_delay = \"0s\"\n[datasources.main]\nurl = {url:?}\n\
             [history]\nnode = \"{node}\"\n{}",
            on_demand("shared", "pass", "")
        )
    };
    // Both start at once: both apply the migrations, which must not collide.
    let (config_a, config_b) = (config("replica-a"), config("replica-b"));
    let (a, b) = tokio::join!(Host::start(&config_a), Host::start(&config_b));
    tokio::join!(run_until(&a, "shared", 2), run_until(&b, "shared", 3));
    let (runs_a, runs_b) = (
        recorded(&a, "shared").await.len(),
        recorded(&b, "shared").await.len(),
    );
    // Both replicas answer the uptime of both replicas' runs, from the shared rollups.
    let total = (runs_a + runs_b) as u64;
    let path = "/v1/checks/shared/uptime?window=7d";
    let (_, from_a) = a
        .wait_for(path, |s, v| s == 200 && v["runs"] == total)
        .await;
    let (_, from_b) = b
        .wait_for(path, |s, v| s == 200 && v["runs"] == total)
        .await;
    for key in ["runs", "outcomes", "uptime_percent", "window"] {
        assert_eq!(from_a[key], from_b[key], "{key}");
    }
    assert_eq!(from_a["outcomes"]["pass"], total);
    assert_eq!(from_a["uptime_percent"], 100.0);
    assert_eq!(from_a["latency_ms"]["count"], from_b["latency_ms"]["count"]);
    let coverage = from_a["coverage"].as_f64().unwrap();
    assert!(
        coverage > 0.0 && coverage < 1.0,
        "the data started minutes ago: {coverage}"
    );
    let (status, body) = a.json("/v1/checks/shared/uptime?window=1y").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["parameter"], "window");
    let (status, _) = a.json("/v1/checks/no-such-check/uptime").await;
    assert_eq!(status, 404);
    tokio::join!(terminate(a), terminate(b));

    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let stored: Vec<(String, String, Option<String>)> = sqlx::query_as(STORED)
        .bind("shared")
        .fetch_all(&db)
        .await
        .unwrap();
    let from = |node: &str| stored.iter().filter(|(n, ..)| n == node).count();
    assert_eq!((from("replica-a"), from("replica-b")), (runs_a, runs_b));
    assert!(stored.iter().all(|(_, outcome, _)| outcome == "pass"));
    // One set of rollup rows: the sums of both replicas' results.
    let rolled: Vec<(String, i64, i64, i64)> = sqlx::query_as(ROLLED)
        .bind("shared")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rolled, each_grain(runs_a + runs_b, 0));
    db.close().await;
    server.exec(format!("DROP DATABASE {name}")).await;
}

#[tokio::test]
async fn an_unreachable_store_never_delays_health_and_its_queue_stays_bounded() {
    // Nothing listens on port 9: every connection is refused.
    let config = format!(
        "[datasources.main]\nurl = \"postgres://postgres@127.0.0.1:9/nowhere\"\n\
         [history]\nqueue_rows = 2\n{}",
        on_demand("c", "pass", "")
    );
    let host = Host::start(&config).await;
    run_until(&host, "c", 4).await;
    let (status, body) = host.json("/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["c"]["outcome"], "pass");
    // Four results for a queue of two: the oldest go once a write has failed (a write
    // in progress still holds its rows), and are counted.
    for _ in 0..600 {
        if metric(&host, "history_dropped_total").await >= 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let queued = metric(&host, "history_queued_results").await;
    let dropped = metric(&host, "history_dropped_total").await;
    assert!((1.0..=2.0).contains(&queued), "queued {queued}");
    assert!(dropped >= 2.0, "dropped {dropped}");
    assert_eq!(metric(&host, "history_written_total").await, 0.0);
    let (status, body) = host.json("/v1/checks/c/uptime").await;
    assert_eq!(status, 503, "the store cannot be read: {body}");
}

#[tokio::test]
async fn without_a_history_store_uptime_says_so() {
    let host = Host::start(&on_demand("c", "pass", "")).await;
    let (status, body) = host.json("/v1/checks/c/uptime").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("kept in memory only"),
        "{body}"
    );
}

/// A TCP forwarder to a database that can be cut off: while down it closes the
/// connections it holds and every new one, as a database restarting or failing over.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: broadcast::Sender<()>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = broadcast::channel(1);
        let (is_up, cuts) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !is_up.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Proxy { port, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            let _ = self.cut.send(());
        }
    }
}

#[tokio::test]
async fn results_queued_through_a_store_outage_all_arrive_in_order() {
    let server = Server::Postgres(postgres().await);
    let (name, url) = server.fresh_database().await;
    // Tables first, straight to the database; the host reaches it through the proxy.
    let out = healthhost(&["migrate", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let through = url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    let config = format!(
        "shutdown_delay = \"0s\"\n[datasources.main]\nurl = {through:?}\n{}",
        on_demand("c", "pass", "")
    );
    let host = Host::start(&config).await;
    run_until(&host, "c", 2).await;

    proxy.set_up(false);
    let before = recorded(&host, "c").await.len();
    run_until(&host, "c", before + 3).await;
    let (status, _) = host.json("/health").await;
    assert_eq!(status, 200, "/health answers while the store is down");
    for _ in 0..600 {
        if metric(&host, "history_queued_results").await >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metric(&host, "history_queued_results").await >= 1.0);

    proxy.set_up(true);
    for _ in 0..600 {
        if metric(&host, "history_queued_results").await == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&host, "history_queued_results").await, 0.0);
    assert_eq!(metric(&host, "history_dropped_total").await, 0.0);
    let runs = recorded(&host, "c").await;
    terminate(host).await;

    let db = sqlx::PgPool::connect(&url).await.unwrap();
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
    server.exec(format!("DROP DATABASE {name}")).await;
}

/// A rollup row of `check` for `grain` at `bucket_ms`, one passing run.
fn rollup_row(check: &str, grain: &str, bucket_ms: i64) -> String {
    let buckets = [
        "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "10000", "inf",
    ];
    format!(
        "INSERT INTO hh_rollup (check_name, grain, bucket_ms, runs, pass, warn, fail, error, \
         latency_count, latency_sum, {}) VALUES ('{check}', '{grain}', {bucket_ms}, 1, 1, 0, 0, 0, \
         0, 0, {})",
        buckets.map(|b| format!("le_{b}")).join(", "),
        ["0"; 12].join(", ")
    )
}

#[tokio::test]
async fn pruning_with_two_replicas_running_deletes_exactly_what_is_past_retention() {
    let server = Server::Postgres(postgres().await);
    let (name, url) = server.fresh_database().await;
    let out = healthhost(&["migrate", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let db = Server::Postgres(sqlx::PgPool::connect(&url).await.unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (minute, hour, day) = (60_000, 3_600_000, 86_400_000);
    let floor = |at: i64, length: i64| at - at.rem_euclid(length);
    // Results: three past a raw retention of 2 h, two within it.
    for age in [5 * hour, 4 * hour, 3 * hour, hour, 30 * minute] {
        db.exec(format!(
            "INSERT INTO hh_result (check_name, node, at_ms, outcome) VALUES ('old', 'seed', {}, 'pass')",
            now - age
        ))
        .await;
    }
    // Rollups: per grain, one bucket past its retention and one within it.
    for (grain, length, past, within) in [
        ("m", minute, 3 * hour, 10 * minute),
        ("h", hour, 3 * day, 2 * hour),
        ("d", day, 12 * day, day),
    ] {
        for age in [past, within] {
            db.exec(rollup_row("old", grain, floor(now - age, length)))
                .await;
        }
    }
    let config = format!(
        "[datasources.main]\nurl = {url:?}\n[history]\nraw_retention = \"2h\"\n\
         minute_retention = \"2h\"\nhour_retention = \"2d\"\nday_retention = \"10d\"\n{}",
        on_demand("c", "pass", "")
    );
    // Both replicas prune at start; one holds the lock, the other skips its pass.
    let (a, b) = tokio::join!(Host::start(&config), Host::start(&config));
    let remaining = "SELECT count(*) FROM hh_result WHERE check_name = 'old'";
    for _ in 0..600 {
        if db.count(remaining.to_owned()).await == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        db.count(remaining.to_owned()).await,
        2,
        "the two within 2 h"
    );
    let ages = format!(
        "SELECT count(*) FROM hh_result WHERE check_name = 'old' AND at_ms >= {}",
        now - 2 * hour
    );
    assert_eq!(db.count(ages).await, 2);
    for (grain, length, within) in [
        ("m", minute, 10 * minute),
        ("h", hour, 2 * hour),
        ("d", day, day),
    ] {
        let kept = format!(
            "SELECT count(*) FROM hh_rollup WHERE check_name = 'old' AND grain = '{grain}' \
             AND bucket_ms = {}",
            floor(now - within, length)
        );
        let all = format!(
            "SELECT count(*) FROM hh_rollup WHERE check_name = 'old' AND grain = '{grain}'"
        );
        assert_eq!(
            (db.count(kept).await, db.count(all).await),
            (1, 1),
            "{grain}"
        );
    }
    drop((a, b));
    let Server::Postgres(pool) = db else {
        unreachable!()
    };
    pool.close().await;
    server.exec(format!("DROP DATABASE {name}")).await;
}
