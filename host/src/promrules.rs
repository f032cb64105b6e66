//! `healthhost rules`: Prometheus alerting rules for a config's checks, over the series
//! the host exports, for operators who alert with Prometheus and Alertmanager instead
//! of (or beside) the host's own channels: a check down, errors, stale results, SLO
//! error-budget burn (the SRE workbook's multi-window, multi-burn-rate pairs), and the
//! host's own failures (history dropped, AI usage not recorded, alerts not delivered,
//! plugins not loading). Written as YAML by hand: every string is a JSON string, which
//! YAML reads as a double-quoted scalar, so no expression needs YAML quoting rules.

use std::fmt::Write;
use std::time::Duration;

use crate::config::alerts::DEFAULT_AFTER;
use crate::config::{BurnPair, CheckConfig, Config};

/// The path of `POST /v1/ai-usage` in the request metrics' `handler` label.
const AI_USAGE_HANDLER: &str = "/v1/ai-usage";
/// Outcomes that mean the check could not judge (Nagios UNKNOWN).
const ERROR_OUTCOMES: &str = "timeout|out-of-fuel|memory|trap|load";
const fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// One alerting rule.
struct Rule {
    alert: &'static str,
    expr: String,
    hold: Option<Duration>,
    severity: &'static str,
    check: Option<String>,
    /// A burn-rate alert's long window, which tells its pairs apart.
    window: Option<String>,
    summary: String,
}

/// The rules for `config`, as a Prometheus rule file; `source` names the config in
/// the header.
pub fn rules(config: &Config, source: &str) -> String {
    let ns = &config.namespace;
    let mut rules: Vec<Rule> = Vec::new();
    for check in &config.checks {
        rules.push(down(ns, check));
        rules.push(stale(ns, check));
        rules.extend(burn_rates(ns, check));
    }
    rules.extend(host_rules(ns));
    let mut out = format!(
        "# Prometheus alerting rules for the checks of {source}, written by `healthhost rules`\n\
         # (regenerate them when the checks change). Series: the host's /metrics, namespace \
         \"{ns}\".\ngroups:\n  - name: healthhost\n    rules:\n"
    );
    for rule in &rules {
        write_rule(&mut out, rule);
    }
    out
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// A duration as Prometheus writes one (`45s`, `5m`, `1h`, `3d`).
fn prom_duration(d: Duration) -> String {
    let s = d.as_secs().max(1);
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s.is_multiple_of(len) {
            return format!("{}{unit}", s / len);
        }
    }
    format!("{s}s")
}

fn write_rule(out: &mut String, rule: &Rule) {
    let _ = writeln!(out, "      - alert: {}", rule.alert);
    let _ = writeln!(out, "        expr: {}", quoted(&rule.expr));
    if let Some(hold) = rule.hold {
        let _ = writeln!(out, "        for: {}", prom_duration(hold));
    }
    let _ = writeln!(
        out,
        "        labels:\n          severity: {}",
        rule.severity
    );
    if let Some(check) = &rule.check {
        let _ = writeln!(out, "          check: {}", quoted(check));
    }
    if let Some(window) = &rule.window {
        let _ = writeln!(out, "          window: {}", quoted(window));
    }
    let _ = writeln!(
        out,
        "        annotations:\n          summary: {}",
        quoted(&rule.summary)
    );
}

/// Down for as many runs as an alert rule's default `after`.
fn down(ns: &str, check: &CheckConfig) -> Rule {
    let name = &check.name;
    Rule {
        alert: "HealthhostCheckDown",
        expr: format!("{ns}_health_check_status{{check=\"{name}\"}} == 0"),
        hold: Some(check.interval * DEFAULT_AFTER),
        severity: if check.critical {
            "critical"
        } else {
            "warning"
        },
        check: Some(name.clone()),
        window: None,
        summary: format!("Check {name} has been down for {DEFAULT_AFTER} runs"),
    }
}

/// No run finished within the check's `max_age`, or runs that could not judge.
fn stale(ns: &str, check: &CheckConfig) -> Rule {
    let name = &check.name;
    Rule {
        alert: "HealthhostCheckStale",
        expr: format!(
            "time() - {ns}_check_last_run_timestamp_seconds{{check=\"{name}\"}} > {}",
            check.max_age.as_secs()
        ),
        hold: Some(minutes(1)),
        severity: "warning",
        check: Some(name.clone()),
        window: None,
        summary: format!("Check {name} has no result newer than its max_age"),
    }
}

/// The error ratio of `check`'s runs (of every replica) over `window`.
fn error_ratio(ns: &str, check: &str, window: Duration) -> String {
    let w = prom_duration(window);
    format!(
        "(sum(rate({ns}_check_runs_total{{check=\"{check}\",outcome!~\"pass|warn\"}}[{w}])) \
         / sum(rate({ns}_check_runs_total{{check=\"{check}\"}}[{w}])))"
    )
}

/// The burn-rate pairs that fit in the check's SLO window.
fn burn_rates(ns: &str, check: &CheckConfig) -> Vec<Rule> {
    let Some(slo) = check.slo else {
        return Vec::new();
    };
    let window = slo.window.duration();
    let budget = 1.0 - slo.target;
    BurnPair::fitting(window)
        .map(|pair| {
            let rate = pair.rate(window);
            let threshold = format!("{:.6}", rate * budget);
            let threshold = threshold.trim_end_matches('0').trim_end_matches('.');
            Rule {
                alert: "HealthhostErrorBudgetBurn",
                expr: format!(
                    "{} > {threshold} and {} > {threshold}",
                    error_ratio(ns, &check.name, pair.long),
                    error_ratio(ns, &check.name, pair.short)
                ),
                hold: None,
                severity: pair.severity,
                check: Some(check.name.clone()),
                window: Some(prom_duration(pair.long)),
                summary: format!(
                    "Check {} is spending its error budget {rate:.1}x as fast as its SLO \
                     allows ({:.0}% of it within {})",
                    check.name,
                    pair.share * 100.0,
                    prom_duration(pair.long)
                ),
            }
        })
        .collect()
}

/// The host's own failures.
fn host_rules(ns: &str) -> Vec<Rule> {
    let rule = |alert, expr: String, summary: &str| Rule {
        alert,
        expr,
        hold: None,
        severity: "warning",
        check: None,
        window: None,
        summary: summary.to_owned(),
    };
    vec![
        rule(
            "HealthhostCheckErrors",
            format!(
                "sum by (check) (increase({ns}_check_runs_total{{outcome=~\"{ERROR_OUTCOMES}\"}}[15m])) > 0"
            ),
            "A check could not judge (timeout, trap, out of fuel or memory, or its plugin does not load)",
        ),
        rule(
            "HealthhostPluginLoadFailing",
            format!("max by (check) ({ns}_plugin_load_failing) == 1"),
            "The newest plugin file of a check does not load",
        ),
        rule(
            "HealthhostHistoryDropping",
            format!("increase({ns}_history_dropped_total[10m]) > 0"),
            "Check results are being dropped before they reach the history store",
        ),
        rule(
            "HealthhostUsageIngestFailing",
            format!(
                "sum(increase({ns}_requests_total{{handler=\"{AI_USAGE_HANDLER}\",status=\"5xx\"}}[10m])) > 0"
            ),
            "AI usage rows are not being recorded (the usage store fails)",
        ),
        rule(
            "HealthhostAlertDeliveryFailing",
            format!(
                "sum by (channel) (increase({ns}_alert_deliveries_total{{result=\"failed\"}}[1h])) > 0"
            ),
            "An alert channel refused or never took a notification",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_handler_is_the_servers_path() {
        assert_eq!(AI_USAGE_HANDLER, crate::server::AI_USAGE_PATH);
    }

    #[test]
    fn durations_are_written_in_their_largest_whole_unit() {
        assert_eq!(prom_duration(Duration::from_secs(45)), "45s");
        assert_eq!(prom_duration(minutes(5)), "5m");
        assert_eq!(prom_duration(Duration::from_secs(6 * 3600)), "6h");
        assert_eq!(prom_duration(Duration::from_secs(72 * 3600)), "3d");
    }
}
