//! Where everything lives in the table and the bucket: every DynamoDB key and attribute name and
//! every S3 key, as typed keys. Nothing else in the AWS backend spells one out, so a change of
//! layout is a change of this file (and of `infra/template.yaml`, which grants access by prefix).
//!
//! Table (partition key `pk`, sort key `sk`, both strings):
//! - `pk = <package>, sk = "A"`: the package record (`rev` number, `doc` JSON).
//! - `pk = <package>, sk = "V#<version>"`: one item per version (`state`, `published`, `doc` JSON
//!   of the manifest, `deprecated`, `unpublished_at`; items of older releases may hold a small
//!   `readme` too).
//! - `pk = "~<namespace>", sk = <id>`: key-value records (`value` bytes, `ttl`).
//!   Among them `~lease/<package>`, `sk = "snapshot"`: the lease of the one reader rebuilding
//!   the package's snapshot from the table (`ttl` 10 s on; removed when done).
//! - `pk = "~audit/day/<YYYY-MM-DD>"` and `"~audit/package/<name>"`, `sk` = the event's order
//!   key: the audit log (`event` JSON, `ttl`).
//!
//! - `pk = "~search/entry/<NN>"` (NN = 00..15, by a hash of the name), `sk = <package>`: the
//!   package's search entry (`entry` JSON), written with the package record.
//! - `pk = "~search/log"`, `sk = "<RFC 3339 µs>#<package>#<revision>"`: each write's search change
//!   (`change` JSON, `ttl` a week on), for other instances' indexes to follow.
//!
//! No package name starts with `~`, so the partitions never meet.
//!
//! Bucket: `tarballs/<name>/<version>-<sha512 prefix>.tgz`, `readmes/<name>/<version>.md` (every
//! README: apart from the version items, so reading a package's versions reads none),
//! `snapshots/<name>.json`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::NaiveDate;
use semver::Version;

use crate::domain::{PackageName, TarballKey};

/// Attribute names of the table's items.
pub mod attr {
    /// Partition key (string).
    pub const PK: &str = "pk";
    /// Sort key (string).
    pub const SK: &str = "sk";
    /// The package record's revision (number).
    pub(crate) const REVISION: &str = "rev";
    /// JSON: the package record, or the immutable part of a live version.
    pub(crate) const DOC: &str = "doc";
    /// A version's state: [`super::state::LIVE`] or [`super::state::UNPUBLISHED`].
    pub(crate) const STATE: &str = "state";
    /// When a version was published (RFC 3339).
    pub(crate) const PUBLISHED: &str = "published";
    /// When a version was unpublished (RFC 3339).
    pub(crate) const UNPUBLISHED_AT: &str = "unpublished_at";
    /// A live version's deprecation message.
    pub(crate) const DEPRECATED: &str = "deprecated";
    /// A live version's registry signatures, when signed after it was published (JSON text).
    pub(crate) const SIGNATURES: &str = "signatures";
    /// A live version's README, inline in items written by older releases.
    pub const README: &str = "readme";
    /// A key-value record's bytes.
    pub(crate) const VALUE: &str = "value";
    /// An audit event, JSON.
    pub(crate) const EVENT: &str = "event";
    /// A package's search entry, JSON.
    pub(crate) const ENTRY: &str = "entry";
    /// A search change of the log, JSON.
    pub(crate) const CHANGE: &str = "change";
    /// Expiry in Unix seconds: DynamoDB's TTL attribute (the table's `TimeToLiveSpecification`).
    pub const TTL: &str = "ttl";
}

/// Values of the [`attr::STATE`] attribute.
pub mod state {
    /// A version that can be installed.
    pub(crate) const LIVE: &str = "live";
    /// A tombstone: the version is gone and its number may not be reused.
    pub(crate) const UNPUBLISHED: &str = "unpublished";
}

/// Sort key of the package record.
const PACKAGE_SK: &str = "A";
/// Prefix of a version's sort key.
const VERSION_SK_PREFIX: &str = "V#";
/// Prefix of every partition that is not a package's.
const RESERVED_PK_PREFIX: &str = "~";
/// Prefix of the audit log's day partitions.
pub(crate) const AUDIT_DAY_PREFIX: &str = "~audit/day/";
/// Prefix of the audit log's package partitions.
const AUDIT_PACKAGE_PREFIX: &str = "~audit/package/";
/// Prefix of the search entries' partitions.
const SEARCH_ENTRY_PREFIX: &str = "~search/entry/";
/// The search change log's partition.
const SEARCH_LOG_PK: &str = "~search/log";
/// Partitions the search entries are spread over: each is read by its own paginated `Query`
/// when an instance loads its index, side by side.
pub(crate) const SEARCH_SHARDS: u8 = 16;

/// The search-entry partition of `name`: a stable hash of it (FNV-1a), so every instance and
/// release puts a package in the same one.
pub(crate) fn search_shard(name: &PackageName) -> u8 {
    let hash = name
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    u8::try_from(hash % u64::from(SEARCH_SHARDS)).unwrap_or(0)
}

/// A partition of the table: the value of `pk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition<'a> {
    /// A package's record and versions.
    Package(&'a PackageName),
    /// A key-value namespace.
    Kv(&'a str),
    /// One UTC day's audit events, every package's and none's.
    AuditDay(NaiveDate),
    /// A package's audit events.
    AuditPackage(&'a PackageName),
    /// One of the `SEARCH_SHARDS` partitions of search entries.
    SearchEntries(u8),
    /// The search change log.
    SearchLog,
}

impl Partition<'_> {
    /// The `pk` value.
    pub fn pk(&self) -> String {
        match self {
            Partition::Package(name) => name.to_string(),
            Partition::Kv(namespace) => format!("{RESERVED_PK_PREFIX}{namespace}"),
            Partition::AuditDay(day) => format!("{AUDIT_DAY_PREFIX}{}", day.format("%Y-%m-%d")),
            Partition::AuditPackage(name) => format!("{AUDIT_PACKAGE_PREFIX}{name}"),
            Partition::SearchEntries(shard) => format!("{SEARCH_ENTRY_PREFIX}{shard:02}"),
            Partition::SearchLog => SEARCH_LOG_PK.to_string(),
        }
    }
}

/// The primary key of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemKey<'a> {
    /// A package record.
    Package(&'a PackageName),
    /// A version of a package.
    Version(&'a PackageName, &'a Version),
    /// A key-value record.
    Kv {
        /// Its namespace (the partition).
        namespace: &'a str,
        /// Its id within the namespace.
        id: &'a str,
    },
    /// An audit event in one of its partitions (`Partition::AuditDay` or `AuditPackage`).
    Audit {
        /// The day's or the package's partition.
        partition: Partition<'a>,
        /// The event's order key.
        order: &'a str,
    },
    /// A package's search entry.
    SearchEntry(&'a PackageName),
    /// One change of the search log, by its order key.
    SearchLog(&'a str),
}

impl ItemKey<'_> {
    /// The `pk` value.
    pub(crate) fn pk(&self) -> String {
        match self {
            ItemKey::Package(name) | ItemKey::Version(name, _) => Partition::Package(name).pk(),
            ItemKey::Kv { namespace, .. } => Partition::Kv(namespace).pk(),
            ItemKey::Audit { partition, .. } => partition.pk(),
            ItemKey::SearchEntry(name) => Partition::SearchEntries(search_shard(name)).pk(),
            ItemKey::SearchLog(_) => Partition::SearchLog.pk(),
        }
    }

    /// The `sk` value.
    pub(crate) fn sk(&self) -> String {
        match self {
            ItemKey::Package(_) => PackageSortKey::Record.to_string(),
            ItemKey::Version(_, version) => format!("{VERSION_SK_PREFIX}{version}"),
            ItemKey::Kv { id, .. } => (*id).to_string(),
            ItemKey::Audit { order, .. } => (*order).to_string(),
            ItemKey::SearchEntry(name) => name.to_string(),
            ItemKey::SearchLog(order) => (*order).to_string(),
        }
    }

    /// The key as attributes: a `GetItem`'s key, or the start of an item to put.
    pub(crate) fn attributes(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (attr::PK.to_string(), AttributeValue::S(self.pk())),
            (attr::SK.to_string(), AttributeValue::S(self.sk())),
        ])
    }
}

/// What an item of a package's partition is, by its sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PackageSortKey {
    /// The package record.
    Record,
    /// A version item.
    Version(Version),
}

impl PackageSortKey {
    /// Reads a sort key of a package partition: `Ok(None)` for one that is neither (a layout
    /// of a later release, skipped), an error for a version key whose version does not parse
    /// (a corrupt item, not to be skipped silently).
    pub(crate) fn parse(sk: &str) -> Result<Option<Self>, semver::Error> {
        if sk == PACKAGE_SK {
            return Ok(Some(PackageSortKey::Record));
        }
        match sk.strip_prefix(VERSION_SK_PREFIX) {
            Some(version) => Version::parse(version).map(|v| Some(PackageSortKey::Version(v))),
            None => Ok(None),
        }
    }
}

impl std::fmt::Display for PackageSortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackageSortKey::Record => f.write_str(PACKAGE_SK),
            PackageSortKey::Version(v) => write!(f, "{VERSION_SK_PREFIX}{v}"),
        }
    }
}

/// Prefix of every tarball's object key.
const TARBALLS_PREFIX: &str = "tarballs/";
/// Prefix of the object keys of READMEs.
const READMES_PREFIX: &str = "readmes/";
/// Prefix of the packages' document snapshots.
const SNAPSHOTS_PREFIX: &str = "snapshots/";
/// Where the pull-through cache keeps upstream documents (apart from published packages).
const UPSTREAM_DOCUMENTS_PREFIX: &str = "upstream/documents/";
/// Where the pull-through cache keeps upstream tarballs (never listed by the sweep).
const UPSTREAM_TARBALLS_PREFIX: &str = "upstream/tarballs/";

/// The key of one object in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKey<'a> {
    /// A tarball.
    Tarball(&'a TarballKey),
    /// A version's README.
    Readme(&'a PackageName, &'a Version),
    /// A package's document snapshot.
    Snapshot(&'a PackageName),
    /// An upstream registry's document of a package, in one view (`upstream`).
    UpstreamDocument(&'a PackageName, &'a str),
    /// A tarball fetched from an upstream registry.
    UpstreamTarball(&'a TarballKey),
}

impl ObjectKey<'_> {
    /// The prefix under which every tarball is stored, for listing them.
    pub const TARBALLS: &'static str = TARBALLS_PREFIX;
    /// The prefix under which every snapshot is stored, for listing them.
    pub const SNAPSHOTS: &'static str = SNAPSHOTS_PREFIX;

    /// The tarball key of a listed object key, if it is a tarball's.
    pub(crate) fn tarball_of(object_key: &str) -> Option<TarballKey> {
        let key = object_key.strip_prefix(TARBALLS_PREFIX)?;
        TarballKey::parse(key).map(|(key, _, _)| key)
    }
}

impl std::fmt::Display for ObjectKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKey::Tarball(key) => write!(f, "{TARBALLS_PREFIX}{}", key.as_str()),
            ObjectKey::Readme(name, version) => write!(f, "{READMES_PREFIX}{name}/{version}.md"),
            ObjectKey::Snapshot(name) => write!(f, "{SNAPSHOTS_PREFIX}{name}.json"),
            ObjectKey::UpstreamDocument(name, view) => {
                write!(f, "{UPSTREAM_DOCUMENTS_PREFIX}{name}/{view}.json")
            }
            ObjectKey::UpstreamTarball(key) => {
                write!(f, "{UPSTREAM_TARBALLS_PREFIX}{}", key.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> PackageName {
        PackageName::parse(s).unwrap()
    }

    // The layout is what stored data and the stack's IAM policies (`infra/template.yaml`) were
    // written against: these spell it out once, so that a change to it is deliberate.
    #[test]
    fn item_keys_are_the_stored_layout() {
        let pkg = name("@acme/a");
        let v = Version::new(1, 2, 3);
        let day = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        let cases = [
            (ItemKey::Package(&pkg), "@acme/a", "A"),
            (ItemKey::Version(&pkg, &v), "@acme/a", "V#1.2.3"),
            (
                ItemKey::Kv {
                    namespace: "tokens",
                    id: "x",
                },
                "~tokens",
                "x",
            ),
            (
                ItemKey::Audit {
                    partition: Partition::AuditDay(day),
                    order: "o",
                },
                "~audit/day/2026-01-02",
                "o",
            ),
            (
                ItemKey::Audit {
                    partition: Partition::AuditPackage(&pkg),
                    order: "o",
                },
                "~audit/package/@acme/a",
                "o",
            ),
            (ItemKey::SearchEntry(&pkg), "~search/entry/13", "@acme/a"),
            (
                ItemKey::SearchLog("t#@acme/a#2"),
                "~search/log",
                "t#@acme/a#2",
            ),
        ];
        for (key, pk, sk) in cases {
            assert_eq!((key.pk().as_str(), key.sk().as_str()), (pk, sk), "{key:?}");
            let attrs = key.attributes();
            assert_eq!(attrs["pk"].as_s().unwrap(), pk);
            assert_eq!(attrs["sk"].as_s().unwrap(), sk);
        }
        assert!(Partition::AuditDay(day).pk().starts_with(AUDIT_DAY_PREFIX));
    }

    #[test]
    fn package_sort_keys_round_trip() {
        let v = Version::parse("1.0.0-beta.1+build").unwrap();
        for sk in [PackageSortKey::Record, PackageSortKey::Version(v)] {
            assert_eq!(PackageSortKey::parse(&sk.to_string()).unwrap(), Some(sk));
        }
        assert!(PackageSortKey::parse("V#not-a-version").is_err());
        assert_eq!(PackageSortKey::parse("B").unwrap(), None);
    }

    #[test]
    fn object_keys_are_the_stored_layout() {
        let pkg = name("@acme/a");
        let v = Version::new(1, 0, 0);
        let tarball = TarballKey::new(&pkg, &v, &"ab".repeat(64));
        let object = ObjectKey::Tarball(&tarball).to_string();
        assert_eq!(object, format!("tarballs/{}", tarball.as_str()));
        assert!(object.starts_with(ObjectKey::TARBALLS));
        assert_eq!(ObjectKey::tarball_of(&object), Some(tarball));
        assert_eq!(ObjectKey::tarball_of("readmes/x"), None);
        assert_eq!(
            ObjectKey::Readme(&pkg, &v).to_string(),
            "readmes/@acme/a/1.0.0.md"
        );
        assert_eq!(
            ObjectKey::Snapshot(&pkg).to_string(),
            "snapshots/@acme/a.json"
        );
    }
}
