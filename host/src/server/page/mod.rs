//! The status page: `GET /` (one server-rendered HTML page), `POST /login` and
//! `POST /logout` (the usage read token in a cookie), and its two assets
//! (`/assets/page.css`, `/assets/page.js`), all embedded in the binary.
//!
//! Every check shows its status as an icon and a word, its age, uptime, a latency
//! sparkline and an outcome strip ([`view`] computes them; `page.html`, an askama
//! template, lays them out and escapes every value). Messages follow `/health`'s
//! details rule. The AI usage section shows only to a viewer holding the read token
//! (an `Authorization: Bearer` header or the cookie the login form sets); the token is
//! never put on the page or in a URL. Every answer of these routes, errors included,
//! carries a strict Content-Security-Policy (no inline script or style, nothing from
//! elsewhere), `nosniff` and `no-referrer` (`security_headers`, a layer).

use std::sync::Arc;
use std::time::SystemTime;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::probes::{details, query_param};
use super::{ApiError, AppState};
use crate::alerts::Alerts;
use crate::auth::Bearer;
use crate::config::Window;
use crate::dbpool::DbPool;
use crate::escape::escape_controls;
use crate::usage::summary::Range;

pub mod alerts;
pub mod switch;
pub mod uptime;
pub mod view;

use switch::{RangeLink, range_links, window_links};
use uptime::{PAGE_WINDOWS, RemovedRow};
use view::{CHART_HEIGHT, CHART_WIDTH, CheckRow, DAYS_HEIGHT, UsageView};

/// The page's Content-Security-Policy: its own stylesheet and script only, `fetch`
/// to itself (the refresh), forms to itself, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";
/// The cookie holding the usage read token (percent-encoded).
pub const TOKEN_COOKIE: &str = "healthhost_usage";
/// The largest login form accepted: a token and its field name.
pub const LOGIN_BODY_LIMIT: usize = 4096;

const PAGE_CSS: &str = include_str!("page.css");
const PAGE_JS: &str = include_str!("page.js");

/// The whole page, ready to render.
#[derive(Template)]
#[template(path = "page.html")]
pub struct StatusPage {
    pub healthy: bool,
    /// When it was rendered, in UTC.
    pub generated: String,
    pub checks: Vec<CheckRow>,
    /// Whether the usage section is there at all (a read token is configured).
    pub usage_enabled: bool,
    /// The numbers, for a viewer with the read token.
    pub usage: Option<UsageView>,
    /// The viewer has the token but the database did not answer.
    pub unavailable: bool,
    pub login_error: Option<&'static str>,
    pub ranges: Vec<RangeLink>,
    /// The uptime window switch, with a history store (else uptime is the last day's
    /// results in memory, and there is no switch).
    pub windows: Vec<RangeLink>,
    /// The uptime column's window, as its heading says it.
    pub window: &'static str,
    /// Checks the config no longer has, with stored results.
    pub removed: Vec<RemovedRow>,
    /// A history store is configured but could not be read: uptimes are memory's.
    pub history_unavailable: bool,
    /// Open episodes and the channels' deliveries, when alert rules are configured
    /// and the store answered.
    pub alerts: Option<alerts::AlertsView>,
    width: usize,
    height: usize,
    days_height: usize,
}

impl StatusPage {
    /// A page of `checks` rendered at `now`, without a usage section.
    pub fn new(checks: Vec<CheckRow>, healthy: bool, now: SystemTime) -> StatusPage {
        StatusPage {
            healthy,
            generated: humantime::format_rfc3339_seconds(now)
                .to_string()
                .replace('T', " ")
                .replace('Z', " UTC"),
            checks,
            usage_enabled: false,
            usage: None,
            unavailable: false,
            login_error: None,
            ranges: Vec::new(),
            windows: Vec::new(),
            window: Window::Day.as_str(),
            removed: Vec::new(),
            history_unavailable: false,
            alerts: None,
            width: CHART_WIDTH,
            height: CHART_HEIGHT,
            days_height: DAYS_HEIGHT,
        }
    }

    /// The HTML.
    pub fn html(&self) -> String {
        self.render().expect("the page's values all display")
    }
}

/// `GET /[?range=24h|7d|30d][&window=24h|7d|30d|90d]`: 200 with the page; 400 for
/// another range or window. The range picks the usage section's window, the window
/// the uptime column's (with a history store).
pub(super) async fn status_page(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let range = super::usage::range_param(query.as_deref())?;
    let window = window_param(query.as_deref())?;
    let authorized = token_accepted(&state, &bearer, &headers);
    let login_error = (!authorized && cookie_token(&headers).is_some())
        .then_some("the saved token is no longer accepted: log in again");
    let shown = Shown {
        range,
        window,
        authorized,
        login_error,
    };
    Ok(page(&state, &bearer, shown).await)
}

/// The page's `window` parameter: 24h unless given, and a 400 naming the value and
/// the choices when it is none of [`PAGE_WINDOWS`].
fn window_param(query: Option<&str>) -> Result<Window, ApiError> {
    match query_param(query, "window") {
        None => Ok(Window::Day),
        Some(value) => Window::parse(&value)
            .filter(|w| PAGE_WINDOWS.contains(w))
            .ok_or_else(|| ApiError::BadParameter {
                name: "window",
                value,
                expected: format!("one of {}", PAGE_WINDOWS.map(Window::as_str).join(", ")),
            }),
    }
}

/// What a page shows: the usage range and uptime window picked, and for whom.
struct Shown {
    range: Range,
    window: Window,
    /// The viewer holds the usage read token.
    authorized: bool,
    login_error: Option<&'static str>,
}

/// `POST /login` (form field `token`): with the read token, 303 to `/` setting the
/// cookie; otherwise 401 with the page and the form again.
pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    bearer: Bearer,
    body: Bytes,
) -> Response {
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let accepted = state
        .usage_reader
        .as_ref()
        .is_some_and(|r| !token.is_empty() && r.accepts(&token));
    if !accepted {
        let shown = Shown {
            range: Range::default(),
            window: Window::Day,
            authorized: false,
            login_error: Some("that is not the read token"),
        };
        let mut response = page(&state, &bearer, shown).await;
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let value: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    see_other(format!(
        "{TOKEN_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
    ))
}

/// `POST /logout`: 303 to `/`, clearing the cookie.
pub(super) async fn logout() -> Response {
    see_other(format!(
        "{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
}

pub(super) async fn page_css() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

pub(super) async fn page_js() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

/// The page as `shown` says; the usage numbers only when authorized.
async fn page(state: &AppState, bearer: &Bearer, shown: Shown) -> Response {
    let now = SystemTime::now();
    let (checks, healthy) = view::checks(&state.health, now, details(state, bearer));
    let mut page = StatusPage::new(checks, healthy, now);
    if let Some(store) = &state.history_store {
        page.windows = window_links(shown.range, shown.window);
        match store.reachable() {
            Some(pool) => {
                stored_uptimes(state, pool, shown.window, &mut page, now).await;
                if let Some(configured) = &state.alerts {
                    mark_maintenance(configured, &mut page.checks, now);
                    let channels: Vec<String> = configured
                        .config()
                        .channels
                        .iter()
                        .map(|c| c.name.clone())
                        .collect();
                    page.alerts = alerts::read(pool, &channels, now)
                        .await
                        .inspect_err(
                            |e| tracing::warn!(error = %e, "status page: alerts unreadable"),
                        )
                        .ok();
                }
            }
            None => page.history_unavailable = true,
        }
    }
    if let Some(reader) = &state.usage_reader {
        page.usage_enabled = true;
        page.login_error = shown.login_error;
        page.ranges = range_links(shown.range, shown.window);
        if shown.authorized {
            match reader.summary(shown.range).await {
                Ok(summary) => page.usage = Some(view::usage(&summary)),
                Err(error) => {
                    tracing::warn!(error = %error, "status page: usage summary unavailable");
                    page.unavailable = true;
                }
            }
        }
    }
    html_response(StatusCode::OK, page.html())
}

/// Each row's maintenance window, while one silences its alerts.
fn mark_maintenance(alerts: &Alerts, rows: &mut [CheckRow], now: SystemTime) {
    let now_ms = crate::journal::unix_ms(now);
    for row in rows {
        row.maintenance = alerts.windows().silence(&row.name, now_ms).map(|s| {
            let until = crate::alerts::maintenance::rfc3339(s.until_ms);
            match s.reason {
                Some(reason) => format!("until {until} ({})", escape_controls(&reason)),
                None => format!("until {until}"),
            }
        });
    }
}

/// The page's uptimes, SLOs and removed checks from the history store over `window`;
/// when the store cannot be read, memory's uptimes stay and the page says so.
async fn stored_uptimes(
    state: &AppState,
    pool: &DbPool,
    window: Window,
    page: &mut StatusPage,
    now: SystemTime,
) {
    let slos = state
        .health
        .set()
        .entries
        .iter()
        .filter_map(|(name, entry)| Some((name.clone(), entry.check.as_ref()?.config.slo?)))
        .collect();
    let applied = uptime::apply(
        &state.page_cache,
        pool,
        window,
        &mut page.checks,
        &slos,
        now,
    );
    match applied.await {
        Ok(removed) => {
            page.window = window.as_str();
            page.removed = removed;
        }
        Err(error) => {
            tracing::warn!(error = %error, "status page: the history store cannot be read");
            page.history_unavailable = true;
        }
    }
}

/// Whether the request carries the read token, as a bearer header or the cookie.
fn token_accepted(state: &AppState, bearer: &Bearer, headers: &HeaderMap) -> bool {
    let Some(reader) = &state.usage_reader else {
        return false;
    };
    reader.authorized(bearer) || cookie_token(headers).is_some_and(|t| reader.accepts(&t))
}

/// The token in the request's cookie, decoded.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| {
            url::form_urlencoded::parse(format!("t={value}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default()
        })
        .filter(|t| !t.is_empty())
}

/// The security headers every answer of the page's routes carries, errors included
/// (a bad `range`, an oversized login form): a layer on those routes adds them, so
/// no answer of a handler or an extractor can leave them out.
pub(super) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The content type and caching of a page answer.
fn typed(response: &mut Response, content_type: &'static str, cache: &'static str) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    typed(&mut response, "text/html; charset=utf-8", "no-store");
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    typed(&mut response, content_type, "no-cache");
    response
}

fn see_other(cookie: String) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    typed(&mut response, "text/plain; charset=utf-8", "no-store");
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.insert(SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_cookie_token_is_read_decoded_among_others() {
        let headers = with_cookie("a=b; healthhost_usage=s%3Bcr%20et; c=d");
        assert_eq!(cookie_token(&headers).as_deref(), Some("s;cr et"));
        assert_eq!(cookie_token(&with_cookie("healthhost_usage=")), None);
        assert_eq!(cookie_token(&with_cookie("other=x")), None);
    }

    #[test]
    fn the_page_escapes_plugin_text_and_has_no_inline_script() {
        let now = SystemTime::UNIX_EPOCH;
        let row = CheckRow {
            name: "db".into(),
            class: "fail",
            icon: "✗",
            word: "failing",
            outcome: None,
            critical: true,
            age: "1 s ago".into(),
            uptime: "50.00 %".into(),
            slo: Some("SLO 99 % (30d): 100 % of the error budget left".into()),
            window_runs: None,
            maintenance: Some("until 2026-12-07T04:00:00Z (<b>upgrade</b>)".into()),
            latency: "–".into(),
            spark: String::new(),
            strip: Default::default(),
            runs: 2,
            last_failure: Some(view::Failure {
                ago: "1 s ago".into(),
                outcome: "fail",
                message: Some("<script>alert(1)</script>".into()),
            }),
        };
        let html = StatusPage::new(vec![row], false, now).html();
        assert!(
            html.contains("&#60;script&#62;alert(1)") || html.contains("&lt;script&gt;alert(1)"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "only the external script tag");
        assert!(html.contains("✗</span> <span class=\"word\">failing</span>"));
        assert!(
            !html.contains("<b>upgrade"),
            "a maintenance reason is escaped: {html}"
        );
        assert!(
            !html.contains("id=\"usage\""),
            "no usage section without a reader"
        );
    }
}
