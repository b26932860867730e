//! Lambda function: the registry's metadata route group.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    registry::lambda::run(registry::http::RouteGroup::Metadata).await
}
