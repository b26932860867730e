//! A full disk, simulated: the database file goes through a redb backend that refuses to
//! allocate new blocks once the "disk" is full (overwriting blocks the file already has still
//! works, as on ext4, xfs or tmpfs), and the data directory's file writes fail with ENOSPC.
//! What must hold: a full disk answers 507 naming the data directory, reads keep working, writes
//! work again once space is freed (no restart, no reopening by hand), and nothing acknowledged
//! is lost.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use redb::backends::FileBackend;
use redb::{BackendError, Builder, ReadableDatabase, StorageBackend};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::storage::{KvStore, StorageState};

const BLOCK: u64 = 4096;

/// A disk of `capacity` blocks, shared by the backends opened on it.
#[derive(Debug)]
struct Disk {
    capacity: AtomicU64,
    /// Blocks of the file that hold data (a block beyond them is a hole until written).
    allocated: Mutex<HashSet<u64>>,
}

impl Disk {
    fn new() -> Arc<Disk> {
        Arc::new(Disk {
            capacity: AtomicU64::new(u64::MAX),
            allocated: Mutex::default(),
        })
    }

    fn used(&self) -> u64 {
        self.allocated.lock().unwrap().len() as u64
    }

    /// No block is free from now on.
    fn fill(&self) {
        self.capacity.store(self.used(), Ordering::SeqCst);
    }

    /// `blocks` more blocks fit, then the disk is full.
    fn leave(&self, blocks: u64) {
        self.capacity.store(self.used() + blocks, Ordering::SeqCst);
    }

    fn free(&self) {
        self.capacity.store(u64::MAX, Ordering::SeqCst);
    }

    /// Whether `bytes` more find no room.
    fn no_room_for(&self, bytes: usize) -> bool {
        let free = self
            .capacity
            .load(Ordering::SeqCst)
            .saturating_sub(self.used());
        free < (bytes as u64).div_ceil(BLOCK)
    }
}

#[derive(Debug)]
struct FullDisk {
    inner: FileBackend,
    disk: Arc<Disk>,
}

impl StorageBackend for FullDisk {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        // Growing makes a hole (no blocks); shrinking frees the blocks cut off.
        self.disk
            .allocated
            .lock()
            .unwrap()
            .retain(|b| b * BLOCK < len);
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if !data.is_empty() {
            let mut allocated = self.disk.allocated.lock().unwrap();
            let blocks = offset / BLOCK..(offset + data.len() as u64).div_ceil(BLOCK);
            let new = blocks.clone().filter(|b| !allocated.contains(b)).count() as u64;
            if allocated.len() as u64 + new > self.disk.capacity.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            allocated.extend(blocks);
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Opens the database on `disk`, with no page cache: every read goes to the file, as reads of
/// pages redb has not cached do on a real server.
fn opener(disk: &Arc<Disk>) -> Opener {
    let disk = disk.clone();
    Box::new(move |path: &Path| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let backend = FullDisk {
            inner: FileBackend::new(file)?,
            disk: disk.clone(),
        };
        Builder::new()
            .set_cache_size(0)
            .create_with_backend(backend)
    })
}

/// Both stores on `data`, the database and the data directory's other files on `disk`.
fn stores(data: &Path, disk: &Arc<Disk>) -> (EmbeddedMetadata, EmbeddedTarballs) {
    let (meta, tarballs) = open_with(data, opener(disk), true, PURGE_EVERY).unwrap();
    let files = disk.clone();
    let hooked = meta
        .db
        .dir
        .no_room_for
        .set(Box::new(move |_, bytes| files.no_room_for(bytes)));
    assert!(hooked.is_ok());
    (meta, tarballs)
}

fn kv_keys(meta: &EmbeddedMetadata) -> HashSet<String> {
    meta.db
        .read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(KV)?;
            let mut keys = HashSet::new();
            for row in table.range::<(&str, &str)>(..)? {
                keys.insert(row?.0.value().1.to_string());
            }
            Ok(keys)
        })
        .unwrap()
}

fn no_space_in(e: &StoreError, data: &Path) -> bool {
    matches!(e, StoreError::InsufficientStorage(place) if place == &data.display().to_string())
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let disk = Disk::new();
    let (meta, _tarballs) = stores(&data, &disk);
    KvStore::put(&meta, "ns", "before", b"kept", None)
        .await
        .unwrap();

    disk.fill();
    let refused = KvStore::put(&meta, "ns", "during", b"x", None).await;
    assert!(
        matches!(&refused, Err(e) if no_space_in(e, &data)),
        "{refused:?}"
    );
    // Reads work (from a reopened handle: redb refuses every read of the failed one).
    assert_eq!(
        KvStore::get(&meta, "ns", "before")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
    let health = meta.health().await;
    assert_eq!(health.state, StorageState::Full, "{health:?}");
    assert_eq!(health.location, Some(data.display().to_string()));
    // Still full: refused again (by the probe, before the database is touched).
    let again = KvStore::put(&meta, "ns", "during", b"x", None).await;
    assert!(
        matches!(&again, Err(e) if no_space_in(e, &data)),
        "{again:?}"
    );

    disk.free();
    assert_eq!(meta.health().await.state, StorageState::Ok);
    KvStore::put(&meta, "ns", "after", b"y", None)
        .await
        .unwrap();
    assert_eq!(
        kv_keys(&meta),
        HashSet::from(["before".to_string(), "after".to_string()])
    );
}

#[tokio::test]
async fn a_database_failure_is_recovered_even_when_the_disk_seemed_fine() {
    // Only the database's disk fills (the probe file would fit): every write still fails with
    // 507, and every failure reopens the handle, so reads never see a failed one.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let disk = Disk::new();
    let (meta, _tarballs) = open_with(&data, opener(&disk), true, PURGE_EVERY).unwrap();
    let name = PackageName::parse("@t/a").unwrap();
    meta.write(super::tests::create(&name, "1.0.0", None))
        .await
        .unwrap();
    disk.fill();
    for n in 1..4 {
        let e = meta
            .write(super::tests::create(&name, &format!("1.0.{n}"), Some(1)))
            .await
            .unwrap_err();
        assert!(no_space_in(&e, &data), "{e:?}");
        assert_eq!(
            meta.document(&name).await.unwrap().unwrap().versions.len(),
            1
        );
        assert_eq!(meta.package(&name).await.unwrap().unwrap().revision, 1);
    }
    disk.free();
    meta.write(super::tests::create(&name, "1.0.1", Some(1)))
        .await
        .unwrap();
    assert_eq!(
        meta.document(&name).await.unwrap().unwrap().versions.len(),
        2
    );
}

#[tokio::test]
async fn a_tarball_that_fits_elsewhere_does_not_hide_that_the_database_disk_is_full() {
    // The tarballs' directory has room (another filesystem, say); the database's disk has none,
    // so the probe beside the database fails too. The tarballs are files: bigger than those the
    // database keeps (`SMALL_TARBALL_BYTES`).
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let disk = Disk::new();
    let (meta, tarballs) = open_with(&data, opener(&disk), true, PURGE_EVERY).unwrap();
    let (db_disk, root) = (disk.clone(), data.clone());
    let hooked = meta.db.dir.no_room_for.set(Box::new(move |path, bytes| {
        path.parent() == Some(root.as_path()) && db_disk.no_room_for(bytes)
    }));
    assert!(hooked.is_ok());
    let name = PackageName::parse("@t/a").unwrap();
    meta.write(super::tests::create(&name, "1.0.0", None))
        .await
        .unwrap();
    disk.fill();
    for n in 1..4 {
        // A publish: its tarball is stored, its metadata cannot be.
        let key = TarballKey::new(&name, &Version::new(1, 0, n), &"ab".repeat(32));
        tarballs
            .put(&key, Bytes::from(vec![7u8; SMALL_TARBALL_BYTES + 1]))
            .await
            .unwrap();
        let e = meta
            .write(super::tests::create(&name, &format!("1.0.{n}"), Some(1)))
            .await
            .unwrap_err();
        assert!(no_space_in(&e, &data), "{e:?}");
    }
    // Only the first failure cost a failed commit and a reopen; the probe refused the others.
    assert_eq!(meta.db.reopens(), 1);
    assert_eq!(meta.health().await.state, StorageState::Full);
    disk.free();
    meta.write(super::tests::create(&name, "1.0.1", Some(1)))
        .await
        .unwrap();
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_disk_fills_mid_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let disk = Disk::new();
    let (meta, _tarballs) = stores(&data, &disk);
    // Room for a few hundred KB more: concurrent writers fill it part-way through their writes,
    // in the middle of group commits.
    disk.leave(64);
    let value = vec![7u8; 3000];
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (meta, value) = (meta.clone(), value.clone());
        writers.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..40 {
                let id = format!("w{w}-{i}");
                let result = KvStore::put(&meta, "ns", &id, &value, None).await;
                outcomes.push((id, result));
            }
            outcomes
        });
    }
    let mut outcomes = BTreeMap::new();
    while let Some(done) = writers.join_next().await {
        outcomes.extend(done.unwrap());
    }
    let acknowledged: HashSet<String> = outcomes
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| id.clone())
        .collect();
    let refused = outcomes.len() - acknowledged.len();
    assert!(
        !acknowledged.is_empty() && refused > 0,
        "the disk must fill part-way: {} acknowledged, {refused} refused",
        acknowledged.len()
    );
    for (id, result) in &outcomes {
        if let Err(e) = result {
            assert!(no_space_in(e, &data), "{id}: {e:?}");
        }
    }
    // What the store reads is exactly what it acknowledged: a refused write left nothing.
    assert_eq!(kv_keys(&meta), acknowledged);

    disk.free();
    KvStore::put(&meta, "ns", "after", b"1", None)
        .await
        .unwrap();
    drop(meta);
    // And so does the file, opened afresh the ordinary way.
    let (meta, _tarballs) = open(&data).unwrap();
    let mut expected = acknowledged;
    expected.insert("after".into());
    assert_eq!(kv_keys(&meta), expected);
}

#[tokio::test]
async fn a_tarball_write_on_a_full_disk_answers_no_space_and_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let disk = Disk::new();
    let (meta, tarballs) = stores(&data, &disk);
    let name = PackageName::parse("@t/a").unwrap();
    let key = TarballKey::new(&name, &Version::new(1, 0, 0), &"ab".repeat(32));

    disk.fill();
    let e = tarballs
        .put(&key, Bytes::from(vec![1u8; 100_000]))
        .await
        .unwrap_err();
    assert!(no_space_in(&e, &data), "{e:?}");
    assert_eq!(std::fs::read_dir(data.join("tmp")).unwrap().count(), 0);
    assert!(tarballs.get(&key).await.unwrap().is_none());
    // One data directory: the metadata store reports the tarball's failure too.
    assert_eq!(meta.health().await.state, StorageState::Full);

    disk.free();
    tarballs
        .put(&key, Bytes::from(vec![1u8; 100_000]))
        .await
        .unwrap();
    assert!(tarballs.get(&key).await.unwrap().is_some());
    assert_eq!(meta.health().await.state, StorageState::Ok);
}

#[tokio::test]
async fn a_small_tarball_on_a_full_disk_answers_no_space_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let disk = Disk::new();
    let (meta, tarballs) = stores(&data, &disk);
    let name = PackageName::parse("@t/a").unwrap();
    let key = TarballKey::new(&name, &Version::new(1, 0, 0), &"ab".repeat(32));
    let small = Bytes::from(vec![1u8; 900]);

    // The tarball shares its commit with a write too big for what is left: the commit fails.
    disk.fill();
    let hold = meta.db.with(|d| Ok(d.begin_write()?)).1.unwrap();
    let mut put = {
        let (tarballs, key, small) = (tarballs.clone(), key.clone(), small.clone());
        Box::pin(async move { tarballs.put(&key, small).await })
    };
    let mut big = {
        let meta = meta.clone();
        Box::pin(async move { KvStore::put(&meta, "ns", "big", &vec![7u8; 1 << 20], None).await })
    };
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(put.as_mut().poll(&mut cx).is_pending());
    assert!(big.as_mut().poll(&mut cx).is_pending());
    drop(hold);
    let e = put.await.unwrap_err();
    assert!(no_space_in(&e, &data), "{e:?}");
    assert!(no_space_in(&big.await.unwrap_err(), &data));
    // Nothing of it is stored, nor remembered as an upload in flight.
    assert!(tarballs.get(&key).await.unwrap().is_none());
    assert!(!data.join("tarballs").join(key.as_str()).exists());
    assert_eq!(meta.db.dir.uploads().len(), 0);
    assert_eq!(meta.health().await.state, StorageState::Full);
    // Known full: the next is refused by the probe, without a failed commit.
    let reopens = meta.db.reopens();
    let e = tarballs.put(&key, small.clone()).await.unwrap_err();
    assert!(no_space_in(&e, &data), "{e:?}");
    assert_eq!(meta.db.reopens(), reopens);

    disk.free();
    tarballs.put(&key, small.clone()).await.unwrap();
    assert_eq!(tarballs.read(&key).await.unwrap(), Some(small));
    assert_eq!(meta.health().await.state, StorageState::Ok);
}

/// A publish of a minimal package, as npm sends it (the builders of `crate::testing`).
fn publish_body(name: &str, version: &str) -> Vec<u8> {
    let tarball = crate::testing::package_tgz(name, version);
    serde_json::to_vec(&crate::testing::publish_doc(name, version, &tarball))
        .expect("a JSON document serialises")
}

async fn send(app: &axum::Router, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_server_answers_507_on_a_full_disk_serves_reads_and_writes_again_once_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_text = data.display().to_string();
    let disk = Disk::new();
    let (meta, tarballs) = stores(&data, &disk);
    let meta = Arc::new(meta);
    let config = crate::config::Config::from_lookup(|k| match k {
        "REGISTRY_DATA_DIR" => Some(data_text.clone()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        "REGISTRY_PUBLIC_URL" => Some("http://registry.test".into()),
        _ => None,
    })
    .unwrap();
    let state = crate::app::App::builder(config)
        .stores(meta.clone(), Arc::new(tarballs))
        .build()
        .await
        .unwrap();
    let app = crate::http::router(state, &crate::http::RouteGroup::ALL);
    let body = |version: &str| publish_body("@t/a", version);

    assert_eq!(
        send(&app, "PUT", "/@t%2fa", body("1.0.0")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        send(&app, "PUT", "/@t%2fb", publish_body("@t/b", "1.0.0"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, ready) = send(&app, "GET", "/-/ready", vec![]).await;
    assert_eq!((status, &ready["storage"]), (StatusCode::OK, &json!("ok")));

    disk.fill();
    // A write that reaches the database (no tarball): its commit fails for lack of space. It is
    // a large one (a 1 MB deprecation message): commits record their allocator state (quick
    // repair), so pages freed by earlier commits are reused at once, and a small write may fit
    // in the blocks the file already has, as it would on a real full disk.
    let deprecation = json!({
        "_id": "@t/a",
        "name": "@t/a",
        "versions": { "1.0.0": { "deprecated": "x".repeat(1 << 20) } },
    });
    let (status, error) = send(
        &app,
        "PUT",
        "/@t%2fa",
        serde_json::to_vec(&deprecation).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(message.contains(&data_text), "{message}");
    // A publish: its tarball cannot be written.
    let (status, error) = send(&app, "PUT", "/@t%2fa", body("1.0.1")).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{error}");
    assert!(error["error"].as_str().unwrap().contains(&data_text));
    assert_eq!(std::fs::read_dir(data.join("tmp")).unwrap().count(), 0);
    // Reads keep working, of records the failed handle never read too.
    let (status, doc) = send(&app, "GET", "/@t%2fb", vec![]).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let (status, doc) = send(&app, "GET", "/@t%2fa", vec![]).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["dist-tags"], json!({"latest": "1.0.0"}));
    assert_eq!(doc["versions"]["1.0.0"]["deprecated"], Value::Null);
    assert_eq!(
        send(&app, "GET", "/@t/a/1.0.0", vec![]).await.0,
        StatusCode::OK
    );
    let request = Request::builder()
        .uri("/@t/a/-/a-1.0.0.tgz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    // Readiness says what is wrong, since when and where.
    let (status, ready) = send(&app, "GET", "/-/ready", vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["storage"], "full");
    assert_eq!(ready["data_dir"], data_text.as_str());
    assert!(ready["since"].is_string(), "{ready}");
    assert!(
        ready["error"].as_str().unwrap().contains(&data_text),
        "{ready}"
    );
    assert_eq!(send(&app, "GET", "/-/ping", vec![]).await.0, StatusCode::OK);

    // Space is freed: no restart, nothing reopened by hand.
    disk.free();
    let (status, ready) = send(&app, "GET", "/-/ready", vec![]).await;
    assert_eq!(
        (status, &ready["storage"]),
        (StatusCode::OK, &json!("ok")),
        "{ready}"
    );
    assert_eq!(
        send(&app, "PUT", "/@t%2fa", body("1.0.1")).await.0,
        StatusCode::CREATED
    );
    let (status, _) = send(
        &app,
        "PUT",
        "/-/package/@t%2fa/dist-tags/beta",
        b"\"1.0.0\"".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, doc) = send(&app, "GET", "/@t%2fa", vec![]).await;
    assert_eq!(
        doc["dist-tags"],
        json!({"latest": "1.0.1", "beta": "1.0.0"})
    );
    assert_eq!(doc["versions"].as_object().unwrap().len(), 2);
}
