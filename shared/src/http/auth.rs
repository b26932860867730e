//! Auth route group: `npm whoami`, `npm login`, `npm token` and the trusted-publishing exchange.
//!
//! GitHub mode: `npm login` (legacy flow; the web flow's endpoint answers 404 so npm falls back to
//! it) takes the GitHub login as user name and a GitHub token as password, and returns a registry
//! token (see `auth::tokens`). Open mode: everyone is "anonymous" and login hands out a token
//! nobody checks (npm insists on having one before it publishes).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::audit::AuditEntry;
use super::routes::{AuthRoute, TokenKey};
use super::{ApiError, AppState, RequestContext, json_response, parse_json, read_body};
use crate::auth::CredentialKind;
use crate::auth::token_store;
use crate::auth::tokens::{Lineage, TokenRecord, TokenScope};
use crate::auth::{GithubAuth, Identity};
use crate::domain::audit::{AuditAction, AuditActor};

/// Handles an auth route.
pub async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: AuthRoute,
    body: Body,
) -> Result<Response, ApiError> {
    match route {
        AuthRoute::Whoami => whoami(state, ctx),
        // Without an OAuth app, a 404 makes npm fall back to the legacy login below.
        AuthRoute::WebLogin => super::web_auth::start_npm_login(state, ctx).await,
        AuthRoute::WebLoginDone => super::web_auth::npm_login_done(state, ctx).await,
        AuthRoute::WebSignIn => super::web_auth::sign_in(state, ctx).await,
        AuthRoute::WebCallback => super::web_auth::callback(state, ctx).await,
        AuthRoute::WebSignOut => super::web_auth::sign_out(state, ctx).await,
        AuthRoute::LegacyLogin { user } => {
            let body = read_body(state, body, ctx).await?;
            login(state, ctx, &user, body.bytes()).await
        }
        AuthRoute::Session => {
            let body = read_body(state, body, ctx).await?;
            session(state, ctx, body.bytes()).await
        }
        AuthRoute::LegacyUser { user } => Ok(user_document(&user)),
        AuthRoute::LegacyUserUpdate { user } => {
            // The body is the merged user document; what matters is who sent it.
            drop(read_body(state, body, ctx).await?);
            user_update(state, ctx, &user)
        }
        AuthRoute::TokensList => list_tokens(github(state)?, ctx).await,
        AuthRoute::TokenCreate => {
            let body = read_body(state, body, ctx).await?;
            create_token(github(state)?, ctx, body.bytes()).await
        }
        AuthRoute::TokenDelete { key } => revoke_token(github(state)?, ctx, &key).await,
        AuthRoute::OidcExchange { name } => Ok(super::oidc::exchange(state, ctx, &name).await),
    }
}

fn github(state: &AppState) -> Result<&GithubAuth, ApiError> {
    state.auth.github().ok_or_else(|| {
        ApiError::NotFound("tokens are only issued in GitHub mode (REGISTRY_AUTH=github)".into())
    })
}

pub(super) fn signed_in(ctx: &RequestContext) -> Result<&str, ApiError> {
    match &ctx.caller.identity {
        Identity::User(login) => Ok(login),
        Identity::Anonymous => Err(ApiError::Unauthorized(
            "authentication required: log in with npm login or put a GitHub token in .npmrc".into(),
        )),
        Identity::Installation | Identity::Workflow(_) => Err(ApiError::Forbidden(
            "this credential acts for no GitHub user: tokens are managed with a user's GitHub token or npm login".into(),
        )),
    }
}

fn whoami(state: &AppState, ctx: &RequestContext) -> Result<Response, ApiError> {
    let username = match (&ctx.caller.identity, state.auth.github()) {
        (Identity::User(_) | Identity::Installation | Identity::Workflow(_), _) => {
            ctx.caller.identity.username()
        }
        (Identity::Anonymous, None) => "anonymous",
        (Identity::Anonymous, Some(_)) => signed_in(ctx)?,
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "username": username }),
    ))
}

async fn login(
    state: &AppState,
    ctx: &RequestContext,
    user: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let doc: Value = parse_json(body)?;
    // npm 1.3 sends no password, only `password_sha` and `salt`: nothing to check a GitHub
    // token against. CouchDB's answer for an existing user (409) makes it read the user
    // document and send the update with its credentials (Basic or its session), checked then.
    if state.auth.github().is_some()
        && doc.get("password").is_none()
        && doc.get("password_sha").is_some()
    {
        ctx.audit.unchanged();
        return Err(ApiError::Conflict(format!(
            "user {user} exists: send the update (/-rev/) with your credentials to sign in"
        )));
    }
    let (login, token) = sign_in(state, ctx, user, doc["password"].as_str()).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "ok": true, "id": format!("org.couchdb.user:{login}"), "token": token }),
    ))
}

/// The user document npm 1.3 reads between its 409 and its update: the same for every name, so
/// it tells nobody who has signed in here (users are GitHub's; nothing is stored for them).
fn user_document(user: &str) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "_id": format!("org.couchdb.user:{user}"),
            "_rev": "1-0",
            "name": user,
            "type": "user",
            "roles": [],
        }),
    )
}

/// `PUT /-/user/org.couchdb.user:NAME/-rev/REV`: npm 1.3's sign-in to an existing user, which
/// holds when the request's own credentials (checked like any request's) are that user's.
fn user_update(state: &AppState, ctx: &RequestContext, user: &str) -> Result<Response, ApiError> {
    if state.auth.github().is_some() {
        let login = signed_in(ctx)?;
        if !login.eq_ignore_ascii_case(user) {
            return Err(ApiError::Forbidden(format!(
                "these credentials are {login}'s, not {user}'s"
            )));
        }
        ctx.audit.set(vec![
            AuditEntry::new(AuditAction::Login).detail("npm 1.x user update"),
        ]);
    } else {
        ctx.audit.unchanged();
    }
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "ok": true, "id": format!("org.couchdb.user:{user}"), "rev": "2-0" }),
    ))
}

/// `POST /_session`: CouchDB's cookie login, as npm 1.x signs in (`{name, password}`, JSON or
/// form-encoded). The `AuthSession` cookie holds a registry token (open mode: any value), which
/// the registry then accepts as it accepts a bearer token.
async fn session(
    state: &AppState,
    ctx: &RequestContext,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (name, password) = if let Ok(doc) = serde_json::from_slice::<Value>(body) {
        (
            doc["name"].as_str().unwrap_or_default().to_string(),
            doc["password"].as_str().map(str::to_string),
        )
    } else {
        let mut name = String::new();
        let mut password = None;
        for (k, v) in url::form_urlencoded::parse(body) {
            match &*k {
                "name" => name = v.into_owned(),
                "password" => password = Some(v.into_owned()),
                _ => {}
            }
        }
        (name, password)
    };
    if name.is_empty() {
        return Err(ApiError::BadRequest(
            "a session needs a name and a password".into(),
        ));
    }
    let (login, token) = sign_in(state, ctx, &name, password.as_deref()).await?;
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "ok": true, "name": login, "roles": [] }),
    );
    let days = state.config.auth.token_days;
    let cookie = format!(
        "{}={token}; Version=1; Path=/; Max-Age={}; HttpOnly; SameSite=Strict",
        crate::auth::SESSION_COOKIE,
        days.saturating_mul(86_400)
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
        response
            .headers_mut()
            .insert(axum::http::header::SET_COOKIE, value);
    }
    Ok(response)
}

/// Checks `user`'s password (GitHub mode: a GitHub token of that user) and issues a registry
/// token: the login as GitHub spells it, and the token.
async fn sign_in(
    state: &AppState,
    ctx: &RequestContext,
    user: &str,
    password: Option<&str>,
) -> Result<(String, String), ApiError> {
    let Some(github) = state.auth.github() else {
        // Open mode: the token is checked by nobody and stored nowhere; nothing to record.
        ctx.audit.unchanged();
        let token: [u8; 24] = rand::random();
        return Ok((user.to_string(), hex::encode(token)));
    };
    let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(
            "login needs a password: give a GitHub token (classic or fine-grained) as the password"
                .into(),
        )
    })?;
    let account = github.user(password).await?;
    if !account.login.eq_ignore_ascii_case(user) {
        return Err(ApiError::Unauthorized(format!(
            "that GitHub token belongs to {}, not {user}; log in as {} or use {user}'s token",
            account.login, account.login
        )));
    }
    // The caller is who GitHub says the password's token belongs to.
    ctx.audit.set_actor(
        AuditActor::User {
            login: account.login.clone(),
        },
        CredentialKind::GithubToken,
    );
    let jwt = issue(github, &account.login, password, TokenScope::Publish, None).await?;
    let claims = github
        .tokens
        .verify(&jwt)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    ctx.audit.set(vec![
        AuditEntry::new(AuditAction::Login).detail(format!("token key {}", claims.jti)),
    ]);
    tracing::info!(user = %account.login, "registry token issued");
    Ok((account.login, jwt))
}

async fn issue(
    github: &GithubAuth,
    login: &str,
    github_token: &str,
    scope: TokenScope,
    lineage: Option<&Lineage>,
) -> Result<String, ApiError> {
    issue_until(
        github,
        login,
        github_token,
        scope,
        lineage,
        lineage.map(|l| l.expires),
    )
    .await
}

/// A registry token for `login`, its record saved, expiring no later than `until` (a web
/// session's lasts as long as the session).
pub(super) async fn issue_until(
    github: &GithubAuth,
    login: &str,
    github_token: &str,
    scope: TokenScope,
    lineage: Option<&Lineage>,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<String, ApiError> {
    let (jwt, record) = github
        .tokens
        .issue_until(login, github_token, scope, lineage, until)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    token_store::save(github.kv(), &record).await?;
    Ok(jwt)
}

fn token_json(record: &TokenRecord) -> Value {
    json!({
        "key": record.jti,
        "token": record.preview,
        "created": record.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "updated": record.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "expires": record.expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "readonly": record.scope.is_read_only(),
        "automation": false,
        "cidr_whitelist": null,
    })
}

async fn list_tokens(github: &GithubAuth, ctx: &RequestContext) -> Result<Response, ApiError> {
    let login = signed_in(ctx)?;
    let objects: Vec<Value> = token_store::records(github.kv(), login)
        .await?
        .iter()
        .map(token_json)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "total": objects.len(), "objects": objects, "urls": {} }),
    ))
}

/// A read-only token may list tokens but not create or revoke them: otherwise a leaked read-only
/// token (say, a CI cache's) could mint itself a publish token.
fn refuse_read_only(ctx: &RequestContext) -> Result<(), ApiError> {
    if ctx.caller.is_read_only_token() {
        return Err(ApiError::Forbidden(
            "this registry token is read-only; it cannot create or revoke tokens".into(),
        ));
    }
    Ok(())
}

/// `npm token create`: a new token for the caller, sealing the GitHub token they authenticated
/// with (directly, or behind the registry token they used). npm sends the account password,
/// which GitHub accounts do not have here; the caller's credentials already prove who they are.
async fn create_token(
    github: &GithubAuth,
    ctx: &RequestContext,
    body: &[u8],
) -> Result<Response, ApiError> {
    let login = signed_in(ctx)?.to_string();
    refuse_read_only(ctx)?;
    let doc: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(body)?
    };
    let scope = TokenScope::from_readonly(doc["readonly"].as_bool().unwrap_or(false));
    let github_token = ctx
        .caller
        .github_token()
        .ok_or_else(|| ApiError::Unauthorized("authentication required".into()))?;
    // Minted with a registry token: no longer-lived than it, and revoked with it.
    let lineage = ctx.caller.registry_token().map(|t| &t.lineage);
    let jwt = issue(github, &login, github_token, scope, lineage).await?;
    let claims = github
        .tokens
        .verify(&jwt)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let record = token_store::records(github.kv(), &login)
        .await?
        .into_iter()
        .find(|r| r.jti == claims.jti)
        .ok_or_else(|| ApiError::Internal("new token record not found".into()))?;
    ctx.audit
        .set(vec![AuditEntry::new(AuditAction::TokenCreate).detail(
            format!(
                "token key {}{}",
                record.jti,
                if record.scope.is_read_only() {
                    ", read-only"
                } else {
                    ""
                }
            ),
        )]);
    let mut out = token_json(&record);
    out["token"] = json!(jwt);
    Ok(json_response(StatusCode::OK, &out))
}

async fn revoke_token(
    github: &GithubAuth,
    ctx: &RequestContext,
    key: &TokenKey,
) -> Result<Response, ApiError> {
    let key = key.expose();
    let login = signed_in(ctx)?;
    refuse_read_only(ctx)?;
    // `npm token revoke` sends a token's key, or the whole token when given one: a token this
    // registry signed for the caller is named by its id (expired or not). The path is never
    // echoed: it may be a secret.
    let key = match github.tokens.claims_of_any_age(key) {
        Ok(claims) if claims.sub.eq_ignore_ascii_case(login) => claims.jti,
        _ => key.to_string(),
    };
    if !token_store::records(github.kv(), login)
        .await?
        .iter()
        .any(|r| r.jti == key)
    {
        return Err(ApiError::NotFound(format!(
            "{login} has no such token; npm token list shows the keys of your tokens"
        )));
    }
    // Only a key that names one of the caller's tokens is recorded: the path may be a token.
    ctx.audit.set(vec![
        AuditEntry::new(AuditAction::TokenRevoke).detail(format!("token key {key}")),
    ]);
    token_store::remove(github.kv(), login, &key).await?;
    github.forget_tokens(login);
    tracing::info!(user = %login, token = %key, "registry token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
