//! Where trust configurations live: small records in the KV store, one namespace per package
//! (`kv::Namespace::Trust`), keyed by configuration id. The trusted-publishing exchange reads
//! them; the `/-/package/NAME/trust` routes write them.

use super::kv::{Kv, KvKey, Namespace};
use crate::domain::PackageName;
use crate::domain::trust::TrustConfiguration;
use crate::storage::StoreError;

/// The most configurations one package may have (npm's registry allows a handful; so do we).
pub(crate) const MAX_PER_PACKAGE: usize = 20;

/// Every configuration of `name`, oldest first. Records that do not decode are skipped (and
/// logged): a damaged record must not widen or block what the others allow.
pub async fn configurations(
    kv: &Kv,
    name: &PackageName,
) -> Result<Vec<TrustConfiguration>, StoreError> {
    let mut configs: Vec<TrustConfiguration> = kv
        .list(&Namespace::trust(name))
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
    kv: &Kv,
    name: &PackageName,
    id: &str,
) -> Result<Option<TrustConfiguration>, StoreError> {
    kv.get_json(&KvKey::trust_configuration(name, id)).await
}

/// Stores a configuration (no expiry: it lasts until revoked).
pub async fn save(
    kv: &Kv,
    name: &PackageName,
    config: &TrustConfiguration,
) -> Result<(), StoreError> {
    kv.put_json(&KvKey::trust_configuration(name, &config.id), config, None)
        .await
}

/// Removes a configuration; removing an absent one succeeds.
pub async fn remove(kv: &Kv, name: &PackageName, id: &str) -> Result<(), StoreError> {
    kv.delete(&KvKey::trust_configuration(name, id)).await
}
