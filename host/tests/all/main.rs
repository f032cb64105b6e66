//! The integration tests, as one binary (as wasmtime's `tests/all`): each module is
//! one concern, the helpers are in `common`, and wasmtime and sqlx are linked once.
//! The guests the tests run are built from source by `test-artifacts`.

mod common;

mod alerts;
mod authoring;
mod browser;
mod builtins;
mod capabilities;
mod cli;
mod deploy;
mod docs;
mod dropins;
mod history;
mod isolation;
mod journal;
mod keyless;
mod migrate;
mod oci;
mod page;
mod replicas;
mod runtime;
mod serve;
mod tidy;
mod usage;
