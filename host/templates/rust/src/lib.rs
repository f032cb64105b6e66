//! The check "{{name}}": GETs the `url` setting and passes when the answer is HTTP 200
//! with JSON whose `field` equals `expected`; warns when that answer took longer than
//! `slow_ms`; fails otherwise (another status, not JSON, another value, no answer).
//! Exports the sample `{{name_snake}}_latency_seconds` whenever the service answered.

use healthhost_plugin::{Guest, Report, describe, get_json, settings};

/// The JSON field looked at when `field` is not set.
const DEFAULT_FIELD: &str = "status";
/// The value that passes when `expected` is not set.
const DEFAULT_EXPECTED: &str = "ok";
/// Answers slower than this (milliseconds) warn, when `slow_ms` is not set.
const DEFAULT_SLOW_MS: u32 = 1000;
/// How long the request may take when `timeout_ms` is not set; the host may cut it
/// shorter to fit the run's own timeout.
const DEFAULT_TIMEOUT_MS: u32 = 5000;

struct Check;

impl Guest for Check {
    fn check() -> Report {
        run().unwrap_or_else(|report| report)
    }
}

/// The check; `Err` carries an early report.
fn run() -> Result<Report, Report> {
    let url = settings::required_url("url", "http://127.0.0.1:8080/status").map_err(Report::fail)?;
    let field = settings::text("field", DEFAULT_FIELD);
    let expected = settings::text("expected", DEFAULT_EXPECTED);
    let slow_ms = settings::millis("slow_ms", DEFAULT_SLOW_MS).map_err(Report::fail)?;
    let timeout_ms = settings::millis("timeout_ms", DEFAULT_TIMEOUT_MS).map_err(Report::fail)?;

    let (result, latency) = get_json(url, timeout_ms, "{{name_snake}}_latency_seconds");
    // No latency sample without an answer: there was nothing to time.
    let response = result.map_err(|error| Report::fail(describe(error)))?;
    let elapsed_ms = latency.value * 1000.0;
    let fail = |message: String| Report::fail(message).with_sample(latency.clone());

    if response.status != 200 {
        return Err(fail(format!("Status {}", response.status)));
    }
    let json: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|_| fail("the answer is not JSON".to_owned()))?;
    let actual = match &json[field.as_str()] {
        serde_json::Value::Null => return Err(fail(format!("the answer has no field '{field}'"))),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if actual != expected {
        return Err(fail(format!("{field} is '{actual}', expected '{expected}'")));
    }
    Ok(if elapsed_ms > f64::from(slow_ms) {
        Report::warn(format!("slow: {elapsed_ms:.0} ms (over {slow_ms} ms)"))
    } else {
        Report::pass().with_message(format!("{field} is '{actual}'"))
    }
    .with_sample(latency))
}

healthhost_plugin::export_check!(Check);
