//! Single flight: concurrent requests for the same upstream thing share one fetch.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

/// Fetches in progress by key; the first caller starts one, the others wait for its result.
pub struct Flights<K, V: Clone> {
    running: Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>>,
}

impl<K, V: Clone> Default for Flights<K, V> {
    fn default() -> Self {
        Self {
            running: Arc::default(),
        }
    }
}

impl<K, V> Flights<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// `work`'s result, shared with every concurrent caller of the same key. The work runs in a
    /// task of its own, so a caller that goes away does not cancel it for the others.
    pub async fn run<F>(&self, key: K, work: F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        let shared = {
            let mut running = self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(flight) = running.get(&key) {
                flight.clone()
            } else {
                let done = self.running.clone();
                let done_key = key.clone();
                let task = tokio::spawn(async move {
                    let value = work.await;
                    done.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&done_key);
                    value
                });
                let flight: BoxFuture<'static, V> = Box::pin(async move {
                    match task.await {
                        Ok(value) => value,
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    }
                });
                let flight = flight.shared();
                running.insert(key, flight.clone());
                flight
            }
        };
        shared.await
    }

    /// How many fetches are running.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights: Arc<Flights<&'static str, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let (flights, runs, mut gate) = (flights.clone(), runs.clone(), gate.clone());
            waiters.push(tokio::spawn(async move {
                flights
                    .run("left-pad", async move {
                        let _ = gate.wait_for(|open| *open).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 41
                    })
                    .await
            }));
        }
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        for w in waiters {
            assert_eq!(w.await.unwrap(), 41);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "forgotten once done");
        assert_eq!(
            flights.run("left-pad", async { 7 }).await,
            7,
            "a later call runs anew"
        );
    }
}
