//! The Lambda adapter as Lambda runs it: real API Gateway HTTP API (payload 2.0) events through
//! lambda_http's own `Adapter` (what `lambda_http::run` wraps a service in), each route group
//! mounted alone as its function mounts it, and the response serialised as Lambda returns it.

use std::sync::Arc;

use base64::Engine;
use e2e::{apigw_v2_event as event, package_tgz, publish_doc};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent};
use registry::config::Config;
use registry::http::{AppState, RouteGroup, router};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn state(dir: &std::path::Path) -> Arc<AppState> {
    let data = dir.to_string_lossy().into_owned();
    // No REGISTRY_PUBLIC_URL: on Lambda links come from the request's host and stage.
    let config = Config::from_lookup(|k| match k {
        "REGISTRY_DATA_DIR" => Some(data.clone()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        _ => None,
    })
    .unwrap();
    registry::app::App::builder(config).build().await.unwrap()
}

/// Runs one event through the adapter and returns Lambda's JSON response.
async fn invoke(app: &axum::Router, event: Value) -> Value {
    let request: LambdaRequest =
        serde_json::from_value(event).expect("a valid API Gateway v2 event");
    let adapter = Adapter::from(registry::lambda::service(app.clone()));
    let response = adapter
        .oneshot(LambdaEvent::new(request, Context::default()))
        .await
        .unwrap();
    serde_json::to_value(response).unwrap()
}

fn body_of(response: &Value) -> Value {
    let text = response["body"].as_str().unwrap_or("");
    let bytes = if response["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    } else {
        text.as_bytes().to_vec()
    };
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn header<'a>(response: &'a Value, name: &str) -> Option<&'a str> {
    response["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

#[tokio::test]
async fn api_gateway_v2_events_through_each_function() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let audit = state.audit.clone();
    let metadata = router(state.clone(), &[RouteGroup::Metadata]);
    let publish = router(state.clone(), &[RouteGroup::Publish]);
    let tarball = router(state.clone(), &[RouteGroup::Tarball]);
    let auth = router(state, &[RouteGroup::Auth]);
    let host = "abc123.execute-api.eu-west-1.amazonaws.com";

    // Publish: npm's escaped name (upper-case %2F as some proxies send it), base64 body, mixed-case headers.
    let doc = serde_json::to_vec(&publish_doc(
        "@acme/lambda",
        "1.0.0",
        &package_tgz("@acme/lambda", "1.0.0"),
    ))
    .unwrap();
    let headers = json!({ "Content-Type": "application/json", "host": host, "x-forwarded-proto": "https", "NPM-Command": "publish" });
    let put = event(
        "PUT",
        "/@acme%2Flambda",
        "",
        headers.clone(),
        Some(&doc),
        "$default",
    );
    let r = invoke(&publish, put.clone()).await;
    assert_eq!(r["statusCode"], 201, "{r}");
    let r = invoke(&metadata, put).await;
    assert_eq!(
        r["statusCode"], 404,
        "the metadata function must not publish"
    );
    assert_eq!(body_of(&r)["code"], "not_found");
    // The publish function recorded the publish in the audit log (the data directory's file);
    // the refused request, which reached no handler, recorded nothing.
    let events = audit
        .query(&registry::domain::audit::AuditQuery::default())
        .await
        .unwrap();
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.package.as_ref().map(std::string::ToString::to_string),
                e.version.as_ref().map(std::string::ToString::to_string),
                e.outcome.is_ok(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(
            "publish",
            Some("@acme/lambda".to_string()),
            Some("1.0.0".to_string()),
            true
        )]
    );
    assert!(dir.path().join("audit.jsonl").exists());

    // Packument with `/` and with `%2F`, a query string, and the abbreviated Accept header.
    let get_headers = json!({ "Accept": "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*", "host": host, "x-forwarded-proto": "https" });
    for path in ["/@acme/lambda", "/@acme%2Flambda", "/@acme%2flambda"] {
        let r = invoke(
            &metadata,
            event(
                "GET",
                path,
                "write=true",
                get_headers.clone(),
                None,
                "$default",
            ),
        )
        .await;
        assert_eq!(r["statusCode"], 200, "{path}: {r}");
        assert_eq!(
            header(&r, "content-type"),
            Some("application/vnd.npm.install-v1+json")
        );
        let doc = body_of(&r);
        assert_eq!(
            doc["versions"]["1.0.0"]["dist"]["tarball"],
            format!("https://{host}/@acme/lambda/-/lambda-1.0.0.tgz"),
            "links come from the request's host"
        );
    }

    // A named stage: the path carries it, and so must the links.
    let r = invoke(
        &metadata,
        event(
            "GET",
            "/prod/@acme%2Flambda",
            "",
            get_headers.clone(),
            None,
            "prod",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(
        body_of(&r)["versions"]["1.0.0"]["dist"]["tarball"],
        format!("https://{host}/prod/@acme/lambda/-/lambda-1.0.0.tgz")
    );
    // A client cannot inject a base path on the $default stage.
    let spoof = json!({ "host": host, "x-registry-base-path": "/evil" });
    let r = invoke(
        &metadata,
        event("GET", "/@acme/lambda", "", spoof, None, "$default"),
    )
    .await;
    assert_eq!(
        body_of(&r)["versions"]["1.0.0"]["dist"]["tarball"],
        format!("http://{host}/@acme/lambda/-/lambda-1.0.0.tgz")
    );

    // ETag revalidation through the adapter.
    let r = invoke(
        &metadata,
        event(
            "GET",
            "/@acme/lambda",
            "",
            get_headers.clone(),
            None,
            "$default",
        ),
    )
    .await;
    let etag = header(&r, "etag").unwrap().to_string();
    let mut revalidate = get_headers.clone();
    revalidate["If-None-Match"] = json!(etag);
    let r = invoke(
        &metadata,
        event("GET", "/@acme/lambda", "", revalidate, None, "$default"),
    )
    .await;
    assert_eq!(r["statusCode"], 304);

    // Tarball: served by the tarball function only (bytes here, since this state is local storage).
    let r = invoke(
        &tarball,
        event(
            "GET",
            "/@acme/lambda/-/lambda-1.0.0.tgz",
            "",
            get_headers.clone(),
            None,
            "$default",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 200);
    assert_eq!(
        r["isBase64Encoded"], true,
        "binary bodies must be base64 in the Lambda response"
    );
    let r = invoke(
        &metadata,
        event(
            "GET",
            "/@acme/lambda/-/lambda-1.0.0.tgz",
            "",
            get_headers.clone(),
            None,
            "$default",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 404);

    // Dist-tag write through publish; JSON string body, not base64-encoded.
    let mut tag = event(
        "PUT",
        "/-/package/@acme%2flambda/dist-tags/beta",
        "",
        headers.clone(),
        None,
        "$default",
    );
    tag["body"] = json!("\"1.0.0\"");
    tag["isBase64Encoded"] = json!(false);
    let r = invoke(&publish, tag).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    let r = invoke(
        &metadata,
        event(
            "GET",
            "/-/package/@acme/lambda/dist-tags",
            "",
            get_headers.clone(),
            None,
            "$default",
        ),
    )
    .await;
    assert_eq!(body_of(&r), json!({ "latest": "1.0.0", "beta": "1.0.0" }));

    // Auth: whoami answers only there.
    let r = invoke(
        &auth,
        event(
            "GET",
            "/-/whoami",
            "",
            get_headers.clone(),
            None,
            "$default",
        ),
    )
    .await;
    assert_eq!(body_of(&r)["username"], "anonymous");
    let r = invoke(
        &tarball,
        event("GET", "/-/whoami", "", get_headers, None, "$default"),
    )
    .await;
    assert_eq!(r["statusCode"], 404);
}

/// Lambda's cap on a synchronous invocation's request payload (the whole event).
const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

fn template_body_limit() -> usize {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/template.yaml"
    ))
    .unwrap();
    let line = template
        .lines()
        .find(|l| l.contains("REGISTRY_MAX_BODY_BYTES:"))
        .expect("the template sets the publish function's body limit");
    line.split('"').nth(1).unwrap().parse().unwrap()
}

/// A package tarball of about `size` bytes that gzip cannot shrink.
fn incompressible_tgz(name: &str, version: &str, size: usize) -> Vec<u8> {
    let mut noise = vec![0u8; size];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let manifest = serde_json::to_vec(&json!({ "name": name, "version": version })).unwrap();
    e2e::tgz(&[
        ("package/package.json", &manifest),
        ("package/blob.bin", &noise),
    ])
}

#[tokio::test]
async fn the_largest_publish_through_api_gateway_and_lambda() {
    let limit = template_body_limit();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().into_owned();
    let config = Config::from_lookup(|k| match k {
        "REGISTRY_DATA_DIR" => Some(data.clone()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        "REGISTRY_MAX_BODY_BYTES" => Some(limit.to_string()),
        _ => None,
    })
    .unwrap();
    let publish = router(
        registry::app::App::builder(config).build().await.unwrap(),
        &[RouteGroup::Publish],
    );
    let name = "@acme/big";
    let body_for = |size: usize| {
        serde_json::to_vec(&publish_doc(
            name,
            "1.0.0",
            &incompressible_tgz(name, "1.0.0", size),
        ))
        .unwrap()
    };

    // The largest incompressible payload whose publish body fits the function's limit.
    let (mut low, mut high) = (0usize, limit);
    while high - low > 256 {
        let mid = usize::midpoint(low, high);
        if body_for(mid).len() <= limit {
            low = mid;
        } else {
            high = mid;
        }
    }
    let body = body_for(low);
    let tarball_size = incompressible_tgz(name, "1.0.0", low).len();
    let headers = json!({ "host": "abc123.execute-api.eu-west-1.amazonaws.com", "content-type": "application/json", "npm-command": "publish" });
    let as_base64 = event(
        "PUT",
        "/@acme%2fbig",
        "",
        headers.clone(),
        Some(&body),
        "$default",
    );
    let mut as_text = as_base64.clone();
    as_text["body"] = json!(String::from_utf8(body.clone()).unwrap());
    as_text["isBase64Encoded"] = json!(false);
    let (text_size, base64_size) = (
        serde_json::to_vec(&as_text).unwrap().len(),
        serde_json::to_vec(&as_base64).unwrap().len(),
    );
    println!(
        "largest tarball that publishes through the Lambda shape: {tarball_size} bytes ({:.2} MiB); publish body {} bytes; event {text_size} bytes as text, {base64_size} bytes base64-encoded (Lambda's limit {LAMBDA_PAYLOAD_LIMIT})",
        tarball_size as f64 / 1048576.0,
        body.len()
    );
    assert!(
        base64_size <= LAMBDA_PAYLOAD_LIMIT && text_size <= LAMBDA_PAYLOAD_LIMIT,
        "the limit must keep every accepted body inside Lambda's payload cap"
    );
    let r = invoke(&publish, as_base64).await;
    assert_eq!(r["statusCode"], 201, "{}", body_of(&r));

    // Just above it: a clear 413 from the function.
    let bigger = body_for(low + 4096);
    assert!(bigger.len() > limit);
    let r = invoke(
        &publish,
        event(
            "PUT",
            "/@acme%2fbig",
            "",
            headers,
            Some(&bigger),
            "$default",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 413);
    let message = body_of(&r)["error"].as_str().unwrap().to_string();
    assert!(
        message.contains("larger than this registry's limit"),
        "{message}"
    );
}

/// GitHub mode through the functions as API Gateway delivers requests (the fake GitHub):
/// `npm trust` (npm's escaped name, a stage prefix, the JSON body npm sends) reaches the publish
/// function, and a workflow's `GITHUB_TOKEN` reads and is refused writes.
#[tokio::test]
async fn github_mode_trust_routes_and_installation_tokens_through_the_functions() {
    use e2e::fake_github::{FakeGithub, Permission};
    let dir = tempfile::tempdir().unwrap();
    let github = FakeGithub::start().await;
    let token = format!("ghp_{}", hex::encode(rand::random::<[u8; 18]>()));
    github.add_user("alice", &token);
    github.add_repo("acme", "widgets", true);
    github.grant("acme", "widgets", "alice", Permission::Admin);
    let data = dir.path().to_string_lossy().into_owned();
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let config = Config::from_lookup(|k| match k {
        "REGISTRY_DATA_DIR" => Some(data.clone()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        "REGISTRY_AUTH" => Some("github".into()),
        "GITHUB_API_URL" => Some(github.url.clone()),
        "REGISTRY_TOKEN_SECRET" => Some(secret.clone()),
        _ => None,
    })
    .unwrap();
    let state = registry::app::App::builder(config).build().await.unwrap();
    // Trust routes belong to the publish function: making a configuration may bind a name.
    let auth = router(state.clone(), &[RouteGroup::Auth]);
    let metadata = router(state.clone(), &[RouteGroup::Metadata]);
    let publish = router(state, &[RouteGroup::Publish]);
    let host = "abc123.execute-api.eu-west-1.amazonaws.com";
    let headers = json!({ "content-type": "application/json", "host": host, "authorization": format!("Bearer {token}"), "npm-command": "trust" });
    let body = serde_json::to_vec(&json!([{ "type": "github", "claims": { "repository": "acme/widgets", "workflow_ref": { "file": "publish.yml" } }, "permissions": ["createPackage"] }])).unwrap();

    let post = event(
        "POST",
        "/prod/-/package/@acme%2ffresh/trust",
        "",
        headers.clone(),
        Some(&body),
        "prod",
    );
    let r = invoke(&auth, post.clone()).await;
    assert_eq!(
        r["statusCode"], 404,
        "the auth function must not answer trust routes: {r}"
    );
    let r = invoke(&publish, post).await;
    assert_eq!(r["statusCode"], 201, "{r}");
    let id = body_of(&r)[0]["id"].as_str().unwrap().to_string();
    let list = event(
        "GET",
        "/prod/-/package/@acme%2Ffresh/trust",
        "",
        headers.clone(),
        None,
        "prod",
    );
    let r = invoke(&publish, list.clone()).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(
        body_of(&r)[0]["claims"]["workflow_ref"]["file"],
        "publish.yml"
    );
    let r = invoke(
        &publish,
        event(
            "DELETE",
            &format!("/prod/-/package/@acme%2ffresh/trust/{id}"),
            "",
            headers.clone(),
            None,
            "prod",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(body_of(&invoke(&publish, list).await), json!([]));

    // A workflow's GITHUB_TOKEN (an installation token reaching acme/widgets) through the
    // functions: it reads what it reaches, hears "not found" with what it reaches for the rest
    // (as for a missing name), and never publishes.
    github.add_repo("acme", "secret", true);
    github.grant("acme", "secret", "alice", Permission::Admin);
    let ghs = format!("ghs_{}", hex::encode(rand::random::<[u8; 18]>()));
    github.add_workflow_token(&ghs, "acme", "widgets");
    for (name, repo) in [
        ("@acme/widgets", "github:acme/widgets"),
        ("@acme/secret", "github:acme/secret"),
    ] {
        let doc = serde_json::to_vec(&e2e::api::doc(name, "1.0.0", Some(repo))).unwrap();
        let r = invoke(
            &publish,
            event(
                "PUT",
                &format!("/prod/{}", e2e::escaped(name)),
                "",
                headers.clone(),
                Some(&doc),
                "prod",
            ),
        )
        .await;
        assert_eq!(r["statusCode"], 201, "{r}");
    }
    let ci = json!({ "host": host, "authorization": format!("Bearer {ghs}"), "accept": "application/json" });
    let read = |name: &str| {
        event(
            "GET",
            &format!("/prod/{}", e2e::escaped(name)),
            "",
            ci.clone(),
            None,
            "prod",
        )
    };
    let r = invoke(&metadata, read("@acme/widgets")).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    let hidden = invoke(&metadata, read("@acme/secret")).await;
    let missing = invoke(&metadata, read("@acme/nothing")).await;
    assert_eq!(hidden["statusCode"], 404, "{hidden}");
    let hidden_error = body_of(&hidden)["error"].as_str().unwrap().to_string();
    assert!(
        hidden_error.contains("acme/widgets"),
        "says what the token reaches: {hidden_error}"
    );
    assert_eq!(
        hidden_error.replace("@acme/secret", "X"),
        body_of(&missing)["error"]
            .as_str()
            .unwrap()
            .replace("@acme/nothing", "X")
    );
    let doc = serde_json::to_vec(&e2e::api::doc(
        "@acme/widgets",
        "1.0.1",
        Some("github:acme/widgets"),
    ))
    .unwrap();
    let mut ci_write = ci.clone();
    ci_write["content-type"] = json!("application/json");
    let r = invoke(
        &publish,
        event(
            "PUT",
            "/prod/@acme%2fwidgets",
            "",
            ci_write,
            Some(&doc),
            "prod",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 403, "{r}");
    assert!(
        body_of(&r)["error"]
            .as_str()
            .unwrap()
            .contains("npm trust github"),
        "{r}"
    );
}

/// Trusted publishing end to end through the functions as API Gateway delivers requests, on the
/// AWS backend (DynamoDB keeps the configuration, the minted token's grant, the used `jti` and
/// the audit log): `npm trust github` (publish function), npm's exchange of the workflow's ID
/// token (auth function), `npm publish` with the minted token (publish function), npm's
/// visibility question with it (metadata function), a replayed ID token refused, and the audit
/// log naming the admin and the workflow run.
#[tokio::test]
async fn trusted_publishing_through_the_functions_on_dynamodb() {
    use e2e::github_world::World;
    use e2e::oidc_issuer::{OidcIssuer, RunSpec};
    use registry::domain::audit::AuditQuery;
    use registry::storage::AuditLog;

    let dir = tempfile::tempdir().unwrap();
    let resources = e2e::AwsResources::create("lambdatp", e2e::S3Host::Same);
    let storage = Arc::new(resources.storage());
    let world = World::start().await;
    let acme_id = world.github.account_id("acme").to_string();
    let issuer = OidcIssuer::start(RunSpec::new("acme/widgets", &acme_id)).await;
    let data = dir.path().to_string_lossy().into_owned();
    let mut env = resources.env.clone();
    env.extend(world.github_env());
    env.push(("REGISTRY_OIDC_ISSUER".into(), issuer.url.clone()));
    env.push(("REGISTRY_DATA_DIR".into(), data));
    env.push(("REGISTRY_UPSTREAM".into(), String::new()));
    let config = Config::from_lookup(|k| {
        env.iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    let retention = registry::storage::AuditRetention::days(config.audit.retention_days);
    let audit = Arc::new(storage.audit_log(retention));
    let state = registry::app::App::builder(config)
        .stores(storage.clone(), storage.clone())
        .kv(storage.clone())
        .audit(audit.clone())
        .build()
        .await
        .unwrap();
    let auth = router(state.clone(), &[RouteGroup::Auth]);
    let metadata = router(state.clone(), &[RouteGroup::Metadata]);
    let publish = router(state, &[RouteGroup::Publish]);
    let host = "abc123.execute-api.eu-west-1.amazonaws.com";
    let npm = "npm/11.19.1 node/v22.12.0 linux x64 workspaces/false ci/github-actions";
    let as_bearer = |token: &str| {
        json!({ "host": host, "x-forwarded-proto": "https", "content-type": "application/json",
                "authorization": format!("Bearer {token}"), "user-agent": npm })
    };

    // `npm trust github @acme/widgets --file publish.yml --repo acme/widgets --env npm
    // --allow-publish`, by the repository's admin, before the name has a version.
    let body = serde_json::to_vec(&json!([{ "type": "github",
        "claims": { "repository": "acme/widgets", "workflow_ref": { "file": "publish.yml" },
                    "environment": "npm" },
        "permissions": ["createPackage"] }]))
    .unwrap();
    let r = invoke(
        &publish,
        event(
            "POST",
            "/-/package/@acme%2fwidgets/trust",
            "",
            as_bearer(&world.alice.token),
            Some(&body),
            "$default",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 201, "{r}");

    // The workflow's exchange: its ID token for this registry's host, on the auth function.
    issuer.set_run(RunSpec {
        environment: Some("npm".into()),
        ..RunSpec::new("acme/widgets", &acme_id)
    });
    let id_token = issuer.id_token(&format!("npm:{host}"));
    let exchange = event(
        "POST",
        "/-/npm/v1/oidc/token/exchange/package/@acme%2fwidgets",
        "",
        as_bearer(&id_token),
        None,
        "$default",
    );
    let r = invoke(&auth, exchange.clone()).await;
    assert_eq!(r["statusCode"], 201, "{r}");
    let token = body_of(&r)["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("tpub_"), "{token}");

    // `npm publish` with the minted token, on the publish function.
    let doc = serde_json::to_vec(&e2e::api::doc(
        "@acme/widgets",
        "1.0.0",
        Some("github:acme/widgets"),
    ))
    .unwrap();
    let mut put = as_bearer(&token);
    put["npm-command"] = json!("publish");
    let r = invoke(
        &publish,
        event("PUT", "/@acme%2fwidgets", "", put, Some(&doc), "$default"),
    )
    .await;
    assert_eq!(r["statusCode"], 201, "{r}");

    // npm's visibility question, with the minted token, on the metadata function.
    let r = invoke(
        &metadata,
        event(
            "GET",
            "/-/package/@acme%2fwidgets/visibility",
            "",
            as_bearer(&token),
            None,
            "$default",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(body_of(&r), json!({ "public": false }));
    let r = invoke(
        &metadata,
        event(
            "GET",
            "/@acme%2fwidgets",
            "",
            as_bearer(&world.alice.token),
            None,
            "$default",
        ),
    )
    .await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(body_of(&r)["dist-tags"]["latest"], "1.0.0");

    // The same ID token again: refused (its `jti` is kept in DynamoDB until it expires).
    let r = invoke(&auth, exchange).await;
    assert_eq!(r["statusCode"], 401, "{r}");
    assert!(
        body_of(&r)["message"]
            .as_str()
            .unwrap()
            .contains("already exchanged"),
        "{r}"
    );

    // The audit log (DynamoDB's items) names the admin and the workflow run, never a token.
    let events = audit
        .query(&AuditQuery {
            package: Some(registry::domain::PackageName::parse("@acme/widgets").unwrap()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let listing = serde_json::to_string_pretty(&events).unwrap();
    for secret in [&token, &id_token, &world.alice.token] {
        assert!(
            !listing.contains(secret.as_str()),
            "a token in the audit log"
        );
    }
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"]["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("trust-create", "ok"),
            ("token-exchange", "ok"),
            ("publish", "ok"),
            ("token-exchange", "refused"),
        ],
        "{listing}"
    );
    assert_eq!(events[0]["actor"]["login"], "alice", "{listing}");
    assert_eq!(events[0]["credential"], "github-token", "{listing}");
    for e in &events[1..] {
        assert_eq!(e["actor"]["kind"], "workflow", "{listing}");
        assert_eq!(e["actor"]["repository"], "acme/widgets", "{listing}");
        assert_eq!(e["actor"]["environment"], "npm", "{listing}");
        assert!(
            e["actor"]["workflow_ref"]
                .as_str()
                .unwrap()
                .starts_with("acme/widgets/.github/workflows/publish.yml@"),
            "{listing}"
        );
        assert_eq!(e["credential"], "trusted-publishing", "{listing}");
    }
    assert_eq!(events[2]["version"], "1.0.0", "{listing}");
    assert!(
        events[3]["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("already exchanged"),
        "{listing}"
    );
    // Kept in the table itself, out of the package's partition.
    let items = resources.table_items().await;
    assert!(
        items
            .iter()
            .any(|i| i.contains("~audit/package/@acme/widgets") && i.contains("token-exchange")),
        "{items:?}"
    );
    assert!(
        !items
            .iter()
            .any(|i| i.contains(&token) || i.contains(&id_token)),
        "no token is stored as is"
    );
}
