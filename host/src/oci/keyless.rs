//! Cosign's keyless signatures: instead of a long-lived key, a short-lived Fulcio
//! certificate names who signed (an OIDC identity and its issuer), and a Rekor
//! bundle proves the signature was logged while that certificate was valid. A
//! signature passes when its certificate chains to a configured Fulcio root, names an
//! identity and issuer the trust entry allows and is for code signing; its bundle's
//! signed entry timestamp is by a configured Rekor key and records this very
//! signature, payload and certificate at a time every certificate of the chain was
//! valid; and the certificate's key made the signature. Offline, as cosign verifies
//! the bundle (the log's signed promise of inclusion): no request goes to Rekor or
//! Fulcio. Pure: no I/O.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};
use x509_cert::spki::ObjectIdentifier;

use crate::cache::hex;

/// The signature layer's annotations cosign writes for a keyless signature.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// Fulcio's OIDC issuer extensions: the first version holds the raw string, the
/// second a DER UTF8String (Fulcio writes both; the second wins).
const ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
const ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// Intermediate certificates between a leaf and a root: Fulcio uses one; a chain
/// annotation longer than this is not one anybody issued.
const MAX_CHAIN: usize = 4;
/// The Rekor entry kind whose body this checks (what cosign logs).
const HASHED_REKORD: &str = "hashedrekord";

/// Why a trust root file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("not PEM X.509 certificates: {0}")]
    Certificates(String),
    #[error("not a PEM ECDSA P-256 or P-384 public key: {0}")]
    Key(String),
}

/// An ECDSA public key on the curves Sigstore uses, each with its own hash (P-256 with
/// SHA-256, P-384 with SHA-384).
#[derive(Debug, Clone)]
enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl PublicKey {
    fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        use p256::pkcs8::DecodePublicKey;
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(key));
        }
        p384::ecdsa::VerifyingKey::from_public_key_der(der)
            .map(PublicKey::P384)
            .map_err(|e| e.to_string())
    }

    fn of(certificate: &Certificate) -> Result<PublicKey, String> {
        let spki = certificate.tbs_certificate().subject_public_key_info();
        PublicKey::from_spki_der(&spki.to_der().map_err(|e| e.to_string())?)
    }

    /// Whether `signature` (ASN.1 DER) over `message` is by this key.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        match self {
            PublicKey::P256(key) => p256::ecdsa::DerSignature::try_from(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::DerSignature::try_from(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
        }
    }

    /// The algorithm a certificate this key signs must name.
    fn algorithm(&self) -> ObjectIdentifier {
        match self {
            PublicKey::P256(_) => ECDSA_SHA256,
            PublicKey::P384(_) => ECDSA_SHA384,
        }
    }
}

/// The trust root of keyless signatures: Fulcio's root certificates and Rekor's
/// public keys, by log ID (the SHA-256 of the key's DER, in hex).
#[derive(Debug, Clone, Default)]
pub struct Sigstore {
    roots: Vec<Certificate>,
    logs: BTreeMap<String, PublicKey>,
}

impl Sigstore {
    /// Adds the certificates of a PEM file (one or more) as Fulcio roots.
    pub fn add_roots(&mut self, pem: &str) -> Result<(), RootError> {
        let found = Certificate::load_pem_chain(pem.as_bytes())
            .map_err(|e| RootError::Certificates(e.to_string()))?;
        if found.is_empty() {
            return Err(RootError::Certificates("the file holds none".into()));
        }
        self.roots.extend(found);
        Ok(())
    }

    /// Adds a Rekor public key (PKIX PEM, as `rekor.pub`).
    pub fn add_log(&mut self, pem: &str) -> Result<(), RootError> {
        let (_, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|e| RootError::Key(e.to_string()))?;
        let key = PublicKey::from_spki_der(&der).map_err(RootError::Key)?;
        self.logs.insert(hex(&Sha256::digest(&der)), key);
        Ok(())
    }

    /// Whether it can verify anything: a root and a log.
    pub fn is_complete(&self) -> bool {
        !self.roots.is_empty() && !self.logs.is_empty()
    }
}

/// An identity the trust policy allows: the certificate's subject (an e-mail or a
/// URI, such as a CI workflow's) and the OIDC issuer that vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub identity: String,
    pub issuer: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (issuer {})", self.identity, self.issuer)
    }
}

/// The bundle cosign attaches: Rekor's answer for the logged entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Bundle {
    signed_entry_timestamp: String,
    payload: LogEntry,
}

/// What Rekor signs, in the field order of its canonical JSON.
#[derive(Serialize, Deserialize)]
struct LogEntry {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logID")]
    log_id: String,
    #[serde(rename = "logIndex")]
    log_index: i64,
}

/// Whether the signature layer with `annotations`, signing `payload` with
/// `signature` (base64 DER), is a keyless signature by one of `identities` of the
/// manifest `digest`; the identity it names, or why not.
pub fn verify(
    sigstore: &Sigstore,
    identities: &[Identity],
    payload: &[u8],
    signature: &str,
    annotations: &BTreeMap<String, String>,
    digest: &str,
) -> Result<Identity, String> {
    let pem = annotations
        .get(CERTIFICATE_ANNOTATION)
        .ok_or("it has no certificate (not a keyless signature)")?;
    let leaf = Certificate::from_pem(pem.as_bytes())
        .map_err(|e| format!("its certificate is not PEM X.509: {e}"))?;
    let signature = B64
        .decode(signature.trim())
        .map_err(|_| "the signature is not base64 DER".to_owned())?;
    let time = logged(sigstore, annotations, payload, &signature, &leaf)?;
    let chain = match annotations.get(CHAIN_ANNOTATION) {
        Some(pem) => Certificate::load_pem_chain(pem.as_bytes())
            .map_err(|e| format!("its certificate chain is not PEM X.509: {e}"))?,
        None => Vec::new(),
    };
    chains(sigstore, &leaf, &chain, time)?;
    let named = identity(&leaf)?;
    if !identities.contains(&named) {
        return Err(format!(
            "its certificate names {named}, not an identity the trust entry allows"
        ));
    }
    if !PublicKey::of(&leaf)?.verifies(payload, &signature) {
        return Err("the certificate's key did not make this signature".into());
    }
    super::cosign::signs(payload, digest).map_err(|e| e.to_string())?;
    Ok(named)
}

/// The time (Unix seconds) the bundle's log entry was integrated, after checking the
/// log signed it and it records `signature` over `payload` with `leaf`.
fn logged(
    sigstore: &Sigstore,
    annotations: &BTreeMap<String, String>,
    payload: &[u8],
    signature: &[u8],
    leaf: &Certificate,
) -> Result<i64, String> {
    let bundle = annotations
        .get(BUNDLE_ANNOTATION)
        .ok_or("it has no Rekor bundle, so nothing shows it was logged")?;
    let bundle: Bundle =
        serde_json::from_str(bundle).map_err(|e| format!("its Rekor bundle: {e}"))?;
    let entry = bundle.payload;
    let log = sigstore
        .logs
        .get(&entry.log_id)
        .ok_or_else(|| format!("it was logged in {}, not a trusted Rekor log", entry.log_id))?;
    let set = B64
        .decode(&bundle.signed_entry_timestamp)
        .map_err(|_| "its signed entry timestamp is not base64".to_owned())?;
    let canonical = serde_json::to_vec(&entry).expect("plain JSON");
    if !log.verifies(&canonical, &set) {
        return Err("its Rekor bundle is not signed by the log's key".into());
    }
    let body = B64
        .decode(&entry.body)
        .map_err(|_| "its Rekor entry is not base64".to_owned())?;
    let records = recorded(&body).ok_or("its Rekor entry is not a hashedrekord")?;
    let certificate = leaf.to_der().map_err(|e| e.to_string())?;
    if records.hash != hex(&Sha256::digest(payload))
        || records.signature != signature
        || records.certificate != certificate
    {
        return Err("its Rekor entry records another signature or certificate".into());
    }
    Ok(entry.integrated_time)
}

/// What a hashedrekord entry records.
struct Recorded {
    hash: String,
    signature: Vec<u8>,
    certificate: Vec<u8>,
}

fn recorded(body: &[u8]) -> Option<Recorded> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    if json.get("kind")?.as_str()? != HASHED_REKORD {
        return None;
    }
    let spec = json.get("spec")?;
    let hash = spec.pointer("/data/hash")?;
    if hash.get("algorithm")?.as_str()? != "sha256" {
        return None;
    }
    let text = |pointer: &str| spec.pointer(pointer)?.as_str();
    let pem = B64.decode(text("/signature/publicKey/content")?).ok()?;
    Some(Recorded {
        hash: hash.get("value")?.as_str()?.to_ascii_lowercase(),
        signature: B64.decode(text("/signature/content")?).ok()?,
        certificate: Certificate::from_pem(&pem).ok()?.to_der().ok()?,
    })
}

/// Checks that `leaf` chains through `intermediates` to a root, every certificate
/// valid at `time` and signed by the next, each issuer a CA.
fn chains(
    sigstore: &Sigstore,
    leaf: &Certificate,
    intermediates: &[Certificate],
    time: i64,
) -> Result<(), String> {
    let mut current = leaf.clone();
    valid_at(&current, time)?;
    for _ in 0..=MAX_CHAIN.min(intermediates.len()) {
        if let Some(root) = sigstore.roots.iter().find(|r| issued(r, &current)) {
            return valid_at(root, time);
        }
        let Some(next) = intermediates
            .iter()
            .find(|i| is_ca(i) && issued(i, &current))
        else {
            break;
        };
        valid_at(next, time)?;
        current = next.clone();
    }
    Err("its certificate does not chain to a trusted Fulcio root".into())
}

/// Whether `issuer` issued `subject`: names match and its key signed it.
fn issued(issuer: &Certificate, subject: &Certificate) -> bool {
    let tbs = subject.tbs_certificate();
    if issuer.tbs_certificate().subject() != tbs.issuer() {
        return false;
    }
    let (Ok(key), Ok(signed)) = (PublicKey::of(issuer), tbs.to_der()) else {
        return false;
    };
    subject.signature_algorithm().oid == key.algorithm()
        && subject
            .signature()
            .as_bytes()
            .is_some_and(|s| key.verifies(&signed, s))
}

fn is_ca(certificate: &Certificate) -> bool {
    matches!(
        certificate
            .tbs_certificate()
            .get_extension::<BasicConstraints>(),
        Ok(Some((_, BasicConstraints { ca: true, .. })))
    )
}

fn valid_at(certificate: &Certificate, time: i64) -> Result<(), String> {
    let validity = certificate.tbs_certificate().validity();
    let from = validity.not_before.to_unix_duration().as_secs() as i64;
    let to = validity.not_after.to_unix_duration().as_secs() as i64;
    if (from..=to).contains(&time) {
        return Ok(());
    }
    let stamp = |secs: i64| {
        jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
    };
    Err(format!(
        "it was logged at {}, outside the validity of the certificate for {} ({} to {})",
        stamp(time),
        certificate.tbs_certificate().subject(),
        stamp(from),
        stamp(to)
    ))
}

/// The identity a leaf certificate names: its subject alternative name (an e-mail or
/// a URI) and Fulcio's issuer extension; it must be for code signing.
fn identity(leaf: &Certificate) -> Result<Identity, String> {
    let tbs = leaf.tbs_certificate();
    let usage = tbs.get_extension::<ExtendedKeyUsage>().ok().flatten();
    if !usage.is_some_and(|(_, u)| u.0.contains(&CODE_SIGNING)) {
        return Err("its certificate is not for code signing".into());
    }
    let names = tbs.get_extension::<SubjectAltName>().ok().flatten();
    let identity = names
        .iter()
        .flat_map(|(_, n)| n.0.iter())
        .find_map(|name| match name {
            GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => {
                Some(s.to_string())
            }
            _ => None,
        })
        .ok_or("its certificate names no e-mail or URI")?;
    let extension = |oid: ObjectIdentifier| {
        tbs.extensions()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes().to_vec())
    };
    let issuer = extension(ISSUER_V2)
        .and_then(|der| {
            x509_cert::der::asn1::Utf8StringRef::from_der(&der)
                .ok()
                .map(|s| s.to_string())
        })
        .or_else(|| extension(ISSUER_V1).and_then(|raw| String::from_utf8(raw).ok()))
        .ok_or("its certificate names no OIDC issuer")?;
    Ok(Identity { identity, issuer })
}
