//! Where registry-token records live: in the KV store, one namespace per user
//! (`kv::Namespace::Tokens`), keyed by token id, until the token expires. `auth::tokens` makes
//! and checks the tokens; it stays free of I/O (the fuzz crate compiles it alone).

use super::kv::{Kv, KvKey, Namespace};
use super::tokens::TokenRecord;
use crate::storage::StoreError;

/// Stores a token's record until the token expires (under `kv::Namespace::Tokens` of its login).
pub async fn save(kv: &Kv, record: &TokenRecord) -> Result<(), StoreError> {
    kv.put_json(
        &KvKey::registry_token(&record.login, &record.jti),
        record,
        Some(record.expires),
    )
    .await
}

/// The record of `login`'s token `jti`; one that does not decode reads as absent (revoked).
pub async fn record(kv: &Kv, login: &str, jti: &str) -> Result<Option<TokenRecord>, StoreError> {
    kv.get_json(&KvKey::registry_token(login, jti)).await
}

/// Whether `login`'s token `jti` still exists (has not expired nor been revoked).
pub async fn exists(kv: &Kv, login: &str, jti: &str) -> Result<bool, StoreError> {
    Ok(kv.get(&KvKey::registry_token(login, jti)).await?.is_some())
}

/// Every record of `login`'s tokens, oldest first; records that do not decode are skipped.
pub async fn records(kv: &Kv, login: &str) -> Result<Vec<TokenRecord>, StoreError> {
    let mut records: Vec<TokenRecord> = kv
        .list(&Namespace::tokens(login))
        .await?
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect();
    records.sort_by_key(|r| r.created);
    Ok(records)
}

/// Revokes `login`'s token `jti` (and with it every token minted with it); revoking an absent
/// one succeeds.
pub async fn remove(kv: &Kv, login: &str, jti: &str) -> Result<(), StoreError> {
    kv.delete(&KvKey::registry_token(login, jti)).await
}
