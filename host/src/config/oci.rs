//! `[registries."HOST"]`, `[trust."PREFIX"]`, `[sigstore]` and `registry_mirror`,
//! resolved into the OCI store's settings (`oci::settings`): each registry's scheme,
//! `${VAR}` credentials and deadline, each trust prefix's public keys and keyless
//! identities, and the keyless trust root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::alerts::secret_value;
use super::raw::{RawRegistry, RawSigstore, RawTrust};
use super::resolve::duration;
use crate::oci::keyless::Identity;
use crate::oci::settings::{DEFAULT_REGISTRY_TIMEOUT, OciConfig, RegistryConfig, TrustConfig};
use crate::problems::Problems;

/// The config's OCI sections, as read.
pub(super) struct RawOci {
    pub(super) registries: BTreeMap<String, Spanned<RawRegistry>>,
    pub(super) trust: BTreeMap<String, Spanned<RawTrust>>,
    pub(super) mirror: Option<PathBuf>,
    pub(super) sigstore: Option<Spanned<RawSigstore>>,
}

/// Resolves the OCI sections; key paths are relative to `base`.
pub(super) fn resolve_oci(
    raw: RawOci,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> OciConfig {
    let keyless_wanted = raw.trust.values().any(|t| !t.get_ref().keyless.is_empty());
    let (sigstore_span, sigstore) = match raw.sigstore {
        Some(s) => (s.span(), s.into_inner()),
        None => (0..0, RawSigstore::default()),
    };
    if keyless_wanted && (sigstore.fulcio_roots.is_empty() || sigstore.rekor_keys.is_empty()) {
        let why = "keyless trust needs its root: fulcio_roots = [\"fulcio.pem\"] and \
                   rekor_keys = [\"rekor.pub\"] (Sigstore's public-good ones, or your own)";
        problems.add(sigstore_span, "sigstore", why);
    }
    let paths = |list: Vec<PathBuf>| list.iter().map(|p| base.join(p)).collect();
    OciConfig {
        registries: raw
            .registries
            .into_iter()
            .map(|(host, raw)| {
                let registry = resolve_registry(&host, raw, base, env, problems);
                (host, registry)
            })
            .collect(),
        trust: raw
            .trust
            .into_iter()
            .map(|(prefix, raw)| resolve_trust(prefix, raw, base, problems))
            .collect(),
        mirror: raw.mirror.map(|m| base.join(m)),
        fulcio_roots: paths(sigstore.fulcio_roots),
        rekor_keys: paths(sigstore.rekor_keys),
    }
}

fn resolve_registry(
    host: &str,
    raw: Spanned<RawRegistry>,
    base: &Path,
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
        problems.add(span.clone(), key.clone(), "a password needs a username");
    }
    let timeout = raw.timeout.as_ref().map(|_| {
        let key = format!("{key}.timeout");
        duration(&raw.timeout, key, DEFAULT_REGISTRY_TIMEOUT, problems)
    });
    if raw.ca.is_some() && raw.insecure {
        let why = "`ca` is for an HTTPS registry; an insecure one speaks plain HTTP";
        problems.add(span, format!("{key}.ca"), why);
    }
    RegistryConfig {
        insecure: raw.insecure,
        username,
        password,
        timeout,
        ca: raw.ca.map(|ca| base.join(ca)),
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
    if raw.keys.is_empty() && raw.keyless.is_empty() && !raw.unsafe_allow_unsigned {
        let why = "names no keys: add keys = [\"PUBLIC_KEY.pub\"], keyless = [{ identity = \
                   \"…\", issuer = \"…\" }] (or unsafe_allow_unsigned = true)";
        problems.add(span.clone(), key.clone(), why);
    }
    if raw
        .keyless
        .iter()
        .any(|i| i.identity.is_empty() || i.issuer.is_empty())
    {
        let why = "a keyless entry names both an identity and an issuer";
        problems.add(span, format!("{key}.keyless"), why);
    }
    TrustConfig {
        prefix,
        keys: raw.keys.iter().map(|k| base.join(k)).collect(),
        keyless: raw
            .keyless
            .into_iter()
            .map(|i| Identity {
                identity: i.identity,
                issuer: i.issuer,
            })
            .collect(),
        allow_unsigned: raw.unsafe_allow_unsigned,
    }
}
