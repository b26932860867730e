//! The pull-through cache of an upstream registry (`REGISTRY_UPSTREAM`, proxy mode), against a
//! fake of the public registry on loopback (`e2e::fake_upstream`), with the real npm (and pnpm
//! and yarn 4) on both backends: a real tree (eslint and jest, 330 packages as the public
//! registry serves them) installed cold, warm and with the upstream gone; versions kept after
//! the upstream drops or changes them; deprecations merged; proxied provenance attestations
//! served and kept; tampered tarballs refused; the dependency-confusion defence (origins); one upstream
//! fetch for a burst; per-scope upstreams with their own token; the `Via` loop guard; npm
//! audit forwarded without internal names; an upstream answering 5xx or too slowly marked down
//! while what is kept is served; and origins set by admins only in GitHub mode.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::api::send;
use e2e::clients::{Client, Kind};
use e2e::fake_upstream::FakeUpstream;
use e2e::test_registry::TestRegistry;
use e2e::{
    Backend, Npm, S3Host, corpus_dependencies, corpus_tarballs, escaped, http, write_package,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Publishes every package of the real corpus (`e2e::corpus_tarballs`: the tree of eslint and
/// jest, 330 versions as the public registry serves them) to the fake, each package's versions
/// in ascending order so that `latest` is its highest. Answers each `name@version`'s integrity.
fn publish_corpus(up: &FakeUpstream) -> BTreeMap<String, String> {
    let mut tarballs: Vec<(String, semver::Version, Vec<u8>)> = corpus_tarballs()
        .iter()
        .map(|file| {
            let bytes = std::fs::read(file).unwrap();
            let manifest = registry::domain::tarball::inspect(
                &bytes,
                registry::domain::tarball::TarballLimits::default(),
            )
            .unwrap()
            .manifest;
            let name = manifest["name"].as_str().unwrap().to_string();
            let version = semver::Version::parse(manifest["version"].as_str().unwrap()).unwrap();
            (name, version, bytes)
        })
        .collect();
    tarballs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut integrity = BTreeMap::new();
    for (name, version, bytes) in tarballs {
        integrity.insert(format!("{name}@{version}"), e2e::integrity(&bytes));
        up.add_published(bytes, None);
    }
    integrity
}

/// `name@version` of every package installed in `project`'s node_modules, whatever the layout:
/// npm's and yarn's nested trees, pnpm's `.pnpm` directories (its links are skipped).
fn installed(project: &Path) -> BTreeSet<String> {
    fn dirs(path: &Path) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(path) else {
            return Vec::new();
        };
        entries
            .map(Result::unwrap)
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect()
    }
    fn walk(node_modules: &Path, found: &mut BTreeSet<String>) {
        for (name, path) in dirs(node_modules) {
            if name == ".pnpm" {
                for (_, store) in dirs(&path) {
                    walk(&store.join("node_modules"), found);
                }
            } else if name.starts_with('@') {
                for (_, package) in dirs(&path) {
                    read(&package, found);
                }
            } else if !name.starts_with('.') {
                read(&path, found);
            }
        }
    }
    fn read(package: &Path, found: &mut BTreeSet<String>) {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(package.join("package.json")).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", package.display()));
        found.insert(format!(
            "{}@{}",
            manifest["name"].as_str().unwrap(),
            manifest["version"].as_str().unwrap()
        ));
        walk(&package.join("node_modules"), found);
    }
    let mut found = BTreeSet::new();
    walk(&project.join("node_modules"), &mut found);
    found
}

/// `name@version` → integrity of every package in a pnpm-lock.yaml (`packages:` entries, each
/// with `resolution: {integrity: …}`).
fn pnpm_locked(project: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(project.join("pnpm-lock.yaml")).unwrap();
    let mut locked = BTreeMap::new();
    let (mut in_packages, mut key) = (false, None::<String>);
    for line in text.lines().filter(|l| !l.is_empty()) {
        if !line.starts_with(' ') {
            in_packages = line == "packages:";
        } else if !in_packages {
        } else if let Some(entry) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            key = Some(entry.trim_end_matches(':').trim_matches('\'').to_string());
        } else if let Some(rest) = line.trim_start().strip_prefix("resolution: {integrity: ") {
            let integrity = rest.split([',', '}']).next().unwrap().trim();
            locked.insert(key.clone().unwrap(), integrity.to_string());
        }
    }
    locked
}

fn project(root: &Path, dir: &str, deps: Value) -> PathBuf {
    let dir = root.join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.json"),
        serde_json::to_vec_pretty(&json!({"name": "app", "version": "1.0.0", "private": true,
                                          "dependencies": deps}))
        .unwrap(),
    )
    .unwrap();
    dir
}

/// `name@version` → (resolved, integrity) of every package a package-lock.json installs.
fn locked(project: &Path) -> BTreeMap<String, (String, String)> {
    let lock: Value =
        serde_json::from_slice(&std::fs::read(project.join("package-lock.json")).unwrap()).unwrap();
    lock["packages"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| !path.is_empty())
        .map(|(path, p)| {
            let name = path.rsplit("node_modules/").next().unwrap();
            (
                format!("{name}@{}", p["version"].as_str().unwrap()),
                (
                    p["resolved"].as_str().unwrap_or_default().to_string(),
                    p["integrity"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

fn tarball_requests(up: &FakeUpstream) -> usize {
    up.requests()
        .iter()
        .filter(|s| s.path.contains("/-/"))
        .count()
}

async fn registry(backend: Backend, up: &FakeUpstream, env: &[(&str, &str)]) -> TestRegistry {
    let mut builder = TestRegistry::builder()
        .backend(backend)
        .env("REGISTRY_UPSTREAM", &up.url);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    builder.start().await
}

/// A `registry-server` process on `backend` with `env` (for the operator's commands beside it).
async fn registry_process(backend: Backend, env: &[(&str, &str)]) -> TestRegistry {
    let mut builder = TestRegistry::builder().process().backend(backend);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    builder.start().await
}

#[tokio::test]
async fn a_real_tree_installs_through_the_cache_cold_warm_and_offline_local() {
    a_real_tree_installs_through_the_cache(Backend::local()).await;
}

#[tokio::test]
async fn a_real_tree_installs_through_the_cache_cold_warm_and_offline_aws() {
    a_real_tree_installs_through_the_cache(Backend::aws("upstream-tree", S3Host::Same)).await;
}

/// The tree of eslint and jest (330 real packages) installed through the cache by npm, pnpm and
/// yarn 4: cold (each resolving it from the upstream's packuments), warm with empty client
/// caches, and with the upstream gone: the same tree, the upstream's integrity in the lockfiles,
/// every tarball fetched from the upstream once.
async fn a_real_tree_installs_through_the_cache(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let mut up = FakeUpstream::start().await;
    let mut published = publish_corpus(&up);
    assert!(published.len() >= 300, "corpus: {}", published.len());
    // yarn 4 adds `node-gyp@latest` to packages that build with it (fsevents here), which the
    // public registry has and npm's lockfile of the corpus does not list: a generated stand-in.
    published.insert("node-gyp@10.0.0".into(), up.add("node-gyp", "10.0.0", &[]));
    // Every read revalidates, so the installs with the upstream gone must be served stale.
    let reg = registry(backend, &up, &[("REGISTRY_UPSTREAM_MAX_AGE_SECS", "0")]).await;
    let clients: Vec<(Client, PathBuf)> = [Kind::Npm11, Kind::Pnpm, Kind::Yarn4NodeModules]
        .into_iter()
        .map(|kind| {
            let client = Client::new(kind, &tmp.path().join("clients"), &reg.url);
            let dir = project(tmp.path(), kind.label(), corpus_dependencies());
            client.configure(&dir);
            (client, dir)
        })
        .collect();

    // Cold: each client resolves the whole tree through the cache (no lockfile yet).
    let mut trees = Vec::new();
    for (client, dir) in &clients {
        let args: &[&str] = match client.kind {
            Kind::Pnpm => &["install", "--no-frozen-lockfile"],
            // CI=true makes yarn 4's install immutable by default.
            Kind::Yarn4NodeModules => &["install", "--no-immutable"],
            _ => &["install"],
        };
        client.ok(dir, args);
        let tree = installed(dir);
        assert!(
            tree.len() >= 250,
            "{:?}: a tree of a few hundred: {}",
            client.kind,
            tree.len()
        );
        for id in &tree {
            assert!(
                published.contains_key(id),
                "{:?}: {id} is not a version of the corpus",
                client.kind
            );
        }
        trees.push(tree);
    }
    let npm_locked = locked(&clients[0].1);
    assert!(npm_locked.len() >= 250);
    for (id, (resolved, integrity)) in &npm_locked {
        assert!(
            resolved.starts_with(&reg.url),
            "{id} resolved here: {resolved}"
        );
        assert_eq!(
            Some(integrity),
            published.get(id),
            "{id}: the upstream's integrity"
        );
    }
    let pnpm_locked = pnpm_locked(&clients[1].1);
    assert!(pnpm_locked.len() >= 250, "pnpm-lock.yaml: {pnpm_locked:?}");
    for (id, integrity) in &pnpm_locked {
        assert_eq!(
            Some(integrity),
            published.get(id),
            "pnpm: {id}: the upstream's integrity"
        );
    }
    let fetched: Vec<String> = up
        .requests()
        .into_iter()
        .filter(|s| s.path.contains("/-/"))
        .map(|s| s.path)
        .collect();
    let distinct: BTreeSet<&String> = fetched.iter().collect();
    assert_eq!(
        fetched.len(),
        distinct.len(),
        "each tarball fetched from the upstream once"
    );
    // yarn also fetches what it then leaves out on this platform (fsevents, and node-gyp for it).
    let union: BTreeSet<&String> = trees.iter().flatten().collect();
    assert!(
        (union.len()..=published.len()).contains(&distinct.len()),
        "a fetch per version installed: {} fetched, {} installed",
        distinct.len(),
        union.len()
    );
    let lockfiles: Vec<Vec<u8>> = clients
        .iter()
        .map(|(client, dir)| std::fs::read(dir.join(client.kind.lockfile())).unwrap())
        .collect();

    // Warm: empty client caches, the lockfiles; no tarball fetched upstream again.
    for ((client, dir), tree) in clients.iter().zip(&trees) {
        client.forget_installs(dir);
        client.install_frozen(dir);
        assert_eq!(
            &installed(dir),
            tree,
            "{:?}, warm: the same tree",
            client.kind
        );
    }
    assert_eq!(
        tarball_requests(&up),
        fetched.len(),
        "warm: tarballs from storage"
    );

    // The upstream gone: every lockfile installs, identical, from what the cache kept.
    up.stop();
    let (status, _, headers) = send(Method::GET, reg.url("/eslint"), None, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "kept packument served while the upstream is down"
    );
    assert_eq!(headers["x-upstream-cache"], "STALE");
    assert!(headers.contains_key("age"));
    for (((client, dir), tree), lockfile) in clients.iter().zip(&trees).zip(&lockfiles) {
        client.forget_installs(dir);
        client.install_frozen(dir);
        assert_eq!(
            &installed(dir),
            tree,
            "{:?}, upstream gone: the same tree",
            client.kind
        );
        assert_eq!(
            &std::fs::read(dir.join(client.kind.lockfile())).unwrap(),
            lockfile,
            "{:?}, upstream gone: the same lockfile",
            client.kind
        );
    }
    assert_eq!(
        locked(&clients[0].1),
        npm_locked,
        "identical tree and integrity"
    );
    // And npm resolves the tree afresh (packuments, not only tarballs) from what was kept.
    let (npm, dir) = &clients[0];
    npm.forget_installs(dir);
    std::fs::remove_file(dir.join("package-lock.json")).unwrap();
    npm.ok(dir, &["install"]);
    assert_eq!(locked(dir), npm_locked);
}

#[tokio::test]
async fn versions_gone_upstream_stay_installable_local() {
    versions_gone_upstream_stay_installable(Backend::local()).await;
}

#[tokio::test]
async fn versions_gone_upstream_stay_installable_aws() {
    versions_gone_upstream_stay_installable(Backend::aws("upstream-keep", S3Host::Same)).await;
}

/// A version installed once stays installable after the upstream unpublishes it (and after
/// the upstream drops the whole package); the upstream's later versions and deprecations show.
async fn versions_gone_upstream_stay_installable(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    up.add("keep-me", "1.0.0", &[]);
    up.add("keep-me", "1.1.0", &[]);
    let reg = registry(backend, &up, &[("REGISTRY_UPSTREAM_MAX_AGE_SECS", "0")]).await;
    let app = project(tmp.path(), "app", json!({"keep-me": "1.0.0"}));
    Npm::new(&tmp.path().join("npm-1"), &reg.url).ok(&app, &["install"]);

    up.remove_version("keep-me", "1.0.0");
    up.deprecate("keep-me", "1.1.0", "use keep-me 2");
    up.add("keep-me", "2.0.0", &[]);
    for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
        let doc: Value = http()
            .get(reg.url("/keep-me"))
            .header("accept", accept)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let versions: Vec<&String> = doc["versions"].as_object().unwrap().keys().collect();
        assert_eq!(versions.len(), 3, "{accept}: {versions:?}");
        assert_eq!(
            doc["versions"]["1.1.0"]["deprecated"], "use keep-me 2",
            "{accept}"
        );
        assert_eq!(doc["dist-tags"]["latest"], "2.0.0");
        assert!(
            doc["versions"]["1.0.0"]["dist"]["tarball"]
                .as_str()
                .unwrap()
                .starts_with(&reg.url)
        );
    }
    std::fs::remove_dir_all(app.join("node_modules")).unwrap();
    std::fs::remove_file(app.join("package-lock.json")).unwrap();
    Npm::new(&tmp.path().join("npm-2"), &reg.url).ok(&app, &["install"]);
    let installed: Value = serde_json::from_slice(
        &std::fs::read(app.join("node_modules/keep-me/package.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(installed["version"], "1.0.0");

    // The whole package gone upstream: what was kept is the package here.
    up.remove_package("keep-me");
    let (status, doc, _) = send(Method::GET, reg.url("/keep-me"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc["versions"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["1.0.0"]
    );
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
}

/// The upstream's document of `name`, asked of it directly (full view).
async fn upstream_doc(up: &FakeUpstream, name: &str) -> Value {
    http()
        .get(format!("{}/{name}", up.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_version_changed_upstream_stays_installable_as_kept_local() {
    a_version_changed_upstream_stays_installable(Backend::local()).await;
}

#[tokio::test]
async fn a_version_changed_upstream_stays_installable_as_kept_aws() {
    a_version_changed_upstream_stays_installable(Backend::aws("upstream-changed", S3Host::Same))
        .await;
}

/// A version installed through the cache, then republished upstream with other bytes and a
/// dependency more: what is served of it is what was kept (its manifest, the kept bytes'
/// integrity, shasum and signature, not the upstream's new ones, which describe bytes never
/// served here), so a fresh `npm install` gets the kept bytes without EINTEGRITY, and not the
/// new dependency. The upstream's deprecation of the version still shows.
async fn a_version_changed_upstream_stays_installable(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    up.sign_versions();
    let kept = up.add("changed", "1.0.0", &[]);
    up.add("changed-dep", "1.0.0", &[]);
    let reg = registry(backend, &up, &[("REGISTRY_UPSTREAM_MAX_AGE_SECS", "0")]).await;
    let app = project(tmp.path(), "app", json!({"changed": "1.0.0"}));
    Npm::new(&tmp.path().join("npm-1"), &reg.url).ok(&app, &["install"]);
    assert_eq!(locked(&app)["changed@1.0.0"].1, kept);
    let kept_signatures =
        upstream_doc(&up, "changed").await["versions"]["1.0.0"]["dist"]["signatures"].clone();
    assert!(kept_signatures.is_array(), "{kept_signatures}");

    let replaced = up.replace("changed", "1.0.0", &[("changed-dep", "^1.0.0")]);
    assert_ne!(replaced, kept);
    up.deprecate("changed", "1.0.0", "changed upstream");
    for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
        let doc: Value = http()
            .get(reg.url("/changed"))
            .header("accept", accept)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let v = &doc["versions"]["1.0.0"];
        assert_eq!(v["dist"]["integrity"], kept.as_str(), "{accept}: {v}");
        assert_eq!(
            v["dist"]["signatures"], kept_signatures,
            "{accept}: the signature of the kept bytes: {v}"
        );
        assert!(
            v["dependencies"].get("changed-dep").is_none(),
            "{accept}: the kept manifest's dependencies: {v}"
        );
        assert_eq!(v["deprecated"], "changed upstream", "{accept}: {v}");
        assert!(v["dist"]["tarball"].as_str().unwrap().starts_with(&reg.url));
    }
    let (status, version, _) = send(Method::GET, reg.url("/changed/1.0.0"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["dist"]["integrity"], kept.as_str(), "{version}");

    // A fresh install, no lockfile and no client cache: the kept bytes, as their integrity says.
    std::fs::remove_dir_all(app.join("node_modules")).unwrap();
    std::fs::remove_file(app.join("package-lock.json")).unwrap();
    Npm::new(&tmp.path().join("npm-2"), &reg.url).ok(&app, &["install"]);
    assert_eq!(locked(&app)["changed@1.0.0"].1, kept);
    assert!(!app.join("node_modules/changed/replaced.txt").exists());
    assert!(!app.join("node_modules/changed-dep").exists());
    assert_eq!(
        up.count("/changed/-/changed-1.0.0.tgz"),
        1,
        "never fetched again"
    );
}

#[tokio::test]
async fn attestations_of_proxied_versions_are_served_and_kept_local() {
    attestations_of_proxied_versions_are_served_and_kept(Backend::local()).await;
}

#[tokio::test]
async fn attestations_of_proxied_versions_are_served_and_kept_aws() {
    attestations_of_proxied_versions_are_served_and_kept(Backend::aws(
        "upstream-attest",
        S3Host::Same,
    ))
    .await;
}

/// GET `url` until it answers 200 or `deadline` passes; the last answer.
async fn get_until_ok(url: &str, deadline: Duration) -> (StatusCode, Value) {
    let start = std::time::Instant::now();
    loop {
        let (status, body, _) = send(Method::GET, url.to_string(), None, None).await;
        if status == StatusCode::OK || start.elapsed() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// npm fetches a version's attestations from the registry it installs from (pacote puts the path
/// of `dist.attestations.url` on that registry; `npm audit signatures` fails on an error there).
/// Real packages with provenance (tests/fixtures/provenance) from the upstream: their
/// `dist.attestations.url` points here and answers the upstream's attestations, fetched once and
/// kept; a version installed through the cache has them kept with its tarball; both are served
/// with the upstream gone.
async fn attestations_of_proxied_versions_are_served_and_kept(backend: Backend) {
    let fixture = |file: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/provenance")
                .join(file),
        )
        .unwrap()
    };
    let bundle = |file: &str| serde_json::from_slice::<Value>(&fixture(file)).unwrap();
    let mut up = FakeUpstream::start().await;
    let asked = up
        .add_published(
            fixture("sigstore-2.3.1.tgz"),
            Some((
                "https://slsa.dev/provenance/v1",
                bundle("sigstore-2.3.1.sigstore"),
            )),
        )
        .unwrap();
    let installed = up
        .add_published(
            fixture("sigstore-1.3.0.tgz"),
            Some((
                "https://slsa.dev/provenance/v0.2",
                bundle("sigstore-1.3.0.sigstore"),
            )),
        )
        .unwrap();
    let scoped = up
        .add_published(
            fixture("playwright-cli-0.1.1.tgz"),
            Some((
                "https://slsa.dev/provenance/v1",
                bundle("playwright-cli-0.1.1.sigstore"),
            )),
        )
        .unwrap();
    let reg = registry(backend, &up, &[]).await;
    let url = |spec: &str| reg.url(&format!("/-/npm/v1/attestations/{spec}"));
    for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
        for (path, version, spec, predicate_type) in [
            (
                "/sigstore",
                "2.3.1",
                "sigstore@2.3.1",
                "https://slsa.dev/provenance/v1",
            ),
            (
                "/sigstore",
                "1.3.0",
                "sigstore@1.3.0",
                "https://slsa.dev/provenance/v0.2",
            ),
            (
                "/@playwright%2fcli",
                "0.1.1",
                "@playwright%2fcli@0.1.1",
                "https://slsa.dev/provenance/v1",
            ),
        ] {
            let doc: Value = http()
                .get(reg.url(path))
                .header("accept", accept)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let attestations = &doc["versions"][version]["dist"]["attestations"];
            assert_eq!(attestations["url"], url(spec), "{accept}: {attestations}");
            assert_eq!(
                attestations["provenance"]["predicateType"], predicate_type,
                "{accept}"
            );
        }
    }
    for (spec, body) in [
        ("sigstore@2.3.1", &asked),
        ("@playwright%2fcli@0.1.1", &scoped),
    ] {
        let (status, served, _) = send(Method::GET, url(spec), None, None).await;
        assert_eq!(status, StatusCode::OK, "{spec}: {served}");
        assert_eq!(&served, body, "{spec}: the upstream's attestations");
    }
    // Installed through the cache: its attestations are kept with the tarball (after the
    // response), without anyone asking for them here.
    // Following the AWS backend's redirect to S3, as clients do.
    let tarball = reqwest::Client::new()
        .get(reg.url("/sigstore/-/sigstore-1.3.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), StatusCode::OK);
    for _ in 0..100 {
        if up.count("/-/npm/v1/attestations/sigstore@1.3.0") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.count("/-/npm/v1/attestations/sigstore@1.3.0"), 1);

    up.stop();
    for (spec, body) in [
        ("sigstore@2.3.1", &asked),
        ("@playwright%2fcli@0.1.1", &scoped),
        ("sigstore@1.3.0", &installed),
    ] {
        let (status, served) = get_until_ok(&url(spec), Duration::from_secs(10)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{spec}, the upstream gone: {served}"
        );
        assert_eq!(&served, body, "{spec}: the kept copy");
    }
    assert_eq!(
        up.count("/-/npm/v1/attestations/sigstore@2.3.1"),
        1,
        "asked of the upstream once"
    );
    // A version without provenance has none, here as upstream.
    let (status, _, _) = send(Method::GET, url("sigstore@9.9.9"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_tampered_upstream_tarball_is_refused_and_never_kept_local() {
    a_tampered_upstream_tarball_is_refused(Backend::local()).await;
}

#[tokio::test]
async fn a_tampered_upstream_tarball_is_refused_and_never_kept_aws() {
    a_tampered_upstream_tarball_is_refused(Backend::aws("upstream-tamper", S3Host::Same)).await;
}

async fn a_tampered_upstream_tarball_is_refused(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let integrity = up.add("tampered", "1.0.0", &[]);
    up.tamper("tampered", "1.0.0", true);
    let reg = registry(backend, &up, &[]).await;
    let app = project(tmp.path(), "app", json!({"tampered": "1.0.0"}));
    let run =
        Npm::new(&tmp.path().join("npm-1"), &reg.url).run(&app, &["install", "--fetch-retries=0"]);
    assert!(!run.ok, "refused");
    assert!(
        run.all().contains("does not match the integrity"),
        "npm prints why: {}",
        run.all()
    );
    let (status, body, _) = send(
        Method::GET,
        reg.url("/tampered/-/tampered-1.0.0.tgz"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["code"], "upstream_integrity");
    // Nothing was kept: once the upstream serves the right bytes, they are what is served.
    up.tamper("tampered", "1.0.0", false);
    Npm::new(&tmp.path().join("npm-2"), &reg.url).ok(&app, &["install"]);
    assert_eq!(locked(&app)["tampered@1.0.0"].1, integrity);
}

#[tokio::test]
async fn a_large_upstream_tarball_streams_to_storage_local() {
    a_large_upstream_tarball_streams_to_storage(Backend::local()).await;
}

#[tokio::test]
async fn a_large_upstream_tarball_streams_to_storage_aws() {
    a_large_upstream_tarball_streams_to_storage(Backend::aws("upstream-large", S3Host::Same)).await;
}

/// A tarball larger than what is held in memory (a megabyte locally, an 8 MiB part on AWS) goes
/// to storage as it arrives: on AWS as a multipart upload (its ETag says how many parts),
/// completed only once every byte matched; a tampered one, wrong only in its last byte, leaves
/// no object, no upload in progress and no file behind.
async fn a_large_upstream_tarball_streams_to_storage(backend: Backend) {
    let up = FakeUpstream::start().await;
    let integrity = up.add_large("big-blob", "1.0.0", 20 << 20);
    up.add_large("big-bad", "1.0.0", 20 << 20);
    up.tamper("big-bad", "1.0.0", true);
    let reg = registry(backend, &up, &[]).await;
    // Following the AWS backend's redirect to S3, as clients do.
    let client = reqwest::Client::new();
    let got = client
        .get(reg.url("/big-blob/-/big-blob-1.0.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let bytes = got.bytes().await.unwrap();
    assert!(bytes.len() > 20 << 20, "{}", bytes.len());
    assert_eq!(registry::testing::integrity(&bytes), integrity);
    // Served from storage from now on: the upstream is asked once.
    let again = client
        .get(reg.url("/big-blob/-/big-blob-1.0.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.bytes().await.unwrap(), bytes);
    assert_eq!(up.count("/big-blob/-/big-blob-1.0.0.tgz"), 1);

    let (status, body, _) = send(
        Method::GET,
        reg.url("/big-bad/-/big-bad-1.0.0.tgz"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["code"], "upstream_integrity");

    match reg.backend() {
        Backend::Aws(resources) => {
            let kept = resources.object_etags("upstream/tarballs/").await;
            assert_eq!(kept.len(), 1, "only the good one: {kept:?}");
            assert!(kept[0].0.contains("big-blob"), "{kept:?}");
            assert!(kept[0].1.ends_with("-3"), "three parts of 8 MiB: {kept:?}");
            assert_eq!(resources.incomplete_uploads().await, Vec::<String>::new());
        }
        Backend::Local => {
            let files = |dir: &str| -> Vec<String> {
                let mut found = Vec::new();
                let mut dirs = vec![reg.data_dir().join(dir)];
                while let Some(d) = dirs.pop() {
                    for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                        if entry.path().is_dir() {
                            dirs.push(entry.path());
                        } else {
                            found.push(entry.path().display().to_string());
                        }
                    }
                }
                found
            };
            let kept = files("upstream/tarballs");
            assert_eq!(kept.len(), 1, "only the good one: {kept:?}");
            assert!(kept[0].contains("big-blob"), "{kept:?}");
            assert_eq!(files("tmp"), Vec::<String>::new(), "no partial file left");
        }
    }
}

/// `registry-server origin ARGS` as an operator runs it beside `reg`, with the settings the
/// server runs with (`env`): with local storage it goes through the running server's control
/// socket, on AWS it reads and writes the table itself. Its JSON answer.
fn origin_cli(reg: &TestRegistry, env: &[(&str, &str)], args: &[&str]) -> Value {
    let out = std::process::Command::new(e2e::sibling_binary("registry-server"))
        .arg("--data")
        .arg(reg.data_dir())
        .arg("origin")
        .args(args)
        .envs(reg.backend().env())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "origin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn an_upstream_package_never_shadows_an_internal_one_local() {
    an_upstream_package_never_shadows_an_internal_one(Backend::local()).await;
}

#[tokio::test]
async fn an_upstream_package_never_shadows_an_internal_one_aws() {
    an_upstream_package_never_shadows_an_internal_one(Backend::aws(
        "upstream-origin",
        S3Host::Same,
    ))
    .await;
}

/// Dependency confusion: a name published here, a served scope, or one an admin made internal
/// is never fetched from the upstream, whatever the upstream publishes under it; a name
/// installed from the upstream cannot be published here until an admin makes it internal
/// (with the CLI, which the running server then follows).
async fn an_upstream_package_never_shadows_an_internal_one(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let settings = [
        ("REGISTRY_UPSTREAM", up.url.as_str()),
        ("REGISTRY_ALLOWED_OWNERS", "acme"),
    ];
    let reg = registry_process(backend, &settings).await;
    let npm = Npm::new(&tmp.path().join("npm"), &reg.url);

    // Published here first; the attacker then publishes a higher version upstream.
    let dir = tmp.path().join("corp-utils");
    write_package(&dir, "corp-utils", "1.0.0", json!({}));
    npm.ok(&dir, &["publish"]);
    up.add("corp-utils", "99.0.0", &[]);
    // A served scope, and a name an admin made internal before it exists.
    up.add("@acme/lib", "9.9.9", &[]);
    up.add("corp-secret", "1.0.0", &[]);
    let (status, body, _) = send(
        Method::PUT,
        reg.url("/-/package/corp-secret/origin"),
        None,
        Some(&json!({"origin": "internal"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["origin"], "internal");
    assert_eq!(body["because"], "setting");

    // (npm's publish asked the upstream about corp-utils while the name was still undecided.)
    let asked_before = up.requests().len();
    let app = project(tmp.path(), "app", json!({"corp-utils": "*"}));
    npm.ok(&app, &["install"]);
    let installed: Value = serde_json::from_slice(
        &std::fs::read(app.join("node_modules/corp-utils/package.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        installed["version"], "1.0.0",
        "ours, never the upstream's 99.0.0"
    );
    let (_, doc, _) = send(Method::GET, reg.url("/corp-utils"), None, None).await;
    assert_eq!(doc["versions"].as_object().unwrap().len(), 1);
    for name in ["@acme/lib", "corp-secret"] {
        let (status, _, _) = send(
            Method::GET,
            reg.url(&format!("/{}", escaped(name))),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
    }
    let asked: Vec<String> = up
        .requests()
        .into_iter()
        .skip(asked_before)
        .map(|s| s.path)
        .collect();
    for name in ["corp-utils", "@acme", "corp-secret"] {
        assert!(
            !asked.iter().any(|p| p.contains(name)),
            "{name} never asked upstream: {asked:?}"
        );
    }

    // Installed from the upstream: publishing it here is refused, until an admin says so.
    up.add("lodashy", "1.0.0", &[]);
    let (status, _, _) = send(Method::GET, reg.url("/lodashy"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    let dir = tmp.path().join("lodashy");
    write_package(&dir, "lodashy", "2.0.0", json!({}));
    let refused = npm.run(&dir, &["publish"]);
    assert!(!refused.ok);
    assert!(
        refused.all().contains("is an upstream package here"),
        "{}",
        refused.all()
    );
    // The operator's command (locally through the running server, on AWS on the table).
    let answer = origin_cli(&reg, &settings, &["get", "lodashy"]);
    assert_eq!(answer["origin"], "upstream", "{answer}");
    assert_eq!(answer["because"], "ingested", "{answer}");
    let answer = origin_cli(&reg, &settings, &["set", "lodashy", "internal"]);
    assert_eq!(answer["origin"], "internal", "{answer}");
    assert_eq!(answer["because"], "setting", "{answer}");
    // The running server reads what the command set.
    let (status, body, _) = send(
        Method::GET,
        reg.url("/-/package/lodashy/origin"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["origin"], "internal", "{body}");
    assert_eq!(body["because"], "setting", "{body}");
    npm.ok(&dir, &["publish"]);
    let (_, doc, _) = send(Method::GET, reg.url("/lodashy"), None, None).await;
    assert_eq!(
        doc["versions"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["2.0.0"],
        "ours alone from now on"
    );
    // A served scope cannot be made upstream.
    let (status, _, _) = send(
        Method::PUT,
        reg.url(&format!("/-/package/{}/origin", escaped("@acme/lib"))),
        None,
        Some(&json!({"origin": "upstream"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_burst_for_a_cold_package_fetches_it_once_local() {
    a_burst_for_a_cold_package_fetches_it_once(Backend::local()).await;
}

#[tokio::test]
async fn a_burst_for_a_cold_package_fetches_it_once_aws() {
    a_burst_for_a_cold_package_fetches_it_once(Backend::aws("upstream-burst", S3Host::Same)).await;
}

/// A hundred clients asking for the same cold package at once: one upstream request for its
/// packument and one for its tarball (on AWS the tarball is fetched from S3, where the
/// registry's redirect sends the clients).
async fn a_burst_for_a_cold_package_fetches_it_once(backend: Backend) {
    let up = FakeUpstream::start().await;
    up.add("burst", "1.0.0", &[]);
    let reg = registry(backend, &up, &[]).await;
    let release = up.hold();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let base = reg.url.clone();
        clients.push(tokio::spawn(async move {
            let doc: Value = http()
                .get(format!("{base}/burst"))
                .header("accept", "application/vnd.npm.install-v1+json")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let url = doc["versions"]["1.0.0"]["dist"]["tarball"]
                .as_str()
                .unwrap()
                .to_string();
            // Following the AWS backend's redirect to S3, as clients do.
            let tarball = reqwest::Client::new().get(url).send().await.unwrap();
            assert_eq!(tarball.status(), StatusCode::OK);
            tarball.bytes().await.unwrap().len()
        }));
    }
    // The first request reached the upstream and is held there; the rest are on their way.
    for _ in 0..500 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give the other 99 time to arrive while the first is held: without single flight each
    // would ask the upstream itself (this wait only widens the window the test looks at).
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(true).unwrap();
    let mut sizes = Vec::new();
    for c in clients {
        sizes.push(c.await.unwrap());
    }
    assert!(sizes.iter().all(|s| *s == sizes[0] && *s > 0));
    assert_eq!(up.count("/burst"), 1, "{:?}", up.requests());
    assert_eq!(up.count("/burst/-/burst-1.0.0.tgz"), 1);

    // Served from memory from now on (HIT), gzipped for a client that accepts it.
    let r = http()
        .get(reg.url("/burst"))
        .header("accept", "application/vnd.npm.install-v1+json")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-upstream-cache"], "HIT");
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let packed = r.bytes().await.unwrap();
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut json).unwrap();
    let doc: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(doc["name"], "burst");
}

#[tokio::test]
async fn per_scope_upstreams_with_their_own_token_local() {
    per_scope_upstreams_with_their_own_token(Backend::local()).await;
}

#[tokio::test]
async fn per_scope_upstreams_with_their_own_token_aws() {
    per_scope_upstreams_with_their_own_token(Backend::aws("upstream-scopes", S3Host::Same)).await;
}

/// `@partner` from its own registry with its own token (sent there and only there); the rest
/// from the default upstream.
async fn per_scope_upstreams_with_their_own_token(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let partner = FakeUpstream::start().await;
    partner.require_token("partner-s3cret");
    partner.add("@partner/widget", "1.0.0", &[("left-dep", "^1.0.0")]);
    up.add("left-dep", "1.0.0", &[]);
    let scopes = format!("@partner={}", partner.url);
    let reg = registry(
        backend,
        &up,
        &[
            ("REGISTRY_UPSTREAM_SCOPES", &scopes),
            ("REGISTRY_UPSTREAM_TOKENS", "@partner=partner-s3cret"),
        ],
    )
    .await;
    let app = project(tmp.path(), "app", json!({"@partner/widget": "^1.0.0"}));
    Npm::new(&tmp.path().join("npm"), &reg.url).ok(&app, &["install"]);
    assert!(app.join("node_modules/left-dep/package.json").exists());
    let to_partner = partner.requests();
    assert!(
        to_partner.len() >= 2,
        "packument and tarball: {to_partner:?}"
    );
    assert!(
        to_partner
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer partner-s3cret"))
    );
    let to_default = up.requests();
    assert!(to_default.iter().all(|s| !s.path.contains("partner")));
    assert!(
        to_default.iter().all(|s| s.authorization.is_none()),
        "no token leaks: {to_default:?}"
    );
    assert!(
        to_default
            .iter()
            .all(|s| s.via.as_deref().is_some_and(|v| v.contains("npm-registry"))),
        "every request says it came through this registry"
    );
}

#[tokio::test]
async fn a_loop_between_registries_ends_at_once_local() {
    a_loop_between_registries_ends_at_once(Backend::local(), Backend::local()).await;
}

#[tokio::test]
async fn a_loop_between_registries_ends_at_once_aws() {
    a_loop_between_registries_ends_at_once(
        Backend::aws("upstream-loop-a", S3Host::Same),
        Backend::aws("upstream-loop-b", S3Host::Same),
    )
    .await;
}

/// Two registries proxying each other: the request comes back with the first one's name in
/// `Via` and is refused there, so the chain ends at once instead of looping.
async fn a_loop_between_registries_ends_at_once(backend_a: Backend, backend_b: Backend) {
    let port = e2e::free_port();
    let a_url = format!("http://127.0.0.1:{port}");
    let b = TestRegistry::builder()
        .backend(backend_b)
        .env("REGISTRY_UPSTREAM", &a_url)
        .env("REGISTRY_INSTANCE_NAME", "registry-b")
        .start()
        .await;
    let a = TestRegistry::builder()
        .backend(backend_a)
        .env("REGISTRY_LISTEN", &format!("127.0.0.1:{port}"))
        .env("REGISTRY_UPSTREAM", &b.url)
        .env("REGISTRY_INSTANCE_NAME", "registry-a")
        .start()
        .await;
    // A asks B, B asks A, A refuses (508); B and then A answer 502.
    let (status, body, _) = send(Method::GET, a.url("/loopy"), None, None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["code"], "upstream_unavailable");
    // B, asked as A asks it, reports the refusal A gave it.
    let r = http()
        .get(b.url("/loopy-2"))
        .header("via", "1.1 registry-a")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("HTTP 508"),
        "{body}"
    );
    // Asked directly with itself in `Via`, a registry refuses.
    let (status, body) = {
        let r = http()
            .get(a.url("/loopy"))
            .header("via", "1.1 registry-a")
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::LOOP_DETECTED);
    assert_eq!(body["code"], "upstream_loop");
}

#[tokio::test]
async fn npm_audit_is_forwarded_without_internal_names_local() {
    npm_audit_is_forwarded_without_internal_names(Backend::local()).await;
}

#[tokio::test]
async fn npm_audit_is_forwarded_without_internal_names_aws() {
    npm_audit_is_forwarded_without_internal_names(Backend::aws("upstream-audit", S3Host::Same))
        .await;
}

/// `npm audit`: the upstream's advisories printed, and no internal name in what it was sent,
/// nor a name of a scope with an upstream of its own (a partner's names are not the public
/// registry's business; they are not sent to the partner either); with the upstream down, npm
/// says the audit endpoint failed.
async fn npm_audit_is_forwarded_without_internal_names(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let partner = FakeUpstream::start().await;
    partner.add("@partner/widget", "1.0.0", &[]);
    up.add("vuln-pkg", "1.0.0", &[]);
    up.add_advisory(
        "vuln-pkg",
        json!({"id": 1_098_765, "url": "https://github.com/advisories/GHSA-xxxx-yyyy-zzzz",
               "title": "Prototype pollution in vuln-pkg", "severity": "high",
               "vulnerable_versions": "<2.0.0", "cwe": ["CWE-1321"],
               "cvss": {"score": 7.5, "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:N"}}),
    );
    // The partner has an advisory for its package too: it must not be asked for it.
    partner.add_advisory(
        "@partner/widget",
        json!({"id": 1_098_766, "url": "https://github.com/advisories/GHSA-aaaa-bbbb-cccc",
               "title": "Partner advisory", "severity": "low", "vulnerable_versions": "<2.0.0"}),
    );
    let reg = TestRegistry::builder()
        .backend(backend)
        .env("REGISTRY_UPSTREAM", &up.url)
        .env("REGISTRY_ALLOWED_OWNERS", "acme")
        .env(
            "REGISTRY_UPSTREAM_SCOPES",
            &format!("@partner={}", partner.url),
        )
        .start()
        .await;
    let npm = Npm::new(&tmp.path().join("npm"), &reg.url);
    for name in ["corp-internal", "@acme/private"] {
        let dir = tmp.path().join(name.replace('/', "_"));
        write_package(&dir, name, "1.0.0", json!({}));
        npm.ok(&dir, &["publish", "--access", "public"]);
    }
    let app = project(
        tmp.path(),
        "app",
        json!({"vuln-pkg": "1.0.0", "corp-internal": "1.0.0", "@acme/private": "1.0.0",
               "@partner/widget": "1.0.0"}),
    );
    npm.ok(&app, &["install"]);
    let run = npm.run(&app, &["audit"]);
    assert!(!run.ok, "vulnerabilities found: {}", run.all());
    assert!(
        run.stdout.contains("Prototype pollution in vuln-pkg"),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains("high"), "{}", run.all());
    let bodies = up.audit_bodies();
    let sent = bodies.last().expect("the audit reached the upstream");
    assert_eq!(
        sent.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["vuln-pkg"],
        "internal names and the partner's never reach the default upstream: {bodies:?}"
    );
    assert!(
        partner.audit_bodies().is_empty(),
        "nor the partner's upstream: {:?}",
        partner.audit_bodies()
    );
    assert!(!run.stdout.contains("Partner advisory"), "{}", run.all());

    up.set_down(true);
    let run = npm.run(&app, &["audit"]);
    assert!(!run.ok);
    assert!(
        run.all().contains("audit endpoint returned an error"),
        "{}",
        run.all()
    );
}

#[tokio::test]
async fn kept_answers_survive_a_restart_with_the_upstream_gone_local() {
    kept_answers_survive_a_restart(Backend::local()).await;
}

#[tokio::test]
async fn kept_answers_survive_a_restart_with_the_upstream_gone_aws() {
    kept_answers_survive_a_restart(Backend::aws("upstream-restart", S3Host::Different)).await;
}

/// What the cache kept is in storage, not only in memory: a restarted registry (a new port,
/// so every tarball URL changes) installs the package with the upstream gone.
async fn kept_answers_survive_a_restart(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let mut up = FakeUpstream::start().await;
    up.add("durable-dep", "1.0.0", &[]);
    up.add("durable", "1.0.0", &[("durable-dep", "^1.0.0")]);
    let mut env = backend.env();
    env.push(("REGISTRY_UPSTREAM".into(), up.url.clone()));
    let server =
        e2e::Server::start_with(tmp.path().join("data"), tmp.path().join("server.log"), env);
    let app = project(tmp.path(), "app", json!({"durable": "^1.0.0"}));
    Npm::new(&tmp.path().join("npm-1"), &server.url).ok(&app, &["install"]);

    up.stop();
    let server = server.restart();
    std::fs::remove_dir_all(app.join("node_modules")).unwrap();
    std::fs::remove_file(app.join("package-lock.json")).unwrap();
    Npm::new(&tmp.path().join("npm-2"), &server.url).ok(&app, &["install"]);
    assert!(app.join("node_modules/durable-dep/package.json").exists());
    let lock = locked(&app);
    assert!(
        lock.values()
            .all(|(resolved, _)| resolved.starts_with(&server.url)),
        "tarball URLs follow the registry's new address: {lock:?}"
    );
    let (status, _, headers) =
        send(Method::GET, format!("{}/durable", server.url), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-upstream-cache"], "STALE");
}

#[tokio::test]
async fn another_registry_server_as_the_upstream_local() {
    another_registry_server_as_the_upstream(Backend::local()).await;
}

#[tokio::test]
async fn another_registry_server_as_the_upstream_aws() {
    another_registry_server_as_the_upstream(Backend::aws("upstream-real", S3Host::Same)).await;
}

/// A real registry as the upstream: a second `registry-server` holding published packages
/// (its own ETags, install view and tarball URLs), installed through the first one (on
/// `backend`; the upstream stores locally).
async fn another_registry_server_as_the_upstream(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let upstream = TestRegistry::builder().process().start().await;
    let publisher = Npm::new(&tmp.path().join("publisher"), &upstream.url);
    for (name, deps) in [
        ("real-dep", json!({})),
        (
            "real-app-lib",
            json!({"dependencies": {"real-dep": "^1.0.0"}}),
        ),
    ] {
        let dir = tmp.path().join(name);
        write_package(&dir, name, "1.0.0", deps);
        publisher.ok(&dir, &["publish"]);
    }
    let reg = TestRegistry::builder()
        .backend(backend)
        .env("REGISTRY_UPSTREAM", &upstream.url)
        .env("REGISTRY_UPSTREAM_MAX_AGE_SECS", "0")
        .start()
        .await;
    let app = project(tmp.path(), "app", json!({"real-app-lib": "^1.0.0"}));
    Npm::new(&tmp.path().join("npm"), &reg.url).ok(&app, &["install"]);
    assert!(app.join("node_modules/real-dep/package.json").exists());
    // Revalidated against the real server's ETag: 304, the kept document served.
    let (status, _, headers) = send(Method::GET, reg.url("/real-app-lib"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-upstream-cache"], "REVALIDATED");
}

#[tokio::test]
async fn a_name_missing_upstream_is_asked_once_per_max_age_local() {
    a_name_missing_upstream_is_asked_once_per_max_age(Backend::local()).await;
}

#[tokio::test]
async fn a_name_missing_upstream_is_asked_once_per_max_age_aws() {
    a_name_missing_upstream_is_asked_once_per_max_age(Backend::aws(
        "upstream-missing",
        S3Host::Same,
    ))
    .await;
}

/// A name the upstream does not have is remembered as missing for the max age: installs look up
/// optional peers that exist nowhere, and each lookup must not cost an upstream request. It does
/// not make the name upstream: publishing it here still works.
async fn a_name_missing_upstream_is_asked_once_per_max_age(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let up = FakeUpstream::start().await;
    let reg = registry(backend, &up, &[]).await;
    for _ in 0..3 {
        let (status, _, _) = send(Method::GET, reg.url("/nowhere-peer"), None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(up.count("/nowhere-peer"), 1);
    let dir = tmp.path().join("nowhere-peer");
    write_package(&dir, "nowhere-peer", "1.0.0", json!({}));
    Npm::new(&tmp.path().join("npm"), &reg.url).ok(&dir, &["publish"]);
    let (status, doc, _) = send(Method::GET, reg.url("/nowhere-peer"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
}

#[tokio::test]
async fn a_failing_or_slow_upstream_is_marked_down_and_what_is_kept_served_local() {
    a_failing_or_slow_upstream_is_marked_down(Backend::local()).await;
}

#[tokio::test]
async fn a_failing_or_slow_upstream_is_marked_down_and_what_is_kept_served_aws() {
    a_failing_or_slow_upstream_is_marked_down(Backend::aws("upstream-down", S3Host::Same)).await;
}

/// The upstream answering 5xx, then too slowly: the kept packument is served `STALE` with its
/// `Age`; after `REGISTRY_UPSTREAM_MAX_FAILS` failures in a row the upstream is not asked for
/// `REGISTRY_UPSTREAM_FAIL_TIMEOUT_SECS` (the fake's count stops) and answers come without
/// waiting; then one request probes it, which a held upstream answers only at
/// `REGISTRY_UPSTREAM_TIMEOUT_MS` (the kept packument then), and that failure marks it down
/// again at once; once it answers again, documents are revalidated.
async fn a_failing_or_slow_upstream_is_marked_down(backend: Backend) {
    const TIMEOUT: Duration = Duration::from_millis(1000);
    // Long enough that the requests made while it is marked down all come before it ends, on a
    // loaded machine too (the fake's count, not a clock, shows nobody waited on the upstream).
    const FAIL_TIMEOUT: Duration = Duration::from_secs(4);
    let up = FakeUpstream::start().await;
    up.add("flaky", "1.0.0", &[]);
    let reg = registry(
        backend,
        &up,
        &[
            // Every read asks the upstream while it is not marked down.
            ("REGISTRY_UPSTREAM_MAX_AGE_SECS", "0"),
            ("REGISTRY_UPSTREAM_MAX_FAILS", "2"),
            ("REGISTRY_UPSTREAM_FAIL_TIMEOUT_SECS", "4"),
            ("REGISTRY_UPSTREAM_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    // The packument's cache status and age, and how long the answer took.
    let get = || async {
        let start = std::time::Instant::now();
        let (status, doc, headers) = send(Method::GET, reg.url("/flaky"), None, None).await;
        let took = start.elapsed();
        assert_eq!(status, StatusCode::OK, "{doc}");
        assert_eq!(doc["versions"]["1.0.0"]["version"], "1.0.0", "{doc}");
        let age: u64 = headers["age"].to_str().unwrap().parse().unwrap();
        let cache = headers["x-upstream-cache"].to_str().unwrap().to_string();
        (cache, age, took)
    };
    let asked = || up.count("/flaky");

    let (cache, _, _) = get().await;
    assert_eq!(cache, "MISS");
    assert_eq!(asked(), 1);

    // 5xx: what is kept, stale, with its age; two failures in a row mark the upstream down.
    up.set_down(true);
    let (cache, age, _) = get().await;
    assert_eq!((cache.as_str(), asked()), ("STALE", 2));
    assert!(age < 60, "{age}");
    let (cache, _, _) = get().await;
    let marked_down = std::time::Instant::now();
    assert_eq!((cache.as_str(), asked()), ("STALE", 3));
    for _ in 0..5 {
        let (cache, _, _) = get().await;
        assert_eq!(cache, "STALE");
    }
    assert_eq!(asked(), 3, "marked down: not asked for the fail timeout");

    // The fail timeout over, the upstream is slow: one request probes it and waits for the
    // request timeout, then gets what is kept, as old as it is.
    tokio::time::sleep_until((marked_down + FAIL_TIMEOUT + Duration::from_millis(200)).into())
        .await;
    let release = up.hold();
    up.set_down(false);
    let (cache, age, took) = get().await;
    let marked_down = std::time::Instant::now();
    assert_eq!((cache.as_str(), asked()), ("STALE", 4));
    assert!(age >= 1, "the age of what was kept: {age}");
    assert!(
        took >= TIMEOUT,
        "answered at the upstream timeout: {took:?}"
    );
    // The probe failed: marked down again at once, so nobody waits for the upstream (it is not
    // asked at all).
    for _ in 0..3 {
        let (cache, _, _) = get().await;
        assert_eq!(cache, "STALE");
    }
    assert_eq!(asked(), 4, "one failed probe marks it down again");

    // Answering again after the fail timeout: revalidated (the kept document's ETag matches).
    release.send(true).unwrap();
    tokio::time::sleep_until((marked_down + FAIL_TIMEOUT + Duration::from_millis(200)).into())
        .await;
    let (cache, age, _) = get().await;
    assert_eq!((cache.as_str(), age, asked()), ("REVALIDATED", 0, 5));
}

/// GitHub mode: a name's origin is read and set by the logins in `REGISTRY_ADMINS` only; anyone
/// else signed in gets 403 (anonymous callers 401) and changes nothing.
#[tokio::test]
async fn only_admins_read_and_set_a_names_origin_in_github_mode() {
    let world = e2e::github_world::World::start().await;
    let up = FakeUpstream::start().await;
    up.add("claimed", "1.0.0", &[]);
    let reg = TestRegistry::builder()
        .github(&world)
        .env("REGISTRY_UPSTREAM", &up.url)
        .env("REGISTRY_ALLOWED_OWNERS", "acme")
        .env("REGISTRY_ADMINS", "carol, Alice")
        .start()
        .await;
    let path = "/-/package/claimed/origin";
    let internal = json!({"origin": "internal"});
    // Bob may publish to acme/widgets, but is no admin of this registry.
    for (caller, refused) in [(reg.as_user(&world.bob.token), 403), (reg.anonymous(), 401)] {
        let reply = caller.get(path).send().await.assert_status(refused);
        if refused == 403 {
            assert!(
                reply.error().unwrap().contains("REGISTRY_ADMINS"),
                "{:?}",
                reply.body
            );
        }
        caller
            .put(path)
            .json(&internal)
            .send()
            .await
            .assert_status(refused);
    }
    // Nothing changed: still undecided, and served from the upstream.
    let alice = reg.as_user(&world.alice.token);
    let reply = alice.get(path).send().await.assert_status(200);
    assert_eq!(reply.body["because"], "undecided", "{:?}", reply.body);
    alice.get_packument("claimed").await.assert_status(200);
    assert_eq!(up.count("/claimed"), 1);

    // An admin (listed in another case) makes it internal: no longer fetched from the upstream.
    let reply = alice
        .put(path)
        .json(&internal)
        .send()
        .await
        .assert_status(200);
    assert_eq!(reply.body["origin"], "internal", "{:?}", reply.body);
    assert_eq!(reply.body["because"], "setting", "{:?}", reply.body);
    assert_eq!(reply.body["set_by"], "alice", "{:?}", reply.body);
    let reply = reg
        .as_user(&world.carol.token)
        .get(path)
        .send()
        .await
        .assert_status(200);
    assert_eq!(reply.body["origin"], "internal", "{:?}", reply.body);
    alice.get_packument("claimed").await.assert_status(404);
    assert_eq!(up.count("/claimed"), 1);
}
