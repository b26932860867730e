//! A search as npm sends it: free words and the qualifiers npm documents, with a page.

use super::tokenize;

/// The most results one page may ask for.
pub const MAX_SIZE: usize = 250;
/// The furthest a page may start.
pub const MAX_FROM: usize = 10_000;
/// Results per page when the client names no size (npm's own default).
const DEFAULT_SIZE: usize = 20;
/// Longer search text is refused: no name, keyword or sentence a person searches for is longer.
const MAX_TEXT_BYTES: usize = 1024;

/// A parsed search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// The free text, lowercased, qualifiers removed: compared whole with package names.
    pub text: String,
    /// The words of the free text; every one must match the package somewhere.
    pub terms: Vec<String>,
    /// `keywords:a,b`: at least one of these keywords.
    pub keywords_any: Vec<String>,
    /// `keywords:a+b`: every one of these keywords.
    pub keywords_all: Vec<String>,
    /// `keywords:-a`: none of these keywords.
    pub keywords_none: Vec<String>,
    /// `author:name`.
    pub author: Option<String>,
    /// `maintainer:name`.
    pub maintainer: Option<String>,
    /// `scope:name` (with or without `@`).
    pub scope: Option<String>,
    /// `is:deprecated` (`Some(true)`) or `not:deprecated` (`Some(false)`).
    pub deprecated: Option<bool>,
    /// `is:unstable` or `not:unstable` (pre-1.0 and pre-release versions).
    pub unstable: Option<bool>,
    /// `boost-exact:false` turns off ranking an exact name first.
    pub boost_exact: bool,
    /// Results per page.
    pub size: usize,
    /// Results skipped before the page.
    pub from: usize,
}

impl SearchQuery {
    /// Reads `text` (already form-decoded) and the page's `size` and `from`, as npm sends them.
    /// Sizes and offsets past the limits are clamped to them; what is not a number is refused.
    pub fn parse(
        text: &str,
        size: Option<&str>,
        from: Option<&str>,
    ) -> Result<SearchQuery, String> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(format!("search text is longer than {MAX_TEXT_BYTES} bytes"));
        }
        let number = |value: Option<&str>, what: &str, default: usize| match value {
            None | Some("") => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{what} must be a whole number, not '{v}'")),
        };
        let mut query = SearchQuery {
            size: number(size, "size", DEFAULT_SIZE)?.clamp(1, MAX_SIZE),
            from: number(from, "from", 0)?.min(MAX_FROM),
            boost_exact: true,
            ..SearchQuery::default()
        };
        let mut free = Vec::new();
        for word in text.split_whitespace() {
            let word = word.to_lowercase();
            let Some((qualifier, value)) = word.split_once(':') else {
                free.push(word);
                continue;
            };
            match (qualifier, value) {
                (_, "") => {}
                ("keywords", list) => query.keywords(list),
                ("author", name) => query.author = Some(name.to_string()),
                ("maintainer", name) => query.maintainer = Some(name.to_string()),
                ("scope", scope) => query.scope = Some(scope.trim_start_matches('@').to_string()),
                ("is", flag) => query.flag(flag, true),
                ("not", flag) => query.flag(flag, false),
                ("boost-exact", value) => query.boost_exact = value != "false",
                // Unknown qualifiers (npm's `popularity:` weights and the like) narrow nothing.
                _ if matches!(
                    qualifier,
                    "quality" | "popularity" | "maintenance" | "score-effect"
                ) => {}
                _ => free.push(word),
            }
        }
        query.text = free.join(" ");
        let mut terms: Vec<String> = free.iter().flat_map(|w| tokenize::words(w)).collect();
        let mut seen = std::collections::BTreeSet::new();
        terms.retain(|t| seen.insert(t.clone()));
        query.terms = terms;
        Ok(query)
    }

    /// Reads `keywords:`: `,` separates alternatives, `+` required ones, `-` excluded ones.
    fn keywords(&mut self, list: &str) {
        for part in list.split(',') {
            if let Some(excluded) = part.strip_prefix('-') {
                self.keywords_none.extend(
                    excluded
                        .split('+')
                        .filter(|k| !k.is_empty())
                        .map(str::to_string),
                );
            } else if part.contains('+') {
                self.keywords_all.extend(
                    part.split('+')
                        .filter(|k| !k.is_empty())
                        .map(str::to_string),
                );
            } else if !part.is_empty() {
                self.keywords_any.push(part.to_string());
            }
        }
    }

    /// Reads `is:` and `not:`; flags this registry does not know (`insecure`) narrow nothing.
    fn flag(&mut self, flag: &str, set: bool) {
        match flag {
            "deprecated" => self.deprecated = Some(set),
            "unstable" => self.unstable = Some(set),
            _ => {}
        }
    }

    /// Whether the query has free words (otherwise it lists what the qualifiers allow).
    pub fn has_terms(&self) -> bool {
        !self.terms.is_empty()
    }

    /// Whether the query has qualifiers that narrow what it finds (checked against each
    /// candidate's entry).
    pub fn has_qualifiers(&self) -> bool {
        !self.keywords_any.is_empty()
            || !self.keywords_all.is_empty()
            || self.has_qualifiers_beyond_keywords()
    }

    /// Whether it has a qualifier other than wanted keywords (`keywords:a,b`, `keywords:a+b`).
    pub fn has_qualifiers_beyond_keywords(&self) -> bool {
        !self.keywords_none.is_empty()
            || self.author.is_some()
            || self.maintainer.is_some()
            || self.scope.is_some()
            || self.deprecated.is_some()
            || self.unstable.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_words_and_qualifiers_are_told_apart() {
        let q = SearchQuery::parse(
            "Left-Pad keywords:ui,-old author:Ann is:deprecated not:unstable scope:@acme popularity:1",
            None,
            None,
        )
        .unwrap();
        assert_eq!(q.text, "left-pad");
        assert_eq!(q.terms, ["left", "pad"]);
        assert_eq!(q.keywords_any, ["ui"]);
        assert_eq!(q.keywords_none, ["old"]);
        assert_eq!(q.author.as_deref(), Some("ann"));
        assert_eq!(q.scope.as_deref(), Some("acme"));
        assert_eq!(q.deprecated, Some(true));
        assert_eq!(q.unstable, Some(false));
        assert!(q.boost_exact);
        assert_eq!((q.size, q.from), (20, 0));
    }

    #[test]
    fn keywords_combine_as_npm_documents() {
        let q = SearchQuery::parse("keywords:a+b,c,-d", None, None).unwrap();
        assert_eq!(q.keywords_all, ["a", "b"]);
        assert_eq!(q.keywords_any, ["c"]);
        assert_eq!(q.keywords_none, ["d"]);
        assert!(!q.has_terms());
    }

    #[test]
    fn pages_are_clamped_and_nonsense_refused() {
        let q = SearchQuery::parse("x", Some("1000"), Some("99999")).unwrap();
        assert_eq!((q.size, q.from), (MAX_SIZE, MAX_FROM));
        let q = SearchQuery::parse("x", Some("0"), Some("")).unwrap();
        assert_eq!((q.size, q.from), (1, 0));
        assert!(SearchQuery::parse("x", Some("ten"), None).is_err());
        assert!(SearchQuery::parse("x", None, Some("-1")).is_err());
        assert!(SearchQuery::parse(&"x".repeat(2000), None, None).is_err());
    }

    #[test]
    fn a_scoped_name_is_kept_whole_for_the_exact_match() {
        let q = SearchQuery::parse("@acme/widget", None, None).unwrap();
        assert_eq!(q.text, "@acme/widget");
        assert_eq!(q.terms, ["acme", "widget"]);
    }
}
