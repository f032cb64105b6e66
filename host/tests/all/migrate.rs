//! `healthhost migrate` on SQLite, PostgreSQL and MariaDB: from an empty database the
//! AdtroBot plan's `ai_usage` table appears with its defaults and indexes (and the nullable
//! `status` column), and the check history's `hh_result` beside it, each set of
//! migrations recorded in its own table; a re-run applies nothing.

use std::process::Command;

use crate::common::*;

/// Runs `healthhost migrate --database-url URL`; returns its stdout.
async fn migrate(url: &str) -> String {
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["migrate", "--database-url", &url])
            .env("HEALTHHOST_LOG", "off")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Migrates twice and checks what each run said.
async fn migrates_once(url: &str) {
    let first = migrate(url).await;
    assert_eq!(
        first.trim(),
        "applied 20261128000000 create ai usage\napplied 20261129000000 add ai usage status\n\
         applied 20261207000000 create hh result\napplied 20261207000001 create hh rollup\n\
         applied 20261208000000 create hh alert\napplied 20261208000001 create hh maintenance"
    );
    let second = migrate(url).await;
    assert_eq!(
        second.trim(),
        "nothing to apply: the database is up to date"
    );
}

/// The AdtroBot plan's defaults: tokens 0, created_at set, nullable columns null.
const DEFAULTS: &str = "SELECT count(*) FROM ai_usage WHERE prompt_tokens = 0 AND completion_tokens = 0 \
    AND total_tokens = 0 AND created_at IS NOT NULL AND user_id IS NULL AND cost_dollars IS NULL \
    AND generation_id IS NULL AND latency_ms IS NULL AND status IS NULL";
const INSERT: &str =
    "INSERT INTO ai_usage (operation, model) VALUES ('tarot', 'openai/gpt-4o-mini')";

#[tokio::test]
async fn sqlite_from_empty_and_again() {
    let dir = std::env::temp_dir().join(unique_table("hh_migrate"));
    let url = format!("sqlite://{}/sub/app.db", dir.display());
    migrates_once(&url).await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::raw_sql(INSERT).execute(&pool).await.unwrap();
    let n: i64 = sqlx::query_scalar(DEFAULTS).fetch_one(&pool).await.unwrap();
    assert_eq!(n, 1);
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ai_usage' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        indexes,
        [
            "ix_ai_usage_created_at",
            "ix_ai_usage_operation",
            "ix_ai_usage_user_id"
        ]
    );
    let history: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE name LIKE 'hh_%' OR name LIKE '%migrations' \
         ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        history,
        [
            "_healthhost_history_migrations",
            "_sqlx_migrations",
            "hh_episode",
            "hh_lease",
            "hh_maintenance",
            "hh_maintenance_end",
            "hh_outbox",
            "hh_outbox_done",
            "hh_outbox_queue",
            "hh_result",
            "hh_result_at",
            "hh_result_check_at",
            "hh_result_once",
            "hh_rollup",
            "hh_rollup_age"
        ]
    );
    pool.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn postgres_from_empty_and_again() {
    let server = Server::Postgres(postgres().await);
    let (name, url) = server.fresh_database().await;
    migrates_once(&url).await;
    let db = Server::Postgres(sqlx::PgPool::connect(&url).await.unwrap());
    db.exec(INSERT.to_owned()).await;
    assert_eq!(db.count(DEFAULTS.to_owned()).await, 1);
    let indexes = "SELECT count(*) FROM pg_indexes WHERE tablename = 'ai_usage' AND indexname IN \
        ('ix_ai_usage_user_id', 'ix_ai_usage_created_at', 'ix_ai_usage_operation')";
    assert_eq!(db.count(indexes.to_owned()).await, 3);
    let Server::Postgres(pool) = db else {
        unreachable!()
    };
    pool.close().await;
    server.exec(format!("DROP DATABASE {name}")).await;
}

#[tokio::test]
async fn mariadb_from_empty_and_again() {
    let server = Server::MariaDb(mariadb().await);
    let (name, url) = server.fresh_database().await;
    migrates_once(&url).await;
    let db = Server::MariaDb(sqlx::MySqlPool::connect(&url).await.unwrap());
    db.exec(INSERT.to_owned()).await;
    assert_eq!(db.count(DEFAULTS.to_owned()).await, 1);
    let indexes = format!(
        "SELECT count(DISTINCT index_name) FROM information_schema.statistics WHERE table_schema = '{name}' \
         AND table_name = 'ai_usage' AND index_name LIKE 'ix_ai_usage_%'"
    );
    assert_eq!(db.count(indexes).await, 3);
    server.exec(format!("DROP DATABASE {name}")).await;
}

#[test]
fn a_bad_url_is_one_clear_line() {
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", "redis://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("unsupported database url"), "{err}");
}
