//! Canned answers for `healthhost check`: HTTP responses by method and URL, SQL results
//! by datasource and statement, so that a plugin author can see pass, warn and fail
//! offline and the same way every time.
//!
//! Fixtures replace the network and the databases, not the grants or the limits: a
//! request to an origin the check was not granted is still `denied`, a fixture's
//! `delay` counts against the call's and the run's time (past it, a `timeout`), and the
//! size caps apply. A call that matches no fixture is refused with a message that
//! lists the fixtures, so a typo in a URL or a statement is plain to see.
//!
//! The file (`--fixtures FILE`) is TOML:
//!
//! ```toml
//! [[http]]
//! method = "GET"                    # default GET
//! url = "http://127.0.0.1:8080/status"
//! status = 200                      # default 200
//! headers = { "content-type" = "application/json" }
//! body = '{"status": "ok"}'         # default empty
//! delay = "800ms"                   # default none
//!
//! [[sql]]
//! datasource = "main"
//! statement = "SELECT count(*) FROM jobs"   # whitespace-insensitive
//! columns = ["count"]
//! rows = [[3]]                      # a value per column; {} is NULL
//! # error = "no such table: jobs"   # instead of columns and rows
//! ```
//!
//! Quick cases come as flags, in the same terms: `--respond '[METHOD] URL -> STATUS
//! [BODY]'` and `--sql 'DATASOURCE: STATEMENT -> ROWS'` (ROWS a JSON array of rows, or
//! `error: TEXT`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use super::bindings::healthhost::plugin::{http, sql};
use crate::limits::{HTTP_MAX_RESPONSE_BYTES, SQL_MAX_ROWS};
use crate::problems::{FileError, Problem, Problems, parse_toml};
use crate::units;

/// Why fixtures could not be used: a file (see [`FileError`]), or a flag.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("invalid {flag} '{input}': {reason} (expected e.g. {example})")]
    Flag {
        flag: &'static str,
        input: String,
        reason: String,
        example: &'static str,
    },
}

/// Every canned answer of one `check` run.
#[derive(Debug, Clone, Default)]
pub struct Fixtures {
    http: Vec<HttpFixture>,
    sql: Vec<SqlFixture>,
}

#[derive(Debug, Clone)]
struct HttpFixture {
    method: String,
    url: Url,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
}

#[derive(Debug, Clone)]
struct SqlFixture {
    datasource: String,
    /// The statement with runs of whitespace as one space, trimmed.
    statement: String,
    answer: Result<sql::Rows, String>,
    delay: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixtures {
    #[serde(default)]
    http: Vec<RawHttp>,
    #[serde(default)]
    sql: Vec<RawSql>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    method: Option<String>,
    url: Spanned<String>,
    status: Option<Spanned<u16>>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    delay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSql {
    datasource: String,
    statement: String,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    rows: Vec<Spanned<Vec<toml::Value>>>,
    error: Option<String>,
    delay: Option<Spanned<String>>,
}

/// A statement as it is matched: whitespace runs as one space, trimmed.
fn normalize_statement(statement: &str) -> String {
    statement.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Fixtures {
    /// Reads a fixtures file.
    pub fn load(path: &std::path::Path) -> Result<Fixtures, FixtureError> {
        Ok(crate::problems::load("fixtures", path, Fixtures::parse)?)
    }

    /// Parses the text of a fixtures file; every problem is reported, located.
    pub fn parse(text: &str) -> Result<Fixtures, Vec<Problem>> {
        let raw: RawFixtures = parse_toml(text)?;
        let mut problems = Problems {
            source: text,
            list: Vec::new(),
        };
        let delay = |d: &Option<Spanned<String>>, key: String, problems: &mut Problems| {
            d.as_ref().map_or(Duration::ZERO, |d| {
                units::parse_duration(d.get_ref()).unwrap_or_else(|e| {
                    problems.add(d.span(), key, e);
                    Duration::ZERO
                })
            })
        };
        let mut fixtures = Fixtures::default();
        for (i, h) in raw.http.into_iter().enumerate() {
            let key = |field: &str| format!("http[{i}].{field}");
            let url = Url::parse(h.url.get_ref()).unwrap_or_else(|e| {
                problems.add(h.url.span(), key("url"), format!("not a URL: {e}"));
                Url::parse("http://invalid.invalid/").expect("a valid URL")
            });
            let status = h.status.as_ref().map_or(200, |s| *s.get_ref());
            if let Some(s) = &h.status
                && !(100..=999).contains(s.get_ref())
            {
                problems.add(s.span(), key("status"), "an HTTP status is 100 to 999");
            }
            fixtures.http.push(HttpFixture {
                method: h
                    .method
                    .unwrap_or_else(|| "GET".into())
                    .to_ascii_uppercase(),
                url,
                status,
                headers: h.headers.into_iter().collect(),
                body: h.body.into_bytes(),
                delay: delay(&h.delay, key("delay"), &mut problems),
            });
        }
        for (i, s) in raw.sql.into_iter().enumerate() {
            let key = |field: &str| format!("sql[{i}].{field}");
            let answer = match s.error {
                Some(error) => Err(error),
                None => {
                    let mut rows = Vec::new();
                    for row in &s.rows {
                        if row.get_ref().len() != s.columns.len() {
                            problems.add(
                                row.span(),
                                key("rows"),
                                format!(
                                    "a row has {} value(s) but there are {} column(s)",
                                    row.get_ref().len(),
                                    s.columns.len()
                                ),
                            );
                        }
                        let values = row.get_ref().iter().map(toml_value);
                        match values.collect::<Result<Vec<_>, _>>() {
                            Ok(values) => rows.push(values),
                            Err(e) => problems.add(row.span(), key("rows"), e),
                        }
                    }
                    Ok(sql::Rows {
                        columns: s.columns,
                        rows,
                    })
                }
            };
            fixtures.sql.push(SqlFixture {
                datasource: s.datasource,
                statement: normalize_statement(&s.statement),
                answer,
                delay: delay(&s.delay, key("delay"), &mut problems),
            });
        }
        problems.finish().map(|()| fixtures)
    }

    /// Adds the fixtures of `other` after these (earlier ones match first).
    pub fn extend(&mut self, other: Fixtures) {
        self.http.extend(other.http);
        self.sql.extend(other.sql);
    }

    /// Parses `--respond '[METHOD] URL -> STATUS [BODY]'`.
    pub fn respond_flag(input: &str) -> Result<Fixtures, FixtureError> {
        let error = |reason: &str| FixtureError::Flag {
            flag: "--respond",
            input: input.to_owned(),
            reason: reason.to_owned(),
            example: "'GET http://127.0.0.1:8080/status -> 200 {\"status\":\"ok\"}'",
        };
        let (request, answer) = input.split_once("->").ok_or_else(|| error("no '->'"))?;
        let mut words = request.split_whitespace();
        let (method, url) = match (words.next(), words.next(), words.next()) {
            (Some(url), None, _) => ("GET", url),
            (Some(method), Some(url), None) => (method, url),
            _ => return Err(error("expected [METHOD] URL before '->'")),
        };
        let url = Url::parse(url).map_err(|e| error(&format!("not a URL: {e}")))?;
        let answer = answer.trim_start();
        let (status, body) = answer.split_once(' ').unwrap_or((answer, ""));
        let status: u16 = status
            .parse()
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| error("expected an HTTP status after '->'"))?;
        Ok(Fixtures {
            http: vec![HttpFixture {
                method: method.to_ascii_uppercase(),
                url,
                status,
                headers: Vec::new(),
                body: body.trim().as_bytes().to_vec(),
                delay: Duration::ZERO,
            }],
            sql: Vec::new(),
        })
    }

    /// Parses `--sql 'DATASOURCE: STATEMENT -> ROWS'`: ROWS a JSON array of rows
    /// (columns `column1`, `column2`, …) or `error: TEXT`.
    pub fn sql_flag(input: &str) -> Result<Fixtures, FixtureError> {
        let error = |reason: &str| FixtureError::Flag {
            flag: "--sql",
            input: input.to_owned(),
            reason: reason.to_owned(),
            example: "'main: SELECT count(*) FROM jobs -> [[3]]' or 'main: SELECT 1 -> error: no such table'",
        };
        let (call, answer) = input.rsplit_once("->").ok_or_else(|| error("no '->'"))?;
        let (datasource, statement) = call
            .split_once(':')
            .ok_or_else(|| error("expected DATASOURCE: before the statement"))?;
        let answer = answer.trim();
        let answer = match answer.strip_prefix("error:") {
            Some(text) => Err(text.trim().to_owned()),
            None => {
                let rows: Vec<Vec<serde_json::Value>> = serde_json::from_str(answer)
                    .map_err(|e| error(&format!("ROWS is not a JSON array of arrays: {e}")))?;
                let width = rows.first().map_or(0, Vec::len);
                if rows.iter().any(|r| r.len() != width) {
                    return Err(error("every row needs the same number of values"));
                }
                let rows = rows
                    .iter()
                    .map(|r| r.iter().map(json_value).collect::<Result<Vec<_>, _>>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| error(&e))?;
                Ok(sql::Rows {
                    columns: (1..=width).map(|i| format!("column{i}")).collect(),
                    rows,
                })
            }
        };
        Ok(Fixtures {
            http: Vec::new(),
            sql: vec![SqlFixture {
                datasource: datasource.trim().to_owned(),
                statement: normalize_statement(statement),
                answer,
                delay: Duration::ZERO,
            }],
        })
    }

    /// The canned answer to `method url`, after its delay; a refusal naming every
    /// HTTP fixture when none matches.
    pub async fn http(&self, method: &str, url: &Url) -> Result<http::Response, Miss<http::Error>> {
        let Some(f) = self
            .http
            .iter()
            .find(|f| f.method == method && &f.url == url)
        else {
            let known = self.http.iter().map(|f| format!("{} {}", f.method, f.url));
            return Err(Miss::new(format!("{method} {url}"), known));
        };
        tokio::time::sleep(f.delay).await;
        if f.body.len() as u64 > HTTP_MAX_RESPONSE_BYTES {
            return Err(Miss::Answer(http::Error::TooLarge(HTTP_MAX_RESPONSE_BYTES)));
        }
        Ok(http::Response {
            status: f.status,
            headers: f.headers.clone(),
            body: f.body.clone(),
        })
    }

    /// The canned result of `statement` on `datasource`, after its delay; a refusal
    /// naming every SQL fixture when none matches.
    pub async fn sql(
        &self,
        datasource: &str,
        statement: &str,
    ) -> Result<sql::Rows, Miss<sql::Error>> {
        let statement = normalize_statement(statement);
        let Some(f) = self
            .sql
            .iter()
            .find(|f| f.datasource == datasource && f.statement == statement)
        else {
            let known = self
                .sql
                .iter()
                .map(|f| format!("{}: {}", f.datasource, f.statement));
            return Err(Miss::new(format!("{datasource}: {statement}"), known));
        };
        tokio::time::sleep(f.delay).await;
        match &f.answer {
            Ok(rows) if rows.rows.len() as u64 > SQL_MAX_ROWS => {
                Err(Miss::Answer(sql::Error::TooLarge(SQL_MAX_ROWS)))
            }
            Ok(rows) => Ok(rows.clone()),
            Err(text) => Err(Miss::Answer(sql::Error::Database(text.clone()))),
        }
    }
}

/// A call fixtures did not answer with a result.
#[derive(Debug)]
pub enum Miss<E> {
    /// No fixture matches; the text names the call and lists the fixtures.
    NoFixture(String),
    /// The fixture's answer is an error (a SQL error, a cap).
    Answer(E),
}

impl<E> Miss<E> {
    fn new(call: String, known: impl Iterator<Item = String>) -> Miss<E> {
        let known: Vec<String> = known.collect();
        let list = if known.is_empty() {
            "there are none".to_owned()
        } else {
            format!("the fixtures are: {}", known.join("; "))
        };
        Miss::NoFixture(format!("no fixture answers {call}; {list}"))
    }
}

/// A SQL value from a fixture file: an integer, float, string or boolean; `{}` is NULL.
fn toml_value(value: &toml::Value) -> Result<sql::Value, String> {
    Ok(match value {
        toml::Value::Integer(i) => sql::Value::Integer(*i),
        toml::Value::Float(f) => sql::Value::Real(*f),
        toml::Value::String(s) => sql::Value::Text(s.clone()),
        toml::Value::Boolean(b) => sql::Value::Boolean(*b),
        toml::Value::Table(t) if t.is_empty() => sql::Value::Null,
        other => {
            return Err(format!(
                "unsupported value {other}: use a number, string, boolean or {{}} for NULL"
            ));
        }
    })
}

/// A SQL value from a `--sql` flag: JSON null, number, string or boolean.
fn json_value(value: &serde_json::Value) -> Result<sql::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => sql::Value::Null,
        J::Bool(b) => sql::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => sql::Value::Integer(i),
            None => sql::Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => sql::Value::Text(s.clone()),
        other => {
            return Err(format!(
                "unsupported value {other}: use null, a number, a string or a boolean"
            ));
        }
    })
}
