//! Handler tests: real `http::Request`s through the library's router, embedded storage in a temp
//! dir. Each route group is mounted alone, as its Lambda function will mount it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use registry::config::Config;
use registry::domain::integrity::Digests;
use registry::http::{AppState, RouteGroup, router};
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
    registry::server::build_state(config).await.unwrap()
}

fn tarball(name: &str, version: &str) -> Vec<u8> {
    use std::io::Write;
    let manifest = serde_json::to_vec(&json!({"name": name, "version": version})).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_path("package/package.json").unwrap();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, manifest.as_slice()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn publish_body(name: &str, version: &str) -> Vec<u8> {
    let t = tarball(name, version);
    let d = Digests::of(&t);
    serde_json::to_vec(&json!({
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {version: {"name": name, "version": version, "dist": {"integrity": d.integrity, "shasum": d.sha1_hex}}},
        "_attachments": {format!("{name}-{version}.tgz"): {"data": base64::engine::general_purpose::STANDARD.encode(&t), "length": t.len()}}
    }))
    .unwrap()
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
