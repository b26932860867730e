//! How the package writer's domain errors meet the HTTP layer's one error type.

use super::ApiError;
use super::error::ErrorCode;
use crate::domain::publish::PublishError;
use crate::writes::WriteError;

/// A write's error as handlers see it: refusals are `ApiError`s (authorisation, validation).
pub type Refusal = WriteError<ApiError>;

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        WriteError::Refused(e)
    }
}

impl From<PublishError> for Refusal {
    fn from(e: PublishError) -> Self {
        WriteError::Refused(e.into())
    }
}

impl From<Refusal> for ApiError {
    fn from(e: Refusal) -> Self {
        match e {
            WriteError::Refused(e) => e,
            taken @ WriteError::VersionTaken { .. } => {
                ApiError::coded(ErrorCode::VersionExists, taken.to_string())
            }
            WriteError::Store(e) => e.into(),
        }
    }
}
