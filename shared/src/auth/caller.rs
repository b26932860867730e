//! Who is calling: the identity a request's credential names, and the credential itself.

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::github::{GithubUser, TokenKind};
use super::{oidc, tokens};
use crate::domain::audit::AuditActor;
pub use crate::domain::audit::CredentialKind;
pub use crate::domain::trust::WorkflowRun;
pub use crate::secret::Secret;

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
    pub(crate) fn audit_actor(&self) -> AuditActor {
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
    pub(crate) fn username(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::User(u) => u,
            Identity::Installation => "github-app-installation",
            Identity::Workflow(run) => &run.repository,
        }
    }
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
    pub(crate) fn anonymous() -> Self {
        Self {
            identity: Identity::Anonymous,
            credential: Credential::None,
        }
    }

    /// A workflow run holding a token the trusted-publishing exchange minted for it.
    pub(super) fn from_grant(grant: oidc::PublishGrant) -> Self {
        Self {
            identity: Identity::Workflow(Box::new(grant.run.clone())),
            credential: Credential::TrustedPublishing(Box::new(grant)),
        }
    }

    /// `login` holding a registry token, which seals their GitHub token `github`.
    pub(super) fn from_registry_token(
        login: String,
        github: Secret,
        token: RegistryTokenUse,
    ) -> Self {
        Self {
            identity: Identity::User(login),
            credential: Credential::Registry { github, token },
        }
    }

    /// Whom GitHub says `token` acts for, holding it.
    pub(super) fn from_github_token(owner: TokenOwner, token: Secret) -> Self {
        Self {
            identity: match owner {
                TokenOwner::User(user) => Identity::User(user.login),
                TokenOwner::Installation => Identity::Installation,
            },
            credential: Credential::Github(token),
        }
    }

    /// The trusted-publishing grant the request came with, if any.
    pub(crate) fn publish_grant(&self) -> Option<&oidc::PublishGrant> {
        match &self.credential {
            Credential::TrustedPublishing(grant) => Some(grant),
            _ => None,
        }
    }

    /// The GitHub token behind the request (sent directly, or sealed behind a registry token).
    pub(crate) fn github_token(&self) -> Option<&str> {
        match &self.credential {
            Credential::Github(token) | Credential::Registry { github: token, .. } => {
                Some(token.expose())
            }
            Credential::None | Credential::TrustedPublishing(_) => None,
        }
    }

    /// Whether the request came with a read-only registry token (which may not manage tokens).
    pub(crate) fn is_read_only_token(&self) -> bool {
        self.registry_token()
            .is_some_and(|t| t.scope.is_read_only())
    }

    /// The registry token the request came with, if any.
    pub(crate) fn registry_token(&self) -> Option<&RegistryTokenUse> {
        match &self.credential {
            Credential::Registry { token, .. } => Some(token),
            _ => None,
        }
    }

    /// What kind of credential the request came with.
    pub(crate) fn credential_kind(&self) -> CredentialKind {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TokenOwner {
    /// A user.
    User(GithubUser),
    /// A GitHub App installation (a `ghs_` token, such as a workflow's `GITHUB_TOKEN`).
    Installation,
}

/// Whether `headers` carry a token whose prefix marks it as an installation token: a write
/// with one is refused before GitHub is asked anything.
pub(crate) fn bears_installation_token(headers: &HeaderMap) -> bool {
    credential(headers).is_some_and(|t| TokenKind::of(&t) == TokenKind::Installation)
}

/// The token a request authenticates with, in any form a client sends one: a bearer token (npm's
/// `_authToken`), the password of `Authorization: Basic` (`login:token`: npm 1.x with
/// `always-auth`, and `_auth`), or the `AuthSession` cookie of a `POST /_session` login (npm 1.x).
pub fn credential(headers: &HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(token) = bearer(headers) {
        return Some(token.into());
    }
    if let Some(token) = basic_password(headers) {
        return Some(token.into());
    }
    session_cookie(headers).map(Into::into)
}

/// The password of `Authorization: Basic base64(login:password)`.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string()).filter(|p| !p.is_empty())
}

/// The name of the session cookie npm 1.x keeps after `POST /_session` (CouchDB's).
pub const SESSION_COOKIE: &str = "AuthSession";

/// The `AuthSession` cookie's value.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_credential_carries_what_it_is_checked_with() {
        let token = |scope| RegistryTokenUse {
            scope,
            lineage: tokens::Lineage {
                root: "r".into(),
                expires: chrono::Utc::now(),
            },
        };
        let read_only = Caller::from_registry_token(
            "alice".into(),
            Secret::new("ghp_a"),
            token(tokens::TokenScope::ReadOnly),
        );
        assert_eq!(read_only.identity, Identity::User("alice".into()));
        assert_eq!(read_only.github_token(), Some("ghp_a"));
        assert!(read_only.is_read_only_token() && read_only.publish_grant().is_none());
        assert_eq!(
            read_only.credential_kind(),
            CredentialKind::RegistryReadOnlyToken
        );
        let publish = Caller::from_registry_token(
            "alice".into(),
            Secret::new("ghp_a"),
            token(tokens::TokenScope::Publish),
        );
        assert!(!publish.is_read_only_token());
        assert_eq!(publish.credential_kind(), CredentialKind::RegistryToken);
        let user = GithubUser {
            login: "bob".into(),
            id: 2,
        };
        let github = Caller::from_github_token(TokenOwner::User(user), Secret::new("ghp_b"));
        assert_eq!(
            (github.identity.clone(), github.credential_kind()),
            (Identity::User("bob".into()), CredentialKind::GithubToken)
        );
        assert!(github.registry_token().is_none() && !github.is_read_only_token());
        let app = Caller::from_github_token(TokenOwner::Installation, Secret::new("ghs_c"));
        assert_eq!(
            (app.identity.clone(), app.credential_kind()),
            (
                Identity::Installation,
                CredentialKind::GithubInstallationToken
            )
        );
        assert_eq!(app.github_token(), Some("ghs_c"));
        let anonymous = Caller::anonymous();
        assert_eq!(anonymous.github_token(), None);
        assert_eq!(anonymous.credential_kind(), CredentialKind::None);
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
        assert_eq!(credential(&h).as_deref(), Some("pass"), "Basic user:pass");
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=b; AuthSession=tok123; c=d".parse().unwrap());
        assert_eq!(credential(&h).as_deref(), Some("tok123"));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(credential(&h).as_deref(), Some("abc"), "the header wins");
    }
}
