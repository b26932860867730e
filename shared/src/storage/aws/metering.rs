//! Request metering: every AWS request the clients make, counted by operation (what is billed),
//! for the benchmarks and the tests that pin how many requests a read costs. An eventually
//! consistent `GetItem` or `Query` is billed at half a strong one's price, so it is counted apart,
//! as `DynamoDB.GetItem (eventual)`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// Marks an operation whose read is eventually consistent, between its input and its attempts.
#[derive(Debug, Clone)]
struct EventualRead;

impl Storable for EventualRead {
    type Storer = StoreReplace<Self>;
}

/// Whether the operation's input asks for an eventually consistent read (DynamoDB's default
/// when `ConsistentRead` is not set).
fn eventual(input: &aws_smithy_runtime_api::client::interceptors::context::Input) -> bool {
    use aws_sdk_dynamodb::operation::{get_item::GetItemInput, query::QueryInput};
    if let Some(get) = input.downcast_ref::<GetItemInput>() {
        return get.consistent_read != Some(true);
    }
    input
        .downcast_ref::<QueryInput>()
        .is_some_and(|query| query.consistent_read != Some(true))
}

/// Counts of AWS requests (HTTP attempts, as billed) by `Service.Operation`.
#[derive(Debug, Default)]
pub struct RequestCounts(Mutex<BTreeMap<String, u64>>);

impl RequestCounts {
    fn record(&self, service: &str, operation: &str, eventual: bool) {
        let key = if eventual {
            format!("{service}.{operation} (eventual)")
        } else {
            format!("{service}.{operation}")
        };
        if let Ok(mut map) = self.0.lock() {
            *map.entry(key).or_default() += 1;
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

/// The interceptor that feeds a `RequestCounts`; one per client, sharing the counts.
#[derive(Debug)]
pub(super) struct CountRequests(pub Arc<RequestCounts>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    // The input is gone once serialised: note its consistency for the attempts to read.
    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if eventual(context.input()) {
            cfg.interceptor_state().store_put(EventualRead);
        }
        Ok(())
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
            let eventual = cfg.load::<EventualRead>().is_some();
            self.0.record(m.service(), m.name(), eventual);
        }
        Ok(())
    }
}
