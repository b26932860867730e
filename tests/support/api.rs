//! Raw HTTP calls to a registry server as clients make them, for tests that drive the API
//! directly: publish documents naming a repository, requests with a token, npm login.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::github_world::User;
use crate::{Server, escaped, http, package_tgz, publish_doc};

/// A publish document naming its GitHub repository, as package.json's `repository` does.
pub fn doc(name: &str, version: &str, repository: Option<&str>) -> Value {
    let mut d = publish_doc(name, version, &package_tgz(name, version));
    if let Some(r) = repository {
        d["versions"][version]["repository"] = json!(r);
    }
    d
}

/// Sends a request with an optional bearer token and JSON body; the status, the JSON body (or
/// null) and the headers.
pub async fn send(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut request = http().request(method, url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(b);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

/// Publishes `name@version` (a generated tarball) naming `repo`; the status and the JSON body.
pub async fn publish(
    server: &Server,
    token: Option<&str>,
    name: &str,
    version: &str,
    repo: Option<&str>,
) -> (StatusCode, Value) {
    let (s, b, _) = send(
        reqwest::Method::PUT,
        format!("{}/{}", server.url, escaped(name)),
        token,
        Some(&doc(name, version, repo)),
    )
    .await;
    (s, b)
}

/// The package as its admin sees it (`None` once it is unpublished).
pub async fn packument(server: &Server, token: &str, name: &str) -> Option<Value> {
    let (s, b, _) = send(
        reqwest::Method::GET,
        format!("{}/{}?write=true", server.url, escaped(name)),
        Some(token),
        None,
    )
    .await;
    match s.as_u16() {
        200 => Some(b),
        404 => None,
        _ => panic!("{s}: {b}"),
    }
}

/// `npm login`'s legacy request: GitHub login as user name, GitHub token as password.
pub async fn login(server: &Server, user: &User) -> String {
    let body = json!({ "_id": format!("org.couchdb.user:{}", user.login), "name": user.login, "password": user.token, "type": "user", "roles": [], "date": "2026-11-22T00:00:00.000Z" });
    let (s, b, _) = send(
        reqwest::Method::PUT,
        format!("{}/-/user/org.couchdb.user:{}", server.url, user.login),
        None,
        Some(&body),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    b["token"].as_str().unwrap().to_string()
}

/// Fails if the server's log holds any of `secrets`.
pub fn assert_no_secrets(server: &Server, secrets: &[&str]) {
    let log = server.log();
    assert!(!log.is_empty(), "the server logged nothing");
    for secret in secrets {
        assert!(!log.contains(secret), "a token appears in the server's log");
    }
}
