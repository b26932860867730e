//! A small W3C WebDriver client for the browser tests: a real headless Chromium (Debian's
//! `chromium`) driven through Debian's `chromedriver`, both installed by tests/tools.sh
//! (`CHROMIUM_BIN`, `CHROMEDRIVER_BIN`).
//!
//! WebDriver is JSON over HTTP, so this is a thin layer on the reqwest and serde_json the tests
//! already use, and adds no crate. The WebDriver crates were weighed and left out: fantoccini
//! brings a second HTTP line (hyper and http through Mozilla's `webdriver` crate, which still
//! uses http 0.2, cookie and thiserror 1) and ICU segmentation data crates; thirtyfour brings its
//! own reqwest line besides the workspace's. Both are a lot of compile time on two cores for
//! a dozen HTTP calls.
//!
//! Each [`Browser`] starts its own `chromedriver --port=0` (it prints the port it bound, so
//! there is no race for a free port), waits until `GET /status` says ready, and opens one
//! session with a fresh profile. Dropping it ends the session (chromedriver quits Chromium) and
//! kills chromedriver's process group, so no browser outlives its test.
//!
//! Verified with Chromium 156 headless (tests/it/browser.rs checks each):
//! - Scripts off: `--blink-settings=scriptEnabled=false` ([`Options::scripts`]) stops page
//!   scripts; [`Browser::execute`] still works (WebDriver's scripts run through DevTools).
//! - Dark mode: `--force-dark-mode` ([`Options::dark`]) makes `prefers-color-scheme: dark`
//!   match for every page and window; [`Browser::emulate_color_scheme`] switches it for the
//!   current tab through CDP (`Emulation.setEmulatedMedia`), across navigations.
//! - Clipboard: headless Chromium has a real, browser-wide clipboard. A page's
//!   `navigator.clipboard.writeText` after a WebDriver click (a trusted user gesture) writes
//!   it without any grant; reading it back needs `clipboard-read`, which
//!   [`Browser::clipboard_text`] grants for the current origin (`POST /session/{id}/permissions`)
//!   before calling `navigator.clipboard.readText()`.
//! - Console: `goog:loggingPrefs` is on; [`Browser::console_log`] drains the page's console
//!   messages, uncaught exceptions, CSP refusals and failed loads (a missing `/favicon.ico`
//!   shows up as a SEVERE network entry).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key WebDriver wraps an element reference in.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::wait_for`] and its kin poll before they give up.
pub const WAIT: Duration = Duration::from_secs(10);

/// The Enter key, for [`Element::send_keys`] (WebDriver's key code points).
pub const ENTER: &str = "\u{E007}";

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// chromedriver answered with a WebDriver error.
    #[error("WebDriver {error} ({status}): {message}")]
    WebDriver {
        /// The HTTP status.
        status: u16,
        /// The WebDriver error code (`no such element`, `javascript error`, ...).
        error: String,
        /// Its message.
        message: String,
    },
    /// The request to chromedriver failed.
    #[error("request to chromedriver: {0}")]
    Http(#[from] reqwest::Error),
    /// chromedriver could not be started, or answered something that is not WebDriver.
    #[error("{0}")]
    Driver(String),
    /// A wait ran out.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

impl Error {
    /// Whether this is WebDriver's `no such element`.
    pub fn is_no_such_element(&self) -> bool {
        matches!(self, Error::WebDriver { error, .. } if error == "no such element")
    }
}

/// A result of a WebDriver call.
pub type Result<T> = std::result::Result<T, Error>;

/// How the browser is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Page scripts run (`false`: `--blink-settings=scriptEnabled=false`).
    pub scripts: bool,
    /// The operating system's colour scheme is dark (`--force-dark-mode`), so
    /// `prefers-color-scheme: dark` matches.
    pub dark: bool,
    /// The window's width and height in CSS pixels.
    pub window: (u32, u32),
}

impl Default for Options {
    fn default() -> Options {
        Options {
            scripts: true,
            dark: false,
            window: (1280, 900),
        }
    }
}

/// A colour scheme for [`Browser::emulate_color_scheme`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorScheme {
    /// `prefers-color-scheme: light`.
    Light,
    /// `prefers-color-scheme: dark`.
    Dark,
}

/// A cookie as the browser holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Its domain (the host for a host-only cookie).
    pub domain: String,
    /// Its path.
    pub path: String,
    /// `Secure`.
    pub secure: bool,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite` (`Strict`, `Lax` or `None`), when the browser reports one.
    pub same_site: Option<String>,
    /// Expiry in seconds since the epoch; `None` for a session cookie.
    pub expiry: Option<u64>,
}

/// An entry of the browser's console log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO` or `DEBUG`.
    pub level: String,
    /// Where it came from: `console-api`, `javascript` (an uncaught exception), `network`,
    /// `security` (a CSP refusal), ...
    pub source: String,
    /// The message, prefixed with the page's URL and position.
    pub message: String,
}

/// The path of chromedriver: `CHROMEDRIVER_BIN` (tests/tools.sh), else `chromedriver`.
fn chromedriver_bin() -> String {
    std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "chromedriver".to_string())
}

/// A running chromedriver, in its own process group.
struct Driver {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    port: u16,
}

impl Driver {
    /// Starts chromedriver, again if it could not bind: with `--port=0` it takes a free port on
    /// one address family and then the same number on the other, which another process may hold
    /// ("IPv4 port not available").
    fn start(log: &Path) -> Result<Driver> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(log) {
                Err(Error::Driver(message))
                    if attempt < 5 && message.contains("port not available") => {}
                other => return other,
            }
        }
    }

    fn start_once(log: &Path) -> Result<Driver> {
        let log_file = std::fs::File::create(log)
            .map_err(|e| Error::Driver(format!("create {}: {e}", log.display())))?;
        let mut cmd = Command::new(chromedriver_bin());
        // --port=0: it binds a free port and prints which.
        cmd.arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file.try_clone().map_err(|e| {
                Error::Driver(format!("chromedriver log {}: {e}", log.display()))
            })?));
        // Its own process group, which Chromium joins: dropping the driver kills both.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| {
            Error::Driver(format!(
                "start {} ({e}); tests/tools.sh installs it (source it first)",
                chromedriver_bin()
            ))
        })?;
        let stdout = child.stdout.take().expect("chromedriver stdout");
        // A thread reads stdout for the port line, then keeps draining it into the log.
        let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
        std::thread::Builder::new()
            .name("chromedriver-stdout".into())
            .spawn(move || {
                let mut log_file = log_file;
                let mut port_tx = Some(port_tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(log_file, "{line}");
                    if let Some(port) = line
                        .strip_prefix("ChromeDriver was started successfully on port ")
                        .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
                        && let Some(tx) = port_tx.take()
                    {
                        let _ = tx.send(port);
                    }
                }
            })
            .map_err(|e| Error::Driver(format!("spawn a thread: {e}")))?;
        let Ok(port) = port_rx.recv_timeout(WAIT) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Driver(format!(
                "chromedriver printed no port within {WAIT:?}; its log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )));
        };
        Ok(Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium it left behind.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session. Dropping it quits the browser and stops chromedriver.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    session_path: String,
    driver: Driver,
    log: PathBuf,
    /// The profile (`--user-data-dir`) and chromedriver's log; removed after the browser quits.
    dir: tempfile::TempDir,
}

impl Browser {
    /// A browser with the default [`Options`] (scripts on, light, 1280×900); panics if it
    /// cannot start.
    pub async fn start() -> Browser {
        Self::start_with(Options::default())
            .await
            .unwrap_or_else(|e| panic!("start headless Chromium: {e}"))
    }

    /// A browser started with `options`.
    pub async fn start_with(options: Options) -> Result<Browser> {
        let dir = tempfile::Builder::new()
            .prefix("chromium-")
            .tempdir()
            .map_err(|e| Error::Driver(format!("a temporary directory: {e}")))?;
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromedriver.log");
        let driver = Driver::start(&log)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;

        // Ready: GET /status polled until it says so.
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = match http.get(format!("{}/status", driver.url)).send().await {
                Ok(resp) => resp
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(WAIT, "chromedriver's /status".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // The flags known to work on a closed network: without the background-networking ones
        // Chromium keeps trying to reach Google's services.
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!(
            "--window-size={},{}",
            options.window.0, options.window.1
        ));
        if !options.scripts {
            args.push("--blink-settings=scriptEnabled=false".into());
        }
        if options.dark {
            args.push("--force-dark-mode".into());
        }
        let mut chrome_options = json!({ "args": args });
        if let Ok(binary) = std::env::var("CHROMIUM_BIN") {
            chrome_options["binary"] = json!(binary);
        }
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": chrome_options,
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "pageLoadStrategy": "normal",
                    "timeouts": { "implicit": 0, "pageLoad": 30_000, "script": 10_000 },
                }
            }
        });
        let created = send(
            http.post(format!("{}/session", driver.url))
                .json(&capabilities),
        )
        .await
        .map_err(|e| match e {
            Error::WebDriver { message, .. } => Error::Driver(format!(
                "new session: {message}; chromedriver's log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )),
            e => e,
        })?;
        let id = created["sessionId"]
            .as_str()
            .ok_or_else(|| Error::Driver(format!("new session without an id: {created}")))?;
        let session_path = format!("/session/{id}");
        Ok(Browser {
            http,
            session: format!("{}{session_path}", driver.url),
            session_path,
            driver,
            log,
            dir,
        })
    }

    async fn get(&self, path: &str) -> Result<Value> {
        send(self.http.get(format!("{}{path}", self.session))).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        send(
            self.http
                .post(format!("{}{path}", self.session))
                .json(&body),
        )
        .await
    }

    async fn delete(&self, path: &str) -> Result<Value> {
        send(self.http.delete(format!("{}{path}", self.session))).await
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    /// The current page's URL.
    pub async fn current_url(&self) -> Result<String> {
        string(self.get("/url").await?)
    }

    /// The current page's title.
    pub async fn title(&self) -> Result<String> {
        string(self.get("/title").await?)
    }

    /// The current DOM serialised as HTML (not the bytes the server sent).
    pub async fn page_source(&self) -> Result<String> {
        string(self.get("/source").await?)
    }

    /// Goes back in history.
    pub async fn back(&self) -> Result<()> {
        self.post("/back", json!({})).await.map(drop)
    }

    /// Reloads the page.
    pub async fn refresh(&self) -> Result<()> {
        self.post("/refresh", json!({})).await.map(drop)
    }

    /// The first element matching the CSS selector (`no such element` if none).
    pub async fn find(&self, css: &str) -> Result<Element<'_>> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await?;
        Element::from_value(self, &v)
    }

    /// Every element matching the CSS selector, in document order.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let v = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        elements(self, &v)
    }

    /// The first element matching the CSS selector, or `None`.
    pub async fn try_find(&self, css: &str) -> Result<Option<Element<'_>>> {
        match self.find(css).await {
            Ok(e) => Ok(Some(e)),
            Err(e) if e.is_no_such_element() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The first element matching the CSS selector, polled for up to [`WAIT`] (for what a
    /// script or a navigation adds).
    pub async fn wait_for(&self, css: &str) -> Result<Element<'_>> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.try_find(css).await? {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(WAIT, format!("an element matching {css:?}")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls the element matching `css` for up to [`WAIT`] until its text is `text`.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Result<Element<'_>> {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(e) = self.try_find(css).await? {
                let now = e.text().await?;
                if now == text {
                    return Ok(e);
                }
                last = Some(now);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(
                    WAIT,
                    format!("{css:?} to read {text:?} (last: {last:?})"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls the element matching `css` for up to [`WAIT`] until its text contains `text`.
    pub async fn wait_for_text_containing(&self, css: &str, text: &str) -> Result<Element<'_>> {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(e) = self.try_find(css).await? {
                let now = e.text().await?;
                if now.contains(text) {
                    return Ok(e);
                }
                last = Some(now);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(
                    WAIT,
                    format!("{css:?} to contain {text:?} (last: {last:?})"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls the current URL for up to [`WAIT`] until `done` accepts it; returns it.
    pub async fn wait_for_url(&self, done: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.current_url().await?;
            if done(&url) {
                return Ok(url);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(WAIT, format!("another URL than {url}")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`, elements as
    /// [`Element::to_arg`]) in the page and returns what it returns. Works with page scripts
    /// off.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Runs `script` asynchronously: it ends by calling its last argument with the result
    /// (`arguments[arguments.length - 1]`), within the session's 10 s script timeout.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot_png(&self) -> Result<Vec<u8>> {
        decode_png(&self.get("/screenshot").await?)
    }

    /// A PNG of the whole page, beyond the viewport (CDP `Page.captureScreenshot`).
    pub async fn full_page_screenshot_png(&self) -> Result<Vec<u8>> {
        let v = self
            .cdp(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await?;
        decode_png(&v["data"])
    }

    /// Sets the window's outer size in CSS pixels.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await
            .map(drop)
    }

    /// The cookies visible to the current page (HttpOnly ones included).
    pub async fn cookies(&self) -> Result<Vec<Cookie>> {
        let v = self.get("/cookie").await?;
        Ok(v.as_array()
            .map(|all| all.iter().map(cookie).collect())
            .unwrap_or_default())
    }

    /// The cookie named `name` visible to the current page, if any.
    pub async fn cookie(&self, name: &str) -> Result<Option<Cookie>> {
        Ok(self.cookies().await?.into_iter().find(|c| c.name == name))
    }

    /// Sets a cookie for the current page's host and path `/`.
    pub async fn add_cookie(&self, name: &str, value: &str) -> Result<()> {
        self.post(
            "/cookie",
            json!({ "cookie": { "name": name, "value": value, "path": "/" } }),
        )
        .await
        .map(drop)
    }

    /// Deletes every cookie of the current page's host.
    pub async fn delete_cookies(&self) -> Result<()> {
        self.delete("/cookie").await.map(drop)
    }

    /// Sets a permission (`clipboard-read`, `clipboard-write`, `notifications`, ...) for the
    /// current page's origin (WebDriver's permissions extension).
    pub async fn set_permission(&self, name: &str, granted: bool) -> Result<()> {
        self.post(
            "/permissions",
            json!({
                "descriptor": { "name": name },
                "state": if granted { "granted" } else { "denied" },
            }),
        )
        .await
        .map(drop)
    }

    /// The browser's clipboard text, read through `navigator.clipboard.readText()` on the
    /// current page after granting it `clipboard-read`. The clipboard is the browser's, not
    /// the page's: what one origin wrote another reads.
    pub async fn clipboard_text(&self) -> Result<String> {
        self.set_permission("clipboard-read", true).await?;
        let v = self
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 navigator.clipboard.readText().then(
                   (text) => done({ text }),
                   (e) => done({ error: String(e) }));",
                vec![],
            )
            .await?;
        match (v["text"].as_str(), v["error"].as_str()) {
            (Some(text), _) => Ok(text.to_string()),
            (None, Some(error)) => Err(Error::Driver(format!("clipboard: {error}"))),
            _ => Err(Error::Driver(format!("clipboard: unexpected {v}"))),
        }
    }

    /// Emulates `prefers-color-scheme` for the current tab (kept across its navigations);
    /// `None` goes back to the browser's own (see [`Options::dark`]).
    pub async fn emulate_color_scheme(&self, scheme: Option<ColorScheme>) -> Result<()> {
        let value = match scheme {
            Some(ColorScheme::Light) => "light",
            Some(ColorScheme::Dark) => "dark",
            None => "",
        };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": value }] }),
        )
        .await
        .map(drop)
    }

    /// A Chrome DevTools Protocol command through chromedriver
    /// (`POST /session/{id}/goog/cdp/execute`); returns its result.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
            .await
    }

    /// The console entries since the last call (or the session's start), then forgets them.
    pub async fn console_log(&self) -> Result<Vec<LogEntry>> {
        let v = self.post("/se/log", json!({ "type": "browser" })).await?;
        Ok(v.as_array()
            .map(|all| {
                all.iter()
                    .map(|e| LogEntry {
                        level: e["level"].as_str().unwrap_or_default().to_string(),
                        source: e["source"].as_str().unwrap_or_default().to_string(),
                        message: e["message"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The `SEVERE` console entries since the last [`console_log`](Self::console_log) call
    /// (uncaught exceptions, `console.error`, CSP refusals, failed loads); forgets them all.
    pub async fn console_errors(&self) -> Result<Vec<LogEntry>> {
        Ok(self
            .console_log()
            .await?
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .collect())
    }

    /// chromedriver's log (its stderr and Chromium's), for a failing test's message.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The temporary directory holding the profile and chromedriver's log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session so chromedriver quits Chromium cleanly (Drop cannot await, so a
        // blocking request on a plain socket); the driver's drop then kills what is left.
        let _ = delete_blocking(self.driver.port, &self.session_path);
    }
}

/// `DELETE path` on chromedriver, blocking, with a deadline.
fn delete_blocking(port: u16, path: &str) -> std::io::Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // Read the answer through (chromedriver answers once Chromium has quit), by its
    // Content-Length: chromedriver keeps the connection open despite `Connection: close`.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

/// Sends a WebDriver request and unwraps `value`, or the WebDriver error.
async fn send(request: reqwest::RequestBuilder) -> Result<Value> {
    let resp = request.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let body: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Driver(format!("not JSON ({e}) from chromedriver: {text}")))?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    Err(Error::WebDriver {
        status: status.as_u16(),
        error: value["error"]
            .as_str()
            .unwrap_or("unknown error")
            .to_string(),
        message: value["message"].as_str().unwrap_or(&text).to_string(),
    })
}

fn string(v: Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(Error::Driver(format!("expected a string, got {other}"))),
    }
}

fn decode_png(v: &Value) -> Result<Vec<u8>> {
    let data = v
        .as_str()
        .ok_or_else(|| Error::Driver(format!("screenshot without data: {v}")))?;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| Error::Driver(format!("screenshot not base64: {e}")))
}

fn cookie(v: &Value) -> Cookie {
    let s = |key: &str| v[key].as_str().unwrap_or_default().to_string();
    Cookie {
        name: s("name"),
        value: s("value"),
        domain: s("domain"),
        path: s("path"),
        secure: v["secure"].as_bool().unwrap_or(false),
        http_only: v["httpOnly"].as_bool().unwrap_or(false),
        same_site: v["sameSite"].as_str().map(ToString::to_string),
        expiry: v["expiry"].as_u64(),
    }
}

fn elements<'b>(browser: &'b Browser, v: &Value) -> Result<Vec<Element<'b>>> {
    v.as_array()
        .ok_or_else(|| Error::Driver(format!("expected elements, got {v}")))?
        .iter()
        .map(|e| Element::from_value(browser, e))
        .collect()
}

/// An element of the current page.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl std::fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Element").field(&self.id).finish()
    }
}

impl<'b> Element<'b> {
    fn from_value(browser: &'b Browser, v: &Value) -> Result<Element<'b>> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| Error::Driver(format!("expected an element, got {v}")))?;
        Ok(Element {
            browser,
            id: id.to_string(),
        })
    }

    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// The element as an argument of [`Browser::execute`].
    pub fn to_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// Clicks it (scrolled into view; a trusted user gesture).
    pub async fn click(&self) -> Result<()> {
        self.browser
            .post(&self.path("/click"), json!({}))
            .await
            .map(drop)
    }

    /// Types `text` into it (see [`ENTER`] for the Enter key).
    pub async fn send_keys(&self, text: &str) -> Result<()> {
        self.browser
            .post(&self.path("/value"), json!({ "text": text }))
            .await
            .map(drop)
    }

    /// Empties an input or textarea.
    pub async fn clear(&self) -> Result<()> {
        self.browser
            .post(&self.path("/clear"), json!({}))
            .await
            .map(drop)
    }

    /// Its rendered text (as a person sees it: hidden parts left out).
    pub async fn text(&self) -> Result<String> {
        string(self.browser.get(&self.path("/text")).await?)
    }

    /// Its tag name, lower case.
    pub async fn tag_name(&self) -> Result<String> {
        string(self.browser.get(&self.path("/name")).await?)
    }

    /// An attribute as written in the DOM, or `None`.
    pub async fn attribute(&self, name: &str) -> Result<Option<String>> {
        let v = self
            .browser
            .get(&self.path(&format!("/attribute/{name}")))
            .await?;
        Ok(v.as_str().map(ToString::to_string))
    }

    /// A DOM property (`value`, `checked`, `href` resolved, ...).
    pub async fn property(&self, name: &str) -> Result<Value> {
        self.browser
            .get(&self.path(&format!("/property/{name}")))
            .await
    }

    /// A computed CSS property (`background-color` → `rgba(0, 0, 0, 1)`).
    pub async fn css_value(&self, name: &str) -> Result<String> {
        string(
            self.browser
                .get(&self.path(&format!("/css/{name}")))
                .await?,
        )
    }

    /// The first descendant matching the CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element<'b>> {
        let v = self
            .browser
            .post(
                &self.path("/element"),
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        Element::from_value(self.browser, &v)
    }

    /// Every descendant matching the CSS selector.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element<'b>>> {
        let v = self
            .browser
            .post(
                &self.path("/elements"),
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        elements(self.browser, &v)
    }
}
