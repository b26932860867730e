//! Handler tests: real `http::Request`s through the library's router, embedded storage in a temp
//! dir. Each route group is mounted alone, as its Lambda function will mount it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use registry::config::Config;
use registry::domain::integrity::Digests;
use registry::http::{AppState, RouteGroup, router};
use registry::testing::{package_tgz, publish_doc};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn state(dir: &std::path::Path) -> Arc<AppState> {
    let data = dir.to_string_lossy().into_owned();
    let config = Config::from_lookup(|k| match k {
        "REGISTRY_DATA_DIR" => Some(data.clone()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        "REGISTRY_PUBLIC_URL" => Some("https://registry.test/stage".into()),
        _ => None,
    })
    .unwrap();
    registry::app::App::builder(config).build().await.unwrap()
}

/// A publish of a minimal package, as npm sends it.
fn publish_body(name: &str, version: &str) -> Vec<u8> {
    let tarball = package_tgz(name, version);
    serde_json::to_vec(&publish_doc(name, version, &tarball)).unwrap()
}

async fn send(app: &axum::Router, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn each_group_serves_only_its_own_routes() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let metadata = router(state.clone(), &[RouteGroup::Metadata]);
    let publish = router(state.clone(), &[RouteGroup::Publish]);
    let tarball = router(state.clone(), &[RouteGroup::Tarball]);
    let auth = router(state, &[RouteGroup::Auth]);

    let body = publish_body("@s/n", "1.0.0");
    let (status, error) = send(&metadata, "PUT", "/stage/@s%2fn", body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "metadata must not publish");
    assert_eq!(error["error"], "not found");
    let (status, _) = send(&publish, "PUT", "/stage/@s%2fn", body).await;
    assert_eq!(status, StatusCode::CREATED);

    // The public URL's path prefix is stripped from routes and added to links.
    let (status, doc) = send(&metadata, "GET", "/stage/@s/n", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc["versions"]["1.0.0"]["dist"]["tarball"],
        "https://registry.test/stage/@s/n/-/n-1.0.0.tgz"
    );
    let (status, _) = send(&publish, "GET", "/stage/@s/n", vec![]).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "publish must not serve packuments"
    );

    let request = Request::builder()
        .uri("/stage/@s/n/-/n-1.0.0.tgz")
        .body(Body::empty())
        .unwrap();
    let response = tarball.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        Digests::of(&bytes).integrity,
        doc["versions"]["1.0.0"]["dist"]["integrity"]
    );
    let (status, _) = send(&metadata, "GET", "/stage/@s/n/-/n-1.0.0.tgz", vec![]).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "metadata must not serve tarballs"
    );

    let (status, who) = send(&auth, "GET", "/stage/-/whoami", vec![]).await;
    assert_eq!(
        (status, who["username"].as_str()),
        (StatusCode::OK, Some("anonymous"))
    );
    let (status, _) = send(&tarball, "GET", "/stage/-/whoami", vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Paths without the prefix still route (a custom domain mapping may strip it).
    let (status, _) = send(&metadata, "GET", "/@s%2fn/1.0.0", vec![]).await;
    assert_eq!(status, StatusCode::OK);
}

/// Sends a GET with `headers` and returns status, response headers and the raw body.
async fn get_raw(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method("GET").uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    (status, headers, body)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Packuments are served from bytes rendered once per revision: gzip when asked (and only then),
/// a strong ETag per representation, 304 for either, and a write is visible at once.
#[tokio::test]
async fn rendered_packuments_follow_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let app = router(state.clone(), &[RouteGroup::Metadata, RouteGroup::Publish]);
    let uri = "/stage/@cache%2fpkg";
    let (s, _) = send(&app, "PUT", uri, publish_body("@cache/pkg", "1.0.0")).await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, plain_headers, plain) = get_raw(&app, uri, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(plain_headers.get("content-encoding").is_none());
    let doc: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");

    // q=0 refuses gzip; a listed gzip gets it, with the same JSON inside and its own ETag.
    let (_, h, body) = get_raw(&app, uri, &[("accept-encoding", "gzip;q=0, identity")]).await;
    assert!(h.get("content-encoding").is_none());
    assert_eq!(body, plain);
    let (s, gz_headers, gz) = get_raw(&app, uri, &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(gz_headers["content-encoding"], "gzip");
    assert_eq!(gz_headers["content-type"], "application/json");
    assert_eq!(gunzip(&gz), plain);
    assert!(gz.len() < plain.len());
    let (etag, gz_etag) = (
        plain_headers["etag"].to_str().unwrap().to_string(),
        gz_headers["etag"].to_str().unwrap().to_string(),
    );
    assert_ne!(etag, gz_etag);
    assert!(
        plain_headers["vary"]
            .to_str()
            .unwrap()
            .contains("Accept-Encoding")
    );
    for tag in [&etag, &gz_etag] {
        let (s, _, body) = get_raw(&app, uri, &[("if-none-match", tag)]).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
    }

    // The abbreviated view is a different document with its own ETag.
    let accept = (
        "accept",
        "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*",
    );
    let (_, h, abbreviated) = get_raw(&app, uri, &[accept]).await;
    assert_eq!(h["content-type"], "application/vnd.npm.install-v1+json");
    assert_ne!(h["etag"].to_str().unwrap(), etag);
    assert!(serde_json::from_slice::<Value>(&abbreviated).unwrap()["time"].is_null());
    assert!(state.packuments.bytes() > 0);

    // A write is visible on the next read in both views, and the old ETag no longer matches.
    let (s, _) = send(&app, "PUT", uri, publish_body("@cache/pkg", "1.1.0")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, h, body) = get_raw(&app, uri, &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(h["etag"].to_str().unwrap(), etag);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["dist-tags"]["latest"], "1.1.0");
    let (_, _, body) = get_raw(&app, uri, &[accept, ("accept-encoding", "gzip")]).await;
    let doc: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
    assert!(doc["versions"]["1.1.0"].is_object());
}

/// With the cache turned off (`REGISTRY_PACKUMENT_CACHE_BYTES=0`) every read renders afresh and
/// nothing is kept.
#[tokio::test]
async fn packument_cache_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().into_owned();
    let config = Config::from_lookup(|k| match k {
        "REGISTRY_DATA_DIR" => Some(data.clone()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        "REGISTRY_PACKUMENT_CACHE_BYTES" => Some("0".into()),
        _ => None,
    })
    .unwrap();
    let state = registry::app::App::builder(config).build().await.unwrap();
    let app = router(state.clone(), &[RouteGroup::Metadata, RouteGroup::Publish]);
    let (s, _) = send(
        &app,
        "PUT",
        "/@off%2fpkg",
        publish_body("@off/pkg", "1.0.0"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, body) = get_raw(&app, "/@off%2fpkg", &[("accept-encoding", "gzip")]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        serde_json::from_slice::<Value>(&gunzip(&body)).unwrap()["versions"]["1.0.0"].is_object()
    );
    assert_eq!(state.packuments.bytes(), 0);
}

/// A burst of readers that all miss (right after a write) renders the document once: the others
/// wait for the rendering and take it from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_render_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let app = router(state.clone(), &[RouteGroup::Metadata, RouteGroup::Publish]);
    for v in ["1.0.0", "1.0.1"] {
        let (s, _) = send(&app, "PUT", "/@burst%2fpkg", publish_body("@burst/pkg", v)).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let before = state.packuments.renders();
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get_raw(&app, "/@burst%2fpkg", &[]).await })
        })
        .collect();
    for r in readers {
        let (s, _, body) = r.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert!(doc["versions"]["1.0.1"].is_object());
    }
    assert_eq!(state.packuments.renders() - before, 1);
}

/// `npm deprecate` and `npm star` PUT back a copy of the document read a moment earlier, without
/// `/-rev/`: a version published in between is missing from it and must survive (only npm
/// unpublish, which sends `/-rev/`, removes versions), and its dist-tags must not be reverted.
#[tokio::test]
async fn a_stale_copy_without_rev_never_unpublishes() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let app = router(state, &[RouteGroup::Metadata, RouteGroup::Publish]);
    let uri = "/stage/@race%2fpkg";
    let (s, _) = send(&app, "PUT", uri, publish_body("@race/pkg", "1.0.0")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, mut stale) = send(&app, "GET", &format!("{uri}?write=true"), Vec::new()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(&app, "PUT", uri, publish_body("@race/pkg", "1.1.0")).await;
    assert_eq!(s, StatusCode::CREATED);

    stale["versions"]["1.0.0"]["deprecated"] = json!("use 1.1");
    let (s, b) = send(&app, "PUT", uri, serde_json::to_vec(&stale).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, doc) = send(&app, "GET", uri, Vec::new()).await;
    assert_eq!(doc["versions"]["1.0.0"]["deprecated"], "use 1.1");
    assert!(doc["versions"]["1.1.0"].is_object(), "{doc}");
    assert_eq!(doc["dist-tags"]["latest"], "1.1.0");

    // The same body under /-rev/ is an unpublish, refused while its revision is out of date.
    let rev = stale["_rev"].as_str().unwrap();
    let (s, b) = send(
        &app,
        "PUT",
        &format!("{uri}/-rev/{rev}"),
        serde_json::to_vec(&stale).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (_, doc) = send(&app, "GET", uri, Vec::new()).await;
    assert!(doc["versions"]["1.1.0"].is_object(), "{doc}");
}

/// An invalid dist-tag is refused as the route it names would be: by the function that owns it,
/// after the refusals that need only the request line and headers, with the tag's error.
#[tokio::test]
async fn an_invalid_tag_is_refused_in_its_routes_order() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path()).await;
    let metadata = router(state.clone(), &[RouteGroup::Metadata]);
    let publish = router(state, &[RouteGroup::Publish]);
    let path = "/-/package/@t%2fa/dist-tags/%5E1.0.0";
    let body = || serde_json::to_vec(&json!("1.0.0")).unwrap();

    let (status, answer) = send(&publish, "PUT", path, body()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.starts_with("invalid dist-tag: ") && error.contains("version range"),
        "{error}"
    );
    let (status, answer) = send(&publish, "DELETE", path, vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Another function does not own the route: the same 404 as an unknown path.
    let (status, answer) = send(&metadata, "PUT", path, body()).await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "not found", "code": "not_found"})
        )
    );

    // A cross-site write is refused first, whatever its tag.
    let request = Request::builder()
        .method("PUT")
        .uri(path)
        .header("content-type", "application/json")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(body()))
        .unwrap();
    let response = publish.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
