//! Operator settings: upstream redirects, allowed owners, opt-in overwrite, and a public URL with a
//! path prefix (an API Gateway stage or a reverse proxy's sub-path) used by the real npm CLI.

use e2e::{
    Backend, Npm, S3Host, Server, TestRegistry, escaped, free_port, http, integrity, package_tgz,
    pkg, publish_doc, tgz, write_package,
};
use serde_json::{Value, json};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn unknown_names_go_upstream_and_foreign_scopes_are_refused() {
    // Redirect mode: the upstream is never contacted (the client does not follow redirects).
    let reg = TestRegistry::builder()
        .env("REGISTRY_UPSTREAM", "http://upstream.invalid/")
        .env("REGISTRY_UPSTREAM_MODE", "redirect")
        .env("REGISTRY_ALLOWED_OWNERS", "acme")
        .start()
        .await;
    let r = reg.get("/left-pad").send().await.assert_status(302);
    assert_eq!(
        r.header("location"),
        Some("http://upstream.invalid/left-pad")
    );
    let r = reg.get("/left-pad/-/left-pad-1.3.0.tgz").send().await;
    assert_eq!(
        r.header("location"),
        Some("http://upstream.invalid/left-pad/-/left-pad-1.3.0.tgz")
    );
    let r = reg.get("/@other%2fthing?write=true").send().await;
    assert_eq!(r.status, 302, "a scope not served here goes upstream");
    assert_eq!(
        r.header("location"),
        Some("http://upstream.invalid/@other%2fthing?write=true")
    );
    let r = reg.get("/@acme%2fmissing").send().await;
    assert_eq!(
        r.status, 404,
        "an unknown package of a served scope is ours to deny"
    );

    let refused = reg.publish(pkg("@other/thing")).await.assert_status(403);
    assert!(
        refused.error().unwrap().contains("@other is not served"),
        "{}",
        refused.body
    );

    reg.publish(pkg("@acme/thing")).await.assert_status(201);
}

/// Proxy mode (the default) with an upstream that cannot be reached: a clear 502 naming it,
/// never a redirect; a served scope is still ours to deny.
#[tokio::test]
async fn an_unreachable_upstream_is_a_clear_502_in_proxy_mode() {
    let reg = TestRegistry::builder()
        .env("REGISTRY_UPSTREAM", "http://127.0.0.1:9/")
        .env("REGISTRY_ALLOWED_OWNERS", "acme")
        .start()
        .await;
    let r = reg.get("/left-pad").send().await.assert_status(502);
    assert_eq!(r.body["code"], "upstream_unavailable");
    assert!(
        r.error().unwrap().contains("http://127.0.0.1:9"),
        "{}",
        r.body
    );
    reg.get("/@acme%2fmissing").send().await.assert_status(404);
    reg.publish(pkg("@other/thing")).await.assert_status(403);
}

#[tokio::test]
async fn overwrite_is_opt_in_and_never_revives_unpublished_versions_local() {
    overwrite_is_opt_in_and_never_revives_unpublished_versions(Backend::local()).await;
}

#[tokio::test]
async fn overwrite_is_opt_in_and_never_revives_unpublished_versions_aws() {
    overwrite_is_opt_in_and_never_revives_unpublished_versions(Backend::aws(
        "overwrite",
        S3Host::Different,
    ))
    .await;
}

async fn overwrite_is_opt_in_and_never_revives_unpublished_versions(backend: Backend) {
    let reg = TestRegistry::builder()
        .backend(backend)
        .env("REGISTRY_ALLOW_OVERWRITE", "true")
        .start()
        .await;
    let name = "@acme/mutable";
    let first = package_tgz(name, "1.0.0");
    let second = tgz(&[(
        "package/package.json",
        br#"{"name":"@acme/mutable","version":"1.0.0","changed":true}"#,
    )]);
    reg.publish(pkg(name).tarball(first.clone()))
        .await
        .assert_status(201);
    reg.publish(pkg(name).tarball(second.clone()))
        .await
        .assert_status(201);
    let packument = reg.get_packument(name).await.body;
    assert_eq!(
        packument["versions"]["1.0.0"]["dist"]["integrity"],
        json!(integrity(&second))
    );
    // Follows the AWS backend's redirect, as clients do.
    let bytes = reqwest::get(reg.url("/@acme/mutable/-/mutable-1.0.0.tgz"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(integrity(&bytes), integrity(&second));
    if let Backend::Local = reg.backend() {
        assert_eq!(
            reg.tarball_count().await,
            1,
            "the replaced tarball is removed"
        );
    }

    // Unpublish (all versions), then try to overwrite: the number stays retired.
    let rev = packument["_rev"].as_str().unwrap();
    reg.delete(&format!("/{}/-rev/{rev}", escaped(name)))
        .send()
        .await
        .assert_status(200);
    reg.publish(pkg(name).tarball(first))
        .await
        .assert_status(409);
    reg.get_packument(name).await.assert_status(404);
}

#[tokio::test]
async fn public_url_with_a_path_prefix_works_with_npm() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}/npm");
    let server = Server::start_with(
        root.join("data"),
        root.join("log"),
        env(&[
            ("REGISTRY_LISTEN", &format!("127.0.0.1:{port}")),
            ("REGISTRY_PUBLIC_URL", &format!("{public}/")),
        ]),
    );
    assert_eq!(server.url, format!("http://127.0.0.1:{port}"));
    // Configured with the prefix and a trailing slash...
    let npm = Npm::new(&root.join("with-slash"), &public);
    let pkg = write_package(&root.join("pkg"), "@acme/prefixed", "1.0.0", json!({}));
    npm.ok(&pkg, &["publish"]);
    let packument: Value = http()
        .get(format!("{public}/@acme%2fprefixed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        packument["versions"]["1.0.0"]["dist"]["tarball"],
        json!(format!("{public}/@acme/prefixed/-/prefixed-1.0.0.tgz"))
    );
    // ...and without it: install resolves through the prefix too.
    let npm = Npm::new(&root.join("no-slash"), &public);
    let rc = std::fs::read_to_string(root.join("no-slash/home/.npmrc"))
        .unwrap()
        .replace(
            &format!("registry={public}/"),
            &format!("registry={public}"),
        );
    std::fs::write(root.join("no-slash/home/.npmrc"), rc).unwrap();
    let project = root.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("package.json"),
        r#"{"name":"p","version":"1.0.0","private":true}"#,
    )
    .unwrap();
    npm.ok(&project, &["install", "@acme/prefixed"]);
    assert!(
        project
            .join("node_modules/@acme/prefixed/package.json")
            .exists()
    );
    assert_eq!(
        npm.ok(&project, &["view", "@acme/prefixed", "version"])
            .stdout
            .trim(),
        "1.0.0"
    );
}

#[tokio::test]
async fn sweep_cleans_a_local_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start(root);
    let client = http();
    let name = "@acme/swept";
    let put = client
        .put(format!("{}/{}", server.url, escaped(name)))
        .json(&publish_doc(name, "1.0.0", &package_tgz(name, "1.0.0")))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let data_dir = server.data_dir.clone();
    drop(server); // the embedded database admits one process at a time
    let orphan = data_dir.join(format!(
        "tarballs/@acme/swept/1.0.1-{}.tgz",
        "ab".repeat(16)
    ));
    // A file, as an older release stored every tarball (the published one is in the database).
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"left by a crash").unwrap();
    let out = std::process::Command::new(e2e::sibling_binary("registry-server"))
        .args([
            "--data",
            data_dir.to_str().unwrap(),
            "sweep",
            "--older-than-minutes",
            "0",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checked 2 tarballs, removed 1"), "{stdout}");
    assert!(!orphan.exists());
    let server = Server::start_with(data_dir, root.join("server2.log"), vec![]);
    let tarball = client
        .get(format!("{}/@acme/swept/-/swept-1.0.0.tgz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), 200, "the live tarball survives the sweep");
}
