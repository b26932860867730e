//! The pull-through cache of upstream registries: packuments fetched, kept and revalidated
//! (`If-None-Match` after `REGISTRY_UPSTREAM_MAX_AGE_SECS`); tarballs fetched once, checked
//! against the upstream's `dist.integrity` before they are stored or served, then served from
//! storage; kept answers served while an upstream is down (stale-if-error); one fetch per
//! burst (single flight); versions once installed kept installable whatever the upstream does
//! later; their provenance attestations, fetched once and kept; and each name's origin
//! (`origin`).
//!
//! What is kept lives apart from published packages (`storage::UpstreamStore` for documents,
//! attestations and tarballs, the key-value store for kept versions and origin settings), so a
//! name's origin is always known and the sweep never touches it.

pub mod client;
pub mod document;
mod flight;
mod health;
pub mod origin;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use semver::Version;
use serde_json::{Map, Value};

use crate::config::{UpstreamConfig, UpstreamRegistry};
use crate::domain::integrity::{Digests, DigestsBuilder};
use crate::domain::{PackageName, TarballKey};
use crate::secret::Secret;
use crate::storage::{AfterResponse, KvStore, StoreError, TarballRead, UpstreamStore};
use client::{FetchError, Fetched, Get, UpstreamClient};
use document::{KeptVersion, UpstreamDist};
use flight::Flights;
use health::Health;
use origin::{OriginDecision, OriginSetting};

/// Key-value namespace of admins' origin settings, by name.
pub const ORIGIN_NAMESPACE: &str = "upstream-origin";
/// Prefix of the key-value namespaces of kept versions: one namespace per package, by version.
const KEPT_NAMESPACE_PREFIX: &str = "upstream-kept/";
/// How long reading a tarball after the response may take (the tarball function's timeout is
/// 90 s, API Gateway's 29 s having passed by then at most).
const LATER_FETCH_TIMEOUT: Duration = Duration::from_secs(55);
/// The largest upstream document accepted (the public registry's biggest are tens of MB).
const MAX_DOCUMENT_BYTES: u64 = 256 << 20;
/// The largest attestations answer accepted (a provenance and a publish bundle: tens of KB).
const MAX_ATTESTATIONS_BYTES: u64 = 4 << 20;

/// The kept-versions namespace of a package.
fn kept_namespace(name: &PackageName) -> String {
    format!("{KEPT_NAMESPACE_PREFIX}{name}")
}

/// Where a version's attestations are kept, beside the package's kept documents
/// (`UpstreamStore::document`; on AWS `upstream/documents/NAME/attestations-VERSION.json`).
fn attestations_view(version: &Version) -> String {
    format!("attestations-{version}")
}

/// Why the cache could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// The upstream does not have it (and nothing is kept).
    #[error("not found upstream")]
    NotFound,
    /// The upstream has the package but not this version (and it is not kept).
    #[error("no such version upstream")]
    NoSuchVersion,
    /// The upstream cannot answer, and nothing is kept for this request.
    #[error(
        "the upstream registry {url} cannot be reached ({reason}) and nothing is kept for this request"
    )]
    Unavailable {
        /// The upstream.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The upstream's bytes do not match the integrity its document declares.
    #[error(
        "the tarball {url} does not match the integrity its packument declares ({declared}); it was not stored"
    )]
    Integrity {
        /// The tarball's URL.
        url: String,
        /// The declared SRI.
        declared: String,
    },
    /// The version has no attestations (none listed, or the upstream has none).
    #[error("no attestations")]
    NoAttestations,
    /// The upstream's attestations are about other bytes than those served here (the version
    /// changed upstream after its tarball was kept): neither kept nor served.
    #[error(
        "the attestations at {url} are not about the tarball served here ({integrity}): the version changed upstream after this registry kept it"
    )]
    AttestationsMismatch {
        /// Where the upstream serves them.
        url: String,
        /// The SRI of the bytes served here.
        integrity: String,
    },
    /// Too large to fetch while the client waits: fetch it from here for this one request (it
    /// is being fetched and kept meanwhile).
    #[error("fetched after the response")]
    FetchElsewhere(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How fresh a served document is (the `X-Upstream-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Served from what was kept, within its max age.
    Hit,
    /// Fetched from the upstream for this request.
    Miss,
    /// Kept, and confirmed current by the upstream (`304`) for this request.
    Revalidated,
    /// Kept, served because the upstream could not answer (stale-if-error).
    Stale,
}

impl Freshness {
    /// The header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Hit => "HIT",
            Freshness::Miss => "MISS",
            Freshness::Revalidated => "REVALIDATED",
            Freshness::Stale => "STALE",
        }
    }
}

/// A document ready to send.
pub struct ServedDocument {
    /// The JSON.
    pub body: Bytes,
    /// The JSON gzipped.
    pub gzip: Bytes,
    /// Its ETag (quoted).
    pub etag: String,
    /// Seconds since the upstream last answered for it.
    pub age: u64,
    /// How it was obtained.
    pub freshness: Freshness,
}

/// One upstream registry and its health.
struct Registry {
    url: String,
    token: Option<Secret>,
    health: Health,
}

impl Registry {
    fn new(registry: &UpstreamRegistry, config: &UpstreamConfig) -> Self {
        Self {
            url: registry.url.clone(),
            token: registry.token.clone(),
            health: Health::new(config.max_fails, config.fail_timeout),
        }
    }

    fn auth(&self) -> Option<(&str, &Secret)> {
        self.token.as_ref().map(|t| (self.url.as_str(), t))
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> ProxyError {
        ProxyError::Unavailable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }
}

/// A document as last fetched: the upstream's bytes (`None`: the upstream no longer has the
/// package) and the versions kept here, with the rendering last served.
struct CachedDocument {
    raw: Option<Bytes>,
    etag: Option<String>,
    /// When the upstream last answered for it (for `Age`).
    fetched_at: DateTime<Utc>,
    /// When this process last asked the upstream (for the max age).
    checked: Instant,
    kept: Vec<KeptVersion>,
    freshness: Freshness,
    rendered: Mutex<Option<Rendered>>,
}

#[derive(Clone)]
struct Rendered {
    base_url: String,
    body: Bytes,
    etag: String,
    /// The body gzipped, for clients that accept it (npm does).
    gzip: Bytes,
}

impl CachedDocument {
    fn size(&self) -> usize {
        2 * self.raw.as_ref().map_or(0, Bytes::len) + 256
    }

    fn parsed(&self, name: &PackageName) -> Option<Map<String, Value>> {
        document::parse(name, self.raw.as_ref()?).ok()
    }
}

/// The header line a kept document starts with.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptHeader {
    etag: Option<String>,
    fetched_at: DateTime<Utc>,
}

/// Documents kept in memory, least recently used dropped first, within a byte budget.
struct Memory {
    entries: lru::LruCache<(PackageName, bool), Arc<CachedDocument>>,
    bytes: usize,
    budget: usize,
}

impl Memory {
    fn get(&mut self, key: &(PackageName, bool)) -> Option<Arc<CachedDocument>> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: (PackageName, bool), doc: Arc<CachedDocument>) {
        let size = doc.size();
        if size > self.budget {
            if let Some(old) = self.entries.pop(&key) {
                self.bytes -= old.size();
            }
            return;
        }
        if let Some(old) = self.entries.put(key, doc) {
            self.bytes -= old.size();
        }
        self.bytes += size;
        while self.bytes > self.budget {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.size(),
                None => break,
            }
        }
    }

    fn forget(&mut self, name: &PackageName) {
        for abbreviated in [false, true] {
            if let Some(old) = self.entries.pop(&(name.clone(), abbreviated)) {
                self.bytes -= old.size();
            }
        }
    }
}

type DocumentResult = Result<Arc<CachedDocument>, ProxyError>;

/// The pull-through cache.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    default: Option<Registry>,
    scoped: Vec<(String, Registry)>,
    client: UpstreamClient,
    store: Arc<dyn UpstreamStore>,
    kv: Arc<dyn KvStore>,
    max_age: Duration,
    max_tarball_bytes: u64,
    inline_max: Option<u64>,
    after_response: Option<Arc<AfterResponse>>,
    memory: Mutex<Memory>,
    documents: Flights<(PackageName, bool), DocumentResult>,
    tarballs: Flights<(PackageName, Version), Result<KeptVersion, ProxyError>>,
    /// The upstreams' signing keys, with when they were fetched.
    keys: tokio::sync::Mutex<Option<(std::time::Instant, Vec<Value>)>>,
}

impl Proxy {
    /// The cache for `config`, with `default` the registry for names no scoped upstream
    /// claims, keeping what it fetches in `store` and `kv`.
    pub fn new(
        config: &UpstreamConfig,
        default: Option<&str>,
        store: Arc<dyn UpstreamStore>,
        kv: Arc<dyn KvStore>,
        after_response: Option<Arc<AfterResponse>>,
    ) -> Result<Self, String> {
        let default = default.map(|url| {
            Registry::new(
                &UpstreamRegistry {
                    url: url.to_string(),
                    token: config.default_token.clone(),
                },
                config,
            )
        });
        Ok(Self {
            inner: Arc::new(Inner {
                default,
                scoped: config
                    .scoped
                    .iter()
                    .map(|(scope, r)| (scope.clone(), Registry::new(r, config)))
                    .collect(),
                client: UpstreamClient::new(config.timeout, &config.via_name)?,
                store,
                kv,
                max_age: config.max_age,
                max_tarball_bytes: config.max_tarball_bytes,
                inline_max: config.inline_max_bytes,
                after_response,
                memory: Mutex::new(Memory {
                    entries: lru::LruCache::unbounded(),
                    bytes: 0,
                    budget: config.cache_bytes,
                }),
                documents: Flights::default(),
                tarballs: Flights::default(),
                keys: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Whether some upstream serves `name` (its scope's, or the default).
    pub fn serves(&self, name: &PackageName) -> bool {
        self.inner.registry(name).is_some()
    }

    /// Whether `name` is fetched from the default upstream: not from the upstream of its scope
    /// (`REGISTRY_UPSTREAM_SCOPES`), whose names are never sent to the default one, not even
    /// in an audit.
    pub fn from_default(&self, name: &PackageName) -> bool {
        self.inner.default.as_ref().is_some_and(|default| {
            self.inner
                .registry(name)
                .is_some_and(|registry| std::ptr::eq(registry, default))
        })
    }

    /// Whether a request already passed through this registry (`Via`).
    pub fn is_loop(&self, headers: &axum::http::HeaderMap) -> bool {
        self.inner.client.is_loop(headers)
    }

    /// The document of `name` for a client at `base_url`, in the install view or whole.
    pub async fn document(
        &self,
        name: &PackageName,
        abbreviated: bool,
        base_url: &str,
        via: Option<&str>,
    ) -> Result<ServedDocument, ProxyError> {
        // Whether memory held it within its max age before this request (else this request
        // waited for a fetch, and says so).
        let held_fresh = self
            .inner
            .lock_memory()
            .get(&(name.clone(), abbreviated))
            .is_some_and(|d| {
                d.checked.elapsed() < self.inner.max_age && d.freshness != Freshness::Stale
            });
        let doc = self
            .inner
            .clone()
            .cached_document(name, abbreviated, via.map(str::to_string))
            .await?;
        let rendered = {
            let kept = doc
                .rendered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(r) = kept.filter(|r| r.base_url == base_url) {
                r
            } else {
                let upstream = doc.parsed(name);
                let body =
                    document::render(name, upstream.as_ref(), &doc.kept, abbreviated, base_url)
                        .ok_or(ProxyError::NotFound)?;
                let body = Bytes::from(body);
                let etag = {
                    use sha2::Digest;
                    format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&body)[..16]))
                };
                let gzip = {
                    use std::io::Write;
                    let mut gz = flate2::write::GzEncoder::new(
                        Vec::with_capacity(body.len() / 4),
                        flate2::Compression::fast(),
                    );
                    gz.write_all(&body)
                        .and_then(|()| gz.finish())
                        .map(Bytes::from)
                        .map_err(|e| StoreError::Internal(e.to_string()))?
                };
                let r = Rendered {
                    base_url: base_url.to_string(),
                    body,
                    etag,
                    gzip,
                };
                *doc.rendered
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r.clone());
                r
            }
        };
        let freshness = if doc.freshness == Freshness::Stale {
            Freshness::Stale
        } else if held_fresh {
            Freshness::Hit
        } else {
            doc.freshness
        };
        Ok(ServedDocument {
            body: rendered.body,
            gzip: rendered.gzip,
            etag: rendered.etag,
            age: u64::try_from((Utc::now() - doc.fetched_at).num_seconds().max(0)).unwrap_or(0),
            freshness,
        })
    }

    /// The bytes (or where to get them) of `name@version`: kept, or fetched now, checked and
    /// kept.
    pub async fn tarball(
        &self,
        name: &PackageName,
        version: &Version,
        via: Option<&str>,
    ) -> Result<TarballRead, ProxyError> {
        if self.inner.made_internal(name).await? {
            return Err(ProxyError::NotFound);
        }
        let kept = if let Some(kept) = self.inner.kept_version(name, version).await? {
            kept
        } else {
            let inner = self.inner.clone();
            let (n, v, via) = (name.clone(), version.clone(), via.map(str::to_string));
            self.inner
                .tarballs
                .run((name.clone(), version.clone()), async move {
                    inner.fetch_tarball(&n, &v, via).await
                })
                .await?
        };
        let key = TarballKey::parse(&kept.tarball_key)
            .map(|(key, _, _)| key)
            .ok_or_else(|| StoreError::Internal(format!("bad kept key {}", kept.tarball_key)))?;
        match self.inner.store.tarball(&key).await? {
            Some(read) => Ok(read),
            None => Err(StoreError::Internal(format!(
                "kept tarball {} is missing",
                kept.tarball_key
            ))
            .into()),
        }
    }

    /// The attestations of `name@version` (`GET /-/npm/v1/attestations/NAME@VERSION`, as the
    /// upstream answered it), which npm fetches from the registry it installed from: kept (at
    /// the latest when its tarball was kept; attestations of a version do not change, so what is
    /// kept is served as it is, also while the upstream is down), else fetched from the name's
    /// upstream, checked to be about the bytes served here, and kept.
    pub async fn attestations(
        &self,
        name: &PackageName,
        version: &Version,
        via: Option<&str>,
    ) -> Result<(Bytes, Freshness), ProxyError> {
        if self.inner.made_internal(name).await? {
            return Err(ProxyError::NotFound);
        }
        if let Some(kept) = self
            .inner
            .store
            .document(name, &attestations_view(version))
            .await?
        {
            return Ok((kept, Freshness::Hit));
        }
        // What is served of the version: as kept, else as the upstream lists it.
        let (manifest, integrity) =
            if let Some(kept) = self.inner.kept_version(name, version).await? {
                (kept.manifest, kept.integrity)
            } else {
                let dist = self.inner.clone().dist(name, version, via).await?;
                (dist.manifest, dist.integrity)
            };
        let body = self
            .inner
            .fetch_attestations(name, version, &manifest, &integrity, via)
            .await?;
        Ok((body, Freshness::Miss))
    }

    /// The origin of `name` as the cache knows it (an admin's setting, an ingestion); the
    /// caller adds what it knows (a served scope, a publish).
    pub async fn origin(
        &self,
        name: &PackageName,
        served_scope: bool,
        published: bool,
    ) -> Result<OriginDecision, StoreError> {
        let setting = self.origin_setting(name).await?;
        let ingested = if served_scope || setting.is_some() || published {
            false
        } else {
            self.inner.ingested(name).await?
        };
        Ok(OriginDecision::decide(
            served_scope,
            setting,
            published,
            ingested,
        ))
    }

    /// An admin's origin setting of `name`, if any.
    pub async fn origin_setting(
        &self,
        name: &PackageName,
    ) -> Result<Option<OriginSetting>, StoreError> {
        Ok(self
            .inner
            .kv
            .get(ORIGIN_NAMESPACE, name.as_str())
            .await?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Stores an admin's origin setting, and drops what this process keeps in memory for the
    /// name so the setting applies at once here (other instances within the max age).
    pub async fn set_origin(
        &self,
        name: &PackageName,
        setting: &OriginSetting,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(setting).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.inner
            .kv
            .put(ORIGIN_NAMESPACE, name.as_str(), &value, None)
            .await?;
        self.inner.lock_memory().forget(name);
        Ok(())
    }

    /// The signing keys of every upstream (`GET /-/npm/v1/keys` of each), kept for an hour and
    /// kept past that while the upstreams cannot answer. Proxied versions keep their upstream's
    /// `dist.signatures` (the signed `name@version:integrity` is the same here), so the keys
    /// that verify them are listed beside this registry's own.
    pub async fn signing_keys(&self) -> Vec<Value> {
        const KEEP: Duration = Duration::from_secs(3600);
        let mut kept = self.inner.keys.lock().await;
        if let Some((at, keys)) = kept.as_ref()
            && at.elapsed() < KEEP
        {
            return keys.clone();
        }
        let registries = self
            .inner
            .default
            .iter()
            .chain(self.inner.scoped.iter().map(|(_, r)| r));
        let mut keys: Vec<Value> = Vec::new();
        let mut failed = false;
        for registry in registries {
            let url = format!("{}/-/npm/v1/keys", registry.url);
            let auth = registry.token.as_ref().map(|t| (registry.url.as_str(), t));
            let fetched = self
                .inner
                .client
                .get(client::Get {
                    url: &url,
                    accept: "application/json",
                    auth,
                    if_none_match: None,
                    max_bytes: 1 << 20,
                    inline_max: None,
                    streamed: false,
                    via: None,
                })
                .await;
            match fetched {
                Ok(client::Fetched::Body { bytes, .. }) => {
                    // As listed; the keys route lists a key id once.
                    keys.extend(
                        serde_json::from_slice::<Value>(&bytes)
                            .ok()
                            .and_then(|v| v.get("keys").and_then(Value::as_array).cloned())
                            .unwrap_or_default(),
                    );
                }
                // An upstream without signatures has no keys to list.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(upstream = %registry.url, error = %e, "upstream signing keys not fetched");
                    failed = true;
                }
            }
        }
        if failed && let Some((_, old)) = kept.as_ref() {
            return old.clone();
        }
        *kept = Some((std::time::Instant::now(), keys.clone()));
        keys
    }

    /// Forwards npm's bulk advisory request (already stripped of internal names) to the default
    /// upstream, answering its status and body.
    pub async fn advisories(
        &self,
        body: &Value,
        via: Option<&str>,
    ) -> Result<(axum::http::StatusCode, Bytes), ProxyError> {
        let Some(registry) = &self.inner.default else {
            return Err(ProxyError::NotFound);
        };
        if registry.health.is_down() {
            return Err(registry.unavailable("marked down after repeated failures"));
        }
        let json = serde_json::to_vec(body).map_err(|e| StoreError::Internal(e.to_string()))?;
        let gz = {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&json)
                .and_then(|()| gz.finish())
                .map_err(|e| StoreError::Internal(e.to_string()))?
        };
        use axum::http::{HeaderValue, header};
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
            (header::ACCEPT, HeaderValue::from_static("application/json")),
            (header::ACCEPT_ENCODING, HeaderValue::from_static("gzip")),
        ];
        let url = format!("{}/-/npm/v1/security/advisories/bulk", registry.url);
        let auth = registry.token.as_ref();
        match self
            .inner
            .client
            .post(&url, &headers, auth, via, Bytes::from(gz), 64 << 20)
            .await
        {
            Ok((status, body)) if status.is_success() => {
                registry.health.succeeded();
                Ok((status, body))
            }
            Ok((status, _)) => Err(registry.unavailable(format!("HTTP {status}"))),
            Err(e) => {
                registry.health.failed();
                Err(registry.unavailable(e))
            }
        }
    }
}

impl Inner {
    fn lock_memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registry `name` is fetched from: its scope's, or the default.
    fn registry(&self, name: &PackageName) -> Option<&Registry> {
        if let Some(scope) = name.scope()
            && let Some((_, registry)) = self
                .scoped
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(scope))
        {
            return Some(registry);
        }
        self.default.as_ref()
    }

    /// The document, from memory within its max age, else refreshed (one refresh per name
    /// and view at a time).
    async fn cached_document(
        self: Arc<Self>,
        name: &PackageName,
        abbreviated: bool,
        via: Option<String>,
    ) -> DocumentResult {
        let key = (name.clone(), abbreviated);
        let held = self.lock_memory().get(&key);
        if let Some(doc) = &held
            && doc.checked.elapsed() < self.max_age
            && doc.freshness != Freshness::Stale
        {
            return Ok(doc.clone());
        }
        let inner = self.clone();
        let n = name.clone();
        self.documents
            .run(key.clone(), async move {
                // A refresh that finished between the look above and this one's start has
                // just put a current document in memory.
                let now_held = inner.lock_memory().get(&key);
                if let Some(doc) = now_held
                    && doc.checked.elapsed() < inner.max_age
                    && doc.freshness != Freshness::Stale
                {
                    return Ok(doc);
                }
                inner.refresh(&n, abbreviated, held, via.as_deref()).await
            })
            .await
    }

    /// Asks the upstream for the document (conditionally, if one is kept), keeps the answer,
    /// and falls back to what is kept when the upstream cannot answer.
    async fn refresh(
        &self,
        name: &PackageName,
        abbreviated: bool,
        held: Option<Arc<CachedDocument>>,
        via: Option<&str>,
    ) -> DocumentResult {
        let view = if abbreviated { "abbreviated" } else { "full" };
        // Checked on every refresh (at most once per max age): what an admin made internal is
        // never fetched, nor served from what was kept.
        if self.made_internal(name).await? {
            return Err(ProxyError::NotFound);
        }
        let previous = match held {
            Some(doc) => Some(doc),
            None => self.load(name, view).await?,
        };
        // With no copy of this view, the other one is what is kept if the upstream fails.
        let other = if previous.is_none() {
            let other_view = if abbreviated { "full" } else { "abbreviated" };
            let held_other = self.lock_memory().get(&(name.clone(), !abbreviated));
            match held_other {
                Some(doc) => Some(doc),
                None => self.load(name, other_view).await?,
            }
        } else {
            None
        };
        let registry = self.registry(name).ok_or(ProxyError::NotFound)?;
        let failure = if registry.health.is_down() {
            registry.unavailable("marked down after repeated failures")
        } else {
            let url = format!("{}/{}", registry.url, escape(name));
            let fetched = self
                .client
                .get(Get {
                    url: &url,
                    accept: if abbreviated {
                        "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
                    } else {
                        "application/json"
                    },
                    auth: registry.auth(),
                    if_none_match: previous.as_ref().and_then(|d| d.etag.as_deref()),
                    max_bytes: MAX_DOCUMENT_BYTES,
                    inline_max: None,
                    streamed: false,
                    via,
                })
                .await;
            match self
                .settle(name, view, registry, fetched, previous.as_ref())
                .await
            {
                Ok(doc) => {
                    let doc = Arc::new(doc);
                    self.lock_memory()
                        .insert((name.clone(), abbreviated), doc.clone());
                    return Ok(doc);
                }
                Err(e @ (ProxyError::Unavailable { .. } | ProxyError::Store(_))) => e,
                Err(e) => return Err(e),
            }
        };
        // Stale-if-error: what is kept, marked stale, so the next request tries again.
        if let Some(doc) = previous.or(other) {
            tracing::warn!(package = %name, error = %failure, "serving a kept upstream document");
            return Ok(Arc::new(CachedDocument {
                raw: doc.raw.clone(),
                etag: doc.etag.clone(),
                fetched_at: doc.fetched_at,
                checked: doc.checked,
                kept: doc.kept.clone(),
                freshness: Freshness::Stale,
                rendered: Mutex::new(None),
            }));
        }
        // A package gone from an unreachable upstream may still have kept versions.
        let kept = self.kept_versions(name).await?;
        if kept.is_empty() {
            return Err(failure);
        }
        Ok(Arc::new(CachedDocument {
            raw: None,
            etag: None,
            fetched_at: Utc::now(),
            checked: Instant::now(),
            kept,
            freshness: Freshness::Stale,
            rendered: Mutex::new(None),
        }))
    }

    /// What an upstream answer makes of the document.
    async fn settle(
        &self,
        name: &PackageName,
        view: &str,
        registry: &Registry,
        fetched: Result<Fetched, FetchError>,
        previous: Option<&Arc<CachedDocument>>,
    ) -> Result<CachedDocument, ProxyError> {
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                if registry.health.failed() {
                    tracing::warn!(upstream = %registry.url, error = %e, "upstream marked down");
                }
                return Err(registry.unavailable(e));
            }
        };
        let now = Utc::now();
        let (raw, etag, freshness, fetched_at) = match fetched {
            Fetched::Body { etag, bytes } => {
                if let Err(e) = document::parse(name, &bytes) {
                    registry.health.failed();
                    return Err(registry.unavailable(e));
                }
                let mut kept_bytes = serde_json::to_vec(&KeptHeader {
                    etag: etag.clone(),
                    fetched_at: now,
                })
                .map_err(|e| StoreError::Internal(e.to_string()))?;
                kept_bytes.push(b'\n');
                kept_bytes.extend_from_slice(&bytes);
                self.store
                    .keep_document(name, view, Bytes::from(kept_bytes))
                    .await?;
                (Some(bytes), etag, Freshness::Miss, now)
            }
            Fetched::NotModified => {
                let Some(doc) = previous else {
                    registry.health.failed();
                    return Err(registry.unavailable("304 to an unconditional request"));
                };
                (
                    doc.raw.clone(),
                    doc.etag.clone(),
                    Freshness::Revalidated,
                    now,
                )
            }
            Fetched::NotFound => (None, None, Freshness::Miss, now),
            Fetched::TooLargeToWait(..) | Fetched::Streamed(_) => {
                return Err(registry.unavailable("document too large"));
            }
        };
        registry.health.succeeded();
        let kept = self.kept_versions(name).await?;
        // A name the upstream does not have is remembered as such for the max age too (an
        // empty document, which renders as nothing): installs look up optional peers that
        // exist nowhere, and each would otherwise ask the upstream again.
        Ok(CachedDocument {
            raw,
            etag,
            fetched_at,
            checked: Instant::now(),
            kept,
            freshness,
            rendered: Mutex::new(None),
        })
    }

    /// The document kept in storage, if any (a fresh process, or one that dropped it).
    async fn load(
        &self,
        name: &PackageName,
        view: &str,
    ) -> Result<Option<Arc<CachedDocument>>, StoreError> {
        let Some(bytes) = self.store.document(name, view).await? else {
            return Ok(None);
        };
        let Some(split) = bytes.iter().position(|b| *b == b'\n') else {
            return Ok(None);
        };
        let Ok(header) = serde_json::from_slice::<KeptHeader>(&bytes[..split]) else {
            return Ok(None);
        };
        let age = (Utc::now() - header.fetched_at)
            .to_std()
            .unwrap_or_default();
        Ok(Some(Arc::new(CachedDocument {
            raw: Some(bytes.slice(split + 1..)),
            etag: header.etag,
            fetched_at: header.fetched_at,
            checked: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            kept: self.kept_versions(name).await?,
            freshness: Freshness::Hit,
            rendered: Mutex::new(None),
        })))
    }

    /// Whether an admin made `name` internal.
    async fn made_internal(&self, name: &PackageName) -> Result<bool, StoreError> {
        Ok(self
            .kv
            .get(ORIGIN_NAMESPACE, name.as_str())
            .await?
            .and_then(|v| serde_json::from_slice::<OriginSetting>(&v).ok())
            .is_some_and(|s| s.origin == origin::Origin::Internal))
    }

    /// Every version of `name` kept here.
    async fn kept_versions(&self, name: &PackageName) -> Result<Vec<KeptVersion>, StoreError> {
        let mut kept: Vec<KeptVersion> = self
            .kv
            .list(&kept_namespace(name))
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        kept.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(kept)
    }

    /// One kept version of `name`.
    async fn kept_version(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<KeptVersion>, StoreError> {
        Ok(self
            .kv
            .get(&kept_namespace(name), &version.to_string())
            .await?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Whether anything of `name` was ever fetched.
    async fn ingested(&self, name: &PackageName) -> Result<bool, StoreError> {
        let held = {
            let memory = self.lock_memory();
            // A remembered "not found" is no ingestion.
            [true, false].iter().any(|view| {
                memory
                    .entries
                    .peek(&(name.clone(), *view))
                    .is_some_and(|doc| doc.raw.is_some() || !doc.kept.is_empty())
            })
        };
        if held {
            return Ok(true);
        }
        for view in ["abbreviated", "full"] {
            if self.store.document(name, view).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(!self.kv.list(&kept_namespace(name)).await?.is_empty())
    }

    /// Fetches `name@version`'s tarball, checks it against the upstream document's integrity,
    /// and keeps it: bytes first, then the record that makes them servable.
    async fn fetch_tarball(
        self: Arc<Self>,
        name: &PackageName,
        version: &Version,
        via: Option<String>,
    ) -> Result<KeptVersion, ProxyError> {
        // A fetch that finished between the caller's look and this one's start kept it.
        if let Some(kept) = self.kept_version(name, version).await? {
            return Ok(kept);
        }
        let dist = self.clone().dist(name, version, via.as_deref()).await?;
        let registry = self.registry(name).ok_or(ProxyError::NotFound)?;
        if registry.health.is_down() {
            return Err(registry.unavailable("marked down after repeated failures"));
        }
        // With a sha512 declared, the key is known before the bytes: they go to storage as they
        // arrive (a part at a time in memory) and become visible once every byte matched.
        let streamed = Digests::declared_sha512_hex(&dist.integrity).is_some();
        let fetched = self
            .client
            .get(Get {
                url: &dist.tarball,
                accept: "application/octet-stream, */*",
                auth: registry.auth(),
                if_none_match: None,
                max_bytes: self.max_tarball_bytes,
                inline_max: self.inline_max,
                streamed,
                via: via.as_deref(),
            })
            .await;
        let kept = match fetched {
            Ok(Fetched::Body { bytes, .. }) => {
                registry.health.succeeded();
                self.keep(name, version, &dist, bytes).await
            }
            Ok(Fetched::Streamed(body)) => {
                registry.health.succeeded();
                let timeout = self.client.timeout();
                self.keep_pieces(name, version, &dist, body, timeout).await
            }
            Ok(Fetched::TooLargeToWait(len, pending)) => {
                registry.health.succeeded();
                tracing::info!(package = %name, %version, bytes = len, "tarball too large to fetch while the client waits: fetching it after the response");
                let (inner, n, v) = (self.clone(), name.clone(), version.clone());
                let via = via.clone();
                let elsewhere = dist.tarball.clone();
                let later = Box::pin(async move {
                    let kept = inner
                        .keep_pieces(&n, &v, &dist, pending, LATER_FETCH_TIMEOUT)
                        .await;
                    match kept {
                        Ok(kept) => inner.keep_attestations(&n, &kept, via.as_deref()).await,
                        Err(e) => {
                            tracing::warn!(package = %n, version = %v, error = %e, "could not keep a large upstream tarball");
                        }
                    }
                });
                match &self.after_response {
                    Some(queue) => queue.defer(later),
                    None => {
                        tokio::spawn(later);
                    }
                }
                Err(ProxyError::FetchElsewhere(elsewhere))
            }
            Ok(Fetched::NotFound) => Err(ProxyError::NoSuchVersion),
            Ok(Fetched::NotModified) => {
                Err(registry.unavailable("304 to an unconditional request"))
            }
            Err(e) => {
                if !matches!(e, FetchError::TooLarge(_)) && registry.health.failed() {
                    tracing::warn!(upstream = %registry.url, error = %e, "upstream marked down");
                }
                Err(registry.unavailable(e))
            }
        };
        if let Ok(kept) = &kept
            && has_attestations(&kept.manifest)
        {
            // Kept with the bytes they are about, after the response: the version stays
            // verifiable here whatever the upstream does later.
            let (inner, n, k) = (self.clone(), name.clone(), kept.clone());
            let later = Box::pin(async move {
                inner.keep_attestations(&n, &k, via.as_deref()).await;
            });
            match &self.after_response {
                Some(queue) => queue.defer(later),
                None => {
                    tokio::spawn(later);
                }
            }
        }
        kept
    }

    /// Keeps the attestations of a version just kept, if it has any and they are not kept yet
    /// (best effort: a failure is logged, and a later request for them tries again).
    async fn keep_attestations(&self, name: &PackageName, kept: &KeptVersion, via: Option<&str>) {
        if !has_attestations(&kept.manifest) {
            return;
        }
        match self
            .store
            .document(name, &attestations_view(&kept.version))
            .await
        {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(package = %name, version = %kept.version, error = %e, "upstream attestations not kept");
                return;
            }
        }
        if let Err(e) = self
            .fetch_attestations(name, &kept.version, &kept.manifest, &kept.integrity, via)
            .await
        {
            tracing::warn!(package = %name, version = %kept.version, error = %e, "upstream attestations not kept");
        }
    }

    /// Fetches a version's attestations from its upstream, where its manifest's
    /// `dist.attestations.url` says (its path on the upstream's origin, as npm reads it from a
    /// registry), checks they are about the bytes of SRI `integrity`, and keeps them.
    async fn fetch_attestations(
        &self,
        name: &PackageName,
        version: &Version,
        manifest: &Value,
        integrity: &str,
        via: Option<&str>,
    ) -> Result<Bytes, ProxyError> {
        let Some(listed) = manifest
            .pointer("/dist/attestations/url")
            .and_then(Value::as_str)
        else {
            return Err(ProxyError::NoAttestations);
        };
        let registry = self.registry(name).ok_or(ProxyError::NotFound)?;
        if registry.health.is_down() {
            return Err(registry.unavailable("marked down after repeated failures"));
        }
        let url = on_origin(&registry.url, listed)
            .ok_or_else(|| registry.unavailable(format!("unusable attestations URL {listed}")))?;
        let fetched = self
            .client
            .get(Get {
                url: &url,
                accept: "application/json",
                auth: registry.auth(),
                if_none_match: None,
                max_bytes: MAX_ATTESTATIONS_BYTES,
                inline_max: None,
                streamed: false,
                via,
            })
            .await;
        let bytes = match fetched {
            Ok(Fetched::Body { bytes, .. }) => {
                registry.health.succeeded();
                bytes
            }
            Ok(Fetched::NotFound) => {
                registry.health.succeeded();
                return Err(ProxyError::NoAttestations);
            }
            Ok(_) => return Err(registry.unavailable("an unexpected answer to a plain GET")),
            Err(e) => {
                if !matches!(e, FetchError::TooLarge(_)) && registry.health.failed() {
                    tracing::warn!(upstream = %registry.url, error = %e, "upstream marked down");
                }
                return Err(registry.unavailable(e));
            }
        };
        if !document::attestations_attest(&bytes, integrity) {
            tracing::warn!(package = %name, %version, %url, "upstream attestations are not about the bytes served here: not kept");
            return Err(ProxyError::AttestationsMismatch {
                url,
                integrity: integrity.to_string(),
            });
        }
        self.store
            .keep_document(name, &attestations_view(version), bytes.clone())
            .await?;
        Ok(bytes)
    }

    /// Reads a tarball's body within `timeout`, checks it against the declared integrity and
    /// keeps it. With a sha512 declared the pieces go straight to storage under the key that
    /// digest names, committed only if every byte matched (abandoned otherwise: nothing is
    /// kept); with only a sha1 (packages from before 2017, small) the body is gathered first.
    async fn keep_pieces(
        &self,
        name: &PackageName,
        version: &Version,
        dist: &UpstreamDist,
        mut body: client::PendingBody,
        timeout: Duration,
    ) -> Result<KeptVersion, ProxyError> {
        let failed = |e: FetchError| ProxyError::Unavailable {
            url: dist.tarball.clone(),
            reason: e.to_string(),
        };
        let Some(sha512_hex) = Digests::declared_sha512_hex(&dist.integrity) else {
            let bytes = body.read(timeout).await.map_err(failed)?;
            return self.keep(name, version, dist, bytes).await;
        };
        let key = TarballKey::new(name, version, &sha512_hex);
        let mut sink = self.store.tarball_sink(&key).await?;
        let mut digests = DigestsBuilder::default();
        let written = tokio::time::timeout(timeout, async {
            while let Some(piece) = body.next_piece().await.map_err(failed)? {
                digests.update(&piece);
                sink.write(piece).await?;
            }
            Ok::<(), ProxyError>(())
        })
        .await
        .unwrap_or_else(|_| Err(failed(FetchError::Timeout(timeout))));
        if let Err(e) = written {
            sink.abandon().await;
            return Err(e);
        }
        let digests = digests.finish();
        if let Err(e) = Self::check(name, version, dist, &digests) {
            sink.abandon().await;
            return Err(e);
        }
        sink.commit().await?;
        self.record_kept(name, version, dist, key, digests).await
    }

    /// Refuses bytes whose digests disagree with the declared integrity.
    fn check(
        name: &PackageName,
        version: &Version,
        dist: &UpstreamDist,
        digests: &Digests,
    ) -> Result<(), ProxyError> {
        if digests.matches_sri(&dist.integrity) {
            return Ok(());
        }
        tracing::warn!(package = %name, %version, url = %dist.tarball, "upstream tarball does not match its integrity: refused");
        Err(ProxyError::Integrity {
            url: dist.tarball.clone(),
            declared: dist.integrity.clone(),
        })
    }

    /// Checks `bytes` against the declared integrity and keeps them.
    async fn keep(
        &self,
        name: &PackageName,
        version: &Version,
        dist: &UpstreamDist,
        bytes: Bytes,
    ) -> Result<KeptVersion, ProxyError> {
        let digests = Digests::of(&bytes);
        Self::check(name, version, dist, &digests)?;
        let key = TarballKey::new(name, version, &digests.sha512_hex);
        self.store.keep_tarball(&key, bytes).await?;
        self.record_kept(name, version, dist, key, digests).await
    }

    /// Records a kept tarball, which makes it servable (its bytes are stored by now).
    async fn record_kept(
        &self,
        name: &PackageName,
        version: &Version,
        dist: &UpstreamDist,
        key: TarballKey,
        digests: Digests,
    ) -> Result<KeptVersion, ProxyError> {
        let kept = KeptVersion {
            version: version.clone(),
            tarball_key: key.as_str().to_string(),
            integrity: digests.integrity,
            shasum: digests.sha1_hex,
            manifest: dist.manifest.clone(),
            time: dist.time.clone(),
        };
        let value = serde_json::to_vec(&kept).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.kv
            .put(&kept_namespace(name), &version.to_string(), &value, None)
            .await?;
        Ok(kept)
    }

    /// What the upstream document says of `name@version`'s tarball: from a document held in
    /// memory that lists it, else a refreshed one.
    async fn dist(
        self: Arc<Self>,
        name: &PackageName,
        version: &Version,
        via: Option<&str>,
    ) -> Result<UpstreamDist, ProxyError> {
        for abbreviated in [true, false] {
            let held = self.lock_memory().get(&(name.clone(), abbreviated));
            if let Some(dist) = held
                .and_then(|d| d.parsed(name))
                .and_then(|doc| document::dist_of(&doc, version))
            {
                return Ok(dist);
            }
        }
        let doc = self
            .clone()
            .cached_document(name, true, via.map(str::to_string))
            .await?;
        let listed = doc
            .parsed(name)
            .and_then(|d| document::dist_of(&d, version));
        if let Some(dist) = listed {
            return Ok(dist);
        }
        if doc.freshness != Freshness::Stale && doc.checked.elapsed() > Duration::from_secs(1) {
            // Published upstream since the document was fetched: ask again once.
            self.lock_memory().forget(name);
            let doc = self
                .clone()
                .cached_document(name, true, via.map(str::to_string))
                .await?;
            if let Some(dist) = doc
                .parsed(name)
                .and_then(|d| document::dist_of(&d, version))
            {
                return Ok(dist);
            }
        }
        Err(ProxyError::NoSuchVersion)
    }
}

/// Whether a version manifest lists attestations (`dist.attestations`).
fn has_attestations(manifest: &Value) -> bool {
    manifest.pointer("/dist/attestations/url").is_some()
}

/// `listed`'s path and query on `registry`'s origin: where npm itself would fetch a URL a
/// registry's document names (pacote reads attestations from the registry it installs from).
fn on_origin(registry: &str, listed: &str) -> Option<String> {
    let listed = url::Url::parse(listed).ok()?;
    let mut url = url::Url::parse(registry).ok()?;
    url.set_path(listed.path());
    url.set_query(listed.query());
    url.set_fragment(None);
    Some(url.to_string())
}

/// A package name as the path segment registries expect (`@scope%2fname`).
fn escape(name: &PackageName) -> String {
    name.as_str().replacen('/', "%2f", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestations_are_fetched_from_the_upstreams_origin() {
        assert_eq!(
            on_origin(
                "https://registry.npmjs.org",
                "https://registry.npmjs.org/-/npm/v1/attestations/@sigstore%2fcore@1.0.0"
            )
            .as_deref(),
            Some("https://registry.npmjs.org/-/npm/v1/attestations/@sigstore%2fcore@1.0.0")
        );
        // A document naming another host: its path on the upstream, as pacote does.
        assert_eq!(
            on_origin(
                "http://127.0.0.1:4873/",
                "https://elsewhere.example/-/npm/v1/attestations/x@1.0.0?a=b"
            )
            .as_deref(),
            Some("http://127.0.0.1:4873/-/npm/v1/attestations/x@1.0.0?a=b")
        );
        assert_eq!(on_origin("http://127.0.0.1:4873", "not a url"), None);
        assert_eq!(
            attestations_view(&Version::parse("1.0.0-rc.1").unwrap()),
            "attestations-1.0.0-rc.1"
        );
    }
}
