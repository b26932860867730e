//! The database handle, replaced when redb gives up on it.
//!
//! After an I/O error (a full disk, most often) redb fails every later operation on that
//! `Database`, reads of pages it has not cached included, with `PreviousIo`, until the handle is
//! closed and the file opened again; freeing space does not help. So the store keeps its handle
//! here: whoever meets such an error reopens the file (once per failure, however many met it)
//! and the operation runs again on the fresh handle. Reopening recovers the file to its last
//! durable commit, which is every write ever acknowledged (the writer answers only after a
//! commit is durable), and nothing of a commit that failed.
//!
//! Unless turned off (`REGISTRY_DB_QUICK_REPAIR`), every write transaction commits with redb's
//! quick repair (`begin_write`): each commit also records the allocator state, with a two-phase
//! commit, so an open after a crash or a kill loads that state instead of walking every page of
//! the file to rebuild it. Measured at 650 MB (200k versions): a reopen after `kill -9` took
//! 5–9 ms with it and ~4 s without; each commit costs one more fsync and ~160 B per MB of file,
//! which group commit hides under concurrent writes but a lone writer waits for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redb::{Database, WriteTransaction};

use super::dir::{DataDir, is_no_space};
use super::internal;
use crate::storage::StoreError;

/// Opens the database file (tests open it through a backend that can fail like a full disk).
pub(super) type Opener =
    Box<dyn Fn(&Path) -> Result<Database, redb::DatabaseError> + Send + Sync + 'static>;

/// Begins a write transaction whose commit, with `quick_repair`, records what an open after a
/// crash needs to skip the full repair (see the module's comment). Every write transaction
/// starts here.
pub(super) fn begin_write(
    database: &Database,
    quick_repair: bool,
) -> Result<WriteTransaction, redb::TransactionError> {
    let mut txn = database.begin_write()?;
    txn.set_quick_repair(quick_repair);
    Ok(txn)
}

/// Opens (or creates) the file at `path` with a page cache of `cache_bytes`, and logs how long
/// the open took when redb had to repair the file in full (a file a crash left without a
/// recorded allocator state: one written before quick repair, or one a crash cut mid-commit).
pub(super) fn open_file(path: &Path, cache_bytes: usize) -> Result<Database, redb::DatabaseError> {
    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = repaired.clone();
    let started = std::time::Instant::now();
    let database = Database::builder()
        .set_cache_size(cache_bytes)
        .set_repair_callback(move |_| flag.store(true, Ordering::Relaxed))
        .create(path)?;
    if repaired.load(Ordering::Relaxed) {
        tracing::warn!(
            path = %path.display(),
            millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "the database was not shut down cleanly: repaired it in full"
        );
    }
    Ok(database)
}

/// The database file and its current handle.
pub(super) struct Db {
    path: PathBuf,
    open: Opener,
    /// `None` only while a reopen has failed; the next operation tries again.
    handle: RwLock<Option<Database>>,
    /// Bumped by every reopen, so that of several operations that met the same failed handle,
    /// only the first reopens it.
    epoch: AtomicU64,
    /// Changes whenever package records may have changed (see `RecordCache`): after a commit
    /// that changed a package, and after a reopen.
    generation: AtomicU64,
    /// The data directory the file lives in.
    pub(super) dir: Arc<DataDir>,
    /// Whether commits record the allocator state (`begin_write`).
    pub(super) quick_repair: bool,
}

/// A failure inside a database operation, kept apart from the store's own errors until it is
/// reported, so that a failed handle can be told from a refused write.
#[derive(Debug)]
pub(super) enum Failure {
    /// From redb.
    Db(redb::Error),
    /// Anything else (a refused condition, undecodable JSON).
    Store(StoreError),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::DatabaseError
);

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    /// Whether redb has given up on the handle: it must be reopened before it works again.
    pub(super) fn handle_failed(&self) -> bool {
        matches!(
            self,
            Failure::Db(redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed)
        )
    }

    /// Whether the handle had failed before this operation began: nothing of it was written.
    pub(super) fn failed_before(&self) -> bool {
        matches!(
            self,
            Failure::Db(redb::Error::PreviousIo | redb::Error::DatabaseClosed)
        )
    }
}

impl Db {
    /// Opens the file at `path` with `open`.
    pub(super) fn open(
        path: &Path,
        dir: Arc<DataDir>,
        open: Opener,
        quick_repair: bool,
    ) -> Result<Self, StoreError> {
        let database = open(path).map_err(|e| dir_error(&dir, e.into()))?;
        Ok(Db {
            path: path.to_path_buf(),
            open,
            handle: RwLock::new(Some(database)),
            epoch: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            dir,
            quick_repair,
        })
    }

    /// How many times the file has been reopened.
    #[cfg(test)]
    pub(super) fn reopens(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The current package-record generation.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks package records as changed.
    pub(super) fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` on the current handle and says which handle that was. Operations share the
    /// handle; a reopen waits until none is using it (a redb handle cannot be closed under them).
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, Failure>,
    ) -> (u64, Result<T, Failure>) {
        let handle = self
            .handle
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let epoch = self.epoch.load(Ordering::Acquire);
        match handle.as_ref() {
            Some(database) => (epoch, f(database)),
            None => (epoch, Err(Failure::Db(redb::Error::DatabaseClosed))),
        }
    }

    /// Runs a read. If it meets a failed handle (another operation's I/O error, a full disk),
    /// the handle is reopened and the read runs once more, so reads keep working.
    pub(super) fn read<T>(
        &self,
        f: impl Fn(&Database) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        match self.with(&f) {
            (epoch, Err(failure)) if failure.handle_failed() => {
                self.reopen(epoch)?;
                self.with(&f).1.map_err(|f| self.report(f))
            }
            (_, result) => result.map_err(|f| self.report(f)),
        }
    }

    /// Closes the handle redb gave up on and opens the file again, unless that already happened
    /// since the handle of `epoch` was in use.
    pub(super) fn reopen(&self, epoch: u64) -> Result<(), StoreError> {
        let mut handle = self
            .handle
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) != epoch && handle.is_some() {
            return Ok(());
        }
        if let Some(failed) = handle.take() {
            // Closing a failed handle reports its failure again; what matters is that it
            // releases the file, which it does (no write transaction outlives `with`).
            let _ = failed.close();
        }
        let started = std::time::Instant::now();
        match (self.open)(&self.path) {
            Ok(database) => {
                *handle = Some(database);
                self.epoch.fetch_add(1, Ordering::AcqRel);
                // A commit reported failed may yet be in the file (its data reached the disk,
                // its answer did not): records cached before it would be stale.
                self.bump_generation();
                self.dir.set_failed(None);
                tracing::warn!(
                    path = %self.path.display(),
                    millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "database reopened after an I/O error"
                );
                Ok(())
            }
            Err(e) => {
                let error = dir_error(&self.dir, e.into());
                tracing::error!(path = %self.path.display(), %error, "database could not be reopened");
                self.dir.set_failed(Some(format!(
                    "the database {} could not be reopened: {error}",
                    self.path.display()
                )));
                Err(error)
            }
        }
    }

    /// A failure as the store reports it: no space as `InsufficientStorage` (the directory's
    /// state turns full), the rest as they are.
    pub(super) fn report(&self, failure: Failure) -> StoreError {
        match failure {
            Failure::Store(e) => e,
            Failure::Db(e) => dir_error(&self.dir, e),
        }
    }
}

fn dir_error(dir: &DataDir, e: redb::Error) -> StoreError {
    match e {
        redb::Error::Io(io) if is_no_space(&io) => dir.no_space(&io),
        e => internal(e),
    }
}
