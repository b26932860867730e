//! Storage traits, shaped by what DynamoDB and S3 do well, and their backends.
//!
//! Semantics every backend must honour (the embedded one is no more forgiving than DynamoDB):
//! - a version is created by a conditional create: of two racing creates exactly one wins;
//! - package-level state is one small record, written only if its revision is still the one read;
//! - a write is all-or-nothing: the version, the version changes and the package record land together;
//! - tarballs are put before the metadata that references them.

pub mod audit_file;
pub mod aws;
pub mod embedded;
pub mod views;

use std::pin::Pin;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use futures_util::future::BoxFuture;
use semver::Version;

use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::{PackageDocument, PackageName, PackageRecord, TarballKey, VersionRecord};

/// Storage failures, as the HTTP layer needs to tell them apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The package record changed since it was read; re-read and retry.
    #[error("the package changed while this request was being handled")]
    RevisionConflict,
    /// The version being created already exists.
    #[error("version already exists")]
    VersionExists,
    /// The version being created was unpublished; its number is retired.
    #[error("version was unpublished and cannot be published again")]
    VersionRetired,
    /// A version named in a change does not exist (or is not live).
    #[error("version {0} does not exist")]
    NoSuchVersion(Version),
    /// The backend cannot be reached or is overloaded; the client should retry.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// The disk holding the data (named here: the embedded backend's data directory) has no
    /// space left, or its quota is used up; writes fail until space is freed, reads still work.
    #[error("no space left in {0}")]
    InsufficientStorage(String),
    /// A table or bucket the backend needs does not exist (never created, misnamed, deleted).
    /// Told apart from `Unavailable`: retrying does not help until an operator creates it.
    #[error("{0} does not exist")]
    MissingResource(String),
    /// A conditional create found a live entry under its key (`KvStore::put_new` answers it
    /// as `false`; it reaches no client).
    #[error("an entry with this key already exists")]
    EntryExists,
    /// Anything else (corrupt data, I/O errors).
    #[error("storage error: {0}")]
    Internal(String),
}

/// Whether the storage can take writes, for the readiness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageState {
    /// Reads and writes work.
    Ok,
    /// The disk is full: writes are refused until space is freed; reads work.
    Full,
    /// The store failed and has not recovered (for example, the database could not be reopened).
    Failed,
}

/// The storage's state and, unless it is ok, since when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageHealth {
    /// The state.
    pub state: StorageState,
    /// When the state began (unset while ok).
    pub since: Option<DateTime<Utc>>,
    /// What failed, for the operator (unset while ok).
    pub detail: Option<String>,
    /// Where the data lives (the embedded backend's data directory), if the backend has a place.
    pub location: Option<String>,
}

impl StorageHealth {
    /// All is well.
    pub(crate) fn ok() -> Self {
        StorageHealth {
            state: StorageState::Ok,
            since: None,
            detail: None,
            location: None,
        }
    }
}

/// How recent a read must be. A backend with one kind of read (the embedded one) serves both
/// the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write that completed before the read began.
    Strong,
    /// May miss writes of the last moments (DynamoDB: an eventually consistent read, half the
    /// price); never shows an uncommitted one.
    Eventual,
}

/// A change to one existing version record.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionChange {
    /// Set (`Some`) or clear (`None`) the deprecation message of a live version.
    Deprecate(Version, Option<String>),
    /// Turn a live version into a tombstone.
    Unpublish(Version, DateTime<Utc>),
    /// Replace a live version's registry signatures (`registry-server keys backfill`).
    Sign(Version, Vec<crate::domain::signing::DistSignature>),
}

impl VersionChange {
    /// The version changed.
    pub fn version(&self) -> &Version {
        match self {
            VersionChange::Deprecate(v, _)
            | VersionChange::Unpublish(v, _)
            | VersionChange::Sign(v, _) => v,
        }
    }
}

/// How a new version record may meet an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    /// Fail with `VersionExists` if present (the default, and the only mode npm users expect).
    CreateOnly,
    /// Replace a live version (an opt-in operator setting). A tombstone still wins.
    AllowOverwrite,
}

/// One atomic write to a package.
#[derive(Debug, Clone)]
pub struct PackageWrite {
    /// The package record to store; its revision must be `expected_revision + 1` (or 1 when new).
    pub package: PackageRecord,
    /// The revision the writer read; `None` means the package record must not exist yet.
    pub expected_revision: Option<u64>,
    /// A version to create.
    pub create: Option<(VersionRecord, CreateMode)>,
    /// The README of the version created (stored apart from its record; ignored without
    /// `create`). Overwriting a version replaces its README, `None` included.
    pub readme: Option<String>,
    /// Changes to existing versions.
    pub changes: Vec<VersionChange>,
    /// What this write makes of the package's search entry, stored with it (so an index built
    /// from the store is never behind a package, nor ahead of one).
    pub search: SearchChange,
    /// A tarball `TarballStore::stage` handed back, stored in this write's transaction: only
    /// if the write is, and never the version without it.
    pub tarball: Option<StagedTarball>,
}

/// A small tarball to be stored with the write of the version that refers to it (see
/// `TarballStore::stage`).
#[derive(Debug, Clone)]
pub struct StagedTarball {
    /// Where it is stored.
    pub key: TarballKey,
    /// Its bytes.
    pub bytes: Bytes,
}

/// A package's search entry after a write.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum SearchChange {
    /// Leave the stored entry as it is (writes made without the write path: tests, imports).
    Keep,
    /// The package's entry is now this one.
    Put(Box<crate::search::SearchEntry>),
    /// The package has no entry (unpublished, or no live `latest`).
    Remove {
        /// The package.
        name: PackageName,
        /// The package revision that removed it (older changes arriving later lose to it).
        revision: u64,
    },
}

/// What the store holds for building a search index: every entry, and where the log of later
/// changes (`MetadataStore::search_changes`) should be read from.
#[derive(Debug, Default)]
pub struct SearchLoad {
    /// Every package's entry.
    pub entries: Vec<crate::search::SearchEntry>,
    /// Where the change log stood when the entries were read (`None`: the store keeps none).
    pub watermark: Option<String>,
}

/// Package metadata: a small record per package and one record per version.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// The package record alone (cheap: one item).
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError>;
    /// The package record, read as recent as `consistency` asks (`package` reads strongly).
    async fn package_with(
        &self,
        name: &PackageName,
        _consistency: Consistency,
    ) -> Result<Option<PackageRecord>, StoreError> {
        self.package(name).await
    }
    /// The package record and all its version records.
    async fn document(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError>;
    /// The package record and, if the backend can read it in the same round trip, its document
    /// (`None`: not read; ask `document_from`). For readers that will need the document: the
    /// AWS backend fetches the record and the document's snapshot side by side.
    async fn package_and_document(
        &self,
        name: &PackageName,
    ) -> Result<Option<(PackageRecord, Option<PackageDocument>)>, StoreError> {
        Ok(self.package(name).await?.map(|package| (package, None)))
    }
    /// The document of a package whose record the caller has just read, so a backend that keeps
    /// a document per revision can fetch it without reading the record again. It may be newer
    /// than `package`, never older.
    async fn document_from(
        &self,
        package: &PackageRecord,
    ) -> Result<Option<PackageDocument>, StoreError> {
        self.document(&package.name).await
    }
    /// The README of one version, if it has one (live versions only).
    async fn readme(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<String>, StoreError>;
    /// One version record.
    async fn version(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<VersionRecord>, StoreError>;
    /// One version record, read as recent as `consistency` asks (`version` reads strongly).
    async fn version_with(
        &self,
        name: &PackageName,
        version: &Version,
        _consistency: Consistency,
    ) -> Result<Option<VersionRecord>, StoreError> {
        self.version(name, version).await
    }
    /// Several version records of one package, in the order asked (a store that can reads
    /// them together: a patch of a render many writes behind reads hundreds).
    async fn versions(
        &self,
        name: &PackageName,
        versions: &[Version],
    ) -> Result<Vec<Option<VersionRecord>>, StoreError> {
        let mut records = Vec::with_capacity(versions.len());
        for version in versions {
            records.push(self.version(name, version).await?);
        }
        Ok(records)
    }
    /// Applies a write atomically, or nothing of it.
    async fn write(&self, write: PackageWrite) -> Result<(), StoreError>;
    /// Every package's search entry. A store that keeps none answers none.
    async fn search_entries(&self) -> Result<SearchLoad, StoreError> {
        Ok(SearchLoad::default())
    }
    /// Search changes committed since `watermark` (by any process; a change may come again, and
    /// the index keeps the newest revision), and the new watermark. A store whose one process
    /// applies its own writes to its index (the embedded one) answers none.
    async fn search_changes(
        &self,
        watermark: Option<&str>,
    ) -> Result<(Vec<SearchChange>, Option<String>), StoreError> {
        Ok((Vec::new(), watermark.map(str::to_string)))
    }
    /// Whether the storage can take writes now (the readiness check). A backend that cannot
    /// tell answers ok.
    async fn health(&self) -> StorageHealth {
        StorageHealth::ok()
    }
}

/// A stream of tarball bytes.
pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// How a tarball is handed to the client.
pub enum TarballRead {
    /// The bytes, streamed through the registry.
    Bytes {
        /// Length in bytes.
        len: u64,
        /// The bytes.
        body: ByteStream,
    },
    /// A URL the client fetches the bytes from (a presigned S3 GET).
    Redirect(String),
}

/// Tarball bytes by key. Keys are immutable once written (they embed the content digest).
#[async_trait]
pub trait TarballStore: Send + Sync {
    /// Stores the bytes durably under `key` before returning.
    async fn put(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError>;
    /// Stores the bytes of a version about to be written, as `put` does; or, where small
    /// tarballs live in the metadata's own database, hands them back to be stored in the
    /// version's write (`PackageWrite::tarball`): one commit per publish instead of two.
    async fn stage(
        &self,
        key: &TarballKey,
        bytes: Bytes,
    ) -> Result<Option<StagedTarball>, StoreError> {
        self.put(key, bytes).await.map(|()| None)
    }
    /// Reads the bytes, or says where to get them; `None` if absent.
    async fn get(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError>;
    /// The bytes themselves (not a URL to them), for the registry's own use: a release made
    /// from an upload before it (npm 1.x). `None` if absent.
    async fn read(&self, key: &TarballKey) -> Result<Option<Bytes>, StoreError> {
        use futures_util::StreamExt;
        match self.get(key).await? {
            None | Some(TarballRead::Redirect(_)) => Ok(None),
            Some(TarballRead::Bytes { mut body, .. }) => {
                let mut bytes = Vec::new();
                while let Some(chunk) = body.next().await {
                    bytes.extend_from_slice(
                        &chunk.map_err(|e| StoreError::Internal(e.to_string()))?,
                    );
                }
                Ok(Some(Bytes::from(bytes)))
            }
        }
    }
    /// The bytes just stored under `key` wait for a later request to claim them (npm 1.x's
    /// upload, which its release refers to): no publish is in flight for them any more, so the
    /// sweep's age cutoff alone decides whether they stay. A store that protects no upload in
    /// flight (see `sweep_by_itself`) has nothing to do.
    async fn stored_for_later(&self, _key: &TarballKey) {}
    /// Deletes the bytes; deleting an absent key succeeds.
    async fn delete(&self, key: &TarballKey) -> Result<(), StoreError>;
    /// Every stored key last written more than `older_than` ago (for the sweep).
    async fn list(&self, older_than: std::time::Duration) -> Result<Vec<TarballKey>, StoreError>;
    /// Removes what uploads interrupted more than `older_than` ago left behind (the embedded
    /// backend's temporary files) and says how many; a backend that leaves nothing removes nothing.
    async fn remove_incomplete(
        &self,
        _older_than: std::time::Duration,
    ) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Runs the whole sweep (see `sweep`) by itself, when the store can read what the versions
    /// refer to without the metadata store's trait (the embedded store opened with its database
    /// reads that directly, and protects uploads in flight); `None` leaves it to `sweep`.
    async fn sweep_by_itself(
        &self,
        _older_than: std::time::Duration,
    ) -> Result<Option<SweepReport>, StoreError> {
        Ok(None)
    }
}

/// What the pull-through cache keeps of upstream registries (`upstream`), apart from published
/// packages so that a name's origin is always known and the sweep never sees it: packuments as
/// the upstream sent them, and the tarballs of versions installed through the cache (keyed as
/// published tarballs are: the key embeds the content digest).
#[async_trait]
pub trait UpstreamStore: Send + Sync {
    /// The kept upstream document of `name` in `view` (`full` or `abbreviated`), if any.
    async fn document(&self, name: &PackageName, view: &str) -> Result<Option<Bytes>, StoreError>;
    /// Keeps `bytes` as the upstream document of `name` in `view`, replacing what was there.
    async fn keep_document(
        &self,
        name: &PackageName,
        view: &str,
        bytes: Bytes,
    ) -> Result<(), StoreError>;
    /// A kept upstream tarball's bytes, or where to get them; `None` if absent.
    async fn tarball(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError>;
    /// Stores an upstream tarball (already checked against its integrity) durably.
    async fn keep_tarball(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError>;
    /// Starts keeping an upstream tarball whose bytes arrive in pieces, under `key` (made from
    /// the digest the upstream declares): at most one piece's worth is held in memory, and
    /// nothing is visible under `key` until the caller has checked every byte and commits.
    async fn tarball_sink(&self, key: &TarballKey)
    -> Result<Box<dyn TarballSink + '_>, StoreError>;
}

/// An upstream tarball being written as it arrives ([`UpstreamStore::tarball_sink`]).
#[async_trait]
pub trait TarballSink: Send {
    /// Writes the next piece.
    async fn write(&mut self, piece: Bytes) -> Result<(), StoreError>;
    /// Makes the bytes written so far the tarball under the sink's key, durably.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Drops what was written; nothing is left under the key. Best effort: what a failure
    /// here leaves is never visible and is cleaned up later (the data directory's `tmp` at
    /// start, the bucket's rule for incomplete uploads).
    async fn abandon(self: Box<Self>);
}

/// Rendered packuments kept between runs (the embedded backend), so the first read of a big
/// package after a start copies its pieces instead of decoding and rendering every version. A
/// cache, not a record: what is kept names the package revision it shows, and the reader
/// checks that before it serves any of it.
#[async_trait]
pub trait RenderStore: Send + Sync {
    /// What is kept for `name` under `key` (the view and base URL), if anything.
    async fn kept_render(&self, name: &PackageName, key: &str)
    -> Result<Option<Bytes>, StoreError>;
    /// What is kept for `name` under `key` if it is small enough to be kept apart from the big
    /// ones (which this never reads), or the mark of a big one.
    async fn kept_small_render(
        &self,
        name: &PackageName,
        key: &str,
    ) -> Result<KeptSmall, StoreError>;
    /// The package record (as the metadata store this keeps renders for reads it) and, if one
    /// of at most `largest` bytes is kept for it under `key`, that small render: a package's
    /// first read after a start, in one transaction rather than two. `None`: the package does
    /// not exist.
    async fn package_and_small_render(
        &self,
        name: &PackageName,
        key: &str,
        largest: usize,
    ) -> Result<Option<(PackageRecord, Option<Bytes>)>, StoreError>;
    /// Keeps `render`, which shows `name` at `revision`, under `key`, replacing what was there;
    /// with `log_through`, the store's log of the writes up to that revision is let go
    /// (`touched_after`: renders kept of an older revision can then no longer be patched from
    /// it). It may return before the render is stored: it is a cache, and what it keeps names
    /// its own revision.
    async fn keep_render(
        &self,
        name: &PackageName,
        key: &str,
        revision: u64,
        render: Vec<u8>,
        log_through: Option<u64>,
    ) -> Result<(), StoreError>;
    /// The versions touched by the writes to `name` (the package created at `created`, ms since
    /// the epoch) after `revision`, as far as the store's log lists every one of them: a kept
    /// render any number of writes behind is then patched with those versions instead of
    /// being built from every version (the package record lists only the latest writes).
    async fn touched_after(
        &self,
        name: &PackageName,
        created: i64,
        revision: u64,
    ) -> Result<TouchedSince, StoreError>;
    /// The package's document if it has at most `versions` versions; `None` if it has more, or
    /// does not exist. A write renders a small package from it for the next start, without
    /// ever reading a big one whole.
    async fn document_up_to(
        &self,
        name: &PackageName,
        versions: usize,
    ) -> Result<Option<PackageDocument>, StoreError>;
}

/// What the store keeps of a package's render apart from the big ones
/// (`RenderStore::kept_small_render`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptSmall {
    /// Nothing is kept.
    Nothing,
    /// A small render.
    Render(Bytes),
    /// The package's render is big, kept as the big ones are; `base` is the revision the last
    /// one kept shows, if the store knows it (marks written before it was recorded do not).
    Big {
        /// The revision of the big render last kept.
        base: Option<u64>,
    },
}

/// The versions the writes after a revision touched, as the store's log lists them
/// (`RenderStore::touched_after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TouchedSince {
    /// The last revision listed: every write up to it, after the one asked about, is.
    pub through: u64,
    /// The versions those writes touched (a version touched twice is listed once).
    pub versions: Vec<Version>,
}

impl TouchedSince {
    /// Nothing listed after `revision`.
    pub fn nothing_after(revision: u64) -> Self {
        TouchedSince {
            through: revision,
            versions: Vec::new(),
        }
    }
}

/// Small records with an optional expiry, grouped in namespaces: GitHub answers cached by token
/// hash, registry-token records. Expired entries read as absent (DynamoDB's TTL deletes lazily).
#[async_trait]
pub trait KvStore: Send + Sync {
    /// The value, if present and not expired.
    async fn get(&self, namespace: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The value, read as recent as `consistency` asks (`get` reads strongly).
    async fn get_with(
        &self,
        namespace: &str,
        id: &str,
        _consistency: Consistency,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(namespace, id).await
    }
    /// Stores (or replaces) a value.
    async fn put(
        &self,
        namespace: &str,
        id: &str,
        value: &[u8],
        expires: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;
    /// Stores a value only if no live entry has this id (an expired one counts as absent), in
    /// one conditional write: of two racing callers exactly one gets `true`. For remembering
    /// one-time things, such as the ID tokens trusted publishing has already exchanged.
    async fn put_new(
        &self,
        namespace: &str,
        id: &str,
        value: &[u8],
        expires: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;
    /// Removes a value; removing an absent one succeeds.
    async fn delete(&self, namespace: &str, id: &str) -> Result<(), StoreError>;
    /// Every live `(id, value)` in a namespace.
    async fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// The audit log: one event per write (see `domain::audit`). Append-only on every backend:
/// nothing updates or deletes an event, except that events older than the retention period
/// (`REGISTRY_AUDIT_RETENTION_DAYS`, if set) read as absent and DynamoDB's TTL removes them.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Stores one event durably before returning.
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// The events `query` asks for, oldest first (at most `query.limit`, the newest ones).
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
}

/// How long audit events are kept: forever, or a number of days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditRetention(pub Option<chrono::Duration>);

impl AuditRetention {
    /// `days` days; 0 or `None` keeps events forever.
    pub fn days(days: Option<u64>) -> Self {
        AuditRetention(
            days.filter(|d| *d > 0)
                .and_then(|d| chrono::Duration::try_days(i64::try_from(d).ok()?)),
        )
    }

    /// When an event made at `time` expires, if ever.
    pub(crate) fn expires(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.and_then(|keep| time.checked_add_signed(keep))
    }

    /// Whether an event made at `time` has expired by `now`.
    pub(crate) fn expired(&self, time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.expires(time).is_some_and(|end| end <= now)
    }

    /// The oldest time a live event may have at `now`, if events expire.
    pub(crate) fn oldest(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.and_then(|keep| now.checked_sub_signed(keep))
    }
}

/// An audit log in memory, for tests and for state built around stores a caller already has
/// (`app::AppBuilder::stores`); it is lost with the process.
#[derive(Default)]
pub(crate) struct MemoryAuditLog {
    events: Mutex<Vec<AuditEvent>>,
    retention: AuditRetention,
}

impl MemoryAuditLog {
    /// An empty log keeping events for `retention`.
    pub fn new(retention: AuditRetention) -> Self {
        MemoryAuditLog {
            events: Mutex::default(),
            retention,
        }
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
        Ok(())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let now = Utc::now();
        let found = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|e| query.matches(e) && !self.retention.expired(e.time, now))
            .cloned()
            .collect();
        Ok(query.finish(found))
    }
}

/// Writes a request may leave until its response has been sent: ones any later request can
/// redo, such as caching a rebuilt packument document. A Lambda function runs them after posting
/// its response and before asking for the next invocation (Lambda freezes the instance only
/// then), so the client does not wait for them; a crash loses only work a later read redoes.
#[derive(Default)]
pub struct AfterResponse(Mutex<Vec<BoxFuture<'static, ()>>>);

impl AfterResponse {
    /// Queues `work` to run once the current response has been sent.
    pub(crate) fn defer(&self, work: BoxFuture<'static, ()>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(work);
    }

    /// Runs everything queued so far, all at once, and waits for it.
    pub async fn run(&self) {
        let queued = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        futures_util::future::join_all(queued).await;
    }

    /// How much work is queued.
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a sweep found.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    /// Keys looked at.
    pub checked: usize,
    /// Keys deleted because no live version refers to them.
    pub removed: Vec<TarballKey>,
    /// Leftovers of interrupted uploads deleted (see `TarballStore::remove_incomplete`).
    pub incomplete: usize,
}

/// Removes tarballs no live version refers to: uploads whose publish crashed or lost before its
/// metadata was committed, and bytes of unpublished or overwritten versions whose deletion
/// failed; and what interrupted uploads left. Only keys (and leftovers) older than `older_than`
/// are touched, so publishes in flight are safe.
pub async fn sweep(
    metadata: &dyn MetadataStore,
    tarballs: &dyn TarballStore,
    older_than: std::time::Duration,
) -> Result<SweepReport, StoreError> {
    if let Some(report) = tarballs.sweep_by_itself(older_than).await? {
        return Ok(report);
    }
    let mut report = SweepReport {
        incomplete: tarballs.remove_incomplete(older_than).await?,
        ..SweepReport::default()
    };
    for key in tarballs.list(older_than).await? {
        report.checked += 1;
        let referenced = match TarballKey::parse(key.as_str()) {
            Some((_, name, version)) => matches!(
                metadata.version(&name, &version).await?,
                Some(VersionRecord { state: crate::domain::VersionState::Live(live), .. }) if live.dist.tarball_key == key
            ),
            None => true, // not ours: leave it alone
        };
        if !referenced {
            tarballs.delete(&key).await?;
            report.removed.push(key);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::AfterResponse;

    #[tokio::test]
    async fn deferred_work_waits_for_run_and_runs_once() {
        let queue = AfterResponse::default();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let done = done.clone();
            queue.defer(Box::pin(async move {
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        assert_eq!((queue.len(), done.load(Ordering::SeqCst)), (3, 0));
        queue.run().await;
        assert_eq!((queue.len(), done.load(Ordering::SeqCst)), (0, 3));
        queue.run().await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            3,
            "drained: nothing runs twice"
        );
    }
}
