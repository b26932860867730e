//! The HTTP layer: one module per route group, mirroring the four Lambda functions, dispatched from
//! the route table in `routes`. The same `Router` serves the local server and (later) Lambda.

pub mod audit;
pub mod auth;
mod error;
pub mod metadata;
pub mod oidc;
pub mod publish;
pub mod rendered;
pub mod routes;
pub mod tarball;
pub mod trust;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

pub use error::ApiError;
pub use routes::{Route, RouteGroup};

use crate::auth::{Action, AuthError, Authorizer, Caller, Identity};
use crate::config::Config;
use crate::domain::tarball::TarballLimits;
use crate::domain::{PackageName, PackageRecord, RepoRef};
use crate::storage::{AuditLog, MetadataStore, StoreError, TarballStore};

/// Everything a handler needs, built once per process.
pub struct AppState {
    /// Package metadata.
    pub metadata: Arc<dyn MetadataStore>,
    /// Tarball bytes.
    pub tarballs: Arc<dyn TarballStore>,
    /// Settings.
    pub config: Config,
    /// Authorisation.
    pub auth: Authorizer,
    /// Bounds on tarball inspection.
    pub tarball_limits: TarballLimits,
    /// Packuments rendered per revision.
    pub packuments: rendered::PackumentCache,
    /// Bytes of request bodies the process may hold at once (`REGISTRY_MAX_BODY_BYTES_IN_FLIGHT`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Where every write is recorded (`http::audit`).
    pub audit: Arc<dyn AuditLog>,
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
    /// Decides whether the caller may act on the package, which belongs to the repository its
    /// record is bound to (or, for a package stored before GitHub mode was on, `scope/name`).
    /// A caller who may not even read the package gets exactly what a missing name gets.
    pub async fn authorize(
        &self,
        ctx: &RequestContext,
        name: &PackageName,
        record: Option<&PackageRecord>,
        action: Action,
    ) -> Result<(), ApiError> {
        if matches!(self.auth, Authorizer::Open) {
            return Ok(());
        }
        let Some(repo) = record
            .and_then(|r| r.repository.clone())
            .or_else(|| RepoRef::new(name.scope().unwrap_or(""), name.base_name()))
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
    pub async fn missing(&self, ctx: &RequestContext, name: &PackageName) -> ApiError {
        let Some(github) = self.auth.github() else {
            return ApiError::package_not_found(name);
        };
        match ctx.caller.identity {
            Identity::Anonymous => ApiError::Unauthorized(format!(
                "authentication required to access {name}: put a GitHub token in .npmrc (//registry/:_authToken=...) or run npm login"
            )),
            Identity::Installation => ApiError::NotFound(crate::auth::not_reached(
                name,
                github.reach(&ctx.caller).await.as_ref(),
            )),
            _ => ApiError::package_not_found(name),
        }
    }

    /// Where to send a read for a package this registry does not have, if anywhere: the upstream
    /// registry, for unscoped names and scopes not served here.
    pub fn upstream_location(&self, name: &PackageName, path_and_query: &str) -> Option<String> {
        let upstream = self.config.upstream.as_ref()?;
        let foreign = match name.scope() {
            None => true,
            Some(scope) => {
                !self.config.allowed_owners.is_empty() && !self.config.serves_scope(scope)
            }
        };
        foreign.then(|| format!("{upstream}{path_and_query}"))
    }

    /// The package record, unless the package is absent or was unpublished as a whole: what
    /// routes that need no version record answer from.
    pub async fn published_package(
        &self,
        name: &PackageName,
    ) -> Result<Option<PackageRecord>, ApiError> {
        let record = self.metadata.package(name).await?;
        Ok(record.filter(|package| package.unpublished.is_none()))
    }

    /// The answer for an unknown package: a redirect to the upstream registry, or `missing`.
    pub async fn not_here(
        &self,
        name: &PackageName,
        ctx: &RequestContext,
    ) -> Result<Response, ApiError> {
        match self.upstream_location(name, &ctx.path_and_query) {
            Some(location) => Ok(redirect(&location)),
            None => Err(self.missing(ctx, name).await),
        }
    }
}

/// A `302 Found` to `location`.
pub fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => ApiError::Internal(format!("unrepresentable redirect location {location:?}"))
            .into_response(),
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Retries a read-modify-write on revision conflicts. Writes are conditional on the revision they
/// read, so concurrent writers to one package each land after at most a few rounds.
pub async fn retry_on_conflict<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RetryableError>>,
{
    const ATTEMPTS: u32 = 200;
    for n in 0..ATTEMPTS {
        match attempt().await {
            Err(RetryableError::Store(StoreError::RevisionConflict)) if n + 1 < ATTEMPTS => {
                // Jittered backoff spreads racing writers out so one of them commits each round.
                let max_ms = 1 + u64::from(n.min(20));
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..=max_ms))).await;
            }
            Err(RetryableError::Store(e)) => return Err(e.into()),
            Err(RetryableError::Api(e)) => return Err(e),
            Ok(v) => return Ok(v),
        }
    }
    Err(StoreError::RevisionConflict.into())
}

/// An error inside a retried write: a store conflict is retried, the rest end the request.
#[derive(Debug)]
pub enum RetryableError {
    /// From storage.
    Store(StoreError),
    /// Anything else.
    Api(ApiError),
}

impl From<StoreError> for RetryableError {
    fn from(e: StoreError) -> Self {
        RetryableError::Store(e)
    }
}

impl From<crate::domain::publish::PublishError> for RetryableError {
    fn from(e: crate::domain::publish::PublishError) -> Self {
        RetryableError::Api(e.into())
    }
}

impl From<ApiError> for RetryableError {
    fn from(e: ApiError) -> Self {
        RetryableError::Api(e)
    }
}

/// How large a route's request body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLimit {
    /// A publish or metadata update: `REGISTRY_MAX_BODY_BYTES`.
    Publish,
    /// Login, token and dist-tag bodies: a few KiB.
    Small,
}

/// Largest body of the small routes: a login (user name and a token), a token request, a version.
pub const SMALL_BODY_BYTES: usize = 8 * 1024;

/// The byte limit of `limit` under `state`'s settings.
pub fn route_limit(state: &AppState, limit: RouteLimit) -> usize {
    match limit {
        RouteLimit::Publish => state.config.max_body_bytes,
        RouteLimit::Small => SMALL_BODY_BYTES.min(state.config.max_body_bytes),
    }
}

/// The body limit of a route that reads its body, `None` for routes that never read one.
pub fn body_limit_of(route: &Route) -> Option<RouteLimit> {
    match route {
        Route::PutPackage(..) => Some(RouteLimit::Publish),
        Route::DistTagSet(..)
        | Route::LegacyLogin(_)
        | Route::TokenCreate
        | Route::TrustCreate(_) => Some(RouteLimit::Small),
        _ => None,
    }
}

/// A request body held in memory, with its share of the in-flight budget, which is returned
/// when the guard is dropped: keep it while the bytes (or slices of them) are in use.
pub struct ReadBody {
    bytes: Bytes,
    in_flight: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ReadBody {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes and the budget guard, to be kept while the bytes (or slices of them) live.
    pub fn into_parts(self) -> (Bytes, Option<tokio::sync::OwnedSemaphorePermit>) {
        (self.bytes, self.in_flight)
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "request body is larger than this registry's limit of {limit} bytes for this request{}",
        if limit >= (1 << 20) {
            " (REGISTRY_MAX_BODY_BYTES)"
        } else {
            ""
        }
    ))
}

/// Reads a request body of at most its route's limit (`RequestContext::body_limit`; larger ones
/// get 413), reserving its size in the process-wide budget of bodies held at once first (an
/// exhausted budget is a 503 with `Retry-After`, before a byte is read).
pub async fn read_body(
    state: &AppState,
    body: Body,
    ctx: &RequestContext,
) -> Result<ReadBody, ApiError> {
    let limit = ctx.body_limit;
    let declared = declared_length(&ctx.headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    // Without a declared length, reserve the route's whole limit.
    let reserve = declared.map_or(limit, |len| len as usize).max(1);
    let in_flight = match u32::try_from(reserve) {
        Ok(n) => state.body_budget.clone().try_acquire_many_owned(n).ok(),
        Err(_) => None,
    };
    if in_flight.is_none() {
        return Err(ApiError::Unavailable(
            "the registry is receiving too many large request bodies at once; retry shortly".into(),
        ));
    }
    // One buffer of the declared size, filled in place: collecting the chunks and joining them
    // would hold a publish (a base64 tarball of up to tens of MB) twice.
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, limit);
    let mut bytes = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(too_large(limit));
            }
            Err(e) => {
                return Err(ApiError::BadRequest(format!(
                    "could not read request body: {e}"
                )));
            }
        }
    }
    Ok(ReadBody {
        bytes: bytes.freeze(),
        in_flight,
    })
}

/// Parses a JSON body, with messages that say what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; expected JSON".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))
}

/// Builds the router serving `groups`. The local server passes every group; each Lambda one.
pub fn router(state: Arc<AppState>, groups: &[RouteGroup]) -> Router {
    let groups: Arc<[RouteGroup]> = groups.into();
    Router::new()
        .fallback(
            move |State(state): State<Arc<AppState>>, request: Request| {
                let groups = groups.clone();
                async move { dispatch(state, &groups, request).await }
            },
        )
        .with_state(state)
}

/// Set by the Lambda adapter (never by clients) to the API Gateway stage's path, e.g. `/prod`.
pub const BASE_PATH_HEADER: &str = "x-registry-base-path";

fn forwarded_base_path(headers: &HeaderMap) -> &str {
    headers
        .get(BASE_PATH_HEADER)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// The base URL links point at: the configured public URL, or (on Lambda, where it is not
/// known in advance) the request's host and stage.
fn base_url(config: &Config, headers: &HeaderMap) -> String {
    if let Some(url) = &config.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}{}", forwarded_base_path(headers))
}

/// The path prefix routes must ignore: the public URL's path (`/npm` in `https://host/npm`), or
/// the stage path the Lambda adapter passes on.
fn path_prefix(config: &Config, headers: &HeaderMap) -> String {
    match config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
    {
        Some(u) => u.path().trim_end_matches('/').to_string(),
        None => forwarded_base_path(headers)
            .trim_end_matches('/')
            .to_string(),
    }
}

async fn dispatch(state: Arc<AppState>, groups: &[RouteGroup], request: Request) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let raw_path = request.uri().path().to_string();
    let prefix = path_prefix(&state.config, request.headers());
    let path = match raw_path.strip_prefix(&prefix) {
        Some(rest) if !prefix.is_empty() && (rest.is_empty() || rest.starts_with('/')) => {
            rest.to_string()
        }
        _ => raw_path.clone(),
    };
    let path_and_query = match request.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut response = match routes::resolve(&method, &path) {
        Err(e) => ApiError::from(e).into_response(),
        Ok(route) if !groups.contains(&route.group()) => {
            ApiError::NotFound("not found".into()).into_response()
        }
        Ok(route) => {
            let (parts, body) = request.into_parts();
            // Refusals that need nothing but the request line and headers come first: no
            // GitHub call, no store read, no body byte is spent on them.
            let early = cross_site_write(&parts.method, &parts.headers).or_else(|| {
                let limit = route_limit(&state, body_limit_of(&route)?);
                declared_length(&parts.headers)
                    .is_some_and(|len| len > limit as u64)
                    .then(|| too_large(limit))
            });
            // Logging in must work whatever stale token .npmrc still holds.
            let caller = match (early, &route) {
                (Some(refusal), _) => Err(refusal),
                // The exchange's bearer is an OIDC ID token, not a credential of this registry.
                (None, Route::LegacyLogin(_) | Route::WebLogin | Route::OidcExchange(_)) => {
                    Ok(Caller::anonymous())
                }
                // An installation token never writes: refused by its prefix, before GitHub is
                // asked who it is (one that GitHub has to name is refused in `anonymous_write`).
                (None, _)
                    if is_write(&route)
                        && state.auth.github().is_some()
                        && crate::auth::bears_installation_token(&parts.headers) =>
                {
                    Err(crate::auth::installation_write_refused().into())
                }
                (None, _) => state
                    .auth
                    .caller(&parts.headers)
                    .await
                    .map_err(ApiError::from)
                    .and_then(|caller| anonymous_write(&state, &route, caller)),
            };
            match caller {
                Err(e) => e.into_response(),
                Ok(caller) => {
                    let body_limit =
                        body_limit_of(&route).map_or(0, |limit| route_limit(&state, limit));
                    let ctx = RequestContext {
                        body_limit,
                        base_url: base_url(&state.config, &parts.headers),
                        headers: parts.headers,
                        path_and_query,
                        caller,
                        audit: audit::AuditNote::default(),
                    };
                    let audited = audit::audited(&route);
                    let result = match route.group() {
                        RouteGroup::Metadata => metadata::handle(&state, &ctx, route, body).await,
                        RouteGroup::Publish => publish::handle(&state, &ctx, route, body).await,
                        RouteGroup::Tarball => tarball::handle(&state, &ctx, route).await,
                        RouteGroup::Auth => auth::handle(&state, &ctx, route, body).await,
                    };
                    if let Some((package, default)) = audited {
                        let events = audit::events(
                            package.as_ref(),
                            default,
                            &ctx.audit,
                            &ctx.caller,
                            audit::outcome_of(&result),
                            chrono::Utc::now(),
                        );
                        audit::record(&state, events).await;
                    }
                    result.unwrap_or_else(IntoResponse::into_response)
                }
            }
        }
    };
    // An error may be answered before the body was read; the connection then cannot carry
    // another request, so tell the client instead of letting it reuse a closing connection.
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // A token revocation's path may hold a whole token (`npm token revoke <token>`).
    let logged_path = match raw_path.find("/-/npm/v1/tokens/token/") {
        Some(at) => format!("{}/-/npm/v1/tokens/token/<redacted>", &raw_path[..at]),
        None => raw_path,
    };
    tracing::info!(
        method = %method,
        path = %logged_path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// Browsers may send a cross-origin write without asking first (no CORS preflight) only as a
/// "simple request": a form-like content type, or no body. npm, pnpm, yarn and bun send JSON
/// and no `Sec-Fetch-Site`. So a write with a form-like body, or one a browser marks as
/// cross-site, is refused: a web page cannot drive a registry on localhost (open mode has no
/// token that would stop it).
fn cross_site_write(method: &axum::http::Method, headers: &HeaderMap) -> Option<ApiError> {
    use axum::http::Method;
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let form_like = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let essence = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            matches!(
                essence.as_str(),
                "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
            )
        })
        .unwrap_or(false);
    if form_like || matches!(site, "cross-site" | "same-site") {
        return Some(ApiError::Forbidden(
            "writes must be sent as JSON (Content-Type: application/json) and not from a web page"
                .into(),
        ));
    }
    None
}

/// Whether a route changes something: a publish-group route, token or trust management.
fn is_write(route: &Route) -> bool {
    matches!(route.group(), RouteGroup::Publish)
        || matches!(
            route,
            Route::TokenCreate
                | Route::TokenDelete(_)
                | Route::TrustCreate(_)
                | Route::TrustRevoke(..)
        )
}

/// GitHub mode: a write needs a caller who may write at all, and says so before its body is
/// read or GitHub is asked anything about the package: anonymous callers are asked to sign in,
/// installation tokens (which only read) are refused.
fn anonymous_write(state: &AppState, route: &Route, caller: Caller) -> Result<Caller, ApiError> {
    if !is_write(route) || state.auth.github().is_none() {
        return Ok(caller);
    }
    match caller.identity {
        Identity::Anonymous => Err(ApiError::Unauthorized(
            "authentication required: put a GitHub token in .npmrc (//registry/:_authToken=...) or run npm login".into(),
        )),
        Identity::Installation => Err(crate::auth::installation_write_refused().into()),
        _ => Ok(caller),
    }
}
