//! The `ai_usage` table the host owns: its migrations, embedded in the binary, one set
//! per database kind (`migrations/` at the repository root), applying them, and the
//! read-write [`UsageStore`] that records rows (`POST /v1/ai-usage`) and that the
//! `usage` report reads.
//!
//! Migrations and the store use read-write connections of their own: the datasources
//! plugins query are read-only.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool};
use sqlx::postgres::{PgConnectOptions, PgPool, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqlitePool};
use sqlx::{
    Connection, Database, Encode, Executor, FromRow, IntoArguments, MySqlConnection, PgConnection,
    Pool, QueryBuilder, SqliteConnection, Type,
};

use crate::capabilities::sql::{Kind, mysql_url};

static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
static MYSQL: Migrator = sqlx::migrate!("../migrations/mysql");

/// One migration that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
}

/// Why migrations could not be applied; the URL is never part of the message.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("unsupported database url (expected sqlite:, postgres:// or mysql://)")]
    Scheme,
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
}

/// Applies every pending migration to the database at `url` (creating a SQLite file
/// that does not exist) and returns those it applied, oldest first.
pub async fn migrate(url: &str) -> Result<Vec<Applied>, MigrationError> {
    match Kind::of_url(url).ok_or(MigrationError::Scheme)? {
        Kind::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(MigrationError::Connect)?
                .create_if_missing(true);
            if let Some(dir) = options
                .get_filename()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| MigrationError::Connect(e.into()))?;
            }
            let mut conn = SqliteConnection::connect_with(&options)
                .await
                .map_err(MigrationError::Connect)?;
            apply(&SQLITE, &mut conn).await
        }
        Kind::Postgres => {
            let mut conn = PgConnection::connect(url)
                .await
                .map_err(MigrationError::Connect)?;
            apply(&POSTGRES, &mut conn).await
        }
        Kind::MySql => {
            let mut conn = MySqlConnection::connect(&mysql_url(url))
                .await
                .map_err(MigrationError::Connect)?;
            apply(&MYSQL, &mut conn).await
        }
    }
}

async fn apply<C: Migrate>(
    migrator: &Migrator,
    conn: &mut C,
) -> Result<Vec<Applied>, MigrationError> {
    conn.ensure_migrations_table(&migrator.table_name).await?;
    let done: Vec<i64> = conn
        .list_applied_migrations(&migrator.table_name)
        .await?
        .iter()
        .map(|m| m.version)
        .collect();
    migrator.run_direct(None, conn, false).await?;
    Ok(migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !done.contains(&m.version))
        .map(|m| Applied {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect())
}

// ---------------------------------------------------------------------------------
// Recording rows

/// Connections a PostgreSQL or MySQL store keeps: enough for concurrent writers on a
/// small host, few enough to leave the database's connection limit to the application.
pub const STORE_POOL_SIZE: u32 = 8;
/// Connections a SQLite store keeps: one, because SQLite has a single writer; queueing
/// in the pool is cheaper than `SQLITE_BUSY` retries between connections.
pub const STORE_SQLITE_POOL_SIZE: u32 = 1;
/// How long a write waits for a connection. A database that is down makes the request
/// fail with this delay at most (503), instead of holding the client.
pub const STORE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole write (connect, insert, commit) may take before it is abandoned
/// and rolled back: a locked table or a hung server must not hold requests forever.
pub const STORE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per `INSERT` statement: 10 bound values each, so 500 rows stay far below the
/// smallest bind-parameter limit (SQLite's 32,766) while batching round trips.
pub const ROWS_PER_STATEMENT: usize = 500;

/// Whether an AI call succeeded, as the `status` column and metric label say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Success,
    Error,
}

impl Status {
    /// The stored value and metric label: `success` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
        }
    }
}

/// One validated row to record (`created_at` is the database's clock).
#[derive(Debug, Clone, PartialEq)]
pub struct NewUsage {
    pub user_id: Option<i32>,
    pub operation: String,
    pub model: String,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub total_tokens: i32,
    pub cost_dollars: Option<f64>,
    pub generation_id: Option<String>,
    pub latency_ms: Option<i32>,
    pub status: Status,
}

/// Why the store could not be opened or written; the URL is never part of the message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url (expected sqlite:, postgres:// or mysql://)")]
    Scheme,
    #[error("invalid database url: {0}")]
    Url(sqlx::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the database did not finish within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

/// Read-write pools on the database that holds `ai_usage`, one kind each. Pools
/// connect lazily, so a database that is down at start-up does not stop the host: its
/// writes fail (and are answered 503) until it is back.
#[derive(Debug, Clone)]
pub enum UsageStore {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl UsageStore {
    /// A store on `url` that connects on first use.
    pub fn lazy(url: &str) -> Result<UsageStore, StoreError> {
        fn options<DB: Database>(size: u32) -> sqlx::pool::PoolOptions<DB> {
            sqlx::pool::PoolOptions::new()
                .max_connections(size)
                .min_connections(0)
                .acquire_timeout(STORE_ACQUIRE_TIMEOUT)
        }
        Ok(match Kind::of_url(url).ok_or(StoreError::Scheme)? {
            Kind::Sqlite => {
                UsageStore::Sqlite(options(STORE_SQLITE_POOL_SIZE).connect_lazy_with(
                    SqliteConnectOptions::from_str(url).map_err(StoreError::Url)?,
                ))
            }
            Kind::Postgres => UsageStore::Postgres(
                options(STORE_POOL_SIZE)
                    .connect_lazy_with(PgConnectOptions::from_str(url).map_err(StoreError::Url)?),
            ),
            Kind::MySql => UsageStore::MySql(options(STORE_POOL_SIZE).connect_lazy_with(
                MySqlConnectOptions::from_str(&mysql_url(url)).map_err(StoreError::Url)?,
            )),
        })
    }

    /// Writes `rows` in one transaction and returns their ids in the rows' order, only
    /// after the commit. On any error nothing is written: the transaction is rolled back
    /// (also when the write times out and is dropped).
    pub async fn insert(&self, rows: &[NewUsage]) -> Result<Vec<i64>, StoreError> {
        let write = async {
            match self {
                UsageStore::Sqlite(pool) => insert_returning::<Sqlite, i64>(pool, rows).await,
                UsageStore::Postgres(pool) => insert_returning::<Postgres, i32>(pool, rows).await,
                UsageStore::MySql(pool) => insert_one_by_one(pool, rows).await,
            }
        };
        tokio::time::timeout(STORE_WRITE_TIMEOUT, write)
            .await
            .map_err(|_| StoreError::Timeout(STORE_WRITE_TIMEOUT))?
            .map_err(StoreError::Database)
    }
}

/// `INSERT INTO ai_usage (...) VALUES (...), ...` for `rows`.
fn insert_statement<DB>(rows: &[NewUsage]) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    for<'t> i32: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i32>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "INSERT INTO ai_usage (user_id, operation, model, prompt_tokens, completion_tokens, \
         total_tokens, cost_dollars, generation_id, latency_ms, status) ",
    );
    query.push_values(rows, |mut values, row| {
        values
            .push_bind(row.user_id)
            .push_bind(row.operation.clone())
            .push_bind(row.model.clone())
            .push_bind(row.prompt_tokens)
            .push_bind(row.completion_tokens)
            .push_bind(row.total_tokens)
            .push_bind(row.cost_dollars)
            .push_bind(row.generation_id.clone())
            .push_bind(row.latency_ms)
            .push_bind(row.status.as_str().to_owned());
    });
    query
}

/// SQLite and PostgreSQL: multi-row inserts with `RETURNING id`. Ids come from a
/// sequence taken row by row in `VALUES` order, so sorting them restores the rows'
/// order (other writers may take ids in between, never out of order).
async fn insert_returning<DB, Id>(
    pool: &Pool<DB>,
    rows: &[NewUsage],
) -> Result<Vec<i64>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: Default,
    for<'t> i32: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i32>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    (Id,): for<'r> FromRow<'r, DB::Row>,
    Id: Into<i64> + Send + Unpin,
{
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = insert_statement::<DB>(chunk);
        query.push(" RETURNING id");
        let chunk_ids: Vec<Id> = query.build_query_scalar().fetch_all(&mut *tx).await?;
        ids.extend(chunk_ids.into_iter().map(Into::into));
    }
    tx.commit().await?;
    ids.sort_unstable();
    Ok(ids)
}

/// MySQL/MariaDB: one statement per row. MySQL has no `RETURNING`, and the ids of a
/// multi-row insert are consecutive only with `innodb_autoinc_lock_mode` below 2
/// (MySQL 8's default is 2), so `LAST_INSERT_ID()` of a batch would not name its rows.
async fn insert_one_by_one(pool: &MySqlPool, rows: &[NewUsage]) -> Result<Vec<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        let mut query = insert_statement::<MySql>(std::slice::from_ref(row));
        let done = query.build().execute(&mut *tx).await?;
        ids.push(i64::try_from(done.last_insert_id()).map_err(|e| sqlx::Error::Decode(e.into()))?);
    }
    tx.commit().await?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_the_same_migrations() {
        let versions = |m: &Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert!(!versions(&SQLITE).is_empty());
        assert_eq!(versions(&SQLITE), versions(&POSTGRES));
        assert_eq!(versions(&SQLITE), versions(&MYSQL));
    }
}
