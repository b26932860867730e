//! Registry signatures, as npm verifies them (pacote's registry check, `npm audit signatures`):
//! each version's `dist.signatures` holds an ECDSA P-256 (SHA-256) signature over
//! `<name>@<version>:<dist.integrity>`, and `GET /-/npm/v1/keys` lists the public keys (DER
//! SubjectPublicKeyInfo, base64), each named as npm names its own (`key_id`). Pure: the keys
//! themselves live in `crate::signing`.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// npm's name for the key type and the signature scheme of every key listed.
pub const ECDSA_P256: &str = "ecdsa-sha2-nistp256";

/// The DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, then the BIT
/// STRING of a 65-byte uncompressed point).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// One signature of a version, as `dist.signatures[]` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistSignature {
    /// The signing key's id (`SHA256:…`).
    pub keyid: String,
    /// The DER-encoded ECDSA signature, base64.
    pub sig: String,
}

/// A public key as `GET /-/npm/v1/keys` lists it (and as the key-value store keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// `SHA256:` + the key's OpenSSH fingerprint (see `key_id`).
    pub keyid: String,
    /// `ecdsa-sha2-nistp256`.
    pub keytype: String,
    /// `ecdsa-sha2-nistp256`.
    pub scheme: String,
    /// The DER SubjectPublicKeyInfo, base64.
    pub key: String,
    /// When the key stopped signing: signatures of versions published before still verify.
    pub expires: Option<DateTime<Utc>>,
    /// When the registry started signing with it (not in npm's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime<Utc>>,
}

impl PublicKey {
    /// The listing of a P-256 key given as its DER SubjectPublicKeyInfo.
    pub fn p256(spki_der: &[u8], created: DateTime<Utc>) -> Self {
        Self {
            keyid: key_id(spki_der),
            keytype: ECDSA_P256.into(),
            scheme: ECDSA_P256.into(),
            key: base64::engine::general_purpose::STANDARD.encode(spki_der),
            expires: None,
            created: Some(created),
        }
    }

    /// The key as npm's answer shows it (`created` left out).
    pub fn listed(&self) -> serde_json::Value {
        serde_json::json!({
            "expires": self.expires.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "keyid": self.keyid,
            "keytype": self.keytype,
            "scheme": self.scheme,
            "key": self.key,
        })
    }
}

/// What is signed for a version: `<name>@<version>:<integrity>`, pacote's message.
pub fn message(name: &str, version: &str, integrity: &str) -> String {
    format!("{name}@{version}:{integrity}")
}

/// A key's id as npm's registry names its own: `SHA256:` and the unpadded base64 of the SHA-256
/// of the key's OpenSSH wire form (`string "ecdsa-sha2-nistp256", string "nistp256", string
/// point`), i.e. `ssh-keygen -l`'s fingerprint, which the key type's SSH name hints at. (Not of
/// the DER, as one might guess: npm's key `MFkwEwYH…` has the id `SHA256:jl3bwswu…`, checked
/// below.) A key that is not P-256 is named by the SHA-256 of its DER.
pub fn key_id(spki_der: &[u8]) -> String {
    let digest = match spki_der.strip_prefix(&P256_SPKI_PREFIX[..]) {
        Some(point) if point.len() == 65 => {
            let mut blob = Vec::with_capacity(4 + 19 + 4 + 8 + 4 + 65);
            for part in [ECDSA_P256.as_bytes(), b"nistp256", point] {
                blob.extend_from_slice(&u32::try_from(part.len()).unwrap_or(0).to_be_bytes());
                blob.extend_from_slice(part);
            }
            sha2::Sha256::digest(&blob)
        }
        _ => sha2::Sha256::digest(spki_der),
    };
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The DER SubjectPublicKeyInfo of a P-256 key given as its uncompressed point (65 bytes,
/// `04 || x || y`), or `None` for anything else.
pub fn p256_spki(point: &[u8]) -> Option<Vec<u8>> {
    if point.len() != 65 || point[0] != 0x04 {
        return None;
    }
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    Some(der)
}

/// The uncompressed point of a P-256 key given as its DER SubjectPublicKeyInfo, or `None` for
/// any other key.
pub fn p256_point(spki_der: &[u8]) -> Option<&[u8]> {
    spki_der
        .strip_prefix(&P256_SPKI_PREFIX[..])
        .filter(|point| point.len() == 65)
}

/// The signature as `dist.signatures[]` carries it.
pub fn dist_signature(keyid: &str, der_signature: &[u8]) -> DistSignature {
    DistSignature {
        keyid: keyid.to_string(),
        sig: base64::engine::general_purpose::STANDARD.encode(der_signature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_pacotes() {
        assert_eq!(
            message("@s/p", "1.0.0", "sha512-abc=="),
            "@s/p@1.0.0:sha512-abc=="
        );
    }

    #[test]
    fn key_ids_are_npms() {
        // npm's own registry key (from its /-/npm/v1/keys answer) and its published id.
        let der = base64::engine::general_purpose::STANDARD
            .decode("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE1Olb3zMAFFxXKHiIkQO5cJ3Yhl5i6UPp+IhuteBJbuHcA5UogKo0EWtlWwW6KSaKoTNEYL7JlCQiVnkhBktUgg==")
            .unwrap();
        assert_eq!(
            key_id(&der),
            "SHA256:jl3bwswu80PjjokCgh0o2w5c2U4LhQAE57gj9cz1kzA"
        );
        assert_eq!(p256_spki(&der[26..]).unwrap(), der);
        assert!(p256_spki(&der[25..]).is_none());
    }
}
