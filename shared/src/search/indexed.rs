//! What the in-memory index holds of one package: what queries filter and rank by, in compact
//! form, and the package's part of a search answer, rendered once as JSON text. About half the
//! memory of a [`SearchEntry`], whose many small strings, options and vectors each cost a
//! header and an allocation: at 50,000 packages that difference decides whether the index fits
//! its 64 MB.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::SearchEntry;
use crate::domain::{PackageName, RepoRef};

/// One indexed package.
#[derive(Debug)]
pub struct Indexed {
    /// The package.
    pub name: PackageName,
    /// The repository it is bound to, if any (access to it decides who finds it).
    pub repository: Option<Box<RepoRef>>,
    /// The package revision this was made at.
    pub revision: u64,
    /// When the shown version was published.
    pub date: DateTime<Utc>,
    /// When the package last changed.
    pub modified: DateTime<Utc>,
    /// Whether the shown version is deprecated.
    pub deprecated: bool,
    /// Whether the shown version is pre-1.0 or a pre-release.
    pub unstable: bool,
    /// Keywords, lowercased, one per line.
    keywords: Box<str>,
    /// The author's and the publisher's names, lowercased, one per line.
    authors: Box<str>,
    /// The maintainers' names, lowercased, one per line.
    maintainers: Box<str>,
    /// npm's `package` object for this package, without `links.npm` (made per answer from the
    /// registry's URL): JSON, deflated against [`DICTIONARY`].
    package: Box<[u8]>,
}

/// What every `package` object spells out (keys, punctuation, common values): deflate finds a
/// short object's repeats here, so ~600 bytes of JSON keep as ~250 instead of ~450.
const DICTIONARY: &[u8] = br#"{"name":"@","scope":"unscoped","version":"1.0.0","description":"A library for the","keywords":["react","typescript","javascript","node","cli","api","plugin","utility"],"date":"2026-01-01T00:00:00.000Z","links":{"homepage":"https://github.com/#readme","repository":"https://github.com/","bugs":"https://github.com/issues"},"maintainers":[{"username":"","email":"@gmail.com"},{"username":"","email":"@users.noreply.github.com"}],"publisher":{"username":"","email":"@example.com"},"author":{"name":"","email":""},"license":"MIT"}"#;

thread_local! {
    /// Each thread's deflater and inflater, reset between uses (building one costs more than a
    /// short object's compression).
    static CODERS: std::cell::RefCell<(flate2::Compress, flate2::Decompress)> = std::cell::RefCell::new((
        flate2::Compress::new(flate2::Compression::fast(), false),
        flate2::Decompress::new(false),
    ));
}

/// `json` deflated against the dictionary (raw deflate).
fn pack(json: &str) -> Box<[u8]> {
    CODERS.with(|coders| {
        let deflater = &mut coders.borrow_mut().0;
        deflater.reset();
        let mut out = Vec::with_capacity(json.len() + 64);
        let packed = deflater.set_dictionary(DICTIONARY).is_ok()
            && matches!(
                deflater.compress_vec(json.as_bytes(), &mut out, flate2::FlushCompress::Finish),
                Ok(flate2::Status::StreamEnd)
            );
        if packed {
            out.into_boxed_slice()
        } else {
            Box::default()
        }
    })
}

/// The JSON text `pack` made, or empty if it does not inflate.
fn unpack(packed: &[u8]) -> String {
    CODERS.with(|coders| {
        let inflater = &mut coders.borrow_mut().1;
        inflater.reset(false);
        let mut out = Vec::with_capacity(packed.len() * 4 + 64);
        if inflater.set_dictionary(DICTIONARY).is_err() {
            return String::new();
        }
        loop {
            let before = inflater.total_in();
            let consumed = usize::try_from(before).unwrap_or(usize::MAX);
            match inflater.decompress_vec(
                packed.get(consumed..).unwrap_or_default(),
                &mut out,
                flate2::FlushDecompress::Finish,
            ) {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) if out.len() == out.capacity() => out.reserve(out.capacity()),
                Ok(_) if inflater.total_in() == before => return String::new(),
                Ok(_) => {}
                Err(_) => return String::new(),
            }
        }
        String::from_utf8(out).unwrap_or_default()
    })
}

/// Lines of lowercased text.
fn lines<'a>(items: impl Iterator<Item = &'a str>) -> Box<str> {
    items
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("\n")
        .into_boxed_str()
}

impl Indexed {
    /// What the index keeps of `entry`.
    pub fn of(entry: &SearchEntry) -> Indexed {
        let mut links = serde_json::Map::new();
        for (key, value) in [
            ("homepage", &entry.links.homepage),
            ("repository", &entry.links.repository),
            ("bugs", &entry.links.bugs),
        ] {
            if let Some(value) = value {
                links.insert(key.into(), json!(value));
            }
        }
        let mut package = json!({
            "name": entry.name.as_str(),
            "scope": entry.name.scope().unwrap_or("unscoped"),
            "version": entry.version.to_string(),
            "description": entry.description,
            "keywords": entry.keywords,
            "date": entry.date.to_rfc3339_opts(SecondsFormat::Millis, true),
            "links": links,
            "maintainers": entry.maintainers,
        });
        if let Some(publisher) = &entry.publisher {
            package["publisher"] = json!(publisher);
        }
        if let Some(author) = &entry.author {
            package["author"] = json!({"name": author.username, "email": author.email});
        }
        if let Some(license) = &entry.license {
            package["license"] = json!(license);
        }
        Indexed {
            name: entry.name.clone(),
            repository: entry.repository.clone().map(Box::new),
            revision: entry.revision,
            date: entry.date,
            modified: entry.modified,
            deprecated: entry.deprecated,
            unstable: entry.unstable(),
            keywords: lines(entry.keywords.iter().map(String::as_str)),
            authors: lines(
                entry
                    .author
                    .iter()
                    .chain(entry.publisher.iter())
                    .map(|p| p.username.as_str()),
            ),
            maintainers: lines(entry.maintainers.iter().map(|p| p.username.as_str())),
            package: pack(&package.to_string()),
        }
    }

    /// npm's `package` object, with `links.npm` pointing at this registry's page of it.
    pub fn package(&self, base_url: &str) -> Value {
        let mut package: Value =
            serde_json::from_str(&unpack(&self.package)).unwrap_or_else(|_| json!({}));
        package["links"]["npm"] = json!(format!(
            "{}/-/web/package/{}",
            base_url.trim_end_matches('/'),
            self.name
        ));
        package
    }

    /// Whether the package has keyword `keyword` (lowercase).
    pub fn has_keyword(&self, keyword: &str) -> bool {
        self.keywords.split('\n').any(|k| k == keyword)
    }

    /// Whether `name` (lowercase) names the author or the publisher: the whole name or one word.
    pub fn authored_by(&self, name: &str) -> bool {
        names(&self.authors, name)
    }

    /// Whether `name` (lowercase) names a maintainer: the whole name or one word.
    pub fn maintained_by(&self, name: &str) -> bool {
        names(&self.maintainers, name)
    }

    /// What the index's accounting counts for this package beyond its slot.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Indexed>()
            + self.name.as_str().len()
            + self.repository.as_ref().map_or(0, |r| {
                std::mem::size_of::<RepoRef>() + r.owner.len() + r.name.len()
            })
            + self.keywords.len()
            + self.authors.len()
            + self.maintainers.len()
            + self.package.len()
    }
}

/// Whether one of `list`'s lines is `name`, or has `name` as one of its words.
fn names(list: &str, name: &str) -> bool {
    list.split('\n')
        .any(|person| person == name || person.split_whitespace().any(|w| w == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::entry::test_entry;

    #[test]
    fn the_compact_form_keeps_what_filters_and_answers_need() {
        let entry = test_entry(
            "@acme/widget",
            "0.3.0",
            json!({
                "description": "Widgets",
                "keywords": ["UI", "widget"],
                "author": "Ann Example <ann@example.com>",
                "maintainers": [{"name": "bob", "email": "bob@example.com"}],
                "homepage": "https://acme.example",
                "license": "MIT",
            }),
            None,
        );
        let held = Indexed::of(&entry);
        assert!(held.unstable && !held.deprecated);
        assert!(held.has_keyword("ui") && held.has_keyword("widget") && !held.has_keyword("x"));
        assert!(held.authored_by("ann") && held.authored_by("ann example"));
        assert!(held.maintained_by("bob") && !held.maintained_by("ann"));
        let package = held.package("https://r.example/");
        assert_eq!(package["name"], "@acme/widget");
        assert_eq!(package["license"], "MIT");
        assert_eq!(
            package["links"],
            json!({"homepage": "https://acme.example", "npm": "https://r.example/-/web/package/@acme/widget"})
        );
        assert_eq!(package["author"]["name"], "Ann Example");
        let text = serde_json::to_string(&Indexed::of(&entry).package("")).unwrap();
        assert!(
            held.package.len() * 2 < text.len(),
            "{} packed of {}",
            held.package.len(),
            text.len()
        );
    }

    #[test]
    fn long_objects_pack_and_unpack_whole() {
        let long = format!("{{\"description\":\"{}\"}}", "word ".repeat(5_000));
        assert_eq!(unpack(&pack(&long)), long);
    }
}
