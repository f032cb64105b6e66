//! The HTTP API (axum): `/health`, `/health/{check}`, `/livez`, `/readyz`, `/metrics`,
//! `POST /v1/ai-usage` (when a usage token is configured), JSON 404/405 answers, and
//! request instrumentation by matched route.
//!
//! Health handlers read the latest results; none waits on a plugin, except that
//! on-demand checks are brought up to date first (see [`Health::refresh`]). The usage
//! endpoint waits on its database, bounded by the store's timeouts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::auth::Bearer;
use crate::config::ShowDetails;
use crate::health::wire::{CheckDoc, HealthDoc, IetfDoc};
use crate::health::{self, Health};
use crate::instrumentator::{HttpMetrics, Observation};
use crate::metrics::Metrics;
use crate::usage::ingest::{Ingest, RecordError};

/// Content type of the IETF health check format.
pub const HEALTH_JSON: &str = "application/health+json";
/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Where AI usage rows are recorded.
pub const AI_USAGE_PATH: &str = "/v1/ai-usage";
/// `Retry-After` (seconds) when the usage database is unavailable: long enough for a
/// restart or failover to finish, short enough that writers do not pile up rows.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// What the handlers share.
pub struct AppState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub show_details: ShowDetails,
    pub details_token: Option<String>,
    /// The usage endpoint; `None` when no token is configured (the route is absent).
    pub ingest: Option<Arc<Ingest>>,
    /// Built bodies of the whole `/health`.
    pub bodies: HealthBodies,
}

/// How long a built `/health` body is served again: a result, an age or a check set
/// is at most this late, finer than any probe looks. With a thousand checks a body
/// takes milliseconds to build, and with every check running each second a result
/// changes every millisecond: rebuilding per change would be rebuilding per request.
/// Served from here it costs a copy of a pointer.
pub const HEALTH_BODY_TTL: Duration = Duration::from_millis(100);

/// The whole `/health` (no `exclude`), built: one per format and details setting.
#[derive(Default)]
pub struct HealthBodies(Mutex<[Option<Built>; 4]>);

#[derive(Clone)]
struct Built {
    at: Instant,
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

impl HealthBodies {
    /// The body for `slot` built within the TTL, if there is one.
    fn get(&self, slot: usize) -> Option<Built> {
        let bodies = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bodies[slot]
            .clone()
            .filter(|b| b.at.elapsed() < HEALTH_BODY_TTL)
    }

    fn put(&self, slot: usize, built: Built) {
        self.0.lock().unwrap_or_else(|p| p.into_inner())[slot] = Some(built);
    }
}

/// The application's router; tests call it without a socket.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/health", get(health_all))
        .route("/health/{check}", get(health_one))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if let Some(ingest) = &state.ingest {
        router = router.route(
            AI_USAGE_PATH,
            post(ai_usage).layer(DefaultBodyLimit::max(ingest.body_limit())),
        );
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), instrument))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Counts requests by matched route, method and grouped status (`2xx`), and tracks
/// requests in progress. Only matched routes reach this layer.
async fn instrument(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // Decided before anything is allocated: probes and scrapes are most requests.
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) if HttpMetrics::records(path.as_str()) => path.as_str().to_owned(),
        _ => return next.run(request).await,
    };
    let method = request.method().as_str().to_owned();
    let request_bytes = content_length(request.headers());
    let m = &state.metrics;
    let in_progress = m
        .requests_in_progress
        .with_label_values(&[route.as_str(), method.as_str()]);
    in_progress.inc();
    let started = Instant::now();
    let response = next.run(request).await;
    in_progress.dec();
    let seconds = started.elapsed().as_secs_f64();
    let status = format!("{}xx", response.status().as_u16() / 100);
    m.requests_total
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    m.request_duration
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(seconds);
    m.http.observe(&Observation {
        handler: &route,
        method: &method,
        status: response.status().as_u16(),
        seconds,
        request_bytes,
        response_bytes: content_length(response.headers()),
    });
    response
}

/// A message's `Content-Length`, 0 without one (as the instrumentator counts it).
fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether the caller may see check messages.
fn details(state: &AppState, bearer: &Bearer) -> bool {
    match state.show_details {
        ShowDetails::Always => true,
        ShowDetails::Never => false,
        ShowDetails::WhenAuthorized => bearer.is(state.details_token.as_deref()),
    }
}

fn wants_ietf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(HEALTH_JSON))
}

/// The `exclude` values of a query string (`?exclude=a&exclude=b`).
fn excluded(query: Option<&str>) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// A JSON response that no cache may keep.
fn json_response(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    bytes_response(status, content_type, Bytes::from(body.to_string()))
}

fn bytes_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn health_status(healthy: bool) -> StatusCode {
    if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn health_all(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let exclude = excluded(query.as_deref());
    state
        .health
        .refresh(|name| !exclude.iter().any(|e| e == name))
        .await;
    if !exclude.is_empty() {
        let views = state.health.views(&exclude);
        let status = health_status(health::healthy(&views));
        return health_response(&state, &bearer, &headers, status, &views, plan_doc);
    }
    // The whole document: built at most once per TTL, then served as bytes.
    let (ietf, details) = (wants_ietf(&headers), details(&state, &bearer));
    let slot = usize::from(ietf) * 2 + usize::from(details);
    let built = match state.bodies.get(slot) {
        Some(built) => built,
        None => {
            let views = state.health.views(&[]);
            let (content_type, body) = health_body(&views, ietf, details, plan_doc);
            let built = Built {
                at: Instant::now(),
                status: health_status(health::healthy(&views)),
                content_type,
                body,
            };
            state.bodies.put(slot, built.clone());
            built
        }
    };
    bytes_response(built.status, built.content_type, built.body)
}

/// Answers in the format the caller accepts: the IETF draft's, or `plan` (the AdtroBot plan's
/// whole document, or one check of it).
fn health_response(
    state: &AppState,
    bearer: &Bearer,
    headers: &HeaderMap,
    status: StatusCode,
    views: &[health::CheckView],
    plan: fn(&[health::CheckView], bool) -> Vec<u8>,
) -> Response {
    let (content_type, body) =
        health_body(views, wants_ietf(headers), details(state, bearer), plan);
    bytes_response(status, content_type, body)
}

/// A `/health` body and its content type: the IETF draft's format, or `plan`.
fn health_body(
    views: &[health::CheckView],
    ietf: bool,
    details: bool,
    plan: fn(&[health::CheckView], bool) -> Vec<u8>,
) -> (&'static str, Bytes) {
    if ietf {
        (
            HEALTH_JSON,
            Bytes::from(to_json(&IetfDoc::of(views, details))),
        )
    } else {
        ("application/json", Bytes::from(plan(views, details)))
    }
}

/// The plan's whole `/health` document.
fn plan_doc(views: &[health::CheckView], details: bool) -> Vec<u8> {
    to_json(&HealthDoc::of(views, details))
}

/// A wire type's JSON; these types always serialize.
fn to_json(doc: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(doc).expect("the wire types serialize")
}

async fn health_one(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    headers: HeaderMap,
    Path(check): Path<String>,
) -> Result<Response, ApiError> {
    state.health.refresh(|name| name == check).await;
    let Some(view) = state.health.view(&check) else {
        return Err(ApiError::NoSuchCheck(check));
    };
    let status = health_status(view.healthy);
    Ok(health_response(
        &state,
        &bearer,
        &headers,
        status,
        &[view],
        |views, details| to_json(&CheckDoc::of(&views[0], details)),
    ))
}

async fn livez() -> Response {
    json_response(
        StatusCode::OK,
        "application/json",
        &json!({"status": "alive"}),
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    state.health.refresh(|_| true).await;
    let ready = state.health.ready() && health::healthy(&state.health.views(&[]));
    let (loading, checks) = state.health.loading();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "loading": loading,
        "checks": checks,
    });
    json_response(health_status(ready), "application/json", &body)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    response
}

/// `POST /v1/ai-usage`: authorizes before reading the body, then records it. 201 with
/// the new ids after the commit; 400 malformed JSON; 401 no or a wrong token; 413 a
/// body over the limit; 422 rows that are not valid (every problem listed, nothing
/// written); 503 with `Retry-After` when the database is unavailable (nothing written).
async fn ai_usage(
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
    /// Usage rows refused (400, 422) or not written (503 with `Retry-After`).
    Record(RecordError),
    /// The write task failed: 500.
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
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
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "the usage database is unavailable; nothing was written", "retry_after_seconds": RETRY_AFTER_SECONDS}),
                )
            }
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal error"}),
            ),
        };
        let mut response = json_response(status, "application/json", &body);
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Record(RecordError::Store(_)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        response
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_is_repeatable_and_decoded() {
        assert_eq!(
            excluded(Some("exclude=a&exclude=b%2Dc&other=x")),
            ["a", "b-c"]
        );
        assert!(excluded(None).is_empty());
    }
}
