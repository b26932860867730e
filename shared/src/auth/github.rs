//! GitHub, as the registry asks it: who owns a token, and what may that user do in a repository.
//! Behind a trait so the rules are tested without a network; the real client is octocrab.

use async_trait::async_trait;
use octocrab::Octocrab;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::RepoRef;

/// A GitHub account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubUser {
    /// The login (user name).
    pub login: String,
    /// The stable numeric id.
    pub id: u64,
}

/// A user's role in a repository, lowest first (each implies the ones below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// No access (or the repository is invisible to the caller).
    None,
    /// Read.
    Pull,
    /// Read and manage issues.
    Triage,
    /// Write.
    Push,
    /// Write and manage the repository.
    Maintain,
    /// Everything.
    Admin,
}

impl Role {
    /// GitHub's name for the permission.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Pull => "pull",
            Role::Triage => "triage",
            Role::Push => "push",
            Role::Maintain => "maintain",
            Role::Admin => "admin",
        }
    }
}

/// What a caller may do in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoAccess {
    /// The repository, in GitHub's canonical case when it is visible.
    pub repo: RepoRef,
    /// Whether it is private (an invisible repository counts as private).
    pub private: bool,
    /// What the caller may do: their role, capped by what their token may do.
    pub role: Role,
    /// Set when the token may do less than its user: the user's own role and why. (Answers
    /// cached before tokens were judged read as unlimited, but only reads reuse them: a write
    /// always revalidates, and their ETag is not a `Validator`, so it is judged afresh.)
    pub token_limit: Option<TokenLimit>,
    /// The numeric id of the repository's owner, when the repository is visible (trust
    /// configurations pin it, so a re-created owner of the same name inherits nothing).
    #[serde(default)]
    pub owner_id: Option<u64>,
}

/// Why a token may do less in a repository than the user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLimit {
    /// The user's role, as the repository's `permissions` give it.
    pub user_role: Role,
    /// What the token is and lacks, and what token would do, as a sentence for the refusal.
    pub reason: String,
}

/// The repositories a GitHub App installation token reaches, as `GET /installation/repositories`
/// lists them (its first page: enough to tell a caller what the token can read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationReach {
    /// How many repositories the token reaches (`total_count`).
    pub total: u64,
    /// `owner/name` of the first of them, in GitHub's order.
    pub repositories: Vec<String>,
}

impl InstallationReach {
    /// How many repositories a refusal names before it says "and N more".
    pub const NAMED: usize = 10;

    /// "acme/a, acme/b and 3 more", or "no repository".
    pub fn describe(&self) -> String {
        let named: Vec<&str> = self
            .repositories
            .iter()
            .take(Self::NAMED)
            .map(String::as_str)
            .collect();
        if named.is_empty() {
            return "no repository".into();
        }
        // `total_count` counts every page; the names are from the first one only.
        let more = self.total.saturating_sub(named.len() as u64);
        let list = named.join(", ");
        match more {
            0 if named.len() == 1 => format!("only {list}"),
            0 => format!("only these {} repositories: {list}", named.len()),
            n => format!("{} repositories: {list} and {n} more", self.total),
        }
    }
}

/// A GitHub token's kind, from the prefix GitHub documents for each
/// (docs.github.com/en/authentication/keeping-your-account-and-data-secure/about-authentication-to-github#githubs-token-formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `ghp_`: a personal access token (classic); GitHub reports its scopes in `X-OAuth-Scopes`.
    Classic,
    /// `gho_`: an OAuth app's token; scopes as for a classic token.
    OAuth,
    /// `github_pat_`: a fine-grained personal access token; no endpoint discloses its permissions.
    FineGrained,
    /// `ghu_`: a GitHub App's user access token: what both the app and the user may.
    AppUser,
    /// `ghs_`: a GitHub App installation token: it acts as the app, for no user.
    Installation,
    /// No documented prefix: tokens made before GitHub introduced prefixes, or another issuer's.
    Unprefixed,
}

impl TokenKind {
    /// The kind of `token`, by its prefix.
    pub fn of(token: &str) -> TokenKind {
        [
            ("ghp_", TokenKind::Classic),
            ("gho_", TokenKind::OAuth),
            ("github_pat_", TokenKind::FineGrained),
            ("ghu_", TokenKind::AppUser),
            ("ghs_", TokenKind::Installation),
        ]
        .into_iter()
        .find(|(prefix, _)| token.starts_with(prefix))
        .map_or(TokenKind::Unprefixed, |(_, kind)| kind)
    }

    /// What the kind is called in refusals.
    fn describe(self) -> &'static str {
        match self {
            TokenKind::Classic => "a personal access token (classic)",
            TokenKind::OAuth => "an OAuth app token",
            TokenKind::FineGrained => "a fine-grained personal access token",
            TokenKind::AppUser => "a GitHub App user access token",
            TokenKind::Installation => "a GitHub App installation token",
            TokenKind::Unprefixed => "a GitHub token",
        }
    }

    /// A short stable name, part of the cached answer's validator.
    fn tag(self) -> &'static str {
        match self {
            TokenKind::Classic => "classic",
            TokenKind::OAuth => "oauth",
            TokenKind::FineGrained => "fine-grained",
            TokenKind::AppUser => "app-user",
            TokenKind::Installation => "installation",
            TokenKind::Unprefixed => "unprefixed",
        }
    }

    /// Whether GitHub authorises this kind by OAuth scopes (and reports them in `X-OAuth-Scopes`).
    fn has_scopes(self) -> bool {
        matches!(
            self,
            TokenKind::Classic | TokenKind::OAuth | TokenKind::Unprefixed
        )
    }
}

/// The token that does what a refused one could not, as every such refusal names it.
const CAPABLE_TOKEN: &str = "a personal access token (classic) or OAuth app token with the repo scope (public_repo is enough for a public repository), in .npmrc or through npm login";

/// The scopes in an `X-OAuth-Scopes` value (`"repo, read:org"`), sorted.
fn scopes_of(header: &str) -> Vec<&str> {
    let mut scopes: Vec<&str> = header
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

/// The most a token of `kind` may do in a repository (`private` or not), judged only from what
/// GitHub lets the registry observe: the kind (its prefix) and, for scoped tokens, the scopes
/// in `X-OAuth-Scopes` (`scopes`, absent when GitHub sent no such header). Below admin it
/// comes with the reason. Writing is allowed only where GitHub documents that the token may
/// write the repository's code; where that cannot be observed, the token may only read.
pub fn token_ceiling(
    kind: TokenKind,
    scopes: Option<&str>,
    private: bool,
) -> (Role, Option<String>) {
    let what = kind.describe();
    match (kind.has_scopes(), scopes) {
        (true, Some(header)) => {
            let scopes = scopes_of(header);
            // `repo`: full access to public and private repositories; `public_repo`: the same,
            // public repositories only. No other scope grants access to a repository's code.
            let full = scopes.contains(&"repo") || (!private && scopes.contains(&"public_repo"));
            if full {
                return (Role::Admin, None);
            }
            let has = if scopes.is_empty() {
                "no scopes".to_string()
            } else {
                format!("scopes {}", scopes.join(", "))
            };
            if private {
                (
                    Role::None,
                    Some(format!(
                        "it is {what} with {has}, and only the repo scope gives a token access to a private repository's code; this needs {CAPABLE_TOKEN}"
                    )),
                )
            } else {
                (
                    Role::Pull,
                    Some(format!(
                        "it is {what} with {has}, which gives read-only access to public repositories; writing needs {CAPABLE_TOKEN}"
                    )),
                )
            }
        }
        (true, None) => (
            Role::Pull,
            Some(format!(
                "it is {what} but GitHub reported no scopes for it (no X-OAuth-Scopes header), so the registry cannot confirm that it may write to the repository; writing needs {CAPABLE_TOKEN}"
            )),
        ),
        (false, _) if kind == TokenKind::Installation => (
            Role::None,
            Some(format!(
                "it is {what}, which acts for an app, not for a user; use {CAPABLE_TOKEN}"
            )),
        ),
        (false, _) => (
            Role::Pull,
            Some(format!(
                "it is {what}, and GitHub's API does not disclose such a token's permissions (a read-only one reaches the repository exactly as a read-write one does), so the registry cannot confirm that it may write; writing needs {CAPABLE_TOKEN}"
            )),
        ),
    }
}

/// A GitHub answer, or "unchanged since the ETag you sent".
#[derive(Debug, Clone)]
pub enum Fetched<T> {
    /// A new value and its ETag.
    Fresh(T, Option<String>),
    /// `304 Not Modified`: the cached value still holds (and cost no rate limit).
    NotModified,
}

/// Why GitHub gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GithubError {
    /// The token is unknown, expired or revoked.
    #[error("GitHub does not accept this token")]
    BadCredentials,
    /// The token is valid but acts for no user (GitHub refuses it `GET /user` with 403, as it
    /// does a GitHub App installation token).
    #[error("this token does not act for a GitHub user: {0}")]
    NotAUser(String),
    /// The token's (or the IP's) rate limit is used up.
    #[error("GitHub's rate limit is exhausted: {0}")]
    RateLimited(String),
    /// GitHub could not be reached, or failed.
    #[error("GitHub is unavailable: {0}")]
    Unavailable(String),
}

/// The GitHub API calls the registry makes.
#[async_trait]
pub trait GithubApi: Send + Sync {
    /// `GET /user` for the token.
    async fn user(
        &self,
        token: &str,
        etag: Option<&str>,
    ) -> Result<Fetched<GithubUser>, GithubError>;
    /// `GET /repos/{owner}/{repo}` as the token's user (or anonymously): their role, capped by
    /// what the token itself may do there ([`token_ceiling`]).
    async fn repo(
        &self,
        token: Option<&str>,
        repo: &RepoRef,
        etag: Option<&str>,
    ) -> Result<Fetched<RepoAccess>, GithubError>;
    /// `GET /repos/{owner}/{repo}` with an installation token: 200 means the token reaches the
    /// repository (pull), 404 that it does not.
    async fn installation_repo(
        &self,
        token: &str,
        repo: &RepoRef,
        etag: Option<&str>,
    ) -> Result<Fetched<RepoAccess>, GithubError>;
    /// `GET /installation/repositories` with an installation token: what it reaches.
    async fn installation_repositories(
        &self,
        token: &str,
        etag: Option<&str>,
    ) -> Result<Fetched<InstallationReach>, GithubError>;
}

/// The real client: octocrab against `GITHUB_API_URL` (GitHub Enterprise Server works by
/// changing it). One client for every caller; each request carries its caller's token.
pub struct OctocrabGithub {
    api_url: String,
    /// Built on first use: building loads the system's trust store (~5 ms), which a function
    /// whose GitHub answers are all cached never needs.
    client: std::sync::OnceLock<Result<Octocrab, String>>,
}

impl OctocrabGithub {
    /// A client for `api_url` (checked now, connected on first use).
    pub fn new(api_url: &str) -> Result<Self, String> {
        // The check octocrab's `base_uri` makes.
        api_url
            .parse::<axum::http::Uri>()
            .map_err(|e| format!("GITHUB_API_URL '{api_url}': {e}"))?;
        Ok(Self {
            api_url: api_url.to_string(),
            client: std::sync::OnceLock::new(),
        })
    }

    fn client(&self) -> Result<&Octocrab, GithubError> {
        self.client
            .get_or_init(|| {
                Octocrab::builder()
                    .base_uri(&self.api_url)
                    .map_err(|e| format!("GITHUB_API_URL '{}': {e}", self.api_url))?
                    .set_connect_timeout(Some(std::time::Duration::from_secs(3)))
                    .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| GithubError::Unavailable(e.clone()))
    }

    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
        etag: Option<&str>,
    ) -> Result<Reply, GithubError> {
        use axum::http::header::{ACCEPT, AUTHORIZATION, HeaderValue, IF_NONE_MATCH};
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static("2022-11-28"),
        );
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| GithubError::BadCredentials)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
            headers.insert(IF_NONE_MATCH, etag);
        }
        let uri = axum::http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|e| GithubError::Unavailable(e.to_string()))?;
        let client = self.client()?;
        let response = client
            ._get_with_headers(uri, Some(headers))
            .await
            .map_err(|e| GithubError::Unavailable(short_error(&e)))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let new_etag = header("etag");
        let remaining = header("x-ratelimit-remaining");
        let scopes = header("x-oauth-scopes");
        if status == axum::http::StatusCode::NOT_MODIFIED {
            return Ok(Reply::NotModified { scopes });
        }
        let body = client.body_to_string(response).await.unwrap_or_default();
        let message = || {
            serde_json::from_str::<ErrorAnswer>(&body)
                .ok()
                .and_then(|a| a.message)
                .unwrap_or_default()
        };
        match status.as_u16() {
            200 => Ok(Reply::Ok {
                body,
                etag: new_etag,
                scopes,
            }),
            401 => Err(GithubError::BadCredentials),
            403 | 429
                if status.as_u16() == 429
                    || remaining.as_deref() == Some("0")
                    || message().contains("rate limit") =>
            {
                Err(GithubError::RateLimited(message()))
            }
            403 => Ok(Reply::Forbidden(message())),
            404 => Ok(Reply::NotFound),
            s => Err(GithubError::Unavailable(format!("HTTP {s}: {}", message()))),
        }
    }
}

/// GitHub's answer to one GET.
enum Reply {
    /// 200: the body (decoded by the endpoint that asked), its ETag, and the token's
    /// `X-OAuth-Scopes` (sent for scoped tokens).
    Ok {
        body: String,
        etag: Option<String>,
        scopes: Option<String>,
    },
    /// 304: unchanged since the ETag sent; the headers still report the token's scopes.
    NotModified { scopes: Option<String> },
    /// 404: absent, or hidden from this caller.
    NotFound,
    /// 403 that is not a rate limit: GitHub refuses this token the resource (its message).
    Forbidden(String),
}

/// The validator a repository answer is cached with: GitHub's ETag and what the token was
/// judged by. A 304 says that the body is unchanged, not the token: a classic token's scopes
/// can be edited and are not in the body, so an answer is reused only when the 304 reports
/// the scopes it was judged with.
#[derive(Debug, PartialEq, Eq)]
struct Validator {
    /// The token's kind and scopes when the answer was judged.
    judged_by: String,
    /// GitHub's ETag, sent back as `If-None-Match`.
    etag: String,
}

impl Validator {
    /// Names the format: a validator stored in another form (before tokens were judged) is
    /// not sent, so its answer is fetched and judged afresh.
    /// (v2: answers also carry the owner's id, which v1 answers lack.)
    const FORMAT: &'static str = "token-judged-v2";

    fn parse(stored: &str) -> Option<Validator> {
        let mut parts = stored.splitn(3, '|');
        if parts.next()? != Self::FORMAT {
            return None;
        }
        Some(Validator {
            judged_by: parts.next()?.to_string(),
            etag: parts.next()?.to_string(),
        })
    }

    fn stored(&self) -> String {
        format!("{}|{}|{}", Self::FORMAT, self.judged_by, self.etag)
    }
}

/// What a token is judged by: its kind and, for scoped kinds, the scopes GitHub reported.
fn judged_by(token: Option<&str>, scopes: Option<&str>) -> String {
    let Some(token) = token else {
        return "anonymous".into();
    };
    let kind = TokenKind::of(token);
    if !kind.has_scopes() {
        return kind.tag().into();
    }
    let scopes = scopes.map_or_else(|| "?".to_string(), |h| scopes_of(h).join(","));
    format!("{} {scopes}", kind.tag())
}

/// An error's first line without any URL query (which never holds a token here, but stay safe).
fn short_error(e: &octocrab::Error) -> String {
    let text = e.to_string();
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

#[async_trait]
impl GithubApi for OctocrabGithub {
    async fn user(
        &self,
        token: &str,
        etag: Option<&str>,
    ) -> Result<Fetched<GithubUser>, GithubError> {
        match self.get("/user", Some(token), etag).await? {
            Reply::NotModified { .. } => Ok(Fetched::NotModified),
            Reply::Ok { body, etag, .. } => Ok(Fetched::Fresh(user_of(&body)?, etag)),
            Reply::NotFound => Err(GithubError::BadCredentials),
            // A valid token that may not read its own user: an installation token acts for an
            // app, and `GET /user` is not among the endpoints those tokens may call.
            Reply::Forbidden(message) => Err(GithubError::NotAUser(message)),
        }
    }

    async fn repo(
        &self,
        token: Option<&str>,
        repo: &RepoRef,
        etag: Option<&str>,
    ) -> Result<Fetched<RepoAccess>, GithubError> {
        // Owner and name were validated to GitHub's character set: safe in a path.
        let path = format!("/repos/{}/{}", repo.owner, repo.name);
        let stored = etag.and_then(Validator::parse);
        let mut reply = self
            .get(&path, token, stored.as_ref().map(|v| v.etag.as_str()))
            .await?;
        if let Reply::NotModified { scopes } = &reply {
            if stored
                .as_ref()
                .is_some_and(|v| v.judged_by == judged_by(token, scopes.as_deref()))
            {
                return Ok(Fetched::NotModified);
            }
            // The repository is unchanged but the token is not what its cached answer was
            // judged by (its scopes were edited, or went unreported): ask once more, in full.
            reply = self.get(&path, token, None).await?;
        }
        let (answer, etag, scopes) = match reply {
            Reply::Ok { body, etag, scopes } => (decode::<RepoAnswer>(&body)?, etag, scopes),
            Reply::NotFound => {
                // GitHub hides private repositories: invisible and absent look the same.
                return Ok(Fetched::Fresh(
                    RepoAccess {
                        repo: repo.clone(),
                        private: true,
                        role: Role::None,
                        token_limit: None,
                        owner_id: None,
                    },
                    None,
                ));
            }
            Reply::Forbidden(message) => {
                return Err(GithubError::Unavailable(format!("HTTP 403: {message}")));
            }
            Reply::NotModified { .. } => {
                return Err(GithubError::Unavailable(
                    "304 to a request without If-None-Match".into(),
                ));
            }
        };
        let private = answer.private();
        // `permissions` are the user's roles in the repository, whatever the token may do.
        let user_role = answer
            .permissions
            .as_ref()
            .map_or(Role::None, Permissions::role);
        // So the token caps the role: it may do no more than GitHub shows it may.
        let (ceiling, reason) = match token {
            Some(t) => token_ceiling(TokenKind::of(t), scopes.as_deref(), private),
            None => (Role::Admin, None),
        };
        let role = user_role.min(ceiling);
        let token_limit = (role < user_role).then(|| TokenLimit {
            user_role,
            reason: reason.unwrap_or_default(),
        });
        let canonical = answer.canonical(repo);
        let validator = etag.map(|etag| {
            Validator {
                judged_by: judged_by(token, scopes.as_deref()),
                etag,
            }
            .stored()
        });
        Ok(Fetched::Fresh(
            RepoAccess {
                repo: canonical,
                private,
                role,
                token_limit,
                owner_id: answer.owner_id(),
            },
            validator,
        ))
    }

    async fn installation_repo(
        &self,
        token: &str,
        repo: &RepoRef,
        etag: Option<&str>,
    ) -> Result<Fetched<RepoAccess>, GithubError> {
        let path = format!("/repos/{}/{}", repo.owner, repo.name);
        match self.get(&path, Some(token), etag).await? {
            Reply::NotModified { .. } => Ok(Fetched::NotModified),
            Reply::Ok { body, etag, .. } => Ok(Fetched::Fresh(
                installation_access(Some(&decode(&body)?), repo),
                etag,
            )),
            Reply::NotFound => Ok(Fetched::Fresh(installation_access(None, repo), None)),
            // Not a rate limit (`get` tells those apart): GitHub refuses this token the
            // repository (an organisation's IP allow list, say). That is not reaching it, and
            // is answered as such, not as an outage.
            Reply::Forbidden(message) => {
                tracing::debug!(%message, "GitHub refused an installation token a repository");
                Ok(Fetched::Fresh(installation_access(None, repo), None))
            }
        }
    }

    async fn installation_repositories(
        &self,
        token: &str,
        etag: Option<&str>,
    ) -> Result<Fetched<InstallationReach>, GithubError> {
        match self
            .get("/installation/repositories?per_page=100", Some(token), etag)
            .await?
        {
            Reply::NotModified { .. } => Ok(Fetched::NotModified),
            Reply::Ok { body, etag, .. } => Ok(Fetched::Fresh(reach_of(&decode(&body)?), etag)),
            Reply::NotFound => Err(GithubError::Unavailable("HTTP 404".into())),
            Reply::Forbidden(message) => {
                Err(GithubError::Unavailable(format!("HTTP 403: {message}")))
            }
        }
    }
}

/// The fields of GitHub's answers that the registry reads; GitHub's many others are ignored.
/// A field that is absent (or null) reads as GitHub documents its absence; a body that is not
/// JSON, or JSON of another shape, is an answer GitHub did not give (`decode`).
///
/// `GET /user`.
#[derive(Debug, Deserialize)]
struct UserAnswer {
    /// Whom the token acts for: a 200 without it names nobody.
    login: String,
    /// The stable numeric id.
    id: Option<u64>,
}

/// `GET /repos/{owner}/{repo}`.
#[derive(Debug, Deserialize)]
struct RepoAnswer {
    /// `owner/name` in GitHub's case.
    full_name: Option<String>,
    /// Whether the repository is private.
    private: Option<bool>,
    /// The caller's roles (absent for anonymous callers and installations).
    permissions: Option<Permissions>,
    /// The owning account.
    owner: Option<OwnerAnswer>,
}

/// A repository answer's `permissions`: one flag per role.
#[derive(Debug, Deserialize)]
struct Permissions {
    admin: Option<bool>,
    maintain: Option<bool>,
    push: Option<bool>,
    triage: Option<bool>,
    pull: Option<bool>,
}

/// A repository answer's `owner`.
#[derive(Debug, Deserialize)]
struct OwnerAnswer {
    /// The owner's stable numeric id.
    id: Option<u64>,
}

/// `GET /installation/repositories` (its first page).
#[derive(Debug, Deserialize)]
struct RepositoriesAnswer {
    /// How many repositories the token reaches, on every page.
    total_count: Option<u64>,
    /// This page's repositories.
    repositories: Option<Vec<RepositoryName>>,
}

/// One repository of `GET /installation/repositories`.
#[derive(Debug, Deserialize)]
struct RepositoryName {
    /// `owner/name`.
    full_name: Option<String>,
}

/// An error answer's `message`.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    message: Option<String>,
}

/// A 200 answer's body as `T`: one that does not decode is GitHub failing, not an answer.
fn decode<T: DeserializeOwned>(body: &str) -> Result<T, GithubError> {
    serde_json::from_str(body).map_err(|e| GithubError::Unavailable(e.to_string()))
}

/// The user in a 200 to `GET /user`. JSON that names nobody (no `login`) is refused as a bad
/// token; a body that is not JSON at all is GitHub failing.
fn user_of(body: &str) -> Result<GithubUser, GithubError> {
    match serde_json::from_str::<UserAnswer>(body) {
        Ok(user) => Ok(GithubUser {
            login: user.login,
            id: user.id.unwrap_or_default(),
        }),
        Err(e) if e.is_data() => Err(GithubError::BadCredentials),
        Err(e) => Err(GithubError::Unavailable(e.to_string())),
    }
}

impl Permissions {
    /// The highest role a flag grants.
    fn role(&self) -> Role {
        let flag = |f: Option<bool>| f.unwrap_or(false);
        if flag(self.admin) {
            Role::Admin
        } else if flag(self.maintain) {
            Role::Maintain
        } else if flag(self.push) {
            Role::Push
        } else if flag(self.triage) {
            Role::Triage
        } else if flag(self.pull) {
            // GitHub omits `permissions` for anonymous callers: that is no role at all
            // (a public repository's packages are readable anonymously only if the
            // operator allows it, which `decide` checks), never pull.
            Role::Pull
        } else {
            Role::None
        }
    }
}

impl RepoAnswer {
    /// Whether the repository is private; an answer that does not say counts as private.
    fn private(&self) -> bool {
        self.private.unwrap_or(true)
    }

    /// The owner's numeric id, if the answer carries it.
    fn owner_id(&self) -> Option<u64> {
        self.owner.as_ref().and_then(|o| o.id)
    }

    /// The canonical name: GitHub's `full_name` when it names `repo` (in any case), else `repo`
    /// as asked.
    fn canonical(&self, repo: &RepoRef) -> RepoRef {
        self.full_name
            .as_deref()
            .and_then(|f| f.split_once('/'))
            .and_then(|(o, n)| RepoRef::new(o, n))
            .filter(|r| r == repo)
            .unwrap_or_else(|| repo.clone())
    }
}

/// What an installation token may do in a repository, from GitHub's answer to `GET /repos/…`
/// (`None` for a 404). GitHub documents no `permissions` for a caller that is no user, so only
/// the answer's existence counts: reaching a repository is reading it, never writing.
fn installation_access(answer: Option<&RepoAnswer>, repo: &RepoRef) -> RepoAccess {
    match answer {
        Some(a) => RepoAccess {
            repo: a.canonical(repo),
            private: a.private(),
            role: Role::Pull,
            token_limit: None,
            owner_id: a.owner_id(),
        },
        None => RepoAccess {
            repo: repo.clone(),
            private: true,
            role: Role::None,
            token_limit: None,
            owner_id: None,
        },
    }
}

/// The reach in an answer of `GET /installation/repositories`.
fn reach_of(answer: &RepositoriesAnswer) -> InstallationReach {
    let repositories: Vec<String> = answer
        .repositories
        .iter()
        .flatten()
        .filter_map(|r| r.full_name.clone())
        .collect();
    InstallationReach {
        total: answer.total_count.unwrap_or(repositories.len() as u64),
        repositories,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_are_described_with_a_bounded_list() {
        let reach = |total: u64, n: usize| InstallationReach {
            total,
            repositories: (0..n).map(|i| format!("acme/r{i}")).collect(),
        };
        assert_eq!(reach(0, 0).describe(), "no repository");
        assert_eq!(reach(1, 1).describe(), "only acme/r0");
        assert_eq!(
            reach(2, 2).describe(),
            "only these 2 repositories: acme/r0, acme/r1"
        );
        let many = reach(250, 100).describe();
        assert!(
            many.starts_with("250 repositories: acme/r0, ")
                && many.ends_with("acme/r9 and 240 more"),
            "{many}"
        );
        // A total smaller than the list GitHub sent (it changed in between) never underflows.
        assert_eq!(
            reach(1, 2).describe(),
            "only these 2 repositories: acme/r0, acme/r1"
        );
    }

    /// A GitHub answer as the client decodes it.
    fn answer<T: DeserializeOwned>(body: serde_json::Value) -> T {
        decode(&body.to_string()).unwrap()
    }

    #[test]
    fn an_installation_reads_what_it_reaches_and_nothing_else() {
        let repo = RepoRef::new("acme", "widgets").unwrap();
        // Whatever `permissions` the body might carry, reaching it is pull.
        let body: RepoAnswer = answer(serde_json::json!({
            "full_name": "Acme/Widgets", "private": true,
            "permissions": { "admin": true, "push": true, "pull": true }
        }));
        let reached = installation_access(Some(&body), &repo);
        assert_eq!(reached.role, Role::Pull);
        assert_eq!(reached.repo.to_string(), "Acme/Widgets");
        assert!(reached.private);
        let public = installation_access(
            Some(&answer(serde_json::json!({ "private": false }))),
            &repo,
        );
        assert!(!public.private && public.role == Role::Pull);
        let missing = installation_access(None, &repo);
        assert_eq!((missing.role, missing.private), (Role::None, true));
        assert_eq!(
            reach_of(&answer(serde_json::json!({
                "total_count": 3,
                "repositories": [{ "full_name": "acme/a" }, { "name": "no-full-name" }]
            }))),
            InstallationReach {
                total: 3,
                repositories: vec!["acme/a".into()]
            }
        );
        assert_eq!(reach_of(&answer(serde_json::json!({}))).total, 0);
    }

    #[test]
    fn answers_decode_to_what_the_registry_reads() {
        // A user: unknown fields are ignored, a missing id reads as 0.
        assert_eq!(
            user_of(r#"{"login":"alice","id":7,"name":"Alice","plan":{"name":"pro"}}"#),
            Ok(GithubUser {
                login: "alice".into(),
                id: 7
            })
        );
        assert_eq!(user_of(r#"{"login":"bob"}"#).unwrap().id, 0);
        // JSON that names nobody is a token GitHub does not accept; a body that is not JSON
        // is GitHub failing.
        assert_eq!(
            user_of(r#"{"message":"x"}"#),
            Err(GithubError::BadCredentials)
        );
        assert_eq!(user_of("null"), Err(GithubError::BadCredentials));
        assert!(matches!(
            user_of("<html>"),
            Err(GithubError::Unavailable(_))
        ));
        assert!(matches!(user_of(""), Err(GithubError::Unavailable(_))));

        // A repository: the user's highest role, the owner's id, GitHub's case.
        let repo = RepoRef::new("acme", "widgets").unwrap();
        let a: RepoAnswer = answer(serde_json::json!({
            "id": 1, "full_name": "Acme/Widgets", "private": false,
            "owner": { "login": "Acme", "id": 4201 },
            "permissions": { "admin": false, "maintain": false, "push": true, "triage": true, "pull": true }
        }));
        assert_eq!(
            (
                a.permissions.as_ref().map(Permissions::role),
                a.private(),
                a.owner_id(),
                a.canonical(&repo).to_string()
            ),
            (Some(Role::Push), false, Some(4201), "Acme/Widgets".into())
        );
        // An anonymous caller's answer has no permissions and no role; a name that is not the
        // one asked for is not taken; an answer silent on privacy counts as private.
        let bare: RepoAnswer = answer(serde_json::json!({ "full_name": "other/repo" }));
        assert!(bare.permissions.is_none() && bare.private() && bare.owner_id().is_none());
        assert_eq!(bare.canonical(&repo), repo);
        assert!(matches!(
            decode::<RepoAnswer>("not json"),
            Err(GithubError::Unavailable(_))
        ));
        assert!(matches!(
            decode::<RepositoriesAnswer>(r#"{"repositories": 3}"#),
            Err(GithubError::Unavailable(_))
        ));
    }

    #[test]
    fn token_kinds_follow_githubs_prefixes() {
        for (token, kind) in [
            ("ghp_abc", TokenKind::Classic),
            ("gho_abc", TokenKind::OAuth),
            ("github_pat_11AB_cd", TokenKind::FineGrained),
            ("ghu_abc", TokenKind::AppUser),
            ("ghs_abc", TokenKind::Installation),
            (
                "0123456789abcdef0123456789abcdef01234567",
                TokenKind::Unprefixed,
            ),
            ("ghr_abc", TokenKind::Unprefixed),
        ] {
            assert_eq!(TokenKind::of(token), kind, "{token}");
        }
    }

    #[test]
    fn scoped_tokens_write_only_with_a_repository_scope() {
        use TokenKind::*;
        let ceiling = |kind, scopes, private| token_ceiling(kind, scopes, private).0;
        for kind in [Classic, OAuth, Unprefixed] {
            assert_eq!(ceiling(kind, Some("repo, read:org"), true), Role::Admin);
            assert_eq!(ceiling(kind, Some("read:org,repo"), false), Role::Admin);
            assert_eq!(ceiling(kind, Some("public_repo"), false), Role::Admin);
            assert_eq!(ceiling(kind, Some("public_repo"), true), Role::None);
            assert_eq!(
                ceiling(kind, Some("repo:status, read:org"), true),
                Role::None
            );
            assert_eq!(ceiling(kind, Some("read:org"), false), Role::Pull);
            assert_eq!(ceiling(kind, Some(""), false), Role::Pull);
            // No header: nothing shows the token may write.
            assert_eq!(ceiling(kind, None, false), Role::Pull);
            assert_eq!(ceiling(kind, None, true), Role::Pull);
        }
        let (_, reason) = token_ceiling(Classic, Some("read:org, gist"), false);
        let reason = reason.unwrap();
        assert!(
            reason.contains("a personal access token (classic) with scopes gist, read:org")
                && reason.contains("repo scope (public_repo is enough for a public repository)"),
            "{reason}"
        );
    }

    #[test]
    fn tokens_whose_permissions_are_hidden_only_read() {
        for kind in [TokenKind::FineGrained, TokenKind::AppUser] {
            for private in [true, false] {
                // Whatever scopes header might come: these kinds are not authorised by scopes.
                let (role, reason) = token_ceiling(kind, Some("repo"), private);
                assert_eq!(role, Role::Pull, "{kind:?}");
                assert!(reason.unwrap().contains("does not disclose"));
            }
        }
        assert_eq!(
            token_ceiling(TokenKind::Installation, None, false).0,
            Role::None
        );
    }

    #[test]
    fn validators_carry_what_the_token_was_judged_by() {
        let v = Validator {
            judged_by: judged_by(Some("ghp_x"), Some("repo, read:org")),
            etag: "W/\"a|b\"".into(),
        };
        assert_eq!(v.judged_by, "classic read:org,repo");
        assert_eq!(Validator::parse(&v.stored()), Some(v));
        // A plain ETag (cached before tokens were judged) is not a validator: never sent.
        assert_eq!(Validator::parse("\"abc\""), None);
        assert_eq!(judged_by(Some("ghp_x"), None), "classic ?");
        assert_eq!(
            judged_by(Some("github_pat_x"), Some("repo")),
            "fine-grained"
        );
        assert_eq!(judged_by(None, None), "anonymous");
    }
}
