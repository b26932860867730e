//! The npm-compatible registry's library: the domain, search, storage traits and backends,
//! authorisation, and the HTTP layer whose four route groups the Lambda functions and the local
//! server mount.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod http;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod listener;
pub mod search;
pub mod secret;
pub mod signing;
pub mod storage;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod upstream;
pub mod web;
pub mod writes;
pub mod zero_copy;
