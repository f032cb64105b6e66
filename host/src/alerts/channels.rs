//! Sending one notice over one channel, in its API's words: Telegram's `sendMessage`,
//! a signed webhook, a Slack incoming webhook, PagerDuty's Events API v2. Each attempt
//! is bounded by the channel's `timeout`; the answer says whether to retry. Every text
//! that leaves here (answers, errors) is scrubbed of the channel's secrets.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::json;
use sha2::Sha256;

use super::burn::BURN_OUTCOME;
use super::episodes::Change;
use super::message::{Markup, Notice, TELEGRAM_TEXT_MAX, episode_key, text, webhook_body};
use crate::config::alerts::{Channel, ChannelKind};
use crate::scrub::Scrubber;

/// The header carrying a webhook body's HMAC-SHA256, as `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-healthhost-signature";
/// The header carrying a webhook's delivery id (also in the body).
pub const DELIVERY_HEADER: &str = "x-healthhost-delivery";
/// What an answer keeps of the channel's reply, in bytes: enough for an error text.
const ANSWER_MAX: usize = 300;

/// How the channel answered one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Taken; the channel's reply.
    Delivered(String),
    /// Not now (unreachable, timed out, 5xx, rate limited): try again, not before the
    /// delay the channel asked for, if it did.
    Retry(String, Option<Duration>),
    /// Refused for good (a 4xx: bad token, unknown chat): retrying cannot help.
    Refused(String),
}

/// The client alerts are sent with: the environment's proxy applies (an operator's
/// way out), redirects do not (a notification goes where it was configured).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("healthhost/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a TLS backend is compiled in")
}

/// Sends `notice` over `channel`.
pub async fn send(client: &reqwest::Client, channel: &Channel, notice: &Notice) -> Answer {
    let scrubber = Scrubber::new(channel.secrets());
    let answer = match &channel.kind {
        ChannelKind::Telegram {
            api_url,
            token,
            chat_ids,
        } => telegram(client, channel, api_url, token, chat_ids, notice).await,
        ChannelKind::Webhook {
            url,
            secret,
            headers,
        } => webhook(client, channel, url, secret.as_deref(), headers, notice).await,
        ChannelKind::Slack { url } => {
            let body = json!({ "text": text(notice, Markup::Slack) });
            post(json(client, url, &body), channel).await
        }
        ChannelKind::PagerDuty { url, routing_key } => {
            pagerduty(client, channel, url, routing_key, notice).await
        }
    };
    let clean = |t: String| scrubber.scrub_cut(&t, ANSWER_MAX).into_owned();
    match answer {
        Answer::Delivered(t) => Answer::Delivered(clean(t)),
        Answer::Retry(t, after) => Answer::Retry(clean(t), after),
        Answer::Refused(t) => Answer::Refused(clean(t)),
    }
}

/// A POST of `body` as JSON.
fn json(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

/// Sends `request` with the channel's timeout and judges the answer by its status.
async fn post(request: reqwest::RequestBuilder, channel: &Channel) -> Answer {
    let response = match request.timeout(channel.timeout).send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            let limit = humantime::format_duration(channel.timeout);
            return Answer::Retry(format!("no answer within {limit}"), None);
        }
        Err(e) => return Answer::Retry(format!("cannot connect: {}", error_chain(&e)), None),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    let reply = format!("HTTP {}: {}", status.as_u16(), body.trim());
    judge(status, reply, retry_after)
}

/// An answer from its status: 2xx taken, 408, 429 and 5xx retried, the rest refused.
fn judge(status: StatusCode, reply: String, retry_after: Option<Duration>) -> Answer {
    if status.is_success() {
        Answer::Delivered(reply)
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Answer::Retry(reply, retry_after)
    } else {
        Answer::Refused(reply)
    }
}

/// An error and its causes, for a log line (reqwest hides the useful part in them).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `sendMessage` to each chat in turn; the first chat that does not take it decides.
async fn telegram(
    client: &reqwest::Client,
    channel: &Channel,
    api_url: &str,
    token: &str,
    chat_ids: &[String],
    notice: &Notice,
) -> Answer {
    let url = format!("{}/bot{token}/sendMessage", api_url.trim_end_matches('/'));
    let mut message = text(notice, Markup::Html);
    if message.chars().count() > TELEGRAM_TEXT_MAX {
        message = text_cut(&message, TELEGRAM_TEXT_MAX);
    }
    let mut replies = Vec::new();
    for chat in chat_ids {
        let body = json!({
            "chat_id": chat,
            "text": message,
            "parse_mode": "HTML",
            "disable_web_page_preview": true,
        });
        match post(json(client, &url, &body), channel).await {
            Answer::Delivered(reply) => replies.push(reply),
            // Telegram says how long to wait in the body, not only in a header.
            Answer::Retry(reply, after) => {
                let asked = telegram_retry_after(&reply).or(after);
                return Answer::Retry(reply, asked);
            }
            refused => return refused,
        }
    }
    Answer::Delivered(replies.join("; "))
}

/// Cuts HTML text to `max` characters without leaving a tag or entity open: the cut
/// falls before the last `<` or `&` that is not closed.
fn text_cut(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    if let Some(open) = cut.rfind(['<', '&'])
        && !cut[open..].contains(['>', ';'])
    {
        cut.truncate(open);
    }
    // Tags this module writes are `<b>…</b>` on one headline: close it if cut inside.
    if cut.matches("<b>").count() > cut.matches("</b>").count() {
        cut.push_str("</b>");
    }
    cut.push('…');
    cut
}

/// `parameters.retry_after` of a Bot API error in `reply` ("HTTP 429: {…}").
fn telegram_retry_after(reply: &str) -> Option<Duration> {
    let body = reply.split_once(": ")?.1;
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["parameters"]["retry_after"]
        .as_u64()
        .map(Duration::from_secs)
}

/// The JSON body, its HMAC-SHA256 under `secret`, the delivery id and the extra
/// headers.
async fn webhook(
    client: &reqwest::Client,
    channel: &Channel,
    url: &str,
    secret: Option<&str>,
    headers: &[(String, String)],
    notice: &Notice,
) -> Answer {
    let body =
        serde_json::to_vec(&webhook_body(notice, SystemTime::now())).expect("the body serializes");
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(DELIVERY_HEADER, &notice.delivery_id);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(secret) = secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, &body));
    }
    post(request.body(body), channel).await
}

/// `sha256=` and the lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", crate::cache::hex(&mac.finalize().into_bytes()))
}

/// One event per change (a reminder is not one: the incident is open already): open
/// triggers, close resolves, both by the episode's `dedup_key`. A test triggers and
/// resolves at once.
async fn pagerduty(
    client: &reqwest::Client,
    channel: &Channel,
    url: &str,
    routing_key: &str,
    notice: &Notice,
) -> Answer {
    let mut events = Vec::new();
    if notice.test {
        let key = format!("healthhost/test/{}", notice.delivery_id);
        let summary = format!("healthhost test message from {}", notice.node);
        events.push(pagerduty_event(
            routing_key,
            "trigger",
            &key,
            &summary,
            notice,
            "info",
        ));
        events.push(pagerduty_event(
            routing_key,
            "resolve",
            &key,
            &summary,
            notice,
            "info",
        ));
    }
    for item in &notice.items {
        let action = match item.change {
            Change::Open => "trigger",
            Change::Close => "resolve",
            Change::Remind => continue,
        };
        let what = item
            .message
            .as_deref()
            .unwrap_or(item.outcome.as_deref().unwrap_or("fail"));
        let summary = if item.outcome.as_deref() == Some(BURN_OUTCOME) {
            format!("{} is {what}", item.check)
        } else {
            format!("{} is down: {what}", item.check)
        };
        let key = episode_key(item);
        events.push(pagerduty_event(
            routing_key,
            action,
            &key,
            &summary,
            notice,
            "critical",
        ));
    }
    let mut replies = Vec::new();
    for event in events {
        match post(json(client, url, &event), channel).await {
            Answer::Delivered(reply) => replies.push(reply),
            other => return other,
        }
    }
    Answer::Delivered(replies.join("; "))
}

/// PagerDuty's summary is at most 1024 characters.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;

fn pagerduty_event(
    routing_key: &str,
    action: &str,
    dedup_key: &str,
    summary: &str,
    notice: &Notice,
    severity: &str,
) -> serde_json::Value {
    let summary: String = crate::escape::escape_controls(summary)
        .chars()
        .take(PAGERDUTY_SUMMARY_MAX)
        .collect();
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": notice.node,
            "severity": severity,
            "component": "healthhost",
            "group": notice.rule,
        },
    });
    if let Some(url) = &notice.public_url {
        event["links"] = json!([{ "href": url, "text": "Status page" }]);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn statuses_decide_retries() {
        let j = |code: u16| judge(StatusCode::from_u16(code).unwrap(), String::new(), None);
        assert!(matches!(j(200), Answer::Delivered(_)));
        assert!(matches!(j(202), Answer::Delivered(_)));
        assert!(matches!(j(429), Answer::Retry(..)));
        assert!(matches!(j(503), Answer::Retry(..)));
        assert!(matches!(j(400), Answer::Refused(_)));
        assert!(matches!(j(401), Answer::Refused(_)));
    }

    #[test]
    fn telegram_cuts_leave_no_tag_or_entity_open() {
        let cut = text_cut("<b>head</b> a &amp; b &lt;c", 22);
        assert_eq!(cut, "<b>head</b> a &amp; b…");
        assert_eq!(text_cut("x &lt;y", 5), "x …");
        let cut = text_cut("<b>a long headline</b>", 8);
        assert_eq!(cut, "<b>a lo</b>…");
    }

    #[test]
    fn telegram_says_how_long_to_wait() {
        let reply = r#"HTTP 429: {"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
        assert_eq!(telegram_retry_after(reply), Some(Duration::from_secs(7)));
    }
}
