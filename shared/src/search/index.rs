//! The in-memory search index: an inverted index from words to packages, with the field each
//! word was found in, and the ranking npm users expect (exact name first, then name prefix and
//! name words, then keywords, description and README; deprecated packages last).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use super::indexed::Indexed;
use super::matches::{Access, AccessUnit, Hit, Match, Matches, NO_UNIT, Order, Page, Undecided};
use super::query::SearchQuery;
use super::{SearchEntry, tokenize};
use crate::domain::{PackageName, RepoRef};
use crate::storage::SearchChange;

/// Where a word was found, as bits of a posting's mask.
const NAME: u8 = 1;
const KEYWORD: u8 = 2;
const DESCRIPTION: u8 = 4;
const README: u8 = 8;
/// With [`KEYWORD`]: the word is one of the package's keywords whole (`react`, not the `react`
/// of `react-dom`), so `keywords:react` is decided by the postings without reading entries.
const WHOLE_KEYWORD: u8 = 16;

/// A query's last word also matches the words it begins (`wid` finds `widget`), up to this many
/// of them: enough for a person typing, bounded for a one-letter query.
const PREFIX_EXPANSIONS: usize = 64;

/// Points for the whole text being the package's name (or its name without the scope), and for
/// the name beginning with it: above anything words can score.
const EXACT: u32 = 10_000;
const NAME_PREFIX: u32 = 5_000;

/// Points per query word, by the best field it was found in.
fn weight(mask: u8) -> u32 {
    if mask & NAME != 0 {
        100
    } else if mask & KEYWORD != 0 {
        30
    } else if mask & DESCRIPTION != 0 {
        10
    } else if mask & README != 0 {
        3
    } else {
        0
    }
}

/// One word's packages, ascending by id: each a [`posting`] (package id and fields mask in one
/// `u32`, half the memory of a pair: most of the index is these).
type Postings = Vec<u32>;

/// Bits of a posting that hold the fields mask.
const MASK_BITS: u32 = 5;
/// Ids stay below this (compaction renumbers them densely long before).
const MAX_ID: u32 = 1 << (32 - MASK_BITS);

/// A posting: `id` in the high bits, the fields `mask` in the low ones.
fn posting(id: u32, mask: u8) -> u32 {
    (id << MASK_BITS) | u32::from(mask)
}

/// A posting's id and fields mask.
fn unpack(p: u32) -> (u32, u8) {
    (p >> MASK_BITS, (p & ((1 << MASK_BITS) - 1)) as u8)
}

/// Every change to any index takes the next of these: matches made in one state of one index
/// are recognised as stale in any other (a reload replaces the whole index).
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// Every indexed package, findable by its words.
#[derive(Default)]
pub struct SearchIndex {
    /// Package id → what is kept of it. Ids only grow (until compaction renumbers them in
    /// order), so postings appended in id order stay sorted, and the slots stay dense.
    entries: Slots,
    /// Lowercase name → package id; sorted, so the names a text begins are a range.
    ids: BTreeMap<Box<str>, u32>,
    /// Lowercase base names of scoped packages, with their ids (`widget` begins `@a/widget`).
    bases: BTreeSet<(Box<str>, u32)>,
    /// Word → packages; sorted, so a prefix is a range. Postings of replaced or removed
    /// packages stay until the next compaction (queries skip ids without an entry), so an
    /// entry need not keep its README words to be taken out.
    words: BTreeMap<Box<str>, Postings>,
    /// Access units by key (lowercase `owner/repo`, a newline, lowercase scope) → unit id. Ids
    /// are never reused, so a caller's decisions stay valid while the index changes.
    unit_ids: HashMap<Box<str>, u32>,
    /// Packages replaced or removed since the last compaction.
    dead: usize,
    /// Lowercase name → the revision that removed the package: an older change of it arriving
    /// later (another process's log, read again) must not bring it back.
    removed: HashMap<String, u64>,
    next_id: u32,
    /// This state's number (from [`GENERATIONS`]).
    generation: u64,
}

/// What ranking and access need of a package, kept apart from its entry in a dense vector:
/// matches come in ascending id order, so reading these streams through memory.
#[derive(Debug, Clone, Copy)]
struct Meta {
    modified: i64,
    unit: u32,
    deprecated: bool,
    live: bool,
}

const DEAD: Meta = Meta {
    modified: 0,
    unit: NO_UNIT,
    deprecated: false,
    live: false,
};

/// The entries by id: a slot per id given out since the last compaction, empty once its package
/// was replaced or removed. A lookup is an index, not a hash (a broad word looks up tens of
/// thousands).
#[derive(Default)]
struct Slots {
    entries: Vec<Option<Arc<Indexed>>>,
    meta: Vec<Meta>,
    live: usize,
}

impl Slots {
    fn len(&self) -> usize {
        self.live
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn get(&self, id: u32) -> Option<&Arc<Indexed>> {
        self.entries.get(id as usize)?.as_ref()
    }

    fn meta(&self, id: u32) -> Option<&Meta> {
        self.meta.get(id as usize).filter(|m| m.live)
    }

    fn insert(&mut self, id: u32, entry: Arc<Indexed>, unit: u32) {
        let at = id as usize;
        if self.entries.len() <= at {
            self.entries.resize(at + 1, None);
            self.meta.resize(at + 1, DEAD);
        }
        self.meta[at] = Meta {
            modified: entry.modified.timestamp_micros(),
            unit,
            deprecated: entry.deprecated,
            live: true,
        };
        if self.entries[at].replace(entry).is_none() {
            self.live += 1;
        }
    }

    fn remove(&mut self, id: u32) {
        if let Some(slot) = self.entries.get_mut(id as usize)
            && slot.take().is_some()
        {
            self.meta[id as usize] = DEAD;
            self.live -= 1;
        }
    }

    /// The live entries with their ids, ascending.
    fn iter(&self) -> impl Iterator<Item = (u32, &Arc<Indexed>)> {
        (0u32..)
            .zip(&self.entries)
            .filter_map(|(id, slot)| Some((id, slot.as_ref()?)))
    }

    /// The live entries numbered anew from 0 in their order (what compaction does to ids).
    fn renumbered(&mut self) -> Slots {
        let (entries, meta): (Vec<Option<Arc<Indexed>>>, Vec<Meta>) =
            std::mem::take(&mut self.entries)
                .into_iter()
                .zip(std::mem::take(&mut self.meta))
                .filter_map(|(slot, meta)| Some((Some(slot?), meta)))
                .unzip();
        Slots {
            live: entries.len(),
            entries,
            meta,
        }
    }

    fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.meta.shrink_to_fit();
    }
}

/// Compaction runs once this many dead packages are in the postings, and more than a quarter of
/// the live ones: a publish costs O(its words), and the index stays within ~1.25× its size.
const COMPACT_AFTER: usize = 1024;

/// The repository access to `name` is decided by: the one it is bound to, or (stored before
/// GitHub mode) its name's own.
fn access_repository(name: &PackageName, bound: Option<&RepoRef>) -> Option<RepoRef> {
    bound.cloned().or_else(|| RepoRef::unbound(name))
}

/// The base name of a lowercase package name, if it is scoped.
fn scoped_base(key: &str) -> Option<&str> {
    key.strip_prefix('@')?.split_once('/').map(|(_, base)| base)
}

impl SearchIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Packages indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies a change from the store: a put or a removal, unless the index already holds a
    /// newer revision of the package.
    pub fn apply(&mut self, change: &SearchChange) {
        match change {
            SearchChange::Keep => {}
            SearchChange::Put(entry) => self.put(SearchEntry::clone(entry)),
            SearchChange::Remove { name, revision } => self.remove_at(name, *revision),
        }
    }

    /// Indexes `entry`, in place of the package's previous one (unless that one is newer).
    pub fn put(&mut self, entry: SearchEntry) {
        let key = entry.name.as_str().to_lowercase();
        if self.newer_than(&key, entry.revision) {
            return;
        }
        self.changed();
        self.removed.remove(&key);
        self.drop_entry(&key);
        let id = self.next_id;
        self.next_id += 1;
        for (word, mask) in words_of(&entry) {
            self.words
                .entry(word.into())
                .or_default()
                .push(posting(id, mask));
        }
        let unit = self.unit_of(&entry);
        if let Some(base) = scoped_base(&key) {
            self.bases.insert((base.into(), id));
        }
        // Its words are in the postings now; the rest is kept compact.
        self.ids.insert(key.into(), id);
        self.entries.insert(id, Arc::new(Indexed::of(&entry)), unit);
        if self.next_id >= MAX_ID / 2 {
            self.compact();
        }
        self.compact_if_due();
    }

    /// The access unit of `entry`'s package: a number per distinct repository and scope, the
    /// same for every package of them, made when the first is indexed.
    fn unit_of(&mut self, entry: &SearchEntry) -> u32 {
        let Some(repository) = access_repository(&entry.name, entry.repository.as_ref()) else {
            return NO_UNIT;
        };
        let key = format!(
            "{}\n{}",
            repository.to_string().to_ascii_lowercase(),
            entry.name.scope().unwrap_or_default().to_ascii_lowercase()
        );
        if let Some(unit) = self.unit_ids.get(key.as_str()) {
            return *unit;
        }
        let unit = u32::try_from(self.unit_ids.len()).unwrap_or(NO_UNIT);
        if unit != NO_UNIT {
            self.unit_ids.insert(key.into(), unit);
        }
        unit
    }

    /// Drops `name` from the index (unpublished or deleted), whatever its revision.
    pub fn remove(&mut self, name: &PackageName) {
        self.remove_at(name, 0);
    }

    /// Drops `name` as of package revision `revision`, unless the index holds a newer one.
    fn remove_at(&mut self, name: &PackageName, revision: u64) {
        let key = name.as_str().to_lowercase();
        if revision > 0 && self.newer_than(&key, revision) {
            return;
        }
        self.changed();
        self.drop_entry(&key);
        if revision > 0 {
            self.removed.insert(key, revision);
        }
        self.compact_if_due();
    }

    /// Moves the index to a new state: matches made before are stale.
    fn changed(&mut self) {
        self.generation = GENERATIONS.fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// Whether the index holds `key` (or its removal) at a revision after `revision`.
    fn newer_than(&self, key: &str, revision: u64) -> bool {
        let held = self
            .ids
            .get(key)
            .and_then(|id| self.entries.get(*id))
            .map(|e| e.revision)
            .or_else(|| self.removed.get(key).copied());
        held.is_some_and(|held| held > revision)
    }

    fn drop_entry(&mut self, key: &str) {
        if let Some(id) = self.ids.remove(key) {
            if let Some(base) = scoped_base(key) {
                self.bases.remove(&(base.into(), id));
            }
            self.entries.remove(id);
            self.dead += 1;
        }
    }

    fn compact_if_due(&mut self) {
        if self.dead >= COMPACT_AFTER && self.dead > self.entries.len() / 4 {
            self.compact();
        }
    }

    /// Takes the postings of replaced and removed packages out, and numbers the packages anew
    /// from 0 in their old order (so postings stay sorted and ids stay small).
    fn compact(&mut self) {
        self.changed();
        // Old id → new id, by slot: live slots numbered in order, dead ones none.
        let mut live = 0u32;
        let renumbered: Vec<Option<u32>> = self
            .entries
            .entries
            .iter()
            .map(|slot| {
                slot.as_ref().map(|_| {
                    live += 1;
                    live - 1
                })
            })
            .collect();
        let new_id = |old: u32| renumbered.get(old as usize).copied().flatten();
        self.words.retain(|_, postings| {
            postings.retain_mut(|p| {
                let (id, mask) = unpack(*p);
                match new_id(id) {
                    Some(new) => {
                        *p = posting(new, mask);
                        true
                    }
                    None => false,
                }
            });
            postings.shrink_to_fit();
            !postings.is_empty()
        });
        self.entries = self.entries.renumbered();
        for id in self.ids.values_mut() {
            // Every named package has a live entry.
            *id = new_id(*id).unwrap_or(u32::MAX);
        }
        self.bases = std::mem::take(&mut self.bases)
            .into_iter()
            .filter_map(|(base, id)| Some((base, new_id(id)?)))
            .collect();
        self.next_id = live;
        self.dead = 0;
    }

    /// Gives back what the postings lists hold beyond their length (after a bulk load, which
    /// grows them by doubling).
    pub fn shrink(&mut self) {
        for postings in self.words.values_mut() {
            postings.shrink_to_fit();
        }
        self.entries.shrink_to_fit();
        self.unit_ids.shrink_to_fit();
    }

    /// An estimate of the heap the index holds, in bytes: what its tables and entries allocate
    /// (allocator overhead aside), for the log and the benchmark.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        // A B-tree holds ~2/3-full nodes of 11 keys and values; count each slot half again.
        let words: usize = self
            .words
            .iter()
            .map(|(w, p)| {
                (size_of::<Box<str>>() + size_of::<Postings>()) * 3 / 2
                    + w.len()
                    + p.capacity() * size_of::<u32>()
            })
            .sum();
        let names: usize = self
            .ids
            .keys()
            .map(|k| (size_of::<(Box<str>, u32)>()) * 3 / 2 + k.len())
            .sum::<usize>()
            + self
                .bases
                .iter()
                .map(|(b, _)| size_of::<(Box<str>, u32)>() * 3 / 2 + b.len())
                .sum::<usize>();
        // Hash tables: a slot per entry at 7/8 load, plus a control byte.
        let units: usize = self
            .unit_ids
            .keys()
            .map(|k| (size_of::<(Box<str>, u32)>() + 1) * 8 / 7 + k.len())
            .sum::<usize>();
        let entries: usize = self.entries.entries.capacity() * size_of::<Option<Arc<Indexed>>>()
            + self.entries.meta.capacity() * size_of::<Meta>()
            + self
                .entries
                .iter()
                .map(|(_, e)| 16 + e.heap_bytes())
                .sum::<usize>();
        words + names + units + entries
    }

    /// Every package matching `query` (or, with `only`, that package if it matches), not yet
    /// in order and not yet cut to what the caller may read: light values, so that a broad
    /// word's tens of thousands of matches touch no entry (only queries with qualifiers read
    /// the entries, to filter).
    pub fn matches(&self, query: &SearchQuery, only: Option<&PackageName>) -> Matches {
        let only_id = only.map(|name| {
            self.ids
                .get(name.as_str().to_lowercase().as_str())
                .copied()
                // The token's package exactly (names compare exactly where tokens are checked).
                .filter(|id| self.entries.get(*id).is_some_and(|e| e.name == *name))
                .unwrap_or(u32::MAX)
        });
        let keyworded = self.with_keywords(query);
        // Whether the keyword postings decided the `keywords:` test exactly (whole keywords).
        let keywords_decided = keyworded.as_ref().is_some_and(|k| k.exact);
        let scored: Vec<(u32, u32)> = if query.has_terms() {
            let found = self.matching_words(&query.terms);
            // Free words with `keywords:` (or `scope:`): narrowed by those postings first, so
            // that only packages that may pass have their entries read to check exactly.
            let found = match keyworded {
                Some(candidates) if !found.is_empty() => {
                    intersect(&found, candidates.ids.into_iter().map(|(id, _)| (id, 0)))
                }
                _ => found,
            };
            match self.in_scope(query) {
                Some(scoped) if !found.is_empty() => {
                    intersect(&found, scoped.iter().map(|&p| (unpack(p).0, 0)))
                }
                _ => found,
            }
        } else if let Some(candidates) = keyworded {
            candidates.ids
        } else {
            self.entries.iter().map(|(id, _)| (id, 0)).collect()
        };
        let name_points = if query.text.is_empty() {
            Vec::new()
        } else {
            self.name_points(&query.text, query.boost_exact)
        };
        // Entries are read only for qualifiers the postings did not decide: `keywords:x` alone
        // over tens of thousands of packages with keyword `x` reads none.
        let filters = if keywords_decided {
            query.has_qualifiers_beyond_keywords() || query.keywords_all.len() > 1
        } else {
            query.has_qualifiers()
        };
        let mut bonus = name_points.iter().peekable();
        let mut list = Vec::with_capacity(scored.len());
        for (id, points) in scored {
            if only_id.is_some_and(|only| only != id) {
                continue;
            }
            let Some(meta) = self.entries.meta(id) else {
                continue;
            };
            if filters && !self.entries.get(id).is_some_and(|e| passes(e, query)) {
                continue;
            }
            while bonus.next_if(|(b, _)| *b < id).is_some() {}
            let extra = bonus.next_if(|(b, _)| *b == id).map_or(0, |(_, p)| *p);
            list.push(Match {
                id,
                points: points + extra,
                unit: meta.unit,
                deprecated: meta.deprecated,
                modified: meta.modified,
            });
        }
        Matches {
            generation: self.generation,
            list,
            only: only.cloned(),
        }
    }

    /// The page of `matches` the caller may read (as `access` decides), in `order`, and how
    /// many they are; or the units among them whose access is not yet decided. Matches made in
    /// another state of the index are made again first.
    pub fn page(
        &self,
        query: &SearchQuery,
        order: Order,
        matches: Matches,
        access: &Access,
    ) -> Result<Page, Box<Undecided>> {
        let matches = if matches.generation == self.generation {
            matches
        } else {
            self.matches(query, matches.only.as_ref())
        };
        // Each undecided unit once, with one of its packages standing in for it in the check.
        let mut undecided: HashMap<u32, AccessUnit> = HashMap::new();
        for m in &matches.list {
            if access.may_read(m.unit).is_none()
                && !undecided.contains_key(&m.unit)
                && let Some(entry) = self.entries.get(m.id)
                && let Some(repository) =
                    access_repository(&entry.name, entry.repository.as_deref())
            {
                let package = entry.name.clone();
                undecided.insert(
                    m.unit,
                    AccessUnit {
                        repository,
                        package,
                    },
                );
            }
        }
        if !undecided.is_empty() {
            let units = undecided.into_iter().collect();
            return Err(Box::new(Undecided { units, matches }));
        }
        let mut readable = matches.list;
        readable.retain(|m| access.may_read(m.unit) == Some(true));
        let total = readable.len();
        let best = readable.iter().map(|m| m.points).max().unwrap_or(0).max(1);
        let top = (query.from + query.size).min(total);
        self.rank(&mut readable, top, order);
        let hits = readable
            .get(query.from.min(top)..top)
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                Some(Hit {
                    entry: self.entries.get(m.id)?.clone(),
                    points: m.points,
                    score: f64::from(m.points) / f64::from(best),
                })
            })
            .collect();
        Ok(Page { hits, total })
    }

    /// The page of `query` when everything may be read (the tests' shortcut).
    #[cfg(test)]
    pub(crate) fn answer(&self, query: &SearchQuery) -> Page {
        let matches = self.matches(query, None);
        match self.page(query, Order::Relevance, matches, &Access::everything()) {
            Ok(page) => page,
            Err(_) => unreachable!("everything is decided"),
        }
    }

    /// Puts the best `top` of `matches` first, in `order` (the rest follow in no order).
    fn rank(&self, matches: &mut [Match], top: usize, order: Order) {
        let name = |m: &Match| self.entries.get(m.id).map_or("", |e| e.name.as_str());
        let date = |m: &Match| self.entries.get(m.id).map(|e| e.date);
        let compare = |a: &Match, b: &Match| match order {
            Order::Relevance => a
                .deprecated
                .cmp(&b.deprecated)
                .then(b.points.cmp(&a.points))
                .then(b.modified.cmp(&a.modified))
                .then_with(|| name(a).cmp(name(b))),
            Order::Newest => date(b).cmp(&date(a)).then_with(|| name(a).cmp(name(b))),
        };
        if top == 0 {
            return;
        }
        if top < matches.len() {
            matches.select_nth_unstable_by(top - 1, compare);
        }
        matches[..top].sort_unstable_by(compare);
    }

    /// The packages whose name (or name without its scope) `text` begins, ascending by id,
    /// with the points that earns: [`EXACT`] for the whole name (when `exact` counts),
    /// [`NAME_PREFIX`] otherwise. Ranges of the sorted names, not a test of every match.
    fn name_points(&self, text: &str, exact: bool) -> Vec<(u32, u32)> {
        let points = |name: &str| {
            if exact && name == text {
                EXACT
            } else {
                NAME_PREFIX
            }
        };
        let mut found: Vec<(u32, u32)> = self
            .ids
            .range::<str, _>((std::ops::Bound::Included(text), std::ops::Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(text))
            .map(|(name, id)| (*id, points(name)))
            .collect();
        let from: (Box<str>, u32) = (text.into(), 0);
        found.extend(
            self.bases
                .range(from..)
                .take_while(|(base, _)| base.starts_with(text))
                .map(|(base, id)| (*id, points(base))),
        );
        // A package found both ways keeps the better.
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        found.dedup_by_key(|(id, _)| *id);
        found
    }

    /// For a query with `scope:`, the postings of the scope's word (every package of the scope
    /// has it among its name words; others may too, and are checked exactly later); `None` when
    /// the query names no scope or its scope is not one word.
    fn in_scope(&self, query: &SearchQuery) -> Option<&[u32]> {
        let scope = query.scope.as_deref()?;
        let mut words = tokenize::words(scope);
        let word = words.next()?;
        if words.next().is_some() {
            return None;
        }
        Some(self.words.get(word.as_str()).map_or(&[][..], Vec::as_slice))
    }

    /// The packages with a word of the query's first required (or of each alternative)
    /// keyword in their keywords, from the postings instead of every package; `None` when the
    /// query names no keyword with an indexed word. When every keyword looked up is one word
    /// (`react`, not `react-dom` or `c++`), only packages with it as a whole keyword are
    /// taken, and they are exactly those that pass that test (`exact`).
    fn with_keywords(&self, query: &SearchQuery) -> Option<Keyworded> {
        let list = if query.keywords_all.is_empty() {
            &query.keywords_any
        } else {
            &query.keywords_all[..1]
        };
        if list.is_empty() {
            return None;
        }
        let mut looked_up = Vec::with_capacity(list.len());
        for keyword in list {
            let mut words = tokenize::words(keyword);
            // A keyword with no indexed word (punctuation alone) is checked against every package.
            let word = words.next()?;
            let whole = words.next().is_none() && word == *keyword;
            looked_up.push((word, whole));
        }
        let exact = looked_up.iter().all(|(_, whole)| *whole);
        let wanted = if exact {
            KEYWORD | WHOLE_KEYWORD
        } else {
            KEYWORD
        };
        let mut ids = Vec::new();
        for (word, _) in &looked_up {
            if let Some(postings) = self.words.get(word.as_str()) {
                ids.extend(postings.iter().filter_map(|&p| {
                    let (id, mask) = unpack(p);
                    (mask & wanted == wanted).then_some((id, 0))
                }));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Some(Keyworded { ids, exact })
    }
    /// Packages with every word of `terms` (the last also as a prefix), with their points.
    fn matching_words(&self, terms: &[String]) -> Vec<(u32, u32)> {
        let mut result: Option<Vec<(u32, u32)>> = None;
        for (i, term) in terms.iter().enumerate() {
            if i + 1 == terms.len()
                && let Some(so_far) = &result
            {
                result = Some(self.intersect_prefix(term, so_far));
                break;
            }
            // Borrowed, not copied: a common word's postings list most packages.
            let postings: std::borrow::Cow<'_, [u32]> = if i + 1 == terms.len() {
                self.with_prefix(term).into()
            } else {
                self.words
                    .get(term.as_str())
                    .map_or(&[][..], Vec::as_slice)
                    .into()
            };
            let scored = postings.iter().map(|&p| {
                let (id, mask) = unpack(p);
                (id, weight(mask))
            });
            result = Some(match result {
                None => scored.collect(),
                Some(so_far) => intersect(&so_far, scored),
            });
            if result.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
        }
        result.unwrap_or_default()
    }

    /// The words `term` begins (itself first if it is a word), at most `PREFIX_EXPANSIONS`,
    /// with their postings.
    fn expansions<'a>(&'a self, term: &'a str) -> impl Iterator<Item = (&'a str, &'a [u32])> {
        self.words
            .range::<str, _>((std::ops::Bound::Included(term), std::ops::Bound::Unbounded))
            .take_while(move |(w, _)| w.starts_with(term))
            .take(PREFIX_EXPANSIONS)
            .map(|(w, p)| (&**w, p.as_slice()))
    }

    /// `so_far` ∩ the packages of `term` and the words it begins, adding their points (as
    /// [`Self::with_prefix`] scores them). When the words before it left few candidates, each
    /// is looked up in each expansion's postings (a binary search) instead of merging and
    /// sorting every expansion's postings: a short last word (`@acme/wid`, `ka`) expands to
    /// words that together list much of the index.
    fn intersect_prefix(&self, term: &str, so_far: &[(u32, u32)]) -> Vec<(u32, u32)> {
        let expansions: Vec<(&str, &[u32])> = self.expansions(term).collect();
        let listed: usize = expansions.iter().map(|(_, p)| p.len()).sum();
        let per_lookup = (usize::BITS - listed.max(1).leading_zeros()) as usize;
        if so_far.len() * expansions.len() * per_lookup >= listed {
            let scored = self.with_prefix(term).into_iter().map(|p| {
                let (id, mask) = unpack(p);
                (id, weight(mask))
            });
            return intersect(so_far, scored);
        }
        probe_prefix(term, so_far, &expansions)
    }

    /// The postings of `term` and of up to `PREFIX_EXPANSIONS` words it begins, merged (a
    /// word's own mask wins over its longer words': `pad` matched whole is a name match even if
    /// `padding` is only in the README).
    fn with_prefix(&self, term: &str) -> Postings {
        let mut merged: Postings = Vec::new();
        for (word, postings) in self.expansions(term) {
            let whole = word == term;
            merged.extend(postings.iter().map(|&p| {
                let (id, mask) = unpack(p);
                // A prefix match counts a field tier lower than the whole word (README's tier,
                // shifted out of the mask, scores nothing but still matches).
                posting(id, if whole { mask } else { (mask << 1) & 0xf })
            }));
        }
        // Plain integers sort fastest; a package found by several words keeps every field any of
        // them was found in (its best field decides its points).
        merged.sort_unstable();
        merged.dedup_by(|next, kept| {
            let same = unpack(*next).0 == unpack(*kept).0;
            if same {
                *kept |= *next & ((1 << MASK_BITS) - 1);
            }
            same
        });
        merged
    }
}

/// `so_far` ∩ the packages of `expansions` (the words `term` begins, with their postings),
/// each candidate looked up by binary search, adding the points of its best field.
fn probe_prefix(
    term: &str,
    so_far: &[(u32, u32)],
    expansions: &[(&str, &[u32])],
) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(id, points) in so_far {
        let mut found = None;
        for (word, postings) in expansions {
            let at = postings.partition_point(|p| unpack(*p).0 < id);
            if let Some(&p) = postings.get(at)
                && unpack(p).0 == id
            {
                let mask = unpack(p).1;
                let mask = if *word == term {
                    mask
                } else {
                    (mask << 1) & 0xf
                };
                found = Some(found.unwrap_or(0) | mask);
            }
        }
        if let Some(mask) = found {
            out.push((id, points + weight(mask)));
        }
    }
    out
}

/// `so_far` ∩ `next` by id (both ascending), adding the points.
fn intersect(so_far: &[(u32, u32)], next: impl Iterator<Item = (u32, u32)>) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut left = so_far.iter().peekable();
    for (id, points) in next {
        while left.next_if(|(l, _)| *l < id).is_some() {}
        if let Some((_, before)) = left.next_if(|(l, _)| *l == id) {
            out.push((id, before + points));
        }
    }
    out
}

/// The packages a `keywords:` qualifier narrows a query to ([`SearchIndex::with_keywords`]).
struct Keyworded {
    /// Their ids, ascending, with no points.
    ids: Vec<(u32, u32)>,
    /// Whether they are exactly the packages that pass the keyword test looked up.
    exact: bool,
}

/// Whether `entry` passes the query's qualifiers (all lowercase, as the entry's lists are).
fn passes(entry: &Indexed, query: &SearchQuery) -> bool {
    let has = |k: &String| entry.has_keyword(k);
    (query.keywords_any.is_empty() || query.keywords_any.iter().any(has))
        && query.keywords_all.iter().all(has)
        && !query.keywords_none.iter().any(has)
        && query.author.as_deref().is_none_or(|a| entry.authored_by(a))
        && query
            .maintainer
            .as_deref()
            .is_none_or(|m| entry.maintained_by(m))
        && query.scope.as_deref().is_none_or(|s| {
            entry
                .name
                .scope()
                .is_some_and(|own| own.eq_ignore_ascii_case(s))
        })
        && query.deprecated.is_none_or(|d| entry.deprecated == d)
        && query.unstable.is_none_or(|u| entry.unstable == u)
}

/// Each distinct word of `entry` with the fields it is in.
fn words_of(entry: &SearchEntry) -> BTreeMap<String, u8> {
    let mut words: BTreeMap<String, u8> = BTreeMap::new();
    let mut add = |word: String, field: u8| *words.entry(word).or_default() |= field;
    for w in tokenize::name_words(entry.name.as_str()) {
        add(w, NAME);
    }
    for k in &entry.keywords {
        let words: Vec<String> = tokenize::words(k).collect();
        // The entry's keyword lists compare lowercase keywords whole (`Indexed::has_keyword`).
        let whole = words.len() == 1 && words[0] == k.to_lowercase();
        for w in words {
            add(
                w,
                if whole {
                    KEYWORD | WHOLE_KEYWORD
                } else {
                    KEYWORD
                },
            );
        }
    }
    for w in tokenize::words(&entry.description) {
        add(w, DESCRIPTION);
    }
    for w in &entry.readme_terms {
        add(w.clone(), README);
    }
    words
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::search::entry::test_entry;

    fn index(entries: Vec<SearchEntry>) -> SearchIndex {
        let mut index = SearchIndex::new();
        for e in entries {
            index.put(e);
        }
        index
    }

    fn names(index: &SearchIndex, text: &str) -> Vec<String> {
        let query = SearchQuery::parse(text, Some("250"), None).unwrap();
        index
            .answer(&query)
            .hits
            .into_iter()
            .map(|h| h.entry.name.to_string())
            .collect()
    }

    #[test]
    fn exact_name_then_prefix_then_name_words_then_keywords_description_readme() {
        let index = index(vec![
            test_entry(
                "@a/in-readme",
                "1.0.0",
                json!({}),
                Some("all about widget things"),
            ),
            test_entry(
                "@a/in-description",
                "1.0.0",
                json!({"description": "a widget maker"}),
                None,
            ),
            test_entry(
                "@a/in-keywords",
                "1.0.0",
                json!({"keywords": ["widget"]}),
                None,
            ),
            test_entry("@a/big-widget", "1.0.0", json!({}), None),
            test_entry("@a/widgetry", "1.0.0", json!({}), None),
            test_entry("@a/widget", "1.0.0", json!({}), None),
            test_entry("@a/unrelated", "1.0.0", json!({}), None),
        ]);
        assert_eq!(
            names(&index, "widget"),
            [
                "@a/widget",
                "@a/widgetry",
                "@a/big-widget",
                "@a/in-keywords",
                "@a/in-description",
                "@a/in-readme"
            ]
        );
        assert_eq!(names(&index, "@a/widget")[0], "@a/widget");
        assert_eq!(names(&index, "nothing-like-it"), Vec::<String>::new());
    }

    #[test]
    fn every_word_must_match_and_the_last_may_be_begun() {
        let index = index(vec![
            test_entry(
                "@a/left-pad",
                "1.0.0",
                json!({"description": "pads strings"}),
                None,
            ),
            test_entry("@a/right-pad", "1.0.0", json!({}), None),
        ]);
        assert_eq!(names(&index, "left pad"), ["@a/left-pad"]);
        assert_eq!(names(&index, "pad lef"), ["@a/left-pad"]);
        let mut both = names(&index, "pad");
        both.sort();
        assert_eq!(both, ["@a/left-pad", "@a/right-pad"]);
    }

    /// `keywords:x` of one word is answered from the postings' whole-keyword bit, without
    /// reading entries: it must find exactly what the entries' keyword lists say (a keyword
    /// whole, any case; not a word inside another keyword), alone and with other qualifiers.
    #[test]
    fn whole_keywords_decide_keyword_qualifiers() {
        let index = index(vec![
            test_entry("@a/upper", "1.0.0", json!({"keywords": ["React"]}), None),
            test_entry("@a/dom", "1.0.0", json!({"keywords": ["react-dom"]}), None),
            test_entry("@a/ui", "1.0.0", json!({"keywords": ["react", "ui"]}), None),
            test_entry("@b/cpp", "1.0.0", json!({"keywords": ["c++", "c"]}), None),
            test_entry("@b/said", "1.0.0", json!({"description": "react"}), None),
        ]);
        let sorted = |text: &str| {
            let mut found = names(&index, text);
            found.sort();
            found
        };
        assert_eq!(sorted("keywords:react"), ["@a/ui", "@a/upper"]);
        assert_eq!(sorted("keywords:REACT"), ["@a/ui", "@a/upper"]);
        assert_eq!(sorted("keywords:react-dom"), ["@a/dom"]);
        assert_eq!(
            sorted("keywords:react,react-dom"),
            ["@a/dom", "@a/ui", "@a/upper"]
        );
        assert_eq!(sorted("keywords:react,ui"), ["@a/ui", "@a/upper"]);
        assert_eq!(sorted("keywords:react+ui"), ["@a/ui"]);
        assert_eq!(sorted("keywords:ui+react"), ["@a/ui"]);
        assert_eq!(sorted("keywords:react,-ui"), ["@a/upper"]);
        assert_eq!(sorted("keywords:c++"), ["@b/cpp"]);
        assert_eq!(sorted("keywords:c"), ["@b/cpp"]);
        assert_eq!(sorted("keywords:react scope:b"), Vec::<String>::new());
        assert_eq!(sorted("upper keywords:react"), ["@a/upper"]);
        assert_eq!(sorted("a keywords:react"), ["@a/ui", "@a/upper"]);
        assert_eq!(sorted("keywords:dom"), Vec::<String>::new());
    }

    #[test]
    fn deprecated_packages_come_last_and_qualifiers_filter() {
        let index = index(vec![
            test_entry(
                "@a/tool",
                "1.0.0",
                json!({"deprecated": "use @a/tool2"}),
                None,
            ),
            test_entry(
                "@a/tool2",
                "0.1.0",
                json!({"keywords": ["cli"], "author": "Ann"}),
                None,
            ),
            test_entry(
                "@b/tool3",
                "2.0.0",
                json!({"keywords": ["cli", "old"]}),
                None,
            ),
        ]);
        // The exact name, deprecated, comes after the others (which tie: the newer first).
        assert_eq!(names(&index, "tool"), ["@b/tool3", "@a/tool2", "@a/tool"]);
        assert_eq!(names(&index, "tool not:deprecated").len(), 2);
        assert_eq!(names(&index, "is:deprecated"), ["@a/tool"]);
        assert_eq!(names(&index, "keywords:cli,-old"), ["@a/tool2"]);
        assert_eq!(names(&index, "keywords:cli+old"), ["@b/tool3"]);
        assert_eq!(names(&index, "author:ann"), ["@a/tool2"]);
        assert_eq!(names(&index, "scope:b"), ["@b/tool3"]);
        assert_eq!(names(&index, "is:unstable"), ["@a/tool2"]);
        // Free words with qualifiers: narrowed by the qualifiers' postings, then checked.
        assert_eq!(names(&index, "tool keywords:cli,-old"), ["@a/tool2"]);
        assert_eq!(names(&index, "tool keywords:old"), ["@b/tool3"]);
        assert_eq!(names(&index, "tool scope:b"), ["@b/tool3"]);
        assert_eq!(names(&index, "tool scope:@a keywords:cli"), ["@a/tool2"]);
        assert!(names(&index, "tool scope:c").is_empty());
    }

    #[test]
    fn a_new_entry_replaces_the_old_and_removal_forgets_every_word() {
        let mut index = index(vec![test_entry(
            "@a/x",
            "1.0.0",
            json!({"description": "alpha"}),
            None,
        )]);
        index.put(test_entry(
            "@a/x",
            "1.1.0",
            json!({"description": "beta"}),
            None,
        ));
        assert_eq!(index.len(), 1);
        assert!(names(&index, "alpha").is_empty());
        assert_eq!(names(&index, "beta"), ["@a/x"]);
        index.remove(&PackageName::parse("@a/x").unwrap());
        assert!(index.is_empty());
        assert!(names(&index, "beta").is_empty());
        index.compact();
        assert!(
            index.words.is_empty(),
            "{:?}",
            index.words.keys().collect::<Vec<_>>()
        );
    }

    fn at(revision: u64, description: &str) -> SearchEntry {
        let mut e = test_entry("@a/x", "1.0.0", json!({ "description": description }), None);
        e.revision = revision;
        e
    }

    #[test]
    fn an_older_revision_arriving_late_never_replaces_a_newer_one() {
        let name = PackageName::parse("@a/x").unwrap();
        let mut index = index(vec![at(3, "three")]);
        index.apply(&SearchChange::Put(Box::new(at(2, "two"))));
        assert_eq!(names(&index, "three"), ["@a/x"]);
        index.apply(&SearchChange::Remove {
            name: name.clone(),
            revision: 4,
        });
        index.apply(&SearchChange::Put(Box::new(at(3, "three"))));
        assert!(index.is_empty(), "a removal at 4 outlives the entry of 3");
        index.apply(&SearchChange::Put(Box::new(at(5, "five"))));
        assert_eq!(names(&index, "five"), ["@a/x"]);
    }

    #[test]
    fn replaced_entries_are_compacted_away_and_keep_no_readme_words() {
        let mut index = SearchIndex::new();
        for revision in 1..=3_000u64 {
            let mut e = test_entry(
                &format!("@a/p{}", revision % 100),
                "1.0.0",
                json!({ "description": format!("word{revision}") }),
                Some("a readme about gadgets"),
            );
            e.revision = revision;
            index.put(e);
        }
        assert_eq!(index.len(), 100);
        assert!(index.dead <= 1024, "{} dead", index.dead);
        let postings: usize = index.words.values().map(Vec::len).sum();
        // A few words each (name, description, README): live entries and at most 1,024 dead.
        assert!(postings <= 8 * (100 + 1024), "{postings} postings");
        assert_eq!(names(&index, "gadgets").len(), 100);
        assert!(index.heap_bytes() > 0);
    }

    fn bound(name: &str, repository: &str) -> SearchEntry {
        let mut e = test_entry(name, "1.0.0", json!({"description": "a gadget"}), None);
        let (owner, repo) = repository.split_once('/').unwrap();
        e.repository = RepoRef::new(owner, repo);
        e
    }

    #[test]
    fn access_is_asked_once_per_unit_and_pages_only_what_may_be_read() {
        let mut index = index(vec![
            bound("@a/one", "a/tools"),
            bound("@a/two", "a/tools"),
            bound("@a/secret", "a/private"),
            bound("@b/other", "a/tools"),
        ]);
        let query = SearchQuery::parse("gadget", None, None).unwrap();
        let mut access = Access::per_unit();
        let matches = index.matches(&query, None);
        let Err(undecided) = index.page(&query, Order::Relevance, matches, &access) else {
            panic!("nothing is decided yet");
        };
        // Repository and scope: @a and @b of a/tools are two units; a/private a third.
        let mut units: Vec<String> = undecided
            .units
            .iter()
            .map(|(_, u)| format!("{} {}", u.repository, u.package.scope().unwrap_or("")))
            .collect();
        units.sort();
        assert_eq!(units, ["a/private a", "a/tools a", "a/tools b"]);
        for (unit, u) in &undecided.units {
            access.decide(*unit, u.repository.to_string() == "a/tools");
        }
        let page = index
            .page(&query, Order::Relevance, undecided.matches, &access)
            .unwrap();
        let mut shown: Vec<String> = page.hits.iter().map(|h| h.entry.name.to_string()).collect();
        shown.sort();
        assert_eq!(shown, ["@a/one", "@a/two", "@b/other"]);
        assert_eq!(page.total, 3);

        // The index changes between the steps: the matches are made again, and a unit that
        // came with the change is asked about rather than shown.
        let stale = index.matches(&query, None);
        index.put(bound("@c/new", "c/new"));
        let Err(undecided) = index.page(&query, Order::Relevance, stale, &access) else {
            panic!("@c/new's unit is not decided");
        };
        assert_eq!(undecided.units.len(), 1);
        access.hide_undecided();
        let page = index
            .page(&query, Order::Relevance, undecided.matches, &access)
            .unwrap();
        assert_eq!(page.total, 3, "undecided units are hidden at the end");
    }

    #[test]
    fn a_token_limited_to_one_package_matches_nothing_else() {
        let index = index(vec![bound("@a/one", "a/tools"), bound("@a/two", "a/tools")]);
        let query = SearchQuery::parse("gadget", None, None).unwrap();
        let only = PackageName::parse("@a/two").unwrap();
        let matches = index.matches(&query, Some(&only));
        let page = index
            .page(&query, Order::Relevance, matches, &Access::everything())
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.hits[0].entry.name, only);
        let missing = PackageName::parse("@a/three").unwrap();
        assert_eq!(index.matches(&query, Some(&missing)).list.len(), 0);
    }

    #[test]
    fn names_begun_by_the_text_rank_first_found_by_range() {
        let index = index(vec![
            test_entry("@a/widget", "1.0.0", json!({"description": "x"}), None),
            test_entry("widgetry", "1.0.0", json!({"description": "x"}), None),
            test_entry(
                "@a/gadget",
                "1.0.0",
                json!({"description": "widget x"}),
                None,
            ),
        ]);
        assert_eq!(
            names(&index, "widget"),
            ["@a/widget", "widgetry", "@a/gadget"]
        );
        // Without the exact boost, both names begun by the text score the prefix's points.
        let page =
            index.answer(&SearchQuery::parse("widget boost-exact:false", None, None).unwrap());
        assert!(page.hits[..2].iter().all(|h| h.points > NAME_PREFIX));
        assert!(page.hits[..2].iter().all(|h| h.points < EXACT));
        assert!(page.hits[2].points < NAME_PREFIX);
    }

    #[test]
    fn the_newest_order_lists_every_package_by_publish_date() {
        let mut old = test_entry("@a/old", "1.0.0", json!({}), None);
        old.date = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .unwrap()
            .into();
        let mut new = test_entry("@a/new", "1.0.0", json!({}), None);
        new.date = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .into();
        let index = index(vec![old, new]);
        let query = SearchQuery::parse("", Some("1"), Some("1")).unwrap();
        let matches = index.matches(&query, None);
        let page = index
            .page(&query, Order::Newest, matches, &Access::everything())
            .unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.hits.len(), 1);
        assert_eq!(page.hits[0].entry.name.as_str(), "@a/old");
    }

    #[test]
    fn a_prefix_probed_scores_as_a_prefix_merged() {
        let mut index = SearchIndex::new();
        for i in 0..3_000u32 {
            index.put(test_entry(
                &format!("@s{}/pkg-{i}", i % 7),
                "1.0.0",
                json!({
                    "description": format!("word{} pad{} padding", i % 13, i % 5),
                    "keywords": [format!("pa{}", i % 3)],
                }),
                Some(&format!("readme pad{} text", i % 11)),
            ));
        }
        for (first, last) in [
            ("s3", "pa"),
            ("word4", "pad"),
            ("padding", "pad1"),
            ("s1", "p"),
        ] {
            let Some(postings) = index.words.get(first) else {
                panic!("{first} is a word");
            };
            let so_far: Vec<(u32, u32)> = postings
                .iter()
                .map(|&p| (unpack(p).0, weight(unpack(p).1)))
                .collect();
            let merged = intersect(
                &so_far,
                index.with_prefix(last).into_iter().map(|p| {
                    let (id, mask) = unpack(p);
                    (id, weight(mask))
                }),
            );
            let expansions: Vec<(&str, &[u32])> = index.expansions(last).collect();
            assert_eq!(
                probe_prefix(last, &so_far, &expansions),
                merged,
                "{first} {last}"
            );
            assert_eq!(index.intersect_prefix(last, &so_far), merged);
            assert!(!merged.is_empty());
        }
    }

    #[test]
    fn scores_are_shares_of_the_best() {
        let index = index(vec![
            test_entry("@a/widget", "1.0.0", json!({}), None),
            test_entry("@a/other", "1.0.0", json!({"description": "widget"}), None),
        ]);
        let hits = index
            .answer(&SearchQuery::parse("widget", None, None).unwrap())
            .hits;
        assert!((hits[0].score - 1.0).abs() < f64::EPSILON);
        assert!(hits[1].score > 0.0 && hits[1].score < 1.0);
        assert!(hits[0].points > hits[1].points);
    }
}

#[cfg(test)]
mod scale {
    use super::*;
    use crate::search::entry::test_entry;

    /// 50,000 packages with the README words the entry keeps at most (64), drawn from a large
    /// vocabulary: the index's own accounting stays within the 64 MB.
    #[test]
    fn fifty_thousand_packages_fit_in_sixty_four_megabytes() {
        let mut index = SearchIndex::new();
        for i in 0..50_000u32 {
            let mut e = test_entry(
                &format!("@scope{}/package-name-{i}", i % 20),
                "1.2.3",
                serde_json::json!({
                    "description": format!("A library for parsing and formatting things number {i}"),
                    "keywords": ["parse", "format", format!("k{}", i % 500)],
                    "author": "Some Author <author@example.com>",
                    "maintainers": [{"name": "maintainer", "email": "m@example.com"}],
                    "homepage": format!("https://github.com/scope/package-name-{i}#readme"),
                    "repository": format!("git+https://github.com/scope/package-name-{i}.git"),
                    "license": "MIT",
                }),
                None,
            );
            e.readme_terms = (0..64)
                .map(|t| format!("w{}", (i * 7 + t * 131) % 200_000))
                .collect();
            e.revision = 1;
            index.put(e);
        }
        index.shrink();
        let heap = index.heap_bytes();
        eprintln!(
            "50,000 packages: {} MiB by the index's accounting",
            heap >> 20
        );
        assert!(heap < 64 << 20, "{heap} bytes");
    }
}
