//! What a search knows of a package: its latest version's description, keywords, people and
//! links, and the words of that version's README.

use chrono::{DateTime, Utc};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tokenize::{self, cut};
use crate::domain::{LiveVersion, PackageName, PackageRecord, RepoRef};

/// Descriptions are cut to this many bytes: a search result shows a line, not an essay.
const DESCRIPTION_BYTES: usize = 512;
/// At most this many keywords are kept, each at most `KEYWORD_BYTES` long.
const KEYWORDS: usize = 32;
const KEYWORD_BYTES: usize = 64;

/// A person as npm's search output names one: `username` is always a string (npm's formatter
/// calls string methods on it without a guard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The name shown.
    pub username: String,
    /// The address, when the manifest gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The package's links, from its manifest (`links.npm` is made when answering, from the
/// registry's own URL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// `homepage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    /// `repository` (its URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// `bugs` (its URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bugs: Option<String>,
}

/// One package as the search index holds it: made from the package's record and its `latest`
/// version whenever either changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchEntry {
    /// The package.
    pub name: PackageName,
    /// The package revision this entry was made at: a change of an older revision arriving
    /// later (another process's log) never replaces it.
    #[serde(default)]
    pub revision: u64,
    /// The repository the package is bound to, if any (access to it decides who finds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepoRef>,
    /// The version shown: the `latest` tag's.
    pub version: Version,
    /// Its description (cut), or empty.
    pub description: String,
    /// Its keywords, as published (cut).
    pub keywords: Vec<String>,
    /// When the shown version was published.
    pub date: DateTime<Utc>,
    /// When the package last changed.
    pub modified: DateTime<Utc>,
    /// `author`, if any.
    pub author: Option<Person>,
    /// Who published the shown version: its `_npmUser`, else its first maintainer, else its
    /// author.
    pub publisher: Option<Person>,
    /// `maintainers`, each as a [`Person`] (strings like `Name <mail>` are read as npm does).
    pub maintainers: Vec<Person>,
    /// Links from the manifest.
    pub links: Links,
    /// `license`, if it is a string (or `{type}`).
    pub license: Option<String>,
    /// Whether the shown version is deprecated.
    pub deprecated: bool,
    /// The indexed words of the shown version's README (`tokenize::readme_terms`).
    pub readme_terms: Vec<String>,
}

impl SearchEntry {
    /// The entry of `package` showing `version` (its `latest`), published at `published`.
    pub fn of(
        package: &PackageRecord,
        version: &Version,
        published: DateTime<Utc>,
        live: &LiveVersion,
        readme: Option<&str>,
    ) -> SearchEntry {
        let fields = live.manifest.fields().ok();
        let field = |name: &str| -> Option<Value> {
            let raw = fields.as_ref()?.get(name)?;
            serde_json::from_str(raw.get()).ok()
        };
        let description = field("description")
            .as_ref()
            .and_then(Value::as_str)
            .map(|d| cut(d.trim(), DESCRIPTION_BYTES).to_string())
            .unwrap_or_default();
        let author = field("author").as_ref().and_then(person);
        let maintainers: Vec<Person> = match field("maintainers") {
            Some(Value::Array(list)) => list.iter().filter_map(person).collect(),
            _ => Vec::new(),
        };
        let publisher = field("_npmUser")
            .as_ref()
            .and_then(person)
            .or_else(|| maintainers.first().cloned())
            .or_else(|| author.clone());
        SearchEntry {
            name: package.name.clone(),
            revision: package.revision,
            repository: package.repository.clone(),
            version: version.clone(),
            description,
            keywords: field("keywords").map(keywords).unwrap_or_default(),
            date: published,
            modified: package.modified,
            author,
            publisher,
            maintainers,
            links: Links {
                homepage: field("homepage").as_ref().and_then(url),
                repository: field("repository").as_ref().and_then(url),
                bugs: field("bugs").as_ref().and_then(url),
            },
            license: field("license").as_ref().and_then(|l| match l {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("type").and_then(Value::as_str).map(str::to_string),
                _ => None,
            }),
            deprecated: live.deprecated.is_some(),
            readme_terms: readme.map(tokenize::readme_terms).unwrap_or_default(),
        }
    }

    /// Whether the shown version is a pre-1.0 or pre-release one (npm's `is:unstable`).
    pub fn unstable(&self) -> bool {
        self.version.major == 0 || !self.version.pre.is_empty()
    }
}

/// Keywords as an array of strings, or one string of words separated by commas or spaces
/// (both are published).
fn keywords(value: Value) -> Vec<String> {
    let list: Vec<String> = match value {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    list.into_iter()
        .map(|k| cut(k.trim(), KEYWORD_BYTES).to_string())
        .filter(|k| !k.is_empty())
        .take(KEYWORDS)
        .collect()
}

/// A person from `{name, email}` or `Name <email> (url)`.
fn person(value: &Value) -> Option<Person> {
    let (name, email) = match value {
        Value::String(s) => {
            let name = s.split(['<', '(']).next().unwrap_or_default().trim();
            let email = s
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(email, _)| email.trim().to_string());
            (name.to_string(), email)
        }
        Value::Object(o) => (
            o.get("name")
                .or_else(|| o.get("username"))
                .and_then(Value::as_str)?
                .trim()
                .to_string(),
            o.get("email").and_then(Value::as_str).map(str::to_string),
        ),
        _ => return None,
    };
    (!name.is_empty()).then_some(Person {
        username: name,
        email: email.filter(|e| !e.is_empty()),
    })
}

/// A URL from a string or `{url}` (git+ prefixes and .git suffixes kept as published).
fn url(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("url").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
    .filter(|u| !u.is_empty())
}

/// Entries for tests: `name` at `version` with `manifest`.
#[cfg(test)]
pub(crate) fn test_entry(
    name: &str,
    version: &str,
    manifest: Value,
    readme: Option<&str>,
) -> SearchEntry {
    use crate::domain::{Dist, Manifest, TarballKey};
    let name = PackageName::parse(name).unwrap();
    let version = Version::parse(version).unwrap();
    let package = PackageRecord::new(name.clone(), Utc::now());
    let deprecated = manifest
        .get("deprecated")
        .and_then(Value::as_str)
        .map(str::to_string);
    let live = LiveVersion {
        manifest: Manifest::from_map(manifest.as_object().unwrap()).unwrap(),
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
        has_readme: Some(readme.is_some()),
        deprecated,
    };
    SearchEntry::of(&package, &version, Utc::now(), &live, readme)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(manifest: Value) -> SearchEntry {
        test_entry(
            "@acme/widget",
            "1.2.3",
            manifest,
            Some("# Widget\nMakes widgets."),
        )
    }

    #[test]
    fn people_are_always_objects_with_a_username() {
        let e = entry(json!({
            "description": "  A widget  ",
            "author": "Ann Author <ann@example.com> (https://ann.example)",
            "maintainers": ["Max <max@example.com>", {"name": "Mia"}, 7, {"email": "x@y"}],
            "keywords": "ui, widget  tools",
            "repository": {"type": "git", "url": "git+https://github.com/acme/widget.git"},
            "license": {"type": "MIT"},
        }));
        assert_eq!(e.description, "A widget");
        let author = e.author.clone().unwrap();
        assert_eq!(author.username, "Ann Author");
        assert_eq!(author.email.as_deref(), Some("ann@example.com"));
        let names: Vec<_> = e.maintainers.iter().map(|m| m.username.as_str()).collect();
        assert_eq!(names, ["Max", "Mia"]);
        assert_eq!(e.publisher.as_ref().unwrap().username, "Max");
        assert_eq!(e.keywords, ["ui", "widget", "tools"]);
        assert_eq!(
            e.links.repository.as_deref(),
            Some("git+https://github.com/acme/widget.git")
        );
        assert_eq!(e.license.as_deref(), Some("MIT"));
        assert_eq!(e.readme_terms, ["widget", "makes", "widgets"]);
        assert!(!e.unstable());
    }

    #[test]
    fn a_bare_manifest_makes_an_entry_of_empty_fields() {
        let e = entry(json!({"keywords": [1, "", "ok"], "description": 5}));
        assert_eq!(e.description, "");
        assert_eq!(e.keywords, ["ok"]);
        assert!(e.maintainers.is_empty() && e.publisher.is_none() && e.author.is_none());
    }
}
