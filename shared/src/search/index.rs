//! The in-memory search index: an inverted index from words to packages, with the field each
//! word was found in, and the ranking npm users expect (exact name first, then name prefix and
//! name words, then keywords, description and README; deprecated packages last).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::indexed::Indexed;
use super::query::SearchQuery;
use super::{SearchEntry, tokenize};
use crate::domain::PackageName;
use crate::storage::SearchChange;

/// Where a word was found, as bits of a posting's mask.
const NAME: u8 = 1;
const KEYWORD: u8 = 2;
const DESCRIPTION: u8 = 4;
const README: u8 = 8;

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

/// A package found by a query, in rank order.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The package.
    pub entry: Arc<Indexed>,
    /// Its points (`searchScore`).
    pub points: u32,
    /// Its points as a share of the best hit's, 0 to 1 (`score.final`).
    pub score: f64,
    /// The entry's deprecation and last change, copied beside the points: ranking compares
    /// these for every hit, and reading them through the entry would miss the cache each time.
    deprecated: bool,
    modified: i64,
}

/// One word's packages, ascending by id: each a [`posting`] (package id and fields mask in one
/// `u32`, half the memory of a pair: most of the index is these).
type Postings = Vec<u32>;

/// Bits of a posting that hold the fields mask.
const MASK_BITS: u32 = 4;
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

/// Every indexed package, findable by its words.
#[derive(Default)]
pub struct SearchIndex {
    /// Package id → what is kept of it. Ids only grow (until compaction renumbers them in
    /// order), so postings appended in id order stay sorted, and the slots stay dense.
    entries: Slots,
    /// Lowercase name → package id.
    ids: HashMap<String, u32>,
    /// Word → packages; sorted, so a prefix is a range. Postings of replaced or removed
    /// packages stay until the next compaction (queries skip ids without an entry), so an
    /// entry need not keep its README words to be taken out.
    words: BTreeMap<Box<str>, Postings>,
    /// Packages replaced or removed since the last compaction.
    dead: usize,
    /// Lowercase name → the revision that removed the package: an older change of it arriving
    /// later (another process's log, read again) must not bring it back.
    removed: HashMap<String, u64>,
    next_id: u32,
}

/// The entries by id: a slot per id given out since the last compaction, empty once its package
/// was replaced or removed. A lookup is an index, not a hash (a broad word looks up tens of
/// thousands).
#[derive(Default)]
struct Slots {
    slots: Vec<Option<Arc<Indexed>>>,
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
        self.slots.get(id as usize)?.as_ref()
    }

    fn insert(&mut self, id: u32, entry: Arc<Indexed>) {
        let at = id as usize;
        if self.slots.len() <= at {
            self.slots.resize(at + 1, None);
        }
        if self.slots[at].replace(entry).is_none() {
            self.live += 1;
        }
    }

    fn remove(&mut self, id: u32) {
        if let Some(slot) = self.slots.get_mut(id as usize)
            && slot.take().is_some()
        {
            self.live -= 1;
        }
    }

    /// The live entries with their ids, ascending.
    fn iter(&self) -> impl Iterator<Item = (u32, &Arc<Indexed>)> {
        (0u32..)
            .zip(&self.slots)
            .filter_map(|(id, slot)| Some((id, slot.as_ref()?)))
    }

    /// The live entries numbered anew from 0 in their order (what compaction does to ids).
    fn renumbered(&mut self) -> Slots {
        let slots: Vec<Option<Arc<Indexed>>> = std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .map(Some)
            .collect();
        Slots {
            live: slots.len(),
            slots,
        }
    }

    fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
    }
}

/// Compaction runs once this many dead packages are in the postings, and more than a quarter of
/// the live ones: a publish costs O(its words), and the index stays within ~1.25× its size.
const COMPACT_AFTER: usize = 1024;

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

    /// Every indexed entry, the most recently changed first (the web page's package list).
    pub fn newest_first(&self) -> Vec<Arc<Indexed>> {
        let mut all: Vec<Arc<Indexed>> = self.entries.iter().map(|(_, e)| e.clone()).collect();
        all.sort_by(|a, b| {
            b.date
                .cmp(&a.date)
                .then_with(|| a.name.as_str().cmp(b.name.as_str()))
        });
        all
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
        // Its words are in the postings now; the rest is kept compact.
        self.ids.insert(key, id);
        self.entries.insert(id, Arc::new(Indexed::of(&entry)));
        if self.next_id >= MAX_ID / 2 {
            self.compact();
        }
        self.compact_if_due();
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
        self.drop_entry(&key);
        if revision > 0 {
            self.removed.insert(key, revision);
        }
        self.compact_if_due();
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
        // Old id → new id, by slot: live slots numbered in order, dead ones none.
        let mut live = 0u32;
        let renumbered: Vec<Option<u32>> = self
            .entries
            .slots
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
        self.ids.shrink_to_fit();
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
        // Hash tables: a slot per entry at 7/8 load, plus a control byte.
        let ids: usize = self
            .ids
            .keys()
            .map(|k| (size_of::<(String, u32)>() + 1) * 8 / 7 + k.capacity())
            .sum();
        let entries: usize = self.entries.slots.capacity() * size_of::<Option<Arc<Indexed>>>()
            + self
                .entries
                .iter()
                .map(|(_, e)| 16 + e.heap_bytes())
                .sum::<usize>();
        words + ids + entries
    }

    /// Every package matching `query`, not yet in order: the caller keeps those the caller may
    /// read, then [`rank`]s only as many as the page needs (a broad word matches tens of
    /// thousands, and sorting them all would cost more than finding them).
    pub fn query(&self, query: &SearchQuery) -> Vec<Hit> {
        let scored: Vec<(u32, u32)> = if query.has_terms() {
            self.matching_words(&query.terms)
        } else if let Some(candidates) = self.with_keywords(query) {
            candidates
        } else {
            self.entries.iter().map(|(id, _)| (id, 0)).collect()
        };
        let mut hits = Vec::with_capacity(scored.len());
        for (id, points) in scored {
            let Some(entry) = self.entries.get(id) else {
                continue;
            };
            if !passes(entry, query) {
                continue;
            }
            hits.push(Hit {
                points: points + name_points(entry, query),
                deprecated: entry.deprecated,
                modified: entry.modified.timestamp_micros(),
                entry: entry.clone(),
                score: 0.0,
            });
        }
        hits
    }

    /// For a query of qualifiers alone, the packages with a word of its required (or one of
    /// its alternative) keywords in their keywords, from the postings instead of every package;
    /// `None` when the query names no keyword with an indexed word.
    fn with_keywords(&self, query: &SearchQuery) -> Option<Vec<(u32, u32)>> {
        let list = if query.keywords_all.is_empty() {
            &query.keywords_any
        } else {
            &query.keywords_all[..1]
        };
        let mut ids = Vec::new();
        for keyword in list {
            // A keyword with no indexed word (punctuation alone) is checked against every package.
            let word = tokenize::words(keyword).next()?;
            if let Some(postings) = self.words.get(word.as_str()) {
                ids.extend(postings.iter().filter_map(|&p| {
                    let (id, mask) = unpack(p);
                    (mask & KEYWORD != 0).then_some((id, 0))
                }));
            }
        }
        if list.is_empty() {
            return None;
        }
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }

    /// Packages with every word of `terms` (the last also as a prefix), with their points.
    fn matching_words(&self, terms: &[String]) -> Vec<(u32, u32)> {
        let mut result: Option<Vec<(u32, u32)>> = None;
        for (i, term) in terms.iter().enumerate() {
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

    /// The postings of `term` and of up to `PREFIX_EXPANSIONS` words it begins, merged (a
    /// word's own mask wins over its longer words': `pad` matched whole is a name match even if
    /// `padding` is only in the README).
    fn with_prefix(&self, term: &str) -> Postings {
        let mut merged: Postings = Vec::new();
        for (word, postings) in self
            .words
            .range::<str, _>((std::ops::Bound::Included(term), std::ops::Bound::Unbounded))
            .take_while(|(w, _)| w.starts_with(term))
            .take(PREFIX_EXPANSIONS)
        {
            let whole = &**word == term;
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

/// Puts the best `top` of `hits` first, in rank order: deprecated packages after all others,
/// then by points, then the latest change first (the rest follow in no order). Scores every
/// hit as a share of the best one's points.
pub fn rank(hits: &mut [Hit], top: usize) {
    let best = hits.iter().map(|h| h.points).max().unwrap_or(0).max(1);
    for hit in hits.iter_mut() {
        hit.score = f64::from(hit.points) / f64::from(best);
    }
    let order = |a: &Hit, b: &Hit| {
        a.deprecated
            .cmp(&b.deprecated)
            .then(b.points.cmp(&a.points))
            .then(b.modified.cmp(&a.modified))
            .then_with(|| a.entry.name.as_str().cmp(b.entry.name.as_str()))
    };
    let top = top.min(hits.len());
    if top == 0 {
        return;
    }
    if top < hits.len() {
        hits.select_nth_unstable_by(top - 1, order);
    }
    hits[..top].sort_unstable_by(order);
}

/// Whether `text` (lowercase) begins `name`, ignoring ASCII case (names are ASCII), without
/// lowercasing the name into a new string for every candidate.
fn begins(name: &str, text: &str) -> bool {
    name.len() >= text.len() && name.as_bytes()[..text.len()].eq_ignore_ascii_case(text.as_bytes())
}

/// Points for the free text naming the package, or beginning its name.
fn name_points(entry: &Indexed, query: &SearchQuery) -> u32 {
    if query.text.is_empty() {
        return 0;
    }
    let name = entry.name.as_str();
    let base = entry.name.base_name();
    let text = query.text.as_str();
    if query.boost_exact && (name.eq_ignore_ascii_case(text) || base.eq_ignore_ascii_case(text)) {
        EXACT
    } else if begins(name, text) || begins(base, text) {
        NAME_PREFIX
    } else {
        0
    }
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
        for w in tokenize::words(k) {
            add(w, KEYWORD);
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
        let query = SearchQuery::parse(text, None, None).unwrap();
        let mut hits = index.query(&query);
        rank(&mut hits, usize::MAX);
        hits.into_iter().map(|h| h.entry.name.to_string()).collect()
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

    #[test]
    fn scores_are_shares_of_the_best() {
        let index = index(vec![
            test_entry("@a/widget", "1.0.0", json!({}), None),
            test_entry("@a/other", "1.0.0", json!({"description": "widget"}), None),
        ]);
        let mut hits = index.query(&SearchQuery::parse("widget", None, None).unwrap());
        rank(&mut hits, usize::MAX);
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
