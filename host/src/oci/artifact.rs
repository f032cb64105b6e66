//! The two OCI artifacts the host reads and writes, as JSON: a Wasm component in the
//! Wasm OCI artifact format (`wkg oci push`, `wash push` and the `oci-wasm` crate
//! write it: an image manifest whose config is `application/vnd.wasm.config.v0+json`
//! and whose one layer is `application/wasm`), and a cosign signature manifest (one
//! simple-signing layer per signature, the signature in its annotation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cosign;
use super::layout::{Descriptor, sha256};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The largest plugin pulled: a Python component, interpreter included, is ~40 MiB.
pub const MAX_PLUGIN_BYTES: u64 = 128 << 20;
/// The largest config blob and signature payload read (both are a few hundred bytes).
pub const MAX_SMALL_BLOB_BYTES: u64 = 64 << 10;
/// Signatures read per digest: more layers than this is not a signature manifest
/// anyone wrote by hand, and each costs a blob fetch.
pub const MAX_SIGNATURES: usize = 32;

/// An OCI image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not an OCI image manifest: {e}"))?;
        if manifest.schema_version != 2 {
            return Err(format!("schemaVersion {} (not 2)", manifest.schema_version));
        }
        if let Some(t) = manifest
            .media_type
            .as_deref()
            .filter(|t| *t != MANIFEST_MEDIA_TYPE)
        {
            return Err(format!("media type {t} (not {MANIFEST_MEDIA_TYPE})"));
        }
        let all = std::iter::once(&manifest.config).chain(&manifest.layers);
        if let Some(bad) = all
            .clone()
            .find(|d| !super::reference::valid_digest(&d.digest))
        {
            return Err(format!(
                "a descriptor's digest '{}' is not sha256:HEX",
                bad.digest
            ));
        }
        Ok(manifest)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain JSON")
    }

    /// Its one `application/wasm` layer, if it is a Wasm component artifact whose
    /// layer is at most [`MAX_PLUGIN_BYTES`].
    pub fn wasm_layer(&self) -> Result<&Descriptor, String> {
        if self.config.media_type != WASM_CONFIG_MEDIA_TYPE {
            return Err(format!(
                "its config is {}, not a Wasm component's ({WASM_CONFIG_MEDIA_TYPE})",
                self.config.media_type
            ));
        }
        let [layer] = self.layers.as_slice() else {
            return Err(format!(
                "it has {} layers; a Wasm component has one",
                self.layers.len()
            ));
        };
        if layer.media_type != WASM_LAYER_MEDIA_TYPE {
            return Err(format!(
                "its layer is {}, not {WASM_LAYER_MEDIA_TYPE}",
                layer.media_type
            ));
        }
        if layer.size > MAX_PLUGIN_BYTES {
            return Err(format!(
                "its layer has {} bytes, over the limit of {MAX_PLUGIN_BYTES}",
                layer.size
            ));
        }
        Ok(layer)
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: sha256(bytes),
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    }
}

/// The Wasm config blob and manifest of `component`, created at `created` (RFC 3339).
pub fn wasm(component: &[u8], created: &str) -> Result<(Vec<u8>, Manifest), String> {
    let (imports, exports) = component_names(component)?;
    let layer = descriptor(WASM_LAYER_MEDIA_TYPE, component);
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.digest],
        "component": {"exports": exports, "imports": imports, "target": null},
    }))
    .expect("plain JSON");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: descriptor(WASM_CONFIG_MEDIA_TYPE, &config),
        layers: vec![layer],
        annotations: BTreeMap::from([(
            "org.opencontainers.image.created".to_owned(),
            created.to_owned(),
        )]),
    };
    Ok((config, manifest))
}

/// The top-level import and export names of a component; an error if it is not one.
fn component_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    use wasmparser::{Parser, Payload};
    if !Parser::is_component(bytes) {
        return Err("not a WebAssembly component (build it for wasm32-wasip2)".to_owned());
    }
    let (mut imports, mut exports, mut depth) = (Vec::new(), Vec::new(), 0usize);
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid component: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 0 => {
                for import in s {
                    let import = import.map_err(|e| format!("not a valid component: {e}"))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                for export in s {
                    let export = export.map_err(|e| format!("not a valid component: {e}"))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// `existing` (the signature manifest already at the digest's `.sig` tag, if any)
/// with one more signature (and its other `annotations`), as cosign appends them: the
/// config blob and manifest to upload. The same signature twice is one layer.
pub fn add_signature(
    existing: Option<Manifest>,
    payload: &[u8],
    signature: &str,
    annotations: BTreeMap<String, String>,
) -> (Vec<u8>, Manifest) {
    let mut layer = descriptor(cosign::LAYER_MEDIA_TYPE, payload);
    layer.annotations = annotations;
    layer.annotations.insert(
        cosign::SIGNATURE_ANNOTATION.to_owned(),
        signature.to_owned(),
    );
    let mut layers = existing.map(|m| m.layers).unwrap_or_default();
    if !layers.contains(&layer) {
        layers.push(layer);
    }
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .expect("plain JSON");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: descriptor(IMAGE_CONFIG_MEDIA_TYPE, &config),
        layers,
        annotations: BTreeMap::new(),
    };
    (config, manifest)
}

/// The signatures of a signature manifest: each payload's descriptor and the
/// signature annotation, at most [`MAX_SIGNATURES`].
pub fn signatures(manifest: &Manifest) -> Vec<(&Descriptor, &str)> {
    manifest
        .layers
        .iter()
        .filter(|l| l.media_type == cosign::LAYER_MEDIA_TYPE && l.size <= MAX_SMALL_BLOB_BYTES)
        .filter_map(|l| Some((l, l.annotations.get(cosign::SIGNATURE_ANNOTATION)?.as_str())))
        .take(MAX_SIGNATURES)
        .collect()
}

/// The artifact type of a cosign signature manifest attached as an OCI 1.1 referrer
/// (`cosign sign --registry-referrers-mode=oci-1-1`).
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// The manifests of `artifact_type` an OCI image index lists (the referrers API's
/// answer, or the referrers fallback tag's index), at most [`MAX_SIGNATURES`].
pub fn referrers(index: &[u8], artifact_type: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Listed>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Listed {
        digest: String,
        artifact_type: Option<String>,
    }
    let Ok(index) = serde_json::from_slice::<Index>(index) else {
        return Vec::new();
    };
    index
        .manifests
        .into_iter()
        .filter(|m| {
            m.artifact_type.as_deref() == Some(artifact_type)
                && super::reference::valid_digest(&m.digest)
        })
        .map(|m| m.digest)
        .take(MAX_SIGNATURES)
        .collect()
}

/// The tag a registry without the referrers API holds the referrers of `digest` under
/// (an image index): `sha256-HEX`.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The tag cosign stores the signatures of `digest` under: `sha256-HEX.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", referrers_tag(digest))
}
