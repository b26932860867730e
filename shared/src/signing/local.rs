//! A signing key in the local server's data directory: `DATA/signing/key.p8`, a PKCS#8 P-256
//! key that ring generates on first start (readable by the server's user only). Rotation puts a
//! new key in its place and keeps the old one in `DATA/signing/retired/`.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use super::{Signer, SigningError};
use crate::domain::signing::{PublicKey, p256_spki};

/// The key file's name in `DATA/signing/`.
const KEY_FILE: &str = "key.p8";

/// A P-256 key held in memory, read from (or generated into) the data directory.
pub struct LocalSigner {
    pair: EcdsaKeyPair,
    public: PublicKey,
    rng: SystemRandom,
}

impl LocalSigner {
    /// The data directory's key, generated and written there if it has none yet.
    pub fn open_or_create(data_dir: &Path) -> io::Result<Self> {
        let path = key_path(data_dir);
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => write_new_key(&path)?,
            Err(e) => return Err(e),
        };
        Self::from_pkcs8(&pkcs8).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// A signer for a PKCS#8 P-256 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
            .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
        let spki = p256_spki(pair.public_key().as_ref())
            .ok_or_else(|| "the public key is not an uncompressed P-256 point".to_string())?;
        let public = PublicKey::p256(&spki, chrono::Utc::now());
        Ok(Self { pair, public, rng })
    }

    /// Replaces the data directory's key with a new one, keeping the old one under `retired/`;
    /// the new key's id. A running server signs with it after its next start.
    pub fn rotate(data_dir: &Path) -> io::Result<String> {
        let path = key_path(data_dir);
        if path.exists() {
            let old = Self::open_or_create(data_dir)?;
            let retired = data_dir.join("signing").join("retired");
            std::fs::create_dir_all(&retired)?;
            let file = old.public.keyid.replace(['/', '+', ':'], "_");
            std::fs::rename(&path, retired.join(format!("{file}.p8")))?;
        }
        write_new_key(&path)?;
        Ok(Self::open_or_create(data_dir)?.public.keyid)
    }
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("signing").join(KEY_FILE)
}

/// Generates a key and writes it to `path` (owner-only), atomically.
fn write_new_key(path: &Path) -> io::Result<Vec<u8>> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|e| io::Error::other(format!("generating a signing key: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    io::Write::write_all(&mut file, pkcs8.as_ref())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(pkcs8.as_ref().to_vec())
}

#[async_trait]
impl Signer for LocalSigner {
    async fn public_key(&self) -> Result<PublicKey, SigningError> {
        Ok(self.public.clone())
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.pair
            .sign(&self.rng, message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|e| SigningError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

    #[tokio::test]
    async fn signs_what_the_listed_key_verifies_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let signer = LocalSigner::open_or_create(dir.path()).unwrap();
        let again = LocalSigner::open_or_create(dir.path()).unwrap();
        assert_eq!(
            signer.public.keyid, again.public.keyid,
            "kept between starts"
        );
        let sig = signer.sign(b"a@1.0.0:sha512-x").await.unwrap();
        let point = &signer.pair.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
            .verify(b"a@1.0.0:sha512-x", &sig)
            .unwrap();
        let rotated = LocalSigner::rotate(dir.path()).unwrap();
        assert_ne!(rotated, signer.public.keyid);
        assert_eq!(
            std::fs::read_dir(dir.path().join("signing/retired"))
                .unwrap()
                .count(),
            1
        );
    }
}
