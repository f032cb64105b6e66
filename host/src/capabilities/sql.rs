//! The `sql` capability: read-only queries on datasources the operator defined.
//!
//! Policy: [`SqlPolicy`], the datasource names a check was granted (none by default).
//! Datasources: [`Datasources`], defined once by the operator (name → URL of a SQLite,
//! PostgreSQL or MySQL/MariaDB database); a plugin never sees a URL. Pools connect
//! lazily on first use, so a database that is down is the check's failure, not the
//! host's. Per-run state: [`SqlState`].
//!
//! Read-only is enforced by the connection, never by inspecting SQL text: SQLite opens
//! the file read-only, PostgreSQL runs each statement in a `READ ONLY` transaction,
//! MySQL/MariaDB in a read-only session *and* transaction (a read-only transaction
//! alone lets DDL through, because DDL commits implicitly). Every transaction is rolled
//! back. Operators should still grant a database role that can only read.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use futures_util::TryStreamExt;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool};
use sqlx::postgres::{PgConnectOptions, PgPool, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqlitePool};
use sqlx::{
    AssertSqlSafe, Column, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool,
    Row, Type, TypeInfo, ValueRef,
};
use tokio::sync::OnceCell;
use tracing::Instrument;

use super::bindings::healthhost::plugin::sql::{self as wit, Error, Rows, Value};
use crate::limits::{Deadline, SQL_MAX_BYTES, SQL_MAX_ROWS, SQL_POOL_SIZE};
use crate::scrub::Scrubber;

// ---------------------------------------------------------------------------------
// Policy and datasources

/// The datasource names a check may query. The default grants none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlPolicy {
    names: BTreeSet<String>,
}

impl SqlPolicy {
    /// A policy granting these datasource names.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        SqlPolicy {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the check may query `datasource`.
    pub fn allows(&self, datasource: &str) -> bool {
        self.names.contains(datasource)
    }

    /// The granted names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// The database kinds a datasource can be, chosen by its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

impl Kind {
    /// The kind of a database URL: `sqlite:`, `postgres:`/`postgresql:`,
    /// `mysql:`/`mariadb:`.
    pub fn of_url(url: &str) -> Option<Kind> {
        match url.split(':').next()?.to_ascii_lowercase().as_str() {
            "sqlite" => Some(Kind::Sqlite),
            "postgres" | "postgresql" => Some(Kind::Postgres),
            "mysql" | "mariadb" => Some(Kind::MySql),
            _ => None,
        }
    }
}

/// sqlx knows MariaDB URLs as `mysql://`.
pub fn mysql_url(url: &str) -> String {
    match url.get(..8) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mariadb:") => format!("mysql:{}", &url[8..]),
        _ => url.to_owned(),
    }
}

/// A datasource URL that cannot be used; carries the datasource name and why.
#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    #[error(
        "datasource '{name}': unsupported url scheme '{scheme}' (expected sqlite:, postgres:// or mysql://, e.g. \"postgres://user@127.0.0.1:5432/app\")"
    )]
    Scheme { name: String, scheme: String },
    #[error("datasource '{name}': invalid url: {reason}")]
    Url { name: String, reason: String },
    #[error("datasource name '{0}' is invalid: use letters, digits, '-' and '_'")]
    Name(String),
}

#[derive(Clone)]
enum Options {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
}

#[derive(Clone)]
enum AnyPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// One operator-defined database. The pool is created on first use (a clone made
/// before that creates its own).
#[derive(Clone)]
pub struct Datasource {
    name: String,
    url: String,
    kind: Kind,
    options: Options,
    password: Option<String>,
    pool: OnceCell<AnyPool>,
}

impl Datasource {
    /// Parses a datasource URL: `sqlite:PATH` / `sqlite://PATH`, `postgres://...` /
    /// `postgresql://...`, `mysql://...` / `mariadb://...`.
    pub fn parse(name: &str, url: &str) -> Result<Datasource, DatasourceError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(DatasourceError::Name(name.to_owned()));
        }
        let invalid = |reason: String| DatasourceError::Url {
            name: name.to_owned(),
            reason,
        };
        let kind = Kind::of_url(url).ok_or_else(|| DatasourceError::Scheme {
            name: name.to_owned(),
            scheme: url.split(':').next().unwrap_or_default().to_owned(),
        })?;
        let options = match kind {
            Kind::Sqlite => Options::Sqlite(
                SqliteConnectOptions::from_str(url)
                    .map_err(|e| invalid(e.to_string()))?
                    .read_only(true)
                    .create_if_missing(false),
            ),
            Kind::Postgres => Options::Postgres(
                PgConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?,
            ),
            Kind::MySql => Options::MySql(
                MySqlConnectOptions::from_str(&mysql_url(url))
                    .map_err(|e| invalid(e.to_string()))?,
            ),
        };
        let password = url::Url::parse(url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
            .filter(|p| !p.is_empty());
        Ok(Datasource {
            name: name.to_owned(),
            url: url.to_owned(),
            kind,
            options,
            password,
            pool: OnceCell::new(),
        })
    }

    /// The database kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The datasource's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The datasource's URL (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn pool(&self) -> &AnyPool {
        self.pool
            .get_or_init(|| async {
                fn options<DB: Database>() -> sqlx::pool::PoolOptions<DB> {
                    sqlx::pool::PoolOptions::new()
                        .max_connections(SQL_POOL_SIZE)
                        .min_connections(0)
                }
                match &self.options {
                    Options::Sqlite(o) => AnyPool::Sqlite(options().connect_lazy_with(o.clone())),
                    Options::Postgres(o) => {
                        AnyPool::Postgres(options().connect_lazy_with(o.clone()))
                    }
                    Options::MySql(o) => AnyPool::MySql(options().connect_lazy_with(o.clone())),
                }
            })
            .await
    }
}

/// Names the datasource and its kind, never its URL (which may hold a password).
impl std::fmt::Debug for Datasource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datasource")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Every datasource the operator defined, by name.
#[derive(Default)]
pub struct Datasources {
    by_name: BTreeMap<String, Arc<Datasource>>,
}

impl Datasources {
    /// Adds a datasource, replacing one of the same name.
    pub fn insert(&mut self, datasource: Datasource) {
        self.by_name
            .insert(datasource.name.clone(), Arc::new(datasource));
    }

    /// The datasource called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Datasource>> {
        self.by_name.get(name)
    }

    /// Passwords found in datasource URLs: secrets to scrub from every output.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.by_name.values().filter_map(|d| d.password.as_deref())
    }
}

// ---------------------------------------------------------------------------------
// Per-run state

/// What the `sql` import of one run can reach.
pub struct SqlState {
    pub(crate) check: Arc<str>,
    pub(crate) policy: Arc<SqlPolicy>,
    pub(crate) datasources: Arc<Datasources>,
    pub(crate) scrubber: Arc<Scrubber>,
    pub(crate) deadline: Deadline,
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
        if !self.policy.allows(&datasource) {
            return Err(Error::Denied(datasource));
        }
        let Some(source) = self.datasources.get(&datasource).cloned() else {
            return Err(Error::NotConfigured(datasource));
        };
        let timeout = self.deadline.host_call_timeout(None);
        let span = tracing::debug_span!("sql", check = %self.check, datasource = %datasource);
        let query = async {
            match source.pool().await {
                AnyPool::Sqlite(pool) => query_sqlite(pool, statement, params).await,
                AnyPool::Postgres(pool) => query_postgres(pool, timeout, statement, params).await,
                AnyPool::MySql(pool) => query_mysql(pool, statement, params).await,
            }
        };
        match tokio::time::timeout(timeout, query).instrument(span).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(QueryError::Sqlx(e))) => Err(Error::Database(
                self.scrubber.scrub(&describe(&e)).into_owned(),
            )),
            Ok(Err(QueryError::Plugin(e))) => Err(e),
            Err(_elapsed) => Err(Error::Timeout),
        }
    }
}

enum QueryError {
    Sqlx(sqlx::Error),
    Plugin(Error),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Sqlx(e)
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

async fn query_sqlite(
    pool: &SqlitePool,
    statement: String,
    params: Vec<Value>,
) -> Result<Rows, QueryError> {
    probe(pool).await?;
    let mut conn = pool.acquire().await?;
    fetch(&mut *conn, statement, params, decode_sqlite).await
}

async fn query_postgres(
    pool: &PgPool,
    timeout: std::time::Duration,
    statement: String,
    params: Vec<Value>,
) -> Result<Rows, QueryError> {
    probe(pool).await?;
    let mut tx = pool.begin_with("BEGIN READ ONLY").await?;
    let ms = timeout.as_millis().max(1);
    tx.execute(AssertSqlSafe(format!("SET LOCAL statement_timeout = {ms}")))
        .await?;
    let rows = fetch(&mut *tx, statement, params, decode_postgres).await;
    // Rolled back either way; a failed rollback only closes the connection.
    let _ = tx.rollback().await;
    rows
}

async fn query_mysql(
    pool: &MySqlPool,
    statement: String,
    params: Vec<Value>,
) -> Result<Rows, QueryError> {
    probe(pool).await?;
    let mut conn = pool.acquire().await?;
    // Session first: DDL commits implicitly and would escape a read-only transaction.
    // Set on every call, since the previous statement may have changed it.
    conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "START TRANSACTION READ ONLY").await?;
    let rows = fetch(&mut *tx, statement, params, decode_mysql).await;
    let _ = tx.rollback().await;
    rows
}

/// Runs `statement` and collects its rows, up to the row and byte caps.
async fn fetch<'c, DB, E>(
    executor: E,
    statement: String,
    params: Vec<Value>,
    decode: fn(&DB::Row, usize) -> Result<Value, String>,
) -> Result<Rows, QueryError>
where
    DB: Database,
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
    let mut query = sqlx::query::<DB>(AssertSqlSafe(statement));
    for param in params {
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
            let value = decode(&row, i).map_err(|e| QueryError::Plugin(Error::Database(e)))?;
            bytes += value_size(&value);
            values.push(value);
        }
        if bytes > SQL_MAX_BYTES {
            return Err(QueryError::Plugin(Error::TooLarge(SQL_MAX_BYTES)));
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

/// SQLite is dynamically typed: the value's own storage class decides.
fn decode_sqlite(row: &<Sqlite as Database>::Row, i: usize) -> Result<Value, String> {
    let (type_name, null) = raw_type::<Sqlite>(row, i)?;
    if null {
        return Ok(Value::Null);
    }
    Ok(match type_name.as_str() {
        "INTEGER" | "INT" | "BIGINT" => Value::Integer(get::<Sqlite, i64>(row, i)?),
        "BOOLEAN" => Value::Boolean(get::<Sqlite, bool>(row, i)?),
        "REAL" | "FLOAT" | "DOUBLE" | "NUMERIC" => Value::Real(get::<Sqlite, f64>(row, i)?),
        "BLOB" => Value::Blob(get::<Sqlite, Vec<u8>>(row, i)?),
        _ => Value::Text(get::<Sqlite, String>(row, i)?),
    })
}

fn decode_postgres(row: &<Postgres as Database>::Row, i: usize) -> Result<Value, String> {
    let (type_name, null) = raw_type::<Postgres>(row, i)?;
    if null {
        return Ok(Value::Null);
    }
    Ok(match type_name.as_str() {
        "BOOL" => Value::Boolean(get::<Postgres, bool>(row, i)?),
        "INT2" => Value::Integer(get::<Postgres, i16>(row, i)?.into()),
        "INT4" => Value::Integer(get::<Postgres, i32>(row, i)?.into()),
        "INT8" => Value::Integer(get::<Postgres, i64>(row, i)?),
        "OID" => Value::Integer(
            get::<Postgres, sqlx::postgres::types::Oid>(row, i)?
                .0
                .into(),
        ),
        "FLOAT4" => Value::Real(get::<Postgres, f32>(row, i)?.into()),
        "FLOAT8" => Value::Real(get::<Postgres, f64>(row, i)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" => {
            Value::Text(get::<Postgres, String>(row, i)?)
        }
        "BYTEA" => Value::Blob(get::<Postgres, Vec<u8>>(row, i)?),
        other => return Err(unsupported(other, i, "value::text or value::float8")),
    })
}

fn decode_mysql(row: &<MySql as Database>::Row, i: usize) -> Result<Value, String> {
    let (type_name, null) = raw_type::<MySql>(row, i)?;
    if null {
        return Ok(Value::Null);
    }
    Ok(match type_name.as_str() {
        "BOOLEAN" => Value::Boolean(get::<MySql, bool>(row, i)?),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            Value::Integer(get::<MySql, i64>(row, i)?)
        }
        t if t.ends_with("UNSIGNED") => {
            let n = get::<MySql, u64>(row, i)?;
            Value::Integer(
                i64::try_from(n)
                    .map_err(|_| format!("column {i}: {n} does not fit a signed 64-bit integer"))?,
            )
        }
        "FLOAT" => Value::Real(get::<MySql, f32>(row, i)?.into()),
        "DOUBLE" => Value::Real(get::<MySql, f64>(row, i)?),
        "DECIMAL" | "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT"
        | "ENUM" | "SET" | "JSON" => Value::Text(get::<MySql, String>(row, i)?),
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            Value::Blob(get::<MySql, Vec<u8>>(row, i)?)
        }
        other => return Err(unsupported(other, i, "CAST(value AS CHAR)")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
