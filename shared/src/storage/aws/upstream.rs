//! The pull-through cache's objects in the bucket, under `upstream/` (`ObjectKey::Upstream*`):
//! documents read and written whole, tarballs handed out as presigned GETs like published ones.

use async_trait::async_trait;
use bytes::Bytes;

use super::AwsStorage;
use super::layout::ObjectKey;
use crate::domain::{PackageName, TarballKey};
use crate::storage::{StoreError, TarballRead, UpstreamStore};

#[async_trait]
impl UpstreamStore for AwsStorage {
    async fn document(&self, name: &PackageName, view: &str) -> Result<Option<Bytes>, StoreError> {
        self.get_object(ObjectKey::UpstreamDocument(name, view))
            .await
    }

    async fn keep_document(
        &self,
        name: &PackageName,
        view: &str,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        self.put_object(
            ObjectKey::UpstreamDocument(name, view),
            bytes,
            "application/json",
        )
        .await
    }

    async fn tarball(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError> {
        // Only asked for keys whose record says they were stored (see `TarballStore::get`).
        Ok(Some(TarballRead::Redirect(
            self.presigned_get(ObjectKey::UpstreamTarball(key)).await?,
        )))
    }

    async fn keep_tarball(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError> {
        self.put_object(
            ObjectKey::UpstreamTarball(key),
            bytes,
            "application/octet-stream",
        )
        .await
    }
}
