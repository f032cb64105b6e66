//! Alerting, for real: `serve` processes whose check fails and recovers against a
//! target the test controls, and stand-in receivers speaking each channel's API
//! (Telegram's Bot API, a webhook whose HMAC signature the receiver verifies, a Slack
//! incoming webhook, PagerDuty's Events API v2). Counted at the receiver: one message
//! per channel per episode and one per recovery, none for a flap, one per episode with
//! two replicas on one PostgreSQL, an episode on MariaDB, delivery after a receiver
//! outage and after a SIGKILL between the episode's record and its delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::*;
use crate::journal::terminate;

/// The webhook's shared secret, given to the host through the environment.
const SECRET: &str = "s3cret-for-hmac";
/// The Telegram bot token the stand-in expects.
const TOKEN: &str = "123456:ABC-test-token";

/// What the stand-ins received and how they answer.
#[derive(Default)]
struct Receiver {
    /// Bodies each channel took, in order, by channel ("telegram", "hook", "slack",
    /// "pagerduty").
    taken: Mutex<HashMap<&'static str, Vec<Value>>>,
    /// Webhook requests whose signature did not verify.
    bad_signatures: AtomicUsize,
    /// Requests answered 503 while `down`.
    turned_away: AtomicUsize,
    down: AtomicBool,
    /// What `GET /target` answers; `flap`: fail, fail, pass, repeated, by request.
    target: AtomicU16,
    flap: AtomicBool,
    target_requests: AtomicUsize,
}

impl Receiver {
    fn taken(&self, channel: &str) -> Vec<Value> {
        self.taken
            .lock()
            .unwrap()
            .get(channel)
            .cloned()
            .unwrap_or_default()
    }

    fn take(&self, channel: &'static str, body: Value) -> StatusCode {
        if self.down.load(Ordering::SeqCst) {
            self.turned_away.fetch_add(1, Ordering::SeqCst);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        self.taken
            .lock()
            .unwrap()
            .entry(channel)
            .or_default()
            .push(body);
        StatusCode::OK
    }

    /// Waits until `channel` took `n` bodies (a minute at most).
    async fn wait_for(&self, channel: &str, n: usize) -> Vec<Value> {
        for _ in 0..1200 {
            let taken = self.taken(channel);
            if taken.len() >= n {
                return taken;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{channel} took {:?}, not {n}", self.taken(channel));
    }
}

async fn telegram(
    State(r): State<Arc<Receiver>>,
    Path(token): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    if token != format!("bot{TOKEN}") {
        let refused = json!({"ok": false, "error_code": 401, "description": "Unauthorized"});
        return (StatusCode::UNAUTHORIZED, refused.to_string());
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    let status = r.take("telegram", body.clone());
    let answer = json!({"ok": true, "result": {"message_id": 1, "chat": {"id": body["chat_id"]}, "text": body["text"]}});
    (status, answer.to_string())
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let signed = headers
        .get("x-healthhost-signature")
        .and_then(|v| v.to_str().ok());
    if signed != Some(&format!("sha256={expected}")) {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        headers
            .get("x-healthhost-delivery")
            .unwrap()
            .to_str()
            .unwrap(),
        body["delivery_id"]
    );
    assert_eq!(
        headers.get("x-team").unwrap(),
        "ops",
        "the configured header"
    );
    r.take("hook", body)
}

async fn slack(State(r): State<Arc<Receiver>>, body: Bytes) -> (StatusCode, &'static str) {
    (
        r.take("slack", serde_json::from_slice(&body).unwrap()),
        "ok",
    )
}

async fn pagerduty(State(r): State<Arc<Receiver>>, body: Bytes) -> (StatusCode, String) {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let key = body["dedup_key"].clone();
    match r.take("pagerduty", body) {
        StatusCode::OK => {
            let answer =
                json!({"status": "success", "message": "Event processed", "dedup_key": key});
            (StatusCode::ACCEPTED, answer.to_string())
        }
        other => (other, String::new()),
    }
}

async fn target(State(r): State<Arc<Receiver>>) -> StatusCode {
    let n = r.target_requests.fetch_add(1, Ordering::SeqCst);
    if r.flap.load(Ordering::SeqCst) {
        return if n % 3 == 2 {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
    }
    StatusCode::from_u16(r.target.load(Ordering::SeqCst)).unwrap()
}

/// The stand-ins on 127.0.0.1 (an ephemeral port), and their origin.
async fn receivers() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    receiver.target.store(200, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/{token}/sendMessage", post(telegram))
        .route("/hook", post(hook))
        .route("/slack", post(slack))
        .route("/v2/enqueue", post(pagerduty))
        .route("/target", get(target))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, origin)
}

/// A host config: history in `database` (a URL, or the folder's SQLite), check `svc`
/// probing the target every second, the channels in `channels`, and rule `all`.
fn config(
    origin: &str,
    database: Option<&str>,
    node: &str,
    channels: &[&str],
    rule: &str,
) -> String {
    let database = database.map_or("sqlite://history.db?mode=rwc".to_owned(), str::to_owned);
    let mut text = format!(
        "shutdown_delay = \"0s\"\n\
         [datasources.main]\nurl = {database:?}\n\
         [history]\nnode = \"{node}\"\n\
         [checks.svc]\nplugin = {:?}\ninterval = \"1s\"\ngrants.http = [\"{origin}\"]\n\
         settings = {{ mode = \"http\", url = \"{origin}/target\", expect_status = \"200\" }}\n\
         [alerts]\npublic_url = \"https://status.example.com\"\n",
        test_artifacts::MISBEHAVE
    );
    for channel in channels {
        text.push_str(&match *channel {
            "telegram" => format!(
                "[alerts.channels.telegram]\ntype = \"telegram\"\napi_url = \"{origin}\"\n\
                 token = \"${{TG_TOKEN}}\"\nchat_ids = [-1001234567890, \"@ops\"]\n"
            ),
            "hook" => format!(
                "[alerts.channels.hook]\ntype = \"webhook\"\nurl = \"{origin}/hook\"\n\
                 secret = \"${{HOOK_SECRET}}\"\nheaders = {{ X-Team = \"ops\" }}\n"
            ),
            "slack" => {
                format!("[alerts.channels.slack]\ntype = \"slack\"\nurl = \"{origin}/slack\"\n")
            }
            _ => format!(
                "[alerts.channels.pagerduty]\ntype = \"pagerduty\"\nurl = \"{origin}/v2/enqueue\"\n\
                 routing_key = \"R0UT1NGKEY\"\n"
            ),
        });
    }
    let names: Vec<String> = channels.iter().map(|c| format!("{c:?}")).collect();
    text.push_str(&format!(
        "[alerts.rules.all]\nchecks = [\"svc\"]\nchannels = [{}]\n{rule}\n",
        names.join(", ")
    ));
    text
}

const ENV: [(&str, &str); 2] = [("TG_TOKEN", TOKEN), ("HOOK_SECRET", SECRET)];

/// The `event` of each change in the webhook bodies taken, in order.
fn hook_events(taken: &[Value]) -> Vec<(String, String)> {
    taken
        .iter()
        .flat_map(|b| b["events"].as_array().unwrap().clone())
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["episode"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn three_failures_alert_every_channel_once_and_the_recovery_once_more() {
    let (receiver, origin) = receivers().await;
    let channels = ["telegram", "hook", "slack", "pagerduty"];
    let rule = "after = 3\nrecover_after = 1\ngroup_wait = \"0s\"";
    let host = Host::start_with_env(&config(&origin, None, "solo", &channels, rule), &ENV).await;
    // Up first: nothing to say.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.taken("hook").len(), 0);

    receiver.target.store(500, Ordering::SeqCst);
    // Two chats: each message twice at Telegram.
    let opened = receiver.wait_for("telegram", 2).await;
    // Still failing for a while: no second message anywhere.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.taken("telegram").len(), 2);
    assert_eq!(opened[0]["chat_id"], "-1001234567890");
    assert_eq!(opened[1]["chat_id"], "@ops");
    assert_eq!(opened[0]["parse_mode"], "HTML");
    let text = opened[0]["text"].as_str().unwrap();
    assert!(text.contains("<b>svc</b> is down since"), "{text}");
    assert!(text.contains("fail: status:500"), "{text}");
    assert!(text.contains("seen by solo"), "{text}");
    assert!(text.contains("https://status.example.com"), "{text}");
    let hooks = receiver.wait_for("hook", 1).await;
    assert_eq!(
        hook_events(&hooks),
        [("open".into(), "healthhost/all/svc/1".into())]
    );
    assert_eq!(hooks[0]["events"][0]["outcome"], "fail");
    assert_eq!(receiver.wait_for("slack", 1).await.len(), 1);
    let paged = receiver.wait_for("pagerduty", 1).await;
    assert_eq!(paged[0]["event_action"], "trigger");
    assert_eq!(paged[0]["dedup_key"], "healthhost/all/svc/1");
    assert_eq!(paged[0]["routing_key"], "R0UT1NGKEY");

    // The status page lists the open episode and each channel's last delivery (once
    // the host has recorded the answers the receivers gave).
    let sent = |page: &str| {
        channels.iter().all(|c| {
            page.contains(&format!(
                r#"data-channel="{c}"><th scope="row">{c}</th><td>0</td><td>sent "#
            ))
        })
    };
    let mut page = String::new();
    for _ in 0..100 {
        page = host.get("/").await.2;
        if sent(&page) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent(&page), "{page}");
    let row = r#"<tr class="episode" data-check="svc"><th scope="row">svc</th><td>all</td>"#;
    assert!(
        page.contains(row) && page.contains("<td>solo</td>"),
        "{page}"
    );

    receiver.target.store(200, Ordering::SeqCst);
    let recovered = receiver.wait_for("telegram", 4).await;
    let text = recovered[2]["text"].as_str().unwrap();
    assert!(
        text.contains("<b>svc</b> recovered at") && text.contains(" after "),
        "{text}"
    );
    let hooks = receiver.wait_for("hook", 2).await;
    assert_eq!(
        hook_events(&hooks)[1],
        ("close".into(), "healthhost/all/svc/1".into())
    );
    assert!(hooks[1]["events"][0]["duration_seconds"].as_f64().unwrap() >= 2.0);
    assert_ne!(hooks[0]["delivery_id"], hooks[1]["delivery_id"]);
    assert_eq!(receiver.wait_for("slack", 2).await.len(), 2);
    let paged = receiver.wait_for("pagerduty", 2).await;
    assert_eq!(paged[1]["event_action"], "resolve");
    assert_eq!(paged[1]["dedup_key"], paged[0]["dedup_key"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (channel, n) in [("telegram", 4), ("hook", 2), ("slack", 2), ("pagerduty", 2)] {
        assert_eq!(receiver.taken(channel).len(), n, "{channel}");
    }
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
    let (_, _, page) = host.get("/").await;
    assert!(
        page.contains(r#"<p id="no-episodes">No open episodes.</p>"#),
        "{page}"
    );
    // The secrets never reach the log.
    let log = host.log_lines().join("\n");
    assert!(
        log.contains("alert episode open") && log.contains("alert episode close"),
        "{log}"
    );
    assert!(!log.contains(TOKEN) && !log.contains(SECRET), "{log}");
    let (_, _, metrics) = host.get("/metrics").await;
    let series = parse_exposition(&metrics).unwrap();
    let sent = series_value(
        &series,
        "adtrobot_alert_deliveries_total",
        &[("channel", "hook"), ("result", "sent")],
    );
    assert_eq!(sent, Some(2.0));
    terminate(host).await;
}

#[tokio::test]
async fn a_flapping_check_within_after_sends_nothing() {
    let (receiver, origin) = receivers().await;
    receiver.flap.store(true, Ordering::SeqCst);
    let rule = "after = 3\ngroup_wait = \"0s\"";
    let host = Host::start_with_env(&config(&origin, None, "solo", &["hook"], rule), &ENV).await;
    // Fail, fail, pass, over and over: never three in a row.
    while receiver.target_requests.load(Ordering::SeqCst) < 12 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.taken("hook"), Vec::<Value>::new());
    terminate(host).await;
}

#[tokio::test]
async fn two_replicas_on_one_postgres_send_one_message_per_episode() {
    let server = Server::Postgres(postgres().await);
    let (name, url) = server.fresh_database().await;
    let (receiver, origin) = receivers().await;
    let rule = "after = 2\nrecover_after = 2\ngroup_wait = \"0s\"";
    let (config_a, config_b) = (
        config(&origin, Some(&url), "replica-a", &["hook"], rule),
        config(&origin, Some(&url), "replica-b", &["hook"], rule),
    );
    let (a, b) = tokio::join!(
        Host::start_with_env(&config_a, &ENV),
        Host::start_with_env(&config_b, &ENV),
    );
    const EPISODES: usize = 3;
    for episode in 1..=EPISODES {
        receiver.target.store(500, Ordering::SeqCst);
        receiver.wait_for("hook", 2 * episode - 1).await;
        // Both replicas keep failing: neither opens another.
        tokio::time::sleep(Duration::from_secs(3)).await;
        receiver.target.store(200, Ordering::SeqCst);
        receiver.wait_for("hook", 2 * episode).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let events = hook_events(&receiver.taken("hook"));
    let expected: Vec<(String, String)> = (1..=EPISODES)
        .flat_map(|n| {
            let key = format!("healthhost/all/svc/{n}");
            [("open".to_owned(), key.clone()), ("close".to_owned(), key)]
        })
        .collect();
    assert_eq!(events, expected);
    tokio::join!(terminate(a), terminate(b));
    server.exec(format!("DROP DATABASE {name}")).await;
}

#[tokio::test]
async fn an_episode_on_mariadb_is_recorded_and_delivered_once() {
    let server = Server::MariaDb(mariadb().await);
    let (name, url) = server.fresh_database().await;
    let (receiver, origin) = receivers().await;
    let rule = "after = 2\ngroup_wait = \"0s\"";
    let host =
        Host::start_with_env(&config(&origin, Some(&url), "solo", &["hook"], rule), &ENV).await;
    receiver.target.store(500, Ordering::SeqCst);
    receiver.wait_for("hook", 1).await;
    receiver.target.store(200, Ordering::SeqCst);
    let taken = receiver.wait_for("hook", 2).await;
    let key = "healthhost/all/svc/1".to_owned();
    assert_eq!(
        hook_events(&taken),
        [("open".into(), key.clone()), ("close".into(), key)]
    );
    terminate(host).await;
    server.exec(format!("DROP DATABASE {name}")).await;
}

#[tokio::test]
async fn a_receiver_down_for_30_seconds_gets_each_notification_once_in_order() {
    let (receiver, origin) = receivers().await;
    receiver.down.store(true, Ordering::SeqCst);
    let rule = "after = 2\ngroup_wait = \"0s\"";
    let host = Host::start_with_env(&config(&origin, None, "solo", &["hook"], rule), &ENV).await;
    receiver.target.store(500, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    receiver.target.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(receiver.turned_away.load(Ordering::SeqCst) >= 2);
    assert_eq!(receiver.taken("hook").len(), 0);
    receiver.down.store(false, Ordering::SeqCst);
    let taken = receiver.wait_for("hook", 2).await;
    let events = hook_events(&taken);
    let key = "healthhost/all/svc/1".to_owned();
    assert_eq!(
        events,
        [("open".into(), key.clone()), ("close".into(), key)]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.taken("hook").len(), 2);
    terminate(host).await;
}

#[tokio::test]
async fn a_host_killed_before_delivery_delivers_after_restart() {
    let (receiver, origin) = receivers().await;
    receiver.down.store(true, Ordering::SeqCst);
    let rule = "after = 2\ngroup_wait = \"0s\"";
    let text = config(&origin, None, "solo", &["hook"], rule);
    let mut host = Host::start_with_env(&text, &ENV).await;
    receiver.target.store(500, Ordering::SeqCst);
    // Recorded (the episode and its notification are in the store), not delivered.
    while !host
        .log_lines()
        .iter()
        .any(|l| l.contains("alert episode open"))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.signal("KILL");
    let dir = tokio::task::spawn_blocking(move || {
        host.child.wait().unwrap();
        host.stop()
    })
    .await
    .unwrap();
    assert_eq!(receiver.taken("hook").len(), 0);
    receiver.down.store(false, Ordering::SeqCst);
    // The check still fails after the restart: the episode is open already, so the
    // restarted host opens none; it delivers the one that waited.
    let host = Host::start_in_with_env(dir, &text, &ENV).await;
    let taken = receiver.wait_for("hook", 1).await;
    assert_eq!(
        hook_events(&taken),
        [("open".into(), "healthhost/all/svc/1".into())]
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(receiver.taken("hook").len(), 1);
    terminate(host).await;
}

#[tokio::test]
async fn alert_test_prints_the_channels_answer() {
    let (receiver, origin) = receivers().await;
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(
        &path,
        config(&origin, None, "solo", &["telegram", "hook"], ""),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    // Run beside the stand-ins, which answer on this test's runtime.
    let run = |channel: &str, token: &str| {
        tokio::process::Command::new(BIN)
            .args(["alert", "test", channel, "--config", path])
            .env("TG_TOKEN", token)
            .env("HOOK_SECRET", SECRET)
            .output()
    };
    let out = run("hook", TOKEN).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("hook (webhook): sent\nHTTP 200"),
        "{}",
        stdout(&out)
    );
    let hooks = receiver.taken("hook");
    assert_eq!(hooks[0]["test"], true);
    // A wrong token: Telegram's refusal, printed, scrubbed of the token.
    let out = run("telegram", "999:wrong").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let printed = stdout(&out);
    assert!(
        printed.starts_with("telegram (telegram): refused\nHTTP 401"),
        "{printed}"
    );
    assert!(
        printed.contains("Unauthorized") && !printed.contains("999:wrong"),
        "{printed}"
    );
    let out = run("nope", TOKEN).await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains(
            "no channel named 'nope' under [alerts.channels] (there are: hook, telegram)"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rules_prints_prometheus_rules_for_the_configs_checks() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(
        &path,
        config("http://127.0.0.1:9", None, "solo", &["hook"], ""),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["rules", "--config"])
        .arg(&path)
        .env("HOOK_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rules = stdout(&out);
    assert!(
        rules.starts_with("# Prometheus alerting rules for the checks of config.toml"),
        "{rules}"
    );
    let down = "      - alert: HealthhostCheckDown\n        \
                expr: \"adtrobot_health_check_status{check=\\\"svc\\\"} == 0\"\n        for: 3s\n";
    assert!(rules.contains(down), "{rules}");
    // No SLO, no burn-rate rule.
    assert!(!rules.contains("HealthhostErrorBudgetBurn"), "{rules}");
}

/// The admin token of `/v1/maintenance` in the maintenance tests.
const ADMIN: &str = "adm1n-token";

/// A host whose rule `all` (after 2, at once) sends to `hook`, with the maintenance API
/// and a weekly window of the config's own for another check.
async fn maintained_host(origin: &str) -> Host {
    let text = config(
        origin,
        None,
        "solo",
        &["hook"],
        "after = 2\ngroup_wait = \"0s\"",
    )
    .replace(
        "https://status.example.com\"\n",
        "https://status.example.com\"\nadmin_token = \"${ADMIN}\"\n\
             [[alerts.maintenance]]\nchecks = [\"other\"]\nweekly = \"Sun 02:00-04:00\"\n\
             time_zone = \"Europe/Moscow\"\nreason = \"backups\"\n",
    );
    let env = [
        ("TG_TOKEN", TOKEN),
        ("HOOK_SECRET", SECRET),
        ("ADMIN", ADMIN),
    ];
    Host::start_with_env(&text, &env).await
}

/// Waits until `host` logged a line containing `text`.
async fn logged(host: &Host, text: &str) {
    for _ in 0..600 {
        if host.log_lines().iter().any(|l| l.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never logged {text:?}:\n{}", host.log_lines().join("\n"));
}

#[tokio::test]
async fn maintenance_silences_then_reports_an_episode_still_open_at_its_end() {
    let (receiver, origin) = receivers().await;
    let host = maintained_host(&origin).await;
    let window = r#"{"checks": ["svc"], "duration": "8s", "reason": "db upgrade"}"#;
    let (status, _, body) = host.post("/v1/maintenance", None, window).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = host
        .post("/v1/maintenance", Some(ADMIN), r#"{"checks": ["svc"]}"#)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("give end (RFC 3339) or duration"), "{body}");
    let (status, _, body) = host.post("/v1/maintenance", Some(ADMIN), window).await;
    assert_eq!(status, 201, "{body}");
    let added: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (added["source"].as_str(), added["active"].as_bool()),
        (Some("api"), Some(true))
    );

    receiver.target.store(500, Ordering::SeqCst);
    logged(&host, "alert episode open").await;
    // In the window: recorded, shown, and told to nobody.
    let (_, _, page) = host.get("/").await;
    assert!(
        page.contains("🛠 maintenance until") && page.contains("(db upgrade)"),
        "{page}"
    );
    assert_eq!(receiver.taken("hook").len(), 0);
    // Still failing when the window ends: told then, once.
    let taken = receiver.wait_for("hook", 1).await;
    assert_eq!(
        hook_events(&taken),
        [("open".into(), "healthhost/all/svc/1".into())]
    );
    let bearer = format!("Bearer {ADMIN}");
    let (status, _, body) = host
        .get_with("/v1/maintenance", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let windows = listed["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{listed}");
    assert_eq!(windows[0]["source"], "config");
    assert_eq!(windows[0]["weekly"], "Sun 02:00-04:00");
    assert_eq!(windows[0]["time_zone"], "Europe/Moscow");
    // The check's history marks the window.
    let (_, history) = host.json("/v1/checks/svc/history?since=1h").await;
    assert_eq!(
        history["maintenance"][0]["reason"], "db upgrade",
        "{history}"
    );
    receiver.target.store(200, Ordering::SeqCst);
    receiver.wait_for("hook", 2).await;
    terminate(host).await;
}

#[tokio::test]
async fn an_episode_inside_a_maintenance_window_tells_nobody() {
    let (receiver, origin) = receivers().await;
    let host = maintained_host(&origin).await;
    let window = r#"{"checks": ["s*"], "duration": "1m"}"#;
    let (status, _, body) = host.post("/v1/maintenance", Some(ADMIN), window).await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    receiver.target.store(500, Ordering::SeqCst);
    logged(&host, "alert episode open").await;
    receiver.target.store(200, Ordering::SeqCst);
    logged(&host, "alert episode close").await;
    // Ending the window now lets held notifications go: there are none.
    let delete = |path: String| {
        reqwest::Client::new()
            .delete(format!("{}{path}", host.base))
            .bearer_auth(ADMIN)
            .send()
    };
    assert_eq!(
        delete(format!("/v1/maintenance/{id}"))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        delete("/v1/maintenance/999999".into())
            .await
            .unwrap()
            .status(),
        404
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.taken("hook"), Vec::<Value>::new());
    let (_, _, page) = host.get("/").await;
    assert!(!page.contains("🛠 maintenance"), "the window ended: {page}");
    terminate(host).await;
}

#[tokio::test]
async fn an_slo_burn_rule_alerts_once_when_the_error_budget_burns_too_fast() {
    let (receiver, origin) = receivers().await;
    // svc fails every run: a 99 % daily SLO's budget burns a hundred times too fast.
    receiver.target.store(500, Ordering::SeqCst);
    let text = config(&origin, None, "solo", &["hook"], "group_wait = \"0s\"")
        .replace(
            "[alerts.rules.all]",
            "[alerts.rules.budget]\nslo_burn = true",
        )
        .replace(
            "grants.http",
            "slo = \"99%\"\nslo_window = \"24h\"\ngrants.http",
        );
    let host = Host::start_with_env(&text, &ENV).await;
    let taken = receiver.wait_for("hook", 1).await;
    let event = &taken[0]["events"][0];
    assert_eq!(event["event"], "open");
    assert_eq!(event["episode"], "healthhost/budget/burn/svc/1");
    assert_eq!(event["outcome"], "slo-burn");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "spending its error budget 100.0x as fast as its SLO (99 % over 24h) allows, \
         over the last 1h (alerting above 0.5x"
        ),
        "{message}"
    );
    assert!(
        taken[0]["text"]
            .as_str()
            .unwrap()
            .contains("🔥 svc is spending"),
        "{taken:?}"
    );
    // Still burning: no second message, and no episode of runs (the rule counts none).
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(receiver.taken("hook").len(), 1);
    terminate(host).await;
}

#[tokio::test]
async fn changes_within_group_wait_go_out_as_one_message_and_reminders_repeat() {
    let (receiver, origin) = receivers().await;
    // Two checks on one target fail together: one message lists both.
    let text = config(
        &origin,
        None,
        "solo",
        &["hook"],
        "after = 2\ngroup_wait = \"3s\"\nrepeat = \"6s\"",
    )
    .replace("checks = [\"svc\"]", "checks = [\"svc*\"]");
    let second = text
        .split("[alerts]")
        .next()
        .unwrap()
        .split("[checks.svc]")
        .nth(1)
        .unwrap()
        .to_owned();
    let text = text.replacen("[alerts]", &format!("[checks.svc2]{second}[alerts]"), 1);
    let host = Host::start_with_env(&text, &ENV).await;
    host.wait_loaded().await;
    receiver.target.store(500, Ordering::SeqCst);
    let taken = receiver.wait_for("hook", 1).await;
    let mut checks: Vec<&str> = taken[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["check"].as_str().unwrap())
        .collect();
    checks.sort();
    assert_eq!(checks, ["svc", "svc2"], "{taken:?}");
    assert!(
        taken[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("healthhost [all]: 2 down")
    );
    // Still failing: reminders, each episode's own, every 6 s (grouped as well).
    let taken = receiver.wait_for("hook", 2).await;
    let reminded: Vec<&str> = taken[1]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        !reminded.is_empty() && reminded.iter().all(|e| *e == "reminder"),
        "{taken:?}"
    );
    terminate(host).await;
}

#[test]
fn validate_names_a_rule_check_that_matches_no_check() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let text = config("http://127.0.0.1:9", None, "solo", &["hook"], "").replace(
        "checks = [\"svc\"]",
        "checks = [\"svc\", \"nope\", \"api-*\"]",
    );
    std::fs::write(&path, format!("cache_dir = \"cache\"\n{text}")).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .env("HOOK_SECRET", SECRET)
        .env("HEALTHHOST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("note: alerts.rules.all.checks: 'api-*' matches no check"),
        "{err}"
    );
    assert!(
        err.contains("alerts.rules.all.checks: 'nope' matches no check"),
        "{err}"
    );
    assert!(!err.contains("'svc' matches"), "{err}");
}
