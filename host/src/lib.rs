//! healthhost: runs service health checks as sandboxed WebAssembly components.
//!
//! Modules, one per concern: [`config`] (the config file, parsed then validated),
//! [`limits`] (every limit and default), [`units`] (durations and sizes), [`scrub`]
//! (secret removal), [`escape`] (control characters in output), [`capabilities`] (what
//! plugins may reach), [`runtime`] (engine, loading, runs and outcomes), [`samples`]
//! (which plugin samples are kept and exported), [`cache`] (compiled plugins on disk), [`health`]
//! (scheduling, results, formats), [`metrics`] (the Prometheus registry),
//! [`instrumentator`] (the bot's HTTP metric families), [`server`]
//! (the HTTP API), [`usage`] (the
//! `ai_usage` table: migrations and the read-write store), [`ingest`] (recording AI
//! usage: validation, write, metrics), [`report`] (the usage report), [`dropins`] (the
//! config's checks and the watched plugins folder), [`listing`] (`healthhost list`),
//! [`cli`] (the command line).

pub mod auth;
pub mod cache;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod contract;
pub mod diagnose;
pub mod dropins;
pub mod escape;
pub mod health;
pub mod instrumentator;
pub mod limits;
pub mod listing;
pub mod metrics;
pub mod names;
pub mod problems;
pub mod runtime;
pub mod samples;
pub mod scaffold;
pub mod scrub;
pub mod server;
pub mod units;
pub mod usage;

/// The plugin contract (WIT), as shipped with this host.
pub const WIT: &str = include_str!("../../wit/plugin.wit");
