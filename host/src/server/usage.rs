//! `POST /v1/ai-usage`: the bearer token before the body, then the rows recorded by
//! [`Ingest`].

use super::*;
use crate::auth::Bearer;

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
