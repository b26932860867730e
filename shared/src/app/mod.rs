//! The composition root: one builder turns configuration into a ready-to-serve application
//! (stores, authoriser, audit log, limits). The local server, the Lambda functions, the
//! `registry-server` subcommands and the tests all start here:
//!
//! ```text
//! let state = App::builder(config).build().await?;             // the local server
//! let state = App::builder(config)
//!     .sdk(EnvironmentSdk)                                      // a Lambda function
//!     .after_response(queue)
//!     .check_resources(false)
//!     .build()
//!     .await?;
//! let state = App::builder(config).stores(metadata, tarballs).build().await?; // a test
//! ```

mod auth;
mod aws;
pub mod commands;
#[cfg(unix)]
pub mod control;

use std::future::Future;
use std::sync::Arc;

use crate::auth::Authorizer;
use crate::auth::scopes::ScopePolicy;
use crate::config::{AuthMode, Config, StorageConfig};
use crate::domain::tarball::TarballLimits;
use crate::http::AppState;
use crate::http::rendered::PackumentCache;
use crate::storage::audit_file::FileAuditLog;
use crate::storage::aws::AwsStorage;
use crate::storage::views::PackageViews;
use crate::storage::{
    AfterResponse, AuditLog, AuditRetention, KvStore, MemoryAuditLog, MetadataStore, RenderStore,
    TarballStore, UpstreamStore, embedded,
};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StoreError),
    /// The AWS table or bucket is missing or cannot be reached; the message says what to do.
    #[error("{0}")]
    Resources(String),
    /// A command-line argument is not valid.
    #[error("{0}")]
    Usage(String),
    /// The running server could not be asked, or answered with an error.
    #[error("{0}")]
    Control(String),
}

/// Where the AWS SDK's configuration comes from (used only with the AWS backend). A type, not a
/// value chosen at run time, so that a binary links only the source it uses.
pub trait SdkSource {
    /// Loads the configuration.
    fn load(self) -> impl Future<Output = aws_config::SdkConfig> + Send;
}

/// The SDK's default chain: environment, profile files, web identity, container and instance
/// credentials. For the local server, wherever it runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultSdk;

impl SdkSource for DefaultSdk {
    fn load(self) -> impl Future<Output = aws_config::SdkConfig> + Send {
        AwsStorage::default_sdk_config()
    }
}

/// The environment alone (what Lambda provides): no network probe at start-up and none of the
/// default chain's providers linked in. For the functions.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvironmentSdk;

impl SdkSource for EnvironmentSdk {
    fn load(self) -> impl Future<Output = aws_config::SdkConfig> + Send {
        std::future::ready(AwsStorage::environment_sdk_config())
    }
}

/// The registry application, assembled by `App::builder`.
#[derive(Debug, Clone, Copy)]
pub struct App;

impl App {
    /// A builder for the application `config` describes: by default the configured backend
    /// (the AWS one's SDK by its default chain, its table and bucket checked), the configured
    /// auth mode and the backend's audit log.
    pub fn builder(config: Config) -> AppBuilder<DefaultSdk> {
        AppBuilder {
            config,
            sdk: DefaultSdk,
            after_response: None,
            check_resources: true,
            stores: None,
            renders: None,
            kv: None,
            auth: None,
            audit: None,
            upstream: None,
        }
    }
}

/// The stores of one backend, as the storage traits.
pub struct Stores {
    /// Package metadata.
    pub metadata: Arc<dyn MetadataStore>,
    /// Tarball bytes.
    pub tarballs: Arc<dyn TarballStore>,
    /// Caches and token records.
    pub kv: Arc<dyn KvStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditLog>,
    /// Rendered packuments kept between runs, where the backend keeps them.
    pub renders: Option<Arc<dyn RenderStore>>,
    /// What the pull-through cache keeps.
    pub upstream: Arc<dyn UpstreamStore>,
    /// The backend's signing key, where it has one (AWS: KMS); the local one is opened apart.
    pub signer: Option<Arc<dyn crate::signing::Signer>>,
}

/// How the application is put together; see `App::builder`.
pub struct AppBuilder<S> {
    config: Config,
    sdk: S,
    after_response: Option<Arc<AfterResponse>>,
    check_resources: bool,
    stores: Option<(Arc<dyn MetadataStore>, Arc<dyn TarballStore>)>,
    renders: Option<Arc<dyn RenderStore>>,
    kv: Option<Arc<dyn KvStore>>,
    auth: Option<Authorizer>,
    audit: Option<Arc<dyn AuditLog>>,
    upstream: Option<(Arc<dyn UpstreamStore>, Arc<dyn KvStore>)>,
}

impl<S: SdkSource> AppBuilder<S> {
    /// Configures the AWS SDK from `sdk` instead of the default chain.
    pub fn sdk<T: SdkSource>(self, sdk: T) -> AppBuilder<T> {
        AppBuilder {
            config: self.config,
            sdk,
            after_response: self.after_response,
            check_resources: self.check_resources,
            stores: self.stores,
            renders: self.renders,
            kv: self.kv,
            auth: self.auth,
            audit: self.audit,
            upstream: self.upstream,
        }
    }

    /// Lets the AWS backend write rebuilt snapshots after the response, in `queue` (see
    /// `AfterResponse`).
    pub fn after_response(mut self, queue: Arc<AfterResponse>) -> Self {
        self.after_response = Some(queue);
        self
    }

    /// Whether to refuse to start when the AWS table or bucket is missing (default: yes). The
    /// functions skip it: it would add a round trip to every cold start, the stack creates both
    /// with them, and a missing one still gets a clear answer (each request that needs it is a
    /// 503 naming it).
    pub fn check_resources(mut self, check: bool) -> Self {
        self.check_resources = check;
        self
    }

    /// Serves stores the caller already has instead of opening the configured backend. Unless
    /// given one, the authoriser is then open mode's and the audit log is kept in memory.
    pub fn stores(
        mut self,
        metadata: Arc<dyn MetadataStore>,
        tarballs: Arc<dyn TarballStore>,
    ) -> Self {
        self.stores = Some((metadata, tarballs));
        self
    }

    /// With `stores`: keeps GitHub mode's tokens and caches in `kv`, so the configured mode's
    /// authoriser can be built around stores the caller already has.
    pub fn kv(mut self, kv: Arc<dyn KvStore>) -> Self {
        self.kv = Some(kv);
        self
    }

    /// With `stores`: keeps rendered packuments between runs in `renders` (the configured
    /// backend's own, where it keeps them, otherwise).
    pub fn renders(mut self, renders: Arc<dyn RenderStore>) -> Self {
        self.renders = Some(renders);
        self
    }

    /// With `stores`: keeps what the pull-through cache fetches in `store` and `kv` (without
    /// them, names not stored here are redirected upstream).
    pub fn upstream(mut self, store: Arc<dyn UpstreamStore>, kv: Arc<dyn KvStore>) -> Self {
        self.upstream = Some((store, kv));
        self
    }

    /// Uses `auth` instead of the configured mode's authoriser.
    pub fn auth(mut self, auth: Authorizer) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Records writes in `audit` instead of the backend's audit log.
    pub fn audit(mut self, audit: Arc<dyn AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Opens the configured backend's stores (checking the AWS resources unless told not to).
    pub(crate) async fn open_stores(self) -> Result<Stores, StartError> {
        open_backend(
            &self.config,
            self.sdk,
            self.after_response,
            self.check_resources,
        )
        .await
    }

    /// The configured backend's audit log alone (`registry-server audit`): it needs neither the
    /// metadata database (which a running server holds) nor the bucket, nor any check of them.
    pub(crate) async fn open_audit_log(self) -> Result<Arc<dyn AuditLog>, StartError> {
        let retention = AuditRetention::days(self.config.audit.retention_days);
        Ok(match &self.config.storage {
            StorageConfig::Local { data_dir, .. } => {
                Arc::new(FileAuditLog::new(data_dir, retention))
            }
            StorageConfig::Aws(aws) => {
                let settings = aws::aws_settings(aws);
                let s = AwsStorage::new(&self.sdk.load().await, settings);
                Arc::new(s.audit_log(retention))
            }
        })
    }

    /// Builds the application's state.
    pub async fn build(self) -> Result<Arc<AppState>, StartError> {
        let AppBuilder {
            config,
            sdk,
            after_response,
            check_resources,
            stores,
            renders,
            kv,
            auth,
            audit,
            upstream,
        } = self;
        let mut backend_signer = None;
        let (metadata, tarballs, auth, audit, renders, kept, records) =
            if let Some((metadata, tarballs)) = stores {
                // Given stores keep what the cache fetches only where told (`upstream`).
                let kept = upstream;
                let records = kv.clone();
                let auth = match (auth, kv) {
                    (Some(auth), _) => auth,
                    (None, _) if config.auth.mode == AuthMode::Open => Authorizer::Open,
                    (None, Some(kv)) => auth::authorizer(&config, kv)?,
                    // GitHub mode keeps tokens and caches in the backend's key-value store.
                    (None, None) => {
                        return Err(StartError::Config(
                        "GitHub mode around given stores needs its authoriser (AppBuilder::auth) \
                         or a key-value store (AppBuilder::kv)"
                            .into(),
                    ));
                    }
                };
                let audit = audit.unwrap_or_else(|| {
                    Arc::new(MemoryAuditLog::new(AuditRetention::days(
                        config.audit.retention_days,
                    )))
                });
                (metadata, tarballs, auth, audit, renders, kept, records)
            } else {
                let stores =
                    open_backend(&config, sdk, after_response.clone(), check_resources).await?;
                let auth = match auth {
                    Some(auth) => auth,
                    None => auth::authorizer(&config, stores.kv.clone())?,
                };
                backend_signer = stores.signer;
                (
                    stores.metadata,
                    stores.tarballs,
                    auth,
                    audit.unwrap_or(stores.audit),
                    stores.renders,
                    Some((stores.upstream, stores.kv.clone())),
                    Some(stores.kv),
                )
            };
        let proxy = match kept {
            Some((store, kv)) => proxy(&config, store, kv, after_response)?,
            None => None,
        };
        let signing = signing(&config, records.as_ref(), backend_signer).await?;
        let sigstore_root = sigstore_root(&config)?;
        let records = Records {
            upstream: proxy,
            kv: records,
            signing,
            sigstore_root,
        };
        Ok(assemble(
            config, metadata, tarballs, auth, audit, renders, records,
        ))
    }
}

/// What the state keeps beside packages: the pull-through cache, and the key-value store for
/// records with an expiry (npm 1.x's uploads).
struct Records {
    upstream: Option<crate::upstream::Proxy>,
    kv: Option<Arc<dyn KvStore>>,
    signing: Option<Arc<crate::signing::Signing>>,
    sigstore_root: Option<Arc<crate::domain::provenance::TrustedRoot>>,
}

/// The Sigstore trusted root named by `REGISTRY_SIGSTORE_TRUSTED_ROOT`, read once at start; a
/// file that cannot be read or used stops the start (a registry that silently fell back to
/// another root would accept or refuse other bundles than its operator meant). None: the pinned
/// public-good root.
fn sigstore_root(
    config: &Config,
) -> Result<Option<Arc<crate::domain::provenance::TrustedRoot>>, StartError> {
    let Some(path) = &config.sigstore_trusted_root else {
        return Ok(None);
    };
    let refuse = |e: &dyn std::fmt::Display| {
        StartError::Config(format!(
            "REGISTRY_SIGSTORE_TRUSTED_ROOT: {}: {e}",
            path.display()
        ))
    };
    let json = std::fs::read(path).map_err(|e| refuse(&e))?;
    let root = crate::domain::provenance::TrustedRoot::from_json(&json).map_err(|e| refuse(&e))?;
    tracing::warn!(
        path = %path.display(),
        "provenance is verified against this Sigstore trusted root, not the public-good one pinned in the release"
    );
    Ok(Some(Arc::new(root)))
}

/// How versions are signed: on AWS with the backend's KMS key (listed at its first signature:
/// only the publish function may read it), on a local server (`REGISTRY_SIGNING`, on by default)
/// with the data directory's key, listed before the first request.
async fn signing(
    config: &Config,
    kv: Option<&Arc<dyn KvStore>>,
    backend_signer: Option<Arc<dyn crate::signing::Signer>>,
) -> Result<Option<Arc<crate::signing::Signing>>, StartError> {
    let Some(kv) = kv else {
        return Ok(None);
    };
    if let Some(signer) = backend_signer {
        return Ok(Some(Arc::new(crate::signing::Signing::new(
            signer,
            kv.clone(),
        ))));
    }
    let StorageConfig::Local { data_dir, .. } = &config.storage else {
        return Ok(None);
    };
    if config.signing == Some(false) {
        return Ok(None);
    }
    let signer = crate::signing::local::LocalSigner::open_or_create(data_dir)
        .map_err(|e| StartError::Config(format!("the signing key: {e}")))?;
    let signing = crate::signing::Signing::new(Arc::new(signer), kv.clone());
    signing
        .list_key()
        .await
        .map_err(|e| StartError::Config(e.to_string()))?;
    Ok(Some(Arc::new(signing)))
}

/// Opens `config`'s backend, the AWS SDK configured from `sdk`.
async fn open_backend(
    config: &Config,
    sdk: impl SdkSource,
    after_response: Option<Arc<AfterResponse>>,
    check_resources: bool,
) -> Result<Stores, StartError> {
    let retention = AuditRetention::days(config.audit.retention_days);
    Ok(match &config.storage {
        StorageConfig::Local {
            data_dir,
            db_cache_bytes,
            db_quick_repair,
        } => {
            let settings = embedded::Settings {
                cache_bytes: *db_cache_bytes,
                quick_repair: *db_quick_repair,
            };
            let (m, t) = embedded::open_configured(data_dir, settings)?;
            let m = Arc::new(m);
            Stores {
                metadata: m.clone(),
                upstream: Arc::new(t.upstream_store()),
                tarballs: Arc::new(t),
                kv: m.clone(),
                audit: Arc::new(FileAuditLog::new(data_dir, retention)),
                renders: Some(m),
                signer: None,
            }
        }
        StorageConfig::Aws(aws) => {
            let settings = aws::aws_settings(aws);
            let sdk_config = sdk.load().await;
            let signer = match (&config.signing_kms_key, config.signing) {
                (Some(key), None | Some(true)) => {
                    let endpoint = crate::config::Env::process().text("AWS_ENDPOINT_URL_KMS");
                    let signer =
                        crate::signing::kms::KmsSigner::new(&sdk_config, key, endpoint.as_deref());
                    Some(Arc::new(signer) as Arc<dyn crate::signing::Signer>)
                }
                _ => None,
            };
            let mut s = AwsStorage::new(&sdk_config, settings);
            if let Some(queue) = after_response {
                s = s.with_snapshot_writes_after_response(queue);
            }
            if check_resources {
                aws::check_aws_resources(&s).await?;
            }
            let s = Arc::new(s);
            Stores {
                metadata: s.clone(),
                upstream: s.clone(),
                tarballs: s.clone(),
                kv: s.clone(),
                audit: Arc::new(s.audit_log(retention)),
                renders: None,
                signer,
            }
        }
    })
}

/// The pull-through cache, when names not stored here are proxied (`REGISTRY_UPSTREAM_MODE`)
/// and some upstream is configured.
fn proxy(
    config: &Config,
    store: Arc<dyn UpstreamStore>,
    kv: Arc<dyn KvStore>,
    after_response: Option<Arc<AfterResponse>>,
) -> Result<Option<crate::upstream::Proxy>, StartError> {
    let upstream = &config.upstream;
    if upstream.mode != crate::config::UpstreamMode::Proxy
        || (config.scopes.upstream.is_none() && upstream.scoped.is_empty())
    {
        return Ok(None);
    }
    crate::upstream::Proxy::new(
        upstream,
        config.scopes.upstream.as_deref(),
        store,
        kv,
        after_response,
    )
    .map(Some)
    .map_err(StartError::Config)
}

/// The application state around stores, authoriser and audit log: limits and caches sized by
/// the configuration.
fn assemble(
    config: Config,
    metadata: Arc<dyn MetadataStore>,
    tarballs: Arc<dyn TarballStore>,
    auth: Authorizer,
    audit: Arc<dyn AuditLog>,
    renders: Option<Arc<dyn RenderStore>>,
    records: Records,
) -> Arc<AppState> {
    let Records {
        upstream,
        kv,
        signing,
        sigstore_root,
    } = records;
    let tarball_limits = TarballLimits {
        max_unpacked_bytes: config.limits.max_unpacked_bytes,
        ..TarballLimits::default()
    };
    let packuments = PackumentCache::new(
        config.limits.packument_cache_bytes,
        config.limits.render_bytes_in_flight,
    );
    // Every route reads and writes through the views: write routes read strongly through them
    // and refresh them, read routes use them (`storage::views`).
    let search = Arc::new(crate::search::Searcher::new(
        config.storage.search_refresh(),
    ));
    let views = Arc::new(
        PackageViews::new(metadata, config.storage.revision_check()).indexing(search.clone()),
    );
    let tarballs_kept = crate::http::tarball::TarballCache::new(config.limits.tarball_cache_bytes);
    let body_budget = Arc::new(tokio::sync::Semaphore::new(
        config
            .limits
            .max_body_bytes_in_flight
            .min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    Arc::new(AppState {
        scopes: scope_policy(&config),
        body_budget,
        metadata: views.clone(),
        views,
        search,
        tarballs,
        config,
        auth,
        tarball_limits,
        packuments,
        tarballs_kept,
        audit,
        renders,
        upstream,
        kv,
        signing,
        sigstore_root,
    })
}

/// The one owner allow-list, for the HTTP layer and the authoriser alike.
pub(crate) fn scope_policy(config: &Config) -> ScopePolicy {
    let upstream_scopes: Vec<String> = config
        .upstream
        .scoped
        .iter()
        .map(|(scope, _)| scope.clone())
        .collect();
    ScopePolicy::new(
        &config.scopes.allowed_owners,
        config.auth.mode == AuthMode::Github,
    )
    .with_upstream_scopes(&upstream_scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_root(path: Option<&std::path::Path>) -> Config {
        Config::from_lookup(|k| match k {
            "REGISTRY_SIGSTORE_TRUSTED_ROOT" => path.map(|p| p.to_string_lossy().into_owned()),
            _ => None,
        })
        .expect("a configuration")
    }

    /// `REGISTRY_SIGSTORE_TRUSTED_ROOT` unset keeps the pinned root; a file is read and used; a
    /// file that cannot be read or used stops the start, naming the setting.
    #[test]
    fn the_sigstore_trusted_root_is_the_pinned_one_unless_a_usable_file_is_named() {
        assert!(sigstore_root(&config_with_root(None)).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("trusted_root.json");
        std::fs::write(
            &good,
            crate::testing::sigstore::TestSigstore::new().trusted_root_json(),
        )
        .unwrap();
        assert!(
            sigstore_root(&config_with_root(Some(&good)))
                .unwrap()
                .is_some()
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{\"certificateAuthorities\": 3}").unwrap();
        for path in [bad, dir.path().join("missing.json")] {
            let err = sigstore_root(&config_with_root(Some(&path)))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("REGISTRY_SIGSTORE_TRUSTED_ROOT")
                    && err.contains(&*path.to_string_lossy()),
                "{err}"
            );
        }
    }
}
