//! The embedded backend: metadata in redb (one transactional file), small tarballs in the same
//! file (`SMALL_TARBALL_BYTES`), bigger ones as files written to a temporary file, fsynced and
//! renamed into place. Writes to the database are group-committed by
//! one writer thread (`writer`): concurrent publishes share an fsync instead of queueing for one each.
//!
//! redb was chosen over SQLite because it is pure Rust (no C build on a 2-core machine), has
//! serialisable write transactions with durable commits, and its key-ordered tables map directly
//! onto DynamoDB's partition-and-sort-key layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use read_place::ReadPlace;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use semver::Version;

use super::{
    KeptSmall, MetadataStore, PackageWrite, RenderStore, StagedTarball, StorageHealth, StoreError,
    SweepReport, TarballRead, TarballStore, TouchedSince,
};
use crate::domain::{PackageDocument, PackageName, PackageRecord, TarballKey, VersionRecord};
use db::{Db, Opener, begin_write};
use dir::DataDir;
use writer::{Op, Writer};

mod db;
mod dir;
mod read_place;
mod renders;
mod sweep;
mod touch_log;
mod writer;

/// Package name → package record (JSON).
const PACKAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("packages");
/// (package name, version) → version record (JSON). Ordered, so one range read lists a package.
const VERSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("versions");

/// (package name, version) → README text: apart from the version records, so reading a package's
/// versions never decodes READMEs (only the full packument shows one, the latest version's).
const READMES: TableDefinition<(&str, &str), &str> = TableDefinition::new("readmes");
// Files of layout 2 written before renders moved to files (`renders`) may hold a `renders`
// table: never read, and harmless.
/// Facts about the file itself: `layout` → the layout version of the tables.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The layout this code writes: 3 = a search entry per package; 2 = READMEs in their own table
/// (1, implicit: inside the version records).
const LAYOUT: u64 = 3;

/// (package name, render key) → a small rendered packument (`RenderStore`, `renders` for why
/// bigger ones are files). A cache: made when first written to, and a file without it reads as
/// keeping nothing.
const SMALL_RENDERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("small_renders");

/// Renders up to this size are kept in `SMALL_RENDERS`, bigger ones as files: a database value
/// is read whole into the page cache and copied out (cheap at this size, and one lookup in
/// place instead of opening, reading and closing a file off the async workers).
const SMALL_RENDER_BYTES: usize = 128 * 1024;

/// Package name → its search entry (JSON), written with the package by the one write path.
const SEARCH: TableDefinition<&str, &[u8]> = TableDefinition::new("search");

/// Tarball key → the tarball's bytes, for tarballs up to `SMALL_TARBALL_BYTES` (bigger ones are
/// files under `tarballs/`). Made when first written to: a file without it holds none.
const TARBALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("tarballs");
/// Tarball key → when the tarball in `TARBALLS` was stored (ms since the epoch), for the sweep's
/// age cutoff: apart from the bytes, so that the sweep reads keys and times, not every tarball.
const TARBALL_TIMES: TableDefinition<&str, u64> = TableDefinition::new("tarball_times");

/// Tarballs up to this size are stored in `TARBALLS`, bigger ones as files. A file takes at
/// least a 4 KiB block and an inode whatever its size; a redb value shares a 4 KiB leaf page
/// with its neighbours, but only while two or more fit (key included): a bigger one takes a
/// page of its own, rounded up to a power of two past 4 KiB, no better than a file and up to
/// twice as big. Measured with redb 4 (20,000 values, keys of ~170 B, longer than most real
/// ones, with their times): 900 B values take ~2.2 KB each, 1,500 B ~2.8 KB, 1,900 B to 3,500 B ~4.4 KB (a file's
/// block and inode), 4,000 B ~8.5 KB.
const SMALL_TARBALL_BYTES: usize = 1536;

/// (namespace, id) → JSON `{value, expires}` for the key-value store.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");

/// How often the writer deletes expired key-value entries (reads already skip them; this keeps
/// the file from growing with every cached GitHub answer and issued token).
const PURGE_EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(serde::Serialize, serde::Deserialize)]
struct KvEntry {
    value: Vec<u8>,
    expires: Option<chrono::DateTime<chrono::Utc>>,
}

impl KvEntry {
    fn live(&self) -> bool {
        self.expires.is_none_or(|e| e > chrono::Utc::now())
    }
}

/// Greater than every character a version string may contain, so `(name, MAX)` ends a range.
const VERSION_RANGE_END: &str = "\u{7f}";

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// How the embedded stores are opened.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bytes of memory for the database's page cache (`REGISTRY_DB_CACHE_BYTES`).
    pub cache_bytes: usize,
    /// Whether commits record the allocator state, so that a restart after a crash needs no full
    /// repair (`REGISTRY_DB_QUICK_REPAIR`; see `db`).
    pub quick_repair: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cache_bytes: crate::config::DEFAULT_DB_CACHE_BYTES,
            quick_repair: true,
        }
    }
}

/// Opens the file as every store but the fault tests' does.
fn open_file(settings: Settings) -> Opener {
    Box::new(move |path: &Path| db::open_file(path, settings.cache_bytes))
}

/// Metadata in a redb database file.
#[derive(Clone)]
pub struct EmbeddedMetadata {
    /// The database file and its current handle (reopened after I/O errors).
    db: Arc<Db>,
    /// Every write goes through the group-commit writer; reads open their own transactions.
    writer: Arc<Writer>,
    /// Package records as read at a package generation (see `RecordCache`).
    records: Arc<RecordCache>,
    /// Whether reads run on the async workers or on the blocking pool.
    place: Arc<ReadPlace>,
}

/// Package records read since the last package write. Every packument read starts with the
/// package record (its revision says whether the rendered bytes are current); while no package
/// changes, it comes from here instead of a read transaction and a JSON decode. This database
/// admits one process, whose writer bumps the generation after each commit that changed a
/// package and before answering its writers (and every reopen bumps it), so an entry from an
/// older generation is never used.
#[derive(Default)]
struct RecordCache {
    entries: std::sync::RwLock<CachedRecords>,
}

/// The cached records (each with its generation and the bytes of JSON it was decoded from) and
/// those bytes in all.
#[derive(Default)]
struct CachedRecords {
    records: HashMap<String, (u64, PackageRecord, usize)>,
    bytes: usize,
}

/// JSON bytes of the records kept at most; past it the cache starts over. Bounded by bytes, not
/// by entries, because a record grows with its dist-tags and stars: ~14,000 typical records
/// (~300 B each), as many as the 10,000-entry bound kept before, and ~6 MB of memory whatever
/// the records hold.
const RECORD_CACHE_BYTES: usize = 4 << 20;

/// A record larger than this is not cached (it would take a large share of the cache alone).
const RECORD_CACHE_LARGEST: usize = RECORD_CACHE_BYTES / 16;

impl RecordCache {
    fn get(&self, name: &str, generation: u64) -> Option<PackageRecord> {
        let entries = self.entries.read().ok()?;
        match entries.records.get(name) {
            Some((g, record, _)) if *g == generation => Some(record.clone()),
            _ => None,
        }
    }

    /// Keeps `record`, decoded from `bytes` bytes of JSON.
    fn put(&self, name: &str, generation: u64, record: &PackageRecord, bytes: usize) {
        if bytes > RECORD_CACHE_LARGEST {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            let replaced = entries.records.get(name).map_or(0, |(_, _, b)| *b);
            if entries.bytes - replaced + bytes > RECORD_CACHE_BYTES {
                *entries = CachedRecords::default();
            }
            let replaced = entries
                .records
                .insert(name.to_string(), (generation, record.clone(), bytes))
                .map_or(0, |(_, _, b)| b);
            entries.bytes = entries.bytes - replaced + bytes;
        }
    }
}

impl EmbeddedMetadata {
    /// Opens (or creates) the database at `path`; its directory counts as the data directory.
    /// The tests' shorthand: the application opens both stores with `embedded::open`.
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::open_in(
            Arc::new(DataDir::new(dir)),
            path,
            open_file(Settings::default()),
            true,
            PURGE_EVERY,
        )
    }

    fn open_in(
        dir: Arc<DataDir>,
        path: &Path,
        open: Opener,
        quick_repair: bool,
        purge_every: Duration,
    ) -> Result<Self, StoreError> {
        let db = Arc::new(Db::open(path, dir, open, quick_repair)?);
        create_tables(&db)?;
        let writer = Arc::new(Writer::start(db.clone(), purge_every)?);
        Ok(Self {
            db,
            writer,
            records: Arc::default(),
            place: Arc::new(ReadPlace::new()),
        })
    }

    /// Durable commits since opening (one fsync each): fewer than writes when writes share them.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Runs a read on the async worker that asked while reads are fast, else on the blocking
    /// pool (`ReadPlace`).
    async fn read_where_fast<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.place.in_place() {
            return self.place.run(|| f(&self.db));
        }
        let place = self.place.clone();
        self.blocking(move |db| place.run(|| f(db))).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(internal)?
    }
}

/// Creates the tables, unless they exist, and brings an older file's layout up to date: a server
/// restarted on a full disk with a current file must not need to write before it serves reads.
fn create_tables(db: &Db) -> Result<(), StoreError> {
    let current = db.read(|database| {
        let txn = database.begin_read()?;
        let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
        let exist = [
            PACKAGES.name(),
            VERSIONS.name(),
            KV.name(),
            READMES.name(),
            SEARCH.name(),
            META.name(),
        ]
        .iter()
        .all(|n| names.iter().any(|m| m == n));
        if !exist {
            return Ok(false);
        }
        let layout = txn.open_table(META)?.get("layout")?.map(|v| v.value());
        Ok(layout == Some(LAYOUT))
    })?;
    if current {
        return Ok(());
    }
    let (_, created) = db.with(|database| {
        let txn = begin_write(database, db.quick_repair)?;
        txn.open_table(PACKAGES)?;
        txn.open_table(KV)?;
        move_readmes_apart(&txn)?;
        index_for_search(&txn)?;
        txn.open_table(META)?.insert("layout", LAYOUT)?;
        txn.commit()?;
        Ok(())
    });
    created.map_err(|f| db.report(f))
}

/// Layout 1 → 2: moves each README out of its version record into `READMES`. Runs once, when a
/// file of an older release is first opened; only records that hold a README are rewritten.
fn move_readmes_apart(txn: &redb::WriteTransaction) -> Result<(), db::Failure> {
    let mut versions = txn.open_table(VERSIONS)?;
    let mut readmes = txn.open_table(READMES)?;
    let mut moved = Vec::new();
    for row in versions.iter()? {
        let (key, value) = row?;
        let bytes = value.value();
        // A cheap test first: most records of layout 1 have no README.
        if !bytes.windows(9).any(|w| w == b"\"readme\":") {
            continue;
        }
        let mut record: serde_json::Value = serde_json::from_slice(bytes).map_err(internal)?;
        let readme = record
            .get_mut("state")
            .and_then(serde_json::Value::as_object_mut)
            .and_then(|state| state.remove("readme"));
        if let Some(readme) = readme {
            let (name, version) = key.value();
            moved.push((
                name.to_string(),
                version.to_string(),
                readme.as_str().map(str::to_string),
                encode(&record)?,
            ));
        }
    }
    let count = moved.len();
    for (name, version, readme, record) in moved {
        versions.insert((name.as_str(), version.as_str()), record.as_slice())?;
        if let Some(readme) = readme {
            readmes.insert((name.as_str(), version.as_str()), readme.as_str())?;
        }
    }
    if count > 0 {
        tracing::info!(versions = count, "moved READMEs out of version records");
    }
    Ok(())
}

/// Layout 2 → 3: makes every package's search entry, as the write path would have. Runs once,
/// when a file of an older release is first opened (and on a new file, which has nothing).
fn index_for_search(txn: &redb::WriteTransaction) -> Result<(), db::Failure> {
    let packages = txn.open_table(PACKAGES)?;
    let versions = txn.open_table(VERSIONS)?;
    let readmes = txn.open_table(READMES)?;
    let mut search = txn.open_table(SEARCH)?;
    if !search.is_empty()? {
        return Ok(());
    }
    let mut made = 0usize;
    for row in packages.iter()? {
        let (_, value) = row?;
        let package: PackageRecord = decode(value.value())?;
        if package.unpublished.is_some() {
            continue;
        }
        let Some(latest) = package.dist_tags.get(&crate::domain::DistTag::latest()) else {
            continue;
        };
        let key = (package.name.as_str(), latest.to_string());
        let Some(record) = versions.get((key.0, key.1.as_str()))? else {
            continue;
        };
        let record: VersionRecord = decode(record.value())?;
        let crate::domain::VersionState::Live(live) = &record.state else {
            continue;
        };
        let readme = readmes
            .get((key.0, key.1.as_str()))?
            .map(|r| r.value().to_string());
        let entry = crate::search::SearchEntry::of(
            &package,
            latest,
            record.published,
            live,
            readme.as_deref(),
        );
        search.insert(package.name.as_str(), encode(&entry)?.as_slice())?;
        made += 1;
    }
    if made > 0 {
        tracing::info!(
            packages = made,
            "made the search entries of stored packages"
        );
    }
    Ok(())
}

/// Packages with at most this many versions have their document read on the async worker.
const IN_PLACE_VERSIONS: usize = 16;

/// What `read_document` found (returned once, never stored: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum DocumentRead {
    /// The document, or `None` when there is no such package.
    Read(Option<PackageDocument>),
    /// More versions than the limit: left unread.
    TooMany,
}

/// A package's record and every version record, in one transaction, unless it has more than
/// `limit` versions.
fn read_document(
    database: &redb::Database,
    name: &PackageName,
    limit: Option<usize>,
) -> Result<DocumentRead, db::Failure> {
    let txn = database.begin_read()?;
    let packages = txn.open_table(PACKAGES)?;
    let Some(package) = packages.get(name.as_str())? else {
        return Ok(DocumentRead::Read(None));
    };
    let package: PackageRecord = decode(package.value())?;
    let versions_table = txn.open_table(VERSIONS)?;
    let mut versions = Vec::new();
    for row in versions_table.range((name.as_str(), "")..(name.as_str(), VERSION_RANGE_END))? {
        if limit.is_some_and(|limit| versions.len() >= limit) {
            return Ok(DocumentRead::TooMany);
        }
        let (_, value) = row?;
        versions.push(decode::<VersionRecord>(value.value())?);
    }
    Ok(DocumentRead::Read(Some(PackageDocument {
        package,
        versions,
    })))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(internal)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(internal)
}

/// The first bytes of the mark of a big render in `SMALL_RENDERS`, then the revision of the
/// one last kept (an empty value is the mark as written before the revision was recorded).
/// Kept renders begin with their format (`pieces…`), never with this.
const BIG_MARK: &[u8; 4] = b"big\0";

/// The mark of a big render kept at `revision`.
fn big_mark(revision: u64) -> Vec<u8> {
    let mut mark = BIG_MARK.to_vec();
    mark.extend_from_slice(&revision.to_le_bytes());
    mark
}

/// A `SMALL_RENDERS` value read back.
fn kept_small(value: &[u8]) -> KeptSmall {
    if value.is_empty() {
        return KeptSmall::Big { base: None };
    }
    match value.strip_prefix(BIG_MARK.as_slice()) {
        Some(revision) => KeptSmall::Big {
            base: revision.try_into().ok().map(u64::from_le_bytes),
        },
        None => KeptSmall::Render(Bytes::copy_from_slice(value)),
    }
}

#[async_trait]
impl RenderStore for EmbeddedMetadata {
    async fn kept_small_render(
        &self,
        name: &PackageName,
        key: &str,
    ) -> Result<KeptSmall, StoreError> {
        // In place while reads are fast: one lookup in pages the database caches.
        let (name, key) = (name.clone(), key.to_string());
        self.read_where_fast(move |db| {
            db.read(|database| {
                let txn = database.begin_read()?;
                let Some(table) = open_made(&txn, SMALL_RENDERS)? else {
                    return Ok(KeptSmall::Nothing);
                };
                Ok(table
                    .get((name.as_str(), key.as_str()))?
                    .map_or(KeptSmall::Nothing, |v| kept_small(v.value())))
            })
        })
        .await
    }

    async fn package_and_small_render(
        &self,
        name: &PackageName,
        key: &str,
        largest: usize,
    ) -> Result<Option<(PackageRecord, Option<Bytes>)>, StoreError> {
        let small = move |kept: KeptSmall| match kept {
            KeptSmall::Render(bytes) if bytes.len() <= largest => Some(bytes),
            _ => None,
        };
        let generation = self.db.generation();
        if let Some(record) = self.records.get(name.as_str(), generation) {
            let kept = self.kept_small_render(name, key).await?;
            return Ok(Some((record, small(kept))));
        }
        let (name, key) = (name.clone(), key.to_string());
        let read = move |db: &Db| {
            db.read(|database| {
                let txn = database.begin_read()?;
                let packages = txn.open_table(PACKAGES)?;
                let Some(value) = packages.get(name.as_str())? else {
                    return Ok(None);
                };
                let bytes = value.value().len();
                let record: PackageRecord = decode(value.value())?;
                let render = match open_made(&txn, SMALL_RENDERS)? {
                    Some(renders) => renders
                        .get((name.as_str(), key.as_str()))?
                        .filter(|v| v.value().len() <= largest)
                        .and_then(|v| small(kept_small(v.value()))),
                    None => None,
                };
                Ok(Some((name.clone(), record, bytes, render)))
            })
        };
        let read = self.read_where_fast(read).await?;
        Ok(read.map(|(name, record, bytes, render)| {
            self.records.put(name.as_str(), generation, &record, bytes);
            (record, render)
        }))
    }

    async fn kept_render(
        &self,
        name: &PackageName,
        key: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        if let KeptSmall::Render(small) = self.kept_small_render(name, key).await? {
            return Ok(Some(small));
        }
        // Opened in place: most lookups are misses (most packages keep no file), one failed
        // open, cheaper than a hand-off to the blocking pool. A hit reads megabytes, off the
        // async workers.
        let path = self.db.dir.render_path(name, key);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(internal(e)),
        };
        tokio::task::spawn_blocking(move || renders::read(file, &path))
            .await
            .map_err(internal)?
    }

    async fn keep_render(
        &self,
        name: &PackageName,
        key: &str,
        revision: u64,
        render: Vec<u8>,
        log_through: Option<u64>,
    ) -> Result<(), StoreError> {
        let path = self.db.dir.render_path(name, key);
        let (name, key) = (name.to_string(), key.to_string());
        if render.len() <= SMALL_RENDER_BYTES {
            // Queued, not waited for: a write keeps these on its way out, and a cache need not
            // cost it a commit. A failure is only logged.
            let op = Op::KeepRender {
                name,
                key,
                render,
                log_through,
            };
            let Some(answer) = self.writer.submit(op) else {
                return Ok(());
            };
            tokio::spawn(async move {
                if let Ok(Err(e)) = answer.await {
                    tracing::warn!(error = %e, "render not kept");
                }
            });
            return Ok(());
        }
        let dir = self.db.dir.clone();
        tokio::task::spawn_blocking(move || renders::write(&dir, &path, render))
            .await
            .map_err(internal)??;
        // A small render kept before the package grew would be found first: marked big, with
        // the revision the file shows, so writes know how far behind it is without reading it.
        let _ = self.writer.submit(Op::KeepRender {
            name,
            key,
            render: big_mark(revision),
            log_through,
        });
        Ok(())
    }

    async fn touched_after(
        &self,
        name: &PackageName,
        created: i64,
        revision: u64,
    ) -> Result<TouchedSince, StoreError> {
        let name = name.clone();
        self.blocking(move |db| {
            db.read(|database| {
                let txn = database.begin_read()?;
                match open_made(&txn, touch_log::TOUCH_LOG)? {
                    Some(log) => touch_log::after(&log, name.as_str(), created, revision),
                    None => Ok(TouchedSince::nothing_after(revision)),
                }
            })
        })
        .await
    }

    async fn document_up_to(
        &self,
        name: &PackageName,
        versions: usize,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let name = name.clone();
        self.blocking(move |db| {
            db.read(|database| read_document(database, &name, Some(versions)))
                .map(|read| match read {
                    DocumentRead::Read(document) => document,
                    DocumentRead::TooMany => None,
                })
        })
        .await
    }
}

#[async_trait]
impl MetadataStore for EmbeddedMetadata {
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
        // The generation is read before the transaction begins: a record read after a later
        // commit is then filed under an older generation, which is already out of date.
        let generation = self.db.generation();
        if let Some(record) = self.records.get(name.as_str(), generation) {
            return Ok(Some(record));
        }
        // In place while reads are fast: every packument read starts here, the record is small
        // and its pages stay in redb's cache, and a hand-off to another thread per request
        // cost more (context switches) than the read itself.
        let key = name.clone();
        let record: Option<(PackageRecord, usize)> = self
            .read_where_fast(move |db| {
                db.read(|database| {
                    let txn = database.begin_read()?;
                    let table = txn.open_table(PACKAGES)?;
                    let record = table.get(key.as_str())?;
                    Ok(record
                        .map(|v| Ok::<_, StoreError>((decode(v.value())?, v.value().len())))
                        .transpose()?)
                })
            })
            .await?;
        if let Some((record, bytes)) = &record {
            self.records.put(name.as_str(), generation, record, *bytes);
        }
        Ok(record.map(|(record, _)| record))
    }

    async fn document(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError> {
        // Most packages have a few versions: read in place, like the record, since a hand-off to
        // the blocking pool and back cost more than the read (a fifth of a small package's cold
        // read went to waking and parking threads). A bigger one is left after a few rows and
        // read off the async workers.
        let key = name.clone();
        let read = self
            .read_where_fast(move |db| {
                db.read(|database| read_document(database, &key, Some(IN_PLACE_VERSIONS)))
            })
            .await?;
        if let DocumentRead::Read(document) = read {
            return Ok(document);
        }
        let name = name.clone();
        self.blocking(move |db| {
            db.read(|database| read_document(database, &name, None))
                .and_then(|read| match read {
                    DocumentRead::Read(document) => Ok(document),
                    DocumentRead::TooMany => Err(internal("a read without a limit stopped")),
                })
        })
        .await
    }

    async fn version(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let (name, version) = (name.to_string(), version.to_string());
        self.blocking(move |db| {
            db.read(|database| {
                let txn = database.begin_read()?;
                let table = txn.open_table(VERSIONS)?;
                let record = table.get((name.as_str(), version.as_str()))?;
                Ok(record.map(|v| decode(v.value())).transpose()?)
            })
        })
        .await
    }

    async fn versions(
        &self,
        name: &PackageName,
        versions: &[Version],
    ) -> Result<Vec<Option<VersionRecord>>, StoreError> {
        let name = name.to_string();
        let keys: Vec<String> = versions.iter().map(Version::to_string).collect();
        self.blocking(move |db| {
            db.read(|database| {
                let txn = database.begin_read()?;
                let table = txn.open_table(VERSIONS)?;
                let mut records = Vec::with_capacity(keys.len());
                for key in &keys {
                    let record = table.get((name.as_str(), key.as_str()))?;
                    records.push(record.map(|v| decode(v.value())).transpose()?);
                }
                Ok(records)
            })
        })
        .await
    }

    async fn readme(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<String>, StoreError> {
        let (name, version) = (name.to_string(), version.to_string());
        self.blocking(move |db| {
            db.read(|database| {
                let txn = database.begin_read()?;
                let table = txn.open_table(READMES)?;
                let readme = table.get((name.as_str(), version.as_str()))?;
                Ok(readme.map(|v| v.value().to_string()))
            })
        })
        .await
    }

    async fn search_entries(&self) -> Result<super::SearchLoad, StoreError> {
        let entries = self
            .blocking(|db| {
                db.read(|database| {
                    let txn = database.begin_read()?;
                    let table = txn.open_table(SEARCH)?;
                    let mut entries =
                        Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
                    for row in table.iter()? {
                        let (_, value) = row?;
                        entries.push(decode::<crate::search::SearchEntry>(value.value())?);
                    }
                    Ok(entries)
                })
            })
            .await?;
        Ok(super::SearchLoad {
            entries,
            watermark: None,
        })
    }

    async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
        let uploaded = write
            .create
            .as_ref()
            .and_then(|(record, _)| match &record.state {
                crate::domain::VersionState::Live(live) => Some(live.dist.tarball_key.clone()),
                crate::domain::VersionState::Unpublished { .. } => None,
            });
        self.writer.write(Op::Package(Box::new(write))).await?;
        // Committed: the version protects its tarball from the sweep from now on.
        if let Some(key) = uploaded {
            self.db.dir.upload_ends(key.as_str());
        }
        Ok(())
    }

    async fn health(&self) -> StorageHealth {
        // While the disk is full this writes a probe file: off the async workers.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.dir.state())
            .await
            .unwrap_or_else(|e| StorageHealth {
                state: super::StorageState::Failed,
                since: Some(chrono::Utc::now()),
                detail: Some(e.to_string()),
                location: None,
            })
    }
}

#[async_trait]
impl super::KvStore for EmbeddedMetadata {
    async fn get(&self, namespace: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (ns, id) = (namespace.to_string(), id.to_string());
        self.blocking(move |db| {
            db.read(|database| {
                let txn = database.begin_read()?;
                let table = txn.open_table(KV)?;
                let entry = table.get((ns.as_str(), id.as_str()))?;
                let entry: Option<KvEntry> = entry.map(|v| decode(v.value())).transpose()?;
                Ok(entry.filter(KvEntry::live).map(|e| e.value))
            })
        })
        .await
    }

    async fn put(
        &self,
        namespace: &str,
        id: &str,
        value: &[u8],
        expires: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), StoreError> {
        let entry = encode(&KvEntry {
            value: value.to_vec(),
            expires,
        })?;
        self.writer
            .write(Op::KvPut {
                namespace: namespace.to_string(),
                id: id.to_string(),
                entry,
            })
            .await
    }

    async fn put_new(
        &self,
        namespace: &str,
        id: &str,
        value: &[u8],
        expires: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<bool, StoreError> {
        let entry = encode(&KvEntry {
            value: value.to_vec(),
            expires,
        })?;
        // The check and the insert run in the writer's one transaction: no racer between them.
        match self
            .writer
            .write(Op::KvPutNew {
                namespace: namespace.to_string(),
                id: id.to_string(),
                entry,
            })
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::EntryExists) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, namespace: &str, id: &str) -> Result<(), StoreError> {
        self.writer
            .write(Op::KvDelete {
                namespace: namespace.to_string(),
                id: id.to_string(),
            })
            .await
    }

    async fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let ns = namespace.to_string();
        self.blocking(move |db| {
            db.read(|database| {
                let txn = database.begin_read()?;
                let table = txn.open_table(KV)?;
                let mut out = Vec::new();
                for row in table.range((ns.as_str(), "")..)? {
                    let (key, value) = row?;
                    let (row_ns, id) = key.value();
                    if row_ns != ns {
                        break;
                    }
                    let entry: KvEntry = decode(value.value())?;
                    if entry.live() {
                        out.push((id.to_string(), entry.value));
                    }
                }
                Ok(out)
            })
        })
        .await
    }
}

/// Tarballs: small ones in the database (`TARBALLS`), the others as files under a directory.
#[derive(Clone)]
pub struct EmbeddedTarballs {
    root: PathBuf,
    dir: Arc<DataDir>,
    /// The database beside them, when opened together (`open`). Without it (`open` of this
    /// type alone) every tarball is a file.
    database: Option<Beside>,
}

/// The database and its writer, as the tarball store reaches them. Not owned: the metadata
/// store's drop closes the file, as it did before small tarballs moved into it.
#[derive(Clone)]
struct Beside {
    db: std::sync::Weak<Db>,
    writer: std::sync::Weak<Writer>,
}

impl Beside {
    /// Both, unless the metadata store has been dropped.
    fn upgrade(&self) -> Option<(Arc<Db>, Arc<Writer>)> {
        Some((self.db.upgrade()?, self.writer.upgrade()?))
    }
}

/// `table` in a read transaction, or `None` if no write has made it yet (a file written before
/// the table existed, or one that never stored such a row): then it reads as empty.
fn open_made<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, redb::TableError> {
    match txn.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Milliseconds since the epoch, now.
pub(super) fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

impl EmbeddedTarballs {
    /// Uses `dir` for tarballs (created if missing), without the database: every tarball is a
    /// file (small ones stored by a server are not seen), and its sweep goes through the
    /// metadata store it is given.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::in_dir(Arc::new(DataDir::new(dir)), dir, None)
    }

    fn in_dir(
        dir: Arc<DataDir>,
        data_dir: &Path,
        database: Option<Beside>,
    ) -> Result<Self, StoreError> {
        let root = data_dir.join("tarballs");
        std::fs::create_dir_all(&root).map_err(internal)?;
        std::fs::create_dir_all(dir.tmp()).map_err(internal)?;
        Ok(Self {
            root,
            dir,
            database,
        })
    }

    fn path(&self, key: &TarballKey) -> PathBuf {
        // Keys are built from validated names and versions: no `..`, no absolute paths.
        self.root.join(key.as_str())
    }

    /// The database and its writer, if this store has them and they are still open.
    fn database(&self) -> Option<(Arc<Db>, Arc<Writer>)> {
        self.database.as_ref().and_then(Beside::upgrade)
    }

    /// Whether a small tarball is stored under `key` in the database (its time is looked up,
    /// not its bytes).
    async fn is_small(&self, db: Arc<Db>, key: &TarballKey) -> Result<bool, StoreError> {
        let key = key.as_str().to_string();
        tokio::task::spawn_blocking(move || {
            db.read(|database| {
                let txn = database.begin_read()?;
                match open_made(&txn, TARBALL_TIMES)? {
                    Some(times) => Ok(times.get(key.as_str())?.is_some()),
                    None => Ok(false),
                }
            })
        })
        .await
        .map_err(internal)?
    }
}

#[async_trait]
impl TarballStore for EmbeddedTarballs {
    async fn stage(
        &self,
        key: &TarballKey,
        bytes: Bytes,
    ) -> Result<Option<StagedTarball>, StoreError> {
        // A small one goes into the database with its version, in one commit: nothing of it
        // exists before, so the sweep has nothing to be kept from.
        if bytes.len() <= SMALL_TARBALL_BYTES && self.database().is_some() {
            return Ok(Some(StagedTarball {
                key: key.clone(),
                bytes,
            }));
        }
        self.put(key, bytes).await.map(|()| None)
    }

    async fn put(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError> {
        // Remembered before the tarball is stored, so that the sweep never sees it unprotected;
        // forgotten when its version is committed (`EmbeddedMetadata::write`).
        if bytes.len() <= SMALL_TARBALL_BYTES
            && let Some((_, writer)) = self.database()
        {
            self.dir.upload_begins(key.as_str());
            // Committed with the writes queued beside it (one fsync), durable before this returns.
            let op = Op::PutTarball {
                key: key.as_str().to_string(),
                bytes,
                stored_ms: now_ms(),
            };
            let written = writer.write(op).await;
            if written.is_err() {
                self.dir.upload_ends(key.as_str());
            }
            return written;
        }
        let (path, dir, key) = (self.path(key), self.dir.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            dir.upload_begins(key.as_str());
            let written = dir.write_file(&path, &bytes);
            if written.is_err() {
                dir.upload_ends(key.as_str());
            }
            written
        })
        .await
        .map_err(internal)?
    }

    async fn get(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError> {
        // One hand-off to the blocking pool for the whole lookup (its pages may not be
        // cached): the database first; then a file, a bigger tarball or one an older release
        // stored, read whole there if it is small.
        let db = self.database().map(|(db, _)| db);
        let (path, key) = (self.path(key), key.as_str().to_string());
        let found = tokio::task::spawn_blocking(move || {
            if let Some(db) = db
                && let Some(bytes) = small_tarball(&db, &key)?
            {
                return Ok(Some(FoundTarball::Bytes(bytes)));
            }
            open_tarball_file(&path)
        })
        .await
        .map_err(internal)??;
        Ok(found.map(FoundTarball::into_read))
    }

    async fn stored_for_later(&self, key: &TarballKey) {
        // The upload's own request is over: its release, a later request, stores the same
        // bytes again (protected then like any publish's) before it commits.
        self.dir.upload_ends(key.as_str());
    }

    async fn delete(&self, key: &TarballKey) -> Result<(), StoreError> {
        // A publish deleting its own upload has given up on it; any other delete (an
        // overwritten or unpublished version's bytes) finds nothing remembered.
        self.dir.upload_ends(key.as_str());
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal(e)),
        }
        // Looked up first: a tarball that is a file costs no commit (and a delete on a full
        // disk still frees its space).
        if let Some((db, writer)) = self.database()
            && self.is_small(db, key).await?
        {
            writer
                .write(Op::DeleteTarball {
                    key: key.as_str().to_string(),
                })
                .await?;
        }
        Ok(())
    }

    async fn list(&self, older_than: Duration) -> Result<Vec<TarballKey>, StoreError> {
        let root = self.root.clone();
        let db = self.database().map(|(db, _)| db);
        tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now();
            let cutoff = now.checked_sub(older_than).unwrap_or(std::time::UNIX_EPOCH);
            let mut keys = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).map_err(internal)? {
                    let entry = entry.map_err(internal)?;
                    let meta = entry.metadata().map_err(internal)?;
                    if meta.is_dir() {
                        dirs.push(entry.path());
                    } else if meta.modified().map_err(internal)? <= cutoff {
                        let relative = entry
                            .path()
                            .strip_prefix(&root)
                            .map_err(internal)?
                            .to_string_lossy()
                            .into_owned();
                        if let Some((key, _, _)) = TarballKey::parse(&relative) {
                            keys.push(key);
                        }
                    }
                }
            }
            if let Some(db) = db {
                let cutoff_ms = now_ms()
                    .saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX));
                keys.extend(db.read(|database| sweep::stored_before(database, cutoff_ms))?);
            }
            Ok(keys)
        })
        .await
        .map_err(internal)?
    }

    async fn remove_incomplete(&self, older_than: Duration) -> Result<usize, StoreError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || dir.remove_leftovers(older_than))
            .await
            .map_err(internal)?
    }

    async fn sweep_by_itself(
        &self,
        older_than: Duration,
    ) -> Result<Option<SweepReport>, StoreError> {
        let Some((db, writer)) = self.database() else {
            return Ok(None);
        };
        let (dir, root, files_db) = (self.dir.clone(), self.root.clone(), db.clone());
        let mut report =
            tokio::task::spawn_blocking(move || sweep::sweep(&files_db, &dir, &root, older_than))
                .await
                .map_err(internal)??;
        sweep::sweep_small(&db, &writer, older_than, &mut report).await?;
        Ok(Some(report))
    }
}

/// A tarball file, read whole or streamed (`open_tarball_file`); `None` if there is none.
async fn read_tarball_file(path: &Path) -> Result<Option<TarballRead>, StoreError> {
    let path = path.to_path_buf();
    let found = tokio::task::spawn_blocking(move || open_tarball_file(&path))
        .await
        .map_err(internal)??;
    Ok(found.map(FoundTarball::into_read))
}

/// Tarball files up to this size are read whole by the hand-off to the blocking pool that opens
/// them; bigger ones are streamed, a hand-off per read of this size. Whole or streamed, a
/// response holds at most this much of a file at a time.
const READ_WHOLE_TARBALL_BYTES: usize = 64 * 1024;

/// A tarball as found off the async workers: its bytes, or its file to stream.
enum FoundTarball {
    Bytes(Bytes),
    File(std::fs::File, u64),
}

impl FoundTarball {
    fn into_read(self) -> TarballRead {
        match self {
            FoundTarball::Bytes(bytes) => TarballRead::Bytes {
                len: bytes.len() as u64,
                body: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
            },
            FoundTarball::File(file, len) => {
                let file = tokio::fs::File::from_std(file);
                TarballRead::Bytes {
                    len,
                    body: Box::pin(tokio_util::io::ReaderStream::with_capacity(
                        file,
                        READ_WHOLE_TARBALL_BYTES,
                    )),
                }
            }
        }
    }
}

/// Opens the tarball file at `path` (blocking); one up to `READ_WHOLE_TARBALL_BYTES` is read
/// whole. Files are renamed into place complete and never rewritten, so its length holds.
fn open_tarball_file(path: &Path) -> Result<Option<FoundTarball>, StoreError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(internal(e)),
    };
    let len = file.metadata().map_err(internal)?.len();
    if len > READ_WHOLE_TARBALL_BYTES as u64 {
        return Ok(Some(FoundTarball::File(file, len)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(internal)?;
    Ok(Some(FoundTarball::Bytes(Bytes::from(bytes))))
}

/// The small tarball stored under `key` in the database, if any (blocking: its pages may not be
/// cached).
fn small_tarball(db: &Db, key: &str) -> Result<Option<Bytes>, StoreError> {
    db.read(|database| {
        let txn = database.begin_read()?;
        let Some(table) = open_made(&txn, TARBALLS)? else {
            return Ok(None);
        };
        Ok(table.get(key)?.map(|v| Bytes::copy_from_slice(v.value())))
    })
}

/// The pull-through cache's files, under `upstream/` in the data directory (`UpstreamStore`):
/// apart from `tarballs/`, so the sweep never sees them.
#[derive(Clone)]
pub struct EmbeddedUpstream {
    root: PathBuf,
    dir: Arc<DataDir>,
}

impl EmbeddedTarballs {
    /// The pull-through cache's store in the same data directory.
    pub fn upstream_store(&self) -> EmbeddedUpstream {
        let root = self
            .root
            .parent()
            .map_or_else(|| self.root.join("upstream"), |d| d.join("upstream"));
        EmbeddedUpstream {
            root,
            dir: self.dir.clone(),
        }
    }
}

impl EmbeddedUpstream {
    fn document_path(&self, name: &PackageName, view: &str) -> PathBuf {
        // Names are validated (no `..`, no leading `/`); views are the cache's own words.
        self.root
            .join("documents")
            .join(name.as_str())
            .join(format!("{view}.json"))
    }

    fn tarball_path(&self, key: &TarballKey) -> PathBuf {
        self.root.join("tarballs").join(key.as_str())
    }

    async fn write(&self, path: PathBuf, bytes: Bytes) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || dir.write_file(&path, &bytes))
            .await
            .map_err(internal)?
    }
}

#[async_trait]
impl crate::storage::UpstreamStore for EmbeddedUpstream {
    async fn document(&self, name: &PackageName, view: &str) -> Result<Option<Bytes>, StoreError> {
        match tokio::fs::read(self.document_path(name, view)).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal(e)),
        }
    }

    async fn keep_document(
        &self,
        name: &PackageName,
        view: &str,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        self.write(self.document_path(name, view), bytes).await
    }

    async fn tarball(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError> {
        read_tarball_file(&self.tarball_path(key)).await
    }

    async fn keep_tarball(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError> {
        self.write(self.tarball_path(key), bytes).await
    }

    async fn tarball_sink(
        &self,
        key: &TarballKey,
    ) -> Result<Box<dyn crate::storage::TarballSink + '_>, StoreError> {
        let dir = self.dir.clone();
        let file = tokio::task::spawn_blocking(move || dir.temp_file())
            .await
            .map_err(internal)??;
        Ok(Box::new(FileSink {
            dir: self.dir.clone(),
            path: self.tarball_path(key),
            file: Some(file),
            buffer: bytes::BytesMut::new(),
        }))
    }
}

/// The most of an upstream tarball held in memory before it is written out.
const FILE_SINK_BUFFER: usize = 1 << 20;

/// An upstream tarball on its way to a file: pieces gathered to a megabyte, written off the
/// async workers to a temporary file, renamed into place at commit.
struct FileSink {
    dir: Arc<DataDir>,
    path: PathBuf,
    /// Taken while a write runs on the blocking pool.
    file: Option<tempfile::NamedTempFile>,
    buffer: bytes::BytesMut,
}

impl FileSink {
    async fn flush(&mut self) -> Result<(), StoreError> {
        let (dir, path) = (self.dir.clone(), self.path.clone());
        let mut file = self
            .file
            .take()
            .ok_or_else(|| internal("a tarball file failed earlier"))?;
        let bytes = std::mem::take(&mut self.buffer).freeze();
        let file = tokio::task::spawn_blocking(move || {
            dir.append(&mut file, &path, &bytes).map(|()| file)
        })
        .await
        .map_err(internal)??;
        self.file = Some(file);
        Ok(())
    }
}

#[async_trait]
impl crate::storage::TarballSink for FileSink {
    async fn write(&mut self, piece: Bytes) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(&piece);
        if self.buffer.len() >= FILE_SINK_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.flush().await?;
        let (dir, path) = (self.dir.clone(), self.path.clone());
        let file = self
            .file
            .take()
            .ok_or_else(|| internal("a tarball file failed earlier"))?;
        tokio::task::spawn_blocking(move || dir.persist(file, &path))
            .await
            .map_err(internal)?
    }

    async fn abandon(self: Box<Self>) {
        // Dropping the temporary file deletes it.
        if let Some(file) = self.file {
            let _ = tokio::task::spawn_blocking(move || drop(file)).await;
        }
    }
}

/// Opens both embedded stores under one data directory with the default settings, and removes
/// what writes interrupted by a crash or a kill left in its `tmp`.
pub fn open(data_dir: &Path) -> Result<(EmbeddedMetadata, EmbeddedTarballs), StoreError> {
    open_configured(data_dir, Settings::default())
}

/// `open` with `settings`.
pub fn open_configured(
    data_dir: &Path,
    settings: Settings,
) -> Result<(EmbeddedMetadata, EmbeddedTarballs), StoreError> {
    open_with(
        data_dir,
        open_file(settings),
        settings.quick_repair,
        PURGE_EVERY,
    )
}

fn open_with(
    data_dir: &Path,
    open: Opener,
    quick_repair: bool,
    purge_every: Duration,
) -> Result<(EmbeddedMetadata, EmbeddedTarballs), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(internal)?;
    let dir = Arc::new(DataDir::new(data_dir));
    let metadata = EmbeddedMetadata::open_in(
        dir.clone(),
        &data_dir.join("metadata.redb"),
        open,
        quick_repair,
        purge_every,
    )?;
    // From here until the store is dropped, redb holds the database file exclusively: another
    // server, or `registry-server sweep`, on this directory fails to open it, so no other
    // process writes into `tmp` now and whatever is there was left by one that died mid-write.
    if let Err(e) = dir.remove_leftovers(Duration::ZERO) {
        tracing::warn!(error = %e, "could not remove the files of interrupted writes");
    }
    let beside = Beside {
        db: Arc::downgrade(&metadata.db),
        writer: Arc::downgrade(&metadata.writer),
    };
    let tarballs = EmbeddedTarballs::in_dir(dir, data_dir, Some(beside))?;
    Ok((metadata, tarballs))
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;
