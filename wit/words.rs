// The words for the contract's errors (`plugin.wit`) that the host and the Rust SDK both
// show, defined once: `host/src/capabilities/http.rs` and `sdk/src/lib.rs` include this
// file, and `healthhost new` copies it beside the contract for the SDK it copies.

/// `http` `error::denied(origin)`: the request's origin is not among the check's grants.
pub fn origin_not_granted(origin: &str) -> String {
    format!("origin {origin} not granted")
}
