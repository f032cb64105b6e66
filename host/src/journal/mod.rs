//! The results journal: every result `health` records goes to the history store
//! (`[history] datasource`, the tables of `migrations/history/`), appended in batches
//! by one writer task: each batch's new results to `hh_result` and their sums to the
//! per-minute, hour and day rollups of `hh_rollup`, in one transaction (`store`).
//!
//! A run never waits on the store: [`Journal::push`] puts the result in a queue bounded
//! in rows and message bytes ([`HISTORY_QUEUE_ROWS`], [`HISTORY_QUEUE_BYTES`] by
//! default) and returns. The writer sends what is waiting every
//! [`HISTORY_FLUSH_EVERY`], or as soon as a statement's worth is waiting, in order.
//! While the store is unreachable, results stay queued (the oldest dropped beyond the
//! bounds, counted) and the writer retries; the first failure and the recovery are
//! logged once per episode. A row the database refuses (not a connection problem) is
//! dropped alone, so one bad row cannot hold the queue. What a SIGKILL can lose is what
//! waited for the next write: at most [`HISTORY_FLUSH_EVERY`] of results; on SIGTERM
//! `serve` flushes before it exits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::dbpool::{DbOptions, DbOptionsError, DbPool, refuses_the_values};
use crate::dburl::Kind;
use crate::limits::{
    HISTORY_ACQUIRE_TIMEOUT, HISTORY_FLUSH_EVERY, HISTORY_POOL_SIZE, HISTORY_ROWS_PER_STATEMENT,
    HISTORY_WRITE_TIMEOUT,
};
use crate::metrics::Metrics;
use crate::sync::lock;

pub mod prune;
pub mod read;
pub mod results;
mod store;

#[cfg(doc)]
use crate::limits::{HISTORY_QUEUE_BYTES, HISTORY_QUEUE_ROWS};

/// One recorded result, as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub check: Arc<str>,
    /// When the run ended, in Unix milliseconds.
    pub at_ms: i64,
    /// The outcome's label (`pass`, `timeout`, …).
    pub outcome: &'static str,
    pub latency_ms: Option<f64>,
    /// The run's own message, scrubbed and capped as every report is.
    pub message: Option<Arc<str>>,
}

impl Row {
    /// A result of `check` that ended at `at`.
    pub fn new(
        check: Arc<str>,
        at: SystemTime,
        outcome: &'static str,
        latency_ms: Option<f64>,
        message: Option<Arc<str>>,
    ) -> Row {
        Row {
            check,
            at_ms: unix_ms(at),
            outcome,
            latency_ms,
            message,
        }
    }

    /// What the row counts against the queue's byte bound: its texts.
    fn bytes(&self) -> u64 {
        (self.check.len() + self.message.as_deref().map_or(0, str::len)) as u64
    }
}

/// The time `ms` Unix milliseconds name (the epoch for one before it): [`unix_ms`]'s
/// inverse.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `at` in Unix milliseconds (0 before the epoch).
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The results waiting for the store.
#[derive(Default)]
struct Queue {
    rows: VecDeque<Row>,
    bytes: u64,
    /// Rows taken for the write in progress: unwritten still, so counted as queued.
    in_flight: usize,
    /// Whether the store failed last time, so an outage is logged once.
    failing: bool,
    /// Whether rows were dropped in this outage, so that is logged once.
    dropping: bool,
}

impl Queue {
    fn unwritten(&self) -> usize {
        self.rows.len() + self.in_flight
    }
}

/// Where the writer's results go, and the queue it takes them from.
pub struct Journal {
    node: String,
    queue: Mutex<Queue>,
    wake: Notify,
    max_rows: usize,
    max_bytes: u64,
    metrics: Arc<Metrics>,
    /// Set by [`Journal::stop`].
    stopping: AtomicBool,
}

/// How often the writer retries a failing store once `serve` is stopping.
const STOP_RETRY: Duration = Duration::from_millis(250);

/// Why the history store cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("history datasource: {0}")]
pub struct JournalError(#[from] DbOptionsError);

impl Journal {
    /// A journal for this host, named `node` in every row, queueing at most
    /// `max_rows` results and `max_bytes` of their text.
    pub fn new(node: String, max_rows: usize, max_bytes: u64, metrics: Arc<Metrics>) -> Journal {
        Journal {
            node,
            queue: Mutex::default(),
            wake: Notify::new(),
            max_rows,
            max_bytes,
            metrics,
            stopping: AtomicBool::new(false),
        }
    }

    /// This host's name in the rows.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A pool on the store at `url` that connects on first use.
    pub fn pool(url: &str) -> Result<DbPool, JournalError> {
        let options = DbOptions::from_url(url)?;
        Ok(DbPool::lazy(
            &options,
            HISTORY_POOL_SIZE,
            Some(HISTORY_ACQUIRE_TIMEOUT),
        ))
    }

    /// Queues `row` for the store; never waits. Beyond the bounds the oldest results
    /// are dropped, counted in the metrics.
    pub fn push(&self, row: Row) {
        let mut queue = lock(&self.queue);
        queue.bytes += row.bytes();
        queue.rows.push_back(row);
        self.enforce_bounds(&mut queue);
        if queue.rows.len() >= HISTORY_ROWS_PER_STATEMENT {
            self.wake.notify_one();
        }
    }

    /// Drops the oldest results while the queue is over a bound.
    fn enforce_bounds(&self, queue: &mut Queue) {
        let mut dropped = 0;
        while queue.rows.len() + queue.in_flight > self.max_rows || queue.bytes > self.max_bytes {
            let Some(oldest) = queue.rows.pop_front() else {
                break;
            };
            queue.bytes -= oldest.bytes();
            dropped += 1;
        }
        if dropped > 0 {
            self.metrics.history.dropped.inc_by(dropped);
            if !queue.dropping {
                queue.dropping = true;
                tracing::warn!(
                    "history queue full ({} results, {} bytes at most): dropping the oldest \
                     results until the store takes them again",
                    self.max_rows,
                    self.max_bytes
                );
            }
        }
        self.metrics.history.queued.set(queue.unwritten() as i64);
    }

    /// Whether the last write to the store failed: readers then answer from memory at
    /// once rather than wait for a connection.
    pub fn store_failing(&self) -> bool {
        lock(&self.queue).failing
    }

    /// How many results wait for the store, the write in progress included.
    pub fn queued(&self) -> usize {
        lock(&self.queue).unwritten()
    }

    /// Writes what is waiting every [`HISTORY_FLUSH_EVERY`] (or when a statement's
    /// worth waits); after [`Journal::stop`], writes what is left and returns (retrying
    /// while the store fails: the caller bounds how long it waits for that).
    pub async fn run(self: Arc<Self>, pool: DbPool) {
        let mut tick = tokio::time::interval(HISTORY_FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut written = true;
        loop {
            if !self.stopping.load(Ordering::Relaxed) {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = self.wake.notified() => {}
                }
            } else if !written {
                tokio::time::sleep(STOP_RETRY).await;
            }
            written = self.write_waiting(&pool).await;
            if written && self.stopping.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    /// Asks [`Journal::run`] to write what is left and return: `serve` stops.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Sends the queue's results, a statement at a time, in order; `true` when none is
    /// left, `false` when the store failed (the rest stay queued).
    async fn write_waiting(&self, pool: &DbPool) -> bool {
        loop {
            let batch: Vec<Row> = {
                let mut queue = lock(&self.queue);
                let n = queue.rows.len().min(HISTORY_ROWS_PER_STATEMENT);
                let batch: Vec<Row> = queue.rows.drain(..n).collect();
                queue.bytes -= batch.iter().map(Row::bytes).sum::<u64>();
                queue.in_flight = batch.len();
                batch
            };
            if batch.is_empty() {
                return true;
            }
            match self.write(pool, &batch).await {
                Ok(written) => self.written(written),
                Err(error) => {
                    self.requeue(batch, &error);
                    return false;
                }
            }
        }
    }

    /// Writes `batch`; when the database refuses it, each row alone, dropping the ones
    /// it refuses. `Err` is a store that cannot be reached (or timed out).
    async fn write(&self, pool: &DbPool, batch: &[Row]) -> Result<u64, String> {
        match insert_within(pool, &self.node, batch).await {
            Ok(new) => Ok(new),
            Err(Failure::Refused(error)) => {
                let mut written = 0;
                for row in batch {
                    match insert_within(pool, &self.node, std::slice::from_ref(row)).await {
                        Ok(new) => written += new,
                        Err(Failure::Refused(e)) => {
                            self.metrics.history.dropped.inc();
                            tracing::warn!(check = %row.check, "history store refused a result: {e}");
                        }
                        Err(Failure::Unreachable(e)) => return Err(e),
                    }
                }
                tracing::debug!("history batch refused ({error}); wrote its rows one by one");
                Ok(written)
            }
            Err(Failure::Unreachable(error)) => Err(error),
        }
    }

    fn written(&self, count: u64) {
        self.metrics.history.written.inc_by(count);
        let mut queue = lock(&self.queue);
        queue.in_flight = 0;
        if queue.failing {
            queue.failing = false;
            queue.dropping = false;
            tracing::info!(
                "history store reachable again; {} results still queued",
                queue.rows.len()
            );
        }
        self.metrics.history.queued.set(queue.unwritten() as i64);
    }

    /// Puts an unwritten batch back at the front, in order.
    fn requeue(&self, batch: Vec<Row>, error: &str) {
        let mut queue = lock(&self.queue);
        queue.in_flight = 0;
        for row in batch.into_iter().rev() {
            queue.bytes += row.bytes();
            queue.rows.push_front(row);
        }
        self.enforce_bounds(&mut queue);
        if !queue.failing {
            queue.failing = true;
            tracing::warn!(
                "history store unreachable ({error}); results queue in memory (up to {}) \
                 and are written when it is back",
                self.max_rows
            );
        }
    }
}

/// Why a write did not happen.
enum Failure {
    /// The database refused a row's values: retrying the same rows cannot help.
    Refused(String),
    /// No connection, a broken one, a deadlock, no answer in time: retry later.
    Unreachable(String),
}

async fn insert_within(pool: &DbPool, node: &str, rows: &[Row]) -> Result<u64, Failure> {
    let write = async {
        match pool {
            DbPool::Sqlite(pool) => store::write(pool, Kind::Sqlite, node, rows).await,
            DbPool::Postgres(pool) => store::write(pool, Kind::Postgres, node, rows).await,
            DbPool::MySql(pool) => store::write(pool, Kind::MySql, node, rows).await,
        }
    };
    match tokio::time::timeout(HISTORY_WRITE_TIMEOUT, write).await {
        Ok(Ok(new)) => Ok(new),
        Ok(Err(e)) if refuses_the_values(&e) => Err(Failure::Refused(e.to_string())),
        Ok(Err(e)) => Err(Failure::Unreachable(e.to_string())),
        Err(_) => Err(Failure::Unreachable(format!(
            "no answer within {}",
            humantime::format_duration(HISTORY_WRITE_TIMEOUT)
        ))),
    }
}
