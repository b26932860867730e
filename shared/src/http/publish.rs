//! Publish route group: publish, metadata updates (deprecate, star, unpublish of one version),
//! unpublish of a whole package, tarball removal, dist-tag writes and trust configurations
//! (`npm trust`, in `trust`: making one may bind a name, a package write).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use semver::Version;
use serde_json::json;

use super::audit::AuditEntry;
use super::routes::{PublishRoute, Revision, TarballFile};
use super::{
    ApiError, AppState, RequestContext, RetryableError, json_response, read_body, retry_on_conflict,
};
use crate::auth::{Action, AuthError};
use crate::domain::audit::AuditAction;
use crate::domain::publish::{self, MetadataUpdate, PendingPublish, PutDocument, ValidPublish};
use crate::domain::{
    DistTag, PackageDocument, PackageName, PackageRecord, RepoRef, VersionRecord, VersionState,
};
use crate::storage::{CreateMode, PackageWrite, StoreError, VersionChange};

/// Handles a publish-group route.
pub async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: PublishRoute,
    body: Body,
) -> Result<Response, ApiError> {
    match route {
        PublishRoute::Put { name, rev } => {
            let body = read_body(state, body, ctx).await?;
            // The body moves into the parsed document: a publish's tarball stays one buffer
            // (base64 text, a slice of the body) until the caller is authorised.
            let (bytes, _in_flight) = body.into_parts();
            match publish::parse_put(&name, bytes)? {
                PutDocument::Publish(pending) => publish_version(state, ctx, &name, pending).await,
                PutDocument::Update(update) => {
                    update_metadata(state, ctx, &name, rev.as_ref(), &update).await
                }
            }
        }
        PublishRoute::Unpublish { name, rev } => unpublish_package(state, ctx, &name, &rev).await,
        // The revision does not matter: the answer depends on the version's state alone.
        PublishRoute::DeleteTarball { name, file, rev: _ } => {
            delete_tarball(state, ctx, &name, &file).await
        }
        PublishRoute::SetTag { name, tag } => {
            let body = read_body(state, body, ctx).await?;
            set_dist_tag(state, ctx, &name, tag, body.bytes()).await
        }
        PublishRoute::DeleteTag { name, tag } => delete_dist_tag(state, ctx, &name, tag).await,
        PublishRoute::TrustList { name } => super::trust::list(state, ctx, &name).await,
        PublishRoute::TrustCreate { name } => {
            let body = read_body(state, body, ctx).await?;
            super::trust::create(state, ctx, &name, body.bytes()).await
        }
        PublishRoute::TrustRevoke { name, id } => {
            super::trust::revoke(state, ctx, &name, &id).await
        }
    }
}

fn ok() -> Response {
    json_response(StatusCode::OK, &json!({ "ok": true }))
}

/// The next package record: the stored one with its revision bumped, or a new one.
fn next_record(
    current: Option<&PackageRecord>,
    name: &PackageName,
) -> (PackageRecord, Option<u64>) {
    let now = Utc::now();
    match current {
        Some(p) => {
            let mut next = p.clone();
            next.revision = p.revision + 1;
            next.modified = now;
            (next, Some(p.revision))
        }
        None => {
            let mut next = PackageRecord::new(name.clone(), now);
            next.revision = 1;
            (next, None)
        }
    }
}

async fn publish_version(
    state: &AppState,
    ctx: &RequestContext,
    url_name: &PackageName,
    pending: PendingPublish,
) -> Result<Response, ApiError> {
    let name = PackageName::parse_new(url_name.as_str())
        .map_err(|e| ApiError::BadRequest(format!("invalid package name '{url_name}': {e}")))?;
    state
        .scopes
        .stores(&name)
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    ctx.audit.set(vec![
        AuditEntry::new(AuditAction::Publish).version(&pending.version),
    ]);
    // Authorise before any work on the tarball: the binding as read now decides who may
    // publish, and the write below only lands while that binding is still the stored one.
    let declared = declared_repository(state, &name, pending.declared_repository())?;
    let checked_bound = bound_repository(state, &name).await?;
    let binding =
        bind_repository(state, ctx, &name, checked_bound.as_ref(), declared.as_ref()).await?;

    let limits = state.tarball_limits;
    let checked_name = name.clone();
    // Decoding, hashing and unpacking are CPU work; keep them off the async workers.
    let valid: ValidPublish =
        tokio::task::spawn_blocking(move || pending.verify(&checked_name, limits))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    let version = valid.version.clone();
    let mode = if state.config.allow_overwrite {
        CreateMode::AllowOverwrite
    } else {
        CreateMode::CreateOnly
    };

    // Refuse early, before storing bytes, when the version is already taken. The conditional
    // create below is what decides a race; this only saves an upload in the common case.
    let previous = state.metadata.version(&name, &version).await?;
    match (&previous, mode) {
        (
            Some(VersionRecord {
                state: VersionState::Unpublished { .. },
                ..
            }),
            _,
        ) => return Err(StoreError::VersionRetired.into()),
        (Some(_), CreateMode::CreateOnly) => return Err(conflict(&name, &version)),
        _ => {}
    }

    let key = valid.live.dist.tarball_key.clone();
    state.tarballs.put(&key, valid.tarball.clone()).await?;

    let result = retry_on_conflict(|| async {
        let current = state.metadata.package(&name).await?;
        let bound_now = current.as_ref().and_then(|p| p.repository.clone());
        // The binding changed since it was checked (a racing first publish bound the name, an
        // admin rebound it): decide again against what is stored now, never write the old one.
        let binding = if bound_now == checked_bound {
            binding.clone()
        } else {
            bind_repository(state, ctx, &name, bound_now.as_ref(), declared.as_ref()).await?
        };
        let mut entries = vec![AuditEntry::new(AuditAction::Publish).version(&version)];
        if let (Some(from), Some(to)) = (&bound_now, &binding)
            && from != to
        {
            entries.push(
                AuditEntry::new(AuditAction::Rebind)
                    .version(&version)
                    .detail(format!("repository {from} -> {to}")),
            );
        } else if let (None, Some(to)) = (&bound_now, &binding) {
            entries[0].detail = Some(format!("bound to repository {to}"));
        }
        ctx.audit.set(entries);
        let (mut record, expected_revision) = next_record(current.as_ref(), &name);
        record.unpublished = None;
        if binding.is_some() {
            record.repository = binding;
        }
        for tag in &valid.tags {
            record.dist_tags.insert(tag.clone(), version.clone());
        }
        record
            .dist_tags
            .entry(DistTag::latest())
            .or_insert_with(|| version.clone());
        let version_record = VersionRecord {
            version: version.clone(),
            published: record.modified,
            state: VersionState::Live(Box::new(valid.live.clone())),
        };
        state
            .metadata
            .write(PackageWrite {
                package: record,
                expected_revision,
                create: Some((version_record, mode)),
                changes: vec![],
            })
            .await
            .map_err(RetryableError::from)
    })
    .await;

    match result {
        Ok(()) => {
            if let Some(VersionRecord {
                state: VersionState::Live(old),
                ..
            }) = previous
                && old.dist.tarball_key != key
            {
                remove_tarball_quietly(state, &old.dist.tarball_key).await;
            }
            tracing::info!(package = %name, %version, "published");
            Ok(json_response(
                StatusCode::CREATED,
                &json!({ "ok": true, "id": name.as_str(), "rev": version.to_string() }),
            ))
        }
        Err(err) => {
            // Lost a race (or the write failed): our bytes must not linger unless the winner's
            // record points at the very same key (identical content).
            // If that lookup fails too, the write may still have landed (a timeout after the
            // commit): keep the bytes, which `sweep` removes later if nothing refers to them.
            let winner = state.metadata.version(&name, &version).await;
            let referenced = matches!(&winner, Ok(Some(VersionRecord { state: VersionState::Live(l), .. })) if l.dist.tarball_key == key);
            if winner.is_ok() && !referenced {
                remove_tarball_quietly(state, &key).await;
            }
            match err {
                // The stored version is exactly these bytes: our own write landed although its
                // answer was lost (a storage retry then saw the version "exist"), or an identical
                // publish won the race. Either way the client's publish is done.
                ApiError::Conflict(_) if referenced => {
                    tracing::info!(package = %name, %version, "published (confirmed after a lost answer)");
                    Ok(json_response(
                        StatusCode::CREATED,
                        &json!({ "ok": true, "id": name.as_str(), "rev": version.to_string() }),
                    ))
                }
                ApiError::Conflict(_)
                    if matches!(
                        &winner,
                        Ok(Some(VersionRecord {
                            state: VersionState::Live(_),
                            ..
                        }))
                    ) =>
                {
                    Err(conflict(&name, &version))
                }
                other => Err(other),
            }
        }
    }
}

/// The repository package.json names (GitHub mode), which must belong to the scope's owner.
fn declared_repository(
    state: &AppState,
    name: &PackageName,
    declared: Option<&serde_json::Value>,
) -> Result<Option<RepoRef>, ApiError> {
    if state.auth.github().is_none() {
        return Ok(None);
    }
    let scope = name.scope().unwrap_or_default();
    let declared = match declared {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(v) => RepoRef::from_manifest(v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "package.json's repository ({v}) is not a GitHub repository"
            ))
        })?,
    };
    if !declared.owner.eq_ignore_ascii_case(scope) {
        return Err(ApiError::Forbidden(format!(
            "{name} cannot be published from repository {declared}: packages of @{scope} must live in a repository owned by {scope}"
        )));
    }
    Ok(Some(declared))
}

/// The repository the package is bound to now (GitHub mode; open mode binds nothing).
async fn bound_repository(
    state: &AppState,
    name: &PackageName,
) -> Result<Option<RepoRef>, ApiError> {
    if state.auth.github().is_none() {
        return Ok(None);
    }
    Ok(state
        .metadata
        .package(name)
        .await?
        .and_then(|p| p.repository))
}

/// GitHub mode: the repository the package will be bound to after this publish, once the caller
/// is known to have the permissions that takes, given the binding `bound` read from the store.
/// The first publish binds the repository named in package.json (its owner must be the scope);
/// later publishes use the binding, and naming another repository rebinds only for an admin of
/// the bound one. Open mode binds nothing.
async fn bind_repository(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    bound: Option<&RepoRef>,
    declared: Option<&RepoRef>,
) -> Result<Option<RepoRef>, ApiError> {
    if state.auth.github().is_none() {
        return Ok(None);
    }
    let scope = name.scope().unwrap_or_default();
    // A package bound to a repository the caller cannot see is somebody else's: say the name
    // is taken, never which repository holds it.
    let check_bound = |repo: RepoRef, action: Action| async move {
        match state.auth.check(&ctx.caller, name, &repo, action).await {
            Ok(access) => Ok(access.map_or(repo, |a| a.repo)),
            Err(AuthError::Hidden) => Err(name_taken(name)),
            Err(e) => Err(ApiError::from(e)),
        }
    };
    let check_declared = |repo: RepoRef| async move {
        match state
            .auth
            .check(&ctx.caller, name, &repo, Action::Publish)
            .await
        {
            Ok(access) => Ok(access.map_or(repo, |a| a.repo)),
            Err(AuthError::Hidden) => Err(ApiError::Forbidden(format!(
                "{} cannot publish {name} from repository {repo}: it does not exist or you have no access to it",
                ctx.caller.identity.username()
            ))),
            Err(e) => Err(ApiError::from(e)),
        }
    };
    match (bound, declared) {
        (None, None) => Err(ApiError::BadRequest(format!(
            "package.json must name the package's GitHub repository (\"repository\": \"github:{scope}/{}\"): it decides who may publish {name}",
            name.base_name()
        ))),
        (None, Some(declared)) => Ok(Some(check_declared(declared.clone()).await?)),
        (Some(bound), None) => Ok(Some(check_bound(bound.clone(), Action::Publish).await?)),
        (Some(bound), Some(declared)) if bound == declared => {
            Ok(Some(check_bound(bound.clone(), Action::Publish).await?))
        }
        (Some(bound), Some(declared)) => {
            match state
                .auth
                .check(&ctx.caller, name, bound, Action::Admin)
                .await
            {
                Ok(_) => {}
                Err(AuthError::Hidden) => return Err(name_taken(name)),
                Err(AuthError::Forbidden(m)) => {
                    return Err(ApiError::Forbidden(format!(
                        "{name} is bound to repository {bound}; publishing it from {declared} rebinds it, which needs admin on {bound}: {m}"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            Ok(Some(check_declared(declared.clone()).await?))
        }
    }
}

/// The refusal for publishing a name that belongs to a package the caller cannot see.
fn name_taken(name: &PackageName) -> ApiError {
    ApiError::Forbidden(format!(
        "you cannot publish {name}: the name is taken by a package you have no access to"
    ))
}

fn conflict(name: &PackageName, version: &Version) -> ApiError {
    ApiError::coded(
        super::error::ErrorCode::VersionExists,
        format!("cannot publish over the previously published version {version} of {name}"),
    )
}

async fn remove_tarball_quietly(state: &AppState, key: &crate::domain::TarballKey) {
    if let Err(e) = state.tarballs.delete(key).await {
        tracing::warn!(key = key.as_str(), error = %e, "could not remove an unreferenced tarball");
    }
}

fn check_rev(doc: &PackageDocument, rev: Option<&Revision>) -> Result<(), ApiError> {
    match rev {
        Some(rev) if rev.as_str() != doc.package.rev_string() => Err(ApiError::Conflict(format!(
            "revision {rev} is out of date (current is {}); fetch the package again and retry",
            doc.package.rev_string()
        ))),
        _ => Ok(()),
    }
}

/// The package's whole document, for a caller already authorised to read its record.
async fn load(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<PackageDocument, RetryableError> {
    match state.metadata.document(name).await? {
        Some(doc) if !doc.is_empty() => Ok(doc),
        _ => Err(state.missing(ctx, name).await.into()),
    }
}

/// The package record, once the caller is known to be allowed `action` on it. A caller who may
/// not read the package gets exactly what a missing name gets, before anything else is looked at.
async fn authorized_record(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    action: Action,
) -> Result<PackageRecord, ApiError> {
    let Some(record) = state.published_package(name).await? else {
        return Err(state.missing(ctx, name).await);
    };
    state.authorize(ctx, name, Some(&record), action).await?;
    Ok(record)
}

async fn update_metadata(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    rev: Option<&Revision>,
    doc: &MetadataUpdate,
) -> Result<Response, ApiError> {
    // Whether the caller may see the package at all is settled before it is loaded, its
    // revision compared or the document diffed: those answers would tell an outsider about it.
    authorized_record(state, ctx, name, Action::Read).await?;
    let removed = retry_on_conflict(|| async {
        let stored = load(state, ctx, name).await?;
        state
            .authorize(ctx, name, Some(&stored.package), Action::Read)
            .await?;
        check_rev(&stored, rev)?;
        let mut changes = publish::diff_metadata(&stored, doc)?;
        if rev.is_none() {
            // Without `/-rev/` (npm deprecate, star) the body is a copy read a moment ago, so a
            // version missing from it was published since, not removed: only npm unpublish, which
            // always sends `/-rev/`, may remove versions (and move dist-tags with them).
            changes.unpublish.clear();
            changes.dist_tags = None;
        }
        if changes.is_empty() {
            ctx.audit.unchanged();
            return Ok(Vec::new());
        }
        ctx.audit.set(audit_entries(&changes));
        let action = if !changes.unpublish.is_empty() {
            Action::Admin
        } else if !changes.deprecate.is_empty() || changes.dist_tags.is_some() {
            Action::Write
        } else {
            // Starring: anyone who can read may star or unstar, for themselves only.
            if let Some(stars) = &changes.stars
                && state.auth.github().is_some()
            {
                let crate::auth::Identity::User(me) = &ctx.caller.identity else {
                    return Err(ApiError::Unauthorized(
                        "authentication required to star a package".into(),
                    )
                    .into());
                };
                let others_changed = stars
                    .symmetric_difference(&stored.package.stars)
                    .any(|u| u != me);
                if others_changed {
                    return Err(ApiError::Forbidden(
                        "you can only star or unstar a package as yourself".into(),
                    )
                    .into());
                }
            }
            Action::Read
        };
        state
            .authorize(ctx, name, Some(&stored.package), action)
            .await?;
        let (mut record, expected_revision) = next_record(Some(&stored.package), name);
        let now = record.modified;
        let mut version_changes: Vec<VersionChange> = changes
            .deprecate
            .iter()
            .map(|(v, m)| VersionChange::Deprecate(v.clone(), m.clone()))
            .collect();
        version_changes.extend(
            changes
                .unpublish
                .iter()
                .map(|v| VersionChange::Unpublish(v.clone(), now)),
        );
        if let Some(tags) = changes.dist_tags {
            record.dist_tags = tags;
        }
        if record.dist_tags.is_empty() && !changes.unpublish.is_empty() {
            record.unpublished = Some(now);
        }
        if let Some(stars) = changes.stars {
            record.stars = stars;
        }
        state
            .metadata
            .write(PackageWrite {
                package: record,
                expected_revision,
                create: None,
                changes: version_changes,
            })
            .await?;
        Ok(keys_of(&stored, &changes.unpublish))
    })
    .await?;
    for key in &removed {
        remove_tarball_quietly(state, key).await;
    }
    Ok(ok())
}

/// One audit entry per version a metadata update changes (and one for stars).
fn audit_entries(changes: &publish::MetadataChanges) -> Vec<AuditEntry> {
    let mut entries: Vec<AuditEntry> = changes
        .unpublish
        .iter()
        .map(|v| AuditEntry::new(AuditAction::UnpublishVersion).version(v))
        .collect();
    entries.extend(changes.deprecate.iter().map(|(v, message)| {
        match message {
            Some(m) => AuditEntry::new(AuditAction::Deprecate)
                .version(v)
                .detail(m.as_str()),
            None => AuditEntry::new(AuditAction::Undeprecate).version(v),
        }
    }));
    if changes.stars.is_some() {
        entries.push(AuditEntry::new(AuditAction::Star));
    }
    entries
}

fn keys_of(doc: &PackageDocument, versions: &[Version]) -> Vec<crate::domain::TarballKey> {
    doc.versions
        .iter()
        .filter(|v| versions.contains(&v.version))
        .filter_map(|v| match &v.state {
            VersionState::Live(l) => Some(l.dist.tarball_key.clone()),
            VersionState::Unpublished { .. } => None,
        })
        .collect()
}

async fn unpublish_package(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    rev: &Revision,
) -> Result<Response, ApiError> {
    authorized_record(state, ctx, name, Action::Admin).await?;
    let removed = retry_on_conflict(|| async {
        let stored = load(state, ctx, name).await?;
        state
            .authorize(ctx, name, Some(&stored.package), Action::Admin)
            .await?;
        check_rev(&stored, Some(rev))?;
        let (mut record, expected_revision) = next_record(Some(&stored.package), name);
        let now = record.modified;
        let live: Vec<Version> = stored
            .live()
            .into_iter()
            .map(|(v, _, _)| v.clone())
            .collect();
        record.dist_tags.clear();
        record.unpublished = Some(now);
        let listed: Vec<String> = live.iter().map(Version::to_string).collect();
        ctx.audit.set(vec![
            AuditEntry::new(AuditAction::UnpublishPackage)
                .detail(format!("versions {}", listed.join(", "))),
        ]);
        let changes = live
            .iter()
            .map(|v| VersionChange::Unpublish(v.clone(), now))
            .collect();
        state
            .metadata
            .write(PackageWrite {
                package: record,
                expected_revision,
                create: None,
                changes,
            })
            .await?;
        Ok(keys_of(&stored, &live))
    })
    .await?;
    for key in &removed {
        remove_tarball_quietly(state, key).await;
    }
    tracing::info!(package = %name, "unpublished every version");
    Ok(ok())
}

/// The tarball of an unpublished version was already removed with it; npm still asks.
async fn delete_tarball(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    file: &TarballFile,
) -> Result<Response, ApiError> {
    let Some(package) = state.metadata.package(name).await? else {
        return Err(state.missing(ctx, name).await);
    };
    state
        .authorize(ctx, name, Some(&package), Action::Admin)
        .await?;
    let version = file
        .version()
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("'{file}' is not a tarball of {name}")))?;
    match state.metadata.version(name, &version).await? {
        Some(VersionRecord {
            state: VersionState::Live(_),
            ..
        }) => Err(ApiError::Conflict(format!(
            "{name}@{version} is still published; unpublish the version before deleting its tarball"
        ))),
        Some(_) => Ok(ok()),
        None => Err(ApiError::NotFound(format!(
            "version {version} of {name} not found"
        ))),
    }
}

/// The version a dist-tag PUT names: npm sends a JSON string, some tools plain text.
fn tag_target(body: &[u8]) -> Result<Version, ApiError> {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(_) => {
            return Err(ApiError::BadRequest(
                "dist-tag body must be a version string such as \"1.2.3\"".into(),
            ));
        }
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    Version::parse(&text)
        .map_err(|e| ApiError::BadRequest(format!("invalid version '{text}': {e}")))
}

/// Changes only the package record (dist-tags): read it, authorise `Write`, check that `live`
/// (if any) is a live version, let `change` edit the next record (or refuse), write conditioned
/// on the revision read, retry on conflicts. The version is read after the record, so one
/// unpublished in between changed the revision and the write retries: never the whole document.
async fn change_package_record(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    live: Option<&Version>,
    change: impl Fn(&mut PackageRecord) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    retry_on_conflict(|| async {
        let stored = authorized_record(state, ctx, name, Action::Write).await?;
        if let Some(version) = live {
            let record = state.metadata.version(name, version).await?;
            if !matches!(record.map(|r| r.state), Some(VersionState::Live(_))) {
                return Err(
                    ApiError::NotFound(format!("version {version} of {name} not found")).into(),
                );
            }
        }
        let (mut record, expected_revision) = next_record(Some(&stored), name);
        change(&mut record)?;
        state
            .metadata
            .write(PackageWrite {
                package: record,
                expected_revision,
                create: None,
                changes: vec![],
            })
            .await?;
        Ok(())
    })
    .await?;
    Ok(ok())
}

async fn set_dist_tag(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    tag: DistTag,
    body: &[u8],
) -> Result<Response, ApiError> {
    let version = tag_target(body)?;
    ctx.audit.set(vec![
        AuditEntry::new(AuditAction::DistTagSet)
            .version(&version)
            .tag(tag.as_str()),
    ]);
    change_package_record(state, ctx, name, Some(&version), |record| {
        record.dist_tags.insert(tag.clone(), version.clone());
        Ok(())
    })
    .await
}

async fn delete_dist_tag(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    tag: DistTag,
) -> Result<Response, ApiError> {
    if tag == DistTag::latest() {
        return Err(ApiError::BadRequest(
            "the 'latest' dist-tag cannot be removed; point it at another version instead".into(),
        ));
    }
    change_package_record(state, ctx, name, None, |record| {
        if record.dist_tags.remove(&tag).is_none() {
            return Err(ApiError::NotFound(format!(
                "dist-tag '{tag}' not found for {name}"
            )));
        }
        Ok(())
    })
    .await
}
