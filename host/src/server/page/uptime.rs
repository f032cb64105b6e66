//! The status page's stored numbers: each check's uptime over the window the viewer
//! picked (`?window=`: 24h, 7d, 30d or 90d) and where its SLO stands, from the history
//! store's rollups as `GET /v1/checks/{check}/uptime` reads them, and the checks the
//! store holds that the config no longer has (listed as removed until their data ages
//! out). One grouped query per window serves every check, and its answer is kept for
//! [`STORED_FOR`], so a page refreshing every 10 s, or many viewers, do not read the
//! rollups each time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::view::CheckRow;
use crate::config::{Slo, Window};
use crate::dbpool::DbPool;
use crate::journal::from_unix_ms;
use crate::journal::read::{Outcomes, SloDoc, UptimeDoc, uptimes};
use crate::journal::results::stored_checks;
use crate::sync::lock;

/// The windows the page's switch offers (365 days is for the API).
pub const PAGE_WINDOWS: [Window; 4] = [Window::Day, Window::Week, Window::Month, Window::Quarter];
/// How long a read of the rollups serves the page: uptimes over a day or more move
/// little in 15 s, and the page refreshes every 10 s.
pub const STORED_FOR: Duration = Duration::from_secs(15);

/// Each check's uptime answer over one window, by check name.
type ByCheck = BTreeMap<String, UptimeDoc>;
/// The stored checks with their newest day bucket.
type StoredChecks = Vec<(String, i64)>;

/// A read of the store and when it was made.
struct Kept<T> {
    at: Instant,
    value: Arc<T>,
}

impl<T> Kept<T> {
    fn new(value: T) -> Kept<T> {
        Kept {
            at: Instant::now(),
            value: Arc::new(value),
        }
    }

    /// The value while it is younger than [`STORED_FOR`].
    fn fresh(kept: Option<&Kept<T>>) -> Option<Arc<T>> {
        kept.filter(|k| k.at.elapsed() < STORED_FOR)
            .map(|k| k.value.clone())
    }
}

/// Each window's runs by outcome per check, and the stored checks, as last read.
#[derive(Default)]
pub struct StoredCache {
    windows: Mutex<HashMap<Window, Kept<ByCheck>>>,
    checks: Mutex<Option<Kept<StoredChecks>>>,
}

impl StoredCache {
    /// Each check's uptime over `window` ending at `now`, read at most every
    /// [`STORED_FOR`].
    async fn uptimes(
        &self,
        pool: &DbPool,
        window: Window,
        now: SystemTime,
    ) -> Result<Arc<ByCheck>, sqlx::Error> {
        if let Some(kept) = Kept::fresh(lock(&self.windows).get(&window)) {
            return Ok(kept);
        }
        let read = Kept::new(uptimes(pool, window, now).await?);
        let value = read.value.clone();
        lock(&self.windows).insert(window, read);
        Ok(value)
    }

    /// The checks the store holds, with their newest day, read at most every
    /// [`STORED_FOR`].
    async fn checks(&self, pool: &DbPool) -> Result<Arc<StoredChecks>, sqlx::Error> {
        if let Some(kept) = Kept::fresh(lock(&self.checks).as_ref()) {
            return Ok(kept);
        }
        let read = Kept::new(stored_checks(pool).await?);
        let value = read.value.clone();
        *lock(&self.checks) = Some(read);
        Ok(value)
    }
}

/// A check the config no longer has, with stored results.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedRow {
    pub name: String,
    /// The newest day with results, `2026-12-07`.
    pub last_day: String,
    /// Over the page's window, or `–`.
    pub uptime: String,
}

/// Sets each row's uptime, runs and latency to the store's over `window` (the numbers
/// of `GET /v1/checks/{check}/uptime`) and its SLO text (`slos`: each configured
/// check's objective), and returns the stored checks that no row has.
pub async fn apply(
    cache: &StoredCache,
    pool: &DbPool,
    window: Window,
    rows: &mut [CheckRow],
    slos: &BTreeMap<String, Slo>,
    now: SystemTime,
) -> Result<Vec<RemovedRow>, sqlx::Error> {
    let over = cache.uptimes(pool, window, now).await?;
    for row in rows.iter_mut() {
        let doc = over.get(&row.name);
        row.uptime = percent(doc);
        row.window_runs = doc.map(runs_text);
        if let Some(slo) = slos.get(&row.name) {
            let by_check = cache.uptimes(pool, slo.window, now).await?;
            let outcomes = by_check.get(&row.name).map(|d| &d.outcomes);
            let doc = SloDoc::of(slo, outcomes.unwrap_or(&Outcomes::default()));
            row.slo = Some(slo_text(&doc));
        }
    }
    let removed = cache
        .checks(pool)
        .await?
        .iter()
        .filter(|(name, _)| !rows.iter().any(|r| r.name == *name))
        .map(|(name, last)| RemovedRow {
            name: name.clone(),
            last_day: day(*last),
            uptime: percent(over.get(name)),
        })
        .collect();
    Ok(removed)
}

/// `99.312 %`, or `–` without runs.
fn percent(doc: Option<&UptimeDoc>) -> String {
    doc.and_then(|d| d.uptime_percent)
        .map_or_else(|| "–".to_owned(), |p| format!("{p:.3} %"))
}

/// `1440 runs (2 failed, 0 errors) · p50 2.1, p95 12.3, p99 40 ms · data for 62 % of
/// the window` (the coverage only when the data starts within the window).
fn runs_text(doc: &UptimeDoc) -> String {
    let o = &doc.outcomes;
    let mut text = format!("{} runs ({} failed, {} errors)", doc.runs, o.fail, o.error);
    if let Some(l) = &doc.latency_ms {
        text.push_str(&format!(
            " · p50 {}, p95 {}, p99 {} ms",
            l.p50, l.p95, l.p99
        ));
    }
    if let Some(c) = doc.coverage.filter(|c| *c < 1.0) {
        text.push_str(&format!(" · data for {:.0} % of the window", c * 100.0));
    }
    text
}

/// `SLO 99.9 % (30d): 62 % of the error budget left`, or `… overspent by 40 %`.
fn slo_text(doc: &SloDoc) -> String {
    let left = doc.budget_remaining * 100.0;
    let state = if left >= 0.0 {
        format!("{left:.0} % of the error budget left")
    } else {
        format!("error budget overspent by {:.0} %", -left)
    };
    format!("SLO {} % ({}): {state}", doc.target_percent, doc.window)
}

/// The UTC date of a Unix millisecond.
fn day(ms: i64) -> String {
    humantime::format_rfc3339_seconds(from_unix_ms(ms)).to_string()[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slo_says_what_is_left_or_overspent() {
        let slo = Slo {
            target: 0.99,
            window: Window::Month,
        };
        let outcomes = |fail| Outcomes {
            pass: 100 - fail,
            fail,
            ..Outcomes::default()
        };
        let left = SloDoc::of(&slo, &outcomes(0));
        assert_eq!(
            slo_text(&left),
            "SLO 99 % (30d): 100 % of the error budget left"
        );
        let over = SloDoc::of(&slo, &outcomes(3));
        assert_eq!(
            slo_text(&over),
            "SLO 99 % (30d): error budget overspent by 200 %"
        );
        assert_eq!(percent(None), "–");
        assert_eq!(day(86_400_000 + 5), "1970-01-02");
    }
}
