//! Snapshots: the package document in S3 (`ObjectKey::Snapshot`), written by the first read
//! after a change, so a packument read is a `GetItem` plus a `GetObject` whatever the version
//! count. A snapshot is used only if its revision is at least the record's; a stale, missing or
//! unreadable one is rebuilt with a `Query` of the package's partition.
//!
//! An instance keeps the bytes of the snapshots it read (`KeptSnapshots`), so that its second
//! rendering of a revision (the other view) decodes them again instead of a second `GetObject`
//! (`docs/scaling.md`, part 2): one GET per revision per instance.

use std::sync::{Mutex, PoisonError};

use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use lru::LruCache;

use super::AwsStorage;
use super::codec::{Item, decode_package, decode_version, s_attr};
use super::errors::{classify, internal};
use super::layout::{ObjectKey, PackageSortKey, Partition, attr};
use crate::domain::{PackageDocument, PackageName, PackageRecord, VersionState};
use crate::storage::{PackageWrite, StoreError, VersionChange};

/// Bytes of snapshots an instance keeps, in all: a 3,000-version package's full snapshot is a
/// few MB, and the functions have 256 MB.
pub(super) const KEPT_SNAPSHOT_BYTES: usize = 16 << 20;

/// The latest snapshots this instance read or stored, as bytes with the revision they show,
/// least recently used out first within `KEPT_SNAPSHOT_BYTES`.
pub(super) struct KeptSnapshots {
    entries: Mutex<Kept>,
    budget: usize,
}

/// The kept snapshots by package, with their revisions, and the bytes they hold in all.
type Kept = (LruCache<PackageName, (u64, Bytes)>, usize);

impl KeptSnapshots {
    /// Keeps at most `budget` bytes.
    pub(super) fn new(budget: usize) -> Self {
        KeptSnapshots {
            entries: Mutex::new((LruCache::unbounded(), 0)),
            budget,
        }
    }

    /// The kept snapshot of `package`, if it shows the record's revision or a later one.
    fn current(&self, package: &PackageRecord) -> Option<Bytes> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.0.get(&package.name) {
            Some((revision, bytes)) if *revision >= package.revision => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Keeps `bytes` as the snapshot of `name` at `revision`, unless a later one is kept.
    fn keep(&self, name: &PackageName, revision: u64, bytes: Bytes) {
        if bytes.len() > self.budget {
            return;
        }
        let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (entries, used) = &mut *guard;
        if entries.peek(name).is_some_and(|(kept, _)| *kept > revision) {
            return;
        }
        if let Some((_, old)) = entries.pop(name) {
            *used -= old.len();
        }
        while *used + bytes.len() > self.budget {
            let Some((_, (_, old))) = entries.pop_lru() else {
                break;
            };
            *used -= old.len();
        }
        *used += bytes.len();
        entries.put(name.clone(), (revision, bytes));
    }
}

/// A snapshot's bytes decoded; one that cannot be (a layout of an older release) counts as
/// missing and is rebuilt.
fn decode(bytes: &[u8]) -> Option<PackageDocument> {
    serde_json::from_slice(bytes).ok()
}

impl AwsStorage {
    /// The package's snapshot, whatever its revision.
    pub(super) async fn snapshot(
        &self,
        name: &PackageName,
    ) -> Result<Option<PackageDocument>, StoreError> {
        Ok(self.snapshot_read(name).await?.map(|(doc, _)| doc))
    }

    /// The package's snapshot, whatever its revision, with its bytes.
    pub(super) async fn snapshot_read(
        &self,
        name: &PackageName,
    ) -> Result<Option<(PackageDocument, Bytes)>, StoreError> {
        Ok(self
            .get_object(ObjectKey::Snapshot(name))
            .await?
            .and_then(|bytes| decode(&bytes).map(|doc| (doc, bytes))))
    }

    /// The document of `package` from the snapshot this instance keeps, if that one is current
    /// (a later revision is as good: a reader may be served any revision at or after its
    /// record's); else read (and kept), or rebuilt.
    pub(super) async fn document_of(
        &self,
        package: &PackageRecord,
    ) -> Result<Option<PackageDocument>, StoreError> {
        if let Some(doc) = self.kept.current(package).and_then(|bytes| decode(&bytes)) {
            return Ok(Some(doc));
        }
        let snapshot = self.snapshot_read(&package.name).await?;
        self.current_document_keeping(package, snapshot).await
    }

    /// `current_document` of a snapshot read with its bytes, which are kept if it is current.
    pub(super) async fn current_document_keeping(
        &self,
        package: &PackageRecord,
        snapshot: Option<(PackageDocument, Bytes)>,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let snapshot = snapshot.map(|(doc, bytes)| {
            if doc.package.revision >= package.revision {
                self.kept.keep(&package.name, doc.package.revision, bytes);
            }
            doc
        });
        self.current_document(package, snapshot).await
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
        self.kept.keep(name, doc.package.revision, bytes.clone());
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

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn record(name: &str, revision: u64) -> PackageRecord {
        let mut record = PackageRecord::new(PackageName::parse(name).unwrap(), Utc::now());
        record.revision = revision;
        record
    }

    /// A kept snapshot serves a record at its revision or an earlier one, never a later one; an
    /// older snapshot never replaces a newer one; the bytes kept stay within the budget, least
    /// recently used out first, and one bigger than the budget is not kept.
    #[test]
    fn kept_snapshots_serve_their_revision_or_earlier_within_the_budget() {
        let kept = KeptSnapshots::new(10);
        let a = record("@acme/a", 3);
        kept.keep(&a.name, 3, Bytes::from_static(b"aaaa"));
        assert_eq!(kept.current(&a).as_deref(), Some(&b"aaaa"[..]));
        assert_eq!(
            kept.current(&record("@acme/a", 2)).as_deref(),
            Some(&b"aaaa"[..])
        );
        assert_eq!(
            kept.current(&record("@acme/a", 4)),
            None,
            "behind the record"
        );
        kept.keep(&a.name, 2, Bytes::from_static(b"old"));
        assert_eq!(
            kept.current(&a).as_deref(),
            Some(&b"aaaa"[..]),
            "not replaced"
        );

        let b = record("@acme/b", 1);
        kept.keep(&b.name, 1, Bytes::from_static(b"bbbb"));
        kept.current(&a); // a is now the most recently used
        let c = record("@acme/c", 1);
        kept.keep(&c.name, 1, Bytes::from_static(b"cccc"));
        assert_eq!(kept.current(&b), None, "b, least recently used, made room");
        assert!(kept.current(&a).is_some() && kept.current(&c).is_some());

        let d = record("@acme/d", 1);
        kept.keep(&d.name, 1, Bytes::from_static(b"more than ten"));
        assert_eq!(kept.current(&d), None);
        assert!(kept.current(&a).is_some(), "nothing made room for it");
    }
}
