//! Signing in with GitHub (auth group): the web pages' session, and `npm login --auth-type=web`.
//!
//! - `GET /-/web/login` sends the browser to GitHub's authorize page with a fresh `state`, kept
//!   hashed in the KV store for ten minutes and bound to the browser by a short-lived cookie.
//! - `GET /-/web/callback` checks the state against both, exchanges the code for the person's
//!   `gho_` token, asks GitHub who they are, and signs the browser in: the session cookie holds a
//!   read-only registry token (HttpOnly, SameSite=Lax, Secure over https, expiring), whose
//!   record seals the GitHub token like any registry token's, so revoking it (sign-out) ends the
//!   session everywhere.
//! - `POST /-/v1/login` starts an npm web login: two URLs, a login URL the person opens and a
//!   done URL npm polls. The done URL carries a secret `D`; the login URL carries only its
//!   SHA-256, so a login URL seen in a terminal cannot be used to collect the token. A sign-in
//!   through that login URL issues a publish token (what `npm login` gives) and leaves its
//!   claims on the record; the first poll after it signs them into the token and removes the
//!   record. The token itself is never stored (tokens are kept hashed: its record holds only a
//!   preview).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, AppState, RequestContext, json_response};
use crate::auth::github::oauth::OauthApp;
use crate::auth::kv::KvKey;
use crate::auth::tokens::{Claims, TokenScope};
use crate::auth::{CredentialKind, GithubAuth, token_store};
use crate::domain::audit::{AuditAction, AuditActor};
use crate::storage::Consistency;

/// The browser's session cookie: a read-only registry token.
pub(crate) const SESSION_COOKIE: &str = "registry_session";
/// The cookie binding a sign-in's `state` to the browser that started it.
const STATE_COOKIE: &str = "registry_oauth_state";
/// How long a sign-in (or an npm web login) may take: GitHub's codes live this long too.
const PENDING: Duration = Duration::minutes(10);

/// A sign-in under way, between the redirect to GitHub and its callback.
#[derive(Serialize, Deserialize)]
struct SignIn {
    /// The npm web login it completes (the hash of its done secret), if any.
    login: Option<String>,
    /// Where to go afterwards (a path under `/-/web`).
    next: Option<String>,
}

/// An npm web login: pending until a sign-in leaves the claims of the token it issued here.
#[derive(Serialize, Deserialize)]
struct WebLogin {
    /// The issued token's claims (not the token: it is signed again when npm collects it).
    #[serde(default)]
    issued: Option<Claims>,
}

/// A random secret, hex.
fn secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The value of cookie `name` in the request, if sent.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The query parameter `name`, form-decoded.
pub(crate) fn query_param(path_and_query: &str, name: &str) -> Option<String> {
    let query = path_and_query.split_once('?').map(|(_, q)| q)?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Lax always, Secure when served over https.
fn set_cookie(ctx: &RequestContext, name: &str, value: &str, path: &str, max_age: i64) -> String {
    let secure = if ctx.base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// GitHub mode and its OAuth app, if one is configured.
fn signing_in(state: &AppState) -> Option<(&GithubAuth, &OauthApp)> {
    let github = state.auth.github()?;
    Some((github, github.oauth()?))
}

/// The page that says sign-in is not set up.
fn not_configured(state: &AppState, ctx: &RequestContext) -> Response {
    super::web::message(
        state,
        ctx,
        None,
        StatusCode::NOT_FOUND,
        "Sign-in is not available",
        "This registry has no GitHub sign-in configured (REGISTRY_AUTH=github with REGISTRY_GITHUB_OAUTH_CLIENT_ID and REGISTRY_GITHUB_OAUTH_CLIENT_SECRET).",
    )
}

/// `GET /-/web/login`: off to GitHub.
pub(crate) async fn sign_in(state: &AppState, ctx: &RequestContext) -> Result<Response, ApiError> {
    let Some((github, oauth)) = signing_in(state) else {
        return Ok(not_configured(state, ctx));
    };
    // An npm web login names its record by the hash of its done secret.
    let login = query_param(&ctx.path_and_query, "session");
    if let Some(hash) = &login {
        let pending = hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && github.kv().get(&KvKey::web_login(hash)).await?.is_some();
        if !pending {
            return Ok(super::web::message(
                state,
                ctx,
                None,
                StatusCode::NOT_FOUND,
                "This login link has expired",
                "Run npm login again for a new one.",
            ));
        }
    }
    let next = query_param(&ctx.path_and_query, "next")
        .filter(|n| n.starts_with("/-/web") && !n.contains("//") && !n.contains('\\'));
    let state_secret = secret();
    let record = SignIn { login, next };
    github
        .kv()
        .put_json(
            &KvKey::web_sign_in(&state_secret),
            &record,
            Some(Utc::now() + PENDING),
        )
        .await?;
    let callback = format!("{}/-/web/callback", ctx.base_url.trim_end_matches('/'));
    let bound = set_cookie(
        ctx,
        STATE_COOKIE,
        &state_secret,
        &format!("{}/-/web/callback", super::web::base_path(&ctx.base_url)),
        PENDING.num_seconds(),
    );
    Ok(redirect(
        &oauth.authorize_url(&callback, &state_secret),
        &[bound],
    ))
}

/// `GET /-/web/callback`: back from GitHub.
pub(crate) async fn callback(state: &AppState, ctx: &RequestContext) -> Result<Response, ApiError> {
    let Some((github, oauth)) = signing_in(state) else {
        return Ok(not_configured(state, ctx));
    };
    let refused = |heading: &str, text: &str| {
        ctx.audit.unchanged();
        Ok(super::web::message(
            state,
            ctx,
            None,
            StatusCode::BAD_REQUEST,
            heading,
            text,
        ))
    };
    if let Some(error) = query_param(&ctx.path_and_query, "error") {
        let text = match error.as_str() {
            "access_denied" => "You did not authorise the registry on GitHub. Nothing changed.",
            _ => "GitHub did not sign you in. Nothing changed; try again.",
        };
        return refused("Sign-in cancelled", text);
    }
    let (Some(code), Some(state_secret)) = (
        query_param(&ctx.path_and_query, "code"),
        query_param(&ctx.path_and_query, "state"),
    ) else {
        return refused(
            "Sign-in failed",
            "GitHub's answer was incomplete; try again.",
        );
    };
    // The state must be the one this browser was given, and still pending (used once).
    let key = KvKey::web_sign_in(&state_secret);
    let record: Option<SignIn> = github.kv().get_json_with(&key, Consistency::Strong).await?;
    let Some(record) =
        record.filter(|_| cookie(&ctx.headers, STATE_COOKIE) == Some(state_secret.as_str()))
    else {
        return refused(
            "Sign-in failed",
            "This sign-in was not started in this browser, or it expired. Start again.",
        );
    };
    github.kv().delete(&key).await?;
    let callback = format!("{}/-/web/callback", ctx.base_url.trim_end_matches('/'));
    let token = match oauth.exchange(&code, &callback).await {
        Ok(token) => token,
        Err(crate::auth::github::oauth::OauthError::Refused(why)) => {
            return refused("Sign-in failed", &why);
        }
        Err(e) => return Err(ApiError::Unavailable(e.to_string())),
    };
    let user = github.user(token.expose()).await?;
    ctx.audit.set_actor(
        AuditActor::User {
            login: user.login.clone(),
        },
        CredentialKind::GithubToken,
    );
    let mut done = None;
    if let Some(hash) = &record.login {
        let jwt = super::auth::issue_until(
            github,
            &user.login,
            token.expose(),
            TokenScope::Publish,
            None,
            None,
        )
        .await?;
        let issued = github
            .tokens
            .verify(&jwt)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        github
            .kv()
            .put_json(
                &KvKey::web_login(hash),
                &WebLogin {
                    issued: Some(issued),
                },
                Some(Utc::now() + PENDING),
            )
            .await?;
        done = Some(
            "Signed in: npm is logging you in. You can close this tab and return to your terminal.",
        );
    }
    let lifetime = Duration::from_std(github.web_session()).unwrap_or(Duration::hours(12));
    let session = super::auth::issue_until(
        github,
        &user.login,
        token.expose(),
        TokenScope::ReadOnly,
        None,
        Some(Utc::now() + lifetime),
    )
    .await?;
    let claims = github
        .tokens
        .verify(&session)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    ctx.audit.set(vec![
        super::audit::AuditEntry::new(AuditAction::Login)
            .detail(format!("web sign-in, session token key {}", claims.jti)),
    ]);
    tracing::info!(user = %user.login, "signed in on the web");
    let path = super::web::base_path(&ctx.base_url);
    let cookies = [
        set_cookie(
            ctx,
            SESSION_COOKIE,
            &session,
            &format!("{path}/"),
            lifetime.num_seconds(),
        ),
        set_cookie(ctx, STATE_COOKIE, "", &format!("{path}/-/web/callback"), 0),
    ];
    if let Some(text) = done {
        let mut page = super::web::message(
            state,
            ctx,
            Some(&user.login),
            StatusCode::OK,
            "Signed in",
            text,
        );
        for c in &cookies {
            if let Ok(value) = HeaderValue::from_str(c) {
                page.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        return Ok(page);
    }
    let next = record.next.unwrap_or_else(|| "/-/web".into());
    Ok(redirect(&format!("{path}{next}"), &cookies))
}

/// `POST /-/web/logout`: revokes the session's token and forgets the cookie.
pub(crate) async fn sign_out(state: &AppState, ctx: &RequestContext) -> Result<Response, ApiError> {
    let path = super::web::base_path(&ctx.base_url);
    if let (Some(github), Some(session)) =
        (state.auth.github(), cookie(&ctx.headers, SESSION_COOKIE))
        && let Ok(claims) = github.tokens.verify(session)
    {
        token_store::remove(github.kv(), &claims.sub, &claims.jti).await?;
        ctx.audit.set_actor(
            AuditActor::User {
                login: claims.sub.clone(),
            },
            CredentialKind::RegistryToken,
        );
        ctx.audit.set(vec![
            super::audit::AuditEntry::new(AuditAction::TokenRevoke)
                .detail(format!("web sign-out, session token key {}", claims.jti)),
        ]);
    } else {
        ctx.audit.unchanged();
    }
    Ok(redirect(
        &format!("{path}/-/web"),
        &[set_cookie(ctx, SESSION_COOKIE, "", &format!("{path}/"), 0)],
    ))
}

/// `POST /-/v1/login`: an npm web login's two URLs. Without an OAuth app it answers 404, on which
/// npm falls back to the legacy login (a GitHub token as the password).
pub(crate) async fn start_npm_login(
    state: &AppState,
    ctx: &RequestContext,
) -> Result<Response, ApiError> {
    let Some((github, _)) = signing_in(state) else {
        return Err(ApiError::NotFound(
            "web login is not available; npm falls back to the legacy login".into(),
        ));
    };
    let done_secret = secret();
    let hash = crate::auth::kv::sha256_hex(&done_secret);
    github
        .kv()
        .put_json(
            &KvKey::web_login(&hash),
            &WebLogin { issued: None },
            Some(Utc::now() + PENDING),
        )
        .await?;
    let base = ctx.base_url.trim_end_matches('/');
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "loginUrl": format!("{base}/-/web/login?session={hash}"),
            "doneUrl": format!("{base}/-/v1/login/done?session={done_secret}"),
        }),
    ))
}

/// `GET /-/v1/login/done`: 202 with `Retry-After` until the sign-in is done, then the token once.
pub(crate) async fn npm_login_done(
    state: &AppState,
    ctx: &RequestContext,
) -> Result<Response, ApiError> {
    let gone = || {
        ApiError::NotFound("this login has expired or was already used; run npm login again".into())
    };
    let (Some(github), Some(done_secret)) = (
        signing_in(state).map(|(github, _)| github),
        query_param(&ctx.path_and_query, "session"),
    ) else {
        return Err(gone());
    };
    let key = KvKey::web_login(&crate::auth::kv::sha256_hex(&done_secret));
    let record: Option<WebLogin> = github.kv().get_json_with(&key, Consistency::Strong).await?;
    match record {
        None => Err(gone()),
        Some(WebLogin { issued: None }) => {
            let mut response = json_response(StatusCode::ACCEPTED, &json!({}));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(response)
        }
        Some(WebLogin {
            issued: Some(claims),
        }) => {
            github.kv().delete(&key).await?;
            let token = github
                .tokens
                .sign(&claims)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(json_response(StatusCode::OK, &json!({ "token": token })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_query_parameters_are_read_as_browsers_send_them() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; registry_session=tok; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "missing"), None);
        assert_eq!(
            query_param("/-/web/callback?code=abc&state=x%2By", "state").as_deref(),
            Some("x+y")
        );
        assert_eq!(
            crate::http::web::base_path("https://reg.example/npm/"),
            "/npm"
        );
        assert_eq!(crate::http::web::base_path("http://127.0.0.1:4873"), "");
    }
}
