//! A token may do no more than GitHub shows it may. The repository's `permissions` are the
//! user's roles: an admin's read-only fine-grained token, or their classic token without a
//! repository scope, reads but never publishes or unpublishes (docs/token-capability.md).

use e2e::fake_github::{Access, FakeGithub, FineGrained, TokenSpec, generate_token};
use e2e::github_world::World;
use e2e::{Backend, Server, escaped, http, package_tgz, publish_doc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A new token of alice's: `prefix` names its kind, `spec` what GitHub grants it.
fn alices(world: &World, prefix: &str, spec: TokenSpec) -> String {
    let token = generate_token(prefix);
    world.github.add_token("alice", &token, spec);
    token
}

/// A fine-grained token of alice's on acme/widgets with `contents` (and `administration`).
fn fine_grained(world: &World, contents: Access, administration: Access) -> String {
    let mut grant = FineGrained::selected("acme", &["widgets"], contents);
    grant.administration = administration;
    alices(world, "github_pat_", TokenSpec::FineGrained(grant))
}

async fn send(
    method: Method,
    url: String,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = http().request(method, url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(b);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Publishes `version` of `name`, naming `repository` as package.json does.
async fn publish(
    server: &Server,
    token: &str,
    name: &str,
    version: &str,
    repository: &str,
) -> (StatusCode, Value) {
    let mut doc = publish_doc(name, version, &package_tgz(name, version));
    doc["versions"][version]["repository"] = json!(repository);
    send(
        Method::PUT,
        format!("{}/{}", server.url, escaped(name)),
        Some(token),
        Some(&doc),
    )
    .await
}

/// The package as `token` reads it.
async fn read(server: &Server, token: &str, name: &str) -> (StatusCode, Value) {
    send(
        Method::GET,
        format!("{}/{}?write=true", server.url, escaped(name)),
        Some(token),
        None,
    )
    .await
}

/// What every write `token` attempts on `name` (whose versions include 1.0.0 and 1.0.1)
/// gets: publish, dist-tag, deprecate, unpublish one version, unpublish all.
async fn writes(
    server: &Server,
    token: &str,
    name: &str,
    repository: &str,
) -> Vec<(&'static str, StatusCode, Value)> {
    let url = format!("{}/{}", server.url, escaped(name));
    // The document as this token reads it now (each unpublish names the current revision).
    let current = || async {
        let (s, state) = read(server, token, name).await;
        assert_eq!(s, 200, "{state}");
        state
    };
    let mut out = Vec::new();
    let (s, b) = publish(server, token, name, "9.0.0", repository).await;
    out.push(("publish", s, b));
    let (s, b) = send(
        Method::PUT,
        format!("{}/-/package/{}/dist-tags/beta", server.url, escaped(name)),
        Some(token),
        Some(&json!("1.0.0")),
    )
    .await;
    out.push(("dist-tag", s, b));
    let mut deprecated = current().await;
    deprecated["versions"]["1.0.0"]["deprecated"] = json!("no");
    let (s, b) = send(Method::PUT, url.clone(), Some(token), Some(&deprecated)).await;
    out.push(("deprecate", s, b));
    let mut fewer = current().await;
    let rev = fewer["_rev"].as_str().unwrap().to_string();
    fewer["versions"].as_object_mut().unwrap().remove("1.0.1");
    if fewer["dist-tags"]["latest"] == "1.0.1" {
        fewer["dist-tags"]["latest"] = json!("1.0.0");
    }
    let (s, b) = send(
        Method::PUT,
        format!("{url}/-rev/{rev}"),
        Some(token),
        Some(&fewer),
    )
    .await;
    out.push(("unpublish a version", s, b));
    let rev = current().await["_rev"].as_str().unwrap().to_string();
    let (s, b) = send(
        Method::DELETE,
        format!("{url}/-rev/{rev}"),
        Some(token),
        None,
    )
    .await;
    out.push(("unpublish all", s, b));
    out
}

/// Asserts every write succeeded.
fn assert_all_done(done: &[(&'static str, StatusCode, Value)]) {
    for (write, status, body) in done {
        assert!(status.is_success(), "{write}: {status} {body}");
    }
}

/// Asserts every write was refused with 403 saying what the token lacks and what would do.
fn assert_refused_for_the_token(
    refusals: &[(&'static str, StatusCode, Value)],
    repository: &str,
    lacks: &str,
) {
    for (write, status, body) in refusals {
        let error = body["error"].as_str().unwrap_or_default();
        assert_eq!(*status, 403, "{write}: {body}");
        assert!(
            error.starts_with(&format!(
                "alice has admin permission on GitHub repository {repository}, but the token used cannot"
            )) && error.contains(lacks)
                && error.contains("needs a personal access token (classic) or OAuth app token with the repo scope"),
            "{write}: {error}"
        );
    }
}

async fn github_get(
    gh: &FakeGithub,
    path: &str,
    token: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = http()
        .get(format!("{}{path}", gh.url))
        .header("accept", "application/vnd.github+json")
        .bearer_auth(token);
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn the_fake_answers_each_token_kind_as_github_documents() {
    let world = World::start().await;
    let gh = &world.github;
    let admin =
        json!({ "admin": true, "maintain": true, "push": true, "triage": true, "pull": true });

    // Classic tokens: scopes in X-OAuth-Scopes; private repositories only with `repo`; the
    // repository's permissions are alice's whatever the scopes.
    let (s, h, _) = github_get(gh, "/repos/acme/widgets", &world.alice.token, None).await;
    assert_eq!(
        (s, header(&h, "x-oauth-scopes")),
        (StatusCode::OK, Some("repo, read:org"))
    );
    for scopes in [vec!["read:org"], vec!["public_repo"], vec![]] {
        let token = alices(&world, "ghp_", TokenSpec::scopes(&scopes));
        let (s, h, _) = github_get(gh, "/repos/acme/widgets", &token, None).await;
        assert_eq!(
            s, 404,
            "{scopes:?}: a private repository needs the repo scope"
        );
        let (s, h2, b) = github_get(gh, "/repos/acme/public-lib", &token, None).await;
        assert_eq!(
            (s, &b["permissions"]),
            (StatusCode::OK, &admin),
            "{scopes:?}"
        );
        assert_eq!(
            header(&h2, "x-oauth-scopes"),
            Some(scopes.join(", ").as_str())
        );
        assert_eq!(header(&h, "x-accepted-github-permissions"), None);
    }

    // Fine-grained tokens: a read-only and a read-write one get the very same answer, with
    // the user's permissions and what the endpoint needs, but nothing of their own.
    let read_only = fine_grained(&world, Access::Read, Access::NoAccess);
    let read_write = fine_grained(&world, Access::Write, Access::Write);
    let (s1, h1, b1) = github_get(gh, "/repos/acme/widgets", &read_only, None).await;
    let (s2, h2, b2) = github_get(gh, "/repos/acme/widgets", &read_write, None).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(b1, b2);
    assert_eq!(b1["permissions"], admin);
    for h in [&h1, &h2] {
        assert_eq!(header(h, "x-oauth-scopes"), None);
        assert_eq!(
            header(h, "x-accepted-github-permissions"),
            Some("metadata=read")
        );
        assert_eq!(header(h, "etag"), header(&h1, "etag"));
    }
    let (s, _, b) = github_get(gh, "/user", &read_only, None).await;
    assert_eq!((s, b["login"].as_str()), (StatusCode::OK, Some("alice")));
    // Outside its selection or its resource owner: private repositories are not found, public
    // ones are read-only reachable.
    let other = alices(
        &world,
        "github_pat_",
        TokenSpec::FineGrained(FineGrained::selected("acme", &["other"], Access::Write)),
    );
    let personal = alices(
        &world,
        "github_pat_",
        TokenSpec::FineGrained(FineGrained {
            owner: "alice".into(),
            repositories: None,
            contents: Access::Write,
            administration: Access::Write,
        }),
    );
    for token in [&other, &personal] {
        assert_eq!(
            github_get(gh, "/repos/acme/widgets", token, None).await.0,
            404
        );
        assert_eq!(
            github_get(gh, "/repos/acme/public-lib", token, None)
                .await
                .0,
            200
        );
    }

    // A GitHub App user token: what both the installation and the user reach.
    let app_user = alices(
        &world,
        "ghu_",
        TokenSpec::AppUser(FineGrained::selected("acme", &["widgets"], Access::Read)),
    );
    assert_eq!(
        github_get(gh, "/repos/acme/widgets", &app_user, None)
            .await
            .0,
        200
    );
    assert_eq!(
        github_get(gh, "/repos/acme/other", &app_user, None).await.0,
        404
    );

    // An installation token acts for no user.
    let installation = generate_token("ghs_");
    gh.add_installation_token(
        &installation,
        FineGrained::selected("acme", &["widgets"], Access::Write),
    );
    let (s, _, b) = github_get(gh, "/user", &installation, None).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("Resource not accessible by integration")
        )
    );
    let (s, _, b) = github_get(gh, "/repos/acme/widgets", &installation, None).await;
    assert_eq!(s, 200);
    assert!(b.get("permissions").is_none(), "{b}");

    // A classic token's scopes can be edited; the repository's body (and ETag) does not change,
    // so GitHub answers 304, reporting the new scopes.
    let token = alices(&world, "ghp_", TokenSpec::scopes(&["public_repo"]));
    let (_, h, _) = github_get(gh, "/repos/acme/public-lib", &token, None).await;
    let etag = header(&h, "etag").unwrap().to_string();
    gh.set_scopes(&token, &["read:org"]);
    let (s, h, _) = github_get(gh, "/repos/acme/public-lib", &token, Some(&etag)).await;
    assert_eq!(
        (s, header(&h, "x-oauth-scopes")),
        (StatusCode::NOT_MODIFIED, Some("read:org"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_read_only_fine_grained_token_reads_but_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &Backend::local(), &[]);
    let full = &world.alice.token;
    for version in ["1.0.0", "1.0.1"] {
        let (s, b) = publish(
            &server,
            full,
            "@acme/widgets",
            version,
            "github:acme/widgets",
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }

    let read_only = fine_grained(&world, Access::Read, Access::NoAccess);
    let (s, b) = read(&server, &read_only, "@acme/widgets").await;
    assert_eq!(s, 200, "{b}");
    let tarball = format!("{}/@acme/widgets/-/widgets-1.0.0.tgz", server.url);
    assert_eq!(
        send(Method::GET, tarball, Some(&read_only), None).await.0,
        200
    );
    let refusals = writes(&server, &read_only, "@acme/widgets", "github:acme/widgets").await;
    assert_refused_for_the_token(
        &refusals,
        "acme/widgets",
        "a fine-grained personal access token",
    );
    let (_, b) = publish(
        &server,
        &read_only,
        "@acme/widgets",
        "2.0.0",
        "github:acme/widgets",
    )
    .await;
    assert_eq!(
        b["error"].as_str().unwrap().split(": ").next(),
        Some(
            "alice has admin permission on GitHub repository acme/widgets, but the token used cannot publish to @acme/widgets"
        )
    );

    // A read-write one answers exactly like it on GitHub: refused alike (fail closed).
    let read_write = fine_grained(&world, Access::Write, Access::Write);
    let refusals = writes(&server, &read_write, "@acme/widgets", "github:acme/widgets").await;
    assert_refused_for_the_token(&refusals, "acme/widgets", "does not disclose");

    // Nothing was written; the capable token still does everything.
    let (_, state) = read(&server, full, "@acme/widgets").await;
    assert_eq!(state["dist-tags"], json!({ "latest": "1.0.1" }));
    assert!(state["versions"]["1.0.0"].get("deprecated").is_none());
    assert_all_done(&writes(&server, full, "@acme/widgets", "github:acme/widgets").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_classic_token_without_the_scope_reads_but_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &Backend::local(), &[]);
    let full = &world.alice.token;
    for (name, repository) in [
        ("@acme/public-lib", "github:acme/public-lib"),
        ("@acme/widgets", "github:acme/widgets"),
    ] {
        for version in ["1.0.0", "1.0.1"] {
            let (s, b) = publish(&server, full, name, version, repository).await;
            assert_eq!(s, 201, "{b}");
        }
    }

    // Scopes that give no repository access: GitHub shows alice's admin role on the public
    // repository anyway; the token reads it and writes nothing.
    let no_repo_scope = alices(&world, "ghp_", TokenSpec::scopes(&["read:org", "gist"]));
    let (s, b) = read(&server, &no_repo_scope, "@acme/public-lib").await;
    assert_eq!(s, 200, "{b}");
    let refusals = writes(
        &server,
        &no_repo_scope,
        "@acme/public-lib",
        "github:acme/public-lib",
    )
    .await;
    assert_refused_for_the_token(
        &refusals,
        "acme/public-lib",
        "it is a personal access token (classic) with scopes gist, read:org, which gives read-only access to public repositories",
    );
    // GitHub hides the private repository from it altogether: to this token the package does
    // not exist.
    let (s, b) = read(&server, &no_repo_scope, "@acme/widgets").await;
    assert_eq!(s, 404, "{b}");

    // An OAuth app token is judged by its scopes alike.
    let oauth = alices(&world, "gho_", TokenSpec::scopes(&[]));
    let refusals = writes(
        &server,
        &oauth,
        "@acme/public-lib",
        "github:acme/public-lib",
    )
    .await;
    assert_refused_for_the_token(
        &refusals,
        "acme/public-lib",
        "it is an OAuth app token with no scopes",
    );

    // public_repo writes public repositories, and its admin may unpublish there; it still
    // cannot reach the private one.
    let public_repo = alices(&world, "ghp_", TokenSpec::scopes(&["public_repo"]));
    assert_all_done(
        &writes(
            &server,
            &public_repo,
            "@acme/public-lib",
            "github:acme/public-lib",
        )
        .await,
    );
    assert_eq!(read(&server, &public_repo, "@acme/widgets").await.0, 404);

    // And `repo` does everything, as an OAuth app token too.
    let oauth_repo = alices(&world, "gho_", TokenSpec::scopes(&["repo"]));
    let (s, b) = publish(
        &server,
        &oauth_repo,
        "@acme/widgets",
        "1.0.2",
        "github:acme/widgets",
    )
    .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_scopes_take_effect_although_github_answers_304() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &Backend::local(), &[]);
    let token = alices(&world, "ghp_", TokenSpec::scopes(&["public_repo"]));
    for version in ["1.0.0", "1.0.1"] {
        let (s, b) = publish(
            &server,
            &token,
            "@acme/public-lib",
            version,
            "github:acme/public-lib",
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }

    // Alice edits the token's scopes on GitHub. The repository is unchanged, so revalidating
    // the cached answer gets 304; the scopes it reports are new, so the answer is judged afresh.
    world.github.set_scopes(&token, &["read:org"]);
    world.github.reset_calls();
    let (s, b) = publish(
        &server,
        &token,
        "@acme/public-lib",
        "1.0.2",
        "github:acme/public-lib",
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("with scopes read:org"),
        "{b}"
    );
    assert!(
        world.github.calls_to("/repos/acme/public-lib") >= 2,
        "{:?}",
        world.github.paths()
    );

    // Given back, the scope works again.
    world.github.set_scopes(&token, &["public_repo"]);
    let (s, b) = publish(
        &server,
        &token,
        "@acme/public-lib",
        "1.0.2",
        "github:acme/public-lib",
    )
    .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_token_is_no_stronger_than_the_github_token_it_seals() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &Backend::local(), &[]);
    let (s, b) = publish(
        &server,
        &world.alice.token,
        "@acme/widgets",
        "1.0.0",
        "github:acme/widgets",
    )
    .await;
    assert_eq!(s, 201, "{b}");

    // npm login with alice's read-only fine-grained token as the password.
    let read_only = fine_grained(&world, Access::Read, Access::NoAccess);
    let body = json!({ "_id": "org.couchdb.user:alice", "name": "alice", "password": read_only, "type": "user", "roles": [], "date": "2026-11-22T00:00:00.000Z" });
    let (s, b) = send(
        Method::PUT,
        format!("{}/-/user/org.couchdb.user:alice", server.url),
        None,
        Some(&body),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let registry_token = b["token"].as_str().unwrap().to_string();

    assert_eq!(read(&server, &registry_token, "@acme/widgets").await.0, 200);
    let (s, b) = publish(
        &server,
        &registry_token,
        "@acme/widgets",
        "1.0.1",
        "github:acme/widgets",
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("a fine-grained personal access token"),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installation_tokens_act_for_no_user_read_and_never_write() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &Backend::local(), &[]);
    let (s, b) = publish(
        &server,
        &world.alice.token,
        "@acme/widgets",
        "1.0.0",
        "github:acme/widgets",
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // Even an installation granted "Contents: write" only reads here (tests/it/
    // installation_tokens.rs covers the rest).
    let installation = generate_token("ghs_");
    world.github.add_installation_token(
        &installation,
        FineGrained::selected("acme", &["widgets"], Access::Write),
    );

    let (s, b) = send(
        Method::GET,
        format!("{}/-/whoami", server.url),
        Some(&installation),
        None,
    )
    .await;
    assert_eq!(
        (s, &b["username"]),
        (StatusCode::OK, &json!("github-app-installation"))
    );
    let (s, b) = read(&server, &installation, "@acme/widgets").await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = publish(
        &server,
        &installation,
        "@acme/widgets",
        "1.0.1",
        "github:acme/widgets",
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("npm trust github"),
        "{b}"
    );
}
