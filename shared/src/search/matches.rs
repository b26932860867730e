//! A query's answer in two steps, so that what the caller may read is decided between them
//! without holding the index: [`Matches`] (every package the query finds, light: what ranking
//! compares and the package's access unit, no entry touched) and, once the caller's [`Access`]
//! to each unit among them is known, a [`Page`] of the readable ones in rank order.

use std::collections::HashMap;
use std::sync::Arc;

use super::indexed::Indexed;
use crate::domain::{PackageName, RepoRef};

/// A package found by a query, before the caller's access to it is known: what ranking compares,
/// copied beside its id so that a broad word's tens of thousands of matches are compared without
/// touching (or counting references to) their entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Match {
    /// The package's id in the index state the matches were made in.
    pub(crate) id: u32,
    /// Its points (`searchScore`).
    pub(crate) points: u32,
    /// Its access unit ([`NO_UNIT`] if it has none: nobody but an open registry's caller reads it).
    pub(crate) unit: u32,
    /// Whether the shown version is deprecated (ranked last).
    pub(crate) deprecated: bool,
    /// When the package last changed, in microseconds (ties rank the newest first).
    pub(crate) modified: i64,
}

/// The unit id of a package without a repository that access could be decided by.
pub(crate) const NO_UNIT: u32 = u32::MAX;

/// What a query found in one state of the index (its `generation`): valid in that state only,
/// since ids change when the index compacts.
#[derive(Debug)]
pub struct Matches {
    pub(crate) generation: u64,
    pub(crate) list: Vec<Match>,
    /// The one package a caller's token is limited to, if it is (a trusted-publishing token
    /// reads only its own package): matches of other packages are never made.
    pub(crate) only: Option<PackageName>,
}

/// What decides whether a caller may read a package: its repository (the GitHub permission
/// asked about) and its scope (the registry's scope policy), with one of its packages standing
/// in for the unit in the check. Every package of a unit is readable by the same callers.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    /// The repository asked about (bound, or the name's own for an unbound package).
    pub repository: RepoRef,
    /// A package of the unit, named in the check.
    pub package: PackageName,
}

/// The caller's access, as decided so far: every unit (an open registry), or per unit.
#[derive(Debug, Default)]
pub struct Access {
    everything: bool,
    units: HashMap<u32, bool>,
    /// Whether units not decided are hidden instead of asked about (the last round: the index
    /// changed under every earlier one).
    undecided_hidden: bool,
}

impl Access {
    /// Access to every package (an open registry).
    pub fn everything() -> Self {
        Access {
            everything: true,
            ..Access::default()
        }
    }

    /// Nothing decided yet.
    pub fn per_unit() -> Self {
        Access::default()
    }

    /// Records the decision for `unit`.
    pub fn decide(&mut self, unit: u32, readable: bool) {
        self.units.insert(unit, readable);
    }

    /// From now on, hide what is not decided rather than ask.
    pub fn hide_undecided(&mut self) {
        self.undecided_hidden = true;
    }

    /// Whether `unit` is readable; `None` while it is not decided.
    pub(crate) fn may_read(&self, unit: u32) -> Option<bool> {
        if self.everything {
            return Some(true);
        }
        if unit == NO_UNIT {
            return Some(false);
        }
        match self.units.get(&unit) {
            Some(readable) => Some(*readable),
            None if self.undecided_hidden => Some(false),
            None => None,
        }
    }
}

/// The order of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Deprecated packages after all others, then by points, then the latest change first.
    Relevance,
    /// The latest published first (the web page's package list).
    Newest,
}

/// A package on a page of results.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The package.
    pub entry: Arc<Indexed>,
    /// Its points (`searchScore`).
    pub points: u32,
    /// Its points as a share of the best readable match's, 0 to 1 (`score.final`).
    pub score: f64,
}

/// One page of the readable matches, and how many there are in all.
#[derive(Debug)]
pub struct Page {
    /// The page, in order.
    pub hits: Vec<Hit>,
    /// Every readable match, not only the page's.
    pub total: usize,
}

/// A page could not be made yet: these units' access must be decided first. Gives the matches
/// back for the next round.
#[derive(Debug)]
pub struct Undecided {
    /// The units to decide, each once.
    pub units: Vec<(u32, AccessUnit)>,
    /// The matches, to be paged once they are decided.
    pub matches: Matches,
}
