//! The authoriser for the configured auth mode, and the token signing secret it needs.

use std::sync::Arc;

use super::StartError;
use crate::auth::github::OctocrabGithub;
use crate::auth::tokens::TokenKeys;
use crate::auth::{Authorizer, GithubAuth, GithubSettings};
use crate::config::{AuthMode, Config, StorageConfig};
use crate::storage::KvStore;

/// The token signing secret: configured, or (local storage only) generated once and kept in the
/// data directory, readable by its owner only.
fn token_secret(config: &Config) -> Result<Vec<u8>, StartError> {
    // Its length is checked with the rest of GitHub mode's settings (`config::AuthConfig`).
    if let Some(secret) = &config.auth.token_secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let StorageConfig::Local { data_dir, .. } = &config.storage else {
        return Err(StartError::Config(
            "REGISTRY_TOKEN_SECRET is required with REGISTRY_AUTH=github on AWS".into(),
        ));
    };
    let path = data_dir.join("token-secret");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => Ok(secret),
        _ => {
            let secret = hex::encode(rand::random::<[u8; 32]>()).into_bytes();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            std::io::Write::write_all(
                &mut options
                    .open(&path)
                    .map_err(|e| StartError::Config(format!("{}: {e}", path.display())))?,
                &secret,
            )
            .map_err(|e| StartError::Config(e.to_string()))?;
            Ok(secret)
        }
    }
}

/// The authoriser for the configured mode.
pub(super) fn authorizer(config: &Config, kv: Arc<dyn KvStore>) -> Result<Authorizer, StartError> {
    let settings = &config.auth;
    Ok(match settings.mode {
        AuthMode::Open => Authorizer::Open,
        AuthMode::Github => {
            let api = OctocrabGithub::new(&settings.github_api_url).map_err(StartError::Config)?;
            let tokens = TokenKeys::new(
                &token_secret(config)?,
                chrono::Duration::try_days(i64::try_from(settings.token_days).unwrap_or(i64::MAX))
                    .unwrap_or(chrono::Duration::MAX),
            );
            let github_cache =
                chrono::Duration::from_std(settings.github_cache).unwrap_or(chrono::Duration::MAX);
            let github = GithubSettings {
                scopes: super::scope_policy(config),
                public_read: settings.public_read,
                fresh_for: github_cache,
                stale_for: chrono::Duration::hours(1).max(github_cache),
                token_cache: config.token_cache(),
                web_session: settings.web_session,
            };
            let verifier = crate::auth::oidc::IdTokenVerifier::new(
                &settings.oidc_issuer,
                crate::auth::oidc::KeyCache::new(Box::new(crate::auth::oidc::HttpKeyFetcher::new(
                    &settings.oidc_issuer,
                ))),
            );
            let mut auth = GithubAuth::new(Arc::new(api), kv, tokens, github)
                .with_trusted_publishing(verifier);
            if let Some(oauth) = &settings.oauth {
                auth = auth.with_oauth(crate::auth::github::oauth::OauthApp::new(oauth));
            }
            Authorizer::Github(Box::new(auth))
        }
    })
}
