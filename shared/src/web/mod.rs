//! The registry's web pages for people: the package list, search results and package pages,
//! rendered on the server as plain HTML (no JavaScript build, readable with scripts off).
//!
//! Pure rendering: view models in, HTML documents out. The HTTP layer reads the store, checks
//! what the reader may see, fills the view models and sends the pages with
//! [`security_headers`]; the stylesheet and the copy buttons' script are served from
//! [`assets`] under content-hashed names.

pub mod assets;
mod headers;
pub mod html;
pub mod markdown;
mod pages;

pub use headers::{CONTENT_SECURITY_POLICY, HTML_CONTENT_TYPE, security_headers};
pub use markdown::{RenderedReadme, render_readme};
pub use pages::{
    Dependency, Layout, ListItem, ListView, PAGE_LIMIT, PackageView, Repository, SITE_NAME,
    SearchView, VersionRow, error_page, list_page, message_page, package_page, search_page,
};
