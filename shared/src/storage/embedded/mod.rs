//! The embedded backend: metadata in redb (one transactional file), tarballs as files written to a
//! temporary file, fsynced and renamed into place. Writes to the database are group-committed by
//! one writer thread (`writer`): concurrent publishes share an fsync instead of queueing for one each.
//!
//! redb was chosen over SQLite because it is pure Rust (no C build on a 2-core machine), has
//! serialisable write transactions with durable commits, and its key-ordered tables map directly
//! onto DynamoDB's partition-and-sort-key layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, TableDefinition};
use semver::Version;

use super::{MetadataStore, PackageWrite, StoreError, TarballRead, TarballStore};
use crate::domain::{PackageDocument, PackageName, PackageRecord, TarballKey, VersionRecord};
use writer::{Op, Writer};

mod writer;

/// Package name → package record (JSON).
const PACKAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("packages");
/// (package name, version) → version record (JSON). Ordered, so one range read lists a package.
const VERSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("versions");

/// (namespace, id) → JSON `{value, expires}` for the key-value store.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");

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

/// Metadata in a redb database file.
#[derive(Clone)]
pub struct EmbeddedMetadata {
    db: Arc<Database>,
    /// Every write goes through the group-commit writer; reads open their own transactions.
    writer: Arc<Writer>,
    /// Package records as read at a package generation (see `RecordCache`).
    records: Arc<RecordCache>,
}

/// Package records read since the last package write. Every packument read starts with the
/// package record (its revision says whether the rendered bytes are current); while no package
/// changes, it comes from here instead of a read transaction and a JSON decode. This database
/// admits one process, whose writer bumps the generation after each commit that changed a
/// package and before answering its writers, so an entry from an older generation is never used.
#[derive(Default)]
struct RecordCache {
    entries: std::sync::RwLock<HashMap<String, (u64, PackageRecord)>>,
}

/// Entries kept at most; past it the cache starts over (records are small: ~1 KB each).
const RECORD_CACHE_ENTRIES: usize = 10_000;

impl RecordCache {
    fn get(&self, name: &str, generation: u64) -> Option<PackageRecord> {
        let entries = self.entries.read().ok()?;
        match entries.get(name) {
            Some((g, record)) if *g == generation => Some(record.clone()),
            _ => None,
        }
    }

    fn put(&self, name: &str, generation: u64, record: &PackageRecord) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= RECORD_CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(name.to_string(), (generation, record.clone()));
        }
    }
}

impl EmbeddedMetadata {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(internal)?;
        let txn = db.begin_write().map_err(internal)?;
        txn.open_table(PACKAGES).map_err(internal)?;
        txn.open_table(VERSIONS).map_err(internal)?;
        txn.open_table(KV).map_err(internal)?;
        txn.commit().map_err(internal)?;
        let db = Arc::new(db);
        let writer = Arc::new(Writer::start(db.clone())?);
        Ok(Self {
            db,
            writer,
            records: Arc::default(),
        })
    }

    /// Durable commits since opening (one fsync each): fewer than writes when writes share them.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(internal)?
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(internal)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(internal)
}

#[async_trait]
impl MetadataStore for EmbeddedMetadata {
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
        // The generation is read before the transaction begins: a record read after a later
        // commit is then filed under an older generation, which is already out of date.
        let generation = self.writer.package_generation();
        if let Some(record) = self.records.get(name.as_str(), generation) {
            return Ok(Some(record));
        }
        // Read in place, not on the blocking pool: every packument read starts here, the record
        // is small and its pages stay in redb's cache, and a hand-off to another thread per
        // request cost more (context switches) than the read itself.
        let txn = self.db.begin_read().map_err(internal)?;
        let table = txn.open_table(PACKAGES).map_err(internal)?;
        let record: Option<PackageRecord> = table
            .get(name.as_str())
            .map_err(internal)?
            .map(|v| decode(v.value()))
            .transpose()?;
        if let Some(record) = &record {
            self.records.put(name.as_str(), generation, record);
        }
        Ok(record)
    }

    async fn document(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError> {
        let name = name.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let packages = txn.open_table(PACKAGES).map_err(internal)?;
            let Some(package) = packages.get(name.as_str()).map_err(internal)? else {
                return Ok(None);
            };
            let package: PackageRecord = decode(package.value())?;
            let versions_table = txn.open_table(VERSIONS).map_err(internal)?;
            let mut versions = Vec::new();
            for row in versions_table
                .range((name.as_str(), "")..(name.as_str(), VERSION_RANGE_END))
                .map_err(internal)?
            {
                let (_, value) = row.map_err(internal)?;
                versions.push(decode::<VersionRecord>(value.value())?);
            }
            Ok(Some(PackageDocument { package, versions }))
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
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(VERSIONS).map_err(internal)?;
            table
                .get((name.as_str(), version.as_str()))
                .map_err(internal)?
                .map(|v| decode(v.value()))
                .transpose()
        })
        .await
    }

    async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
        self.writer.write(Op::Package(Box::new(write))).await
    }
}

#[async_trait]
impl super::KvStore for EmbeddedMetadata {
    async fn get(&self, namespace: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (ns, id) = (namespace.to_string(), id.to_string());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(KV).map_err(internal)?;
            let entry: Option<KvEntry> = table
                .get((ns.as_str(), id.as_str()))
                .map_err(internal)?
                .map(|v| decode(v.value()))
                .transpose()?;
            Ok(entry.filter(KvEntry::live).map(|e| e.value))
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
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(KV).map_err(internal)?;
            let mut out = Vec::new();
            for row in table.range((ns.as_str(), "")..).map_err(internal)? {
                let (key, value) = row.map_err(internal)?;
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
        .await
    }
}

/// Tarballs as files under a directory.
#[derive(Clone)]
pub struct EmbeddedTarballs {
    root: PathBuf,
    tmp: PathBuf,
}

impl EmbeddedTarballs {
    /// Uses `dir` for tarballs (created if missing).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let root = dir.join("tarballs");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&root).map_err(internal)?;
        std::fs::create_dir_all(&tmp).map_err(internal)?;
        Ok(Self { root, tmp })
    }

    fn path(&self, key: &TarballKey) -> PathBuf {
        // Keys are built from validated names and versions: no `..`, no absolute paths.
        self.root.join(key.as_str())
    }
}

#[async_trait]
impl TarballStore for EmbeddedTarballs {
    async fn put(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError> {
        let (path, tmp_dir) = (self.path(key), self.tmp.clone());
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            use std::io::Write;
            let parent = path
                .parent()
                .ok_or_else(|| internal("tarball key has no parent"))?;
            std::fs::create_dir_all(parent).map_err(internal)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(internal)?;
            tmp.write_all(&bytes).map_err(internal)?;
            tmp.as_file().sync_all().map_err(internal)?;
            tmp.persist(&path).map_err(internal)?;
            // The rename is durable only once the directory entry is.
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(internal)
        })
        .await
        .map_err(internal)?
    }

    async fn get(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError> {
        match tokio::fs::File::open(self.path(key)).await {
            Ok(file) => {
                let len = file.metadata().await.map_err(internal)?.len();
                let body = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
                Ok(Some(TarballRead::Bytes {
                    len,
                    body: Box::pin(body),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal(e)),
        }
    }

    async fn delete(&self, key: &TarballKey) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(internal(e)),
        }
    }

    async fn list(&self, older_than: std::time::Duration) -> Result<Vec<TarballKey>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let cutoff = std::time::SystemTime::now() - older_than;
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
            Ok(keys)
        })
        .await
        .map_err(internal)?
    }
}

/// Opens both embedded stores under one data directory.
pub fn open(data_dir: &Path) -> Result<(EmbeddedMetadata, EmbeddedTarballs), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(internal)?;
    Ok((
        EmbeddedMetadata::open(&data_dir.join("metadata.redb"))?,
        EmbeddedTarballs::open(data_dir)?,
    ))
}

#[cfg(test)]
mod tests;
