//! The stored records of a package: one small package record plus one record per version.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use semver::Version;
use serde::{Deserialize, Serialize};

use super::{DistTag, PackageName};

/// Package-level state, updated with a revision condition. Its size does not grow with the
/// number of versions (deprecations and tombstones live on the version records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// The package.
    pub name: PackageName,
    /// Bumped by every write; writes are conditional on the revision they read.
    pub revision: u64,
    /// When the first version was published.
    pub created: DateTime<Utc>,
    /// When anything last changed.
    pub modified: DateTime<Utc>,
    /// Tag → version.
    pub dist_tags: BTreeMap<DistTag, Version>,
    /// Users who starred the package.
    #[serde(default)]
    pub stars: BTreeSet<String>,
    /// Set when the whole package was unpublished; versions published later clear it.
    #[serde(default)]
    pub unpublished: Option<DateTime<Utc>>,
    /// The GitHub repository the package is bound to (GitHub mode), from its first publish.
    #[serde(default)]
    pub repository: Option<super::RepoRef>,
    /// The versions the latest writes changed, so a reader holding a rendering of an older
    /// revision applies them instead of reading every version.
    #[serde(default)]
    pub touched: Touched,
    /// Bumped by every write that unpublishes or overwrites a version: what readers know of a
    /// version's tarball stays true while the epoch does (records stored before it read as 0,
    /// and 0 is not stored).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// Created with no versions by npm 1.x's first publish step (an empty document): it reads
    /// as a package with `versions: {}` rather than as missing (a name that only has a trusted
    /// publisher configured stays missing until its first version).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created_empty: bool,
}

// serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The versions the latest writes to a package touched (created, deprecated, unpublished), with
/// the revision of each write. Bounded: the oldest writes drop out and `since` moves past them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    /// Every write from this revision on is listed (`u64::MAX`: none is, as in the records of
    /// releases that kept no list).
    since: u64,
    /// (revision, version) of each version touched, oldest first.
    versions: Vec<(u64, Version)>,
}

impl Default for Touched {
    fn default() -> Self {
        Touched {
            since: u64::MAX,
            versions: Vec::new(),
        }
    }
}

impl Touched {
    /// Entries kept at most: a reader more writes behind than this reads every version.
    const KEEP: usize = 8;

    /// Lists the write making `revision`, which touched `versions` (perhaps none).
    pub(crate) fn record<'a>(
        &mut self,
        revision: u64,
        versions: impl IntoIterator<Item = &'a Version>,
    ) {
        self.since = self.since.min(revision);
        self.versions
            .extend(versions.into_iter().map(|v| (revision, v.clone())));
        while self.versions.len() > Self::KEEP {
            // Drop the oldest write whole: a write is listed completely or not at all.
            let oldest = self.versions[0].0;
            self.versions.retain(|(r, _)| *r > oldest);
            self.since = oldest + 1;
        }
    }

    /// The revision of the latest listed write that touched `version`, if one is listed.
    pub(crate) fn last_touch(&self, version: &Version) -> Option<u64> {
        self.versions
            .iter()
            .rev()
            .find(|(_, v)| v == version)
            .map(|(r, _)| *r)
    }

    /// The versions the write making `revision` touched, if that write is listed (`None`: it
    /// is not, and what it touched is unknown).
    pub(crate) fn at(&self, revision: u64) -> Option<Vec<&Version>> {
        (self.since <= revision).then(|| {
            self.versions
                .iter()
                .filter(|(r, _)| *r == revision)
                .map(|(_, v)| v)
                .collect()
        })
    }

    /// The versions touched by the writes after `revision`, if every one of them is listed.
    pub(crate) fn after(&self, revision: u64) -> Option<Vec<&Version>> {
        (self.since <= revision.saturating_add(1)).then(|| {
            self.versions
                .iter()
                .filter(|(r, _)| *r > revision)
                .map(|(_, v)| v)
                .collect()
        })
    }
}

impl PackageRecord {
    /// A record for a package about to get its first version.
    pub fn new(name: PackageName, now: DateTime<Utc>) -> Self {
        Self {
            name,
            revision: 0,
            created: now,
            modified: now,
            dist_tags: BTreeMap::new(),
            stars: BTreeSet::new(),
            unpublished: None,
            repository: None,
            touched: Touched::default(),
            epoch: 0,
            created_empty: false,
        }
    }

    /// The `_rev` clients echo back: revision plus creation time, so a deleted and recreated
    /// package never repeats an old `_rev`.
    pub(crate) fn rev_string(&self) -> String {
        format!("{}-{:x}", self.revision, self.created.timestamp_millis())
    }
}

/// One version. Immutable once written, except for its deprecation and its unpublishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The version.
    pub version: Version,
    /// When it was published.
    pub published: DateTime<Utc>,
    /// Live or unpublished.
    pub state: VersionState,
}

/// Whether a version can be installed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum VersionState {
    /// Installable.
    Live(Box<LiveVersion>),
    /// Unpublished: the number can never be used again and its tarball answers 410.
    Unpublished {
        /// When it was unpublished.
        at: DateTime<Utc>,
    },
}

/// The fields of either state, as stored (`{"state": "live", "manifest": …}`): read in one pass.
/// serde's derived reader for an internally tagged enum first buffers the whole record in a
/// tree of its own and then reads that again (and the manifest a third time, since it cannot
/// be kept as raw JSON from such a buffer): most of a version record's decoding time.
#[derive(Deserialize)]
struct StoredState {
    state: StateTag,
    manifest: Option<Box<serde_json::value::RawValue>>,
    dist: Option<Dist>,
    #[serde(default)]
    readme_filename: Option<String>,
    #[serde(default)]
    has_readme: Option<bool>,
    #[serde(default)]
    deprecated: Option<String>,
    at: Option<DateTime<Utc>>,
}

/// The stored names of the states.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StateTag {
    Live,
    Unpublished,
}

impl<'de> Deserialize<'de> for VersionState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let stored = StoredState::deserialize(deserializer)?;
        Ok(match stored.state {
            StateTag::Live => {
                let manifest = stored
                    .manifest
                    .ok_or_else(|| D::Error::missing_field("manifest"))?;
                VersionState::Live(Box::new(LiveVersion {
                    manifest: super::Manifest::from_raw(manifest).map_err(D::Error::custom)?,
                    dist: stored.dist.ok_or_else(|| D::Error::missing_field("dist"))?,
                    readme_filename: stored.readme_filename,
                    has_readme: stored.has_readme,
                    deprecated: stored.deprecated,
                }))
            }
            StateTag::Unpublished => VersionState::Unpublished {
                at: stored.at.ok_or_else(|| D::Error::missing_field("at"))?,
            },
        })
    }
}

/// An installable version's manifest and tarball facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveVersion {
    /// The manifest as published, minus `dist` and `readme`.
    pub manifest: super::Manifest,
    /// Digests and storage key of the tarball, computed by the registry.
    pub dist: Dist,
    /// README file name, if known. The README itself is stored apart from the version record
    /// (`MetadataStore::readme`): only the full packument's latest version shows it, so nothing
    /// else pays for decoding it.
    #[serde(default)]
    pub readme_filename: Option<String>,
    /// Whether a README was published with the version, so a reader without one asks no store
    /// for it; `None` for records of older releases, which kept no such fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_readme: Option<bool>,
    /// Deprecation message.
    #[serde(default)]
    pub deprecated: Option<String>,
}

/// Facts about a version's tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dist {
    /// Hex sha1.
    pub shasum: String,
    /// `sha512-…`.
    pub integrity: String,
    /// Regular files in the tarball.
    pub file_count: u64,
    /// Bytes they unpack to.
    pub unpacked_size: u64,
    /// Where the tarball store keeps the bytes.
    pub tarball_key: TarballKey,
    /// The registry's signatures (`dist.signatures`); none for versions published before
    /// signing was on, until `registry-server keys backfill` signs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<super::signing::DistSignature>,
    /// What the version's verified provenance says (`dist.attestations`); the bundle itself is
    /// kept apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceFacts>,
}

/// What a version's verified provenance bundle says, kept on its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenanceFacts {
    /// The statement's predicate type (SLSA provenance v0.2 or v1).
    pub predicate_type: String,
    /// The source repository the certificate names (`owner/repo` on GitHub, else its URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The workflow file that built it (`.github/workflows/publish.yml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

impl ProvenanceFacts {
    /// The facts of a verified bundle.
    pub fn of(provenance: &super::provenance::Provenance) -> Self {
        Self {
            predicate_type: provenance.predicate_type.clone(),
            repository: provenance
                .github_repository()
                .map(|r| r.to_string())
                .or_else(|| provenance.source_repository_uri.clone()),
            workflow: provenance.workflow_file(),
        }
    }
}

/// A tarball's key in the tarball store: `<name>/<version>-<sha512 prefix>.tgz`.
///
/// The digest makes racing uploads of the same version land on different keys, so the loser of a
/// publish race can never overwrite the winner's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TarballKey(String);

impl TarballKey {
    /// Derives the key from validated parts, so it never contains `..` or a leading `/`.
    pub fn new(name: &PackageName, version: &Version, sha512_hex: &str) -> Self {
        let digest = &sha512_hex[..sha512_hex.len().min(32)];
        Self(format!("{}/{}-{}.tgz", name.as_str(), version, digest))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads a key found in a tarball store, with the package and version it belongs to; `None`
    /// for anything that is not a key this registry made.
    pub fn parse(key: &str) -> Option<(Self, PackageName, Version)> {
        let (name, file) = key.rsplit_once('/')?;
        let stem = file.strip_suffix(".tgz")?;
        let (version, digest) = stem.rsplit_once('-')?;
        if digest.is_empty() || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let name = PackageName::parse(name).ok()?;
        let version = Version::parse(version).ok()?;
        Some((Self(key.to_string()), name, version))
    }
}

/// A package with all its version records: what a packument is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageDocument {
    /// The package record.
    pub package: PackageRecord,
    /// Every version record, live or unpublished, in no particular order.
    pub versions: Vec<VersionRecord>,
}

impl PackageDocument {
    /// Live versions, in ascending semver order.
    pub(crate) fn live(&self) -> Vec<(&Version, &chrono::DateTime<Utc>, &LiveVersion)> {
        let mut live: Vec<_> = self
            .versions
            .iter()
            .filter_map(|v| match &v.state {
                VersionState::Live(l) => Some((&v.version, &v.published, l.as_ref())),
                VersionState::Unpublished { .. } => None,
            })
            .collect();
        live.sort_by(|a, b| a.0.cmp(b.0));
        live
    }

    /// True when the package has nothing installable (never published or all unpublished).
    pub(crate) fn is_empty(&self) -> bool {
        self.package.unpublished.is_some() || self.live().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version states read back as the derived writer stores them, from text and from a JSON
    /// tree alike; a record missing what its state needs, or with a manifest that is not an
    /// object, is refused.
    #[test]
    fn version_states_read_back_as_stored() {
        let name = PackageName::parse("@t/a").unwrap();
        let version = Version::new(1, 2, 3);
        let live = VersionState::Live(Box::new(LiveVersion {
            manifest: crate::domain::Manifest::from_map(
                serde_json::json!({"name": "@t/a", "scripts": {"t": "x"}})
                    .as_object()
                    .unwrap(),
            )
            .unwrap(),
            dist: Dist {
                shasum: "ab".into(),
                integrity: "sha512-x".into(),
                file_count: 1,
                unpacked_size: 2,
                tarball_key: TarballKey::new(&name, &version, "00"),
                signatures: Vec::new(),
                provenance: None,
            },
            readme_filename: Some("README.md".into()),
            has_readme: Some(true),
            deprecated: Some("old".into()),
        }));
        let gone = VersionState::Unpublished { at: Utc::now() };
        for state in [live, gone] {
            let record = VersionRecord {
                version: version.clone(),
                published: Utc::now(),
                state,
            };
            let text = serde_json::to_string(&record).unwrap();
            assert!(text.contains(r#""state":{"state":"#), "{text}");
            assert_eq!(
                serde_json::from_str::<VersionRecord>(&text).unwrap(),
                record
            );
            let tree: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                serde_json::from_value::<VersionRecord>(tree).unwrap(),
                record
            );
        }
        // Unknown fields (a README inside a record of an older release) are skipped.
        let older = r#"{"state":"live","readme":"x","manifest":{"a":1},"dist":{"shasum":"a","integrity":"b","file_count":1,"unpacked_size":1,"tarball_key":"k"}}"#;
        let Ok(VersionState::Live(l)) = serde_json::from_str::<VersionState>(older) else {
            panic!("an older live record reads");
        };
        assert_eq!(l.manifest.json(), r#"{"a":1}"#);
        for bad in [
            r#"{"state":"live","dist":{"shasum":"a","integrity":"b","file_count":1,"unpacked_size":1,"tarball_key":"k"}}"#,
            r#"{"state":"live","manifest":[1],"dist":{"shasum":"a","integrity":"b","file_count":1,"unpacked_size":1,"tarball_key":"k"}}"#,
            r#"{"state":"live","manifest":{}}"#,
            r#"{"state":"unpublished"}"#,
            r#"{"state":"gone","at":"2026-01-01T00:00:00Z"}"#,
        ] {
            assert!(serde_json::from_str::<VersionState>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn touched_lists_whole_writes_and_says_when_it_cannot() {
        let v = |n: u64| Version::new(1, 0, n);
        let mut touched = Touched::default();
        assert_eq!(
            touched.after(0),
            None,
            "an older release's record lists nothing"
        );
        touched.record(5, [&v(0)]);
        assert_eq!(touched.after(4), Some(vec![&v(0)]));
        assert_eq!(touched.after(3), None, "revision 4 was not listed");
        touched.record(6, []);
        assert_eq!(
            touched.after(5),
            Some(vec![]),
            "a tag change touches no version"
        );
        let many: Vec<Version> = (1..=8).map(v).collect();
        touched.record(7, &many);
        assert_eq!(touched.after(6).map(|t| t.len()), Some(8));
        assert_eq!(touched.after(4), None, "revision 5's entry was dropped");
        touched.record(8, [&v(9)]);
        assert_eq!(touched.after(7), Some(vec![&v(9)]));
        assert_eq!(touched.after(6), None, "revision 7 was dropped whole");
    }
}
