//! GitHub App installation tokens (`ghs_…`, which is what a workflow's `GITHUB_TOKEN` is) in
//! `.npmrc`: the real npm installs packages bound to repositories the token reaches, is told
//! what the token reaches otherwise (exactly as for a name that does not exist), and never
//! publishes with one. GitHub's outages stay 503; a bad token is 401.

use std::path::{Path, PathBuf};

use e2e::api::{assert_no_secrets, packument, publish, send};
use e2e::fake_github::{Access, FineGrained, Mode, generate_token};
use e2e::github_world::World;
use e2e::{Backend, Npm, S3Host, escaped, write_package};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A project directory to install into.
fn project(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"p","version":"1.0.0","private":true}"#,
    )
    .unwrap();
    dir
}

/// Runs npm as a GitHub Actions job configured like the README's workflow: `actions/setup-node`
/// with `registry-url` and `scope` writes a user config holding
/// `@scope:registry=URL` and `//host/:_authToken=${NODE_AUTH_TOKEN}` and points
/// `NPM_CONFIG_USERCONFIG` at it; the step sets `NODE_AUTH_TOKEN` to the `GITHUB_TOKEN`.
fn npm_as_setup_node(
    runner: &Path,
    registry: &str,
    token: &str,
    cwd: &Path,
    args: &[&str],
) -> e2e::Run {
    std::fs::create_dir_all(runner).unwrap();
    let npmrc = runner.join(".npmrc");
    let host = registry
        .trim_start_matches("http:")
        .trim_start_matches("https:");
    std::fs::write(
        &npmrc,
        format!("@acme:registry={registry}/\n{host}/:_authToken=${{NODE_AUTH_TOKEN}}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(e2e::npm_bin())
        .args(args)
        .current_dir(cwd)
        .env("HOME", runner)
        .env("npm_config_cache", runner.join("npm-cache"))
        .env("NPM_CONFIG_USERCONFIG", &npmrc)
        .env("NODE_AUTH_TOKEN", token)
        .env("GITHUB_ACTIONS", "true")
        .env("CI", "true")
        .env_remove("npm_config_registry")
        .env("NO_COLOR", "1")
        .env("npm_config_audit", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_update_notifier", "false")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run npm");
    e2e::Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_with_an_installation_token_local() {
    npm_with_an_installation_token(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_with_an_installation_token_aws() {
    npm_with_an_installation_token(Backend::aws("installation", S3Host::Different)).await;
}

async fn npm_with_an_installation_token(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    world.github.add_repo("acme", "tools", true);
    let server = world.server(root, &backend, &[]);
    let alice = Some(world.alice.token.as_str());
    // Bound to a private repository the installation reaches, to one it does not, and to a
    // public one.
    for (name, repo) in [
        ("@acme/widgets", "github:acme/widgets"),
        ("@acme/other", "github:acme/other"),
        ("@acme/public-lib", "github:acme/public-lib"),
    ] {
        let (s, b) = publish(&server, alice, name, "1.0.0", Some(repo)).await;
        assert_eq!(s, 201, "{name}: {b}");
    }
    // An App installed on acme for widgets and tools, with "Contents: write": it still only
    // reads here.
    let installation = generate_token("ghs_");
    world.github.add_installation_token(
        &installation,
        FineGrained::selected("acme", &["widgets", "tools"], Access::Write),
    );
    let ci = Npm::with_token(&root.join("npm-ci"), &server.url, Some(&installation));

    // It installs what its repositories (and public ones) bind.
    let dir = project(root, "install-reachable");
    ci.ok(&dir, &["install", "@acme/widgets", "@acme/public-lib"]);
    for name in ["widgets", "public-lib"] {
        let installed: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("node_modules/@acme/{name}/package.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(installed["version"], "1.0.0", "{name}");
    }
    // npm whoami names the kind of caller: there is no user.
    assert_eq!(
        ci.ok(root, &["whoami"]).stdout.trim(),
        "github-app-installation"
    );

    // A package of a private repository it does not reach: refused, with what it does reach,
    // and exactly as a name that does not exist (same length, so the same bytes but the name).
    let hidden = ci.run(
        &project(root, "install-hidden"),
        &["install", "@acme/other"],
    );
    println!(
        "npm install of a package the token does not reach prints:\n{}",
        hidden.all()
    );
    assert!(!hidden.ok);
    assert!(
        hidden.all().contains("404")
            && hidden.all().contains("package '@acme/other' not found")
            && hidden
                .all()
                .contains("it reaches only these 2 repositories: acme/tools, acme/widgets"),
        "{}",
        hidden.all()
    );
    let missing = ci.run(
        &project(root, "install-missing"),
        &["install", "@acme/ghost"],
    );
    assert!(!missing.ok);
    let error_lines = |run: &e2e::Run, name: &str| -> Vec<String> {
        run.all()
            .lines()
            .filter(|l| l.starts_with("npm error") && !l.contains("A complete log"))
            .map(|l| {
                l.replace(&format!("@acme/{name}"), "NAME")
                    .replace(&format!("@acme%2f{name}"), "NAME")
            })
            .collect()
    };
    assert_eq!(
        error_lines(&hidden, "other"),
        error_lines(&missing, "ghost"),
        "npm prints the same for a hidden package and a missing one"
    );
    let raw = |name: &str| {
        let url = format!("{}/{}", server.url, escaped(name));
        let token = installation.clone();
        async move { send(Method::GET, url, Some(&token), None).await }
    };
    let (hidden_status, hidden_body, hidden_headers) = raw("@acme/other").await;
    let (missing_status, missing_body, missing_headers) = raw("@acme/ghost").await;
    assert_eq!(hidden_status, StatusCode::NOT_FOUND);
    assert_eq!(hidden_status, missing_status);
    assert_eq!(
        hidden_body.to_string().replace("@acme/other", "NAME"),
        missing_body.to_string().replace("@acme/ghost", "NAME")
    );
    let names = |h: &reqwest::header::HeaderMap| {
        let mut v: Vec<(String, String)> = h
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&hidden_headers), names(&missing_headers));

    // A workflow's GITHUB_TOKEN reaches its own repository only.
    let github_token = generate_token("ghs_");
    world
        .github
        .add_workflow_token(&github_token, "acme", "widgets");
    let runner = root.join("runner");
    let job = |cwd: &Path, args: &[&str]| {
        npm_as_setup_node(&runner, &server.url, &github_token, cwd, args)
    };
    // The README's workflow: `npm ci` of a project whose lock names the package.
    let checkout = project(root, "workflow-install");
    let locked = job(&checkout, &["install", "@acme/widgets"]);
    assert!(locked.ok, "{}", locked.all());
    std::fs::remove_dir_all(checkout.join("node_modules")).unwrap();
    let clean = job(&checkout, &["ci"]);
    assert!(clean.ok, "{}", clean.all());
    assert!(
        checkout
            .join("node_modules/@acme/widgets/package.json")
            .exists()
    );
    let refused = job(
        &project(root, "workflow-other"),
        &["install", "@acme/other"],
    );
    assert!(
        !refused.ok && refused.all().contains("it reaches only acme/widgets"),
        "{}",
        refused.all()
    );

    // Publishing with it is refused with the way to publish from CI, and stores nothing;
    // neither that nor creating a token costs a GitHub call.
    let tarballs_before = backend.tarball_count(&root.join("data")).await;
    let pkg = write_package(
        &root.join("widgets"),
        "@acme/widgets",
        "1.0.1",
        json!({ "repository": "github:acme/widgets" }),
    );
    world.github.reset_calls();
    let published = ci.run(&pkg, &["publish"]);
    println!(
        "npm publish with an installation token prints:\n{}",
        published.all()
    );
    assert!(
        !published.ok
            && published.all().contains("403")
            && published.all().contains("only reads packages")
            && published.all().contains("npm trust github"),
        "{}",
        published.all()
    );
    let (s, b, _) = send(
        Method::POST,
        format!("{}/-/npm/v1/tokens", server.url),
        Some(&installation),
        Some(&json!({ "password": "x", "readonly": false, "cidr_whitelist": [] })),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("npm trust github"),
        "{b}"
    );
    assert_eq!(
        world.github.calls(),
        0,
        "a write with an installation token asks GitHub nothing: {:?}",
        world.github.paths()
    );
    // Each refused write is in the audit log, the installation as the caller with the kind of
    // credential (never the token) and the refusal it got; the publish's body was not read
    // for it (no version).
    let installation_events = |events: Vec<Value>| -> Vec<(String, String, String, u64, String)> {
        events
            .iter()
            .filter(|e| e["actor"]["kind"] == "installation")
            .map(|e| {
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                assert_eq!(e["credential"], "github-installation-token", "{e}");
                assert!(
                    s(&e["outcome"]["message"]).contains("npm trust github"),
                    "{e}"
                );
                (
                    s(&e["action"]),
                    s(&e["package"]),
                    s(&e["version"]),
                    e["outcome"]["status"].as_u64().unwrap_or(0),
                    s(&e["outcome"]["result"]),
                )
            })
            .collect()
    };
    let refused = |action: &str, package: &str| {
        (
            action.to_string(),
            package.to_string(),
            String::new(),
            403,
            "refused".to_string(),
        )
    };
    assert_eq!(
        installation_events(audit(&world, &backend, &server)),
        [
            refused("publish", "@acme/widgets"),
            refused("token-create", "")
        ]
    );
    // Recorded whichever way the token is told from a user's: a `ghs_` token seen for the first
    // time here (identified with GitHub for the record, refused all the same), and a token
    // without the prefix that GitHub names an installation. A `ghs_` token GitHub does not know
    // is refused as well, and not recorded: its caller is nobody known.
    let fresh = generate_token("ghs_");
    let unprefixed = hex::encode(rand::random::<[u8; 20]>());
    let unknown = generate_token("ghs_");
    for token in [&fresh, &unprefixed] {
        world.github.add_installation_token(
            token,
            FineGrained::selected("acme", &["widgets"], Access::Write),
        );
    }
    for token in [&fresh, &unprefixed, &unknown] {
        let (s, b, _) = send(
            Method::PUT,
            format!(
                "{}/-/package/{}/dist-tags/beta",
                server.url,
                escaped("@acme/widgets")
            ),
            Some(token),
            Some(&json!("1.0.0")),
        )
        .await;
        assert_eq!(s, 403, "{b}");
        assert!(
            b["error"].as_str().unwrap().contains("npm trust github"),
            "{b}"
        );
    }
    assert_eq!(
        installation_events(audit(&world, &backend, &server)),
        [
            refused("publish", "@acme/widgets"),
            refused("token-create", ""),
            refused("dist-tag-set", "@acme/widgets"),
            refused("dist-tag-set", "@acme/widgets"),
        ]
    );
    let tags = send(
        Method::GET,
        format!(
            "{}/-/package/{}/dist-tags",
            server.url,
            escaped("@acme/widgets")
        ),
        Some(&world.alice.token),
        None,
    )
    .await;
    assert_eq!(tags.1, json!({ "latest": "1.0.0" }));

    let stored = packument(&server, &world.alice.token, "@acme/widgets")
        .await
        .unwrap();
    assert!(stored["versions"].get("1.0.1").is_none(), "{stored}");
    assert_eq!(
        backend.tarball_count(&root.join("data")).await,
        tarballs_before
    );

    let listing = serde_json::to_string(&audit(&world, &backend, &server)).unwrap();
    for secret in [&installation, &github_token, &fresh, &unprefixed, &unknown] {
        assert!(
            !listing.contains(secret.as_str()),
            "a token in the audit log"
        );
    }
    assert_no_secrets(
        &server,
        &[
            &installation,
            &github_token,
            &fresh,
            &unprefixed,
            &unknown,
            &world.alice.token,
        ],
    );
}

/// Every event of the server's audit log (`registry-server audit --json` on its backend).
fn audit(world: &World, backend: &Backend, server: &e2e::Server) -> Vec<Value> {
    let out = std::process::Command::new(e2e::sibling_binary("registry-server"))
        .arg("--data")
        .arg(&server.data_dir)
        .args(["audit", "--json"])
        .envs(world.env(backend, &[]))
        .output()
        .expect("run registry-server audit");
    assert!(
        out.status.success(),
        "registry-server audit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_bad_installation_tokens_local() {
    outages_and_bad_installation_tokens(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_bad_installation_tokens_aws() {
    outages_and_bad_installation_tokens(Backend::aws("installation-outage", S3Host::Different))
        .await;
}

async fn outages_and_bad_installation_tokens(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let server = world.server(root, &backend, &[]);
    let (s, b) = publish(
        &server,
        Some(&world.alice.token),
        "@acme/widgets",
        "1.0.0",
        Some("github:acme/widgets"),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let url = format!("{}/@acme%2fwidgets", server.url);
    let grant = || FineGrained::selected("acme", &["widgets"], Access::Read);

    // A token GitHub does not know (expired, or never issued), and one it revoked: 401.
    let unknown = generate_token("ghs_");
    let revoked = generate_token("ghs_");
    world.github.add_installation_token(&revoked, grant());
    world.github.revoke_token(&revoked);
    for token in [&unknown, &revoked] {
        let (s, b, headers) = send(Method::GET, url.clone(), Some(token), None).await;
        assert_eq!(s, 401, "{b}");
        assert!(headers.get("www-authenticate").is_some());
        assert!(
            b["error"].as_str().unwrap().contains("bad credentials"),
            "{b}"
        );
    }

    // GitHub down, rate-limited or failing, for a token with nothing cached: 503, never a
    // refusal that blames the token.
    for (mode, says) in [
        (Mode::Unreachable, "cannot be reached"),
        (Mode::ServerError, "cannot be reached"),
        (Mode::RateLimited, "rate limit"),
        (Mode::SecondaryRateLimit, "rate limit"),
    ] {
        let fresh = generate_token("ghs_");
        world.github.add_installation_token(&fresh, grant());
        world.github.set_mode(mode);
        let (s, b, headers) = send(Method::GET, url.clone(), Some(&fresh), None).await;
        assert_eq!(s, 503, "{mode:?}: {b}");
        assert!(headers.get("retry-after").is_some(), "{mode:?}");
        assert!(b["error"].as_str().unwrap().contains(says), "{mode:?}: {b}");
        world.github.set_mode(Mode::Normal);
        let (s, b, _) = send(Method::GET, url.clone(), Some(&fresh), None).await;
        assert_eq!(s, 200, "{mode:?}: once GitHub is back: {b}");
    }

    // Recognised once, an installation token is cached as such (memory and store): reads
    // keep working through an outage, as a user's do.
    let cached = generate_token("ghs_");
    world.github.add_installation_token(&cached, grant());
    let (s, b, _) = send(Method::GET, url.clone(), Some(&cached), None).await;
    assert_eq!(s, 200, "{b}");
    world.github.reset_calls();
    for _ in 0..20 {
        let (s, b, _) = send(Method::GET, url.clone(), Some(&cached), None).await;
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(world.github.calls(), 0, "{:?}", world.github.paths());
    world.github.set_mode(Mode::Unreachable);
    let (s, b, _) = send(Method::GET, url.clone(), Some(&cached), None).await;
    assert_eq!(
        s, 200,
        "a cached answer serves reads through an outage: {b}"
    );
    world.github.set_mode(Mode::Normal);

    assert_no_secrets(&server, &[&unknown, &revoked, &cached, &world.alice.token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_lists_an_installations_repositories_as_github_does() {
    let world = World::start().await;
    let gh = &world.github;
    for i in 0..3 {
        gh.add_repo("acme", &format!("r{i}"), true);
    }
    let get = |path: &str, token: &str| {
        let url = format!("{}{path}", gh.url);
        let token = token.to_string();
        async move { send(Method::GET, url, Some(&token), None).await }
    };
    // An installation on all of acme's repositories, one page of two at a time.
    let everything = generate_token("ghs_");
    gh.add_installation_token(
        &everything,
        FineGrained {
            owner: "acme".into(),
            repositories: None,
            contents: Access::Read,
            administration: Access::NoAccess,
        },
    );
    let (s, b, h) = get("/installation/repositories?per_page=2", &everything).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["total_count"], 6, "{b}");
    assert_eq!(b["repository_selection"], "all");
    let names: Vec<&str> = b["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme/other", "acme/public-lib"]);
    let link = h.get("link").unwrap().to_str().unwrap();
    assert!(
        link.contains("page=2>; rel=\"next\"") && link.contains("page=3>; rel=\"last\""),
        "{link}"
    );
    // A workflow's GITHUB_TOKEN: its repository alone.
    let workflow = generate_token("ghs_");
    gh.add_workflow_token(&workflow, "acme", "widgets");
    let (s, b, h) = get("/installation/repositories", &workflow).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["total_count"], &b["repository_selection"]),
        (&json!(1), &json!("selected"))
    );
    assert_eq!(b["repositories"][0]["full_name"], "acme/widgets");
    assert!(h.get("link").is_none());
    assert_eq!(get("/repos/acme/widgets", &workflow).await.0, 200);
    assert_eq!(get("/repos/acme/public-lib", &workflow).await.0, 200);
    assert_eq!(get("/repos/acme/other", &workflow).await.0, 404);
    // A user's token is no installation.
    let (s, b, _) = get("/installation/repositories", &world.alice.token).await;
    assert_eq!(s, 403, "{b}");
    let (s, _, _) = get("/installation/repositories", &generate_token("ghs_")).await;
    assert_eq!(s, 401);
}
