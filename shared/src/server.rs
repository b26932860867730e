//! Building a ready-to-serve application from configuration; shared by every binary.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::github::OctocrabGithub;
use crate::auth::tokens::TokenKeys;
use crate::auth::{Authorizer, GithubAuth, GithubSettings};
use crate::config::{AuthMode, Config, StorageKind};
use crate::domain::tarball::TarballLimits;
use crate::http::AppState;
use crate::http::rendered::PackumentCache;
use crate::storage::aws::{AwsSettings, AwsStorage};
use crate::storage::{AfterResponse, KvStore, MetadataStore, TarballStore, embedded};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StoreError),
}

/// The AWS backend's settings from the configuration.
pub fn aws_settings(config: &Config) -> Result<AwsSettings, StartError> {
    let table = config.table.clone().ok_or_else(|| {
        StartError::Config("REGISTRY_TABLE is required with REGISTRY_STORAGE=aws".into())
    })?;
    let bucket = config.bucket.clone().ok_or_else(|| {
        StartError::Config("REGISTRY_BUCKET is required with REGISTRY_STORAGE=aws".into())
    })?;
    // Emulators (an endpoint override) need path-style addressing; real S3 prefers virtual hosts.
    let endpoint_override = std::env::var_os("AWS_ENDPOINT_URL_S3")
        .or_else(|| std::env::var_os("AWS_ENDPOINT_URL"))
        .is_some();
    let force_path_style = match std::env::var("REGISTRY_S3_PATH_STYLE") {
        Ok(v) => matches!(v.as_str(), "1" | "true" | "yes"),
        Err(_) => endpoint_override,
    };
    Ok(AwsSettings {
        table,
        bucket,
        presign: Duration::from_secs(config.presign_seconds),
        force_path_style,
        // Read here rather than left to the SDK's loader, so that both ways of configuring the
        // SDK (`AwsStorage::default_sdk_config`, `environment_sdk_config`) honour them.
        dynamodb_endpoint: env_nonempty("AWS_ENDPOINT_URL_DYNAMODB"),
        s3_endpoint: env_nonempty("AWS_ENDPOINT_URL_S3"),
    })
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The stores of one backend, as the three traits.
pub struct Stores {
    /// Package metadata.
    pub metadata: Arc<dyn MetadataStore>,
    /// Tarball bytes.
    pub tarballs: Arc<dyn TarballStore>,
    /// Caches and token records.
    pub kv: Arc<dyn KvStore>,
}

/// Opens the configured backend, the AWS SDK configured by its default chain.
pub async fn open_stores(config: &Config) -> Result<Stores, StartError> {
    open_stores_with_sdk(config, AwsStorage::default_sdk_config, None).await
}

/// Opens the configured backend, the AWS SDK configured by `sdk` (called only for the AWS
/// backend). Generic, so that a binary links only the SDK configuration it uses. With
/// `after_response`, the AWS backend writes rebuilt snapshots there (see `AfterResponse`).
pub async fn open_stores_with_sdk<F, Fut>(
    config: &Config,
    sdk: F,
    after_response: Option<Arc<AfterResponse>>,
) -> Result<Stores, StartError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = aws_config::SdkConfig>,
{
    Ok(match config.storage {
        StorageKind::Local => {
            let (m, t) = embedded::open(&config.data_dir)?;
            let m = Arc::new(m);
            Stores {
                metadata: m.clone(),
                tarballs: Arc::new(t),
                kv: m,
            }
        }
        StorageKind::Aws => {
            let settings = aws_settings(config)?;
            let mut s = AwsStorage::new(&sdk().await, settings);
            if let Some(queue) = after_response {
                s = s.with_snapshot_writes_after_response(queue);
            }
            let s = Arc::new(s);
            Stores {
                metadata: s.clone(),
                tarballs: s.clone(),
                kv: s,
            }
        }
    })
}

/// The token signing secret: configured, or (local storage only) generated once and kept in the
/// data directory, readable by its owner only.
fn token_secret(config: &Config) -> Result<Vec<u8>, StartError> {
    if let Some(secret) = &config.token_secret {
        if secret.len() < 32 {
            return Err(StartError::Config(
                "REGISTRY_TOKEN_SECRET must be at least 32 characters".into(),
            ));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    if config.storage == StorageKind::Aws {
        return Err(StartError::Config(
            "REGISTRY_TOKEN_SECRET is required with REGISTRY_AUTH=github on AWS".into(),
        ));
    }
    let path = config.data_dir.join("token-secret");
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
pub fn authorizer(config: &Config, kv: Arc<dyn KvStore>) -> Result<Authorizer, StartError> {
    Ok(match config.auth {
        AuthMode::Open => Authorizer::Open,
        AuthMode::Github => {
            let api = OctocrabGithub::new(&config.github_api_url).map_err(StartError::Config)?;
            let tokens = TokenKeys::new(
                &token_secret(config)?,
                chrono::Duration::days(config.token_days as i64),
            );
            let settings = GithubSettings {
                allowed_owners: config.allowed_owners.clone(),
                public_read: config.public_read,
                fresh_for: chrono::Duration::seconds(config.github_cache_seconds as i64),
                stale_for: chrono::Duration::hours(1).max(chrono::Duration::seconds(
                    config.github_cache_seconds as i64,
                )),
            };
            Authorizer::Github(Box::new(GithubAuth::new(
                Arc::new(api),
                kv,
                tokens,
                settings,
            )))
        }
    })
}

/// Builds the shared state for `config`: storage backend, auth mode, limits.
pub async fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
    build_state_with_sdk(config, AwsStorage::default_sdk_config, None).await
}

/// `build_state`, with the AWS SDK configured by `sdk` and writes that may follow the response
/// queued in `after_response` (see `open_stores_with_sdk`).
pub async fn build_state_with_sdk<F, Fut>(
    config: Config,
    sdk: F,
    after_response: Option<Arc<AfterResponse>>,
) -> Result<Arc<AppState>, StartError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = aws_config::SdkConfig>,
{
    let stores = open_stores_with_sdk(&config, sdk, after_response).await?;
    let auth = authorizer(&config, stores.kv.clone())?;
    Ok(build_with_auth(
        config,
        stores.metadata,
        stores.tarballs,
        auth,
    ))
}

/// Runs the storage sweep for `config`'s backend (see `storage::sweep`).
pub async fn sweep(
    config: Config,
    older_than: Duration,
) -> Result<crate::storage::SweepReport, StartError> {
    let stores = open_stores(&config).await?;
    Ok(crate::storage::sweep(
        stores.metadata.as_ref(),
        stores.tarballs.as_ref(),
        older_than,
    )
    .await?)
}

/// Builds open-mode state around stores the caller already has (tests, request counting).
pub fn build_with(
    config: Config,
    metadata: Arc<dyn MetadataStore>,
    tarballs: Arc<dyn TarballStore>,
) -> Arc<AppState> {
    build_with_auth(config, metadata, tarballs, Authorizer::Open)
}

/// Builds state around stores and an authoriser the caller already has.
pub fn build_with_auth(
    config: Config,
    metadata: Arc<dyn MetadataStore>,
    tarballs: Arc<dyn TarballStore>,
    auth: Authorizer,
) -> Arc<AppState> {
    let tarball_limits = TarballLimits {
        max_unpacked_bytes: config.max_unpacked_bytes,
        ..TarballLimits::default()
    };
    let packuments = PackumentCache::new(config.packument_cache_bytes);
    let body_budget = Arc::new(tokio::sync::Semaphore::new(
        config
            .max_body_bytes_in_flight
            .min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    Arc::new(AppState {
        body_budget,
        metadata,
        tarballs,
        config,
        auth,
        tarball_limits,
        packuments,
    })
}
