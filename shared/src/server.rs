//! Building a ready-to-serve application from configuration; shared by the binaries.

use std::sync::Arc;

use crate::auth::OpenAuth;
use crate::config::{AuthMode, Config, StorageKind};
use crate::domain::tarball::TarballLimits;
use crate::http::AppState;
use crate::storage::embedded;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StoreError),
}

/// Builds the shared state for `config`: storage backend, auth mode, limits.
pub fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
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
            return Err(StartError::Config(
                "REGISTRY_STORAGE=aws is not available yet; use local".into(),
            ));
        }
    };
    let tarball_limits = TarballLimits {
        max_unpacked_bytes: config.max_unpacked_bytes,
        ..TarballLimits::default()
    };
    Ok(Arc::new(AppState {
        metadata,
        tarballs,
        config,
        auth: OpenAuth,
        tarball_limits,
    }))
}
