//! The real npm CLI against the real registry-server process, embedded storage.

use std::path::Path;

use e2e::{Backend, Npm, S3Host, Server, escaped, http, write_package};
use serde_json::{Value, json};

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

#[tokio::test]
async fn publish_install_view_tags_and_restart_local() {
    publish_install_view_tags_and_restart(Backend::local()).await;
}

/// On the AWS backend, with S3 on another hostname than the registry (npm drops the token).
#[tokio::test]
async fn publish_install_view_tags_and_restart_aws() {
    publish_install_view_tags_and_restart(Backend::aws("flow", S3Host::Different)).await;
}

/// Tarball downloads on the AWS backend are 302s to presigned S3 URLs, which npm followed.
fn assert_tarballs_were_redirected(server: &Server, backend: &Backend) {
    if let Backend::Aws(_) = backend {
        let log = server.log();
        let redirected = log
            .lines()
            .filter(|l| l.contains(".tgz") && l.contains("status=302"))
            .count();
        assert!(
            redirected > 0,
            "npm must have been redirected to S3 for tarballs:\n{log}"
        );
        assert!(
            !log.lines().any(|l| l.contains(".tgz")
                && l.contains("method=GET")
                && l.contains("status=200")),
            "no tarball bytes through the registry"
        );
    }
}

async fn publish_install_view_tags_and_restart(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start_on(root, &backend);
    let npm = Npm::new(root, &server.url);

    // A scoped dependency in two versions, an unscoped package, and a scoped package depending on both.
    let dep = write_package(&root.join("dep"), "@acme/dep", "1.0.0", json!({}));
    npm.ok(&dep, &["publish"]);
    write_package(&dep, "@acme/dep", "1.1.0", json!({}));
    npm.ok(&dep, &["publish"]);
    let plain = write_package(&root.join("plain"), "plain-pkg", "0.1.0", json!({}));
    npm.ok(&plain, &["publish"]);
    let app = write_package(
        &root.join("app"),
        "@acme/app",
        "2.0.0",
        json!({ "dependencies": { "@acme/dep": "^1.0.0", "plain-pkg": "0.1.0" } }),
    );
    npm.ok(&app, &["publish"]);

    // npm view: versions, one field, name@version.
    assert_eq!(
        view_json(&npm, root, &["@acme/dep", "versions"]),
        json!(["1.0.0", "1.1.0"])
    );
    assert_eq!(
        npm.ok(root, &["view", "@acme/dep", "description"])
            .stdout
            .trim(),
        "@acme/dep test package"
    );
    assert_eq!(
        npm.ok(root, &["view", "@acme/dep@1.0.0", "version"])
            .stdout
            .trim(),
        "1.0.0"
    );
    assert_eq!(
        npm.ok(root, &["view", "plain-pkg", "version"])
            .stdout
            .trim(),
        "0.1.0"
    );
    assert_eq!(
        view_json(&npm, root, &["@acme/dep", "dist-tags"]),
        json!({ "latest": "1.1.0" })
    );

    // Install: the dependency resolves to the highest matching version, and everything loads.
    let project = new_project(root, "consumer");
    // Installs run as another user would: own HOME, cold cache, so every tarball is downloaded.
    let consumer = Npm::new(&root.join("consumer"), &server.url);
    consumer.ok(&project, &["install", "@acme/app"]);
    assert_eq!(installed_version(&project, "@acme/app"), "2.0.0");
    assert_eq!(installed_version(&project, "@acme/dep"), "1.1.0");
    assert_eq!(installed_version(&project, "plain-pkg"), "0.1.0");
    let node = std::process::Command::new("node")
        .args(["-e", "const a = require('@acme/app'); const d = require('@acme/dep'); console.log(a.version + ' ' + d.version)"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&node.stdout).trim(), "2.0.0 1.1.0");
    assert_tarballs_were_redirected(&server, &backend);

    // dist-tags: add, ls, install by tag, rm.
    npm.ok(root, &["dist-tag", "add", "@acme/dep@1.0.0", "stable"]);
    let ls = npm.ok(root, &["dist-tag", "ls", "@acme/dep"]).stdout;
    assert!(
        ls.contains("stable: 1.0.0") && ls.contains("latest: 1.1.0"),
        "{ls}"
    );
    let tagged = new_project(root, "tagged");
    consumer.ok(&tagged, &["install", "@acme/dep@stable"]);
    assert_eq!(installed_version(&tagged, "@acme/dep"), "1.0.0");
    npm.ok(root, &["dist-tag", "rm", "@acme/dep", "stable"]);
    let ls = npm.ok(root, &["dist-tag", "ls", "@acme/dep"]).stdout;
    assert!(!ls.contains("stable"), "{ls}");
    let bad = npm.run(root, &["dist-tag", "add", "@acme/dep@1.0.0", "1.x"]);
    assert!(!bad.ok, "a range is not a tag");

    // Republish of an existing version: npm's own pre-check, and with --force the registry's 409.
    let again = npm.run(&dep, &["publish"]);
    assert!(
        !again.ok && again.all().contains("cannot publish over"),
        "{}",
        again.all()
    );
    let forced = npm.run(&dep, &["publish", "--force"]);
    assert!(!forced.ok, "republish must fail");
    assert!(
        forced.all().contains("409")
            && forced
                .all()
                .contains("cannot publish over the previously published version 1.1.0"),
        "npm should print the registry's message: {}",
        forced.all()
    );

    // ETag and 304.
    let client = http();
    let url = format!("{}/{}", server.url, escaped("@acme/dep"));
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let body = first.text().await.unwrap();
    let second = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 304);
    assert!(second.bytes().await.unwrap().is_empty());
    let abbreviated = client
        .get(&url)
        .header("accept", "application/vnd.npm.install-v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        abbreviated.headers()["content-type"],
        "application/vnd.npm.install-v1+json"
    );
    assert_ne!(
        abbreviated.headers()["etag"].to_str().unwrap(),
        etag,
        "each representation has its own ETag"
    );
    npm.ok(root, &["dist-tag", "add", "@acme/dep@1.0.0", "old"]);
    let changed = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "a write must invalidate the ETag");

    // Restart on the same data directory: everything is still there.
    let server = server.restart();
    let npm = Npm::new(root, &server.url);
    assert_eq!(
        view_json(&npm, root, &["@acme/dep", "versions"]),
        json!(["1.0.0", "1.1.0"])
    );
    assert_eq!(
        view_json(&npm, root, &["@acme/dep", "dist-tags"]),
        json!({ "latest": "1.1.0", "old": "1.0.0" })
    );
    let after = new_project(root, "after-restart");
    let consumer = Npm::new(&root.join("consumer-after-restart"), &server.url);
    consumer.ok(&after, &["install", "@acme/app"]);
    assert_eq!(installed_version(&after, "@acme/dep"), "1.1.0");
    let same = client
        .get(format!("{}/{}", server.url, escaped("@acme/app")))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    assert!(!body.is_empty());
}

#[tokio::test]
async fn deprecate_and_unpublish_local() {
    deprecate_and_unpublish(Backend::local()).await;
}

/// On the AWS backend, with S3 on the registry's own hostname (npm keeps sending the token).
#[tokio::test]
async fn deprecate_and_unpublish_aws() {
    deprecate_and_unpublish(Backend::aws("deprecate", S3Host::Same)).await;
}

async fn deprecate_and_unpublish(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start_on(root, &backend);
    let npm = Npm::new(root, &server.url);
    let pkg = write_package(&root.join("pkg"), "@acme/old", "1.0.0", json!({}));
    npm.ok(&pkg, &["publish"]);
    write_package(&pkg, "@acme/old", "1.0.1", json!({}));
    npm.ok(&pkg, &["publish"]);
    write_package(&pkg, "@acme/old", "2.0.0", json!({}));
    npm.ok(&pkg, &["publish"]);

    // Deprecate: view shows it, install warns; undeprecate removes it.
    npm.ok(root, &["deprecate", "@acme/old@1.0.0", "use 2.x instead"]);
    assert_eq!(
        npm.ok(root, &["view", "@acme/old@1.0.0", "deprecated"])
            .stdout
            .trim(),
        "use 2.x instead"
    );
    assert_eq!(
        npm.ok(root, &["view", "@acme/old@2.0.0", "deprecated"])
            .stdout
            .trim(),
        ""
    );
    let project = new_project(root, "p1");
    let consumer = Npm::new(&root.join("consumer"), &server.url);
    let install = consumer.ok(&project, &["install", "@acme/old@1.0.0"]);
    assert!(
        install.all().contains("deprecated") && install.all().contains("use 2.x instead"),
        "{}",
        install.all()
    );
    npm.ok(root, &["deprecate", "@acme/old@1.0.0", ""]);
    assert_eq!(
        npm.ok(root, &["view", "@acme/old@1.0.0", "deprecated"])
            .stdout
            .trim(),
        ""
    );

    // Unpublish one version: gone from view, install fails, tarball answers 410.
    npm.ok(root, &["unpublish", "@acme/old@1.0.1"]);
    let versions: Value = serde_json::from_str(
        &npm.ok(root, &["view", "@acme/old", "versions", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(versions, json!(["1.0.0", "2.0.0"]));
    let tagged = npm.run(root, &["dist-tag", "add", "@acme/old@1.0.1", "gone"]);
    assert!(
        !tagged.ok
            && tagged
                .all()
                .contains("version 1.0.1 of @acme/old not found"),
        "an unpublished version cannot be tagged: {}",
        tagged.all()
    );
    let project = new_project(root, "p2");
    let failed = consumer.run(&project, &["install", "@acme/old@1.0.1"]);
    assert!(
        !failed.ok && failed.all().contains("ETARGET"),
        "{}",
        failed.all()
    );
    let client = http();
    let tarball = client
        .get(format!("{}/@acme/old/-/old-1.0.1.tgz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), 410);
    let live = client
        .get(format!("{}/@acme/old/-/old-2.0.0.tgz", server.url))
        .send()
        .await
        .unwrap();
    match &backend {
        Backend::Local => assert_eq!(live.status(), 200),
        Backend::Aws(_) => {
            assert_eq!(live.status(), 302);
            let location = live.headers()["location"].to_str().unwrap();
            assert!(
                location.contains("X-Amz-Signature=") && location.contains("X-Amz-Expires=300"),
                "{location}"
            );
            let presigned = reqwest::get(location).await.unwrap();
            assert_eq!(
                presigned.status(),
                200,
                "the presigned URL works without registry credentials"
            );
        }
    }
    assert_tarballs_were_redirected(&server, &backend);

    // The number can never be published again, even with --force.
    write_package(&pkg, "@acme/old", "1.0.1", json!({}));
    let again = npm.run(&pkg, &["publish", "--force", "--tag", "legacy"]);
    assert!(
        !again.ok && again.all().contains("can never be used again"),
        "{}",
        again.all()
    );

    // Unpublish everything.
    npm.ok(root, &["unpublish", "@acme/old", "--force"]);
    let view = npm.run(root, &["view", "@acme/old"]);
    assert!(!view.ok && view.all().contains("E404"), "{}", view.all());
    let packument = client
        .get(format!("{}/{}", server.url, escaped("@acme/old")))
        .send()
        .await
        .unwrap();
    assert_eq!(packument.status(), 404);
    let body: Value = packument.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("not found"));
    let tarball = client
        .get(format!("{}/@acme/old/-/old-2.0.0.tgz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), 410);

    // Stars and ping work through npm too.
    let other = write_package(&root.join("star"), "starred", "1.0.0", json!({}));
    npm.ok(&other, &["publish"]);
    npm.ok(root, &["star", "starred"]);
    let users: Value =
        serde_json::from_str(&npm.ok(root, &["view", "starred", "users", "--json"]).stdout)
            .unwrap();
    assert_eq!(users, json!({ "anonymous": true }));
    npm.ok(root, &["unstar", "starred"]);
    npm.ok(root, &["ping"]);
}
