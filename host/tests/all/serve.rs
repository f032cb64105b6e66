//! `healthhost serve` end to end: a real process on an ephemeral port, real plugins
//! built from source, stand-in upstreams on loopback and real databases. Covers the
//! AdtroBot plan's /health JSON and status codes, the IETF format, exclusion, single checks,
//! staleness, readiness, metrics (parsed strictly, whatever plugins report), 404/405
//! answers, shutdown and config validation.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// Every check has a result.
fn all_ran(_: u16, body: &Value) -> bool {
    body["checks"].as_object().unwrap().values().all(has_run)
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
async fn all_healthy_gives_the_plans_json_and_200() {
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
    server.wait_loaded().await;
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
    // Loaded, its first run still waiting on the slow upstream.
    let (status, body) = server
        .wait_for("/health", |_, b| {
            b["checks"]["openrouter"]["message"] == "not checked yet"
        })
        .await;
    assert_eq!(status, 503, "{body}");
    server.wait_for("/readyz", |s, _| s == 200).await;
}

#[tokio::test]
async fn sigterm_turns_readyz_503_then_stops_cleanly() {
    // The default shutdown_delay: probes see /readyz 503 before the listener closes.
    let config = check_block("t", test_artifacts::TRIVIAL, true, "");
    let mut server = Host::start(&config).await;
    server.wait_for("/readyz", |s, _| s == 200).await;
    server.signal("TERM");
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
async fn sigint_stops_at_once_whatever_the_shutdown_delay() {
    let config = format!(
        "shutdown_delay = \"1h\"\n{}",
        check_block("t", test_artifacts::TRIVIAL, true, "")
    );
    let mut server = Host::start(&config).await;
    server.wait_for("/readyz", |s, _| s == 200).await;
    server.signal("INT");
    // Bounded: with the hour's delay applied this would never return.
    let exit = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            let exit = server.child.wait().unwrap();
            drop(server);
            exit
        }),
    )
    .await
    .expect("SIGINT must not wait for shutdown_delay")
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
async fn metrics_hold_every_plan_name_and_stay_bounded_under_random_paths() {
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
    let plan = healthhost::names::PLAN_METRICS.map(|name| format!("adtrobot_{name}"));
    let host = [
        "adtrobot_check_runs_total",
        "adtrobot_check_run_duration_seconds",
        "process_resident_memory_bytes",
    ];
    for name in plan.iter().map(String::as_str).chain(host) {
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
            .wait_for("/health/database", |_, body| has_run(body))
            .await;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(body["outcome"], "pass", "{url}: {body}");
    }
}

// ---------------------------------------------------------------------------------
// Plugin samples in /metrics (issue #10, items 7-9)

#[test]
fn the_exposition_checker_accepts_valid_text_and_names_what_is_wrong() {
    let good = "# HELP a_total Help text.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\na_total{x=\"2\"} 1e3\nb NaN\nc{} +Inf 123\n";
    let series = parse_exposition(good).unwrap();
    assert_eq!(series.len(), 4);
    assert_eq!(series[0].label("y"), Some("q\"\\\n"));
    assert_eq!(
        series_value(&series, "a_total", &[("x", "2")]),
        Some(1000.0)
    );
    let bad = [
        ("a{x=\"1\",x=\"2\"} 1\n", "duplicate label names"),
        ("a{__name__=\"b\"} 1\n", "invalid label name"),
        ("a{a-b=\"1\"} 1\n", "invalid label name"),
        ("a-b 1\n", "invalid metric name"),
        ("a{x=\"1\"} 1\na{x=\"1\"} 2\n", "duplicate series"),
        ("a{x=\"1\n\"} 1\n", "unterminated label value"),
        ("a{x=\"\\t\"} 1\n", "invalid escape"),
        ("a{x=1} 1\n", "unquoted label value"),
        ("a one\n", "invalid value"),
        ("a 1\n\nb 1\n", "blank line"),
        ("a 1\n# TYPE a gauge\n", "TYPE repeated or after"),
        ("a 1", "does not end with a newline"),
    ];
    for (text, why) in bad {
        let err = parse_exposition(text).unwrap_err();
        assert!(err.contains(why), "{text:?}: {err}");
    }
}

/// A non-critical misbehave check granted the sample `misbehave_value`, with these
/// settings (and memory for the large ones).
fn misbehave_check(name: &str, settings: &[(&str, &str)]) -> String {
    let settings: String = settings
        .iter()
        .map(|(k, v)| format!("settings.{k} = {}\n", toml::Value::from(*v)))
        .collect();
    check_block(
        name,
        test_artifacts::MISBEHAVE,
        false,
        &format!("memory = \"256MiB\"\ngrants.metrics = [\"misbehave_value\"]\n{settings}"),
    )
}

/// A check whose one sample is fine: it must stay in /metrics whatever the others do.
fn good_check() -> String {
    misbehave_check(
        "good",
        &[("mode", "samples"), ("samples", "misbehave_value{kind=ok}")],
    )
}

/// `/metrics` once every check ran, parsed strictly (a parse error fails the test).
async fn parsed_metrics(server: &Host) -> (String, Vec<Series>) {
    server.wait_for("/health", all_ran).await;
    let (status, _, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let series = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, series)
}

fn dropped(series: &[Series], check: &str, reason: &str) -> Option<f64> {
    series_value(
        series,
        "adtrobot_plugin_samples_dropped_total",
        &[("check", check), ("reason", reason)],
    )
}

/// The series of `check`'s samples.
fn samples_of<'a>(series: &'a [Series], check: &str) -> Vec<&'a Series> {
    series
        .iter()
        .filter(|s| s.name == "adtrobot_misbehave_value" && s.label("check") == Some(check))
        .collect()
}

#[tokio::test]
async fn samples_with_bad_label_names_are_dropped_and_counted_and_metrics_still_parse() {
    let bad = [
        "misbehave_value{a=1,a=2}",
        "misbehave_value{__name__=x}",
        "misbehave_value{__meta=x}",
        "misbehave_value{le=1}",
        "misbehave_value{quantile=0.5}",
        "misbehave_value{check=other}",
        "misbehave_value{a-b=1}",
        "misbehave_value{1a=1}",
        "bad-name",
        "misbehave_value=NaN",
        "misbehave_value{kind=fine}",
        "misbehave_value{kind=quote\"back\\slash\nnewline}",
    ];
    let config =
        good_check() + &misbehave_check("bad", &[("mode", "samples"), ("samples", &bad.join(";"))]);
    let server = Host::start(&config).await;
    let (_, series) = parsed_metrics(&server).await;

    let name = "adtrobot_misbehave_value";
    assert_eq!(
        series_value(&series, name, &[("check", "good"), ("kind", "ok")]),
        Some(1.0)
    );
    assert_eq!(samples_of(&series, "bad").len(), 2, "{series:#?}");
    assert_eq!(
        series_value(&series, name, &[("check", "bad"), ("kind", "fine")]),
        Some(1.0)
    );
    let odd = "quote\"back\\slash\nnewline";
    assert_eq!(
        series_value(&series, name, &[("check", "bad"), ("kind", odd)]),
        Some(1.0),
        "quotes, backslashes and newlines are escaped, not dropped"
    );
    assert_eq!(dropped(&series, "bad", "invalid-label"), Some(3.0));
    assert_eq!(dropped(&series, "bad", "reserved-label"), Some(5.0));
    assert_eq!(dropped(&series, "bad", "invalid-name"), Some(1.0));
    assert_eq!(dropped(&series, "bad", "invalid-value"), Some(1.0));
    assert!(
        series
            .iter()
            .all(|s| s.label("check") != Some("good") || !s.name.contains("dropped")),
        "the good check drops nothing"
    );
}

#[tokio::test]
async fn metrics_stay_small_whatever_size_plugins_send() {
    let config = [
        good_check(),
        misbehave_check(
            "huge",
            &[
                ("mode", "samples"),
                ("samples", "misbehave_value"),
                ("repeat", "32"),
                ("value_bytes", "1048576"),
            ],
        ),
        misbehave_check(
            "wide",
            &[
                ("mode", "samples"),
                ("samples", "misbehave_value"),
                ("label_count", "100000"),
            ],
        ),
        misbehave_check(
            "many",
            &[
                ("mode", "samples"),
                ("samples", "misbehave_value"),
                ("repeat", "10001"),
            ],
        ),
        misbehave_check(
            "fat",
            &[
                ("mode", "samples"),
                ("samples", "misbehave_value"),
                ("repeat", "64"),
                ("label_count", "4"),
                ("value_bytes", "256"),
            ],
        ),
    ]
    .concat();
    let server = Host::start(&config).await;
    let (text, series) = parsed_metrics(&server).await;
    use healthhost::limits::{
        MAX_SERIES_PER_CHECK, REPORT_MAX_SAMPLES, SAMPLES_MAX_BYTES_PER_CHECK,
    };

    assert!(text.len() < 128 * 1024, "/metrics is {} bytes", text.len());
    for check in ["good", "huge", "wide", "many", "fat"] {
        let lines: usize = text
            .lines()
            .filter(|l| {
                l.starts_with("adtrobot_misbehave_value{")
                    && l.contains(&format!("check=\"{check}\""))
            })
            .map(str::len)
            .sum();
        assert!(
            lines <= SAMPLES_MAX_BYTES_PER_CHECK + MAX_SERIES_PER_CHECK * 64,
            "{check}: {lines} bytes of samples"
        );
    }
    assert_eq!(samples_of(&series, "good").len(), 1);
    assert!(samples_of(&series, "huge").is_empty());
    assert_eq!(dropped(&series, "huge", "too-large"), Some(32.0));
    assert!(samples_of(&series, "wide").is_empty());
    assert_eq!(dropped(&series, "wide", "too-large"), Some(1.0));

    assert_eq!(samples_of(&series, "many").len(), MAX_SERIES_PER_CHECK);
    let too_many = 10_001 - REPORT_MAX_SAMPLES;
    assert_eq!(dropped(&series, "many", "too-many"), Some(too_many as f64));
    let over_cap = REPORT_MAX_SAMPLES - MAX_SERIES_PER_CHECK;
    assert_eq!(
        dropped(&series, "many", "series-cap"),
        Some(over_cap as f64)
    );

    assert_eq!(samples_of(&series, "fat").len(), MAX_SERIES_PER_CHECK);
    let too_large = dropped(&series, "fat", "too-large").unwrap_or(0.0);
    let capped = dropped(&series, "fat", "series-cap").unwrap_or(0.0);
    assert!(too_large > 0.0, "the byte cap bites first");
    assert_eq!(too_large + capped + MAX_SERIES_PER_CHECK as f64, 64.0);

    let (status, body) = server.json("/health").await;
    assert_eq!(status, 200, "{body}");
    for check in ["good", "huge", "wide", "many", "fat"] {
        assert_eq!(body["checks"][check]["outcome"], "pass", "{body}");
    }
}

#[tokio::test]
async fn secrets_never_reach_metrics_or_health_in_any_encoding_or_at_a_cut() {
    const SECRET: &str = "Zq9Secret42";
    let samples = [
        "misbehave_value{url=/bot%5aq9%53ecret42/getMe}",
        "misbehave_value{t=Zq9Secret42}",
        "misbehave_value{enc=%5A%71%39%53%65%63%72%65%74%34%32}",
        "misbehave_Zq9Secret42",
        "misbehave_value{Zq9Secret42=x}",
    ];
    let message = format!("{}{SECRET}", "x".repeat(1020));
    let config = good_check()
        + &misbehave_check(
            "leaky",
            &[
                ("mode", "samples"),
                ("samples", &samples.join(";")),
                ("message", &message),
                ("token", "${HH_SECRET}"),
            ],
        );
    let server = Host::start_with_env(&config, &[("HH_SECRET", SECRET)]).await;
    let (text, series) = parsed_metrics(&server).await;
    let (_, _, health) = server.get("/health").await;
    for leak in ["Zq9", "%5aq9", "%5A%71", "q9Secret"] {
        assert!(!text.contains(leak), "{leak} in /metrics:\n{text}");
        assert!(!health.contains(leak), "{leak} in /health: {health}");
    }
    let name = "adtrobot_misbehave_value";
    for (label, value) in [
        ("url", "/bot[REDACTED]/getMe"),
        ("t", "[REDACTED]"),
        ("enc", "[REDACTED]"),
    ] {
        assert_eq!(
            series_value(&series, name, &[("check", "leaky"), (label, value)]),
            Some(1.0),
            "{label}"
        );
    }
    assert_eq!(dropped(&series, "leaky", "secret"), Some(2.0));
    assert_eq!(samples_of(&series, "good").len(), 1);
    let (_, body) = server.json("/health/leaky").await;
    assert_eq!(
        body["message"],
        format!("{}[RED", "x".repeat(1020)),
        "scrubbed, then cut at 1 KiB"
    );
}

/// The label names (`le` aside) and the `le` bounds, in order, of the series of
/// `family` (its `_bucket`, `_sum` and `_count` series included), the bounds taken
/// from its first histogram.
fn family_shape(series: &[Series], family: &str) -> (Vec<String>, Vec<String>) {
    let ours: Vec<&Series> = series
        .iter()
        .filter(|s| {
            ["", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| s.name == format!("{family}{suffix}"))
        })
        .collect();
    let names: std::collections::BTreeSet<String> = ours
        .iter()
        .flat_map(|s| s.labels.iter().map(|(k, _)| k.clone()))
        .filter(|k| k != "le")
        .collect();
    let others = |s: &Series| -> Vec<(String, String)> {
        s.labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect()
    };
    let buckets: Vec<&&Series> = ours
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
        .collect();
    let bounds = match buckets.first() {
        Some(first) => buckets
            .iter()
            .filter(|s| others(s) == others(first))
            .map(|s| s.label("le").unwrap().to_owned())
            .collect(),
        None => Vec::new(),
    };
    (names.into_iter().collect(), bounds)
}

#[tokio::test]
async fn metrics_carry_the_instrumentators_families_as_the_bots_dashboards_query_them() {
    let host = Host::start(&format!(
        "[datasources.main]\nurl = \"sqlite:usage.db\"\n[usage]\ntoken = \"t\"\n{}",
        check_block("t", test_artifacts::TRIVIAL, true, "")
    ))
    .await;
    // The first scrape of a fresh host: its CPU time has fractions (ticks of 10 ms).
    let before = cpu_ticks(host.child.id());
    let (_, _, text) = host.get("/metrics").await;
    let after = cpu_ticks(host.child.id());
    let cpu: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .unwrap()
        .parse()
        .unwrap();
    if !before.is_multiple_of(100) {
        assert!(
            before as f64 / 100.0 <= cpu + 1e-9 && cpu <= after as f64 / 100.0 + 1e-9,
            "process_cpu_seconds_total {cpu} not within {before}..{after} ticks"
        );
    }

    for path in [
        "/livez",
        "/readyz",
        "/health",
        "/health/t",
        "/metrics",
        "/nowhere",
    ] {
        host.get(path).await;
    }
    let (status, _, _) = host
        .post(
            "/v1/ai-usage",
            Some("t"),
            r#"{"operation":"tarot","model":"m"}"#.to_owned(),
        )
        .await;
    assert_eq!(status, 201);
    let (_, _, text) = host.get("/metrics").await;
    let series = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let fixture = include_str!("fixtures/instrumentator.txt");
    for line in fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let (family, kind, labels, bounds) = (fields[0], fields[1], fields[2], fields[3]);
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} is not a {kind}:\n{text}"
        );
        let (names, found) = family_shape(&series, family);
        let expected: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
        assert_eq!(names, expected, "{family}'s label names");
        let expected: Vec<&str> = bounds.split(',').filter(|b| !b.is_empty()).collect();
        assert_eq!(found, expected, "{family}'s buckets");
    }
    // Matched routes only, /health and /metrics excluded, statuses grouped.
    for series in [
        "http_requests_total{handler=\"/livez\",method=\"GET\",status=\"2xx\"} 1",
        "http_requests_total{handler=\"/v1/ai-usage\",method=\"POST\",status=\"2xx\"} 1",
        "http_request_size_bytes_count{handler=\"/v1/ai-usage\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    for absent in [
        "handler=\"/health",
        "handler=\"/metrics\"",
        "/nowhere",
        "le=\"1\"",
        "le=\"10\"",
    ] {
        assert!(!text.contains(absent), "{absent} present:\n{text}");
    }
    assert!(text.contains("adtrobot_http_request_duration_seconds_bucket{handler=\"/livez\",method=\"GET\",le=\"1.0\"} 1"), "{text}");
}

// ------------------------------------------------------------------ start-up

/// A plugin file whose load blocks until [`SlowPlugin::release`] writes it: a FIFO,
/// read by the host like any plugin file. A real slow load, with no hook in the host.
struct SlowPlugin {
    path: std::path::PathBuf,
}

impl SlowPlugin {
    fn new(dir: &std::path::Path, name: &str) -> SlowPlugin {
        let path = dir.join(name);
        let made = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
        SlowPlugin { path }
    }

    /// Writes `wasm` into the FIFO: the host's read finishes and the plugin loads.
    async fn release(&self, wasm: &'static str) {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::write(&path, std::fs::read(wasm).unwrap()).unwrap();
        })
        .await
        .unwrap();
    }
}

/// Starts a host whose checks are `checks` (config blocks), failing instead of hanging
/// if it does not listen while plugins load.
async fn start_while_loading(dir: TempDir, checks: &str) -> Host {
    tokio::time::timeout(Duration::from_secs(60), Host::start_in(dir, checks))
        .await
        .expect("serve must listen before its plugins are loaded")
}

#[tokio::test]
async fn serve_answers_at_once_while_a_plugin_loads_and_a_slow_one_delays_no_other() {
    let dir = TempDir::new();
    let slow = SlowPlugin::new(&dir.0, "slow.wasm");
    let checks = format!(
        "{}{}",
        check_block("slow", slow.path.to_str().unwrap(), true, ""),
        check_block("fast", test_artifacts::TRIVIAL, true, "")
    );
    let server = start_while_loading(dir, &checks).await;

    let (status, _) = server.json("/livez").await;
    assert_eq!(status, 200);
    // Not ready while a critical check loads; the body counts what is loading.
    let (status, body) = server.wait_for("/readyz", |_, b| b["loading"] == 1).await;
    assert_eq!((status, body["checks"].clone()), (503, 2.into()), "{body}");
    // The fast check loads and runs while the slow one is still being read.
    let (status, body) = server.wait_for("/health/fast", |_, b| has_run(b)).await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (200, "pass".into()),
        "{body}"
    );
    let (status, body) = server.json("/health").await;
    assert_eq!(body["checks"]["slow"]["outcome"], "loading", "{body}");
    assert_eq!(body["checks"]["slow"]["healthy"], false, "{body}");
    // Critical but loading within the start-up grace: not failing.
    assert_eq!(status, 200, "{body}");
    let (_, _, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("adtrobot_plugin_loads_pending 1\n"),
        "{metrics}"
    );

    slow.release(test_artifacts::TRIVIAL).await;
    let (_, body) = server.wait_for("/readyz", |s, _| s == 200).await;
    assert_eq!(body["loading"], 0, "{body}");
    let (_, _, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("adtrobot_plugin_loads_pending 0\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readiness_waits_for_critical_checks_only() {
    let dir = TempDir::new();
    let slow = SlowPlugin::new(&dir.0, "slow.wasm");
    let checks = format!(
        "{}{}",
        check_block("slow", slow.path.to_str().unwrap(), false, ""),
        check_block("fast", test_artifacts::TRIVIAL, true, "")
    );
    let server = start_while_loading(dir, &checks).await;
    let (_, body) = server.wait_for("/readyz", |s, _| s == 200).await;
    assert_eq!(
        body["loading"], 1,
        "the non-critical check still loads: {body}"
    );
    slow.release(test_artifacts::TRIVIAL).await;
}

#[tokio::test]
async fn a_critical_check_still_loading_after_the_grace_fails_health() {
    let dir = TempDir::new();
    let slow = SlowPlugin::new(&dir.0, "slow.wasm");
    let checks = format!(
        "startup_grace = \"0s\"\n{}",
        check_block("slow", slow.path.to_str().unwrap(), true, "")
    );
    let server = start_while_loading(dir, &checks).await;
    let (status, body) = server.json("/health").await;
    assert_eq!(body["checks"]["slow"]["outcome"], "loading", "{body}");
    assert_eq!(status, 503, "{body}");
    slow.release(test_artifacts::TRIVIAL).await;
}

/// The soft and hard limits on open files of process `pid`.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Each loaded plugin holds a file open: started under a soft limit of 256 (systemd's
/// default is 1,024), `serve` raises it to the hard limit before loading any.
#[tokio::test]
async fn serve_raises_its_open_files_limit_to_the_hard_limit() {
    const SOFT: u64 = 256;
    let (_, hard) = open_files_limits(std::process::id());
    assert!(
        hard > SOFT,
        "this test needs a hard limit on open files above {SOFT} (ulimit -Hn is {hard})"
    );
    let dir = TempDir::new();
    let wrapper = dir.0.join("serve-with-low-limit.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nulimit -Sn {SOFT} || exit 1\nexec {BIN:?} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let server = Host::start_from(&wrapper, dir, "").await;
    assert_eq!(open_files_limits(server.child.id()), (hard, hard));
}

#[tokio::test]
async fn thresholds_fail_a_passing_check_and_say_why() {
    let config = format!(
        "[checks.queue]\nplugin = {:?}\ncritical = true\ninterval = \"1h\"\n\
         settings = {{ mode = \"samples\", samples = \"queue_depth=120\", message = \"ok\" }}\n\
         thresholds.queue_depth = {{ warn = \"50\", crit = \"100\" }}\n",
        test_artifacts::MISBEHAVE
    );
    let host = Host::start(&config).await;
    let (status, body) = host
        .wait_for("/health", |_, b| b["checks"]["queue"]["outcome"] == "fail")
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["queue"]["status"], "fail");
    assert_eq!(
        body["checks"]["queue"]["message"],
        "ok; crit threshold \"100\" crossed: queue_depth = 120"
    );
}
