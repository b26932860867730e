//! Group commit: every write to the embedded database goes through one writer thread, which
//! applies all the writes queued while the previous commit was in flight in one redb transaction
//! and one durable commit (one fsync), then answers each writer.
//!
//! redb runs one write transaction at a time and each durable commit costs an fsync, so without
//! this N concurrent publishes queue behind N fsyncs. Batching keeps every write's own semantics:
//! each write checks its conditions against the state its predecessors in the batch left (the
//! transaction sees its own writes, as a serial order would), and a refused write changes nothing
//! because every check runs before its first change. Nobody is answered before the commit is
//! durable, and a failed commit fails every write in it, so no write is reported and then lost.
//!
//! A commit that fails with an I/O error (a full disk) leaves redb's handle unusable: the writer
//! answers the batch, then reopens the file (see `db`). While the disk is known to be full, a
//! batch is refused at once unless a probe file shows space again, so a full disk costs each
//! write a failed file write instead of a failed commit and a reopen.
//!
//! Between batches the writer also deletes expired key-value entries, a bounded number at a time.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::db::{Db, Failure, begin_write};
use super::touch_log::{self, TOUCH_LOG};
use super::{
    KV, PACKAGES, READMES, SEARCH, SMALL_RENDERS, TARBALL_TIMES, TARBALLS, VERSIONS, decode,
    encode, internal,
};
use crate::domain::{PackageRecord, VersionRecord, VersionState};
use crate::storage::{CreateMode, PackageWrite, StoreError, VersionChange};

/// At most this many writes share a commit, so one commit's latency stays bounded.
const MAX_BATCH: usize = 128;

/// At most this many writes wait for the writer; more wait for room before they queue. Each
/// waiting request holds its write anyway, but a request cut off after queueing leaves its
/// write behind: this keeps a stalled disk and clients that give up from piling them up.
const MAX_QUEUED: usize = 1_024;

/// One write to the database.
pub(super) enum Op {
    /// A conditional package write (see `MetadataStore::write`).
    Package(Box<PackageWrite>),
    /// Store (or replace) a key-value entry, already encoded.
    KvPut {
        namespace: String,
        id: String,
        entry: Vec<u8>,
    },
    /// Store a key-value entry only if no live one has its key (`EntryExists` otherwise).
    KvPutNew {
        namespace: String,
        id: String,
        entry: Vec<u8>,
    },
    /// Remove a key-value entry.
    KvDelete { namespace: String, id: String },
    /// Keep a small rendered packument (`RenderStore`), or the mark of a big one, replacing
    /// what was kept under its key; the touch log up to `log_through` is let go.
    KeepRender {
        name: String,
        key: String,
        render: Vec<u8>,
        log_through: Option<u64>,
    },
    /// Store (or replace) a small tarball (`SMALL_TARBALL_BYTES`) and the time it was stored.
    PutTarball {
        key: String,
        bytes: bytes::Bytes,
        stored_ms: u64,
    },
    /// Remove a small tarball, if stored.
    DeleteTarball { key: String },
    /// The sweep's deletion of small tarballs: each of `keys` is removed unless an upload in
    /// flight protects it, its version refers to it, or it was stored after `cutoff_ms`. Decided
    /// here, in the writer's transaction and under the uploads' lock, so that no upload begins
    /// or version commits unseen between the check and the deletion. The keys removed are put
    /// in `removed` (valid once the write is answered Ok).
    SweepTarballs {
        keys: Vec<String>,
        cutoff_ms: u64,
        removed: Arc<std::sync::Mutex<Vec<String>>>,
    },
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<(), StoreError>>,
    /// Its place in the queue, given back when the job is answered (dropped).
    _room: tokio::sync::OwnedSemaphorePermit,
}

/// Why a write was not applied.
enum ApplyError {
    /// Refused before changing anything: the rest of the batch can still commit.
    Refused(StoreError),
    /// Failed part-way: the transaction holds half a write and must be abandoned.
    Broken(Failure),
}

/// Key-value rows the purge looks at per transaction, so that it never holds up writes long.
pub(super) const PURGE_SCAN: usize = 1_000;

/// The handle writers send to; the thread stops when the last handle is dropped.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    /// Places in the queue (`MAX_QUEUED`).
    room: Arc<tokio::sync::Semaphore>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Read by the tests of group commit only.
    #[cfg(test)]
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer thread for `db`; it deletes expired key-value entries at once and then
    /// every `purge_every`.
    pub(super) fn start(db: Arc<Db>, purge_every: Duration) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || run(&db, &jobs, &thread_counters, purge_every))
            .map_err(internal)?;
        Ok(Self {
            queue: Some(queue),
            room: Arc::new(tokio::sync::Semaphore::new(MAX_QUEUED)),
            thread: Some(thread),
            #[cfg(test)]
            counters,
        })
    }

    /// Commits made so far.
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// Queues `op` for the next commit without waiting for room or for the commit: the answer
    /// comes through the receiver. For caches, whose writes may be dropped (`None`: the queue
    /// is full, or the writer has stopped) and must not hold up the request that makes them.
    /// Queued in order: a write queued after this one commits with it or after it.
    pub(super) fn submit(&self, op: Op) -> Option<oneshot::Receiver<Result<(), StoreError>>> {
        let room = self.room.clone().try_acquire_owned().ok()?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .as_ref()?
            .send(Job {
                op,
                reply,
                _room: room,
            })
            .ok()?;
        Some(answer)
    }

    /// Applies `op` in the next commit and answers once that commit is durable.
    pub(super) async fn write(&self, op: Op) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let room = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| internal("the storage writer has stopped"))?;
        self.queue
            .as_ref()
            .ok_or_else(|| internal("the storage writer has stopped"))?
            .send(Job {
                op,
                reply,
                _room: room,
            })
            .map_err(|_| internal("the storage writer has stopped"))?;
        answer
            .await
            .map_err(|_| internal("the storage writer stopped before answering"))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread; waiting for it releases the database file before
        // the store is reported dropped (so the same process can open it again at once).
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the writer thread counts, read by the stores.
#[derive(Default)]
struct Counters {
    /// Commits of writes made so far (each one fsync).
    commits: AtomicU64,
}

fn run(db: &Db, jobs: &mpsc::Receiver<Job>, counters: &Counters, purge_every: Duration) {
    let mut purge = Purge {
        next: Instant::now(),
        after: None,
    };
    loop {
        if Instant::now() >= purge.next {
            purge.step(db, purge_every);
        }
        // Waiting no longer than until the next purge; writes queued meanwhile go first.
        let first = match jobs.recv_timeout(purge.next.saturating_duration_since(Instant::now())) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(db, batch, counters, true);
    }
}

/// Answers every write of `batch` with `error`.
fn fail_all(batch: Vec<Job>, error: &StoreError) {
    for job in batch {
        let _ = job.reply.send(Err(error.clone()));
    }
}

/// Commits `batch` together; if the transaction breaks, each write is retried on its own so
/// that one failure does not fail its neighbours. `may_retry`: a batch that met a handle which
/// had already failed (nothing of it written) runs once more on the reopened one.
fn commit(db: &Db, batch: Vec<Job>, counters: &Counters, may_retry: bool) {
    // Known full: try the disk with a probe file before the database, whose failed commit
    // would cost a reopen.
    if db.dir.is_full()
        && let Err(e) = db.dir.probe()
    {
        return fail_all(batch, &e);
    }
    let (epoch, outcome) =
        db.with(|database| apply_all(database, &db.dir, db.quick_repair, &batch));
    match outcome {
        Ok(results) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            db.dir.written();
            let changed_a_package = batch
                .iter()
                .zip(&results)
                .any(|(job, r)| matches!(job.op, Op::Package(_)) && r.is_ok());
            if changed_a_package {
                db.bump_generation();
            }
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(failure) if failure.handle_failed() => {
            let retry = may_retry && failure.failed_before();
            let error = db.report(failure);
            let reopened = db.reopen(epoch);
            if retry && reopened.is_ok() {
                commit(db, batch, counters, false);
            } else {
                // Whatever redb wrote of this commit is not in the file it reopens: none of
                // these writes happened.
                fail_all(batch, &error);
            }
        }
        Err(failure) if batch.len() == 1 => {
            let error = db.report(failure);
            fail_all(batch, &error);
        }
        Err(_) => {
            for job in batch {
                commit(db, vec![job], counters, may_retry);
            }
        }
    }
}

/// Applies every write of the batch in one transaction and commits it durably; the outer error
/// means nothing of the batch was committed.
fn apply_all(
    db: &Database,
    dir: &super::dir::DataDir,
    quick_repair: bool,
    batch: &[Job],
) -> Result<Vec<Result<(), StoreError>>, Failure> {
    let txn = begin_write(db, quick_repair)?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        match apply(&txn, dir, &job.op) {
            Ok(()) => results.push(Ok(())),
            Err(ApplyError::Refused(e)) => results.push(Err(e)),
            Err(ApplyError::Broken(e)) => return Err(e), // dropping `txn` aborts it
        }
    }
    txn.commit()?;
    Ok(results)
}

/// Where the purge of expired key-value entries stands.
struct Purge {
    /// When the next step is due.
    next: Instant,
    /// The key the last step stopped after, if the table has not been scanned to its end.
    after: Option<(String, String)>,
}

impl Purge {
    /// Deletes the expired entries among the next `PURGE_SCAN` rows in one commit. The next
    /// step is due at once if rows remain (writes still go first), else after `every`.
    fn step(&mut self, db: &Db, every: Duration) {
        // Deleting needs space too, and a failed commit a reopen: wait for writes to find room.
        if db.dir.is_full() {
            self.next = Instant::now() + every;
            return;
        }
        let after = self.after.take();
        let (epoch, outcome) =
            db.with(|database| purge_expired(database, db.quick_repair, after.as_ref()));
        match outcome {
            Ok((removed, stopped_after)) => {
                if removed > 0 {
                    tracing::debug!(removed, "deleted expired key-value entries");
                }
                self.next = match stopped_after {
                    Some(_) => Instant::now(),
                    None => Instant::now() + every,
                };
                self.after = stopped_after;
            }
            Err(failure) => {
                let handle_failed = failure.handle_failed();
                let error = db.report(failure);
                tracing::warn!(%error, "could not delete expired key-value entries");
                if handle_failed {
                    let _ = db.reopen(epoch);
                }
                self.next = Instant::now() + every;
            }
        }
    }
}

/// Deletes expired entries among up to `PURGE_SCAN` rows after `after`; says how many, and the
/// last key looked at if rows remain beyond it.
fn purge_expired(
    db: &Database,
    quick_repair: bool,
    after: Option<&(String, String)>,
) -> Result<(usize, Option<(String, String)>), Failure> {
    #[derive(serde::Deserialize)]
    struct Expiry {
        expires: Option<chrono::DateTime<chrono::Utc>>,
    }
    let now = chrono::Utc::now();
    let txn = begin_write(db, quick_repair)?;
    let (expired, stopped_after) = {
        let mut table = txn.open_table(KV)?;
        let start = match after {
            Some((ns, id)) => Bound::Excluded((ns.as_str(), id.as_str())),
            None => Bound::Unbounded,
        };
        let mut expired = Vec::new();
        let mut last = None;
        let mut scanned = 0;
        for row in table.range::<(&str, &str)>((start, Bound::Unbounded))? {
            if scanned == PURGE_SCAN {
                break;
            }
            scanned += 1;
            let (key, value) = row?;
            let (ns, id) = key.value();
            let key = (ns.to_string(), id.to_string());
            // An entry that does not decode is left alone: reads report it.
            if let Ok(Expiry { expires: Some(at) }) = serde_json::from_slice(value.value())
                && at <= now
            {
                expired.push(key.clone());
            }
            last = Some(key);
        }
        for (ns, id) in &expired {
            table.remove((ns.as_str(), id.as_str()))?;
        }
        (
            expired.len(),
            if scanned == PURGE_SCAN { last } else { None },
        )
    };
    if expired == 0 {
        txn.abort()?;
    } else {
        txn.commit()?;
    }
    Ok((expired, stopped_after))
}

fn apply(txn: &WriteTransaction, dir: &super::dir::DataDir, op: &Op) -> Result<(), ApplyError> {
    match op {
        Op::Package(write) => apply_package(txn, write),
        Op::KvPut {
            namespace,
            id,
            entry,
        } => {
            let mut table = txn.open_table(KV).map_err(broken)?;
            table
                .insert((namespace.as_str(), id.as_str()), entry.as_slice())
                .map_err(broken)?;
            Ok(())
        }
        Op::KvPutNew {
            namespace,
            id,
            entry,
        } => {
            let mut table = txn.open_table(KV).map_err(broken)?;
            let key = (namespace.as_str(), id.as_str());
            // Checked against the state the batch's earlier writes left, before any change.
            let live = match table
                .get(key)
                .map_err(|e| ApplyError::Refused(internal(e)))?
            {
                Some(existing) => decode::<super::KvEntry>(existing.value())
                    .map_err(ApplyError::Refused)?
                    .live(),
                None => false,
            };
            if live {
                return Err(ApplyError::Refused(StoreError::EntryExists));
            }
            table.insert(key, entry.as_slice()).map_err(broken)?;
            Ok(())
        }
        Op::KvDelete { namespace, id } => {
            let mut table = txn.open_table(KV).map_err(broken)?;
            table
                .remove((namespace.as_str(), id.as_str()))
                .map_err(broken)?;
            Ok(())
        }
        Op::KeepRender {
            name,
            key,
            render,
            log_through,
        } => {
            let mut table = txn.open_table(SMALL_RENDERS).map_err(broken)?;
            table
                .insert((name.as_str(), key.as_str()), render.as_slice())
                .map_err(broken)?;
            if let Some(through) = log_through {
                let mut log = txn.open_table(TOUCH_LOG).map_err(broken)?;
                touch_log::trim(&mut log, name, *through).map_err(broken)?;
            }
            Ok(())
        }
        Op::PutTarball {
            key,
            bytes,
            stored_ms,
        } => put_tarball_row(txn, key, bytes, *stored_ms),
        Op::DeleteTarball { key } => {
            txn.open_table(TARBALLS)
                .map_err(broken)?
                .remove(key.as_str())
                .map_err(broken)?;
            txn.open_table(TARBALL_TIMES)
                .map_err(broken)?
                .remove(key.as_str())
                .map_err(broken)?;
            Ok(())
        }
        Op::SweepTarballs {
            keys,
            cutoff_ms,
            removed,
        } => sweep_tarballs(txn, dir, keys, *cutoff_ms, removed),
    }
}

/// Applies `Op::SweepTarballs`: every check first, then the removals.
fn sweep_tarballs(
    txn: &WriteTransaction,
    dir: &super::dir::DataDir,
    keys: &[String],
    cutoff_ms: u64,
    removed: &std::sync::Mutex<Vec<String>>,
) -> Result<(), ApplyError> {
    let refused = |e: StoreError| ApplyError::Refused(e);
    let read = |e: redb::StorageError| ApplyError::Refused(internal(e));
    let mut doomed = Vec::new();
    {
        let versions = txn.open_table(VERSIONS).map_err(|e| refused(internal(e)))?;
        let times = txn
            .open_table(TARBALL_TIMES)
            .map_err(|e| refused(internal(e)))?;
        // Held while deciding: an upload that begins after this queues its tarball behind this
        // write, so it is stored again after the removal (see `sweep`).
        let uploads = dir.uploads();
        for key in keys {
            let Some((_, name, version)) = crate::domain::TarballKey::parse(key) else {
                continue; // not ours: leave it alone
            };
            if uploads.protects(key) {
                continue;
            }
            let old_enough = times
                .get(key.as_str())
                .map_err(read)?
                .is_some_and(|stored| stored.value() <= cutoff_ms);
            if !old_enough {
                continue;
            }
            let record = versions
                .get((name.as_str(), version.to_string().as_str()))
                .map_err(read)?;
            if let Some(record) = record
                && super::sweep::referenced_key(record.value())
                    .map_err(refused)?
                    .as_deref()
                    == Some(key.as_str())
            {
                continue;
            }
            doomed.push(key.clone());
        }
    }
    let mut tarballs = txn.open_table(TARBALLS).map_err(broken)?;
    let mut times = txn.open_table(TARBALL_TIMES).map_err(broken)?;
    for key in &doomed {
        tarballs.remove(key.as_str()).map_err(broken)?;
        times.remove(key.as_str()).map_err(broken)?;
    }
    // Set, not appended: a batch that broke is applied again, one write at a time.
    *removed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = doomed;
    Ok(())
}

/// A storage failure after a write's first change.
fn broken(e: impl Into<Failure>) -> ApplyError {
    ApplyError::Broken(e.into())
}

/// Stores a small tarball's row and the time it was stored (for the sweep's age cutoff).
fn put_tarball_row(
    txn: &WriteTransaction,
    key: &str,
    bytes: &[u8],
    stored_ms: u64,
) -> Result<(), ApplyError> {
    txn.open_table(TARBALLS)
        .map_err(broken)?
        .insert(key, bytes)
        .map_err(broken)?;
    txn.open_table(TARBALL_TIMES)
        .map_err(broken)?
        .insert(key, stored_ms)
        .map_err(broken)?;
    Ok(())
}

/// Checks the write's conditions (as DynamoDB's condition expressions would), then applies it.
fn apply_package(txn: &WriteTransaction, write: &PackageWrite) -> Result<(), ApplyError> {
    let refused = |e: StoreError| ApplyError::Refused(e);
    let read = |e: redb::StorageError| ApplyError::Refused(internal(e));
    let name = write.package.name.as_str();

    // Checks: nothing is changed until every one of them has passed.
    let mut packages = txn.open_table(PACKAGES).map_err(|e| refused(internal(e)))?;
    let current: Option<PackageRecord> = packages
        .get(name)
        .map_err(read)?
        .map(|v| decode(v.value()))
        .transpose()
        .map_err(refused)?;
    if current.as_ref().map(|p| p.revision) != write.expected_revision {
        return Err(refused(StoreError::RevisionConflict));
    }
    let mut versions = txn.open_table(VERSIONS).map_err(|e| refused(internal(e)))?;
    let stored = |versions: &redb::Table<(&str, &str), &[u8]>, key: &str| {
        versions
            .get((name, key))
            .map_err(read)?
            .map(|v| decode::<VersionRecord>(v.value()))
            .transpose()
            .map_err(refused)
    };
    // Every version record to (re)write, by version string, in its final state.
    let mut updates: BTreeMap<String, VersionRecord> = BTreeMap::new();
    if let Some((record, mode)) = &write.create {
        let key = record.version.to_string();
        match (stored(&versions, &key)?.map(|e| e.state), mode) {
            (None, _) | (Some(VersionState::Live(_)), CreateMode::AllowOverwrite) => {}
            (Some(VersionState::Unpublished { .. }), _) => {
                return Err(refused(StoreError::VersionRetired));
            }
            (Some(VersionState::Live(_)), CreateMode::CreateOnly) => {
                return Err(refused(StoreError::VersionExists));
            }
        }
        updates.insert(key, record.clone());
    }
    for change in &write.changes {
        let version = change.version();
        let key = version.to_string();
        let mut record = match updates.remove(&key) {
            Some(pending) => pending,
            None => stored(&versions, &key)?
                .ok_or_else(|| refused(StoreError::NoSuchVersion(version.clone())))?,
        };
        match (change, &mut record.state) {
            (VersionChange::Deprecate(_, message), VersionState::Live(live)) => {
                live.deprecated.clone_from(message);
            }
            (VersionChange::Unpublish(_, at), VersionState::Live(_)) => {
                record.state = VersionState::Unpublished { at: *at };
            }
            (VersionChange::Sign(_, signatures), VersionState::Live(live)) => {
                live.dist.signatures.clone_from(signatures);
            }
            (_, VersionState::Unpublished { .. }) => {
                return Err(refused(StoreError::NoSuchVersion(version.clone())));
            }
        }
        updates.insert(key, record);
    }
    let package = encode(&write.package).map_err(refused)?;
    let records = updates
        .iter()
        .map(|(key, record)| Ok((key.as_str(), encode(record)?)))
        .collect::<Result<Vec<_>, StoreError>>()
        .map_err(refused)?;

    // Changes: a failure from here on leaves the transaction half-written.
    for (key, record) in &records {
        versions
            .insert((name, *key), record.as_slice())
            .map_err(broken)?;
    }
    let mut readmes = txn.open_table(READMES).map_err(broken)?;
    if let Some((record, _)) = &write.create {
        let key = record.version.to_string();
        match &write.readme {
            Some(readme) => readmes
                .insert((name, key.as_str()), readme.as_str())
                .map(drop),
            // An overwritten version keeps no README of the version it replaced.
            None => readmes.remove((name, key.as_str())).map(drop),
        }
        .map_err(broken)?;
    }
    for change in &write.changes {
        if let VersionChange::Unpublish(version, _) = change {
            readmes
                .remove((name, version.to_string().as_str()))
                .map_err(broken)?;
        }
    }
    match &write.search {
        crate::storage::SearchChange::Keep => {}
        crate::storage::SearchChange::Put(entry) => {
            let entry = encode(entry.as_ref()).map_err(broken)?;
            txn.open_table(SEARCH)
                .map_err(broken)?
                .insert(name, entry.as_slice())
                .map_err(broken)?;
        }
        crate::storage::SearchChange::Remove { .. } => {
            txn.open_table(SEARCH)
                .map_err(broken)?
                .remove(name)
                .map_err(broken)?;
        }
    }
    if let Some(tarball) = &write.tarball {
        put_tarball_row(txn, tarball.key.as_str(), &tarball.bytes, super::now_ms())?;
    }
    packages.insert(name, package.as_slice()).map_err(broken)?;
    let mut log = txn.open_table(TOUCH_LOG).map_err(broken)?;
    touch_log::record(&mut log, &write.package).map_err(broken)?;
    Ok(())
}
