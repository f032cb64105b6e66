//! `/v1/maintenance`, behind `alerts.admin_token`: `POST` adds a window (kept in the
//! history store, so every replica silences alike), `GET` lists every window (the
//! config's and the API's), `DELETE /v1/maintenance/{id}` ends one now. Without an
//! admin token or alert rules, the routes are absent.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, json_response};
use crate::alerts::Alerts;
use crate::alerts::maintenance::stored_doc;
use crate::auth::Bearer;
use crate::config::maintenance::parse_instant;
use crate::journal::unix_ms;
use crate::limits::{MAINTENANCE_BODY_LIMIT, MAINTENANCE_MAX_CHECKS, MAINTENANCE_MAX_LENGTH};

/// The body of `POST /v1/maintenance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWindow {
    /// Check names or globs; every check when left out.
    checks: Option<Vec<String>>,
    /// RFC 3339; now when left out.
    start: Option<String>,
    /// RFC 3339, or `duration` from the start.
    end: Option<String>,
    duration: Option<String>,
    reason: Option<String>,
}

/// The alerting the maintenance API works through, if the caller holds the admin token.
fn authorized<'a>(state: &'a AppState, bearer: &Bearer) -> Result<&'a Arc<Alerts>, ApiError> {
    let alerts = state.alerts.as_ref().ok_or(ApiError::NotFound)?;
    let token = alerts.config().admin_token.as_deref();
    if token.is_none() {
        return Err(ApiError::NotFound);
    }
    if !bearer.is(token) {
        return Err(ApiError::Unauthorized);
    }
    Ok(alerts)
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::Body(StatusCode::BAD_REQUEST, message.into())
}

/// `POST /v1/maintenance`: 201 with the window; 400 naming what is wrong; 401 without
/// the admin token; 503 when the store cannot take it.
pub(super) async fn add_window(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    body: Bytes,
) -> Result<Response, ApiError> {
    let alerts = authorized(&state, &bearer)?;
    if body.len() > MAINTENANCE_BODY_LIMIT {
        return Err(ApiError::BodyTooLarge {
            limit: MAINTENANCE_BODY_LIMIT,
        });
    }
    let new: NewWindow =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let now_ms = unix_ms(SystemTime::now());
    let (checks, start_ms, end_ms) = window_of(&new, now_ms)?;
    let reason = new.reason.as_deref().filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.len() > 1000) {
        return Err(bad("reason: at most 1000 bytes"));
    }
    let added = alerts
        .add_window(&checks, start_ms, end_ms, reason, now_ms)
        .await
        .map_err(|e| ApiError::HistoryUnavailable(Some(e)))?;
    tracing::info!(id = added.id, checks = ?added.checks, "maintenance window added");
    let doc = serde_json::to_value(stored_doc(&added, now_ms)).expect("a window serializes");
    Ok(json_response(StatusCode::CREATED, "application/json", &doc))
}

/// The checks, start and end a new window asks for, each checked.
fn window_of(new: &NewWindow, now_ms: i64) -> Result<(Vec<String>, i64, i64), ApiError> {
    let checks = new.checks.clone().unwrap_or_else(|| vec!["*".to_owned()]);
    if checks.is_empty() || checks.len() > MAINTENANCE_MAX_CHECKS {
        return Err(bad(format!(
            "checks: 1 to {MAINTENANCE_MAX_CHECKS} names or globs"
        )));
    }
    if let Some(c) = checks.iter().find(|c| c.is_empty() || c.len() > 255) {
        return Err(bad(format!("checks: '{c}' is not a check name or glob")));
    }
    let start_ms = match &new.start {
        Some(text) => parse_instant(text).map_err(|e| bad(format!("start: {e}")))?,
        None => now_ms,
    };
    let end_ms = match (&new.end, &new.duration) {
        (Some(text), None) => parse_instant(text).map_err(|e| bad(format!("end: {e}")))?,
        (None, Some(text)) => {
            let length =
                crate::units::parse_duration(text).map_err(|e| bad(format!("duration: {e}")))?;
            start_ms.saturating_add(length.as_millis() as i64)
        }
        _ => {
            return Err(bad(
                "give end (RFC 3339) or duration (like \"2h\"), not both",
            ));
        }
    };
    if end_ms <= start_ms || end_ms <= now_ms {
        return Err(bad("end: must be after start and in the future"));
    }
    if end_ms - start_ms > MAINTENANCE_MAX_LENGTH.as_millis() as i64 {
        let days = MAINTENANCE_MAX_LENGTH.as_secs() / 86_400;
        return Err(bad(format!("a window lasts at most {days} days")));
    }
    Ok((checks, start_ms, end_ms))
}

/// `GET /v1/maintenance`: every window, the config's first, with whether it is on.
pub(super) async fn list_windows(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
) -> Result<Response, ApiError> {
    let alerts = authorized(&state, &bearer)?;
    let windows = alerts.windows().list(unix_ms(SystemTime::now()));
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        &json!({ "windows": windows }),
    ))
}

/// `DELETE /v1/maintenance/{id}`: 204 once the window has ended (now, or before); 404
/// for no such window.
pub(super) async fn end_window(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let alerts = authorized(&state, &bearer)?;
    let id: i64 = id.parse().map_err(|_| ApiError::BadParameter {
        name: "id",
        value: id.clone(),
        expected: "a window's id, as POST answered it".to_owned(),
    })?;
    let found = alerts
        .end_window(id, unix_ms(SystemTime::now()))
        .await
        .map_err(|e| ApiError::HistoryUnavailable(Some(e)))?;
    if !found {
        return Err(ApiError::NotFound);
    }
    tracing::info!(id, "maintenance window ended");
    let mut response = Response::default();
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(start: Option<&str>, end: Option<&str>, duration: Option<&str>) -> NewWindow {
        NewWindow {
            checks: None,
            start: start.map(str::to_owned),
            end: end.map(str::to_owned),
            duration: duration.map(str::to_owned),
            reason: None,
        }
    }

    #[test]
    fn a_window_needs_one_future_end_within_the_cap() {
        let now = parse_instant("2026-12-07T12:00:00Z").unwrap();
        let (checks, start, end) = window_of(&new(None, None, Some("2h")), now).unwrap();
        assert_eq!(
            (checks, start, end),
            (vec!["*".to_owned()], now, now + 7_200_000)
        );
        let refused = [
            new(None, None, None),
            new(None, Some("2026-12-07T13:00:00Z"), Some("1h")),
            new(None, Some("2026-12-07T11:00:00Z"), None),
            new(None, None, Some("400d")),
            new(Some("yesterday"), None, Some("1h")),
        ];
        for window in refused {
            assert!(window_of(&window, now).is_err(), "{window:?}");
        }
    }
}
