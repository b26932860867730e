//! Every client people use against the real registry-server process: npm 10 and 11, pnpm, yarn 1,
//! yarn 4 (node-modules and PnP) and bun, on the embedded backend; pnpm, yarn 4 and bun also on
//! the AWS backend (emulators, tarballs by 302 to presigned S3 URLs behind a gate that holds them
//! to real S3's rules); and each of them in GitHub mode, configured the way its users configure
//! a private scope. One test per client and setting, so one failing client does not hide the
//! others. What each client sends is in docs/clients.md.

use std::path::Path;

use e2e::clients::{Client, Config, Kind};
use e2e::github_world::World;
use e2e::{Backend, Npm, S3Host, Server, escaped, http, integrity, write_package};
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

/// Follows one redirect by hand (the test's HTTP client follows none) and returns the bytes.
async fn download(url: &str) -> Vec<u8> {
    let mut response = http().get(url).send().await.unwrap();
    if response.status() == 302 {
        let location = response.headers()["location"].to_str().unwrap().to_string();
        response = http().get(location).send().await.unwrap();
    }
    assert_eq!(response.status(), 200, "GET {url}");
    response.bytes().await.unwrap().to_vec()
}

async fn full_flow(kind: Kind, backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = &tmp.path().to_path_buf();
    if std::env::var_os("KEEP_TMP").is_some() {
        // For looking at what a client left behind.
        eprintln!("keeping {}", root.display());
        std::mem::forget(tmp);
    }
    let server = Server::start_on(root, &backend);
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
                let hex = c.split_once('/').map_or(c, |(_, h)| h);
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
    let bytes = download(dist["tarball"].as_str().unwrap()).await;
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
    if let Backend::Aws(resources) = &backend {
        // Every tarball the client fetched came by redirect, from S3, without the token.
        let redirected = server
            .log()
            .lines()
            .filter(|l| l.contains(" request ") && l.contains("GET") && l.contains("/-/"))
            .filter(|l| l.contains("status=302"))
            .count();
        let gate = resources.gate.as_ref().expect("a gated S3");
        let downloads: Vec<_> = gate
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.presigned)
            .collect();
        assert!(
            redirected > 0 && downloads.len() >= redirected,
            "{label}: {redirected} redirects, presigned downloads {downloads:?}"
        );
        assert!(
            downloads
                .iter()
                .all(|r| r.status == 200 && !r.authorization),
            "{label} must fetch presigned URLs without the registry's token: {downloads:?}"
        );
    }
    println!("--- {label}: requests the server answered ---");
    for line in server.log().lines().filter(|l| l.contains(" request ")) {
        if let Some(rest) = line.split(" request ").nth(1) {
            println!("{rest}");
        }
    }
}

#[tokio::test]
async fn pnpm() {
    full_flow(Kind::Pnpm, Backend::local()).await;
}

#[tokio::test]
async fn yarn4_node_modules() {
    full_flow(Kind::Yarn4NodeModules, Backend::local()).await;
}

#[tokio::test]
async fn yarn4_pnp() {
    full_flow(Kind::Yarn4Pnp, Backend::local()).await;
}

#[tokio::test]
async fn bun() {
    full_flow(Kind::Bun, Backend::local()).await;
}

#[tokio::test]
async fn yarn1() {
    full_flow(Kind::Yarn1, Backend::local()).await;
}

#[tokio::test]
async fn npm10() {
    full_flow(Kind::Npm10, Backend::local()).await;
}

#[tokio::test]
async fn npm11() {
    full_flow(Kind::Npm11, Backend::local()).await;
}

#[tokio::test]
async fn pnpm_aws() {
    full_flow(Kind::Pnpm, Backend::aws("pnpm", S3Host::Different)).await;
}

#[tokio::test]
async fn yarn4_pnp_aws() {
    full_flow(Kind::Yarn4Pnp, Backend::aws("yarn4", S3Host::Different)).await;
}

#[tokio::test]
async fn bun_aws() {
    full_flow(Kind::Bun, Backend::aws("bun", S3Host::Different)).await;
}

// ---------------------------------------------------------------------------------------------
// GitHub mode: tokens configured as each client's users configure them.

/// alice (admin of the private acme/widgets) publishes `@acme/widgets` 1.0.0 with npm; then, with
/// `kind` configured as `config`: carol (pull) installs it; an anonymous user (401) and dave (no
/// access: 404, as for a name that does not exist) are refused with the status in the client's
/// output; bob (push) publishes 1.0.1 with
/// the client's own publish command, and carol's next install gets it.
async fn github_flow(kind: Kind, config: Config) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let server = world.server(root, &Backend::local(), &[]);
    let label = format!("{} ({config:?})", kind.label());
    let repository = json!({ "repository": "github:acme/widgets" });
    let alice = Npm::with_token(
        &root.join("npm-alice"),
        &server.url,
        Some(&world.alice.token),
    );
    let widgets = write_package(
        &root.join("widgets"),
        "@acme/widgets",
        "1.0.0",
        repository.clone(),
    );
    alice.ok(&widgets, &["publish"]);

    let as_user = |who: &str, token: Option<&str>| {
        Client::configured(kind, &root.join(who), &server.url, token, config)
    };
    let carol = as_user("carol", Some(&world.carol.token));
    let project = carol.project("install");
    carol.add(&project, "@acme/widgets");
    assert_eq!(
        carol.loaded_version(&project, "@acme/widgets"),
        "1.0.0",
        "{label}"
    );

    let anonymous = as_user("anonymous", None);
    let refused = anonymous.try_add(&anonymous.project("install"), "@acme/widgets");
    assert!(
        !refused.ok && shows_refusal(&refused.all(), "401", "authentication required"),
        "{label} without a token must be refused, with the status or the message:\n{}",
        refused.all()
    );
    println!("--- {label}, no token ---\n{}", refused.all());
    let dave = as_user("dave", Some(&world.dave.token));
    let refused = dave.try_add(&dave.project("install"), "@acme/widgets");
    assert!(
        // To a caller without access the package does not exist.
        !refused.ok && shows_refusal(&refused.all(), "404", "not found"),
        "{label} with a token lacking access must be refused, with the status or the message:\n{}",
        refused.all()
    );
    println!("--- {label}, no access ---\n{}", refused.all());

    let bob = as_user("bob", Some(&world.bob.token));
    let own = write_package(
        &root.join("bob-widgets"),
        "@acme/widgets",
        "1.0.1",
        repository,
    );
    bob.publish(&own);
    let fresh = carol.project("fresh");
    carol.add(&fresh, "@acme/widgets");
    assert_eq!(
        carol.loaded_version(&fresh, "@acme/widgets"),
        "1.0.1",
        "{label}"
    );
}

/// Whether a client's output tells the user why the registry refused: the status, the registry's
/// own message, or (yarn 4, which prints neither) its "Invalid authentication" error.
fn shows_refusal(output: &str, status: &str, message: &str) -> bool {
    output.contains(status)
        || output.contains(message)
        || output.contains("YN0041: Invalid authentication")
}

#[tokio::test]
async fn github_npm11() {
    github_flow(Kind::Npm11, Config::Scope).await;
}

#[tokio::test]
async fn github_npm10() {
    github_flow(Kind::Npm10, Config::Scope).await;
}

#[tokio::test]
async fn github_pnpm() {
    github_flow(Kind::Pnpm, Config::Scope).await;
}

#[tokio::test]
async fn github_yarn1() {
    github_flow(Kind::Yarn1, Config::Scope).await;
}

#[tokio::test]
async fn github_yarn4_node_modules() {
    github_flow(Kind::Yarn4NodeModules, Config::Scope).await;
}

#[tokio::test]
async fn github_yarn4_pnp() {
    github_flow(Kind::Yarn4Pnp, Config::Scope).await;
}

#[tokio::test]
async fn github_bun_npmrc() {
    github_flow(Kind::Bun, Config::Scope).await;
}

#[tokio::test]
async fn github_bun_bunfig() {
    github_flow(Kind::Bun, Config::BunfigScope).await;
}
