//! Plugin samples: which of a report's samples may leave the run, and which of those a
//! check's grant exports to `/metrics`. Every sample kept out is counted by reason
//! ([`Dropped`]): in the run's report (`healthhost check` shows it) and in
//! `{namespace}_plugin_samples_dropped_total{check,reason}`.
//!
//! Two steps, both here. [`screen`] runs when a run ends, for every use of the report:
//! names and label names as Prometheus accepts them, no reserved or repeated label
//! names, no secrets in names, secrets removed from label values, and the caps of
//! [`crate::limits`] on sizes and counts. [`admit`] applies the check's grant when the
//! report is recorded: granted names only, no repeated series, a series cap.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::limits::{
    MAX_SERIES_PER_CHECK, REPORT_MAX_SAMPLES, SAMPLE_MAX_LABEL_VALUE_BYTES, SAMPLE_MAX_LABELS,
    SAMPLE_MAX_NAME_BYTES, SAMPLES_MAX_BYTES_PER_CHECK,
};
use crate::names::valid_metric_name;
use crate::scrub::Scrubber;

/// One measured value a plugin reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[cfg(test)]
impl Sample {
    /// A sample from borrowed parts.
    pub(crate) fn of(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }
}

/// The label the host adds to every plugin sample; a plugin may not set it itself.
pub const CHECK_LABEL: &str = "check";

/// Label names Prometheus gives a meaning (`le` of histogram buckets, `quantile` of
/// summaries) or the host sets ([`CHECK_LABEL`]). Names starting with `__` are
/// reserved too (`__name__` is the metric name itself).
pub const RESERVED_LABELS: [&str; 3] = ["le", "quantile", CHECK_LABEL];

/// Why a plugin sample did not reach `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dropped {
    /// Its name is not a metric name (`[a-zA-Z_][a-zA-Z0-9_]*`).
    InvalidName,
    /// Its value is not finite.
    InvalidValue,
    /// A label name is not a label name, or the sample repeats one.
    InvalidLabel,
    /// A label name is reserved (`__…`, `le`, `quantile`, `check`).
    ReservedLabel,
    /// Its name or a label name contains a secret (it is dropped, never renamed).
    Secret,
    /// A name, a label value or its number of labels is over its cap, or the report's
    /// samples together are over [`SAMPLES_MAX_BYTES_PER_CHECK`].
    TooLarge,
    /// The report already has [`REPORT_MAX_SAMPLES`] samples.
    TooMany,
    /// Its name is not in the check's `grants.metrics`.
    NotGranted,
    /// Its exported name is the name of one of the host's own families, or differs
    /// from one only by a series suffix (`_count`, `_sum`, `_total`, …): it would
    /// write the host's series or break the exposition.
    HostName,
    /// The same name and labels came earlier in the report.
    Duplicate,
    /// The check already has [`MAX_SERIES_PER_CHECK`] series.
    SeriesCap,
}

/// Samples dropped, by reason.
pub type Drops = BTreeMap<Dropped, u64>;

impl Dropped {
    pub const ALL: [Dropped; 11] = [
        Dropped::InvalidName,
        Dropped::InvalidValue,
        Dropped::InvalidLabel,
        Dropped::ReservedLabel,
        Dropped::Secret,
        Dropped::TooLarge,
        Dropped::TooMany,
        Dropped::NotGranted,
        Dropped::HostName,
        Dropped::Duplicate,
        Dropped::SeriesCap,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::InvalidName => "invalid-name",
            Dropped::InvalidValue => "invalid-value",
            Dropped::InvalidLabel => "invalid-label",
            Dropped::ReservedLabel => "reserved-label",
            Dropped::Secret => "secret",
            Dropped::TooLarge => "too-large",
            Dropped::TooMany => "too-many",
            Dropped::NotGranted => "not-granted",
            Dropped::HostName => "host-name",
            Dropped::Duplicate => "duplicate",
            Dropped::SeriesCap => "series-cap",
        }
    }
}

/// The samples of one report that may leave the run, in order, with secrets removed
/// from label values; and how many were dropped, by reason.
pub fn screen(samples: Vec<Sample>, scrubber: &Scrubber) -> (Vec<Sample>, Drops) {
    let mut kept = Vec::new();
    let mut drops = Drops::new();
    let mut bytes = 0;
    for sample in samples {
        let checked = if kept.len() >= REPORT_MAX_SAMPLES {
            Err(Dropped::TooMany)
        } else {
            check_sample(sample, scrubber).and_then(|sample| {
                let size = sample_bytes(&sample);
                if bytes + size > SAMPLES_MAX_BYTES_PER_CHECK {
                    return Err(Dropped::TooLarge);
                }
                bytes += size;
                Ok(sample)
            })
        };
        match checked {
            Ok(sample) => kept.push(sample),
            Err(reason) => *drops.entry(reason).or_default() += 1,
        }
    }
    (kept, drops)
}

/// One sample, valid and scrubbed, or why it is dropped.
fn check_sample(sample: Sample, scrubber: &Scrubber) -> Result<Sample, Dropped> {
    if !sample.value.is_finite() {
        return Err(Dropped::InvalidValue);
    }
    if sample.name.len() > SAMPLE_MAX_NAME_BYTES {
        return Err(Dropped::TooLarge);
    }
    if !valid_metric_name(&sample.name) {
        return Err(Dropped::InvalidName);
    }
    if scrubber.scrub(&sample.name) != sample.name {
        return Err(Dropped::Secret);
    }
    if sample.labels.len() > SAMPLE_MAX_LABELS {
        return Err(Dropped::TooLarge);
    }
    let mut names = BTreeSet::new();
    let mut labels = Vec::with_capacity(sample.labels.len());
    for (name, value) in sample.labels {
        check_label_name(&name)?;
        if scrubber.scrub(&name) != name {
            return Err(Dropped::Secret);
        }
        if !names.insert(name.clone()) {
            return Err(Dropped::InvalidLabel);
        }
        if value.len() > SAMPLE_MAX_LABEL_VALUE_BYTES {
            return Err(Dropped::TooLarge);
        }
        let value = scrubber.scrub(&value).into_owned();
        labels.push((name, value));
    }
    Ok(Sample { labels, ..sample })
}

/// A label name as Prometheus accepts it, and not one of [`RESERVED_LABELS`].
fn check_label_name(name: &str) -> Result<(), Dropped> {
    if name.len() > SAMPLE_MAX_NAME_BYTES {
        Err(Dropped::TooLarge)
    } else if !valid_metric_name(name) {
        Err(Dropped::InvalidLabel)
    } else if name.starts_with("__") || RESERVED_LABELS.contains(&name) {
        Err(Dropped::ReservedLabel)
    } else {
        Ok(())
    }
}

/// The bytes of a sample's name, label names and label values.
fn sample_bytes(sample: &Sample) -> usize {
    sample.name.len()
        + sample
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Splits screened `samples` into those the grant admits (in report order) and how
/// many others were dropped, by reason; `host_name` says whether a sample's name is
/// taken by the host's own series.
pub fn admit<'a>(
    samples: &'a [Sample],
    granted: &BTreeSet<String>,
    host_name: impl Fn(&str) -> bool,
) -> (Vec<&'a Sample>, Drops) {
    let mut admitted = Vec::new();
    let mut drops = Drops::new();
    for (sample, verdict) in verdicts(samples, granted, host_name) {
        match verdict {
            Some(reason) => *drops.entry(reason).or_default() += 1,
            None => admitted.push(sample),
        }
    }
    (admitted, drops)
}

/// Each screened sample, in report order, with why the grant (or the host's own
/// names, as `host_name` tells them) keeps it out of `/metrics` (`None`: admitted).
pub fn verdicts<'a>(
    samples: &'a [Sample],
    granted: &BTreeSet<String>,
    host_name: impl Fn(&str) -> bool,
) -> impl Iterator<Item = (&'a Sample, Option<Dropped>)> {
    samples
        .iter()
        .scan(Vec::new(), move |admitted: &mut Vec<&'a Sample>, sample| {
            let reason = if !granted.contains(&sample.name) {
                Some(Dropped::NotGranted)
            } else if host_name(&sample.name) {
                Some(Dropped::HostName)
            } else if admitted
                .iter()
                .any(|a| a.name == sample.name && same_labels(&a.labels, &sample.labels))
            {
                Some(Dropped::Duplicate)
            } else if admitted.len() >= MAX_SERIES_PER_CHECK {
                Some(Dropped::SeriesCap)
            } else {
                admitted.push(sample);
                None
            };
            Some((sample, reason))
        })
}

fn same_labels(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let sorted = |l: &[(String, String)]| l.iter().cloned().collect::<BTreeMap<_, _>>();
    sorted(a) == sorted(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// The reason `screen` gives for one sample, or `None` when it keeps it.
    fn screened(s: Sample) -> Option<Dropped> {
        let (kept, drops) = screen(vec![s], &Scrubber::new(["Zq9SECRET"]));
        assert_eq!(kept.len() + drops.values().sum::<u64>() as usize, 1);
        drops.into_keys().next()
    }

    #[test]
    fn metric_names() {
        for good in ["latency_seconds", "_x", "A1"] {
            assert!(valid_metric_name(good), "{good}");
        }
        for bad in ["", "1x", "a-b", "a b", "é", "a:b"] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
    }

    #[test]
    fn screen_names_the_reason_of_every_drop() {
        let long_name = "n".repeat(SAMPLE_MAX_NAME_BYTES + 1);
        let long_value = "v".repeat(SAMPLE_MAX_LABEL_VALUE_BYTES + 1);
        let max_value = "v".repeat(SAMPLE_MAX_LABEL_VALUE_BYTES);
        let many: Vec<(String, String)> = (0..=SAMPLE_MAX_LABELS)
            .map(|i| (format!("l{i}"), "v".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&**k, &**v)).collect();
        let cases: Vec<(Sample, Option<Dropped>)> = vec![
            (Sample::of("ok", &[("table", "jobs")], 1.0), None),
            (Sample::of("ok", &[("_x", "1"), ("A9", "")], -0.5), None),
            (Sample::of("ok", &[("v", &max_value)], 1.0), None),
            (Sample::of("ok", &[("v", "a\nb\"c\\d")], 1.0), None),
            (Sample::of("ok", &many[1..], 1.0), None),
            (Sample::of("ok", &[], f64::NAN), Some(Dropped::InvalidValue)),
            (
                Sample::of("ok", &[], f64::INFINITY),
                Some(Dropped::InvalidValue),
            ),
            (Sample::of("bad-name", &[], 1.0), Some(Dropped::InvalidName)),
            (Sample::of("", &[], 1.0), Some(Dropped::InvalidName)),
            (Sample::of(&long_name, &[], 1.0), Some(Dropped::TooLarge)),
            (
                Sample::of("ok", &[("a-b", "1")], 1.0),
                Some(Dropped::InvalidLabel),
            ),
            (
                Sample::of("ok", &[("", "1")], 1.0),
                Some(Dropped::InvalidLabel),
            ),
            (
                Sample::of("ok", &[("a", "1"), ("a", "2")], 1.0),
                Some(Dropped::InvalidLabel),
            ),
            (
                Sample::of("ok", &[("a", "1"), ("a", "1")], 1.0),
                Some(Dropped::InvalidLabel),
            ),
            (
                Sample::of("ok", &[("__name__", "x")], 1.0),
                Some(Dropped::ReservedLabel),
            ),
            (
                Sample::of("ok", &[("__anything", "x")], 1.0),
                Some(Dropped::ReservedLabel),
            ),
            (
                Sample::of("ok", &[("le", "1")], 1.0),
                Some(Dropped::ReservedLabel),
            ),
            (
                Sample::of("ok", &[("quantile", "1")], 1.0),
                Some(Dropped::ReservedLabel),
            ),
            (
                Sample::of("ok", &[("check", "other")], 1.0),
                Some(Dropped::ReservedLabel),
            ),
            (
                Sample::of("ok", &[(&long_name, "1")], 1.0),
                Some(Dropped::TooLarge),
            ),
            (
                Sample::of("ok", &[("v", &long_value)], 1.0),
                Some(Dropped::TooLarge),
            ),
            (Sample::of("ok", &many, 1.0), Some(Dropped::TooLarge)),
            (Sample::of("db_Zq9SECRET", &[], 1.0), Some(Dropped::Secret)),
            (
                Sample::of("ok", &[("Zq9SECRET", "1")], 1.0),
                Some(Dropped::Secret),
            ),
        ];
        for (s, expected) in cases {
            let described = format!("{}{:?} {}", s.name.len(), s.labels.len(), s.value);
            assert_eq!(screened(s), expected, "{described}");
        }
    }

    #[test]
    fn screen_scrubs_label_values_whatever_their_encoding() {
        let s = Sample::of(
            "ok",
            &[("url", "/bot%5Aq9secret"), ("t", "Zq9SECRET!")],
            1.0,
        );
        let (kept, _) = screen(vec![s], &Scrubber::new(["Zq9SECRET", "Zq9secret"]));
        assert_eq!(
            kept[0].labels,
            [
                ("url".to_owned(), "/bot[REDACTED]".to_owned()),
                ("t".to_owned(), "[REDACTED]!".to_owned())
            ]
        );
    }

    #[test]
    fn screen_caps_samples_and_bytes_per_report() {
        let samples: Vec<Sample> = (0..10_001)
            .map(|i| Sample::of("n", &[("i", &i.to_string())], 1.0))
            .collect();
        let (kept, drops) = screen(samples, &Scrubber::default());
        assert_eq!(kept.len(), REPORT_MAX_SAMPLES);
        assert_eq!(
            drops,
            Drops::from([(Dropped::TooMany, (10_001 - REPORT_MAX_SAMPLES) as u64)])
        );

        let value = "v".repeat(SAMPLE_MAX_LABEL_VALUE_BYTES);
        let samples: Vec<Sample> = (0..REPORT_MAX_SAMPLES)
            .map(|_| Sample::of("n", &[("v", &value)], 1.0))
            .collect();
        let (kept, drops) = screen(samples, &Scrubber::default());
        let fit = SAMPLES_MAX_BYTES_PER_CHECK / (1 + 1 + SAMPLE_MAX_LABEL_VALUE_BYTES);
        assert!(
            fit < REPORT_MAX_SAMPLES,
            "the byte cap is the one that bites"
        );
        assert_eq!(kept.len(), fit);
        assert_eq!(
            drops,
            Drops::from([(Dropped::TooLarge, (REPORT_MAX_SAMPLES - fit) as u64)])
        );
        assert!(kept.iter().map(sample_bytes).sum::<usize>() <= SAMPLES_MAX_BYTES_PER_CHECK);
    }

    #[test]
    fn admit_keeps_granted_samples_and_names_every_drop() {
        let samples = [
            Sample::of("db_latency_seconds", &[], 0.1),
            Sample::of("secret_thing", &[], 1.0),
            Sample::of("db_rows", &[("table", "a"), ("kind", "x")], 1.0),
            Sample::of("db_rows", &[("kind", "x"), ("table", "a")], 2.0),
        ];
        let (admitted, drops) = admit(
            &samples,
            &granted(&["db_latency_seconds", "db_rows"]),
            |_| false,
        );
        assert_eq!(admitted, [&samples[0], &samples[2]]);
        assert_eq!(
            drops,
            Drops::from([(Dropped::NotGranted, 1), (Dropped::Duplicate, 1)])
        );
    }

    #[test]
    fn admit_drops_names_the_host_exports_even_when_granted() {
        let samples = [
            Sample::of("rows", &[], 1.0),
            Sample::of("taken_count", &[], 2.0),
        ];
        let grant = granted(&["rows", "taken_count"]);
        let (admitted, drops) = admit(&samples, &grant, |n| n == "taken_count");
        assert_eq!(admitted, [&samples[0]]);
        assert_eq!(drops, Drops::from([(Dropped::HostName, 1)]));
    }

    #[test]
    fn admit_caps_series_per_check() {
        let samples: Vec<Sample> = (0..MAX_SERIES_PER_CHECK + 5)
            .map(|i| Sample::of("rows", &[("table", &i.to_string())], 1.0))
            .collect();
        let (admitted, drops) = admit(&samples, &granted(&["rows"]), |_| false);
        assert_eq!(admitted.len(), MAX_SERIES_PER_CHECK);
        assert_eq!(drops, Drops::from([(Dropped::SeriesCap, 5)]));
    }

    #[test]
    fn reasons_have_distinct_labels_and_serialize_as_them() {
        let labels: BTreeSet<&str> = Dropped::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels.len(), Dropped::ALL.len());
        for reason in Dropped::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.label());
        }
    }
}
