//! Host capabilities through a real guest (the misbehave test plugin): HTTP against
//! loopback stand-ins, SQL against SQLite, PostgreSQL and MariaDB. Every denial is a
//! typed error the guest reports, a plugin cannot set the headers that route or frame
//! a request, and nothing a plugin sends can write to a database.

use crate::common::*;
use healthhost::capabilities::sql::{Datasource, Datasources};
use healthhost::config::grants::Grants;
use healthhost::config::grants::HttpPolicy;
use healthhost::config::grants::SqlPolicy;
use healthhost::limits::Limits;
use healthhost::runtime::{Outcome, RunReport, Runtime};

async fn http(runtime: &Runtime, allow: &[&str], url: &str, limits: Limits) -> RunReport {
    let grants = Grants {
        http: HttpPolicy::parse(allow).unwrap(),
        ..Grants::default()
    };
    let given = settings([("url", url)]);
    misbehave(runtime, grants, given, limits, "http").await
}

#[tokio::test]
async fn http_to_a_granted_origin_returns_the_response() {
    let server = StandIn::start(routes([("/ok", Reply::ok("hello"))])).await;
    let report = http(
        &runtime(),
        &[&server.origin],
        &server.url("/ok"),
        Limits::default(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Pass, "{report:?}");
    assert_eq!(report.message.as_deref(), Some("status:200 body:5"));
}

#[tokio::test]
async fn http_to_an_origin_not_granted_is_denied() {
    let server = StandIn::start(routes([("/ok", Reply::ok("hello"))])).await;
    let report = http(
        &runtime(),
        &["http://127.0.0.1:1"],
        &server.url("/ok"),
        Limits::default(),
    )
    .await;
    let port = server.origin.rsplit(':').next().unwrap();
    assert_eq!(
        report.message.unwrap(),
        format!("denied:http://127.0.0.1:{port}")
    );
    assert!(
        server.requests.lock().unwrap().is_empty(),
        "no request was sent"
    );
}

#[tokio::test]
async fn http_redirect_is_rechecked_at_every_hop() {
    let other = StandIn::start(routes([("/secret", Reply::ok("leak"))])).await;
    let server = StandIn::start(routes([
        ("/away", Reply::redirect(other.url("/secret"))),
        ("/here", Reply::redirect("/ok")),
        ("/ok", Reply::ok("fine")),
    ]))
    .await;
    let runtime = runtime();
    let report = http(
        &runtime,
        &[&server.origin],
        &server.url("/away"),
        Limits::default(),
    )
    .await;
    assert!(
        report
            .message
            .unwrap()
            .starts_with("denied:http://127.0.0.1:")
    );
    assert!(
        other.requests.lock().unwrap().is_empty(),
        "the redirect target was never contacted"
    );
    let report = http(
        &runtime,
        &[&server.origin],
        &server.url("/here"),
        Limits::default(),
    )
    .await;
    assert_eq!(report.message.as_deref(), Some("status:200 body:4"));
}

#[tokio::test]
async fn http_that_never_answers_gives_the_guest_a_timeout_before_the_run_ends() {
    let server = StandIn::start(routes([("/hang", Reply::Hang)])).await;
    let report = http(
        &runtime(),
        &[&server.origin],
        &server.url("/hang"),
        quick(1000),
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::Fail,
        "the plugin itself reported it: {report:?}"
    );
    assert_eq!(report.message.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn http_body_over_the_cap_is_too_large() {
    let big = vec![b'x'; (healthhost::limits::HTTP_MAX_RESPONSE_BYTES + 1) as usize];
    let server = StandIn::start(routes([("/big", Reply::ok(big))])).await;
    let report = http(
        &runtime(),
        &[&server.origin],
        &server.url("/big"),
        Limits::default(),
    )
    .await;
    assert_eq!(
        report.message.unwrap(),
        format!("too-large:{}", healthhost::limits::HTTP_MAX_RESPONSE_BYTES)
    );
}

#[tokio::test]
async fn http_urls_without_host_or_http_scheme_are_invalid() {
    let runtime = runtime();
    for url in ["file:///etc/passwd", "http://", "not a url"] {
        let report = http(&runtime, &["*"], url, Limits::default()).await;
        assert!(
            report.message.clone().unwrap().starts_with("invalid:"),
            "{url}: {report:?}"
        );
    }
}

#[tokio::test]
async fn http_transport_errors_do_not_leak_secrets_in_the_url() {
    // A closed port: the error text reqwest produces would contain the URL.
    let grants = Grants {
        http: HttpPolicy::parse(&["http://127.0.0.1:9"]).unwrap(),
        ..Grants::default()
    };
    let mut given = settings([("url", "http://127.0.0.1:9/botSECRET42/getMe")]);
    given.set_secret("token", "SECRET42");
    let report = misbehave(&runtime(), grants, given, Limits::default(), "http").await;
    let message = report.message.unwrap();
    assert!(message.starts_with("transport:"), "{message}");
    assert!(!message.contains("SECRET42"), "{message}");
}

#[tokio::test]
async fn http_headers_that_route_or_frame_a_request_are_invalid_and_nothing_is_sent() {
    let server = StandIn::start(routes([("/ok", Reply::ok("hello"))])).await;
    let runtime = runtime();
    let send = |header: &str| {
        let grants = Grants {
            http: HttpPolicy::parse(&[&server.origin]).unwrap(),
            ..Grants::default()
        };
        let given = settings([("url", &server.url("/ok")), ("header", header)]);
        misbehave(&runtime, grants, given, Limits::default(), "http")
    };
    let forbidden = [
        ("Host: internal.example", "host"),
        ("HOST: internal.example", "host"),
        ("host: 127.0.0.1", "host"),
        ("Content-Length: 0", "content-length"),
        ("Transfer-Encoding: chunked", "transfer-encoding"),
        ("Connection: keep-alive", "connection"),
        ("Upgrade: websocket", "upgrade"),
        ("TE: trailers", "te"),
        ("Trailer: X-Sum", "trailer"),
        ("Keep-Alive: timeout=5", "keep-alive"),
        ("Proxy-Authorization: Basic eDp5", "proxy-authorization"),
        ("proxy-connection: close", "proxy-connection"),
    ];
    for (header, name) in forbidden {
        let report = send(header).await;
        assert_eq!(report.outcome, Outcome::Fail, "{header}: {report:?}");
        let message = report.message.unwrap();
        assert!(
            message.starts_with(&format!("invalid:header '{name}' ")),
            "{header}: {message}"
        );
    }
    assert!(
        server.requests.lock().unwrap().is_empty(),
        "no request with a forbidden header was sent"
    );

    let report = send("X-Check: allowed").await;
    assert_eq!(report.message.as_deref(), Some("status:200 body:5"));
    let requests = server.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0]
            .to_lowercase()
            .contains("\r\nx-check: allowed\r\n"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains(&format!(
            "\r\nhost: {}\r\n",
            &server.origin["http://".len()..]
        )),
        "the host sets Host from the URL: {}",
        requests[0]
    );
}

#[tokio::test]
async fn healthhost_check_refuses_a_host_header_with_the_typed_error() {
    let server = StandIn::start(routes([("/ok", Reply::ok("hello"))])).await;
    let args = [
        "check".to_owned(),
        test_artifacts::MISBEHAVE.to_owned(),
        "--allow-http".to_owned(),
        server.origin.clone(),
        "--set".to_owned(),
        "mode=http".to_owned(),
        "--set".to_owned(),
        format!("url={}", server.url("/ok")),
        "--set".to_owned(),
        "header=Host: admin.internal".to_owned(),
    ];
    // The stand-in runs on this test's runtime: wait for the process off it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(args)
            .env("HEALTHHOST_LOG", "off")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.starts_with("misbehave: FAIL - invalid:header 'host' "),
        "{text}"
    );
    assert!(server.requests.lock().unwrap().is_empty());
}

/// Runs `statement` through the guest against one datasource named `db`.
async fn sql(datasource: Datasource, grant: &[&str], statement: &str, params: &str) -> RunReport {
    let mut all = Datasources::default();
    all.insert(datasource);
    let runtime = Runtime::new(all).unwrap();
    let grants = Grants {
        sql: SqlPolicy::new(grant.iter().copied()),
        ..Grants::default()
    };
    let given = settings([
        ("datasource", "db"),
        ("statement", statement),
        ("params", params),
    ]);
    misbehave(&runtime, grants, given, Limits::default(), "sql").await
}

/// A SQLite file in a fresh temporary directory, prepared with `setup`.
async fn sqlite_file(setup: &[&str]) -> (tempdir::Dir, String) {
    let dir = tempdir::Dir::new();
    let path = dir.path.join("db.sqlite");
    let pool = sqlite(&path).await;
    for statement in setup {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    (dir, format!("sqlite://{}", path.display()))
}

/// A temporary directory removed on drop.
mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(super::unique_table("healthhost_test"));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[tokio::test]
async fn sql_reads_typed_values_from_sqlite() {
    let (_dir, url) = sqlite_file(&[
        "CREATE TABLE jobs (id TEXT, next_run_time REAL, n INTEGER)",
        "INSERT INTO jobs VALUES ('a', 1.5, 7), ('b', NULL, 8)",
    ])
    .await;
    let ds = Datasource::parse("db", &url).unwrap();
    let report = sql(
        ds,
        &["db"],
        "SELECT next_run_time, n FROM jobs WHERE n >= ? ORDER BY n",
        "7",
    )
    .await;
    assert_eq!(
        report.message.as_deref(),
        Some("rows:2 first:1.5"),
        "{report:?}"
    );
}

#[tokio::test]
async fn sql_writes_are_denied_on_sqlite_and_change_nothing() {
    let (_dir, url) =
        sqlite_file(&["CREATE TABLE t (n INTEGER)", "INSERT INTO t VALUES (1)"]).await;
    for statement in [
        "DELETE FROM t",
        "DROP TABLE t",
        "INSERT INTO t VALUES (2)",
        "UPDATE t SET n = 5",
    ] {
        let report = sql(
            Datasource::parse("db", &url).unwrap(),
            &["db"],
            statement,
            "",
        )
        .await;
        assert_eq!(report.outcome, Outcome::Fail, "{statement}: {report:?}");
        assert!(
            report.message.unwrap().starts_with("denied:db: "),
            "{statement}"
        );
    }
    let report = sql(
        Datasource::parse("db", &url).unwrap(),
        &["db"],
        "SELECT n FROM t",
        "",
    )
    .await;
    assert_eq!(report.message.as_deref(), Some("rows:1 first:1"));
}

#[tokio::test]
async fn sql_denies_datasources_not_granted_and_names_unknown_ones() {
    let ds = Datasource::parse("db", "sqlite://nowhere.db").unwrap();
    let report = sql(ds, &[], "SELECT 1", "").await;
    assert_eq!(report.message.as_deref(), Some("denied:db"));

    let mut all = Datasources::default();
    all.insert(Datasource::parse("other", "sqlite://nowhere.db").unwrap());
    let runtime = Runtime::new(all).unwrap();
    let grants = Grants {
        sql: SqlPolicy::new(["db"]),
        ..Grants::default()
    };
    let given = settings([("datasource", "db"), ("statement", "SELECT 1")]);
    let report = misbehave(&runtime, grants, given, Limits::default(), "sql").await;
    assert_eq!(report.message.as_deref(), Some("not-configured:db"));
}

#[tokio::test]
async fn sql_on_a_sqlite_file_that_does_not_exist_says_so_without_its_path() {
    let dir = tempdir::Dir::new();
    let missing = dir.path.join("missing.sqlite");
    let url = format!("sqlite://{}", missing.display());
    let report = sql(
        Datasource::parse("db", &url).unwrap(),
        &["db"],
        "SELECT 1",
        "",
    )
    .await;
    let message = report.message.unwrap();
    assert!(
        message.starts_with("database:db: cannot open the database file: it does not exist"),
        "{message}"
    );
    assert!(!message.contains("missing.sqlite"), "{message}");
    assert!(!missing.exists(), "a read-only datasource created its file");
}

#[tokio::test]
async fn sql_on_an_unreachable_database_is_a_database_error() {
    let ds = Datasource::parse("db", "postgres://postgres@127.0.0.1:9/test").unwrap();
    let report = sql(ds, &["db"], "SELECT 1", "").await;
    assert_eq!(report.outcome, Outcome::Fail);
    assert!(report.message.unwrap().starts_with("database:"));
}

/// The SQL tests that are the same on PostgreSQL and MariaDB. Statements name their
/// table `{t}`.
trait ServerCases {
    async fn reads(&self, setup: &str, cases: &[(&str, &str, &str)]);
    async fn refuses_writes(&self, setup: &str, sneaky: &str, refusal: &str);
}

impl ServerCases for Server {
    /// Runs `(statement, params, expected message)` cases through the guest against a
    /// table made by `setup`.
    async fn reads(&self, setup: &str, cases: &[(&str, &str, &str)]) {
        let table = unique_table("hh_read");
        self.exec(setup.replace("{t}", &table)).await;
        for (statement, params, expected) in cases {
            let statement = statement.replace("{t}", &table);
            let report = sql(
                Datasource::parse("db", self.reader_url()).unwrap(),
                &["db"],
                &statement,
                params,
            )
            .await;
            assert_eq!(
                report.message.as_deref(),
                Some(*expected),
                "{statement}: {report:?}"
            );
        }
        self.exec(format!("DROP TABLE {table}")).await;
    }

    /// Each write of [`WRITES`] is refused before it runs (`denied`, the statement's
    /// parse tree), and `sneaky`, a write in the clothes of a query, fails with a
    /// database error whose text contains `refusal` (the read-only transaction); the
    /// table made by `setup` (one row, n = 1) is unchanged. The datasource connects as
    /// the superuser (opted in): read-only holds even for a role that could write.
    async fn refuses_writes(&self, setup: &str, sneaky: &str, refusal: &str) {
        let table = unique_table("hh_write");
        self.exec(setup.replace("{t}", &table)).await;
        let cases = WRITES
            .iter()
            .map(|w| (*w, "denied:db: only a query"))
            .chain([(sneaky, "database:")]);
        for (statement, expected) in cases {
            let statement = statement.replace("{t}", &table);
            let report = sql(
                Datasource::parse("db", self.url())
                    .unwrap()
                    .unsafe_allow_privileged_role(true),
                &["db"],
                &statement,
                "",
            )
            .await;
            assert_eq!(report.outcome, Outcome::Fail, "{statement}: {report:?}");
            let message = report.message.unwrap();
            assert!(message.starts_with(expected), "{statement}: {message}");
            if expected == "database:" {
                assert!(message.contains(refusal), "{statement}: {message}");
            }
        }
        let unchanged = self
            .count(format!("SELECT count(*) FROM {table} WHERE n = 1"))
            .await;
        assert_eq!(unchanged, 1, "the table is unchanged");
        self.exec(format!("DROP TABLE {table}")).await;
    }
}

/// Writes every test tries: rows, schema and truncation.
const WRITES: [&str; 6] = [
    "DELETE FROM {t}",
    "DROP TABLE {t}",
    "INSERT INTO {t} VALUES (2)",
    "UPDATE {t} SET n = 5",
    "CREATE TABLE {t}_x (n int)",
    "TRUNCATE TABLE {t}",
];

#[tokio::test]
async fn sql_reads_typed_values_from_postgres() {
    let setup = "CREATE TABLE {t} (id varchar(10), next_run_time double precision, n int4, ok bool, raw bytea);
         INSERT INTO {t} VALUES ('a', 1.5, 7, true, '\\x0102'), ('b', NULL, 8, false, NULL);";
    let cases = [
        (
            "SELECT next_run_time FROM {t} WHERE n = $1",
            "7",
            "rows:1 first:1.5",
        ),
        ("SELECT n FROM {t} ORDER BY n", "", "rows:2 first:7"),
        ("SELECT ok FROM {t} WHERE id = $1", "a", "rows:1 first:true"),
        (
            "SELECT raw FROM {t} WHERE id = 'a'",
            "",
            "rows:1 first:blob(2)",
        ),
        ("SELECT id FROM {t} WHERE id = 'b'", "", "rows:1 first:b"),
        ("SELECT count(*) FROM {t}", "", "rows:1 first:2"),
        ("SELECT 1", "", "rows:1 first:1"),
    ];
    Server::Postgres(postgres().await)
        .reads(setup, &cases)
        .await;
}

#[tokio::test]
async fn sql_writes_fail_on_postgres_and_change_nothing() {
    let setup = "CREATE TABLE {t} (n int4); INSERT INTO {t} VALUES (1); CREATE SEQUENCE {t}_seq;";
    Server::Postgres(postgres().await)
        .refuses_writes(setup, "SELECT nextval('{t}_seq')", "read-only transaction")
        .await;
}

#[tokio::test]
async fn sql_reads_typed_values_from_mariadb() {
    let setup = "CREATE TABLE {t} (id varchar(10), next_run_time double, n int, raw blob);
         INSERT INTO {t} VALUES ('a', 1.5, 7, x'0102'), ('b', NULL, 8, NULL);";
    let cases = [
        (
            "SELECT next_run_time FROM {t} WHERE n = ?",
            "7",
            "rows:1 first:1.5",
        ),
        ("SELECT n FROM {t} ORDER BY n", "", "rows:2 first:7"),
        (
            "SELECT raw FROM {t} WHERE id = 'a'",
            "",
            "rows:1 first:blob(2)",
        ),
        ("SELECT id FROM {t} WHERE id = ?", "b", "rows:1 first:b"),
        ("SELECT count(*) FROM {t}", "", "rows:1 first:2"),
        ("SELECT 1", "", "rows:1 first:1"),
    ];
    Server::MariaDb(mariadb().await).reads(setup, &cases).await;
}

#[tokio::test]
async fn sql_writes_fail_on_mariadb_and_change_nothing() {
    let setup = "CREATE TABLE {t} (n int); INSERT INTO {t} VALUES (1); CREATE SEQUENCE {t}_seq;";
    Server::MariaDb(mariadb().await)
        .refuses_writes(setup, "SELECT NEXTVAL({t}_seq)", "READ ONLY")
        .await;
}

// ------------------------------------------------------------- SQL under attack

/// Runs each `(statement, expected message prefix)` through the guest on datasource
/// `db` = `url`, all on one runtime (so one pool: what a run leaves on a connection
/// would reach the next).
async fn sql_cases(datasource: Datasource, cases: &[(&str, &str)]) {
    let mut all = Datasources::default();
    all.insert(datasource);
    let runtime = Runtime::new(all).unwrap();
    for (statement, expected) in cases {
        let grants = Grants {
            sql: SqlPolicy::new(["db"]),
            ..Grants::default()
        };
        let given = settings([("datasource", "db"), ("statement", statement)]);
        let report = misbehave(&runtime, grants, given, quick(2000), "sql").await;
        let message = report.message.clone().unwrap_or_default();
        assert!(
            message.starts_with(expected),
            "{statement}: expected {expected}…, got {report:?}"
        );
    }
}

#[tokio::test]
async fn sql_on_sqlite_allows_only_reading_and_refuses_the_rest_as_denied() {
    let dir = tempdir::Dir::new();
    let elsewhere = dir.path.join("other.sqlite");
    sqlite(&elsewhere).await.close().await;
    let copy = dir.path.join("copy.sqlite");
    let (_db, url) = sqlite_file(&["CREATE TABLE t (n INTEGER)", "INSERT INTO t VALUES (1)"]).await;
    let file = url.trim_start_matches("sqlite://").to_owned();
    let before = std::fs::read(&file).unwrap();
    let denied = "denied:db: ";
    let attach_existing = format!("ATTACH '{}' AS x", elsewhere.display());
    let attach_missing = format!("ATTACH '{}/missing.sqlite' AS x", dir.path.display());
    let vacuum_into = format!("VACUUM INTO '{}'", copy.display());
    sql_cases(
        Datasource::parse("db", &url).unwrap(),
        &[
            // Reaching other files, or writing one.
            (&attach_existing, denied),
            (&attach_missing, denied),
            ("DETACH main", denied),
            (&vacuum_into, denied),
            ("VACUUM", denied),
            ("SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')", denied),
            // State that would outlive the run on a pooled connection.
            ("CREATE TEMP TABLE t (n INTEGER)", denied),
            ("CREATE TEMP VIEW v AS SELECT 2 AS n", denied),
            ("CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", denied),
            ("CREATE VIRTUAL TABLE temp.vt USING fts5(x)", denied),
            ("BEGIN", denied),
            ("SAVEPOINT s", denied),
            ("PRAGMA query_only = 0", denied),
            ("PRAGMA temp_store = memory", denied),
            ("PRAGMA user_version = 7", denied),
            ("ANALYZE", denied),
            // Reading still works, and main.t is the real table.
            ("SELECT n FROM t", "rows:1 first:1"),
            ("SELECT n FROM main.t", "rows:1 first:1"),
            ("PRAGMA user_version", "rows:1 first:0"),
            ("PRAGMA table_info(t)", "rows:1 first:0"),
            ("SELECT name FROM pragma_table_info('t')", "rows:1 first:n"),
            (
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT count(*) FROM c",
                "rows:1 first:100",
            ),
            // One value past the cap is refused before it is built.
            ("SELECT zeroblob(900000000)", "too-large:4194304"),
            ("SELECT length(randomblob(900000000))", "too-large:4194304"),
            // printf makes NULL rather than a string past the limit.
            ("SELECT printf('%.*c', 900000000, 'x')", "rows:1 first:null"),
            ("SELECT group_concat(zeroblob(1000000)) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5)", "too-large:4194304"),
        ],
    )
    .await;
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the database file is unchanged"
    );
    assert!(!copy.exists(), "VACUUM INTO wrote a file");
}

#[tokio::test]
async fn sql_attach_answers_the_same_whether_a_path_exists_or_not() {
    let dir = tempdir::Dir::new();
    let existing = dir.path.join("other.sqlite");
    sqlite(&existing).await.close().await;
    let (_db, url) = sqlite_file(&["CREATE TABLE t (n INTEGER)"]).await;
    let mut messages = Vec::new();
    for path in [existing, dir.path.join("missing.sqlite")] {
        let statement = format!("ATTACH '{}' AS x", path.display());
        let report = sql(
            Datasource::parse("db", &url).unwrap(),
            &["db"],
            &statement,
            "",
        )
        .await;
        messages.push(report.message.unwrap());
    }
    assert_eq!(messages[0], messages[1]);
}

#[tokio::test]
async fn sql_session_state_does_not_outlive_a_run_on_postgres() {
    let admin = Server::Postgres(postgres().await);
    let key: i64 = 7_000_000 + i64::from(std::process::id());
    // What the statement's screen refuses, a function of the operator's may still do
    // in the plugin's session: the session reset is what keeps it from the next run.
    let sneaky = unique_table("hh_sneaky");
    admin
        .exec(format!(
            "CREATE OR REPLACE FUNCTION {sneaky}() RETURNS text LANGUAGE sql AS $$ \
         SELECT pg_advisory_lock({key})::text || set_config('application_name', 'forged', false) $$"
        ))
        .await;
    let through_a_function = format!("SELECT {sneaky}()");
    sql_cases(
        Datasource::parse("db", POSTGRES_READER_URL).unwrap(),
        &[
            (
                &format!("SELECT pg_advisory_lock({key})::text"),
                "denied:db: pg_advisory_lock()",
            ),
            (
                "SELECT set_config('application_name', 'forged', false)",
                "denied:db: set_config()",
            ),
            ("PREPARE hh_left AS SELECT 1", "denied:db: only a query"),
            (
                "DECLARE hh_cursor CURSOR WITH HOLD FOR SELECT 1",
                "denied:db: only a query",
            ),
            ("LISTEN hh_channel", "denied:db: only a query"),
            (
                "DO $$ BEGIN PERFORM set_config('application_name', 'forged', false); END $$",
                "denied:db:",
            ),
            (
                "SELECT pg_terminate_backend(pg_backend_pid())",
                "denied:db: pg_terminate_backend()",
            ),
            (&through_a_function, "rows:1 first:forged"),
            // A later run sees a session like a new one.
            (
                "SELECT current_setting('application_name')",
                "rows:1 first:",
            ),
            (
                "SELECT count(*) FROM pg_listening_channels()",
                "rows:1 first:0",
            ),
        ],
    )
    .await;
    admin.exec(format!("DROP FUNCTION {sneaky}()")).await;
    let held = admin
        .count(format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {key}"
        ))
        .await;
    assert_eq!(held, 0, "the advisory lock outlived its run");
}

#[tokio::test]
async fn sql_session_state_does_not_outlive_a_run_on_mariadb() {
    let admin = Server::MariaDb(mariadb().await);
    let lock = unique_table("hh_lock");
    // What the statement's screen refuses, a function of the operator's may still do
    // in the plugin's session: closing the connection is what keeps it from the next.
    let sneaky = unique_table("hh_sneaky");
    admin.exec(format!(
        "CREATE FUNCTION {sneaky}() RETURNS INT RETURN GET_LOCK('{lock}', 0) + (@hh_forged := 5); \
         GRANT EXECUTE ON FUNCTION test.{sneaky} TO 'healthhost_reader'@'%'; \
         GRANT EXECUTE ON FUNCTION test.{sneaky} TO 'healthhost_reader'@'localhost';"
    )).await;
    let through_a_function = format!("SELECT {sneaky}()");
    sql_cases(
        Datasource::parse("db", MARIADB_READER_URL).unwrap(),
        &[
            (
                &format!("SELECT GET_LOCK('{lock}', 0)"),
                "denied:db: get_lock()",
            ),
            (
                "SET @@session.sql_mode = 'ANSI_QUOTES'",
                "denied:db: only a query",
            ),
            // It would lift the host's statement time limit for itself.
            (
                "SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(5)",
                "denied:db:",
            ),
            ("KILL CONNECTION_ID()", "denied:db:"),
            (&through_a_function, "rows:1 first:6"),
            // A later run sees a session like a new one.
            ("SELECT @hh_forged", "rows:1 first:null"),
            (
                "SELECT @@session.sql_mode LIKE '%ANSI_QUOTES%'",
                "rows:1 first:0",
            ),
        ],
    )
    .await;
    admin.exec(format!("DROP FUNCTION {sneaky}")).await;
    let free = admin.count(format!("SELECT IS_FREE_LOCK('{lock}')")).await;
    assert_eq!(free, 1, "the named lock outlived its run");
}

#[tokio::test]
async fn sql_results_past_the_row_cap_answer_too_large_at_once_on_postgres() {
    postgres().await;
    // Ten million rows streamed (no materialised set): reading them all would take
    // longer than the 2 s the call has.
    sql_cases(
        Datasource::parse("db", POSTGRES_READER_URL).unwrap(),
        &[
            (
                "SELECT a FROM generate_series(1, 4000) a, generate_series(1, 2500) b",
                "too-large:10000",
            ),
            ("SELECT repeat('x', 5000000)", "too-large:4194304"),
            ("SELECT 1", "rows:1 first:1"),
        ],
    )
    .await;
}

#[tokio::test]
async fn sql_results_past_the_caps_are_too_large_on_mariadb() {
    mariadb().await;
    sql_cases(
        Datasource::parse("db", MARIADB_READER_URL).unwrap(),
        &[
            ("SELECT seq FROM seq_1_to_20000", "too-large:10000"),
            // Past max_allowed_packet the server makes NULL, not a huge value.
            ("SELECT REPEAT('x', 500000000)", "rows:1 first:null"),
            ("SELECT REPEAT('x', 5000000)", "too-large:4194304"),
            ("SELECT 1", "rows:1 first:1"),
        ],
    )
    .await;
}

#[tokio::test]
async fn sql_roles_with_server_powers_are_refused_unless_allowed() {
    postgres().await;
    mariadb().await;
    let denied = "denied:db: its role can reach the database server's programs or files";
    for url in [POSTGRES_URL, MARIADB_URL] {
        sql_cases(
            Datasource::parse("db", url).unwrap(),
            &[("SELECT 1", denied)],
        )
        .await;
        sql_cases(
            Datasource::parse("db", url)
                .unwrap()
                .unsafe_allow_privileged_role(true),
            &[("SELECT 1", "rows:1 first:1")],
        )
        .await;
    }
    for url in [POSTGRES_READER_URL, MARIADB_READER_URL] {
        let ds = Datasource::parse("db", url).unwrap();
        assert!(ds.check_role().await.is_ok(), "{url}");
    }
    let err = Datasource::parse("db", POSTGRES_URL)
        .unwrap()
        .check_role()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("role 'postgres' holds superuser"),
        "{err}"
    );
    let err = Datasource::parse("db", MARIADB_URL)
        .unwrap()
        .check_role()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FILE, SUPER"), "{err}");
}

#[tokio::test]
async fn a_role_is_judged_by_what_its_sessions_can_do_through_any_role_path() {
    // PostgreSQL: EXECUTE on another overload of a file-reading function, held by a
    // role the login role reaches only through SET ROLE (a NOINHERIT membership).
    let admin = Server::Postgres(postgres().await);
    let (login, holder) = (unique_table("hh_login"), unique_table("hh_holder"));
    admin
        .exec(format!(
            "CREATE ROLE {holder} NOLOGIN; \
         GRANT EXECUTE ON FUNCTION pg_read_file(text, bigint, bigint) TO {holder}; \
         CREATE ROLE {login} LOGIN NOINHERIT; GRANT {holder} TO {login};"
        ))
        .await;
    let url = format!("postgres://{login}@127.0.0.1:5432/test");
    let result = Datasource::parse("db", &url).unwrap().check_role().await;
    admin.exec(format!(
        "DROP ROLE {login}; REVOKE ALL ON FUNCTION pg_read_file(text, bigint, bigint) FROM {holder}; \
         DROP ROLE {holder};"
    )).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("EXECUTE on pg_read_file(text,bigint,bigint)"),
        "{err}"
    );

    // MariaDB: FILE through a role granted to a role, enabled by default or not.
    let admin = Server::MariaDb(mariadb().await);
    for default in [true, false] {
        let (login, middle, holder) = (
            unique_table("hh_login"),
            unique_table("hh_mid"),
            unique_table("hh_file"),
        );
        let set_default = if default {
            format!("SET DEFAULT ROLE {middle} FOR '{login}'@'%';")
        } else {
            String::new()
        };
        admin
            .exec(format!(
                "CREATE ROLE {holder}; GRANT FILE ON *.* TO {holder}; \
             CREATE ROLE {middle}; GRANT {holder} TO {middle}; \
             CREATE USER '{login}'@'%'; GRANT SELECT ON test.* TO '{login}'@'%'; \
             GRANT {middle} TO '{login}'@'%'; {set_default}"
            ))
            .await;
        let url = format!("mysql://{login}@127.0.0.1:3306/test");
        let result = Datasource::parse("db", &url).unwrap().check_role().await;
        admin
            .exec(format!(
                "DROP USER '{login}'@'%'; DROP ROLE {middle}; DROP ROLE {holder};"
            ))
            .await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("holds FILE"), "default role {default}: {err}");
    }
}

#[tokio::test]
async fn sql_server_files_and_programs_stay_out_of_reach_of_a_read_only_role() {
    let admin = Server::Postgres(postgres().await);
    mariadb().await;
    // Behind the statement's screen, the role: a function of the operator's that
    // reads a file runs with the plugin's role, which may not.
    let reads = unique_table("hh_reads");
    admin
        .exec(format!(
            "CREATE OR REPLACE FUNCTION {reads}() RETURNS text LANGUAGE sql \
         AS $$ SELECT pg_read_file('/etc/hostname') $$"
        ))
        .await;
    let through_a_function = format!("SELECT {reads}()");
    let marker = std::env::temp_dir().join(unique_table("hh_pwned"));
    let program = format!("COPY (SELECT 1) TO PROGRAM 'touch {}'", marker.display());
    let copy_to = format!("COPY (SELECT 1) TO '{}'", marker.display());
    sql_cases(
        Datasource::parse("db", POSTGRES_READER_URL).unwrap(),
        &[
            (&program, "denied:db: only a query"),
            (&copy_to, "denied:db: only a query"),
            (
                "SELECT pg_read_file('/etc/hostname')",
                "denied:db: pg_read_file()",
            ),
            ("SELECT * FROM pg_ls_dir('.')", "denied:db: pg_ls_dir()"),
            (&through_a_function, "database:permission denied"),
        ],
    )
    .await;
    let outfile = format!("SELECT 1 INTO OUTFILE '{}'", marker.display());
    sql_cases(
        Datasource::parse("db", MARIADB_READER_URL).unwrap(),
        &[
            (&outfile, "denied:db:"),
            (
                "SELECT LOAD_FILE('/etc/hostname')",
                "denied:db: load_file()",
            ),
        ],
    )
    .await;
    admin.exec(format!("DROP FUNCTION {reads}()")).await;
    assert!(!marker.exists(), "a plugin wrote {}", marker.display());
}
