//! Every limit and default the runtime applies to a plugin run, with its reason.
//!
//! A check's own limits (`Limits`) can be set per check; the caps below them bound what
//! one host call may return and are the same for every check.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// Wall-clock time a run may take when the check sets none. Long enough for a slow HTTP
/// dependency (the AdtroBot plan gives external APIs 10 s), short enough for a probe to notice.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Fuel (roughly, wasm instructions) a run may burn when the check sets none. A trivial
/// Rust check burns ~1 thousand, a Python or JS one 0.1–10 million (docs/wasmtime-facts.md),
/// so 5 billion leaves room for any language, while a plugin stuck in a tight loop burns
/// it in a few hundred milliseconds on a current CPU and is stopped as out-of-fuel.
pub const DEFAULT_FUEL: u64 = 5_000_000_000;

/// Linear memory a run may use when the check sets none: a Rust guest starts at ~1 MiB,
/// a Python or JS guest at 9–12 MiB, so 64 MiB leaves headroom for all of them.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * MIB;

/// The largest memory limit a check may ask for. Every pooled memory slot reserves
/// address space for it, so it bounds the host's virtual size, not its resident size.
pub const MAX_MEMORY_BYTES: u64 = 1024 * MIB;

/// The writable memory a plugin's compiler process may use when the config sets
/// none: an 18 MB Python or JS component needs ~400 MB (BENCHMARKS.md, "Compilers"),
/// so 2 GiB leaves room for components five times their size, while a component
/// crafted to exhaust the compiler fails its own load before it costs the machine.
pub const DEFAULT_COMPILE_MEMORY: u64 = 2048 * MIB;
/// The smallest compile memory limit: below it not even a trivial plugin compiles.
pub const MIN_COMPILE_MEMORY: u64 = 16 * MIB;

/// How long one plugin's compile may take when the config sets none: an 18 MB Python
/// or JS component compiles in 7–14 s with Cranelift on two cores (BENCHMARKS.md,
/// "Compilers"), so two minutes leave room for components several times their size
/// on a loaded machine, while a component crafted to take the compiler far longer
/// holds its compile slot (and a core) no longer than this, and fails its own load.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Parses a compile memory limit (`compile_memory`, `check --compile-memory`): a size
/// of at least [`MIN_COMPILE_MEMORY`].
pub fn parse_compile_memory(input: &str) -> Result<u64, String> {
    let bytes = crate::units::parse_size(input).map_err(|e| e.to_string())?;
    if bytes < MIN_COMPILE_MEMORY {
        return Err(format!(
            "must be at least {}MiB, got '{input}'",
            MIN_COMPILE_MEMORY / MIB
        ));
    }
    Ok(bytes)
}

/// The longest timeout a check may ask for: a health check that needs more than a
/// minute is not telling a probe anything timely.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Before a host call times out, it leaves this share of the run's remaining time
/// (at most `HOST_CALL_RESERVE_MAX`) to the guest, so a check whose dependency hangs
/// gets a typed `timeout` error and can still report "Timeout" itself.
pub const HOST_CALL_RESERVE_DIVISOR: u32 = 10;
/// Upper bound of the reserve above.
pub const HOST_CALL_RESERVE_MAX: Duration = Duration::from_millis(250);

/// Interval of the engine's epoch ticker. Guest CPU yields to the async runtime at each
/// tick; at 1 ms a spinning guest delays other tasks by ~45 ms at worst, at 10 ms by
/// ~440 ms (docs/wasmtime-facts.md, "Scheduling").
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Largest HTTP response body a check receives; bigger ones fail with `too-large`.
/// Health endpoints answer in bytes or kilobytes; 4 MiB admits a full model list.
pub const HTTP_MAX_RESPONSE_BYTES: u64 = 4 * MIB;
/// Redirect hops followed per request; each hop is checked against the allowlist.
pub const HTTP_MAX_REDIRECTS: usize = 5;

/// Rows one query may return; more fail with `too-large` (a check needs counts, not
/// tables).
pub const SQL_MAX_ROWS: u64 = 10_000;
/// Bytes of values one query may return, counted as their in-memory sizes.
pub const SQL_MAX_BYTES: u64 = 4 * MIB;
/// Connections per datasource pool (SQLite: worker processes): checks run a few
/// short queries at a time.
pub const SQL_POOL_SIZE: u32 = 4;
/// Writable memory of one SQLite worker process (capabilities/sql/worker.rs): its
/// connection, page cache and the row being read, which SQLite holds whole (as many
/// values as columns, each up to [`SQL_MAX_BYTES`]). A statement that needs more fails
/// `too-large`, or ends its worker; the host's own memory is not at stake.
pub const SQL_WORKER_MEMORY: u64 = 256 * MIB;
/// The largest file a SQLite worker may write: SQLite's temporary files, for a sort
/// or a temporary index too large for memory. A check's query needs none of that
/// size; one that does ends its worker instead of filling the disk.
pub const SQL_WORKER_FILE_BYTES: u64 = 64 * MIB;
/// How long a datasource's role, once found to hold no powers over the database
/// server, is trusted before it is looked at again: an operator who grants it more
/// later is noticed within this, at one query's cost a minute.
pub const SQL_ROLE_RECHECK: Duration = Duration::from_secs(60);

/// Bytes a run may write to the log (log import, stdout and stderr together);
/// beyond it lines are dropped and counted, so a chatty plugin cannot flood the host.
pub const LOG_MAX_BYTES_PER_RUN: usize = 64 * 1024;
/// Longest single log line; longer ones are cut (after secrets are removed).
pub const LOG_MAX_LINE_BYTES: usize = 4 * 1024;
/// Bytes of stdout and of stderr kept per run (each); the rest is discarded, not
/// refused, so a guest that prints a lot is not broken by the host. A little more is
/// captured so that a secret straddling the cut is found whole before it is cut.
pub const STDIO_CAPTURE_BYTES: usize = 64 * 1024;

/// Rows one request may carry when the config says nothing (`usage.max_batch`).
pub const DEFAULT_MAX_BATCH: usize = 1_000;
/// The largest `usage.max_batch` the config accepts: a batch is one transaction and
/// one parsed body in memory, and 10,000 rows are ~10 MiB.
pub const MAX_BATCH_CEILING: usize = 10_000;
/// Body bytes allowed per row of `max_batch`: a row with every field at its longest
/// (100-character model and generation id, 50-character operation, ten-digit numbers)
/// is ~450 bytes of JSON, so 1 KiB leaves room for whitespace; 1,000 rows → 1 MiB.
pub const BODY_BYTES_PER_ROW: usize = 1024;
/// Distinct values per label (operation, model) when the config says nothing
/// (`usage.max_label_values`): the bot has a handful of each; 50 × 50 series
/// per metric stay cheap for Prometheus.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 50;

/// Calls a run records for `healthhost check`'s diagnostics (setting keys read, calls
/// refused), each; a plugin that asks in a loop cannot grow the host's memory with them.
pub const DIAGNOSTIC_MAX_ENTRIES: usize = 32;
/// Longest recorded key or call text; a plugin's own text, so it is cut.
pub const DIAGNOSTIC_MAX_TEXT_BYTES: usize = 256;

/// Results a check's history keeps (`GET /v1/checks/{check}/history`): a day of one
/// run a minute. A check that runs more often keeps a shorter span; at 32 bytes a
/// result, a full history is 45 KiB.
pub const HISTORY_MAX_ENTRIES: usize = 1440;
/// Results a check's history keeps in memory when a history store keeps them all: two
/// per slot of the status page's sparkline and outcome strip (60), and far more than
/// the second of results the store has not been sent yet. 3.8 KiB per check, where
/// [`HISTORY_MAX_ENTRIES`] is 45 KiB.
pub const HISTORY_CACHE_ENTRIES: usize = 120;
/// Message text a check's history keeps in memory beside a history store: the page's
/// last failure and the newest results' messages.
pub const HISTORY_CACHE_MESSAGE_BYTES: usize = 8 * 1024;
/// How long a result stays in a check's history: a day, the window of its uptime.
pub const HISTORY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Message text a check's history keeps, each distinct message counted once (a
/// message repeated by consecutive runs is shared) with its allocation; beyond it the
/// oldest results lose their messages first. It bounds the worst case, a check whose
/// every message differs and is as long as a report allows: 50 such checks keep
/// 50 × (45 + 64) KiB, about 5.3 MiB, instead of 70 MiB.
pub const HISTORY_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Results one `GET /v1/checks/{check}/history` answer holds, at most (the newest;
/// the answer says `truncated`): a day of a check every 10 s on one replica, about
/// 1.5 MiB of JSON, so a wide `since` cannot make one request read a week of rows.
pub const HISTORY_READ_MAX_ROWS: usize = 10_000;
/// Longest node name a history row carries (`[history] node`): a host name and a port
/// fit, and every store's indexable text column takes it.
pub const HISTORY_NODE_MAX_BYTES: usize = 255;
/// Results waiting for the history store, at most (`[history] queue_rows`): five
/// minutes of a thousand checks a second, about 30 MiB, so a store that restarts or
/// fails over loses nothing; beyond it the oldest are dropped, and counted.
pub const HISTORY_QUEUE_ROWS: usize = 300_000;
/// Message bytes of the results waiting, at most (`[history] queue_bytes`): messages
/// are up to [`REPORT_MAX_MESSAGE_BYTES`] each, so this bound, not the row count, holds
/// when every message is long.
pub const HISTORY_QUEUE_BYTES: u64 = 16 << 20;
/// How often the history writer sends what is waiting: the most a SIGKILL can lose.
pub const HISTORY_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Results per history `INSERT`: 6 bound values each, far below the smallest
/// bind-parameter limit (SQLite's 32,766), and a round trip per 500 results.
pub const HISTORY_ROWS_PER_STATEMENT: usize = 500;
/// How long a stopping `serve` lets the history writer send what is left: a store that
/// answers takes well under this; one that is down keeps its results (they are lost
/// at exit, counted in the log).
pub const HISTORY_STOP_FLUSH: Duration = Duration::from_secs(3);
/// How long one history write may take before it is abandoned and retried: a locked
/// table or a hung server must not hold the queue forever.
pub const HISTORY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the history writer waits for a connection (a store that is down fails
/// fast, and the results stay queued).
pub const HISTORY_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections to the history store: one for the writer (a task writing in order),
/// one for pruning (which holds its election lock for a pass), one for reads, and two
/// for alerting (its evaluator, and the channels' deliverers between them).
pub const HISTORY_POOL_SIZE: u32 = 5;
/// How long results are kept (`[history] raw_retention`): a week of single runs.
pub const HISTORY_RAW_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// How long minute rollups are kept: two weeks, beyond the 7-day window.
pub const HISTORY_MINUTE_RETENTION: Duration = Duration::from_secs(14 * 86_400);
/// How long hour rollups are kept: 90 days, the longest window read from them and a
/// quarter's SLO.
pub const HISTORY_HOUR_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// How long day rollups are kept: 400 days, a year's window with a month to spare.
pub const HISTORY_DAY_RETENTION: Duration = Duration::from_secs(400 * 86_400);
/// The least retention the config accepts: a slip of the unit must not empty the store.
pub const HISTORY_MIN_RETENTION: Duration = Duration::from_secs(3600);
/// How often old rows are pruned: a minute's worth of them is little work.
pub const HISTORY_PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows one pruning `DELETE` takes at most: a few milliseconds of a writer waiting.
pub const HISTORY_PRUNE_BATCH: i64 = 1000;

/// How often each channel's deliverer looks at the outbox besides being woken by this
/// replica's transitions: another replica's notification waits at most this long, so
/// one with `group_wait = "0s"` goes out within two seconds of its result.
pub const ALERT_POLL_EVERY: Duration = Duration::from_secs(1);
/// How often a replica reads the episodes the others recorded (and the queue gauges).
pub const ALERT_SYNC_EVERY: Duration = Duration::from_secs(5);
/// How often `slo_burn` rules read the burn rates from the rollups: the shortest short
/// window is five minutes, so a burn is seen within a twentieth of it, for a few
/// grouped reads.
pub const ALERT_BURN_EVERY: Duration = Duration::from_secs(15);
/// How long a channel's delivery lease lasts unrenewed: far longer than one attempt
/// (renewed before each), so a live holder keeps it, and a dead one's channel moves
/// to another replica within it.
pub const ALERT_LEASE: Duration = Duration::from_secs(30);
/// Notifications one message carries, at most: a page of text.
pub const ALERT_BATCH_MAX: i64 = 50;
/// Results waiting for alerting's evaluator, at most: it only counts, so it keeps up;
/// beyond it results are dropped for alerting (counted), never for history.
pub const ALERT_QUEUE: usize = 10_000;
/// Transitions waiting for the store, at most, while it is down: one per rule and
/// check at a time is what an outage can produce; beyond it the oldest are dropped.
pub const ALERT_PENDING_MAX: usize = 10_000;
/// The first retry's delay; each one after doubles it, up to [`ALERT_BACKOFF_MAX`],
/// and jitter takes up to half of it away, so retries of many hosts spread out.
pub const ALERT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two attempts: a channel back up is used within it.
pub const ALERT_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The largest `POST /v1/maintenance` body: a window is a few names and a reason.
pub const MAINTENANCE_BODY_LIMIT: usize = 16 * 1024;
/// Check names or globs one maintenance window lists, at most.
pub const MAINTENANCE_MAX_CHECKS: usize = 100;
/// How long an ended API maintenance window is still read back: `GET
/// /v1/maintenance` lists it and a check's history marks it for that long (a week, as
/// the raw results are kept).
pub const MAINTENANCE_LISTED_FOR: Duration = Duration::from_secs(7 * 86_400);
/// The longest maintenance window the API takes: a month. A longer silence is a
/// config change (remove the rule), not maintenance.
pub const MAINTENANCE_MAX_LENGTH: Duration = Duration::from_secs(31 * 86_400);

/// Longest report message kept; longer ones are cut at a character boundary (after
/// secrets are removed, so a cut never leaves part of one).
pub const REPORT_MAX_MESSAGE_BYTES: usize = 1024;
/// Samples kept per report; the rest are dropped (`too-many`). A check measures a
/// handful of values; 64 leaves room for per-table or per-queue ones.
pub const REPORT_MAX_SAMPLES: usize = 64;
/// Longest sample name or label name; longer samples are dropped (`too-large`).
/// Prometheus names are words joined by `_`, never payloads.
pub const SAMPLE_MAX_NAME_BYTES: usize = 128;
/// Labels per sample; more and the sample is dropped (`too-large`). A gauge with more
/// dimensions than this is a log line, and one sample with 100,000 labels would be
/// a 100,000-field series in every scrape.
pub const SAMPLE_MAX_LABELS: usize = 16;
/// Longest label value; longer samples are dropped (`too-large`), not cut, since a cut
/// value is another series. Table, queue and model names fit; payloads do not.
pub const SAMPLE_MAX_LABEL_VALUE_BYTES: usize = 256;
/// Bytes of one report's samples together (names, label names, label values); the
/// samples beyond it are dropped (`too-large`). It bounds a check's share of every
/// `/metrics` scrape whatever the plugin sends: 32 series of a few short labels take
/// about 2 KiB.
pub const SAMPLES_MAX_BYTES_PER_CHECK: usize = 16 * 1024;
/// Series one check may export from its samples: enough for per-table or per-queue
/// gauges, few enough that a plugin putting ids into labels cannot flood Prometheus.
pub const MAX_SERIES_PER_CHECK: usize = 32;

/// Table elements a run may allocate (function references); generous for any
/// language runtime, small enough to stop a table-growth bomb.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Concurrent plugin instances the engine's pool holds: one per run, and runs are
/// capped below it (see [`MAX_CONCURRENT_RUNS`]), so a run never finds the pool full.
pub const POOL_INSTANCES: u32 = 128;

/// The largest `max_concurrent_runs`: non-critical and critical runs have that many
/// slots each (a critical check never waits behind others), and together they must
/// fit in the pool.
pub const MAX_CONCURRENT_RUNS: usize = POOL_INSTANCES as usize / 2;

/// A plugin's share of the pool, per run: the core instances, memories and tables
/// its component may contain. The pool holds [`POOL_INSTANCES`] shares of each, so
/// no run, however its component is built, can take what another run needs; a
/// component over its share fails its own load, naming the count. A Python plugin
/// has 14 core instances, a JavaScript one 4, a Rust one 3, each 1 memory and 2
/// tables (BENCHMARKS.md, "Pool shares"): the shares leave several times that.
pub const PLUGIN_CORE_INSTANCES: u32 = 50;
/// See [`PLUGIN_CORE_INSTANCES`].
pub const PLUGIN_MEMORIES: u32 = 4;
/// See [`PLUGIN_CORE_INSTANCES`].
pub const PLUGIN_TABLES: u32 = 16;

/// A mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// The limits of one check's runs. Missing fields take the defaults above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock time for one run, including time spent in host calls.
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// Fuel for one run.
    pub fuel: u64,
    /// Linear memory for one run, in bytes (all of the component's memories together).
    #[serde(with = "crate::units::size")]
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            fuel: DEFAULT_FUEL,
            memory: DEFAULT_MEMORY_BYTES,
        }
    }
}

/// A limit outside what the host supports.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("timeout must be between 1ms and {}, got {}", humantime::format_duration(MAX_TIMEOUT), humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("fuel must be at least 1, got 0")]
    Fuel,
    #[error("memory must be between 1MiB and {}MiB, got {} bytes", MAX_MEMORY_BYTES / MIB, .0)]
    Memory(u64),
}

impl Limits {
    /// Checks that every limit is within what the host supports.
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(LimitError::Timeout(self.timeout));
        }
        if self.fuel == 0 {
            return Err(LimitError::Fuel);
        }
        if self.memory < MIB || self.memory > MAX_MEMORY_BYTES {
            return Err(LimitError::Memory(self.memory));
        }
        Ok(())
    }
}

/// When a run must end; host calls derive their own timeouts from it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The timeout for one host call: the lesser of the call's own `cap` and the run's
    /// remaining time minus a reserve for the guest to report. Zero once nothing is
    /// left, so the call fails at once with a typed timeout.
    pub fn host_call_timeout(&self, cap: Option<Duration>) -> Duration {
        let remaining = self.0.saturating_duration_since(Instant::now());
        let reserve = (remaining / HOST_CALL_RESERVE_DIVISOR).min(HOST_CALL_RESERVE_MAX);
        let budget = remaining - reserve;
        cap.map_or(budget, |cap| cap.min(budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn out_of_range_limits_are_rejected() {
        let base = Limits::default();
        let cases = [
            Limits {
                timeout: Duration::ZERO,
                ..base
            },
            Limits {
                timeout: MAX_TIMEOUT + Duration::from_secs(1),
                ..base
            },
            Limits { fuel: 0, ..base },
            Limits {
                memory: 1000,
                ..base
            },
            Limits {
                memory: MAX_MEMORY_BYTES + 1,
                ..base
            },
        ];
        for limits in cases {
            assert!(limits.validate().is_err(), "{limits:?} should be rejected");
        }
    }

    #[test]
    fn host_call_timeout_keeps_a_reserve_and_honours_the_cap() {
        let deadline = Deadline::after(Duration::from_secs(10));
        let own = deadline.host_call_timeout(None);
        assert!(own <= Duration::from_secs(10) - HOST_CALL_RESERVE_MAX);
        let capped = deadline.host_call_timeout(Some(Duration::from_millis(5)));
        assert_eq!(capped, Duration::from_millis(5));
    }

    #[test]
    fn host_call_timeout_is_zero_after_the_deadline() {
        let deadline = Deadline::after(Duration::ZERO);
        assert_eq!(
            deadline.host_call_timeout(Some(Duration::from_secs(1))),
            Duration::ZERO
        );
    }
}
