//! The CouchDB-era API that npm 1.x's client (`npm-registry-client` 0.2 and 0.4) speaks, over
//! raw HTTP: `PUT /NAME/TAG` with a JSON string, the publish answer's `rev`, `POST /_session`'s
//! `AuthSession` cookie, and `Authorization: Basic`, in GitHub mode where they carry identity.

use base64::Engine;
use e2e::api::{doc, send};
use e2e::github_world::World;
use e2e::{Backend, escaped, http};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn couchdb_era_writes_and_logins_in_github_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = world.server(tmp.path(), &Backend::local(), &[]);
    let name = "@acme/widgets";
    let url = |path: &str| format!("{}{path}", server.url);

    // Basic auth (login:GitHub token), as npm 1.x with always-auth sends it.
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{}", world.alice.token));
    let published = http()
        .put(url(&format!("/{}", escaped(name))))
        .header("authorization", format!("Basic {basic}"))
        .json(&doc(name, "1.0.0", Some("github:acme/widgets")))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), StatusCode::CREATED);
    let answer: Value = published.json().await.unwrap();
    let (_, packument, _) = send(
        Method::GET,
        url(&format!("/{}", escaped(name))),
        Some(&world.alice.token),
        None,
    )
    .await;
    assert_eq!(
        answer["rev"], packument["_rev"],
        "the answer names the document's revision"
    );

    // A cookie login: POST /_session with the GitHub token as the password.
    let session = http()
        .post(url("/_session"))
        .json(&json!({"name": "bob", "password": world.bob.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), StatusCode::OK);
    let cookie = session.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("AuthSession="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let body: Value = session.json().await.unwrap();
    assert_eq!(body["name"], "bob");
    let cookie = cookie.split(';').next().unwrap().to_string();
    // A wrong password is refused, and sets nothing.
    let refused = http()
        .post(url("/_session"))
        .json(&json!({"name": "bob", "password": world.carol.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get("set-cookie").is_none());

    // client.tag: PUT /NAME/TAG with the version as a JSON string, under the cookie (bob has
    // push on acme/widgets).
    let tagged = http()
        .put(url(&format!("/{}/stable", escaped(name))))
        .header("cookie", &cookie)
        .json(&json!("1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.status(), StatusCode::OK, "{:?}", tagged.text().await);
    let (_, tags, _) = send(
        Method::GET,
        url(&format!("/-/package/{}/dist-tags", escaped(name))),
        Some(&world.bob.token),
        None,
    )
    .await;
    assert_eq!(tags["stable"], "1.0.0");
    // Without credentials the same write is refused and changes nothing.
    let anonymous = http()
        .put(url(&format!("/{}/beta", escaped(name))))
        .json(&json!("1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Basic with someone who may only read: 403.
    let carol =
        base64::engine::general_purpose::STANDARD.encode(format!("carol:{}", world.carol.token));
    let forbidden = http()
        .put(url(&format!("/{}/beta", escaped(name))))
        .header("authorization", format!("Basic {carol}"))
        .json(&json!("1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let (_, tags, _) = send(
        Method::GET,
        url(&format!("/-/package/{}/dist-tags", escaped(name))),
        Some(&world.bob.token),
        None,
    )
    .await;
    assert!(tags.get("beta").is_none());
}
