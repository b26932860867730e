//! The package list (the home page) and search results: the same list of packages, each with its
//! latest version, description, date and keywords.

use chrono::{DateTime, Utc};

use super::{Html, Layout, PAGE_LIMIT, clip, paging, time};
use crate::web::html::{encode_package_path, encode_query};

/// One package in a list: its latest version's facts.
#[derive(Debug, Clone, Default)]
pub struct ListItem {
    /// The package's name.
    pub name: String,
    /// The version the list shows (`latest`).
    pub version: String,
    /// That version's description.
    pub description: Option<String>,
    /// When that version was published.
    pub published: Option<DateTime<Utc>>,
    /// Whether that version is deprecated (marked, not hidden).
    pub deprecated: bool,
    /// Its keywords; the first few are shown, each a link to a keyword search.
    pub keywords: Vec<String>,
}

/// The home page: one page of packages, in the caller's order (by last publish).
#[derive(Debug, Clone, Default)]
pub struct ListView {
    /// This page's packages.
    pub items: Vec<ListItem>,
    /// This page's number, from 1.
    pub page: usize,
    /// Whether a next page exists.
    pub has_next: bool,
    /// How many packages there are in all, when known.
    pub total: Option<usize>,
}

/// One page of search results, already filtered to what the reader may see.
#[derive(Debug, Clone, Default)]
pub struct SearchView {
    /// The search text as typed.
    pub query: String,
    /// This page's packages, best first.
    pub items: Vec<ListItem>,
    /// How many packages match in all.
    pub total: usize,
    /// This page's number, from 1.
    pub page: usize,
    /// Results per page.
    pub size: usize,
    /// Whether a next page exists.
    pub has_next: bool,
}

/// Characters of a description shown in a list (the package page shows more).
const DESCRIPTION_CHARS: usize = 300;
/// Keywords shown per package in a list.
const KEYWORDS_SHOWN: usize = 8;

/// Renders the package list.
pub fn list_page(layout: &Layout, view: &ListView) -> String {
    let mut h = layout.open(8192 + view.items.len() * 600);
    let tail = paging(view.page.max(1), view.has_next, |page| {
        layout.web(&format!("?page={page}"))
    });
    h.raw("<h1>Packages</h1>\n");
    if let Some(total) = view.total {
        h.raw("<p class=\"muted\">")
            .raw(&count(total, "package", "packages"))
            .raw("</p>\n");
    }
    if view.items.is_empty() {
        if view.page > 1 {
            h.raw("<p>No packages on this page.</p>\n");
        } else {
            h.raw("<p>No packages have been published yet, or none that you can read.</p>\n");
        }
    } else {
        items(&mut h, layout, &view.items, tail.len());
    }
    h.raw(tail.as_str());
    Layout::close(&mut h);
    h.into_string()
}

/// Renders search results (or, for an empty query, a prompt).
pub fn search_page(layout: &Layout, view: &SearchView) -> String {
    let mut h = layout.open(8192 + view.items.len() * 600);
    let query = view.query.trim();
    if query.is_empty() {
        h.raw(
            "<h1>Search</h1>\n<p>Type a package name, a keyword or words from a description \
               in the search box. <code>keywords:</code>, <code>author:</code>, \
               <code>scope:</code> and <code>not:deprecated</code> narrow a search.</p>\n",
        );
        Layout::close(&mut h);
        return h.into_string();
    }
    let tail = paging(view.page.max(1), view.has_next, |page| {
        layout.web(&format!(
            "search?q={}&page={page}",
            encode_query(&view.query)
        ))
    });
    h.raw("<h1>Search results</h1>\n<p>");
    if view.total == 0 {
        h.raw("No packages match \u{201c}")
            .text(&clip(query, 200))
            .raw("\u{201d}.</p>\n<p>Try fewer or shorter words.</p>\n");
    } else {
        h.raw(&count(view.total, "package matches", "packages match"))
            .raw(" \u{201c}")
            .text(&clip(query, 200))
            .raw("\u{201d}.</p>\n");
        if view.items.is_empty() {
            h.raw("<p>No results on this page.</p>\n");
        } else {
            items(&mut h, layout, &view.items, tail.len());
        }
    }
    h.raw(tail.as_str());
    Layout::close(&mut h);
    h.into_string()
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Room kept for the footer and the note on left-out entries.
const CLOSING_BYTES: usize = 1024;
/// Below this much room left, entries are shown as name and version only.
const COMPACT_BELOW: usize = 8 * 1024;

/// The entries, in full while the page has room, then as name and version only, then (with
/// hundreds of long entries on a page) not at all, with a note, so the page stays under the
/// limit whatever the page size.
fn items(h: &mut Html, layout: &Layout, items: &[ListItem], after: usize) {
    let limit = PAGE_LIMIT - CLOSING_BYTES - after;
    h.raw("<ol class=\"packages\">\n");
    for (i, item) in items.iter().enumerate() {
        let mut one = Html::with_capacity(1024);
        entry(&mut one, layout, item, h.len() + COMPACT_BELOW > limit);
        if h.len() + one.len() > limit {
            h.raw("</ol>\n<p class=\"notice\">")
                .raw(&count(items.len() - i, "more entry", "more entries"))
                .raw(" on this page not shown, to keep the page small.</p>\n");
            return;
        }
        h.raw(one.as_str());
    }
    h.raw("</ol>\n");
}

fn entry(h: &mut Html, layout: &Layout, item: &ListItem, compact: bool) {
    h.raw("<li>\n<h2><a href=\"")
        .attr(&layout.web(&format!("package/{}", encode_package_path(&item.name))))
        .raw("\">")
        .text(&clip(&item.name, 214))
        .raw("</a></h2>\n<span class=\"muted\">")
        .text(&clip(&item.version, 64))
        .raw("</span>\n");
    if item.deprecated {
        h.raw("<span class=\"badge-deprecated\">deprecated</span>\n");
    }
    if compact {
        h.raw("</li>\n");
        return;
    }
    if let Some(description) = item.description.as_deref().filter(|d| !d.trim().is_empty()) {
        h.raw("<p>")
            .text(&clip(description, DESCRIPTION_CHARS))
            .raw("</p>\n");
    }
    let keywords: Vec<_> = item
        .keywords
        .iter()
        .filter(|k| !k.trim().is_empty())
        .take(KEYWORDS_SHOWN)
        .collect();
    if item.published.is_some() || !keywords.is_empty() {
        h.raw("<div class=\"muted\">");
        if let Some(at) = &item.published {
            h.raw("Published ");
            time(h, at);
            h.raw("\n");
        }
        keyword_links(h, layout, &keywords);
        h.raw("</div>\n");
    }
    h.raw("</li>\n");
}

/// Keywords as a list of links, each to a search for packages with that keyword.
pub(super) fn keyword_links(h: &mut Html, layout: &Layout, keywords: &[&String]) {
    if keywords.is_empty() {
        return;
    }
    h.raw("<ul class=\"keywords\" aria-label=\"Keywords\">");
    for keyword in keywords {
        let keyword = clip(keyword.trim(), 50);
        h.raw("<li><a href=\"")
            .attr(&layout.web(&format!(
                "search?q={}",
                encode_query(&format!("keywords:{keyword}"))
            )))
            .raw("\">")
            .text(&keyword)
            .raw("</a></li>");
    }
    h.raw("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_page, layout};
    use super::*;

    fn item(name: &str) -> ListItem {
        ListItem {
            name: name.into(),
            version: "1.2.3".into(),
            description: Some("<script>alert(1)</script>".into()),
            published: Some("2024-05-06T07:08:09Z".parse().unwrap()),
            deprecated: false,
            keywords: vec!["http".into(), "a b".into()],
        }
    }

    #[test]
    fn lists_packages_with_links_dates_and_keywords() {
        let view = ListView {
            items: vec![
                item("@acme/widget"),
                ListItem {
                    deprecated: true,
                    ..item("left-pad")
                },
            ],
            page: 2,
            has_next: true,
            total: Some(53),
        };
        let html = list_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("<a href=\"/registry/-/web/package/@acme/widget\">@acme/widget</a>"));
        assert!(html.contains("href=\"/registry/-/web/package/left-pad\""));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("<time datetime=\"2024-05-06T07:08:09Z\">2024-05-06</time>"));
        assert!(html.contains("href=\"/registry/-/web/search?q=keywords%3Ahttp\">http</a>"));
        assert!(html.contains("href=\"/registry/-/web/search?q=keywords%3Aa%20b\">a b</a>"));
        assert!(html.contains("<span class=\"badge-deprecated\">deprecated</span>"));
        assert!(html.contains("53 packages"));
        assert!(html.contains("rel=\"prev\" href=\"/registry/-/web/?page=1\""));
        assert!(html.contains("rel=\"next\" href=\"/registry/-/web/?page=3\""));
    }

    #[test]
    fn an_empty_list_says_so() {
        let html = list_page(&layout(), &ListView::default());
        assert_page(&html);
        assert!(html.contains("No packages have been published yet"));
        assert!(!html.contains("rel=\"next\""));
    }

    #[test]
    fn search_results_page_with_the_query_encoded() {
        let view = SearchView {
            query: "web & \"server\"".into(),
            items: vec![item("@acme/web")],
            total: 21,
            page: 1,
            size: 20,
            has_next: true,
        };
        let html = search_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("21 packages match \u{201c}web &amp; \"server\"\u{201d}"));
        assert!(
            html.contains("href=\"/registry/-/web/search?q=web%20%26%20%22server%22&amp;page=2\"")
        );
        assert!(!html.contains("rel=\"prev\""));
    }

    #[test]
    fn search_without_results_or_query() {
        let view = SearchView {
            query: "<nothing>".into(),
            page: 1,
            size: 20,
            ..SearchView::default()
        };
        let html = search_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("No packages match \u{201c}&lt;nothing&gt;\u{201d}."));
        let html = search_page(&layout(), &SearchView::default());
        assert_page(&html);
        assert!(html.contains("<h1>Search</h1>"));
    }

    #[test]
    fn a_full_page_of_long_entries_stays_small() {
        let long = ListItem {
            name: format!("@{}/{}", "s".repeat(50), "n".repeat(150)),
            version: "1.0.0-beta.123456789".into(),
            description: Some("<&>".repeat(1000)),
            published: Some(Utc::now()),
            deprecated: true,
            keywords: (0..50)
                .map(|i| format!("keyword-{i}-{}", "k".repeat(40)))
                .collect(),
        };
        let view = SearchView {
            query: "\u{e9}".repeat(512),
            items: vec![long; 250],
            total: 1000,
            page: 2,
            size: 20,
            has_next: true,
        };
        let html = search_page(&layout(), &view);
        assert_page(&html);
        assert!(html.contains("more entries on this page not shown"));
        assert!(html.contains("rel=\"next\""));
        let short = ListView {
            items: vec![item("@acme/widget"); 100],
            page: 1,
            has_next: false,
            total: Some(100),
        };
        let html = list_page(&layout(), &short);
        assert_page(&html);
        assert_eq!(html.matches("<h2><a href").count(), 100);
    }
}
