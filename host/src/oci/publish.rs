//! The authors' side of OCI plugins: `push` (a component, in the Wasm OCI artifact
//! format) and `sign` (cosign's format, added to the signatures already at the
//! digest's `.sig` tag, where `attach` adds a signature made elsewhere).

use std::collections::BTreeMap;

use p256::ecdsa::SigningKey;

use super::artifact::{self, Manifest};
use super::{Oci, OciError, Reference, cosign, layout};

impl Oci {
    /// Uploads `component` as `reference` in the Wasm OCI artifact format; returns
    /// the manifest digest.
    pub async fn push(&self, reference: &Reference, component: &[u8]) -> Result<String, OciError> {
        let created = jiff::Timestamp::now().to_string();
        let (config, manifest) =
            artifact::wasm(component, &created).map_err(|why| OciError::NotWasm {
                reference: reference.to_string(),
                why,
            })?;
        let digest = layout::sha256(&manifest.to_bytes());
        let target = reference.tag.clone().unwrap_or_else(|| digest.clone());
        self.upload(reference, &[&config, component], &target, &manifest)
            .await?;
        Ok(digest)
    }

    /// Uploads `blobs`, then `manifest` as `target` (a tag or its digest), to
    /// `reference`'s repository.
    async fn upload(
        &self,
        reference: &Reference,
        blobs: &[&[u8]],
        target: &str,
        manifest: &Manifest,
    ) -> Result<(), OciError> {
        let client = self.client(&reference.registry)?;
        let repository = &reference.repository;
        for blob in blobs {
            self.remote(|| client.put_blob(repository, blob)).await?;
        }
        let bytes = manifest.to_bytes();
        self.remote(|| {
            client.put_manifest(repository, target, artifact::MANIFEST_MEDIA_TYPE, &bytes)
        })
        .await?;
        Ok(())
    }

    /// Signs the digest `reference` resolves to with `key` (cosign's format, added to
    /// the signatures already at its `.sig` tag); returns the signed digest.
    pub async fn sign(&self, reference: &Reference, key: &SigningKey) -> Result<String, OciError> {
        let digest = self.resolve(reference).await?;
        let payload = cosign::payload(&reference.repository_path(), &digest);
        let signature = cosign::sign(key, &payload);
        self.attach(reference, &digest, &payload, &signature, BTreeMap::new())
            .await?;
        Ok(digest)
    }

    /// Adds a signature of `digest` (its payload, its signature, and annotations such
    /// as a keyless signature's certificate and Rekor bundle) to those at its `.sig`
    /// tag in `reference`'s repository, as `cosign attach signature` does.
    pub async fn attach(
        &self,
        reference: &Reference,
        digest: &str,
        payload: &[u8],
        signature: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<(), OciError> {
        let client = self.client(&reference.registry)?;
        let tag = artifact::signature_tag(digest);
        let existing = self
            .remote(|| client.manifest(&reference.repository, &tag))
            .await?;
        let existing = existing.and_then(|m| Manifest::parse(&m.bytes).ok());
        let (config, manifest) = artifact::add_signature(existing, payload, signature, annotations);
        self.upload(reference, &[payload, &config], &tag, &manifest)
            .await
    }
}
