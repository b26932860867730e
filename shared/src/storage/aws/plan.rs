//! Transaction planning: what one `PackageWrite` becomes in DynamoDB, as typed operations with
//! their conditions, and what a cancelled transaction means; no SDK call and no I/O, so every
//! rule of the write path is tested here (`transact` renders the operations as requests).

use semver::Version;

use crate::domain::{PackageRecord, VersionRecord};
use crate::storage::{CreateMode, PackageWrite, VersionChange};

/// DynamoDB allows 100 items per transaction; one is the package record and two are the search
/// entry and its log item (`search`), which go with the last.
pub(super) const CHANGES_PER_TRANSACTION: usize = 97;

/// What must hold of an item for an operation on it to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Condition {
    /// The item does not exist.
    Absent,
    /// The item does not exist, or is a live version (an overwrite; a tombstone still wins).
    AbsentOrLive,
    /// The item exists and is a live version.
    Live,
    /// The package record is at this revision.
    Revision(u64),
}

/// One item of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Op<'a> {
    /// Puts a new version item.
    PutVersion {
        /// The version.
        record: &'a VersionRecord,
        /// `Absent` (create-only) or `AbsentOrLive` (overwrite allowed).
        condition: Condition,
    },
    /// Deprecates, undeprecates or unpublishes an existing version; always `Live`.
    UpdateVersion {
        /// The change.
        change: &'a VersionChange,
        /// `Live`.
        condition: Condition,
    },
    /// Puts the package record; always the transaction's last item.
    PutPackage {
        /// The record, at the revision this transaction writes.
        record: Box<PackageRecord>,
        /// `Absent` (a new package) or `Revision` (the one before).
        condition: Condition,
    },
}

/// One `TransactWriteItems`: its operations in order, the package record last.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Transaction<'a> {
    /// The items, in the order the cancellation reasons will come back in.
    pub ops: Vec<Op<'a>>,
}

/// Why DynamoDB cancelled one item of a transaction (its `CancellationReason` code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cancel {
    /// This item did not fail (`None`).
    NotThis,
    /// Its condition did not hold (`ConditionalCheckFailed`).
    ConditionFailed,
    /// Another transaction was writing the item (`TransactionConflict`).
    Conflict,
    /// Anything else (throttling, validation), which a retry decides.
    Other,
}

impl Cancel {
    /// The cancellation reason with this code.
    pub(crate) fn from_code(code: Option<&str>) -> Self {
        match code {
            None | Some("None") => Cancel::NotThis,
            Some("ConditionalCheckFailed") => Cancel::ConditionFailed,
            Some("TransactionConflict") => Cancel::Conflict,
            Some(_) => Cancel::Other,
        }
    }
}

/// What a cancelled transaction means for the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure<'a> {
    /// The package changed since the writer read it (or the cause is unknown): re-read, retry.
    RevisionConflict,
    /// The new version's item exists: live (`VersionExists`) or a tombstone (`VersionRetired`),
    /// which only a read tells.
    VersionTaken(&'a Version),
    /// A change named a version that is not live.
    NoSuchVersion(&'a Version),
}

/// The transactions that make `write`, in order. Usually one; a write with more changes than fit
/// in one goes as several, each carrying as many changes as fit and its own package record put,
/// transaction `i` writing revision `base + i + 1` conditioned on `base + i`, so a single
/// transaction (the usual case) writes exactly the revision the caller asked for.
pub(super) fn plan(write: &PackageWrite) -> Vec<Transaction<'_>> {
    let mut first = Vec::new();
    if let Some((record, mode)) = &write.create {
        let condition = match mode {
            CreateMode::CreateOnly => Condition::Absent,
            CreateMode::AllowOverwrite => Condition::AbsentOrLive,
        };
        first.push(Op::PutVersion { record, condition });
    }
    let mut changes = write
        .changes
        .iter()
        .map(|change| Op::UpdateVersion {
            change,
            condition: Condition::Live,
        })
        .peekable();
    let room = CHANGES_PER_TRANSACTION - first.len();
    first.extend(changes.by_ref().take(room));
    let mut chunks = vec![first];
    while changes.peek().is_some() {
        chunks.push(changes.by_ref().take(CHANGES_PER_TRANSACTION).collect());
    }
    let base = write.expected_revision.unwrap_or(0);
    let split = chunks.len() > 1;
    chunks
        .into_iter()
        .zip(0u64..)
        .map(|(mut ops, i)| {
            let mut record = Box::new(write.package.clone());
            record.revision = base + i + 1;
            if split {
                // Each transaction lands a part of the write under its own revision: no list of
                // what one revision touched would be true, so readers of these build anew.
                record.touched = crate::domain::Touched::default();
            }
            let condition = match (i, write.expected_revision) {
                (0, None) => Condition::Absent,
                (0, Some(rev)) => Condition::Revision(rev),
                (i, _) => Condition::Revision(base + i),
            };
            ops.push(Op::PutPackage { record, condition });
            Transaction { ops }
        })
        .collect()
}

impl<'a> Transaction<'a> {
    /// What the cancellation reasons of this transaction (one per item, in order; a single
    /// `Conflict` when DynamoDB refused the whole call) mean.
    pub(crate) fn failure(&self, reasons: &[Cancel]) -> Failure<'a> {
        let failed = |idx: usize| reasons.get(idx) == Some(&Cancel::ConditionFailed);
        if reasons.contains(&Cancel::Conflict) || failed(self.ops.len() - 1) {
            return Failure::RevisionConflict;
        }
        if let (true, Some(Op::PutVersion { record, .. })) = (failed(0), self.ops.first()) {
            return Failure::VersionTaken(&record.version);
        }
        let first_failed = reasons.iter().position(|r| *r == Cancel::ConditionFailed);
        if let Some(Op::UpdateVersion { change, .. }) = first_failed.and_then(|i| self.ops.get(i)) {
            return Failure::NoSuchVersion(change.version());
        }
        // Without cancellation reasons (some emulators), a retry re-reads and decides.
        Failure::RevisionConflict
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::{PackageName, VersionState};

    fn package(revision: u64) -> PackageRecord {
        let name = PackageName::parse("@acme/a").unwrap();
        let mut record = PackageRecord::new(name, Utc::now());
        record.revision = revision;
        record
    }

    fn version(v: &str) -> VersionRecord {
        VersionRecord {
            version: Version::parse(v).unwrap(),
            published: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            state: VersionState::Unpublished {
                at: Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap(),
            },
        }
    }

    fn deprecate(n: u64) -> VersionChange {
        VersionChange::Deprecate(Version::new(1, 0, n), Some("old".into()))
    }

    fn write(
        expected: Option<u64>,
        create: Option<(VersionRecord, CreateMode)>,
        changes: Vec<VersionChange>,
    ) -> PackageWrite {
        PackageWrite {
            package: package(expected.unwrap_or(0) + 1),
            expected_revision: expected,
            create,
            readme: None,
            changes,
            search: crate::storage::SearchChange::Keep,
            tarball: None,
        }
    }

    /// The package put of a transaction: its revision and condition.
    fn package_put(tx: &Transaction<'_>) -> (u64, Condition) {
        match tx.ops.last() {
            Some(Op::PutPackage { record, condition }) => (record.revision, *condition),
            other => panic!("the last item is not the package record: {other:?}"),
        }
    }

    #[test]
    fn first_publish_creates_the_version_and_the_record_only_if_absent() {
        let w = write(
            None,
            Some((version("1.0.0"), CreateMode::CreateOnly)),
            vec![],
        );
        let txs = plan(&w);
        assert_eq!(txs.len(), 1);
        assert_eq!(txs[0].ops.len(), 2);
        assert_eq!(
            txs[0].ops[0],
            Op::PutVersion {
                record: &w.create.as_ref().unwrap().0,
                condition: Condition::Absent
            }
        );
        assert_eq!(package_put(&txs[0]), (1, Condition::Absent));
    }

    #[test]
    fn later_publish_is_conditioned_on_the_revision_read() {
        let w = write(
            Some(7),
            Some((version("1.1.0"), CreateMode::CreateOnly)),
            vec![],
        );
        let txs = plan(&w);
        assert_eq!(txs.len(), 1);
        assert_eq!(package_put(&txs[0]), (8, Condition::Revision(7)));
    }

    #[test]
    fn create_only_refuses_any_item_and_overwrite_only_a_tombstone() {
        for (mode, expected) in [
            (CreateMode::CreateOnly, Condition::Absent),
            (CreateMode::AllowOverwrite, Condition::AbsentOrLive),
        ] {
            let w = write(Some(1), Some((version("1.0.0"), mode)), vec![]);
            match &plan(&w)[0].ops[0] {
                Op::PutVersion { condition, .. } => assert_eq!(*condition, expected, "{mode:?}"),
                other => panic!("not a version put: {other:?}"),
            }
        }
    }

    #[test]
    fn changes_update_live_versions_only_in_order() {
        let changes = vec![
            deprecate(1),
            VersionChange::Deprecate(Version::new(1, 0, 2), None),
            VersionChange::Unpublish(Version::new(1, 0, 3), Utc::now()),
        ];
        let w = write(Some(3), None, changes.clone());
        let txs = plan(&w);
        assert_eq!(txs.len(), 1);
        let updates: Vec<_> = txs[0].ops[..3]
            .iter()
            .map(|op| match op {
                Op::UpdateVersion { change, condition } => {
                    assert_eq!(*condition, Condition::Live);
                    (*change).clone()
                }
                other => panic!("not an update: {other:?}"),
            })
            .collect();
        assert_eq!(format!("{updates:?}"), format!("{changes:?}"));
        assert_eq!(package_put(&txs[0]), (4, Condition::Revision(3)));
    }

    #[test]
    fn a_tombstone_is_an_update_of_a_live_version() {
        let at = Utc::now();
        let v = Version::new(2, 0, 0);
        let w = write(Some(1), None, vec![VersionChange::Unpublish(v.clone(), at)]);
        let txs = plan(&w);
        assert!(matches!(
            &txs[0].ops[0],
            Op::UpdateVersion { change: VersionChange::Unpublish(u, t), condition: Condition::Live }
                if *u == v && *t == at
        ));
    }

    #[test]
    fn a_record_only_write_is_one_package_put() {
        let w = write(Some(5), None, vec![]);
        let txs = plan(&w);
        assert_eq!(txs.len(), 1);
        assert_eq!(txs[0].ops.len(), 1);
        assert_eq!(package_put(&txs[0]), (6, Condition::Revision(5)));
    }

    #[test]
    fn transactions_stay_within_dynamodbs_hundred_items() {
        // A version and 250 changes: 1 + 96 changes + record, 97 + record, 57 + record; the
        // search entry and its log item go with the last (metadata.rs), within the hundred too.
        let changes: Vec<_> = (0..250).map(deprecate).collect();
        let w = write(
            Some(10),
            Some((version("3.0.0"), CreateMode::CreateOnly)),
            changes,
        );
        let txs = plan(&w);
        let sizes: Vec<_> = txs.iter().map(|t| t.ops.len()).collect();
        assert_eq!(sizes, [98, 98, 58]);
        assert!(sizes.iter().all(|&n| n + 2 <= 100));
        // Each transaction writes the next revision on the one before it.
        let puts: Vec<_> = txs.iter().map(package_put).collect();
        assert_eq!(
            puts,
            [
                (11, Condition::Revision(10)),
                (12, Condition::Revision(11)),
                (13, Condition::Revision(12)),
            ]
        );
        // Every change is planned exactly once, in order, and only the first carries the version.
        let planned: Vec<_> = txs
            .iter()
            .flat_map(|t| &t.ops)
            .filter_map(|op| match op {
                Op::UpdateVersion { change, .. } => Some(*change),
                _ => None,
            })
            .collect();
        assert_eq!(planned.len(), 250);
        assert!(
            planned
                .iter()
                .zip(&w.changes)
                .all(|(a, b)| std::ptr::eq(*a, b))
        );
        let version_puts = txs
            .iter()
            .map(|t| {
                t.ops
                    .iter()
                    .filter(|op| matches!(op, Op::PutVersion { .. }))
                    .count()
            })
            .collect::<Vec<_>>();
        assert_eq!(version_puts, [1, 0, 0]);
    }

    #[test]
    fn a_new_package_split_over_transactions_conditions_the_later_ones_on_revisions() {
        let changes: Vec<_> = (0..100).map(deprecate).collect();
        let w = write(None, None, changes);
        let puts: Vec<_> = plan(&w).iter().map(package_put).collect();
        assert_eq!(puts, [(1, Condition::Absent), (2, Condition::Revision(1))]);
    }

    #[test]
    fn cancellation_reasons_name_what_failed() {
        use Cancel::*;
        let w = write(
            Some(1),
            Some((version("1.0.0"), CreateMode::CreateOnly)),
            vec![deprecate(7)],
        );
        let txs = plan(&w);
        let tx = &txs[0];
        let v = Version::parse("1.0.0").unwrap();
        let changed = Version::new(1, 0, 7);
        let cases: [(&[Cancel], Failure<'_>); 7] = [
            // The record moved on: a conflict, whatever else failed.
            (
                &[ConditionFailed, NotThis, ConditionFailed],
                Failure::RevisionConflict,
            ),
            (&[NotThis, Conflict, NotThis], Failure::RevisionConflict),
            (&[Conflict], Failure::RevisionConflict),
            (
                &[ConditionFailed, NotThis, NotThis],
                Failure::VersionTaken(&v),
            ),
            (
                &[NotThis, ConditionFailed, NotThis],
                Failure::NoSuchVersion(&changed),
            ),
            // No reasons (some emulators), or ones that say nothing: a retry decides.
            (&[], Failure::RevisionConflict),
            (&[Other, NotThis, NotThis], Failure::RevisionConflict),
        ];
        for (reasons, expected) in cases {
            assert_eq!(tx.failure(reasons), expected, "{reasons:?}");
        }
    }

    #[test]
    fn cancellation_in_a_later_transaction_names_its_own_change() {
        let changes: Vec<_> = (0..120).map(deprecate).collect();
        let w = write(Some(1), None, changes);
        let txs = plan(&w);
        let mut reasons = vec![Cancel::NotThis; txs[1].ops.len()];
        reasons[3] = Cancel::ConditionFailed;
        // The second transaction's fourth item is change 97 + 3.
        assert_eq!(
            txs[1].failure(&reasons),
            Failure::NoSuchVersion(&Version::new(1, 0, 100))
        );
    }

    #[test]
    fn cancel_codes_are_dynamodbs() {
        assert_eq!(Cancel::from_code(None), Cancel::NotThis);
        assert_eq!(Cancel::from_code(Some("None")), Cancel::NotThis);
        assert_eq!(
            Cancel::from_code(Some("ConditionalCheckFailed")),
            Cancel::ConditionFailed
        );
        assert_eq!(
            Cancel::from_code(Some("TransactionConflict")),
            Cancel::Conflict
        );
        assert_eq!(Cancel::from_code(Some("ThrottlingError")), Cancel::Other);
    }
}
