//! Host capabilities: what a plugin can reach outside its own memory.
//!
//! Each capability is a module with its per-run state (built by its own `…State::new`
//! from its policy, which `config::grants` defines with the other grants, and a
//! [`RunContext`]) and its host implementation of the WIT interface; `runtime::state`
//! registers them all in the linker, each import seeing only its own slice of the
//! store. Everything is denied by default: a check with default
//! [`Grants`](crate::config::grants::Grants) can compute, read clocks and random
//! numbers, and nothing else.

pub mod fixtures;
pub mod http;
pub mod log;
pub mod settings;
pub mod sql;

use std::sync::Arc;

use crate::limits::{DIAGNOSTIC_MAX_ENTRIES, DIAGNOSTIC_MAX_TEXT_BYTES, Deadline};
use crate::scrub::Scrubber;

/// Rust bindings of the WIT contract in `wit/plugin.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "check",
        imports: { default: async },
        exports: { default: async },
        // SQL rows and errors cross to and from SQLite worker processes.
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

use crate::config::grants::Settings;

/// What every capability's per-run state starts from: whose run it is, the scrubber
/// of its secrets, the run's deadline, and (under `healthhost check`) the fixtures
/// answering it instead of the network and the databases.
#[derive(Clone)]
pub struct RunContext {
    pub check: Arc<str>,
    pub scrubber: Arc<Scrubber>,
    pub deadline: Deadline,
    pub fixtures: Option<Arc<fixtures::Fixtures>>,
}

/// A call the host refused: not granted, malformed, or (under `healthhost check`) not
/// answered by any fixture. Shown to plugin authors beside the verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// `http` or `sql`.
    pub capability: &'static str,
    /// The call as the plugin made it (`GET https://…`, `main: SELECT …`); scrubbed
    /// when the run's report is made, like `why`.
    pub call: String,
    /// Why it was refused, as the plugin was told.
    pub why: String,
}

/// A bounded list of texts a run produced for diagnostics: at most
/// [`DIAGNOSTIC_MAX_ENTRIES`], each as [`held`] keeps it.
#[derive(Debug, Clone)]
pub struct Noted<T> {
    entries: Vec<T>,
}

impl<T> Default for Noted<T> {
    fn default() -> Self {
        Noted {
            entries: Vec::new(),
        }
    }
}

impl<T: PartialEq> Noted<T> {
    /// Keeps `entry` unless it is already kept or the record is full.
    pub fn push(&mut self, entry: T) {
        if self.entries.len() < DIAGNOSTIC_MAX_ENTRIES && !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    /// The entries, in the order they came.
    pub fn into_vec(self) -> Vec<T> {
        self.entries
    }
}

/// A plugin-influenced text held for the run's diagnostics, not yet scrubbed: cut to
/// [`DIAGNOSTIC_MAX_TEXT_BYTES`] and the scrubber's lookahead, so that a secret
/// straddling the cap is still whole when the run's report scrubs it (the one place
/// where text leaves a run: `runtime::run_once`), and then cut to the cap.
pub fn held(scrubber: &Scrubber, text: &str) -> String {
    crate::scrub::cut(text, DIAGNOSTIC_MAX_TEXT_BYTES + scrubber.lookahead()).to_owned()
}

/// The secrets of a check, for its scrubber: its secret settings and the passwords of
/// the datasources.
pub fn secrets<'a>(
    settings: &'a Settings,
    datasources: &'a sql::Datasources,
) -> impl Iterator<Item = &'a str> {
    settings.secrets().chain(datasources.secrets())
}
