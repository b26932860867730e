//! Where authorisation keeps its records in the KV store: one type names every namespace and
//! builds every key, so no code spells a key by hand and a secret (a GitHub token, a minted
//! token) is hashed by the one constructor that takes it. The key strings are storage format:
//! data written under them must still be found, so the test below pins each one.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Digest;

use crate::domain::{PackageName, RepoRef};
use crate::storage::{Consistency, KvStore, StoreError};

/// A namespace of the KV store: a group of records that can be listed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// GitHub answers, keyed by what was asked and the hash of the token that asked, spread
    /// over 16 shards by the first hex digit of the id's SHA-256: each shard is a partition of
    /// its own on DynamoDB (`docs/scaling.md`, part 5), so a fleet of per-run tokens does not
    /// meet in one.
    GithubCache(GithubCacheShard),
    /// One user's registry-token records, keyed by token id (the login is matched in any case).
    Tokens {
        /// The GitHub login, as given (the key lowercases it).
        login: String,
    },
    /// One package's trust configurations, keyed by configuration id.
    Trust(PackageName),
    /// Tokens the trusted-publishing exchange minted, keyed by the token's SHA-256.
    MintedTokens,
    /// ID tokens already exchanged, keyed by the SHA-256 of issuer and `jti`.
    ExchangedIdTokens,
    /// Web sign-ins under way (between the redirect to GitHub and its callback), keyed by the
    /// SHA-256 of their `state`.
    WebSignIns,
    /// `npm login --auth-type=web` logins under way, keyed by the SHA-256 of their done URL's
    /// secret.
    WebLogins,
}

/// One of the 16 shards of `Namespace::GithubCache` (0 to 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GithubCacheShard(u8);

impl GithubCacheShard {
    /// The shard of the answer under `id`: the first hex digit of its SHA-256.
    fn of(id: &str) -> Self {
        GithubCacheShard(sha2::Sha256::digest(id.as_bytes())[0] >> 4)
    }
}

impl Namespace {
    /// The namespace of `login`'s registry tokens.
    pub(crate) fn tokens(login: &str) -> Self {
        Namespace::Tokens {
            login: login.to_string(),
        }
    }

    /// The namespace of `name`'s trust configurations.
    pub(crate) fn trust(name: &PackageName) -> Self {
        Namespace::Trust(name.clone())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Namespace::GithubCache(GithubCacheShard(shard)) => write!(f, "github-cache/{shard:x}"),
            Namespace::Tokens { login } => write!(f, "tokens/{}", login.to_ascii_lowercase()),
            Namespace::Trust(name) => write!(f, "trust/{}", name.as_str()),
            Namespace::MintedTokens => f.write_str("trusted-publishing/tokens"),
            Namespace::ExchangedIdTokens => f.write_str("trusted-publishing/jti"),
            Namespace::WebSignIns => f.write_str("web/sign-ins"),
            Namespace::WebLogins => f.write_str("web/logins"),
        }
    }
}

/// The key of one record: its namespace and its id there. Built only by the constructors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvKey {
    namespace: Namespace,
    id: String,
}

/// SHA-256, hex: what keys hold in place of a secret.
pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// `owner/name` in lower case: GitHub matches repository names in any case.
fn repo_path(repo: &RepoRef) -> String {
    format!(
        "{}/{}",
        repo.owner.to_ascii_lowercase(),
        repo.name.to_ascii_lowercase()
    )
}

impl KvKey {
    fn new(namespace: Namespace, id: String) -> Self {
        Self { namespace, id }
    }

    /// A GitHub answer under `id`, in its shard.
    fn github_answer(id: String) -> Self {
        Self::new(Namespace::GithubCache(GithubCacheShard::of(&id)), id)
    }

    /// Whom `token` acts for (`GET /user`).
    pub(crate) fn token_owner(token: &str) -> Self {
        Self::github_answer(format!("owner/{}", sha256_hex(token)))
    }

    /// What `token` (or an anonymous caller) may do in `repo` (`GET /repos/…`).
    pub(crate) fn repo_access(token: Option<&str>, repo: &RepoRef) -> Self {
        let who = token.map_or_else(|| "anonymous".to_string(), sha256_hex);
        Self::github_answer(format!("repo/{who}/{}", repo_path(repo)))
    }

    /// Whether installation `token` reaches `repo` (`GET /repos/…` as the installation).
    pub(crate) fn installation_repo(token: &str, repo: &RepoRef) -> Self {
        Self::github_answer(format!(
            "installation-repo/{}/{}",
            sha256_hex(token),
            repo_path(repo)
        ))
    }

    /// What installation `token` reaches (`GET /installation/repositories`).
    pub(crate) fn installation_repositories(token: &str) -> Self {
        Self::github_answer(format!("installation-repositories/{}", sha256_hex(token)))
    }

    /// The record of `login`'s registry token `jti`.
    pub(crate) fn registry_token(login: &str, jti: &str) -> Self {
        Self::new(Namespace::tokens(login), jti.to_string())
    }

    /// Trust configuration `id` of `name`.
    pub(crate) fn trust_configuration(name: &PackageName, id: &str) -> Self {
        Self::new(Namespace::trust(name), id.to_string())
    }

    /// The grant of a token the exchange minted (keyed by its hash, never the token).
    pub(crate) fn minted_token(token: &str) -> Self {
        Self::new(Namespace::MintedTokens, sha256_hex(token))
    }

    /// The mark that the ID token `jti` of `issuer` was exchanged.
    pub(crate) fn exchanged_id_token(issuer: &str, jti: &str) -> Self {
        Self::new(
            Namespace::ExchangedIdTokens,
            sha256_hex(&format!("{issuer}\n{jti}")),
        )
    }

    /// A web sign-in under way, by its `state` (kept hashed).
    pub(crate) fn web_sign_in(state: &str) -> Self {
        Self::new(Namespace::WebSignIns, sha256_hex(state))
    }

    /// An npm web login under way, by the SHA-256 of its done URL's secret (the login URL
    /// carries this hash, the done URL the secret).
    pub(crate) fn web_login(secret_hash: &str) -> Self {
        Self::new(Namespace::WebLogins, secret_hash.to_ascii_lowercase())
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The id within the namespace.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }
}

/// The KV store as authorisation uses it: addressed by `KvKey` and `Namespace` only.
#[derive(Clone)]
pub struct Kv(Arc<dyn KvStore>);

impl Kv {
    /// Typed access to `store`.
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        Self(store)
    }

    /// The value under `key`, if present and not expired.
    pub(crate) async fn get(&self, key: &KvKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(&key.namespace.to_string(), &key.id).await
    }

    /// The value under `key`, read as recent as `consistency` asks.
    pub(crate) async fn get_with(
        &self,
        key: &KvKey,
        consistency: Consistency,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.0
            .get_with(&key.namespace.to_string(), &key.id, consistency)
            .await
    }

    /// The JSON value under `key`; one that does not decode reads as absent.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        key: &KvKey,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .get(key)
            .await?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// The JSON value under `key`, read as recent as `consistency` asks; one that does not
    /// decode reads as absent.
    pub(crate) async fn get_json_with<T: DeserializeOwned>(
        &self,
        key: &KvKey,
        consistency: Consistency,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .get_with(key, consistency)
            .await?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Stores (or replaces) a value.
    pub(crate) async fn put(
        &self,
        key: &KvKey,
        value: &[u8],
        expires: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.0
            .put(&key.namespace.to_string(), &key.id, value, expires)
            .await
    }

    /// Stores (or replaces) a value as JSON.
    pub(crate) async fn put_json<T: Serialize>(
        &self,
        key: &KvKey,
        value: &T,
        expires: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Internal(e.to_string()))?;
        self.put(key, &bytes, expires).await
    }

    /// Stores a value only if no live entry has this key (`KvStore::put_new`).
    pub(crate) async fn put_new(
        &self,
        key: &KvKey,
        value: &[u8],
        expires: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        self.0
            .put_new(&key.namespace.to_string(), &key.id, value, expires)
            .await
    }

    /// Removes a value; removing an absent one succeeds.
    pub(crate) async fn delete(&self, key: &KvKey) -> Result<(), StoreError> {
        self.0.delete(&key.namespace.to_string(), &key.id).await
    }

    /// Every live `(id, value)` in `namespace`.
    pub(crate) async fn list(
        &self,
        namespace: &Namespace,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.0.list(&namespace.to_string()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact strings every namespace stores under: records written before must be found.
    #[test]
    fn every_key_is_spelled_as_it_is_stored() {
        // `printf %s ghp_x | sha256sum`, and so on: computed apart from the code under test. A
        // GitHub answer's shard is the first hex digit of `printf %s <id> | sha256sum`. (Answers
        // cached before the shards, under `github-cache`, are not found: GitHub is asked again.)
        let token = "ghp_x";
        let hashed = "9d8b0c156f7015e96f16e5b35369fa0fdb3ae75cbb70b4588e44547e63b53fa9";
        let repo = RepoRef::new("Acme", "Widgets").unwrap();
        let name = PackageName::parse("@acme/widgets").unwrap();
        let cases = [
            (
                KvKey::token_owner(token),
                "github-cache/a",
                format!("owner/{hashed}"),
            ),
            (
                KvKey::repo_access(Some(token), &repo),
                "github-cache/e",
                format!("repo/{hashed}/acme/widgets"),
            ),
            (
                KvKey::repo_access(None, &repo),
                "github-cache/1",
                "repo/anonymous/acme/widgets".into(),
            ),
            (
                KvKey::installation_repo(token, &repo),
                "github-cache/6",
                format!("installation-repo/{hashed}/acme/widgets"),
            ),
            (
                KvKey::installation_repositories(token),
                "github-cache/5",
                format!("installation-repositories/{hashed}"),
            ),
            (
                KvKey::registry_token("Alice", "0123abcd"),
                "tokens/alice",
                "0123abcd".into(),
            ),
            (
                KvKey::trust_configuration(&name, "c1"),
                "trust/@acme/widgets",
                "c1".into(),
            ),
            (
                KvKey::minted_token("tpub_x"),
                "trusted-publishing/tokens",
                "4e8d02be3820e6a64657736318ce1e6bf22d8f03c8f39a498e7dadd48b97f4a3".into(),
            ),
            (
                KvKey::exchanged_id_token("https://issuer.test", "j1"),
                "trusted-publishing/jti",
                "d3c6eb6fa8e40d44c6abd04bc6ee329fdf79eea049a5c9eea7a313dde49ed547".into(),
            ),
            (KvKey::web_sign_in(token), "web/sign-ins", hashed.into()),
            (KvKey::web_login(hashed), "web/logins", hashed.into()),
        ];
        for (key, namespace, id) in cases {
            assert_eq!(
                (key.namespace().to_string().as_str(), key.id()),
                (namespace, id.as_str())
            );
        }
        assert_eq!(
            Namespace::GithubCache(GithubCacheShard(15)).to_string(),
            "github-cache/f"
        );
        assert_eq!(Namespace::tokens("BoB").to_string(), "tokens/bob");
        assert_eq!(Namespace::trust(&name).to_string(), "trust/@acme/widgets");
    }
}
