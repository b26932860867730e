//! A package's page: one version's README, facts and install lines, the version list and the
//! dependencies, read from the full packument the registry serves.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::list::keyword_links;
use super::{Html, Layout, PAGE_LIMIT, clip, time};
use crate::domain::PackageName;
use crate::domain::repository::RepoRef;
use crate::web::html::{encode_package_path, encode_segment};
use crate::web::markdown::render_readme;

/// A package page's content: the shown version's facts and every version's row.
#[derive(Debug, Clone, Default)]
pub struct PackageView {
    /// The package's name.
    pub name: String,
    /// The version shown (`latest` unless a version page asked for another).
    pub version: String,
    /// The `latest` dist-tag's version, when it exists.
    pub latest: Option<String>,
    /// The shown version's description (else the package's).
    pub description: Option<String>,
    /// The shown version's deprecation message.
    pub deprecated: Option<String>,
    /// When the shown version was published.
    pub published: Option<DateTime<Utc>>,
    /// The shown version's README, as Markdown.
    pub readme: Option<String>,
    /// Every version, newest first (by semver precedence).
    pub versions: Vec<VersionRow>,
    /// The shown version's `dependencies`.
    pub dependencies: Vec<Dependency>,
    /// Its `peerDependencies`.
    pub peer_dependencies: Vec<Dependency>,
    /// Its `optionalDependencies`.
    pub optional_dependencies: Vec<Dependency>,
    /// Its licence (an SPDX expression, usually).
    pub license: Option<String>,
    /// Its repository.
    pub repository: Option<Repository>,
    /// Its homepage, only when http(s).
    pub homepage: Option<String>,
    /// `dist.unpackedSize`, in bytes.
    pub unpacked_size: Option<u64>,
    /// `dist.fileCount`.
    pub file_count: Option<u64>,
    /// Who published it (`_npmUser`, else the first maintainer).
    pub publisher: Option<String>,
    /// Its keywords.
    pub keywords: Vec<String>,
}

/// One version in the version list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionRow {
    /// The version.
    pub version: String,
    /// When it was published.
    pub published: Option<DateTime<Utc>>,
    /// The dist-tags pointing at it, `latest` first.
    pub tags: Vec<String>,
    /// Whether it is deprecated.
    pub deprecated: bool,
    /// Whether it carries a registry signature (`dist.signatures`).
    pub signed: bool,
    /// Where its verified provenance says it was built: repository, and workflow file if named.
    pub built_by: Option<(String, Option<String>)>,
}

/// One dependency: a package name and the range asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependency {
    /// The dependency's name.
    pub name: String,
    /// Its range (or alias, tag, URL) as written in package.json.
    pub range: String,
}

/// A package's repository as written, and where a browser can see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repository {
    /// The text shown (the web address when there is one, else the value as written, without
    /// any credentials in it).
    pub text: String,
    /// An http(s) address for the repository, when one can be made: GitHub's, GitLab's and
    /// Bitbucket's shorthands and git URLs become their https pages.
    pub url: Option<String>,
}

impl PackageView {
    /// Reads a full packument for one version: `shown_version`, else `latest`, else the highest
    /// release (else the highest version). `readme_markdown` is that version's README when the
    /// caller has it; otherwise the version's own `readme`, or for `latest` the packument's.
    /// `None` when the packument has no such version (or no versions, or no name).
    pub fn from_packument(
        packument: &Value,
        shown_version: Option<&str>,
        readme_markdown: Option<&str>,
    ) -> Option<Self> {
        let name = packument.get("name")?.as_str()?;
        let versions = packument.get("versions")?.as_object()?;
        let tags = packument
            .get("dist-tags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let latest = tags
            .get("latest")
            .and_then(Value::as_str)
            .filter(|v| versions.contains_key(*v));
        let shown = match shown_version {
            Some(v) => versions.get_key_value(v)?.0.as_str(),
            None => latest.or_else(|| highest(versions))?,
        };
        let manifest = versions.get(shown)?;
        let times = packument.get("time").and_then(Value::as_object);
        let string = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let readme = readme_markdown
            .map(str::to_string)
            .or_else(|| string(manifest, "readme"))
            .or_else(|| {
                if Some(shown) == latest {
                    string(packument, "readme")
                } else {
                    None
                }
            })
            .filter(|r| !r.trim().is_empty());
        let dist = manifest.get("dist");
        let count = |key: &str| dist.and_then(|d| d.get(key)).and_then(Value::as_u64);
        Some(Self {
            name: name.to_string(),
            version: shown.to_string(),
            latest: latest.map(str::to_string),
            description: string(manifest, "description")
                .or_else(|| string(packument, "description")),
            deprecated: deprecation(manifest),
            published: times.and_then(|t| date(t.get(shown)?)),
            readme,
            versions: rows(versions, &tags, times),
            dependencies: dependencies(manifest.get("dependencies")),
            peer_dependencies: dependencies(manifest.get("peerDependencies")),
            optional_dependencies: dependencies(manifest.get("optionalDependencies")),
            license: license(manifest).or_else(|| license(packument)),
            repository: manifest
                .get("repository")
                .or_else(|| packument.get("repository"))
                .and_then(repository),
            homepage: manifest
                .get("homepage")
                .or_else(|| packument.get("homepage"))
                .and_then(Value::as_str)
                .and_then(web_url),
            unpacked_size: count("unpackedSize"),
            file_count: count("fileCount"),
            publisher: publisher(manifest).or_else(|| first_maintainer(packument)),
            keywords: keywords(manifest.get("keywords")),
        })
    }
}

/// The highest release by semver precedence, else the highest prerelease, else any version.
fn highest(versions: &Map<String, Value>) -> Option<&str> {
    let parsed = || {
        versions
            .keys()
            .filter_map(|v| Some((semver::Version::parse(v).ok()?, v.as_str())))
    };
    parsed()
        .filter(|(v, _)| v.pre.is_empty())
        .max()
        .or_else(|| parsed().max())
        .map(|(_, v)| v)
        .or_else(|| versions.keys().next().map(String::as_str))
}

fn date(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// `deprecated` as npm writes it: a message; an empty one means not deprecated.
fn deprecation(manifest: &Value) -> Option<String> {
    match manifest.get("deprecated")? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Bool(true) => Some("This version is deprecated.".to_string()),
        _ => None,
    }
}

fn rows(
    versions: &Map<String, Value>,
    tags: &Map<String, Value>,
    times: Option<&Map<String, Value>>,
) -> Vec<VersionRow> {
    let mut tags_of: std::collections::HashMap<&str, Vec<String>> =
        std::collections::HashMap::new();
    for (tag, version) in tags {
        if let Some(version) = version.as_str() {
            tags_of.entry(version).or_default().push(tag.clone());
        }
    }
    let mut rows: Vec<_> = versions
        .iter()
        .map(|(version, manifest)| {
            let mut row_tags = tags_of.remove(version.as_str()).unwrap_or_default();
            row_tags.sort_by(|a, b| (a != "latest", a).cmp(&(b != "latest", b)));
            VersionRow {
                version: version.clone(),
                published: times.and_then(|t| date(t.get(version)?)),
                tags: row_tags,
                deprecated: deprecation(manifest).is_some(),
                signed: manifest
                    .get("dist")
                    .and_then(|d| d.get("signatures"))
                    .and_then(Value::as_array)
                    .is_some_and(|s| !s.is_empty()),
                built_by: None,
            }
        })
        .collect();
    // Newest first; a version that is not semver (none should be) after the rest.
    rows.sort_by_cached_key(|row| {
        std::cmp::Reverse((
            semver::Version::parse(&row.version).ok(),
            row.version.clone(),
        ))
    });
    rows
}

fn dependencies(value: Option<&Value>) -> Vec<Dependency> {
    value
        .and_then(Value::as_object)
        .map(|deps| {
            deps.iter()
                .map(|(name, range)| Dependency {
                    name: name.clone(),
                    range: match range {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `license` as a string or `{type}`, or the old `licenses: [{type}]`, joined with `OR`.
fn license(manifest: &Value) -> Option<String> {
    fn one(v: &Value) -> Option<&str> {
        match v {
            Value::String(s) => Some(s.as_str()),
            Value::Object(o) => o.get("type")?.as_str(),
            _ => None,
        }
    }
    let text = if let Some(v) = manifest.get("license") {
        one(v)?.to_string()
    } else {
        let all: Vec<_> = manifest
            .get("licenses")?
            .as_array()?
            .iter()
            .filter_map(one)
            .collect();
        all.join(" OR ")
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// `_npmUser`'s name (an object, or `"name <email>"`); the email is never shown.
fn publisher(manifest: &Value) -> Option<String> {
    manifest
        .get("_npmUser")
        .and_then(person)
        .or_else(|| first_maintainer(manifest))
}

fn first_maintainer(doc: &Value) -> Option<String> {
    person(doc.get("maintainers")?.as_array()?.first()?)
}

fn person(value: &Value) -> Option<String> {
    let name = match value {
        Value::Object(o) => o.get("name")?.as_str()?,
        Value::String(s) => s.split(['<', '(']).next()?,
        _ => return None,
    }
    .trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// `keywords` as an array, or the old comma- or space-separated string.
fn keywords(value: Option<&Value>) -> Vec<String> {
    let words: Vec<&str> = match value {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.split([',', ' ']).collect(),
        _ => Vec::new(),
    };
    words
        .into_iter()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// An http(s) URL fit for a link: parsed, without credentials, at most 2,000 bytes.
fn web_url(text: &str) -> Option<String> {
    let mut url = url::Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let url = String::from(url);
    (url.len() <= 2000).then_some(url)
}

/// `repository` (a string or `{url, directory}`) as text and, when possible, a web address.
fn repository(value: &Value) -> Option<Repository> {
    let (text, directory) = match value {
        Value::String(s) => (s.as_str(), None),
        Value::Object(o) => (
            o.get("url")?.as_str()?,
            o.get("directory").and_then(Value::as_str),
        ),
        _ => return None,
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let url = if let Some(repo) = RepoRef::from_manifest(value) {
        let mut url = format!("https://github.com/{}/{}", repo.owner, repo.name);
        let parts: Vec<_> = directory
            .unwrap_or_default()
            .split('/')
            .filter(|p| !p.is_empty() && *p != "." && *p != "..")
            .map(encode_segment)
            .collect();
        if !parts.is_empty() {
            url.push_str("/tree/HEAD/");
            url.push_str(&parts.join("/"));
        }
        Some(url)
    } else {
        other_host(text)
    };
    let text = match &url {
        Some(url) => url.trim_start_matches("https://").to_string(),
        None => without_credentials(text),
    };
    Some(Repository { text, url })
}

/// GitLab's and Bitbucket's shorthands, git and ssh URLs on those hosts (and GitHub's gists), and
/// any other http(s) URL, less `.git`.
fn other_host(text: &str) -> Option<String> {
    const SHORTHANDS: [(&str, &str); 3] = [
        ("gitlab:", "gitlab.com"),
        ("bitbucket:", "bitbucket.org"),
        ("gist:", "gist.github.com"),
    ];
    const KNOWN: [&str; 4] = [
        "github.com",
        "gitlab.com",
        "bitbucket.org",
        "gist.github.com",
    ];
    for (prefix, host) in SHORTHANDS {
        if let Some(path) = text.strip_prefix(prefix) {
            return web_url(&format!("https://{host}/{}", path.trim_end_matches(".git")));
        }
    }
    let rest = text.strip_prefix("git+").unwrap_or(text);
    let git = ["git://", "ssh://git@", "ssh://", "git@"]
        .iter()
        .find_map(|scheme| rest.strip_prefix(scheme));
    let url = match git {
        // A git or ssh address (`host/path` or scp-like `host:path`) on a known host has an
        // https page at the same path; on any other host there may be no web page at all.
        Some(hosted) => {
            let hosted = match hosted.split_once(':') {
                Some((host, path)) if !host.contains('/') => format!("{host}/{path}"),
                _ => hosted.to_string(),
            };
            let url = web_url(&format!("https://{hosted}"))?;
            let host = url::Url::parse(&url).ok()?.host_str()?.to_string();
            if !KNOWN.contains(&host.as_str()) {
                return None;
            }
            url
        }
        None => web_url(rest)?,
    };
    Some(url.strip_suffix(".git").unwrap_or(&url).to_string())
}

/// `scheme://user:secret@host/…` without `user:secret@`.
fn without_credentials(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    text.to_string()
}

/// Versions shown in the list beyond the tagged ones (and the shown one).
const VERSIONS_SHOWN: usize = 100;
/// Bytes the version list may take; older rows beyond it are counted, not shown.
const VERSIONS_BYTES: usize = 14 * 1024;
/// Bytes the dependency lists may take together.
const DEPENDENCIES_BYTES: usize = 14 * 1024;
/// Tags shown on one version's row.
const TAGS_PER_ROW: usize = 6;
/// Room kept for the README's "shortened" note and rounding.
const README_SLACK: usize = 512;

/// Renders a package (or version) page, the README cut to what the rest of the page leaves of
/// [`PAGE_LIMIT`].
pub fn package_page(layout: &Layout, view: &PackageView) -> String {
    let page = render(layout, view, 1);
    if page.len() < PAGE_LIMIT {
        return page;
    }
    // Only with long text in every field (a packument made to be big): shorter lists.
    render(layout, view, 4)
}

/// The page with the version and dependency lists in `1 / shrink` of their usual room.
fn render(layout: &Layout, view: &PackageView, shrink: usize) -> String {
    let latest_shown = view.latest.as_deref() == Some(view.version.as_str());
    let mut h = layout.open(PAGE_LIMIT);
    h.raw("<div class=\"package-grid\">\n<div class=\"package-head\">\n<h1>")
        .text(&clip(&view.name, 214))
        .raw("</h1>\n<p class=\"muted\">")
        .text(&clip(&view.version, 100));
    if let Some(row) = view.versions.iter().find(|r| r.version == view.version) {
        tag_badges(&mut h, &row.tags);
    }
    if let Some(at) = &view.published {
        h.raw(" \u{b7} Published ");
        time(&mut h, at);
    }
    h.raw("</p>\n");
    if let Some(description) = &view.description {
        h.raw("<p>").text(&clip(description, 1000)).raw("</p>\n");
    }
    if let Some(message) = &view.deprecated {
        h.raw("<div class=\"notice\" role=\"note\"><strong>Deprecated:</strong> ")
            .text(&clip(message, 1000))
            .raw("</div>\n");
    }
    if let (false, Some(latest)) = (latest_shown, &view.latest) {
        h.raw("<p class=\"notice\">This is version ")
            .text(&clip(&view.version, 100))
            .raw("; the latest is <a href=\"")
            .attr(&package_href(layout, &view.name, None))
            .raw("\">")
            .text(&clip(latest, 100))
            .raw("</a>.</p>\n");
    }
    h.raw("</div>\n");
    side(&mut h, layout, view, latest_shown);
    h.raw("<div class=\"package-body\">\n<section aria-labelledby=\"sec-readme\">\n")
        .raw("<h2 id=\"sec-readme\">README</h2>\n");

    let mut after = Html::with_capacity(32 * 1024);
    versions(&mut after, layout, view, VERSIONS_BYTES / shrink);
    dependencies_section(&mut after, layout, view, DEPENDENCIES_BYTES / shrink);
    after.raw("</div>\n</div>\n");
    Layout::close(&mut after);

    match &view.readme {
        Some(markdown) => {
            let budget = PAGE_LIMIT.saturating_sub(h.len() + after.len() + README_SLACK);
            let readme = render_readme(markdown, budget);
            h.raw("<div class=\"readme\">\n")
                .raw(&readme.html)
                .raw("\n</div>\n");
            if readme.truncated {
                h.raw(
                    "<p class=\"notice\">README shortened; the full text is in the package \
                       tarball.</p>\n",
                );
            }
        }
        None => {
            h.raw("<p class=\"muted\">No README for this version.</p>\n");
        }
    }
    h.raw("</section>\n").raw(after.as_str());
    h.into_string()
}

fn package_href(layout: &Layout, name: &str, version: Option<&str>) -> String {
    let mut path = format!("package/{}", encode_package_path(name));
    if let Some(version) = version {
        path.push_str("/v/");
        path.push_str(&encode_segment(version));
    }
    layout.web(&path)
}

fn tag_badges(h: &mut Html, tags: &[String]) {
    for tag in tags.iter().take(TAGS_PER_ROW) {
        h.raw(" <span class=\"tag\">")
            .text(&clip(tag, 40))
            .raw("</span>");
    }
    if tags.len() > TAGS_PER_ROW {
        h.raw(" +").raw(&(tags.len() - TAGS_PER_ROW).to_string());
    }
}

/// The install lines (only for a name and version that are safe to paste into a shell) and the
/// facts list.
fn side(h: &mut Html, layout: &Layout, view: &PackageView, latest_shown: bool) {
    h.raw("<aside class=\"package-side\" aria-label=\"Package details\">\n");
    // Legacy names may hold `'`, `(`, `)`, `!`, `*` or `~`, which a shell would read.
    let pasteable = PackageName::parse(&view.name).is_ok()
        && view
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '/' | '.' | '-' | '_'))
        && view.version.len() <= 100
        && view
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    if pasteable {
        let spec = if latest_shown {
            view.name.clone()
        } else {
            format!("{}@{}", view.name, view.version)
        };
        h.raw("<section aria-labelledby=\"sec-install\">\n<h2 id=\"sec-install\">Install</h2>\n")
            .raw("<ul class=\"install\">\n");
        for (tool, command) in [
            ("npm", "npm install"),
            ("pnpm", "pnpm add"),
            ("yarn", "yarn add"),
            ("bun", "bun add"),
        ] {
            let line = format!("{command} {spec}");
            h.raw("<li><code>")
                .text(&line)
                .raw("</code> <button type=\"button\" data-copy=\"")
                .attr(&line)
                .raw("\" aria-label=\"Copy the ")
                .raw(tool)
                .raw(" command\" hidden>Copy</button></li>\n");
        }
        h.raw("</ul>\n<p id=\"copy-status\" class=\"visually-hidden\" role=\"status\"></p>\n")
            .raw("</section>\n");
    }
    h.raw("<dl class=\"details\">\n");
    if let Some(license) = &view.license {
        h.raw("<dt>License</dt><dd>")
            .text(&clip(license, 100))
            .raw("</dd>\n");
    }
    if let Some(repository) = &view.repository {
        h.raw("<dt>Repository</dt><dd>");
        match &repository.url {
            Some(url) => external_link(h, url, &repository.text),
            None => {
                h.text(&clip(&repository.text, 100));
            }
        }
        h.raw("</dd>\n");
    }
    if let Some(homepage) = &view.homepage {
        h.raw("<dt>Homepage</dt><dd>");
        let text = homepage
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        external_link(h, homepage, text);
        h.raw("</dd>\n");
    }
    if let Some(size) = view.unpacked_size {
        h.raw("<dt>Unpacked size</dt><dd>")
            .raw(&human_size(size))
            .raw("</dd>\n");
    }
    if let Some(files) = view.file_count {
        h.raw("<dt>Files</dt><dd>")
            .raw(&files.to_string())
            .raw("</dd>\n");
    }
    if let Some(publisher) = &view.publisher {
        h.raw("<dt>Publisher</dt><dd>")
            .text(&clip(publisher, 100))
            .raw("</dd>\n");
    }
    h.raw("<dt>Versions</dt><dd>")
        .raw(&view.versions.len().to_string())
        .raw("</dd>\n");
    if !view.keywords.is_empty() {
        h.raw("<dt>Keywords</dt><dd>");
        let keywords: Vec<_> = view.keywords.iter().take(12).collect();
        keyword_links(h, layout, &keywords);
        h.raw("</dd>\n");
    }
    h.raw("</dl>\n</aside>\n");
}

fn external_link(h: &mut Html, url: &str, text: &str) {
    h.raw("<a href=\"")
        .attr(url)
        .raw("\" rel=\"noopener noreferrer nofollow\">")
        .text(&clip(text, 80))
        .raw("</a>");
}

/// Bytes as npm prints them: decimal units, one decimal place from kB up.
fn human_size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // a display value; sizes far below 2^52
    let mut value = bytes as f64;
    if value < 1000.0 {
        return format!("{bytes} B");
    }
    for unit in ["kB", "MB", "GB"] {
        value /= 1000.0;
        if value < 1000.0 {
            return format!("{value:.1} {unit}");
        }
    }
    format!("{value:.1} TB")
}

/// The version list: the shown version, every tagged one, then the newest up to
/// [`VERSIONS_SHOWN`], in that priority within `room` bytes, listed newest first; the
/// rest counted in a note.
fn versions(h: &mut Html, layout: &Layout, view: &PackageView, room: usize) {
    let row_html = |row: &VersionRow| {
        let mut one = Html::with_capacity(256);
        one.raw("<tr><td><a href=\"")
            .attr(&package_href(layout, &view.name, Some(&row.version)))
            .raw(if row.version == view.version {
                "\" aria-current=\"page\">"
            } else {
                "\">"
            })
            .text(&clip(&row.version, 100))
            .raw("</a>");
        if row.deprecated {
            one.raw(" <span class=\"badge-deprecated\">deprecated</span>");
        }
        if row.signed {
            one.raw(" <span class=\"badge-signed\" title=\"The registry signed this version (dist.signatures); npm audit signatures checks it\">signed</span>");
        }
        if let Some((repository, workflow)) = &row.built_by {
            one.raw(" <span class=\"badge-provenance\">built by ")
                .text(&clip(repository, 100));
            if let Some(workflow) = workflow {
                one.raw(" workflow ").text(&clip(workflow, 100));
            }
            one.raw("</span>");
        }
        one.raw("</td><td>");
        tag_badges(&mut one, &row.tags);
        one.raw("</td><td>");
        if let Some(at) = &row.published {
            one.raw(&at.format("%Y-%m-%d").to_string());
        }
        one.raw("</td></tr>\n");
        one.into_string()
    };
    let current = |row: &VersionRow| row.version == view.version;
    let by_priority = view
        .versions
        .iter()
        .enumerate()
        .filter(|(_, row)| current(row))
        .chain(
            view.versions
                .iter()
                .enumerate()
                .filter(|(_, row)| !row.tags.is_empty() && !current(row)),
        )
        .chain(
            view.versions
                .iter()
                .enumerate()
                .take(VERSIONS_SHOWN)
                .filter(|(_, row)| row.tags.is_empty() && !current(row)),
        );
    let mut chosen = Vec::new();
    let mut bytes = 0;
    for (i, row) in by_priority {
        let one = row_html(row);
        if bytes + one.len() > room && !current(row) {
            continue;
        }
        bytes += one.len();
        chosen.push((i, one));
    }
    chosen.sort_by_key(|(i, _)| *i);
    h.raw("<section aria-labelledby=\"sec-versions\">\n<h2 id=\"sec-versions\">Versions</h2>\n")
        .raw("<table class=\"versions\">\n<thead><tr><th scope=\"col\">Version</th>")
        .raw("<th scope=\"col\">Tags</th><th scope=\"col\">Published</th></tr></thead>\n<tbody>\n");
    for (_, one) in &chosen {
        h.raw(one);
    }
    h.raw("</tbody>\n</table>\n");
    let hidden = view.versions.len() - chosen.len();
    if hidden > 0 {
        h.raw("<p class=\"muted\">")
            .raw(&hidden.to_string())
            .raw(if hidden == 1 {
                " older version not shown.</p>\n"
            } else {
                " older versions not shown.</p>\n"
            });
    }
    h.raw("</section>\n");
}

fn dependencies_section(h: &mut Html, layout: &Layout, view: &PackageView, room: usize) {
    let total =
        view.dependencies.len() + view.peer_dependencies.len() + view.optional_dependencies.len();
    h.raw("<section aria-labelledby=\"sec-deps\">\n<h2 id=\"sec-deps\">Dependencies (")
        .raw(&total.to_string())
        .raw(")</h2>\n");
    if total == 0 {
        h.raw("<p class=\"muted\">None.</p>\n</section>\n");
        return;
    }
    let start = h.len();
    let mut hidden = 0;
    for (heading, deps) in [
        ("Dependencies", &view.dependencies),
        ("Peer dependencies", &view.peer_dependencies),
        ("Optional dependencies", &view.optional_dependencies),
    ] {
        if deps.is_empty() {
            continue;
        }
        // Only plain dependencies: the section's heading says it all.
        if deps.len() != total || heading != "Dependencies" {
            h.raw("<h3>")
                .raw(heading)
                .raw(" (")
                .raw(&deps.len().to_string())
                .raw(")</h3>\n");
        }
        h.raw("<ul class=\"deps\">\n");
        for dep in deps {
            if h.len() - start > room {
                hidden += 1;
                continue;
            }
            h.raw("<li>");
            if PackageName::parse(&dep.name).is_ok() {
                h.raw("<a href=\"")
                    .attr(&package_href(layout, &dep.name, None))
                    .raw("\">")
                    .text(&dep.name)
                    .raw("</a>");
            } else {
                h.text(&clip(&dep.name, 100));
            }
            h.raw(" ").text(&clip(&dep.range, 60)).raw("</li>\n");
        }
        h.raw("</ul>\n");
    }
    if hidden > 0 {
        h.raw("<p class=\"muted\">")
            .raw(&hidden.to_string())
            .raw(" more not shown; the package.json in the tarball lists them all.</p>\n");
    }
    h.raw("</section>\n");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{assert_page, layout};
    use super::*;

    fn packument() -> Value {
        json!({
            "_id": "@acme/widget",
            "name": "@acme/widget",
            "dist-tags": {"latest": "1.1.0", "beta": "2.0.0-beta.1", "stable": "1.1.0"},
            "versions": {
                "1.0.0": {
                    "name": "@acme/widget", "version": "1.0.0",
                    "description": "Old widget",
                    "dependencies": {"left-pad": "^1.0.0"},
                    "deprecated": "use 1.1",
                    "dist": {"tarball": "http://r.test/@acme/widget/-/widget-1.0.0.tgz",
                             "integrity": "sha512-x", "shasum": "ab"}
                },
                "1.1.0": {
                    "name": "@acme/widget", "version": "1.1.0",
                    "description": "A <b>widget</b>",
                    "license": "MIT",
                    "repository": {"type": "git", "url": "git+https://github.com/acme/widget.git",
                                   "directory": "packages/widget"},
                    "homepage": "https://widget.acme.test/docs",
                    "keywords": ["ui", "widget"],
                    "dependencies": {"@acme/core": "^2.0.0", "react": "^18"},
                    "peerDependencies": {"react-dom": ">=18"},
                    "optionalDependencies": {"fsevents": "^2"},
                    "_npmUser": {"name": "octo", "email": "octo@acme.test"},
                    "dist": {"tarball": "http://r.test/@acme/widget/-/widget-1.1.0.tgz",
                             "integrity": "sha512-y", "shasum": "cd",
                             "unpackedSize": 123_456, "fileCount": 12}
                },
                "2.0.0-beta.1": {
                    "name": "@acme/widget", "version": "2.0.0-beta.1",
                    "maintainers": [{"name": "hubot", "email": "h@acme.test"}],
                    "dist": {"tarball": "http://r.test/x.tgz", "integrity": "sha512-z", "shasum": "ef"}
                }
            },
            "time": {
                "created": "2024-01-01T00:00:00.000Z",
                "modified": "2024-03-01T00:00:00.000Z",
                "1.0.0": "2024-01-01T00:00:00.000Z",
                "1.1.0": "2024-02-01T12:00:00.000Z",
                "2.0.0-beta.1": "2024-03-01T00:00:00.000Z"
            },
            "readme": "# Widget\n\nThe latest README.",
            "repository": "github:acme/widget"
        })
    }

    #[test]
    fn reads_the_latest_version_by_default() {
        let view = PackageView::from_packument(&packument(), None, None).unwrap();
        assert_eq!(view.name, "@acme/widget");
        assert_eq!(view.version, "1.1.0");
        assert_eq!(view.latest.as_deref(), Some("1.1.0"));
        assert_eq!(view.description.as_deref(), Some("A <b>widget</b>"));
        assert_eq!(view.deprecated, None);
        assert_eq!(
            view.readme.as_deref(),
            Some("# Widget\n\nThe latest README.")
        );
        assert_eq!(view.license.as_deref(), Some("MIT"));
        assert_eq!(
            view.repository.as_ref().unwrap().url.as_deref(),
            Some("https://github.com/acme/widget/tree/HEAD/packages/widget")
        );
        assert_eq!(
            view.homepage.as_deref(),
            Some("https://widget.acme.test/docs")
        );
        assert_eq!(
            (view.unpacked_size, view.file_count),
            (Some(123_456), Some(12))
        );
        assert_eq!(view.publisher.as_deref(), Some("octo"));
        assert_eq!(view.keywords, ["ui", "widget"]);
        assert_eq!(view.dependencies.len(), 2);
        assert_eq!(view.peer_dependencies[0].name, "react-dom");
        assert_eq!(view.optional_dependencies[0].range, "^2");
        let order: Vec<_> = view.versions.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(order, ["2.0.0-beta.1", "1.1.0", "1.0.0"]);
        assert_eq!(view.versions[1].tags, ["latest", "stable"]);
        assert!(view.versions[2].deprecated);
        assert_eq!(
            view.published,
            Some("2024-02-01T12:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn a_version_page_reads_that_version() {
        let view = PackageView::from_packument(&packument(), Some("1.0.0"), Some("# Old")).unwrap();
        assert_eq!(view.version, "1.0.0");
        assert_eq!(view.readme.as_deref(), Some("# Old"));
        assert_eq!(view.deprecated.as_deref(), Some("use 1.1"));
        assert_eq!(
            view.dependencies,
            [Dependency {
                name: "left-pad".into(),
                range: "^1.0.0".into()
            }]
        );
        // Repository falls back to the packument's.
        assert_eq!(
            view.repository.unwrap().url.as_deref(),
            Some("https://github.com/acme/widget")
        );
        // The latest README is not an older version's.
        let view = PackageView::from_packument(&packument(), Some("1.0.0"), None).unwrap();
        assert_eq!(view.readme, None);
        let view = PackageView::from_packument(&packument(), Some("2.0.0-beta.1"), None).unwrap();
        assert_eq!(view.publisher.as_deref(), Some("hubot"));
        assert!(PackageView::from_packument(&packument(), Some("9.9.9"), None).is_none());
        assert!(
            PackageView::from_packument(&json!({"name": "x", "versions": {}}), None, None)
                .is_none()
        );
    }

    #[test]
    fn without_latest_the_highest_release_is_shown() {
        let mut p = packument();
        p["dist-tags"] = json!({"beta": "2.0.0-beta.1"});
        let view = PackageView::from_packument(&p, None, None).unwrap();
        assert_eq!(view.version, "1.1.0");
        assert_eq!(view.latest, None);
    }

    #[test]
    fn signed_and_built_by_badges() {
        let mut doc = packument();
        doc["versions"]["1.1.0"]["dist"]["signatures"] =
            serde_json::json!([{ "keyid": "SHA256:k", "sig": "MEUC" }]);
        let mut view = PackageView::from_packument(&doc, None, None).unwrap();
        for row in &mut view.versions {
            if row.version == "1.1.0" {
                row.built_by = Some((
                    "acme/<widget>".into(),
                    Some(".github/workflows/publish.yml".into()),
                ));
            }
        }
        let html = package_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("<span class=\"badge-signed\""), "{html}");
        assert!(html.contains(
            "<span class=\"badge-provenance\">built by acme/&lt;widget&gt; workflow .github/workflows/publish.yml</span>"
        ));
        assert_eq!(
            html.matches("badge-signed\"").count(),
            1,
            "only the signed version"
        );
    }

    #[test]
    fn renders_the_package_page() {
        let view = PackageView::from_packument(&packument(), None, None).unwrap();
        let html = package_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("<h1>@acme/widget</h1>"));
        assert!(html.contains("A &lt;b&gt;widget&lt;/b&gt;"));
        assert!(html.contains("<h2 id=\"readme-widget\">Widget</h2>"));
        assert!(html.contains("<code>npm install @acme/widget</code>"));
        assert!(html.contains("data-copy=\"pnpm add @acme/widget\""));
        assert!(html.contains("<code>yarn add @acme/widget</code>"));
        assert!(html.contains("<code>bun add @acme/widget</code>"));
        assert!(html.contains("hidden>Copy</button>"));
        assert!(html.contains("role=\"status\""));
        assert!(html.contains(
            "<a href=\"/registry/-/web/package/@acme/widget/v/1.0.0\">1.0.0</a> \
             <span class=\"badge-deprecated\">deprecated</span>"
        ));
        assert!(html.contains(
            "href=\"/registry/-/web/package/@acme/widget/v/1.1.0\" aria-current=\"page\">1.1.0</a>"
        ));
        assert!(html.contains("<span class=\"tag\">beta</span>"));
        assert!(
            html.contains("<a href=\"/registry/-/web/package/@acme/core\">@acme/core</a> ^2.0.0")
        );
        assert!(html.contains("<h3>Peer dependencies (1)</h3>"));
        assert!(html.contains("<h3>Optional dependencies (1)</h3>"));
        assert!(html.contains("<dd>MIT</dd>"));
        assert!(html.contains(
            "<a href=\"https://github.com/acme/widget/tree/HEAD/packages/widget\" \
             rel=\"noopener noreferrer nofollow\">github.com/acme/widget/tree/HEAD/packages/widget</a>"
        ));
        assert!(html.contains(">widget.acme.test/docs</a>"));
        assert!(html.contains("<dd>123.5 kB</dd>"));
        assert!(html.contains("<dt>Files</dt><dd>12</dd>"));
        assert!(html.contains("<dt>Publisher</dt><dd>octo</dd>"));
        assert!(!html.contains("octo@acme.test"));
        assert!(html.contains("search?q=keywords%3Aui"));
        assert!(!html.contains("Deprecated:"));
    }

    #[test]
    fn a_version_page_shows_its_dependencies_and_deprecation() {
        let view =
            PackageView::from_packument(&packument(), Some("1.0.0"), Some("Old *README*")).unwrap();
        let html = package_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("<a href=\"/registry/-/web/package/left-pad\">left-pad</a> ^1.0.0"));
        assert!(!html.contains("@acme/core"));
        assert!(html.contains("<strong>Deprecated:</strong> use 1.1"));
        assert!(html.contains("<em>README</em>"));
        assert!(html.contains("<code>npm install @acme/widget@1.0.0</code>"));
        assert!(
            html.contains(
                "the latest is <a href=\"/registry/-/web/package/@acme/widget\">1.1.0</a>"
            )
        );
        let view = PackageView::from_packument(&packument(), Some("2.0.0-beta.1"), None).unwrap();
        let html = package_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("No README for this version."));
        assert!(html.contains("<h2 id=\"sec-deps\">Dependencies (0)</h2>"));
    }

    #[test]
    fn untrusted_strings_are_escaped_and_hostile_urls_not_linked() {
        let p = json!({
            "name": "<script>alert(1)</script>",
            "dist-tags": {"latest": "1.0.0\"><script>", "<img src=x>": "1.0.0\"><script>"},
            "versions": {"1.0.0\"><script>": {
                "description": "<script>alert(1)</script>",
                "repository": "javascript:alert(1)",
                "homepage": "javascript:alert(1)",
                "license": "<b>MIT</b>",
                "keywords": ["\"><script>"],
                "dependencies": {"<img src=x onerror=alert(1)>": "\"><script>"},
                "_npmUser": "<script> <x@y>",
                "deprecated": "<script>alert(1)</script>"
            }},
            "readme": "<script>alert(1)</script>[x](javascript:alert(1))"
        });
        let view = PackageView::from_packument(&p, None, None).unwrap();
        let html = package_page(&layout(), &view);
        assert_page(&html);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("javascript:alert(1)\""), "{html}");
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert_eq!(view.repository.as_ref().unwrap().url, None);
        assert_eq!(view.homepage, None);
        // Not a valid package name: no install lines to paste into a shell.
        assert!(!html.contains("npm install"));
    }

    #[test]
    fn repository_forms() {
        let url = |v: Value| repository(&v).and_then(|r| r.url);
        assert_eq!(
            url(json!("github:o/r")).as_deref(),
            Some("https://github.com/o/r")
        );
        assert_eq!(url(json!("o/r")).as_deref(), Some("https://github.com/o/r"));
        assert_eq!(
            url(json!("git@github.com:o/r.git")).as_deref(),
            Some("https://github.com/o/r")
        );
        assert_eq!(
            url(json!("gitlab:g/p")).as_deref(),
            Some("https://gitlab.com/g/p")
        );
        assert_eq!(
            url(json!("bitbucket:t/p")).as_deref(),
            Some("https://bitbucket.org/t/p")
        );
        assert_eq!(
            url(json!("git+https://gitlab.com/g/sub/p.git")).as_deref(),
            Some("https://gitlab.com/g/sub/p")
        );
        assert_eq!(
            url(json!("git+ssh://git@gitlab.com/g/p.git")).as_deref(),
            Some("https://gitlab.com/g/p")
        );
        assert_eq!(
            url(json!("https://user:token@git.acme.test/p.git")).as_deref(),
            Some("https://git.acme.test/p")
        );
        assert_eq!(url(json!("git://git.acme.test/p.git")), None);
        assert_eq!(url(json!("javascript:alert(1)")), None);
        assert_eq!(url(json!("JaVaScRiPt:alert(1)//github.com/o/r")), None);
        assert_eq!(url(json!("data:text/html,x")), None);
        let r = repository(&json!("ssh://me:secret@git.acme.test/p.git")).unwrap();
        assert_eq!(r.url, None);
        assert_eq!(r.text, "ssh://git.acme.test/p.git");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(59), "59 B");
        assert_eq!(human_size(1_234), "1.2 kB");
        assert_eq!(human_size(5_600_000), "5.6 MB");
    }

    /// 3,000 versions, 300 dependencies and a 100 KB README still make a page under the limit,
    /// with every cut said on the page.
    #[test]
    fn the_worst_case_page_stays_under_the_limit() {
        let mut versions = Map::new();
        let mut times = Map::new();
        let deps: Map<String, Value> = (0..300)
            .map(|i| {
                (
                    format!("@acme/dependency-number-{i}"),
                    json!(format!("^{i}.2.3")),
                )
            })
            .collect();
        for major in 0..30 {
            for minor in 0..100 {
                let v = format!("{major}.{minor}.0");
                versions.insert(
                    v.clone(),
                    json!({"name": "@acme/enormous-package", "version": v,
                           "description": "An enormous package", "dependencies": deps,
                           "deprecated": if minor % 7 == 0 { "old" } else { "" },
                           "dist": {"unpackedSize": 10_000_000, "fileCount": 3000}}),
                );
                times.insert(v, json!("2024-01-01T00:00:00.000Z"));
            }
        }
        let mut tags = Map::new();
        tags.insert("latest".into(), json!("29.99.0"));
        for t in 0..20 {
            tags.insert(format!("tag-{t}"), json!(format!("{t}.5.0")));
        }
        let readme = crate::web::markdown::tests::long_readme();
        assert!(readme.len() >= 100 * 1024);
        let p = json!({"name": "@acme/enormous-package", "dist-tags": tags,
                       "versions": versions, "time": times});
        let view = PackageView::from_packument(&p, None, Some(&readme)).unwrap();
        assert_eq!(view.versions.len(), 3000);
        let html = package_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("README shortened; the full text is in the package tarball."));
        assert!(html.contains("older versions not shown."));
        assert!(html.contains("<span class=\"tag\">tag-3</span>"));
        assert!(html.contains("more not shown; the package.json in the tarball lists them all."));
        assert!(html.contains("<h2 id=\"sec-deps\">Dependencies (300)</h2>"));
        // The README still gets a good part of the page.
        let readme_at = html.find("<div class=\"readme\">").unwrap();
        let readme_end = html[readme_at..].find("README shortened").unwrap();
        assert!(readme_end > 12 * 1024, "README {readme_end} bytes");
    }

    /// Every field as long as the page lets it be, and hostile characters that escape to five
    /// bytes each: still under the limit.
    #[test]
    fn a_packument_made_to_be_big_stays_under_the_limit() {
        let long_url = format!("https://acme.test/{}", "a".repeat(1_970));
        let deps: Map<String, Value> = (0..300)
            .map(|i| {
                (
                    format!("@{}/{i}{}", "s".repeat(100), "d".repeat(100)),
                    json!("&".repeat(100)),
                )
            })
            .collect();
        let mut versions = Map::new();
        for i in 0..3000 {
            let v = format!("{i}.0.0-{}", "p".repeat(200));
            versions.insert(v, json!({"deprecated": "x"}));
        }
        let shown = format!("5.0.0-{}", "p".repeat(200));
        versions.insert(
            shown.clone(),
            json!({
                "description": "<&>".repeat(2000),
                "deprecated": "<&>".repeat(2000),
                "keywords": (0..100).map(|k| format!("{k}{}", "&".repeat(100))).collect::<Vec<_>>(),
                "repository": long_url,
                "homepage": long_url,
                "license": "&".repeat(1000),
                "_npmUser": {"name": "&".repeat(1000)},
                "dependencies": deps,
                "peerDependencies": deps,
                "dist": {"unpackedSize": u64::MAX, "fileCount": u64::MAX}
            }),
        );
        let tags: Map<String, Value> = (0..3000)
            .map(|i| {
                (
                    format!("tag-{i}-{}", "&".repeat(100)),
                    json!(format!("{}.0.0-{}", i % 10, "p".repeat(200))),
                )
            })
            .collect();
        let name = format!("@{}/{}", "s".repeat(100), "n".repeat(100));
        let p = json!({"name": name, "dist-tags": tags, "versions": versions});
        let view = PackageView::from_packument(
            &p,
            Some(&shown),
            Some(&crate::web::markdown::tests::long_readme()),
        )
        .unwrap();
        let layout = Layout {
            title: "&".repeat(1000),
            signed_in_as: Some("&".repeat(1000)),
            search_query: "\"".repeat(1000),
            ..layout()
        };
        // The usual room for the lists does not fit here; the shorter lists do.
        assert!(render(&layout, &view, 1).len() >= PAGE_LIMIT);
        let html = package_page(&layout, &view);
        assert_page(&html);
    }
}
