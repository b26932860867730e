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

impl Digests {
    /// Hashes the bytes.
    pub fn of(bytes: &[u8]) -> Self {
        let sha1 = sha1::Sha1::digest(bytes);
        let sha512 = sha2::Sha512::digest(bytes);
        Self {
            sha1_hex: hex::encode(sha1),
            integrity: format!(
                "sha512-{}",
                base64::engine::general_purpose::STANDARD.encode(sha512)
            ),
            sha512_hex: hex::encode(sha512),
            sha512: sha512.into(),
        }
    }

    /// Whether an SRI string (possibly several space-separated hashes) agrees with these bytes:
    /// every sha512 or sha1 entry must match and at least one must be present.
    pub(crate) fn matches_sri(&self, sri: &str) -> bool {
        let sha1_sri = hex::decode(&self.sha1_hex)
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
                if entry != self.integrity {
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
    }
}
