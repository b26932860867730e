//! The embedded store: group commit keeps each write's own semantics; expired key-value entries are
//! deleted; what interrupted writes left in `tmp` is removed, and only by the data directory's owner.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use chrono::Utc;
use futures_util::StreamExt;
use semver::Version;

use super::*;
use crate::domain::{Dist, LiveVersion, VersionState};
use crate::storage::{CreateMode, KvStore, RenderStore, VersionChange};
use redb::Database;

fn record(name: &PackageName, version: &str) -> VersionRecord {
    let version = Version::parse(version).unwrap();
    VersionRecord {
        state: VersionState::Live(Box::new(LiveVersion {
            manifest: crate::domain::Manifest::from_map(&serde_json::Map::new()).unwrap(),
            dist: Dist {
                shasum: "0".repeat(40),
                integrity: "sha512-AAAA".into(),
                file_count: 1,
                unpacked_size: 1,
                tarball_key: TarballKey::new(name, &version, &"ab".repeat(32)),
                signatures: Vec::new(),
                provenance: None,
            },
            readme_filename: None,
            has_readme: None,
            deprecated: None,
        })),
        version,
        published: Utc::now(),
    }
}

/// A write creating `version`, conditioned on the package being at `expected` revision.
pub(super) fn create(name: &PackageName, version: &str, expected: Option<u64>) -> PackageWrite {
    let mut package = PackageRecord::new(name.clone(), Utc::now());
    package.revision = expected.map_or(1, |r| r + 1);
    PackageWrite {
        package,
        expected_revision: expected,
        create: Some((record(name, version), CreateMode::CreateOnly)),
        readme: Some(format!("readme of {version}")),
        changes: Vec::new(),
        search: crate::storage::SearchChange::Keep,
        tarball: None,
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Polls each write once, so that all are queued (in this order) before any is awaited.
fn queue_all(futures: &mut [Pending]) {
    let mut cx = Context::from_waker(Waker::noop());
    for f in futures.iter_mut() {
        assert!(matches!(f.as_mut().poll(&mut cx), Poll::Pending));
    }
}

/// A store in a fresh directory (kept alive by the returned guard).
fn fresh_store() -> (tempfile::TempDir, EmbeddedMetadata) {
    let dir = tempfile::tempdir().unwrap();
    let meta = EmbeddedMetadata::open(&dir.path().join("m.redb")).unwrap();
    (dir, meta)
}

#[tokio::test]
async fn a_shared_commit_keeps_each_writes_conditions() {
    let (_dir, meta) = fresh_store();
    let a = PackageName::parse("@t/a").unwrap();
    let b = PackageName::parse("@t/b").unwrap();

    // Hold the database's write lock so that every write below queues behind it.
    let hold = meta.db.with(|d| Ok(d.begin_write()?)).1.unwrap();
    let commits_before = meta.commits();
    let mut writes: Vec<Pending> = Vec::new();
    let submit = |w: PackageWrite| -> Pending {
        let meta = meta.clone();
        Box::pin(async move { meta.write(w).await })
    };
    writes.push(submit(create(&a, "1.0.0", None)));
    // Refused after the first write of the batch: it must change nothing...
    let mut bad = create(&a, "1.0.0", Some(1));
    bad.create = None;
    bad.changes = vec![VersionChange::Deprecate(
        Version::new(9, 9, 9),
        Some("gone".into()),
    )];
    writes.push(submit(bad));
    // ...so this one, conditioned on revision 1, still commits.
    writes.push(submit(create(&a, "1.0.1", Some(1))));
    // Ten racing first publishes of the same package: exactly one wins.
    for _ in 0..10 {
        writes.push(submit(create(&b, "1.0.0", None)));
    }
    queue_all(&mut writes);
    drop(hold);
    let mut results = Vec::new();
    for w in writes {
        results.push(w.await);
    }

    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(StoreError::NoSuchVersion(_))),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let b_wins = results[3..].iter().filter(|r| r.is_ok()).count();
    assert_eq!(b_wins, 1, "{:?}", &results[3..]);
    assert!(
        results[3..]
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(StoreError::RevisionConflict)))
    );
    // All thirteen writes were queued behind the held lock: at most two commits took them.
    let commits = meta.commits() - commits_before;
    assert!((1..=2).contains(&commits), "{commits} commits");

    let doc = meta.document(&a).await.unwrap().unwrap();
    assert_eq!(doc.package.revision, 2);
    let versions: Vec<String> = doc.versions.iter().map(|v| v.version.to_string()).collect();
    assert_eq!(versions, ["1.0.0", "1.0.1"]);
    assert_eq!(meta.document(&b).await.unwrap().unwrap().versions.len(), 1);
}

#[tokio::test]
async fn writes_are_durable_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.redb");
    let name = PackageName::parse("@t/durable").unwrap();
    {
        let meta = EmbeddedMetadata::open(&path).unwrap();
        meta.write(create(&name, "1.0.0", None)).await.unwrap();
        KvStore::put(&meta, "ns", "id", b"value", None)
            .await
            .unwrap();
    }
    // Dropping the store stops its writer and releases the file, so it opens again at once.
    let meta = EmbeddedMetadata::open(&path).unwrap();
    assert_eq!(meta.package(&name).await.unwrap().unwrap().revision, 1);
    assert_eq!(
        KvStore::get(&meta, "ns", "id").await.unwrap().as_deref(),
        Some(&b"value"[..])
    );
    KvStore::delete(&meta, "ns", "id").await.unwrap();
    assert_eq!(KvStore::get(&meta, "ns", "id").await.unwrap(), None);
}

#[tokio::test]
async fn package_reads_follow_every_write() {
    let (_dir, meta) = fresh_store();
    let name = PackageName::parse("@t/cached").unwrap();
    let other = PackageName::parse("@t/other").unwrap();
    assert_eq!(meta.package(&name).await.unwrap(), None);
    meta.write(create(&name, "1.0.0", None)).await.unwrap();
    for _ in 0..2 {
        // The second read is answered from the record cache.
        assert_eq!(meta.package(&name).await.unwrap().unwrap().revision, 1);
    }
    meta.write(create(&name, "1.0.1", Some(1))).await.unwrap();
    assert_eq!(meta.package(&name).await.unwrap().unwrap().revision, 2);
    // A refused write and a write to another package leave it right, too.
    assert!(meta.write(create(&name, "1.0.2", Some(1))).await.is_err());
    meta.write(create(&other, "1.0.0", None)).await.unwrap();
    assert_eq!(meta.package(&name).await.unwrap().unwrap().revision, 2);
    assert_eq!(meta.package(&other).await.unwrap().unwrap().revision, 1);
}

/// Whether the key-value table holds `(namespace, id)` at all, expired or not.
fn kv_row_exists(meta: &EmbeddedMetadata, namespace: &str, id: &str) -> bool {
    meta.db
        .read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(KV)?;
            Ok(table.get((namespace, id))?.is_some())
        })
        .unwrap()
}

#[tokio::test]
async fn expired_entries_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.redb");
    let past = Utc::now() - chrono::Duration::seconds(1);
    let future = Utc::now() + chrono::Duration::hours(1);
    {
        let meta = EmbeddedMetadata::open(&path).unwrap();
        KvStore::put(&meta, "cache", "old", b"1", Some(past))
            .await
            .unwrap();
        KvStore::put(&meta, "cache", "fresh", b"2", Some(future))
            .await
            .unwrap();
        KvStore::put(&meta, "tokens", "forever", b"3", None)
            .await
            .unwrap();
        assert!(
            kv_row_exists(&meta, "cache", "old"),
            "reads skip it; it is still stored"
        );
    }
    let meta = EmbeddedMetadata::open(&path).unwrap();
    // The writer purges before it takes its first write: once one is answered, it is done.
    KvStore::put(&meta, "other", "x", b"4", None).await.unwrap();
    assert!(!kv_row_exists(&meta, "cache", "old"));
    assert!(kv_row_exists(&meta, "cache", "fresh"));
    assert!(kv_row_exists(&meta, "tokens", "forever"));
}

#[tokio::test]
async fn expired_entries_are_deleted_while_running_a_bounded_batch_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = Arc::new(DataDir::new(dir.path()));
    // Purging between every two batches: the periodic purge, without waiting for its period.
    let meta = EmbeddedMetadata::open_in(
        data,
        &dir.path().join("m.redb"),
        open_file(Settings::default()),
        true,
        Duration::ZERO,
    )
    .unwrap();
    let past = Utc::now() - chrono::Duration::seconds(1);
    // More than one purge step scans, so the purge has to resume where it stopped.
    let count = writer::PURGE_SCAN + 500;
    let puts: Vec<_> = (0..count)
        .map(|i| {
            let meta = meta.clone();
            async move {
                let expires = (i % 2 == 0).then_some(past);
                KvStore::put(&meta, "cache", &format!("{i:05}"), b"v", expires).await
            }
        })
        .collect();
    for put in futures_util::future::join_all(puts).await {
        put.unwrap();
    }
    // Each write waits for the purge step before it; a few rounds cover the whole table.
    for round in 0..4 {
        KvStore::put(&meta, "sync", &round.to_string(), b"", None)
            .await
            .unwrap();
    }
    let left: Vec<usize> = (0..count)
        .filter(|i| kv_row_exists(&meta, "cache", &format!("{i:05}")))
        .collect();
    assert!(
        left.iter().all(|i| i % 2 == 1),
        "expired entries left: {:?}",
        left.iter()
            .filter(|i| *i % 2 == 0)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(left.len(), count / 2);
}

#[tokio::test]
async fn open_removes_what_interrupted_writes_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("tmp")).unwrap();
    let leftover = data.join("tmp").join(".tmpKilled");
    std::fs::write(&leftover, vec![1u8; 10_000]).unwrap();
    let (_meta, _tarballs) = open(&data).unwrap();
    assert!(!leftover.exists());
}

#[tokio::test]
async fn a_second_open_of_a_live_data_directory_fails_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_meta, _tarballs) = open(&data).unwrap();
    let in_flight = data.join("tmp").join(".tmpInFlight");
    std::fs::write(&in_flight, b"half").unwrap();
    assert!(open(&data).is_err(), "redb must refuse a second handle");
    assert!(in_flight.exists());
}

#[tokio::test]
async fn sweep_removes_old_leftovers_and_keeps_writes_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (meta, tarballs) = open(&data).unwrap();
    let stale = data.join("tmp").join(".tmpStale");
    std::fs::write(&stale, b"killed an hour ago").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let in_flight = data.join("tmp").join(".tmpInFlight");
    std::fs::write(&in_flight, b"being written").unwrap();
    let report = crate::storage::sweep(&meta, &tarballs, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.incomplete, 1);
    assert!(!stale.exists());
    assert!(in_flight.exists());
}

#[tokio::test]
async fn readmes_live_apart_from_version_records() {
    let (_dir, meta) = fresh_store();
    let name = PackageName::parse("@t/readme").unwrap();
    meta.write(create(&name, "1.0.0", None)).await.unwrap();
    let v1 = Version::new(1, 0, 0);
    assert_eq!(
        meta.readme(&name, &v1).await.unwrap().as_deref(),
        Some("readme of 1.0.0")
    );
    // The version record itself holds no README: reading versions never decodes one.
    let stored = meta
        .db
        .read(|d| {
            let txn = d.begin_read()?;
            let table = txn.open_table(VERSIONS)?;
            let value = table.get(("@t/readme", "1.0.0"))?.unwrap();
            Ok(value.value().to_vec())
        })
        .unwrap();
    assert!(!String::from_utf8(stored).unwrap().contains("readme of"));

    // An overwrite without a README removes the old one; an unpublish removes it too.
    let mut overwrite = create(&name, "1.0.0", Some(1));
    overwrite.create.as_mut().unwrap().1 = CreateMode::AllowOverwrite;
    overwrite.readme = None;
    meta.write(overwrite).await.unwrap();
    assert_eq!(meta.readme(&name, &v1).await.unwrap(), None);
    meta.write(create(&name, "2.0.0", Some(2))).await.unwrap();
    let v2 = Version::new(2, 0, 0);
    let mut unpublish = create(&name, "0.0.0", Some(3));
    unpublish.create = None;
    unpublish.changes = vec![VersionChange::Unpublish(v2.clone(), Utc::now())];
    meta.write(unpublish).await.unwrap();
    assert_eq!(meta.readme(&name, &v2).await.unwrap(), None);
}

#[tokio::test]
async fn a_file_of_the_older_layout_gets_its_readmes_moved_apart_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.redb");
    let name = PackageName::parse("@t/old").unwrap();
    // Layout 1: the README inside the version record, no `meta` or `readmes` table.
    {
        let mut package = PackageRecord::new(name.clone(), Utc::now());
        package.revision = 1;
        package
            .dist_tags
            .insert(crate::domain::DistTag::latest(), Version::new(1, 0, 0));
        let mut old = serde_json::to_value(record(&name, "1.0.0")).unwrap();
        old["state"]["readme"] = serde_json::json!("# the old README");
        let mut bare = serde_json::to_value(record(&name, "1.0.1")).unwrap();
        bare["state"]["readme"] = serde_json::Value::Null;
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut packages = txn.open_table(PACKAGES).unwrap();
            packages
                .insert("@t/old", encode(&package).unwrap().as_slice())
                .unwrap();
            let mut versions = txn.open_table(VERSIONS).unwrap();
            for (version, value) in [("1.0.0", &old), ("1.0.1", &bare)] {
                versions
                    .insert(("@t/old", version), encode(value).unwrap().as_slice())
                    .unwrap();
            }
            txn.open_table(KV).unwrap();
        }
        txn.commit().unwrap();
    }
    let meta = EmbeddedMetadata::open(&path).unwrap();
    assert_eq!(
        meta.readme(&name, &Version::new(1, 0, 0))
            .await
            .unwrap()
            .as_deref(),
        Some("# the old README")
    );
    assert_eq!(
        meta.readme(&name, &Version::new(1, 0, 1)).await.unwrap(),
        None
    );
    let doc = meta.document(&name).await.unwrap().unwrap();
    assert_eq!(doc.versions.len(), 2);
    let layout = meta
        .db
        .read(|d| {
            let txn = d.begin_read()?;
            let meta_table = txn.open_table(META)?;
            Ok(meta_table.get("layout")?.map(|v| v.value()))
        })
        .unwrap();
    assert_eq!(layout, Some(LAYOUT));
    // Layout 3: the search entry of each package, made from its latest version and README.
    let entries = meta.search_entries().await.unwrap().entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, name);
    assert_eq!(entries[0].version, Version::new(1, 0, 0));
    assert!(
        entries[0].readme_terms.contains(&"readme".to_string()),
        "{:?}",
        entries[0]
    );
}

#[test]
fn the_sweep_reads_a_version_records_tarball_key_and_state_alone() {
    let name = PackageName::parse("@t/keys").unwrap();
    let live = record(&name, "1.0.0");
    let VersionState::Live(l) = &live.state else {
        unreachable!()
    };
    let bytes = encode(&live).unwrap();
    assert_eq!(
        sweep::referenced_key(&bytes).unwrap().as_deref(),
        Some(l.dist.tarball_key.as_str())
    );
    let mut gone = live.clone();
    gone.state = VersionState::Unpublished { at: Utc::now() };
    assert_eq!(
        sweep::referenced_key(&encode(&gone).unwrap()).unwrap(),
        None
    );
    // A record it cannot read stops the sweep rather than count as referring to nothing.
    assert!(sweep::referenced_key(br#"{"state":{"state":"live"}}"#).is_err());
    assert!(sweep::referenced_key(br#"{"version":"1.0.0"}"#).is_err());
}

/// A version of `name` whose tarball is `digest`'s, as a publish writes it.
fn create_with_tarball(
    name: &PackageName,
    version: &str,
    digest: &str,
    expected: Option<u64>,
) -> (PackageWrite, TarballKey) {
    let mut write = create(name, version, expected);
    let key = TarballKey::new(name, &Version::parse(version).unwrap(), digest);
    if let Some((record, _)) = &mut write.create
        && let VersionState::Live(live) = &mut record.state
    {
        live.dist.tarball_key = key.clone();
    }
    (write, key)
}

/// Whether `tarballs` serves anything under `key`, a row or a file.
async fn served(tarballs: &EmbeddedTarballs, key: &TarballKey) -> bool {
    tarballs.get(key).await.unwrap().is_some()
}

/// Whether the database holds a small tarball under `key`, with its time.
fn row_exists(meta: &EmbeddedMetadata, key: &TarballKey) -> bool {
    meta.db
        .read(|db| {
            let txn = db.begin_read()?;
            let bytes = match txn.open_table(TARBALLS) {
                Ok(table) => table.get(key.as_str())?.is_some(),
                Err(redb::TableError::TableDoesNotExist(_)) => false,
                Err(e) => return Err(e.into()),
            };
            let time = match txn.open_table(TARBALL_TIMES) {
                Ok(table) => table.get(key.as_str())?.is_some(),
                Err(redb::TableError::TableDoesNotExist(_)) => false,
                Err(e) => return Err(e.into()),
            };
            assert_eq!(bytes, time, "a small tarball's bytes and time go together");
            Ok(bytes)
        })
        .unwrap()
}

#[tokio::test]
async fn a_sweep_beside_publishes_keeps_their_tarballs_and_removes_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (meta, tarballs) = open(&data).unwrap();
    let name = PackageName::parse("@t/swept").unwrap();
    let file = |key: &TarballKey| data.join("tarballs").join(key.as_str());

    // Published and committed.
    let (write, committed) = create_with_tarball(&name, "1.0.0", &"a1".repeat(32), None);
    tarballs
        .put(&committed, Bytes::from_static(b"one"))
        .await
        .unwrap();
    meta.write(write).await.unwrap();
    // Stored, its version not committed yet: a publish in flight.
    let (in_flight_write, in_flight) =
        create_with_tarball(&name, "1.0.1", &"b2".repeat(32), Some(1));
    tarballs
        .put(&in_flight, Bytes::from_static(b"two"))
        .await
        .unwrap();
    // Left by a publish that crashed (another process's, of an older release that stored every
    // tarball as a file).
    let orphan = TarballKey::new(&name, &Version::new(1, 0, 2), &"c3".repeat(32));
    std::fs::create_dir_all(file(&orphan).parent().unwrap()).unwrap();
    std::fs::write(file(&orphan), b"three").unwrap();
    // Stored and given up on: the publish deleted it (a lost race).
    let (_, lost) = create_with_tarball(&name, "1.0.3", &"d4".repeat(32), Some(1));
    tarballs
        .put(&lost, Bytes::from_static(b"four"))
        .await
        .unwrap();
    tarballs.delete(&lost).await.unwrap();
    assert!(!served(&tarballs, &lost).await && !row_exists(&meta, &lost));

    let report = crate::storage::sweep(&meta, &tarballs, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(report.checked, 3);
    assert_eq!(report.removed, vec![orphan.clone()]);
    assert!(served(&tarballs, &committed).await);
    assert!(
        row_exists(&meta, &in_flight),
        "a publish in flight lost its tarball to the sweep"
    );
    assert!(!file(&orphan).exists());
    assert_eq!(meta.db.dir.uploads().len(), 1, "only the upload in flight");

    // Its version committed, the upload is forgotten and the version protects the tarball.
    meta.write(in_flight_write).await.unwrap();
    assert_eq!(meta.db.dir.uploads().len(), 0);
    let report = crate::storage::sweep(&meta, &tarballs, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((report.checked, report.removed.len()), (2, 0));
    assert!(served(&tarballs, &in_flight).await);
}

#[tokio::test]
async fn small_tarballs_live_in_the_database_and_big_ones_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (meta, tarballs) = open(&data).unwrap();
    let name = PackageName::parse("@t/sizes").unwrap();
    let file = |key: &TarballKey| data.join("tarballs").join(key.as_str());
    let small_key = TarballKey::new(&name, &Version::new(1, 0, 0), &"a1".repeat(32));
    let big_key = TarballKey::new(&name, &Version::new(2, 0, 0), &"b2".repeat(32));
    let edge_key = TarballKey::new(&name, &Version::new(3, 0, 0), &"c3".repeat(32));
    let streamed_key = TarballKey::new(&name, &Version::new(4, 0, 0), &"d4".repeat(32));
    // Not one repeated byte, so that a misplaced slice shows.
    let pattern = |len: usize| -> Bytes { (0..=250u8).cycle().take(len).collect() };
    let whole = READ_WHOLE_TARBALL_BYTES;
    let (small, big, edge, streamed) = (
        pattern(900),
        pattern(whole),
        pattern(SMALL_TARBALL_BYTES + 1),
        pattern(3 * whole + 7),
    );

    tarballs.put(&small_key, small.clone()).await.unwrap();
    tarballs.put(&big_key, big.clone()).await.unwrap();
    tarballs.put(&edge_key, edge.clone()).await.unwrap();
    tarballs.put(&streamed_key, streamed.clone()).await.unwrap();
    assert!(row_exists(&meta, &small_key));
    assert!(!file(&small_key).exists(), "a small tarball made a file");
    assert!(file(&big_key).exists() && !row_exists(&meta, &big_key));
    assert!(file(&edge_key).exists() && !row_exists(&meta, &edge_key));
    assert!(file(&streamed_key).exists() && !row_exists(&meta, &streamed_key));
    // No version refers to them yet: their uploads are remembered.
    assert_eq!(meta.db.dir.uploads().len(), 4);

    // Byte for byte, and with the right length, whichever way each is stored; files up to
    // READ_WHOLE_TARBALL_BYTES come in one piece (read in the hand-off that found them), bigger
    // ones streamed.
    for (key, bytes, pieces) in [
        (&small_key, &small, 1..=1),
        (&big_key, &big, 1..=1),
        (&edge_key, &edge, 1..=1),
        (&streamed_key, &streamed, 4..=usize::MAX),
    ] {
        let Some(TarballRead::Bytes { len, body }) = tarballs.get(key).await.unwrap() else {
            panic!("{key:?} not served as bytes");
        };
        assert_eq!(len, bytes.len() as u64);
        // A file read whole was read by then: rewriting it now (which no store does) does
        // not change what is served.
        let read_whole = file(key).exists() && *pieces.end() == 1;
        if read_whole {
            std::fs::write(file(key), vec![0u8; bytes.len()]).unwrap();
        }
        let chunks: Vec<Bytes> = body.map(Result::unwrap).collect().await;
        if read_whole {
            std::fs::write(file(key), bytes).unwrap();
        }
        assert!(
            pieces.contains(&chunks.len()),
            "{key:?}: {} pieces",
            chunks.len()
        );
        assert_eq!(chunks.concat(), bytes.as_ref());
        assert_eq!(tarballs.read(key).await.unwrap().as_ref(), Some(bytes));
    }
    let mut listed: Vec<String> = tarballs
        .list(Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    listed.sort();
    let mut expected =
        [&small_key, &big_key, &edge_key, &streamed_key].map(|k| k.as_str().to_string());
    expected.sort();
    assert_eq!(listed, expected);
    // Nothing is old enough for a cutoff an hour back.
    assert!(
        tarballs
            .list(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );

    // Durable: the same after reopening.
    drop((meta, tarballs));
    let (meta, tarballs) = open(&data).unwrap();
    assert_eq!(tarballs.read(&small_key).await.unwrap(), Some(small));
    assert_eq!(tarballs.read(&big_key).await.unwrap(), Some(big));

    for key in [&small_key, &big_key, &edge_key, &streamed_key] {
        tarballs.delete(key).await.unwrap();
        assert!(!served(&tarballs, key).await, "{key:?} still served");
        assert!(!row_exists(&meta, key) && !file(key).exists());
    }
    // Deleting what is not there succeeds.
    tarballs.delete(&small_key).await.unwrap();
}

#[tokio::test]
async fn a_tarball_file_an_older_release_stored_is_still_served_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let name = PackageName::parse("@t/old").unwrap();
    let key = TarballKey::new(&name, &Version::new(1, 0, 0), &"e5".repeat(32));
    // As an older release stored every tarball, however small.
    let path = data.join("tarballs").join(key.as_str());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"small, in a file").unwrap();

    let (meta, tarballs) = open(&data).unwrap();
    assert_eq!(
        tarballs.read(&key).await.unwrap().as_deref(),
        Some(b"small, in a file".as_slice())
    );
    assert_eq!(
        tarballs.list(Duration::ZERO).await.unwrap(),
        vec![key.clone()]
    );
    tarballs.delete(&key).await.unwrap();
    assert!(!path.exists());
    assert!(!served(&tarballs, &key).await);
    assert!(!row_exists(&meta, &key));
}

#[tokio::test]
async fn the_tarball_store_alone_keeps_every_tarball_as_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let name = PackageName::parse("@t/alone").unwrap();
    let key = TarballKey::new(&name, &Version::new(1, 0, 0), &"f6".repeat(32));
    let alone = EmbeddedTarballs::open(&data).unwrap();
    alone.put(&key, Bytes::from_static(b"tiny")).await.unwrap();
    assert!(data.join("tarballs").join(key.as_str()).exists());
    drop(alone);
    // And the stores opened together serve it.
    let (_meta, tarballs) = open(&data).unwrap();
    assert_eq!(
        tarballs.read(&key).await.unwrap().as_deref(),
        Some(b"tiny".as_slice())
    );
}

#[tokio::test]
async fn small_tarballs_stored_together_share_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, tarballs) = open(&dir.path().join("data")).unwrap();
    let name = PackageName::parse("@t/together").unwrap();
    let keys: Vec<TarballKey> = (0..8)
        .map(|n| TarballKey::new(&name, &Version::new(1, 0, n), &"ab".repeat(32)))
        .collect();
    // Hold the database's write lock so that every put below queues behind it.
    let hold = meta.db.with(|d| Ok(d.begin_write()?)).1.unwrap();
    let commits_before = meta.commits();
    let mut puts: Vec<Pending> = keys
        .iter()
        .map(|key| {
            let (tarballs, key) = (tarballs.clone(), key.clone());
            Box::pin(async move { tarballs.put(&key, Bytes::from_static(b"tgz")).await }) as Pending
        })
        .collect();
    queue_all(&mut puts);
    drop(hold);
    for put in puts {
        put.await.unwrap();
    }
    let commits = meta.commits() - commits_before;
    assert!((1..=2).contains(&commits), "{commits} commits for 8 puts");
    for key in &keys {
        assert!(row_exists(&meta, key));
    }
}

/// A small tarball staged for its version's write is stored by that write's commit, the one
/// commit of the publish, and only if the write is; a big one is stored at once, as a file.
#[tokio::test]
async fn a_staged_tarball_is_stored_with_its_version_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, tarballs) = open(&dir.path().join("data")).unwrap();
    let name = PackageName::parse("@t/staged").unwrap();

    let (mut write, key) = create_with_tarball(&name, "1.0.0", &"c3".repeat(32), None);
    let staged = tarballs
        .stage(&key, Bytes::from_static(b"staged"))
        .await
        .unwrap();
    assert!(staged.is_some(), "a small tarball is staged");
    assert!(
        !served(&tarballs, &key).await,
        "nothing stored before the write"
    );
    write.tarball = staged;
    let commits_before = meta.commits();
    meta.write(write).await.unwrap();
    assert_eq!(
        meta.commits() - commits_before,
        1,
        "one commit for the publish"
    );
    assert!(row_exists(&meta, &key));
    assert_eq!(
        tarballs.read(&key).await.unwrap().as_deref(),
        Some(b"staged".as_slice())
    );

    // A write refused (here: it expected another revision) stores nothing of its tarball.
    let (mut refused, lost) = create_with_tarball(&name, "1.0.1", &"d4".repeat(32), Some(7));
    refused.tarball = tarballs
        .stage(&lost, Bytes::from_static(b"lost"))
        .await
        .unwrap();
    assert!(matches!(
        meta.write(refused).await,
        Err(StoreError::RevisionConflict)
    ));
    assert!(!row_exists(&meta, &lost) && !served(&tarballs, &lost).await);

    // A big one is not staged: stored as a file before the write, as `put` stores it.
    let big_key = TarballKey::new(&name, &Version::new(2, 0, 0), &"e5".repeat(32));
    let big = Bytes::from(vec![7u8; SMALL_TARBALL_BYTES + 1]);
    assert!(
        tarballs
            .stage(&big_key, big.clone())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(tarballs.read(&big_key).await.unwrap(), Some(big));
}

#[tokio::test]
async fn a_crash_between_a_small_tarball_and_its_version_leaves_a_row_the_sweep_removes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let name = PackageName::parse("@t/crashed").unwrap();
    let (meta, tarballs) = open(&data).unwrap();
    let (write, kept) = create_with_tarball(&name, "1.0.0", &"a1".repeat(32), None);
    tarballs
        .put(&kept, Bytes::from_static(b"kept"))
        .await
        .unwrap();
    meta.write(write).await.unwrap();
    // Stored (durably: `put` returned), then the process dies before its version commits.
    let (_, orphan) = create_with_tarball(&name, "1.0.1", &"b2".repeat(32), Some(1));
    tarballs
        .put(&orphan, Bytes::from_static(b"orphan"))
        .await
        .unwrap();
    drop((meta, tarballs));

    let (meta, tarballs) = open(&data).unwrap();
    assert!(row_exists(&meta, &orphan), "the stored tarball was lost");
    assert_eq!(
        meta.version(&name, &Version::new(1, 0, 1)).await.unwrap(),
        None
    );
    // Young: an age cutoff keeps it (nothing in this process remembers its upload).
    let report = crate::storage::sweep(&meta, &tarballs, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!((report.checked, report.removed.len()), (2, 0));
    assert!(row_exists(&meta, &orphan));
    let report = crate::storage::sweep(&meta, &tarballs, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((report.checked, report.removed), (2, vec![orphan.clone()]));
    assert!(!row_exists(&meta, &orphan) && !served(&tarballs, &orphan).await);
    assert!(
        served(&tarballs, &kept).await,
        "a referenced tarball was swept"
    );
}

#[tokio::test]
async fn the_sweep_of_small_tarballs_goes_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, tarballs) = open(&dir.path().join("data")).unwrap();
    // More than two pages of keys, over packages of 7 that straddle the pages' ends; each
    // package's 1.0.0 is published, its other tarballs are orphans. Stored side by side, so
    // that they share commits.
    let count = sweep::SWEEP_PAGE * 2 + 10;
    let mut stores = tokio::task::JoinSet::new();
    for n in 0..count {
        let name = PackageName::parse(&format!("@t/p{}", n / 7)).unwrap();
        let (write, key) =
            create_with_tarball(&name, &format!("1.0.{}", n % 7), &"ab".repeat(32), None);
        let (meta, tarballs) = (meta.clone(), tarballs.clone());
        stores.spawn(async move {
            tarballs
                .put(&key, Bytes::from_static(b"tgz"))
                .await
                .unwrap();
            if n % 7 == 0 {
                meta.write(write).await.unwrap();
                None
            } else {
                // Not claimed by a publish in flight: the age cutoff alone decides.
                tarballs.stored_for_later(&key).await;
                Some(key)
            }
        });
    }
    let mut orphans: Vec<TarballKey> = stores.join_all().await.into_iter().flatten().collect();
    assert_eq!(meta.db.dir.uploads().len(), 0);
    let mut report = crate::storage::sweep(&meta, &tarballs, Duration::ZERO)
        .await
        .unwrap();
    report.removed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    orphans.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(report.checked, count);
    assert_eq!(report.removed, orphans);
    assert_eq!(
        tarballs.list(Duration::ZERO).await.unwrap().len(),
        count - orphans.len()
    );
}

#[tokio::test]
async fn a_sweep_keeps_young_orphans_and_stops_on_a_record_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (meta, tarballs) = open(&data).unwrap();
    let name = PackageName::parse("@t/young").unwrap();
    let orphan = TarballKey::new(&name, &Version::new(1, 0, 0), &"e5".repeat(32));
    let path = data.join("tarballs").join(orphan.as_str());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"young").unwrap();
    let report = crate::storage::sweep(&meta, &tarballs, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!((report.checked, report.removed.len()), (1, 0));
    assert!(path.exists());

    // A version record in a shape the sweep does not know: nothing is deleted.
    meta.db
        .with(|db| {
            let txn = begin_write(db, true)?;
            txn.open_table(VERSIONS)?.insert(
                ("@t/young", "1.0.0"),
                br#"{"state":{"kind":"live"}}"#.as_slice(),
            )?;
            txn.commit()?;
            Ok(())
        })
        .1
        .unwrap();
    assert!(
        crate::storage::sweep(&meta, &tarballs, Duration::ZERO)
            .await
            .is_err()
    );
    assert!(path.exists());
}

#[test]
fn this_processs_temporary_files_are_never_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    std::fs::create_dir_all(data.tmp()).unwrap();
    let target = dir.path().join("file");
    // A write of this process in flight: its temporary file, as `write_file` names it.
    let ours = tempfile::Builder::new()
        .prefix(&data.tmp_prefix)
        .tempfile_in(data.tmp())
        .unwrap();
    let theirs = data.tmp().join(".tmpOtherProcess");
    std::fs::write(&theirs, b"left by a kill").unwrap();
    assert_eq!(data.remove_leftovers(Duration::ZERO).unwrap(), 1);
    assert!(ours.path().exists());
    assert!(!theirs.exists());
    data.write_file(&target, b"done").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"done");
}

#[test]
fn the_record_cache_is_bounded_by_the_bytes_of_its_records() {
    let cache = RecordCache::default();
    let name = PackageName::parse("@t/record").unwrap();
    let record = PackageRecord::new(name, Utc::now());
    let each = RECORD_CACHE_LARGEST;
    let fit = RECORD_CACHE_BYTES / each;
    for i in 0..fit {
        cache.put(&format!("@t/p{i}"), 0, &record, each);
    }
    assert!(cache.get("@t/p0", 0).is_some());
    // Replacing an entry counts its new size only.
    cache.put("@t/p1", 0, &record, each);
    assert!(cache.get("@t/p0", 0).is_some());
    // Past the budget, the cache starts over.
    cache.put("@t/last", 0, &record, 1);
    assert!(cache.get("@t/p0", 0).is_none());
    assert!(cache.get("@t/last", 0).is_some());
    // Too large to cache at all.
    cache.put("@t/huge", 0, &record, RECORD_CACHE_LARGEST + 1);
    assert!(cache.get("@t/huge", 0).is_none());
    assert!(cache.get("@t/last", 0).is_some());
}

/// Kept renders read back as written, per package and key; a file cut short or changed reads as
/// absent (the package is then built from its records), and so does one never written.
#[tokio::test]
async fn kept_renders_read_back_whole_or_not_at_all() {
    let (_dir, meta) = fresh_store();
    let (a, b) = (
        PackageName::parse("@s/a").unwrap(),
        PackageName::parse("@s/b").unwrap(),
    );
    assert!(meta.kept_render(&a, "full x").await.unwrap().is_none());
    let render: Vec<u8> = (0..100_000u32).flat_map(u32::to_le_bytes).collect();
    meta.keep_render(&a, "full x", 1, render.clone(), None)
        .await
        .unwrap();
    meta.keep_render(&a, "abbreviated x", 1, vec![1, 2, 3], None)
        .await
        .unwrap();
    flushed(&meta).await;
    let kept = meta.kept_render(&a, "full x").await.unwrap().unwrap();
    assert_eq!(kept.as_ref(), render.as_slice());
    let other = meta
        .kept_render(&a, "abbreviated x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.as_ref(), [1, 2, 3]);
    assert!(meta.kept_render(&b, "full x").await.unwrap().is_none());

    let path = meta.db.dir.render_path(&a, "full x");
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    assert!(meta.kept_render(&a, "full x").await.unwrap().is_none());
    let mut changed = whole.clone();
    changed[1000] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    assert!(meta.kept_render(&a, "full x").await.unwrap().is_none());
    std::fs::write(&path, [0u8; 3]).unwrap();
    assert!(meta.kept_render(&a, "full x").await.unwrap().is_none());
    // Kept again, it replaces the damaged file.
    meta.keep_render(&a, "full x", 1, render.clone(), None)
        .await
        .unwrap();
    let kept = meta.kept_render(&a, "full x").await.unwrap().unwrap();
    assert_eq!(kept.as_ref(), render.as_slice());
}

/// Waits until every write queued before it (`Writer::submit`) is committed: the writer takes
/// them in order.
async fn flushed(meta: &EmbeddedMetadata) {
    meta.put("test", "flush", b"", None).await.unwrap();
}

/// A small render is kept in the database (queued with the writes, in order), a big one as a
/// file; a package whose render grew past the limit is marked in the database, so that the
/// small render it kept before is not found first, and a write's lookup of small renders never
/// opens the file.
#[tokio::test]
async fn small_renders_live_in_the_database_and_big_ones_in_files() {
    let (_dir, meta) = fresh_store();
    let a = PackageName::parse("@s/a").unwrap();
    assert_eq!(
        meta.kept_small_render(&a, "k").await.unwrap(),
        KeptSmall::Nothing
    );
    meta.keep_render(&a, "k", 1, vec![1; 100], None)
        .await
        .unwrap();
    meta.keep_render(&a, "k", 2, vec![2; 100], None)
        .await
        .unwrap();
    flushed(&meta).await;
    let path = meta.db.dir.render_path(&a, "k");
    assert!(!path.exists(), "small: no file");
    let KeptSmall::Render(small) = meta.kept_small_render(&a, "k").await.unwrap() else {
        panic!("a small render is kept in the database");
    };
    assert_eq!(small.as_ref(), [2; 100], "the later of two keeps");
    assert_eq!(meta.kept_render(&a, "k").await.unwrap().unwrap(), small);

    let big = vec![3; SMALL_RENDER_BYTES + 1];
    meta.keep_render(&a, "k", 7, big.clone(), None)
        .await
        .unwrap();
    flushed(&meta).await;
    assert!(path.exists(), "big: a file");
    assert_eq!(
        meta.kept_small_render(&a, "k").await.unwrap(),
        KeptSmall::Big { base: Some(7) },
        "marked big, with the revision the file shows"
    );
    assert_eq!(meta.kept_render(&a, "k").await.unwrap().unwrap(), big);
    // The mark as releases before the revision was recorded wrote it.
    meta.keep_render(&a, "k", 0, Vec::new(), None)
        .await
        .unwrap();
    flushed(&meta).await;
    assert_eq!(
        meta.kept_small_render(&a, "k").await.unwrap(),
        KeptSmall::Big { base: None }
    );

    // Smaller again (versions unpublished): kept in the database, found before the file.
    meta.keep_render(&a, "k", 8, vec![4; 10], None)
        .await
        .unwrap();
    flushed(&meta).await;
    assert_eq!(
        meta.kept_render(&a, "k").await.unwrap().unwrap(),
        vec![4; 10]
    );
}

/// A package's record and its kept small render are read together, the render only if it is
/// within the size asked for (a bigger one, or the mark of a big one, is read later, as before);
/// the same on the async worker and, once reads have gone to the disk, on the blocking pool; a
/// record served from the record cache comes with its render too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_and_its_small_render_are_read_together() {
    let (_dir, meta) = fresh_store();
    let a = PackageName::parse("@s/a").unwrap();
    assert_eq!(
        meta.package_and_small_render(&a, "k", 64).await.unwrap(),
        None
    );
    meta.write(create(&a, "1.0.0", None)).await.unwrap();
    let revision_of = |read: Option<(PackageRecord, Option<Bytes>)>| {
        let (record, render) = read.expect("the package exists");
        (record.revision, render)
    };
    assert_eq!(
        revision_of(meta.package_and_small_render(&a, "k", 64).await.unwrap()),
        (1, None),
        "nothing kept"
    );
    meta.keep_render(&a, "k", 1, vec![5; 64], None)
        .await
        .unwrap();
    flushed(&meta).await;
    for off_the_workers in [false, true] {
        if off_the_workers {
            meta.place.went_to_disk(std::time::Instant::now());
            assert!(!meta.place.in_place());
        }
        // Read from the database (a fresh store has no record cached), then from the cache.
        let fresh = EmbeddedMetadata {
            records: Arc::default(),
            ..meta.clone()
        };
        for _ in 0..2 {
            assert_eq!(
                revision_of(fresh.package_and_small_render(&a, "k", 64).await.unwrap()),
                (1, Some(Bytes::from(vec![5; 64])))
            );
            assert_eq!(
                revision_of(fresh.package_and_small_render(&a, "k", 63).await.unwrap()),
                (1, None),
                "bigger than asked for: left for later"
            );
        }
        assert_eq!(fresh.package(&a).await.unwrap().unwrap().revision, 1);
    }
    meta.keep_render(&a, "k", 9, Vec::new(), None)
        .await
        .unwrap();
    flushed(&meta).await;
    assert_eq!(
        revision_of(meta.package_and_small_render(&a, "k", 64).await.unwrap()),
        (1, None),
        "the mark of a big render is not a render"
    );
}

/// Each write that lists what it touched is logged in its own transaction; `touched_after`
/// answers the versions touched after a revision up to the first write not logged (or logged
/// for the package as it was before it was created again), and keeping a render lets go of the
/// rows up to the revision it is asked to.
#[tokio::test]
async fn the_touch_log_lists_every_write_until_a_render_is_kept() {
    let (_dir, meta) = fresh_store();
    let a = PackageName::parse("@s/a").unwrap();
    let created = Utc::now();
    let mut package = PackageRecord::new(a.clone(), created);
    let write = |package: &mut PackageRecord, version: &str, listed: bool| {
        package.revision += 1;
        let expected = (package.revision > 1).then(|| package.revision - 1);
        let mut write = create(&a, version, expected);
        if listed {
            let v = Version::parse(version).unwrap();
            package.touched.record(package.revision, [&v]);
        }
        write.package = package.clone();
        write
    };
    for minor in 0..4 {
        meta.write(write(&mut package, &format!("1.{minor}.0"), true))
            .await
            .unwrap();
    }
    let millis = created.timestamp_millis();
    let since = meta.touched_after(&a, millis, 1).await.unwrap();
    assert_eq!(since.through, 4);
    let listed: Vec<String> = since.versions.iter().map(Version::to_string).collect();
    assert_eq!(listed, ["1.1.0", "1.2.0", "1.3.0"]);
    assert_eq!(meta.touched_after(&a, millis, 4).await.unwrap().through, 4);
    assert_eq!(
        meta.touched_after(&a, millis + 1, 1).await.unwrap().through,
        1,
        "another package of that name"
    );

    // A write whose record does not list what it touched ends what the log can tell.
    let mut unlisted = write(&mut package, "1.4.0", false);
    unlisted.package.touched = crate::domain::Touched::default();
    meta.write(unlisted).await.unwrap();
    package.touched = crate::domain::Touched::default();
    meta.write(write(&mut package, "1.5.0", true))
        .await
        .unwrap();
    assert_eq!(meta.touched_after(&a, millis, 1).await.unwrap().through, 4);
    assert_eq!(meta.touched_after(&a, millis, 5).await.unwrap().through, 6);

    // A render kept without letting the log go leaves it; one that lets it go up to 3 does.
    meta.keep_render(&a, "k", 3, vec![1; 10], None)
        .await
        .unwrap();
    flushed(&meta).await;
    assert_eq!(meta.touched_after(&a, millis, 1).await.unwrap().through, 4);
    meta.keep_render(&a, "k", 3, vec![1; 10], Some(3))
        .await
        .unwrap();
    flushed(&meta).await;
    assert_eq!(meta.touched_after(&a, millis, 1).await.unwrap().through, 1);
    let since = meta.touched_after(&a, millis, 3).await.unwrap();
    assert_eq!((since.through, since.versions.len()), (4, 1));
}

/// `versions` reads several records of one package together, in the order asked, a missing
/// one as `None`.
#[tokio::test]
async fn versions_read_together_in_the_order_asked() {
    let (_dir, meta) = fresh_store();
    let a = PackageName::parse("@s/a").unwrap();
    meta.write(create(&a, "1.0.0", None)).await.unwrap();
    meta.write(create(&a, "2.0.0", Some(1))).await.unwrap();
    let asked: Vec<Version> = ["2.0.0", "3.0.0", "1.0.0"]
        .iter()
        .map(|v| Version::parse(v).unwrap())
        .collect();
    let read = meta.versions(&a, &asked).await.unwrap();
    let got: Vec<Option<String>> = read
        .iter()
        .map(|r| r.as_ref().map(|r| r.version.to_string()))
        .collect();
    assert_eq!(
        got,
        [Some("2.0.0".to_string()), None, Some("1.0.0".to_string())]
    );
}

/// `document_up_to` reads a package of at most so many versions, and nothing of a bigger one.
#[tokio::test]
async fn documents_up_to_a_size() {
    let (_dir, meta) = fresh_store();
    let name = PackageName::parse("@s/three").unwrap();
    for i in 0..3u64 {
        meta.write(create(&name, &format!("1.0.{i}"), (i > 0).then_some(i)))
            .await
            .unwrap();
    }
    let document = meta.document_up_to(&name, 3).await.unwrap().unwrap();
    assert_eq!(document.versions.len(), 3);
    assert!(meta.document_up_to(&name, 2).await.unwrap().is_none());
    let missing = PackageName::parse("@s/missing").unwrap();
    assert!(meta.document_up_to(&missing, 3).await.unwrap().is_none());
}

#[tokio::test]
async fn documents_read_whole_on_either_side_of_the_in_place_limit() {
    let (_dir, meta) = fresh_store();
    let mut names = Vec::new();
    for count in [
        1,
        super::IN_PLACE_VERSIONS,
        super::IN_PLACE_VERSIONS + 1,
        40,
    ] {
        let name = PackageName::parse(&format!("@t/p{count}")).unwrap();
        for i in 0..count {
            let revision = (i > 0).then_some(i as u64);
            meta.write(create(&name, &format!("1.0.{i}"), revision))
                .await
                .unwrap();
        }
        names.push((name, count));
    }
    for (name, count) in names {
        let doc = meta.document(&name).await.unwrap().unwrap();
        assert_eq!(doc.versions.len(), count, "{name}");
        assert_eq!(doc.package.revision, count as u64, "{name}");
    }
    let missing = PackageName::parse("@t/none").unwrap();
    assert!(meta.document(&missing).await.unwrap().is_none());
}
