//! The fake GitHub API behaves like api.github.com: authentication, the endpoints the registry
//! uses, rate limits, conditional requests and the failure modes; and like github.com's OAuth
//! web application flow (authorize, code exchange).

use e2e::fake_github::{
    Consent, FakeGithub, Mode, OAUTH_CODE_LIFETIME, OAUTH_TOKENS_PER_GRANT, Permission,
    form_decode, form_encode,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A fake with a small cast:
/// - alice (tokens `alice-1`, `alice-2`) owns alice/dotfiles (private) and is admin of acme/Widgets;
/// - mia maintains, bob pushes, tina triages and carol pulls acme/Widgets (private);
/// - dave has no role anywhere; acme/Public-Lib is public.
async fn world() -> FakeGithub {
    let gh = FakeGithub::start().await;
    for (login, token) in [
        ("alice", "alice-1"),
        ("alice", "alice-2"),
        ("mia", "mia-1"),
        ("Bob", "bob-1"),
        ("tina", "tina-1"),
        ("carol", "carol-1"),
        ("dave", "dave-1"),
    ] {
        gh.add_user(login, token);
    }
    gh.add_repo("acme", "Widgets", true);
    gh.add_repo("acme", "Public-Lib", false);
    gh.add_repo("alice", "dotfiles", true);
    gh.grant("acme", "widgets", "alice", Permission::Admin);
    gh.grant("acme", "widgets", "mia", Permission::Maintain);
    gh.grant("ACME", "WIDGETS", "bob", Permission::Push);
    gh.grant("acme", "widgets", "tina", Permission::Triage);
    gh.grant("acme", "widgets", "carol", Permission::Pull);
    gh
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name).parse().unwrap()
    }
}

async fn get_with(gh: &FakeGithub, path: &str, headers: &[(&str, &str)]) -> Reply {
    try_get(&e2e::http(), gh, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn try_get(
    client: &reqwest::Client,
    gh: &FakeGithub,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, reqwest::Error> {
    let mut req = client
        .get(format!("{}{path}", gh.url))
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    Ok(Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        text: resp.text().await?,
    })
}

/// GET as the holder of `token` (`Bearer`), or anonymously.
async fn get(gh: &FakeGithub, path: &str, token: Option<&str>) -> Reply {
    match token {
        Some(t) => get_with(gh, path, &[("authorization", &format!("Bearer {t}"))]).await,
        None => get_with(gh, path, &[]).await,
    }
}

/// The error comes from the connection being reset or closed under the request.
fn is_reset(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        if e.to_string()
            .contains("connection closed before message completed")
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn url_is_a_loopback_base_without_trailing_slash() {
    let gh = FakeGithub::start().await;
    assert!(gh.url.starts_with("http://127.0.0.1:"), "{}", gh.url);
    assert!(!gh.url.ends_with('/'));
}

#[tokio::test]
async fn bearer_token_and_basic_schemes_authenticate() {
    let gh = world().await;
    for header in [
        "Bearer alice-1",
        "bearer alice-1",
        "token alice-1",
        "Token alice-2",
        // Basic with the token as password, as git and curl -u send it.
        "Basic YWxpY2U6YWxpY2UtMQ==",
    ] {
        let r = get_with(&gh, "/user", &[("authorization", header)]).await;
        assert_eq!(r.status, StatusCode::OK, "{header}: {}", r.text);
        assert_eq!(r.json()["login"], "alice", "{header}");
    }
}

#[tokio::test]
async fn unknown_and_revoked_tokens_get_bad_credentials() {
    let gh = world().await;
    let bad = json!({
        "message": "Bad credentials",
        "documentation_url": "https://docs.github.com/rest",
        "status": "401",
    });
    for path in ["/user", "/repos/acme/public-lib", "/nowhere"] {
        let r = get(&gh, path, Some("ghp_unknown")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.json(), bad, "{path}");
        assert!(r.header("content-type").starts_with("application/json"));
    }

    // Revoking one token leaves the user's other tokens working.
    assert_eq!(
        get(&gh, "/user", Some("alice-1")).await.status,
        StatusCode::OK
    );
    gh.revoke_token("alice-1");
    let r = get(&gh, "/user", Some("alice-1")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json(), bad);
    assert_eq!(
        get(&gh, "/user", Some("alice-2")).await.json()["login"],
        "alice"
    );
}

#[tokio::test]
async fn get_user_returns_the_authenticated_user() {
    let gh = world().await;
    let a1 = get(&gh, "/user", Some("alice-1")).await;
    assert_eq!(a1.status, StatusCode::OK);
    let a1 = a1.json();
    assert_eq!(a1["login"], "alice");
    assert_eq!(a1["type"], "User");
    assert_eq!(a1["html_url"], "https://github.com/alice");
    assert!(a1["id"].as_u64().unwrap() > 0);
    assert!(a1["node_id"].as_str().unwrap().starts_with("U_"));
    assert!(a1["name"].is_string());
    assert_eq!(a1["site_admin"], false);

    // The id is the user's, whatever the token, stable across fakes, and unique per user.
    let a2 = get(&gh, "/user", Some("alice-2")).await.json();
    assert_eq!(a2["id"], a1["id"]);
    let other = FakeGithub::start().await;
    other.add_user("alice", "t");
    assert_eq!(get(&other, "/user", Some("t")).await.json()["id"], a1["id"]);
    let dave = get(&gh, "/user", Some("dave-1")).await.json();
    assert_ne!(dave["id"], a1["id"]);

    // The login keeps the case it was created with.
    assert_eq!(
        get(&gh, "/user", Some("bob-1")).await.json()["login"],
        "Bob"
    );
}

#[tokio::test]
async fn get_user_anonymously_requires_authentication() {
    let gh = world().await;
    let r = get(&gh, "/user", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let body = r.json();
    assert_eq!(body["message"], "Requires authentication");
    assert_eq!(body["status"], "401");
    assert!(
        body["documentation_url"]
            .as_str()
            .unwrap()
            .starts_with("https://docs.github.com/")
    );
}

#[tokio::test]
async fn get_repo_matches_case_insensitively_and_answers_in_canonical_case() {
    let gh = world().await;
    for path in [
        "/repos/acme/Widgets",
        "/repos/acme/widgets",
        "/repos/ACME/WIDGETS",
    ] {
        let r = get(&gh, path, Some("alice-1")).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let repo = r.json();
        assert_eq!(repo["name"], "Widgets");
        assert_eq!(repo["full_name"], "acme/Widgets");
        assert_eq!(repo["owner"]["login"], "acme");
        assert_eq!(repo["html_url"], "https://github.com/acme/Widgets");
    }
    let repo = get(&gh, "/repos/acme/widgets", Some("alice-1"))
        .await
        .json();
    assert!(repo["id"].as_u64().unwrap() > 0);
    assert_eq!(repo["private"], true);
    assert_eq!(repo["visibility"], "private");
    // acme is no user: an organisation.
    assert_eq!(repo["owner"]["type"], "Organization");
    assert!(repo["owner"]["id"].as_u64().unwrap() > 0);

    let public = get(&gh, "/repos/Acme/public-lib", None).await;
    assert_eq!(public.status, StatusCode::OK);
    let public = public.json();
    assert_eq!(public["full_name"], "acme/Public-Lib");
    assert_eq!(public["private"], false);
    assert_eq!(public["visibility"], "public");
    assert_ne!(public["id"], repo["id"]);

    // A user's repository has a User owner with the user's id.
    let dotfiles = get(&gh, "/repos/alice/dotfiles", Some("alice-1"))
        .await
        .json();
    let alice = get(&gh, "/user", Some("alice-1")).await.json();
    assert_eq!(dotfiles["owner"]["type"], "User");
    assert_eq!(dotfiles["owner"]["id"], alice["id"]);
}

fn perms(admin: bool, maintain: bool, push: bool, triage: bool, pull: bool) -> Value {
    json!({ "admin": admin, "maintain": maintain, "push": push, "triage": triage, "pull": pull })
}

#[tokio::test]
async fn repo_permissions_follow_the_callers_role() {
    let gh = world().await;
    let cases = [
        ("alice-1", perms(true, true, true, true, true)),
        ("mia-1", perms(false, true, true, true, true)),
        ("bob-1", perms(false, false, true, true, true)),
        ("tina-1", perms(false, false, false, true, true)),
        ("carol-1", perms(false, false, false, false, true)),
    ];
    for (token, expected) in cases {
        let r = get(&gh, "/repos/acme/widgets", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "{token}");
        assert_eq!(r.json()["permissions"], expected, "{token}");
    }

    // Any authenticated user can pull a public repository.
    let r = get(&gh, "/repos/acme/public-lib", Some("dave-1")).await;
    assert_eq!(
        r.json()["permissions"],
        perms(false, false, false, false, true)
    );

    // The owner is admin of its own repositories without any grant.
    let r = get(&gh, "/repos/alice/dotfiles", Some("alice-2")).await;
    assert_eq!(r.json()["permissions"], perms(true, true, true, true, true));

    // Anonymous callers get no permissions object at all.
    let r = get(&gh, "/repos/acme/public-lib", None).await;
    assert!(r.json().get("permissions").is_none());

    // Grants change and can be taken away.
    gh.grant("acme", "widgets", "carol", Permission::Admin);
    let r = get(&gh, "/repos/acme/widgets", Some("carol-1")).await;
    assert_eq!(r.json()["permissions"]["admin"], true);
    gh.ungrant("acme", "widgets", "carol");
    assert_eq!(
        get(&gh, "/repos/acme/widgets", Some("carol-1"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn hidden_and_unknown_repos_are_not_found() {
    let gh = world().await;
    let cases = [
        // A private repository the caller has no role on is hidden.
        ("/repos/acme/widgets", Some("dave-1")),
        ("/repos/alice/dotfiles", Some("bob-1")),
        // ...and hidden from anonymous callers.
        ("/repos/acme/widgets", None),
        // Unknown repositories and owners.
        ("/repos/acme/nope", Some("alice-1")),
        ("/repos/nobody/widgets", None),
    ];
    for (path, token) in cases {
        let r = get(&gh, path, token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path} as {token:?}");
        let body = r.json();
        assert_eq!(body["message"], "Not Found");
        assert_eq!(body["status"], "404");
        assert!(
            body["documentation_url"]
                .as_str()
                .unwrap()
                .starts_with("https://docs.github.com/rest")
        );
        // Not cacheable: no ETag on errors.
        assert!(r.headers.get("etag").is_none());
    }
    // Deleted repositories disappear.
    gh.remove_repo("acme", "public-lib");
    assert_eq!(
        get(&gh, "/repos/acme/public-lib", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn collaborator_permission_reports_roles() {
    let gh = world().await;
    let cases = [
        ("alice", "admin", "admin"),
        ("mia", "write", "maintain"),
        ("bob", "write", "write"),
        ("BOB", "write", "write"),
        ("tina", "read", "triage"),
        ("carol", "read", "read"),
        ("dave", "none", "none"),
    ];
    for (user, permission, role_name) in cases {
        for caller in ["alice-1", "bob-1"] {
            let r = get(
                &gh,
                &format!("/repos/ACME/widgets/collaborators/{user}/permission"),
                Some(caller),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{user} as {caller}: {}", r.text);
            let body = r.json();
            assert_eq!(body["permission"], permission, "{user}");
            assert_eq!(body["role_name"], role_name, "{user}");
            assert_eq!(
                body["user"]["login"].as_str().unwrap().to_lowercase(),
                user.to_lowercase()
            );
            assert_eq!(body["user"]["type"], "User");
            assert!(body["user"]["id"].as_u64().is_some());
        }
    }
    // On a public repository, a user without a role can still read.
    gh.grant("acme", "public-lib", "alice", Permission::Admin);
    let r = get(
        &gh,
        "/repos/acme/public-lib/collaborators/dave/permission",
        Some("alice-1"),
    )
    .await;
    assert_eq!(r.json()["permission"], "read");
    // The owner is admin.
    let r = get(
        &gh,
        "/repos/alice/dotfiles/collaborators/alice/permission",
        Some("alice-1"),
    )
    .await;
    assert_eq!(r.json()["role_name"], "admin");
}

#[tokio::test]
async fn collaborator_permission_needs_push_and_visibility() {
    let gh = world().await;
    let path = "/repos/acme/widgets/collaborators/alice/permission";
    // Triage and pull are not enough.
    for caller in ["tina-1", "carol-1"] {
        let r = get(&gh, path, Some(caller)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{caller}");
        let body = r.json();
        assert_eq!(
            body["message"],
            "Must have push access to view collaborator permission."
        );
        assert_eq!(body["status"], "403");
        assert!(body["documentation_url"].is_string());
    }
    // Nor is the implicit read on a public repository.
    let r = get(
        &gh,
        "/repos/acme/public-lib/collaborators/alice/permission",
        Some("dave-1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A repository the caller cannot see is 404, not 403.
    for token in [Some("dave-1"), None] {
        let r = get(&gh, path, token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{token:?}");
        assert_eq!(r.json()["message"], "Not Found");
    }
    // Unknown users are 404.
    let r = get(
        &gh,
        "/repos/acme/widgets/collaborators/nobody/permission",
        Some("alice-1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rate_limit_headers_count_per_token() {
    let gh = world().await;
    let before = now();
    let r1 = get(&gh, "/user", Some("alice-1")).await;
    assert_eq!(r1.header("x-ratelimit-limit"), "5000");
    assert_eq!(r1.header("x-ratelimit-remaining"), "4999");
    assert_eq!(r1.header("x-ratelimit-used"), "1");
    assert_eq!(r1.header("x-ratelimit-resource"), "core");
    let reset = r1.number("x-ratelimit-reset");
    assert!(reset > before && reset <= before + 3601, "{reset}");

    // Errors count too.
    let r2 = get(&gh, "/repos/acme/nope", Some("alice-1")).await;
    assert_eq!(r2.status, StatusCode::NOT_FOUND);
    assert_eq!(r2.header("x-ratelimit-remaining"), "4998");
    assert_eq!(r2.header("x-ratelimit-used"), "2");
    assert_eq!(r2.number("x-ratelimit-reset"), reset);

    // Each token has its own count, even for the same user.
    let other = get(&gh, "/user", Some("alice-2")).await;
    assert_eq!(other.header("x-ratelimit-remaining"), "4999");
    assert_eq!(gh.remaining("alice-1"), 4998);

    // Anonymous callers share a bucket of 60; bad credentials count against it.
    let anon = get(&gh, "/repos/acme/public-lib", None).await;
    assert_eq!(anon.header("x-ratelimit-limit"), "60");
    assert_eq!(anon.header("x-ratelimit-remaining"), "59");
    assert_eq!(anon.header("x-ratelimit-resource"), "core");
    let bad = get(&gh, "/user", Some("nope")).await;
    assert_eq!(bad.header("x-ratelimit-limit"), "60");
    assert_eq!(bad.header("x-ratelimit-remaining"), "58");

    // Every response carries them, including unknown paths and every failure mode.
    assert_eq!(
        get(&gh, "/nowhere", Some("bob-1"))
            .await
            .header("x-ratelimit-limit"),
        "5000"
    );
    for mode in [
        Mode::RateLimited,
        Mode::SecondaryRateLimit,
        Mode::ServerError,
    ] {
        gh.set_mode(mode);
        let r = get(&gh, "/user", Some("bob-1")).await;
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-used",
            "x-ratelimit-reset",
            "x-ratelimit-resource",
        ] {
            assert!(r.headers.contains_key(h), "{mode:?} lacks {h}");
        }
    }

    // GET /rate_limit reports the bucket without spending it.
    gh.set_mode(Mode::Normal);
    let r = get(&gh, "/rate_limit", Some("alice-1")).await;
    assert_eq!(r.status, StatusCode::OK);
    let core = &r.json()["resources"]["core"];
    assert_eq!(core["limit"], 5000);
    assert_eq!(core["remaining"], 4998);
    assert_eq!(gh.remaining("alice-1"), 4998);
}

#[tokio::test]
async fn responses_carry_github_caching_headers() {
    let gh = world().await;
    let r = get(&gh, "/repos/acme/widgets", Some("bob-1")).await;
    let etag = r.header("etag");
    assert!(
        etag.len() == 66 && etag.starts_with('"') && etag.ends_with('"'),
        "a strong, quoted ETag: {etag}"
    );
    assert_eq!(
        r.header("cache-control"),
        "private, max-age=60, s-maxage=60"
    );
    assert_eq!(
        r.header("vary"),
        "Accept, Authorization, Cookie, X-GitHub-OTP"
    );
    assert!(r.header("content-type").starts_with("application/json"));
    assert_eq!(r.header("x-github-media-type"), "github.v3; format=json");
    assert!(!r.header("x-github-request-id").is_empty());

    // The same body has the same ETag.
    let again = get(&gh, "/repos/acme/widgets", Some("bob-1")).await;
    assert_eq!(again.header("etag"), etag);

    // Anonymous responses are publicly cacheable, as on GitHub.
    let anon = get(&gh, "/repos/acme/public-lib", None).await;
    assert_eq!(
        anon.header("cache-control"),
        "public, max-age=60, s-maxage=60"
    );
}

#[tokio::test]
async fn if_none_match_gives_304_without_spending_the_rate_limit() {
    let gh = world().await;
    let first = get(&gh, "/repos/acme/widgets", Some("bob-1")).await;
    let etag = first.header("etag").to_string();
    assert_eq!(first.header("x-ratelimit-remaining"), "4999");
    gh.reset_calls();

    for if_none_match in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
        let r = get_with(
            &gh,
            "/repos/ACME/widgets",
            &[
                ("authorization", "token bob-1"),
                ("if-none-match", &if_none_match),
            ],
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{if_none_match}");
        assert!(r.text.is_empty());
        assert_eq!(r.header("etag"), etag);
        assert_eq!(r.header("x-ratelimit-remaining"), "4999");
        assert_eq!(r.header("x-ratelimit-used"), "1");
    }
    assert_eq!(gh.remaining("bob-1"), 4999);
    // ...but they are calls.
    assert_eq!(gh.calls(), 3);
    assert_eq!(gh.calls_to("/repos/ACME/widgets"), 3);

    // A stale ETag gets the full answer, and that counts.
    let r = get_with(
        &gh,
        "/repos/acme/widgets",
        &[
            ("authorization", "token bob-1"),
            ("if-none-match", "\"stale\""),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-ratelimit-remaining"), "4998");

    // The ETag changes when the body does.
    gh.grant("acme", "widgets", "bob", Permission::Admin);
    let r = get_with(
        &gh,
        "/repos/acme/widgets",
        &[("authorization", "token bob-1"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.header("etag"), etag);
    assert_eq!(r.json()["permissions"]["admin"], true);
}

#[tokio::test]
async fn etags_differ_per_caller_when_permissions_differ() {
    let gh = world().await;
    let bob = get(&gh, "/repos/acme/widgets", Some("bob-1")).await;
    let carol = get(&gh, "/repos/acme/widgets", Some("carol-1")).await;
    assert_ne!(bob.header("etag"), carol.header("etag"));
    // Carol presenting Bob's ETag gets her own full answer.
    let r = get_with(
        &gh,
        "/repos/acme/widgets",
        &[
            ("authorization", "Bearer carol-1"),
            ("if-none-match", bob.header("etag")),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["permissions"]["push"], false);
    // Anonymous and authenticated bodies differ too (no permissions object).
    let anon = get(&gh, "/repos/acme/public-lib", None).await;
    let dave = get(&gh, "/repos/acme/public-lib", Some("dave-1")).await;
    assert_ne!(anon.header("etag"), dave.header("etag"));
}

#[tokio::test]
async fn unreachable_resets_connections_without_a_response() {
    let gh = world().await;
    let client = e2e::http();
    // A pooled keep-alive connection from before the outage...
    let ok = try_get(
        &client,
        &gh,
        "/user",
        &[("authorization", "Bearer alice-1")],
    )
    .await
    .unwrap();
    assert_eq!(ok.status, StatusCode::OK);

    gh.set_mode(Mode::Unreachable);
    gh.reset_calls();
    // ...and fresh connections both fail at the transport level: no status at all.
    for client in [client.clone(), e2e::http()] {
        let err = try_get(
            &client,
            &gh,
            "/repos/acme/widgets",
            &[("authorization", "Bearer alice-1")],
        )
        .await
        .expect_err("no HTTP response while unreachable");
        assert!(err.status().is_none(), "{err:?}");
        assert!(!err.is_timeout(), "{err:?}");
        assert!(err.is_request() || err.is_connect(), "{err:?}");
        assert!(is_reset(&err), "a reset connection: {err:?}");
    }
    // The attempts are still counted, with their tokens.
    assert_eq!(gh.calls(), 2);
    assert_eq!(gh.calls_to("/repos/acme/widgets"), 2);
    assert_eq!(gh.tokens_seen(), vec!["alice-1", "alice-1"]);

    // It comes back.
    gh.set_mode(Mode::Normal);
    let r = try_get(
        &client,
        &gh,
        "/user",
        &[("authorization", "Bearer alice-1")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn rate_limited_mode_answers_like_an_exhausted_primary_limit() {
    let gh = world().await;
    gh.set_mode(Mode::RateLimited);
    let before = now();
    for path in ["/user", "/repos/acme/widgets", "/nowhere"] {
        let r = get(&gh, path, Some("alice-1")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        let body = r.json();
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("API rate limit exceeded for user ID "),
            "{message}"
        );
        assert_eq!(
            body["documentation_url"],
            "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
        );
        assert_eq!(r.header("x-ratelimit-remaining"), "0");
        assert_eq!(r.header("x-ratelimit-used"), "5000");
        assert_eq!(r.header("x-ratelimit-limit"), "5000");
        assert!(r.number("x-ratelimit-reset") > before);
    }

    // Anonymous callers get the anonymous variant.
    let anon = get(&gh, "/repos/acme/public-lib", None).await;
    assert_eq!(anon.status, StatusCode::FORBIDDEN);
    assert!(
        anon.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("API rate limit exceeded for ")
    );
    assert_eq!(anon.header("x-ratelimit-limit"), "60");
    assert_eq!(anon.header("x-ratelimit-remaining"), "0");

    gh.set_mode(Mode::Normal);
    let r = get(&gh, "/user", Some("alice-1")).await;
    assert_eq!(r.status, StatusCode::OK);
    // The forced outage did not spend the real bucket.
    assert_eq!(r.header("x-ratelimit-remaining"), "4999");
}

#[tokio::test]
async fn exhausting_a_token_gives_the_rate_limit_response_naturally() {
    let gh = world().await;
    let alice_id = get(&gh, "/user", Some("alice-1")).await.json()["id"].clone();
    gh.set_remaining("alice-1", 1);
    let last = get(&gh, "/user", Some("alice-1")).await;
    assert_eq!(last.status, StatusCode::OK);
    assert_eq!(last.header("x-ratelimit-remaining"), "0");
    assert_eq!(last.header("x-ratelimit-used"), "5000");

    let r = get(&gh, "/repos/acme/widgets", Some("alice-1")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.json()["message"].as_str().unwrap(),
        format!(
            "API rate limit exceeded for user ID {alice_id}. If you reach out to GitHub Support for help, please include the request ID {}.",
            r.header("x-github-request-id")
        )
    );
    assert_eq!(r.header("x-ratelimit-remaining"), "0");
    assert!(r.number("x-ratelimit-reset") > now());
    assert_eq!(gh.remaining("alice-1"), 0);

    // Other tokens, even the same user's, are unaffected.
    assert_eq!(
        get(&gh, "/user", Some("alice-2")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gh, "/user", Some("bob-1")).await.status,
        StatusCode::OK
    );

    // Anonymous callers run out after 60.
    gh.set_anonymous_remaining(0);
    let anon = get(&gh, "/repos/acme/public-lib", None).await;
    assert_eq!(anon.status, StatusCode::FORBIDDEN);
    assert_eq!(anon.header("x-ratelimit-limit"), "60");

    // Refilled, it works again.
    gh.set_remaining("alice-1", 10);
    let r = get(&gh, "/user", Some("alice-1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-ratelimit-remaining"), "9");
}

#[tokio::test]
async fn secondary_rate_limit_mode_answers_429_with_retry_after() {
    let gh = world().await;
    gh.set_mode(Mode::SecondaryRateLimit);
    for token in [Some("alice-1"), None] {
        for path in ["/user", "/repos/acme/widgets/collaborators/bob/permission"] {
            let r = get(&gh, path, token).await;
            assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
            assert_eq!(r.header("retry-after"), "60");
            let body = r.json();
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("You have exceeded a secondary rate limit"),
                "{body}"
            );
            assert!(
                body["documentation_url"]
                    .as_str()
                    .unwrap()
                    .contains("secondary")
            );
            // Unlike the primary limit, the primary bucket is not empty.
            assert_ne!(r.header("x-ratelimit-remaining"), "0");
        }
    }
}

#[tokio::test]
async fn server_error_mode_answers_502() {
    let gh = world().await;
    gh.set_mode(Mode::ServerError);
    for (path, token) in [("/user", Some("alice-1")), ("/repos/acme/public-lib", None)] {
        let r = get(&gh, path, token).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert_eq!(r.json(), json!({ "message": "Server Error" }));
        assert!(r.headers.get("etag").is_none());
    }
    gh.set_mode(Mode::Normal);
    assert_eq!(
        get(&gh, "/user", Some("alice-1")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_are_not_found() {
    let gh = world().await;
    for (path, token) in [
        ("/", None),
        ("/nowhere", Some("alice-1")),
        ("/repos/acme", Some("alice-1")),
        ("/repos/acme/widgets/branches", Some("alice-1")),
        ("/user/", Some("alice-1")),
    ] {
        let r = get(&gh, path, token).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            r.json(),
            json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest",
                "status": "404",
            })
        );
    }
    let r = e2e::http()
        .delete(format!("{}/repos/acme/widgets", gh.url))
        .bearer_auth("alice-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_request_is_counted_and_its_token_recorded() {
    let gh = world().await;
    get(&gh, "/user", Some("alice-1")).await; // 200
    get(&gh, "/user", Some("ghp_leaked")).await; // 401
    get(&gh, "/repos/acme/widgets", None).await; // 404
    let etag = get(&gh, "/repos/acme/widgets", Some("bob-1")).await; // 200
    get_with(
        &gh,
        "/repos/acme/widgets",
        &[
            ("authorization", "token bob-1"),
            ("if-none-match", etag.header("etag")),
        ],
    )
    .await; // 304
    gh.set_mode(Mode::RateLimited);
    get(
        &gh,
        "/repos/acme/widgets/collaborators/x/permission",
        Some("mia-1"),
    )
    .await; // 403
    gh.set_mode(Mode::SecondaryRateLimit);
    get(&gh, "/user", Some("tina-1")).await; // 429
    gh.set_mode(Mode::ServerError);
    get(&gh, "/user", Some("carol-1")).await; // 502
    gh.set_mode(Mode::Unreachable);
    let _ = try_get(
        &e2e::http(),
        &gh,
        "/user",
        &[("authorization", "Bearer dave-1")],
    )
    .await
    .unwrap_err();

    assert_eq!(gh.calls(), 9);
    assert_eq!(gh.calls_to("/user"), 5);
    assert_eq!(gh.calls_to("/repos/"), 4);
    assert_eq!(gh.calls_to("/repos/acme/widgets/collaborators/"), 1);
    assert_eq!(gh.calls_to("/nothing"), 0);
    assert_eq!(
        gh.paths(),
        vec![
            "/user",
            "/user",
            "/repos/acme/widgets",
            "/repos/acme/widgets",
            "/repos/acme/widgets",
            "/repos/acme/widgets/collaborators/x/permission",
            "/user",
            "/user",
            "/user",
        ]
    );
    assert_eq!(
        gh.tokens_seen(),
        vec![
            "alice-1",
            "ghp_leaked",
            "bob-1",
            "bob-1",
            "mia-1",
            "tina-1",
            "carol-1",
            "dave-1"
        ]
    );

    gh.reset_calls();
    assert_eq!(gh.calls(), 0);
    assert_eq!(gh.calls_to("/"), 0);
    assert!(gh.tokens_seen().is_empty());
    gh.set_mode(Mode::Normal);
    get(&gh, "/user", Some("alice-1")).await;
    assert_eq!(gh.calls(), 1);
}

#[tokio::test]
async fn delay_holds_answers_back() {
    let gh = world().await;
    gh.set_delay(std::time::Duration::from_millis(300));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let err = try_get(
        &client,
        &gh,
        "/user",
        &[("authorization", "Bearer alice-1")],
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(gh.calls(), 1);
    gh.set_delay(std::time::Duration::ZERO);
    assert_eq!(
        get(&gh, "/user", Some("alice-1")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn answers_while_the_tests_runtime_is_blocked() {
    // A current-thread test that blocks (as when it runs npm synchronously) must not starve the
    // fake, or the registry process would time out talking to it.
    let gh = world().await;
    let url = format!("{}/user", gh.url);
    let status = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            e2e::http()
                .get(url)
                .bearer_auth("alice-1")
                .send()
                .await
                .unwrap()
                .status()
        })
    })
    .join()
    .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn dropping_the_fake_stops_it() {
    let gh = FakeGithub::start().await;
    let url = gh.url.clone();
    assert_eq!(
        e2e::http()
            .get(format!("{url}/user"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    drop(gh);
    let mut refused = false;
    for _ in 0..50 {
        match e2e::http().get(format!("{url}/user")).send().await {
            Err(e) if e.is_connect() => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "connections are refused once the fake is dropped");
}

// --- The OAuth web application flow. ---

const CLIENT_ID: &str = "Iv1.8a61f9b3a7aba766";
const CLIENT_SECRET: &str = "1b3c5e7a9d1f3b5c7e9a1d3f5b7c9e1a3d5f7b9c";
/// Where nothing listens: the fake only redirects there (the test client follows no redirect).
const CALLBACK: &str = "http://127.0.0.1:9/-/web/callback";

/// The small cast plus one OAuth app, with alice signed in to github.com.
async fn oauth_world() -> FakeGithub {
    let gh = world().await;
    gh.add_oauth_app(CLIENT_ID, CLIENT_SECRET, CALLBACK);
    gh.oauth_sign_in("alice");
    gh
}

/// `GET /login/oauth/authorize` with `params`.
async fn authorize(gh: &FakeGithub, params: &[(&str, &str)]) -> Reply {
    let resp = e2e::http()
        .get(format!(
            "{}/login/oauth/authorize?{}",
            gh.web_url(),
            form_encode(params)
        ))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap(),
    }
}

/// A redirect's target: the URL before `?` and its query parameters.
fn redirected(r: &Reply) -> (String, Vec<(String, String)>) {
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let location = r.header("location");
    let (base, query) = location.split_once('?').unwrap_or((location, ""));
    (base.to_string(), form_decode(query))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A code for alice, for `CALLBACK`, with `scope`.
async fn code(gh: &FakeGithub, scope: &str) -> String {
    let r = authorize(
        gh,
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", CALLBACK),
            ("scope", scope),
            ("state", "s"),
        ],
    )
    .await;
    let (_, params) = redirected(&r);
    param(&params, "code").expect("a code").to_string()
}

/// `POST /login/oauth/access_token` with a form body and `accept` (none if empty).
async fn exchange(gh: &FakeGithub, accept: &str, params: &[(&str, &str)]) -> Reply {
    let mut req = e2e::http()
        .post(format!("{}/login/oauth/access_token", gh.web_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(params));
    if !accept.is_empty() {
        req = req.header("accept", accept);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap(),
    }
}

/// The JSON answer to exchanging `code` with the right credentials.
async fn exchange_json(gh: &FakeGithub, code: &str) -> Value {
    let r = exchange(
        gh,
        "application/json",
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()
}

fn bad_code() -> Value {
    json!({
        "error": "bad_verification_code",
        "error_description": "The code passed is incorrect or expired.",
        "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code",
    })
}

#[tokio::test]
async fn oauth_authorize_redirects_back_with_a_code_and_the_state() {
    let gh = oauth_world().await;
    assert_eq!(gh.web_url(), gh.url);
    // A state with characters that need encoding comes back exactly.
    let state = "a b&c=d/é+%";
    let r = authorize(
        &gh,
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", CALLBACK),
            ("scope", "repo read:org"),
            ("state", state),
            ("login", "alice"),
            ("allow_signup", "false"),
        ],
    )
    .await;
    assert_eq!(r.header("server"), "GitHub.com");
    assert!(r.text.contains("redirected"), "{}", r.text);
    let (base, params) = redirected(&r);
    assert_eq!(base, CALLBACK);
    let code = param(&params, "code").unwrap();
    assert_eq!(code.len(), 20);
    assert!(code.chars().all(|c| c.is_ascii_hexdigit()), "{code}");
    assert_eq!(param(&params, "state"), Some(state));
    assert_eq!(params.len(), 2, "{params:?}");

    // What the app sent is recorded, and counted.
    assert_eq!(gh.oauth_authorize_hits(), 1);
    let request = &gh.oauth_authorize_requests()[0];
    assert_eq!(request.get("client_id"), Some(CLIENT_ID));
    assert_eq!(request.get("redirect_uri"), Some(CALLBACK));
    assert_eq!(request.get("scope"), Some("repo read:org"));
    assert_eq!(request.get("state"), Some(state));
    assert_eq!(request.get("login"), Some("alice"));
    assert_eq!(request.get("allow_signup"), Some("false"));
    assert_eq!(gh.oauth_exchanges(), 0);
    assert_eq!(gh.calls_to("/login/oauth/authorize"), 1);

    // Without a redirect_uri, back to the registered callback; without a state, none.
    let r = authorize(&gh, &[("client_id", CLIENT_ID)]).await;
    let (base, params) = redirected(&r);
    assert_eq!(base, CALLBACK);
    assert_eq!(param(&params, "state"), None);
    assert!(param(&params, "code").is_some());
}

#[tokio::test]
async fn oauth_code_exchange_gives_the_users_token_in_form_encoding_by_default() {
    let gh = oauth_world().await;
    let code = code(&gh, "repo read:org").await;
    let r = exchange(
        &gh,
        "",
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .starts_with("application/x-www-form-urlencoded"),
        "{:?}",
        r.headers
    );
    let answer = form_decode(&r.text);
    let names: Vec<&str> = answer.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["access_token", "scope", "token_type"], "{}", r.text);
    // Scopes come back comma-separated (and so encoded: `repo%2Cread%3Aorg`).
    assert!(r.text.contains("scope=repo%2Cread%3Aorg"), "{}", r.text);
    assert_eq!(param(&answer, "token_type"), Some("bearer"));
    let token = param(&answer, "access_token").unwrap().to_string();
    assert!(token.starts_with("gho_") && token.len() == 40, "{token}");

    // The API takes it as alice's OAuth token with those scopes.
    let user = get(&gh, "/user", Some(&token)).await;
    assert_eq!(user.status, StatusCode::OK);
    assert_eq!(user.json()["login"], "alice");
    assert_eq!(user.header("x-oauth-scopes"), "repo, read:org");
    let repo = get(&gh, "/repos/acme/widgets", Some(&token)).await;
    assert_eq!(repo.status, StatusCode::OK);
    assert_eq!(repo.json()["permissions"]["admin"], true);

    assert_eq!(gh.oauth_exchanges(), 1);
    let issued = gh.oauth_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].token, token);
    assert_eq!(issued[0].login, "alice");
    assert_eq!(issued[0].client_id, CLIENT_ID);
    assert_eq!(issued[0].scopes, ["repo", "read:org"]);
}

#[tokio::test]
async fn oauth_code_exchange_answers_json_or_xml_as_accepted_and_takes_json_or_query() {
    let gh = oauth_world().await;

    // A JSON body, a JSON answer.
    let code1 = code(&gh, "repo").await;
    let resp = e2e::http()
        .post(format!("{}/login/oauth/access_token", gh.web_url()))
        .header("accept", "application/json")
        .json(&json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "code": code1,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["scope"], "repo");
    assert_eq!(body["token_type"], "bearer");
    assert!(body["access_token"].as_str().unwrap().starts_with("gho_"));
    assert_eq!(body.as_object().unwrap().len(), 3);

    // Parameters in the query string, an XML answer.
    let code2 = code(&gh, "").await;
    let resp = e2e::http()
        .post(format!(
            "{}/login/oauth/access_token?{}",
            gh.web_url(),
            form_encode(&[
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("code", &code2),
            ])
        ))
        .header("accept", "application/xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/xml")
    );
    let xml = resp.text().await.unwrap();
    assert!(xml.starts_with("<OAuth><access_token>gho_"), "{xml}");
    assert!(
        xml.ends_with("</access_token><scope></scope><token_type>bearer</token_type></OAuth>"),
        "{xml}"
    );

    // Errors follow Accept too.
    let r = exchange(
        &gh,
        "application/json",
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", "nope"),
        ],
    )
    .await;
    assert_eq!(r.json(), bad_code());
    let r = exchange(
        &gh,
        "",
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", "nope"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let form = form_decode(&r.text);
    assert_eq!(param(&form, "error"), Some("bad_verification_code"));
    assert_eq!(
        param(&form, "error_description"),
        Some("The code passed is incorrect or expired.")
    );
    assert!(param(&form, "error_uri").is_some());
}

#[tokio::test]
async fn oauth_codes_are_single_use_and_expire_after_ten_minutes() {
    let gh = oauth_world().await;
    let code1 = code(&gh, "repo").await;
    assert!(
        exchange_json(&gh, &code1).await["access_token"]
            .as_str()
            .is_some()
    );
    assert_eq!(exchange_json(&gh, &code1).await, bad_code());

    // Just short of ten minutes: good; at ten: expired.
    let code2 = code(&gh, "repo").await;
    let code3 = code(&gh, "repo").await;
    gh.advance_oauth_clock(
        OAUTH_CODE_LIFETIME
            .checked_sub(std::time::Duration::from_secs(5))
            .unwrap(),
    );
    assert!(exchange_json(&gh, &code2).await["access_token"].is_string());
    gh.advance_oauth_clock(std::time::Duration::from_secs(5));
    assert_eq!(exchange_json(&gh, &code3).await, bad_code());
    assert_eq!(gh.oauth_exchanges(), 4);
    assert_eq!(gh.oauth_tokens().len(), 2);
}

#[tokio::test]
async fn oauth_exchange_errors_come_with_http_200() {
    let gh = oauth_world().await;
    gh.add_oauth_app("other-app", "other-secret", "http://127.0.0.1:9/other");
    let code = code(&gh, "repo").await;
    let credentials = json!({
        "error": "incorrect_client_credentials",
        "error_description": "The client_id and/or client_secret passed are incorrect.",
        "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials",
    });
    for (client_id, secret) in [
        (CLIENT_ID, "wrong"),
        (CLIENT_ID, ""),
        ("unknown", CLIENT_SECRET),
        ("", ""),
    ] {
        let mut params = vec![("client_id", client_id), ("code", code.as_str())];
        if !secret.is_empty() {
            params.push(("client_secret", secret));
        }
        let r = exchange(&gh, "application/json", &params).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json(), credentials, "{client_id} {secret}");
    }
    // Another app's credentials with this app's code: a bad code for that app.
    let r = exchange(
        &gh,
        "application/json",
        &[
            ("client_id", "other-app"),
            ("client_secret", "other-secret"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(r.json(), bad_code());
    // A redirect_uri other than the one the code was issued for.
    let r = exchange(
        &gh,
        "application/json",
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/-/web/callback/other"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({
            "error": "redirect_uri_mismatch",
            "error_description": "The redirect_uri MUST match the registered callback URL for this application.",
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#redirect-uri-mismatch2",
        })
    );
    assert!(gh.oauth_tokens().is_empty());
    // GET is not how tokens are asked for.
    let r = get_with(&gh, "/login/oauth/access_token", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oauth_redirect_uris_follow_githubs_rules() {
    let gh = oauth_world().await;
    // The examples of "Redirect URLs" in "Authorizing OAuth apps".
    gh.add_oauth_app("docs-app", "secret", "http://example.com/path");
    let good = [
        "http://example.com/path",
        "http://example.com/path/subdir/other",
        "http://oauth.example.com/path",
        "http://oauth.example.com/path/subdir/other",
    ];
    let bad = [
        "http://example.com/bar",
        "http://example.com/",
        "http://example.com:8080/path",
        "http://oauth.example.com:8080/path",
        "http://example.org",
        // Not below the path, only beside it; another scheme; not a URL.
        "http://example.com/pathology",
        "https://example.com/path",
        "example.com/path",
    ];
    // The loopback exception: any port for a callback on 127.0.0.1.
    gh.add_oauth_app("loopback-app", "secret", "http://127.0.0.1/path");
    let loopback_good = [
        "http://127.0.0.1:1234/path",
        "http://127.0.0.1/path/x",
        "http://127.0.0.1:80/path",
    ];
    let loopback_bad = ["http://127.0.0.1:1234/other", "http://localhost:1234/path"];
    let cases = good
        .iter()
        .map(|u| ("docs-app", *u, true))
        .chain(bad.iter().map(|u| ("docs-app", *u, false)))
        .chain(loopback_good.iter().map(|u| ("loopback-app", *u, true)))
        .chain(loopback_bad.iter().map(|u| ("loopback-app", *u, false)));
    for (app, redirect_uri, ok) in cases {
        let r = authorize(
            &gh,
            &[
                ("client_id", app),
                ("redirect_uri", redirect_uri),
                ("state", "xyz"),
            ],
        )
        .await;
        let (base, params) = redirected(&r);
        if ok {
            assert_eq!(base, redirect_uri);
            assert!(param(&params, "code").is_some(), "{redirect_uri}");
        } else {
            let callback = if app == "docs-app" {
                "http://example.com/path"
            } else {
                "http://127.0.0.1/path"
            };
            assert_eq!(base, callback, "{redirect_uri}");
            assert_eq!(
                params,
                [
                    ("error".to_string(), "redirect_uri_mismatch".to_string()),
                    (
                        "error_description".to_string(),
                        "The redirect_uri MUST match the registered callback URL for this application.".to_string()
                    ),
                    (
                        "error_uri".to_string(),
                        "/apps/building-integrations/setting-up-and-registering-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch".to_string()
                    ),
                    ("state".to_string(), "xyz".to_string()),
                ],
                "{redirect_uri}"
            );
        }
    }
    // A redirect URI with a query keeps it.
    let r = authorize(
        &gh,
        &[
            ("client_id", "docs-app"),
            ("redirect_uri", "http://example.com/path/cb?next=%2Fhome"),
            ("state", "s"),
        ],
    )
    .await;
    let location = r.header("location");
    assert!(
        location.starts_with("http://example.com/path/cb?next=%2Fhome&code="),
        "{location}"
    );
}

#[tokio::test]
async fn oauth_unknown_client_gets_githubs_404_page() {
    let gh = oauth_world().await;
    for params in [
        vec![("client_id", "unknown"), ("redirect_uri", CALLBACK)],
        vec![("redirect_uri", CALLBACK)],
    ] {
        let r = authorize(&gh, &params).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.header("content-type").starts_with("text/html"));
        assert!(r.headers.get("location").is_none());
    }
    assert_eq!(gh.oauth_authorize_hits(), 2);
}

#[tokio::test]
async fn oauth_denial_and_suspension_redirect_with_errors() {
    let gh = oauth_world().await;
    gh.set_oauth_consent(Consent::Deny);
    let r = authorize(
        &gh,
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", CALLBACK),
            ("scope", "repo"),
            ("state", "xyz"),
        ],
    )
    .await;
    let (base, params) = redirected(&r);
    assert_eq!(base, CALLBACK);
    assert_eq!(param(&params, "error"), Some("access_denied"));
    assert_eq!(
        param(&params, "error_description"),
        Some("The user has denied your application access.")
    );
    assert!(
        param(&params, "error_uri")
            .unwrap()
            .ends_with("#access-denied")
    );
    assert_eq!(param(&params, "state"), Some("xyz"));
    assert_eq!(param(&params, "code"), None);

    gh.set_oauth_consent(Consent::Approve);
    gh.suspend_oauth_app(CLIENT_ID);
    let r = authorize(
        &gh,
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", CALLBACK),
            ("state", "xyz"),
        ],
    )
    .await;
    let (base, params) = redirected(&r);
    assert_eq!(base, CALLBACK);
    assert_eq!(param(&params, "error"), Some("application_suspended"));
    assert_eq!(
        param(&params, "error_description"),
        Some("Your application has been suspended. Contact support@github.com.")
    );
    assert_eq!(param(&params, "state"), Some("xyz"));
}

#[tokio::test]
async fn oauth_signed_out_browser_is_sent_to_the_sign_in_page() {
    let gh = oauth_world().await;
    gh.oauth_sign_out();
    let r = authorize(
        &gh,
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", CALLBACK),
            ("state", "xyz"),
        ],
    )
    .await;
    let (base, params) = redirected(&r);
    assert_eq!(base, format!("{}/login", gh.web_url()));
    assert_eq!(param(&params, "client_id"), Some(CLIENT_ID));
    let return_to = param(&params, "return_to").unwrap();
    assert!(
        return_to.starts_with("/login/oauth/authorize?"),
        "{return_to}"
    );
    let page = get_with(&gh, "/login", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Sign in to GitHub"));

    // Signing in as someone new adds them.
    gh.oauth_sign_in("Erin");
    let code = code(&gh, "").await;
    let token = exchange_json(&gh, &code).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&gh, "/user", Some(&token)).await.json()["login"],
        "Erin"
    );
}

#[tokio::test]
async fn oauth_scopes_are_granted_normalised_and_remembered() {
    let gh = oauth_world().await;
    let scope_of = |v: Value| v["scope"].as_str().unwrap().to_string();

    // Implied scopes are dropped; commas separate as well as spaces.
    let c = code(&gh, "user,gist user:email repo public_repo").await;
    assert_eq!(scope_of(exchange_json(&gh, &c).await), "user,gist,repo");

    // The user grants less than asked: no private repository for this token.
    gh.oauth_sign_in("carol");
    gh.set_oauth_consent(Consent::ApproveOnly(vec!["read:org".into()]));
    let c = code(&gh, "repo read:org").await;
    let answer = exchange_json(&gh, &c).await;
    assert_eq!(scope_of(answer.clone()), "read:org");
    let token = answer["access_token"].as_str().unwrap();
    let r = get(&gh, "/repos/acme/widgets", Some(token)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("x-oauth-scopes"), "read:org");

    // Without `scope`: what the user authorized the app before (here `read:org`).
    gh.set_oauth_consent(Consent::Approve);
    let r = authorize(&gh, &[("client_id", CLIENT_ID)]).await;
    let (_, params) = redirected(&r);
    let c = param(&params, "code").unwrap().to_string();
    assert_eq!(scope_of(exchange_json(&gh, &c).await), "read:org");
    // And nothing for a user who never authorized it.
    gh.oauth_sign_in("dave");
    let r = authorize(&gh, &[("client_id", CLIENT_ID)]).await;
    let (_, params) = redirected(&r);
    let c = param(&params, "code").unwrap().to_string();
    let answer = exchange_json(&gh, &c).await;
    assert_eq!(scope_of(answer.clone()), "");
    let token = answer["access_token"].as_str().unwrap();
    assert_eq!(
        get(&gh, "/user", Some(token))
            .await
            .header("x-oauth-scopes"),
        ""
    );
}

#[tokio::test]
async fn oauth_eleventh_token_for_one_grant_revokes_the_oldest() {
    let gh = oauth_world().await;
    let mut tokens = Vec::new();
    for _ in 0..=OAUTH_TOKENS_PER_GRANT {
        let c = code(&gh, "repo").await;
        tokens.push(
            exchange_json(&gh, &c).await["access_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        get(&gh, "/user", Some(&tokens[0])).await.status,
        StatusCode::UNAUTHORIZED
    );
    for token in &tokens[1..] {
        assert_eq!(get(&gh, "/user", Some(token)).await.status, StatusCode::OK);
    }
    // Other scopes are another grant: untouched.
    let c = code(&gh, "read:org").await;
    let other = exchange_json(&gh, &c).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(&gh, "/user", Some(&other)).await.status, StatusCode::OK);
    assert_eq!(
        get(&gh, "/user", Some(&tokens[1])).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn oauth_endpoints_share_the_unreachable_and_server_error_modes() {
    let gh = oauth_world().await;
    gh.set_mode(Mode::ServerError);
    let r = authorize(&gh, &[("client_id", CLIENT_ID)]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    // The API's rate limits are the API's: the web flow answers.
    gh.set_mode(Mode::RateLimited);
    let r = authorize(&gh, &[("client_id", CLIENT_ID)]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(r.headers.get("x-ratelimit-limit").is_none());
    gh.set_mode(Mode::Unreachable);
    let err = e2e::http()
        .post(format!("{}/login/oauth/access_token", gh.web_url()))
        .body("client_id=x")
        .send()
        .await
        .unwrap_err();
    assert!(is_reset(&err), "{err:?}");
    assert_eq!(gh.oauth_exchanges(), 0);
    assert_eq!(gh.calls_to("/login/oauth/"), 3);
}
