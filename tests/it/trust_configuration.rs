//! `npm trust github|list|revoke` against the registry, on both backends: who may configure
//! trusted publishing, what is stored, and configurations made before a package's first version.

use e2e::api::{assert_no_secrets, publish, send};
use e2e::github_world::{User, World};
use e2e::{Backend, Npm, S3Host, Server, escaped, write_package};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn npm_trust_local() {
    npm_trust(Backend::local()).await;
}

#[tokio::test]
async fn npm_trust_aws() {
    npm_trust(Backend::aws("trust", S3Host::Different)).await;
}

/// The configurations as the registry lists them to `user`: status and body.
async fn listed(server: &Server, user: Option<&User>, name: &str) -> (StatusCode, Value) {
    let (s, b, _) = send(
        Method::GET,
        format!("{}/-/package/{}/trust", server.url, escaped(name)),
        user.map(|u| u.token.as_str()),
        None,
    )
    .await;
    (s, b)
}

async fn configure(server: &Server, user: &User, name: &str, body: Value) -> (StatusCode, Value) {
    let (s, b, _) = send(
        Method::POST,
        format!("{}/-/package/{}/trust", server.url, escaped(name)),
        Some(&user.token),
        Some(&body),
    )
    .await;
    (s, b)
}

fn github_config(repository: &str, file: &str) -> Value {
    json!([{ "type": "github", "claims": { "repository": repository, "workflow_ref": { "file": file } }, "permissions": ["createPackage"] }])
}

async fn npm_trust(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let server = world.server(root, &backend, &[]);
    let npm_as = |u: &User| {
        Npm::with_token(
            &root.join(format!("npm-{}", u.login)),
            &server.url,
            Some(&u.token),
        )
    };
    let (alice, bob) = (npm_as(&world.alice), npm_as(&world.bob));
    let pkg = write_package(
        &root.join("widgets"),
        "@acme/widgets",
        "1.0.0",
        json!({ "repository": "github:acme/widgets" }),
    );
    alice.ok(&pkg, &["publish"]);

    // alice (admin of acme/widgets) trusts its publish workflow, as the README shows.
    let made = alice.ok(
        root,
        &[
            "trust",
            "github",
            "@acme/widgets",
            "--file",
            "publish.yml",
            "--repo",
            "acme/widgets",
            "--env",
            "npm",
            "--allow-publish",
            "--yes",
        ],
    );
    assert!(
        made.all().contains("created successfully"),
        "{}",
        made.all()
    );
    let (status, configs) = listed(&server, Some(&world.alice), "@acme/widgets").await;
    assert_eq!(status, 200, "{configs}");
    let config = &configs[0];
    assert_eq!(configs.as_array().unwrap().len(), 1, "{configs}");
    assert_eq!(config["type"], "github");
    assert_eq!(config["claims"]["repository"], "acme/widgets");
    assert_eq!(config["claims"]["workflow_ref"]["file"], "publish.yml");
    assert_eq!(config["claims"]["environment"], "npm");
    assert_eq!(config["permissions"], json!(["createPackage"]));
    let id = config["id"].as_str().unwrap().to_string();

    // `npm trust list` prints it, for bob too (push may see why CI can or cannot publish).
    let list = bob.ok(root, &["trust", "list", "@acme/widgets"]);
    for expected in [id.as_str(), "acme/widgets", "publish.yml", "npm"] {
        assert!(list.all().contains(expected), "{expected}: {}", list.all());
    }
    // Asking again for the same configuration answers the existing one: nothing is duplicated.
    alice.ok(
        root,
        &[
            "trust",
            "github",
            "@acme/widgets",
            "--file",
            "publish.yml",
            "--repo",
            "acme/widgets",
            "--env",
            "npm",
            "--allow-publish",
            "--yes",
        ],
    );
    assert_eq!(
        listed(&server, Some(&world.alice), "@acme/widgets")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // bob has push, not admin: he may not configure or revoke; npm prints why.
    let refused = bob.run(
        root,
        &[
            "trust",
            "github",
            "@acme/widgets",
            "--file",
            "release.yml",
            "--repo",
            "acme/widgets",
            "--allow-publish",
            "--yes",
        ],
    );
    assert!(!refused.ok);
    assert!(
        refused.all().contains("403") && refused.all().contains("admin"),
        "{}",
        refused.all()
    );
    let refused = bob.run(root, &["trust", "revoke", "@acme/widgets", "--id", &id]);
    assert!(
        !refused.ok && refused.all().contains("403"),
        "{}",
        refused.all()
    );

    // carol (pull) may not list; dave (no access) and anonymous callers learn nothing: the
    // package answers exactly as a missing name does.
    let (s, b) = listed(&server, Some(&world.carol), "@acme/widgets").await;
    assert_eq!(s, 403, "{b}");
    let hidden = listed(&server, Some(&world.dave), "@acme/widgets").await;
    let missing = listed(&server, Some(&world.dave), "@acme/nothing-here").await;
    assert_eq!(hidden.0, 404);
    assert_eq!(
        hidden.1["error"].as_str().unwrap().replace("widgets", "X"),
        missing.1["error"]
            .as_str()
            .unwrap()
            .replace("nothing-here", "X")
    );
    assert_eq!(listed(&server, None, "@acme/widgets").await.0, 401);
    let (s, _, _) = send(
        Method::POST,
        format!(
            "{}/-/package/{}/trust",
            server.url,
            escaped("@acme/widgets")
        ),
        None,
        Some(&github_config("acme/widgets", "x.yml")),
    )
    .await;
    assert_eq!(s, 401);

    // A configuration must name the repository the package is bound to.
    let (s, b) = configure(
        &server,
        &world.alice,
        "@acme/widgets",
        github_config("acme/other", "publish.yml"),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("bound to repository acme/widgets")
    );
    // Bad bodies are refused with what is wrong, and change nothing.
    for (body, expected) in [
        (
            json!([{ "type": "gitlab", "claims": {} }]),
            "only GitHub Actions",
        ),
        (
            json!([{ "type": "github", "claims": { "repository": "acme/widgets", "workflow_ref": { "file": "../x.yml" } } }]),
            "workflow file name",
        ),
        (
            json!([{ "type": "github", "claims": { "repository": "acme/widgets", "workflow_ref": { "file": "p.yml" } }, "permissions": ["createStagedPackage"] }]),
            "staged publishing",
        ),
    ] {
        let (s, b) = configure(&server, &world.alice, "@acme/widgets", body).await;
        assert_eq!(s, 400, "{b}");
        assert!(b["error"].as_str().unwrap().contains(expected), "{b}");
    }
    assert_eq!(
        listed(&server, Some(&world.alice), "@acme/widgets")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // alice revokes it with npm; the list is empty.
    alice.ok(root, &["trust", "revoke", "@acme/widgets", "--id", &id]);
    assert_eq!(
        listed(&server, Some(&world.alice), "@acme/widgets").await.1,
        json!([])
    );
    let (s, b, _) = send(
        Method::DELETE,
        format!(
            "{}/-/package/{}/trust/{id}",
            server.url,
            escaped("@acme/widgets")
        ),
        Some(&world.alice.token),
        None,
    )
    .await;
    assert_eq!(s, 404, "{b}");

    // Before the first version: an admin of the repository the configuration names may make
    // one, which binds the name to that repository. The name still reads as missing.
    alice.ok(
        root,
        &[
            "trust",
            "github",
            "@acme/fresh",
            "--file",
            "publish.yml",
            "--repo",
            "acme/widgets",
            "--allow-publish",
            "--yes",
        ],
    );
    let (s, _, _) = send(
        Method::GET,
        format!("{}/{}", server.url, escaped("@acme/fresh")),
        Some(&world.alice.token),
        None,
    )
    .await;
    assert_eq!(s, 404, "a configured name has no versions yet");
    assert_eq!(
        listed(&server, Some(&world.alice), "@acme/fresh")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The binding holds: bob (admin of acme/other, push on acme/widgets) cannot take the name
    // to another repository, and mallory cannot configure it at all.
    let (s, b) = publish(
        &server,
        Some(&world.bob.token),
        "@acme/fresh",
        "1.0.0",
        Some("github:acme/other"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("bound to repository acme/widgets"),
        "{b}"
    );
    let (s, b) = configure(
        &server,
        &world.mallory,
        "@acme/fresh",
        github_config("acme/widgets", "publish.yml"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    // ... and hears exactly what she hears for a name nothing is stored under.
    let (untaken_status, untaken) = configure(
        &server,
        &world.mallory,
        "@acme/never-stored",
        github_config("acme/widgets", "publish.yml"),
    )
    .await;
    assert_eq!(untaken_status, 403, "{untaken}");
    assert_eq!(
        b["error"].as_str().unwrap().replace("@acme/fresh", "X"),
        untaken["error"]
            .as_str()
            .unwrap()
            .replace("@acme/never-stored", "X")
    );
    // A configuration for a new name must name a repository of the scope's owner, one the
    // caller administers.
    let (s, b) = configure(
        &server,
        &world.mallory,
        "@acme/grab",
        github_config("mallory/x", "publish.yml"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("owned by acme"),
        "{b}"
    );
    let (s, b) = configure(
        &server,
        &world.bob,
        "@acme/grab",
        github_config("acme/widgets", "publish.yml"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(
        listed(&server, Some(&world.alice), "@acme/grab").await.0,
        404,
        "refused configurations bind nothing"
    );
    // bob is admin of acme/other: he may pre-configure a new name there.
    let (s, b) = configure(
        &server,
        &world.bob,
        "@acme/grab",
        github_config("acme/other", "publish.yml"),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    assert_no_secrets(
        &server,
        &[&world.alice.token, &world.bob.token, &world.mallory.token],
    );
}
