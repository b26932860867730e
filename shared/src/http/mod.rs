//! The HTTP layer: one module per route group, mirroring the four Lambda functions, dispatched
//! (`dispatch`) from the route parser (`routes`); the same `Router` serves the local server and
//! Lambda. `state` holds what handlers work with, `body` reads request bodies, `route_table` is
//! API Gateway's view of the routes.

pub mod audit;
pub mod auth;
mod body;
mod dispatch;
mod error;
mod incremental;
pub mod metadata;
pub mod oidc;
pub mod publish;
pub mod rendered;
mod respond;
pub mod route_table;
pub mod routes;
mod search;
mod stars;
mod state;
pub mod tarball;
pub mod trust;
pub mod upstream;
mod web;
mod web_auth;
mod write_error;

pub(crate) use body::{parse_json, read_body};
#[cfg(feature = "lambda")]
pub(crate) use dispatch::BASE_PATH_HEADER;
pub use dispatch::{Dispatcher, router};
pub use error::{ApiError, ErrorCode};
pub(crate) use respond::json_response;
pub use respond::redirect;
pub use routes::{Route, RouteGroup, RouteLimit};
pub use state::{AppState, RequestContext};
pub use write_error::Refusal;
