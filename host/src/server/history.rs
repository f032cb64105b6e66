//! `GET /v1/checks/{check}/history`: a check's results from `since` on and its uptime
//! over the last day ([`HistoryDoc`]), from the history store with this host's newest
//! results from memory, messages shown as `/health` shows them; and
//! `GET /v1/checks/{check}/uptime`: its uptime over a window, from the history store.

use std::sync::Arc;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::probes::{details, query_param};
use super::{ApiError, AppState, bytes_response};
use crate::alerts::maintenance::rfc3339;
use crate::auth::Bearer;
use crate::config::{WINDOW_EXPECTED, Window};
use crate::dbpool::DbPool;
use crate::health::wire::{HistoryDoc, MaintenanceDoc, ResultDoc};
use crate::journal::read::{SloDoc, slo, uptime};
use crate::journal::results::{Listing, listing};
use crate::journal::unix_ms;
use crate::limits::{HISTORY_MAX_AGE, HISTORY_READ_MAX_ROWS};

/// What `since` may be, as a 400 says it.
const SINCE_EXPECTED: &str =
    "a duration like 1h or 30m, or an RFC 3339 time in UTC like 2026-11-28T18:00:00Z";

/// `GET /v1/checks/{check}/history[?since=1h]`: 200 with the results of the last
/// `since` (default: the last day) of every replica, from the history store, with this
/// host's newest from memory until they are written (only this host's, from memory,
/// when there is no store or it cannot be read); 400 for a `since` that is neither a
/// duration nor an RFC 3339 time; 404 for a check neither configured nor stored.
/// Messages need what `/health`'s need (`show_details`, the details token).
pub(super) async fn check_history(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    Path(check): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let now = SystemTime::now();
    let since = match query_param(query.as_deref(), "since") {
        None => earlier(now, HISTORY_MAX_AGE),
        Some(value) => parse_since(&value, now).ok_or(ApiError::BadParameter {
            name: "since",
            value,
            expected: SINCE_EXPECTED.to_owned(),
        })?,
    };
    let details = details(&state, &bearer);
    let memory = state.health.history(&check, now, since);
    let stored = match state.history_store.as_ref().and_then(|s| s.reachable()) {
        Some(pool) => read_stored(pool, &check, &state.node, since, now).await,
        None => None,
    };
    let (results, truncated, uptime_24h, source) = match (stored, memory) {
        (Some((listing, _)), None) if listing.results.is_empty() => {
            return Err(ApiError::NoSuchCheck(check));
        }
        (Some((listing, uptime_24h)), memory) => {
            let own_newest = listing.own_newest_ms.unwrap_or(i64::MIN);
            let mut results: Vec<(i64, ResultDoc)> = listing
                .results
                .into_iter()
                .map(|r| (r.at_ms, ResultDoc::of_stored(r, details)))
                .collect();
            let unwritten = memory.iter().flat_map(|view| &view.records);
            for record in unwritten.filter(|r| unix_ms(r.at()) > own_newest) {
                let doc = ResultDoc::of_record(record, &state.node, details);
                results.push((unix_ms(record.at()), doc));
            }
            results.sort_by_key(|(at, _)| *at);
            let results = results.into_iter().map(|(_, doc)| doc).collect();
            (results, listing.truncated, uptime_24h, "store")
        }
        (None, Some(view)) => {
            let results = view
                .records
                .iter()
                .map(|r| ResultDoc::of_record(r, &state.node, details))
                .collect();
            (results, false, view.uptime_24h, "memory")
        }
        (None, None) => return Err(ApiError::NoSuchCheck(check)),
    };
    let maintenance = state.alerts.as_ref().map_or_else(Vec::new, |alerts| {
        let windows = alerts.windows();
        windows
            .overlapping(&check, unix_ms(since), unix_ms(now))
            .into_iter()
            .map(|(start, end, reason)| MaintenanceDoc {
                start: rfc3339(start),
                end: rfc3339(end),
                reason,
            })
            .collect()
    });
    let doc = HistoryDoc {
        check,
        results,
        since: humantime::format_rfc3339_millis(since).to_string(),
        source,
        truncated,
        uptime_24h,
        maintenance,
    };
    let body = serde_json::to_vec(&doc).expect("the wire types serialize");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
}

/// `check`'s stored results from `since` on and its stored uptime over the last day
/// (to 0.01), or `None`, logged, when the store cannot be read.
async fn read_stored(
    pool: &DbPool,
    check: &str,
    node: &str,
    since: SystemTime,
    now: SystemTime,
) -> Option<(Listing, Option<f64>)> {
    let read = async {
        let listing = listing(pool, check, node, unix_ms(since), HISTORY_READ_MAX_ROWS).await?;
        let day = uptime(pool, check, Window::Day, now).await?;
        let uptime_24h = day.uptime_percent.map(|p| (p * 100.0).round() / 100.0);
        Ok::<_, sqlx::Error>((listing, uptime_24h))
    };
    match read.await {
        Ok(stored) => Some(stored),
        Err(error) => {
            tracing::warn!(
                check,
                "history from memory: cannot read the history store: {error}"
            );
            None
        }
    }
}

/// `GET /v1/checks/{check}/uptime[?window=24h|7d|30d|90d|365d]`: 200 with the check's
/// uptime, runs by outcome and latency over the window (default 24h) from the history
/// store's rollups, the same on every replica; 400 for another window; 404 when no
/// store keeps history, or for a check neither configured nor stored; 503 when the
/// store cannot be read. It holds no message, so it needs no token.
pub(super) async fn check_uptime(
    State(state): State<Arc<AppState>>,
    Path(check): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let window = match query_param(query.as_deref(), "window") {
        None => Window::Day,
        Some(value) => Window::parse(&value).ok_or(ApiError::BadParameter {
            name: "window",
            value,
            expected: WINDOW_EXPECTED.to_owned(),
        })?,
    };
    let Some(store) = &state.history_store else {
        return Err(ApiError::NoHistoryStore);
    };
    // While the writer finds the store down, say so at once.
    let store = store
        .reachable()
        .ok_or(ApiError::HistoryUnavailable(None))?;
    let now = SystemTime::now();
    let mut doc = uptime(store, &check, window, now)
        .await
        .map_err(|e| ApiError::HistoryUnavailable(Some(e)))?;
    let entry = state.health.set().entries.get(&check).cloned();
    // A removed check keeps its stored history; a name never seen is a typo.
    if doc.runs == 0 && entry.is_none() {
        return Err(ApiError::NoSuchCheck(check));
    }
    let objective = entry.and_then(|e| e.check.as_ref().and_then(|c| c.config.slo));
    if let Some(objective) = objective {
        doc.slo = Some(if objective.window == window {
            SloDoc::of(&objective, &doc.outcomes)
        } else {
            slo(store, &check, &objective, now)
                .await
                .map_err(|e| ApiError::HistoryUnavailable(Some(e)))?
        });
    }
    let body = serde_json::to_vec(&doc).expect("the document serializes");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
}

/// `since`: a duration back from `now` (`1h`, `30m`, `1h 30m`) or an RFC 3339 time in
/// UTC (`2026-11-28T18:00:00Z`, fractions and a space for `T` allowed).
fn parse_since(value: &str, now: SystemTime) -> Option<SystemTime> {
    if let Ok(back) = crate::units::parse_duration(value) {
        return Some(earlier(now, back));
    }
    humantime::parse_rfc3339_weak(value.trim()).ok()
}

/// `back` before `now`, or the epoch when that is before it (times before the epoch
/// have no RFC 3339 form here).
fn earlier(now: SystemTime, back: Duration) -> SystemTime {
    now.checked_sub(back)
        .filter(|t| *t >= UNIX_EPOCH)
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_back_or_a_utc_time() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            parse_since("1h", now),
            Some(now - Duration::from_secs(3600))
        );
        assert_eq!(
            parse_since("1h 30m", now),
            Some(now - Duration::from_secs(5400))
        );
        // 1,800,000,000 s after the epoch.
        assert_eq!(parse_since("2027-01-15T08:00:00Z", now), Some(now));
        assert_eq!(
            parse_since("2027-01-15 07:00:00.5", now),
            Some(now - Duration::from_millis(3_599_500))
        );
        assert_eq!(parse_since("100000years", now), Some(UNIX_EPOCH));
        for bad in ["yesterday", "1x", "", "2027-01-15T08:00:00+02:00", "-1h"] {
            assert_eq!(parse_since(bad, now), None, "{bad:?}");
        }
    }
}
