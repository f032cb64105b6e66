//! Cosign's key-based signatures, in cosign's own formats, so that keys and signatures
//! made here and by `cosign` are interchangeable: the key pair (`PREFIX.key`, an
//! ECDSA P-256 PKCS#8 key sealed with an scrypt-derived key in a NaCl secretbox, and
//! `PREFIX.pub`, PKIX PEM), the "simple signing" payload that names the signed
//! manifest digest, and the signature over it (ASN.1 DER, base64). Pure: no I/O but
//! the key files; `oci::sign` moves signatures to and from registries.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};
use xsalsa20poly1305::aead::{Aead, KeyInit};
use xsalsa20poly1305::{Nonce, XSalsa20Poly1305};

/// The PEM label cosign writes on a private key (older versions wrote the second).
const PRIVATE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
const OLD_PRIVATE_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// scrypt's cost as cosign sets it: N = 2^16, r = 8, p = 1.
const SCRYPT_LOG_N: u8 = 16;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// The largest scrypt cost a key file may ask for (2^20, 1 GiB of work memory with
/// r = 8): a hostile key file cannot make `sign` allocate more.
const MAX_SCRYPT_LOG_N: u8 = 20;
/// The `type` of cosign's simple-signing payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The media type of a signature layer, and the annotation holding the signature.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Why a key or a signature cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a cosign private key: {0}")]
    Private(String),
    #[error("wrong password for the private key (or a corrupted key file)")]
    Password,
    #[error("not a PEM public key (cosign's .pub): {0}")]
    Public(String),
}

/// The sealed private key, as cosign's JSON has it.
#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[allow(non_snake_case)]
struct ScryptParams {
    N: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// A new key pair: the private key sealed with `password` (PEM) and the public key
/// (PEM), as `cosign generate-key-pair` writes them.
pub fn generate(password: &str) -> (String, String) {
    use p256::elliptic_curve::Generate;
    let key = SigningKey::generate();
    let der = key.to_pkcs8_der().expect("a P-256 key encodes as PKCS#8");
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut salt).expect("the system's random source");
    getrandom::fill(&mut nonce).expect("the system's random source");
    let cipher = XSalsa20Poly1305::new(&derive(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P));
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), der.as_bytes())
        .expect("secretbox seals any length");
    let sealed = Sealed {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams {
                N: 1 << SCRYPT_LOG_N,
                r: SCRYPT_R,
                p: SCRYPT_P,
            },
            salt: B64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: B64.encode(nonce),
        },
        ciphertext: B64.encode(ciphertext),
    };
    let json = serde_json::to_vec(&sealed).expect("plain JSON");
    let private = pem_rfc7468::encode_string(PRIVATE_LABEL, pem_rfc7468::LineEnding::LF, &json)
        .expect("PEM encodes any bytes");
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("a P-256 key encodes as PKIX");
    (private, public)
}

fn derive(password: &str, salt: &[u8], log_n: u8, r: u32, p: u32) -> xsalsa20poly1305::Key {
    let params = scrypt::Params::new(log_n, r, p).expect("checked parameters");
    let mut key = xsalsa20poly1305::Key::default();
    scrypt::scrypt(password.as_bytes(), salt, &params, &mut key).expect("32-byte output");
    key
}

/// Opens a private key file's text with `password`.
pub fn open_private(pem: &str, password: &str) -> Result<SigningKey, KeyError> {
    let bad = |why: &str| KeyError::Private(why.to_owned());
    let (label, json) =
        pem_rfc7468::decode_vec(pem.trim().as_bytes()).map_err(|e| bad(&e.to_string()))?;
    if label != PRIVATE_LABEL && label != OLD_PRIVATE_LABEL {
        return Err(bad(&format!(
            "its PEM label is '{label}', not '{PRIVATE_LABEL}'"
        )));
    }
    let sealed: Sealed = serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))?;
    if sealed.kdf.name != "scrypt" || sealed.cipher.name != "nacl/secretbox" {
        return Err(bad("it is not sealed with scrypt and nacl/secretbox"));
    }
    let n = sealed.kdf.params.N;
    let log_n = n.trailing_zeros();
    if !n.is_power_of_two() || log_n == 0 || log_n > u32::from(MAX_SCRYPT_LOG_N) {
        return Err(bad(&format!(
            "scrypt N = {n} is not a power of two up to 2^20"
        )));
    }
    let (r, p) = (sealed.kdf.params.r, sealed.kdf.params.p);
    if scrypt::Params::new(log_n as u8, r, p).is_err() || r > 32 || p > 16 {
        return Err(bad("its scrypt parameters are out of range"));
    }
    let decode =
        |field: &str, text: &str| B64.decode(text).map_err(|e| bad(&format!("{field}: {e}")));
    let salt = decode("salt", &sealed.kdf.salt)?;
    let nonce = decode("nonce", &sealed.cipher.nonce)?;
    let ciphertext = decode("ciphertext", &sealed.ciphertext)?;
    let nonce: [u8; 24] = nonce
        .try_into()
        .map_err(|_| bad("its nonce is not 24 bytes"))?;
    let cipher = XSalsa20Poly1305::new(&derive(password, &salt, log_n as u8, r, p));
    let der = cipher
        .decrypt(&Nonce::from(nonce), ciphertext.as_slice())
        .map_err(|_| KeyError::Password)?;
    SigningKey::from_pkcs8_der(&der).map_err(|e| bad(&format!("not an ECDSA P-256 key: {e}")))
}

/// Reads a public key (PKIX PEM, as `cosign.pub`).
pub fn open_public(pem: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError::Public(e.to_string()))
}

/// The simple-signing payload for the manifest `digest` of `repository` (as
/// `registry/repository`), byte for byte as cosign writes it.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    }))
    .expect("plain JSON")
}

/// `payload` signed with `key`: the annotation value (base64 of the DER signature).
pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
    let signature: DerSignature = key.sign(payload);
    B64.encode(signature.as_bytes())
}

/// Why a signature does not vouch for a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("no trusted key made this signature")]
    Key,
    #[error("the signature is not base64 DER")]
    Encoding,
    #[error("the signed payload is not cosign's simple signing JSON")]
    Payload,
    #[error("it signs {0}, another digest")]
    Digest(String),
}

/// Whether `signature` (the annotation value) over `payload` is by `key` and names
/// `digest`.
pub fn verify(
    key: &VerifyingKey,
    payload: &[u8],
    signature: &str,
    digest: &str,
) -> Result<(), Mismatch> {
    let der = B64
        .decode(signature.trim())
        .map_err(|_| Mismatch::Encoding)?;
    let signature = DerSignature::try_from(der.as_slice()).map_err(|_| Mismatch::Encoding)?;
    if key.verify(payload, &signature).is_err() {
        return Err(Mismatch::Key);
    }
    signs(payload, digest)
}

/// Whether `payload` is cosign's simple signing JSON naming `digest`.
pub fn signs(payload: &[u8], digest: &str) -> Result<(), Mismatch> {
    #[derive(Deserialize)]
    struct Payload {
        critical: Critical,
    }
    #[derive(Deserialize)]
    struct Critical {
        image: Image,
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        digest: String,
    }
    let parsed: Payload = serde_json::from_slice(payload).map_err(|_| Mismatch::Payload)?;
    if parsed.critical.kind != PAYLOAD_TYPE {
        return Err(Mismatch::Payload);
    }
    if parsed.critical.image.digest != digest {
        return Err(Mismatch::Digest(parsed.critical.image.digest));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_generated_key_signs_and_only_its_public_key_verifies() {
        let (private, public) = generate("pw");
        assert!(private.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        let key = open_private(&private, "pw").unwrap();
        assert!(matches!(
            open_private(&private, "other"),
            Err(KeyError::Password)
        ));
        let public = open_public(&public).unwrap();
        let payload = payload("r:5000/checks/x", D);
        let signature = sign(&key, &payload);
        assert_eq!(verify(&public, &payload, &signature, D), Ok(()));

        let other_digest = D.replace("0123", "4567");
        assert_eq!(
            verify(&public, &payload, &signature, &other_digest),
            Err(Mismatch::Digest(D.to_owned()))
        );
        let (_, stranger) = generate("");
        let stranger = open_public(&stranger).unwrap();
        assert_eq!(
            verify(&stranger, &payload, &signature, D),
            Err(Mismatch::Key)
        );
        let mut tampered = payload.clone();
        tampered[5] ^= 1;
        assert_eq!(
            verify(&public, &tampered, &signature, D),
            Err(Mismatch::Key)
        );
        assert_eq!(verify(&public, &payload, "!!", D), Err(Mismatch::Encoding));
    }

    #[test]
    fn hostile_key_files_are_refused_before_any_work() {
        let (private, _) = generate("");
        let (_, json) = pem_rfc7468::decode_vec(private.as_bytes()).unwrap();
        let greedy = String::from_utf8(json)
            .unwrap()
            .replace("65536", "4294967296");
        let pem = pem_rfc7468::encode_string(
            PRIVATE_LABEL,
            pem_rfc7468::LineEnding::LF,
            greedy.as_bytes(),
        )
        .unwrap();
        let error = open_private(&pem, "").unwrap_err().to_string();
        assert!(error.contains("power of two up to 2^20"), "{error}");
        let error = open_private(
            "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("its PEM label is 'PRIVATE KEY'"), "{error}");
        assert!(open_public("not a key").is_err());
    }
}
