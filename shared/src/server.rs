//! Building a ready-to-serve application from configuration; shared by every binary.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::OpenAuth;
use crate::config::{AuthMode, Config, StorageKind};
use crate::domain::tarball::TarballLimits;
use crate::http::AppState;
use crate::storage::aws::{AwsSettings, AwsStorage};
use crate::storage::embedded;

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
        dynamodb_endpoint: None,
        s3_endpoint: None,
    })
}

/// Builds the shared state for `config`: storage backend, auth mode, limits.
pub async fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
    if config.auth == AuthMode::Github {
        return Err(StartError::Config(
            "REGISTRY_AUTH=github is not available yet; use open".into(),
        ));
    }
    let (metadata, tarballs) = match config.storage {
        StorageKind::Local => {
            let (m, t) = embedded::open(&config.data_dir)?;
            (Arc::new(m) as _, Arc::new(t) as _)
        }
        StorageKind::Aws => {
            let storage = Arc::new(AwsStorage::from_env(aws_settings(&config)?).await);
            (storage.clone() as _, storage as _)
        }
    };
    Ok(build_with(config, metadata, tarballs))
}

/// Runs the storage sweep for `config`'s backend (see `storage::sweep`).
pub async fn sweep(
    config: Config,
    older_than: Duration,
) -> Result<crate::storage::SweepReport, StartError> {
    let state = build_state(config).await?;
    Ok(crate::storage::sweep(state.metadata.as_ref(), state.tarballs.as_ref(), older_than).await?)
}

/// Builds the state around stores the caller already has (tests, request counting).
pub fn build_with(
    config: Config,
    metadata: Arc<dyn crate::storage::MetadataStore>,
    tarballs: Arc<dyn crate::storage::TarballStore>,
) -> Arc<AppState> {
    let tarball_limits = TarballLimits {
        max_unpacked_bytes: config.max_unpacked_bytes,
        ..TarballLimits::default()
    };
    Arc::new(AppState {
        metadata,
        tarballs,
        config,
        auth: OpenAuth,
        tarball_limits,
    })
}
