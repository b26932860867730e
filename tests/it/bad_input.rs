//! Bad and hostile input: every case answers 4xx with a JSON error that says what is wrong, stores
//! nothing, and leaves the server serving.

use std::path::Path;

use base64::Engine;
use e2e::{Backend, S3Host, TestRegistry, escaped, gzip, package_tgz, publish_doc, tgz};
use serde_json::{Value, json};

const LIMIT: usize = 1 << 20;

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Vec<u8>,
    status: u16,
    says: &'static str,
}

fn case(
    what: &'static str,
    method: &'static str,
    path: impl Into<String>,
    body: Vec<u8>,
    status: u16,
    says: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        body,
        status,
        says,
    }
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// A valid publish of `@bad/pkg@VERSION`, changed by `edit`.
fn publish(version: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut doc = publish_doc("@bad/pkg", version, &package_tgz("@bad/pkg", version));
    edit(&mut doc);
    json_body(&doc)
}

/// A publish of `@bad/pkg@2.0.0` carrying `tarball`, with correct digests and length.
fn with_tarball(tarball: &[u8]) -> Vec<u8> {
    json_body(&publish_doc("@bad/pkg", "2.0.0", tarball))
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = String::from("{\"name\":");
    s.push_str(&"[".repeat(depth));
    s.push_str(&"]".repeat(depth));
    s.push('}');
    s.into_bytes()
}

fn cases() -> Vec<Case> {
    let p = "/@bad%2fpkg";
    let attachment = "@bad/pkg-2.0.0.tgz";
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let other_doc =
        |name: &str| json_body(&publish_doc(name, "1.0.0", &package_tgz(name, "1.0.0")));
    let zeros = vec![0u8; 8 << 20];
    vec![
        // Names.
        case(
            "uppercase name",
            "PUT",
            "/@bad%2fPkg",
            other_doc("@bad/Pkg"),
            400,
            "lowercase",
        ),
        case(
            "leading dot",
            "PUT",
            "/.hidden",
            other_doc(".hidden"),
            400,
            "must not start with '.'",
        ),
        case(
            "leading underscore",
            "PUT",
            "/_under",
            other_doc("_under"),
            400,
            "must not start with '.' or '_'",
        ),
        case(
            "traversal in name",
            "PUT",
            "/..%2f..%2fetc",
            other_doc("../../etc"),
            400,
            "invalid package name",
        ),
        case(
            "traversal in scoped name",
            "PUT",
            "/@bad%2f..%2fx",
            other_doc("@bad/../x"),
            400,
            "URL-friendly",
        ),
        case(
            "space in name",
            "PUT",
            "/a%20b",
            other_doc("a b"),
            400,
            "URL-friendly",
        ),
        case(
            "non-ASCII name",
            "PUT",
            "/caf%C3%A9",
            other_doc("café"),
            400,
            "URL-friendly",
        ),
        case(
            "reserved name",
            "PUT",
            "/node_modules",
            other_doc("node_modules"),
            400,
            "not a valid package name",
        ),
        case(
            "name too long",
            "PUT",
            format!("/{}", "a".repeat(215)),
            other_doc(&"a".repeat(215)),
            400,
            "at most 214",
        ),
        case(
            "scope without name",
            "PUT",
            "/@bad",
            other_doc("@bad"),
            400,
            "@scope/name",
        ),
        case(
            "special characters in new name",
            "PUT",
            "/wow!",
            other_doc("wow!"),
            400,
            "~'!()*",
        ),
        case(
            "NUL in name",
            "PUT",
            "/a%00b",
            other_doc("a\0b"),
            400,
            "URL-friendly",
        ),
        case(
            "traversal read",
            "GET",
            "/..%2f..%2fetc%2fpasswd",
            vec![],
            400,
            "invalid package name",
        ),
        case(
            "invalid UTF-8 in path",
            "GET",
            "/%ff%fe",
            vec![],
            400,
            "UTF-8",
        ),
        // Tarball file names.
        case(
            "traversal in tarball name",
            "GET",
            "/@bad/pkg/-/..%2f..%2fmetadata.redb",
            vec![],
            404,
            "is not a tarball of",
        ),
        case(
            "tarball of another package",
            "GET",
            "/@bad/pkg/-/other-1.0.0.tgz",
            vec![],
            404,
            "is not a tarball of",
        ),
        case(
            "tarball name with NUL",
            "GET",
            "/@bad/pkg/-/pkg-1.0.0.tgz%00",
            vec![],
            404,
            "is not a tarball of",
        ),
        case(
            "traversal in tarball delete",
            "DELETE",
            "/@bad/pkg/-/..%2fpkg-1.0.0.tgz/-rev/1",
            vec![],
            404,
            "is not a tarball of",
        ),
        // Versions.
        case(
            "two-part version",
            "PUT",
            p,
            publish("1.0", |_| {}),
            400,
            "invalid version",
        ),
        case(
            "leading zero in version",
            "PUT",
            p,
            publish("01.0.0", |_| {}),
            400,
            "invalid version",
        ),
        case(
            "build metadata",
            "PUT",
            p,
            publish("2.0.0+build.1", |_| {}),
            400,
            "build metadata",
        ),
        case(
            "manifest version differs from key",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["versions"]["2.0.0"]["version"] = json!("2.0.1");
            }),
            400,
            "says version",
        ),
        // Tags.
        case(
            "range as publish tag",
            "PUT",
            p,
            publish("2.0.0", |d| d["dist-tags"] = json!({"1.x": "2.0.0"})),
            400,
            "version range",
        ),
        case(
            "tag pointing elsewhere",
            "PUT",
            p,
            publish("2.0.0", |d| d["dist-tags"] = json!({"latest": "1.0.0"})),
            400,
            "must point at the published version",
        ),
        case(
            "range as dist-tag",
            "PUT",
            "/-/package/@bad%2fpkg/dist-tags/%5E1.0.0",
            json_body(&json!("1.0.0")),
            400,
            "version range",
        ),
        case(
            "version as dist-tag",
            "PUT",
            "/-/package/@bad%2fpkg/dist-tags/1.0.0",
            json_body(&json!("1.0.0")),
            400,
            "version range",
        ),
        case(
            "dist-tag to missing version",
            "PUT",
            "/-/package/@bad%2fpkg/dist-tags/beta",
            json_body(&json!("9.9.9")),
            404,
            "9.9.9",
        ),
        case(
            "dist-tag to non-version",
            "PUT",
            "/-/package/@bad%2fpkg/dist-tags/beta",
            json_body(&json!("banana")),
            400,
            "invalid version",
        ),
        case(
            "dist-tag body not a string",
            "PUT",
            "/-/package/@bad%2fpkg/dist-tags/beta",
            json_body(&json!({"v": 1})),
            400,
            "version string",
        ),
        case(
            "removing latest",
            "DELETE",
            "/-/package/@bad%2fpkg/dist-tags/latest",
            vec![],
            400,
            "cannot be removed",
        ),
        case(
            "removing a missing tag",
            "DELETE",
            "/-/package/@bad%2fpkg/dist-tags/nope",
            vec![],
            404,
            "not found",
        ),
        // Names in the body.
        case(
            "body name differs from URL",
            "PUT",
            p,
            json_body(&publish_doc(
                "@bad/other",
                "1.0.0",
                &package_tgz("@bad/other", "1.0.0"),
            )),
            400,
            "but the URL names",
        ),
        case(
            "manifest name differs from URL",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["versions"]["2.0.0"]["name"] = json!("@evil/pkg");
            }),
            400,
            "but the URL names",
        ),
        // Versions and attachments.
        case(
            "zero versions",
            "PUT",
            p,
            publish("2.0.0", |d| d["versions"] = json!({})),
            400,
            "exactly one version",
        ),
        case(
            "two versions",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["versions"]["2.0.1"] = d["versions"]["2.0.0"].clone();
            }),
            400,
            "exactly one version",
        ),
        case(
            "new version without attachment",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d.as_object_mut().unwrap().remove("_attachments");
            }),
            400,
            "not published here",
        ),
        case(
            "two attachments",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["_attachments"]["x.tgz"] = d["_attachments"][attachment].clone();
            }),
            400,
            "exactly one attachment",
        ),
        case(
            "attachment named for another version",
            "PUT",
            p,
            publish("2.0.0", |d| {
                let a = d["_attachments"]
                    .as_object_mut()
                    .unwrap()
                    .remove(attachment)
                    .unwrap();
                d["_attachments"]["@bad/pkg-9.0.0.tgz"] = a;
            }),
            400,
            "attachment is named",
        ),
        case(
            "traversal in attachment name",
            "PUT",
            p,
            publish("2.0.0", |d| {
                let a = d["_attachments"]
                    .as_object_mut()
                    .unwrap()
                    .remove(attachment)
                    .unwrap();
                d["_attachments"]["../../../tmp/x.tgz"] = a;
            }),
            400,
            "attachment is named",
        ),
        case(
            "attachment not an object",
            "PUT",
            p,
            publish("2.0.0", |d| d["_attachments"][attachment] = json!(5)),
            400,
            "must be an object",
        ),
        case(
            "non-base64 data",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["_attachments"][attachment]["data"] = json!("!!! not base64 !!!");
            }),
            400,
            "base64",
        ),
        case(
            "data not a string",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["_attachments"][attachment]["data"] = json!(42);
            }),
            400,
            "must be a string",
        ),
        case(
            "wrong length",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["_attachments"][attachment]["length"] = json!(3);
            }),
            400,
            "length says 3 bytes",
        ),
        case(
            "missing length",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["_attachments"][attachment]
                    .as_object_mut()
                    .unwrap()
                    .remove("length");
            }),
            400,
            "length",
        ),
        // Digests.
        case(
            "shasum mismatch",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["versions"]["2.0.0"]["dist"]["shasum"] = json!("0".repeat(40));
            }),
            400,
            "dist.shasum",
        ),
        case(
            "integrity mismatch",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["versions"]["2.0.0"]["dist"]["integrity"] =
                    json!(format!("sha512-{}", b64(&[0u8; 64])));
            }),
            400,
            "dist.integrity",
        ),
        case(
            "manifest too large",
            "PUT",
            p,
            publish("2.0.0", |d| {
                d["versions"]["2.0.0"]["keywords"] = json!(vec!["k".repeat(100); 3000]);
            }),
            400,
            "the limit is",
        ),
        // Tarballs.
        case(
            "not gzip",
            "PUT",
            p,
            with_tarball(b"this is not a tarball"),
            400,
            "not gzip",
        ),
        case(
            "gzip but not tar",
            "PUT",
            p,
            with_tarball(&gzip(&[7u8; 1000])),
            400,
            "tarball",
        ),
        case(
            "tarball without package.json",
            "PUT",
            p,
            with_tarball(&tgz(&[("package/index.js", b"1")])),
            400,
            "no package/package.json",
        ),
        case(
            "package.json not JSON",
            "PUT",
            p,
            with_tarball(&tgz(&[("package/package.json", b"{nope")])),
            400,
            "not valid JSON",
        ),
        case(
            "tarball name differs",
            "PUT",
            p,
            with_tarball(&package_tgz("@bad/evil", "2.0.0")),
            400,
            "package.json in the tarball has name",
        ),
        case(
            "tarball version differs",
            "PUT",
            p,
            with_tarball(&package_tgz("@bad/pkg", "2.0.1")),
            400,
            "package.json in the tarball has version",
        ),
        case(
            "traversal inside tarball",
            "PUT",
            p,
            with_tarball(&tgz(&[
                (
                    "package/package.json",
                    br#"{"name":"@bad/pkg","version":"2.0.0"}"#,
                ),
                ("package/../../../.bashrc", b"evil"),
            ])),
            400,
            "escapes the package directory",
        ),
        case(
            "gzip bomb",
            "PUT",
            p,
            with_tarball(&tgz(&[
                (
                    "package/package.json",
                    br#"{"name":"@bad/pkg","version":"2.0.0"}"#,
                ),
                ("package/zeros", &zeros),
            ])),
            400,
            "unpacks to more than",
        ),
        // Bodies.
        case(
            "truncated JSON",
            "PUT",
            p,
            {
                let b = publish("2.0.0", |_| {});
                b[..b.len() / 2].to_vec()
            },
            400,
            "not valid JSON",
        ),
        case(
            "non-JSON body",
            "PUT",
            p,
            b"hello".to_vec(),
            400,
            "not valid JSON",
        ),
        case("empty body", "PUT", p, vec![], 400, "empty"),
        case(
            "JSON array body",
            "PUT",
            p,
            b"[1,2]".to_vec(),
            400,
            "must be a JSON object",
        ),
        case(
            "versions not an object",
            "PUT",
            p,
            publish("2.0.0", |d| d["versions"] = json!("2.0.0")),
            400,
            "not a valid package document",
        ),
        case(
            "deeply nested JSON",
            "PUT",
            p,
            nested(100_000),
            400,
            // Read as a document, the nesting is a wrong type for `name` before it is too deep.
            "request body is not",
        ),
        case(
            "oversized body",
            "PUT",
            p,
            vec![b' '; LIMIT + 1],
            413,
            "larger than this registry's limit",
        ),
        // Revisions and methods.
        case(
            "stale revision",
            "PUT",
            "/@bad%2fpkg/-rev/999-0",
            json_body(&json!({"name": "@bad/pkg", "versions": {}})),
            409,
            "out of date",
        ),
        case(
            "stale revision on unpublish",
            "DELETE",
            "/@bad%2fpkg/-rev/bogus",
            vec![],
            409,
            "out of date",
        ),
        case(
            "deleting a live version's tarball",
            "DELETE",
            "/@bad/pkg/-/pkg-1.0.0.tgz/-rev/1",
            vec![],
            409,
            "still published",
        ),
        case(
            "unknown method",
            "POST",
            p,
            vec![],
            405,
            "method not allowed",
        ),
        case(
            "unknown special route",
            "GET",
            "/-/nothing/here",
            vec![],
            404,
            "not found",
        ),
        case(
            "metadata update of unknown package",
            "PUT",
            "/@bad%2fghost",
            json_body(&json!({"name": "@bad/ghost", "versions": {}})),
            404,
            "not found",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_cleanly_local() {
    every_bad_input_is_refused_cleanly(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_cleanly_aws() {
    every_bad_input_is_refused_cleanly(Backend::aws("badinput", S3Host::Different)).await;
}

/// As a process: a crash on hostile input must fail this test, not the whole test binary.
async fn every_bad_input_is_refused_cleanly(backend: Backend) {
    let mut reg = TestRegistry::builder()
        .backend(backend)
        .env("REGISTRY_MAX_BODY_BYTES", &LIMIT.to_string())
        .env("REGISTRY_MAX_UNPACKED_BYTES", &(4u64 << 20).to_string())
        .process()
        .start()
        .await;
    let pkg_path = format!("/{}", escaped("@bad/pkg"));
    reg.put(&pkg_path)
        .raw_json(publish("1.0.0", |_| {}))
        .send()
        .await
        .assert_status(201);
    let before = reg.get(&pkg_path).send().await.body;
    let files_before = reg.tarball_count().await;

    let cases = cases();
    assert!(cases.len() >= 40, "at least 40 cases");
    let mut failures = Vec::new();
    for c in &cases {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
        let reply = reg
            .request(method, &c.path)
            .raw_json(c.body.clone())
            .send()
            .await;
        let status = reply.status.as_u16();
        let is_json = reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json"));
        let text = String::from_utf8_lossy(&reply.bytes);
        // Every error also names itself with a stable code (docs/errors.md).
        let coded = reply.code().is_some_and(|code| !code.is_empty());
        match reply.error() {
            Some(msg) if status == c.status && is_json && coded && msg.contains(c.says) => {}
            _ => failures.push(format!(
                "{}: {} {} → {status} {text:.300} (wanted {} containing {:?}, with a code)",
                c.what,
                c.method,
                &c.path[..c.path.len().min(80)],
                c.status,
                c.says
            )),
        }
        // Nothing stored, and still serving.
        let now = reg.get(&pkg_path).send().await.body;
        if now != before {
            failures.push(format!("{}: the packument changed", c.what));
        }
        assert!(reg.is_running(), "server died on {}", c.what);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        reg.tarball_count().await,
        files_before,
        "no tarball may be left behind"
    );
    assert_eq!(
        count_files(&reg.data_dir().join("tmp")),
        0,
        "no temporary file may be left behind"
    );
    for name in ["@bad/other", "@bad/Pkg", "@bad/evil", "wow!"] {
        let r = reg.get(&format!("/{}", escaped(name))).send().await;
        assert!(r.status == 404 || r.status == 400, "{name} must not exist");
    }
    reg.get("/-/ping").send().await.assert_status(200);
}
