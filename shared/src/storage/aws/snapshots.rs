//! Snapshots: the package document in S3 (`ObjectKey::Snapshot`), written by the first read
//! after a change, so a packument read is a `GetItem` plus a `GetObject` whatever the version
//! count. A snapshot is used only if its revision is at least the record's; a stale, missing or
//! unreadable one is rebuilt with a `Query` of the package's partition.

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;

use super::AwsStorage;
use super::codec::{Item, decode_package, decode_version, s_attr};
use super::errors::{classify, internal};
use super::layout::{ObjectKey, PackageSortKey, Partition, attr};
use crate::domain::{PackageDocument, PackageName, PackageRecord, VersionState};
use crate::storage::{PackageWrite, StoreError, VersionChange};

impl AwsStorage {
    /// The package's snapshot, whatever its revision; one that cannot be read (a layout of an
    /// older release) counts as missing and is rebuilt.
    pub(super) async fn snapshot(
        &self,
        name: &PackageName,
    ) -> Result<Option<PackageDocument>, StoreError> {
        Ok(self
            .get_object(ObjectKey::Snapshot(name))
            .await?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// The document of `package`: its snapshot if current, else rebuilt.
    pub(super) async fn current_document(
        &self,
        package: &PackageRecord,
        snapshot: Option<PackageDocument>,
    ) -> Result<Option<PackageDocument>, StoreError> {
        match snapshot {
            Some(doc) if doc.package.revision >= package.revision => Ok(Some(doc)),
            _ => self.rebuild_snapshot(&package.name).await,
        }
    }

    /// Every item of a package, with a consistent `Query` (paginated).
    async fn query_package(&self, name: &PackageName) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .ddb
                .query()
                .table_name(&self.settings.table)
                .key_condition_expression(format!("{} = :pk", attr::PK))
                .expression_attribute_values(
                    ":pk",
                    AttributeValue::S(Partition::Package(name).pk()),
                )
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(e, self.table()))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    /// Rebuilds the document from the table and stores it as the package's snapshot.
    async fn rebuild_snapshot(
        &self,
        name: &PackageName,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let mut package = None;
        let mut versions = Vec::new();
        for item in self.query_package(name).await? {
            let Some(sk) = s_attr(&item, attr::SK) else {
                continue;
            };
            match PackageSortKey::parse(sk).map_err(internal)? {
                Some(PackageSortKey::Record) => package = Some(decode_package(&item)?),
                Some(PackageSortKey::Version(_)) => versions.push(decode_version(&item)?),
                None => {}
            }
        }
        let Some(package) = package else {
            return Ok(None);
        };
        let doc = PackageDocument { package, versions };
        let bytes = Bytes::from(serde_json::to_vec(&doc).map_err(internal)?);
        let key = ObjectKey::Snapshot(name).to_string();
        let put = self.put_object(ObjectKey::Snapshot(name), bytes, "application/json");
        match &self.after_response {
            None => put.await?,
            // A lost snapshot costs a later read a rebuild, nothing more.
            Some(queue) => queue.defer(Box::pin(async move {
                if let Err(e) = put.await {
                    tracing::warn!(key, error = %e, "could not store a rebuilt snapshot");
                }
            })),
        }
        Ok(Some(doc))
    }

    /// After `write` committed (as one transaction): moves the package's snapshot from the
    /// revision the write read to the one it wrote by applying the write, so the next reader on
    /// any instance finds it current instead of querying every version. Nothing is done (and a
    /// later reader rebuilds) when the snapshot is not at the revision read: a racing writer or a
    /// rebuild got there first. Failures are only logged: the write itself has landed.
    pub(super) async fn advance_snapshot(&self, write: &PackageWrite) {
        let Some(expected) = write.expected_revision else {
            // A new package: its first reader's rebuild is one small page.
            return;
        };
        let name = &write.package.name;
        let mut doc = match self.snapshot(name).await {
            Ok(Some(doc)) if doc.package.revision == expected => doc,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(package = %name, error = %e, "could not read the snapshot to advance");
                return;
            }
        };
        if !applied(&mut doc, write) {
            return;
        }
        let advanced = match serde_json::to_vec(&doc) {
            Ok(bytes) => {
                self.put_object(
                    ObjectKey::Snapshot(name),
                    Bytes::from(bytes),
                    "application/json",
                )
                .await
            }
            Err(e) => Err(internal(e)),
        };
        if let Err(e) = advanced {
            tracing::warn!(package = %name, error = %e, "could not advance the snapshot");
        }
    }
}

/// Applies `write` to `doc` as the table applied it (see the embedded writer's `apply_package`);
/// `false` if the document does not hold what the write changed.
fn applied(doc: &mut PackageDocument, write: &PackageWrite) -> bool {
    if let Some((record, _)) = &write.create {
        match doc
            .versions
            .iter_mut()
            .find(|v| v.version == record.version)
        {
            Some(existing) => *existing = record.clone(),
            None => doc.versions.push(record.clone()),
        }
    }
    for change in &write.changes {
        let version = change.version();
        let Some(record) = doc.versions.iter_mut().find(|v| v.version == *version) else {
            return false;
        };
        match (change, &mut record.state) {
            (VersionChange::Deprecate(_, message), VersionState::Live(live)) => {
                live.deprecated.clone_from(message);
            }
            (VersionChange::Unpublish(_, at), VersionState::Live(_)) => {
                record.state = VersionState::Unpublished { at: *at };
            }
            (VersionChange::Sign(_, signatures), VersionState::Live(live)) => {
                live.dist.signatures.clone_from(signatures);
            }
            (_, VersionState::Unpublished { .. }) => return false,
        }
    }
    doc.package = write.package.clone();
    true
}
