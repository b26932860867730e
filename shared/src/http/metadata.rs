//! Metadata route group: packuments, single versions, dist-tag reads, ping, readiness and audit.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::Digest;

use std::sync::Arc;

use super::incremental::Built;
use super::rendered::{Rendered, View, cache_headers, if_none_match};
use super::routes::MetadataRoute;
use super::{ApiError, AppState, RequestContext, json_response};
use crate::auth::Action;
use crate::domain::packument;
use crate::domain::{
    DistTag, LiveVersion, PackageDocument, PackageName, PackageRecord, VersionRecord, VersionState,
};

/// Handles a metadata route.
pub async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: MetadataRoute,
) -> Result<Response, ApiError> {
    match route {
        MetadataRoute::Ping => Ok(json_response(StatusCode::OK, &json!({}))),
        MetadataRoute::Ready => Ok(ready(state).await),
        MetadataRoute::AdvisoriesBulk | MetadataRoute::AuditsQuick => {
            Ok(json_response(StatusCode::OK, &json!({})))
        }
        MetadataRoute::Search => Err(ApiError::NotImplemented(
            "search is not supported by this registry yet".into(),
        )),
        MetadataRoute::Packument { name } => packument(state, ctx, &name).await,
        MetadataRoute::VersionOrTag { name, spec } => {
            version_or_tag(state, ctx, &name, &spec).await
        }
        MetadataRoute::DistTags { name } => dist_tags(state, ctx, &name).await,
        MetadataRoute::Visibility { name } => super::oidc::visibility(state, ctx, &name).await,
    }
}

/// `GET /-/ready`: 200 while storage takes writes; else 503 saying what is wrong, since when
/// and where (reads may still work: `/-/ping` says only that the process answers).
async fn ready(state: &AppState) -> Response {
    let health = state.metadata.health().await;
    let mut body = json!({ "storage": health.state });
    if let Some(since) = health.since {
        body["since"] = json!(since.to_rfc3339());
    }
    if let Some(location) = &health.location {
        body["data_dir"] = json!(location);
    }
    if health.state == crate::storage::StorageState::Ok {
        return json_response(StatusCode::OK, &body);
    }
    let (what, code) = match health.state {
        crate::storage::StorageState::Full => (
            "storage is full: writes are refused until space is freed",
            super::error::ErrorCode::StorageFull,
        ),
        _ => ("storage has failed", super::error::ErrorCode::StorageFailed),
    };
    let place = health
        .location
        .map(|l| format!(" (data directory {l})"))
        .unwrap_or_default();
    let detail = health.detail.map(|d| format!(": {d}")).unwrap_or_default();
    body["error"] = json!(format!("{what}{place}{detail}"));
    body["code"] = json!(code.as_str());
    json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
}

/// Serialises a document with a strong ETag and answers 304 when the client already has it.
fn cached_json(
    ctx: &RequestContext,
    value: &impl serde::Serialize,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&body)[..16]));
    let matches = if_none_match(&ctx.headers, |t| t == etag.as_bytes());
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
    cache_headers(headers);
    Ok(response)
}

/// The packument, from the rendered cache when it holds the package's current revision: then a
/// read is one small record lookup (which also authorises) and no JSON work at all. Otherwise the
/// kept pieces are patched with the versions the writes since touched, or, without pieces (or
/// too far behind), the document is read and built whole. One build per package and view at a
/// time; other packages build side by side, within `REGISTRY_RENDER_BYTES_IN_FLIGHT`.
async fn packument(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<Response, ApiError> {
    let view = View::requested(&ctx.headers);
    let cache = &state.packuments;
    let kept = cache.kept(name, view, &ctx.base_url);
    // Nothing kept for this view: the document will be needed, so the store may fetch it with
    // the record, unless a build under way may be the one this reader needs.
    let read = if kept.is_none() && !cache.building(name, view, &ctx.base_url) {
        state.views.package_and_document(name).await?
    } else {
        state.views.package(name).await?.map(|p| (p, None))
    };
    let Some((mut package, prefetched)) = read else {
        return state.not_here(name, ctx).await;
    };
    state
        .authorize(ctx, name, Some(&package), Action::Read)
        .await?;
    if let Some(rendered) = kept.as_ref().filter(|r| r.revision == package.revision) {
        return Ok(rendered.respond(&ctx.headers));
    }
    let builder = cache.builder(name, view, &ctx.base_url);
    let mut built = builder.lock().await;
    // Whoever held the builder may have just built this very revision.
    if let Some(rendered) = cache.get(name, view, &ctx.base_url, package.revision) {
        return Ok(rendered.respond(&ctx.headers));
    }
    let patched = match built.as_mut() {
        Some(pieces) => patch(state, name, &package, pieces).await?,
        None => false,
    };
    if !patched {
        // A document takes about three times its rendering while it is decoded and built.
        let estimate = kept.map_or(1 << 20, |r| 3 * r.size());
        let _permit = cache.build_permit(estimate).await;
        *built = build(state, name, view, &ctx.base_url, &mut package, prefetched).await?;
    }
    let Some(pieces) = built.as_ref().filter(|p| !p.is_empty()) else {
        return state.not_here(name, ctx).await;
    };
    if package.unpublished.is_some() {
        return state.not_here(name, ctx).await;
    }
    let rendered = Arc::new(Rendered::join(pieces, &package)?);
    cache.insert(
        name,
        &ctx.base_url,
        rendered.clone(),
        &builder,
        pieces.size(),
    );
    Ok(rendered.respond(&ctx.headers))
}

/// Brings `pieces` up to `package`'s revision by applying the versions the writes since touched,
/// if the record still lists them all; `false` if it cannot (the caller builds anew).
async fn patch(
    state: &AppState,
    name: &PackageName,
    package: &PackageRecord,
    pieces: &mut Built,
) -> Result<bool, ApiError> {
    let Some(touched) = package
        .touched
        .after(pieces.revision)
        .filter(|_| pieces.revision < package.revision)
    else {
        return Ok(false);
    };
    let mut changed = Vec::with_capacity(touched.len());
    for version in touched {
        let record = state.metadata.version(name, version).await?;
        changed.push((version.clone(), record));
    }
    pieces
        .apply(package, &changed)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(wanted) = pieces.latest_wanted(package) {
        let record = match changed.iter().find(|(v, _)| *v == wanted) {
            Some((_, record)) => record.clone(),
            None => state.metadata.version(name, &wanted).await?,
        };
        // Gone since the record was read: a later read sees a newer revision and builds.
        let Some(VersionRecord {
            state: VersionState::Live(live),
            ..
        }) = record
        else {
            return Ok(false);
        };
        let readme = readme(state, name, &wanted, &live).await?;
        pieces.set_latest(wanted, *live, readme);
    }
    Ok(true)
}

/// The README of `version`, if it has one.
async fn readme(
    state: &AppState,
    name: &PackageName,
    version: &semver::Version,
    live: &LiveVersion,
) -> Result<Option<String>, ApiError> {
    Ok(if live.has_readme == Some(false) {
        None
    } else {
        state.metadata.readme(name, version).await?
    })
}

/// Builds `view` of the whole document at (or after) `package`'s revision, moving `package` to
/// the document's record when it is newer; `None` when there is no such package any more.
async fn build(
    state: &AppState,
    name: &PackageName,
    view: View,
    base_url: &str,
    package: &mut Arc<PackageRecord>,
    prefetched: Option<PackageDocument>,
) -> Result<Option<Built>, ApiError> {
    let doc = match prefetched {
        Some(doc) => Some(doc),
        None => state.metadata.document_from(package).await?,
    };
    let Some(doc) = doc else {
        return Ok(None);
    };
    // The document may be newer than the record read (a write since; on AWS, a view up to T
    // old): it is joined with its own record, whose dist-tags name its versions, and the view
    // moves up to it, so the next read finds this build current.
    if doc.package.revision > package.revision {
        *package = Arc::new(doc.package.clone());
        state.views.advance(&doc.package);
    }
    // Only the full view shows a README, and only the latest version's: read apart, so no
    // other view (and no other version) ever decodes one.
    let readme = match (view, packument::latest(&doc)) {
        (View::Full, Some((version, live))) => readme(state, name, version, live).await?,
        _ => None,
    };
    let base_url = base_url.to_string();
    // Built off the async workers (thousands of versions take milliseconds), and the decoded
    // document dropped there too: it is the bulk of a build's memory.
    let built =
        tokio::task::spawn_blocking(move || Built::from_document(&doc, view, &base_url, readme))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Some(built))
}

async fn version_or_tag(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    spec: &str,
) -> Result<Response, ApiError> {
    // The package record and the one version record: never every version of the package.
    let Some(package) = state.viewed_package(name).await? else {
        return state.not_here(name, ctx).await;
    };
    state
        .authorize(ctx, name, Some(&package), Action::Read)
        .await?;
    let version =
        if let Ok(v) = semver::Version::parse(spec) {
            v
        } else {
            let tag = DistTag::parse(spec).map_err(|_| {
                ApiError::NotFound(format!(
                    "'{spec}' is neither a version nor a dist-tag of {name}"
                ))
            })?;
            package.dist_tags.get(&tag).cloned().ok_or_else(|| {
                ApiError::NotFound(format!("dist-tag '{tag}' not found for {name}"))
            })?
        };
    let record = state
        .metadata
        .version(name, &version)
        .await?
        .ok_or_else(|| ApiError::version_not_found(name, &version))?;
    match &record.state {
        VersionState::Live(live) => {
            let manifest = packument::VersionManifest {
                base_url: &ctx.base_url,
                name,
                version: &version,
                live,
            };
            cached_json(ctx, &manifest, "application/json")
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
    // The tags live in the package record: no version is read.
    let Some(package) = state.viewed_package(name).await? else {
        return Err(state.missing(ctx, name).await);
    };
    state
        .authorize(ctx, name, Some(&package), Action::Read)
        .await?;
    let tags: serde_json::Map<String, serde_json::Value> = package
        .dist_tags
        .iter()
        .map(|(t, v)| (t.to_string(), json!(v.to_string())))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::Value::Object(tags),
    ))
}
