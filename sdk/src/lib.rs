//! healthhost-plugin: the Rust SDK for healthhost checks.
//!
//! It holds the bindings of the plugin contract (`wit/plugin.wit`, world `check`) and
//! the small pieces every HTTP check repeats: reading its settings with messages that
//! name the bad value, a timed request with its latency sample, and the short text of a
//! request that got no response. A check implements [`Guest`] and exports itself:
//!
//! ```ignore
//! use healthhost_plugin::{Guest, Report, Status};
//!
//! struct Ping;
//!
//! impl Guest for Ping {
//!     fn check() -> Report {
//!         Report { status: Status::Pass, message: None, samples: Vec::new() }
//!     }
//! }
//!
//! // The export glue is unsafe (exported symbols): allow it on this module only.
//! #[allow(unsafe_code)]
//! mod export {
//!     use super::Ping;
//!     healthhost_plugin::export!(Ping);
//! }
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` and test the result with
//! `healthhost check`.

/// The generated bindings; their `export!` macro is re-exported as
/// `healthhost_plugin::export!`.
pub mod bindings {
    wit_bindgen::generate!({
        world: "check",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "healthhost_plugin::bindings",
    });
}

use std::time::Instant;

pub use bindings::healthhost::plugin::types::{Sample, Status};
pub use bindings::healthhost::plugin::{config, http, log, sql};
pub use bindings::{Guest, Report, export};

/// A failing report with `message` and no samples.
pub fn fail(message: impl Into<String>) -> Report {
    Report {
        status: Status::Fail,
        message: Some(message.into()),
        samples: Vec::new(),
    }
}

/// Reading a check's settings (the host's `config` import), with messages that name
/// the setting and its bad value.
pub mod settings {
    use super::config;

    /// The setting `key` as an http(s) URL without a trailing `/`, or `default` when
    /// it is absent.
    pub fn url(key: &str, default: &str) -> Result<String, String> {
        let url = config::get(key).unwrap_or_else(|| default.into());
        parse_url(key, &url, default)
    }

    /// The setting `key` as a whole number of milliseconds, or `default` when absent.
    pub fn millis(key: &str, default: u32) -> Result<u32, String> {
        match config::get(key) {
            None => Ok(default),
            Some(raw) => parse_millis(key, &raw, default),
        }
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
    let started = Instant::now();
    let result = http::send(&request);
    let latency = Sample {
        name: latency_name.into(),
        labels: Vec::new(),
        value: started.elapsed().as_secs_f64(),
    };
    (result, latency)
}

/// The short message for a request that produced no response: "Timeout", "origin …
/// not granted", "response too large", or the host's description.
pub fn describe(error: http::Error) -> String {
    match error {
        http::Error::Timeout => "Timeout".into(),
        http::Error::Denied(origin) => format!("origin {origin} not granted"),
        http::Error::TooLarge(_) => "response too large".into(),
        http::Error::Transport(message) | http::Error::Invalid(message) => message,
    }
}

#[cfg(test)]
mod tests {
    use super::settings::{parse_millis, parse_url};

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
