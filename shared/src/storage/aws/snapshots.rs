//! Snapshots: the package document in S3 (`ObjectKey::Snapshot`), kept current by every write
//! (`advance_snapshot`), so a packument read is a `GetItem` plus a `GetObject` whatever the
//! version count. A snapshot is used only if its revision is at least the record's. One that is
//! behind (a writer died between its commit and its store) is brought up to date with the
//! versions the record lists as touched since, when it lists them all; anything else (missing,
//! unreadable, too far behind) is rebuilt with a paced `Query` of the package's partition by one
//! instance at a time, the holder of a short lease, while the others wait for its snapshot
//! (`docs/scaling.md`, parts 2 and 3).
//!
//! An instance keeps the bytes of the snapshots it read (`KeptSnapshots`), so that its second
//! rendering of a revision (the other view) decodes them again instead of a second `GetObject`
//! (`docs/scaling.md`, part 2): one GET per revision per instance.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use bytes::Bytes;
use lru::LruCache;

use super::AwsStorage;
use super::codec::{Item, decode_package, decode_version, s_attr};
use super::errors::{classify, internal};
use super::layout::{ObjectKey, PackageSortKey, Partition, attr};
use super::objects::Replacing;
use super::pace::{Pace, read_units};
use crate::domain::{PackageDocument, PackageName, PackageRecord, VersionState};
use crate::storage::{KvStore, PackageWrite, StoreError, VersionChange};

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

/// What a snapshot read shows for a package's record.
enum Found {
    /// At the record's revision or a later one: serve it (this instance keeps its bytes).
    Current(PackageDocument),
    /// Behind, unreadable or missing: `replacing` is what a write of a newer one must find in
    /// its place (what was read), `doc` the document if one was readable.
    Stale {
        doc: Option<PackageDocument>,
        replacing: Replacing,
    },
}

/// How long a reader's lease on rebuilding a package's snapshot lasts (`~lease/<name>`), and so
/// how long other readers wait for its snapshot before they try for the lease themselves: a
/// paced rebuild of a 3,000-version package takes ~4 s. The holder gives it back once the
/// snapshot is stored; one that died leaves it to expire.
const REBUILD_LEASE: Duration = Duration::from_secs(10);

/// The namespace of rebuild leases: `~lease/<name>` is a partition of its own per package, so
/// asking for a lease spends nothing of the package's partition.
const LEASE_NAMESPACE: &str = "lease";

/// The id of a package's rebuild lease within its namespace.
const LEASE_ID: &str = "snapshot";

/// The first wait of a reader waiting for another's rebuild; each next one doubles, up to
/// `LONGEST_REBUILD_WAIT`.
const FIRST_REBUILD_WAIT: Duration = Duration::from_millis(50);

/// The longest single wait between two looks at the snapshot another reader is rebuilding.
const LONGEST_REBUILD_WAIT: Duration = Duration::from_secs(1);

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

    /// The document of `package`: its snapshot if current (and then kept); else the snapshot
    /// brought up to date with the versions touched since, or rebuilt from the table; either is
    /// stored in place of the one read, unless that one was replaced since.
    pub(super) async fn current_document(
        &self,
        package: &PackageRecord,
        snapshot: Option<StoredSnapshot>,
    ) -> Result<Option<PackageDocument>, StoreError> {
        match self.found(package, snapshot) {
            Found::Current(doc) => Ok(Some(doc)),
            Found::Stale {
                doc: Some(doc),
                replacing,
            } if doc.package.created == package.created
                && package.touched.after(doc.package.revision).is_some() =>
            {
                let doc = self.caught_up(doc, package).await?;
                self.store_read(&doc, &replacing, None).await?;
                Ok(Some(doc))
            }
            Found::Stale { .. } => self.rebuild_snapshot(package).await,
        }
    }

    /// What `snapshot`, as read, shows for `package`; a current one's bytes are kept.
    fn found(&self, package: &PackageRecord, snapshot: Option<StoredSnapshot>) -> Found {
        match snapshot {
            Some(StoredSnapshot {
                doc: Some(doc),
                bytes,
                ..
            }) if doc.package.revision >= package.revision => {
                self.kept.keep(&package.name, doc.package.revision, bytes);
                Found::Current(doc)
            }
            Some(StoredSnapshot { doc, replacing, .. }) => Found::Stale { doc, replacing },
            None => Found::Stale {
                doc: None,
                replacing: Replacing::Absent,
            },
        }
    }

    /// `doc`, a snapshot behind `package`, brought up to it: the versions the writes since
    /// touched (all listed in the record) are read together and put in place.
    async fn caught_up(
        &self,
        mut doc: PackageDocument,
        package: &PackageRecord,
    ) -> Result<PackageDocument, StoreError> {
        use crate::storage::MetadataStore as _;
        let mut touched: Vec<semver::Version> = package
            .touched
            .after(doc.package.revision)
            .unwrap_or_default()
            .into_iter()
            .cloned()
            .collect();
        touched.sort();
        touched.dedup();
        let read = self.versions(&package.name, &touched).await?;
        for (version, record) in touched.iter().zip(read) {
            let at = doc.versions.iter().position(|v| v.version == *version);
            match (at, record) {
                (Some(at), Some(record)) => doc.versions[at] = record,
                (None, Some(record)) => doc.versions.push(record),
                (Some(at), None) => {
                    doc.versions.remove(at);
                }
                (None, None) => {}
            }
        }
        doc.package = package.clone();
        Ok(doc)
    }

    /// Every item of a package, with a strongly consistent `Query`, page by page, paced to
    /// `REGISTRY_REBUILD_READ_UNITS` a second (`pace`): the package's other reads share its
    /// partition.
    async fn query_package(&self, name: &PackageName) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        let mut pace = Pace::new(self.settings.rebuild_read_units);
        let started = Instant::now();
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
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(e, self.table()))?;
            let page = out.items.unwrap_or_default();
            let reported = out
                .consumed_capacity
                .and_then(|c| c.capacity_units)
                .unwrap_or(0.0);
            let units = reported.max(f64::from(read_units(&page)));
            items.extend(page);
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => {
                    start = Some(k);
                    let wait = pace.after_page(units, started.elapsed());
                    if !wait.is_zero() {
                        tracing::debug!(package = %name, wait_ms = wait.as_millis(), "pacing a rebuild");
                        tokio::time::sleep(wait).await;
                    }
                }
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

    /// Stores `doc`, made by this reader, as its package's snapshot in place of `replacing`
    /// (after the response, where the instance defers such work), then gives back `lease`, if
    /// the reader holds one: if another write replaced that snapshot since, the newer one
    /// stays, so a snapshot never moves back to an older revision.
    async fn store_read(
        &self,
        doc: &PackageDocument,
        replacing: &Replacing,
        lease: Option<String>,
    ) -> Result<(), StoreError> {
        let (bytes, put) = self.store_snapshot(doc, replacing)?;
        self.kept
            .keep(&doc.package.name, doc.package.revision, bytes);
        let key = ObjectKey::Snapshot(&doc.package.name).to_string();
        let this = self.clone();
        let stored = async move {
            let stored = put.await;
            if let Some(lease) = lease {
                this.give_back(&lease).await;
            }
            if !stored? {
                tracing::debug!(
                    key,
                    "a snapshot a reader made was not stored: another write replaced the one read"
                );
            }
            Ok::<_, StoreError>(())
        };
        match &self.after_response {
            None => stored.await?,
            // A lost snapshot costs a later read a rebuild, nothing more.
            Some(queue) => queue.defer(Box::pin(async move {
                if let Err(e) = stored.await {
                    tracing::warn!(error = %e, "could not store a snapshot a reader made");
                }
            })),
        }
        Ok(())
    }

    /// Gives back a rebuild lease, so that a rebuild needed again soon (another writer died)
    /// does not wait for it to expire; one not given back expires anyway.
    async fn give_back(&self, lease: &str) {
        if let Err(e) = self.delete(lease, LEASE_ID).await {
            tracing::warn!(lease, error = %e, "could not give back a rebuild lease");
        }
    }

    /// Takes `package`'s rebuild lease (`~lease/<name>`), or waits for the snapshot of the
    /// reader that holds it. `Ok(Ok(lease))`: this reader rebuilds, holding `lease` if it got
    /// one; `Ok(Err(doc))`: another reader's snapshot, current. A reader that finds the lease
    /// taken looks at the snapshot with growing pauses, and tries for the lease again once it
    /// could have expired (its holder may have died); if that fails too, or the lease cannot
    /// be asked for, it rebuilds without one.
    async fn rebuild_turn(
        &self,
        package: &PackageRecord,
    ) -> Result<Result<Option<String>, PackageDocument>, StoreError> {
        let name = &package.name;
        let lease = format!("{LEASE_NAMESPACE}/{name}");
        let mut wait = FIRST_REBUILD_WAIT;
        for attempt in 0..2 {
            let expires =
                chrono::Utc::now() + chrono::Duration::from_std(REBUILD_LEASE).map_err(internal)?;
            match self.put_new(&lease, LEASE_ID, b"", Some(expires)).await {
                Ok(true) => return Ok(Ok(Some(lease))),
                Ok(false) if attempt == 0 => {}
                Ok(false) => {
                    tracing::warn!(package = %name, "the rebuild lease was taken again: rebuilding without it");
                    return Ok(Ok(None));
                }
                Err(e) => {
                    tracing::warn!(package = %name, error = %e, "could not ask for the rebuild lease: rebuilding without it");
                    return Ok(Ok(None));
                }
            }
            let until = Instant::now() + REBUILD_LEASE;
            while Instant::now() < until {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST_REBUILD_WAIT);
                if let Some(doc) = self.current_snapshot(package).await? {
                    return Ok(Err(doc));
                }
            }
        }
        Ok(Ok(None))
    }

    /// The package's snapshot if it shows `package`'s revision or a later one (and then kept).
    async fn current_snapshot(
        &self,
        package: &PackageRecord,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let snapshot = self.snapshot_read(&package.name).await?;
        Ok(match self.found(package, snapshot) {
            Found::Current(doc) => Some(doc),
            Found::Stale { .. } => None,
        })
    }

    /// Rebuilds `package`'s document from the table (a paced `Query`) and stores it as its
    /// snapshot, in place of the one read then, unless another write replaced it since. One
    /// reader at a time does so, the holder of the package's rebuild lease (`rebuild_turn`);
    /// the others wait for its snapshot. So a snapshot every instance finds unusable at once
    /// costs the partition one `Query`, not one per instance.
    async fn rebuild_snapshot(
        &self,
        package: &PackageRecord,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let lease = match self.rebuild_turn(package).await? {
            Ok(lease) => lease,
            Err(doc) => return Ok(Some(doc)),
        };
        // Read again under the lease: the last holder may have stored it (and given the lease
        // back) since this reader looked. `Some(replacing)`: rebuilt, to be stored.
        let rebuilt = async {
            match self.found(package, self.snapshot_read(&package.name).await?) {
                Found::Current(doc) => Ok((Some(doc), None)),
                Found::Stale { replacing, .. } => Ok((
                    self.document_from_table(&package.name).await?,
                    Some(replacing),
                )),
            }
        }
        .await;
        match rebuilt {
            // The lease is given back once the snapshot is stored.
            Ok((Some(doc), Some(replacing))) => {
                self.store_read(&doc, &replacing, lease).await?;
                Ok(Some(doc))
            }
            other => {
                if let Some(lease) = &lease {
                    self.give_back(lease).await;
                }
                other.map(|(doc, _)| doc)
            }
        }
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
            let replacing = stored
                .as_ref()
                .map_or(Replacing::Absent, |s| s.replacing.clone());
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
