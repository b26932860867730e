//! Metadata route group: packuments, single versions, dist-tag reads, ping and audit.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::Digest;

use super::{ApiError, AppState, RequestContext, Route, json_response};
use crate::auth::Action;
use crate::domain::packument::{self, ABBREVIATED_MEDIA_TYPE};
use crate::domain::{DistTag, PackageDocument, PackageName, VersionState};

/// Handles a metadata route.
pub async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: Route,
    _body: Body,
) -> Result<Response, ApiError> {
    match route {
        Route::Ping => Ok(json_response(StatusCode::OK, &json!({}))),
        Route::AdvisoriesBulk | Route::AuditsQuick => Ok(json_response(StatusCode::OK, &json!({}))),
        Route::Search => Err(ApiError::NotImplemented(
            "search is not supported by this registry yet".into(),
        )),
        Route::Packument(name) => packument(state, ctx, &name).await,
        Route::VersionOrTag(name, spec) => version_or_tag(state, ctx, &name, &spec).await,
        Route::DistTags(name) => dist_tags(state, ctx, &name).await,
        _ => Err(ApiError::NotFound("not found".into())),
    }
}

/// Loads a package that has something installable, or answers for one that does not.
pub async fn load_live(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<Result<PackageDocument, Response>, ApiError> {
    match state.metadata.document(name).await? {
        Some(doc) if !doc.is_empty() => Ok(Ok(doc)),
        _ => Ok(Err(state.not_here(name, ctx)?)),
    }
}

fn wants_abbreviated(ctx: &RequestContext) -> bool {
    ctx.headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(ABBREVIATED_MEDIA_TYPE))
}

/// Serialises a document with a strong ETag and answers 304 when the client already has it.
fn cached_json(
    ctx: &RequestContext,
    value: &serde_json::Value,
    content_type: &'static str,
    modified: Option<String>,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&body)[..16]));
    let matches = ctx
        .headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let headers = response.headers_mut();
    if !matches {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if let Some(Ok(v)) = modified.map(|m| HeaderValue::from_str(&m)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    // Private registry: clients may keep the document but must revalidate before using it.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding, Authorization"),
    );
    Ok(response)
}

async fn packument(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<Response, ApiError> {
    let doc = match load_live(state, ctx, name).await? {
        Ok(doc) => doc,
        Err(answer) => return Ok(answer),
    };
    state
        .authorize(ctx, name, Some(&doc.package), Action::Read)
        .await?;
    let modified = doc
        .package
        .modified
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if wants_abbreviated(ctx) {
        cached_json(
            ctx,
            &packument::abbreviated(&doc, &ctx.base_url),
            ABBREVIATED_MEDIA_TYPE,
            Some(modified),
        )
    } else {
        cached_json(
            ctx,
            &packument::full(&doc, &ctx.base_url),
            "application/json",
            Some(modified),
        )
    }
}

async fn version_or_tag(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    spec: &str,
) -> Result<Response, ApiError> {
    let doc = match load_live(state, ctx, name).await? {
        Ok(doc) => doc,
        Err(answer) => return Ok(answer),
    };
    state
        .authorize(ctx, name, Some(&doc.package), Action::Read)
        .await?;
    let version = match semver::Version::parse(spec) {
        Ok(v) => v,
        Err(_) => {
            let tag = DistTag::parse(spec).map_err(|_| {
                ApiError::NotFound(format!(
                    "'{spec}' is neither a version nor a dist-tag of {name}"
                ))
            })?;
            doc.package.dist_tags.get(&tag).cloned().ok_or_else(|| {
                ApiError::NotFound(format!("dist-tag '{tag}' not found for {name}"))
            })?
        }
    };
    let record = doc
        .versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| ApiError::NotFound(format!("version {version} of {name} not found")))?;
    match &record.state {
        VersionState::Live(live) => {
            let manifest = packument::version_manifest(&ctx.base_url, name, &version, live);
            cached_json(ctx, &manifest, "application/json", None)
        }
        VersionState::Unpublished { .. } => Err(ApiError::NotFound(format!(
            "version {version} of {name} was unpublished"
        ))),
    }
}

async fn dist_tags(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<Response, ApiError> {
    let doc = match load_live(state, ctx, name).await? {
        Ok(doc) => doc,
        Err(_) => return Err(ApiError::package_not_found(name)),
    };
    state
        .authorize(ctx, name, Some(&doc.package), Action::Read)
        .await?;
    let tags: serde_json::Map<String, serde_json::Value> = doc
        .package
        .dist_tags
        .iter()
        .map(|(t, v)| (t.to_string(), json!(v.to_string())))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::Value::Object(tags),
    ))
}
