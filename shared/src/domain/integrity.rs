//! Tarball digests in the forms npm declares them: hex sha1 `shasum` and SRI sha512 `integrity`.

use base64::Engine;
use sha1::Digest;

/// The digests of a tarball's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Lowercase hex sha1 (`dist.shasum`).
    pub sha1_hex: String,
    /// `sha512-<base64>` (`dist.integrity`).
    pub integrity: String,
    /// Lowercase hex sha512, used in storage keys.
    pub sha512_hex: String,
    /// The raw sha512 (a provenance statement's subject digest).
    pub sha512: [u8; 64],
}

/// Digests computed over bytes that arrive in pieces (a tarball streamed to storage).
#[derive(Clone, Default)]
pub struct DigestsBuilder {
    sha1: sha1::Sha1,
    sha512: sha2::Sha512,
}

impl DigestsBuilder {
    /// Hashes the next piece.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha1.update(bytes);
        self.sha512.update(bytes);
    }

    /// The digests of every piece so far.
    pub fn finish(self) -> Digests {
        Digests::from_hashes(&self.sha1.finalize().into(), &self.sha512.finalize().into())
    }
}

impl Digests {
    /// Hashes the bytes.
    pub fn of(bytes: &[u8]) -> Self {
        let mut builder = DigestsBuilder::default();
        builder.update(bytes);
        builder.finish()
    }

    /// The lowercase hex sha512 an SRI string declares, if it has a sha512 entry (the first).
    pub fn declared_sha512_hex(sri: &str) -> Option<String> {
        sri.split_whitespace()
            .filter_map(|entry| entry.split('?').next()?.strip_prefix("sha512-"))
            .find_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|raw| raw.len() == 64)
            .map(hex::encode)
    }

    fn from_hashes(sha1: &[u8; 20], sha512: &[u8; 64]) -> Self {
        Self {
            sha1_hex: hex::encode(sha1),
            integrity: format!(
                "sha512-{}",
                base64::engine::general_purpose::STANDARD.encode(sha512)
            ),
            sha512_hex: hex::encode(sha512),
            sha512: *sha512,
        }
    }

    /// Whether an SRI string (possibly several space-separated hashes) agrees with these bytes:
    /// every sha512 or sha1 entry must match and at least one must be present.
    pub(crate) fn matches_sri(&self, sri: &str) -> bool {
        sri_agrees(sri, &self.integrity, &self.sha1_hex)
    }
}

/// Whether an SRI string (possibly several space-separated hashes) agrees with the bytes whose
/// sha512 SRI is `integrity` and whose hex sha1 is `sha1_hex` (what is recorded of bytes kept
/// earlier): every sha512 or sha1 entry must match and at least one must be present.
pub(crate) fn sri_agrees(sri: &str, integrity: &str, sha1_hex: &str) -> bool {
    let sha1_sri = hex::decode(sha1_hex)
        .map(|raw| {
            format!(
                "sha1-{}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
        .unwrap_or_default();
    let mut checked = 0;
    for entry in sri.split_whitespace() {
        // SRI allows `?options` after the digest.
        let entry = entry.split('?').next().unwrap_or(entry);
        if entry.starts_with("sha512-") {
            if entry != integrity {
                return false;
            }
            checked += 1;
        } else if entry.starts_with("sha1-") {
            if entry != sha1_sri {
                return false;
            }
            checked += 1;
        }
    }
    checked > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let d = Digests::of(b"hello");
        assert_eq!(d.sha1_hex, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
        assert!(d.integrity.starts_with("sha512-m3HSJL1i83hdltRq0+o9czGb+8KJDKra4t/3JRlnPKcjI8PZm6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw=="));
        assert!(d.matches_sri(&d.integrity));
        assert!(d.matches_sri("sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00="));
        assert!(!d.matches_sri("sha512-AAAA"));
        assert!(!d.matches_sri("md5-xyz"));
        // In pieces, the same digests; the declared sha512 is the one the key is made from.
        let mut pieces = DigestsBuilder::default();
        pieces.update(b"hel");
        pieces.update(b"lo");
        assert_eq!(pieces.finish(), d);
        assert_eq!(
            Digests::declared_sha512_hex(&format!(
                "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00= {}",
                d.integrity
            )),
            Some(d.sha512_hex.clone())
        );
        assert_eq!(
            Digests::declared_sha512_hex("sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00="),
            None
        );
        assert_eq!(Digests::declared_sha512_hex("sha512-AAAA"), None);
    }
}
