//! The pages: a view model per page (plain owned data, filled by the HTTP layer) and a renderer
//! from it to a whole HTML document.
//!
//! Every string in a view model is treated as untrusted: text is escaped, URLs are linked only
//! when they are http(s), and fields that can be arbitrarily long are clipped so a page stays
//! under [`PAGE_LIMIT`].

mod list;
mod package;

use chrono::{DateTime, Utc};

pub use list::{ListItem, ListView, SearchView, list_page, search_page};
pub use package::{Dependency, PackageView, Repository, VersionRow, package_page};

use super::assets;
use super::html::Html;

/// The most bytes a page may have before compression.
pub const PAGE_LIMIT: usize = 50 * 1024;

/// The name in the header and in each page's title.
pub const SITE_NAME: &str = "Package registry";

/// What every page's frame shows: where the registry is mounted, the title, who is signed in, and
/// the search box's text.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The registry's path prefix on its host (`""` or `"/registry"`), before `/-/web/`.
    pub base: String,
    /// The page's title, before the site name in `<title>`.
    pub title: String,
    /// The signed-in person's login, shown with a sign-out button.
    pub signed_in_as: Option<String>,
    /// Whether to offer "Sign in with GitHub" to a person not signed in (GitHub mode with the
    /// OAuth app configured).
    pub sign_in_available: bool,
    /// The search box's text (the query of a search page).
    pub search_query: String,
}

impl Layout {
    /// `{base}/-/web/` followed by `rest`.
    fn web(&self, rest: &str) -> String {
        format!("{}/-/web/{rest}", self.base)
    }

    /// The document up to and including `<main>`'s start tag.
    fn open(&self, capacity: usize) -> Html {
        let mut h = Html::with_capacity(capacity);
        h.raw("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
            .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
            .raw("<meta name=\"color-scheme\" content=\"light dark\">\n")
            .raw("<meta name=\"referrer\" content=\"same-origin\">\n<title>");
        if !self.title.is_empty() {
            h.text(&clip(&self.title, 200)).raw(" \u{b7} ");
        }
        h.raw(SITE_NAME)
            .raw("</title>\n<link rel=\"stylesheet\" href=\"")
            .attr(&assets::asset_path(&self.base, assets::style_file()))
            .raw("\">\n<script src=\"")
            .attr(&assets::asset_path(&self.base, assets::copy_file()))
            .raw("\" defer></script>\n</head>\n<body>\n")
            .raw("<a class=\"skip-link\" href=\"#main\">Skip to content</a>\n")
            .raw("<header class=\"site-header\">\n<div class=\"wrap\">\n<a class=\"site-name\" href=\"")
            .attr(&self.web(""))
            .raw("\">")
            .raw(SITE_NAME)
            .raw("</a>\n<form class=\"search\" role=\"search\" method=\"get\" action=\"")
            .attr(&self.web("search"))
            .raw("\">\n<label class=\"visually-hidden\" for=\"search-q\">Search packages</label>\n")
            .raw("<input id=\"search-q\" name=\"q\" type=\"search\" placeholder=\"Search packages\" value=\"")
            .attr(&clip(&self.search_query, 500))
            .raw("\">\n<button type=\"submit\">Search</button>\n</form>\n")
            .raw("<nav class=\"account\" aria-label=\"Site\">\n<ul>\n<li><a href=\"")
            .attr(&self.web(""))
            .raw("\">All packages</a></li>\n");
        if let Some(login) = &self.signed_in_as {
            h.raw("<li>Signed in as <strong>")
                .text(&clip(login, 100))
                .raw("</strong></li>\n<li><form method=\"post\" action=\"")
                .attr(&self.web("logout"))
                .raw("\"><button type=\"submit\">Sign out</button></form></li>\n");
        } else if self.sign_in_available {
            h.raw("<li><a href=\"")
                .attr(&self.web("login"))
                .raw("\">Sign in with GitHub</a></li>\n");
        }
        h.raw("</ul>\n</nav>\n</div>\n</header>\n<main id=\"main\" class=\"wrap\">\n");
        h
    }

    /// Closes `<main>` and the document.
    fn close(h: &mut Html) {
        h.raw("</main>\n<footer class=\"site-footer\">\n<div class=\"wrap\">")
            .raw(SITE_NAME)
            .raw(": an npm-compatible registry. Use it with npm, pnpm, yarn or bun.</div>\n")
            .raw("</footer>\n</body>\n</html>\n");
    }
}

/// A page for a failed request: the status, its reason and what went wrong.
pub fn error_page(layout: &Layout, status: u16, message: &str) -> String {
    let mut h = layout.open(4096);
    h.raw("<h1>")
        .text(&status.to_string())
        .raw(" ")
        .raw(reason(status))
        .raw("</h1>\n<p>")
        .text(&clip(message, 2000))
        .raw("</p>\n<p><a href=\"")
        .attr(&layout.web(""))
        .raw("\">See all packages</a></p>\n");
    Layout::close(&mut h);
    h.into_string()
}

/// A page with one heading and one paragraph (for example "Signed in" at the end of a sign-in
/// that `npm login` started).
pub fn message_page(layout: &Layout, heading: &str, text: &str) -> String {
    let mut h = layout.open(4096);
    h.raw("<h1>")
        .text(&clip(heading, 200))
        .raw("</h1>\n<p>")
        .text(&clip(text, 2000))
        .raw("</p>\n");
    Layout::close(&mut h);
    h.into_string()
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// At most `max` characters of `s`, with `…` when cut.
fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}\u{2026}", &s[..at]).into(),
        None => s.into(),
    }
}

/// A date as `<time>`: the day in UTC, with the full instant for machines.
fn time(h: &mut Html, at: &DateTime<Utc>) {
    h.raw("<time datetime=\"")
        .raw(&at.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .raw("\">")
        .raw(&at.format("%Y-%m-%d").to_string())
        .raw("</time>");
}

/// Previous and next page links, when there are any.
fn paging(page: usize, has_next: bool, link: impl Fn(usize) -> String) -> Html {
    let mut h = Html::default();
    if page <= 1 && !has_next {
        return h;
    }
    h.raw("<nav class=\"pages\" aria-label=\"Pages\">\n");
    if page > 1 {
        h.raw("<a rel=\"prev\" href=\"")
            .attr(&link(page - 1))
            .raw("\">\u{2190} Previous</a>\n");
    }
    h.raw("<span>Page ").raw(&page.to_string()).raw("</span>\n");
    if has_next {
        h.raw("<a rel=\"next\" href=\"")
            .attr(&link(page + 1))
            .raw("\">Next \u{2192}</a>\n");
    }
    h.raw("</nav>\n");
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The checks every page passes: a whole document with its landmarks, no inline script or
    /// style, under the size limit.
    pub(crate) fn assert_page(html: &str) {
        assert!(
            html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"),
            "{html}"
        );
        assert!(html.ends_with("</html>\n"));
        for landmark in [
            "<header class=\"site-header\">",
            "<nav ",
            "<main id=\"main\"",
            "<footer ",
            "href=\"#main\"",
            "<label class=\"visually-hidden\" for=\"search-q\">",
            "id=\"search-q\"",
        ] {
            assert!(html.contains(landmark), "{landmark} missing");
        }
        assert!(!html.contains("style="), "style attribute");
        assert!(!html.contains("<style"), "style element");
        // The one script element is the copy script, from this origin, with no body.
        assert_eq!(html.matches("<script").count(), 1);
        let script_at = html.find("<script").unwrap();
        assert!(html[script_at..].starts_with("<script src=\""));
        assert!(html[script_at..].contains("\" defer></script>"));
        assert!(!contains_event_handler(html), "event handler attribute");
        assert!(html.len() < PAGE_LIMIT, "{} bytes", html.len());
    }

    /// An `on…=` attribute in any tag (escaped text has no `<`, so only markup is looked at).
    fn contains_event_handler(html: &str) -> bool {
        html.split('<').skip(1).any(|tag| {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            tag.to_ascii_lowercase()
                .match_indices(" on")
                .any(|(at, _)| {
                    let rest = &tag[at + 3..];
                    let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                    !name.is_empty() && rest[name.len()..].starts_with('=')
                })
        })
    }

    pub(crate) fn layout() -> Layout {
        Layout {
            base: "/registry".into(),
            title: "Packages".into(),
            signed_in_as: None,
            sign_in_available: true,
            search_query: String::new(),
        }
    }

    #[test]
    fn error_and_message_pages() {
        let html = error_page(&layout(), 404, "No package <x>.");
        assert_page(&html);
        assert!(html.contains("<h1>404 Not Found</h1>"));
        assert!(html.contains("No package &lt;x&gt;."));
        let html = message_page(
            &layout(),
            "Signed in",
            "You can close this tab and return to your terminal.",
        );
        assert_page(&html);
        assert!(html.contains("<h1>Signed in</h1>"));
    }

    #[test]
    fn the_frame_links_search_and_account() {
        let html = error_page(&layout(), 500, "x");
        assert!(html.contains("action=\"/registry/-/web/search\""));
        assert!(html.contains("href=\"/registry/-/web/login\">Sign in with GitHub</a>"));
        assert!(html.contains("href=\"/registry/-/web/static/style."));
        assert!(html.contains("<script src=\"/registry/-/web/static/copy."));
        let signed_in = Layout {
            signed_in_as: Some("<octo>".into()),
            search_query: "\"><script>".into(),
            ..layout()
        };
        let html = error_page(&signed_in, 500, "x");
        assert_page(&html);
        assert!(html.contains("Signed in as <strong>&lt;octo&gt;</strong>"));
        assert!(html.contains("<form method=\"post\" action=\"/registry/-/web/logout\">"));
        assert!(!html.contains("Sign in with GitHub"));
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;\""));
        let closed = Layout {
            sign_in_available: false,
            ..layout()
        };
        assert!(!error_page(&closed, 500, "x").contains("Sign in"));
    }

    #[test]
    fn clips_by_characters() {
        assert_eq!(clip("héllo", 10), "héllo");
        assert_eq!(clip("héllo", 2), "hé\u{2026}");
    }
}
