//! Names not stored here, served through the pull-through cache (`upstream::Proxy`): their
//! packuments, versions and tarballs; the origin check of a publish; npm's audit, forwarded
//! without internal names; and the admin's origin route.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::error::ErrorCode;
use super::rendered::{View, cache_headers, if_none_match};
use super::routes::TarballFile;
use super::{ApiError, AppState, RequestContext, json_response, redirect};
use crate::domain::{DistTag, PackageName};
use crate::storage::TarballRead;
use crate::upstream::origin::Origin;
use crate::upstream::{Freshness, Proxy, ProxyError};

/// What a client asked of a name not stored here.
pub(crate) enum Wanted<'a> {
    /// The packument.
    Packument,
    /// One version's manifest, by version or dist-tag.
    VersionOrTag(&'a str),
    /// A tarball.
    Tarball(&'a TarballFile),
    /// A version's attestations (`/-/npm/v1/attestations/NAME@VERSION`).
    Attestations(&'a semver::Version),
}

/// The seconds since the upstream last answered for a served document.
const AGE: &str = "age";
/// How the document was obtained: `HIT`, `MISS`, `REVALIDATED` or `STALE`.
const CACHE_STATUS: &str = "x-upstream-cache";

/// Serves `wanted` of `name` through the cache: only for callers who may read this registry
/// at all, never for a name with a record here, and never what an admin made internal.
pub(crate) async fn serve(
    state: &AppState,
    proxy: &Proxy,
    ctx: &RequestContext,
    name: &PackageName,
    wanted: Wanted<'_>,
) -> Result<Response, ApiError> {
    if proxy.is_loop(&ctx.headers) {
        return Err(ApiError::coded(
            ErrorCode::UpstreamLoop,
            format!(
                "{name}: this request already passed through this registry (Via); the upstream configuration loops"
            ),
        ));
    }
    if !super::search::may_browse(state, ctx) || state.views.package(name).await?.is_some() {
        return Err(state.missing(ctx, name).await);
    }
    let result = match wanted {
        Wanted::Packument => {
            let view = View::requested(&ctx.headers);
            proxy
                .document(name, view == View::Abbreviated, &ctx.base_url, via(ctx))
                .await
                .map(|doc| document_response(ctx, view, doc))
        }
        Wanted::VersionOrTag(spec) => {
            match proxy.document(name, false, &ctx.base_url, via(ctx)).await {
                Ok(doc) => return one_version(name, spec, &doc.body),
                Err(e) => Err(e),
            }
        }
        Wanted::Tarball(file) => {
            let Some(version) = file.version() else {
                return Err(ApiError::NotFound(format!(
                    "'{file}' is not a tarball of {name}"
                )));
            };
            match proxy.tarball(name, version, via(ctx)).await {
                Ok(TarballRead::Redirect(url)) => Ok(redirect(&url)),
                Ok(TarballRead::Bytes { len, body }) => Ok(super::tarball::tarball_response(
                    Body::from_stream(body),
                    HeaderValue::from(len),
                    None,
                )),
                Err(ProxyError::NoSuchVersion) => {
                    return Err(ApiError::version_not_found(name, version));
                }
                // Too large to fetch while the client waits: it is being kept meanwhile.
                Err(ProxyError::FetchElsewhere(url)) => Ok(redirect(&url)),
                Err(e) => Err(e),
            }
        }
        Wanted::Attestations(version) => match proxy.attestations(name, version, via(ctx)).await {
            Ok((body, freshness)) => Ok(attestations_response(body, freshness)),
            Err(ProxyError::NoSuchVersion) => {
                return Err(ApiError::version_not_found(name, version));
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(response) => Ok(response),
        Err(ProxyError::NotFound) => Err(state.missing(ctx, name).await),
        Err(e) => Err(e.into()),
    }
}

/// The request's `Via`, continued on the requests it causes (the loop guard).
fn via(ctx: &RequestContext) -> Option<&str> {
    ctx.headers.get(header::VIA).and_then(|v| v.to_str().ok())
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        match e {
            ProxyError::NotFound => ApiError::NotFound("not found".into()),
            ProxyError::NoSuchVersion => ApiError::coded(ErrorCode::VersionNotFound, e.to_string()),
            ProxyError::NoAttestations => ApiError::coded(ErrorCode::NotFound, e.to_string()),
            ProxyError::AttestationsMismatch { .. } => {
                ApiError::coded(ErrorCode::UpstreamIntegrity, e.to_string())
            }
            ProxyError::Unavailable { .. } => {
                ApiError::coded(ErrorCode::UpstreamUnavailable, e.to_string())
            }
            ProxyError::Integrity { .. } => {
                ApiError::coded(ErrorCode::UpstreamIntegrity, e.to_string())
            }
            ProxyError::FetchElsewhere(url) => {
                ApiError::Internal(format!("unhandled redirect to {url}"))
            }
            ProxyError::Store(e) => e.into(),
        }
    }
}

/// A served document: `304` when the client holds it, else the JSON with its age.
fn document_response(
    ctx: &RequestContext,
    view: View,
    doc: crate::upstream::ServedDocument,
) -> Response {
    // A strong ETag names one representation: the gzip bytes get their own, as for packuments
    // published here.
    let gzip = super::rendered::accepts_gzip(&ctx.headers);
    let tag = if gzip {
        format!("{}-gzip\"", doc.etag.trim_end_matches('"'))
    } else {
        doc.etag.clone()
    };
    let etag = HeaderValue::from_str(&tag).ok();
    let mut response = if if_none_match(&ctx.headers, |t| t == tag.as_bytes()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(if gzip { doc.gzip } else { doc.body }));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(view.content_type()),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let headers = response.headers_mut();
    cache_headers(headers);
    if let Some(etag) = etag {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(AGE, HeaderValue::from(doc.age));
    headers.insert(
        CACHE_STATUS,
        HeaderValue::from_static(doc.freshness.as_str()),
    );
    if doc.freshness == Freshness::Stale {
        tracing::info!(age = doc.age, "served a stale upstream document");
    }
    response
}

/// A proxied version's attestations, as the upstream answered them, saying whether they were
/// kept (`HIT`) or fetched for this request (`MISS`).
fn attestations_response(body: bytes::Bytes, freshness: Freshness) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cache_headers(headers);
    headers.insert(CACHE_STATUS, HeaderValue::from_static(freshness.as_str()));
    response
}

/// `GET /name/spec` of an upstream name: the version's manifest from the served document.
fn one_version(name: &PackageName, spec: &str, body: &[u8]) -> Result<Response, ApiError> {
    let doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let version = if semver::Version::parse(spec).is_ok() {
        spec.to_string()
    } else {
        let tag = DistTag::parse(spec).map_err(|_| {
            ApiError::NotFound(format!(
                "'{spec}' is neither a version nor a dist-tag of {name}"
            ))
        })?;
        doc.get("dist-tags")
            .and_then(|t| t.get(tag.as_str()))
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::NotFound(format!("dist-tag '{tag}' not found for {name}")))?
            .to_string()
    };
    let manifest = doc
        .get("versions")
        .and_then(|v| v.get(&version))
        .ok_or_else(|| ApiError::version_not_found(name, &version))?;
    let mut response = json_response(StatusCode::OK, manifest);
    cache_headers(response.headers_mut());
    Ok(response)
}

/// Refuses a publish of a name whose origin is upstream (installed through the cache, or set
/// so by an admin): the upstream's package must never be confused with one published here.
pub(crate) async fn check_publish_origin(
    state: &AppState,
    name: &PackageName,
) -> Result<(), ApiError> {
    let Some(proxy) = &state.upstream else {
        return Ok(());
    };
    if !state.scopes.is_upstream(name) {
        return Ok(());
    }
    let published = state.metadata.package(name).await?.is_some();
    let decision = proxy.origin(name, false, published).await?;
    if decision.origin == Some(Origin::Upstream) {
        return Err(ApiError::coded(
            ErrorCode::OriginUpstream,
            format!(
                "{name} is an upstream package here (installed through this registry's cache of the upstream registry): publishing it here is refused so that it cannot be confused with the upstream's. An admin can make it internal: registry-server origin set {name} internal"
            ),
        ));
    }
    Ok(())
}

/// The most bytes an audit request's body may inflate to.
const MAX_AUDIT_BYTES: u64 = 32 << 20;

/// `POST /-/npm/v1/security/advisories/bulk`: the names of internal packages and of scopes with
/// an upstream of their own removed (the default upstream must not learn a partner's names;
/// they are not forwarded to their own upstream either), the rest forwarded to the default
/// upstream and its answer relayed. With nothing left to ask, `{}`.
pub(crate) async fn advisories(
    state: &AppState,
    ctx: &RequestContext,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(proxy) = &state.upstream else {
        return Ok(json_response(StatusCode::OK, &json!({})));
    };
    if proxy.is_loop(&ctx.headers) {
        return Err(ApiError::coded(
            ErrorCode::UpstreamLoop,
            "this audit request already passed through this registry (Via); the upstream configuration loops",
        ));
    }
    let body = super::body::read_body(state, body, ctx).await?;
    let (bytes, _in_flight) = body.into_parts();
    let gzipped = ctx
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let bytes = if gzipped {
        crate::upstream::client::gunzip(&bytes, MAX_AUDIT_BYTES)
            .map_err(|e| ApiError::BadRequest(format!("audit body: {e}")))?
    } else {
        bytes
    };
    let asked: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!("audit body is not a JSON object of names: {e}"))
    })?;
    let kept: Vec<(String, Value)> = futures_util::stream::iter(asked)
        .map(|(name, versions)| async move {
            let Ok(parsed) = PackageName::parse(&name) else {
                return Ok(None);
            };
            let forwarded =
                proxy.from_default(&parsed) && !is_internal(state, proxy, &parsed).await?;
            Ok::<_, ApiError>(forwarded.then_some((name, versions)))
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()?;
    if kept.is_empty() {
        return Ok(json_response(StatusCode::OK, &json!({})));
    }
    let forwarded = Value::Object(kept.into_iter().collect());
    match proxy.advisories(&forwarded, via(ctx)).await {
        Ok((status, body)) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        Err(ProxyError::NotFound) => Ok(json_response(StatusCode::OK, &json!({}))),
        Err(e) => Err(ApiError::coded(
            ErrorCode::UpstreamUnavailable,
            format!("cannot audit now: {e}; retry later"),
        )),
    }
}

/// Whether `name` is internal: in a served scope, published here, or made internal by an
/// admin. Such names never leave this registry.
async fn is_internal(
    state: &AppState,
    proxy: &Proxy,
    name: &PackageName,
) -> Result<bool, ApiError> {
    if !state.scopes.is_upstream(name) || !proxy.serves(name) {
        return Ok(true);
    }
    if state.views.package(name).await?.is_some() {
        return Ok(true);
    }
    Ok(proxy
        .origin_setting(name)
        .await?
        .is_some_and(|s| s.origin == Origin::Internal))
}

/// `GET` and `PUT /-/package/NAME/origin`: a name's origin and why; an admin's setting of it
/// (`{"origin": "internal" | "upstream"}`), also before the name exists. Admins only in GitHub
/// mode (`REGISTRY_ADMINS`): the answer tells whether a name is published here.
pub(crate) async fn origin(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    set: Option<Body>,
) -> Result<Response, ApiError> {
    let Some(proxy) = &state.upstream else {
        return Err(ApiError::NotFound(
            "origin controls belong to the pull-through cache: this registry does not proxy an upstream (REGISTRY_UPSTREAM_MODE=proxy and REGISTRY_UPSTREAM)".into(),
        ));
    };
    let admin = match &ctx.caller.identity {
        _ if state.auth.github().is_none() => true,
        crate::auth::Identity::User(login) => state
            .config
            .upstream
            .admins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(login)),
        _ => false,
    };
    if !admin {
        return Err(ApiError::Forbidden(
            "a name's origin is for the registry's admins (REGISTRY_ADMINS) to read and set".into(),
        ));
    }
    let origin = match set {
        Some(body) => {
            #[derive(serde::Deserialize)]
            struct Set {
                origin: String,
            }
            let body = super::body::read_body(state, body, ctx).await?;
            let asked: Set = super::body::parse_json(body.bytes())?;
            let origin: Origin = asked.origin.parse().map_err(ApiError::BadRequest)?;
            ctx.audit.set(vec![
                super::audit::AuditEntry::new(crate::domain::audit::AuditAction::OriginSet)
                    .detail(format!("origin {origin}")),
            ]);
            Some(origin)
        }
        None => None,
    };
    let by = ctx.caller.identity.username().to_string();
    let body = decide_origin(state, proxy, name, origin, &by).await?;
    Ok(json_response(StatusCode::OK, &body))
}

/// Sets `name`'s origin (if `set`), then says what it is and why.
async fn decide_origin(
    state: &AppState,
    proxy: &Proxy,
    name: &PackageName,
    set: Option<Origin>,
    by: &str,
) -> Result<Value, ApiError> {
    let served_scope = !state.scopes.is_upstream(name);
    if let Some(origin) = set {
        if served_scope && origin == Origin::Upstream {
            return Err(ApiError::BadRequest(format!(
                "{name} is in a scope this registry serves: its origin is always internal"
            )));
        }
        let setting = crate::upstream::origin::OriginSetting {
            origin,
            set_by: by.to_string(),
            time: chrono::Utc::now(),
        };
        proxy.set_origin(name, &setting).await?;
        tracing::info!(package = %name, %origin, by, "origin set");
    }
    let published = state.metadata.package(name).await?.is_some();
    let decision = proxy.origin(name, served_scope, published).await?;
    let mut body =
        serde_json::to_value(&decision).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["name"] = json!(name.as_str());
    Ok(body)
}

/// `registry-server origin get|set NAME [internal|upstream]`, on this process's state: the
/// name's origin after the change, as the admin route answers it.
pub async fn origin_command(
    state: &AppState,
    name: &str,
    set: Option<&str>,
) -> Result<Value, String> {
    let name =
        PackageName::parse(name).map_err(|e| format!("'{name}' is not a package name: {e}"))?;
    let set = set.map(str::parse::<Origin>).transpose()?;
    let Some(proxy) = &state.upstream else {
        return Err("origin controls belong to the pull-through cache: set REGISTRY_UPSTREAM_MODE=proxy and REGISTRY_UPSTREAM".into());
    };
    decide_origin(
        state,
        proxy,
        &name,
        set,
        "operator (registry-server origin)",
    )
    .await
    .map_err(|e| e.to_string())
}
