//! Test guest `misbehave`: one configurable plugin for the host's tests. Before
//! anything else, settings `print_log`, `print_stdout` and `print_stderr`, when set,
//! are logged at info / written to stdout / written to stderr exactly as they are.
//! Then the setting `mode` picks what `check` does (default `pass`):
//!
//! - `pass` | `warn` | `fail`: that status, message from setting `message`, and
//!   one sample `misbehave_value{kind="test"} 1`.
//! - `samples`: pass, message from setting `message`, and the samples setting
//!   `samples` describes: `;`-separated `NAME`, `NAME{K=V,K=V}`, each optionally
//!   followed by `=VALUE` (default 1; `NaN`, `inf` parse). Each is reported
//!   setting `repeat` times (default 1; with a label `n` = 0, 1, ... when more than
//!   once), with setting `label_count` extra labels `l0`, `l1`, ... = `v`, and, when
//!   setting `value_bytes` is set, a label `big` of that many `x`.
//! - `spin`: burns CPU forever (fuel / epoch limits).
//! - `alloc`: allocates 1 MiB blocks forever (memory limit).
//! - `sleep`: sleeps an hour inside a WASI call (wall-clock limit).
//! - `panic`: panics with setting `message` (default `misbehave: deliberate
//!   panic`): a trap.
//! - `stdout`: writes setting `bytes` (default 8 MiB) to stdout, a line to stderr.
//! - `log`: logs setting `count` (default 100000) 100-byte lines (log cap).
//! - `secret`: puts setting `token` in its message and a warn log (scrubbing).
//! - `http`: sends setting `method` (default GET) to setting `url`, optional
//!   `timeout_ms` and `header` (`Name: value`); reports the outcome in the message,
//!   and fails when setting `expect_status` is set and the status differs.
//! - `sql`: runs setting `statement` on setting `datasource` (default `main`)
//!   with the comma-separated setting `params`; reports the outcome.
//! - `config`: reports the value of the setting named by setting `key`.
//!
//! Messages of `http` and `sql` are machine-readable (`status:200 body:5`,
//! `denied:<origin>`, `rows:1 first:1`, ...) so tests can compare them exactly.

wit_bindgen::generate!({ world: "check", path: "../../../wit" });

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use healthhost::plugin::log::{self, Level};
use healthhost::plugin::types::{Sample, Status};
use healthhost::plugin::{config, http, sql};

struct Misbehave;

impl Guest for Misbehave {
    fn check() -> Report {
        print_settings();
        let mode = config::get("mode").unwrap_or_else(|| "pass".into());
        let result = match mode.as_str() {
            "pass" => Ok(verdict(Status::Pass)),
            "warn" => Ok(verdict(Status::Warn)),
            "fail" => Ok(verdict(Status::Fail)),
            "samples" => samples(),
            "spin" => spin(),
            "alloc" => alloc(),
            "sleep" => sleep(),
            "panic" => panic!(
                "{}",
                config::get("message").unwrap_or_else(|| "misbehave: deliberate panic".into())
            ),
            "stdout" => stdout(),
            "log" => log_lines(),
            "secret" => Ok(secret()),
            "http" => http_request(),
            "sql" => sql_query(),
            "config" => config_value(),
            other => Err(format!("unknown mode {other}")),
        };
        result.unwrap_or_else(|message| report(Status::Fail, Some(message)))
    }
}

/// Settings `print_log`, `print_stdout`, `print_stderr`: logged at info, written to
/// stdout, written to stderr, exactly as they are.
fn print_settings() {
    if let Some(line) = config::get("print_log") {
        log::log(Level::Info, &line);
    }
    if let Some(text) = config::get("print_stdout") {
        let _ = std::io::stdout().write_all(text.as_bytes());
        let _ = std::io::stdout().flush();
    }
    if let Some(text) = config::get("print_stderr") {
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
}

/// `samples`: pass with the samples settings `samples`, `repeat`, `label_count` and
/// `value_bytes` describe (see the module header).
fn samples() -> Result<Report, String> {
    let repeat: usize = setting_or("repeat", 1)?;
    let label_count: usize = setting_or("label_count", 0)?;
    let value_bytes: Option<usize> = optional_setting("value_bytes")?;
    let mut samples = Vec::new();
    let specs = config::get("samples").unwrap_or_default();
    for spec in specs.split(';').filter(|spec| !spec.is_empty()) {
        let (name, mut labels, value) = parse_sample(spec)?;
        labels.extend((0..label_count).map(|i| (format!("l{i}"), "v".to_owned())));
        if let Some(n) = value_bytes {
            labels.push(("big".into(), "x".repeat(n)));
        }
        for n in 0..repeat {
            let mut labels = labels.clone();
            if repeat > 1 {
                labels.push(("n".into(), n.to_string()));
            }
            samples.push(Sample {
                name: name.clone(),
                labels,
                value,
            });
        }
    }
    Ok(Report {
        status: Status::Pass,
        message: config::get("message"),
        samples,
    })
}

/// One sample of setting `samples`: `NAME`, `NAME{K=V,...}`, then optionally `=VALUE`.
/// A sample as `samples` spells it: name, labels, value.
type SampleSpec = (String, Vec<(String, String)>, f64);

fn parse_sample(spec: &str) -> Result<SampleSpec, String> {
    let (head, value) = match spec.rfind('}') {
        Some(close) => (&spec[..=close], spec[close + 1..].strip_prefix('=')),
        None => match spec.split_once('=') {
            Some((head, value)) => (head, Some(value)),
            None => (spec, None),
        },
    };
    let value = match value {
        Some(v) => v
            .parse()
            .map_err(|_| format!("invalid sample value in '{spec}'"))?,
        None => 1.0,
    };
    let Some((name, labels)) = head.split_once('{') else {
        return Ok((head.to_owned(), Vec::new(), value));
    };
    let labels = labels
        .strip_suffix('}')
        .unwrap_or(labels)
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    Ok((name.to_owned(), labels, value))
}

/// `pass` | `warn` | `fail`: the status, setting `message`, and one labelled sample.
fn verdict(status: Status) -> Report {
    Report {
        status,
        message: config::get("message"),
        samples: vec![Sample {
            name: "misbehave_value".into(),
            labels: vec![("kind".into(), "test".into())],
            value: 1.0,
        }],
    }
}

/// `spin`: loops forever; `black_box` keeps the optimiser from removing the loop.
fn spin() -> ! {
    let mut counter = 0_u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// `alloc`: keeps 1 MiB blocks forever. They are filled with a non-zero byte so
/// every page is written, not just reserved.
fn alloc() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xa5; 1 << 20]);
        black_box(&hoard);
    }
}

/// `sleep`: blocks an hour inside a WASI host call.
fn sleep() -> Result<Report, String> {
    std::thread::sleep(Duration::from_secs(3600));
    Ok(report(Status::Pass, Some("slept".into())))
}

/// `stdout`: setting `bytes` (default 8 MiB) of `x` in 64 KiB writes, then one
/// line to stderr. A write the host refuses ends the run with a fail report.
fn stdout() -> Result<Report, String> {
    const CHUNK: usize = 64 * 1024;
    let bytes: usize = setting_or("bytes", 8 * 1024 * 1024)?;
    let chunk = [b'x'; CHUNK];
    let mut out = std::io::stdout().lock();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        out.write_all(&chunk[..n])
            .map_err(|e| format!("stdout: {e}"))?;
        left -= n;
    }
    out.flush().map_err(|e| format!("stdout: {e}"))?;
    writeln!(std::io::stderr(), "stderr line").map_err(|e| format!("stderr: {e}"))?;
    Ok(report(Status::Pass, Some("printed".into())))
}

/// `log`: setting `count` (default 100000) info lines of exactly 100 bytes.
fn log_lines() -> Result<Report, String> {
    let count: u64 = setting_or("count", 100_000)?;
    for i in 0..count {
        let line = format!("misbehave log line {i:>10} {}", ".".repeat(70));
        debug_assert_eq!(line.len(), 100);
        log::log(Level::Info, &line);
    }
    Ok(report(Status::Pass, Some("logged".into())))
}

/// `secret`: leaks setting `token` into its message and a warn log line; the
/// host must scrub both.
fn secret() -> Report {
    let token = config::get("token").unwrap_or_default();
    let message = format!("token is {token}");
    log::log(Level::Warn, &message);
    report(Status::Fail, Some(message))
}

/// `http`: one request; the outcome as `status:<code> body:<len>` (pass) or
/// `denied:<origin>` | `timeout` | `too-large:<n>` | `transport:<msg>` |
/// `invalid:<msg>` (fail).
fn http_request() -> Result<Report, String> {
    let headers = config::get("header")
        .map(|header| match header.split_once(':') {
            Some((name, value)) => (name.trim().to_owned(), value.trim().to_owned()),
            None => (header, String::new()),
        })
        .into_iter()
        .collect();
    let request = http::Request {
        method: config::get("method").unwrap_or_else(|| "GET".into()),
        url: required("url")?,
        headers,
        body: None,
        timeout_ms: optional_setting("timeout_ms")?,
    };
    let expected: Option<u16> = optional_setting("expect_status")?;
    Ok(match http::send(&request) {
        Ok(response) => report(
            match expected {
                Some(status) if status != response.status => Status::Fail,
                _ => Status::Pass,
            },
            Some(format!(
                "status:{} body:{}",
                response.status,
                response.body.len()
            )),
        ),
        Err(error) => report(
            Status::Fail,
            Some(match error {
                http::Error::Denied(origin) => format!("denied:{origin}"),
                http::Error::Timeout => "timeout".into(),
                http::Error::TooLarge(cap) => format!("too-large:{cap}"),
                http::Error::Transport(message) => format!("transport:{message}"),
                http::Error::Invalid(message) => format!("invalid:{message}"),
            }),
        ),
    })
}

/// `sql`: one query; the outcome as `rows:<n>[ first:<v>]` (pass) or
/// `denied:<name>` | `not-configured:<name>` | `timeout` | `too-large:<n>` |
/// `database:<msg>` (fail). Each of setting `params` (comma-separated) is an
/// integer if it parses as one, else text.
fn sql_query() -> Result<Report, String> {
    let datasource = config::get("datasource").unwrap_or_else(|| "main".into());
    let statement = required("statement")?;
    let params: Vec<sql::Value> = config::get("params")
        .filter(|params| !params.is_empty())
        .map(|params| {
            params
                .split(',')
                .map(|param| match param.parse::<i64>() {
                    Ok(integer) => sql::Value::Integer(integer),
                    Err(_) => sql::Value::Text(param.into()),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(match sql::query(&datasource, &statement, &params) {
        Ok(rows) => {
            let mut message = format!("rows:{}", rows.rows.len());
            if let Some(first) = rows.rows.first().and_then(|row| row.first()) {
                message.push_str(&format!(" first:{}", render(first)));
            }
            report(Status::Pass, Some(message))
        }
        Err(error) => report(
            Status::Fail,
            Some(match error {
                sql::Error::Denied(name) => format!("denied:{name}"),
                sql::Error::NotConfigured(name) => format!("not-configured:{name}"),
                sql::Error::Timeout => "timeout".into(),
                sql::Error::TooLarge(cap) => format!("too-large:{cap}"),
                sql::Error::Database(message) => format!("database:{message}"),
            }),
        ),
    })
}

/// A SQL value as the `sql` mode's message shows it.
fn render(value: &sql::Value) -> String {
    match value {
        sql::Value::Null => "null".into(),
        sql::Value::Boolean(b) => b.to_string(),
        sql::Value::Integer(i) => i.to_string(),
        sql::Value::Real(r) => r.to_string(),
        sql::Value::Text(text) => text.clone(),
        sql::Value::Blob(blob) => format!("blob({})", blob.len()),
    }
}

/// `config`: the value of the setting named by setting `key`, or `unset`.
fn config_value() -> Result<Report, String> {
    let key = required("key")?;
    let value = config::get(&key).unwrap_or_else(|| "unset".into());
    Ok(report(Status::Pass, Some(value)))
}

/// A setting that must be present.
fn required(key: &str) -> Result<String, String> {
    config::get(key).ok_or_else(|| format!("missing setting {key}"))
}

/// A parsed setting, or `None` when absent; a bad value names the key.
fn optional_setting<T: std::str::FromStr>(key: &str) -> Result<Option<T>, String> {
    config::get(key)
        .map(|raw| {
            raw.trim()
                .parse()
                .map_err(|_| format!("invalid setting {key} = '{raw}'"))
        })
        .transpose()
}

/// A parsed setting with a default; a bad value names the key.
fn setting_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, String> {
    Ok(optional_setting(key)?.unwrap_or(default))
}

fn report(status: Status, message: Option<String>) -> Report {
    Report {
        status,
        message,
        samples: Vec::new(),
    }
}

// The export glue wit-bindgen generates declares `unsafe` exported symbols: the
// only unsafe code in this crate, allowed here and nowhere else.
#[allow(unsafe_code)]
mod export {
    use super::Misbehave;
    super::export!(Misbehave with_types_in super);
}
