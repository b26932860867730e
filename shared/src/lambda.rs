//! Running one route group as an AWS Lambda function behind API Gateway (HTTP API, payload v2).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use lambda_http::lambda_runtime::{self, LambdaInvocation, layers::TracingLayer};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use tower::ServiceExt;

use crate::http::{AppState, BASE_PATH_HEADER, RouteGroup, router};
use crate::storage::AfterResponse;

/// Serves `group`'s routes of `state` for every invocation (a request for another group gets the
/// same 404 as an unknown path), running the writes queued in `after_response` (the queue the
/// state's storage was built with, `AppBuilder::after_response`) once each response is posted.
pub async fn serve(
    state: Arc<AppState>,
    group: RouteGroup,
    after_response: Arc<AfterResponse>,
) -> Result<(), lambda_http::Error> {
    // What `lambda_http::run` builds, plus the queued writes run once each response is posted.
    lambda_runtime::Runtime::new(lambda_http::Adapter::from(service(router(state, &[group]))))
        .layer(TracingLayer::new())
        .layer(tower::layer::layer_fn(move |inner| RunAfterResponse {
            inner,
            queue: after_response.clone(),
        }))
        .run()
        .await
}

/// Runs an invocation (which ends by posting its response to the Runtime API), then the work
/// the invocation left for after its response, before the runtime asks for the next one.
#[derive(Clone)]
struct RunAfterResponse<S> {
    inner: S,
    queue: Arc<AfterResponse>,
}

impl<S> tower::Service<LambdaInvocation> for RunAfterResponse<S>
where
    S: tower::Service<LambdaInvocation, Response = (), Error = lambda_runtime::Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = lambda_runtime::Error;
    type Future = BoxFuture<'static, Result<(), lambda_runtime::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let answered = self.inner.call(invocation);
        let queue = self.queue.clone();
        Box::pin(async move {
            let result = answered.await;
            queue.run().await;
            result
        })
    }
}

/// Wraps the router for Lambda: API Gateway puts a named stage in front of the path (lambda_http
/// adds it if missing); the stage becomes the base path the router strips and links carry.
pub fn service(
    app: axum::Router,
) -> impl tower::Service<
    Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone {
    tower::service_fn(move |mut request: Request| {
        let app = app.clone();
        async move {
            // Never trust a client-sent copy of the header.
            request.headers_mut().remove(BASE_PATH_HEADER);
            if let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref()
                && let Some(stage) = ctx.stage.as_deref().filter(|s| *s != "$default")
                && let Ok(v) = format!("/{stage}").parse()
            {
                request.headers_mut().insert(BASE_PATH_HEADER, v);
            }
            app.oneshot(request.map(axum::body::Body::new)).await
        }
    })
}

/// Plain-text logs without colour (CloudWatch shows escape codes verbatim) and without timestamps
/// (CloudWatch adds its own).
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time(),
        )
        .with(crate::config::log_filter())
        .try_init();
}
