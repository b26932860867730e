//! `npm trust github|list|revoke` (publish route group: a configuration may bind a name): which GitHub Actions workflows may exchange
//! their ID token for a token that publishes one package.
//!
//! Who may: listing needs `push` on the package's bound repository; creating and revoking need
//! `admin` on it. Beyond the public registry, a configuration may be made before a package's
//! first version by an admin of the repository it names (owned by the scope's owner): that binds
//! the name to the repository, so the very first publish can come from CI.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use super::audit::AuditEntry;
use super::auth::signed_in;
use super::routes::TrustId;
use super::{ApiError, AppState, Refusal, RequestContext, json_response};
use crate::auth::{Action, AuthError, GithubAuth, trust};
use crate::domain::audit::AuditAction;
use crate::domain::trust::{TrustConfiguration, TrustRequest};
use crate::domain::{PackageName, PackageRecord, RepoRef};
use crate::writes::{Decision, Draft};

fn github(state: &AppState) -> Result<&GithubAuth, ApiError> {
    state.auth.github().ok_or_else(|| {
        ApiError::NotFound(
            "trusted publishing needs GitHub mode (REGISTRY_AUTH=github): in open mode anyone may publish".into(),
        )
    })
}

/// The repository a stored package belongs to: its binding, or (stored before GitHub mode)
/// `scope/name`, as `AppState::authorize` decides with.
fn bound_or_default(name: &PackageName, record: &PackageRecord) -> Option<RepoRef> {
    record.repository.clone().or_else(|| RepoRef::unbound(name))
}

/// `GET /-/package/NAME/trust`: the package's configurations, as npm prints them.
pub async fn list(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
) -> Result<Response, ApiError> {
    let github = github(state)?;
    let Some(record) = state.metadata.package(name).await? else {
        return Err(state.missing(ctx, name).await);
    };
    state
        .authorize(ctx, name, Some(&record), Action::Write)
        .await?;
    let configs = trust::configurations(github.kv(), name).await?;
    let wire: Vec<Value> = configs.iter().map(TrustConfiguration::to_wire).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(wire)))
}

/// `POST /-/package/NAME/trust`: adds configurations (npm sends one, in an array).
pub async fn create(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    body: &[u8],
) -> Result<Response, ApiError> {
    let github = github(state)?;
    let login = signed_in(ctx)?.to_string();
    if ctx.caller.is_read_only_token() {
        return Err(ApiError::Forbidden(
            "this registry token is read-only; it cannot configure trusted publishing".into(),
        ));
    }
    state
        .scopes
        .stores(name)
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    // Who the caller is and what the package is bound to are settled before the body is read.
    let record = state.metadata.package(name).await?;
    let requests =
        TrustRequest::parse_all(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let repository = one_repository(&requests)?;
    let owner_id = authorize_configuration(state, ctx, name, record, &repository).await?;
    let kv = github.kv();
    let existing = trust::configurations(kv, name).await?;
    let fresh: Vec<&TrustRequest> = requests
        .iter()
        .filter(|r| !existing.iter().any(|c| r.same_as(c)))
        .collect();
    if existing.len() + fresh.len() > trust::MAX_PER_PACKAGE {
        return Err(ApiError::BadRequest(format!(
            "{name} may have at most {} trust configurations; revoke one first (npm trust list, npm trust revoke)",
            trust::MAX_PER_PACKAGE
        )));
    }
    let mut answer = Vec::new();
    let mut audited = Vec::new();
    for request in &requests {
        // Asking again for what exists answers the existing configuration: npm retries are safe.
        if let Some(same) = existing.iter().find(|c| request.same_as(c)) {
            answer.push(same.to_wire());
            continue;
        }
        let config = TrustConfiguration {
            id: uuid_like(),
            repository: repository.clone(),
            repository_owner_id: owner_id.to_string(),
            workflow_file: request.workflow_file.clone(),
            environment: request.environment.clone(),
            permissions: request.permissions.clone(),
            created: Utc::now(),
            created_by: login.clone(),
        };
        trust::save(kv, name, &config).await?;
        audited.push(AuditEntry::new(AuditAction::TrustCreate).detail(format!(
            "configuration {}: {} .github/workflows/{}{}",
            config.id,
            config.repository,
            config.workflow_file,
            config
                .environment
                .as_ref()
                .map(|e| format!(" environment {e}"))
                .unwrap_or_default()
        )));
        tracing::info!(package = %name, id = %config.id, repository = %config.repository, workflow = %config.workflow_file, by = %login, "trust configuration created");
        answer.push(config.to_wire());
    }
    if audited.is_empty() {
        ctx.audit.unchanged();
    } else {
        ctx.audit.set(audited);
    }
    Ok(json_response(StatusCode::CREATED, &Value::Array(answer)))
}

/// `DELETE /-/package/NAME/trust/ID`: removes a configuration.
pub async fn revoke(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    id: &TrustId,
) -> Result<Response, ApiError> {
    let id = id.as_str();
    let github = github(state)?;
    let login = signed_in(ctx)?.to_string();
    if ctx.caller.is_read_only_token() {
        return Err(ApiError::Forbidden(
            "this registry token is read-only; it cannot revoke trust configurations".into(),
        ));
    }
    let Some(record) = state.metadata.package(name).await? else {
        return Err(state.missing(ctx, name).await);
    };
    state
        .authorize(ctx, name, Some(&record), Action::Admin)
        .await?;
    let kv = github.kv();
    if trust::configuration(kv, name, id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "{name} has no trust configuration with id {id} (npm trust list {name} shows them)"
        )));
    }
    trust::remove(kv, name, id).await?;
    tracing::info!(package = %name, id, by = %login, "trust configuration revoked");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "ok": true, "id": id }),
    ))
}

/// The repository every configuration in one request names (one package, one repository).
fn one_repository(requests: &[TrustRequest]) -> Result<RepoRef, ApiError> {
    let first = requests[0].repository.clone();
    if requests.iter().any(|r| r.repository != first) {
        return Err(ApiError::BadRequest(
            "all configurations of one request must name the same repository".into(),
        ));
    }
    Ok(first)
}

/// Who may configure: an admin of the repository the configuration names, which must belong to
/// the scope's owner and, for a stored package, be the one it is bound to (a publish from any
/// other would be refused by the binding). A name nothing is stored under is bound to that
/// repository (a record with no versions, which reads as missing until its first publish). The
/// named repository is judged first, so a caller who does not administer it hears the same refusal
/// whether or not the name is taken. Returns the repository owner's id, pinned into the
/// configuration.
async fn authorize_configuration(
    state: &AppState,
    ctx: &RequestContext,
    name: &PackageName,
    record: Option<PackageRecord>,
    repository: &RepoRef,
) -> Result<u64, ApiError> {
    let scope = name.scope().unwrap_or_default();
    if !repository.owner.eq_ignore_ascii_case(scope) {
        return Err(ApiError::Forbidden(format!(
            "{name} cannot be published from repository {repository}: packages of @{scope} must live in a repository owned by {scope}"
        )));
    }
    let access = match state
        .auth
        .check(&ctx.caller, name, repository, Action::Admin)
        .await
    {
        Ok(access) => access,
        Err(AuthError::Hidden) => {
            return Err(ApiError::Forbidden(format!(
                "{} cannot configure trusted publishing of {name} from repository {repository}: it does not exist or you have no access to it",
                ctx.caller.identity.username()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let canonical = access
        .as_ref()
        .map_or_else(|| repository.clone(), |a| a.repo.clone());
    let owner_id = owner_id_of(access, repository)?;
    let record = if let Some(record) = record {
        record
    } else {
        PackageName::parse_new(name.as_str())
            .map_err(|e| ApiError::BadRequest(format!("invalid package name '{name}': {e}")))?;
        // A racing first publish or configuration may bind the name first: then the
        // caller is judged against that binding instead.
        match try_bind(state, name, &canonical).await? {
            None => return Ok(owner_id),
            Some(record) => record,
        }
    };
    let Some(bound) = bound_or_default(name, &record) else {
        return Err(state.missing(ctx, name).await);
    };
    if bound != *repository {
        // Where the package is bound is told only to an admin of that repository.
        return Err(
            match state
                .auth
                .check(&ctx.caller, name, &bound, Action::Admin)
                .await
            {
                Ok(_) => ApiError::Conflict(format!(
                    "{name} is bound to repository {bound}, so only its workflows can publish it; configure a workflow of {bound} (or rebind the package first)"
                )),
                // As for a publish: a name held by a package the caller cannot see is taken.
                Err(AuthError::Hidden) => name_taken(name),
                Err(e) => e.into(),
            },
        );
    }
    if record.repository.is_none() {
        bind(state, name, &bound).await?;
    }
    Ok(owner_id)
}

/// Binds `name` to `repository`: creates its (version-less) record, or sets the binding of a
/// record stored without one. Refused if the record was bound to something else meanwhile.
async fn bind(state: &AppState, name: &PackageName, repository: &RepoRef) -> Result<(), ApiError> {
    match try_bind(state, name, repository).await? {
        None => Ok(()),
        Some(_) => Err(ApiError::Conflict(format!(
            "{name} was bound to another repository while this request was handled; try again"
        ))),
    }
}

/// Binds as `bind` does, or answers the stored record when it is bound to another repository.
async fn try_bind(
    state: &AppState,
    name: &PackageName,
    repository: &RepoRef,
) -> Result<Option<PackageRecord>, ApiError> {
    let taken = state
        .writer()
        .update(|| async {
            let current = state.metadata.package(name).await?;
            match current {
                Some(record) if record.repository.as_ref() == Some(repository) => {
                    Ok(Decision::Keep(None))
                }
                Some(record) if record.repository.is_some() => Ok(Decision::Keep(Some(record))),
                current => {
                    let mut draft = Draft::after(current.as_ref(), name);
                    draft.record.repository = Some(repository.clone());
                    Ok::<_, Refusal>(Decision::Write(draft, None))
                }
            }
        })
        .await?;
    if taken.is_none() {
        tracing::info!(package = %name, %repository, "name bound by a trust configuration");
    }
    Ok(taken)
}

fn owner_id_of(
    access: Option<crate::auth::github::RepoAccess>,
    repository: &RepoRef,
) -> Result<u64, ApiError> {
    access.and_then(|a| a.owner_id).ok_or_else(|| {
        ApiError::Unavailable(format!(
            "GitHub did not say who owns repository {repository}; retry shortly"
        ))
    })
}

fn name_taken(name: &PackageName) -> ApiError {
    ApiError::Forbidden(format!(
        "you cannot configure trusted publishing of {name}: the name is taken by a package you have no access to"
    ))
}

/// A random id in UUID form (what the public registry's ids look like).
fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
