//! The status page's view model: what the template lays out, computed here. Each
//! check becomes a [`CheckRow`] (status word and icon, age, uptime, a latency
//! sparkline and an outcome strip as SVG geometry); the usage summary becomes a
//! [`UsageView`] (totals, the by-operation table, cost by day as bars). A history of
//! 1,440 results is bucketed into [`BUCKETS`] slots so the page stays small.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::escape::escape_controls;
use crate::health::history::RecordIter;
use crate::health::{CheckState, CheckView, Health};
use crate::runtime::Outcome;
use crate::usage::report::Sums;
use crate::usage::summary::Summary;

/// Slots of the sparkline and of the outcome strip: with a full history (1,440
/// results) one slot is 24 results, so a page of 50 checks stays near 100 KB.
pub const BUCKETS: usize = 60;
/// Width of one slot in the SVG's user units.
const SLOT: usize = 2;
/// The SVGs' size in user units (the CSS scales them).
pub const CHART_WIDTH: usize = BUCKETS * SLOT;
pub const CHART_HEIGHT: usize = 16;
/// The cost-by-day chart's size: a bar per day, at most 30.
const DAY_SLOT: usize = 12;
pub const DAYS_HEIGHT: usize = 60;

/// One check as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    pub name: String,
    /// The CSS class: `pass`, `warn`, `fail` or `wait` (loading, not run yet).
    pub class: &'static str,
    /// A symbol beside the word, so status is not told by colour alone.
    pub icon: &'static str,
    /// `passing`, `warning`, `failing`, `stale`, `loading`, `not run yet`, `not loaded`.
    pub word: &'static str,
    /// The outcome when it says more than the word (`timeout`, `out_of_fuel`).
    pub outcome: Option<&'static str>,
    pub critical: bool,
    /// `12 s ago`, or `–` before the first result.
    pub age: String,
    /// `99.31 %` over the results kept in memory, or the store's over the page's
    /// window (`99.312 %`), or `–`.
    pub uptime: String,
    /// Where the check's SLO stands, for a check with one and a history store.
    pub slo: Option<String>,
    /// Runs, failures and latency percentiles over the page's window, from the store.
    pub window_runs: Option<String>,
    /// The latest latency (`12.5 ms`), or `–`.
    pub latency: String,
    /// The sparkline's `points` (the largest latency of each slot), empty without any.
    pub spark: String,
    /// The outcome strip: one path per outcome class, a bar per slot (the worst
    /// outcome of its results), fail bars tallest.
    pub strip: Strip,
    /// How many results the strip and sparkline cover.
    pub runs: usize,
    pub last_failure: Option<Failure>,
    /// `until 2026-12-07T04:00:00Z (database upgrade)` while a maintenance window
    /// silences its alerts.
    pub maintenance: Option<String>,
}

/// The outcome strip's bars as three path `d` strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Strip {
    pub pass: String,
    pub warn: String,
    pub fail: String,
}

/// The newest result that did not count as up.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub ago: String,
    pub outcome: &'static str,
    /// Its message, only when details may be shown (controls escaped).
    pub message: Option<String>,
}

/// The usage section's numbers over one range.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageView {
    pub range: &'static str,
    pub cost: String,
    pub requests: i64,
    pub tokens: i64,
    pub errors: i64,
    pub error_rate: String,
    pub mean_latency: String,
    pub active_users: i64,
    pub cost_per_user: String,
    pub by_operation: Vec<OperationRow>,
    pub days: Vec<DayBar>,
    pub days_width: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OperationRow {
    pub operation: String,
    pub cost: String,
    pub tokens: i64,
    pub requests: i64,
}

/// One bar of the cost-by-day chart, in user units.
#[derive(Debug, Clone, PartialEq)]
pub struct DayBar {
    pub x: usize,
    pub y: usize,
    pub height: usize,
    pub date: String,
    pub cost: String,
}

/// Every check's row at `now`, in name order, and whether they add up to healthy
/// (as `/health` decides); messages only with `details`. Each check's history is
/// read in place under the history lock, one check at a time.
pub fn checks(health: &Health, now: SystemTime, details: bool) -> (Vec<CheckRow>, bool) {
    let views = health.views(&[]);
    let rows = views
        .iter()
        .map(|view| {
            health.scan_history(&view.name, now, |records, uptime| {
                row(view, records, uptime, now, details)
            })
        })
        .collect();
    (rows, crate::health::healthy(&views))
}

/// One check's row from its view and its kept results.
pub fn row(
    view: &CheckView,
    records: RecordIter<'_>,
    uptime: Option<f64>,
    now: SystemTime,
    details: bool,
) -> CheckRow {
    let (class, icon, word) = status(view);
    // The error's reason, beside the word; the word says the rest.
    let outcome = match view.state {
        CheckState::Stale {
            outcome: Outcome::Error(kind),
            ..
        }
        | CheckState::Reported(Outcome::Error(kind)) => Some(kind.label()),
        _ => None,
    };
    let runs = records.len();
    let last_failure = records
        .clone()
        .rev()
        .find(|r| !r.outcome().is_healthy())
        .map(|r| Failure {
            ago: ago(now.duration_since(r.at()).unwrap_or_default()),
            outcome: r.outcome().label(),
            message: r
                .message()
                .filter(|_| details)
                .map(|m| escape_controls(m).into_owned()),
        });
    let (spark, strip) = charts(records);
    CheckRow {
        name: view.name.clone(),
        class,
        icon,
        word,
        outcome,
        critical: view.critical,
        age: view
            .age_seconds
            .map_or_else(|| "–".to_owned(), |s| ago(Duration::from_secs_f64(s))),
        uptime: uptime.map_or_else(|| "–".to_owned(), |u| format!("{u:.2} %")),
        slo: None,
        window_runs: None,
        latency: view
            .latency_ms
            .map_or_else(|| "–".to_owned(), |ms| format!("{ms} ms")),
        spark,
        strip,
        runs,
        last_failure,
        maintenance: None,
    }
}

/// The class, icon and word of a check's status.
fn status(view: &CheckView) -> (&'static str, &'static str, &'static str) {
    match view.state {
        _ if view.load_error.is_some() => ("fail", "✗", "not loaded"),
        CheckState::Loading => ("wait", "…", "loading"),
        CheckState::NotLoaded(_) => ("fail", "✗", "not loaded"),
        CheckState::NotRun => ("wait", "○", "not run yet"),
        CheckState::Reported(Outcome::Pass) => ("pass", "✓", "passing"),
        CheckState::Reported(Outcome::Warn) => ("warn", "!", "warning"),
        // A result past max_age keeps its outcome but fails as stale.
        CheckState::Stale {
            outcome: Outcome::Pass | Outcome::Warn,
            ..
        } => ("fail", "✗", "stale"),
        CheckState::Stale { .. } | CheckState::Reported(_) => ("fail", "✗", "failing"),
    }
}

/// The sparkline's points and the outcome strip of `records`, in [`BUCKETS`] slots
/// (the newest at the right; fewer results than slots leave the left empty).
fn charts(records: RecordIter<'_>) -> (String, Strip) {
    let n = records.len();
    let per = n.div_ceil(BUCKETS).max(1);
    let slots = n.div_ceil(per);
    let first = BUCKETS - slots;
    // The worst outcome and largest latency of each slot.
    let mut worst = [0u8; BUCKETS];
    let mut latency = [f32::NAN; BUCKETS];
    for (i, record) in records.enumerate() {
        let slot = first + i / per;
        let rank = match record.outcome() {
            Outcome::Pass => 1,
            Outcome::Warn => 2,
            _ => 3,
        };
        worst[slot] = worst[slot].max(rank);
        if let Some(ms) = record.latency_ms() {
            let ms = ms as f32;
            if latency[slot].is_nan() || ms > latency[slot] {
                latency[slot] = ms;
            }
        }
    }
    let mut strip = Strip::default();
    for (slot, rank) in worst.iter().enumerate().skip(first) {
        let (path, height) = match rank {
            1 => (&mut strip.pass, 6),
            2 => (&mut strip.warn, 11),
            3 => (&mut strip.fail, CHART_HEIGHT),
            _ => continue,
        };
        let _ = write!(
            path,
            "M{} {}h{}v{height}h-{}z",
            slot * SLOT,
            CHART_HEIGHT - height,
            SLOT - 1,
            SLOT - 1
        );
    }
    let max = latency
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(0f32, f32::max);
    let mut spark = String::new();
    if max > 0.0 {
        let span = (CHART_HEIGHT - 2) as f32;
        for (slot, ms) in latency.iter().enumerate().skip(first) {
            if !ms.is_nan() {
                let y = 1.0 + span - ms / max * span;
                let _ = write!(spark, "{},{y:.1} ", slot * SLOT + SLOT / 2);
            }
        }
        spark.pop();
    }
    (spark, strip)
}

/// `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// Dollars with cents, or four decimals below a dollar: AI calls cost fractions.
fn dollars(x: f64) -> String {
    if x.abs() >= 1.0 || x == 0.0 {
        format!("${x:.2}")
    } else {
        format!("${x:.4}")
    }
}

/// The usage section of `summary`.
pub fn usage(summary: &Summary) -> UsageView {
    let t: &Sums = &summary.total;
    let max = summary
        .by_day
        .iter()
        .map(|(_, s)| s.cost_dollars)
        .fold(0f64, f64::max);
    let days = summary
        .by_day
        .iter()
        .enumerate()
        .map(|(i, (date, sums))| {
            let share = if max > 0.0 {
                sums.cost_dollars / max
            } else {
                0.0
            };
            let height = ((share * DAYS_HEIGHT as f64).round() as usize).max(1);
            DayBar {
                x: i * DAY_SLOT,
                y: DAYS_HEIGHT - height,
                height,
                date: date.clone().unwrap_or_else(|| "unknown".to_owned()),
                cost: dollars(sums.cost_dollars),
            }
        })
        .collect::<Vec<_>>();
    UsageView {
        range: summary.range.as_str(),
        cost: dollars(t.cost_dollars),
        requests: t.calls,
        tokens: t.total_tokens,
        errors: t.errors,
        error_rate: if t.calls > 0 {
            format!("{:.1} %", t.errors as f64 * 100.0 / t.calls as f64)
        } else {
            "–".to_owned()
        },
        mean_latency: t
            .mean_latency_ms
            .map_or_else(|| "–".to_owned(), |ms| format!("{ms:.0} ms")),
        active_users: t.active_users,
        cost_per_user: t
            .cost_per_active_user()
            .map_or_else(|| "–".to_owned(), dollars),
        by_operation: summary
            .by_operation
            .iter()
            .map(|(op, sums)| OperationRow {
                operation: op
                    .as_deref()
                    .map_or_else(|| "(none)".to_owned(), |o| escape_controls(o).into_owned()),
                cost: dollars(sums.cost_dollars),
                tokens: sums.total_tokens,
                requests: sums.calls,
            })
            .collect(),
        days_width: (days.len() * DAY_SLOT).max(DAY_SLOT),
        days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::history::History;
    use crate::runtime::ErrorKind;
    use crate::usage::summary::Range;

    fn view(state: CheckState) -> CheckView {
        CheckView {
            name: "db".into(),
            critical: true,
            healthy: matches!(state, CheckState::Reported(o) if o.is_healthy()),
            state,
            message: Some("m".into()),
            latency_ms: Some(12.5),
            age_seconds: Some(75.0),
            finished: Some(SystemTime::UNIX_EPOCH),
            load_error: None,
            pending: false,
            digest: None,
        }
    }

    fn bad_wasm() -> std::sync::Arc<crate::runtime::LoadError> {
        std::sync::Arc::new(crate::runtime::LoadError::Compile {
            check: "db".into(),
            reason: "bad wasm".into(),
        })
    }

    fn row_of(history: &mut History, view: &CheckView, now: SystemTime, details: bool) -> CheckRow {
        history.scan(now, |records, uptime| {
            row(view, records, uptime, now, details)
        })
    }

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn statuses_have_a_word_and_an_icon() {
        let stale = |outcome| CheckState::Stale {
            outcome,
            age: Duration::from_secs(600),
        };
        let cases = [
            (
                CheckState::Reported(Outcome::Pass),
                ("pass", "✓", "passing"),
            ),
            (
                CheckState::Reported(Outcome::Warn),
                ("warn", "!", "warning"),
            ),
            (
                CheckState::Reported(Outcome::Fail),
                ("fail", "✗", "failing"),
            ),
            (
                CheckState::Reported(Outcome::Error(ErrorKind::Timeout)),
                ("fail", "✗", "failing"),
            ),
            (stale(Outcome::Pass), ("fail", "✗", "stale")),
            (stale(Outcome::Fail), ("fail", "✗", "failing")),
            (CheckState::Loading, ("wait", "…", "loading")),
            (CheckState::NotRun, ("wait", "○", "not run yet")),
            (
                CheckState::NotLoaded(bad_wasm()),
                ("fail", "✗", "not loaded"),
            ),
        ];
        for (state, expected) in cases {
            assert_eq!(status(&view(state.clone())), expected, "{state:?}");
        }
        // A newer file that failed to load, whatever still runs.
        let mut broken = view(CheckState::Reported(Outcome::Pass));
        broken.load_error = Some(bad_wasm());
        assert_eq!(status(&broken).2, "not loaded");
    }

    #[test]
    fn a_row_has_age_uptime_and_the_last_failure_with_details_only() {
        let t = start();
        let mut h = History::default();
        h.push(t, Outcome::Pass, Some(10.0), Some("ok"));
        h.push(
            t + Duration::from_secs(60),
            Outcome::Error(ErrorKind::Timeout),
            None,
            Some("slow\nx"),
        );
        h.push(
            t + Duration::from_secs(120),
            Outcome::Pass,
            Some(20.0),
            Some("ok"),
        );
        let now = t + Duration::from_secs(180);
        let v = view(CheckState::Reported(Outcome::Pass));
        let r = row_of(&mut h, &v, now, true);
        assert_eq!(
            (r.word, r.age.as_str(), r.uptime.as_str()),
            ("passing", "1 min ago", "66.67 %")
        );
        assert_eq!(r.latency, "12.5 ms");
        assert_eq!(r.runs, 3);
        let failure = r.last_failure.unwrap();
        assert_eq!(
            (failure.ago.as_str(), failure.outcome),
            ("2 min ago", "timeout")
        );
        assert_eq!(
            failure.message.as_deref(),
            Some("slow\\nx"),
            "controls escaped"
        );
        let hidden = row_of(&mut h, &v, now, false);
        assert_eq!(hidden.last_failure.unwrap().message, None);
        // Three results fill the three rightmost slots; the timeout is tallest.
        let x = |slot: usize| slot * SLOT;
        assert_eq!(r.strip.fail, format!("M{} 0h1v16h-1z", x(BUCKETS - 2)));
        assert!(
            r.strip
                .pass
                .starts_with(&format!("M{} 10h1v6h-1z", x(BUCKETS - 3)))
        );
        assert_eq!(
            r.spark,
            format!("{},8.0 {},1.0", x(BUCKETS - 3) + 1, x(BUCKETS - 1) + 1)
        );
    }

    #[test]
    fn a_full_history_is_bucketed_into_the_fixed_slots() {
        let t = start();
        let mut h = History::default();
        for i in 0..1440u64 {
            let outcome = if i == 700 {
                Outcome::Fail
            } else {
                Outcome::Pass
            };
            h.push(
                t + Duration::from_secs(i * 60),
                outcome,
                Some(i as f64),
                None,
            );
        }
        let now = t + Duration::from_secs(1440 * 60);
        let r = row_of(
            &mut h,
            &view(CheckState::Reported(Outcome::Pass)),
            now,
            true,
        );
        assert_eq!(r.runs, 1440);
        assert_eq!(r.spark.split(' ').count(), BUCKETS);
        assert_eq!(r.strip.pass.matches('M').count(), BUCKETS - 1);
        // Result 700 is in slot 700 / 24 = 29.
        assert_eq!(r.strip.fail, format!("M{} 0h1v16h-1z", 29 * SLOT));
    }

    #[test]
    fn a_check_without_results_has_empty_charts() {
        let mut h = History::default();
        let mut v = view(CheckState::NotRun);
        v.finished = None;
        v.age_seconds = None;
        v.latency_ms = None;
        let r = row_of(&mut h, &v, start(), true);
        assert_eq!((r.spark.as_str(), r.strip.clone()), ("", Strip::default()));
        assert_eq!(
            (r.age.as_str(), r.uptime.as_str(), r.latency.as_str()),
            ("–", "–", "–")
        );
        assert_eq!(r.last_failure, None);
    }

    #[test]
    fn usage_has_totals_operations_and_a_bar_per_day() {
        let sums = |calls: i64, cost: f64, users: i64| Sums {
            calls,
            errors: calls / 4,
            prompt_tokens: calls,
            completion_tokens: calls,
            total_tokens: calls * 2,
            cost_dollars: cost,
            active_users: users,
            mean_latency_ms: Some(250.4),
        };
        let summary = Summary {
            range: Range::Week,
            total: sums(4, 3.0, 2),
            by_operation: vec![
                (Some("tarot".into()), sums(3, 2.5, 2)),
                (None, sums(1, 0.5, 0)),
            ],
            by_day: vec![
                (Some("2026-11-28".into()), sums(1, 1.0, 1)),
                (Some("2026-11-29".into()), sums(3, 2.0, 2)),
            ],
        };
        let u = usage(&summary);
        assert_eq!(
            (u.range, u.cost.as_str(), u.cost_per_user.as_str()),
            ("7d", "$3.00", "$1.50")
        );
        assert_eq!(
            (u.error_rate.as_str(), u.mean_latency.as_str()),
            ("25.0 %", "250 ms")
        );
        assert_eq!(u.by_operation[1].operation, "(none)");
        assert_eq!(u.by_operation[1].cost, "$0.5000");
        assert_eq!((u.days[0].height, u.days[0].y), (30, 30));
        assert_eq!(
            (u.days[1].x, u.days[1].height, u.days[1].y),
            (DAY_SLOT, 60, 0)
        );
        assert_eq!(u.days_width, 2 * DAY_SLOT);
    }

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        let s = Duration::from_secs;
        assert_eq!(ago(s(5)), "5 s ago");
        assert_eq!(ago(s(61)), "1 min ago");
        assert_eq!(ago(s(7300)), "2 h ago");
        assert_eq!(ago(s(200_000)), "2 d ago");
    }
}
