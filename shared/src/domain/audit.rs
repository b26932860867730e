//! The audit log's record of one write: when, to which package and version, what, how it ended,
//! who asked and with what kind of credential (never the credential itself). Pure: the HTTP layer
//! records events in one place (`http::audit`), `storage::AuditLog` keeps them.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use semver::Version;
use serde::{Deserialize, Serialize};

use super::PackageName;
use super::trust::WorkflowRun;

/// What kind of credential a request came with, for the audit log (never the credential).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// None (anonymous, or open mode).
    None,
    /// A GitHub token acting for a user (classic, fine-grained, OAuth or app user token).
    GithubToken,
    /// A GitHub App installation token (`ghs_`, a workflow's `GITHUB_TOKEN`).
    GithubInstallationToken,
    /// A registry token from `npm login` or `npm token create`.
    RegistryToken,
    /// A read-only registry token.
    RegistryReadOnlyToken,
    /// A registry token minted by the trusted-publishing exchange.
    TrustedPublishing,
}

/// What a write did (or tried to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// A version was published (`npm publish`).
    Publish,
    /// One version was unpublished (`npm unpublish NAME@VERSION`).
    UnpublishVersion,
    /// Every version was unpublished (`npm unpublish NAME --force`).
    UnpublishPackage,
    /// A version got a deprecation message (`npm deprecate`).
    Deprecate,
    /// A version's deprecation message was cleared (`npm deprecate NAME@V ""`).
    Undeprecate,
    /// A dist-tag was set (`npm dist-tag add`).
    DistTagSet,
    /// A dist-tag was removed (`npm dist-tag rm`).
    DistTagDelete,
    /// The package's GitHub repository binding changed (a publish naming another repository).
    Rebind,
    /// The package's stars changed (`npm star`, `npm unstar`).
    Star,
    /// A registry token was issued by `npm login`.
    Login,
    /// A registry token was created (`npm token create`).
    TokenCreate,
    /// A registry token was revoked (`npm token revoke`).
    TokenRevoke,
    /// A trusted-publishing configuration was made (`npm trust github`).
    TrustCreate,
    /// A trusted-publishing configuration was revoked (`npm trust revoke`).
    TrustRevoke,
    /// A workflow's ID token was exchanged for a publish token (trusted publishing).
    TokenExchange,
    /// An admin set a name's origin (internal or upstream: the pull-through cache).
    OriginSet,
}

impl AuditAction {
    /// The name used in JSON and in the table (`dist-tag-set`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Publish => "publish",
            AuditAction::UnpublishVersion => "unpublish-version",
            AuditAction::UnpublishPackage => "unpublish-package",
            AuditAction::Deprecate => "deprecate",
            AuditAction::Undeprecate => "undeprecate",
            AuditAction::DistTagSet => "dist-tag-set",
            AuditAction::DistTagDelete => "dist-tag-delete",
            AuditAction::Rebind => "rebind",
            AuditAction::Star => "star",
            AuditAction::Login => "login",
            AuditAction::TokenCreate => "token-create",
            AuditAction::TokenRevoke => "token-revoke",
            AuditAction::TrustCreate => "trust-create",
            AuditAction::TrustRevoke => "trust-revoke",
            AuditAction::TokenExchange => "token-exchange",
            AuditAction::OriginSet => "origin-set",
        }
    }
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It was done.
    Ok,
    /// It was refused (or failed) and changed nothing: the status and message the client got.
    Refused {
        /// The HTTP status answered.
        status: u16,
        /// The error message answered.
        message: String,
    },
}

impl AuditOutcome {
    /// Whether the write was done.
    pub fn is_ok(&self) -> bool {
        matches!(self, AuditOutcome::Ok)
    }
}

/// Who asked, as far as the registry knows; never a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AuditActor {
    /// Nobody identified (open mode).
    Anonymous,
    /// A GitHub user.
    User {
        /// Their GitHub login.
        login: String,
    },
    /// A GitHub App installation token (a workflow's `GITHUB_TOKEN`), which acts for no user.
    Installation,
    /// A GitHub Actions run, as its verified ID token described it.
    Workflow(WorkflowRun),
}

impl AuditActor {
    /// Whether the actor is known: refusals of anonymous callers are not recorded (anyone
    /// could fill the log with them).
    pub(crate) fn is_identified(&self) -> bool {
        !matches!(self, AuditActor::Anonymous)
    }

    /// A one-line description for the table: a login, or a workflow and its run.
    pub(crate) fn label(&self) -> String {
        match self {
            AuditActor::Anonymous => "anonymous".into(),
            AuditActor::User { login } => login.clone(),
            AuditActor::Installation => "github-app-installation".into(),
            AuditActor::Workflow(run) => format!(
                "{} run {}/{} sha {} ({}{})",
                run.workflow_ref,
                run.run_id,
                run.run_attempt,
                run.sha.get(..12).unwrap_or(&run.sha),
                run.event_name,
                run.environment
                    .as_deref()
                    .map(|e| format!(", environment {e}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// One recorded write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Random, so that events of the same microsecond stay distinct (the HTTP layer makes it
    /// `<random per request>-<position>`, which keeps one request's events in order).
    pub id: String,
    /// When the registry answered the request.
    pub time: DateTime<Utc>,
    /// What was done.
    pub action: AuditAction,
    /// The package written, if the write was to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageName>,
    /// The version written, if one (a whole-package unpublish names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// The dist-tag written, for dist-tag changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// What else an operator wants to know: a deprecation message, the repositories of a
    /// rebind, a token's id. Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// Who asked.
    pub actor: AuditActor,
    /// With what kind of credential.
    pub credential: CredentialKind,
}

impl AuditEvent {
    /// A new event at `time` with a fresh id; the optional fields start empty.
    pub fn new(
        time: DateTime<Utc>,
        action: AuditAction,
        actor: AuditActor,
        credential: CredentialKind,
        outcome: AuditOutcome,
    ) -> Self {
        AuditEvent {
            id: hex::encode(rand::random::<[u8; 8]>()),
            time,
            action,
            package: None,
            version: None,
            tag: None,
            detail: None,
            outcome,
            actor,
            credential,
        }
    }

    /// A key whose byte order is the events' time order (fixed-width UTC time, then the id):
    /// the sort key on DynamoDB, and the order of every listing.
    pub fn order_key(&self) -> String {
        format!("{}#{}", order_time(self.time), self.id)
    }
}

/// The fixed-width form of `time` used in order keys; a bound for range queries.
pub(crate) fn order_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Which events a query wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events of this package.
    pub package: Option<PackageName>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many, the newest (still listed oldest first).
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// Whether `event` is one the query wants (the limit aside).
    pub(crate) fn matches(&self, event: &AuditEvent) -> bool {
        self.package
            .as_ref()
            .is_none_or(|p| event.package.as_ref() == Some(p))
            && self.since.is_none_or(|since| event.time >= since)
    }

    /// Sorts `events` oldest first and keeps the newest `limit`.
    pub(crate) fn finish(&self, mut events: Vec<AuditEvent>) -> Vec<AuditEvent> {
        events.sort_by_key(AuditEvent::order_key);
        events.dedup_by(|a, b| a.id == b.id && a.time == b.time);
        if let Some(limit) = self.limit
            && events.len() > limit
        {
            events.drain(..events.len() - limit);
        }
        events
    }
}

/// A `--since` that is neither a time nor a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is neither an RFC 3339 time (2026-11-30T12:00:00Z) nor a duration such as 30m, 24h or 7d"
)]
pub(crate) struct SinceError(pub String);

/// Reads `--since`: an RFC 3339 time, or a duration back from `now` (`90s`, `30m`, `24h`, `7d`,
/// `2w`).
pub(crate) fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, SinceError> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let bad = || SinceError(text.to_string());
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let back = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    now.checked_sub_signed(back).ok_or_else(bad)
}

/// The events as a table for a terminal: one line each, oldest first.
pub(crate) fn render_table(events: &[AuditEvent]) -> String {
    let rows: Vec<[String; 7]> = events
        .iter()
        .map(|e| {
            let target = match (&e.package, &e.version) {
                (Some(p), Some(v)) => format!("{p}@{v}"),
                (Some(p), None) => p.to_string(),
                (None, _) => "-".into(),
            };
            let outcome = match &e.outcome {
                AuditOutcome::Ok => "ok".to_string(),
                AuditOutcome::Refused { status, message } => format!("refused {status}: {message}"),
            };
            let detail = [e.tag.as_deref(), e.detail.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            [
                e.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                e.action.as_str().to_string(),
                target,
                e.actor.label(),
                serde_json::to_value(e.credential)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                if detail.is_empty() {
                    "-".into()
                } else {
                    detail
                },
                outcome,
            ]
        })
        .collect();
    let header = [
        "TIME",
        "ACTION",
        "PACKAGE",
        "ACTOR",
        "CREDENTIAL",
        "DETAIL",
        "OUTCOME",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> WorkflowRun {
        WorkflowRun {
            repository: "acme/widgets".into(),
            repository_owner_id: "42".into(),
            workflow_ref: "acme/widgets/.github/workflows/publish.yml@refs/heads/main".into(),
            environment: Some("release".into()),
            event_name: "push".into(),
            run_id: "9001".into(),
            run_attempt: "2".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            git_ref: "refs/heads/main".into(),
        }
    }

    fn event(at: &str, package: Option<&str>) -> AuditEvent {
        let mut e = AuditEvent::new(
            DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&Utc),
            AuditAction::Publish,
            AuditActor::User {
                login: "alice".into(),
            },
            CredentialKind::GithubToken,
            AuditOutcome::Ok,
        );
        e.package = package.map(|p| PackageName::parse(p).unwrap());
        e.version = package.map(|_| Version::new(1, 0, 0));
        e
    }

    #[test]
    fn events_round_trip_through_json_with_stable_names() {
        let mut e = event("2026-11-30T12:00:00Z", Some("@acme/widgets"));
        e.action = AuditAction::DistTagSet;
        e.tag = Some("beta".into());
        e.outcome = AuditOutcome::Refused {
            status: 403,
            message: "no".into(),
        };
        e.actor = AuditActor::Workflow(run());
        e.credential = CredentialKind::TrustedPublishing;
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["action"], "dist-tag-set");
        assert_eq!(json["package"], "@acme/widgets");
        assert_eq!(json["version"], "1.0.0");
        assert_eq!(json["outcome"]["result"], "refused");
        assert_eq!(json["outcome"]["status"], 403);
        assert_eq!(json["actor"]["kind"], "workflow");
        assert_eq!(json["actor"]["repository"], "acme/widgets");
        assert_eq!(json["actor"]["run_id"], "9001");
        assert_eq!(json["actor"]["ref"], "refs/heads/main");
        assert_eq!(json["credential"], "trusted-publishing");
        let back: AuditEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        // Every action's serde name is its `as_str`.
        for action in [
            AuditAction::Publish,
            AuditAction::UnpublishVersion,
            AuditAction::UnpublishPackage,
            AuditAction::Deprecate,
            AuditAction::Undeprecate,
            AuditAction::DistTagSet,
            AuditAction::DistTagDelete,
            AuditAction::Rebind,
            AuditAction::Star,
            AuditAction::Login,
            AuditAction::TokenCreate,
            AuditAction::TokenRevoke,
            AuditAction::TrustCreate,
            AuditAction::TrustRevoke,
            AuditAction::TokenExchange,
            AuditAction::OriginSet,
        ] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
    }

    #[test]
    fn only_anonymous_is_unidentified_and_labels_name_the_run() {
        assert!(!AuditActor::Anonymous.is_identified());
        let user = AuditActor::User {
            login: "bob".into(),
        };
        assert_eq!(user.label(), "bob");
        assert!(user.is_identified());
        assert!(AuditActor::Installation.is_identified());
        let workflow = AuditActor::Workflow(run());
        let label = workflow.label();
        assert!(
            label.contains("publish.yml@refs/heads/main")
                && label.contains("run 9001/2")
                && label.contains("sha 0123456789ab")
                && label.contains("environment release"),
            "{label}"
        );
    }

    #[test]
    fn order_keys_sort_as_times_do() {
        let early = event("2026-11-30T09:59:59.999999Z", None);
        let late = event("2026-11-30T10:00:00Z", None);
        let later = event("2026-12-01T00:00:00.5Z", None);
        assert!(early.order_key() < late.order_key());
        assert!(late.order_key() < later.order_key());
        assert!(late.order_key().starts_with("2026-11-30T10:00:00.000000Z#"));
    }

    #[test]
    fn queries_filter_by_package_and_time_and_keep_the_newest() {
        let a1 = event("2026-11-01T00:00:00Z", Some("@acme/a"));
        let b1 = event("2026-11-02T00:00:00Z", Some("@acme/b"));
        let a2 = event("2026-11-03T00:00:00Z", Some("@acme/a"));
        let token = event("2026-11-04T00:00:00Z", None);
        let all = vec![token.clone(), a2.clone(), b1.clone(), a1.clone()];
        let q = AuditQuery::default();
        assert_eq!(
            q.finish(all.clone()),
            vec![a1.clone(), b1.clone(), a2.clone(), token.clone()]
        );
        let q = AuditQuery {
            package: Some(PackageName::parse("@acme/a").unwrap()),
            ..AuditQuery::default()
        };
        let found: Vec<_> = all.iter().filter(|e| q.matches(e)).cloned().collect();
        assert_eq!(q.finish(found), vec![a1.clone(), a2.clone()]);
        let q = AuditQuery {
            since: Some(b1.time),
            limit: Some(2),
            ..AuditQuery::default()
        };
        let found: Vec<_> = all.iter().filter(|e| q.matches(e)).cloned().collect();
        assert_eq!(q.finish(found), vec![a2, token]);
    }

    #[test]
    fn since_takes_times_and_durations() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_since("2026-11-01T08:00:00+01:00", now),
            Ok(at("2026-11-01T07:00:00Z"))
        );
        assert_eq!(parse_since("24h", now), Ok(at("2026-11-29T12:00:00Z")));
        assert_eq!(parse_since("7d", now), Ok(at("2026-11-23T12:00:00Z")));
        assert_eq!(parse_since("30m", now), Ok(at("2026-11-30T11:30:00Z")));
        assert_eq!(parse_since("2w", now), Ok(at("2026-11-16T12:00:00Z")));
        assert_eq!(parse_since("90s", now), Ok(at("2026-11-30T11:58:30Z")));
        for bad in [
            "",
            "yesterday",
            "7",
            "d",
            "7y",
            "-1d",
            "99999999999999999999d",
            "1.5h",
        ] {
            let err = parse_since(bad, now).unwrap_err();
            assert!(err.to_string().contains("RFC 3339"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_table_has_a_line_per_event_with_outcome_and_actor() {
        let ok = event("2026-11-30T12:00:00Z", Some("@acme/widgets"));
        let mut refused = event("2026-11-30T12:01:00Z", Some("@acme/widgets"));
        refused.action = AuditAction::UnpublishPackage;
        refused.version = None;
        refused.actor = AuditActor::User {
            login: "bob".into(),
        };
        refused.outcome = AuditOutcome::Refused {
            status: 403,
            message: "bob needs admin".into(),
        };
        let table = render_table(&[ok, refused]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("TIME"), "{table}");
        assert!(
            lines[1].contains("publish")
                && lines[1].contains("@acme/widgets@1.0.0")
                && lines[1].contains("alice")
                && lines[1].contains("github-token")
                && lines[1].ends_with("ok"),
            "{table}"
        );
        assert!(
            lines[2].contains("unpublish-package")
                && lines[2].contains(" bob ")
                && lines[2].ends_with("refused 403: bob needs admin"),
            "{table}"
        );
    }
}
