//! Token parsing: `auth::bearer` over arbitrary `Authorization` values, `tokens::looks_like_jwt`,
//! `TokenKeys::verify` and `claims_of_any_age`, `github::TokenKind::of`.
//!
//! The first byte picks the mode. Even: the rest is the `Authorization` value as sent, and both
//! it and the token `bearer` finds in it are checked as tokens.
//! Odd: the rest is `HEADER \0 CLAIMS`, which the harness signs with the registry's key (as only
//! the registry could), so the fuzzer reaches the claim checks behind the signature.
//!
//! Properties: nothing panics; `bearer` returns a non-empty, trimmed part of the header after a
//! `Bearer`/`token` scheme, and returns a signed token unchanged; a token that verifies looks like
//! a JWT, was signed with HS256, has this registry's issuer and has not expired, and
//! `claims_of_any_age` agrees with `verify` on it.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use registry::auth::bearer;
use registry::auth::github::TokenKind;
use registry::auth::tokens::{Claims, ISSUER, TokenKeys, looks_like_jwt};

const SECRET: &[u8] = b"fuzzing secret, not a real one";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = TokenKeys::new(SECRET, chrono::Duration::days(30));
    if mode & 1 == 0 {
        if let Some(token) = header(rest) {
            check(&keys, &token, None);
        }
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        let _ = TokenKind::of(token);
        check(&keys, token, None);
    } else {
        let Some(split) = rest.iter().position(|&b| b == 0) else {
            return;
        };
        let (head, claims) = (&rest[..split], &rest[split + 1..]);
        let token = sign(head, claims);
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        assert_eq!(bearer(&headers), Some(token.as_str()));
        check(&keys, &token, Some(head));
    }
});

/// `bearer` over `value` as the `Authorization` header; the token it finds.
fn header(value: &[u8]) -> Option<String> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value.clone());
    let token = bearer(&headers)?;
    let text = value.to_str().expect("bearer only reads visible ASCII");
    let (scheme, after) = text.split_once(' ').expect("a scheme comes first");
    assert!(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"));
    assert!(!token.is_empty());
    assert_eq!(token, token.trim());
    assert_eq!(token, after.trim());
    Some(token.to_string())
}

fn check(keys: &TokenKeys, token: &str, signed_header: Option<&[u8]>) {
    if looks_like_jwt(token) {
        assert_eq!(token.split('.').count(), 3);
    }
    let any_age = keys.claims_of_any_age(token);
    if let Ok(claims) = &any_age {
        valid_shape(token, claims, signed_header);
    }
    if let Ok(claims) = keys.verify(token) {
        valid_shape(token, &claims, signed_header);
        assert!(
            claims.exp >= chrono::Utc::now().timestamp() - 1,
            "expired: {claims:?}"
        );
        assert_eq!(any_age.as_ref(), Ok(&claims));
    }
}

fn valid_shape(token: &str, claims: &Claims, signed_header: Option<&[u8]>) {
    assert!(
        looks_like_jwt(token),
        "{token:?} verifies but does not look like a JWT"
    );
    assert_eq!(claims.iss, ISSUER);
    if let Some(head) = signed_header {
        // Read as jsonwebtoken reads it: fields it does not know are skipped, not validated (an
        // ignored string may even hold bytes that are not UTF-8).
        #[derive(serde::Deserialize)]
        struct Alg {
            alg: String,
        }
        let alg: Alg = serde_json::from_slice(head).expect("accepted header has an alg");
        assert_eq!(alg.alg, "HS256", "accepted a token signed as {}", alg.alg);
    }
}

/// `header.claims.signature` as the registry signs: base64url without padding, HMAC-SHA256.
fn sign(head: &[u8], claims: &[u8]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!("{}.{}", b64(head), b64(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}
