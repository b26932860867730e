//! One process's search index over a store: loaded from the store's entries once, kept current
//! with this process's own writes as they commit, and, where other processes write too (the
//! Lambda functions), with the store's change log at most once per refresh interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::SearchIndex;
use crate::storage::{MetadataStore, SearchChange, StoreError};

/// The index and how far it has read the store.
pub struct Searcher {
    index: RwLock<SearchIndex>,
    /// Set once the index holds the store's entries.
    loaded: AtomicBool,
    /// Set while the first load runs.
    loading: AtomicBool,
    /// Changes committed while the first load ran, applied again once it is in (the load may have
    /// read the store before them).
    during_load: Mutex<Vec<SearchChange>>,
    /// Loads and refreshes one at a time.
    progress: tokio::sync::Mutex<Progress>,
    /// How often the change log is read; `None` never (the store's writers are all in this
    /// process), zero before every search.
    refresh_every: Option<Duration>,
}

/// Where the index stands against the store's change log.
struct Progress {
    watermark: Option<String>,
    refreshed: Option<Instant>,
}

impl Searcher {
    /// An empty index, to be loaded from the store on first use (or by `load`).
    pub fn new(refresh_every: Option<Duration>) -> Self {
        Searcher {
            index: RwLock::new(SearchIndex::new()),
            loaded: AtomicBool::new(false),
            loading: AtomicBool::new(false),
            during_load: Mutex::new(Vec::new()),
            progress: tokio::sync::Mutex::new(Progress {
                watermark: None,
                refreshed: None,
            }),
            refresh_every,
        }
    }

    /// Applies a write this process has just committed. Before the first load nothing is kept:
    /// the load will read the write from the store (a process that never searches, such as the
    /// publish function, keeps nothing); during it the change is kept to be applied after.
    pub fn committed(&self, change: &SearchChange) {
        if matches!(change, SearchChange::Keep) {
            return;
        }
        if !self.loaded.load(Ordering::Acquire) {
            let mut during = lock(&self.during_load);
            // Checked again under the lock the load takes to finish.
            if !self.loaded.load(Ordering::Acquire) {
                if self.loading.load(Ordering::Acquire) {
                    during.push(change.clone());
                }
                return;
            }
        }
        write(&self.index).apply(change);
    }

    /// Loads the index from the store unless it is loaded; refreshes it from the store's log
    /// when a refresh is due. Then runs `f` on it.
    pub async fn with_index<R>(
        &self,
        store: &dyn MetadataStore,
        f: impl FnOnce(&SearchIndex) -> R,
    ) -> Result<R, StoreError> {
        if !self.loaded.load(Ordering::Acquire) {
            self.load(store).await?;
        } else if let Some(every) = self.refresh_every {
            self.refresh(store, every).await?;
        }
        Ok(f(&read(&self.index)))
    }

    /// Reads every entry from the store into a new index, unless one is loaded already.
    pub async fn load(&self, store: &dyn MetadataStore) -> Result<(), StoreError> {
        let mut progress = self.progress.lock().await;
        if self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        let started = Instant::now();
        self.loading.store(true, Ordering::Release);
        let load = match store.search_entries().await {
            Ok(load) => load,
            Err(e) => {
                self.loading.store(false, Ordering::Release);
                lock(&self.during_load).clear();
                return Err(e);
            }
        };
        let mut index = SearchIndex::new();
        for entry in load.entries {
            index.put(entry);
        }
        index.shrink();
        {
            let mut during = lock(&self.during_load);
            for change in during.drain(..) {
                index.apply(&change);
            }
            *write(&self.index) = index;
            self.loaded.store(true, Ordering::Release);
            self.loading.store(false, Ordering::Release);
        }
        progress.watermark = load.watermark;
        progress.refreshed = Some(Instant::now());
        let index = read(&self.index);
        tracing::info!(
            packages = index.len(),
            heap_mib = index.heap_bytes() >> 20,
            ms = started.elapsed().as_millis(),
            "search index loaded"
        );
        Ok(())
    }

    /// Applies the store's changes since the last refresh, if the interval has passed. A refresh
    /// already running is not waited for: its caller brings the index up to date.
    async fn refresh(&self, store: &dyn MetadataStore, every: Duration) -> Result<(), StoreError> {
        let Ok(mut progress) = self.progress.try_lock() else {
            return Ok(());
        };
        if progress.refreshed.is_some_and(|at| at.elapsed() < every) {
            return Ok(());
        }
        let started = Instant::now();
        let (changes, watermark) = store.search_changes(progress.watermark.as_deref()).await?;
        if !changes.is_empty() {
            let mut index = write(&self.index);
            for change in &changes {
                index.apply(change);
            }
        }
        progress.watermark = watermark;
        progress.refreshed = Some(started);
        Ok(())
    }

    /// Packages indexed (0 until loaded).
    pub fn len(&self) -> usize {
        read(&self.index).len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// A panic while holding a lock leaves the index as consistent as any single change leaves it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read(m: &RwLock<SearchIndex>) -> std::sync::RwLockReadGuard<'_, SearchIndex> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(m: &RwLock<SearchIndex>) -> std::sync::RwLockWriteGuard<'_, SearchIndex> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::entry::test_entry;

    #[test]
    fn writes_before_the_first_load_are_left_to_it() {
        let searcher = Searcher::new(None);
        for i in 0..1_000 {
            let entry = test_entry(&format!("@a/p{i}"), "1.0.0", serde_json::json!({}), None);
            searcher.committed(&SearchChange::Put(Box::new(entry)));
        }
        assert!(
            lock(&searcher.during_load).is_empty(),
            "nothing kept by a process that never searches"
        );
        assert!(searcher.is_empty());
    }
}
