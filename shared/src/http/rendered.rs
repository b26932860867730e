//! Packuments rendered once per revision: the JSON bytes, their gzip, a strong ETag and
//! `Last-Modified`, kept in a bounded in-memory cache. A read then costs one lookup of the small
//! package record (whose revision every write bumps) and a copy of a reference-counted buffer,
//! instead of loading every version and serialising JSON per request.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::Digest;

use super::ApiError;
use crate::domain::packument::{self, ABBREVIATED_MEDIA_TYPE};
use crate::domain::{PackageDocument, PackageName};

/// Which form of the packument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// The whole document (`application/json`).
    Full,
    /// The install view (`application/vnd.npm.install-v1+json`).
    Abbreviated,
}

impl View {
    /// The view a request asks for by its `Accept` header.
    pub(crate) fn requested(headers: &HeaderMap) -> View {
        let abbreviated = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(ABBREVIATED_MEDIA_TYPE));
        if abbreviated {
            View::Abbreviated
        } else {
            View::Full
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            View::Full => "application/json",
            View::Abbreviated => ABBREVIATED_MEDIA_TYPE,
        }
    }
}

/// One packument at one revision, ready to send.
pub struct Rendered {
    /// The package revision it was rendered from.
    pub revision: u64,
    view: View,
    identity: Bytes,
    gzip: Bytes,
    etag: HeaderValue,
    gzip_etag: HeaderValue,
    last_modified: HeaderValue,
}

impl Rendered {
    /// Renders `view` of `doc` with tarball links under `base_url` (and, in the full view,
    /// `readme`: the latest version's).
    pub(crate) fn render(
        doc: &PackageDocument,
        view: View,
        base_url: &str,
        readme: Option<&str>,
    ) -> Result<Rendered, ApiError> {
        let mut identity = Vec::new();
        match view {
            View::Full => packument::write_full(doc, base_url, readme, &mut identity),
            View::Abbreviated => packument::write_abbreviated(doc, base_url, &mut identity),
        }
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(identity.len() / 4),
            flate2::Compression::default(),
        );
        encoder
            .write_all(&identity)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let gzip = encoder
            .finish()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let hash = hex::encode(&sha2::Sha256::digest(&identity)[..16]);
        let header =
            |s: String| HeaderValue::from_str(&s).map_err(|e| ApiError::Internal(e.to_string()));
        Ok(Rendered {
            revision: doc.package.revision,
            view,
            etag: header(format!("\"{hash}\""))?,
            // A strong ETag names one representation: the gzip bytes get their own.
            gzip_etag: header(format!("\"{hash}-gzip\""))?,
            last_modified: header(
                doc.package
                    .modified
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            )?,
            identity: Bytes::from(identity),
            gzip: Bytes::from(gzip),
        })
    }

    /// Memory it holds.
    pub(crate) fn size(&self) -> usize {
        self.identity.len() + self.gzip.len() + 256
    }

    /// The answer to a GET: 304 if the client's `If-None-Match` names this document, else the
    /// bytes, gzipped when the client accepts it.
    pub(crate) fn respond(&self, request: &HeaderMap) -> Response {
        let gzip = accepts_gzip(request);
        let etag = if gzip { &self.gzip_etag } else { &self.etag };
        let not_modified = if_none_match(request, |tag| {
            tag == self.etag.as_bytes() || tag == self.gzip_etag.as_bytes()
        });
        let mut response = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else if gzip {
            (StatusCode::OK, self.gzip.clone()).into_response()
        } else {
            (StatusCode::OK, self.identity.clone()).into_response()
        };
        let headers = response.headers_mut();
        if !not_modified {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.view.content_type()),
            );
            if gzip {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
        }
        headers.insert(header::ETAG, etag.clone());
        headers.insert(header::LAST_MODIFIED, self.last_modified.clone());
        cache_headers(headers);
        response
    }
}

/// Caching headers for registry documents: a private registry's clients may keep a document but
/// must revalidate it (cheap, with the ETag) before each use.
pub(crate) fn cache_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding, Authorization"),
    );
}

/// Whether any `If-None-Match` entry (weak or strong, or `*`) satisfies `matches`.
pub fn if_none_match(headers: &HeaderMap, matches: impl Fn(&[u8]) -> bool) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|t| t == b"*" || matches(t.strip_prefix(b"W/").unwrap_or(t)))
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*`, with a non-zero quality).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let zero_quality = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !zero_quality
        })
}

#[derive(Clone, Hash, PartialEq, Eq)]
struct Key {
    name: PackageName,
    view: View,
    base_url: String,
}

impl Key {
    fn new(name: &PackageName, view: View, base_url: &str) -> Key {
        Key {
            name: name.clone(),
            view,
            base_url: base_url.to_string(),
        }
    }
}

struct Entry {
    rendered: Arc<Rendered>,
    last_used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

/// Rendered packuments by package, view and base URL, at most `budget` bytes, least recently
/// used out first. A hit must be at the revision the caller just read from the store, so a
/// write (which bumps the revision) is never hidden, whichever process made it.
pub struct PackumentCache {
    budget: usize,
    entries: Mutex<Entries>,
    /// One rendering at a time: a document of thousands of versions takes tens of MB while it is
    /// decoded and rendered, and a burst of readers after a write would otherwise each render it.
    render_slot: tokio::sync::Semaphore,
    /// Renderings made so far.
    renders: std::sync::atomic::AtomicU64,
}

impl PackumentCache {
    /// A cache holding at most `budget` bytes (0: nothing is kept).
    pub fn new(budget: usize) -> PackumentCache {
        PackumentCache {
            budget,
            entries: Mutex::new(Entries::default()),
            render_slot: tokio::sync::Semaphore::new(1),
            renders: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Renderings made so far (misses that rendered, not misses that found another's rendering).
    pub fn renders(&self) -> u64 {
        self.renders.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for the right to render; check the cache again once it is granted, since the
    /// request that held it may have rendered the same document.
    pub(crate) async fn render_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed, so this is always `Some`.
        self.render_slot.acquire().await.ok()
    }

    /// Whether a rendering is under way: a reader missing the cache may get its result.
    pub(crate) fn rendering(&self) -> bool {
        self.render_slot.available_permits() == 0
    }

    /// The rendering of `name`'s `view` kept now, at whatever revision (the caller compares it
    /// with the revision it reads).
    pub(crate) fn kept(
        &self,
        name: &PackageName,
        view: View,
        base_url: &str,
    ) -> Option<Arc<Rendered>> {
        let key = Key::new(name, view, base_url);
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.map.get_mut(&key)?;
        entry.last_used = now;
        Some(entry.rendered.clone())
    }

    /// The rendering of `name` at exactly `revision`, if kept.
    pub(crate) fn get(
        &self,
        name: &PackageName,
        view: View,
        base_url: &str,
        revision: u64,
    ) -> Option<Arc<Rendered>> {
        self.kept(name, view, base_url)
            .filter(|rendered| rendered.revision == revision)
    }

    /// Keeps `rendered` (unless a newer revision is already kept), evicting the least recently
    /// used entries beyond the budget.
    pub(crate) fn insert(&self, name: &PackageName, base_url: &str, rendered: Arc<Rendered>) {
        self.renders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let size = rendered.size();
        if size > self.budget {
            return;
        }
        let key = Key::new(name, rendered.view, base_url);
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.clock += 1;
        let now = entries.clock;
        if let Some(old) = entries.map.get(&key) {
            if old.rendered.revision > rendered.revision {
                return;
            }
            let old_size = old.rendered.size();
            entries.bytes -= old_size;
        }
        entries.map.insert(
            key,
            Entry {
                rendered,
                last_used: now,
            },
        );
        entries.bytes += size;
        while entries.bytes > self.budget {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = entries.map.remove(&oldest) {
                entries.bytes -= gone.rendered.size();
            }
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PackageDocument, PackageRecord};

    fn rendered(name: &str, revision: u64) -> (PackageName, Arc<Rendered>) {
        let name = PackageName::parse(name).unwrap();
        let mut package = PackageRecord::new(name.clone(), chrono::Utc::now());
        package.revision = revision;
        let doc = PackageDocument {
            package,
            versions: Vec::new(),
        };
        let r = Rendered::render(&doc, View::Full, "http://r", None).unwrap();
        (name, Arc::new(r))
    }

    #[test]
    fn hits_only_the_current_revision_and_keeps_the_newest() {
        let cache = PackumentCache::new(1 << 20);
        let (name, r2) = rendered("@s/a", 2);
        cache.insert(&name, "http://r", r2);
        assert!(cache.get(&name, View::Full, "http://r", 2).is_some());
        assert!(cache.get(&name, View::Full, "http://r", 3).is_none());
        assert!(cache.get(&name, View::Abbreviated, "http://r", 2).is_none());
        assert!(cache.get(&name, View::Full, "http://other", 2).is_none());
        // A slower renderer of an older revision does not replace the newer one.
        let (_, r1) = rendered("@s/a", 1);
        cache.insert(&name, "http://r", r1);
        assert_eq!(
            cache
                .get(&name, View::Full, "http://r", 2)
                .unwrap()
                .revision,
            2
        );
    }

    #[test]
    fn evicts_the_least_recently_used_beyond_the_budget() {
        let (a, ra) = rendered("@s/a", 1);
        let (b, rb) = rendered("@s/b", 1);
        let (c, rc) = rendered("@s/c", 1);
        let cache = PackumentCache::new(ra.size() + rb.size() + rc.size() / 2);
        cache.insert(&a, "http://r", ra);
        cache.insert(&b, "http://r", rb);
        assert!(cache.get(&a, View::Full, "http://r", 1).is_some());
        cache.insert(&c, "http://r", rc);
        assert!(
            cache.get(&b, View::Full, "http://r", 1).is_none(),
            "b was least recently used"
        );
        assert!(cache.get(&a, View::Full, "http://r", 1).is_some());
        assert!(cache.get(&c, View::Full, "http://r", 1).is_some());
        assert!(cache.bytes() <= cache.budget);
    }

    #[test]
    fn gzip_negotiation() {
        let accepts = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&h)
        };
        assert!(accepts("gzip,deflate"));
        assert!(accepts("br;q=1.0, gzip;q=0.8"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
