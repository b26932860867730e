//! Validation of the documents clients PUT: publishes (with a tarball) and metadata updates
//! (deprecations, stars, versions removed by `npm unpublish`).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use bytes::Bytes;
use semver::Version;
use serde::Deserialize;
use serde_json::value::RawValue;
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
    #[error("{0}")]
    ManifestConfusion(#[from] super::confusion::ManifestMismatch),
    #[error("provenance refused: {0}")]
    Provenance(#[from] super::provenance::ProvenanceError),
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

/// Why a PUT body could not be read as a package document (before any field is checked).
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Nothing was sent.
    #[error("request body is empty; expected JSON")]
    Empty,
    /// Not JSON at all.
    #[error("request body is not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// JSON, but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// An object whose fields have the wrong types.
    #[error("request body is not a valid package document: {0}")]
    Shape(serde_json::Error),
    /// A field has a bad value.
    #[error(transparent)]
    Invalid(#[from] PublishError),
}

/// What `PUT /NAME` carries as it is read off the wire: small fields decoded, every version's
/// manifest and the attachment's data left as JSON text borrowed from the body.
#[derive(Deserialize)]
struct RawPut<'a> {
    #[serde(rename = "_id")]
    id: Option<String>,
    name: Option<String>,
    #[serde(rename = "dist-tags", default)]
    dist_tags: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    versions: Option<BTreeMap<String, &'a RawValue>>,
    #[serde(rename = "_attachments", borrow, default)]
    attachments: Option<BTreeMap<String, &'a RawValue>>,
    #[serde(borrow, default)]
    readme: Option<&'a RawValue>,
    users: Option<Map<String, Value>>,
    #[serde(rename = "_rev")]
    rev: Option<String>,
}

#[derive(Deserialize)]
struct RawAttachment<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    length: Option<Value>,
}

/// The one field of a version a metadata update may change.
#[derive(Deserialize)]
struct VersionUpdate {
    deprecated: Option<Value>,
}

/// A `PUT /NAME` body: a publish (it carries a tarball) or a metadata update.
#[derive(Debug)]
pub enum PutDocument {
    /// `npm publish`: one new version and its tarball, still base64 text.
    Publish(PendingPublish),
    /// `npm deprecate`, `npm star`, `npm unpublish name@version`.
    Update(MetadataUpdate),
}

/// A metadata update, reduced to what may change: deprecations, the version list, dist-tags, stars.
#[derive(Debug, Default)]
pub struct MetadataUpdate {
    /// Each listed version and the deprecation message it asks for (`None`: not deprecated).
    pub versions: Option<BTreeMap<String, Option<String>>>,
    /// Dist-tags as sent.
    pub dist_tags: Option<Map<String, Value>>,
    /// Stars as sent (`user → true`).
    pub users: Option<Map<String, Value>>,
    /// The revision the client read.
    pub rev: Option<String>,
}

impl MetadataUpdate {
    /// Whether this is npm 1.3's first step of a publish: a document with no versions, no
    /// dist-tags and no revision, which creates the package (CouchDB: the document) if new.
    pub fn is_empty_document(&self) -> bool {
        self.versions.as_ref().is_some_and(BTreeMap::is_empty)
            && self.dist_tags.as_ref().is_some_and(Map::is_empty)
            && self.rev.is_none()
    }
}

/// A publish whose small fields passed every check that needs no tarball. The tarball is still
/// the attachment's base64 text, a slice of the request body: it is decoded, hashed and unpacked
/// (`verify`) only once the caller is authorised.
#[derive(Debug)]
pub struct PendingPublish {
    /// The version being published.
    pub version: Version,
    manifest: Map<String, Value>,
    tags: Vec<DistTag>,
    top_readme: Option<String>,
    /// The attachment's `data` as JSON text (a string literal, quotes included).
    data: Bytes,
    declared_length: Option<Value>,
    /// The provenance bundle's JSON text (`npm publish --provenance`), not yet verified.
    provenance: Option<String>,
}

/// Parses a `PUT /NAME` body. Cheap whatever the body's size: a publish's tarball is not decoded
/// and a metadata update's manifests are skimmed for their one field that matters.
pub fn parse_put(name: &PackageName, body: Bytes) -> Result<PutDocument, DocumentError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(DocumentError::Empty),
        Some(b'{') => {}
        Some(_) => {
            // Tell "not JSON" from "JSON, but not an object".
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    Ok(_) => DocumentError::NotAnObject,
                    Err(e) => DocumentError::Syntax(e),
                },
            );
        }
    }
    let raw: RawPut<'_> = serde_json::from_slice(&body).map_err(|e| {
        // A shape error may hide a syntax error further on (or nesting too deep to read).
        match (
            e.classify(),
            serde_json::from_slice::<serde::de::IgnoredAny>(&body),
        ) {
            (serde_json::error::Category::Data, Ok(_)) => DocumentError::Shape(e),
            (serde_json::error::Category::Data, Err(syntax)) => DocumentError::Syntax(syntax),
            _ => DocumentError::Syntax(e),
        }
    })?;
    for (field, value) in [("name", &raw.name), ("_id", &raw.id)] {
        if let Some(found) = value
            && found != name.as_str()
        {
            return Err(PublishError::NameMismatch {
                field,
                found: found.clone(),
                expected: name.to_string(),
            }
            .into());
        }
    }
    if raw.attachments.as_ref().is_some_and(|a| !a.is_empty()) {
        return Ok(PutDocument::Publish(pending_publish(name, raw, &body)?));
    }
    let versions = match raw.versions {
        None => None,
        Some(versions) => {
            let mut wanted = BTreeMap::new();
            for (key, manifest) in versions {
                let update: VersionUpdate = serde_json::from_str(manifest.get())
                    .map_err(|_| PublishError::FieldType("versions[version]", "an object"))?;
                let deprecated = match update.deprecated {
                    Some(Value::String(s)) if !s.is_empty() => Some(s),
                    _ => None,
                };
                wanted.insert(key, deprecated);
            }
            Some(wanted)
        }
    };
    Ok(PutDocument::Update(MetadataUpdate {
        versions,
        dist_tags: raw.dist_tags,
        users: raw.users,
        rev: raw.rev,
    }))
}

/// `part` (text borrowed from `body`) as a slice of `body`'s buffer, without copying.
fn share(body: &Bytes, part: &str) -> Bytes {
    let range = body.as_ptr_range();
    let inner = part.as_bytes().as_ptr_range();
    if range.start <= inner.start && inner.end <= range.end {
        body.slice_ref(part.as_bytes())
    } else {
        Bytes::copy_from_slice(part.as_bytes())
    }
}

/// A publish document's checks that need no tarball: one version whose manifest names it, one
/// attachment named for it, and dist-tags that all point at it.
fn pending_publish(
    name: &PackageName,
    raw: RawPut<'_>,
    body: &Bytes,
) -> Result<PendingPublish, PublishError> {
    let (version_key, version, manifest) = the_one_version(name, raw.versions.unwrap_or_default())?;
    let (attachment, provenance) =
        the_attachments(name, &version, raw.attachments.unwrap_or_default())?;
    let data = attachment_data(&attachment)?;
    let tags = publish_tags(raw.dist_tags.unwrap_or_default(), &version_key)?;
    let top_readme = raw
        .readme
        .and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    Ok(PendingPublish {
        version,
        manifest,
        tags,
        top_readme,
        data: share(body, data.get()),
        declared_length: attachment.length,
        provenance,
    })
}

/// The document's one version: its key, parsed, and its manifest, which must name the package
/// and the same version.
fn the_one_version(
    name: &PackageName,
    versions: BTreeMap<String, &RawValue>,
) -> Result<(String, Version, Map<String, Value>), PublishError> {
    if versions.len() != 1 {
        return Err(PublishError::VersionCount(versions.len()));
    }
    let (version_key, manifest) = versions
        .into_iter()
        .next()
        .ok_or(PublishError::VersionCount(0))?;
    let version = parse_version(&version_key)?;
    let manifest: Map<String, Value> = match serde_json::from_str(manifest.get()) {
        Ok(Value::Object(m)) => m,
        _ => return Err(PublishError::FieldType("versions[version]", "an object")),
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
    Ok((version_key, version, manifest))
}

/// The document's tarball attachment, named for the full package name and version as
/// libnpmpublish names it, and the provenance bundle `npm publish --provenance` adds beside it
/// (`<name>-<version>.sigstore`, whose `data` is the bundle's JSON text), if any.
fn the_attachments<'a>(
    name: &PackageName,
    version: &Version,
    mut attachments: BTreeMap<String, &'a RawValue>,
) -> Result<(RawAttachment<'a>, Option<String>), PublishError> {
    let provenance = match attachments.remove(&format!("{name}-{version}.sigstore")) {
        Some(raw) => {
            let attachment: RawAttachment<'_> = serde_json::from_str(raw.get())
                .map_err(|_| PublishError::FieldType("_attachments[provenance]", "an object"))?;
            let text = attachment
                .data
                .and_then(|d| serde_json::from_str::<String>(d.get()).ok())
                .ok_or(PublishError::FieldType(
                    "_attachments[provenance].data",
                    "the bundle's JSON text",
                ))?;
            Some(text)
        }
        None => None,
    };
    if attachments.len() != 1 {
        return Err(PublishError::AttachmentCount(attachments.len()));
    }
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
    let attachment = serde_json::from_str(attachment.get())
        .map_err(|_| PublishError::FieldType("_attachments[file]", "an object"))?;
    Ok((attachment, provenance))
}

/// The attachment's `data`, still a JSON string literal (decoded only for an authorised caller).
fn attachment_data<'a>(attachment: &RawAttachment<'a>) -> Result<&'a RawValue, PublishError> {
    match attachment.data {
        Some(d) if d.get().starts_with('"') => Ok(d),
        Some(d) if d.get() != "null" => Err(PublishError::FieldType(
            "_attachments[file].data",
            "a string",
        )),
        _ => Err(PublishError::FieldType(
            "_attachments[file].data",
            "a base64 string",
        )),
    }
}

/// The dist-tags to point at the version: each must name it; none means `latest`.
fn publish_tags(
    dist_tags: Map<String, Value>,
    version_key: &str,
) -> Result<Vec<DistTag>, PublishError> {
    let mut tags = Vec::new();
    for (tag, target) in dist_tags {
        let tag = DistTag::parse(&tag)?;
        if target.as_str() != Some(version_key) {
            return Err(PublishError::TagTarget {
                tag: tag.to_string(),
                found: target
                    .as_str()
                    .map_or_else(|| target.to_string(), str::to_string),
                expected: version_key.to_string(),
            });
        }
        tags.push(tag);
    }
    if tags.is_empty() {
        tags.push(DistTag::latest());
    }
    Ok(tags)
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
    /// Its README, stored apart from the record.
    pub readme: Option<String>,
    /// Its verified provenance bundle, stored apart from the record.
    pub provenance: Option<VerifiedProvenance>,
}

/// A provenance bundle that verified, and what it says.
#[derive(Debug, Clone)]
pub struct VerifiedProvenance {
    /// The bundle's JSON text, as published.
    pub bundle: String,
    /// What the certificate and statement say about the build.
    pub provenance: super::provenance::Provenance,
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

/// Decodes a JSON string literal of base64 into bytes. Clients send plain base64 (no escapes):
/// while the literal is the only reference to its buffer (the request body's), the bytes are
/// written over the text they come from, so a publish holds its body and not the tarball beside
/// it as well. A literal with escapes is unescaped first, and one whose buffer is shared is
/// decoded into a buffer of its own.
fn decode_base64_literal(literal: Bytes) -> Result<Bytes, PublishError> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let inner = literal
        .strip_prefix(b"\"")
        .and_then(|l| l.strip_suffix(b"\""))
        .ok_or(PublishError::BadBase64)?;
    if inner.contains(&b'\\') {
        let text: String = serde_json::from_slice(&literal).map_err(|_| PublishError::BadBase64)?;
        return engine
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(|_| PublishError::BadBase64);
    }
    match literal.try_into_mut() {
        Ok(mut buffer) => {
            let end = buffer.len() - 1;
            let written = decode_over(&mut buffer, 1, end)?;
            buffer.truncate(written);
            Ok(buffer.freeze())
        }
        Err(shared) => engine
            .decode(&shared[1..shared.len() - 1])
            .map(Bytes::from)
            .map_err(|_| PublishError::BadBase64),
    }
}

/// Base64 text decoded at a time by `decode_over`: a multiple of four characters, so that
/// every piece but the last is whole quanta.
const BASE64_PIECE: usize = 4 * 1024;

/// Decodes the base64 text `buffer[start..end]` over the front of `buffer`, a piece at a time
/// (four characters make three bytes, so the bytes never overtake the text still to be read);
/// returns how many bytes it wrote. Accepts exactly what decoding the whole text at once does.
fn decode_over(buffer: &mut [u8], start: usize, end: usize) -> Result<usize, PublishError> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut text = [0u8; BASE64_PIECE];
    let mut bytes = [0u8; BASE64_PIECE / 4 * 3];
    let (mut read, mut written) = (start, 0);
    while read < end {
        let len = BASE64_PIECE.min(end - read);
        text[..len].copy_from_slice(&buffer[read..read + len]);
        read += len;
        // Padding ends the text: in a piece before the last, the whole would be malformed too.
        if read < end && text[..len].contains(&b'=') {
            return Err(PublishError::BadBase64);
        }
        let n = engine
            .decode_slice(&text[..len], &mut bytes)
            .map_err(|_| PublishError::BadBase64)?;
        buffer[written..written + n].copy_from_slice(&bytes[..n]);
        written += n;
    }
    Ok(written)
}

impl PendingPublish {
    /// The manifest's `repository` field, which decides who may publish a new package.
    pub fn declared_repository(&self) -> Option<&Value> {
        self.manifest.get("repository")
    }

    /// The same publish pointing no tag at its version (a release made without `-tag`: the
    /// package's first version still becomes `latest`).
    pub fn untagged(mut self) -> Self {
        self.tags.clear();
        self
    }

    /// Decodes the tarball, checks its length and digests against what the client declared, and
    /// inspects it (bounded by `limits`): what may only be done for an authorised caller. A
    /// provenance bundle is verified against Sigstore's public-good root pinned in the release.
    pub fn verify(
        self,
        name: &PackageName,
        limits: TarballLimits,
    ) -> Result<ValidPublish, PublishError> {
        self.verify_with_root(name, limits, super::provenance::public_good())
    }

    /// `verify`, with a provenance bundle verified against `sigstore_root`.
    pub fn verify_with_root(
        self,
        name: &PackageName,
        limits: TarballLimits,
        sigstore_root: &super::provenance::TrustedRoot,
    ) -> Result<ValidPublish, PublishError> {
        let PendingPublish {
            version,
            manifest,
            tags,
            top_readme,
            data,
            declared_length,
            provenance,
        } = self;
        let tarball = decode_tarball(data, declared_length.as_ref())?;
        let digests = check_digests(&manifest, &tarball)?;
        let summary = tarball::inspect(&tarball, limits)?;
        check_tarball_manifest(&summary.manifest, name, &version)?;
        check_manifest_confusion(&manifest, &summary, &tarball, limits)?;
        let provenance = match provenance {
            Some(bundle) => {
                let verified = super::provenance::verify(
                    bundle.as_bytes(),
                    name.as_str(),
                    &version.to_string(),
                    &digests.sha512,
                    sigstore_root,
                )?;
                Some(VerifiedProvenance {
                    bundle,
                    provenance: verified,
                })
            }
            None => None,
        };
        let fields = VersionFields::take(manifest, top_readme)?;
        let dist = Dist {
            shasum: digests.sha1_hex,
            integrity: digests.integrity,
            file_count: summary.file_count,
            unpacked_size: summary.unpacked_size,
            tarball_key: TarballKey::new(name, &version, &digests.sha512_hex),
            signatures: Vec::new(),
            provenance: provenance
                .as_ref()
                .map(|p| super::package::ProvenanceFacts::of(&p.provenance)),
        };
        Ok(ValidPublish {
            version,
            tags,
            tarball,
            live: LiveVersion {
                manifest: fields.manifest,
                dist,
                readme_filename: fields.readme_filename,
                has_readme: Some(fields.readme.is_some()),
                deprecated: fields.deprecated,
            },
            readme: fields.readme,
            provenance,
        })
    }
}

/// Decodes the attachment's base64 and checks its length against the declared one.
fn decode_tarball(data: Bytes, declared_length: Option<&Value>) -> Result<Bytes, PublishError> {
    // Over the base64 text itself where it can be: the text is a third larger than the
    // tarball, and a publish would otherwise hold both while it decodes.
    let tarball = decode_base64_literal(data)?;
    let declared_length =
        declared_length
            .and_then(Value::as_u64)
            .ok_or(PublishError::FieldType(
                "_attachments[file].length",
                "a non-negative integer",
            ))?;
    if declared_length != tarball.len() as u64 {
        return Err(PublishError::Length {
            declared: declared_length,
            actual: tarball.len() as u64,
        });
    }
    Ok(tarball)
}

/// A version manifest split into what is stored apart: the README, its file name and the
/// deprecation message; fields the registry derives itself are dropped.
struct VersionFields {
    manifest: Manifest,
    readme: Option<String>,
    readme_filename: Option<String>,
    deprecated: Option<String>,
}

impl VersionFields {
    fn take(
        mut manifest: Map<String, Value>,
        top_readme: Option<String>,
    ) -> Result<Self, PublishError> {
        let readme = match manifest.remove("readme") {
            Some(Value::String(s)) => Some(s),
            _ => top_readme,
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
        Ok(VersionFields {
            manifest,
            readme,
            readme_filename,
            deprecated,
        })
    }
}

/// The tarball's digests, after comparing them with whatever the client declared in `dist`.
fn check_digests(manifest: &Map<String, Value>, tarball: &[u8]) -> Result<Digests, PublishError> {
    let digests = Digests::of(tarball);
    let declared_dist = match manifest.get("dist") {
        None | Some(Value::Null) => return Ok(digests),
        Some(Value::Object(d)) => d,
        Some(_) => return Err(PublishError::FieldType("dist", "an object")),
    };
    if let Some(shasum) = string_field(declared_dist, "shasum")?
        && !shasum.eq_ignore_ascii_case(&digests.sha1_hex)
    {
        return Err(PublishError::Shasum {
            declared: shasum.to_string(),
            actual: digests.sha1_hex,
        });
    }
    if let Some(integrity) = string_field(declared_dist, "integrity")?
        && !digests.matches_sri(integrity)
    {
        return Err(PublishError::Integrity {
            declared: integrity.to_string(),
            actual: digests.integrity,
        });
    }
    Ok(digests)
}

/// Everything else that decides what installing the version does must agree too.
fn check_manifest_confusion(
    declared: &Map<String, Value>,
    summary: &tarball::TarballSummary,
    tarball: &[u8],
    limits: TarballLimits,
) -> Result<(), PublishError> {
    let bin_dir = summary
        .manifest
        .get("bin")
        .is_none()
        .then(|| summary.manifest.get("directories")?.get("bin")?.as_str())
        .flatten();
    let bin_dir_paths = bin_dir.map(|dir| tarball::paths_under(tarball, dir, limits));
    super::confusion::compare(
        declared,
        &super::confusion::TarballFacts {
            manifest: &summary.manifest,
            has_gyp_file: summary.has_gyp_file,
            bin_dir_paths: bin_dir_paths.as_deref(),
        },
    )?;
    Ok(())
}

/// The package.json inside the tarball must name the package and version being published.
fn check_tarball_manifest(
    found_manifest: &Value,
    name: &PackageName,
    version: &Version,
) -> Result<(), PublishError> {
    for (field, expected) in [("name", name.to_string()), ("version", version.to_string())] {
        let found = found_manifest
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("");
        // The tarball may carry a loose version (`v1.0.0`); npm cleans it before publishing.
        let same = found == expected
            || (field == "version"
                && Version::parse(found.trim_start_matches(['v', '=']))
                    .is_ok_and(|v| v == *version));
        if !same {
            return Err(PublishError::TarballMismatch {
                field,
                found: found.to_string(),
                expected,
            });
        }
    }
    Ok(())
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
    stored: &PackageDocument,
    doc: &MetadataUpdate,
) -> Result<MetadataChanges, PublishError> {
    let mut changes = MetadataChanges::default();
    let live: BTreeMap<&Version, &LiveVersion> =
        stored.live().into_iter().map(|(v, _, l)| (v, l)).collect();
    if let Some(versions) = &doc.versions {
        let mut listed = BTreeSet::new();
        for (key, wanted) in versions {
            let version = parse_version(key)?;
            let Some(current) = live.get(&version) else {
                return Err(PublishError::UnknownVersion(key.clone()));
            };
            if *wanted != current.deprecated {
                changes.deprecate.push((version.clone(), wanted.clone()));
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
    use crate::testing::tgz;
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
        let body = Bytes::from(serde_json::to_vec(&v).unwrap());
        match parse_put(&name, body) {
            Ok(PutDocument::Publish(p)) => p.verify(&name, TarballLimits::default()),
            Ok(PutDocument::Update(_)) => panic!("not a publish"),
            Err(DocumentError::Invalid(e)) => Err(e),
            Err(e) => panic!("{e}"),
        }
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

    /// `bytes` as a base64 JSON string literal, alone in a buffer of its own.
    fn literal(bytes: &[u8]) -> Bytes {
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        Bytes::from(format!("\"{text}\"").into_bytes())
    }

    #[test]
    fn a_literal_alone_in_its_buffer_is_decoded_over_its_own_text() {
        let engine = &base64::engine::general_purpose::STANDARD;
        // Not one repeated byte, so that a misplaced piece shows; lengths around the pieces'.
        let piece = BASE64_PIECE / 4 * 3;
        for len in [
            0,
            1,
            2,
            3,
            4,
            piece - 1,
            piece,
            piece + 1,
            3 * piece + 2,
            100_000,
        ] {
            let bytes: Vec<u8> = (0..=250u8).cycle().take(len).collect();
            let text = literal(&bytes);
            let start = text.as_ptr();
            let decoded = decode_base64_literal(text).unwrap();
            assert_eq!(decoded, bytes, "{len} bytes");
            if len > 0 {
                assert_eq!(decoded.as_ptr(), start, "{len} bytes: not decoded in place");
            }
        }
        // Shared with the rest of a body (a slice of it, the body still held): decoded apart,
        // the body untouched.
        let body = Bytes::from(format!("{{\"data\":\"{}\"}}", engine.encode(b"shared")));
        let data = body.slice(8..body.len() - 1);
        assert_eq!(decode_base64_literal(data).unwrap(), &b"shared"[..]);
        assert!(body.starts_with(b"{\"data\":\"c2hh"));
        // Escaped (`\/`, as some JSON writers put it): unescaped first.
        let escaped = Bytes::from_static(b"\"YS9i\\/Q==\"");
        assert_eq!(
            decode_base64_literal(escaped).unwrap(),
            engine.decode("YS9i/Q==").unwrap()
        );
    }

    #[test]
    fn decoding_a_piece_at_a_time_refuses_what_decoding_the_whole_refuses() {
        let engine = &base64::engine::general_purpose::STANDARD;
        let piece = BASE64_PIECE / 4 * 3;
        // Padding that ends exactly at a piece's end, with more text after it.
        let first = engine.encode(vec![1u8; piece - 2]);
        assert_eq!(first.len(), BASE64_PIECE);
        assert!(first.ends_with('='));
        let text = format!("{first}{}", engine.encode(b"more"));
        assert!(engine.decode(&text).is_err());
        let refused = |text: &str| {
            matches!(
                decode_base64_literal(Bytes::from(format!("\"{text}\""))),
                Err(PublishError::BadBase64)
            )
        };
        assert!(refused(&text));
        // A character outside the alphabet in a later piece, a missing pad, whitespace.
        let mut bad = engine.encode(vec![2u8; 2 * piece]);
        bad.replace_range(BASE64_PIECE + 5..BASE64_PIECE + 6, "*");
        assert!(refused(&bad));
        assert!(refused("YQ"));
        assert!(refused("YWJj ZGVm"));
        // An empty attachment decodes to no bytes, as before (the tarball's checks refuse it).
        assert!(
            decode_base64_literal(Bytes::from_static(b"\"\""))
                .unwrap()
                .is_empty()
        );
    }
}
