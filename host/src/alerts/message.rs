//! What a notification says: one batch of a rule's changes (episodes opened, reminded
//! of, closed) as text for people (plain, Telegram's HTML, Slack's mrkdwn) and as the
//! webhook's JSON body. Plugin text is escaped for each: control characters always,
//! and `&`, `<`, `>` where the channel reads markup.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::burn::BURN_OUTCOME;
use super::episodes::Change;
use super::store::Pending;
use crate::escape::escape_controls;
use crate::journal::from_unix_ms;

/// Telegram's cap on one message's text, in characters.
pub const TELEGRAM_TEXT_MAX: usize = 4096;
/// Changes listed in one message's text; the rest are counted. The webhook's JSON
/// carries every one.
const LISTED_MAX: usize = 20;
/// A plugin message quoted in a notification, at most (characters).
const QUOTED_MAX: usize = 300;

/// One delivery: a batch of changes of one rule, or a test message.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Stable across retries of the same batch.
    pub delivery_id: String,
    pub rule: String,
    /// The replica sending it.
    pub node: String,
    pub public_url: Option<String>,
    pub items: Vec<Pending>,
    /// A `healthhost alert test` message.
    pub test: bool,
}

/// Which markup the text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    Plain,
    /// Telegram's HTML parse mode.
    Html,
    /// Slack's mrkdwn (also Mattermost's and Rocket.Chat's).
    Slack,
}

/// A change's episode key: stable for every delivery about the episode (PagerDuty's
/// `dedup_key`).
pub fn episode_key(item: &Pending) -> String {
    format!("healthhost/{}/{}/{}", item.rule, item.check, item.seq)
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(from_unix_ms(ms)).to_string()
}

/// For machines: to the millisecond.
fn time_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_unix_ms(ms)).to_string()
}

/// `to - from` in whole seconds, as "2m 10s".
fn span(from_ms: i64, to_ms: i64) -> String {
    let seconds = ((to_ms - from_ms).max(0) / 1000) as u64;
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

fn escape(text: &str, markup: Markup) -> String {
    let text = escape_controls(text);
    match markup {
        Markup::Plain => text.into_owned(),
        Markup::Html | Markup::Slack => text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
    }
}

fn bold(text: &str, markup: Markup) -> String {
    match markup {
        Markup::Plain => text.to_owned(),
        Markup::Html => format!("<b>{text}</b>"),
        Markup::Slack => format!("*{text}*"),
    }
}

/// The first line: what changed, counted.
fn headline(notice: &Notice) -> String {
    if notice.test {
        return format!("healthhost test message from {}", notice.node);
    }
    let count = |c: Change| notice.items.iter().filter(|i| i.change == c).count();
    let parts: Vec<String> = [
        (Change::Open, "down"),
        (Change::Remind, "still down"),
        (Change::Close, "recovered"),
    ]
    .into_iter()
    .filter(|(c, _)| count(*c) > 0)
    .map(|(c, word)| format!("{} {word}", count(c)))
    .collect();
    format!("healthhost [{}]: {}", notice.rule, parts.join(", "))
}

/// One change, as a paragraph.
fn item_text(item: &Pending, markup: Markup) -> String {
    let check = bold(&escape(&item.check, markup), markup);
    if item.outcome.as_deref() == Some(BURN_OUTCOME) {
        return burn_text(item, &check, markup);
    }
    let mut text = match item.change {
        Change::Open => format!("🔴 {check} is down since {}", time(item.since_ms)),
        Change::Remind => format!(
            "🔁 {check} is still down, for {} (since {})",
            span(item.since_ms, item.at_ms),
            time(item.since_ms)
        ),
        Change::Close => format!("✅ {check} recovered at {}", time(item.at_ms)),
    };
    if item.change != Change::Close {
        let outcome = item.outcome.as_deref().unwrap_or("fail");
        text.push_str(&format!("\n{outcome}"));
        if let Some(message) = item.message.as_deref().filter(|m| !m.is_empty()) {
            let quoted: String = message.chars().take(QUOTED_MAX).collect();
            text.push_str(&format!(": {}", escape(&quoted, markup)));
        }
    } else {
        text.push_str(&format!(" after {}", span(item.since_ms, item.at_ms)));
    }
    text.push_str(&format!("\nseen by {}", escape(&item.node, markup)));
    text
}

/// A burn episode's change: what it burns, or how long it burned.
fn burn_text(item: &Pending, check: &str, markup: Markup) -> String {
    let text = match item.change {
        Change::Close => format!(
            "✅ {check} is back within its error budget, after {}",
            span(item.since_ms, item.at_ms)
        ),
        _ => format!(
            "🔥 {check} is {}",
            escape(
                item.message
                    .as_deref()
                    .unwrap_or("burning its error budget"),
                markup
            )
        ),
    };
    format!("{text}\nseen by {}", escape(&item.node, markup))
}

/// The whole text in `markup`: headline, each change (at most [`LISTED_MAX`]), the
/// status page's link.
pub fn text(notice: &Notice, markup: Markup) -> String {
    let mut parts = vec![bold(&escape(&headline(notice), markup), markup)];
    parts.extend(
        notice
            .items
            .iter()
            .take(LISTED_MAX)
            .map(|i| item_text(i, markup)),
    );
    if notice.items.len() > LISTED_MAX {
        parts.push(format!("and {} more", notice.items.len() - LISTED_MAX));
    }
    if let Some(url) = &notice.public_url {
        parts.push(escape(url, markup));
    }
    parts.join("\n\n")
}

/// The webhook's body (documented in docs/alerting.md).
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub delivery_id: &'a str,
    pub test: bool,
    pub rule: &'a str,
    pub node: &'a str,
    pub sent_at: String,
    pub public_url: Option<&'a str>,
    /// The plain-text message, as a chat channel would show it.
    pub text: String,
    pub events: Vec<WebhookEvent<'a>>,
}

/// One change in a webhook body.
#[derive(Debug, Serialize)]
pub struct WebhookEvent<'a> {
    /// open, reminder or close.
    pub event: &'static str,
    pub check: &'a str,
    /// Stable for every event of one episode.
    pub episode: String,
    /// The episode's first failure (open, reminder), RFC 3339 with milliseconds.
    pub since: String,
    /// When the result that decided the change ended.
    pub at: String,
    pub outcome: Option<&'a str>,
    pub message: Option<&'a str>,
    /// The replica whose result decided it.
    pub node: &'a str,
    /// How long the episode lasted (close), or has lasted (reminder), in seconds.
    pub duration_seconds: Option<f64>,
}

pub fn webhook_body(notice: &Notice, now: SystemTime) -> WebhookBody<'_> {
    WebhookBody {
        delivery_id: &notice.delivery_id,
        test: notice.test,
        rule: &notice.rule,
        node: &notice.node,
        sent_at: humantime::format_rfc3339_millis(now).to_string(),
        public_url: notice.public_url.as_deref(),
        text: text(notice, Markup::Plain),
        events: notice
            .items
            .iter()
            .map(|i| WebhookEvent {
                event: i.change.as_str(),
                check: &i.check,
                episode: episode_key(i),
                since: time_ms(i.since_ms),
                at: time_ms(i.at_ms),
                outcome: i.outcome.as_deref(),
                message: i.message.as_deref(),
                node: &i.node,
                duration_seconds: (i.change != Change::Open)
                    .then(|| (i.at_ms - i.since_ms).max(0) as f64 / 1000.0),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn item(change: Change, message: &str) -> Pending {
        Pending {
            id: 1,
            rule: "all".into(),
            check: "db".into(),
            seq: 3,
            change,
            since_ms: 1_000,
            at_ms: 131_000,
            due_ms: 131_000,
            outcome: Some("fail".into()),
            message: Some(message.into()),
            node: "a:8080".into(),
            batch: None,
            attempts: 0,
            next_ms: 0,
        }
    }

    fn notice(items: Vec<Pending>) -> Notice {
        Notice {
            delivery_id: "1".into(),
            rule: "all".into(),
            node: "a:8080".into(),
            public_url: Some("https://status.example.com".into()),
            items,
            test: false,
        }
    }

    #[test]
    fn plugin_text_cannot_inject_markup_or_lines() {
        let n = notice(vec![item(Change::Open, "<a href=x>&</a>\nforged")]);
        let html = text(&n, Markup::Html);
        assert!(
            html.contains("&lt;a href=x&gt;&amp;&lt;/a&gt;\\nforged"),
            "{html}"
        );
        assert!(!html.contains("<a"), "{html}");
    }

    #[test]
    fn a_recovery_says_how_long_the_episode_lasted() {
        let plain = text(&notice(vec![item(Change::Close, "")]), Markup::Plain);
        assert!(plain.contains("db recovered at"), "{plain}");
        assert!(plain.contains("after 2m 10s"), "{plain}");
        assert!(plain.contains("https://status.example.com"), "{plain}");
    }

    #[test]
    fn a_batch_lists_each_change_under_one_headline() {
        let n = notice(vec![item(Change::Open, "refused"), item(Change::Close, "")]);
        let plain = text(&n, Markup::Plain);
        assert!(
            plain.starts_with("healthhost [all]: 1 down, 1 recovered"),
            "{plain}"
        );
        assert!(plain.contains("fail: refused"), "{plain}");
        let body = webhook_body(&n, UNIX_EPOCH);
        assert_eq!(body.events.len(), 2);
        assert_eq!(body.events[0].episode, "healthhost/all/db/3");
        assert_eq!(body.events[1].duration_seconds, Some(130.0));
    }
}
