//! The deployment template deployed into moto's CloudFormation by `infra/deploy_emulator.py`
//! (SAM transform offline, what moto cannot deploy dropped), so AWS-backend tests can run on the
//! table and bucket the stack created rather than on ones made to the code's own idea of them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::AwsResources;

/// `infra/template.yaml`.
pub fn template_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml")
}

fn required_env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("{key} is not set: the stack tests need the emulators that `tests/run` starts")
    })
}

/// Deploys `infra/template.yaml` as a uniquely named stack on the moto server
/// (`TEST_DYNAMODB_ENDPOINT`, which also serves CloudFormation, IAM and S3) and returns its
/// table and bucket, with an environment that points the registry at both on moto.
pub fn deploy(label: &str) -> AwsResources {
    deploy_template(label, &template_path()).unwrap_or_else(|e| panic!("{e}"))
}

/// Deploys `template` (normally `infra/template.yaml`); `Err` holds the script's output.
pub fn deploy_template(label: &str, template: &Path) -> Result<AwsResources, String> {
    let endpoint = required_env("TEST_DYNAMODB_ENDPOINT");
    let python = required_env("TEST_EMULATOR_PYTHON");
    let suffix: u32 = {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        nanos ^ std::process::id().rotate_left(16)
    };
    // Stack names are letters, digits and hyphens; the bucket moto names after the stack
    // (`<stack>-bucket-<suffix>`, lower-cased) must stay within S3's 63 characters.
    let stack = format!("reg-{label}-{suffix:08x}").to_ascii_lowercase();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/deploy_emulator.py");
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ("AWS_DEFAULT_REGION".to_string(), "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL_DYNAMODB".to_string(), endpoint.clone()),
        // The stack's bucket lives in moto, not in LocalStack.
        ("AWS_ENDPOINT_URL_S3".to_string(), endpoint.clone()),
    ];
    let out = Command::new(&python)
        .arg(&script)
        .args(["--endpoint", &endpoint, "--stack-name", &stack])
        .args(["--region", "us-east-1", "--template"])
        .arg(template)
        .env_remove("AWS_ENDPOINT_URL")
        .envs(env.iter().cloned())
        .output()
        .expect("run infra/deploy_emulator.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "infra/deploy_emulator.py failed ({}):\n{stdout}\n{stderr}",
            out.status
        ));
    }
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).map_err(|e| {
        format!("infra/deploy_emulator.py printed no JSON ({e}):\n{stdout}\n{stderr}")
    })?;
    let field = |key: &str| {
        answer[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no {key:?} in {answer}"))
    };
    let (table, bucket) = (field("table")?, field("bucket")?);
    eprint!("{stderr}");
    let mut env = env;
    env.push(("REGISTRY_STORAGE".to_string(), "aws".to_string()));
    env.push(("REGISTRY_TABLE".to_string(), table.clone()));
    env.push(("REGISTRY_BUCKET".to_string(), bucket.clone()));
    // The stack's signing key signs, as the publish function's environment says.
    if let Some(key) = answer["signing_key"].as_str() {
        env.push(("REGISTRY_SIGNING_KMS_KEY".to_string(), key.to_string()));
        env.push(("AWS_ENDPOINT_URL_KMS".to_string(), endpoint.clone()));
    }
    Ok(AwsResources {
        table,
        bucket,
        env,
        gate: None,
    })
}

/// A DynamoDB client on the resources' endpoint (to read back what the stack created).
pub fn dynamodb(resources: &AwsResources) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(resources.env_value("AWS_ENDPOINT_URL_DYNAMODB"))
        .http_client(registry::storage::aws::AwsStorage::http_client())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}
