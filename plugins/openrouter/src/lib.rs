//! Built-in check `openrouter`: fetches the OpenRouter models list
//! (`GET {base_url}/api/v1/models`) and passes on HTTP 200.
//!
//! Fails with "Status N" on any other status, or with a short reason when no
//! response came: "Timeout", "origin <origin> not granted", "response too large",
//! or the host's transport or invalid-request description.
//!
//! Settings: `base_url` (default `https://openrouter.ai`), `timeout_ms` (default
//! 10000). Sample: `openrouter_latency_seconds` whenever the API answered.

use healthhost_plugin::{Guest, Report, describe, get_json, settings};

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
    let base_url = settings::url("base_url", DEFAULT_BASE_URL).map_err(Report::fail)?;
    let timeout_ms = settings::millis("timeout_ms", DEFAULT_TIMEOUT_MS).map_err(Report::fail)?;
    let (result, latency) = get_json(
        format!("{base_url}/api/v1/models"),
        timeout_ms,
        "openrouter_latency_seconds",
    );
    Ok(match result {
        Ok(response) if response.status == 200 => Report::pass().with_sample(latency),
        Ok(response) => Report::fail(format!("Status {}", response.status)).with_sample(latency),
        // No latency sample: there was no answer to time.
        Err(error) => Report::fail(describe(error)),
    })
}

healthhost_plugin::export_check!(OpenRouter);
