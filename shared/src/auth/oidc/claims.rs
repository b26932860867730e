//! Checking an ID token: RS256 signature by one of the issuer's keys, `iss`, `aud`, `exp`,
//! `nbf` and `iat` (with a small leeway for clock skew), and the claims a workflow run is
//! described by.

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::OidcError;
use super::keys::KeyCache;
use crate::domain::trust::WorkflowRun;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub(crate) const LEEWAY_SECONDS: u64 = 60;

/// The claims read from a GitHub Actions ID token (docs.github.com, "About security hardening
/// with OpenID Connect": all string-valued).
#[derive(Deserialize)]
struct Claims {
    exp: i64,
    iat: i64,
    jti: Option<String>,
    repository: Option<String>,
    repository_owner_id: Option<String>,
    workflow_ref: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    event_name: Option<String>,
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    run_attempt: String,
    #[serde(default)]
    sha: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
}

/// A verified ID token: the run it describes, its id and its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedIdToken {
    /// The workflow run.
    pub run: WorkflowRun,
    /// `jti`: the token's unique id, remembered until `expires` so it is exchanged once.
    pub jti: String,
    /// `exp`.
    pub expires: DateTime<Utc>,
}

/// Verifies ID tokens of one issuer.
pub struct IdTokenVerifier {
    issuer: String,
    keys: KeyCache,
}

impl IdTokenVerifier {
    /// A verifier for `issuer`, whose keys come from `keys`.
    pub(crate) fn new(issuer: &str, keys: KeyCache) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            keys,
        }
    }

    /// The issuer tokens must come from.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies `token` for `audience` (`npm:<registry host>`), as of now.
    pub(crate) async fn verify(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<VerifiedIdToken, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg: none` and unknown algorithms fail to parse at all.
            ErrorKind::Json(_) => OidcError::Algorithm(
                header_alg(token).unwrap_or_else(|| "an unreadable header".into()),
            ),
            _ => OidcError::Malformed(e.to_string()),
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(OidcError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| OidcError::UnknownKey(String::new()))?;
        let key = self.keys.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| self.refusal(&e, token, audience))?;
        let claims: Claims = serde_json::from_value(data.claims)
            .map_err(|e| OidcError::Claim(format!("(claims unreadable: {e})")))?;
        let now = Utc::now().timestamp();
        if claims.iat > now + LEEWAY_SECONDS.cast_signed() {
            return Err(OidcError::IssuedInFuture);
        }
        let required = |value: Option<String>, name: &str| {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| OidcError::Claim(name.to_string()))
        };
        let run = WorkflowRun {
            repository: required(claims.repository, "repository")?,
            repository_owner_id: required(claims.repository_owner_id, "repository_owner_id")?,
            workflow_ref: required(claims.workflow_ref, "workflow_ref")?,
            environment: claims.environment.filter(|e| !e.is_empty()),
            event_name: required(claims.event_name, "event_name")?,
            run_id: claims.run_id,
            run_attempt: claims.run_attempt,
            sha: claims.sha,
            git_ref: claims.git_ref,
        };
        Ok(VerifiedIdToken {
            run,
            jti: required(claims.jti, "jti")?,
            expires: DateTime::from_timestamp(claims.exp, 0).ok_or(OidcError::Expired)?,
        })
    }

    fn refusal(&self, e: &jsonwebtoken::errors::Error, token: &str, audience: &str) -> OidcError {
        let claim = |name: &str| -> String {
            payload(token)
                .and_then(|p| p.get(name).cloned())
                .map_or_else(
                    || "(none)".into(),
                    |v| v.as_str().map_or_else(|| v.to_string(), str::to_string),
                )
        };
        match e.kind() {
            ErrorKind::InvalidSignature => OidcError::Signature,
            ErrorKind::ExpiredSignature => OidcError::Expired,
            ErrorKind::ImmatureSignature => OidcError::NotYetValid,
            ErrorKind::InvalidIssuer => OidcError::Issuer {
                got: claim("iss"),
                expected: self.issuer.clone(),
            },
            ErrorKind::InvalidAudience => OidcError::Audience {
                got: claim("aud"),
                expected: audience.to_string(),
            },
            ErrorKind::MissingRequiredClaim(c) => OidcError::Claim(c.clone()),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                OidcError::Algorithm(header_alg(token).unwrap_or_default())
            }
            _ => OidcError::Malformed(e.to_string()),
        }
    }
}

/// A token's unverified JSON part `index` (0: header, 1: payload), for naming what was wrong.
fn part(token: &str, index: usize) -> Option<serde_json::Value> {
    use base64::Engine;
    let text = token.split('.').nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn payload(token: &str) -> Option<serde_json::Value> {
    part(token, 1)
}

fn header_alg(token: &str) -> Option<String> {
    Some(
        part(token, 0)?
            .get("alg")?
            .as_str()?
            .chars()
            .take(20)
            .collect(),
    )
}
