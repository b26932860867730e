//! The web pages (metadata group): server-rendered HTML over the same reads and search as the
//! API, with the same access rules; the caller is the browser's session (`web_auth`). The HTML
//! itself is `crate::web`'s; this module gathers what a page shows and answers with it.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::routes::MetadataRoute;
use super::{ApiError, AppState, RequestContext};
use crate::auth::Identity;
use crate::domain::PackageName;
use crate::search::{Indexed, Order, SearchQuery};
use crate::web::{self, Layout, ListItem, ListView, PackageView, SearchView};

/// Packages per page of the list and of search results.
const PER_PAGE: usize = 25;

/// Handles a web page route.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: MetadataRoute,
) -> Result<Response, ApiError> {
    match route {
        MetadataRoute::Root => root(ctx),
        MetadataRoute::WebList => Ok(list(state, ctx).await),
        MetadataRoute::WebSearch => Ok(search(state, ctx).await),
        MetadataRoute::WebPackage { name, version } => {
            Ok(package(state, ctx, &name, version.as_ref()).await)
        }
        MetadataRoute::WebStatic { file } => Ok(asset(&file)),
        _ => Err(ApiError::NotFound("not found".into())),
    }
}

/// `GET /`: a browser goes to the package list; a client asking for JSON hears 404, as before.
fn root(ctx: &RequestContext) -> Result<Response, ApiError> {
    let html = ctx
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !html {
        return Err(ApiError::NotFound("not found".into()));
    }
    let location = format!("{}/-/web", base_path(&ctx.base_url));
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The path part of the base URL: the registry's prefix on its host (cookie paths, redirects
/// and the pages' links).
pub(crate) fn base_path(base_url: &str) -> String {
    url::Url::parse(base_url)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// Every page's frame for this caller.
fn layout(state: &AppState, ctx: &RequestContext, title: &str, query: &str) -> Layout {
    Layout {
        base: base_path(&ctx.base_url),
        title: title.to_string(),
        signed_in_as: match &ctx.caller.identity {
            Identity::User(login) => Some(login.clone()),
            _ => None,
        },
        sign_in_available: sign_in_available(state),
        search_query: query.to_string(),
    }
}

fn sign_in_available(state: &AppState) -> bool {
    state
        .auth
        .github()
        .is_some_and(|github| github.oauth().is_some())
}

/// The page asking an anonymous visitor to sign in first.
fn sign_in_first(state: &AppState, ctx: &RequestContext) -> Response {
    let text = if sign_in_available(state) {
        "Sign in with GitHub to see the packages you can read."
    } else {
        "This registry's packages are private; use npm with a GitHub token (see the registry's README)."
    };
    let page = web::message_page(
        &layout(state, ctx, "Sign in", ""),
        "Sign in to see packages",
        text,
    );
    html_response(StatusCode::UNAUTHORIZED, page)
}

/// The 1-based `page` of the query string.
fn page_number(ctx: &RequestContext) -> usize {
    super::web_auth::query_param(&ctx.path_and_query, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| (1..=10_000 / PER_PAGE).contains(p))
        .unwrap_or(1)
}

fn item(entry: &Indexed) -> ListItem {
    let package = entry.package("");
    let text = |key: &str| package[key].as_str().unwrap_or_default().to_string();
    ListItem {
        name: entry.name.to_string(),
        version: text("version"),
        description: Some(text("description")).filter(|d| !d.is_empty()),
        published: Some(entry.date),
        deprecated: entry.deprecated,
        keywords: package["keywords"]
            .as_array()
            .map(|k| {
                k.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `GET /-/web`: every package the caller may read, the latest published first.
async fn list(state: &AppState, ctx: &RequestContext) -> Response {
    if !super::search::may_browse(state, ctx) {
        return sign_in_first(state, ctx);
    }
    let page = page_number(ctx);
    let (size, from) = (PER_PAGE.to_string(), ((page - 1) * PER_PAGE).to_string());
    let everything = match SearchQuery::parse("", Some(&size), Some(&from)) {
        Ok(query) => query,
        Err(message) => return error(state, ctx, &ApiError::BadRequest(message)),
    };
    let found = match super::search::find(state, ctx, &everything, Order::Newest).await {
        Ok(found) => found,
        Err(e) => return error(state, ctx, &e),
    };
    let total = found.total;
    let items: Vec<ListItem> = found.hits.iter().map(|h| item(&h.entry)).collect();
    let view = ListView {
        has_next: page * PER_PAGE < total,
        items,
        page,
        total: Some(total),
    };
    html_response(
        StatusCode::OK,
        web::list_page(&layout(state, ctx, "Packages", ""), &view),
    )
}

/// `GET /-/web/search?q=`: the API's search, for a person.
async fn search(state: &AppState, ctx: &RequestContext) -> Response {
    let text = super::web_auth::query_param(&ctx.path_and_query, "q").unwrap_or_default();
    if !super::search::may_browse(state, ctx) {
        return sign_in_first(state, ctx);
    }
    let page = page_number(ctx);
    let size = PER_PAGE.to_string();
    let from = ((page - 1) * PER_PAGE).to_string();
    let query = match SearchQuery::parse(&text, Some(&size), Some(&from)) {
        Ok(query) => query,
        Err(message) => return error(state, ctx, &ApiError::BadRequest(message)),
    };
    let found = match super::search::find(state, ctx, &query, Order::Relevance).await {
        Ok(found) => found,
        Err(e) => return error(state, ctx, &e),
    };
    let total = found.total;
    let items: Vec<ListItem> = found.hits.iter().map(|h| item(&h.entry)).collect();
    let view = SearchView {
        query: text.clone(),
        has_next: query.from + query.size < total,
        items,
        total,
        page,
        size: PER_PAGE,
    };
    html_response(
        StatusCode::OK,
        web::search_page(
            &layout(state, ctx, &format!("Search: {text}"), &text),
            &view,
        ),
    )
}

/// `GET /-/web/package/NAME[/v/VERSION]`: the package as its full packument shows it, read (and
/// authorised) exactly as `npm view` reads it; a package the caller may not read looks missing.
async fn package(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    version: Option<&semver::Version>,
) -> Response {
    let missing = || {
        let hint = if matches!(ctx.caller.identity, Identity::Anonymous) && sign_in_available(state)
        {
            " If it is private, sign in with GitHub to see it."
        } else {
            ""
        };
        html_response(
            StatusCode::NOT_FOUND,
            web::error_page(
                &layout(state, ctx, "Not found", ""),
                404,
                &format!(
                    "There is no package {name} here, or no version of it by that number.{hint}"
                ),
            ),
        )
    };
    let Some(document) = full_packument(state, ctx, name).await else {
        return missing();
    };
    let shown = version.map(ToString::to_string);
    // The README of the version shown: the packument carries only the latest one's.
    let readme = match version {
        Some(v) => state.metadata.readme(name, v).await.ok().flatten(),
        None => None,
    };
    let Some(mut view) =
        PackageView::from_packument(&document, shown.as_deref(), readme.as_deref())
    else {
        return missing();
    };
    // Where each version was built, from its verified provenance (kept on its record): the
    // records are read only for a package that has some.
    let has_provenance = document
        .get("versions")
        .and_then(serde_json::Value::as_object)
        .is_some_and(|versions| {
            versions
                .values()
                .any(|v| v.get("dist").and_then(|d| d.get("attestations")).is_some())
        });
    if has_provenance && let Ok(Some(doc)) = state.metadata.document(name).await {
        for row in &mut view.versions {
            let facts = doc.versions.iter().find_map(|v| match &v.state {
                crate::domain::VersionState::Live(live) if v.version.to_string() == row.version => {
                    live.dist.provenance.as_ref()
                }
                _ => None,
            });
            row.built_by = facts.and_then(|f| {
                f.repository
                    .clone()
                    .map(|repository| (repository, f.workflow.clone()))
            });
        }
    }
    let title = format!("{}@{}", view.name, view.version);
    html_response(
        StatusCode::OK,
        web::package_page(&layout(state, ctx, &title, ""), &view),
    )
}

/// The full packument of `name` as the API serves it to this caller, if they may read it.
async fn full_packument(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Option<serde_json::Value> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let read = RequestContext {
        headers,
        path_and_query: format!("/{}", name.as_str()),
        base_url: ctx.base_url.clone(),
        caller: ctx.caller.clone(),
        body_limit: 0,
        audit: super::audit::AuditNote::default(),
    };
    let response = Box::pin(super::metadata::handle(
        state,
        &read,
        MetadataRoute::Packument { name: name.clone() },
        axum::body::Body::empty(),
    ))
    .await
    .ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// `GET /-/web/static/FILE`: the stylesheet and the copy script, named by their content's hash
/// and kept by browsers for a year.
fn asset(file: &str) -> Response {
    let Some((content_type, body)) = web::assets::asset(file) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(web::assets::ASSET_CACHE_CONTROL),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An error as a page (storage or GitHub unavailable, a search too long).
fn error(state: &AppState, ctx: &RequestContext, e: &ApiError) -> Response {
    let status = e.status();
    html_response(
        status,
        web::error_page(
            &layout(state, ctx, "Error", ""),
            status.as_u16(),
            &e.to_string(),
        ),
    )
}

/// A page with a heading and a sentence (sign-in outcomes), for `signed_in` if anyone.
pub(crate) fn message(
    state: &AppState,
    ctx: &RequestContext,
    signed_in: Option<&str>,
    status: StatusCode,
    heading: &str,
    text: &str,
) -> Response {
    let layout = Layout {
        base: base_path(&ctx.base_url),
        title: heading.to_string(),
        signed_in_as: signed_in.map(str::to_string),
        sign_in_available: sign_in_available(state),
        search_query: String::new(),
    };
    html_response(status, web::message_page(&layout, heading, text))
}

/// An HTML answer with the pages' security headers; kept by no shared cache (it depends on who
/// is signed in).
pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(web::HTML_CONTENT_TYPE),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    for (name, value) in web::security_headers() {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    response
}
