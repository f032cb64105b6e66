//! The `http` capability: outbound HTTP to the origins a check was granted.
//!
//! Policy: [`HttpPolicy`], a parsed allowlist of origins (scheme, host, port); empty
//! denies everything, `*` allows every http(s) origin and must be written out. The
//! headers that route or frame a request ([`forbidden_header`]: `Host`, the length and
//! connection headers, `Proxy-*`) are the host's: a plugin that sets one gets the typed
//! `invalid` error, so it cannot reach another virtual host behind a shared proxy.
//! Per-run state: [`HttpState`]. Host implementation: redirects are followed by hand so
//! that every hop is checked against the allowlist; the body is read up to a cap; the
//! exchange gets the lesser of the guest's timeout and the run's remaining time.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tracing::Instrument;
use url::Url;

use super::bindings::healthhost::plugin::http::{self as wit, Error, Request, Response};
use super::{Noted, Refusal, RunContext, held};
use crate::capabilities::fixtures::{Fixtures, Miss};
use crate::limits::{Deadline, HTTP_MAX_REDIRECTS, HTTP_MAX_RESPONSE_BYTES};
use crate::scrub::Scrubber;

// ---------------------------------------------------------------------------------
// Policy: `crate::config::grants` (what the operator wrote)

use crate::config::grants::{HttpPolicy, Origin};

// ---------------------------------------------------------------------------------
// Per-run state

/// What the `http` import of one run can reach.
pub struct HttpState {
    pub(crate) check: Arc<str>,
    pub(crate) policy: Arc<HttpPolicy>,
    pub(crate) client: reqwest::Client,
    pub(crate) scrubber: Arc<Scrubber>,
    pub(crate) deadline: Deadline,
    /// Canned answers instead of the network (`healthhost check --fixtures`).
    pub(crate) fixtures: Option<Arc<Fixtures>>,
    /// Requests refused, for diagnostics.
    pub(crate) refused: Noted<Refusal>,
}

impl HttpState {
    /// The state of one run allowed `policy`, sending with the shared `client`.
    pub fn new(run: &RunContext, policy: Arc<HttpPolicy>, client: reqwest::Client) -> HttpState {
        HttpState {
            check: run.check.clone(),
            policy,
            client,
            scrubber: run.scrubber.clone(),
            deadline: run.deadline,
            fixtures: run.fixtures.clone(),
            refused: Noted::default(),
        }
    }
}

/// The client every check shares: redirects are the host's job (see above), and no
/// proxy from the environment may route around the allowlist.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("healthhost/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a TLS backend is compiled in")
}

// ---------------------------------------------------------------------------------
// Host implementation

impl wit::Host for HttpState {
    async fn send(&mut self, req: Request) -> Result<Response, Error> {
        // Parsed first, so the span never carries the plugin's raw text.
        let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::Invalid(format!("invalid method '{}'", req.method)))?;
        let span = tracing::debug_span!("http", check = %self.check, %method);
        let timeout = self
            .deadline
            .host_call_timeout(req.timeout_ms.map(|ms| Duration::from_millis(ms.into())));
        // Kept for a refusal: the plugin's URL.
        let call = format!("{method} {}", req.url);
        let exchange = self.exchange(method, req);
        let (result, refused) = match tokio::time::timeout(timeout, exchange)
            .instrument(span)
            .await
        {
            Ok(outcome) => outcome,
            Err(_elapsed) => (Err(Error::Timeout), false),
        };
        if refused && let Err(error) = &result {
            self.refused.push(Refusal {
                capability: "http",
                call: held(&self.scrubber, &call),
                why: held(&self.scrubber, &describe(error)),
            });
        }
        result
    }
}

/// The words the SDK shares (`wit/words.rs`).
mod words {
    include!("../../../wit/words.rs");
}

/// The text of an error as a plugin author reads it.
fn describe(error: &Error) -> String {
    match error {
        Error::Denied(origin) => words::origin_not_granted(origin),
        Error::Timeout => "timeout".to_owned(),
        Error::TooLarge(cap) => format!("response over {cap} bytes"),
        Error::Transport(text) | Error::Invalid(text) => text.clone(),
    }
}

/// Redirect statuses, and whether each keeps the method and body (307, 308).
fn redirect_keeps_method(status: StatusCode) -> Option<bool> {
    match status.as_u16() {
        301..=303 => Some(false),
        307 | 308 => Some(true),
        _ => None,
    }
}

/// Headers that must not follow a redirect to another origin.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// Request headers the host sets and a plugin may not: `host` picks the virtual host
/// (behind a shared proxy or CDN, one the check was not granted); the others frame the
/// message or manage the connection, and a plugin's own could smuggle a second
/// request. Lowercase, as [`HeaderName`] is; every `proxy-*` header is forbidden too.
pub const FORBIDDEN_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];

/// Whether a plugin may not set the header `name` (see [`FORBIDDEN_HEADERS`]).
pub fn forbidden_header(name: &HeaderName) -> bool {
    FORBIDDEN_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("proxy-")
}

impl HttpState {
    /// The exchange's result, and whether the host refused it (rather than the network
    /// or the server failing it).
    async fn exchange(&self, method: Method, req: Request) -> (Result<Response, Error>, bool) {
        match self.send_checked(method, req).await {
            Ok(response) => (Ok(response), false),
            Err(Failure::Refused(error)) => (Err(error), true),
            Err(Failure::Failed(error)) => (Err(error), false),
        }
    }

    async fn send_checked(&self, mut method: Method, req: Request) -> Result<Response, Failure> {
        let mut url =
            Url::parse(&req.url).map_err(|e| Error::Invalid(format!("invalid url: {e}")))?;
        if Origin::of(&url).is_none() {
            return Err(
                Error::Invalid("the url must be http or https and have a host".into()).into(),
            );
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Invalid(format!("invalid header name '{name}'")))?;
            if forbidden_header(&name) {
                return Err(Error::Invalid(format!(
                    "header '{name}' is set by the host, a plugin may not set it"
                ))
                .into());
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::Invalid(format!("invalid value for header '{name}'")))?;
            headers.append(name, value);
        }
        let mut body = req.body;

        for _hop in 0..=HTTP_MAX_REDIRECTS {
            if !self.policy.allows(&url) {
                let origin = Origin::of(&url).map_or_else(|| url.to_string(), |o| o.to_string());
                return Err(Error::Denied(origin).into());
            }
            if let Some(fixtures) = &self.fixtures {
                // A fixture's answer is final: a redirect in it is returned as it is.
                return fixtures
                    .http(method.as_str(), &url)
                    .await
                    .map_err(|miss| match miss {
                        Miss::NoFixture(text) => Failure::Refused(Error::Transport(text)),
                        Miss::Answer(error) => Failure::Failed(error),
                    });
            }
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| Failure::Failed(self.transport(e)))?;
            let status = response.status();
            let location = response.headers().get(reqwest::header::LOCATION);
            let (Some(keeps_method), Some(location)) = (redirect_keeps_method(status), location)
            else {
                return self.read(response).await.map_err(Failure::Failed);
            };
            let next = location
                .to_str()
                .ok()
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    Failure::Failed(Error::Transport(format!(
                        "redirect with an invalid location (status {status})"
                    )))
                })?;
            if !keeps_method && method != Method::HEAD {
                method = Method::GET;
                body = None;
            }
            if Origin::of(&next) != Origin::of(&url) {
                for name in CREDENTIAL_HEADERS {
                    headers.remove(name);
                }
            }
            url = next;
        }
        Err(Failure::Failed(Error::Transport(format!(
            "more than {HTTP_MAX_REDIRECTS} redirects"
        ))))
    }

    /// Reads the response, refusing bodies over the cap without buffering them.
    async fn read(&self, mut response: reqwest::Response) -> Result<Response, Error> {
        let too_large = Error::TooLarge(HTTP_MAX_RESPONSE_BYTES);
        if response
            .content_length()
            .is_some_and(|n| n > HTTP_MAX_RESPONSE_BYTES)
        {
            return Err(too_large);
        }
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if (body.len() + chunk.len()) as u64 > HTTP_MAX_RESPONSE_BYTES {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// A transport error as the guest sees it: the error chain without the URL and
    /// without secrets.
    fn transport(&self, error: reqwest::Error) -> Error {
        if error.is_timeout() {
            return Error::Timeout;
        }
        let invalid = error.is_builder();
        let text = self
            .scrubber
            .scrub(&error_chain(&error.without_url()))
            .into_owned();
        if invalid {
            Error::Invalid(text)
        } else {
            Error::Transport(text)
        }
    }
}

/// Why an exchange produced no response: the host refused it (the plugin's request is
/// malformed, not granted, or matches no fixture), or it failed on its way.
enum Failure {
    Refused(Error),
    Failed(Error),
}

/// The host's own checks of the request refuse it; what comes after fails it.
impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Refused(error)
    }
}

/// An error and its sources, joined with ": ".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn parses_origins_and_rejects_everything_else() {
        let good = [
            "https://api.telegram.org",
            "https://api.telegram.org/",
            "http://127.0.0.1:8080",
            "http://[::1]:9000",
            "HTTPS://OpenRouter.AI",
            "*",
        ];
        assert!(HttpPolicy::parse(&good).is_ok());
        let bad = [
            "api.telegram.org",
            "ftp://example.com",
            "https://user:pw@example.com",
            "https://example.com/path",
            "https://example.com?q=1",
            "https://example.com#frag",
            "file:///etc/passwd",
            "http://",
            "",
        ];
        for entry in bad {
            let err = HttpPolicy::parse(&[entry]).unwrap_err();
            assert!(err.to_string().contains(&format!("'{entry}'")), "{err}");
        }
    }

    #[test]
    fn matches_scheme_host_and_port_exactly() {
        let policy = HttpPolicy::parse(&[
            "https://api.example.com",
            "http://127.0.0.1:8080",
            "http://[::1]:9000",
        ])
        .unwrap();
        let cases = [
            ("https://api.example.com/v1/models", true),
            ("https://api.example.com:443/x", true),
            ("https://API.EXAMPLE.COM/x", true),
            ("http://api.example.com/x", false),
            ("https://api.example.com:8443/x", false),
            ("https://evil.example.com/x", false),
            ("https://api.example.com.evil.com/x", false),
            ("https://api.example.com@evil.com/x", false),
            ("https://user:pw@api.example.com/x", true),
            ("http://127.0.0.1:8080/health", true),
            ("http://127.0.0.1:8081/health", false),
            ("http://127.0.0.1/health", false),
            ("http://localhost:8080/health", false),
            ("http://[::1]:9000/", true),
            ("http://[::1]:9001/", false),
            ("http://[0:0:0:0:0:0:0:1]:9000/", true),
            ("ftp://api.example.com/", false),
            ("data:text/plain,hi", false),
        ];
        for (u, expected) in cases {
            assert_eq!(policy.allows(&url(u)), expected, "{u}");
        }
    }

    #[test]
    fn empty_policy_denies_and_star_allows_any_http_origin() {
        let none = HttpPolicy::default();
        assert!(none.is_empty());
        assert!(!none.allows(&url("https://example.com/")));
        let any = HttpPolicy::parse(&["*"]).unwrap();
        assert!(any.allows(&url("https://example.com/")));
        assert!(any.allows(&url("http://10.0.0.1:1234/")));
        assert!(!any.allows(&url("file:///etc/passwd")));
    }

    #[test]
    fn routing_framing_and_proxy_headers_are_forbidden_in_any_case() {
        let cases = [
            ("Host", true),
            ("HOST", true),
            ("content-length", true),
            ("Transfer-Encoding", true),
            ("Connection", true),
            ("upgrade", true),
            ("TE", true),
            ("Trailer", true),
            ("Keep-Alive", true),
            ("Proxy-Authorization", true),
            ("proxy-connection", true),
            ("PROXY-anything", true),
            ("Authorization", false),
            ("Accept", false),
            ("X-Forwarded-Host", false),
            ("Hostname", false),
            ("X-Proxy", false),
            ("Content-Type", false),
            ("Tea", false),
        ];
        for (name, forbidden) in cases {
            let header = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(forbidden_header(&header), forbidden, "{name}");
        }
    }

    #[test]
    fn redirect_statuses() {
        assert_eq!(redirect_keeps_method(StatusCode::FOUND), Some(false));
        assert_eq!(redirect_keeps_method(StatusCode::SEE_OTHER), Some(false));
        assert_eq!(
            redirect_keeps_method(StatusCode::TEMPORARY_REDIRECT),
            Some(true)
        );
        assert_eq!(
            redirect_keeps_method(StatusCode::PERMANENT_REDIRECT),
            Some(true)
        );
        assert_eq!(redirect_keeps_method(StatusCode::OK), None);
        assert_eq!(redirect_keeps_method(StatusCode::NOT_MODIFIED), None);
    }
}
