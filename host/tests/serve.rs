//! `healthhost serve` end to end: a real process on an ephemeral port, real plugins
//! built from source, stand-in upstreams on loopback and real databases. Covers the
//! seed's /health JSON and status codes, the IETF format, exclusion, single checks,
//! staleness, readiness, metrics, 404/405 answers, shutdown and config validation.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Every check has a result.
fn all_ran(_: u16, body: &Value) -> bool {
    body["checks"]
        .as_object()
        .unwrap()
        .values()
        .all(|c| !c["outcome"].is_null())
}

fn check_block(name: &str, wasm: &str, critical: bool, extra: &str) -> String {
    format!(
        "[checks.{name}]\nplugin = {wasm:?}\ncritical = {critical}\ninterval = \"1h\"\n{extra}\n"
    )
}

/// The four built-ins against a SQLite file with a job table and stand-in APIs.
async fn four_builtins(openrouter: &StandIn, db_file: &std::path::Path) -> String {
    let pool = sqlite(db_file).await;
    let next = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 3600.0;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE apscheduler_jobs (id TEXT PRIMARY KEY, next_run_time FLOAT, job_state BLOB NOT NULL);
         INSERT INTO apscheduler_jobs VALUES ('a', {next}, x'00'), ('b', {next}, x'00'), ('c', NULL, x'00');"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let origin = &openrouter.origin;
    format!(
        "[datasources.main]\nurl = \"sqlite://{}\"\n\n{}{}{}{}",
        db_file.display(),
        check_block(
            "database",
            test_artifacts::CHECK_DATABASE,
            true,
            "timeout = \"3s\"\ngrants.sql = [\"main\"]"
        ),
        check_block(
            "scheduler",
            test_artifacts::CHECK_SCHEDULER,
            true,
            "timeout = \"2s\"\ngrants.sql = [\"main\"]\ngrants.metrics = [\"scheduler_jobs\"]"
        ),
        check_block(
            "openrouter",
            test_artifacts::CHECK_OPENROUTER,
            true,
            &format!(
                "timeout = \"10s\"\ngrants.http = [\"{origin}\"]\nsettings.base_url = \"{origin}\""
            )
        ),
        check_block(
            "telegram",
            test_artifacts::CHECK_TELEGRAM,
            true,
            "timeout = \"10s\""
        ),
    )
}

async fn openrouter_stand_in() -> StandIn {
    StandIn::start(routes([("/api/v1/models", Reply::ok(r#"{"data":[]}"#))])).await
}

#[tokio::test]
async fn all_healthy_gives_the_seeds_json_and_200() {
    let openrouter = openrouter_stand_in().await;
    let dir = TempDir::new();
    let server = Host::start(&four_builtins(&openrouter, &dir.0.join("app.db")).await).await;
    let (status, body) = server.wait_for("/health", all_ran).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy");
    let checks = body["checks"].as_object().unwrap();
    assert_eq!(
        checks.keys().collect::<Vec<_>>(),
        ["database", "openrouter", "scheduler", "telegram"]
    );
    for (name, check) in checks {
        assert_eq!(check["healthy"], true, "{name}: {check}");
        assert!(
            check.get("message").is_some() && check.get("latency_ms").is_some(),
            "{name}: {check}"
        );
    }
    assert!(checks["database"]["message"].is_null());
    assert!(checks["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(checks["scheduler"]["message"], "3 jobs scheduled");
    assert!(
        checks["scheduler"]["latency_ms"].is_number()
            || checks["scheduler"]["latency_ms"].is_null()
    );
    assert_eq!(
        checks["telegram"]["message"],
        "Token not configured (dev mode)"
    );
    let (_, headers, _) = server.get("/health").await;
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "application/json");

    // Only the granted sample reaches /metrics; the scheduler's other two are counted.
    let (_, _, text) = server.get("/metrics").await;
    assert!(
        text.contains("adtrobot_scheduler_jobs{check=\"scheduler\"} 3"),
        "{text}"
    );
    assert!(!text.contains("adtrobot_scheduler_overdue_jobs"), "{text}");
    assert!(
        !text.contains("adtrobot_database_latency_seconds"),
        "{text}"
    );
    assert!(
        text.contains(
            "adtrobot_plugin_samples_dropped_total{check=\"scheduler\",reason=\"not-granted\"} 2"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn database_down_gives_503_while_livez_stays_200() {
    let config = format!(
        "[datasources.main]\nurl = \"postgres://postgres@127.0.0.1:9/test\"\n{}{}",
        check_block(
            "database",
            test_artifacts::CHECK_DATABASE,
            true,
            "timeout = \"3s\"\ngrants.sql = [\"main\"]"
        ),
        check_block("telegram", test_artifacts::CHECK_TELEGRAM, true, ""),
    );
    let server = Host::start(&config).await;
    let (status, body) = server.wait_for("/health", all_ran).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["database"]["healthy"], false);
    assert!(
        body["checks"]["database"]["message"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{body}"
    );
    assert_eq!(body["checks"]["telegram"]["healthy"], true);
    let (status, _) = server.json("/livez").await;
    assert_eq!(status, 200);
    let (status, _) = server.json("/readyz").await;
    assert_eq!(status, 503, "ready means healthy too");
}

#[tokio::test]
async fn a_failing_non_critical_check_keeps_200_and_exclude_and_single_checks_work() {
    let config = format!(
        "{}{}",
        check_block("telegram", test_artifacts::CHECK_TELEGRAM, true, ""),
        check_block(
            "flaky",
            test_artifacts::MISBEHAVE,
            false,
            "settings = { mode = \"fail\", message = \"down\" }"
        ),
    );
    let server = Host::start(&config).await;
    let (status, body) = server.wait_for("/health", all_ran).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["flaky"]["healthy"], false);
    assert_eq!(body["checks"]["flaky"]["message"], "down");
    assert_eq!(body["checks"]["flaky"]["critical"], false);

    let (status, body) = server.json("/health?exclude=flaky").await;
    assert_eq!(status, 200);
    assert!(body["checks"].get("flaky").is_none(), "{body}");
    let (status, body) = server.json("/health?exclude=flaky&exclude=telegram").await;
    assert_eq!(
        (status, body["checks"].as_object().unwrap().len()),
        (200, 0)
    );

    let (status, body) = server.json("/health/flaky").await;
    assert_eq!(status, 503);
    assert_eq!(body["message"], "down");
    let (status, body) = server.json("/health/telegram").await;
    assert_eq!((status, body["healthy"].clone()), (200, Value::Bool(true)));
    let (status, _) = server.json("/health/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn ietf_format_on_request() {
    let config = format!(
        "{}{}",
        check_block("telegram", test_artifacts::CHECK_TELEGRAM, true, ""),
        check_block(
            "slow",
            test_artifacts::MISBEHAVE,
            false,
            "settings = { mode = \"warn\", message = \"slow\" }"
        ),
    );
    let server = Host::start(&config).await;
    server.wait_for("/health", all_ran).await;
    let (status, headers, body) = server
        .get_with("/health", &[("accept", "application/health+json")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/health+json");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "warn", "{body}");
    let slow = &body["checks"]["slow:responseTime"][0];
    assert_eq!(slow["status"], "warn");
    assert_eq!(slow["output"], "slow");
    assert!(slow["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["checks"]["telegram:responseTime"][0]["status"], "pass");
}

#[tokio::test]
async fn an_on_demand_check_runs_when_asked_once_for_concurrent_requests() {
    let config = check_block(
        "lazy",
        test_artifacts::MISBEHAVE,
        true,
        "on_demand = true\nsettings.message = \"ran\"",
    );
    let server = Host::start(&config).await;
    let runs = "adtrobot_check_runs_total{check=\"lazy\",outcome=\"pass\"}";
    let (_, _, text) = server.get("/metrics").await;
    assert!(!text.contains(runs), "nothing runs before it is asked for");

    let answers = futures_util::future::join_all((0..8).map(|_| server.json("/health"))).await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["lazy"]["message"], "ran", "{body}");
    }
    let (status, body) = server.json("/health/lazy").await;
    assert_eq!((status, &body["outcome"]), (200, &Value::from("pass")));
    let (_, _, text) = server.get("/metrics").await;
    assert!(
        text.contains(&format!("{runs} 1\n")),
        "one run serves every request within the interval:\n{text}"
    );
}

#[tokio::test]
async fn old_results_turn_stale() {
    let config = check_block("once", test_artifacts::TRIVIAL, true, "max_age = \"1s\"");
    let server = Host::start(&config).await;
    let (status, _) = server.wait_for("/health", all_ran).await;
    assert_eq!(status, 200);
    let (status, body) = server
        .wait_for("/health", |_, b| {
            b["checks"]["once"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("stale")
        })
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["once"]["healthy"], false);
}

#[tokio::test]
async fn readyz_waits_for_the_first_run_of_every_critical_check() {
    let upstream = StandIn::start(routes([("/api/v1/models", Reply::Slow(1500, "{}"))])).await;
    let origin = &upstream.origin;
    let config = check_block(
        "openrouter",
        test_artifacts::CHECK_OPENROUTER,
        true,
        &format!("grants.http = [\"{origin}\"]\nsettings.base_url = \"{origin}\""),
    );
    let server = Host::start(&config).await;
    let (status, body) = server.json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = server.json("/health").await;
    assert_eq!(
        (status, body["checks"]["openrouter"]["message"].clone()),
        (503, Value::from("not checked yet"))
    );
    server.wait_for("/readyz", |s, _| s == 200).await;
}

#[tokio::test]
async fn sigterm_turns_readyz_503_then_stops_cleanly() {
    let config = format!(
        "shutdown_delay = \"2s\"\n{}",
        check_block("t", test_artifacts::TRIVIAL, true, "")
    );
    let mut server = Host::start(&config).await;
    server.wait_for("/readyz", |s, _| s == 200).await;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (_, body) = server.wait_for("/readyz", |s, _| s == 503).await;
    assert_eq!(body["status"], "not ready");
    let (status, _) = server.json("/livez").await;
    assert_eq!(status, 200, "still alive while draining");
    let exit = tokio::task::spawn_blocking(move || {
        let exit = server.child.wait().unwrap();
        drop(server);
        exit
    })
    .await
    .unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn details_can_be_reserved_for_authorized_callers() {
    let config = format!(
        "show_details = \"when-authorized\"\ndetails_token = \"let-me-see\"\n{}",
        check_block(
            "flaky",
            test_artifacts::MISBEHAVE,
            true,
            "settings = { mode = \"fail\", message = \"disk full\" }"
        ),
    );
    let server = Host::start(&config).await;
    let (status, body) = server.wait_for("/health", all_ran).await;
    assert_eq!(status, 503);
    assert!(body["checks"]["flaky"]["message"].is_null(), "{body}");
    for wrong in ["Bearer nope", "let-me-see", "Bearer let-me-seeX"] {
        let (_, _, text) = server
            .get_with("/health", &[("authorization", wrong)])
            .await;
        assert!(!text.contains("disk full"), "{wrong}: {text}");
    }
    let (_, _, text) = server
        .get_with("/health", &[("authorization", "Bearer let-me-see")])
        .await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["checks"]["flaky"]["message"], "disk full");
}

#[tokio::test]
async fn metrics_hold_every_seed_name_and_stay_bounded_under_random_paths() {
    let config = check_block("telegram", test_artifacts::CHECK_TELEGRAM, true, "");
    let server = Host::start(&config).await;
    server.wait_for("/health", all_ran).await;
    for i in 0..1000 {
        let (status, _, body) = server.get(&format!("/random/{i}/{}", i * 7919)).await;
        assert_eq!(status, 404);
        assert_eq!(body, r#"{"error":"not found"}"#);
    }
    server.get("/livez").await;
    let response = reqwest::Client::new()
        .post(format!("{}/livez", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);

    let (status, headers, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let seed = healthhost::metrics::SEED_METRICS.map(|name| format!("adtrobot_{name}"));
    let host = [
        "adtrobot_check_runs_total",
        "adtrobot_check_run_duration_seconds",
        "process_resident_memory_bytes",
    ];
    for name in seed.iter().map(String::as_str).chain(host) {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    assert!(
        text.contains("adtrobot_health_check_status{check=\"telegram\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("adtrobot_check_runs_total{check=\"telegram\",outcome=\"pass\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "adtrobot_requests_total{handler=\"/livez\",method=\"GET\",status=\"2xx\"} 1"
        ),
        "{text}"
    );
    assert!(
        !text.contains("random"),
        "unknown paths never become label values"
    );
    let requests_series = text
        .lines()
        .filter(|l| l.starts_with("adtrobot_requests_total{"))
        .count();
    assert!(requests_series <= 2, "{requests_series} series");
}

#[test]
fn validate_reports_every_config_problem_with_its_location() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.toml");
    std::fs::write(
        &path,
        "listen = \"nowhere\"\n[checks.web]\nplugin = \"missing.wasm\"\ninterval = \"often\"\ngrants.http = [\"example.com\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:1:10: listen:"),
        format!("{file}:4:12: checks.web.interval:"),
        format!("{file}:5:16: checks.web.grants.http:"),
    ] {
        assert!(err.contains(&expected), "{expected} missing from:\n{err}");
    }

    std::fs::write(&path, "[checks.web]\nplugin = \"missing.wasm\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check 'web': cannot read"));

    let good = check_block("t", test_artifacts::TRIVIAL, true, "");
    std::fs::write(&path, good).unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn serve_accepts_the_bots_database_url_in_each_sqlalchemy_form() {
    postgres().await;
    mariadb().await;
    let dir = TempDir::new();
    let absolute = dir.0.join("bot.db");
    sqlite(&absolute).await.close().await;
    let forms = [
        POSTGRES_READER_URL.replace("postgres://", "postgresql+asyncpg://"),
        POSTGRES_READER_URL.replace("postgres://", "postgresql+psycopg2://"),
        MARIADB_READER_URL.replace("mysql://", "mysql+aiomysql://"),
        MARIADB_READER_URL.replace("mysql://", "mysql+pymysql://"),
        format!("sqlite+aiosqlite:///{}", absolute.display()),
        // Relative: beside the config file (serve's migration creates it).
        "sqlite+aiosqlite:///bot.db".to_owned(),
    ];
    for url in forms {
        let host = Host::start_with_env(
            &format!(
                "[datasources.main]\nurl = \"sqlite:unused.db\"\n\
                 [checks.database]\nplugin = \"{}\"\ncritical = true\ninterval = \"1s\"\n\
                 grants.sql = [\"main\"]\n",
                test_artifacts::CHECK_DATABASE
            ),
            &[("DATABASE_URL", &url)],
        )
        .await;
        let (status, body) = host
            .wait_for("/health/database", |_, body| !body["outcome"].is_null())
            .await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(body["outcome"], "pass", "{url}: {body}");
    }
}
