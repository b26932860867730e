//! Where metadata and tarballs live: redb and files under a directory, or DynamoDB and S3.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Env};

/// Default lifetime of a presigned tarball URL.
const DEFAULT_PRESIGN: Duration = Duration::from_secs(300);
/// Default memory for the local database's page cache. Packument reads are served from the
/// packument cache and the package-record cache, and a cold read's pages come from the OS page
/// cache at a syscall each; what this holds is the B-tree's upper levels, which writes walk.
/// Measured at 230k versions (`examples/embedded_scale`): publishes and dist-tag writes ran as
/// fast with 4 MiB as with 32 MiB (0 cost ~20%), reading every package was no faster with
/// 1 GiB, and each MiB of cache added ~1.5 MiB of RSS (glibc's arenas fragment around its
/// pages): 170 MB with none, 198 MB with 16 MiB, 219 MB with 32 MiB, 540 MB with redb's own
/// default of 1 GiB. 16 MiB also holds those upper levels at 1M versions (~15 MB estimated).
pub const DEFAULT_DB_CACHE_BYTES: usize = 16 << 20;

/// Default revision-check interval on AWS (`docs/scaling.md`: T = 1 s).
const DEFAULT_REVISION_CHECK: Duration = Duration::from_millis(1000);

/// Default interval between reads of the search change log on AWS: a publish is found by every
/// instance's search within about a second, for one small Query per instance per second at most.
const DEFAULT_SEARCH_REFRESH: Duration = Duration::from_millis(1000);

/// The storage backend and its settings (`REGISTRY_STORAGE`).
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// `local`: redb and files under `data_dir` (`REGISTRY_DATA_DIR`).
    Local {
        /// `REGISTRY_DATA_DIR`.
        data_dir: PathBuf,
        /// `REGISTRY_DB_CACHE_BYTES`: memory for the database's page cache.
        db_cache_bytes: usize,
        /// `REGISTRY_DB_QUICK_REPAIR`: whether commits record what a restart after a crash needs
        /// to skip the database's full repair (one more fsync per commit).
        db_quick_repair: bool,
    },
    /// `aws`: DynamoDB and S3.
    Aws(AwsConfig),
}

/// The AWS backend's settings.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// `REGISTRY_TABLE`.
    pub table: String,
    /// `REGISTRY_BUCKET`.
    pub bucket: String,
    /// `REGISTRY_PRESIGN_SECONDS`: lifetime of presigned tarball URLs.
    pub presign: Duration,
    /// `REGISTRY_S3_PATH_STYLE`; `None` leaves it to whether an S3 endpoint override is set
    /// (emulators need path-style addressing; real S3 prefers virtual hosts).
    pub s3_path_style: Option<bool>,
    /// `REGISTRY_REVISION_CHECK_MS`: how long an instance serves reads from its view of a
    /// package before it reads the package record again (`storage::views`); 0 reads it on every
    /// request.
    pub revision_check: Duration,
    /// `REGISTRY_SEARCH_REFRESH_MS`: how often an instance reads the search change log for
    /// other instances' writes (a publish shows in every instance's search within about this);
    /// 0 reads it before every search.
    pub search_refresh: Duration,
    /// `REGISTRY_REBUILD_READ_UNITS`: read units a second the `Query` that rebuilds a package's
    /// snapshot from the table may spend on the package's partition (DynamoDB serves ~3,000).
    pub rebuild_read_units: u32,
}

impl StorageConfig {
    /// Reads the backend and its settings; `aws` requires a table and a bucket.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.raw("REGISTRY_STORAGE").as_deref().unwrap_or("local") {
            "local" => Ok(Self::Local {
                data_dir: PathBuf::from(
                    env.raw("REGISTRY_DATA_DIR")
                        .unwrap_or_else(|| "./data".into()),
                ),
                db_cache_bytes: env
                    .number("REGISTRY_DB_CACHE_BYTES")?
                    .unwrap_or(DEFAULT_DB_CACHE_BYTES),
                db_quick_repair: env.flag("REGISTRY_DB_QUICK_REPAIR")?.unwrap_or(true),
            }),
            "aws" => Ok(Self::Aws(AwsConfig {
                table: required(env, "REGISTRY_TABLE")?,
                bucket: required(env, "REGISTRY_BUCKET")?,
                presign: env
                    .seconds("REGISTRY_PRESIGN_SECONDS")?
                    .unwrap_or(DEFAULT_PRESIGN),
                s3_path_style: env.flag("REGISTRY_S3_PATH_STYLE")?,
                revision_check: env
                    .number::<u64>("REGISTRY_REVISION_CHECK_MS")?
                    .map_or(DEFAULT_REVISION_CHECK, Duration::from_millis),
                search_refresh: env
                    .number::<u64>("REGISTRY_SEARCH_REFRESH_MS")?
                    .map_or(DEFAULT_SEARCH_REFRESH, Duration::from_millis),
                rebuild_read_units: env
                    .number::<u32>("REGISTRY_REBUILD_READ_UNITS")?
                    .unwrap_or(crate::storage::aws::DEFAULT_REBUILD_READ_UNITS),
            })),
            other => Err(ConfigError::new(
                "REGISTRY_STORAGE",
                format!("'{other}' is not local or aws"),
            )),
        }
    }
}

impl StorageConfig {
    /// How long a package view serves reads before a check (`REGISTRY_REVISION_CHECK_MS`): 1 s
    /// by default on AWS, where a fleet of instances shares a package's partition; always 0 on
    /// the local backend, one process whose reads are cheap and see every write at once.
    pub fn revision_check(&self) -> Duration {
        match self {
            StorageConfig::Local { .. } => Duration::ZERO,
            StorageConfig::Aws(aws) => aws.revision_check,
        }
    }

    /// How often the search index reads the store's change log: never for the local backend,
    /// whose one process applies its own writes as they commit.
    pub fn search_refresh(&self) -> Option<Duration> {
        match self {
            StorageConfig::Local { .. } => None,
            StorageConfig::Aws(aws) => Some(aws.search_refresh),
        }
    }
}

/// A setting the AWS backend cannot do without.
fn required(env: &Env, key: &'static str) -> Result<String, ConfigError> {
    env.text(key)
        .ok_or_else(|| ConfigError::new(key, "required with REGISTRY_STORAGE=aws"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    const AWS: [(&str, &str); 3] = [
        ("REGISTRY_STORAGE", "aws"),
        ("REGISTRY_TABLE", "t"),
        ("REGISTRY_BUCKET", "b"),
    ];

    fn aws(extra: &[(&'static str, &'static str)]) -> Result<AwsConfig, ConfigError> {
        let pairs: Vec<_> = AWS.iter().chain(extra).copied().collect();
        match StorageConfig::from_env(&env(&pairs))? {
            StorageConfig::Aws(aws) => Ok(aws),
            other @ StorageConfig::Local { .. } => panic!("not aws: {other:?}"),
        }
    }

    #[test]
    fn local_by_default_and_aws_with_its_settings() {
        let c = StorageConfig::from_env(&env(&[])).unwrap();
        assert!(
            matches!(&c, StorageConfig::Local { data_dir, db_cache_bytes, db_quick_repair } if data_dir == &PathBuf::from("./data") && *db_cache_bytes == 16 << 20 && *db_quick_repair)
        );
        assert!(matches!(
            StorageConfig::from_env(&env(&[
                ("REGISTRY_DB_CACHE_BYTES", "1048576"),
                ("REGISTRY_DB_QUICK_REPAIR", "off")
            ]))
            .unwrap(),
            StorageConfig::Local {
                db_cache_bytes: 1_048_576,
                db_quick_repair: false,
                ..
            }
        ));
        // Settings of the other backend are not read.
        assert!(matches!(
            StorageConfig::from_env(&env(&[("REGISTRY_PRESIGN_SECONDS", "x")])).unwrap(),
            StorageConfig::Local { .. }
        ));
        let a = aws(&[]).unwrap();
        assert_eq!((a.table.as_str(), a.bucket.as_str()), ("t", "b"));
        assert_eq!(a.presign, Duration::from_secs(300));
        assert_eq!(a.s3_path_style, None);
        assert_eq!(a.revision_check, Duration::from_secs(1));
        let a = aws(&[
            ("REGISTRY_PRESIGN_SECONDS", "60"),
            ("REGISTRY_S3_PATH_STYLE", "ON"),
            ("REGISTRY_REVISION_CHECK_MS", "250"),
        ])
        .unwrap();
        assert_eq!(a.presign, Duration::from_secs(60));
        assert_eq!(a.s3_path_style, Some(true));
        assert_eq!(a.revision_check, Duration::from_millis(250));
        assert_eq!(a.search_refresh, Duration::from_secs(1));
        let a = aws(&[("REGISTRY_SEARCH_REFRESH_MS", "0")]).unwrap();
        assert_eq!(a.search_refresh, Duration::ZERO);
        assert_eq!(
            StorageConfig::Aws(aws(&[("REGISTRY_REVISION_CHECK_MS", "0")]).unwrap())
                .revision_check(),
            Duration::ZERO
        );
        assert_eq!(
            StorageConfig::from_env(&env(&[("REGISTRY_REVISION_CHECK_MS", "5000")]))
                .unwrap()
                .revision_check(),
            Duration::ZERO,
            "the local backend keeps no views"
        );
        // As before, an empty value turns path-style addressing off.
        assert_eq!(
            aws(&[("REGISTRY_S3_PATH_STYLE", "")])
                .unwrap()
                .s3_path_style,
            Some(false)
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let key = |pairs: &[(&str, &str)]| StorageConfig::from_env(&env(pairs)).unwrap_err().key;
        assert_eq!(key(&[("REGISTRY_STORAGE", "s3")]), "REGISTRY_STORAGE");
        assert_eq!(key(&[("REGISTRY_STORAGE", "")]), "REGISTRY_STORAGE");
        assert_eq!(
            key(&[("REGISTRY_DB_CACHE_BYTES", "32M")]),
            "REGISTRY_DB_CACHE_BYTES"
        );
        assert_eq!(key(&[("REGISTRY_STORAGE", "aws")]), "REGISTRY_TABLE");
        assert_eq!(
            key(&[
                ("REGISTRY_STORAGE", "aws"),
                ("REGISTRY_TABLE", "t"),
                ("REGISTRY_BUCKET", "")
            ]),
            "REGISTRY_BUCKET"
        );
        assert_eq!(
            aws(&[("REGISTRY_PRESIGN_SECONDS", "5m")]).unwrap_err().key,
            "REGISTRY_PRESIGN_SECONDS"
        );
        assert_eq!(
            aws(&[("REGISTRY_REVISION_CHECK_MS", "1s")])
                .unwrap_err()
                .key,
            "REGISTRY_REVISION_CHECK_MS"
        );
        let e = aws(&[("REGISTRY_S3_PATH_STYLE", "maybe")]).unwrap_err();
        assert_eq!(e.key, "REGISTRY_S3_PATH_STYLE");
        assert!(e.message.contains("is not a boolean"), "{e}");
    }
}
