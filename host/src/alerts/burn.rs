//! SLO burn-rate alerting (`slo_burn = true` rules). Every [`ALERT_BURN_EVERY`], each
//! check a burn rule covers that has an `slo` has its error ratio read from the store's
//! rollups (every replica's runs) over each burn pair's long and short windows
//! ([`BURN_PAIRS`]); a pair whose both windows burn the error budget faster than it
//! allows opens the rule's burn episode for the check, and none burning closes it. The
//! episode is recorded as the rule `NAME/burn` by the same conditional writes as any
//! other, so replicas that compute the same burn record it once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::episodes::{Change, Observation, Recorded, Transition};
use super::store;
use crate::config::alerts::Rule;
use crate::config::{BurnPair, Slo};

#[cfg(doc)]
use crate::{config::BURN_PAIRS, limits::ALERT_BURN_EVERY};

/// The outcome a burn episode's notifications carry.
pub const BURN_OUTCOME: &str = "slo-burn";

/// The episode name of `rule`'s burn alerts.
pub fn rule_name(rule: &Rule) -> String {
    format!("{}/burn", rule.name)
}

/// What the burn evaluator knows: each check's SLO (from its results) and which burn
/// episodes are open.
#[derive(Debug, Default)]
pub struct Burns {
    checks: HashMap<Arc<str>, (Slo, bool)>,
    open: HashMap<(usize, Arc<str>), bool>,
}

/// A check's runs and non-up runs over one window.
type Counts = HashMap<String, (i64, i64)>;

impl Burns {
    /// Remembers the check's SLO and whether it is critical.
    pub fn note(&mut self, result: &Observation) {
        match result.slo {
            Some(slo) => {
                self.checks
                    .insert(result.check.clone(), (slo, result.critical));
            }
            None => {
                self.checks.remove(&result.check);
            }
        }
    }

    /// Takes the store's burn episodes as the truth.
    pub fn sync(&mut self, rules: &[Rule], recorded: &[Recorded]) {
        for ((index, check), open) in &mut self.open {
            let name = rules.get(*index).map(rule_name);
            *open = recorded
                .iter()
                .any(|r| Some(&r.rule) == name.as_ref() && *r.check == **check && r.open);
        }
    }

    /// The burn episodes to open or close at `now_ms`.
    pub async fn evaluate(
        &mut self,
        shared: &Shared,
        now_ms: i64,
    ) -> Result<Vec<Transition>, sqlx::Error> {
        let rules = &shared.config.rules;
        let mut counts: HashMap<Duration, Counts> = HashMap::new();
        let mut out = Vec::new();
        for (index, rule) in rules.iter().enumerate().filter(|(_, r)| r.slo_burn) {
            for (check, (slo, critical)) in &self.checks {
                if !rule.covers(check, *critical) {
                    continue;
                }
                let mut firing = None;
                for pair in BurnPair::fitting(slo.window.duration()) {
                    let long = ratio(shared, &mut counts, pair.long, now_ms, check).await?;
                    let short = ratio(shared, &mut counts, pair.short, now_ms, check).await?;
                    let allowed = pair.rate(slo.window.duration()) * (1.0 - slo.target);
                    let both = long
                        .zip(short)
                        .filter(|(l, s)| *l > allowed && *s > allowed);
                    if let Some((l, _)) = both {
                        firing = Some((pair, l / (1.0 - slo.target)));
                        break;
                    }
                }
                let open = self.open.entry((index, check.clone())).or_default();
                if let Some(t) = change(index, check, slo, firing, *open, now_ms) {
                    *open = t.change == Change::Open;
                    out.push(t);
                }
            }
        }
        Ok(out)
    }
}

/// The transition a burn episode takes: open when a pair fires (with the burn rate
/// over its long window) and none is open, close when none fires and one is.
fn change(
    rule: usize,
    check: &Arc<str>,
    slo: &Slo,
    firing: Option<(&BurnPair, f64)>,
    open: bool,
    now_ms: i64,
) -> Option<Transition> {
    let (change, message) = match (firing, open) {
        (Some((pair, rate)), false) => {
            let message = format!(
                "spending its error budget {rate:.1}x as fast as its SLO ({} % over {}) \
                 allows, over the last {} (alerting above {:.1}x: {:.0} % of the budget within it)",
                slo.target * 100.0,
                slo.window.as_str(),
                humantime::format_duration(pair.long),
                pair.rate(slo.window.duration()),
                pair.share * 100.0,
            );
            (Change::Open, Some(Arc::from(message)))
        }
        (None, true) => (Change::Close, None),
        _ => return None,
    };
    Some(Transition {
        rule,
        check: check.clone(),
        change,
        since_ms: now_ms,
        at_ms: now_ms,
        outcome: BURN_OUTCOME,
        message,
        burn: true,
    })
}

/// `check`'s share of non-up runs over the `window` before `now_ms`, every replica's,
/// or `None` without runs; each window is read once per evaluation, for every check.
async fn ratio(
    shared: &Shared,
    counts: &mut HashMap<Duration, Counts>,
    window: Duration,
    now_ms: i64,
    check: &str,
) -> Result<Option<f64>, sqlx::Error> {
    let by_check = match counts.entry(window) {
        Entry::Occupied(read) => read.into_mut(),
        Entry::Vacant(unread) => {
            // Minute rollups up to six hours, hour rollups beyond (minute ones are kept
            // two weeks, and three days of them are many rows).
            let (grain, length) = if window <= Duration::from_secs(6 * 3600) {
                ("m", 60_000)
            } else {
                ("h", 3_600_000)
            };
            let from = now_ms - window.as_millis() as i64;
            let since = from - from.rem_euclid(length);
            let rows = store::error_counts(&shared.pool, grain, since).await?;
            unread.insert(
                rows.into_iter()
                    .map(|(c, runs, bad)| (c, (runs, bad)))
                    .collect(),
            )
        }
    };
    let (runs, bad) = by_check.get(check).copied().unwrap_or_default();
    Ok((runs > 0).then(|| bad as f64 / runs as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Window;

    #[test]
    fn a_firing_pair_opens_and_none_closes_once() {
        let check: Arc<str> = Arc::from("db");
        let slo = Slo {
            target: 0.999,
            window: Window::Month,
        };
        let pair = &crate::config::BURN_PAIRS[0];
        let opened = change(0, &check, &slo, Some((pair, 100.0)), false, 5).unwrap();
        assert_eq!(
            (opened.change, opened.burn, opened.outcome),
            (Change::Open, true, BURN_OUTCOME)
        );
        let expected = "spending its error budget 100.0x as fast as its SLO (99.9 % over 30d) \
                        allows, over the last 1h (alerting above 14.4x: 2 % of the budget within it)";
        assert_eq!(opened.message.as_deref(), Some(expected));
        assert_eq!(change(0, &check, &slo, Some((pair, 100.0)), true, 6), None);
        assert_eq!(
            change(0, &check, &slo, None, true, 7).unwrap().change,
            Change::Close
        );
        assert_eq!(change(0, &check, &slo, None, false, 8), None);
    }
}
