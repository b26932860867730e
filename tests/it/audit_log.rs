//! The audit log on both backends: the storage contract (append-only, ordered, by package, since
//! a time, the newest N, retention; on AWS out of the packages' partitions), and end to end: the
//! real npm CLI in GitHub mode writes, refused writes of identified users are recorded as
//! refused, and `registry-server audit` prints each with its caller and credential kind, never a
//! token.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use e2e::api::{login, packument, send};
use e2e::github_world::World;
use e2e::{Backend, Npm, S3Host, Server, sibling_binary, write_package};
use registry::auth::CredentialKind;
use registry::domain::PackageName;
use registry::domain::audit::{AuditAction, AuditActor, AuditEvent, AuditOutcome, AuditQuery};
use registry::storage::audit_file::{AUDIT_FILE, FileAuditLog};
use registry::storage::aws::layout::{Partition, attr};
use registry::storage::{AuditLog, AuditRetention};
use semver::Version;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The storage contract, the same on both backends.

fn event(time: DateTime<Utc>, package: Option<&str>, login: &str) -> AuditEvent {
    let mut e = AuditEvent::new(
        time,
        if package.is_some() {
            AuditAction::Publish
        } else {
            AuditAction::TokenCreate
        },
        AuditActor::User {
            login: login.into(),
        },
        CredentialKind::GithubToken,
        AuditOutcome::Ok,
    );
    e.package = package.map(|p| PackageName::parse(p).unwrap());
    e.version = package.map(|_| Version::new(1, 0, 0));
    e
}

fn query(package: Option<&str>, since: Option<DateTime<Utc>>, limit: Option<usize>) -> AuditQuery {
    AuditQuery {
        package: package.map(|p| PackageName::parse(p).unwrap()),
        since,
        limit,
    }
}

/// What every backend's audit log must do; `open` gives a fresh handle on the same log with
/// the given retention (another process, as the CLI is).
async fn contract(open: impl Fn(AuditRetention) -> Box<dyn AuditLog>) {
    let log = open(AuditRetention::default());
    assert!(log.query(&AuditQuery::default()).await.unwrap().is_empty());
    let now = Utc::now();
    let old = event(now - Duration::days(3), Some("@acme/a"), "alice");
    let a = event(now - Duration::hours(2), Some("@acme/a"), "alice");
    let b = event(now - Duration::hours(1), Some("@acme/b"), "bob");
    let token = event(now - Duration::minutes(30), None, "bob");
    // Two events of the same microsecond stay two events.
    let twin1 = event(now - Duration::minutes(1), Some("@acme/b"), "carol");
    let mut twin2 = twin1.clone();
    twin2.id = "ffffffffffffffff".into();
    twin2.actor = AuditActor::Installation;
    // Appended out of order: listings are by time.
    for e in [&b, &old, &token, &a, &twin1, &twin2] {
        log.append(e).await.unwrap();
    }
    let all = vec![
        old.clone(),
        a.clone(),
        b.clone(),
        token.clone(),
        twin1.clone(),
        twin2.clone(),
    ];
    let mut all_sorted = all.clone();
    all_sorted.sort_by_key(AuditEvent::order_key);
    let reopened = open(AuditRetention::default());
    assert_eq!(
        reopened.query(&AuditQuery::default()).await.unwrap(),
        all_sorted,
        "everything, oldest first, from another handle"
    );
    assert_eq!(
        reopened
            .query(&query(Some("@acme/a"), None, None))
            .await
            .unwrap(),
        vec![old.clone(), a.clone()]
    );
    assert!(
        reopened
            .query(&query(Some("@acme/none"), None, None))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        reopened
            .query(&query(None, Some(now - Duration::minutes(90)), None))
            .await
            .unwrap(),
        all_sorted[2..].to_vec(),
        "since a time"
    );
    assert_eq!(
        reopened
            .query(&query(Some("@acme/a"), Some(now - Duration::days(1)), None))
            .await
            .unwrap(),
        vec![a.clone()]
    );
    assert_eq!(
        reopened.query(&query(None, None, Some(2))).await.unwrap(),
        all_sorted[4..].to_vec(),
        "the newest two"
    );
    assert_eq!(
        reopened
            .query(&query(
                Some("@acme/b"),
                Some(now - Duration::days(7)),
                Some(1)
            ))
            .await
            .unwrap(),
        all_sorted[5..].to_vec()
    );
    // Appending again adds; nothing replaced what was there.
    let later = event(now, Some("@acme/a"), "alice");
    reopened.append(&later).await.unwrap();
    assert_eq!(
        log.query(&query(Some("@acme/a"), None, None))
            .await
            .unwrap(),
        vec![old.clone(), a.clone(), later.clone()]
    );
    // With a retention of two days, the three-day-old event reads as absent.
    let kept = open(AuditRetention::days(Some(2)));
    let listed = kept
        .query(&query(Some("@acme/a"), None, None))
        .await
        .unwrap();
    assert_eq!(listed, vec![a.clone(), later.clone()]);
    assert!(
        !kept
            .query(&AuditQuery::default())
            .await
            .unwrap()
            .contains(&old)
    );
}

#[tokio::test]
async fn audit_log_contract_local() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    contract(|retention| Box::new(FileAuditLog::new(&dir, retention))).await;
    // A crash mid-append leaves half a line: it is skipped, and the next event starts a line.
    let path = dir.join(AUDIT_FILE);
    let before = std::fs::read_to_string(&path).unwrap();
    let lines = before.lines().count();
    std::fs::write(&path, format!("{before}{{\"id\":\"half")).unwrap();
    let log = FileAuditLog::new(&dir, AuditRetention::default());
    assert_eq!(
        log.query(&AuditQuery::default()).await.unwrap().len(),
        lines
    );
    let next = event(Utc::now(), Some("@acme/c"), "dave");
    log.append(&next).await.unwrap();
    let found = log.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(found.len(), lines + 1);
    assert_eq!(found.last(), Some(&next));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the log is its owner's only: {mode:o}");
    }
}

#[tokio::test]
async fn audit_log_contract_aws() {
    let resources = e2e::AwsResources::create("audit", S3Host::Same);
    let storage = resources.storage();
    contract(|retention| Box::new(storage.audit_log(retention))).await;
    // An event is written once: another with a stored event's key (its time and id) replaces
    // nothing, with or without a package.
    let log = storage.audit_log(AuditRetention::default());
    for package in [Some("@acme/once"), None] {
        let original = event(Utc::now(), package, "alice");
        log.append(&original).await.unwrap();
        let mut forged = original.clone();
        forged.actor = AuditActor::Installation;
        let _ = log.append(&forged).await;
        let since = query(package, Some(original.time - Duration::seconds(1)), None);
        let stored: Vec<AuditEvent> = log
            .query(&since)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.id == original.id)
            .collect();
        assert_eq!(
            stored,
            vec![original],
            "{package:?}: the first write stands"
        );
    }
    // The packages' own partitions (what a packument rebuild queries) hold no audit item, and
    // events carry the TTL attribute only when a retention is set.
    let ddb = e2e::stack::dynamodb(&resources);
    for pk in ["@acme/a", "@acme/b"] {
        let items = ddb
            .query()
            .table_name(&resources.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(pk.into()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(items.count(), 0, "{pk}");
    }
    let items = ddb
        .query()
        .table_name(&resources.table)
        .key_condition_expression(format!("{} = :pk", attr::PK))
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(
                Partition::AuditPackage(&PackageName::parse("@acme/a").unwrap()).pk(),
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(items.count(), 3, "one item per event of the package");
    assert!(items.items().iter().all(|i| !i.contains_key(attr::TTL)));
    let kept = storage.audit_log(AuditRetention::days(Some(30)));
    let e = event(Utc::now(), Some("@acme/ttl"), "alice");
    kept.append(&e).await.unwrap();
    let items = ddb
        .query()
        .table_name(&resources.table)
        .key_condition_expression(format!("{} = :pk", attr::PK))
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(
                Partition::AuditPackage(&PackageName::parse("@acme/ttl").unwrap()).pk(),
            ),
        )
        .send()
        .await
        .unwrap();
    let ttl: i64 = items.items()[0][attr::TTL].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl, (e.time + Duration::days(30)).timestamp());
}

// ---------------------------------------------------------------------------------------------
// End to end: npm writes, `registry-server audit` prints them.

#[tokio::test]
async fn npm_writes_are_audited_local() {
    npm_writes_are_audited(Backend::local()).await;
}

#[tokio::test]
async fn npm_writes_are_audited_aws() {
    npm_writes_are_audited(Backend::aws("audit-e2e", S3Host::Different)).await;
}

/// `registry-server audit ARGS` on the server's backend; stdout, or a panic with stderr.
fn audit_cli(world: &World, backend: &Backend, server: &Server, args: &[&str]) -> String {
    let out = audit_cli_run(world, backend, server, args);
    assert!(
        out.status.success(),
        "registry-server audit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn audit_cli_run(
    world: &World,
    backend: &Backend,
    server: &Server,
    args: &[&str],
) -> std::process::Output {
    Command::new(sibling_binary("registry-server"))
        .arg("--data")
        .arg(&server.data_dir)
        .arg("audit")
        .args(args)
        .envs(world.env(backend, &[]))
        .output()
        .expect("run registry-server audit")
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// (action, version, tag, result, status, actor login, credential) of an event.
fn summary(e: &Value) -> (String, String, String, String, u64, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        s(&e["action"]),
        s(&e["version"]),
        s(&e["tag"]),
        s(&e["outcome"]["result"]),
        e["outcome"]["status"].as_u64().unwrap_or(0),
        s(&e["actor"]["login"]),
        s(&e["credential"]),
    )
}

async fn npm_writes_are_audited(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root: &Path = tmp.path();
    let world = World::start().await;
    let server = world.server(root, &backend, &[]);
    let as_token = |who: &str, token: &str| {
        Npm::with_token(&root.join(format!("npm-{who}")), &server.url, Some(token))
    };
    let alice = as_token("alice", &world.alice.token);
    let carol = as_token("carol", &world.carol.token);
    let dave = as_token("dave", &world.dave.token);
    let anonymous = Npm::with_token(&root.join("npm-anonymous"), &server.url, None);
    let started = Utc::now();
    // bob uses a registry token from npm login's request.
    let bob_token = login(&server, &world.bob).await;
    let bob = as_token("bob", &bob_token);

    let pkg = write_package(
        &root.join("widgets"),
        "@acme/widgets",
        "1.0.0",
        json!({ "repository": "github:acme/widgets" }),
    );
    alice.ok(&pkg, &["publish"]);
    write_package(
        &pkg,
        "@acme/widgets",
        "1.0.1",
        json!({ "repository": "github:acme/widgets" }),
    );
    bob.ok(&pkg, &["publish"]);
    bob.ok(root, &["dist-tag", "add", "@acme/widgets@1.0.0", "stable"]);
    bob.ok(root, &["dist-tag", "rm", "@acme/widgets", "stable"]);
    bob.ok(root, &["deprecate", "@acme/widgets@1.0.0", "use 1.0.1"]);
    let before = packument(&server, &world.alice.token, "@acme/widgets").await;

    // Refusals of identified users: bob (push) unpublishes, carol (pull) publishes, dave (no
    // access: the package is hidden from him) publishes. An anonymous publish is refused too, and not recorded.
    assert!(!bob.run(root, &["unpublish", "@acme/widgets@1.0.1"]).ok);
    write_package(
        &pkg,
        "@acme/widgets",
        "1.0.2",
        json!({ "repository": "github:acme/widgets" }),
    );
    assert!(!carol.run(&pkg, &["publish"]).ok);
    assert!(!dave.run(&pkg, &["publish"]).ok);
    assert!(!anonymous.run(&pkg, &["publish"]).ok);
    let after = packument(&server, &world.alice.token, "@acme/widgets").await;
    assert_eq!(before, after, "the refused writes changed nothing");
    assert_eq!(after.unwrap()["_rev"], before.as_ref().unwrap()["_rev"]);

    // Tokens: alice creates one and revokes it with npm.
    let (status, created, _) = send(
        reqwest::Method::POST,
        format!("{}/-/npm/v1/tokens", server.url),
        Some(&world.alice.token),
        Some(&json!({ "password": "unused", "readonly": true })),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let created_token = created["token"].as_str().unwrap().to_string();
    let key = created["key"].as_str().unwrap().to_string();
    alice.ok(root, &["token", "revoke", &key]);

    // alice unpublishes a version, then the whole package.
    alice.ok(root, &["unpublish", "@acme/widgets@1.0.0"]);
    alice.ok(root, &["unpublish", "@acme/widgets", "--force"]);

    let listing = audit_cli(&world, &backend, &server, &["--json"]);
    let events = json_lines(&listing);
    let got: Vec<_> = events.iter().map(summary).collect();
    let row = |action: &str,
               version: &str,
               tag: &str,
               result: &str,
               status: u64,
               login: &str,
               credential: &str| {
        (
            action.to_string(),
            version.to_string(),
            tag.to_string(),
            result.to_string(),
            status,
            login.to_string(),
            credential.to_string(),
        )
    };
    let expected = vec![
        row("login", "", "", "ok", 0, "bob", "github-token"),
        row("publish", "1.0.0", "", "ok", 0, "alice", "github-token"),
        row("publish", "1.0.1", "", "ok", 0, "bob", "registry-token"),
        row(
            "dist-tag-set",
            "1.0.0",
            "stable",
            "ok",
            0,
            "bob",
            "registry-token",
        ),
        row(
            "dist-tag-delete",
            "",
            "stable",
            "ok",
            0,
            "bob",
            "registry-token",
        ),
        row("deprecate", "1.0.0", "", "ok", 0, "bob", "registry-token"),
        row(
            "unpublish-version",
            "1.0.1",
            "",
            "refused",
            403,
            "bob",
            "registry-token",
        ),
        row(
            "publish",
            "1.0.2",
            "",
            "refused",
            403,
            "carol",
            "github-token",
        ),
        row(
            "publish",
            "1.0.2",
            "",
            "refused",
            403,
            "dave",
            "github-token",
        ),
        row("token-create", "", "", "ok", 0, "alice", "github-token"),
        row("token-revoke", "", "", "ok", 0, "alice", "github-token"),
        row(
            "unpublish-version",
            "1.0.0",
            "",
            "ok",
            0,
            "alice",
            "github-token",
        ),
        row(
            "unpublish-package",
            "",
            "",
            "ok",
            0,
            "alice",
            "github-token",
        ),
    ];
    assert_eq!(got, expected, "{listing}");
    for e in &events {
        let package_expected = !matches!(
            e["action"].as_str(),
            Some("login" | "token-create" | "token-revoke")
        );
        assert_eq!(
            e["package"].as_str() == Some("@acme/widgets"),
            package_expected,
            "{e}"
        );
        assert_eq!(e["actor"]["kind"], "user", "{e}");
    }
    assert_eq!(events[1]["detail"], "bound to repository acme/widgets");
    assert_eq!(events[5]["detail"], "use 1.0.1");
    assert!(
        events[6]["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("needs admin permission"),
        "{}",
        events[6]
    );
    assert_eq!(
        events[9]["detail"],
        format!("token key {key}, read-only"),
        "the token's key, never the token"
    );
    assert_eq!(events[10]["detail"], format!("token key {key}"));
    assert_eq!(events[12]["detail"], "versions 1.0.1");

    // --package: the package's events alone; --since: a time or a duration.
    let by_package = json_lines(&audit_cli(
        &world,
        &backend,
        &server,
        &["--package", "@acme/widgets", "--json"],
    ));
    let expected_package: Vec<_> = events
        .iter()
        .filter(|e| e["package"] == "@acme/widgets")
        .cloned()
        .collect();
    assert_eq!(by_package, expected_package);
    assert_eq!(
        json_lines(&audit_cli(
            &world,
            &backend,
            &server,
            &["--since", "1h", "--json"]
        )),
        events
    );
    let future = (Utc::now() + Duration::hours(1)).to_rfc3339();
    assert!(audit_cli(&world, &backend, &server, &["--since", &future, "--json"]).is_empty());
    let cut = events[9]["time"].as_str().unwrap();
    assert_eq!(
        json_lines(&audit_cli(
            &world,
            &backend,
            &server,
            &["--since", cut, "--package", "@acme/widgets", "--json"]
        )),
        events[11..].to_vec()
    );
    assert!(DateTime::parse_from_rfc3339(events[0]["time"].as_str().unwrap()).unwrap() >= started);
    let newest = json_lines(&audit_cli(
        &world,
        &backend,
        &server,
        &["--limit", "2", "--json"],
    ));
    assert_eq!(newest, events[11..].to_vec());

    // The table: a header and a line per event.
    let table = audit_cli(&world, &backend, &server, &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), events.len() + 1, "{table}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("OUTCOME"),
        "{table}"
    );
    assert!(
        lines[7].contains("unpublish-version")
            && lines[7].contains("@acme/widgets@1.0.1")
            && lines[7].contains("bob")
            && lines[7].contains("refused 403"),
        "{table}"
    );

    // Bad arguments: a clear message, exit status 1.
    for (args, needle) in [
        (&["--since", "yesterday"][..], "--since"),
        (&["--package", "@/Bad"][..], "--package"),
    ] {
        let out = audit_cli_run(&world, &backend, &server, args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
    }

    // No token anywhere: not in the listings, the server's log or (locally) the file.
    let file = std::fs::read_to_string(server.data_dir.join(AUDIT_FILE)).unwrap_or_default();
    let secrets: Vec<&str> = vec![
        &world.alice.token,
        &world.bob.token,
        &world.carol.token,
        &world.dave.token,
        &bob_token,
        &created_token,
    ];
    for secret in &secrets {
        for (what, text) in [
            ("json listing", &listing),
            ("table", &table),
            ("file", &file),
            ("server log", &server.log()),
        ] {
            assert!(!text.contains(secret), "a token appears in the {what}");
        }
    }
    if matches!(backend, Backend::Local) {
        assert_eq!(file.lines().count(), events.len());
    }

    // A publish naming another repository rebinds the package (alice is admin of both): two
    // events, the publish and the rebind with both repositories.
    let before_rebind = Utc::now().to_rfc3339();
    let (status, body) = e2e::api::publish(
        &server,
        Some(&world.alice.token),
        "@acme/widgets",
        "2.0.0",
        Some("github:acme/other"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let rebound = json_lines(&audit_cli(
        &world,
        &backend,
        &server,
        &[
            "--package",
            "@acme/widgets",
            "--since",
            &before_rebind,
            "--json",
        ],
    ));
    let got: Vec<_> = rebound
        .iter()
        .map(|e| {
            (
                e["action"].clone(),
                e["version"].clone(),
                e["detail"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("publish"), json!("2.0.0"), Value::Null),
            (
                json!("rebind"),
                json!("2.0.0"),
                json!("repository acme/widgets -> acme/other")
            ),
        ]
    );
    // Each event is also one `audit` line in the server's log (for CloudWatch Logs).
    let log = server.log();
    let audit_lines = log
        .lines()
        .filter(|l| l.contains(" audit: event={"))
        .count();
    assert_eq!(audit_lines, events.len() + rebound.len(), "{log}");
}

// ---------------------------------------------------------------------------------------------
// An audit log that cannot be written loses no write and tells the client no lie.

struct BrokenAuditLog;

#[async_trait::async_trait]
impl AuditLog for BrokenAuditLog {
    async fn append(&self, _: &AuditEvent) -> Result<(), registry::storage::StoreError> {
        Err(registry::storage::StoreError::Unavailable(
            "the audit log's disk is gone".into(),
        ))
    }

    async fn query(
        &self,
        _: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, registry::storage::StoreError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn a_failed_audit_append_keeps_the_write_and_its_answer() {
    use tower::ServiceExt;
    let tmp = tempfile::tempdir().unwrap();
    let (metadata, tarballs) = registry::storage::embedded::open(tmp.path()).unwrap();
    let config = registry::config::Config::from_lookup(|k| match k {
        "REGISTRY_UPSTREAM" => Some(String::new()),
        _ => None,
    })
    .unwrap();
    let state = registry::app::App::builder(config)
        .stores(std::sync::Arc::new(metadata), std::sync::Arc::new(tarballs))
        .audit(std::sync::Arc::new(BrokenAuditLog))
        .build()
        .await
        .unwrap();
    let app = registry::http::router(state, &registry::http::RouteGroup::ALL);
    let send = |method: &str, uri: &str, body: Vec<u8>| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        app.clone().oneshot(request)
    };
    let doc = e2e::publish_doc(
        "@acme/kept",
        "1.0.0",
        &e2e::package_tgz("@acme/kept", "1.0.0"),
    );
    let response = send("PUT", "/@acme%2fkept", serde_json::to_vec(&doc).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the client hears of its publish");
    let response = send("GET", "/@acme%2fkept", Vec::new()).await.unwrap();
    assert_eq!(response.status(), 200, "and the version is stored");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let packument: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(packument["dist-tags"]["latest"], "1.0.0");
}
