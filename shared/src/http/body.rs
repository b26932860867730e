//! Reading request bodies: each route's size limit, and the process-wide budget of body bytes
//! held at once.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;

use super::routes::RouteLimit;
use super::{ApiError, AppState, RequestContext};

/// Largest body of the small routes: a login (user name and a token), a token request, a version.
pub(crate) const SMALL_BODY_BYTES: usize = 8 * 1024;

/// The largest bulk advisory request read (gzipped: tens of thousands of packages).
const AUDIT_BODY_BYTES: usize = 4 << 20;

/// The byte limit of `limit` under `state`'s settings.
pub(crate) fn route_limit(state: &AppState, limit: RouteLimit) -> usize {
    match limit {
        RouteLimit::Publish => state.config.limits.max_body_bytes,
        RouteLimit::Small => SMALL_BODY_BYTES.min(state.config.limits.max_body_bytes),
        RouteLimit::Audit => AUDIT_BODY_BYTES,
    }
}

/// A request body held in memory, with its share of the in-flight budget, which is returned
/// when the guard is dropped: keep it while the bytes (or slices of them) are in use.
pub(crate) struct ReadBody {
    bytes: Bytes,
    in_flight: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ReadBody {
    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes and the budget guard, to be kept while the bytes (or slices of them) live.
    pub(crate) fn into_parts(self) -> (Bytes, Option<tokio::sync::OwnedSemaphorePermit>) {
        (self.bytes, self.in_flight)
    }
}

/// The body length the request declares (`Content-Length`).
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The refusal of a body over `limit`.
pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "request body is larger than this registry's limit of {limit} bytes for this request{}",
        if limit >= (1 << 20) {
            " (REGISTRY_MAX_BODY_BYTES)"
        } else {
            ""
        }
    ))
}

/// Reads a request body of at most its route's limit (`RequestContext::body_limit`; larger ones
/// get 413), reserving its size in the process-wide budget of bodies held at once first (an
/// exhausted budget is a 503 with `Retry-After`, before a byte is read).
pub(crate) async fn read_body(
    state: &AppState,
    body: Body,
    ctx: &RequestContext,
) -> Result<ReadBody, ApiError> {
    let limit = ctx.body_limit;
    let declared = declared_length(&ctx.headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    // Without a declared length, reserve the route's whole limit.
    let reserve = declared
        .map_or(limit, |len| usize::try_from(len).unwrap_or(limit))
        .max(1);
    let in_flight = match u32::try_from(reserve) {
        Ok(n) => state.body_budget.clone().try_acquire_many_owned(n).ok(),
        Err(_) => None,
    };
    if in_flight.is_none() {
        return Err(ApiError::Unavailable(
            "the registry is receiving too many large request bodies at once; retry shortly".into(),
        ));
    }
    // One buffer of the declared size, filled in place: collecting the chunks and joining them
    // would hold a publish (a base64 tarball of up to tens of MB) twice.
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, limit);
    let mut bytes =
        bytes::BytesMut::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(too_large(limit));
            }
            Err(e) => {
                return Err(ApiError::BadRequest(format!(
                    "could not read request body: {e}"
                )));
            }
        }
    }
    Ok(ReadBody {
        bytes: bytes.freeze(),
        in_flight,
    })
}

/// Parses a JSON body, with messages that say what is wrong.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; expected JSON".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))
}
