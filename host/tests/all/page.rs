//! The status page at `/` over HTTP, through a real `healthhost serve`: each check's
//! status as a word, a failing check as failing, a hostile message escaped, the
//! security headers, and the AI usage section only for the read token (login form →
//! cookie, or a bearer header), its range switch, the token never on the page.

use crate::common::*;
use serde_json::json;

/// The usage write and read tokens of [`StatusHost`].
pub const TOKEN: &str = "page-write-token";
pub const READ_TOKEN: &str = "page-read-token-7c1f";
/// The failing check's message: markup that must reach the page as text.
pub const HOSTILE: &str = "<script>alert('owned')</script> disk & more";

/// A host with a passing check (`ok`), a failing one (`broken`, [`HOSTILE`] message)
/// and, with `usage`, a SQLite usage table holding rows of today and of three days
/// ago, readable with [`READ_TOKEN`].
pub struct StatusHost {
    pub host: Host,
    /// The usage database's folder (kept while the host runs).
    _db: Option<TempDir>,
}

impl StatusHost {
    pub async fn start(usage: bool) -> StatusHost {
        StatusHost::start_with(usage, "1h", HOSTILE).await
    }

    /// Like [`StatusHost::start`], the checks running every `interval` and the failing
    /// one saying `message`.
    pub async fn start_with(usage: bool, interval: &str, message: &str) -> StatusHost {
        let mut config = format!(
            "[checks.ok]\nplugin = {:?}\ninterval = \"{interval}\"\n\
             [checks.broken]\nplugin = {:?}\ncritical = false\ninterval = \"{interval}\"\n\
             settings = {{ mode = \"fail\", message = {message:?} }}\n",
            test_artifacts::TRIVIAL,
            test_artifacts::MISBEHAVE,
        );
        let mut db = None;
        if usage {
            let dir = TempDir::new();
            let url = format!("sqlite://{}/usage.db", dir.0.display());
            let pool = sqlite(&dir.0.join("usage.db")).await;
            healthhost::migrate::migrate(&url, &healthhost::migrate::USAGE)
                .await
                .unwrap();
            sqlx::raw_sql(
                "INSERT INTO ai_usage (user_id, operation, model, prompt_tokens, completion_tokens, \
                   total_tokens, cost_dollars, latency_ms, status, created_at) VALUES \
                 (4, 'tarot', 'm1', 1000, 1000, 2000, 8.0, 1000, 'success', datetime('now', '-3 days'))",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
            config = format!(
                "[datasources.main]\nurl = \"{url}\"\n\
                 [usage]\ntoken = \"{TOKEN}\"\nread_token = \"{READ_TOKEN}\"\n{config}"
            );
            db = Some(dir);
        }
        let host = Host::start(&config).await;
        if usage {
            let rows = json!([
                {"user_id": 1, "operation": "tarot", "model": "m1", "prompt_tokens": 10,
                 "completion_tokens": 20, "cost_dollars": 0.5, "latency_ms": 100},
                {"user_id": 2, "operation": "horoscope", "model": "m2", "prompt_tokens": 1,
                 "completion_tokens": 2, "cost_dollars": 0.25, "latency_ms": 300, "status": "error"},
            ]);
            let (status, _, body) = host
                .post("/v1/ai-usage", Some(TOKEN), rows.to_string())
                .await;
            assert_eq!(status, 201, "{body}");
        }
        host.wait_for("/health", |_, body| {
            ["ok", "broken"].iter().all(|c| has_run(&body["checks"][c]))
        })
        .await;
        StatusHost { host, _db: db }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `POST /login` with `token`: status, headers, body.
async fn login(host: &Host, token: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = client()
        .post(format!("{}/login", host.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "token={}",
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// What follows the first `marker` in `html`, up to `end`.
fn after<'a>(html: &'a str, marker: &str, end: char) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker}:\n{html}"))
        + marker.len();
    &html[start..start + html[start..].find(end).unwrap()]
}

/// The `data-status` of check `name`'s row.
fn row_status<'a>(html: &'a str, name: &str) -> &'a str {
    after(html, &format!("data-check=\"{name}\" data-status=\""), '"')
}

/// The text of the element with `id` (up to the next tag).
fn text_of<'a>(html: &'a str, id: &str) -> &'a str {
    after(html, &format!("id=\"{id}\">"), '<')
}

#[tokio::test]
async fn the_page_shows_each_check_with_a_word_and_escapes_messages() {
    let server = StatusHost::start(false).await;
    let host = &server.host;
    let (status, headers, html) = host.get("/").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_secure(&headers, "/");
    assert_eq!(headers["cache-control"], "no-store");

    assert_eq!(row_status(&html, "ok"), "pass");
    assert_eq!(row_status(&html, "broken"), "fail");
    assert!(
        html.contains("<span class=\"word\">passing</span>"),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"word\">failing</span>"),
        "{html}"
    );
    // A failing non-critical check leaves the host healthy.
    assert!(html.contains("✓ healthy"), "{html}");
    // The message is text, not markup (details are shown by default).
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("alert(&#39;owned&#39;)")
            || html.contains("alert(&#x27;owned&#x27;)")
            || html.contains("alert(&apos;owned&apos;)"),
        "{html}"
    );
    assert!(
        html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
        "{html}"
    );
    // No read token configured: no usage section, no login.
    assert!(!html.contains("id=\"usage\""), "{html}");
    assert_eq!(host.get("/login").await.0, 404);

    for (path, kind) in [
        ("/assets/page.css", "text/css"),
        ("/assets/page.js", "text/javascript"),
    ] {
        let (status, headers, body) = host.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!body.is_empty());
    }
    let (status, headers, body) = host.get("/?range=1y").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("24h, 7d, 30d"), "{body}");
    assert_secure(&headers, "an error answer");
}

/// The headers every answer of the page's routes carries, errors included.
fn assert_secure(headers: &reqwest::header::HeaderMap, what: &str) {
    let csp = headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP in {headers:?}"))
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {csp}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
}

#[tokio::test]
async fn costs_show_only_with_the_read_token_and_follow_the_range() {
    let server = StatusHost::start(true).await;
    let host = &server.host;

    // Without the token: the login form, no numbers.
    let (status, _, html) = host.get("/").await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"login\""), "{html}");
    assert!(!html.contains("id=\"usage-cost\""), "{html}");
    // The write token is not a read token; a wrong one gets the form again, 401.
    for wrong in [TOKEN, "nope", ""] {
        let (status, headers, html) = login(host, wrong).await;
        assert_eq!(status, 401, "{wrong:?}");
        assert_secure(&headers, "a refused login");
        assert!(headers.get("set-cookie").is_none());
        assert!(html.contains("that is not the read token"), "{html}");
        assert!(!html.contains("id=\"usage-cost\""));
    }

    // A form past the size limit is refused by the extractor, with the headers too.
    let (status, headers, _) = login(host, &"x".repeat(5000)).await;
    assert_eq!(status, 413);
    assert_secure(&headers, "an oversized login form");

    // The read token: a cookie, then the numbers.
    let (status, headers, _) = login(host, READ_TOKEN).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/");
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let get = |path: &'static str| {
        let cookie = cookie.clone();
        async move { host.get_with(path, &[("cookie", &cookie)]).await }
    };
    let (status, _, day) = get("/").await;
    assert_eq!(status, 200);
    assert!(!day.contains(READ_TOKEN), "the token is never on the page");
    assert!(!day.contains("id=\"login\""));
    assert_eq!(text_of(&day, "usage-cost"), "$0.7500", "{day}");
    assert_eq!(text_of(&day, "usage-requests"), "2");
    assert_eq!(text_of(&day, "usage-cost-per-user"), "$0.3750");
    assert!(day.contains("<th scope=\"row\">tarot</th>"), "{day}");
    assert!(day.contains("href=\"/?range=7d\""), "{day}");

    let (_, _, week) = get("/?range=7d").await;
    assert_eq!(text_of(&week, "usage-cost"), "$8.75", "{week}");
    assert_eq!(text_of(&week, "usage-requests"), "3");
    assert!(week.contains("data-range=\"7d\""));
    assert!(week.contains("<rect "), "a bar per day: {week}");

    // A bearer header works too; the write token does not.
    let bearer = format!("Bearer {READ_TOKEN}");
    let (_, _, html) = host.get_with("/", &[("authorization", &bearer)]).await;
    assert_eq!(text_of(&html, "usage-cost"), "$0.7500");
    let write = format!("Bearer {TOKEN}");
    let (_, _, html) = host.get_with("/", &[("authorization", &write)]).await;
    assert!(!html.contains("id=\"usage-cost\""));
    // A cookie with another token: the form, saying so.
    let (_, _, html) = host
        .get_with("/", &[("cookie", "healthhost_usage=old-token")])
        .await;
    assert!(html.contains("no longer accepted"), "{html}");

    // Logging out clears the cookie.
    let response = client()
        .post(format!("{}/logout", host.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("healthhost_usage=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}
