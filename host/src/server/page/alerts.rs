//! The status page's alerting section: the episodes open now (every replica's, from
//! the history store) and each channel's waiting notifications and last delivery.
//! Messages are not shown here: the checks' rows show them as `/health` decides.

use std::time::{Duration, SystemTime};

use super::view::ago;
use crate::alerts::store::{channel_states, episodes};
use crate::dbpool::DbPool;
use crate::journal::unix_ms;

/// What the section shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertsView {
    /// Oldest first.
    pub open: Vec<OpenEpisode>,
    pub channels: Vec<ChannelState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenEpisode {
    pub check: String,
    pub rule: String,
    /// `5 min ago`.
    pub since: String,
    /// The replica that opened it.
    pub node: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelState {
    pub name: String,
    pub queued: i64,
    /// `sent 2 min ago`, `failed 1 h ago`, or `none yet`.
    pub last: String,
}

/// The section at `now` for the configured `channels`.
pub async fn read(
    pool: &DbPool,
    channels: &[String],
    now: SystemTime,
) -> Result<AlertsView, sqlx::Error> {
    let now_ms = unix_ms(now);
    let age = |ms: i64| ago(Duration::from_millis((now_ms - ms).max(0) as u64));
    let mut open: Vec<_> = episodes(pool)
        .await?
        .into_iter()
        .filter(|e| e.open)
        .collect();
    open.sort_by_key(|e| e.since_ms);
    let (queued, last) = channel_states(pool).await?;
    let channels = channels
        .iter()
        .map(|name| ChannelState {
            name: name.clone(),
            queued: queued
                .iter()
                .find(|(c, _)| c == name)
                .map_or(0, |(_, n)| *n),
            last: last.iter().find(|(c, ..)| c == name).map_or_else(
                || "none yet".to_owned(),
                |(_, state, at, _)| format!("{state} {}", age(*at)),
            ),
        })
        .collect();
    let open = open
        .into_iter()
        .map(|e| OpenEpisode {
            since: age(e.since_ms),
            node: e.node.unwrap_or_default(),
            check: e.check,
            rule: e.rule,
        })
        .collect();
    Ok(AlertsView { open, channels })
}
