//! The local server's data directory across kills and beside the operator's commands: a tarball
//! write cut short by a kill leaves its temporary file, which the next start removes; a restart
//! after a kill finds every acknowledged write, without repairing the database in full; a second
//! server on a live data directory is refused; `sweep` beside a live server goes through that
//! server, which keeps the tarball of a publish in flight.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use e2e::{Server, escaped, http, package_tgz, publish_doc, sibling_binary, tgz};
use registry::domain::{PackageDocument, PackageName, PackageRecord, VersionRecord};
use registry::storage::{MetadataStore, PackageWrite, StoreError, TarballStore};

/// The files in the data directory's `tmp`.
fn leftovers(data: &Path) -> Vec<String> {
    match std::fs::read_dir(data.join("tmp")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A package whose tarball takes long enough to write (4 MB that do not compress) that the
/// test sees its temporary file.
fn big_tarball(name: &str, version: &str) -> Vec<u8> {
    let manifest =
        serde_json::to_vec(&serde_json::json!({ "name": name, "version": version })).unwrap();
    let mut blob = vec![0u8; 4 << 20];
    rand::fill(&mut blob[..]);
    tgz(&[
        ("package/package.json", &manifest),
        ("package/blob.bin", &blob),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_removes_what_a_write_killed_mid_way_left() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, log) = (tmp.path().join("data"), tmp.path().join("server.log"));
    let name = "@kill/big";
    let mut server = Server::start_with(data.clone(), log.clone(), Vec::new());
    let mut left = Vec::new();
    // Each attempt kills the server the moment the tarball's temporary file appears; the kill
    // can still come after the rename, so a few attempts may be needed to catch one mid-write.
    for attempt in 0..10 {
        let version = format!("1.0.{attempt}");
        let body = publish_doc(name, &version, &big_tarball(name, &version));
        let url = format!("{}/{}", server.url, escaped(name));
        let publish = tokio::spawn(async move { http().put(url).json(&body).send().await });
        while leftovers(&data).is_empty() && !publish.is_finished() {
            std::thread::yield_now();
        }
        drop(server); // SIGKILL
        let _ = publish.await;
        left = leftovers(&data);
        if !left.is_empty() {
            break;
        }
        server = Server::start_with(data.clone(), log.clone(), Vec::new());
    }
    assert!(
        !left.is_empty(),
        "no kill caught a tarball write in progress in 10 attempts"
    );
    let server = Server::start_with(data.clone(), log.clone(), Vec::new());
    assert_eq!(
        leftovers(&data),
        Vec::<String>::new(),
        "{left:?} survived the restart"
    );
    // The server works as before (the killed publish never happened).
    let status = http()
        .get(format!("{}/-/ready", server.url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[test]
fn a_sigterm_right_after_start_up_stops_the_server_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, log) = (tmp.path().join("data"), tmp.path().join("server.log"));
    // The signal follows the line that says the server is up at once: it must find the handler
    // installed (without it, about half of such signals ended the process there and then).
    for attempt in 0..10 {
        let server = Server::start_with(data.clone(), log.clone(), Vec::new());
        let status = server.terminate();
        assert!(status.success(), "attempt {attempt}: {status}");
    }
}

#[test]
fn a_second_server_cannot_open_a_live_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let second = Server::try_start_with(
        server.data_dir.clone(),
        tmp.path().join("second.log"),
        Vec::new(),
    );
    let Err(exited) = second else {
        panic!("a second server started on a live data directory");
    };
    assert!(exited.log.contains("already open"), "{}", exited.log);
}

/// Runs `registry-server sweep` on `data` (every age), and says what it printed.
fn sweep_command(data: &Path) -> String {
    let out = Command::new(sibling_binary("registry-server"))
        .arg("--data")
        .arg(data)
        .args(["sweep", "--older-than-minutes", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn sweep_beside_a_live_server_goes_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let name = "@acme/online";
    let put = http()
        .put(format!("{}/{}", server.url, escaped(name)))
        .json(&publish_doc(name, "1.0.0", &package_tgz(name, "1.0.0")))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let orphan = server.data_dir.join(format!(
        "tarballs/@acme/online/1.0.1-{}.tgz",
        "ab".repeat(16)
    ));
    // A file, as an older release stored every tarball (this one keeps small ones in its
    // database): the sweep visits both.
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"left by a crash").unwrap();
    let data = server.data_dir.clone();
    let stdout = tokio::task::spawn_blocking(move || sweep_command(&data))
        .await
        .unwrap();
    assert!(
        stdout.contains("swept by the server running on this data directory"),
        "{stdout}"
    );
    assert!(stdout.contains("checked 2 tarballs, removed 1"), "{stdout}");
    assert!(!orphan.exists());
    let tarball = http()
        .get(format!("{}/@acme/online/-/online-1.0.0.tgz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), 200, "the live tarball survives the sweep");
    assert!(
        server
            .log()
            .contains("swept, as asked through the control socket"),
        "{}",
        server.log()
    );
}

/// The embedded metadata store, with each write held until the test lets one through: a publish
/// then waits between storing its tarball and committing its version for as long as the test
/// wants.
struct HeldWrites {
    inner: registry::storage::embedded::EmbeddedMetadata,
    /// A permit per write that has reached the store.
    reached: tokio::sync::Semaphore,
    /// A permit per write let through.
    release: tokio::sync::Semaphore,
}

#[async_trait]
impl MetadataStore for HeldWrites {
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
        self.inner.package(name).await
    }

    async fn document(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError> {
        self.inner.document(name).await
    }

    async fn readme(
        &self,
        name: &PackageName,
        version: &semver::Version,
    ) -> Result<Option<String>, StoreError> {
        self.inner.readme(name, version).await
    }

    async fn version(
        &self,
        name: &PackageName,
        version: &semver::Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        self.inner.version(name, version).await
    }

    async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
        self.reached.add_permits(1);
        self.release.acquire().await.unwrap().forget();
        self.inner.write(write).await
    }
}

/// The keys of the tarballs stored for `name`'s `version`, files or rows of the database.
async fn stored_tarballs(
    tarballs: &registry::storage::embedded::EmbeddedTarballs,
    name: &str,
    version: &str,
) -> Vec<registry::domain::TarballKey> {
    tarballs
        .list(std::time::Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .filter(|key| key.as_str().starts_with(&format!("{name}/{version}-")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_beside_a_live_server_keeps_the_tarball_of_a_publish_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (metadata, tarballs) = registry::storage::embedded::open(&data).unwrap();
    let tarballs = Arc::new(tarballs);
    let held = Arc::new(HeldWrites {
        inner: metadata,
        reached: tokio::sync::Semaphore::new(0),
        release: tokio::sync::Semaphore::new(0),
    });
    let config = registry::config::Config::from_lookup(|key| match key {
        "REGISTRY_DATA_DIR" => Some(data.display().to_string()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        _ => None,
    })
    .unwrap();
    let settings = registry::listener::ListenerSettings::from_config(&config);
    let state = registry::app::App::builder(config)
        .stores(held.clone(), tarballs.clone())
        .build()
        .await
        .unwrap();
    // The server as `registry-server` runs it, around the held store: its listener and its
    // control socket.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = registry::http::router(state.clone(), &registry::http::RouteGroup::ALL);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(registry::listener::serve(listener, app, settings, async {
        let _ = stopped.await;
    }));
    let control = registry::app::control::ControlSocket::bind(&data, state).unwrap();
    let controlling = tokio::spawn(control.serve());

    let name = "@acme/inflight";
    // Bigger than a row of the database (a small tarball is written in its version's own
    // transaction, so there is none to protect while the publish is in flight): a file,
    // stored before the version commits.
    let manifest =
        serde_json::to_vec(&serde_json::json!({ "name": name, "version": "1.0.0" })).unwrap();
    let noise: Vec<u8> = (0..256u32)
        .flat_map(|i| <sha2::Sha256 as sha2::Digest>::digest(i.to_le_bytes()))
        .collect();
    let tarball = tgz(&[
        ("package/package.json", &manifest),
        ("package/noise.bin", &noise),
    ]);
    assert!(tarball.len() > 4096, "{} bytes", tarball.len());
    let body = publish_doc(name, "1.0.0", &tarball);
    let publish_url = format!("{url}/{}", escaped(name));
    let publish = tokio::spawn(async move { http().put(publish_url).json(&body).send().await });
    // The publish has stored its tarball and waits to commit its version.
    held.reached.acquire().await.unwrap().forget();
    let in_flight = stored_tarballs(&tarballs, name, "1.0.0").await;
    assert_eq!(in_flight.len(), 1, "{in_flight:?}");
    // And a tarball nothing will refer to, so that the sweep has something to remove (a file,
    // as an older release left them).
    let orphan = data.join(format!("tarballs/{name}/1.0.1-{}.tgz", "cd".repeat(16)));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"left by a crash").unwrap();

    let sweep_data = data.clone();
    let stdout = tokio::task::spawn_blocking(move || sweep_command(&sweep_data))
        .await
        .unwrap();
    assert!(
        stdout.contains("swept by the server running on this data directory"),
        "{stdout}"
    );
    assert!(stdout.contains("checked 2 tarballs, removed 1"), "{stdout}");
    assert!(!orphan.exists(), "the sweep did not run");
    assert!(
        tarballs.get(&in_flight[0]).await.unwrap().is_some(),
        "the sweep removed the tarball of a publish in flight"
    );

    held.release.add_permits(1);
    let published = publish.await.unwrap().unwrap();
    assert_eq!(published.status(), 201);
    let got = http()
        .get(format!("{url}/{name}/-/inflight-1.0.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), tarball.as_slice());

    controlling.abort();
    let _ = controlling.await;
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_kill_finds_every_acknowledged_write_without_a_full_repair() {
    restart_after_a_kill(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quick_repair_a_restart_after_a_kill_repairs_in_full_and_loses_nothing() {
    restart_after_a_kill(false).await;
}

/// Kills a server under publishes, restarts it, and checks every publish it acknowledged; with
/// `quick_repair` the restart must not repair the database in full, without it it must (so the
/// check above can tell).
async fn restart_after_a_kill(quick_repair: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (data, log) = (tmp.path().join("data"), tmp.path().join("server.log"));
    let env = vec![(
        "REGISTRY_DB_QUICK_REPAIR".to_string(),
        quick_repair.to_string(),
    )];
    let server = Server::start_with(data.clone(), log.clone(), env.clone());
    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    // Publishers that keep going until the server dies under them.
    let mut publishers = Vec::new();
    for p in 0..8 {
        let (url, acknowledged) = (server.url.clone(), acknowledged.clone());
        publishers.push(tokio::spawn(async move {
            let client = http();
            for v in 0.. {
                let (name, version) = (format!("@kill/p{p}"), format!("1.0.{v}"));
                let body = publish_doc(&name, &version, &package_tgz(&name, &version));
                let sent = client
                    .put(format!("{url}/{}", escaped(&name)))
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => {
                        acknowledged.lock().unwrap().insert((name, version));
                    }
                    Ok(r) => panic!("publish answered {}", r.status()),
                    Err(_) => return, // killed
                }
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(server); // SIGKILL, with publishes in flight
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let server = Server::start_with(data, log, env);
    let log = server.log();
    assert_eq!(
        log.contains("repaired it in full"),
        !quick_repair,
        "quick repair {quick_repair}: {log}"
    );
    for (name, version) in &acknowledged {
        let packument: serde_json::Value = http()
            .get(format!("{}/{}", server.url, escaped(name)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            packument["versions"][version].is_object(),
            "{name}@{version} was acknowledged and is lost"
        );
        let file = name.rsplit('/').next().unwrap();
        let tarball = http()
            .get(format!("{}/{name}/-/{file}-{version}.tgz", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(tarball.status(), 200, "{name}@{version}'s tarball");
    }
}
