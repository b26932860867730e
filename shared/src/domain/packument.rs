//! Packument assembly: the full document and the abbreviated install document.

use chrono::{DateTime, Utc};
use semver::Version;
use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::PackageName;
use super::package::{LiveVersion, PackageDocument};

/// The media type of the abbreviated packument.
pub(crate) const ABBREVIATED_MEDIA_TYPE: &str = "application/vnd.npm.install-v1+json";

/// Top-level fields copied from the `latest` version's manifest into the full packument.
const LATEST_FIELDS: &[&str] = &[
    "description",
    "maintainers",
    "repository",
    "homepage",
    "bugs",
    "license",
    "keywords",
    "author",
];

/// Per-version fields an installer needs besides its name and version (the abbreviated document
/// keeps only these).
pub(crate) const ABBREVIATED_FIELDS: &[&str] = &[
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "bundleDependencies",
    "bundledDependencies",
    "bin",
    "directories",
    "engines",
    "os",
    "cpu",
    "libc",
    "funding",
    "_hasShrinkwrap",
    "acceptDependencies",
];

/// The URL clients download a version's tarball from: always the registry itself.
pub fn tarball_url(base_url: &str, name: &PackageName, version: &Version) -> String {
    format!(
        "{}/{}/-/{}",
        base_url.trim_end_matches('/'),
        name,
        name.tarball_file_name(version)
    )
}

/// One version's manifest as clients see it (in `versions` and from `GET /name/version`): the
/// stored fields with the registry's `name`, `version`, `_id`, `dist` and deprecation.
pub(crate) struct VersionManifest<'a> {
    /// Where tarball links point.
    pub base_url: &'a str,
    /// The package.
    pub name: &'a PackageName,
    /// The version.
    pub version: &'a Version,
    /// Its record.
    pub live: &'a LiveVersion,
}

impl Serialize for VersionManifest<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.live.manifest.fields().map_err(S::Error::custom)?;
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("name", self.name.as_str())?;
        out.serialize_entry("version", self.version)?;
        for (key, value) in fields.iter() {
            let ours = matches!(key, "name" | "version" | "_id" | "dist")
                || (key == "deprecated" && self.live.deprecated.is_some());
            if !ours {
                out.serialize_entry(key, value)?;
            }
        }
        out.serialize_entry("_id", &format_args!("{}@{}", self.name, self.version))?;
        out.serialize_entry("dist", &self.dist())?;
        if let Some(message) = &self.live.deprecated {
            out.serialize_entry("deprecated", message)?;
        }
        out.end()
    }
}

impl<'a> VersionManifest<'a> {
    fn dist(&self) -> DistJson<'a> {
        DistJson {
            base_url: self.base_url,
            name: self.name,
            version: self.version,
            live: self.live,
        }
    }
}

/// Where a version's attestations are served: `/-/npm/v1/attestations/NAME@VERSION`, the scoped
/// name's slash escaped, as npm's registry writes it.
pub fn attestations_url(base_url: &str, name: &PackageName, version: &Version) -> String {
    format!(
        "{}/-/npm/v1/attestations/{}@{version}",
        base_url.trim_end_matches('/'),
        name.as_str().replacen('/', "%2f", 1)
    )
}

/// A version's `dist` object.
struct DistJson<'a> {
    base_url: &'a str,
    name: &'a PackageName,
    version: &'a Version,
    live: &'a LiveVersion,
}

impl Serialize for DistJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let dist = &self.live.dist;
        let mut out = serializer.serialize_map(Some(5))?;
        out.serialize_entry("shasum", &dist.shasum)?;
        out.serialize_entry("integrity", &dist.integrity)?;
        out.serialize_entry(
            "tarball",
            &tarball_url(self.base_url, self.name, self.version),
        )?;
        out.serialize_entry("fileCount", &dist.file_count)?;
        out.serialize_entry("unpackedSize", &dist.unpacked_size)?;
        if !dist.signatures.is_empty() {
            out.serialize_entry("signatures", &dist.signatures)?;
        }
        if let Some(provenance) = &dist.provenance {
            out.serialize_entry(
                "attestations",
                &serde_json::json!({
                    "url": attestations_url(self.base_url, self.name, self.version),
                    "provenance": { "predicateType": provenance.predicate_type },
                }),
            )?;
        }
        out.end()
    }
}

/// A JSON object whose entries are produced while it is written, so a document with thousands
/// of versions never exists as a tree in memory.
struct LazyMap<F>(F);

impl<F, I, K, V> Serialize for LazyMap<F>
where
    F: Fn() -> I,
    I: IntoIterator<Item = (K, V)>,
    K: Serialize,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map((self.0)())
    }
}

struct Iso<'a>(&'a DateTime<Utc>);

impl Serialize for Iso<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

#[cfg(test)]
fn dist_tags(doc: &PackageDocument) -> impl Serialize + '_ {
    LazyMap(|| doc.package.dist_tags.iter().map(|(t, v)| (t.as_str(), v)))
}

/// Writes the full packument (`Accept: application/json`) into `out`, with `readme` (the
/// README of the version [`latest`] picks) at the top level: in one piece, the oracle the
/// pieces are tested against.
#[cfg(test)]
pub(crate) fn write_full(
    doc: &PackageDocument,
    base_url: &str,
    readme: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    serde_json::to_writer(
        out,
        &Full {
            doc,
            base_url,
            readme,
        },
    )
}

/// The version whose manifest and README the full packument shows at its top level: the
/// `latest` tag's, else the highest live version.
pub(crate) fn latest(doc: &PackageDocument) -> Option<(&Version, &LiveVersion)> {
    let live = doc.live();
    let latest = doc
        .package
        .dist_tags
        .get(&super::DistTag::latest())
        .and_then(|v| live.iter().find(|(lv, _, _)| *lv == v))
        .or(live.last());
    latest.map(|(v, _, l)| (*v, *l))
}

/// Writes the abbreviated packument (`Accept: application/vnd.npm.install-v1+json`) into `out`.
#[cfg(test)]
pub(crate) fn write_abbreviated(
    doc: &PackageDocument,
    base_url: &str,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    serde_json::to_writer(out, &Abbreviated { doc, base_url })
}

/// Each live version with the manifest clients see for it.
#[cfg(test)]
fn version_manifests<'a>(
    live: &'a [(&'a Version, &'a DateTime<Utc>, &'a LiveVersion)],
    name: &'a PackageName,
    base_url: &'a str,
) -> impl Iterator<Item = (&'a Version, VersionManifest<'a>)> + 'a {
    live.iter().map(move |&(version, _, live)| {
        let manifest = VersionManifest {
            base_url,
            name,
            version,
            live,
        };
        (version, manifest)
    })
}

/// A packument cut into pieces that are rendered on their own, so a change to one version
/// re-renders that version's entry only (`http::incremental` keeps the pieces). Joined in order,
/// the head, the version entries in ascending order (each after a `,` but the first), and, in the
/// full view, the middle, the time entries (each after a `,`) and the tail, they are byte for
/// byte what [`write_full`] and [`write_abbreviated`] write.
pub(crate) mod pieces {
    use super::{
        DateTime, InstallManifest, Iso, LATEST_FIELDS, LazyMap, LiveVersion, PackageName,
        Serialize, Utc, Version, VersionManifest,
    };
    use crate::domain::PackageRecord;

    fn key(out: &mut Vec<u8>, key: &str) -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut *out, key)?;
        out.push(b':');
        Ok(())
    }

    fn entry(
        out: &mut Vec<u8>,
        name: &str,
        value: &impl Serialize,
    ) -> Result<(), serde_json::Error> {
        out.push(b',');
        key(out, name)?;
        serde_json::to_writer(out, value)
    }

    fn tags(package: &PackageRecord) -> impl Serialize + '_ {
        LazyMap(|| package.dist_tags.iter().map(|(t, v)| (t.as_str(), v)))
    }

    /// `"<version>":{manifest}`: one entry of the full view's `versions`.
    pub(crate) fn full_version(
        name: &PackageName,
        version: &Version,
        live: &LiveVersion,
        base_url: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        key(out, &version.to_string())?;
        let manifest = VersionManifest {
            base_url,
            name,
            version,
            live,
        };
        serde_json::to_writer(out, &manifest)
    }

    /// `"<version>":{install manifest}`: one entry of the abbreviated view's `versions`.
    pub(crate) fn abbreviated_version(
        name: &PackageName,
        version: &Version,
        live: &LiveVersion,
        base_url: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        key(out, &version.to_string())?;
        let manifest = VersionManifest {
            base_url,
            name,
            version,
            live,
        };
        serde_json::to_writer(out, &InstallManifest(manifest))
    }

    /// `"<version>":"<published>"`: one entry of the full view's `time`.
    pub(crate) fn time(
        version: &Version,
        published: &DateTime<Utc>,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        key(out, &version.to_string())?;
        serde_json::to_writer(out, &Iso(published))
    }

    /// The full view up to its first version entry.
    pub(crate) fn full_head(
        package: &PackageRecord,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        out.push(b'{');
        key(out, "_id")?;
        serde_json::to_writer(&mut *out, package.name.as_str())?;
        entry(out, "_rev", &package.rev_string())?;
        entry(out, "name", &package.name.as_str())?;
        entry(out, "dist-tags", &tags(package))?;
        out.push(b',');
        key(out, "versions")?;
        out.push(b'{');
        Ok(())
    }

    /// The full view between its version entries and its time entries.
    pub(crate) fn full_middle(
        package: &PackageRecord,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        out.extend_from_slice(b"},");
        key(out, "time")?;
        out.push(b'{');
        key(out, "created")?;
        serde_json::to_writer(&mut *out, &Iso(&package.created))?;
        entry(out, "modified", &Iso(&package.modified))
    }

    /// The full view after its time entries: the latest version's fields and README, and
    /// `users`.
    pub(crate) fn full_tail(
        package: &PackageRecord,
        latest: Option<&LiveVersion>,
        readme: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        out.push(b'}');
        if let Some(l) = latest {
            let fields = l.manifest.fields()?;
            for field in LATEST_FIELDS {
                if let Some(value) = fields.get(field) {
                    entry(out, field, &value)?;
                }
            }
            entry(out, "readme", &readme.unwrap_or_default())?;
            if let Some(f) = &l.readme_filename {
                entry(out, "readmeFilename", f)?;
            }
        }
        entry(
            out,
            "users",
            &LazyMap(|| package.stars.iter().map(|u| (u, true))),
        )?;
        out.push(b'}');
        Ok(())
    }

    /// The abbreviated view up to its first version entry.
    pub(crate) fn abbreviated_head(
        package: &PackageRecord,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        out.push(b'{');
        key(out, "name")?;
        serde_json::to_writer(&mut *out, package.name.as_str())?;
        entry(out, "modified", &Iso(&package.modified))?;
        entry(out, "dist-tags", &tags(package))?;
        out.push(b',');
        key(out, "versions")?;
        out.push(b'{');
        Ok(())
    }

    /// The abbreviated view after its version entries.
    pub(crate) const ABBREVIATED_TAIL: &[u8] = b"}}";
}

#[cfg(test)]
struct Full<'a> {
    doc: &'a PackageDocument,
    base_url: &'a str,
    readme: Option<&'a str>,
}

#[cfg(test)]
impl Serialize for Full<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pkg = &self.doc.package;
        let name = &pkg.name;
        let live = self.doc.live();
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("_id", name.as_str())?;
        out.serialize_entry("_rev", &pkg.rev_string())?;
        out.serialize_entry("name", name.as_str())?;
        out.serialize_entry("dist-tags", &dist_tags(self.doc))?;
        let versions = LazyMap(|| version_manifests(&live, name, self.base_url));
        out.serialize_entry("versions", &versions)?;
        let time = LazyMap(|| {
            [
                ("created", Iso(&pkg.created)),
                ("modified", Iso(&pkg.modified)),
            ]
            .into_iter()
            .map(|(k, t)| (k.to_string(), t))
            .chain(
                live.iter()
                    .map(|&(version, published, _)| (version.to_string(), Iso(published))),
            )
        });
        out.serialize_entry("time", &time)?;
        if let Some((_, l)) = latest(self.doc) {
            let fields = l.manifest.fields().map_err(S::Error::custom)?;
            for field in LATEST_FIELDS {
                if let Some(value) = fields.get(field) {
                    out.serialize_entry(field, value)?;
                }
            }
            out.serialize_entry("readme", self.readme.unwrap_or_default())?;
            if let Some(f) = &l.readme_filename {
                out.serialize_entry("readmeFilename", f)?;
            }
        }
        out.serialize_entry("users", &LazyMap(|| pkg.stars.iter().map(|u| (u, true))))?;
        out.end()
    }
}

#[cfg(test)]
struct Abbreviated<'a> {
    doc: &'a PackageDocument,
    base_url: &'a str,
}

#[cfg(test)]
impl Serialize for Abbreviated<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pkg = &self.doc.package;
        let live = self.doc.live();
        let mut out = serializer.serialize_map(Some(4))?;
        out.serialize_entry("name", pkg.name.as_str())?;
        out.serialize_entry("modified", &Iso(&pkg.modified))?;
        out.serialize_entry("dist-tags", &dist_tags(self.doc))?;
        let versions = LazyMap(|| {
            version_manifests(&live, &pkg.name, self.base_url)
                .map(|(version, manifest)| (version, InstallManifest(manifest)))
        });
        out.serialize_entry("versions", &versions)?;
        out.end()
    }
}

/// The fields of one version an installer needs.
struct InstallManifest<'a>(VersionManifest<'a>);

impl Serialize for InstallManifest<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = &self.0;
        let fields = v.live.manifest.fields().map_err(S::Error::custom)?;
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("name", v.name.as_str())?;
        out.serialize_entry("version", v.version)?;
        for field in ABBREVIATED_FIELDS {
            if let Some(value) = fields.get(field) {
                out.serialize_entry(field, value)?;
            }
        }
        if let Some(message) = &v.live.deprecated {
            out.serialize_entry("deprecated", message)?;
        }
        if has_install_script(fields.get("scripts")) {
            out.serialize_entry("hasInstallScript", &true)?;
        }
        out.serialize_entry("dist", &v.dist())?;
        out.end()
    }
}

fn has_install_script(scripts: Option<&RawValue>) -> bool {
    let Some(scripts) = scripts else {
        return false;
    };
    serde_json::from_str::<super::manifest::Fields>(scripts.get()).is_ok_and(|s| {
        ["preinstall", "install", "postinstall"]
            .iter()
            .any(|k| s.get(k).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::package::*;
    use crate::domain::{DistTag, Manifest};
    use serde_json::{Value, json};

    fn full(doc: &PackageDocument, base_url: &str) -> Value {
        let mut out = Vec::new();
        write_full(doc, base_url, Some("readme one"), &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn abbreviated(doc: &PackageDocument, base_url: &str) -> Value {
        let mut out = Vec::new();
        write_abbreviated(doc, base_url, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn doc() -> PackageDocument {
        let name = PackageName::parse("@s/pkg").unwrap();
        let now = chrono::Utc::now();
        let mut package = PackageRecord::new(name.clone(), now);
        let v1: Version = "1.0.0".parse().unwrap();
        let v2: Version = "2.0.0".parse().unwrap();
        package.dist_tags.insert(DistTag::latest(), v1.clone());
        let live = |v: &Version, desc: &str| VersionRecord {
            version: v.clone(),
            published: now,
            state: VersionState::Live(Box::new(LiveVersion {
                manifest: Manifest::from_map(
                    json!({
                        "description": desc,
                        "dependencies": {"x": "^1"},
                        "scripts": {"postinstall": "node x", "test": "t"},
                        "devDependencies": {"y": "1"},
                    })
                    .as_object()
                    .unwrap(),
                )
                .unwrap(),
                dist: Dist {
                    shasum: "ab".into(),
                    integrity: "sha512-x".into(),
                    file_count: 1,
                    unpacked_size: 2,
                    tarball_key: TarballKey::new(&name, v, "00"),
                    signatures: Vec::new(),
                    provenance: None,
                },
                readme_filename: None,
                has_readme: None,
                deprecated: None,
            })),
        };
        let gone = VersionRecord {
            version: "0.9.0".parse().unwrap(),
            published: now,
            state: VersionState::Unpublished { at: now },
        };
        PackageDocument {
            package,
            versions: vec![live(&v2, "two"), gone, live(&v1, "one")],
        }
    }

    /// The pieces joined as `http::incremental` joins them.
    fn joined(doc: &PackageDocument, base_url: &str, readme: Option<&str>, full: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let live = doc.live();
        if full {
            pieces::full_head(&doc.package, &mut out).unwrap();
        } else {
            pieces::abbreviated_head(&doc.package, &mut out).unwrap();
        }
        for (i, (version, _, l)) in live.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if full {
                pieces::full_version(&doc.package.name, version, l, base_url, &mut out).unwrap();
            } else {
                pieces::abbreviated_version(&doc.package.name, version, l, base_url, &mut out)
                    .unwrap();
            }
        }
        if !full {
            out.extend_from_slice(pieces::ABBREVIATED_TAIL);
            return out;
        }
        pieces::full_middle(&doc.package, &mut out).unwrap();
        for (version, published, _) in &live {
            out.push(b',');
            pieces::time(version, published, &mut out).unwrap();
        }
        let latest = latest(doc).map(|(_, l)| l);
        pieces::full_tail(&doc.package, latest, readme, &mut out).unwrap();
        out
    }

    #[test]
    fn pieces_join_to_the_whole_document() {
        let mut doc = doc();
        for round in 0..3 {
            let mut full = Vec::new();
            write_full(&doc, "http://r.test", Some("read me"), &mut full).unwrap();
            assert_eq!(
                String::from_utf8(joined(&doc, "http://r.test", Some("read me"), true)).unwrap(),
                String::from_utf8(full).unwrap(),
                "round {round}"
            );
            let mut abbreviated = Vec::new();
            write_abbreviated(&doc, "http://r.test", &mut abbreviated).unwrap();
            assert_eq!(joined(&doc, "http://r.test", None, false), abbreviated);
            // Stars, a deprecation, no latest tag: each changes other pieces.
            doc.package.stars.insert(format!("user{round}"));
            if let VersionState::Live(l) = &mut doc.versions[0].state {
                l.deprecated = Some("old".into());
                l.readme_filename = Some("README.md".into());
            }
            doc.package.dist_tags.clear();
        }
    }

    #[test]
    fn full_document_follows_latest_and_hides_unpublished() {
        let p = full(&doc(), "http://r.test/prefix/");
        assert_eq!(p["name"], "@s/pkg");
        assert_eq!(
            p["description"], "one",
            "top-level fields come from latest, not the highest"
        );
        assert_eq!(p["readme"], "readme one");
        assert_eq!(
            latest(&doc()).map(|(v, _)| v.to_string()).as_deref(),
            Some("1.0.0"),
            "the README shown is the latest tag's version's"
        );
        assert_eq!(p["versions"].as_object().unwrap().len(), 2);
        assert!(p["time"]["0.9.0"].is_null());
        assert_eq!(
            p["versions"]["2.0.0"]["dist"]["tarball"],
            "http://r.test/prefix/@s/pkg/-/pkg-2.0.0.tgz"
        );
        assert_eq!(p["versions"]["2.0.0"]["_id"], "@s/pkg@2.0.0");
    }

    #[test]
    fn abbreviated_keeps_only_install_fields() {
        let p = abbreviated(&doc(), "http://r.test");
        let v = &p["versions"]["1.0.0"];
        assert_eq!(v["dependencies"]["x"], "^1");
        assert_eq!(v["hasInstallScript"], true);
        assert!(v.get("scripts").is_none());
        assert!(v.get("description").is_none());
        assert!(p.get("time").is_none());
        assert!(p["modified"].is_string());
    }

    #[test]
    fn registry_fields_replace_stored_ones_without_duplicate_keys() {
        let name = PackageName::parse("@s/pkg").unwrap();
        let version: Version = "1.0.0".parse().unwrap();
        let stored = json!({
            "name": "@s/other", "_id": "stale", "dist": {"tarball": "http://elsewhere"},
            "deprecated": "stored", "main": "index.js",
        });
        let mut live = LiveVersion {
            manifest: Manifest::from_map(stored.as_object().unwrap()).unwrap(),
            dist: Dist {
                shasum: "ab".into(),
                integrity: "sha512-x".into(),
                file_count: 1,
                unpacked_size: 2,
                tarball_key: TarballKey::new(&name, &version, "00"),
                signatures: Vec::new(),
                provenance: None,
            },
            readme_filename: None,
            has_readme: None,
            deprecated: Some("use 2".into()),
        };
        let text = |live: &LiveVersion| {
            serde_json::to_string(&VersionManifest {
                base_url: "http://r.test",
                name: &name,
                version: &version,
                live,
            })
            .unwrap()
        };
        assert_eq!(
            text(&live),
            r#"{"name":"@s/pkg","version":"1.0.0","main":"index.js","_id":"@s/pkg@1.0.0","dist":{"shasum":"ab","integrity":"sha512-x","tarball":"http://r.test/@s/pkg/-/pkg-1.0.0.tgz","fileCount":1,"unpackedSize":2},"deprecated":"use 2"}"#
        );
        live.deprecated = None;
        assert!(text(&live).contains(r#""deprecated":"stored""#));
    }
}
