//! `GET /-/v1/search` (metadata group): the index's ranked hits, cut to what the caller may
//! read before they are counted or paged, so a search never shows (or counts) a package the
//! caller could not read.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::{ApiError, AppState, RequestContext, json_response};
use crate::auth::{Action, AuthError, Authorizer, Identity};
use crate::domain::{PackageName, RepoRef};
use crate::search::{Hit, Indexed, SearchQuery, rank, search_response};

/// GitHub checks of distinct repositories run at most this many at a time.
const CHECKS_AT_ONCE: usize = 8;

/// Answers a search.
pub(crate) async fn search(state: &AppState, ctx: &RequestContext) -> Result<Response, ApiError> {
    let query = parse(&ctx.path_and_query)?;
    if !may_browse(state, ctx) {
        return Err(ApiError::Unauthorized(
            "authentication required to search this registry: put a GitHub token in .npmrc (//registry/:_authToken=...) or run npm login".into(),
        ));
    }
    let hits = state
        .search
        .with_index(state.metadata.as_ref(), |index| index.query(&query))
        .await?;
    let mut readable = readable(state, ctx, hits, |hit| hit.entry.as_ref()).await?;
    let total = readable.len();
    rank(&mut readable, query.from + query.size);
    let page: Vec<Hit> = readable
        .into_iter()
        .skip(query.from)
        .take(query.size)
        .collect();
    let body = search_response(&page, total, &ctx.base_url, chrono::Utc::now());
    let mut response = json_response(StatusCode::OK, &body);
    // Per caller and changing with every publish: never kept by a cache on the way.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Whether this caller may see any package at all: in GitHub mode without public read, only
/// someone signed in (the search API and the web pages alike).
pub(crate) fn may_browse(state: &AppState, ctx: &RequestContext) -> bool {
    state.auth.github().is_none_or(|github| {
        github.public_read() || !matches!(ctx.caller.identity, Identity::Anonymous)
    })
}

/// The text, size and from of the query string, form-decoded as npm sends them.
fn parse(path_and_query: &str) -> Result<SearchQuery, ApiError> {
    let query = path_and_query
        .split_once('?')
        .map_or("", |(_, query)| query);
    let mut text = String::new();
    let (mut size, mut from) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "text" => text = value.into_owned(),
            "size" => size = Some(value.into_owned()),
            "from" => from = Some(value.into_owned()),
            _ => {}
        }
    }
    SearchQuery::parse(&text, size.as_deref(), from.as_deref()).map_err(ApiError::BadRequest)
}

/// The items the caller may read, in their order (`entry` finds each one's package). In GitHub
/// mode each distinct repository among them is decided once (through the authoriser's cache, as
/// reads are); a repository GitHub cannot be asked about fails the whole answer rather than
/// shrink it.
pub(crate) async fn readable<T>(
    state: &AppState,
    ctx: &RequestContext,
    items: Vec<T>,
    entry: impl Fn(&T) -> &Indexed,
) -> Result<Vec<T>, ApiError> {
    if matches!(state.auth, Authorizer::Open) || items.is_empty() {
        return Ok(items);
    }
    let repo_of = |e: &Indexed| {
        e.repository
            .as_deref()
            .cloned()
            .or_else(|| RepoRef::unbound(&e.name))
    };
    // One package per distinct repository stands for it in the check.
    let mut distinct: HashMap<String, (RepoRef, PackageName)> = HashMap::new();
    for item in &items {
        let e = entry(item);
        if let Some(repo) = repo_of(e) {
            distinct
                .entry(repo.to_string().to_ascii_lowercase())
                .or_insert_with(|| (repo, e.name.clone()));
        }
    }
    let mut allowed: HashMap<String, bool> = HashMap::with_capacity(distinct.len());
    let mut pending = distinct.into_iter();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < CHECKS_AT_ONCE {
            let Some((key, (repo, name))) = pending.next() else {
                break;
            };
            running.push(async move {
                let decision = state
                    .auth
                    .check(&ctx.caller, &name, &repo, Action::Read)
                    .await;
                (key, decision)
            });
        }
        let Some((key, decision)) = running.next().await else {
            break;
        };
        let readable = match decision {
            Ok(_) => true,
            Err(AuthError::Unavailable(message)) => return Err(ApiError::Unavailable(message)),
            Err(AuthError::Hidden | AuthError::Forbidden(_) | AuthError::Unauthenticated(_)) => {
                false
            }
        };
        allowed.insert(key, readable);
    }
    Ok(items
        .into_iter()
        .filter(|item| {
            repo_of(entry(item)).is_some_and(|repo| {
                allowed
                    .get(&repo.to_string().to_ascii_lowercase())
                    .copied()
                    .unwrap_or(false)
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_is_form_decoded() {
        let q = parse("/-/v1/search?text=keywords:a%2Cb+widget&size=5&from=10").unwrap();
        assert_eq!(q.terms, ["widget"]);
        assert_eq!(q.keywords_any, ["a", "b"]);
        assert_eq!((q.size, q.from), (5, 10));
        let q = parse("/-/v1/search?text=%40acme%2Fwidget").unwrap();
        assert_eq!(q.text, "@acme/widget");
        assert!(parse("/-/v1/search?text=x&size=ten").is_err());
        assert_eq!(parse("/-/v1/search").unwrap().size, 20);
    }
}
