//! Trusted publishing: a GitHub Actions run proves who it is with its OIDC ID token and gets a
//! short-lived token that may publish one package. One module per concern: finding and caching
//! the issuer's keys (`keys`), checking the token and its claims (`claims`), and the exchange
//! decision with the tokens it mints (`exchange`).

pub mod claims;
pub mod exchange;
pub mod keys;

pub use claims::IdTokenVerifier;
pub use exchange::{ExchangeError, PublishGrant, TrustedPublishing};
pub(crate) use keys::HttpKeyFetcher;
pub use keys::{KeyCache, KeyFetcher};

/// GitHub Actions' OIDC issuer (`REGISTRY_OIDC_ISSUER`'s default).
pub(crate) const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Why an ID token was not accepted. Messages say which check failed: npm logs them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Not a JWT at all.
    #[error("the ID token is malformed: {0}")]
    Malformed(String),
    /// Signed with something other than RS256 (or not signed).
    #[error("the ID token must be signed with RS256 (it says {0})")]
    Algorithm(String),
    /// No `kid`, or one the issuer does not publish (even after fetching its keys again).
    #[error("the ID token was signed with key {0:?}, which the issuer does not publish")]
    UnknownKey(String),
    /// The signature does not verify with the issuer's key.
    #[error("the ID token's signature does not verify with the issuer's key")]
    Signature,
    /// Another issuer.
    #[error("the ID token was issued by {got:?}, not {expected}")]
    Issuer {
        /// The token's `iss`.
        got: String,
        /// The configured issuer.
        expected: String,
    },
    /// Another audience.
    #[error(
        "the ID token's audience is {got:?}, not {expected} (npm asks for npm:<hostname of its registry URL>; the registry takes its own hostname from REGISTRY_PUBLIC_URL, or the request's Host when that is unset: make them the URL clients use)"
    )]
    Audience {
        /// The token's `aud`.
        got: String,
        /// `npm:<registry host>`.
        expected: String,
    },
    /// Past `exp`.
    #[error("the ID token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the ID token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// `iat` in the future.
    #[error("the ID token was issued in the future (iat)")]
    IssuedInFuture,
    /// A claim trusted publishing needs is missing or has the wrong type.
    #[error("the ID token lacks a valid {0} claim")]
    Claim(String),
    /// The issuer's keys could not be fetched and none are cached.
    #[error("the OIDC issuer's keys cannot be fetched ({0}); retry shortly")]
    Unavailable(String),
}

#[cfg(test)]
mod tests;
