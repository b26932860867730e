//! Recording the audit log, in one place: `dispatch` knows from the route whether a request is
//! a write (`audited`), the handler refines what it did in the request's `AuditNote` (a
//! `PUT /NAME` may be a publish, a deprecation or an unpublish, and names its versions only in
//! its body), and once the handler has answered, `dispatch` turns the note and the answer into
//! events (`events`) and records them (`record`) before the response leaves.
//!
//! What is recorded:
//! - every write that was done, whoever made it (open mode: an anonymous actor);
//! - every write refused (or failed) for an identified caller (a GitHub user, an installation,
//!   a workflow), with the status and message they got: who tried what is worth knowing. That
//!   includes an installation token's writes, which `dispatch` refuses before any handler (and
//!   before reading the body): one told by its `ghs_` prefix is identified afterwards for the
//!   record, as a read with it would be;
//! - not refusals of anonymous callers, nor of requests refused before the caller was known
//!   (bad or missing credentials, cross-site writes, an oversized declared body): anyone could
//!   fill the log with those; the request log line still shows them.
//!
//! One event per version changed: deprecating three versions in one `PUT` is three events, so
//! that every event names at most one version and `--package` listings read as a history.
//! Unpublishing a whole package is one event without a version (its detail lists them).

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use semver::Version;

use super::routes::{AuthRoute, ParamError, PublishRoute, Rejected};
use super::{ApiError, AppState, Route};
use crate::auth::{Caller, CredentialKind};
use crate::domain::PackageName;
use crate::domain::audit::{AuditAction, AuditActor, AuditEvent, AuditOutcome};

/// One thing a write did, as a handler describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// What.
    pub action: AuditAction,
    /// To which version, if one.
    pub version: Option<Version>,
    /// Which dist-tag, for dist-tag changes.
    pub tag: Option<String>,
    /// What else an operator wants to know; never a secret.
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry for `action` alone.
    pub(crate) fn new(action: AuditAction) -> Self {
        AuditEntry {
            action,
            version: None,
            tag: None,
            detail: None,
        }
    }

    /// With the version.
    pub(crate) fn version(mut self, version: &Version) -> Self {
        self.version = Some(version.clone());
        self
    }

    /// With the dist-tag.
    pub(crate) fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// With a detail.
    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Debug, Default)]
struct NoteState {
    entries: Vec<AuditEntry>,
    unchanged: bool,
    actor: Option<(AuditActor, CredentialKind)>,
    refusal: Option<String>,
}

/// What a handler learned about its write; filled through `&RequestContext`, read by `dispatch`.
#[derive(Debug, Default)]
pub struct AuditNote(Mutex<NoteState>);

impl AuditNote {
    fn state(&self) -> std::sync::MutexGuard<'_, NoteState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Says what the write does, replacing what was said before (handlers that retry on
    /// conflicts say it again each round).
    pub(crate) fn set(&self, entries: Vec<AuditEntry>) {
        let mut state = self.state();
        state.entries = entries;
        state.unchanged = false;
    }

    /// The request asked for nothing that changes anything (a metadata `PUT` equal to what is
    /// stored): if it succeeds, nothing is recorded.
    pub(crate) fn unchanged(&self) {
        let mut state = self.state();
        state.entries.clear();
        state.unchanged = true;
    }

    /// The actor, for routes whose caller is known only once the handler has checked a
    /// credential from the body (`npm login`, the trusted-publishing exchange).
    pub(crate) fn set_actor(&self, actor: AuditActor, credential: CredentialKind) {
        self.state().actor = Some((actor, credential));
    }

    /// The message of a refusal the handler answered itself (a response, not an `ApiError`,
    /// such as the exchange's `{"message"}` body npm reads), for the refused event.
    pub(crate) fn refused_with(&self, message: impl Into<String>) {
        self.state().refusal = Some(message.into());
    }
}

/// Whether `route` writes, and if so its package and what it does unless the handler says more.
/// The one place a new write route is added to the audit log.
pub(crate) fn audited(route: &Route) -> Option<(Option<PackageName>, AuditEntry)> {
    let entry = match route {
        Route::Publish(route) => match route {
            PublishRoute::Put { rev: None, .. } => AuditEntry::new(AuditAction::Publish),
            PublishRoute::Put { rev: Some(_), .. } => {
                AuditEntry::new(AuditAction::UnpublishVersion)
            }
            PublishRoute::Unpublish { .. } => AuditEntry::new(AuditAction::UnpublishPackage),
            PublishRoute::SetTag { tag, .. } => {
                AuditEntry::new(AuditAction::DistTagSet).tag(tag.as_str())
            }
            PublishRoute::DeleteTag { tag, .. } => {
                AuditEntry::new(AuditAction::DistTagDelete).tag(tag.as_str())
            }
            PublishRoute::TrustCreate { .. } => AuditEntry::new(AuditAction::TrustCreate),
            PublishRoute::TrustRevoke { id, .. } => {
                AuditEntry::new(AuditAction::TrustRevoke).detail(format!("configuration {id}"))
            }
            // Removing an unpublished version's tarball changes nothing (it went with the
            // version); listing reads.
            PublishRoute::OriginSet { .. } => AuditEntry::new(AuditAction::OriginSet),
            PublishRoute::Release { version, .. } => {
                AuditEntry::new(AuditAction::Publish).version(version)
            }
            // An upload is invisible until a release claims it.
            PublishRoute::UploadTarball { .. } => return None,
            PublishRoute::DeleteTarball { .. }
            | PublishRoute::TrustList { .. }
            | PublishRoute::OriginGet { .. } => return None,
        },
        Route::Auth(route) => match route {
            AuthRoute::LegacyLogin { .. }
            | AuthRoute::LegacyUserUpdate { .. }
            | AuthRoute::Session
            | AuthRoute::WebCallback => AuditEntry::new(AuditAction::Login),
            AuthRoute::TokenCreate => AuditEntry::new(AuditAction::TokenCreate),
            // Never the path's key: `npm token revoke` may put a whole token there.
            AuthRoute::TokenDelete { .. } => AuditEntry::new(AuditAction::TokenRevoke),
            AuthRoute::OidcExchange { .. } => AuditEntry::new(AuditAction::TokenExchange),
            // Sign-out revokes the session's own read-only token, recorded as a revocation.
            AuthRoute::WebSignOut => AuditEntry::new(AuditAction::TokenRevoke),
            AuthRoute::Whoami
            | AuthRoute::WebLogin
            | AuthRoute::TokensList
            | AuthRoute::WebLoginDone
            | AuthRoute::LegacyUser { .. }
            | AuthRoute::WebSignIn => return None,
        },
        Route::Metadata(_) | Route::Tarball(_) => return None,
    };
    let package = match route {
        Route::Auth(AuthRoute::OidcExchange { .. }) | Route::Publish(_) => route.package().cloned(),
        _ => None,
    };
    Some((package, entry))
}

/// `audited` for a write whose path parameter was refused: recorded as the write it asked for.
pub(crate) fn audited_rejection(rejected: &Rejected) -> (Option<PackageName>, AuditEntry) {
    let action = match rejected.error {
        ParamError::SetTag(_) => AuditAction::DistTagSet,
        ParamError::DeleteTag(_) => AuditAction::DistTagDelete,
    };
    (
        Some(rejected.package.clone()),
        AuditEntry::new(action).tag(rejected.value.as_str()),
    )
}

/// How a handler's answer ended, for the log.
pub(crate) fn outcome_of(result: &Result<axum::response::Response, ApiError>) -> AuditOutcome {
    match result {
        Ok(response)
            if response.status().is_client_error() || response.status().is_server_error() =>
        {
            AuditOutcome::Refused {
                status: response.status().as_u16(),
                message: String::new(),
            }
        }
        Ok(_) => AuditOutcome::Ok,
        Err(e) => refused_outcome(e),
    }
}

/// The outcome of a request refused with `error`: its status and message.
pub(crate) fn refused_outcome(error: &ApiError) -> AuditOutcome {
    AuditOutcome::Refused {
        status: error.status().as_u16(),
        message: error.to_string(),
    }
}

/// The events of one write request (see the module's comment for which are kept).
pub fn events(
    package: Option<&PackageName>,
    default: AuditEntry,
    note: &AuditNote,
    caller: &Caller,
    outcome: AuditOutcome,
    time: DateTime<Utc>,
) -> Vec<AuditEvent> {
    let state = note.state();
    if outcome.is_ok() && state.unchanged {
        return Vec::new();
    }
    let (actor, credential) = state
        .actor
        .clone()
        .unwrap_or_else(|| (caller.identity.audit_actor(), caller.credential_kind()));
    if !outcome.is_ok() && !actor.is_identified() {
        return Vec::new();
    }
    // A refusal answered as a response carries no message here; the handler noted it.
    let outcome = match (outcome, &state.refusal) {
        (AuditOutcome::Refused { status, message }, Some(noted)) if message.is_empty() => {
            AuditOutcome::Refused {
                status,
                message: noted.clone(),
            }
        }
        (outcome, _) => outcome,
    };
    let entries = if state.entries.is_empty() {
        vec![default]
    } else {
        state.entries.clone()
    };
    // One random id per request, then each event's position: the events of one request share
    // its time, and their order keys keep them in the order the handler gave.
    let request = hex::encode(rand::random::<[u8; 8]>());
    entries
        .into_iter()
        .enumerate()
        .map(|(position, entry)| {
            let mut event = AuditEvent::new(
                time,
                entry.action,
                actor.clone(),
                credential,
                outcome.clone(),
            );
            event.id = format!("{request}-{position:03}");
            event.package = package.cloned();
            event.version = entry.version;
            event.tag = entry.tag;
            event.detail = entry.detail;
            event
        })
        .collect()
}

/// Records `events`: each as one `tracing` line (target `audit`, the event as JSON in `event`:
/// CloudWatch Logs gets them from the functions' logs as is), then in the audit log. A failed
/// append is logged as an error with the whole event and does not change the answer: the write
/// it describes is done, and telling the client otherwise would make it retry a write that
/// landed.
pub async fn record(state: &AppState, events: Vec<AuditEvent>) {
    for event in events {
        let json = serde_json::to_string(&event).unwrap_or_default();
        tracing::info!(target: "audit", event = %json);
        if let Err(e) = state.audit.append(&event).await {
            tracing::error!(
                target: "audit",
                error = %e,
                event = %json,
                "the audit log could not be written: this event is only in this log line"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn refused() -> AuditOutcome {
        AuditOutcome::Refused {
            status: 403,
            message: "no".into(),
        }
    }

    fn user(login: &str) -> Caller {
        let mut caller = Caller::anonymous();
        caller.identity = Identity::User(login.into());
        caller
    }

    #[test]
    fn writes_are_recognised_by_route_and_reads_are_not() {
        let name = PackageName::parse("@acme/widgets").unwrap();
        let (package, entry) = audited(&Route::Publish(PublishRoute::SetTag {
            name: name.clone(),
            tag: crate::domain::DistTag::parse("beta").unwrap(),
        }))
        .unwrap();
        assert_eq!(package, Some(name.clone()));
        assert_eq!(entry, AuditEntry::new(AuditAction::DistTagSet).tag("beta"));
        let (package, entry) = audited(&Route::Auth(AuthRoute::TokenDelete {
            key: crate::http::routes::TokenKey::parse("npm_secret"),
        }))
        .unwrap();
        assert_eq!(
            (package, entry.detail),
            (None, None),
            "never the path's key"
        );
        assert!(
            audited(&Route::Metadata(
                crate::http::routes::MetadataRoute::Packument { name: name.clone() }
            ))
            .is_none()
        );
        assert!(audited(&Route::Auth(AuthRoute::TokensList)).is_none());
        let file = crate::http::routes::TarballFile::parse(&name, "x.tgz");
        let rev = crate::http::routes::Revision::parse("1");
        assert!(
            audited(&Route::Publish(PublishRoute::DeleteTarball {
                name,
                file,
                rev
            }))
            .is_none()
        );
    }

    #[test]
    fn a_refused_tag_is_recorded_as_the_write_it_asked_for() {
        let route = crate::http::routes::resolve(
            &axum::http::Method::DELETE,
            "/-/package/@acme%2fwidgets/dist-tags/1.0.0",
        );
        let Err(crate::http::routes::RouteError::Rejected(rejected)) = route else {
            panic!("{route:?}");
        };
        let (package, entry) = audited_rejection(&rejected);
        assert_eq!(package, Some(PackageName::parse("@acme/widgets").unwrap()));
        assert_eq!(
            entry,
            AuditEntry::new(AuditAction::DistTagDelete).tag("1.0.0")
        );
    }

    #[test]
    fn refusals_are_kept_for_identified_callers_only() {
        let name = PackageName::parse("@acme/widgets").unwrap();
        let note = AuditNote::default();
        let default = AuditEntry::new(AuditAction::Publish);
        let anonymous = Caller::anonymous();
        assert!(
            events(
                Some(&name),
                default.clone(),
                &note,
                &anonymous,
                refused(),
                at()
            )
            .is_empty()
        );
        let done = events(
            Some(&name),
            default.clone(),
            &note,
            &anonymous,
            AuditOutcome::Ok,
            at(),
        );
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].actor, AuditActor::Anonymous);
        assert_eq!(done[0].credential, CredentialKind::None);
        let bob = events(Some(&name), default, &note, &user("bob"), refused(), at());
        assert_eq!(bob.len(), 1);
        assert_eq!(bob[0].outcome, refused());
        assert_eq!(bob[0].credential, CredentialKind::GithubToken);
        assert_eq!(bob[0].package.as_ref(), Some(&name));
    }

    #[test]
    fn the_note_refines_the_route_one_event_per_version() {
        let name = PackageName::parse("@acme/widgets").unwrap();
        let note = AuditNote::default();
        note.set(vec![AuditEntry::new(AuditAction::UnpublishVersion)]);
        // A retried round says it again: only the last word counts.
        let (v1, v2) = (Version::new(1, 0, 0), Version::new(1, 1, 0));
        note.set(vec![
            AuditEntry::new(AuditAction::Deprecate)
                .version(&v1)
                .detail("old"),
            AuditEntry::new(AuditAction::Undeprecate).version(&v2),
        ]);
        let got = events(
            Some(&name),
            AuditEntry::new(AuditAction::Publish),
            &note,
            &user("alice"),
            AuditOutcome::Ok,
            at(),
        );
        let summary: Vec<_> = got
            .iter()
            .map(|e| (e.action, e.version.clone(), e.detail.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (AuditAction::Deprecate, Some(v1), Some("old".into())),
                (AuditAction::Undeprecate, Some(v2), None),
            ]
        );
        assert_ne!(got[0].id, got[1].id);
        assert!(
            got[0].order_key() < got[1].order_key(),
            "in the handler's order"
        );
    }

    #[test]
    fn an_unchanged_write_records_nothing_unless_refused() {
        let note = AuditNote::default();
        note.unchanged();
        let default = AuditEntry::new(AuditAction::Publish);
        assert!(
            events(
                None,
                default.clone(),
                &note,
                &user("alice"),
                AuditOutcome::Ok,
                at()
            )
            .is_empty()
        );
        assert_eq!(
            events(None, default, &note, &user("alice"), refused(), at()).len(),
            1
        );
    }

    #[test]
    fn a_refusal_answered_as_a_response_keeps_the_message_the_handler_noted() {
        let note = AuditNote::default();
        note.refused_with("workflow runs triggered by workflow_run may not publish");
        let answered = AuditOutcome::Refused {
            status: 403,
            message: String::new(),
        };
        let got = events(
            None,
            AuditEntry::new(AuditAction::TokenExchange),
            &note,
            &user("alice"),
            answered,
            at(),
        );
        assert_eq!(
            got[0].outcome,
            AuditOutcome::Refused {
                status: 403,
                message: "workflow runs triggered by workflow_run may not publish".into(),
            }
        );
        // An `ApiError`'s own message stands.
        let got = events(
            None,
            AuditEntry::new(AuditAction::TokenExchange),
            &note,
            &user("alice"),
            refused(),
            at(),
        );
        assert_eq!(got[0].outcome, refused());
    }

    #[test]
    fn a_handler_may_name_the_actor_it_verified() {
        let note = AuditNote::default();
        note.set_actor(
            AuditActor::User {
                login: "alice".into(),
            },
            CredentialKind::GithubToken,
        );
        let got = events(
            None,
            AuditEntry::new(AuditAction::Login),
            &note,
            &Caller::anonymous(),
            AuditOutcome::Ok,
            at(),
        );
        assert_eq!(got[0].actor.label(), "alice");
        assert_eq!(got[0].credential, CredentialKind::GithubToken);
    }
}
