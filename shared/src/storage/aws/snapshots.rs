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
use super::objects::Replacing;
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

/// A package's snapshot as read from the bucket.
pub(super) struct StoredSnapshot {
    /// The document; `None` if no release can read it (a layout of an older one): it counts as
    /// missing and is rebuilt.
    doc: Option<PackageDocument>,
    bytes: Bytes,
    /// What a write replacing it must find (the ETag it was read with).
    replacing: Replacing,
}

/// What a write of the snapshot of a package must find in its place: what was read.
fn replacing(stored: Option<&StoredSnapshot>) -> Replacing {
    stored.map_or(Replacing::Absent, |s| s.replacing.clone())
}

/// Times a writer reads the snapshot again when another write replaced it between its read and
/// its conditional `PutObject` (racing writers, or a reader's rebuild).
const ADVANCE_ATTEMPTS: usize = 3;

impl AwsStorage {
    /// The package's snapshot, whatever its revision; `None` if there is none.
    pub(super) async fn snapshot_read(
        &self,
        name: &PackageName,
    ) -> Result<Option<StoredSnapshot>, StoreError> {
        let Some((bytes, etag)) = self.get_object_tagged(ObjectKey::Snapshot(name)).await? else {
            return Ok(None);
        };
        Ok(Some(StoredSnapshot {
            doc: decode(&bytes),
            bytes,
            // Without an ETag (S3 always sends one) nothing can be replaced conditionally: a
            // replacement then requires the key to be empty, and fails.
            replacing: etag.map_or(Replacing::Absent, Replacing::Etag),
        }))
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
        self.current_document(package, snapshot).await
    }

    /// The document of `package`: its snapshot if current (and then kept), else rebuilt and
    /// stored in place of the one read, unless that one was replaced since.
    pub(super) async fn current_document(
        &self,
        package: &PackageRecord,
        snapshot: Option<StoredSnapshot>,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let replacing = replacing(snapshot.as_ref());
        match snapshot {
            Some(StoredSnapshot {
                doc: Some(doc),
                bytes,
                ..
            }) if doc.package.revision >= package.revision => {
                self.kept.keep(&package.name, doc.package.revision, bytes);
                Ok(Some(doc))
            }
            _ => self.rebuild_snapshot(&package.name, replacing).await,
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

    /// The package's document built from the table (a strongly consistent `Query`).
    async fn document_from_table(
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
        Ok(package.map(|package| PackageDocument { package, versions }))
    }

    /// `doc` encoded as its package's snapshot, and the conditional `PutObject` that stores it
    /// in place of `replacing` (`true` if stored).
    fn store_snapshot(
        &self,
        doc: &PackageDocument,
        replacing: &Replacing,
    ) -> Result<
        (
            Bytes,
            impl Future<Output = Result<bool, StoreError>> + Send + 'static,
        ),
        StoreError,
    > {
        let bytes = Bytes::from(serde_json::to_vec(doc).map_err(internal)?);
        let put = self.put_object_if(
            ObjectKey::Snapshot(&doc.package.name),
            bytes.clone(),
            "application/json",
            replacing,
        );
        Ok((bytes, put))
    }

    /// Rebuilds the document from the table and stores it as the package's snapshot in place of
    /// the one read (`replacing`): if another write replaced that one since, the newer snapshot
    /// stays, so a snapshot never moves back to an older revision.
    async fn rebuild_snapshot(
        &self,
        name: &PackageName,
        replacing: Replacing,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let Some(doc) = self.document_from_table(name).await? else {
            return Ok(None);
        };
        let (bytes, put) = self.store_snapshot(&doc, &replacing)?;
        self.kept.keep(name, doc.package.revision, bytes);
        let key = ObjectKey::Snapshot(name).to_string();
        let stored = async move {
            match put.await {
                Ok(true) => Ok(()),
                Ok(false) => {
                    tracing::debug!(
                        key,
                        "a rebuilt snapshot was not stored: another write replaced the one read"
                    );
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        match &self.after_response {
            None => stored.await?,
            // A lost snapshot costs a later read a rebuild, nothing more.
            Some(queue) => queue.defer(Box::pin(async move {
                if let Err(e) = stored.await {
                    tracing::warn!(error = %e, "could not store a rebuilt snapshot");
                }
            })),
        }
        Ok(Some(doc))
    }

    /// After `write` committed: leaves the package's snapshot at the revision it wrote (or a
    /// later one) before the write answers, so the next reader on any instance finds it current
    /// instead of querying every version. A snapshot at the revision the write read is advanced
    /// by applying the write (one `GetObject` and one `PutObject`); a new package's is the write
    /// itself; any other (missing, unreadable, behind a racing write, or a write split over
    /// transactions) is rebuilt from the table. Each store is conditional on the snapshot read,
    /// and read again if another write replaced it. Failures are only logged: the write itself
    /// has landed, and a reader rebuilds what is missing.
    pub(super) async fn advance_snapshot(&self, write: &PackageWrite, one_transaction: bool) {
        let name = &write.package.name;
        let wrote = write.package.revision;
        for attempt in 0..ADVANCE_ATTEMPTS {
            // A new package has no snapshot to read (one that exists fails the store, and the
            // next attempt reads it).
            let stored = if attempt == 0 && write.expected_revision.is_none() {
                None
            } else {
                match self.snapshot_read(name).await {
                    Ok(stored) => stored,
                    Err(e) => {
                        tracing::warn!(package = %name, error = %e, "could not read the snapshot to advance");
                        return;
                    }
                }
            };
            let at = stored
                .as_ref()
                .and_then(|s| s.doc.as_ref())
                .map(|d| d.package.revision);
            if at.is_some_and(|at| at >= wrote) {
                return;
            }
            let replacing = replacing(stored.as_ref());
            let base = match (stored.and_then(|s| s.doc), write.expected_revision) {
                (Some(doc), Some(expected)) if doc.package.revision == expected => Some(doc),
                (None, None) => Some(PackageDocument {
                    package: write.package.clone(),
                    versions: Vec::new(),
                }),
                _ => None,
            };
            let advanced = base
                .filter(|_| one_transaction)
                .and_then(|mut doc| applied(&mut doc, write).then_some(doc));
            let doc = match advanced {
                Some(doc) => doc,
                None => match self.document_from_table(name).await {
                    Ok(Some(doc)) => doc,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(package = %name, error = %e, "could not rebuild the snapshot to advance");
                        return;
                    }
                },
            };
            let (bytes, put) = match self.store_snapshot(&doc, &replacing) {
                Ok(store) => store,
                Err(e) => {
                    tracing::warn!(package = %name, error = %e, "could not encode the snapshot");
                    return;
                }
            };
            match put.await {
                Ok(true) => {
                    self.kept.keep(name, doc.package.revision, bytes);
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(package = %name, error = %e, "could not advance the snapshot");
                    return;
                }
            }
        }
        tracing::warn!(package = %name, "the snapshot kept changing under the write: left to a reader's rebuild");
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
