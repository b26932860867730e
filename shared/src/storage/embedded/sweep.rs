//! The embedded backend's sweep: tarballs no live version refers to are deleted, files and the
//! small ones in the database alike, with the server running or stopped.
//!
//! It visits only what it must: the tarball directory is listed once, a package directory at a
//! time (names only; a file's age is read only if it is to be deleted); the small tarballs'
//! keys are read from `TARBALL_TIMES` (keys and times, never the bytes), a page at a time; and
//! each package's version records are read in one range read that decodes only each record's
//! state and tarball key, never its manifest. Memory stays that of one package (or one page of
//! keys).
//!
//! A publish stores its tarball before it commits the version that refers to it, so between the
//! two the tarball looks unreferenced. Two things keep the sweep from deleting it:
//! - in the process that stores it, the upload is remembered (`dir::Uploads`) until its version
//!   is committed, and the sweep decides on and deletes each tarball while holding that record,
//!   after reading its version again: an upload cannot begin, nor a version commit unseen,
//!   between the check and the deletion;
//! - files younger than the caller's age cutoff are kept, for anything else.
//!
//! A small tarball is removed by the writer (`Op::SweepTarballs`), which checks the upload, the
//! version and the age again in its own transaction, holding the uploads' record: an upload
//! that begins after that check queues its tarball behind the removal, so it is stored again.
//!
//! Another process cannot publish meanwhile: the database admits one process.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redb::{ReadableDatabase, ReadableTable};

use super::db::{Db, Failure};
use super::dir::DataDir;
use super::writer::{Op, Writer};
use super::{TARBALL_TIMES, VERSION_RANGE_END, VERSIONS, internal, now_ms, open_made};
use crate::domain::TarballKey;
use crate::storage::{StoreError, SweepReport};

/// What the sweep decodes of a version record: its state and, if live, its tarball key.
#[derive(serde::Deserialize)]
struct TarballRef {
    state: StateRef,
}

#[derive(serde::Deserialize)]
struct StateRef {
    state: StateTag,
    #[serde(default)]
    dist: Option<DistRef>,
}

#[derive(serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum StateTag {
    Live,
    Unpublished,
}

#[derive(serde::Deserialize)]
struct DistRef {
    tarball_key: String,
}

/// The tarball key a stored version record refers to, if it is live. A record that does not
/// read as one stops the sweep: deleting on a misread would delete referenced tarballs.
pub(super) fn referenced_key(bytes: &[u8]) -> Result<Option<String>, StoreError> {
    let r: TarballRef = serde_json::from_slice(bytes)
        .map_err(|e| internal(format!("a version record the sweep cannot read: {e}")))?;
    match (r.state.state, r.state.dist) {
        (StateTag::Live, Some(dist)) => Ok(Some(dist.tarball_key)),
        (StateTag::Live, None) => Err(internal(
            "a live version record without a tarball key: not sweeping",
        )),
        (StateTag::Unpublished, _) => Ok(None),
    }
}

/// Sweeps the tarball files under `root` against the versions in `db`; see the module's comment.
pub(super) fn sweep(
    db: &Db,
    dir: &DataDir,
    root: &Path,
    older_than: Duration,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport {
        incomplete: dir.remove_leftovers(older_than)?,
        ..SweepReport::default()
    };
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(path) = dirs.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            // Removed meanwhile (nothing deletes package directories today; be safe).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(internal(e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(internal)?;
            let kind = entry.file_type().map_err(internal)?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file()
                && let Some(key) = key_of(root, &entry.path())
            {
                keys.push(key);
            }
        }
        report.checked += keys.len();
        sweep_package(db, dir, root, &keys, cutoff, &mut report)?;
    }
    Ok(report)
}

/// The key of the tarball file at `path`, if it is one this registry made.
fn key_of(root: &Path, path: &Path) -> Option<(TarballKey, String, String)> {
    let relative = path.strip_prefix(root).ok()?.to_str()?;
    let (key, name, version) = TarballKey::parse(relative)?;
    Some((key, name.to_string(), version.to_string()))
}

/// Sweeps the tarballs of one directory: one package's, so one range read says which of them
/// its live versions refer to.
fn sweep_package(
    db: &Db,
    dir: &DataDir,
    root: &Path,
    keys: &[(TarballKey, String, String)],
    cutoff: SystemTime,
    report: &mut SweepReport,
) -> Result<(), StoreError> {
    let Some((_, name, _)) = keys.first() else {
        return Ok(());
    };
    let live = live_keys(db, name)?;
    for (key, name, version) in keys {
        if live.contains(key.as_str()) {
            continue;
        }
        // Decided and deleted while no upload can begin or be committed unseen (see the
        // module's comment).
        let uploads = dir.uploads();
        if uploads.protects(key.as_str()) || version_refers_to(db, name, version, key)? {
            continue;
        }
        let path: PathBuf = root.join(key.as_str());
        let old_enough = match std::fs::metadata(&path) {
            Ok(meta) => meta.modified().map_err(internal)? <= cutoff,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(internal(e)),
        };
        if !old_enough {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => report.removed.push(key.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(dir.io_error(e)),
        }
    }
    Ok(())
}

/// The tarball keys `name`'s live versions refer to.
fn live_keys(db: &Db, name: &str) -> Result<HashSet<String>, StoreError> {
    db.read(|database| {
        let txn = database.begin_read()?;
        let table = txn.open_table(VERSIONS)?;
        let mut keys = HashSet::new();
        for row in table.range((name, "")..(name, VERSION_RANGE_END))? {
            let (_, value) = row?;
            if let Some(key) = referenced_key(value.value()).map_err(Failure::Store)? {
                keys.insert(key);
            }
        }
        Ok(keys)
    })
}

/// Whether `name`'s `version` is live and refers to `key` now.
fn version_refers_to(
    db: &Db,
    name: &str,
    version: &str,
    key: &TarballKey,
) -> Result<bool, StoreError> {
    db.read(|database| {
        let txn = database.begin_read()?;
        let table = txn.open_table(VERSIONS)?;
        let Some(value) = table.get((name, version))? else {
            return Ok(false);
        };
        Ok(referenced_key(value.value())
            .map_err(Failure::Store)?
            .as_deref()
            == Some(key.as_str()))
    })
}

/// Small tarballs' keys read per read transaction: the sweep holds no snapshot long (redb keeps
/// every page an open reader may see), and its memory stays bounded.
pub(super) const SWEEP_PAGE: usize = 1_024;

/// Sweeps the small tarballs in the database (`TARBALLS`) against the versions in `db`, adding
/// to `report`; see the module's comment.
pub(super) async fn sweep_small(
    db: &Arc<Db>,
    writer: &Writer,
    older_than: Duration,
    report: &mut SweepReport,
) -> Result<(), StoreError> {
    let cutoff_ms =
        now_ms().saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX));
    let mut after: Option<String> = None;
    loop {
        let (db, from) = (db.clone(), after.take());
        let (keys, candidates) = tokio::task::spawn_blocking(move || {
            let keys = db.read(|database| page_of_keys(database, from.as_deref()))?;
            Ok::<_, StoreError>((keys.clone(), unreferenced(&db, &keys)?))
        })
        .await
        .map_err(internal)??;
        let Some(last) = keys.last() else {
            return Ok(());
        };
        report.checked += keys.len();
        after = Some(last.clone());
        if !candidates.is_empty() {
            let removed = Arc::new(std::sync::Mutex::new(Vec::new()));
            writer
                .write(Op::SweepTarballs {
                    keys: candidates,
                    cutoff_ms,
                    removed: removed.clone(),
                })
                .await?;
            let removed = std::mem::take(
                &mut *removed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            report.removed.extend(
                removed
                    .iter()
                    .filter_map(|key| TarballKey::parse(key).map(|(key, _, _)| key)),
            );
        }
        if keys.len() < SWEEP_PAGE {
            return Ok(());
        }
    }
}

/// Up to `SWEEP_PAGE` small tarballs' keys, in order, after `after`.
fn page_of_keys(database: &redb::Database, after: Option<&str>) -> Result<Vec<String>, Failure> {
    let txn = database.begin_read()?;
    let Some(times) = open_made(&txn, TARBALL_TIMES)? else {
        return Ok(Vec::new());
    };
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut keys = Vec::new();
    for row in times
        .range::<&str>((start, Bound::Unbounded))?
        .take(SWEEP_PAGE)
    {
        keys.push(row?.0.value().to_string());
    }
    Ok(keys)
}

/// Of `keys` (in order), those no live version refers to now: the writer decides again before
/// it removes any. A package's keys are adjacent (they all begin with its name and a `/`), so
/// its versions are read once per page.
fn unreferenced(db: &Db, keys: &[String]) -> Result<Vec<String>, StoreError> {
    let mut candidates = Vec::new();
    let mut package: Option<(String, HashSet<String>)> = None;
    for key in keys {
        let Some((_, name, _)) = TarballKey::parse(key) else {
            continue; // not ours: leave it alone
        };
        let live = match &package {
            Some((current, live)) if current == name.as_str() => live,
            _ => {
                let live = live_keys(db, name.as_str())?;
                &package.insert((name.to_string(), live)).1
            }
        };
        if !live.contains(key) {
            candidates.push(key.clone());
        }
    }
    Ok(candidates)
}

/// The small tarballs stored at or before `cutoff_ms`, by key (`TarballStore::list`).
pub(super) fn stored_before(
    database: &redb::Database,
    cutoff_ms: u64,
) -> Result<Vec<TarballKey>, Failure> {
    let txn = database.begin_read()?;
    let Some(times) = open_made(&txn, TARBALL_TIMES)? else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for row in times.iter()? {
        let (key, stored) = row?;
        if stored.value() <= cutoff_ms
            && let Some((key, _, _)) = TarballKey::parse(key.value())
        {
            keys.push(key);
        }
    }
    Ok(keys)
}
