//! Who is calling and whether they may act. One decision point for every route group.

use crate::domain::PackageName;

/// What a request wants to do to a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// View or install.
    Read,
    /// Publish, change dist-tags, deprecate, star.
    Write,
    /// Unpublish.
    Admin,
}

/// The caller, as far as the registry knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials, or open mode.
    Anonymous,
    /// A known user.
    User(String),
}

impl Identity {
    /// The user name clients are told (`npm whoami`).
    pub fn username(&self) -> &str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::User(u) => u,
        }
    }
}

/// An authorisation refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Credentials are missing or invalid.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but lacks a permission.
    #[error("{0}")]
    Forbidden(String),
}

/// Open mode: everyone on the listener may read and write everything.
#[derive(Debug, Clone, Default)]
pub struct OpenAuth;

impl OpenAuth {
    /// Decides whether `identity` may do `action` to `package`.
    pub fn authorize(
        &self,
        _identity: &Identity,
        _package: &PackageName,
        _action: Action,
    ) -> Result<(), AuthError> {
        Ok(())
    }
}
