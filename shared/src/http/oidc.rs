//! Trusted publishing's routes: `POST /-/npm/v1/oidc/token/exchange/package/NAME` (auth group),
//! which npm ≥ 11.5 calls from GitHub Actions before it publishes, and
//! `GET /-/package/NAME/visibility` (metadata group), which it asks to decide on provenance.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::audit::AuditEntry;
use super::{ApiError, AppState, RequestContext, json_response};
use crate::auth::{Action, CredentialKind, bearer};
use crate::domain::PackageName;
use crate::domain::audit::{AuditAction, AuditActor};

/// The audience ID tokens must be issued for: `npm:<registry hostname>`, as npm requests it
/// (`new URL(registry).hostname`). The hostname is the configured public URL's when
/// `REGISTRY_PUBLIC_URL` is set; without it, the request's `Host` (on Lambda, the host API
/// Gateway routed the request by; behind another proxy, set the public URL).
pub fn audience(state: &AppState, ctx: &RequestContext) -> Option<String> {
    let host = if let Some(url) = &state.config.server.public_url {
        url::Url::parse(url).ok()?.host_str()?.to_string()
    } else {
        let host = ctx.headers.get(header::HOST)?.to_str().ok()?;
        // `host:port` or `[v6]:port`, parsed as a URL authority does.
        url::Url::parse(&format!("http://{host}/"))
            .ok()?
            .host_str()?
            .to_string()
    };
    Some(format!("npm:{host}"))
}

/// A refusal as npm reads it: it logs `message` (at verbose level); `error` as everywhere.
fn refusal(error: ApiError) -> Response {
    let text = error.to_string();
    let code = error.code().as_str();
    let (parts, _) = error.into_response().into_parts();
    let body = serde_json::to_vec(&json!({ "error": text, "message": text, "code": code }))
        .unwrap_or_default();
    let mut response = Response::from_parts(parts, Body::from(body));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// `POST /-/npm/v1/oidc/token/exchange/package/NAME`: the ID token (the bearer) for a token that
/// may publish NAME. Failures carry `message` saying which check failed.
pub async fn exchange(state: &AppState, ctx: &RequestContext, name: &PackageName) -> Response {
    match try_exchange(state, ctx, name).await {
        Ok(response) => response,
        Err(e) => {
            ctx.audit.refused_with(e.to_string());
            refusal(e)
        }
    }
}

async fn try_exchange(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<Response, ApiError> {
    let trusted = state
        .auth
        .github()
        .and_then(|g| g.trusted_publishing())
        .ok_or_else(|| {
            ApiError::NotFound(
                "trusted publishing needs GitHub mode (REGISTRY_AUTH=github) on this registry"
                    .into(),
            )
        })?;
    state
        .scopes
        .stores(name)
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    let id_token = bearer(&ctx.headers).ok_or_else(|| {
        ApiError::Unauthorized(
            "the exchange needs the workflow's OIDC ID token as the bearer token".into(),
        )
    })?;
    let audience = audience(state, ctx).ok_or_else(|| {
        ApiError::BadRequest("the request names no host to check the audience against".into())
    })?;
    let (token, grant) = trusted
        .exchange_noting(name, id_token, &audience, |run| {
            ctx.audit.set_actor(
                AuditActor::Workflow(run.clone()),
                CredentialKind::TrustedPublishing,
            );
        })
        .await?;
    ctx.audit.set(vec![
        AuditEntry::new(AuditAction::TokenExchange)
            .detail(format!("configuration {}", grant.configuration_id)),
    ]);
    tracing::info!(
        package = %name,
        repository = %grant.run.repository,
        workflow = %grant.run.workflow_ref,
        run_id = %grant.run.run_id,
        configuration = %grant.configuration_id,
        "trusted-publishing token issued"
    );
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "token": token, "expires": grant.expires.to_rfc3339() }),
    ))
}

/// `GET /-/package/NAME/visibility`: `{"public": bool}`, whether the package's repository is
/// public, for callers who may read the package (anyone else gets the missing answer). Open
/// mode binds no repository: never public.
pub async fn visibility(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<Response, ApiError> {
    let Some(package) = state.viewed_package(name).await? else {
        return Err(state.missing(ctx, name).await);
    };
    state
        .authorize(ctx, name, Some(&package), Action::Read)
        .await?;
    let public = match (&package.repository, state.auth.github()) {
        (Some(repo), Some(_)) => state.auth.repository_is_public(repo).await?,
        _ => false,
    };
    Ok(json_response(StatusCode::OK, &json!({ "public": public })))
}
