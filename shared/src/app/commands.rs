//! What `registry-server`'s subcommands do besides serving: the storage sweep and the audit log
//! listing, each on the stores the builder opens.

use std::time::Duration;

use super::{App, StartError};
use crate::config::Config;

/// What `registry-server sweep` did.
#[derive(Debug)]
pub struct Swept {
    /// What the sweep found.
    pub report: crate::storage::SweepReport,
    /// Whether the server running on the data directory swept (through its control socket),
    /// rather than this process.
    pub by_server: bool,
}

/// Runs the storage sweep for `config`'s backend (see `storage::sweep`). With local storage and
/// a server running on the data directory, that server sweeps (`control`); otherwise this
/// process opens the stores and sweeps.
pub async fn sweep(config: Config, older_than: Duration) -> Result<Swept, StartError> {
    #[cfg(unix)]
    if let crate::config::StorageConfig::Local { data_dir, .. } = &config.storage
        && let Some(report) = super::control::sweep(data_dir, older_than).await?
    {
        return Ok(Swept {
            report,
            by_server: true,
        });
    }
    let stores = App::builder(config).open_stores().await?;
    let report = crate::storage::sweep(
        stores.metadata.as_ref(),
        stores.tarballs.as_ref(),
        older_than,
    )
    .await?;
    Ok(Swept {
        report,
        by_server: false,
    })
}

/// `registry-server origin get|set NAME [internal|upstream]`: the name's origin and why, as
/// JSON, after setting it if asked. With local storage and a server running on the data
/// directory, that server answers (`control`); otherwise this process opens the stores.
pub async fn origin(config: Config, name: &str, set: Option<&str>) -> Result<String, StartError> {
    #[cfg(unix)]
    if let crate::config::StorageConfig::Local { data_dir, .. } = &config.storage
        && let Some(answer) = super::control::origin(data_dir, name, set).await?
    {
        return Ok(answer.to_string());
    }
    let state = App::builder(config).build().await?;
    crate::http::upstream::origin_command(&state, name, set)
        .await
        .map(|answer| answer.to_string())
        .map_err(StartError::Usage)
}

/// `registry-server keys backfill`: signs the versions that need it (see `signing::backfill`);
/// the report, and whether the server running on the data directory did it.
pub async fn keys_backfill(
    config: Config,
) -> Result<(crate::signing::backfill::Backfilled, bool), StartError> {
    #[cfg(unix)]
    if let crate::config::StorageConfig::Local { data_dir, .. } = &config.storage
        && let Some(report) = super::control::signing_backfill(data_dir).await?
    {
        return Ok((report, true));
    }
    let state = App::builder(config).build().await?;
    crate::signing::backfill::backfill(&state)
        .await
        .map(|report| (report, false))
        .map_err(|e| StartError::Usage(e.to_string()))
}

/// What `registry-server audit` prints: the events of `package` (or all) since `since` (an RFC
/// 3339 time or a duration back from now, `24h`, `7d`), at most the newest `limit`, as a table
/// or (`json`) one JSON object per line.
pub async fn audit_listing(
    config: Config,
    package: Option<&str>,
    since: Option<&str>,
    limit: Option<usize>,
    json: bool,
) -> Result<String, StartError> {
    use crate::domain::audit::{AuditQuery, parse_since, render_table};
    let package = package
        .map(|p| {
            crate::domain::PackageName::parse(p).map_err(|e| {
                StartError::Usage(format!("--package '{p}' is not a package name: {e}"))
            })
        })
        .transpose()?;
    let since = since
        .map(|s| {
            parse_since(s, chrono::Utc::now())
                .map_err(|e| StartError::Usage(format!("--since: {e}")))
        })
        .transpose()?;
    let log = App::builder(config).open_audit_log().await?;
    let events = log
        .query(&AuditQuery {
            package,
            since,
            limit,
        })
        .await?;
    if !json {
        return Ok(render_table(&events));
    }
    let mut out = String::new();
    for event in &events {
        out.push_str(&serde_json::to_string(event).map_err(|e| StartError::Config(e.to_string()))?);
        out.push('\n');
    }
    Ok(out)
}
