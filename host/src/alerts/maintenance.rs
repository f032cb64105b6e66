//! Maintenance windows as alerting applies them: the config's, and those made through
//! `/v1/maintenance` (kept in the store's `hh_maintenance` and read back with every
//! sync, so every replica silences alike). While a window covers a check, its
//! notifications wait in the outbox (`deliver`), an episode that opens and closes
//! inside it tells nobody (`store::record`), and one still open when it ends is told
//! then.

use std::sync::RwLock;

use serde::Serialize;

use super::store::StoredWindow;
use crate::config::alerts::glob;
use crate::config::maintenance::{Maintenance, Schedule};
use crate::sync::{read, write};

/// A window that silences a check now.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// When it ends, in Unix milliseconds.
    pub until_ms: i64,
    pub reason: Option<String>,
}

/// Every window alerting knows.
pub struct Windows {
    config: Vec<Maintenance>,
    stored: RwLock<Vec<StoredWindow>>,
}

/// One window as `GET /v1/maintenance` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowDoc {
    /// The API's windows have an id (for `DELETE`); the config's do not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// `config` or `api`.
    pub source: &'static str,
    pub checks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    pub reason: Option<String>,
    /// Whether it is on now; when it is, until when.
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_until: Option<String>,
}

/// Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(crate::journal::from_unix_ms(ms)).to_string()
}

impl Windows {
    pub fn new(config: Vec<Maintenance>) -> Windows {
        Windows {
            config,
            stored: RwLock::default(),
        }
    }

    /// The API's windows as the store holds them now.
    pub fn set_stored(&self, windows: Vec<StoredWindow>) {
        *write(&self.stored) = windows;
    }

    /// The window that silences `check` at `at_ms`, the one ending last when several do.
    pub fn silence(&self, check: &str, at_ms: i64) -> Option<Silence> {
        let from_config = self
            .config
            .iter()
            .filter(|w| w.covers(check))
            .filter_map(|w| Some((w.ends_after(at_ms)?, w.reason.clone())));
        let stored = read(&self.stored);
        let from_api = stored
            .iter()
            .filter(|w| w.start_ms <= at_ms && at_ms < w.end_ms)
            .filter(|w| w.checks.iter().any(|p| glob(p, check)))
            .map(|w| (w.end_ms, w.reason.clone()));
        from_config
            .chain(from_api)
            .max_by_key(|(until, _)| *until)
            .map(|(until_ms, reason)| Silence { until_ms, reason })
    }

    /// The windows that covered `check` within `from_ms..to_ms`: (start, end, reason),
    /// oldest first (the API's as far back as
    /// [`crate::limits::MAINTENANCE_LISTED_FOR`]).
    pub fn overlapping(
        &self,
        check: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<(i64, i64, Option<String>)> {
        let mut out: Vec<(i64, i64, Option<String>)> = self
            .config
            .iter()
            .filter(|w| w.covers(check))
            .flat_map(|w| {
                let reason = w.reason.clone();
                w.occurrences(from_ms, to_ms)
                    .into_iter()
                    .map(move |(start, end)| (start, end, reason.clone()))
            })
            .collect();
        let stored = read(&self.stored);
        out.extend(
            stored
                .iter()
                .filter(|w| w.start_ms < to_ms && from_ms < w.end_ms)
                .filter(|w| w.checks.iter().any(|p| glob(p, check)))
                .map(|w| (w.start_ms, w.end_ms, w.reason.clone())),
        );
        out.sort_by_key(|(start, end, _)| (*start, *end));
        out
    }

    /// Every window, the config's first, as of `now_ms`.
    pub fn list(&self, now_ms: i64) -> Vec<WindowDoc> {
        let config = self.config.iter().map(|w| {
            let until = w.ends_after(now_ms);
            let (start, end, weekly, time_zone) = match &w.schedule {
                Schedule::Once { start_ms, end_ms } => {
                    (Some(rfc3339(*start_ms)), Some(rfc3339(*end_ms)), None, None)
                }
                Schedule::Weekly { text, zone, .. } => (
                    None,
                    None,
                    Some(text.clone()),
                    Some(zone.iana_name().unwrap_or("UTC").to_owned()),
                ),
            };
            WindowDoc {
                id: None,
                source: "config",
                checks: w.checks.clone(),
                start,
                end,
                weekly,
                time_zone,
                reason: w.reason.clone(),
                active: until.is_some(),
                active_until: until.map(rfc3339),
            }
        });
        let stored: Vec<WindowDoc> = read(&self.stored)
            .iter()
            .map(|w| stored_doc(w, now_ms))
            .collect();
        config.chain(stored).collect()
    }
}

/// An API window as the API answers it.
pub fn stored_doc(w: &StoredWindow, now_ms: i64) -> WindowDoc {
    let active = w.start_ms <= now_ms && now_ms < w.end_ms;
    WindowDoc {
        id: Some(w.id),
        source: "api",
        checks: w.checks.clone(),
        start: Some(rfc3339(w.start_ms)),
        end: Some(rfc3339(w.end_ms)),
        weekly: None,
        time_zone: None,
        reason: w.reason.clone(),
        active,
        active_until: active.then(|| rfc3339(w.end_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ending_last_silences_and_others_checks_are_not() {
        let windows = Windows::new(vec![Maintenance {
            checks: vec!["db-*".into()],
            schedule: Schedule::Once {
                start_ms: 0,
                end_ms: 100,
            },
            reason: Some("upgrade".into()),
        }]);
        windows.set_stored(vec![StoredWindow {
            id: 1,
            checks: vec!["db-main".into()],
            start_ms: 50,
            end_ms: 200,
            reason: None,
        }]);
        let until = |check, at| windows.silence(check, at).map(|s| s.until_ms);
        assert_eq!(until("db-main", 60), Some(200));
        assert_eq!(until("db-other", 60), Some(100));
        assert_eq!(until("db-other", 100), None);
        assert_eq!(until("api", 60), None);
        assert_eq!(until("db-main", 200), None);
        let listed = windows.list(60);
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|w| w.active));
    }
}
