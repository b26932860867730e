//! Trusted publishing from GitHub Actions: the real npm CLI (pinned 11.19.1) publishes as the
//! README's workflow does — `GITHUB_ACTIONS`, `CI`, `ACTIONS_ID_TOKEN_REQUEST_URL` and
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN` set, `.npmrc` as `actions/setup-node` with `registry-url`
//! writes it (`_authToken=${NODE_AUTH_TOKEN}`, the placeholder setup-node exports), and plain
//! `npm publish` — against a local OIDC issuer and ID-token endpoint (keys made at test time)
//! and the fake GitHub API, on both backends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use e2e::api::{assert_no_secrets, doc, packument, send};
use e2e::github_world::{User, World};
use e2e::oidc_issuer::{OidcIssuer, RunSpec};
use e2e::{Backend, Npm, Run, S3Host, Server, escaped, write_package};
use registry::auth::kv::Kv;
use registry::auth::trust;
use registry::domain::trust::{PERMISSION_CREATE_PACKAGE, TrustConfiguration};
use registry::domain::{PackageName, RepoRef};
use registry::storage::KvStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The numeric id of the acme organisation, as its ID tokens carry it.
const ACME_ID: &str = "4201";
/// What `actions/setup-node` exports as `NODE_AUTH_TOKEN` when none is given.
const SETUP_NODE_PLACEHOLDER: &str = "XXXXX-XXXXX-XXXXX-XXXXX";

fn configuration(id: &str, repo: &str, environment: Option<&str>) -> TrustConfiguration {
    let (owner, name) = repo.split_once('/').unwrap();
    TrustConfiguration {
        id: id.into(),
        repository: RepoRef::new(owner, name).unwrap(),
        repository_owner_id: ACME_ID.into(),
        workflow_file: "publish.yml".into(),
        environment: environment.map(str::to_string),
        permissions: vec![PERMISSION_CREATE_PACKAGE.into()],
        created: chrono::Utc::now(),
        created_by: "alice".into(),
    }
}

fn widgets() -> PackageName {
    PackageName::parse("@acme/widgets").unwrap()
}

/// A registry in GitHub mode trusting the local issuer, the fake GitHub and the fake issuer.
struct Registry {
    root: PathBuf,
    world: World,
    issuer: OidcIssuer,
    backend: Backend,
    server: Server,
    runs: usize,
}

impl Registry {
    async fn start(root: &Path, backend: Backend) -> Registry {
        let world = World::start().await;
        let issuer = OidcIssuer::start(RunSpec::new("acme/widgets", ACME_ID)).await;
        let server = world.server(
            root,
            &backend,
            &[("REGISTRY_OIDC_ISSUER", issuer.url.as_str())],
        );
        Registry {
            root: root.to_path_buf(),
            world,
            issuer,
            backend,
            server,
            runs: 0,
        }
    }

    fn server(&self) -> &Server {
        &self.server
    }

    /// `npm ARGS` as `user` (a GitHub login of the world), with their GitHub token in `.npmrc`.
    fn npm_as(&mut self, user: &User, args: &[&str]) -> Run {
        self.runs += 1;
        let npm = Npm::with_token(
            &self.root.join(format!("npm-{}-{}", user.login, self.runs)),
            &self.server().url,
            Some(&user.token),
        );
        npm.ok(&self.root, args)
    }

    /// The ids of the package's trust configurations, as `user` lists them.
    async fn configuration_ids(&self, user: &User, package: &str) -> Vec<String> {
        let (status, listed, _) = send(
            Method::GET,
            format!("{}/-/package/{}/trust", self.server().url, escaped(package)),
            Some(&user.token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// `npm publish` in `dir` as the README's workflow runs it, with the issuer's next ID token
    /// describing `run`; verbose, so npm's log shows the exchange's `message`.
    fn publish_from_ci(&mut self, dir: &Path, run: RunSpec, extra: &[(&str, &str)]) -> Run {
        self.issuer.set_run(run);
        self.runs += 1;
        let npm = Npm::with_token(
            &self.root.join(format!("ci-{}", self.runs)),
            &self.server().url,
            None,
        );
        let host = self.server().url.trim_start_matches("http://").to_string();
        std::fs::write(
            npm.npmrc(),
            format!(
                "//{host}/:_authToken=${{NODE_AUTH_TOKEN}}\nregistry={}/\naudit=false\nfund=false\nupdate-notifier=false\n",
                self.server().url
            ),
        )
        .unwrap();
        let mut env = self.issuer.job_env();
        env.push(("NODE_AUTH_TOKEN".into(), SETUP_NODE_PLACEHOLDER.into()));
        env.push(("npm_config_loglevel".into(), "verbose".into()));
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        npm.run_with_env(dir, &["publish"], &env)
    }

    /// `registry-server audit ARGS` on this registry's storage: stdout.
    fn audit(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(e2e::sibling_binary("registry-server"))
            .arg("--data")
            .arg(&self.server.data_dir)
            .arg("audit")
            .args(args)
            .envs(self.world.env(&self.backend, &[]))
            .output()
            .expect("run registry-server audit");
        assert!(
            out.status.success(),
            "registry-server audit {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn versions(&self, package: &str) -> Vec<String> {
        packument(self.server(), &self.world.alice.token, package)
            .await
            .map(|p| p["versions"].as_object().unwrap().keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The exchange as npm makes it, with `id_token` as the bearer.
    async fn exchange(&self, package: &str, id_token: &str) -> (StatusCode, Value) {
        let (s, b, _) = send(
            Method::POST,
            format!(
                "{}/-/npm/v1/oidc/token/exchange/package/{}",
                self.server().url,
                escaped(package)
            ),
            Some(id_token),
            None,
        )
        .await;
        (s, b)
    }

    /// A fresh ID token for `run`, issued for this registry.
    fn id_token(&self, run: RunSpec) -> String {
        self.issuer.set_run(run);
        self.issuer.id_token("npm:127.0.0.1")
    }
}

/// The exchange's refusal as npm logged it.
fn exchange_message(run: &Run) -> String {
    run.all()
        .lines()
        .find(|l| l.contains("Failed token exchange request with body message"))
        .map_or_else(
            || panic!("npm did not log a refused exchange:\n{}", run.all()),
            str::to_string,
        )
}

fn widgets_dir(root: &Path, version: &str) -> PathBuf {
    write_package(
        &root.join(format!("widgets-{version}")),
        "@acme/widgets",
        version,
        json!({ "repository": "github:acme/widgets" }),
    )
}

#[tokio::test]
async fn trusted_publishing_local() {
    trusted_publishing(Backend::local()).await;
}

#[tokio::test]
async fn trusted_publishing_aws() {
    trusted_publishing(Backend::aws("trustpub", S3Host::Different)).await;
}

async fn trusted_publishing(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut registry = Registry::start(root, backend).await;
    let acme_id = registry.world.github.account_id("acme").to_string();
    let (alice, bob) = (registry.world.alice.clone(), registry.world.bob.clone());
    // The admins trust the workflows as the README shows, before either package has a version
    // (which binds each name to its repository).
    registry.npm_as(
        &alice,
        &[
            "trust",
            "github",
            "@acme/widgets",
            "--file",
            "publish.yml",
            "--repo",
            "acme/widgets",
            "--env",
            "npm",
            "--allow-publish",
            "--yes",
        ],
    );
    registry.npm_as(
        &bob,
        &[
            "trust",
            "github",
            "@acme/other",
            "--file",
            "publish.yml",
            "--repo",
            "acme/other",
            "--allow-publish",
            "--yes",
        ],
    );
    let configured = || RunSpec {
        environment: Some("npm".into()),
        ..RunSpec::new("acme/widgets", &acme_id)
    };

    // Every run the configuration does not admit is refused, says why, and stores nothing.
    let dir = widgets_dir(root, "1.0.0");
    let refusals: Vec<(RunSpec, &str)> = vec![
        (
            RunSpec {
                environment: Some("npm".into()),
                ..RunSpec::new("acme/public-lib", &acme_id)
            },
            "no trusted publisher of @acme/widgets matches repository acme/public-lib",
        ),
        (
            RunSpec {
                workflow_file: "ci.yml".into(),
                ..configured()
            },
            "is not .github/workflows/publish.yml",
        ),
        (
            RunSpec {
                environment: Some("staging".into()),
                ..configured()
            },
            "environment staging is not npm",
        ),
        (
            RunSpec {
                environment: None,
                ..configured()
            },
            "environment (none) is not npm",
        ),
        (
            RunSpec {
                event_name: "pull_request_target".into(),
                ..configured()
            },
            "workflow runs triggered by pull_request_target may not publish",
        ),
        (
            RunSpec {
                event_name: "workflow_run".into(),
                ..configured()
            },
            "workflow runs triggered by workflow_run may not publish",
        ),
        (
            RunSpec {
                owner_id: "999".into(),
                ..configured()
            },
            "owner id differs",
        ),
        (
            RunSpec {
                audience: Some("npm:registry.npmjs.org".into()),
                ..configured()
            },
            "audience is \"npm:registry.npmjs.org\", not npm:127.0.0.1",
        ),
        (
            RunSpec {
                expired: true,
                ..configured()
            },
            "the ID token has expired",
        ),
    ];
    for (run, expected) in refusals {
        let refused = registry.publish_from_ci(&dir, run.clone(), &[]);
        assert!(!refused.ok, "{run:?} must not publish:\n{}", refused.all());
        let message = exchange_message(&refused);
        assert!(message.contains(expected), "{run:?}: {message}");
        assert!(
            registry.versions("@acme/widgets").await.is_empty(),
            "{run:?}"
        );
    }
    assert_eq!(
        registry
            .backend
            .tarball_count(&registry.server().data_dir)
            .await,
        0,
        "no tarball was stored by a refused publish"
    );

    // The configured workflow publishes, with no token of its own.
    let published = registry.publish_from_ci(&dir, configured(), &[]);
    assert!(published.ok, "{}", published.all());
    assert!(
        published
            .all()
            .contains("Successfully retrieved and set token"),
        "{}",
        published.all()
    );
    assert_eq!(registry.versions("@acme/widgets").await, ["1.0.0"]);
    let used = registry.issuer.issued().last().unwrap().clone();

    // Its ID token cannot be exchanged again (npm takes NPM_ID_TOKEN over the endpoint).
    let dir = widgets_dir(root, "1.0.1");
    let replayed = registry.publish_from_ci(&dir, configured(), &[("NPM_ID_TOKEN", &used)]);
    assert!(!replayed.ok, "{}", replayed.all());
    assert!(
        exchange_message(&replayed).contains("already exchanged"),
        "{}",
        replayed.all()
    );
    assert_eq!(registry.versions("@acme/widgets").await, ["1.0.0"]);

    // The first version of a name whose configuration was made before it had one.
    let other = write_package(
        &root.join("other"),
        "@acme/other",
        "0.1.0",
        json!({ "repository": "github:acme/other" }),
    );
    let published = registry.publish_from_ci(&other, RunSpec::new("acme/other", &acme_id), &[]);
    assert!(published.ok, "{}", published.all());
    assert_eq!(registry.versions("@acme/other").await, ["0.1.0"]);

    // A token minted for one package publishes nothing else (other packages look as they do to
    // an outsider), and does nothing but publish.
    let (status, minted) = registry
        .exchange("@acme/widgets", &registry.id_token(configured()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let token = minted["token"].as_str().unwrap().to_string();
    let url = registry.server().url.clone();
    let (status, body, _) = send(
        Method::PUT,
        format!("{url}/{}", escaped("@acme/other")),
        Some(&token),
        Some(&doc("@acme/other", "0.2.0", Some("github:acme/other"))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("from repository acme/other: it does not exist or you have no access to it"),
        "{body}"
    );
    assert_eq!(registry.versions("@acme/other").await, ["0.1.0"]);
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/-/package/{}/dist-tags/beta", escaped("@acme/widgets")),
            Some(json!("1.0.0")),
        ),
        (
            Method::DELETE,
            format!("/{}/-rev/1-x", escaped("@acme/widgets")),
            None,
        ),
        (Method::GET, "/-/npm/v1/tokens".to_string(), None),
    ] {
        let (status, answer, _) = send(
            method.clone(),
            format!("{url}{path}"),
            Some(&token),
            body.as_ref(),
        )
        .await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED,
            "{method} {path}: {status} {answer}"
        );
    }
    let tags = packument(
        registry.server(),
        &registry.world.alice.token,
        "@acme/widgets",
    )
    .await
    .unwrap()["dist-tags"]
        .clone();
    assert_eq!(tags, json!({ "latest": "1.0.0" }));

    // npm asks the visibility with the minted token (lib/utils/oidc.js, then libnpmpublish's
    // provenance check): its own package's is answered, another's is the missing answer.
    let visibility_of = |package: &str| format!("{url}/-/package/{}/visibility", escaped(package));
    let (status, body, _) = send(
        Method::GET,
        visibility_of("@acme/widgets"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "public": false })));
    let other_visibility = send(
        Method::GET,
        visibility_of("@acme/other"),
        Some(&token),
        None,
    )
    .await;
    let missing_visibility = send(
        Method::GET,
        visibility_of("@acme/nothing"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        other_visibility.0,
        StatusCode::NOT_FOUND,
        "{}",
        other_visibility.1
    );
    assert_eq!(
        other_visibility.1.to_string().replace("other", "nothing"),
        missing_visibility.1.to_string()
    );

    // A package bound to a public repository: `{"public": true}`, to the workflow's minted
    // token (what npm enables provenance on) and to anyone who may read it.
    registry.npm_as(
        &alice,
        &[
            "trust",
            "github",
            "@acme/public-lib",
            "--file",
            "publish.yml",
            "--repo",
            "acme/public-lib",
            "--allow-publish",
            "--yes",
        ],
    );
    let public_run = RunSpec {
        visibility: "public".into(),
        ..RunSpec::new("acme/public-lib", &acme_id)
    };
    let (status, minted) = registry
        .exchange("@acme/public-lib", &registry.id_token(public_run))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let public_token = minted["token"].as_str().unwrap().to_string();
    let (status, body, _) = send(
        Method::PUT,
        format!("{url}/{}", escaped("@acme/public-lib")),
        Some(&public_token),
        Some(&doc(
            "@acme/public-lib",
            "1.0.0",
            Some("github:acme/public-lib"),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for bearer in [&public_token, &registry.world.dave.token] {
        let (status, body, _) = send(
            Method::GET,
            visibility_of("@acme/public-lib"),
            Some(bearer),
            None,
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, json!({ "public": true })));
    }
    let (status, body, _) = send(
        Method::GET,
        visibility_of("@acme/widgets"),
        Some(&public_token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Revoking the configuration kills the tokens minted from it at once, and the exchange.
    let ids = registry.configuration_ids(&alice, "@acme/widgets").await;
    assert_eq!(ids.len(), 1);
    registry.npm_as(
        &alice,
        &["trust", "revoke", "@acme/widgets", "--id", &ids[0]],
    );
    let url = registry.server().url.clone();
    let (status, body, _) = send(
        Method::PUT,
        format!("{url}/{}", escaped("@acme/widgets")),
        Some(&token),
        Some(&doc("@acme/widgets", "1.0.2", Some("github:acme/widgets"))),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("was revoked"),
        "{body}"
    );
    let dir = widgets_dir(root, "1.0.2");
    let refused = registry.publish_from_ci(&dir, configured(), &[]);
    assert!(!refused.ok, "{}", refused.all());
    assert!(
        exchange_message(&refused).contains("no trusted publisher of @acme/widgets"),
        "{}",
        refused.all()
    );
    assert_eq!(registry.versions("@acme/widgets").await, ["1.0.0"]);

    // The package's visibility, for callers who may read it; the missing answer otherwise.
    let visibility = format!("{url}/-/package/{}/visibility", escaped("@acme/widgets"));
    let (status, body, _) = send(
        Method::GET,
        visibility.clone(),
        Some(&registry.world.carol.token),
        None,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "public": false })));
    let hidden = send(
        Method::GET,
        visibility,
        Some(&registry.world.dave.token),
        None,
    )
    .await;
    let missing = send(
        Method::GET,
        format!("{url}/-/package/{}/visibility", escaped("@acme/nothing")),
        Some(&registry.world.dave.token),
        None,
    )
    .await;
    assert_eq!(
        (hidden.0, hidden.1.to_string().replace("widgets", "nothing")),
        (missing.0, missing.1.to_string())
    );
    assert_eq!(hidden.0, StatusCode::NOT_FOUND);

    let issued = registry.issuer.issued();
    let mut secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
    secrets.push(&token);
    secrets.push(&public_token);
    assert_no_secrets(registry.server(), &secrets);

    // The audit log names who did each of those writes: the admins who configured trust, and
    // the workflow runs (repository, workflow, run) that exchanged tokens and published.
    let listing = registry.audit(&["--package", "@acme/widgets", "--json"]);
    for secret in &secrets {
        assert!(
            !listing.contains(secret),
            "a token appears in the audit log"
        );
    }
    let events: Vec<Value> = listing
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |action: &str, result: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"]["result"] == result)
            .collect()
    };
    let created = find("trust-create", "ok");
    assert!(!created.is_empty(), "{listing}");
    assert_eq!(created[0]["actor"]["login"], "alice");
    assert_eq!(created[0]["credential"], "github-token");
    assert!(
        created[0]["detail"]
            .as_str()
            .unwrap()
            .contains("acme/widgets .github/workflows/publish.yml environment npm"),
        "{listing}"
    );
    let revoked = find("trust-revoke", "ok");
    assert!(!revoked.is_empty(), "{listing}");
    assert_eq!(revoked[0]["actor"]["login"], "alice");
    let exchanged = find("token-exchange", "ok");
    assert!(!exchanged.is_empty(), "{listing}");
    for e in &exchanged {
        assert_eq!(e["actor"]["kind"], "workflow", "{e}");
        assert_eq!(e["actor"]["repository"], "acme/widgets", "{e}");
        assert_eq!(e["credential"], "trusted-publishing", "{e}");
    }
    let published = find("publish", "ok");
    assert_eq!(published[0]["version"], "1.0.0", "{listing}");
    assert_eq!(published[0]["actor"]["kind"], "workflow");
    assert!(
        published[0]["actor"]["workflow_ref"]
            .as_str()
            .unwrap()
            .contains(".github/workflows/publish.yml@"),
        "{listing}"
    );
    assert!(
        published[0]["actor"]["run_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(
        published[0]["actor"]["sha"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert_eq!(published[0]["credential"], "trusted-publishing");
    // Refused exchanges of verified ID tokens name the run that tried; unverifiable ones
    // (expired, wrong audience) are not recorded, as anonymous refusals are not.
    let refused = find("token-exchange", "refused");
    assert!(!refused.is_empty(), "{listing}");
    assert!(
        refused.iter().all(|e| e["actor"]["kind"] == "workflow"),
        "{listing}"
    );
    for event in ["pull_request_target", "workflow_run"] {
        assert!(
            refused.iter().any(|e| e["actor"]["event_name"] == event
                && e["outcome"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("triggered by {event} may not publish"))),
            "{event}: {listing}"
        );
    }
    // The publish with a token whose configuration was revoked: refused, and recorded with the
    // run that tried.
    let revoked = find("publish", "refused");
    assert_eq!(revoked.len(), 1, "{listing}");
    assert_eq!(revoked[0]["outcome"]["status"], 401, "{listing}");
    assert!(
        revoked[0]["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("was revoked"),
        "{listing}"
    );
    assert_eq!(revoked[0]["actor"]["kind"], "workflow", "{listing}");
    assert_eq!(revoked[0]["actor"]["repository"], "acme/widgets");
    assert_eq!(revoked[0]["credential"], "trusted-publishing");
    // The token minted for @acme/widgets publishing @acme/other: in that package's log, with
    // the widgets run as the caller.
    let other: Vec<Value> = registry
        .audit(&["--package", "@acme/other", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let crossed: Vec<&Value> = other
        .iter()
        .filter(|e| e["action"] == "publish" && e["outcome"]["result"] == "refused")
        .collect();
    assert_eq!(crossed.len(), 1, "{other:?}");
    assert_eq!(crossed[0]["outcome"]["status"], 403);
    assert_eq!(crossed[0]["actor"]["kind"], "workflow");
    assert_eq!(crossed[0]["actor"]["repository"], "acme/widgets");
    assert_eq!(crossed[0]["credential"], "trusted-publishing");
    // And the other package's own publish, by its workflow.
    assert!(
        other.iter().any(|e| e["action"] == "publish"
            && e["outcome"]["result"] == "ok"
            && e["actor"]["repository"] == "acme/other"),
        "{other:?}"
    );
}

/// The exchange's path is absolute: npm drops the registry URL's path prefix, and the server
/// answers it either way.
#[tokio::test]
async fn the_exchange_answers_with_and_without_the_public_url_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let issuer = OidcIssuer::start(RunSpec::new("acme/widgets", ACME_ID)).await;
    let port = e2e::free_port();
    let public = format!("http://127.0.0.1:{port}/npm");
    let data = root.join("data");
    {
        let (kv, _) = registry::storage::embedded::open(&data).unwrap();
        let c = configuration("tc", "acme/widgets", None);
        trust::save(&Kv::new(Arc::new(kv)), &widgets(), &c)
            .await
            .unwrap();
    }
    let listen = format!("127.0.0.1:{port}");
    let server = world.server(
        root,
        &Backend::local(),
        &[
            ("REGISTRY_OIDC_ISSUER", issuer.url.as_str()),
            ("REGISTRY_PUBLIC_URL", public.as_str()),
            ("REGISTRY_LISTEN", listen.as_str()),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    for prefix in ["", "/npm"] {
        let (status, body, _) = send(
            Method::POST,
            format!(
                "{base}{prefix}/-/npm/v1/oidc/token/exchange/package/{}",
                escaped("@acme/widgets")
            ),
            Some(&issuer.id_token("npm:127.0.0.1")),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{prefix:?}: {body}");
        assert!(body["token"].as_str().unwrap().starts_with("tpub_"));
    }
    // Without a bearer, or with garbage: a refusal npm can log.
    let (status, body, _) = send(
        Method::POST,
        format!(
            "{base}/-/npm/v1/oidc/token/exchange/package/{}",
            escaped("@acme/widgets")
        ),
        Some("not.a.token"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], body["error"]);
    drop(server);
}

/// The exchange through the auth function's event path: API Gateway's event, lambda_http's
/// adapter, the audience checked against the host API Gateway served.
#[tokio::test]
async fn the_exchange_through_the_lambda_event_path() {
    use lambda_http::request::LambdaRequest;
    use lambda_http::{Adapter, Context, LambdaEvent};
    use tower::ServiceExt;

    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let issuer = OidcIssuer::start(RunSpec::new("acme/widgets", ACME_ID)).await;
    let data = tmp.path().to_string_lossy().into_owned();
    let config = registry::config::Config::from_lookup(|k| match k {
        "REGISTRY_DATA_DIR" => Some(data.clone()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        "REGISTRY_AUTH" => Some("github".into()),
        "GITHUB_API_URL" => Some(world.github.url.clone()),
        "REGISTRY_TOKEN_SECRET" => Some(world.secret.clone()),
        "REGISTRY_OIDC_ISSUER" => Some(issuer.url.clone()),
        _ => None,
    })
    .unwrap();
    let state = registry::app::App::builder(config).build().await.unwrap();
    let c = configuration("tc", "acme/widgets", None);
    trust::save(state.auth.github().unwrap().kv(), &widgets(), &c)
        .await
        .unwrap();
    let app = registry::http::router(state, &[registry::http::RouteGroup::Auth]);
    let host = "abc123.execute-api.eu-west-1.amazonaws.com";
    let invoke = |token: String| {
        let app = app.clone();
        async move {
            let event = e2e::apigw_v2_event(
                "POST",
                "/-/npm/v1/oidc/token/exchange/package/@acme%2fwidgets",
                "",
                json!({ "host": host, "authorization": format!("Bearer {token}"),
                        "user-agent": "npm/11.19.1 node/v22.12.0 linux x64 workspaces/false ci/github-actions" }),
                None,
                "$default",
            );
            let request: LambdaRequest = serde_json::from_value(event).unwrap();
            let response = Adapter::from(registry::lambda::service(app))
                .oneshot(LambdaEvent::new(request, Context::default()))
                .await
                .unwrap();
            let response = serde_json::to_value(response).unwrap();
            let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or("null"))
                .unwrap_or(Value::Null);
            (response["statusCode"].as_u64().unwrap(), body)
        }
    };
    let token = issuer.id_token(&format!("npm:{host}"));
    let (status, body) = invoke(token.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["token"].as_str().unwrap().starts_with("tpub_"));
    let (status, body) = invoke(token).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already exchanged")
    );
    // A token for another registry's host is refused.
    let (status, body) = invoke(issuer.id_token("npm:registry.npmjs.org")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("audience"));
}

/// `KvStore::put_new` on DynamoDB: one winner among racers, and an entry past its TTL (which
/// DynamoDB deletes only eventually) counts as absent.
#[tokio::test]
async fn put_new_on_dynamodb() {
    let resources = e2e::AwsResources::create("putnew", S3Host::Same);
    let kv = std::sync::Arc::new(resources.storage());
    let later = Some(chrono::Utc::now() + chrono::Duration::minutes(5));
    assert!(kv.put_new("ns", "a", b"1", later).await.unwrap());
    assert!(!kv.put_new("ns", "a", b"2", later).await.unwrap());
    assert_eq!(kv.get("ns", "a").await.unwrap().as_deref(), Some(&b"1"[..]));
    let past = Some(chrono::Utc::now() - chrono::Duration::seconds(5));
    kv.put("ns", "b", b"old", past).await.unwrap();
    assert!(kv.put_new("ns", "b", b"new", later).await.unwrap());
    assert_eq!(
        kv.get("ns", "b").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    kv.put("ns", "c", b"forever", None).await.unwrap();
    assert!(!kv.put_new("ns", "c", b"x", later).await.unwrap());
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let kv = kv.clone();
            tokio::spawn(async move { kv.put_new("ns", "race", b"x", later).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        wins += usize::from(racer.await.unwrap());
    }
    assert_eq!(wins, 1);
}

/// The README's workflow is the one these tests run: the job's permission to ask for an ID
/// token, setup-node's `registry-url` (the `.npmrc` `publish_from_ci` writes), the npm the tests
/// pin, and a plain `npm publish` with no token given to it.
#[test]
fn the_readme_workflow_is_the_one_tested() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Publishing from GitHub Actions (trusted publishing)")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the README has the trusted-publishing section");
    let workflow = section
        .split("```yaml")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the section shows a workflow");
    let tools = std::fs::read_to_string(root.join("tests/tools.sh")).unwrap();
    let pinned = tools
        .lines()
        .find_map(|l| l.strip_prefix("NPM_VERSION="))
        .expect("tests/tools.sh pins npm");
    let runs: Vec<&str> = workflow
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- run: "))
        .map(|r| r.split('#').next().unwrap_or_default().trim())
        .collect();
    assert_eq!(
        runs,
        [
            format!("npm install -g npm@{pinned}").as_str(),
            "npm publish"
        ],
        "the workflow's steps"
    );
    assert!(workflow.contains("id-token: write"), "{workflow}");
    assert!(workflow.contains("uses: actions/setup-node@"), "{workflow}");
    assert!(workflow.contains("registry-url: https://"), "{workflow}");
    // No token reaches npm publish: no env block, no secret.
    assert!(!workflow.contains("NODE_AUTH_TOKEN:"), "{workflow}");
    assert!(!workflow.contains("secrets."), "{workflow}");
    // The trust command the README shows uses the flags `npm trust github` takes in the tests.
    let trust = section
        .lines()
        .find(|l| l.trim_start().starts_with("npm trust github"))
        .expect("the README shows npm trust github");
    for flag in ["--repo", "--file", "--env"] {
        assert!(trust.contains(flag), "{trust}");
    }
}
