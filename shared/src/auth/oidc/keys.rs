//! The issuer's signing keys: found through `<issuer>/.well-known/openid-configuration`
//! (`jwks_uri`), cached, and fetched again when a token names a key the cache does not hold (a
//! rotation) — at most once a minute, so tokens with made-up `kid`s cannot make the registry
//! hammer the issuer — or when the cache is an hour old (so a withdrawn key stops working).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::OidcError;

/// Least time between two fetches of the key set.
pub(crate) const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Longest a fetched key set is used without fetching it again.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// Where key sets come from (the issuer over HTTP; a fake in unit tests).
#[async_trait]
pub trait KeyFetcher: Send + Sync {
    /// The issuer's current RSA signing keys, by `kid`.
    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, OidcError>;
}

/// A JSON Web Key Set, as far as RS256 verification needs it.
#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
}

/// The RSA signing keys of a JWKS document, by `kid` (other keys are skipped).
pub(crate) fn parse_jwks(body: &str) -> Result<HashMap<String, DecodingKey>, OidcError> {
    let set: JwkSet = serde_json::from_str(body)
        .map_err(|e| OidcError::Unavailable(format!("the JWKS is not valid JSON: {e}")))?;
    Ok(set
        .keys
        .into_iter()
        .filter(|k| k.kty == "RSA" && k.usage.as_deref().is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let key = DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
            Some((k.kid?, key))
        })
        .collect())
}

/// Fetches the key set from the issuer: its discovery document, then `jwks_uri`.
pub(crate) struct HttpKeyFetcher {
    issuer: String,
    /// Built on first use (see `OctocrabGithub`): a function that never exchanges a token
    /// never loads the trust store.
    client: std::sync::OnceLock<Result<octocrab::Octocrab, String>>,
}

impl HttpKeyFetcher {
    /// A fetcher for `issuer` (an `https://` URL; `http://` only for local test issuers).
    pub(crate) fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            client: std::sync::OnceLock::new(),
        }
    }

    /// GETs an absolute URL and returns the body of a 200.
    async fn get(&self, url: &str) -> Result<String, OidcError> {
        let client = self
            .client
            .get_or_init(|| {
                // The origin only: every request names an absolute URL, and octocrab would put a
                // base path in front of one that does not start with it.
                let origin = url::Url::parse(&self.issuer)
                    .map_err(|e| format!("{}: {e}", self.issuer))?
                    .origin()
                    .ascii_serialization();
                octocrab::Octocrab::builder()
                    .base_uri(origin)
                    .map_err(|e| e.to_string())?
                    .set_connect_timeout(Some(Duration::from_secs(3)))
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| OidcError::Unavailable(e.clone()))?;
        let uri: axum::http::Uri = url
            .parse()
            .map_err(|e| OidcError::Unavailable(format!("{url}: {e}")))?;
        let response = client
            ._get(uri)
            .await
            .map_err(|e| OidcError::Unavailable(format!("{url}: {e}")))?;
        let status = response.status();
        let body = client
            .body_to_string(response)
            .await
            .map_err(|e| OidcError::Unavailable(format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(OidcError::Unavailable(format!("{url} answered {status}")));
        }
        Ok(body)
    }
}

#[async_trait]
impl KeyFetcher for HttpKeyFetcher {
    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, OidcError> {
        let discovery_url = format!("{}/.well-known/openid-configuration", self.issuer);
        let discovery: serde_json::Value =
            serde_json::from_str(&self.get(&discovery_url).await?)
                .map_err(|e| OidcError::Unavailable(format!("{discovery_url}: {e}")))?;
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .ok_or_else(|| OidcError::Unavailable(format!("{discovery_url} names no jwks_uri")))?;
        parse_jwks(&self.get(jwks_uri).await?)
    }
}

struct Cached {
    keys: HashMap<String, DecodingKey>,
    /// When the keys were last fetched (successfully or not): the refetch limit counts attempts.
    attempted: Option<Instant>,
    /// When the keys held were fetched.
    fetched: Option<Instant>,
}

/// The cache of one issuer's keys.
pub struct KeyCache {
    fetcher: Box<dyn KeyFetcher>,
    cached: Mutex<Cached>,
    /// Held while the set is fetched (across the fetch's awaits).
    fetching: tokio::sync::Mutex<()>,
}

impl KeyCache {
    /// An empty cache over `fetcher`.
    pub(crate) fn new(fetcher: Box<dyn KeyFetcher>) -> Self {
        Self {
            fetcher,
            cached: Mutex::new(Cached {
                keys: HashMap::new(),
                attempted: None,
                fetched: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key `kid`, fetching the set when it is unknown (at most once a minute) or old.
    pub(crate) async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        self.key_at(kid, Instant::now()).await
    }

    /// `key`, as of `now` (tests move the clock).
    pub(crate) async fn key_at(&self, kid: &str, now: Instant) -> Result<DecodingKey, OidcError> {
        if let Some(key) = self.fresh(kid, now) {
            return Ok(key);
        }
        // One fetch at a time: a caller that needs the set while another fetches it waits for
        // that fetch and uses its result, rather than hear "unknown key" for a valid token, and
        // the once-a-minute limit is checked and set by the one caller holding the gate.
        let _gate = self.fetching.lock().await;
        let may_fetch = {
            let mut cached = self.cached();
            if let Some(key) = fresh_in(&cached, kid, now) {
                return Ok(key);
            }
            let may_fetch = cached
                .attempted
                .is_none_or(|at| now.saturating_duration_since(at) >= REFETCH_INTERVAL);
            if may_fetch {
                cached.attempted = Some(now);
            }
            may_fetch
        };
        if !may_fetch {
            // Fetched under a minute ago: an old set still verifies a key it holds.
            return self
                .cached()
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| OidcError::UnknownKey(kid.to_string()));
        }
        match self.fetcher.fetch().await {
            Ok(keys) => {
                let mut cached = self.cached();
                cached.keys = keys;
                cached.fetched = Some(now);
                cached
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| OidcError::UnknownKey(kid.to_string()))
            }
            Err(e) => match self.cached().keys.get(kid) {
                // An old key set still verifies while the issuer cannot be reached.
                Some(key) => {
                    tracing::warn!(error = %e, "OIDC issuer unreachable; using its cached keys");
                    Ok(key.clone())
                }
                None => Err(e),
            },
        }
    }

    /// The key `kid` if the cache holds it and the set is not too old to use.
    fn fresh(&self, kid: &str, now: Instant) -> Option<DecodingKey> {
        fresh_in(&self.cached(), kid, now)
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The key `kid` of `cached` if it holds it and the set is under [`MAX_AGE`] old.
fn fresh_in(cached: &Cached, kid: &str, now: Instant) -> Option<DecodingKey> {
    let young = cached
        .fetched
        .is_some_and(|at| now.saturating_duration_since(at) < MAX_AGE);
    young.then(|| cached.keys.get(kid).cloned()).flatten()
}
