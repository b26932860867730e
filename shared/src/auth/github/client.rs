//! The real client: octocrab against `GITHUB_API_URL`, with ETag validators that remember what
//! a token was judged by.

use async_trait::async_trait;
use octocrab::Octocrab;

use super::answers::{ErrorAnswer, RepoAnswer, decode, installation_access, reach_of, user_of};
use super::{
    Fetched, GithubApi, GithubError, GithubUser, InstallationReach, RepoAccess, Role, TokenKind,
    TokenLimit, scopes_of, token_ceiling,
};
use crate::domain::RepoRef;

/// The real client: octocrab against `GITHUB_API_URL` (GitHub Enterprise Server works by
/// changing it). One client for every caller; each request carries its caller's token.
pub(crate) struct OctocrabGithub {
    api_url: String,
    /// Built on first use: building loads the system's trust store (~5 ms), which a function
    /// whose GitHub answers are all cached never needs.
    client: std::sync::OnceLock<Result<Octocrab, String>>,
}

impl OctocrabGithub {
    /// A client for `api_url` (checked now, connected on first use).
    pub(crate) fn new(api_url: &str) -> Result<Self, String> {
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
        let user_role = answer.user_role();
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

#[cfg(test)]
mod tests {
    use super::*;

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
