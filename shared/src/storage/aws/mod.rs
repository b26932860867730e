//! The AWS backend: one DynamoDB table for metadata and one private S3 bucket for tarballs.
//!
//! Where everything lives is `layout`. Every package write is one `TransactWriteItems` (or a few,
//! for writes larger than a transaction): the version put (conditional create) and/or version
//! updates, plus the package record put conditioned on the revision the writer read, as `plan`
//! decides and `transact` sends. Package documents are served from snapshots in the bucket
//! (`snapshots`), so a packument read is a `GetItem` plus a `GetObject` whatever the version
//! count, and a reader that needs the document makes both at once (the key does not depend on
//! the record).
//!
//! One module per concern: `sdk` (SDK bootstrap, TLS roots), `metering` (request counts),
//! `errors` (SDK failures as `StoreError`), `resources` (the start-up check), `codec` (items),
//! `plan` and `transact` (the write path), `metadata`, `snapshots`, `import`, `kv`, `audit`,
//! `objects` and `tarballs`.

use std::sync::Arc;
use std::time::Duration;

use super::AfterResponse;

mod audit;
mod codec;
mod errors;
mod import;
mod kv;
pub mod layout;
mod metadata;
mod metering;
mod objects;
mod pace;
mod plan;
mod resources;
mod sdk;
mod search;
mod snapshots;
mod tarballs;
mod transact;
mod upstream;

pub use audit::AwsAuditLog;
use metering::CountRequests;
pub use metering::RequestCounts;
pub use pace::DEFAULT_REBUILD_READ_UNITS;
pub use resources::{ProblemKind, ResourceProblem, ResourceProblems};

/// Settings of the AWS backend.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// DynamoDB table.
    pub table: String,
    /// S3 bucket.
    pub bucket: String,
    /// Lifetime of presigned tarball URLs.
    pub presign: Duration,
    /// Path-style S3 addressing (emulators); virtual-hosted otherwise.
    pub force_path_style: bool,
    /// DynamoDB endpoint, when not the SDK's (which honours `AWS_ENDPOINT_URL_DYNAMODB`).
    pub dynamodb_endpoint: Option<String>,
    /// S3 endpoint, when not the SDK's (which honours `AWS_ENDPOINT_URL_S3`).
    pub s3_endpoint: Option<String>,
    /// Read units a second a snapshot rebuild's `Query` may spend (`pace`).
    pub rebuild_read_units: u32,
}

/// DynamoDB + S3 storage; implements both storage traits.
#[derive(Clone)]
pub struct AwsStorage {
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    settings: AwsSettings,
    counts: Arc<RequestCounts>,
    /// `AWS_ENDPOINT_URL` as the SDK configuration had it, for naming the endpoints in use.
    endpoint_url: Option<String>,
    /// Where rebuilt snapshots are written from, when not before answering (Lambda).
    after_response: Option<Arc<AfterResponse>>,
    /// The snapshots this instance read or stored last, so a revision is read once.
    kept: Arc<snapshots::KeptSnapshots>,
}

impl AwsStorage {
    /// Builds the clients from an SDK configuration the caller assembled.
    pub fn new(shared: &aws_config::SdkConfig, settings: AwsSettings) -> Self {
        let counts = Arc::new(RequestCounts::default());
        let mut ddb_config = aws_sdk_dynamodb::config::Builder::from(shared)
            .interceptor(CountRequests(counts.clone()));
        if let Some(endpoint) = &settings.dynamodb_endpoint {
            ddb_config = ddb_config.endpoint_url(endpoint);
        }
        let mut s3_config = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(settings.force_path_style)
            .interceptor(CountRequests(counts.clone()));
        if let Some(endpoint) = &settings.s3_endpoint {
            s3_config = s3_config.endpoint_url(endpoint);
        }
        Self {
            ddb: aws_sdk_dynamodb::Client::from_conf(ddb_config.build()),
            s3: aws_sdk_s3::Client::from_conf(s3_config.build()),
            settings,
            counts,
            endpoint_url: shared.endpoint_url().map(str::to_string),
            after_response: None,
            kept: Arc::new(snapshots::KeptSnapshots::new(
                snapshots::KEPT_SNAPSHOT_BYTES,
            )),
        }
    }

    /// Writes rebuilt snapshots through `queue` once the response is sent, instead of before it:
    /// the read that rebuilt a document does not wait for S3 to store it.
    pub(crate) fn with_snapshot_writes_after_response(mut self, queue: Arc<AfterResponse>) -> Self {
        self.after_response = Some(queue);
        self
    }

    /// The AWS requests made so far.
    pub fn request_counts(&self) -> Arc<RequestCounts> {
        self.counts.clone()
    }

    /// The table's name.
    pub(crate) fn table_name(&self) -> &str {
        &self.settings.table
    }

    /// The bucket's name.
    pub(crate) fn bucket_name(&self) -> &str {
        &self.settings.bucket
    }

    /// The region the clients sign for, if one is configured.
    pub(crate) fn region(&self) -> Option<String> {
        self.ddb
            .config()
            .region()
            .map(std::string::ToString::to_string)
    }
}
