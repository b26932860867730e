//! The authoriser: open mode, or GitHub mode, which identifies callers (`caller`), asks GitHub
//! what they may do in a package's repository (through the answer cache) and lets the one rule
//! (`decide`) judge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use chrono::{DateTime, Duration, Utc};

use super::cache::{AnswerCache, Freshness, MEMORY_ENTRIES};
use super::decide::unavailable;
use super::github::{
    Fetched, GithubApi, GithubError, GithubUser, InstallationReach, RepoAccess, Role,
};
use super::kv::{Kv, KvKey};
use super::token_store;
use super::tokens::{self, TokenKeys};
use super::{
    Action, AuthError, Caller, Identity, RegistryTokenUse, Secret, TokenOwner, credential, decide,
    is_installation_refusal, oidc, scopes,
};
use crate::domain::{PackageName, RepoRef};
use crate::storage::KvStore;

/// GitHub-mode settings.
#[derive(Debug, Clone)]
pub struct GithubSettings {
    /// Which names are stored here (the owner allow-list).
    pub scopes: scopes::ScopePolicy,
    /// Whether packages of public repositories may be read without a token.
    pub public_read: bool,
    /// How long a GitHub answer is used for reads without asking again.
    pub fresh_for: Duration,
    /// How long a cached answer may still serve reads while GitHub is unavailable.
    pub stale_for: Duration,
    /// How long a registry token's record serves read routes (`REGISTRY_TOKEN_CACHE_SECONDS`).
    pub token_cache: std::time::Duration,
    /// How long a web sign-in lasts (`REGISTRY_WEB_SESSION_HOURS`).
    pub web_session: std::time::Duration,
}

/// The authoriser.
pub enum Authorizer {
    /// Anyone on the listener may do anything.
    Open,
    /// GitHub permissions decide.
    Github(Box<GithubAuth>),
}

/// GitHub mode's state.
pub struct GithubAuth {
    api: Arc<dyn GithubApi>,
    kv: Kv,
    /// Registry-token keys.
    pub tokens: TokenKeys,
    settings: GithubSettings,
    /// GitHub's answers.
    cache: AnswerCache,
    /// Trusted publishing (the OIDC exchange), when configured.
    trusted: Option<oidc::TrustedPublishing>,
    /// Registry-token records kept for read routes.
    token_records: token_store::TokenRecords,
    /// The OAuth app people sign in with on the web pages, when configured.
    oauth: Option<super::github::oauth::OauthApp>,
    /// Tokens GitHub refused lately (by their `KvKey::token_owner` id, which holds a hash), so a
    /// repeated bad token costs no GitHub call.
    refused: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl GithubAuth {
    /// GitHub mode over `api`, caching in memory and in `kv`.
    pub(crate) fn new(
        api: Arc<dyn GithubApi>,
        kv: Arc<dyn KvStore>,
        tokens: TokenKeys,
        settings: GithubSettings,
    ) -> Self {
        let kv = Kv::new(kv);
        Self {
            api,
            cache: AnswerCache::new(kv.clone(), settings.fresh_for, settings.stale_for),
            kv,
            tokens,
            token_records: token_store::TokenRecords::new(settings.token_cache),
            settings,
            trusted: None,
            oauth: None,
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// Turns on sign-in with GitHub through `app` (web pages, `npm login --auth-type=web`).
    pub(crate) fn with_oauth(mut self, app: super::github::oauth::OauthApp) -> Self {
        self.oauth = Some(app);
        self
    }

    /// How long a web sign-in lasts.
    pub fn web_session(&self) -> std::time::Duration {
        self.settings.web_session
    }

    /// The OAuth app, if sign-in with GitHub is configured.
    pub fn oauth(&self) -> Option<&super::github::oauth::OauthApp> {
        self.oauth.as_ref()
    }

    /// Turns on trusted publishing: ID tokens verified by `verifier` may be exchanged.
    pub(crate) fn with_trusted_publishing(mut self, verifier: oidc::IdTokenVerifier) -> Self {
        self.trusted = Some(oidc::TrustedPublishing::new(verifier, self.kv.clone()));
        self
    }

    /// Trusted publishing, if turned on.
    pub(crate) fn trusted_publishing(&self) -> Option<&oidc::TrustedPublishing> {
        self.trusted.as_ref()
    }

    /// The caller holding a token the exchange minted: the workflow run it was minted for.
    async fn workflow_caller(&self, token: &str) -> Result<Caller, AuthError> {
        let trusted = self.trusted.as_ref().ok_or_else(|| {
            AuthError::Unauthenticated("trusted publishing is not enabled on this registry".into())
        })?;
        let grant = trusted.grant(token).await.map_err(|e| {
            AuthError::Unavailable(format!(
                "the token store is unavailable ({e}); retry shortly"
            ))
        })?;
        let grant = grant.ok_or_else(|| {
            AuthError::Unauthenticated(format!(
                "the trusted-publishing token expired (they last {} minutes) or is unknown; run the workflow again",
                oidc::exchange::TOKEN_LIFETIME_MINUTES
            ))
        })?;
        Ok(Caller::from_grant(grant))
    }

    /// Whether a trusted-publishing caller may do `action` to `package` of `repo`: only
    /// publishing (and reading) the one package its token was minted for, only from the
    /// repository the package is bound to, and only while the configuration that admitted the
    /// run still exists (revoking a configuration stops the tokens minted from it at once).
    async fn check_workflow(
        &self,
        grant: &oidc::PublishGrant,
        package: &PackageName,
        repo: &RepoRef,
        action: Action,
    ) -> Result<RepoAccess, AuthError> {
        let run = &grant.run;
        // Any other package is answered as a missing one: the token holder learns nothing
        // about what else the registry stores.
        if grant.package != package.as_str() {
            return Err(AuthError::Hidden);
        }
        if !matches!(action, Action::Read | Action::Publish) {
            return Err(AuthError::Forbidden(format!(
                "a trusted-publishing token may only publish new versions of {package}; it cannot {} it (deprecate, dist-tag, unpublish and token changes need a user's token)",
                action.verb()
            )));
        }
        let trusted = self.trusted.as_ref().ok_or_else(|| {
            AuthError::Unauthenticated("trusted publishing is not enabled on this registry".into())
        })?;
        let configuration = trusted
            .configuration(package, &grant.configuration_id)
            .await
            .map_err(|e| {
                AuthError::Unavailable(format!(
                    "the token store is unavailable ({e}); retry shortly"
                ))
            })?;
        match configuration.map(|c| c.admits(run)) {
            Some(Ok(())) => {}
            Some(Err(m)) => {
                return Err(AuthError::Forbidden(format!(
                    "the trusted publisher this token was issued by no longer admits this run: {m}"
                )));
            }
            None => {
                return Err(AuthError::Unauthenticated(format!(
                    "the trusted publisher this token was issued by (id {}) was revoked",
                    grant.configuration_id
                )));
            }
        }
        if !repo.to_string().eq_ignore_ascii_case(&run.repository) {
            return Err(AuthError::Forbidden(format!(
                "{package} cannot be published from repository {}: it belongs to another repository",
                run.repository
            )));
        }
        // The run's claims spell the repository as GitHub does.
        let canonical = run
            .repository
            .split_once('/')
            .and_then(|(o, r)| RepoRef::new(o, r))
            .unwrap_or_else(|| repo.clone());
        Ok(RepoAccess {
            repo: canonical,
            private: true,
            role: Role::Push,
            token_limit: None,
            owner_id: run.repository_owner_id.parse().ok(),
        })
    }

    /// The store holding token records and trust configurations.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// Forgets what this instance keeps of `login`'s registry tokens: one was just revoked.
    pub(crate) fn forget_tokens(&self, login: &str) {
        self.token_records.forget(login);
    }

    /// Identifies the caller of a request; one that `writes` has its registry token's record
    /// read strongly, never from what the instance keeps.
    async fn caller(&self, headers: &HeaderMap, writes: bool) -> Result<Caller, AuthError> {
        let Some(token) = credential(headers) else {
            return Ok(Caller::anonymous());
        };
        let token = token.as_ref();
        if oidc::TrustedPublishing::is_minted_token(token) {
            return self.workflow_caller(token).await;
        }
        if tokens::looks_like_jwt(token) {
            let claims = self
                .tokens
                .verify(token)
                .map_err(|e| AuthError::Unauthenticated(format!("{e}; run npm login again")))?;
            let state = self
                .token_records
                .get(&self.kv, &claims.sub, &claims.jti, writes)
                .await
                .map_err(|e| {
                    AuthError::Unavailable(format!(
                        "the token store is unavailable ({e}); retry shortly"
                    ))
                })?
                .ok_or_else(|| {
                    AuthError::Unauthenticated(
                        "the registry token was revoked; run npm login again".into(),
                    )
                })?;
            // A token minted with another registry token lives only as long as that one.
            if !state.root_alive {
                return Err(AuthError::Unauthenticated(
                    "the registry token it was created with was revoked; run npm login again"
                        .into(),
                ));
            }
            let record = state.record;
            let github = self
                .tokens
                .unseal(&record)
                .map_err(|e| AuthError::Unauthenticated(e.to_string()))?;
            return Ok(Caller::from_registry_token(
                claims.sub,
                Secret::new(github),
                RegistryTokenUse {
                    scope: claims.scope,
                    lineage: tokens::Lineage {
                        root: record.parent.clone().unwrap_or(record.jti.clone()),
                        expires: record.expires,
                    },
                },
            ));
        }
        let owner = self.token_owner(token).await?;
        Ok(Caller::from_github_token(owner, Secret::new(token)))
    }

    /// The GitHub user a token belongs to; an installation token has none (`npm login`).
    pub(crate) async fn user(&self, token: &str) -> Result<GithubUser, AuthError> {
        match self.token_owner(token).await? {
            TokenOwner::User(user) => Ok(user),
            TokenOwner::Installation => Err(AuthError::Unauthenticated(
                "a GitHub App installation token (such as a workflow's GITHUB_TOKEN) acts for no user and cannot log in: put it in .npmrc as it is to install packages; publish from CI with trusted publishing (npm trust github)".into(),
            )),
        }
    }

    /// Whom a token acts for (cached by the token's hash, and so is a refusal). An
    /// installation token is recognised by GitHub's 403 to `GET /user`, and cached as such
    /// with the same fresh and stale rules as a user.
    pub(crate) async fn token_owner(&self, token: &str) -> Result<TokenOwner, AuthError> {
        let key = KvKey::token_owner(token);
        let now = Utc::now();
        let recently_refused = self
            .refused
            .lock()
            .ok()
            .and_then(|r| r.get(key.id()).copied())
            .is_some_and(|at| now - at < self.settings.fresh_for);
        if recently_refused {
            return Err(unavailable(GithubError::BadCredentials));
        }
        let api = self.api.clone();
        // Its own key: answers cached under `user/` before installations were recognised
        // hold a bare user, and expire on their own.
        let answer = self
            .cache
            .cached(&key, Freshness::Cached, |etag| async move {
                match api.user(token, etag.as_deref()).await {
                    Ok(Fetched::Fresh(user, etag)) => {
                        Ok(Fetched::Fresh(TokenOwner::User(user), etag))
                    }
                    Ok(Fetched::NotModified) => Ok(Fetched::NotModified),
                    Err(GithubError::NotAUser(m)) if is_installation_refusal(token, &m) => {
                        Ok(Fetched::Fresh(TokenOwner::Installation, None))
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        if let Err(GithubError::BadCredentials) = &answer
            && let Ok(mut refused) = self.refused.lock()
        {
            if refused.len() >= MEMORY_ENTRIES {
                refused.clear();
            }
            refused.insert(key.id().to_string(), now);
        }
        answer.map_err(unavailable)
    }

    /// The caller's access to a repository.
    async fn access(
        &self,
        caller: &Caller,
        repo: &RepoRef,
        freshness: Freshness,
    ) -> Result<RepoAccess, AuthError> {
        let token = caller.github_token();
        if let (Identity::Installation, Some(token)) = (&caller.identity, token) {
            let key = KvKey::installation_repo(token, repo);
            let api = self.api.clone();
            return self
                .cache
                .cached(&key, freshness, |etag| async move {
                    api.installation_repo(token, repo, etag.as_deref()).await
                })
                .await
                .map_err(unavailable);
        }
        let key = KvKey::repo_access(token, repo);
        let api = self.api.clone();
        self.cache
            .cached(&key, freshness, |etag| async move {
                api.repo(token, repo, etag.as_deref()).await
            })
            .await
            .map_err(unavailable)
    }
}

impl GithubAuth {
    /// Whether packages of public repositories may be read without a token.
    pub fn public_read(&self) -> bool {
        self.settings.public_read
    }

    /// What an installation caller's token reaches (`GET /installation/repositories`, cached
    /// as reads are); `None` for other callers, or when GitHub cannot say: the answer it feeds
    /// is a refusal, which must not turn into an outage.
    pub(crate) async fn reach(&self, caller: &Caller) -> Option<InstallationReach> {
        let (Identity::Installation, Some(token)) = (&caller.identity, caller.github_token())
        else {
            return None;
        };
        let api = self.api.clone();
        self.cache
            .cached(
                &KvKey::installation_repositories(token),
                Freshness::Cached,
                |etag| async move { api.installation_repositories(token, etag.as_deref()).await },
            )
            .await
            .inspect_err(|e| {
                tracing::warn!(error = %e, "could not list an installation token's repositories");
            })
            .ok()
    }
}

impl Authorizer {
    /// Identifies the caller of a request to a route that `writes` or not (open mode: everyone
    /// is anonymous).
    pub(crate) async fn caller(
        &self,
        headers: &HeaderMap,
        writes: bool,
    ) -> Result<Caller, AuthError> {
        match self {
            Authorizer::Open => Ok(Caller::anonymous()),
            // Boxed: open mode's requests need not carry (and copy) GitHub's large future.
            Authorizer::Github(g) => Box::pin(g.caller(headers, writes)).await,
        }
    }

    /// Decides whether `caller` may do `action` to `package`, which belongs to `repo`. Returns
    /// the caller's access (GitHub mode) for callers that need the canonical repository name.
    pub(crate) async fn check(
        &self,
        caller: &Caller,
        package: &PackageName,
        repo: &RepoRef,
        action: Action,
    ) -> Result<Option<RepoAccess>, AuthError> {
        let Authorizer::Github(g) = self else {
            return Ok(None);
        };
        g.settings
            .scopes
            .stores(package)
            .map_err(|e| AuthError::Forbidden(e.to_string()))?;
        if let Some(grant) = caller.publish_grant() {
            return g
                .check_workflow(grant, package, repo, action)
                .await
                .map(Some);
        }
        if let (true, Action::Write | Action::Publish | Action::Admin) =
            (caller.is_read_only_token(), action)
        {
            return Err(AuthError::Forbidden(
                "this registry token is read-only; create a publish token with npm login".into(),
            ));
        }
        let freshness = if action == Action::Read {
            Freshness::Cached
        } else {
            Freshness::Revalidate
        };
        let access = g.access(caller, repo, freshness).await?;
        decide(
            &caller.identity,
            &access,
            action,
            g.settings.public_read,
            package,
        )?;
        Ok(Some(access))
    }

    /// Whether `repo` is public, as GitHub shows it to anyone (cached like reads).
    pub(crate) async fn repository_is_public(&self, repo: &RepoRef) -> Result<bool, AuthError> {
        let Authorizer::Github(g) = self else {
            return Ok(false);
        };
        let access = g
            .access(&Caller::anonymous(), repo, Freshness::Cached)
            .await?;
        Ok(!access.private)
    }

    /// GitHub mode's state, if in GitHub mode.
    pub fn github(&self) -> Option<&GithubAuth> {
        match self {
            Authorizer::Open => None,
            Authorizer::Github(g) => Some(g),
        }
    }
}
