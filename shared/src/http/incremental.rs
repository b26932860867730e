//! Packuments kept as pieces, so a write re-renders what it changed instead of every version.
//!
//! A packument is its head, one entry per live version, and (full view) a time entry per version
//! and a tail (`domain::packument::pieces`). Entries are grouped into chunks of about 32 KiB; each
//! chunk keeps its bytes, their raw deflate (ended by a sync flush, so deflates of consecutive
//! pieces concatenate into one valid stream) and their CRC-32 (CRCs combine). A publish then
//! renders one entry, re-compresses one chunk and the small head and tail, and joins the rest as
//! they are: the gzip of a 3,000-version document is not compressed again, only copied.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};
use semver::Version;

use super::rendered::{Payload, View};
use crate::domain::packument::{self, pieces};
use crate::domain::{LiveVersion, PackageDocument, PackageName, PackageRecord, VersionRecord};

/// Entries are grouped into chunks of about this many bytes, compressed one by one. Deflate
/// looks back 32 KiB, so a chunk this size loses little against one stream for the document.
const CHUNK_BYTES: usize = 32 * 1024;

/// The gzip header: no name, no time, unknown OS (RFC 1952).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block with fixed codes: ends a deflate stream after a sync flush.
const DEFLATE_END: [u8; 2] = [0x03, 0x00];

/// Bytes with their sync-flushed raw deflate and their CRC-32.
#[derive(Clone)]
struct Piece {
    identity: Bytes,
    deflate: Bytes,
    crc: crc32fast::Hasher,
}

impl Piece {
    fn new(identity: Bytes) -> io::Result<Piece> {
        let deflate = deflate(&identity)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&identity);
        Ok(Piece {
            identity,
            deflate,
            crc,
        })
    }

    fn rendered(
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
    ) -> io::Result<Piece> {
        let mut out = Vec::new();
        write(&mut out)?;
        Piece::new(Bytes::from(out))
    }

    /// A chunk's piece before its first rebuild: never joined (a dirty chunk is rebuilt first).
    fn unmade() -> Piece {
        Piece {
            identity: Bytes::new(),
            deflate: Bytes::new(),
            crc: crc32fast::Hasher::new(),
        }
    }
}

/// Pieces up to this size (heads, tails, a version or two) are compressed at the fastest level:
/// deflate's fastest level codes with fixed Huffman tables, and for a few hundred bytes the
/// tables a better level builds and sends cost more time than the few bytes they save (1%).
const FAST_UP_TO: usize = 1024;

thread_local! {
    /// Each thread's deflater, reset for every piece: making one allocates and zeroes about
    /// 300 KiB of tables, which was a fifth of a small package's cold read.
    static DEFLATER: std::cell::RefCell<Compress> =
        std::cell::RefCell::new(Compress::new(Compression::default(), false));
    /// Each thread's deflater for small pieces (`FAST_UP_TO`).
    static FAST_DEFLATER: std::cell::RefCell<Compress> =
        std::cell::RefCell::new(Compress::new(Compression::fast(), false));
}

/// `data` as raw deflate, ended by a sync flush (byte-aligned, stream left open).
fn deflate(data: &[u8]) -> io::Result<Bytes> {
    let (deflater, level) = if data.len() <= FAST_UP_TO {
        (&FAST_DEFLATER, Compression::fast())
    } else {
        (&DEFLATER, Compression::default())
    };
    deflater.with(|deflater| match deflater.try_borrow_mut() {
        Ok(mut compress) => {
            compress.reset();
            deflate_with(&mut compress, data)
        }
        // Only if a deflate ever ran inside another on this thread.
        Err(_) => deflate_with(&mut Compress::new(level, false), data),
    })
}

/// `data` as raw deflate that continues a stream whose last bytes were `before` (at most
/// deflate's 32 KiB window of them): back-references may reach into `before`, so what follows a
/// chunk compresses as well as if the chunk were compressed again with it, at the cost of only
/// the new bytes (and of hashing the window).
fn deflate_after(before: &[u8], data: &[u8]) -> io::Result<Bytes> {
    let before = &before[before.len().saturating_sub(WINDOW)..];
    if before.is_empty() {
        return deflate(data);
    }
    DEFLATER.with(|deflater| {
        let primed = |compress: &mut Compress| {
            compress.reset();
            compress.set_dictionary(before).map_err(io::Error::other)?;
            deflate_with(compress, data)
        };
        match deflater.try_borrow_mut() {
            Ok(mut compress) => primed(&mut compress),
            Err(_) => primed(&mut Compress::new(Compression::default(), false)),
        }
    })
}

/// Deflate's window: the furthest back a match may reach.
const WINDOW: usize = 32 * 1024;

/// `data` as raw deflate with `compress`, fresh or just reset.
fn deflate_with(compress: &mut Compress, data: &[u8]) -> io::Result<Bytes> {
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    loop {
        let consumed = usize::try_from(compress.total_in()).unwrap_or(data.len());
        let rest = data.get(consumed..).unwrap_or_default();
        compress.compress_vec(rest, &mut out, FlushCompress::Sync)?;
        let done = usize::try_from(compress.total_in()).unwrap_or(0) == data.len();
        // Room left after the call means the flush is complete.
        if done && out.len() < out.capacity() {
            return Ok(Bytes::from(out));
        }
        out.reserve(out.capacity().max(1024));
    }
}

/// Consecutive entries compressed together.
struct Chunk {
    /// Each entry's version and bytes (without the `,` before it), in order.
    entries: Vec<(Version, Bytes)>,
    /// The entries joined, each after a `,` unless it is the document's first.
    piece: Piece,
    /// Whether its first entry is the first of the run and the run puts no `,` before that.
    first: bool,
    /// Whether `entries` changed since `piece` was made, other than by entries added at the end.
    dirty: bool,
    /// How many of `entries` (the first ones) `piece` holds; those after were added at the end
    /// since, and are compressed on their own, continuing the piece (`extend`).
    covered: usize,
}

impl Chunk {
    fn new(entries: Vec<(Version, Bytes)>) -> Chunk {
        Chunk {
            entries,
            piece: Piece::unmade(),
            first: false,
            dirty: true,
            covered: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.entries.iter().map(|(_, e)| e.len() + 1).sum()
    }

    /// Joins the entries again; they then point into the new bytes, and the old ones are freed.
    fn rebuild(&mut self, first: bool) -> io::Result<()> {
        let mut joined = Vec::with_capacity(self.bytes());
        let mut ranges = Vec::with_capacity(self.entries.len());
        for (i, (_, entry)) in self.entries.iter().enumerate() {
            if i > 0 || !first {
                joined.push(b',');
            }
            let start = joined.len();
            joined.extend_from_slice(entry);
            ranges.push(start..joined.len());
        }
        let identity = Bytes::from(joined);
        for ((_, entry), range) in self.entries.iter_mut().zip(ranges) {
            *entry = identity.slice(range);
        }
        self.piece = Piece::new(identity)?;
        self.first = first;
        self.dirty = false;
        self.covered = self.entries.len();
        Ok(())
    }

    /// Adds the entries added at the end since the piece was made to it: their bytes appended,
    /// compressed on their own as the continuation of the piece's deflate (`deflate_after`),
    /// their CRC-32 folded in. What a publish of a new highest version costs a big document:
    /// one entry compressed, not the whole chunk.
    fn extend(&mut self) -> io::Result<()> {
        let old = self.piece.identity.clone();
        let added: usize = self.entries[self.covered..]
            .iter()
            .map(|(_, e)| e.len() + 1)
            .sum();
        let mut joined = Vec::with_capacity(old.len() + added);
        joined.extend_from_slice(&old);
        let mut ranges = Vec::with_capacity(self.entries.len() - self.covered);
        for (i, (_, entry)) in self.entries.iter().enumerate().skip(self.covered) {
            if i > 0 || !self.first {
                joined.push(b',');
            }
            let start = joined.len();
            joined.extend_from_slice(entry);
            ranges.push(start..joined.len());
        }
        let tail = &joined[old.len()..];
        let tail_deflate = deflate_after(&old, tail)?;
        let mut deflate = BytesMut::with_capacity(self.piece.deflate.len() + tail_deflate.len());
        deflate.put_slice(&self.piece.deflate);
        deflate.put_slice(&tail_deflate);
        self.piece.crc.update(tail);
        let identity = Bytes::from(joined);
        // Entries already held keep their place in the bytes; the new ones follow.
        let base = old.as_ptr() as usize;
        for (_, entry) in &mut self.entries[..self.covered] {
            let start = (entry.as_ptr() as usize).wrapping_sub(base);
            *entry = identity.slice(start..start + entry.len());
        }
        for ((_, entry), range) in self.entries[self.covered..].iter_mut().zip(ranges) {
            *entry = identity.slice(range);
        }
        self.piece.identity = identity;
        self.piece.deflate = deflate.freeze();
        self.covered = self.entries.len();
        Ok(())
    }
}

/// The entries of one JSON object (`versions` or `time`) in ascending version order, in chunks.
struct Run {
    chunks: Vec<Chunk>,
    /// Whether even the first entry follows a `,` (the time entries follow `created`).
    always_comma: bool,
}

impl Run {
    fn new(entries: Vec<(Version, Bytes)>, always_comma: bool) -> io::Result<Run> {
        let mut chunks = Vec::new();
        let mut current = Vec::new();
        let mut bytes = 0;
        for (version, entry) in entries {
            bytes += entry.len() + 1;
            current.push((version, entry));
            if bytes >= CHUNK_BYTES {
                chunks.push(Chunk::new(std::mem::take(&mut current)));
                bytes = 0;
            }
        }
        if !current.is_empty() {
            chunks.push(Chunk::new(current));
        }
        let mut run = Run {
            chunks,
            always_comma,
        };
        run.finish()?;
        Ok(run)
    }

    fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.entries.len()).sum()
    }

    fn last(&self) -> Option<&Version> {
        self.chunks
            .last()
            .and_then(|c| c.entries.last())
            .map(|(v, _)| v)
    }

    /// The chunk that holds, or would hold, `version`.
    fn chunk_for(&self, version: &Version) -> usize {
        let after = self
            .chunks
            .partition_point(|c| c.entries.last().is_some_and(|(last, _)| last < version));
        after.min(self.chunks.len().saturating_sub(1))
    }

    fn contains(&self, version: &Version) -> bool {
        self.chunks
            .get(self.chunk_for(version))
            .is_some_and(|c| c.entries.binary_search_by(|(v, _)| v.cmp(version)).is_ok())
    }

    fn upsert(&mut self, version: Version, entry: Bytes) {
        // A new highest version after a full last chunk starts a chunk of its own.
        let full = self.chunks.last().is_none_or(|c| {
            c.bytes() >= CHUNK_BYTES && c.entries.last().is_none_or(|(last, _)| *last < version)
        });
        if full {
            self.chunks.push(Chunk::new(Vec::new()));
        }
        let index = self.chunk_for(&version);
        let chunk = &mut self.chunks[index];
        match chunk.entries.binary_search_by(|(v, _)| v.cmp(&version)) {
            Ok(i) => {
                chunk.entries[i].1 = entry;
                chunk.dirty = true;
            }
            // Added after every entry the piece holds: the piece is extended, not made again.
            Err(i) if i == chunk.entries.len() && i == chunk.covered => {
                chunk.entries.push((version, entry));
            }
            Err(i) => {
                chunk.entries.insert(i, (version, entry));
                chunk.dirty = true;
            }
        }
    }

    fn remove(&mut self, version: &Version) {
        let index = self.chunk_for(version);
        if let Some(chunk) = self.chunks.get_mut(index)
            && let Ok(i) = chunk.entries.binary_search_by(|(v, _)| v.cmp(version))
        {
            chunk.entries.remove(i);
            chunk.dirty = true;
        }
    }

    /// Drops empty chunks, splits grown ones, and re-makes every chunk that changed.
    fn finish(&mut self) -> io::Result<()> {
        self.chunks.retain(|c| !c.entries.is_empty());
        let mut i = 0;
        while i < self.chunks.len() {
            if self.chunks[i].bytes() > 2 * CHUNK_BYTES && self.chunks[i].entries.len() > 1 {
                let half = self.chunks[i].entries.len() / 2;
                let tail = self.chunks[i].entries.split_off(half);
                self.chunks[i].dirty = true;
                self.chunks.insert(i + 1, Chunk::new(tail));
            }
            i += 1;
        }
        for (i, chunk) in self.chunks.iter_mut().enumerate() {
            let first = i == 0 && !self.always_comma;
            if chunk.dirty || chunk.first != first {
                chunk.rebuild(first)?;
            } else if chunk.covered < chunk.entries.len() {
                chunk.extend()?;
            }
        }
        Ok(())
    }

    fn pieces(&self) -> impl Iterator<Item = &Piece> + Clone {
        self.chunks.iter().map(|c| &c.piece)
    }

    /// Memory held (entries point into the chunks' bytes).
    fn size(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.piece.identity.len() + c.piece.deflate.len() + 64 * c.entries.len())
            .sum()
    }
}

/// One view of a package's packument at one revision, as pieces.
pub(crate) struct Built {
    /// The package revision the pieces show.
    pub revision: u64,
    /// When the package was created (ms since the epoch): with the revision, names the package
    /// state shown even across a delete and re-create, which starts revisions over.
    created: i64,
    view: View,
    base_url: String,
    versions: Run,
    /// The full view's time entries (empty in the abbreviated view).
    times: Run,
    /// The full view's top-level version (`packument::latest`) and README.
    latest: Option<(Version, LiveVersion, Option<String>)>,
    /// The abbreviated view's head as rendered for the package's record at a revision (`keep_head`):
    /// kept with the pieces, so that the first read of a small package after a start joins
    /// them without compressing anything (its deflater's reset alone was ~3% of such a read).
    head: Option<(u64, Piece)>,
}

/// A version's state as a write left it: live with its record, or gone.
pub(crate) type Changed = (Version, Option<VersionRecord>);

impl Built {
    /// Builds `view` of `doc`, with `readme` (the latest version's) in the full view.
    pub(crate) fn from_document(
        doc: &PackageDocument,
        view: View,
        base_url: &str,
        readme: Option<String>,
    ) -> io::Result<Built> {
        let name = &doc.package.name;
        let live = doc.live();
        let mut entries = Vec::with_capacity(live.len());
        for (version, _, l) in &live {
            entries.push(((*version).clone(), entry(view, name, version, l, base_url)?));
        }
        let versions = Run::new(entries, false)?;
        let (times, latest) = match view {
            View::Abbreviated => (Run::new(Vec::new(), true)?, None),
            View::Full => {
                let mut times = Vec::with_capacity(live.len());
                for (version, published, _) in &live {
                    let mut out = Vec::new();
                    pieces::time(version, published, &mut out)?;
                    times.push(((*version).clone(), Bytes::from(out)));
                }
                let latest = packument::latest(doc).map(|(v, l)| (v.clone(), l.clone(), readme));
                (Run::new(times, true)?, latest)
            }
        };
        Ok(Built {
            revision: doc.package.revision,
            created: doc.package.created.timestamp_millis(),
            view,
            base_url: base_url.to_string(),
            versions,
            times,
            latest,
            head: None,
        })
    }

    /// Whether these pieces show `package` as it is, or as an earlier write of it left it (the
    /// same package, not one deleted and created again since).
    pub(crate) fn shows_up_to(&self, package: &PackageRecord) -> bool {
        self.created == package.created.timestamp_millis() && self.revision <= package.revision
    }

    /// The pieces as bytes to keep between runs (`storage::RenderStore`); `from_kept` reads
    /// them back without rendering or compressing anything.
    pub(crate) fn to_kept(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size() + 1024);
        out.extend_from_slice(KEPT_FORMAT);
        out.put_u64_le(self.revision);
        out.put_i64_le(self.created);
        out.put_u8(match self.view {
            View::Full => 0,
            View::Abbreviated => 1,
        });
        put_bytes(&mut out, self.base_url.as_bytes())?;
        for run in [&self.versions, &self.times] {
            out.put_u8(u8::from(run.always_comma));
            put_len(&mut out, run.chunks.len())?;
            for chunk in &run.chunks {
                out.put_u8(u8::from(chunk.first));
                put_piece(&mut out, &chunk.piece)?;
                put_len(&mut out, chunk.entries.len())?;
                let base = chunk.piece.identity.as_ptr() as usize;
                for (version, entry) in &chunk.entries {
                    put_bytes(&mut out, version.to_string().as_bytes())?;
                    // Entries are slices of the chunk's bytes (`Chunk::rebuild`).
                    let start = (entry.as_ptr() as usize).wrapping_sub(base);
                    if start.saturating_add(entry.len()) > chunk.piece.identity.len() {
                        return Err(io::Error::other("an entry outside its chunk"));
                    }
                    put_len(&mut out, start)?;
                    put_len(&mut out, entry.len())?;
                }
            }
        }
        match &self.latest {
            None => out.put_u8(0),
            Some((version, live, readme)) => {
                out.put_u8(1);
                put_bytes(&mut out, version.to_string().as_bytes())?;
                put_bytes(&mut out, &serde_json::to_vec(live)?)?;
                match readme {
                    None => out.put_u8(0),
                    Some(readme) => {
                        out.put_u8(1);
                        put_bytes(&mut out, readme.as_bytes())?;
                    }
                }
            }
        }
        match &self.head {
            None => out.put_u8(0),
            Some((revision, head)) => {
                out.put_u8(1);
                out.put_u64_le(*revision);
                put_piece(&mut out, head)?;
            }
        }
        Ok(out)
    }

    /// Pieces kept by `to_kept`; `None` if `kept` is not such bytes (another format, or
    /// damaged): the reader then builds anew.
    pub(crate) fn from_kept(kept: Bytes) -> Option<Built> {
        let mut r = Reader(kept);
        let format = r.take(KEPT_FORMAT.len())?;
        let with_head = match format.as_ref() {
            f if f == KEPT_FORMAT => true,
            f if f == KEPT_FORMAT_WITHOUT_HEAD => false,
            _ => return None,
        };
        let revision = r.u64()?;
        let created = r.i64()?;
        let view = match r.u8()? {
            0 => View::Full,
            1 => View::Abbreviated,
            _ => return None,
        };
        let base_url = r.string()?;
        let mut runs = Vec::with_capacity(2);
        for _ in 0..2 {
            let always_comma = r.u8()? == 1;
            let count = r.len()?;
            let mut chunks = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                let first = r.u8()? == 1;
                let piece = r.piece()?;
                let entry_count = r.len()?;
                let mut entries = Vec::with_capacity(entry_count.min(1 << 16));
                for _ in 0..entry_count {
                    let version = Version::parse(&r.string()?).ok()?;
                    let (start, len) = (r.len()?, r.len()?);
                    if start.checked_add(len)? > piece.identity.len() {
                        return None;
                    }
                    entries.push((version, piece.identity.slice(start..start + len)));
                }
                chunks.push(Chunk {
                    covered: entries.len(),
                    entries,
                    piece,
                    first,
                    dirty: false,
                });
            }
            runs.push(Run {
                chunks,
                always_comma,
            });
        }
        let latest = if r.u8()? == 0 {
            None
        } else {
            let version = Version::parse(&r.string()?).ok()?;
            let live: LiveVersion = serde_json::from_slice(&r.bytes()?).ok()?;
            let readme = if r.u8()? == 0 {
                None
            } else {
                Some(r.string()?)
            };
            Some((version, live, readme))
        };
        let head = if with_head && r.u8()? == 1 {
            Some((r.u64()?, r.piece()?))
        } else {
            None
        };
        let times = runs.pop()?;
        let versions = runs.pop()?;
        Some(Built {
            revision,
            created,
            view,
            base_url,
            versions,
            times,
            latest,
            head,
        })
    }

    /// The view it is of.
    pub(crate) fn view(&self) -> View {
        self.view
    }

    /// The base URL its tarball links are under.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// How many versions it lists.
    pub(crate) fn version_count(&self) -> usize {
        self.versions.len()
    }

    /// Whether nothing is installable (every version unpublished).
    pub(crate) fn is_empty(&self) -> bool {
        self.versions.len() == 0
    }

    /// Applies what the writes up to `package`'s revision did to the versions they touched.
    pub(crate) fn apply(&mut self, package: &PackageRecord, changed: &[Changed]) -> io::Result<()> {
        let name = &package.name;
        for (version, record) in changed {
            if let Some((crate::domain::VersionState::Live(live), published)) =
                record.as_ref().map(|r| (&r.state, r.published))
            {
                {
                    let e = entry(self.view, name, version, live, &self.base_url)?;
                    self.versions.upsert(version.clone(), e);
                    if self.view == View::Full {
                        let mut out = Vec::new();
                        pieces::time(version, &published, &mut out)?;
                        self.times.upsert(version.clone(), Bytes::from(out));
                        if let Some((v, l, _)) = &mut self.latest
                            && v == version
                        {
                            *l = live.as_ref().clone();
                        }
                    }
                }
            } else {
                {
                    self.versions.remove(version);
                    self.times.remove(version);
                    if self.latest.as_ref().is_some_and(|(v, _, _)| v == version) {
                        self.latest = None;
                    }
                }
            }
        }
        self.versions.finish()?;
        self.times.finish()?;
        self.revision = package.revision;
        self.head = None;
        Ok(())
    }

    /// Renders the abbreviated view's head for `package`, the record these pieces show, to be
    /// kept with them (`to_kept`) and joined as it is while the record stays at that revision.
    pub(crate) fn keep_head(&mut self, package: &PackageRecord) -> io::Result<()> {
        if self.view == View::Abbreviated && self.revision == package.revision {
            let head = Piece::rendered(|out| pieces::abbreviated_head(package, out))?;
            self.head = Some((package.revision, head));
        }
        Ok(())
    }

    /// The version the full view must show at its top level now, if it is not the one kept:
    /// the caller reads its record and README and hands them to `set_latest`.
    pub(crate) fn latest_wanted(&self, package: &PackageRecord) -> Option<Version> {
        if self.view != View::Full {
            return None;
        }
        let tagged = package
            .dist_tags
            .get(&crate::domain::DistTag::latest())
            .filter(|v| self.versions.contains(v));
        let wanted = tagged.or(self.versions.last())?;
        match &self.latest {
            Some((kept, _, _)) if kept == wanted => None,
            _ => Some(wanted.clone()),
        }
    }

    /// Sets the full view's top-level version.
    pub(crate) fn set_latest(
        &mut self,
        version: Version,
        live: LiveVersion,
        readme: Option<String>,
    ) {
        self.latest = Some((version, live, readme));
    }

    /// Memory held.
    pub(crate) fn size(&self) -> usize {
        let readme = self
            .latest
            .as_ref()
            .and_then(|(_, _, r)| r.as_ref())
            .map_or(0, String::len);
        self.versions.size() + self.times.size() + readme + 256
    }

    /// The document at `package` (the record this was built or last changed for): its bytes and
    /// their gzip.
    pub(crate) fn join(&self, package: &PackageRecord) -> io::Result<(Payload, Payload)> {
        let (head, tail) = match self.view {
            View::Abbreviated => (
                match &self.head {
                    Some((revision, head)) if *revision == package.revision => head.clone(),
                    _ => Piece::rendered(|out| pieces::abbreviated_head(package, out))?,
                },
                abbreviated_tail()?,
            ),
            View::Full => {
                let mut tail = Vec::new();
                pieces::full_middle(package, &mut tail)?;
                let middle = Piece::new(Bytes::from(tail))?;
                let latest = self.latest.as_ref();
                let tail = Piece::rendered(|out| {
                    pieces::full_tail(
                        package,
                        latest.map(|(_, l, _)| l),
                        latest.and_then(|(_, _, r)| r.as_deref()),
                        out,
                    )
                })?;
                let head = Piece::rendered(|out| pieces::full_head(package, out))?;
                return Ok(join(
                    std::iter::once(&head)
                        .chain(self.versions.pieces())
                        .chain(std::iter::once(&middle))
                        .chain(self.times.pieces())
                        .chain(std::iter::once(&tail)),
                ));
            }
        };
        Ok(join(
            std::iter::once(&head)
                .chain(self.versions.pieces())
                .chain(std::iter::once(&tail)),
        ))
    }
}

/// The abbreviated view's tail, the same for every package: compressed once per process.
fn abbreviated_tail() -> io::Result<Piece> {
    static TAIL: std::sync::OnceLock<Piece> = std::sync::OnceLock::new();
    if let Some(tail) = TAIL.get() {
        return Ok(tail.clone());
    }
    let tail = Piece::new(Bytes::from_static(pieces::ABBREVIATED_TAIL))?;
    Ok(TAIL.get_or_init(|| tail).clone())
}

/// One version's entry in `view`.
fn entry(
    view: View,
    name: &PackageName,
    version: &Version,
    live: &LiveVersion,
    base_url: &str,
) -> io::Result<Bytes> {
    let mut out = Vec::new();
    match view {
        View::Full => pieces::full_version(name, version, live, base_url, &mut out)?,
        View::Abbreviated => pieces::abbreviated_version(name, version, live, base_url, &mut out)?,
    }
    Ok(Bytes::from(out))
}

/// The first bytes of kept pieces: their format, so a later release never misreads older ones.
/// Kept pieces hold rendered bytes (entries, the abbreviated head): a release that renders
/// them differently changes it, so that it builds them again rather than serve older bytes.
const KEPT_FORMAT: &[u8; 8] = b"pieces02";

/// The format before the abbreviated head was kept with the pieces: read, with no head.
const KEPT_FORMAT_WITHOUT_HEAD: &[u8; 8] = b"pieces01";

/// Appends a length (`u32`; kept pieces are far smaller than 4 GiB).
fn put_len(out: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let len = u32::try_from(len).map_err(io::Error::other)?;
    out.put_u32_le(len);
    Ok(())
}

/// Appends `bytes` after their length.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    put_len(out, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// Appends a piece: its bytes, their deflate and their CRC-32 (`Reader::piece` reads it).
fn put_piece(out: &mut Vec<u8>, piece: &Piece) -> io::Result<()> {
    put_bytes(out, &piece.identity)?;
    put_bytes(out, &piece.deflate)?;
    out.put_u32_le(piece.crc.clone().finalize());
    Ok(())
}

/// Reads kept pieces; every read is `None` past the end, and byte strings are slices of the
/// kept bytes, not copies.
struct Reader(Bytes);

impl Reader {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        (n <= self.0.len()).then(|| self.0.split_to(n))
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.as_ref().try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u32()?).ok()
    }

    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    /// A piece `put_piece` wrote.
    fn piece(&mut self) -> Option<Piece> {
        let identity = self.bytes()?;
        let deflate = self.bytes()?;
        let crc = self.u32()?;
        let length = u64::try_from(identity.len()).ok()?;
        Some(Piece {
            crc: crc32fast::Hasher::new_with_initial_len(crc, length),
            identity,
            deflate,
        })
    }
}

/// Documents up to this size are copied into one buffer each (identity and gzip), which is the
/// cheapest to send; bigger ones are sent as their pieces, so a document of megabytes is held
/// once (by its pieces), not twice.
const JOIN_UP_TO: usize = 256 * 1024;

/// The pieces' bytes in order, and the gzip member their deflates make.
fn join<'a>(pieces: impl Iterator<Item = &'a Piece> + Clone) -> (Payload, Payload) {
    let (identity_len, deflate_len) = pieces.clone().fold((0, 0), |(i, d), p| {
        (i + p.identity.len(), d + p.deflate.len())
    });
    let mut crc = crc32fast::Hasher::new();
    for piece in pieces.clone() {
        crc.combine(&piece.crc);
    }
    let mut trailer = BytesMut::with_capacity(DEFLATE_END.len() + 8);
    trailer.put_slice(&DEFLATE_END);
    trailer.put_u32_le(crc.finalize());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    #[allow(clippy::cast_possible_truncation)]
    trailer.put_u32_le(identity_len as u32);
    if identity_len > JOIN_UP_TO {
        let identity = pieces.clone().map(|p| p.identity.clone()).collect();
        let gzip = std::iter::once(Bytes::from_static(&GZIP_HEADER))
            .chain(pieces.map(|p| p.deflate.clone()))
            .chain(std::iter::once(trailer.freeze()))
            .collect();
        return (Payload::chain(identity), Payload::chain(gzip));
    }
    // The identity bytes of a document of tens of kilobytes go to a file the local listener sends
    // with `sendfile` (`zero_copy`), where that is on.
    let parts: Vec<&[u8]> = pieces.clone().map(|p| &p.identity[..]).collect();
    let identity = crate::zero_copy::file_backed(&parts).unwrap_or_else(|| {
        let mut identity = BytesMut::with_capacity(identity_len);
        for part in parts {
            identity.put_slice(part);
        }
        identity.freeze()
    });
    let mut gzip = BytesMut::with_capacity(GZIP_HEADER.len() + deflate_len + trailer.len());
    gzip.put_slice(&GZIP_HEADER);
    for piece in pieces {
        gzip.put_slice(&piece.deflate);
    }
    gzip.put_slice(&trailer);
    (Payload::One(identity), Payload::One(gzip.freeze()))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read;

    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::domain::{Dist, DistTag, Manifest, TarballKey, VersionState};

    /// A live version whose manifest is about 1 KB, `note` in its description.
    pub(crate) fn live(name: &PackageName, version: &Version, note: &str) -> VersionRecord {
        VersionRecord {
            version: version.clone(),
            published: Utc::now(),
            state: VersionState::Live(Box::new(LiveVersion {
                manifest: Manifest::from_map(
                    json!({
                        "description": format!("{note} {}", "padding ".repeat(120)),
                        "dependencies": {"x": "^1"},
                        "scripts": {"install": "node i"},
                    })
                    .as_object()
                    .unwrap(),
                )
                .unwrap(),
                dist: Dist {
                    shasum: "ab".into(),
                    integrity: "sha512-x".into(),
                    file_count: 1,
                    unpacked_size: 2,
                    tarball_key: TarballKey::new(name, version, "00"),
                    signatures: Vec::new(),
                    provenance: None,
                },
                readme_filename: None,
                has_readme: Some(true),
                deprecated: None,
            })),
        }
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// What a full rebuild of `doc` answers.
    fn rebuilt(doc: &PackageDocument, view: View) -> Vec<u8> {
        let readme = packument::latest(doc).map(|(v, _)| format!("readme {v}"));
        let built = Built::from_document(doc, view, "http://r", readme).unwrap();
        let (identity, gzip) = built.join(&doc.package).unwrap();
        let identity = identity.to_bytes();
        assert_eq!(gunzip(&gzip.to_bytes()), identity);
        identity.to_vec()
    }

    /// Kept bytes that were cut short or are of another format read as nothing (the reader
    /// builds anew), never as other pieces and never as a panic.
    #[test]
    fn damaged_kept_pieces_read_as_none() {
        let name = PackageName::parse("@s/kept").unwrap();
        let mut doc = PackageDocument {
            package: PackageRecord::new(name.clone(), Utc::now()),
            versions: Vec::new(),
        };
        for minor in 0..40 {
            doc.versions
                .push(live(&name, &Version::new(1, minor, 0), "kept"));
        }
        doc.package.revision = 40;
        for view in [View::Full, View::Abbreviated] {
            let built = Built::from_document(&doc, view, "http://r", Some("r".into())).unwrap();
            let kept = built.to_kept().unwrap();
            let whole = Built::from_kept(Bytes::from(kept.clone())).unwrap();
            assert_eq!(whole.version_count(), 40);
            assert_eq!(
                whole.join(&doc.package).unwrap(),
                built.join(&doc.package).unwrap()
            );
            for cut in (0..kept.len()).step_by(97) {
                assert!(
                    Built::from_kept(Bytes::copy_from_slice(&kept[..cut])).is_none(),
                    "{view:?} cut at {cut}"
                );
            }
            let mut other_format = kept.clone();
            other_format[7] = b'9';
            assert!(Built::from_kept(Bytes::from(other_format)).is_none());
            // Another package state: created again, or newer than the record read.
            let mut recreated = doc.package.clone();
            recreated.created += chrono::Duration::seconds(1);
            assert!(!whole.shows_up_to(&recreated));
            let mut older = doc.package.clone();
            older.revision = 39;
            assert!(!whole.shows_up_to(&older));
        }
    }

    /// The abbreviated head kept with the pieces is joined as it is while the record stays at
    /// its revision, and rendered again after; pieces kept before heads were read back whole.
    #[test]
    fn the_kept_head_is_joined_while_the_record_stays_at_its_revision() {
        let name = PackageName::parse("@s/head").unwrap();
        let mut doc = PackageDocument {
            package: PackageRecord::new(name.clone(), Utc::now()),
            versions: Vec::new(),
        };
        for minor in 0..3 {
            doc.versions
                .push(live(&name, &Version::new(1, minor, 0), "head"));
        }
        doc.package.revision = 3;
        let mut built = Built::from_document(&doc, View::Abbreviated, "http://r", None).unwrap();
        built.keep_head(&doc.package).unwrap();
        let kept = built.to_kept().unwrap();
        let read_back = Built::from_kept(Bytes::from(kept.clone())).unwrap();
        assert_eq!(
            read_back.join(&doc.package).unwrap(),
            built.join(&doc.package).unwrap()
        );
        assert_eq!(
            read_back.join(&doc.package).unwrap().0.to_bytes(),
            rebuilt(&doc, View::Abbreviated)
        );

        // The kept head is what is joined at its revision (a record changed without a new
        // revision, which no write makes, shows which head was used)...
        let mut moved = doc.package.clone();
        moved.dist_tags.insert(
            crate::domain::DistTag::parse("next").unwrap(),
            Version::new(1, 2, 0),
        );
        let joined = |b: &Built, p: &PackageRecord| b.join(p).unwrap().0.to_bytes().to_vec();
        assert!(
            !String::from_utf8(joined(&read_back, &moved))
                .unwrap()
                .contains("\"next\"")
        );
        // ...and not at any other.
        moved.revision = 4;
        assert!(
            String::from_utf8(joined(&read_back, &moved))
                .unwrap()
                .contains("\"next\"")
        );

        // Pieces in the format before heads were kept: read back, with none.
        let mut older = built_without_head(&doc);
        older[..KEPT_FORMAT_WITHOUT_HEAD.len()].copy_from_slice(KEPT_FORMAT_WITHOUT_HEAD);
        let older = Built::from_kept(Bytes::from(older)).expect("older pieces read back");
        assert!(older.head.is_none());
        assert_eq!(
            joined(&older, &doc.package),
            rebuilt(&doc, View::Abbreviated)
        );
    }

    /// `doc`'s abbreviated pieces kept with no head, the marker of one removed (the bytes an
    /// older release kept, but for their format).
    fn built_without_head(doc: &PackageDocument) -> Vec<u8> {
        let built = Built::from_document(doc, View::Abbreviated, "http://r", None).unwrap();
        let mut kept = built.to_kept().unwrap();
        assert_eq!(kept.pop(), Some(0), "no head: its marker is the last byte");
        kept
    }

    /// A deterministic mix of publishes (in and out of order), deprecations, unpublishes and
    /// tag moves: after each, the patched pieces answer exactly what a full rebuild does.
    #[test]
    fn patched_pieces_answer_what_a_rebuild_does() {
        let name = PackageName::parse("@s/big").unwrap();
        let mut doc = PackageDocument {
            package: PackageRecord::new(name.clone(), Utc::now()),
            versions: Vec::new(),
        };
        let mut seed = 7_u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        let mut built: [Option<Built>; 2] = [None, None];
        for step in 0..250_u64 {
            let roll = next() % 10;
            let mut changed = Vec::new();
            let live_count = doc.live().len();
            if roll < 6 || live_count < 3 {
                // Mostly appends, sometimes a version below the highest.
                let version = if roll == 0 {
                    Version::new(0, step, 1)
                } else {
                    Version::new(1, step, 0)
                };
                let record = live(&name, &version, &format!("v{step}"));
                doc.versions.push(record.clone());
                changed.push((version, Some(record)));
            } else {
                let index = usize::try_from(next()).unwrap() % doc.versions.len();
                let record = &mut doc.versions[index];
                if let VersionState::Live(l) = &mut record.state {
                    if roll < 8 {
                        l.deprecated = Some(format!("deprecated at {step}"));
                    } else {
                        record.state = VersionState::Unpublished { at: Utc::now() };
                    }
                }
                changed.push((record.version.clone(), Some(record.clone())));
            }
            if roll == 9 {
                let live = doc.live();
                let pick = live[usize::try_from(next()).unwrap() % live.len()]
                    .0
                    .clone();
                doc.package.dist_tags.insert(DistTag::latest(), pick);
            }
            doc.package.revision += 1;
            if doc.live().is_empty() {
                continue;
            }
            for (slot, view) in built.iter_mut().zip([View::Full, View::Abbreviated]) {
                let b = match slot {
                    None => slot.insert(
                        Built::from_document(&doc, view, "http://r", Some("x".into())).unwrap(),
                    ),
                    Some(b) => {
                        b.apply(&doc.package, &changed).unwrap();
                        b
                    }
                };
                if let Some(wanted) = b.latest_wanted(&doc.package) {
                    let record = doc.versions.iter().find(|r| r.version == wanted).unwrap();
                    let VersionState::Live(l) = &record.state else {
                        panic!("latest is live")
                    };
                    b.set_latest(
                        wanted.clone(),
                        (**l).clone(),
                        Some(format!("readme {wanted}")),
                    );
                }
                // The README of a kept latest version was given when it was built.
                if let Some((v, _, r)) = &mut b.latest {
                    *r = Some(format!("readme {v}"));
                }
                // Every few steps the pieces go through the store's bytes and on from there,
                // as after a restart.
                if step % 5 == 0 {
                    let kept = Bytes::from(b.to_kept().unwrap());
                    let read_back = Built::from_kept(kept).expect("kept pieces read back");
                    assert_eq!(
                        read_back.join(&doc.package).unwrap(),
                        b.join(&doc.package).unwrap(),
                        "step {step}, {view:?}: read back as kept"
                    );
                    assert!(read_back.shows_up_to(&doc.package));
                    *b = read_back;
                }
                let (identity, gzip) = b.join(&doc.package).unwrap();
                let (identity, gzip) = (identity.to_bytes(), gzip.to_bytes());
                assert_eq!(
                    String::from_utf8(identity.to_vec()).unwrap(),
                    String::from_utf8(rebuilt(&doc, view)).unwrap(),
                    "step {step}, {view:?}"
                );
                assert_eq!(
                    gunzip(&gzip),
                    identity,
                    "step {step}: the gzip is the bytes"
                );
            }
        }
        let chunks = built[0].as_ref().unwrap().versions.chunks.len();
        assert!(chunks > 1, "a big document is in several chunks: {chunks}");
    }

    /// A publish of a new highest version compresses the new entries only: the last chunk's
    /// deflate is the old one with the new entries' continuation after it, and a new chunk is
    /// started once the last is full.
    #[test]
    fn a_new_highest_version_extends_the_last_chunk() {
        let name = PackageName::parse("@s/grow").unwrap();
        let mut doc = PackageDocument {
            package: PackageRecord::new(name.clone(), Utc::now()),
            versions: Vec::new(),
        };
        for minor in 0..100 {
            doc.versions
                .push(live(&name, &Version::new(1, minor, 0), "grow"));
        }
        doc.package.revision = 100;
        for view in [View::Full, View::Abbreviated] {
            let mut b = Built::from_document(&doc, view, "http://r", None).unwrap();
            let mut grown = doc.clone();
            let mut extended = 0;
            for minor in 100..160 {
                let before = b.versions.chunks.last().unwrap().piece.deflate.clone();
                let chunks = b.versions.chunks.len();
                let version = Version::new(1, minor, 0);
                let record = live(&name, &version, "grow");
                grown.versions.push(record.clone());
                grown.package.revision += 1;
                b.apply(&grown.package, &[(version, Some(record))]).unwrap();
                let last = &b.versions.chunks.last().unwrap().piece.deflate;
                if b.versions.chunks.len() == chunks {
                    assert!(last.starts_with(&before), "{view:?} {minor}: extended");
                    assert!(last.len() > before.len());
                    extended += 1;
                }
                if let Some(wanted) = b.latest_wanted(&grown.package) {
                    let VersionState::Live(l) = &grown.versions.last().unwrap().state else {
                        panic!("live")
                    };
                    b.set_latest(wanted, (**l).clone(), None);
                }
                let (identity, gzip) = b.join(&grown.package).unwrap();
                assert_eq!(gunzip(&gzip.to_bytes()), identity.to_bytes().to_vec());
            }
            assert!(extended > 40, "{view:?}: {extended} of 60 extended");
            assert!(
                b.versions
                    .chunks
                    .iter()
                    .all(|c| c.bytes() < 2 * CHUNK_BYTES),
                "chunks stay about their size"
            );
        }
    }

    #[test]
    fn a_deflate_of_nothing_joins_too() {
        let (identity, gzip) = join([Piece::new(Bytes::new()).unwrap()].iter());
        assert!(identity.is_empty());
        assert!(gunzip(&gzip.to_bytes()).is_empty());
    }

    /// A document bigger than `JOIN_UP_TO` is sent as its pieces, not copied into one buffer:
    /// the same bytes, and a gzip member that decodes to them.
    #[test]
    fn a_big_document_is_sent_as_its_pieces() {
        let name = PackageName::parse("@s/big").unwrap();
        let mut doc = PackageDocument {
            package: PackageRecord::new(name.clone(), Utc::now()),
            versions: Vec::new(),
        };
        for minor in 0..1500 {
            doc.versions
                .push(live(&name, &Version::new(1, minor, 0), "big"));
        }
        doc.package.revision = 1500;
        for view in [View::Full, View::Abbreviated] {
            let built = Built::from_document(&doc, view, "http://r", None).unwrap();
            let (identity, gzip) = built.join(&doc.package).unwrap();
            assert!(identity.len() > JOIN_UP_TO, "{view:?}: {}", identity.len());
            let (Payload::Chain(parts, _), Payload::Chain(..)) = (&identity, &gzip) else {
                panic!("{view:?}: a big document was copied into one buffer");
            };
            assert!(parts.len() > 2);
            let bytes = identity.to_bytes();
            assert_eq!(bytes.len(), identity.len());
            assert_eq!(gunzip(&gzip.to_bytes()), bytes);
            let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(value["versions"].as_object().unwrap().len(), 1500);
        }
    }
}
