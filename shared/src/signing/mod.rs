//! The registry's signing keys (`dist.signatures`, `GET /-/npm/v1/keys`): a small trait with a
//! local key file (`local`), and the list of public keys kept in the key-value store.
//!
//! Every key that ever signed stays listed, so signatures made with it keep verifying; a key is
//! given an `expires` when a newer one starts signing, and npm accepts its signatures on versions
//! published before that time (pacote compares the key's expiry with `time[version]`).

pub mod backfill;
pub mod kms;
pub mod local;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::OnceCell;

use crate::domain::signing::{DistSignature, PublicKey, dist_signature, message};
use crate::storage::{KvStore, StoreError};

/// The key-value namespace of the public keys, one entry per key id.
pub const KEYS_NAMESPACE: &str = "signing-keys";

/// Why a version could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key (or the service holding it) cannot sign now.
    #[error("the registry's signing key cannot sign now: {0}")]
    Unavailable(String),
    /// The key list could not be updated.
    #[error("the registry's key list could not be updated: {0}")]
    Store(#[from] StoreError),
}

/// Something that signs with one P-256 key.
#[async_trait]
pub trait Signer: Send + Sync {
    /// The key's public half, as listed.
    async fn public_key(&self) -> Result<PublicKey, SigningError>;
    /// The DER ECDSA signature of `message` (SHA-256).
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError>;
}

/// Signs versions with a signer, making sure its key is listed before the first signature.
pub struct Signing {
    signer: Arc<dyn Signer>,
    kv: Arc<dyn KvStore>,
    listed: OnceCell<()>,
}

impl Signing {
    /// Signing with `signer`, its key listed in `kv`.
    pub fn new(signer: Arc<dyn Signer>, kv: Arc<dyn KvStore>) -> Self {
        Self {
            signer,
            kv,
            listed: OnceCell::new(),
        }
    }

    /// `dist.signatures[]` for a version of `name` whose integrity is `integrity`.
    pub async fn sign_version(
        &self,
        name: &str,
        version: &str,
        integrity: &str,
    ) -> Result<DistSignature, SigningError> {
        self.list_key().await?;
        let key = self.signer.public_key().await?;
        let der = self
            .signer
            .sign(message(name, version, integrity).as_bytes())
            .await?;
        Ok(dist_signature(&key.keyid, &der))
    }

    /// Lists the signer's key (once per process), and gives every key listed before it that has
    /// no expiry one now: a newer key signs from here on.
    pub async fn list_key(&self) -> Result<(), SigningError> {
        self.listed
            .get_or_try_init(|| async {
                let mut key = self.signer.public_key().await?;
                let listed = keys(self.kv.as_ref()).await?;
                let now = Utc::now();
                let mine = listed.iter().find(|k| k.keyid == key.keyid);
                if let Some(existing) = mine {
                    key = existing.clone();
                } else {
                    key.created = Some(now);
                    put(self.kv.as_ref(), &key).await?;
                    tracing::info!(keyid = %key.keyid, "signing key listed");
                }
                for older in listed.iter().filter(|k| {
                    k.keyid != key.keyid && k.expires.is_none() && k.created < key.created
                }) {
                    let mut expired = older.clone();
                    expired.expires = Some(now);
                    put(self.kv.as_ref(), &expired).await?;
                    tracing::info!(keyid = %older.keyid, "signing key expired: a newer key signs");
                }
                Ok::<(), SigningError>(())
            })
            .await
            .map(|&()| ())
    }
}

async fn put(kv: &dyn KvStore, key: &PublicKey) -> Result<(), StoreError> {
    let value = serde_json::to_vec(key).map_err(|e| StoreError::Internal(e.to_string()))?;
    kv.put(KEYS_NAMESPACE, &key.keyid, &value, None).await
}

/// Every key that ever signed here, oldest first.
pub async fn keys(kv: &dyn KvStore) -> Result<Vec<PublicKey>, StoreError> {
    let mut keys: Vec<PublicKey> = kv
        .list(KEYS_NAMESPACE)
        .await?
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
        .collect();
    keys.sort_by(|a, b| a.created.cmp(&b.created).then(a.keyid.cmp(&b.keyid)));
    Ok(keys)
}
