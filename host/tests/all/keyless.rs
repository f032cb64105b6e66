//! Cosign's keyless signatures (a Fulcio certificate and a Rekor bundle instead of a
//! key), against a trust root these tests generate, as there is no internet and so no
//! public-good one: a Fulcio-like authority (a P-384 root and intermediate, as
//! Sigstore's are) issues P-256 leaf certificates with an identity and an OIDC issuer,
//! and a Rekor-like log key signs entry timestamps. Every way a keyless signature can
//! be wrong is checked on `keyless::verify`; one plugin goes through the registry, the
//! lock and `verify` end to end.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use healthhost::oci::cosign;
use healthhost::oci::keyless::{self, Identity, Sigstore};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType, date_time_ymd,
};
use sha2::{Digest, Sha256};

use crate::common::TempDir;
use crate::oci::{Registry, body, lock_and_verify, push, refused, write_config};

/// The leaves' validity: 2026-01-01 for a day; a signature logged at 01:00 that day
/// is inside it, one logged on the 3rd is not.
const LEAF_FROM: (i32, u8, u8) = (2026, 1, 1);
const LEAF_TO: (i32, u8, u8) = (2026, 1, 2);
const LOGGED_INSIDE: i64 = 1_767_229_200;
const LOGGED_AFTER: i64 = 1_767_398_400;
const IDENTITY: &str = "https://ci.example/checks/.github/workflows/release.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.example";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A Fulcio-like certificate authority.
struct Authority {
    root_pem: String,
    /// The intermediate, as cosign's chain annotation holds it (with the root).
    chain_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2036, 1, 1);
    params
}

fn authority(name: &str) -> Authority {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let root_params = ca_params(&format!("{name} root"));
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let params = ca_params(&format!("{name} intermediate"));
    let intermediate = params.signed_by(&key, &root_issuer).unwrap();
    Authority {
        root_pem: root.pem(),
        chain_pem: format!("{}{}", intermediate.pem(), root.pem()),
        intermediate: Issuer::new(params, key),
    }
}

/// A leaf certificate and its key.
struct Leaf {
    pem: String,
    key: SigningKey,
}

fn leaf(ca: &Authority, identity: &str, issuer: &str, code_signing: bool) -> Leaf {
    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(identity.try_into().unwrap())];
    if code_signing {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    }
    // Fulcio's issuer extension (v2): a DER UTF8String.
    let mut utf8 = vec![0x0c, issuer.len() as u8];
    utf8.extend_from_slice(issuer.as_bytes());
    params.custom_extensions = vec![CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
        utf8,
    )];
    params.not_before = date_time_ymd(LEAF_FROM.0, LEAF_FROM.1, LEAF_FROM.2);
    params.not_after = date_time_ymd(LEAF_TO.0, LEAF_TO.1, LEAF_TO.2);
    let certificate = params.signed_by(&key_pair, &ca.intermediate).unwrap();
    Leaf {
        pem: certificate.pem(),
        key: SigningKey::from_pkcs8_der(&key_pair.serialize_der()).unwrap(),
    }
}

/// A Rekor-like transparency log's key.
struct Rekor {
    key: SigningKey,
    pem: String,
    log_id: String,
}

fn rekor() -> Rekor {
    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = SigningKey::from_pkcs8_der(&key_pair.serialize_der()).unwrap();
    let der = key.verifying_key().to_public_key_der().unwrap();
    Rekor {
        pem: key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
        log_id: hex(&Sha256::digest(der.as_bytes())),
        key,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn der_signature(key: &SigningKey, message: &[u8]) -> Vec<u8> {
    let signature: DerSignature = key.sign(message);
    signature.as_bytes().to_vec()
}

impl Rekor {
    /// The bundle cosign attaches for a hashedrekord entry recording `signature` over
    /// `payload` by the certificate `pem`, integrated at `time`.
    fn bundle(&self, payload: &[u8], signature: &[u8], pem: &str, time: i64) -> String {
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex(&Sha256::digest(payload))}},
                "signature": {"content": B64.encode(signature), "publicKey": {"content": B64.encode(pem)}},
            },
        });
        let entry = serde_json::json!({
            "body": B64.encode(body.to_string()),
            "integratedTime": time,
            "logID": self.log_id,
            "logIndex": 7,
        });
        let set = der_signature(&self.key, entry.to_string().as_bytes());
        serde_json::json!({"SignedEntryTimestamp": B64.encode(set), "Payload": entry}).to_string()
    }
}

/// A keyless signature of `payload` by `leaf`, logged in `log` at `time`: the
/// signature annotation's value and the layer's other annotations.
fn keyless_signature(
    ca: &Authority,
    leaf: &Leaf,
    log: &Rekor,
    payload: &[u8],
    time: i64,
) -> (String, BTreeMap<String, String>) {
    let signature = der_signature(&leaf.key, payload);
    let annotations = BTreeMap::from([
        (keyless::CERTIFICATE_ANNOTATION.to_owned(), leaf.pem.clone()),
        (keyless::CHAIN_ANNOTATION.to_owned(), ca.chain_pem.clone()),
        (
            keyless::BUNDLE_ANNOTATION.to_owned(),
            log.bundle(payload, &signature, &leaf.pem, time),
        ),
    ]);
    (B64.encode(signature), annotations)
}

fn identity(identity: &str, issuer: &str) -> Identity {
    Identity {
        identity: identity.to_owned(),
        issuer: issuer.to_owned(),
    }
}

#[test]
fn a_keyless_signature_passes_only_with_its_identity_its_root_its_log_and_in_time() {
    let (ca, log) = (authority("fulcio"), rekor());
    let mut sigstore = Sigstore::default();
    sigstore.add_roots(&ca.root_pem).unwrap();
    sigstore.add_log(&log.pem).unwrap();
    let allowed = [identity(IDENTITY, ISSUER)];
    let payload = cosign::payload("registry.example/checks/x", DIGEST);
    let good = leaf(&ca, IDENTITY, ISSUER, true);
    let (signature, annotations) = keyless_signature(&ca, &good, &log, &payload, LOGGED_INSIDE);
    let verify = |signature: &str, annotations: &BTreeMap<String, String>| {
        keyless::verify(
            &sigstore,
            &allowed,
            &payload,
            signature,
            annotations,
            DIGEST,
        )
    };
    assert_eq!(verify(&signature, &annotations), Ok(allowed[0].clone()));

    let refused = |signature: &str, annotations: BTreeMap<String, String>, expected: &str| {
        let error = verify(signature, &annotations).unwrap_err();
        assert!(error.contains(expected), "{expected}: {error}");
    };
    // Another identity, or the same one from another issuer.
    for (who, issuer) in [
        ("mallory@example.com", ISSUER),
        (IDENTITY, "https://evil.example"),
    ] {
        let other = leaf(&ca, who, issuer, true);
        let (s, a) = keyless_signature(&ca, &other, &log, &payload, LOGGED_INSIDE);
        refused(&s, a, "not an identity the trust entry allows");
    }
    // Logged after the certificate expired.
    let (s, a) = keyless_signature(&ca, &good, &log, &payload, LOGGED_AFTER);
    refused(&s, a, "outside the validity of the certificate");
    // A certificate from another authority, even with its own chain.
    let rogue = authority("rogue");
    let forged = leaf(&rogue, IDENTITY, ISSUER, true);
    let (s, a) = keyless_signature(&rogue, &forged, &log, &payload, LOGGED_INSIDE);
    refused(&s, a, "does not chain to a trusted Fulcio root");
    // The intermediate left out of the chain.
    let mut a = annotations.clone();
    a.remove(keyless::CHAIN_ANNOTATION);
    refused(&signature, a, "does not chain to a trusted Fulcio root");
    // Not for code signing.
    let server = leaf(&ca, IDENTITY, ISSUER, false);
    let (s, a) = keyless_signature(&ca, &server, &log, &payload, LOGGED_INSIDE);
    refused(&s, a, "not for code signing");
    // Logged in another log, or with no bundle at all.
    let (s, a) = keyless_signature(&ca, &good, &rekor(), &payload, LOGGED_INSIDE);
    refused(&s, a, "not a trusted Rekor log");
    let mut a = annotations.clone();
    a.remove(keyless::BUNDLE_ANNOTATION);
    refused(&signature, a, "no Rekor bundle");
    // The bundle's time moved after the log signed it.
    let mut a = annotations.clone();
    let moved = a[keyless::BUNDLE_ANNOTATION].replace(
        &LOGGED_INSIDE.to_string(),
        &(LOGGED_INSIDE + 60).to_string(),
    );
    a.insert(keyless::BUNDLE_ANNOTATION.to_owned(), moved);
    refused(&signature, a, "not signed by the log's key");
    // The log recorded another signature than the one presented, or the one
    // presented is not the certificate key's.
    let (other_signature, _) = keyless_signature(&ca, &good, &log, b"other", LOGGED_INSIDE);
    refused(
        &other_signature,
        annotations.clone(),
        "records another signature",
    );
    let stranger = leaf(&ca, IDENTITY, ISSUER, true);
    let (s, mut a) = keyless_signature(&ca, &stranger, &log, &payload, LOGGED_INSIDE);
    a.insert(keyless::CERTIFICATE_ANNOTATION.to_owned(), good.pem.clone());
    refused(&s, a, "records another signature or certificate");
    // A key-based signature has no certificate.
    refused(&signature, BTreeMap::new(), "not a keyless signature");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_signed_plugin_verifies_for_its_identity_and_no_other() {
    let registry = Registry::start(false);
    let dir = TempDir::new();
    let d = dir.0.clone();
    let (ca, log) = (authority("fulcio"), rekor());
    std::fs::write(d.join("fulcio.pem"), &ca.root_pem).unwrap();
    std::fs::write(d.join("rekor.pub"), &log.pem).unwrap();
    let addr = registry.addr.clone();
    let reference = format!("oci://{addr}/checks/x:1");
    let config = |who: &str| {
        let trust = format!(
            "[trust.\"{addr}/checks\"]\nkeyless = [{{ identity = \"{who}\", issuer = \"{ISSUER}\" }}]\n\
             [sigstore]\nfulcio_roots = [\"fulcio.pem\"]\nrekor_keys = [\"rekor.pub\"]\n"
        );
        body(&addr, &trust, &reference)
    };
    write_config(&d, &config(IDENTITY));
    let (d2, r2) = (d.clone(), reference.clone());
    let digest = tokio::task::spawn_blocking(move || push(&d2, test_artifacts::TRIVIAL, &r2))
        .await
        .unwrap();

    // Signed as a CI workflow would, with its certificate and the log's bundle.
    let loaded = healthhost::config::Config::load(&d.join("config.toml")).unwrap();
    let oci = healthhost::oci::Oci::open(&loaded.oci, &d.join("signer-cache")).unwrap();
    let parsed = healthhost::oci::Reference::parse(&reference).unwrap();
    let payload = cosign::payload(&parsed.repository_path(), &digest);
    let signer = leaf(&ca, IDENTITY, ISSUER, true);
    let (signature, annotations) = keyless_signature(&ca, &signer, &log, &payload, LOGGED_INSIDE);
    oci.attach(&parsed, &digest, &payload, &signature, annotations)
        .await
        .unwrap();

    let verified = lock_and_verify(&d, &reference).await;
    assert!(
        verified.contains(&format!("signed by {IDENTITY} (issuer {ISSUER})")),
        "{verified}"
    );
    assert!(verified.contains(&digest), "{verified}");

    // Another identity in the policy: the cached signature no longer passes.
    write_config(&d, &config("someone-else@example.com"));
    let (d2, r2) = (d.clone(), reference.clone());
    let error = tokio::task::spawn_blocking(move || refused(&d2, &["verify", &r2]))
        .await
        .unwrap();
    assert!(
        error.contains(&format!("its certificate names {IDENTITY} (issuer {ISSUER}), not an identity the trust entry allows")),
        "{error}"
    );
}
