//! The AWS backend in-process against the emulators: AWS requests per operation (printed for the
//! cost model), a 3,000-version package, a version with a 1 MB README, the sweep, and the S3 gate
//! that holds clients to real S3's rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use e2e::{AwsResources, S3Host, escaped, package_tgz, publish_doc};
use registry::config::Config;
use registry::domain::package::{Dist, LiveVersion, TarballKey};
use registry::domain::{
    DistTag, PackageDocument, PackageName, PackageRecord, VersionRecord, VersionState,
};
use registry::http::{RouteGroup, router};
use registry::storage::aws::layout::ObjectKey;
use registry::storage::aws::{AwsStorage, RequestCounts};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Harness {
    app: axum::Router,
    storage: Arc<AwsStorage>,
    counts: Arc<RequestCounts>,
}

async fn harness(label: &str) -> Harness {
    harness_on(&AwsResources::create(label, S3Host::Different)).await
}

/// A registry instance of its own (empty caches) on `resources`, as another Lambda instance.
async fn harness_on(resources: &AwsResources) -> Harness {
    let storage = Arc::new(resources.storage());
    let config = Config::from_lookup(|k| match k {
        "REGISTRY_UPSTREAM" => Some(String::new()),
        "REGISTRY_PUBLIC_URL" => Some("http://registry.test".into()),
        _ => None,
    })
    .unwrap();
    let state = registry::app::App::builder(config)
        .stores(storage.clone(), storage.clone())
        .build()
        .await
        .unwrap();
    let counts = storage.request_counts();
    Harness {
        app: router(state, &RouteGroup::ALL),
        storage,
        counts,
    }
}

impl Harness {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>, BTreeMap<String, u64>) {
        self.counts.take();
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        (status, bytes, self.counts.take())
    }

    async fn publish(&self, name: &str, version: &str) -> BTreeMap<String, u64> {
        let body =
            serde_json::to_vec(&publish_doc(name, version, &package_tgz(name, version))).unwrap();
        let (status, text, counts) = self.send("PUT", &format!("/{}", escaped(name)), body).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&text)
        );
        counts
    }
}

fn show(counts: &BTreeMap<String, u64>) -> String {
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{total} requests ({})", parts.join(", "))
}

/// A packument read that finds the snapshot unusable: the record and the snapshot, the rebuild
/// lease taken (a conditional `PutItem`), the snapshot read again under it, the `Query` that
/// rebuilds the document, the new snapshot's `PutObject` and the lease given back.
fn rebuilding_read() -> BTreeMap<String, u64> {
    BTreeMap::from([
        ("DynamoDB.GetItem".into(), 1),
        ("S3.GetObject".into(), 2),
        ("DynamoDB.PutItem".into(), 1),
        ("DynamoDB.Query".into(), 1),
        ("S3.PutObject".into(), 1),
        ("DynamoDB.DeleteItem".into(), 1),
    ])
}

/// The requests among `counts` of the given kinds (operation names, either service).
fn requests_of(counts: &BTreeMap<String, u64>, kinds: &[&str]) -> BTreeMap<String, u64> {
    counts
        .iter()
        .filter(|(k, _)| kinds.iter().any(|w| k.ends_with(&format!(".{w}"))))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn writes(counts: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    requests_of(
        counts,
        &[
            "TransactWriteItems",
            "PutItem",
            "UpdateItem",
            "BatchWriteItem",
            "PutObject",
            "DeleteObject",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_requests_per_operation() {
    let h = harness("counts").await;
    let name = "@acme/counted";
    let first = h.publish(name, "1.0.0").await;
    let second = h.publish(name, "1.0.1").await;
    let (status, _, cold) = h.send("GET", "/@acme%2fcounted", vec![]).await;
    assert_eq!(status, 200);
    let (_, _, warm) = h.send("GET", "/@acme%2fcounted", vec![]).await;
    let (_, _, other_spelling) = h.send("GET", "/@acme/counted", vec![]).await;
    let (status, _, tarball) = h
        .send("GET", "/@acme/counted/-/counted-1.0.1.tgz", vec![])
        .await;
    assert_eq!(status, StatusCode::FOUND);
    let (status, _, tag) = h
        .send(
            "PUT",
            "/-/package/@acme%2fcounted/dist-tags/beta",
            b"\"1.0.0\"".to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    let (_, _, version) = h.send("GET", "/@acme/counted/1.0.0", vec![]).await;
    let (status, tags_body, tags) = h
        .send("GET", "/-/package/@acme%2fcounted/dist-tags", vec![])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&tags_body).unwrap(),
        json!({ "latest": "1.0.1", "beta": "1.0.0" })
    );

    println!("AWS requests per operation (emulators; HTTP attempts as billed):");
    for (what, counts) in [
        ("publish, new package", &first),
        ("publish, next version", &second),
        ("packument GET, first after a write", &cold),
        ("packument GET, warm", &warm),
        ("packument GET, warm, `/@s/n` spelling", &other_spelling),
        ("tarball GET (302 to presigned URL)", &tarball),
        ("dist-tag PUT", &tag),
        ("version manifest GET", &version),
        ("dist-tags GET", &tags),
    ] {
        println!("  {what:<40} {}", show(counts));
    }

    assert_eq!(
        first,
        BTreeMap::from([
            ("DynamoDB.GetItem".into(), first["DynamoDB.GetItem"]),
            ("DynamoDB.TransactWriteItems".into(), 1),
            ("S3.PutObject".into(), 2)
        ]),
        "a new package: its tarball, the transaction, and its first snapshot (the write itself, \
         stored only if none exists: no read of the bucket)"
    );
    assert_eq!(
        writes(&second),
        BTreeMap::from([
            ("DynamoDB.TransactWriteItems".into(), 1),
            ("S3.PutObject".into(), 2)
        ]),
        "the tarball, the transaction, and the snapshot advanced to the new revision"
    );
    assert_eq!(
        second.get("S3.GetObject"),
        Some(&1),
        "the snapshot the write advances, read once: {second:?}"
    );
    assert_eq!(
        cold,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1), ("S3.GetObject".into(), 1)]),
        "the first read after a write: the record and the package's snapshot, side by side, \
         which the writer left current (no Query of every version)"
    );
    assert_eq!(
        warm,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1)]),
        "a warm packument read is one GetItem: its bytes are rendered once per revision"
    );
    assert_eq!(
        other_spelling, warm,
        "the other spelling of the name (`/@s/n`) is the same cached document"
    );
    assert_eq!(
        tarball,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1)]),
        "presigning is local: one read per download"
    );
    assert_eq!(
        version,
        BTreeMap::from([("DynamoDB.GetItem".into(), 2)]),
        "a version manifest is read from its package's record and its own"
    );
    assert_eq!(
        tag,
        BTreeMap::from([
            ("DynamoDB.GetItem".into(), 2),
            ("DynamoDB.TransactWriteItems".into(), 1),
            ("S3.GetObject".into(), 1),
            ("S3.PutObject".into(), 1),
        ]),
        "a dist-tag PUT reads the package record and the tagged version's, never every \
         version, and advances the package's snapshot"
    );
    assert_eq!(
        tags,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1)]),
        "dist-tags are read from the package record"
    );
    assert!(
        !second.contains_key("DynamoDB.Query"),
        "publishing must not read every version"
    );

    // An instance holding the document's pieces applies its own publish to them, with the
    // version it wrote: its next read is a warm one (never every version, and no snapshot).
    h.publish(name, "1.0.2").await;
    let (status, body, patched) = h.send("GET", "/@acme%2fcounted", vec![]).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["dist-tags"]["latest"], "1.0.2");
    assert_eq!(doc["versions"].as_object().unwrap().len(), 3);
    println!(
        "  {:<40} {}",
        "packument GET, first after a publish, warm instance",
        show(&patched)
    );
    assert_eq!(
        patched,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1)]),
        "the first read after a publish made by this warm instance: the record alone"
    );
}

/// Instances share each package's snapshot: one that is current serves a new instance with two
/// requests; a stale or unreadable one is rebuilt, served and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_serve_new_instances_and_heal() {
    let resources = AwsResources::create("snap", S3Host::Different);
    let writer = harness_on(&resources).await;
    writer.publish("@acme/snap", "1.0.0").await;
    writer.publish("@acme/snap", "1.0.1").await;
    let (status, first, _) = writer.send("GET", "/@acme%2fsnap", vec![]).await;
    assert_eq!(status, 200);

    let (status, body, counts) = harness_on(&resources)
        .await
        .send("GET", "/@acme%2fsnap", vec![])
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &first));
    assert_eq!(
        counts,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1), ("S3.GetObject".into(), 1)]),
        "an unchanged package: its record and its snapshot"
    );

    // A snapshot no release can read (say, another layout) is rebuilt like a missing one.
    resources
        .put_object(
            &ObjectKey::Snapshot(&PackageName::parse("@acme/snap").unwrap()).to_string(),
            b"{\"not\": \"a document\"}",
        )
        .await;
    let (status, body, counts) = harness_on(&resources)
        .await
        .send("GET", "/@acme%2fsnap", vec![])
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &first));
    assert_eq!(counts.get("DynamoDB.Query"), Some(&1), "{counts:?}");
    let snapshots = resources.objects(ObjectKey::SNAPSHOTS).await;
    assert_eq!(snapshots.len(), 1);
    let stored: PackageDocument = serde_json::from_slice(&snapshots[0].1).unwrap();
    assert_eq!(
        stored.versions.len(),
        2,
        "the unreadable snapshot was replaced"
    );

    // A write advances the snapshot before it answers: the next instance reads it as it is,
    // and it is what a rebuild from the table makes.
    writer.publish("@acme/snap", "1.0.2").await;
    let (status, body, counts) = harness_on(&resources)
        .await
        .send("GET", "/@acme%2fsnap", vec![])
        .await;
    assert_eq!(status, 200);
    let packument: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(packument["dist-tags"]["latest"], "1.0.2");
    assert_eq!(
        counts,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1), ("S3.GetObject".into(), 1)]),
        "the writer advanced the snapshot: no instance queries every version"
    );
    let advanced = resources.objects(ObjectKey::SNAPSHOTS).await;
    resources
        .put_object(&advanced[0].0, b"{\"not\": \"a document\"}")
        .await;
    let (_, rebuilt, counts) = harness_on(&resources)
        .await
        .send("GET", "/@acme%2fsnap", vec![])
        .await;
    assert_eq!(counts, rebuilding_read());
    assert_eq!(
        rebuilt, body,
        "the advanced snapshot is what a rebuild makes"
    );
}

/// A package of `count` versions (1.0.0, 1.0.1, ...), each with `manifest`, as the bulk import
/// takes it.
fn imported(name: &PackageName, count: u64, manifest: Value) -> PackageDocument {
    let now = chrono::Utc::now();
    let mut package = PackageRecord::new(name.clone(), now);
    package.revision = 1;
    let versions = (0..count)
        .map(|i| {
            let version = semver::Version::new(1, 0, i);
            package.dist_tags.insert(DistTag::latest(), version.clone());
            VersionRecord {
                state: VersionState::Live(Box::new(LiveVersion {
                    manifest: serde_json::from_value(manifest.clone()).unwrap(),
                    dist: Dist {
                        shasum: "0".repeat(40),
                        integrity: format!("sha512-{}", "A".repeat(86)),
                        file_count: 1,
                        unpacked_size: 10,
                        tarball_key: TarballKey::new(name, &version, &"0".repeat(128)),
                        signatures: Vec::new(),
                        provenance: None,
                    },
                    readme_filename: None,
                    has_readme: None,
                    deprecated: None,
                })),
                version,
                published: now,
            }
        })
        .collect();
    PackageDocument { package, versions }
}

/// Every write leaves the package's snapshot current before it answers, however it finds it,
/// so no reader on any instance queries every version after a write (`docs/scaling.md`, part
/// 3): a new package over a snapshot left in the bucket (the first store requires the key to be
/// empty and fails; the writer reads what is there and replaces it), a write split over
/// transactions (rebuilt from the table), and writers racing on one package (each store is
/// conditional on the snapshot its writer read, and the loser reads again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_leaves_the_snapshot_current() {
    let resources = AwsResources::create("snapcur", S3Host::Different);
    let writer = harness_on(&resources).await;
    // A new instance's first read, served from the snapshot.
    let current = |uri: &'static str| {
        let resources = &resources;
        async move {
            let (status, body, counts) = harness_on(resources).await.send("GET", uri, vec![]).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            // (Imported versions say nothing of a README: the latest's is looked for.)
            assert!(
                !counts.contains_key("DynamoDB.Query") && !counts.contains_key("S3.PutObject"),
                "{uri}: the snapshot is current, nothing is rebuilt: {counts:?}"
            );
            serde_json::from_slice::<Value>(&body).unwrap()
        }
    };

    let planted = PackageName::parse("@acme/planted").unwrap();
    resources
        .put_object(
            &ObjectKey::Snapshot(&planted).to_string(),
            b"{\"not\": \"a document\"}",
        )
        .await;
    writer.publish("@acme/planted", "1.0.0").await;
    let doc = current("/@acme%2fplanted").await;
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");

    // 120 versions deprecated at once: two transactions (97 changes each at most).
    let split = PackageName::parse("@acme/split").unwrap();
    writer
        .storage
        .import(&imported(&split, 120, json!({ "description": "imported" })))
        .await
        .unwrap();
    let (status, body, _) = writer
        .send("GET", "/@acme%2fsplit?write=true", vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut doc: Value = serde_json::from_slice(&body).unwrap();
    for version in doc["versions"].as_object_mut().unwrap().values_mut() {
        version["deprecated"] = json!("use 2");
    }
    let (status, body, counts) = writer
        .send("PUT", "/@acme%2fsplit", serde_json::to_vec(&doc).unwrap())
        .await;
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        counts.get("DynamoDB.TransactWriteItems"),
        Some(&2),
        "a write split over transactions: {counts:?}"
    );
    let doc = current("/@acme%2fsplit").await;
    let versions = doc["versions"].as_object().unwrap();
    assert_eq!(versions.len(), 120);
    assert!(versions.values().all(|v| v["deprecated"] == "use 2"));

    writer.publish("@acme/raced", "1.0.0").await;
    for round in 0..4 {
        let (a, b) = (harness_on(&resources).await, harness_on(&resources).await);
        let (left, right) = (format!("2.0.{round}"), format!("3.0.{round}"));
        tokio::join!(
            a.publish("@acme/raced", &left),
            b.publish("@acme/raced", &right)
        );
        let doc = current("/@acme%2fraced").await;
        let versions = doc["versions"].as_object().unwrap();
        assert!(
            versions.contains_key(&left) && versions.contains_key(&right),
            "round {round}: {doc}"
        );
    }
}

/// A snapshot behind its record (writers that died between their commit and their store) is
/// brought up to date with the versions the record lists as touched since, with no `Query`; one
/// that cannot be (unreadable here) is rebuilt by one instance however many find it at once:
/// the holder of the package's rebuild lease, while the others wait for its snapshot
/// (`docs/scaling.md`, parts 2 and 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_behind_is_caught_up_or_rebuilt_once() {
    let resources = AwsResources::create("behind", S3Host::Different);
    let writer = harness_on(&resources).await;
    let key = ObjectKey::Snapshot(&PackageName::parse("@acme/behind").unwrap()).to_string();
    writer.publish("@acme/behind", "1.0.0").await;
    let (_, old) = resources
        .objects(&key)
        .await
        .into_iter()
        .next()
        .expect("the first publish stored a snapshot");
    writer.publish("@acme/behind", "1.0.1").await;
    writer.publish("@acme/behind", "1.0.2").await;
    let (status, _, _) = writer
        .send(
            "PUT",
            "/-/package/@acme%2fbehind/dist-tags/beta",
            b"\"1.0.1\"".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, current, _) = writer.send("GET", "/@acme%2fbehind", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    // As if the three writes had died before their stores.
    resources.put_object(&key, &old).await;

    let (status, body, counts) = harness_on(&resources)
        .await
        .send("GET", "/@acme%2fbehind", vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&current),
        "caught up, it is what the writer serves"
    );
    assert_eq!(
        counts,
        BTreeMap::from([
            ("DynamoDB.GetItem".into(), 1),
            ("S3.GetObject".into(), 1),
            ("DynamoDB.BatchGetItem".into(), 1),
            ("S3.PutObject".into(), 1),
        ]),
        "the two versions touched since, read together, and the snapshot stored: no Query"
    );
    let (_, again, counts) = harness_on(&resources)
        .await
        .send("GET", "/@acme%2fbehind", vec![])
        .await;
    assert_eq!(again, current);
    assert_eq!(
        counts,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1), ("S3.GetObject".into(), 1)]),
        "the snapshot caught up was stored"
    );

    // Imported, the record lists no touched versions: an unreadable snapshot needs a `Query`.
    let name = PackageName::parse("@acme/rebuilt").unwrap();
    writer
        .storage
        .import(&imported(&name, 120, json!({ "description": "imported" })))
        .await
        .unwrap();
    let key = ObjectKey::Snapshot(&name).to_string();
    resources
        .put_object(&key, b"{\"not\": \"a document\"}")
        .await;
    let readers = [
        harness_on(&resources).await,
        harness_on(&resources).await,
        harness_on(&resources).await,
        harness_on(&resources).await,
    ];
    let [a, b, c, d] = &readers;
    let uri = "/@acme%2frebuilt";
    let (a, b, c, d) = tokio::join!(
        a.send("GET", uri, vec![]),
        b.send("GET", uri, vec![]),
        c.send("GET", uri, vec![]),
        d.send("GET", uri, vec![])
    );
    let all = [a, b, c, d];
    let count = |what: &str| -> u64 {
        all.iter()
            .map(|(_, _, counts)| counts.get(what).copied().unwrap_or(0))
            .sum()
    };
    for (status, body, _) in &all {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(body, &all[0].1);
    }
    let doc: Value = serde_json::from_slice(&all[0].1).unwrap();
    assert_eq!(doc["versions"].as_object().unwrap().len(), 120);
    assert_eq!(
        (
            count("DynamoDB.Query"),
            count("S3.PutObject"),
            count("DynamoDB.PutItem")
        ),
        (1, 1, 4),
        "four instances, one lease holder, one rebuild: {:?}",
        all.iter().map(|(_, _, c)| c).collect::<Vec<_>>()
    );

    // The holder gave the lease back: a rebuild needed again at once does not wait for it.
    resources
        .put_object(&key, b"{\"not\": \"a document\"}")
        .await;
    let (status, body, counts) = harness_on(&resources)
        .await
        .send("GET", "/@acme%2frebuilt", vec![])
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &all[0].1));
    assert_eq!(
        requests_of(&counts, &["PutItem", "Query", "PutObject", "DeleteItem"]),
        BTreeMap::from([
            ("DynamoDB.PutItem".into(), 1),
            ("DynamoDB.Query".into(), 1),
            ("S3.PutObject".into(), 1),
            ("DynamoDB.DeleteItem".into(), 1),
        ]),
        "{counts:?}"
    );
    // The snapshot, read again under the lease, and the latest version's README looked for
    // (imported versions say nothing of one): no wait for a lease.
    assert_eq!(counts.get("S3.GetObject"), Some(&3), "{counts:?}");

    // A holder that died (its lease left to expire) holds a rebuild up for one lease at most:
    // the reader waits it out, takes the lease and rebuilds.
    use registry::storage::KvStore;
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    assert!(
        writer
            .storage
            .put_new("lease/@acme/rebuilt", "snapshot", b"", Some(expires))
            .await
            .unwrap()
    );
    resources
        .put_object(&key, b"{\"not\": \"a document\"}")
        .await;
    let (status, body, counts) = harness_on(&resources)
        .await
        .send("GET", "/@acme%2frebuilt", vec![])
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &all[0].1));
    assert_eq!(
        (
            counts.get("DynamoDB.PutItem"),
            counts.get("DynamoDB.Query"),
            counts.get("S3.PutObject")
        ),
        (Some(&2), Some(&1), Some(&1)),
        "the lease found taken, then taken once it expired, and one rebuild: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_versions_and_a_one_megabyte_readme() {
    const VERSIONS: u64 = 3000;
    let h = harness("big").await;
    let name = PackageName::parse("@acme/big").unwrap();

    // Seed 3,000 versions with the backend's bulk import (one transaction per version would
    // take minutes on the emulator, whose transactions slow down as the table grows).
    let started = Instant::now();
    h.storage
        .import(&imported(
            &name,
            VERSIONS,
            json!({ "description": "big", "dependencies": { "left-pad": "^1.0.0" } }),
        ))
        .await
        .unwrap();
    println!("seeded {VERSIONS} versions in {:?}", started.elapsed());

    // Version 2 of a small package, then version 3,001 of the big one: the same writes.
    let small = h.publish("@acme/small", "1.0.0").await;
    let small_second = h.publish("@acme/small", "1.0.1").await;
    let started = Instant::now();
    let big_next = h.publish("@acme/big", "2.0.0").await;
    let big_time = started.elapsed();
    let started = Instant::now();
    h.publish("@acme/small", "1.0.2").await;
    let small_time = started.elapsed();
    println!(
        "publish version 2 of a 1-version package: {}",
        show(&small_second)
    );
    println!(
        "publish version 3,001 of a 3,000-version package: {} in {big_time:?} (a small package's: {small_time:?})",
        show(&big_next)
    );
    assert_eq!(
        writes(&big_next),
        writes(&small_second),
        "O(1) writes whatever the version count"
    );
    assert!(!small.is_empty());

    let (status, body, cold) = h.send("GET", "/@acme%2fbig", vec![]).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        doc["versions"].as_object().unwrap().len(),
        VERSIONS as usize + 1
    );
    assert_eq!(doc["dist-tags"]["latest"], "2.0.0");
    assert_eq!(
        doc["versions"]["1.0.2999"]["dependencies"]["left-pad"],
        "^1.0.0"
    );
    let (_, _, warm) = h.send("GET", "/@acme%2fbig", vec![]).await;
    println!(
        "packument GET of 3,001 versions ({} KB): first after a write {}; warm {}",
        body.len() / 1024,
        show(&cold),
        show(&warm)
    );
    assert_eq!(
        warm,
        BTreeMap::from([("DynamoDB.GetItem".into(), 1)]),
        "a warm read of a 3,001-version packument is still one GetItem"
    );

    // A 1 MB README publishes (it goes to S3, not into the item) and reads back.
    let readme = "# Big readme\n".to_string() + &"lorem ipsum dolor sit amet ".repeat(40_000);
    assert!(readme.len() > 1_000_000);
    let mut doc = publish_doc(
        "@acme/readme",
        "1.0.0",
        &package_tgz("@acme/readme", "1.0.0"),
    );
    doc["versions"]["1.0.0"]["readme"] = json!(readme);
    let (status, text, _) = h
        .send("PUT", "/@acme%2freadme", serde_json::to_vec(&doc).unwrap())
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&text)
    );
    let (status, body, _) = h.send("GET", "/@acme%2freadme", vec![]).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["readme"].as_str().map(str::len), Some(readme.len()));
    assert!(doc["readme"] == json!(readme));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_only_unreferenced_tarballs() {
    use registry::storage::TarballStore;
    let h = harness("sweep").await;
    h.publish("@acme/swept", "1.0.0").await;
    let name = PackageName::parse("@acme/swept").unwrap();
    // What a crashed publish and a lost race leave behind.
    let crashed = TarballKey::new(&name, &semver::Version::new(1, 0, 1), &"ab".repeat(64));
    let loser = TarballKey::new(&name, &semver::Version::new(1, 0, 0), &"cd".repeat(64));
    for key in [&crashed, &loser] {
        h.storage
            .put(key, bytes::Bytes::from_static(b"orphan"))
            .await
            .unwrap();
    }
    let report = registry::storage::sweep(h.storage.as_ref(), h.storage.as_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(report.checked, 3);
    let mut removed: Vec<&str> = report.removed.iter().map(TarballKey::as_str).collect();
    removed.sort_unstable();
    let mut expected = vec![crashed.as_str(), loser.as_str()];
    expected.sort_unstable();
    assert_eq!(removed, expected);
    let (status, body, _) = h
        .send("GET", "/@acme/swept/-/swept-1.0.0.tgz", vec![])
        .await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let remaining = h.storage.list(Duration::ZERO).await.unwrap();
    assert_eq!(remaining.len(), 1, "the live version's tarball stays");
}

/// The gate in front of S3 holds clients to real S3's rule that the emulators do not enforce: a
/// presigned URL fetched with an `Authorization` header as well is refused. The client suite
/// relies on it to show that no client leaks the registry's token to S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_gate_refuses_a_presigned_url_with_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = e2e::Backend::aws("gate", S3Host::Different);
    let server = e2e::Server::start_on(tmp.path(), &backend);
    let client = e2e::http();
    let name = "@gate/pkg";
    let tarball = package_tgz(name, "1.0.0");
    let put = client
        .put(format!("{}/{}", server.url, escaped(name)))
        .json(&publish_doc(name, "1.0.0", &tarball))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let redirect = client
        .get(format!("{}/{name}/-/pkg-1.0.0.tgz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("http://localhost:"), "{location}");

    let with_token = client
        .get(&location)
        .bearer_auth("ghp_leaked")
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 400);
    let body = with_token.text().await.unwrap();
    assert!(
        body.contains("InvalidArgument") && body.contains("Only one auth mechanism allowed"),
        "{body}"
    );
    let plain = client.get(&location).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.bytes().await.unwrap().to_vec(), tarball);

    let e2e::Backend::Aws(resources) = &backend else {
        unreachable!()
    };
    let seen: Vec<(bool, u16)> = resources
        .gate
        .as_ref()
        .unwrap()
        .requests()
        .into_iter()
        .filter(|r| r.presigned)
        .map(|r| (r.authorization, r.status))
        .collect();
    assert_eq!(seen, vec![(true, 400), (false, 200)]);
}
