//! Fakes of GitHub Actions' OIDC side, on loopback: the issuer (its discovery document at
//! `/.well-known/openid-configuration` and its JWKS, with an RSA key generated at test time by
//! `openssl genrsa`) and the ID-token endpoint a job reaches through
//! `ACTIONS_ID_TOKEN_REQUEST_URL` (`GET …&audience=AUD` with
//! `Authorization: Bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answering `{"count", "value"}`), as
//! GitHub documents them. The claims of the next ID token are set per test ([`RunSpec`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The workflow run the next ID token describes.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// `owner/repo`.
    pub repository: String,
    /// The owner's numeric id.
    pub owner_id: String,
    /// The workflow file in `.github/workflows/`.
    pub workflow_file: String,
    /// The job's environment, if any.
    pub environment: Option<String>,
    /// `event_name`.
    pub event_name: String,
    /// An audience to put in the token instead of the one requested.
    pub audience: Option<String>,
    /// Issue the token already expired (an hour ago).
    pub expired: bool,
    /// `repository_visibility`.
    pub visibility: String,
}

impl RunSpec {
    /// A push to main running `publish.yml` in `repository` (owner id `owner_id`), private.
    pub fn new(repository: &str, owner_id: &str) -> RunSpec {
        RunSpec {
            repository: repository.to_string(),
            owner_id: owner_id.to_string(),
            workflow_file: "publish.yml".into(),
            environment: None,
            event_name: "push".into(),
            audience: None,
            expired: false,
            visibility: "private".into(),
        }
    }
}

struct Signer {
    kid: String,
    der: Vec<u8>,
    /// The modulus, base64url.
    n: String,
}

struct Shared {
    url: String,
    request_token: String,
    signer: Signer,
    run: Mutex<RunSpec>,
    issued: Mutex<Vec<String>>,
}

/// The running fakes (stopped on drop).
pub struct OidcIssuer {
    /// `http://127.0.0.1:PORT`: the issuer (`REGISTRY_OIDC_ISSUER`).
    pub url: String,
    /// What a job's `ACTIONS_ID_TOKEN_REQUEST_URL` is.
    pub request_url: String,
    /// What a job's `ACTIONS_ID_TOKEN_REQUEST_TOKEN` is.
    pub request_token: String,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

fn generate_key() -> Signer {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("key.pem");
    let der = dir.path().join("key.der");
    let (pem, der) = (pem.to_str().unwrap(), der.to_str().unwrap());
    openssl(&["genrsa", "-traditional", "-out", pem, "2048"]);
    openssl(&[
        "rsa",
        "-in",
        pem,
        "-traditional",
        "-outform",
        "DER",
        "-out",
        der,
    ]);
    let modulus = String::from_utf8(openssl(&["rsa", "-in", pem, "-noout", "-modulus"])).unwrap();
    let hex_n = modulus.trim().strip_prefix("Modulus=").unwrap();
    Signer {
        kid: format!("{:x}", rand::random::<u64>()),
        der: std::fs::read(der).unwrap(),
        n: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hex::decode(hex_n).unwrap()),
    }
}

impl OidcIssuer {
    /// Starts both fakes on a free loopback port, on their own thread and runtime (they answer
    /// while a test blocks its runtime running npm).
    pub async fn start(run: RunSpec) -> OidcIssuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let request_token = format!("{:x}", rand::random::<u128>());
        let shared = Arc::new(Shared {
            url: url.clone(),
            request_token: request_token.clone(),
            signer: generate_key(),
            run: Mutex::new(run),
            issued: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(discovery),
            )
            .route("/.well-known/jwks", axum::routing::get(jwks))
            .route("/id-token", axum::routing::get(id_token))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fake-oidc".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
            })
            .unwrap();
        OidcIssuer {
            request_url: format!("{url}/id-token?api-version=2.0"),
            url,
            request_token,
            shared,
            _stop: stop,
        }
    }

    /// Sets the run the next ID tokens describe.
    pub fn set_run(&self, run: RunSpec) {
        *self.shared.run.lock().unwrap() = run;
    }

    /// Every ID token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.shared.issued.lock().unwrap().clone()
    }

    /// An ID token for the current run and `audience`, as the endpoint would issue it.
    pub fn id_token(&self, audience: &str) -> String {
        issue(&self.shared, audience)
    }

    /// The environment of a GitHub Actions job with `permissions: id-token: write`.
    pub fn job_env(&self) -> Vec<(String, String)> {
        vec![
            ("GITHUB_ACTIONS".into(), "true".into()),
            ("CI".into(), "true".into()),
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
                self.request_url.clone(),
            ),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(),
                self.request_token.clone(),
            ),
        ]
    }
}

/// GitHub's claims for `run` (docs.github.com: "OpenID Connect reference", every value a string).
fn claims(shared: &Shared, run: &RunSpec, audience: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    let (iat, exp) = if run.expired {
        (now - 3600, now - 3000)
    } else {
        (now, now + 300)
    };
    let owner = run.repository.split('/').next().unwrap_or_default();
    let workflow_ref = format!(
        "{}/.github/workflows/{}@refs/heads/main",
        run.repository, run.workflow_file
    );
    let mut claims = json!({
        "jti": format!("{:x}", rand::random::<u128>()),
        "sub": format!("repo:{}:ref:refs/heads/main", run.repository),
        "aud": run.audience.clone().unwrap_or_else(|| audience.to_string()),
        "ref": "refs/heads/main",
        "sha": "4c5f7e2a9b8d1f3e6a0c2b4d6e8f0a1b3c5d7e9f",
        "repository": run.repository,
        "repository_owner": owner,
        "repository_owner_id": run.owner_id,
        "repository_id": "700001",
        "repository_visibility": run.visibility,
        "run_id": "9000000001",
        "run_number": "7",
        "run_attempt": "1",
        "actor": "alice",
        "actor_id": "1001",
        "workflow": "Publish",
        "workflow_ref": workflow_ref,
        "workflow_sha": "4c5f7e2a9b8d1f3e6a0c2b4d6e8f0a1b3c5d7e9f",
        "job_workflow_ref": workflow_ref,
        "head_ref": "",
        "base_ref": "",
        "event_name": run.event_name,
        "ref_type": "branch",
        "runner_environment": "github-hosted",
        "iss": shared.url,
        "nbf": iat - 5,
        "iat": iat,
        "exp": exp,
    });
    if let Some(env) = &run.environment {
        claims["environment"] = json!(env);
    }
    claims
}

fn issue(shared: &Shared, audience: &str) -> String {
    let run = shared.run.lock().unwrap().clone();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(shared.signer.kid.clone());
    let token = jsonwebtoken::encode(
        &header,
        &claims(shared, &run, audience),
        &EncodingKey::from_rsa_der(&shared.signer.der),
    )
    .unwrap();
    shared.issued.lock().unwrap().push(token.clone());
    token
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "issuer": shared.url,
        "jwks_uri": format!("{}/.well-known/jwks", shared.url),
        "subject_types_supported": ["public", "pairwise"],
        "response_types_supported": ["id_token"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository",
            "repository_id", "repository_owner", "repository_owner_id", "run_id", "run_number",
            "run_attempt", "actor", "actor_id", "workflow", "workflow_ref", "workflow_sha",
            "head_ref", "base_ref", "event_name", "ref_type", "environment", "job_workflow_ref",
            "repository_visibility"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({ "keys": [{
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": shared.signer.kid,
        "n": shared.signer.n, "e": "AQAB",
    }]}))
    .into_response()
}

async fn id_token(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let expected = format!("Bearer {}", shared.request_token);
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials" })),
        )
            .into_response();
    }
    let audience = query
        .get("audience")
        .cloned()
        .unwrap_or_else(|| "https://github.com/acme".into());
    let value = issue(&shared, &audience);
    axum::Json(json!({ "count": 1, "value": value })).into_response()
}
