//! Host capabilities: what a plugin can reach outside its own memory.
//!
//! Each capability is a module with the same four parts, in order: its policy type (what
//! the operator granted), its per-run state, its host implementation of the WIT
//! interface, and its linker registration — each import sees only its own slice of
//! the store ([`RunState`]). Everything is denied by default: a check with default
//! [`Grants`] can compute, read clocks and random numbers, and nothing else.

pub mod config;
pub mod http;
pub mod log;
pub mod sql;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::runtime::limiter::MemoryLimiter;

/// Rust bindings of the WIT contract in `wit/plugin.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "check",
        imports: { default: async },
        exports: { default: async },
    });
}

/// Everything the operator granted one check.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Origins it may send HTTP requests to.
    pub http: http::HttpPolicy,
    /// Datasources it may query.
    pub sql: sql::SqlPolicy,
    /// Its settings and secrets.
    pub settings: config::Settings,
}

/// The store's data for one run: WASI, the memory limiter, and one slice per
/// capability.
pub struct RunState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) http: http::HttpState,
    pub(crate) sql: sql::SqlState,
    pub(crate) config: config::ConfigState,
    pub(crate) log: log::LogState,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Registers WASI and every capability with the linker, each import projected onto its
/// own slice of [`RunState`].
pub fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    use bindings::healthhost::plugin as wit;
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::http::add_to_linker::<_, HasSelf<http::HttpState>>(linker, |s| &mut s.http)?;
    wit::sql::add_to_linker::<_, HasSelf<sql::SqlState>>(linker, |s| &mut s.sql)?;
    wit::config::add_to_linker::<_, HasSelf<config::ConfigState>>(linker, |s| &mut s.config)?;
    wit::log::add_to_linker::<_, HasSelf<log::LogState>>(linker, |s| &mut s.log)?;
    Ok(())
}

/// The secrets of a check, for its scrubber.
pub fn secrets<'a>(
    grants: &'a Grants,
    datasources: &'a sql::Datasources,
) -> impl Iterator<Item = &'a str> {
    grants.settings.secrets().chain(datasources.secrets())
}
