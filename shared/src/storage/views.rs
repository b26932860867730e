//! Package views: what one instance knows of each package, so that reads of a hot package cost
//! DynamoDB reads in proportion to instances, not requests (`docs/scaling.md`, parts 1 and 4).
//!
//! - A **view** is the package record as last read, and when. Read routes use it while it is
//!   younger than the check interval T (`REGISTRY_REVISION_CHECK_MS`); the first request after
//!   that checks it again: an eventually consistent read, every tenth a strong one (DynamoDB
//!   bounds no replica's lag, so this bounds how long a lagging one can hold a view back). A
//!   view's revision never moves backwards, an absence is confirmed strongly before it is
//!   believed and is then kept for T too, and one check per package is in flight at a time.
//! - A **version fact** (the tarball's key, or that the version was unpublished) is kept for the
//!   instance's life, stamped with the package's `epoch`, which every write that unpublishes or
//!   overwrites a version bumps: a fact is used while the view's epoch is its stamp.
//!
//! `PackageViews` is also a `MetadataStore` over the store it wraps, which every write path uses:
//! its reads stay strong, and what they and the writes return refreshes the views, so an instance
//! reads its own writes at once. With T = 0 (always, on local storage) nothing is kept and every
//! call reads the store, as before.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lru::LruCache;
use semver::Version;

use super::{Consistency, MetadataStore, PackageWrite, StorageHealth, StoreError};
use crate::domain::{
    PackageDocument, PackageName, PackageRecord, TarballKey, VersionRecord, VersionState,
};

/// Every this many checks of a view, one is strongly consistent.
const STRONG_EVERY: u32 = 10;

/// Views kept per instance (a few hundred bytes each), least recently used out first.
const MAX_VIEWS: NonZeroUsize = NonZeroUsize::new(4096).expect("not zero");

/// Version facts kept per instance (~200 bytes each), least recently used out first.
const MAX_FACTS: NonZeroUsize = NonZeroUsize::new(16_384).expect("not zero");

/// Versions this instance wrote that are kept for the readers patching their renderings up to
/// those writes (`PackageViews::version_as_of`): the latest few hundred writes.
const MAX_WRITTEN: NonZeroUsize = NonZeroUsize::new(256).expect("not zero");

/// READMEs up to this size are kept with a written version; a bigger one is read back.
const WRITTEN_README_BYTES: usize = 64 * 1024;

/// Versions read to patch a rendering that are kept for the instance's other rendering of the
/// same revision (`PackageViews::versions_as_of`): the two views of a package each patch, and
/// would otherwise each read what the write touched.
const MAX_READ: NonZeroUsize = NonZeroUsize::new(256).expect("not zero");

/// A version read for a patch is kept only if its manifest is at most this big (a few KB is
/// usual), which bounds `MAX_READ`'s memory to a few MiB.
const READ_MANIFEST_BYTES: usize = 32 * 1024;

/// A version this instance just created, as the write stored it.
struct Written {
    /// The package revision the write made: the version's touch in the package's
    /// `touched` list while no later write touches it.
    revision: u64,
    /// When the package was created (ms): a package deleted and created again starts its
    /// revisions over.
    created: i64,
    record: VersionRecord,
    readme: WrittenReadme,
}

/// A written version's README, as kept with it.
enum WrittenReadme {
    /// It has none.
    None,
    /// Its text.
    Kept(String),
    /// Too big to keep here: read from the store.
    Unkept,
}

/// A version's record as a read for a patch found it, after the package record that listed
/// the write it shows.
struct ReadAsOf {
    /// The latest write to touch the version in the package record read before it: the record
    /// shows that write (or a later one, as any strong read after that record could).
    touch: u64,
    /// When the package was created (ms), as for `Written`.
    created: i64,
    record: VersionRecord,
}

/// What the tarball route needs to know of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionFact {
    /// Installable, with its bytes under this key.
    Live {
        /// Where the tarball store keeps the bytes.
        tarball_key: TarballKey,
        /// Hex sha1 of the bytes (an ETag when the registry streams them).
        shasum: String,
    },
    /// Unpublished: the number is retired and its tarball answers 410.
    Unpublished,
}

impl VersionFact {
    fn of(record: &VersionRecord) -> Self {
        match &record.state {
            VersionState::Live(live) => VersionFact::Live {
                tarball_key: live.dist.tarball_key.clone(),
                shasum: live.dist.shasum.clone(),
            },
            VersionState::Unpublished { .. } => VersionFact::Unpublished,
        }
    }
}

/// What an instance last read of one package.
struct Seen {
    /// The record, or `None`: confirmed (strongly) not to exist.
    record: Option<Arc<PackageRecord>>,
    /// When the read that found it began.
    at: Instant,
    /// Eventually consistent checks since the last strong read.
    eventual_checks: u32,
}

/// A view young enough to serve: the record, or `None` for a confirmed absence.
struct Fresh(Option<Arc<PackageRecord>>);

/// One package's view and the right to check it.
#[derive(Default)]
struct Slot {
    seen: Mutex<Option<Seen>>,
    /// Held while a check is in flight: requests that find the view due wait for it.
    check: tokio::sync::Mutex<()>,
}

impl Slot {
    fn seen(&self) -> MutexGuard<'_, Option<Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The view, if it was read less than `interval` ago.
    fn fresh(&self, interval: Duration) -> Option<Fresh> {
        self.seen()
            .as_ref()
            .filter(|seen| seen.at.elapsed() < interval)
            .map(|seen| Fresh(seen.record.clone()))
    }
}

/// The views and version facts of one instance, over the store they are read from.
pub struct PackageViews {
    inner: Arc<dyn MetadataStore>,
    /// T: how long a view serves without a check; zero keeps nothing.
    interval: Duration,
    views: Mutex<LruCache<PackageName, Arc<Slot>>>,
    facts: Mutex<LruCache<(PackageName, Version), (u64, VersionFact)>>,
    /// The versions the latest writes made here created.
    written: Mutex<LruCache<(PackageName, Version), Arc<Written>>>,
    /// The versions the latest patches here read, by the write they show.
    read: Mutex<LruCache<(PackageName, Version), Arc<ReadAsOf>>>,
    /// The package records the latest writes made here committed.
    committed: Mutex<LruCache<PackageName, Arc<PackageRecord>>>,
    /// The search index kept current with the writes made here, if any.
    search: Option<Arc<crate::search::Searcher>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PackageViews {
    /// Views over `inner`, checked every `interval` (zero: none kept, every read goes to the
    /// store).
    pub fn new(inner: Arc<dyn MetadataStore>, interval: Duration) -> Self {
        PackageViews {
            inner,
            interval,
            views: Mutex::new(LruCache::new(MAX_VIEWS)),
            facts: Mutex::new(LruCache::new(MAX_FACTS)),
            written: Mutex::new(LruCache::new(MAX_WRITTEN)),
            read: Mutex::new(LruCache::new(MAX_READ)),
            committed: Mutex::new(LruCache::new(MAX_WRITTEN)),
            search: None,
        }
    }

    /// Keeps `searcher` current with every write made through these views.
    #[must_use]
    pub fn indexing(mut self, searcher: Arc<crate::search::Searcher>) -> Self {
        self.search = Some(searcher);
        self
    }

    /// Whether views are kept (T > 0).
    pub fn keeps_views(&self) -> bool {
        !self.interval.is_zero()
    }

    fn slot(&self, name: &PackageName) -> Arc<Slot> {
        let mut views = locked(&self.views);
        if let Some(slot) = views.get(name) {
            return slot.clone();
        }
        let slot = Arc::new(Slot::default());
        views.put(name.clone(), slot.clone());
        slot
    }

    /// The package record as this instance's view has it: at most T old (plus replication lag,
    /// bounded by the strong check every tenth), never older than one it served before. `None`:
    /// the package does not exist (confirmed by a strong read at most T ago).
    pub async fn package(
        &self,
        name: &PackageName,
    ) -> Result<Option<Arc<PackageRecord>>, StoreError> {
        if !self.keeps_views() {
            return Ok(self.inner.package(name).await?.map(Arc::new));
        }
        let slot = self.slot(name);
        if let Some(Fresh(record)) = slot.fresh(self.interval) {
            return Ok(record);
        }
        let _turn = slot.check.lock().await;
        // Whoever held the turn may have just checked.
        if let Some(Fresh(record)) = slot.fresh(self.interval) {
            return Ok(record);
        }
        self.check(name, &slot).await
    }

    /// The package record (as `package`) and, when the store can fetch it in the same round
    /// trip, its document: with T = 0 the store's `package_and_document`, as before views; a
    /// view that needs no check needs no round trip at all.
    pub async fn package_and_document(
        &self,
        name: &PackageName,
    ) -> Result<Option<(Arc<PackageRecord>, Option<PackageDocument>)>, StoreError> {
        if !self.keeps_views() {
            return Ok(self
                .inner
                .package_and_document(name)
                .await?
                .map(|(package, document)| (Arc::new(package), document)));
        }
        Ok(self.package(name).await?.map(|package| (package, None)))
    }

    /// `version`'s record as `package` (read at or after the write that created it) shows it:
    /// what this instance wrote, when no write since touched the version; else the store's. The
    /// first read after a publish patches its rendering with the new version without reading
    /// it back.
    pub async fn version_as_of(
        &self,
        package: &PackageRecord,
        version: &Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        Ok(self
            .versions_as_of(package, std::slice::from_ref(version))
            .await?
            .pop()
            .flatten())
    }

    /// The records of `versions` as `package` shows them (`version_as_of`), in that order;
    /// those this instance did not write are read together. With views kept, what was read is
    /// kept by the write it shows, so the instance's other rendering of this revision patches
    /// without reading it again: one read per instance and write, not one per view.
    pub async fn versions_as_of(
        &self,
        package: &PackageRecord,
        versions: &[Version],
    ) -> Result<Vec<Option<VersionRecord>>, StoreError> {
        let mut records: Vec<Option<Option<VersionRecord>>> = versions
            .iter()
            .map(|v| {
                self.written_current(package, v)
                    .map(|w| Some(w.record.clone()))
                    .or_else(|| self.read_current(package, v).map(Some))
            })
            .collect();
        let unread: Vec<Version> = versions
            .iter()
            .zip(&records)
            .filter(|(_, r)| r.is_none())
            .map(|(v, _)| v.clone())
            .collect();
        if !unread.is_empty() {
            let read = self.inner.versions(&package.name, &unread).await?;
            if self.keeps_views() {
                self.keep_read(package, &read);
            }
            let mut read = read.into_iter();
            for slot in records.iter_mut().filter(|r| r.is_none()) {
                *slot = Some(read.next().flatten());
            }
        }
        Ok(records.into_iter().map(Option::flatten).collect())
    }

    /// What a patch read of `version`, if `package` lists the same latest write to it.
    fn read_current(&self, package: &PackageRecord, version: &Version) -> Option<VersionRecord> {
        if !self.keeps_views() {
            return None;
        }
        let read = locked(&self.read)
            .get(&(package.name.clone(), version.clone()))
            .cloned()?;
        (read.created == package.created.timestamp_millis()
            && package.touched.last_touch(version) == Some(read.touch))
        .then(|| read.record.clone())
    }

    /// Keeps `records`, read strongly after `package`, by the latest write `package` lists to
    /// each: a record not listed there, or with a big manifest, is not kept.
    fn keep_read(&self, package: &PackageRecord, records: &[Option<VersionRecord>]) {
        let created = package.created.timestamp_millis();
        let mut read = locked(&self.read);
        for record in records.iter().flatten() {
            let small = match &record.state {
                VersionState::Live(live) => live.manifest.json().len() <= READ_MANIFEST_BYTES,
                VersionState::Unpublished { .. } => true,
            };
            if let (true, Some(touch)) = (small, package.touched.last_touch(&record.version)) {
                read.put(
                    (package.name.clone(), record.version.clone()),
                    Arc::new(ReadAsOf {
                        touch,
                        created,
                        record: record.clone(),
                    }),
                );
            }
        }
    }

    /// `version`'s README as `package` shows it, as `version_as_of` reads its record.
    pub async fn readme_as_of(
        &self,
        package: &PackageRecord,
        version: &Version,
    ) -> Result<Option<String>, StoreError> {
        if let Some(written) = self.written_current(package, version) {
            match &written.readme {
                WrittenReadme::None => return Ok(None),
                WrittenReadme::Kept(readme) => return Ok(Some(readme.clone())),
                WrittenReadme::Unkept => {}
            }
        }
        self.inner.readme(&package.name, version).await
    }

    /// The package record this instance's latest write to `name` committed, if it is among
    /// the latest writes made here (another instance may have written since).
    pub fn committed(&self, name: &PackageName) -> Option<Arc<PackageRecord>> {
        locked(&self.committed).get(name).cloned()
    }

    /// What this instance wrote of `version`, if `package` lists that write as the latest to
    /// touch it (a later deprecation or unpublish, here or on another instance, is listed
    /// after it; a write no longer listed is not trusted).
    fn written_current(&self, package: &PackageRecord, version: &Version) -> Option<Arc<Written>> {
        let written = locked(&self.written)
            .get(&(package.name.clone(), version.clone()))
            .cloned()?;
        (written.created == package.created.timestamp_millis()
            && package.touched.last_touch(version) == Some(written.revision))
        .then_some(written)
    }

    /// Reads the record again for a view that is due, and keeps what it learns.
    async fn check(
        &self,
        name: &PackageName,
        slot: &Slot,
    ) -> Result<Option<Arc<PackageRecord>>, StoreError> {
        let (held, eventual_checks) = match slot.seen().as_ref() {
            Some(seen) => (seen.record.clone(), Some(seen.eventual_checks)),
            None => (None, None),
        };
        // A first read is strong, so a new instance starts current; so is the check of an
        // absence (an eventual "absent" would need a strong read to confirm it anyway).
        let mut strong = match (&held, eventual_checks) {
            (Some(_), Some(n)) => n + 1 >= STRONG_EVERY,
            _ => true,
        };
        let started = Instant::now();
        let consistency = if strong {
            Consistency::Strong
        } else {
            Consistency::Eventual
        };
        let mut read = self.inner.package_with(name, consistency).await?;
        if read.is_none() && !strong {
            // Believed only once a strong read agrees: a replica may not have the record yet.
            read = self.inner.package(name).await?;
            strong = true;
        }
        let mut seen = slot.seen();
        // What the view holds now: a write of this instance may have moved it on meanwhile.
        let held = seen.as_ref().and_then(|seen| seen.record.clone()).or(held);
        let record = match (held, read) {
            // A lagging replica, or a read older than a write seen meanwhile: revisions never
            // move backwards.
            (Some(old), Some(new)) if new.revision < old.revision => Some(old),
            (_, read) => read.map(Arc::new),
        };
        *seen = Some(Seen {
            record: record.clone(),
            at: started,
            eventual_checks: if strong {
                0
            } else {
                eventual_checks.map_or(1, |n| n + 1)
            },
        });
        Ok(record)
    }

    /// Keeps `record`, which a strong read or a committed write has just returned, as the view
    /// (unless the view is already newer): the instance then reads its own writes at once.
    fn observe(&self, record: &PackageRecord, at: Instant) {
        if !self.keeps_views() {
            return;
        }
        let slot = self.slot(&record.name);
        let mut seen = slot.seen();
        if let Some(Seen {
            record: Some(old), ..
        }) = seen.as_ref()
            && old.revision > record.revision
        {
            return;
        }
        *seen = Some(Seen {
            record: Some(Arc::new(record.clone())),
            at,
            eventual_checks: 0,
        });
    }

    /// Moves an existing view forward to `record`, a committed state found elsewhere (a
    /// package's document), without counting as a check: its revision is the view's floor from
    /// now on.
    pub fn advance(&self, record: &PackageRecord) {
        if !self.keeps_views() {
            return;
        }
        let Some(slot) = locked(&self.views).peek(&record.name).cloned() else {
            return;
        };
        let mut seen = slot.seen();
        if let Some(seen) = seen.as_mut()
            && seen
                .record
                .as_ref()
                .is_some_and(|old| old.revision < record.revision)
        {
            seen.record = Some(Arc::new(record.clone()));
        }
    }

    /// What the tarball route needs of `version`, for a package whose view is `view`. Kept for
    /// the instance's life while the view's epoch stays; on a miss the version is read
    /// eventually consistently when that is safe (the package never had a version unpublished
    /// or overwritten, so its item has only ever had one committed state), strongly otherwise,
    /// and an absence is confirmed strongly: a version published a moment ago is found at once.
    /// With T = 0, or without a view, every call reads the version strongly.
    pub async fn fact(
        &self,
        name: &PackageName,
        view: Option<&PackageRecord>,
        version: &Version,
    ) -> Result<Option<VersionFact>, StoreError> {
        let Some(view) = view.filter(|_| self.keeps_views()) else {
            return Ok(self
                .inner
                .version(name, version)
                .await?
                .as_ref()
                .map(VersionFact::of));
        };
        let key = (name.clone(), version.clone());
        if let Some((epoch, fact)) = locked(&self.facts).get(&key)
            && *epoch == view.epoch
        {
            return Ok(Some(fact.clone()));
        }
        let consistency = if view.epoch == 0 {
            Consistency::Eventual
        } else {
            Consistency::Strong
        };
        let mut record = self.inner.version_with(name, version, consistency).await?;
        if record.is_none() && consistency == Consistency::Eventual {
            record = self.inner.version(name, version).await?;
        }
        let Some(record) = record else {
            return Ok(None);
        };
        let fact = VersionFact::of(&record);
        locked(&self.facts).put(key, (view.epoch, fact.clone()));
        Ok(Some(fact))
    }
}

#[cfg(test)]
impl PackageViews {
    /// Makes `name`'s view due for a check, as if T had passed.
    fn make_due(&self, name: &PackageName) {
        if let Some(seen) = self.slot(name).seen().as_mut() {
            seen.at = Instant::now().checked_sub(self.interval).unwrap_or(seen.at);
        }
    }
}

/// The store as the write paths use it: every read strong, as the store makes it, and every
/// record a strong read or a write returns refreshes this instance's view of its package.
#[async_trait]
impl MetadataStore for PackageViews {
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
        let at = Instant::now();
        let record = self.inner.package(name).await?;
        if let Some(record) = &record {
            self.observe(record, at);
        }
        Ok(record)
    }

    async fn package_with(
        &self,
        name: &PackageName,
        consistency: Consistency,
    ) -> Result<Option<PackageRecord>, StoreError> {
        match consistency {
            Consistency::Strong => MetadataStore::package(self, name).await,
            Consistency::Eventual => self.inner.package_with(name, consistency).await,
        }
    }

    async fn document(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError> {
        self.inner.document(name).await
    }

    async fn package_and_document(
        &self,
        name: &PackageName,
    ) -> Result<Option<(PackageRecord, Option<PackageDocument>)>, StoreError> {
        let at = Instant::now();
        let read = self.inner.package_and_document(name).await?;
        if let Some((record, _)) = &read {
            self.observe(record, at);
        }
        Ok(read)
    }

    async fn document_from(
        &self,
        package: &PackageRecord,
    ) -> Result<Option<PackageDocument>, StoreError> {
        self.inner.document_from(package).await
    }

    async fn readme(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<String>, StoreError> {
        self.inner.readme(name, version).await
    }

    async fn version(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        self.inner.version(name, version).await
    }

    async fn version_with(
        &self,
        name: &PackageName,
        version: &Version,
        consistency: Consistency,
    ) -> Result<Option<VersionRecord>, StoreError> {
        self.inner.version_with(name, version, consistency).await
    }

    async fn versions(
        &self,
        name: &PackageName,
        versions: &[Version],
    ) -> Result<Vec<Option<VersionRecord>>, StoreError> {
        self.inner.versions(name, versions).await
    }

    async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
        let committed = write.package.clone();
        let search = self.search.as_ref().map(|s| (s, write.search.clone()));
        let created = write.create.as_ref().map(|(record, _)| {
            let readme = match &write.readme {
                None => WrittenReadme::None,
                Some(readme) if readme.len() <= WRITTEN_README_BYTES => {
                    WrittenReadme::Kept(readme.clone())
                }
                Some(_) => WrittenReadme::Unkept,
            };
            (
                (write.package.name.clone(), record.version.clone()),
                Arc::new(Written {
                    revision: write.package.revision,
                    created: write.package.created.timestamp_millis(),
                    record: record.clone(),
                    readme,
                }),
            )
        });
        let at = Instant::now();
        self.inner.write(write).await?;
        if let Some((key, written)) = created {
            locked(&self.written).put(key, written);
        }
        self.observe(&committed, at);
        locked(&self.committed).put(committed.name.clone(), Arc::new(committed));
        if let Some((searcher, change)) = search {
            searcher.committed(&change);
        }
        Ok(())
    }

    async fn search_entries(&self) -> Result<crate::storage::SearchLoad, StoreError> {
        self.inner.search_entries().await
    }

    async fn search_changes(
        &self,
        watermark: Option<&str>,
    ) -> Result<(Vec<crate::storage::SearchChange>, Option<String>), StoreError> {
        self.inner.search_changes(watermark).await
    }

    async fn health(&self) -> StorageHealth {
        self.inner.health().await
    }
}

#[cfg(test)]
mod tests;
