//! The HTTP layer's one error type, mapped to a status and a `{"error": "..."}` body in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::routes::RouteError;
use crate::auth::AuthError;
use crate::auth::oidc::{ExchangeError, OidcError};
use crate::domain::publish::{DocumentError, PublishError};
use crate::storage::StoreError;

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 404 for a package this registry does not have.
    pub fn package_not_found(name: impl std::fmt::Display) -> Self {
        ApiError::NotFound(format!("package '{name}' not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"registry\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            _ => {}
        }
        response
    }
}

impl From<DocumentError> for ApiError {
    fn from(e: DocumentError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(m) => ApiError::Unauthorized(m),
            AuthError::Forbidden(m) => ApiError::Forbidden(m),
            // Handlers that know the package answer with `AppState::missing`; this is the
            // fallback for those that do not.
            AuthError::Hidden => ApiError::NotFound("not found".into()),
            AuthError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<ExchangeError> for ApiError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Token(OidcError::Unavailable(_)) => ApiError::Unavailable(e.to_string()),
            ExchangeError::Token(_) | ExchangeError::Replayed => {
                ApiError::Unauthorized(e.to_string())
            }
            ExchangeError::Event(_) | ExchangeError::Mismatch { .. } => {
                ApiError::Forbidden(e.to_string())
            }
            ExchangeError::NoTrustedPublisher { .. } => ApiError::NotFound(e.to_string()),
            ExchangeError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::RevisionConflict => ApiError::Conflict(
                "the package was changed by another request at the same time; try again".into(),
            ),
            StoreError::VersionExists => {
                ApiError::Conflict("cannot publish over a previously published version".into())
            }
            StoreError::VersionRetired => ApiError::Conflict(
                "this version was unpublished and its number can never be used again".into(),
            ),
            StoreError::NoSuchVersion(v) => ApiError::NotFound(format!("version {v} not found")),
            StoreError::Unavailable(m) => ApiError::Unavailable(format!(
                "storage is temporarily unavailable ({m}); retry shortly"
            )),
            StoreError::InsufficientStorage(place) => ApiError::InsufficientStorage(format!(
                "the registry's storage is full: no space left in its data directory {place}; \
                 free disk space there and retry (reads still work)"
            )),
            // 503, not 500: the registry is not broken, its storage is not set up; the message
            // names what is missing so whoever reads the client's error knows whom to ask.
            StoreError::MissingResource(what) => ApiError::Unavailable(format!(
                "the registry's storage is not set up: {what} does not exist; an operator must create it"
            )),
            StoreError::EntryExists => ApiError::Conflict("the record already exists".into()),
            StoreError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NotFound => ApiError::NotFound("not found".into()),
            RouteError::MethodNotAllowed => ApiError::MethodNotAllowed,
            RouteError::BadName(name, err) => {
                ApiError::BadRequest(format!("invalid package name '{name}': {err}"))
            }
            RouteError::BadEncoding => {
                ApiError::BadRequest("path is not valid percent-encoded UTF-8".into())
            }
            RouteError::Rejected(rejected) => ApiError::BadRequest(rejected.error.to_string()),
        }
    }
}
