//! Starting on the AWS backend: its settings from the configuration, and the start-up check that
//! its table and bucket exist, with a message that says what to do when they do not.

use super::StartError;
use crate::config::{AwsConfig, Env};
use crate::storage::aws::{AwsSettings, AwsStorage, ProblemKind, ResourceProblem};

/// The AWS backend's settings from the configuration. The SDK's own variables
/// (`AWS_ENDPOINT_URL*`) are read from the process environment, as the SDK reads them.
pub(super) fn aws_settings(config: &AwsConfig) -> AwsSettings {
    let env = Env::process();
    // Emulators (an endpoint override) need path-style addressing; real S3 prefers virtual hosts.
    let endpoint_override =
        env.raw("AWS_ENDPOINT_URL_S3").is_some() || env.raw("AWS_ENDPOINT_URL").is_some();
    AwsSettings {
        table: config.table.clone(),
        bucket: config.bucket.clone(),
        presign: config.presign,
        force_path_style: config.s3_path_style.unwrap_or(endpoint_override),
        // Read here rather than left to the SDK's loader, so that both ways of configuring the
        // SDK (`AwsStorage::default_sdk_config`, `environment_sdk_config`) honour them.
        dynamodb_endpoint: env.text("AWS_ENDPOINT_URL_DYNAMODB"),
        s3_endpoint: env.text("AWS_ENDPOINT_URL_S3"),
        rebuild_read_units: config.rebuild_read_units,
    }
}

/// Refuses to start on a missing (or unreachable) table or bucket, with a message naming it,
/// the endpoint and the command that creates it: otherwise every request would fail while the
/// process looked healthy. One round trip (`DescribeTable` and `HeadBucket` side by side).
pub(super) async fn check_aws_resources(aws: &AwsStorage) -> Result<(), StartError> {
    let started = std::time::Instant::now();
    let checked = aws.check_resources().await;
    tracing::info!(
        table = aws.table_name(),
        bucket = aws.bucket_name(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        ok = checked.is_ok(),
        "checked the AWS resources"
    );
    let Err(problems) = checked else {
        return Ok(());
    };
    let env = Env::process();
    let setup = AwsSetup {
        table: aws.table_name().to_string(),
        bucket: aws.bucket_name().to_string(),
        region: aws.region(),
        dynamodb_endpoint: aws.dynamodb_endpoint().await,
        s3_endpoint: aws.s3_endpoint().await,
        dynamodb_variable: env.text("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        s3_variable: env.text("AWS_ENDPOINT_URL_S3").is_some(),
        shared_variable: env.text("AWS_ENDPOINT_URL").is_some(),
    };
    Err(StartError::Resources(resources_message(
        &setup,
        &problems.0,
    )))
}

/// What the start-up message says about the AWS set-up.
#[derive(Debug, Clone)]
struct AwsSetup {
    table: String,
    bucket: String,
    region: Option<String>,
    dynamodb_endpoint: String,
    s3_endpoint: String,
    /// Whether `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` are set.
    dynamodb_variable: bool,
    s3_variable: bool,
    shared_variable: bool,
}

impl AwsSetup {
    /// Where a service's endpoint came from.
    fn source(&self, service: &str) -> String {
        let (own, variable) = match service {
            "S3" => (self.s3_variable, "AWS_ENDPOINT_URL_S3"),
            _ => (self.dynamodb_variable, "AWS_ENDPOINT_URL_DYNAMODB"),
        };
        match (own, self.shared_variable, &self.region) {
            (true, _, _) => format!("from {variable}"),
            (false, true, _) => "from AWS_ENDPOINT_URL".into(),
            (false, false, Some(region)) => {
                format!("the default for region {region}; {variable} is not set")
            }
            (false, false, None) => "unknown: no region is set (AWS_REGION)".into(),
        }
    }

    /// Whether the endpoints are an emulator's (or anything but AWS's own).
    fn emulated(&self) -> bool {
        self.dynamodb_variable || self.s3_variable || self.shared_variable
    }
}

/// The operator's message for what the start-up check found: each problem with where its
/// endpoint came from, then how to create what is missing (emulators: `create_resources.py` on
/// the endpoints in use; AWS: the SAM stack, or the same script).
fn resources_message(setup: &AwsSetup, problems: &[ResourceProblem]) -> String {
    use std::fmt::Write;
    let mut out = String::from("cannot start: the AWS storage is not ready:\n");
    for problem in problems {
        let _ = writeln!(
            out,
            "  - {problem} (endpoint: {})",
            setup.source(problem.service)
        );
    }
    let AwsSetup { table, bucket, .. } = setup;
    if problems.iter().any(|p| p.kind == ProblemKind::Missing) {
        if setup.emulated() {
            let _ = writeln!(
                out,
                "Create what is missing with the repository's script (idempotent: what exists \
                 is left alone):\n  \
                 python3 localstack/create_resources.py --table {table} --bucket {bucket} \
                 --dynamodb-endpoint {} --s3-endpoint {}",
                setup.dynamodb_endpoint, setup.s3_endpoint,
            );
        } else {
            let region = setup.region.as_deref().unwrap_or("REGION");
            let _ = writeln!(
                out,
                "On AWS, deploy the stack, which creates both (README, \"Deploy to AWS\"):\n  \
                 sam build --template infra/template.yaml --beta-features && sam deploy --guided\n\
                 and set REGISTRY_TABLE and REGISTRY_BUCKET to its TableName and BucketName \
                 outputs; or create them under these names:\n  \
                 python3 localstack/create_resources.py --table {table} --bucket {bucket} --region {region}",
            );
        }
        out.push_str("If a name is wrong instead, fix REGISTRY_TABLE or REGISTRY_BUCKET.\n");
    }
    let unreachable = problems
        .iter()
        .any(|p| matches!(p.kind, ProblemKind::Unreachable(_)));
    if unreachable && setup.emulated() {
        out.push_str(
            "Nothing answered at an endpoint above: start the emulators (README, \"Run locally \
             against LocalStack\") or fix the endpoint variable.\n",
        );
    } else if unreachable {
        out.push_str(
            "AWS did not answer: check the network (a proxy: HTTPS_PROXY) and the region.\n",
        );
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::{AwsSetup, ProblemKind, ResourceProblem, resources_message};

    fn setup(emulated: bool) -> AwsSetup {
        let (ddb, s3) = if emulated {
            ("http://127.0.0.1:5000", "http://127.0.0.1:4566")
        } else {
            (
                "https://dynamodb.eu-west-1.amazonaws.com",
                "https://s3.eu-west-1.amazonaws.com",
            )
        };
        AwsSetup {
            table: "npm-registry".into(),
            bucket: "npm-tarballs".into(),
            region: Some("eu-west-1".into()),
            dynamodb_endpoint: ddb.into(),
            s3_endpoint: s3.into(),
            dynamodb_variable: emulated,
            s3_variable: emulated,
            shared_variable: false,
        }
    }

    fn missing_table(setup: &AwsSetup) -> ResourceProblem {
        ResourceProblem {
            service: "DynamoDB",
            resource: "DynamoDB table 'npm-registry'".into(),
            endpoint: setup.dynamodb_endpoint.clone(),
            kind: ProblemKind::Missing,
        }
    }

    #[test]
    fn on_aws_a_missing_table_points_at_the_stack_and_the_script() {
        let setup = setup(false);
        let message = resources_message(&setup, &[missing_table(&setup)]);
        for needle in [
            "DynamoDB table 'npm-registry' does not exist at https://dynamodb.eu-west-1.amazonaws.com",
            "(endpoint: the default for region eu-west-1; AWS_ENDPOINT_URL_DYNAMODB is not set)",
            "sam deploy --guided",
            "TableName and BucketName",
            "create_resources.py --table npm-registry --bucket npm-tarballs --region eu-west-1",
        ] {
            assert!(message.contains(needle), "{needle:?} in:\n{message}");
        }
        assert!(!message.contains("--dynamodb-endpoint"), "{message}");
    }

    #[test]
    fn on_emulators_the_script_gets_the_endpoints_in_use() {
        let setup = setup(true);
        let unreachable = ResourceProblem {
            service: "S3",
            resource: "S3 bucket 'npm-tarballs'".into(),
            endpoint: setup.s3_endpoint.clone(),
            kind: ProblemKind::Unreachable("connection refused".into()),
        };
        let message = resources_message(&setup, &[missing_table(&setup), unreachable]);
        for needle in [
            "(endpoint: from AWS_ENDPOINT_URL_DYNAMODB)",
            "cannot reach S3 at http://127.0.0.1:4566 to check S3 bucket 'npm-tarballs': connection refused (endpoint: from AWS_ENDPOINT_URL_S3)",
            "create_resources.py --table npm-registry --bucket npm-tarballs --dynamodb-endpoint http://127.0.0.1:5000 --s3-endpoint http://127.0.0.1:4566",
            "start the emulators",
        ] {
            assert!(message.contains(needle), "{needle:?} in:\n{message}");
        }
        assert!(!message.contains("sam deploy"), "{message}");
    }

    #[test]
    fn an_unreachable_endpoint_alone_offers_no_create_command() {
        let setup = setup(true);
        let unreachable = ResourceProblem {
            service: "DynamoDB",
            resource: "DynamoDB table 'npm-registry'".into(),
            endpoint: setup.dynamodb_endpoint.clone(),
            kind: ProblemKind::Unreachable("connection refused".into()),
        };
        let message = resources_message(&setup, &[unreachable]);
        assert!(message.contains("cannot reach DynamoDB"), "{message}");
        assert!(!message.contains("create_resources.py"), "{message}");
        assert!(!message.contains("does not exist"), "{message}");
    }
}
