//! Stars by user: CouchDB's `starredByUser` view (`GET /-/_view/starredByUser?key="USER"`),
//! which `npm stars` of npm 1.x reads, and the index behind it.
//!
//! A package's stars live on its record; the view needs the other direction. Each star is also
//! one key-value entry (`starred/<user>`, id = the package name), written after the package's
//! update commits, so a user's stars are one listing, never a scan of every package. The record
//! stays the truth: the view keeps only entries whose record still holds the star (an update
//! that committed while its index write failed shows up there, not as a wrong row), and only
//! packages the caller may read.

use std::collections::BTreeSet;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::{ApiError, AppState, RequestContext, json_response};
use crate::auth::{Action, AuthError, Authorizer};
use crate::domain::{PackageName, RepoRef};

/// The key-value namespace of one user's stars.
fn namespace(user: &str) -> String {
    format!("starred/{user}")
}

/// Brings the index in line with a committed change of `name`'s stars. Failures are logged, not
/// returned: the change itself has committed, and the view checks every entry against it.
pub(crate) async fn record_change(
    state: &AppState,
    name: &PackageName,
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
) {
    let Some(kv) = state.kv.as_ref() else {
        return;
    };
    for user in after.difference(before) {
        if let Err(e) = kv.put(&namespace(user), name.as_str(), b"1", None).await {
            tracing::warn!(package = %name, error = %e, "star not indexed");
        }
    }
    for user in before.difference(after) {
        if let Err(e) = kv.delete(&namespace(user), name.as_str()).await {
            tracing::warn!(package = %name, error = %e, "unstar not indexed");
        }
    }
}

/// `GET /-/_view/starredByUser?key="USER"`: `{rows: [{id, key, value}]}`, one row per package
/// the user starred that the caller may read, by name.
pub(crate) async fn starred_by_user(
    state: &AppState,
    ctx: &RequestContext,
) -> Result<Response, ApiError> {
    let user = view_key(&ctx.path_and_query)?;
    if !super::search::may_browse(state, ctx) {
        return Err(ApiError::Unauthorized(
            "authentication required: log in with npm login or put a GitHub token in .npmrc".into(),
        ));
    }
    let mut names: Vec<PackageName> = match state.kv.as_ref() {
        Some(kv) => kv
            .list(&namespace(&user))
            .await?
            .into_iter()
            .filter_map(|(id, _)| PackageName::parse(&id).ok())
            .collect(),
        None => Vec::new(),
    };
    names.sort();
    let mut rows = Vec::new();
    for name in names {
        let Some(record) = state.metadata.package(&name).await? else {
            continue;
        };
        if !record.stars.contains(&user) || record.unpublished.is_some() {
            continue;
        }
        if !readable(state, ctx, &name, record.repository.clone()).await? {
            continue;
        }
        rows.push(json!({ "id": name.as_str(), "key": user, "value": name.as_str() }));
    }
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "total_rows": rows.len(), "offset": 0, "rows": rows }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Whether the caller may read the package (GitHub's outage fails the answer, not the row).
async fn readable(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    repository: Option<RepoRef>,
) -> Result<bool, ApiError> {
    if matches!(state.auth, Authorizer::Open) {
        return Ok(true);
    }
    let Some(repo) = repository.or_else(|| RepoRef::unbound(name)) else {
        return Ok(false);
    };
    match state
        .auth
        .check(&ctx.caller, name, &repo, Action::Read)
        .await
    {
        Ok(_) => Ok(true),
        Err(AuthError::Unavailable(message)) => Err(ApiError::Unavailable(message)),
        Err(AuthError::Hidden | AuthError::Forbidden(_) | AuthError::Unauthenticated(_)) => {
            Ok(false)
        }
    }
}

/// The view's `key`: a JSON string, as CouchDB takes it (`?key=%22alice%22`).
fn view_key(path_and_query: &str) -> Result<String, ApiError> {
    let query = path_and_query
        .split_once('?')
        .map_or("", |(_, query)| query);
    let key = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::BadRequest("the view needs a key: ?key=\"USER\"".into()))?;
    match serde_json::from_str::<serde_json::Value>(&key) {
        Ok(serde_json::Value::String(user)) if !user.is_empty() => Ok(user),
        _ => Err(ApiError::BadRequest(format!(
            "the view's key must be a user name as a JSON string (?key=\"USER\"), not {key}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::view_key;

    #[test]
    fn the_key_is_a_json_string() {
        assert_eq!(
            view_key("/-/_view/starredByUser?key=%22alice%22").unwrap(),
            "alice"
        );
        assert!(view_key("/-/_view/starredByUser?key=alice").is_err());
        assert!(view_key("/-/_view/starredByUser").is_err());
        assert!(view_key("/-/_view/starredByUser?key=%22%22").is_err());
    }
}
