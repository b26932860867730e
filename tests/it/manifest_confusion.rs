//! No manifest confusion (issue 23, part 1): a publish whose version manifest says other than the
//! tarball's `package/package.json` about what installing it does is refused, naming each field,
//! and stores nothing; and every package of a real corpus republishes with the real npm.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use e2e::{Backend, Npm, S3Host, Server, TestRegistry, pkg, tgz, write_package};
use serde_json::{Value, json};

/// npm publishes this many corpus packages at a time (each a node process).
const PUBLISHERS: usize = 4;

/// The corpus `tests/tools.sh` fetched: every package of `tests/corpus/package-lock.json` (the
/// tree of eslint and jest, 330 versions), as the public registry serves them.
fn corpus_tarballs() -> Vec<PathBuf> {
    let dir = std::env::var("CONFUSION_CORPUS_DIR")
        .expect("CONFUSION_CORPUS_DIR is not set: run the tests with tests/run");
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(&dir).join("tarballs"))
        .unwrap_or_else(|e| panic!("{dir}/tarballs: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tgz"))
        .collect();
    files.sort();
    files
}

/// Every real package of the corpus, published as it is with `npm publish <tarball>`: the
/// registry sees the real package.json in each tarball and the document npm builds from it, and
/// refuses none (zero false positives), then serves each version.
#[tokio::test]
async fn the_corpus_republishes_without_a_false_positive() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start_on(root, &Backend::local());
    let npm = Npm::new(root, &server.url);
    let tarballs = corpus_tarballs();
    assert!(
        tarballs.len() >= 300,
        "corpus has {} packages",
        tarballs.len()
    );

    let queue = Mutex::new(tarballs.iter());
    let refused = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PUBLISHERS {
            s.spawn(|| {
                loop {
                    let Some(file) = queue.lock().unwrap().next() else {
                        break;
                    };
                    let file_arg = file.to_string_lossy();
                    // `--tag`: prereleases and versions below another's latest need one.
                    let run = npm.run(
                        root,
                        &[
                            "publish",
                            &file_arg,
                            "--tag",
                            "corpus",
                            "--ignore-scripts",
                            "--loglevel=error",
                        ],
                    );
                    if !run.ok {
                        refused.lock().unwrap().push(format!(
                            "{}: {}",
                            file.display(),
                            run.all().trim()
                        ));
                    }
                }
            });
        }
    });
    let refused = refused.into_inner().unwrap();
    assert!(
        refused.is_empty(),
        "{} of {} real packages refused:\n{}",
        refused.len(),
        tarballs.len(),
        refused.join("\n")
    );

    // Each version is served, with the install fields its package.json has.
    let client = e2e::http();
    for file in &tarballs {
        let manifest = tarball_manifest(&std::fs::read(file).unwrap());
        let (name, version) = (
            manifest["name"].as_str().unwrap(),
            manifest["version"].as_str().unwrap(),
        );
        let url = format!("{}/{}/{version}", server.url, name.replacen('/', "%2f", 1));
        let served: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(served["version"], version, "{name}: {served}");
        for field in [
            "dependencies",
            "optionalDependencies",
            "peerDependencies",
            "os",
            "cpu",
        ] {
            if manifest.get(field).is_some() {
                assert_eq!(served[field], manifest[field], "{name}@{version} {field}");
            }
        }
    }
}

/// `package/package.json` of a tarball.
fn tarball_manifest(bytes: &[u8]) -> Value {
    let summary = registry::domain::tarball::inspect(
        bytes,
        registry::domain::tarball::TarballLimits::default(),
    )
    .unwrap();
    summary.manifest
}

/// A tarball whose package.json adds a dependency and an install script, and a document that
/// declares neither: refused with `manifest_mismatch`, each field named, nothing stored. Then
/// the same tarball with an honest document is published.
#[tokio::test]
async fn confused_documents_are_refused_local() {
    confused_documents_are_refused(Backend::local()).await;
}

#[tokio::test]
async fn confused_documents_are_refused_aws() {
    confused_documents_are_refused(Backend::aws("confusion", S3Host::Same)).await;
}

async fn confused_documents_are_refused(backend: Backend) {
    let reg = TestRegistry::builder().backend(backend).start().await;
    let name = "confused-pkg";
    let real = json!({
        "name": name, "version": "1.0.0", "license": "MIT",
        "dependencies": { "left-pad": "^1.3.0", "evil-helper": "^6.6.6" },
        "scripts": { "postinstall": "node steal-tokens.js", "test": "jest" },
        "bin": { "confused": "cli.js" },
    });
    let tarball = tgz(&[
        ("package/package.json", real.to_string().as_bytes()),
        ("package/cli.js", b"#!/usr/bin/env node\n"),
        ("package/steal-tokens.js", b"// steals\n"),
    ]);

    // What the attacker shows: no evil dependency, no install script, no bin.
    let shown = json!({
        "name": name, "version": "1.0.0", "license": "MIT",
        "dependencies": { "left-pad": "^1.3.0" },
        "scripts": { "test": "jest" },
    });
    let refused = reg
        .publish(
            pkg(name)
                .tarball(tarball.clone())
                .edit(move |doc| merge(&mut doc["versions"]["1.0.0"], &shown)),
        )
        .await
        .assert_status(400);
    assert_eq!(
        refused.code(),
        Some("manifest_mismatch"),
        "{}",
        refused.body
    );
    let message = refused.error().unwrap_or_default().to_string();
    for field in [
        "dependencies.evil-helper",
        "scripts.postinstall",
        "bin.confused",
    ] {
        assert!(message.contains(field), "{field} not named: {message}");
    }
    assert!(!message.contains("left-pad"), "{message}");
    reg.get_packument(name).await.assert_status(404);
    assert_eq!(reg.tarball_count().await, 0, "nothing stored");

    // Other confusions, one field each: a changed dependency range, a license, os/cpu, engines,
    // a peer dependency, a bin pointing elsewhere.
    for (field, lie) in [
        (
            "dependencies.left-pad",
            json!({ "dependencies": { "left-pad": "^1.0.0", "evil-helper": "^6.6.6" } }),
        ),
        ("license", json!({ "license": "Apache-2.0" })),
        ("os", json!({ "os": ["darwin"] })),
        ("engines.node", json!({ "engines": { "node": ">=99" } })),
        (
            "peerDependencies.react",
            json!({ "peerDependencies": { "react": "*" } }),
        ),
        ("bin.confused", json!({ "bin": { "confused": "other.js" } })),
    ] {
        let mut declared = real.clone();
        merge(&mut declared, &lie);
        let refused = reg
            .publish(
                pkg(name)
                    .tarball(tarball.clone())
                    .edit(move |doc| merge(&mut doc["versions"]["1.0.0"], &declared)),
            )
            .await
            .assert_status(400);
        let message = refused.error().unwrap_or_default();
        assert!(message.contains(field), "{field}: {message}");
    }
    reg.get_packument(name).await.assert_status(404);

    // The honest document for the same tarball is published, and serves what the tarball says.
    let honest = real.clone();
    reg.publish(
        pkg(name)
            .tarball(tarball)
            .edit(move |doc| merge(&mut doc["versions"]["1.0.0"], &honest)),
    )
    .await
    .assert_status(201);
    let served = reg.get_packument(name).await.assert_status(200).body;
    assert_eq!(
        served["versions"]["1.0.0"]["scripts"]["postinstall"],
        "node steal-tokens.js"
    );
    assert_eq!(
        served["versions"]["1.0.0"]["dependencies"]["evil-helper"],
        "^6.6.6"
    );
}

/// Copies `fields` into `target`.
fn merge(target: &mut Value, fields: &Value) {
    if let (Some(target), Some(fields)) = (target.as_object_mut(), fields.as_object()) {
        for (k, v) in fields {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// What `npm publish` itself adds to a manifest is not a confusion: a native addon with a
/// `binding.gyp` and no install script (npm adds `install: node-gyp rebuild`), bins from
/// `directories.bin`, a string `bin`, `node_modules/.bin/` in a script, a `v`-prefixed version.
#[tokio::test]
async fn what_npm_publish_rewrites_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start_on(root, &Backend::local());
    let npm = Npm::new(root, &server.url);

    let addon = write_package(
        &root.join("addon"),
        "native-addon",
        "1.0.0",
        json!({ "scripts": { "postinstall": "node_modules/.bin/husky install" } }),
    );
    std::fs::write(addon.join("binding.gyp"), "{ \"targets\": [] }\n").unwrap();
    npm.ok(&addon, &["publish"]);

    let tools = write_package(
        &root.join("tools"),
        "@acme/dir-bins",
        "v2.0.0",
        json!({ "directories": { "bin": "./bin" } }),
    );
    std::fs::create_dir_all(tools.join("bin/nested")).unwrap();
    std::fs::write(tools.join("bin/one"), "#!/usr/bin/env node\n").unwrap();
    std::fs::write(tools.join("bin/nested/two"), "#!/usr/bin/env node\n").unwrap();
    npm.ok(&tools, &["publish"]);

    let single = write_package(
        &root.join("single"),
        "@acme/single-bin",
        "1.0.0",
        json!({ "bin": "./cli.js" }),
    );
    std::fs::write(single.join("cli.js"), "#!/usr/bin/env node\n").unwrap();
    npm.ok(&single, &["publish"]);

    let client = e2e::http();
    let read = |path: &str| {
        let url = format!("{}/{path}", server.url);
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let addon = read("native-addon/1.0.0").await;
    assert_eq!(addon["scripts"]["install"], "node-gyp rebuild", "{addon}");
    assert_eq!(addon["scripts"]["postinstall"], "husky install", "{addon}");
    let tools = read("@acme%2fdir-bins/2.0.0").await;
    assert_eq!(tools["bin"]["one"], "bin/one", "{tools}");
    assert_eq!(tools["bin"]["two"], "bin/nested/two", "{tools}");
    let single = read("@acme%2fsingle-bin/1.0.0").await;
    assert_eq!(single["bin"], json!({ "single-bin": "cli.js" }), "{single}");
}
