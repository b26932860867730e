//! Publish route group: publish, metadata updates (deprecate, star, unpublish of one version),
//! unpublish of a whole package, tarball removal, dist-tag writes and trust configurations
//! (`npm trust`, in `trust`: making one may bind a name, a package write).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use semver::Version;
use serde_json::json;

use super::audit::AuditEntry;
use super::routes::{PublishRoute, Revision, TarballFile};
use super::{ApiError, AppState, Refusal, RequestContext, json_response, read_body};
use crate::auth::{Action, AuthError};
use crate::domain::audit::AuditAction;
use crate::domain::publish::{self, MetadataUpdate, PendingPublish, PutDocument, ValidPublish};
use crate::domain::{
    DistTag, PackageDocument, PackageName, PackageRecord, RepoRef, VersionRecord, VersionState,
};
use crate::storage::VersionChange;
use crate::writes::publish::{Binding, BindingChange};
use crate::writes::{Decision, Draft};

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
                PutDocument::Update(update) if rev.is_none() && update.is_empty_document() => {
                    create_empty_package(state, ctx, &name).await
                }
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
        PublishRoute::UploadTarball { name, file } => {
            Box::pin(upload_tarball(state, ctx, &name, &file, body)).await
        }
        PublishRoute::Release { name, version, tag } => {
            Box::pin(release(state, ctx, &name, version, tag, body)).await
        }
        PublishRoute::OriginGet { name } => super::upstream::origin(state, ctx, &name, None).await,
        PublishRoute::OriginSet { name } => {
            super::upstream::origin(state, ctx, &name, Some(body)).await
        }
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

/// Publish: parse → authorise (the binding decides who may publish) → verify the tarball →
/// commit through the package writer → answer.
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
    super::upstream::check_publish_origin(state, &name).await?;
    ctx.audit.set(vec![
        AuditEntry::new(AuditAction::Publish).version(&pending.version),
    ]);
    // Authorise before any work on the tarball: the binding as read now decides who may
    // publish, and the write only lands while that binding is still the stored one.
    let declared = declared_repository(state, &name, pending.declared_repository())?;
    let checked = bound_repository(state, &name).await?;
    let decided = bind_repository(state, ctx, &name, checked.as_ref(), declared.as_ref()).await?;
    let mut valid = verify(state, &name, pending).await?;
    // Signed before it is stored: a version is visible only with its signature.
    if let Some(signing) = &state.signing {
        let signature = signing
            .sign_version(
                name.as_str(),
                &valid.version.to_string(),
                &valid.live.dist.integrity,
            )
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        valid.live.dist.signatures = vec![signature];
    }
    if let Some(provenance) = &valid.provenance {
        check_provenance_source(&name, &provenance.provenance, decided.as_ref())?;
        keep_provenance(state, &name, &valid.version, &provenance.bundle).await?;
    }
    let version = valid.version.clone();
    let binding = Binding { checked, decided };
    let published = state
        .writer()
        .publish(&name, &valid, &binding, |bound_now| {
            let (name, declared) = (&name, declared.as_ref());
            async move { bind_repository(state, ctx, name, bound_now.as_ref(), declared).await }
        })
        .await?;
    ctx.audit.set(publish_audit(&version, &published.binding));
    if published.confirmed_after_conflict {
        tracing::info!(package = %name, %version, "published (confirmed after a lost answer)");
    } else {
        tracing::info!(package = %name, %version, "published");
    }
    // CouchDB's answer names the document's new revision, which a client of that era sends
    // back with its next write (`/-rev/REV`).
    let package = state.metadata.package(&name).await?;
    if let Some(package) = &package {
        super::metadata::refresh_after_write(state, &ctx.base_url, package).await;
    }
    let rev = package.map_or_else(|| version.to_string(), |p| p.rev_string());
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "ok": true, "id": name.as_str(), "rev": rev }),
    ))
}

/// npm 1.3's first step of a publish (`PUT /NAME` with an empty document): creates the package
/// with no versions (201 with its `rev`), or answers 409 as CouchDB did for an existing one, so
/// the client goes on to upload and release. Authorised as a first publish of the name.
async fn create_empty_package(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<Response, ApiError> {
    state
        .scopes
        .stores(name)
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    super::upstream::check_publish_origin(state, name).await?;
    state
        .writer()
        .update(|| async {
            let current = state.metadata.package(name).await?;
            state
                .authorize(ctx, name, current.as_ref(), Action::Publish)
                .await?;
            if current.as_ref().is_some_and(|p| p.unpublished.is_none()) {
                return Err(Refusal::Refused(ApiError::Conflict(
                    "Document update conflict.".into(),
                )));
            }
            let mut draft = Draft::after(current.as_ref(), name);
            draft.record.unpublished = None;
            draft.record.created_empty = true;
            Ok(Decision::Write(draft, ()))
        })
        .await?;
    let rev = state
        .metadata
        .package(name)
        .await?
        .map(|p| p.rev_string())
        .unwrap_or_default();
    tracing::info!(package = %name, "created an empty package (npm 1.x)");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "ok": true, "id": name.as_str(), "rev": rev }),
    ))
}

/// Where npm 1.x's uploads wait for their release: one namespace per package, by version.
fn upload_namespace(name: &PackageName) -> String {
    format!("pending-upload/{name}")
}

/// How long an upload waits for its release (then the record expires and `sweep`, whose
/// default age is a day, removes the bytes).
const UPLOAD_LIFETIME_HOURS: i64 = 24;

/// An upload waiting for its release.
#[derive(serde::Serialize, serde::Deserialize)]
struct Upload {
    key: String,
    shasum: String,
    integrity: String,
    length: u64,
}

/// `PUT /NAME/-/FILE.tgz/-rev/REV`: npm 1.x's upload of a version's tarball before its
/// release. Stored content-addressed under the key the version will have, never visible as a
/// version on its own. Authorised (push on the package) before a byte is read.
async fn upload_tarball(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    file: &TarballFile,
    body: Body,
) -> Result<Response, ApiError> {
    let kv = state.kv.as_ref().ok_or_else(|| {
        ApiError::NotFound("uploads are not kept by this registry's configuration".into())
    })?;
    let stored = authorized_record(state, ctx, name, Action::Publish).await?;
    let version = file
        .version()
        .cloned()
        .or_else(|| {
            // npm 1.x names a scoped package's file after its whole name.
            file.as_str()
                .strip_prefix(name.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|rest| rest.strip_suffix(".tgz"))
                .and_then(|v| publish::parse_version(v).ok())
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "'{file}' is not a tarball file name of {name} (NAME-VERSION.tgz)"
            ))
        })?;
    let body = read_body(state, body, ctx).await?;
    let bytes = bytes::Bytes::copy_from_slice(body.bytes());
    drop(body);
    if bytes.is_empty() {
        return Err(ApiError::BadRequest("the uploaded tarball is empty".into()));
    }
    let digests = crate::domain::integrity::Digests::of(&bytes);
    let key = crate::domain::TarballKey::new(name, &version, &digests.sha512_hex);
    let length = bytes.len() as u64;
    state.tarballs.put(&key, bytes).await?;
    let upload = Upload {
        key: key.as_str().to_string(),
        shasum: digests.sha1_hex,
        integrity: digests.integrity,
        length,
    };
    let value = serde_json::to_vec(&upload).map_err(|e| ApiError::Internal(e.to_string()))?;
    let expires = chrono::Utc::now() + chrono::Duration::hours(UPLOAD_LIFETIME_HOURS);
    kv.put(
        &upload_namespace(name),
        &version.to_string(),
        &value,
        Some(expires),
    )
    .await?;
    // Waiting for its release now, kept by the sweep's age cutoff (a day by default) alone.
    state.tarballs.stored_for_later(&key).await;
    ctx.audit.unchanged();
    tracing::info!(package = %name, %version, bytes = length, "tarball uploaded for a release (npm 1.x)");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "ok": true, "id": name.as_str(), "rev": stored.rev_string() }),
    ))
}

/// `PUT /NAME/VERSION[/-tag/TAG]`: npm 1.x creates the version from its manifest (`dist`
/// included) and the tarball it uploaded before: the manifest must name this package and
/// version and its `dist.shasum` (and `dist.integrity`, when given) the uploaded bytes. Then
/// it is a publish like any other, under every rule of one.
async fn release(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    version: Version,
    tag: Option<DistTag>,
    body: Body,
) -> Result<Response, ApiError> {
    let kv = state.kv.as_ref().ok_or_else(|| {
        ApiError::NotFound("uploads are not kept by this registry's configuration".into())
    })?;
    authorized_record(state, ctx, name, Action::Publish).await?;
    let body = read_body(state, body, ctx).await?;
    let mut manifest: serde_json::Map<String, serde_json::Value> =
        super::body::parse_json(body.bytes())?;
    drop(body);
    if manifest.get("name").and_then(|v| v.as_str()) != Some(name.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "the manifest's name must be {name}, as in the URL"
        )));
    }
    if manifest.get("version").and_then(|v| v.as_str()) != Some(&version.to_string()) {
        return Err(ApiError::BadRequest(format!(
            "the manifest's version must be {version}, as in the URL"
        )));
    }
    if state.metadata.version(name, &version).await?.is_some() {
        return Err(ApiError::coded(
            super::error::ErrorCode::VersionExists,
            format!("cannot publish over the previously published version {version} of {name}"),
        ));
    }
    let file = name.tarball_file_name(&version);
    let upload: Upload = kv
        .get(&upload_namespace(name), &version.to_string())
        .await?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "no tarball was uploaded for {name}@{version}: PUT /{name}/-/{file}/-rev/REV first"
            ))
        })?;
    let dist = manifest
        .get("dist")
        .and_then(|d| d.as_object())
        .cloned()
        .unwrap_or_default();
    if dist.get("shasum").and_then(|v| v.as_str()) != Some(upload.shasum.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "dist.shasum of {name}@{version} does not match the uploaded tarball ({})",
            upload.shasum
        )));
    }
    if let Some(integrity) = dist.get("integrity").and_then(|v| v.as_str())
        && integrity != upload.integrity
    {
        return Err(ApiError::BadRequest(format!(
            "dist.integrity of {name}@{version} does not match the uploaded tarball"
        )));
    }
    let key = crate::domain::TarballKey::parse(&upload.key)
        .map(|(key, _, _)| key)
        .ok_or_else(|| ApiError::Internal(format!("bad upload key {}", upload.key)))?;
    let bytes = state.tarballs.read(&key).await?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "the tarball uploaded for {name}@{version} is no longer stored; upload it again"
        ))
    })?;
    manifest.insert(
        "dist".into(),
        json!({ "shasum": upload.shasum, "integrity": upload.integrity }),
    );
    let doc = {
        use base64::Engine;
        json!({
            "_id": name.as_str(),
            "name": name.as_str(),
            "dist-tags": { tag.as_ref().map_or("latest", DistTag::as_str): version.to_string() },
            "versions": { version.to_string(): manifest },
            // npm names the attachment after the whole name (`@scope/name-1.0.0.tgz`).
            "_attachments": { format!("{name}-{version}.tgz"): {
                "content_type": "application/octet-stream",
                "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
                "length": bytes.len(),
            }},
        })
    };
    drop(bytes);
    let doc = serde_json::to_vec(&doc).map_err(|e| ApiError::Internal(e.to_string()))?;
    let PutDocument::Publish(pending) = publish::parse_put(name, bytes::Bytes::from(doc))? else {
        return Err(ApiError::Internal("a release document is a publish".into()));
    };
    let pending = if tag.is_some() {
        pending
    } else {
        pending.untagged()
    };
    let answer = publish_version(state, ctx, name, pending).await?;
    if let Err(e) = kv
        .delete(&upload_namespace(name), &version.to_string())
        .await
    {
        tracing::warn!(package = %name, %version, error = %e, "could not forget a released upload");
    }
    Ok(answer)
}

/// Decodes, hashes and unpacks the tarball: CPU work, kept off the async workers.
async fn verify(
    state: &AppState,
    name: &PackageName,
    pending: PendingPublish,
) -> Result<ValidPublish, ApiError> {
    let limits = state.tarball_limits;
    let name = name.clone();
    let root = state.sigstore_root.clone();
    Ok(tokio::task::spawn_blocking(move || match root {
        Some(root) => pending.verify_with_root(&name, limits, &root),
        None => pending.verify(&name, limits),
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??)
}

/// In GitHub mode a provenance bundle must say the package was built from the repository it is
/// bound to (compared as GitHub compares names: without regard to case).
fn check_provenance_source(
    name: &PackageName,
    provenance: &crate::domain::provenance::Provenance,
    bound: Option<&RepoRef>,
) -> Result<(), ApiError> {
    let Some(bound) = bound else {
        return Ok(());
    };
    match provenance.github_repository() {
        Some(built) if built == *bound => Ok(()),
        built => Err(ApiError::coded(
            super::error::ErrorCode::ProvenanceRefused,
            format!(
                "provenance refused: {name} is bound to {bound}, but its provenance says it was built from {}",
                built.map_or_else(
                    || provenance
                        .source_repository_uri
                        .clone()
                        .unwrap_or_else(|| "no GitHub repository".into()),
                    |r| r.to_string()
                )
            ),
        )),
    }
}

/// The key-value namespace of a package's provenance bundles, one per version.
pub(crate) fn attestation_namespace(name: &PackageName) -> String {
    format!("attestations/{name}")
}

/// Keeps the verified bundle before the version is written, so a version that shows
/// `dist.attestations` always has its bundle (a bundle whose publish then fails is replaced by
/// the next publish of that version, or never read).
async fn keep_provenance(
    state: &AppState,
    name: &PackageName,
    version: &semver::Version,
    bundle: &str,
) -> Result<(), ApiError> {
    let kv = state.kv.as_ref().ok_or_else(|| {
        ApiError::BadRequest("this registry's configuration keeps no provenance".into())
    })?;
    kv.put(
        &attestation_namespace(name),
        &version.to_string(),
        bundle.as_bytes(),
        None,
    )
    .await?;
    Ok(())
}

/// The audit entries of a publish: the publish, and a rebinding when it made one.
fn publish_audit(version: &Version, binding: &BindingChange) -> Vec<AuditEntry> {
    let publish = AuditEntry::new(AuditAction::Publish).version(version);
    match binding {
        BindingChange::Unchanged => vec![publish],
        BindingChange::Bound(to) => vec![publish.detail(format!("bound to repository {to}"))],
        BindingChange::Rebound { from, to } => vec![
            publish,
            AuditEntry::new(AuditAction::Rebind)
                .version(version)
                .detail(format!("repository {from} -> {to}")),
        ],
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
///
/// What the caller is told never depends on whether a package they cannot see holds the name:
/// the repository they name is judged first (the same refusal whether or not the name is taken),
/// and without one a hidden package's name answers as a free name does. Only a caller who may
/// publish from a repository of the scope's owner hears that a name is taken.
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
    let declared = match declared {
        Some(repo) => Some(check_declared(state, ctx, name, repo).await?),
        None => None,
    };
    let Some(bound) = bound else {
        return declared.map(Some).ok_or_else(|| repository_required(name));
    };
    let action = match &declared {
        Some(declared) if declared != bound => Action::Admin,
        _ => Action::Publish,
    };
    let access = match state.auth.check(&ctx.caller, name, bound, action).await {
        Ok(access) => access,
        // A package bound to a repository the caller cannot see is somebody else's. Without a
        // repository of their own named, the caller hears what a free name answers.
        Err(AuthError::Hidden) if declared.is_none() => return Err(repository_required(name)),
        Err(AuthError::Hidden) => return Err(name_taken(name)),
        Err(AuthError::Forbidden(m)) if action == Action::Admin => {
            let declared = declared.as_ref().unwrap_or(bound);
            return Err(ApiError::Forbidden(format!(
                "{name} is bound to repository {bound}; publishing it from {declared} rebinds it, which needs admin on {bound}: {m}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Some(match declared {
        Some(declared) => declared,
        None => access.map_or_else(|| bound.clone(), |a| a.repo),
    }))
}

/// The repository package.json names, once the caller may publish from it (its canonical name).
async fn check_declared(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    repo: &RepoRef,
) -> Result<RepoRef, ApiError> {
    match state
        .auth
        .check(&ctx.caller, name, repo, Action::Publish)
        .await
    {
        Ok(access) => Ok(access.map_or_else(|| repo.clone(), |a| a.repo)),
        Err(AuthError::Hidden) => Err(ApiError::Forbidden(format!(
            "{} cannot publish {name} from repository {repo}: it does not exist or you have no access to it",
            ctx.caller.identity.username()
        ))),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// The refusal for a first publish whose package.json names no repository.
fn repository_required(name: &PackageName) -> ApiError {
    let scope = name.scope().unwrap_or_default();
    ApiError::BadRequest(format!(
        "package.json must name the package's GitHub repository (\"repository\": \"github:{scope}/{}\"): it decides who may publish {name}",
        name.base_name()
    ))
}

/// The refusal for publishing a name that belongs to a package the caller cannot see.
fn name_taken(name: &PackageName) -> ApiError {
    ApiError::Forbidden(format!(
        "you cannot publish {name}: the name is taken by a package you have no access to"
    ))
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
) -> Result<PackageDocument, Refusal> {
    match state.metadata.document(name).await? {
        Some(doc) if !doc.is_empty() => Ok(doc),
        _ => Err(state.missing(ctx, name).await.into()),
    }
}

/// The package record, once the caller is known to be allowed `action` on it. A caller who may
/// not read the package gets exactly what a missing name gets, before anything else is looked at.
pub(super) async fn authorized_record(
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
    let writer = state.writer();
    // The stars before and after the attempt that committed, for the index by user.
    let starred: std::sync::Mutex<
        Option<(
            std::collections::BTreeSet<String>,
            std::collections::BTreeSet<String>,
        )>,
    > = std::sync::Mutex::new(None);
    let removed = writer
        .update(|| async {
            let stored = load(state, ctx, name).await?;
            state
                .authorize(ctx, name, Some(&stored.package), Action::Read)
                .await?;
            check_rev(&stored, rev)?;
            let mut changes = publish::diff_metadata(&stored, doc)?;
            if rev.is_none() {
                // Without `/-rev/` (npm deprecate, star) the body is a copy read a moment ago, so
                // a version missing from it was published since, not removed: only npm
                // unpublish, which always sends `/-rev/`, may remove versions (and move
                // dist-tags with them).
                changes.unpublish.clear();
                changes.dist_tags = None;
            }
            if changes.is_empty() {
                ctx.audit.unchanged();
                return Ok(Decision::Keep(Vec::new()));
            }
            ctx.audit.set(audit_entries(&changes));
            let action = update_action(state, ctx, &stored, &changes)?;
            state
                .authorize(ctx, name, Some(&stored.package), action)
                .await?;
            let mut draft = Draft::after(Some(&stored.package), name);
            let now = draft.now();
            for (version, message) in &changes.deprecate {
                draft.change_version(VersionChange::Deprecate(version.clone(), message.clone()));
            }
            for version in &changes.unpublish {
                draft.change_version(VersionChange::Unpublish(version.clone(), now));
            }
            if let Some(tags) = changes.dist_tags {
                draft.record.dist_tags = tags;
            }
            if draft.record.dist_tags.is_empty() && !changes.unpublish.is_empty() {
                draft.record.unpublished = Some(now);
            }
            if let Some(stars) = changes.stars {
                if let Ok(mut starred) = starred.lock() {
                    *starred = Some((stored.package.stars.clone(), stars.clone()));
                }
                draft.record.stars = stars;
            }
            Ok(Decision::Write(draft, keys_of(&stored, &changes.unpublish)))
        })
        .await?;
    writer.remove_tarballs(&removed).await;
    refresh_renderings(state, ctx, name).await;
    let starred = starred.into_inner().ok().flatten();
    if let Some((before, after)) = starred {
        super::stars::record_change(state, name, &before, &after).await;
    }
    Ok(ok())
}

/// Brings the renderings kept of `name` up to the write just made (`metadata::refresh_after_write`),
/// with the record that write committed (nothing is read).
async fn refresh_renderings(state: &AppState, ctx: &RequestContext, name: &PackageName) {
    if let Some(package) = state.views.committed(name) {
        super::metadata::refresh_after_write(state, &ctx.base_url, &package).await;
    }
}

/// What a metadata update needs the caller to be allowed: removing versions is an admin's,
/// deprecating and moving tags a writer's; starring needs only reading, for oneself.
fn update_action(
    state: &AppState,
    ctx: &RequestContext,
    stored: &PackageDocument,
    changes: &publish::MetadataChanges,
) -> Result<Action, ApiError> {
    if !changes.unpublish.is_empty() {
        return Ok(Action::Admin);
    }
    if !changes.deprecate.is_empty() || changes.dist_tags.is_some() {
        return Ok(Action::Write);
    }
    if let Some(stars) = &changes.stars
        && state.auth.github().is_some()
    {
        let crate::auth::Identity::User(me) = &ctx.caller.identity else {
            return Err(ApiError::Unauthorized(
                "authentication required to star a package".into(),
            ));
        };
        let others_changed = stars
            .symmetric_difference(&stored.package.stars)
            .any(|u| u != me);
        if others_changed {
            return Err(ApiError::Forbidden(
                "you can only star or unstar a package as yourself".into(),
            ));
        }
    }
    Ok(Action::Read)
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
    let writer = state.writer();
    let removed = writer
        .update(|| async {
            let stored = load(state, ctx, name).await?;
            state
                .authorize(ctx, name, Some(&stored.package), Action::Admin)
                .await?;
            check_rev(&stored, Some(rev))?;
            let mut draft = Draft::after(Some(&stored.package), name);
            let now = draft.now();
            let live: Vec<Version> = stored
                .live()
                .into_iter()
                .map(|(v, _, _)| v.clone())
                .collect();
            draft.record.dist_tags.clear();
            draft.record.unpublished = Some(now);
            let listed: Vec<String> = live.iter().map(Version::to_string).collect();
            ctx.audit.set(vec![
                AuditEntry::new(AuditAction::UnpublishPackage)
                    .detail(format!("versions {}", listed.join(", "))),
            ]);
            for version in &live {
                draft.change_version(VersionChange::Unpublish(version.clone(), now));
            }
            Ok(Decision::Write(draft, keys_of(&stored, &live)))
        })
        .await?;
    writer.remove_tarballs(&removed).await;
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
        None => Err(ApiError::version_not_found(name, &version)),
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
    state
        .writer()
        .update(|| async {
            let stored = authorized_record(state, ctx, name, Action::Write).await?;
            if let Some(version) = live {
                let record = state.metadata.version(name, version).await?;
                if !matches!(record.map(|r| r.state), Some(VersionState::Live(_))) {
                    return Err(Refusal::Refused(ApiError::version_not_found(name, version)));
                }
            }
            let mut draft = Draft::after(Some(&stored), name);
            change(&mut draft.record)?;
            Ok(Decision::Write(draft, ()))
        })
        .await?;
    refresh_renderings(state, ctx, name).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::provenance::Provenance;

    fn built_from(uri: Option<&str>) -> Provenance {
        Provenance {
            bundle_media_type: "application/vnd.dev.sigstore.bundle.v0.3+json".into(),
            predicate_type: crate::domain::provenance::SLSA_PROVENANCE_V1.into(),
            issuer: crate::domain::provenance::GITHUB_ACTIONS_ISSUER.into(),
            subject_alternative_name: None,
            source_repository_uri: uri.map(str::to_string),
            source_repository_identifier: None,
            source_repository_owner_uri: None,
            source_repository_owner_identifier: None,
            source_repository_ref: None,
            source_repository_digest: None,
            build_config_uri: None,
            build_signer_uri: None,
            build_trigger: None,
            run_invocation_uri: None,
            runner_environment: None,
            integrated_time: chrono::Utc::now(),
            log_index: 1,
        }
    }

    #[test]
    fn provenance_must_come_from_the_bound_repository() {
        let name = PackageName::parse("@acme/widgets").unwrap();
        let bound = RepoRef::from_manifest(&serde_json::json!("github:acme/widgets")).unwrap();
        let ok = built_from(Some("https://github.com/Acme/Widgets"));
        check_provenance_source(&name, &ok, Some(&bound)).unwrap();
        // Open mode binds nothing: any source is the publisher's business.
        check_provenance_source(&name, &built_from(Some("https://github.com/evil/x")), None)
            .unwrap();
        for other in [
            Some("https://github.com/evil/widgets"),
            Some("https://gitlab.com/acme/widgets"),
            None,
        ] {
            let err = check_provenance_source(&name, &built_from(other), Some(&bound))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("provenance refused: @acme/widgets is bound to acme/widgets"),
                "{err}"
            );
        }
    }
}
