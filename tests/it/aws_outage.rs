//! DynamoDB goes away in the middle of a publish (after the tarball is in S3, as the metadata
//! transaction is sent): the client gets 503 with a clear message, no version is half-visible,
//! and once the emulator is back the same publish succeeds.

use e2e::faults::OutageProxy;
use e2e::{AwsResources, S3Host, Server, escaped, http, package_tgz, publish_doc};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_survives_a_storage_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let resources = AwsResources::create("outage", S3Host::Different);
    let dynamodb = std::env::var("TEST_DYNAMODB_ENDPOINT").unwrap();
    let proxy = OutageProxy::start(
        dynamodb.trim_start_matches("http://").to_string(),
        "DynamoDB_20120810.TransactWriteItems",
    )
    .await;
    let mut env = resources.env.clone();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL_DYNAMODB");
    env.push((
        "AWS_ENDPOINT_URL_DYNAMODB".into(),
        format!("http://{}", proxy.address),
    ));
    let server = Server::start_with(tmp.path().join("data"), tmp.path().join("server.log"), env);
    let client = http();
    let name = "@acme/outage";
    let url = format!("{}/{}", server.url, escaped(name));
    let publish = |version: &str| {
        let body = publish_doc(name, version, &package_tgz(name, version));
        client.put(&url).json(&body).send()
    };
    assert_eq!(publish("1.0.0").await.unwrap().status(), 201);

    proxy.arm();
    let failed = publish("1.0.1").await.unwrap();
    assert!(
        proxy.is_down(),
        "the outage must have hit the {} request",
        proxy.trigger()
    );
    assert_eq!(failed.status(), 503);
    assert!(failed.headers().contains_key("retry-after"));
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["code"], "storage_unavailable", "{body}");
    // The message is for whoever reads npm's output: it says to retry.
    assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");

    proxy.restore();
    let packument: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    let versions: Vec<&String> = packument["versions"].as_object().unwrap().keys().collect();
    assert_eq!(
        versions,
        ["1.0.0"],
        "the failed version must not be visible at all"
    );
    assert_eq!(packument["dist-tags"]["latest"], "1.0.0");
    let tarball = client
        .get(format!("{}/@acme/outage/-/outage-1.0.1.tgz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), 404);

    let retried = publish("1.0.1").await.unwrap();
    assert_eq!(retried.status(), 201, "{}", retried.text().await.unwrap());
    let packument: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(packument["dist-tags"]["latest"], "1.0.1");
    let tarball_url = packument["versions"]["1.0.1"]["dist"]["tarball"]
        .as_str()
        .unwrap();
    let bytes = reqwest::get(tarball_url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        e2e::integrity(&bytes),
        packument["versions"]["1.0.1"]["dist"]["integrity"]
            .as_str()
            .unwrap()
    );
    drop(resources);
}
