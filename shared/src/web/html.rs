//! Escaping and a small HTML string builder.
//!
//! Hand-written rather than a template engine: there are five pages, each a few dozen lines of
//! markup, and a builder whose only way to add untrusted text escapes it keeps them readable
//! without a macro crate's compile time.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Escapes text for an element's content: `&`, `<` and `>`.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape(s, |c| matches!(c, '&' | '<' | '>'))
}

/// Escapes text for a double- or single-quoted attribute value: `&`, `<`, `>`, `"` and `'`.
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    escape(s, |c| matches!(c, '&' | '<' | '>' | '"' | '\''))
}

fn escape(s: &str, special: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' if special(c) => out.push_str("&amp;"),
            '<' if special(c) => out.push_str("&lt;"),
            '>' if special(c) => out.push_str("&gt;"),
            '"' if special(c) => out.push_str("&quot;"),
            '\'' if special(c) => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Characters left alone in a path segment: RFC 3986's unreserved ones, plus `@` (scopes) and
/// `+` (build metadata in versions).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b'+');

/// Characters left alone in a query value: RFC 3986's unreserved ones.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment (a version, one part of a package name).
pub fn encode_segment(s: &str) -> Cow<'_, str> {
    utf8_percent_encode(s, SEGMENT).into()
}

/// Percent-encodes a query parameter's value (a search text).
pub fn encode_query(s: &str) -> Cow<'_, str> {
    utf8_percent_encode(s, QUERY_VALUE).into()
}

/// A package name as a URL path: `@scope/name` keeps its one `/` (as npm's own URLs and this
/// registry's routes have it); anything else in either part is percent-encoded.
pub fn encode_package_path(name: &str) -> String {
    match name.strip_prefix('@').and_then(|rest| rest.split_once('/')) {
        Some((scope, base)) => format!("@{}/{}", encode_segment(scope), encode_segment(base)),
        None => encode_segment(name).into_owned(),
    }
}

/// An HTML document being written: markup is added as it is, text only escaped.
#[derive(Debug, Default)]
pub struct Html(String);

impl Html {
    /// An empty document with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(String::with_capacity(capacity))
    }

    /// Adds trusted markup (literals of this module's callers, or sanitised HTML).
    pub fn raw(&mut self, markup: &str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    /// Adds text as element content, escaped.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.0.push_str(&escape_text(text));
        self
    }

    /// Adds text inside a quoted attribute value, escaped.
    pub fn attr(&mut self, value: &str) -> &mut Self {
        self.0.push_str(&escape_attr(value));
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What has been written so far.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The finished document.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape_text("a<b>&\"'"), "a&lt;b&gt;&amp;\"'");
        assert_eq!(escape_attr("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        assert!(matches!(escape_text("plain ü"), Cow::Borrowed(_)));
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(encode_package_path("@acme/x.y_z-1"), "@acme/x.y_z-1");
        assert_eq!(encode_package_path("left-pad"), "left-pad");
        assert_eq!(encode_package_path("a/../b"), "a%2F..%2Fb");
        assert_eq!(encode_package_path("@a/b/c\"<"), "@a/b%2Fc%22%3C");
        assert_eq!(
            encode_segment("1.0.0-beta.1+build.7"),
            "1.0.0-beta.1+build.7"
        );
        assert_eq!(encode_query("keywords:a b&c=d"), "keywords%3Aa%20b%26c%3Dd");
    }
}
