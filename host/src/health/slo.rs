//! Each check's SLO in `/metrics`: every [`SLO_REFRESH`], the target and what is left of
//! the error budget (`check_slo_target`, `check_error_budget_remaining`) of every
//! loaded check with an `slo`, read from the history store, so a scrape never waits
//! on the database and every replica exports the same numbers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Health;
use crate::dbpool::DbPool;
use crate::journal::read::slo;
use crate::metrics::Metrics;

/// How often the SLO gauges are read again: budgets move over days, and each refresh
/// reads one check's rollups per SLO.
pub const SLO_REFRESH: Duration = Duration::from_secs(15);

/// Refreshes the SLO gauges now and every [`SLO_REFRESH`], until the task is dropped;
/// a check whose numbers cannot be read keeps its last ones.
pub async fn watch(health: Arc<Health>, metrics: Arc<Metrics>, pool: DbPool) {
    let mut tick = tokio::time::interval(SLO_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let set = health.set();
        let objectives = set.entries.iter().filter_map(|(name, entry)| {
            let objective = entry.check.as_ref()?.config.slo?;
            Some((name, objective))
        });
        for (name, objective) in objectives {
            match slo(&pool, name, &objective, SystemTime::now()).await {
                Ok(doc) => {
                    let checks = &metrics.checks;
                    checks
                        .slo_target
                        .with_label_values(&[name])
                        .set(objective.target);
                    let remaining = checks.error_budget_remaining.with_label_values(&[name]);
                    remaining.set(doc.budget_remaining);
                    metrics.changed();
                }
                Err(e) => tracing::debug!(check = %name, "cannot read the SLO: {e}"),
            }
        }
    }
}
