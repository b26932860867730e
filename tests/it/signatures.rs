//! Registry signatures (issue 23, part 2), verified by npm's own code: pacote's registry check
//! with the keys fetched from `GET /-/npm/v1/keys` as `npm audit signatures` fetches them when
//! Sigstore's TUF repository is out of reach (tests/support/verify_signatures.cjs).

use std::path::Path;
use std::process::Command;

use e2e::fake_upstream::FakeUpstream;
use e2e::{Backend, Npm, S3Host, Server, TestRegistry, write_package};
use serde_json::{Value, json};

/// Runs the verification script for `specs` against `registry`, keys handled as `mode` says.
fn verify(root: &Path, registry: &str, mode: &str, specs: &[&str]) -> Value {
    let npm_bin = e2e::npm_bin();
    // NPM_BIN is <prefix>/node_modules/.bin/npm; npm's own package is beside it.
    let npm_dir = Path::new(&npm_bin)
        .parent()
        .and_then(Path::parent)
        .map(|modules| modules.join("npm"))
        .expect("NPM_BIN names npm's bin in a prefix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/verify_signatures.cjs");
    let out = Command::new("node")
        .arg(script)
        .arg(&npm_dir)
        .arg(format!("{registry}/"))
        .arg(root.join(format!("verify-cache-{mode}")))
        .arg(mode)
        .args(specs)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "verify_signatures.cjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn failed_codes(outcome: &Value) -> Vec<String> {
    outcome["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn get(url: &str) -> Value {
    e2e::http()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every version npm publishes is signed; pacote verifies the signatures with the listed key,
/// and refuses them with another key, with the key expired before the publish, or with no key.
/// After `registry-server keys rotate` and a restart, new versions are signed by the new key,
/// the old key is listed with an expiry, and the versions it signed still verify.
#[tokio::test]
async fn versions_are_signed_as_npm_verifies_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start_on(root, &Backend::local());
    let npm = Npm::new(root, &server.url);
    let scoped = write_package(&root.join("scoped"), "@acme/signed", "1.0.0", json!({}));
    npm.ok(&scoped, &["publish"]);
    let plain = write_package(&root.join("plain"), "signed-plain", "1.0.0", json!({}));
    npm.ok(&plain, &["publish"]);

    let keys = get(&format!("{}/-/npm/v1/keys", server.url)).await;
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{keys}");
    let first = &listed[0];
    assert_eq!(first["keytype"], "ecdsa-sha2-nistp256");
    assert_eq!(first["scheme"], "ecdsa-sha2-nistp256");
    assert_eq!(first["expires"], Value::Null);
    let keyid = first["keyid"].as_str().unwrap().to_string();
    assert!(keyid.starts_with("SHA256:"), "{keyid}");
    for path in ["@acme%2fsigned", "signed-plain"] {
        let doc = get(&format!("{}/{path}", server.url)).await;
        let signatures = &doc["versions"]["1.0.0"]["dist"]["signatures"];
        assert_eq!(signatures[0]["keyid"], keyid.as_str(), "{doc}");
    }

    let specs = ["@acme/signed@1.0.0", "signed-plain@1.0.0"];
    let ok = verify(root, &server.url, "as-served", &specs);
    assert_eq!(ok["verified"], json!(specs), "{ok}");
    for (mode, code) in [
        ("wrong-key", "EINTEGRITYSIGNATURE"),
        ("expired", "EEXPIREDSIGNATUREKEY"),
        ("no-keys", "EMISSINGSIGNATUREKEY"),
    ] {
        let refused = verify(root, &server.url, mode, &specs);
        assert_eq!(failed_codes(&refused), [code, code], "{mode}: {refused}");
    }

    // Rotation: a new key for the data directory, then a restart.
    let data_dir = root.join("data");
    let rotated = Command::new(e2e::sibling_binary("registry-server"))
        .args(["keys", "rotate"])
        .env("REGISTRY_DATA_DIR", &data_dir)
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    let server = server.restart();
    let npm = Npm::new(&root.join("after"), &server.url);
    write_package(&scoped, "@acme/signed", "1.1.0", json!({}));
    npm.ok(&scoped, &["publish"]);
    let keys = get(&format!("{}/-/npm/v1/keys", server.url)).await;
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{keys}");
    assert_eq!(listed[0]["keyid"], keyid.as_str(), "{keys}");
    assert!(listed[0]["expires"].is_string(), "old key expired: {keys}");
    assert_eq!(listed[1]["expires"], Value::Null, "{keys}");
    let doc = get(&format!("{}/@acme%2fsigned", server.url)).await;
    assert_eq!(
        doc["versions"]["1.1.0"]["dist"]["signatures"][0]["keyid"], listed[1]["keyid"],
        "{doc}"
    );
    let all = [
        "@acme/signed@1.0.0",
        "@acme/signed@1.1.0",
        "signed-plain@1.0.0",
    ];
    let ok = verify(root, &server.url, "as-served", &all);
    assert_eq!(ok["verified"], json!(all), "{ok}");
}

/// `REGISTRY_SIGNING=false`: versions carry no signatures and no key is listed.
#[tokio::test]
async fn signing_can_be_turned_off() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut env = Backend::local().env();
    env.push(("REGISTRY_SIGNING".into(), "false".into()));
    let server = Server::start_with(root.join("data"), root.join("server.log"), env);
    let npm = Npm::new(root, &server.url);
    let plain = write_package(&root.join("plain"), "unsigned-plain", "1.0.0", json!({}));
    npm.ok(&plain, &["publish"]);
    let keys = get(&format!("{}/-/npm/v1/keys", server.url)).await;
    assert_eq!(keys, json!({ "keys": [] }));
    let doc = get(&format!("{}/unsigned-plain", server.url)).await;
    assert!(
        doc["versions"]["1.0.0"]["dist"]["signatures"].is_null(),
        "{doc}"
    );
}

/// A P-256 signing key in the emulator's KMS (moto's, which signs ECC keys faithfully: its
/// signatures verify against its `GetPublicKey`). Returns the key id and its public DER.
async fn kms_key() -> (String, Vec<u8>) {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let endpoint = std::env::var("TEST_DYNAMODB_ENDPOINT")
        .expect("TEST_DYNAMODB_ENDPOINT is not set: run the tests with tests/run");
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint)
        .http_client(registry::storage::aws::AwsStorage::http_client())
        .build();
    let kms = aws_sdk_kms::Client::from_conf(config);
    let key = kms
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .expect("create a KMS key");
    let id = key.key_metadata().unwrap().key_id().to_string();
    let public = kms.get_public_key().key_id(&id).send().await.unwrap();
    (id, public.public_key().unwrap().as_ref().to_vec())
}

/// On the AWS backend the KMS key signs (one `Sign` per publish): `/-/npm/v1/keys` lists its
/// public key, and pacote verifies the versions with it.
#[tokio::test]
async fn versions_are_signed_with_kms_on_aws() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (key_id, public_der) = kms_key().await;
    let backend = Backend::aws("kmssign", S3Host::Same);
    let mut env = backend.env();
    let endpoint = std::env::var("TEST_DYNAMODB_ENDPOINT").unwrap();
    env.push(("AWS_ENDPOINT_URL_KMS".into(), endpoint));
    env.push(("REGISTRY_SIGNING_KMS_KEY".into(), key_id));
    let server = Server::start_with(root.join("data"), root.join("server.log"), env);
    let npm = Npm::new(root, &server.url);
    let scoped = write_package(&root.join("scoped"), "@acme/kms-signed", "1.0.0", json!({}));
    npm.ok(&scoped, &["publish"]);

    let keys = get(&format!("{}/-/npm/v1/keys", server.url)).await;
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{keys}");
    assert_eq!(
        listed[0]["key"],
        base64::engine::general_purpose::STANDARD.encode(&public_der),
        "the KMS key is listed: {keys}"
    );
    let doc = get(&format!("{}/@acme%2fkms-signed", server.url)).await;
    assert_eq!(
        doc["versions"]["1.0.0"]["dist"]["signatures"][0]["keyid"], listed[0]["keyid"],
        "{doc}"
    );
    let ok = verify(root, &server.url, "as-served", &["@acme/kms-signed@1.0.0"]);
    assert_eq!(ok["verified"], json!(["@acme/kms-signed@1.0.0"]), "{ok}");
    let refused = verify(root, &server.url, "wrong-key", &["@acme/kms-signed@1.0.0"]);
    assert_eq!(failed_codes(&refused), ["EINTEGRITYSIGNATURE"], "{refused}");
}

/// Proxied versions keep their upstream's signatures (the signed `name@version:integrity` is the
/// same here), and `/-/npm/v1/keys` lists the upstream's key beside ours: pacote verifies a
/// proxied version and a version published here from the one key list.
#[tokio::test]
async fn proxied_versions_verify_with_the_upstreams_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let up = FakeUpstream::start().await;
    let upstream_key = up.sign_versions();
    up.add("upstream-signed", "1.0.0", &[]);
    let reg = TestRegistry::builder()
        .env("REGISTRY_UPSTREAM", &up.url)
        .start()
        .await;
    let npm = Npm::new(root, &reg.url);
    let ours = write_package(&root.join("ours"), "@acme/ours", "1.0.0", json!({}));
    npm.ok(&ours, &["publish"]);

    let keys = get(&format!("{}/-/npm/v1/keys", reg.url)).await;
    let ids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyid"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "ours and the upstream's: {keys}");
    assert!(
        ids.contains(&upstream_key["keyid"].as_str().unwrap()),
        "{keys}"
    );
    let specs = ["upstream-signed@1.0.0", "@acme/ours@1.0.0"];
    let ok = verify(root, &reg.url, "as-served", &specs);
    assert_eq!(ok["verified"], json!(specs), "{ok}");
}

/// Runs `registry-server keys backfill` with `env`; its output.
fn run_backfill(env: &[(String, String)]) -> String {
    let out = Command::new(e2e::sibling_binary("registry-server"))
        .args(["keys", "backfill"])
        .env("REGISTRY_UPSTREAM", "")
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "keys backfill failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Versions published before signing was on are signed by `registry-server keys backfill`
/// (through the running server's control socket), once; pacote then verifies them too.
#[tokio::test]
async fn backfill_signs_what_was_published_unsigned_local() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data_dir = root.join("data");
    let unsigned = vec![("REGISTRY_SIGNING".to_string(), "false".to_string())];
    let server = Server::start_with(data_dir.clone(), root.join("server.log"), unsigned);
    let npm = Npm::new(root, &server.url);
    let pkg = write_package(&root.join("pkg"), "@acme/late", "1.0.0", json!({}));
    npm.ok(&pkg, &["publish"]);
    drop(server);

    let server = Server::start_with(data_dir.clone(), root.join("server.log"), Vec::new());
    let npm = Npm::new(&root.join("second"), &server.url);
    write_package(&pkg, "@acme/late", "1.1.0", json!({}));
    npm.ok(&pkg, &["publish"]);
    let doc = get(&format!("{}/@acme%2flate", server.url)).await;
    assert!(
        doc["versions"]["1.0.0"]["dist"]["signatures"].is_null(),
        "{doc}"
    );
    let missing = verify(root, &server.url, "as-served", &["@acme/late@1.0.0"]);
    assert_eq!(failed_codes(&missing), ["ENOSIGNATURES"], "{missing}");

    let dir_env = vec![(
        "REGISTRY_DATA_DIR".to_string(),
        data_dir.to_string_lossy().into_owned(),
    )];
    let out = run_backfill(&dir_env);
    assert!(out.contains("signed by the server running"), "{out}");
    assert!(out.contains("checked 2 live versions, signed 1"), "{out}");
    assert!(out.contains("signed @acme/late@1.0.0"), "{out}");
    let specs = ["@acme/late@1.0.0", "@acme/late@1.1.0"];
    let ok = verify(root, &server.url, "as-served", &specs);
    assert_eq!(ok["verified"], json!(specs), "{ok}");
    let again = run_backfill(&dir_env);
    assert!(again.contains("signed 0"), "{again}");
}

/// On AWS the backfill runs where the KMS key may sign (here: the command itself, on the
/// emulator), and the server then serves the signatures.
#[tokio::test]
async fn backfill_signs_what_was_published_unsigned_aws() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (key_id, _) = kms_key().await;
    let backend = Backend::aws("kmsbackfill", S3Host::Same);
    let server = Server::start_with(root.join("data"), root.join("server.log"), backend.env());
    let npm = Npm::new(root, &server.url);
    let pkg = write_package(&root.join("pkg"), "@acme/late-aws", "1.0.0", json!({}));
    npm.ok(&pkg, &["publish"]);
    drop(server);

    let mut signing_env = backend.env();
    signing_env.push((
        "AWS_ENDPOINT_URL_KMS".into(),
        std::env::var("TEST_DYNAMODB_ENDPOINT").unwrap(),
    ));
    signing_env.push(("REGISTRY_SIGNING_KMS_KEY".into(), key_id));
    let out = run_backfill(&signing_env);
    assert!(out.contains("checked 1 live versions, signed 1"), "{out}");
    let server = Server::start_with(root.join("data"), root.join("server.log"), signing_env);
    let ok = verify(root, &server.url, "as-served", &["@acme/late-aws@1.0.0"]);
    assert_eq!(ok["verified"], json!(["@acme/late-aws@1.0.0"]), "{ok}");
}
