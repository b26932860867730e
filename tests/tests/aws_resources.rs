//! A DynamoDB table or S3 bucket that goes away under a running `registry-server --storage aws`
//! makes each request that needs it a 503 naming it, not a 500.

use e2e::{AwsResources, S3Host, Server, escaped, http, package_tgz, publish_doc};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_or_bucket_deleted_under_a_running_server_answers_503_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let resources = AwsResources::create("gone", S3Host::Same);
    let server = Server::start_with(
        tmp.path().join("data"),
        tmp.path().join("server.log"),
        resources.env.clone(),
    );
    let client = http();
    let name = "@acme/gone";
    let url = format!("{}/{}", server.url, escaped(name));
    let publish = |version: &str| {
        let body = publish_doc(name, version, &package_tgz(name, version));
        client.put(&url).json(&body).send()
    };
    assert_eq!(publish("1.0.0").await.unwrap().status(), 201);

    resources.delete_bucket().await;
    let r = publish("1.0.1").await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("S3 bucket '{}' does not exist", resources.bucket)),
        "{body}"
    );

    resources.delete_table().await;
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "DynamoDB table '{}' does not exist",
            resources.table
        )),
        "{body}"
    );
    assert!(
        server.log().contains(&format!(
            "DynamoDB table '{}' does not exist",
            resources.table
        )),
        "the operator's log says it too:\n{}",
        server.log()
    );
}
