//! The `config` import (WIT): a check's own settings and secrets.
//!
//! Policy: [`Settings`], the key/values the operator gave the check; a value taken from
//! the environment is a secret, and every secret is scrubbed from what the host emits.
//! Per-run state: [`SettingsState`], a shared read-only view and the keys the run read
//! (for `healthhost check`'s diagnostics).

use std::sync::Arc;

use super::bindings::healthhost::plugin::config as wit;
use super::{Noted, RunContext, held};
use crate::scrub::Scrubber;

use crate::config::grants::Settings;

/// What the `config` import of one run can read, and the keys it asked for.
pub struct SettingsState {
    pub(crate) settings: Arc<Settings>,
    pub(crate) scrubber: Arc<Scrubber>,
    pub(crate) read: Noted<String>,
}

impl SettingsState {
    /// The state of one run given `settings`.
    pub fn new(run: &RunContext, settings: Arc<Settings>) -> SettingsState {
        SettingsState {
            settings,
            scrubber: run.scrubber.clone(),
            read: Noted::default(),
        }
    }
}

impl wit::Host for SettingsState {
    async fn get(&mut self, key: String) -> Option<String> {
        // A key is the plugin's own text: scrubbed with the run's report.
        self.read.push(held(&self.scrubber, &key));
        self.settings.get(&key).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_listed_and_plain_values_are_not() {
        let mut s = Settings::default();
        s.set("base_url", "https://api.telegram.org");
        s.set_secret("token", "123:abc");
        assert_eq!(s.get("token"), Some("123:abc"));
        assert_eq!(s.get("missing"), None);
        assert_eq!(s.secrets().collect::<Vec<_>>(), ["123:abc"]);
        assert_eq!(
            s.keys().collect::<Vec<_>>(),
            [("base_url", false), ("token", true)]
        );
    }
}
