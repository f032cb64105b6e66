//! The store's data for one run ([`RunState`]): WASI, the memory limiter, and one
//! slice per capability; and the linker registration that projects each import onto
//! its own slice.

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limiter::MemoryLimiter;
use crate::capabilities::{bindings, http, log, settings, sql};

/// The store's data for one run: WASI, the memory limiter, and one slice per
/// capability.
pub struct RunState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) http: http::HttpState,
    pub(crate) sql: sql::SqlState,
    pub(crate) settings: settings::SettingsState,
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
    wit::config::add_to_linker::<_, HasSelf<settings::SettingsState>>(linker, |s| &mut s.settings)?;
    wit::log::add_to_linker::<_, HasSelf<log::LogState>>(linker, |s| &mut s.log)?;
    Ok(())
}
