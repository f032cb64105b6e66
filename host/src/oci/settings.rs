//! How to reach OCI registries and whom to trust for which repositories, as the
//! config says (`config::oci` resolves the sections into these): plain HTTP only when
//! said, credentials from the config or the Docker config file, keys and keyless
//! identities per prefix, and the keyless trust root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::client::Settings;
use super::keyless::Identity;

/// One registry operation's deadline when `timeout` says nothing: enough for a large
/// Python plugin over a slow link, and a registry that trickles still ends.
pub const DEFAULT_REGISTRY_TIMEOUT: Duration = Duration::from_secs(300);

/// The OCI sections, resolved.
#[derive(Debug, Clone, Default)]
pub struct OciConfig {
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Trust entries; the longest prefix covering a reference decides.
    pub trust: Vec<TrustConfig>,
    /// The mirror folder (an OCI image layout) plugins are loaded from first.
    pub mirror: Option<PathBuf>,
    /// Keyless signatures' trust root: Fulcio's root certificates (PEM files) and
    /// Rekor's public keys (PEM files).
    pub fulcio_roots: Vec<PathBuf>,
    pub rekor_keys: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub timeout: Option<Duration>,
    /// PEM certificates to trust for this registry besides the system's.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TrustConfig {
    /// `registry` or `registry/repository/prefix`.
    pub prefix: String,
    /// Cosign public keys (PEM files).
    pub keys: Vec<PathBuf>,
    /// The certificate identities whose keyless signatures are trusted.
    pub keyless: Vec<Identity>,
    /// Plugins under the prefix load without a signature.
    pub allow_unsigned: bool,
}

impl OciConfig {
    /// How to reach `registry`: its `[registries]` entry, credentials from the Docker
    /// config file when the entry has none.
    pub fn settings(&self, registry: &str) -> Settings {
        let entry = self.registries.get(registry).cloned().unwrap_or_default();
        let (username, password) = match entry.username {
            Some(user) => (Some(user), entry.password),
            None => docker_credentials(registry).unzip(),
        };
        Settings {
            insecure: entry.insecure,
            username,
            password,
            timeout: entry.timeout.unwrap_or(DEFAULT_REGISTRY_TIMEOUT),
            ca: entry.ca,
        }
    }
}

/// The user name and password for `registry` in the Docker config file
/// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), if it has them.
fn docker_credentials(registry: &str) -> Option<(String, String)> {
    use base64::Engine;
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let entry = json.get("auths")?.get(registry)?;
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()?;
        let (user, password) = String::from_utf8(decoded)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
        return Some((user, password));
    }
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    Some((field("username")?, field("password")?))
}
