//! The data directory: where the files live, whether its disk has room, and the one way a file
//! is written there (temporary file, fsync, rename), so that the tarballs, the space probe and the
//! database all see a full disk the same way and report it by the same name.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};

use super::internal;
use crate::storage::{StorageHealth, StorageState, StoreError};

/// Bytes the probe writes to see whether space was freed: more than a commit of a batch of
/// writes needs, so a passing probe means the next commit is worth trying.
const PROBE_BYTES: usize = 1 << 20;

/// The probe's file, in the data directory beside the database.
const PROBE_FILE: &str = ".space-probe";

/// `PROBE_BYTES` of xorshift64 output: not zeros, nor any repeating pattern, which a
/// compressing filesystem would store in next to no space.
fn probe_bytes() -> Vec<u8> {
    let mut bytes = vec![0u8; PROBE_BYTES];
    let mut x = rand::random::<u64>() | 1;
    for chunk in bytes.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    bytes
}

/// Whether a write of so many bytes to that file finds no space (the tests' disk model).
#[cfg(test)]
pub(super) type NoRoomFor = Box<dyn Fn(&Path, usize) -> bool + Send + Sync>;

/// The data directory of the embedded backend.
pub(super) struct DataDir {
    root: PathBuf,
    tmp: PathBuf,
    /// The name prefix of this process's temporary files: `remove_leftovers` leaves them alone,
    /// so a sweep in the running server never takes a write in flight for a leftover.
    pub(super) tmp_prefix: String,
    health: Mutex<Health>,
    /// Tarballs stored whose version is not committed yet (see `Uploads`).
    uploads: Mutex<Uploads>,
    /// Tests put a disk model here.
    #[cfg(test)]
    pub(super) no_room_for: std::sync::OnceLock<NoRoomFor>,
}

/// What went wrong and since when; both clear when the store recovers.
#[derive(Default)]
struct Health {
    /// A write found no space left.
    full: Option<(DateTime<Utc>, String)>,
    /// The database could not be reopened after an error.
    failed: Option<(DateTime<Utc>, String)>,
}

/// How long an upload protects its tarball from the sweep if its publish never says how it
/// ended (its request was cut off between the two writes): far longer than a publish takes
/// between storing its tarball and committing its version, retries and GitHub's answers
/// included.
pub(super) const UPLOAD_PROTECTED_FOR: Duration = Duration::from_secs(3600);

/// Uploads remembered at most. A publish forgets its upload when its version is committed or
/// it deletes the tarball; only publishes cut off in between leave theirs, until
/// `UPLOAD_PROTECTED_FOR` has passed. Past this many, the oldest is forgotten first.
const UPLOADS_KEPT: usize = 16_384;

/// Tarballs this process has stored (or is storing) for publishes that have not committed
/// their version yet, by key: how many such uploads, and when the last began. The sweep never
/// deletes one of them, whatever its age: with the server running, this (and not an age
/// cutoff) is what keeps a publish in flight from losing its tarball to the sweep.
#[derive(Default)]
pub(super) struct Uploads {
    by_key: HashMap<String, (u32, Instant)>,
}

impl Uploads {
    /// Whether the tarball under `key` belongs to a publish in flight.
    pub(super) fn protects(&self, key: &str) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|(_, began)| began.elapsed() < UPLOAD_PROTECTED_FOR)
    }

    fn begin(&mut self, key: &str) {
        if self.by_key.len() >= UPLOADS_KEPT && !self.by_key.contains_key(key) {
            self.by_key
                .retain(|_, (_, began)| began.elapsed() < UPLOAD_PROTECTED_FOR);
            if self.by_key.len() >= UPLOADS_KEPT
                && let Some(oldest) = self
                    .by_key
                    .iter()
                    .min_by_key(|(_, (_, began))| *began)
                    .map(|(k, _)| k.clone())
            {
                self.by_key.remove(&oldest);
            }
        }
        let entry = self
            .by_key
            .entry(key.to_string())
            .or_insert((0, Instant::now()));
        entry.0 += 1;
        entry.1 = Instant::now();
    }

    fn end(&mut self, key: &str) {
        if let Some((count, _)) = self.by_key.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.by_key.remove(key);
            }
        }
    }

    /// How many uploads are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// Whether an I/O error means the disk (or the owner's quota) has no space left.
pub(super) fn is_no_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

impl DataDir {
    /// The directory `root`, its temporary files in `root/tmp`. Nothing is created yet.
    pub(super) fn new(root: &Path) -> Self {
        DataDir {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
            tmp_prefix: format!(".tmp-{:016x}-", rand::random::<u64>()),
            health: Mutex::default(),
            uploads: Mutex::default(),
            #[cfg(test)]
            no_room_for: std::sync::OnceLock::new(),
        }
    }

    /// Where temporary files are written.
    pub(super) fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Where the render `name` keeps under `key` lives (`renders`): named by a hash of both, as
    /// package names and base URLs hold characters no file name may.
    pub(super) fn render_path(&self, name: &crate::domain::PackageName, key: &str) -> PathBuf {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for part in [name.as_str(), key] {
            hash.update(part.len().to_le_bytes());
            hash.update(part);
        }
        self.root
            .join("renders")
            .join(hex::encode(&hash.finalize()[..16]))
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The uploads of publishes in flight. The sweep holds this while it decides on and deletes
    /// a tarball, so that an upload cannot begin between its check and its deletion.
    pub(super) fn uploads(&self) -> MutexGuard<'_, Uploads> {
        self.uploads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A publish is about to store the tarball under `key`.
    pub(super) fn upload_begins(&self, key: &str) {
        self.uploads().begin(key);
    }

    /// The publish that stored `key` has committed its version (which now protects the
    /// tarball), failed to store it, or deleted it.
    pub(super) fn upload_ends(&self, key: &str) {
        self.uploads().end(key);
    }

    /// The error a write that found no space answers with; the state turns (or stays) full.
    pub(super) fn no_space(&self, detail: &dyn std::fmt::Display) -> StoreError {
        let mut health = self.health();
        if health.full.is_none() {
            tracing::error!(data_dir = %self.root.display(), error = %detail, "disk full: writes fail until space is freed");
            health.full = Some((Utc::now(), detail.to_string()));
        }
        StoreError::InsufficientStorage(self.root.display().to_string())
    }

    /// An I/O error of a write as the store reports it.
    pub(super) fn io_error(&self, e: std::io::Error) -> StoreError {
        if is_no_space(&e) {
            self.no_space(&e)
        } else {
            internal(e)
        }
    }

    /// Whether the last write found the disk full (and nothing has since shown otherwise).
    pub(super) fn is_full(&self) -> bool {
        self.health().full.is_some()
    }

    /// A write succeeded: there is space again.
    pub(super) fn written(&self) {
        let mut health = self.health();
        if health.full.take().is_some() {
            tracing::info!(data_dir = %self.root.display(), "disk space available again: writes work");
        }
    }

    /// The database could not be reopened (`Some`), or has been (`None`).
    pub(super) fn set_failed(&self, detail: Option<String>) {
        let mut health = self.health();
        match detail {
            Some(d) => {
                health.failed.get_or_insert_with(|| (Utc::now(), d));
            }
            None => health.failed = None,
        }
    }

    /// The state for the readiness check. While full, it probes: freed space shows at once,
    /// without waiting for a write to try.
    pub(super) fn state(&self) -> StorageHealth {
        if self.is_full() {
            let _ = self.probe();
        }
        let health = self.health();
        let (state, what) = match (&health.failed, &health.full) {
            (Some(failed), _) => (StorageState::Failed, Some(failed)),
            (None, Some(full)) => (StorageState::Full, Some(full)),
            (None, None) => (StorageState::Ok, None),
        };
        StorageHealth {
            state,
            since: what.map(|(since, _)| *since),
            detail: what.map(|(_, detail)| detail.clone()),
            location: Some(self.root.display().to_string()),
        }
    }

    /// Writes a throwaway file beside the database to see whether its disk has room again;
    /// clears the full state if it has. Cheap while the disk is full: the first write fails.
    pub(super) fn probe(&self) -> Result<(), StoreError> {
        // One fixed name: a probe cut short by a kill leaves one file, which the next probe
        // (or the next start) removes.
        let path = self.root.join(PROBE_FILE);
        let written = std::fs::File::create(&path)
            .map_err(|e| self.io_error(e))
            .and_then(|mut file| {
                self.write_all(&mut file, &path, &probe_bytes())?;
                file.sync_all().map_err(|e| self.io_error(e))
            });
        let _ = std::fs::remove_file(&path);
        written?;
        self.written();
        Ok(())
    }

    /// Writes `bytes` durably to `path`: to a temporary file, fsynced, renamed into place, the
    /// directory entry fsynced. On failure the temporary file is removed.
    pub(super) fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tmp = self.temp_file()?;
        // On any error below, dropping `tmp` deletes the partial file.
        self.write_all(tmp.as_file_mut(), path, bytes)?;
        self.persist(tmp, path)
    }

    /// A new file in `tmp`, deleted when dropped unless persisted (a crash leaves it to the
    /// clean-up at the next start).
    pub(super) fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        tempfile::Builder::new()
            .prefix(&self.tmp_prefix)
            .tempfile_in(&self.tmp)
            .map_err(|e| self.io_error(e))
    }

    /// Appends `bytes` to `tmp`, a file on its way to `to` (written in pieces).
    pub(super) fn append(
        &self,
        tmp: &mut tempfile::NamedTempFile,
        to: &Path,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.write_all(tmp.as_file_mut(), to, bytes)
    }

    /// Makes `tmp` the file at `path`, durably: its bytes, then its name.
    pub(super) fn persist(
        &self,
        tmp: tempfile::NamedTempFile,
        path: &Path,
    ) -> Result<(), StoreError> {
        let parent = path
            .parent()
            .ok_or_else(|| internal("a data file's path has no parent"))?;
        std::fs::create_dir_all(parent).map_err(|e| self.io_error(e))?;
        tmp.as_file().sync_all().map_err(|e| self.io_error(e))?;
        tmp.persist(path).map_err(|e| self.io_error(e.error))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io_error(e))?;
        // Not `written()`: a file that fits says nothing certain about the database's disk
        // (`tarballs` may be another filesystem), and clearing the full state would send every
        // write to a failing commit and a reopen. The probe beside the database decides.
        Ok(())
    }

    /// Writes `bytes` into `file`, on its way to `to`.
    // `to` is for the tests' disk model only.
    #[cfg_attr(not(test), allow(unused_variables))]
    fn write_all(
        &self,
        file: &mut std::fs::File,
        to: &Path,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        #[cfg(test)]
        if self
            .no_room_for
            .get()
            .is_some_and(|no_room| no_room(to, bytes.len()))
        {
            // As a filling disk does: part of the bytes land, then the write fails.
            let _ = file.write_all(&bytes[..bytes.len() / 2]);
            return Err(self.io_error(std::io::Error::from(std::io::ErrorKind::StorageFull)));
        }
        file.write_all(bytes).map_err(|e| self.io_error(e))
    }

    /// Deletes the temporary files last modified more than `older_than` ago (all of them with
    /// `Duration::ZERO`, and then a probe file too) and says how many: what writes interrupted
    /// by a crash or a kill left. This process's own files are writes in flight and stay. Only
    /// for a caller that knows no write of another process is in flight (see `open`).
    pub(super) fn remove_leftovers(&self, older_than: Duration) -> Result<usize, StoreError> {
        if older_than.is_zero() {
            let _ = std::fs::remove_file(self.root.join(PROBE_FILE));
        }
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let entries = match std::fs::read_dir(&self.tmp) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(internal(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(internal)?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&self.tmp_prefix)
            {
                continue;
            }
            let meta = entry.metadata().map_err(internal)?;
            if meta.is_file() && meta.modified().map_err(internal)? <= cutoff {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    // Its own writer finished (renamed or removed it) meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(internal(e)),
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, tmp = %self.tmp.display(), "removed files of interrupted writes");
        }
        Ok(removed)
    }
}
