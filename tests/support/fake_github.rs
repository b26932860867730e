//! A fake of the GitHub REST API (`api.github.com`) on loopback, for tests without network: users
//! and their tokens, repositories and collaborator roles, with GitHub's status codes, JSON shapes,
//! rate-limit headers, conditional requests (ETag / `If-None-Match` / 304) and failure modes
//! (unreachable, primary and secondary rate limits, server errors).
//!
//! Tokens are of the kinds GitHub documents, each answered as GitHub's documentation describes
//! it ([`TokenSpec`]): scoped tokens (personal access tokens (classic), OAuth app tokens) reach
//! private repositories only with the `repo` scope and get their scopes in `X-OAuth-Scopes`;
//! fine-grained personal access tokens and GitHub App user tokens reach the private repositories
//! of one owner they were granted, every public repository, and get `X-Accepted-GitHub-Permissions`
//! instead; installation tokens act for no user (`GET /user` is 403). Whatever the token, the
//! repository's `permissions` are its user's roles: nothing in a response tells a read-only
//! fine-grained token from a read-write one.
//!
//! Token kinds, as GitHub documents each and the fake answers it:
//! - `ghp_` / `gho_` (classic, OAuth): the user's repositories, private ones only with `repo`;
//!   `X-OAuth-Scopes` on every answer.
//! - `github_pat_` (fine-grained) and `ghu_` (app user): private repositories of one owner they
//!   select (and their user sees), every public one; `X-Accepted-GitHub-Permissions`.
//! - `ghs_` (installation, [`FakeGithub::add_installation_token`]; a workflow's `GITHUB_TOKEN`
//!   is one for the workflow's repository alone, [`FineGrained::workflow`]): for no user, so
//!   `GET /user` is 403 "Resource not accessible by integration"; `GET /repos/{o}/{r}` is 200
//!   for the installation's repositories and every public one (without `permissions`, which
//!   GitHub documents only for users) and 404 otherwise; `GET /installation/repositories`
//!   lists the installation's repositories (`total_count`, `repository_selection`,
//!   `repositories`, paginated by `per_page`/`page` with a `Link` header), and is 403 for any
//!   other kind of token.
//!
//! Endpoints: `GET /user`, `GET /users/{username}`, `GET /repos/{owner}/{repo}`,
//! `GET /repos/{owner}/{repo}/collaborators/{username}/permission`,
//! `GET /installation/repositories` and `GET /rate_limit`; anything else is GitHub's 404.
//!
//! On the same listener, github.com's OAuth web application flow ([`FakeGithub::web_url`]), as
//! "Authorizing OAuth apps" and its troubleshooting pages document it, for the OAuth apps a test
//! registers ([`FakeGithub::add_oauth_app`]: client id, secret, callback URL):
//! - `GET /login/oauth/authorize?client_id&redirect_uri&scope&state&login&allow_signup`: an
//!   unknown `client_id` gets GitHub's HTML 404 page; a `redirect_uri` outside the callback
//!   (host or a sub-domain of it, same port, the callback's path or below; any port for a
//!   loopback callback) is redirected to the callback with `error=redirect_uri_mismatch`
//!   (`error_description`, `error_uri`, `state`); a suspended app with
//!   `error=application_suspended`. Otherwise the user signed in to github.com in "the
//!   browser" ([`FakeGithub::oauth_sign_in`], no credentials typed; nobody signed in redirects
//!   to GitHub's sign-in page) answers as [`Consent`] says: 302 to the redirect URI with
//!   `?code=…&state=…` (the state echoed exactly), or with `error=access_denied`. Codes are
//!   single-use and expire after ten minutes ([`FakeGithub::advance_oauth_clock`]).
//! - `POST /login/oauth/access_token` (`client_id`, `client_secret`, `code`, `redirect_uri`, in
//!   the query, a form body or a JSON body): a new `gho_` token of the user with the granted
//!   scopes, which the API above then answers as any scoped token of theirs (`X-OAuth-Scopes`,
//!   private repositories only with `repo`); form-encoded by default, JSON with
//!   `Accept: application/json`, XML with `Accept: application/xml`; errors
//!   (`incorrect_client_credentials`, `bad_verification_code`, `redirect_uri_mismatch`) with
//!   HTTP 200 and `error`, `error_description`, `error_uri`, as GitHub answers them. The eleventh
//!   live token for one user, app and scopes revokes the oldest.
//! - Counters: [`FakeGithub::oauth_authorize_requests`], [`FakeGithub::oauth_exchanges`],
//!   [`FakeGithub::oauth_tokens`].

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// GitHub's repository roles, highest first. A role implies every lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Full control.
    Admin,
    /// Manage the repository without destructive or sensitive actions.
    Maintain,
    /// Write ("write" role).
    Push,
    /// Manage issues and pull requests without write.
    Triage,
    /// Read ("read" role).
    Pull,
}

impl Permission {
    fn rank(self) -> u8 {
        match self {
            Permission::Pull => 1,
            Permission::Triage => 2,
            Permission::Push => 3,
            Permission::Maintain => 4,
            Permission::Admin => 5,
        }
    }

    /// The `role_name` GitHub reports for this role.
    pub fn role_name(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
            Permission::Maintain => "maintain",
            Permission::Push => "write",
            Permission::Triage => "triage",
            Permission::Pull => "read",
        }
    }

    /// The legacy `permission` GitHub reports for this role (`admin`, `write` or `read`).
    pub fn legacy_permission(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
            Permission::Maintain | Permission::Push => "write",
            Permission::Triage | Permission::Pull => "read",
        }
    }
}

/// A fine-grained permission's level ("No access", "Read-only", "Read and write").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not granted.
    NoAccess,
    /// Read-only.
    Read,
    /// Read and write.
    Write,
}

/// What a fine-grained actor (a fine-grained personal access token, or a GitHub App's
/// installation) may reach and do. No endpoint the fake serves needs "Contents" or
/// "Administration", so no answer depends on them, as on GitHub: `GET /repos` needs only
/// "Metadata: read", which every such actor has. They are kept so tests say what they grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineGrained {
    /// The resource owner (or the account the app is installed on): only its private
    /// repositories can be reached.
    pub owner: String,
    /// The selected repositories of `owner` (names); `None` for all of them.
    pub repositories: Option<Vec<String>>,
    /// The "Contents" repository permission (code; writing it is pushing).
    pub contents: Access,
    /// The "Administration" repository permission.
    pub administration: Access,
}

impl FineGrained {
    /// Access to `repositories` of `owner` with `contents`, and no administration.
    pub fn selected(owner: &str, repositories: &[&str], contents: Access) -> FineGrained {
        FineGrained {
            owner: owner.to_string(),
            repositories: Some(
                repositories
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect(),
            ),
            contents,
            administration: Access::NoAccess,
        }
    }

    /// A workflow's `GITHUB_TOKEN`: an installation token of GitHub Actions for the workflow's
    /// own repository, with `permissions: contents: read`.
    pub fn workflow(owner: &str, repository: &str) -> FineGrained {
        FineGrained::selected(owner, &[repository], Access::Read)
    }

    /// Whether this reaches `repo` (which the fake knows to be private or not).
    fn reaches(&self, repo: &Repo) -> bool {
        repo.owner.eq_ignore_ascii_case(&self.owner)
            && self
                .repositories
                .as_ref()
                .is_none_or(|selected| selected.iter().any(|r| r.eq_ignore_ascii_case(&repo.name)))
    }
}

/// A token's kind and grants, as GitHub tells kinds apart (by prefix: `ghp_`, `gho_`,
/// `github_pat_`, `ghu_`, `ghs_`; make them with [`generate_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSpec {
    /// A personal access token (classic) or OAuth app token with these OAuth scopes. Without
    /// `repo` it reaches no private repository (404); every answer reports the scopes in
    /// `X-OAuth-Scopes`.
    Scoped(Vec<String>),
    /// A fine-grained personal access token: private repositories of its resource owner that
    /// it selects (and its user may see), and read access to every public repository.
    FineGrained(FineGrained),
    /// A GitHub App user access token: what both the user and the app's installation
    /// (described by the [`FineGrained`]) reach.
    AppUser(FineGrained),
    /// A GitHub App installation token: the installation's repositories, for no user.
    Installation(FineGrained),
}

impl TokenSpec {
    /// A scoped token with `scopes`.
    pub fn scopes(scopes: &[&str]) -> TokenSpec {
        TokenSpec::Scoped(
            scopes
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        )
    }

    /// The message of GitHub's 403 for a permission this kind of token lacks.
    fn not_accessible(&self) -> &'static str {
        match self {
            TokenSpec::FineGrained(_) => "Resource not accessible by personal access token",
            _ => "Resource not accessible by integration",
        }
    }
}

/// The scopes [`FakeGithub::add_user`]'s tokens have (a classic token made for the registry).
pub const DEFAULT_SCOPES: [&str; 2] = ["repo", "read:org"];

/// A fresh random token in GitHub's format for `prefix`: `ghp_`, `gho_`, `ghu_` and `ghs_`
/// take 36 base-62 characters, `github_pat_` 22 and 59 joined by `_`.
pub fn generate_token(prefix: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let chars = |n: usize| -> String {
        (0..n)
            .map(|_| BASE62[usize::from(rand::random::<u8>()) % BASE62.len()] as char)
            .collect()
    };
    if prefix == "github_pat_" {
        format!("{prefix}{}_{}", chars(22), chars(59))
    } else {
        format!("{prefix}{}", chars(36))
    }
}

/// What the fake knows of a token.
struct TokenEntry {
    /// Its user's lower-case login (none for an installation token).
    login: Option<String>,
    spec: TokenSpec,
}

/// How the fake answers, for every endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers as GitHub does.
    Normal,
    /// Reads each request (counting it) and then resets the connection without any HTTP
    /// response, as a network failure would.
    Unreachable,
    /// 403 "API rate limit exceeded" with `X-RateLimit-Remaining: 0`.
    RateLimited,
    /// 429 "secondary rate limit" with `Retry-After: 60`.
    SecondaryRateLimit,
    /// 502 `{"message":"Server Error"}`.
    ServerError,
}

/// Seconds in a primary rate-limit window.
const WINDOW_SECS: u64 = 3600;
/// Requests per hour for an authenticated token.
pub const AUTHENTICATED_LIMIT: u32 = 5000;
/// Requests per hour for anonymous callers (and bad credentials).
pub const ANONYMOUS_LIMIT: u32 = 60;
const DOCS_INSTALLATION_REPOSITORIES: &str = "https://docs.github.com/rest/apps/installations#list-repositories-accessible-to-the-app-installation";
/// `documentation_url` of generic errors.
const DOCS_REST: &str = "https://docs.github.com/rest";
const DOCS_GET_USER: &str = "https://docs.github.com/rest/users/users#get-the-authenticated-user";
const DOCS_GET_REPO: &str = "https://docs.github.com/rest/repos/repos#get-a-repository";
const DOCS_COLLABORATOR_PERMISSION: &str = "https://docs.github.com/rest/collaborators/collaborators#get-repository-permissions-for-a-user";
const DOCS_RATE_LIMIT: &str =
    "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting";
const DOCS_SECONDARY_RATE_LIMIT: &str = "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
/// The bucket of anonymous callers and bad credentials.
const ANONYMOUS_BUCKET: &str = "";

struct User {
    login: String,
    id: u64,
}

struct Repo {
    owner: String,
    name: String,
    id: u64,
    private: bool,
}

struct Bucket {
    limit: u32,
    used: u32,
    reset: u64,
}

impl Bucket {
    fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }
}

struct World {
    mode: Mode,
    delay: Duration,
    /// Lower-case login → user.
    users: HashMap<String, User>,
    /// Token → whose it is and what it is.
    tokens: HashMap<String, TokenEntry>,
    /// Lower-case `owner/name` → repository.
    repos: HashMap<String, Repo>,
    /// (lower-case `owner/name`, lower-case login) → role.
    grants: HashMap<(String, String), Permission>,
    /// Token (or [`ANONYMOUS_BUCKET`]) → primary rate-limit bucket.
    buckets: HashMap<String, Bucket>,
    /// Path of every request received.
    calls: Vec<String>,
    /// Every token received in an `Authorization` header.
    tokens_seen: Vec<String>,
    next_request_id: u64,
    /// The web OAuth flow's apps, signed-in user, codes and counters.
    oauth: OAuth,
}

/// A running fake GitHub API, on its own thread; it stops when dropped.
pub struct FakeGithub {
    /// `http://127.0.0.1:PORT`, no trailing slash: the API base URL (as `https://api.github.com`).
    pub url: String,
    shared: Arc<Shared>,
    /// Dropped with the fake: stops its server (later connections are refused).
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Shared {
    url: String,
    world: Mutex<World>,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A stable account or repository id derived from its (case-folded) name.
fn stable_id(kind: &str, name: &str) -> u64 {
    let digest = sha2::Sha256::digest(format!("{kind}:{}", name.to_ascii_lowercase()));
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap());
    1_000_000 + n % 100_000_000
}

/// A GraphQL node id in GitHub's newer style (`U_kgDO…`, `O_kgDO…`, `R_kgDO…`).
fn node_id(prefix: &str, id: u64) -> String {
    let bytes = id.to_be_bytes();
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(7);
    format!(
        "{prefix}_kgDO{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[start..])
    )
}

impl World {
    fn bucket(&mut self, key: &str) -> &mut Bucket {
        let limit = if key == ANONYMOUS_BUCKET {
            ANONYMOUS_LIMIT
        } else {
            AUTHENTICATED_LIMIT
        };
        let t = now();
        let bucket = self.buckets.entry(key.to_string()).or_insert(Bucket {
            limit,
            used: 0,
            reset: t + WINDOW_SECS,
        });
        if t >= bucket.reset {
            bucket.used = 0;
            bucket.reset = t + WINDOW_SECS;
        }
        bucket
    }

    fn repo_key(owner: &str, name: &str) -> String {
        format!("{owner}/{name}").to_ascii_lowercase()
    }

    /// The caller's role on a repository: an explicit grant, or admin as its owner.
    fn role(&self, repo: &Repo, login: &str) -> Option<Permission> {
        let login = login.to_ascii_lowercase();
        let granted = self
            .grants
            .get(&(Self::repo_key(&repo.owner, &repo.name), login.clone()))
            .copied();
        let owner = (repo.owner.eq_ignore_ascii_case(&login) && self.users.contains_key(&login))
            .then_some(Permission::Admin);
        match (granted, owner) {
            (Some(a), Some(b)) => Some(if a.rank() >= b.rank() { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Whether the token reaches `repo`: every token sees public repositories; a private one
    /// needs what its kind needs (GitHub answers 404 otherwise, as for a missing repository).
    fn reaches(&self, repo: &Repo, login: Option<&str>, spec: &TokenSpec) -> bool {
        if !repo.private {
            return true;
        }
        let user_sees = || login.is_some_and(|l| self.role(repo, l).is_some());
        match spec {
            TokenSpec::Scoped(scopes) => user_sees() && scopes.iter().any(|s| s == "repo"),
            TokenSpec::FineGrained(g) | TokenSpec::AppUser(g) => user_sees() && g.reaches(repo),
            TokenSpec::Installation(g) => g.reaches(repo),
        }
    }

    /// The effective role for permissions: public repositories give everyone read.
    fn effective_role(&self, repo: &Repo, login: &str) -> Option<Permission> {
        self.role(repo, login)
            .or((!repo.private).then_some(Permission::Pull))
    }

    fn account_json(&self, base: &str, login: &str) -> Value {
        let (login, id, kind) = match self.users.get(&login.to_ascii_lowercase()) {
            Some(u) => (u.login.clone(), u.id, "User"),
            None => (
                login.to_string(),
                stable_id("account", login),
                "Organization",
            ),
        };
        json!({
            "login": login,
            "id": id,
            "node_id": node_id(if kind == "User" { "U" } else { "O" }, id),
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
            "gravatar_id": "",
            "url": format!("{base}/users/{login}"),
            "html_url": format!("https://github.com/{login}"),
            "repos_url": format!("{base}/users/{login}/repos"),
            "type": kind,
            "user_view_type": "public",
            "site_admin": false,
        })
    }

    fn user_json(&self, base: &str, user: &User, private: bool) -> Value {
        let mut v = self.account_json(base, &user.login);
        let mut name = user.login.clone();
        if let Some(first) = name.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        let extra = json!({
            "name": name,
            "company": null,
            "blog": "",
            "location": null,
            "email": null,
            "hireable": null,
            "bio": null,
            "twitter_username": null,
            "public_repos": self.repos.values().filter(|r| !r.private && r.owner.eq_ignore_ascii_case(&user.login)).count(),
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": "2015-03-14T09:26:53Z",
            "updated_at": "2025-01-02T03:04:05Z",
        });
        let obj = v.as_object_mut().unwrap();
        obj.extend(extra.as_object().unwrap().clone());
        if private {
            obj.insert("private_gists".into(), json!(0));
            obj.insert(
                "owned_private_repos".into(),
                json!(
                    self.repos
                        .values()
                        .filter(|r| r.private && r.owner.eq_ignore_ascii_case(&user.login))
                        .count()
                ),
            );
            obj.insert("two_factor_authentication".into(), json!(true));
        }
        v
    }
}

fn permissions_json(role: Option<Permission>) -> Value {
    let rank = role.map_or(0, Permission::rank);
    json!({
        "admin": rank >= Permission::Admin.rank(),
        "maintain": rank >= Permission::Maintain.rank(),
        "push": rank >= Permission::Push.rank(),
        "triage": rank >= Permission::Triage.rank(),
        "pull": rank >= Permission::Pull.rank(),
    })
}

fn error_body(message: &str, documentation_url: &str, status: StatusCode) -> Value {
    json!({
        "message": message,
        "documentation_url": documentation_url,
        "status": status.as_u16().to_string(),
    })
}

impl FakeGithub {
    /// Starts the fake on a free loopback port, served from its own thread and runtime (so it
    /// answers even while the test's runtime is blocked).
    pub async fn start() -> FakeGithub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            url: url.clone(),
            world: Mutex::new(World {
                mode: Mode::Normal,
                delay: Duration::ZERO,
                users: HashMap::new(),
                tokens: HashMap::new(),
                repos: HashMap::new(),
                grants: HashMap::new(),
                buckets: HashMap::new(),
                calls: Vec::new(),
                tokens_seen: Vec::new(),
                next_request_id: 0,
                oauth: OAuth::default(),
            }),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<Connection>();
        // Its own thread and runtime: it keeps answering while a test blocks its own runtime
        // (running npm, waiting for a process), whatever the test's runtime flavour.
        let listener = listener.into_std().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fake-github".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = axum::serve(KillableListener(listener), app) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime closes the listener and every connection.
            })
            .unwrap();
        FakeGithub {
            url,
            shared,
            _stop: stop,
        }
    }

    /// Adds a user (if new) and a token that authenticates as them; a user may have several.
    /// The token is scoped with [`DEFAULT_SCOPES`] (see [`add_token`](Self::add_token)).
    pub fn add_user(&self, login: &str, token: &str) {
        self.add_token(login, token, TokenSpec::scopes(&DEFAULT_SCOPES));
    }

    /// Adds a user (if new) and a token of theirs as `spec` describes.
    pub fn add_token(&self, login: &str, token: &str, spec: TokenSpec) {
        assert!(
            !matches!(spec, TokenSpec::Installation(_)),
            "fake GitHub: an installation token has no user; use add_installation_token"
        );
        let mut w = self.shared.world();
        let key = login.to_ascii_lowercase();
        w.users.entry(key.clone()).or_insert_with(|| User {
            login: login.to_string(),
            id: stable_id("account", login),
        });
        w.tokens.insert(
            token.to_string(),
            TokenEntry {
                login: Some(key),
                spec,
            },
        );
    }

    /// Adds a GitHub App installation token, which acts for the app on `installation`.
    pub fn add_installation_token(&self, token: &str, installation: FineGrained) {
        self.shared.world().tokens.insert(
            token.to_string(),
            TokenEntry {
                login: None,
                spec: TokenSpec::Installation(installation),
            },
        );
    }

    /// Adds a workflow's `GITHUB_TOKEN` for `owner/repository` (an installation token that
    /// reaches that repository alone; see [`FineGrained::workflow`]).
    pub fn add_workflow_token(&self, token: &str, owner: &str, repository: &str) {
        self.add_installation_token(token, FineGrained::workflow(owner, repository));
    }

    /// Changes a scoped token's scopes, as its user can edit them on GitHub.
    pub fn set_scopes(&self, token: &str, scopes: &[&str]) {
        let mut w = self.shared.world();
        let entry = w
            .tokens
            .get_mut(token)
            .expect("fake GitHub: set_scopes on an unknown token");
        assert!(
            matches!(entry.spec, TokenSpec::Scoped(_)),
            "fake GitHub: only scoped tokens have scopes"
        );
        entry.spec = TokenSpec::scopes(scopes);
    }

    /// Revokes a token: from now on it gets 401 "Bad credentials".
    pub fn revoke_token(&self, token: &str) {
        self.shared.world().tokens.remove(token);
    }

    /// The numeric id GitHub shows for an account (a user, or an organisation such as a
    /// repository's owner), as `owner.id` and as ID tokens' `repository_owner_id` carry it.
    pub fn account_id(&self, login: &str) -> u64 {
        match self.shared.world().users.get(&login.to_ascii_lowercase()) {
            Some(u) => u.id,
            None => stable_id("account", login),
        }
    }

    /// Adds a repository (or changes its visibility); `owner` and `name` keep the case given here.
    pub fn add_repo(&self, owner: &str, name: &str, private: bool) {
        let key = World::repo_key(owner, name);
        self.shared.world().repos.insert(
            key.clone(),
            Repo {
                owner: owner.to_string(),
                name: name.to_string(),
                id: stable_id("repo", &key),
                private,
            },
        );
    }

    /// Removes a repository (as if deleted) and its grants.
    pub fn remove_repo(&self, owner: &str, name: &str) {
        let key = World::repo_key(owner, name);
        let mut w = self.shared.world();
        w.repos.remove(&key);
        w.grants.retain(|(r, _), _| *r != key);
    }

    /// Gives `login` a role on `owner/repo` (replacing any earlier role). The repository must
    /// have been added. A user whose login is the owner is admin of its repositories anyway.
    pub fn grant(&self, owner: &str, repo: &str, login: &str, permission: Permission) {
        let key = World::repo_key(owner, repo);
        let mut w = self.shared.world();
        assert!(
            w.repos.contains_key(&key),
            "fake GitHub: grant on {owner}/{repo}, which was never added"
        );
        w.grants
            .insert((key, login.to_ascii_lowercase()), permission);
    }

    /// Removes `login`'s explicit role on `owner/repo`.
    pub fn ungrant(&self, owner: &str, repo: &str, login: &str) {
        let key = World::repo_key(owner, repo);
        self.shared
            .world()
            .grants
            .remove(&(key, login.to_ascii_lowercase()));
    }

    /// Sets how every endpoint answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.world().mode = mode;
    }

    /// Delays every answer by `delay` (after counting the request), for timeout tests.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.world().delay = delay;
    }

    /// Sets how many requests `token` has left in the current window; at 0 it gets GitHub's
    /// primary rate-limit 403 even in [`Mode::Normal`].
    pub fn set_remaining(&self, token: &str, remaining: u32) {
        let mut w = self.shared.world();
        let b = w.bucket(token);
        b.used = b.limit.saturating_sub(remaining);
    }

    /// As [`set_remaining`](Self::set_remaining), for anonymous callers (and bad credentials).
    pub fn set_anonymous_remaining(&self, remaining: u32) {
        self.set_remaining(ANONYMOUS_BUCKET, remaining);
    }

    /// Requests `token` has left in the current window.
    pub fn remaining(&self, token: &str) -> u32 {
        self.shared.world().bucket(token).remaining()
    }

    /// Requests received: all paths, all statuses, all modes, including 304s.
    pub fn calls(&self) -> usize {
        self.shared.world().calls.len()
    }

    /// Requests received whose path starts with `path_prefix` (e.g. `/repos/acme/`); the
    /// comparison is exact (case-sensitive), on the path as sent, without the query.
    pub fn calls_to(&self, path_prefix: &str) -> usize {
        self.shared
            .world()
            .calls
            .iter()
            .filter(|p| p.starts_with(path_prefix))
            .count()
    }

    /// The path of every request received, in order.
    pub fn paths(&self) -> Vec<String> {
        self.shared.world().calls.clone()
    }

    /// Forgets the requests received (calls, paths and tokens seen).
    pub fn reset_calls(&self) {
        let mut w = self.shared.world();
        w.calls.clear();
        w.tokens_seen.clear();
    }

    /// Every token received in an `Authorization` header, in order (the credential without
    /// its scheme; for `Basic`, the password).
    pub fn tokens_seen(&self) -> Vec<String> {
        self.shared.world().tokens_seen.clone()
    }
}

// --- Connections that can be reset: the Unreachable mode. ---

/// A TCP listener whose connections the handler can reset.
struct KillableListener(TcpListener);

/// An accepted connection; once `killed`, every read and write fails and dropping it resets
/// the connection (`SO_LINGER` 0), so the client never gets a response.
struct KillableStream {
    stream: TcpStream,
    killed: Arc<AtomicBool>,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let killed = Arc::new(AtomicBool::new(false));
                    return (KillableStream { stream, killed }, addr);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "fake GitHub: unreachable",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// The handler's handle on its connection, to reset it.
#[derive(Clone)]
struct Connection(Arc<AtomicBool>);

impl Connected<IncomingStream<'_, KillableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        Connection(stream.io().killed.clone())
    }
}

// --- Requests. ---

/// Who is calling.
enum Caller {
    Anonymous,
    /// A valid token: its user's lower-case login (none for an installation) and its kind.
    Token {
        token: String,
        login: Option<String>,
        spec: TokenSpec,
    },
    /// A token GitHub does not know (or revoked, or a malformed header).
    Bad,
}

/// The credential in an `Authorization` header: `Bearer T`, `token T` or `Basic base64(user:T)`.
fn credential(value: &HeaderValue) -> String {
    let value = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
    let (scheme, rest) = value.split_once(' ').unwrap_or(("", value.as_str()));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        return rest.to_string();
    }
    if scheme.eq_ignore_ascii_case("basic")
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest)
    {
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        return decoded
            .split_once(':')
            .map_or(decoded.clone(), |(_, p)| p.to_string());
    }
    value
}

/// A response before the common headers are added.
struct Answer {
    status: StatusCode,
    body: Value,
    /// Cacheable (200): gets an ETag and may become a 304.
    cacheable: bool,
    /// Counts against the primary rate limit.
    counts: bool,
    extra: Vec<(&'static str, String)>,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer {
            status: StatusCode::OK,
            body,
            cacheable: true,
            counts: true,
            extra: Vec::new(),
        }
    }

    fn error(status: StatusCode, message: &str, documentation_url: &str) -> Answer {
        Answer {
            status,
            body: error_body(message, documentation_url, status),
            cacheable: false,
            counts: true,
            extra: Vec::new(),
        }
    }

    fn not_found(documentation_url: &str) -> Answer {
        Self::error(StatusCode::NOT_FOUND, "Not Found", documentation_url)
    }
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(sha2::Sha256::digest(body)))
}

/// `If-None-Match` matches `etag` (weak comparison, as RFC 9110 requires for it).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || strip(t) == etag)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (response, delay) = {
        let mut w = shared.world();
        if is_web_path(uri.path()) {
            web_answer(
                &shared.url,
                &mut w,
                &connection,
                &method,
                &uri,
                &headers,
                &body,
            )
        } else {
            answer(&shared.url, &mut w, &connection, &method, &uri, &headers)
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

fn answer(
    base: &str,
    w: &mut World,
    connection: &Connection,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> (Response, Duration) {
    w.calls.push(uri.path().to_string());
    let caller = match headers.get(header::AUTHORIZATION) {
        None => Caller::Anonymous,
        Some(v) => {
            let token = credential(v);
            w.tokens_seen.push(token.clone());
            match w.tokens.get(&token) {
                Some(entry) => Caller::Token {
                    login: entry.login.clone(),
                    spec: entry.spec.clone(),
                    token,
                },
                None => Caller::Bad,
            }
        }
    };
    w.next_request_id += 1;
    let request_id = format!(
        "C0DE:{:04X}:{:06X}:{:06X}:{:08X}",
        w.next_request_id % 0xFFFF,
        w.next_request_id * 7919 % 0xFFFFFF,
        w.next_request_id * 104_729 % 0xFFFFFF,
        w.next_request_id
    );
    let delay = w.delay;

    if w.mode == Mode::Unreachable {
        connection.0.store(true, Ordering::SeqCst);
        return (
            StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Duration::ZERO,
        );
    }

    let bucket_key = match &caller {
        Caller::Token { token, .. } => token.clone(),
        _ => ANONYMOUS_BUCKET.to_string(),
    };
    let user_id = match &caller {
        Caller::Token {
            login: Some(login), ..
        } => Some(w.users[login].id),
        _ => None,
    };
    let rate_limited = |request_id: &str| {
        let message = match user_id {
            Some(id) => format!(
                "API rate limit exceeded for user ID {id}. If you reach out to GitHub Support for help, please include the request ID {request_id}."
            ),
            None => format!(
                "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.) If you reach out to GitHub Support for help, please include the request ID {request_id}."
            ),
        };
        let mut a = Answer::error(StatusCode::FORBIDDEN, &message, DOCS_RATE_LIMIT);
        a.counts = false;
        a
    };

    let mut forced_exhausted = false;
    let answer = match w.mode {
        Mode::RateLimited => {
            forced_exhausted = true;
            rate_limited(&request_id)
        }
        Mode::SecondaryRateLimit => {
            let mut a = Answer::error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID {request_id}."
                ),
                DOCS_SECONDARY_RATE_LIMIT,
            );
            a.counts = false;
            a.extra.push(("retry-after", "60".into()));
            a
        }
        Mode::ServerError => Answer {
            status: StatusCode::BAD_GATEWAY,
            body: json!({ "message": "Server Error" }),
            cacheable: false,
            counts: false,
            extra: Vec::new(),
        },
        Mode::Normal | Mode::Unreachable => {
            if uri.path() == "/rate_limit" && !matches!(caller, Caller::Bad) {
                // GET /rate_limit answers even when exhausted, and does not count.
                let b = w.bucket(&bucket_key);
                let core = json!({
                    "limit": b.limit,
                    "used": b.used,
                    "remaining": b.remaining(),
                    "reset": b.reset,
                    "resource": "core",
                });
                let mut a = Answer::ok(json!({ "resources": { "core": core }, "rate": core }));
                a.counts = false;
                a.cacheable = false;
                a
            } else if w.bucket(&bucket_key).remaining() == 0 {
                rate_limited(&request_id)
            } else {
                route(base, w, &caller, method, uri)
            }
        }
    };

    // The body, its ETag, and maybe a 304.
    let body = serde_json::to_vec(&answer.body).unwrap();
    let etag = answer.cacheable.then(|| etag_of(&body));
    let not_modified = etag.as_deref().is_some_and(|e| none_match(headers, e));
    let counts = answer.counts && !not_modified;
    let bucket = w.bucket(&bucket_key);
    if counts {
        bucket.used = (bucket.used + 1).min(bucket.limit);
    }
    let (limit, mut used, mut remaining, reset) =
        (bucket.limit, bucket.used, bucket.remaining(), bucket.reset);
    if forced_exhausted {
        used = limit;
        remaining = 0;
    }

    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        answer.status
    };
    let mut out = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        out.insert(name, HeaderValue::from_str(&value).unwrap());
    };
    set("server", "GitHub.com".into());
    set("access-control-allow-origin", "*".into());
    set(
        "access-control-expose-headers",
        "ETag, Link, Location, Retry-After, X-GitHub-OTP, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Used, X-RateLimit-Resource, X-RateLimit-Reset, X-OAuth-Scopes, X-Accepted-OAuth-Scopes, X-Poll-Interval, X-GitHub-Media-Type, X-GitHub-SSO, X-GitHub-Request-Id, Deprecation, Sunset".into(),
    );
    set("x-github-request-id", request_id);
    set("x-github-media-type", "github.v3; format=json".into());
    set("x-github-api-version-selected", "2022-11-28".into());
    set("x-ratelimit-limit", limit.to_string());
    set("x-ratelimit-remaining", remaining.to_string());
    set("x-ratelimit-used", used.to_string());
    set("x-ratelimit-reset", reset.to_string());
    set("x-ratelimit-resource", "core".into());
    match &caller {
        // Coarse-grained (scoped) actors get their scopes and the ones the endpoint accepts.
        Caller::Token {
            spec: TokenSpec::Scoped(scopes),
            ..
        } => {
            set("x-oauth-scopes", scopes.join(", "));
            set("x-accepted-oauth-scopes", "repo".into());
        }
        // Fine-grained actors get the permissions the endpoint needs, never their own.
        Caller::Token { .. } if repository_route(uri) => {
            set("x-accepted-github-permissions", "metadata=read".into());
        }
        _ => {}
    }
    if let Some(etag) = etag {
        set("etag", etag);
        let scope = if matches!(caller, Caller::Token { .. }) {
            "private"
        } else {
            "public"
        };
        set("cache-control", format!("{scope}, max-age=60, s-maxage=60"));
        set("vary", "Accept, Authorization, Cookie, X-GitHub-OTP".into());
    }
    for (name, value) in answer.extra {
        set(name, value);
    }
    if not_modified {
        return ((status, out).into_response(), delay);
    }
    set("content-type", "application/json; charset=utf-8".into());
    ((status, out, body).into_response(), delay)
}

fn route(base: &str, w: &World, caller: &Caller, method: &Method, uri: &Uri) -> Answer {
    if let Caller::Bad = caller {
        return Answer::error(StatusCode::UNAUTHORIZED, "Bad credentials", DOCS_REST);
    }
    if method != Method::GET && method != Method::HEAD {
        return Answer::not_found(DOCS_REST);
    }
    let login = match caller {
        Caller::Token {
            login: Some(login), ..
        } => Some(login.as_str()),
        _ => None,
    };
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["user"] => match (login, caller) {
            (Some(login), _) => Answer::ok(w.user_json(base, &w.users[login], true)),
            // `GET /user` is not among the endpoints an installation token may call.
            (None, Caller::Token { spec, .. }) => {
                Answer::error(StatusCode::FORBIDDEN, spec.not_accessible(), DOCS_GET_USER)
            }
            (None, _) => Answer::error(
                StatusCode::UNAUTHORIZED,
                "Requires authentication",
                DOCS_GET_USER,
            ),
        },
        ["users", name] => match w.users.get(&name.to_ascii_lowercase()) {
            Some(user) => Answer::ok(w.user_json(base, user, false)),
            None => Answer::not_found("https://docs.github.com/rest/users/users#get-a-user"),
        },
        ["repos", owner, name] => {
            let Some(repo) = visible_repo(w, caller, owner, name) else {
                return Answer::not_found(DOCS_GET_REPO);
            };
            let mut v = repo_json(base, w, repo);
            // The user's roles, whatever their token may do. GitHub's documentation does not
            // describe `permissions` for an installation token (no user): the fake omits it.
            if let Some(login) = login {
                v.as_object_mut().unwrap().insert(
                    "permissions".into(),
                    permissions_json(w.effective_role(repo, login)),
                );
            }
            Answer::ok(v)
        }
        [
            "repos",
            owner,
            name,
            "collaborators",
            username,
            "permission",
        ] => {
            let Some(repo) = visible_repo(w, caller, owner, name) else {
                return Answer::not_found(DOCS_COLLABORATOR_PERMISSION);
            };
            match (login, caller) {
                (Some(login), _) => {
                    if w.effective_role(repo, login).map_or(0, Permission::rank)
                        < Permission::Push.rank()
                    {
                        return Answer::error(
                            StatusCode::FORBIDDEN,
                            "Must have push access to view collaborator permission.",
                            DOCS_COLLABORATOR_PERMISSION,
                        );
                    }
                }
                // An installation acts for its app, which reached the repository above.
                (None, Caller::Token { .. }) => {}
                (None, _) => {
                    return Answer::error(
                        StatusCode::UNAUTHORIZED,
                        "Requires authentication",
                        DOCS_COLLABORATOR_PERMISSION,
                    );
                }
            }
            let Some(user) = w.users.get(&username.to_ascii_lowercase()) else {
                return Answer::not_found(DOCS_COLLABORATOR_PERMISSION);
            };
            let role = w.effective_role(repo, &user.login);
            let role_name = role.map_or("none", Permission::role_name);
            let mut u = w.account_json(base, &user.login);
            let obj = u.as_object_mut().unwrap();
            obj.insert("permissions".into(), permissions_json(role));
            obj.insert("role_name".into(), json!(role_name));
            Answer::ok(json!({
                "permission": role.map_or("none", Permission::legacy_permission),
                "role_name": role_name,
                "user": u,
            }))
        }
        ["installation", "repositories"] => match caller {
            Caller::Token {
                spec: TokenSpec::Installation(installation),
                ..
            } => installation_repositories(base, w, installation, uri),
            Caller::Token { .. } => Answer::error(
                StatusCode::FORBIDDEN,
                "You must authenticate with an installation access token in order to list repositories for an installation.",
                DOCS_INSTALLATION_REPOSITORIES,
            ),
            _ => Answer::error(
                StatusCode::UNAUTHORIZED,
                "Requires authentication",
                DOCS_INSTALLATION_REPOSITORIES,
            ),
        },
        _ => Answer::not_found(DOCS_REST),
    }
}

/// `GET /installation/repositories`: the installation's repositories (public ones included),
/// sorted by full name, one page of `per_page` (default 30, at most 100) from `page` (from 1).
fn installation_repositories(
    base: &str,
    w: &World,
    installation: &FineGrained,
    uri: &Uri,
) -> Answer {
    let query = |key: &str| {
        uri.query()
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let per_page = query("per_page").unwrap_or(30).clamp(1, 100);
    let page = query("page").unwrap_or(1).max(1);
    let mut reached: Vec<&Repo> = w
        .repos
        .values()
        .filter(|r| installation.reaches(r))
        .collect();
    reached.sort_by_key(|r| World::repo_key(&r.owner, &r.name));
    let total = reached.len();
    let repositories: Vec<Value> = reached
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| repo_json(base, w, r))
        .collect();
    let mut answer = Answer::ok(json!({
        "total_count": total,
        "repository_selection": if installation.repositories.is_some() { "selected" } else { "all" },
        "repositories": repositories,
    }));
    let last = total.div_ceil(per_page).max(1);
    if page < last {
        let link =
            |n: usize| format!("<{base}/installation/repositories?per_page={per_page}&page={n}>");
        answer.extra.push((
            "link",
            format!(
                "{}; rel=\"next\", {}; rel=\"last\"",
                link(page + 1),
                link(last)
            ),
        ));
    }
    answer
}

/// The repository if it exists and the caller may see it (GitHub answers 404 otherwise).
fn visible_repo<'w>(w: &'w World, caller: &Caller, owner: &str, name: &str) -> Option<&'w Repo> {
    let repo = w.repos.get(&World::repo_key(owner, name))?;
    let visible = match caller {
        Caller::Token { login, spec, .. } => w.reaches(repo, login.as_deref(), spec),
        _ => !repo.private,
    };
    visible.then_some(repo)
}

/// Whether `uri` is one of the repository endpoints (both need "Metadata" read of a
/// fine-grained actor).
fn repository_route(uri: &Uri) -> bool {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    matches!(
        segments.as_slice(),
        ["repos", _, _] | ["repos", _, _, "collaborators", _, "permission"]
    )
}

fn repo_json(base: &str, w: &World, repo: &Repo) -> Value {
    let full_name = format!("{}/{}", repo.owner, repo.name);
    json!({
        "id": repo.id,
        "node_id": node_id("R", repo.id),
        "name": repo.name,
        "full_name": full_name,
        "private": repo.private,
        "owner": w.account_json(base, &repo.owner),
        "html_url": format!("https://github.com/{full_name}"),
        "description": null,
        "fork": false,
        "url": format!("{base}/repos/{full_name}"),
        "git_url": format!("git://github.com/{full_name}.git"),
        "ssh_url": format!("git@github.com:{full_name}.git"),
        "clone_url": format!("https://github.com/{full_name}.git"),
        "homepage": null,
        "visibility": if repo.private { "private" } else { "public" },
        "default_branch": "main",
        "archived": false,
        "disabled": false,
        "created_at": "2020-05-01T10:00:00Z",
        "updated_at": "2025-01-02T03:04:05Z",
        "pushed_at": "2025-01-02T03:04:05Z",
    })
}

// --- The web OAuth flow (github.com/login/oauth/...). ---

/// How long an authorization code is good for ("The temporary code will expire after 10
/// minutes").
pub const OAUTH_CODE_LIFETIME: Duration = Duration::from_secs(600);
/// How many tokens GitHub keeps per user, app and scopes: issuing an eleventh revokes the
/// oldest.
pub const OAUTH_TOKENS_PER_GRANT: usize = 10;
const DOCS_AUTHORIZE_ERRORS: &str = "/apps/building-integrations/setting-up-and-registering-oauth-apps/troubleshooting-authorization-request-errors/";
const DOCS_TOKEN_ERRORS: &str = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/";

/// What the signed-in user does on GitHub's authorization page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    /// Authorizes what the app asks for (GitHub also skips its page for an app the user has
    /// authorized before).
    Approve,
    /// Authorizes only those of the requested scopes that are in this list ("users can edit
    /// their scopes, effectively granting your application less access than you originally
    /// requested").
    ApproveOnly(Vec<String>),
    /// Clicks Cancel: GitHub redirects back with `error=access_denied`.
    Deny,
}

/// One `GET /login/oauth/authorize`, its query parameters as received (decoded), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// `(name, value)` pairs.
    pub params: Vec<(String, String)>,
}

impl AuthorizeRequest {
    /// The first value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A token the fake issued through the web flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedOAuthToken {
    /// The app it was issued to.
    pub client_id: String,
    /// Its user's login, lower case.
    pub login: String,
    /// The `gho_` token.
    pub token: String,
    /// Its (normalised) scopes.
    pub scopes: Vec<String>,
}

struct OAuthApp {
    client_secret: String,
    callback: String,
    suspended: bool,
}

struct OAuthCode {
    client_id: String,
    /// The redirect URI the browser was sent to (the `redirect_uri` given, else the callback).
    redirect_uri: String,
    login: String,
    scopes: Vec<String>,
    /// On the OAuth clock (real time plus [`OAuth::clock_offset`]).
    issued: std::time::Instant,
}

struct OAuth {
    apps: HashMap<String, OAuthApp>,
    /// The lower-case login signed in to github.com in the browser, if any.
    signed_in: Option<String>,
    consent: Consent,
    codes: HashMap<String, OAuthCode>,
    /// (lower-case login, client id) → every scope the user has authorized the app.
    authorized: HashMap<(String, String), Vec<String>>,
    issued: Vec<IssuedOAuthToken>,
    authorize_requests: Vec<AuthorizeRequest>,
    exchanges: usize,
    clock_offset: Duration,
}

impl Default for OAuth {
    fn default() -> OAuth {
        OAuth {
            apps: HashMap::new(),
            signed_in: None,
            consent: Consent::Approve,
            codes: HashMap::new(),
            authorized: HashMap::new(),
            issued: Vec::new(),
            authorize_requests: Vec::new(),
            exchanges: 0,
            clock_offset: Duration::ZERO,
        }
    }
}

impl OAuth {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now() + self.clock_offset
    }
}

impl FakeGithub {
    /// GitHub's web base URL (as `https://github.com`): the same listener as the API, which
    /// serves the OAuth web flow at `/login/oauth/authorize` and `/login/oauth/access_token`.
    pub fn web_url(&self) -> &str {
        &self.url
    }

    /// Registers an OAuth app with its client id, client secret and "Authorization callback
    /// URL" (replacing one with the same client id).
    pub fn add_oauth_app(&self, client_id: &str, client_secret: &str, callback_url: &str) {
        assert!(
            parse_url(callback_url).is_some(),
            "fake GitHub: callback URL {callback_url:?} is not an absolute URL"
        );
        self.shared.world().oauth.apps.insert(
            client_id.to_string(),
            OAuthApp {
                client_secret: client_secret.to_string(),
                callback: callback_url.to_string(),
                suspended: false,
            },
        );
    }

    /// Suspends an OAuth app: authorizing it redirects to its callback with
    /// `error=application_suspended`.
    pub fn suspend_oauth_app(&self, client_id: &str) {
        self.shared
            .world()
            .oauth
            .apps
            .get_mut(client_id)
            .expect("fake GitHub: suspend_oauth_app on an unknown app")
            .suspended = true;
    }

    /// Signs `login` in to github.com in the browser (adding the user if new): from now on
    /// `GET /login/oauth/authorize` acts as them, whichever browser or client follows it.
    pub fn oauth_sign_in(&self, login: &str) {
        let mut w = self.shared.world();
        let key = login.to_ascii_lowercase();
        w.users.entry(key.clone()).or_insert_with(|| User {
            login: login.to_string(),
            id: stable_id("account", login),
        });
        w.oauth.signed_in = Some(key);
    }

    /// Signs the browser out of github.com: authorizing then redirects to GitHub's sign-in
    /// page (`/login?client_id=…&return_to=…`), which goes nowhere.
    pub fn oauth_sign_out(&self) {
        self.shared.world().oauth.signed_in = None;
    }

    /// What the signed-in user answers on the authorization page from now on (initially
    /// [`Consent::Approve`]).
    pub fn set_oauth_consent(&self, consent: Consent) {
        self.shared.world().oauth.consent = consent;
    }

    /// Moves the clock of authorization codes forward (codes expire after
    /// [`OAUTH_CODE_LIFETIME`]); nothing else in the fake sees it.
    pub fn advance_oauth_clock(&self, by: Duration) {
        self.shared.world().oauth.clock_offset += by;
    }

    /// Every `GET /login/oauth/authorize` received, in order.
    pub fn oauth_authorize_requests(&self) -> Vec<AuthorizeRequest> {
        self.shared.world().oauth.authorize_requests.clone()
    }

    /// How many `GET /login/oauth/authorize` were received.
    pub fn oauth_authorize_hits(&self) -> usize {
        self.shared.world().oauth.authorize_requests.len()
    }

    /// How many `POST /login/oauth/access_token` were received, whatever their answer.
    pub fn oauth_exchanges(&self) -> usize {
        self.shared.world().oauth.exchanges
    }

    /// Every token issued by a code exchange, in order (revoked ones included).
    pub fn oauth_tokens(&self) -> Vec<IssuedOAuthToken> {
        self.shared.world().oauth.issued.clone()
    }
}

/// `application/x-www-form-urlencoded` of `pairs` (spaces as `+`, everything but
/// `A-Za-z0-9*-._` percent-encoded), as browsers encode forms and GitHub its answers.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(b));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The pairs of an `application/x-www-form-urlencoded` string (or a URL's query).
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |b: u8| char::from(b).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(hi), Some(lo)) => {
                            out.push(u8::try_from(hi * 16 + lo).unwrap());
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    s.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The parts of an absolute URL that GitHub's redirect rules look at.
#[derive(Debug)]
struct ParsedUrl {
    scheme: String,
    /// Lower case; an IPv6 literal without its brackets.
    host: String,
    /// The explicit port, else the scheme's default.
    port: Option<u16>,
    /// `/` when empty.
    path: String,
}

fn parse_url(url: &str) -> Option<ParsedUrl> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    };
    let path = tail.split(['?', '#']).next().unwrap_or("");
    Some(ParsedUrl {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        path: if path.is_empty() { "/" } else { path }.to_string(),
    })
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "::1" | "localhost")
}

/// GitHub's rules for a `redirect_uri` against the app's callback URL ("Redirect URLs"): the
/// host (a sub-domain of it too) and port must match, the path must be the callback's or
/// below it; a loopback callback (`http://127.0.0.1/path`) takes any port. The scheme must
/// match too (GitHub's examples keep it; the fake does not guess further).
fn redirect_allowed(redirect_uri: &str, callback: &str) -> bool {
    let (Some(r), Some(c)) = (parse_url(redirect_uri), parse_url(callback)) else {
        return false;
    };
    let host_ok = r.host == c.host
        || (c.host.parse::<std::net::IpAddr>().is_err()
            && r.host.ends_with(&format!(".{}", c.host)));
    let port_ok = r.port == c.port || (is_loopback(&c.host) && r.host == c.host);
    let dot_segments = r.path.split('/').any(|seg| seg == "." || seg == "..");
    let path_ok = r.path == c.path
        || (c.path.ends_with('/') && r.path.starts_with(&c.path))
        || r.path.starts_with(&format!("{}/", c.path));
    r.scheme == c.scheme && host_ok && port_ok && path_ok && !dot_segments
}

/// `url` with `params` added to its query.
fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    let url = url.split('#').next().unwrap_or(url);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", form_encode(params))
}

/// Scopes from a `scope` parameter (space-delimited as documented; commas are accepted too),
/// normalised as GitHub saves them: duplicates and scopes implied by another requested one
/// dropped (`user,gist,user:email` → `user`, `gist`).
fn normalize_scopes(scopes: &[String]) -> Vec<String> {
    /// (parent, implied) pairs from "Available scopes".
    const IMPLIED: &[(&str, &str)] = &[
        ("repo", "repo:status"),
        ("repo", "repo_deployment"),
        ("repo", "public_repo"),
        ("repo", "repo:invite"),
        ("repo", "security_events"),
        ("admin:repo_hook", "write:repo_hook"),
        ("admin:repo_hook", "read:repo_hook"),
        ("write:repo_hook", "read:repo_hook"),
        ("admin:org", "write:org"),
        ("admin:org", "read:org"),
        ("admin:org", "manage_runners:org"),
        ("write:org", "read:org"),
        ("admin:public_key", "write:public_key"),
        ("admin:public_key", "read:public_key"),
        ("write:public_key", "read:public_key"),
        ("user", "read:user"),
        ("user", "user:email"),
        ("user", "user:follow"),
        ("project", "read:project"),
        ("admin:gpg_key", "write:gpg_key"),
        ("admin:gpg_key", "read:gpg_key"),
        ("write:gpg_key", "read:gpg_key"),
        ("write:packages", "read:packages"),
    ];
    let mut out: Vec<String> = Vec::new();
    for s in scopes {
        if !s.is_empty() && !out.contains(s) {
            out.push(s.clone());
        }
    }
    let requested = out.clone();
    out.retain(|s| {
        !IMPLIED
            .iter()
            .any(|(parent, implied)| implied == s && requested.iter().any(|r| r == parent))
    });
    out
}

fn split_scopes(scope: &str) -> Vec<String> {
    scope
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(ToString::to_string)
        .collect()
}

fn is_web_path(path: &str) -> bool {
    path == "/login" || path.starts_with("/login/")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head><body>{body}</body></html>",
        html_escape(title)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// A 302 as github.com sends it (Rails' body).
fn web_redirect(location: &str) -> Response {
    let mut r = html_page(
        StatusCode::FOUND,
        "Redirecting",
        &format!(
            "You are being <a href=\"{}\">redirected</a>.",
            html_escape(location)
        ),
    );
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(location).unwrap());
    r
}

fn web_not_found() -> Response {
    html_page(
        StatusCode::NOT_FOUND,
        "Page not found · GitHub",
        "<h1>404</h1><p>This is not the web page you are looking for.</p>",
    )
}

/// github.com's answer to the OAuth web flow's requests (and `/login`). The API's modes do
/// not apply except [`Mode::Unreachable`] (the connection is reset) and [`Mode::ServerError`]
/// (a 502 page); the delay applies; no rate-limit headers (these are not API calls).
fn web_answer(
    base: &str,
    w: &mut World,
    connection: &Connection,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Duration) {
    w.calls.push(uri.path().to_string());
    let delay = w.delay;
    match w.mode {
        Mode::Unreachable => {
            connection.0.store(true, Ordering::SeqCst);
            return (
                StatusCode::SERVICE_UNAVAILABLE.into_response(),
                Duration::ZERO,
            );
        }
        Mode::ServerError => {
            let page = html_page(
                StatusCode::BAD_GATEWAY,
                "Unicorn! · GitHub",
                "<p>We're having a really bad day.</p>",
            );
            return (page, delay);
        }
        _ => {}
    }
    let get = method == Method::GET || method == Method::HEAD;
    let mut response = match uri.path() {
        "/login/oauth/authorize" if get => authorize(base, w, uri),
        "/login/oauth/access_token" if method == Method::POST => {
            access_token(w, uri, headers, body)
        }
        "/login" if get => html_page(
            StatusCode::OK,
            "Sign in to GitHub · GitHub",
            "<h1>Sign in to GitHub</h1><form><label>Username or email address <input name=\"login\"></label>\
             <label>Password <input name=\"password\" type=\"password\"></label></form>",
        ),
        _ => web_not_found(),
    };
    response
        .headers_mut()
        .insert("server", HeaderValue::from_static("GitHub.com"));
    (response, delay)
}

/// `GET /login/oauth/authorize`.
fn authorize(base: &str, w: &mut World, uri: &Uri) -> Response {
    let params = form_decode(uri.query().unwrap_or(""));
    let request = AuthorizeRequest { params };
    w.oauth.authorize_requests.push(request.clone());
    let Some(app) = request.get("client_id").and_then(|id| w.oauth.apps.get(id)) else {
        return web_not_found();
    };
    let client_id = request.get("client_id").unwrap_or_default().to_string();
    let state = request.get("state");
    let error = |to: &str, error: &str, description: &str, anchor: &str| {
        let error_uri = format!("{DOCS_AUTHORIZE_ERRORS}#{anchor}");
        let mut params = vec![
            ("error", error),
            ("error_description", description),
            ("error_uri", error_uri.as_str()),
        ];
        if let Some(state) = state {
            params.push(("state", state));
        }
        web_redirect(&with_params(to, &params))
    };
    if app.suspended {
        return error(
            &app.callback,
            "application_suspended",
            "Your application has been suspended. Contact support@github.com.",
            "application-suspended",
        );
    }
    let redirect_uri = match request.get("redirect_uri").filter(|r| !r.is_empty()) {
        Some(r) if redirect_allowed(r, &app.callback) => r.to_string(),
        Some(_) => {
            return error(
                &app.callback,
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "redirect-uri-mismatch",
            );
        }
        None => app.callback.clone(),
    };
    let Some(login) = w.oauth.signed_in.clone() else {
        let return_to = uri
            .path_and_query()
            .map_or(uri.path(), axum::http::uri::PathAndQuery::as_str);
        return web_redirect(&format!(
            "{base}/login?{}",
            form_encode(&[("client_id", &client_id), ("return_to", return_to)])
        ));
    };
    let requested = request.get("scope").map(split_scopes);
    let granted = match (&w.oauth.consent, requested) {
        (Consent::Deny, _) => {
            return error(
                &redirect_uri,
                "access_denied",
                "The user has denied your application access.",
                "access-denied",
            );
        }
        // No `scope`: what the user has authorized the app so far (nothing, the first time).
        (_, None) => w
            .oauth
            .authorized
            .get(&(login.clone(), client_id.clone()))
            .cloned()
            .unwrap_or_default(),
        (Consent::Approve, Some(requested)) => requested,
        (Consent::ApproveOnly(allowed), Some(requested)) => requested
            .into_iter()
            .filter(|s| allowed.contains(s))
            .collect(),
    };
    let scopes = normalize_scopes(&granted);
    let authorized = w
        .oauth
        .authorized
        .entry((login.clone(), client_id.clone()))
        .or_default();
    for s in &scopes {
        if !authorized.contains(s) {
            authorized.push(s.clone());
        }
    }
    let code = hex::encode(rand::random::<[u8; 10]>());
    let issued = w.oauth.now();
    w.oauth.codes.insert(
        code.clone(),
        OAuthCode {
            client_id,
            redirect_uri: redirect_uri.clone(),
            login,
            scopes,
            issued,
        },
    );
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = state {
        params.push(("state", state));
    }
    web_redirect(&with_params(&redirect_uri, &params))
}

/// `POST /login/oauth/access_token`: parameters from the query, then the body (form-encoded,
/// or JSON with `Content-Type: application/json`); errors are HTTP 200 with `error`.
fn access_token(w: &mut World, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    w.oauth.exchanges += 1;
    let mut params = form_decode(uri.query().unwrap_or(""));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                params.push((k, v));
            }
        }
    } else {
        params.extend(form_decode(&String::from_utf8_lossy(body)));
    }
    // The body's value wins over the query's.
    let param = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = if accept.contains("application/json") {
        "json"
    } else if accept.contains("application/xml") {
        "xml"
    } else {
        "form"
    };
    let error = |error: &str, description: &str, anchor: &str| {
        oauth_answer(
            format,
            &[
                ("error", error),
                ("error_description", description),
                ("error_uri", &format!("{DOCS_TOKEN_ERRORS}#{anchor}")),
            ],
        )
    };

    let client_id = param("client_id").unwrap_or_default();
    let credentials_ok = w.oauth.apps.get(&client_id).is_some_and(|app| {
        param("client_secret").is_some_and(|secret| secret == app.client_secret)
    });
    if !credentials_ok {
        return error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
            "incorrect-client-credentials",
        );
    }
    let now = w.oauth.now();
    w.oauth
        .codes
        .retain(|_, c| now.duration_since(c.issued) < OAUTH_CODE_LIFETIME);
    let code = param("code").unwrap_or_default();
    let Some(issued) = w
        .oauth
        .codes
        .get(&code)
        .filter(|c| c.client_id == client_id)
    else {
        return error(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
            "bad-verification-code",
        );
    };
    // RFC 6749 §4.1.3: identical to the redirect URI the code was issued for.
    if let Some(redirect_uri) = param("redirect_uri").filter(|r| !r.is_empty())
        && redirect_uri != issued.redirect_uri
    {
        return error(
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
            "redirect-uri-mismatch2",
        );
    }
    let issued = w.oauth.codes.remove(&code).expect("the code just found");
    let token = generate_token("gho_");
    w.tokens.insert(
        token.clone(),
        TokenEntry {
            login: Some(issued.login.clone()),
            spec: TokenSpec::Scoped(issued.scopes.clone()),
        },
    );
    w.oauth.issued.push(IssuedOAuthToken {
        client_id: client_id.clone(),
        login: issued.login.clone(),
        token: token.clone(),
        scopes: issued.scopes.clone(),
    });
    // More than ten live tokens for this user, app and scopes: the oldest is revoked.
    let mut sorted = issued.scopes.clone();
    sorted.sort();
    let same_grant: Vec<String> = w
        .oauth
        .issued
        .iter()
        .filter(|t| {
            let mut s = t.scopes.clone();
            s.sort();
            t.client_id == client_id && t.login == issued.login && s == sorted
        })
        .map(|t| t.token.clone())
        .filter(|t| w.tokens.contains_key(t))
        .collect();
    if same_grant.len() > OAUTH_TOKENS_PER_GRANT {
        for old in &same_grant[..same_grant.len() - OAUTH_TOKENS_PER_GRANT] {
            w.tokens.remove(old);
        }
    }
    let scope = issued.scopes.join(",");
    oauth_answer(
        format,
        &[
            ("access_token", &token),
            ("scope", &scope),
            ("token_type", "bearer"),
        ],
    )
}

/// An answer of the token endpoint, always HTTP 200, in the format `Accept` asked for.
fn oauth_answer(format: &str, fields: &[(&str, &str)]) -> Response {
    let (content_type, body) = match format {
        "json" => {
            let map: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), json!(v)))
                .collect();
            (
                "application/json; charset=utf-8",
                Value::Object(map).to_string(),
            )
        }
        "xml" => {
            let mut inner = String::new();
            for (k, v) in fields {
                inner.push_str(&format!("<{k}>{}</{k}>", html_escape(v)));
            }
            (
                "application/xml; charset=utf-8",
                format!("<OAuth>{inner}</OAuth>"),
            )
        }
        _ => (
            "application/x-www-form-urlencoded; charset=utf-8",
            form_encode(fields),
        ),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
