//! The `usage` report: calls, errors, tokens, cost and mean latency from the `ai_usage`
//! table over a recent window, grouped by operation, model, day or user, with totals, active users
//! (distinct non-null `user_id`) and cost per active user — the bot's unit economics.
//! Queries, JSON and the aligned table for people.
//!
//! The window is measured with the database's own clock, the one that set
//! `created_at`; days are the database's dates (UTC for SQLite).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type,
};

use crate::dbpool::DbPool;
use crate::usage::{StoreError, UsageStore};

/// The window when `--since` is not given.
pub const DEFAULT_SINCE: &str = "7d";
/// The longest window: beyond a century the databases' date arithmetic overflows (and
/// no AI usage is that old).
pub const MAX_SINCE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What the report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Operation,
    Model,
    Day,
    User,
}

impl By {
    /// Its name, as the flag spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            By::Operation => "operation",
            By::Model => "model",
            By::Day => "day",
            By::User => "user",
        }
    }
}

/// Parses `--since`: a positive duration of at most [`MAX_SINCE`].
pub fn parse_since(input: &str) -> Result<Duration, String> {
    let since = crate::units::parse_duration(input).map_err(|e| e.to_string())?;
    if since.is_zero() || since > MAX_SINCE {
        return Err(format!(
            "'{input}' is outside the window a report can cover (more than 0, at most 100 years)"
        ));
    }
    Ok(since)
}

/// The sums of a group of rows (or of all of them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sums {
    pub calls: i64,
    /// Rows with `status = 'error'`.
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_dollars: f64,
    /// Distinct non-null `user_id`s.
    pub active_users: i64,
    /// The mean of the non-null `latency_ms`; `None` when no row has one.
    pub mean_latency_ms: Option<f64>,
}

impl Sums {
    /// Cost divided by active users; `None` without active users.
    pub fn cost_per_active_user(&self) -> Option<f64> {
        (self.active_users > 0).then(|| self.cost_dollars / self.active_users as f64)
    }

    fn doc(&self) -> SumsDoc<'_> {
        SumsDoc {
            sums: self,
            cost_per_active_user: self.cost_per_active_user(),
        }
    }
}

/// [`Sums`] as JSON, with the cost per active user.
#[derive(Serialize)]
struct SumsDoc<'a> {
    #[serde(flatten)]
    sums: &'a Sums,
    cost_per_active_user: Option<f64>,
}

/// One group of `healthhost usage --json`: its key and sums.
#[derive(Serialize)]
struct GroupDoc<'a> {
    key: Option<&'a str>,
    #[serde(flatten)]
    sums: SumsDoc<'a>,
}

/// The whole of `healthhost usage --json`.
#[derive(Serialize)]
struct ReportDoc<'a> {
    by: &'static str,
    since: String,
    since_seconds: u64,
    groups: Vec<GroupDoc<'a>>,
    total: SumsDoc<'a>,
}

/// The report: one line per group (`None` stands for a NULL operation, model or user),
/// and the totals over the whole window.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub by: By,
    pub since: Duration,
    pub groups: Vec<(Option<String>, Sums)>,
    pub total: Sums,
}

/// Reads the report from the store.
pub async fn report(store: &UsageStore, by: By, since: Duration) -> Result<Report, StoreError> {
    let seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let status = store.columns().await?.status;
    let (groups, total) = match store.pool() {
        DbPool::Sqlite(pool) => run(pool, &SQLITE, by, seconds, status).await?,
        DbPool::Postgres(pool) => run(pool, &POSTGRES, by, seconds, status).await?,
        DbPool::MySql(pool) => run(pool, &MYSQL, by, seconds, status).await?,
    };
    Ok(Report {
        by,
        since,
        groups,
        total,
    })
}

/// The SQL that differs between databases.
struct Dialect {
    /// `created_at` within the last `$1`/`?` seconds.
    window: &'static str,
    /// `created_at`'s date as `YYYY-MM-DD`.
    day: &'static str,
    /// `user_id` as text.
    user: &'static str,
    /// Wraps an integer aggregate so that it decodes as a 64-bit integer (MySQL's
    /// `SUM` of integers is a `DECIMAL`).
    integer: (&'static str, &'static str),
    /// Wraps an aggregate so that it decodes as a double (`AVG` of integers is a
    /// `NUMERIC` in PostgreSQL, a `DECIMAL` in MySQL).
    float: (&'static str, &'static str),
}

const SQLITE: Dialect = Dialect {
    window: "created_at >= datetime('now', '-' || ? || ' seconds')",
    day: "strftime('%Y-%m-%d', created_at)",
    user: "CAST(user_id AS TEXT)",
    integer: ("", ""),
    float: ("", ""),
};
const POSTGRES: Dialect = Dialect {
    window: "created_at >= LOCALTIMESTAMP - make_interval(secs => $1)",
    day: "to_char(created_at, 'YYYY-MM-DD')",
    user: "CAST(user_id AS TEXT)",
    integer: ("", ""),
    float: ("CAST(", " AS DOUBLE PRECISION)"),
};
const MYSQL: Dialect = Dialect {
    window: "created_at >= NOW() - INTERVAL ? SECOND",
    day: "DATE_FORMAT(created_at, '%Y-%m-%d')",
    user: "CAST(user_id AS CHAR)",
    integer: ("CAST(", " AS SIGNED)"),
    float: ("CAST(", " AS DOUBLE)"),
};

impl Dialect {
    /// The aggregates (columns 0–7), then the group key (column 8) when grouped.
    /// Without a `status` column no row counts as an error.
    fn sql(&self, by: Option<By>, status: bool) -> String {
        let int = |expr: &str| format!("{}{expr}{}", self.integer.0, self.integer.1);
        let aggregates = [
            "COUNT(*)".to_owned(),
            if status {
                int("COALESCE(SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), 0)")
            } else {
                int("COUNT(*) * 0")
            },
            int("COALESCE(SUM(prompt_tokens), 0)"),
            int("COALESCE(SUM(completion_tokens), 0)"),
            int("COALESCE(SUM(total_tokens), 0)"),
            "COALESCE(SUM(cost_dollars), 0.0)".to_owned(),
            "COUNT(DISTINCT user_id)".to_owned(),
            format!("{}AVG(latency_ms){}", self.float.0, self.float.1),
        ]
        .join(", ");
        let from = format!("FROM ai_usage WHERE {}", self.window);
        let Some(by) = by else {
            return format!("SELECT {aggregates} {from}");
        };
        let key = match by {
            By::Operation => "operation",
            By::Model => "model",
            By::Day => self.day,
            By::User => self.user,
        };
        // Days in time order; everything else most expensive first.
        let order = match by {
            By::Day => "9",
            _ => "6 DESC, 9",
        };
        format!("SELECT {aggregates}, {key} {from} GROUP BY {key} ORDER BY {order}")
    }
}

/// Runs the grouped query and the totals query.
async fn run<DB>(
    pool: &Pool<DB>,
    dialect: &Dialect,
    by: By,
    seconds: i64,
    status: bool,
) -> Result<(Vec<(Option<String>, Sums)>, Sums), sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB> + Decode<'t, DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let grouped = sqlx::query(AssertSqlSafe(dialect.sql(Some(by), status)))
        .bind(seconds)
        .fetch_all(pool)
        .await?;
    let groups = grouped
        .iter()
        .map(|row| Ok((row.try_get::<Option<String>, _>(8)?, sums(row)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let total = sqlx::query(AssertSqlSafe(dialect.sql(None, status)))
        .bind(seconds)
        .fetch_one(pool)
        .await?;
    Ok((groups, sums(&total)?))
}

fn sums<R: Row>(row: &R) -> Result<Sums, sqlx::Error>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    usize: ColumnIndex<R>,
{
    Ok(Sums {
        calls: row.try_get(0)?,
        errors: row.try_get(1)?,
        prompt_tokens: row.try_get(2)?,
        completion_tokens: row.try_get(3)?,
        total_tokens: row.try_get(4)?,
        cost_dollars: row.try_get(5)?,
        active_users: row.try_get(6)?,
        mean_latency_ms: row.try_get(7)?,
    })
}

/// Where a NULL group key (a row without operation, model or user) shows.
pub const NONE_KEY: &str = "(none)";

impl Report {
    /// `{"by", "since", "since_seconds", "groups": [{"key", ...sums}], "total": {...}}`.
    /// Keys are sorted, as `serde_json::Value` keeps them.
    pub fn to_json(&self) -> Value {
        let doc = ReportDoc {
            by: self.by.as_str(),
            since: humantime::format_duration(self.since).to_string(),
            since_seconds: self.since.as_secs(),
            groups: self
                .groups
                .iter()
                .map(|(key, sums)| GroupDoc {
                    key: key.as_deref(),
                    sums: sums.doc(),
                })
                .collect(),
            total: self.total.doc(),
        };
        serde_json::to_value(doc).expect("numbers and strings serialize")
    }

    /// An aligned table (text left, numbers right) and a footer with the unit
    /// economics.
    pub fn to_table(&self) -> String {
        let header = [
            self.by.as_str(),
            "calls",
            "errors",
            "prompt tokens",
            "completion tokens",
            "cost $",
            "users",
            "$ per user",
            "mean ms",
        ];
        let cells = |key: &str, s: &Sums| -> [String; 9] {
            [
                key.to_owned(),
                s.calls.to_string(),
                s.errors.to_string(),
                s.prompt_tokens.to_string(),
                s.completion_tokens.to_string(),
                format!("{:.4}", s.cost_dollars),
                s.active_users.to_string(),
                s.cost_per_active_user()
                    .map_or("-".to_owned(), |c| format!("{c:.4}")),
                s.mean_latency_ms
                    .map_or("-".to_owned(), |ms| format!("{ms:.0}")),
            ]
        };
        let mut lines: Vec<[String; 9]> = vec![header.map(str::to_owned)];
        for (key, sums) in &self.groups {
            lines.push(cells(key.as_deref().unwrap_or(NONE_KEY), sums));
        }
        lines.push(cells("total", &self.total));
        let widths: Vec<usize> = (0..9)
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in &lines {
            let mut text = format!("{:<w$}", line[0], w = widths[0]);
            for (cell, w) in line.iter().zip(&widths).skip(1) {
                text.push_str(&format!("  {cell:>w$}"));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        let per_user = self
            .total
            .cost_per_active_user()
            .map_or("no active users".to_owned(), |c| {
                format!("${c:.4} per active user")
            });
        out.push_str(&format!(
            "last {}: {} calls, {} tokens, ${:.4}, {} active users, {per_user}\n",
            humantime::format_duration(self.since),
            self.total.calls,
            self.total.total_tokens,
            self.total.cost_dollars,
            self.total.active_users,
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(calls: i64, cost: f64, users: i64) -> Sums {
        Sums {
            calls,
            errors: 0,
            prompt_tokens: calls * 10,
            completion_tokens: calls * 20,
            total_tokens: calls * 30,
            cost_dollars: cost,
            active_users: users,
            mean_latency_ms: (calls > 1).then_some(1234.4),
        }
    }

    #[test]
    fn since_must_be_a_positive_bounded_duration() {
        assert_eq!(parse_since("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["0s", "soon", "200years"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_aligns_columns_and_ends_with_unit_economics() {
        let report = Report {
            by: By::Operation,
            since: Duration::from_secs(7 * 86_400),
            groups: vec![
                (Some("tarot".into()), sums(12, 1.5, 3)),
                (None, sums(1, 0.25, 0)),
            ],
            total: sums(13, 1.75, 2),
        };
        let table = report.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "operation  calls  errors  prompt tokens  completion tokens  cost $  users  $ per user  mean ms"
        );
        assert_eq!(
            lines[1],
            "tarot         12       0            120                240  1.5000      3      0.5000     1234"
        );
        assert_eq!(
            lines[2],
            "(none)         1       0             10                 20  0.2500      0           -        -"
        );
        assert_eq!(
            lines[4],
            "last 7days: 13 calls, 390 tokens, $1.7500, 2 active users, $0.8750 per active user"
        );
        let json = report.to_json();
        assert_eq!(json["groups"][0]["key"], "tarot");
        assert_eq!(json["groups"][1]["key"], Value::Null);
        assert_eq!(json["groups"][1]["cost_per_active_user"], Value::Null);
        assert_eq!(json["groups"][0]["mean_latency_ms"], 1234.4);
        assert_eq!(json["groups"][1]["mean_latency_ms"], Value::Null);
        assert_eq!(json["total"]["cost_per_active_user"], 0.875);
        assert_eq!(json["since_seconds"], 604_800);
    }

    #[test]
    fn grouped_sql_orders_days_by_time_and_the_rest_by_cost() {
        assert!(SQLITE.sql(Some(By::Day), true).ends_with("ORDER BY 9"));
        assert!(
            MYSQL
                .sql(Some(By::Model), true)
                .ends_with("GROUP BY model ORDER BY 6 DESC, 9")
        );
        assert!(!POSTGRES.sql(None, true).contains("GROUP BY"));
    }
}
