//! The usage summary of `GET /v1/usage/summary`: over one of three fixed ranges, the
//! totals (cost, tokens, requests, errors, error rate, mean latency, active users and
//! cost per active user), cost by operation and by day. The numbers are the
//! `healthhost usage` report's ([`report`]), so the API and the CLI agree; the
//! [`Reader`] holds the token that may read them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::auth::{Bearer, constant_time_eq};
use crate::usage::report::{By, Sums, report};
use crate::usage::{StoreError, UsageStore};

/// How long a summary may take before it is abandoned (503): its four queries scan a
/// month of rows at most, and a locked table or a hung server must not hold the
/// request forever.
pub const SUMMARY_TIMEOUT: Duration = Duration::from_secs(10);

/// The window a summary covers, measured with the database's clock as the report's
/// `--since` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Range {
    /// `24h`, the default.
    #[default]
    Day,
    /// `7d`.
    Week,
    /// `30d`.
    Month,
}

impl Range {
    pub const ALL: [Range; 3] = [Range::Day, Range::Week, Range::Month];

    /// Its name in the query string: `24h`, `7d` or `30d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
        }
    }

    /// The range named `name`, exactly as [`Range::as_str`] spells it.
    pub fn parse(name: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|r| r.as_str() == name)
    }

    pub fn duration(self) -> Duration {
        let days = match self {
            Range::Day => 1,
            Range::Week => 7,
            Range::Month => 30,
        };
        Duration::from_secs(days * 86_400)
    }
}

/// The summary's numbers: the totals, and the groups by operation (most expensive
/// first) and by day (oldest first; the database's dates, UTC for SQLite).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub range: Range,
    pub total: Sums,
    pub by_operation: Vec<(Option<String>, Sums)>,
    pub by_day: Vec<(Option<String>, Sums)>,
}

/// Reads the summary over `range` from the store.
pub async fn summary(store: &UsageStore, range: Range) -> Result<Summary, StoreError> {
    let by_operation = report(store, By::Operation, range.duration()).await?;
    let by_day = report(store, By::Day, range.duration()).await?;
    Ok(Summary {
        range,
        total: by_operation.total,
        by_operation: by_operation.groups,
        by_day: by_day.groups,
    })
}

impl Summary {
    /// `{"range", "since_seconds", "totals": {...}, "by_operation": [...], "by_day": [...]}`.
    /// `tokens` are total tokens; `error_rate` is a fraction (0 to 1) of the requests,
    /// null without requests; `mean_latency_ms` and `cost_per_active_user` are null
    /// when there is nothing to divide.
    /// Keys are sorted, as `serde_json::Value` keeps them.
    pub fn to_json(&self) -> Value {
        let t = &self.total;
        let group = |key_name: &'static str, (key, sums): &'_ (Option<String>, Sums)| GroupDoc {
            key: BTreeMap::from([(key_name, key.clone())]),
            cost_dollars: sums.cost_dollars,
            tokens: sums.total_tokens,
            requests: sums.calls,
        };
        let doc = SummaryDoc {
            range: self.range.as_str(),
            since_seconds: self.range.duration().as_secs(),
            totals: TotalsDoc {
                cost_dollars: t.cost_dollars,
                tokens: t.total_tokens,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                requests: t.calls,
                errors: t.errors,
                error_rate: (t.calls > 0).then(|| t.errors as f64 / t.calls as f64),
                mean_latency_ms: t.mean_latency_ms,
                active_users: t.active_users,
                cost_per_active_user: t.cost_per_active_user(),
            },
            by_operation: self
                .by_operation
                .iter()
                .map(|g| group("operation", g))
                .collect(),
            by_day: self.by_day.iter().map(|g| group("date", g)).collect(),
        };
        serde_json::to_value(doc).expect("numbers and strings serialize")
    }
}

/// The whole `GET /v1/usage/summary` document.
#[derive(Serialize)]
struct SummaryDoc {
    range: &'static str,
    since_seconds: u64,
    totals: TotalsDoc,
    by_operation: Vec<GroupDoc>,
    by_day: Vec<GroupDoc>,
}

/// The summary's totals, with the unit economics.
#[derive(Serialize)]
struct TotalsDoc {
    cost_dollars: f64,
    tokens: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    requests: i64,
    errors: i64,
    error_rate: Option<f64>,
    mean_latency_ms: Option<f64>,
    active_users: i64,
    cost_per_active_user: Option<f64>,
}

/// One operation's or day's sums, keyed `operation` or `date`.
#[derive(Serialize)]
struct GroupDoc {
    #[serde(flatten)]
    key: BTreeMap<&'static str, Option<String>>,
    cost_dollars: f64,
    tokens: i64,
    requests: i64,
}

/// The reading side of the usage API: its token and store.
pub struct Reader {
    token: String,
    store: UsageStore,
}

impl Reader {
    /// A reader that accepts `token` only (the write token is not a read token).
    pub fn new(token: String, store: UsageStore) -> Reader {
        Reader { token, store }
    }

    /// Whether the request presented the read token (in constant time).
    pub fn authorized(&self, bearer: &Bearer) -> bool {
        bearer.is(Some(&self.token))
    }

    /// Whether `presented` is the read token (in constant time): the status page's
    /// login form and cookie.
    pub fn accepts(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.token.as_bytes())
    }

    /// The summary over `range`, within [`SUMMARY_TIMEOUT`].
    pub async fn summary(&self, range: Range) -> Result<Summary, StoreError> {
        tokio::time::timeout(SUMMARY_TIMEOUT, summary(&self.store, range))
            .await
            .unwrap_or(Err(StoreError::Timeout(SUMMARY_TIMEOUT)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sums(calls: i64, errors: i64, cost: f64, users: i64) -> Sums {
        Sums {
            calls,
            errors,
            prompt_tokens: calls,
            completion_tokens: calls * 2,
            total_tokens: calls * 3,
            cost_dollars: cost,
            active_users: users,
            mean_latency_ms: (calls > 0).then_some(250.0),
        }
    }

    #[test]
    fn ranges_are_the_three_names_exactly() {
        assert_eq!(Range::parse("24h"), Some(Range::Day));
        assert_eq!(
            Range::parse("7d").map(Range::duration),
            Some(Duration::from_secs(604_800))
        );
        assert_eq!(Range::parse("30d"), Some(Range::Month));
        for bad in ["1d", "24H", "", "30d "] {
            assert_eq!(Range::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Range::default(), Range::Day);
    }

    #[test]
    fn the_json_has_totals_rates_and_both_groupings() {
        let summary = Summary {
            range: Range::Week,
            total: sums(4, 1, 3.0, 2),
            by_operation: vec![
                (Some("tarot".into()), sums(3, 1, 2.5, 2)),
                (None, sums(1, 0, 0.5, 0)),
            ],
            by_day: vec![(Some("2026-11-29".into()), sums(4, 1, 3.0, 2))],
        };
        let json = summary.to_json();
        assert_eq!(json["range"], "7d");
        assert_eq!(
            json["totals"],
            json!({"cost_dollars": 3.0, "tokens": 12, "prompt_tokens": 4, "completion_tokens": 8,
                   "requests": 4, "errors": 1, "error_rate": 0.25, "mean_latency_ms": 250.0,
                   "active_users": 2, "cost_per_active_user": 1.5})
        );
        assert_eq!(
            json["by_operation"],
            json!([{"operation": "tarot", "cost_dollars": 2.5, "tokens": 9, "requests": 3},
                   {"operation": null, "cost_dollars": 0.5, "tokens": 3, "requests": 1}])
        );
        assert_eq!(
            json["by_day"],
            json!([{"date": "2026-11-29", "cost_dollars": 3.0, "tokens": 12, "requests": 4}])
        );
        let empty = Summary {
            range: Range::Day,
            total: sums(0, 0, 0.0, 0),
            by_operation: vec![],
            by_day: vec![],
        }
        .to_json();
        for key in ["error_rate", "mean_latency_ms", "cost_per_active_user"] {
            assert_eq!(empty["totals"][key], Value::Null, "{key}");
        }
    }
}
