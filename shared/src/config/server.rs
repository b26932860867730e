//! Where the registry listens and is reached, and the local server's bounds on each connection.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, Env};

/// Default time a client has from connecting (or, on a reused connection, from its first byte)
/// to the end of a request's headers: hyper's and Apache's choice, far above any real client's.
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a keep-alive connection may wait for its next request: above npm's own reuse of
/// idle sockets, so the server seldom closes one a client is about to use.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest pause in sending a request body or reading a response, which is also the
/// grace before the body's minimum rate applies (nginx's client_body and send timeouts are 60 s).
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default least average rate of a request body: 16 KiB/s (128 kbit/s) lets a 64 MiB publish take
/// over an hour, yet costs a client holding a connection open with a trickle real bandwidth.
const DEFAULT_BODY_MIN_BYTES_PER_SECOND: u64 = 16 << 10;
/// Default cap on open connections: well inside the usual 1,024-descriptor limit, leaving room
/// for the database and tarball files.
const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The listener and the address clients use.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `REGISTRY_LISTEN`.
    pub listen: SocketAddr,
    /// `REGISTRY_PUBLIC_URL`, without a trailing slash; `None` means "from the request's host".
    pub public_url: Option<String>,
    /// `REGISTRY_HEADER_TIMEOUT_SECONDS`: time allowed for a request's headers (`None`: no limit).
    pub header_timeout: Option<Duration>,
    /// `REGISTRY_IDLE_TIMEOUT_SECONDS`: how long a keep-alive connection waits (`None`: forever).
    pub idle_timeout: Option<Duration>,
    /// `REGISTRY_BODY_TIMEOUT_SECONDS`: longest pause in a body or response (`None`: no limit).
    pub body_timeout: Option<Duration>,
    /// `REGISTRY_BODY_MIN_BYTES_PER_SECOND`: least average body rate (0 = none).
    pub body_min_bytes_per_second: u64,
    /// `REGISTRY_MAX_CONNECTIONS`: most connections open at once (0 = no cap).
    pub max_connections: usize,
}

impl ServerConfig {
    /// Reads the listener's settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let listen_text = env
            .raw("REGISTRY_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:4873".into());
        let listen = listen_text.parse().map_err(|_| {
            ConfigError::new(
                "REGISTRY_LISTEN",
                format!("'{listen_text}' is not host:port"),
            )
        })?;
        Ok(Self {
            listen,
            public_url: public_url(env.text("REGISTRY_PUBLIC_URL"))?,
            header_timeout: timeout(
                env,
                "REGISTRY_HEADER_TIMEOUT_SECONDS",
                DEFAULT_HEADER_TIMEOUT,
            )?,
            idle_timeout: timeout(env, "REGISTRY_IDLE_TIMEOUT_SECONDS", DEFAULT_IDLE_TIMEOUT)?,
            body_timeout: timeout(env, "REGISTRY_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT)?,
            body_min_bytes_per_second: env
                .number("REGISTRY_BODY_MIN_BYTES_PER_SECOND")?
                .unwrap_or(DEFAULT_BODY_MIN_BYTES_PER_SECOND),
            max_connections: env
                .number("REGISTRY_MAX_CONNECTIONS")?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
        })
    }
}

/// A timeout in seconds where 0 means none.
fn timeout(
    env: &Env,
    key: &'static str,
    default: Duration,
) -> Result<Option<Duration>, ConfigError> {
    let value = env.seconds(key)?.unwrap_or(default);
    Ok((!value.is_zero()).then_some(value))
}

/// `REGISTRY_PUBLIC_URL`: an http(s) URL, kept without its trailing slash.
fn public_url(value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let parsed = url::Url::parse(&text)
        .map_err(|e| ConfigError::new("REGISTRY_PUBLIC_URL", e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            "REGISTRY_PUBLIC_URL",
            "must be http or https",
        ));
    }
    Ok(Some(text.trim_end_matches('/').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn defaults_and_zero_timeouts() {
        let c = ServerConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4873");
        assert_eq!(c.public_url, None);
        assert_eq!(c.header_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.body_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.body_min_bytes_per_second, 16 << 10);
        assert_eq!(c.max_connections, 512);
        let c = ServerConfig::from_env(&env(&[
            ("REGISTRY_HEADER_TIMEOUT_SECONDS", "0"),
            ("REGISTRY_IDLE_TIMEOUT_SECONDS", "5"),
            ("REGISTRY_PUBLIC_URL", "https://r.example/npm/"),
        ]))
        .unwrap();
        assert_eq!(c.header_timeout, None);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.public_url.as_deref(), Some("https://r.example/npm"));
    }

    #[test]
    fn errors_name_the_variable() {
        for (key, value) in [
            ("REGISTRY_LISTEN", "nope"),
            ("REGISTRY_LISTEN", ""),
            ("REGISTRY_PUBLIC_URL", "ftp://r.example"),
            ("REGISTRY_PUBLIC_URL", "not a url"),
            ("REGISTRY_HEADER_TIMEOUT_SECONDS", "soon"),
            ("REGISTRY_IDLE_TIMEOUT_SECONDS", "-1"),
            ("REGISTRY_BODY_TIMEOUT_SECONDS", "1.5"),
            ("REGISTRY_BODY_MIN_BYTES_PER_SECOND", "fast"),
            ("REGISTRY_MAX_CONNECTIONS", "many"),
        ] {
            let e = ServerConfig::from_env(&env(&[(key, value)])).unwrap_err();
            assert_eq!(e.key, key, "{key}={value:?}: {e}");
        }
    }
}
