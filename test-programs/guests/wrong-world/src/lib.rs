//! A component built for wasm32-wasip2 that exports nothing of the check world, for
//! the host's load-error tests.

/// An export of no world the host knows.
pub fn unrelated() -> u32 {
    42
}
