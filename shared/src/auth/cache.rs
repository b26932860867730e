//! GitHub's answers, cached in memory and in the KV store (`kv::Namespace::GithubCache`) with
//! their ETags: reads reuse a fresh answer, and a stale one while GitHub is down; writes always
//! revalidate, which an unchanged answer answers with a 304 that costs no rate limit.
//!
//! On DynamoDB (`docs/scaling.md`, part 5) a memory miss reads the stored answer eventually
//! consistently, at half the price: an entry carries the time it was fetched, so an older copy
//! from a lagging replica is only revalidated sooner. A 304 refreshes the stored copy only once
//! it is older than half of `fresh_for`: a write revalidates every time, and storing each 304
//! would write the cache's partition once per write.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::github::{Fetched, GithubError};
use super::kv::{Kv, KvKey};
use crate::storage::Consistency;

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
        let entry: CacheEntry = self
            .kv
            .get_json_with(key, Consistency::Eventual)
            .await
            .ok()??;
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
                let young = now - entry.fetched < self.fresh_for / 2;
                entry.fetched = now;
                if young {
                    self.remember(key, &entry);
                } else {
                    self.put(key, &entry).await;
                }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::storage::{KvStore, StoreError};

    /// A KV store that records how each call read or wrote.
    #[derive(Default)]
    struct Recording {
        values: Mutex<BTreeMap<(String, String), Vec<u8>>>,
        calls: Mutex<Vec<String>>,
    }

    impl Recording {
        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    #[async_trait]
    impl KvStore for Recording {
        async fn get(&self, namespace: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.get_with(namespace, id, Consistency::Strong).await
        }
        async fn get_with(
            &self,
            namespace: &str,
            id: &str,
            consistency: Consistency,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("get {namespace} {consistency:?}"));
            Ok(self
                .values
                .lock()
                .unwrap()
                .get(&(namespace.to_string(), id.to_string()))
                .cloned())
        }
        async fn put(
            &self,
            namespace: &str,
            id: &str,
            value: &[u8],
            _: Option<DateTime<Utc>>,
        ) -> Result<(), StoreError> {
            self.calls.lock().unwrap().push(format!("put {namespace}"));
            self.values
                .lock()
                .unwrap()
                .insert((namespace.to_string(), id.to_string()), value.to_vec());
            Ok(())
        }
        async fn put_new(
            &self,
            _: &str,
            _: &str,
            _: &[u8],
            _: Option<DateTime<Utc>>,
        ) -> Result<bool, StoreError> {
            unreachable!("the answer cache never creates only if absent")
        }
        async fn delete(&self, namespace: &str, id: &str) -> Result<(), StoreError> {
            self.values
                .lock()
                .unwrap()
                .remove(&(namespace.to_string(), id.to_string()));
            Ok(())
        }
        async fn list(&self, _: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn stored(store: &Recording, key: &KvKey, fetched: DateTime<Utc>) {
        let entry = CacheEntry {
            value: serde_json::json!("admin"),
            etag: Some("\"e1\"".into()),
            fetched,
        };
        store.values.lock().unwrap().insert(
            (key.namespace().to_string(), key.id().to_string()),
            serde_json::to_vec(&entry).unwrap(),
        );
    }

    async fn revalidated(cache: &AnswerCache, key: &KvKey) -> String {
        cache
            .cached(key, Freshness::Revalidate, |etag| async move {
                assert_eq!(etag.as_deref(), Some("\"e1\""), "asked with the ETag");
                Ok(Fetched::<String>::NotModified)
            })
            .await
            .unwrap()
    }

    /// A memory miss reads the stored answer eventually consistently, from its shard; a 304
    /// stores the answer again only once the stored copy is older than half of `fresh_for`
    /// (the copy in memory is refreshed either way).
    #[tokio::test]
    async fn a_304_rewrites_only_an_old_answer_and_misses_read_eventually() {
        let store = Arc::new(Recording::default());
        let fresh_for = Duration::seconds(60);
        let key = KvKey::token_owner("ghp_x");
        let shard = key.namespace().to_string();
        assert!(shard.starts_with("github-cache/"), "{shard}");

        stored(&store, &key, Utc::now() - Duration::seconds(10));
        let cache = AnswerCache::new(Kv::new(store.clone()), fresh_for, Duration::hours(1));
        assert_eq!(revalidated(&cache, &key).await, "admin");
        assert_eq!(
            store.calls(),
            [format!("get {shard} Eventual")],
            "young: the 304 is not written back"
        );

        stored(&store, &key, Utc::now() - Duration::seconds(40));
        let cache = AnswerCache::new(Kv::new(store.clone()), fresh_for, Duration::hours(1));
        assert_eq!(revalidated(&cache, &key).await, "admin");
        assert_eq!(
            store.calls(),
            [format!("get {shard} Eventual"), format!("put {shard}")],
            "older than half of fresh_for: stored with its new time"
        );
        // And a read within fresh_for is then answered from memory.
        let value: String = cache
            .cached(&key, Freshness::Cached, |_| async {
                panic!("GitHub is not asked for a fresh answer")
            })
            .await
            .unwrap();
        assert_eq!((value.as_str(), store.calls()), ("admin", Vec::new()));
    }
}
