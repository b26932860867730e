//! The web pages (metadata group): server-rendered HTML over the same reads and search as the
//! API, with the same access rules; the caller is the browser's session (`web_auth`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::routes::MetadataRoute;
use super::{ApiError, AppState, RequestContext};

/// Handles a web page route.
pub(crate) fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: MetadataRoute,
) -> Result<Response, ApiError> {
    match route {
        MetadataRoute::Root => root(ctx),
        _ => Ok(message(
            state,
            None,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page.",
        )),
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
    let location = format!("{}/-/web", ctx.base_url.trim_end_matches('/'));
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// A page with a heading and a sentence (sign-in outcomes, errors), with the pages' headers.
pub(crate) fn message(
    _state: &AppState,
    _signed_in: Option<&str>,
    status: StatusCode,
    heading: &str,
    text: &str,
) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head><body><main><h1>{}</h1><p>{}</p></main></body></html>",
        escape(heading),
        escape(heading),
        escape(text)
    );
    html_response(status, body)
}

/// An HTML answer with the pages' security headers; never stored by shared caches.
pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}
