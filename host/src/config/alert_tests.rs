//! Tests of `[alerts]`: channels with their secrets, rules, maintenance windows and
//! `slo_burn` rules resolve, and every problem names its key.

use std::path::Path;

use super::{Config, Problem, alerts};

fn parse(source: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(source, Path::new("/etc/hh"), |var| match var {
        "TOKEN" => Some("s3cret".to_owned()),
        _ => None,
    })
}

const ALERTS: &str = r#"
[datasources.main]
url = "sqlite:data/app.db"
[alerts]
public_url = "https://status.example.com/"
[alerts.channels.ops]
type = "telegram"
token = "${TOKEN}"
chat_ids = [-1001234567890, "@ops"]
[alerts.channels.hook]
type = "webhook"
url = "https://example.com/hook"
secret = "${TOKEN}"
[alerts.rules.all]
checks = ["db-*"]
channels = ["ops", "hook"]
"#;

#[test]
fn alerts_resolve_with_their_secrets_and_defaults() {
    let alerts = parse(ALERTS).unwrap().alerts;
    assert_eq!(
        alerts.public_url.as_deref(),
        Some("https://status.example.com")
    );
    let ops = alerts.channel("ops").unwrap();
    assert_eq!(
        ops.kind,
        alerts::ChannelKind::Telegram {
            api_url: alerts::TELEGRAM_API_URL.to_owned(),
            token: "s3cret".to_owned(),
            chat_ids: vec!["-1001234567890".to_owned(), "@ops".to_owned()],
        }
    );
    assert_eq!(ops.secrets(), ["s3cret"]);
    assert_eq!(ops.timeout, alerts::DEFAULT_CHANNEL_TIMEOUT);
    let rule = &alerts.rules[0];
    assert_eq!((rule.after, rule.recover_after), (alerts::DEFAULT_AFTER, 1));
    assert_eq!(rule.group_wait, alerts::DEFAULT_GROUP_WAIT);
    assert!(rule.covers("db-main", false) && !rule.covers("api", true));
}

#[test]
fn alert_problems_name_the_key_and_never_the_secret() {
    let source = ALERTS.replace("${TOKEN}\"\nchat_ids", "${NOPE}\"\nchat_ids")
        + "[alerts.channels.slack]\ntype = \"slack\"\nurl = \"https://hooks.example\"\nsecret = \"x\"\n\
           [alerts.channels.sms]\ntype = \"sms\"\n\
           [alerts.rules.bad]\nchannels = [\"pager\"]\nafter = 0\n";
    let problems = parse(&source).unwrap_err();
    let keys: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    let expected = [
        (
            "alerts.channels.ops.token",
            "the variable NOPE is unset or empty",
        ),
        (
            "alerts.channels.slack.secret",
            "a slack channel has no 'secret' (it takes url)",
        ),
        (
            "alerts.channels.sms.type",
            "'sms' is not a channel type: use telegram, webhook, slack or pagerduty",
        ),
        (
            "alerts.rules.bad.checks",
            "a rule needs checks (names or globs like \"db-*\") or critical = true",
        ),
        (
            "alerts.rules.bad.channels",
            "no channel named 'pager' under [alerts.channels]",
        ),
        ("alerts.rules.bad.after", "must be at least 1"),
    ];
    for e in expected {
        assert!(keys.contains(&e), "{e:?} not in {keys:?}");
    }
    assert_eq!(keys.len(), expected.len(), "{keys:?}");
}

#[test]
fn alert_rules_need_the_history_store() {
    let source = ALERTS.replace("[datasources.main]\nurl = \"sqlite:data/app.db\"\n", "");
    let problems = parse(&source).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "alerts");
    assert!(
        problems[0].message.contains("history store"),
        "{problems:?}"
    );
}

#[test]
fn maintenance_windows_resolve_and_their_problems_are_located() {
    let windows = "[[alerts.maintenance]]\nchecks = [\"db-*\"]\nstart = \"2026-12-10T02:00:00Z\"\n\
                   end = \"2026-12-10T04:00:00Z\"\nreason = \"upgrade\"\n\
                   [[alerts.maintenance]]\nweekly = \"Sun 02:00-04:00\"\ntime_zone = \"Europe/Moscow\"\n";
    let config = parse(&format!("{ALERTS}{windows}")).unwrap();
    let m = &config.alerts.maintenance;
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].checks, ["*"], "every check when left out");
    assert!(m[0].covers("db-main") && !m[0].covers("api"));
    let bad = "[[alerts.maintenance]]\nstart = \"2026-12-10T02:00:00Z\"\nend = \"2026-12-10T01:00:00Z\"\n\
               [[alerts.maintenance]]\nweekly = \"Sun 2-4\"\n\
               [[alerts.maintenance]]\nweekly = \"Sun 02:00-04:00\"\ntime_zone = \"Mars/Olympus\"\n\
               [[alerts.maintenance]]\nstart = \"2026-12-10T02:00:00Z\"\n";
    let problems = parse(&format!("{ALERTS}{bad}")).unwrap_err();
    let found: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("alerts.maintenance[0].end", "must be after start"),
            (
                "alerts.maintenance[1].weekly",
                "'Sun 2-4' is not a weekly window like \"Sun 02:00-04:00\""
            ),
            (
                "alerts.maintenance[2].time_zone",
                "'Mars/Olympus' is not a time zone like \"Europe/Moscow\""
            ),
            (
                "alerts.maintenance[3].weekly",
                "a window has start and end, or weekly (with an optional time_zone)"
            ),
        ]
    );
}

#[test]
fn an_slo_burn_rule_counts_no_runs() {
    let source = format!(
        "{ALERTS}[alerts.rules.budget]\ncritical = true\nslo_burn = true\nchannels = [\"ops\"]\nafter = 2\n"
    );
    let problems = parse(&source).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "alerts.rules.budget.after");
    assert_eq!(
        problems[0].message,
        "an slo_burn rule alerts on the burn rate, not on runs"
    );
    let ok = parse(&source.replace("after = 2\n", "")).unwrap();
    assert!(
        ok.alerts
            .rules
            .iter()
            .any(|r| r.name == "budget" && r.slo_burn)
    );
}
