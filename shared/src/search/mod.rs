//! Finding packages: what is indexed of a package ([`SearchEntry`]), how a query's text is read
//! ([`SearchQuery`]), and the in-memory index that ranks entries for it ([`SearchIndex`]).
//!
//! No I/O here: the index is filled from the store and kept current by the one write path, and
//! the HTTP layer filters its ranked hits by what the caller may read before it pages them, so a
//! search never shows (or counts) a package its caller could not read.

mod entry;
mod index;
mod indexed;
mod matches;
mod query;
mod response;
mod searcher;
mod tokenize;

pub use entry::{Links, Person, SearchEntry};
pub use index::SearchIndex;
pub use indexed::Indexed;
pub use matches::{Access, AccessUnit, Hit, Matches, Order, Page, Undecided};
pub use query::{MAX_FROM, MAX_SIZE, SearchQuery};
pub use response::search_response;
pub use searcher::Searcher;
