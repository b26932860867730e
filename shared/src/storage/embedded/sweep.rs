//! The embedded backend's sweep: tarball files no live version refers to are deleted, with the
//! server running or stopped.
//!
//! It visits only what it must: the tarball directory is listed once, a package directory at a
//! time (names only; a file's age is read only if it is to be deleted), and each package's
//! version records are read in one range read that decodes only each record's state and
//! tarball key, never its manifest. Memory stays that of one package.
//!
//! A publish stores its tarball before it commits the version that refers to it, so between the
//! two the tarball looks unreferenced. Two things keep the sweep from deleting it:
//! - in the process that stores it, the upload is remembered (`dir::Uploads`) until its version
//!   is committed, and the sweep decides on and deletes each tarball while holding that record,
//!   after reading its version again: an upload cannot begin, nor a version commit unseen,
//!   between the check and the deletion;
//! - files younger than the caller's age cutoff are kept, for anything else.
//!
//! Another process cannot publish meanwhile: the database admits one process.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use redb::ReadableDatabase;

use super::db::{Db, Failure};
use super::dir::DataDir;
use super::{VERSION_RANGE_END, VERSIONS, internal};
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
