//! From a request to a handler: the router, the public-URL prefix and base URL, the refusals that
//! need only the request line and headers (cross-site writes, oversized bodies, anonymous writes,
//! installation tokens' writes) and the audit record of every write.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};

use super::body::{declared_length, route_limit, too_large};
use super::routes::{self, Route, RouteError, RouteGroup, RouteTraits};
use super::{ApiError, AppState, RequestContext, audit, auth, metadata, publish, tarball};
use crate::auth::{Caller, Identity};
use crate::config::Config;
use crate::domain::PackageName;

/// Builds the router serving `groups`: each Lambda function passes its own group. The local
/// server's listener calls the same dispatch without axum's router in front (`Dispatcher`).
pub fn router(state: Arc<AppState>, groups: &[RouteGroup]) -> Router {
    let dispatcher = Dispatcher::new(state, groups);
    Router::new().fallback(move |request: Request| {
        let dispatcher = dispatcher.clone();
        async move {
            let prefix = dispatcher.public_prefix.as_deref();
            dispatch(&dispatcher.state, &dispatcher.groups, prefix, request).await
        }
    })
}

/// The application as one call per request: `router`'s work without the router. Every request
/// goes to the router's fallback anyway; its matching, boxing and extraction cost a warm read a
/// tenth of its instructions. The local server's listener holds one.
#[derive(Clone)]
pub struct Dispatcher {
    state: Arc<AppState>,
    groups: Arc<[RouteGroup]>,
    /// The configured public URL's path, parsed once (see `path_prefix`).
    public_prefix: Option<Arc<str>>,
}

impl Dispatcher {
    /// Dispatches to the handlers of `groups`.
    pub fn new(state: Arc<AppState>, groups: &[RouteGroup]) -> Self {
        let public_prefix = state
            .config
            .server
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| Arc::from(u.path().trim_end_matches('/')));
        Self {
            state,
            groups: groups.into(),
            public_prefix,
        }
    }

    /// Answers `request` exactly as `router` does, with what axum adds to a handler's answer: a
    /// `Content-Length` when the body's size is known, no body for `HEAD` (nor for a success to
    /// `CONNECT`, which no route gives).
    pub async fn call(self, request: Request) -> Response {
        let method = request.method().clone();
        let prefix = self.public_prefix.as_deref();
        let mut response = dispatch(&self.state, &self.groups, prefix, request).await;
        if method == Method::CONNECT && response.status().is_success() {
            if response.headers().contains_key(header::CONTENT_LENGTH)
                || response.headers().contains_key(header::TRANSFER_ENCODING)
                || response.body().size_hint().lower() != 0
            {
                *response.body_mut() = Body::empty();
            }
            return response;
        }
        if !response.headers().contains_key(header::CONTENT_LENGTH)
            && let Some(size) = response.body().size_hint().exact()
            && !hyper_writes_length(&method, response.status(), size)
        {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        if method == Method::HEAD {
            *response.body_mut() = Body::empty();
        }
        response
    }
}

/// Set by the Lambda adapter (never by clients) to the API Gateway stage's path, e.g. `/prod`.
pub(crate) const BASE_PATH_HEADER: &str = "x-registry-base-path";

fn forwarded_base_path(headers: &HeaderMap) -> &str {
    headers
        .get(BASE_PATH_HEADER)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// Whether hyper, sending a body of `size` bytes without a `Content-Length` in the map, writes
/// the very line axum would have put there (`content-length: N`, after the other headers): then
/// it need not be formatted into a header value first. Not for `HEAD` (whose body is dropped
/// below), an empty body, or a status that has no length.
fn hyper_writes_length(method: &Method, status: axum::http::StatusCode, size: u64) -> bool {
    use axum::http::StatusCode;
    size > 0
        && *method != Method::HEAD
        && !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// The base URL links point at: the configured public URL, or (on Lambda, where it is not
/// known in advance) the request's host and stage.
fn base_url(config: &Config, headers: &HeaderMap) -> String {
    if let Some(url) = &config.server.public_url {
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

/// The path prefix routes must ignore: the public URL's path (`/npm` in `https://host/npm`),
/// parsed once into `public_prefix`, or the stage path the Lambda adapter passes on.
fn path_prefix<'a>(public_prefix: Option<&'a str>, headers: &'a HeaderMap) -> &'a str {
    match public_prefix {
        Some(prefix) => prefix,
        None => forwarded_base_path(headers).trim_end_matches('/'),
    }
}

async fn dispatch(
    state: &AppState,
    groups: &[RouteGroup],
    public_prefix: Option<&str>,
    request: Request,
) -> Response {
    // Only the request log reads the clock.
    let started = tracing::enabled!(tracing::Level::INFO).then(std::time::Instant::now);
    let method = request.method().clone();
    // The URI's parts are shared buffers: this copies no bytes, and keeps the path for the log
    // once the request has gone to its handler.
    let uri = request.uri().clone();
    let raw_path = uri.path();
    let prefix = path_prefix(public_prefix, request.headers());
    let path = match raw_path.strip_prefix(prefix) {
        Some(rest) if !prefix.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => raw_path,
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let resolved = match routes::resolve(&method, path) {
        Ok(route) => Resolved::Route(route),
        Err(RouteError::Rejected(rejected)) => Resolved::Rejected(rejected),
        Err(e) => Resolved::Unknown(e),
    };
    let mut response = serve(state, groups, resolved, path_and_query, request).await;
    // An error may be answered before the body was read; the connection then cannot carry
    // another request, so tell the client instead of letting it reuse a closing connection.
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(started) = started {
        tracing::info!(
            method = %method,
            path = %logged_path(raw_path),
            status = response.status().as_u16(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request"
        );
    }
    response
}

/// The path as the request log shows it: a token revocation's path may hold a whole token
/// (`npm token revoke <token>`).
fn logged_path(raw_path: &str) -> std::borrow::Cow<'_, str> {
    match raw_path.find("/-/npm/v1/tokens/token/") {
        Some(at) => format!("{}/-/npm/v1/tokens/token/<redacted>", &raw_path[..at]).into(),
        None => raw_path.into(),
    }
}

/// What the path resolved to.
enum Resolved {
    /// A route, its parameters valid.
    Route(Route),
    /// A route whose parameter is not valid: refused as that route would be, then for it.
    Rejected(routes::Rejected),
    /// Nothing this registry answers.
    Unknown(RouteError),
}

/// Answers a resolved request: refusals that need only the request line and headers, the
/// caller, the handler, then the audit record of a write.
async fn serve(
    state: &AppState,
    groups: &[RouteGroup],
    resolved: Resolved,
    path_and_query: String,
    request: Request,
) -> Response {
    let traits = match &resolved {
        Resolved::Route(route) => route.traits(),
        Resolved::Rejected(rejected) => rejected.traits,
        Resolved::Unknown(e) => return ApiError::from(e.clone()).into_response(),
    };
    if !groups.contains(&traits.group) {
        return ApiError::NotFound("not found".into()).into_response();
    }
    let (parts, body) = request.into_parts();
    let audited = audited_write(&resolved);
    let caller = match admit(state, traits, &parts.method, &parts.headers).await {
        Ok(caller) => caller,
        Err(refusal) => return refused(state, audited, &parts.headers, refusal).await,
    };
    let ctx = RequestContext {
        body_limit: traits.body.map_or(0, |limit| route_limit(state, limit)),
        base_url: base_url(&state.config, &parts.headers),
        headers: parts.headers,
        path_and_query,
        caller,
        audit: audit::AuditNote::default(),
    };
    let result = match resolved {
        Resolved::Route(route) => handle(state, &ctx, route, body).await,
        Resolved::Rejected(rejected) => Err(ApiError::from(RouteError::Rejected(rejected))),
        Resolved::Unknown(e) => Err(ApiError::from(e)),
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
        Box::pin(audit::record(state, events)).await;
    }
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Whether the request is a write the audit log keeps, and if so its package and what it does
/// unless the handler says more (a refused path parameter: the write it asked for).
fn audited_write(resolved: &Resolved) -> Option<(Option<PackageName>, audit::AuditEntry)> {
    match resolved {
        Resolved::Route(route) => audit::audited(route),
        Resolved::Rejected(rejected) => Some(audit::audited_rejection(rejected)),
        Resolved::Unknown(_) => None,
    }
}

/// Answers a request `admit` refused. A write refused because its token is an installation's
/// is recorded as any refused write of an identified caller is (the caller, the route's
/// package and action; nothing from the body, which is never read): the answer is the same
/// whether or not it is recorded.
async fn refused(
    state: &AppState,
    audited: Option<(Option<PackageName>, audit::AuditEntry)>,
    headers: &HeaderMap,
    refusal: Refusal,
) -> Response {
    let Refusal {
        error,
        installation,
    } = refusal;
    if let (Some((package, default)), Some(installation)) = (audited, installation) {
        let caller = match installation {
            InstallationWrite::Identified(caller) => Some(*caller),
            // Refused by its prefix before anything was asked; identified now for the record
            // alone, as a read with it would be (a cached answer, else GitHub's `GET /user`).
            // A token GitHub does not know, or no answer, is nobody known: not recorded.
            InstallationWrite::ByPrefix => state.auth.caller(headers, false).await.ok(),
        };
        if let Some(caller) = caller {
            let events = audit::events(
                package.as_ref(),
                default,
                &audit::AuditNote::default(),
                &caller,
                audit::refused_outcome(&error),
                chrono::Utc::now(),
            );
            Box::pin(audit::record(state, events)).await;
        }
    }
    error.into_response()
}

/// Why `admit` refused a request.
struct Refusal {
    error: ApiError,
    /// Set when the refused request is a write with an installation token, which the audit
    /// log keeps for identified callers.
    installation: Option<InstallationWrite>,
}

/// How a write with an installation token was told from others.
enum InstallationWrite {
    /// By the token's `ghs_` prefix alone: the caller is not identified yet.
    ByPrefix,
    /// By GitHub's answer for the token: the caller.
    Identified(Box<Caller>),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            error,
            installation: None,
        }
    }
}

impl From<crate::auth::AuthError> for Refusal {
    fn from(error: crate::auth::AuthError) -> Self {
        ApiError::from(error).into()
    }
}

/// Each group's handler gets its own routes.
async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: Route,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // Writes and sign-ins are boxed: their futures are the largest, and every read's future
    // would otherwise be as large and be copied as such.
    match route {
        Route::Metadata(route) => metadata::handle(state, ctx, route, body).await,
        Route::Publish(route) => Box::pin(publish::handle(state, ctx, route, body)).await,
        Route::Tarball(route) => tarball::handle(state, ctx, route).await,
        Route::Auth(route) => Box::pin(auth::handle(state, ctx, route, body)).await,
    }
}

/// The caller, once the refusals that need nothing but the request line and headers have
/// passed: no GitHub call, no store read, no body byte is spent on those.
async fn admit(
    state: &AppState,
    traits: RouteTraits,
    method: &axum::http::Method,
    headers: &HeaderMap,
) -> Result<Caller, Refusal> {
    // A web page's form posts (sign-out) come from the registry's own pages: same-origin.
    let own_page = traits.web
        && headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|site| site == "same-origin");
    if !own_page && let Some(refusal) = cross_site_write(method, headers) {
        return Err(refusal.into());
    }
    if let Some(limit) = traits.body.map(|limit| route_limit(state, limit))
        && declared_length(headers).is_some_and(|len| len > limit as u64)
    {
        return Err(too_large(limit).into());
    }
    // Logging in must work whatever stale token .npmrc still holds; the exchange's bearer is
    // an OIDC ID token, not a credential of this registry.
    if traits.signs_in {
        return Ok(Caller::anonymous());
    }
    // A web page's caller is the browser's session, whatever else it sends; a session that no
    // longer holds (expired, signed out) is nobody, so the page offers to sign in again.
    if traits.web {
        return Ok(web_caller(state, headers).await);
    }
    // An installation token never writes: refused by its prefix, before GitHub is asked who it
    // is (one that GitHub has to name is refused in `anonymous_write`).
    if traits.writes
        && state.auth.github().is_some()
        && crate::auth::bears_installation_token(headers)
    {
        return Err(Refusal {
            error: crate::auth::installation_write_refused().into(),
            installation: Some(InstallationWrite::ByPrefix),
        });
    }
    let caller = state.auth.caller(headers, traits.writes).await?;
    anonymous_write(state, traits, caller)
}

/// The caller of a web page: the session cookie's registry token, or anonymous.
async fn web_caller(state: &AppState, headers: &HeaderMap) -> Caller {
    let Some(session) =
        super::web_auth::cookie(headers, super::web_auth::SESSION_COOKIE).filter(|s| !s.is_empty())
    else {
        return Caller::anonymous();
    };
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {session}")) else {
        return Caller::anonymous();
    };
    let mut as_bearer = HeaderMap::new();
    as_bearer.insert(header::AUTHORIZATION, bearer);
    state
        .auth
        .caller(&as_bearer, false)
        .await
        .unwrap_or_else(|_| Caller::anonymous())
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
        .is_some_and(|v| {
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
        });
    if form_like || matches!(site, "cross-site" | "same-site") {
        return Some(ApiError::Forbidden(
            "writes must be sent as JSON (Content-Type: application/json) and not from a web page"
                .into(),
        ));
    }
    None
}

/// GitHub mode: a write needs a caller who may write at all, and says so before its body is
/// read or GitHub is asked anything about the package: anonymous callers are asked to sign in,
/// installation tokens (which only read) are refused.
fn anonymous_write(
    state: &AppState,
    traits: RouteTraits,
    caller: Caller,
) -> Result<Caller, Refusal> {
    if !traits.writes || state.auth.github().is_none() {
        return Ok(caller);
    }
    match caller.identity {
        Identity::Anonymous => Err(ApiError::Unauthorized(
            "authentication required: put a GitHub token in .npmrc (//registry/:_authToken=...) or run npm login".into(),
        )
        .into()),
        Identity::Installation => Err(Refusal {
            error: crate::auth::installation_write_refused().into(),
            installation: Some(InstallationWrite::Identified(Box::new(caller))),
        }),
        _ => Ok(caller),
    }
}
