//! The one reader of environment variables behind every setting, and the one grammar for each
//! kind of value: booleans, numbers and durations in seconds.

use std::str::FromStr;
use std::time::Duration;

use super::ConfigError;

/// The spellings every boolean setting accepts (any case), for the error that refuses the rest.
const BOOLEAN_SPELLINGS: &str = "1/0, true/false, yes/no, on/off";

/// A variable's value, or `None` when it is unset.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Where settings are read from: the process environment, or any lookup (flags layered over the
/// environment, a test's table).
pub struct Env<'a> {
    get: Lookup<'a>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets (`REGISTRY_TOKEN_SECRET`): never printed.
        f.write_str("Env(..)")
    }
}

impl Env<'static> {
    /// The process environment (a value that is not UTF-8 counts as unset).
    pub fn process() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }
}

impl<'a> Env<'a> {
    /// Settings read through `get`, which answers a variable's value or `None` when it is unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self { get: Box::new(get) }
    }

    /// The value exactly as set, empty included.
    pub fn raw(&self, key: &str) -> Option<String> {
        (self.get)(key)
    }

    /// The value, unless unset or empty.
    pub fn text(&self, key: &str) -> Option<String> {
        self.raw(key).filter(|v| !v.is_empty())
    }

    /// A boolean (`None` when unset); see `parse_bool` for the grammar.
    pub fn flag(&self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        self.raw(key).map(|v| parse_bool(key, &v)).transpose()
    }

    /// A number (`None` when unset), surrounding blanks ignored; an empty value is refused.
    pub fn number<T: FromStr>(&self, key: &'static str) -> Result<Option<T>, ConfigError> {
        self.raw(key).map(|v| parse_number(key, &v)).transpose()
    }

    /// A duration given in whole seconds (`None` when unset), with `number`'s grammar.
    pub fn seconds(&self, key: &'static str) -> Result<Option<Duration>, ConfigError> {
        Ok(self.number::<u64>(key)?.map(Duration::from_secs))
    }
}

/// The boolean grammar every setting shares: `1`, `true`, `yes`, `on` and `0`, `false`, `no`,
/// `off` in any case, surrounding blanks ignored. An empty value is `false`, as it always was
/// for these settings. Anything else is refused with an error naming `key`.
fn parse_bool(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::new(
            key,
            format!("'{value}' is not a boolean ({BOOLEAN_SPELLINGS})"),
        )),
    }
}

/// The number grammar every setting shares: the type's own (`u64`, `usize`), surrounding
/// blanks ignored; anything else is refused with an error naming `key`.
fn parse_number<T: FromStr>(key: &'static str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(key, format!("'{value}' is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_the_four_pairs_in_any_case_and_nothing_else() {
        for yes in [
            "1", "true", "TRUE", "True", "yes", "YES", "on", "On", " true ",
        ] {
            assert!(parse_bool("K", yes).unwrap(), "{yes:?}");
        }
        for no in ["0", "false", "FALSE", "no", "No", "off", "OFF", ""] {
            assert!(!parse_bool("K", no).unwrap(), "{no:?}");
        }
        for bad in ["2", "y", "n", "enabled", "truee", "-1", "t", "nope"] {
            let e = parse_bool("REGISTRY_PUBLIC_READ", bad).unwrap_err();
            assert_eq!(e.key, "REGISTRY_PUBLIC_READ", "{bad:?}");
            assert_eq!(
                e.to_string(),
                format!(
                    "REGISTRY_PUBLIC_READ: '{bad}' is not a boolean (1/0, true/false, yes/no, on/off)"
                )
            );
        }
    }

    #[test]
    fn numbers_and_seconds_parse_trimmed_and_refuse_the_rest_naming_the_variable() {
        assert_eq!(parse_number::<u64>("K", " 42 ").unwrap(), 42);
        for bad in ["", "-1", "1.5", "ten", "1e3"] {
            let e = parse_number::<u64>("REGISTRY_TOKEN_DAYS", bad).unwrap_err();
            assert_eq!(e.key, "REGISTRY_TOKEN_DAYS", "{bad:?}");
            assert!(e.message.contains("is not a number"), "{e}");
        }
        let env = Env::from_lookup(|k| match k {
            "SET" => Some("90".into()),
            "EMPTY" => Some(String::new()),
            "BAD" => Some("soon".into()),
            _ => None,
        });
        assert_eq!(env.seconds("SET").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(env.seconds("UNSET").unwrap(), None);
        assert_eq!(env.seconds("BAD").unwrap_err().key, "BAD");
        assert_eq!(env.flag("UNSET").unwrap(), None);
        assert_eq!(env.flag("EMPTY").unwrap(), Some(false));
        assert_eq!(env.text("EMPTY"), None);
        assert_eq!(env.raw("EMPTY").as_deref(), Some(""));
    }
}
