//! healthhost: runs service health checks as sandboxed WebAssembly components.
//!
//! Modules, one per concern: [`limits`] (every limit and default), [`units`]
//! (durations and sizes), [`scrub`] (secret removal), [`capabilities`] (what plugins
//! may reach), [`runtime`] (engine, loading, runs and outcomes), [`cli`] (the command
//! line).

pub mod capabilities;
pub mod cli;
pub mod limits;
pub mod runtime;
pub mod scrub;
pub mod units;

/// The plugin contract (WIT), as shipped with this host.
pub const WIT: &str = include_str!("../../wit/plugin.wit");
