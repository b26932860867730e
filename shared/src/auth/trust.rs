//! Where trust configurations live: small records in the KV store, one namespace per package
//! (`trust/<name>`), keyed by configuration id. The trusted-publishing exchange reads them; the
//! `/-/package/NAME/trust` routes write them.

use crate::domain::PackageName;
use crate::domain::trust::TrustConfiguration;
use crate::storage::{KvStore, StoreError};

/// The most configurations one package may have (npm's registry allows a handful; so do we).
pub const MAX_PER_PACKAGE: usize = 20;

/// The KV namespace of a package's trust configurations.
pub fn namespace(name: &PackageName) -> String {
    format!("trust/{}", name.as_str())
}

/// Every configuration of `name`, oldest first. Records that do not decode are skipped (and
/// logged): a damaged record must not widen or block what the others allow.
pub async fn configurations(
    kv: &dyn KvStore,
    name: &PackageName,
) -> Result<Vec<TrustConfiguration>, StoreError> {
    let mut configs: Vec<TrustConfiguration> = kv
        .list(&namespace(name))
        .await?
        .into_iter()
        .filter_map(|(id, bytes)| match serde_json::from_slice(&bytes) {
            Ok(config) => Some(config),
            Err(e) => {
                tracing::error!(package = %name, id, error = %e, "unreadable trust configuration skipped");
                None
            }
        })
        .collect();
    configs.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(configs)
}

/// One configuration of `name`, if it exists.
pub async fn configuration(
    kv: &dyn KvStore,
    name: &PackageName,
    id: &str,
) -> Result<Option<TrustConfiguration>, StoreError> {
    Ok(kv
        .get(&namespace(name), id)
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Stores a configuration (no expiry: it lasts until revoked).
pub async fn save(
    kv: &dyn KvStore,
    name: &PackageName,
    config: &TrustConfiguration,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(config).map_err(|e| StoreError::Internal(e.to_string()))?;
    kv.put(&namespace(name), &config.id, &bytes, None).await
}

/// Removes a configuration; removing an absent one succeeds.
pub async fn remove(kv: &dyn KvStore, name: &PackageName, id: &str) -> Result<(), StoreError> {
    kv.delete(&namespace(name), id).await
}
