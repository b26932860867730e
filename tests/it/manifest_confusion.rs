//! No manifest confusion (issue 23, part 1): a publish whose version manifest says other than the
//! tarball's `package/package.json` about what installing it does is refused, naming each field,
//! and stores nothing; and every package of a real corpus republishes with the real npm.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use e2e::{Backend, Npm, S3Host, Server, TestRegistry, corpus_tarballs, pkg, tgz, write_package};
use serde_json::{Value, json};

/// npm publishes this many corpus packages at a time (each a node process).
const PUBLISHERS: usize = 4;

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

/// The name a corpus package is republished under from its directory: `@corpus/<name>`, and
/// for a scoped name DefinitelyTyped's spelling (`@babel/core` → `@corpus/babel__core`), since
/// the bare names collide (`@jest/expect` and `expect` share a version).
fn corpus_name(name: &str) -> String {
    match name.strip_prefix('@').and_then(|n| n.split_once('/')) {
        Some((scope, bare)) => format!("@corpus/{scope}__{bare}"),
        None => format!("@corpus/{name}"),
    }
}

/// Unpacks a package tarball into `dir`, without its top directory (`package/`, or the
/// package's own name in some older tarballs): regular files and directories only.
fn unpack(bytes: &[u8], dir: &Path) {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let inner: PathBuf = path
            .components()
            .skip(1)
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        if inner.as_os_str().is_empty() {
            continue;
        }
        let target = dir.join(&inner);
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&target).unwrap(),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                let mut file = std::fs::File::create(&target).unwrap();
                std::io::copy(&mut entry, &mut file).unwrap();
            }
            _ => {}
        }
    }
}

/// Every real package of the corpus, unpacked into a directory, renamed under the test scope
/// `@corpus` (its dependencies left as they are), and published from that directory with the real
/// `npm publish`: npm then reads the package.json from disk and normalises it as it does for
/// every directory publish (its `pkgJson` fixes, `bin` path cleanup, the `node-gyp rebuild`
/// install script of a `binding.gyp`, `readme`, `gitHead` and the underscore fields), packs the
/// directory anew, and the registry compares that document with the package.json in the new
/// tarball: it refuses none (zero false positives) and serves each version with the install
/// fields its package.json has. `--ignore-scripts`, so that no `prepare`, `prepublishOnly` or
/// `prepack` script runs (they need the packages' development dependencies, which are not here).
/// A `publishConfig.registry` would send npm elsewhere: one is removed (the corpus has none).
///
/// Bounded for CI: all 330 take about 4.5 minutes here (one npm process each, four at a time, on
/// two cores), so by default a deterministic sample of at least 100 is published: every package
/// whose manifest npm's directory normalisation rewrites something of (a `bin`, `directories`,
/// `man`, a top-level `.gyp` file, an install hook, a script calling `node_modules/.bin/`) and
/// every fourth of the others, in file-name order. `CONFUSION_CORPUS_ALL=1` publishes them all.
#[tokio::test]
async fn the_corpus_republishes_from_directories_without_a_false_positive() {
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

    let all = std::env::var("CONFUSION_CORPUS_ALL").is_ok_and(|v| v == "1");
    let mut others = 0;
    let sample: Vec<(Vec<u8>, Value)> = tarballs
        .iter()
        .filter_map(|file| {
            let bytes = std::fs::read(file).unwrap();
            let summary = registry::domain::tarball::inspect(
                &bytes,
                registry::domain::tarball::TarballLimits::default(),
            )
            .unwrap();
            let rewritten = normalised_from_a_directory(&summary.manifest, summary.has_gyp_file);
            if !rewritten {
                others += 1;
            }
            (all || rewritten || others % 4 == 1).then_some((bytes, summary.manifest))
        })
        .collect();
    assert!(sample.len() >= 100, "a sample of {} packages", sample.len());

    // (directory, the original package.json) of each package, renamed in its directory.
    let packages: Vec<(PathBuf, Value)> = sample
        .into_iter()
        .enumerate()
        .map(|(i, (bytes, original))| {
            let dir = root.join("packages").join(i.to_string());
            unpack(&bytes, &dir);
            let manifest_path = dir.join("package.json");
            let mut manifest: Value =
                serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
            manifest["name"] = json!(corpus_name(original["name"].as_str().unwrap()));
            if let Some(config) = manifest
                .get_mut("publishConfig")
                .and_then(Value::as_object_mut)
            {
                config.remove("registry");
            }
            std::fs::write(
                &manifest_path,
                serde_json::to_vec_pretty(&manifest).unwrap(),
            )
            .unwrap();
            (dir, original)
        })
        .collect();

    let started = std::time::Instant::now();
    let queue = Mutex::new(packages.iter());
    let refused = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PUBLISHERS {
            s.spawn(|| {
                loop {
                    let Some((dir, original)) = queue.lock().unwrap().next() else {
                        break;
                    };
                    // `--tag`: prereleases and versions below another's latest need one.
                    let run = npm.run(
                        dir,
                        &[
                            "publish",
                            "--tag",
                            "corpus",
                            "--ignore-scripts",
                            "--loglevel=error",
                        ],
                    );
                    if !run.ok {
                        refused.lock().unwrap().push(format!(
                            "{}@{}: {}",
                            original["name"],
                            original["version"],
                            run.all().trim()
                        ));
                    }
                }
            });
        }
    });
    eprintln!(
        "published {} of {} corpus packages from directories in {:.1?}",
        packages.len(),
        tarballs.len(),
        started.elapsed()
    );
    let refused = refused.into_inner().unwrap();
    assert!(
        refused.is_empty(),
        "{} of {} real packages refused:\n{}",
        refused.len(),
        packages.len(),
        refused.join("\n")
    );

    let client = e2e::http();
    // Versions whose served `bin` is not the tarball's package.json's: npm rewrote it (a string
    // named after the package, `./` dropped) and the registry saw through that.
    let mut rewritten_bins = Vec::new();
    for (_, original) in &packages {
        let name = corpus_name(original["name"].as_str().unwrap());
        let version = original["version"].as_str().unwrap();
        let url = format!("{}/{}/{version}", server.url, name.replacen('/', "%2f", 1));
        let served: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(served["name"], name.as_str(), "{served}");
        assert_eq!(served["version"], version, "{name}: {served}");
        for field in [
            "dependencies",
            "optionalDependencies",
            "peerDependencies",
            "os",
            "cpu",
            "engines",
            "license",
        ] {
            assert_eq!(served[field], original[field], "{name}@{version} {field}");
        }
        if served["bin"] != original["bin"] {
            rewritten_bins.push(format!("{name}: {} → {}", original["bin"], served["bin"]));
        }
    }
    assert!(
        rewritten_bins.len() >= 5,
        "npm's directory publish rewrote too few bins to prove anything: {rewritten_bins:?}"
    );
}

/// Whether `npm publish` from a directory rewrites something of this package.json (or adds to
/// it: `scripts.install` for a `.gyp` file without an install hook).
fn normalised_from_a_directory(manifest: &Value, has_gyp_file: bool) -> bool {
    let scripts = manifest["scripts"].as_object();
    has_gyp_file
        || ["bin", "directories", "man"]
            .iter()
            .any(|field| manifest.get(*field).is_some())
        || scripts.is_some_and(|scripts| {
            ["preinstall", "install", "postinstall", "prepare"]
                .iter()
                .any(|hook| scripts.contains_key(*hook))
                || scripts
                    .values()
                    .any(|v| v.as_str().is_some_and(|v| v.contains("node_modules/.bin/")))
        })
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
