//! The configuration contract shared by every binary (README, "Configuration"): environment variables, which
//! the local server's flags override.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A setting that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Where metadata and tarballs live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// redb and files under the data directory.
    Local,
    /// DynamoDB and S3.
    Aws,
}

/// Who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who can reach the listener may read and publish.
    Open,
    /// GitHub repository permissions decide.
    Github,
}

/// Default largest publish body: a 48 MiB tarball once base64-encoded, plus its manifest.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;
/// Default memory for rendered packuments: the documents of a busy install (a few hundred packages
/// at tens of KB each, identity and gzip) fit, and the server stays well inside 64 MB.
pub const DEFAULT_PACKUMENT_CACHE_BYTES: usize = 16 << 20;
/// Default time a client has from connecting (or, on a reused connection, from its first byte)
/// to the end of a request's headers: hyper's and Apache's choice, far above any real client's.
pub const DEFAULT_HEADER_TIMEOUT_SECONDS: u64 = 30;
/// Default time a keep-alive connection may wait for its next request: above npm's own reuse of
/// idle sockets, so the server seldom closes one a client is about to use.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 60;
/// Default longest pause in sending a request body or reading a response, which is also the
/// grace before the body's minimum rate applies (nginx's client_body and send timeouts are 60 s).
pub const DEFAULT_BODY_TIMEOUT_SECONDS: u64 = 30;
/// Default least average rate of a request body: 16 KiB/s (128 kbit/s) lets a 64 MiB publish take
/// over an hour, yet costs a client holding a connection open with a trickle real bandwidth.
pub const DEFAULT_BODY_MIN_BYTES_PER_SECOND: u64 = 16 << 10;
/// Default cap on open connections: well inside the usual 1,024-descriptor limit, leaving room
/// for the database and tarball files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Every setting, parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// `REGISTRY_LISTEN`.
    pub listen: SocketAddr,
    /// `REGISTRY_PUBLIC_URL`, without a trailing slash; `None` means "from the request's host".
    pub public_url: Option<String>,
    /// `REGISTRY_STORAGE`.
    pub storage: StorageKind,
    /// `REGISTRY_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `REGISTRY_TABLE`.
    pub table: Option<String>,
    /// `REGISTRY_BUCKET`.
    pub bucket: Option<String>,
    /// `REGISTRY_AUTH`.
    pub auth: AuthMode,
    /// `GITHUB_API_URL`.
    pub github_api_url: String,
    /// `REGISTRY_ALLOWED_OWNERS`, lowercased; empty means any.
    pub allowed_owners: Vec<String>,
    /// `REGISTRY_UPSTREAM`, without a trailing slash; `None` when set to the empty string.
    pub upstream: Option<String>,
    /// `REGISTRY_TOKEN_SECRET`.
    pub token_secret: Option<crate::secret::Secret>,
    /// `REGISTRY_PRESIGN_SECONDS`.
    pub presign_seconds: u64,
    /// `REGISTRY_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `REGISTRY_MAX_BODY_BYTES_IN_FLIGHT`: bytes of request bodies held at once, across requests.
    pub max_body_bytes_in_flight: usize,
    /// `REGISTRY_ALLOW_OVERWRITE`: let a publish replace an existing (not unpublished) version.
    pub allow_overwrite: bool,
    /// `REGISTRY_MAX_UNPACKED_BYTES`: most bytes a published tarball may unpack to.
    pub max_unpacked_bytes: u64,
    /// `REGISTRY_PUBLIC_READ`: packages of public repositories can be read without a token.
    pub public_read: bool,
    /// `REGISTRY_GITHUB_CACHE_SECONDS`: how long a GitHub answer serves reads before revalidation.
    pub github_cache_seconds: u64,
    /// `REGISTRY_TOKEN_DAYS`: lifetime of registry tokens from `npm login`.
    pub token_days: u64,
    /// `REGISTRY_PACKUMENT_CACHE_BYTES`: memory for rendered packuments (0 turns the cache off).
    pub packument_cache_bytes: usize,
    /// `REGISTRY_HEADER_TIMEOUT_SECONDS`: local server; time allowed for a request's headers (0 = none).
    pub header_timeout_seconds: u64,
    /// `REGISTRY_IDLE_TIMEOUT_SECONDS`: local server; how long a keep-alive connection waits (0 = forever).
    pub idle_timeout_seconds: u64,
    /// `REGISTRY_BODY_TIMEOUT_SECONDS`: local server; longest pause in a body or response (0 = none).
    pub body_timeout_seconds: u64,
    /// `REGISTRY_BODY_MIN_BYTES_PER_SECOND`: local server; least average body rate (0 = none).
    pub body_min_bytes_per_second: u64,
    /// `REGISTRY_MAX_CONNECTIONS`: local server; most connections open at once (0 = no cap).
    pub max_connections: usize,
    /// `REGISTRY_OIDC_ISSUER`: the OIDC issuer whose ID tokens trusted publishing accepts.
    pub oidc_issuer: String,
    /// Days the audit log keeps an event (`REGISTRY_AUDIT_RETENTION_DAYS`); `None`: forever.
    pub audit_retention_days: Option<u64>,
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError {
            key,
            message: format!("'{v}' is not a boolean"),
        }),
    }
}

fn parse_num<T: std::str::FromStr>(key: &'static str, v: &str) -> Result<T, ConfigError> {
    v.trim().parse().map_err(|_| ConfigError {
        key,
        message: format!("'{v}' is not a number"),
    })
}

/// `REGISTRY_OIDC_ISSUER`: an http(s) URL without a trailing slash (GitHub Actions' by default).
fn oidc_issuer(value: Option<String>) -> Result<String, ConfigError> {
    let Some(text) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(crate::auth::oidc::GITHUB_ACTIONS_ISSUER.to_string());
    };
    let text = text.trim().trim_end_matches('/').to_string();
    match url::Url::parse(&text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(text),
        _ => Err(ConfigError {
            key: "REGISTRY_OIDC_ISSUER",
            message: format!("'{text}' is not an http(s) URL"),
        }),
    }
}

impl Config {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get` (the environment, or flags layered over it).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let listen_text = get("REGISTRY_LISTEN").unwrap_or_else(|| "127.0.0.1:4873".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError {
            key: "REGISTRY_LISTEN",
            message: format!("'{listen_text}' is not host:port"),
        })?;
        let public_url = match get("REGISTRY_PUBLIC_URL").filter(|s| !s.is_empty()) {
            Some(u) => {
                let parsed = url::Url::parse(&u).map_err(|e| ConfigError {
                    key: "REGISTRY_PUBLIC_URL",
                    message: e.to_string(),
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError {
                        key: "REGISTRY_PUBLIC_URL",
                        message: "must be http or https".into(),
                    });
                }
                Some(u.trim_end_matches('/').to_string())
            }
            None => None,
        };
        let storage = match get("REGISTRY_STORAGE").as_deref().unwrap_or("local") {
            "local" => StorageKind::Local,
            "aws" => StorageKind::Aws,
            other => {
                return Err(ConfigError {
                    key: "REGISTRY_STORAGE",
                    message: format!("'{other}' is not local or aws"),
                });
            }
        };
        let auth = match get("REGISTRY_AUTH").as_deref().unwrap_or("open") {
            "open" => AuthMode::Open,
            "github" => AuthMode::Github,
            other => {
                return Err(ConfigError {
                    key: "REGISTRY_AUTH",
                    message: format!("'{other}' is not open or github"),
                });
            }
        };
        let upstream = match get("REGISTRY_UPSTREAM") {
            None => Some("https://registry.npmjs.org".to_string()),
            Some(u) if u.trim().is_empty() => None,
            Some(u) => Some(u.trim().trim_end_matches('/').to_string()),
        };
        let mut config = Self {
            listen,
            public_url,
            storage,
            data_dir: PathBuf::from(get("REGISTRY_DATA_DIR").unwrap_or_else(|| "./data".into())),
            table: get("REGISTRY_TABLE").filter(|s| !s.is_empty()),
            bucket: get("REGISTRY_BUCKET").filter(|s| !s.is_empty()),
            auth,
            github_api_url: get("GITHUB_API_URL")
                .unwrap_or_else(|| "https://api.github.com".into()),
            allowed_owners: get("REGISTRY_ALLOWED_OWNERS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            upstream,
            token_secret: get("REGISTRY_TOKEN_SECRET")
                .filter(|s| !s.is_empty())
                .map(crate::secret::Secret::new),
            presign_seconds: get("REGISTRY_PRESIGN_SECONDS")
                .map(|v| parse_num("REGISTRY_PRESIGN_SECONDS", &v))
                .transpose()?
                .unwrap_or(300),
            max_body_bytes: get("REGISTRY_MAX_BODY_BYTES")
                .map(|v| parse_num("REGISTRY_MAX_BODY_BYTES", &v))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            max_body_bytes_in_flight: get("REGISTRY_MAX_BODY_BYTES_IN_FLIGHT")
                .map(|v| parse_num("REGISTRY_MAX_BODY_BYTES_IN_FLIGHT", &v))
                .transpose()?
                .unwrap_or(0),
            allow_overwrite: get("REGISTRY_ALLOW_OVERWRITE")
                .map(|v| parse_bool("REGISTRY_ALLOW_OVERWRITE", &v))
                .transpose()?
                .unwrap_or(false),
            max_unpacked_bytes: get("REGISTRY_MAX_UNPACKED_BYTES")
                .map(|v| parse_num("REGISTRY_MAX_UNPACKED_BYTES", &v))
                .transpose()?
                .unwrap_or(1 << 30),
            public_read: get("REGISTRY_PUBLIC_READ")
                .map(|v| parse_bool("REGISTRY_PUBLIC_READ", &v))
                .transpose()?
                .unwrap_or(false),
            github_cache_seconds: get("REGISTRY_GITHUB_CACHE_SECONDS")
                .map(|v| parse_num("REGISTRY_GITHUB_CACHE_SECONDS", &v))
                .transpose()?
                .unwrap_or(60),
            token_days: get("REGISTRY_TOKEN_DAYS")
                .map(|v| parse_num("REGISTRY_TOKEN_DAYS", &v))
                .transpose()?
                .unwrap_or(30),
            packument_cache_bytes: get("REGISTRY_PACKUMENT_CACHE_BYTES")
                .map(|v| parse_num("REGISTRY_PACKUMENT_CACHE_BYTES", &v))
                .transpose()?
                .unwrap_or(DEFAULT_PACKUMENT_CACHE_BYTES),
            header_timeout_seconds: get("REGISTRY_HEADER_TIMEOUT_SECONDS")
                .map(|v| parse_num("REGISTRY_HEADER_TIMEOUT_SECONDS", &v))
                .transpose()?
                .unwrap_or(DEFAULT_HEADER_TIMEOUT_SECONDS),
            idle_timeout_seconds: get("REGISTRY_IDLE_TIMEOUT_SECONDS")
                .map(|v| parse_num("REGISTRY_IDLE_TIMEOUT_SECONDS", &v))
                .transpose()?
                .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECONDS),
            body_timeout_seconds: get("REGISTRY_BODY_TIMEOUT_SECONDS")
                .map(|v| parse_num("REGISTRY_BODY_TIMEOUT_SECONDS", &v))
                .transpose()?
                .unwrap_or(DEFAULT_BODY_TIMEOUT_SECONDS),
            body_min_bytes_per_second: get("REGISTRY_BODY_MIN_BYTES_PER_SECOND")
                .map(|v| parse_num("REGISTRY_BODY_MIN_BYTES_PER_SECOND", &v))
                .transpose()?
                .unwrap_or(DEFAULT_BODY_MIN_BYTES_PER_SECOND),
            max_connections: get("REGISTRY_MAX_CONNECTIONS")
                .map(|v| parse_num("REGISTRY_MAX_CONNECTIONS", &v))
                .transpose()?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            oidc_issuer: oidc_issuer(get("REGISTRY_OIDC_ISSUER"))?,
            audit_retention_days: get("REGISTRY_AUDIT_RETENTION_DAYS")
                .filter(|v| !v.trim().is_empty())
                .map(|v| parse_num::<u64>("REGISTRY_AUDIT_RETENTION_DAYS", &v))
                .transpose()?
                .filter(|days| *days > 0),
        };
        // By default two of the largest bodies at once: a burst of big publishes waits its
        // turn (503, Retry-After) instead of taking the process's memory.
        if config.max_body_bytes_in_flight == 0 {
            config.max_body_bytes_in_flight = config.max_body_bytes.saturating_mul(2);
        }
        Ok(config)
    }
}

/// The log filter from `REGISTRY_LOG` (`info` by default): a default level and `target=level`
/// directives by target prefix, e.g. `debug,hyper=info,aws=warn`. A value that does not parse
/// falls back to `info` (with a warning on stderr) rather than stopping the process.
#[cfg(feature = "logging")]
pub fn log_filter() -> tracing_subscriber::filter::Targets {
    let spec = std::env::var("REGISTRY_LOG").unwrap_or_else(|_| "info".into());
    spec.parse().unwrap_or_else(|e| {
        eprintln!("REGISTRY_LOG={spec:?} is not a log filter ({e}); logging at info");
        tracing_subscriber::filter::Targets::new()
            .with_default(tracing_subscriber::filter::LevelFilter::INFO)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4873");
        assert_eq!(c.storage, StorageKind::Local);
        assert_eq!(c.auth, AuthMode::Open);
        assert_eq!(c.upstream.as_deref(), Some("https://registry.npmjs.org"));
        assert_eq!(c.presign_seconds, 300);
        assert!(!c.allow_overwrite);
    }

    #[test]
    fn settings_parse_and_errors_name_the_variable() {
        let c = cfg(&[
            ("REGISTRY_UPSTREAM", ""),
            ("REGISTRY_PUBLIC_URL", "https://r.example/npm/"),
            ("REGISTRY_ALLOWED_OWNERS", "Acme, b"),
        ])
        .unwrap();
        assert_eq!(c.upstream, None);
        assert_eq!(c.public_url.as_deref(), Some("https://r.example/npm"));
        assert_eq!(c.allowed_owners, ["acme", "b"]);
        assert_eq!(
            cfg(&[("REGISTRY_STORAGE", "s3")]).unwrap_err().key,
            "REGISTRY_STORAGE"
        );
        assert_eq!(
            cfg(&[("REGISTRY_LISTEN", "nope")]).unwrap_err().key,
            "REGISTRY_LISTEN"
        );
        assert_eq!(
            cfg(&[]).unwrap().oidc_issuer,
            "https://token.actions.githubusercontent.com"
        );
        assert_eq!(
            cfg(&[(
                "REGISTRY_OIDC_ISSUER",
                "https://ghe.example.com/_services/token/"
            )])
            .unwrap()
            .oidc_issuer,
            "https://ghe.example.com/_services/token"
        );
        assert_eq!(
            cfg(&[("REGISTRY_OIDC_ISSUER", "ftp://x")]).unwrap_err().key,
            "REGISTRY_OIDC_ISSUER"
        );
    }
}
