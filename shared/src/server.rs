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
use crate::storage::audit_file::FileAuditLog;
use crate::storage::aws::{AwsSettings, AwsStorage, ProblemKind, ResourceProblem};
use crate::storage::{
    AfterResponse, AuditLog, AuditRetention, KvStore, MemoryAuditLog, MetadataStore, TarballStore,
    embedded,
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
    /// The audit log.
    pub audit: Arc<dyn AuditLog>,
    /// The AWS backend itself, when it is the configured one.
    pub aws: Option<Arc<AwsStorage>>,
}

/// Opens the configured backend, the AWS SDK configured by its default chain; the AWS backend's
/// table and bucket must exist (see `check_aws_resources`).
pub async fn open_stores(config: &Config) -> Result<Stores, StartError> {
    let stores = open_stores_with_sdk(config, AwsStorage::default_sdk_config, None).await?;
    if let Some(aws) = &stores.aws {
        check_aws_resources(aws).await?;
    }
    Ok(stores)
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
    let retention = AuditRetention::days(config.audit_retention_days);
    Ok(match config.storage {
        StorageKind::Local => {
            let (m, t) = embedded::open(&config.data_dir)?;
            let m = Arc::new(m);
            Stores {
                metadata: m.clone(),
                tarballs: Arc::new(t),
                kv: m,
                audit: Arc::new(FileAuditLog::new(&config.data_dir, retention)),
                aws: None,
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
                kv: s.clone(),
                audit: Arc::new(s.audit_log(retention)),
                aws: Some(s),
            }
        }
    })
}

/// Refuses to start on a missing (or unreachable) table or bucket, with a message naming it,
/// the endpoint and the command that creates it: otherwise every request would fail while the
/// process looked healthy. One round trip (`DescribeTable` and `HeadBucket` side by side).
pub async fn check_aws_resources(aws: &AwsStorage) -> Result<(), StartError> {
    let started = std::time::Instant::now();
    let checked = aws.check_resources().await;
    tracing::info!(
        table = aws.table_name(),
        bucket = aws.bucket_name(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        ok = checked.is_ok(),
        "checked the AWS resources"
    );
    let Err(problems) = checked else {
        return Ok(());
    };
    let setup = AwsSetup {
        table: aws.table_name().to_string(),
        bucket: aws.bucket_name().to_string(),
        region: aws.region(),
        dynamodb_endpoint: aws.dynamodb_endpoint().await,
        s3_endpoint: aws.s3_endpoint().await,
        dynamodb_variable: env_nonempty("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        s3_variable: env_nonempty("AWS_ENDPOINT_URL_S3").is_some(),
        shared_variable: env_nonempty("AWS_ENDPOINT_URL").is_some(),
    };
    Err(StartError::Resources(resources_message(
        &setup,
        &problems.0,
    )))
}

/// What the start-up message says about the AWS set-up.
#[derive(Debug, Clone)]
struct AwsSetup {
    table: String,
    bucket: String,
    region: Option<String>,
    dynamodb_endpoint: String,
    s3_endpoint: String,
    /// Whether `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` are set.
    dynamodb_variable: bool,
    s3_variable: bool,
    shared_variable: bool,
}

impl AwsSetup {
    /// Where a service's endpoint came from.
    fn source(&self, service: &str) -> String {
        let (own, variable) = match service {
            "S3" => (self.s3_variable, "AWS_ENDPOINT_URL_S3"),
            _ => (self.dynamodb_variable, "AWS_ENDPOINT_URL_DYNAMODB"),
        };
        match (own, self.shared_variable, &self.region) {
            (true, _, _) => format!("from {variable}"),
            (false, true, _) => "from AWS_ENDPOINT_URL".into(),
            (false, false, Some(region)) => {
                format!("the default for region {region}; {variable} is not set")
            }
            (false, false, None) => "unknown: no region is set (AWS_REGION)".into(),
        }
    }

    /// Whether the endpoints are an emulator's (or anything but AWS's own).
    fn emulated(&self) -> bool {
        self.dynamodb_variable || self.s3_variable || self.shared_variable
    }
}

/// The operator's message for what the start-up check found: each problem with where its
/// endpoint came from, then how to create what is missing (emulators: `create_resources.py` on
/// the endpoints in use; AWS: the SAM stack, or the same script).
fn resources_message(setup: &AwsSetup, problems: &[ResourceProblem]) -> String {
    use std::fmt::Write;
    let mut out = String::from("cannot start: the AWS storage is not ready:\n");
    for problem in problems {
        let _ = writeln!(
            out,
            "  - {problem} (endpoint: {})",
            setup.source(problem.service)
        );
    }
    let AwsSetup { table, bucket, .. } = setup;
    if problems.iter().any(|p| p.kind == ProblemKind::Missing) {
        if setup.emulated() {
            let _ = writeln!(
                out,
                "Create what is missing with the repository's script (idempotent: what exists \
                 is left alone):\n  \
                 python3 localstack/create_resources.py --table {table} --bucket {bucket} \
                 --dynamodb-endpoint {} --s3-endpoint {}",
                setup.dynamodb_endpoint, setup.s3_endpoint,
            );
        } else {
            let region = setup.region.as_deref().unwrap_or("REGION");
            let _ = writeln!(
                out,
                "On AWS, deploy the stack, which creates both (README, \"Deploy to AWS\"):\n  \
                 sam build --template infra/template.yaml --beta-features && sam deploy --guided\n\
                 and set REGISTRY_TABLE and REGISTRY_BUCKET to its TableName and BucketName \
                 outputs; or create them under these names:\n  \
                 python3 localstack/create_resources.py --table {table} --bucket {bucket} --region {region}",
            );
        }
        out.push_str("If a name is wrong instead, fix REGISTRY_TABLE or REGISTRY_BUCKET.\n");
    }
    let unreachable = problems
        .iter()
        .any(|p| matches!(p.kind, ProblemKind::Unreachable(_)));
    if unreachable && setup.emulated() {
        out.push_str(
            "Nothing answered at an endpoint above: start the emulators (README, \"Run locally \
             against LocalStack\") or fix the endpoint variable.\n",
        );
    } else if unreachable {
        out.push_str(
            "AWS did not answer: check the network (a proxy: HTTPS_PROXY) and the region.\n",
        );
    }
    out.trim_end().to_string()
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
            let verifier = crate::auth::oidc::IdTokenVerifier::new(
                &config.oidc_issuer,
                crate::auth::oidc::KeyCache::new(Box::new(crate::auth::oidc::HttpKeyFetcher::new(
                    &config.oidc_issuer,
                ))),
            );
            Authorizer::Github(Box::new(
                GithubAuth::new(Arc::new(api), kv, tokens, settings)
                    .with_trusted_publishing(verifier),
            ))
        }
    })
}

/// Builds the shared state for `config`: storage backend (the AWS one's table and bucket
/// checked, see `open_stores`), auth mode, limits. For the local server.
pub async fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
    let stores = open_stores(&config).await?;
    state_from(config, stores)
}

/// `build_state`, with the AWS SDK configured by `sdk` and writes that may follow the response
/// queued in `after_response` (see `open_stores_with_sdk`); the resources are not checked
/// (the functions' choice, see `lambda::run`).
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
    state_from(config, stores)
}

fn state_from(config: Config, stores: Stores) -> Result<Arc<AppState>, StartError> {
    let auth = authorizer(&config, stores.kv.clone())?;
    Ok(build_with_audit(
        config,
        stores.metadata,
        stores.tarballs,
        auth,
        stores.audit,
    ))
}

/// The configured backend's audit log alone (`registry-server audit`): it needs neither the
/// metadata database (which the running server holds) nor the bucket.
pub async fn open_audit_log(config: &Config) -> Result<Arc<dyn AuditLog>, StartError> {
    let retention = AuditRetention::days(config.audit_retention_days);
    Ok(match config.storage {
        StorageKind::Local => Arc::new(FileAuditLog::new(&config.data_dir, retention)),
        StorageKind::Aws => {
            let settings = aws_settings(config)?;
            let s = AwsStorage::new(&AwsStorage::default_sdk_config().await, settings);
            Arc::new(s.audit_log(retention))
        }
    })
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

/// What `registry-server audit` prints: the events of `package` (or all) since `since` (an RFC
/// 3339 time or a duration back from now, `24h`, `7d`), at most the newest `limit`, as a table
/// or (`json`) one JSON object per line.
pub async fn audit_listing(
    config: &Config,
    package: Option<&str>,
    since: Option<&str>,
    limit: Option<usize>,
    json: bool,
) -> Result<String, StartError> {
    use crate::domain::audit::{AuditQuery, parse_since, render_table};
    let package = package
        .map(|p| {
            crate::domain::PackageName::parse(p).map_err(|e| {
                StartError::Usage(format!("--package '{p}' is not a package name: {e}"))
            })
        })
        .transpose()?;
    let since = since
        .map(|s| {
            parse_since(s, chrono::Utc::now())
                .map_err(|e| StartError::Usage(format!("--since: {e}")))
        })
        .transpose()?;
    let log = open_audit_log(config).await?;
    let events = log
        .query(&AuditQuery {
            package,
            since,
            limit,
        })
        .await?;
    if !json {
        return Ok(render_table(&events));
    }
    let mut out = String::new();
    for event in &events {
        out.push_str(&serde_json::to_string(event).map_err(|e| StartError::Config(e.to_string()))?);
        out.push('\n');
    }
    Ok(out)
}

/// Builds open-mode state around stores the caller already has (tests, request counting).
pub fn build_with(
    config: Config,
    metadata: Arc<dyn MetadataStore>,
    tarballs: Arc<dyn TarballStore>,
) -> Arc<AppState> {
    build_with_auth(config, metadata, tarballs, Authorizer::Open)
}

/// Builds state around stores and an authoriser the caller already has, the audit log kept in
/// memory.
pub fn build_with_auth(
    config: Config,
    metadata: Arc<dyn MetadataStore>,
    tarballs: Arc<dyn TarballStore>,
    auth: Authorizer,
) -> Arc<AppState> {
    let audit = Arc::new(MemoryAuditLog::new(AuditRetention::days(
        config.audit_retention_days,
    )));
    build_with_audit(config, metadata, tarballs, auth, audit)
}

/// Builds state around stores, an authoriser and an audit log the caller already has.
pub fn build_with_audit(
    config: Config,
    metadata: Arc<dyn MetadataStore>,
    tarballs: Arc<dyn TarballStore>,
    auth: Authorizer,
    audit: Arc<dyn AuditLog>,
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
        audit,
    })
}

#[cfg(test)]
mod tests {
    use super::{AwsSetup, ProblemKind, ResourceProblem, resources_message};

    fn setup(emulated: bool) -> AwsSetup {
        let (ddb, s3) = if emulated {
            ("http://127.0.0.1:5000", "http://127.0.0.1:4566")
        } else {
            (
                "https://dynamodb.eu-west-1.amazonaws.com",
                "https://s3.eu-west-1.amazonaws.com",
            )
        };
        AwsSetup {
            table: "npm-registry".into(),
            bucket: "npm-tarballs".into(),
            region: Some("eu-west-1".into()),
            dynamodb_endpoint: ddb.into(),
            s3_endpoint: s3.into(),
            dynamodb_variable: emulated,
            s3_variable: emulated,
            shared_variable: false,
        }
    }

    fn missing_table(setup: &AwsSetup) -> ResourceProblem {
        ResourceProblem {
            service: "DynamoDB",
            resource: "DynamoDB table 'npm-registry'".into(),
            endpoint: setup.dynamodb_endpoint.clone(),
            kind: ProblemKind::Missing,
        }
    }

    #[test]
    fn on_aws_a_missing_table_points_at_the_stack_and_the_script() {
        let setup = setup(false);
        let message = resources_message(&setup, &[missing_table(&setup)]);
        for needle in [
            "DynamoDB table 'npm-registry' does not exist at https://dynamodb.eu-west-1.amazonaws.com",
            "(endpoint: the default for region eu-west-1; AWS_ENDPOINT_URL_DYNAMODB is not set)",
            "sam deploy --guided",
            "TableName and BucketName",
            "create_resources.py --table npm-registry --bucket npm-tarballs --region eu-west-1",
        ] {
            assert!(message.contains(needle), "{needle:?} in:\n{message}");
        }
        assert!(!message.contains("--dynamodb-endpoint"), "{message}");
    }

    #[test]
    fn on_emulators_the_script_gets_the_endpoints_in_use() {
        let setup = setup(true);
        let unreachable = ResourceProblem {
            service: "S3",
            resource: "S3 bucket 'npm-tarballs'".into(),
            endpoint: setup.s3_endpoint.clone(),
            kind: ProblemKind::Unreachable("connection refused".into()),
        };
        let message = resources_message(&setup, &[missing_table(&setup), unreachable]);
        for needle in [
            "(endpoint: from AWS_ENDPOINT_URL_DYNAMODB)",
            "cannot reach S3 at http://127.0.0.1:4566 to check S3 bucket 'npm-tarballs': connection refused (endpoint: from AWS_ENDPOINT_URL_S3)",
            "create_resources.py --table npm-registry --bucket npm-tarballs --dynamodb-endpoint http://127.0.0.1:5000 --s3-endpoint http://127.0.0.1:4566",
            "start the emulators",
        ] {
            assert!(message.contains(needle), "{needle:?} in:\n{message}");
        }
        assert!(!message.contains("sam deploy"), "{message}");
    }

    #[test]
    fn an_unreachable_endpoint_alone_offers_no_create_command() {
        let setup = setup(true);
        let unreachable = ResourceProblem {
            service: "DynamoDB",
            resource: "DynamoDB table 'npm-registry'".into(),
            endpoint: setup.dynamodb_endpoint.clone(),
            kind: ProblemKind::Unreachable("connection refused".into()),
        };
        let message = resources_message(&setup, &[unreachable]);
        assert!(message.contains("cannot reach DynamoDB"), "{message}");
        assert!(!message.contains("create_resources.py"), "{message}");
        assert!(!message.contains("does not exist"), "{message}");
    }
}
