//! A check's recent results: a ring of compact [`Record`]s bounded by count
//! ([`HISTORY_MAX_ENTRIES`], or [`HISTORY_CACHE_ENTRIES`] beside a history store) and
//! age ([`HISTORY_MAX_AGE`]), oldest first, and the uptime computed from it.
//! [`Health`] pushes every result it records (and queues it for the store) and
//! forgets the history of a removed check.
//!
//! A record is 32 bytes; its message is an `Arc<str>` that consecutive results
//! repeating a message share, so a check that says "ok" a thousand times keeps one
//! "ok". The distinct message text of one history is bounded too
//! ([`HISTORY_MAX_MESSAGE_BYTES`]): beyond it the oldest results lose their messages
//! (they keep time, outcome and latency).

use std::collections::{VecDeque, vec_deque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Health;
use crate::alerts::episodes::Observation;
use crate::config::CheckConfig;
use crate::journal::Row;
use crate::limits::{
    HISTORY_CACHE_ENTRIES, HISTORY_CACHE_MESSAGE_BYTES, HISTORY_MAX_AGE, HISTORY_MAX_ENTRIES,
    HISTORY_MAX_MESSAGE_BYTES,
};
use crate::runtime::{Outcome, RunReport};
use crate::sync::lock;

/// What a distinct message costs besides its text: the `Arc`'s two counts and the
/// allocator's rounding.
const MESSAGE_OVERHEAD_BYTES: usize = 32;

/// One result: when its run finished, the outcome, its latency (the one the check
/// measured itself, else the run's duration) and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
    /// In milliseconds; NaN for none (an `Option<f32>` would make a record 40 bytes).
    latency_ms: f32,
    outcome: Outcome,
    message: Option<Arc<str>>,
}

impl Record {
    /// When the run finished.
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }

    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The latency in ms, as [`Record`] says.
    pub fn latency_ms(&self) -> Option<f64> {
        (!self.latency_ms.is_nan()).then_some(f64::from(self.latency_ms))
    }

    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

/// The records of a history in place, oldest first ([`History::scan`]).
pub type RecordIter<'a> = vec_deque::Iter<'a, Record>;

/// What a read of a history returns.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryView {
    /// The results at or after the time asked for, oldest first.
    pub records: Vec<Record>,
    /// The share, in percent, of all the results kept (not only those asked for)
    /// whose outcome counts as up: `pass` or `warn`, as `/health` counts them
    /// ([`Outcome::is_healthy`]). `None` without results.
    pub uptime_24h: Option<f64>,
}

impl HistoryView {
    /// The view of `records` from `since` on, with the uptime of all of them.
    pub fn since(
        records: RecordIter<'_>,
        since: SystemTime,
        uptime_24h: Option<f64>,
    ) -> HistoryView {
        let since_ms = unix_ms(since);
        HistoryView {
            records: records.filter(|r| r.at_ms >= since_ms).cloned().collect(),
            uptime_24h,
        }
    }
}

/// How much one check's history keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Results, at most.
    pub entries: usize,
    /// Distinct message text with its overhead, at most.
    pub message_bytes: usize,
}

impl Bounds {
    /// Without a history store, memory is the history: the last day.
    pub const ALONE: Bounds = Bounds {
        entries: HISTORY_MAX_ENTRIES,
        message_bytes: HISTORY_MAX_MESSAGE_BYTES,
    };
    /// With a history store, memory keeps what the status page draws and what the store
    /// has not been sent yet.
    pub const CACHE: Bounds = Bounds {
        entries: HISTORY_CACHE_ENTRIES,
        message_bytes: HISTORY_CACHE_MESSAGE_BYTES,
    };
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds::ALONE
    }
}

/// The recent results of one check.
#[derive(Debug, Default)]
pub struct History {
    bounds: Bounds,
    records: VecDeque<Record>,
    /// The cost of the distinct messages the records hold (text and overhead).
    message_bytes: usize,
    /// No record before this index holds a message: where forgetting messages goes on.
    first_message: usize,
}

impl History {
    /// An empty history that keeps at most `bounds`.
    pub fn new(bounds: Bounds) -> History {
        History {
            bounds,
            ..History::default()
        }
    }

    /// Records a result of a run that finished at `at`, first dropping the results
    /// older than [`HISTORY_MAX_AGE`] before it, and the oldest one when its bounds'
    /// number of results are kept.
    pub fn push(
        &mut self,
        at: SystemTime,
        outcome: Outcome,
        latency_ms: Option<f64>,
        message: Option<&str>,
    ) {
        let at_ms = unix_ms(at);
        self.prune(at_ms);
        while self.records.len() >= self.bounds.entries {
            self.pop_front();
        }
        let message = message.map(|text| match self.shared(text) {
            Some(shared) => shared,
            None => {
                let cost = cost(text);
                self.make_room(cost);
                self.message_bytes += cost;
                Arc::from(text)
            }
        });
        // Grown by doubling up to the bound, never past it.
        if self.records.len() == self.records.capacity() {
            let target = (self.records.capacity() * 2).clamp(16, self.bounds.entries);
            self.records.reserve_exact(target - self.records.len());
        }
        self.records.push_back(Record {
            at_ms,
            latency_ms: latency_ms.map_or(f32::NAN, |ms| ms as f32),
            outcome,
            message,
        });
    }

    /// The results from `since` on, after dropping those older than
    /// [`HISTORY_MAX_AGE`] before `now`, and the uptime of all that are kept.
    pub fn read(&mut self, now: SystemTime, since: SystemTime) -> HistoryView {
        self.scan(now, |records, uptime_24h| {
            HistoryView::since(records, since, uptime_24h)
        })
    }

    /// Calls `f` with the results kept at `now`, oldest first, read in place (nothing
    /// is copied), and their uptime as [`HistoryView::uptime_24h`] counts it.
    pub fn scan<R>(
        &mut self,
        now: SystemTime,
        f: impl FnOnce(RecordIter<'_>, Option<f64>) -> R,
    ) -> R {
        self.prune(unix_ms(now));
        f(self.records.iter(), self.uptime())
    }

    /// The bytes this history holds on the heap: its ring's capacity of records and
    /// its distinct messages (text and overhead). Alone, at most 1,440 records of 32
    /// bytes and [`HISTORY_MAX_MESSAGE_BYTES`] of messages, about 110 KiB per check;
    /// as a store's cache, under 12 KiB.
    pub fn heap_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>() + self.message_bytes
    }

    /// Percent of the kept results that count as up, rounded to 0.01.
    fn uptime(&self) -> Option<f64> {
        if self.records.is_empty() {
            return None;
        }
        let up = self
            .records
            .iter()
            .filter(|r| r.outcome.is_healthy())
            .count();
        let percent = up as f64 * 100.0 / self.records.len() as f64;
        Some((percent * 100.0).round() / 100.0)
    }

    /// The newest record's message when it is `text`: consecutive results share it.
    fn shared(&self, text: &str) -> Option<Arc<str>> {
        let last = self.records.back()?.message.as_ref()?;
        (**last == *text).then(|| last.clone())
    }

    fn prune(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(HISTORY_MAX_AGE.as_millis() as u64);
        while self.records.front().is_some_and(|r| r.at_ms < oldest) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(record) = self.records.pop_front() {
            self.first_message = self.first_message.saturating_sub(1);
            self.release(record.message, 0);
        }
    }

    /// Counts the text of a record's `message` as freed unless the record at `next`
    /// (the one after it) shares it. Messages are released oldest first, so the
    /// record was the first of those sharing its message, and only the next one can
    /// be another.
    fn release(&mut self, message: Option<Arc<str>>, next: usize) {
        let Some(message) = message else {
            return;
        };
        let shared = self
            .records
            .get(next)
            .and_then(|r| r.message.as_ref())
            .is_some_and(|m| Arc::ptr_eq(m, &message));
        if !shared {
            self.message_bytes -= cost(&message);
        }
    }

    /// Forgets the oldest messages until a new one costing `cost` fits.
    fn make_room(&mut self, cost: usize) {
        while self.message_bytes + cost > self.bounds.message_bytes
            && self.first_message < self.records.len()
        {
            let index = self.first_message;
            let message = self.records[index].message.take();
            self.release(message, index + 1);
            self.first_message += 1;
        }
    }
}

/// Health's side of the histories: each result in, reads out.
impl Health {
    /// Keeps a result of check `name` in its history in memory and, with a store,
    /// queues it for the store and for alerting.
    pub(super) fn remember(
        &self,
        check: &CheckConfig,
        finished: SystemTime,
        report: &RunReport,
        latency: Option<f64>,
    ) {
        let name = check.name.as_str();
        // With a store, memory is its cache: the page's last runs and what waits.
        let bounds = match self.journal {
            Some(_) => Bounds::CACHE,
            None => Bounds::ALONE,
        };
        lock(&self.history)
            .entry(name.to_owned())
            .or_insert_with(|| History::new(bounds))
            .push(finished, report.outcome, latency, report.message.as_deref());
        let message = report.message.as_deref().map(Arc::from);
        let shared_name: Arc<str> = Arc::from(name);
        if let Some(alerts) = &self.alerts {
            alerts.observe(Observation {
                check: shared_name.clone(),
                critical: check.critical,
                slo: check.slo,
                at_ms: crate::journal::unix_ms(finished),
                up: report.outcome.is_healthy(),
                outcome: report.outcome.label(),
                message: message.clone(),
            });
        }
        if let Some(journal) = &self.journal {
            let row = Row::new(
                shared_name,
                finished,
                report.outcome.label(),
                latency,
                message,
            );
            // What a fault test counts the store's rows against.
            tracing::debug!(check = %name, at_ms = row.at_ms, "result recorded");
            journal.push(row);
        }
    }

    /// The results of check `name` from `since` on, and its uptime over the last day,
    /// at `now`; `None` when there is no such check. A check that has not run yet has
    /// none.
    pub fn history(&self, name: &str, now: SystemTime, since: SystemTime) -> Option<HistoryView> {
        if !self.set().entries.contains_key(name) {
            return None;
        }
        Some(self.scan_history(name, now, |records, uptime_24h| {
            HistoryView::since(records, since, uptime_24h)
        }))
    }

    /// Calls `f` with the results of check `name` kept at `now` (oldest first; none
    /// when it has not run or does not exist) and their uptime, read in place under
    /// the history lock: `f` must be quick, runs record their results behind it.
    pub fn scan_history<R>(
        &self,
        name: &str,
        now: SystemTime,
        f: impl FnOnce(RecordIter<'_>, Option<f64>) -> R,
    ) -> R {
        let mut history = lock(&self.history);
        match history.get_mut(name) {
            Some(h) => h.scan(now, f),
            None => History::default().scan(now, f),
        }
    }
}

fn cost(text: &str) -> usize {
    text.len() + MESSAGE_OVERHEAD_BYTES
}

fn unix_ms(t: SystemTime) -> u64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ErrorKind;

    const MINUTE: Duration = Duration::from_secs(60);

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn beside_a_store_the_ring_keeps_only_the_pages_share() {
        let t = start();
        let mut h = History::new(Bounds::CACHE);
        for i in 0..1000u64 {
            let message = format!("message {i} {}", "x".repeat(100));
            h.push(
                t + Duration::from_secs(i),
                Outcome::Pass,
                Some(1.0),
                Some(&message),
            );
        }
        let view = h.read(t + Duration::from_secs(1000), t);
        assert_eq!(view.records.len(), HISTORY_CACHE_ENTRIES);
        assert_eq!(
            view.records.last().unwrap().at(),
            t + Duration::from_secs(999)
        );
        assert!(h.heap_bytes() < 12 * 1024, "{} bytes", h.heap_bytes());
        // Alone, the same results are all kept.
        let mut alone = History::default();
        for i in 0..1000u64 {
            alone.push(t + Duration::from_secs(i), Outcome::Pass, Some(1.0), None);
        }
        assert_eq!(
            alone.read(t + Duration::from_secs(1000), t).records.len(),
            1000
        );
    }

    fn outcomes(view: &HistoryView) -> Vec<&'static str> {
        view.records.iter().map(|r| r.outcome().label()).collect()
    }

    #[test]
    fn a_record_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Record>(), 32);
    }

    #[test]
    fn fifty_full_histories_stay_under_10_mib() {
        let t = start();
        let mut total = 0;
        for check in 0..50 {
            let mut h = History::default();
            for i in 0..HISTORY_MAX_ENTRIES as u64 {
                // Every message distinct: the worst case for the message budget.
                let message = format!("check {check} run {i}: {}", "x".repeat(100));
                h.push(
                    t + MINUTE * i as u32,
                    Outcome::Fail,
                    Some(1.0),
                    Some(&message),
                );
            }
            assert!(h.records.capacity() <= HISTORY_MAX_ENTRIES);
            total += h.heap_bytes();
        }
        let bound = 50 * (HISTORY_MAX_ENTRIES * 32 + HISTORY_MAX_MESSAGE_BYTES);
        assert!(total <= bound, "{total} > {bound}");
        assert!(total < 10 << 20, "{total} bytes");
    }

    #[test]
    fn keeps_results_in_order_with_their_fields() {
        let mut h = History::default();
        let t = start();
        h.push(t, Outcome::Pass, Some(2.5), Some("ok"));
        h.push(t + MINUTE, Outcome::Fail, None, Some("down"));
        h.push(t + 2 * MINUTE, Outcome::Warn, Some(900.0), None);
        let view = h.read(t + 2 * MINUTE, t);
        assert_eq!(outcomes(&view), ["pass", "fail", "warn"]);
        let r = &view.records;
        assert_eq!(
            (r[0].at(), r[0].latency_ms(), r[0].message()),
            (t, Some(2.5), Some("ok"))
        );
        assert_eq!(
            (r[1].at(), r[1].latency_ms(), r[1].message()),
            (t + MINUTE, None, Some("down"))
        );
        assert_eq!(r[2].message(), None);
        let later = h.read(t + 2 * MINUTE, t + MINUTE);
        assert_eq!(outcomes(&later), ["fail", "warn"], "since is inclusive");
    }

    #[test]
    fn keeps_at_most_1440_results_dropping_the_oldest() {
        let mut h = History::default();
        let t = start();
        for i in 0..HISTORY_MAX_ENTRIES as u64 + 10 {
            h.push(t + Duration::from_secs(i), Outcome::Pass, None, None);
        }
        let now = t + Duration::from_secs(HISTORY_MAX_ENTRIES as u64 + 10);
        let view = h.read(now, t);
        assert_eq!(view.records.len(), HISTORY_MAX_ENTRIES);
        assert_eq!(view.records[0].at(), t + Duration::from_secs(10));
        assert!(
            h.records.capacity() <= HISTORY_MAX_ENTRIES,
            "{}",
            h.records.capacity()
        );
    }

    #[test]
    fn drops_results_older_than_a_day_on_push_and_on_read() {
        let mut h = History::default();
        let t = start();
        h.push(t, Outcome::Fail, None, Some("old"));
        h.push(t + HISTORY_MAX_AGE / 2, Outcome::Pass, None, Some("mid"));
        // The first is a day and a minute old when the third arrives.
        h.push(t + HISTORY_MAX_AGE + MINUTE, Outcome::Pass, None, None);
        assert_eq!(h.records.len(), 2);
        assert_eq!(h.records[0].message(), Some("mid"));
        // Reading later drops the second too, whatever `since` asks for.
        let view = h.read(t + HISTORY_MAX_AGE * 3 / 2 + MINUTE, UNIX_EPOCH);
        assert_eq!(view.records.len(), 1);
        assert_eq!(view.uptime_24h, Some(100.0));
        assert_eq!(h.message_bytes, 0, "dropped messages are freed");
    }

    #[test]
    fn uptime_counts_pass_and_warn_as_up_over_all_kept_results() {
        let mut h = History::default();
        let t = start();
        assert_eq!(h.read(t, t).uptime_24h, None);
        let runs = [
            Outcome::Pass,
            Outcome::Warn,
            Outcome::Fail,
            Outcome::Error(ErrorKind::Timeout),
            Outcome::Pass,
            Outcome::Pass,
        ];
        for (i, outcome) in runs.into_iter().enumerate() {
            h.push(t + MINUTE * i as u32, outcome, None, None);
        }
        // 4 of 6, also when only the last result is asked for.
        let view = h.read(t + 6 * MINUTE, t + 5 * MINUTE);
        assert_eq!(view.records.len(), 1);
        assert_eq!(view.uptime_24h, Some(66.67));
    }

    #[test]
    fn consecutive_repeats_of_a_message_share_one_allocation() {
        let mut h = History::default();
        let t = start();
        for i in 0..3 {
            h.push(t + MINUTE * i, Outcome::Pass, None, Some("all good"));
        }
        h.push(t + 3 * MINUTE, Outcome::Fail, None, Some("down"));
        h.push(t + 4 * MINUTE, Outcome::Pass, None, Some("all good"));
        let m: Vec<&Arc<str>> = h
            .records
            .iter()
            .map(|r| r.message.as_ref().unwrap())
            .collect();
        assert!(Arc::ptr_eq(m[0], m[1]) && Arc::ptr_eq(m[1], m[2]));
        assert!(
            !Arc::ptr_eq(m[2], m[4]),
            "only consecutive repeats are shared"
        );
        assert_eq!(h.message_bytes, cost("all good") * 2 + cost("down"));
    }

    #[test]
    fn distinct_messages_are_bounded_and_the_oldest_are_forgotten_first() {
        let mut h = History::default();
        let t = start();
        let long = |i: usize| format!("{i:04} {}", "x".repeat(1019));
        for i in 0..HISTORY_MAX_ENTRIES {
            h.push(
                t + Duration::from_secs(i as u64),
                Outcome::Fail,
                None,
                Some(&long(i)),
            );
        }
        assert!(
            h.message_bytes <= HISTORY_MAX_MESSAGE_BYTES,
            "{}",
            h.message_bytes
        );
        let kept = HISTORY_MAX_MESSAGE_BYTES / cost(&long(0));
        let view = h.read(t + Duration::from_secs(HISTORY_MAX_ENTRIES as u64), t);
        assert_eq!(view.records.len(), HISTORY_MAX_ENTRIES, "results stay");
        let with: Vec<usize> = (0..view.records.len())
            .filter(|&i| view.records[i].message().is_some())
            .collect();
        assert_eq!(with.len(), kept);
        assert_eq!(
            with[0],
            HISTORY_MAX_ENTRIES - kept,
            "the newest keep theirs"
        );
        let newest = view.records.last().unwrap().message().unwrap();
        assert_eq!(newest, long(HISTORY_MAX_ENTRIES - 1));
        let total: usize = with
            .iter()
            .map(|&i| cost(view.records[i].message().unwrap()))
            .sum();
        assert_eq!(h.message_bytes, total, "the count matches what is held");
    }

    #[test]
    fn a_shared_message_is_freed_once_when_its_results_go() {
        let mut h = History::default();
        let t = start();
        h.push(t, Outcome::Pass, None, Some("same"));
        h.push(t + MINUTE, Outcome::Pass, None, Some("same"));
        // A reader holding a copy does not keep the count up.
        let held = h.read(t + MINUTE, t);
        h.push(t + HISTORY_MAX_AGE + MINUTE / 2, Outcome::Pass, None, None);
        assert_eq!(h.records.len(), 2);
        assert_eq!(
            h.message_bytes,
            cost("same"),
            "still held by the second result"
        );
        h.push(t + HISTORY_MAX_AGE + 2 * MINUTE, Outcome::Pass, None, None);
        assert_eq!(h.message_bytes, 0);
        assert_eq!(held.records[1].message(), Some("same"));
    }
}
