//! The GitHub repository a scoped package belongs to, read from package.json's `repository`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A GitHub repository, `owner/name`. Compared case-insensitively, as GitHub does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoRef {
    /// The owning user or organisation.
    pub owner: String,
    /// The repository name.
    pub name: String,
}

impl PartialEq for RepoRef {
    fn eq(&self, other: &Self) -> bool {
        self.owner.eq_ignore_ascii_case(&other.owner) && self.name.eq_ignore_ascii_case(&other.name)
    }
}

impl Eq for RepoRef {}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// GitHub's rules for owner and repository names (letters, digits, `-`, `_`, `.`).
fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl RepoRef {
    /// The repository a package belongs to when no record binds it (stored before GitHub mode):
    /// `scope/name`.
    pub fn unbound(name: &super::PackageName) -> Option<Self> {
        Self::new(name.scope().unwrap_or(""), name.base_name())
    }

    /// Builds a reference from validated parts.
    pub fn new(owner: &str, name: &str) -> Option<Self> {
        let name = name.strip_suffix(".git").unwrap_or(name);
        (valid_part(owner) && valid_part(name)).then(|| Self {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }

    /// Reads package.json's `repository` in every form npm accepts for GitHub: `github:o/r`,
    /// `o/r`, `git+https://github.com/o/r.git`, `https://github.com/o/r`, `git://github.com/o/r`,
    /// `git@github.com:o/r.git`, `ssh://git@github.com/o/r.git`, or `{ "type": "git", "url": ...,
    /// "directory": ... }` with any of those as `url`. `None` for anything else (another host,
    /// a malformed value).
    pub(crate) fn from_manifest(repository: &serde_json::Value) -> Option<Self> {
        let text = match repository {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Object(o) => o.get("url")?.as_str()?,
            _ => return None,
        };
        Self::parse(text.trim())
    }

    fn parse(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix("github:") {
            return Self::owner_repo(rest);
        }
        // `owner/repo` shorthand: exactly one slash, no scheme, no colon.
        if !text.contains(':') && text.matches('/').count() == 1 && !text.starts_with('@') {
            return Self::owner_repo(text);
        }
        let rest = text.strip_prefix("git+").unwrap_or(text);
        let after_host = if let Some(r) = rest.strip_prefix("git@github.com:") {
            r
        } else {
            let without_scheme = ["https://", "http://", "git://", "ssh://"]
                .iter()
                .find_map(|s| rest.strip_prefix(s))?;
            let without_user =
                without_scheme
                    .rsplit_once('@')
                    .map_or(without_scheme, |(user, host)| {
                        if user.contains('/') {
                            without_scheme
                        } else {
                            host
                        }
                    });
            let (host, path) = without_user.split_once('/')?;
            if !host.eq_ignore_ascii_case("github.com")
                && !host.eq_ignore_ascii_case("www.github.com")
            {
                return None;
            }
            path
        };
        let path = after_host.split(['#', '?']).next()?;
        let mut parts = path.trim_end_matches('/').split('/');
        let owner = parts.next()?;
        let name = parts.next()?;
        // Deeper paths (`/tree/main/x`) are a web URL, not a clone URL; accept the repo part.
        Self::new(owner, name)
    }

    fn owner_repo(text: &str) -> Option<Self> {
        let text = text.split('#').next()?;
        let (owner, name) = text.split_once('/')?;
        if name.contains('/') {
            return None;
        }
        Self::new(owner, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_form_npm_accepts() {
        let want = RepoRef::new("Acme", "Widgets").unwrap();
        for form in [
            json!("github:acme/widgets"),
            json!("acme/widgets"),
            json!("git+https://github.com/acme/widgets.git"),
            json!("https://github.com/acme/widgets"),
            json!("https://github.com/acme/widgets/"),
            json!("git://github.com/acme/widgets.git"),
            json!("git@github.com:acme/widgets.git"),
            json!("git+ssh://git@github.com/acme/widgets.git"),
            json!("ssh://git@github.com/acme/widgets.git"),
            json!("github:acme/widgets#main"),
            json!({ "type": "git", "url": "git+https://github.com/acme/widgets.git", "directory": "packages/a" }),
            json!({ "type": "git", "url": "https://github.com/ACME/WIDGETS.git" }),
        ] {
            assert_eq!(
                RepoRef::from_manifest(&form).as_ref(),
                Some(&want),
                "{form}"
            );
        }
    }

    #[test]
    fn other_hosts_and_garbage_are_refused() {
        for form in [
            json!("gitlab:acme/widgets"),
            json!("https://gitlab.com/acme/widgets"),
            json!("https://github.com.evil.test/acme/widgets"),
            json!("https://evil.test/github.com/acme/widgets"),
            json!("git@evil.test:acme/widgets.git"),
            json!("acme"),
            json!("acme/widgets/extra"),
            json!("../../x"),
            json!("github:../x"),
            json!(42),
            json!({ "type": "git" }),
        ] {
            assert_eq!(RepoRef::from_manifest(&form), None, "{form}");
        }
    }
}
