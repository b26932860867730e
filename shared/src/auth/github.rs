//! GitHub, as the registry asks it: who owns a token, and what may that user do in a repository.
//! Behind a trait so the rules are tested without a network; the real client is octocrab.

use async_trait::async_trait;
use octocrab::Octocrab;
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
    /// The caller's role.
    pub role: Role,
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
    /// `GET /repos/{owner}/{repo}` as the token's user (or anonymously), with their permissions.
    async fn repo(
        &self,
        token: Option<&str>,
        repo: &RepoRef,
        etag: Option<&str>,
    ) -> Result<Fetched<RepoAccess>, GithubError>;
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
    ) -> Result<Option<(serde_json::Value, Option<String>)>, GithubError> {
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
        if status == axum::http::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let body = client.body_to_string(response).await.unwrap_or_default();
        let message = || {
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_default()
        };
        match status.as_u16() {
            200 => serde_json::from_str(&body)
                .map(|v| Some((v, new_etag)))
                .map_err(|e| GithubError::Unavailable(e.to_string())),
            401 => Err(GithubError::BadCredentials),
            403 | 429
                if status.as_u16() == 429
                    || remaining.as_deref() == Some("0")
                    || message().contains("rate limit") =>
            {
                Err(GithubError::RateLimited(message()))
            }
            404 => Ok(Some((serde_json::Value::Null, None))),
            s => Err(GithubError::Unavailable(format!("HTTP {s}: {}", message()))),
        }
    }
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
            None => Ok(Fetched::NotModified),
            Some((v, etag)) => {
                let login = v["login"]
                    .as_str()
                    .ok_or(GithubError::BadCredentials)?
                    .to_string();
                let id = v["id"].as_u64().unwrap_or_default();
                Ok(Fetched::Fresh(GithubUser { login, id }, etag))
            }
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
        match self.get(&path, token, etag).await? {
            None => Ok(Fetched::NotModified),
            Some((serde_json::Value::Null, _)) => {
                // GitHub hides private repositories: invisible and absent look the same.
                Ok(Fetched::Fresh(
                    RepoAccess {
                        repo: repo.clone(),
                        private: true,
                        role: Role::None,
                    },
                    None,
                ))
            }
            Some((v, etag)) => {
                let private = v["private"].as_bool().unwrap_or(true);
                let p = &v["permissions"];
                let flag = |k: &str| p[k].as_bool().unwrap_or(false);
                let role = if flag("admin") {
                    Role::Admin
                } else if flag("maintain") {
                    Role::Maintain
                } else if flag("push") {
                    Role::Push
                } else if flag("triage") {
                    Role::Triage
                } else if flag("pull") {
                    // GitHub omits `permissions` for anonymous callers: that is no role at all
                    // (a public repository's packages are readable anonymously only if the
                    // operator allows it, which `decide` checks), never pull.
                    Role::Pull
                } else {
                    Role::None
                };
                let canonical = v["full_name"]
                    .as_str()
                    .and_then(|f| f.split_once('/'))
                    .and_then(|(o, n)| RepoRef::new(o, n))
                    .filter(|r| r == repo)
                    .unwrap_or_else(|| repo.clone());
                Ok(Fetched::Fresh(
                    RepoAccess {
                        repo: canonical,
                        private,
                        role,
                    },
                    etag,
                ))
            }
        }
    }
}
