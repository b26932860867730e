//! Every client people use against the real registry-server process (embedded storage): npm 10
//! and 11, pnpm, yarn 1, yarn 4 (node-modules and PnP) and bun. One test per client, so one
//! failing client does not hide the others. What each client sends is in docs/clients.md.

use std::path::Path;

use e2e::clients::{Client, Kind};
use e2e::{Npm, Server, escaped, http, integrity, write_package};
use serde_json::{Value, json};

/// Publishes, with the pinned npm, `@acme/dep` 1.0.0 (deprecated, tagged `stable`), 1.1.0 and
/// 2.0.0 (tagged `next`, so `latest` stays 1.1.0), and `@acme/app` 1.0.0 depending on
/// `@acme/dep@^1.0.0` and loading it.
fn seed(root: &Path, server: &Server) {
    let npm = Npm::new(&root.join("publisher"), &server.url);
    let dep = root.join("seed-dep");
    for version in ["1.0.0", "1.1.0"] {
        write_package(&dep, "@acme/dep", version, json!({}));
        npm.ok(&dep, &["publish"]);
    }
    write_package(&dep, "@acme/dep", "2.0.0", json!({}));
    npm.ok(&dep, &["publish", "--tag", "next"]);
    let app = write_package(
        &root.join("seed-app"),
        "@acme/app",
        "1.0.0",
        json!({ "dependencies": { "@acme/dep": "^1.0.0" } }),
    );
    std::fs::write(
        app.join("index.js"),
        "module.exports = { version: '1.0.0', dep: require('@acme/dep').version };\n",
    )
    .unwrap();
    npm.ok(&app, &["publish"]);
    npm.ok(root, &["dist-tag", "add", "@acme/dep@1.0.0", "stable"]);
    npm.ok(root, &["deprecate", "@acme/dep@1.0.0", "use 1.1 instead"]);
}

async fn packument(server: &Server, name: &str) -> Value {
    let response = http()
        .get(format!("{}/{}", server.url, escaped(name)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {name}");
    response.json().await.unwrap()
}

/// The requests the server answered with an error status (other than the 404s clients expect).
fn failed_requests(server: &Server) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains(" request ") && l.contains("status="))
        .filter(|l| {
            let status = l.split("status=").nth(1).unwrap_or("");
            (status.starts_with('4') && !status.starts_with("404")) || status.starts_with('5')
        })
        .map(str::to_string)
        .collect()
}

async fn full_flow(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let root = &tmp.path().to_path_buf();
    if std::env::var_os("KEEP_TMP").is_some() {
        // For looking at what a client left behind.
        eprintln!("keeping {}", root.display());
        std::mem::forget(tmp);
    }
    let server = Server::start(root);
    seed(root, &server);
    let client = Client::new(kind, root, &server.url);
    let label = kind.label();

    // Add a scoped package whose dependency is published here: the dependency resolves to the
    // highest matching version, and the dependent loads it (resolved from the dependent, which
    // is what matters under pnpm's and PnP's strict layouts).
    let project = client.project("consumer");
    client.add(&project, "@acme/app");
    assert_eq!(
        client.node_eval(
            &project,
            "const a = require('@acme/app'); console.log(a.version + ' ' + a.dep)"
        ),
        "1.0.0 1.1.0",
        "{label}"
    );
    if kind == Kind::Pnpm {
        assert!(
            project.join("node_modules/.pnpm").is_dir()
                && !project.join("node_modules/@acme/dep").exists(),
            "pnpm does not hoist the dependency"
        );
    }

    // The lockfile pins the versions with sha512 integrity.
    let dep = packument(&server, "@acme/dep").await;
    let dep_integrity = dep["versions"]["1.1.0"]["dist"]["integrity"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(dep_integrity.starts_with("sha512-"));
    let lockfile = std::fs::read_to_string(project.join(kind.lockfile()))
        .unwrap_or_else(|e| panic!("{label} wrote no {}: {e}", kind.lockfile()));
    match kind {
        // yarn 4 records the sha512 of its own cache archive, not the registry's integrity.
        Kind::Yarn4NodeModules | Kind::Yarn4Pnp => {
            let checksums: Vec<&str> = lockfile
                .lines()
                .filter_map(|l| l.trim().strip_prefix("checksum: "))
                .collect();
            assert_eq!(checksums.len(), 2, "{lockfile}");
            for c in checksums {
                let hex = c.split_once('/').map(|(_, h)| h).unwrap_or(c);
                assert!(
                    hex.len() == 128 && hex.chars().all(|c| c.is_ascii_hexdigit()),
                    "a sha512 checksum: {c}"
                );
            }
            assert!(lockfile.contains("@acme/dep@npm:1.1.0"), "{lockfile}");
        }
        _ => assert!(
            lockfile.contains(&dep_integrity),
            "{label}'s {} must carry {dep_integrity}:\n{lockfile}",
            kind.lockfile()
        ),
    }

    // Reinstall from the lockfile alone, with an empty cache.
    client.forget_installs(&project);
    client.install_frozen(&project);
    assert_eq!(
        client.node_eval(
            &project,
            "const a = require('@acme/app'); console.log(a.version + ' ' + a.dep)"
        ),
        "1.0.0 1.1.0",
        "{label} after a frozen reinstall"
    );
    assert_eq!(
        std::fs::read_to_string(project.join(kind.lockfile())).unwrap(),
        lockfile,
        "{label}: a frozen install leaves the lockfile alone"
    );

    // Install by dist-tag (1.0.0 is `stable`, and deprecated: the client says so where it can).
    let tagged = client.project("tagged");
    let added = client.add(&tagged, "@acme/dep@stable");
    assert_eq!(
        client.loaded_version(&tagged, "@acme/dep"),
        "1.0.0",
        "{label}: {}\n{}",
        added.all(),
        std::fs::read_to_string(tagged.join("package.json")).unwrap()
    );
    let warning = match client.deprecation_report(&tagged, "@acme/dep@1.0.0") {
        Some(report) => report.all(),
        None => added.all(),
    };
    assert!(
        warning.contains("@acme/dep") && warning.contains("use 1.1 instead"),
        "{label} shows the deprecation:\n{warning}"
    );
    let next = client.project("next");
    client.add(&next, "@acme/dep@next");
    assert_eq!(
        client.loaded_version(&next, "@acme/dep"),
        "2.0.0",
        "{label}"
    );

    // Publish a new version with the client's own command.
    let own = write_package(&root.join("own"), "@acme/dep", "3.0.0", json!({}));
    client.publish(&own);
    let dep = packument(&server, "@acme/dep").await;
    assert_eq!(dep["dist-tags"]["latest"], "3.0.0", "{label}: {dep}");
    assert!(dep["time"]["3.0.0"].is_string(), "{dep}");
    let dist = &dep["versions"]["3.0.0"]["dist"];
    let tarball = http()
        .get(dist["tarball"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), 200);
    let bytes = tarball.bytes().await.unwrap();
    assert_eq!(dist["integrity"], integrity(&bytes), "{label}");
    let fresh = client.project("fresh");
    client.add(&fresh, "@acme/dep");
    assert_eq!(
        client.loaded_version(&fresh, "@acme/dep"),
        "3.0.0",
        "{label}"
    );

    let failed = failed_requests(&server);
    assert!(
        failed.is_empty(),
        "{label}: requests the registry refused:\n{}",
        failed.join("\n")
    );
    println!("--- {label}: requests the server answered ---");
    for line in server.log().lines().filter(|l| l.contains(" request ")) {
        if let Some(rest) = line.split(" request ").nth(1) {
            println!("{rest}");
        }
    }
}

#[tokio::test]
async fn pnpm() {
    full_flow(Kind::Pnpm).await;
}

#[tokio::test]
async fn yarn4_node_modules() {
    full_flow(Kind::Yarn4NodeModules).await;
}

#[tokio::test]
async fn yarn4_pnp() {
    full_flow(Kind::Yarn4Pnp).await;
}

#[tokio::test]
async fn bun() {
    full_flow(Kind::Bun).await;
}

#[tokio::test]
async fn yarn1() {
    full_flow(Kind::Yarn1).await;
}

#[tokio::test]
async fn npm10() {
    full_flow(Kind::Npm10).await;
}

#[tokio::test]
async fn npm11() {
    full_flow(Kind::Npm11).await;
}
