//! Bulk import: a whole package in `BatchWriteItem`s, for migrations and benchmark corpora.

use std::time::Duration;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use super::AwsStorage;
use super::codec::encode_version;
use super::errors::{classify, internal};
use super::plan::{Condition, Op};
use super::transact::TransactFailure;
use crate::domain::PackageDocument;
use crate::storage::StoreError;

/// `BatchWriteItem` takes at most 25 items.
const ITEMS_PER_BATCH: usize = 25;
/// Rounds of retrying unprocessed items before giving up.
const BATCH_ATTEMPTS: u64 = 10;

impl AwsStorage {
    /// Bulk-loads a whole package (a migration from another registry, a benchmark corpus) without
    /// one transaction per version: version items in `BatchWriteItem`s first, the package record
    /// last and only if the package does not exist yet, so nothing is visible until all is stored.
    /// Tarballs must already be in the bucket.
    pub async fn import(&self, doc: &PackageDocument) -> Result<(), StoreError> {
        let name = &doc.package.name;
        let mut requests = Vec::with_capacity(doc.versions.len());
        for record in &doc.versions {
            let put = PutRequest::builder()
                .set_item(Some(encode_version(name, record)?))
                .build()
                .map_err(internal)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for chunk in requests.chunks(ITEMS_PER_BATCH) {
            let mut pending = chunk.to_vec();
            for attempt in 0..BATCH_ATTEMPTS {
                let out = self
                    .ddb
                    .batch_write_item()
                    .request_items(&self.settings.table, pending)
                    .send()
                    .await
                    .map_err(|e| classify(e, self.table()))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.settings.table))
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                // Backoff for throttled items, as DynamoDB asks of a batch writer.
                tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await;
            }
            if !pending.is_empty() {
                return Err(StoreError::Unavailable(
                    "DynamoDB kept throttling the import".into(),
                ));
            }
        }
        let put = Op::PutPackage {
            record: Box::new(doc.package.clone()),
            condition: Condition::Absent,
        };
        let item = self.transact_item(name, &put, None)?;
        match self.transact(vec![item]).await {
            Ok(()) => Ok(()),
            Err(TransactFailure::Store(e)) => Err(e),
            Err(TransactFailure::Cancelled(_)) => Err(StoreError::RevisionConflict),
        }
    }
}
