//! Trusted publishing: which CI workflow runs may publish a package without a stored token, and
//! whether a given run is one of them. Pure; the exchange and the `/-/package/NAME/trust` routes
//! decide with these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RepoRef;

/// The permission `npm trust github --allow-publish` asks for.
pub const PERMISSION_CREATE_PACKAGE: &str = "createPackage";

/// Events a trusted publish is never accepted from: they run a base repository's workflow on
/// behalf of code or input an outsider controls (crates.io refuses the same two).
pub(crate) const REFUSED_EVENTS: [&str; 2] = ["pull_request_target", "workflow_run"];

/// A GitHub Actions run, from the claims of its OIDC ID token (verified before this is made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// `owner/repo` the workflow runs in.
    pub repository: String,
    /// The repository owner's numeric id (pinned by trust configurations).
    pub repository_owner_id: String,
    /// `owner/repo/.github/workflows/FILE@REF`.
    pub workflow_ref: String,
    /// The deployment environment of the job, if any.
    #[serde(default)]
    pub environment: Option<String>,
    /// The event that started the run (`push`, `release`, `workflow_dispatch`, ...).
    pub event_name: String,
    /// The run's id.
    pub run_id: String,
    /// The attempt of the run.
    pub run_attempt: String,
    /// The commit the run is for.
    pub sha: String,
    /// The git ref the run is for (`refs/heads/main`, `refs/tags/v1.0.0`).
    #[serde(rename = "ref")]
    pub git_ref: String,
}

impl WorkflowRun {
    /// The workflow file name from `workflow_ref` (`publish.yml`), if it is in the repository's
    /// `.github/workflows/` folder.
    pub(crate) fn workflow_file(&self) -> Option<&str> {
        let path = self
            .workflow_ref
            .split_once('@')
            .map_or(self.workflow_ref.as_str(), |(p, _)| p);
        let rest = strip_prefix_ignore_case(path, &self.repository)?;
        let file = rest.strip_prefix("/.github/workflows/")?;
        (!file.is_empty() && !file.contains('/')).then_some(file)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// One trusted-publishing configuration of a package: GitHub Actions runs of `workflow_file` in
/// `repository` (and `environment`, when set) may exchange their ID token for a publish token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustConfiguration {
    /// Its id (what `npm trust revoke --id` names).
    pub id: String,
    /// The repository whose workflows are trusted.
    pub repository: RepoRef,
    /// The numeric id of the repository's owner when the configuration was made: an owner
    /// deleted and re-created under the same name has another id and inherits nothing.
    pub repository_owner_id: String,
    /// The workflow file name (`publish.yml`), in the repository's `.github/workflows/`.
    pub workflow_file: String,
    /// The deployment environment the job must run in, if any.
    #[serde(default)]
    pub environment: Option<String>,
    /// What runs may do (npm's names: `createPackage`).
    pub permissions: Vec<String>,
    /// When it was made.
    pub created: DateTime<Utc>,
    /// The GitHub login that made it.
    pub created_by: String,
}

/// Why a run does not match a configuration: the check that failed, for the exchange's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustMismatch {
    /// The run's event is one trusted publishing never accepts.
    #[error("workflow runs triggered by {0} may not publish")]
    RefusedEvent(String),
    /// Another repository.
    #[error("repository {run} is not {configured}")]
    Repository { run: String, configured: String },
    /// Same name, another owner (deleted and re-created).
    #[error(
        "the owner of repository {0} is not the one the configuration was made for (owner id differs)"
    )]
    OwnerId(String),
    /// Another workflow file.
    #[error("workflow {run} is not .github/workflows/{configured}")]
    Workflow { run: String, configured: String },
    /// The environment differs (or the job ran in none).
    #[error("environment {run} is not {configured}")]
    Environment { run: String, configured: String },
    /// The configuration does not allow publishing.
    #[error("the configuration does not allow publishing (permissions: {0})")]
    NoPublishPermission(String),
}

impl TrustConfiguration {
    /// Whether `run` is one this configuration trusts to publish; the error names the first
    /// check that failed.
    pub(crate) fn admits(&self, run: &WorkflowRun) -> Result<(), TrustMismatch> {
        if REFUSED_EVENTS.contains(&run.event_name.as_str()) {
            return Err(TrustMismatch::RefusedEvent(run.event_name.clone()));
        }
        if !run
            .repository
            .eq_ignore_ascii_case(&self.repository.to_string())
        {
            return Err(TrustMismatch::Repository {
                run: run.repository.clone(),
                configured: self.repository.to_string(),
            });
        }
        if run.repository_owner_id != self.repository_owner_id {
            return Err(TrustMismatch::OwnerId(self.repository.to_string()));
        }
        if run.workflow_file() != Some(self.workflow_file.as_str()) {
            return Err(TrustMismatch::Workflow {
                run: run.workflow_ref.clone(),
                configured: self.workflow_file.clone(),
            });
        }
        if let Some(configured) = &self.environment {
            let matches = run
                .environment
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(configured));
            if !matches {
                return Err(TrustMismatch::Environment {
                    run: run.environment.clone().unwrap_or_else(|| "(none)".into()),
                    configured: configured.clone(),
                });
            }
        }
        if !self
            .permissions
            .iter()
            .any(|p| p == PERMISSION_CREATE_PACKAGE)
        {
            return Err(TrustMismatch::NoPublishPermission(
                self.permissions.join(", "),
            ));
        }
        Ok(())
    }

    /// The configuration as npm sends and reads it (`npm trust list` prints from this).
    pub(crate) fn to_wire(&self) -> serde_json::Value {
        let mut claims = serde_json::json!({
            "repository": self.repository.to_string(),
            "workflow_ref": { "file": self.workflow_file },
        });
        if let Some(env) = &self.environment {
            claims["environment"] = serde_json::Value::String(env.clone());
        }
        serde_json::json!({
            "id": self.id,
            "type": "github",
            "claims": claims,
            "permissions": self.permissions,
        })
    }
}

/// A configuration as `npm trust github` asks for it, validated; the registry adds the id, the
/// owner id, the time and the author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustRequest {
    /// The repository whose workflows are to be trusted.
    pub repository: RepoRef,
    /// The workflow file name.
    pub workflow_file: String,
    /// The environment, if any.
    pub environment: Option<String>,
    /// The permissions asked for (only `createPackage` is supported).
    pub permissions: Vec<String>,
}

/// Why a trust request body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TrustRequestError {
    /// Not JSON, or not the shape npm sends.
    #[error("the trust configuration is not valid: {0}")]
    Malformed(String),
    /// A provider other than GitHub Actions.
    #[error(
        "trusted publishing from {0} is not supported by this registry; only GitHub Actions (npm trust github) is"
    )]
    Provider(String),
    /// A permission this registry does not grant.
    #[error(
        "permission {0} is not supported by this registry (staged publishing is not available); use --allow-publish"
    )]
    Permission(String),
}

const MAX_TEXT: usize = 255;

impl TrustRequest {
    /// Parses the body of `POST /-/package/NAME/trust`: an array of configurations (what npm
    /// sends), or one configuration.
    pub(crate) fn parse_all(body: &[u8]) -> Result<Vec<TrustRequest>, TrustRequestError> {
        let malformed = |m: &str| TrustRequestError::Malformed(m.to_string());
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| TrustRequestError::Malformed(e.to_string()))?;
        let items = match value {
            serde_json::Value::Array(items) => items,
            item @ serde_json::Value::Object(_) => vec![item],
            _ => return Err(malformed("expected an array of configurations")),
        };
        if items.is_empty() {
            return Err(malformed("no configuration given"));
        }
        items.iter().map(TrustRequest::parse_one).collect()
    }

    fn parse_one(item: &serde_json::Value) -> Result<TrustRequest, TrustRequestError> {
        let malformed = |m: String| TrustRequestError::Malformed(m);
        match item["type"].as_str() {
            Some("github") => {}
            Some(other) => {
                return Err(TrustRequestError::Provider(
                    other.chars().take(40).collect(),
                ));
            }
            None => return Err(malformed("\"type\" is missing".into())),
        }
        let claims = &item["claims"];
        let repository = claims["repository"]
            .as_str()
            .and_then(|r| r.split_once('/'))
            .and_then(|(owner, name)| RepoRef::new(owner, name))
            .ok_or_else(|| {
                malformed("claims.repository must be a GitHub repository, owner/name".into())
            })?;
        let workflow_file = claims["workflow_ref"]["file"]
            .as_str()
            .filter(|f| valid_workflow_file(f))
            .ok_or_else(|| {
                malformed("claims.workflow_ref.file must be a workflow file name in .github/workflows (ending in .yml or .yaml, no path)".into())
            })?
            .to_string();
        let environment = match &claims["environment"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(e) if valid_environment(e) => Some(e.clone()),
            _ => {
                return Err(malformed(format!(
                    "claims.environment must be a GitHub environment name (1 to {MAX_TEXT} printable characters)"
                )));
            }
        };
        let permissions: Vec<String> = match &item["permissions"] {
            serde_json::Value::Null => vec![PERMISSION_CREATE_PACKAGE.to_string()],
            serde_json::Value::Array(p) => p
                .iter()
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| malformed("permissions must be an array of names".into()))?,
            _ => return Err(malformed("permissions must be an array of names".into())),
        };
        if let Some(unknown) = permissions.iter().find(|p| *p != PERMISSION_CREATE_PACKAGE) {
            return Err(TrustRequestError::Permission(
                unknown.chars().take(40).collect(),
            ));
        }
        if permissions.is_empty() {
            return Err(malformed(
                "at least one permission is required (--allow-publish)".into(),
            ));
        }
        Ok(TrustRequest {
            repository,
            workflow_file,
            environment,
            permissions: vec![PERMISSION_CREATE_PACKAGE.to_string()],
        })
    }

    /// Whether an existing configuration already says the same.
    pub(crate) fn same_as(&self, config: &TrustConfiguration) -> bool {
        self.repository == config.repository
            && self.workflow_file == config.workflow_file
            && self.environment.as_deref().map(str::to_ascii_lowercase)
                == config.environment.as_deref().map(str::to_ascii_lowercase)
    }
}

// npm compares workflow file names exactly, as GitHub runs them: `.YML` is another name.
#[allow(clippy::case_sensitive_file_extension_comparisons)]
fn valid_workflow_file(file: &str) -> bool {
    file.len() <= MAX_TEXT
        && (file.ends_with(".yml") || file.ends_with(".yaml"))
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn valid_environment(env: &str) -> bool {
    !env.trim().is_empty() && env.len() <= MAX_TEXT && !env.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> WorkflowRun {
        WorkflowRun {
            repository: "Acme/Widgets".into(),
            repository_owner_id: "42".into(),
            workflow_ref: "Acme/Widgets/.github/workflows/publish.yml@refs/heads/main".into(),
            environment: Some("npm".into()),
            event_name: "push".into(),
            run_id: "1".into(),
            run_attempt: "1".into(),
            sha: "abc".into(),
            git_ref: "refs/heads/main".into(),
        }
    }

    fn config() -> TrustConfiguration {
        TrustConfiguration {
            id: "t1".into(),
            repository: RepoRef::new("acme", "widgets").unwrap(),
            repository_owner_id: "42".into(),
            workflow_file: "publish.yml".into(),
            environment: Some("NPM".into()),
            permissions: vec![PERMISSION_CREATE_PACKAGE.into()],
            created: Utc::now(),
            created_by: "alice".into(),
        }
    }

    #[test]
    fn the_configured_run_is_admitted() {
        assert_eq!(run().workflow_file(), Some("publish.yml"));
        assert_eq!(config().admits(&run()), Ok(()));
    }

    #[test]
    fn every_other_run_is_refused_for_the_check_that_failed() {
        type Change = fn(&mut WorkflowRun);
        let cases: Vec<(Change, &str)> = vec![
            (
                |r| r.event_name = "pull_request_target".into(),
                "pull_request_target",
            ),
            (|r| r.event_name = "workflow_run".into(), "workflow_run"),
            (
                |r| r.repository = "acme/other".into(),
                "repository acme/other",
            ),
            (|r| r.repository_owner_id = "43".into(), "owner id differs"),
            (
                |r| r.workflow_ref = "Acme/Widgets/.github/workflows/ci.yml@refs/heads/main".into(),
                "is not .github/workflows/publish.yml",
            ),
            (
                |r| {
                    r.workflow_ref =
                        "Acme/Other/.github/workflows/publish.yml@refs/heads/main".into();
                },
                "is not .github/workflows/publish.yml",
            ),
            (
                |r| r.workflow_ref = "Acme/Widgets/.github/workflows/sub/publish.yml@x".into(),
                "is not .github/workflows/publish.yml",
            ),
            (
                |r| r.environment = Some("staging".into()),
                "environment staging",
            ),
            (|r| r.environment = None, "environment (none)"),
        ];
        for (change, expected) in cases {
            let mut r = run();
            change(&mut r);
            let refusal = config().admits(&r).unwrap_err().to_string();
            assert!(
                refusal.contains(expected),
                "{refusal:?} should mention {expected:?}"
            );
        }
        let no_permission = TrustConfiguration {
            permissions: vec!["createStagedPackage".into()],
            ..config()
        };
        assert!(matches!(
            no_permission.admits(&run()),
            Err(TrustMismatch::NoPublishPermission(_))
        ));
        let any_env = TrustConfiguration {
            environment: None,
            ..config()
        };
        assert_eq!(
            any_env.admits(&WorkflowRun {
                environment: None,
                ..run()
            }),
            Ok(())
        );
    }

    #[test]
    fn npm_trust_github_bodies() {
        let body = br#"[{"type":"github","claims":{"repository":"acme/widgets","workflow_ref":{"file":"publish.yml"},"environment":"npm"},"permissions":["createPackage"]}]"#;
        let parsed = TrustRequest::parse_all(body).unwrap();
        assert_eq!(
            parsed,
            vec![TrustRequest {
                repository: RepoRef::new("acme", "widgets").unwrap(),
                workflow_file: "publish.yml".into(),
                environment: Some("npm".into()),
                permissions: vec!["createPackage".into()],
            }]
        );
        assert!(parsed[0].same_as(&config()));
        let refused: [(&[u8], &str); 9] = [
            (b"nope", "not valid"),
            (b"[]", "no configuration"),
            (br#"[{"type":"gitlab","claims":{}}]"#, "gitlab is not supported"),
            (br#"[{"type":"github","claims":{"repository":"acme","workflow_ref":{"file":"p.yml"}}}]"#, "owner/name"),
            (br#"[{"type":"github","claims":{"repository":"acme/w","workflow_ref":{"file":"../p.yml"}}}]"#, "workflow file name"),
            (br#"[{"type":"github","claims":{"repository":"acme/w","workflow_ref":{"file":"p.sh"}}}]"#, "workflow file name"),
            (br#"[{"type":"github","claims":{"repository":"acme/w","workflow_ref":{"file":"p.yml"},"environment":""}}]"#, "environment"),
            (br#"[{"type":"github","claims":{"repository":"acme/w","workflow_ref":{"file":"p.yml"}},"permissions":["createStagedPackage"]}]"#, "staged publishing"),
            (br#"[{"type":"github","claims":{"repository":"acme/w","workflow_ref":{"file":"p.yml"}},"permissions":[]}]"#, "at least one permission"),
        ];
        for (body, expected) in refused {
            let err = TrustRequest::parse_all(body).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn wire_shape_is_what_npm_trust_prints_from() {
        let wire = config().to_wire();
        assert_eq!(wire["type"], "github");
        assert_eq!(wire["claims"]["repository"], "acme/widgets");
        assert_eq!(wire["claims"]["workflow_ref"]["file"], "publish.yml");
        assert_eq!(wire["claims"]["environment"], "NPM");
        assert_eq!(wire["permissions"][0], "createPackage");
        assert_eq!(wire["id"], "t1");
    }
}
