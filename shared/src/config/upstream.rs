//! How names not stored here are served: redirected to the upstream registry, or proxied and
//! kept (the pull-through cache, `upstream`), and from which registry per scope.

use std::time::Duration;

use super::{ConfigError, Env};
use crate::secret::Secret;

/// What the registry does with a read of a name it does not store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Fetch from the upstream, keep, and serve from here (the default: one URL for
    /// everything, and installs that survive the upstream being down).
    Proxy,
    /// Answer `302` to the upstream registry (nothing kept).
    Redirect,
}

/// A registry names are fetched from.
#[derive(Debug, Clone)]
pub struct UpstreamRegistry {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// Bearer token sent to it (and only to URLs under its origin), if any.
    pub token: Option<Secret>,
}

/// The pull-through cache's settings.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `REGISTRY_UPSTREAM_MODE`: `proxy` (default) or `redirect`.
    pub mode: UpstreamMode,
    /// `REGISTRY_UPSTREAM_SCOPES`: `@scope=URL` pairs, comma-separated; each scope's names
    /// come from its own registry, with the token `REGISTRY_UPSTREAM_TOKENS` gives it.
    pub scoped: Vec<(String, UpstreamRegistry)>,
    /// `REGISTRY_UPSTREAM_TOKEN`: the bearer token for the default upstream, if it needs one.
    pub default_token: Option<Secret>,
    /// `REGISTRY_UPSTREAM_MAX_AGE_SECS` (default 120): how long a fetched packument is served
    /// before it is revalidated with `If-None-Match`.
    pub max_age: Duration,
    /// `REGISTRY_UPSTREAM_TIMEOUT_MS` (default 10000): the longest one upstream request may
    /// take, headers and body.
    pub timeout: Duration,
    /// `REGISTRY_UPSTREAM_MAX_FAILS` (default 2): consecutive failures that mark an upstream
    /// down.
    pub max_fails: u32,
    /// `REGISTRY_UPSTREAM_FAIL_TIMEOUT_SECS` (default 60): how long an upstream marked down is
    /// not asked (its cached answers are served meanwhile); then one request probes it.
    pub fail_timeout: Duration,
    /// `REGISTRY_UPSTREAM_CACHE_BYTES` (default 64 MiB): upstream packuments kept in memory.
    pub cache_bytes: usize,
    /// `REGISTRY_UPSTREAM_MAX_TARBALL_BYTES` (default 256 MiB): the largest upstream tarball
    /// fetched. Written to storage as it arrives (one part in memory) when its sha512 is
    /// declared; gathered in memory when only a sha1 is (packages from before 2017).
    pub max_tarball_bytes: u64,
    /// `REGISTRY_UPSTREAM_INLINE_MAX_BYTES` (default: none, the local server): a tarball
    /// larger than this is not fetched while the client waits: the client is sent upstream for
    /// that one request and the tarball is fetched, checked and stored after the response (the
    /// Lambda functions, which must answer within API Gateway's 29 s).
    pub inline_max_bytes: Option<u64>,
    /// `REGISTRY_ADMINS`: GitHub logins that may change a name's origin (GitHub mode).
    pub admins: Vec<String>,
    /// `REGISTRY_INSTANCE_NAME` (default `npm-registry`): this registry's name in `Via`, the
    /// loop guard. Registries that proxy each other need different names.
    pub via_name: String,
}

impl UpstreamConfig {
    /// Reads the upstream settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = match env.text("REGISTRY_UPSTREAM_MODE").as_deref() {
            None | Some("proxy") => UpstreamMode::Proxy,
            Some("redirect") => UpstreamMode::Redirect,
            Some(other) => {
                return Err(ConfigError::new(
                    "REGISTRY_UPSTREAM_MODE",
                    format!("'{other}' is not a mode: use proxy or redirect"),
                ));
            }
        };
        let tokens = parse_pairs(
            "REGISTRY_UPSTREAM_TOKENS",
            &env.raw("REGISTRY_UPSTREAM_TOKENS").unwrap_or_default(),
        )?;
        let mut scoped = Vec::new();
        for (scope, url) in parse_pairs(
            "REGISTRY_UPSTREAM_SCOPES",
            &env.raw("REGISTRY_UPSTREAM_SCOPES").unwrap_or_default(),
        )? {
            let url = url.trim_end_matches('/').to_string();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "REGISTRY_UPSTREAM_SCOPES",
                    format!("@{scope}: '{url}' is not an http(s) URL"),
                ));
            }
            let token = tokens
                .iter()
                .find(|(s, _)| *s == scope)
                .map(|(_, t)| Secret::new(t.clone()));
            scoped.push((scope, UpstreamRegistry { url, token }));
        }
        if let Some((scope, _)) = tokens
            .iter()
            .find(|(s, _)| !scoped.iter().any(|(known, _)| known == s))
        {
            return Err(ConfigError::new(
                "REGISTRY_UPSTREAM_TOKENS",
                format!("@{scope} has a token but no registry in REGISTRY_UPSTREAM_SCOPES"),
            ));
        }
        let secs = |key: &'static str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(
                env.number::<u64>(key)?.unwrap_or(default),
            ))
        };
        Ok(Self {
            mode,
            scoped,
            default_token: env.text("REGISTRY_UPSTREAM_TOKEN").map(Secret::new),
            max_age: secs("REGISTRY_UPSTREAM_MAX_AGE_SECS", 120)?,
            timeout: Duration::from_millis(
                env.number::<u64>("REGISTRY_UPSTREAM_TIMEOUT_MS")?
                    .unwrap_or(10_000)
                    .max(1),
            ),
            max_fails: env
                .number::<u32>("REGISTRY_UPSTREAM_MAX_FAILS")?
                .unwrap_or(2)
                .max(1),
            fail_timeout: secs("REGISTRY_UPSTREAM_FAIL_TIMEOUT_SECS", 60)?,
            cache_bytes: env
                .number::<usize>("REGISTRY_UPSTREAM_CACHE_BYTES")?
                .unwrap_or(64 << 20),
            max_tarball_bytes: env
                .number::<u64>("REGISTRY_UPSTREAM_MAX_TARBALL_BYTES")?
                .unwrap_or(256 << 20),
            inline_max_bytes: env.number::<u64>("REGISTRY_UPSTREAM_INLINE_MAX_BYTES")?,
            admins: env
                .raw("REGISTRY_ADMINS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            via_name: env
                .text("REGISTRY_INSTANCE_NAME")
                .unwrap_or_else(|| "npm-registry".into()),
        })
    }
}

/// `@scope=value` pairs, comma-separated; scopes lowercased, without the `@`.
fn parse_pairs(key: &'static str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((scope, value)) = item.split_once('=') else {
            return Err(ConfigError::new(
                key,
                format!("'{item}' is not @scope=value"),
            ));
        };
        let Some(scope) = scope.trim().strip_prefix('@').filter(|s| !s.is_empty()) else {
            return Err(ConfigError::new(key, format!("'{scope}' is not a @scope")));
        };
        pairs.push((scope.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<UpstreamConfig, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        UpstreamConfig::from_env(&Env::from_lookup(move |k| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        }))
    }

    #[test]
    fn defaults_proxy_with_two_minute_revalidation() {
        let c = read(&[]).unwrap();
        assert_eq!(c.mode, UpstreamMode::Proxy);
        assert_eq!(c.max_age, Duration::from_secs(120));
        assert_eq!(c.max_fails, 2);
        assert!(c.scoped.is_empty());
    }

    #[test]
    fn scoped_upstreams_take_their_tokens() {
        let c = read(&[
            (
                "REGISTRY_UPSTREAM_SCOPES",
                "@Partner=https://npm.partner.example/,@x=http://x",
            ),
            ("REGISTRY_UPSTREAM_TOKENS", "@partner=s3cret"),
        ])
        .unwrap();
        assert_eq!(c.scoped[0].0, "partner");
        assert_eq!(c.scoped[0].1.url, "https://npm.partner.example");
        assert_eq!(c.scoped[0].1.token.as_ref().unwrap().expose(), "s3cret");
        assert!(c.scoped[1].1.token.is_none());
    }

    #[test]
    fn malformed_settings_are_refused() {
        assert!(read(&[("REGISTRY_UPSTREAM_MODE", "cache")]).is_err());
        assert!(read(&[("REGISTRY_UPSTREAM_SCOPES", "partner=https://x")]).is_err());
        assert!(read(&[("REGISTRY_UPSTREAM_SCOPES", "@p=ftp://x")]).is_err());
        assert!(read(&[("REGISTRY_UPSTREAM_TOKENS", "@nobody=t")]).is_err());
    }
}
