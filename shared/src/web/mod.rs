//! The registry's web pages for people, rendered on the server as plain HTML (no JavaScript
//! build, readable with scripts off).
//!
//! Pages are sent with [`security_headers`]; the stylesheet and the copy buttons' script are
//! served from [`assets`] under content-hashed names.

pub mod assets;
mod headers;
pub mod html;
pub mod markdown;

pub use headers::{CONTENT_SECURITY_POLICY, HTML_CONTENT_TYPE, security_headers};
pub use markdown::{RenderedReadme, render_readme};
