//! Auth route group: whoami and login. In open mode anyone is "anonymous" and login hands out a
//! token that is not needed (npm insists on having one before it publishes).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{ApiError, AppState, RequestContext, Route, json_response};

/// Handles an auth route.
pub async fn handle(
    _state: &AppState,
    ctx: &RequestContext,
    route: Route,
    _body: Body,
) -> Result<Response, ApiError> {
    match route {
        Route::Whoami => Ok(json_response(
            StatusCode::OK,
            &json!({ "username": ctx.identity.username() }),
        )),
        // A 4xx makes npm fall back to the legacy login below.
        Route::WebLogin => Err(ApiError::NotFound(
            "web login is not available; npm falls back to the legacy login".into(),
        )),
        Route::LegacyLogin(user) => {
            let token: [u8; 24] = rand::random();
            Ok(json_response(
                StatusCode::CREATED,
                &json!({ "ok": true, "id": format!("org.couchdb.user:{user}"), "token": hex::encode(token) }),
            ))
        }
        _ => Err(ApiError::NotFound("not found".into())),
    }
}
