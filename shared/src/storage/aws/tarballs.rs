//! Tarballs in S3: stored under `ObjectKey::Tarball`, handed out as presigned GETs.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use bytes::Bytes;

use super::AwsStorage;
use super::errors::{classify, internal};
use super::layout::ObjectKey;
use crate::domain::TarballKey;
use crate::storage::{StoreError, TarballRead, TarballStore};

impl AwsStorage {
    /// A presigned GET of the object at `key`, valid for the configured time.
    pub(super) async fn presigned_get(&self, key: ObjectKey<'_>) -> Result<String, StoreError> {
        let config = PresigningConfig::expires_in(self.settings.presign).map_err(internal)?;
        let presigned = self
            .s3
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key.to_string())
            .presigned(config)
            .await
            .map_err(|e| classify(e, self.bucket()))?;
        Ok(presigned.uri().to_string())
    }
}

#[async_trait]
impl TarballStore for AwsStorage {
    async fn put(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError> {
        self.put_object(ObjectKey::Tarball(key), bytes, "application/octet-stream")
            .await
    }

    async fn get(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError> {
        // No HEAD first: the key is only ever read after the metadata that references it was
        // committed, which happens only after the object was stored. Presigning is local, so a
        // missing bucket is not seen here: the client's GET of the URL gets S3's `NoSuchBucket`
        // (404). The server's start-up check and every other path (publish, packument
        // snapshots) name it; a HEAD per download to name it here too would double the cost.
        Ok(Some(TarballRead::Redirect(
            self.presigned_get(ObjectKey::Tarball(key)).await?,
        )))
    }

    async fn list(&self, older_than: Duration) -> Result<Vec<TarballKey>, StoreError> {
        let cutoff = aws_smithy_types::DateTime::from(std::time::SystemTime::now() - older_than);
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(ObjectKey::TARBALLS)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| classify(e, self.bucket()))?;
            for object in out.contents() {
                let old_enough = object
                    .last_modified()
                    .is_some_and(|t| t.secs() <= cutoff.secs());
                if let (true, Some(key)) =
                    (old_enough, object.key().and_then(ObjectKey::tarball_of))
                {
                    keys.push(key);
                }
            }
            match out.next_continuation_token {
                Some(t) if out.is_truncated == Some(true) => token = Some(t),
                _ => return Ok(keys),
            }
        }
    }

    async fn delete(&self, key: &TarballKey) -> Result<(), StoreError> {
        self.s3
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(ObjectKey::Tarball(key).to_string())
            .send()
            .await
            .map_err(|e| classify(e, self.bucket()))?;
        Ok(())
    }
}
