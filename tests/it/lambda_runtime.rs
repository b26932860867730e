//! The function binaries as processes, as Lambda runs them: each polls a (fake) Runtime API,
//! receives API Gateway v2 events and posts its answers back.

use e2e::lambda_runtime::{FakeRuntime, FunctionProcess, Outcome};
use e2e::{apigw_v2_event, package_tgz, publish_doc};
use registry::storage::MetadataStore;
use serde_json::{Value, json};

fn local_env(dir: &std::path::Path) -> Vec<(String, String)> {
    vec![(
        "REGISTRY_DATA_DIR".into(),
        dir.to_string_lossy().into_owned(),
    )]
}

/// Warm invocations timed per function after its first (cold) one.
const WARM_INVOCATIONS: usize = 25;

/// Invokes `event(i)` `WARM_INVOCATIONS` times, checking each status; the median round trip
/// through the Runtime API (what Lambda bills as duration, plus a loopback hop).
async fn warm_median(
    runtime: &mut FakeRuntime,
    event: impl Fn(usize) -> Value,
    status: u16,
) -> std::time::Duration {
    let mut times = Vec::with_capacity(WARM_INVOCATIONS);
    for i in 0..WARM_INVOCATIONS {
        let started = std::time::Instant::now();
        let r = response(runtime.invoke(event(i)).await);
        times.push(started.elapsed());
        assert_eq!(r["statusCode"], status, "{r}");
    }
    times.sort();
    times[times.len() / 2]
}

fn response(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Response(v) => v,
        Outcome::Error(e) => panic!("the function reported an error: {e}"),
    }
}

/// API Gateway's event for `npm publish` of `@acme/fn@version`.
fn publish_event(host: &Value, version: &str) -> Value {
    let doc = serde_json::to_vec(&publish_doc(
        "@acme/fn",
        version,
        &package_tgz("@acme/fn", version),
    ))
    .unwrap();
    apigw_v2_event(
        "PUT",
        "/@acme%2Ffn",
        "",
        host.clone(),
        Some(&doc),
        "$default",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_metadata_binaries_answer_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let host = json!({ "host": "abc123.execute-api.eu-west-1.amazonaws.com", "content-type": "application/json" });

    // The publish function stores a version...
    let mut runtime = FakeRuntime::start().await;
    let function = FunctionProcess::start("publish", &runtime, &local_env(dir.path()));
    let r = response(runtime.invoke(publish_event(&host, "1.0.0")).await);
    assert_eq!(r["statusCode"], 201, "{r}");
    let first_answer = function.started.elapsed();
    let r = response(
        runtime
            .invoke(apigw_v2_event(
                "GET",
                "/@acme/fn",
                "",
                host.clone(),
                None,
                "$default",
            ))
            .await,
    );
    assert_eq!(
        r["statusCode"], 404,
        "the publish function does not serve packuments"
    );
    drop(function); // the embedded database admits one process at a time

    // ...and the metadata function serves it.
    let mut runtime = FakeRuntime::start().await;
    let function = FunctionProcess::start("metadata", &runtime, &local_env(dir.path()));
    let r = response(
        runtime
            .invoke(apigw_v2_event(
                "GET",
                "/@acme/fn",
                "write=true",
                host.clone(),
                None,
                "$default",
            ))
            .await,
    );
    assert_eq!(r["statusCode"], 200, "{r}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["dist-tags"]["latest"], "1.0.0");
    let r = response(
        runtime
            .invoke(apigw_v2_event("GET", "/-/ping", "", host, None, "$default"))
            .await,
    );
    assert_eq!(r["statusCode"], 200);
    println!(
        "publish function: process start to first answered invocation {first_answer:?} ({}, embedded storage)",
        e2e::lambda_runtime::function_build()
    );
    drop(function);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_on_the_aws_backend_answer_invocations() {
    let resources = e2e::AwsResources::create("fn", e2e::S3Host::Different);
    let host = json!({ "host": "abc123.execute-api.eu-west-1.amazonaws.com", "x-forwarded-proto": "https", "content-type": "application/json" });

    // Each function's event, for its first (cold) invocation and its warm ones alike.
    let publish_event = |version: &str| publish_event(&host, version);
    let tarball_event = || {
        apigw_v2_event(
            "GET",
            "/@acme/fn/-/fn-1.0.0.tgz",
            "",
            host.clone(),
            None,
            "prod",
        )
    };
    let metadata_event =
        || apigw_v2_event("GET", "/@acme%2ffn", "", host.clone(), None, "$default");

    let mut runtime = FakeRuntime::start().await;
    let publish = FunctionProcess::start("publish", &runtime, &resources.env);
    let r = response(runtime.invoke(publish_event("1.0.0")).await);
    assert_eq!(r["statusCode"], 201, "{r}");
    let publish_first = publish.started.elapsed();
    let publish_warm = warm_median(
        &mut runtime,
        |i| publish_event(&format!("1.0.{}", i + 1)),
        201,
    )
    .await;

    let mut runtime = FakeRuntime::start().await;
    let tarball = FunctionProcess::start("tarball", &runtime, &resources.env);
    let r = response(runtime.invoke(tarball_event()).await);
    let tarball_first = tarball.started.elapsed();
    assert_eq!(r["statusCode"], 302, "{r}");
    let tarball_warm = warm_median(&mut runtime, |_| tarball_event(), 302).await;
    let location = r["headers"]["location"].as_str().unwrap();
    let bytes = reqwest::get(location).await.unwrap();
    assert_eq!(bytes.status(), 200);
    assert_eq!(
        e2e::integrity(&bytes.bytes().await.unwrap()),
        e2e::integrity(&package_tgz("@acme/fn", "1.0.0"))
    );

    let mut runtime = FakeRuntime::start().await;
    let metadata = FunctionProcess::start("metadata", &runtime, &resources.env);
    let r = response(runtime.invoke(metadata_event()).await);
    let metadata_first = metadata.started.elapsed();
    assert_eq!(r["statusCode"], 200, "{r}");
    let metadata_init = runtime.first_poll().unwrap() - metadata.started;
    // The rebuilt document is stored after the response, before the function asks for more.
    runtime.idle().await;
    let metadata_busy = metadata.started.elapsed();
    let snapshots = resources
        .objects(registry::storage::aws::layout::ObjectKey::SNAPSHOTS)
        .await;
    let [(key, snapshot)] = &snapshots[..] else {
        panic!("one snapshot stored after the first read, not {snapshots:?}");
    };
    let snapshot: Value = serde_json::from_slice(snapshot).unwrap();
    let stored = resources
        .storage()
        .package(&registry::domain::PackageName::parse("@acme/fn").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        snapshot["package"]["revision"], stored.revision,
        "{key} holds the current revision"
    );
    let metadata_warm = warm_median(&mut runtime, |_| metadata_event(), 200).await;
    // A new instance reading a package that has not changed since it was last read: its
    // revision's document is in S3, so the read is one GetItem and one GetObject.
    let mut runtime = FakeRuntime::start().await;
    let metadata = FunctionProcess::start("metadata", &runtime, &resources.env);
    let r = response(runtime.invoke(metadata_event()).await);
    let metadata_unchanged_first = metadata.started.elapsed();
    assert_eq!(r["statusCode"], 200, "{r}");
    // Search and the web pages are the metadata function's too.
    let r = response(
        runtime
            .invoke(apigw_v2_event(
                "GET",
                "/-/v1/search",
                "text=fn",
                host.clone(),
                None,
                "$default",
            ))
            .await,
    );
    assert_eq!(r["statusCode"], 200, "{r}");
    let found: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["objects"][0]["package"]["name"], "@acme/fn");
    let r = response(
        runtime
            .invoke(apigw_v2_event(
                "GET",
                "/-/web/package/@acme/fn",
                "",
                host.clone(),
                None,
                "$default",
            ))
            .await,
    );
    assert_eq!(r["statusCode"], 200, "{r}");
    assert!(
        r["headers"]["content-type"]
            .as_str()
            .is_some_and(|t| t.starts_with("text/html")),
        "{r}"
    );
    println!(
        "AWS backend, {}: process start to first answered invocation (SDK clients built, one \
         round of storage requests): publish {publish_first:?}, tarball {tarball_first:?}, \
         metadata {metadata_first:?} (first read after a write: document rebuilt from the \
         table; stored in S3 after the response, instance busy until {metadata_busy:?}), metadata {metadata_unchanged_first:?} (package unchanged: its document read \
         from S3); of which init (start to first poll of the Runtime API, \
         SDK clients built): metadata {metadata_init:?}. Warm invocations, median of \
         {WARM_INVOCATIONS} (emulator round trips included): publish {publish_warm:?}, \
         tarball {tarball_warm:?}, metadata (26 versions) {metadata_warm:?}",
        e2e::lambda_runtime::function_build()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_answer_503_naming_a_missing_table_or_bucket() {
    // The functions do not check at cold start (a round trip each); the request that needs the
    // missing resource says what is wrong.
    let resources = e2e::AwsResources::create("fnmissing", e2e::S3Host::Same);
    let host = json!({ "host": "abc123.execute-api.eu-west-1.amazonaws.com", "content-type": "application/json" });
    let with = |key: &str, value: &str| {
        let mut env: Vec<(String, String)> = resources
            .env
            .iter()
            .filter(|(k, _)| k != key)
            .cloned()
            .collect();
        env.push((key.into(), value.into()));
        env
    };
    let assert_503_naming = |r: &Value, what: &str| {
        assert_eq!(r["statusCode"], 503, "{r}");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {r}"));
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("{what} does not exist")), "{r}");
    };

    let table = format!("{}-missing", resources.table);
    let mut runtime = FakeRuntime::start().await;
    let _metadata = FunctionProcess::start("metadata", &runtime, &with("REGISTRY_TABLE", &table));
    let r = response(
        runtime
            .invoke(apigw_v2_event(
                "GET",
                "/@acme%2ffn",
                "",
                host.clone(),
                None,
                "$default",
            ))
            .await,
    );
    assert_503_naming(&r, &format!("DynamoDB table '{table}'"));

    let bucket = format!("{}-missing", resources.bucket);
    let mut runtime = FakeRuntime::start().await;
    let _publish = FunctionProcess::start("publish", &runtime, &with("REGISTRY_BUCKET", &bucket));
    let r = response(runtime.invoke(publish_event(&host, "1.0.0")).await);
    assert_503_naming(&r, &format!("S3 bucket '{bucket}'"));
}

/// The pull-through cache in the Lambda functions on the AWS backend: the metadata function
/// fetches and keeps an upstream packument (tarball URLs pointing at the API); the tarball
/// function sends the client upstream for a tarball larger than it may fetch while the client
/// waits, fetches, checks and keeps it after responding, and serves it from S3 from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_proxy_the_upstream_and_keep_large_tarballs_after_responding() {
    let resources = e2e::AwsResources::create("fn-upstream", e2e::S3Host::Same);
    let up = e2e::fake_upstream::FakeUpstream::start().await;
    let integrity = up.add("big-pkg", "1.0.0", &[]);
    let host = json!({ "host": "abc123.execute-api.eu-west-1.amazonaws.com", "x-forwarded-proto": "https" });
    let mut env = resources.env.clone();
    env.push(("REGISTRY_UPSTREAM".into(), up.url.clone()));
    // Every tarball is "too large to fetch while the client waits".
    env.push(("REGISTRY_UPSTREAM_INLINE_MAX_BYTES".into(), "1".into()));

    let mut runtime = FakeRuntime::start().await;
    let _metadata = FunctionProcess::start("metadata", &runtime, &env);
    let r = response(
        runtime
            .invoke(apigw_v2_event(
                "GET",
                "/big-pkg",
                "",
                host.clone(),
                None,
                "$default",
            ))
            .await,
    );
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(r["headers"]["x-upstream-cache"], "MISS");
    let body = if r["isBase64Encoded"] == true {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(r["body"].as_str().unwrap())
            .unwrap()
    } else {
        r["body"].as_str().unwrap().as_bytes().to_vec()
    };
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        doc["versions"]["1.0.0"]["dist"]["tarball"],
        "https://abc123.execute-api.eu-west-1.amazonaws.com/big-pkg/-/big-pkg-1.0.0.tgz"
    );

    let mut runtime = FakeRuntime::start().await;
    let _tarball = FunctionProcess::start("tarball", &runtime, &env);
    let event = || {
        apigw_v2_event(
            "GET",
            "/big-pkg/-/big-pkg-1.0.0.tgz",
            "",
            host.clone(),
            None,
            "$default",
        )
    };
    let r = response(runtime.invoke(event()).await);
    assert_eq!(r["statusCode"], 302, "{r}");
    assert_eq!(
        r["headers"]["location"],
        format!("{}/big-pkg/-/big-pkg-1.0.0.tgz", up.url),
        "this one request goes upstream"
    );
    // Kept after the response, before the function asks for its next invocation.
    runtime.idle().await;
    let fetched = up.count("/big-pkg/-/big-pkg-1.0.0.tgz");
    assert_eq!(fetched, 1);
    let r = response(runtime.invoke(event()).await);
    assert_eq!(r["statusCode"], 302, "{r}");
    let location = r["headers"]["location"].as_str().unwrap();
    assert!(
        location.contains("upstream/tarballs/"),
        "from S3: {location}"
    );
    let bytes = reqwest::get(location).await.unwrap().bytes().await.unwrap();
    assert_eq!(e2e::integrity(&bytes), integrity);
    assert_eq!(
        up.count("/big-pkg/-/big-pkg-1.0.0.tgz"),
        fetched,
        "not fetched again"
    );
}
