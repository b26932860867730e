//! GitHub mode: the token in .npmrc decides who may read and write each scoped package.

use std::path::Path;

use base64::Engine;
use e2e::api::{assert_no_secrets, doc, login, packument, publish, send};
use e2e::fake_github::{Access, FineGrained, Mode, TokenSpec, generate_token};
use e2e::github_world::{User, World};
use e2e::{Backend, Npm, S3Host, Server, escaped, http, write_package};
use registry::auth::tokens::{TokenKeys, TokenScope};
use reqwest::StatusCode;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The real npm CLI under each role.

#[tokio::test]
async fn npm_under_each_role_local() {
    npm_under_each_role(Backend::local()).await;
}

#[tokio::test]
async fn npm_under_each_role_aws() {
    npm_under_each_role(Backend::aws("roles", S3Host::Different)).await;
}

async fn npm_under_each_role(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let server = world.server(root, &backend, &[]);
    let as_user = |u: &User| {
        Npm::with_token(
            &root.join(format!("npm-{}", u.login)),
            &server.url,
            Some(&u.token),
        )
    };
    let (alice, bob, carol, dave) = (
        as_user(&world.alice),
        as_user(&world.bob),
        as_user(&world.carol),
        as_user(&world.dave),
    );
    let anonymous = Npm::with_token(&root.join("npm-anonymous"), &server.url, None);
    let project = |name: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.json"),
            r#"{"name":"p","version":"1.0.0","private":true}"#,
        )
        .unwrap();
        dir
    };
    let pkg = write_package(
        &root.join("widgets"),
        "@acme/widgets",
        "1.0.0",
        json!({ "repository": "github:acme/widgets" }),
    );

    // alice (admin) publishes; the package is now bound to acme/widgets.
    alice.ok(&pkg, &["publish"]);
    assert_eq!(alice.ok(root, &["whoami"]).stdout.trim(), "alice");

    // carol (pull) installs but may not publish; npm prints which permission on which repository.
    carol.ok(&project("carol-install"), &["install", "@acme/widgets"]);
    write_package(
        &pkg,
        "@acme/widgets",
        "1.0.1",
        json!({ "repository": "github:acme/widgets" }),
    );
    let refused = carol.run(&pkg, &["publish"]);
    assert!(!refused.ok, "carol must not publish");
    assert!(
        refused.all().contains("403")
            && refused
                .all()
                .contains("carol needs push permission on GitHub repository acme/widgets"),
        "{}",
        refused.all()
    );

    // bob (push) publishes, tags and deprecates, but may not unpublish.
    bob.ok(&pkg, &["publish"]);
    bob.ok(root, &["dist-tag", "add", "@acme/widgets@1.0.0", "stable"]);
    bob.ok(root, &["deprecate", "@acme/widgets@1.0.0", "use 1.0.1"]);
    assert_eq!(
        carol
            .ok(root, &["view", "@acme/widgets@1.0.0", "deprecated"])
            .stdout
            .trim(),
        "use 1.0.1"
    );
    let refused = bob.run(root, &["unpublish", "@acme/widgets@1.0.0"]);
    assert!(
        !refused.ok && refused.all().contains("needs admin permission"),
        "{}",
        refused.all()
    );

    // alice unpublishes.
    alice.ok(root, &["unpublish", "@acme/widgets@1.0.0"]);
    let versions: Value = serde_json::from_str(
        &carol
            .ok(root, &["view", "@acme/widgets", "versions", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(versions, json!(["1.0.1"]));

    // dave (no access) and anonymous users cannot even install; to dave the package does not
    // exist.
    let refused = dave.run(&project("dave-install"), &["install", "@acme/widgets"]);
    assert!(
        !refused.ok && refused.all().contains("404"),
        "{}",
        refused.all()
    );
    let refused = anonymous.run(&project("anonymous-install"), &["install", "@acme/widgets"]);
    assert!(
        !refused.ok && refused.all().contains("401"),
        "{}",
        refused.all()
    );

    // Unscoped names are not stored here.
    let plain = write_package(&root.join("plain"), "plain-pkg", "1.0.0", json!({}));
    let refused = alice.run(&plain, &["publish"]);
    assert!(
        !refused.ok && refused.all().contains("only stores scoped packages"),
        "{}",
        refused.all()
    );

    assert_no_secrets(
        &server,
        &[
            &world.alice.token,
            &world.bob.token,
            &world.carol.token,
            &world.dave.token,
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Every route × every kind of caller.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Packument,
    Version,
    DistTags,
    Tarball,
    Publish,
    /// A publish whose package.json names the package's own repository.
    PublishFromRepo,
    TagAdd,
    TagRemove,
    Deprecate,
    Star,
    UnpublishVersion,
    UnpublishAll,
    Whoami,
}

fn is_publish(op: Op) -> bool {
    matches!(op, Op::Publish | Op::PublishFromRepo)
}

/// What an op needs: 0 = any authenticated caller, 1 = pull, 2 = push, 3 = admin.
fn need(op: Op) -> u8 {
    match op {
        Op::Whoami => 0,
        Op::Packument | Op::Version | Op::DistTags | Op::Tarball | Op::Star => 1,
        Op::Publish | Op::PublishFromRepo | Op::TagAdd | Op::TagRemove | Op::Deprecate => 2,
        Op::UnpublishVersion | Op::UnpublishAll => 3,
    }
}

async fn perform(
    op: Op,
    server: &Server,
    name: &str,
    token: Option<&str>,
    state: &Value,
    star_as: &str,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    use reqwest::Method;
    let url = format!("{}/{}", server.url, escaped(name));
    let rev = state["_rev"].as_str().unwrap_or("1-0");
    let base = name.split('/').nth(1).unwrap();
    match op {
        Op::Packument => send(Method::GET, url, token, None).await,
        Op::Version => send(Method::GET, format!("{url}/1.0.0"), token, None).await,
        Op::DistTags => {
            send(
                Method::GET,
                format!("{}/-/package/{}/dist-tags", server.url, escaped(name)),
                token,
                None,
            )
            .await
        }
        Op::Tarball => {
            send(
                Method::GET,
                format!("{}/{name}/-/{base}-1.0.0.tgz", server.url),
                token,
                None,
            )
            .await
        }
        Op::Publish => send(Method::PUT, url, token, Some(&doc(name, "2.0.0", None))).await,
        Op::PublishFromRepo => {
            let repository = Some("github:acme/widgets");
            send(
                Method::PUT,
                url,
                token,
                Some(&doc(name, "2.0.0", repository)),
            )
            .await
        }
        Op::TagAdd => {
            send(
                Method::PUT,
                format!("{}/-/package/{}/dist-tags/beta", server.url, escaped(name)),
                token,
                Some(&json!("1.0.0")),
            )
            .await
        }
        Op::TagRemove => {
            send(
                Method::DELETE,
                format!("{}/-/package/{}/dist-tags/old", server.url, escaped(name)),
                token,
                None,
            )
            .await
        }
        Op::Star => {
            let mut d = state.clone();
            d["users"] = json!({ star_as: true });
            send(Method::PUT, url, token, Some(&d)).await
        }
        Op::Deprecate => {
            let mut d = state.clone();
            d["versions"]["1.0.0"]["deprecated"] = json!("no");
            send(Method::PUT, url, token, Some(&d)).await
        }
        Op::UnpublishVersion => {
            let mut d = state.clone();
            d["versions"].as_object_mut().unwrap().remove("1.0.1");
            d["dist-tags"] = json!({ "latest": "1.0.0", "old": "1.0.0" });
            send(Method::PUT, format!("{url}/-rev/{rev}"), token, Some(&d)).await
        }
        Op::UnpublishAll => send(Method::DELETE, format!("{url}/-rev/{rev}"), token, None).await,
        Op::Whoami => send(Method::GET, format!("{}/-/whoami", server.url), token, None).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_local() {
    authorization_matrix(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_aws() {
    authorization_matrix(Backend::aws("matrix", S3Host::Different)).await;
}

/// What a cell of the matrix must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Success.
    Allowed,
    /// 401 with `WWW-Authenticate`.
    Unauthenticated,
    /// 403: the caller sees the package but may not do this.
    Forbidden,
    /// Exactly what a missing name answers (404 to a signed-in caller).
    LikeMissing,
}

/// Every route × every kind of caller, on `backend`: the status, a `{"error": "..."}` body on
/// refusals, nothing changed by a refusal, and the existence property: a caller who may not read
/// a package gets exactly (status, body, headers) what a missing name gets.
async fn authorization_matrix(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &backend, &[]);
    let alice = &world.alice.token;

    // Registry tokens: valid, read-only, expired, signed with another key, alg none, tampered,
    // revoked.
    let registry_token = login(&server, &world.alice).await;
    let (s, created, _) = send(
        reqwest::Method::POST,
        format!("{}/-/npm/v1/tokens", server.url),
        Some(&registry_token),
        Some(&json!({ "password": "", "readonly": true })),
    )
    .await;
    assert_eq!(s, 200, "{created}");
    let read_only = created["token"].as_str().unwrap().to_string();
    let expired = TokenKeys::new(world.secret.as_bytes(), chrono::Duration::seconds(-60))
        .issue("alice", alice, TokenScope::Publish, None)
        .unwrap()
        .0;
    let wrong_key = TokenKeys::new(
        b"a different secret, also at least 32 chars",
        chrono::Duration::days(1),
    )
    .issue("alice", alice, TokenScope::Publish, None)
    .unwrap()
    .0;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(registry_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&claims)
    );
    let mut forged_claims = claims.clone();
    forged_claims["sub"] = json!("mallory");
    let parts: Vec<&str> = registry_token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&forged_claims), parts[2]);
    let revoked = login(&server, &world.alice).await;
    let revoked_claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(revoked.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let (s, _, _) = send(
        reqwest::Method::DELETE,
        format!(
            "{}/-/npm/v1/tokens/token/{}",
            server.url,
            revoked_claims["jti"].as_str().unwrap()
        ),
        Some(alice),
        None,
    )
    .await;
    assert_eq!(s, 204);

    // Tokens of an admin that can only read (docs/token-capability.md): a fine-grained token
    // with Contents: read, and a classic token without the `repo` scope.
    let fine_grained_read = generate_token("github_pat_");
    world.github.add_token(
        "alice",
        &fine_grained_read,
        TokenSpec::FineGrained(FineGrained::selected("acme", &["widgets"], Access::Read)),
    );
    let classic_without_repo = generate_token("ghp_");
    world.github.add_token(
        "alice",
        &classic_without_repo,
        TokenSpec::scopes(&["read:org"]),
    );

    // (caller, token, login to star as, what they hold: None = unauthenticated, Some(0..=3) =
    // none, pull, push, admin)
    let callers: Vec<(&str, Option<String>, &str, Option<u8>)> = vec![
        ("anonymous", None, "anonymous", None),
        (
            "bad token",
            Some("ghp_not_a_real_token_at_all".into()),
            "x",
            None,
        ),
        ("expired registry token", Some(expired), "alice", None),
        ("registry token, wrong key", Some(wrong_key), "alice", None),
        ("registry token, alg none", Some(alg_none), "alice", None),
        ("registry token, tampered", Some(tampered), "alice", None),
        ("revoked registry token", Some(revoked), "alice", None),
        (
            "dave (no access)",
            Some(world.dave.token.clone()),
            "dave",
            Some(0),
        ),
        (
            "carol (pull)",
            Some(world.carol.token.clone()),
            "carol",
            Some(1),
        ),
        ("bob (push)", Some(world.bob.token.clone()), "bob", Some(2)),
        ("alice (admin)", Some(alice.clone()), "alice", Some(3)),
        (
            "alice's registry token",
            Some(registry_token.clone()),
            "alice",
            Some(3),
        ),
        (
            "alice's read-only registry token",
            Some(read_only.clone()),
            "alice",
            Some(1),
        ),
        (
            "alice's read-only fine-grained token",
            Some(fine_grained_read.clone()),
            "alice",
            Some(1),
        ),
        // GitHub shows a private repository only to a classic token with `repo`.
        (
            "alice's classic token without repo scope",
            Some(classic_without_repo.clone()),
            "alice",
            Some(0),
        ),
    ];
    let ops = [
        Op::Packument,
        Op::Version,
        Op::DistTags,
        Op::Tarball,
        Op::Publish,
        Op::PublishFromRepo,
        Op::TagAdd,
        Op::TagRemove,
        Op::Deprecate,
        Op::Star,
        Op::UnpublishVersion,
        Op::UnpublishAll,
        Op::Whoami,
    ];
    let mut failures = Vec::new();
    let mut cell = 0;
    for (who, token, star_as, role) in &callers {
        for op in ops {
            cell += 1;
            // A fresh package per cell, so allowed writes do not change what later cells see;
            // its name differs from its repository's, so a leaked repository name shows.
            let name = format!("@acme/m{cell}");
            let first = publish(
                &server,
                Some(alice),
                &name,
                "1.0.0",
                Some("github:acme/widgets"),
            )
            .await;
            assert_eq!(first.0, 201, "{}", first.1);
            assert_eq!(
                publish(&server, Some(alice), &name, "1.0.1", None).await.0,
                201
            );
            let (s, _, _) = send(
                reqwest::Method::PUT,
                format!("{}/-/package/{}/dist-tags/old", server.url, escaped(&name)),
                Some(alice),
                Some(&json!("1.0.0")),
            )
            .await;
            assert_eq!(s, 200);
            let before = packument(&server, alice, &name).await.unwrap();
            let (status, body, headers) =
                perform(op, &server, &name, token.as_deref(), &before, star_as).await;
            let expected = match role {
                None => Expect::Unauthenticated,
                Some(r) if *r >= need(op) => Expect::Allowed,
                Some(0) => Expect::LikeMissing,
                Some(_) => Expect::Forbidden,
            };
            let after = packument(&server, alice, &name).await;
            let after = after.as_ref().unwrap_or(&Value::Null);
            let mut wrong = Vec::new();
            let status_ok = match expected {
                // A tarball on S3 is a redirect to a presigned URL.
                Expect::Allowed => status.is_success() || status == StatusCode::FOUND,
                Expect::Unauthenticated => {
                    status == 401 && headers.get("www-authenticate").is_some()
                }
                Expect::Forbidden => status == 403,
                // A publish to a free name is refused for its own reasons (no repository named,
                // none the caller can publish from); the comparison below wants the same here.
                Expect::LikeMissing if is_publish(op) => status.is_client_error(),
                Expect::LikeMissing => status == 404,
            };
            if !status_ok {
                wrong.push(format!("got {status} {body}"));
            }
            if expected != Expect::Allowed {
                if *after != before {
                    wrong.push("the package changed".into());
                }
                if !body["error"].is_string() {
                    wrong.push(format!("body is not {{\"error\": \"...\"}}: {body}"));
                }
                // Naming the repository the caller named themselves tells them nothing.
                if body.to_string().contains("acme/widgets")
                    && role.is_none_or(|r| r == 0)
                    && op != Op::PublishFromRepo
                {
                    wrong.push(format!("names the repository: {body}"));
                }
            }
            // The existence property, for callers who may not read the package.
            if role.is_none_or(|r| r == 0) && op != Op::Whoami {
                let ghost = name.replace("/m", "/ghost");
                let ghost_state: Value =
                    serde_json::from_str(&before.to_string().replace(&name, &ghost)).unwrap();
                let (g_status, g_body, g_headers) =
                    perform(op, &server, &ghost, token.as_deref(), &ghost_state, star_as).await;
                // The name, also as it appears without its `@` (in `github:acme/name`).
                let ghost_body = g_body
                    .to_string()
                    .replace(&ghost, &name)
                    .replace(&ghost[1..], &name[1..]);
                let comparable = |h: &reqwest::header::HeaderMap| {
                    let mut v: Vec<(String, String)> = h
                        .iter()
                        .filter(|(k, _)| *k != "date" && *k != "content-length")
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    v.sort();
                    v
                };
                if (g_status, ghost_body.as_str()) != (status, body.to_string().as_str())
                    || comparable(&g_headers) != comparable(&headers)
                {
                    wrong.push(format!(
                        "a missing name answers {g_status} {g_body} {:?}, this package {status} {body} {:?}",
                        comparable(&g_headers),
                        comparable(&headers)
                    ));
                }
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "{who} × {op:?} (wanted {expected:?}): {}",
                    wrong.join("; ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cell} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_no_secrets(
        &server,
        &[
            alice,
            &world.bob.token,
            &world.carol.token,
            &world.dave.token,
            &registry_token,
            &read_only,
        ],
    );
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hijack_attempts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &Backend::local(), &[]);
    let (alice, bob, mallory) = (&world.alice.token, &world.bob.token, &world.mallory.token);

    // @victim/x from a repository mallory owns: the repository's owner must be the scope.
    let (s, b) = publish(
        &server,
        Some(mallory),
        "@victim/x",
        "1.0.0",
        Some("github:mallory/x"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("must live in a repository owned by victim"),
        "{b}"
    );
    // @victim/x from victim's repository, which mallory cannot push to (or even see).
    let (s, b) = publish(
        &server,
        Some(mallory),
        "@victim/x",
        "1.0.0",
        Some("https://github.com/victim/x.git"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    // No repository at all.
    let (s, b) = publish(&server, Some(alice), "@acme/norepo", "1.0.0", None).await;
    assert_eq!(s, 400, "{b}");
    // Another host is not a GitHub repository.
    let (s, _) = publish(
        &server,
        Some(alice),
        "@acme/gitlab",
        "1.0.0",
        Some("https://gitlab.com/acme/gitlab.git"),
    )
    .await;
    assert_eq!(s, 400);

    // Bound to acme/widgets: bob (push there, admin of acme/other) may not move it to acme/other.
    assert_eq!(
        publish(
            &server,
            Some(alice),
            "@acme/widgets",
            "1.0.0",
            Some("github:acme/widgets")
        )
        .await
        .0,
        201
    );
    let (s, b) = publish(
        &server,
        Some(bob),
        "@acme/widgets",
        "1.1.0",
        Some("github:acme/other"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("needs admin on acme/widgets"),
        "{b}"
    );
    // The same repository in another spelling is not a rebind.
    assert_eq!(
        publish(
            &server,
            Some(bob),
            "@acme/widgets",
            "1.1.0",
            Some("git+https://github.com/ACME/Widgets.git")
        )
        .await
        .0,
        201
    );
    // alice (admin of both) may rebind.
    assert_eq!(
        publish(
            &server,
            Some(alice),
            "@acme/widgets",
            "1.2.0",
            Some("github:acme/other")
        )
        .await
        .0,
        201
    );

    // Upper-case scope variants and names that decode to another scope.
    let (s, _) = publish(
        &server,
        Some(alice),
        "@ACME/widgets",
        "9.0.0",
        Some("github:acme/widgets"),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _, _) = send(
        reqwest::Method::PUT,
        format!("{}/@acme%2f..%2f@victim%2fx", server.url),
        Some(alice),
        Some(&doc("@victim/x", "1.0.0", Some("github:acme/widgets"))),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _, _) = send(
        reqwest::Method::PUT,
        format!("{}/@acme%2fwidgets", server.url),
        Some(alice),
        Some(&doc("@victim/x", "1.0.0", Some("github:victim/x"))),
    )
    .await;
    assert_eq!(s, 400, "body name must match the URL");
    let (s, _, _) = send(
        reqwest::Method::GET,
        format!("{}/@victim%2fx", server.url),
        Some(mallory),
        None,
    )
    .await;
    assert_eq!(s, 404, "nothing was stored for @victim/x");
    assert_no_secrets(&server, &[alice, bob, mallory]);
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_calls_are_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &Backend::local(), &[]);
    assert_eq!(
        publish(
            &server,
            Some(&world.alice.token),
            "@acme/widgets",
            "1.0.0",
            Some("github:acme/widgets")
        )
        .await
        .0,
        201
    );
    world.github.reset_calls();
    let client = http();
    for _ in 0..200 {
        let r = client
            .get(format!("{}/@acme%2fwidgets", server.url))
            .bearer_auth(&world.carol.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = client
            .get(format!("{}/@acme/widgets/-/widgets-1.0.0.tgz", server.url))
            .bearer_auth(&world.carol.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let calls = world.github.calls();
    println!("200 installs (packument + tarball) with one token: {calls} GitHub API calls");
    assert!(calls <= 3, "{calls} GitHub calls for 200 installs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_outages_fail_writes_closed_and_keep_cached_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    // Cache time 0: every read revalidates, so the outage path is taken on every request.
    let server = world.server(
        tmp.path(),
        &Backend::local(),
        &[("REGISTRY_GITHUB_CACHE_SECONDS", "0")],
    );
    let bob = &world.bob.token;
    assert_eq!(
        publish(
            &server,
            Some(&world.alice.token),
            "@acme/widgets",
            "1.0.0",
            Some("github:acme/widgets")
        )
        .await
        .0,
        201
    );
    let url = format!("{}/@acme%2fwidgets", server.url);
    assert_eq!(
        send(reqwest::Method::GET, url.clone(), Some(bob), None)
            .await
            .0,
        200
    );

    for (mode, says) in [
        (Mode::Unreachable, "cannot be reached"),
        (Mode::RateLimited, "rate limit"),
        (Mode::SecondaryRateLimit, "rate limit"),
        (Mode::ServerError, "cannot be reached"),
    ] {
        world.github.set_mode(mode);
        let (s, b, headers) = send(reqwest::Method::GET, url.clone(), Some(bob), None).await;
        assert_eq!(
            s, 200,
            "{mode:?}: a cached permission keeps reads working: {b}"
        );
        let (s, b) = publish(&server, Some(bob), "@acme/widgets", "1.1.0", None).await;
        assert_eq!(s, 503, "{mode:?}: writes fail closed: {b}");
        assert!(b["error"].as_str().unwrap().contains(says), "{mode:?}: {b}");
        let (s, _, retry) = send(
            reqwest::Method::GET,
            url.clone(),
            Some(&world.carol.token),
            None,
        )
        .await;
        assert_eq!(s, 503, "{mode:?}: nothing cached for carol yet");
        assert!(retry.get("retry-after").is_some());
        let _ = headers;
    }
    world.github.set_mode(Mode::Normal);
    assert_eq!(
        publish(&server, Some(bob), "@acme/widgets", "1.1.0", None)
            .await
            .0,
        201
    );
    assert_no_secrets(&server, &[bob, &world.alice.token, &world.carol.token]);
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn login_whoami_and_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let root: &Path = tmp.path();
    let world = World::start().await;
    let server = world.server(root, &Backend::local(), &[]);

    // Logging in as someone else with your own token fails.
    let body = json!({ "name": "alice", "password": world.bob.token });
    let (s, b, _) = send(
        reqwest::Method::PUT,
        format!("{}/-/user/org.couchdb.user:alice", server.url),
        None,
        Some(&body),
    )
    .await;
    assert_eq!(s, 401, "{b}");
    // The web login answers 4xx, so npm falls back to the legacy flow.
    assert_eq!(
        send(
            reqwest::Method::POST,
            format!("{}/-/v1/login", server.url),
            None,
            Some(&json!({}))
        )
        .await
        .0,
        404
    );

    let token = login(&server, &world.bob).await;
    let npm = Npm::with_token(&root.join("npm-bob"), &server.url, Some(&token));
    assert_eq!(npm.ok(root, &["whoami"]).stdout.trim(), "bob");
    assert_eq!(
        publish(
            &server,
            Some(&world.alice.token),
            "@acme/widgets",
            "1.0.0",
            Some("github:acme/widgets")
        )
        .await
        .0,
        201
    );
    let pkg = write_package(
        &root.join("widgets"),
        "@acme/widgets",
        "1.0.1",
        json!({ "repository": "github:acme/widgets" }),
    );
    npm.ok(&pkg, &["publish"]);

    // Someone who may not read the package learns nothing about which versions exist.
    for caller in [None, Some(world.dave.token.as_str())] {
        let mut statuses = Vec::new();
        for version in ["1.0.1", "9.9.9"] {
            let url = format!("{}/@acme/widgets/-/widgets-{version}.tgz", server.url);
            statuses.push(send(reqwest::Method::GET, url, caller, None).await.0);
        }
        assert_eq!(statuses[0], statuses[1], "{caller:?}");
        assert!(statuses[0] == 401 || statuses[0] == 404, "{statuses:?}");
    }

    // npm token list shows it; revoke it with npm; then it is refused.
    let list = npm.ok(root, &["token", "list", "--json"]);
    let tokens: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
    let key = tokens[0]["key"].as_str().unwrap().to_string();
    assert!(
        !list.stdout.contains(&token),
        "the list never shows a usable token"
    );
    npm.ok(root, &["token", "revoke", &key]);
    let refused = npm.run(root, &["whoami"]);
    assert!(
        !refused.ok && refused.all().contains("401"),
        "{}",
        refused.all()
    );
    // Logging in again works although .npmrc still holds the revoked token.
    let body = json!({ "name": "bob", "password": world.bob.token });
    let (s, b, _) = send(
        reqwest::Method::PUT,
        format!("{}/-/user/org.couchdb.user:bob", server.url),
        Some(&token),
        Some(&body),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    // A read-only token reads, but neither publishes nor mints or revokes tokens (a leaked one
    // must not buy its holder a publish token).
    let tokens_url = format!("{}/-/npm/v1/tokens", server.url);
    let (s, created, _) = send(
        reqwest::Method::POST,
        tokens_url.clone(),
        Some(&world.bob.token),
        Some(&json!({ "readonly": true })),
    )
    .await;
    assert_eq!(s, 200, "{created}");
    assert_eq!(created["readonly"], true, "{created}");
    let read_only = created["token"].as_str().unwrap().to_string();
    let (s, b, _) = send(
        reqwest::Method::GET,
        format!("{}/{}", server.url, escaped("@acme/widgets")),
        Some(&read_only),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["dist-tags"]["latest"], "1.0.1");
    let (s, b) = publish(
        &server,
        Some(&read_only),
        "@acme/widgets",
        "1.0.2",
        Some("github:acme/widgets"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    for readonly in [false, true] {
        let (s, b, _) = send(
            reqwest::Method::POST,
            tokens_url.clone(),
            Some(&read_only),
            Some(&json!({ "readonly": readonly })),
        )
        .await;
        assert_eq!(s, 403, "{b}");
        assert!(b["error"].as_str().unwrap().contains("read-only"), "{b}");
    }
    let (s, b, _) = send(
        reqwest::Method::DELETE,
        format!("{tokens_url}/token/{}", created["key"].as_str().unwrap()),
        Some(&read_only),
        None,
    )
    .await;
    assert_eq!(s, 403, "{b}");
    let (s, list, _) = send(reqwest::Method::GET, tokens_url, Some(&read_only), None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(
        list["total"], 2,
        "bob's new login and the read-only token: {list}"
    );
    assert_no_secrets(
        &server,
        &[&world.bob.token, &world.alice.token, &token, &read_only],
    );
}
