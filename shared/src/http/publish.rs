//! Publish route group: publish, metadata updates (deprecate, star, unpublish of one version),
//! unpublish of a whole package, tarball removal and dist-tag writes.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use semver::Version;
use serde_json::json;

use super::tarball::version_from_file;
use super::{
    ApiError, AppState, RequestContext, RetryableError, Route, json_response, parse_json,
    read_body, retry_on_conflict,
};
use crate::auth::Action;
use crate::domain::publish::{self, PublishDocument, ValidPublish};
use crate::domain::{
    DistTag, PackageDocument, PackageName, PackageRecord, RepoRef, VersionRecord, VersionState,
};
use crate::storage::{CreateMode, PackageWrite, StoreError, VersionChange};

/// Handles a publish-group route.
pub async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    route: Route,
    body: Body,
) -> Result<Response, ApiError> {
    match route {
        Route::PutPackage(name, rev) => {
            // The body is dropped once parsed: a publish would otherwise hold its tarball's
            // base64 twice while it is validated and stored.
            let doc: PublishDocument = {
                let body = read_body(state, body, &ctx.headers).await?;
                match parse_json::<serde_json::Value>(&body)? {
                    v @ serde_json::Value::Object(_) => serde_json::from_value(v).map_err(|e| {
                        ApiError::BadRequest(format!(
                            "request body is not a valid package document: {e}"
                        ))
                    })?,
                    _ => {
                        return Err(ApiError::BadRequest(
                            "request body must be a JSON object".into(),
                        ));
                    }
                }
            };
            if doc.is_publish() {
                publish_version(state, ctx, &name, doc).await
            } else {
                update_metadata(state, ctx, &name, rev.as_deref(), doc).await
            }
        }
        Route::DeletePackage(name, rev) => unpublish_package(state, ctx, &name, &rev).await,
        Route::DeleteTarball(name, file, _rev) => delete_tarball(state, ctx, &name, &file).await,
        Route::DistTagSet(name, tag) => {
            let body = read_body(state, body, &ctx.headers).await?;
            set_dist_tag(state, ctx, &name, &tag, &body).await
        }
        Route::DistTagDelete(name, tag) => delete_dist_tag(state, ctx, &name, &tag).await,
        _ => Err(ApiError::NotFound("not found".into())),
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
    doc: PublishDocument,
) -> Result<Response, ApiError> {
    let name = PackageName::parse_new(url_name.as_str())
        .map_err(|e| ApiError::BadRequest(format!("invalid package name '{url_name}': {e}")))?;
    if let Some(scope) = name.scope()
        && !state.config.serves_scope(scope)
    {
        return Err(ApiError::Forbidden(format!(
            "scope @{scope} is not served by this registry"
        )));
    }
    state.auth.serves(&name).map_err(ApiError::Forbidden)?;
    let limits = state.tarball_limits;
    let checked_name = name.clone();
    // Decoding, hashing and unpacking are CPU work; keep them off the async workers.
    let valid: ValidPublish =
        tokio::task::spawn_blocking(move || publish::validate_publish(&checked_name, doc, limits))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    let version = valid.version.clone();
    let declared_repository = valid
        .live
        .manifest
        .field("repository")
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let binding = bind_repository(state, ctx, &name, declared_repository).await?;
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
        let (mut record, expected_revision) = next_record(current.as_ref(), &name);
        record.unpublished = None;
        if binding.is_some() {
            record.repository = binding.clone();
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

/// GitHub mode: the repository the package will be bound to after this publish, once the caller
/// is known to have the permissions that takes. The first publish binds the repository named in
/// package.json (its owner must be the scope); later publishes use the binding, and naming another
/// repository rebinds only for an admin of the bound one. Open mode binds nothing.
async fn bind_repository(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    declared_repository: Option<serde_json::Value>,
) -> Result<Option<RepoRef>, ApiError> {
    if state.auth.github().is_none() {
        return Ok(None);
    }
    let scope = name.scope().unwrap_or_default();
    let declared = match &declared_repository {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(RepoRef::from_manifest(v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "package.json's repository ({v}) is not a GitHub repository"
            ))
        })?),
    };
    if let Some(d) = &declared
        && !d.owner.eq_ignore_ascii_case(scope)
    {
        return Err(ApiError::Forbidden(format!(
            "{name} cannot be published from repository {d}: packages of @{scope} must live in a repository owned by {scope}"
        )));
    }
    let bound = state
        .metadata
        .package(name)
        .await?
        .and_then(|p| p.repository);
    let check = |repo: RepoRef, action: Action| async move {
        let access = state.auth.check(&ctx.caller, name, &repo, action).await?;
        Ok::<RepoRef, ApiError>(access.map_or(repo, |a| a.repo))
    };
    match (bound, declared) {
        (None, None) => Err(ApiError::BadRequest(format!(
            "package.json must name the package's GitHub repository (\"repository\": \"github:{scope}/{}\"): it decides who may publish {name}",
            name.base_name()
        ))),
        (None, Some(declared)) => Ok(Some(check(declared, Action::Write).await?)),
        (Some(bound), None) => Ok(Some(check(bound, Action::Write).await?)),
        (Some(bound), Some(declared)) if bound == declared => {
            Ok(Some(check(bound, Action::Write).await?))
        }
        (Some(bound), Some(declared)) => {
            check(bound.clone(), Action::Admin).await.map_err(|e| match e {
                ApiError::Forbidden(m) => ApiError::Forbidden(format!(
                    "{name} is bound to repository {bound}; publishing it from {declared} rebinds it, which needs admin on {bound}: {m}"
                )),
                other => other,
            })?;
            Ok(Some(check(declared, Action::Write).await?))
        }
    }
}

fn conflict(name: &PackageName, version: &Version) -> ApiError {
    ApiError::Conflict(format!(
        "cannot publish over the previously published version {version} of {name}"
    ))
}

async fn remove_tarball_quietly(state: &AppState, key: &crate::domain::TarballKey) {
    if let Err(e) = state.tarballs.delete(key).await {
        tracing::warn!(key = key.as_str(), error = %e, "could not remove an unreferenced tarball");
    }
}

fn check_rev(doc: &PackageDocument, rev: Option<&str>) -> Result<(), ApiError> {
    match rev {
        Some(rev) if rev != doc.package.rev_string() => Err(ApiError::Conflict(format!(
            "revision {rev} is out of date (current is {}); fetch the package again and retry",
            doc.package.rev_string()
        ))),
        _ => Ok(()),
    }
}

async fn load(state: &AppState, name: &PackageName) -> Result<PackageDocument, RetryableError> {
    match state.metadata.document(name).await? {
        Some(doc) if !doc.is_empty() => Ok(doc),
        _ => Err(ApiError::package_not_found(name).into()),
    }
}

async fn update_metadata(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    rev: Option<&str>,
    doc: PublishDocument,
) -> Result<Response, ApiError> {
    let doc = &doc;
    let removed = retry_on_conflict(|| async {
        let stored = load(state, name).await?;
        check_rev(&stored, rev)?;
        let mut changes = publish::diff_metadata(name, &stored, clone_doc(doc))?;
        if rev.is_none() {
            // Without `/-rev/` (npm deprecate, star) the body is a copy read a moment ago, so a
            // version missing from it was published since, not removed: only npm unpublish, which
            // always sends `/-rev/`, may remove versions (and move dist-tags with them).
            changes.unpublish.clear();
            changes.dist_tags = None;
        }
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let action = if !changes.unpublish.is_empty() {
            Action::Admin
        } else if !changes.deprecate.is_empty() || changes.dist_tags.is_some() {
            Action::Write
        } else {
            // Starring: anyone who can read may star or unstar, for themselves only.
            if let Some(stars) = &changes.stars
                && state.auth.github().is_some()
            {
                let me = ctx.caller.identity.username();
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

/// `PublishDocument` holds only owned JSON; re-reading it per retry is simplest done by cloning.
fn clone_doc(doc: &PublishDocument) -> PublishDocument {
    PublishDocument {
        id: doc.id.clone(),
        name: doc.name.clone(),
        dist_tags: doc.dist_tags.clone(),
        versions: doc.versions.clone(),
        attachments: doc.attachments.clone(),
        readme: doc.readme.clone(),
        users: doc.users.clone(),
        rev: doc.rev.clone(),
    }
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
    rev: &str,
) -> Result<Response, ApiError> {
    let removed = retry_on_conflict(|| async {
        let stored = load(state, name).await?;
        check_rev(&stored, Some(rev))?;
        state
            .authorize(ctx, name, Some(&stored.package), Action::Admin)
            .await?;
        let (mut record, expected_revision) = next_record(Some(&stored.package), name);
        let now = record.modified;
        let live: Vec<Version> = stored
            .live()
            .into_iter()
            .map(|(v, _, _)| v.clone())
            .collect();
        record.dist_tags.clear();
        record.unpublished = Some(now);
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
    file: &str,
) -> Result<Response, ApiError> {
    let version = version_from_file(name, file)
        .ok_or_else(|| ApiError::NotFound(format!("'{file}' is not a tarball of {name}")))?;
    let package = state.metadata.package(name).await?;
    state
        .authorize(ctx, name, package.as_ref(), Action::Admin)
        .await?;
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
        let Some(stored) = state.published_package(name).await? else {
            return Err(ApiError::package_not_found(name).into());
        };
        state
            .authorize(ctx, name, Some(&stored), Action::Write)
            .await?;
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
    tag: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let tag =
        DistTag::parse(tag).map_err(|e| ApiError::BadRequest(format!("invalid dist-tag: {e}")))?;
    let version = tag_target(body)?;
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
    tag: &str,
) -> Result<Response, ApiError> {
    let tag =
        DistTag::parse(tag).map_err(|e| ApiError::BadRequest(format!("invalid dist-tag: {e}")))?;
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
