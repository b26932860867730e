//! Signing in with GitHub through the registry's OAuth app, against the fake GitHub's OAuth web
//! flow: the browser's session cookie (a read-only registry token, revoked at sign-out), and the
//! real `npm login --auth-type=web` ending with the same kind of token `npm login` gives.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use e2e::api::send;
use e2e::github_world::World;
use e2e::{Backend, Npm, Server, http, npm_bin, write_package};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

const CLIENT_ID: &str = "Iv1.registrytest";

/// A registry in GitHub mode with an OAuth app registered at the fake GitHub, alice signed in
/// to github.com in "the browser".
fn server(world: &World, root: &Path) -> Server {
    server_on(world, root, &Backend::local())
}

/// `server` on `backend`.
fn server_on(world: &World, root: &Path, backend: &Backend) -> Server {
    let secret = hex::encode(rand::random::<[u8; 20]>());
    let server = world.server(
        root,
        backend,
        &[
            ("REGISTRY_GITHUB_OAUTH_CLIENT_ID", CLIENT_ID),
            ("REGISTRY_GITHUB_OAUTH_CLIENT_SECRET", &secret),
            ("GITHUB_URL", world.github.web_url()),
        ],
    );
    world.github.add_oauth_app(
        CLIENT_ID,
        &secret,
        &format!("{}/-/web/callback", server.url),
    );
    world.github.oauth_sign_in("alice");
    server
}

/// `name=value` of the `Set-Cookie` header setting cookie `name`, and the whole header.
fn set_cookie(headers: &header::HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let pair = v.split(';').next().unwrap().to_string();
            (pair, v.to_string())
        })
}

fn location(headers: &header::HeaderMap) -> String {
    headers[header::LOCATION].to_str().unwrap().to_string()
}

/// Follows a sign-in from `start` (a login URL) as a browser would, sending the cookies it is
/// given; the callback's answer.
async fn follow_sign_in(start: &str) -> (StatusCode, header::HeaderMap, String) {
    let client = http();
    let first = client.get(start).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER, "{start}");
    let (state_cookie, _) =
        set_cookie(first.headers(), "registry_oauth_state").expect("a state cookie");
    let authorize = location(first.headers());
    let github = client.get(&authorize).send().await.unwrap();
    assert_eq!(github.status(), StatusCode::FOUND, "{authorize}");
    let callback = location(github.headers());
    let back = client
        .get(&callback)
        .header(header::COOKIE, &state_cookie)
        .send()
        .await
        .unwrap();
    let (status, headers) = (back.status(), back.headers().clone());
    (status, headers, back.text().await.unwrap())
}

/// `POST /-/v1/login` as npm sends it: the login URL and the done URL.
async fn start_npm_login(server: &Server) -> (String, String) {
    let (status, urls, _) = send(
        Method::POST,
        format!("{}/-/v1/login", server.url),
        None,
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{urls}");
    (
        urls["loginUrl"].as_str().unwrap().to_string(),
        urls["doneUrl"].as_str().unwrap().to_string(),
    )
}

/// The token a finished web login hands over at its done URL.
async fn collect_token(done_url: &str) -> String {
    let done = http().get(done_url).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    done.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `GET /-/whoami` with `token`: the status and the username answered.
async fn whoami(server: &Server, token: &str) -> (StatusCode, Option<String>) {
    let (status, body, _) = send(
        Method::GET,
        format!("{}/-/whoami", server.url),
        Some(token),
        None,
    )
    .await;
    (status, body["username"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sign_in_sets_a_revocable_session_cookie() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let server = server(&world, tmp.path());
    let client = http();

    // Off to GitHub: the app, the callback, the scope that reads private repositories, a state.
    let start = client
        .get(format!("{}/-/web/login", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let authorize = reqwest::Url::parse(&location(start.headers())).unwrap();
    assert!(authorize.as_str().starts_with(&format!(
        "{}/login/oauth/authorize?",
        world.github.web_url()
    )));
    let query: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(
        query["redirect_uri"],
        format!("{}/-/web/callback", server.url)
    );
    assert_eq!(query["scope"], "repo");
    assert_eq!(query["state"].len(), 64);
    let (_, state_header) = set_cookie(start.headers(), "registry_oauth_state").unwrap();
    assert!(
        state_header.contains("HttpOnly") && state_header.contains("SameSite=Lax"),
        "{state_header}"
    );
    assert!(
        !state_header.contains("Secure"),
        "plain http: {state_header}"
    );

    // The whole way: back on the package list with a session cookie.
    let (status, headers, _) = follow_sign_in(&format!("{}/-/web/login", server.url)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/-/web");
    let (session, session_header) =
        set_cookie(&headers, "registry_session").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(
            session_header.contains(attribute),
            "{attribute}: {session_header}"
        );
    }
    let token = session.trim_start_matches("registry_session=").to_string();
    // The session is alice's read-only registry token: it reads as her, never writes.
    assert_eq!(
        whoami(&server, &token).await,
        (StatusCode::OK, Some("alice".to_string()))
    );
    let (status, body, _) = send(
        Method::PUT,
        format!("{}/@acme%2fviaweb", server.url),
        Some(&token),
        Some(&e2e::api::doc(
            "@acme/viaweb",
            "1.0.0",
            Some("github:acme/widgets"),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Sign-out from another site is refused; from the registry's own page it revokes the token.
    let cross = client
        .post(format!("{}/-/web/logout", server.url))
        .header(header::COOKIE, &session)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let out = client
        .post(format!("{}/-/web/logout", server.url))
        .header(header::COOKIE, &session)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (cleared, cleared_header) = set_cookie(out.headers(), "registry_session").unwrap();
    assert_eq!(cleared, "registry_session=");
    assert!(cleared_header.contains("Max-Age=0"));
    assert_eq!(
        whoami(&server, &token).await.0,
        StatusCode::UNAUTHORIZED,
        "the signed-out session's token is revoked"
    );

    // A callback this browser did not start, or one GitHub's user cancelled, signs nobody in.
    let start = client
        .get(format!("{}/-/web/login", server.url))
        .send()
        .await
        .unwrap();
    let github = client.get(location(start.headers())).send().await.unwrap();
    let callback = location(github.headers());
    let foreign = client
        .get(&callback)
        .header(header::COOKIE, "registry_oauth_state=someone-elses")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(foreign.headers(), "registry_session").is_none());
    world
        .github
        .set_oauth_consent(e2e::fake_github::Consent::Deny);
    let start = client
        .get(format!("{}/-/web/login", server.url))
        .send()
        .await
        .unwrap();
    let (state_cookie, _) = set_cookie(start.headers(), "registry_oauth_state").unwrap();
    let github = client.get(location(start.headers())).send().await.unwrap();
    let denied = client
        .get(location(github.headers()))
        .header(header::COOKIE, &state_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(denied.headers(), "registry_session").is_none());
    assert!(denied.text().await.unwrap().contains("did not authorise"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_login_in_the_browser_gives_npm_a_publish_token() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let server = server(&world, root);

    // The done URL: 202 with Retry-After and a JSON body until the sign-in, then the token once.
    let (login_url, done_url) = start_npm_login(&server).await;
    assert!(login_url.starts_with(&format!("{}/-/web/login?session=", server.url)));
    let secret = done_url.rsplit('=').next().unwrap();
    assert!(
        !login_url.contains(secret),
        "the login URL does not carry the done URL's secret"
    );
    let pending = http().get(&done_url).send().await.unwrap();
    assert_eq!(pending.status(), StatusCode::ACCEPTED);
    assert_eq!(pending.headers()[header::RETRY_AFTER], "1");
    assert_eq!(pending.json::<Value>().await.unwrap(), json!({}));
    let (status, _, page) = follow_sign_in(&login_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("return to your terminal"), "{page}");
    let token = collect_token(&done_url).await;
    assert_eq!(
        whoami(&server, &token).await,
        (StatusCode::OK, Some("alice".to_string()))
    );
    assert_eq!(
        http().get(&done_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "once"
    );
    // Tokens are stored hashed: the one npm collected was never written anywhere (the pending
    // login kept its claims, signed when the done URL was polled), not even in freed pages.
    let mut files = vec![root.to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path) {
            scanned += bytes.len();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "the token is stored in {}",
                path.display()
            );
        }
    }
    assert!(scanned > 0, "the data directory was scanned");

    // The real npm: reads "Login at:", polls while we follow the URL, writes the token.
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let npmrc = home.join(".npmrc");
    std::fs::write(&npmrc, format!("registry={}/\n", server.url)).unwrap();
    let mut npm = Command::new(npm_bin())
        .args(["login", "--auth-type=web"])
        .current_dir(root)
        .env("HOME", &home)
        .env("npm_config_cache", root.join("npm-cache"))
        .env("npm_config_userconfig", &npmrc)
        .env_remove("npm_config_registry")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = npm.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let url = loop {
        let line = lines_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("npm printed no login URL: {printed:?}"));
        printed.push(line.clone());
        if line
            .trim()
            .starts_with(&format!("{}/-/web/login?session=", server.url))
        {
            break line.trim().to_string();
        }
    };
    let (status, _, _) = follow_sign_in(&url).await;
    assert_eq!(status, StatusCode::OK);
    let exit = npm.wait().unwrap();
    reader.join().unwrap();
    printed.extend(lines_rx.try_iter());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut npm.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "{printed:?} {stderr}");
    assert!(
        printed.iter().any(|l| l.contains("Login at:")),
        "{printed:?}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("Logged in on {}/.", server.url))),
        "{printed:?}"
    );
    let written = std::fs::read_to_string(&npmrc).unwrap();
    let host = server.url.trim_start_matches("http:");
    assert!(
        written.contains(&format!("{host}/:_authToken=")),
        "{written}"
    );

    // That token is alice's publish token: whoami, and a publish to her repository.
    let npm = Npm::with_token(&root.join("again"), &server.url, None);
    std::fs::copy(&npmrc, root.join("again/home/.npmrc")).unwrap();
    assert_eq!(npm.ok(root, &["whoami"]).stdout.trim(), "alice");
    let dir = write_package(
        &root.join("pkg"),
        "@acme/weblogin",
        "1.0.0",
        json!({"repository": "github:acme/widgets"}),
    );
    npm.ok(&dir, &["publish"]);
}

/// Whether `text` holds a JWT: three dot-separated base64url parts, the first a JSON object's.
fn holds_a_jwt(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .any(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            word.starts_with("eyJ") && parts.len() == 3 && parts.iter().all(|p| p.len() >= 8)
        })
}

/// Tokens are stored hashed: a finished web login keeps the new token's claims, not the token,
/// until npm polls; the token is signed then and handed over once. (On AWS, where the table can
/// be read item by item: the local store's pages are not all on disk.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_web_login_stores_no_token_aws() {
    let tmp = tempfile::tempdir().unwrap();
    let world = World::start().await;
    let backend = Backend::aws("weblogin", e2e::S3Host::Same);
    let server = server_on(&world, tmp.path(), &backend);
    let Backend::Aws(resources) = &backend else {
        unreachable!()
    };
    let (login_url, done_url) = start_npm_login(&server).await;
    let (status, _, page) = follow_sign_in(&login_url).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // Before the poll: nothing in the table is a token (a JWT is three dot-separated base64url
    // parts; records keep only a 12-character preview of theirs).
    let items = resources.table_items().await;
    assert!(items.len() > 2, "{items:?}");
    for item in &items {
        assert!(!holds_a_jwt(item), "a token is stored: {item}");
    }
    let token = collect_token(&done_url).await;
    assert!(holds_a_jwt(&token), "{token}");
    assert_eq!(
        whoami(&server, &token).await,
        (StatusCode::OK, Some("alice".to_string()))
    );
    for item in resources.table_items().await {
        assert!(!item.contains(&token), "the token is stored: {item}");
    }
}

/// Under a terminal npm offers to open the login URL itself: with `BROWSER` set to a script that
/// follows it (cookies kept, as a browser keeps them), `npm login` completes on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_login_opens_the_browser_under_a_terminal() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let world = World::start().await;
    let server = server(&world, root);
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let npmrc = home.join(".npmrc");
    std::fs::write(&npmrc, format!("registry={}/\n", server.url)).unwrap();
    let follow = root.join("follow-login.sh");
    std::fs::write(
        &follow,
        format!(
            "#!/bin/sh\nexec curl -s -L -c '{jar}' -b '{jar}' -o /dev/null \"$1\"\n",
            jar = root.join("cookies").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&follow, std::fs::Permissions::from_mode(0o755)).unwrap();
    // util-linux's `script` gives npm a terminal on both stdin and stdout.
    let mut npm = Command::new("script")
        .args([
            "-qfec",
            &format!("{} login --auth-type=web", npm_bin()),
            "/dev/null",
        ])
        .current_dir(root)
        .env("HOME", &home)
        .env("npm_config_cache", root.join("npm-cache"))
        .env("npm_config_userconfig", &npmrc)
        // npm 11.19 opens the login URL with xdg-open whatever its `browser` setting says;
        // xdg-open runs $BROWSER (xdg-utils comes with Debian's chromium).
        .env("BROWSER", &follow)
        .env_remove("npm_config_registry")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "Press ENTER to open in the browser...": the terminal keeps the keystroke until asked.
    npm.stdin.take().unwrap().write_all(b"\n").unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(npm.wait_with_output());
    });
    let out = done_rx
        .recv_timeout(std::time::Duration::from_secs(90))
        .expect("npm login finished within 90 s")
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains(&format!("Logged in on {}/.", server.url)),
        "{printed}"
    );
    let written = std::fs::read_to_string(&npmrc).unwrap();
    let host = server.url.trim_start_matches("http:");
    assert!(
        written.contains(&format!("{host}/:_authToken=")),
        "{written}"
    );
    assert_eq!(world.github.oauth_exchanges(), 1);
}
