//! npm-registry-client, npm 1.x's own registry library (the API of the registry's CouchDB days,
//! issue 22), driven against a registry: versions 0.2.31 (npm 1.3: step-by-step publish, CouchDB
//! session cookie) and 0.4.12 (npm 1.4: one-PUT publish, Basic auth), pinned and installed by
//! `tests/tools.sh` (`LEGACY_CLIENT_02_DIR`, `LEGACY_CLIENT_04_DIR`).
//!
//! Each operation runs the real client in a node process through `tests/support/legacy_client.cjs`
//! (one JSON command in, one JSON outcome out); a `LegacyClient` keeps one cache directory across
//! its operations, as npm 1.x kept `~/.npm`, so `get` revalidates with the ETag it saved.
//!
//! ```text
//! let alice = LegacyClient::new(Version::V04, root, &reg.url).basic("alice", &token);
//! alice.publish(&json!({ "name": "foo", "version": "0.1.0" }), &tarball_path).assert_ok();
//! let got = alice.get("foo").assert_ok();
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// Which npm-registry-client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 0.2.31 (npm 1.3): `PUT /pkg` with an empty document, the tarball as an attachment, then
    /// `PUT /pkg/version/-tag/latest`; a CouchDB session (`POST /_session`, `AuthSession`) unless
    /// `always-auth`.
    V02,
    /// 0.4.12 (npm 1.4): the whole document with the tarball inline in one `PUT /pkg`; Basic auth.
    V04,
}

impl Version {
    /// The driver's name for it, and a label for directories and messages.
    pub fn label(self) -> &'static str {
        match self {
            Version::V02 => "0.2",
            Version::V04 => "0.4",
        }
    }

    /// The exact version installed.
    pub fn pinned(self) -> &'static str {
        match self {
            Version::V02 => "0.2.31",
            Version::V04 => "0.4.12",
        }
    }

    fn env_key(self) -> &'static str {
        match self {
            Version::V02 => "LEGACY_CLIENT_02_DIR",
            Version::V04 => "LEGACY_CLIENT_04_DIR",
        }
    }
}

/// How the client authenticates, as npm 1.x configured it (`username`, `_password`, `_auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    None,
    /// `Authorization: Basic` (0.2.x: with `always-auth`, on every request; 0.4.x: on writes,
    /// and on reads too unless `always_auth` is false).
    Basic {
        /// User name.
        username: String,
        /// Password (in GitHub mode: a GitHub token or a registry token).
        password: String,
        /// 0.4.x only: whether reads carry it too.
        always_auth: bool,
    },
    /// 0.2.x's CouchDB session: `POST /_session` with the name and password before its first
    /// write, then `Cookie: AuthSession=…` on writes. Reads are anonymous.
    Cookie {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

/// The client's error, as its callback got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// `er.message` (or the bare string the client calls back with).
    pub message: String,
    /// `er.code` (`EPUBLISHCONFLICT`, `E404`, `ENEEDAUTH`, …), if any.
    pub code: Option<String>,
}

/// What one operation came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The operation, for messages.
    pub described: String,
    /// No error in the callback.
    pub ok: bool,
    /// The callback's error.
    pub error: Option<ClientError>,
    /// The status of the response the callback saw (null for operations that call back without
    /// one, such as 0.2.x's publish and unpublish).
    pub status: Option<u16>,
    /// The parsed body the callback got.
    pub data: Value,
    /// The client's own request log: `"PUT http://…"`, `"201 http://…"`, in order.
    pub http: Vec<String>,
    /// Everything else it logged.
    pub log: Vec<String>,
    /// 0.2.x's CouchDB session after the operation (`{ "AuthSession": …, "path": …, … }`).
    pub session: Option<Value>,
}

impl Outcome {
    /// The outcome, after checking that the client reported no error.
    #[track_caller]
    pub fn assert_ok(self) -> Outcome {
        assert!(self.ok, "{} failed:\n{}", self.described, self.explain());
        self
    }

    /// The outcome, after checking that the client reported an error with `code`.
    #[track_caller]
    pub fn assert_code(self, code: &str) -> Outcome {
        assert_eq!(
            self.error.as_ref().and_then(|e| e.code.as_deref()),
            Some(code),
            "{}: expected error code {code}:\n{}",
            self.described,
            self.explain()
        );
        self
    }

    /// The outcome, after checking that the client reported an error (any).
    #[track_caller]
    pub fn assert_failed(self) -> Outcome {
        assert!(
            !self.ok,
            "{} succeeded, and should not have:\n{}",
            self.described,
            self.explain()
        );
        self
    }

    /// The requests it made, as `"METHOD /path?query"` (responses left out), in order.
    pub fn requests(&self) -> Vec<String> {
        self.http
            .iter()
            .filter_map(|line| {
                let (method, url) = line.split_once(' ')?;
                if method.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let path = url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                    .unwrap_or(url);
                Some(format!("{method} {path}"))
            })
            .collect()
    }

    /// The statuses of the responses it got, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.http
            .iter()
            .filter_map(|line| line.split_once(' ')?.0.parse().ok())
            .collect()
    }

    /// Everything the outcome says, for failure messages.
    pub fn explain(&self) -> String {
        format!(
            "error: {:?}\nstatus: {:?}\ndata: {}\nhttp:\n  {}\nlog:\n  {}",
            self.error,
            self.status,
            self.data,
            self.http.join("\n  "),
            self.log.join("\n  ")
        )
    }
}

/// One npm-registry-client with its own cache, pointed at one registry.
#[derive(Debug, Clone)]
pub struct LegacyClient {
    /// Which client.
    pub version: Version,
    /// The registry URL, with a trailing slash (as npm 1.x's `registry` setting had it).
    pub registry: String,
    /// Its cache directory (`~/.npm` in npm 1.x): kept across operations.
    pub cache: PathBuf,
    /// How it authenticates.
    pub auth: Auth,
    /// Its `email` setting (publish requires one).
    pub email: String,
}

fn module_dir(version: Version) -> PathBuf {
    let key = version.env_key();
    let value = std::env::var(key).unwrap_or_else(|_| {
        panic!(
            "{key} is not set: `source tests/tools.sh` installs npm-registry-client@{} (tests/run \
             does)",
            version.pinned()
        )
    });
    let path = PathBuf::from(value);
    assert!(
        path.join("package.json").exists(),
        "{key}={} holds no package.json: run `source tests/tools.sh`",
        path.display()
    );
    path
}

/// The node driver script.
pub fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/legacy_client.cjs")
}

impl LegacyClient {
    /// `version` under `root/legacy-<label>-<n>` for `registry_url`, without credentials.
    pub fn new(version: Version, root: &Path, registry_url: &str) -> LegacyClient {
        let cache = tempfile::Builder::new()
            .prefix(&format!("legacy-{}-cache-", version.label()))
            .tempdir_in(root)
            .expect("a cache directory")
            .keep();
        LegacyClient {
            version,
            registry: format!("{}/", registry_url.trim_end_matches('/')),
            cache,
            auth: Auth::None,
            email: "someone@example.com".to_string(),
        }
    }

    /// The same client with Basic credentials (0.4.x: on reads too).
    pub fn basic(self, username: &str, password: &str) -> LegacyClient {
        self.with_auth(Auth::Basic {
            username: username.to_string(),
            password: password.to_string(),
            always_auth: true,
        })
    }

    /// The same client logging in to a CouchDB session (0.2.x).
    pub fn cookie(self, username: &str, password: &str) -> LegacyClient {
        assert_eq!(
            self.version,
            Version::V02,
            "only 0.2.x has CouchDB sessions (couch-login)"
        );
        self.with_auth(Auth::Cookie {
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    /// The same client with `auth`.
    pub fn with_auth(mut self, auth: Auth) -> LegacyClient {
        if let Auth::Basic { username, .. } | Auth::Cookie { username, .. } = &auth {
            self.email = format!("{username}@example.com");
        }
        self.auth = auth;
        self
    }

    /// The same client with a fresh cache (nothing saved from earlier reads).
    pub fn fresh_cache(mut self, root: &Path) -> LegacyClient {
        self.cache = LegacyClient::new(self.version, root, &self.registry).cache;
        self
    }

    fn auth_json(&self) -> Value {
        let email = &self.email;
        match &self.auth {
            Auth::None => json!({ "mode": "none", "email": email }),
            Auth::Basic {
                username,
                password,
                always_auth,
            } => json!({
                "mode": "basic", "username": username, "password": password, "email": email,
                "always_auth": always_auth,
            }),
            Auth::Cookie { username, password } => json!({
                "mode": "cookie", "username": username, "password": password, "email": email,
            }),
        }
    }

    /// Runs `op` with `args` (the README's arguments, by name; see legacy_client.cjs).
    pub fn run(&self, op: &str, args: Value) -> Outcome {
        let command = json!({
            "client": self.version.label(),
            "client_dir": module_dir(self.version),
            "registry": self.registry,
            "cache": self.cache,
            "auth": self.auth_json(),
            "op": op,
            "args": args,
        });
        let described = format!("npm-registry-client@{} {op} {args}", self.version.pinned());
        let mut child = Command::new("node")
            .arg("--no-deprecation")
            .arg(driver())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{described}: start node: {e}"));
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(command.to_string().as_bytes())
                .expect("write the command");
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("{described}: node: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().rev().find(|l| l.starts_with('{'));
        let Some(parsed) = line.and_then(|l| serde_json::from_str::<Value>(l).ok()) else {
            panic!(
                "{described}: the driver printed no outcome ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        Outcome {
            described,
            ok: parsed["ok"].as_bool().unwrap_or(false),
            error: parsed["error"].is_object().then(|| ClientError {
                message: parsed["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                code: parsed["error"]["code"].as_str().map(str::to_string),
            }),
            status: parsed["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok()),
            data: parsed["data"].clone(),
            http: strings(&parsed["http"]),
            log: strings(&parsed["log"]),
            session: parsed["session"]
                .is_object()
                .then(|| parsed["session"].clone()),
        }
    }

    /// `client.adduser(username, password, email)` with its own credentials.
    pub fn adduser(&self) -> Outcome {
        self.run("adduser", json!({}))
    }

    /// `client.adduser(username, password, email)` with other credentials.
    pub fn adduser_as(&self, username: &str, password: &str) -> Outcome {
        self.run(
            "adduser",
            json!({ "username": username, "password": password, "email": self.email }),
        )
    }

    /// `client.get(uri)`.
    pub fn get(&self, uri: &str) -> Outcome {
        self.run("get", json!({ "uri": uri }))
    }

    /// `client.publish(data, tarball)`, with what npm 1.x added to the manifest first
    /// (`_npmUser`, `_npmVersion`, `dist.shasum`).
    pub fn publish(&self, manifest: &Value, tarball: &Path) -> Outcome {
        self.run("publish", json!({ "data": manifest, "tarball": tarball }))
    }

    /// `client.tag(project, version, tag)`.
    pub fn tag(&self, project: &str, version: &str, tag: &str) -> Outcome {
        self.run(
            "tag",
            json!({ "project": project, "version": version, "tag": tag }),
        )
    }

    /// `client.star(package, starred)`.
    pub fn star(&self, package: &str, starred: bool) -> Outcome {
        self.run("star", json!({ "package": package, "starred": starred }))
    }

    /// `client.stars(username)`.
    pub fn stars(&self, username: &str) -> Outcome {
        self.run("stars", json!({ "username": username }))
    }

    /// `client.deprecate(name, version, message)`.
    pub fn deprecate(&self, name: &str, range: &str, message: &str) -> Outcome {
        self.run(
            "deprecate",
            json!({ "name": name, "version": range, "message": message }),
        )
    }

    /// `client.unpublish(name, [ver])`.
    pub fn unpublish(&self, name: &str, version: Option<&str>) -> Outcome {
        self.run("unpublish", json!({ "name": name, "version": version }))
    }

    /// `client.upload(where, file)`.
    pub fn upload(&self, path: &str, file: &Path) -> Outcome {
        self.run("upload", json!({ "where": path, "file": file }))
    }

    /// `client.request(method, where, what)` with a JSON body (or none).
    pub fn request(&self, method: &str, path: &str, what: Option<&Value>) -> Outcome {
        self.run(
            "request",
            json!({ "method": method, "where": path, "what": what }),
        )
    }

    /// `client.bugs(name)`.
    pub fn bugs(&self, name: &str) -> Outcome {
        self.run("bugs", json!({ "name": name }))
    }
}
