//! A hot package at fleet scale (`docs/scaling.md`): package views, version facts and kept
//! registry-token records on the AWS backend, in-process against the emulators, each instance an
//! application of its own (as a Lambda instance is) with its own request counts. What a read
//! costs with and without views (printed), the staleness bound (a write elsewhere is seen within
//! the check interval T), an unpublish that refuses a kept version fact as soon as the view's
//! epoch moves, and a registry token that works on every instance the moment it is minted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use e2e::github_world::World;
use e2e::{AwsResources, S3Host, escaped, package_tgz, publish_doc};
use registry::config::Config;
use registry::http::{RouteGroup, router};
use registry::storage::aws::RequestCounts;
use serde_json::{Value, json};
use tower::ServiceExt;

/// One registry instance (its own views, facts and token records) on shared resources.
struct Instance {
    app: axum::Router,
    counts: Arc<RequestCounts>,
    token: Option<String>,
}

/// An instance on `resources` configured as the AWS backend is, plus `settings`.
async fn instance(resources: &AwsResources, settings: &[(&str, &str)]) -> Instance {
    let storage = Arc::new(resources.storage());
    let mut env: Vec<(String, String)> = vec![
        ("REGISTRY_STORAGE".into(), "aws".into()),
        ("REGISTRY_TABLE".into(), resources.table.clone()),
        ("REGISTRY_BUCKET".into(), resources.bucket.clone()),
        ("REGISTRY_UPSTREAM".into(), String::new()),
        ("REGISTRY_PUBLIC_URL".into(), "http://registry.test".into()),
    ];
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_lookup(|key| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    let state = registry::app::App::builder(config)
        .stores(storage.clone(), storage.clone())
        .kv(storage.clone())
        .build()
        .await
        .unwrap();
    Instance {
        app: router(state, &RouteGroup::ALL),
        counts: storage.request_counts(),
        token: None,
    }
}

type Counts = BTreeMap<String, u64>;

impl Instance {
    /// The same instance, sending `token`.
    fn with_token(&self, token: &str) -> Instance {
        Instance {
            app: self.app.clone(),
            counts: self.counts.clone(),
            token: Some(token.to_string()),
        }
    }

    /// Sends one request; its status, body and the AWS requests it made.
    async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, Counts) {
        self.send_accepting(method, uri, body, "application/json")
            .await
    }

    /// `send`, asking for `accept`.
    async fn send_accepting(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        accept: &str,
    ) -> (StatusCode, Value, Counts) {
        self.counts.take();
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("accept", accept)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(serde_json::to_vec(&b).unwrap()));
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json, self.counts.take())
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value, Counts) {
        self.send("GET", uri, None).await
    }

    /// The install (abbreviated) view of a packument.
    async fn get_abbreviated(&self, uri: &str) -> (StatusCode, Value, Counts) {
        self.send_accepting("GET", uri, None, ABBREVIATED).await
    }

    async fn publish(&self, name: &str, version: &str) {
        let mut doc = publish_doc(name, version, &package_tgz(name, version));
        doc["versions"][version]["repository"] = json!("github:acme/widgets");
        let (status, body, _) = self
            .send("PUT", &format!("/{}", escaped(name)), Some(doc))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Unpublishes one version as `npm unpublish name@version` does: the document without it,
    /// at the revision read.
    async fn unpublish(&self, name: &str, version: &str) {
        let (status, doc, _) = self.get(&format!("/{}?write=true", escaped(name))).await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        let mut versions = doc["versions"].as_object().unwrap().clone();
        assert!(versions.remove(version).is_some(), "{version} is listed");
        let rev = doc["_rev"].as_str().unwrap();
        let body = json!({ "_id": name, "name": name, "_rev": rev, "versions": versions });
        let (status, answer, _) = self
            .send("PUT", &format!("/{}/-rev/{rev}", escaped(name)), Some(body))
            .await;
        assert!(status.is_success(), "{status}: {answer}");
    }
}

/// DynamoDB requests among `counts` (S3's are the snapshot's, not the package partition's).
fn dynamodb(counts: &Counts) -> Counts {
    counts
        .iter()
        .filter(|(k, _)| k.starts_with("DynamoDB."))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn show(counts: &Counts) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(", ")
}

fn counts(pairs: &[(&str, u64)]) -> Counts {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// What npm asks for when it installs.
const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

/// A long check interval: no test step takes that long, so "within T" is never a race.
const LONG_T: (&str, &str) = ("REGISTRY_REVISION_CHECK_MS", "600000");

/// Warm reads of one package, per operation, without views (T = 0: every request reads the
/// package's partition, as before) and with them (no AWS request at all). Printed for
/// `docs/scaling.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_reads_make_no_aws_request() {
    let resources = AwsResources::create("views-warm", S3Host::Different);
    let writer = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "0")]).await;
    let name = "@acme/warm";
    writer.publish(name, "1.0.0").await;
    writer.publish(name, "1.0.1").await;
    let operations = [
        ("packument GET", "/@acme%2fwarm"),
        ("tarball GET (302)", "/@acme/warm/-/warm-1.0.1.tgz"),
        ("version manifest GET", "/@acme/warm/1.0.0"),
        ("dist-tags GET", "/-/package/@acme%2fwarm/dist-tags"),
    ];
    let mut rows = Vec::new();
    for settings in [[("REGISTRY_REVISION_CHECK_MS", "0")], [LONG_T]] {
        let reader = instance(&resources, &settings).await;
        let mut row = Vec::new();
        for (what, uri) in operations {
            let (status, body, cold) = reader.get(uri).await;
            assert!(
                status.is_success() || status == StatusCode::FOUND,
                "{what}: {body}"
            );
            let (status, _, warm) = reader.get(uri).await;
            assert!(status.is_success() || status == StatusCode::FOUND, "{what}");
            row.push((what, cold, warm));
        }
        rows.push((settings[0].1, row));
    }
    println!("AWS requests per read of one package (emulators), first and warm, per instance:");
    for (t, row) in &rows {
        for (what, cold, warm) in row {
            println!(
                "  T = {t:>6} ms  {what:<22} first: {:<60} warm: {}",
                show(cold),
                show(warm)
            );
        }
    }
    let warm = |t: usize, op: usize| rows[t].1[op].2.clone();
    // Without views, every read reads the partition, as `aws_backend` pins it.
    assert_eq!(warm(0, 0), counts(&[("DynamoDB.GetItem", 1)]));
    assert_eq!(warm(0, 1), counts(&[("DynamoDB.GetItem", 1)]));
    assert_eq!(warm(0, 3), counts(&[("DynamoDB.GetItem", 1)]));
    // With them, a warm packument, redirect or dist-tags read makes no AWS request at all.
    assert_eq!(warm(1, 0), Counts::new(), "a warm packument read");
    assert_eq!(warm(1, 1), Counts::new(), "a warm tarball redirect");
    assert_eq!(warm(1, 3), Counts::new(), "a warm dist-tags read");
    assert_eq!(
        warm(1, 2),
        counts(&[("DynamoDB.GetItem", 1)]),
        "a version manifest still reads its version item (strongly): manifests are not kept"
    );
    // The first redirect on an instance that has the package's view: the version, read
    // eventually consistently (no version of this package was ever unpublished or overwritten).
    assert_eq!(
        dynamodb(&rows[1].1[1].1),
        counts(&[("DynamoDB.GetItem (eventual)", 1)]),
    );
}

/// At the default check interval (1 s) a busy instance reads a package's partition in
/// proportion to time, not requests: one check a second, whatever it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_interval_reads_follow_time_not_requests() {
    let resources = AwsResources::create("views-rate", S3Host::Different);
    let writer = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "0")]).await;
    writer.publish("@acme/rate", "1.0.0").await;
    // Its first read stores the package's snapshot, so the reader's finds it current.
    assert_eq!(writer.get("/@acme%2frate").await.0, StatusCode::OK);
    let reader = instance(&resources, &[]).await;
    let started = Instant::now();
    let (mut requests, mut total) = (0u64, Counts::new());
    while started.elapsed() < Duration::from_secs(3) {
        for uri in ["/@acme%2frate", "/@acme/rate/-/rate-1.0.0.tgz"] {
            let (status, _, cost) = reader.get(uri).await;
            assert!(status == StatusCode::OK || status == StatusCode::FOUND);
            requests += 1;
            for (k, v) in dynamodb(&cost) {
                *total.entry(k).or_default() += v;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let reads: u64 = total.values().sum();
    println!(
        "T = 1 s (default): {requests} reads in {elapsed:.1} s ({:.0}/s) made {reads} DynamoDB \
         requests ({})",
        requests as f64 / elapsed,
        show(&total)
    );
    // The view's first read, one check per second begun, and the version's fact.
    assert!(
        reads as f64 <= elapsed.ceil() + 2.0,
        "{reads} DynamoDB requests in {elapsed:.1} s"
    );
    assert!(
        requests > 10 * reads,
        "{requests} reads, {reads} DynamoDB requests"
    );
}

/// A write made elsewhere (another instance, the publish function) reaches a reader within T:
/// until its view is due the reader serves what it has without a request; the first request
/// after that checks (eventually consistently) and serves the write. A version published
/// meanwhile redirects at once, whatever the view says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_elsewhere_is_seen_within_the_check_interval() {
    const T: Duration = Duration::from_secs(4);
    let resources = AwsResources::create("views-bound", S3Host::Different);
    let writer = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "0")]).await;
    let reader = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "4000")]).await;
    let name = "@acme/bound";
    writer.publish(name, "1.0.0").await;
    let (status, doc, _) = reader.get("/@acme%2fbound").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
    // The reader's view was read before this instant: it is due at the latest T after it.
    let checked = Instant::now();

    writer.publish(name, "1.0.1").await;
    let (status, doc, cost) = reader.get("/@acme%2fbound").await;
    assert!(checked.elapsed() < T, "the test is too slow for its T");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (doc["dist-tags"]["latest"].clone(), cost),
        (json!("1.0.0"), Counts::new()),
        "within T the reader serves its view, and reads nothing"
    );
    let (status, _, cost) = reader.get("/@acme/bound/-/bound-1.0.1.tgz").await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "a new version's tarball redirects at once"
    );
    assert_eq!(cost, counts(&[("DynamoDB.GetItem (eventual)", 1)]));
    let (status, _, _) = reader.get("/@acme/bound/1.0.1").await;
    assert_eq!(status, StatusCode::OK, "and its manifest is found at once");

    // Polled until the reader serves the new version; each poll either serves the view (no
    // DynamoDB request) or checks it once.
    let deadline = checked + T + Duration::from_secs(10);
    let seen = loop {
        let (status, doc, cost) = reader.get("/@acme%2fbound").await;
        assert_eq!(status, StatusCode::OK);
        let dynamodb = dynamodb(&cost);
        if doc["dist-tags"]["latest"] == "1.0.1" {
            assert_eq!(
                dynamodb.get("DynamoDB.GetItem (eventual)"),
                Some(&1),
                "the check that saw it: one eventually consistent read: {cost:?}"
            );
            break checked.elapsed();
        }
        assert_eq!(dynamodb, Counts::new(), "a stale answer reads nothing");
        assert!(Instant::now() < deadline, "the write was never seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("a write elsewhere was seen {seen:?} after the reader's check (T = {T:?})");
    assert!(
        seen <= T + Duration::from_secs(2),
        "seen {seen:?} after the check: the bound is T (plus one poll)"
    );
}

/// An instance reads each revision of a package once, whichever views it renders
/// (`docs/scaling.md`, part 2): a cold instance GETs the snapshot for its first view and renders
/// the second from the bytes it kept; after a write elsewhere, the versions the write touched
/// are read (together) for the first view's patch and not again for the second's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_reads_each_revision_once_for_both_views() {
    const T: Duration = Duration::from_millis(500);
    let resources = AwsResources::create("views-once", S3Host::Different);
    let writer = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "0")]).await;
    let name = "@acme/once";
    let uri = "/@acme%2fonce";
    writer.publish(name, "1.0.0").await;
    writer.publish(name, "1.0.1").await;
    let reader = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "500")]).await;

    let (status, full, cold_full) = reader.get(uri).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    let checked = Instant::now();
    let (status, abbreviated, cold_abbreviated) = reader.get_abbreviated(uri).await;
    assert_eq!(status, StatusCode::OK, "{abbreviated}");
    println!(
        "a cold instance, full view: {}; then the abbreviated view: {}",
        show(&cold_full),
        show(&cold_abbreviated)
    );
    assert_eq!(
        cold_full.get("S3.GetObject"),
        Some(&1),
        "the snapshot, once: {cold_full:?}"
    );
    assert!(
        checked.elapsed() < T,
        "the test is too slow for its T: the second view's check would read"
    );
    assert_eq!(
        cold_abbreviated,
        Counts::new(),
        "the second view renders from the kept snapshot and the view: no request"
    );
    assert_eq!(abbreviated["dist-tags"]["latest"], "1.0.1");

    // Three writes elsewhere, touching two versions (read together, in one request).
    writer.publish(name, "1.0.2").await;
    writer.publish(name, "1.0.3").await;
    let (status, _, _) = writer
        .send(
            "PUT",
            "/-/package/@acme%2fonce/dist-tags/next",
            Some(json!("1.0.2")),
        )
        .await;
    assert!(status.is_success(), "{status}");
    tokio::time::sleep_until((checked + T).into()).await;

    let (status, abbreviated, patch_abbreviated) = reader.get_abbreviated(uri).await;
    assert_eq!(status, StatusCode::OK, "{abbreviated}");
    assert_eq!(abbreviated["dist-tags"]["next"], "1.0.2", "{abbreviated}");
    let (status, full, patch_full) = reader.get(uri).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(full["dist-tags"]["next"], "1.0.2", "{full}");
    println!(
        "after a write elsewhere, abbreviated view: {}; then the full view: {}",
        show(&patch_abbreviated),
        show(&patch_full)
    );
    assert_eq!(
        dynamodb(&patch_abbreviated),
        counts(&[
            ("DynamoDB.BatchGetItem", 1),
            ("DynamoDB.GetItem (eventual)", 1)
        ]),
        "the check, and the two touched versions read together for the patch"
    );
    assert_eq!(
        dynamodb(&patch_full),
        Counts::new(),
        "the full view patches with what the first patch read: {patch_full:?}"
    );
    assert!(
        !patch_full.contains_key("S3.GetObject") || patch_full.get("S3.GetObject") == Some(&1),
        "at most the new latest version's README: {patch_full:?}"
    );
}

/// A view older than the package's snapshot never mixes the two: a document built from a newer
/// snapshot is served with that snapshot's own record (its dist-tags name its versions), and the
/// view moves up to it. Here `latest` was unpublished elsewhere: the reader's view (read for a
/// dist-tags GET, so the reader holds no snapshot) still names it, the snapshot no longer lists
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_older_than_the_snapshot_serves_the_snapshot_whole() {
    let resources = AwsResources::create("views-mix", S3Host::Different);
    let writer = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "0")]).await;
    let name = "@acme/mix";
    writer.publish(name, "1.0.0").await;
    writer.publish(name, "1.0.1").await;
    let reader = instance(&resources, &[LONG_T]).await;
    let abbreviated = |i: &Instance| {
        let app = i.app.clone();
        async move {
            let request = Request::builder()
                .uri("/@acme%2fmix")
                .header("accept", "application/vnd.npm.install-v1+json")
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    let (status, tags, _) = reader.get("/-/package/@acme%2fmix/dist-tags").await;
    assert_eq!((status, &tags["latest"]), (StatusCode::OK, &json!("1.0.1")));

    writer.unpublish(name, "1.0.1").await;
    // A new instance's read stores the snapshot of the new revision (the writer's own would patch
    // the rendering it holds and leave the snapshot as it was).
    let third = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "0")]).await;
    assert_eq!(third.get("/@acme%2fmix").await.0, StatusCode::OK);

    let consistent = |doc: &Value| {
        let versions = doc["versions"].as_object().unwrap();
        assert!(!versions.contains_key("1.0.1"), "{doc}");
        for (tag, version) in doc["dist-tags"].as_object().unwrap() {
            assert!(
                versions.contains_key(version.as_str().unwrap()),
                "dist-tag {tag} names {version}, which the document does not list: {doc}"
            );
        }
        assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
    };
    // The full view, never built here: built from the newer snapshot, with its record.
    let (status, full, _) = reader.get("/@acme%2fmix").await;
    assert_eq!(status, StatusCode::OK);
    consistent(&full);
    // The install view: the view has moved up, and the snapshot read for the full view is kept.
    consistent(&abbreviated(&reader).await);
}

/// A version fact is kept for the instance's life, but only while the package's epoch stays:
/// an unpublish made through the instance refuses the version at once, and one made elsewhere
/// as soon as the instance's view is checked, with no fact lifetime to wait out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpublished_version_is_refused_once_the_epoch_moves() {
    let resources = AwsResources::create("views-epoch", S3Host::Different);
    let writer = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "0")]).await;
    let name = "@acme/epoch";
    for v in ["1.0.0", "1.0.1", "1.0.2"] {
        writer.publish(name, v).await;
    }
    let tarball = |v: &str| format!("/@acme/epoch/-/epoch-{v}.tgz");

    // Through the instance that kept the fact.
    let reader = instance(&resources, &[LONG_T]).await;
    for v in ["1.0.0", "1.0.1"] {
        assert_eq!(reader.get(&tarball(v)).await.0, StatusCode::FOUND);
        let (status, _, cost) = reader.get(&tarball(v)).await;
        assert_eq!(
            (status, cost),
            (StatusCode::FOUND, Counts::new()),
            "{v} kept"
        );
    }
    reader.unpublish(name, "1.0.0").await;
    let (status, _, cost) = reader.get(&tarball("1.0.0")).await;
    assert_eq!(
        status,
        StatusCode::GONE,
        "refused at once where it was kept"
    );
    assert_eq!(
        cost,
        counts(&[("DynamoDB.GetItem", 1)]),
        "the new epoch drops the fact; after an unpublish versions are read strongly"
    );
    let (status, _, cost) = reader.get(&tarball("1.0.1")).await;
    assert_eq!(
        (status, cost),
        (StatusCode::FOUND, counts(&[("DynamoDB.GetItem", 1)])),
        "every fact kept under the old epoch is read again, once"
    );
    let (_, _, cost) = reader.get(&tarball("1.0.1")).await;
    assert_eq!(cost, Counts::new());

    // Elsewhere: refused as soon as this instance's view is checked.
    let other = instance(&resources, &[("REGISTRY_REVISION_CHECK_MS", "1000")]).await;
    assert_eq!(other.get(&tarball("1.0.2")).await.0, StatusCode::FOUND);
    writer.unpublish(name, "1.0.2").await;
    let unpublished = Instant::now();
    let deadline = unpublished + Duration::from_secs(12);
    loop {
        let (status, _, cost) = other.get(&tarball("1.0.2")).await;
        if status == StatusCode::GONE {
            assert_eq!(
                dynamodb(&cost),
                counts(&[("DynamoDB.GetItem (eventual)", 1), ("DynamoDB.GetItem", 1)]),
                "the check that moved the epoch, and the version read strongly"
            );
            break;
        }
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(cost, Counts::new(), "until the check, the kept fact serves");
        assert!(Instant::now() < deadline, "the unpublish was never seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "an unpublish elsewhere refused a kept version {:?} later (T = 1 s)",
        unpublished.elapsed()
    );
}

/// GitHub mode: a registry token works on another instance the moment it is minted (its
/// absence would be confirmed by a strong read); warm reads with it make no AWS request (its
/// record is kept); once revoked it is refused at once by the instance that revoked it and by
/// every write, while other instances may still serve reads for as long as they keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_just_minted_works_at_once_and_a_revoked_one_writes_no_more() {
    let world = World::start().await;
    let resources = AwsResources::create("views-token", S3Host::Different);
    let github = world.github_env();
    let mut settings: Vec<(&str, &str)> = github
        .iter()
        .filter(|(k, _)| k != "REGISTRY_LOG")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    settings.push(LONG_T);
    settings.push(("REGISTRY_TOKEN_CACHE_SECONDS", "600"));
    let auth = instance(&resources, &settings).await;
    let reader = instance(&resources, &settings).await;
    let mut without_views = settings.clone();
    without_views.extend([
        ("REGISTRY_REVISION_CHECK_MS", "0"),
        ("REGISTRY_TOKEN_CACHE_SECONDS", "0"),
    ]);
    let before = instance(&resources, &without_views).await;
    let name = "@acme/tok";
    auth.with_token(&world.alice.token)
        .publish(name, "1.0.0")
        .await;

    let (status, login, _) = auth
        .send(
            "PUT",
            "/-/user/org.couchdb.user:alice",
            Some(json!({ "name": "alice", "password": world.alice.token })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{login}");
    let token = login["token"].as_str().unwrap().to_string();

    let reader = reader.with_token(&token);
    let (status, doc, first) = reader.get("/@acme%2ftok").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a token minted elsewhere works at once: {doc}"
    );
    assert_eq!(
        first.get("DynamoDB.GetItem (eventual)"),
        Some(&2),
        "its record and the GitHub answer cached for it (a memory miss here), both read \
         eventually consistently: {first:?}"
    );
    let (status, _, warm) = reader.get("/@acme%2ftok").await;
    assert_eq!((status, warm), (StatusCode::OK, Counts::new()), "kept");
    assert_eq!(
        reader.get("/@acme/tok/-/tok-1.0.0.tgz").await.0,
        StatusCode::FOUND
    );
    let (status, _, warm) = reader.get("/@acme/tok/-/tok-1.0.0.tgz").await;
    assert_eq!(
        (status, warm),
        (StatusCode::FOUND, Counts::new()),
        "a warm redirect in GitHub mode with a registry token reads nothing"
    );

    // What the same warm reads cost without views and kept token records: every request
    // reads the package record and the token's, and a redirect the version's too.
    let before = before.with_token(&token);
    let mut warm_before = Vec::new();
    for uri in ["/@acme%2ftok", "/@acme/tok/-/tok-1.0.0.tgz"] {
        before.get(uri).await;
        let (status, _, warm) = before.get(uri).await;
        assert!(status == StatusCode::OK || status == StatusCode::FOUND);
        warm_before.push(warm);
    }
    println!("GitHub mode, a registry token, warm reads of one package:");
    println!(
        "  packument GET      T = 0, no token cache: {:<28} with views: none",
        show(&warm_before[0])
    );
    println!(
        "  tarball GET (302)  T = 0, no token cache: {:<28} with views: none",
        show(&warm_before[1])
    );
    assert_eq!(warm_before[0], counts(&[("DynamoDB.GetItem", 2)]));
    assert_eq!(warm_before[1], counts(&[("DynamoDB.GetItem", 3)]));

    // Revoked through the auth instance.
    let auth = auth.with_token(&token);
    let (_, list, _) = auth.get("/-/npm/v1/tokens").await;
    let key = list["objects"][0]["key"].as_str().unwrap().to_string();
    let (status, _, _) = auth
        .send("DELETE", &format!("/-/npm/v1/tokens/token/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        auth.get("/@acme%2ftok").await.0,
        StatusCode::UNAUTHORIZED,
        "refused at once where it was revoked"
    );
    assert_eq!(
        reader.get("/@acme%2ftok").await.0,
        StatusCode::OK,
        "another instance may read with it while it keeps its record (documented)"
    );
    let (status, body, _) = reader
        .send(
            "PUT",
            &format!("/-/package/{}/dist-tags/beta", escaped(name)),
            Some(json!("1.0.0")),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a write reads the record strongly: refused at once everywhere: {body}"
    );
}
