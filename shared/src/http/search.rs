//! `GET /-/v1/search` (metadata group): the index's ranked hits, cut to what the caller may
//! read before they are counted or paged, so a search never shows (or counts) a package the
//! caller could not read.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::{ApiError, AppState, RequestContext, json_response};
use crate::auth::{Action, AuthError, Authorizer, Identity};
use crate::domain::PackageName;
use crate::search::{Access, AccessUnit, Order, Page, SearchQuery, search_response};

/// GitHub checks of distinct access units run at most this many at a time.
const CHECKS_AT_ONCE: usize = 8;

/// Rounds of deciding access before what is still undecided is hidden: a round only repeats
/// when the index changed under it and brought units not decided yet.
const ROUNDS: usize = 4;

/// Answers a search.
pub(crate) async fn search(state: &AppState, ctx: &RequestContext) -> Result<Response, ApiError> {
    let query = parse(&ctx.path_and_query)?;
    if !may_browse(state, ctx) {
        return Err(ApiError::Unauthorized(
            "authentication required to search this registry: put a GitHub token in .npmrc (//registry/:_authToken=...) or run npm login".into(),
        ));
    }
    let page = find(state, ctx, &query, Order::Relevance).await?;
    let body = search_response(&page.hits, page.total, &ctx.base_url, chrono::Utc::now());
    let mut response = json_response(StatusCode::OK, &body);
    // Per caller and changing with every publish: never kept by a cache on the way.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The page of `query`'s matches the caller may read, in `order`, with their count. The
/// index finds the matches (light values, no entry touched); the caller's access is decided
/// once per distinct access unit among them (repository and scope, through the authoriser's
/// cache, as reads are) without holding the index; then the index pages the readable ones,
/// making the matches again if it changed meanwhile. A unit GitHub cannot be asked about fails
/// the whole answer rather than shrink it.
pub(crate) async fn find(
    state: &AppState,
    ctx: &RequestContext,
    query: &SearchQuery,
    order: Order,
) -> Result<Page, ApiError> {
    // A trusted-publishing token reads its own package only: nothing else is matched.
    let only = match ctx.caller.publish_grant() {
        Some(grant) => match PackageName::parse(&grant.package) {
            Ok(name) => Some(name),
            Err(_) => {
                return Ok(Page {
                    hits: Vec::new(),
                    total: 0,
                });
            }
        },
        None => None,
    };
    let mut access = if matches!(state.auth, Authorizer::Open) {
        Access::everything()
    } else {
        Access::per_unit()
    };
    let mut held = None;
    for round in 1..=ROUNDS {
        if round == ROUNDS {
            access.hide_undecided();
        }
        let step = state
            .search
            .with_index(state.metadata.as_ref(), |index| {
                let matches = held
                    .take()
                    .unwrap_or_else(|| index.matches(query, only.as_ref()));
                index.page(query, order, matches, &access)
            })
            .await?;
        match step {
            Ok(page) => return Ok(page),
            Err(undecided) => {
                let undecided = *undecided;
                decide(state, ctx, undecided.units, &mut access).await?;
                held = Some(undecided.matches);
            }
        }
    }
    // The last round hides what is undecided, so it always pages.
    Err(ApiError::Unavailable(
        "the search index kept changing; retry shortly".into(),
    ))
}

/// Decides the caller's access to each of `units` (at most [`CHECKS_AT_ONCE`] at a time).
async fn decide(
    state: &AppState,
    ctx: &RequestContext,
    units: Vec<(u32, AccessUnit)>,
    access: &mut Access,
) -> Result<(), ApiError> {
    let mut pending = units.into_iter();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < CHECKS_AT_ONCE {
            let Some((
                unit,
                AccessUnit {
                    repository,
                    package,
                },
            )) = pending.next()
            else {
                break;
            };
            running.push(async move {
                let decision = state
                    .auth
                    .check(&ctx.caller, &package, &repository, Action::Read)
                    .await;
                (unit, decision)
            });
        }
        let Some((unit, decision)) = running.next().await else {
            return Ok(());
        };
        let readable = match decision {
            Ok(_) => true,
            Err(AuthError::Unavailable(message)) => return Err(ApiError::Unavailable(message)),
            Err(AuthError::Hidden | AuthError::Forbidden(_) | AuthError::Unauthenticated(_)) => {
                false
            }
        };
        access.decide(unit, readable);
    }
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
