//! The local server's data directory across kills: a tarball write cut short by a kill leaves
//! its temporary file, which the next start removes; a second process on a live data directory
//! (the `sweep` command) is refused before it can touch the files of writes in flight.

use std::path::Path;
use std::process::Command;

use e2e::{Server, escaped, http, publish_doc, sibling_binary, tgz};

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
fn a_second_process_cannot_open_a_live_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _server = Server::start(tmp.path());
    // What a write in flight looks like to another process.
    let in_flight = data.join("tmp").join(".tmpInFlight");
    std::fs::write(&in_flight, b"half a tarball").unwrap();
    let sweep = Command::new(sibling_binary("registry-server"))
        .arg("--data")
        .arg(&data)
        .args(["sweep", "--older-than-minutes", "0"])
        .output()
        .unwrap();
    assert!(
        !sweep.status.success(),
        "a sweep ran beside a live server: {}",
        String::from_utf8_lossy(&sweep.stdout)
    );
    let stderr = String::from_utf8_lossy(&sweep.stderr);
    assert!(stderr.contains("already open"), "{stderr}");
    assert!(
        in_flight.exists(),
        "the refused process removed a live write's file"
    );
}
