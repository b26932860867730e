//! Test support: start the registry (in this process or as the real `registry-server` binary:
//! `TestRegistry`), drive the real npm CLI in an isolated HOME, and build packages and publish
//! documents at test time.
// Tests: casts of small known values and raw file descriptors, literal ids and timestamps copied
// from GitHub's documentation, fakes shaped like the services they stand for.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::unreadable_literal,
    clippy::match_wild_err_arm,
    clippy::unused_async,
    clippy::fn_params_excessive_bools,
    clippy::large_stack_arrays
)]

pub mod api;
pub mod clients;
pub mod fake_github;
pub mod fake_upstream;
pub mod faults;
pub mod github_world;
pub mod lambda_runtime;
pub mod legacy_client;
pub mod oidc_issuer;
pub mod s3_gate;
pub mod stack;
pub mod test_registry;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::Engine;

use crate::s3_gate::S3Gate;

pub use test_registry::{Client, Pkg, Reply, TestRegistry, pkg};

/// The target directory's binary, next to the test executable's `deps/` directory.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace` first (tests/run does)",
        bin.display()
    );
    bin
}

/// A `registry-server` that exited instead of listening.
#[derive(Debug)]
pub struct Exited {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Its log (stderr) by then.
    pub log: String,
}

/// A running `registry-server` process, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Server {
    /// Starts a server on a free port with a fresh data directory inside `root`.
    pub fn start(root: &Path) -> Server {
        Self::start_with(root.join("data"), root.join("server.log"), Vec::new())
    }

    /// Starts a server on `data_dir` with extra environment variables.
    pub fn start_with(data_dir: PathBuf, log: PathBuf, env: Vec<(String, String)>) -> Server {
        Self::try_start_with(data_dir, log, env).unwrap_or_else(|exited| {
            panic!(
                "registry-server exited ({}) instead of listening; log: {}",
                exited.status, exited.log
            )
        })
    }

    /// Starts a server like `start_with`, or returns how it exited if it exits before listening
    /// (it closes its stdout without the listen line).
    pub fn try_start_with(
        data_dir: PathBuf,
        log: PathBuf,
        env: Vec<(String, String)>,
    ) -> Result<Server, Exited> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("server log");
        let mut cmd = Command::new(sibling_binary("registry-server"));
        cmd.arg("--data").arg(&data_dir);
        if !env.iter().any(|(k, _)| k == "REGISTRY_LISTEN") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        // Tests never reach the public registry: no upstream unless a test sets one.
        cmd.env("REGISTRY_UPSTREAM", "");
        cmd.env_remove("REGISTRY_PUBLIC_URL");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().expect("start registry-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listen line");
        if line.is_empty() {
            // End of stdout: it exited (or is exiting) before listening.
            let status = child.wait().expect("wait for registry-server");
            return Err(Exited {
                status,
                log: std::fs::read_to_string(&log).unwrap_or_default(),
            });
        }
        let url = line
            .trim()
            .strip_prefix("registry listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line from server: {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Ok(Server {
            child,
            url,
            data_dir,
            env,
            log,
        })
    }

    /// Stops the server and starts it again on the same data directory (and a new port).
    pub fn restart(self) -> Server {
        let (data_dir, log, env) = (self.data_dir.clone(), self.log.clone(), self.env.clone());
        drop(self);
        Self::start_with(data_dir, log, env)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM, as a supervisor stops it, and waits for it to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().expect("wait for registry-server")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago, for tests that must know the port before the server starts
/// (a public URL with a path prefix).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real corpus `tests/tools.sh` fetched (`CONFUSION_CORPUS_DIR`): every package of
/// `tests/corpus/package-lock.json` (the tree of eslint and jest, 330 versions) as the public
/// registry serves it, one `.tgz` per version, in file-name order.
pub fn corpus_tarballs() -> Vec<PathBuf> {
    let dir = std::env::var("CONFUSION_CORPUS_DIR")
        .expect("CONFUSION_CORPUS_DIR is not set: run the tests with tests/run");
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(&dir).join("tarballs"))
        .unwrap_or_else(|e| panic!("{dir}/tarballs: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tgz"))
        .collect();
    files.sort();
    files
}

/// The corpus project's `dependencies` (`tests/corpus/package.json`).
pub fn corpus_dependencies() -> serde_json::Value {
    let manifest: serde_json::Value = serde_json::from_str(include_str!("../corpus/package.json"))
        .expect("tests/corpus/package.json");
    manifest["dependencies"].clone()
}

/// The npm binary to run: `NPM_BIN` (set by tests/run to the pinned install), else `npm`.
pub fn npm_bin() -> String {
    std::env::var("NPM_BIN").unwrap_or_else(|_| "npm".to_string())
}

/// An npm CLI with its own HOME, `.npmrc` and cache, pointed at one registry.
pub struct Npm {
    home: PathBuf,
    cache: PathBuf,
}

/// What an npm run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit success.
    pub ok: bool,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Npm {
    /// Sets up an isolated npm for `registry_url` with a token for it.
    pub fn new(root: &Path, registry_url: &str) -> Npm {
        Self::with_token(root, registry_url, Some("test-token"))
    }

    /// Sets up an isolated npm for `registry_url` with `token` (or none) in its `.npmrc`.
    pub fn with_token(root: &Path, registry_url: &str, token: Option<&str>) -> Npm {
        let home = root.join("home");
        let cache = root.join("npm-cache");
        std::fs::create_dir_all(&home).unwrap();
        let hostpath = registry_url
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let auth = token
            .map(|t| format!("//{hostpath}/:_authToken={t}\n"))
            .unwrap_or_default();
        let npmrc = format!(
            "registry={registry_url}/\n{auth}audit=false\nfund=false\nupdate-notifier=false\nloglevel=notice\n"
        );
        std::fs::write(home.join(".npmrc"), npmrc).unwrap();
        Npm { home, cache }
    }

    /// Runs `npm ARGS` in `cwd`.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> Run {
        let out: Output = Command::new(npm_bin())
            .args(args)
            .current_dir(cwd)
            .env("HOME", &self.home)
            .env("npm_config_cache", &self.cache)
            .env("npm_config_userconfig", self.home.join(".npmrc"))
            .env_remove("npm_config_registry")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run npm");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `npm ARGS` in `cwd` with extra environment variables, and none of the variables
    /// through which an inherited environment could hand npm a credential or a CI identity.
    pub fn run_with_env(&self, cwd: &Path, args: &[&str], env: &[(String, String)]) -> Run {
        let mut cmd = Command::new(npm_bin());
        cmd.args(args)
            .current_dir(cwd)
            .env("HOME", &self.home)
            .env("npm_config_cache", &self.cache)
            .env("npm_config_userconfig", self.home.join(".npmrc"))
            .env_remove("npm_config_registry")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            let lower = key.to_ascii_lowercase();
            let inherited_auth = lower.starts_with("npm_config_")
                && (lower.contains("auth")
                    || lower.contains("token")
                    || lower.contains("provenance"));
            let ci = matches!(
                key.as_str(),
                "NPM_ID_TOKEN"
                    | "NODE_AUTH_TOKEN"
                    | "GITHUB_ACTIONS"
                    | "CI"
                    | "GITLAB_CI"
                    | "GITLAB"
                    | "CIRCLECI"
                    | "ACTIONS_ID_TOKEN_REQUEST_URL"
                    | "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
                    | "SIGSTORE_ID_TOKEN"
            );
            if inherited_auth || ci {
                cmd.env_remove(&key);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out: Output = cmd.output().expect("run npm");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The path of its user configuration (`.npmrc`).
    pub fn npmrc(&self) -> PathBuf {
        self.home.join(".npmrc")
    }

    /// Runs npm and panics with its output unless it succeeds.
    pub fn ok(&self, cwd: &Path, args: &[&str]) -> Run {
        let run = self.run(cwd, args);
        assert!(run.ok, "npm {args:?} failed:\n{}", run.all());
        run
    }
}

// The builders live in the library (`registry::testing`, the `test-util` feature) so the
// library's own tests share them; re-exported so tests name them as before.
pub use registry::testing::{gzip, integrity, package_tgz, publish_doc, tgz, write_package};

/// The URL path of a package, escaped the way npm escapes it.
pub fn escaped(name: &str) -> String {
    name.replacen('/', "%2f", 1)
}

/// An HTTP client for direct requests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        // Below the server's keep-alive idle timeout (60 s by default), so a pooled connection is
        // never reused at the instant the server closes it (a test that ran node for a minute
        // between two requests failed with "error sending request" on exactly that race).
        .pool_idle_timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// An API Gateway HTTP API (payload 2.0) event as API Gateway sends it to a function.
pub fn apigw_v2_event(
    method: &str,
    raw_path: &str,
    query: &str,
    headers: serde_json::Value,
    body: Option<&[u8]>,
    stage: &str,
) -> serde_json::Value {
    serde_json::json!({
        "version": "2.0",
        "routeKey": format!("{method} {raw_path}"),
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "npm/11.19.1 node/v20.20.2 linux x64"
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": format!("{method} {raw_path}"),
            "stage": stage,
            "time": "22/Nov/2026:23:00:00 +0000",
            "timeEpoch": 1795388400000u64
        },
        "body": body.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        "isBase64Encoded": body.is_some()
    })
}

/// Which storage a test server uses.
pub enum Backend {
    /// Embedded storage in the test's temp dir.
    Local,
    /// DynamoDB and S3 on the emulators, with a fresh table and bucket.
    Aws(AwsResources),
}

/// How the S3 emulator is addressed in presigned URLs, relative to the registry (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Host {
    /// `localhost`, through an [`S3Gate`] that refuses what real S3 refuses: another hostname,
    /// so npm drops the registry token on the redirect.
    Different,
    /// `127.0.0.1`: the registry's hostname, so npm keeps sending the token to S3.
    Same,
}

/// A table and bucket created for one test on the emulators that `tests/run` starts.
pub struct AwsResources {
    /// Table name.
    pub table: String,
    /// Bucket name.
    pub bucket: String,
    /// Environment for a registry process using them.
    pub env: Vec<(String, String)>,
    /// The gate in front of S3 that holds clients to real S3's rules (`S3Host::Different`).
    pub gate: Option<S3Gate>,
}

fn required_env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("{key} is not set: the AWS-backend tests need the emulators that `tests/run` starts")
    })
}

/// The last lines of an emulator's log (`tests/emulators.sh` keeps them in `EMULATOR_LOG_DIR`),
/// so a failure the emulator caused says what it saw.
fn emulator_log_tail(file: &str) -> String {
    let Ok(dir) = std::env::var("EMULATOR_LOG_DIR") else {
        return String::new();
    };
    let path = Path::new(&dir).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

impl AwsResources {
    /// Creates a uniquely named table and bucket with `localstack/create_resources.py`.
    pub fn create(label: &str, s3_host: S3Host) -> AwsResources {
        let dynamodb = required_env("TEST_DYNAMODB_ENDPOINT");
        let mut s3 = required_env("TEST_S3_ENDPOINT");
        // Another hostname, and behind a gate that refuses what real S3 refuses.
        let gate = (s3_host == S3Host::Different).then(|| S3Gate::start(&s3));
        if let Some(gate) = &gate {
            s3 = format!("http://localhost:{}", gate.port);
        }
        let python = required_env("TEST_EMULATOR_PYTHON");
        let suffix: u32 = {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            nanos ^ std::process::id().rotate_left(16)
        };
        let table = format!("reg-{label}-{suffix:08x}");
        let bucket = format!("reg-{label}-{suffix:08x}")
            .to_ascii_lowercase()
            .replace('_', "-");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../localstack/create_resources.py");
        let env = vec![
            ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
            ("AWS_DEFAULT_REGION".to_string(), "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL_DYNAMODB".to_string(), dynamodb.clone()),
            ("AWS_ENDPOINT_URL_S3".to_string(), s3.clone()),
        ];
        let out = Command::new(&python)
            .arg(&script)
            .args([
                "--table",
                &table,
                "--bucket",
                &bucket,
                "--dynamodb-endpoint",
                &dynamodb,
                "--s3-endpoint",
                &s3,
            ])
            .envs(env.iter().cloned())
            .output()
            .expect("run create_resources.py");
        assert!(
            out.status.success(),
            "create_resources.py failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            emulator_log_tail("localstack.log")
        );
        let mut env = env;
        env.push(("REGISTRY_STORAGE".to_string(), "aws".to_string()));
        env.push(("REGISTRY_TABLE".to_string(), table.clone()));
        env.push(("REGISTRY_BUCKET".to_string(), bucket.clone()));
        AwsResources {
            table,
            bucket,
            env,
            gate,
        }
    }
}

impl AwsResources {
    /// The value of `key` in the environment a registry process on these resources gets.
    pub fn env_value(&self, key: &str) -> String {
        self.env.iter().find(|(k, _)| k == key).map_or_else(
            || panic!("{key} is not in the resources' environment"),
            |(_, v)| v.clone(),
        )
    }

    /// An in-process AWS backend on these resources (for counting requests or inspecting S3).
    pub fn storage(&self) -> registry::storage::aws::AwsStorage {
        use registry::storage::aws::{AwsSettings, AwsStorage};
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"),
            ))
            .http_client(AwsStorage::http_client())
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        AwsStorage::new(
            &sdk,
            AwsSettings {
                table: self.table.clone(),
                bucket: self.bucket.clone(),
                presign: Duration::from_secs(300),
                force_path_style: true,
                dynamodb_endpoint: Some(self.env_value("AWS_ENDPOINT_URL_DYNAMODB")),
                s3_endpoint: Some(self.env_value("AWS_ENDPOINT_URL_S3")),
                rebuild_read_units: registry::storage::aws::DEFAULT_REBUILD_READ_UNITS,
            },
        )
    }
}

impl AwsResources {
    /// Stores `bytes` under `key`, behind the registry's back.
    pub async fn put_object(&self, key: &str, bytes: &[u8]) {
        self.s3()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(bytes.to_vec().into())
            .send()
            .await
            .expect("put object");
    }

    /// Every key in the bucket under `prefix`, with its `ETag` (a multipart upload's ends in
    /// `-PARTS`).
    pub async fn object_etags(&self, prefix: &str) -> Vec<(String, String)> {
        self.listed(prefix)
            .await
            .iter()
            .map(|o| {
                (
                    o.key().unwrap_or_default().to_string(),
                    o.e_tag().unwrap_or_default().trim_matches('"').to_string(),
                )
            })
            .collect()
    }

    /// The objects under `prefix`, as `ListObjectsV2` describes them (one page: tests keep few).
    async fn listed(&self, prefix: &str) -> Vec<aws_sdk_s3::types::Object> {
        self.s3()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list objects")
            .contents
            .unwrap_or_default()
    }

    /// The keys of multipart uploads begun and neither completed nor aborted.
    pub async fn incomplete_uploads(&self) -> Vec<String> {
        let listed = self
            .s3()
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("list multipart uploads");
        listed
            .uploads()
            .iter()
            .map(|u| u.key().unwrap_or_default().to_string())
            .collect()
    }

    /// Every key in the bucket under `prefix`, with its bytes.
    pub async fn objects(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let s3 = self.s3();
        let mut objects = Vec::new();
        for key in self.listed(prefix).await.iter().filter_map(|o| o.key()) {
            let got = s3
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("get object");
            let bytes = got.body.collect().await.expect("object body").to_vec();
            objects.push((key.to_string(), bytes));
        }
        objects
    }

    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(self.env_value("AWS_ENDPOINT_URL_DYNAMODB"))
            .http_client(registry::storage::aws::AwsStorage::http_client())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// Every item in the table, each as text, binary attributes as UTF-8 (for looking for what
    /// must not be stored).
    pub async fn table_items(&self) -> Vec<String> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let mut items = Vec::new();
        let mut pages = self
            .dynamodb()
            .scan()
            .table_name(&self.table)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.expect("scan table");
            items.extend(page.items().iter().map(|item| {
                let mut text = String::new();
                for (name, value) in item {
                    let value = match value {
                        AttributeValue::B(blob) => String::from_utf8_lossy(blob.as_ref()).into(),
                        AttributeValue::S(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    text.push_str(&format!("{name}: {value}\n"));
                }
                text
            }));
        }
        items
    }

    /// Deletes the table behind the registry's back (an operator's mistake, or a stack torn
    /// down under a running server).
    pub async fn delete_table(&self) {
        self.dynamodb()
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
            .expect("delete table");
    }

    /// Empties and deletes the bucket behind the registry's back.
    pub async fn delete_bucket(&self) {
        let s3 = self.s3();
        for (key, _) in self.objects("").await {
            s3.delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("delete object");
        }
        s3.delete_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("delete bucket");
    }

    /// An S3 client on the resources' endpoint (path-style, as the emulators need).
    fn s3(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(self.env_value("AWS_ENDPOINT_URL_S3"))
            .force_path_style(true)
            .http_client(registry::storage::aws::AwsStorage::http_client())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

impl Backend {
    /// How many tarballs the backend stores right now.
    pub async fn tarball_count(&self, data_dir: &Path) -> usize {
        use registry::storage::TarballStore;
        match self {
            Backend::Local => {
                // Small tarballs live in the database, which a running server holds: it counts
                // them, in a sweep with an age nothing reaches (every tarball checked, none
                // removed). With no server there, the stores are opened here.
                let never = Duration::from_secs(100 * 365 * 24 * 3600);
                if let Some(report) = registry::app::control::sweep(data_dir, never)
                    .await
                    .unwrap()
                {
                    return report.checked;
                }
                let (_metadata, tarballs) = registry::storage::embedded::open(data_dir).unwrap();
                tarballs.list(Duration::ZERO).await.unwrap().len()
            }
            Backend::Aws(r) => r.storage().list(Duration::ZERO).await.unwrap().len(),
        }
    }

    /// The embedded backend.
    pub fn local() -> Backend {
        Backend::Local
    }

    /// The AWS backend on fresh emulator resources.
    pub fn aws(label: &str, s3_host: S3Host) -> Backend {
        Backend::Aws(AwsResources::create(label, s3_host))
    }

    /// Environment for a registry process on this backend.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Backend::Local => Vec::new(),
            Backend::Aws(r) => r.env.clone(),
        }
    }
}

impl Server {
    /// Starts a server on `backend` (the local one keeps its data under `root`).
    pub fn start_on(root: &Path, backend: &Backend) -> Server {
        Self::start_with(root.join("data"), root.join("server.log"), backend.env())
    }
}
