//! Verification and exchange, against keys generated at test time (`openssl genrsa`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::auth::kv::{Kv, Namespace};
use crate::domain::trust::{PERMISSION_CREATE_PACKAGE, TrustConfiguration};
use crate::domain::{PackageName, RepoRef};
use crate::storage::KvStore;
use crate::storage::embedded::EmbeddedMetadata;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "npm:registry.test";

/// An RSA key made now: its private DER (PKCS#1) and public components.
struct TestKey {
    kid: String,
    der: Vec<u8>,
    n: String,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

fn generate(kid: &str) -> TestKey {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("key.pem");
    let der = dir.path().join("key.der");
    let (pem, der) = (pem.to_str().unwrap(), der.to_str().unwrap());
    openssl(&["genrsa", "-traditional", "-out", pem, "2048"]);
    openssl(&[
        "rsa",
        "-in",
        pem,
        "-traditional",
        "-outform",
        "DER",
        "-out",
        der,
    ]);
    let modulus = String::from_utf8(openssl(&["rsa", "-in", pem, "-noout", "-modulus"])).unwrap();
    let hex_n = modulus.trim().strip_prefix("Modulus=").unwrap();
    TestKey {
        kid: kid.to_string(),
        der: std::fs::read(der).unwrap(),
        n: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hex::decode(hex_n).unwrap()),
    }
}

/// A key fetcher serving a settable set of keys and counting fetches.
#[derive(Clone, Default)]
struct FakeFetcher {
    keys: Arc<Mutex<Vec<(String, String)>>>,
    fetches: Arc<AtomicUsize>,
}

impl FakeFetcher {
    fn publish(&self, key: &TestKey) {
        self.keys
            .lock()
            .unwrap()
            .push((key.kid.clone(), key.n.clone()));
    }
}

#[async_trait]
impl KeyFetcher for FakeFetcher {
    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, OidcError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let jwks = json!({ "keys": self.keys.lock().unwrap().iter().map(|(kid, n)| json!({
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": "AQAB",
            "x5t": "ignored", "x5c": ["ignored"],
        })).collect::<Vec<_>>() });
        keys::parse_jwks(&jwks.to_string())
    }
}

fn claims() -> Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "nbf": now - 5, "iat": now - 5,
        "jti": format!("{:x}", rand::random::<u128>()),
        "sub": "repo:Acme/Widgets:ref:refs/heads/main",
        "repository": "Acme/Widgets", "repository_owner": "Acme", "repository_owner_id": "42",
        "repository_id": "7", "repository_visibility": "private",
        "workflow_ref": "Acme/Widgets/.github/workflows/publish.yml@refs/heads/main",
        "job_workflow_ref": "Acme/Widgets/.github/workflows/publish.yml@refs/heads/main",
        "event_name": "push", "ref": "refs/heads/main", "sha": "abc123", "run_id": "99",
        "run_attempt": "1", "environment": "npm",
    })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&key.der)).unwrap()
}

fn verifier(fetcher: &FakeFetcher) -> IdTokenVerifier {
    IdTokenVerifier::new(ISSUER, KeyCache::new(Box::new(fetcher.clone())))
}

fn setup() -> (TestKey, FakeFetcher, IdTokenVerifier) {
    let key = generate("k1");
    let fetcher = FakeFetcher::default();
    fetcher.publish(&key);
    let verifier = verifier(&fetcher);
    (key, fetcher, verifier)
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

#[tokio::test]
async fn a_good_token_verifies_and_describes_its_run() {
    let (key, _, verifier) = setup();
    let verified = verifier
        .verify(&sign(&key, &claims()), AUDIENCE)
        .await
        .unwrap();
    assert_eq!(verified.run.repository, "Acme/Widgets");
    assert_eq!(verified.run.workflow_file(), Some("publish.yml"));
    assert_eq!(verified.run.environment.as_deref(), Some("npm"));
    assert_eq!(verified.run.run_id, "99");
    assert_eq!(verified.run.git_ref, "refs/heads/main");
}

#[tokio::test]
async fn forged_and_unsigned_tokens_are_refused() {
    let (key, _, verifier) = setup();
    // Another key under the published key's id: the signature does not verify.
    let impostor = TestKey {
        kid: key.kid.clone(),
        ..generate("k1")
    };
    assert_eq!(
        verifier.verify(&sign(&impostor, &claims()), AUDIENCE).await,
        Err(OidcError::Signature)
    );
    // A valid token with its payload changed.
    let good = sign(&key, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(with(claims(), json!({"repository": "Evil/Repo"})).to_string());
    let tampered = format!("{}.{other}.{}", parts[0], parts[2]);
    assert_eq!(
        verifier.verify(&tampered, AUDIENCE).await,
        Err(OidcError::Signature)
    );
    // alg none.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
        b64(&claims())
    );
    assert!(
        matches!(verifier.verify(&unsigned, AUDIENCE).await, Err(OidcError::Algorithm(a)) if a == "none")
    );
    // HS256 with the public modulus as the secret (the classic key-confusion attack).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(key.n.as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&hs, AUDIENCE).await,
        Err(OidcError::Algorithm(_))
    ));
    assert!(matches!(
        verifier.verify("not a token", AUDIENCE).await,
        Err(OidcError::Malformed(_) | OidcError::Algorithm(_))
    ));
}

#[tokio::test]
async fn issuer_audience_and_times_are_checked_with_a_small_leeway() {
    let (key, _, verifier) = setup();
    let now = Utc::now().timestamp();
    let check = |changes: Value| {
        let token = sign(&key, &with(claims(), changes));
        let verifier = &verifier;
        async move { verifier.verify(&token, AUDIENCE).await.map(|_| ()) }
    };
    assert!(matches!(
        check(json!({"iss": "https://evil.test"})).await,
        Err(OidcError::Issuer { got, .. }) if got.contains("evil")
    ));
    assert!(matches!(
        check(json!({"aud": "npm:registry.npmjs.org"})).await,
        Err(OidcError::Audience { got, expected }) if got.contains("npmjs") && expected == AUDIENCE
    ));
    assert_eq!(
        check(json!({"exp": now - 20})).await,
        Ok(()),
        "within the leeway"
    );
    assert_eq!(
        check(json!({"exp": now - 120})).await,
        Err(OidcError::Expired)
    );
    assert_eq!(
        check(json!({"nbf": now + 20})).await,
        Ok(()),
        "within the leeway"
    );
    assert_eq!(
        check(json!({"nbf": now + 120})).await,
        Err(OidcError::NotYetValid)
    );
    assert_eq!(
        check(json!({"iat": now + 20})).await,
        Ok(()),
        "within the leeway"
    );
    assert_eq!(
        check(json!({"iat": now + 120})).await,
        Err(OidcError::IssuedInFuture)
    );
    assert!(matches!(
        check(json!({"repository_owner_id": null})).await,
        Err(OidcError::Claim(c)) if c == "repository_owner_id"
    ));
    assert!(matches!(
        check(json!({"nbf": null})).await,
        Err(OidcError::Claim(_))
    ));
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_keys_at_most_once_a_minute() {
    let (key, fetcher, verifier) = setup();
    let fetches = || fetcher.fetches.load(Ordering::SeqCst);
    verifier
        .verify(&sign(&key, &claims()), AUDIENCE)
        .await
        .unwrap();
    verifier
        .verify(&sign(&key, &claims()), AUDIENCE)
        .await
        .unwrap();
    assert_eq!(fetches(), 1, "the key set is cached");
    let stranger = TestKey {
        kid: "unknown".into(),
        ..generate("x")
    };
    assert_eq!(
        verifier.verify(&sign(&stranger, &claims()), AUDIENCE).await,
        Err(OidcError::UnknownKey("unknown".into()))
    );
    assert_eq!(fetches(), 1, "fetched less than a minute ago: not again");

    let (fetcher, t0) = (FakeFetcher::default(), Instant::now());
    fetcher.publish(&key);
    let fetches = || fetcher.fetches.load(Ordering::SeqCst);
    let cache = KeyCache::new(Box::new(fetcher.clone()));
    let at = |s: u64| t0 + Duration::from_secs(s);
    cache.key_at("k1", at(0)).await.unwrap();
    assert!(cache.key_at("k2", at(1)).await.is_err());
    assert_eq!(fetches(), 1);
    // The issuer rotates a new key in: it is fetched once a minute has passed.
    fetcher.publish(&generate("k2"));
    assert!(cache.key_at("k2", at(30)).await.is_err());
    assert_eq!(fetches(), 1, "a flood of unknown kids costs no fetches");
    cache.key_at("k2", at(61)).await.unwrap();
    assert_eq!(fetches(), 2);
    assert!(cache.key_at("k3", at(62)).await.is_err());
    assert_eq!(fetches(), 2);
    // Known keys are used for an hour, then the set is fetched again.
    cache.key_at("k1", at(1800)).await.unwrap();
    assert_eq!(fetches(), 2);
    cache.key_at("k1", at(2 * 3600)).await.unwrap();
    assert_eq!(fetches(), 3);
}

/// A fetcher whose fetch waits until the test lets it finish.
struct HeldFetcher {
    inner: FakeFetcher,
    release: tokio::sync::watch::Receiver<bool>,
}

#[async_trait]
impl KeyFetcher for HeldFetcher {
    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, OidcError> {
        let mut release = self.release.clone();
        release.wait_for(|go| *go).await.unwrap();
        self.inner.fetch().await
    }
}

#[tokio::test]
async fn callers_during_a_fetch_wait_for_it_and_fetch_once() {
    let inner = FakeFetcher::default();
    inner.publish(&generate("k1"));
    let (go, release) = tokio::sync::watch::channel(false);
    let cache = KeyCache::new(Box::new(HeldFetcher {
        inner: inner.clone(),
        release,
    }));
    let now = Instant::now();
    let first = cache.key_at("k1", now);
    let second = cache.key_at("k1", now);
    tokio::pin!(first, second);
    assert!(futures_util::poll!(&mut first).is_pending(), "fetching");
    // Asked while the first caller's fetch is under way: it waits for that fetch instead of
    // hearing that a valid key is unknown.
    assert!(futures_util::poll!(&mut second).is_pending(), "waits");
    go.send(true).unwrap();
    assert!(first.await.is_ok());
    assert!(second.await.is_ok());
    assert_eq!(
        inner.fetches.load(Ordering::SeqCst),
        1,
        "one fetch for both"
    );
}

fn configuration(id: &str, workflow: &str) -> TrustConfiguration {
    TrustConfiguration {
        id: id.into(),
        repository: RepoRef::new("acme", "widgets").unwrap(),
        repository_owner_id: "42".into(),
        workflow_file: workflow.into(),
        environment: None,
        permissions: vec![PERMISSION_CREATE_PACKAGE.into()],
        created: Utc::now(),
        created_by: "alice".into(),
    }
}

async fn seed(kv: &Arc<EmbeddedMetadata>, package: &PackageName, c: &TrustConfiguration) {
    crate::auth::trust::save(&Kv::new(kv.clone()), package, c)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_exchange_mints_one_token_per_id_token_for_admitted_runs_only() {
    let (key, fetcher, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(EmbeddedMetadata::open(&dir.path().join("m.redb")).unwrap());
    let trusted = TrustedPublishing::new(verifier(&fetcher), Kv::new(kv.clone()));
    let widgets = PackageName::parse("@acme/widgets").unwrap();
    let other = PackageName::parse("@acme/other").unwrap();
    seed(&kv, &widgets, &configuration("c1", "release.yml")).await;
    seed(&kv, &widgets, &configuration("c2", "publish.yml")).await;

    // A package without configurations and one whose configurations name another repository
    // answer alike.
    let token = sign(&key, &claims());
    let nothing = trusted
        .exchange(&other, &token, AUDIENCE)
        .await
        .unwrap_err();
    assert!(
        matches!(nothing, ExchangeError::NoTrustedPublisher { .. }),
        "{nothing}"
    );
    let outsider = sign(&key, &with(claims(), json!({"repository": "mallory/x"})));
    let refused = trusted
        .exchange(&widgets, &outsider, AUDIENCE)
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "no trusted publisher of @acme/widgets matches repository mallory/x (or the package does not exist); configure one with npm trust github"
    );
    // A run of the configured repository hears what did not match.
    let ci = sign(
        &key,
        &with(
            claims(),
            json!({"workflow_ref": "Acme/Widgets/.github/workflows/ci.yml@refs/heads/main"}),
        ),
    );
    let refused = trusted.exchange(&widgets, &ci, AUDIENCE).await.unwrap_err();
    assert!(
        matches!(refused, ExchangeError::Mismatch { .. }),
        "{refused}"
    );
    let prt = sign(
        &key,
        &with(claims(), json!({"event_name": "pull_request_target"})),
    );
    let refused = trusted
        .exchange(&widgets, &prt, AUDIENCE)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("pull_request_target"),
        "{refused}"
    );

    // Refusals did not use the ID token up; the exchange does, once.
    let (minted, grant) = trusted.exchange(&widgets, &token, AUDIENCE).await.unwrap();
    assert!(minted.starts_with(exchange::TOKEN_PREFIX));
    assert_eq!(grant.configuration_id, "c2");
    assert_eq!(grant.package, "@acme/widgets");
    assert!(grant.expires <= Utc::now() + chrono::Duration::minutes(30));
    assert!(matches!(
        trusted.exchange(&widgets, &token, AUDIENCE).await,
        Err(ExchangeError::Replayed)
    ));
    assert_eq!(trusted.grant(&minted).await.unwrap(), Some(grant));
    assert_eq!(trusted.grant("tpub_made-up").await.unwrap(), None);
    // Stored hashed: the token itself is nowhere in the store.
    let stored = Kv::new(kv.clone())
        .list(&Namespace::MintedTokens)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        !stored[0].0.contains(&minted) && !String::from_utf8_lossy(&stored[0].1).contains(&minted)
    );
}

#[tokio::test]
async fn put_new_creates_once_and_treats_expired_entries_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let kv = EmbeddedMetadata::open(&dir.path().join("m.redb")).unwrap();
    let later = Some(Utc::now() + chrono::Duration::minutes(5));
    let past = Some(Utc::now() - chrono::Duration::seconds(1));
    assert!(kv.put_new("ns", "a", b"1", later).await.unwrap());
    assert!(!kv.put_new("ns", "a", b"2", later).await.unwrap());
    assert_eq!(
        KvStore::get(&kv, "ns", "a").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    KvStore::put(&kv, "ns", "b", b"old", past).await.unwrap();
    assert!(kv.put_new("ns", "b", b"new", later).await.unwrap());
    assert_eq!(
        KvStore::get(&kv, "ns", "b").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    // Racing creators: exactly one wins.
    let kv = Arc::new(kv);
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let kv = kv.clone();
            tokio::spawn(async move { kv.put_new("ns", "race", b"x", None).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        wins += usize::from(r.await.unwrap());
    }
    assert_eq!(wins, 1);
}
