//! Maintenance windows (`[[alerts.maintenance]]` in the config, and those made through
//! `POST /v1/maintenance`): which checks, and when: one-off (`start`, `end`) or weekly
//! in a time zone (`weekly = "Sun 02:00-04:00"`, `time_zone = "Europe/Moscow"`). A
//! weekly window whose end is not after its start runs past midnight; one that a
//! daylight-saving change shortens or lengthens keeps its wall-clock times.

use std::time::Duration;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use toml::Spanned;

use super::alerts::glob;
use super::raw::RawMaintenance;
use crate::problems::Problems;

/// One window.
#[derive(Debug, Clone, PartialEq)]
pub struct Maintenance {
    /// Check names or globs.
    pub checks: Vec<String>,
    pub schedule: Schedule,
    pub reason: Option<String>,
}

/// When a window is.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// From `start_ms` to `end_ms` (Unix milliseconds, the end excluded).
    Once { start_ms: i64, end_ms: i64 },
    /// Every week on `day` from `start`, for `length`, in `zone`.
    Weekly {
        day: Weekday,
        start: Time,
        length: Duration,
        zone: TimeZone,
        /// As written, for answers.
        text: String,
    },
}

impl Maintenance {
    pub fn covers(&self, check: &str) -> bool {
        self.checks.iter().any(|p| glob(p, check))
    }

    /// When the window that is on at `at_ms` ends, if one is.
    pub fn ends_after(&self, at_ms: i64) -> Option<i64> {
        self.occurrences(at_ms, at_ms + 1)
            .first()
            .map(|(_, end)| *end)
    }

    /// The window's occurrences that overlap `from_ms..to_ms`, as (start, end), oldest
    /// first; a weekly window's over at most [`OCCURRENCES_MAX_DAYS`] days before `to_ms`.
    pub fn occurrences(&self, from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
        match &self.schedule {
            Schedule::Once { start_ms, end_ms } => {
                if *start_ms < to_ms && from_ms < *end_ms {
                    vec![(*start_ms, *end_ms)]
                } else {
                    Vec::new()
                }
            }
            Schedule::Weekly {
                day,
                start,
                length,
                zone,
                ..
            } => weekly_occurrences(*day, *start, *length, zone, from_ms, to_ms),
        }
    }
}

/// How far back a weekly window's occurrences are looked for: a history's widest
/// range, with a day for one that began the day before.
pub const OCCURRENCES_MAX_DAYS: i64 = 400;

/// The weekly occurrences that overlap `from_ms..to_ms`: each began on a `day` from
/// the day before `from_ms` (a window is shorter than a day) to `to_ms`, in `zone`.
fn weekly_occurrences(
    day: Weekday,
    start: Time,
    length: Duration,
    zone: &TimeZone,
    from_ms: i64,
    to_ms: i64,
) -> Vec<(i64, i64)> {
    let (Ok(from), Ok(to)) = (
        Timestamp::from_millisecond(from_ms),
        Timestamp::from_millisecond(to_ms),
    ) else {
        return Vec::new();
    };
    let Ok(length) = jiff::SignedDuration::try_from(length) else {
        return Vec::new();
    };
    let last = to.to_zoned(zone.clone()).date();
    let first = from
        .to_zoned(zone.clone())
        .date()
        .yesterday()
        .unwrap_or(last);
    let days = i64::from((last - first).get_days()).clamp(0, OCCURRENCES_MAX_DAYS);
    let mut out = Vec::new();
    for back in (0..=days).rev() {
        let Ok(date) = last.checked_sub(back.days()) else {
            continue;
        };
        if date.weekday() != day {
            continue;
        }
        let begins = date.to_datetime(start);
        let Ok(ends) = begins.checked_add(length) else {
            continue;
        };
        let (Ok(b), Ok(e)) = (begins.to_zoned(zone.clone()), ends.to_zoned(zone.clone())) else {
            continue;
        };
        let (b, e) = (
            b.timestamp().as_millisecond(),
            e.timestamp().as_millisecond(),
        );
        if b < to_ms && from_ms < e {
            out.push((b, e));
        }
    }
    out
}

/// `"Sun 02:00-04:00"`: the day, the start, and the length (past midnight when the end
/// is not after the start).
pub fn parse_weekly(text: &str) -> Result<(Weekday, Time, Duration), String> {
    let bad = || format!("'{text}' is not a weekly window like \"Sun 02:00-04:00\"");
    let (day, times) = text.trim().split_once(' ').ok_or_else(bad)?;
    let day = match day.to_ascii_lowercase().get(..3) {
        Some("mon") => Weekday::Monday,
        Some("tue") => Weekday::Tuesday,
        Some("wed") => Weekday::Wednesday,
        Some("thu") => Weekday::Thursday,
        Some("fri") => Weekday::Friday,
        Some("sat") => Weekday::Saturday,
        Some("sun") => Weekday::Sunday,
        _ => return Err(bad()),
    };
    let (from, to) = times.trim().split_once('-').ok_or_else(bad)?;
    let time = |t: &str| t.trim().parse::<Time>().map_err(|_| bad());
    let (from, to) = (time(from)?, time(to)?);
    let minutes = |t: Time| i64::from(t.hour()) * 60 + i64::from(t.minute());
    let mut length = minutes(to) - minutes(from);
    if length <= 0 {
        length += 24 * 60;
    }
    Ok((day, from, Duration::from_secs(length as u64 * 60)))
}

/// An RFC 3339 instant in Unix milliseconds.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| format!("'{text}' is not an instant like \"2026-12-10T02:00:00Z\""))
}

/// Each `[[alerts.maintenance]]`, every problem located.
pub(super) fn resolve_maintenance(
    raw: &[Spanned<RawMaintenance>],
    problems: &mut Problems,
) -> Vec<Maintenance> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let key = |k: &str| format!("alerts.maintenance[{i}].{k}");
            let schedule = schedule(m, &key, problems)?;
            let r = m.get_ref();
            Some(Maintenance {
                checks: r.checks.clone().unwrap_or_else(|| vec!["*".to_owned()]),
                schedule,
                reason: r.reason.clone(),
            })
        })
        .collect()
}

fn schedule(
    raw: &Spanned<RawMaintenance>,
    key: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) -> Option<Schedule> {
    let m = raw.get_ref();
    let instant = |field: &Option<Spanned<String>>, name: &str, problems: &mut Problems| {
        let f = field.as_ref()?;
        parse_instant(f.get_ref())
            .map_err(|e| problems.add(f.span(), key(name), e))
            .ok()
    };
    match (&m.weekly, &m.start, &m.end) {
        (None, Some(_), Some(_)) => {
            let start_ms = instant(&m.start, "start", problems)?;
            let end_ms = instant(&m.end, "end", problems)?;
            if end_ms <= start_ms {
                let span = m.end.as_ref().map_or(raw.span(), Spanned::span);
                problems.add(span, key("end"), "must be after start");
                return None;
            }
            Some(Schedule::Once { start_ms, end_ms })
        }
        (Some(weekly), None, None) => {
            let (day, start, length) = parse_weekly(weekly.get_ref())
                .map_err(|e| problems.add(weekly.span(), key("weekly"), e))
                .ok()?;
            let zone = match &m.time_zone {
                None => TimeZone::UTC,
                Some(z) => TimeZone::get(z.get_ref())
                    .map_err(|_| {
                        let what = format!(
                            "'{}' is not a time zone like \"Europe/Moscow\"",
                            z.get_ref()
                        );
                        problems.add(z.span(), key("time_zone"), what);
                    })
                    .ok()?,
            };
            let text = weekly.get_ref().clone();
            Some(Schedule::Weekly {
                day,
                start,
                length,
                zone,
                text,
            })
        }
        _ => {
            problems.add(
                raw.span(),
                key("weekly"),
                "a window has start and end, or weekly (with an optional time_zone)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        parse_instant(text).unwrap()
    }

    fn weekly(text: &str, zone: &str) -> Maintenance {
        let (day, start, length) = parse_weekly(text).unwrap();
        Maintenance {
            checks: vec!["*".into()],
            schedule: Schedule::Weekly {
                day,
                start,
                length,
                zone: TimeZone::get(zone).unwrap(),
                text: text.into(),
            },
            reason: None,
        }
    }

    #[test]
    fn a_weekly_window_is_on_in_its_zone_only() {
        // 2026-12-06 is a Sunday; Moscow is UTC+3.
        let w = weekly("Sun 02:00-04:00", "Europe/Moscow");
        assert_eq!(w.ends_after(ms("2026-12-05T22:59:59Z")), None);
        assert_eq!(
            w.ends_after(ms("2026-12-05T23:00:00Z")),
            Some(ms("2026-12-06T01:00:00Z"))
        );
        assert_eq!(
            w.ends_after(ms("2026-12-06T00:59:59Z")),
            Some(ms("2026-12-06T01:00:00Z"))
        );
        assert_eq!(w.ends_after(ms("2026-12-06T01:00:00Z")), None);
        assert_eq!(
            w.ends_after(ms("2026-12-13T00:00:00Z")),
            Some(ms("2026-12-13T01:00:00Z"))
        );
    }

    #[test]
    fn a_window_past_midnight_ends_the_next_day() {
        let w = weekly("Sat 23:00-01:00", "UTC");
        assert_eq!(
            w.ends_after(ms("2026-12-06T00:30:00Z")),
            Some(ms("2026-12-06T01:00:00Z"))
        );
        assert_eq!(w.ends_after(ms("2026-12-05T22:30:00Z")), None);
    }

    #[test]
    fn weekly_windows_keep_wall_clock_times_across_daylight_saving() {
        // New York: EDT (UTC-4) in July, EST (UTC-5) in December.
        let w = weekly("Mon 09:00-10:00", "America/New_York");
        assert!(w.ends_after(ms("2026-07-06T13:30:00Z")).is_some());
        assert!(w.ends_after(ms("2026-12-07T14:30:00Z")).is_some());
        assert!(w.ends_after(ms("2026-12-07T13:30:00Z")).is_none());
    }

    #[test]
    fn a_weeks_occurrences_overlapping_a_range_are_listed_oldest_first() {
        let w = weekly("Sun 02:00-04:00", "UTC");
        let got = w.occurrences(ms("2026-11-29T03:00:00Z"), ms("2026-12-13T02:30:00Z"));
        let want = [
            (ms("2026-11-29T02:00:00Z"), ms("2026-11-29T04:00:00Z")),
            (ms("2026-12-06T02:00:00Z"), ms("2026-12-06T04:00:00Z")),
            (ms("2026-12-13T02:00:00Z"), ms("2026-12-13T04:00:00Z")),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn bad_weekly_texts_say_what_is_expected() {
        for text in ["Sunday", "Xyz 02:00-03:00", "Sun 2-3", "Sun 25:00-26:00"] {
            let e = parse_weekly(text).unwrap_err();
            assert!(e.contains("like \"Sun 02:00-04:00\""), "{e}");
        }
        assert_eq!(
            parse_weekly("sunday 02:00-02:00").unwrap().2,
            Duration::from_secs(86_400)
        );
    }
}
