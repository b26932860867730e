//! The one rule (`decide`): what a caller whose access to a package's repository GitHub has
//! told may do to the package, and the refusals every route words alike.

use super::Identity;
use super::github::{GithubError, InstallationReach, RepoAccess, Role, TokenKind};
use crate::domain::PackageName;

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
    /// The role in the repository it needs.
    pub(super) fn needs(self) -> Role {
        match self {
            Action::Read => Role::Pull,
            Action::Write | Action::Publish => Role::Push,
            Action::Admin => Role::Admin,
        }
    }

    /// What refusals call it.
    pub(super) fn verb(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write | Action::Publish => "publish to",
            Action::Admin => "unpublish or rebind",
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

/// GitHub's message when an installation token calls an endpoint meant for users (`GET /user`).
const NOT_BY_INTEGRATION: &str = "Resource not accessible by integration";

/// Whether GitHub's 403 to `GET /user` (`message`) says that `token` is an installation token:
/// GitHub's message for integrations, or a token with the installation prefix. Another 403
/// stays a refusal: the registry does not guess what else a token might be.
pub(crate) fn is_installation_refusal(token: &str, message: &str) -> bool {
    TokenKind::of(token) == TokenKind::Installation
        || message
            .to_ascii_lowercase()
            .contains(&NOT_BY_INTEGRATION.to_ascii_lowercase())
}

/// The refusal of any write by an installation token, which only reads.
pub(crate) fn installation_write_refused() -> AuthError {
    AuthError::Forbidden(
        "a GitHub App installation token (such as a workflow's GITHUB_TOKEN) only reads packages: it cannot publish, change, unpublish or deprecate them, nor manage tokens. Publish from CI with trusted publishing: npm trust github <package> --repo <owner/repo> --file <workflow.yml>, then npm publish in that workflow (permissions: id-token: write) with no token".into(),
    )
}

/// What an installation caller is told for a package that is missing or that it cannot read
/// (the same answer for both): the name is not found, and what the token does reach.
pub(crate) fn not_reached(package: &PackageName, reach: Option<&InstallationReach>) -> String {
    let reaches = match reach {
        Some(r) => format!("it reaches {}", r.describe()),
        None => "GitHub did not list the repositories it reaches".into(),
    };
    format!(
        "package '{package}' not found. The token in .npmrc is a GitHub App installation token (such as a workflow's GITHUB_TOKEN); it reads packages bound to repositories it reaches and to public ones, and {reaches}. A workflow's GITHUB_TOKEN reaches only its own repository: to install packages of other private repositories, use an installation token that includes them (for example from actions/create-github-app-token)"
    )
}

/// The one rule: may `identity`, whose access to the package's repository is `access`, do
/// `action` to `package`? Pure, so every combination is unit-tested.
pub(crate) fn decide(
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

/// What a caller is told when GitHub gave no answer.
pub(super) fn unavailable(e: GithubError) -> AuthError {
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;
    use crate::auth::bears_installation_token;
    use crate::auth::github::TokenLimit;
    use crate::domain::RepoRef;

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
            token_limit: Some(TokenLimit {
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
            token_limit: Some(TokenLimit {
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
}
