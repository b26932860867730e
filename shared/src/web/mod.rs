//! The registry's web pages for people, rendered on the server as plain HTML (no JavaScript
//! build, readable with scripts off).

pub mod markdown;

pub use markdown::{RenderedReadme, render_readme};
