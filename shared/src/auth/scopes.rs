//! Which names this registry stores and which belong to the upstream registry: the owner
//! allow-list (`REGISTRY_ALLOWED_OWNERS`), decided in this one place for writes, for reads of
//! names not stored here, and for the trusted-publishing routes.

use crate::domain::PackageName;

/// The names this registry stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopePolicy {
    /// Owners whose scopes are served, lowercase; empty means every scope.
    owners: Vec<String>,
    /// Whether only scoped names are stored (GitHub mode: a scope names the GitHub owner whose
    /// repositories decide who may publish; an unscoped name has no owner to ask).
    scoped_only: bool,
    /// Scopes with an upstream registry of their own (`REGISTRY_UPSTREAM_SCOPES`), lowercase:
    /// never stored here, whatever the allow-list says.
    upstream_scopes: Vec<String>,
}

/// Why a name is not stored here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotServed {
    /// An unscoped name, in a registry that stores scoped names only.
    #[error(
        "{0} is unscoped: this registry only stores scoped packages whose scope is a GitHub owner; publish it to the public registry"
    )]
    Unscoped(String),
    /// A scope another registry serves (`REGISTRY_UPSTREAM_SCOPES`).
    #[error("scope @{0} comes from its own upstream registry: it is not published here")]
    UpstreamScope(String),
    /// A scope outside the allow-list.
    #[error("scope @{scope} is not served by this registry (allowed owners: {owners})")]
    ForeignScope {
        /// The name's scope.
        scope: String,
        /// The allowed owners, comma-separated.
        owners: String,
    },
}

impl ScopePolicy {
    /// The policy for `owners` (compared case-insensitively; empty: any), storing unscoped names
    /// too unless `scoped_only`.
    pub(crate) fn new(owners: &[String], scoped_only: bool) -> Self {
        Self {
            owners: owners.iter().map(|o| o.to_ascii_lowercase()).collect(),
            scoped_only,
            upstream_scopes: Vec::new(),
        }
    }

    /// The same, with `scopes` served by upstream registries of their own.
    pub(crate) fn with_upstream_scopes(mut self, scopes: &[String]) -> Self {
        self.upstream_scopes = scopes.iter().map(|s| s.to_ascii_lowercase()).collect();
        self
    }

    /// Whether packages of `scope` are stored here.
    pub(crate) fn serves_scope(&self, scope: &str) -> bool {
        !self
            .upstream_scopes
            .iter()
            .any(|s| s.eq_ignore_ascii_case(scope))
            && (self.owners.is_empty() || self.owners.iter().any(|o| o.eq_ignore_ascii_case(scope)))
    }

    /// Whether `name` may be stored here; the refusal says why not.
    pub(crate) fn stores(&self, name: &PackageName) -> Result<(), NotServed> {
        match name.scope() {
            None if self.scoped_only => Err(NotServed::Unscoped(name.to_string())),
            None => Ok(()),
            Some(scope) if self.serves_scope(scope) => Ok(()),
            Some(scope)
                if self
                    .upstream_scopes
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(scope)) =>
            {
                Err(NotServed::UpstreamScope(scope.to_string()))
            }
            Some(scope) => Err(NotServed::ForeignScope {
                scope: scope.to_string(),
                owners: self.owners.join(", "),
            }),
        }
    }

    /// Whether a read of `name`, not found here, belongs to the upstream registry: unscoped
    /// names, and scopes not named by the allow-list (with no list, every scope may be
    /// published here, but a name nobody published here yet still comes from upstream: only a
    /// listed scope is never looked up there).
    pub(crate) fn is_upstream(&self, name: &PackageName) -> bool {
        name.scope()
            .is_none_or(|scope| self.owners.is_empty() || !self.serves_scope(scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> PackageName {
        PackageName::parse(n).unwrap()
    }

    #[test]
    fn one_rule_for_writes_and_for_reads_that_go_upstream() {
        let github = ScopePolicy::new(&["Acme".into(), "b".into()], true);
        assert!(
            github.serves_scope("acme") && github.serves_scope("B") && !github.serves_scope("c")
        );
        assert_eq!(
            github.stores(&name("@ACME/x".to_ascii_lowercase().as_str())),
            Ok(())
        );
        assert_eq!(
            github.stores(&name("left-pad")),
            Err(NotServed::Unscoped("left-pad".into()))
        );
        let foreign = github.stores(&name("@other/x")).unwrap_err().to_string();
        assert_eq!(
            foreign,
            "scope @other is not served by this registry (allowed owners: acme, b)"
        );
        assert!(github.is_upstream(&name("left-pad")));
        assert!(github.is_upstream(&name("@other/x")));
        assert!(!github.is_upstream(&name("@acme/x")));

        // Open mode stores unscoped names; an empty list serves every scope.
        let open = ScopePolicy::new(&[], false);
        assert_eq!(open.stores(&name("left-pad")), Ok(()));
        assert_eq!(open.stores(&name("@any/x")), Ok(()));
        assert!(open.is_upstream(&name("left-pad")));
        assert!(
            open.is_upstream(&name("@any/x")),
            "with no allow-list, an unpublished scoped name comes from upstream too"
        );

        // A scope with an upstream of its own is never stored here.
        let open = open.with_upstream_scopes(&["Partner".into()]);
        assert!(open.is_upstream(&name("@partner/x")));
        assert_eq!(
            open.stores(&name("@partner/x")),
            Err(NotServed::UpstreamScope("partner".into()))
        );
    }
}
