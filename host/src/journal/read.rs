//! Reading the history store: a check's uptime over a window (`GET
//! /v1/checks/{check}/uptime`), from the rollups every replica adds to, so every
//! replica answers the same numbers: runs by outcome, uptime (pass and warn are up),
//! latency percentiles estimated from the buckets, and the part of the window the data
//! covers.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use sqlx::{ColumnIndex, Database, Decode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};

use super::store::{BUCKET_COLUMNS, GRAINS, LATENCY_BUCKETS_MS};
use super::unix_ms;
use crate::config::{Slo, Window};
use crate::dbpool::DbPool;

/// The rollups a window is read from: minutes for a day, hours up to a month, days
/// beyond (at most a few thousand rows).
fn grain(window: Window) -> (&'static str, i64) {
    match window {
        Window::Day => GRAINS[0],
        Window::Week | Window::Month => GRAINS[1],
        Window::Quarter | Window::Year => GRAINS[2],
    }
}

/// A check's uptime over a window, as `GET /v1/checks/{check}/uptime` answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UptimeDoc {
    pub check: String,
    pub window: &'static str,
    /// The window's start and end (now), RFC 3339 with milliseconds.
    pub from: String,
    pub to: String,
    /// The fraction of the window from the start of its first stored bucket on (1 when
    /// the data starts before the window), to 0.000001; null without results.
    pub coverage: Option<f64>,
    pub runs: i64,
    pub outcomes: Outcomes,
    /// Percent of the runs that passed or warned, to 0.001; null without runs.
    pub uptime_percent: Option<f64>,
    /// Null without a measured latency.
    pub latency_ms: Option<Latency>,
    /// The check's SLO over its own window; null for a check without one.
    pub slo: Option<SloDoc>,
}

/// A check's service level objective and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloDoc {
    /// The target, as a percentage.
    pub target_percent: f64,
    pub window: &'static str,
    /// The share of runs that may be down, as a percentage (100 − the target).
    pub error_budget_percent: f64,
    /// What is left of that budget over the window, as a fraction: 1 while no run was
    /// down (and without runs), 0 when it is spent, below 0 when it is overspent.
    pub budget_remaining: f64,
    /// The uptime over the SLO's window; null without runs.
    pub uptime_percent: Option<f64>,
}

impl SloDoc {
    /// Where `slo` stands by the runs of its window, `outcomes`.
    pub fn of(slo: &Slo, outcomes: &Outcomes) -> SloDoc {
        let round = |x: f64| (x * 1e6).round() / 1e6;
        let runs = outcomes.runs();
        let down = (runs > 0).then(|| (outcomes.fail + outcomes.error) as f64 / runs as f64);
        SloDoc {
            target_percent: round(slo.target * 100.0),
            window: slo.window.as_str(),
            error_budget_percent: round((1.0 - slo.target) * 100.0),
            budget_remaining: round(1.0 - down.unwrap_or(0.0) / (1.0 - slo.target)),
            uptime_percent: outcomes.uptime_percent(),
        }
    }
}

/// Where `check`'s `slo` stands at `now`, from the store behind `pool`.
pub async fn slo(
    pool: &DbPool,
    check: &str,
    slo: &Slo,
    now: SystemTime,
) -> Result<SloDoc, sqlx::Error> {
    let over = uptime(pool, check, slo.window, now).await?;
    Ok(SloDoc::of(slo, &over.outcomes))
}

/// Runs by outcome; `error` counts timeouts, traps, out-of-fuel, memory and load errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcomes {
    pub pass: i64,
    pub warn: i64,
    pub fail: i64,
    pub error: i64,
}

impl Outcomes {
    /// All the runs these count.
    pub fn runs(&self) -> i64 {
        self.pass + self.warn + self.fail + self.error
    }

    /// Percent of the runs that passed or warned, to 0.001; `None` without runs.
    pub fn uptime_percent(&self) -> Option<f64> {
        let runs = self.runs();
        (runs > 0).then(|| {
            let up = (self.pass + self.warn) as f64;
            (up * 100_000.0 / runs as f64).round() / 1000.0
        })
    }
}

/// The latency over the window: exact count, mean, minimum and maximum, and
/// percentiles estimated from the buckets (linear within a bucket, as Prometheus'
/// `histogram_quantile`, kept between the minimum and the maximum).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub count: i64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// The sums of the rollup rows of a window.
#[derive(Default)]
struct Totals {
    first_bucket: Option<i64>,
    outcomes: Outcomes,
    latency_count: i64,
    latency_sum: f64,
    latency_min: Option<f64>,
    latency_max: Option<f64>,
    buckets: [i64; 12],
}

/// The uptime of `check` over `window` ending at `now`, from the store behind `pool`.
pub async fn uptime(
    pool: &DbPool,
    check: &str,
    window: Window,
    now: SystemTime,
) -> Result<UptimeDoc, sqlx::Error> {
    let mut all = read_totals(pool, window, now, Some(check)).await?;
    let totals = all.remove(check).unwrap_or_default();
    Ok(UptimeDoc::of(check, window, now, totals))
}

/// The uptime of every check with rollups in `window` ending at `now`, by name (the
/// status page: one query for all checks).
pub async fn uptimes(
    pool: &DbPool,
    window: Window,
    now: SystemTime,
) -> Result<BTreeMap<String, UptimeDoc>, sqlx::Error> {
    let all = read_totals(pool, window, now, None).await?;
    let docs = all.into_iter().map(|(check, totals)| {
        let doc = UptimeDoc::of(&check, window, now, totals);
        (check, doc)
    });
    Ok(docs.collect())
}

impl UptimeDoc {
    /// The document of `check`'s `totals` over `window` ending at `now`.
    fn of(check: &str, window: Window, now: SystemTime, totals: Totals) -> UptimeDoc {
        let (from_ms, to_ms) = bounds(window, now);
        let span = (to_ms - from_ms) as f64;
        let coverage = totals
            .first_bucket
            .map(|first| ((to_ms - first.max(from_ms)) as f64 / span).clamp(0.0, 1.0));
        let runs = totals.outcomes.runs();
        UptimeDoc {
            check: check.to_owned(),
            window: window.as_str(),
            from: rfc3339(from_ms),
            to: rfc3339(to_ms),
            coverage: coverage.map(|c| (c * 1e6).round() / 1e6),
            runs,
            uptime_percent: totals.outcomes.uptime_percent(),
            latency_ms: latency(&totals),
            outcomes: totals.outcomes,
            slo: None,
        }
    }
}

/// The sums of the rollups over `window` ending at `now`, of `check` or of every check.
async fn read_totals(
    pool: &DbPool,
    window: Window,
    now: SystemTime,
    check: Option<&str>,
) -> Result<BTreeMap<String, Totals>, sqlx::Error> {
    let (from_ms, _) = bounds(window, now);
    let (grain, since) = first_bucket(window, from_ms);
    // SUM of a BIGINT is a NUMERIC (PostgreSQL) or DECIMAL (MySQL): cast it back.
    match pool {
        DbPool::Sqlite(pool) => totals(pool, "INTEGER", grain, since, check).await,
        DbPool::Postgres(pool) => totals(pool, "BIGINT", grain, since, check).await,
        DbPool::MySql(pool) => totals(pool, "SIGNED", grain, since, check).await,
    }
}

/// The window's start and end (`now`), in Unix milliseconds.
fn bounds(window: Window, now: SystemTime) -> (i64, i64) {
    let to_ms = unix_ms(now);
    (to_ms - window.duration().as_millis() as i64, to_ms)
}

/// The grain a window is read at and the start of the bucket holding its start
/// (`from_ms`): that bucket counts whole, so a window reads at most one bucket of its
/// grain more than it says.
fn first_bucket(window: Window, from_ms: i64) -> (&'static str, i64) {
    let (grain, length) = grain(window);
    (grain, from_ms - from_ms.rem_euclid(length))
}

/// The sums of the rollup rows at `grain` from bucket `since` on, per check (`check`
/// only, when given), summed by the database; `integer` is the dialect's name for the
/// integer type a sum is cast back to.
async fn totals<DB>(
    pool: &Pool<DB>,
    integer: &str,
    grain: &str,
    since: i64,
    check: Option<&str>,
) -> Result<BTreeMap<String, Totals>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: Default + IntoArguments<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + Decode<'t, DB> + Type<DB>,
    for<'t> f64: Decode<'t, DB> + Type<DB>,
    for<'t> Option<f64>: Decode<'t, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
{
    let sums: Vec<String> = ["pass", "warn", "fail", "error", "latency_count"]
        .iter()
        .chain(&BUCKET_COLUMNS)
        .map(|c| format!("CAST(SUM({c}) AS {integer})"))
        .collect();
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT check_name, MIN(bucket_ms), SUM(latency_sum), MIN(latency_min), \
         MAX(latency_max), {} FROM hh_rollup WHERE grain = ",
        sums.join(", ")
    ));
    query
        .push_bind(grain.to_owned())
        .push(" AND bucket_ms >= ")
        .push_bind(since);
    if let Some(check) = check {
        query.push(" AND check_name = ").push_bind(check.to_owned());
    }
    query.push(" GROUP BY check_name");
    let mut all = BTreeMap::new();
    for row in query.build().fetch_all(pool).await? {
        let mut t = Totals {
            first_bucket: Some(row.try_get(1)?),
            latency_sum: row.try_get(2)?,
            latency_min: row.try_get(3)?,
            latency_max: row.try_get(4)?,
            outcomes: Outcomes {
                pass: row.try_get(5)?,
                warn: row.try_get(6)?,
                fail: row.try_get(7)?,
                error: row.try_get(8)?,
            },
            latency_count: row.try_get(9)?,
            buckets: [0; 12],
        };
        for (i, count) in t.buckets.iter_mut().enumerate() {
            *count = row.try_get(10 + i)?;
        }
        all.insert(row.try_get(0)?, t);
    }
    Ok(all)
}

/// The latency summary of `t`, when it measured any.
fn latency(t: &Totals) -> Option<Latency> {
    let (min, max) = (t.latency_min?, t.latency_max?);
    let round = |ms: f64| (ms * 100.0).round() / 100.0;
    (t.latency_count > 0).then(|| Latency {
        count: t.latency_count,
        mean: round(t.latency_sum / t.latency_count as f64),
        min,
        max,
        p50: round(quantile(&t.buckets, 0.50, min, max)),
        p95: round(quantile(&t.buckets, 0.95, min, max)),
        p99: round(quantile(&t.buckets, 0.99, min, max)),
    })
}

/// The `q` quantile of the bucket counts: linear within the bucket it falls in, the
/// first bucket starting at `min` and the last ending at `max`.
fn quantile(buckets: &[i64; 12], q: f64, min: f64, max: f64) -> f64 {
    let total: i64 = buckets.iter().sum();
    let target = q * total as f64;
    let mut below = 0.0;
    for (i, &count) in buckets.iter().enumerate() {
        let count = count as f64;
        if count > 0.0 && below + count >= target {
            let lower = if i == 0 {
                min
            } else {
                LATENCY_BUCKETS_MS[i - 1].max(min)
            };
            let upper = LATENCY_BUCKETS_MS.get(i).map_or(max, |b| b.min(max));
            let estimate = lower + (upper - lower) * ((target - below) / count);
            return estimate.clamp(min, max);
        }
        below += count;
    }
    max
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(super::from_unix_ms(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_as_they_print() {
        for w in [
            Window::Day,
            Window::Week,
            Window::Month,
            Window::Quarter,
            Window::Year,
        ] {
            assert_eq!(Window::parse(w.as_str()), Some(w));
        }
        assert_eq!(Window::parse("1y"), None);
        assert_eq!(grain(Window::Day).0, "m");
        assert_eq!(grain(Window::Month).0, "h");
        assert_eq!(grain(Window::Year).0, "d");
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket_and_stay_between_min_and_max() {
        // 100 results: 50 in (1, 5] ms, 45 in (5, 10], 5 in (100, 250].
        let mut buckets = [0; 12];
        (buckets[1], buckets[2], buckets[6]) = (50, 45, 5);
        assert_eq!(quantile(&buckets, 0.50, 2.0, 200.0), 5.0);
        assert_eq!(quantile(&buckets, 0.95, 2.0, 200.0), 10.0);
        assert_eq!(quantile(&buckets, 0.99, 2.0, 200.0), 100.0 + 100.0 * 0.8);
        // All in the first bucket: between the minimum and its bound.
        let mut one = [0; 12];
        one[0] = 4;
        assert_eq!(quantile(&one, 0.5, 0.2, 0.6), 0.4);
        // Past the last bound: up to the maximum.
        let mut slow = [0; 12];
        slow[11] = 2;
        assert_eq!(quantile(&slow, 1.0, 12_000.0, 30_000.0), 30_000.0);
    }
}
