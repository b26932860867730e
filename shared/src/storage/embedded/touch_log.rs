//! The log of the versions each write touched (`RenderStore::touched_after`), one row per
//! package write: (package name, revision) → the package's creation time, then the versions.
//!
//! Written in the write's own transaction, so it never misses a committed write; let go up to
//! a revision once a render of that revision is kept. With it, a big package's kept render is
//! patched with what the writes since changed however many there were, where the package
//! record lists only the latest few: the render of a package filled by thousands of publishes
//! and never read is brought up to date now and then (`http::metadata`), not built again.

use std::collections::BTreeSet;

use redb::{ReadableTable, Table, TableDefinition};
use semver::Version;

use super::db::Failure;
use crate::domain::PackageRecord;
use crate::storage::{StoreError, TouchedSince};

/// (package name, revision) → creation time (ms, little-endian) and the versions touched, one
/// per line.
pub(super) const TOUCH_LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("touch_log");

/// Lists the write that made `package` (its record as written), if the record lists what that
/// write touched (writes made outside the write path may not).
pub(super) fn record(
    log: &mut Table<(&str, u64), &[u8]>,
    package: &PackageRecord,
) -> Result<(), redb::StorageError> {
    let Some(versions) = package.touched.at(package.revision) else {
        return Ok(());
    };
    let mut row = package.created.timestamp_millis().to_le_bytes().to_vec();
    for (i, version) in versions.iter().enumerate() {
        if i > 0 {
            row.push(b'\n');
        }
        row.extend_from_slice(version.to_string().as_bytes());
    }
    log.insert((package.name.as_str(), package.revision), row.as_slice())?;
    Ok(())
}

/// Lets go of the rows of `name` up to `revision`.
pub(super) fn trim(
    log: &mut Table<(&str, u64), &[u8]>,
    name: &str,
    revision: u64,
) -> Result<(), redb::StorageError> {
    log.retain_in((name, 0)..=(name, revision), |_, _| false)
}

/// The versions the writes to `name` after `revision` touched, up to the first write not
/// listed (or listed for another package of the same name, created at another time).
pub(super) fn after(
    log: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    name: &str,
    created: i64,
    revision: u64,
) -> Result<TouchedSince, Failure> {
    let mut through = revision;
    let mut versions = BTreeSet::new();
    let Some(first) = revision.checked_add(1) else {
        return Ok(TouchedSince::nothing_after(revision));
    };
    for row in log.range((name, first)..=(name, u64::MAX))? {
        let (key, value) = row?;
        let (row_revision, row) = (key.value().1, value.value());
        if row_revision != through + 1 || row.get(..8) != Some(&created.to_le_bytes()[..]) {
            break;
        }
        for line in row[8..].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let version = std::str::from_utf8(line)
                .ok()
                .and_then(|v| Version::parse(v).ok())
                .ok_or_else(|| StoreError::Internal("a damaged touch-log row".into()))?;
            versions.insert(version);
        }
        through = row_revision;
    }
    Ok(TouchedSince {
        through,
        versions: versions.into_iter().collect(),
    })
}
