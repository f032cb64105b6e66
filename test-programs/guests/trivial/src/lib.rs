//! Test guest `trivial`: a check that always passes with message "ok" and no
//! samples, and touches no import. The host's smallest end-to-end case.

wit_bindgen::generate!({ world: "check", path: "../../../wit" });

use healthhost::plugin::types::Status;

struct Trivial;

impl Guest for Trivial {
    fn check() -> Report {
        Report {
            status: Status::Pass,
            message: Some("ok".into()),
            samples: Vec::new(),
        }
    }
}

// The export glue wit-bindgen generates declares `unsafe` exported symbols: the
// only unsafe code in this crate, allowed here and nowhere else.
#[allow(unsafe_code)]
mod export {
    use super::Trivial;
    super::export!(Trivial with_types_in super);
}
