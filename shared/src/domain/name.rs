//! Validated npm package names.

use std::fmt;

/// Longest name npm accepts for a new package.
pub(crate) const MAX_NAME_LEN: usize = 214;

/// Why a string is not an acceptable package name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("package name must not be empty")]
    Empty,
    #[error("package name must be at most {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("package name must not start with '.' or '_'")]
    LeadingDotOrUnderscore,
    #[error("package name must not have leading or trailing spaces")]
    Whitespace,
    #[error("package name can only contain URL-friendly characters")]
    NotUrlSafe,
    #[error("scoped package name must look like @scope/name")]
    BadScope,
    #[error("new package names must be lowercase")]
    Uppercase,
    #[error("new package names must not contain any of ~'!()*")]
    SpecialCharacters,
    #[error("'{0}' is not a valid package name")]
    Reserved(String),
    #[error(
        "new package names must not be '-' or end in '/-': request paths would read it as the registry's own '/-/'"
    )]
    Dash,
}

/// A package name that is safe to use in URLs and storage keys: `name` or `@scope/name`.
///
/// `parse` accepts every name that may exist on a registry (including legacy names with uppercase
/// letters); `parse_new` adds the rules npm applies to names being created.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName {
    full: String,
    /// Byte index of the `/` in a scoped name.
    slash: Option<usize>,
}

/// Characters `encodeURIComponent` leaves alone: the only ones a name part may contain.
fn is_url_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')')
}

fn check_part(part: &str) -> Result<(), NameError> {
    if part.is_empty() {
        return Err(NameError::BadScope);
    }
    if !part.chars().all(is_url_safe) {
        return Err(NameError::NotUrlSafe);
    }
    // Also keeps `.` and `..` (and hidden files) out of paths and storage keys.
    if part.starts_with('.') || part.starts_with('_') {
        return Err(NameError::LeadingDotOrUnderscore);
    }
    Ok(())
}

impl PackageName {
    /// Parses any name a registry may hold, including legacy ones.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.trim() != name {
            return Err(NameError::Whitespace);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if name.starts_with('.') || name.starts_with('_') {
            return Err(NameError::LeadingDotOrUnderscore);
        }
        let slash = if let Some(rest) = name.strip_prefix('@') {
            let (scope, base) = rest.split_once('/').ok_or(NameError::BadScope)?;
            check_part(scope)?;
            check_part(base)?;
            Some(1 + scope.len())
        } else {
            check_part(name)?;
            None
        };
        let base = &name[slash.map_or(0, |s| s + 1)..];
        if ["node_modules", "favicon.ico"]
            .iter()
            .any(|reserved| base.eq_ignore_ascii_case(reserved))
        {
            return Err(NameError::Reserved(name.to_string()));
        }
        Ok(Self {
            full: name.to_string(),
            slash,
        })
    }

    /// Parses a name for a package being created: lowercase, no `~'!()*`, and not `-` or
    /// `@scope/-`, which could be published but not read back: `/-` is the registry's own
    /// namespace, and API Gateway routes `/@scope/-/VERSION` to the tarball function.
    pub fn parse_new(name: &str) -> Result<Self, NameError> {
        let parsed = Self::parse(name)?;
        if parsed.base_name() == "-" {
            return Err(NameError::Dash);
        }
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(NameError::Uppercase);
        }
        if name
            .chars()
            .any(|c| matches!(c, '~' | '\'' | '!' | '(' | ')' | '*'))
        {
            return Err(NameError::SpecialCharacters);
        }
        Ok(parsed)
    }

    /// The whole name, `@scope/name` or `name`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The scope without its `@`, if the name is scoped.
    pub fn scope(&self) -> Option<&str> {
        self.slash.map(|s| &self.full[1..s])
    }

    /// The part after the scope (the whole name if unscoped); tarball file names start with it.
    pub fn base_name(&self) -> &str {
        &self.full[self.slash.map_or(0, |s| s + 1)..]
    }

    /// The name as npm puts it in a URL path: `@scope%2fname`.
    pub fn escaped(&self) -> String {
        self.full.replacen('/', "%2f", 1)
    }

    /// The file name of a version's tarball: `name-1.2.3.tgz` (base name for scoped packages).
    pub fn tarball_file_name(&self, version: &semver::Version) -> String {
        format!("{}-{}.tgz", self.base_name(), version)
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl serde::Serialize for PackageName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for PackageName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "a",
            "left-pad",
            "@scope/pkg",
            "@my-org/a.b_c",
            "x".repeat(214).as_str(),
        ] {
            assert!(PackageName::parse_new(n).is_ok(), "{n}");
        }
        let n = PackageName::parse("@scope/pkg").unwrap();
        assert_eq!(n.scope(), Some("scope"));
        assert_eq!(n.base_name(), "pkg");
        assert_eq!(n.escaped(), "@scope%2fpkg");
        assert_eq!(PackageName::parse("pkg").unwrap().scope(), None);
    }

    #[test]
    fn legacy_names_are_readable_but_not_creatable() {
        assert!(PackageName::parse("JSONStream").is_ok());
        assert_eq!(
            PackageName::parse_new("JSONStream"),
            Err(NameError::Uppercase)
        );
        assert_eq!(
            PackageName::parse_new("wow!"),
            Err(NameError::SpecialCharacters)
        );
    }

    /// Found by fuzzing (shared/fuzz, target `names`): `@s/-` was creatable, but API Gateway sends
    /// `GET /@s/-/1.0.0` to the tarball function (its literal `-` beats the version route's
    /// variable), which answers 404; `-` passed as a new name although `/-` is the registry's own
    /// namespace, so no request can reach it.
    #[test]
    fn a_dash_for_a_base_name_is_not_creatable() {
        for n in ["-", "@s/-"] {
            assert_eq!(PackageName::parse_new(n), Err(NameError::Dash), "{n}");
            assert!(PackageName::parse(n).is_ok(), "{n} stays readable");
        }
        for n in ["-a", "a-", "@s/--", "@-/a", "@s/a-"] {
            assert!(PackageName::parse_new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        for n in [
            "",
            " a",
            "a ",
            ".hidden",
            "_under",
            "..",
            "../etc",
            "a/b",
            "@/b",
            "@s/",
            "@s",
            "@s/b/c",
            "@../x",
            "@s/..",
            "@s/.x",
            "@.s/x",
            "a%2fb",
            "a b",
            "a\0b",
            "a\\b",
            "a:b",
            "a?b",
            "a#b",
            "node_modules",
            "favicon.ico",
            "é",
            "@s/b%00",
        ] {
            assert!(PackageName::parse(n).is_err(), "{n:?} should be rejected");
        }
        assert_eq!(
            PackageName::parse(&"x".repeat(215)),
            Err(NameError::TooLong)
        );
    }
}
