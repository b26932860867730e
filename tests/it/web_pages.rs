//! The web pages in a real headless Chromium against the real registry-server: a browser sent
//! from `/` to the package list, the search box, a package page and an older version's README,
//! the copy buttons, everything with scripts off, a hostile README rendered harmless, the
//! security headers and page sizes, and, in GitHub mode, signing in through the fake GitHub to
//! see a private package and signing out. Screenshots (light and dark) go to a temporary
//! directory, or to docs/screenshots with `UPDATE_SCREENSHOTS=1`.

use std::path::{Path, PathBuf};

use e2e::api::{doc, send};
use e2e::github_world::World;
use e2e::webdriver::{Browser, ColorScheme, ENTER, Options};
use e2e::{Backend, Npm, Server, http, write_package};
use reqwest::{Method, StatusCode, header};
use serde_json::json;

/// A README that tries everything a sanitiser must stop.
const HOSTILE_README: &str = r#"# Hostile

<script>window.__pwned = 'script';</script>

<img src="x" onerror="window.__pwned = 'onerror'">

[click me](javascript:window.__pwned='link')

<a href="JaVaScRiPt:window.__pwned='mixed'">mixed case</a>

<svg><script>window.__pwned = 'svg'</script></svg>

<a href="data:text/html,<script>alert(1)</script>">data link</a>

![data image](data:image/png;base64,iVBORw0KGgo=)

![insecure](http://example.com/x.png)

![secure](https://example.com/ok.png)

<iframe src="https://example.com"></iframe>

<form action="https://example.com"><input name=x></form>
"#;

/// Publishes the pages' packages with npm: a widget in two versions (different READMEs, a
/// dependency in the second), the gadget it depends on, and the hostile README.
fn publish_corpus(root: &Path, url: &str) {
    let npm = Npm::new(root, url);
    let gadget = write_package(
        &root.join("gadget"),
        "@acme/gadget",
        "1.0.0",
        json!({"description": "Gadgets for widgets", "license": "MIT"}),
    );
    std::fs::write(gadget.join("README.md"), "# Gadget\n\nSmall and useful.\n").unwrap();
    npm.ok(&gadget, &["publish"]);
    let widget = write_package(
        &root.join("widget"),
        "@acme/widget",
        "1.0.0",
        json!({"description": "The widget maker", "keywords": ["ui", "widget"],
               "license": "MIT", "repository": "github:acme/widget"}),
    );
    std::fs::write(
        widget.join("README.md"),
        "# Widget\n\nThe **first** edition.\n",
    )
    .unwrap();
    npm.ok(&widget, &["publish"]);
    write_package(
        &widget,
        "@acme/widget",
        "2.0.0",
        json!({"description": "The widget maker", "keywords": ["ui", "widget"],
               "license": "MIT", "repository": "github:acme/widget",
               "dependencies": {"@acme/gadget": "^1.0.0"}}),
    );
    std::fs::write(
        widget.join("README.md"),
        "# Widget\n\nThe *second* edition.\n",
    )
    .unwrap();
    npm.ok(&widget, &["publish"]);
    let hostile = write_package(&root.join("hostile"), "@acme/hostile", "1.0.0", json!({}));
    std::fs::write(hostile.join("README.md"), HOSTILE_README).unwrap();
    npm.ok(&hostile, &["publish"]);
}

/// Where screenshots go: docs/screenshots when asked to update them, else a scratch directory.
fn screenshots_dir(scratch: &Path) -> PathBuf {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    } else {
        scratch.to_path_buf()
    }
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_search_read_and_copy_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start_on(root, &Backend::local());
    publish_corpus(root, &server.url);
    let shots = screenshots_dir(root);

    let b = Browser::start().await;
    // A browser at the registry's root lands on the package list, newest publish first.
    b.goto(&format!("{}/", server.url)).await.unwrap();
    b.wait_for_url(|u| u.ends_with("/-/web")).await.unwrap();
    let names: Vec<String> = {
        let mut out = Vec::new();
        for link in b.find_all("main a[href*='/-/web/package/']").await.unwrap() {
            out.push(link.text().await.unwrap());
        }
        out
    };
    let order: Vec<&str> = ["@acme/hostile", "@acme/widget", "@acme/gadget"]
        .into_iter()
        .filter(|n| names.iter().any(|t| t == n))
        .collect();
    assert_eq!(
        order,
        ["@acme/hostile", "@acme/widget", "@acme/gadget"],
        "{names:?}"
    );
    let shot = b.screenshot_png().await.unwrap();
    assert!(is_png(&shot));
    std::fs::write(shots.join("list-light.png"), &shot).unwrap();

    // The search box finds the widget; its page shows the latest README, versions and install lines.
    let q = b.find("#search-q").await.unwrap();
    q.send_keys("widget").await.unwrap();
    q.send_keys(ENTER).await.unwrap();
    b.wait_for_url(|u| u.contains("/-/web/search?q=widget"))
        .await
        .unwrap();
    b.find("main a[href$='/-/web/package/@acme/widget']")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text_containing(".readme", "second edition")
        .await
        .unwrap();
    let page = b.find("main").await.unwrap().text().await.unwrap();
    for expected in ["2.0.0", "1.0.0", "latest", "MIT", "@acme/gadget", "ui"] {
        assert!(
            page.contains(expected),
            "{expected} on the package page:\n{page}"
        );
    }
    let shot = b.screenshot_png().await.unwrap();
    std::fs::write(shots.join("package-light.png"), &shot).unwrap();
    b.emulate_color_scheme(Some(ColorScheme::Dark))
        .await
        .unwrap();
    let dark_background = b
        .execute(
            "return getComputedStyle(document.documentElement).backgroundColor",
            vec![],
        )
        .await
        .unwrap();
    std::fs::write(
        shots.join("package-dark.png"),
        b.screenshot_png().await.unwrap(),
    )
    .unwrap();
    b.emulate_color_scheme(Some(ColorScheme::Light))
        .await
        .unwrap();
    let light_background = b
        .execute(
            "return getComputedStyle(document.documentElement).backgroundColor",
            vec![],
        )
        .await
        .unwrap();
    assert_ne!(
        dark_background, light_background,
        "prefers-color-scheme changes the page"
    );

    // The copy button copies the install line.
    let copy = b.find("button[data-copy^='npm install']").await.unwrap();
    assert_eq!(
        copy.attribute("hidden").await.unwrap(),
        None,
        "shown once the script runs"
    );
    copy.click().await.unwrap();
    assert_eq!(
        b.clipboard_text().await.unwrap(),
        "npm install @acme/widget"
    );
    for (client, line) in [
        ("pnpm", "pnpm add @acme/widget"),
        ("yarn", "yarn add @acme/widget"),
        ("bun", "bun add @acme/widget"),
    ] {
        b.find(&format!("button[data-copy^='{client} ']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(b.clipboard_text().await.unwrap(), line);
    }

    // An older version: its own README, its own install line; the dependency links to its page.
    b.find("a[href$='/-/web/package/@acme/widget/v/1.0.0']")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text_containing(".readme", "first edition")
        .await
        .unwrap();
    assert!(
        b.find("button[data-copy='npm install @acme/widget@1.0.0']")
            .await
            .is_ok()
    );
    b.goto(&format!("{}/-/web/package/@acme/widget", server.url))
        .await
        .unwrap();
    b.find("a[href$='/-/web/package/@acme/gadget']")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text_containing(".readme", "Small and useful")
        .await
        .unwrap();
    b.goto(&format!("{}/-/web", server.url)).await.unwrap();
    b.emulate_color_scheme(Some(ColorScheme::Dark))
        .await
        .unwrap();
    std::fs::write(
        shots.join("list-dark.png"),
        b.screenshot_png().await.unwrap(),
    )
    .unwrap();

    // The hostile README: nothing ran, nothing dangerous is left in the DOM.
    b.goto(&format!("{}/-/web/package/@acme/hostile", server.url))
        .await
        .unwrap();
    b.wait_for(".readme").await.unwrap();
    let verdict = b
        .execute(
            "const r = document.querySelector('.readme');
             const attrs = [...r.querySelectorAll('*')].flatMap(e => [...e.attributes]);
             return {
               pwned: window.__pwned || null,
               scripts: r.querySelectorAll('script, svg, iframe, form, object, embed').length,
               handlers: attrs.filter(a => a.name.startsWith('on')).length,
               bad_urls: attrs.filter(a => /^\\s*(javascript|data|vbscript):/i.test(a.value)).length,
               images: [...r.querySelectorAll('img')].map(i => i.getAttribute('src')),
             };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(verdict["pwned"], json!(null), "{verdict}");
    assert_eq!(verdict["scripts"], 0, "{verdict}");
    assert_eq!(verdict["handlers"], 0, "{verdict}");
    assert_eq!(verdict["bad_urls"], 0, "{verdict}");
    for src in verdict["images"].as_array().unwrap() {
        assert!(
            src.is_null() || src.as_str().unwrap().starts_with("https://"),
            "images only from https: {verdict}"
        );
    }
    assert!(
        verdict["images"]
            .to_string()
            .contains("https://example.com/ok.png")
    );
    let errors = b.console_errors().await.unwrap();
    assert!(
        errors.iter().all(|e| !e.message.contains("pwned")),
        "{errors:?}"
    );
    drop(b);

    // Scripts off: the pages and the search still work; copy buttons stay hidden.
    let b = Browser::start_with(Options {
        scripts: false,
        ..Options::default()
    })
    .await
    .unwrap();
    b.goto(&format!("{}/-/web", server.url)).await.unwrap();
    let q = b.find("#search-q").await.unwrap();
    q.send_keys("gadget").await.unwrap();
    q.send_keys(ENTER).await.unwrap();
    b.wait_for_url(|u| u.contains("q=gadget")).await.unwrap();
    b.find("main a[href$='/-/web/package/@acme/gadget']")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text_containing(".readme", "Small and useful")
        .await
        .unwrap();
    let copy = b.find("button[data-copy]").await.unwrap();
    assert!(
        copy.attribute("hidden").await.unwrap().is_some(),
        "no copy button without scripts"
    );
    assert!(
        b.find("main")
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("npm install @acme/gadget"),
        "the install line is there to select by hand"
    );
}

/// Headers, sizes and structure of every page, from raw HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_strict_policy_stay_small_and_have_landmarks_local() {
    pages_carry_a_strict_policy_stay_small_and_have_landmarks(Backend::local()).await;
}

/// The same on the AWS backend (READMEs of older versions come from S3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_strict_policy_stay_small_and_have_landmarks_aws() {
    pages_carry_a_strict_policy_stay_small_and_have_landmarks(Backend::aws(
        "pages",
        e2e::S3Host::Same,
    ))
    .await;
}

async fn pages_carry_a_strict_policy_stay_small_and_have_landmarks(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = Server::start_on(root, &backend);
    // A big package: many versions with long READMEs.
    let npm = Npm::new(root, &server.url);
    let big = write_package(&root.join("big"), "@acme/big", "1.0.0", json!({}));
    let readme = "# Big\n\n".to_string() + &"A paragraph of words that goes on. ".repeat(3_000);
    std::fs::write(big.join("README.md"), &readme).unwrap();
    npm.ok(&big, &["publish"]);
    for minor in 1..=30 {
        let (status, body, _) = send(
            Method::PUT,
            format!("{}/@acme%2fbig", server.url),
            Some("t"),
            Some(&{
                let mut d = doc("@acme/big", &format!("1.{minor}.0"), None);
                d["versions"][format!("1.{minor}.0")]["readme"] = json!(readme);
                d
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    publish_corpus(root, &server.url);
    let client = http();
    for path in [
        "/-/web",
        "/-/web?page=2",
        "/-/web/search?q=widget",
        "/-/web/search?q=",
        "/-/web/package/@acme/widget",
        "/-/web/package/@acme/widget/v/1.0.0",
        "/-/web/package/@acme/big",
        "/-/web/package/@acme/hostile",
        "/-/web/package/@acme/missing",
        "/-/web/package/@acme/widget/v/9.9.9",
    ] {
        let response = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        let expected = if path.contains("missing") || path.contains("9.9.9") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' https:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(headers.contains_key("referrer-policy"), "{path}");
        assert!(body.len() < 50 * 1024, "{path}: {} bytes", body.len());
        for landmark in ["<header", "<main", "<footer", "<label", "lang=\"en\""] {
            assert!(body.contains(landmark), "{path}: no {landmark}");
        }
        assert!(!body.contains(" style=\""), "{path}: no inline styles");
        assert!(!body.contains("<script>"), "{path}: no inline scripts");
        // No resource from elsewhere: stylesheet and script are the registry's own.
        for tag in body
            .split('<')
            .filter(|t| t.starts_with("link ") || t.starts_with("script "))
        {
            assert!(!tag.contains("http"), "{path}: {tag}");
        }
    }
    // An older version's page shows that version's README (read apart from the packument).
    let older = client
        .get(format!("{}/-/web/package/@acme/widget/v/1.0.0", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(older.contains("<strong>first</strong> edition"), "{older}");
    // The static files are immutable.
    let page = client
        .get(format!("{}/-/web", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let css = page
        .split("href=\"")
        .find_map(|s| {
            s.split('"')
                .next()
                .filter(|h| h.contains("/-/web/static/style."))
        })
        .unwrap()
        .to_string();
    let asset = client
        .get(format!("{}{css}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    assert!(
        asset.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        client
            .get(format!("{}/-/web/static/style.00000000.css", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // `GET /` sends browsers to the pages and leaves API clients their 404.
    let browser = client
        .get(format!("{}/", server.url))
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), StatusCode::SEE_OTHER);
    assert_eq!(browser.headers()[header::LOCATION], "/-/web");
    let api = client.get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
}

/// The package list's text.
async fn list_text(b: &Browser, url: &str) -> String {
    b.goto(&format!("{url}/-/web")).await.unwrap();
    b.find("main").await.unwrap().text().await.unwrap()
}

/// GitHub mode: private packages appear only to those who may read them, after signing in with
/// GitHub in the browser; signing out hides them again; an outsider's page for a private package
/// is the missing-package page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_shows_private_packages_and_signing_out_hides_them() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let secret = hex::encode(rand::random::<[u8; 20]>());
    let server = world.server(
        tmp.path(),
        &Backend::local(),
        &[
            ("REGISTRY_PUBLIC_READ", "true"),
            ("REGISTRY_GITHUB_OAUTH_CLIENT_ID", "Iv1.pages"),
            ("REGISTRY_GITHUB_OAUTH_CLIENT_SECRET", &secret),
            ("GITHUB_URL", world.github.web_url()),
        ],
    );
    world.github.add_oauth_app(
        "Iv1.pages",
        &secret,
        &format!("{}/-/web/callback", server.url),
    );
    for (name, repo) in [
        ("@acme/private-widget", "github:acme/widgets"),
        ("@acme/public-widget", "github:acme/public-lib"),
    ] {
        let (status, body, _) = send(
            Method::PUT,
            format!("{}/{}", server.url, e2e::escaped(name)),
            Some(&world.alice.token),
            Some(&doc(name, "1.0.0", Some(repo))),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let b = Browser::start().await;
    let anonymous = list_text(&b, &server.url).await;
    assert!(anonymous.contains("@acme/public-widget"), "{anonymous}");
    assert!(!anonymous.contains("private-widget"), "{anonymous}");
    b.goto(&format!(
        "{}/-/web/package/@acme/private-widget",
        server.url
    ))
    .await
    .unwrap();
    let outsider = b.find("main").await.unwrap().text().await.unwrap();
    b.goto(&format!("{}/-/web/package/@acme/no-such-thing", server.url))
        .await
        .unwrap();
    let missing = b.find("main").await.unwrap().text().await.unwrap();
    assert_eq!(
        outsider.replace("private-widget", "X"),
        missing.replace("no-such-thing", "X"),
        "a private package looks missing"
    );

    // dave signs in: still no private package. alice signs in: there it is.
    for (login, sees) in [("dave", false), ("alice", true)] {
        world.github.oauth_sign_in(login);
        b.delete_cookies().await.unwrap();
        b.goto(&format!("{}/-/web", server.url)).await.unwrap();
        b.find("a[href$='/-/web/login']")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_for_text_containing("header", login).await.unwrap();
        let session = b
            .cookie("registry_session")
            .await
            .unwrap()
            .expect("a session cookie");
        assert!(session.http_only, "{session:?}");
        let text = list_text(&b, &server.url).await;
        assert_eq!(
            text.contains("@acme/private-widget"),
            sees,
            "{login}: {text}"
        );
    }
    b.goto(&format!(
        "{}/-/web/package/@acme/private-widget",
        server.url
    ))
    .await
    .unwrap();
    b.wait_for_text_containing("h1", "@acme/private-widget")
        .await
        .unwrap();

    // Sign out (a form post from the page): the private package is gone again.
    b.find("form[action$='/-/web/logout'] button")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_url(|u| u.ends_with("/-/web")).await.unwrap();
    assert!(b.cookie("registry_session").await.unwrap().is_none());
    let after = list_text(&b, &server.url).await;
    assert!(!after.contains("private-widget"), "{after}");
}
