//! Retention: the history store's rows past their retention (`[history]
//! raw_retention`, `minute_retention`, `hour_retention`, `day_retention`) are deleted
//! every [`HISTORY_PRUNE_EVERY`], in `DELETE`s of at most [`HISTORY_PRUNE_BATCH`] rows
//! so that a writer never waits on more than one of them.
//!
//! One replica prunes at a time: a pass runs only while its connection holds the
//! store's pruning lock (PostgreSQL's `pg_try_advisory_lock`, MySQL's `GET_LOCK`); a
//! replica that does not get it skips the pass. SQLite serves one node, and its own
//! locking orders the deletes. Deletes are idempotent, so a pass cut short (a
//! restart, a lost connection) loses nothing: the next one goes on.

use std::time::SystemTime;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, MySql, Postgres};

use super::store::GRAINS;
use crate::config::Retention;
use crate::dbpool::DbPool;
use crate::dburl::Kind;
use crate::limits::{HISTORY_PRUNE_BATCH, HISTORY_PRUNE_EVERY};

/// The advisory lock of pruning on PostgreSQL ("hhprune" in ASCII).
const PG_LOCK: i64 = 0x0068_6870_7275_6e65;
/// The named lock of pruning on MySQL/MariaDB.
const MYSQL_LOCK: &str = "healthhost_history_prune";

/// Prunes now and every [`HISTORY_PRUNE_EVERY`], until the task is dropped. A failing
/// pass is logged, and the next one tries again.
pub async fn run(pool: DbPool, retention: Retention) {
    let mut tick = tokio::time::interval(HISTORY_PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match prune(&pool, &retention, SystemTime::now()).await {
            Ok(Some(deleted)) if deleted > 0 => {
                tracing::info!("pruned {deleted} history rows past their retention");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot prune the history store: {e}"),
        }
    }
}

/// One pass at `now`: the rows it deleted, or `None` when another replica holds the
/// pruning lock.
pub async fn prune(
    pool: &DbPool,
    retention: &Retention,
    now: SystemTime,
) -> Result<Option<u64>, sqlx::Error> {
    let deletes = deletes(retention, now);
    match pool {
        DbPool::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            delete_all(&mut conn, Kind::Sqlite, &deletes)
                .await
                .map(Some)
        }
        DbPool::Postgres(pool) => {
            let mut conn: PoolConnection<Postgres> = pool.acquire().await?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(PG_LOCK)
                .fetch_one(&mut *conn)
                .await?;
            if !locked {
                return Ok(None);
            }
            let deleted = delete_all(&mut conn, Kind::Postgres, &deletes).await;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(PG_LOCK)
                .execute(&mut *conn)
                .await?;
            deleted.map(Some)
        }
        DbPool::MySql(pool) => {
            let mut conn: PoolConnection<MySql> = pool.acquire().await?;
            let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                .bind(MYSQL_LOCK)
                .fetch_one(&mut *conn)
                .await?;
            if locked != Some(1) {
                return Ok(None);
            }
            let deleted = delete_all(&mut conn, Kind::MySql, &deletes).await;
            sqlx::query("SELECT RELEASE_LOCK(?)")
                .bind(MYSQL_LOCK)
                .execute(&mut *conn)
                .await?;
            deleted.map(Some)
        }
    }
}

/// What to delete: each table and the condition of its rows past retention at `now`.
/// A rollup goes once all of its bucket is past its grain's retention.
fn deletes(retention: &Retention, now: SystemTime) -> Vec<(&'static str, String)> {
    let now_ms = super::unix_ms(now);
    let before = |kept: std::time::Duration| now_ms - kept.as_millis() as i64;
    // Alerting's delivered and failed notifications go with the raw results.
    let mut deletes = vec![
        ("hh_result", format!("at_ms < {}", before(retention.raw))),
        ("hh_outbox", format!("done_ms < {}", before(retention.raw))),
    ];
    let kept = [retention.minute, retention.hour, retention.day];
    for ((grain, length), kept) in GRAINS.into_iter().zip(kept) {
        deletes.push((
            "hh_rollup",
            format!(
                "grain = '{grain}' AND bucket_ms <= {}",
                before(kept) - length
            ),
        ));
    }
    deletes
}

/// Deletes every row `deletes` names, a batch at a time; the number deleted.
async fn delete_all<DB: Database>(
    conn: &mut PoolConnection<DB>,
    kind: Kind,
    deletes: &[(&'static str, String)],
) -> Result<u64, sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    DB::QueryResult: Affected,
{
    let mut deleted = 0;
    for (table, condition) in deletes {
        let statement = batch_delete(kind, table, condition);
        loop {
            let done = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .execute(&mut **conn)
                .await?;
            let n = done.affected();
            deleted += n;
            if n < HISTORY_PRUNE_BATCH as u64 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// One `DELETE` of at most [`HISTORY_PRUNE_BATCH`] rows of `table` matching
/// `condition`, in each dialect's words (the condition holds only numbers and a grain
/// name this module writes).
fn batch_delete(kind: Kind, table: &str, condition: &str) -> String {
    let n = HISTORY_PRUNE_BATCH;
    match kind {
        Kind::MySql => format!("DELETE FROM {table} WHERE {condition} LIMIT {n}"),
        Kind::Sqlite => format!(
            "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {condition} LIMIT {n})"
        ),
        Kind::Postgres => format!(
            "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {condition} LIMIT {n})"
        ),
    }
}

/// The rows a statement changed, which sqlx gives per dialect, not through `Database`.
trait Affected {
    fn affected(&self) -> u64;
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::mysql::MySqlQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn each_table_is_pruned_past_its_own_retention() {
        let day = Duration::from_secs(86_400);
        let retention = Retention {
            raw: day,
            minute: 2 * day,
            hour: 10 * day,
            day: 100 * day,
        };
        let now = UNIX_EPOCH + 1000 * day;
        let ms = |d: u64| (d * 86_400_000) as i64;
        let deletes = deletes(&retention, now);
        assert_eq!(deletes[0], ("hh_result", format!("at_ms < {}", ms(999))));
        assert_eq!(deletes[1], ("hh_outbox", format!("done_ms < {}", ms(999))));
        assert_eq!(
            deletes[2],
            (
                "hh_rollup",
                format!("grain = 'm' AND bucket_ms <= {}", ms(998) - 60_000)
            )
        );
        assert_eq!(
            deletes[4],
            (
                "hh_rollup",
                format!("grain = 'd' AND bucket_ms <= {}", ms(899))
            )
        );
        assert!(batch_delete(Kind::Sqlite, "hh_result", "x").contains("rowid IN"));
        assert!(batch_delete(Kind::MySql, "hh_result", "x").ends_with("LIMIT 1000"));
    }
}
