//! The exchange: a verified ID token whose run a trust configuration of the package admits buys
//! a token that may publish that package for a few minutes. Order of the checks: the token
//! (signature, issuer, audience, times), the event, the package's configurations, and last the
//! replay check on `jti` — last, so that a refused attempt does not use the ID token up (a
//! workflow re-run after its configuration is fixed gets a new token anyway, but a transient
//! store failure or a configuration added a moment later should not burn it); the replay
//! record is a conditional create, so of two racing exchanges of one token exactly one wins.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::OidcError;
use super::claims::IdTokenVerifier;
use crate::auth::kv::{Kv, KvKey};
use crate::domain::PackageName;
use crate::domain::trust::{REFUSED_EVENTS, TrustConfiguration, TrustMismatch, WorkflowRun};
use crate::storage::StoreError;

/// How long a minted token lives: enough for `npm publish` to upload, short enough that a
/// leaked one is of little use.
pub(crate) const TOKEN_LIFETIME_MINUTES: i64 = 15;
/// The prefix of minted tokens (so the registry tells them from GitHub and registry tokens).
pub(crate) const TOKEN_PREFIX: &str = "tpub_";

/// What a minted token may do: publish `package`, as `run`, while `configuration` exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishGrant {
    /// The package it may publish.
    pub package: String,
    /// The run it was minted for.
    pub run: WorkflowRun,
    /// The trust configuration that admitted the run.
    pub configuration_id: String,
    /// When it stops working.
    pub expires: DateTime<Utc>,
}

/// Why an exchange was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExchangeError {
    /// The ID token did not verify.
    #[error("{0}")]
    Token(OidcError),
    /// The run's event is one trusted publishing refuses.
    #[error("{0}")]
    Event(TrustMismatch),
    /// No configuration of the package names the run's repository — or the package does not
    /// exist: one answer for both, so an outsider learns nothing about the package.
    #[error(
        "no trusted publisher of {package} matches repository {repository} (or the package does not exist); configure one with npm trust github"
    )]
    NoTrustedPublisher {
        /// The package.
        package: String,
        /// The run's repository.
        repository: String,
    },
    /// A configuration names the run's repository, but the run does not match it.
    #[error(
        "the trusted publisher of {package} for this repository does not admit this run: {mismatch}"
    )]
    Mismatch {
        /// The package.
        package: String,
        /// The first check that failed.
        mismatch: TrustMismatch,
    },
    /// The ID token was already exchanged.
    #[error("this ID token was already exchanged (its jti was seen before); request a new one")]
    Replayed,
    /// The store failed.
    #[error("{0}")]
    Store(StoreError),
}

impl From<StoreError> for ExchangeError {
    fn from(e: StoreError) -> Self {
        ExchangeError::Store(e)
    }
}

/// Trusted publishing's state: the ID-token verifier and the store.
pub struct TrustedPublishing {
    verifier: IdTokenVerifier,
    kv: Kv,
}

impl TrustedPublishing {
    /// Trusted publishing verifying with `verifier`, remembering in `kv`.
    pub(crate) fn new(verifier: IdTokenVerifier, kv: Kv) -> Self {
        Self { verifier, kv }
    }

    /// The issuer ID tokens must come from.
    pub(crate) fn issuer(&self) -> &str {
        self.verifier.issuer()
    }

    /// Whether `token` is one the exchange minted (by its prefix; the store decides if it works).
    pub(crate) fn is_minted_token(token: &str) -> bool {
        token.starts_with(TOKEN_PREFIX)
    }

    /// The package's trust configurations (see `auth::trust`).
    pub(crate) async fn configurations(
        &self,
        package: &PackageName,
    ) -> Result<Vec<TrustConfiguration>, StoreError> {
        crate::auth::trust::configurations(&self.kv, package).await
    }

    /// One configuration of the package, if it still exists.
    pub(crate) async fn configuration(
        &self,
        package: &PackageName,
        id: &str,
    ) -> Result<Option<TrustConfiguration>, StoreError> {
        crate::auth::trust::configuration(&self.kv, package, id).await
    }

    /// Exchanges `id_token` (for `audience`, `npm:<registry host>`) for a token that may
    /// publish `package`. Returns the token (shown once, stored only as its hash) and its grant.
    /// The tests' shorthand: the route uses `exchange_noting`.
    #[cfg(test)]
    pub(crate) async fn exchange(
        &self,
        package: &PackageName,
        id_token: &str,
        audience: &str,
    ) -> Result<(String, PublishGrant), ExchangeError> {
        self.exchange_noting(package, id_token, audience, |_| {})
            .await
    }

    /// `exchange`, telling `verified` which run the ID token is once it has verified (before
    /// any other check): the audit log names the workflow in what it records from then on.
    pub(crate) async fn exchange_noting(
        &self,
        package: &PackageName,
        id_token: &str,
        audience: &str,
        verified_run: impl FnOnce(&WorkflowRun),
    ) -> Result<(String, PublishGrant), ExchangeError> {
        let verified = self
            .verifier
            .verify(id_token, audience)
            .await
            .map_err(ExchangeError::Token)?;
        let run = verified.run;
        verified_run(&run);
        if REFUSED_EVENTS.contains(&run.event_name.as_str()) {
            return Err(ExchangeError::Event(TrustMismatch::RefusedEvent(
                run.event_name.clone(),
            )));
        }
        let configurations = self.configurations(package).await?;
        let admitted = configurations.iter().find(|c| c.admits(&run).is_ok());
        let Some(configuration) = admitted else {
            // Details only for runs of a configured repository: anyone else hears what a
            // package without configurations (or without existence) answers.
            let insider = configurations.iter().find(|c| {
                c.repository
                    .to_string()
                    .eq_ignore_ascii_case(&run.repository)
            });
            return Err(match insider.map(|c| c.admits(&run)) {
                Some(Err(mismatch)) => ExchangeError::Mismatch {
                    package: package.to_string(),
                    mismatch,
                },
                _ => ExchangeError::NoTrustedPublisher {
                    package: package.to_string(),
                    repository: run.repository.clone(),
                },
            });
        };
        // Remembered a little past expiry: the verifier accepts that much clock skew.
        let remember_until =
            verified.expires + Duration::seconds(2 * super::claims::LEEWAY_SECONDS.cast_signed());
        let first_use = self
            .kv
            .put_new(
                &KvKey::exchanged_id_token(self.issuer(), &verified.jti),
                b"1",
                Some(remember_until),
            )
            .await?;
        if !first_use {
            return Err(ExchangeError::Replayed);
        }
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        );
        let grant = PublishGrant {
            package: package.as_str().to_string(),
            run,
            configuration_id: configuration.id.clone(),
            expires: Utc::now() + Duration::minutes(TOKEN_LIFETIME_MINUTES),
        };
        // Stored under the token's hash: the token itself is shown once and kept nowhere.
        self.kv
            .put_json(&KvKey::minted_token(&token), &grant, Some(grant.expires))
            .await?;
        Ok((token, grant))
    }

    /// The grant of a minted token, unless it expired or is unknown.
    pub(crate) async fn grant(&self, token: &str) -> Result<Option<PublishGrant>, StoreError> {
        Ok(self
            .kv
            .get_json::<PublishGrant>(&KvKey::minted_token(token))
            .await?
            .filter(|g| g.expires > Utc::now()))
    }
}
