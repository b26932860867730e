//! The AWS backend: one DynamoDB table for metadata and one private S3 bucket for tarballs.
//!
//! Table layout (partition key `pk`, sort key `sk`, both strings):
//! - `pk = <package>, sk = "A"`: the package record (`rev` number, `doc` JSON). Small and bounded.
//! - `pk = <package>, sk = "V#<version>"`: one item per version (`state`, `published`, `doc` JSON of
//!   the manifest, `deprecated`, `readme` or `readme_key`). Versions are immutable except for the
//!   `deprecated` attribute and the switch to `state = unpublished`.
//!
//! - `pk = "~<namespace>"`: key-value records (GitHub answers cached, registry tokens), and
//!   `pk = "~audit/day/<date>"`, `"~audit/package/<name>"`: the audit log (`AwsAuditLog`).
//!
//! Every write is one `TransactWriteItems`: the version put (conditional create) and/or version
//! updates, plus the package record put conditioned on the revision the writer read.
//!
//! Bucket layout: `tarballs/<name>/<version>-<sha512 prefix>.tgz`, `readmes/<name>/<version>.md`
//! for READMEs too large for an item, and `snapshots/<name>.json`: the package document, written
//! by the first read after a change, so a packument read is a `GetItem` plus a `GetObject`
//! whatever the version count, and a reader that needs the document makes both at once (the key
//! does not depend on the record). A snapshot is used only if its revision is at least the
//! record's; a stale, missing or unreadable one is rebuilt with a `Query`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use semver::Version;
use serde::{Deserialize, Serialize};

use super::{
    AfterResponse, CreateMode, MetadataStore, PackageWrite, StoreError, TarballRead, TarballStore,
    VersionChange,
};
use crate::domain::{
    DistTag, LiveVersion, PackageDocument, PackageName, PackageRecord, TarballKey, VersionRecord,
    VersionState,
};

/// Sort key of the package record.
const PACKAGE_SK: &str = "A";
/// READMEs larger than this go to S3 so a version item stays far below DynamoDB's 400 KB.
const INLINE_README_BYTES: usize = 32 * 1024;
/// DynamoDB allows 100 items per transaction; one is the package record.
const CHANGES_PER_TRANSACTION: usize = 99;

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
}

/// Counts of AWS requests (HTTP attempts, as billed) by `Service.Operation`.
#[derive(Debug, Default)]
pub struct RequestCounts(Mutex<BTreeMap<String, u64>>);

impl RequestCounts {
    fn record(&self, service: &str, operation: &str) {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(format!("{service}.{operation}")).or_default() += 1;
        }
    }

    /// The counts so far, and resets them.
    pub fn take(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct CountRequests(Arc<RequestCounts>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    // After transmit: presigning runs the pipeline up to the point of sending and stops there,
    // and must not count as a request. (A send that never got an answer is not billed either.)
    fn read_after_transmit(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            self.0.record(m.service(), m.name());
        }
        Ok(())
    }
}

/// The roots every AWS service endpoint chains to (Amazon Trust Services), PEM.
const AMAZON_TRUST_SERVICES_ROOTS: &[u8] = include_bytes!("amazon_trust_services.pem");

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
}

impl AwsStorage {
    /// The HTTP client for both services: rustls with ring, trusting the system's roots (the
    /// local server may run behind a proxy with its own CA).
    pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https()
    }

    /// The HTTP client for the functions: rustls with ring, trusting only the Amazon Trust
    /// Services roots, compiled in. Reading and parsing the system's trust store (~150
    /// certificates) cost ~5 ms of every cold start on the benchmark machine, for the five roots
    /// DynamoDB and S3 chain to.
    pub fn function_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
        use aws_smithy_http_client::tls::{
            self, TlsContext, TrustStore, rustls_provider::CryptoMode,
        };
        let trust = TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS);
        let builder = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
        match TlsContext::builder().with_trust_store(trust).build() {
            Ok(context) => builder.tls_context(context).build_https(),
            // Not reachable with rustls (the builder fails only for other TLS providers); the
            // system's roots are a safe fallback.
            Err(_) => builder.build_https(),
        }
    }

    fn timeouts() -> aws_config::timeout::TimeoutConfig {
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(25))
            .build()
    }

    fn retries() -> aws_config::retry::RetryConfig {
        aws_config::retry::RetryConfig::standard().with_max_attempts(3)
    }

    /// SDK configuration by the SDK's default chain: environment, profile files, web identity,
    /// container and instance credentials. For the local server, wherever it runs.
    pub async fn default_sdk_config() -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(Self::http_client())
            .timeout_config(Self::timeouts())
            .retry_config(Self::retries())
            .load()
            .await
    }

    /// SDK configuration from environment variables alone (`AWS_REGION`, the credentials Lambda
    /// puts there for the function's role, `AWS_ENDPOINT_URL`). The functions use this: none of
    /// the default chain's providers (profiles, IMDS, STS) is linked into them, which keeps them
    /// smaller and quicker to start, and nothing is probed over the network at start-up.
    pub fn environment_sdk_config() -> aws_config::SdkConfig {
        use aws_config::environment::EnvironmentVariableCredentialsProvider;
        use aws_sdk_dynamodb::config::{SharedAsyncSleep, SharedCredentialsProvider};
        let mut builder = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(SharedCredentialsProvider::new(
                EnvironmentVariableCredentialsProvider::new(),
            ))
            .http_client(Self::function_http_client())
            .sleep_impl(SharedAsyncSleep::new(
                aws_smithy_async::rt::sleep::TokioSleep::new(),
            ))
            .time_source(aws_smithy_async::time::SharedTimeSource::default())
            .timeout_config(Self::timeouts())
            .retry_config(Self::retries());
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        if let Some(region) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
            builder = builder.region(aws_config::Region::new(region));
        }
        if let Some(url) = env("AWS_ENDPOINT_URL") {
            builder = builder.endpoint_url(url);
        }
        builder.build()
    }

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
        }
    }

    /// Writes rebuilt snapshots through `queue` once the response is sent, instead of before it:
    /// the read that rebuilt a document does not wait for S3 to store it.
    pub fn with_snapshot_writes_after_response(mut self, queue: Arc<AfterResponse>) -> Self {
        self.after_response = Some(queue);
        self
    }

    /// Bulk-loads a whole package (a migration from another registry, a benchmark corpus) without
    /// one transaction per version: version items in `BatchWriteItem`s first, the package record
    /// last and only if the package does not exist yet, so nothing is visible until all is stored.
    /// Tarballs must already be in the bucket.
    pub async fn import(&self, doc: &PackageDocument) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let name = &doc.package.name;
        let mut requests = Vec::with_capacity(doc.versions.len());
        for record in &doc.versions {
            let (item, large_readme) = self.version_item(name, record)?;
            if let Some(readme) = large_readme {
                self.put_object(
                    &Self::readme_key(name, &record.version),
                    Bytes::from(readme),
                    "text/markdown",
                )
                .await?;
            }
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(internal)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            for attempt in 0..10u64 {
                let out = self
                    .ddb
                    .batch_write_item()
                    .request_items(&self.settings.table, pending)
                    .send()
                    .await
                    .map_err(|e| classify(e, self.table()))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.settings.table))
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await;
            }
            if !pending.is_empty() {
                return Err(StoreError::Unavailable(
                    "DynamoDB kept throttling the import".into(),
                ));
            }
        }
        let put = self.package_put(&doc.package, None)?;
        match self.transact(vec![put]).await {
            Ok(()) => Ok(()),
            Err(TransactFailure::Store(e)) => Err(e),
            Err(TransactFailure::Cancelled(_)) => Err(StoreError::RevisionConflict),
        }
    }

    /// The AWS requests made so far.
    pub fn request_counts(&self) -> Arc<RequestCounts> {
        self.counts.clone()
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.settings.table
    }

    /// The bucket's name.
    pub fn bucket_name(&self) -> &str {
        &self.settings.bucket
    }

    /// The region the clients sign for, if one is configured.
    pub fn region(&self) -> Option<String> {
        self.ddb.config().region().map(|r| r.to_string())
    }

    /// The DynamoDB endpoint requests go to: the configured one, else the region's.
    pub async fn dynamodb_endpoint(&self) -> String {
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
    pub async fn s3_endpoint(&self) -> String {
        use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
        let endpoint = self.settings.s3_endpoint.clone();
        let params = Params::builder()
            .set_region(self.s3.config().region().map(|r| r.to_string()))
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
    pub async fn check_resources(&self) -> Result<(), ResourceProblems> {
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

    fn key(name: &PackageName, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_string(), AttributeValue::S(name.to_string())),
            ("sk".to_string(), AttributeValue::S(sk.to_string())),
        ])
    }

    fn version_sk(version: &Version) -> String {
        format!("V#{version}")
    }

    fn snapshot_key(name: &PackageName) -> String {
        format!("snapshots/{name}.json")
    }

    /// The package's snapshot, whatever its revision; one that cannot be read (a layout of an
    /// older release) counts as missing and is rebuilt.
    async fn snapshot(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError> {
        Ok(self
            .get_object(&Self::snapshot_key(name))
            .await?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// The document of `package`: its snapshot if current, else rebuilt.
    async fn current_document(
        &self,
        package: &PackageRecord,
        snapshot: Option<PackageDocument>,
    ) -> Result<Option<PackageDocument>, StoreError> {
        match snapshot {
            Some(doc) if doc.package.revision >= package.revision => Ok(Some(doc)),
            _ => self.rebuild_snapshot(&package.name).await,
        }
    }

    fn readme_key(name: &PackageName, version: &Version) -> String {
        format!("readmes/{name}/{version}.md")
    }

    async fn get_object(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self
            .s3
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(classify(e, self.bucket())),
        }
    }

    /// A `PutObject`, owning all it needs, so it can also run after the response.
    fn put_object(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let send = self
            .s3
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send();
        let bucket = self.settings.bucket.clone();
        async move {
            send.await
                .map_err(|e| classify(e, Resource::Bucket(&bucket)))?;
            Ok(())
        }
    }

    /// Every item of a package, with a consistent `Query` (paginated).
    async fn query_package(
        &self,
        name: &PackageName,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .ddb
                .query()
                .table_name(&self.settings.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(name.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(e, self.table()))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    /// Rebuilds the document from the table and stores it as the package's snapshot.
    async fn rebuild_snapshot(
        &self,
        name: &PackageName,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let mut package = None;
        let mut versions = Vec::new();
        for item in self.query_package(name).await? {
            match s_attr(&item, "sk") {
                Some(PACKAGE_SK) => package = Some(decode_package(&item)?),
                Some(sk) if sk.starts_with("V#") => versions.push(decode_version(&item)?),
                _ => {}
            }
        }
        let Some(package) = package else {
            return Ok(None);
        };
        // Only the `latest` version's README is ever served: keep that one (from S3 if it is
        // there) and drop the rest, so the snapshot stays small.
        let latest = package.dist_tags.get(&DistTag::latest()).cloned();
        let mut records = Vec::with_capacity(versions.len());
        for (mut record, readme_in_s3) in versions {
            if let VersionState::Live(live) = &mut record.state {
                if Some(&record.version) != latest.as_ref() {
                    live.readme = None;
                } else if readme_in_s3 {
                    let key = Self::readme_key(name, &record.version);
                    live.readme = self
                        .get_object(&key)
                        .await?
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                }
            }
            records.push(record);
        }
        let versions = records;
        let doc = PackageDocument { package, versions };
        let bytes = Bytes::from(serde_json::to_vec(&doc).map_err(internal)?);
        let key = Self::snapshot_key(name);
        let put = self.put_object(&key, bytes, "application/json");
        match &self.after_response {
            None => put.await?,
            // A lost snapshot costs a later read a rebuild, nothing more.
            Some(queue) => queue.defer(Box::pin(async move {
                if let Err(e) = put.await {
                    tracing::warn!(key, error = %e, "could not store a rebuilt snapshot");
                }
            })),
        }
        Ok(Some(doc))
    }

    fn version_item(
        &self,
        name: &PackageName,
        record: &VersionRecord,
    ) -> Result<(HashMap<String, AttributeValue>, Option<String>), StoreError> {
        let mut item = Self::key(name, &Self::version_sk(&record.version));
        item.insert(
            "published".into(),
            AttributeValue::S(iso(&record.published)),
        );
        let mut large_readme = None;
        match &record.state {
            VersionState::Live(live) => {
                let mut stored = StoredLive {
                    manifest: live.manifest.clone(),
                    dist: live.dist.clone(),
                    readme_filename: live.readme_filename.clone(),
                    readme_in_s3: false,
                };
                item.insert("state".into(), AttributeValue::S("live".into()));
                match &live.readme {
                    Some(r) if r.len() > INLINE_README_BYTES => {
                        stored.readme_in_s3 = true;
                        large_readme = Some(r.clone());
                    }
                    Some(r) => {
                        item.insert("readme".into(), AttributeValue::S(r.clone()));
                    }
                    None => {}
                }
                if let Some(d) = &live.deprecated {
                    item.insert("deprecated".into(), AttributeValue::S(d.clone()));
                }
                item.insert(
                    "doc".into(),
                    AttributeValue::S(serde_json::to_string(&stored).map_err(internal)?),
                );
            }
            VersionState::Unpublished { at } => {
                item.insert("state".into(), AttributeValue::S("unpublished".into()));
                item.insert("unpublished_at".into(), AttributeValue::S(iso(at)));
            }
        }
        Ok((item, large_readme))
    }

    fn package_put(
        &self,
        package: &PackageRecord,
        expected_revision: Option<u64>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut item = Self::key(&package.name, PACKAGE_SK);
        item.insert(
            "rev".into(),
            AttributeValue::N(package.revision.to_string()),
        );
        item.insert(
            "doc".into(),
            AttributeValue::S(serde_json::to_string(package).map_err(internal)?),
        );
        let mut put = Put::builder()
            .table_name(&self.settings.table)
            .set_item(Some(item));
        put = match expected_revision {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(rev) => put
                .condition_expression("#rev = :expected")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":expected", AttributeValue::N(rev.to_string())),
        };
        Ok(TransactWriteItem::builder()
            .put(put.build().map_err(internal)?)
            .build())
    }

    fn change_update(
        &self,
        name: &PackageName,
        change: &VersionChange,
    ) -> Result<TransactWriteItem, StoreError> {
        let (version, update) = match change {
            VersionChange::Deprecate(v, Some(message)) => (
                v,
                Update::builder()
                    .update_expression("SET deprecated = :message")
                    .expression_attribute_values(":message", AttributeValue::S(message.clone())),
            ),
            VersionChange::Deprecate(v, None) => (v, Update::builder().update_expression("REMOVE deprecated")),
            VersionChange::Unpublish(v, at) => (
                v,
                Update::builder()
                    .update_expression("SET #state = :unpublished, unpublished_at = :at REMOVE doc, readme, deprecated")
                    .expression_attribute_values(":unpublished", AttributeValue::S("unpublished".into()))
                    .expression_attribute_values(":at", AttributeValue::S(iso(at))),
            ),
        };
        let update = update
            .table_name(&self.settings.table)
            .set_key(Some(Self::key(name, &Self::version_sk(version))))
            .condition_expression("attribute_exists(pk) AND #state = :live")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":live", AttributeValue::S("live".into()))
            .build()
            .map_err(internal)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TransactFailure> {
        match self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            // Idempotency: if an attempt landed but its answer was lost, the SDK's retry with the
            // same token succeeds instead of failing its own conditions.
            .client_request_token(hex::encode(rand::random::<[u8; 16]>()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
                    let codes: Vec<String> = c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None").to_string())
                        .collect();
                    return Err(TransactFailure::Cancelled(codes));
                }
                if e.as_service_error()
                    .is_some_and(|s| s.meta().code() == Some("TransactionConflictException"))
                {
                    return Err(TransactFailure::Cancelled(vec![
                        "TransactionConflict".into(),
                    ]));
                }
                Err(TransactFailure::Store(classify(e, self.table())))
            }
        }
    }
}

enum TransactFailure {
    /// Per-item cancellation codes (`ConditionalCheckFailed`, `TransactionConflict`, `None`).
    Cancelled(Vec<String>),
    Store(StoreError),
}

/// The immutable part of a live version, as stored in its item's `doc`.
#[derive(Serialize, Deserialize)]
struct StoredLive {
    manifest: crate::domain::Manifest,
    dist: crate::domain::Dist,
    #[serde(default)]
    readme_filename: Option<String>,
    #[serde(default)]
    readme_in_s3: bool,
}

fn iso(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn s_attr<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn time_attr(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> Result<DateTime<Utc>, StoreError> {
    let text = s_attr(item, name).ok_or_else(|| internal(format!("item has no {name}")))?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(internal)
}

fn decode_package(item: &HashMap<String, AttributeValue>) -> Result<PackageRecord, StoreError> {
    let doc = s_attr(item, "doc").ok_or_else(|| internal("package item has no doc"))?;
    serde_json::from_str(doc).map_err(internal)
}

/// Decodes a version item; the flag says its README is in S3 rather than in the item.
fn decode_version(
    item: &HashMap<String, AttributeValue>,
) -> Result<(VersionRecord, bool), StoreError> {
    let sk = s_attr(item, "sk").ok_or_else(|| internal("item has no sk"))?;
    let version = Version::parse(sk.trim_start_matches("V#")).map_err(internal)?;
    let published = time_attr(item, "published")?;
    let mut readme_in_s3 = false;
    let state = match s_attr(item, "state") {
        Some("live") => {
            let doc = s_attr(item, "doc").ok_or_else(|| internal("live version has no doc"))?;
            let stored: StoredLive = serde_json::from_str(doc).map_err(internal)?;
            readme_in_s3 = stored.readme_in_s3;
            VersionState::Live(Box::new(LiveVersion {
                manifest: stored.manifest,
                dist: stored.dist,
                readme: s_attr(item, "readme").map(str::to_string),
                readme_filename: stored.readme_filename,
                deprecated: s_attr(item, "deprecated").map(str::to_string),
            }))
        }
        Some("unpublished") => VersionState::Unpublished {
            at: time_attr(item, "unpublished_at")?,
        },
        other => return Err(internal(format!("unknown version state {other:?}"))),
    };
    Ok((
        VersionRecord {
            version,
            published,
            state,
        },
        readme_in_s3,
    ))
}

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

/// The table or the bucket, named for messages about it.
#[derive(Debug, Clone, Copy)]
enum Resource<'a> {
    Table(&'a str),
    Bucket(&'a str),
}

impl Resource<'_> {
    fn service(&self) -> &'static str {
        match self {
            Resource::Table(_) => "DynamoDB",
            Resource::Bucket(_) => "S3",
        }
    }

    /// The error code with which its service says it does not exist. (Other services' codes
    /// never count: S3 has no `ResourceNotFoundException`, DynamoDB no `NoSuchBucket`.)
    fn is_missing(&self, code: &str) -> bool {
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
    fn table(&self) -> Resource<'_> {
        Resource::Table(&self.settings.table)
    }

    fn bucket(&self) -> Resource<'_> {
        Resource::Bucket(&self.settings.bucket)
    }
}

/// Maps SDK failures of a request to `resource`: anything transient (no connection, timeouts,
/// throttling, 5xx) is `Unavailable`, so clients get 503 and retry; a missing table or bucket is
/// `MissingResource`, also 503, naming it (it is an operator's mistake, not the registry's bug).
fn classify<E, R>(e: SdkError<E, R>, resource: Resource<'_>) -> StoreError
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
            StoreError::Unavailable(
                aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            )
        }
        SdkError::ServiceError(s) if s.err().code().is_some_and(|c| resource.is_missing(c)) => {
            // Logged at every occurrence: the process itself looks healthy, and its log is where
            // an operator looks first.
            tracing::error!(%resource, "storage is not set up: {resource} does not exist");
            StoreError::MissingResource(resource.to_string())
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("");
            let transient = matches!(
                code,
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "SlowDown"
                    | "InternalError"
            );
            if transient {
                StoreError::Unavailable(code.to_string())
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

#[async_trait]
impl MetadataStore for AwsStorage {
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.settings.table)
            .set_key(Some(Self::key(name, PACKAGE_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        out.item.as_ref().map(decode_package).transpose()
    }

    async fn document(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError> {
        // The record and the snapshot side by side, as for a cold packument read.
        Ok(self
            .package_and_document(name)
            .await?
            .and_then(|(_, document)| document))
    }

    async fn package_and_document(
        &self,
        name: &PackageName,
    ) -> Result<Option<(PackageRecord, Option<PackageDocument>)>, StoreError> {
        let (package, snapshot) = tokio::join!(self.package(name), self.snapshot(name));
        let Some(package) = package? else {
            return Ok(None);
        };
        let doc = self.current_document(&package, snapshot?).await?;
        // `None`: the package went away between the two reads.
        Ok(doc.map(|doc| (package, Some(doc))))
    }

    async fn document_from(
        &self,
        package: &PackageRecord,
    ) -> Result<Option<PackageDocument>, StoreError> {
        let snapshot = self.snapshot(&package.name).await?;
        self.current_document(package, snapshot).await
    }

    async fn version(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.settings.table)
            .set_key(Some(Self::key(name, &Self::version_sk(version))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        // A README kept in S3 is left out: callers of `version` never serve it.
        Ok(out
            .item
            .as_ref()
            .map(decode_version)
            .transpose()?
            .map(|(record, _)| record))
    }

    async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
        let name = write.package.name.clone();
        let mut first: Vec<TransactWriteItem> = Vec::new();
        if let Some((record, mode)) = &write.create {
            let (item, large_readme) = self.version_item(&name, record)?;
            if let Some(readme) = large_readme {
                // Stored before the item that refers to it, like tarballs.
                self.put_object(
                    &Self::readme_key(&name, &record.version),
                    Bytes::from(readme),
                    "text/markdown",
                )
                .await?;
            }
            let mut put = Put::builder()
                .table_name(&self.settings.table)
                .set_item(Some(item));
            put = match mode {
                CreateMode::CreateOnly => put.condition_expression("attribute_not_exists(pk)"),
                CreateMode::AllowOverwrite => put
                    .condition_expression("attribute_not_exists(pk) OR #state = :live")
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":live", AttributeValue::S("live".into())),
            };
            first.push(
                TransactWriteItem::builder()
                    .put(put.build().map_err(internal)?)
                    .build(),
            );
        }
        let changes: Vec<TransactWriteItem> = write
            .changes
            .iter()
            .map(|c| self.change_update(&name, c))
            .collect::<Result<_, _>>()?;
        let mut chunks: Vec<Vec<TransactWriteItem>> = Vec::new();
        let mut changes = changes.into_iter().peekable();
        // The first transaction carries the new version (if any) and as many changes as fit;
        // the rest follow in further transactions, each conditioned on the previous revision.
        let room = CHANGES_PER_TRANSACTION - first.len();
        first.extend(changes.by_ref().take(room));
        chunks.push(first);
        while changes.peek().is_some() {
            chunks.push(changes.by_ref().take(CHANGES_PER_TRANSACTION).collect());
        }
        // Chunk i writes revision base + i + 1, conditioned on the revision before it; a single
        // transaction (the usual case) writes exactly the revision the caller asked for.
        let base = write.expected_revision.unwrap_or(0);
        for (i, mut items) in chunks.into_iter().enumerate() {
            let i = i as u64;
            let mut package = write.package.clone();
            package.revision = base + i + 1;
            let expected = if i == 0 {
                write.expected_revision
            } else {
                Some(base + i)
            };
            let has_version = i == 0 && write.create.is_some();
            items.push(self.package_put(&package, expected)?);
            let package_index = items.len() - 1;
            let codes = match self.transact(items).await {
                Ok(()) => continue,
                Err(TransactFailure::Store(e)) => return Err(e),
                Err(TransactFailure::Cancelled(codes)) => codes,
            };
            let failed = |idx: usize| {
                codes
                    .get(idx)
                    .is_some_and(|c| c == "ConditionalCheckFailed")
            };
            if codes.iter().any(|c| c == "TransactionConflict") || failed(package_index) {
                return Err(StoreError::RevisionConflict);
            }
            if let (true, Some((record, _))) = (has_version && failed(0), &write.create) {
                return match self.version(&name, &record.version).await? {
                    Some(VersionRecord {
                        state: VersionState::Unpublished { .. },
                        ..
                    }) => Err(StoreError::VersionRetired),
                    _ => Err(StoreError::VersionExists),
                };
            }
            if let Some(pos) = codes.iter().position(|c| c == "ConditionalCheckFailed") {
                let offset = match i as usize {
                    0 => pos - usize::from(has_version),
                    n => room + (n - 1) * CHANGES_PER_TRANSACTION + pos,
                };
                if let Some(VersionChange::Deprecate(v, _) | VersionChange::Unpublish(v, _)) =
                    write.changes.get(offset)
                {
                    return Err(StoreError::NoSuchVersion(v.clone()));
                }
            }
            // Without cancellation reasons (some emulators), a retry re-reads and decides.
            return Err(StoreError::RevisionConflict);
        }
        Ok(())
    }
}

/// Key-value records live in the same table under `pk = "~<namespace>"` (no package name can
/// start with `~`), `sk = <id>`, with DynamoDB's TTL attribute `ttl` set from the expiry.
#[async_trait]
impl super::KvStore for AwsStorage {
    async fn get(&self, namespace: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.settings.table)
            .key("pk", AttributeValue::S(format!("~{namespace}")))
            .key("sk", AttributeValue::S(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        Ok(out.item.as_ref().and_then(kv_value))
    }

    async fn put(
        &self,
        namespace: &str,
        id: &str,
        value: &[u8],
        expires: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let mut put = self
            .ddb
            .put_item()
            .table_name(&self.settings.table)
            .item("pk", AttributeValue::S(format!("~{namespace}")))
            .item("sk", AttributeValue::S(id.to_string()))
            .item(
                "value",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(value)),
            );
        if let Some(expires) = expires {
            put = put.item("ttl", AttributeValue::N(expires.timestamp().to_string()));
        }
        put.send().await.map_err(|e| classify(e, self.table()))?;
        Ok(())
    }

    async fn put_new(
        &self,
        namespace: &str,
        id: &str,
        value: &[u8],
        expires: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        // Absent, or present but past its TTL (DynamoDB deletes expired items only eventually).
        let mut put = self
            .ddb
            .put_item()
            .table_name(&self.settings.table)
            .item("pk", AttributeValue::S(format!("~{namespace}")))
            .item("sk", AttributeValue::S(id.to_string()))
            .item(
                "value",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(value)),
            )
            .condition_expression("attribute_not_exists(pk) OR #ttl <= :now")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(
                ":now",
                AttributeValue::N(Utc::now().timestamp().to_string()),
            );
        if let Some(expires) = expires {
            put = put.item("ttl", AttributeValue::N(expires.timestamp().to_string()));
        }
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify(e, self.table())),
        }
    }

    async fn delete(&self, namespace: &str, id: &str) -> Result<(), StoreError> {
        self.ddb
            .delete_item()
            .table_name(&self.settings.table)
            .key("pk", AttributeValue::S(format!("~{namespace}")))
            .key("sk", AttributeValue::S(id.to_string()))
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        Ok(())
    }

    async fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.settings.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(format!("~{namespace}")))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(e, self.table()))?;
            for item in page.items() {
                if let (Some(id), Some(value)) = (s_attr(item, "sk"), kv_value(item)) {
                    out.push((id.to_string(), value));
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}

/// The value of a key-value item, unless its TTL has passed (DynamoDB deletes expired items
/// only eventually).
fn kv_value(item: &HashMap<String, AttributeValue>) -> Option<Vec<u8>> {
    let expired = item
        .get("ttl")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|t| t <= Utc::now().timestamp());
    if expired {
        return None;
    }
    item.get("value")
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref().to_vec())
}

#[async_trait]
impl TarballStore for AwsStorage {
    async fn put(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError> {
        self.put_object(
            &format!("tarballs/{}", key.as_str()),
            bytes,
            "application/octet-stream",
        )
        .await
    }

    async fn get(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError> {
        // No HEAD first: the key is only ever read after the metadata that references it was
        // committed, which happens only after the object was stored. Presigning is local, so a
        // missing bucket is not seen here: the client's GET of the URL gets S3's `NoSuchBucket`
        // (404). The server's start-up check and every other path (publish, packument
        // snapshots) name it; a HEAD per download to name it here too would double the cost.
        let config = PresigningConfig::expires_in(self.settings.presign).map_err(internal)?;
        let presigned = self
            .s3
            .get_object()
            .bucket(&self.settings.bucket)
            .key(format!("tarballs/{}", key.as_str()))
            .presigned(config)
            .await
            .map_err(|e| classify(e, self.bucket()))?;
        Ok(Some(TarballRead::Redirect(presigned.uri().to_string())))
    }

    async fn list(&self, older_than: Duration) -> Result<Vec<TarballKey>, StoreError> {
        let cutoff = aws_smithy_types::DateTime::from(std::time::SystemTime::now() - older_than);
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix("tarballs/")
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| classify(e, self.bucket()))?;
            for object in out.contents() {
                let old_enough = object
                    .last_modified()
                    .is_some_and(|t| t.secs() <= cutoff.secs());
                let key = object.key().and_then(|k| k.strip_prefix("tarballs/"));
                if let (true, Some(key)) = (old_enough, key)
                    && let Some((key, _, _)) = TarballKey::parse(key)
                {
                    keys.push(key);
                }
            }
            match out.next_continuation_token {
                Some(t) if out.is_truncated == Some(true) => token = Some(t),
                _ => return Ok(keys),
            }
        }
    }

    async fn delete(&self, key: &TarballKey) -> Result<(), StoreError> {
        self.s3
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(format!("tarballs/{}", key.as_str()))
            .send()
            .await
            .map_err(|e| classify(e, self.bucket()))?;
        Ok(())
    }
}

/// Partition of a package's audit events (`~`: no package name starts with it, see `KvStore`).
fn audit_package_pk(name: &PackageName) -> String {
    format!("~audit/package/{name}")
}

/// Partition of one UTC day's audit events, every package's and none's.
fn audit_day_pk(day: chrono::NaiveDate) -> String {
    format!("~audit/day/{}", day.format("%Y-%m-%d"))
}

const AUDIT_DAY_PREFIX: &str = "~audit/day/";

/// The audit log in the metadata table, out of the packages' partitions (which packument reads
/// `Query`): each event is an item in its day's partition, `~audit/day/<YYYY-MM-DD>`, and, if it
/// names a package, a copy in `~audit/package/<name>`; both with `sk` = the event's order key
/// (time, then a random id: events never overwrite one another), the event as JSON in `event`,
/// and `ttl` when a retention is set. A query by package is one `Query` of that partition; a
/// query since a time is one `Query` per day since then; only a query of everything with no
/// retention set reads the day partitions by a filtered `Scan`.
pub struct AwsAuditLog {
    storage: AwsStorage,
    retention: super::AuditRetention,
}

impl AwsStorage {
    /// The audit log in this backend's table, keeping events for `retention`.
    pub fn audit_log(&self, retention: super::AuditRetention) -> AwsAuditLog {
        AwsAuditLog {
            storage: self.clone(),
            retention,
        }
    }
}

impl AwsAuditLog {
    fn item(
        &self,
        pk: String,
        event: &crate::domain::audit::AuditEvent,
        json: &str,
    ) -> Result<Put, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.storage.settings.table)
            .item("pk", AttributeValue::S(pk))
            .item("sk", AttributeValue::S(event.order_key()))
            .item("event", AttributeValue::S(json.to_string()));
        if let Some(expires) = self.retention.expires(event.time) {
            put = put.item("ttl", AttributeValue::N(expires.timestamp().to_string()));
        }
        put.build().map_err(internal)
    }

    /// The live events of `items`, as the query wants them.
    fn events_of(
        &self,
        items: &[HashMap<String, AttributeValue>],
        query: &crate::domain::audit::AuditQuery,
        out: &mut Vec<crate::domain::audit::AuditEvent>,
    ) {
        let now = Utc::now();
        for item in items {
            match s_attr(item, "event")
                .map(serde_json::from_str::<crate::domain::audit::AuditEvent>)
            {
                Some(Ok(e)) if query.matches(&e) && !self.retention.expired(e.time, now) => {
                    out.push(e)
                }
                Some(Ok(_)) => {}
                _ => tracing::warn!(target: "audit", "skipped an audit item that is not an event"),
            }
        }
    }

    /// One partition's events since `since`, newest first, until `limit` are found.
    async fn query_partition(
        &self,
        pk: String,
        query: &crate::domain::audit::AuditQuery,
        since: Option<DateTime<Utc>>,
        limit: Option<usize>,
        out: &mut Vec<crate::domain::audit::AuditEvent>,
    ) -> Result<(), StoreError> {
        let s = &self.storage;
        let mut start = None;
        loop {
            let mut request = s
                .ddb
                .query()
                .table_name(&s.settings.table)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start);
            request = match since {
                Some(since) => request
                    .key_condition_expression("pk = :pk AND sk >= :since")
                    .expression_attribute_values(
                        ":since",
                        AttributeValue::S(crate::domain::audit::order_time(since)),
                    ),
                None => request.key_condition_expression("pk = :pk"),
            };
            let page = request.send().await.map_err(|e| classify(e, s.table()))?;
            self.events_of(page.items(), query, out);
            if limit.is_some_and(|l| out.len() >= l) {
                return Ok(());
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl super::AuditLog for AwsAuditLog {
    async fn append(&self, event: &crate::domain::audit::AuditEvent) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).map_err(internal)?;
        let s = &self.storage;
        let day = self.item(audit_day_pk(event.time.date_naive()), event, &json)?;
        let Some(package) = &event.package else {
            s.ddb
                .put_item()
                .set_table_name(Some(s.settings.table.clone()))
                .set_item(Some(day.item))
                .send()
                .await
                .map_err(|e| classify(e, s.table()))?;
            return Ok(());
        };
        // Both copies or neither; the token makes an SDK retry of a landed attempt succeed.
        let items = vec![
            TransactWriteItem::builder().put(day).build(),
            TransactWriteItem::builder()
                .put(self.item(audit_package_pk(package), event, &json)?)
                .build(),
        ];
        s.ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(hex::encode(rand::random::<[u8; 16]>()))
            .send()
            .await
            .map_err(|e| classify(e, s.table()))?;
        Ok(())
    }

    async fn query(
        &self,
        query: &crate::domain::audit::AuditQuery,
    ) -> Result<Vec<crate::domain::audit::AuditEvent>, StoreError> {
        let now = Utc::now();
        // Expired events read as absent, so the retention bounds every query.
        let since = match (query.since, self.retention.oldest(now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut out = Vec::new();
        if let Some(package) = &query.package {
            self.query_partition(
                audit_package_pk(package),
                query,
                since,
                query.limit,
                &mut out,
            )
            .await?;
        } else if let Some(since) = since {
            // Newest day first, so that a limit stops early.
            let mut day = now.date_naive();
            let first = since.date_naive();
            while day >= first {
                let left = query.limit.map(|l| l.saturating_sub(out.len()));
                if left == Some(0) {
                    break;
                }
                let mut found = Vec::new();
                self.query_partition(audit_day_pk(day), query, Some(since), left, &mut found)
                    .await?;
                out.extend(found);
                match day.pred_opt() {
                    Some(d) => day = d,
                    None => break,
                }
            }
        } else {
            let s = &self.storage;
            let mut start = None;
            loop {
                let page = s
                    .ddb
                    .scan()
                    .table_name(&s.settings.table)
                    .filter_expression("begins_with(pk, :prefix)")
                    .expression_attribute_values(
                        ":prefix",
                        AttributeValue::S(AUDIT_DAY_PREFIX.to_string()),
                    )
                    .consistent_read(true)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| classify(e, s.table()))?;
                self.events_of(page.items(), query, &mut out);
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
        }
        Ok(query.finish(out))
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;

    #[test]
    fn compiled_in_roots_are_the_amazon_trust_services_ones_and_parse() {
        // Read the way the SDK's rustls client reads them (it panics on a bad PEM).
        let fingerprints: Vec<String> =
            CertificateDer::pem_slice_iter(super::AMAZON_TRUST_SERVICES_ROOTS)
                .map(|der| hex::encode(sha2::Sha256::digest(der.unwrap())))
                .collect();
        // Published at https://www.amazontrust.com/repository/.
        assert_eq!(
            fingerprints,
            [
                "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e", // Amazon Root CA 1
                "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4", // Amazon Root CA 2
                "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4", // Amazon Root CA 3
                "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092", // Amazon Root CA 4
                "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5", // Starfield Services Root G2
            ]
        );
    }
}
