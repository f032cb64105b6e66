//! A check's history end to end, through a real `healthhost serve`:
//! `GET /v1/checks/{check}/history` keeps pass and fail results in order with their
//! messages, filters by `since` (a duration or an RFC 3339 time), shows messages only
//! to callers `/health` shows them to, answers 404 and 400 like the other endpoints,
//! and forgets a removed drop-in's results.

use std::time::SystemTime;

use crate::common::*;
use serde_json::Value;

fn history_path(check: &str) -> String {
    format!("/v1/checks/{check}/history")
}

/// The results of a history answer.
fn results(body: &Value) -> &Vec<Value> {
    body["results"].as_array().unwrap()
}

fn statuses(body: &Value) -> Vec<&str> {
    results(body)
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect()
}

/// `statuses` with consecutive repeats collapsed: `pass pass fail` → `pass fail`.
fn runs(statuses: &[&str]) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for s in statuses {
        if runs.last().is_none_or(|last| last != s) {
            runs.push((*s).to_owned());
        }
    }
    runs
}

async fn exec(pool: &sqlx::SqlitePool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn keeps_pass_and_fail_results_in_order_with_their_messages() {
    let dir = TempDir::new();
    let db_file = dir.0.join("flag.db");
    let pool = sqlite(&db_file).await;
    exec(
        &pool,
        "CREATE TABLE flag (v INTEGER); INSERT INTO flag VALUES (1);",
    )
    .await;
    // Passes while the table is there, fails while it is not; runs every second.
    let config = format!(
        "[datasources.main]\nurl = \"sqlite://{}\"\n\
         [checks.probe]\nplugin = {:?}\ninterval = \"1s\"\ngrants.sql = [\"main\"]\n\
         settings = {{ mode = \"sql\", statement = \"SELECT v FROM flag\" }}\n",
        db_file.display(),
        test_artifacts::MISBEHAVE,
    );
    let server = Host::start_in(dir, &config).await;
    let path = history_path("probe");
    server
        .wait_for(&path, |_, b| statuses(b).contains(&"pass"))
        .await;
    exec(&pool, "DROP TABLE flag").await;
    server
        .wait_for(&path, |_, b| statuses(b).contains(&"fail"))
        .await;
    exec(
        &pool,
        "CREATE TABLE flag (v INTEGER); INSERT INTO flag VALUES (1);",
    )
    .await;
    let (status, body) = server
        .wait_for(&path, |_, b| runs(&statuses(b)).len() == 3)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["check"], "probe");
    assert_eq!(runs(&statuses(&body)), ["pass", "fail", "pass"], "{body}");

    let all = results(&body);
    for r in all {
        let message = r["message"].as_str().unwrap();
        match r["status"].as_str().unwrap() {
            "pass" => {
                assert_eq!(message, "rows:1 first:1");
                assert_eq!(r["outcome"], "pass");
            }
            _ => {
                assert!(
                    message.starts_with("database:") && message.contains("no such table"),
                    "{r}"
                );
                assert_eq!(r["outcome"], "fail");
            }
        }
        // The plugin measures none: the run's own duration stands in.
        assert!(r["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{r}");
    }
    let times: Vec<SystemTime> = all
        .iter()
        .map(|r| humantime::parse_rfc3339(r["at"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {body}"
    );
    // From the store (this host's newest results from memory until written), each
    // with this host's node name.
    assert_eq!(body["source"], "store");
    assert_eq!(body["truncated"], false);
    let node = all[0]["node"].as_str().unwrap();
    let port = server.base.rsplit(':').next().unwrap();
    assert!(node.ends_with(&format!(":{port}")), "{node}");
    assert!(all.iter().all(|r| r["node"] == node), "{body}");
    // The uptime is the store's, so it counts a result once it is written: at some
    // moment every listed result is, and then it is theirs.
    server
        .wait_for(&path, |_, b| {
            let all = results(b);
            let up = all.iter().filter(|r| r["status"] == "pass").count();
            let expected = (up as f64 * 100.0 / all.len() as f64 * 100.0).round() / 100.0;
            b["uptime_24h"].as_f64() == Some(expected)
        })
        .await;

    // `since` as a time: from the first failure on (inclusive).
    let first_fail = all.iter().find(|r| r["status"] == "fail").unwrap();
    let at = first_fail["at"].as_str().unwrap();
    let (status, later) = server.json(&format!("{path}?since={at}")).await;
    assert_eq!(status, 200, "{later}");
    assert_eq!(results(&later)[0], *first_fail);
    assert_eq!(later["since"], at);
    assert_eq!(runs(&statuses(&later)), ["fail", "pass"]);
    // As a duration: an hour covers them all (more may have run since).
    let (_, hour) = server.json(&format!("{path}?since=1h")).await;
    assert_eq!(results(&hour)[..all.len()], all[..]);
    // A time long before: everything kept.
    let (_, old) = server
        .json(&format!("{path}?since=2000-01-01T00:00:00Z"))
        .await;
    assert_eq!(results(&old)[..all.len()], all[..]);
}

#[tokio::test]
async fn messages_are_shown_to_whom_health_shows_them() {
    let config = "show_details = \"when-authorized\"\ndetails_token = \"let-me-see\"\n\
                  [checks.flaky]\nplugin = PLUGIN\ninterval = \"1h\"\n\
                  settings = { mode = \"fail\", message = \"disk full\" }\n"
        .replace("PLUGIN", &format!("{:?}", test_artifacts::MISBEHAVE));
    let server = Host::start(&config).await;
    let path = history_path("flaky");
    let (status, body) = server.wait_for(&path, |_, b| !results(b).is_empty()).await;
    assert_eq!(status, 200);
    let result = &results(&body)[0];
    assert_eq!(
        (&result["status"], &result["outcome"]),
        (&"fail".into(), &"fail".into())
    );
    assert!(result["message"].is_null(), "{body}");
    assert_eq!(body["uptime_24h"], 0.0);
    for wrong in ["Bearer nope", "let-me-see", "Bearer let-me-seeX"] {
        let (_, _, text) = server.get_with(&path, &[("authorization", wrong)]).await;
        assert!(!text.contains("disk full"), "{wrong}: {text}");
    }
    let (_, _, text) = server
        .get_with(&path, &[("authorization", "Bearer let-me-see")])
        .await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(results(&body)[0]["message"], "disk full");
}

#[tokio::test]
async fn unknown_checks_are_404_bad_since_is_400_and_reading_runs_nothing() {
    let config = format!(
        "[checks.lazy]\nplugin = {:?}\non_demand = true\nsettings.message = \"ran\"\n",
        test_artifacts::MISBEHAVE
    );
    let server = Host::start(&config).await;
    server.wait_loaded().await;

    let (status, body) = server.json(&history_path("nope")).await;
    assert_eq!(status, 404);
    let (_, health) = server.json("/health/nope").await;
    assert_eq!(body, health, "the same answer as /health/{{check}}");

    for bad in ["yesterday", "1x", "2026-11-28T18:00:00+02:00"] {
        let query = url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>();
        let (status, body) = server
            .json(&format!("{}?since={query}", history_path("lazy")))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(&format!("'{bad}'")), "{error}");
        assert_eq!(
            (&body["parameter"], &body["value"]),
            (&"since".into(), &bad.into())
        );
    }

    // An on-demand check that nobody asked for has no results; reading its history
    // does not run it.
    let (status, body) = server.json(&history_path("lazy")).await;
    assert_eq!(status, 200);
    assert_eq!(results(&body).len(), 0);
    assert!(body["uptime_24h"].is_null());
    let (status, _) = server.json("/health/lazy").await;
    assert_eq!(status, 200);
    let (_, body) = server.json(&history_path("lazy")).await;
    assert_eq!(statuses(&body), ["pass"]);
    assert_eq!(results(&body)[0]["message"], "ran");
    assert_eq!(body["uptime_24h"], 100.0);
}

#[tokio::test]
async fn a_removed_drop_in_takes_its_history_with_it() {
    let dir = TempDir::new();
    let plugins = dir.0.join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    let wasm = std::fs::read(test_artifacts::TRIVIAL).unwrap();
    let add = || {
        drop_file(&plugins, "extra.toml", b"interval = \"1h\"\n");
        drop_file(&plugins, "extra.wasm", &wasm);
    };
    add();
    let server = Host::start_in(dir, "watch_interval = \"100ms\"\n").await;
    let path = history_path("extra");
    let (_, body) = server.wait_for(&path, |_, b| !results(b).is_empty()).await;
    assert_eq!(statuses(&body), ["pass"]);
    let first = results(&body)[0]["at"].clone();

    std::fs::remove_file(plugins.join("extra.wasm")).unwrap();
    server
        .wait_for("/health", |_, b| b["checks"].get("extra").is_none())
        .await;
    let (status, _) = server.json(&path).await;
    assert_eq!(status, 404);

    // Back under the same name: a new history, its one run the only result.
    add();
    let (_, body) = server
        .wait_for(&path, |s, b| s == 200 && !results(b).is_empty())
        .await;
    assert_eq!(statuses(&body), ["pass"], "{body}");
    assert_ne!(results(&body)[0]["at"], first);
}
