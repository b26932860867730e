//! The pull-through cache's objects in the bucket, under `upstream/` (`ObjectKey::Upstream*`):
//! documents read and written whole, tarballs handed out as presigned GETs like published ones.
//! A tarball arriving in pieces is written as a multipart upload once it outgrows one part,
//! completed only after the caller checked every byte: a function never holds more than a part
//! of it, and a refused or interrupted one never becomes an object.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};

use super::AwsStorage;
use super::errors::classify;
use super::layout::ObjectKey;
use crate::domain::{PackageName, TarballKey};
use crate::storage::{StoreError, TarballRead, TarballSink, UpstreamStore};

/// The size of each part of a multipart upload but the last (S3 wants at least 5 MiB).
const PART_BYTES: usize = 8 << 20;

/// An upstream tarball on its way to the bucket.
struct MultipartSink<'a> {
    storage: &'a AwsStorage,
    key: TarballKey,
    /// Bytes not sent yet: less than a part.
    buffer: BytesMut,
    /// The multipart upload, once the tarball outgrew one part.
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl MultipartSink<'_> {
    fn object_key(&self) -> String {
        ObjectKey::UpstreamTarball(&self.key).to_string()
    }

    async fn send_part(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        let s3 = &self.storage.s3;
        let bucket = &self.storage.settings.bucket;
        let upload_id = if let Some(id) = &self.upload_id {
            id.clone()
        } else {
            let created = s3
                .create_multipart_upload()
                .bucket(bucket)
                .key(self.object_key())
                .content_type("application/octet-stream")
                .send()
                .await
                .map_err(|e| classify(e, self.storage.bucket()))?;
            let id = created
                .upload_id()
                .ok_or_else(|| StoreError::Internal("S3 gave no upload id".into()))?
                .to_string();
            self.upload_id = Some(id.clone());
            id
        };
        let number = i32::try_from(self.parts.len() + 1)
            .map_err(|_| StoreError::Internal("too many parts".into()))?;
        let sent = s3
            .upload_part()
            .bucket(bucket)
            .key(self.object_key())
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| classify(e, self.storage.bucket()))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    }
}

#[async_trait]
impl TarballSink for MultipartSink<'_> {
    async fn write(&mut self, piece: Bytes) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(&piece);
        while self.buffer.len() >= PART_BYTES {
            let part = self.buffer.split_to(PART_BYTES).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        let Some(upload_id) = self.upload_id.clone() else {
            // Smaller than a part: one PutObject, as a tarball fetched whole.
            return self
                .storage
                .put_object(
                    ObjectKey::UpstreamTarball(&self.key),
                    rest,
                    "application/octet-stream",
                )
                .await;
        };
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        self.storage
            .s3
            .complete_multipart_upload()
            .bucket(&self.storage.settings.bucket)
            .key(self.object_key())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify(e, self.storage.bucket()))?;
        Ok(())
    }

    async fn abandon(self: Box<Self>) {
        if let Some(upload_id) = &self.upload_id
            && let Err(e) = self
                .storage
                .s3
                .abort_multipart_upload()
                .bucket(&self.storage.settings.bucket)
                .key(self.object_key())
                .upload_id(upload_id)
                .send()
                .await
        {
            // The bucket's lifecycle rule removes incomplete uploads after a day.
            tracing::warn!(key = %self.key.as_str(), error = %classify(e, self.storage.bucket()), "could not abort a multipart upload");
        }
    }
}

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

    async fn tarball_sink(
        &self,
        key: &TarballKey,
    ) -> Result<Box<dyn TarballSink + '_>, StoreError> {
        Ok(Box::new(MultipartSink {
            storage: self,
            key: key.clone(),
            buffer: BytesMut::new(),
            upload_id: None,
            parts: Vec::new(),
        }))
    }
}
