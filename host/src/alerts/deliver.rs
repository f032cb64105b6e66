//! One channel's deliverer: while this replica holds the channel's lease (`hh_lease`,
//! so one replica delivers each channel, in order), it takes the outbox's oldest
//! notifications for the channel as a batch, sends them as one message, and records
//! the outcome. A batch that fails is retried with exponential backoff and jitter
//! until the channel takes it, refuses it for good, or `give_up_after` has passed.
//!
//! At least once: a batch is sealed (its rows numbered with its first id) before it is
//! sent, so a crash between the channel's answer and its record resends the same batch
//! under the same delivery id, which receivers can deduplicate.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Shared;
use super::channels::{self, Answer};
use super::message::Notice;
use super::store::{self, Pending, Settled};
use crate::config::alerts::Channel;
use crate::journal::unix_ms;
use crate::limits::{
    ALERT_BACKOFF_MAX, ALERT_BACKOFF_MIN, ALERT_BATCH_MAX, ALERT_LEASE, ALERT_POLL_EVERY,
};

/// Delivers `channel`'s notifications until the task is dropped.
pub async fn run(shared: Arc<Shared>, channel: Channel) {
    let client = channels::client();
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(ALERT_POLL_EVERY) => {}
            () = shared.wake.notified() => {}
        }
        match deliver_due(&shared, &client, &channel).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(channel = %channel.name, "alert outbox reachable again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(channel = %channel.name, "cannot read the alert outbox: {e}");
            }
            Err(_) => {}
        }
    }
}

/// Sends every batch that is due, in order, while this replica holds the channel's
/// lease (taken or renewed before each batch, so an idle channel costs one read);
/// stops at the first batch that must wait.
async fn deliver_due(
    shared: &Shared,
    client: &reqwest::Client,
    channel: &Channel,
) -> Result<(), sqlx::Error> {
    loop {
        let mut pending = store::pending(&shared.pool, &channel.name, ALERT_BATCH_MAX).await?;
        let now = unix_ms(SystemTime::now());
        // What a maintenance window covers waits for its end, unless already tried.
        pending.retain(|p| p.batch.is_some() || shared.windows.silence(&p.check, now).is_none());
        let Some(batch) = next_batch(&pending, now) else {
            return Ok(());
        };
        // Only the holder seals and sends; each attempt is far shorter than the lease.
        let until = now + ALERT_LEASE.as_millis() as i64;
        let lease = format!("channel:{}", channel.name);
        if !store::lease(&shared.pool, &lease, &shared.node, now, until).await? {
            return Ok(());
        }
        if batch.seal {
            let ids: Vec<i64> = batch.items.iter().map(|i| i.id).collect();
            store::seal(&shared.pool, batch.id, &ids).await?;
        }
        let settled = attempt(shared, client, channel, &batch).await;
        store::settle(&shared.pool, batch.id, &settled.0, &settled.1).await?;
        if let Settled::Retry { .. } = settled.0 {
            return Ok(());
        }
    }
}

/// A batch to send now.
#[derive(Debug, PartialEq)]
struct Batch {
    /// Its first notification's id: its number, and its delivery id's.
    id: i64,
    items: Vec<Pending>,
    /// Whether it still has to be sealed (a first attempt).
    seal: bool,
}

/// The next batch of `pending` (the channel's oldest, in order) to send at `now`: a
/// sealed one being retried, when its retry is due; else the oldest notification and
/// every unsealed one of its rule, once the oldest's `group_wait` has passed.
fn next_batch(pending: &[Pending], now: i64) -> Option<Batch> {
    let first = pending.first()?;
    if first.next_ms > now {
        return None;
    }
    if let Some(id) = first.batch {
        let items = pending
            .iter()
            .filter(|p| p.batch == Some(id))
            .cloned()
            .collect();
        return Some(Batch {
            id,
            items,
            seal: false,
        });
    }
    let items = pending
        .iter()
        .filter(|p| p.batch.is_none() && p.rule == first.rule)
        .cloned()
        .collect();
    Some(Batch {
        id: first.id,
        items,
        seal: true,
    })
}

/// Sends `batch` once: how it settles, and the channel's answer.
async fn attempt(
    shared: &Shared,
    client: &reqwest::Client,
    channel: &Channel,
    batch: &Batch,
) -> (Settled, String) {
    let first = &batch.items[0];
    let notice = Notice {
        delivery_id: format!("{}-{}", first.rule, batch.id),
        rule: first.rule.clone(),
        node: shared.node.clone(),
        public_url: shared.config.public_url.clone(),
        items: batch.items.clone(),
        test: false,
    };
    let started = Instant::now();
    let answer = channels::send(client, channel, &notice).await;
    let metrics = &shared.metrics.alerts;
    metrics
        .delivery_duration
        .with_label_values(&[&channel.name])
        .observe(started.elapsed().as_secs_f64());
    let now = unix_ms(SystemTime::now());
    let given_up = now - first.at_ms >= channel.give_up_after.as_millis() as i64;
    let (settled, result, text) = match answer {
        Answer::Delivered(text) => (
            Settled::Done {
                failed: false,
                at_ms: now,
            },
            "sent",
            text,
        ),
        Answer::Refused(text) => (
            Settled::Done {
                failed: true,
                at_ms: now,
            },
            "failed",
            text,
        ),
        Answer::Retry(text, _) if given_up => (
            Settled::Done {
                failed: true,
                at_ms: now,
            },
            "failed",
            text,
        ),
        Answer::Retry(text, asked) => {
            let wait = backoff(first.attempts, asked);
            let next_ms = now + wait.as_millis() as i64;
            (Settled::Retry { next_ms }, "retried", text)
        }
    };
    metrics
        .deliveries
        .with_label_values(&[&channel.name, result])
        .inc();
    let count = batch.items.len();
    match result {
        "sent" => {
            tracing::info!(channel = %channel.name, batch = batch.id, "sent {count} alert notification(s): {text}")
        }
        "failed" => {
            tracing::warn!(channel = %channel.name, batch = batch.id, "gave up on {count} alert notification(s): {text}")
        }
        _ => {
            tracing::warn!(channel = %channel.name, batch = batch.id, attempts = first.attempts + 1, "alert delivery failed, will retry: {text}")
        }
    }
    (settled, text)
}

/// The wait before the next attempt after `attempts` failed ones: doubling from
/// [`ALERT_BACKOFF_MIN`] up to [`ALERT_BACKOFF_MAX`], less up to half of it at random,
/// and never less than what the channel asked for.
fn backoff(attempts: i64, asked: Option<Duration>) -> Duration {
    let doubled = ALERT_BACKOFF_MIN.saturating_mul(1 << attempts.clamp(0, 16) as u32);
    let base = doubled.min(ALERT_BACKOFF_MAX);
    // A fresh RandomState is seeded anew by the standard library: random enough to
    // spread retries, without a crate for it.
    let random = std::collections::hash_map::RandomState::new().hash_one(attempts);
    let jittered = base.mul_f64(1.0 - (random % 1000) as f64 / 2000.0);
    jittered.max(asked.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::super::episodes::Change;
    use super::*;

    fn pending(id: i64, rule: &str, batch: Option<i64>, due_ms: i64) -> Pending {
        Pending {
            id,
            rule: rule.into(),
            check: "db".into(),
            seq: 1,
            change: Change::Open,
            since_ms: 0,
            at_ms: 0,
            due_ms,
            outcome: None,
            message: None,
            node: "n".into(),
            batch,
            attempts: 0,
            next_ms: due_ms,
        }
    }

    #[test]
    fn a_batch_waits_for_its_oldest_group_wait_then_takes_its_rule() {
        let queue = [
            pending(1, "a", None, 10),
            pending(2, "b", None, 5),
            pending(3, "a", None, 20),
        ];
        assert_eq!(next_batch(&queue, 9), None);
        let batch = next_batch(&queue, 10).unwrap();
        assert_eq!((batch.id, batch.seal), (1, true));
        let ids: Vec<i64> = batch.items.iter().map(|i| i.id).collect();
        assert_eq!(ids, [1, 3]);
    }

    #[test]
    fn a_sealed_batch_is_retried_whole_when_due() {
        let queue = [
            pending(4, "a", Some(4), 50),
            pending(5, "a", None, 0),
            pending(6, "a", Some(4), 50),
        ];
        assert_eq!(next_batch(&queue, 49), None);
        let batch = next_batch(&queue, 50).unwrap();
        let ids: Vec<i64> = batch.items.iter().map(|i| i.id).collect();
        assert_eq!((batch.id, batch.seal, ids), (4, false, vec![4, 6]));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_taken_by_jitter() {
        for attempts in 0..20 {
            let wait = backoff(attempts, None);
            let base =
                (ALERT_BACKOFF_MIN * 2u32.pow(attempts.min(16) as u32)).min(ALERT_BACKOFF_MAX);
            assert!(wait <= base && wait >= base / 2, "{attempts}: {wait:?}");
        }
        assert_eq!(
            backoff(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }
}
