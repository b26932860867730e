//! The I/O-free part of the `registry` crate (shared/), compiled from its own source files under
//! the same module paths, for the fuzz targets. Nothing here is a copy: `#[path]` points at the
//! files in shared/src, and build.rs lifts two items out of files that also do I/O.
//!
//! Items those files keep crate-internal (`pub(crate)`) for the rest of the registry are unused
//! here; the registry's own build is where dead code is caught, so it is not reported twice.
#![allow(dead_code)]

/// shared/src/domain, whole: names, versions, tags, publish documents, tarballs.
#[path = "../../src/domain/mod.rs"]
pub mod domain;

#[doc(hidden)]
#[path = "../../src/auth/tokens.rs"]
pub mod tokens_rs;

/// The route parser and the API Gateway route table, under their own module paths.
pub mod http;

/// Registry tokens (shared/src/auth/tokens.rs), `bearer` (from shared/src/auth/caller.rs) and
/// `github::TokenKind` (from shared/src/auth/github/mod.rs).
pub mod auth {
    pub use crate::tokens_rs as tokens;
    include!(concat!(env!("OUT_DIR"), "/auth_items.rs"));
}
