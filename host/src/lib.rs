//! healthhost: runs service health checks as sandboxed WebAssembly components.
//!
//! Modules, one per concern; `ARCHITECTURE.md` has the map, the way data flows and the
//! invariants each keeps, and the tidy tests (`host/tests/all/tidy.rs`) keep the
//! imports acyclic. Leaves: [`limits`], [`units`], [`scrub`], [`escape`], [`names`],
//! [`problems`], [`auth`], [`cache`], [`contract`], [`dburl`], [`dbpool`]. Then
//! [`config`] (the config file, parsed then validated), [`capabilities`] (what plugins
//! may reach), [`runtime`] (engine, loading, runs and outcomes), [`samples`],
//! [`diagnose`] (what `check` explains), [`metrics`] and [`instrumentator`], [`health`]
//! (scheduling, results, wire formats), `health::dropins` (the watched plugins folder),
//! [`listing`], [`alerts`] (episodes, the outbox and the channels), [`usage`] (the `ai_usage` table: migrations, store, ingest, report),
//! [`server`] (the HTTP API), [`promrules`] (`healthhost rules`), [`scaffold`] (`healthhost new`) and [`cli`].

pub mod alerts;
pub mod auth;
pub mod cache;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod contract;
pub mod dbpool;
pub mod dburl;
pub mod diagnose;
pub mod escape;
pub mod health;
pub mod instrumentator;
pub mod journal;
pub mod limits;
pub mod listing;
pub mod metrics;
pub mod migrate;
pub mod names;
pub mod oci;
pub mod problems;
pub mod promrules;
pub mod runtime;
pub mod samples;
pub mod scaffold;
pub mod scrub;
pub mod server;
pub mod sync;
pub mod thresholds;
pub mod units;
pub mod usage;

/// The plugin contract (WIT), as shipped with this host.
pub const WIT: &str = include_str!("../../wit/plugin.wit");
