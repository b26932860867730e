//! Tarball route group: downloads, streamed from the tarball store or redirected to it.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::routes::{TarballFile, TarballRoute};
use super::{ApiError, AppState, RequestContext, redirect};
use crate::auth::Action;
use crate::domain::PackageName;
use crate::storage::TarballRead;
use crate::storage::views::VersionFact;

/// Handles a tarball route.
pub async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: TarballRoute,
) -> Result<Response, ApiError> {
    match route {
        TarballRoute::Download { name, file } => download(state, ctx, &name, &file).await,
    }
}

async fn download(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    file: &TarballFile,
) -> Result<Response, ApiError> {
    // GitHub mode: the package first. Whether it exists, which versions it has and which file
    // names it serves are its business, told only to callers who may read it. Open mode needs
    // the record only where views are kept: its epoch says whether a kept version fact holds
    // (without views the version's own record is enough).
    let package = if state.auth.github().is_some() || state.views.keeps_views() {
        let Some(package) = state.views.package(name).await? else {
            return state.not_here(name, ctx).await;
        };
        state
            .authorize(ctx, name, Some(&package), Action::Read)
            .await?;
        Some(package)
    } else {
        None
    };
    let Some(version) = file.version().cloned() else {
        return Err(ApiError::NotFound(format!(
            "'{file}' is not a tarball of {name}"
        )));
    };
    let Some(fact) = state.views.fact(name, package.as_deref(), &version).await? else {
        if package.is_none() && state.metadata.package(name).await?.is_none() {
            return state.not_here(name, ctx).await;
        }
        return Err(ApiError::version_not_found(name, &version));
    };
    let (tarball_key, shasum) = match fact {
        VersionFact::Live {
            tarball_key,
            shasum,
        } => (tarball_key, shasum),
        VersionFact::Unpublished => {
            return Err(ApiError::Gone(format!("{name}@{version} was unpublished")));
        }
    };
    match state.tarballs.get(&tarball_key).await? {
        Some(TarballRead::Redirect(url)) => Ok(redirect(&url)),
        Some(TarballRead::Bytes { len, body }) => {
            let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            // The key embeds the content digest, so the bytes at this URL only change if an
            // operator allows overwrites; clients verify `dist.integrity` regardless.
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=300"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("\"{shasum}\"")) {
                headers.insert(header::ETAG, v);
            }
            Ok(response)
        }
        None => Err(ApiError::Internal(format!(
            "tarball {} is referenced but missing",
            tarball_key.as_str()
        ))),
    }
}
