//! GitHub's answers as the registry reads them: one `Deserialize` struct per endpoint, with only
//! the fields it uses (GitHub's many others are ignored). A field that is absent or null reads
//! as GitHub documents its absence; a body that is not JSON, or JSON of another shape, is an
//! answer GitHub did not give (`decode`), except that a user answer without a login names
//! nobody (`user_of`).

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{GithubError, GithubUser, InstallationReach, RepoAccess, Role};
use crate::domain::RepoRef;

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
pub(super) struct RepoAnswer {
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
pub(super) struct RepositoriesAnswer {
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
pub(super) struct ErrorAnswer {
    /// GitHub's explanation.
    pub(super) message: Option<String>,
}

/// A 200 answer's body as `T`: one that does not decode is GitHub failing, not an answer.
pub(super) fn decode<T: DeserializeOwned>(body: &str) -> Result<T, GithubError> {
    serde_json::from_str(body).map_err(|e| GithubError::Unavailable(e.to_string()))
}

/// The user in a 200 to `GET /user`. JSON that names nobody (no `login`) is refused as a bad
/// token; a body that is not JSON at all is GitHub failing.
pub(super) fn user_of(body: &str) -> Result<GithubUser, GithubError> {
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
    /// The caller's own role (their token may do less): none when GitHub lists no permissions.
    pub(super) fn user_role(&self) -> Role {
        self.permissions
            .as_ref()
            .map_or(Role::None, Permissions::role)
    }

    /// Whether the repository is private; an answer that does not say counts as private.
    pub(super) fn private(&self) -> bool {
        self.private.unwrap_or(true)
    }

    /// The owner's numeric id, if the answer carries it.
    pub(super) fn owner_id(&self) -> Option<u64> {
        self.owner.as_ref().and_then(|o| o.id)
    }

    /// The canonical name: GitHub's `full_name` when it names `repo` (in any case), else `repo`
    /// as asked.
    pub(super) fn canonical(&self, repo: &RepoRef) -> RepoRef {
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
pub(super) fn installation_access(answer: Option<&RepoAnswer>, repo: &RepoRef) -> RepoAccess {
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
pub(super) fn reach_of(answer: &RepositoriesAnswer) -> InstallationReach {
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
}
