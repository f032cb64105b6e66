//! Built-in check `scheduler`: reads an APScheduler job store (`SQLAlchemyJobStore`)
//! and checks that no job is overdue and, when a heartbeat job is named, that the
//! scheduler is running.
//!
//! The job table has `id` and `next_run_time` as epoch seconds (NULL for a paused
//! job). A job is overdue when its next run is more than `grace` seconds in the past,
//! which means the scheduler that should have run it is not running. A job store only
//! shows that when some job is due: with daily jobs, a stopped scheduler looks healthy
//! for up to a day. A heartbeat job (a job that runs every few seconds) closes that
//! gap: once it is overdue by `grace`, the scheduler is not running.
//!
//! Settings: `datasource` (default `main`), `table` (default `apscheduler_jobs`,
//! optionally schema-qualified), `grace` in seconds (default 60), `heartbeat_job`
//! (a job id; none by default), `min_jobs` (default 0).
//!
//! Samples: `scheduler_jobs`, `scheduler_overdue_jobs`, `scheduler_latency_seconds`.

use std::time::{SystemTime, UNIX_EPOCH};

use healthhost_plugin::sql::{Error, Value};
use healthhost_plugin::{Guest, Report, Sample, describe_sql, settings, timed_query};

/// The datasource queried when the `datasource` setting is absent.
const DEFAULT_DATASOURCE: &str = "main";
/// APScheduler's default table name.
const DEFAULT_TABLE: &str = "apscheduler_jobs";
/// How late a job may be before it counts as overdue, in seconds: a busy
/// scheduler can run a job a little after its time.
const DEFAULT_GRACE_SECONDS: f64 = 60.0;

struct Scheduler;

impl Guest for Scheduler {
    fn check() -> Report {
        match run() {
            Ok(report) | Err(report) => report,
        }
    }
}

/// What the operator set, with the defaults.
struct Options {
    datasource: String,
    table: String,
    grace: f64,
    min_jobs: usize,
    heartbeat: Option<String>,
}

/// What the job table says: the jobs, those overdue, and the heartbeat job's next run
/// when the job is there (`Some(None)`: paused).
struct Jobs {
    count: usize,
    overdue: u64,
    beat: Option<Option<f64>>,
}

/// The check; `Err` carries an early failure report.
fn run() -> Result<Report, Report> {
    let options = options().map_err(|message| fail(message, Vec::new()))?;
    // The table name is validated by `options`: it cannot carry anything but a name.
    let statement = format!("SELECT next_run_time, id FROM {}", options.table);
    let (result, latency) = timed_query(
        &options.datasource,
        &statement,
        &[],
        "scheduler_latency_seconds",
    );
    let rows = result
        .map_err(|error| fail(error_message(error), Vec::new()))?
        .rows;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let deadline = now - options.grace;
    let jobs = read_jobs(&rows, deadline, options.heartbeat.as_deref())
        .map_err(|message| fail(message, Vec::new()))?;
    let samples = vec![
        Sample::new("scheduler_jobs", jobs.count as f64),
        Sample::new("scheduler_overdue_jobs", jobs.overdue as f64),
        latency,
    ];
    if let Some(why) = stopped(options.heartbeat.as_deref(), jobs.beat, deadline, now) {
        return Err(fail(format!("Scheduler not running: {why}"), samples));
    }
    let (count, overdue, min_jobs) = (jobs.count, jobs.overdue, options.min_jobs);
    Ok(if count < min_jobs {
        fail(
            format!("{count} jobs scheduled, expected at least {min_jobs}"),
            samples,
        )
    } else if overdue > 0 {
        fail(format!("{overdue} jobs overdue"), samples)
    } else {
        Report {
            samples,
            ..Report::pass().with_message(format!("{count} jobs scheduled"))
        }
    })
}

/// The settings, or the message that names the bad one.
fn options() -> Result<Options, String> {
    let table = settings::text("table", DEFAULT_TABLE);
    if !valid_table_name(&table) {
        return Err(format!(
            "invalid setting table = '{table}' (expected a name like \
             apscheduler_jobs or schema.apscheduler_jobs)"
        ));
    }
    Ok(Options {
        datasource: settings::text("datasource", DEFAULT_DATASOURCE),
        table,
        grace: settings::seconds("grace", DEFAULT_GRACE_SECONDS)?,
        min_jobs: settings::count("min_jobs", 0)?,
        heartbeat: settings::get("heartbeat_job"),
    })
}

/// Counts the jobs and those whose next run is before `deadline`, and finds the
/// heartbeat job; an error names a row the check cannot read.
fn read_jobs(rows: &[Vec<Value>], deadline: f64, heartbeat: Option<&str>) -> Result<Jobs, String> {
    let mut jobs = Jobs {
        count: rows.len(),
        overdue: 0,
        beat: None,
    };
    for row in rows {
        let next = row
            .first()
            .map(next_run_time)
            .ok_or("query returned no column")?
            .map_err(|kind| format!("unexpected next_run_time value of type {kind}"))?;
        if let Some(id) = heartbeat
            && matches!(row.get(1), Some(Value::Text(found)) if found == id)
        {
            jobs.beat = Some(next);
        }
        // A paused job (NULL) is never overdue.
        if next.is_some_and(|next_run| next_run < deadline) {
            jobs.overdue += 1;
        }
    }
    Ok(jobs)
}

/// Why the heartbeat job says the scheduler is not running, if it does.
fn stopped(
    heartbeat: Option<&str>,
    beat: Option<Option<f64>>,
    deadline: f64,
    now: f64,
) -> Option<String> {
    let id = heartbeat?;
    match beat {
        None => Some(format!("no heartbeat job '{id}' in the job store")),
        Some(None) => Some(format!("heartbeat job '{id}' is paused")),
        Some(Some(next_run)) if next_run < deadline => Some(format!(
            "heartbeat job '{id}' is {:.0} s overdue",
            now - next_run
        )),
        Some(Some(_)) => None,
    }
}

/// `next_run_time` as epoch seconds, `None` for a paused job, or the name of an
/// unexpected type. Some drivers hand numeric columns over as text.
fn next_run_time(value: &Value) -> Result<Option<f64>, &'static str> {
    match value {
        Value::Null => Ok(None),
        Value::Real(seconds) => Ok(Some(*seconds)),
        Value::Integer(seconds) => Ok(Some(*seconds as f64)),
        Value::Text(text) => text.trim().parse().map(Some).map_err(|_| "text"),
        Value::Boolean(_) => Err("boolean"),
        Value::Blob(_) => Err("blob"),
    }
}

/// Whether `name` is `[A-Za-z_][A-Za-z0-9_]*`, optionally qualified as `schema.table`.
fn valid_table_name(name: &str) -> bool {
    let identifier = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match name.split_once('.') {
        Some((schema, table)) => identifier(schema) && identifier(table),
        None => identifier(name),
    }
}

/// The short message for a failed query.
fn error_message(error: Error) -> String {
    match error {
        Error::Database(message) if missing_table(&message) => {
            "scheduler job store not found".into()
        }
        other => describe_sql(other),
    }
}

/// Whether a driver message says the table does not exist (SQLite, PostgreSQL, MySQL).
fn missing_table(message: &str) -> bool {
    let message = message.to_lowercase();
    ["no such table", "does not exist", "doesn't exist"]
        .iter()
        .any(|phrase| message.contains(phrase))
}

/// A failing report with `message` and the samples measured so far.
fn fail(message: String, samples: Vec<Sample>) -> Report {
    Report {
        samples,
        ..Report::fail(message)
    }
}

healthhost_plugin::export_check!(Scheduler);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for good in [
            "apscheduler_jobs",
            "_jobs",
            "Jobs2",
            "public.apscheduler_jobs",
        ] {
            assert!(valid_table_name(good), "{good}");
        }
        for bad in [
            "",
            "2jobs",
            "jobs;drop",
            "a.b.c",
            ".jobs",
            "jobs.",
            "job s",
            "\"jobs\"",
        ] {
            assert!(!valid_table_name(bad), "{bad}");
        }
    }

    #[test]
    fn missing_table_messages() {
        assert!(missing_table("no such table: apscheduler_jobs"));
        assert!(missing_table(
            r#"relation "apscheduler_jobs" does not exist"#
        ));
        assert!(missing_table("Table 'app.apscheduler_jobs' doesn't exist"));
        assert!(!missing_table("connection refused"));
    }

    #[test]
    fn next_run_times() {
        assert_eq!(next_run_time(&Value::Null), Ok(None));
        assert_eq!(next_run_time(&Value::Real(1.5)), Ok(Some(1.5)));
        assert_eq!(next_run_time(&Value::Integer(2)), Ok(Some(2.0)));
        assert_eq!(next_run_time(&Value::Text("3.25".into())), Ok(Some(3.25)));
        assert_eq!(next_run_time(&Value::Blob(vec![1])), Err("blob"));
    }
}
