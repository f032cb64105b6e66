//! `healthhost list`: every check of a config and its plugins folder, with its source,
//! file hash, grants, limits, interval, load status, and the last outcome a running
//! host reports for it — as a table for people or as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::health::wire::{CheckDoc, HealthDoc};
use serde::Serialize;

use crate::config::Source;
use crate::escape::escape_controls;
use crate::health::CheckSet;
use crate::units::format_size;

/// How long `list` waits for a running host's `/health`.
pub const HOST_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// One check as `list` shows it.
#[derive(Debug, Serialize)]
pub struct Listed {
    pub name: String,
    pub source: Source,
    pub file: String,
    /// `loaded`, or `error` (see `load_error`; an older version may still run in a host).
    pub status: &'static str,
    pub load_error: Option<String>,
    pub sha256: Option<String>,
    pub critical: bool,
    pub interval_seconds: Option<f64>,
    pub limits: Option<ListedLimits>,
    pub grants: Option<ListedGrants>,
    /// The latest result a running host reports (outcome, age, message), if one answers.
    pub last: Option<CheckDoc>,
}

#[derive(Debug, Serialize)]
pub struct ListedLimits {
    pub timeout_seconds: f64,
    pub fuel: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ListedGrants {
    pub http: Vec<String>,
    pub sql: Vec<String>,
    pub metrics: Vec<String>,
    /// Setting keys (values are never listed); secret ones end in ` (secret)`.
    pub settings: Vec<String>,
}

/// The rows of `set`, with each check's entry of a running host's `/health` (`last`).
pub fn rows(set: &CheckSet, last: Option<&BTreeMap<String, CheckDoc>>) -> Vec<Listed> {
    let mut rows: Vec<Listed> = set
        .entries
        .iter()
        .map(|(name, entry)| {
            let config = entry.check.as_ref().map(|c| &c.config);
            Listed {
                name: name.clone(),
                source: entry.source,
                file: entry.file.display().to_string(),
                status: if entry.load_error.is_some() {
                    "error"
                } else {
                    "loaded"
                },
                load_error: entry.load_error.as_ref().map(ToString::to_string),
                sha256: entry.check.as_ref().map(|c| c.plugin.sha256().to_owned()),
                critical: entry.critical,
                interval_seconds: config.map(|c| c.interval.as_secs_f64()),
                limits: config.map(|c| ListedLimits {
                    timeout_seconds: c.limits.timeout.as_secs_f64(),
                    fuel: c.limits.fuel,
                    memory_bytes: c.limits.memory,
                }),
                grants: config.map(|c| ListedGrants {
                    http: c.grants.http.entries(),
                    sql: c.grants.sql.names().map(str::to_owned).collect(),
                    metrics: c.grants.metrics.iter().cloned().collect(),
                    settings: c
                        .settings
                        .keys()
                        .map(|(k, secret)| {
                            if secret {
                                format!("{k} (secret)")
                            } else {
                                k.to_owned()
                            }
                        })
                        .collect(),
                }),
                last: last.and_then(|l| l.get(name)).cloned(),
            }
        })
        .collect();
    rows.extend(set.rejected.iter().map(|(file, why)| {
        Listed {
            name: file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source: Source::Folder,
            file: file.display().to_string(),
            status: "error",
            load_error: Some(why.clone()),
            sha256: None,
            critical: false,
            interval_seconds: None,
            limits: None,
            grants: None,
            last: None,
        }
    }));
    rows
}

/// The URL of a host listening on `listen`, from this machine.
pub fn local_url(listen: SocketAddr) -> url::Url {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    url::Url::parse(&format!("http://{addr}")).expect("an address makes a URL")
}

/// The `checks` of the `/health` of the host at `host`, if one answers.
pub async fn running_host(host: &url::Url) -> Option<BTreeMap<String, CheckDoc>> {
    let client = reqwest::Client::builder()
        .timeout(HOST_QUERY_TIMEOUT)
        .build()
        .ok()?;
    let bytes = client
        .get(host.join("health").ok()?)
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let body: HealthDoc = serde_json::from_slice(&bytes).ok()?;
    Some(body.checks)
}

/// The rows as text: one block per check. Names, errors and what a host answered can
/// come from a plugin: their control characters are escaped.
pub fn human(rows: &[Listed], host_answered: bool) -> String {
    let mut out = String::new();
    for row in rows {
        let source = match row.source {
            Source::Config => "config",
            Source::Folder => "folder",
        };
        let critical = if row.critical { ", critical" } else { "" };
        out.push_str(&format!(
            "{} ({source}{critical}): {}\n",
            escape_controls(&row.name),
            row.status
        ));
        let mut line = |key: &str, value: String| {
            out.push_str(&format!("  {key:<9}{}\n", escape_controls(&value)));
        };
        line("file", row.file.clone());
        if let Some(error) = &row.load_error {
            line("error", error.clone());
        }
        if let Some(sha) = &row.sha256 {
            line("sha256", sha.clone());
        }
        if let (Some(limits), Some(interval)) = (&row.limits, row.interval_seconds) {
            line(
                "runs",
                format!(
                    "every {}, timeout {}, fuel {}, memory {}",
                    seconds(interval),
                    seconds(limits.timeout_seconds),
                    limits.fuel,
                    format_size(limits.memory_bytes)
                ),
            );
        }
        if let Some(g) = &row.grants {
            let list = |items: &[String]| {
                if items.is_empty() {
                    "-".to_owned()
                } else {
                    items.join(", ")
                }
            };
            line(
                "grants",
                format!(
                    "http: {}; sql: {}; metrics: {}",
                    list(&g.http),
                    list(&g.sql),
                    list(&g.metrics)
                ),
            );
            line("settings", list(&g.settings));
        }
        let last = match (&row.last, host_answered) {
            (Some(last), _) => {
                let outcome = last.outcome.as_deref().unwrap_or("not run yet");
                match last.age_seconds {
                    Some(age) => format!("{outcome} ({age}s ago)"),
                    // Never run, or still loading: there is no age to show.
                    None => outcome.to_owned(),
                }
            }
            (None, true) => "not in the running host".to_owned(),
            (None, false) => "unknown: no host answered".to_owned(),
        };
        line("last", last);
    }
    if rows.is_empty() {
        out.push_str("no checks\n");
    }
    out
}

fn seconds(s: f64) -> String {
    humantime::format_duration(Duration::from_secs_f64(s)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_shows_an_age_only_when_the_check_has_run() {
        let row = |last: CheckDoc| Listed {
            name: "c".to_owned(),
            source: Source::Folder,
            file: "c.wasm".to_owned(),
            status: "error",
            load_error: None,
            sha256: None,
            critical: false,
            interval_seconds: None,
            limits: None,
            grants: None,
            last: Some(last),
        };
        let doc = |outcome: Option<&str>, age_seconds| CheckDoc {
            age_seconds,
            critical: false,
            healthy: true,
            latency_ms: None,
            load_error: None,
            message: None,
            outcome: outcome.map(str::to_owned),
            status: "pass".to_owned(),
            digest: None,
        };
        let cases = [
            (doc(Some("pass"), Some(2.5)), "pass (2.5s ago)"),
            (doc(Some("loading"), None), "loading"),
            (doc(None, None), "not run yet"),
        ];
        for (last, shown) in cases {
            let text = human(&[row(last)], true);
            assert!(text.contains(&format!("last     {shown}\n")), "{text}");
        }
    }
}
