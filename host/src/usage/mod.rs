//! The AI usage feature, in one place: the `ai_usage` table the host owns
//! ([`migrate`]: its migrations, embedded per database kind from `migrations/`), the
//! read-write [`UsageStore`] (`store`), recording rows from `POST /v1/ai-usage`
//! ([`ingest`]: validation, write, metrics), the `healthhost usage` report
//! ([`report`]) and the summary `GET /v1/usage/summary` serves from it ([`summary`]).
//!
//! Migrations and the store use read-write connections of their own: the datasources
//! plugins query are read-only.

pub mod ingest;
pub mod report;
mod store;
pub mod summary;

pub use store::{
    CallStatus, Columns, NewUsage, ROWS_PER_STATEMENT, STORE_ACQUIRE_TIMEOUT, STORE_POOL_SIZE,
    STORE_SQLITE_POOL_SIZE, STORE_WRITE_TIMEOUT, StoreError, UsageStore,
};
