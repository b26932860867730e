//! `GET /-/v1/search`: ranking, npm's qualifiers and paging over raw HTTP on both backends; the
//! real `npm search` and `pnpm search`; writes (deprecate, dist-tag, unpublish) and restarts seen
//! by the index; two AWS instances seeing each other's publishes; and, in GitHub mode, results
//! and counts cut to what the caller may read.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::api::{doc, send};
use e2e::clients::{Client, Kind};
use e2e::github_world::World;
use e2e::test_registry::{TestRegistry, pkg};
use e2e::{Backend, Npm, S3Host, Server, escaped, write_package};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Publishes `name@version` with `fields` merged into its manifest (description, keywords,
/// author, readme...).
async fn publish(reg: &TestRegistry, name: &str, version: &str, fields: Value) {
    let version_owned = version.to_string();
    reg.publish(pkg(name).version(version).edit(move |d| {
        let manifest = d["versions"][&version_owned].as_object_mut().unwrap();
        for (k, v) in fields.as_object().unwrap() {
            manifest.insert(k.clone(), v.clone());
        }
    }))
    .await
    .assert_status(201);
}

/// The search answer for a raw query string (`text=...&size=...`).
async fn search(base: &str, query: &str, token: Option<&str>) -> (StatusCode, Value) {
    let (status, body, headers) = send(
        Method::GET,
        format!("{base}/-/v1/search?{query}"),
        token,
        None,
    )
    .await;
    if status == StatusCode::OK {
        assert_eq!(
            headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "search answers depend on the caller and on every publish"
        );
    }
    (status, body)
}

/// The names of an answer's results, in order.
fn names(body: &Value) -> Vec<String> {
    body["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no objects: {body}"))
        .iter()
        .map(|o| o["package"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_qualifiers_and_paging_local() {
    ranking_qualifiers_and_paging(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_qualifiers_and_paging_aws() {
    ranking_qualifiers_and_paging(Backend::aws("search", S3Host::Same)).await;
}

async fn ranking_qualifiers_and_paging(backend: Backend) {
    let reg = TestRegistry::builder().backend(backend).start().await;
    let url = reg.url.clone();
    publish(
        &reg,
        "@acme/widget",
        "1.0.0",
        json!({"description": "The widget maker", "keywords": ["ui", "widget"],
               "author": "Ann Example <ann@example.com>"}),
    )
    .await;
    publish(
        &reg,
        "@acme/widget-tools",
        "0.3.0",
        json!({"description": "Tools", "keywords": ["tools"]}),
    )
    .await;
    publish(
        &reg,
        "@acme/gadget",
        "2.0.0",
        json!({"description": "A gadget", "keywords": ["widget"]}),
    )
    .await;
    publish(
        &reg,
        "@acme/gizmo",
        "1.0.0",
        json!({"description": "Makes every widget shine"}),
    )
    .await;
    publish(
        &reg,
        "@acme/manual",
        "1.0.0",
        json!({"description": "Docs", "readme": "# Manual\n\nHow to build a widget by hand."}),
    )
    .await;
    publish(
        &reg,
        "@other/widget",
        "1.0.0",
        json!({"description": "Another one", "deprecated": "use @acme/widget"}),
    )
    .await;

    // Exact name, name prefix, keyword, description, README; the deprecated exact match last.
    let (status, body) = search(&url, "text=widget", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        names(&body),
        [
            "@acme/widget",
            "@acme/widget-tools",
            "@acme/gadget",
            "@acme/gizmo",
            "@acme/manual",
            "@other/widget"
        ],
        "{body:#}"
    );
    assert_eq!(body["total"], 6);
    let first = &body["objects"][0];
    assert_eq!(first["package"]["scope"], "acme");
    assert_eq!(first["package"]["version"], "1.0.0");
    assert_eq!(first["package"]["keywords"], json!(["ui", "widget"]));
    assert!(first["package"]["maintainers"].is_array(), "{first}");
    assert!(
        first["package"]["date"]
            .as_str()
            .is_some_and(|d| chrono::DateTime::parse_from_rfc3339(d).is_ok()),
        "{first}"
    );
    assert!(
        first["package"]["links"]["npm"]
            .as_str()
            .is_some_and(|l| l.starts_with(&url) && l.ends_with("/-/web/package/@acme/widget")),
        "{first}"
    );
    assert_eq!(first["score"]["final"], 1.0);
    assert!(
        first["searchScore"].as_u64().unwrap()
            > body["objects"][1]["searchScore"].as_u64().unwrap()
    );
    assert!(body["time"].is_string());

    // Pages: `total` counts every match; pages are disjoint and complete.
    let mut seen = Vec::new();
    for from in [0, 2, 4] {
        let (_, page) = search(&url, &format!("text=widget&size=2&from={from}"), None).await;
        assert_eq!(page["total"], 6, "{page}");
        assert_eq!(names(&page).len(), 2);
        seen.extend(names(&page));
    }
    assert_eq!(seen, names(&body));
    let (_, beyond) = search(&url, "text=widget&from=20000", None).await;
    assert_eq!((names(&beyond).len(), &beyond["total"]), (0, &json!(6)));
    let (_, clamped) = search(&url, "text=widget&size=100000", None).await;
    assert_eq!(names(&clamped).len(), 6);
    let (status, refused) = search(&url, "text=widget&size=ten", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        refused["error"].as_str().unwrap().contains("size"),
        "{refused}"
    );

    // Qualifiers, as npm documents them.
    let cases: &[(&str, &[&str])] = &[
        ("keywords:widget", &["@acme/widget", "@acme/gadget"]),
        ("keywords:ui+widget", &["@acme/widget"]),
        ("keywords:widget,-ui", &["@acme/gadget"]),
        ("keywords:tools,ui", &["@acme/widget", "@acme/widget-tools"]),
        ("author:ann", &["@acme/widget"]),
        ("scope:other", &["@other/widget"]),
        ("widget+is:unstable", &["@acme/widget-tools"]),
        ("widget+is:deprecated", &["@other/widget"]),
        (
            "widget+not:deprecated+not:unstable",
            &[
                "@acme/widget",
                "@acme/gadget",
                "@acme/gizmo",
                "@acme/manual",
            ],
        ),
        ("widget+shine", &["@acme/gizmo"]),
        ("widget%20shine", &["@acme/gizmo"]),
        ("%40acme%2Fgadget", &["@acme/gadget"]),
        ("gadg", &["@acme/gadget"]),
        ("nothing-like-this", &[]),
    ];
    for (text, expected) in cases {
        let (status, body) = search(&url, &format!("text={text}"), None).await;
        assert_eq!(status, StatusCode::OK, "{text}: {body}");
        assert_eq!(
            names(&body).into_iter().collect::<BTreeSet<_>>(),
            set(expected),
            "{text}: {body:#}"
        );
        assert_eq!(body["total"], expected.len(), "{text}");
    }
}

/// The real npm and pnpm print what the index finds; deprecations, dist-tag moves and
/// unpublishes change it at once; a restart finds the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_and_pnpm_search_and_writes_local() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let backend = Backend::local();
    let server = Server::start_on(root, &backend);
    let npm = Npm::new(root, &server.url);
    let dir = write_package(
        &root.join("w"),
        "@acme/sprocket",
        "1.0.0",
        json!({"description": "Sprockets for every machine", "keywords": ["gear", "machine"],
               "author": "Ann Example <ann@example.com>"}),
    );
    npm.ok(&dir, &["publish"]);
    let other = write_package(
        &root.join("o"),
        "@acme/cog",
        "0.1.0",
        json!({"description": "A cog in the machine"}),
    );
    npm.ok(&other, &["publish"]);

    let out = npm.ok(root, &["search", "sprocket"]).stdout;
    assert!(out.contains("@acme/sprocket"), "{out}");
    assert!(out.contains("Sprockets for every machine"), "{out}");
    assert!(out.contains("Version 1.0.0 published"), "{out}");
    assert!(out.contains("Keywords: gear machine"), "{out}");
    let json_out: Value =
        serde_json::from_str(&npm.ok(root, &["search", "machine", "--json"]).stdout)
            .expect("npm search --json prints JSON");
    let found: Vec<&str> = json_out
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["@acme/sprocket", "@acme/cog"], "{json_out:#}");
    assert!(json_out[0]["maintainers"].is_array());
    let parseable = npm.ok(root, &["search", "machine", "--parseable"]).stdout;
    assert!(
        parseable
            .lines()
            .any(|l| l.split('\t').next() == Some("@acme/cog")),
        "{parseable}"
    );
    let one = npm
        .ok(root, &["search", "machine", "--searchlimit=1", "--json"])
        .stdout;
    assert_eq!(
        serde_json::from_str::<Value>(&one)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let none = npm.ok(root, &["search", "zzzznothing"]).stdout;
    assert!(
        none.contains("No matches found for \"zzzznothing\""),
        "{none}"
    );

    // pnpm's search runs npm's (pnpm passes it through to the npm it finds).
    let pnpm = Client::new(Kind::Pnpm, &root.join("pnpm"), &server.url);
    let run = pnpm.run(root, &["search", "sprocket"]);
    assert!(
        run.ok && run.stdout.contains("@acme/sprocket"),
        "{}{}",
        run.stdout,
        run.stderr
    );

    // Writes show at once: a new latest, a deprecation, a dist-tag move, an unpublish.
    write_package(
        &dir,
        "@acme/sprocket",
        "2.0.0",
        json!({"description": "Sprockets, second edition", "keywords": ["gear"]}),
    );
    npm.ok(&dir, &["publish"]);
    let version_of = |body: &Value, name: &str| {
        body["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["package"]["name"] == name)
            .map(|o| o["package"]["version"].as_str().unwrap().to_string())
    };
    let (_, body) = search(&server.url, "text=sprocket", None).await;
    assert_eq!(
        version_of(&body, "@acme/sprocket").as_deref(),
        Some("2.0.0")
    );
    assert!(
        names(&search(&server.url, "text=edition", None).await.1)
            .contains(&"@acme/sprocket".into())
    );
    npm.ok(root, &["dist-tag", "add", "@acme/sprocket@1.0.0", "latest"]);
    let (_, body) = search(&server.url, "text=sprocket", None).await;
    assert_eq!(
        version_of(&body, "@acme/sprocket").as_deref(),
        Some("1.0.0")
    );
    npm.ok(root, &["deprecate", "@acme/sprocket@1.0.0", "gone rusty"]);
    let (_, body) = search(&server.url, "text=sprocket+is:deprecated", None).await;
    assert_eq!(names(&body), ["@acme/sprocket"]);
    npm.ok(root, &["unpublish", "@acme/cog", "--force"]);
    let (_, body) = search(&server.url, "text=machine", None).await;
    assert_eq!(names(&body), ["@acme/sprocket"], "{body:#}");

    // A restart loads the same entries from the store.
    let server = server.restart();
    let (_, after) = search(&server.url, "text=machine", None).await;
    assert_eq!(names(&after), ["@acme/sprocket"]);
    assert_eq!(
        version_of(&after, "@acme/sprocket").as_deref(),
        Some("1.0.0")
    );
    let (_, deprecated) = search(&server.url, "text=is:deprecated", None).await;
    assert_eq!(names(&deprecated), ["@acme/sprocket"]);
}

/// Two instances on one table (as two Lambda instances are): a publish through one is found by
/// the other's search within its refresh interval, and an unpublish leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_publish_is_found_within_two_seconds_aws() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = Backend::aws("search-two", S3Host::Same);
    for dir in ["a", "b", "c"] {
        std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
    }
    let a = Server::start_on(&tmp.path().join("a"), &backend);
    let b = Server::start_on(&tmp.path().join("b"), &backend);
    // Loads b's index before the publish: what follows must come through the change log.
    let (_, empty) = search(&b.url, "text=flywheel", None).await;
    assert_eq!(empty["total"], 0);

    let (status, body, _) = send(
        Method::PUT,
        format!("{}/{}", a.url, escaped("@acme/flywheel")),
        Some("t"),
        Some(&doc("@acme/flywheel", "1.0.0", None)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let published = Instant::now();
    let seen = loop {
        let (_, body) = search(&b.url, "text=flywheel", None).await;
        if body["total"] == 1 {
            break published.elapsed();
        }
        assert!(
            published.elapsed() < Duration::from_secs(2),
            "the other instance did not find the publish within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("found by the other instance after {seen:?}");

    let (_, current, _) = send(
        Method::GET,
        format!("{}/{}?write=true", a.url, escaped("@acme/flywheel")),
        Some("t"),
        None,
    )
    .await;
    let rev = current["_rev"].as_str().unwrap().to_string();
    let (status, _, _) = send(
        Method::DELETE,
        format!("{}/{}/-rev/{rev}", a.url, escaped("@acme/flywheel")),
        Some("t"),
        None,
    )
    .await;
    assert!(status.is_success(), "{status}");
    let removed = Instant::now();
    loop {
        let (_, body) = search(&b.url, "text=flywheel", None).await;
        if body["total"] == 0 {
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(2),
            "the unpublish did not reach the other instance within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A third instance, started afterwards, loads the entries without the package.
    let c = Server::start_on(&tmp.path().join("c"), &backend);
    let (_, body) = search(&c.url, "text=flywheel", None).await;
    assert_eq!(body["total"], 0);
}

/// In GitHub mode, results and `total` hold only packages the caller may read: alice sees her
/// private repository's package, dave does not even see it counted; anonymous callers see public
/// packages with public read on, and are asked to sign in with it off. Each distinct repository
/// costs one GitHub check, and a second search none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_never_show_what_the_caller_cannot_read() {
    let world = World::start().await;
    for (public_read, label) in [(true, "on"), (false, "off")] {
        let tmp = tempfile::tempdir().unwrap();
        let server = world.server(
            tmp.path(),
            &Backend::local(),
            &[(
                "REGISTRY_PUBLIC_READ",
                if public_read { "true" } else { "false" },
            )],
        );
        let alice = Some(world.alice.token.as_str());
        for (name, repo) in [
            ("@acme/secret-widget", "github:acme/widgets"),
            ("@acme/other-widget", "github:acme/other"),
            ("@acme/public-widget", "github:acme/public-lib"),
        ] {
            let (status, body, _) = send(
                Method::PUT,
                format!("{}/{}", server.url, escaped(name)),
                alice,
                Some(&doc(name, "1.0.0", Some(repo))),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        }
        let all = [
            "@acme/other-widget",
            "@acme/public-widget",
            "@acme/secret-widget",
        ];
        world.github.reset_calls();
        let (_, body) = search(&server.url, "text=widget", alice).await;
        assert_eq!(names(&body).into_iter().collect::<BTreeSet<_>>(), set(&all));
        assert_eq!(body["total"], 3);
        let first_calls = world.github.calls();
        assert!(
            first_calls <= 4,
            "one check per repository (and /user): {first_calls}"
        );
        let (_, _) = search(&server.url, "text=widget", alice).await;
        assert_eq!(
            world.github.calls(),
            first_calls,
            "the second search is answered from the cache"
        );

        // carol reads acme/widgets (pull), not acme/other.
        let (_, body) = search(&server.url, "text=widget", Some(&world.carol.token)).await;
        assert_eq!(
            names(&body).into_iter().collect::<BTreeSet<_>>(),
            set(&["@acme/public-widget", "@acme/secret-widget"]),
            "public read {label}"
        );
        assert_eq!(body["total"], 2);
        // dave reads neither private repository: not listed, not counted, not by exact name.
        let (_, body) = search(&server.url, "text=widget", Some(&world.dave.token)).await;
        assert_eq!(names(&body), ["@acme/public-widget"], "public read {label}");
        assert_eq!(body["total"], 1);
        let (_, body) = search(
            &server.url,
            "text=%40acme%2Fsecret-widget",
            Some(&world.dave.token),
        )
        .await;
        assert_eq!((names(&body).len(), &body["total"]), (0, &json!(0)));

        let (status, body) = search(&server.url, "text=widget", None).await;
        if public_read {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(names(&body), ["@acme/public-widget"]);
            assert_eq!(body["total"], 1);
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("authentication required")
            );
            assert!(!body.to_string().contains("secret"), "{body}");
        }
    }
}
