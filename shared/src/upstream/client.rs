//! Requests to upstream registries: one pooled HTTP client (rustls with the system's roots),
//! every request bounded in time and size, marked with `Via` (the loop guard), and carrying a
//! registry's token only to URLs under that registry's own origin.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::secret::Secret;

/// Redirects followed for one request (an upstream that hands tarballs out from elsewhere).
const MAX_REDIRECTS: usize = 3;

/// A request's answer, once it is known to be usable.
#[derive(Debug)]
pub enum Fetched {
    /// `200`, with the validator to revalidate with later.
    Body {
        /// `ETag`, if the upstream sent one.
        etag: Option<String>,
        /// The body, decoded (`Content-Encoding: gzip` undone).
        bytes: Bytes,
    },
    /// `304`: what is kept is still current.
    NotModified,
    /// `404` (or `410`): the upstream does not have it.
    NotFound,
    /// The declared length is over what may be fetched while the client waits
    /// (`inline_max`): the body is left to read later.
    TooLargeToWait(u64, PendingBody),
    /// `200`, the body left to read in pieces (asked for with `Get::streamed`).
    Streamed(PendingBody),
}

/// A body not read yet (`Fetched::TooLargeToWait`, `Fetched::Streamed`).
pub struct PendingBody {
    /// `None` once read to its end.
    body: Option<hyper::body::Incoming>,
    gzipped: bool,
    max_bytes: u64,
    /// Bytes handed out so far.
    read: u64,
}

impl std::fmt::Debug for PendingBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingBody")
    }
}

impl PendingBody {
    fn new(body: hyper::body::Incoming, gzipped: bool, max_bytes: u64) -> Self {
        Self {
            body: Some(body),
            gzipped,
            max_bytes,
            read: 0,
        }
    }

    /// The whole body (gzip undone), within `timeout`.
    pub async fn read(mut self, timeout: Duration) -> Result<Bytes, FetchError> {
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        tokio::time::timeout(timeout, read_body(body, self.gzipped, self.max_bytes))
            .await
            .unwrap_or(Err(FetchError::Timeout(timeout)))
    }

    /// The next piece of the body, `None` at its end; `TooLarge` once the pieces add up to more
    /// than allowed. A gzip-encoded body (tarballs seldom are) comes whole, decoded, in one
    /// piece.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>, FetchError> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        if self.gzipped {
            let body = self.body.take().expect("checked above");
            return read_body(body, true, self.max_bytes).await.map(Some);
        }
        loop {
            match body.frame().await {
                None => {
                    self.body = None;
                    return Ok(None);
                }
                Some(Err(e)) => return Err(FetchError::Transport(e.to_string())),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    self.read += data.len() as u64;
                    if self.read > self.max_bytes {
                        return Err(FetchError::TooLarge(self.max_bytes));
                    }
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// A response body, bounded, gzip undone.
async fn read_body(
    body: hyper::body::Incoming,
    gzipped: bool,
    max_bytes: u64,
) -> Result<Bytes, FetchError> {
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                FetchError::TooLarge(max_bytes)
            } else {
                FetchError::Transport(e.to_string())
            }
        })?
        .to_bytes();
    if gzipped {
        gunzip(&body, max_bytes)
    } else {
        Ok(body)
    }
}

/// Why an upstream could not answer. Every one of these counts towards marking it down.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// No complete answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An error status (5xx, 429, or anything unexpected).
    #[error("HTTP {0}")]
    Status(u16),
    /// Connecting or reading failed.
    #[error("{0}")]
    Transport(String),
    /// The body is larger than allowed.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(u64),
}

/// What a GET asks for.
pub struct Get<'a> {
    /// The URL.
    pub url: &'a str,
    /// `Accept`.
    pub accept: &'a str,
    /// The registry's base URL and token: the token is sent only to URLs under that base's
    /// origin.
    pub auth: Option<(&'a str, &'a Secret)>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// The most body bytes accepted.
    pub max_bytes: u64,
    /// Answer `TooLargeToWait` instead of reading a body declared longer than this.
    pub inline_max: Option<u64>,
    /// Answer `Streamed` instead of reading the body: the caller reads it in pieces.
    pub streamed: bool,
    /// The `Via` of the request that caused this one, continued with this registry's hop.
    pub via: Option<&'a str>,
}

/// The client.
#[derive(Clone)]
pub struct UpstreamClient {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    via: HeaderValue,
}

impl UpstreamClient {
    /// A client whose requests take at most `timeout` each, naming this registry `via_name`
    /// in `Via`.
    pub fn new(timeout: Duration, via_name: &str) -> Result<Self, String> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot read the system's TLS roots: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(https);
        let via = HeaderValue::from_str(&format!("1.1 {via_name}"))
            .map_err(|_| format!("REGISTRY_INSTANCE_NAME '{via_name}' cannot go in a header"))?;
        Ok(Self { http, timeout, via })
    }

    /// Whether a request's `Via` shows it already passed through a registry named like this
    /// one: proxying it again would loop.
    pub fn is_loop(&self, headers: &hyper::HeaderMap) -> bool {
        let ours = self.via.as_bytes();
        let name = ours.strip_prefix(b"1.1 ").unwrap_or(ours);
        headers.get_all(header::VIA).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|hop| hop.trim_ascii().split(|b| *b == b' ').nth(1) == Some(name))
        })
    }

    /// `Via` for a request caused by one that came `via`: the chain so far, then this hop.
    fn via_after(&self, via: Option<&str>) -> HeaderValue {
        via.filter(|v| !v.trim().is_empty())
            .and_then(|v| {
                let ours = self.via.to_str().ok()?;
                HeaderValue::from_str(&format!("{v}, {ours}")).ok()
            })
            .unwrap_or_else(|| self.via.clone())
    }

    /// How long one request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A GET, following a few redirects, within the timeout.
    pub async fn get(&self, get: Get<'_>) -> Result<Fetched, FetchError> {
        tokio::time::timeout(self.timeout, self.get_unbounded(get))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    async fn get_unbounded(&self, get: Get<'_>) -> Result<Fetched, FetchError> {
        let mut url = get.url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = Request::builder()
                .method(Method::GET)
                .uri(&url)
                .header(header::ACCEPT, get.accept)
                .header(header::ACCEPT_ENCODING, "gzip")
                .header(
                    header::USER_AGENT,
                    concat!("npm-registry/", env!("CARGO_PKG_VERSION")),
                )
                .header(header::VIA, self.via_after(get.via));
            if let Some(etag) = get.if_none_match {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            if let Some((base, token)) = get.auth
                && same_origin(base, &url)
            {
                request =
                    request.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
            }
            let request = request
                .body(Full::new(Bytes::new()))
                .map_err(|e| FetchError::Transport(format!("bad upstream URL {url}: {e}")))?;
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| FetchError::Transport(transport_error(&e)))?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let Some(next) = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                else {
                    return Err(FetchError::Status(status.as_u16()));
                };
                url = resolve(&url, next).ok_or(FetchError::Status(status.as_u16()))?;
                continue;
            }
            match status {
                StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
                StatusCode::NOT_FOUND | StatusCode::GONE => return Ok(Fetched::NotFound),
                StatusCode::OK => {}
                other => return Err(FetchError::Status(other.as_u16())),
            }
            let declared = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let etag = response
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let gzipped = response
                .headers()
                .get(header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            if let Some(len) = declared {
                if len > get.max_bytes {
                    return Err(FetchError::TooLarge(get.max_bytes));
                }
                if get.inline_max.is_some_and(|max| len > max) {
                    let pending = PendingBody::new(response.into_body(), gzipped, get.max_bytes);
                    return Ok(Fetched::TooLargeToWait(len, pending));
                }
            }
            if get.streamed {
                let pending = PendingBody::new(response.into_body(), gzipped, get.max_bytes);
                return Ok(Fetched::Streamed(pending));
            }
            let bytes = read_body(response.into_body(), gzipped, get.max_bytes).await?;
            return Ok(Fetched::Body { etag, bytes });
        }
        Err(FetchError::Transport(format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            get.url
        )))
    }

    /// A POST of `body` (npm's audit), answering the status and body; within the timeout.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        auth: Option<&Secret>,
        via: Option<&str>,
        body: Bytes,
        max_bytes: u64,
    ) -> Result<(StatusCode, Bytes), FetchError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::VIA, self.via_after(via))
            .header(
                header::USER_AGENT,
                concat!("npm-registry/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(token) = auth {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        let send = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| FetchError::Transport(transport_error(&e)))?;
            let status = response.status();
            let gzipped = response
                .headers()
                .get(header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| FetchError::Transport(e.to_string()))?
                .to_bytes();
            let body = if gzipped {
                gunzip(&body, max_bytes)?
            } else {
                body
            };
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }
}

/// A transport error with its causes (hyper's own message is only "client error (Connect)").
fn transport_error(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Undoes gzip, refusing more than `max` bytes out.
pub fn gunzip(bytes: &[u8], max: u64) -> Result<Bytes, FetchError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| FetchError::Transport(format!("bad gzip body: {e}")))?;
    if out.len() as u64 > max {
        return Err(FetchError::TooLarge(max));
    }
    Ok(Bytes::from(out))
}

/// Whether `url` is under `base`'s scheme, host and port.
fn same_origin(base: &str, url: &str) -> bool {
    match (url::Url::parse(base), url::Url::parse(url)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// A `Location` resolved against the URL that sent it.
fn resolve(from: &str, location: &str) -> Option<String> {
    let next = url::Url::parse(from).ok()?.join(location).ok()?;
    matches!(next.scheme(), "http" | "https").then(|| next.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_only_to_their_registrys_origin() {
        assert!(same_origin(
            "https://npm.partner.example/npm",
            "https://npm.partner.example/x/-/x-1.tgz"
        ));
        assert!(!same_origin(
            "https://npm.partner.example",
            "https://cdn.example/x.tgz"
        ));
        assert!(!same_origin(
            "https://npm.partner.example",
            "http://npm.partner.example/x"
        ));
    }

    #[tokio::test]
    async fn a_request_that_passed_through_us_is_a_loop() {
        let client = UpstreamClient::new(Duration::from_secs(1), "acme-registry").unwrap();
        let mut headers = hyper::HeaderMap::new();
        assert!(!client.is_loop(&headers));
        headers.insert(
            header::VIA,
            HeaderValue::from_static("1.1 other, 1.1 acme-registry"),
        );
        assert!(client.is_loop(&headers));
        headers.insert(header::VIA, HeaderValue::from_static("1.1 acme-registry-2"));
        assert!(!client.is_loop(&headers));
    }

    #[test]
    fn gunzip_is_bounded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[b'a'; 10_000]).unwrap();
        let packed = gz.finish().unwrap();
        assert_eq!(gunzip(&packed, 10_000).unwrap().len(), 10_000);
        assert!(matches!(
            gunzip(&packed, 9_999),
            Err(FetchError::TooLarge(_))
        ));
    }
}
