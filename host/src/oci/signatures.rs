//! Verifying an OCI plugin's signatures before it is compiled: the signature
//! manifests at the digest's `.sig` tag (from the cache, the mirror or the registry)
//! and, in the registry, those attached to it as OCI 1.1 referrers,
//! each of its cosign signatures tried against the trust entry covering the
//! reference (its keys, and its keyless identities through `keyless`), and the set
//! that verified kept in the cache so the next start verifies offline.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::artifact::{self, MAX_SMALL_BLOB_BYTES, Manifest};
use super::client::{Client, MAX_MANIFEST_BYTES};
use super::keyless::{self, Identity};
use super::layout::{self, Layout, Read};
use super::{Oci, OciError, Reference, Trust, cosign, manifest_descriptor, stored};

/// Who vouches for a verified plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A trusted public key (its file).
    Key(PathBuf),
    /// A keyless signature's certificate identity.
    Identity(Identity),
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Key(path) => write!(f, "{}", path.display()),
            Signer::Identity(identity) => identity.fmt(f),
        }
    }
}

impl Oci {
    /// Who signed `digest`, as `trust` requires: the signatures at its `.sig` tag in
    /// the cache, the mirror, then the registry, the first set that verifies kept in
    /// the cache.
    pub(super) async fn verify(
        &self,
        reference: &Reference,
        digest: &str,
        trust: &Trust,
    ) -> Result<Signer, OciError> {
        let tag = artifact::signature_tag(digest);
        let name = format!("{}:{tag}", reference.repository_path());
        let mut reasons = Vec::new();
        let layouts = std::iter::once(&*self.cache).chain(self.mirror.as_ref());
        for layout in layouts {
            let Some(found) = stored(layout, layout.lookup(&name))? else {
                continue;
            };
            let Read::Found(bytes) =
                stored(layout, layout.read(&found.digest, MAX_MANIFEST_BYTES))?
            else {
                continue;
            };
            let payloads = local_payloads(layout, &bytes);
            match self.accept(&name, &bytes, &payloads, digest, trust)? {
                Ok(signer) => return Ok(signer),
                Err(why) => reasons.extend(why),
            }
        }
        // The registry: the `.sig` tag first, then, only if that does not verify, the
        // referrers (which cost more requests, and which most registries lack).
        let client = self.client(&reference.registry)?;
        let repository = &reference.repository;
        // Every signature manifest tried adds a reason when it fails, so no reasons
        // means none was found.
        let mut failed = None;
        match self.remote(|| client.manifest(repository, &tag)).await {
            Ok(Some(manifest)) => {
                let tried =
                    self.try_remote(&client, reference, &name, &manifest.bytes, digest, trust);
                match tried.await? {
                    Ok(signer) => return Ok(signer),
                    Err(why) => reasons.extend(why),
                }
            }
            Ok(None) => {}
            Err(e) => failed = Some(OciError::from(e)),
        }
        let (referrers, referrers_failed) = self.referrers(&client, reference, digest).await;
        failed = failed.or(referrers_failed);
        for manifest in referrers {
            let tried = self.try_remote(&client, reference, &name, &manifest, digest, trust);
            match tried.await? {
                Ok(signer) => return Ok(signer),
                Err(why) => reasons.extend(why),
            }
        }
        Err(match failed {
            Some(e) if reasons.is_empty() => e,
            None if reasons.is_empty() => OciError::Unsigned {
                reference: reference.to_string(),
                tag,
            },
            failed => {
                reasons.extend(failed.map(|e| e.to_string()));
                self.unverified(reference, trust, reasons)
            }
        })
    }

    /// [`Oci::accept`] for the registry's signature manifest `manifest`, its payloads
    /// pulled.
    async fn try_remote(
        &self,
        client: &Client,
        reference: &Reference,
        name: &str,
        manifest: &[u8],
        digest: &str,
        trust: &Trust,
    ) -> Result<Result<Signer, Vec<String>>, OciError> {
        let mut payloads = BTreeMap::new();
        if let Ok(parsed) = Manifest::parse(manifest) {
            for (layer, _) in artifact::signatures(&parsed) {
                let payload = self
                    .remote(|| {
                        client.blob(&reference.repository, &layer.digest, MAX_SMALL_BLOB_BYTES)
                    })
                    .await?;
                payloads.insert(layer.digest.clone(), payload);
            }
        }
        self.accept(name, manifest, &payloads, digest, trust)
    }

    /// Who signed `digest` in the signature manifest `manifest` with `payloads`, as
    /// `trust` accepts ([`Oci::check`]), the manifest then kept in the cache as `name`;
    /// or why none passes.
    fn accept(
        &self,
        name: &str,
        manifest: &[u8],
        payloads: &BTreeMap<String, Vec<u8>>,
        digest: &str,
        trust: &Trust,
    ) -> Result<Result<Signer, Vec<String>>, OciError> {
        match self.check(manifest, payloads, digest, trust) {
            Ok(signer) => {
                self.keep_signatures(name, manifest, payloads)?;
                Ok(Ok(signer))
            }
            Err(why) => Ok(Err(why)),
        }
    }

    /// The signature manifests attached to `digest` as OCI 1.1 referrers: listed by the
    /// referrers API where the registry has it, else by its fallback tag; and the first
    /// request that failed, if any did.
    async fn referrers(
        &self,
        client: &Client,
        reference: &Reference,
        digest: &str,
    ) -> (Vec<Vec<u8>>, Option<OciError>) {
        let repository = &reference.repository;
        let kind = artifact::SIGNATURE_ARTIFACT_TYPE;
        let index = match self
            .remote(|| client.referrers(repository, digest, kind))
            .await
        {
            Ok(None) => {
                let fallback = artifact::referrers_tag(digest);
                let listed = self.remote(|| client.manifest(repository, &fallback)).await;
                listed.map(|m| m.map(|m| m.bytes))
            }
            other => other,
        };
        let listed = match index {
            Ok(index) => artifact::referrers(&index.unwrap_or_default(), kind),
            Err(e) => return (Vec::new(), Some(e.into())),
        };
        let (mut found, mut failed) = (Vec::new(), None);
        for referrer in listed {
            match self.remote(|| client.manifest(repository, &referrer)).await {
                Ok(manifest) => found.extend(manifest.map(|m| m.bytes)),
                Err(e) => {
                    failed.get_or_insert(e.into());
                }
            }
        }
        (found, failed)
    }

    fn unverified(
        &self,
        reference: &Reference,
        trust: &Trust,
        mut reasons: Vec<String>,
    ) -> OciError {
        reasons.dedup();
        OciError::Signature {
            reference: reference.to_string(),
            prefix: trust.config.prefix.clone(),
            reasons: reasons.join("; "),
        }
    }

    /// Keeps a signature manifest that verified, and its payloads, in the cache.
    fn keep_signatures(
        &self,
        name: &str,
        manifest: &[u8],
        payloads: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), OciError> {
        let digest = layout::sha256(manifest);
        stored(&self.cache, self.cache.write(&digest, manifest))?;
        for (digest, payload) in payloads {
            stored(&self.cache, self.cache.write(digest, payload))?;
        }
        stored(
            &self.cache,
            self.cache.tag(name, manifest_descriptor(&digest, manifest)),
        )
    }

    /// Who made one of the signatures in the signature manifest `bytes` over `digest`
    /// that `trust` accepts (a keyless signature by an identity it names, or one by
    /// its keys), or why none did.
    fn check(
        &self,
        bytes: &[u8],
        payloads: &BTreeMap<String, Vec<u8>>,
        digest: &str,
        trust: &Trust,
    ) -> Result<Signer, Vec<String>> {
        let manifest =
            Manifest::parse(bytes).map_err(|e| vec![format!("signature manifest: {e}")])?;
        let signatures = artifact::signatures(&manifest);
        if signatures.is_empty() {
            return Err(vec![
                "the signature manifest holds no cosign signature".to_owned(),
            ]);
        }
        let mut reasons = Vec::new();
        for (layer, signature) in signatures {
            let Some(payload) = payloads.get(&layer.digest) else {
                reasons.push(format!("payload {} is missing", layer.digest));
                continue;
            };
            if !trust.config.keyless.is_empty() {
                let identities = &trust.config.keyless;
                let annotations = &layer.annotations;
                match keyless::verify(
                    &self.sigstore,
                    identities,
                    payload,
                    signature,
                    annotations,
                    digest,
                ) {
                    Ok(identity) => return Ok(Signer::Identity(identity)),
                    Err(e) => reasons.push(e),
                }
            }
            for (path, key) in &trust.keys {
                match cosign::verify(key, payload, signature, digest) {
                    Ok(()) => return Ok(Signer::Key(path.clone())),
                    Err(e) => reasons.push(e.to_string()),
                }
            }
        }
        reasons.sort();
        reasons.dedup();
        Err(reasons)
    }
}

/// The payloads of a signature manifest that `layout` holds intact.
fn local_payloads(layout: &Layout, manifest: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut payloads = BTreeMap::new();
    if let Ok(parsed) = Manifest::parse(manifest) {
        for (layer, _) in artifact::signatures(&parsed) {
            if let Ok(Read::Found(bytes)) = layout.read(&layer.digest, MAX_SMALL_BLOB_BYTES) {
                payloads.insert(layer.digest.clone(), bytes);
            }
        }
    }
    payloads
}
