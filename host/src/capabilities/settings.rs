//! The `config` import (WIT): a check's own settings and secrets.
//!
//! Policy: [`Settings`], the key/values the operator gave the check; a value taken from
//! the environment is a secret, and every secret is scrubbed from what the host emits.
//! Per-run state: [`SettingsState`], a shared read-only view and the keys the run read
//! (for `healthhost check`'s diagnostics).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::bindings::healthhost::plugin::config as wit;
use super::{Record, RunContext, diagnostic_text};
use crate::scrub::Scrubber;

/// One setting's value and whether it is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub secret: bool,
}

/// A check's settings. The default has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, Setting>,
}

impl Settings {
    /// Sets a plain (non-secret) value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        self.values.insert(
            key.into(),
            Setting {
                value,
                secret: false,
            },
        );
    }

    /// Sets a secret value.
    pub fn set_secret(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        self.values.insert(
            key.into(),
            Setting {
                value,
                secret: true,
            },
        );
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|s| s.value.as_str())
    }

    /// Every secret value.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.values
            .values()
            .filter(|s| s.secret)
            .map(|s| s.value.as_str())
    }

    /// Keys and whether each is secret (values are never listed).
    pub fn keys(&self) -> impl Iterator<Item = (&str, bool)> {
        self.values.iter().map(|(k, s)| (k.as_str(), s.secret))
    }
}

/// What the `config` import of one run can read, and the keys it asked for.
pub struct SettingsState {
    pub(crate) settings: Arc<Settings>,
    pub(crate) scrubber: Arc<Scrubber>,
    pub(crate) read: Record<String>,
}

impl SettingsState {
    /// The state of one run given `settings`.
    pub fn new(run: &RunContext, settings: Arc<Settings>) -> SettingsState {
        SettingsState {
            settings,
            scrubber: run.scrubber.clone(),
            read: Record::default(),
        }
    }
}

impl wit::Host for SettingsState {
    async fn get(&mut self, key: String) -> Option<String> {
        // A key is the plugin's own text: scrubbed, then cut, like every other.
        self.read.push(diagnostic_text(&self.scrubber, &key));
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
