//! Alerting: every recorded result goes, through a bounded queue a run never waits
//! on, to one evaluator task that keeps each rule and check's streak (`episodes`) and
//! records the transitions it proposes in the history store (`store`: episode and
//! outbox rows in one transaction, so replicas record each once). One deliverer task
//! per channel (`deliver`) sends what the outbox holds (`channels`, `message`).
//!
//! What a crash can lose: transitions proposed but not yet recorded (the store was
//! down, or the process died within the write): the next result proposes them again
//! while the check stays as it was. Recorded notifications are never lost: they wait
//! in the outbox until a replica delivers them or gives up.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::config::alerts::{AlertsConfig, ChannelKind};
use crate::dbpool::DbPool;
use crate::limits::{
    ALERT_BURN_EVERY, ALERT_PENDING_MAX, ALERT_QUEUE, ALERT_SYNC_EVERY, HISTORY_WRITE_TIMEOUT,
    MAINTENANCE_LISTED_FOR,
};
use crate::metrics::Metrics;

pub mod burn;
pub mod channels;
mod deliver;
pub mod episodes;
pub mod maintenance;
pub mod message;
pub mod store;

use burn::Burns;
use episodes::{Change, Observation, Streaks, Transition};
use maintenance::Windows;
use store::StoredWindow;

/// What the evaluator and the deliverers share.
pub struct Shared {
    pub config: Arc<AlertsConfig>,
    pub pool: DbPool,
    /// This replica's name, as the history rows carry it.
    pub node: String,
    pub metrics: Arc<Metrics>,
    /// The maintenance windows, the config's and the API's.
    pub windows: Windows,
    /// Wakes the deliverers when this replica recorded a notification.
    wake: Notify,
}

/// The handle `health` feeds results into, and the maintenance API works through.
pub struct Alerts {
    results: mpsc::Sender<Observation>,
    shared: Arc<Shared>,
}

impl Alerts {
    /// Starts the evaluator and one deliverer per channel; the tasks run until
    /// aborted. `None` when no rule is configured.
    pub fn start(
        config: Arc<AlertsConfig>,
        pool: DbPool,
        node: String,
        metrics: Arc<Metrics>,
    ) -> Option<(Arc<Alerts>, Vec<JoinHandle<()>>)> {
        if config.rules.is_empty() {
            return None;
        }
        let (results, rx) = mpsc::channel(ALERT_QUEUE);
        let shared = Arc::new(Shared {
            config: config.clone(),
            pool,
            node,
            metrics,
            windows: Windows::new(config.maintenance.clone()),
            wake: Notify::new(),
        });
        let mut tasks = vec![tokio::spawn(evaluate(shared.clone(), rx))];
        for channel in &config.channels {
            tasks.push(tokio::spawn(deliver::run(shared.clone(), channel.clone())));
        }
        Some((Arc::new(Alerts { results, shared }), tasks))
    }

    /// Hands a recorded result to the evaluator; never waits. A full queue drops it
    /// for alerting (counted).
    pub fn observe(&self, result: Observation) {
        if self.results.try_send(result).is_err() {
            self.shared.metrics.alerts.dropped.inc();
        }
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.shared.config
    }

    pub fn windows(&self) -> &Windows {
        &self.shared.windows
    }

    /// Adds a maintenance window to the store, and reads them back.
    pub async fn add_window(
        &self,
        checks: &[String],
        start_ms: i64,
        end_ms: i64,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<StoredWindow, sqlx::Error> {
        let pool = &self.shared.pool;
        let id = store::add_window(pool, checks, start_ms, end_ms, reason, now_ms).await?;
        self.reload_windows(now_ms).await?;
        Ok(StoredWindow {
            id,
            checks: checks.to_vec(),
            start_ms,
            end_ms,
            reason: reason.map(str::to_owned),
        })
    }

    /// Ends maintenance window `id` now; whether there is one.
    pub async fn end_window(&self, id: i64, now_ms: i64) -> Result<bool, sqlx::Error> {
        let found = store::end_window(&self.shared.pool, id, now_ms).await?;
        self.reload_windows(now_ms).await?;
        // Notifications it held may go now.
        self.shared.wake.notify_waiters();
        Ok(found)
    }

    async fn reload_windows(&self, now_ms: i64) -> Result<(), sqlx::Error> {
        let stored = store::windows(&self.shared.pool, listed_since(now_ms)).await?;
        self.shared.windows.set_stored(stored);
        Ok(())
    }
}

/// The evaluator: counts each result into the streaks, records what they propose, and
/// every [`ALERT_SYNC_EVERY`] reads back what every replica recorded.
async fn evaluate(shared: Arc<Shared>, mut results: mpsc::Receiver<Observation>) {
    let (mut streaks, mut burns) = (Streaks::default(), Burns::default());
    let mut waiting: VecDeque<Transition> = VecDeque::new();
    let mut failing = false;
    let mut sync = tokio::time::interval(ALERT_SYNC_EVERY);
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut burn = tokio::time::interval(ALERT_BURN_EVERY);
    burn.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let burn_rules = shared.config.rules.iter().any(|r| r.slo_burn);
    loop {
        tokio::select! {
            result = results.recv() => {
                let Some(result) = result else { return };
                burns.note(&result);
                waiting.extend(streaks.observe(&shared.config.rules, &result));
            }
            _ = sync.tick() => {
                // A belief with transitions still unrecorded is newer than the store's.
                if waiting.is_empty() {
                    read_back(&shared, &mut streaks, &mut burns).await;
                }
            }
            _ = burn.tick(), if burn_rules => {
                let now_ms = crate::journal::unix_ms(std::time::SystemTime::now());
                match burns.evaluate(&shared, now_ms).await {
                    Ok(changes) => waiting.extend(changes),
                    Err(e) => tracing::debug!("cannot read the burn rates: {e}"),
                }
            }
        }
        while waiting.len() > ALERT_PENDING_MAX {
            waiting.pop_front();
        }
        if !waiting.is_empty() {
            record_waiting(&shared, &mut waiting, &mut failing).await;
        }
    }
}

/// Records the waiting transitions in order; on a store failure the rest wait for the
/// next result or sync (the failure logged once per outage).
async fn record_waiting(shared: &Shared, waiting: &mut VecDeque<Transition>, failing: &mut bool) {
    while let Some(t) = waiting.front() {
        let rule = &shared.config.rules[t.rule];
        let channels: Vec<&str> = rule
            .channels
            .iter()
            .filter(|name| {
                // A reminder is not a PagerDuty event: the incident is open already.
                t.change != Change::Remind
                    || !matches!(
                        shared.config.channel(name).map(|c| &c.kind),
                        Some(ChannelKind::PagerDuty { .. })
                    )
            })
            .map(String::as_str)
            .collect();
        let due_ms = t.at_ms + rule.group_wait.as_millis() as i64;
        let silenced = shared.windows.silence(&t.check, t.at_ms).is_some();
        // A reminder in maintenance is recorded, and told to nobody.
        let channels = if silenced && t.change == Change::Remind {
            Vec::new()
        } else {
            channels
        };
        let name = if t.burn {
            burn::rule_name(rule)
        } else {
            rule.name.clone()
        };
        let how = store::Recording {
            rule: &name,
            repeat_ms: rule.repeat.map_or(0, |r| r.as_millis() as i64),
            channels: &channels,
            due_ms,
            silenced,
        };
        let write = store::record(&shared.pool, &shared.node, t, &how);
        match tokio::time::timeout(HISTORY_WRITE_TIMEOUT, write).await {
            Ok(Ok(recorded)) => {
                if recorded {
                    let change = t.change.as_str();
                    shared
                        .metrics
                        .alerts
                        .transitions
                        .with_label_values(&[change])
                        .inc();
                    tracing::info!(rule = %rule.name, check = %t.check, "alert episode {change}");
                    shared.wake.notify_waiters();
                }
                waiting.pop_front();
                if *failing {
                    *failing = false;
                    tracing::info!("alert episodes recorded again");
                }
            }
            Ok(Err(e)) if !*failing => {
                *failing = true;
                tracing::warn!("cannot record alert episodes ({e}); they wait in memory");
                return;
            }
            _ => return,
        }
    }
}

/// The API windows read back at `now_ms`: those that ended within
/// [`MAINTENANCE_LISTED_FOR`].
fn listed_since(now_ms: i64) -> i64 {
    now_ms - MAINTENANCE_LISTED_FOR.as_millis() as i64
}

/// Reads every replica's episodes into `streaks`, and the gauges.
async fn read_back(shared: &Shared, streaks: &mut Streaks, burns: &mut Burns) {
    let now_ms = crate::journal::unix_ms(std::time::SystemTime::now());
    let read = async {
        let episodes = store::episodes(&shared.pool).await?;
        let (queued, _) = store::channel_states(&shared.pool).await?;
        let windows = store::windows(&shared.pool, listed_since(now_ms)).await?;
        Ok::<_, sqlx::Error>((episodes, queued, windows))
    };
    let Ok(Ok((episodes, queued, windows))) =
        tokio::time::timeout(HISTORY_WRITE_TIMEOUT, read).await
    else {
        return;
    };
    shared.windows.set_stored(windows);
    streaks.sync(&shared.config.rules, &episodes);
    burns.sync(&shared.config.rules, &episodes);
    let metrics = &shared.metrics.alerts;
    metrics
        .episodes_open
        .set(episodes.iter().filter(|e| e.open).count() as i64);
    for channel in &shared.config.channels {
        let n = queued
            .iter()
            .find(|(c, _)| *c == channel.name)
            .map_or(0, |(_, n)| *n);
        metrics.queued.with_label_values(&[&channel.name]).set(n);
    }
}
