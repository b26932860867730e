//! GitHub's OAuth web application flow, as GitHub documents it ("Authorizing OAuth apps"): the
//! authorize URL a person is sent to, and the exchange of the code GitHub sends back for a
//! `gho_` token. The exchange answers its errors with HTTP 200 and an `error` field, so the
//! field is checked before the token.

use octocrab::Octocrab;
use serde::Deserialize;

use crate::config::OauthConfig;
use crate::secret::Secret;

/// The scope asked for: reading private repositories' packages, and publishing, need `repo`
/// (no OAuth scope grants read-only access to private code).
pub const SCOPE: &str = "repo";

/// Why a sign-in with GitHub failed.
#[derive(Debug, thiserror::Error)]
pub enum OauthError {
    /// GitHub refused the exchange (an expired or reused code, a wrong secret or redirect URI).
    #[error("GitHub refused the sign-in: {0}")]
    Refused(String),
    /// GitHub could not be reached or answered something else.
    #[error("GitHub cannot be reached to complete the sign-in: {0}")]
    Unavailable(String),
}

/// The registry's OAuth app on GitHub.
pub struct OauthApp {
    client_id: String,
    client_secret: Secret,
    github_url: String,
    /// Built on first use, like the API client.
    client: std::sync::OnceLock<Result<Octocrab, String>>,
}

/// The exchange's answer: a token, or an error (both with HTTP 200).
#[derive(Deserialize)]
struct Exchanged {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl OauthApp {
    /// The app of `config`.
    pub fn new(config: &OauthConfig) -> Self {
        Self {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            github_url: config.github_url.clone(),
            client: std::sync::OnceLock::new(),
        }
    }

    /// Where to send a person to sign in: GitHub's authorize page for this app, coming back to
    /// `redirect_uri` with `state`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> String {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", SCOPE)
            .append_pair("state", state)
            .append_pair("allow_signup", "false")
            .finish();
        format!("{}/login/oauth/authorize?{query}", self.github_url)
    }

    fn client(&self) -> Result<&Octocrab, OauthError> {
        self.client
            .get_or_init(|| {
                Octocrab::builder()
                    .base_uri(&self.github_url)
                    .map_err(|e| format!("GITHUB_URL '{}': {e}", self.github_url))?
                    .set_connect_timeout(Some(std::time::Duration::from_secs(3)))
                    .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| OauthError::Unavailable(e.clone()))
    }

    /// Exchanges the `code` GitHub sent to `redirect_uri` for the person's token.
    pub async fn exchange(&self, code: &str, redirect_uri: &str) -> Result<Secret, OauthError> {
        let client = self.client()?;
        let uri: axum::http::Uri = format!("{}/login/oauth/access_token", self.github_url)
            .parse()
            .map_err(|e| OauthError::Unavailable(format!("GITHUB_URL: {e}")))?;
        let body = serde_json::json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose(),
            "code": code,
            "redirect_uri": redirect_uri,
        });
        let request = axum::http::Request::builder()
            .method(axum::http::Method::POST)
            .uri(uri)
            .header(axum::http::header::ACCEPT, "application/json");
        let request = client
            .build_request(request, Some(&body))
            .map_err(|e| OauthError::Unavailable(e.to_string()))?;
        let response = client
            .execute(request)
            .await
            .map_err(|e| OauthError::Unavailable(e.to_string()))?;
        let status = response.status();
        let text = client
            .body_to_string(response)
            .await
            .map_err(|e| OauthError::Unavailable(e.to_string()))?;
        if !status.is_success() {
            return Err(OauthError::Unavailable(format!("HTTP {status}")));
        }
        let answer = parse_exchange(&text)
            .ok_or_else(|| OauthError::Unavailable("the answer was not understood".into()))?;
        match (answer.access_token, answer.error) {
            (_, Some(error)) => Err(OauthError::Refused(match answer.error_description {
                Some(description) => format!("{error}: {description}"),
                None => error,
            })),
            (Some(token), None) if !token.is_empty() => Ok(Secret::new(token)),
            _ => Err(OauthError::Unavailable("the answer held no token".into())),
        }
    }
}

/// The exchange's answer, JSON (as asked for) or form-encoded (GitHub's default).
fn parse_exchange(text: &str) -> Option<Exchanged> {
    if let Ok(answer) = serde_json::from_str::<Exchanged>(text) {
        return Some(answer);
    }
    let mut answer = Exchanged {
        access_token: None,
        error: None,
        error_description: None,
    };
    let mut any = false;
    for (key, value) in url::form_urlencoded::parse(text.as_bytes()) {
        any = true;
        match &*key {
            "access_token" => answer.access_token = Some(value.into_owned()),
            "error" => answer.error = Some(value.into_owned()),
            "error_description" => answer.error_description = Some(value.into_owned()),
            _ => {}
        }
    }
    any.then_some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> OauthApp {
        OauthApp::new(&OauthConfig {
            client_id: "Iv1.id".into(),
            client_secret: Secret::new("shh"),
            github_url: "https://github.com".into(),
        })
    }

    #[test]
    fn the_authorize_url_names_the_app_the_callback_the_scope_and_the_state() {
        let url = app().authorize_url("https://reg.example/-/web/callback", "st ate");
        assert_eq!(
            url,
            "https://github.com/login/oauth/authorize?client_id=Iv1.id&redirect_uri=https%3A%2F%2Freg.example%2F-%2Fweb%2Fcallback&scope=repo&state=st+ate&allow_signup=false"
        );
    }

    #[test]
    fn exchange_answers_are_read_in_either_format_errors_first() {
        let json =
            parse_exchange(r#"{"access_token":"gho_x","scope":"repo","token_type":"bearer"}"#)
                .unwrap();
        assert_eq!(json.access_token.as_deref(), Some("gho_x"));
        let form = parse_exchange("access_token=gho_y&scope=repo&token_type=bearer").unwrap();
        assert_eq!(form.access_token.as_deref(), Some("gho_y"));
        let error = parse_exchange(
            r#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#,
        )
        .unwrap();
        assert_eq!(error.error.as_deref(), Some("bad_verification_code"));
        assert!(parse_exchange("").is_none());
    }
}
