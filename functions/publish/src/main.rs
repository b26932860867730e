//! Lambda function: the registry's publish route group.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    registry::lambda::run(registry::http::RouteGroup::Publish).await
}
