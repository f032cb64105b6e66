//! The history store's writes: a batch of results and its rollups in one transaction.
//!
//! `hh_result` takes the results the store does not hold yet (a batch retried after its
//! answer was lost finds them there, by node and time, and adds nothing); `hh_rollup`
//! gets, per check and per minute, hour and day, the sums of those same results added
//! to what is there (additive upserts: every replica adds its own, so no replica
//! coordinates with another). Both in one transaction, so a rollup never counts a
//! result twice or misses one.

use std::collections::{BTreeMap, HashSet};

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};

use super::Row;
use crate::dburl::Kind;

/// Upper bounds of the rollups' latency buckets, in ms (the last bucket takes the
/// rest): health checks take a millisecond to seconds.
pub const LATENCY_BUCKETS_MS: [f64; 11] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
];
/// The columns of those buckets, and the rest's.
pub const BUCKET_COLUMNS: [&str; 12] = [
    "le_1", "le_5", "le_10", "le_25", "le_50", "le_100", "le_250", "le_500", "le_1000", "le_2500",
    "le_10000", "le_inf",
];
/// The rollups' grains: name and length in ms (days are UTC days).
pub const GRAINS: [(&str, i64); 3] = [("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];
/// The row counts a statement is made of, largest first (rollup rows have 24 bound
/// values, far below the smallest bind-parameter limit, SQLite's 32,766, at 500): a
/// batch is cut into pieces of these sizes, so each connection prepares and caches at
/// most five statements of each kind and reuses them. One statement per batch size
/// would fill the cache with large statements used once (22 MiB more RSS with 1,000
/// checks a second), and not caching them would prepare each anew (10 % of a core).
const STATEMENT_ROWS: [usize; 5] = [500, 100, 20, 5, 1];
/// The rollup columns that are sums, besides the buckets'.
const SUMMED: [&str; 7] = [
    "runs",
    "pass",
    "warn",
    "fail",
    "error",
    "latency_count",
    "latency_sum",
];

/// The sums of one check's results in one bucket.
#[derive(Debug, Default, Clone, PartialEq)]
struct Sums {
    runs: i64,
    pass: i64,
    warn: i64,
    fail: i64,
    error: i64,
    latency_count: i64,
    latency_sum: f64,
    latency_min: Option<f64>,
    latency_max: Option<f64>,
    buckets: [i64; 12],
}

impl Sums {
    fn add(&mut self, row: &Row) {
        self.runs += 1;
        match row.outcome {
            "pass" => self.pass += 1,
            "warn" => self.warn += 1,
            "fail" => self.fail += 1,
            _ => self.error += 1,
        }
        if let Some(ms) = row.latency_ms.filter(|ms| ms.is_finite()) {
            self.latency_count += 1;
            self.latency_sum += ms;
            self.latency_min = Some(self.latency_min.map_or(ms, |m| m.min(ms)));
            self.latency_max = Some(self.latency_max.map_or(ms, |m| m.max(ms)));
            let bucket = LATENCY_BUCKETS_MS
                .iter()
                .position(|bound| ms <= *bound)
                .unwrap_or(LATENCY_BUCKETS_MS.len());
            self.buckets[bucket] += 1;
        }
    }
}

/// The rollup rows `rows` add to: (check, grain, bucket start) and their sums.
fn rollups<'r>(rows: &[&'r Row]) -> BTreeMap<(&'r str, &'static str, i64), Sums> {
    let mut sums: BTreeMap<(&str, &str, i64), Sums> = BTreeMap::new();
    for row in rows {
        for (grain, length) in GRAINS {
            let bucket = row.at_ms - row.at_ms.rem_euclid(length);
            sums.entry((&*row.check, grain, bucket))
                .or_default()
                .add(row);
        }
    }
    sums
}

/// `items` cut into consecutive pieces of the sizes of [`STATEMENT_ROWS`], each as
/// large as what is left allows.
fn pieces<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut pieces = Vec::new();
    for size in STATEMENT_ROWS {
        while items.len() >= size {
            let (piece, rest) = items.split_at(size);
            pieces.push(piece);
            items = rest;
        }
    }
    pieces
}

/// What a `SET` clause calls the value an upsert brought.
fn brought(kind: Kind, column: &str) -> String {
    match kind {
        Kind::MySql => format!("VALUES({column})"),
        Kind::Sqlite | Kind::Postgres => format!("excluded.{column}"),
    }
}

/// `ON CONFLICT … DO UPDATE SET …` (or MySQL's `ON DUPLICATE KEY UPDATE …`) adding
/// the brought sums to a rollup row's, and keeping the least minimum and the greatest
/// maximum.
fn upsert_clause(kind: Kind) -> String {
    let summed = SUMMED.iter().chain(&BUCKET_COLUMNS);
    let mut sets: Vec<String> = summed
        .map(|c| format!("{c} = hh_rollup.{c} + {}", brought(kind, c)))
        .collect();
    for (column, better) in [("latency_min", "<"), ("latency_max", ">")] {
        let new = brought(kind, column);
        sets.push(format!(
            "{column} = CASE WHEN hh_rollup.{column} IS NULL OR {new} {better} hh_rollup.{column} \
             THEN {new} ELSE hh_rollup.{column} END"
        ));
    }
    let head = match kind {
        Kind::MySql => " ON DUPLICATE KEY UPDATE ",
        Kind::Sqlite | Kind::Postgres => {
            " ON CONFLICT (check_name, grain, bucket_ms) DO UPDATE SET "
        }
    };
    format!("{head}{}", sets.join(", "))
}

/// Writes the results of `rows` the store does not hold yet, and their rollups, in one
/// transaction; returns how many were new.
pub(super) async fn write<DB>(
    pool: &Pool<DB>,
    kind: Kind,
    node: &str,
    rows: &[Row],
) -> Result<u64, sqlx::Error>
where
    DB: Database,
    DB::Arguments: Default + IntoArguments<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> f64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    (String, i64): for<'r> FromRow<'r, DB::Row>,
{
    let Some(first) = rows.first() else {
        return Ok(0);
    };
    let (low, high) = rows.iter().fold((first.at_ms, first.at_ms), |(l, h), r| {
        (l.min(r.at_ms), h.max(r.at_ms))
    });
    let mut tx = pool.begin().await?;
    let mut there =
        QueryBuilder::<DB>::new("SELECT check_name, at_ms FROM hh_result WHERE node = ");
    there
        .push_bind(node.to_owned())
        .push(" AND at_ms >= ")
        .push_bind(low)
        .push(" AND at_ms <= ")
        .push_bind(high);
    let there: HashSet<(String, i64)> = there
        .build_query_as::<(String, i64)>()
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let new: Vec<&Row> = rows
        .iter()
        .filter(|r| !there.contains(&(r.check.to_string(), r.at_ms)))
        .collect();
    for piece in pieces(&new) {
        insert_results(&mut tx, node, piece).await?;
    }
    let sums: Vec<_> = rollups(&new).into_iter().collect();
    for piece in pieces(&sums) {
        upsert_rollups(&mut tx, kind, piece).await?;
    }
    tx.commit().await?;
    Ok(new.len() as u64)
}

async fn insert_results<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    node: &str,
    rows: &[&Row],
) -> Result<(), sqlx::Error>
where
    DB: Database,
    DB::Arguments: Default + IntoArguments<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::<DB>::new(
        "INSERT INTO hh_result (check_name, node, at_ms, outcome, latency_ms, message) ",
    );
    query.push_values(rows, |mut values, row| {
        values
            .push_bind(row.check.to_string())
            .push_bind(node.to_owned())
            .push_bind(row.at_ms)
            .push_bind(row.outcome.to_owned())
            .push_bind(row.latency_ms)
            .push_bind(row.message.as_deref().map(str::to_owned));
    });
    query.build().execute(&mut **tx).await?;
    Ok(())
}

async fn upsert_rollups<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    kind: Kind,
    sums: &[((&str, &str, i64), Sums)],
) -> Result<(), sqlx::Error>
where
    DB: Database,
    DB::Arguments: Default + IntoArguments<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> f64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Encode<'t, DB> + Type<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "INSERT INTO hh_rollup (check_name, grain, bucket_ms, runs, pass, warn, fail, error, \
         latency_count, latency_sum, latency_min, latency_max, {}) ",
        BUCKET_COLUMNS.join(", ")
    ));
    query.push_values(sums, |mut values, ((check, grain, bucket), s)| {
        values
            .push_bind((*check).to_owned())
            .push_bind((*grain).to_owned())
            .push_bind(*bucket)
            .push_bind(s.runs)
            .push_bind(s.pass)
            .push_bind(s.warn)
            .push_bind(s.fail)
            .push_bind(s.error)
            .push_bind(s.latency_count)
            .push_bind(s.latency_sum)
            .push_bind(s.latency_min)
            .push_bind(s.latency_max);
        for count in s.buckets {
            values.push_bind(count);
        }
    });
    query.push(upsert_clause(kind));
    query.build().execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn row(check: &str, at_ms: i64, outcome: &'static str, latency_ms: Option<f64>) -> Row {
        Row {
            check: Arc::from(check),
            at_ms,
            outcome,
            latency_ms,
            message: None,
        }
    }

    #[test]
    fn rollups_sum_each_check_per_minute_hour_and_day() {
        let rows = [
            row("db", 60_000, "pass", Some(3.0)),
            row("db", 119_999, "timeout", None),
            row("db", 120_000, "warn", Some(700.0)),
            row("api", 60_000, "fail", Some(20_000.0)),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let sums = rollups(&refs);
        let minute = &sums[&("db", "m", 60_000)];
        assert_eq!((minute.runs, minute.pass, minute.error), (2, 1, 1));
        assert_eq!((minute.latency_count, minute.latency_sum), (1, 3.0));
        assert_eq!(minute.buckets[1], 1, "3 ms is in the 5 ms bucket");
        let hour = &sums[&("db", "h", 0)];
        assert_eq!((hour.runs, hour.warn), (3, 1));
        assert_eq!(
            (hour.latency_min, hour.latency_max),
            (Some(3.0), Some(700.0))
        );
        assert_eq!(hour.buckets[8], 1, "700 ms is in the 1 s bucket");
        let api = &sums[&("api", "d", 0)];
        assert_eq!(
            (api.fail, api.buckets[11]),
            (1, 1),
            "20 s is past the last bound"
        );
        assert_eq!(
            sums.len(),
            7,
            "db: 2 minutes, 1 hour, 1 day; api: 1 of each"
        );
    }

    #[test]
    fn batches_are_cut_into_pieces_of_five_sizes() {
        let sizes = |n: usize| -> Vec<usize> {
            let items: Vec<usize> = (0..n).collect();
            let pieces = pieces(&items);
            assert_eq!(pieces.concat(), items, "in order, each once");
            pieces.iter().map(|p| p.len()).collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(477), [100, 100, 100, 100, 20, 20, 20, 5, 5, 5, 1, 1]);
        assert_eq!(sizes(1500), [500, 500, 500]);
        assert_eq!(sizes(7), [5, 1, 1]);
    }

    #[test]
    fn upserts_add_sums_and_keep_the_extremes() {
        let sqlite = upsert_clause(Kind::Sqlite);
        assert!(sqlite.starts_with(" ON CONFLICT (check_name, grain, bucket_ms) DO UPDATE SET "));
        assert!(sqlite.contains("runs = hh_rollup.runs + excluded.runs"));
        assert!(sqlite.contains("le_inf = hh_rollup.le_inf + excluded.le_inf"));
        assert!(sqlite.contains("excluded.latency_min < hh_rollup.latency_min"));
        let mysql = upsert_clause(Kind::MySql);
        assert!(mysql.contains("latency_sum = hh_rollup.latency_sum + VALUES(latency_sum)"));
        assert!(
            !mysql.contains("le_1 = hh_rollup.le_1 + VALUES(le_1), le_1"),
            "once each"
        );
    }
}
