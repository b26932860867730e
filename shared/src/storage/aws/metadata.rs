//! The metadata store: package records and versions in the table, documents through snapshots,
//! and every write as the transactions `plan` makes of it.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use bytes::Bytes;
use semver::Version;

use super::AwsStorage;
use super::codec::{decode_package, decode_version, encode_version, s_attr};
use super::errors::{classify, internal};
use super::layout::{ItemKey, ObjectKey, attr};
use super::plan::{Failure, plan};
use super::transact::TransactFailure;
use crate::domain::{PackageDocument, PackageName, PackageRecord, VersionRecord, VersionState};
use crate::storage::{Consistency, CreateMode, MetadataStore, PackageWrite, StoreError};

/// Keys one `BatchGetItem` may ask for.
const BATCH_GET_KEYS: usize = 100;

/// `BatchGetItem`s made for one chunk of keys, backing off between them, before the read fails
/// as unavailable.
const BATCH_GET_ATTEMPTS: u32 = 8;

#[async_trait]
impl MetadataStore for AwsStorage {
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
        self.package_with(name, Consistency::Strong).await
    }

    async fn package_with(
        &self,
        name: &PackageName,
        consistency: Consistency,
    ) -> Result<Option<PackageRecord>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.settings.table)
            .set_key(Some(ItemKey::Package(name).attributes()))
            .consistent_read(consistency == Consistency::Strong)
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        out.item.as_ref().map(decode_package).transpose()
    }

    async fn document(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError> {
        // The record and the snapshot side by side, as for a cold packument read.
        Ok(self
            .package_and_document(name)
            .await?
            .and_then(|(_, document)| document))
    }

    async fn package_and_document(
        &self,
        name: &PackageName,
    ) -> Result<Option<(PackageRecord, Option<PackageDocument>)>, StoreError> {
        let (package, snapshot) = tokio::join!(self.package(name), self.snapshot_read(name));
        let Some(package) = package? else {
            return Ok(None);
        };
        let doc = self.current_document(&package, snapshot?).await?;
        // `None`: the package went away between the two reads.
        Ok(doc.map(|doc| (package, Some(doc))))
    }

    async fn document_from(
        &self,
        package: &PackageRecord,
    ) -> Result<Option<PackageDocument>, StoreError> {
        self.document_of(package).await
    }

    async fn version(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        self.version_with(name, version, Consistency::Strong).await
    }

    async fn version_with(
        &self,
        name: &PackageName,
        version: &Version,
        consistency: Consistency,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.settings.table)
            .set_key(Some(ItemKey::Version(name, version).attributes()))
            .consistent_read(consistency == Consistency::Strong)
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        out.item.as_ref().map(decode_version).transpose()
    }

    async fn versions(
        &self,
        name: &PackageName,
        versions: &[Version],
    ) -> Result<Vec<Option<VersionRecord>>, StoreError> {
        // A patch reads every version the writes since touched: together, not one round trip
        // each (a `GetItem` per version made a render ten writes behind ten round trips).
        if let [version] = versions {
            return Ok(vec![self.version(name, version).await?]);
        }
        let mut found = HashMap::with_capacity(versions.len());
        for chunk in versions.chunks(BATCH_GET_KEYS) {
            let mut keys: Vec<_> = chunk
                .iter()
                .map(|v| ItemKey::Version(name, v).attributes())
                .collect();
            for attempt in 0..BATCH_GET_ATTEMPTS {
                let wanted = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(internal)?;
                let out = self
                    .ddb
                    .batch_get_item()
                    .request_items(&self.settings.table, wanted)
                    .send()
                    .await
                    .map_err(|e| classify(e, self.table()))?;
                let table = &self.settings.table;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(table))
                    .unwrap_or_default()
                {
                    let record = decode_version(&item)?;
                    found.insert(record.version.clone(), record);
                }
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if keys.is_empty() {
                    break;
                }
                // Unprocessed keys (throughput, or the 16 MB answer limit): AWS advises backing
                // off before asking again; the SDK retries only whole failures.
                tokio::time::sleep(Duration::from_millis(25 << attempt.min(5))).await;
            }
            if !keys.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "DynamoDB left {} version items of {name} unread after \
                     {BATCH_GET_ATTEMPTS} attempts",
                    keys.len()
                )));
            }
        }
        Ok(versions.iter().map(|v| found.remove(v)).collect())
    }

    async fn search_entries(&self) -> Result<crate::storage::SearchLoad, StoreError> {
        self.load_search().await
    }

    async fn search_changes(
        &self,
        watermark: Option<&str>,
    ) -> Result<(Vec<crate::storage::SearchChange>, Option<String>), StoreError> {
        self.search_log(watermark).await
    }

    async fn readme(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<String>, StoreError> {
        if let Some(bytes) = self.get_object(ObjectKey::Readme(name, version)).await? {
            return Ok(Some(String::from_utf8_lossy(&bytes).into_owned()));
        }
        // Items written by an older release may hold a small README inline.
        let out = self
            .ddb
            .get_item()
            .table_name(&self.settings.table)
            .set_key(Some(ItemKey::Version(name, version).attributes()))
            .projection_expression(attr::README)
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|item| s_attr(item, attr::README))
            .map(str::to_string))
    }

    async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
        // Tarballs go to S3 before the write (`TarballStore::put`); this store stages none.
        if write.tarball.is_some() {
            return Err(StoreError::Internal(
                "a staged tarball reached the AWS metadata store".into(),
            ));
        }
        let name = &write.package.name;
        let mut version_item = None;
        let mut stale_readme = None;
        let transactions = plan(&write);
        let one_transaction = transactions.len() == 1;
        if let Some((record, mode)) = &write.create {
            match &write.readme {
                // Stored before the item that shows it, like tarballs: a README without its
                // version (a failed commit) is never read.
                Some(readme) => {
                    self.put_object(
                        ObjectKey::Readme(name, &record.version),
                        Bytes::from(readme.clone()),
                        "text/markdown",
                    )
                    .await?;
                }
                None if *mode == CreateMode::AllowOverwrite => stale_readme = Some(&record.version),
                None => {}
            }
            version_item = Some(encode_version(name, record)?);
        }
        let count = transactions.len();
        for (i, transaction) in transactions.into_iter().enumerate() {
            let mut items: Vec<_> = transaction
                .ops
                .iter()
                .map(|op| self.transact_item(name, op, version_item.as_ref()))
                .collect::<Result<_, _>>()?;
            if i + 1 == count {
                // After the package record: the plan's cancellation reasons index its own ops.
                items.extend(self.search_items(&write.search)?);
            }
            let reasons = match self.transact(items).await {
                Ok(()) => continue,
                Err(TransactFailure::Store(e)) => return Err(e),
                Err(TransactFailure::Cancelled(reasons)) => reasons,
            };
            return Err(match transaction.failure(&reasons) {
                Failure::RevisionConflict => StoreError::RevisionConflict,
                // Live or a tombstone: only a read tells.
                Failure::VersionTaken(version) => match self.version(name, version).await? {
                    Some(VersionRecord {
                        state: VersionState::Unpublished { .. },
                        ..
                    }) => StoreError::VersionRetired,
                    _ => StoreError::VersionExists,
                },
                Failure::NoSuchVersion(version) => StoreError::NoSuchVersion(version.clone()),
            });
        }
        if let Some(version) = stale_readme {
            // The version was overwritten by one without a README: the old one must not show.
            self.delete_object(ObjectKey::Readme(name, version)).await?;
        }
        // Before answering, so that once a publish returns every instance's next read finds the
        // new version in the snapshot.
        self.advance_snapshot(&write, one_transaction).await;
        Ok(())
    }
}
