//! The pages' stylesheet and script, compiled in, under file names that carry a hash of their
//! content: a new build that changes one gets a new name, so both can be cached as immutable.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// The stylesheet every page links (light and dark themes).
pub const STYLE_CSS: &str = include_str!("assets/style.css");

/// The copy buttons' script, the only script any page loads.
pub const COPY_JS: &str = include_str!("assets/copy.js");

/// `Cache-Control` for an asset served under its hashed name.
pub const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

static STYLE_FILE: LazyLock<String> = LazyLock::new(|| hashed("style", "css", STYLE_CSS));
static COPY_FILE: LazyLock<String> = LazyLock::new(|| hashed("copy", "js", COPY_JS));

fn hashed(stem: &str, extension: &str, content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    format!("{stem}.{}.{extension}", &hex::encode(digest)[..8])
}

/// The stylesheet's file name, `style.<8 hex digits>.css`.
pub fn style_file() -> &'static str {
    &STYLE_FILE
}

/// The script's file name, `copy.<8 hex digits>.js`.
pub fn copy_file() -> &'static str {
    &COPY_FILE
}

/// The path pages use for an asset: `{base}/-/web/static/{file}`.
pub fn asset_path(base: &str, file: &str) -> String {
    format!("{base}/-/web/static/{file}")
}

/// An asset by the file name in its path: its `Content-Type` and body; `None` for any other name
/// (an old hash included, so a stale page never gets a newer file cached as immutable under the
/// old name).
pub fn asset(file: &str) -> Option<(&'static str, &'static str)> {
    if file == style_file() {
        Some(("text/css; charset=utf-8", STYLE_CSS))
    } else if file == copy_file() {
        Some(("text/javascript; charset=utf-8", COPY_JS))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_their_content() {
        let style = style_file();
        let hash = style
            .strip_prefix("style.")
            .and_then(|rest| rest.strip_suffix(".css"))
            .unwrap();
        assert!(
            hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{style}"
        );
        assert_eq!(asset(style), Some(("text/css; charset=utf-8", STYLE_CSS)));
        assert_eq!(asset(copy_file()).unwrap().1, COPY_JS);
        assert_eq!(asset("style.00000000.css"), None);
        assert_eq!(asset("../Cargo.toml"), None);
    }
}
