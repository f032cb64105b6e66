//! healthhost-plugin: the Rust SDK for healthhost checks.
//!
//! It holds the bindings of the plugin contract (`wit/plugin.wit`, world `check`) and
//! the small pieces every check repeats: reports and samples in one call each
//! ([`Report::pass`], [`Report::warn`], [`Report::fail`], [`Sample::new`]), settings
//! read with messages that name the bad value ([`settings`]), a timed HTTP request or
//! SQL query with its latency sample ([`get_json`], [`timed_query`]), and the short
//! text of a call that got no answer ([`describe`], [`describe_sql`]). A check
//! implements [`Guest`] and exports itself with [`export_check!`]:
//!
//! ```ignore
//! use healthhost_plugin::{Guest, Report};
//!
//! struct Ping;
//!
//! impl Guest for Ping {
//!     fn check() -> Report {
//!         Report::pass()
//!     }
//! }
//!
//! healthhost_plugin::export_check!(Ping);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` and test the result with
//! `healthhost check`.

/// The generated bindings; their `export!` macro is re-exported as
/// `healthhost_plugin::export!`. A check uses the types and modules this crate
/// re-exports, not these paths.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "check",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "healthhost_plugin::bindings",
    });
}

use std::time::Instant;

/// The words the host shares (`wit/words.rs`).
mod words {
    include!("../../wit/words.rs");
}

pub use bindings::healthhost::plugin::types::{Sample, Status};
pub use bindings::healthhost::plugin::{http, log, sql};
pub use bindings::{Guest, Report, export};

/// Exports `$check` (a type implementing [`Guest`]) as the component's `check`.
///
/// The export glue declares exported symbols, which is unsafe code; it is expanded
/// from this crate's macros, so a plugin crate keeps `unsafe_code = "forbid"` (the
/// built-ins in `plugins/` do).
#[macro_export]
macro_rules! export_check {
    ($check:ident) => {
        const _: () = {
    $crate::export!($check with_types_in $crate::bindings);
        };
    };
}

impl Report {
    /// The dependency works.
    pub fn pass() -> Report {
        Report::new(Status::Pass, None)
    }

    /// The dependency works but needs attention; `message` says why.
    pub fn warn(message: impl Into<String>) -> Report {
        Report::new(Status::Warn, Some(message.into()))
    }

    /// The dependency is down or unusable; `message` says why.
    pub fn fail(message: impl Into<String>) -> Report {
        Report::new(Status::Fail, Some(message.into()))
    }

    fn new(status: Status, message: Option<String>) -> Report {
        Report {
            status,
            message,
            samples: Vec::new(),
        }
    }

    /// The same report with `message`.
    pub fn with_message(mut self, message: impl Into<String>) -> Report {
        self.message = Some(message.into());
        self
    }

    /// The same report with `sample` added.
    pub fn with_sample(mut self, sample: Sample) -> Report {
        self.samples.push(sample);
        self
    }
}

impl Sample {
    /// A sample without labels. `name` must be a metric name (`[a-zA-Z_][a-zA-Z0-9_]*`),
    /// ideally with a unit suffix like `_seconds`; the operator grants it by name.
    pub fn new(name: impl Into<String>, value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: Vec::new(),
            value,
        }
    }

    /// The same sample with the label `name="value"` added. Keep values bounded (a
    /// table or queue name, never an id or a URL).
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Sample {
        self.labels.push((name.into(), value.into()));
        self
    }
}

/// A failing report with `message` and no samples (the same as [`Report::fail`]).
pub fn fail(message: impl Into<String>) -> Report {
    Report::fail(message)
}

/// Reading a check's settings (the host's `config` import), with messages that name
/// the setting and its bad value.
pub mod settings {
    use crate::bindings::healthhost::plugin::config;

    /// The setting `key` as the operator wrote it, or `None` when it is not set.
    pub fn get(key: &str) -> Option<String> {
        config::get(key)
    }

    /// The setting `key` as an http(s) URL without a trailing `/`, or `default` when
    /// it is absent.
    pub fn url(key: &str, default: &str) -> Result<String, String> {
        let url = get(key).unwrap_or_else(|| default.into());
        parse_url(key, &url, default)
    }

    /// The setting `key` as an http(s) URL without a trailing `/`; an error naming the
    /// setting when it is absent.
    pub fn required_url(key: &str, example: &str) -> Result<String, String> {
        let url = get(key)
            .ok_or_else(|| format!("setting {key} is not set (expected a URL like {example})"))?;
        parse_url(key, &url, example)
    }

    /// The setting `key`, or `default` when it is absent.
    pub fn text(key: &str, default: &str) -> String {
        get(key).unwrap_or_else(|| default.into())
    }

    /// The setting `key` as a whole number of milliseconds, or `default` when absent.
    pub fn millis(key: &str, default: u32) -> Result<u32, String> {
        match get(key) {
            None => Ok(default),
            Some(raw) => parse_millis(key, &raw, default),
        }
    }

    /// The setting `key` as seconds (a finite number, at least 0, fractions allowed),
    /// or `default` when absent.
    pub fn seconds(key: &str, default: f64) -> Result<f64, String> {
        match get(key) {
            None => Ok(default),
            Some(raw) => parse_seconds(key, &raw),
        }
    }

    /// The setting `key` as a count (a whole number, at least 0), or `default` when
    /// absent.
    pub fn count(key: &str, default: usize) -> Result<usize, String> {
        match get(key) {
            None => Ok(default),
            Some(raw) => parse_count(key, &raw),
        }
    }

    pub(crate) fn parse_seconds(key: &str, raw: &str) -> Result<f64, String> {
        match raw.trim().parse::<f64>() {
            Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(seconds),
            _ => Err(format!(
                "invalid setting {key} = '{raw}' (expected seconds, e.g. 60 or 0.5)"
            )),
        }
    }

    pub(crate) fn parse_count(key: &str, raw: &str) -> Result<usize, String> {
        raw.trim()
            .parse()
            .map_err(|_| format!("invalid setting {key} = '{raw}' (expected a count, e.g. 1)"))
    }

    pub(crate) fn parse_url(key: &str, url: &str, example: &str) -> Result<String, String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(url.trim_end_matches('/').to_owned())
        } else {
            Err(format!(
                "invalid setting {key} = '{url}' (expected a URL like {example})"
            ))
        }
    }

    pub(crate) fn parse_millis(key: &str, raw: &str, example: u32) -> Result<u32, String> {
        raw.trim().parse().map_err(|_| {
            format!("invalid setting {key} = '{raw}' (expected milliseconds, e.g. {example})")
        })
    }
}

/// Sends `GET url` asking for JSON, and times it: the response (or why there is none)
/// and a sample `latency_name` with the seconds it took.
pub fn get_json(
    url: String,
    timeout_ms: u32,
    latency_name: &str,
) -> (Result<http::Response, http::Error>, Sample) {
    let request = http::Request {
        method: "GET".into(),
        url,
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
        timeout_ms: Some(timeout_ms),
    };
    timed(latency_name, || http::send(&request))
}

/// Runs `statement` on `datasource` with `params`, and times it: the rows (or why
/// there are none) and a sample `latency_name` with the seconds it took.
pub fn timed_query(
    datasource: &str,
    statement: &str,
    params: &[sql::Value],
    latency_name: &str,
) -> (Result<sql::Rows, sql::Error>, Sample) {
    timed(latency_name, || sql::query(datasource, statement, params))
}

/// Runs `call` and returns its result with a sample `name` of the seconds it took.
fn timed<T>(name: &str, call: impl FnOnce() -> T) -> (T, Sample) {
    let started = Instant::now();
    let result = call();
    (result, Sample::new(name, started.elapsed().as_secs_f64()))
}

/// The short message for a request that produced no response: "Timeout", "origin …
/// not granted", "response too large", or the host's description.
pub fn describe(error: http::Error) -> String {
    match error {
        http::Error::Timeout => "Timeout".into(),
        http::Error::Denied(origin) => words::origin_not_granted(&origin),
        http::Error::TooLarge(_) => "response too large".into(),
        http::Error::Transport(message) | http::Error::Invalid(message) => message,
    }
}

/// The short message for a query that produced no rows: "Timeout", the database's
/// message, "datasource '<name>' not granted", "datasource '<name>' not configured"
/// or "result too large".
pub fn describe_sql(error: sql::Error) -> String {
    match error {
        sql::Error::Timeout => "Timeout".into(),
        // The host removes credentials from driver messages.
        sql::Error::Database(message) => message,
        sql::Error::Denied(name) => format!("datasource '{name}' not granted"),
        sql::Error::NotConfigured(name) => format!("datasource '{name}' not configured"),
        sql::Error::TooLarge(_) => "result too large".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::settings::{parse_count, parse_millis, parse_seconds, parse_url};

    #[test]
    fn seconds_and_counts_name_the_setting_when_they_do_not_parse() {
        assert_eq!(parse_seconds("grace", " 0.5 "), Ok(0.5));
        assert_eq!(parse_count("min_jobs", "3"), Ok(3));
        for bad in ["-1", "NaN", "inf", "soon"] {
            let err = parse_seconds("grace", bad).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid setting grace = '{bad}'")),
                "{err}"
            );
        }
        for bad in ["-1", "1.5", "many"] {
            let err = parse_count("min_jobs", bad).unwrap_err();
            assert!(err.contains("(expected a count, e.g. 1)"), "{err}");
        }
    }

    #[test]
    fn urls_must_be_http_and_lose_their_trailing_slash() {
        assert_eq!(
            parse_url("base_url", "http://127.0.0.1:9/", "https://x").unwrap(),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            parse_url("base_url", "ftp://x", "https://api.example.com").unwrap_err(),
            "invalid setting base_url = 'ftp://x' (expected a URL like https://api.example.com)"
        );
    }

    #[test]
    fn millis_name_the_bad_value() {
        assert_eq!(parse_millis("timeout_ms", " 250 ", 10).unwrap(), 250);
        assert_eq!(
            parse_millis("timeout_ms", "soon", 10000).unwrap_err(),
            "invalid setting timeout_ms = 'soon' (expected milliseconds, e.g. 10000)"
        );
    }
}
