//! `GET /v1/checks/{check}/history`: a check's results from `since` on and its uptime
//! over the last day ([`HistoryDoc`]), messages shown as `/health` shows them; and
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
use crate::auth::Bearer;
use crate::health::wire::HistoryDoc;
use crate::journal::read::{WINDOW_EXPECTED, Window, uptime};
use crate::limits::HISTORY_MAX_AGE;

/// What `since` may be, as a 400 says it.
const SINCE_EXPECTED: &str =
    "a duration like 1h or 30m, or an RFC 3339 time in UTC like 2026-11-28T18:00:00Z";

/// `GET /v1/checks/{check}/history[?since=1h]`: 200 with the results of the last
/// `since` (default: all that are kept, the last day); 400 for a `since` that is
/// neither a duration nor an RFC 3339 time; 404 for an unknown check. Messages need
/// what `/health`'s need (`show_details`, the details token).
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
    let Some(view) = state.health.history(&check, now, since) else {
        return Err(ApiError::NoSuchCheck(check));
    };
    let doc = HistoryDoc::of(&check, since, &view, details(&state, &bearer));
    let body = serde_json::to_vec(&doc).expect("the wire types serialize");
    Ok(bytes_response(
        StatusCode::OK,
        "application/json",
        Bytes::from(body),
    ))
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
    let doc = uptime(store, &check, window, SystemTime::now())
        .await
        .map_err(ApiError::HistoryUnavailable)?;
    // A removed check keeps its stored history; a name never seen is a typo.
    if doc.runs == 0 && !state.health.set().entries.contains_key(&check) {
        return Err(ApiError::NoSuchCheck(check));
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
