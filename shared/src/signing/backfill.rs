//! `registry-server keys backfill`: signs the live versions that have no signature a listed key
//! vouches for (published before signing was on, or signed by a key that had expired by then),
//! with the key that signs now. Versions are found through the tarball store (every stored
//! version has its bytes there, on either backend: a listing, not a scan of the table), and each
//! package's versions are signed in one write.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use semver::Version;

use super::{Signing, SigningError, keys};
use crate::domain::signing::{DistSignature, PublicKey};
use crate::domain::{Dist, PackageName, TarballKey, VersionState};
use crate::http::AppState;
use crate::storage::{StoreError, VersionChange};
use crate::writes::{Decision, Draft, WriteError};

/// What a backfill did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backfilled {
    /// Live versions looked at.
    pub checked: usize,
    /// Versions signed now, as `name@version`.
    pub signed: Vec<String>,
}

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Signing is off (`REGISTRY_SIGNING=false`, or AWS without `REGISTRY_SIGNING_KMS_KEY`).
    #[error("signing is off: nothing to sign with")]
    Off,
    /// The key could not sign.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signs what needs it, package by package.
pub async fn backfill(state: &AppState) -> Result<Backfilled, BackfillError> {
    let signing = state.signing.as_ref().ok_or(BackfillError::Off)?;
    let kv = state.kv.as_ref().ok_or(BackfillError::Off)?;
    signing.list_key().await?;
    let listed = keys(kv.as_ref()).await?;
    let mut packages: BTreeMap<PackageName, Vec<Version>> = BTreeMap::new();
    for key in state.tarballs.list(std::time::Duration::ZERO).await? {
        if let Some((_, name, version)) = TarballKey::parse(key.as_str()) {
            packages.entry(name).or_default().push(version);
        }
    }
    let mut report = Backfilled::default();
    for (name, versions) in packages {
        let mut signed: Vec<(Version, DistSignature)> = Vec::new();
        for version in versions {
            let Some(record) = state.metadata.version(&name, &version).await? else {
                continue;
            };
            let VersionState::Live(live) = &record.state else {
                continue;
            };
            report.checked += 1;
            if vouched(&live.dist, record.published, &listed) {
                continue;
            }
            let signature = sign(signing, &name, &version, &live.dist).await?;
            signed.push((version, signature));
        }
        if signed.is_empty() {
            continue;
        }
        write(state, &name, &signed).await?;
        report
            .signed
            .extend(signed.iter().map(|(v, _)| format!("{name}@{v}")));
    }
    Ok(report)
}

/// Whether a listed key vouches for one of the version's signatures: npm accepts a signature by
/// a key that had not expired when the version was published.
fn vouched(dist: &Dist, published: DateTime<Utc>, listed: &[PublicKey]) -> bool {
    dist.signatures.iter().any(|signature| {
        listed.iter().any(|key| {
            key.keyid == signature.keyid && key.expires.is_none_or(|expires| published < expires)
        })
    })
}

async fn sign(
    signing: &Signing,
    name: &PackageName,
    version: &Version,
    dist: &Dist,
) -> Result<DistSignature, SigningError> {
    signing
        .sign_version(name.as_str(), &version.to_string(), &dist.integrity)
        .await
}

/// Stores the signatures in one write of the package (retried on a concurrent change).
async fn write(
    state: &AppState,
    name: &PackageName,
    signed: &[(Version, DistSignature)],
) -> Result<(), BackfillError> {
    let outcome: Result<(), WriteError<StoreError>> = state
        .writer()
        .update(|| async {
            let Some(stored) = state.metadata.package(name).await? else {
                return Ok(Decision::Keep(()));
            };
            let mut draft = Draft::after(Some(&stored), name);
            for (version, signature) in signed {
                draft.change_version(VersionChange::Sign(
                    version.clone(),
                    vec![signature.clone()],
                ));
            }
            Ok(Decision::Write(draft, ()))
        })
        .await;
    match outcome {
        Ok(()) => Ok(()),
        Err(WriteError::Store(e) | WriteError::Refused(e)) => Err(e.into()),
        Err(e) => Err(StoreError::Internal(e.to_string()).into()),
    }
}
