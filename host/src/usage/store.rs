//! The `ai_usage` store: batched inserts in one transaction (the database's clock
//! sets `created_at`), the refused row and field when a constraint says no, and the
//! pools the writers and the report share.

use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::MySql;
use sqlx::postgres::Postgres;
use sqlx::sqlite::Sqlite;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};

use tokio::sync::OnceCell;

use crate::dbpool::{DbOptions, DbOptionsError, DbPool, refuses_the_values};
use crate::dburl::Kind;

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
pub enum CallStatus {
    #[default]
    Success,
    Error,
}

impl CallStatus {
    /// The stored value and metric label: `success` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Success => "success",
            CallStatus::Error => "error",
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
    pub status: CallStatus,
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
    /// The database refused row `index`'s values (a constraint, a value too long).
    #[error("row {index} refused by the database: {message}")]
    Refused {
        index: usize,
        field: Option<String>,
        message: String,
    },
}

/// The optional columns `ai_usage` has: a table made by another tool (the bot's own
/// Alembic migration) may lack what the host's migrations add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    /// `status` (success/error). Without it errors are counted in the metrics only.
    pub status: bool,
}

/// The store of `ai_usage` rows: its read-write pool, and the columns the table turned
/// out to have (looked up on first use, and logged once). The pool connects lazily, so
/// a database that is down at start-up does not stop the host: its writes fail (and
/// are answered 503) until it is back.
#[derive(Debug, Clone)]
pub struct UsageStore {
    pool: DbPool,
    columns: Arc<OnceCell<Columns>>,
}

impl UsageStore {
    /// A store on `url` that connects on first use.
    pub fn lazy(url: &str) -> Result<UsageStore, StoreError> {
        let options = DbOptions::from_url(url).map_err(|e| match e {
            DbOptionsError::Scheme => StoreError::Scheme,
            DbOptionsError::Url(e) => StoreError::Url(e),
        })?;
        let size = match options.kind() {
            Kind::Sqlite => STORE_SQLITE_POOL_SIZE,
            Kind::Postgres | Kind::MySql => STORE_POOL_SIZE,
        };
        Ok(UsageStore {
            pool: DbPool::lazy(&options, size, Some(STORE_ACQUIRE_TIMEOUT)),
            columns: Arc::default(),
        })
    }

    /// The pool, for reading.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// The optional columns `ai_usage` has, looked up once (again after a failure).
    pub async fn columns(&self) -> Result<Columns, StoreError> {
        self.columns
            .get_or_try_init(|| async {
                let status = match &self.pool {
                    DbPool::Sqlite(pool) => has_column(pool, SQLITE_HAS_COLUMN).await,
                    DbPool::Postgres(pool) => has_column(pool, POSTGRES_HAS_COLUMN).await,
                    DbPool::MySql(pool) => has_column(pool, MYSQL_HAS_COLUMN).await,
                }?;
                if !status {
                    tracing::info!(
                        "ai_usage has no status column (its schema is another tool's): \
                         failed calls are counted in the metrics but not stored"
                    );
                }
                Ok(Columns { status })
            })
            .await
            .copied()
    }

    /// Writes `rows` in one transaction and returns their ids in the rows' order, only
    /// after the commit; `created_at` is the database's clock. On any error nothing is
    /// written: the transaction is rolled back (also when the write times out and is
    /// dropped). A row the database refuses (a constraint, a value too long for its
    /// column) is [`StoreError::Refused`], located by its index.
    pub async fn insert(&self, rows: &[NewUsage]) -> Result<Vec<i64>, StoreError> {
        let write = async {
            let columns = self.columns().await?;
            let result = match &self.pool {
                DbPool::Sqlite(pool) => {
                    insert_returning::<Sqlite, i64>(pool, rows, &SQLITE_INSERT, columns).await
                }
                DbPool::Postgres(pool) => {
                    insert_returning::<Postgres, i32>(pool, rows, &POSTGRES_INSERT, columns).await
                }
                DbPool::MySql(pool) => insert_one_by_one(pool, rows, columns).await,
            };
            let (index, error) = match result {
                Ok(ids) => return Ok(ids),
                Err(Failure {
                    row: Some(index),
                    error,
                }) => (index, error),
                Err(Failure { row: None, error }) if refusal(0, &error).is_some() => {
                    // Which row? Each alone, in a transaction that is rolled back.
                    let found = match &self.pool {
                        DbPool::Sqlite(pool) => {
                            first_refused::<Sqlite>(pool, rows, &SQLITE_INSERT, columns).await
                        }
                        DbPool::Postgres(pool) => {
                            first_refused::<Postgres>(pool, rows, &POSTGRES_INSERT, columns).await
                        }
                        DbPool::MySql(_) => unreachable!("MySQL inserts row by row"),
                    };
                    found.ok_or(StoreError::Database(error))?
                }
                Err(Failure { row: None, error }) => return Err(StoreError::Database(error)),
            };
            Err(refusal(index, &error).unwrap_or(StoreError::Database(error)))
        };
        let result = tokio::time::timeout(STORE_WRITE_TIMEOUT, write)
            .await
            .map_err(|_| StoreError::Timeout(STORE_WRITE_TIMEOUT))?;
        match (result, &self.pool) {
            // SQLite does not say which column a foreign key failure is about: when the
            // table has one foreign key, it is that one.
            (
                Err(StoreError::Refused {
                    index,
                    field: None,
                    message,
                }),
                DbPool::Sqlite(pool),
            ) if message.starts_with("FOREIGN KEY") => {
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT \"from\" FROM pragma_foreign_key_list('ai_usage')")
                        .fetch_all(pool)
                        .await
                        .unwrap_or_default();
                Err(StoreError::Refused {
                    index,
                    field: <[String; 1]>::try_from(columns).ok().map(|[c]| c),
                    message,
                })
            }
            (result, _) => result,
        }
    }
}

/// Whether `ai_usage` has a `status` column (the statement takes no parameters).
async fn has_column<DB>(pool: &Pool<DB>, sql: &'static str) -> Result<bool, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let found: Option<(i64,)> = sqlx::query_as(sql).fetch_optional(pool).await?;
    Ok(found.is_some())
}

const SQLITE_HAS_COLUMN: &str = "SELECT 1 FROM pragma_table_info('ai_usage') WHERE name = 'status'";
const POSTGRES_HAS_COLUMN: &str = "SELECT 1::int8 FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = 'ai_usage' AND column_name = 'status'";
const MYSQL_HAS_COLUMN: &str = "SELECT CAST(1 AS SIGNED) FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'ai_usage' AND COLUMN_NAME = 'status'";

/// What differs between databases in an insert.
struct InsertDialect {
    /// The database's clock, as `created_at` (the migrations' default, and what the
    /// bot's ORM writes: a table made by another tool may have no default).
    now: &'static str,
}

const SQLITE_INSERT: InsertDialect = InsertDialect {
    now: "CURRENT_TIMESTAMP",
};
const POSTGRES_INSERT: InsertDialect = InsertDialect {
    now: "LOCALTIMESTAMP",
};
const MYSQL_INSERT: InsertDialect = InsertDialect {
    now: "CURRENT_TIMESTAMP",
};

/// Why a write failed, and at which row when that is known (a row written alone).
struct Failure {
    row: Option<usize>,
    error: sqlx::Error,
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure { row: None, error }
    }
}

/// The row the database refused, if `e` is a refusal of the row's values rather than
/// a failure of the database: a foreign key, not-null, check or unique constraint, or
/// a value too long or out of range for its column.
fn refusal(index: usize, e: &sqlx::Error) -> Option<StoreError> {
    match e {
        sqlx::Error::Database(db) if refuses_the_values(e) => Some(StoreError::Refused {
            index,
            field: refused_field(db.as_ref()),
            message: db.message().to_owned(),
        }),
        _ => None,
    }
}

/// The column a refusal names, read from the driver's fields or the message.
fn refused_field(db: &dyn sqlx::error::DatabaseError) -> Option<String> {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        if let Some(column) = pg.column() {
            return Some(column.to_owned());
        }
        // "Key (user_id)=(999) is not present in table "users"."
        let detail = pg.detail()?;
        return Some(between(detail, "Key (", ")")?.to_owned());
    }
    let message = db.message();
    // MySQL: "... FOREIGN KEY (`user_id`) REFERENCES ...", "Column 'operation' cannot
    // be null", "Data too long for column 'operation' at row 1"; SQLite: "NOT NULL
    // constraint failed: ai_usage.operation".
    between(message, "FOREIGN KEY (`", "`")
        .or_else(|| between(message, "olumn '", "'"))
        .or_else(|| between(message, "failed: ai_usage.", " "))
        .or_else(|| message.split_once("failed: ai_usage.").map(|(_, f)| f))
        .map(str::to_owned)
}

/// The text between the first `start` and the next `end` after it.
fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// `INSERT INTO ai_usage (...) VALUES (...), ...` for `rows`, with the columns the
/// table has.
fn insert_statement<DB>(
    rows: &[NewUsage],
    dialect: &InsertDialect,
    columns: Columns,
) -> QueryBuilder<DB>
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
        "INSERT INTO ai_usage (created_at, user_id, operation, model, prompt_tokens, \
         completion_tokens, total_tokens, cost_dollars, generation_id, latency_ms",
    );
    query.push(if columns.status { ", status) " } else { ") " });
    query.push_values(rows, |mut values, row| {
        values
            .push(dialect.now)
            .push_bind(row.user_id)
            .push_bind(row.operation.clone())
            .push_bind(row.model.clone())
            .push_bind(row.prompt_tokens)
            .push_bind(row.completion_tokens)
            .push_bind(row.total_tokens)
            .push_bind(row.cost_dollars)
            .push_bind(row.generation_id.clone())
            .push_bind(row.latency_ms);
        if columns.status {
            values.push_bind(row.status.as_str().to_owned());
        }
    });
    query
}

/// SQLite and PostgreSQL: multi-row inserts with `RETURNING id`. Ids come from a
/// sequence taken row by row in `VALUES` order, so sorting them restores the rows'
/// order (other writers may take ids in between, never out of order).
async fn insert_returning<DB, Id>(
    pool: &Pool<DB>,
    rows: &[NewUsage],
    dialect: &InsertDialect,
    columns: Columns,
) -> Result<Vec<i64>, Failure>
where
    DB: Database + sqlx::database::HasStatementCache,
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
    for (n, chunk) in rows.chunks(ROWS_PER_STATEMENT).enumerate() {
        let mut query = insert_statement::<DB>(chunk, dialect, columns);
        query.push(" RETURNING id");
        // Not cached: each chunk's row count makes another statement (see the journal).
        let chunk_ids: Vec<Id> = match query
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
        {
            Ok(ids) => ids,
            // A chunk of one row names its row.
            Err(e) if chunk.len() == 1 => {
                return Err(Failure {
                    row: Some(n * ROWS_PER_STATEMENT),
                    error: e,
                });
            }
            Err(e) => return Err(e.into()),
        };
        ids.extend(chunk_ids.into_iter().map(Into::into));
    }
    tx.commit().await?;
    ids.sort_unstable();
    Ok(ids)
}

/// MySQL/MariaDB: one statement per row. MySQL has no `RETURNING`, and the ids of a
/// multi-row insert are consecutive only with `innodb_autoinc_lock_mode` below 2
/// (MySQL 8's default is 2), so `LAST_INSERT_ID()` of a batch would not name its rows.
async fn insert_one_by_one(
    pool: &sqlx::MySqlPool,
    rows: &[NewUsage],
    columns: Columns,
) -> Result<Vec<i64>, Failure> {
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let mut query =
            insert_statement::<MySql>(std::slice::from_ref(row), &MYSQL_INSERT, columns);
        let done = query
            .build()
            .execute(&mut *tx)
            .await
            .map_err(|error| Failure {
                row: Some(index),
                error,
            })?;
        ids.push(i64::try_from(done.last_insert_id()).map_err(|e| sqlx::Error::Decode(e.into()))?);
    }
    tx.commit().await?;
    Ok(ids)
}

/// The first row of `rows` the database refuses on its own, and why; every row is
/// inserted alone in one transaction that is rolled back.
async fn first_refused<DB>(
    pool: &Pool<DB>,
    rows: &[NewUsage],
    dialect: &InsertDialect,
    columns: Columns,
) -> Option<(usize, sqlx::Error)>
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
{
    let mut tx = pool.begin().await.ok()?;
    for (index, row) in rows.iter().enumerate() {
        let mut query = insert_statement::<DB>(std::slice::from_ref(row), dialect, columns);
        if let Err(e) = query.build().execute(&mut *tx).await {
            let _ = tx.rollback().await;
            return Some((index, e));
        }
    }
    let _ = tx.rollback().await;
    None
}
