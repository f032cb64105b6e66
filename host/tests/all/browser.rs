//! The status page in a real browser: Debian's `chromium`, headless, driven through
//! `chromedriver` (WebDriver) with fantoccini. The page loads with its stylesheet and
//! script under its CSP, shows each check's status, the failing one as failing, hides
//! the costs until the login form is sent the read token, the 7d link changes the
//! numbers, and the script refreshes the content. `scripts/screenshot` renders
//! `docs/status-page.png` the same way.
//!
//! A missing browser fails the test with how to install it (`scripts/test` does as
//! root); it never skips.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::*;
use crate::page::{READ_TOKEN, StatusHost};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session behind a chromedriver on an ephemeral port; both end
/// when it is dropped (or [`Browser::close`]d).
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: TempDir,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the status page is tested in Debian's Chromium; \
                 install it with `apt-get install -y chromium chromium-driver` \
                 (scripts/test does so when run as root)"
            );
        }
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let webdriver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut up = false;
        for _ in 0..200 {
            if http
                .get(format!("{webdriver}/status"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "chromedriver did not answer on {webdriver} within 10 s");
        let profile = TempDir::new();
        // No internet here: every background connection Chromium would make is off.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", profile.0.display()),
        ];
        let capabilities = json!({
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| panic!("starting {CHROMIUM} through chromedriver: {e}"));
        Browser {
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn text(&self, css: &str) -> String {
        let element = self.client().find(Locator::Css(css)).await;
        let element = element.unwrap_or_else(|e| panic!("no {css}: {e}"));
        element.text().await.unwrap()
    }

    async fn count(&self, css: &str) -> usize {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .len()
    }

    /// Waits (bounded) for an element matching `css`.
    async fn wait_for(&self, css: &str) {
        self.client()
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
    }

    /// Logs in through the page's form.
    async fn log_in(&self, token: &str) {
        let field = self.client().find(Locator::Css("#token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        let button = self.client().find(Locator::Css("#login button")).await;
        button.unwrap().click().await.unwrap();
        self.wait_for("#usage-cost").await;
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test]
async fn the_page_works_in_chromium_with_login_and_the_range_switch() {
    let server = StatusHost::start(true).await;
    let browser = Browser::start(1280, 900).await;
    let c = browser.client();
    c.goto(&format!("{}/", server.host.base)).await.unwrap();

    assert_eq!(browser.text("#overall").await, "✓ healthy");
    assert_eq!(browser.text("tr[data-check=\"ok\"] .word").await, "passing");
    assert_eq!(
        browser.text("tr[data-check=\"broken\"] .word").await,
        "failing"
    );
    let failure = browser.text("tr[data-check=\"broken\"] .failure").await;
    assert!(
        failure.contains("<script>alert('owned')</script>"),
        "shown as text: {failure}"
    );
    // The stylesheet loaded under the CSP: a failing status is coloured.
    let colour = c
        .execute(
            "return getComputedStyle(document.querySelector('tr[data-check=\"broken\"] .status')).color",
            vec![],
        )
        .await
        .unwrap();
    assert_ne!(colour, json!("rgb(0, 0, 0)"), "page.css did not apply");
    assert_eq!(browser.count("#login").await, 1);
    assert_eq!(
        browser.count("#usage-cost").await,
        0,
        "no costs without the token"
    );

    browser.log_in(READ_TOKEN).await;
    assert_eq!(browser.text("#usage-cost").await, "$0.7500");
    assert_eq!(browser.text("#usage-requests").await, "2");
    let cookies = c.execute("return document.cookie", vec![]).await.unwrap();
    assert_eq!(cookies, json!(""), "the token cookie is HttpOnly");
    assert!(!c.source().await.unwrap().contains(READ_TOKEN));

    c.find(Locator::Css("#range-7d"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("#usage-totals[data-range=\"7d\"]").await;
    assert_eq!(browser.text("#usage-cost").await, "$8.75");
    assert_eq!(browser.text("#usage-requests").await, "3");
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/?range=7d")
    );

    // page.js swaps in a fresh <main> every 10 s (its fetch allowed by the CSP).
    c.execute(
        "document.getElementById('main').dataset.old = 'yes'",
        vec![],
    )
    .await
    .unwrap();
    browser.wait_for("main#main:not([data-old])").await;
    assert_eq!(
        browser.text("#usage-cost").await,
        "$8.75",
        "same range after refresh"
    );
    browser.close().await;
}

/// Renders the page as `scripts/screenshot` asks: `HEALTHHOST_SCREENSHOT` names the
/// PNG to write. Not a test of its own (`--ignored`).
#[tokio::test]
#[ignore = "scripts/screenshot runs it"]
async fn screenshot() {
    let out =
        std::env::var("HEALTHHOST_SCREENSHOT").expect("HEALTHHOST_SCREENSHOT: the PNG to write");
    // Runs every second for a while, so the sparklines and strips have some bars.
    let server = StatusHost::start_with(true, "1s", "connection refused: db.internal:5432").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let browser = Browser::start(1200, 1000).await;
    let c = browser.client();
    c.goto(&format!("{}/", server.host.base)).await.unwrap();
    browser.log_in(READ_TOKEN).await;
    c.goto(&format!("{}/?range=7d", server.host.base))
        .await
        .unwrap();
    browser.wait_for("#usage-totals[data-range=\"7d\"]").await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(&out, png).unwrap();
    browser.close().await;
}
