//! The start-up check of the table and the bucket, and the endpoints it names in what it finds.

use aws_sdk_dynamodb::error::SdkError;

use super::AwsStorage;
use super::errors::Resource;

/// What the start-up check found wrong with the table or the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceProblem {
    /// `DynamoDB` or `S3`.
    pub service: &'static str,
    /// `DynamoDB table 'name'` or `S3 bucket 'name'`.
    pub resource: String,
    /// Where the registry asked.
    pub endpoint: String,
    /// What went wrong.
    pub kind: ProblemKind,
}

/// What went wrong with one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// It does not exist at the endpoint.
    Missing,
    /// The endpoint did not answer (nothing listens there, DNS, a timeout); the SDK's error.
    Unreachable(String),
    /// The endpoint refused or failed the check otherwise (credentials, region, signature).
    Failed(String),
}

impl std::fmt::Display for ResourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ResourceProblem {
            service,
            resource,
            endpoint,
            kind,
        } = self;
        match kind {
            ProblemKind::Missing => write!(f, "{resource} does not exist at {endpoint}"),
            ProblemKind::Unreachable(detail) => write!(
                f,
                "cannot reach {service} at {endpoint} to check {resource}: {detail}"
            ),
            ProblemKind::Failed(detail) => {
                write!(f, "could not check {resource} at {endpoint}: {detail}")
            }
        }
    }
}

/// Everything the start-up check found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ResourceProblems(pub Vec<ResourceProblem>);

impl AwsStorage {
    /// The DynamoDB endpoint requests go to: the configured one, else the region's.
    pub(crate) async fn dynamodb_endpoint(&self) -> String {
        use aws_sdk_dynamodb::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
        let endpoint = self.settings.dynamodb_endpoint.clone();
        let params = Params::builder()
            .set_region(self.region())
            .set_endpoint(endpoint.or_else(|| self.endpoint_url.clone()))
            .build();
        match params {
            Ok(params) => match DefaultResolver::new().resolve_endpoint(&params).await {
                Ok(endpoint) => endpoint.url().to_string(),
                Err(e) => format!("(none: {e})"),
            },
            Err(e) => format!("(none: {e})"),
        }
    }

    /// The S3 endpoint requests go to (without the bucket): the configured one, else the
    /// region's.
    pub(crate) async fn s3_endpoint(&self) -> String {
        use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
        let endpoint = self.settings.s3_endpoint.clone();
        let params = Params::builder()
            .set_region(
                self.s3
                    .config()
                    .region()
                    .map(std::string::ToString::to_string),
            )
            .set_endpoint(endpoint.or_else(|| self.endpoint_url.clone()))
            .force_path_style(self.settings.force_path_style)
            .build();
        match params {
            Ok(params) => match DefaultResolver::new().resolve_endpoint(&params).await {
                Ok(endpoint) => endpoint.url().to_string(),
                Err(e) => format!("(none: {e})"),
            },
            Err(e) => format!("(none: {e})"),
        }
    }

    /// Checks that the table and the bucket exist, with one `DescribeTable` and one
    /// `HeadBucket` side by side (one round trip). For the local server's start-up: without
    /// it, a missing table or bucket turns every request into an error while the process looks
    /// healthy. The functions do not call it (see `lambda::run`). A check the caller's identity
    /// may not make (no `dynamodb:DescribeTable` or `s3:ListBucket`) is logged and passed: the
    /// requests the registry does make may still be allowed.
    pub(crate) async fn check_resources(&self) -> Result<(), ResourceProblems> {
        let (table, bucket) = tokio::join!(
            self.ddb
                .describe_table()
                .table_name(&self.settings.table)
                .send(),
            self.s3.head_bucket().bucket(&self.settings.bucket).send(),
        );
        let mut problems = Vec::new();
        if let Err(e) = table {
            let endpoint = self.dynamodb_endpoint().await;
            problems.extend(check_failure(e, self.table(), endpoint));
        }
        if let Err(e) = bucket {
            let endpoint = self.s3_endpoint().await;
            problems.extend(check_failure(e, self.bucket(), endpoint));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ResourceProblems(problems))
        }
    }
}

/// What a failed `DescribeTable` or `HeadBucket` says about `resource`, if anything: `None`
/// when the caller may not make the check (logged; see `check_resources`).
fn check_failure<E>(
    e: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    resource: Resource<'_>,
    endpoint: String,
) -> Option<ResourceProblem>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    // The chain of causes, without `DisplayErrorContext`'s `Debug` dump: this is for people.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        detail = format!("{detail}: {cause}");
        source = cause.source();
    }
    let kind = match &e {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("");
            // HeadBucket's 404 and 403 have no body, hence maybe no code: the status says it.
            let status = s.raw().status().as_u16();
            if resource.is_missing(code) || (status == 404 && code.is_empty()) {
                ProblemKind::Missing
            } else if matches!(code, "AccessDeniedException" | "AccessDenied" | "Forbidden")
                || (status == 403 && code.is_empty())
            {
                tracing::warn!(%resource, %endpoint, error = %detail, "could not check that {resource} exists (not allowed); starting anyway");
                return None;
            } else {
                ProblemKind::Failed(detail)
            }
        }
        SdkError::TimeoutError(_) => ProblemKind::Unreachable(detail),
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
            ProblemKind::Unreachable(detail)
        }
        _ => ProblemKind::Failed(detail),
    };
    Some(ResourceProblem {
        service: resource.service(),
        resource: resource.to_string(),
        endpoint,
        kind,
    })
}
