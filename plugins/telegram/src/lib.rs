//! Built-in check `telegram`: asks the Telegram Bot API who the bot is
//! (`GET {base_url}/bot{token}/getMe`) and passes with "@username" when the
//! token is accepted.
//!
//! Without a token it passes with "Token not configured (dev mode)" and sends
//! nothing. On a non-200 status it fails with Telegram's `description`
//! ("Unauthorized") or "Status N"; on a 200 it cannot read, with "invalid
//! response from Telegram"; with no response, as the `openrouter` check does.
//!
//! Settings: `token` (secret), `base_url` (default `https://api.telegram.org`),
//! `timeout_ms` (default 10000). Sample: `telegram_latency_seconds` whenever the
//! API answered. The token never goes into a message or log line.

use healthhost_plugin::{Guest, Report, Status, describe, get_json, settings};

/// The API's origin when the `base_url` setting is absent.
const DEFAULT_BASE_URL: &str = "https://api.telegram.org";
/// How long the request may take when `timeout_ms` is absent; the host may cut
/// it shorter to fit the run's own timeout.
const DEFAULT_TIMEOUT_MS: u32 = 10_000;

struct Telegram;

impl Guest for Telegram {
    fn check() -> Report {
        match run() {
            Ok(report) | Err(report) => report,
        }
    }
}

/// The check; `Err` carries an early failure report.
fn run() -> Result<Report, Report> {
    let token = settings::get("token").unwrap_or_default();
    if token.is_empty() {
        return Ok(Report::pass().with_message("Token not configured (dev mode)"));
    }
    let base_url = settings::url("base_url", DEFAULT_BASE_URL).map_err(Report::fail)?;
    let timeout_ms = settings::millis("timeout_ms", DEFAULT_TIMEOUT_MS).map_err(Report::fail)?;
    let (result, latency) = get_json(
        format!("{base_url}/bot{token}/getMe"),
        timeout_ms,
        "telegram_latency_seconds",
    );
    let response = result.map_err(|error| Report::fail(redact(describe(error), &token)))?;
    let (status, message) = verdict(response.status, &response.body);
    Ok(Report {
        status,
        message: Some(redact(message, &token)),
        samples: vec![latency],
    })
}

/// The verdict on an answer from the Bot API.
fn verdict(status: u16, body: &[u8]) -> (Status, String) {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    // Telegram explains a refusal as {"ok": false, "description": "..."}.
    let description = json
        .as_ref()
        .filter(|json| json["ok"] == false)
        .and_then(|json| json["description"].as_str());
    if status == 200 {
        let username = json
            .as_ref()
            .filter(|json| json["ok"] == true)
            .and_then(|json| json["result"]["username"].as_str());
        match (username, description) {
            (Some(username), _) => (Status::Pass, format!("@{username}")),
            (None, Some(description)) => (Status::Fail, description.to_owned()),
            (None, None) => (Status::Fail, "invalid response from Telegram".into()),
        }
    } else {
        let message = description.map_or_else(|| format!("Status {status}"), str::to_owned);
        (Status::Fail, message)
    }
}

/// `message` with the token masked, in case the host or the API echoed the URL.
/// The host scrubs secrets too; this keeps the plugin from relying on it.
fn redact(message: String, token: &str) -> String {
    if message.contains(token) {
        message.replace(token, "***")
    } else {
        message
    }
}

healthhost_plugin::export_check!(Telegram);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_on_answers() {
        let cases: &[(u16, &str, Status, &str)] = &[
            (
                200,
                r#"{"ok":true,"result":{"id":1,"is_bot":true,"username":"x_bot"}}"#,
                Status::Pass,
                "@x_bot",
            ),
            (
                200,
                r#"{"ok":false,"result":{"username":"x_bot"}}"#,
                Status::Fail,
                "invalid response from Telegram",
            ),
            (
                200,
                r#"{"ok":false,"description":"Bad Request: bot was blocked"}"#,
                Status::Fail,
                "Bad Request: bot was blocked",
            ),
            (
                200,
                r#"{"ok":true,"result":{}}"#,
                Status::Fail,
                "invalid response from Telegram",
            ),
            (
                200,
                "<html>",
                Status::Fail,
                "invalid response from Telegram",
            ),
            (
                401,
                r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
                Status::Fail,
                "Unauthorized",
            ),
            (502, "Bad Gateway", Status::Fail, "Status 502"),
            (404, r#"{"ok":false}"#, Status::Fail, "Status 404"),
        ];
        for (status, body, want_status, want_message) in cases {
            let (got_status, got_message) = verdict(*status, body.as_bytes());
            assert_eq!(
                (got_status, got_message.as_str()),
                (*want_status, *want_message),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn redact_masks_the_token() {
        assert_eq!(
            redact("GET /bot123:abc/getMe failed".into(), "123:abc"),
            "GET /bot***/getMe failed"
        );
        assert_eq!(
            redact("connection refused".into(), "123:abc"),
            "connection refused"
        );
    }
}
