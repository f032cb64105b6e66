//! The HTTP API (axum): the status page `/`, `/health`, `/health/{check}`, `/livez`,
//! `/readyz`, `/metrics`,
//! `GET /v1/checks/{check}/history`, `POST /v1/ai-usage` and `GET /v1/usage/summary`
//! (each when its usage token is configured), JSON 404/405 answers, and request
//! instrumentation by matched route.
//!
//! Files: `probes` (`/health`, `/health/{check}`), `history` (a check's history),
//! `page` (the status page at `/`, its login and assets),
//! `usage` (`POST /v1/ai-usage`, `GET /v1/usage/summary`), `error` (each error as its
//! JSON answer); this one holds the router, the shared state, the instrumentation,
//! `/livez`, `/readyz` and `/metrics`.
//!
//! Health handlers read the latest results; none waits on a plugin, except that
//! on-demand checks are brought up to date first (see [`Health::refresh`]). The usage
//! endpoint waits on its database, bounded by the store's timeouts.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use crate::alerts::Alerts;
use crate::config::ShowDetails;
use crate::dbpool::DbPool;
use crate::health::{self, Health};
use crate::instrumentator::{HttpMetrics, Observation};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::usage::ingest::Ingest;
use crate::usage::summary::Reader;

/// Content type of the IETF health check format.
pub const HEALTH_JSON: &str = "application/health+json";
/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Where AI usage rows are recorded.
pub const AI_USAGE_PATH: &str = "/v1/ai-usage";
/// Where maintenance windows are listed and added.
pub const MAINTENANCE_PATH: &str = "/v1/maintenance";
/// Where the AI usage summary is read.
pub const USAGE_SUMMARY_PATH: &str = "/v1/usage/summary";
/// `Retry-After` (seconds) when the usage database is unavailable: long enough for a
/// restart or failover to finish, short enough that writers do not pile up rows.
pub const RETRY_AFTER_SECONDS: u32 = 5;

mod error;
mod history;
mod maintenance;
pub mod page;
mod probes;
mod usage;

pub use error::ApiError;
use history::{check_history, check_uptime};
pub use probes::HealthBodies;
use probes::{health_all, health_one, health_status};
use usage::{ai_usage, usage_summary};

/// What the handlers share.
pub struct AppState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub show_details: ShowDetails,
    pub details_token: Option<String>,
    /// The usage endpoint; `None` when no token is configured (the route is absent).
    pub ingest: Option<Arc<Ingest>>,
    /// The usage summary; `None` when no read token is configured (the route is
    /// absent).
    pub usage_reader: Option<Arc<Reader>>,
    /// Built bodies of the whole `/health`.
    pub bodies: HealthBodies,
    /// The history store, read by `/v1/checks/{check}/uptime`, the history and the
    /// page; `None` when history is kept in memory only.
    pub history_store: Option<HistoryStore>,
    /// This host's name in the check history (`[history] node`).
    pub node: String,
    /// Alerting, when rules are configured: the page shows its open episodes and
    /// deliveries, and `/v1/maintenance` works through it.
    pub alerts: Option<Arc<Alerts>>,
    /// The status page's reads of the history store, kept briefly.
    pub page_cache: page::uptime::StoredCache,
}

/// The history store's pool, and its writer, which knows whether the store is failing.
#[derive(Clone)]
pub struct HistoryStore {
    pub pool: DbPool,
    pub journal: Arc<Journal>,
}

impl HistoryStore {
    /// The pool, unless the writer finds the store down: readers then answer from
    /// memory at once rather than wait for a connection.
    pub fn reachable(&self) -> Option<&DbPool> {
        (!self.journal.store_failing()).then_some(&self.pool)
    }
}

/// The application's router; tests call it without a socket.
pub fn router(state: Arc<AppState>) -> Router {
    let mut page = Router::new()
        .route("/", get(page::status_page))
        .route("/assets/page.css", get(page::page_css))
        .route("/assets/page.js", get(page::page_js));
    if state.usage_reader.is_some() {
        page = page
            .route(
                "/login",
                post(page::login).layer(DefaultBodyLimit::max(page::LOGIN_BODY_LIMIT)),
            )
            .route("/logout", post(page::logout));
    }
    let mut router = Router::new()
        .merge(page.layer(middleware::map_response(page::security_headers)))
        .route("/v1/checks/{check}/history", get(check_history))
        .route("/v1/checks/{check}/uptime", get(check_uptime))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz));
    if let Some(ingest) = &state.ingest {
        router = router.route(
            AI_USAGE_PATH,
            post(ai_usage).layer(DefaultBodyLimit::max(ingest.body_limit())),
        );
    }
    if state.usage_reader.is_some() {
        router = router.route(USAGE_SUMMARY_PATH, get(usage_summary));
    }
    if state
        .alerts
        .as_ref()
        .is_some_and(|a| a.config().admin_token.is_some())
    {
        router = router
            .route(
                MAINTENANCE_PATH,
                get(maintenance::list_windows).post(maintenance::add_window),
            )
            .route("/v1/maintenance/{id}", delete(maintenance::end_window));
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), instrument))
        // Added after the layer, which wraps only the routes before it: the bot does
        // not instrument these (`EXCLUDED_HANDLERS`), and probes and scrapes, most
        // requests, then pay nothing for it.
        .route("/health", get(health_all))
        .route("/health/{check}", get(health_one))
        .route("/metrics", get(metrics))
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
    m.changed();
    let started = Instant::now();
    let response = next.run(request).await;
    in_progress.dec();
    let seconds = started.elapsed().as_secs_f64();
    let status = format!("{}xx", response.status().as_u16() / 100);
    m.plan
        .requests_total
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
    m.changed();
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
    let mut response = state.metrics.scrape().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}
