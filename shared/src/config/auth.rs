//! Who may do what: the auth mode, GitHub, registry tokens and the OIDC issuer trusted
//! publishing accepts.

use std::time::Duration;

use super::{ConfigError, Env};
use crate::secret::Secret;

/// The shortest `REGISTRY_TOKEN_SECRET` GitHub mode accepts.
const MIN_TOKEN_SECRET_CHARS: usize = 32;

/// Who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who can reach the listener may read and publish.
    Open,
    /// GitHub repository permissions decide.
    Github,
}

/// The authoriser's settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `REGISTRY_AUTH`.
    pub mode: AuthMode,
    /// `GITHUB_API_URL`.
    pub github_api_url: String,
    /// `REGISTRY_TOKEN_SECRET` (at least 32 characters in GitHub mode).
    pub token_secret: Option<Secret>,
    /// `REGISTRY_TOKEN_DAYS`: lifetime of registry tokens from `npm login`.
    pub token_days: u64,
    /// `REGISTRY_PUBLIC_READ`: packages of public repositories can be read without a token.
    pub public_read: bool,
    /// `REGISTRY_GITHUB_CACHE_SECONDS`: how long a GitHub answer serves reads before revalidation.
    pub github_cache: Duration,
    /// `REGISTRY_OIDC_ISSUER`: the OIDC issuer whose ID tokens trusted publishing accepts.
    pub oidc_issuer: String,
    /// `REGISTRY_TOKEN_CACHE_SECONDS`: how long an instance keeps a registry token's record
    /// for read routes (writes always read it); `None`: the backend's default
    /// (`Config::token_cache`).
    pub token_cache: Option<Duration>,
    /// The GitHub OAuth app people sign in to the web pages (and `npm login --auth-type=web`)
    /// with, when `REGISTRY_GITHUB_OAUTH_CLIENT_ID` and `_SECRET` are set.
    pub oauth: Option<OauthConfig>,
    /// `REGISTRY_WEB_SESSION_HOURS`: how long a web sign-in lasts (its cookie and the read-only
    /// registry token behind it).
    pub web_session: Duration,
}

/// A GitHub OAuth app's settings.
#[derive(Debug, Clone)]
pub struct OauthConfig {
    /// `REGISTRY_GITHUB_OAUTH_CLIENT_ID`.
    pub client_id: String,
    /// `REGISTRY_GITHUB_OAUTH_CLIENT_SECRET` (never logged).
    pub client_secret: Secret,
    /// `GITHUB_URL`: GitHub's web host, where people authorise the app (by default derived from
    /// `GITHUB_API_URL`: `https://api.github.com` → `https://github.com`, a GitHub Enterprise
    /// Server's `https://HOST/api/v3` → `https://HOST`).
    pub github_url: String,
}

impl AuthConfig {
    /// Reads the auth mode and the settings of GitHub mode.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = match env.raw("REGISTRY_AUTH").as_deref().unwrap_or("open") {
            "open" => AuthMode::Open,
            "github" => AuthMode::Github,
            other => {
                return Err(ConfigError::new(
                    "REGISTRY_AUTH",
                    format!("'{other}' is not open or github"),
                ));
            }
        };
        let token_secret = env.text("REGISTRY_TOKEN_SECRET").map(Secret::new);
        if mode == AuthMode::Github
            && token_secret
                .as_ref()
                .is_some_and(|s| s.expose().len() < MIN_TOKEN_SECRET_CHARS)
        {
            return Err(ConfigError::new(
                "REGISTRY_TOKEN_SECRET",
                format!("must be at least {MIN_TOKEN_SECRET_CHARS} characters"),
            ));
        }
        Ok(Self {
            mode,
            github_api_url: env
                .raw("GITHUB_API_URL")
                .unwrap_or_else(|| "https://api.github.com".into()),
            token_secret,
            token_days: env.number("REGISTRY_TOKEN_DAYS")?.unwrap_or(30),
            public_read: env.flag("REGISTRY_PUBLIC_READ")?.unwrap_or(false),
            github_cache: env
                .seconds("REGISTRY_GITHUB_CACHE_SECONDS")?
                .unwrap_or(Duration::from_secs(60)),
            oidc_issuer: oidc_issuer(env.raw("REGISTRY_OIDC_ISSUER"))?,
            token_cache: env.seconds("REGISTRY_TOKEN_CACHE_SECONDS")?,
            oauth: oauth(env)?,
            web_session: Duration::from_secs(
                env.number::<u64>("REGISTRY_WEB_SESSION_HOURS")?
                    .unwrap_or(12)
                    .saturating_mul(3600),
            ),
        })
    }
}

/// The OAuth app, if both its id and its secret are set (one without the other is refused).
fn oauth(env: &Env) -> Result<Option<OauthConfig>, ConfigError> {
    let id = env.text("REGISTRY_GITHUB_OAUTH_CLIENT_ID");
    let secret = env.text("REGISTRY_GITHUB_OAUTH_CLIENT_SECRET");
    let (client_id, client_secret) = match (id, secret) {
        (None, None) => return Ok(None),
        (Some(id), Some(secret)) => (id, Secret::new(secret)),
        (Some(_), None) => {
            return Err(ConfigError::new(
                "REGISTRY_GITHUB_OAUTH_CLIENT_SECRET",
                "required with REGISTRY_GITHUB_OAUTH_CLIENT_ID",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "REGISTRY_GITHUB_OAUTH_CLIENT_ID",
                "required with REGISTRY_GITHUB_OAUTH_CLIENT_SECRET",
            ));
        }
    };
    let api = env
        .raw("GITHUB_API_URL")
        .unwrap_or_else(|| "https://api.github.com".into());
    let github_url = match env.text("GITHUB_URL") {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => web_host_of(&api),
    };
    match url::Url::parse(&github_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(ConfigError::new(
                "GITHUB_URL",
                format!("'{github_url}' is not an http(s) URL"),
            ));
        }
    }
    Ok(Some(OauthConfig {
        client_id,
        client_secret,
        github_url,
    }))
}

/// GitHub's web host for an API URL: `api.github.com` → `github.com`, `HOST/api/v3` → `HOST`;
/// anything else is taken to serve both (a test's fake GitHub).
fn web_host_of(api: &str) -> String {
    let api = api.trim_end_matches('/');
    if let Some(rest) = api.strip_suffix("/api/v3") {
        return rest.to_string();
    }
    api.replacen("://api.github.com", "://github.com", 1)
}

/// `REGISTRY_OIDC_ISSUER`: an http(s) URL without a trailing slash (GitHub Actions' by default).
fn oidc_issuer(value: Option<String>) -> Result<String, ConfigError> {
    let Some(text) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(crate::auth::oidc::GITHUB_ACTIONS_ISSUER.to_string());
    };
    let text = text.trim().trim_end_matches('/').to_string();
    match url::Url::parse(&text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(text),
        _ => Err(ConfigError::new(
            "REGISTRY_OIDC_ISSUER",
            format!("'{text}' is not an http(s) URL"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn the_oauth_app_needs_both_halves_and_finds_githubs_web_host() {
        let c = AuthConfig::from_env(&env(&[
            ("REGISTRY_GITHUB_OAUTH_CLIENT_ID", "Iv1.abc"),
            ("REGISTRY_GITHUB_OAUTH_CLIENT_SECRET", "s3cret"),
            ("REGISTRY_WEB_SESSION_HOURS", "2"),
        ]))
        .unwrap();
        let oauth = c.oauth.unwrap();
        assert_eq!(oauth.client_id, "Iv1.abc");
        assert_eq!(oauth.client_secret.expose(), "s3cret");
        assert_eq!(oauth.github_url, "https://github.com");
        assert_eq!(c.web_session, Duration::from_secs(7200));
        assert_eq!(
            web_host_of("https://ghe.example.com/api/v3/"),
            "https://ghe.example.com"
        );
        assert_eq!(
            web_host_of("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
        let e =
            AuthConfig::from_env(&env(&[("REGISTRY_GITHUB_OAUTH_CLIENT_ID", "x")])).unwrap_err();
        assert!(
            e.to_string()
                .contains("REGISTRY_GITHUB_OAUTH_CLIENT_SECRET"),
            "{e}"
        );
        let c = AuthConfig::from_env(&env(&[
            ("REGISTRY_GITHUB_OAUTH_CLIENT_ID", "x"),
            ("REGISTRY_GITHUB_OAUTH_CLIENT_SECRET", "y"),
            ("GITHUB_URL", "https://ghe.example.com/"),
        ]))
        .unwrap();
        assert_eq!(c.oauth.unwrap().github_url, "https://ghe.example.com");
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_and_settings() {
        let c = AuthConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c.mode, AuthMode::Open);
        assert_eq!(c.github_api_url, "https://api.github.com");
        assert!(c.token_secret.is_none());
        assert_eq!(c.token_days, 30);
        assert!(!c.public_read);
        assert_eq!(c.github_cache, Duration::from_secs(60));
        assert_eq!(c.oidc_issuer, "https://token.actions.githubusercontent.com");
        assert_eq!(c.token_cache, None);
        let c = AuthConfig::from_env(&env(&[
            ("REGISTRY_AUTH", "github"),
            ("REGISTRY_TOKEN_SECRET", SECRET),
            ("REGISTRY_PUBLIC_READ", "yes"),
            ("REGISTRY_GITHUB_CACHE_SECONDS", "5"),
            (
                "REGISTRY_OIDC_ISSUER",
                "https://ghe.example.com/_services/token/",
            ),
            ("REGISTRY_TOKEN_CACHE_SECONDS", "0"),
        ]))
        .unwrap();
        assert_eq!(c.mode, AuthMode::Github);
        assert_eq!(c.token_secret.as_ref().map(Secret::expose), Some(SECRET));
        assert!(c.public_read);
        assert_eq!(c.github_cache, Duration::from_secs(5));
        assert_eq!(c.oidc_issuer, "https://ghe.example.com/_services/token");
        assert_eq!(c.token_cache, Some(Duration::ZERO));
        assert!(c.oauth.is_none());
        assert_eq!(c.web_session, Duration::from_secs(12 * 3600));
        // Open mode never uses the secret, so a short one is not its concern.
        assert!(AuthConfig::from_env(&env(&[("REGISTRY_TOKEN_SECRET", "short")])).is_ok());
    }

    #[test]
    fn errors_name_the_variable() {
        for pairs in [
            &[("REGISTRY_AUTH", "oauth")][..],
            &[("REGISTRY_AUTH", "")],
            &[
                ("REGISTRY_AUTH", "github"),
                ("REGISTRY_TOKEN_SECRET", "short"),
            ],
            &[("REGISTRY_TOKEN_DAYS", "a month")],
            &[("REGISTRY_PUBLIC_READ", "maybe")],
            &[("REGISTRY_GITHUB_CACHE_SECONDS", "1m")],
            &[("REGISTRY_TOKEN_CACHE_SECONDS", "ten")],
            &[("REGISTRY_OIDC_ISSUER", "ftp://x")],
            &[("REGISTRY_OIDC_ISSUER", "not a url")],
        ] {
            let e = AuthConfig::from_env(&env(pairs)).unwrap_err();
            assert_eq!(e.key, pairs.last().unwrap().0, "{pairs:?}: {e}");
        }
    }
}
