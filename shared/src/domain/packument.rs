//! Packument assembly: the full document and the abbreviated install document.

use semver::Version;
use serde_json::{Map, Value, json};

use super::PackageName;
use super::package::{LiveVersion, PackageDocument};

/// The media type of the abbreviated packument.
pub const ABBREVIATED_MEDIA_TYPE: &str = "application/vnd.npm.install-v1+json";

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

/// Per-version fields an installer needs (the abbreviated document keeps only these).
const ABBREVIATED_FIELDS: &[&str] = &[
    "name",
    "version",
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

/// One version's manifest as clients see it (in `versions` and from `GET /name/version`).
pub fn version_manifest(
    base_url: &str,
    name: &PackageName,
    version: &Version,
    live: &LiveVersion,
) -> Value {
    let mut m = live.manifest.clone();
    m.insert("name".into(), json!(name.as_str()));
    m.insert("version".into(), json!(version.to_string()));
    m.insert("_id".into(), json!(format!("{name}@{version}")));
    m.insert("dist".into(), dist_json(base_url, name, version, live));
    if let Some(msg) = &live.deprecated {
        m.insert("deprecated".into(), json!(msg));
    }
    Value::Object(m)
}

fn dist_json(base_url: &str, name: &PackageName, version: &Version, live: &LiveVersion) -> Value {
    json!({
        "shasum": live.dist.shasum,
        "integrity": live.dist.integrity,
        "tarball": tarball_url(base_url, name, version),
        "fileCount": live.dist.file_count,
        "unpackedSize": live.dist.unpacked_size,
    })
}

fn iso(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn dist_tags_json(doc: &PackageDocument) -> Value {
    let tags: Map<String, Value> = doc
        .package
        .dist_tags
        .iter()
        .map(|(t, v)| (t.as_str().to_string(), json!(v.to_string())))
        .collect();
    Value::Object(tags)
}

/// The full packument (`Accept: application/json`).
pub fn full(doc: &PackageDocument, base_url: &str) -> Value {
    let pkg = &doc.package;
    let name = &pkg.name;
    let live = doc.live();
    let mut out = Map::new();
    out.insert("_id".into(), json!(name.as_str()));
    out.insert("_rev".into(), json!(pkg.rev_string()));
    out.insert("name".into(), json!(name.as_str()));
    out.insert("dist-tags".into(), dist_tags_json(doc));
    let mut versions = Map::new();
    let mut time = Map::new();
    time.insert("created".into(), json!(iso(&pkg.created)));
    time.insert("modified".into(), json!(iso(&pkg.modified)));
    for (version, published, l) in &live {
        versions.insert(
            version.to_string(),
            version_manifest(base_url, name, version, l),
        );
        time.insert(version.to_string(), json!(iso(published)));
    }
    out.insert("versions".into(), Value::Object(versions));
    out.insert("time".into(), Value::Object(time));
    let latest = pkg
        .dist_tags
        .get(&super::DistTag::latest())
        .and_then(|v| live.iter().find(|(lv, _, _)| *lv == v))
        .or(live.last());
    if let Some((_, _, l)) = latest {
        for field in LATEST_FIELDS {
            if let Some(v) = l.manifest.get(*field) {
                out.insert((*field).into(), v.clone());
            }
        }
        out.insert("readme".into(), json!(l.readme.clone().unwrap_or_default()));
        if let Some(f) = &l.readme_filename {
            out.insert("readmeFilename".into(), json!(f));
        }
    }
    let users: Map<String, Value> = pkg.stars.iter().map(|u| (u.clone(), json!(true))).collect();
    out.insert("users".into(), Value::Object(users));
    Value::Object(out)
}

/// The abbreviated packument (`Accept: application/vnd.npm.install-v1+json`).
pub fn abbreviated(doc: &PackageDocument, base_url: &str) -> Value {
    let pkg = &doc.package;
    let name = &pkg.name;
    let mut versions = Map::new();
    for (version, _, l) in doc.live() {
        let mut m = Map::new();
        for field in ABBREVIATED_FIELDS {
            if let Some(v) = l.manifest.get(*field) {
                m.insert((*field).into(), v.clone());
            }
        }
        m.insert("name".into(), json!(name.as_str()));
        m.insert("version".into(), json!(version.to_string()));
        if let Some(msg) = &l.deprecated {
            m.insert("deprecated".into(), json!(msg));
        }
        if has_install_script(&l.manifest) {
            m.insert("hasInstallScript".into(), json!(true));
        }
        m.insert("dist".into(), dist_json(base_url, name, version, l));
        versions.insert(version.to_string(), Value::Object(m));
    }
    json!({
        "name": name.as_str(),
        "modified": iso(&pkg.modified),
        "dist-tags": dist_tags_json(doc),
        "versions": versions,
    })
}

fn has_install_script(manifest: &Map<String, Value>) -> bool {
    manifest
        .get("scripts")
        .and_then(Value::as_object)
        .is_some_and(|s| {
            ["preinstall", "install", "postinstall"]
                .iter()
                .any(|k| s.contains_key(*k))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DistTag;
    use crate::domain::package::*;

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
                manifest: serde_json::from_value(json!({
                    "description": desc,
                    "dependencies": {"x": "^1"},
                    "scripts": {"postinstall": "node x", "test": "t"},
                    "devDependencies": {"y": "1"},
                }))
                .unwrap(),
                dist: Dist {
                    shasum: "ab".into(),
                    integrity: "sha512-x".into(),
                    file_count: 1,
                    unpacked_size: 2,
                    tarball_key: TarballKey::new(&name, v, "00"),
                },
                readme: Some(format!("readme {desc}")),
                readme_filename: None,
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

    #[test]
    fn full_document_follows_latest_and_hides_unpublished() {
        let p = full(&doc(), "http://r.test/prefix/");
        assert_eq!(p["name"], "@s/pkg");
        assert_eq!(
            p["description"], "one",
            "top-level fields come from latest, not the highest"
        );
        assert_eq!(p["readme"], "readme one");
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
}
