//! `POST /v1/ai-usage`: the bearer token before the body, then the rows recorded by
//! [`Ingest`]. `GET /v1/usage/summary`: the read token, then the range, then the
//! [`Reader`]'s summary.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::probes::query_param;
use super::{ApiError, AppState, json_response};
use crate::auth::Bearer;
use crate::usage::summary::Range;

/// `POST /v1/ai-usage`: authorizes before reading the body, then records it. 201 with
/// the new ids after the commit; 400 malformed JSON; 401 no or a wrong token; 413 a
/// body over the limit; 422 rows that are not valid (every problem listed, nothing
/// written); 503 with `Retry-After` when the database is unavailable (nothing written).
pub(super) async fn ai_usage(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(ingest) = state.ingest.clone() else {
        return Err(ApiError::NotFound);
    };
    if !ingest.authorized(&bearer) {
        return Err(ApiError::Unauthorized);
    }
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge {
                limit: ingest.body_limit(),
            },
            status => ApiError::Body(status, rejection.body_text()),
        })?;
    // The write runs on its own task: a client that disconnects drops this handler,
    // and dropping a write between COMMIT and its answer would leave a row the
    // metrics never counted.
    let write = tokio::spawn(async move { ingest.record(&body).await });
    let Ok(result) = write.await else {
        tracing::error!("recording ai usage panicked");
        return Err(ApiError::Internal);
    };
    let ids = result.map_err(ApiError::Record)?;
    Ok(json_response(
        StatusCode::CREATED,
        "application/json",
        &json!({"ids": ids}),
    ))
}

/// `GET /v1/usage/summary[?range=24h|7d|30d]`: 200 with the summary (default `24h`);
/// 401 without the read token (the write token is not one); 400 for another range;
/// 503 with `Retry-After` when the database cannot be read.
pub(super) async fn usage_summary(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Some(reader) = state.usage_reader.clone() else {
        return Err(ApiError::NotFound);
    };
    if !reader.authorized(&bearer) {
        return Err(ApiError::Unauthorized);
    }
    let range = range_param(query.as_deref())?;
    let summary = reader
        .summary(range)
        .await
        .map_err(ApiError::UsageUnavailable)?;
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        &summary.to_json(),
    ))
}

/// The `range` query parameter of the summary and the status page: 24h unless given,
/// and a 400 naming the value and the choices when it is none of them.
pub(super) fn range_param(query: Option<&str>) -> Result<Range, ApiError> {
    match query_param(query, "range") {
        None => Ok(Range::default()),
        Some(value) => Range::parse(&value).ok_or_else(|| ApiError::BadParameter {
            name: "range",
            value,
            expected: format!("one of {}", Range::ALL.map(Range::as_str).join(", ")),
        }),
    }
}
