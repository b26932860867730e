//! A registry for one test and a small client for the calls tests repeat.
//!
//! The registry runs in this process (the library's composition root on a local listener, on a
//! runtime thread of its own, so a test may block its own thread on npm or a raw socket) or as the
//! `registry-server` binary, on the embedded backend or on AWS (the emulators):
//!
//! ```text
//! let reg = TestRegistry::start().await;                 // in-process, embedded, open mode
//! let reg = TestRegistry::builder()
//!     .aws("label", S3Host::Same)
//!     .github(&world)
//!     .process()
//!     .start()
//!     .await;
//! reg.as_user(&world.alice.token)
//!     .publish(pkg("@acme/a").version("1.0.0").repository("github:acme/widgets"))
//!     .await
//!     .assert_status(201);
//! let reply = reg.get_packument("@acme/a").await;        // status, headers and JSON body
//! ```
//!
//! Run it as a process to test the binary (its flags, its log, its exit) or when a crash must
//! fail one test rather than the whole test binary (hostile input). In-process it starts without
//! a fork and exec, but GitHub mode on AWS is not available: `App::builder` takes stores a test
//! opens only without their key-value store, which GitHub mode keeps its tokens in.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use registry::config::Config;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::github_world::World;
use crate::{Backend, S3Host, Server, escaped, http, package_tgz, publish_doc};

/// The `Accept` header of npm's install requests, which asks for the abbreviated packument.
pub const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

/// A change to a publish document.
type Edit = Box<dyn FnOnce(&mut Value) + Send>;

/// A package version to publish: `pkg("@acme/a").version("2.0.0").repository("github:acme/a")`.
pub struct Pkg {
    name: String,
    version: String,
    repository: Option<String>,
    tarball: Option<Vec<u8>>,
    edits: Vec<Edit>,
}

/// Version 1.0.0 of `name`, with a generated tarball and no repository.
pub fn pkg(name: &str) -> Pkg {
    Pkg {
        name: name.to_string(),
        version: "1.0.0".to_string(),
        repository: None,
        tarball: None,
        edits: Vec::new(),
    }
}

impl Pkg {
    /// Publishes `version` instead of 1.0.0.
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// Names `repository` in the version's manifest, as package.json's `repository` does.
    pub fn repository(mut self, repository: &str) -> Self {
        self.repository = Some(repository.to_string());
        self
    }

    /// Carries `tarball` (its digests and length computed) instead of the generated one.
    pub fn tarball(mut self, tarball: Vec<u8>) -> Self {
        self.tarball = Some(tarball);
        self
    }

    /// Changes the finished publish document (for documents npm would not send).
    pub fn edit(mut self, edit: impl FnOnce(&mut Value) + Send + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// The package's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The publish document, as npm sends it.
    pub fn doc(self) -> Value {
        let tarball = self
            .tarball
            .unwrap_or_else(|| package_tgz(&self.name, &self.version));
        let mut doc = publish_doc(&self.name, &self.version, &tarball);
        if let Some(repository) = self.repository {
            doc["versions"][&self.version]["repository"] = json!(repository);
        }
        for edit in self.edits {
            edit(&mut doc);
        }
        doc
    }
}

/// What the registry answered.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The request, as `METHOD /path`, for messages.
    pub request: String,
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body parsed as JSON, or null when it is not JSON.
    pub body: Value,
    /// The body's bytes.
    pub bytes: Bytes,
}

/// A reply whose status is not a success.
#[derive(Debug, thiserror::Error)]
#[error("{request}: {status} {body}")]
pub struct Refused {
    /// The request, as `METHOD /path`.
    pub request: String,
    /// The status.
    pub status: StatusCode,
    /// The body (JSON, or null).
    pub body: Value,
}

impl Reply {
    /// The reply, after checking its status (the message names the request and the body).
    #[track_caller]
    pub fn assert_status(self, wanted: u16) -> Reply {
        assert_eq!(
            self.status.as_u16(),
            wanted,
            "{}: {}",
            self.request,
            String::from_utf8_lossy(&self.bytes)
        );
        self
    }

    /// The reply if its status is a success, else what was refused (for tests that use `?`).
    pub fn success(self) -> Result<Reply, Refused> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(Refused {
                request: self.request,
                status: self.status,
                body: self.body,
            })
        }
    }

    /// The error body's message (`error`), if it has one.
    pub fn error(&self) -> Option<&str> {
        self.body["error"].as_str()
    }

    /// The error body's stable code (`code`, docs/errors.md), if it has one.
    pub fn code(&self) -> Option<&str> {
        self.body["code"].as_str()
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request being built; `send` makes it.
pub struct Request {
    described: String,
    inner: reqwest::RequestBuilder,
}

impl Request {
    /// Sends `body` as JSON.
    pub fn json(mut self, body: &Value) -> Self {
        self.inner = self.inner.json(body);
        self
    }

    /// Sends `body` as is, labelled `application/json` (as npm labels everything it sends).
    pub fn raw_json(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.inner = self
            .inner
            .header("content-type", "application/json")
            .body(body);
        self
    }

    /// Sends `body` as is, with whatever `Content-Type` the request is given (or none).
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.inner = self.inner.body(body);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner = self.inner.header(name, value);
        self
    }

    /// Sends the request (panics if no answer comes: a test cannot go on without one).
    pub async fn send(self) -> Reply {
        let response = self
            .inner
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: no answer: {e:?}", self.described));
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{}: body: {e}", self.described));
        Reply {
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            request: self.described,
            status,
            headers,
            bytes,
        }
    }
}

/// A client of one registry, anonymous or with a token. `TestRegistry` dereferences to its
/// anonymous client.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// The same registry with `token` (a GitHub token or a registry token) as bearer.
    pub fn as_user(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The same registry without a token.
    pub fn anonymous(&self) -> Client {
        Client {
            token: None,
            ..self.clone()
        }
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with this client's token; redirects are not followed.
    pub fn request(&self, method: Method, path: &str) -> Request {
        let mut inner = self.http.request(method.clone(), self.url(path));
        if let Some(token) = &self.token {
            inner = inner.bearer_auth(token);
        }
        Request {
            described: format!("{method} {path}"),
            inner,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Request {
        self.request(Method::GET, path)
    }

    /// `PUT path`.
    pub fn put(&self, path: &str) -> Request {
        self.request(Method::PUT, path)
    }

    /// `POST path`.
    pub fn post(&self, path: &str) -> Request {
        self.request(Method::POST, path)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Request {
        self.request(Method::DELETE, path)
    }

    /// Publishes `pkg` as `npm publish` does.
    pub async fn publish(&self, pkg: Pkg) -> Reply {
        let path = format!("/{}", escaped(pkg.name()));
        self.put(&path).json(&pkg.doc()).send().await
    }

    /// The full packument, as `npm view` asks for it.
    pub async fn get_packument(&self, name: &str) -> Reply {
        self.get(&format!("/{}", escaped(name))).send().await
    }

    /// The abbreviated packument, as `npm install` asks for it.
    pub async fn get_abbreviated(&self, name: &str) -> Reply {
        self.get(&format!("/{}", escaped(name)))
            .header("accept", ABBREVIATED)
            .send()
            .await
    }

    /// The packument as its maintainers see it (`?write=true`, what `npm owner` and `npm
    /// deprecate` read before they write).
    pub async fn get_for_write(&self, name: &str) -> Reply {
        self.get(&format!("/{}?write=true", escaped(name)))
            .send()
            .await
    }

    /// The package's dist-tags (`npm dist-tag ls`).
    pub async fn dist_tags(&self, name: &str) -> Reply {
        self.get(&format!("/-/package/{}/dist-tags", escaped(name)))
            .send()
            .await
    }

    /// Points `tag` at `version` (`npm dist-tag add`).
    pub async fn put_dist_tag(&self, name: &str, tag: &str, version: &str) -> Reply {
        self.put(&format!("/-/package/{}/dist-tags/{tag}", escaped(name)))
            .json(&json!(version))
            .send()
            .await
    }

    /// Removes `tag` (`npm dist-tag rm`).
    pub async fn delete_dist_tag(&self, name: &str, tag: &str) -> Reply {
        self.delete(&format!("/-/package/{}/dist-tags/{tag}", escaped(name)))
            .send()
            .await
    }

    /// The caller's registry tokens (`npm token list`).
    pub async fn tokens(&self) -> Reply {
        self.get("/-/npm/v1/tokens").send().await
    }

    /// Mints a registry token (`npm token create`), read-only if asked.
    pub async fn create_token(&self, readonly: bool) -> Reply {
        self.post("/-/npm/v1/tokens")
            .json(&json!({ "password": "", "readonly": readonly }))
            .send()
            .await
    }

    /// Who the caller is (`npm whoami`).
    pub async fn whoami(&self) -> Reply {
        self.get("/-/whoami").send().await
    }

    /// `npm login`'s legacy request: the GitHub login as user name and the GitHub token as
    /// password; the registry token it answers.
    pub async fn login(&self, login: &str, password: &str) -> Reply {
        let body = json!({
            "_id": format!("org.couchdb.user:{login}"),
            "name": login,
            "password": password,
            "type": "user",
            "roles": [],
            "date": "2026-11-22T00:00:00.000Z",
        });
        self.put(&format!("/-/user/org.couchdb.user:{login}"))
            .json(&body)
            .send()
            .await
    }
}

/// How a `TestRegistry` is started; see `TestRegistry::builder`.
pub struct RegistryBuilder {
    process: bool,
    backend: Backend,
    github: bool,
    env: Vec<(String, String)>,
    root: Option<PathBuf>,
}

impl RegistryBuilder {
    /// Runs the `registry-server` binary instead of serving in this process.
    pub fn process(mut self) -> Self {
        self.process = true;
        self
    }

    /// Stores on `backend` (default: embedded, in the registry's temporary directory).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Stores on AWS: a fresh table and bucket on the emulators.
    pub fn aws(self, label: &str, s3_host: S3Host) -> Self {
        self.backend(Backend::aws(label, s3_host))
    }

    /// GitHub mode against `world`'s fake GitHub, with its signing secret.
    pub fn github(mut self, world: &World) -> Self {
        self.github = true;
        self.env.extend(world.github_env());
        self
    }

    /// Sets an environment variable of the registry (a later value wins).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Keeps the data directory (`ROOT/data`) and the process's log (`ROOT/server.log`) under
    /// `root` instead of a temporary directory of the registry's own.
    pub fn root(mut self, root: &Path) -> Self {
        self.root = Some(root.to_path_buf());
        self
    }

    /// Starts the registry; panics with the reason if it does not start.
    pub async fn start(self) -> TestRegistry {
        let RegistryBuilder {
            process,
            backend,
            github,
            env,
            root,
        } = self;
        let tmp = match root {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("a temporary directory")),
        };
        let root = root.unwrap_or_else(|| tmp.as_ref().expect("made above").path().to_path_buf());
        let data_dir = root.join("data");
        let mut all = backend.env();
        all.extend(env);
        let runner = if process {
            Runner::Process(Server::start_with(
                data_dir.clone(),
                root.join("server.log"),
                all,
            ))
        } else {
            let aws = match &backend {
                Backend::Local => None,
                Backend::Aws(_) if github => panic!(
                    "GitHub mode on AWS runs only as a process (.process()): App::builder's \
                     stores() takes no key-value store for its tokens"
                ),
                Backend::Aws(resources) => Some(resources.storage()),
            };
            Runner::InProcess(InProcess::start(config(&data_dir, &all), aws).await)
        };
        let url = match &runner {
            Runner::Process(server) => server.url.clone(),
            Runner::InProcess(served) => served.url.clone(),
        };
        TestRegistry {
            client: Client {
                base: url.clone(),
                http: http(),
                token: None,
            },
            url,
            runner,
            backend,
            data_dir,
            _tmp: tmp,
        }
    }
}

/// The configuration a process started with `env` would read (the binary's defaults for tests:
/// any free port, no upstream), without the test process's own environment.
fn config(data_dir: &Path, env: &[(String, String)]) -> Config {
    let data = data_dir.display().to_string();
    Config::from_lookup(|key| {
        if let Some((_, value)) = env.iter().rev().find(|(k, _)| k == key) {
            return Some(value.clone());
        }
        match key {
            "REGISTRY_DATA_DIR" => Some(data.clone()),
            "REGISTRY_LISTEN" => Some("127.0.0.1:0".into()),
            "REGISTRY_UPSTREAM" => Some(String::new()),
            _ => None,
        }
    })
    .unwrap_or_else(|e| panic!("test registry configuration: {e}"))
}

/// A registry served in this process, on a runtime thread of its own; stopped on drop.
struct InProcess {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Serves `config` (on `aws` when given, else on the configured embedded backend).
    async fn start(config: Config, aws: Option<registry::storage::aws::AwsStorage>) -> InProcess {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-registry".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(serve_in_process(config, aws, ready_tx, async {
                    let _ = stop_rx.await;
                }));
            })
            .expect("start the registry's thread");
        let url = match ready_rx.await {
            Ok(Ok(url)) => url,
            Ok(Err(e)) => panic!("the in-process registry did not start: {e}"),
            Err(_) => panic!("the in-process registry's thread ended before it listened"),
        };
        InProcess {
            url,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

/// Binds, builds the application and serves it until `stop`, as `registry-server` does; says on
/// `ready` where it listens, or why it could not start.
async fn serve_in_process(
    mut config: Config,
    aws: Option<registry::storage::aws::AwsStorage>,
    ready: tokio::sync::oneshot::Sender<Result<String, String>>,
    stop: impl std::future::Future<Output = ()>,
) {
    use registry::listener::{ListenerSettings, LocalServer};
    let Some(storage) = aws else {
        // The embedded backend: exactly the local server's own path.
        let server = match LocalServer::bind(config).await {
            Ok(server) => server,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let addr = server
            .local_addr()
            .expect("a bound listener has an address");
        let _ = ready.send(Ok(format!("http://{addr}")));
        if let Err(e) = server.serve(stop).await {
            report_listener_failure(&e);
        }
        return;
    };
    // AWS: the stores are opened here (their endpoints are the emulators', not this process's
    // environment), with the backend's audit log as the binary has it.
    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!("bind {}: {e}", config.server.listen)));
            return;
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    config
        .server
        .public_url
        .get_or_insert_with(|| format!("http://{addr}"));
    let settings = ListenerSettings::from_config(&config);
    let retention = registry::storage::AuditRetention::days(config.audit.retention_days);
    let storage = Arc::new(storage);
    let state = registry::app::App::builder(config)
        .stores(storage.clone(), storage.clone())
        .upstream(storage.clone(), storage.clone())
        .kv(storage.clone())
        .audit(Arc::new(storage.audit_log(retention)))
        .build()
        .await;
    let state = match state {
        Ok(state) => state,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let app = registry::http::router(state, &registry::http::RouteGroup::ALL);
    let _ = ready.send(Ok(format!("http://{addr}")));
    if let Err(e) = registry::listener::serve(listener, app, settings, stop).await {
        report_listener_failure(&e);
    }
}

/// The in-process registry has no log file: a listener failure goes to stderr, which the test
/// harness shows with the test that failed.
fn report_listener_failure(e: &dyn std::fmt::Display) {
    eprintln!("in-process registry: listener failed: {e}");
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Joined, so that the database is closed when the registry is gone (a restart or a
        // `registry-server` command on the same data directory opens it next).
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How the registry runs.
enum Runner {
    Process(Server),
    InProcess(InProcess),
}

/// A registry for one test; see the module documentation. Stopped on drop.
pub struct TestRegistry {
    // Dropped first: the registry stops before its backend (and S3 gate) and its directory go.
    runner: Runner,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    client: Client,
    backend: Backend,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestRegistry {
    /// A builder: in-process, embedded storage, open mode, until told otherwise.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            process: false,
            backend: Backend::Local,
            github: false,
            env: Vec::new(),
            root: None,
        }
    }

    /// An in-process registry in open mode on embedded storage.
    pub async fn start() -> TestRegistry {
        Self::builder().start().await
    }

    /// The data directory (the embedded backend's storage; the AWS backend keeps only its
    /// temporary files there).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The backend it stores on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// How many tarballs the backend stores right now.
    pub async fn tarball_count(&self) -> usize {
        self.backend.tarball_count(&self.data_dir).await
    }

    /// The `registry-server` process, when it runs as one.
    pub fn server(&self) -> Option<&Server> {
        match &self.runner {
            Runner::Process(server) => Some(server),
            Runner::InProcess(_) => None,
        }
    }

    /// True while it serves (the process runs, or the in-process listener's thread does).
    pub fn is_running(&mut self) -> bool {
        match &mut self.runner {
            Runner::Process(server) => server.is_running(),
            Runner::InProcess(served) => served
                .thread
                .as_ref()
                .is_some_and(|thread| !thread.is_finished()),
        }
    }
}

impl Deref for TestRegistry {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}
