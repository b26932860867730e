//! GitHub, as the registry asks it: who owns a token, and what may that user do in a repository.
//! Behind a trait so the rules are tested without a network; the real client is octocrab.

mod answers;
mod client;
pub mod oauth;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub(crate) use client::OctocrabGithub;

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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) const NAMED: usize = 10;

    /// "acme/a, acme/b and 3 more", or "no repository".
    pub(crate) fn describe(&self) -> String {
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
pub(crate) fn token_ceiling(
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
}
