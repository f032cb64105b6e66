//! The `sql` capability: read-only queries on datasources the operator defined.
//!
//! Policy: [`SqlPolicy`], the datasource names a check was granted (none by default).
//! Datasources: [`Datasources`], defined once by the operator (name → URL of a SQLite,
//! PostgreSQL or MySQL/MariaDB database); a plugin never sees a URL. Pools connect
//! lazily on first use, so a database that is down is the check's failure, not the
//! host's. Per-run state: [`SqlState`].
//!
//! What a statement may do is bounded by the connection; each dialect's module says
//! how (`sqlite`, `postgres`, `mysql`). In front of that, a PostgreSQL or MySQL
//! statement is judged from its parse tree and refused when it is not one query or
//! reaches beyond itself (`screen`). On every dialect:
//! - it only reads, and nothing it does outlives it: a connection goes back to the
//!   pool only after a statement that ran to its end and a session reset (`Lease`);
//!   any other connection is closed;
//! - it stops on the database when the call's time is up, not just in the host;
//! - its result stops at [`SQL_MAX_ROWS`] rows and [`SQL_MAX_BYTES`] bytes, and the
//!   rest is not read;
//! - a datasource whose role can run programs or reach files on the database server
//!   is refused unless the operator opted in ([`Datasource::check_role`]);
//! - under `serve` and `check` it runs in a worker process ([`worker`]), killed when
//!   the call is dropped, so neither a row the driver holds whole nor a SQLite
//!   function call of minutes can take the host's memory or outlive its run.

mod datasource;
mod mysql;
mod postgres;
mod screen;
mod sqlite;
pub mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::database::HasStatementCache;
use sqlx::pool::PoolConnection;
use sqlx::{
    AssertSqlSafe, Column, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool,
    Row, Type, TypeInfo, ValueRef,
};
use tracing::Instrument;

use super::bindings::healthhost::plugin::sql::{self as wit, Error, Rows, Value};
use super::{Noted, Refusal, RunContext, held};
use crate::capabilities::fixtures::{Fixtures, Miss};
use crate::limits::{Deadline, SQL_MAX_BYTES, SQL_MAX_ROWS};
use crate::scrub::Scrubber;

// ---------------------------------------------------------------------------------
// Policy and datasources

use crate::config::grants::SqlPolicy;
use crate::dbpool::DbPool;
use crate::dburl::{Kind, mysql_url};
use datasource::Connections;
pub use datasource::{Datasource, Datasources, RoleError};

// ---------------------------------------------------------------------------------
// Per-run state

/// What the `sql` import of one run can reach.
pub struct SqlState {
    pub(crate) check: Arc<str>,
    pub(crate) policy: Arc<SqlPolicy>,
    pub(crate) datasources: Arc<Datasources>,
    pub(crate) scrubber: Arc<Scrubber>,
    pub(crate) deadline: Deadline,
    /// Canned results instead of the databases (`healthhost check --fixtures`).
    pub(crate) fixtures: Option<Arc<Fixtures>>,
    /// Queries refused, for diagnostics.
    pub(crate) refused: Noted<Refusal>,
}

impl SqlState {
    /// The state of one run allowed `policy` over the operator's `datasources`.
    pub fn new(
        run: &RunContext,
        policy: Arc<SqlPolicy>,
        datasources: Arc<Datasources>,
    ) -> SqlState {
        SqlState {
            check: run.check.clone(),
            policy,
            datasources,
            scrubber: run.scrubber.clone(),
            deadline: run.deadline,
            fixtures: run.fixtures.clone(),
            refused: Noted::default(),
        }
    }
}

// ---------------------------------------------------------------------------------
// Host implementation

impl wit::Host for SqlState {
    async fn query(
        &mut self,
        datasource: String,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Rows, Error> {
        // Kept for a refusal: the plugin's statement.
        let call = format!("{datasource}: {statement}");
        let (result, refused) = self.run(datasource, statement, params).await;
        if refused && let Err(error) = &result {
            self.refused.push(Refusal {
                capability: "sql",
                call: held(&self.scrubber, &call),
                why: held(&self.scrubber, &describe_refusal(error)),
            });
        }
        result
    }
}

/// The text of a refused query's error as a plugin author reads it.
fn describe_refusal(error: &Error) -> String {
    match error {
        // The datasource not granted, or the statement refused (its reason named).
        Error::Denied(what) => format!("denied: {what}"),
        Error::NotConfigured(name) => format!("no datasource '{name}' is defined"),
        Error::Database(text) => text.clone(),
        Error::Timeout | Error::TooLarge(_) => format!("{error:?}"),
    }
}

impl SqlState {
    /// The query's result, and whether the host refused it (rather than the database
    /// failing it).
    async fn run(
        &self,
        datasource: String,
        statement: String,
        params: Vec<Value>,
    ) -> (Result<Rows, Error>, bool) {
        if !self.policy.allows(&datasource) {
            return (Err(Error::Denied(datasource)), true);
        }
        // Judged from the parse tree before anything runs, fixtures included, so an
        // author meets the refusal `serve` would give.
        if let Some(source) = self.datasources.get(&datasource)
            && let Err(reason) = screen::screen(source.kind(), &statement)
        {
            return (Err(Error::Denied(format!("{datasource}: {reason}"))), true);
        }
        let timeout = self.deadline.host_call_timeout(None);
        if let Some(fixtures) = &self.fixtures {
            return match tokio::time::timeout(timeout, fixtures.sql(&datasource, &statement)).await
            {
                Ok(Ok(rows)) => (Ok(rows), false),
                Ok(Err(Miss::NoFixture(text))) => (Err(Error::Database(text)), true),
                Ok(Err(Miss::Answer(error))) => (Err(error), false),
                Err(_elapsed) => (Err(Error::Timeout), false),
            };
        }
        let Some(source) = self.datasources.get(&datasource).cloned() else {
            return (Err(Error::NotConfigured(datasource)), true);
        };
        let call = Call {
            statement,
            params,
            timeout,
            stop_at: Instant::now() + timeout,
        };
        let span = tracing::debug_span!("sql", check = %self.check, datasource = %datasource);
        let query = async {
            source.check_role_if_due().await?;
            source.pool().await.query(call).await
        };
        let scrub = |text: &str| self.scrubber.scrub(text).into_owned();
        let failed = |error| (Err(error), false);
        match tokio::time::timeout(timeout, query).instrument(span).await {
            Ok(Ok(rows)) => (Ok(rows), false),
            // The driver's error, or a worker's answer: its texts scrubbed here.
            // SQLite's authorizer refuses what is not a read.
            Ok(Err(QueryError::Sqlx(e))) => {
                let error = driver_error(&source, &e);
                let refused = matches!(error, Error::Denied(_));
                (Err(scrubbed(error, scrub)), refused)
            }
            Ok(Err(QueryError::Role(e @ RoleError::Privileged { .. }))) => {
                tracing::warn!(check = %self.check, "{e}");
                (
                    Err(Error::Denied(format!(
                        "{datasource}: its role can reach the database server's programs or files; the operator must connect as a read-only role"
                    ))),
                    true,
                )
            }
            // The database could not be reached: the driver's reason, as for a query.
            Ok(Err(QueryError::Role(RoleError::Unreachable { reason, .. }))) => {
                failed(Error::Database(scrub(&reason)))
            }
            Ok(Err(QueryError::Plugin(error))) => {
                let refused = matches!(error, Error::Denied(_));
                (Err(scrubbed(error, scrub)), refused)
            }
            Err(_elapsed) => failed(Error::Timeout),
        }
    }
}

/// `error` with its database text scrubbed.
fn scrubbed(error: Error, scrub: impl Fn(&str) -> String) -> Error {
    match error {
        Error::Database(text) => Error::Database(scrub(&text)),
        other => other,
    }
}

/// The contract's error for driver error `e` on `datasource`: what the dialect's
/// restrictions refused, typed, or the database's own message (not yet scrubbed).
fn driver_error(datasource: &Datasource, e: &sqlx::Error) -> Error {
    match datasource.kind() {
        Kind::Sqlite => sqlite::error(datasource.name(), e),
        Kind::Postgres | Kind::MySql => None,
    }
    .unwrap_or_else(|| Error::Database(describe(e)))
}

impl Connections {
    /// Runs `call` on a connection of this pool, or in one of its workers.
    async fn query(&self, call: Call) -> Result<Rows, QueryError> {
        match self {
            Connections::Pool(DbPool::Sqlite(pool)) => sqlite::query(pool, call).await,
            Connections::Pool(DbPool::Postgres(pool)) => postgres::query(pool, call).await,
            Connections::Pool(DbPool::MySql(pool)) => mysql::query(pool, call).await,
            Connections::Workers(workers) => workers.query(call).await,
        }
    }
}

/// One query as the plugin asked for it, with its time budget.
struct Call {
    statement: String,
    params: Vec<Value>,
    /// How long the call may take, connecting included.
    timeout: Duration,
    /// When the statement must stop on the database too.
    stop_at: Instant,
}

enum QueryError {
    Sqlx(sqlx::Error),
    Role(RoleError),
    Plugin(Error),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Sqlx(e)
    }
}

impl From<RoleError> for QueryError {
    fn from(e: RoleError) -> Self {
        QueryError::Role(e)
    }
}

impl QueryError {
    /// Whether the statement ran to its end on the database, so that its connection
    /// is in a known state: it finished, or the database refused or failed it. A
    /// result cut at a cap, a decoding failure or a broken connection leave the rest
    /// of the result unread.
    fn statement_finished(result: &Result<Rows, QueryError>) -> bool {
        matches!(
            result,
            Ok(_) | Err(QueryError::Sqlx(sqlx::Error::Database(_)))
        )
    }
}

/// The database's own message when there is one, else the driver's error.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_owned(),
        other => other.to_string(),
    }
}

/// A pooled connection that goes back to the pool only through [`Lease::release`],
/// after a statement that finished and a session that was reset. Dropped any other
/// way — the call timed out, the result was cut at a cap, the reset failed — the
/// connection is closed, never handed to another check with a statement still
/// running or state left behind.
struct Lease<DB: Database>(Option<PoolConnection<DB>>);

impl<DB: Database> Lease<DB> {
    async fn acquire(pool: &Pool<DB>) -> Result<Self, sqlx::Error> {
        probe(pool).await?;
        Ok(Lease(Some(pool.acquire().await?)))
    }

    fn conn(&mut self) -> &mut DB::Connection {
        self.0
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }

    /// Hands the connection back to the pool.
    fn release(mut self) {
        drop(self.0.take());
    }
}

impl<DB: Database> Drop for Lease<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// Connects once outside the pool when it holds no connection, so that a database that
/// refuses connections fails at once with the driver's error: the pool itself would
/// retry until its timeout and report only that it timed out.
async fn probe<DB: Database>(pool: &Pool<DB>) -> Result<(), sqlx::Error> {
    if pool.size() == 0 {
        let options = pool.connect_options();
        let conn = <DB::Connection as sqlx::Connection>::connect_with(&options).await?;
        let _ = sqlx::Connection::close(conn).await;
    }
    Ok(())
}

/// Runs `call`'s statement and collects its rows, up to the row and byte caps. The
/// statement is never prepared by name, so nothing of it stays on the connection.
async fn fetch<'c, DB, E>(
    executor: E,
    call: Call,
    decode: fn(&DB::Row, usize) -> Result<Value, Error>,
) -> Result<Rows, QueryError>
where
    DB: Database + HasStatementCache,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    E: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query::<DB>(AssertSqlSafe(call.statement)).persistent(false);
    for param in call.params {
        query = match param {
            Value::Null => query.bind(None::<String>),
            Value::Boolean(b) => query.bind(b),
            Value::Integer(i) => query.bind(i),
            Value::Real(f) => query.bind(f),
            Value::Text(s) => query.bind(s),
            Value::Blob(b) => query.bind(b),
        };
    }
    let mut stream = query.fetch(executor);
    let mut out = Rows {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    let mut bytes = 0u64;
    while let Some(row) = stream.try_next().await? {
        if out.rows.len() as u64 >= SQL_MAX_ROWS {
            return Err(QueryError::Plugin(Error::TooLarge(SQL_MAX_ROWS)));
        }
        if out.columns.is_empty() {
            out.columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
        }
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            let value = decode(&row, i).map_err(QueryError::Plugin)?;
            bytes += value_size(&value);
            if bytes > SQL_MAX_BYTES {
                return Err(QueryError::Plugin(Error::TooLarge(SQL_MAX_BYTES)));
            }
            values.push(value);
        }
        out.rows.push(values);
    }
    Ok(out)
}

fn value_size(value: &Value) -> u64 {
    match value {
        Value::Text(s) => s.len() as u64,
        Value::Blob(b) => b.len() as u64,
        _ => 8,
    }
}

/// Decodes column `i` of `row` as `T`.
fn get<'r, DB: Database, T: Decode<'r, DB>>(row: &'r DB::Row, i: usize) -> Result<T, String>
where
    usize: ColumnIndex<DB::Row>,
{
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    T::decode(raw).map_err(|e| format!("column {i}: {e}"))
}

/// A column whose type the contract has no value for.
fn unsupported(type_name: &str, i: usize, cast: &str) -> String {
    format!("column {i} has unsupported type {type_name}: cast it in the query, e.g. {cast}")
}

/// The type of column `i`'s value, and whether it is null.
fn raw_type<DB: Database>(row: &DB::Row, i: usize) -> Result<(String, bool), String>
where
    usize: ColumnIndex<DB::Row>,
{
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    Ok((raw.type_info().name().to_ascii_uppercase(), raw.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dburl::normalize_url;

    #[test]
    fn parses_datasource_urls_by_scheme() {
        let cases = [
            ("sqlite:data/app.db", Kind::Sqlite),
            ("sqlite://data/app.db", Kind::Sqlite),
            ("postgres://postgres@127.0.0.1:5432/test", Kind::Postgres),
            ("postgresql://u:p@db/app", Kind::Postgres),
            ("mysql://root@127.0.0.1:3306/test", Kind::MySql),
            ("mariadb://root@127.0.0.1:3306/test", Kind::MySql),
        ];
        for (url, kind) in cases {
            assert_eq!(
                Datasource::parse("main", url).unwrap().kind(),
                kind,
                "{url}"
            );
        }
    }

    #[test]
    fn sqlalchemy_urls_become_sqlx_urls() {
        let cases = [
            (
                "postgresql+asyncpg://bot:pw@db:5432/bot",
                "postgresql://bot:pw@db:5432/bot",
            ),
            (
                "postgresql+psycopg2://bot@db/bot",
                "postgresql://bot@db/bot",
            ),
            ("mysql+aiomysql://bot@db/bot", "mysql://bot@db/bot"),
            (
                "mysql+pymysql://bot@db/bot?charset=utf8mb4",
                "mysql://bot@db/bot?charset=utf8mb4",
            ),
            ("sqlite+aiosqlite:///data/bot.db", "sqlite://data/bot.db"),
            (
                "sqlite+aiosqlite:////var/lib/bot.db",
                "sqlite:///var/lib/bot.db",
            ),
            ("sqlite+aiosqlite://", "sqlite::memory:"),
            ("postgres://u@h/d", "postgres://u@h/d"),
            ("sqlite:data/app.db", "sqlite:data/app.db"),
        ];
        for (url, sqlx) in cases {
            assert_eq!(normalize_url(url), sqlx, "{url}");
        }
        let ds = Datasource::parse("main", "postgresql+asyncpg://bot@db/bot").unwrap();
        assert_eq!(
            (ds.kind(), ds.url()),
            (Kind::Postgres, "postgresql://bot@db/bot")
        );
    }

    #[test]
    fn mariadb_urls_become_mysql_urls() {
        assert_eq!(mysql_url("mariadb://root@db/test"), "mysql://root@db/test");
        assert_eq!(mysql_url("MariaDB://root@db/test"), "mysql://root@db/test");
        assert_eq!(mysql_url("mysql://root@db/test"), "mysql://root@db/test");
        assert_eq!(mysql_url("sqlite:x"), "sqlite:x");
    }

    #[test]
    fn rejects_unknown_schemes_and_bad_names() {
        let err = Datasource::parse("main", "redis://127.0.0.1")
            .err()
            .unwrap();
        assert!(err.to_string().contains("'redis'"), "{err}");
        let err = Datasource::parse("a b", "sqlite:x.db").err().unwrap();
        assert!(err.to_string().contains("'a b'"), "{err}");
    }

    #[test]
    fn collects_url_passwords_as_secrets() {
        let mut all = Datasources::default();
        all.insert(Datasource::parse("pg", "postgres://app:s3cret@db:5432/app").unwrap());
        all.insert(Datasource::parse("lite", "sqlite:x.db").unwrap());
        assert_eq!(all.secrets().collect::<Vec<_>>(), ["s3cret"]);
    }

    #[test]
    fn policy_grants_only_named_datasources() {
        let policy = SqlPolicy::new(["main"]);
        assert!(policy.allows("main"));
        assert!(!policy.allows("other"));
        assert!(!SqlPolicy::default().allows("main"));
    }
}
