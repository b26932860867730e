//! No manifest confusion: what a publish declares about a version must be what the tarball's own
//! `package/package.json` says, for every field that decides what installing it does.
//!
//! npm installs from the registry's copy of the manifest (dependencies, install scripts, bins),
//! and nothing but the registry ever compared that copy with the tarball (the 2023 "manifest
//! confusion" disclosure). `npm publish` does not send package.json verbatim: it normalises it
//! first (`@npmcli/package-json`'s prepare steps). So both sides are put through the parts of that
//! normalisation that touch the compared fields, and then compared; a client that normalises less
//! (older npm, yarn, pnpm, bun) still matches, since the steps are idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// Dependency maps, each compared name by name.
const DEPENDENCY_FIELDS: [&str; 4] = [
    "dependencies",
    "optionalDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
];
/// Scripts that run when the package is installed (or, for `prepare`, installed from git).
const INSTALL_HOOKS: [&str; 4] = ["preinstall", "install", "postinstall", "prepare"];
/// What npm sets `scripts.install` to for a package with a `*.gyp` file and no install script.
const GYP_INSTALL: &str = "node-gyp rebuild";

/// What the tarball itself says: its package.json and the files npm's normalisation looks at.
#[derive(Debug, Clone, Copy)]
pub struct TarballFacts<'a> {
    /// `package/package.json`, parsed.
    pub manifest: &'a Value,
    /// Whether the package's top directory holds a `*.gyp` file.
    pub has_gyp_file: bool,
    /// The paths below `directories.bin` (relative to it), when the package names one and has no
    /// `bin`: npm makes each file a bin.
    pub bin_dir_paths: Option<&'a [String]>,
}

/// One field (or one entry of a map field) that the two manifests disagree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDifference {
    /// The field, with the entry for a map (`dependencies.left-pad`, `scripts.postinstall`).
    pub field: String,
    /// The document's value, as short JSON (`absent` when it has none).
    pub declared: String,
    /// The tarball's value, the same way.
    pub tarball: String,
}

impl fmt::Display for FieldDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {} in the document but {} in the tarball",
            self.field, self.declared, self.tarball
        )
    }
}

/// The differences found, in field order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestMismatch(pub Vec<FieldDifference>);

impl fmt::Display for ManifestMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the version's manifest does not match package/package.json in the tarball (manifest confusion): ")?;
        const SHOWN: usize = 8;
        for (i, d) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "; and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Compares the publish document's version manifest with the tarball's package.json.
pub fn compare(
    declared: &Map<String, Value>,
    tarball: &TarballFacts<'_>,
) -> Result<(), ManifestMismatch> {
    let empty = Map::new();
    let found = tarball.manifest.as_object().unwrap_or(&empty);
    let mut differences = Vec::new();

    let declared_deps = DependencyFields::of(declared);
    let tarball_deps = DependencyFields::of(found);
    for (field, ours, theirs) in [
        (
            "dependencies",
            &declared_deps.dependencies,
            &tarball_deps.dependencies,
        ),
        (
            "optionalDependencies",
            &declared_deps.optional,
            &tarball_deps.optional,
        ),
        ("peerDependencies", &declared_deps.peer, &tarball_deps.peer),
    ] {
        compare_maps(field, ours, theirs, &mut differences);
    }
    compare_maps(
        DEPENDENCY_FIELDS[3],
        &object_entries(declared.get("peerDependenciesMeta")),
        &object_entries(found.get("peerDependenciesMeta")),
        &mut differences,
    );
    if declared_deps.bundled != tarball_deps.bundled {
        differences.push(FieldDifference {
            field: "bundleDependencies".into(),
            declared: short(&Value::from(
                declared_deps.bundled.iter().cloned().collect::<Vec<_>>(),
            )),
            tarball: short(&Value::from(
                tarball_deps.bundled.iter().cloned().collect::<Vec<_>>(),
            )),
        });
    }

    compare_hooks(declared, found, tarball.has_gyp_file, &mut differences);
    compare_bins(declared, found, tarball.bin_dir_paths, &mut differences);

    for field in ["os", "cpu"] {
        let (ours, theirs) = (
            string_set(declared.get(field)),
            string_set(found.get(field)),
        );
        if ours != theirs {
            differences.push(whole(field, declared.get(field), found.get(field)));
        }
    }
    compare_maps(
        "engines",
        &object_entries(declared.get("engines")),
        &object_entries(found.get("engines")),
        &mut differences,
    );
    let not_object = |m: &Map<String, Value>| m.get("engines").is_some_and(|e| !e.is_object());
    if (not_object(declared) || not_object(found))
        && declared.get("engines") != found.get("engines")
    {
        differences.push(whole(
            "engines",
            declared.get("engines"),
            found.get("engines"),
        ));
    }
    if license(declared) != license(found) {
        differences.push(whole("license", license(declared), license(found)));
    }

    if differences.is_empty() {
        Ok(())
    } else {
        Err(ManifestMismatch(differences))
    }
}

/// A manifest's dependency maps after npm's normalisation of them.
struct DependencyFields {
    dependencies: BTreeMap<String, Value>,
    optional: BTreeMap<String, Value>,
    peer: BTreeMap<String, Value>,
    bundled: BTreeSet<String>,
}

impl DependencyFields {
    fn of(manifest: &Map<String, Value>) -> Self {
        let mut dependencies = dependency_map(manifest.get("dependencies"));
        let optional = dependency_map(manifest.get("optionalDependencies"));
        let peer = dependency_map(manifest.get("peerDependencies"));
        let bundled: BTreeSet<String> = match manifest
            .get("bundleDependencies")
            .or_else(|| manifest.get("bundledDependencies"))
        {
            Some(Value::Bool(true)) => dependencies.keys().cloned().collect(),
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            Some(Value::Object(names)) => names.keys().cloned().collect(),
            _ => BTreeSet::new(),
        };
        // npm adds a bundled name missing from `dependencies` as `*`; npm 6 also copied every
        // optional dependency into `dependencies`, and npm 7+ dedupes them out again: both
        // sides get the first and lose the optional ones from `dependencies`.
        for name in &bundled {
            if !dependencies.contains_key(name) && !optional.contains_key(name) {
                dependencies.insert(name.clone(), Value::from("*"));
            }
        }
        for name in optional.keys() {
            dependencies.remove(name);
        }
        Self {
            dependencies,
            optional,
            peer,
            bundled,
        }
    }
}

/// A dependency map as npm normalises it: a string or an array of `name@range` becomes an object,
/// entries that are not strings go, git references are compared by what they point at.
fn dependency_map(value: Option<&Value>) -> BTreeMap<String, Value> {
    let listed = |items: Vec<&str>| -> BTreeMap<String, Value> {
        items
            .into_iter()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                let split = d
                    .find(|c: char| c == '@' || c.is_whitespace() || "><=".contains(c))
                    .unwrap_or(d.len());
                let (name, range) = d.split_at(split);
                let range = range.strip_prefix('@').unwrap_or(range).trim();
                (name.to_string(), Value::from(range))
            })
            .collect()
    };
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(name, spec)| {
                spec.as_str()
                    .map(|spec| (name.clone(), Value::from(canonical_spec(spec))))
            })
            .collect(),
        Some(Value::String(text)) => listed(
            text.split(|c: char| c.is_whitespace() || c == ',')
                .collect(),
        ),
        Some(Value::Array(items)) => listed(items.iter().filter_map(Value::as_str).collect()),
        _ => BTreeMap::new(),
    }
}

/// A dependency spec with git references to GitHub, GitLab and Bitbucket in one form, since npm
/// rewrites them (`user/repo` → `github:user/repo`, URLs to its preferred form).
fn canonical_spec(spec: &str) -> String {
    hosted_git(spec).unwrap_or_else(|| spec.to_string())
}

fn hosted_git(spec: &str) -> Option<String> {
    let (body, committish) = spec.split_once('#').unwrap_or((spec, ""));
    let (host, path) = if let Some((prefix, path)) = body.split_once(':')
        && ["github", "gitlab", "bitbucket", "gist"].contains(&prefix)
    {
        (format!("{prefix}.com"), path.to_string())
    } else if !body.contains(':')
        && body.matches('/').count() == 1
        && !body.starts_with(['@', '.', '/', '~'])
        && !body.contains(char::is_whitespace)
    {
        ("github.com".to_string(), body.to_string())
    } else {
        let rest = body.strip_prefix("git+").unwrap_or(body);
        let rest = ["https://", "http://", "ssh://", "git://"]
            .iter()
            .find_map(|scheme| rest.strip_prefix(scheme))
            .or_else(|| rest.strip_prefix("git@"))?;
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let split = rest.find([':', '/'])?;
        let (host, path) = rest.split_at(split);
        (
            host.trim_start_matches("www.").to_string(),
            path[1..].to_string(),
        )
    };
    let host = host.to_ascii_lowercase();
    if ![
        "github.com",
        "gitlab.com",
        "bitbucket.org",
        "bitbucket.com",
        "gist.com",
    ]
    .contains(&host.as_str())
    {
        return None;
    }
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    if path.split('/').filter(|p| !p.is_empty()).count() < 2 {
        return None;
    }
    let host = host.replace("bitbucket.com", "bitbucket.org");
    Some(format!(
        "git:{host}/{}#{committish}",
        path.to_ascii_lowercase()
    ))
}

/// The entries of an object field (none for anything else).
fn object_entries(value: Option<&Value>) -> BTreeMap<String, Value> {
    value
        .and_then(Value::as_object)
        .map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Records each name whose entry differs between the two maps.
fn compare_maps(
    field: &str,
    declared: &BTreeMap<String, Value>,
    tarball: &BTreeMap<String, Value>,
    differences: &mut Vec<FieldDifference>,
) {
    let names: BTreeSet<&String> = declared.keys().chain(tarball.keys()).collect();
    for name in names {
        let (ours, theirs) = (declared.get(name), tarball.get(name));
        if ours != theirs {
            differences.push(whole(&format!("{field}.{name}"), ours, theirs));
        }
    }
}

/// Install hooks, as npm normalises scripts: strings only, `node_modules/.bin/` dropped from the
/// front, and `install` set to `node-gyp rebuild` for a package with a `.gyp` file and no install
/// script (a document that leaves that implied install out still matches).
fn compare_hooks(
    declared: &Map<String, Value>,
    found: &Map<String, Value>,
    has_gyp_file: bool,
    differences: &mut Vec<FieldDifference>,
) {
    let hooks = |manifest: &Map<String, Value>| -> BTreeMap<&'static str, String> {
        let scripts = manifest.get("scripts").and_then(Value::as_object);
        INSTALL_HOOKS
            .iter()
            .filter_map(|hook| {
                let script = scripts?.get(*hook)?.as_str()?;
                Some((*hook, strip_bin_prefix(script).to_string()))
            })
            .collect()
    };
    let ours = hooks(declared);
    let mut theirs = hooks(found);
    let gyp_implied = has_gyp_file
        && !theirs.contains_key("install")
        && !theirs.contains_key("preinstall")
        && found.get("gypfile") != Some(&Value::Bool(false));
    if gyp_implied {
        theirs.insert("install", GYP_INSTALL.to_string());
    }
    for hook in INSTALL_HOOKS {
        let (a, b) = (ours.get(hook), theirs.get(hook));
        if a == b || (hook == "install" && gyp_implied && a.is_none()) {
            continue;
        }
        differences.push(whole(
            &format!("scripts.{hook}"),
            a.map(|s| Value::from(s.as_str())).as_ref(),
            b.map(|s| Value::from(s.as_str())).as_ref(),
        ));
    }
}

fn strip_bin_prefix(script: &str) -> &str {
    let rest = script
        .strip_prefix("./")
        .or_else(|| script.strip_prefix(".\\"))
        .unwrap_or(script);
    for prefix in [
        "node_modules/.bin/",
        "node_modules\\.bin\\",
        "node_modules/.bin\\",
        "node_modules\\.bin/",
    ] {
        if let Some(stripped) = rest.strip_prefix(prefix) {
            return stripped;
        }
    }
    script
}

/// Bins, as npm normalises them (a string or an array becomes a map; names and targets are
/// cleaned paths), and for a tarball with only `directories.bin`, every file below it.
fn compare_bins(
    declared: &Map<String, Value>,
    found: &Map<String, Value>,
    bin_dir_paths: Option<&[String]>,
    differences: &mut Vec<FieldDifference>,
) {
    let ours = normal_bins(declared);
    let from_dir = found
        .get("bin")
        .is_none()
        .then(|| {
            let dir = found.get("directories")?.get("bin")?.as_str()?;
            Some(dir_bins(
                &secure_path(dir),
                bin_dir_paths.unwrap_or_default(),
            ))
        })
        .flatten();
    let Some(candidates) = from_dir else {
        compare_maps(
            "bin",
            &value_map(&ours),
            &value_map(&normal_bins(found)),
            differences,
        );
        return;
    };
    // A file name found twice below the directory may be either file: npm keeps whichever its
    // directory walk saw last.
    let names: BTreeSet<&String> = ours.keys().chain(candidates.keys()).collect();
    for name in names {
        let fine = match (ours.get(name), candidates.get(name)) {
            (Some(target), Some(options)) => options.contains(target),
            _ => false,
        };
        if !fine {
            differences.push(whole(
                &format!("bin.{name}"),
                ours.get(name).map(|t| Value::from(t.as_str())).as_ref(),
                candidates
                    .get(name)
                    .and_then(|o| o.iter().next())
                    .map(|t| Value::from(t.as_str()))
                    .as_ref(),
            ));
        }
    }
}

fn value_map(bins: &BTreeMap<String, String>) -> BTreeMap<String, Value> {
    bins.iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect()
}

/// npm's `normalizePackageBin`.
fn normal_bins(manifest: &Map<String, Value>) -> BTreeMap<String, String> {
    let entries: Vec<(String, String)> = match manifest.get("bin") {
        Some(Value::String(target)) => manifest
            .get("name")
            .and_then(Value::as_str)
            .map(|name| vec![(name.to_string(), target.clone())])
            .unwrap_or_default(),
        Some(Value::Array(targets)) => targets
            .iter()
            .filter_map(Value::as_str)
            .map(|t| (basename(t).to_string(), t.to_string()))
            .collect(),
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        _ => Vec::new(),
    };
    let mut bins = BTreeMap::new();
    for (name, target) in entries {
        let name = basename(&secure_path(&name)).to_string();
        let target = secure_path(&target);
        if !name.is_empty() && !target.is_empty() {
            bins.insert(name, target);
        }
    }
    bins
}

/// The bins npm derives from `directories.bin`: each path below it (not starting with a dot),
/// named by its last component. Several paths may share a name.
fn dir_bins(dir: &str, paths: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut bins: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in paths {
        if path.is_empty() || path.starts_with('.') {
            continue;
        }
        // glob's `**` does not descend into dot-directories.
        if path.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        bins.entry(basename(path).to_string())
            .or_default()
            .insert(format!("{dir}/{}", secure_path(path)));
    }
    bins
}

/// npm's `secureAndUnixifyPath`: backslashes and colons become slashes, the path is resolved
/// as if under `/` (so `..` cannot leave it) and made relative again.
fn secure_path(path: &str) -> String {
    let unix = path.replace(['\\', ':'], "/");
    let mut parts: Vec<&str> = Vec::new();
    for part in unix.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = parts.join("/");
    if !out.is_empty() && unix.ends_with('/') {
        out.push('/');
    }
    out
}

/// `path.basename` (a trailing slash ignored).
fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// `os`/`cpu` as a set of strings (a lone string is a list of one).
fn string_set(value: Option<&Value>) -> BTreeSet<String> {
    match value {
        Some(Value::String(s)) => BTreeSet::from([s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// The license as declared (`licence` is npm's accepted misspelling).
fn license(manifest: &Map<String, Value>) -> Option<&Value> {
    manifest
        .get("license")
        .or_else(|| manifest.get("licence"))
        .filter(|v| !v.is_null())
}

fn whole(field: &str, declared: Option<&Value>, tarball: Option<&Value>) -> FieldDifference {
    FieldDifference {
        field: field.to_string(),
        declared: declared.map_or_else(|| "absent".to_string(), short),
        tarball: tarball.map_or_else(|| "absent".to_string(), short),
    }
}

/// Compact JSON, cut to a length an error message can carry.
fn short(value: &Value) -> String {
    const MAX: usize = 80;
    let text = value.to_string();
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(declared: Value, tarball: Value) -> Result<(), ManifestMismatch> {
        check_with(declared, tarball, false, None)
    }

    fn check_with(
        declared: Value,
        tarball: Value,
        has_gyp_file: bool,
        bin_dir_paths: Option<&[String]>,
    ) -> Result<(), ManifestMismatch> {
        compare(
            declared.as_object().unwrap(),
            &TarballFacts {
                manifest: &tarball,
                has_gyp_file,
                bin_dir_paths,
            },
        )
    }

    fn fields(result: Result<(), ManifestMismatch>) -> Vec<String> {
        result.unwrap_err().0.into_iter().map(|d| d.field).collect()
    }

    #[test]
    fn what_npm_publish_adds_is_not_a_difference() {
        let raw = json!({
            "name": "@s/tool", "version": "v1.0.0",
            "bin": "./cli.js",
            "bundledDependencies": ["a"],
            "dependencies": { "a": "^1", "b": "user/repo#v1", "o": "^2" },
            "optionalDependencies": { "o": "^2" },
            "scripts": { "postinstall": "node_modules/.bin/husky install", "test": 1 },
            "os": "linux",
            "license": "MIT",
        });
        let published = json!({
            "name": "@s/tool", "version": "1.0.0", "_id": "@s/tool@1.0.0",
            "_npmVersion": "11.0.0", "readme": "hi", "gitHead": "abc",
            "bin": { "tool": "cli.js" },
            "bundleDependencies": ["a"],
            "dependencies": { "a": "^1", "b": "github:user/repo#v1" },
            "optionalDependencies": { "o": "^2" },
            "scripts": { "postinstall": "husky install" },
            "os": ["linux"],
            "license": "MIT",
            "dist": { "integrity": "sha512-x" },
        });
        check(published, raw).unwrap();
    }

    #[test]
    fn dependencies_the_document_hides_are_refused() {
        let raw = json!({ "name": "p", "version": "1.0.0",
            "dependencies": { "left-pad": "^1", "evil": "^6.6.6" } });
        let doc = json!({ "name": "p", "version": "1.0.0", "dependencies": { "left-pad": "^1" } });
        let err = check(doc, raw).unwrap_err();
        assert_eq!(err.0[0].field, "dependencies.evil");
        assert_eq!(err.0[0].declared, "absent");
        assert!(
            err.to_string().contains(
                "dependencies.evil is absent in the document but \"^6.6.6\" in the tarball"
            ),
            "{err}"
        );
    }

    #[test]
    fn install_scripts_the_document_hides_are_refused() {
        let raw = json!({ "name": "p", "version": "1.0.0",
            "scripts": { "postinstall": "node steal.js", "test": "jest" } });
        let doc = json!({ "name": "p", "version": "1.0.0", "scripts": { "test": "jest" } });
        assert_eq!(fields(check(doc, raw)), ["scripts.postinstall"]);
        // Scripts that do not run on install may differ (npm publish may add `start`).
        let raw = json!({ "name": "p", "version": "1.0.0", "scripts": { "test": "a" } });
        let doc = json!({ "name": "p", "version": "1.0.0", "scripts": { "test": "b", "start": "node server.js" } });
        check(doc, raw).unwrap();
    }

    #[test]
    fn a_gyp_file_implies_an_install_script() {
        let raw = json!({ "name": "p", "version": "1.0.0" });
        let with = json!({ "name": "p", "version": "1.0.0", "gypfile": true,
            "scripts": { "install": "node-gyp rebuild" } });
        check_with(with.clone(), raw.clone(), true, None).unwrap();
        check_with(
            json!({ "name": "p", "version": "1.0.0" }),
            raw.clone(),
            true,
            None,
        )
        .unwrap();
        // Without the file, the document's install script is its own.
        assert_eq!(
            fields(check_with(with, raw, false, None)),
            ["scripts.install"]
        );
    }

    #[test]
    fn every_compared_field_is_compared() {
        let base = json!({ "name": "p", "version": "1.0.0" });
        for (field, value) in [
            ("optionalDependencies", json!({ "x": "1" })),
            ("peerDependencies", json!({ "x": "1" })),
            ("peerDependenciesMeta", json!({ "x": { "optional": true } })),
            ("bundleDependencies", json!(["x"])),
            ("bin", json!({ "x": "x.js" })),
            ("os", json!(["linux"])),
            ("cpu", json!(["x64"])),
            ("engines", json!({ "node": ">=20" })),
            ("license", json!("MIT")),
            ("scripts", json!({ "preinstall": "x" })),
            ("scripts", json!({ "prepare": "x" })),
        ] {
            let mut raw = base.clone();
            raw[field] = value;
            assert!(check(base.clone(), raw).is_err(), "{field}");
        }
    }

    #[test]
    fn bins_from_the_bin_directory() {
        let raw = json!({ "name": "p", "version": "1.0.0", "directories": { "bin": "./bin" } });
        let paths = ["a.js".to_string(), "sub".to_string(), "sub/b".to_string()];
        let doc = json!({ "name": "p", "version": "1.0.0",
            "bin": { "a.js": "bin/a.js", "sub": "bin/sub", "b": "bin/sub/b" } });
        check_with(doc, raw.clone(), false, Some(&paths)).unwrap();
        let doc = json!({ "name": "p", "version": "1.0.0", "bin": { "a.js": "bin/a.js" } });
        assert_eq!(
            fields(check_with(doc, raw, false, Some(&paths))),
            ["bin.b", "bin.sub"]
        );
    }

    #[test]
    fn paths_are_cleaned_as_npm_cleans_them() {
        assert_eq!(secure_path("./bin/../cli.js"), "cli.js");
        assert_eq!(secure_path("../../etc/passwd"), "etc/passwd");
        assert_eq!(secure_path("bin\\win.cmd"), "bin/win.cmd");
        assert_eq!(basename("@s/tool"), "tool");
    }

    #[test]
    fn git_references_compare_by_what_they_point_at() {
        for (a, b) in [
            ("user/repo", "github:user/repo"),
            (
                "git+https://github.com/User/Repo.git#v1",
                "github:user/repo#v1",
            ),
            ("git+ssh://git@github.com/user/repo.git", "github:user/repo"),
            ("git@github.com:user/repo.git", "git://github.com/user/repo"),
        ] {
            assert_eq!(canonical_spec(a), canonical_spec(b), "{a} {b}");
        }
        assert_ne!(canonical_spec("user/repo"), canonical_spec("user/other"));
        assert_ne!(canonical_spec("user/repo#a"), canonical_spec("user/repo#b"));
        assert_eq!(canonical_spec("^1.2.3"), "^1.2.3");
        assert_eq!(canonical_spec("npm:other@1"), "npm:other@1");
        assert_eq!(canonical_spec("file:../x"), "file:../x");
    }

    #[test]
    fn legacy_dependency_shapes() {
        let raw = json!({ "name": "p", "version": "1.0.0", "dependencies": ["a@1", "b"] });
        let doc = json!({ "name": "p", "version": "1.0.0", "dependencies": { "a": "1", "b": "" } });
        check(doc, raw).unwrap();
    }

    #[test]
    fn long_values_are_cut() {
        let raw = json!({ "name": "p", "version": "1.0.0", "license": "x".repeat(500) });
        let doc = json!({ "name": "p", "version": "1.0.0" });
        let err = check(doc, raw).unwrap_err();
        assert!(err.0[0].tarball.len() < 100);
    }
}
