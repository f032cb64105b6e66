//! Built-in check `database`: runs `SELECT 1` on one granted SQL datasource.
//!
//! Passes when the statement succeeds (sample `database_latency_seconds`); fails
//! with a short reason when it does not: "Timeout", the driver's message,
//! "datasource '<name>' not granted", "datasource '<name>' not configured" or
//! "result too large".
//!
//! Setting: `datasource` (default `main`).

use std::time::Instant;

use healthhost_plugin::sql::{self, Error};
use healthhost_plugin::{Guest, Report, Sample, Status, config};

/// The datasource queried when the `datasource` setting is absent.
const DEFAULT_DATASOURCE: &str = "main";

struct Database;

impl Guest for Database {
    fn check() -> Report {
        let datasource = config::get("datasource").unwrap_or_else(|| DEFAULT_DATASOURCE.into());

        let started = Instant::now();
        let result = sql::query(&datasource, "SELECT 1", &[]);
        let latency = started.elapsed().as_secs_f64();

        match result {
            Ok(_) => Report {
                status: Status::Pass,
                message: None,
                samples: vec![Sample {
                    name: "database_latency_seconds".into(),
                    labels: Vec::new(),
                    value: latency,
                }],
            },
            // No latency sample: an error is not an answer worth timing.
            Err(error) => Report {
                status: Status::Fail,
                message: Some(error_message(error)),
                samples: Vec::new(),
            },
        }
    }
}

/// The short message for a failed query.
fn error_message(error: Error) -> String {
    match error {
        Error::Timeout => "Timeout".into(),
        // The host removes credentials from driver messages.
        Error::Database(message) => message,
        Error::Denied(name) => format!("datasource '{name}' not granted"),
        Error::NotConfigured(name) => format!("datasource '{name}' not configured"),
        Error::TooLarge(_) => "result too large".into(),
    }
}

// The export glue is unsafe (exported symbols): the only unsafe code in this crate,
// allowed here and nowhere else.
#[allow(unsafe_code)]
mod export {
    use super::Database;
    healthhost_plugin::export!(Database);
}
