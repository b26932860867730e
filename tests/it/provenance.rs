//! Provenance (issue 23, part 3): `npm publish --provenance` documents (the tarball and the
//! `<name>-<version>.sigstore` bundle as JSON text) with real bundles and tarballs of public
//! packages (tests/fixtures/provenance/, from public test suites; never fetched at test time),
//! verified offline against the pinned Sigstore root, served as npm's client reads them; and
//! tampered or mismatched bundles refused with the reason, storing nothing. In GitHub mode, with
//! bundles of a Sigstore instance made at test time (`registry::testing::sigstore`, its trusted
//! root given to the server with `REGISTRY_SIGSTORE_TRUSTED_ROOT`), a bundle must say the package
//! was built from the repository it is bound to.

use std::path::Path;

use e2e::fake_github::Permission;
use e2e::github_world::World;
use e2e::{Backend, S3Host, TestRegistry, pkg, tgz};
use registry::testing::sigstore::TestSigstore;
use serde_json::{Value, json};

/// The real packages: fixture file stem, name, version, predicate type.
const REAL: [(&str, &str, &str, &str); 4] = [
    (
        "sigstore-0.4.0",
        "sigstore",
        "0.4.0",
        "https://slsa.dev/provenance/v0.2",
    ),
    (
        "sigstore-1.3.0",
        "sigstore",
        "1.3.0",
        "https://slsa.dev/provenance/v0.2",
    ),
    (
        "sigstore-2.3.1",
        "sigstore",
        "2.3.1",
        "https://slsa.dev/provenance/v1",
    ),
    (
        "playwright-cli-0.1.1",
        "@playwright/cli",
        "0.1.1",
        "https://slsa.dev/provenance/v1",
    ),
];

fn fixture(file: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/provenance")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The document `npm publish --provenance` sends: the tarball's own manifest as the version,
/// the tarball, and the bundle as JSON text.
fn provenance_publish(name: &str, version: &str, tarball: Vec<u8>, bundle: &str) -> e2e::Pkg {
    let manifest = registry::domain::tarball::inspect(
        &tarball,
        registry::domain::tarball::TarballLimits::default(),
    )
    .unwrap()
    .manifest;
    let media_type =
        serde_json::from_str::<Value>(bundle).map_or(Value::Null, |b| b["mediaType"].clone());
    let (name_owned, version_owned, bundle) =
        (name.to_string(), version.to_string(), bundle.to_string());
    pkg(name)
        .version(version)
        .tarball(tarball)
        .edit(move |doc| {
            let dist = doc["versions"][&version_owned]["dist"].clone();
            let mut m = manifest;
            m["_id"] = json!(format!("{name_owned}@{version_owned}"));
            m["dist"] = dist;
            doc["versions"][&version_owned] = m;
            doc["_attachments"][format!("{name_owned}-{version_owned}.sigstore")] = json!({
                "content_type": media_type,
                "data": bundle,
                "length": bundle.len(),
            });
        })
}

#[tokio::test]
async fn real_provenance_is_verified_and_served_local() {
    real_provenance_is_verified_and_served(Backend::local()).await;
}

#[tokio::test]
async fn real_provenance_is_verified_and_served_aws() {
    real_provenance_is_verified_and_served(Backend::aws("provenance", S3Host::Same)).await;
}

async fn real_provenance_is_verified_and_served(backend: Backend) {
    let reg = TestRegistry::builder().backend(backend).start().await;
    for (stem, name, version, predicate_type) in REAL {
        let bundle_text = String::from_utf8(fixture(&format!("{stem}.sigstore"))).unwrap();
        reg.publish(provenance_publish(
            name,
            version,
            fixture(&format!("{stem}.tgz")),
            &bundle_text,
        ))
        .await
        .assert_status(201);
        let doc = reg.get_packument(name).await.assert_status(200).body;
        let attestations = &doc["versions"][version]["dist"]["attestations"];
        let url = format!(
            "{}/-/npm/v1/attestations/{}@{version}",
            reg.url,
            name.replacen('/', "%2f", 1)
        );
        assert_eq!(attestations["url"], url.as_str(), "{doc}");
        assert_eq!(
            attestations["provenance"]["predicateType"], predicate_type,
            "{doc}"
        );
        // The URL answers what npm's client reads: the bundle, as published.
        let path = url.strip_prefix(&reg.url).unwrap();
        let served = reg.get(path).send().await.assert_status(200).body;
        assert_eq!(served["attestations"][0]["predicateType"], predicate_type);
        let bundle: Value = serde_json::from_str(&bundle_text).unwrap();
        assert_eq!(served["attestations"][0]["bundle"], bundle, "{stem}");
    }
    // The web page says where each version was built.
    let page = reg
        .get("/-/web/package/sigstore")
        .header("accept", "text/html")
        .send()
        .await
        .assert_status(200);
    let html = String::from_utf8_lossy(&page.bytes).into_owned();
    assert!(
        html.contains("<span class=\"badge-provenance\">built by sigstore/sigstore-js workflow .github/workflows/"),
        "{html}"
    );
    // A version without provenance has no attestations.
    reg.publish(pkg("plain-no-provenance"))
        .await
        .assert_status(201);
    let doc = reg.get_packument("plain-no-provenance").await.body;
    assert!(doc["versions"]["1.0.0"]["dist"]["attestations"].is_null());
    reg.get("/-/npm/v1/attestations/plain-no-provenance@1.0.0")
        .send()
        .await
        .assert_status(404);
}

#[tokio::test]
async fn tampered_and_mismatched_bundles_are_refused_local() {
    tampered_and_mismatched_bundles_are_refused(Backend::local()).await;
}

#[tokio::test]
async fn tampered_and_mismatched_bundles_are_refused_aws() {
    tampered_and_mismatched_bundles_are_refused(Backend::aws("provbad", S3Host::Same)).await;
}

async fn tampered_and_mismatched_bundles_are_refused(backend: Backend) {
    let reg = TestRegistry::builder().backend(backend).start().await;
    let text = String::from_utf8(fixture("sigstore-2.3.1.sigstore")).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    let tarball = fixture("sigstore-2.3.1.tgz");

    // The statement changed (one byte of the payload), the signature changed, the certificate
    // gone, not JSON; and a genuine bundle of another version.
    let mut payload = bundle.clone();
    let original = payload["dsseEnvelope"]["payload"]
        .as_str()
        .unwrap()
        .to_string();
    let mut changed: Vec<char> = original.chars().collect();
    changed[40] = if changed[40] == 'A' { 'B' } else { 'A' };
    payload["dsseEnvelope"]["payload"] = json!(changed.into_iter().collect::<String>());
    let mut signature = bundle.clone();
    let sig = signature["dsseEnvelope"]["signatures"][0]["sig"]
        .as_str()
        .unwrap()
        .to_string();
    signature["dsseEnvelope"]["signatures"][0]["sig"] =
        json!(format!("{}A{}", &sig[..10], &sig[11..]));
    let mut no_certificate = bundle.clone();
    no_certificate["verificationMaterial"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == "tlogEntries");
    let other_version = String::from_utf8(fixture("sigstore-1.3.0.sigstore")).unwrap();
    for (what, text) in [
        ("payload", payload.to_string()),
        ("signature", signature.to_string()),
        ("certificate", no_certificate.to_string()),
        ("not JSON", "{not json".to_string()),
        ("another version's bundle", other_version),
    ] {
        let refused = reg
            .publish(provenance_publish(
                "sigstore",
                "2.3.1",
                tarball.clone(),
                &text,
            ))
            .await
            .assert_status(400);
        assert_eq!(
            refused.code(),
            Some("provenance_refused"),
            "{what}: {}",
            refused.body
        );
        assert!(
            refused
                .error()
                .unwrap_or_default()
                .starts_with("provenance refused: "),
            "{what}: {}",
            refused.body
        );
        reg.get_packument("sigstore").await.assert_status(404);
    }
    assert_eq!(reg.tarball_count().await, 0, "nothing stored");
    // The genuine bundle still publishes.
    reg.publish(provenance_publish(
        "sigstore",
        "2.3.1",
        tarball,
        &text_of(&bundle),
    ))
    .await
    .assert_status(201);
}

fn text_of(bundle: &Value) -> String {
    bundle.to_string()
}

/// `@acme/x` at `version`, its package.json naming `github:acme/x`, with npm's provenance bundle
/// of a GitHub Actions build from `built_from` (`owner/repo`) made by `sigstore`; and that bundle.
fn acme_x(sigstore: &TestSigstore, version: &str, built_from: &str) -> (e2e::Pkg, String) {
    let manifest = json!({
        "name": "@acme/x",
        "version": version,
        "repository": "github:acme/x",
    });
    let tarball = tgz(&[
        ("package/package.json", manifest.to_string().as_bytes()),
        ("package/index.js", b"module.exports = 1;\n"),
    ]);
    let bundle = sigstore.npm_bundle("@acme/x", version, &tarball, built_from, "publish.yml");
    (
        provenance_publish("@acme/x", version, tarball, &bundle),
        bundle,
    )
}

/// GitHub mode: `@acme/x`, bound to acme/x, accepts a bundle built from acme/x (compared as GitHub
/// compares names, without regard to case) and refuses, with `400 provenance_refused` and
/// nothing stored, one built from another repository, acme/other, which the publisher also
/// administers: the first publish (which would bind the name) and a later version alike.
#[tokio::test]
async fn github_mode_provenance_must_come_from_the_bound_repository() {
    let world = World::start().await;
    world.github.add_repo("acme", "x", true);
    world.github.grant("acme", "x", "alice", Permission::Admin);
    let tmp = tempfile::tempdir().unwrap();
    let sigstore = TestSigstore::new();
    let trusted_root = tmp.path().join("trusted_root.json");
    std::fs::write(&trusted_root, sigstore.trusted_root_json()).unwrap();
    let reg = TestRegistry::builder()
        .github(&world)
        .env(
            "REGISTRY_SIGSTORE_TRUSTED_ROOT",
            trusted_root.to_str().unwrap(),
        )
        .process()
        .start()
        .await;
    let alice = reg.as_user(&world.alice.token);
    let attestation = |version: &str| format!("/-/npm/v1/attestations/@acme%2fx@{version}");
    let refused_from_elsewhere = |reply: e2e::Reply| {
        assert_eq!(reply.code(), Some("provenance_refused"), "{}", reply.body);
        let message = reply.error().unwrap_or_default().to_string();
        assert!(
            message.starts_with("provenance refused: @acme/x is bound to acme/x")
                && message.contains("built from acme/other"),
            "{message}"
        );
    };

    // The first publish, built elsewhere: refused, and the name is not even created.
    refused_from_elsewhere(
        alice
            .publish(acme_x(&sigstore, "1.0.0", "acme/other").0)
            .await
            .assert_status(400),
    );
    alice.get_packument("@acme/x").await.assert_status(404);
    alice
        .get(&attestation("1.0.0"))
        .send()
        .await
        .assert_status(404);
    assert_eq!(reg.tarball_count().await, 0, "nothing stored");

    // Built from the bound repository: published, its bundle served.
    let (accepted, bundle) = acme_x(&sigstore, "1.0.0", "acme/x");
    alice.publish(accepted).await.assert_status(201);
    let doc = alice.get_packument("@acme/x").await.assert_status(200).body;
    assert_eq!(
        doc["versions"]["1.0.0"]["dist"]["attestations"]["provenance"]["predicateType"],
        "https://slsa.dev/provenance/v1",
        "{doc}"
    );
    let served = alice
        .get(&attestation("1.0.0"))
        .send()
        .await
        .assert_status(200)
        .body;
    assert_eq!(
        served["attestations"][0]["bundle"],
        serde_json::from_str::<Value>(&bundle).unwrap()
    );

    // A later version built elsewhere: refused, nothing of it stored.
    refused_from_elsewhere(
        alice
            .publish(acme_x(&sigstore, "1.0.1", "acme/other").0)
            .await
            .assert_status(400),
    );
    let doc = alice.get_packument("@acme/x").await.assert_status(200).body;
    assert!(doc["versions"]["1.0.1"].is_null(), "{doc}");
    alice
        .get(&attestation("1.0.1"))
        .send()
        .await
        .assert_status(404);
    assert_eq!(reg.tarball_count().await, 1, "nothing more stored");

    // GitHub's names are not case-sensitive.
    alice
        .publish(acme_x(&sigstore, "1.0.2", "Acme/X").0)
        .await
        .assert_status(201);
}

/// Without `REGISTRY_SIGSTORE_TRUSTED_ROOT` (the default) provenance is verified against the
/// pinned public-good root only: a bundle of a Sigstore instance made at test time is refused.
#[tokio::test]
async fn only_the_pinned_sigstore_root_is_trusted_by_default() {
    let reg = TestRegistry::start().await;
    let sigstore = TestSigstore::new();
    let refused = reg
        .publish(acme_x(&sigstore, "1.0.0", "acme/x").0)
        .await
        .assert_status(400);
    assert_eq!(
        refused.code(),
        Some("provenance_refused"),
        "{}",
        refused.body
    );
    assert!(
        refused
            .error()
            .unwrap_or_default()
            .contains("which the trusted root does not trust"),
        "{}",
        refused.body
    );
    reg.get_packument("@acme/x").await.assert_status(404);
}
