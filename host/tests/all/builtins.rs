//! The four built-in checks, run the way an operator or plugin author runs them —
//! `healthhost check <plugin>.wasm` with flags — against real databases and stand-in
//! servers with the real APIs' response shapes. Exit codes: 0 pass, 2 fail, 3 error.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::*;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The verdict line: "<check>: <VERDICT>[ - message]".
    fn verdict(&self) -> &str {
        self.stdout.lines().next().unwrap_or_default()
    }
}

/// Everything the host and its HTTP and SQL clients log, so a leak would show;
/// the compiler's own trace output is left out (it is huge and holds no secrets).
const LOG_EVERYTHING: &str = "trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,\
    wasmtime=info,wasmtime_environ=info,wasmtime_internal_cranelift=info,wasmparser=info";

/// Runs `healthhost check` off the async runtime (the stand-ins live on it).
async fn check(plugin: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("check")
        .arg(plugin)
        .args(args)
        .env("HEALTHHOST_LOG", LOG_EVERYTHING);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ds(url: &str) -> String {
    format!("main={url}")
}

// ---------------------------------------------------------------- database

#[tokio::test]
async fn database_passes_on_sqlite_postgres_and_mariadb() {
    let dir = std::env::temp_dir().join(unique_table("hh_db"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.db");
    let pool = sqlite(&file).await;
    pool.close().await;
    postgres().await;
    mariadb().await;
    for url in [
        format!("sqlite://{}", file.display()),
        POSTGRES_READER_URL.to_owned(),
        MARIADB_READER_URL.to_owned(),
    ] {
        let run = check(
            test_artifacts::CHECK_DATABASE,
            &["--datasource", &ds(&url), "--timeout", "3s"],
            &[],
        )
        .await;
        assert_eq!(run.code, 0, "{url}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.verdict(), "check_database: PASS");
        assert!(
            run.stdout.contains("database_latency_seconds"),
            "{}",
            run.stdout
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn database_fails_when_unreachable_with_the_drivers_reason() {
    let cases = [
        "postgres://postgres:pw-XYZ@127.0.0.1:9/test".to_owned(),
        "mysql://root:pw-XYZ@127.0.0.1:9/test".to_owned(),
        format!("sqlite://{}/missing/app.db", std::env::temp_dir().display()),
    ];
    for url in cases {
        let run = check(
            test_artifacts::CHECK_DATABASE,
            &["--datasource", &ds(&url), "--timeout", "3s"],
            &[],
        )
        .await;
        assert_eq!(run.code, 2, "{url}: {}{}", run.stdout, run.stderr);
        assert!(
            run.verdict().starts_with("check_database: FAIL - "),
            "{}",
            run.stdout
        );
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(!all.contains("pw-XYZ"), "the password leaked: {all}");
    }
}

#[tokio::test]
async fn database_that_never_answers_fails_with_timeout() {
    let silent = StandIn::start_silent().await; // accepts, never speaks PostgreSQL
    let url = format!("postgres://postgres@{silent}/test");
    let run = check(
        test_artifacts::CHECK_DATABASE,
        &["--datasource", &ds(&url), "--timeout", "1s"],
        &[],
    )
    .await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict(), "check_database: FAIL - Timeout");
}

// ---------------------------------------------------------------- scheduler

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An APScheduler job table holding jobs with these next run times.
async fn job_store_postgres(table: &str, next_runs: &[Option<f64>]) {
    let pool = postgres().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id varchar(191) PRIMARY KEY, next_run_time double precision, job_state bytea NOT NULL)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    for (i, next) in next_runs.iter().enumerate() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} VALUES ($1, $2, $3)"
        )))
        .bind(format!("job{i}"))
        .bind(next)
        .bind(vec![0x80u8, 0x04])
        .execute(&pool)
        .await
        .unwrap();
    }
}

async fn job_store_sqlite(file: &std::path::Path, next_runs: &[Option<f64>]) {
    let pool = sqlite(file).await;
    sqlx::raw_sql("CREATE TABLE apscheduler_jobs (id VARCHAR(191) PRIMARY KEY, next_run_time FLOAT, job_state BLOB NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    for (i, next) in next_runs.iter().enumerate() {
        sqlx::query("INSERT INTO apscheduler_jobs VALUES (?, ?, ?)")
            .bind(format!("job{i}"))
            .bind(next)
            .bind(vec![0x80u8, 0x04])
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

/// Jobs' next run times (ids job0, job1, …), extra settings, exit code, verdict.
type SchedulerCase<'a> = (&'a [Option<f64>], &'a [&'a str], i32, &'a str);

#[tokio::test]
async fn scheduler_reads_the_job_store_in_postgres() {
    let soon = now() + 3600.0;
    let daily = now() + 86_400.0;
    let cases: [SchedulerCase; 9] = [
        (
            &[Some(soon), Some(soon), None],
            &[],
            0,
            "PASS - 3 jobs scheduled",
        ),
        (&[], &[], 0, "PASS - 0 jobs scheduled"), // as the bot answers
        (
            &[],
            &["min_jobs=1"],
            2,
            "FAIL - 0 jobs scheduled, expected at least 1",
        ),
        (
            &[Some(soon), Some(now() - 3600.0), Some(now() - 7200.0)],
            &[],
            2,
            "FAIL - 2 jobs overdue",
        ),
        (&[Some(now() - 10.0)], &[], 0, "PASS - 1 jobs scheduled"), // within the 60 s grace
        // Daily jobs and a heartbeat every 30 s: a stopped scheduler shows at once.
        (
            &[Some(daily), Some(now() - 95.0)],
            &["heartbeat_job=job1"],
            2,
            // Seconds overdue follow; they grow while the cases run.
            "FAIL - Scheduler not running: heartbeat job 'job1' is …",
        ),
        (
            &[Some(daily), Some(now() + 20.0)],
            &["heartbeat_job=job1"],
            0,
            "PASS - 2 jobs scheduled",
        ),
        (
            &[Some(daily)],
            &["heartbeat_job=healthhost_heartbeat"],
            2,
            "FAIL - Scheduler not running: no heartbeat job 'healthhost_heartbeat' in the job store",
        ),
        (
            &[Some(daily), None],
            &["heartbeat_job=job1"],
            2,
            "FAIL - Scheduler not running: heartbeat job 'job1' is paused",
        ),
    ];
    let pool = postgres().await;
    for (jobs, settings, code, expected) in cases {
        let table = unique_table("apscheduler_jobs");
        job_store_postgres(&table, jobs).await;
        let table_setting = format!("table={table}");
        let mut args = vec![
            "--datasource",
            &ds(POSTGRES_READER_URL),
            "--set",
            &table_setting,
            "--timeout",
            "2s",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        for setting in settings {
            args.extend(["--set".to_owned(), (*setting).to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = check(test_artifacts::CHECK_SCHEDULER, &args, &[]).await;
        assert_eq!(run.code, code, "{jobs:?}: {}{}", run.stdout, run.stderr);
        let verdict = run.verdict();
        match expected.strip_suffix('…') {
            Some(prefix) => assert!(
                verdict.starts_with(&format!("check_scheduler: {prefix}"))
                    && verdict.ends_with(" s overdue"),
                "{verdict}"
            ),
            None => assert_eq!(verdict, format!("check_scheduler: {expected}")),
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&pool)
            .await
            .unwrap();
    }
    let run = check(
        test_artifacts::CHECK_SCHEDULER,
        &[
            "--datasource",
            &ds(POSTGRES_READER_URL),
            "--set",
            "table=no_such_job_table",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 2);
    assert_eq!(
        run.verdict(),
        "check_scheduler: FAIL - scheduler job store not found"
    );
}

/// A database file name, its jobs' next run times (no table at all for `None`), and
/// the exit code and verdict expected.
type JobStoreCase<'a> = (&'a str, Option<&'a [Option<f64>]>, i32, &'a str);

#[tokio::test]
async fn scheduler_reads_the_job_store_in_sqlite() {
    let dir = std::env::temp_dir().join(unique_table("hh_sched"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [JobStoreCase; 4] = [
        (
            "ok.db",
            Some(&[Some(now() + 60.0)]),
            0,
            "PASS - 1 jobs scheduled",
        ),
        ("empty.db", Some(&[]), 0, "PASS - 0 jobs scheduled"),
        (
            "late.db",
            Some(&[Some(now() - 600.0)]),
            2,
            "FAIL - 1 jobs overdue",
        ),
        (
            "missing.db",
            None,
            2,
            "FAIL - scheduler job store not found",
        ),
    ];
    for (name, jobs, code, expected) in cases {
        let file = dir.join(name);
        match jobs {
            Some(jobs) => job_store_sqlite(&file, jobs).await,
            None => {
                let pool = sqlite(&file).await;
                pool.close().await;
            }
        }
        let url = format!("sqlite://{}", file.display());
        let run = check(
            test_artifacts::CHECK_SCHEDULER,
            &["--datasource", &ds(&url), "--timeout", "2s"],
            &[],
        )
        .await;
        assert_eq!(run.code, code, "{name}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.verdict(), format!("check_scheduler: {expected}"));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------- openrouter

const MODELS: &str = r#"{"data":[{"id":"openai/gpt-4o-mini","name":"OpenAI: GPT-4o-mini","context_length":128000,"pricing":{"prompt":"0.00000015","completion":"0.0000006"}}]}"#;

async fn openrouter(reply: Reply, extra: &[&str]) -> Run {
    let server = StandIn::start(routes([("/api/v1/models", reply)])).await;
    let mut args = vec!["--allow-http", &server.origin, "--set"];
    let base = format!("base_url={}", server.origin);
    args.push(&base);
    args.extend_from_slice(extra);
    check(test_artifacts::CHECK_OPENROUTER, &args, &[]).await
}

#[tokio::test]
async fn openrouter_passes_on_200_and_fails_on_other_statuses() {
    let run = openrouter(Reply::ok(MODELS), &[]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict(), "check_openrouter: PASS");
    assert!(run.stdout.contains("openrouter_latency_seconds"));
    for code in [401, 500, 503] {
        let run = openrouter(
            Reply::status(code, r#"{"error":{"message":"nope","code":401}}"#),
            &[],
        )
        .await;
        assert_eq!(run.code, 2);
        assert_eq!(
            run.verdict(),
            format!("check_openrouter: FAIL - Status {code}")
        );
    }
}

#[tokio::test]
async fn openrouter_that_never_answers_fails_with_timeout() {
    let run = openrouter(Reply::Hang, &["--timeout", "1s"]).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict(), "check_openrouter: FAIL - Timeout");
}

#[tokio::test]
async fn openrouter_redirect_to_an_origin_not_granted_fails() {
    let elsewhere = StandIn::start(routes([("/api/v1/models", Reply::ok(MODELS))])).await;
    let run = openrouter(Reply::redirect(elsewhere.url("/api/v1/models")), &[]).await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.verdict().contains("not granted"), "{}", run.stdout);
    assert!(elsewhere.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn openrouter_without_a_grant_fails_without_sending() {
    let server = StandIn::start(routes([("/api/v1/models", Reply::ok(MODELS))])).await;
    let base = format!("base_url={}", server.origin);
    let run = check(test_artifacts::CHECK_OPENROUTER, &["--set", &base], &[]).await;
    assert_eq!(run.code, 2);
    assert!(run.verdict().contains("not granted"), "{}", run.stdout);
    assert!(server.requests.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------- telegram

const TOKEN: &str = "123456789:AAH-secret_TOKEN-value";
const GET_ME: &str = r#"{"ok":true,"result":{"id":123456789,"is_bot":true,"first_name":"AdtroBot","username":"adtro_bot","can_join_groups":true,"can_read_all_group_messages":false,"supports_inline_queries":false}}"#;
const UNAUTHORIZED: &str = r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#;

/// Runs the telegram check against a stand-in serving `reply` at the token's getMe.
async fn telegram(reply: Reply, extra: &[&str]) -> Run {
    let server = StandIn::start(routes([(&format!("/bot{TOKEN}/getMe"), reply)])).await;
    let base = format!("base_url={}", server.origin);
    let mut args = vec![
        "--allow-http",
        &server.origin,
        "--set",
        &base,
        "--secret-env",
        "token=HH_TG_TOKEN",
    ];
    args.extend_from_slice(extra);
    let run = check(
        test_artifacts::CHECK_TELEGRAM,
        &args,
        &[("HH_TG_TOKEN", TOKEN)],
    )
    .await;
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !all.contains(TOKEN) && !all.contains("AAH-secret"),
        "the token leaked: {all}"
    );
    run
}

#[tokio::test]
async fn telegram_passes_with_the_bot_username() {
    let run = telegram(Reply::ok(GET_ME), &[]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.verdict(), "check_telegram: PASS - @adtro_bot");
    assert!(run.stdout.contains("telegram_latency_seconds"));
}

#[tokio::test]
async fn telegram_failures_are_short_and_never_show_the_token() {
    let cases = [
        (Reply::status(401, UNAUTHORIZED), "FAIL - Unauthorized"),
        (Reply::status(500, "oops"), "FAIL - Status 500"),
        (
            Reply::ok("{not json"),
            "FAIL - invalid response from Telegram",
        ),
        (
            Reply::ok(r#"{"ok":false,"description":"Bad Request: bot was blocked"}"#),
            "FAIL - Bad Request: bot was blocked",
        ),
    ];
    for (reply, expected) in cases {
        let run = telegram(reply, &[]).await;
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        assert_eq!(run.verdict(), format!("check_telegram: {expected}"));
    }
    let run = telegram(Reply::Hang, &["--timeout", "1s"]).await;
    assert_eq!(run.verdict(), "check_telegram: FAIL - Timeout");
}

#[tokio::test]
async fn telegram_transport_error_hides_the_token_in_the_url() {
    // A closed port: the transport error is about a URL that contains the token.
    let args = [
        "--allow-http",
        "http://127.0.0.1:9",
        "--set",
        "base_url=http://127.0.0.1:9",
        "--secret-env",
        "token=HH_TG_TOKEN",
    ];
    let run = check(
        test_artifacts::CHECK_TELEGRAM,
        &args,
        &[("HH_TG_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !all.contains(TOKEN) && !all.contains("AAH-secret"),
        "the token leaked: {all}"
    );
}

#[tokio::test]
async fn telegram_without_a_token_passes_in_dev_mode() {
    let run = check(
        test_artifacts::CHECK_TELEGRAM,
        &["--secret-env", "token=HH_TG_TOKEN_UNSET"],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.verdict(),
        "check_telegram: PASS - Token not configured (dev mode)"
    );
}
