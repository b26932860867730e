//! Which names this registry stores, and where it sends reads of the others.

use super::{ConfigError, Env};

/// Default upstream registry for names not served here.
const DEFAULT_UPSTREAM: &str = "https://registry.npmjs.org";

/// The owner allow-list and the upstream registry (`auth::scopes::ScopePolicy` applies them).
#[derive(Debug, Clone)]
pub struct ScopesConfig {
    /// `REGISTRY_ALLOWED_OWNERS`, lowercased; empty means any.
    pub allowed_owners: Vec<String>,
    /// `REGISTRY_UPSTREAM`, without a trailing slash; `None` when set to the empty string.
    pub upstream: Option<String>,
}

impl ScopesConfig {
    /// Reads the allow-list and the upstream registry; neither can be malformed.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let upstream = match env.raw("REGISTRY_UPSTREAM") {
            None => Some(DEFAULT_UPSTREAM.to_string()),
            Some(u) if u.trim().is_empty() => None,
            Some(u) => Some(u.trim().trim_end_matches('/').to_string()),
        };
        Ok(Self {
            allowed_owners: env
                .raw("REGISTRY_ALLOWED_OWNERS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            upstream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn owners_are_lowercased_and_an_empty_upstream_means_none() {
        let c = ScopesConfig::from_env(&env(&[])).unwrap();
        assert!(c.allowed_owners.is_empty());
        assert_eq!(c.upstream.as_deref(), Some("https://registry.npmjs.org"));
        let c = ScopesConfig::from_env(&env(&[
            ("REGISTRY_ALLOWED_OWNERS", "Acme, b,,"),
            ("REGISTRY_UPSTREAM", " https://mirror.example/npm/ "),
        ]))
        .unwrap();
        assert_eq!(c.allowed_owners, ["acme", "b"]);
        assert_eq!(c.upstream.as_deref(), Some("https://mirror.example/npm"));
        let c = ScopesConfig::from_env(&env(&[("REGISTRY_UPSTREAM", " ")])).unwrap();
        assert_eq!(c.upstream, None);
    }
}
