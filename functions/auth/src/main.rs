//! Lambda function: the registry's auth route group.

use std::sync::Arc;

use registry::app::{App, EnvironmentSdk};
use registry::config::Config;
use registry::http::RouteGroup;
use registry::storage::AfterResponse;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    registry::lambda::init_logging();
    let queue = Arc::new(AfterResponse::default());
    // The SDK from Lambda's environment alone; no resource check (see `check_resources`).
    let state = App::builder(Config::from_env()?)
        .sdk(EnvironmentSdk)
        .after_response(queue.clone())
        .check_resources(false)
        .build()
        .await?;
    registry::lambda::serve(state, RouteGroup::Auth, queue).await
}
