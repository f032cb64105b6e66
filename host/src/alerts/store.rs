//! Alerting's rows in the history store: episodes (`hh_episode`), the outbox
//! (`hh_outbox`) and the channel leases (`hh_lease`), in each dialect's words.
//!
//! A transition is recorded by a conditional update of its episode's one row, and its
//! notifications are added to the outbox in the same transaction: a replica whose
//! update changes no row (another replica recorded it first) adds nothing, and a crash
//! after the commit leaves the notifications waiting for whichever replica delivers.

use sqlx::AssertSqlSafe;

use super::episodes::{Change, Recorded, Transition};
use crate::dbpool::DbPool;
use crate::dburl::Kind;

/// Runs `$body` with `$p` bound to the concrete pool of each dialect, so one text of
/// queries serves all three without a bound per column type.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            DbPool::Sqlite($p) => $body,
            DbPool::Postgres($p) => $body,
            DbPool::MySql($p) => $body,
        }
    };
}

/// `text` with its `?` placeholders as `kind` writes them (PostgreSQL: `$1`, `$2`, …).
fn sql(kind: Kind, text: &str) -> AssertSqlSafe<String> {
    if kind != Kind::Postgres {
        return AssertSqlSafe(text.to_owned());
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut n = 0;
    for c in text.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    AssertSqlSafe(out)
}

/// The conditional update that records `change`, and its arguments after the rule and
/// check: each only changes a row in the state the change starts from.
fn update_for(change: Change) -> &'static str {
    match change {
        // Only when closed, and closed before this run of failures began.
        Change::Open => {
            "UPDATE hh_episode SET seq = seq + 1, is_open = 1, since_ms = ?, opened_ms = ?, \
             reminded_ms = ?, outcome = ?, message = ?, node = ? \
             WHERE rule_name = ? AND check_name = ? AND is_open = 0 AND closed_ms < ?"
        }
        // Only when open, and not reminded of since the rule's repeat.
        Change::Remind => {
            "UPDATE hh_episode SET reminded_ms = ?, outcome = ?, message = ? \
             WHERE rule_name = ? AND check_name = ? AND is_open = 1 AND reminded_ms <= ?"
        }
        // Only when open, and opened before this run of up results began.
        Change::Close => {
            "UPDATE hh_episode SET is_open = 0, closed_ms = ? \
             WHERE rule_name = ? AND check_name = ? AND is_open = 1 AND opened_ms < ?"
        }
    }
}

/// Binds `$t`'s values in the order [`update_for`]'s statement for its change takes
/// them (a macro, as each dialect's query is its own type).
macro_rules! bind_update {
    ($query:expr, $t:expr, $rule:expr, $node:expr, $message:expr, $repeat_ms:expr) => {
        match $t.change {
            Change::Open => $query
                .bind($t.since_ms)
                .bind($t.at_ms)
                .bind($t.at_ms)
                .bind($t.outcome)
                .bind($message.clone())
                .bind($node)
                .bind($rule)
                .bind(&*$t.check)
                .bind($t.since_ms),
            Change::Remind => $query
                .bind($t.at_ms)
                .bind($t.outcome)
                .bind($message.clone())
                .bind($rule)
                .bind(&*$t.check)
                .bind($t.at_ms - $repeat_ms),
            Change::Close => $query
                .bind($t.at_ms)
                .bind($rule)
                .bind(&*$t.check)
                .bind($t.since_ms),
        }
    };
}

/// Drops the open notifications of an episode that have not been tried yet (held by a
/// maintenance window): it closes before anyone was told, so nobody is.
const CANCEL_OPEN: &str = "DELETE FROM hh_outbox WHERE rule_name = ? AND check_name = ? \
    AND seq = ? AND kind = 'open' AND state = 'pending' AND batch IS NULL";

/// `INSERT INTO` `rest` that adds nothing where the row's key exists, in `kind`'s words.
fn insert_if_missing(kind: Kind, rest: &str) -> String {
    match kind {
        Kind::MySql => format!("INSERT IGNORE INTO {rest}"),
        Kind::Sqlite | Kind::Postgres => format!("INSERT INTO {rest} ON CONFLICT DO NOTHING"),
    }
}

/// The number and start of a rule and check's episode.
const EPISODE_NOW: &str =
    "SELECT seq, since_ms FROM hh_episode WHERE rule_name = ? AND check_name = ?";

/// One notification, waiting.
const OUTBOX_INSERT: &str = "INSERT INTO hh_outbox (channel, rule_name, check_name, seq, kind, \
    since_ms, at_ms, due_ms, outcome, message, node, attempts, next_ms, state) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 'pending')";

/// Where and how a transition is recorded.
pub struct Recording<'a> {
    /// The episode's rule name: the rule's, or its burn name.
    pub rule: &'a str,
    /// The rule's `repeat`, in ms (0: none).
    pub repeat_ms: i64,
    /// The channels told, and when they are due.
    pub channels: &'a [&'a str],
    pub due_ms: i64,
    /// Whether a maintenance window covers the check.
    pub silenced: bool,
}

/// Records `t` (seen by `node`) if no replica did, with a notification for each of the
/// channels; whether it was recorded here. A close while silenced (in maintenance)
/// whose open was never tried cancels that open and tells nobody.
pub async fn record(
    pool: &DbPool,
    node: &str,
    t: &Transition,
    how: &Recording<'_>,
) -> Result<bool, sqlx::Error> {
    let kind = pool.kind();
    let message = t.message.as_deref().map(str::to_owned);
    let (rule, repeat_ms) = (how.rule, how.repeat_ms);
    let ensure = insert_if_missing(
        kind,
        "hh_episode (rule_name, check_name, seq, is_open, since_ms, opened_ms, closed_ms, \
         reminded_ms) VALUES (?, ?, 0, 0, 0, 0, 0, 0)",
    );
    let update = sql(kind, update_for(t.change));
    on_pool!(pool, p => {
        let mut tx = p.begin().await?;
        sqlx::query(sql(kind, &ensure))
            .bind(rule)
            .bind(&*t.check)
            .execute(&mut *tx)
            .await?;
        let query = bind_update!(sqlx::query(update), t, rule, node, message, repeat_ms);
        if query.execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        let (seq, since_ms): (i64, i64) = sqlx::query_as(sql(kind, EPISODE_NOW))
        .bind(rule)
        .bind(&*t.check)
        .fetch_one(&mut *tx)
        .await?;
        let cancelled = if how.silenced && t.change == Change::Close {
            let query = sqlx::query(sql(kind, CANCEL_OPEN));
            let query = query.bind(rule).bind(&*t.check).bind(seq);
            query.execute(&mut *tx).await?.rows_affected()
        } else {
            0
        };
        for channel in how.channels.iter().filter(|_| cancelled == 0) {
            sqlx::query(sql(kind, OUTBOX_INSERT))
            .bind(*channel)
            .bind(rule)
            .bind(&*t.check)
            .bind(seq)
            .bind(t.change.as_str())
            .bind(since_ms)
            .bind(t.at_ms)
            .bind(how.due_ms)
            .bind(t.outcome)
            .bind(message.clone())
            .bind(node)
            .bind(how.due_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    })
}

/// Every episode the store holds.
pub async fn episodes(pool: &DbPool) -> Result<Vec<Recorded>, sqlx::Error> {
    let text = "SELECT rule_name, check_name, is_open, since_ms, opened_ms, closed_ms, \
                reminded_ms, node FROM hh_episode";
    type EpisodeRow = (String, String, i64, i64, i64, i64, i64, Option<String>);
    let rows: Vec<EpisodeRow> = on_pool!(pool, p => {
        sqlx::query_as(sql(pool.kind(), text)).fetch_all(p).await?
    });
    Ok(rows
        .into_iter()
        .map(|r| Recorded {
            rule: r.0,
            check: r.1,
            open: r.2 != 0,
            since_ms: r.3,
            opened_ms: r.4,
            closed_ms: r.5,
            reminded_ms: r.6,
            node: r.7,
        })
        .collect())
}

/// Takes or renews lease `name` for `node` until `until_ms` if it is free (expired at
/// `now_ms`) or already `node`'s; whether `node` holds it. The lease's row is made the
/// first time only, so a renewal is one statement.
pub async fn lease(
    pool: &DbPool,
    name: &str,
    node: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<bool, sqlx::Error> {
    let kind = pool.kind();
    let ensure = insert_if_missing(kind, "hh_lease (name, holder, until_ms) VALUES (?, '', 0)");
    let take = "UPDATE hh_lease SET holder = ?, until_ms = ? \
                WHERE name = ? AND (holder = ? OR until_ms < ?)";
    on_pool!(pool, p => {
        for first in [true, false] {
            let taken = sqlx::query(sql(kind, take))
                .bind(node)
                .bind(until_ms)
                .bind(name)
                .bind(node)
                .bind(now_ms)
                .execute(p)
                .await?;
            if taken.rows_affected() == 1 {
                return Ok(true);
            }
            if first && sqlx::query(sql(kind, &ensure)).bind(name).execute(p).await?.rows_affected() == 0 {
                // The row was there: another node holds the lease.
                return Ok(false);
            }
        }
        Ok(false)
    })
}

/// One notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: i64,
    pub rule: String,
    pub check: String,
    pub seq: i64,
    pub change: Change,
    pub since_ms: i64,
    pub at_ms: i64,
    pub due_ms: i64,
    pub outcome: Option<String>,
    pub message: Option<String>,
    pub node: String,
    pub batch: Option<i64>,
    pub attempts: i64,
    pub next_ms: i64,
}

type PendingRow = (
    i64,
    String,
    String,
    i64,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    String,
    Option<i64>,
    i64,
    i64,
);

/// The oldest `limit` notifications waiting for `channel`, in order.
pub async fn pending(
    pool: &DbPool,
    channel: &str,
    limit: i64,
) -> Result<Vec<Pending>, sqlx::Error> {
    let text = "SELECT id, rule_name, check_name, seq, kind, since_ms, at_ms, due_ms, outcome, \
                message, node, batch, attempts, next_ms FROM hh_outbox \
                WHERE channel = ? AND state = 'pending' ORDER BY id LIMIT ?";
    let rows: Vec<PendingRow> = on_pool!(pool, p => {
        sqlx::query_as(sql(pool.kind(), text)).bind(channel).bind(limit).fetch_all(p).await?
    });
    Ok(rows
        .into_iter()
        .map(|r| Pending {
            id: r.0,
            rule: r.1,
            check: r.2,
            seq: r.3,
            change: Change::parse(&r.4).unwrap_or(Change::Open),
            since_ms: r.5,
            at_ms: r.6,
            due_ms: r.7,
            outcome: r.8,
            message: r.9,
            node: r.10,
            batch: r.11,
            attempts: r.12,
            next_ms: r.13,
        })
        .collect())
}

/// Marks the notifications `ids` as one batch, numbered `batch`, so every retry sends
/// them together under the same delivery id.
pub async fn seal(pool: &DbPool, batch: i64, ids: &[i64]) -> Result<(), sqlx::Error> {
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "UPDATE hh_outbox SET batch = ? WHERE state = 'pending' AND batch IS NULL AND id IN ({list})"
    );
    on_pool!(pool, p => {
        sqlx::query(sql(pool.kind(), &text)).bind(batch).execute(p).await?;
        Ok(())
    })
}

/// How a delivery attempt of a batch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Delivered, or given up on (`failed`): done at `at_ms`.
    Done { failed: bool, at_ms: i64 },
    /// To be tried again at `next_ms`.
    Retry { next_ms: i64 },
}

/// Records how batch `batch`'s attempt ended, with the channel's `answer`.
pub async fn settle(
    pool: &DbPool,
    batch: i64,
    settled: &Settled,
    answer: &str,
) -> Result<(), sqlx::Error> {
    let kind = pool.kind();
    on_pool!(pool, p => {
        let query = match settled {
            Settled::Done { failed, at_ms } => sqlx::query(sql(
                kind,
                "UPDATE hh_outbox SET state = ?, done_ms = ?, attempts = attempts + 1, \
                 answer = ? WHERE batch = ? AND state = 'pending'",
            ))
            .bind(if *failed { "failed" } else { "sent" })
            .bind(*at_ms),
            Settled::Retry { next_ms } => sqlx::query(sql(
                kind,
                "UPDATE hh_outbox SET next_ms = ?, attempts = attempts + 1, answer = ? \
                 WHERE batch = ? AND state = 'pending'",
            ))
            .bind(*next_ms),
        };
        query.bind(answer).bind(batch).execute(p).await?;
        Ok(())
    })
}

/// The last settled delivery of each channel: (channel, state, when, answer).
pub type LastDelivery = (String, String, i64, Option<String>);

/// Per channel: its pending notifications, and its last settled delivery.
pub async fn channel_states(
    pool: &DbPool,
) -> Result<(Vec<(String, i64)>, Vec<LastDelivery>), sqlx::Error> {
    let queued = "SELECT channel, COUNT(*) FROM hh_outbox WHERE state = 'pending' GROUP BY channel";
    let last = "SELECT o.channel, o.state, o.done_ms, o.answer FROM hh_outbox o \
                JOIN (SELECT channel, MAX(id) AS id FROM hh_outbox \
                      WHERE state <> 'pending' GROUP BY channel) l ON o.id = l.id";
    on_pool!(pool, p => {
        let queued: Vec<(String, i64)> = sqlx::query_as(sql(pool.kind(), queued)).fetch_all(p).await?;
        let last: Vec<(String, String, Option<i64>, Option<String>)> =
            sqlx::query_as(sql(pool.kind(), last)).fetch_all(p).await?;
        let last = last
            .into_iter()
            .map(|(c, s, at, a)| (c, s, at.unwrap_or(0), a))
            .collect();
        Ok((queued, last))
    })
}

/// Per check: its runs and its non-up runs (fail and errors) in the rollups at `grain`
/// from bucket `since_ms` on, every replica's.
pub async fn error_counts(
    pool: &DbPool,
    grain: &str,
    since_ms: i64,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let kind = pool.kind();
    // SUM of a BIGINT is a NUMERIC (PostgreSQL) or DECIMAL (MySQL): cast it back.
    let integer = match kind {
        Kind::Sqlite => "INTEGER",
        Kind::Postgres => "BIGINT",
        Kind::MySql => "SIGNED",
    };
    let text = format!(
        "SELECT check_name, CAST(SUM(runs) AS {integer}), CAST(SUM(fail + error) AS {integer}) \
         FROM hh_rollup WHERE grain = ? AND bucket_ms >= ? GROUP BY check_name"
    );
    on_pool!(pool, p => {
        sqlx::query_as(sql(kind, &text)).bind(grain).bind(since_ms).fetch_all(p).await
    })
}

/// A maintenance window made through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    pub id: i64,
    /// Check names or globs.
    pub checks: Vec<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub reason: Option<String>,
}

/// Adds a window; its id.
pub async fn add_window(
    pool: &DbPool,
    checks: &[String],
    start_ms: i64,
    end_ms: i64,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    let checks = serde_json::to_string(checks).expect("names serialize");
    let text = "INSERT INTO hh_maintenance (checks, start_ms, end_ms, reason, created_ms) \
                VALUES (?, ?, ?, ?, ?)";
    // Each dialect says the new id its own way.
    macro_rules! insert {
        ($kind:expr, $text:expr) => {
            sqlx::query(sql($kind, $text))
                .bind(checks.clone())
                .bind(start_ms)
                .bind(end_ms)
                .bind(reason.map(str::to_owned))
                .bind(now_ms)
        };
    }
    Ok(match pool {
        DbPool::Sqlite(p) => insert!(Kind::Sqlite, text)
            .execute(p)
            .await?
            .last_insert_rowid(),
        DbPool::MySql(p) => insert!(Kind::MySql, text)
            .execute(p)
            .await?
            .last_insert_id() as i64,
        DbPool::Postgres(p) => {
            let returning = format!("{text} RETURNING id");
            let row: sqlx::postgres::PgRow =
                insert!(Kind::Postgres, &returning).fetch_one(p).await?;
            sqlx::Row::try_get(&row, 0)?
        }
    })
}

/// The windows that end after `since_ms`, by start.
pub async fn windows(pool: &DbPool, since_ms: i64) -> Result<Vec<StoredWindow>, sqlx::Error> {
    let text = "SELECT id, checks, start_ms, end_ms, reason FROM hh_maintenance \
                WHERE end_ms > ? ORDER BY start_ms, id";
    let rows: Vec<(i64, String, i64, i64, Option<String>)> = on_pool!(pool, p => {
        sqlx::query_as(sql(pool.kind(), text)).bind(since_ms).fetch_all(p).await?
    });
    Ok(rows
        .into_iter()
        .map(|(id, checks, start_ms, end_ms, reason)| StoredWindow {
            id,
            checks: serde_json::from_str(&checks).unwrap_or_default(),
            start_ms,
            end_ms,
            reason,
        })
        .collect())
}

/// Ends window `id` at `now_ms` (if it ends later); whether there is such a window.
pub async fn end_window(pool: &DbPool, id: i64, now_ms: i64) -> Result<bool, sqlx::Error> {
    let kind = pool.kind();
    let exists = "SELECT COUNT(*) FROM hh_maintenance WHERE id = ?";
    let end = "UPDATE hh_maintenance SET end_ms = ? WHERE id = ? AND end_ms > ?";
    on_pool!(pool, p => {
        let n: i64 = sqlx::query_scalar(sql(kind, exists)).bind(id).fetch_one(p).await?;
        if n == 0 {
            return Ok(false);
        }
        sqlx::query(sql(kind, end)).bind(now_ms).bind(id).bind(now_ms).execute(p).await?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        assert_eq!(
            sql(Kind::Postgres, "a = ? AND b = ?").0,
            "a = $1 AND b = $2"
        );
        assert_eq!(sql(Kind::MySql, "a = ?").0, "a = ?");
    }
}
