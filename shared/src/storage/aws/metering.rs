//! Request metering: every AWS request the clients make, counted by operation (what is billed),
//! for the benchmarks and the tests that pin how many requests a read costs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

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

/// The interceptor that feeds a `RequestCounts`; one per client, sharing the counts.
#[derive(Debug)]
pub(super) struct CountRequests(pub Arc<RequestCounts>);

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
