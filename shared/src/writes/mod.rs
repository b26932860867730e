//! The one write path for package metadata. Every change to a package (a publish, a metadata
//! update, an unpublish, a dist-tag, a trust configuration's binding) is read → decide →
//! conditional write, retried while another writer wins the race. Handlers decide *whether* a
//! change may happen (parsing, authorisation, inside the decision so it is judged against what
//! is stored); this module decides *how* it is written, and answers with a domain error.

pub mod publish;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use semver::Version;

use crate::domain::{DistTag, PackageName, PackageRecord, TarballKey, VersionRecord, VersionState};
use crate::search::SearchEntry;
use crate::storage::{
    CreateMode, MetadataStore, PackageWrite, SearchChange, StagedTarball, StoreError, TarballStore,
    VersionChange,
};

/// How many times a write is tried before a lasting conflict is reported. Writes are conditional
/// on the revision they read, so racing writers to one package each land within a few rounds.
const ATTEMPTS: u32 = 200;

/// Why a write ended without landing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The decision refused the change (authorisation, validation): `E` says why.
    #[error("{0}")]
    Refused(E),
    /// The version being published is already published with other contents.
    #[error("cannot publish over the previously published version {version} of {name}")]
    VersionTaken {
        /// The package.
        name: PackageName,
        /// The version.
        version: Version,
    },
    /// Storage failed, or the package kept changing through every attempt.
    #[error("{0}")]
    Store(StoreError),
}

impl<E> From<StoreError> for WriteError<E> {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

/// The next state of one package, begun from the record read: revision bumped (the write lands
/// only while the stored revision is still the one read) and `modified` set to now.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The package record to store; edit it freely.
    pub record: PackageRecord,
    expected_revision: Option<u64>,
    create: Option<(VersionRecord, CreateMode)>,
    readme: Option<String>,
    changes: Vec<VersionChange>,
    /// What the package's search entry was made from before this change (`None`: a new package).
    searched: Option<SearchFacts>,
    /// The created version's tarball, when the store writes it with the version.
    tarball: Option<StagedTarball>,
}

/// The parts of a package record its search entry depends on, besides its `latest` version.
#[derive(Debug, Clone, PartialEq)]
struct SearchFacts {
    latest: Option<Version>,
    repository: Option<String>,
    unpublished: bool,
}

impl SearchFacts {
    fn of(record: &PackageRecord) -> Self {
        SearchFacts {
            latest: record.dist_tags.get(&DistTag::latest()).cloned(),
            repository: record
                .repository
                .as_ref()
                .map(|r| r.to_string().to_ascii_lowercase()),
            unpublished: record.unpublished.is_some(),
        }
    }
}

impl Draft {
    /// The next record after `current`, or a new package's first record.
    pub fn after(current: Option<&PackageRecord>, name: &PackageName) -> Draft {
        let now = Utc::now();
        let (record, expected_revision) = if let Some(stored) = current {
            let mut next = stored.clone();
            next.revision = stored.revision + 1;
            next.modified = now;
            (next, Some(stored.revision))
        } else {
            let mut next = PackageRecord::new(name.clone(), now);
            next.revision = 1;
            (next, None)
        };
        Draft {
            record,
            expected_revision,
            create: None,
            readme: None,
            changes: Vec::new(),
            searched: current.map(SearchFacts::of),
            tarball: None,
        }
    }

    /// Whether this change can change what search shows of the package: a new package, a new
    /// or changed `latest` version, a move of the `latest` tag, a new repository binding, an
    /// unpublish. A tag other than `latest`, a star or a change to an older version cannot, and
    /// costs no read of the latest version.
    fn changes_search_entry(&self) -> bool {
        let Some(before) = &self.searched else {
            return true;
        };
        let after = SearchFacts::of(&self.record);
        let Some(latest) = &after.latest else {
            return *before != after;
        };
        let touches_latest = self
            .create
            .iter()
            .any(|(record, _)| record.version == *latest)
            || self.changes.iter().any(|change| match change {
                VersionChange::Deprecate(v, _) | VersionChange::Unpublish(v, _) => v == latest,
                // Signatures are not searched.
                VersionChange::Sign(..) => false,
            });
        *before != after || touches_latest
    }

    /// The time this change is made (the record's new `modified`).
    pub fn now(&self) -> DateTime<Utc> {
        self.record.modified
    }

    /// Creates a version, with its README, with this write.
    pub fn create_version(
        &mut self,
        version: VersionRecord,
        readme: Option<String>,
        mode: CreateMode,
    ) {
        self.create = Some((version, mode));
        self.readme = readme;
    }

    /// Stores `tarball` (the created version's, staged by the tarball store) with this write.
    pub fn store_tarball(&mut self, tarball: Option<StagedTarball>) {
        self.tarball = tarball;
    }

    /// Changes an existing version with this write.
    pub fn change_version(&mut self, change: VersionChange) {
        self.changes.push(change);
    }

    /// Whether the write may change what is known of an existing version's tarball: an
    /// unpublish, or a create that may replace a live version (overwrite mode, where even a
    /// version absent when checked may have been published by a racing writer since).
    fn changes_tarball_facts(&self) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c, VersionChange::Unpublish(..)))
            || matches!(self.create, Some((_, CreateMode::AllowOverwrite)))
    }

    fn into_write(mut self) -> PackageWrite {
        let created = self.create.iter().map(|(record, _)| &record.version);
        let changed = self.changes.iter().map(VersionChange::version);
        self.record
            .touched
            .record(self.record.revision, created.chain(changed));
        if self.changes_tarball_facts() {
            self.record.epoch += 1;
        }
        PackageWrite {
            package: self.record,
            expected_revision: self.expected_revision,
            create: self.create,
            readme: self.readme,
            changes: self.changes,
            search: SearchChange::Keep,
            tarball: self.tarball,
        }
    }
}

/// What `write` makes of the package's search entry: the `latest` version as it is after the
/// write, read from the store unless the write creates it. The read is safe inside the attempt:
/// versions change only with the package's revision, on which the write is conditioned.
async fn search_change(
    metadata: &dyn MetadataStore,
    write: &PackageWrite,
) -> Result<SearchChange, StoreError> {
    let record = &write.package;
    let remove = SearchChange::Remove {
        name: record.name.clone(),
        revision: record.revision,
    };
    if record.unpublished.is_some() {
        return Ok(remove);
    }
    let Some(latest) = record.dist_tags.get(&DistTag::latest()) else {
        return Ok(remove);
    };
    let created = write
        .create
        .as_ref()
        .map(|(version, _)| version)
        .filter(|version| version.version == *latest);
    let stored;
    let version = match created {
        Some(version) => version,
        None => match metadata.version(&record.name, latest).await? {
            Some(version) => {
                stored = version;
                &stored
            }
            None => return Ok(remove),
        },
    };
    let VersionState::Live(live) = &version.state else {
        return Ok(remove);
    };
    let mut live = std::borrow::Cow::Borrowed(&**live);
    for change in &write.changes {
        match change {
            VersionChange::Unpublish(v, _) if v == latest => return Ok(remove),
            VersionChange::Deprecate(v, message) if v == latest => {
                live.to_mut().deprecated.clone_from(message);
            }
            _ => {}
        }
    }
    let readme = match created {
        Some(_) => write.readme.clone(),
        None => metadata.readme(&record.name, latest).await?,
    };
    Ok(SearchChange::Put(Box::new(SearchEntry::of(
        record,
        latest,
        version.published,
        &live,
        readme.as_deref(),
    ))))
}

/// What one attempt decided, and what the write answers once it is done.
#[derive(Debug)]
// Returned once per attempt and consumed at once: boxing the draft would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Decision<T> {
    /// Write the draft; answer `T` once it has landed.
    Write(Draft, T),
    /// Nothing to write (the package is already as asked); answer `T`.
    Keep(T),
}

/// Writes to packages through the stores, by the rules of `crate::storage`.
#[derive(Clone, Copy)]
pub struct PackageWriter<'a> {
    metadata: &'a dyn MetadataStore,
    tarballs: &'a dyn TarballStore,
    create_mode: CreateMode,
}

impl<'a> PackageWriter<'a> {
    /// A writer over these stores; `allow_overwrite` is the operator's opt-in to replacing a
    /// published version.
    pub fn new(
        metadata: &'a dyn MetadataStore,
        tarballs: &'a dyn TarballStore,
        allow_overwrite: bool,
    ) -> Self {
        PackageWriter {
            metadata,
            tarballs,
            create_mode: if allow_overwrite {
                CreateMode::AllowOverwrite
            } else {
                CreateMode::CreateOnly
            },
        }
    }

    /// Runs `attempt` (read what it needs, decide) and writes its draft conditioned on the
    /// revision it read, again from the start whenever another writer changed the package in
    /// between. A refusal or a storage failure ends it at once.
    pub async fn update<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, WriteError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Decision<T>, WriteError<E>>>,
    {
        for n in 0..ATTEMPTS {
            let outcome = match attempt().await {
                Ok(Decision::Keep(answer)) => return Ok(answer),
                Ok(Decision::Write(draft, answer)) => {
                    let searched = draft.changes_search_entry();
                    let mut write = draft.into_write();
                    let change = if searched {
                        search_change(self.metadata, &write).await
                    } else {
                        Ok(SearchChange::Keep)
                    };
                    match change {
                        Ok(change) => {
                            write.search = change;
                            self.metadata
                                .write(write)
                                .await
                                .map(|()| answer)
                                .map_err(WriteError::Store)
                        }
                        Err(e) => Err(WriteError::Store(e)),
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Err(WriteError::Store(StoreError::RevisionConflict)) if n + 1 < ATTEMPTS => {
                    // Jittered backoff spreads racing writers out so one of them commits each round.
                    let max_ms = 1 + u64::from(n.min(20));
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..=max_ms))).await;
                }
                other => return other,
            }
        }
        Err(WriteError::Store(StoreError::RevisionConflict))
    }

    /// Removes tarballs no record refers to any more. A failure is logged, not answered: the
    /// write that orphaned them has landed, and `sweep` removes what is left.
    pub async fn remove_tarballs(&self, keys: &[TarballKey]) {
        for key in keys {
            if let Err(e) = self.tarballs.delete(key).await {
                tracing::warn!(key = key.as_str(), error = %e, "could not remove an unreferenced tarball");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(epoch: u64) -> Draft {
        let name = PackageName::parse("@acme/epoch").unwrap();
        let mut stored = PackageRecord::new(name.clone(), Utc::now());
        stored.revision = 4;
        stored.epoch = epoch;
        Draft::after(Some(&stored), &name)
    }

    fn version(v: &str) -> VersionRecord {
        VersionRecord {
            version: Version::parse(v).unwrap(),
            published: Utc::now(),
            state: VersionState::Unpublished { at: Utc::now() },
        }
    }

    #[test]
    fn only_writes_that_change_what_search_shows_remake_the_entry() {
        let name = PackageName::parse("@acme/searched").unwrap();
        let mut stored = PackageRecord::new(name.clone(), Utc::now());
        stored.revision = 2;
        stored
            .dist_tags
            .insert(DistTag::latest(), Version::new(1, 0, 0));
        assert!(
            Draft::after(None, &name).changes_search_entry(),
            "a new package"
        );
        let mut d = Draft::after(Some(&stored), &name);
        d.record
            .dist_tags
            .insert(DistTag::parse("beta").unwrap(), Version::new(0, 9, 0));
        assert!(!d.changes_search_entry(), "another tag");
        let mut d = Draft::after(Some(&stored), &name);
        d.change_version(VersionChange::Deprecate(Version::new(0, 9, 0), None));
        assert!(!d.changes_search_entry(), "an older version");
        let mut d = Draft::after(Some(&stored), &name);
        d.change_version(VersionChange::Deprecate(
            Version::new(1, 0, 0),
            Some("x".into()),
        ));
        assert!(d.changes_search_entry(), "the latest version deprecated");
        let mut d = Draft::after(Some(&stored), &name);
        d.record
            .dist_tags
            .insert(DistTag::latest(), Version::new(0, 9, 0));
        assert!(d.changes_search_entry(), "latest moved");
        let mut d = Draft::after(Some(&stored), &name);
        d.record.repository = crate::domain::RepoRef::new("acme", "widgets");
        assert!(d.changes_search_entry(), "bound to a repository");
        let mut d = Draft::after(Some(&stored), &name);
        d.record.unpublished = Some(Utc::now());
        assert!(d.changes_search_entry(), "unpublished");
        let mut d = Draft::after(Some(&stored), &name);
        d.create_version(version("1.0.0"), None, CreateMode::AllowOverwrite);
        assert!(d.changes_search_entry(), "the latest version overwritten");
    }

    #[test]
    fn the_epoch_moves_with_writes_that_change_what_a_version_tarball_is() {
        let epoch_of = |draft: Draft| draft.into_write().package.epoch;
        assert_eq!(epoch_of(draft(2)), 2, "a record change alone");
        let mut d = draft(2);
        d.change_version(VersionChange::Deprecate(Version::new(1, 0, 0), None));
        assert_eq!(epoch_of(d), 2, "a deprecation");
        let mut d = draft(2);
        d.create_version(version("1.0.1"), None, CreateMode::CreateOnly);
        assert_eq!(epoch_of(d), 2, "a new version that cannot replace one");
        let mut d = draft(2);
        d.change_version(VersionChange::Unpublish(Version::new(1, 0, 0), Utc::now()));
        d.change_version(VersionChange::Unpublish(Version::new(1, 0, 1), Utc::now()));
        assert_eq!(epoch_of(d), 3, "unpublishes: once per write");
        let mut d = draft(2);
        d.create_version(version("1.0.0"), None, CreateMode::AllowOverwrite);
        assert_eq!(epoch_of(d), 3, "a create that may overwrite");
    }
}
