//! A missing DynamoDB table or S3 bucket: `registry-server --storage aws` refuses to start with a
//! message naming it, the endpoint and the command that creates it; one that goes away under a
//! running server makes each request that needs it a 503 naming it, not a 500.

use e2e::{AwsResources, S3Host, Server, escaped, free_port, http, package_tgz, publish_doc};
use serde_json::Value;

/// `env` with `key` set to `value` (replacing any earlier value).
fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    env.push((key.to_string(), value.to_string()));
    env
}

/// Runs `registry-server` on `env` and returns its log, asserting it exited non-zero before
/// listening.
fn refused(env: Vec<(String, String)>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    match Server::try_start_with(tmp.path().join("data"), tmp.path().join("server.log"), env) {
        Ok(server) => panic!(
            "registry-server started at {} on missing AWS resources; log: {}",
            server.url,
            server.log()
        ),
        Err(exited) => {
            assert!(!exited.status.success(), "{exited:?}");
            exited.log
        }
    }
}

fn assert_contains(log: &str, needles: &[&str]) {
    for needle in needles {
        assert!(log.contains(needle), "{needle:?} not in the log:\n{log}");
    }
}

#[test]
fn the_server_refuses_to_start_without_its_table() {
    let resources = AwsResources::create("notable", S3Host::Same);
    let table = format!("{}-missing", resources.table);
    let log = refused(with(&resources.env, "REGISTRY_TABLE", &table));
    let dynamodb = resources.env_value("AWS_ENDPOINT_URL_DYNAMODB");
    let s3 = resources.env_value("AWS_ENDPOINT_URL_S3");
    assert_contains(
        &log,
        &[
            &format!("DynamoDB table '{table}' does not exist at {dynamodb}"),
            "from AWS_ENDPOINT_URL_DYNAMODB",
            &format!(
                "python3 localstack/create_resources.py --table {table} --bucket {} \
                 --dynamodb-endpoint {dynamodb} --s3-endpoint {s3}",
                resources.bucket
            ),
        ],
    );
    assert!(
        !log.contains("S3 bucket"),
        "the bucket exists and is not reported:\n{log}"
    );
}

#[test]
fn the_server_refuses_to_start_without_its_bucket() {
    let resources = AwsResources::create("nobucket", S3Host::Same);
    let bucket = format!("{}-missing", resources.bucket);
    let log = refused(with(&resources.env, "REGISTRY_BUCKET", &bucket));
    let dynamodb = resources.env_value("AWS_ENDPOINT_URL_DYNAMODB");
    let s3 = resources.env_value("AWS_ENDPOINT_URL_S3");
    assert_contains(
        &log,
        &[
            &format!("S3 bucket '{bucket}' does not exist at {s3}"),
            "from AWS_ENDPOINT_URL_S3",
            &format!(
                "python3 localstack/create_resources.py --table {} --bucket {bucket} \
                 --dynamodb-endpoint {dynamodb} --s3-endpoint {s3}",
                resources.table
            ),
        ],
    );
    assert!(
        !log.contains("DynamoDB table"),
        "the table exists and is not reported:\n{log}"
    );
}

#[test]
fn the_server_says_when_nothing_answers_at_an_endpoint() {
    let resources = AwsResources::create("unreach", S3Host::Same);
    // Nothing listens there: a port that was free a moment ago.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let log = refused(with(&resources.env, "AWS_ENDPOINT_URL_DYNAMODB", &nowhere));
    assert_contains(
        &log,
        &[
            &format!(
                "cannot reach DynamoDB at {nowhere} to check DynamoDB table '{}'",
                resources.table
            ),
            "start the emulators",
        ],
    );
    assert!(
        !log.contains("does not exist") && !log.contains("create_resources.py"),
        "an unreachable endpoint is not a missing table:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_or_bucket_deleted_under_a_running_server_answers_503_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let resources = AwsResources::create("gone", S3Host::Same);
    // Every read reaches the table (T = 0): with views a read within the check interval is
    // served from what the instance holds, and never learns that the table is gone.
    let mut env = resources.env.clone();
    env.push(("REGISTRY_REVISION_CHECK_MS".into(), "0".into()));
    let server = Server::start_with(tmp.path().join("data"), tmp.path().join("server.log"), env);
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
