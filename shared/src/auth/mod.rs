//! Who is calling and whether they may act: one decision point for every route group and both
//! deployment shapes.
//!
//! In GitHub mode a scoped package `@owner/name` belongs to a GitHub repository (bound at first
//! publish); reading needs `pull` on it (or nothing, for a public repository, if the operator
//! allows anonymous reads), writing needs `push`, unpublishing and rebinding need `admin`.
//!
//! One module per concern: who is calling (`caller`), the one rule (`decide`), the authoriser
//! that asks GitHub and applies the rule (`authorizer`), GitHub's answers and their cache
//! (`github`, `cache`), registry tokens (`tokens`; their records: `token_store`), trust
//! configurations (`trust`), OIDC ID tokens (`oidc`), the owner allow-list (`scopes`), and the
//! KV keys all of them store under (`kv`).

mod authorizer;
mod cache;
mod caller;
mod decide;
pub mod github;
pub mod kv;
pub mod oidc;
pub mod scopes;
pub(crate) mod token_store;
pub mod tokens;
pub mod trust;

pub use authorizer::{Authorizer, GithubAuth, GithubSettings};
pub use caller::{
    Caller, CredentialKind, Identity, RegistryTokenUse, SESSION_COOKIE, Secret, WorkflowRun,
    bearer, credential,
};
pub(crate) use caller::{TokenOwner, bears_installation_token};
pub use decide::{Action, AuthError};
pub(crate) use decide::{decide, installation_write_refused, is_installation_refusal, not_reached};
