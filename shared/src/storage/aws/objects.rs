//! Objects in the bucket, by their typed keys: the reads and writes every S3 user here shares.

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::AwsStorage;
use super::errors::{Resource, classify};
use super::layout::ObjectKey;
use crate::storage::StoreError;

/// What a conditional `PutObject` requires of the object it replaces (S3 conditional writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Replacing {
    /// There is none (`If-None-Match: *`).
    Absent,
    /// The one with this ETag, unchanged since it was read (`If-Match`).
    Etag(String),
}

impl AwsStorage {
    /// An object's bytes; `None` if there is none at `key`.
    pub(super) async fn get_object(&self, key: ObjectKey<'_>) -> Result<Option<Bytes>, StoreError> {
        Ok(self.get_object_tagged(key).await?.map(|(bytes, _)| bytes))
    }

    /// An object's bytes and its ETag; `None` if there is none at `key`.
    pub(super) async fn get_object_tagged(
        &self,
        key: ObjectKey<'_>,
    ) -> Result<Option<(Bytes, Option<String>)>, StoreError> {
        match self
            .s3
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key.to_string())
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag;
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(Some((body.into_bytes(), etag)))
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

    /// The `PutObject` of `bytes` at `key`, ready to send (or to make conditional first).
    fn put_request(
        &self,
        key: ObjectKey<'_>,
        bytes: Bytes,
        content_type: &str,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.s3
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key.to_string())
            .content_type(content_type)
            .body(ByteStream::from(bytes))
    }

    /// A `PutObject`, owning all it needs, so it can also run after the response.
    pub(super) fn put_object(
        &self,
        key: ObjectKey<'_>,
        bytes: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let send = self.put_request(key, bytes, content_type).send();
        let bucket = self.settings.bucket.clone();
        async move {
            send.await
                .map_err(|e| classify(e, Resource::Bucket(&bucket)))?;
            Ok(())
        }
    }

    /// A `PutObject` that stores `bytes` only if the object at `key` is still as `replacing`
    /// says: `false` when it is not (S3's `412 Precondition Failed`, or `409` when another
    /// conditional write to the key raced it), so a writer never replaces what it did not read.
    pub(super) fn put_object_if(
        &self,
        key: ObjectKey<'_>,
        bytes: Bytes,
        content_type: &str,
        replacing: &Replacing,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let put = self.put_request(key, bytes, content_type);
        let send = match replacing {
            Replacing::Absent => put.if_none_match("*"),
            Replacing::Etag(etag) => put.if_match(etag),
        }
        .send();
        let bucket = self.settings.bucket.clone();
        async move {
            match send.await {
                Ok(_) => Ok(true),
                Err(e)
                    if e.raw_response()
                        .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
                {
                    Ok(false)
                }
                Err(e) => Err(classify(e, Resource::Bucket(&bucket))),
            }
        }
    }
}
