//! Episodes as this replica sees its results: per rule and check, the run of non-up
//! and up results, and the transitions it proposes (open, remind, close). What the
//! store then records decides: the store's conditional writes keep one episode per
//! rule and check however many replicas propose, and [`Streaks::sync`] brings this
//! replica's belief back in line with what the others recorded.
//!
//! An episode opens at the result that brings the non-up count to `after` (and the run
//! to `for`), and closes at the one that brings the up count to `recover_after`; each
//! is proposed once per run. A run that began before the other replicas' last change
//! of the episode counts again from after it, so no replica reopens what another just
//! closed, nor closes what another opened after its own recovery began.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Slo;
use crate::config::alerts::Rule;

/// One recorded result, as alerting needs it.
#[derive(Debug, Clone)]
pub struct Observation {
    pub check: Arc<str>,
    pub critical: bool,
    /// When the run ended, in Unix milliseconds.
    pub at_ms: i64,
    /// Whether the outcome counts as up (`pass` or `warn`).
    pub up: bool,
    pub outcome: &'static str,
    pub message: Option<Arc<str>>,
    /// Its service level objective, for `slo_burn` rules.
    pub slo: Option<Slo>,
}

/// What a transition does to an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Open,
    Remind,
    Close,
}

impl Change {
    /// Its name in the outbox and in webhook bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Open => "open",
            Change::Remind => "reminder",
            Change::Close => "close",
        }
    }

    pub fn parse(text: &str) -> Option<Change> {
        [Change::Open, Change::Remind, Change::Close]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

/// A transition this replica proposes to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The rule's index in the config's rules.
    pub rule: usize,
    pub check: Arc<str>,
    pub change: Change,
    /// The run's first result: the episode's start (open, remind) or the recovery's.
    pub since_ms: i64,
    /// The result that decided it.
    pub at_ms: i64,
    pub outcome: &'static str,
    pub message: Option<Arc<str>>,
    /// Whether it is an SLO burn episode's (recorded under the rule's burn name).
    pub burn: bool,
}

/// The store's view of one rule and check's episode, as [`Streaks::sync`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub rule: String,
    pub check: String,
    pub open: bool,
    /// The episode's first non-up result.
    pub since_ms: i64,
    pub opened_ms: i64,
    pub closed_ms: i64,
    pub reminded_ms: i64,
    /// The replica that opened it.
    pub node: Option<String>,
}

/// One rule and check, as this replica sees it.
#[derive(Debug, Default)]
struct Streak {
    down: u32,
    down_since: i64,
    up: u32,
    up_since: i64,
    /// Whether an episode is open, as far as this replica knows.
    open: bool,
    /// Whether this run already proposed its open (or close).
    proposed: bool,
    reminded_ms: i64,
}

/// Every rule and check's streak.
#[derive(Debug, Default)]
pub struct Streaks {
    streaks: HashMap<(usize, Arc<str>), Streak>,
}

impl Streaks {
    /// The transitions `result` proposes under `rules`.
    pub fn observe(&mut self, rules: &[Rule], result: &Observation) -> Vec<Transition> {
        let mut out = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if rule.slo_burn || !rule.covers(&result.check, result.critical) {
                continue;
            }
            let streak = self
                .streaks
                .entry((index, result.check.clone()))
                .or_default();
            let proposed = if result.up {
                streak.up(rule, result.at_ms)
            } else {
                streak.down(rule, result.at_ms)
            };
            out.extend(proposed.map(|(change, since_ms)| Transition {
                rule: index,
                check: result.check.clone(),
                change,
                since_ms,
                at_ms: result.at_ms,
                outcome: result.outcome,
                message: result.message.clone(),
                burn: false,
            }));
        }
        out
    }

    /// Takes the store's episodes (of every rule and check this replica has seen) as
    /// the truth: what is open, and runs that began before the last change restart.
    pub fn sync(&mut self, rules: &[Rule], recorded: &[Recorded]) {
        let by_key: HashMap<(&str, &str), &Recorded> = recorded
            .iter()
            .map(|r| ((r.rule.as_str(), r.check.as_str()), r))
            .collect();
        for ((index, check), streak) in &mut self.streaks {
            let Some(rule) = rules.get(*index) else {
                continue;
            };
            match by_key.get(&(rule.name.as_str(), &**check)) {
                Some(r) => streak.sync(r),
                None => streak.open = false,
            }
        }
    }
}

impl Streak {
    /// A non-up result at `at`: an open when this brings the run to the rule's count
    /// and length, a reminder when one is due.
    fn down(&mut self, rule: &Rule, at: i64) -> Option<(Change, i64)> {
        if self.down == 0 {
            self.down_since = at;
            self.proposed = false;
        }
        self.down += 1;
        self.up = 0;
        let long_enough = at - self.down_since >= rule.hold.as_millis() as i64;
        if !self.open && !self.proposed && self.down >= rule.after && long_enough {
            self.proposed = true;
            self.open = true;
            self.reminded_ms = at;
            return Some((Change::Open, self.down_since));
        }
        let repeat = rule.repeat?.as_millis() as i64;
        if self.open && at - self.reminded_ms >= repeat {
            self.reminded_ms = at;
            return Some((Change::Remind, self.down_since));
        }
        None
    }

    /// An up result at `at`: a close when this brings the run to `recover_after`.
    fn up(&mut self, rule: &Rule, at: i64) -> Option<(Change, i64)> {
        if self.up == 0 {
            self.up_since = at;
            self.proposed = false;
        }
        self.up += 1;
        self.down = 0;
        if self.open && !self.proposed && self.up >= rule.recover_after {
            self.proposed = true;
            self.open = false;
            return Some((Change::Close, self.up_since));
        }
        None
    }

    fn sync(&mut self, recorded: &Recorded) {
        self.open = recorded.open;
        self.reminded_ms = self.reminded_ms.max(recorded.reminded_ms);
        // A run that began before the episode's last change counts from after it.
        if recorded.open && self.up > 0 && self.up_since <= recorded.opened_ms {
            self.up = 0;
        }
        if !recorded.open && self.down > 0 && self.down_since <= recorded.closed_ms {
            self.down = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rule(after: u32, recover_after: u32) -> Rule {
        Rule {
            name: "all".into(),
            checks: vec!["*".into()],
            critical: false,
            channels: vec!["ops".into()],
            after,
            hold: Duration::ZERO,
            recover_after,
            repeat: None,
            group_wait: Duration::ZERO,
            slo_burn: false,
        }
    }

    fn result(at_ms: i64, up: bool) -> Observation {
        Observation {
            check: Arc::from("db"),
            critical: false,
            at_ms,
            up,
            outcome: if up { "pass" } else { "fail" },
            message: None,
            slo: None,
        }
    }

    /// The changes `ups` (one result per second) propose.
    fn changes(rules: &[Rule], streaks: &mut Streaks, ups: &[bool]) -> Vec<(Change, i64, i64)> {
        let mut out = Vec::new();
        for (i, up) in ups.iter().enumerate() {
            let at = (i as i64 + 1) * 1000;
            for t in streaks.observe(rules, &result(at, *up)) {
                out.push((t.change, t.since_ms, t.at_ms));
            }
        }
        out
    }

    #[test]
    fn opens_at_the_nth_failure_and_closes_at_the_recovery() {
        let rules = [rule(3, 2)];
        let got = changes(
            &rules,
            &mut Streaks::default(),
            &[true, false, false, false, false, true, true, true],
        );
        assert_eq!(
            got,
            [(Change::Open, 2000, 4000), (Change::Close, 6000, 7000)]
        );
    }

    #[test]
    fn a_flap_shorter_than_after_proposes_nothing() {
        let rules = [rule(3, 1)];
        let flaps = [false, false, true, false, true, false, false, true];
        assert_eq!(changes(&rules, &mut Streaks::default(), &flaps), []);
    }

    #[test]
    fn for_holds_the_open_until_the_run_is_long_enough() {
        let mut r = rule(1, 1);
        r.hold = Duration::from_secs(3);
        let got = changes(
            &[r],
            &mut Streaks::default(),
            &[false, false, false, false, false],
        );
        assert_eq!(got, [(Change::Open, 1000, 4000)]);
    }

    #[test]
    fn reminders_come_every_repeat_while_open() {
        let mut r = rule(1, 1);
        r.repeat = Some(Duration::from_secs(2));
        let got = changes(&[r], &mut Streaks::default(), &[false; 6]);
        let kinds: Vec<_> = got.iter().map(|(c, _, at)| (*c, *at)).collect();
        assert_eq!(
            kinds,
            [
                (Change::Open, 1000),
                (Change::Remind, 3000),
                (Change::Remind, 5000)
            ]
        );
    }

    #[test]
    fn rules_cover_only_their_checks() {
        let mut other = rule(1, 1);
        other.checks = vec!["api-*".into()];
        let got = changes(&[other], &mut Streaks::default(), &[false, false]);
        assert_eq!(got, []);
    }

    #[test]
    fn a_run_older_than_another_replicas_close_does_not_reopen() {
        let rules = [rule(2, 1)];
        let mut streaks = Streaks::default();
        // This replica saw one failure at 1 s; another opened and closed by 1.5 s.
        changes(&rules, &mut streaks, &[false]);
        streaks.sync(
            &rules,
            &[Recorded {
                rule: "all".into(),
                check: "db".into(),
                open: false,
                since_ms: 0,
                node: None,
                opened_ms: 500,
                closed_ms: 1500,
                reminded_ms: 500,
            }],
        );
        // The next failure is the run's first again: no open at 2 s, one at 3 s.
        let mut got = Vec::new();
        for at in [2000, 3000] {
            got.extend(streaks.observe(&rules, &result(at, false)));
        }
        let opens: Vec<_> = got.iter().map(|t| (t.change, t.since_ms)).collect();
        assert_eq!(opens, [(Change::Open, 2000)]);
    }

    #[test]
    fn an_episode_another_replica_opened_closes_at_this_ones_next_recovery() {
        let rules = [rule(3, 1)];
        let mut streaks = Streaks::default();
        // Up here all along; the other replica opened at 1.5 s.
        changes(&rules, &mut streaks, &[true]);
        let open = Recorded {
            rule: "all".into(),
            check: "db".into(),
            open: true,
            since_ms: 0,
            node: None,
            opened_ms: 1500,
            closed_ms: 0,
            reminded_ms: 1500,
        };
        streaks.sync(&rules, &[open]);
        let got = streaks.observe(&rules, &result(2000, true));
        let closes: Vec<_> = got.iter().map(|t| (t.change, t.since_ms)).collect();
        assert_eq!(closes, [(Change::Close, 2000)]);
    }
}
