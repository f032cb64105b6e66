//! `[registries."HOST"]`, `[trust."PREFIX"]` and `registry_mirror`, resolved into the
//! OCI store's settings (`oci::settings`): each registry's scheme, `${VAR}`
//! credentials and deadline, and each trust prefix's public keys.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::alerts::secret_value;
use super::raw::{RawRegistry, RawTrust};
use super::resolve::duration;
use crate::oci::settings::{DEFAULT_REGISTRY_TIMEOUT, OciConfig, RegistryConfig, TrustConfig};
use crate::problems::Problems;

/// Resolves the OCI sections; key paths are relative to `base`.
pub(super) fn resolve_oci(
    registries: BTreeMap<String, Spanned<RawRegistry>>,
    trust: BTreeMap<String, Spanned<RawTrust>>,
    mirror: Option<&Path>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> OciConfig {
    OciConfig {
        registries: registries
            .into_iter()
            .map(|(host, raw)| {
                let registry = resolve_registry(&host, raw, env, problems);
                (host, registry)
            })
            .collect(),
        trust: trust
            .into_iter()
            .map(|(prefix, raw)| resolve_trust(prefix, raw, base, problems))
            .collect(),
        mirror: mirror.map(|m| base.join(m)),
    }
}

fn resolve_registry(
    host: &str,
    raw: Spanned<RawRegistry>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> RegistryConfig {
    let key = format!("registries.\"{host}\"");
    let span = raw.span();
    let raw = raw.into_inner();
    if host.is_empty() || host.contains('/') || host.contains("://") {
        let why = "a registry is written host or host:port, without a scheme or path";
        problems.add(span.clone(), key.clone(), why);
    }
    let username = secret_value(
        &raw.username,
        &format!("{key}.username"),
        None,
        env,
        problems,
    );
    let password = secret_value(
        &raw.password,
        &format!("{key}.password"),
        None,
        env,
        problems,
    );
    if password.is_some() && username.is_none() {
        problems.add(span, key.clone(), "a password needs a username");
    }
    let timeout = raw.timeout.as_ref().map(|_| {
        let key = format!("{key}.timeout");
        duration(&raw.timeout, key, DEFAULT_REGISTRY_TIMEOUT, problems)
    });
    RegistryConfig {
        insecure: raw.insecure,
        username,
        password,
        timeout,
    }
}

fn resolve_trust(
    prefix: String,
    raw: Spanned<RawTrust>,
    base: &Path,
    problems: &mut Problems,
) -> TrustConfig {
    let key = format!("trust.\"{prefix}\"");
    let span = raw.span();
    let raw = raw.into_inner();
    if prefix.is_empty() || prefix.contains("://") {
        let why =
            "a trust prefix is a registry, or a registry and repository prefix, without oci://";
        problems.add(span.clone(), key.clone(), why);
    }
    if raw.keys.is_empty() && !raw.unsafe_allow_unsigned {
        let why =
            "names no keys: add keys = [\"PUBLIC_KEY.pub\"] (or unsafe_allow_unsigned = true)";
        problems.add(span, key, why);
    }
    TrustConfig {
        prefix,
        keys: raw.keys.iter().map(|k| base.join(k)).collect(),
        allow_unsigned: raw.unsafe_allow_unsigned,
    }
}
