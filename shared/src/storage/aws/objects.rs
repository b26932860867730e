//! Objects in the bucket, by their typed keys: the reads and writes every S3 user here shares.

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::AwsStorage;
use super::errors::{Resource, classify};
use super::layout::ObjectKey;
use crate::storage::StoreError;

impl AwsStorage {
    /// An object's bytes; `None` if there is none at `key`.
    pub(super) async fn get_object(&self, key: ObjectKey<'_>) -> Result<Option<Bytes>, StoreError> {
        match self
            .s3
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key.to_string())
            .send()
            .await
        {
            Ok(out) => {
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key,
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify(e, self.bucket())),
        }
    }

    /// Deletes an object; deleting an absent one succeeds (S3 answers 204 either way).
    pub(super) async fn delete_object(&self, key: ObjectKey<'_>) -> Result<(), StoreError> {
        self.s3
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(key.to_string())
            .send()
            .await
            .map_err(|e| classify(e, self.bucket()))?;
        Ok(())
    }

    /// A `PutObject`, owning all it needs, so it can also run after the response.
    pub(super) fn put_object(
        &self,
        key: ObjectKey<'_>,
        bytes: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let send = self
            .s3
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key.to_string())
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send();
        let bucket = self.settings.bucket.clone();
        async move {
            send.await
                .map_err(|e| classify(e, Resource::Bucket(&bucket)))?;
            Ok(())
        }
    }
}
