//! The item codec: domain records to DynamoDB items and back, by the names in `layout`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::errors::internal;
use super::layout::{ItemKey, PackageSortKey, attr, state};
use crate::domain::{LiveVersion, PackageName, PackageRecord, VersionRecord, VersionState};
use crate::storage::StoreError;

/// One item's attributes, as the SDK has them.
pub(super) type Item = HashMap<String, AttributeValue>;

/// The immutable part of a live version, as stored in its item's `doc`.
#[derive(Serialize, Deserialize)]
struct StoredLive {
    manifest: crate::domain::Manifest,
    dist: crate::domain::Dist,
    #[serde(default)]
    readme_filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    has_readme: Option<bool>,
}

/// Times as stored: RFC 3339 in UTC, milliseconds.
pub(super) fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A string attribute, if present.
pub(super) fn s_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn time_attr(item: &Item, name: &str) -> Result<DateTime<Utc>, StoreError> {
    let text = s_attr(item, name).ok_or_else(|| internal(format!("item has no {name}")))?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(internal)
}

/// Expiry as DynamoDB's TTL wants it: Unix seconds.
pub(super) fn ttl(expires: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N(expires.timestamp().to_string())
}

/// The package record's item.
pub(super) fn encode_package(package: &PackageRecord) -> Result<Item, StoreError> {
    let mut item = ItemKey::Package(&package.name).attributes();
    item.insert(
        attr::REVISION.into(),
        AttributeValue::N(package.revision.to_string()),
    );
    item.insert(
        attr::DOC.into(),
        AttributeValue::S(serde_json::to_string(package).map_err(internal)?),
    );
    Ok(item)
}

/// Decodes a package record's item.
pub(super) fn decode_package(item: &Item) -> Result<PackageRecord, StoreError> {
    let doc = s_attr(item, attr::DOC).ok_or_else(|| internal("package item has no doc"))?;
    serde_json::from_str(doc).map_err(internal)
}

/// A version's item (its README is an object of its own: `ObjectKey::Readme`).
pub(super) fn encode_version(
    name: &PackageName,
    record: &VersionRecord,
) -> Result<Item, StoreError> {
    let mut item = ItemKey::Version(name, &record.version).attributes();
    item.insert(
        attr::PUBLISHED.into(),
        AttributeValue::S(iso(&record.published)),
    );
    match &record.state {
        VersionState::Live(live) => {
            let stored = StoredLive {
                manifest: live.manifest.clone(),
                dist: live.dist.clone(),
                readme_filename: live.readme_filename.clone(),
                has_readme: live.has_readme,
            };
            item.insert(attr::STATE.into(), AttributeValue::S(state::LIVE.into()));
            if let Some(d) = &live.deprecated {
                item.insert(attr::DEPRECATED.into(), AttributeValue::S(d.clone()));
            }
            item.insert(
                attr::DOC.into(),
                AttributeValue::S(serde_json::to_string(&stored).map_err(internal)?),
            );
        }
        VersionState::Unpublished { at } => {
            item.insert(
                attr::STATE.into(),
                AttributeValue::S(state::UNPUBLISHED.into()),
            );
            item.insert(attr::UNPUBLISHED_AT.into(), AttributeValue::S(iso(at)));
        }
    }
    Ok(item)
}

/// Decodes a version item (an item of an older release may hold a README too: left out).
pub(super) fn decode_version(item: &Item) -> Result<VersionRecord, StoreError> {
    let sk = s_attr(item, attr::SK).ok_or_else(|| internal("item has no sk"))?;
    let Some(PackageSortKey::Version(version)) = PackageSortKey::parse(sk).map_err(internal)?
    else {
        return Err(internal(format!("not a version item: {sk:?}")));
    };
    let published = time_attr(item, attr::PUBLISHED)?;
    let state = match s_attr(item, attr::STATE) {
        Some(state::LIVE) => {
            let doc = s_attr(item, attr::DOC).ok_or_else(|| internal("live version has no doc"))?;
            let stored: StoredLive = serde_json::from_str(doc).map_err(internal)?;
            let mut dist = stored.dist;
            if let Some(signatures) = s_attr(item, attr::SIGNATURES) {
                dist.signatures = serde_json::from_str(signatures).map_err(internal)?;
            }
            VersionState::Live(Box::new(LiveVersion {
                manifest: stored.manifest,
                dist,
                readme_filename: stored.readme_filename,
                has_readme: stored.has_readme,
                deprecated: s_attr(item, attr::DEPRECATED).map(str::to_string),
            }))
        }
        Some(state::UNPUBLISHED) => VersionState::Unpublished {
            at: time_attr(item, attr::UNPUBLISHED_AT)?,
        },
        other => return Err(internal(format!("unknown version state {other:?}"))),
    };
    Ok(VersionRecord {
        version,
        published,
        state,
    })
}

/// A key-value record's item.
pub(super) fn encode_kv(
    namespace: &str,
    id: &str,
    value: &[u8],
    expires: Option<DateTime<Utc>>,
) -> Item {
    let mut item = ItemKey::Kv { namespace, id }.attributes();
    item.insert(
        attr::VALUE.into(),
        AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(value)),
    );
    if let Some(expires) = expires {
        item.insert(attr::TTL.into(), ttl(expires));
    }
    item
}

/// The value of a key-value item, unless its TTL has passed (DynamoDB deletes expired items
/// only eventually).
pub(super) fn decode_kv(item: &Item) -> Option<Vec<u8>> {
    let expired = item
        .get(attr::TTL)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|t| t <= Utc::now().timestamp());
    if expired {
        return None;
    }
    item.get(attr::VALUE)
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref().to_vec())
}

/// An audit event's item in one of its partitions (`key` is an `ItemKey::Audit`).
pub(super) fn encode_audit(key: ItemKey<'_>, json: &str, expires: Option<DateTime<Utc>>) -> Item {
    let mut item = key.attributes();
    item.insert(attr::EVENT.into(), AttributeValue::S(json.to_string()));
    if let Some(expires) = expires {
        item.insert(attr::TTL.into(), ttl(expires));
    }
    item
}

/// The event JSON of an audit item.
pub(super) fn audit_event(item: &Item) -> Option<&str> {
    s_attr(item, attr::EVENT)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use semver::Version;

    use super::*;

    #[test]
    fn tombstones_round_trip() {
        let name = PackageName::parse("@acme/a").unwrap();
        let record = VersionRecord {
            version: Version::new(1, 0, 0),
            published: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            state: VersionState::Unpublished {
                at: Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap(),
            },
        };
        let item = encode_version(&name, &record).unwrap();
        assert_eq!(decode_version(&item).unwrap(), record);
    }

    #[test]
    fn package_records_round_trip() {
        let mut record = PackageRecord::new(PackageName::parse("plain").unwrap(), Utc::now());
        record.revision = 42;
        let item = encode_package(&record).unwrap();
        assert_eq!(item[attr::REVISION].as_n().unwrap(), "42");
        assert_eq!(decode_package(&item).unwrap(), record);
    }

    #[test]
    fn expired_kv_records_read_as_absent() {
        let live = encode_kv("ns", "id", b"v", Some(Utc::now() + Duration::hours(1)));
        assert_eq!(decode_kv(&live).as_deref(), Some(&b"v"[..]));
        let forever = encode_kv("ns", "id", b"v", None);
        assert_eq!(decode_kv(&forever).as_deref(), Some(&b"v"[..]));
        let expired = encode_kv("ns", "id", b"v", Some(Utc::now() - Duration::seconds(1)));
        assert_eq!(decode_kv(&expired), None);
    }
}
