//! AI usage end to end, on SQLite, PostgreSQL and MariaDB: `POST /v1/ai-usage` through
//! a real `healthhost serve` process (authorization, validation, body limits, batch
//! atomicity, concurrent writers, a database that goes down and comes back, the `ai_*`
//! metrics and their label cap), the `healthhost usage` report against rows the
//! test inserted, and `GET /v1/usage/summary` (its ranges, its numbers against the
//! report's, its read token).

use std::process::Command;

use crate::common::*;
use futures_util::future::join_all;
use healthhost::dburl::Kind;
use serde_json::{Value, json};

const TOKEN: &str = "test-usage-token";
const PATH: &str = "/v1/ai-usage";

/// A pool on a test's own database, whatever its kind.
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
}

/// A test's own database holding a migrated `ai_usage`: a SQLite file in a temporary
/// folder, or a fresh database on the machine's PostgreSQL or MariaDB (dropped by
/// [`Database::remove`]).
struct Database {
    kind: Kind,
    url: String,
    pool: Pool,
    server: Option<(Server, String)>,
    _dir: TempDir,
}

impl Database {
    /// A database with the host's migrations applied.
    async fn new(kind: Kind) -> Database {
        let db = Database::empty(kind).await;
        healthhost::migrate::migrate(&db.url, &healthhost::migrate::USAGE)
            .await
            .unwrap();
        db
    }

    /// A database with nothing in it.
    async fn empty(kind: Kind) -> Database {
        let dir = TempDir::new();
        let server = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => Some(Server::Postgres(postgres().await)),
            Kind::MySql => Some(Server::MariaDb(mariadb().await)),
        };
        let (url, server) = match server {
            None => (format!("sqlite://{}/usage.db", dir.0.display()), None),
            Some(server) => {
                let (name, url) = server.fresh_database().await;
                (url, Some((server, name)))
            }
        };
        let pool = match kind {
            Kind::Sqlite => Pool::Sqlite(
                sqlx::SqlitePool::connect_with(
                    url.parse::<sqlx::sqlite::SqliteConnectOptions>()
                        .unwrap()
                        .create_if_missing(true),
                )
                .await
                .unwrap(),
            ),
            Kind::Postgres => Pool::Postgres(sqlx::PgPool::connect(&url).await.unwrap()),
            Kind::MySql => Pool::MySql(sqlx::MySqlPool::connect(&url).await.unwrap()),
        };
        Database {
            kind,
            url,
            pool,
            server,
            _dir: dir,
        }
    }

    async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Pool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Pool::MySql(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        }
        .unwrap();
    }

    /// The first column of the first row of `sql`, as an integer.
    async fn count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Pool::MySql(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .unwrap()
    }

    async fn rows(&self) -> i64 {
        self.count("SELECT count(*) FROM ai_usage").await
    }

    /// A host recording into this database with `[usage]` settings `extra`.
    async fn host(&self, extra: &str) -> Host {
        Host::start(&format!(
            "[datasources.main]\nurl = \"{}\"\n[usage]\ntoken = \"{TOKEN}\"\n{extra}\n",
            self.url
        ))
        .await
    }

    /// Drops a server database (after its host is gone).
    async fn remove(self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
            Pool::MySql(p) => p.close().await,
        }
        if let Some((server, name)) = self.server {
            let force = if self.kind == Kind::Postgres {
                " WITH (FORCE)"
            } else {
                ""
            };
            server.exec(format!("DROP DATABASE {name}{force}")).await;
        }
    }
}

/// `POST /v1/ai-usage` with the right token; status and parsed body.
async fn record(host: &Host, body: &Value) -> (u16, Value) {
    let (status, _, text) = host.post(PATH, Some(TOKEN), body.to_string()).await;
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

fn row(operation: &str, model: &str) -> Value {
    json!({"operation": operation, "model": model})
}

/// The value of the sample `name{labels}` (in any label order) in a Prometheus text
/// page; 0 when there is none yet.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<(&str, &str)> = labels.to_vec();
    want.sort();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let (set, value) = rest.rsplit_once("} ").unwrap();
        let mut got: Vec<(&str, &str)> = set
            .split(',')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k, v.trim_matches('"'))
            })
            .collect();
        got.sort();
        if got == want {
            return value.parse().unwrap();
        }
    }
    0.0
}

async fn metrics(host: &Host) -> String {
    let (status, _, text) = host.get("/metrics").await;
    assert_eq!(status, 200);
    text
}

// ---------------------------------------------------------------------------------
// The endpoint

#[tokio::test]
async fn the_endpoint_is_off_without_a_token_and_reads_it_from_the_environment() {
    let db = Database::new(Kind::Sqlite).await;
    let config = format!(
        "[datasources.main]\nurl = \"{}\"\n[usage]\ntoken = \"${{HEALTHHOST_USAGE_TOKEN}}\"\n",
        db.url
    );
    let off = Host::start_with_env(&config, &[("HEALTHHOST_USAGE_TOKEN", "")]).await;
    let (status, _, body) = off.post(PATH, Some(""), row("o", "m").to_string()).await;
    assert_eq!((status, body.as_str()), (404, r#"{"error":"not found"}"#));
    drop(off);

    let on = Host::start_with_env(&config, &[("HEALTHHOST_USAGE_TOKEN", "from-env")]).await;
    let (status, _, body) = on
        .post(PATH, Some("from-env"), row("o", "m").to_string())
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(db.rows().await, 1);
    db.remove().await;
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_and_writes_nothing() {
    let db = Database::new(Kind::Sqlite).await;
    let host = db.host("").await;
    let body = row("o", "m").to_string();
    let (status, headers, text) = host.post(PATH, None, body.clone()).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(text, r#"{"error":"missing or wrong bearer token"}"#);
    for wrong in [
        "",
        "test-usage-toke",
        "test-usage-tokenX",
        "TEST-USAGE-TOKEN",
    ] {
        let (status, _, _) = host.post(PATH, Some(wrong), body.clone()).await;
        assert_eq!(status, 401, "{wrong:?}");
    }
    let response = reqwest::Client::new()
        .post(format!("{}{PATH}", host.base))
        .header("authorization", format!("Basic {TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let (status, _, _) = host.get(PATH).await;
    assert_eq!(status, 405);
    assert_eq!(db.rows().await, 0);
    db.remove().await;
}

#[tokio::test]
async fn invalid_bodies_are_refused_with_every_problem_and_write_nothing() {
    let db = Database::new(Kind::Sqlite).await;
    let host = db.host("max_batch = 3").await;

    let (status, _, text) = host.post(PATH, Some(TOKEN), r#"{"operation": "#).await;
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON: "),
        "{body}"
    );

    // One body per invalid field: each names its field.
    let long = |n| "x".repeat(n);
    let cases = [
        (json!({"model": "m"}), "operation", "is required"),
        (
            json!({"operation": long(51), "model": "m"}),
            "operation",
            "longer than 50 characters",
        ),
        (
            json!({"operation": "o", "model": long(101)}),
            "model",
            "longer than 100 characters",
        ),
        (
            json!({"operation": "o", "model": 3}),
            "model",
            "must be a string",
        ),
        (
            json!({"operation": "o", "model": "m", "user_id": "7"}),
            "user_id",
            "must be an integer from 0 to 2147483647",
        ),
        (
            json!({"operation": "o", "model": "m", "prompt_tokens": -1}),
            "prompt_tokens",
            "must be an integer from 0 to 2147483647",
        ),
        (
            json!({"operation": "o", "model": "m", "completion_tokens": 0.5}),
            "completion_tokens",
            "must be an integer from 0 to 2147483647",
        ),
        (
            json!({"operation": "o", "model": "m", "total_tokens": 1e10}),
            "total_tokens",
            "must be an integer from 0 to 2147483647",
        ),
        (
            json!({"operation": "o", "model": "m", "latency_ms": -3}),
            "latency_ms",
            "must be an integer from 0 to 2147483647",
        ),
        (
            json!({"operation": "o", "model": "m", "cost_dollars": -1.5}),
            "cost_dollars",
            "must be a finite number of at least 0",
        ),
        (
            json!({"operation": "o", "model": "m", "generation_id": long(101)}),
            "generation_id",
            "longer than 100 characters",
        ),
        (
            json!({"operation": "o", "model": "m", "status": "failed"}),
            "status",
            "must be \"success\" or \"error\"",
        ),
        (
            json!({"operation": "o", "model": "m", "created_at": "2026-01-01"}),
            "created_at",
            "is not a known field",
        ),
    ];
    for (item, field, message) in cases {
        let (status, body) = record(&host, &item).await;
        assert_eq!(status, 422, "{item}: {body}");
        assert_eq!(body["error"], "invalid rows");
        let problems = body["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{body}");
        assert_eq!(problems[0]["index"], 0);
        assert_eq!(problems[0]["field"], field, "{body}");
        assert!(
            problems[0]["message"]
                .as_str()
                .unwrap()
                .starts_with(message),
            "{body}"
        );
    }

    // Every problem of every row at once.
    let (status, body) = record(
        &host,
        &json!([{"operation": "", "model": "m", "colour": "red"}, "row", {"operation": "o"}]),
    )
    .await;
    assert_eq!(status, 422);
    let got: Vec<(i64, Value)> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["index"].as_i64().unwrap(), p["field"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (0, json!("colour")),
            (0, json!("operation")),
            (1, Value::Null),
            (2, json!("model")),
        ]
    );

    let (status, body) = record(
        &host,
        &json!([row("o", "m"), row("o", "m"), row("o", "m"), row("o", "m")]),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "4 rows is more than the maximum of 3 per request"
    );
    let (status, body) = record(&host, &json!([])).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("no rows: the array is empty"))
    );
    let (status, _) = record(&host, &json!(42)).await;
    assert_eq!(status, 422);

    // max_batch 3 → a body limit of 3 KiB.
    let padded = format!("{}{}", " ".repeat(3 * 1024), row("o", "m"));
    let (status, _, text) = host.post(PATH, Some(TOKEN), padded).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(text, r#"{"error":"body too large","limit_bytes":3072}"#);

    assert_eq!(db.rows().await, 0);
    let (status, _, _) = host.get("/livez").await;
    assert_eq!(status, 200, "bad input never takes the host down");
    db.remove().await;
}

/// One row, a batch with a bad row (nothing written), a good batch (every row, ids in
/// order, fields and defaults stored).
async fn records_batches_atomically(kind: Kind) {
    let db = Database::new(kind).await;
    let host = db.host("").await;
    let (status, body) = record(&host, &row("tarot", "openai/gpt-4o-mini")).await;
    assert_eq!(status, 201, "{body}");
    let first = body["ids"][0].as_i64().unwrap();

    let bad = json!([row("tarot", "m"), {"operation": "tarot", "model": "m", "cost_dollars": "free"}, row("tarot", "m")]);
    let (status, body) = record(&host, &bad).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["problems"][0]["index"], 1);
    assert_eq!(
        db.rows().await,
        1,
        "a batch with one bad row writes nothing"
    );

    let good = json!([
        {"operation": "horoscope", "model": "m1", "user_id": 42, "prompt_tokens": 100, "completion_tokens": 50,
         "cost_dollars": 0.125, "generation_id": "gen-abc", "latency_ms": 1500},
        {"operation": "horoscope", "model": "m1", "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 11, "status": "error"},
        {"operation": "natal_chart", "model": "m2", "user_id": null, "cost_dollars": null},
    ]);
    let (status, body) = record(&host, &good).await;
    assert_eq!(status, 201, "{body}");
    let ids: Vec<i64> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        first < ids[0] && ids[0] < ids[1] && ids[1] < ids[2],
        "{ids:?}"
    );
    assert_eq!(db.rows().await, 4);

    let id = ids[0];
    let stored = format!(
        "SELECT count(*) FROM ai_usage WHERE id = {id} AND user_id = 42 AND operation = 'horoscope' \
         AND model = 'm1' AND prompt_tokens = 100 AND completion_tokens = 50 AND total_tokens = 150 \
         AND cost_dollars = 0.125 AND generation_id = 'gen-abc' AND latency_ms = 1500 \
         AND status = 'success' AND created_at IS NOT NULL"
    );
    assert_eq!(
        db.count(&stored).await,
        1,
        "the first row's fields, total = the sum"
    );
    let id = ids[1];
    let given_total = format!(
        "SELECT count(*) FROM ai_usage WHERE id = {id} AND total_tokens = 11 AND status = 'error' AND user_id IS NULL"
    );
    assert_eq!(db.count(&given_total).await, 1);
    let id = ids[2];
    let defaults = format!(
        "SELECT count(*) FROM ai_usage WHERE id = {id} AND prompt_tokens = 0 AND total_tokens = 0 \
         AND cost_dollars IS NULL AND latency_ms IS NULL AND generation_id IS NULL"
    );
    assert_eq!(db.count(&defaults).await, 1);
    drop(host);
    db.remove().await;
}

#[tokio::test]
async fn sqlite_records_batches_atomically() {
    records_batches_atomically(Kind::Sqlite).await;
}

#[tokio::test]
async fn postgres_records_batches_atomically() {
    records_batches_atomically(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_records_batches_atomically() {
    records_batches_atomically(Kind::MySql).await;
}

/// N clients at once, each recording M rows (half of them one row per request, half
/// in batches of 5): exactly N×M rows with distinct ids, and counters that match.
async fn concurrent_writers_lose_nothing(kind: Kind) {
    const CLIENTS: usize = 8;
    const ROWS: usize = 20;
    const BATCH: usize = 5;
    let db = Database::new(kind).await;
    let host = db.host("").await;
    let item = |client: usize| {
        json!({"operation": format!("op{}", client % 2), "model": "m", "user_id": client,
               "prompt_tokens": 1, "completion_tokens": 2, "cost_dollars": 0.5, "latency_ms": 1500})
    };
    let clients = (0..CLIENTS).map(|client| {
        let host = &host;
        async move {
            let mut ids = Vec::new();
            let per_request = if client % 2 == 0 { 1 } else { BATCH };
            for _ in 0..ROWS / per_request {
                let body = if per_request == 1 {
                    item(client)
                } else {
                    Value::Array(vec![item(client); per_request])
                };
                let (status, body) = record(host, &body).await;
                assert_eq!(status, 201, "{body}");
                ids.extend(
                    body["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_i64().unwrap()),
                );
            }
            ids
        }
    });
    let mut ids: Vec<i64> = join_all(clients).await.into_iter().flatten().collect();
    let total = CLIENTS * ROWS;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "every row has its own id");
    assert_eq!(db.rows().await, total as i64);
    assert_eq!(
        db.count("SELECT count(DISTINCT id) FROM ai_usage").await,
        total as i64
    );

    let text = metrics(&host).await;
    let requests: f64 = ["op0", "op1"]
        .iter()
        .map(|op| {
            sample(
                &text,
                "adtrobot_ai_requests_total",
                &[("operation", op), ("model", "m"), ("status", "success")],
            )
        })
        .sum();
    assert_eq!(requests, total as f64, "{text}");
    let per_op = (total / 2) as f64;
    for op in ["op0", "op1"] {
        let labels = [("operation", op), ("model", "m")];
        let tokens = |token_type| {
            sample(
                &text,
                "adtrobot_ai_tokens_total",
                &[labels[0], labels[1], ("token_type", token_type)],
            )
        };
        assert_eq!(tokens("prompt"), per_op);
        assert_eq!(tokens("completion"), 2.0 * per_op);
        assert_eq!(
            sample(&text, "adtrobot_ai_cost_dollars_total", &labels),
            0.5 * per_op
        );
        assert_eq!(
            sample(&text, "adtrobot_ai_request_duration_seconds_count", &labels),
            per_op
        );
        assert_eq!(
            sample(&text, "adtrobot_ai_request_duration_seconds_sum", &labels),
            1.5 * per_op
        );
    }
    drop(host);
    db.remove().await;
}

#[tokio::test]
async fn sqlite_concurrent_writers_lose_nothing() {
    concurrent_writers_lose_nothing(Kind::Sqlite).await;
}

#[tokio::test]
async fn postgres_concurrent_writers_lose_nothing() {
    concurrent_writers_lose_nothing(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_concurrent_writers_lose_nothing() {
    concurrent_writers_lose_nothing(Kind::MySql).await;
}

#[tokio::test]
async fn each_row_moves_the_ai_metrics_with_capped_labels() {
    let db = Database::new(Kind::Sqlite).await;
    let host = db.host("max_label_values = 2").await;
    let rows = json!([
        {"operation": "tarot", "model": "m1", "prompt_tokens": 10, "completion_tokens": 20, "cost_dollars": 0.25, "latency_ms": 700},
        {"operation": "tarot", "model": "m1", "status": "error", "latency_ms": 40000},
        {"operation": "horoscope", "model": "m2", "prompt_tokens": 1},
        {"operation": "natal_chart", "model": "m3", "prompt_tokens": 2},
        {"operation": "card_of_day", "model": "m1", "prompt_tokens": 4},
    ]);
    let (status, body) = record(&host, &rows).await;
    assert_eq!(status, 201, "{body}");
    let text = metrics(&host).await;
    let requests = |op, model, status| {
        sample(
            &text,
            "adtrobot_ai_requests_total",
            &[("operation", op), ("model", model), ("status", status)],
        )
    };
    assert_eq!(requests("tarot", "m1", "success"), 1.0);
    assert_eq!(requests("tarot", "m1", "error"), 1.0);
    assert_eq!(requests("horoscope", "m2", "success"), 1.0);
    assert_eq!(
        requests("other", "other", "success"),
        1.0,
        "third operation and model"
    );
    assert_eq!(
        requests("other", "m1", "success"),
        1.0,
        "a known model stays"
    );
    assert!(
        !text.contains("natal_chart") && !text.contains("card_of_day"),
        "{text}"
    );
    let prompt = |op, model| {
        sample(
            &text,
            "adtrobot_ai_tokens_total",
            &[
                ("operation", op),
                ("model", model),
                ("token_type", "prompt"),
            ],
        )
    };
    assert_eq!(prompt("tarot", "m1"), 10.0);
    assert_eq!(prompt("other", "other"), 2.0);
    assert_eq!(prompt("other", "m1"), 4.0);
    let tarot = [("operation", "tarot"), ("model", "m1")];
    assert_eq!(
        sample(
            &text,
            "adtrobot_ai_tokens_total",
            &[tarot[0], tarot[1], ("token_type", "completion")]
        ),
        20.0
    );
    assert_eq!(
        sample(&text, "adtrobot_ai_cost_dollars_total", &tarot),
        0.25
    );
    let bucket = |le| {
        sample(
            &text,
            "adtrobot_ai_request_duration_seconds_bucket",
            &[tarot[0], tarot[1], ("le", le)],
        )
    };
    // Bounds as the Python client spells them.
    assert_eq!(
        (bucket("0.5"), bucket("1.0"), bucket("30.0"), bucket("60.0")),
        (0.0, 1.0, 1.0, 2.0)
    );
    let horoscope = [("operation", "horoscope"), ("model", "m2")];
    assert_eq!(
        sample(
            &text,
            "adtrobot_ai_request_duration_seconds_count",
            &horoscope
        ),
        0.0,
        "no latency, no observation"
    );
    drop(host);
    db.remove().await;
}

/// While the database is unavailable, a batch gets 503 with `Retry-After`, the host
/// keeps serving and the metrics do not move (one row was recorded before); returns
/// the batch.
async fn a_batch_is_refused_while_down(host: &Host) -> String {
    let batch = json!([row("tarot", "m"), row("tarot", "m")]).to_string();
    let (status, headers, text) = host.post(PATH, Some(TOKEN), batch.clone()).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(headers["retry-after"], "5");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["error"],
        "the usage database is unavailable; nothing was written"
    );
    let (status, _, _) = host.get("/livez").await;
    assert_eq!(status, 200, "the host keeps serving");
    assert_eq!(
        sample(&metrics(host).await, "adtrobot_ai_requests_total", &TAROT_M),
        1.0,
        "metrics move only after a commit"
    );
    batch
}

/// Once the database is back, the refused batch is written and counted.
async fn the_batch_is_recorded_once_back(host: &Host, batch: String) {
    let (status, _, text) = host.post(PATH, Some(TOKEN), batch).await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(
        sample(&metrics(host).await, "adtrobot_ai_requests_total", &TAROT_M),
        3.0
    );
}

const TAROT_M: [(&str, &str); 3] = [
    ("operation", "tarot"),
    ("model", "m"),
    ("status", "success"),
];

#[tokio::test]
async fn postgres_that_refuses_connections_answers_503_writes_nothing_and_recovers() {
    let db = Database::new(Kind::Postgres).await;
    let host = db.host("").await;
    assert_eq!(record(&host, &row("tarot", "m")).await.0, 201);

    let (server, name) = db.server.as_ref().unwrap();
    server
        .exec(format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await;
    let batch = a_batch_is_refused_while_down(&host).await;
    server
        .exec(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await;
    the_batch_is_recorded_once_back(&host, batch).await;
    drop(host);
    // The test's own pool was cut off too; a fresh one sees the rows.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ai_usage")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 3, "the refused batch wrote nothing");
    pool.close().await;
    db.remove().await;
}

#[tokio::test]
async fn mariadb_that_locks_the_hosts_account_answers_503_writes_nothing_and_recovers() {
    let db = Database::new(Kind::MySql).await;
    let (server, name) = db.server.as_ref().unwrap();
    // The host connects as an account of its own, which the "outage" locks.
    let user = format!("{name}_host");
    server
        .exec(format!(
            "CREATE USER '{user}'@'%'; GRANT ALL ON {name}.* TO '{user}'@'%'"
        ))
        .await;
    let url = format!("mysql://{user}@127.0.0.1:3306/{name}");
    let host = Host::start(&format!(
        "[datasources.main]\nurl = \"{url}\"\n[usage]\ntoken = \"{TOKEN}\"\n"
    ))
    .await;
    assert_eq!(record(&host, &row("tarot", "m")).await.0, 201);

    server
        .exec(format!("ALTER USER '{user}'@'%' ACCOUNT LOCK"))
        .await;
    let Pool::MySql(pool) = &db.pool else {
        unreachable!()
    };
    let sessions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM information_schema.processlist WHERE user = '{user}'"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    for id in sessions {
        server.exec(format!("KILL {id}")).await;
    }
    let batch = a_batch_is_refused_while_down(&host).await;
    server
        .exec(format!("ALTER USER '{user}'@'%' ACCOUNT UNLOCK"))
        .await;
    the_batch_is_recorded_once_back(&host, batch).await;
    assert_eq!(db.rows().await, 3, "the refused batch wrote nothing");
    drop(host);
    server.exec(format!("DROP USER '{user}'@'%'")).await;
    db.remove().await;
}

#[tokio::test]
async fn sqlite_locked_by_another_writer_answers_503_writes_nothing_and_recovers() {
    use sqlx::Connection;
    let db = Database::new(Kind::Sqlite).await;
    let host = db.host("").await;
    assert_eq!(record(&host, &row("tarot", "m")).await.0, 201);

    // Another process's exclusive transaction: the host's write waits out SQLite's
    // busy timeout and gives up.
    let mut other = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let batch = a_batch_is_refused_while_down(&host).await;
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    the_batch_is_recorded_once_back(&host, batch).await;
    assert_eq!(db.rows().await, 3, "the refused batch wrote nothing");
    drop(host);
    db.remove().await;
}

// ---------------------------------------------------------------------------------
// The report

/// Runs `healthhost usage --database-url URL ARGS`; (exit code, stdout, stderr).
async fn usage(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["usage", "--database-url", url];
    all.extend_from_slice(args);
    usage_cli(&all).await
}

/// Runs `healthhost ARGS`; (exit code, stdout, stderr).
async fn usage_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(BIN);
    command.args(args).env("HEALTHHOST_LOG", "off");
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn usage_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = usage(url, &all).await;
    assert_eq!(code, Some(0), "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// One group of a JSON report: key, calls, errors, prompt, completion and total
/// tokens, cost, active users.
type Group = (Value, i64, i64, i64, i64, i64, f64, i64);

fn groups(report: &Value) -> Vec<Group> {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let n = |k: &str| g[k].as_i64().unwrap();
            (
                g["key"].clone(),
                n("calls"),
                n("errors"),
                n("prompt_tokens"),
                n("completion_tokens"),
                n("total_tokens"),
                g["cost_dollars"].as_f64().unwrap(),
                n("active_users"),
            )
        })
        .collect()
}

async fn report_sums_the_rows(kind: Kind) {
    let db = Database::new(kind).await;
    let month_ago = match kind {
        Kind::Sqlite => "datetime('now', '-30 days')",
        Kind::Postgres => "LOCALTIMESTAMP - INTERVAL '30 days'",
        Kind::MySql => "NOW() - INTERVAL 30 DAY",
    };
    db.exec(&format!(
        "INSERT INTO ai_usage (user_id, operation, model, prompt_tokens, completion_tokens, total_tokens, cost_dollars, status) VALUES \
         (1, 'tarot', 'm1', 10, 20, 30, 0.5, 'success'), \
         (2, 'tarot', 'm2', 1, 2, 3, 0.25, 'error'), \
         (1, 'tarot', 'm1', 5, 5, 10, 1.0, 'success'), \
         (NULL, 'horoscope', 'm1', 100, 0, 100, NULL, NULL), \
         (3, 'horoscope', 'm2', 0, 0, 0, 2.0, 'success'); \
         INSERT INTO ai_usage (user_id, operation, model, prompt_tokens, completion_tokens, total_tokens, cost_dollars, created_at) \
         VALUES (4, 'tarot', 'm1', 1000, 1000, 2000, 8.0, {month_ago})"
    ))
    .await;

    let report = usage_json(&db.url, &[]).await;
    assert_eq!(report["by"], "operation");
    assert_eq!(report["since_seconds"], 7 * 86_400);
    assert_eq!(
        groups(&report),
        [
            (json!("horoscope"), 2, 0, 100, 0, 100, 2.0, 1),
            (json!("tarot"), 3, 1, 16, 27, 43, 1.75, 2),
        ],
        "most expensive first; the month-old row is outside the default 7 days"
    );
    let total = &report["total"];
    assert_eq!(
        (
            total["calls"].as_i64(),
            total["total_tokens"].as_i64(),
            total["cost_dollars"].as_f64(),
            total["active_users"].as_i64()
        ),
        (Some(5), Some(143), Some(3.75), Some(3))
    );
    assert_eq!(total["cost_per_active_user"], 1.25);

    let by_user = usage_json(&db.url, &["--by", "user"]).await;
    let users: Vec<(Value, i64, f64)> = groups(&by_user)
        .into_iter()
        .map(|g| (g.0, g.1, g.6))
        .collect();
    assert_eq!(
        users,
        [
            (json!("3"), 1, 2.0),
            (json!("1"), 2, 1.5),
            (json!("2"), 1, 0.25),
            (Value::Null, 1, 0.0)
        ]
    );

    let by_model = usage_json(&db.url, &["--by", "model", "--since", "60d"]).await;
    let models: Vec<(Value, i64, f64)> = groups(&by_model)
        .into_iter()
        .map(|g| (g.0, g.1, g.6))
        .collect();
    assert_eq!(models, [(json!("m1"), 4, 9.5), (json!("m2"), 2, 2.25)]);
    assert_eq!(by_model["total"]["active_users"], 4);

    let by_day = usage_json(&db.url, &["--by", "day", "--since", "60d"]).await;
    let days = groups(&by_day);
    assert_eq!(days.len(), 2, "{by_day}");
    assert!(
        days[0].0.as_str().unwrap() < days[1].0.as_str().unwrap(),
        "oldest day first"
    );
    assert_eq!(
        (days[0].1, days[0].6, days[1].1, days[1].6),
        (1, 8.0, 5, 3.75)
    );

    let (code, table, stderr) = usage(&db.url, &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("operation  calls  errors  prompt tokens"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("horoscope") && lines[2].starts_with("tarot"),
        "{table}"
    );
    assert_eq!(
        lines[4],
        "last 7days: 5 calls, 143 tokens, $3.7500, 3 active users, $1.2500 per active user"
    );
    db.remove().await;
}

#[tokio::test]
async fn sqlite_report_sums_the_rows() {
    report_sums_the_rows(Kind::Sqlite).await;
}

#[tokio::test]
async fn postgres_report_sums_the_rows() {
    report_sums_the_rows(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_report_sums_the_rows() {
    report_sums_the_rows(Kind::MySql).await;
}

#[tokio::test]
async fn report_flags_are_checked_with_one_line_and_exit_3() {
    for (args, expected) in [
        (&["--by", "colour"][..], "invalid value 'colour'"),
        (&["--since", "soon"][..], "invalid duration 'soon'"),
        (&["--since", "0s"][..], "outside the window"),
    ] {
        let (code, _, stderr) = usage("sqlite::memory:", args).await;
        assert_eq!(code, Some(3), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = usage("redis://x", &[]).await;
    assert_eq!(code, Some(3));
    assert!(stderr.contains("unsupported database url"), "{stderr}");
    let (code, _, stderr) = usage("sqlite::memory:", &[]).await;
    assert_eq!(code, Some(3), "no ai_usage table");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

// ---------------------------------------------------------------------------------
// The summary API

const READ_TOKEN: &str = "test-read-token";
const SUMMARY: &str = "/v1/usage/summary";

/// `GET /v1/usage/summary?QUERY` with `Authorization: Bearer <token>` when given;
/// status, headers and parsed body.
async fn summary_with(
    host: &Host,
    query: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (status, headers, text) = host.get_with(&format!("{SUMMARY}{query}"), &headers).await;
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, headers, body)
}

/// The summary with the read token; asserts 200.
async fn summary(host: &Host, query: &str) -> Value {
    let (status, _, body) = summary_with(host, query, Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// (requests, errors, tokens, cost, active users) of a summary's totals.
fn totals(summary: &Value) -> (i64, i64, i64, f64, i64) {
    let t = &summary["totals"];
    (
        t["requests"].as_i64().unwrap(),
        t["errors"].as_i64().unwrap(),
        t["tokens"].as_i64().unwrap(),
        t["cost_dollars"].as_f64().unwrap(),
        t["active_users"].as_i64().unwrap(),
    )
}

/// (key, cost, tokens, requests) of each group of `summary[list]`.
fn summary_groups(summary: &Value, list: &str, key: &str) -> Vec<(Value, f64, i64, i64)> {
    summary[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g[key].clone(),
                g["cost_dollars"].as_f64().unwrap(),
                g["tokens"].as_i64().unwrap(),
                g["requests"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn summary_sums_the_rows_of_its_range(kind: Kind) {
    let db = Database::new(kind).await;
    let host = db.host(&format!("read_token = \"{READ_TOKEN}\"")).await;
    let (status, body) = record(
        &host,
        &json!([
            {"user_id": 1, "operation": "tarot", "model": "m1", "prompt_tokens": 10, "completion_tokens": 20,
             "cost_dollars": 0.5, "latency_ms": 100},
            {"user_id": 2, "operation": "tarot", "model": "m2", "prompt_tokens": 1, "completion_tokens": 2,
             "cost_dollars": 0.25, "latency_ms": 300, "status": "error"},
            {"operation": "horoscope", "model": "m1", "prompt_tokens": 100, "cost_dollars": 2.0},
        ]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let ago = |days: u32| match kind {
        Kind::Sqlite => format!("datetime('now', '-{days} days')"),
        Kind::Postgres => format!("LOCALTIMESTAMP - INTERVAL '{days} days'"),
        Kind::MySql => format!("NOW() - INTERVAL {days} DAY"),
    };
    db.exec(&format!(
        "INSERT INTO ai_usage (user_id, operation, model, prompt_tokens, completion_tokens, total_tokens, \
           cost_dollars, latency_ms, status, created_at) VALUES \
         (4, 'tarot', 'm1', 1000, 1000, 2000, 8.0, 1000, 'success', {}), \
         (5, 'horoscope', 'm1', 50, 0, 50, 1.0, NULL, 'error', {})",
        ago(3),
        ago(10)
    ))
    .await;

    let day = summary(&host, "").await;
    assert_eq!(
        (&day["range"], &day["since_seconds"]),
        (&json!("24h"), &json!(86_400))
    );
    assert_eq!(totals(&day), (3, 1, 133, 2.75, 2), "{day}");
    let t = &day["totals"];
    assert_eq!(t["error_rate"].as_f64(), Some(1.0 / 3.0));
    assert_eq!(
        t["mean_latency_ms"].as_f64(),
        Some(200.0),
        "rows without one do not count"
    );
    assert_eq!(t["cost_per_active_user"].as_f64(), Some(1.375));
    assert_eq!(
        summary_groups(&day, "by_operation", "operation"),
        [
            (json!("horoscope"), 2.0, 100, 1),
            (json!("tarot"), 0.75, 33, 2)
        ],
        "most expensive first"
    );
    let days = summary_groups(&day, "by_day", "date");
    let (cost, requests) = days.iter().fold((0.0, 0), |(c, r), g| (c + g.1, r + g.3));
    assert_eq!((cost, requests), (2.75, 3), "{day}");
    assert_eq!(summary(&host, "?range=24h").await, day);

    let week = summary(&host, "?range=7d").await;
    assert_eq!(
        totals(&week),
        (4, 1, 2133, 10.75, 3),
        "the 3-day-old row counts: {week}"
    );
    let mean = week["totals"]["mean_latency_ms"].as_f64().unwrap();
    assert!((mean - 1400.0 / 3.0).abs() < 0.01, "{mean}");
    assert_eq!(
        week["totals"]["cost_per_active_user"].as_f64(),
        Some(10.75 / 3.0)
    );
    assert_eq!(
        summary_groups(&week, "by_operation", "operation"),
        [
            (json!("tarot"), 8.75, 2033, 3),
            (json!("horoscope"), 2.0, 100, 1)
        ]
    );
    let days = summary_groups(&week, "by_day", "date");
    assert!(days.len() >= 2, "{week}");
    assert_eq!((days[0].1, days[0].3), (8.0, 1), "oldest day first: {week}");
    assert!(days[0].0.as_str().unwrap() < days[1].0.as_str().unwrap());

    let month = summary(&host, "?range=30d").await;
    assert_eq!(totals(&month), (5, 2, 2183, 11.75, 4), "{month}");
    assert_eq!(month["totals"]["error_rate"].as_f64(), Some(0.4));

    // The same numbers as `healthhost usage`.
    let report = usage_json(&db.url, &["--since", "7d"]).await;
    let total = &report["total"];
    assert_eq!(
        (
            &total["calls"],
            &total["errors"],
            &total["total_tokens"],
            &total["cost_dollars"]
        ),
        (
            &week["totals"]["requests"],
            &week["totals"]["errors"],
            &week["totals"]["tokens"],
            &week["totals"]["cost_dollars"]
        )
    );
    assert_eq!(total["mean_latency_ms"], week["totals"]["mean_latency_ms"]);
    assert_eq!(total["active_users"], week["totals"]["active_users"]);
    drop(host);
    db.remove().await;
}

#[tokio::test]
async fn sqlite_summary_sums_the_rows_of_its_range() {
    summary_sums_the_rows_of_its_range(Kind::Sqlite).await;
}

#[tokio::test]
async fn postgres_summary_sums_the_rows_of_its_range() {
    summary_sums_the_rows_of_its_range(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_summary_sums_the_rows_of_its_range() {
    summary_sums_the_rows_of_its_range(Kind::MySql).await;
}

#[tokio::test]
async fn the_summary_needs_the_read_token_and_a_known_range() {
    let db = Database::new(Kind::Sqlite).await;
    let host = db.host(&format!("read_token = \"{READ_TOKEN}\"")).await;
    let (status, headers, body) = summary_with(&host, "", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    for wrong in [TOKEN, "", "test-read-toke", "test-read-tokenX"] {
        let (status, _, body) = summary_with(&host, "", Some(wrong)).await;
        assert_eq!(
            status, 401,
            "{wrong:?} (the write token does not read): {body}"
        );
    }
    let (status, _, body) = summary_with(&host, "?range=1y", None).await;
    assert_eq!(status, 401, "the token is checked before the range: {body}");
    for bad in ["1y", "24H", "7days", ""] {
        let (status, _, body) =
            summary_with(&host, &format!("?range={bad}"), Some(READ_TOKEN)).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(
            body["error"],
            format!("invalid range '{bad}': expected one of 24h, 7d, 30d")
        );
    }
    let (status, _, _) = host.post(SUMMARY, Some(READ_TOKEN), "{}").await;
    assert_eq!(status, 405);
    // The read token does not write.
    let (status, _, _) = host
        .post(PATH, Some(READ_TOKEN), row("o", "m").to_string())
        .await;
    assert_eq!(status, 401);
    drop(host);

    // The write token alone: the summary is off, as POST is without its token.
    let host = db.host("").await;
    let (status, _, body) = summary_with(&host, "", Some(TOKEN)).await;
    assert_eq!((status, body), (404, json!({"error": "not found"})));
    drop(host);

    // The read token alone: reading works, writing is off.
    let host = Host::start(&format!(
        "[datasources.main]\nurl = \"{}\"\n[usage]\nread_token = \"{READ_TOKEN}\"\n",
        db.url
    ))
    .await;
    assert_eq!(totals(&summary(&host, "").await), (0, 0, 0, 0.0, 0));
    let (status, _, _) = host
        .post(PATH, Some(READ_TOKEN), row("o", "m").to_string())
        .await;
    assert_eq!(status, 404);
    drop(host);
    db.remove().await;
}

#[tokio::test]
async fn the_summary_is_503_while_its_table_cannot_be_read() {
    // Migration off on an empty database: there is no ai_usage to read.
    let db = Database::empty(Kind::Sqlite).await;
    let host = db
        .host(&format!("migrate = false\nread_token = \"{READ_TOKEN}\""))
        .await;
    let (status, headers, body) = summary_with(&host, "", Some(READ_TOKEN)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(body["error"], "the usage database is unavailable");
    drop(host);
    db.remove().await;
}

// ------------------------------------------------------- the bot's own schema

/// `users` and `ai_usage` as the AdtroBot plan's SQLAlchemy models and Alembic make them: no
/// database default on `created_at` (the ORM fills it), no `status`, and a foreign key
/// to `users`. User 42 exists.
fn bot_schema(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => {
            "CREATE TABLE users (id INTEGER NOT NULL, PRIMARY KEY (id));
             CREATE TABLE ai_usage (id INTEGER NOT NULL, user_id INTEGER, created_at DATETIME,
               operation VARCHAR(50), model VARCHAR(100), prompt_tokens INTEGER,
               completion_tokens INTEGER, total_tokens INTEGER, cost_dollars FLOAT,
               generation_id VARCHAR(100), latency_ms INTEGER, PRIMARY KEY (id),
               FOREIGN KEY(user_id) REFERENCES users (id));
             CREATE INDEX ix_ai_usage_created_at ON ai_usage (created_at);
             INSERT INTO users (id) VALUES (42);"
        }
        Kind::Postgres => {
            "CREATE TABLE users (id SERIAL NOT NULL, PRIMARY KEY (id));
             CREATE TABLE ai_usage (id SERIAL NOT NULL, user_id INTEGER,
               created_at TIMESTAMP WITHOUT TIME ZONE, operation VARCHAR(50), model VARCHAR(100),
               prompt_tokens INTEGER, completion_tokens INTEGER, total_tokens INTEGER,
               cost_dollars FLOAT, generation_id VARCHAR(100), latency_ms INTEGER,
               PRIMARY KEY (id), FOREIGN KEY(user_id) REFERENCES users (id));
             CREATE INDEX ix_ai_usage_created_at ON ai_usage (created_at);
             INSERT INTO users (id) VALUES (42);"
        }
        Kind::MySql => {
            "CREATE TABLE users (id INTEGER NOT NULL AUTO_INCREMENT, PRIMARY KEY (id)) ENGINE=InnoDB;
             CREATE TABLE ai_usage (id INTEGER NOT NULL AUTO_INCREMENT, user_id INTEGER,
               created_at DATETIME, operation VARCHAR(50), model VARCHAR(100),
               prompt_tokens INTEGER, completion_tokens INTEGER, total_tokens INTEGER,
               cost_dollars FLOAT, generation_id VARCHAR(100), latency_ms INTEGER,
               PRIMARY KEY (id), FOREIGN KEY(user_id) REFERENCES users (id)) ENGINE=InnoDB;
             CREATE INDEX ix_ai_usage_created_at ON ai_usage (created_at);
             INSERT INTO users (id) VALUES (42);"
        }
    }
}

/// Whether `table` exists, and whether `ai_usage` has a `status` column.
fn schema_probe(kind: Kind, table: &str) -> (String, String) {
    match kind {
        Kind::Sqlite => (
            format!("SELECT count(*) FROM sqlite_master WHERE name = '{table}'"),
            "SELECT count(*) FROM pragma_table_info('ai_usage') WHERE name = 'status'".to_owned(),
        ),
        Kind::Postgres => (
            format!("SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}' AND table_schema = current_schema()"),
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'ai_usage' AND column_name = 'status' AND table_schema = current_schema()".to_owned(),
        ),
        Kind::MySql => (
            format!("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_NAME = '{table}' AND TABLE_SCHEMA = DATABASE()"),
            "SELECT count(*) FROM information_schema.COLUMNS WHERE TABLE_NAME = 'ai_usage' AND COLUMN_NAME = 'status' AND TABLE_SCHEMA = DATABASE()".to_owned(),
        ),
    }
}

/// On the bot's own schema, with `[usage]` settings `usage_settings`: serve leaves it
/// as it is (no `status`, no `_sqlx_migrations`), ingest sets `created_at`, a foreign-key violation is a 422
/// naming the row and the field with nothing written, and the report counts the rows.
async fn records_into_the_bots_own_schema(kind: Kind, usage_settings: &str) {
    let db = Database::empty(kind).await;
    db.exec(bot_schema(kind)).await;
    let host = db.host(usage_settings).await;

    let (status, body) = record(
        &host,
        &json!({"operation": "tarot", "model": "m", "user_id": 42, "cost_dollars": 0.5}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = record(
        &host,
        &json!({"operation": "tarot", "model": "m", "status": "error"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        db.count("SELECT count(*) FROM ai_usage WHERE created_at IS NOT NULL")
            .await,
        2,
        "created_at comes from the database's clock"
    );

    let batch = json!([row("tarot", "m"), {"operation": "tarot", "model": "m", "user_id": 999}]);
    let (status, body) = record(&host, &batch).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["problems"][0]["index"], 1, "{body}");
    assert_eq!(body["problems"][0]["field"], "user_id", "{body}");
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("refused by the database: "),
        "{body}"
    );
    assert_eq!(
        db.rows().await,
        2,
        "nothing of the refused batch is written"
    );

    let (migrations, status_column) = schema_probe(kind, "_sqlx_migrations");
    assert_eq!(
        db.count(&migrations).await,
        0,
        "no _sqlx_migrations in the bot's database"
    );
    assert_eq!(
        db.count(&status_column).await,
        0,
        "ai_usage gained no status column"
    );

    let report = usage_json(&db.url, &["--since", "1d"]).await;
    assert_eq!(report["total"]["calls"], 2, "{report}");
    assert_eq!(report["total"]["errors"], 0, "{report}");
    assert_eq!(report["total"]["cost_dollars"], 0.5, "{report}");
    drop(host);
    db.remove().await;
}

#[tokio::test]
async fn sqlite_records_into_the_bots_own_schema() {
    // Migration on (the default): the host sees the table is not its own.
    records_into_the_bots_own_schema(Kind::Sqlite, "").await;
}

#[tokio::test]
async fn postgres_records_into_the_bots_own_schema() {
    records_into_the_bots_own_schema(Kind::Postgres, "migrate = false").await;
}

#[tokio::test]
async fn mariadb_records_into_the_bots_own_schema() {
    records_into_the_bots_own_schema(Kind::MySql, "migrate = false").await;
}

#[tokio::test]
async fn migrate_refuses_to_change_a_schema_another_tool_owns() {
    let db = Database::empty(Kind::Sqlite).await;
    db.exec(bot_schema(Kind::Sqlite)).await;
    let (code, _, err) = usage_cli(&["migrate", "--database-url", &db.url]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("ai_usage exists but was not created by healthhost"),
        "{err}"
    );
    let (migrations, status_column) = schema_probe(Kind::Sqlite, "_sqlx_migrations");
    assert_eq!(db.count(&migrations).await, 0);
    assert_eq!(db.count(&status_column).await, 0);
    db.remove().await;
}
