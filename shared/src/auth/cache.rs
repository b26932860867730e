//! GitHub's answers, cached in memory and in the KV store (`kv::Namespace::GithubCache`) with
//! their ETags: reads reuse a fresh answer, and a stale one while GitHub is down; writes always
//! revalidate, which an unchanged answer answers with a 304 that costs no rate limit.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::github::{Fetched, GithubError};
use super::kv::{Kv, KvKey};

/// A cached GitHub answer: the registry's reading of it (`RepoAccess`, `TokenOwner`, …), as
/// JSON so one cache holds every kind.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    value: serde_json::Value,
    etag: Option<String>,
    fetched: DateTime<Utc>,
}

/// How many answers the memory keeps before it starts over.
pub(super) const MEMORY_ENTRIES: usize = 10_000;

/// How fresh an answer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freshness {
    /// Reads: a recent cached answer will do, and a stale one if GitHub is down.
    Cached,
    /// Writes: always ask GitHub (an ETag revalidation costs no rate limit); fail closed.
    Revalidate,
}

/// The cache of GitHub answers.
pub(super) struct AnswerCache {
    kv: Kv,
    memory: Mutex<HashMap<String, CacheEntry>>,
    /// How long an answer is used for reads without asking again.
    fresh_for: Duration,
    /// How long an answer may still serve reads while GitHub is unavailable (and is kept).
    stale_for: Duration,
}

impl AnswerCache {
    /// A cache in memory and in `kv`.
    pub(super) fn new(kv: Kv, fresh_for: Duration, stale_for: Duration) -> Self {
        Self {
            kv,
            memory: Mutex::new(HashMap::new()),
            fresh_for,
            stale_for,
        }
    }

    async fn get(&self, key: &KvKey) -> Option<CacheEntry> {
        if let Some(e) = self
            .memory
            .lock()
            .ok()
            .and_then(|m| m.get(key.id()).cloned())
        {
            return Some(e);
        }
        let entry: CacheEntry = self.kv.get_json(key).await.ok()??;
        self.remember(key, &entry);
        Some(entry)
    }

    fn remember(&self, key: &KvKey, entry: &CacheEntry) {
        if let Ok(mut m) = self.memory.lock() {
            if m.len() >= MEMORY_ENTRIES {
                m.clear();
            }
            m.insert(key.id().to_string(), entry.clone());
        }
    }

    async fn put(&self, key: &KvKey, entry: &CacheEntry) {
        self.remember(key, entry);
        let expires = entry.fetched + self.stale_for;
        if let Err(e) = self.kv.put_json(key, entry, Some(expires)).await {
            tracing::warn!(error = %e, "could not store a GitHub answer in the cache");
        }
    }

    /// A cached GitHub answer under `key` (which holds no secret: `KvKey` hashes tokens),
    /// asking GitHub as `freshness` requires, with the cached ETag so an unchanged answer costs
    /// no rate limit.
    pub(super) async fn cached<T, F, Fut>(
        &self,
        key: &KvKey,
        freshness: Freshness,
        fetch: F,
    ) -> Result<T, GithubError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Fetched<T>, GithubError>>,
    {
        let now = Utc::now();
        let cached = self.get(key).await;
        if let (Some(entry), Freshness::Cached) = (&cached, freshness)
            && now - entry.fetched < self.fresh_for
            && let Ok(value) = serde_json::from_value(entry.value.clone())
        {
            return Ok(value);
        }
        match fetch(cached.as_ref().and_then(|e| e.etag.clone())).await {
            Ok(Fetched::Fresh(value, etag)) => {
                let entry = CacheEntry {
                    value: serde_json::to_value(&value)
                        .map_err(|e| GithubError::Unavailable(e.to_string()))?,
                    etag,
                    fetched: now,
                };
                self.put(key, &entry).await;
                Ok(value)
            }
            Ok(Fetched::NotModified) => {
                let mut entry = cached.ok_or_else(|| {
                    GithubError::Unavailable("304 without a cached answer".into())
                })?;
                entry.fetched = now;
                self.put(key, &entry).await;
                serde_json::from_value(entry.value)
                    .map_err(|e| GithubError::Unavailable(e.to_string()))
            }
            Err(GithubError::BadCredentials) => {
                if let Ok(mut m) = self.memory.lock() {
                    m.remove(key.id());
                }
                let _ = self.kv.delete(key).await;
                Err(GithubError::BadCredentials)
            }
            Err(e) => match (cached, freshness) {
                // Stale-if-error, for reads only: writes fail closed.
                (Some(entry), Freshness::Cached) if now - entry.fetched < self.stale_for => {
                    tracing::warn!(error = %e, "GitHub unavailable; serving a cached permission");
                    serde_json::from_value(entry.value).map_err(|_| e)
                }
                _ => Err(e),
            },
        }
    }
}
