//! Validation of the documents clients PUT: publishes (with a tarball) and metadata updates
//! (deprecations, stars, versions removed by `npm unpublish`).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use bytes::Bytes;
use semver::Version;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::integrity::Digests;
use super::package::{Dist, LiveVersion, PackageDocument, TarballKey, VersionState};
use super::tarball::{self, TarballError, TarballLimits};
use super::{DistTag, Manifest, PackageName, TagError};

/// Why a PUT document is refused. Every variant is a client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("'{field}' in the body is '{found}' but the URL names '{expected}'")]
    NameMismatch {
        field: &'static str,
        found: String,
        expected: String,
    },
    #[error("publish must contain exactly one version, found {0}")]
    VersionCount(usize),
    #[error("publish must contain exactly one attachment, found {0}")]
    AttachmentCount(usize),
    #[error("invalid version '{0}': {1}")]
    BadVersion(String, String),
    #[error("version '{0}' has build metadata; npm treats 1.0.0+a and 1.0.0 as the same version")]
    BuildMetadata(String),
    #[error("manifest of version {key} says version '{found}'")]
    ManifestVersion { key: String, found: String },
    #[error("attachment is named '{found}' but must be '{expected}'")]
    AttachmentName { found: String, expected: String },
    #[error("attachment data is not valid base64")]
    BadBase64,
    #[error("attachment length says {declared} bytes but the data is {actual} bytes")]
    Length { declared: u64, actual: u64 },
    #[error("dist.shasum '{declared}' does not match the tarball (sha1 {actual})")]
    Shasum { declared: String, actual: String },
    #[error("dist.integrity '{declared}' does not match the tarball ({actual})")]
    Integrity { declared: String, actual: String },
    #[error("{0}")]
    Tarball(#[from] TarballError),
    #[error(
        "package.json in the tarball has {field} '{found}' but the publish is for '{expected}'"
    )]
    TarballMismatch {
        field: &'static str,
        found: String,
        expected: String,
    },
    #[error("invalid dist-tag: {0}")]
    Tag(#[from] TagError),
    #[error("dist-tag '{tag}' must point at the published version {expected}, not '{found}'")]
    TagTarget {
        tag: String,
        found: String,
        expected: String,
    },
    #[error("'{0}' must be {1}")]
    FieldType(&'static str, &'static str),
    #[error(
        "version {0} is not published here; add versions with npm publish, which attaches the tarball"
    )]
    UnknownVersion(String),
    #[error("dist-tag '{0}' would point at version {1}, which does not exist")]
    DanglingTag(String, String),
    #[error("the 'latest' dist-tag cannot be removed")]
    LatestRemoved,
    #[error(
        "the version's manifest (package.json without its README) is {0} bytes; the limit is {MAX_MANIFEST_BYTES}"
    )]
    ManifestTooLarge(usize),
}

/// Largest manifest a version may have, README excluded: keeps every version record well inside
/// DynamoDB's 400 KB item limit (READMEs are stored apart), on every backend alike.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// The publish document `npm publish` sends.
#[derive(Debug, Deserialize)]
pub struct PublishDocument {
    /// Must equal the URL's name.
    #[serde(rename = "_id")]
    pub id: Option<String>,
    /// Must equal the URL's name.
    pub name: Option<String>,
    /// Tags to point at the new version.
    #[serde(rename = "dist-tags", default)]
    pub dist_tags: Option<Map<String, Value>>,
    /// Exactly one version.
    pub versions: Option<Map<String, Value>>,
    /// Exactly one tarball.
    #[serde(rename = "_attachments")]
    pub attachments: Option<Map<String, Value>>,
    /// Package README, which some clients send at the top level.
    pub readme: Option<Value>,
    /// Stars, in metadata updates.
    pub users: Option<Map<String, Value>>,
    /// The revision the client read, in metadata updates.
    #[serde(rename = "_rev")]
    pub rev: Option<String>,
}

impl PublishDocument {
    /// True when the document carries a tarball, i.e. is a publish rather than a metadata update.
    pub fn is_publish(&self) -> bool {
        self.attachments.as_ref().is_some_and(|a| !a.is_empty())
    }

    fn check_names(&self, name: &PackageName) -> Result<(), PublishError> {
        for (field, value) in [("name", &self.name), ("_id", &self.id)] {
            if let Some(found) = value
                && found != name.as_str()
            {
                return Err(PublishError::NameMismatch {
                    field,
                    found: found.clone(),
                    expected: name.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A publish that passed every check: safe to store.
#[derive(Debug, Clone)]
pub struct ValidPublish {
    /// The version being published.
    pub version: Version,
    /// Tags to point at it (at least one).
    pub tags: Vec<DistTag>,
    /// Tarball bytes.
    pub tarball: Bytes,
    /// The version's record contents.
    pub live: LiveVersion,
}

/// Parses a semver version as npm publishes them (no build metadata).
pub fn parse_version(text: &str) -> Result<Version, PublishError> {
    let v = Version::parse(text)
        .map_err(|e| PublishError::BadVersion(text.to_string(), e.to_string()))?;
    if !v.build.is_empty() {
        return Err(PublishError::BuildMetadata(text.to_string()));
    }
    Ok(v)
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, PublishError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(PublishError::FieldType(field, "a string")),
    }
}

/// Checks a publish document against the URL's name and the tarball it carries.
pub fn validate_publish(
    name: &PackageName,
    doc: PublishDocument,
    limits: TarballLimits,
) -> Result<ValidPublish, PublishError> {
    doc.check_names(name)?;
    let versions = doc.versions.unwrap_or_default();
    if versions.len() != 1 {
        return Err(PublishError::VersionCount(versions.len()));
    }
    let attachments = doc.attachments.unwrap_or_default();
    if attachments.len() != 1 {
        return Err(PublishError::AttachmentCount(attachments.len()));
    }
    let (version_key, manifest) = versions
        .into_iter()
        .next()
        .ok_or(PublishError::VersionCount(0))?;
    let version = parse_version(&version_key)?;
    let Value::Object(mut manifest) = manifest else {
        return Err(PublishError::FieldType("versions[version]", "an object"));
    };
    match string_field(&manifest, "name")? {
        Some(n) if n == name.as_str() => {}
        found => {
            return Err(PublishError::NameMismatch {
                field: "versions[version].name",
                found: found.unwrap_or("").to_string(),
                expected: name.to_string(),
            });
        }
    }
    match string_field(&manifest, "version")? {
        Some(v) if v == version_key => {}
        found => {
            return Err(PublishError::ManifestVersion {
                key: version_key.clone(),
                found: found.unwrap_or("").to_string(),
            });
        }
    }

    // The attachment: named for the full package name and version, as libnpmpublish does.
    let (attachment_name, attachment) = attachments
        .into_iter()
        .next()
        .ok_or(PublishError::AttachmentCount(0))?;
    let expected_name = format!("{name}-{version}.tgz");
    if attachment_name != expected_name {
        return Err(PublishError::AttachmentName {
            found: attachment_name,
            expected: expected_name,
        });
    }
    let Value::Object(attachment) = attachment else {
        return Err(PublishError::FieldType("_attachments[file]", "an object"));
    };
    let data = string_field(&attachment, "data")?.ok_or(PublishError::FieldType(
        "_attachments[file].data",
        "a base64 string",
    ))?;
    let tarball = base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|_| PublishError::BadBase64)?;
    let declared_length = attachment.get("length").and_then(Value::as_u64);
    // The base64 text is as large as the tarball again: gone before the tarball is inspected.
    drop(attachment);
    let declared_length = declared_length.ok_or(PublishError::FieldType(
        "_attachments[file].length",
        "a non-negative integer",
    ))?;
    if declared_length != tarball.len() as u64 {
        return Err(PublishError::Length {
            declared: declared_length,
            actual: tarball.len() as u64,
        });
    }

    // Digests: recomputed, and compared with whatever the client declared.
    let digests = Digests::of(&tarball);
    let declared_dist = match manifest.get("dist") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d.clone(),
        Some(_) => return Err(PublishError::FieldType("dist", "an object")),
    };
    if let Some(shasum) = string_field(&declared_dist, "shasum")?
        && !shasum.eq_ignore_ascii_case(&digests.sha1_hex)
    {
        return Err(PublishError::Shasum {
            declared: shasum.to_string(),
            actual: digests.sha1_hex,
        });
    }
    if let Some(integrity) = string_field(&declared_dist, "integrity")?
        && !digests.matches_sri(integrity)
    {
        return Err(PublishError::Integrity {
            declared: integrity.to_string(),
            actual: digests.integrity,
        });
    }

    let summary = tarball::inspect(&tarball, limits)?;
    for (field, expected) in [("name", name.to_string()), ("version", version.to_string())] {
        let found = summary
            .manifest
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("");
        // The tarball may carry a loose version (`v1.0.0`); npm cleans it before publishing.
        let same = found == expected
            || (field == "version"
                && Version::parse(found.trim_start_matches(['v', '=']))
                    .is_ok_and(|v| v == version));
        if !same {
            return Err(PublishError::TarballMismatch {
                field,
                found: found.to_string(),
                expected,
            });
        }
    }

    let mut tags = Vec::new();
    for (tag, target) in doc.dist_tags.unwrap_or_default() {
        let tag = DistTag::parse(&tag)?;
        if target.as_str() != Some(version_key.as_str()) {
            return Err(PublishError::TagTarget {
                tag: tag.to_string(),
                found: target
                    .as_str()
                    .map_or_else(|| target.to_string(), str::to_string),
                expected: version_key.clone(),
            });
        }
        tags.push(tag);
    }
    if tags.is_empty() {
        tags.push(DistTag::latest());
    }

    let readme = match manifest.remove("readme") {
        Some(Value::String(s)) => Some(s),
        _ => doc.readme.and_then(|r| r.as_str().map(str::to_string)),
    };
    let readme_filename = match manifest.remove("readmeFilename") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let deprecated = match manifest.remove("deprecated") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    for derived in ["dist", "_id", "_rev", "_attachments"] {
        manifest.remove(derived);
    }
    let manifest = Manifest::from_map(&manifest)
        .map_err(|_| PublishError::FieldType("versions[version]", "a JSON object"))?;
    if manifest.json().len() > MAX_MANIFEST_BYTES {
        return Err(PublishError::ManifestTooLarge(manifest.json().len()));
    }
    let dist = Dist {
        shasum: digests.sha1_hex,
        integrity: digests.integrity,
        file_count: summary.file_count,
        unpacked_size: summary.unpacked_size,
        tarball_key: TarballKey::new(name, &version, &digests.sha512_hex),
    };
    Ok(ValidPublish {
        version,
        tags,
        tarball: Bytes::from(tarball),
        live: LiveVersion {
            manifest,
            dist,
            readme,
            readme_filename,
            deprecated,
        },
    })
}

/// The changes a metadata PUT (no attachments) may make, found by comparing it with what is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataChanges {
    /// Versions the document no longer lists (`npm unpublish name@version`).
    pub unpublish: Vec<Version>,
    /// New deprecation messages (`None` removes one).
    pub deprecate: Vec<(Version, Option<String>)>,
    /// The new dist-tags, when versions are removed (npm moves `latest` itself).
    pub dist_tags: Option<BTreeMap<DistTag, Version>>,
    /// The new set of stars, when it changed.
    pub stars: Option<BTreeSet<String>>,
}

impl MetadataChanges {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        self.unpublish.is_empty()
            && self.deprecate.is_empty()
            && self.dist_tags.is_none()
            && self.stars.is_none()
    }
}

/// Compares a metadata PUT with the stored package. Only the changes npm's commands make are taken
/// (removing versions, deprecating, starring); anything else in the document is ignored, and a
/// version that is not stored is an error, since versions are only added by publishing.
pub fn diff_metadata(
    name: &PackageName,
    stored: &PackageDocument,
    doc: PublishDocument,
) -> Result<MetadataChanges, PublishError> {
    doc.check_names(name)?;
    let mut changes = MetadataChanges::default();
    let live: BTreeMap<&Version, &LiveVersion> =
        stored.live().into_iter().map(|(v, _, l)| (v, l)).collect();
    if let Some(versions) = &doc.versions {
        let mut listed = BTreeSet::new();
        for (key, manifest) in versions {
            let version = parse_version(key)?;
            let Some(current) = live.get(&version) else {
                return Err(PublishError::UnknownVersion(key.clone()));
            };
            let wanted = match manifest.get("deprecated") {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
            if wanted != current.deprecated {
                changes.deprecate.push((version.clone(), wanted));
            }
            listed.insert(version);
        }
        changes.unpublish = live
            .keys()
            .filter(|v| !listed.contains(*v))
            .map(|v| (*v).clone())
            .collect();
        if !changes.unpublish.is_empty() {
            changes.dist_tags = Some(dist_tags_after_removal(
                stored,
                doc.dist_tags.as_ref(),
                &listed,
            )?);
        }
    }
    if let Some(users) = &doc.users {
        let stars: BTreeSet<String> = users
            .iter()
            .filter(|(_, v)| v.as_bool().unwrap_or(false))
            .map(|(u, _)| u.clone())
            .collect();
        if stars != stored.package.stars {
            changes.stars = Some(stars);
        }
    }
    Ok(changes)
}

/// The dist-tags once `remaining` are the only versions: the client's tags when they are valid,
/// otherwise the stored ones minus removed targets, with `latest` moved to the highest version.
fn dist_tags_after_removal(
    stored: &PackageDocument,
    sent: Option<&Map<String, Value>>,
    remaining: &BTreeSet<Version>,
) -> Result<BTreeMap<DistTag, Version>, PublishError> {
    let mut tags = BTreeMap::new();
    match sent {
        Some(sent) => {
            for (tag, target) in sent {
                let tag = DistTag::parse(tag)?;
                let target_text = target.as_str().ok_or(PublishError::FieldType(
                    "dist-tags",
                    "tag → version strings",
                ))?;
                let version = parse_version(target_text)?;
                if !remaining.contains(&version) {
                    return Err(PublishError::DanglingTag(
                        tag.to_string(),
                        target_text.to_string(),
                    ));
                }
                tags.insert(tag, version);
            }
        }
        None => {
            for (tag, version) in &stored.package.dist_tags {
                if remaining.contains(version) {
                    tags.insert(tag.clone(), version.clone());
                }
            }
        }
    }
    if let std::collections::btree_map::Entry::Vacant(e) = tags.entry(DistTag::latest()) {
        match remaining
            .iter()
            .filter(|v| v.pre.is_empty())
            .max()
            .or(remaining.iter().max())
        {
            Some(highest) => {
                e.insert(highest.clone());
            }
            None => return Err(PublishError::LatestRemoved),
        }
    }
    Ok(tags)
}

/// Whether a stored version record blocks publishing `version` again.
pub fn is_tombstone(state: &VersionState) -> bool {
    matches!(state, VersionState::Unpublished { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tarball::tests::tgz;
    use serde_json::json;

    fn doc_for(name: &str, version: &str, tarball: &[u8]) -> Value {
        let d = Digests::of(tarball);
        json!({
            "_id": name, "name": name,
            "dist-tags": {"latest": version},
            "versions": {version: {"name": name, "version": version, "dist": {"shasum": d.sha1_hex, "integrity": d.integrity}}},
            "_attachments": {format!("{name}-{version}.tgz"): {
                "content_type": "application/octet-stream",
                "data": base64::engine::general_purpose::STANDARD.encode(tarball),
                "length": tarball.len()
            }}
        })
    }

    fn validate(v: Value) -> Result<ValidPublish, PublishError> {
        let name = PackageName::parse("@s/p").unwrap();
        validate_publish(
            &name,
            serde_json::from_value(v).unwrap(),
            TarballLimits::default(),
        )
    }

    #[test]
    fn valid_publish_passes() {
        let t = tgz(&[(
            "package/package.json",
            br#"{"name":"@s/p","version":"1.0.0"}"#,
        )]);
        let p = validate(doc_for("@s/p", "1.0.0", &t)).unwrap();
        assert_eq!(p.version.to_string(), "1.0.0");
        assert_eq!(p.tags, vec![DistTag::latest()]);
        assert!(p.live.dist.tarball_key.as_str().starts_with("@s/p/1.0.0-"));
    }

    #[test]
    fn mismatches_are_refused() {
        let t = tgz(&[(
            "package/package.json",
            br#"{"name":"@s/p","version":"1.0.1"}"#,
        )]);
        assert!(matches!(
            validate(doc_for("@s/p", "1.0.0", &t)),
            Err(PublishError::TarballMismatch {
                field: "version",
                ..
            })
        ));
        let t = tgz(&[(
            "package/package.json",
            br#"{"name":"@s/p","version":"1.0.0"}"#,
        )]);
        let mut d = doc_for("@s/p", "1.0.0", &t);
        d["versions"]["1.0.0"]["dist"]["shasum"] = json!("0000");
        assert!(matches!(validate(d), Err(PublishError::Shasum { .. })));
        let mut d = doc_for("@s/p", "1.0.0", &t);
        d["_attachments"]["@s/p-1.0.0.tgz"]["length"] = json!(1);
        assert!(matches!(validate(d), Err(PublishError::Length { .. })));
    }
}
