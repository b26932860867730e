//! What every handler works with: the process-wide state and the request's context, and the
//! answers that depend on who asks (authorisation, and what a missing package looks like).

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;

use super::respond::redirect;
use super::{ApiError, audit, rendered, tarball};
use crate::auth::scopes::ScopePolicy;
use crate::auth::{Action, AuthError, Authorizer, Caller, Identity};
use crate::config::Config;
use crate::domain::tarball::TarballLimits;
use crate::domain::{PackageName, PackageRecord, RepoRef};
use crate::storage::views::PackageViews;
use crate::storage::{AuditLog, MetadataStore, RenderStore, TarballStore};

/// Everything a handler needs, built once per process.
pub struct AppState {
    /// Package metadata, read strongly (the write paths): `views` over the backend's store.
    pub metadata: Arc<dyn MetadataStore>,
    /// This instance's views of packages and facts of versions, for read routes: at most
    /// `REGISTRY_REVISION_CHECK_MS` old (`storage::views`).
    pub views: Arc<PackageViews>,
    /// The search index over the metadata store, kept current by the writes made through
    /// `metadata`.
    pub search: Arc<crate::search::Searcher>,
    /// Tarball bytes.
    pub tarballs: Arc<dyn TarballStore>,
    /// Settings.
    pub config: Config,
    /// Which names are stored here and which belong upstream (the owner allow-list).
    pub scopes: ScopePolicy,
    /// Authorisation.
    pub auth: Authorizer,
    /// Bounds on tarball inspection.
    pub tarball_limits: TarballLimits,
    /// Packuments rendered per revision.
    pub packuments: rendered::PackumentCache,
    /// Tarballs kept in memory to serve again (`http::tarball`).
    pub tarballs_kept: tarball::TarballCache,
    /// Bytes of request bodies the process may hold at once (`REGISTRY_MAX_BODY_BYTES_IN_FLIGHT`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Where every write is recorded (`http::audit`).
    pub audit: Arc<dyn AuditLog>,
    /// Rendered packuments kept between runs, where the backend keeps them (embedded).
    pub renders: Option<Arc<dyn RenderStore>>,
    /// The pull-through cache (`upstream`), when names not stored here are proxied.
    pub upstream: Option<crate::upstream::Proxy>,
    /// Small records with an expiry (npm 1.x's uploads waiting for their release), where the
    /// state was built with the backend's key-value store.
    pub kv: Option<Arc<dyn crate::storage::KvStore>>,
    /// The registry's signing key, when versions are signed (`dist.signatures`).
    pub signing: Option<Arc<crate::signing::Signing>>,
    /// The Sigstore trusted root provenance is verified against when it is not the pinned
    /// public-good one (`REGISTRY_SIGSTORE_TRUSTED_ROOT`).
    pub sigstore_root: Option<Arc<crate::domain::provenance::TrustedRoot>>,
}

/// What a handler sees of a request.
pub struct RequestContext {
    /// Request headers.
    pub headers: HeaderMap,
    /// Path after the public-URL prefix, still percent-encoded, with the query.
    pub path_and_query: String,
    /// Base URL for links the registry emits (`dist.tarball`).
    pub base_url: String,
    /// Who is calling.
    pub caller: Caller,
    /// The most body bytes this request's route reads (`body_limit_of`); 0 for routes that
    /// read none.
    pub body_limit: usize,
    /// What the handler did, for the audit log (`http::audit`).
    pub audit: audit::AuditNote,
}

impl AppState {
    /// The one write path for package metadata, over this state's stores.
    pub fn writer(&self) -> crate::writes::PackageWriter<'_> {
        crate::writes::PackageWriter::new(
            self.metadata.as_ref(),
            self.tarballs.as_ref(),
            self.config.limits.allow_overwrite,
        )
    }

    /// Decides whether the caller may act on the package, which belongs to the repository its
    /// record is bound to (or, for a package stored before GitHub mode was on, `scope/name`).
    /// A caller who may not even read the package gets exactly what a missing name gets.
    pub(crate) async fn authorize(
        &self,
        ctx: &RequestContext,
        name: &PackageName,
        record: Option<&PackageRecord>,
        action: Action,
    ) -> Result<(), ApiError> {
        if matches!(self.auth, Authorizer::Open) {
            return Ok(());
        }
        // Boxed: GitHub's checks are a large future, which every read's future would otherwise
        // carry (and copy) in open mode too.
        Box::pin(self.authorize_github(ctx, name, record, action)).await
    }

    async fn authorize_github(
        &self,
        ctx: &RequestContext,
        name: &PackageName,
        record: Option<&PackageRecord>,
        action: Action,
    ) -> Result<(), ApiError> {
        let Some(repo) = record
            .and_then(|r| r.repository.clone())
            .or_else(|| RepoRef::unbound(name))
        else {
            return Err(self.missing(ctx, name).await);
        };
        match self.auth.check(&ctx.caller, name, &repo, action).await {
            Ok(_) => Ok(()),
            Err(AuthError::Hidden) => Err(self.missing(ctx, name).await),
            Err(e) => Err(e.into()),
        }
    }

    /// The answer for a package that does not exist, and (so that outsiders cannot tell them
    /// apart) for one the caller may not read: in GitHub mode an anonymous caller is asked to
    /// authenticate, anyone else hears that the package does not exist. Same status, body and
    /// headers either way. An installation token's caller also hears what the token reaches
    /// (which depends on the token alone, never on the package).
    pub(crate) async fn missing(&self, ctx: &RequestContext, name: &PackageName) -> ApiError {
        let Some(github) = self.auth.github() else {
            return ApiError::package_not_found(name);
        };
        match ctx.caller.identity {
            Identity::Anonymous => ApiError::Unauthorized(format!(
                "authentication required to access {name}: put a GitHub token in .npmrc (//registry/:_authToken=...) or run npm login"
            )),
            Identity::Installation => ApiError::NotFound(crate::auth::not_reached(
                name,
                Box::pin(github.reach(&ctx.caller)).await.as_ref(),
            )),
            _ => ApiError::package_not_found(name),
        }
    }

    /// Where to send a read for a package this registry does not have, if anywhere: the upstream
    /// registry, for unscoped names and scopes not served here.
    pub(crate) fn upstream_location(
        &self,
        name: &PackageName,
        path_and_query: &str,
    ) -> Option<String> {
        let upstream = self.config.scopes.upstream.as_ref()?;
        self.scopes
            .is_upstream(name)
            .then(|| format!("{upstream}{path_and_query}"))
    }

    /// The package record as this instance's view has it (read routes), unless the package is
    /// absent or was unpublished as a whole.
    pub(crate) async fn viewed_package(
        &self,
        name: &PackageName,
    ) -> Result<Option<Arc<PackageRecord>>, ApiError> {
        let record = self.views.package(name).await?;
        Ok(record.filter(|package| package.unpublished.is_none()))
    }

    /// The package record, read strongly, unless the package is absent or was unpublished as a
    /// whole: what write routes that need no version record decide from.
    pub(crate) async fn published_package(
        &self,
        name: &PackageName,
    ) -> Result<Option<PackageRecord>, ApiError> {
        let record = self.metadata.package(name).await?;
        Ok(record.filter(|package| package.unpublished.is_none()))
    }

    /// The answer for a package not stored here: served through the pull-through cache, or a
    /// redirect to the upstream registry, or `missing`.
    pub(crate) async fn not_here(
        &self,
        name: &PackageName,
        ctx: &RequestContext,
        wanted: super::upstream::Wanted<'_>,
    ) -> Result<Response, ApiError> {
        if let Some(proxy) = &self.upstream
            && self.scopes.is_upstream(name)
            && proxy.serves(name)
        {
            return Box::pin(super::upstream::serve(self, proxy, ctx, name, wanted)).await;
        }
        match self.upstream_location(name, &ctx.path_and_query) {
            Some(location) => Ok(redirect(&location)),
            None => Err(self.missing(ctx, name).await),
        }
    }
}
