//! Who is calling and whether they may act: one decision point for every route group and both
//! deployment shapes.
//!
//! In GitHub mode a scoped package `@owner/name` belongs to a GitHub repository (bound at first
//! publish); reading needs `pull` on it (or nothing, for a public repository, if the operator
//! allows anonymous reads), writing needs `push`, unpublishing and rebinding need `admin`.

pub mod github;
pub mod kv;
pub mod oidc;
pub mod scopes;
pub mod tokens;
pub mod trust;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::github::{
    Fetched, GithubApi, GithubError, GithubUser, InstallationReach, RepoAccess, Role, TokenKind,
};
use self::kv::{Kv, KvKey};
use self::tokens::TokenKeys;
use crate::domain::audit::AuditActor;
pub use crate::domain::audit::CredentialKind;
pub use crate::domain::trust::WorkflowRun;
use crate::domain::{PackageName, RepoRef};
pub use crate::secret::Secret;
use crate::storage::KvStore;

/// What a request wants to do to a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// View or install.
    Read,
    /// Change dist-tags, deprecate.
    Write,
    /// Publish a new version (and the dist-tags its document sets): what a trusted-publishing
    /// token may do, unlike the other writes.
    Publish,
    /// Unpublish, rebind the repository.
    Admin,
}

impl Action {
    fn needs(self) -> Role {
        match self {
            Action::Read => Role::Pull,
            Action::Write | Action::Publish => Role::Push,
            Action::Admin => Role::Admin,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write | Action::Publish => "publish to",
            Action::Admin => "unpublish or rebind",
        }
    }
}

/// The caller, as far as the registry knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials (or open mode).
    Anonymous,
    /// A GitHub login.
    User(String),
    /// A GitHub App installation token (`ghs_`, which is also what a workflow's `GITHUB_TOKEN`
    /// is): it acts for no user, may read what the installation reaches, and never writes.
    Installation,
    /// A GitHub Actions run holding a trusted-publishing token, as its verified ID token
    /// described it at the exchange: it may publish the one package the token was minted for.
    Workflow(Box<WorkflowRun>),
}

impl Identity {
    /// Who the audit log says made a request.
    pub fn audit_actor(&self) -> AuditActor {
        match self {
            Identity::Anonymous => AuditActor::Anonymous,
            Identity::User(login) => AuditActor::User {
                login: login.clone(),
            },
            Identity::Installation => AuditActor::Installation,
            Identity::Workflow(run) => AuditActor::Workflow((**run).clone()),
        }
    }

    /// The user name clients are told (`npm whoami`).
    pub fn username(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::User(u) => u,
            Identity::Installation => "github-app-installation",
            Identity::Workflow(run) => &run.repository,
        }
    }
}

/// An authorisation refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Credentials are missing or invalid: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but lacks a permission: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The caller may not even read the package: answered exactly as a missing name is.
    #[error("not found")]
    Hidden,
    /// GitHub (or the store) could not answer and nothing usable is cached: 503.
    #[error("{0}")]
    Unavailable(String),
}

/// The resolved caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who they are.
    pub identity: Identity,
    /// What they proved it with.
    credential: Credential,
}

/// The credential a request came with: each kind carries exactly what it is checked with.
#[derive(Debug, Clone)]
enum Credential {
    /// None (or open mode, where none is checked).
    None,
    /// A GitHub token, sent as it is.
    Github(Secret),
    /// A registry token, and the GitHub token sealed behind it.
    Registry {
        /// The sealed GitHub token permissions are checked with.
        github: Secret,
        /// The registry token.
        token: RegistryTokenUse,
    },
    /// A trusted-publishing token, and what it may do.
    TrustedPublishing(Box<oidc::PublishGrant>),
}

/// What a request's registry token is, as far as minting another from it goes.
#[derive(Debug, Clone)]
pub struct RegistryTokenUse {
    /// What it may do.
    pub scope: tokens::TokenScope,
    /// The token a new one minted with it depends on: this one's root (or itself).
    pub lineage: tokens::Lineage,
}

impl Caller {
    /// Nobody in particular.
    pub fn anonymous() -> Self {
        Self {
            identity: Identity::Anonymous,
            credential: Credential::None,
        }
    }

    /// The trusted-publishing grant the request came with, if any.
    pub fn publish_grant(&self) -> Option<&oidc::PublishGrant> {
        match &self.credential {
            Credential::TrustedPublishing(grant) => Some(grant),
            _ => None,
        }
    }

    /// The GitHub token behind the request (sent directly, or sealed behind a registry token).
    pub fn github_token(&self) -> Option<&str> {
        match &self.credential {
            Credential::Github(token) | Credential::Registry { github: token, .. } => {
                Some(token.expose())
            }
            Credential::None | Credential::TrustedPublishing(_) => None,
        }
    }

    /// Whether the request came with a read-only registry token (which may not manage tokens).
    pub fn is_read_only_token(&self) -> bool {
        self.registry_token()
            .is_some_and(|t| t.scope.is_read_only())
    }

    /// The registry token the request came with, if any.
    pub fn registry_token(&self) -> Option<&RegistryTokenUse> {
        match &self.credential {
            Credential::Registry { token, .. } => Some(token),
            _ => None,
        }
    }

    /// What kind of credential the request came with.
    pub fn credential_kind(&self) -> CredentialKind {
        match (&self.identity, self.registry_token()) {
            (Identity::Anonymous, _) => CredentialKind::None,
            (Identity::Installation, _) => CredentialKind::GithubInstallationToken,
            (Identity::Workflow(_), _) => CredentialKind::TrustedPublishing,
            (Identity::User(_), Some(t)) if t.scope.is_read_only() => {
                CredentialKind::RegistryReadOnlyToken
            }
            (Identity::User(_), Some(_)) => CredentialKind::RegistryToken,
            (Identity::User(_), None) => CredentialKind::GithubToken,
        }
    }
}

/// Whom a GitHub token acts for, as `GET /user` told (cached by the token's hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenOwner {
    /// A user.
    User(GithubUser),
    /// A GitHub App installation (a `ghs_` token, such as a workflow's `GITHUB_TOKEN`).
    Installation,
}

/// GitHub's message when an installation token calls an endpoint meant for users (`GET /user`).
const NOT_BY_INTEGRATION: &str = "Resource not accessible by integration";

/// Whether GitHub's 403 to `GET /user` (`message`) says that `token` is an installation token:
/// GitHub's message for integrations, or a token with the installation prefix. Another 403
/// stays a refusal: the registry does not guess what else a token might be.
pub fn is_installation_refusal(token: &str, message: &str) -> bool {
    TokenKind::of(token) == TokenKind::Installation
        || message
            .to_ascii_lowercase()
            .contains(&NOT_BY_INTEGRATION.to_ascii_lowercase())
}

/// The refusal of any write by an installation token, which only reads.
pub fn installation_write_refused() -> AuthError {
    AuthError::Forbidden(
        "a GitHub App installation token (such as a workflow's GITHUB_TOKEN) only reads packages: it cannot publish, change, unpublish or deprecate them, nor manage tokens. Publish from CI with trusted publishing: npm trust github <package> --repo <owner/repo> --file <workflow.yml>, then npm publish in that workflow (permissions: id-token: write) with no token".into(),
    )
}

/// Whether `headers` carry a token whose prefix marks it as an installation token: a write
/// with one is refused before GitHub is asked anything.
pub fn bears_installation_token(headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| TokenKind::of(t) == TokenKind::Installation)
}

/// What an installation caller is told for a package that is missing or that it cannot read
/// (the same answer for both): the name is not found, and what the token does reach.
pub fn not_reached(package: &PackageName, reach: Option<&InstallationReach>) -> String {
    let reaches = match reach {
        Some(r) => format!("it reaches {}", r.describe()),
        None => "GitHub did not list the repositories it reaches".into(),
    };
    format!(
        "package '{package}' not found. The token in .npmrc is a GitHub App installation token (such as a workflow's GITHUB_TOKEN); it reads packages bound to repositories it reaches and to public ones, and {reaches}. A workflow's GITHUB_TOKEN reaches only its own repository: to install packages of other private repositories, use an installation token that includes them (for example from actions/create-github-app-token)"
    )
}

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
    memory: Mutex<HashMap<String, CacheEntry>>,
    /// Trusted publishing (the OIDC exchange), when configured.
    trusted: Option<oidc::TrustedPublishing>,
    /// Hashes of tokens GitHub refused lately, so a repeated bad token costs no GitHub call.
    refused: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// A cached GitHub answer.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    value: serde_json::Value,
    etag: Option<String>,
    fetched: DateTime<Utc>,
}

const MEMORY_ENTRIES: usize = 10_000;

/// How fresh an answer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// Reads: a recent cached answer will do, and a stale one if GitHub is down.
    Cached,
    /// Writes: always ask GitHub (an ETag revalidation costs no rate limit); fail closed.
    Revalidate,
}

/// The bearer token of a request, if any (`Authorization: Bearer …`, as npm sends `_authToken`).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The one rule: may `identity`, whose access to the package's repository is `access`, do
/// `action` to `package`? Pure, so every combination is unit-tested.
pub fn decide(
    identity: &Identity,
    access: &RepoAccess,
    action: Action,
    public_read: bool,
    package: &PackageName,
) -> Result<(), AuthError> {
    if access.role >= action.needs() {
        return Ok(());
    }
    let readable = access.role >= Role::Pull || (public_read && !access.private);
    if action == Action::Read && readable {
        return Ok(());
    }
    // Whoever may not read the package learns nothing about it, its repository included.
    if !readable {
        return Err(AuthError::Hidden);
    }
    match identity {
        Identity::Anonymous => Err(AuthError::Unauthenticated(format!(
            "authentication required to {} {package}: put a GitHub token with {} permission on repository {} in .npmrc, or run npm login",
            action.verb(),
            action.needs().as_str(),
            access.repo
        ))),
        Identity::Installation => Err(AuthError::Forbidden(format!(
            "a GitHub App installation token (such as a workflow's GITHUB_TOKEN) may only read; it cannot {} {package}: publish from CI with trusted publishing (npm trust github)",
            action.verb()
        ))),
        Identity::Workflow(run) => Err(AuthError::Forbidden(format!(
            "the trusted-publishing token of workflow {} cannot {} {package}",
            run.workflow_ref,
            action.verb()
        ))),
        Identity::User(login) => Err(AuthError::Forbidden(match &access.token_limit {
            // The user may, the token they sent may not (`github::token_ceiling`): say so.
            Some(limit) if limit.user_role >= action.needs() => format!(
                "{login} has {} permission on GitHub repository {}, but the token used cannot {} {package}: {}",
                limit.user_role.as_str(),
                access.repo,
                action.verb(),
                limit.reason
            ),
            _ => format!(
                "{login} needs {} permission on GitHub repository {} to {} {package} (has {})",
                action.needs().as_str(),
                access.repo,
                action.verb(),
                access.role.as_str()
            ),
        })),
    }
}

fn unavailable(e: GithubError) -> AuthError {
    match e {
        GithubError::BadCredentials => AuthError::Unauthenticated(
            "GitHub does not accept the token in .npmrc (bad credentials); use a valid GitHub token or run npm login".into(),
        ),
        GithubError::NotAUser(m) => AuthError::Unauthenticated(format!(
            "the token in .npmrc does not act for a GitHub user (GitHub: {m}); use a personal access token or run npm login"
        )),
        GithubError::RateLimited(m) => AuthError::Unavailable(format!(
            "GitHub's API rate limit for this token is exhausted ({m}); the registry cannot check permissions now, retry later"
        )),
        GithubError::Unavailable(m) => AuthError::Unavailable(format!(
            "GitHub cannot be reached to check permissions ({m}); retry shortly"
        )),
    }
}

impl GithubAuth {
    /// GitHub mode over `api`, caching in memory and in `kv`.
    pub fn new(
        api: Arc<dyn GithubApi>,
        kv: Arc<dyn KvStore>,
        tokens: TokenKeys,
        settings: GithubSettings,
    ) -> Self {
        Self {
            api,
            kv: Kv::new(kv),
            tokens,
            settings,
            memory: Mutex::new(HashMap::new()),
            trusted: None,
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// Turns on trusted publishing: ID tokens verified by `verifier` may be exchanged.
    pub fn with_trusted_publishing(mut self, verifier: oidc::IdTokenVerifier) -> Self {
        self.trusted = Some(oidc::TrustedPublishing::new(verifier, self.kv.clone()));
        self
    }

    /// Trusted publishing, if turned on.
    pub fn trusted_publishing(&self) -> Option<&oidc::TrustedPublishing> {
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
        Ok(Caller {
            identity: Identity::Workflow(Box::new(grant.run.clone())),
            credential: Credential::TrustedPublishing(Box::new(grant)),
        })
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

    /// The settings.
    pub fn settings(&self) -> &GithubSettings {
        &self.settings
    }

    /// The store holding token records and trust configurations.
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    async fn cache_get(&self, key: &KvKey) -> Option<CacheEntry> {
        if let Some(e) = self
            .memory
            .lock()
            .ok()
            .and_then(|m| m.get(key.id()).cloned())
        {
            return Some(e);
        }
        let entry: CacheEntry = self.kv.get_json(key).await.ok()??;
        self.remember(key, &entry);
        Some(entry)
    }

    fn remember(&self, key: &KvKey, entry: &CacheEntry) {
        if let Ok(mut m) = self.memory.lock() {
            if m.len() >= MEMORY_ENTRIES {
                m.clear();
            }
            m.insert(key.id().to_string(), entry.clone());
        }
    }

    async fn cache_put(&self, key: &KvKey, entry: &CacheEntry) {
        self.remember(key, entry);
        let expires = entry.fetched + self.settings.stale_for;
        if let Err(e) = self.kv.put_json(key, entry, Some(expires)).await {
            tracing::warn!(error = %e, "could not store a GitHub answer in the cache");
        }
    }

    /// A cached GitHub answer under `key` (which holds no secret: `KvKey` hashes tokens),
    /// asking GitHub as `freshness` requires, with the cached ETag so an unchanged answer costs
    /// no rate limit.
    async fn cached<T, F, Fut>(
        &self,
        key: &KvKey,
        freshness: Freshness,
        fetch: F,
    ) -> Result<T, GithubError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Fetched<T>, GithubError>>,
    {
        let now = Utc::now();
        let cached = self.cache_get(key).await;
        if let (Some(entry), Freshness::Cached) = (&cached, freshness)
            && now - entry.fetched < self.settings.fresh_for
            && let Ok(value) = serde_json::from_value(entry.value.clone())
        {
            return Ok(value);
        }
        match fetch(cached.as_ref().and_then(|e| e.etag.clone())).await {
            Ok(Fetched::Fresh(value, etag)) => {
                let entry = CacheEntry {
                    value: serde_json::to_value(&value)
                        .map_err(|e| GithubError::Unavailable(e.to_string()))?,
                    etag,
                    fetched: now,
                };
                self.cache_put(key, &entry).await;
                Ok(value)
            }
            Ok(Fetched::NotModified) => {
                let mut entry = cached.ok_or_else(|| {
                    GithubError::Unavailable("304 without a cached answer".into())
                })?;
                entry.fetched = now;
                self.cache_put(key, &entry).await;
                serde_json::from_value(entry.value)
                    .map_err(|e| GithubError::Unavailable(e.to_string()))
            }
            Err(GithubError::BadCredentials) => {
                if let Ok(mut m) = self.memory.lock() {
                    m.remove(key.id());
                }
                let _ = self.kv.delete(key).await;
                Err(GithubError::BadCredentials)
            }
            Err(e) => match (cached, freshness) {
                // Stale-if-error, for reads only: writes fail closed.
                (Some(entry), Freshness::Cached)
                    if now - entry.fetched < self.settings.stale_for =>
                {
                    tracing::warn!(error = %e, "GitHub unavailable; serving a cached permission");
                    serde_json::from_value(entry.value).map_err(|_| e)
                }
                _ => Err(e),
            },
        }
    }

    /// Identifies the caller of a request.
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let Some(token) = bearer(headers) else {
            return Ok(Caller::anonymous());
        };
        if oidc::TrustedPublishing::is_minted_token(token) {
            return self.workflow_caller(token).await;
        }
        if tokens::looks_like_jwt(token) {
            let claims = self
                .tokens
                .verify(token)
                .map_err(|e| AuthError::Unauthenticated(format!("{e}; run npm login again")))?;
            let record = tokens::record(&self.kv, &claims.sub, &claims.jti)
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
            if let Some(root) = &record.parent {
                let root_alive =
                    tokens::exists(&self.kv, &claims.sub, root)
                        .await
                        .map_err(|e| {
                            AuthError::Unavailable(format!(
                                "the token store is unavailable ({e}); retry shortly"
                            ))
                        })?;
                if !root_alive {
                    return Err(AuthError::Unauthenticated(
                        "the registry token it was created with was revoked; run npm login again"
                            .into(),
                    ));
                }
            }
            let github = self
                .tokens
                .unseal(&record)
                .map_err(|e| AuthError::Unauthenticated(e.to_string()))?;
            return Ok(Caller {
                identity: Identity::User(claims.sub),
                credential: Credential::Registry {
                    github: Secret::new(github),
                    token: RegistryTokenUse {
                        scope: claims.scope,
                        lineage: tokens::Lineage {
                            root: record.parent.clone().unwrap_or(record.jti.clone()),
                            expires: record.expires,
                        },
                    },
                },
            });
        }
        let identity = match self.token_owner(token).await? {
            TokenOwner::User(user) => Identity::User(user.login),
            TokenOwner::Installation => Identity::Installation,
        };
        Ok(Caller {
            identity,
            credential: Credential::Github(Secret::new(token)),
        })
    }

    /// The GitHub user a token belongs to; an installation token has none (`npm login`).
    pub async fn user(&self, token: &str) -> Result<GithubUser, AuthError> {
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
    pub async fn token_owner(&self, token: &str) -> Result<TokenOwner, AuthError> {
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
                .cached(&key, freshness, |etag| async move {
                    api.installation_repo(token, repo, etag.as_deref()).await
                })
                .await
                .map_err(unavailable);
        }
        let key = KvKey::repo_access(token, repo);
        let api = self.api.clone();
        self.cached(&key, freshness, |etag| async move {
            api.repo(token, repo, etag.as_deref()).await
        })
        .await
        .map_err(unavailable)
    }
}

impl GithubAuth {
    /// What an installation caller's token reaches (`GET /installation/repositories`, cached
    /// as reads are); `None` for other callers, or when GitHub cannot say: the answer it feeds
    /// is a refusal, which must not turn into an outage.
    pub async fn reach(&self, caller: &Caller) -> Option<InstallationReach> {
        let (Identity::Installation, Some(token)) = (&caller.identity, caller.github_token())
        else {
            return None;
        };
        let api = self.api.clone();
        self.cached(
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
    /// Identifies the caller of a request (open mode: everyone is anonymous).
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        match self {
            Authorizer::Open => Ok(Caller::anonymous()),
            Authorizer::Github(g) => g.caller(headers).await,
        }
    }

    /// Decides whether `caller` may do `action` to `package`, which belongs to `repo`. Returns
    /// the caller's access (GitHub mode) for callers that need the canonical repository name.
    pub async fn check(
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
    pub async fn repository_is_public(&self, repo: &RepoRef) -> Result<bool, AuthError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn access(role: Role, private: bool) -> RepoAccess {
        RepoAccess {
            repo: RepoRef::new("acme", "widgets").unwrap(),
            private,
            role,
            token_limit: None,
            owner_id: Some(1),
        }
    }

    #[test]
    fn the_rules() {
        let pkg = PackageName::parse("@acme/widgets").unwrap();
        let alice = Identity::User("alice".into());
        let anon = Identity::Anonymous;
        let cases = [
            (&alice, Role::Pull, true, Action::Read, false, true),
            (&alice, Role::None, true, Action::Read, false, false),
            (&alice, Role::Pull, true, Action::Write, false, false),
            (&alice, Role::Push, true, Action::Write, false, true),
            (&alice, Role::Maintain, true, Action::Admin, false, false),
            (&alice, Role::Admin, true, Action::Admin, false, true),
            (&anon, Role::None, false, Action::Read, true, true),
            (&anon, Role::None, false, Action::Read, false, false),
            (&anon, Role::None, true, Action::Read, true, false),
            (&anon, Role::None, false, Action::Write, true, false),
        ];
        for (who, role, private, action, public_read, allowed) in cases {
            let got = decide(who, &access(role, private), action, public_read, &pkg);
            assert_eq!(
                got.is_ok(),
                allowed,
                "{who:?} {role:?} private={private} {action:?} public_read={public_read}: {got:?}"
            );
        }
        let denied = decide(
            &alice,
            &access(Role::Pull, true),
            Action::Write,
            false,
            &pkg,
        )
        .unwrap_err();
        assert_eq!(
            denied,
            AuthError::Forbidden("alice needs push permission on GitHub repository acme/widgets to publish to @acme/widgets (has pull)".into())
        );
        // Nothing about a package the caller cannot read, not even its repository.
        for (who, role) in [(&anon, Role::None), (&alice, Role::None)] {
            for action in [Action::Read, Action::Write, Action::Admin] {
                assert_eq!(
                    decide(who, &access(role, true), action, true, &pkg),
                    Err(AuthError::Hidden)
                );
            }
        }
        // Anonymous readers of a public repository's package are asked to sign in to write.
        assert!(matches!(
            decide(&anon, &access(Role::None, false), Action::Write, true, &pkg),
            Err(AuthError::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_token_weaker_than_its_user_is_refused_for_what_it_lacks() {
        let pkg = PackageName::parse("@acme/widgets").unwrap();
        let alice = Identity::User("alice".into());
        let limited = RepoAccess {
            token_limit: Some(github::TokenLimit {
                user_role: Role::Admin,
                reason: "it is a fine-grained personal access token".into(),
            }),
            ..access(Role::Pull, true)
        };
        assert!(decide(&alice, &limited, Action::Read, false, &pkg).is_ok());
        assert_eq!(
            decide(&alice, &limited, Action::Write, false, &pkg),
            Err(AuthError::Forbidden("alice has admin permission on GitHub repository acme/widgets, but the token used cannot publish to @acme/widgets: it is a fine-grained personal access token".into()))
        );
        // Lacking the role too, the role is what to fix first.
        let weak_user = RepoAccess {
            token_limit: Some(github::TokenLimit {
                user_role: Role::Push,
                reason: "x".into(),
            }),
            ..access(Role::Pull, true)
        };
        assert!(matches!(
            decide(&alice, &weak_user, Action::Admin, false, &pkg),
            Err(AuthError::Forbidden(m)) if m.starts_with("alice needs admin permission")
        ));
    }

    #[test]
    fn installation_tokens_are_recognised_by_githubs_refusal_or_their_prefix() {
        let integration = "Resource not accessible by integration";
        assert!(is_installation_refusal("ghs_abc", integration));
        assert!(is_installation_refusal("ghs_abc", "anything GitHub says"));
        // An unprefixed token is an installation only if GitHub says so.
        assert!(is_installation_refusal("0123abcd", integration));
        assert!(is_installation_refusal(
            "0123abcd",
            "resource NOT accessible by integration"
        ));
        assert!(!is_installation_refusal("ghp_abc", "Forbidden"));
        assert!(!is_installation_refusal(
            "github_pat_x",
            "Resource not accessible by personal access token"
        ));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer ghs_abc".parse().unwrap());
        assert!(bears_installation_token(&h));
        h.insert("authorization", "Bearer ghp_abc".parse().unwrap());
        assert!(!bears_installation_token(&h));
    }

    #[test]
    fn installations_read_what_they_reach_and_never_write() {
        let pkg = PackageName::parse("@acme/widgets").unwrap();
        let app = Identity::Installation;
        assert!(decide(&app, &access(Role::Pull, true), Action::Read, false, &pkg).is_ok());
        assert_eq!(
            decide(&app, &access(Role::None, true), Action::Read, false, &pkg),
            Err(AuthError::Hidden)
        );
        for action in [Action::Write, Action::Admin] {
            let refused = decide(&app, &access(Role::Pull, true), action, false, &pkg);
            assert!(
                matches!(&refused, Err(AuthError::Forbidden(m)) if m.contains("npm trust github")),
                "{refused:?}"
            );
        }
        assert!(matches!(
            installation_write_refused(),
            AuthError::Forbidden(m) if m.contains("only reads") && m.contains("npm trust github")
        ));
    }

    #[test]
    fn what_an_installation_is_told_depends_on_its_token_only() {
        let pkg = PackageName::parse("@acme/secret").unwrap();
        let reach = InstallationReach {
            total: 1,
            repositories: vec!["acme/widgets".into()],
        };
        let told = not_reached(&pkg, Some(&reach));
        assert!(
            told.starts_with("package '@acme/secret' not found.")
                && told.contains("it reaches only acme/widgets")
                && told.contains("actions/create-github-app-token"),
            "{told}"
        );
        assert!(
            not_reached(&pkg, None).contains("GitHub did not list the repositories it reaches"),
            "an unknown reach is said so, never an outage"
        );
    }

    #[test]
    fn the_audit_log_names_each_kind_of_caller() {
        assert_eq!(Identity::Anonymous.audit_actor(), AuditActor::Anonymous);
        assert_eq!(
            Identity::User("bob".into()).audit_actor(),
            AuditActor::User {
                login: "bob".into()
            }
        );
        assert_eq!(
            Identity::Installation.audit_actor(),
            AuditActor::Installation
        );
        let run = WorkflowRun {
            repository: "acme/widgets".into(),
            repository_owner_id: "1".into(),
            workflow_ref: "acme/widgets/.github/workflows/publish.yml@refs/heads/main".into(),
            environment: None,
            event_name: "push".into(),
            run_id: "7".into(),
            run_attempt: "1".into(),
            sha: "abc".into(),
            git_ref: "refs/heads/main".into(),
        };
        assert_eq!(
            Identity::Workflow(Box::new(run.clone())).audit_actor(),
            AuditActor::Workflow(run)
        );
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "token xyz".parse().unwrap());
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
