//! README rendering: Markdown to HTML with pulldown-cmark, then sanitised with ammonia, then cut
//! to a byte budget at a block boundary so a package page stays small.
//!
//! A README is whatever a publisher put in their tarball, so its HTML is hostile until ammonia has
//! seen it: pulldown-cmark passes raw HTML through, and the sanitiser is what keeps scripts, event
//! handlers, frames, forms, SVG and `javascript:`/`data:` URLs out. Images are kept only from
//! `https:` (the one external resource a page may load); relative links other than `#fragment`
//! are dropped, as they would point into this registry's own paths.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// The prefix ammonia puts on every `id` in a README (and that fragment links are rewritten to),
/// so a README's anchors can neither collide with the page's own (`main`, `versions`) nor
/// clobber anything.
const ID_PREFIX: &str = "readme-";

/// A README rendered for a page: sanitised HTML and whether it was cut to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedReadme {
    /// Sanitised HTML, safe to put inside an element of a page as it is.
    pub html: String,
    /// The README was longer than the budget and was cut at a block boundary; the page says so.
    pub truncated: bool,
}

/// Renders a README's Markdown (CommonMark with GitHub's tables, strikethrough, task lists and
/// footnotes) to sanitised HTML of at most `budget_bytes` bytes.
///
/// The cut falls between top-level blocks (a paragraph, a list, a code block), so no block is
/// shown half; only when no block boundary falls in the upper half of the budget is the text cut
/// inside a block (at a character boundary, then sanitised again, which closes every open element
/// and drops a tag left unfinished). A README many times the budget is first cut at a line
/// ending, so a megabyte of Markdown is not parsed and sanitised to show fifty kilobytes of it.
pub fn render_readme(markdown: &str, budget_bytes: usize) -> RenderedReadme {
    let source_limit = budget_bytes.saturating_mul(4).max(64 * 1024);
    let (markdown, source_cut) = if markdown.len() > source_limit {
        let head = &markdown[..markdown.floor_char_boundary(source_limit)];
        (&head[..head.rfind('\n').unwrap_or(head.len())], true)
    } else {
        (markdown, false)
    };
    let marker = block_marker();
    let raw = to_html(markdown, &marker);
    let clean = SANITISER.clean(&raw).to_string();
    let whole_len = clean.len() - clean.matches(marker.as_str()).count() * marker.len();
    if whole_len <= budget_bytes {
        return RenderedReadme {
            html: clean.replace(marker.as_str(), ""),
            truncated: source_cut,
        };
    }
    RenderedReadme {
        html: cut(&clean, &marker, budget_bytes),
        truncated: true,
    }
}

/// A marker put between top-level blocks: random, so no README can forge one. It is plain
/// alphanumeric text, which the sanitiser keeps and escapes to itself.
fn block_marker() -> String {
    format!(
        "zQcut{:016x}{:016x}Qz",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// The longest prefix of the sanitised `clean` that fits in `budget`, cut at a block marker, sanitised
/// again (a marker can sit inside a raw `<details>` that closes later) and without the markers.
fn cut(clean: &str, marker: &str, budget: usize) -> String {
    // Byte offsets of the markers, each paired with the length of the text before it without
    // the earlier markers (what the reader would get).
    let mut boundaries = Vec::new();
    let mut searched = 0;
    while let Some(found) = clean[searched..].find(marker) {
        let at = searched + found;
        boundaries.push((at, at - boundaries.len() * marker.len()));
        searched = at + marker.len();
    }
    let mut candidates = boundaries
        .iter()
        .rev()
        .filter(|&&(_, shown)| shown <= budget && shown >= budget / 2)
        .map(|&(at, _)| at);
    for at in candidates.by_ref().take(8) {
        let html = resanitise(&clean[..at], marker);
        if html.len() <= budget {
            return html;
        }
    }
    // No block boundary in the upper half of the budget: cut inside a block, shrinking until
    // the closing tags the sanitiser adds fit too.
    let text = clean.replace(marker, "");
    let mut end = budget.min(text.len());
    loop {
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut prefix = &text[..end];
        // A tag cut open would be dropped by the parser anyway; dropping it here keeps the
        // text before it.
        if let Some(open) = prefix.rfind('<')
            && !prefix[open..].contains('>')
        {
            prefix = &prefix[..open];
        }
        let html = SANITISER.clean(prefix).to_string();
        if html.len() <= budget || end == 0 {
            return html;
        }
        end = end.saturating_sub((html.len() - budget).max(64));
    }
}

fn resanitise(prefix: &str, marker: &str) -> String {
    SANITISER.clean(prefix).to_string().replace(marker, "")
}

/// Markdown to unsanitised HTML, with `marker` after each top-level block, headings one level
/// down with ids made from their text (as GitHub makes them, so a README's table of contents
/// links work), task list
/// boxes as text (no form controls on the page) and table alignment as `align` (the page's
/// Content-Security-Policy refuses `style` attributes).
fn to_html(markdown: &str, marker: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_GFM;
    let mut events = Vec::new();
    let mut depth = 0usize;
    let mut slugs = Slugs::default();
    let mut heading: Option<(HeadingLevel, Vec<Event>)> = None;
    for event in Parser::new_ext(markdown, options) {
        let event = match event {
            Event::TaskListMarker(done) => Event::Text(CowStr::Borrowed(if done {
                "\u{2611} "
            } else {
                "\u{2610} "
            })),
            other => other,
        };
        match &event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        if let Some((level, buffered)) = &mut heading {
            if matches!(event, Event::End(TagEnd::Heading(_))) {
                let level = *level;
                let inner = std::mem::take(buffered);
                heading = None;
                let id = slugs.next(&inner);
                // One level down: the page's own `<h1>` is the package name and its `<h2>`
                // "README" heads the section a README's headings sit in.
                let level = match level {
                    HeadingLevel::H1 => HeadingLevel::H2,
                    HeadingLevel::H2 => HeadingLevel::H3,
                    HeadingLevel::H3 => HeadingLevel::H4,
                    HeadingLevel::H4 => HeadingLevel::H5,
                    HeadingLevel::H5 | HeadingLevel::H6 => HeadingLevel::H6,
                };
                events.push(Event::Start(Tag::Heading {
                    level,
                    id: Some(id.into()),
                    classes: Vec::new(),
                    attrs: Vec::new(),
                }));
                events.extend(inner);
                events.push(Event::End(TagEnd::Heading(level)));
            } else {
                buffered.push(event);
                continue;
            }
        } else if let Event::Start(Tag::Heading { level, .. }) = event {
            heading = Some((level, Vec::new()));
            continue;
        } else {
            events.push(event);
        }
        if depth == 0 {
            events.push(Event::Html(CowStr::Borrowed(marker)));
        }
    }
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    for (from, to) in [
        (" style=\"text-align: left\">", " align=\"left\">"),
        (" style=\"text-align: center\">", " align=\"center\">"),
        (" style=\"text-align: right\">", " align=\"right\">"),
    ] {
        if html.contains(from) {
            html = html.replace(from, to);
        }
    }
    html
}

/// GitHub's heading anchors: lowercase text, punctuation dropped, spaces as `-`, and `-1`, `-2`
/// on repeats.
#[derive(Default)]
struct Slugs {
    seen: HashMap<String, usize>,
}

impl Slugs {
    fn next(&mut self, inner: &[Event]) -> String {
        let mut slug = String::new();
        for event in inner {
            if let Event::Text(text) | Event::Code(text) = event {
                for c in text.chars() {
                    if c.is_alphanumeric() || c == '-' || c == '_' {
                        slug.extend(c.to_lowercase());
                    } else if c == ' ' {
                        slug.push('-');
                    }
                }
            }
        }
        slug.truncate(slug.floor_char_boundary(100));
        let count = self.seen.entry(slug.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            slug = format!("{slug}-{}", *count - 1);
        }
        slug
    }
}

/// The allow-list: ammonia's defaults (no script, style, iframe, object, embed, form, input, SVG,
/// MathML or event-handler attributes) with page landmarks also removed, the contents of dropped
/// active elements removed too, URLs only `http`, `https` and `mailto` (images only `https`),
/// relative URLs only as `#fragment`, and `rel="noopener noreferrer nofollow"` on links.
static SANITISER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        // A README's own banner, navigation or sidebar would read as the page's landmarks.
        .rm_tags(["header", "footer", "nav", "aside"])
        .add_clean_content_tags([
            "iframe", "noscript", "template", "object", "embed", "applet", "svg", "math", "form",
            "select", "textarea", "button", "title", "xmp", "noembed", "noframes",
        ])
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .url_relative(ammonia::UrlRelative::Custom(Box::new(fragment_only)))
        .add_generic_attributes(["id"])
        .id_prefix(Some(ID_PREFIX))
        .link_rel(Some("noopener noreferrer nofollow"))
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            ("img", "src") if !is_https(value) => None,
            _ => Some(Cow::Borrowed(value)),
        });
    builder
});

/// Keeps `#fragment` links, pointed at the prefixed ids; drops every other relative URL.
fn fragment_only(url: &str) -> Option<Cow<'_, str>> {
    let fragment = url.strip_prefix('#')?;
    if fragment.starts_with(ID_PREFIX) {
        Some(Cow::Borrowed(url))
    } else {
        Some(Cow::Owned(format!("#{ID_PREFIX}{fragment}")))
    }
}

fn is_https(url: &str) -> bool {
    url.trim_start()
        .get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https:"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn render(markdown: &str) -> String {
        render_readme(markdown, 1 << 20).html
    }

    /// Nothing in `html` that a browser would run or load from elsewhere than https.
    fn assert_harmless(html: &str) {
        let lower = html.to_ascii_lowercase();
        for bad in [
            "<script",
            "javascript:",
            "vbscript:",
            "data:",
            "onerror",
            "onload",
            "onclick",
            "<iframe",
            "<style",
            "<form",
            "<svg",
            "<math",
            "<object",
            "<embed",
            "<input",
            "style=",
            "http://insecure",
        ] {
            assert!(!lower.contains(bad), "{bad:?} in {html}");
        }
    }

    #[test]
    fn hostile_readmes_render_harmless() {
        let cases = [
            "<script>alert(1)</script>",
            "hello <script>alert(1)</script> world",
            "<img src=x onerror=alert(1)>",
            "<img src=\"https://ok.test/x.png\" onerror=\"alert(1)\">",
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](javascript&#58;alert(1))",
            "[x](&#106;avascript:alert(1))",
            "<a href=\"javascript&#x3A;alert(1)\">x</a>",
            "<a href=\"  java\tscript:alert(1)\">x</a>",
            "<a href=\"vbscript:msgbox(1)\">x</a>",
            "<svg><script>alert(1)</script></svg>",
            "<svg onload=alert(1)><circle r=1 /></svg>",
            "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>",
            "<a href=\"data:text/html,<script>alert(1)</script>\">x</a>",
            "![](data:image/png;base64,iVBORw0KGgo=)",
            "![](http://insecure.test/x.png)",
            "<img src=\"http://insecure.test/x.png\">",
            "<iframe src=\"https://evil.test\"></iframe>",
            "<style>body{display:none}</style>",
            "<p style=\"color:red\">x</p>",
            "<form action=\"https://evil.test\"><input name=a><button>Go</button></form>",
            "<object data=\"https://evil.test/x.swf\"></object><embed src=\"https://evil.test/x\">",
            "<a href=\"https://ok.test\" onclick=\"alert(1)\">x</a>",
            "<details open ontoggle=alert(1)><summary>x</summary>y</details>",
            "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.test\">",
            "<base href=\"https://evil.test/\">",
            "<link rel=stylesheet href=\"https://evil.test/x.css\">",
            "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
        ];
        for case in cases {
            let html = render(case);
            assert_harmless(&html);
            assert!(!html.to_ascii_lowercase().contains("<meta"), "{html}");
            assert!(!html.to_ascii_lowercase().contains("<base"), "{html}");
            assert!(!html.to_ascii_lowercase().contains("<link"), "{html}");
        }
    }

    #[test]
    fn https_images_stay_and_others_lose_their_source() {
        let html = render("![logo](https://ok.test/x.png)");
        assert!(
            html.contains("<img src=\"https://ok.test/x.png\" alt=\"logo\">"),
            "{html}"
        );
        let html = render("![logo](http://insecure.test/x.png) ![rel](./x.png)");
        assert!(!html.contains("src="), "{html}");
    }

    #[test]
    fn links_keep_http_https_mailto_and_fragments_only() {
        let html = render(
            "[a](https://ok.test/a) [b](http://ok.test/b) [c](mailto:x@ok.test) [d](#usage) \
             [e](docs/guide.md) [f](/etc/passwd)",
        );
        assert!(html.contains("href=\"https://ok.test/a\""), "{html}");
        assert!(html.contains("href=\"http://ok.test/b\""), "{html}");
        assert!(html.contains("href=\"mailto:x@ok.test\""), "{html}");
        assert!(html.contains("href=\"#readme-usage\""), "{html}");
        assert!(!html.contains("docs/guide.md"), "{html}");
        assert!(!html.contains("/etc/passwd"), "{html}");
        assert!(
            html.contains("rel=\"noopener noreferrer nofollow\""),
            "{html}"
        );
    }

    #[test]
    fn headings_get_prefixed_ids_that_fragment_links_reach() {
        let html = render("- [Usage](#usage)\n\n## Usage\n\n## Usage\n\n# `API` & more!\n");
        assert!(html.contains("<h3 id=\"readme-usage\">"), "{html}");
        assert!(html.contains("<h3 id=\"readme-usage-1\">"), "{html}");
        assert!(html.contains("<h2 id=\"readme-api--more\">"), "{html}");
        assert!(html.contains("href=\"#readme-usage\""), "{html}");
        // A README's own ids are prefixed too.
        assert!(render("<div id=\"main\">x</div>").contains("id=\"readme-main\""));
    }

    #[test]
    fn gfm_extensions_render() {
        let html = render(
            "| a | b |\n|:-:|--:|\n| 1 | 2 |\n\n~~gone~~\n\n- [x] done\n- [ ] todo\n\n\
             Note[^1].\n\n[^1]: The note.\n\n<details><summary>More</summary>\n\nHidden *text*.\n\n</details>\n",
        );
        assert!(html.contains("<table>"), "{html}");
        assert!(html.contains("<th align=\"center\">a</th>"), "{html}");
        assert!(html.contains("<del>gone</del>"), "{html}");
        assert!(html.contains("\u{2611} done"), "{html}");
        assert!(html.contains("\u{2610} todo"), "{html}");
        assert!(html.contains("href=\"#readme-1\""), "{html}");
        assert!(html.contains("id=\"readme-1\""), "{html}");
        assert!(html.contains("<details><summary>More</summary>"), "{html}");
        assert!(html.contains("<em>text</em>"), "{html}");
        assert_harmless(&html);
    }

    #[test]
    fn a_short_readme_is_whole() {
        let rendered = render_readme("# Title\n\nSome text.\n", 1000);
        assert!(!rendered.truncated);
        assert_eq!(
            rendered.html,
            "<h2 id=\"readme-title\">Title</h2>\n\n<p>Some text.</p>\n"
        );
    }

    /// About 100 KB of mixed Markdown, raw HTML and hostile bits.
    pub(crate) fn long_readme() -> String {
        let mut md = String::new();
        let mut i = 0;
        while md.len() < 100 * 1024 {
            i += 1;
            md.push_str(&format!(
                "## Section {i} — ünïcödé ✓\n\nSome *emphasis* and `code` and a [link](https://ok.test/{i}) \
                 and <b>raw</b> <img src=x onerror=alert({i})>.\n\n\
                 - item one\n- item two with **bold**\n\n\
                 ```js\nconst x = {i}; // <script>alert(1)</script>\n```\n\n\
                 | a | b |\n|---|---|\n| {i} | ✓ |\n\n\
                 <details><summary>More {i}</summary>\n\nHidden text {i}.\n\n</details>\n\n"
            ));
        }
        md
    }

    #[test]
    fn a_long_readme_is_cut_at_a_block_to_the_budget() {
        let md = long_readme();
        for budget in [2_000, 10_000, 30_000] {
            let rendered = render_readme(&md, budget);
            assert!(rendered.truncated);
            assert!(rendered.html.len() <= budget, "{}", rendered.html.len());
            assert!(rendered.html.len() >= budget / 2, "{}", rendered.html.len());
            assert_harmless(&rendered.html);
            assert!(!rendered.html.contains("zQcut"));
            // Well formed: sanitising again changes nothing.
            assert_eq!(SANITISER.clean(&rendered.html).to_string(), rendered.html);
            assert_eq!(
                rendered.html.matches("<details>").count(),
                rendered.html.matches("</details>").count()
            );
        }
    }

    #[test]
    fn a_huge_readme_is_cut_before_parsing() {
        // 3.6 MB of Markdown; only the first 400 KB (four times the budget) are rendered.
        let md = "Some words in a paragraph of text.\n\n".repeat(100_000);
        let started = std::time::Instant::now();
        let rendered = render_readme(&md, 100_000);
        assert!(rendered.truncated);
        assert!(rendered.html.len() <= 100_000 && rendered.html.len() > 90_000);
        assert!(rendered.html.ends_with("text.</p>\n"));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn one_huge_block_is_cut_inside_at_a_character_boundary() {
        let md = format!("<div title=\"x\">{}</div>\n", "é<b>ü</b>&amp;".repeat(5000));
        let rendered = render_readme(&md, 3_001);
        assert!(rendered.truncated);
        assert!(rendered.html.len() <= 3_001);
        assert!(rendered.html.len() > 2_000, "{}", rendered.html.len());
        assert!(rendered.html.ends_with("</div>"), "{}", rendered.html);
        assert_eq!(SANITISER.clean(&rendered.html).to_string(), rendered.html);
        let code = format!("```\n{}\n```\n", "<script>é".repeat(5000));
        let rendered = render_readme(&code, 1_000);
        assert!(rendered.html.len() <= 1_000 && rendered.html.len() > 500);
        assert!(
            rendered.html.ends_with("</code></pre>"),
            "{}",
            rendered.html
        );
        assert_harmless(&rendered.html);
    }
}
