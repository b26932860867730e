//! What one request may cost: body sizes, the bodies held at once, unpacked tarball size, the
//! memory for rendered packuments and served tarballs, and whether a publish may replace a version.

use super::{ConfigError, Env};

/// Default largest publish body: a 48 MiB tarball once base64-encoded, plus its manifest.
const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;
/// Default memory for rendered packuments: the documents of a busy install (a few hundred packages
/// at tens of KB each, identity and gzip) fit, and the server stays well inside 64 MB.
const DEFAULT_PACKUMENT_CACHE_BYTES: usize = 16 << 20;
/// Default memory for packuments being built at once: a 3,000-version document takes a few MB
/// while it is decoded and joined, so tens build side by side and a burst of the biggest waits.
const DEFAULT_RENDER_BYTES_IN_FLIGHT: usize = 64 << 20;
/// Default memory for tarballs kept to serve again (local storage): a few thousand of the small
/// tarballs most packages have.
const DEFAULT_TARBALL_CACHE_BYTES: usize = 8 << 20;
/// Default most bytes a published tarball may unpack to.
const DEFAULT_MAX_UNPACKED_BYTES: u64 = 1 << 30;

/// Limits on requests and the memory they use.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `REGISTRY_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `REGISTRY_MAX_BODY_BYTES_IN_FLIGHT`: bytes of request bodies held at once, across requests.
    pub max_body_bytes_in_flight: usize,
    /// `REGISTRY_MAX_UNPACKED_BYTES`: most bytes a published tarball may unpack to.
    pub max_unpacked_bytes: u64,
    /// `REGISTRY_PACKUMENT_CACHE_BYTES`: memory for rendered packuments (0 turns the cache off).
    pub packument_cache_bytes: usize,
    /// `REGISTRY_RENDER_BYTES_IN_FLIGHT`: memory for packuments being built, or read back from
    /// what the store kept, at once.
    pub render_bytes_in_flight: usize,
    /// `REGISTRY_TARBALL_CACHE_BYTES`: memory for tarballs kept to serve again from memory (0
    /// turns the cache off).
    pub tarball_cache_bytes: usize,
    /// `REGISTRY_ALLOW_OVERWRITE`: let a publish replace an existing (not unpublished) version.
    pub allow_overwrite: bool,
}

impl LimitsConfig {
    /// Reads the limits.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_body_bytes = env
            .number("REGISTRY_MAX_BODY_BYTES")?
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        Ok(Self {
            max_body_bytes,
            // By default (or 0) two of the largest bodies at once: a burst of big publishes
            // waits its turn (503, Retry-After) instead of taking the process's memory.
            max_body_bytes_in_flight: match env.number("REGISTRY_MAX_BODY_BYTES_IN_FLIGHT")? {
                None | Some(0) => max_body_bytes.saturating_mul(2),
                Some(n) => n,
            },
            max_unpacked_bytes: env
                .number("REGISTRY_MAX_UNPACKED_BYTES")?
                .unwrap_or(DEFAULT_MAX_UNPACKED_BYTES),
            packument_cache_bytes: env
                .number("REGISTRY_PACKUMENT_CACHE_BYTES")?
                .unwrap_or(DEFAULT_PACKUMENT_CACHE_BYTES),
            render_bytes_in_flight: env
                .number("REGISTRY_RENDER_BYTES_IN_FLIGHT")?
                .unwrap_or(DEFAULT_RENDER_BYTES_IN_FLIGHT),
            tarball_cache_bytes: env
                .number("REGISTRY_TARBALL_CACHE_BYTES")?
                .unwrap_or(DEFAULT_TARBALL_CACHE_BYTES),
            allow_overwrite: env.flag("REGISTRY_ALLOW_OVERWRITE")?.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn defaults_and_the_in_flight_budget_follows_the_body_limit() {
        let c = LimitsConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c.max_body_bytes, 64 << 20);
        assert_eq!(c.max_body_bytes_in_flight, 128 << 20);
        assert_eq!(c.max_unpacked_bytes, 1 << 30);
        assert_eq!(c.packument_cache_bytes, 16 << 20);
        assert_eq!(c.render_bytes_in_flight, 64 << 20);
        assert_eq!(c.tarball_cache_bytes, 8 << 20);
        assert!(!c.allow_overwrite);
        let c = LimitsConfig::from_env(&env(&[
            ("REGISTRY_MAX_BODY_BYTES", "1000"),
            ("REGISTRY_MAX_BODY_BYTES_IN_FLIGHT", "0"),
            ("REGISTRY_ALLOW_OVERWRITE", "TRUE"),
        ]))
        .unwrap();
        assert_eq!(c.max_body_bytes_in_flight, 2000);
        assert!(c.allow_overwrite);
        let c =
            LimitsConfig::from_env(&env(&[("REGISTRY_MAX_BODY_BYTES_IN_FLIGHT", "7")])).unwrap();
        assert_eq!(c.max_body_bytes_in_flight, 7);
    }

    #[test]
    fn errors_name_the_variable() {
        for (key, value) in [
            ("REGISTRY_MAX_BODY_BYTES", "64MiB"),
            ("REGISTRY_MAX_BODY_BYTES", ""),
            ("REGISTRY_MAX_BODY_BYTES_IN_FLIGHT", "-1"),
            ("REGISTRY_MAX_UNPACKED_BYTES", "1G"),
            ("REGISTRY_PACKUMENT_CACHE_BYTES", "off"),
            ("REGISTRY_RENDER_BYTES_IN_FLIGHT", "lots"),
            ("REGISTRY_TARBALL_CACHE_BYTES", "8M"),
            ("REGISTRY_ALLOW_OVERWRITE", "sometimes"),
        ] {
            let e = LimitsConfig::from_env(&env(&[(key, value)])).unwrap_err();
            assert_eq!(e.key, key, "{key}={value:?}: {e}");
        }
    }
}
