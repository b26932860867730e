//! Snapshots of what clients read: packuments (full and abbreviated) on both backends, error
//! bodies of several routes (status, `error` and `code`), and `npm token list`'s JSON. A change
//! to any of them fails here until the snapshot under `snapshots/` is reviewed and updated
//! (`INSTA_UPDATE=always cargo test -p e2e api_snapshots::`, then read the diff).
//!
//! What changes from run to run is redacted: times, revisions, token keys and previews, the
//! listener's port and the tarballs' digests. Each redaction checks the shape of what it hides.

use e2e::fake_github::Permission;
use e2e::github_world::World;
use e2e::{Reply, S3Host, TestRegistry, pkg};
use insta::internals::{Content, ContentPath, Redaction};
use serde_json::{Value, json};

/// The status, media type and body of a reply: what a client reads.
fn seen(reply: &Reply) -> Value {
    json!({
        "status": reply.status.as_u16(),
        "content-type": reply.header("content-type"),
        "body": reply.body,
    })
}

/// A redaction of string values that `hide` checks and replaces. The keys of a map a wildcard
/// selects (`.time.*`) are left as they are: only their values vary.
fn hidden(hide: fn(&str) -> String) -> Redaction {
    insta::dynamic_redaction(move |value: Content, path: ContentPath<'_>| {
        if path.to_string().ends_with(".$key") {
            return value;
        }
        let text = value
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {value:?} is not a string"));
        Content::from(hide(text))
    })
}

/// `http://127.0.0.1:PORT/…` with the port hidden.
fn port(url: &str) -> String {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{url:?} is not a link to the test registry"));
    let path = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    assert!(path.len() < rest.len(), "{url:?} has no port");
    format!("http://127.0.0.1:[port]{path}")
}

/// A `sha512-` integrity with its digest hidden.
fn integrity(text: &str) -> String {
    let digest = text
        .strip_prefix("sha512-")
        .unwrap_or_else(|| panic!("{text:?} is not a sha512 integrity"));
    assert_eq!(
        digest.len(),
        88,
        "{text:?}: a sha512 digest is 88 base64 characters"
    );
    "sha512-[digest]".into()
}

/// A hex SHA-1 (the `shasum`), hidden.
fn shasum(text: &str) -> String {
    assert!(
        text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()),
        "{text:?} is not a hex SHA-1"
    );
    "[sha1]".into()
}

/// An RFC 3339 time, hidden.
fn time(text: &str) -> String {
    assert!(
        chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "{text:?} is not an RFC 3339 time"
    );
    "[time]".into()
}

/// `text` with every hex SHA-1 (40 hex digits on their own) replaced by `[sha1]`.
fn without_sha1s(text: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() == 40 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str("[sha1]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A revision (`_rev`), hidden.
fn rev(text: &str) -> String {
    assert!(!text.is_empty(), "a packument has a revision");
    "[rev]".into()
}

/// A token's key (its id), hidden.
fn key(text: &str) -> String {
    assert!(!text.is_empty(), "a token has a key");
    "[key]".into()
}

/// A token's preview (never the token), hidden.
fn preview(text: &str) -> String {
    assert!(!text.is_empty(), "a token has a preview");
    "[preview]".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packuments_local() {
    // The AWS backend signs nothing yet; both render the same documents with signing off
    // (signatures: tests/it/signatures.rs).
    let reg = TestRegistry::builder()
        .env("REGISTRY_SIGNING", "false")
        .start()
        .await;
    packuments(reg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packuments_aws() {
    let reg = TestRegistry::builder()
        .aws("snapshots", S3Host::Same)
        .start()
        .await;
    packuments(reg).await;
}

/// Both backends render the same documents: the two tests share their snapshots.
async fn packuments(reg: TestRegistry) {
    let name = "@acme/snap";
    reg.publish(pkg(name).repository("github:acme/snap"))
        .await
        .assert_status(201);
    reg.publish(
        pkg(name)
            .version("1.1.0-beta.1")
            .edit(|doc| doc["dist-tags"] = json!({ "beta": "1.1.0-beta.1" })),
    )
    .await
    .assert_status(201);
    reg.put_dist_tag(name, "stable", "1.0.0")
        .await
        .assert_status(200);

    let full = reg.get_packument(name).await;
    insta::assert_json_snapshot!("packument_full", seen(&full), {
        ".body._rev" => hidden(rev),
        ".body.time.*" => hidden(time),
        ".body.versions.*.dist.tarball" => hidden(port),
        ".body.versions.*.dist.integrity" => hidden(integrity),
        ".body.versions.*.dist.shasum" => hidden(shasum),
    });

    let abbreviated = reg.get_abbreviated(name).await;
    insta::assert_json_snapshot!("packument_abbreviated", seen(&abbreviated), {
        ".body.modified" => hidden(time),
        ".body.versions.*.dist.tarball" => hidden(port),
        ".body.versions.*.dist.integrity" => hidden(integrity),
        ".body.versions.*.dist.shasum" => hidden(shasum),
    });
}

/// One request and what it was answered, for the error snapshots.
fn answered(reply: Reply) -> Value {
    json!({
        "request": reply.request,
        "status": reply.status.as_u16(),
        "body": reply.body,
    })
}

#[tokio::test]
async fn error_bodies() {
    let reg = TestRegistry::builder()
        .env("REGISTRY_MAX_BODY_BYTES", "4096")
        .env("REGISTRY_ALLOWED_OWNERS", "acme")
        .start()
        .await;
    let name = "@acme/errs";
    reg.publish(pkg(name)).await.assert_status(201);
    let rev = reg.get_packument(name).await.body["_rev"]
        .as_str()
        .expect("a revision")
        .to_string();
    let stale = json!({ "name": name, "versions": {} });
    let replies = vec![
        reg.get("/@acme%2fmissing").send().await,
        reg.get("/@acme%2ferrs/9.9.9").send().await,
        reg.get("/..%2f..%2fetc%2fpasswd").send().await,
        reg.get("/%ff%fe").send().await,
        reg.get("/-/nothing/here").send().await,
        reg.get("/@acme/errs/-/other-1.0.0.tgz").send().await,
        reg.post("/@acme%2ferrs").send().await,
        reg.put("/@acme%2ferrs").raw_json("not json").send().await,
        reg.put("/@acme%2ferrs")
            .raw_json(vec![b' '; 5000])
            .send()
            .await,
        reg.publish(pkg(name)).await,
        reg.publish(pkg("@other/thing")).await,
        reg.publish(pkg(name).version("2.0.0").edit(|doc| {
            doc["versions"]["2.0.0"]["dist"]["shasum"] = json!("0".repeat(40));
        }))
        .await,
        reg.put_dist_tag(name, "beta", "9.9.9").await,
        reg.put_dist_tag(name, "1.x", "1.0.0").await,
        reg.delete_dist_tag(name, "latest").await,
        reg.put("/@acme%2ferrs/-rev/999-stale")
            .json(&stale)
            .send()
            .await,
        reg.delete(&format!("/@acme/errs/-/errs-1.0.0.tgz/-rev/{rev}"))
            .send()
            .await,
        reg.post("/-/package/@acme%2ferrs/dist-tags/next")
            .header("content-type", "text/plain")
            .send()
            .await,
        reg.get("/-/v1/search?text=x&size=ten").send().await,
        reg.tokens().await,
    ];
    let mut seen = Vec::new();
    for reply in replies {
        assert!(
            reply.code().is_some(),
            "{}: no code: {}",
            reply.request,
            reply.body
        );
        seen.push(answered(reply));
    }
    // The revision (its creation time) shows in a path and in a message; a digest in a message.
    let in_text = move |value: Content, _: ContentPath<'_>| {
        let text = value.as_str().unwrap_or_default();
        without_sha1s(&text.replace(&rev, "[rev]"))
    };
    insta::assert_json_snapshot!("error_bodies", seen, {
        "[].request" => insta::dynamic_redaction(in_text.clone()),
        "[].body.error" => insta::dynamic_redaction(in_text),
    });
}

#[tokio::test]
async fn error_bodies_in_github_mode() {
    let world = World::start().await;
    let reg = TestRegistry::builder().github(&world).start().await;
    let name = "@acme/guarded";
    reg.as_user(&world.alice.token)
        .publish(pkg(name).repository("github:acme/widgets"))
        .await
        .assert_status(201);
    let replies = vec![
        reg.publish(pkg(name).version("1.0.1")).await,
        reg.get_packument(name).await,
        reg.as_user("ghp_this_token_does_not_exist_at_all")
            .get_packument(name)
            .await,
        reg.as_user(&world.dave.token).get_packument(name).await,
        reg.as_user(&world.carol.token)
            .publish(pkg(name).version("1.0.1").repository("github:acme/widgets"))
            .await,
        reg.as_user(&world.mallory.token)
            .publish(pkg("@victim/x").repository("github:victim/x"))
            .await,
        reg.tokens().await,
        reg.whoami().await,
    ];
    let mut seen = Vec::new();
    for reply in replies {
        assert!(
            reply.code().is_some(),
            "{}: no code: {}",
            reply.request,
            reply.body
        );
        seen.push(answered(reply));
    }
    insta::assert_json_snapshot!("error_bodies_in_github_mode", seen);
}

/// `npm token list --json` reads this document; npm prints `key`, `token`, `created`,
/// `readonly` and `cidr_whitelist` from it.
#[tokio::test]
async fn token_list() -> Result<(), e2e::test_registry::Refused> {
    let world = World::start().await;
    world
        .github
        .grant("acme", "widgets", "dave", Permission::Pull);
    let reg = TestRegistry::builder().github(&world).start().await;
    let login = reg
        .login(world.bob.login, &world.bob.token)
        .await
        .success()?;
    let token = login.body["token"].as_str().expect("a token").to_string();
    let bob = reg.as_user(&token);
    bob.create_token(true).await.success()?;
    bob.create_token(false).await.success()?;
    // Another user's token is not in bob's list.
    reg.login(world.dave.login, &world.dave.token)
        .await
        .success()?;

    let list = bob.tokens().await.success()?;
    let keys: std::collections::HashSet<&str> = list.body["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter_map(|o| o["key"].as_str())
        .collect();
    assert_eq!(keys.len(), 3, "three distinct keys: {}", list.body);
    let text = String::from_utf8_lossy(&list.bytes);
    assert!(!text.contains(&token), "the list shows a whole token");
    insta::assert_json_snapshot!("token_list", seen(&list), {
        ".body.objects[].key" => hidden(key),
        ".body.objects[].token" => hidden(preview),
        ".body.objects[].created" => hidden(time),
        ".body.objects[].updated" => hidden(time),
        ".body.objects[].expires" => hidden(time),
    });
    Ok(())
}
