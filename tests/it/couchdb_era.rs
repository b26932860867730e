//! The registry's CouchDB-era API (issue 22), driven by npm 1.x's own registry library,
//! npm-registry-client, in the two pinned versions (`e2e::legacy_client`): 0.2.31 (npm 1.3:
//! step-by-step publish, CouchDB session cookie or Basic with `always-auth`) and 0.4.12 (npm 1.4:
//! one-PUT publish, Basic). Every operation of their README (adduser, get, publish, tag, star,
//! stars, deprecate, unpublish, upload, request, bugs) runs against the real `registry-server`,
//! on both backends, in open mode and in GitHub mode, and each effect is checked by reading the
//! document, the version and the tarball bytes back over plain HTTP.
//!
//! What the clients send, in short (legacy_client.cjs says how each one is configured):
//! - 0.2.x publish: `PUT /pkg` with an empty document (201, or 409 when the package exists), an
//!   anonymous `GET /pkg` for `_rev`, `PUT /pkg/-/pkg-1.0.0.tgz/-rev/<_rev>` with the bytes, then
//!   `PUT /pkg/1.0.0/-tag/latest` with the manifest and `dist`.
//! - 0.2.x without `always-auth` logs in with `POST /_session` before its first write and sends
//!   `Cookie: AuthSession=…` on writes only; its reads are anonymous.
//! - 0.4.x refuses to publish a name that is not URL-safe (any scoped name) before it sends
//!   anything, and GitHub mode stores scoped names only: there, its packages are published
//!   through today's API and the client does everything else.
//! - 0.2.x escapes a scoped name twice on its publish writes (`PUT /%2540acme%252Fwidgets`, the
//!   attachment and the release), once elsewhere (`GET /%40acme/widgets`).

use std::path::{Path, PathBuf};

use e2e::github_world::World;
use e2e::legacy_client::{LegacyClient, Outcome, Version};
use e2e::{Backend, Client, S3Host, TestRegistry, escaped, http, integrity, pkg, tgz};
use serde_json::{Value, json};
use sha1::Digest;

// ---------------------------------------------------------------------------------------------
// Helpers: registries, tarballs, and reading effects back.

/// A registry process in open mode on `backend`.
async fn open_registry(backend: Backend) -> TestRegistry {
    TestRegistry::builder()
        .backend(backend)
        .process()
        .start()
        .await
}

/// A registry process in GitHub mode against `world` on `backend`.
async fn github_registry(world: &World, backend: Backend, extra: &[(&str, &str)]) -> TestRegistry {
    let mut builder = TestRegistry::builder()
        .backend(backend)
        .github(world)
        .process();
    for (k, v) in extra {
        builder = builder.env(k, v);
    }
    builder.start().await
}

/// A package tarball for `name@version` whose `index.js` says `marker`, written under `root`;
/// its path and bytes.
fn tarball(root: &Path, name: &str, version: &str, marker: &str) -> (PathBuf, Vec<u8>) {
    let manifest = serde_json::to_vec(&json!({ "name": name, "version": version })).unwrap();
    let index = format!("module.exports = {marker:?};\n");
    let bytes = tgz(&[
        ("package/package.json", &manifest),
        ("package/index.js", index.as_bytes()),
    ]);
    let file = root.join(format!(
        "{}-{version}-{marker}.tgz",
        name.replace('/', "-").trim_start_matches('@')
    ));
    std::fs::write(&file, &bytes).unwrap();
    (file, bytes)
}

/// The package.json npm 1.x read from the package directory.
fn manifest(name: &str, version: &str) -> Value {
    json!({
        "name": name,
        "version": version,
        "description": format!("{name}, published by npm-registry-client"),
        "main": "index.js",
        "bugs": { "url": format!("https://example.com/{name}/issues") },
    })
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(bytes))
}

/// The whole document as its maintainers read it (`?write=true`).
async fn document(reader: &Client, name: &str) -> Value {
    reader.get_for_write(name).await.assert_status(200).body
}

/// Whether the package exists at all (404 once it is unpublished).
async fn exists(reader: &Client, name: &str) -> bool {
    let reply = reader.get_packument(name).await;
    match reply.status.as_u16() {
        200 => true,
        404 => false,
        s => panic!("GET {name}: {s} {}", reply.body),
    }
}

/// `GET /name/version`.
async fn version_doc(reader: &Client, name: &str, version: &str) -> Value {
    reader
        .get(&format!("/{}/{version}", escaped(name)))
        .send()
        .await
        .assert_status(200)
        .body
}

/// The tarball's bytes at `url` (following the AWS backend's redirect to S3), or None when it is
/// gone (404, or 410 for an unpublished version).
async fn tarball_at(reg: &TestRegistry, reader: &Client, url: &str) -> Option<Vec<u8>> {
    let path = url
        .strip_prefix(&reg.url)
        .unwrap_or_else(|| panic!("tarball URL {url} is not on the registry {}", reg.url));
    let reply = reader.get(path).send().await;
    match reply.status.as_u16() {
        200 => Some(reply.bytes.to_vec()),
        404 | 410 => None,
        302 | 303 | 307 => {
            let location = reply.header("location").expect("a redirect's Location");
            let got = http().get(location).send().await.unwrap();
            assert_eq!(got.status(), 200, "GET {location}");
            Some(got.bytes().await.unwrap().to_vec())
        }
        s => panic!("GET {path}: {s} {}", reply.body),
    }
}

/// The tarball of `name@version` at the registry's usual address, or None.
async fn tarball_of(
    reg: &TestRegistry,
    reader: &Client,
    name: &str,
    version: &str,
) -> Option<Vec<u8>> {
    let file = name.rsplit('/').next().unwrap_or(name);
    let url = format!("{}/{}/-/{file}-{version}.tgz", reg.url, escaped(name));
    tarball_at(reg, reader, &url).await
}

/// Checks that `name@version` is published with exactly `bytes`: in the document (with a
/// `_rev`), as the version (its `dist` the bytes' digests), and as the tarball it points at.
async fn assert_published(
    reg: &TestRegistry,
    reader: &Client,
    name: &str,
    version: &str,
    bytes: &[u8],
) -> Value {
    let doc = document(reader, name).await;
    assert!(
        doc["versions"][version].is_object(),
        "{name}@{version} is not in the document: {doc}"
    );
    assert!(
        doc["_rev"].as_str().is_some_and(|r| !r.is_empty()),
        "no _rev: {doc}"
    );
    let v = version_doc(reader, name, version).await;
    assert_eq!(v["name"], name, "{v}");
    assert_eq!(v["version"], version, "{v}");
    assert_eq!(v["dist"]["shasum"], sha1_hex(bytes), "{v}");
    assert_eq!(v["dist"]["integrity"], integrity(bytes), "{v}");
    let url = v["dist"]["tarball"].as_str().expect("dist.tarball");
    assert_eq!(
        tarball_at(reg, reader, url).await.as_deref(),
        Some(bytes),
        "the tarball of {name}@{version} at {url}"
    );
    doc
}

fn version_keys(doc: &Value) -> Vec<String> {
    let mut keys: Vec<String> = doc["versions"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Publishes `name@version` through today's API (npm's one PUT) with `token`, naming
/// `repository`; the tarball's bytes.
async fn seed(writer: &Client, name: &str, version: &str, repository: Option<&str>) -> Vec<u8> {
    let bytes = e2e::package_tgz(name, version);
    let mut p = pkg(name).version(version).tarball(bytes.clone());
    if let Some(r) = repository {
        p = p.repository(r);
    }
    let bugs = json!({ "url": format!("https://example.com/{name}/issues") });
    let v = version.to_string();
    p = p.edit(move |doc| doc["versions"][&v]["bugs"] = bugs);
    writer.publish(p).await.assert_status(201);
    bytes
}

// ---------------------------------------------------------------------------------------------
// Open mode, 0.4.x with Basic: every README operation (all of them work today except tag, stars
// and upload, which have tests of their own below).

#[tokio::test]
async fn v04_readme_operations_local() {
    v04_readme_operations(Backend::local()).await;
}

#[tokio::test]
async fn v04_readme_operations_aws() {
    v04_readme_operations(Backend::aws("legacy04", S3Host::Same)).await;
}

async fn v04_readme_operations(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let alice = LegacyClient::new(Version::V04, root, &reg.url).basic("alice", "s3cret");
    let name = "legacy-four";

    // adduser: the user document, answered 201.
    let added = alice.adduser().assert_ok();
    assert_eq!(added.status, Some(201), "{}", added.explain());
    assert_eq!(added.data["ok"], true, "{}", added.explain());

    // publish: a new package, then a second version (one PUT each).
    let mut bytes = Vec::new();
    for version in ["0.1.0", "0.1.1"] {
        let (file, b) = tarball(root, name, version, "first");
        let published = alice.publish(&manifest(name, version), &file).assert_ok();
        assert_eq!(published.requests(), vec![format!("PUT /{name}")]);
        let doc = assert_published(&reg, &reg, name, version, &b).await;
        assert_eq!(doc["dist-tags"]["latest"], version, "{doc}");
        bytes.push(b);
    }
    // The same version again, other bytes: 409, then the client reads the document, sees the
    // version and gives up; the stored bytes are the first ones.
    let (file, _) = tarball(root, name, "0.1.1", "second");
    let conflict = alice
        .publish(&manifest(name, "0.1.1"), &file)
        .assert_code("EPUBLISHCONFLICT");
    assert_eq!(conflict.statuses()[0], 409, "{}", conflict.explain());
    assert_published(&reg, &reg, name, "0.1.1", &bytes[1]).await;

    // get: the document, then 304 with the ETag the client saved, a version, a tag.
    let doc = document(&reg, name).await;
    let got = alice.get(name).assert_ok();
    assert_eq!(got.status, Some(200));
    assert_eq!(version_keys(&got.data), ["0.1.0", "0.1.1"]);
    assert_eq!(got.data["_rev"], doc["_rev"]);
    let again = alice.get(name).assert_ok();
    assert_eq!(again.status, Some(304), "{}", again.explain());
    assert_eq!(again.data, got.data);
    let v = alice.get(&format!("{name}/0.1.0")).assert_ok();
    assert_eq!(v.data["version"], "0.1.0");
    assert_eq!(v.data["dist"]["shasum"], sha1_hex(&bytes[0]));
    let latest = alice.get(&format!("{name}/latest")).assert_ok();
    assert_eq!(latest.data["version"], "0.1.1");

    // bugs: the latest version's `bugs`.
    let bugs = alice.bugs(name).assert_ok();
    assert_eq!(bugs.data, manifest(name, "0.1.1")["bugs"]);

    // star and unstar: the whole-document PUT with `_rev` and `users`.
    alice.star(name, true).assert_ok();
    assert_eq!(document(&reg, name).await["users"]["alice"], true);
    alice.star(name, false).assert_ok();
    assert!(document(&reg, name).await["users"].get("alice").is_none());

    // deprecate: a range of versions.
    alice.deprecate(name, "<0.1.1", "use 0.1.1").assert_ok();
    assert_eq!(
        version_doc(&reg, name, "0.1.0").await["deprecated"],
        "use 0.1.1"
    );
    assert!(
        version_doc(&reg, name, "0.1.1")
            .await
            .get("deprecated")
            .is_none()
    );

    // unpublish one version: the document without it, its tarball gone, the other kept.
    alice.unpublish(name, Some("0.1.0")).assert_ok();
    let doc = document(&reg, name).await;
    assert_eq!(version_keys(&doc), ["0.1.1"]);
    assert_eq!(doc["dist-tags"]["latest"], "0.1.1");
    assert_eq!(tarball_of(&reg, &reg, name, "0.1.0").await, None);
    assert_published(&reg, &reg, name, "0.1.1", &bytes[1]).await;

    // unpublish everything.
    alice.unpublish(name, None).assert_ok();
    assert!(!exists(&reg, name).await, "{name} still exists");
    assert_eq!(tarball_of(&reg, &reg, name, "0.1.1").await, None);
}

// ---------------------------------------------------------------------------------------------
// Open mode, 0.2.x: its reads and whole-document writes on a package published through today's
// API (its own publish has tests below), with Basic (`always-auth`) and with the session cookie.

#[tokio::test]
async fn v02_basic_readme_operations_local() {
    v02_readme_operations(Backend::local(), Cookie::No).await;
}

#[tokio::test]
async fn v02_basic_readme_operations_aws() {
    v02_readme_operations(Backend::aws("legacy02b", S3Host::Same), Cookie::No).await;
}

#[tokio::test]
async fn v02_cookie_readme_operations_local() {
    v02_readme_operations(Backend::local(), Cookie::Yes).await;
}

#[tokio::test]
async fn v02_cookie_readme_operations_aws() {
    v02_readme_operations(Backend::aws("legacy02c", S3Host::Same), Cookie::Yes).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cookie {
    Yes,
    No,
}

fn v02_client(root: &Path, url: &str, login: &str, password: &str, cookie: Cookie) -> LegacyClient {
    let client = LegacyClient::new(Version::V02, root, url);
    match cookie {
        Cookie::Yes => client.cookie(login, password),
        Cookie::No => client.basic(login, password),
    }
}

async fn v02_readme_operations(backend: Backend, cookie: Cookie) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let alice = v02_client(root, &reg.url, "alice", "s3cret", cookie);
    let name = "legacy-two";
    let first = seed(&reg, name, "0.1.0", None).await;
    let second = seed(&reg, name, "0.1.1", None).await;

    // adduser (0.2.x sends `password_sha` and `salt`, not the password).
    let added = alice.adduser().assert_ok();
    assert_eq!(added.status, Some(201), "{}", added.explain());

    // get: the document, 304, a version, a tag.
    let got = alice.get(name).assert_ok();
    assert_eq!(got.status, Some(200));
    assert_eq!(version_keys(&got.data), ["0.1.0", "0.1.1"]);
    assert_eq!(got.data["_rev"], document(&reg, name).await["_rev"]);
    assert_eq!(alice.get(name).assert_ok().status, Some(304));
    let v = alice.get(&format!("{name}/0.1.0")).assert_ok();
    assert_eq!(v.data["dist"]["shasum"], sha1_hex(&first));
    assert_eq!(
        alice.get(&format!("{name}/latest")).assert_ok().data["version"],
        "0.1.1"
    );
    assert_eq!(
        alice.bugs(name).assert_ok().data["url"],
        format!("https://example.com/{name}/issues")
    );

    // star and unstar.
    let starred = alice.star(name, true).assert_ok();
    assert_eq!(document(&reg, name).await["users"]["alice"], true);
    if cookie == Cookie::Yes {
        assert_session(&starred);
    }
    alice.star(name, false).assert_ok();
    assert!(document(&reg, name).await["users"].get("alice").is_none());

    // deprecate.
    alice.deprecate(name, "0.1.0", "use 0.1.1").assert_ok();
    assert_eq!(
        version_doc(&reg, name, "0.1.0").await["deprecated"],
        "use 0.1.1"
    );

    // unpublish one version (0.2.x calls back without an error when its first read fails, so
    // only reading back tells).
    alice.unpublish(name, Some("0.1.0")).assert_ok();
    let doc = document(&reg, name).await;
    assert_eq!(version_keys(&doc), ["0.1.1"]);
    assert_eq!(tarball_of(&reg, &reg, name, "0.1.0").await, None);
    assert_published(&reg, &reg, name, "0.1.1", &second).await;

    // unpublish everything.
    alice.unpublish(name, None).assert_ok();
    assert!(!exists(&reg, name).await, "{name} still exists");
}

/// Checks that a 0.2.x operation logged in: `POST /_session` first, answered 200 with a cookie
/// named `AuthSession`, sent on the writes that followed.
#[track_caller]
fn assert_session(outcome: &Outcome) {
    let session = outcome
        .session
        .as_ref()
        .unwrap_or_else(|| panic!("no CouchDB session:\n{}", outcome.explain()));
    assert!(
        session["AuthSession"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{session}"
    );
}

// ---------------------------------------------------------------------------------------------
// Open mode: the operations that fail today (issue 22).

/// `client.tag`: `PUT /pkg/stable` with the JSON string `"0.1.0"`, as `PUT
/// /-/package/pkg/dist-tags/stable` does, from all three clients.
#[tokio::test]
async fn tag_sets_the_dist_tag_local() {
    tag_sets_the_dist_tag(Backend::local()).await;
}

#[tokio::test]
async fn tag_sets_the_dist_tag_aws() {
    tag_sets_the_dist_tag(Backend::aws("legacytag", S3Host::Same)).await;
}

async fn tag_sets_the_dist_tag(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let name = "legacy-tag";
    seed(&reg, name, "0.1.0", None).await;
    seed(&reg, name, "0.1.1", None).await;
    let clients = [
        (
            "stable",
            "0.1.0",
            LegacyClient::new(Version::V04, root, &reg.url).basic("alice", "pw"),
        ),
        (
            "beta",
            "0.1.0",
            v02_client(root, &reg.url, "alice", "pw", Cookie::No),
        ),
        (
            "next",
            "0.1.1",
            v02_client(root, &reg.url, "alice", "pw", Cookie::Yes),
        ),
    ];
    for (tag, version, client) in &clients {
        let tagged = client.tag(name, version, tag).assert_ok();
        assert_eq!(
            tagged.requests().last().map(String::as_str),
            Some(format!("PUT /{name}/{tag}").as_str()),
            "{}",
            tagged.explain()
        );
        let tags = reg.dist_tags(name).await.assert_status(200).body;
        assert_eq!(tags[*tag], *version, "{tags}");
        assert_eq!(document(&reg, name).await["dist-tags"][*tag], *version);
    }
    // Moving a tag, and latest.
    clients[0].2.tag(name, "0.1.1", "stable").assert_ok();
    clients[0].2.tag(name, "0.1.0", "latest").assert_ok();
    let tags = reg.dist_tags(name).await.assert_status(200).body;
    assert_eq!(
        tags,
        json!({ "latest": "0.1.0", "stable": "0.1.1", "beta": "0.1.0", "next": "0.1.1" })
    );
    // A version that does not exist: refused, nothing changes.
    clients[0].2.tag(name, "9.9.9", "stable").assert_failed();
    assert_eq!(reg.dist_tags(name).await.body["stable"], "0.1.1");
}

/// 0.2.x's publish, request by request: `PUT /pkg` with an empty document (201 for a new
/// package, 409 for an existing one), `GET /pkg` for `_rev`, the tarball as an attachment, then
/// `PUT /pkg/version/-tag/latest`.
#[tokio::test]
async fn v02_step_by_step_publish_basic_local() {
    v02_step_by_step_publish(Backend::local(), Cookie::No).await;
}

#[tokio::test]
async fn v02_step_by_step_publish_basic_aws() {
    v02_step_by_step_publish(Backend::aws("legacy02p", S3Host::Same), Cookie::No).await;
}

#[tokio::test]
async fn v02_step_by_step_publish_cookie_local() {
    v02_step_by_step_publish(Backend::local(), Cookie::Yes).await;
}

#[tokio::test]
async fn v02_step_by_step_publish_cookie_aws() {
    v02_step_by_step_publish(Backend::aws("legacy02q", S3Host::Same), Cookie::Yes).await;
}

async fn v02_step_by_step_publish(backend: Backend, cookie: Cookie) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let alice = v02_client(root, &reg.url, "alice", "s3cret", cookie);
    let name = "legacy-steps";

    // A new package.
    let (file, first) = tarball(root, name, "0.1.0", "first");
    let published = alice.publish(&manifest(name, "0.1.0"), &file).assert_ok();
    // (The cookie client's `POST /_session` is couch-login's, which the client does not log.)
    let requests = published.requests();
    assert_eq!(requests.len(), 4, "{}", published.explain());
    assert_eq!(requests[0], format!("PUT /{name}"));
    assert_eq!(requests[1], format!("GET /{name}"));
    assert!(
        requests[2].starts_with(&format!("PUT /{name}/-/{name}-0.1.0.tgz/-rev/")),
        "{}",
        published.explain()
    );
    assert_eq!(requests[3], format!("PUT /{name}/0.1.0/-tag/latest"));
    assert_eq!(
        published.statuses(),
        [201, 200, 201, 201],
        "{}",
        published.explain()
    );
    if cookie == Cookie::Yes {
        assert_session(&published);
    }
    let doc = assert_published(&reg, &reg, name, "0.1.0", &first).await;
    assert_eq!(doc["dist-tags"]["latest"], "0.1.0");
    assert_eq!(
        doc["versions"]["0.1.0"]["description"],
        manifest(name, "0.1.0")["description"]
    );

    // A second version: `PUT /pkg` answers 409 and the client goes on.
    let (file, second) = tarball(root, name, "0.1.1", "first");
    let published = alice.publish(&manifest(name, "0.1.1"), &file).assert_ok();
    assert_eq!(
        published.statuses(),
        [409, 200, 201, 201],
        "{}",
        published.explain()
    );
    let doc = assert_published(&reg, &reg, name, "0.1.1", &second).await;
    assert_eq!(doc["dist-tags"]["latest"], "0.1.1");
    assert_published(&reg, &reg, name, "0.1.0", &first).await;

    // The same version again: the client sees it in the document and stops.
    let (file, _) = tarball(root, name, "0.1.1", "second");
    alice
        .publish(&manifest(name, "0.1.1"), &file)
        .assert_code("EPUBLISHCONFLICT");
    assert_published(&reg, &reg, name, "0.1.1", &second).await;
}

/// `PUT /pkg` with an empty document creates an empty package (201 `{ok, id, rev}`, then the
/// document has `_rev` and no versions); for an existing package it answers 409, as CouchDB did.
#[tokio::test]
async fn empty_document_creates_an_empty_package_local() {
    empty_document_creates_an_empty_package(Backend::local()).await;
}

#[tokio::test]
async fn empty_document_creates_an_empty_package_aws() {
    empty_document_creates_an_empty_package(Backend::aws("legacyempty", S3Host::Same)).await;
}

async fn empty_document_creates_an_empty_package(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let alice = v02_client(root, &reg.url, "alice", "s3cret", Cookie::No);
    let name = "legacy-empty";
    // Exactly what 0.2.31's publish sends first.
    let empty = json!({
        "_id": name,
        "name": name,
        "description": "nothing yet",
        "dist-tags": {},
        "versions": {},
        "readme": "",
        "maintainers": [{ "name": "alice", "email": "alice@example.com" }],
    });
    let created = alice.request("PUT", name, Some(&empty)).assert_ok();
    assert_eq!(created.status, Some(201), "{}", created.explain());
    assert_eq!(created.data["ok"], true, "{}", created.explain());
    assert_eq!(created.data["id"], name, "{}", created.explain());
    let doc = document(&reg, name).await;
    assert_eq!(doc["versions"], json!({}), "{doc}");
    assert!(doc["_rev"].is_string(), "{doc}");
    assert_eq!(created.data["rev"], doc["_rev"], "{}", created.explain());
    let got = alice.get(name).assert_ok();
    assert_eq!(got.data["versions"], json!({}));
    assert_eq!(got.data["_rev"], doc["_rev"]);

    // Again: the package exists.
    let again = alice.request("PUT", name, Some(&empty)).assert_failed();
    assert_eq!(again.status, Some(409), "{}", again.explain());
    // And for a package with versions.
    seed(&reg, "legacy-full", "1.0.0", None).await;
    let mut full = empty.clone();
    full["_id"] = json!("legacy-full");
    full["name"] = json!("legacy-full");
    let again = alice
        .request("PUT", "legacy-full", Some(&full))
        .assert_failed();
    assert_eq!(again.status, Some(409), "{}", again.explain());
    assert_eq!(
        version_keys(&document(&reg, "legacy-full").await),
        ["1.0.0"]
    );
}

/// `client.upload` stores a pending tarball; `PUT /pkg/version` (and `/-tag/TAG`) releases it,
/// checking the name, the version and the digests against the stored bytes.
#[tokio::test]
async fn upload_then_release_local() {
    upload_then_release(Backend::local()).await;
}

#[tokio::test]
async fn upload_then_release_aws() {
    upload_then_release(Backend::aws("legacyupload", S3Host::Same)).await;
}

async fn upload_then_release(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let alice = LegacyClient::new(Version::V04, root, &reg.url).basic("alice", "s3cret");
    let name = "legacy-release";
    seed(&reg, name, "0.1.0", None).await;

    // Uploads the tarball of `version` with the document's current `_rev`; its path and bytes.
    let upload = |version: &'static str, marker: &'static str| {
        let alice = alice.clone();
        let reg = &reg;
        async move {
            let rev = document(reg, name).await["_rev"]
                .as_str()
                .unwrap()
                .to_string();
            let (file, bytes) = tarball(root, name, version, marker);
            let uploaded = alice
                .upload(&format!("{name}/-/{name}-{version}.tgz/-rev/{rev}"), &file)
                .assert_ok();
            assert_eq!(uploaded.status, Some(201), "{}", uploaded.explain());
            bytes
        }
    };
    let release = |version: &str, bytes: &[u8]| {
        let mut m = manifest(name, version);
        m["_id"] = json!(format!("{name}@{version}"));
        m["dist"] = json!({
            "shasum": sha1_hex(bytes),
            "tarball": format!("{}/{name}/-/{name}-{version}.tgz", reg.url),
        });
        m
    };

    // PUT /pkg/0.1.2: the version, from the uploaded bytes; latest stays where it was.
    let bytes = upload("0.1.2", "a").await;
    let released = alice
        .request(
            "PUT",
            &format!("{name}/0.1.2"),
            Some(&release("0.1.2", &bytes)),
        )
        .assert_ok();
    assert_eq!(released.status, Some(201), "{}", released.explain());
    let doc = assert_published(&reg, &reg, name, "0.1.2", &bytes).await;
    assert_eq!(doc["dist-tags"]["latest"], "0.1.0", "{doc}");

    // PUT /pkg/0.1.3/-tag/latest: the same, and the tag moves; with `dist.integrity` too.
    let bytes3 = upload("0.1.3", "b").await;
    let mut body = release("0.1.3", &bytes3);
    body["dist"]["integrity"] = json!(integrity(&bytes3));
    alice
        .request("PUT", &format!("{name}/0.1.3/-tag/latest"), Some(&body))
        .assert_ok();
    let doc = assert_published(&reg, &reg, name, "0.1.3", &bytes3).await;
    assert_eq!(doc["dist-tags"]["latest"], "0.1.3", "{doc}");

    // The version exists: 409, and the stored bytes stay.
    let refused = alice
        .request(
            "PUT",
            &format!("{name}/0.1.2"),
            Some(&release("0.1.2", &bytes)),
        )
        .assert_failed();
    assert_eq!(refused.status, Some(409), "{}", refused.explain());
    assert_published(&reg, &reg, name, "0.1.2", &bytes).await;

    // Refusals, none of which creates the version: a shasum or an integrity that does not match
    // the uploaded bytes, a name or a version other than the URL's, nothing uploaded.
    let bytes4 = upload("0.1.4", "c").await;
    let mut wrong_sha = release("0.1.4", &bytes4);
    wrong_sha["dist"]["shasum"] = json!(sha1_hex(b"other bytes"));
    let mut wrong_integrity = release("0.1.4", &bytes4);
    wrong_integrity["dist"]["integrity"] = json!(integrity(b"other bytes"));
    let mut wrong_name = release("0.1.4", &bytes4);
    wrong_name["name"] = json!("legacy-other");
    let mut wrong_version = release("0.1.4", &bytes4);
    wrong_version["version"] = json!("0.1.5");
    for (what, body, path) in [
        ("shasum", &wrong_sha, format!("{name}/0.1.4")),
        ("integrity", &wrong_integrity, format!("{name}/0.1.4")),
        ("name", &wrong_name, format!("{name}/0.1.4")),
        ("version", &wrong_version, format!("{name}/0.1.4")),
        (
            "nothing uploaded",
            &release("0.1.6", &bytes4),
            format!("{name}/0.1.6"),
        ),
    ] {
        let refused = alice.request("PUT", &path, Some(body)).assert_failed();
        let status = refused.status.unwrap_or_default();
        assert!(
            (400..500).contains(&status),
            "{what}: {}",
            refused.explain()
        );
    }
    let doc = document(&reg, name).await;
    assert_eq!(version_keys(&doc), ["0.1.0", "0.1.2", "0.1.3"], "{doc}");
    // The right document still releases 0.1.4.
    alice
        .request(
            "PUT",
            &format!("{name}/0.1.4"),
            Some(&release("0.1.4", &bytes4)),
        )
        .assert_ok();
    assert_published(&reg, &reg, name, "0.1.4", &bytes4).await;
}

/// Runs `registry-server sweep` on `reg`'s storage (through the running server's control socket
/// on the local backend), with `--older-than-minutes` when given (a day by default); its output.
fn sweep(reg: &TestRegistry, older_than_minutes: Option<u64>) -> String {
    let mut command = std::process::Command::new(e2e::sibling_binary("registry-server"));
    command
        .envs(reg.backend().env())
        .arg("--data")
        .arg(reg.data_dir())
        .arg("sweep");
    if let Some(minutes) = older_than_minutes {
        command.args(["--older-than-minutes", &minutes.to_string()]);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An uploaded tarball is not a version: its download answers 404 until it is released. The
/// sweep's default age (a day) keeps an upload waiting for its release; an age of 0 removes it,
/// and a release of it then answers that the upload is no longer stored; uploaded again, it
/// releases.
#[tokio::test]
async fn an_unreleased_upload_is_not_served_and_the_sweep_removes_it_local() {
    an_unreleased_upload_is_not_served_and_the_sweep_removes_it(Backend::local()).await;
}

#[tokio::test]
async fn an_unreleased_upload_is_not_served_and_the_sweep_removes_it_aws() {
    an_unreleased_upload_is_not_served_and_the_sweep_removes_it(Backend::aws(
        "legacysweep",
        S3Host::Same,
    ))
    .await;
}

async fn an_unreleased_upload_is_not_served_and_the_sweep_removes_it(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let alice = LegacyClient::new(Version::V04, root, &reg.url).basic("alice", "s3cret");
    let name = "legacy-swept";
    seed(&reg, name, "0.1.0", None).await;
    let upload = |version: &'static str, marker: &'static str| {
        let (alice, reg) = (alice.clone(), &reg);
        async move {
            let rev = document(reg, name).await["_rev"]
                .as_str()
                .unwrap()
                .to_string();
            let (file, bytes) = tarball(root, name, version, marker);
            let uploaded = alice
                .upload(&format!("{name}/-/{name}-{version}.tgz/-rev/{rev}"), &file)
                .assert_ok();
            assert_eq!(uploaded.status, Some(201), "{}", uploaded.explain());
            bytes
        }
    };
    let release = |version: &str, bytes: &[u8]| {
        let mut m = manifest(name, version);
        m["_id"] = json!(format!("{name}@{version}"));
        m["dist"] = json!({
            "shasum": sha1_hex(bytes),
            "tarball": format!("{}/{name}/-/{name}-{version}.tgz", reg.url),
        });
        alice.request("PUT", &format!("{name}/{version}"), Some(&m))
    };

    let kept = upload("0.2.0", "kept").await;
    let swept = upload("0.3.0", "swept").await;
    // Neither upload is a version, nor downloadable.
    for version in ["0.2.0", "0.3.0"] {
        reg.get(&format!("/{name}/-/{name}-{version}.tgz"))
            .send()
            .await
            .assert_status(404);
        reg.get(&format!("/{name}/{version}"))
            .send()
            .await
            .assert_status(404);
    }
    assert_eq!(version_keys(&document(&reg, name).await), ["0.1.0"]);
    assert_eq!(reg.tarball_count().await, 3, "0.1.0 and the two uploads");

    // The default age keeps both uploads: 0.2.0 releases from its bytes.
    // (The AWS backend lists only what is older than the age; the embedded one checks all.)
    let out = sweep(&reg, None);
    assert!(out.contains(" tarballs, removed 0,"), "{out}");
    assert_eq!(reg.tarball_count().await, 3);
    let released = release("0.2.0", &kept).assert_ok();
    assert_eq!(released.status, Some(201), "{}", released.explain());
    assert_published(&reg, &reg, name, "0.2.0", &kept).await;

    // An age of 0 removes the upload no release claimed, and nothing else.
    let out = sweep(&reg, Some(0));
    assert!(out.contains("checked 3 tarballs, removed 1,"), "{out}");
    assert_eq!(reg.tarball_count().await, 2);
    let refused = release("0.3.0", &swept).assert_failed();
    assert_eq!(refused.status, Some(400), "{}", refused.explain());
    assert!(
        refused
            .explain()
            .contains("is no longer stored; upload it again"),
        "{}",
        refused.explain()
    );
    let doc = document(&reg, name).await;
    assert_eq!(version_keys(&doc), ["0.1.0", "0.2.0"], "{doc}");
    assert_published(&reg, &reg, name, "0.2.0", &kept).await;

    // Uploaded again, it releases.
    let again = upload("0.3.0", "swept").await;
    assert_eq!(again, swept, "the same bytes");
    release("0.3.0", &swept).assert_ok();
    assert_published(&reg, &reg, name, "0.3.0", &swept).await;
}

/// The publish answer's `rev` is the document's `_rev` (today it is the version number).
#[tokio::test]
async fn publish_answers_the_documents_rev_local() {
    publish_answers_the_documents_rev(Backend::local()).await;
}

#[tokio::test]
async fn publish_answers_the_documents_rev_aws() {
    publish_answers_the_documents_rev(Backend::aws("legacyrev", S3Host::Same)).await;
}

async fn publish_answers_the_documents_rev(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let alice = LegacyClient::new(Version::V04, root, &reg.url).basic("alice", "s3cret");
    let name = "legacy-rev";
    for version in ["1.0.0", "1.0.1"] {
        let (file, _) = tarball(root, name, version, "x");
        let published = alice.publish(&manifest(name, version), &file).assert_ok();
        let doc = document(&reg, name).await;
        assert_eq!(published.data["ok"], true, "{}", published.explain());
        assert_eq!(published.data["id"], name, "{}", published.explain());
        assert_eq!(
            published.data["rev"],
            doc["_rev"],
            "the answer's rev is not the document's _rev:\n{}",
            published.explain()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// GitHub mode: `Authorization: Basic` with the GitHub login and a GitHub token (or a registry
// token) as password, and the session cookie.

/// 0.4.x with Basic on every operation, on a package of a private repository.
#[tokio::test]
async fn github_v04_basic_local() {
    github_basic(Backend::local(), Version::V04).await;
}

#[tokio::test]
async fn github_v04_basic_aws() {
    github_basic(Backend::aws("legacygh04", S3Host::Same), Version::V04).await;
}

/// 0.2.x with `always-auth` (Basic on every request), on a package of a private repository.
#[tokio::test]
async fn github_v02_basic_local() {
    github_basic(Backend::local(), Version::V02).await;
}

#[tokio::test]
async fn github_v02_basic_aws() {
    github_basic(Backend::aws("legacygh02", S3Host::Same), Version::V02).await;
}

async fn github_basic(backend: Backend, version: Version) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let reg = github_registry(&world, backend, &[]).await;
    let as_alice = reg.as_user(&world.alice.token);
    let basic = |login: &str, password: &str| {
        LegacyClient::new(version, root, &reg.url).basic(login, password)
    };
    let alice = basic("alice", &world.alice.token);
    let name = "@acme/widgets";
    let repo = Some("github:acme/widgets");

    // Basic wherever a bearer token goes.
    let whoami = reg
        .get("/-/whoami")
        .header(
            "authorization",
            &format!(
                "Basic {}",
                base64_encode(&format!("alice:{}", world.alice.token))
            ),
        )
        .send()
        .await;
    assert_eq!(whoami.status, 200, "{:?}", whoami.body);
    assert_eq!(whoami.body["username"], "alice");

    if version == Version::V04 {
        // 0.4.x refuses a scoped name itself, before it sends anything.
        let (file, _) = tarball(root, name, "1.0.0", "x");
        let refused = alice
            .publish(&manifest(name, "1.0.0"), &file)
            .assert_failed();
        assert_eq!(
            refused.error.as_ref().map(|e| e.message.as_str()),
            Some("invalid name: must be url-safe")
        );
        assert!(refused.requests().is_empty(), "{}", refused.explain());
    }
    let first = seed(&as_alice, name, "1.0.0", repo).await;
    let second = seed(&as_alice, name, "1.0.1", repo).await;

    // get, with Basic: the document, 304, a version, a tag.
    let got = alice.get(name).assert_ok();
    assert_eq!(
        version_keys(&got.data),
        ["1.0.0", "1.0.1"],
        "{}",
        got.explain()
    );
    assert_eq!(alice.get(name).assert_ok().status, Some(304));
    let v = alice.get(&format!("{name}/1.0.0")).assert_ok();
    assert_eq!(v.data["dist"]["shasum"], sha1_hex(&first));
    assert_eq!(
        alice.get(&format!("{name}/latest")).assert_ok().data["version"],
        "1.0.1"
    );
    assert_eq!(
        alice.bugs(name).assert_ok().data["url"],
        format!("https://example.com/{name}/issues")
    );

    // dave (no access) sees nothing; carol (pull) reads but may not write.
    basic("dave", &world.dave.token).get(name).assert_failed();
    let carol = basic("carol", &world.carol.token);
    carol.get(name).assert_ok();
    carol.tag(name, "1.0.0", "stable").assert_failed();
    carol
        .deprecate(name, "1.0.0", "carol was here")
        .assert_failed();
    carol.star(name, true).assert_ok();
    let doc = document(&as_alice, name).await;
    assert_eq!(doc["dist-tags"], json!({ "latest": "1.0.1" }));
    assert!(
        doc["versions"]["1.0.0"].get("deprecated").is_none(),
        "{doc}"
    );
    // A wrong token writes nothing.
    basic("alice", "ghp_wrong")
        .deprecate(name, "1.0.0", "wrong token")
        .assert_failed();

    // tag.
    alice.tag(name, "1.0.0", "stable").assert_ok();
    assert_eq!(
        document(&as_alice, name).await["dist-tags"]["stable"],
        "1.0.0"
    );

    // star and unstar.
    alice.star(name, true).assert_ok();
    let users = &document(&as_alice, name).await["users"];
    assert_eq!(users["alice"], true, "{users}");
    assert_eq!(users["carol"], true, "{users}");
    alice.star(name, false).assert_ok();
    assert!(
        document(&as_alice, name).await["users"]
            .get("alice")
            .is_none()
    );

    // deprecate.
    alice.deprecate(name, "1.0.0", "use 1.0.1").assert_ok();
    assert_eq!(
        version_doc(&as_alice, name, "1.0.0").await["deprecated"],
        "use 1.0.1"
    );

    // unpublish one version (alice is admin), then everything.
    alice.unpublish(name, Some("1.0.0")).assert_ok();
    let doc = document(&as_alice, name).await;
    assert_eq!(version_keys(&doc), ["1.0.1"]);
    assert_eq!(tarball_of(&reg, &as_alice, name, "1.0.0").await, None);
    assert_published(&reg, &as_alice, name, "1.0.1", &second).await;
    alice.unpublish(name, None).assert_ok();
    assert!(!exists(&as_alice, name).await, "{name} still exists");
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// 0.2.x with its session cookie. Its reads are anonymous (couch-login's cookie goes on writes
/// only), so the package belongs to a public repository and the registry lets anyone read public
/// packages.
#[tokio::test]
async fn github_v02_cookie_local() {
    github_cookie(Backend::local()).await;
}

#[tokio::test]
async fn github_v02_cookie_aws() {
    github_cookie(Backend::aws("legacyghck", S3Host::Same)).await;
}

async fn github_cookie(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let reg = github_registry(&world, backend, &[("REGISTRY_PUBLIC_READ", "true")]).await;
    let as_alice = reg.as_user(&world.alice.token);
    let cookie = |login: &str, password: &str| {
        LegacyClient::new(Version::V02, root, &reg.url).cookie(login, password)
    };
    let alice = cookie("alice", &world.alice.token);
    let name = "@acme/public-lib";
    let repo = Some("github:acme/public-lib");
    let first = seed(&as_alice, name, "1.0.0", repo).await;
    let second = seed(&as_alice, name, "1.0.1", repo).await;

    // Anonymous reads.
    let got = alice.get(name).assert_ok();
    assert_eq!(
        version_keys(&got.data),
        ["1.0.0", "1.0.1"],
        "{}",
        got.explain()
    );
    assert_eq!(
        alice.get(&format!("{name}/1.0.0")).assert_ok().data["dist"]["shasum"],
        sha1_hex(&first)
    );

    // tag: the client logs in first; the cookie is a registry token, alice's.
    let tagged = alice.tag(name, "1.0.0", "stable").assert_ok();
    assert_session(&tagged);
    let session = tagged.session.as_ref().unwrap()["AuthSession"]
        .as_str()
        .unwrap()
        .to_string();
    let whoami = reg.as_user(&session).whoami().await.assert_status(200);
    assert_eq!(whoami.body["username"], "alice");
    assert_eq!(
        document(&as_alice, name).await["dist-tags"]["stable"],
        "1.0.0"
    );

    // A wrong token: the login is refused and nothing is written.
    let refused = cookie("alice", "ghp_wrong")
        .deprecate(name, "1.0.0", "wrong token")
        .assert_failed();
    assert!(
        !refused.requests().iter().any(|r| r.starts_with("PUT")),
        "{}",
        refused.explain()
    );
    // carol may read, not write.
    cookie("carol", &world.carol.token)
        .deprecate(name, "1.0.0", "carol was here")
        .assert_failed();
    assert!(
        version_doc(&as_alice, name, "1.0.0")
            .await
            .get("deprecated")
            .is_none()
    );

    // star, unstar, deprecate, unpublish one, unpublish all.
    alice.star(name, true).assert_ok();
    assert_eq!(document(&as_alice, name).await["users"]["alice"], true);
    alice.star(name, false).assert_ok();
    assert!(
        document(&as_alice, name).await["users"]
            .get("alice")
            .is_none()
    );
    alice.deprecate(name, "1.0.0", "use 1.0.1").assert_ok();
    assert_eq!(
        version_doc(&as_alice, name, "1.0.0").await["deprecated"],
        "use 1.0.1"
    );
    alice.unpublish(name, Some("1.0.0")).assert_ok();
    assert_eq!(version_keys(&document(&as_alice, name).await), ["1.0.1"]);
    assert_eq!(tarball_of(&reg, &as_alice, name, "1.0.0").await, None);
    assert_published(&reg, &as_alice, name, "1.0.1", &second).await;
    alice.unpublish(name, None).assert_ok();
    assert!(!exists(&as_alice, name).await, "{name} still exists");
}

/// `client.stars(username)`: CouchDB's `starredByUser` view, `{ rows: [{ key, value }] }` with
/// the user as the key and each starred package as a value.
#[tokio::test]
async fn stars_lists_starred_packages_local() {
    stars_lists_starred_packages(Backend::local()).await;
}

#[tokio::test]
async fn stars_lists_starred_packages_aws() {
    stars_lists_starred_packages(Backend::aws("legacystars", S3Host::Same)).await;
}

async fn stars_lists_starred_packages(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reg = open_registry(backend).await;
    let v04 = LegacyClient::new(Version::V04, root, &reg.url).basic("alice", "s3cret");
    let v02 = v02_client(root, &reg.url, "alice", "s3cret", Cookie::No);
    for name in ["legacy-star-a", "legacy-star-b", "legacy-star-c"] {
        seed(&reg, name, "1.0.0", None).await;
    }
    v04.star("legacy-star-a", true).assert_ok();
    v02.star("legacy-star-b", true).assert_ok();
    LegacyClient::new(Version::V04, root, &reg.url)
        .basic("bob", "pw")
        .star("legacy-star-c", true)
        .assert_ok();
    for client in [&v04, &v02] {
        let stars = client.stars("alice").assert_ok();
        assert_eq!(
            stars.requests(),
            ["GET /-/_view/starredByUser?key=%22alice%22"],
            "{}",
            stars.explain()
        );
        let mut values: Vec<&str> = stars.data["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("no rows: {}", stars.explain()))
            .iter()
            .map(|row| {
                assert_eq!(row["key"], "alice", "{row}");
                row["value"].as_str().unwrap_or_default()
            })
            .collect();
        values.sort_unstable();
        assert_eq!(
            values,
            ["legacy-star-a", "legacy-star-b"],
            "{}",
            stars.explain()
        );
    }
    let none = v04.stars("carol").assert_ok();
    assert_eq!(none.data["rows"], json!([]), "{}", none.explain());
    // An unstar leaves the view; an unpublished package is not listed.
    v04.star("legacy-star-a", false).assert_ok();
    let after = v02.stars("alice").assert_ok();
    assert_eq!(
        after.data["rows"],
        json!([{ "id": "legacy-star-b", "key": "alice", "value": "legacy-star-b" }]),
        "{}",
        after.explain()
    );
    let doc = document(&reg, "legacy-star-b").await;
    let rev = doc["_rev"].as_str().unwrap();
    reg.delete(&format!("/legacy-star-b/-rev/{rev}"))
        .send()
        .await
        .assert_status(200);
    let gone = v04.stars("alice").assert_ok();
    assert_eq!(gone.data["rows"], json!([]), "{}", gone.explain());
}

/// 0.2.x publishes a scoped package (GitHub mode stores no other) step by step. The client
/// escapes the name twice on its writes (`PUT /%2540acme%252Fwidgets`,
/// `PUT /%2540acme%252Fwidgets/1.0.0/-tag/latest`) and once on its read (`GET /%40acme/widgets`).
#[tokio::test]
async fn github_v02_publishes_a_scoped_package_basic_local() {
    github_v02_publishes_a_scoped_package(Backend::local(), Cookie::No).await;
}

#[tokio::test]
async fn github_v02_publishes_a_scoped_package_cookie_aws() {
    github_v02_publishes_a_scoped_package(Backend::aws("legacyghpub", S3Host::Same), Cookie::Yes)
        .await;
}

async fn github_v02_publishes_a_scoped_package(backend: Backend, cookie: Cookie) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let reg = github_registry(&world, backend, &[("REGISTRY_PUBLIC_READ", "true")]).await;
    let as_alice = reg.as_user(&world.alice.token);
    let alice = v02_client(root, &reg.url, "alice", &world.alice.token, cookie);
    // With the cookie the client's reads are anonymous: a public repository's package.
    let (name, repo) = match cookie {
        Cookie::Yes => ("@acme/public-lib", "github:acme/public-lib"),
        Cookie::No => ("@acme/widgets", "github:acme/widgets"),
    };
    for version in ["1.0.0", "1.0.1"] {
        let (file, bytes) = tarball(root, name, version, "x");
        let mut m = manifest(name, version);
        m["repository"] = json!(repo);
        let published = alice.publish(&m, &file).assert_ok();
        let doc = assert_published(&reg, &as_alice, name, version, &bytes).await;
        assert_eq!(
            doc["dist-tags"]["latest"],
            version,
            "{}",
            published.explain()
        );
    }
    // bob (push) publishes too; carol (pull) may not.
    let (file, bytes) = tarball(root, name, "1.0.2", "x");
    let mut m = manifest(name, "1.0.2");
    m["repository"] = json!(repo);
    v02_client(root, &reg.url, "carol", &world.carol.token, cookie)
        .publish(&m, &file)
        .assert_failed();
    assert!(document(&as_alice, name).await["versions"]["1.0.2"].is_null());
    if cookie == Cookie::No {
        v02_client(root, &reg.url, "bob", &world.bob.token, cookie)
            .publish(&m, &file)
            .assert_ok();
        assert_published(&reg, &as_alice, name, "1.0.2", &bytes).await;
    }
}

/// GitHub mode: a user with pull access only (carol) may neither upload a tarball nor release
/// one; both are refused (403) and change nothing: no upload is kept (a release then finds none),
/// alice's upload is not claimed by carol's release, and no version appears. alice's own upload
/// and release of the same version then publish it.
#[tokio::test]
async fn github_pull_only_user_cannot_upload_or_release_local() {
    github_pull_only_user_cannot_upload_or_release(Backend::local()).await;
}

#[tokio::test]
async fn github_pull_only_user_cannot_upload_or_release_aws() {
    github_pull_only_user_cannot_upload_or_release(Backend::aws("legacyghpull", S3Host::Same))
        .await;
}

async fn github_pull_only_user_cannot_upload_or_release(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let reg = github_registry(&world, backend, &[]).await;
    let as_alice = reg.as_user(&world.alice.token);
    let name = "@acme/widgets";
    let first = seed(&as_alice, name, "1.0.0", Some("github:acme/widgets")).await;
    let alice = LegacyClient::new(Version::V04, root, &reg.url).basic("alice", &world.alice.token);
    let carol = LegacyClient::new(Version::V04, root, &reg.url).basic("carol", &world.carol.token);
    let rev = document(&as_alice, name).await["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    // The name escaped as 0.2.x's publish escapes it (the client escapes it again).
    let encoded = "%40acme%2Fwidgets";
    let upload_path = format!("{encoded}/-/widgets-1.0.1.tgz/-rev/{rev}");
    let (file, bytes) = tarball(root, name, "1.0.1", "x");
    let mut release = manifest(name, "1.0.1");
    release["repository"] = json!("github:acme/widgets");
    release["_id"] = json!(format!("{name}@1.0.1"));
    release["dist"] = json!({ "shasum": sha1_hex(&bytes) });
    let release_path = format!("{encoded}/1.0.1/-tag/latest");
    let unchanged = |doc: &Value| {
        assert_eq!(version_keys(doc), ["1.0.0"], "{doc}");
        assert_eq!(doc["dist-tags"], json!({ "latest": "1.0.0" }), "{doc}");
    };

    // carol's upload: refused, nothing kept.
    let refused = carol.upload(&upload_path, &file).assert_failed();
    assert_eq!(refused.status, Some(403), "{}", refused.explain());
    assert_eq!(reg.tarball_count().await, 1, "only 1.0.0's tarball");
    // So there is nothing for a release to claim, even alice's.
    let nothing = alice
        .request("PUT", &release_path, Some(&release))
        .assert_failed();
    assert_eq!(nothing.status, Some(400), "{}", nothing.explain());
    assert!(
        nothing.explain().contains("no tarball was uploaded"),
        "{}",
        nothing.explain()
    );
    unchanged(&document(&as_alice, name).await);

    // alice uploads; carol's release of it is refused and claims nothing.
    let uploaded = alice.upload(&upload_path, &file).assert_ok();
    assert_eq!(uploaded.status, Some(201), "{}", uploaded.explain());
    let refused = carol
        .request("PUT", &release_path, Some(&release))
        .assert_failed();
    assert_eq!(refused.status, Some(403), "{}", refused.explain());
    unchanged(&document(&as_alice, name).await);
    assert_eq!(tarball_of(&reg, &as_alice, name, "1.0.1").await, None);

    // alice's release of her upload publishes it.
    alice
        .request("PUT", &release_path, Some(&release))
        .assert_ok();
    let doc = assert_published(&reg, &as_alice, name, "1.0.1", &bytes).await;
    assert_eq!(doc["dist-tags"]["latest"], "1.0.1", "{doc}");
    assert_published(&reg, &as_alice, name, "1.0.0", &first).await;
}

/// adduser with the GitHub login and a GitHub token: accepted with the right token, refused with
/// a wrong one (0.4.x sends the password; 0.2.x sends only `password_sha` and `salt`, and proves
/// the password on the request that follows a 409, with Basic or its session).
#[tokio::test]
async fn github_adduser_checks_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let reg = github_registry(&world, Backend::local(), &[]).await;
    let token = &world.alice.token;

    let v04 = LegacyClient::new(Version::V04, root, &reg.url).basic("alice", token);
    let added = v04.adduser().assert_ok();
    assert_eq!(added.status, Some(201), "{}", added.explain());
    LegacyClient::new(Version::V04, root, &reg.url)
        .basic("alice", "ghp_wrong")
        .adduser()
        .assert_failed();
    for cookie in [Cookie::No, Cookie::Yes] {
        v02_client(root, &reg.url, "alice", token, cookie)
            .adduser()
            .assert_ok();
        v02_client(root, &reg.url, "alice", "ghp_wrong", cookie)
            .adduser()
            .assert_failed();
    }

    // The answer's registry token (0.4.x's adduser ignores it) is a password too.
    let registry_token = added.data["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {}", added.explain()))
        .to_string();
    seed(
        &reg.as_user(token),
        "@acme/widgets",
        "1.0.0",
        Some("github:acme/widgets"),
    )
    .await;
    LegacyClient::new(Version::V04, root, &reg.url)
        .basic("alice", &registry_token)
        .tag("@acme/widgets", "1.0.0", "stable")
        .assert_ok();
    assert_eq!(
        reg.as_user(token).dist_tags("@acme/widgets").await.body["stable"],
        "1.0.0"
    );
}
