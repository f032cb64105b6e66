//! Paths of the guest components the build script compiled from source: one constant
//! per guest crate, named after the crate (`check-database` → `CHECK_DATABASE`).
//! Tests use these instead of committed `.wasm` files.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
