//! Lambda function: the registry's auth route group.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    registry::lambda::run(registry::http::RouteGroup::Auth).await
}
