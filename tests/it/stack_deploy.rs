//! The deployment template against the code, on an emulator: `infra/template.yaml` is transformed
//! to CloudFormation and deployed into moto's CloudFormation (`infra/deploy_emulator.py`), and the
//! npm flow then runs on the table and bucket the stack created. A key schema, attribute or TTL
//! name that differs between the template and the code fails here.

use std::path::Path;

use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType, TimeToLiveStatus};
use e2e::{AwsResources, Backend, Npm, Server, escaped, http, stack, write_package};
use serde_json::{Value, json};
use sha1::Digest;

/// The key and attribute names the code uses: items are keyed by `pk` and `sk` (strings), and
/// expiring items carry their expiry in `ttl`.
use registry::storage::aws::layout::attr::{
    PK as PARTITION_KEY, SK as SORT_KEY, TTL as TTL_ATTRIBUTE,
};

fn view_json(npm: &Npm, cwd: &Path, args: &[&str]) -> Value {
    let mut all = vec!["view"];
    all.extend_from_slice(args);
    all.push("--json");
    let run = npm.ok(cwd, &all);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("npm view output is not JSON ({e}): {}", run.stdout))
}

fn installed_version(project: &Path, name: &str) -> String {
    let text =
        std::fs::read_to_string(project.join("node_modules").join(name).join("package.json"))
            .unwrap_or_else(|e| panic!("{name} not installed: {e}"));
    serde_json::from_str::<Value>(&text).unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn new_project(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"consumer","version":"1.0.0","private":true}"#,
    )
    .unwrap();
    dir
}

/// The stack's table, read back with DynamoDB's API: the keys and the TTL attribute the code uses.
/// (TTL is the one part of the contract no request to the registry can reveal: DynamoDB deletes
/// expired items in the background, and the code checks expiry itself.)
async fn assert_table_matches_code(resources: &AwsResources) {
    let ddb = stack::dynamodb(resources);
    let table = ddb
        .describe_table()
        .table_name(&resources.table)
        .send()
        .await
        .expect("DescribeTable")
        .table
        .expect("table description");
    let keys: Vec<(String, KeyType)> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (PARTITION_KEY.to_string(), KeyType::Hash),
            (SORT_KEY.to_string(), KeyType::Range)
        ],
        "the stack's key schema is not the code's"
    );
    for key in [PARTITION_KEY, SORT_KEY] {
        let def = table
            .attribute_definitions()
            .iter()
            .find(|a| a.attribute_name() == key)
            .unwrap_or_else(|| panic!("no attribute definition for {key}"));
        assert_eq!(def.attribute_type(), &ScalarAttributeType::S, "{key}");
    }
    let ttl = ddb
        .describe_time_to_live()
        .table_name(&resources.table)
        .send()
        .await
        .expect("DescribeTimeToLive")
        .time_to_live_description
        .expect("TTL description");
    assert_eq!(
        ttl.attribute_name(),
        Some(TTL_ATTRIBUTE),
        "the stack's TTL attribute is not the one the code writes: {ttl:?}"
    );
    assert!(
        matches!(
            ttl.time_to_live_status(),
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ),
        "TTL is not enabled on the stack's table: {ttl:?}"
    );
}

/// Tarball downloads were 302s to presigned URLs on the stack's bucket; no bytes went through.
fn assert_tarballs_were_redirected(server: &Server) {
    let log = server.log();
    let tarball_gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("method=GET") && l.contains(".tgz "))
        .collect();
    assert!(
        tarball_gets.iter().any(|l| l.contains("status=302")),
        "npm must have been redirected to S3 for tarballs:\n{log}"
    );
    assert!(
        !tarball_gets.iter().any(|l| l.contains("status=200")),
        "no tarball bytes through the registry:\n{log}"
    );
}

#[tokio::test]
async fn npm_flow_on_the_deployed_stack() {
    let started = std::time::Instant::now();
    let resources = stack::deploy("npm");
    eprintln!(
        "stack deployed in {:.1?}: table {}, bucket {}",
        started.elapsed(),
        resources.table,
        resources.bucket
    );
    assert_table_matches_code(&resources).await;
    let bucket = resources.bucket.clone();
    let backend = Backend::Aws(resources);

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start_on(root, &backend);
    let npm = Npm::new(root, &server.url);

    // A scoped package in three versions, and a second package depending on it.
    let dep = write_package(&root.join("dep"), "@stack/dep", "1.0.0", json!({}));
    npm.ok(&dep, &["publish"]);
    write_package(&dep, "@stack/dep", "1.0.1", json!({}));
    npm.ok(&dep, &["publish"]);
    write_package(&dep, "@stack/dep", "1.1.0", json!({}));
    npm.ok(&dep, &["publish"]);
    let app = write_package(
        &root.join("app"),
        "@stack/app",
        "2.0.0",
        json!({ "dependencies": { "@stack/dep": "^1.0.0" } }),
    );
    npm.ok(&app, &["publish"]);

    // npm view.
    assert_eq!(
        view_json(&npm, root, &["@stack/dep", "versions"]),
        json!(["1.0.0", "1.0.1", "1.1.0"])
    );
    assert_eq!(
        npm.ok(root, &["view", "@stack/app", "dependencies.@stack/dep"])
            .stdout
            .trim(),
        "^1.0.0"
    );
    assert_eq!(
        view_json(&npm, root, &["@stack/dep", "dist-tags"]),
        json!({ "latest": "1.1.0" })
    );

    // Install as another user (own HOME, cold cache): every tarball comes through a 302.
    let consumer = Npm::new(&root.join("consumer"), &server.url);
    let project = new_project(root, "project");
    consumer.ok(&project, &["install", "@stack/app"]);
    assert_eq!(installed_version(&project, "@stack/app"), "2.0.0");
    assert_eq!(installed_version(&project, "@stack/dep"), "1.1.0");
    let node = std::process::Command::new("node")
        .args([
            "-e",
            "const a = require('@stack/app'); const d = require('@stack/dep'); console.log(a.version + ' ' + d.version)",
        ])
        .current_dir(&project)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&node.stdout).trim(), "2.0.0 1.1.0");
    assert_tarballs_were_redirected(&server);

    // The redirect by hand: a presigned URL into the stack's bucket, serving the published bytes.
    let client = http();
    let packument: Value = client
        .get(format!("{}/{}", server.url, escaped("@stack/dep")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Signed with the key the stack created (as the publish function's environment names it),
    // which /-/npm/v1/keys lists.
    let keys: Value = client
        .get(format!("{}/-/npm/v1/keys", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(
        packument["versions"]["1.1.0"]["dist"]["signatures"][0]["keyid"], keys["keys"][0]["keyid"],
        "signed with the stack's key: {packument}"
    );
    let integrity = packument["versions"]["1.1.0"]["dist"]["integrity"]
        .as_str()
        .unwrap()
        .to_string();
    let redirect = client
        .get(format!("{}/@stack/dep/-/dep-1.1.0.tgz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.contains(&format!(
            "/{bucket}/{}",
            registry::storage::aws::layout::ObjectKey::TARBALLS
        )) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let bytes = reqwest::get(&location)
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(e2e::integrity(&bytes), integrity);
    assert_eq!(
        hex::encode(sha1::Sha1::digest(&bytes)),
        packument["versions"]["1.1.0"]["dist"]["shasum"]
    );

    // dist-tag add, deprecate, unpublish one version.
    npm.ok(root, &["dist-tag", "add", "@stack/dep@1.0.0", "stable"]);
    let ls = npm.ok(root, &["dist-tag", "ls", "@stack/dep"]).stdout;
    assert!(
        ls.contains("stable: 1.0.0") && ls.contains("latest: 1.1.0"),
        "{ls}"
    );
    npm.ok(root, &["deprecate", "@stack/dep@1.0.0", "use 1.1 instead"]);
    assert_eq!(
        npm.ok(root, &["view", "@stack/dep@1.0.0", "deprecated"])
            .stdout
            .trim(),
        "use 1.1 instead"
    );
    npm.ok(root, &["unpublish", "@stack/dep@1.0.1"]);
    assert_eq!(
        view_json(&npm, root, &["@stack/dep", "versions"]),
        json!(["1.0.0", "1.1.0"])
    );
    let gone = client
        .get(format!("{}/@stack/dep/-/dep-1.0.1.tgz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);

    // Restart on the same stack resources: everything is still there.
    let server = server.restart();
    let npm = Npm::new(root, &server.url);
    assert_eq!(
        view_json(&npm, root, &["@stack/dep", "versions"]),
        json!(["1.0.0", "1.1.0"])
    );
    assert_eq!(
        view_json(&npm, root, &["@stack/dep", "dist-tags"]),
        json!({ "latest": "1.1.0", "stable": "1.0.0" })
    );
    assert_eq!(
        npm.ok(root, &["view", "@stack/dep@1.0.0", "deprecated"])
            .stdout
            .trim(),
        "use 1.1 instead"
    );
    let consumer = Npm::new(&root.join("consumer-after-restart"), &server.url);
    let after = new_project(root, "after-restart");
    let install = consumer.ok(&after, &["install", "@stack/app", "@stack/dep@stable"]);
    assert!(
        install.all().contains("use 1.1 instead"),
        "{}",
        install.all()
    );
    assert_eq!(installed_version(&after, "@stack/app"), "2.0.0");
    assert_eq!(installed_version(&after, "@stack/dep"), "1.0.0");
    assert_tarballs_were_redirected(&server);
    eprintln!("whole flow in {:.1?}", started.elapsed());
}
