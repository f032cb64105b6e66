//! `/health` and `/health/{check}`: the format the caller accepts (the AdtroBot plan's or
//! the IETF draft's), the details a bearer token unlocks, `exclude`, and the whole
//! document built at most once per [`HEALTH_BODY_TTL`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::{ApiError, AppState, HEALTH_JSON, bytes_response};
use crate::auth::Bearer;
use crate::config::ShowDetails;
use crate::health;
use crate::health::wire::{CheckDoc, HealthDoc, IetfDoc};
use crate::sync::lock;

/// How long a built `/health` body is served as it is: a result, an age or a check set
/// is at most this late, finer than any probe looks. With a thousand checks a body
/// takes milliseconds to build, and with every check running each second a result
/// changes every millisecond: rebuilding per change would be rebuilding per request.
/// Served from here it costs a copy of a pointer.
pub const HEALTH_BODY_TTL: Duration = Duration::from_millis(100);

/// How old a body may be and still be served while a newer one is built aside: under
/// load, no request waits for a build, nor do the requests arriving during one all
/// build it again. An older body (after a quiet spell) is built by the request.
pub const HEALTH_BODY_STALE: Duration = Duration::from_millis(200);

/// The whole `/health` (no `exclude`), built: one per format and details setting.
#[derive(Default)]
pub struct HealthBodies(Mutex<[Slot; 4]>);

#[derive(Default)]
struct Slot {
    built: Option<Built>,
    /// A request is building a newer body aside.
    rebuilding: bool,
}

#[derive(Clone)]
struct Built {
    at: Instant,
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

/// What a request finds in its slot.
enum Found {
    /// A body to serve.
    Serve(Built),
    /// A body to serve, and the request is to build a newer one aside.
    ServeAndRebuild(Built),
    /// Nothing recent enough: the request builds its body.
    Build,
}

impl HealthBodies {
    fn get(&self, slot: usize) -> Found {
        let mut bodies = lock(&self.0);
        let slot = &mut bodies[slot];
        let Some(built) = &slot.built else {
            return Found::Build;
        };
        let age = built.at.elapsed();
        if age < HEALTH_BODY_TTL || (age < HEALTH_BODY_STALE && slot.rebuilding) {
            Found::Serve(built.clone())
        } else if age < HEALTH_BODY_STALE {
            slot.rebuilding = true;
            Found::ServeAndRebuild(built.clone())
        } else {
            Found::Build
        }
    }

    fn put(&self, slot: usize, built: Built) {
        let mut bodies = lock(&self.0);
        bodies[slot] = Slot {
            built: Some(built),
            rebuilding: false,
        };
    }

    /// The slot of a format and details setting.
    fn slot(ietf: bool, details: bool) -> usize {
        usize::from(ietf) * 2 + usize::from(details)
    }

    /// Builds the body of a format and details setting now, and keeps it.
    fn build(&self, health: &health::Health, ietf: bool, details: bool) -> Built {
        let views = health.views(&[]);
        let (content_type, body) = health_body(&views, ietf, details, plan_doc);
        let built = Built {
            at: Instant::now(),
            status: health_status(health::healthy(&views)),
            content_type,
            body,
        };
        self.put(HealthBodies::slot(ietf, details), built.clone());
        built
    }
}

/// Whether the caller may see check messages (`/health`, `/health/{check}` and a
/// check's history).
pub(super) fn details(state: &AppState, bearer: &Bearer) -> bool {
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

/// The first value of parameter `name` in a query string, decoded.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub(super) fn health_status(healthy: bool) -> StatusCode {
    if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

pub(super) async fn health_all(
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
    let built = match state.bodies.get(HealthBodies::slot(ietf, details)) {
        Found::Serve(built) => built,
        Found::ServeAndRebuild(built) => {
            let state = state.clone();
            tokio::task::spawn_blocking(move || state.bodies.build(&state.health, ietf, details));
            built
        }
        Found::Build => state.bodies.build(&state.health, ietf, details),
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

pub(super) async fn health_one(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn built(age: Duration) -> Built {
        Built {
            at: Instant::now().checked_sub(age).unwrap(),
            status: StatusCode::OK,
            content_type: "application/json",
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn a_stale_body_is_rebuilt_by_one_request_while_the_others_are_served_it() {
        let bodies = HealthBodies::default();
        assert!(matches!(bodies.get(0), Found::Build), "nothing built yet");
        bodies.put(0, built(Duration::ZERO));
        assert!(matches!(bodies.get(0), Found::Serve(_)), "fresh");
        bodies.put(0, built(HEALTH_BODY_TTL));
        assert!(
            matches!(bodies.get(0), Found::ServeAndRebuild(_)),
            "the first to find it stale"
        );
        assert!(
            matches!(bodies.get(0), Found::Serve(_)),
            "the others, meanwhile"
        );
        assert!(matches!(bodies.get(1), Found::Build), "slots are apart");
        bodies.put(0, built(HEALTH_BODY_STALE));
        assert!(
            matches!(bodies.get(0), Found::Build),
            "too old to serve: built by the request"
        );
    }

    #[test]
    fn exclude_is_repeatable_and_decoded() {
        assert_eq!(
            excluded(Some("exclude=a&exclude=b%2Dc&other=x")),
            ["a", "b-c"]
        );
        assert!(excluded(None).is_empty());
    }

    #[test]
    fn a_query_parameter_is_its_first_value_decoded() {
        assert_eq!(
            query_param(Some("a=1&since=1h%2030m&since=2h"), "since").as_deref(),
            Some("1h 30m")
        );
        assert_eq!(query_param(Some("a=1"), "since"), None);
        assert_eq!(query_param(None, "since"), None);
    }
}
