//! Registry tokens: what `npm login` hands out. A JWT (HS256, signed with
//! `REGISTRY_TOKEN_SECRET`) with subject, expiry, scope and an id; the id names a record in the
//! store that holds the user's GitHub token, sealed (ChaCha20-Poly1305 under a key derived from
//! the same secret, bound to the id). Permissions therefore stay GitHub's: each request with a
//! registry token is checked with the sealed GitHub token. Revoking deletes the record, which
//! makes the JWT worthless at once; the JWT itself is never stored.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The issuer every registry token carries.
pub const ISSUER: &str = "npm-registry";

/// What a registry token may do: `npm login` and `npm token create` make publish tokens,
/// `npm token create --read-only` read-only ones. Claims spell it `"publish"` or `"read"`, and a
/// claim naming anything else does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenScope {
    /// Read and write, as its user may.
    #[serde(rename = "publish")]
    Publish,
    /// Read only: no write, and no token management (a leaked one cannot mint a publish token).
    #[serde(rename = "read")]
    ReadOnly,
}

impl TokenScope {
    /// The scope `npm token create` asks for with its `readonly` flag.
    pub(crate) fn from_readonly(readonly: bool) -> Self {
        if readonly {
            TokenScope::ReadOnly
        } else {
            TokenScope::Publish
        }
    }

    /// Whether the token only reads.
    pub(crate) fn is_read_only(self) -> bool {
        self == TokenScope::ReadOnly
    }
}

/// A token record stores its scope as npm shows it, `"readonly": true|false`.
mod readonly_flag {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::TokenScope;

    // serde's `serialize_with` passes a reference, whatever the type.
    #[allow(clippy::trivially_copy_pass_by_ref)]
    pub(crate) fn serialize<S: Serializer>(scope: &TokenScope, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(scope.is_read_only())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TokenScope, D::Error> {
        bool::deserialize(d).map(TokenScope::from_readonly)
    }
}

/// A registry token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer, always `ISSUER`.
    pub iss: String,
    /// The GitHub login.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Token id: the record that holds the sealed GitHub token.
    pub jti: String,
    /// What it may do.
    pub scope: TokenScope,
}

/// The stored side of a registry token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token id.
    pub jti: String,
    /// The GitHub login.
    pub login: String,
    /// When it was issued.
    pub created: DateTime<Utc>,
    /// When it expires.
    pub expires: DateTime<Utc>,
    /// What it may do (stored as `readonly`).
    #[serde(rename = "readonly", with = "readonly_flag")]
    pub scope: TokenScope,
    /// The first characters of the JWT, shown by `npm token list` (never enough to use it).
    pub preview: String,
    /// The GitHub token: nonce ‖ ciphertext ‖ tag, base64.
    pub sealed: String,
    /// The token this one was minted with (its root), which it cannot outlive: revoking that one
    /// revokes this one too. `None` for tokens from `npm login` or a GitHub token.
    #[serde(default)]
    pub parent: Option<String>,
}

/// What a token minted with a registry token inherits from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// The root token's id (a token minted with a minted token depends on the same root).
    pub root: String,
    /// When the minting token expires: the new one expires no later.
    pub expires: DateTime<Utc>,
}

/// Why a registry token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the registry token is invalid")]
    Invalid,
    #[error("the registry token has expired")]
    Expired,
}

/// Issues and checks registry tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    seal: LessSafeKey,
    /// How long tokens live.
    pub lifetime: Duration,
}

impl TokenKeys {
    /// Keys derived from the configured secret.
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        let seal_key =
            sha2::Sha256::digest([b"npm-registry seal v1\0".as_slice(), secret].concat());
        let seal =
            LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &seal_key).expect("32-byte key"));
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            seal,
            lifetime,
        }
    }

    /// Makes a token for `login` carrying `github_token`; returns the JWT and its record. A token
    /// minted with another registry token (`lineage`) expires with it and depends on its root.
    pub fn issue(
        &self,
        login: &str,
        github_token: &str,
        scope: TokenScope,
        lineage: Option<&Lineage>,
    ) -> Result<(String, TokenRecord), TokenError> {
        self.issue_until(
            login,
            github_token,
            scope,
            lineage,
            lineage.map(|l| l.expires),
        )
    }

    /// `issue`, expiring no later than `until` (a web session's token lives as long as the
    /// session).
    pub fn issue_until(
        &self,
        login: &str,
        github_token: &str,
        scope: TokenScope,
        lineage: Option<&Lineage>,
        until: Option<DateTime<Utc>>,
    ) -> Result<(String, TokenRecord), TokenError> {
        let now = Utc::now();
        let jti = hex::encode(rand::random::<[u8; 16]>());
        let expires = match until {
            Some(until) => (now + self.lifetime).min(until),
            None => now + self.lifetime,
        };
        let claims = Claims {
            iss: ISSUER.into(),
            sub: login.into(),
            exp: expires.timestamp(),
            iat: now.timestamp(),
            jti: jti.clone(),
            scope,
        };
        let jwt = self.sign(&claims)?;
        let record = TokenRecord {
            jti: jti.clone(),
            login: login.into(),
            created: now,
            expires,
            scope,
            preview: jwt.chars().take(12).collect(),
            sealed: self.seal(github_token, &jti)?,
            parent: lineage.map(|l| l.root.clone()),
        };
        Ok((jwt, record))
    }

    /// The token carrying `claims`. Signing is deterministic (HMAC), so the same claims give the
    /// same token: a web login keeps the claims of the token it issued and signs them again when
    /// npm collects it, and the token itself is never stored.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)
    }

    /// Checks signature (HS256 only: `alg: none` and every other algorithm are refused), issuer
    /// and expiry.
    pub fn verify(&self, jwt: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(jwt, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// The claims of a token this registry signed, expired or not: what `npm token revoke
    /// <token>` names a token by.
    pub fn claims_of_any_age(&self, jwt: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["iss", "sub"]);
        validation.validate_exp = false;
        jsonwebtoken::decode::<Claims>(jwt, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|_| TokenError::Invalid)
    }

    fn seal(&self, github_token: &str, jti: &str) -> Result<String, TokenError> {
        let nonce_bytes: [u8; 12] = rand::random();
        let mut data = github_token.as_bytes().to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(jti.as_bytes()),
                &mut data,
            )
            .map_err(|_| TokenError::Invalid)?;
        Ok(base64::engine::general_purpose::STANDARD
            .encode([nonce_bytes.as_slice(), &data].concat()))
    }

    /// The GitHub token sealed in a record (which must belong to `jti`).
    pub(crate) fn unseal(&self, record: &TokenRecord) -> Result<String, TokenError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&record.sealed)
            .map_err(|_| TokenError::Invalid)?;
        if raw.len() < 12 {
            return Err(TokenError::Invalid);
        }
        let (nonce, rest) = raw.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TokenError::Invalid)?;
        let mut data = rest.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(record.jti.as_bytes()), &mut data)
            .map_err(|_| TokenError::Invalid)?;
        String::from_utf8(plain.to_vec()).map_err(|_| TokenError::Invalid)
    }
}

/// True when a bearer token has the shape of a JWT (three base64url parts), i.e. is meant as a
/// registry token rather than a GitHub token.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"test secret made at test time", Duration::days(30))
    }

    #[test]
    fn issue_verify_unseal() {
        let k = keys();
        let (jwt, record) = k
            .issue("alice", "ghp_example", TokenScope::Publish, None)
            .unwrap();
        assert!(looks_like_jwt(&jwt));
        let claims = k.verify(&jwt).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.scope),
            ("alice", TokenScope::Publish)
        );
        assert_eq!(claims.jti, record.jti);
        assert_eq!(k.unseal(&record).unwrap(), "ghp_example");
        assert!(!record.sealed.contains("ghp_example"));
        // The claims sign into the same token (what a web login relies on), and nothing of the
        // token but its preview is in the record.
        assert_eq!(k.sign(&claims).unwrap(), jwt);
        assert!(!serde_json::to_string(&record).unwrap().contains(&jwt[12..]));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let k = keys();
        let (jwt, mut record) = k
            .issue("alice", "ghp_example", TokenScope::Publish, None)
            .unwrap();
        let other = TokenKeys::new(b"another secret", Duration::days(30));
        assert_eq!(other.verify(&jwt), Err(TokenError::Invalid), "wrong key");
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let payload = jwt.split('.').nth(1).unwrap();
        let none = format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        assert_eq!(k.verify(&none), Err(TokenError::Invalid), "alg none");
        let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .unwrap(),
        )
        .unwrap();
        claims["sub"] = "mallory".into();
        parts[1] = b64(&claims.to_string());
        assert_eq!(
            k.verify(&parts.join(".")),
            Err(TokenError::Invalid),
            "tampered claims"
        );
        let expired = TokenKeys::new(b"test secret made at test time", Duration::seconds(-10))
            .issue("alice", "x", TokenScope::Publish, None)
            .unwrap()
            .0;
        assert_eq!(k.verify(&expired), Err(TokenError::Expired));
        record.jti = "another".into();
        assert_eq!(
            k.unseal(&record),
            Err(TokenError::Invalid),
            "a record moved to another id does not open"
        );
    }

    /// Records and claims written before the scope was typed decode, and encode as they were.
    #[test]
    fn stored_records_and_claims_keep_their_format() {
        let publish = r#"{"jti":"5f0c8a3c2b1e4d6f8a9b0c1d2e3f4a5b","login":"alice","created":"2026-01-02T03:04:05.123456789Z","expires":"2026-02-01T03:04:05.123456789Z","readonly":false,"preview":"eyJ0eXAiOiJK","sealed":"bm9uY2U=","parent":null}"#;
        let read_only = r#"{"jti":"6a","login":"Alice","created":"2026-01-02T03:04:05Z","expires":"2026-02-01T03:04:05Z","readonly":true,"preview":"eyJ0eXAiOiJK","sealed":"bm9uY2U=","parent":"5f0c8a3c2b1e4d6f8a9b0c1d2e3f4a5b"}"#;
        for (stored, scope) in [
            (publish, TokenScope::Publish),
            (read_only, TokenScope::ReadOnly),
        ] {
            let record: TokenRecord = serde_json::from_str(stored).unwrap();
            assert_eq!(record.scope, scope);
            assert_eq!(serde_json::to_string(&record).unwrap(), stored);
        }
        // Records from before tokens were minted with tokens have no `parent`.
        let old = r#"{"jti":"7b","login":"bob","created":"2025-06-01T00:00:00Z","expires":"2025-07-01T00:00:00Z","readonly":true,"preview":"eyJ","sealed":"eA=="}"#;
        let record: TokenRecord = serde_json::from_str(old).unwrap();
        assert_eq!((record.scope, record.parent), (TokenScope::ReadOnly, None));

        let claims = |scope: &str| {
            format!(
                r#"{{"iss":"npm-registry","sub":"alice","exp":1800000000,"iat":1790000000,"jti":"6a","scope":"{scope}"}}"#
            )
        };
        for (spelled, scope) in [
            ("publish", TokenScope::Publish),
            ("read", TokenScope::ReadOnly),
        ] {
            let decoded: Claims = serde_json::from_str(&claims(spelled)).unwrap();
            assert_eq!(decoded.scope, scope);
            assert_eq!(serde_json::to_string(&decoded).unwrap(), claims(spelled));
        }
        assert!(
            serde_json::from_str::<Claims>(&claims("admin")).is_err(),
            "a scope the registry never issues is no scope at all"
        );
    }

    #[test]
    fn a_read_only_token_says_so_in_its_claims_and_its_record() {
        let k = keys();
        let (jwt, record) = k
            .issue("alice", "ghp_example", TokenScope::ReadOnly, None)
            .unwrap();
        assert_eq!(k.verify(&jwt).unwrap().scope, TokenScope::ReadOnly);
        assert!(record.scope.is_read_only());
        let stored: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(stored["readonly"], serde_json::Value::Bool(true));
    }
}
