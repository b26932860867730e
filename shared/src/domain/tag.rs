//! Dist-tags: names that point at versions.

use std::fmt;

/// Why a string is not an acceptable dist-tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("dist-tag must not be empty")]
    Empty,
    #[error("dist-tag must be at most 128 characters")]
    TooLong,
    #[error("dist-tag '{0}' can only contain letters, digits, '-', '_' and '.'")]
    Characters(String),
    #[error("dist-tag '{0}' looks like a version range; tags must not be valid semver ranges")]
    IsRange(String),
}

/// A dist-tag such as `latest` or `next`: URL-safe and never parseable as a semver range
/// (otherwise `npm install pkg@TAG` would be ambiguous).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DistTag(String);

impl DistTag {
    /// The tag every package has, which installs without a spec resolve.
    pub fn latest() -> Self {
        Self("latest".to_string())
    }

    /// Validates a tag name.
    pub fn parse(tag: &str) -> Result<Self, TagError> {
        if tag.is_empty() {
            return Err(TagError::Empty);
        }
        if tag.len() > 128 {
            return Err(TagError::TooLong);
        }
        if looks_like_range(tag) {
            return Err(TagError::IsRange(tag.to_string()));
        }
        if !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(TagError::Characters(tag.to_string()));
        }
        Ok(Self(tag.to_string()))
    }

    /// The tag's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when node-semver's loose `validRange` would accept the tag. Rust's `VersionReq` is
/// stricter than node-semver, so the loose forms (`v1`, `x`, `1.x.x`, a bare number) are added.
fn looks_like_range(tag: &str) -> bool {
    if semver::VersionReq::parse(tag).is_ok() {
        return true;
    }
    let t = tag.strip_prefix(['v', 'V', '=']).unwrap_or(tag);
    let mut parts = t.split(['-', '+']).next().unwrap_or("").split('.');
    let is_wild_or_number = |p: &str| {
        matches!(p, "x" | "X" | "*") || (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    parts.next().is_some_and(is_wild_or_number) && parts.all(is_wild_or_number)
}

impl fmt::Display for DistTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for DistTag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DistTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tag_names() {
        for t in [
            "latest",
            "next",
            "beta",
            "canary-2",
            "v-next",
            "release_1",
            "rc.x",
        ] {
            assert!(DistTag::parse(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn rejects_ranges_and_unsafe_text() {
        for t in [
            "1",
            "1.2",
            "1.2.3",
            "v1",
            "v1.2.3",
            "^1.0.0",
            "~1",
            "x",
            "*",
            "1.x",
            ">=1",
            "1.0.0-beta",
        ] {
            assert!(
                matches!(DistTag::parse(t), Err(TagError::IsRange(_))),
                "{t}"
            );
        }
        for t in ["", "a/b", "..%2f", "a b", "tag?"] {
            assert!(DistTag::parse(t).is_err(), "{t}");
        }
    }
}
