//! The `[alerts]` section resolved: the channels a notification can go to (Telegram,
//! a signed webhook, Slack, PagerDuty) with their secrets from the environment, and the
//! rules that say which checks' episodes go to which channels, when.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::maintenance::{Maintenance, resolve_maintenance};
use super::raw::{RawAlerts, RawChannel, RawRule};
use super::resolve::{duration, env_reference, expand};
use crate::problems::Problems;

/// Telegram's Bot API, unless `api_url` names a stand-in or a self-hosted server.
pub const TELEGRAM_API_URL: &str = "https://api.telegram.org";
/// PagerDuty's Events API v2.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// One attempt's time limit: chat and paging APIs answer in well under a second, and
/// a hung one must not hold the channel's queue for long.
pub const DEFAULT_CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a notification is retried before it counts as failed: a day outlives any
/// outage of a chat service worth waiting for, and a day-old page is still news.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Consecutive non-up results that open an episode when a rule says nothing: one
/// failed run is often a flap, three in a row rarely are.
pub const DEFAULT_AFTER: u32 = 3;
/// How long a rule's changes wait to go out as one message.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(10);

/// `[alerts]`, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertsConfig {
    /// The status page's public address, linked from messages.
    pub public_url: Option<String>,
    pub channels: Vec<Channel>,
    pub rules: Vec<Rule>,
    /// The bearer token of `/v1/maintenance`; `None` turns it off.
    pub admin_token: Option<String>,
    /// The windows the config defines.
    pub maintenance: Vec<Maintenance>,
}

impl AlertsConfig {
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// One `[alerts.channels.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub timeout: Duration,
    pub give_up_after: Duration,
}

/// Where a channel sends, and with what credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    /// Bot API `sendMessage` to each chat, in HTML parse mode.
    Telegram {
        api_url: String,
        token: String,
        chat_ids: Vec<String>,
    },
    /// A JSON body, signed with HMAC-SHA256 of `secret` when there is one.
    Webhook {
        url: String,
        secret: Option<String>,
        headers: Vec<(String, String)>,
    },
    /// An incoming webhook (Slack, Mattermost, Rocket.Chat): `{"text": …}`.
    Slack { url: String },
    /// Events API v2: trigger and resolve by a stable `dedup_key`.
    PagerDuty { url: String, routing_key: String },
}

impl Channel {
    /// The type's name, as `type` spells it.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ChannelKind::Telegram { .. } => "telegram",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::PagerDuty { .. } => "pagerduty",
        }
    }

    /// What must never appear in a log line or an error: the credentials, and the
    /// URLs that are credentials themselves (a Slack webhook's path is its key).
    pub fn secrets(&self) -> Vec<&str> {
        match &self.kind {
            ChannelKind::Telegram { token, .. } => vec![token],
            ChannelKind::Webhook {
                secret, headers, ..
            } => secret
                .iter()
                .map(String::as_str)
                .chain(headers.iter().map(|(_, v)| v.as_str()))
                .collect(),
            ChannelKind::Slack { url } => vec![url],
            ChannelKind::PagerDuty { routing_key, .. } => vec![routing_key],
        }
    }
}

/// One `[alerts.rules.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Check names or globs.
    pub checks: Vec<String>,
    /// Whether it covers every critical check.
    pub critical: bool,
    pub channels: Vec<String>,
    /// Consecutive non-up results of one replica that open an episode.
    pub after: u32,
    /// How long the non-up results must span (`for`), besides their count.
    pub hold: Duration,
    /// Consecutive up results that close it.
    pub recover_after: u32,
    pub repeat: Option<Duration>,
    pub group_wait: Duration,
    /// Whether it alerts on the covered checks' SLO error-budget burn (by
    /// [`super::BURN_PAIRS`]) instead of on runs of failures.
    pub slo_burn: bool,
}

impl Rule {
    /// Whether the rule covers check `name`.
    pub fn covers(&self, name: &str, critical: bool) -> bool {
        (self.critical && critical) || self.checks.iter().any(|p| glob(p, name))
    }
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` one.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// `[alerts]`: every channel and rule, each problem located. `history` says whether
/// there is a store for the episodes.
pub(super) fn resolve_alerts(
    raw: Option<Spanned<RawAlerts>>,
    env: &dyn Fn(&str) -> Option<String>,
    history: bool,
    problems: &mut Problems,
) -> AlertsConfig {
    let Some(raw) = raw else {
        return AlertsConfig::default();
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let public_url = raw.public_url.as_ref().and_then(|u| {
        http_url(u, "alerts.public_url", problems).map(|u| u.trim_end_matches('/').to_owned())
    });
    let channels: Vec<Channel> = raw
        .channels
        .iter()
        .filter_map(|(name, c)| resolve_channel(name, c, env, problems))
        .collect();
    let rules = raw
        .rules
        .iter()
        .map(|(name, r)| resolve_rule(name, r, &raw.channels, problems))
        .collect();
    if !history && !raw.rules.is_empty() {
        problems.add(
            span,
            "alerts",
            "alert rules keep their episodes in the history store: define [history] \
             datasource (or a datasource named 'main')",
        );
    }
    let admin_token = raw
        .admin_token
        .as_ref()
        .and_then(|t| expand(t.get_ref(), env).0)
        .filter(|t| !t.is_empty());
    AlertsConfig {
        public_url,
        channels,
        rules,
        admin_token,
        maintenance: resolve_maintenance(&raw.maintenance, problems),
    }
}

/// The keys each channel type takes, besides `type`, `timeout` and `give_up_after`.
const CHANNEL_KEYS: [(&str, &[&str]); 4] = [
    ("telegram", &["api_url", "token", "chat_ids"]),
    ("webhook", &["url", "secret", "headers"]),
    ("slack", &["url"]),
    ("pagerduty", &["url", "routing_key"]),
];

fn resolve_channel(
    name: &str,
    raw: &Spanned<RawChannel>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<Channel> {
    let at = |key: &str| format!("alerts.channels.{name}.{key}");
    let c = raw.get_ref();
    let kind = c.kind.get_ref().as_str();
    let Some((_, allowed)) = CHANNEL_KEYS.iter().find(|(k, _)| *k == kind) else {
        problems.add(
            c.kind.span(),
            at("type"),
            format!("'{kind}' is not a channel type: use telegram, webhook, slack or pagerduty"),
        );
        return None;
    };
    for (key, span) in present_keys(c) {
        if !allowed.contains(&key) {
            problems.add(
                span,
                at(key),
                format!(
                    "a {kind} channel has no '{key}' (it takes {})",
                    allowed.join(", ")
                ),
            );
        }
    }
    let mut secret = |field: &Option<Spanned<String>>, key: &str, required: bool| {
        secret_value(
            field,
            &at(key),
            required.then_some(raw.span()),
            env,
            problems,
        )
    };
    let kind = match kind {
        "telegram" => ChannelKind::Telegram {
            api_url: secret(&c.api_url, "api_url", false)
                .unwrap_or_else(|| TELEGRAM_API_URL.to_owned()),
            token: secret(&c.token, "token", true)?,
            chat_ids: chat_ids(c, &at("chat_ids"), raw.span(), problems)?,
        },
        "webhook" => ChannelKind::Webhook {
            url: secret(&c.url, "url", true)?,
            secret: secret(&c.secret, "secret", false),
            headers: headers(c, &at("headers"), env, problems),
        },
        "slack" => ChannelKind::Slack {
            url: secret(&c.url, "url", true)?,
        },
        _ => ChannelKind::PagerDuty {
            url: secret(&c.url, "url", false).unwrap_or_else(|| PAGERDUTY_EVENTS_URL.to_owned()),
            routing_key: secret(&c.routing_key, "routing_key", true)?,
        },
    };
    let timeout = duration(&c.timeout, at("timeout"), DEFAULT_CHANNEL_TIMEOUT, problems);
    let give_up_after = duration(
        &c.give_up_after,
        at("give_up_after"),
        DEFAULT_GIVE_UP_AFTER,
        problems,
    );
    check_urls(&kind, &c.url, &c.api_url, &at, problems);
    Some(Channel {
        name: name.to_owned(),
        kind,
        timeout,
        give_up_after,
    })
}

/// The type-specific keys written in `c`, with their spans.
fn present_keys(c: &RawChannel) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let strings = [
        ("api_url", &c.api_url),
        ("token", &c.token),
        ("url", &c.url),
        ("secret", &c.secret),
        ("routing_key", &c.routing_key),
    ];
    let mut keys: Vec<_> = strings
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.span())))
        .collect();
    keys.extend(c.chat_ids.as_ref().map(|v| ("chat_ids", v.span())));
    keys.extend(c.headers.as_ref().map(|v| ("headers", v.span())));
    keys
}

/// A value that may be `${VAR}`; an unset variable is a problem (a channel without its
/// credentials cannot send), as is a missing required key.
pub(super) fn secret_value(
    field: &Option<Spanned<String>>,
    key: &str,
    required: Option<std::ops::Range<usize>>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<String> {
    let Some(field) = field else {
        if let Some(span) = required {
            problems.add(span, key, "is required");
        }
        return None;
    };
    match expand(field.get_ref(), env) {
        (Some(value), _) if !value.is_empty() => Some(value),
        _ => {
            let what = match env_reference(field.get_ref()) {
                Some(var) => format!("the variable {var} is unset or empty"),
                None => "must not be empty".to_owned(),
            };
            problems.add(field.span(), key, what);
            None
        }
    }
}

/// Telegram chat ids: at least one, each an integer or a `@channelusername`.
fn chat_ids(
    c: &RawChannel,
    key: &str,
    table: std::ops::Range<usize>,
    problems: &mut Problems,
) -> Option<Vec<String>> {
    let Some(ids) = &c.chat_ids else {
        problems.add(table, key, "is required: the chats to send to");
        return None;
    };
    let resolved: Vec<String> = ids
        .get_ref()
        .iter()
        .filter_map(|v| match v {
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::String(s) if s.parse::<i64>().is_ok() || s.starts_with('@') => {
                Some(s.clone())
            }
            other => {
                problems.add(
                    ids.span(),
                    key,
                    format!("{other} is not a chat id (an integer, or \"@channelname\")"),
                );
                None
            }
        })
        .collect();
    if resolved.is_empty() {
        problems.add(ids.span(), key, "needs at least one chat id");
        return None;
    }
    Some(resolved)
}

/// A webhook's extra headers, each value possibly `${VAR}`.
fn headers(
    c: &RawChannel,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Vec<(String, String)> {
    let Some(headers) = &c.headers else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in headers.get_ref() {
        let valid_name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok();
        match expand(value, env) {
            (Some(v), _) if valid_name && reqwest::header::HeaderValue::from_str(&v).is_ok() => {
                out.push((name.clone(), v));
            }
            _ => problems.add(
                headers.span(),
                format!("{key}.{name}"),
                "is not a valid header name and value (or its variable is unset)",
            ),
        }
    }
    out
}

/// The channel's URLs must be http or https.
fn check_urls(
    kind: &ChannelKind,
    url: &Option<Spanned<String>>,
    api_url: &Option<Spanned<String>>,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    let (value, field, key) = match kind {
        ChannelKind::Telegram { api_url: v, .. } => (v, api_url, "api_url"),
        ChannelKind::Webhook { url: v, .. }
        | ChannelKind::Slack { url: v }
        | ChannelKind::PagerDuty { url: v, .. } => (v, url, "url"),
    };
    let ok = url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !ok && let Some(field) = field {
        // The value may be a secret: the message names the key, not the value.
        problems.add(field.span(), at(key), "is not an http:// or https:// URL");
    }
}

/// `public_url`: an http(s) URL.
fn http_url<'a>(url: &'a Spanned<String>, key: &str, problems: &mut Problems) -> Option<&'a str> {
    let text = url.get_ref().as_str();
    if url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        Some(text)
    } else {
        problems.add(
            url.span(),
            key,
            format!("'{text}' is not an http:// or https:// URL"),
        );
        None
    }
}

fn resolve_rule(
    name: &str,
    raw: &Spanned<RawRule>,
    channels: &BTreeMap<String, Spanned<RawChannel>>,
    problems: &mut Problems,
) -> Rule {
    let at = |key: &str| format!("alerts.rules.{name}.{key}");
    let r = raw.get_ref();
    if r.checks.is_empty() && !r.critical {
        problems.add(
            raw.span(),
            at("checks"),
            "a rule needs checks (names or globs like \"db-*\") or critical = true",
        );
    }
    if r.channels.get_ref().is_empty() {
        problems.add(r.channels.span(), at("channels"), "names no channel");
    }
    for channel in r.channels.get_ref() {
        if !channels.contains_key(channel.get_ref()) {
            problems.add(
                channel.span(),
                at("channels"),
                format!(
                    "no channel named '{}' under [alerts.channels]",
                    channel.get_ref()
                ),
            );
        }
    }
    refuse_counting(r, &at, problems);
    let hold = duration(&r.hold, at("for"), Duration::ZERO, problems);
    let default_after = if r.hold.is_some() { 1 } else { DEFAULT_AFTER };
    let after = at_least_one(&r.after, &at("after"), default_after, problems);
    let recover_after = at_least_one(&r.recover_after, &at("recover_after"), 1, problems);
    let repeat = r.repeat.as_ref().map(|text| {
        let repeat = duration(&Some(text.clone()), at("repeat"), Duration::ZERO, problems);
        if repeat.is_zero() {
            problems.add(
                text.span(),
                at("repeat"),
                "must be more than 0s (or left out)",
            );
        }
        repeat
    });
    Rule {
        name: name.to_owned(),
        checks: r.checks.iter().map(|c| c.get_ref().clone()).collect(),
        critical: r.critical,
        channels: r
            .channels
            .get_ref()
            .iter()
            .map(|c| c.get_ref().clone())
            .collect(),
        after,
        hold,
        recover_after,
        repeat: repeat.filter(|r| !r.is_zero()),
        group_wait: duration(
            &r.group_wait,
            at("group_wait"),
            DEFAULT_GROUP_WAIT,
            problems,
        ),
        slo_burn: r.slo_burn,
    }
}

/// An `slo_burn` rule takes none of the keys that count runs.
fn refuse_counting(r: &RawRule, at: &dyn Fn(&str) -> String, problems: &mut Problems) {
    if !r.slo_burn {
        return;
    }
    let counting = [
        ("after", r.after.as_ref().map(Spanned::span)),
        ("for", r.hold.as_ref().map(Spanned::span)),
        ("recover_after", r.recover_after.as_ref().map(Spanned::span)),
    ];
    for (key, span) in counting {
        if let Some(span) = span {
            problems.add(
                span,
                at(key),
                "an slo_burn rule alerts on the burn rate, not on runs",
            );
        }
    }
}

fn at_least_one(
    field: &Option<Spanned<u32>>,
    key: &str,
    default: u32,
    problems: &mut Problems,
) -> u32 {
    match field {
        Some(n) if *n.get_ref() == 0 => {
            problems.add(n.span(), key, "must be at least 1");
            default
        }
        Some(n) => *n.get_ref(),
        None => default,
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_runs_and_single_characters() {
        for (pattern, name, expected) in [
            ("*", "db", true),
            ("db", "db", true),
            ("db", "db2", false),
            ("db-*", "db-main", true),
            ("db-*", "api", false),
            ("*-main", "db-main", true),
            ("d?", "db", true),
            ("d?", "dbb", false),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("", "", true),
        ] {
            assert_eq!(glob(pattern, name), expected, "{pattern} ~ {name}");
        }
    }
}
