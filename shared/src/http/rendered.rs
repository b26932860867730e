//! Packuments rendered once per revision: the JSON bytes, their gzip, a strong ETag and
//! `Last-Modified`, kept in a bounded in-memory cache. A read then costs one lookup of the small
//! package record (whose revision every write bumps) and a copy of a reference-counted buffer,
//! instead of loading every version and serialising JSON per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use sha2::Digest;

use super::ApiError;
use super::incremental::Built;
use crate::domain::packument::ABBREVIATED_MEDIA_TYPE;
use crate::domain::{PackageName, PackageRecord};

/// Changes whenever this code writes packuments differently, so no ETag of an older release's
/// bytes names a newer release's.
const RENDER_FORMAT: &str = "packument-2";

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
            .any(|v| occurs(v.as_bytes(), ABBREVIATED_MEDIA_TYPE.as_bytes()));
        if abbreviated {
            View::Abbreviated
        } else {
            View::Full
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            View::Full => "application/json",
            View::Abbreviated => ABBREVIATED_MEDIA_TYPE,
        }
    }
}

/// Whether `needle` occurs in `haystack`: `str::contains` without the set-up of its searcher,
/// which costs more than the search itself in a header of a few dozen bytes.
fn occurs(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .any(|(i, &b)| b == first && haystack.get(i + 1..i + needle.len()) == Some(rest))
}

/// Bytes to send: one buffer, or a big document's pieces in order (`incremental::join`), sent
/// one after another rather than copied into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// One buffer.
    One(Bytes),
    /// Buffers in order, and their total length.
    Chain(Arc<[Bytes]>, usize),
}

impl Payload {
    /// `parts` in order.
    pub(crate) fn chain(parts: Vec<Bytes>) -> Payload {
        let len = parts.iter().map(Bytes::len).sum();
        Payload::Chain(parts.into(), len)
    }

    /// The number of bytes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Payload::One(bytes) => bytes.len(),
            Payload::Chain(_, len) => *len,
        }
    }

    /// Whether there are no bytes.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in one buffer (a copy, for a chain).
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            Payload::One(bytes) => bytes.clone(),
            Payload::Chain(parts, _) => parts.concat().into(),
        }
    }

    /// A response body of these bytes, with their exact length (so `Content-Length` is sent).
    fn body(&self) -> Body {
        match self {
            Payload::One(bytes) => Body::from(bytes.clone()),
            Payload::Chain(parts, len) => Body::new(ChainBody {
                parts: parts.clone(),
                next: 0,
                remaining: *len as u64,
            }),
        }
    }
}

/// A body sending a chain's parts one per frame.
struct ChainBody {
    parts: Arc<[Bytes]>,
    next: usize,
    remaining: u64,
}

impl hyper::body::Body for ChainBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        // Empty parts are skipped: an empty data frame is not the end of a body.
        while let Some(part) = self.parts.get(self.next).cloned() {
            self.next += 1;
            if !part.is_empty() {
                self.remaining -= part.len() as u64;
                return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(part))));
            }
        }
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// Warm reads of a big document's gzip bytes before they are copied into one file-backed
/// buffer (`zero_copy`) and sent from it: a rendering replaced at every publish is not copied
/// (about 3 ms for the 3,000-version package's two views), one that is read again is.
const GZIP_FILE_AFTER_READS: u32 = 8;

/// One packument at one revision, ready to send.
pub struct Rendered {
    /// The package revision it was rendered from.
    pub revision: u64,
    view: View,
    identity: Payload,
    gzip: Payload,
    /// A big document's gzip pieces copied into one file-backed buffer, once it is read often
    /// enough (`None` inside: that could not be done; its pieces are sent).
    gzip_file: std::sync::OnceLock<Option<Bytes>>,
    /// Reads of the gzip bytes so far, up to `GZIP_FILE_AFTER_READS`.
    gzip_reads: std::sync::atomic::AtomicU32,
    etag: HeaderValue,
    gzip_etag: HeaderValue,
    last_modified: HeaderValue,
}

impl Rendered {
    /// The document `built` joins for `package` (the record it was built or changed for).
    pub(crate) fn join(built: &Built, package: &PackageRecord) -> Result<Rendered, ApiError> {
        let (identity, gzip) = built
            .join(package)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // The bytes follow from the package's state at this revision, the view and the base URL
        // (and this code's way of writing them): a tag of those names them without hashing
        // megabytes.
        let mut tag = sha2::Sha256::new();
        for part in [
            RENDER_FORMAT.as_bytes(),
            built.view().content_type().as_bytes(),
            built.base_url().as_bytes(),
            package.name.as_str().as_bytes(),
            package.rev_string().as_bytes(),
        ] {
            tag.update(part.len().to_le_bytes());
            tag.update(part);
        }
        let hash = hex::encode(&tag.finalize()[..16]);
        let header =
            |s: String| HeaderValue::from_str(&s).map_err(|e| ApiError::Internal(e.to_string()));
        Ok(Rendered {
            revision: package.revision,
            view: built.view(),
            etag: header(format!("\"{hash}\""))?,
            // A strong ETag names one representation: the gzip bytes get their own.
            gzip_etag: header(format!("\"{hash}-gzip\""))?,
            last_modified: header(
                package
                    .modified
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            )?,
            identity,
            gzip,
            gzip_file: std::sync::OnceLock::new(),
            gzip_reads: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The gzip body: a big document's from one file-backed buffer once it has been read
    /// `GZIP_FILE_AFTER_READS` times, else its pieces.
    fn gzip_body(&self) -> Body {
        let Payload::Chain(parts, _) = &self.gzip else {
            return self.gzip.body();
        };
        let copied = match self.gzip_file.get() {
            Some(copied) => copied,
            None if self
                .gzip_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                < GZIP_FILE_AFTER_READS =>
            {
                return self.gzip.body();
            }
            // Holds `None` where the bytes are too few for a file (`zero_copy::MIN_BYTES`).
            None => self.gzip_file.get_or_init(|| {
                let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
                crate::zero_copy::file_backed(&parts)
            }),
        };
        copied
            .as_ref()
            .map_or_else(|| self.gzip.body(), |one| Body::from(one.clone()))
    }

    /// Memory it holds beyond the pieces it was joined from: all of its bytes when they were
    /// copied into one buffer, none when they are the pieces' own, and a big document's gzip
    /// bytes once more, for the copy its warm reads may make (`gzip_body`).
    pub(crate) fn size(&self) -> usize {
        let own = |payload: &Payload| match payload {
            Payload::One(bytes) => bytes.len(),
            Payload::Chain(parts, _) => 16 * parts.len(),
        };
        let gzip_copy = match &self.gzip {
            Payload::Chain(_, len) if *len >= crate::zero_copy::MIN_BYTES => *len,
            _ => 0,
        };
        own(&self.identity) + own(&self.gzip) + gzip_copy + 256
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
            Response::new(Body::empty())
        } else if gzip {
            Response::new(self.gzip_body())
        } else {
            Response::new(self.identity.body())
        };
        *response.status_mut() = if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        // Room for every header at once (with the Content-Length added on the way out), rather
        // than growing the map twice per response.
        *response.headers_mut() = HeaderMap::with_capacity(8);
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
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
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

/// The pieces a package's rendering is joined from, held by whoever builds or patches it: one
/// build per package, view and base URL at a time.
pub(crate) type Builder = Arc<tokio::sync::Mutex<Option<Built>>>;

struct Slot {
    rendered: Option<Arc<Rendered>>,
    builder: Builder,
    /// Memory held by the rendering and its pieces.
    size: usize,
    last_used: u64,
}

#[derive(Default)]
struct Slots {
    map: HashMap<Key, Slot>,
    bytes: usize,
    clock: u64,
}

/// Rendered packuments and the pieces they are joined from, by package, view and base URL, at
/// most `budget` bytes, least recently used out first. A hit must be at the revision the caller
/// just read from the store, so a write (which bumps the revision) is never hidden, whichever
/// process made it.
pub struct PackumentCache {
    budget: usize,
    slots: Mutex<Slots>,
    /// Memory for documents being built at once, in KiB: many packages build side by side, a
    /// burst of big ones waits.
    building: tokio::sync::Semaphore,
    building_kib: u32,
    /// Renderings made so far.
    renders: std::sync::atomic::AtomicU64,
}

impl PackumentCache {
    /// A cache holding at most `budget` bytes (0: nothing is kept), building documents of at
    /// most `in_flight` bytes at once.
    pub fn new(budget: usize, in_flight: usize) -> PackumentCache {
        let building_kib = u32::try_from(in_flight / 1024).unwrap_or(u32::MAX).clamp(
            1,
            u32::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u32::MAX),
        );
        PackumentCache {
            budget,
            slots: Mutex::new(Slots::default()),
            building: tokio::sync::Semaphore::new(building_kib as usize),
            building_kib,
            renders: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Renderings made so far (misses that rendered, not misses that found another's rendering).
    pub fn renders(&self) -> u64 {
        self.renders.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `bytes` more of documents may be built (a larger build waits for all others).
    pub(crate) async fn build_permit(
        &self,
        bytes: usize,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let kib = u32::try_from(bytes / 1024 + 1)
            .unwrap_or(u32::MAX)
            .min(self.building_kib);
        // The semaphore is never closed, so this is always `Some`.
        self.building.acquire_many(kib).await.ok()
    }

    /// The builder of `name`'s `view`: lock it to build or patch the rendering.
    pub(crate) fn builder(&self, name: &PackageName, view: View, base_url: &str) -> Builder {
        let mut slots = self.slots();
        slots.clock += 1;
        let now = slots.clock;
        let slot = slots
            .map
            .entry(Key::new(name, view, base_url))
            .or_insert_with(|| Slot {
                rendered: None,
                builder: Builder::default(),
                size: 0,
                last_used: now,
            });
        slot.builder.clone()
    }

    /// Whether someone is building `name`'s `view` now: a reader may get their result.
    pub(crate) fn building(&self, name: &PackageName, view: View, base_url: &str) -> bool {
        self.slots()
            .map
            .get(&Key::new(name, view, base_url))
            .is_some_and(|slot| slot.builder.try_lock().is_err())
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
        let mut slots = self.slots();
        slots.clock += 1;
        let now = slots.clock;
        let slot = slots.map.get_mut(&key)?;
        slot.last_used = now;
        slot.rendered.clone()
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

    /// Keeps `rendered`, whose pieces (`pieces` bytes) `builder` holds, unless a newer revision is
    /// already kept; evicts the least recently used beyond the budget.
    pub(crate) fn insert(
        &self,
        name: &PackageName,
        base_url: &str,
        rendered: Arc<Rendered>,
        builder: &Builder,
        pieces: usize,
    ) {
        self.renders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let size = rendered.size() + pieces;
        let key = Key::new(name, rendered.view, base_url);
        let mut slots = self.slots();
        slots.clock += 1;
        let now = slots.clock;
        let old_size = match slots.map.get(&key) {
            Some(old)
                if old
                    .rendered
                    .as_ref()
                    .is_some_and(|r| r.revision > rendered.revision) =>
            {
                return;
            }
            Some(old) => old.size,
            None => 0,
        };
        slots.bytes -= old_size;
        slots.map.insert(
            key.clone(),
            Slot {
                rendered: Some(rendered),
                builder: builder.clone(),
                size,
                last_used: now,
            },
        );
        slots.bytes += size;
        if slots.bytes > self.budget {
            // Down to nine tenths of the budget, least recently used first: one pass over the
            // slots per tenth of the budget inserted, not one per insert (a full cache of small
            // packages holds thousands).
            // The pass finds the last use before which every filled slot goes, then drops them
            // in one `retain`: no key is copied (copies of thousands of names were a twentieth
            // of a cold read's CPU).
            let target = self.budget / 10 * 9;
            let mut filled: Vec<(u64, usize)> = slots
                .map
                .values()
                .filter(|slot| slot.size > 0)
                .map(|slot| (slot.last_used, slot.size))
                .collect();
            filled.sort_unstable_by_key(|(last_used, _)| *last_used);
            let mut left = slots.bytes;
            let mut cutoff = None;
            for (last_used, size) in filled {
                if left <= target {
                    break;
                }
                left -= size;
                cutoff = Some(last_used);
            }
            if let Some(cutoff) = cutoff {
                let mut gone = 0;
                slots.map.retain(|_, slot| {
                    let keep = slot.size == 0 || slot.last_used > cutoff;
                    if !keep {
                        gone += slot.size;
                    }
                    keep
                });
                slots.bytes -= gone;
            }
        }
        // Slots being built but never filled (a failed build) go too, once idle.
        if slots.map.len() > 2 * (slots.bytes / 1024 + 64) {
            slots
                .map
                .retain(|_, slot| slot.size > 0 || Arc::strong_count(&slot.builder) > 1);
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.slots().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PackageDocument;

    fn rendered(name: &str, revision: u64) -> (PackageName, Arc<Rendered>) {
        let name = PackageName::parse(name).unwrap();
        let created = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut package = PackageRecord::new(name.clone(), created);
        package.revision = revision;
        let doc = PackageDocument {
            package,
            versions: Vec::new(),
        };
        let built = Built::from_document(&doc, View::Full, "http://r", None).unwrap();
        let r = Rendered::join(&built, &doc.package).unwrap();
        (name, Arc::new(r))
    }

    /// A big document's gzip bytes go as pieces until the rendering has been read
    /// `GZIP_FILE_AFTER_READS` times, then from one file-backed buffer: the same bytes.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_big_documents_gzip_is_copied_to_a_file_once_it_is_read_often() {
        use http_body_util::BodyExt;
        crate::zero_copy::enable();
        let name = PackageName::parse("@s/big").unwrap();
        let mut package = PackageRecord::new(name.clone(), chrono::Utc::now());
        let versions = (0..1500)
            .map(|minor| {
                let version = semver::Version::new(1, minor, 0);
                crate::http::incremental::tests::live(&name, &version, "big")
            })
            .collect();
        package.revision = 1500;
        let doc = PackageDocument { package, versions };
        let built = Built::from_document(&doc, View::Full, "http://r", None).unwrap();
        let r = Rendered::join(&built, &doc.package).unwrap();
        let Payload::Chain(_, gzip_len) = &r.gzip else {
            panic!("a big document's gzip is pieces");
        };
        assert!(*gzip_len >= crate::zero_copy::MIN_BYTES, "{gzip_len}");
        let mut request = HeaderMap::new();
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let mut first = None;
        for read in 0..=GZIP_FILE_AFTER_READS + 1 {
            let mut frames = Vec::new();
            let mut body = r.respond(&request).into_body();
            while let Some(frame) = body.frame().await {
                frames.push(frame.unwrap().into_data().unwrap());
            }
            let copied = frames.len() == 1 && crate::zero_copy::region_of(&frames[0]).is_some();
            assert_eq!(
                copied,
                read >= GZIP_FILE_AFTER_READS,
                "read {read}: {} frames",
                frames.len()
            );
            let bytes = frames.concat();
            assert_eq!(
                first.get_or_insert_with(|| bytes.clone()),
                &bytes,
                "the same bytes"
            );
        }
        assert!(r.size() > *gzip_len, "the copy is counted");
    }

    fn insert(cache: &PackumentCache, name: &PackageName, r: Arc<Rendered>) {
        let builder = cache.builder(name, r.view, "http://r");
        cache.insert(name, "http://r", r, &builder, 0);
    }

    #[test]
    fn hits_only_the_current_revision_and_keeps_the_newest() {
        let cache = PackumentCache::new(1 << 20, 1 << 20);
        let (name, r2) = rendered("@s/a", 2);
        insert(&cache, &name, r2);
        assert!(cache.get(&name, View::Full, "http://r", 2).is_some());
        assert!(cache.get(&name, View::Full, "http://r", 3).is_none());
        assert!(cache.get(&name, View::Abbreviated, "http://r", 2).is_none());
        assert!(cache.get(&name, View::Full, "http://other", 2).is_none());
        // A slower renderer of an older revision does not replace the newer one.
        let (_, r1) = rendered("@s/a", 1);
        insert(&cache, &name, r1);
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
        let cache = PackumentCache::new(ra.size() + rb.size() + rc.size() / 2, 1 << 20);
        insert(&cache, &a, ra);
        insert(&cache, &b, rb);
        assert!(cache.get(&a, View::Full, "http://r", 1).is_some());
        insert(&cache, &c, rc);
        assert!(
            cache.get(&b, View::Full, "http://r", 1).is_none(),
            "b was least recently used"
        );
        assert!(cache.get(&a, View::Full, "http://r", 1).is_some());
        assert!(cache.get(&c, View::Full, "http://r", 1).is_some());
        assert!(cache.bytes() <= cache.budget);
    }

    /// An insert past the budget evicts down to nine tenths of it, oldest first, so the next
    /// inserts fit without another pass over the slots.
    #[test]
    fn evicts_down_to_nine_tenths_of_the_budget() {
        let docs: Vec<_> = (0..40).map(|i| rendered(&format!("@s/p{i}"), 1)).collect();
        let one = docs[0].1.size();
        let cache = PackumentCache::new(20 * one, 1 << 20);
        for (name, r) in docs {
            insert(&cache, &name, r);
            assert!(cache.bytes() <= cache.budget);
        }
        let kept: Vec<bool> = (0..40)
            .map(|i| {
                let name = PackageName::parse(&format!("@s/p{i}")).unwrap();
                cache.get(&name, View::Full, "http://r", 1).is_some()
            })
            .collect();
        // The newest are kept, and a contiguous run of them: the order of use decided.
        let first_kept = kept.iter().position(|k| *k).unwrap();
        assert!(kept[first_kept..].iter().all(|k| *k), "{kept:?}");
        assert!(kept[39]);
        assert!(
            cache.bytes() >= 17 * one,
            "{} of {}",
            cache.bytes(),
            20 * one
        );
    }

    #[test]
    fn etags_name_the_revision_view_and_base_url() {
        let (_, a1) = rendered("@s/a", 1);
        let (_, a1_again) = rendered("@s/a", 1);
        let (_, a2) = rendered("@s/a", 2);
        let (_, b1) = rendered("@s/b", 1);
        assert_eq!(a1.etag, a1_again.etag);
        assert_ne!(a1.etag, a2.etag);
        assert_ne!(a1.etag, b1.etag);
        assert_ne!(a1.etag, a1.gzip_etag);
    }

    #[test]
    fn view_negotiation() {
        let view = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            }
            View::requested(&h)
        };
        let npm = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
        assert_eq!(view(&[npm]), View::Abbreviated);
        assert_eq!(
            view(&["application/vnd.npm.install-v1+json"]),
            View::Abbreviated
        );
        assert_eq!(
            view(&["text/html", "*/*;application/vnd.npm.install-v1+json"]),
            View::Abbreviated
        );
        assert_eq!(view(&["application/json"]), View::Full);
        assert_eq!(view(&["application/vnd.npm.install-v1+jso"]), View::Full);
        assert_eq!(view(&["aapplication/vnd.npm.install-v1"]), View::Full);
        assert_eq!(view(&[]), View::Full);
        assert!(occurs(b"abc", b""));
        assert!(!occurs(b"", b"a"));
        assert!(occurs(b"aab", b"ab"));
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
