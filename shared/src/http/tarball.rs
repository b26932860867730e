//! Tarball route group: downloads, streamed from the tarball store or redirected to it, and the
//! small tarballs served lately kept in memory (`TarballCache`).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use semver::Version;

use super::routes::{TarballFile, TarballRoute};
use super::{ApiError, AppState, RequestContext, redirect};
use crate::auth::Action;
use crate::domain::PackageName;
use crate::storage::views::VersionFact;
use crate::storage::{ByteStream, TarballRead};

/// Handles a tarball route.
pub async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: TarballRoute,
) -> Result<Response, ApiError> {
    match route {
        TarballRoute::Download { name, file } => download(state, ctx, &name, &file).await,
    }
}

async fn download(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    file: &TarballFile,
) -> Result<Response, ApiError> {
    // GitHub mode: the package first. Whether it exists, which versions it has and which file
    // names it serves are its business, told only to callers who may read it. Open mode needs
    // the record only where views are kept: its epoch says whether a kept version fact holds
    // (without views the version's own record is enough).
    let package = if state.auth.github().is_some() || state.views.keeps_views() {
        let Some(package) = state.views.package(name).await? else {
            return state
                .not_here(name, ctx, super::upstream::Wanted::Tarball(file))
                .await;
        };
        state
            .authorize(ctx, name, Some(&package), Action::Read)
            .await?;
        Some(package)
    } else {
        None
    };
    let Some(version) = file.version().cloned() else {
        return Err(ApiError::NotFound(format!(
            "'{file}' is not a tarball of {name}"
        )));
    };
    // The package's revision, read before its version: bytes kept at that revision are still
    // what the version serves (every write bumps it). Open mode reads the record only once the
    // store has served bytes (local storage), so a store that redirects pays nothing for it.
    let revision = match &package {
        Some(package) => Some(package.revision),
        None if state.tarballs_kept.in_use() => {
            state.views.package(name).await?.map(|p| p.revision)
        }
        None => None,
    };
    if let Some(revision) = revision
        && let Some(kept) = state.tarballs_kept.get(name, &version, revision)
    {
        return Ok(kept);
    }
    let Some(fact) = state.views.fact(name, package.as_deref(), &version).await? else {
        if package.is_none() && state.metadata.package(name).await?.is_none() {
            return state
                .not_here(name, ctx, super::upstream::Wanted::Tarball(file))
                .await;
        }
        return Err(ApiError::version_not_found(name, &version));
    };
    let (tarball_key, shasum) = match fact {
        VersionFact::Live {
            tarball_key,
            shasum,
        } => (tarball_key, shasum),
        VersionFact::Unpublished => {
            return Err(ApiError::Gone(format!("{name}@{version} was unpublished")));
        }
    };
    let etag = HeaderValue::from_str(&format!("\"{shasum}\"")).ok();
    match state.tarballs.get(&tarball_key).await? {
        Some(TarballRead::Redirect(url)) => Ok(redirect(&url)),
        Some(TarballRead::Bytes { len, body }) => {
            state.tarballs_kept.serves_bytes();
            let length = HeaderValue::from(len);
            let Some(revision) = revision.filter(|_| state.tarballs_kept.admits(len)) else {
                return Ok(tarball_response(Body::from_stream(body), length, etag));
            };
            let bytes = read_all(body, len).await?;
            let kept = Entry {
                revision,
                etag: etag.clone(),
                length: length.clone(),
                body: bytes.clone(),
                last_used: 0,
            };
            state.tarballs_kept.insert(name, &version, kept);
            Ok(tarball_response(Body::from(bytes), length, etag))
        }
        None => Err(ApiError::Internal(format!(
            "tarball {} is referenced but missing",
            tarball_key.as_str()
        ))),
    }
}

/// A tarball's `200`.
pub(crate) fn tarball_response(
    body: Body,
    length: HeaderValue,
    etag: Option<HeaderValue>,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, length);
    // The key embeds the content digest, so the bytes at this URL only change if an operator
    // allows overwrites; clients verify `dist.integrity` regardless.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    if let Some(etag) = etag {
        headers.insert(header::ETAG, etag);
    }
    *response.headers_mut() = headers;
    response
}

/// The whole of a tarball the store streams, `len` bytes long.
async fn read_all(mut body: ByteStream, len: u64) -> Result<Bytes, ApiError> {
    let mut bytes = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::Internal(format!("reading a tarball: {e}")))?;
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

/// Small tarballs served lately, by package and version, each with the package revision it was
/// read at, within a byte budget (`REGISTRY_TARBALL_CACHE_BYTES`). A warm download is then one
/// look-up of the package record (from memory in the embedded store) and no file I/O: opening,
/// reading and closing the file on the blocking pool, and decoding the version record, cost a
/// download ten times what the rest of it did. Bytes are kept only while the revision they were
/// read at is current, so an unpublish or an overwrite is never hidden.
pub struct TarballCache {
    budget: usize,
    /// The largest tarball kept: one big file does not push out hundreds of small ones.
    largest: usize,
    inner: Mutex<Kept>,
    /// Whether the store has served bytes (not redirects): only then is keeping worth a read.
    serves_bytes: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Kept {
    /// Package name → version → entry.
    packages: HashMap<String, HashMap<Version, Entry>>,
    bytes: usize,
    clock: u64,
}

/// A kept tarball and the headers that differ per tarball.
struct Entry {
    revision: u64,
    etag: Option<HeaderValue>,
    length: HeaderValue,
    body: Bytes,
    last_used: u64,
}

/// What an entry holds besides its bytes, roughly (the maps' slots, the version, the ETag).
const ENTRY_OVERHEAD: usize = 192;

impl TarballCache {
    /// A cache of at most `budget` bytes (0: nothing is kept).
    pub fn new(budget: usize) -> TarballCache {
        TarballCache {
            budget,
            largest: (budget / 8).min(1 << 20),
            inner: Mutex::new(Kept::default()),
            serves_bytes: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Notes that the store serves bytes.
    fn serves_bytes(&self) {
        self.serves_bytes
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a download should read the package revision to look here.
    fn in_use(&self) -> bool {
        self.budget > 0 && self.serves_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a tarball of `len` bytes would be kept.
    fn admits(&self, len: u64) -> bool {
        usize::try_from(len).is_ok_and(|len| len + ENTRY_OVERHEAD <= self.largest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer for `name@version` if its bytes are kept at `revision`.
    fn get(&self, name: &PackageName, version: &Version, revision: u64) -> Option<Response> {
        let mut kept = self.lock();
        kept.clock += 1;
        let now = kept.clock;
        let entry = kept.packages.get_mut(name.as_str())?.get_mut(version)?;
        if entry.revision != revision {
            return None;
        }
        entry.last_used = now;
        let (body, length, etag) = (entry.body.clone(), entry.length.clone(), entry.etag.clone());
        drop(kept);
        Some(tarball_response(Body::from(body), length, etag))
    }

    /// Keeps `entry` for `name@version`, unless a newer revision is kept; past the budget the
    /// least recently used quarter goes.
    fn insert(&self, name: &PackageName, version: &Version, mut entry: Entry) {
        let size = entry.body.len() + ENTRY_OVERHEAD;
        if size > self.largest {
            return;
        }
        let mut kept = self.lock();
        kept.clock += 1;
        let now = kept.clock;
        let versions = kept.packages.entry(name.as_str().to_string()).or_default();
        let freed = match versions.get(version) {
            Some(old) if old.revision > entry.revision => return,
            Some(old) => old.body.len() + ENTRY_OVERHEAD,
            None => 0,
        };
        entry.last_used = now;
        versions.insert(version.clone(), entry);
        kept.bytes = kept.bytes - freed + size;
        if kept.bytes > self.budget {
            kept.evict(self.budget / 4 * 3);
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Kept {
    /// Drops the least recently used entries until at most `target` bytes are held. Dropping to
    /// below the budget, not just to it, keeps the sort this takes rare.
    fn evict(&mut self, target: usize) {
        let mut ages: Vec<(u64, usize)> = self
            .packages
            .values()
            .flat_map(HashMap::values)
            .map(|e| (e.last_used, e.body.len() + ENTRY_OVERHEAD))
            .collect();
        ages.sort_unstable();
        let mut held = self.bytes;
        let mut cutoff = 0;
        for (last_used, size) in ages {
            if held <= target {
                break;
            }
            held -= size;
            cutoff = last_used;
        }
        self.packages.retain(|_, versions| {
            versions.retain(|_, e| e.last_used > cutoff);
            !versions.is_empty()
        });
        self.bytes = held;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> PackageName {
        PackageName::parse(n).unwrap()
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn entry(revision: u64, etag: Option<HeaderValue>, body: Bytes) -> Entry {
        Entry {
            revision,
            etag,
            length: HeaderValue::from(body.len()),
            body,
            last_used: 0,
        }
    }

    #[test]
    fn hits_only_at_the_revision_it_was_read_at() {
        let cache = TarballCache::new(1 << 20);
        let (a, one) = (name("@s/a"), v("1.0.0"));
        cache.insert(&a, &one, entry(3, None, Bytes::from_static(b"tgz")));
        assert!(cache.get(&a, &one, 3).is_some());
        assert!(cache.get(&a, &one, 4).is_none(), "a write since hides it");
        assert!(cache.get(&a, &v("1.0.1"), 3).is_none());
        assert!(cache.get(&name("@s/b"), &one, 3).is_none());
        // A slower reader of an older revision does not replace the newer bytes.
        cache.insert(&a, &one, entry(2, None, Bytes::from_static(b"old")));
        assert!(cache.get(&a, &one, 3).is_some());
        assert!(cache.get(&a, &one, 2).is_none());
    }

    #[test]
    fn answers_as_the_store_does() {
        let cache = TarballCache::new(1 << 20);
        let etag = HeaderValue::from_static("\"abc\"");
        let kept = entry(1, Some(etag), Bytes::from_static(b"tgz"));
        cache.insert(&name("a"), &v("1.0.0"), kept);
        let response = cache.get(&name("a"), &v("1.0.0"), 1).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(h[header::CONTENT_LENGTH], "3");
        assert_eq!(h[header::CACHE_CONTROL], "private, max-age=300");
        assert_eq!(h[header::ETAG], "\"abc\"");
    }

    #[test]
    fn stays_within_its_budget_dropping_the_least_recently_used() {
        let size = 1000;
        let budget = 10 * (size + ENTRY_OVERHEAD);
        let cache = TarballCache::new(budget);
        let a = name("a");
        let body = Bytes::from(vec![0u8; size]);
        for i in 0..10 {
            cache.insert(&a, &v(&format!("1.0.{i}")), entry(1, None, body.clone()));
        }
        assert_eq!(cache.bytes(), budget);
        // 1.0.0 is used again: the oldest now are 1.0.1, 1.0.2, ...
        assert!(cache.get(&a, &v("1.0.0"), 1).is_some());
        cache.insert(&a, &v("1.0.10"), entry(1, None, body.clone()));
        assert!(cache.bytes() <= budget / 4 * 3);
        assert!(cache.get(&a, &v("1.0.0"), 1).is_some());
        assert!(cache.get(&a, &v("1.0.10"), 1).is_some());
        assert!(cache.get(&a, &v("1.0.1"), 1).is_none());
    }

    #[test]
    fn keeps_nothing_too_large_or_without_a_budget() {
        let cache = TarballCache::new(8 << 10);
        assert!(!cache.admits(2 << 10));
        let big = entry(1, None, Bytes::from(vec![0; 2 << 10]));
        cache.insert(&name("a"), &v("1.0.0"), big);
        assert!(cache.get(&name("a"), &v("1.0.0"), 1).is_none());
        let off = TarballCache::new(0);
        off.serves_bytes();
        assert!(!off.in_use());
        assert!(!off.admits(1));
    }
}
