//! A Sigstore instance made at test time: a certificate authority standing for Fulcio and a key
//! standing for Rekor's, the `trusted_root.json` that lists them, and provenance bundles as npm
//! publishes them (`npm publish --provenance`), signed by certificates of that CA with the
//! Fulcio extensions a test chooses. The registry's unit tests and the end-to-end tests (which
//! hand the trusted root to the server with `REGISTRY_SIGSTORE_TRUSTED_ROOT`) share it.
//!
//! Everything is built here independently of the verifier (`domain::provenance`): the DSSE
//! encoding, the log entry and its signed entry timestamp follow Sigstore's formats, so a test
//! that verifies these bundles checks the verifier against them, not against itself.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SigningKey,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};
use x509_cert::der::Encode;
use x509_cert::der::asn1::Utf8StringRef;

/// When the test log "recorded" every bundle (June 2025); certificates are valid around it.
pub const INTEGRATED_TIME: i64 = 1_750_000_000;

/// The OIDC issuer of GitHub Actions' ID tokens, as Fulcio's extension states it.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// SLSA provenance v1, the predicate npm writes.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Sets `params`' validity to `from..=to` (seconds since the epoch). rcgen takes the `time`
/// crate's dates; the epoch plus seconds avoids depending on that crate.
fn valid(params: &mut CertificateParams, from: i64, to: i64) {
    let date = |t: i64| {
        rcgen::date_time_ymd(1970, 1, 1)
            + Duration::from_secs(u64::try_from(t).expect("after 1970"))
    };
    params.not_before = date(from);
    params.not_after = date(to);
}

/// A certificate authority made here (not Fulcio), valid for a day either side of `at`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its self-signed certificate, DER.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA, valid around `at` (seconds since the epoch).
    pub fn new(at: i64) -> TestCa {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(Vec::new()).expect("parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "not fulcio");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid(&mut params, at - 86_400, at + 86_400);
        let der = params.self_signed(&key).expect("a CA").der().to_vec();
        TestCa {
            issuer: Issuer::new(params, key),
            der,
        }
    }

    /// A code-signing certificate (without the code-signing usage unless `eku`) for `key`,
    /// valid for ten minutes around `at`, as Fulcio issues them, with `extensions`.
    pub fn leaf(
        &self,
        at: i64,
        key: &KeyPair,
        eku: bool,
        extensions: Vec<CustomExtension>,
    ) -> Vec<u8> {
        let mut leaf = CertificateParams::new(Vec::new()).expect("parameters");
        leaf.subject_alt_names = vec![SanType::URI(
            "https://github.com/o/r/.github/workflows/publish.yml@refs/tags/v1"
                .try_into()
                .expect("IA5"),
        )];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if eku {
            leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        }
        leaf.custom_extensions = extensions;
        valid(&mut leaf, at - 60, at + 540);
        leaf.signed_by(key, &self.issuer)
            .expect("a leaf")
            .der()
            .to_vec()
    }
}

/// A Fulcio extension: arc `1.3.6.1.4.1.57264.1.<arc>` with `value` as its content.
pub fn fulcio_extension(arc: u64, value: &[u8]) -> CustomExtension {
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, arc], value.to_vec())
}

/// A DER UTF8String, as Fulcio encodes its extensions from 1.3.6.1.4.1.57264.1.8 on.
pub fn utf8(value: &str) -> Vec<u8> {
    Utf8StringRef::new(value)
        .expect("UTF-8")
        .to_der()
        .expect("DER")
}

/// The Fulcio extensions of a GitHub Actions build of `https://github.com/<repository>` by
/// its workflow `.github/workflows/<workflow>`, as (arc, DER UTF8String) pairs: issuer (8),
/// source repository URI (12), build config URI (18), build trigger (20).
pub fn github_actions_extensions(repository: &str, workflow: &str) -> Vec<(u64, Vec<u8>)> {
    let repo_uri = format!("https://github.com/{repository}");
    vec![
        (8, utf8(GITHUB_ACTIONS_ISSUER)),
        (12, utf8(&repo_uri)),
        (
            18,
            utf8(&format!(
                "{repo_uri}/.github/workflows/{workflow}@refs/heads/main"
            )),
        ),
        (20, utf8("push")),
    ]
}

/// The in-toto statement npm signs for `name@version` whose tarball is `tarball`: its package
/// URL (a scope's `@` percent-encoded) with the tarball's sha512, and `predicate_type`.
pub fn npm_statement(name: &str, version: &str, tarball: &[u8], predicate_type: &str) -> Value {
    let purl = match name.strip_prefix('@') {
        Some(scoped) => format!("pkg:npm/%40{scoped}@{version}"),
        None => format!("pkg:npm/{name}@{version}"),
    };
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": purl, "digest": {"sha512": hex::encode(Sha512::digest(tarball))}}],
        "predicateType": predicate_type,
        "predicate": {},
    })
}

/// DSSE's pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(body) SP body`.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A CA and a transparency log made here, and the trusted root that lists them.
pub struct TestSigstore {
    ca: TestCa,
    log_key: KeyPair,
}

impl Default for TestSigstore {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSigstore {
    /// A new instance, whose CA is valid around [`INTEGRATED_TIME`].
    pub fn new() -> TestSigstore {
        TestSigstore {
            ca: TestCa::new(INTEGRATED_TIME),
            log_key: KeyPair::generate().expect("a key"),
        }
    }

    fn log_id(&self) -> Vec<u8> {
        Sha256::digest(self.log_key.subject_public_key_info()).to_vec()
    }

    /// Its `trusted_root.json` (media type
    /// `application/vnd.dev.sigstore.trustedroot+json;version=0.1`): the CA and the log.
    pub fn trusted_root_json(&self) -> Vec<u8> {
        let root = json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": BASE64.encode(self.log_key.subject_public_key_info()),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2025-01-01T00:00:00Z"},
                },
                "logId": {"keyId": BASE64.encode(self.log_id())},
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "test", "commonName": "not fulcio"},
                "certChain": {"certificates": [{"rawBytes": BASE64.encode(&self.ca.der)}]},
                "validFor": {"start": "2025-01-01T00:00:00Z"},
            }],
        });
        serde_json::to_vec(&root).expect("JSON")
    }

    /// A bundle (v0.3, a `dsse` log entry with its signed entry timestamp and no inclusion
    /// proof) of `statement`, signed by a new certificate of this CA with `extensions`
    /// ((arc, content) pairs, see [`fulcio_extension`]) and the code-signing usage when `eku`.
    pub fn bundle(&self, statement: &Value, eku: bool, extensions: &[(u64, &[u8])]) -> Vec<u8> {
        let leaf_key = KeyPair::generate().expect("a key");
        let extensions = extensions
            .iter()
            .map(|(arc, value)| fulcio_extension(*arc, value))
            .collect();
        let leaf = self.ca.leaf(INTEGRATED_TIME, &leaf_key, eku, extensions);
        let payload = serde_json::to_vec(statement).expect("JSON");
        let signature = leaf_key
            .sign(&pae(INTOTO_PAYLOAD_TYPE, &payload))
            .expect("a signature");
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            BASE64.encode(&leaf)
        );
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": "00"},
                "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
                "signatures": [{"signature": BASE64.encode(&signature), "verifier": BASE64.encode(pem.as_bytes())}],
            },
        });
        let mut bundle = json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": BASE64.encode(&leaf)},
                "tlogEntries": [{
                    "logIndex": "42",
                    "logId": {"keyId": BASE64.encode(self.log_id())},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                    "integratedTime": INTEGRATED_TIME.to_string(),
                    "canonicalizedBody": BASE64.encode(serde_json::to_vec(&body).expect("JSON")),
                }],
            },
            "dsseEnvelope": {
                "payload": BASE64.encode(&payload),
                "payloadType": INTOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": BASE64.encode(&signature), "keyid": ""}],
            },
        });
        sign_entry(&mut bundle, &self.log_key);
        serde_json::to_vec(&bundle).expect("JSON")
    }

    /// What npm publishes for `name@version` built by GitHub Actions from `repository`
    /// (`owner/repo`) with `.github/workflows/<workflow>`: a SLSA v1 statement of `tarball`,
    /// signed by a certificate with GitHub's extensions. The bundle's JSON text.
    pub fn npm_bundle(
        &self,
        name: &str,
        version: &str,
        tarball: &[u8],
        repository: &str,
        workflow: &str,
    ) -> String {
        let extensions = github_actions_extensions(repository, workflow);
        let extensions: Vec<(u64, &[u8])> = extensions
            .iter()
            .map(|(arc, value)| (*arc, value.as_slice()))
            .collect();
        let statement = npm_statement(name, version, tarball, SLSA_PROVENANCE_V1);
        String::from_utf8(self.bundle(&statement, true, &extensions)).expect("JSON is UTF-8")
    }
}

/// Signs the bundle's first log entry anew with `key` (an inclusion proof, which the real log
/// signed, dropped), as Rekor would: the canonical JSON (RFC 8785) of body, time, hex log id and
/// index.
pub fn sign_entry(bundle: &mut Value, key: &KeyPair) {
    let entry = &mut bundle["verificationMaterial"]["tlogEntries"][0];
    entry
        .as_object_mut()
        .expect("an entry")
        .remove("inclusionProof");
    let number = |v: &Value| -> i64 {
        v.as_str()
            .and_then(|t| t.parse().ok())
            .or_else(|| v.as_i64())
            .expect("an int64")
    };
    let log_id = BASE64
        .decode(entry["logId"]["keyId"].as_str().expect("a log id"))
        .expect("base64");
    // serde_json keeps insertion order here, which is the sorted order RFC 8785 asks for.
    let signed = json!({
        "body": entry["canonicalizedBody"],
        "integratedTime": number(&entry["integratedTime"]),
        "logID": hex::encode(log_id),
        "logIndex": number(&entry["logIndex"]),
    });
    let set = key
        .sign(&serde_json::to_vec(&signed).expect("JSON"))
        .expect("a signature");
    entry["inclusionPromise"]["signedEntryTimestamp"] = json!(BASE64.encode(set));
}
