//! The route parser (shared/src/http/routes.rs) and the API Gateway route table
//! (shared/src/http/route_table.rs), compiled from their own files; the table names the
//! parser's `RouteGroup` as `super::routes`, as it does in the library.

#[path = "../../src/http/routes.rs"]
pub mod routes;

#[path = "../../src/http/route_table.rs"]
pub mod route_table;
