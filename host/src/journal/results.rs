//! Reading stored results back: a check's results of every replica from a time on
//! (`GET /v1/checks/{check}/history`), the newest when there are more than one answer
//! returns, and the checks the store holds (the status page lists those the config no
//! longer has as removed, until their data ages out).

use sqlx::{ColumnIndex, Database, Decode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};

use crate::dbpool::DbPool;

/// One stored result.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub node: String,
    /// When the run ended, in Unix milliseconds.
    pub at_ms: i64,
    pub outcome: String,
    pub latency_ms: Option<f64>,
    pub message: Option<String>,
}

/// What [`listing`] read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Listing {
    /// Oldest first.
    pub results: Vec<Stored>,
    /// Whether older results from the time asked for were left out.
    pub truncated: bool,
    /// The newest result of this node the store holds (at any time), read before the
    /// results: this node's results after it are still on their way, in memory.
    pub own_newest_ms: Option<i64>,
}

/// The results of `check` from `since_ms` on, of every node, at most `limit` (the
/// newest), oldest first. Results of `node` newer than its newest stored one when
/// the read began are left out even if they arrive meanwhile, so a caller adding
/// this node's unwritten results from memory adds each once.
pub async fn listing(
    pool: &DbPool,
    check: &str,
    node: &str,
    since_ms: i64,
    limit: usize,
) -> Result<Listing, sqlx::Error> {
    match pool {
        DbPool::Sqlite(pool) => listing_in(pool, check, node, since_ms, limit).await,
        DbPool::Postgres(pool) => listing_in(pool, check, node, since_ms, limit).await,
        DbPool::MySql(pool) => listing_in(pool, check, node, since_ms, limit).await,
    }
}

/// The checks with day rollups in the store, each with the start of its newest day
/// bucket (Unix milliseconds), by name.
pub async fn stored_checks(pool: &DbPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    match pool {
        DbPool::Sqlite(pool) => stored_checks_in(pool).await,
        DbPool::Postgres(pool) => stored_checks_in(pool).await,
        DbPool::MySql(pool) => stored_checks_in(pool).await,
    }
}

async fn listing_in<DB>(
    pool: &Pool<DB>,
    check: &str,
    node: &str,
    since_ms: i64,
    limit: usize,
) -> Result<Listing, sqlx::Error>
where
    DB: Database,
    DB::Arguments: Default + IntoArguments<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Decode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Decode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Decode<'t, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    let mut newest =
        QueryBuilder::<DB>::new("SELECT MAX(at_ms) FROM hh_result WHERE check_name = ");
    newest
        .push_bind(check.to_owned())
        .push(" AND node = ")
        .push_bind(node.to_owned());
    let own_newest_ms: Option<i64> = newest.build().fetch_one(pool).await?.try_get(0)?;
    let mut query = QueryBuilder::<DB>::new(
        "SELECT node, at_ms, outcome, latency_ms, message FROM hh_result WHERE check_name = ",
    );
    query
        .push_bind(check.to_owned())
        .push(" AND at_ms >= ")
        .push_bind(since_ms)
        .push(" AND NOT (node = ")
        .push_bind(node.to_owned())
        .push(" AND at_ms > ")
        .push_bind(own_newest_ms.unwrap_or(i64::MIN))
        .push(") ORDER BY at_ms DESC, node DESC LIMIT ")
        .push_bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX));
    let mut results = Vec::new();
    for row in query.build().fetch_all(pool).await? {
        results.push(Stored {
            node: row.try_get(0)?,
            at_ms: row.try_get(1)?,
            outcome: row.try_get(2)?,
            latency_ms: row.try_get(3)?,
            message: row.try_get(4)?,
        });
    }
    let truncated = results.len() > limit;
    results.truncate(limit);
    results.reverse();
    Ok(Listing {
        results,
        truncated,
        own_newest_ms,
    })
}

async fn stored_checks_in<DB>(pool: &Pool<DB>) -> Result<Vec<(String, i64)>, sqlx::Error>
where
    DB: Database,
    for<'t> String: Decode<'t, DB> + Type<DB>,
    for<'t> i64: Decode<'t, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    let rows = sqlx::raw_sql(
        "SELECT check_name, MAX(bucket_ms) FROM hh_rollup WHERE grain = 'd' \
         GROUP BY check_name ORDER BY check_name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}
