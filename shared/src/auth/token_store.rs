//! Where registry-token records live: in the KV store, one namespace per user
//! (`kv::Namespace::Tokens`), keyed by token id, until the token expires. `auth::tokens` makes
//! and checks the tokens; it stays free of I/O (the fuzz crate compiles it alone).

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::kv::{Kv, KvKey, Namespace};
use super::tokens::TokenRecord;
use crate::storage::{Consistency, StoreError};

/// Stores a token's record until the token expires (under `kv::Namespace::Tokens` of its login).
pub async fn save(kv: &Kv, record: &TokenRecord) -> Result<(), StoreError> {
    kv.put_json(
        &KvKey::registry_token(&record.login, &record.jti),
        record,
        Some(record.expires),
    )
    .await
}

/// The record of `login`'s token `jti`, read as recent as `consistency` asks, an absence
/// always confirmed by a strong read (a token minted a moment ago works at once); one that does
/// not decode reads as absent (revoked).
async fn record(
    kv: &Kv,
    login: &str,
    jti: &str,
    consistency: Consistency,
) -> Result<Option<TokenRecord>, StoreError> {
    let key = KvKey::registry_token(login, jti);
    match kv.get_json_with(&key, consistency).await? {
        None if consistency == Consistency::Eventual => kv.get_json(&key).await,
        found => Ok(found),
    }
}

/// Whether `login`'s token `jti` still exists (has not expired nor been revoked), read as
/// `record` reads it.
async fn exists(
    kv: &Kv,
    login: &str,
    jti: &str,
    consistency: Consistency,
) -> Result<bool, StoreError> {
    let key = KvKey::registry_token(login, jti);
    Ok(match kv.get_with(&key, consistency).await? {
        None if consistency == Consistency::Eventual => kv.get(&key).await?.is_some(),
        found => found.is_some(),
    })
}

/// A registry token's record as a request uses it.
#[derive(Debug, Clone)]
pub(crate) struct TokenState {
    /// The record.
    pub record: TokenRecord,
    /// Whether the token it was minted with (if any) still exists.
    pub root_alive: bool,
}

/// How many token records an instance keeps, least recently used out first.
const MAX_KEPT: NonZeroUsize = NonZeroUsize::new(1024).expect("not zero");

/// Registry-token records kept per instance for read routes, for `REGISTRY_TOKEN_CACHE_SECONDS`
/// (`docs/scaling.md`, part 5): every request with a token would otherwise read its user's
/// partition. Writes read strongly every time, and a revocation made through this instance is
/// seen by it at once; elsewhere a revoked token may still read for as long as a record is
/// kept. With a lifetime of zero nothing is kept and every read is strong, as before.
pub(crate) struct TokenRecords {
    keep_for: Duration,
    kept: Mutex<LruCache<(String, String), (Instant, TokenState)>>,
    /// Logins with a token revoked here lately, whose records are read strongly for a lifetime:
    /// a replica may still hold what was revoked.
    revoked: Mutex<LruCache<String, Instant>>,
}

impl TokenRecords {
    /// Records kept for `keep_for`.
    pub(crate) fn new(keep_for: Duration) -> Self {
        TokenRecords {
            keep_for,
            kept: Mutex::new(LruCache::new(MAX_KEPT)),
            revoked: Mutex::new(LruCache::new(MAX_KEPT)),
        }
    }

    fn kept(&self) -> MutexGuard<'_, LruCache<(String, String), (Instant, TokenState)>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `login`'s token `jti` (`None`: revoked or expired), for a request that `writes` or not:
    /// a read may use a record kept less than the lifetime ago, or read one eventually
    /// consistently; a write reads it strongly.
    pub(crate) async fn get(
        &self,
        kv: &Kv,
        login: &str,
        jti: &str,
        writes: bool,
    ) -> Result<Option<TokenState>, StoreError> {
        let key = (login.to_ascii_lowercase(), jti.to_string());
        let keeps = !self.keep_for.is_zero();
        if keeps && !writes {
            let kept = self.kept().get(&key).cloned();
            if let Some((_, state)) = kept.filter(|(at, _)| at.elapsed() < self.keep_for) {
                return Ok(Some(state));
            }
        }
        let revoked_lately = keeps
            && self
                .revoked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key.0)
                .is_some_and(|at| at.elapsed() < self.keep_for);
        let consistency = if keeps && !writes && !revoked_lately {
            Consistency::Eventual
        } else {
            Consistency::Strong
        };
        let at = Instant::now();
        let Some(record) = record(kv, login, jti, consistency).await? else {
            return Ok(None);
        };
        let root_alive = match &record.parent {
            Some(root) => exists(kv, login, root, consistency).await?,
            None => true,
        };
        let state = TokenState { record, root_alive };
        if keeps {
            self.kept().put(key, (at, state.clone()));
        }
        Ok(Some(state))
    }

    /// Drops every record kept of `login`'s tokens, and reads them strongly for a lifetime: one
    /// of them was revoked here (and with it, perhaps, the tokens minted with it).
    pub(crate) fn forget(&self, login: &str) {
        let login = login.to_ascii_lowercase();
        let mut kept = self.kept();
        let gone: Vec<(String, String)> = kept
            .iter()
            .filter(|((who, _), _)| *who == login)
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            kept.pop(&key);
        }
        drop(kept);
        if !self.keep_for.is_zero() {
            self.revoked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(login, Instant::now());
        }
    }
}

/// Every record of `login`'s tokens, oldest first; records that do not decode are skipped.
pub async fn records(kv: &Kv, login: &str) -> Result<Vec<TokenRecord>, StoreError> {
    let mut records: Vec<TokenRecord> = kv
        .list(&Namespace::tokens(login))
        .await?
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect();
    records.sort_by_key(|r| r.created);
    Ok(records)
}

/// Revokes `login`'s token `jti` (and with it every token minted with it); revoking an absent
/// one succeeds.
pub async fn remove(kv: &Kv, login: &str, jti: &str) -> Result<(), StoreError> {
    kv.delete(&KvKey::registry_token(login, jti)).await
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::auth::tokens::TokenScope;
    use crate::storage::KvStore;

    /// A store whose eventual reads see a replica that catches up only when told to.
    #[derive(Default)]
    struct Replicated {
        primary: Mutex<HashMap<(String, String), Vec<u8>>>,
        replica: Mutex<HashMap<(String, String), Vec<u8>>>,
        reads: Mutex<Vec<Consistency>>,
    }

    impl Replicated {
        fn replicate(&self) {
            let primary = self.primary.lock().unwrap().clone();
            *self.replica.lock().unwrap() = primary;
        }

        fn reads(&self) -> Vec<Consistency> {
            std::mem::take(&mut *self.reads.lock().unwrap())
        }
    }

    #[async_trait]
    impl KvStore for Replicated {
        async fn get(&self, namespace: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.get_with(namespace, id, Consistency::Strong).await
        }
        async fn get_with(
            &self,
            namespace: &str,
            id: &str,
            consistency: Consistency,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            self.reads.lock().unwrap().push(consistency);
            let side = match consistency {
                Consistency::Strong => &self.primary,
                Consistency::Eventual => &self.replica,
            };
            Ok(side
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
            self.primary
                .lock()
                .unwrap()
                .insert((namespace.to_string(), id.to_string()), value.to_vec());
            Ok(())
        }
        async fn put_new(
            &self,
            namespace: &str,
            id: &str,
            value: &[u8],
            expires: Option<DateTime<Utc>>,
        ) -> Result<bool, StoreError> {
            self.put(namespace, id, value, expires).await?;
            Ok(true)
        }
        async fn delete(&self, namespace: &str, id: &str) -> Result<(), StoreError> {
            self.primary
                .lock()
                .unwrap()
                .remove(&(namespace.to_string(), id.to_string()));
            Ok(())
        }
        async fn list(&self, _: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn token(jti: &str, parent: Option<&str>) -> TokenRecord {
        TokenRecord {
            jti: jti.into(),
            login: "alice".into(),
            created: Utc::now(),
            expires: Utc::now() + chrono::Duration::days(1),
            scope: TokenScope::Publish,
            preview: "eyJ".into(),
            sealed: String::new(),
            parent: parent.map(str::to_string),
        }
    }

    use Consistency::{Eventual, Strong};

    #[tokio::test]
    async fn reads_keep_a_record_writes_read_it_strongly_and_a_new_token_works_at_once() {
        let store = Arc::new(Replicated::default());
        let kv = Kv::new(store.clone());
        let records = TokenRecords::new(Duration::from_secs(3600));
        // Just minted: the replica has not seen it, the strong read that confirms an absence has.
        save(&kv, &token("t1", None)).await.unwrap();
        let found = records.get(&kv, "Alice", "t1", false).await.unwrap();
        assert!(found.is_some_and(|s| s.root_alive && s.record.jti == "t1"));
        assert_eq!(store.reads(), [Eventual, Strong]);
        assert!(
            records
                .get(&kv, "alice", "t1", false)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.reads(), [], "kept: no read");
        // Revoked elsewhere: reads may still use the kept record, writes see the revocation.
        store.replicate();
        remove(&kv, "alice", "t1").await.unwrap();
        assert!(
            records
                .get(&kv, "alice", "t1", false)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            records
                .get(&kv, "alice", "t1", true)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.reads(), [Strong]);
        // Revoked here: forgotten at once.
        save(&kv, &token("t2", None)).await.unwrap();
        store.replicate();
        assert!(
            records
                .get(&kv, "alice", "t2", false)
                .await
                .unwrap()
                .is_some()
        );
        remove(&kv, "alice", "t2").await.unwrap();
        records.forget("ALICE");
        assert!(
            records
                .get(&kv, "alice", "t2", false)
                .await
                .unwrap()
                .is_none(),
            "the replica still has it: read strongly"
        );
        assert_eq!(store.reads(), [Eventual, Strong]);
    }

    #[tokio::test]
    async fn a_derived_token_dies_with_its_root_and_nothing_is_kept_without_a_lifetime() {
        let store = Arc::new(Replicated::default());
        let kv = Kv::new(store.clone());
        let records = TokenRecords::new(Duration::ZERO);
        save(&kv, &token("root", None)).await.unwrap();
        save(&kv, &token("child", Some("root"))).await.unwrap();
        store.replicate();
        for _ in 0..2 {
            let state = records.get(&kv, "alice", "child", false).await.unwrap();
            assert!(state.is_some_and(|s| s.root_alive));
        }
        assert_eq!(store.reads(), [Strong, Strong, Strong, Strong]);
        remove(&kv, "alice", "root").await.unwrap();
        let state = records.get(&kv, "alice", "child", false).await.unwrap();
        assert!(state.is_some_and(|s| !s.root_alive));
    }
}
