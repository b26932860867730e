//! Metadata route group: packuments, single versions, dist-tag reads, ping, readiness and audit.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::Digest;

use std::sync::Arc;

use super::incremental::Built;
use super::rendered::{Rendered, View, cache_headers, if_none_match};
use super::routes::MetadataRoute;
use super::upstream::Wanted;
use super::{ApiError, AppState, RequestContext, json_response};
use crate::auth::Action;
use crate::domain::packument;
use crate::domain::{
    DistTag, LiveVersion, PackageDocument, PackageName, PackageRecord, VersionRecord, VersionState,
};
use crate::storage::{KeptSmall, RenderStore};

/// Handles a metadata route.
pub async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: MetadataRoute,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    match route {
        MetadataRoute::Ping => Ok(json_response(StatusCode::OK, &json!({}))),
        MetadataRoute::Ready => Ok(ready(state).await),
        MetadataRoute::AdvisoriesBulk => {
            Box::pin(super::upstream::advisories(state, ctx, body)).await
        }
        // npm asks this only when the bulk request failed; forwarding it would send the whole
        // tree, internal names included, so with an upstream it fails as the bulk one did.
        MetadataRoute::AuditsQuick if state.upstream.is_some() => Err(ApiError::coded(
            super::error::ErrorCode::UpstreamUnavailable,
            "cannot audit now: the upstream registry did not answer the bulk advisory request; retry later",
        )),
        MetadataRoute::AuditsQuick => Ok(json_response(StatusCode::OK, &json!({}))),
        MetadataRoute::Search => super::search::search(state, ctx).await,
        MetadataRoute::StarredByUser => super::stars::starred_by_user(state, ctx).await,
        MetadataRoute::SigningKeys => signing_keys(state).await,
        MetadataRoute::Attestations { name, version } => {
            attestations(state, ctx, &name, &version).await
        }
        MetadataRoute::Packument { name } => packument(state, ctx, &name).await,
        MetadataRoute::VersionOrTag { name, spec } => {
            version_or_tag(state, ctx, &name, &spec).await
        }
        MetadataRoute::DistTags { name } => dist_tags(state, ctx, &name).await,
        MetadataRoute::Visibility { name } => super::oidc::visibility(state, ctx, &name).await,
        MetadataRoute::Root
        | MetadataRoute::WebList
        | MetadataRoute::WebSearch
        | MetadataRoute::WebPackage { .. }
        | MetadataRoute::WebStatic { .. } => Box::pin(super::web::handle(state, ctx, route)).await,
    }
}

/// `GET /-/npm/v1/keys`: every key that ever signed a version here (an expired one still
/// verifies the versions published before its expiry), as npm's registry lists its own, and the
/// upstreams' keys, which signed the proxied versions. Public to everyone: keys tell nothing
/// about packages.
async fn signing_keys(state: &AppState) -> Result<Response, ApiError> {
    let keys = match state.kv.as_ref() {
        Some(kv) => crate::signing::keys(kv.as_ref()).await?,
        None => Vec::new(),
    };
    let mut listed: Vec<serde_json::Value> = keys
        .iter()
        .map(crate::domain::signing::PublicKey::listed)
        .collect();
    // Proxied versions carry their upstream's signatures: its keys verify them.
    // A key id is listed once, however many upstreams list it.
    if let Some(proxy) = &state.upstream {
        for key in proxy.signing_keys().await {
            if key.get("keyid").is_some() && !listed.iter().any(|k| k["keyid"] == key["keyid"]) {
                listed.push(key);
            }
        }
    }
    Ok(json_response(StatusCode::OK, &json!({ "keys": listed })))
}

/// `GET /-/npm/v1/attestations/NAME@VERSION`: `{attestations: [{predicateType, bundle}]}` as
/// npm's client reads it, for a version published here with provenance; to a caller who may not
/// read the package, the same answer as a missing one. npm asks the registry it installed from,
/// whatever host `dist.attestations.url` names: for a name not stored here, the upstream's
/// attestations through the pull-through cache (or a redirect to the upstream).
async fn attestations(
    state: &AppState,
    ctx: &RequestContext,
    name: &crate::domain::PackageName,
    version: &semver::Version,
) -> Result<Response, ApiError> {
    let Some(record) = state.published_package(name).await? else {
        return state
            .not_here(name, ctx, Wanted::Attestations(version))
            .await;
    };
    state
        .authorize(ctx, name, Some(&record), crate::auth::Action::Read)
        .await?;
    let facts = match state.metadata.version(name, version).await? {
        Some(crate::domain::VersionRecord {
            state: crate::domain::VersionState::Live(live),
            ..
        }) => live.dist.provenance.clone(),
        _ => None,
    };
    let bundle = match (facts.as_ref(), state.kv.as_ref()) {
        (Some(_), Some(kv)) => {
            kv.get(
                &super::publish::attestation_namespace(name),
                &version.to_string(),
            )
            .await?
        }
        _ => None,
    };
    let (Some(facts), Some(bundle)) = (facts, bundle) else {
        return Err(ApiError::coded(
            super::error::ErrorCode::NotFound,
            format!("{name}@{version} has no attestations"),
        ));
    };
    let bundle: serde_json::Value = serde_json::from_slice(&bundle)
        .map_err(|e| ApiError::Internal(format!("a kept provenance bundle: {e}")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "attestations": [{ "predicateType": facts.predicate_type, "bundle": bundle }] }),
    ))
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
    // the record, unless the store keeps renders (tried first) or a build under way may be the
    // one this reader needs.
    let prefetch =
        kept.is_none() && state.renders.is_none() && !cache.building(name, view, &ctx.base_url);
    // With renders kept by the store, a package not held here is read with its kept small
    // rendering, in one lookup's time: a first read after a start.
    let prefetch_kept =
        kept.is_none() && !state.views.keeps_views() && !cache.building(name, view, &ctx.base_url);
    let mut small_kept = None;
    let read = if prefetch {
        state.views.package_and_document(name).await?
    } else if let Some(renders) = state.renders.as_ref().filter(|_| prefetch_kept) {
        let key = render_key(view, &ctx.base_url);
        renders
            .package_and_small_render(name, &key, PREFETCH_RENDER_BYTES)
            .await?
            .map(|(package, small)| {
                small_kept = small;
                (Arc::new(package), None)
            })
    } else {
        state.views.package(name).await?.map(|p| (p, None))
    };
    let Some((mut package, prefetched)) = read else {
        return state.not_here(name, ctx, Wanted::Packument).await;
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
    let mut from_store = false;
    let mut permit = None;
    if built.is_none()
        && let Some(renders) = &state.renders
    {
        // What the store kept is read and patched within the in-flight budget, as a build is:
        // a big package's is megabytes.
        if let Some(bytes) = small_kept.take() {
            *built = kept_pieces(bytes, view, &ctx.base_url);
        } else {
            permit = cache.build_permit(kept_estimate(&package)).await;
            *built = kept_render(renders.as_ref(), name, view, &ctx.base_url).await;
        }
        from_store = built.is_some();
    }
    let revision_before = built.as_ref().map(|p| p.revision);
    let current = match built.as_mut() {
        Some(pieces) if !pieces.shows_up_to(&package) => false,
        Some(pieces) if pieces.revision == package.revision => true,
        Some(pieces) => patch(state, &package, pieces).await?,
        None => false,
    };
    if !current {
        from_store = false;
        // A document takes about three times its rendering while it is decoded and built.
        let estimate = kept.map_or(1 << 20, |r| 3 * r.size());
        // Given back before the build's is taken: one request never holds two.
        drop(permit.take());
        permit = cache.build_permit(estimate).await;
        *built = build(state, view, &ctx.base_url, &mut package, prefetched).await?;
    }
    drop(permit);
    // Nothing installable reads as missing, except a package that never had a version (npm
    // 1.x creates it empty before its first release): it shows `versions: {}` and its `_rev`.
    let Some(pieces) = built
        .as_ref()
        .filter(|p| !p.is_empty() || package.created_empty)
    else {
        return state.not_here(name, ctx, Wanted::Packument).await;
    };
    if package.unpublished.is_some() {
        return state.not_here(name, ctx, Wanted::Packument).await;
    }
    // Built anew, or brought up to date from what the store kept: kept again for the next
    // start, if it was worth keeping (a small package builds in well under a millisecond).
    let keep = !current || (from_store && revision_before != Some(pieces.revision));
    if keep
        && pieces.version_count() >= KEEP_RENDER_VERSIONS
        && let Some(renders) = &state.renders
    {
        keep_render(renders.clone(), name, view, &ctx.base_url, pieces);
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

/// Bytes a kept rendering takes per revision of its package, at most: a version's entry in
/// the full view, both as JSON and deflated, was about 1.7 KB in the scale benchmark's corpus
/// (5.2 MB kept for 3,080 versions), and a revision adds at most one version.
const KEPT_BYTES_PER_REVISION: usize = 2048;

/// The bytes of `package`'s kept rendering, read and patched, counted against
/// `REGISTRY_RENDER_BYTES_IN_FLIGHT` before it is read (its size is not known until then).
fn kept_estimate(package: &PackageRecord) -> usize {
    usize::try_from(package.revision)
        .unwrap_or(usize::MAX)
        .saturating_mul(KEPT_BYTES_PER_REVISION)
}

/// Kept renderings read with the package record at most this big (a small package's, a few
/// dozen versions): read outside `REGISTRY_RENDER_BYTES_IN_FLIGHT`, as the record is, since
/// what a bigger one takes is only known once its record is read.
const PREFETCH_RENDER_BYTES: usize = 32 * 1024;

/// Packages whose live versions' manifests add up to at most this many bytes are built on the
/// async worker that read them (a few dozen versions of usual size).
const BUILD_IN_PLACE_BYTES: usize = 32 * 1024;

/// Packages with at least this many versions have their renders kept by the store between
/// runs: below it, building from the records takes about as long as reading what was kept.
const KEEP_RENDER_VERSIONS: usize = 100;

/// Where the store keeps `view` under `base_url`.
fn render_key(view: View, base_url: &str) -> String {
    let view = match view {
        View::Full => "full",
        View::Abbreviated => "abbreviated",
    };
    format!("{view} {base_url}")
}

/// The pieces the store kept for `view` under `base_url`, if it kept any it can read back. A
/// failure to read them is logged and costs a build, not the request.
async fn kept_render(
    renders: &dyn RenderStore,
    name: &PackageName,
    view: View,
    base_url: &str,
) -> Option<Built> {
    match renders.kept_render(name, &render_key(view, base_url)).await {
        Ok(kept) => kept.and_then(|bytes| kept_pieces(bytes, view, base_url)),
        Err(e) => {
            tracing::warn!(package = %name, error = %e, "kept render unreadable; building");
            None
        }
    }
}

/// Kept bytes read back as pieces, if they are pieces of `view` under `base_url`.
fn kept_pieces(bytes: bytes::Bytes, view: View, base_url: &str) -> Option<Built> {
    Built::from_kept(bytes).filter(|b| b.view() == view && b.base_url() == base_url)
}

/// Has the store keep `pieces`, after the response (a failure is logged: it is a cache).
fn keep_render(
    renders: Arc<dyn RenderStore>,
    name: &PackageName,
    view: View,
    base_url: &str,
    pieces: &Built,
) {
    let kept = match pieces.to_kept() {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(package = %name, error = %e, "render not kept");
            return;
        }
    };
    let (name, key, revision) = (name.clone(), render_key(view, base_url), pieces.revision);
    tokio::spawn(async move {
        // A read lets no log go: what the writes keep (`keep_after_write`) decides that.
        if let Err(e) = renders.keep_render(&name, &key, revision, kept, None).await {
            tracing::warn!(package = %name, error = %e, "render not kept");
        }
    });
}

/// Brings the renderings this instance keeps of `package` up to its revision, right after a
/// write made here: the first read after a publish (or a deprecation, or a tag moved) is then
/// answered as any warm read is, and the write pays the patch instead. Only renderings already
/// kept are patched (nothing is built for a package nobody reads); one that cannot be patched
/// is dropped, and the next read builds it.
pub(crate) async fn refresh_after_write(state: &AppState, base_url: &str, package: &PackageRecord) {
    let cache = &state.packuments;
    for view in [View::Abbreviated, View::Full] {
        if cache
            .kept(&package.name, view, base_url)
            .is_none_or(|kept| kept.revision >= package.revision)
        {
            continue;
        }
        let builder = cache.builder(&package.name, view, base_url);
        let mut built = builder.lock().await;
        let Some(pieces) = built.as_mut().filter(|p| p.shows_up_to(package)) else {
            continue;
        };
        let current = pieces.revision == package.revision
            || matches!(patch(state, package, pieces).await, Ok(true));
        if !current {
            *built = None;
            continue;
        }
        if (pieces.is_empty() && !package.created_empty) || package.unpublished.is_some() {
            continue;
        }
        match Rendered::join(pieces, package) {
            Ok(rendered) => {
                cache.insert(
                    &package.name,
                    base_url,
                    Arc::new(rendered),
                    &builder,
                    pieces.size(),
                );
            }
            Err(e) => {
                tracing::warn!(package = %package.name, error = %e, "rendering not refreshed");
            }
        }
    }
    keep_after_write(state, base_url, package).await;
}

/// Has the store keep the abbreviated rendering (the view installs read) as of the write just
/// made, so that a package's first read after a start, or after the cache let it go, is one
/// lookup plus a patch rather than a build from every version.
///
/// - A small package's kept rendering is patched and kept again at every write (or built from
///   the document, only if it has fewer than `KEEP_RENDER_VERSIONS` versions).
/// - A big one's is not rewritten at every write (megabytes): the store logs what each write
///   touched, and its rendering is brought up to date once it is more than
///   `rebase_after` writes behind (`rebase_if_due`). A read then patches it with at most that many versions,
///   however many writes the package has had and whether or not anyone ever read it.
async fn keep_after_write(state: &AppState, base_url: &str, package: &PackageRecord) {
    let Some(renders) = &state.renders else {
        return;
    };
    if package.unpublished.is_some() {
        return;
    }
    let view = View::Abbreviated;
    let key = render_key(view, base_url);
    let kept = match renders.kept_small_render(&package.name, &key).await {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(package = %package.name, error = %e, "kept render unreadable");
            return;
        }
    };
    let kept = match kept {
        KeptSmall::Big { base } => {
            rebase_if_due(state, renders.as_ref(), base_url, package, base).await;
            return;
        }
        KeptSmall::Render(bytes) => {
            kept_pieces(bytes, view, base_url).filter(|b| b.shows_up_to(package))
        }
        KeptSmall::Nothing => None,
    };
    let patched = match kept {
        Some(pieces) if pieces.revision == package.revision => return,
        // A big package's, kept at a read: brought up to date as a big one is.
        Some(pieces) if pieces.version_count() >= KEEP_RENDER_VERSIONS => {
            let base = Some(pieces.revision);
            rebase_if_due(state, renders.as_ref(), base_url, package, base).await;
            return;
        }
        Some(mut pieces) => {
            matches!(patch(state, package, &mut pieces).await, Ok(true)).then_some(pieces)
        }
        None => None,
    };
    let pieces = match patched {
        Some(pieces) => Some(pieces),
        None => match renders
            .document_up_to(&package.name, KEEP_RENDER_VERSIONS - 1)
            .await
        {
            Ok(Some(document)) => {
                let mut record = Arc::new(package.clone());
                match build(state, view, base_url, &mut record, Some(document)).await {
                    Ok(pieces) => pieces,
                    Err(e) => {
                        tracing::warn!(package = %package.name, error = %e, "render not kept");
                        return;
                    }
                }
            }
            // Too many versions (or deleted since): marked big with no rendering kept, so
            // the next write builds one (`rebase_if_due`).
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(package = %package.name, error = %e, "render not kept");
                return;
            }
        },
    };
    // A package that has just grown big keeps what it grew from: its first big rendering.
    let (revision, bytes) = match pieces {
        Some(pieces) if pieces.is_empty() => return,
        Some(mut pieces) => match pieces.keep_head(package).and_then(|()| pieces.to_kept()) {
            Ok(bytes) => (pieces.revision, bytes),
            Err(e) => {
                tracing::warn!(package = %package.name, error = %e, "render not kept");
                return;
            }
        },
        None => (0, Vec::new()),
    };
    // Only this view of a small package is kept: nothing else needs the log.
    if let Err(e) = renders
        .keep_render(&package.name, &key, revision, bytes, Some(revision))
        .await
    {
        tracing::warn!(package = %package.name, error = %e, "render not kept");
    }
}

/// Writes a big package's kept rendering may fall behind before a write brings it up to date:
/// an eighth of its revisions (about its versions), so that over its life a package's
/// renderings cost about eight times its final rendering in writes, and a read patches at
/// most an eighth of its versions; at least `REBASE_AFTER_AT_LEAST`.
fn rebase_after(base: u64) -> u64 {
    (base / 8).max(REBASE_AFTER_AT_LEAST)
}

/// How far back the store's log is kept once a big package's rendering is kept at `revision`:
/// as far again as that rendering may fall behind, so that the package's other renderings (the
/// full view, kept at its reads) patch from it while they are about as recent.
fn log_kept_after(revision: u64) -> Option<u64> {
    revision.checked_sub(rebase_after(revision))
}

/// The fewest writes a kept big rendering falls behind before it is brought up to date.
const REBASE_AFTER_AT_LEAST: u64 = 32;

/// Brings a big package's kept abbreviated rendering, kept at `base` (unknown: none is known
/// to be kept), up to `package` if it is more than `rebase_after` writes behind: the one kept,
/// patched with what the store logged since; else (none kept, or the log does not reach back
/// to it) built from the document. Not cached in memory (nobody may read it soon), and skipped
/// while someone builds this rendering (they keep what they build).
async fn rebase_if_due(
    state: &AppState,
    renders: &dyn RenderStore,
    base_url: &str,
    package: &PackageRecord,
    base: Option<u64>,
) {
    if base.is_some_and(|base| package.revision.saturating_sub(base) <= rebase_after(base)) {
        return;
    }
    let view = View::Abbreviated;
    let cache = &state.packuments;
    let builder = cache.builder(&package.name, view, base_url);
    let Ok(built) = builder.try_lock() else {
        return;
    };
    // Held in memory at this revision already (a read built it, this write patched it).
    if let Some(pieces) = built.as_ref().filter(|p| p.revision == package.revision) {
        keep_rebased(renders, &package.name, base_url, pieces).await;
        return;
    }
    // Read, patched or built within the in-flight budget, as a read's would be.
    let _permit = cache
        .build_permit(kept_estimate(package).max(1 << 20))
        .await;
    let mut pieces = kept_render(renders, &package.name, view, base_url)
        .await
        .filter(|p| p.shows_up_to(package));
    let current = match pieces.as_mut() {
        Some(p) if p.revision == package.revision => true,
        Some(p) => matches!(patch(state, package, p).await, Ok(true)),
        None => false,
    };
    if !current {
        let mut record = Arc::new(package.clone());
        pieces = match build(state, view, base_url, &mut record, None).await {
            Ok(built) => built,
            Err(e) => {
                tracing::warn!(package = %package.name, error = %e, "render not kept");
                return;
            }
        };
    }
    if let Some(pieces) = pieces.filter(|p| !p.is_empty()) {
        keep_rebased(renders, &package.name, base_url, &pieces).await;
    }
}

/// Has the store keep a big package's abbreviated `pieces`, brought up to date by a write, and
/// let the log go up to `log_kept_after` their revision (a failure is logged: it is a cache).
async fn keep_rebased(
    renders: &dyn RenderStore,
    name: &PackageName,
    base_url: &str,
    pieces: &Built,
) {
    let key = render_key(View::Abbreviated, base_url);
    let through = log_kept_after(pieces.revision);
    let kept = match pieces.to_kept() {
        Ok(bytes) => renders
            .keep_render(name, &key, pieces.revision, bytes, through)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = kept {
        tracing::warn!(package = %name, error = %e, "render not kept");
    }
}

/// The versions the writes to `package` after `revision` touched: from its record, which lists
/// the latest writes, and before those from the store's log; `None` if together they do not
/// list every one (the caller builds anew).
async fn touched_since(
    state: &AppState,
    package: &PackageRecord,
    revision: u64,
) -> Result<Option<Vec<semver::Version>>, ApiError> {
    if let Some(touched) = package.touched.after(revision) {
        return Ok(Some(touched.into_iter().cloned().collect()));
    }
    let Some(renders) = &state.renders else {
        return Ok(None);
    };
    let logged = renders
        .touched_after(&package.name, package.created.timestamp_millis(), revision)
        .await?;
    let Some(recent) = package.touched.after(logged.through) else {
        return Ok(None);
    };
    let mut versions: std::collections::BTreeSet<semver::Version> =
        logged.versions.into_iter().collect();
    versions.extend(recent.into_iter().cloned());
    Ok(Some(versions.into_iter().collect()))
}

/// Brings `pieces` up to `package`'s revision by applying the versions the writes since touched,
/// if the record (or the store's log) still lists them all; `false` if it cannot (the caller
/// builds anew).
async fn patch(
    state: &AppState,
    package: &PackageRecord,
    pieces: &mut Built,
) -> Result<bool, ApiError> {
    if pieces.revision >= package.revision {
        return Ok(false);
    }
    let Some(touched) = touched_since(state, package, pieces.revision).await? else {
        return Ok(false);
    };
    let records = state.views.versions_as_of(package, &touched).await?;
    let changed: Vec<_> = touched.into_iter().zip(records).collect();
    pieces
        .apply(package, &changed)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(wanted) = pieces.latest_wanted(package) {
        let record = match changed.iter().find(|(v, _)| *v == wanted) {
            Some((_, record)) => record.clone(),
            None => state.views.version_as_of(package, &wanted).await?,
        };
        // Gone since the record was read: a later read sees a newer revision and builds.
        let Some(VersionRecord {
            state: VersionState::Live(live),
            ..
        }) = record
        else {
            return Ok(false);
        };
        let readme = readme(state, package, &wanted, &live).await?;
        pieces.set_latest(wanted, *live, readme);
    }
    Ok(true)
}

/// The README of `version` as `package` shows it, if it has one.
async fn readme(
    state: &AppState,
    package: &PackageRecord,
    version: &semver::Version,
    live: &LiveVersion,
) -> Result<Option<String>, ApiError> {
    Ok(if live.has_readme == Some(false) {
        None
    } else {
        state.views.readme_as_of(package, version).await?
    })
}

/// Builds `view` of the whole document at (or after) `package`'s revision, moving `package` to
/// the document's record when it is newer; `None` when there is no such package any more.
async fn build(
    state: &AppState,
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
        (View::Full, Some((version, live))) => readme(state, &doc.package, version, live).await?,
        _ => None,
    };
    // A small package builds in well under 100 µs: in place, cheaper than the hand-off.
    let manifest_bytes: usize = doc
        .versions
        .iter()
        .map(|v| match &v.state {
            VersionState::Live(live) => live.manifest.json().len(),
            VersionState::Unpublished { .. } => 0,
        })
        .sum();
    if manifest_bytes <= BUILD_IN_PLACE_BYTES {
        return Built::from_document(&doc, view, base_url, readme)
            .map(Some)
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
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
        return state.not_here(name, ctx, Wanted::VersionOrTag(spec)).await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::storage::{MetadataStore, PackageWrite, StoreError, TarballStore, embedded};

    /// The embedded store, counting the whole-document reads a build makes and the version
    /// records read one by one.
    struct Counting {
        inner: Arc<embedded::EmbeddedMetadata>,
        documents: AtomicUsize,
        versions: AtomicUsize,
    }

    #[async_trait]
    impl MetadataStore for Counting {
        async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
            self.inner.package(name).await
        }

        async fn document(
            &self,
            name: &PackageName,
        ) -> Result<Option<PackageDocument>, StoreError> {
            self.documents.fetch_add(1, Ordering::SeqCst);
            self.inner.document(name).await
        }

        async fn readme(
            &self,
            name: &PackageName,
            version: &semver::Version,
        ) -> Result<Option<String>, StoreError> {
            self.inner.readme(name, version).await
        }

        async fn version(
            &self,
            name: &PackageName,
            version: &semver::Version,
        ) -> Result<Option<VersionRecord>, StoreError> {
            self.versions.fetch_add(1, Ordering::SeqCst);
            self.inner.version(name, version).await
        }

        async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
            self.inner.write(write).await
        }
    }

    /// Embedded stores in a new directory (kept while the guard lives), and the metadata store
    /// counting its reads.
    fn stores() -> (
        tempfile::TempDir,
        Arc<embedded::EmbeddedMetadata>,
        Arc<embedded::EmbeddedTarballs>,
        Arc<Counting>,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (m, t) = embedded::open_configured(tmp.path(), embedded::Settings::default()).unwrap();
        let (store, tarballs) = (Arc::new(m), Arc::new(t));
        let meta = Arc::new(Counting {
            inner: store.clone(),
            documents: AtomicUsize::new(0),
            versions: AtomicUsize::new(0),
        });
        (tmp, store, tarballs, meta)
    }

    /// An application over `meta` and `tarballs` with its own (empty) packument cache, as a
    /// server started again over the same data directory.
    /// Without `renders`, it builds every packument from the records.
    async fn started(
        meta: &Arc<Counting>,
        renders: Option<&Arc<embedded::EmbeddedMetadata>>,
        tarballs: &Arc<embedded::EmbeddedTarballs>,
    ) -> axum::Router {
        started_with_state(meta, renders, tarballs).await.0
    }

    /// `started`, and the application's state.
    async fn started_with_state(
        meta: &Arc<Counting>,
        renders: Option<&Arc<embedded::EmbeddedMetadata>>,
        tarballs: &Arc<embedded::EmbeddedTarballs>,
    ) -> (axum::Router, Arc<AppState>) {
        let config = crate::config::Config::from_lookup(|k| match k {
            "REGISTRY_DATA_DIR" => Some("/nonexistent".into()),
            "REGISTRY_UPSTREAM" => Some(String::new()),
            "REGISTRY_PUBLIC_URL" => Some("http://registry.test".into()),
            _ => None,
        })
        .unwrap();
        let mut builder = crate::app::App::builder(config)
            .stores(meta.clone(), tarballs.clone() as Arc<dyn TarballStore>);
        if let Some(renders) = renders {
            builder = builder.renders(renders.clone());
        }
        let state = builder.build().await.unwrap();
        (
            crate::http::router(state.clone(), &crate::http::RouteGroup::ALL),
            state,
        )
    }

    async fn publish(app: &axum::Router, version: &str) {
        let tarball = crate::testing::package_tgz("@t/big", version);
        let doc = crate::testing::publish_doc("@t/big", version, &tarball);
        let request = Request::builder()
            .method("PUT")
            .uri("/@t%2fbig")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&doc).unwrap()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{version}");
    }

    /// Both views, each as identity and as gzip.
    async fn read(app: &axum::Router) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for accept in ["application/json", "application/vnd.npm.install-v1+json"] {
            for encoding in ["identity", "gzip"] {
                let request = Request::builder()
                    .uri("/@t%2fbig")
                    .header("accept", accept)
                    .header("accept-encoding", encoding)
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                out.push((format!("{accept} {encoding}"), bytes.to_vec()));
            }
        }
        out
    }

    /// Waits until the store keeps both views of `@t/big` at `revision` (they are kept after
    /// the response, by a task of their own).
    async fn kept_at(renders: &embedded::EmbeddedMetadata, revision: u64) {
        let name = PackageName::parse("@t/big").unwrap();
        for _ in 0..500 {
            let mut both = true;
            for view in [View::Full, View::Abbreviated] {
                let kept = kept_render(renders, &name, view, "http://registry.test").await;
                both &= kept.is_some_and(|b| b.revision == revision);
            }
            if both {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the renders at revision {revision} were not kept");
    }

    /// A big package's first reads after a start come from the renders the store kept: no
    /// document is read, even after a publish since (the kept pieces are patched with what it
    /// touched), and the bytes are exactly what a build answers. Too many writes since, and the
    /// reader builds anew and keeps that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_big_packages_first_read_after_a_start_uses_its_kept_render() {
        let (_tmp, renders, tarballs, meta) = stores();
        let count = KEEP_RENDER_VERSIONS;
        let first = started(&meta, Some(&renders), &tarballs).await;
        for minor in 0..count {
            publish(&first, &format!("1.{minor}.0")).await;
        }
        let built = read(&first).await;
        let revision = u64::try_from(count).unwrap();
        kept_at(&renders, revision).await;
        let documents = meta.documents.load(Ordering::SeqCst);

        // Started again: served from what was kept, without reading the document.
        let second = started(&meta, Some(&renders), &tarballs).await;
        assert_eq!(read(&second).await, built);
        assert_eq!(meta.documents.load(Ordering::SeqCst), documents);

        // A publish, then a start: the kept pieces are brought up to date and kept again.
        publish(&second, "2.0.0").await;
        let expected = read(&second).await;
        let documents = meta.documents.load(Ordering::SeqCst);
        let third = started(&meta, Some(&renders), &tarballs).await;
        assert_eq!(read(&third).await, expected);
        assert_eq!(meta.documents.load(Ordering::SeqCst), documents);
        kept_at(&renders, revision + 1).await;
        assert!(
            String::from_utf8_lossy(&expected[0].1).contains("\"2.0.0\":{"),
            "the publish shows"
        );

        // More writes than a record lists: the kept pieces are patched with what the store's
        // log lists, still without reading the document.
        for patch in 1..=10 {
            publish(&third, &format!("2.0.{patch}")).await;
        }
        let documents = meta.documents.load(Ordering::SeqCst);
        let fourth = started(&meta, Some(&renders), &tarballs).await;
        let served = read(&fourth).await;
        assert_eq!(meta.documents.load(Ordering::SeqCst), documents);
        let from_records = started(&meta, None, &tarballs).await;
        assert_eq!(decoded(read(&from_records).await), decoded(served.clone()));
        assert!(String::from_utf8_lossy(&served[0].1).contains("\"2.0.10\":{"));
        kept_at(&renders, revision + 11).await;

        // Kept renders older than what the log still lists (the older ones put back, and the
        // log let go as a write's keep lets it go): built anew from the records, and kept.
        let name = PackageName::parse("@t/big").unwrap();
        let mut old = Vec::new();
        for view in [View::Full, View::Abbreviated] {
            let kept = kept_render(renders.as_ref(), &name, view, "http://registry.test").await;
            old.push((view, kept.unwrap().to_kept().unwrap()));
        }
        for patch in 11..=20 {
            publish(&fourth, &format!("2.0.{patch}")).await;
        }
        read(&started(&meta, Some(&renders), &tarballs).await).await;
        kept_at(&renders, revision + 21).await;
        for (view, bytes) in old {
            let key = render_key(view, "http://registry.test");
            renders
                .keep_render(&name, &key, revision + 11, bytes, Some(revision + 21))
                .await
                .unwrap();
        }
        kept_at(&renders, revision + 11).await;
        let documents = meta.documents.load(Ordering::SeqCst);
        let fifth = started(&meta, Some(&renders), &tarballs).await;
        let served = read(&fifth).await;
        assert_eq!(
            meta.documents.load(Ordering::SeqCst),
            documents + 2,
            "one build per view"
        );
        let from_records = started(&meta, None, &tarballs).await;
        assert_eq!(read(&from_records).await, served);
        kept_at(&renders, revision + 21).await;
    }

    /// A kept rendering is read and patched within `REGISTRY_RENDER_BYTES_IN_FLIGHT`, as a build
    /// is: with the budget taken, a big package's first read after a start waits before it
    /// reads what the store kept (megabytes for thousands of versions), and answers once the
    /// budget is given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_rendering_is_read_within_the_in_flight_budget() {
        let (_tmp, renders, tarballs, meta) = stores();
        let first = started(&meta, Some(&renders), &tarballs).await;
        for minor in 0..KEEP_RENDER_VERSIONS {
            publish(&first, &format!("1.{minor}.0")).await;
        }
        let built = read(&first).await;
        kept_at(&renders, u64::try_from(KEEP_RENDER_VERSIONS).unwrap()).await;

        let (second, state) = started_with_state(&meta, Some(&renders), &tarballs).await;
        let budget = state.packuments.build_permit(usize::MAX).await;
        let mut reading = tokio::spawn(async move { read(&second).await });
        // Negative check: nothing is answered while the budget is held.
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut reading);
        assert!(
            waited.await.is_err(),
            "read a kept rendering outside the budget"
        );
        drop(budget);
        assert_eq!(reading.await.unwrap(), built);
    }

    /// A small package's abbreviated rendering is kept by the store at each write (built at the
    /// first, patched at the next): its first read after a start reads no document and answers
    /// what a build from the records answers. The write that gives it `KEEP_RENDER_VERSIONS`
    /// versions keeps its first big rendering; later writes only log what they touch until
    /// it is `rebase_after` writes behind, and then bring it up to date. A package never read
    /// is read after a start without reading its document.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_packages_abbreviated_rendering_is_kept_at_each_write() {
        let (_tmp, renders, tarballs, meta) = stores();
        let name = PackageName::parse("@t/big").unwrap();
        let key = render_key(View::Abbreviated, "http://registry.test");
        // The writer takes writes in order: once this one is committed, so is every keep before.
        let flushed = || async {
            crate::storage::KvStore::put(renders.as_ref(), "test", "flush", b"", None)
                .await
                .unwrap();
        };
        let abbreviated = |answers: Vec<(String, Vec<u8>)>| {
            decoded(answers)
                .into_iter()
                .filter(|(what, _)| what.contains("install-v1"))
                .collect::<Vec<_>>()
        };

        let app = started(&meta, Some(&renders), &tarballs).await;
        for minor in 0..3 {
            publish(&app, &format!("1.{minor}.0")).await;
        }
        flushed().await;
        let kept = kept_render(
            renders.as_ref(),
            &name,
            View::Abbreviated,
            "http://registry.test",
        )
        .await
        .expect("kept at the publish");
        assert_eq!(kept.revision, 3);
        assert!(
            kept_render(renders.as_ref(), &name, View::Full, "http://registry.test")
                .await
                .is_none(),
            "only the view installs read"
        );

        for round in 0..2 {
            let documents = meta.documents.load(Ordering::SeqCst);
            let again = started(&meta, Some(&renders), &tarballs).await;
            let served = abbreviated(read(&again).await);
            // The full view is built (one document read); the abbreviated one is not.
            assert_eq!(meta.documents.load(Ordering::SeqCst), documents + 1);
            let from_records = started(&meta, None, &tarballs).await;
            assert_eq!(abbreviated(read(&from_records).await), served);
            assert!(
                String::from_utf8_lossy(&served[0].1)
                    .contains(&format!("\"1.{}.0\":{{", round + 2))
            );
            // A publish from a server that never read the package patches what the store kept.
            let writer = started(&meta, Some(&renders), &tarballs).await;
            publish(&writer, &format!("1.{}.0", round + 3)).await;
            flushed().await;
        }

        // The write that makes it big keeps what it grew from.
        for minor in 5..KEEP_RENDER_VERSIONS {
            publish(&app, &format!("1.{minor}.0")).await;
        }
        flushed().await;
        let kept_revision = || async {
            kept_render(
                renders.as_ref(),
                &name,
                View::Abbreviated,
                "http://registry.test",
            )
            .await
            .map(|kept| kept.revision)
        };
        let big = u64::try_from(KEEP_RENDER_VERSIONS).unwrap();
        assert_eq!(kept_revision().await, Some(big));

        // Later writes leave it as it is, and a start reads it patched from the log (more
        // writes than the record lists), and keeps that.
        for patch in 0..10 {
            publish(&app, &format!("2.0.{patch}")).await;
        }
        flushed().await;
        assert_eq!(
            kept_revision().await,
            Some(big),
            "not rewritten at each write"
        );
        let documents = meta.documents.load(Ordering::SeqCst);
        let again = started(&meta, Some(&renders), &tarballs).await;
        let served = abbreviated(read(&again).await);
        assert_eq!(
            meta.documents.load(Ordering::SeqCst),
            documents + 1,
            "the full view only"
        );
        let from_records = started(&meta, None, &tarballs).await;
        assert_eq!(abbreviated(read(&from_records).await), served);
        flushed().await;
        assert_eq!(kept_revision().await, Some(big + 10));

        // Once it is more than `rebase_after` writes behind, a write brings it up to date.
        let behind = rebase_after(big + 10);
        for patch in 0..behind {
            publish(&app, &format!("2.1.{patch}")).await;
        }
        flushed().await;
        assert_eq!(kept_revision().await, Some(big + 10));
        publish(&app, "3.0.0").await;
        flushed().await;
        assert_eq!(kept_revision().await, Some(big + 10 + behind + 1));

        // Marked big by an older release (no revision known): the next write keeps a rendering.
        renders
            .keep_render(&name, &key, 0, Vec::new(), None)
            .await
            .unwrap();
        flushed().await;
        assert_eq!(
            renders.kept_small_render(&name, &key).await.unwrap(),
            KeptSmall::Big { base: None }
        );
        publish(&app, "3.0.1").await;
        flushed().await;
        assert_eq!(kept_revision().await, Some(big + 10 + behind + 2));
    }

    /// A write made here brings the renderings kept of its package up to date (both views,
    /// from the version the write created, which is not read back): the read after a publish
    /// or a tag change renders nothing and reads no record beyond the package's, as any warm
    /// read, and answers what a build from the records answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_here_brings_the_kept_renderings_up_to_date() {
        let (_tmp, _, tarballs, meta) = stores();
        let (app, state) = started_with_state(&meta, None, &tarballs).await;
        for minor in 0..5 {
            publish(&app, &format!("1.{minor}.0")).await;
        }
        read(&app).await;
        let renders = state.packuments.renders();
        let versions = meta.versions.load(Ordering::SeqCst);

        publish(&app, "1.5.0").await;
        // One read is the publish's own check that the version is new.
        assert_eq!(
            meta.versions.load(Ordering::SeqCst),
            versions + 1,
            "the patches took the new version from the write, not from the store"
        );
        assert_eq!(
            state.packuments.renders(),
            renders + 2,
            "the publish patched both views"
        );
        let (renders, documents, versions) = (
            state.packuments.renders(),
            meta.documents.load(Ordering::SeqCst),
            meta.versions.load(Ordering::SeqCst),
        );
        let served = read(&app).await;
        assert_eq!(state.packuments.renders(), renders, "nothing rendered");
        assert_eq!(meta.documents.load(Ordering::SeqCst), documents);
        assert_eq!(meta.versions.load(Ordering::SeqCst), versions);
        assert!(String::from_utf8_lossy(&served[0].1).contains("\"1.5.0\":{"));
        // The same document (a patched gzip stream differs from a fresh one, not its content).
        let from_records = started(&meta, None, &tarballs).await;
        assert_eq!(decoded(read(&from_records).await), decoded(served));

        // A tag moved: the same.
        let request = Request::builder()
            .method("PUT")
            .uri("/-/package/@t%2fbig/dist-tags/beta")
            .header("content-type", "application/json")
            .body(Body::from("\"1.2.0\""))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let renders = state.packuments.renders();
        let served = read(&app).await;
        assert_eq!(state.packuments.renders(), renders, "nothing rendered");
        assert!(String::from_utf8_lossy(&served[0].1).contains("\"beta\":\"1.2.0\""));
        let from_records = started(&meta, None, &tarballs).await;
        assert_eq!(decoded(read(&from_records).await), decoded(served));
    }

    /// `read`'s answers with the gzip ones decompressed.
    fn decoded(answers: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
        use std::io::Read;
        answers
            .into_iter()
            .map(|(what, bytes)| {
                if !what.ends_with("gzip") {
                    return (what, bytes);
                }
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(bytes.as_slice())
                    .read_to_end(&mut out)
                    .unwrap();
                (what, out)
            })
            .collect()
    }
}
