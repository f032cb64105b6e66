//! Built-in check `openrouter`: fetches the OpenRouter models list
//! (`GET {base_url}/api/v1/models`) and passes on HTTP 200.
//!
//! Fails with "Status N" on any other status, or with a short reason when no
//! response came: "Timeout", "origin <origin> not granted", "response too large",
//! or the host's transport or invalid-request description.
//!
//! Settings: `base_url` (default `https://openrouter.ai`), `timeout_ms` (default
//! 10000). Sample: `openrouter_latency_seconds` whenever the API answered.

wit_bindgen::generate!({ world: "check", path: "../../wit" });

use std::time::Instant;

use healthhost::plugin::config;
use healthhost::plugin::http::{self, Error, Request};
use healthhost::plugin::types::{Sample, Status};

/// The API's origin when the `base_url` setting is absent.
const DEFAULT_BASE_URL: &str = "https://openrouter.ai";
/// How long the request may take when `timeout_ms` is absent; the host may cut
/// it shorter to fit the run's own timeout.
const DEFAULT_TIMEOUT_MS: u32 = 10_000;

struct OpenRouter;

impl Guest for OpenRouter {
    fn check() -> Report {
        match run() {
            Ok(report) | Err(report) => report,
        }
    }
}

/// The check; `Err` carries an early failure report.
fn run() -> Result<Report, Report> {
    let base_url = config::get("base_url").unwrap_or_else(|| DEFAULT_BASE_URL.into());
    if !base_url.starts_with("http://") && !base_url.starts_with("https://") {
        return Err(fail(format!(
            "invalid setting base_url = '{base_url}' (expected a URL like {DEFAULT_BASE_URL})"
        )));
    }
    let timeout_ms = match config::get("timeout_ms") {
        None => DEFAULT_TIMEOUT_MS,
        Some(raw) => raw.trim().parse().map_err(|_| {
            fail(format!(
                "invalid setting timeout_ms = '{raw}' (expected milliseconds, e.g. 10000)"
            ))
        })?,
    };

    let request = Request {
        method: "GET".into(),
        url: format!("{}/api/v1/models", base_url.trim_end_matches('/')),
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
        timeout_ms: Some(timeout_ms),
    };
    let started = Instant::now();
    let result = http::send(&request);
    let latency = Sample {
        name: "openrouter_latency_seconds".into(),
        labels: Vec::new(),
        value: started.elapsed().as_secs_f64(),
    };

    Ok(match result {
        Ok(response) if response.status == 200 => Report {
            status: Status::Pass,
            message: None,
            samples: vec![latency],
        },
        Ok(response) => Report {
            status: Status::Fail,
            message: Some(format!("Status {}", response.status)),
            samples: vec![latency],
        },
        // No latency sample: there was no answer to time.
        Err(error) => fail(error_message(error)),
    })
}

/// The short message for a request that produced no response.
fn error_message(error: Error) -> String {
    match error {
        Error::Timeout => "Timeout".into(),
        Error::Denied(origin) => format!("origin {origin} not granted"),
        Error::TooLarge(_) => "response too large".into(),
        Error::Transport(message) | Error::Invalid(message) => message,
    }
}

fn fail(message: String) -> Report {
    Report {
        status: Status::Fail,
        message: Some(message),
        samples: Vec::new(),
    }
}

// The export glue wit-bindgen generates declares `unsafe` exported symbols: the
// only unsafe code in this crate, allowed here and nowhere else.
#[allow(unsafe_code)]
mod export {
    use super::OpenRouter;
    super::export!(OpenRouter with_types_in super);
}
