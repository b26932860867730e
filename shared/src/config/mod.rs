//! The configuration contract shared by every binary (README, "Configuration"): environment
//! variables, which the local server's flags override. One reader (`Env`) with one grammar per
//! kind of value; one struct per concern, each read by its own `from_env`.

mod audit;
mod auth;
mod env;
mod limits;
mod scopes;
mod server;
mod storage;
mod upstream;

pub use audit::AuditConfig;
pub use auth::{AuthConfig, AuthMode, OauthConfig};
pub use env::Env;
pub use limits::LimitsConfig;
pub use scopes::ScopesConfig;
pub use server::ServerConfig;
pub use storage::{AwsConfig, DEFAULT_DB_CACHE_BYTES, StorageConfig};
pub use upstream::{UpstreamConfig, UpstreamMode, UpstreamRegistry};

/// A setting that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// `key`'s value is wrong: `message` says how.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// Every setting, parsed, by concern.
#[derive(Debug, Clone)]
pub struct Config {
    /// The listener and the address clients use.
    pub server: ServerConfig,
    /// The storage backend.
    pub storage: StorageConfig,
    /// The auth mode and its settings.
    pub auth: AuthConfig,
    /// Which names are served here, and the upstream registry for the rest.
    pub scopes: ScopesConfig,
    /// Body sizes, memory, overwrites.
    pub limits: LimitsConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// The pull-through cache of the upstream registries.
    pub upstream: UpstreamConfig,
    /// `REGISTRY_SIGNING`: whether versions get registry signatures (`dist.signatures`); on by
    /// default with local storage (a key in the data directory), off on AWS.
    pub signing: Option<bool>,
    /// `REGISTRY_SIGNING_KMS_KEY`: the KMS key (id, ARN or alias) that signs on AWS; without
    /// it the AWS backend signs nothing.
    pub signing_kms_key: Option<String>,
    /// `REGISTRY_SIGSTORE_TRUSTED_ROOT`: a Sigstore `trusted_root.json` file that provenance
    /// bundles are verified against instead of the public-good root pinned in the release: for a
    /// private Sigstore deployment, and for tests (whose bundles come from a CA and log made at
    /// test time). Unset (the default, and what the template deploys) means the pinned root.
    pub sigstore_trusted_root: Option<std::path::PathBuf>,
}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    /// Reads the settings through `get` (the environment, or flags layered over it).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Env::from_lookup(get))
    }

    /// Reads every concern's settings from `env`.
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env)?,
            storage: StorageConfig::from_env(env)?,
            auth: AuthConfig::from_env(env)?,
            scopes: ScopesConfig::from_env(env)?,
            limits: LimitsConfig::from_env(env)?,
            audit: AuditConfig::from_env(env)?,
            upstream: UpstreamConfig::from_env(env)?,
            signing: env.flag("REGISTRY_SIGNING")?,
            signing_kms_key: env.text("REGISTRY_SIGNING_KMS_KEY"),
            sigstore_trusted_root: env
                .text("REGISTRY_SIGSTORE_TRUSTED_ROOT")
                .map(std::path::PathBuf::from),
        })
    }

    /// How long an instance keeps a registry token's record for read routes
    /// (`REGISTRY_TOKEN_CACHE_SECONDS`): 10 s by default on AWS, where every request would
    /// otherwise read the token's partition; 0 by default on the local backend, as before.
    pub fn token_cache(&self) -> std::time::Duration {
        self.auth.token_cache.unwrap_or(match self.storage {
            StorageConfig::Local { .. } => std::time::Duration::ZERO,
            StorageConfig::Aws(_) => std::time::Duration::from_secs(10),
        })
    }
}

/// The log filter from `REGISTRY_LOG` (`info` by default): a default level and `target=level`
/// directives by target prefix, e.g. `debug,hyper=info,aws=warn`. A value that does not parse
/// falls back to `info` (with a warning on stderr) rather than stopping the process.
#[cfg(feature = "logging")]
pub fn log_filter() -> tracing_subscriber::filter::Targets {
    let spec = Env::process()
        .raw("REGISTRY_LOG")
        .unwrap_or_else(|| "info".into());
    spec.parse().unwrap_or_else(|e| {
        eprintln!("REGISTRY_LOG={spec:?} is not a log filter ({e}); logging at info");
        tracing_subscriber::filter::Targets::new()
            .with_default(tracing_subscriber::filter::LevelFilter::INFO)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A reader over `pairs` alone.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> Env<'static> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::read(&env(&[])).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:4873");
        assert!(matches!(c.storage, StorageConfig::Local { .. }));
        assert_eq!(c.auth.mode, AuthMode::Open);
        assert_eq!(
            c.scopes.upstream.as_deref(),
            Some("https://registry.npmjs.org")
        );
        assert!(!c.limits.allow_overwrite);
        assert_eq!(c.audit.retention_days, None);
    }

    #[test]
    fn every_concern_is_read_and_an_error_names_its_variable() {
        let c = Config::from_lookup(|k| match k {
            "REGISTRY_STORAGE" => Some("aws".into()),
            "REGISTRY_TABLE" => Some("t".into()),
            "REGISTRY_BUCKET" => Some("b".into()),
            "REGISTRY_MAX_CONNECTIONS" => Some("3".into()),
            "REGISTRY_UPSTREAM" => Some(String::new()),
            _ => None,
        })
        .unwrap();
        assert!(matches!(c.storage, StorageConfig::Aws(_)));
        assert_eq!(c.server.max_connections, 3);
        assert_eq!(c.scopes.upstream, None);
        assert_eq!(c.token_cache(), std::time::Duration::from_secs(10));
        assert_eq!(
            Config::read(&env(&[])).unwrap().token_cache(),
            std::time::Duration::ZERO
        );
        for (key, value) in [
            ("REGISTRY_LISTEN", "nope"),
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_AUTH", "ldap"),
            ("REGISTRY_MAX_BODY_BYTES", "big"),
            ("REGISTRY_AUDIT_RETENTION_DAYS", "-3"),
        ] {
            let e = Config::read(&env(&[(key, value)])).unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
        }
    }
}
