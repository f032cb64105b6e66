//! Built-in check `database`: runs `SELECT 1` on one granted SQL datasource.
//!
//! Passes when the statement succeeds (sample `database_latency_seconds`); fails
//! with a short reason when it does not: "Timeout", the driver's message,
//! "datasource '<name>' not granted", "datasource '<name>' not configured" or
//! "result too large".
//!
//! Setting: `datasource` (default `main`).

use healthhost_plugin::{Guest, Report, describe_sql, settings, timed_query};

/// The datasource queried when the `datasource` setting is absent.
const DEFAULT_DATASOURCE: &str = "main";

struct Database;

impl Guest for Database {
    fn check() -> Report {
        let datasource = settings::text("datasource", DEFAULT_DATASOURCE);
        let (result, latency) =
            timed_query(&datasource, "SELECT 1", &[], "database_latency_seconds");
        match result {
            Ok(_) => Report::pass().with_sample(latency),
            // No latency sample: an error is not an answer worth timing.
            Err(error) => Report::fail(describe_sql(error)),
        }
    }
}

healthhost_plugin::export_check!(Database);
