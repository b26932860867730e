//! A fake of the public npm registry as an upstream, on loopback, for the pull-through cache's
//! tests: packages a test generates (real tarballs, `dist.integrity` and `shasum` computed from
//! them), served as the public registry documents them: the full packument
//! (`application/json`, with `time`) or the install view (`application/vnd.npm.install-v1+json`),
//! an `ETag` and `304` to `If-None-Match`, tarballs at `/NAME/-/BASE-VERSION.tgz`, and npm's bulk
//! advisory endpoint (gzip body in, `{name: [advisory]}` out). A real package added with its
//! provenance bundle ([`FakeUpstream::add_published`]) has `dist.attestations` and its
//! attestations at `/-/npm/v1/attestations/NAME@VERSION`, as the public registry serves them.
//!
//! Failure modes and what a test needs to see: [`FakeUpstream::set_down`] answers `503` to
//! everything, [`FakeUpstream::stop`] closes the listener (connection refused),
//! [`FakeUpstream::tamper`] serves one tarball with its last byte changed (its packument's
//! integrity no longer matches), [`FakeUpstream::replace`] republishes a version with other bytes
//! (packument and tarball agree, on the new bytes),
//! [`FakeUpstream::require_token`] answers `401` without `Authorization: Bearer TOKEN`,
//! [`FakeUpstream::hold`] holds every answer until released. Every request is recorded
//! ([`FakeUpstream::requests`]), audit bodies decoded ([`FakeUpstream::audit_bodies`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha2::Digest;
use tokio::net::TcpListener;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`.
    pub method: String,
    /// The path, as sent (percent-encoded).
    pub path: String,
    /// `Authorization`, if sent.
    pub authorization: Option<String>,
    /// `Via`, if sent.
    pub via: Option<String>,
}

struct Version {
    manifest: Value,
    tarball: Vec<u8>,
    time: String,
}

#[derive(Default)]
struct Package {
    versions: BTreeMap<semver::Version, Version>,
    latest: Option<String>,
}

#[derive(Default)]
struct World {
    packages: HashMap<String, Package>,
    requests: Vec<Seen>,
    down: bool,
    tampered: HashSet<(String, String)>,
    token: Option<String>,
    advisories: Map<String, Value>,
    /// `GET /-/npm/v1/attestations/NAME@VERSION` answers, by `NAME@VERSION`.
    attestations: HashMap<String, Value>,
    audit_bodies: Vec<Value>,
    /// The key the fake signs versions with (`dist.signatures`), once a test asks for one.
    signing: Option<(ring::signature::EcdsaKeyPair, Value)>,
    hold: Option<tokio::sync::watch::Receiver<bool>>,
}

struct Shared {
    world: Mutex<World>,
}

/// The fake upstream; stops when dropped.
pub struct FakeUpstream {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeUpstream {
    /// Starts the fake on a free loopback port, on its own thread and runtime (it answers while
    /// the test's runtime is blocked on a client).
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            world: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = listener.into_std().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fake-upstream".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime closes the listener and every connection.
                runtime.shutdown_background();
            })
            .unwrap();
        FakeUpstream {
            url,
            shared,
            stop: Some(stop),
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.shared.world.lock().unwrap()
    }

    /// From now on signs every version added as the public registry does (`dist.signatures`
    /// over `name@version:integrity`, ECDSA P-256) with a key generated here, and lists it at
    /// `GET /-/npm/v1/keys`. Answers the key's listing.
    pub fn sign_versions(&self) -> Value {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let spki = registry::domain::signing::p256_spki(pair.public_key().as_ref()).unwrap();
        let listed = registry::domain::signing::PublicKey::p256(&spki, chrono::Utc::now()).listed();
        self.world().signing = Some((pair, listed.clone()));
        listed
    }

    /// Publishes `name@version` with `dependencies` (name → range); it becomes `latest`.
    /// Answers the tarball's `dist.integrity`.
    pub fn add(&self, name: &str, version: &str, dependencies: &[(&str, &str)]) -> String {
        self.add_with(name, version, dependencies, &[])
    }

    /// `add`, the tarball carrying `payload.bin` of `bytes` random bytes (which gzip cannot
    /// shrink: the tarball is about that large).
    pub fn add_large(&self, name: &str, version: &str, bytes: usize) -> String {
        let mut payload = vec![0u8; bytes];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut payload).unwrap();
        self.add_with(name, version, &[], &[("package/payload.bin", &payload)])
    }

    fn add_with(
        &self,
        name: &str,
        version: &str,
        dependencies: &[(&str, &str)],
        extra: &[(&str, &[u8])],
    ) -> String {
        let deps: Map<String, Value> = dependencies
            .iter()
            .map(|(n, r)| (n.to_string(), json!(r)))
            .collect();
        let package_json = json!({
            "name": name, "version": version, "description": format!("{name} from upstream"),
            "main": "index.js", "dependencies": deps, "license": "MIT",
        });
        let index = format!("module.exports = {};\n", json!(format!("{name}@{version}")));
        let manifest_bytes = serde_json::to_vec_pretty(&package_json).unwrap();
        let mut files: Vec<(&str, &[u8])> = vec![
            ("package/package.json", manifest_bytes.as_slice()),
            ("package/index.js", index.as_bytes()),
        ];
        files.extend_from_slice(extra);
        let tarball = registry::testing::tgz(&files);
        let integrity = registry::testing::integrity(&tarball);
        let shasum = hex::encode(sha1::Sha1::digest(&tarball));
        let base = name.rsplit('/').next().unwrap();
        let mut manifest = package_json;
        manifest["_id"] = json!(format!("{name}@{version}"));
        manifest["dist"] = json!({
            "integrity": integrity,
            "shasum": shasum,
            "tarball": format!("{}/{name}/-/{base}-{version}.tgz", self.url),
        });
        let mut world = self.world();
        if let Some((pair, listed)) = &world.signing {
            let message = registry::domain::signing::message(name, version, &integrity);
            let sig = pair
                .sign(&ring::rand::SystemRandom::new(), message.as_bytes())
                .unwrap();
            manifest["dist"]["signatures"] = json!([registry::domain::signing::dist_signature(
                listed["keyid"].as_str().unwrap(),
                sig.as_ref()
            )]);
        }
        let package = world.packages.entry(name.to_string()).or_default();
        package.versions.insert(
            semver::Version::parse(version).unwrap(),
            Version {
                manifest,
                tarball,
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
        );
        package.latest = Some(version.to_string());
        integrity
    }

    /// Republishes `name@version` with other bytes (a file more) and `dependencies`, as a
    /// registry that lets a version change would: its packument and tarball agree on the new
    /// bytes. `latest` stays where it was. Answers the new integrity.
    pub fn replace(&self, name: &str, version: &str, dependencies: &[(&str, &str)]) -> String {
        let latest = self
            .world()
            .packages
            .get(name)
            .and_then(|p| p.latest.clone());
        let integrity = self.add_with(
            name,
            version,
            dependencies,
            &[(
                "package/replaced.txt",
                &b"bytes the first fetch never saw\n"[..],
            )],
        );
        self.world().packages.get_mut(name).unwrap().latest = latest;
        integrity
    }

    /// Publishes a real package: `tarball` as `npm pack` made it, its manifest the tarball's
    /// `package.json`; with `provenance` (its predicate type and Sigstore bundle), the version's
    /// `dist.attestations` and its attestations served as the public registry serves them.
    /// Answers the attestations body (`{attestations: [{predicateType, bundle}]}`), if any.
    pub fn add_published(
        &self,
        tarball: Vec<u8>,
        provenance: Option<(&str, Value)>,
    ) -> Option<Value> {
        let mut manifest = registry::domain::tarball::inspect(
            &tarball,
            registry::domain::tarball::TarballLimits::default(),
        )
        .unwrap()
        .manifest;
        let name = manifest["name"].as_str().unwrap().to_string();
        let version = manifest["version"].as_str().unwrap().to_string();
        let spec = format!("{name}@{version}");
        let base = name.rsplit('/').next().unwrap();
        manifest["_id"] = json!(spec);
        manifest["dist"] = json!({
            "integrity": registry::testing::integrity(&tarball),
            "shasum": hex::encode(sha1::Sha1::digest(&tarball)),
            "tarball": format!("{}/{name}/-/{base}-{version}.tgz", self.url),
        });
        let body = provenance.map(|(predicate_type, bundle)| {
            manifest["dist"]["attestations"] = json!({
                "url": format!("{}/-/npm/v1/attestations/{}@{version}", self.url, name.replacen('/', "%2f", 1)),
                "provenance": {"predicateType": predicate_type},
            });
            json!({"attestations": [{"predicateType": predicate_type, "bundle": bundle}]})
        });
        let mut world = self.world();
        if let Some(body) = &body {
            world.attestations.insert(spec, body.clone());
        }
        let package = world.packages.entry(name).or_default();
        package.versions.insert(
            semver::Version::parse(&version).unwrap(),
            Version {
                manifest,
                tarball,
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
        );
        package.latest = Some(version);
        body
    }

    /// Removes the whole package (the upstream answers 404 for it).
    pub fn remove_package(&self, name: &str) {
        self.world().packages.remove(name);
    }

    /// Removes one version (as an unpublish upstream does).
    pub fn remove_version(&self, name: &str, version: &str) {
        let mut world = self.world();
        let package = world.packages.get_mut(name).expect("a package of the fake");
        package
            .versions
            .remove(&semver::Version::parse(version).unwrap());
        package.latest = package.versions.keys().last().map(ToString::to_string);
    }

    /// Deprecates one version.
    pub fn deprecate(&self, name: &str, version: &str, message: &str) {
        let mut world = self.world();
        let v = world
            .packages
            .get_mut(name)
            .and_then(|p| {
                p.versions
                    .get_mut(&semver::Version::parse(version).unwrap())
            })
            .expect("a version of the fake");
        v.manifest["deprecated"] = json!(message);
    }

    /// Answers `503` to everything while `down`.
    pub fn set_down(&self, down: bool) {
        self.world().down = down;
    }

    /// Serves other bytes for `name@version`'s tarball than its packument declares.
    pub fn tamper(&self, name: &str, version: &str, tampered: bool) {
        let key = (name.to_string(), version.to_string());
        let mut world = self.world();
        if tampered {
            world.tampered.insert(key);
        } else {
            world.tampered.remove(&key);
        }
    }

    /// Answers `401` to requests without `Authorization: Bearer TOKEN`.
    pub fn require_token(&self, token: &str) {
        self.world().token = Some(token.to_string());
    }

    /// The advisories the bulk endpoint answers for `name`.
    pub fn add_advisory(&self, name: &str, advisory: Value) {
        let mut world = self.world();
        let list = world
            .advisories
            .entry(name.to_string())
            .or_insert_with(|| json!([]));
        list.as_array_mut().unwrap().push(advisory);
    }

    /// Holds every answer until the returned sender sends `true`.
    pub fn hold(&self) -> tokio::sync::watch::Sender<bool> {
        let (release, gate) = tokio::sync::watch::channel(false);
        self.world().hold = Some(gate);
        release
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.world().requests.clone()
    }

    /// How many requests had exactly this path.
    pub fn count(&self, path: &str) -> usize {
        self.world()
            .requests
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    /// Every bulk advisory request's body, decoded.
    pub fn audit_bodies(&self) -> Vec<Value> {
        self.world().audit_bodies.clone()
    }

    /// Closes the listener: from now on connections are refused.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Until the listener is closed a connection could still be accepted.
        let addr = self.url.trim_start_matches("http://").to_string();
        for _ in 0..500 {
            if std::net::TcpStream::connect(&addr).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the fake upstream did not stop");
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gate = {
        let mut world = shared.world.lock().unwrap();
        world.requests.push(Seen {
            method: method.to_string(),
            path: uri.path().to_string(),
            authorization: header_text(&headers, header::AUTHORIZATION),
            via: header_text(&headers, header::VIA),
        });
        world.hold.clone()
    };
    if let Some(mut gate) = gate {
        let _ = gate.wait_for(|open| *open).await;
    }
    let mut world = shared.world.lock().unwrap();
    if world.down {
        return error(StatusCode::SERVICE_UNAVAILABLE, "upstream is down");
    }
    if let Some(token) = &world.token
        && header_text(&headers, header::AUTHORIZATION).as_deref()
            != Some(&format!("Bearer {token}"))
    {
        return error(StatusCode::UNAUTHORIZED, "authentication required");
    }
    let path = uri.path();
    if method == Method::POST && path == "/-/npm/v1/security/advisories/bulk" {
        let text = if header_text(&headers, header::CONTENT_ENCODING).as_deref() == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            body.to_vec()
        };
        let asked: Map<String, Value> = serde_json::from_slice(&text).unwrap_or_default();
        world.audit_bodies.push(Value::Object(asked.clone()));
        let answer: Map<String, Value> = asked
            .keys()
            .filter_map(|n| world.advisories.get(n).map(|a| (n.clone(), a.clone())))
            .collect();
        return (StatusCode::OK, axum::Json(Value::Object(answer))).into_response();
    }
    if method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    if path == "/-/npm/v1/keys" {
        return match &world.signing {
            Some((_, listed)) => {
                (StatusCode::OK, axum::Json(json!({ "keys": [listed] }))).into_response()
            }
            None => error(StatusCode::NOT_FOUND, "no keys"),
        };
    }
    let decoded = path
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%40", "@");
    let decoded = decoded.trim_start_matches('/');
    if let Some(spec) = decoded.strip_prefix("-/npm/v1/attestations/") {
        return match world.attestations.get(spec) {
            Some(body) => (StatusCode::OK, axum::Json(body.clone())).into_response(),
            None => error(StatusCode::NOT_FOUND, "Not found"),
        };
    }
    if let Some((name, file)) = decoded.split_once("/-/") {
        return tarball(&world, name, file);
    }
    let Some(package) = world.packages.get(decoded) else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    let abbreviated = header_text(&headers, header::ACCEPT)
        .is_some_and(|a| a.contains("application/vnd.npm.install-v1+json"));
    let doc = packument(decoded, package, abbreviated);
    let body = serde_json::to_vec(&doc).unwrap();
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&body)[..8]));
    if header_text(&headers, header::IF_NONE_MATCH).as_deref() == Some(&etag) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .body(Body::empty())
            .unwrap();
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            if abbreviated {
                "application/vnd.npm.install-v1+json"
            } else {
                "application/json"
            },
        )
        .header(header::ETAG, etag)
        .body(Body::from(body))
        .unwrap()
}

fn packument(name: &str, package: &Package, abbreviated: bool) -> Value {
    let versions: Map<String, Value> = package
        .versions
        .iter()
        .map(|(v, version)| {
            let manifest = if abbreviated {
                let m = &version.manifest;
                let mut out = json!({"name": m["name"], "version": m["version"],
                                     "dependencies": m["dependencies"], "dist": m["dist"]});
                if let Some(d) = m.get("deprecated") {
                    out["deprecated"] = d.clone();
                }
                out
            } else {
                version.manifest.clone()
            };
            (v.to_string(), manifest)
        })
        .collect();
    let latest = package.latest.clone().unwrap_or_default();
    if abbreviated {
        return json!({"name": name, "dist-tags": {"latest": latest}, "versions": versions,
                      "modified": "2026-01-01T00:00:00.000Z"});
    }
    let mut time: Map<String, Value> = package
        .versions
        .iter()
        .map(|(v, version)| (v.to_string(), json!(version.time)))
        .collect();
    time.insert("created".into(), json!("2026-01-01T00:00:00.000Z"));
    time.insert("modified".into(), json!("2026-01-01T00:00:00.000Z"));
    json!({"_id": name, "name": name, "dist-tags": {"latest": latest}, "versions": versions,
           "time": time, "readme": format!("# {name}")})
}

fn tarball(world: &World, name: &str, file: &str) -> Response {
    let base = name.rsplit('/').next().unwrap_or(name);
    let Some(version) = file
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".tgz"))
    else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    let Some(found) = world
        .packages
        .get(name)
        .and_then(|p| p.versions.get(&semver::Version::parse(version).ok()?))
    else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    let mut bytes = found.tarball.clone();
    if world
        .tampered
        .contains(&(name.to_string(), version.to_string()))
    {
        // The same length, one byte changed: a large one is refused only at its end.
        if let Some(last) = bytes.last_mut() {
            *last ^= 0xff;
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(bytes))
        .unwrap()
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
