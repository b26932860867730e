//! The end-to-end suite as one test binary: one link of the AWS SDK and the server library instead of one
//! per file. Each module is a former `tests/tests/<name>.rs`; filter with `cargo test -p e2e <module>::`.
// Tests: casts of small known values and raw file descriptors, literal ids and timestamps copied
// from GitHub's documentation, fakes shaped like the services they stand for.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::unreadable_literal,
    clippy::match_wild_err_arm,
    clippy::unused_async,
    clippy::fn_params_excessive_bools,
    clippy::large_stack_arrays
)]

mod api_snapshots;
mod audit_log;
mod aws_backend;
mod aws_outage;
mod aws_resources;
mod aws_views;
mod bad_input;
mod browser;
mod clients;
mod concurrency;
mod couchdb_era;
mod fake_github;
mod github_auth;
mod hardening;
mod infra_template;
mod installation_tokens;
mod lambda_events;
mod lambda_runtime;
mod legacy_api;
mod listener;
mod local_storage;
mod manifest_confusion;
mod npm_cli;
mod provenance;
mod search;
mod settings;
mod signatures;
mod stack_deploy;
mod token_capability;
mod trust_configuration;
mod trusted_publishing;
mod upstream_cache;
mod web_login;
mod web_pages;
