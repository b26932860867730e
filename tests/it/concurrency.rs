//! Racing publishes, by direct HTTP against the real server: no version lost, no 5xx, exactly one
//! winner per version, and the stored tarball is the winner's.

use e2e::{Backend, S3Host, Server, escaped, http, integrity, package_tgz, publish_doc, tgz};
use serde_json::Value;

const N: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distinct_versions_all_land_local() {
    distinct_versions_all_land(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distinct_versions_all_land_aws() {
    distinct_versions_all_land(Backend::aws("distinct", S3Host::Different)).await;
}

async fn distinct_versions_all_land(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(tmp.path(), &backend);
    let client = http();
    let name = "@race/distinct";
    let url = format!("{}/{}", server.url, escaped(name));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let version = format!("1.0.{i}");
            let body = publish_doc(name, &version, &package_tgz(name, &version));
            client
                .put(&url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 201),
        "every publish must succeed: {statuses:?}"
    );
    let packument: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    let versions = packument["versions"].as_object().unwrap();
    assert_eq!(
        versions.len(),
        N,
        "all {N} versions must be in the packument"
    );
    for i in 0..N {
        let v = format!("1.0.{i}");
        assert!(versions.contains_key(&v), "{v} missing");
        assert!(packument["time"][&v].is_string(), "{v} has no time");
    }
    let latest = packument["dist-tags"]["latest"].as_str().unwrap();
    assert!(versions.contains_key(latest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_version_has_exactly_one_winner_local() {
    same_version_has_exactly_one_winner(Backend::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_version_has_exactly_one_winner_aws() {
    same_version_has_exactly_one_winner(Backend::aws("same", S3Host::Different)).await;
}

async fn same_version_has_exactly_one_winner(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(tmp.path(), &backend);
    let client = http();
    let name = "@race/same";
    let url = format!("{}/{}", server.url, escaped(name));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            // Each racer's tarball differs, so the stored bytes identify the winner.
            let manifest = format!(r#"{{"name":"{name}","version":"1.0.0","racer":{i}}}"#);
            let tarball = tgz(&[("package/package.json", manifest.as_bytes())]);
            let body = publish_doc(name, "1.0.0", &tarball);
            let response = client.put(&url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, integrity(&tarball), text)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let winners: Vec<_> = results
        .iter()
        .filter(|(s, _, _)| (200..300).contains(s))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one publish wins: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for (status, _, text) in &results {
        assert!(
            *status == 201 || *status == 409,
            "unexpected status {status}: {text}"
        );
        if *status == 409 {
            let body: Value = serde_json::from_str(text).unwrap();
            assert_eq!(body["code"], "version_exists", "{text}");
        }
    }
    let winner_integrity = &winners[0].1;
    let packument: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        &packument["versions"]["1.0.0"]["dist"]["integrity"],
        winner_integrity
    );
    let tarball_url = packument["versions"]["1.0.0"]["dist"]["tarball"]
        .as_str()
        .unwrap();
    // Follows the AWS backend's redirect to S3, as clients do.
    let fetched = reqwest::get(tarball_url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    let bytes = fetched.bytes().await.unwrap();
    assert_eq!(
        &integrity(&bytes),
        winner_integrity,
        "the stored tarball is the winner's"
    );
    if let Backend::Local = backend {
        // The losers' uploads were removed: only the winner's tarball is left.
        assert_eq!(
            backend.tarball_count(&server.data_dir).await,
            1,
            "losers' tarballs must not linger"
        );
    }
}
