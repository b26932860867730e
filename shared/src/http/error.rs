//! The HTTP layer's one error type, mapped to a status and a `{"error": "...", "code": "..."}`
//! body in one place. `error` is prose for people (npm prints it); `code` is a stable name for
//! programs and tests (npm ignores fields it does not know). The codes are listed in
//! `docs/errors.md`; a code, once shipped, keeps its meaning.

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
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
    /// An error finer than its status, with its own code (the conversions below make these).
    #[error("{1}")]
    Coded(ErrorCode, String),
}

/// The stable machine-readable name of an error, sent as `code` beside `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400, any other bad input.
    BadRequest,
    /// 400, a package name that is not a valid npm name.
    InvalidPackageName,
    /// 400, a path that is not valid percent-encoded UTF-8.
    InvalidPathEncoding,
    /// 400, a publish document that does not parse or does not describe a publish.
    InvalidDocument,
    /// 400, a publish refused by a rule of its contents (tarball, versions, tags).
    InvalidPublish,
    /// 400, the version's manifest says other than the tarball's package.json (manifest confusion).
    ManifestMismatch,
    /// 400, the provenance bundle failed a check (signature, certificate, subject, repository).
    ProvenanceRefused,
    /// 401, no or an unusable credential.
    Unauthorized,
    /// 401, an ID token that failed verification.
    InvalidIdToken,
    /// 401, an ID token already exchanged once.
    IdTokenReplayed,
    /// 403, the caller may not do this.
    Forbidden,
    /// 403, the workflow does not match the package's trusted publisher.
    TrustMismatch,
    /// 404, no such route or thing (also what an outsider hears for a hidden package).
    NotFound,
    /// 404, no such package (or one the caller may not see).
    PackageNotFound,
    /// 404, the package exists but not this version.
    VersionNotFound,
    /// 404, the package has no trusted publisher for this workflow.
    NoTrustedPublisher,
    /// 405.
    MethodNotAllowed,
    /// 409, any other conflict.
    Conflict,
    /// 409, another request changed the package at the same time.
    RevisionConflict,
    /// 409, the version is already published.
    VersionExists,
    /// 409, the version was unpublished and its number is retired.
    VersionRetired,
    /// 409, the record already exists.
    EntryExists,
    /// 410, the version was unpublished.
    Gone,
    /// 413, the request body is over the limit.
    BodyTooLarge,
    /// 503, a dependency (GitHub, the OIDC issuer) is unavailable.
    Unavailable,
    /// 503, storage is temporarily unavailable.
    StorageUnavailable,
    /// 503, the storage's table or bucket does not exist.
    StorageNotSetUp,
    /// 507, the storage is full (503 from `/-/ready`).
    StorageFull,
    /// 503 from `/-/ready`: the storage has failed.
    StorageFailed,
    /// 403, the name's origin is upstream: it is not published here.
    OriginUpstream,
    /// 502, the upstream registry could not answer and nothing is kept for this request.
    UpstreamUnavailable,
    /// 502, the upstream's tarball does not match the integrity its document declares.
    UpstreamIntegrity,
    /// 508, the request already passed through this registry (`Via`).
    UpstreamLoop,
    /// 500.
    Internal,
}

impl ErrorCode {
    /// The code as sent in the body.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidPackageName => "invalid_package_name",
            ErrorCode::InvalidPathEncoding => "invalid_path_encoding",
            ErrorCode::InvalidDocument => "invalid_document",
            ErrorCode::InvalidPublish => "invalid_publish",
            ErrorCode::ManifestMismatch => "manifest_mismatch",
            ErrorCode::ProvenanceRefused => "provenance_refused",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidIdToken => "invalid_id_token",
            ErrorCode::IdTokenReplayed => "id_token_replayed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TrustMismatch => "trust_mismatch",
            ErrorCode::NotFound => "not_found",
            ErrorCode::PackageNotFound => "package_not_found",
            ErrorCode::VersionNotFound => "version_not_found",
            ErrorCode::NoTrustedPublisher => "no_trusted_publisher",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RevisionConflict => "revision_conflict",
            ErrorCode::VersionExists => "version_exists",
            ErrorCode::VersionRetired => "version_retired",
            ErrorCode::EntryExists => "entry_exists",
            ErrorCode::Gone => "gone",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::StorageNotSetUp => "storage_not_set_up",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::OriginUpstream => "origin_upstream",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::UpstreamIntegrity => "upstream_integrity",
            ErrorCode::UpstreamLoop => "upstream_loop",
            ErrorCode::Internal => "internal",
        }
    }

    /// The status every error with this code answers.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidPackageName
            | ErrorCode::InvalidPathEncoding
            | ErrorCode::InvalidDocument
            | ErrorCode::InvalidPublish
            | ErrorCode::ManifestMismatch
            | ErrorCode::ProvenanceRefused => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized | ErrorCode::InvalidIdToken | ErrorCode::IdTokenReplayed => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::Forbidden | ErrorCode::TrustMismatch | ErrorCode::OriginUpstream => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::UpstreamUnavailable | ErrorCode::UpstreamIntegrity => {
                StatusCode::BAD_GATEWAY
            }
            ErrorCode::UpstreamLoop => StatusCode::LOOP_DETECTED,
            ErrorCode::NotFound
            | ErrorCode::PackageNotFound
            | ErrorCode::VersionNotFound
            | ErrorCode::NoTrustedPublisher => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict
            | ErrorCode::RevisionConflict
            | ErrorCode::VersionExists
            | ErrorCode::VersionRetired
            | ErrorCode::EntryExists => StatusCode::CONFLICT,
            ErrorCode::Gone => StatusCode::GONE,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable
            | ErrorCode::StorageUnavailable
            | ErrorCode::StorageNotSetUp
            | ErrorCode::StorageFailed => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// The status code.
    pub(crate) fn status(&self) -> StatusCode {
        self.code().status()
    }

    /// The stable code sent beside the message.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::Gone(_) => ErrorCode::Gone,
            ApiError::PayloadTooLarge(_) => ErrorCode::BodyTooLarge,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::Coded(code, _) => *code,
        }
    }

    /// An error with a code finer than its status.
    pub(crate) fn coded(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Coded(code, message.into())
    }

    /// A 404 for a version the package does not have (or has no more).
    pub fn version_not_found(
        name: impl std::fmt::Display,
        version: impl std::fmt::Display,
    ) -> Self {
        ApiError::coded(
            ErrorCode::VersionNotFound,
            format!("version {version} of {name} not found"),
        )
    }

    /// A 404 for a package this registry does not have.
    pub(crate) fn package_not_found(name: impl std::fmt::Display) -> Self {
        ApiError::coded(
            ErrorCode::PackageNotFound,
            format!("package '{name}' not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let body = serde_json::json!({ "error": self.to_string(), "code": self.code().as_str() });
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
        ApiError::coded(ErrorCode::InvalidDocument, e.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        let code = match e {
            PublishError::ManifestConfusion(_) => ErrorCode::ManifestMismatch,
            PublishError::Provenance(_) => ErrorCode::ProvenanceRefused,
            _ => ErrorCode::InvalidPublish,
        };
        ApiError::coded(code, e.to_string())
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
            ExchangeError::Token(_) => ApiError::coded(ErrorCode::InvalidIdToken, e.to_string()),
            ExchangeError::Replayed => ApiError::coded(ErrorCode::IdTokenReplayed, e.to_string()),
            ExchangeError::Event(_) | ExchangeError::Mismatch { .. } => {
                ApiError::coded(ErrorCode::TrustMismatch, e.to_string())
            }
            ExchangeError::NoTrustedPublisher { .. } => {
                ApiError::coded(ErrorCode::NoTrustedPublisher, e.to_string())
            }
            ExchangeError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::RevisionConflict => ApiError::coded(
                ErrorCode::RevisionConflict,
                "the package was changed by another request at the same time; try again",
            ),
            StoreError::VersionExists => ApiError::coded(
                ErrorCode::VersionExists,
                "cannot publish over a previously published version",
            ),
            StoreError::VersionRetired => ApiError::coded(
                ErrorCode::VersionRetired,
                "this version was unpublished and its number can never be used again",
            ),
            StoreError::NoSuchVersion(v) => {
                ApiError::coded(ErrorCode::VersionNotFound, format!("version {v} not found"))
            }
            StoreError::Unavailable(m) => ApiError::coded(
                ErrorCode::StorageUnavailable,
                format!("storage is temporarily unavailable ({m}); retry shortly"),
            ),
            StoreError::InsufficientStorage(place) => ApiError::coded(
                ErrorCode::StorageFull,
                format!(
                    "the registry's storage is full: no space left in its data directory {place}; \
                     free disk space there and retry (reads still work)"
                ),
            ),
            // 503, not 500: the registry is not broken, its storage is not set up; the message
            // names what is missing so whoever reads the client's error knows whom to ask.
            StoreError::MissingResource(what) => ApiError::coded(
                ErrorCode::StorageNotSetUp,
                format!(
                    "the registry's storage is not set up: {what} does not exist; an operator must create it"
                ),
            ),
            StoreError::EntryExists => {
                ApiError::coded(ErrorCode::EntryExists, "the record already exists")
            }
            StoreError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NotFound => ApiError::NotFound("not found".into()),
            RouteError::MethodNotAllowed => ApiError::MethodNotAllowed,
            RouteError::BadName(name, err) => ApiError::coded(
                ErrorCode::InvalidPackageName,
                format!("invalid package name '{name}': {err}"),
            ),
            RouteError::BadEncoding => ApiError::coded(
                ErrorCode::InvalidPathEncoding,
                "path is not valid percent-encoded UTF-8",
            ),
            RouteError::Rejected(rejected) => ApiError::BadRequest(rejected.error.to_string()),
        }
    }
}
