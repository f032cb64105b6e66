//! Host-evaluated thresholds on a check's samples, in the range syntax of the Nagios
//! plugin guidelines, so an operator retunes a check without rebuilding its plugin.
//! Per sample name (and, optionally, labels the sample must carry): a `warn` and a
//! `crit` [`NagiosRange`]; a sample outside a range (inside, for `@`) crosses it
//! ([`crossings`]). `runtime::RunReport::judge_thresholds` makes a run's outcome the
//! worse of the plugin's verdict and theirs; [`perfdata`] writes a sample as Nagios
//! perfdata with its ranges (`healthhost check --nagios`).

use std::fmt::Write;

use crate::escape::escape_controls;
use crate::samples::Sample;

/// What a range may look like, as an error says it.
pub const RANGE_EXPECTED: &str = "a Nagios range like \"10\" (0 to 10), \"10:\" (10 or more), \"~:10\" (10 or less), \
     \"10:20\" or \"@10:20\" (alert inside)";

/// A Nagios range: `[@]start:end`, `start` 0 when left out and `~` for minus infinity,
/// `end` infinity when left out; both ends belong to the range.
#[derive(Debug, Clone, PartialEq)]
pub struct NagiosRange {
    start: f64,
    end: f64,
    /// `@`: alert inside the range rather than outside.
    inside: bool,
    /// As written, for messages and perfdata.
    text: String,
}

impl NagiosRange {
    /// The range `text` writes, or why it is none.
    pub fn parse(text: &str) -> Result<NagiosRange, String> {
        let bad = || format!("'{text}' is not {RANGE_EXPECTED}");
        let trimmed = text.trim();
        let (inside, body) = match trimmed.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let number = |s: &str| s.parse::<f64>().ok().filter(|n| n.is_finite());
        let (start, end) = match body.split_once(':') {
            None => (0.0, number(body).ok_or_else(bad)?),
            Some((start, end)) => {
                let start = match start {
                    "~" => f64::NEG_INFINITY,
                    "" => 0.0,
                    s => number(s).ok_or_else(bad)?,
                };
                let end = match end {
                    "" => f64::INFINITY,
                    e => number(e).ok_or_else(bad)?,
                };
                (start, end)
            }
        };
        if start > end {
            return Err(format!("'{text}' starts above its end ({RANGE_EXPECTED})"));
        }
        Ok(NagiosRange {
            start,
            end,
            inside,
            text: trimmed.to_owned(),
        })
    }

    /// Whether `value` crosses the range: below its start or above its end, or, with
    /// `@`, within it (ends included).
    pub fn alerts(&self, value: f64) -> bool {
        let within = self.start <= value && value <= self.end;
        within == self.inside
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The ranges one sample name is judged by.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub sample: String,
    /// Labels a sample must carry (with these values) to be judged; none: every sample
    /// of the name.
    pub labels: Vec<(String, String)>,
    pub warn: Option<NagiosRange>,
    pub crit: Option<NagiosRange>,
}

impl Threshold {
    /// Whether it judges `sample`: its name, and every label it names.
    pub fn matches(&self, sample: &Sample) -> bool {
        sample.name == self.sample && self.labels.iter().all(|l| sample.labels.contains(l))
    }
}

/// How bad a crossing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Warn,
    Crit,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Warn => "warn",
            Level::Crit => "crit",
        }
    }
}

/// One sample past one range.
#[derive(Debug)]
pub struct Crossing<'a> {
    pub level: Level,
    pub range: &'a NagiosRange,
    pub sample: &'a Sample,
}

impl Crossing<'_> {
    /// `crit threshold "2" crossed: db_latency_seconds = 2.5`.
    pub fn describe(&self) -> String {
        format!(
            "{} threshold \"{}\" crossed: {} = {}",
            self.level.label(),
            self.range.as_str(),
            series(self.sample),
            self.sample.value
        )
    }
}

/// Every range `samples` cross, each sample counted at its worst: a sample past `crit`
/// is not also reported past `warn`.
pub fn crossings<'a>(samples: &'a [Sample], thresholds: &'a [Threshold]) -> Vec<Crossing<'a>> {
    let mut found = Vec::new();
    for sample in samples {
        for t in thresholds.iter().filter(|t| t.matches(sample)) {
            let crossed = [
                (t.crit.as_ref(), Level::Crit),
                (t.warn.as_ref(), Level::Warn),
            ]
            .into_iter()
            .find_map(|(range, level)| {
                let range = range.filter(|r| r.alerts(sample.value))?;
                Some(Crossing {
                    level,
                    range,
                    sample,
                })
            });
            found.extend(crossed);
        }
    }
    found
}

/// A sample's name and labels as `/metrics` writes them.
fn series(sample: &Sample) -> String {
    if sample.labels.is_empty() {
        return sample.name.clone();
    }
    let labels: Vec<String> = sample
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    format!("{}{{{}}}", sample.name, labels.join(","))
}

/// One sample as Nagios perfdata, `'label'=value[UOM][;warn;crit]`, with the ranges of
/// the first of `thresholds` that judges it: a label cannot hold `=`, and a quote is
/// doubled.
pub fn perfdata(sample: &Sample, thresholds: &[Threshold]) -> String {
    let threshold = thresholds.iter().find(|t| t.matches(sample));
    let label = escape_controls(&series(sample))
        .replace('=', ":")
        .replace('"', "")
        .replace('\'', "''");
    let unit = match sample.name.rsplit('_').next() {
        Some("seconds") => "s",
        Some("bytes") => "B",
        Some("percent") => "%",
        _ => "",
    };
    let range = |r: Option<&NagiosRange>| r.map_or(String::new(), |r| r.as_str().to_owned());
    let (warn, crit) = match threshold {
        Some(t) => (range(t.warn.as_ref()), range(t.crit.as_ref())),
        None => (String::new(), String::new()),
    };
    let mut field = format!("'{label}'={}{unit}", sample.value);
    if !warn.is_empty() || !crit.is_empty() {
        let _ = write!(field, ";{warn};{crit}");
    }
    field
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn range(text: &str) -> NagiosRange {
        NagiosRange::parse(text).unwrap()
    }

    #[test]
    fn ranges_alert_as_the_nagios_guidelines_say() {
        // (range, values that alert, values that do not): ends are inside.
        let cases: [(&str, &[f64], &[f64]); 6] = [
            ("10", &[-1.0, 10.5, 11.0], &[0.0, 5.0, 10.0]),
            ("10:", &[-1.0, 9.99], &[10.0, 1e9]),
            ("~:10", &[10.01, 11.0], &[-1e9, 10.0]),
            ("10:20", &[9.0, 21.0], &[10.0, 15.0, 20.0]),
            ("@10:20", &[10.0, 15.0, 20.0], &[9.0, 21.0]),
            (":5", &[-0.5, 6.0], &[0.0, 5.0]),
        ];
        for (text, alert, quiet) in cases {
            let r = range(text);
            for v in alert {
                assert!(r.alerts(*v), "{text} should alert at {v}");
            }
            for v in quiet {
                assert!(!r.alerts(*v), "{text} should not alert at {v}");
            }
        }
        for bad in ["", "x", "10:5", "1:2:3", "@", "nan", "inf", "~"] {
            let error = NagiosRange::parse(bad).unwrap_err();
            assert!(error.contains(&format!("'{bad}'")), "{error}");
        }
    }

    pub(crate) fn threshold(
        sample: &str,
        labels: &[(&str, &str)],
        warn: &str,
        crit: &str,
    ) -> Threshold {
        let optional = |t: &str| (!t.is_empty()).then(|| range(t));
        Threshold {
            sample: sample.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            warn: optional(warn),
            crit: optional(crit),
        }
    }

    #[test]
    fn labels_pick_the_samples_a_threshold_judges_at_their_worst() {
        let samples = vec![
            Sample::of("queue_depth", &[("queue", "mail")], 50.0),
            Sample::of("queue_depth", &[("queue", "sms")], 50.0),
        ];
        let t = [threshold("queue_depth", &[("queue", "sms")], "5", "10")];
        let found = crossings(&samples, &t);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].describe(),
            "crit threshold \"10\" crossed: queue_depth{queue=\"sms\"} = 50"
        );
    }

    #[test]
    fn perfdata_has_the_unit_and_the_ranges() {
        let t = [threshold("db_latency_seconds", &[], "0.5", "2")];
        let latency = Sample::of("db_latency_seconds", &[], 0.7);
        assert_eq!(perfdata(&latency, &t), "'db_latency_seconds'=0.7s;0.5;2");
        let rows = Sample::of("rows", &[("table", "it's")], 3.0);
        assert_eq!(perfdata(&rows, &t), "'rows{table:it''s}'=3");
    }
}
