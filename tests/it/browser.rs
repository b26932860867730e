//! The WebDriver client (tests/support/webdriver.rs) drives a real headless Chromium: each
//! test serves a tiny page from an in-test server on loopback and checks what the browser did
//! with it (navigation, forms, scripts on and off, dark mode, the clipboard, screenshots, a
//! Content-Security-Policy, cookies, the console), and a sign-in through the fake GitHub's
//! OAuth web flow the way a web app does it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use e2e::fake_github::{Consent, FakeGithub, form_encode};
use e2e::webdriver::{Browser, ColorScheme, ENTER, Options};
use serde_json::{Value, json};

/// A page in the minimal HTML every page here shares.
fn page(title: &str, head: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>{head}</head><body>{body}</body></html>"
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// White by default, black under `prefers-color-scheme: dark`.
const SCHEME_STYLE: &str = "<style>body{background:rgb(255,255,255);color:rgb(0,0,0)}\
@media (prefers-color-scheme: dark){body{background:rgb(0,0,0);color:rgb(255,255,255)}}</style>";

/// Serves the test pages on a free loopback port; returns `http://127.0.0.1:PORT`.
async fn site() -> String {
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                page(
                    "Home",
                    "",
                    "<main><h1 id=greeting>Hello, browser</h1>\
                     <ul><li>one</li><li>two</li><li>three</li></ul>\
                     <a id=next href=/second>next</a></main>",
                )
            }),
        )
        .route(
            "/second",
            get(|| async { page("Second", "", "<h1>Second page</h1>") }),
        )
        .route(
            "/form",
            get(|| async {
                page(
                    "Form",
                    "",
                    "<form action=/submitted method=get><label for=q>Search</label>\
                     <input id=q name=q><button id=go type=submit>Go</button></form>",
                )
            }),
        )
        .route(
            "/submitted",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                let text = q.get("q").map(String::as_str).unwrap_or_default();
                page(
                    "Results",
                    "",
                    &format!("<h1 id=result>You searched for {}</h1>", escape(text)),
                )
            }),
        )
        .route(
            "/script",
            get(|| async {
                page(
                    "Script",
                    "",
                    "<p id=out>static</p>\
                     <script>document.getElementById('out').textContent = 'script ran'</script>",
                )
            }),
        )
        .route(
            "/scheme",
            get(|| async { page("Scheme", SCHEME_STYLE, "<p>colours</p>") }),
        )
        .route(
            "/copy",
            get(|| async {
                page(
                    "Copy",
                    "",
                    "<pre id=line>npm install @acme/widgets</pre>\
                     <button id=copy type=button>Copy</button>\
                     <script>\
                     const button = document.getElementById('copy');\
                     button.addEventListener('click', () => {\
                       navigator.clipboard.writeText(document.getElementById('line').textContent)\
                         .then(() => { button.textContent = 'Copied'; },\
                               (e) => { button.textContent = 'Failed: ' + e; });\
                     });\
                     </script>",
                )
            }),
        )
        .route(
            "/csp",
            get(|| async {
                (
                    [(
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; script-src 'self'",
                    )],
                    page(
                        "CSP",
                        "",
                        "<p id=inline>inline did not run</p><p id=external>external did not run</p>\
                         <script>document.getElementById('inline').textContent = 'inline ran'</script>\
                         <script src=/csp.js></script>",
                    ),
                )
            }),
        )
        .route(
            "/csp.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript")],
                    "document.getElementById('external').textContent = 'external ran';",
                )
            }),
        )
        .route(
            "/cookie",
            get(|| async {
                (
                    [(
                        header::SET_COOKIE,
                        "session=abc123; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax",
                    )],
                    page("Cookie", "", "<p>set</p>"),
                )
            }),
        )
        .route(
            "/console",
            get(|| async {
                page(
                    "Console",
                    "",
                    "<script>console.error('something broke'); console.log('fine');</script>\
                     <script>notDefinedAnywhere()</script>",
                )
            }),
        )
        // No favicon: a 404 would be a SEVERE console entry.
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT.into_response() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn navigates_reads_text_and_follows_links() {
    let site = site().await;
    let b = Browser::start().await;
    b.goto(&format!("{site}/")).await.unwrap();
    assert_eq!(b.title().await.unwrap(), "Home");
    assert_eq!(b.current_url().await.unwrap(), format!("{site}/"));
    assert_eq!(
        b.find("#greeting").await.unwrap().text().await.unwrap(),
        "Hello, browser"
    );
    let items = b.find_all("main li").await.unwrap();
    let mut texts = Vec::new();
    for item in &items {
        texts.push(item.text().await.unwrap());
    }
    assert_eq!(texts, ["one", "two", "three"]);
    let main = b.find("main").await.unwrap();
    assert_eq!(main.find_all("li").await.unwrap().len(), 3);
    assert_eq!(main.find("a").await.unwrap().tag_name().await.unwrap(), "a");
    assert!(
        b.page_source()
            .await
            .unwrap()
            .contains("<h1 id=\"greeting\">Hello, browser</h1>")
    );
    assert!(b.find("#nothing").await.unwrap_err().is_no_such_element());
    assert!(b.try_find("#nothing").await.unwrap().is_none());

    let link = b.find("#next").await.unwrap();
    assert_eq!(
        link.attribute("href").await.unwrap().as_deref(),
        Some("/second")
    );
    // The property is the resolved URL; the attribute is as written.
    assert_eq!(
        link.property("href").await.unwrap(),
        json!(format!("{site}/second"))
    );
    assert_eq!(link.attribute("title").await.unwrap(), None);
    link.click().await.unwrap();
    b.wait_for_url(|u| u.ends_with("/second")).await.unwrap();
    b.wait_for_text("h1", "Second page").await.unwrap();
    b.back().await.unwrap();
    b.wait_for_url(|u| u == format!("{site}/")).await.unwrap();
}

#[tokio::test]
async fn submits_a_form_by_button_and_by_enter() {
    let site = site().await;
    let b = Browser::start().await;
    b.goto(&format!("{site}/form")).await.unwrap();
    let q = b.find("#q").await.unwrap();
    q.send_keys("widgets & <gadgets>").await.unwrap();
    assert_eq!(
        q.property("value").await.unwrap(),
        json!("widgets & <gadgets>")
    );
    b.find("#go").await.unwrap().click().await.unwrap();
    b.wait_for_text("#result", "You searched for widgets & <gadgets>")
        .await
        .unwrap();
    assert!(
        b.current_url()
            .await
            .unwrap()
            .ends_with("/submitted?q=widgets+%26+%3Cgadgets%3E")
    );

    b.goto(&format!("{site}/form")).await.unwrap();
    let q = b.find("#q").await.unwrap();
    q.send_keys("first").await.unwrap();
    q.clear().await.unwrap();
    q.send_keys(&format!("second{ENTER}")).await.unwrap();
    b.wait_for_text("#result", "You searched for second")
        .await
        .unwrap();
}

#[tokio::test]
async fn scripts_run_only_when_enabled() {
    let site = site().await;
    let on = Browser::start().await;
    let off = Browser::start_with(Options {
        scripts: false,
        ..Options::default()
    })
    .await
    .unwrap();
    for b in [&on, &off] {
        b.goto(&format!("{site}/script")).await.unwrap();
    }
    assert_eq!(
        on.find("#out").await.unwrap().text().await.unwrap(),
        "script ran"
    );
    assert_eq!(
        off.find("#out").await.unwrap().text().await.unwrap(),
        "static"
    );
    // The page's scripts are off, WebDriver's still run.
    assert_eq!(
        off.execute("return arguments[0] + 1", vec![json!(41)])
            .await
            .unwrap(),
        json!(42)
    );
    let out = off.find("#out").await.unwrap();
    assert_eq!(
        off.execute("return arguments[0].id", vec![out.to_arg()])
            .await
            .unwrap(),
        json!("out")
    );
    assert_eq!(
        on.execute_async(
            "const done = arguments[arguments.length - 1]; setTimeout(() => done('later'), 10);",
            vec![]
        )
        .await
        .unwrap(),
        json!("later")
    );
    let err = on
        .execute("throw new Error('boom')", vec![])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
}

/// `matchMedia('(prefers-color-scheme: dark)')` and the body's computed background.
async fn scheme_of(b: &Browser) -> (bool, String) {
    let dark = b
        .execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches",
            vec![],
        )
        .await
        .unwrap();
    let background = b
        .find("body")
        .await
        .unwrap()
        .css_value("background-color")
        .await
        .unwrap();
    (dark == json!(true), background)
}

#[tokio::test]
async fn dark_mode_by_flag_and_by_emulation() {
    let site = site().await;
    let black = "rgba(0, 0, 0, 1)".to_string();
    let white = "rgba(255, 255, 255, 1)".to_string();

    let dark = Browser::start_with(Options {
        dark: true,
        ..Options::default()
    })
    .await
    .unwrap();
    dark.goto(&format!("{site}/scheme")).await.unwrap();
    assert_eq!(scheme_of(&dark).await, (true, black.clone()));

    let b = Browser::start().await;
    b.goto(&format!("{site}/scheme")).await.unwrap();
    assert_eq!(scheme_of(&b).await, (false, white.clone()));
    // Emulation applies at once, and holds across navigations (here to another site).
    b.emulate_color_scheme(Some(ColorScheme::Dark))
        .await
        .unwrap();
    assert_eq!(scheme_of(&b).await, (true, black.clone()));
    let other_site = site.replace("127.0.0.1", "localhost");
    b.goto(&format!("{other_site}/scheme")).await.unwrap();
    assert_eq!(scheme_of(&b).await, (true, black.clone()));
    b.emulate_color_scheme(None).await.unwrap();
    assert_eq!(scheme_of(&b).await, (false, white.clone()));
    // And light over a dark browser.
    dark.emulate_color_scheme(Some(ColorScheme::Light))
        .await
        .unwrap();
    assert_eq!(scheme_of(&dark).await, (false, white));
}

#[tokio::test]
async fn copy_button_writes_the_browsers_clipboard() {
    let site = site().await;
    let b = Browser::start().await;
    b.goto(&format!("{site}/copy")).await.unwrap();
    // Reading needs `clipboard-read` (clipboard_text grants it); writing after a click does not.
    b.set_permission("clipboard-read", false).await.unwrap();
    let denied = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             navigator.clipboard.readText().then(() => done('read'), (e) => done(e.name));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(denied, json!("NotAllowedError"));
    b.find("#copy").await.unwrap().click().await.unwrap();
    b.wait_for_text("#copy", "Copied").await.unwrap();
    assert_eq!(
        b.clipboard_text().await.unwrap(),
        "npm install @acme/widgets"
    );
    // The clipboard is the browser's: another origin reads what this one wrote.
    b.goto(&format!("{}/", site.replace("127.0.0.1", "localhost")))
        .await
        .unwrap();
    assert_eq!(
        b.clipboard_text().await.unwrap(),
        "npm install @acme/widgets"
    );
}

/// The width and height in a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(&png[12..16], b"IHDR");
    (be(16), be(20))
}

#[tokio::test]
async fn screenshots_are_pngs_of_the_viewport_and_of_the_page() {
    let site = site().await;
    let b = Browser::start().await;
    b.goto(&format!("{site}/")).await.unwrap();
    let png = b.screenshot_png().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{:?}", &png[..8]);
    assert_eq!(png_size(&png).0, 1280);
    // A page taller than the viewport: the full-page shot is taller than the window.
    b.execute("document.body.style.height = '3000px'; return null", vec![])
        .await
        .unwrap();
    let full = b.full_page_screenshot_png().await.unwrap();
    assert!(full.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png_size(&full).1 >= 3000, "{:?}", png_size(&full));
    b.set_window_size(800, 600).await.unwrap();
    assert_eq!(png_size(&b.screenshot_png().await.unwrap()).0, 800);
}

#[tokio::test]
async fn content_security_policy_is_enforced() {
    let site = site().await;
    let b = Browser::start().await;
    b.goto(&format!("{site}/csp")).await.unwrap();
    // `script-src 'self'`: the same-origin script runs, the inline one is refused.
    b.wait_for_text("#external", "external ran").await.unwrap();
    assert_eq!(
        b.find("#inline").await.unwrap().text().await.unwrap(),
        "inline did not run"
    );
    let errors = b.console_errors().await.unwrap();
    assert!(
        errors.iter().any(|e| e.source == "security"
            && e.message.contains("Content Security Policy")
            && e.message.contains("inline script")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn cookies_and_console_are_readable() {
    let site = site().await;
    let b = Browser::start().await;
    b.goto(&format!("{site}/cookie")).await.unwrap();
    let session = b.cookie("session").await.unwrap().expect("the cookie");
    assert_eq!(session.value, "abc123");
    assert_eq!(session.domain, "127.0.0.1");
    assert_eq!(session.path, "/");
    assert!(session.http_only);
    assert!(!session.secure);
    assert_eq!(session.same_site.as_deref(), Some("Lax"));
    assert!(session.expiry.is_some());
    // HttpOnly: invisible to the page's scripts.
    assert_eq!(
        b.execute("return document.cookie", vec![]).await.unwrap(),
        json!("")
    );
    b.add_cookie("extra", "1").await.unwrap();
    assert_eq!(b.cookies().await.unwrap().len(), 2);
    b.delete_cookies().await.unwrap();
    assert!(b.cookies().await.unwrap().is_empty());

    b.console_log().await.unwrap();
    b.goto(&format!("{site}/console")).await.unwrap();
    let log = b.console_log().await.unwrap();
    let has = |level: &str, source: &str, text: &str| {
        log.iter()
            .any(|e| e.level == level && e.source == source && e.message.contains(text))
    };
    assert!(has("SEVERE", "console-api", "something broke"), "{log:?}");
    assert!(has("INFO", "console-api", "fine"), "{log:?}");
    assert!(has("SEVERE", "javascript", "notDefinedAnywhere"), "{log:?}");
    // Drained.
    assert!(b.console_log().await.unwrap().is_empty());
}

/// A web app that signs people in with GitHub, as the registry's pages will: `/login` sets a
/// state cookie and redirects to GitHub; `/callback` checks the state, exchanges the code and
/// asks `GET /user` who signed in.
struct SignInApp {
    github: String,
    url: String,
}

const APP_CLIENT_ID: &str = "Ov23liTestClient";
const APP_CLIENT_SECRET: &str = "test-client-secret";

async fn sign_in_app(github: &FakeGithub) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    github.add_oauth_app(APP_CLIENT_ID, APP_CLIENT_SECRET, &format!("{url}/callback"));
    let app = Arc::new(SignInApp {
        github: github.web_url().to_string(),
        url: url.clone(),
    });
    let router = Router::new()
        .route("/login", get(app_login))
        .route("/callback", get(app_callback))
        .with_state(app);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn app_login(State(app): State<Arc<SignInApp>>) -> Response {
    let state = hex::encode(rand::random::<[u8; 16]>());
    let location = format!(
        "{}/login/oauth/authorize?{}",
        app.github,
        form_encode(&[
            ("client_id", APP_CLIENT_ID),
            ("redirect_uri", &format!("{}/callback", app.url)),
            ("scope", "repo"),
            ("state", &state),
        ])
    );
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (
                header::SET_COOKIE,
                format!("oauth_state={state}; Path=/; HttpOnly; SameSite=Lax"),
            ),
        ],
    )
        .into_response()
}

async fn app_callback(
    State(app): State<Arc<SignInApp>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Html<String> {
    let cookie_state = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split("; ").find_map(|kv| kv.strip_prefix("oauth_state=")))
        .unwrap_or_default()
        .to_string();
    let said = |text: &str| {
        page(
            "Signed in?",
            "",
            &format!("<h1 id=who>{}</h1>", escape(text)),
        )
    };
    if q.get("state") != Some(&cookie_state) {
        return said("Not signed in: bad state");
    }
    if let Some(error) = q.get("error") {
        return said(&format!("Not signed in: {error}"));
    }
    let http = e2e::http();
    let answer: Value = http
        .post(format!("{}/login/oauth/access_token", app.github))
        .header("accept", "application/json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(&[
            ("client_id", APP_CLIENT_ID),
            ("client_secret", APP_CLIENT_SECRET),
            (
                "code",
                q.get("code").map(String::as_str).unwrap_or_default(),
            ),
            ("redirect_uri", &format!("{}/callback", app.url)),
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Errors come with HTTP 200: look for `error` first.
    if let Some(error) = answer["error"].as_str() {
        return said(&format!("Not signed in: {error}"));
    }
    let token = answer["access_token"].as_str().unwrap();
    let user: Value = http
        .get(format!("{}/user", app.github))
        .bearer_auth(token)
        .header("accept", "application/vnd.github+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    said(&format!(
        "Signed in as {} with {}",
        user["login"].as_str().unwrap(),
        answer["scope"].as_str().unwrap()
    ))
}

#[tokio::test]
async fn signs_in_through_the_fake_githubs_oauth_flow() {
    let github = FakeGithub::start().await;
    github.add_user("alice", "alice-pat");
    let app = sign_in_app(&github).await;
    let b = Browser::start().await;

    // alice is signed in to GitHub in "the browser" and approves: back at the app, signed in.
    github.oauth_sign_in("alice");
    b.goto(&format!("{app}/login")).await.unwrap();
    b.wait_for_text("#who", "Signed in as alice with repo")
        .await
        .unwrap();
    assert!(
        b.current_url()
            .await
            .unwrap()
            .starts_with(&format!("{app}/callback?code="))
    );
    assert_eq!(github.oauth_authorize_hits(), 1);
    assert_eq!(github.oauth_exchanges(), 1);
    let issued = github.oauth_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        (issued[0].login.as_str(), issued[0].scopes.as_slice()),
        ("alice", &["repo".to_string()][..])
    );
    // The browser kept the app's HttpOnly state cookie, and never saw a GitHub cookie.
    assert!(b.cookie("oauth_state").await.unwrap().unwrap().http_only);

    // Reloading the callback replays a used code: GitHub refuses it.
    b.refresh().await.unwrap();
    b.wait_for_text("#who", "Not signed in: bad_verification_code")
        .await
        .unwrap();

    // The user cancels on GitHub's page.
    github.set_oauth_consent(Consent::Deny);
    b.goto(&format!("{app}/login")).await.unwrap();
    b.wait_for_text("#who", "Not signed in: access_denied")
        .await
        .unwrap();
    assert_eq!(github.oauth_exchanges(), 2);

    // Signed out of GitHub: the browser ends on GitHub's sign-in page.
    github.oauth_sign_out();
    b.goto(&format!("{app}/login")).await.unwrap();
    b.wait_for_url(|u| u.starts_with(&format!("{}/login?", github.web_url())))
        .await
        .unwrap();
    assert_eq!(b.title().await.unwrap(), "Sign in to GitHub · GitHub");
}
