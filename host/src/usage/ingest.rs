//! Recording AI usage (`POST /v1/ai-usage`): reading a body of one row or a batch,
//! validating every field of every row into typed [`RowProblem`]s, writing the batch in
//! one transaction through the [`UsageStore`], and — only after the commit — moving the
//! AdtroBot plan's `ai_*` metrics, with operation and model label values capped by [`LabelCap`].
//!
//! The HTTP side (authorization, body limit, status codes) is in `server`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value, json};

use crate::auth::Bearer;
use crate::limits::BODY_BYTES_PER_ROW;
use crate::metrics::Metrics;
use crate::usage::{CallStatus, NewUsage, StoreError, UsageStore};

/// The label value standing for every value beyond the cap.
pub const OTHER: &str = "other";

/// Longest `operation` (the column is `VARCHAR(50)`).
pub const MAX_OPERATION_CHARS: usize = 50;
/// Longest `model` (the column is `VARCHAR(100)`).
pub const MAX_MODEL_CHARS: usize = 100;
/// Longest `generation_id` (the column is `VARCHAR(100)`).
pub const MAX_GENERATION_ID_CHARS: usize = 100;
/// Largest integer field: the columns are 32-bit `INTEGER`s.
pub const MAX_INTEGER: i64 = i32::MAX as i64;

/// The fields a row may have; any other is a problem (`created_at` included: the
/// database's clock sets it, so that `--since` windows do not depend on client clocks).
pub const FIELDS: [&str; 10] = [
    "user_id",
    "operation",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_dollars",
    "generation_id",
    "latency_ms",
    "status",
];

/// What is wrong with one field (or one row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("is required")]
    Missing,
    #[error("is not a known field (known: {})", FIELDS.join(", "))]
    Unknown,
    #[error("must be a JSON object")]
    NotAnObject,
    #[error("must be a string")]
    NotAString,
    #[error("must not be empty")]
    Empty,
    #[error("longer than {0} characters")]
    TooLong(usize),
    #[error("must be an integer from 0 to {MAX_INTEGER}")]
    NotACount,
    #[error("must be a finite number of at least 0")]
    NotACost,
    #[error("must be \"success\" or \"error\"")]
    NotAStatus,
    #[error("prompt_tokens + completion_tokens exceeds {MAX_INTEGER}; give total_tokens")]
    SumTooLarge,
    /// The database refused the row: a constraint it breaks, or a value too long for
    /// the column (carries the database's message).
    #[error("refused by the database: {0}")]
    Refused(String),
}

/// One problem of one row: its index in the batch (0 for a single object), the field
/// (none when the row itself is wrong) and the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub index: usize,
    pub field: Option<String>,
    pub fault: Fault,
}

impl RowProblem {
    /// `{"index": 0, "field": "model", "message": "longer than 100 characters"}`.
    pub fn to_json(&self) -> Value {
        json!({"index": self.index, "field": self.field, "message": self.fault.to_string()})
    }
}

/// Why a body was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("malformed JSON: {0}")]
    Malformed(serde_json::Error),
    #[error("expected a JSON object or an array of objects")]
    NotRows,
    #[error("no rows: the array is empty")]
    Empty,
    #[error("{rows} rows is more than the maximum of {max} per request")]
    TooMany { rows: usize, max: usize },
    #[error("{} problem(s) in the rows", .0.len())]
    Invalid(Vec<RowProblem>),
    #[error("cannot record: {0}")]
    Store(#[from] StoreError),
}

/// Parses and validates a body: one row object or an array of up to `max_batch` of
/// them. Reports every problem of every row at once.
pub fn parse(body: &[u8], max_batch: usize) -> Result<Vec<NewUsage>, RecordError> {
    let value: Value = serde_json::from_slice(body).map_err(RecordError::Malformed)?;
    let items = match value {
        Value::Array(items) => items,
        item @ Value::Object(_) => vec![item],
        _ => return Err(RecordError::NotRows),
    };
    if items.is_empty() {
        return Err(RecordError::Empty);
    }
    if items.len() > max_batch {
        return Err(RecordError::TooMany {
            rows: items.len(),
            max: max_batch,
        });
    }
    let mut rows = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match validate(item) {
            Ok(row) => rows.push(row),
            Err(faults) => problems.extend(faults.into_iter().map(|(field, fault)| RowProblem {
                index,
                field,
                fault,
            })),
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(RecordError::Invalid(problems))
    }
}

type Faults = Vec<(Option<String>, Fault)>;

/// Reads fields of one row object, collecting faults.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    faults: Faults,
}

impl Fields<'_> {
    /// The field read by `check`; `None` when it is absent, null or faulty.
    fn optional<T>(
        &mut self,
        name: &str,
        check: impl FnOnce(&Value) -> Result<T, Fault>,
    ) -> Option<T> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => check(value)
                .map_err(|fault| self.faults.push((Some(name.to_owned()), fault)))
                .ok(),
        }
    }

    /// Like [`Fields::optional`], but absent or null is a fault too.
    fn required<T>(
        &mut self,
        name: &str,
        check: impl FnOnce(&Value) -> Result<T, Fault>,
    ) -> Option<T> {
        if self.object.get(name).is_none_or(Value::is_null) {
            self.faults.push((Some(name.to_owned()), Fault::Missing));
        }
        self.optional(name, check)
    }
}

fn text(max_chars: usize) -> impl FnOnce(&Value) -> Result<String, Fault> {
    move |value| {
        let s = value.as_str().ok_or(Fault::NotAString)?;
        if s.is_empty() {
            Err(Fault::Empty)
        } else if s.chars().count() > max_chars {
            Err(Fault::TooLong(max_chars))
        } else {
            Ok(s.to_owned())
        }
    }
}

fn count(value: &Value) -> Result<i32, Fault> {
    value
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n >= 0)
        .ok_or(Fault::NotACount)
}

fn cost(value: &Value) -> Result<f64, Fault> {
    value
        .as_f64()
        .filter(|c| c.is_finite() && *c >= 0.0)
        .ok_or(Fault::NotACost)
}

fn status(value: &Value) -> Result<CallStatus, Fault> {
    match value.as_str() {
        Some("success") => Ok(CallStatus::Success),
        Some("error") => Ok(CallStatus::Error),
        _ => Err(Fault::NotAStatus),
    }
}

/// One row, or every fault in it. Absent or null optional fields take their defaults:
/// tokens 0, `total_tokens` the sum of the other two, `status` success.
fn validate(item: &Value) -> Result<NewUsage, Faults> {
    let Some(object) = item.as_object() else {
        return Err(vec![(None, Fault::NotAnObject)]);
    };
    let mut fields = Fields {
        object,
        faults: Vec::new(),
    };
    for key in object.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        fields.faults.push((Some(key.clone()), Fault::Unknown));
    }
    let user_id = fields.optional("user_id", count);
    let operation = fields.required("operation", text(MAX_OPERATION_CHARS));
    let model = fields.required("model", text(MAX_MODEL_CHARS));
    let prompt_tokens = fields.optional("prompt_tokens", count).unwrap_or(0);
    let completion_tokens = fields.optional("completion_tokens", count).unwrap_or(0);
    let total_tokens = match fields.optional("total_tokens", count) {
        Some(total) => Some(total),
        None if object.get("total_tokens").is_none_or(Value::is_null) => {
            let sum = prompt_tokens.checked_add(completion_tokens);
            if sum.is_none() {
                fields
                    .faults
                    .push((Some("total_tokens".to_owned()), Fault::SumTooLarge));
            }
            sum
        }
        None => None,
    };
    let cost_dollars = fields.optional("cost_dollars", cost);
    let generation_id = fields.optional("generation_id", text(MAX_GENERATION_ID_CHARS));
    let latency_ms = fields.optional("latency_ms", count);
    let status = fields.optional("status", status).unwrap_or_default();
    match (operation, model, total_tokens) {
        (Some(operation), Some(model), Some(total_tokens)) if fields.faults.is_empty() => {
            Ok(NewUsage {
                user_id,
                operation,
                model,
                prompt_tokens,
                completion_tokens,
                total_tokens,
                cost_dollars,
                generation_id,
                latency_ms,
                status,
            })
        }
        _ => Err(fields.faults),
    }
}

/// Keeps a label's values bounded: the first `max` distinct values seen (since the
/// process started) are used as they are, every later one becomes [`OTHER`].
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelCap {
    /// A cap admitting `max` distinct values.
    pub fn new(max: usize) -> LabelCap {
        LabelCap {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The label value to record for `value`.
    pub fn label<'a>(&self, value: &'a str) -> &'a str {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(value) {
            value
        } else if seen.len() < self.max {
            seen.insert(value.to_owned());
            value
        } else {
            OTHER
        }
    }
}

/// The recording side of the endpoint: its token, limits, store and metrics.
pub struct Ingest {
    token: String,
    max_batch: usize,
    store: UsageStore,
    metrics: Arc<Metrics>,
    operations: LabelCap,
    models: LabelCap,
}

impl Ingest {
    /// An endpoint accepting `token`, batches of up to `max_batch` rows, and
    /// `max_label_values` distinct operations and models in the metrics.
    pub fn new(
        token: String,
        max_batch: usize,
        max_label_values: usize,
        store: UsageStore,
        metrics: Arc<Metrics>,
    ) -> Ingest {
        Ingest {
            token,
            max_batch,
            store,
            metrics,
            operations: LabelCap::new(max_label_values),
            models: LabelCap::new(max_label_values),
        }
    }

    /// The largest body accepted: [`BODY_BYTES_PER_ROW`] per row of a full batch.
    pub fn body_limit(&self) -> usize {
        self.max_batch * BODY_BYTES_PER_ROW
    }

    /// Whether the request presented the configured token.
    pub fn authorized(&self, bearer: &Bearer) -> bool {
        bearer.is(Some(&self.token))
    }

    /// Validates `body`, writes its rows in one transaction and, after the commit,
    /// moves the metrics. Returns the new ids in the rows' order.
    pub async fn record(&self, body: &[u8]) -> Result<Vec<i64>, RecordError> {
        let rows = parse(body, self.max_batch)?;
        let ids = match self.store.insert(&rows).await {
            Ok(ids) => ids,
            Err(StoreError::Refused {
                index,
                field,
                message,
            }) => {
                return Err(RecordError::Invalid(vec![RowProblem {
                    index,
                    field,
                    fault: Fault::Refused(message),
                }]));
            }
            Err(e) => return Err(e.into()),
        };
        self.observe(&rows);
        Ok(ids)
    }

    /// Moves the plan's AI metrics for recorded rows.
    fn observe(&self, rows: &[NewUsage]) {
        let m = &self.metrics;
        for row in rows {
            let labels = [
                self.operations.label(&row.operation),
                self.models.label(&row.model),
            ];
            let [operation, model] = labels;
            m.plan
                .ai_requests_total
                .with_label_values(&[operation, model, row.status.as_str()])
                .inc();
            for (token_type, n) in [
                ("prompt", row.prompt_tokens),
                ("completion", row.completion_tokens),
            ] {
                m.plan
                    .ai_tokens_total
                    .with_label_values(&[operation, model, token_type])
                    .inc_by(u64::from(n.unsigned_abs()));
            }
            if let Some(cost) = row.cost_dollars {
                m.plan.ai_cost_total.with_label_values(&labels).inc_by(cost);
            }
            if let Some(ms) = row.latency_ms {
                m.plan
                    .ai_request_duration
                    .with_label_values(&labels)
                    .observe(f64::from(ms) / 1000.0);
            }
        }
        m.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(body: &str) -> Vec<(usize, Option<String>, Fault)> {
        match parse(body.as_bytes(), 3) {
            Err(RecordError::Invalid(problems)) => problems
                .into_iter()
                .map(|p| (p.index, p.field, p.fault))
                .collect(),
            other => panic!("{body}: {other:?}"),
        }
    }

    fn one(field: &str, fault: Fault) -> Vec<(usize, Option<String>, Fault)> {
        vec![(0, Some(field.to_owned()), fault)]
    }

    #[test]
    fn a_minimal_row_takes_the_defaults() {
        let rows = parse(br#"{"operation":"tarot","model":"m"}"#, 3).unwrap();
        assert_eq!(
            rows,
            [NewUsage {
                user_id: None,
                operation: "tarot".into(),
                model: "m".into(),
                prompt_tokens: 0,
                completion_tokens: 0,
                total_tokens: 0,
                cost_dollars: None,
                generation_id: None,
                latency_ms: None,
                status: CallStatus::Success,
            }]
        );
    }

    #[test]
    fn total_tokens_defaults_to_the_sum_and_a_given_total_is_kept() {
        let rows = parse(
            br#"[{"operation":"o","model":"m","prompt_tokens":10,"completion_tokens":5},
                 {"operation":"o","model":"m","prompt_tokens":10,"completion_tokens":5,"total_tokens":20,
                  "user_id":7,"cost_dollars":0.25,"generation_id":"gen-1","latency_ms":900,"status":"error"}]"#,
            3,
        )
        .unwrap();
        assert_eq!(rows[0].total_tokens, 15);
        assert_eq!(rows[1].total_tokens, 20);
        assert_eq!(rows[1].user_id, Some(7));
        assert_eq!(rows[1].cost_dollars, Some(0.25));
        assert_eq!(rows[1].generation_id.as_deref(), Some("gen-1"));
        assert_eq!(rows[1].latency_ms, Some(900));
        assert_eq!(rows[1].status, CallStatus::Error);
    }

    #[test]
    fn every_invalid_field_is_named() {
        let long = |n: usize| "x".repeat(n);
        let cases = [
            (
                r#"{"model":"m"}"#.to_owned(),
                one("operation", Fault::Missing),
            ),
            (
                r#"{"operation":null,"model":"m"}"#.to_owned(),
                one("operation", Fault::Missing),
            ),
            (
                r#"{"operation":"","model":"m"}"#.to_owned(),
                one("operation", Fault::Empty),
            ),
            (
                r#"{"operation":5,"model":"m"}"#.to_owned(),
                one("operation", Fault::NotAString),
            ),
            (
                format!(r#"{{"operation":"{}","model":"m"}}"#, long(51)),
                one("operation", Fault::TooLong(50)),
            ),
            (
                format!(r#"{{"operation":"o","model":"{}"}}"#, long(101)),
                one("model", Fault::TooLong(100)),
            ),
            (
                format!(
                    r#"{{"operation":"o","model":"m","generation_id":"{}"}}"#,
                    long(101)
                ),
                one("generation_id", Fault::TooLong(100)),
            ),
            (
                r#"{"operation":"o","model":"m","user_id":-1}"#.to_owned(),
                one("user_id", Fault::NotACount),
            ),
            (
                r#"{"operation":"o","model":"m","prompt_tokens":1.5}"#.to_owned(),
                one("prompt_tokens", Fault::NotACount),
            ),
            (
                r#"{"operation":"o","model":"m","completion_tokens":"3"}"#.to_owned(),
                one("completion_tokens", Fault::NotACount),
            ),
            (
                r#"{"operation":"o","model":"m","total_tokens":2147483648}"#.to_owned(),
                one("total_tokens", Fault::NotACount),
            ),
            (
                r#"{"operation":"o","model":"m","latency_ms":-5}"#.to_owned(),
                one("latency_ms", Fault::NotACount),
            ),
            (
                r#"{"operation":"o","model":"m","cost_dollars":-0.01}"#.to_owned(),
                one("cost_dollars", Fault::NotACost),
            ),
            (
                r#"{"operation":"o","model":"m","cost_dollars":"1"}"#.to_owned(),
                one("cost_dollars", Fault::NotACost),
            ),
            (
                r#"{"operation":"o","model":"m","status":"ok"}"#.to_owned(),
                one("status", Fault::NotAStatus),
            ),
            (
                r#"{"operation":"o","model":"m","created_at":"2026-01-01"}"#.to_owned(),
                one("created_at", Fault::Unknown),
            ),
            (
                r#"{"operation":"o","model":"m","prompt_tokens":2147483647,"completion_tokens":1}"#
                    .to_owned(),
                one("total_tokens", Fault::SumTooLarge),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(problems(&body), expected, "{body}");
        }
    }

    #[test]
    fn every_problem_of_every_row_is_reported() {
        let got = problems(r#"[{"operation":"o","model":"m"}, 7, {"operation":"","colour":1}]"#);
        assert_eq!(
            got,
            [
                (1, None, Fault::NotAnObject),
                (2, Some("colour".into()), Fault::Unknown),
                (2, Some("operation".into()), Fault::Empty),
                (2, Some("model".into()), Fault::Missing),
            ]
        );
    }

    #[test]
    fn bodies_that_are_not_rows_are_refused() {
        assert!(matches!(parse(b"{", 3), Err(RecordError::Malformed(_))));
        assert!(matches!(parse(b"\"row\"", 3), Err(RecordError::NotRows)));
        assert!(matches!(parse(b"[]", 3), Err(RecordError::Empty)));
        let four = r#"[{"operation":"o","model":"m"},{"operation":"o","model":"m"},{"operation":"o","model":"m"},{"operation":"o","model":"m"}]"#;
        assert!(matches!(
            parse(four.as_bytes(), 3),
            Err(RecordError::TooMany { rows: 4, max: 3 })
        ));
    }

    #[test]
    fn label_cap_keeps_the_first_values_and_maps_the_rest_to_other() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.label("tarot"), "tarot");
        assert_eq!(cap.label("horoscope"), "horoscope");
        assert_eq!(cap.label("natal_chart"), OTHER);
        assert_eq!(cap.label("tarot"), "tarot", "a value seen before stays");
        assert_eq!(cap.label("card_of_day"), OTHER);
        assert_eq!(LabelCap::new(0).label("x"), OTHER);
    }
}
