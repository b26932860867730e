//! Error classification: what an SDK failure means for the registry (`StoreError`), naming the
//! table or the bucket it concerned.

use aws_sdk_dynamodb::error::SdkError;

use super::AwsStorage;
use crate::storage::StoreError;

/// A failure that is the registry's own (encoding, a request it built wrong).
pub(super) fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// The table or the bucket, named for messages about it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resource<'a> {
    /// The DynamoDB table, by name.
    Table(&'a str),
    /// The S3 bucket, by name.
    Bucket(&'a str),
}

impl Resource<'_> {
    /// The service that holds it.
    pub(crate) fn service(&self) -> &'static str {
        match self {
            Resource::Table(_) => "DynamoDB",
            Resource::Bucket(_) => "S3",
        }
    }

    /// The error code with which its service says it does not exist. (Other services' codes
    /// never count: S3 has no `ResourceNotFoundException`, DynamoDB no `NoSuchBucket`.)
    pub(crate) fn is_missing(&self, code: &str) -> bool {
        match self {
            Resource::Table(_) => code == "ResourceNotFoundException",
            // `NotFound`: a HEAD (HeadBucket) has no body to carry `NoSuchBucket`.
            Resource::Bucket(_) => matches!(code, "NoSuchBucket" | "NotFound"),
        }
    }
}

impl std::fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Table(name) => write!(f, "DynamoDB table '{name}'"),
            Resource::Bucket(name) => write!(f, "S3 bucket '{name}'"),
        }
    }
}

impl AwsStorage {
    /// The table, for classifying its requests' failures.
    pub(super) fn table(&self) -> Resource<'_> {
        Resource::Table(&self.settings.table)
    }

    /// The bucket, for classifying its requests' failures.
    pub(super) fn bucket(&self) -> Resource<'_> {
        Resource::Bucket(&self.settings.bucket)
    }
}

/// Maps SDK failures of a request to `resource`: anything transient (no connection, timeouts,
/// throttling, 5xx) is `Unavailable`, so clients get 503 and retry; a missing table or bucket is
/// `MissingResource`, also 503, naming it (it is an operator's mistake, not the registry's bug).
pub(super) fn classify<E, R>(e: SdkError<E, R>, resource: Resource<'_>) -> StoreError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            // The service is named: a timeout reads the same from either.
            StoreError::Unavailable(format!(
                "{}: {}",
                resource.service(),
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ))
        }
        SdkError::ServiceError(s) if s.err().code().is_some_and(|c| resource.is_missing(c)) => {
            // Logged at every occurrence: the process itself looks healthy, and its log is where
            // an operator looks first.
            tracing::error!(%resource, "storage is not set up: {resource} does not exist");
            StoreError::MissingResource(resource.to_string())
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("");
            if is_transient(code) {
                StoreError::Unavailable(format!("{}: {code}", resource.service()))
            } else {
                StoreError::Internal(
                    aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
                )
            }
        }
        _ => StoreError::Internal(
            aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
        ),
    }
}

/// Error codes of DynamoDB and S3 that a retry may get past.
fn is_transient(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "SlowDown"
            | "InternalError"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_resources_own_service_says_it_is_missing() {
        let table = Resource::Table("t");
        let bucket = Resource::Bucket("b");
        assert!(table.is_missing("ResourceNotFoundException"));
        assert!(!table.is_missing("NoSuchBucket"));
        assert!(bucket.is_missing("NoSuchBucket") && bucket.is_missing("NotFound"));
        assert!(!bucket.is_missing("ResourceNotFoundException"));
        assert_eq!(table.to_string(), "DynamoDB table 't'");
        assert_eq!(bucket.to_string(), "S3 bucket 'b'");
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert!(is_transient("ThrottlingException") && is_transient("SlowDown"));
        assert!(!is_transient("ValidationException") && !is_transient(""));
    }
}
