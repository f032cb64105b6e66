//! The API's errors, each the JSON answer it becomes ([`IntoResponse`]).

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{RETRY_AFTER_SECONDS, json_response};
use crate::usage::StoreError;
use crate::usage::ingest::RecordError;

/// Why the API answers with an error, and the JSON answer each becomes.
#[derive(Debug)]
pub enum ApiError {
    /// `/health/{check}` for a check that does not exist.
    NoSuchCheck(String),
    /// No such route (or the usage endpoint is off).
    NotFound,
    MethodNotAllowed(Method),
    /// No or a wrong bearer token: 401 with `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// A body over the limit (bytes): 413.
    BodyTooLarge {
        limit: usize,
    },
    /// A body that could not be read: axum's status and text.
    Body(StatusCode, String),
    /// A query parameter with a value it cannot have: 400 naming the parameter, the
    /// value and what is `expected`.
    BadParameter {
        name: &'static str,
        value: String,
        expected: String,
    },
    /// Usage rows refused (400, 422) or not written (503 with `Retry-After`).
    Record(RecordError),
    /// The usage database could not be read: 503 with `Retry-After`.
    UsageUnavailable(StoreError),
    /// History is kept in memory only, so there is no stored uptime: 404.
    NoHistoryStore,
    /// The history store could not be read (`None`: the writer finds it down, so it
    /// was not tried): 503 with `Retry-After`.
    HistoryUnavailable(Option<sqlx::Error>),
    /// The write task failed: 500.
    Internal,
}

impl ApiError {
    /// The status and JSON body of this error.
    fn answer(&self) -> (StatusCode, serde_json::Value) {
        match self {
            ApiError::NoSuchCheck(check) => (
                StatusCode::NOT_FOUND,
                json!({"error": "no such check", "check": check}),
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, json!({"error": "not found"})),
            ApiError::MethodNotAllowed(method) => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed", "method": method.as_str()}),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "missing or wrong bearer token"}),
            ),
            ApiError::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "body too large", "limit_bytes": limit}),
            ),
            ApiError::Body(status, text) => (*status, json!({"error": text})),
            ApiError::BadParameter {
                name,
                value,
                expected,
            } => (
                StatusCode::BAD_REQUEST,
                json!({
                    "error": format!("invalid {name} '{value}': expected {expected}"),
                    "parameter": name,
                    "value": value,
                }),
            ),
            ApiError::Record(e @ RecordError::Malformed(_)) => {
                (StatusCode::BAD_REQUEST, json!({"error": e.to_string()}))
            }
            ApiError::Record(RecordError::Invalid(problems)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "error": "invalid rows",
                    "problems": problems.iter().map(|p| p.to_json()).collect::<Vec<_>>(),
                }),
            ),
            ApiError::Record(
                e @ (RecordError::NotRows | RecordError::Empty | RecordError::TooMany { .. }),
            ) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": e.to_string()}),
            ),
            ApiError::Record(RecordError::Store(e)) => {
                tracing::warn!("cannot record ai usage: {e}");
                unavailable("the usage database is unavailable; nothing was written")
            }
            ApiError::UsageUnavailable(e) => {
                tracing::warn!("cannot read ai usage: {e}");
                unavailable("the usage database is unavailable")
            }
            ApiError::NoHistoryStore => (
                StatusCode::NOT_FOUND,
                json!({"error": "check history is kept in memory only: no history datasource (see [history])"}),
            ),
            ApiError::HistoryUnavailable(e) => {
                if let Some(e) = e {
                    tracing::warn!("cannot read the history store: {e}");
                }
                unavailable("the history store is unavailable")
            }
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal error"}),
            ),
        }
    }
}

/// A 503's status and body: what is unavailable, and when to try again.
fn unavailable(error: &str) -> (StatusCode, serde_json::Value) {
    let body = json!({"error": error, "retry_after_seconds": RETRY_AFTER_SECONDS});
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.answer();
        let mut response = json_response(status, "application/json", &body);
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Record(RecordError::Store(_))
            | ApiError::UsageUnavailable(_)
            | ApiError::HistoryUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}
