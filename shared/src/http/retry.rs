//! Retrying conditional writes that lost a race.

use std::time::Duration;

use super::ApiError;
use crate::storage::StoreError;

/// Retries a read-modify-write on revision conflicts. Writes are conditional on the revision they
/// read, so concurrent writers to one package each land after at most a few rounds.
pub async fn retry_on_conflict<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RetryableError>>,
{
    const ATTEMPTS: u32 = 200;
    for n in 0..ATTEMPTS {
        match attempt().await {
            Err(RetryableError::Store(StoreError::RevisionConflict)) if n + 1 < ATTEMPTS => {
                // Jittered backoff spreads racing writers out so one of them commits each round.
                let max_ms = 1 + u64::from(n.min(20));
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..=max_ms))).await;
            }
            Err(RetryableError::Store(e)) => return Err(e.into()),
            Err(RetryableError::Api(e)) => return Err(e),
            Ok(v) => return Ok(v),
        }
    }
    Err(StoreError::RevisionConflict.into())
}

/// An error inside a retried write: a store conflict is retried, the rest end the request.
#[derive(Debug)]
pub enum RetryableError {
    /// From storage.
    Store(StoreError),
    /// Anything else.
    Api(ApiError),
}

impl From<StoreError> for RetryableError {
    fn from(e: StoreError) -> Self {
        RetryableError::Store(e)
    }
}

impl From<crate::domain::publish::PublishError> for RetryableError {
    fn from(e: crate::domain::publish::PublishError) -> Self {
        RetryableError::Api(e.into())
    }
}

impl From<ApiError> for RetryableError {
    fn from(e: ApiError) -> Self {
        RetryableError::Api(e)
    }
}
