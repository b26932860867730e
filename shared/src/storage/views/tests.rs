//! Views and facts over a store with a lagging replica: what each read costs, which reads are
//! strong, and that nothing served moves backwards or hides a version that exists.

use std::collections::HashMap;

use chrono::Utc;

use super::*;
use crate::domain::{Dist, LiveVersion};

/// A store with a primary (strong reads, writes) and a replica that eventual reads see, which
/// catches up only when told to; it records every read.
#[derive(Default)]
struct Replicated {
    primary: Mutex<State>,
    replica: Mutex<State>,
    reads: Mutex<Vec<(&'static str, Consistency)>>,
}

#[derive(Default, Clone)]
struct State {
    packages: HashMap<PackageName, PackageRecord>,
    versions: HashMap<(PackageName, Version), VersionRecord>,
}

impl Replicated {
    fn state(&self, consistency: Consistency) -> State {
        let state = match consistency {
            Consistency::Strong => &self.primary,
            Consistency::Eventual => &self.replica,
        };
        locked(state).clone()
    }

    /// Stores `record` at the primary (as a committed write).
    fn commit(&self, record: &PackageRecord) {
        locked(&self.primary)
            .packages
            .insert(record.name.clone(), record.clone());
    }

    fn commit_version(&self, name: &PackageName, record: VersionRecord) {
        locked(&self.primary)
            .versions
            .insert((name.clone(), record.version.clone()), record);
    }

    /// The replica catches up.
    fn replicate(&self) {
        let primary = locked(&self.primary).clone();
        *locked(&self.replica) = primary;
    }

    /// The reads made since the last call.
    fn reads(&self) -> Vec<(&'static str, Consistency)> {
        std::mem::take(&mut *locked(&self.reads))
    }
}

#[async_trait]
impl MetadataStore for Replicated {
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
        self.package_with(name, Consistency::Strong).await
    }

    async fn package_with(
        &self,
        name: &PackageName,
        consistency: Consistency,
    ) -> Result<Option<PackageRecord>, StoreError> {
        locked(&self.reads).push(("package", consistency));
        // A round trip: other requests run meanwhile.
        tokio::task::yield_now().await;
        Ok(self.state(consistency).packages.get(name).cloned())
    }

    async fn document(&self, _: &PackageName) -> Result<Option<PackageDocument>, StoreError> {
        Ok(None)
    }

    async fn readme(&self, _: &PackageName, _: &Version) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    async fn version(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        self.version_with(name, version, Consistency::Strong).await
    }

    async fn version_with(
        &self,
        name: &PackageName,
        version: &Version,
        consistency: Consistency,
    ) -> Result<Option<VersionRecord>, StoreError> {
        locked(&self.reads).push(("version", consistency));
        Ok(self
            .state(consistency)
            .versions
            .get(&(name.clone(), version.clone()))
            .cloned())
    }

    async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
        self.commit(&write.package);
        Ok(())
    }
}

const T: Duration = Duration::from_secs(3600);

fn name() -> PackageName {
    PackageName::parse("@acme/hot").unwrap()
}

fn at_revision(revision: u64, epoch: u64) -> PackageRecord {
    let mut record = PackageRecord::new(name(), Utc::now());
    record.revision = revision;
    record.epoch = epoch;
    record
}

fn live(version: &str, digest: &str) -> VersionRecord {
    let version = Version::parse(version).unwrap();
    VersionRecord {
        state: VersionState::Live(Box::new(LiveVersion {
            manifest: crate::domain::Manifest::from_map(&serde_json::Map::new()).unwrap(),
            dist: Dist {
                shasum: "0".repeat(40),
                integrity: "sha512-AAAA".into(),
                file_count: 1,
                unpacked_size: 1,
                tarball_key: TarballKey::new(&name(), &version, digest),
                signatures: Vec::new(),
                provenance: None,
            },
            readme_filename: None,
            has_readme: None,
            deprecated: None,
        })),
        version,
        published: Utc::now(),
    }
}

fn views(store: &Arc<Replicated>, interval: Duration) -> PackageViews {
    PackageViews::new(store.clone(), interval)
}

async fn revision(views: &PackageViews) -> Option<u64> {
    views
        .package(&name())
        .await
        .unwrap()
        .map(|record| record.revision)
}

use Consistency::{Eventual, Strong};

#[tokio::test]
async fn without_an_interval_every_read_is_strong_and_nothing_is_kept() {
    let store = Arc::new(Replicated::default());
    store.commit(&at_revision(1, 0));
    store.commit_version(&name(), live("1.0.0", "ab"));
    let views = views(&store, Duration::ZERO);
    assert!(!views.keeps_views());
    let view = views.package(&name()).await.unwrap();
    assert_eq!(revision(&views).await, Some(1));
    let one = Version::new(1, 0, 0);
    for _ in 0..2 {
        assert!(matches!(
            views.fact(&name(), view.as_deref(), &one).await.unwrap(),
            Some(VersionFact::Live { .. })
        ));
    }
    assert_eq!(
        store.reads(),
        [
            ("package", Strong),
            ("package", Strong),
            ("version", Strong),
            ("version", Strong)
        ]
    );
}

#[tokio::test]
async fn a_view_is_read_once_per_interval_strongly_first_then_every_tenth_check() {
    let store = Arc::new(Replicated::default());
    store.commit(&at_revision(1, 0));
    store.replicate();
    let views = views(&store, T);
    for _ in 0..5 {
        assert_eq!(revision(&views).await, Some(1));
    }
    assert_eq!(
        store.reads(),
        [("package", Strong)],
        "a new view's first read is strong; then it serves for T"
    );
    let mut kinds = Vec::new();
    for _ in 0..20 {
        views.make_due(&name());
        assert_eq!(revision(&views).await, Some(1));
        assert_eq!(revision(&views).await, Some(1), "checked: fresh again");
        kinds.extend(store.reads().into_iter().map(|(_, kind)| kind));
    }
    let strong: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i] == Strong).collect();
    assert_eq!(kinds.len(), 20, "one read per check");
    assert_eq!(strong, [9, 19], "every tenth check is strong: {kinds:?}");
}

#[tokio::test]
async fn a_lagging_replica_never_moves_a_view_backwards_and_a_strong_check_catches_up() {
    let store = Arc::new(Replicated::default());
    store.commit(&at_revision(1, 0));
    store.replicate();
    let views = views(&store, T);
    assert_eq!(revision(&views).await, Some(1));
    // This instance writes revision 2 (the replica does not have it yet): it reads it at once.
    let mut next = at_revision(2, 0);
    MetadataStore::write(
        &views,
        PackageWrite {
            package: next.clone(),
            expected_revision: Some(1),
            create: None,
            readme: None,
            changes: Vec::new(),
            search: crate::storage::SearchChange::Keep,
            tarball: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(revision(&views).await, Some(2));
    views.make_due(&name());
    assert_eq!(
        revision(&views).await,
        Some(2),
        "the replica's revision 1 is older than the view's"
    );
    assert_eq!(store.reads(), [("package", Strong), ("package", Eventual)]);
    // Another instance writes revision 3; the replica still lags: the view holds 2 until the
    // strong check, at most ten checks later.
    next.revision = 3;
    store.commit(&next);
    let mut seen = Vec::new();
    for _ in 0..10 {
        views.make_due(&name());
        seen.push(revision(&views).await.unwrap());
    }
    assert_eq!(seen, [2, 2, 2, 2, 2, 2, 2, 2, 3, 3]);
}

#[tokio::test]
async fn an_absence_is_confirmed_strongly_and_kept_for_the_interval() {
    let store = Arc::new(Replicated::default());
    let views = views(&store, T);
    for _ in 0..3 {
        assert_eq!(revision(&views).await, None);
    }
    assert_eq!(store.reads(), [("package", Strong)], "kept for T");
    // Published elsewhere; the replica has not seen it. The next check finds it all the same.
    store.commit(&at_revision(1, 0));
    views.make_due(&name());
    assert_eq!(revision(&views).await, Some(1));
    assert_eq!(store.reads(), [("package", Strong)]);
    // An eventual check that finds nothing is never believed without a strong read.
    let other = PackageViews::new(store.clone(), T);
    assert_eq!(revision(&other).await, Some(1));
    other.make_due(&name());
    assert_eq!(revision(&other).await, Some(1));
    assert_eq!(
        store.reads(),
        [
            ("package", Strong),
            ("package", Eventual),
            ("package", Strong)
        ]
    );
}

#[tokio::test]
async fn requests_that_find_a_view_due_share_one_check() {
    let store = Arc::new(Replicated::default());
    store.commit(&at_revision(1, 0));
    store.replicate();
    let views = views(&store, T);
    let reads = futures_util::future::join_all((0..16).map(|_| revision(&views))).await;
    assert!(reads.iter().all(|r| *r == Some(1)));
    assert_eq!(store.reads().len(), 1, "one check for sixteen requests");
    views.make_due(&name());
    let reads = futures_util::future::join_all((0..16).map(|_| revision(&views))).await;
    assert!(reads.iter().all(|r| *r == Some(1)));
    assert_eq!(store.reads(), [("package", Eventual)]);
}

#[tokio::test]
async fn facts_are_kept_while_the_epoch_stays() {
    let store = Arc::new(Replicated::default());
    store.commit(&at_revision(1, 0));
    store.commit_version(&name(), live("1.0.0", "ab"));
    store.replicate();
    let views = views(&store, T);
    let one = Version::new(1, 0, 0);
    let view = views.package(&name()).await.unwrap().unwrap();
    store.reads();
    for _ in 0..3 {
        let fact = views.fact(&name(), Some(&view), &one).await.unwrap();
        assert!(matches!(fact, Some(VersionFact::Live { .. })));
    }
    assert_eq!(
        store.reads(),
        [("version", Eventual)],
        "epoch 0: the item has had one committed state, so any replica's copy is it"
    );
    // A version published a moment ago, not yet on the replica: found by the strong read
    // that confirms the absence, and never remembered as absent.
    store.commit_version(&name(), live("1.0.1", "cd"));
    let new = Version::new(1, 0, 1);
    assert!(
        views
            .fact(&name(), Some(&view), &new)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.reads(), [("version", Eventual), ("version", Strong)]);
    assert!(
        views
            .fact(&name(), Some(&view), &Version::new(9, 0, 0))
            .await
            .unwrap()
            .is_none()
    );
    store.reads();
    // Unpublished elsewhere: the epoch moves, and with it every fact kept under the old one.
    store.commit_version(
        &name(),
        VersionRecord {
            state: VersionState::Unpublished { at: Utc::now() },
            ..live("1.0.0", "ab")
        },
    );
    store.commit(&at_revision(2, 1));
    // The replica has the new record, but its copy of the version item still lags.
    store.replicate();
    locked(&store.replica)
        .versions
        .insert((name(), one.clone()), live("1.0.0", "ab"));
    let stale = views.fact(&name(), Some(&view), &one).await.unwrap();
    assert!(
        matches!(stale, Some(VersionFact::Live { .. })),
        "until the view moves, the kept fact serves"
    );
    views.make_due(&name());
    let view = views.package(&name()).await.unwrap().unwrap();
    assert_eq!(view.epoch, 1);
    assert_eq!(
        views.fact(&name(), Some(&view), &one).await.unwrap(),
        Some(VersionFact::Unpublished)
    );
    assert_eq!(
        views
            .fact(&name(), Some(&view), &new)
            .await
            .unwrap()
            .map(|f| matches!(f, VersionFact::Live { .. })),
        Some(true)
    );
    assert_eq!(
        store.reads(),
        [
            ("package", Eventual),
            ("version", Strong),
            ("version", Strong)
        ],
        "after an unpublish a replica may hold a version's older state: facts are read strongly"
    );
}

/// A version this instance wrote (and its README) is taken from the write while the package's
/// record lists that write as the latest to touch the version; once a later write touches it
/// (here or on another instance), or for a package deleted and created again, the store is
/// read.
#[tokio::test]
async fn a_written_version_is_used_until_another_write_touches_it() {
    let store = Arc::new(Replicated::default());
    let views = views(&store, Duration::ZERO);
    let version = Version::parse("1.0.0").unwrap();
    let created = Utc::now();
    let mut record = PackageRecord::new(name(), created);
    record.revision = 1;
    record.touched.record(1, [&version]);
    let written = live("1.0.0", "aa");
    views
        .write(PackageWrite {
            package: record.clone(),
            expected_revision: None,
            create: Some((written.clone(), super::super::CreateMode::CreateOnly)),
            readme: Some("# written".into()),
            changes: Vec::new(),
            search: super::super::SearchChange::Keep,
            tarball: None,
        })
        .await
        .unwrap();
    // What the store holds since: another instance's deprecation.
    let mut deprecated = written.clone();
    if let VersionState::Live(live) = &mut deprecated.state {
        live.deprecated = Some("use 2".into());
    }
    store.commit_version(&name(), deprecated.clone());
    store.reads();

    assert_eq!(
        views.version_as_of(&record, &version).await.unwrap(),
        Some(written)
    );
    assert_eq!(
        views
            .readme_as_of(&record, &version)
            .await
            .unwrap()
            .as_deref(),
        Some("# written")
    );
    assert!(store.reads().is_empty(), "nothing read back");

    let mut later = record.clone();
    later.revision = 2;
    later.touched.record(2, [&version]);
    assert_eq!(
        views.version_as_of(&later, &version).await.unwrap(),
        Some(deprecated.clone())
    );
    assert_eq!(store.reads(), [("version", Consistency::Strong)]);

    let mut again = PackageRecord::new(name(), created + chrono::Duration::seconds(1));
    again.revision = 1;
    again.touched.record(1, [&version]);
    assert_eq!(
        views.version_as_of(&again, &version).await.unwrap(),
        Some(deprecated)
    );
    assert_eq!(store.reads(), [("version", Consistency::Strong)]);
}

/// With views kept, the versions a patch read are kept by the write the record lists for each,
/// so the instance's other view patches to the same revision without reading them again; a
/// record listing a later write to a version, or a package created again, reads it anew. With
/// T = 0 nothing is kept.
#[tokio::test]
async fn versions_read_for_a_patch_are_read_once_per_write() {
    let store = Arc::new(Replicated::default());
    let created = Utc::now();
    let (one, two) = (
        Version::parse("1.0.0").unwrap(),
        Version::parse("1.0.1").unwrap(),
    );
    let stored = live("1.0.1", "bb");
    store.commit_version(&name(), live("1.0.0", "aa"));
    store.commit_version(&name(), stored.clone());
    let mut record = PackageRecord::new(name(), created);
    record.revision = 2;
    record.touched.record(1, [&one]);
    record.touched.record(2, [&two]);
    let both = [one.clone(), two.clone()];

    let unkept = views(&store, Duration::ZERO);
    for _ in 0..2 {
        unkept.versions_as_of(&record, &both).await.unwrap();
    }
    assert_eq!(store.reads().len(), 4, "T = 0: every patch reads");

    let views = views(&store, T);
    let first = views.versions_as_of(&record, &both).await.unwrap();
    assert_eq!(store.reads().len(), 2);
    let second = views.versions_as_of(&record, &both).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        (store.reads(), second[1].clone()),
        (Vec::new(), Some(stored.clone())),
        "the second view's patch reads nothing"
    );

    // A deprecation of 1.0.1 at revision 3: that version is read again, 1.0.0 is not.
    let mut deprecated = stored;
    if let VersionState::Live(live) = &mut deprecated.state {
        live.deprecated = Some("use 1.0.0".into());
    }
    store.commit_version(&name(), deprecated.clone());
    let mut later = record.clone();
    later.revision = 3;
    later.touched.record(3, [&two]);
    let read = views.versions_as_of(&later, &both).await.unwrap();
    assert_eq!(read[1], Some(deprecated.clone()));
    assert_eq!(store.reads(), [("version", Strong)]);

    // The same name created again starts its revisions over: nothing kept applies.
    let mut again = record.clone();
    again.created = created + chrono::Duration::seconds(1);
    views.versions_as_of(&again, &both).await.unwrap();
    assert_eq!(store.reads().len(), 2);
}
