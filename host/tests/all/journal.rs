//! Check history in the store (`[history]`): every recorded result reaches the
//! `hh_result` table, with its node and its scrubbed message, and the rollups count it
//! once at every grain, from the default SQLite and from two replicas on one
//! PostgreSQL, which then answer the same uptime; a store that is down never delays
//! `/health`, and its queue stays within its bounds (the outage and return of a real
//! server are in `replicas`); SLOs; pruning with two replicas.
//!
//! The checks here run on demand, so the test decides how many runs there are, and the
//! in-memory history (`/v1/checks/{check}/history`) says how many the host recorded:
//! after a SIGTERM the store must hold exactly those.

use serde_json::Value;

use crate::common::*;

/// An on-demand misbehave check named `name` in `mode`.
pub(crate) fn on_demand(name: &str, mode: &str, extra: &str) -> String {
    format!(
        "[checks.{name}]\nplugin = {:?}\non_demand = true\ninterval = \"1s\"\n\
         settings.mode = \"{mode}\"\n{extra}\n",
        test_artifacts::MISBEHAVE
    )
}

/// The results of `check` in `host`'s history (of node `node` only, when given).
pub(crate) async fn recorded(host: &Host, check: &str, node: Option<&str>) -> Vec<Value> {
    let (_, body) = host.json(&format!("/v1/checks/{check}/history")).await;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    results
        .into_iter()
        .filter(|r| node.is_none_or(|node| r["node"] == node))
        .collect()
}

/// Asks `/health` until `check` has run `runs` times in all (of node `node` only, when
/// given; an on-demand result is reused for its one-second interval, so this takes
/// about `runs` seconds).
pub(crate) async fn run_until(host: &Host, check: &str, node: Option<&str>, runs: usize) {
    for _ in 0..600 {
        let (status, _) = host.json("/health").await;
        assert!(status == 200 || status == 503, "{status}");
        if recorded(host, check, node).await.len() >= runs {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{check} did not run {runs} times");
}

/// The value of the host metric `name` (without the namespace).
pub(crate) async fn metric(host: &Host, name: &str) -> f64 {
    let (_, _, text) = host.get("/metrics").await;
    let series = parse_exposition(&text).unwrap();
    series_value(&series, &format!("adtrobot_{name}"), &[]).unwrap_or(0.0)
}

/// Sends SIGTERM and waits for the host to exit (it flushes its history first).
pub(crate) async fn terminate(mut host: Host) -> TempDir {
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
pub(crate) const STORED: &str =
    "SELECT node, outcome, message FROM hh_result WHERE check_name = $1 ORDER BY id";
/// The runs, failures and latencies of `check` the rollups of each grain count, over
/// all buckets.
pub(crate) const ROLLED: &str = "SELECT grain, CAST(SUM(runs) AS BIGINT), CAST(SUM(fail) AS BIGINT), \
     CAST(SUM(latency_count) AS BIGINT) FROM hh_rollup WHERE check_name = $1 \
     GROUP BY grain ORDER BY grain";

/// `(grain, runs, failures, latencies)` for each grain: `n`, `fail` and `n`.
pub(crate) fn each_grain(n: usize, fail: usize) -> Vec<(String, i64, i64, i64)> {
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
    run_until(&host, "secretive", None, 3).await;
    let runs = recorded(&host, "secretive", None).await.len();
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

/// The config of replica `node` on the PostgreSQL database at `url`: the on-demand
/// check `shared`, and history in `main`.
pub(crate) fn replica_config(url: &str, node: &str) -> String {
    format!(
        "shutdown_delay = \"0s\"\n[datasources.main]\nurl = {url:?}\n\
         [history]\nnode = \"{node}\"\n{}",
        on_demand("shared", "pass", "")
    )
}

/// Replicas `replica-a` and `replica-b` on the database at `url`, started at once (both
/// apply the migrations, which must not collide), after each ran `shared` as many
/// times as `runs` says.
pub(crate) async fn start_replicas(url: &str, runs: [usize; 2]) -> (Host, Host) {
    let (config_a, config_b) = (
        replica_config(url, "replica-a"),
        replica_config(url, "replica-b"),
    );
    let (a, b) = tokio::join!(Host::start(&config_a), Host::start(&config_b));
    tokio::join!(
        run_until(&a, "shared", Some("replica-a"), runs[0]),
        run_until(&b, "shared", Some("replica-b"), runs[1])
    );
    (a, b)
}

#[tokio::test]
async fn two_replicas_write_one_postgres_table_each_as_its_node() {
    let server = Server::Postgres(postgres().await);
    let (name, url) = server.fresh_database().await;
    let (a, b) = start_replicas(&url, [2, 3]).await;
    let (runs_a, runs_b) = (
        recorded(&a, "shared", Some("replica-a")).await.len(),
        recorded(&b, "shared", Some("replica-b")).await.len(),
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
    run_until(&host, "c", None, 4).await;
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

#[tokio::test]
async fn slos_show_their_budget_in_the_uptime_answer_and_in_metrics() {
    let config = format!(
        "[datasources.main]\nurl = \"sqlite:data/app.db\"\n{}{}",
        on_demand("good", "pass", "slo = \"99%\""),
        on_demand("bad", "fail", "slo = \"50%\"\nslo_window = \"24h\"")
    );
    let host = Host::start(&config).await;
    run_until(&host, "good", None, 2).await;
    run_until(&host, "bad", None, 2).await;
    let stored = |v: &Value| v["runs"].as_i64().unwrap_or(0) >= 2;
    let (_, good) = host
        .wait_for("/v1/checks/good/uptime", |_, v| stored(v))
        .await;
    assert_eq!(good["slo"]["target_percent"], 99.0);
    assert_eq!(
        good["slo"]["window"], "30d",
        "the default window, read apart"
    );
    assert_eq!(good["slo"]["error_budget_percent"], 1.0);
    assert_eq!(good["slo"]["budget_remaining"], 1.0);
    let (_, bad) = host
        .wait_for("/v1/checks/bad/uptime", |_, v| stored(v))
        .await;
    assert_eq!(bad["slo"]["window"], "24h");
    assert_eq!(bad["slo"]["uptime_percent"], 0.0);
    assert_eq!(
        bad["slo"]["budget_remaining"], -1.0,
        "every run down: twice the budget"
    );
    let (_, plain) = host.json("/v1/checks/good/uptime?window=7d").await;
    assert_eq!(plain["slo"]["window"], "30d", "an SLO keeps its own window");
    // /metrics has them once the refresh has read the store.
    for _ in 0..600 {
        let (_, _, text) = host.get("/metrics").await;
        let series = parse_exposition(&text).unwrap();
        let value = |name: &str, check: &str| {
            series_value(&series, &format!("adtrobot_{name}"), &[("check", check)])
        };
        if value("check_error_budget_remaining", "bad") == Some(-1.0) {
            assert_eq!(value("check_slo_target", "bad"), Some(0.5));
            assert_eq!(value("check_slo_target", "good"), Some(0.99));
            assert_eq!(value("check_error_budget_remaining", "good"), Some(1.0));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the SLO gauges never showed the stored runs");
}
