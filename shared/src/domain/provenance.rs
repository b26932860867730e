//! npm provenance: offline verification of the Sigstore bundle that `npm publish --provenance`
//! attaches beside the tarball (`<name>-<version>.sigstore`), against a pinned Sigstore trusted
//! root. Pure: no I/O and no clock; the certificate is judged at the transparency log's signed
//! time, as Sigstore's own verifiers do, because Fulcio certificates live for ten minutes.
//!
//! [`verify`] checks, in this order:
//! 1. the bundle's media type (Sigstore bundle v0.1, v0.2 or v0.3) and that it is signed by a
//!    certificate and carries one DSSE envelope of an in-toto statement;
//! 2. the transparency log entry's signed entry timestamp (Rekor's promise that it logged the
//!    entry at `integratedTime`), with the key of the trusted root's log whose id the entry names,
//!    and, when the entry carries one, its inclusion proof against the log's signed checkpoint;
//! 3. the signing certificate's chain to a Fulcio CA of the trusted root that was current at the
//!    integrated time, the certificate's validity at that time, and its code-signing usage;
//! 4. the DSSE signature over the envelope's pre-authentication encoding, with the certificate's key;
//! 5. that the log entry is of this very signature, certificate and payload (else a valid entry
//!    of another signature could lend its time);
//! 6. the statement: in-toto v0.1 or v1, SLSA provenance v0.2 or v1, and a subject
//!    `pkg:npm/<name>@<version>` whose sha512 is the tarball's.
//!
//! It does not check certificate revocation (Fulcio publishes none), the SCTs embedded in the
//! certificate, RFC 3161 timestamps, or Rekor v2 entries (which carry no signed entry timestamp);
//! what the registry then accepts (the issuer, the source repository) is the caller's policy.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::asn1::{ObjectIdentifier, Utf8StringRef};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::spki::SubjectPublicKeyInfoRef;

use super::RepoRef;

/// The DSSE payload type of an in-toto statement, the only one npm signs.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// SLSA provenance v0.2, which npm's first provenance statements (early 2023) have.
pub const SLSA_PROVENANCE_V0_2: &str = "https://slsa.dev/provenance/v0.2";

/// SLSA provenance v1, which npm has written since (mid-2023).
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// The OIDC issuer of GitHub Actions' ID tokens.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

const STATEMENT_TYPES: [&str; 2] = [
    "https://in-toto.io/Statement/v0.1",
    "https://in-toto.io/Statement/v1",
];

const BUNDLE_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
];

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER-encoded without tag and length, as webpki takes it.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// The arc under which Fulcio puts its certificate extensions (docs/oid-info.md in Fulcio).
const FULCIO_ARC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1");

/// The Fulcio extensions [`Provenance`] reports: 1 to 6 are the legacy GitHub ones (raw strings),
/// the others generic ones (DER UTF8Strings).
const FULCIO_ARCS_READ: [u32; 17] = [1, 2, 3, 5, 6, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21];

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The algorithms a Fulcio chain may be signed with (ECDSA today; RSA and Ed25519 are listed so
/// that a future CA key is a trusted-root update, not a code change).
static CHAIN_ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
];

/// Why a trusted root could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TrustedRootError {
    /// Not JSON of the trusted root's shape.
    #[error("the trusted root is not valid JSON of its format: {0}")]
    Json(String),
    /// A certificate or key in it could not be decoded or used.
    #[error("the trusted root has an unusable {0}")]
    Unusable(String),
    /// It names no Fulcio CA or no transparency log, so nothing could ever verify.
    #[error("the trusted root names no {0}")]
    Empty(&'static str),
}

/// Why a provenance bundle was refused; the message completes "provenance refused: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenanceError {
    /// Not JSON of a Sigstore bundle's shape, or a field that does not decode.
    #[error("the attachment is not a valid Sigstore bundle: {0}")]
    MalformedBundle(String),
    /// A media type other than Sigstore bundle v0.1 to v0.3.
    #[error("unsupported Sigstore bundle media type {0:?}")]
    UnsupportedMediaType(String),
    /// Signed with a bare public key (as npm's own publish attestation), not a Fulcio certificate.
    #[error("the bundle is not signed with a Fulcio certificate")]
    NoSigningCertificate,
    /// A message signature, not a DSSE envelope of an attestation.
    #[error("the bundle carries no DSSE envelope")]
    NoDsseEnvelope,
    /// The envelope's payload is not an in-toto statement.
    #[error("the DSSE payload type is {0:?}, not {INTOTO_PAYLOAD_TYPE:?}")]
    WrongPayloadType(String),
    /// npm signs with exactly one key; more or none is not its bundle.
    #[error("the DSSE envelope has {0} signatures, not one")]
    SignatureCount(usize),
    /// No Rekor entry, so no trustworthy signing time.
    #[error("the bundle has no transparency log entry")]
    NoTransparencyLogEntry,
    /// The entry names a log the trusted root does not list (for that time).
    #[error(
        "the transparency log entry is from log {0}, which the trusted root does not trust at that time"
    )]
    UnknownTransparencyLog(String),
    /// The entry has no inclusion promise (a Rekor v2 entry, or one stripped of it).
    #[error("the transparency log entry has no signed entry timestamp")]
    MissingSignedEntryTimestamp,
    /// Rekor's signature over the entry and its time does not verify.
    #[error("the transparency log's signed entry timestamp does not verify")]
    InvalidSignedEntryTimestamp,
    /// The entry's inclusion proof or its checkpoint does not verify.
    #[error("the transparency log inclusion proof does not verify: {0}")]
    InvalidInclusionProof(String),
    /// The certificate does not chain to a Fulcio CA of the trusted root current at that time.
    #[error("the signing certificate was not issued by a trusted Fulcio certificate authority")]
    UntrustedCertificate,
    /// The certificate was not valid when the log recorded the signature.
    #[error("the signing certificate was not valid at the transparency log's time {0}")]
    CertificateNotValidAtIntegratedTime(DateTime<Utc>),
    /// The certificate lacks the code-signing extended key usage.
    #[error("the signing certificate is not for code signing")]
    NotCodeSigningCertificate,
    /// The certificate could not be parsed or validated otherwise.
    #[error("the signing certificate is invalid: {0}")]
    InvalidCertificate(String),
    /// The DSSE signature does not verify with the certificate's key.
    #[error("the DSSE signature does not verify with the signing certificate's key")]
    InvalidSignature,
    /// The log entry records another signature, certificate or payload.
    #[error("the transparency log entry is not of this signature: {0}")]
    TransparencyLogEntryMismatch(String),
    /// The payload is not an in-toto statement.
    #[error("the signed statement is malformed: {0}")]
    MalformedStatement(String),
    /// An in-toto statement type other than v0.1 or v1.
    #[error("unsupported in-toto statement type {0:?}")]
    UnsupportedStatementType(String),
    /// A predicate other than SLSA provenance v0.2 or v1.
    #[error("the statement's predicate type is {0:?}, not SLSA provenance")]
    UnsupportedPredicateType(String),
    /// No subject names this package version.
    #[error("the statement's subject is {found}, not {expected}")]
    SubjectNameMismatch {
        /// The package URL npm would write for this name and version.
        expected: String,
        /// The subject names the statement has, comma-separated.
        found: String,
    },
    /// The subject's sha512 is not the tarball's.
    #[error("the statement's sha512 digest for {0} is not the tarball's")]
    SubjectDigestMismatch(String),
    /// A Fulcio extension the registry needs is missing.
    #[error("the signing certificate has no {0} extension")]
    MissingCertificateExtension(&'static str),
    /// A Fulcio extension does not decode as its kind should, or appears twice.
    #[error("the signing certificate's extension {0} is malformed")]
    MalformedCertificateExtension(String),
}

/// What a verified provenance bundle says: where and how the package was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The bundle's media type (which Sigstore bundle version npm sent).
    pub bundle_media_type: String,
    /// The statement's predicate type: [`SLSA_PROVENANCE_V0_2`] or [`SLSA_PROVENANCE_V1`].
    pub predicate_type: String,
    /// The OIDC issuer that vouched for the build (e.g. [`GITHUB_ACTIONS_ISSUER`]).
    pub issuer: String,
    /// The certificate's subject alternative name: the signing workflow's URI
    /// (`https://github.com/o/r/.github/workflows/f.yml@refs/tags/v1`) or an email address.
    pub subject_alternative_name: Option<String>,
    /// The source repository (`https://github.com/owner/repo`); from the "Source Repository URI"
    /// extension, or for certificates older than it, the GitHub "Workflow Repository" one.
    pub source_repository_uri: Option<String>,
    /// The source repository's immutable id (GitHub's numeric repository id).
    pub source_repository_identifier: Option<String>,
    /// The repository owner's URI (`https://github.com/owner`).
    pub source_repository_owner_uri: Option<String>,
    /// The repository owner's immutable id (GitHub's numeric owner id).
    pub source_repository_owner_identifier: Option<String>,
    /// The git ref built (`refs/tags/v1.0.0`).
    pub source_repository_ref: Option<String>,
    /// The commit built.
    pub source_repository_digest: Option<String>,
    /// The top-level build instructions (`https://github.com/o/r/.github/workflows/f.yml@REF`).
    pub build_config_uri: Option<String>,
    /// The build instructions that signed (a reusable workflow, or the same as the config).
    pub build_signer_uri: Option<String>,
    /// The event that started the build (`push`, `release`, `workflow_dispatch`, ...).
    pub build_trigger: Option<String>,
    /// The run's URI (`https://github.com/o/r/actions/runs/1/attempts/1`).
    pub run_invocation_uri: Option<String>,
    /// `github-hosted` or `self-hosted`.
    pub runner_environment: Option<String>,
    /// When the transparency log recorded the signature.
    pub integrated_time: DateTime<Utc>,
    /// The entry's index in the transparency log.
    pub log_index: u64,
}

impl Provenance {
    /// The source repository as GitHub's `owner/repo`, if it is a GitHub repository.
    pub fn github_repository(&self) -> Option<RepoRef> {
        self.source_repository_uri
            .as_deref()
            .and_then(github_repository)
    }

    /// The workflow file in the source repository (`.github/workflows/publish.yml`), read from
    /// the build config URI (or the signer URI for certificates older than it) when that is a
    /// file of the source repository.
    pub fn workflow_file(&self) -> Option<String> {
        let repository = self.source_repository_uri.as_deref()?;
        let config = self
            .build_config_uri
            .as_deref()
            .or(self.build_signer_uri.as_deref())?;
        let rest = config.strip_prefix(repository)?.strip_prefix('/')?;
        let file = rest.split_once('@').map_or(rest, |(file, _)| file);
        (!file.is_empty()).then(|| file.to_string())
    }
}

/// `owner/repo` of `https://github.com/owner/repo`, the form Fulcio's source repository
/// extensions take for GitHub Actions; `None` for another host or shape.
pub fn github_repository(uri: &str) -> Option<RepoRef> {
    let (scheme, rest) = uri.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let (host, path) = rest.split_once('/')?;
    if !host.eq_ignore_ascii_case("github.com") {
        return None;
    }
    let path = path.strip_suffix('/').unwrap_or(path);
    let (owner, name) = path.split_once('/')?;
    if name.contains('/') {
        return None;
    }
    RepoRef::new(owner, name)
}

/// The package URL npm writes as the statement's subject: `pkg:npm/<name>@<version>`, with a
/// scope's leading `@` percent-encoded (npm-package-arg's `toPurl`: `pkg:npm/%40scope/name@1.0.0`).
pub fn npm_package_url(name: &str, version: &str) -> String {
    match name.strip_prefix('@') {
        Some(scoped) => format!("pkg:npm/%40{scoped}@{version}"),
        None => format!("pkg:npm/{name}@{version}"),
    }
}

/// A time range of a trusted-root item; open ends are unbounded.
#[derive(Debug, Clone, Copy)]
struct Validity {
    start: Option<i64>,
    end: Option<i64>,
}

impl Validity {
    fn contains(self, time: i64) -> bool {
        self.start.is_none_or(|s| s <= time) && self.end.is_none_or(|e| time <= e)
    }
}

/// A Fulcio CA: its root as a trust anchor and its intermediates, and when it issued.
#[derive(Debug)]
struct CertificateAuthority {
    anchor: TrustAnchor<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    validity: Validity,
}

/// A public key of a log, and the ring algorithm it verifies with.
#[derive(Debug, Clone)]
struct LogKey {
    algorithm: &'static dyn VerificationAlgorithm,
    raw: Vec<u8>,
}

impl LogKey {
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(self.algorithm, &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

/// A Rekor instance: its log id, key and when that key signed.
#[derive(Debug)]
struct TransparencyLog {
    log_id: Vec<u8>,
    base_url: String,
    key: LogKey,
    validity: Validity,
}

/// The Sigstore instance the registry trusts: Fulcio CAs and Rekor logs, as Sigstore's
/// `trusted_root.json` (TUF target) lists them.
#[derive(Debug)]
pub struct TrustedRoot {
    authorities: Vec<CertificateAuthority>,
    logs: Vec<TransparencyLog>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrustedRootJson {
    #[serde(default)]
    tlogs: Vec<TlogJson>,
    #[serde(default)]
    certificate_authorities: Vec<AuthorityJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogJson {
    #[serde(default)]
    base_url: String,
    public_key: PublicKeyJson,
    log_id: LogIdJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyJson {
    raw_bytes: String,
    valid_for: Option<ValidForJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogIdJson {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorityJson {
    cert_chain: CertChainJson,
    valid_for: Option<ValidForJson>,
}

#[derive(Deserialize)]
struct CertChainJson {
    certificates: Vec<RawBytesJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytesJson {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct ValidForJson {
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl From<Option<&ValidForJson>> for Validity {
    fn from(valid_for: Option<&ValidForJson>) -> Self {
        Self {
            start: valid_for.and_then(|v| v.start).map(|t| t.timestamp()),
            end: valid_for.and_then(|v| v.end).map(|t| t.timestamp()),
        }
    }
}

impl TrustedRoot {
    /// Reads Sigstore's `trusted_root.json` (media type
    /// `application/vnd.dev.sigstore.trustedroot+json;version=0.1`): each CA's chain (leaf-most
    /// first, its root last) and validity, each log's key, id and validity. Logs with a key type
    /// this module cannot verify with are skipped; timestamp authorities and CT logs are unused.
    pub fn from_json(json: &[u8]) -> Result<Self, TrustedRootError> {
        let root: TrustedRootJson =
            serde_json::from_slice(json).map_err(|e| TrustedRootError::Json(e.to_string()))?;
        let mut authorities = Vec::new();
        for (i, ca) in root.certificate_authorities.iter().enumerate() {
            let unusable = |what: &str| TrustedRootError::Unusable(format!("CA {i} {what}"));
            let mut chain = Vec::new();
            for cert in &ca.cert_chain.certificates {
                let der = decode_base64(&cert.raw_bytes)
                    .ok_or_else(|| unusable("certificate (base64)"))?;
                chain.push(CertificateDer::from(der));
            }
            let root_cert = chain.pop().ok_or_else(|| unusable("chain (empty)"))?;
            let anchor = webpki::anchor_from_trusted_cert(&root_cert)
                .map_err(|e| unusable(&format!("root certificate ({e})")))?
                .to_owned();
            authorities.push(CertificateAuthority {
                anchor,
                intermediates: chain,
                validity: ca.valid_for.as_ref().into(),
            });
        }
        let mut logs = Vec::new();
        for (i, log) in root.tlogs.iter().enumerate() {
            let unusable = |what: &str| TrustedRootError::Unusable(format!("log {i} {what}"));
            let spki =
                decode_base64(&log.public_key.raw_bytes).ok_or_else(|| unusable("key (base64)"))?;
            let log_id =
                decode_base64(&log.log_id.key_id).ok_or_else(|| unusable("log id (base64)"))?;
            // A key type this module has no verifier for cannot sign anything it accepts.
            let Some(key) = log_key(&spki) else { continue };
            logs.push(TransparencyLog {
                log_id,
                base_url: log.base_url.clone(),
                key,
                validity: log.public_key.valid_for.as_ref().into(),
            });
        }
        if authorities.is_empty() {
            return Err(TrustedRootError::Empty("certificate authority"));
        }
        if logs.is_empty() {
            return Err(TrustedRootError::Empty(
                "transparency log with a usable key",
            ));
        }
        Ok(Self { authorities, logs })
    }
}

/// The ring verifier for a DER SubjectPublicKeyInfo: ECDSA P-256/SHA-256, P-384/SHA-384 (both
/// with ASN.1 signatures, as Rekor and sigstore-js make them) or Ed25519.
fn log_key(spki_der: &[u8]) -> Option<LogKey> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).ok()?;
    let raw = spki.subject_public_key.as_bytes()?.to_vec();
    let algorithm: &'static dyn VerificationAlgorithm = if spki.algorithm.oid == OID_EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = spki.algorithm.parameters?.decode_as().ok()?;
        if curve == OID_P256 {
            &signature::ECDSA_P256_SHA256_ASN1
        } else if curve == OID_P384 {
            &signature::ECDSA_P384_SHA384_ASN1
        } else {
            return None;
        }
    } else if spki.algorithm.oid == OID_ED25519 {
        &signature::ED25519
    } else {
        return None;
    };
    Some(LogKey { algorithm, raw })
}

// ---- The bundle's JSON (protobuf-specs' JSON mapping: camelCase, bytes as base64, int64 as
// strings) ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleJson {
    media_type: String,
    verification_material: VerificationMaterialJson,
    dsse_envelope: Option<EnvelopeJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterialJson {
    x509_certificate_chain: Option<CertChainJson>,
    certificate: Option<RawBytesJson>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntryJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntryJson {
    #[serde(deserialize_with = "int64")]
    log_index: u64,
    log_id: LogIdJson,
    kind_version: KindVersionJson,
    #[serde(deserialize_with = "int64")]
    integrated_time: u64,
    inclusion_promise: Option<InclusionPromiseJson>,
    inclusion_proof: Option<InclusionProofJson>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
struct KindVersionJson {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionPromiseJson {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionProofJson {
    #[serde(deserialize_with = "int64")]
    log_index: u64,
    root_hash: String,
    #[serde(deserialize_with = "int64")]
    tree_size: u64,
    hashes: Vec<String>,
    checkpoint: CheckpointJson,
}

#[derive(Deserialize)]
struct CheckpointJson {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeJson {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignatureJson>,
}

#[derive(Deserialize)]
struct EnvelopeSignatureJson {
    sig: String,
}

/// protobuf's JSON writes 64-bit integers as strings; accept numbers too.
fn int64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Number(u64),
        Text(String),
    }
    match Int64::deserialize(deserializer)? {
        Int64::Number(n) => Ok(n),
        Int64::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
struct StatementJson {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<SubjectJson>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
}

#[derive(Deserialize)]
struct SubjectJson {
    name: String,
    #[serde(default)]
    digest: BTreeMap<String, String>,
}

/// Padding optional, either alphabet: what protobuf's JSON mapping accepts for bytes.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    GeneralPurpose::new(&alphabet::STANDARD, LENIENT)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT).decode(text))
        .ok()
}

fn base64_field(value: &str, field: &str) -> Result<Vec<u8>, ProvenanceError> {
    decode_base64(value)
        .ok_or_else(|| ProvenanceError::MalformedBundle(format!("{field} is not base64")))
}

/// Sigstore's public-good trusted root as this release pins it (`shared/sigstore/`, its source
/// in `tests/fixtures/provenance/README.md`): what every published bundle is verified against.
pub fn public_good() -> &'static TrustedRoot {
    static ROOT: std::sync::LazyLock<TrustedRoot> = std::sync::LazyLock::new(|| {
        TrustedRoot::from_json(include_bytes!("../../sigstore/trusted_root.json"))
            .unwrap_or_else(|e| panic!("the pinned Sigstore trusted root does not load: {e}"))
    });
    &ROOT
}

/// Verifies an npm provenance bundle (the `.sigstore` attachment's JSON text) for the package
/// `name@version` whose tarball has the given sha512, against `root`; see the module's comment for
/// what is checked. Returns what the signing certificate and statement say about the build.
pub fn verify(
    bundle_json: &[u8],
    name: &str,
    version: &str,
    tarball_sha512: &[u8; 64],
    root: &TrustedRoot,
) -> Result<Provenance, ProvenanceError> {
    let bundle: BundleJson = serde_json::from_slice(bundle_json)
        .map_err(|e| ProvenanceError::MalformedBundle(e.to_string()))?;
    if !BUNDLE_MEDIA_TYPES.contains(&bundle.media_type.as_str()) {
        return Err(ProvenanceError::UnsupportedMediaType(bundle.media_type));
    }
    let material = &bundle.verification_material;
    // v0.1 and v0.2 carry a chain (leaf first), v0.3 the leaf alone. Only the leaf is used: the
    // intermediates and root come from the trusted root, never from the bundle.
    let leaf_b64 = match (&material.x509_certificate_chain, &material.certificate) {
        (Some(chain), _) => chain.certificates.first().map(|c| c.raw_bytes.as_str()),
        (None, Some(cert)) => Some(cert.raw_bytes.as_str()),
        (None, None) => None,
    }
    .ok_or(ProvenanceError::NoSigningCertificate)?;
    let leaf_der = base64_field(leaf_b64, "the certificate")?;

    let envelope = bundle
        .dsse_envelope
        .as_ref()
        .ok_or(ProvenanceError::NoDsseEnvelope)?;
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(ProvenanceError::WrongPayloadType(
            envelope.payload_type.clone(),
        ));
    }
    let [signature] = envelope.signatures.as_slice() else {
        return Err(ProvenanceError::SignatureCount(envelope.signatures.len()));
    };
    let payload = base64_field(&envelope.payload, "the DSSE payload")?;
    let signature = base64_field(&signature.sig, "the DSSE signature")?;

    let entry = material
        .tlog_entries
        .first()
        .ok_or(ProvenanceError::NoTransparencyLogEntry)?;
    let body = base64_field(&entry.canonicalized_body, "the log entry's body")?;
    let integrated_time = i64::try_from(entry.integrated_time)
        .ok()
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or_else(|| ProvenanceError::MalformedBundle("integratedTime is out of range".into()))?;
    let log = verify_signed_entry_timestamp(entry, &body, integrated_time.timestamp(), root)?;
    if let Some(proof) = &entry.inclusion_proof {
        verify_inclusion_proof(proof, &body, log)
            .map_err(ProvenanceError::InvalidInclusionProof)?;
    }

    verify_chain(&leaf_der, integrated_time, root)?;
    let leaf = Certificate::from_der(&leaf_der)
        .map_err(|e| ProvenanceError::InvalidCertificate(e.to_string()))?;

    verify_dsse_signature(&leaf, &envelope.payload_type, &payload, &signature)?;
    verify_entry_body(entry, &body, &leaf_der, &payload, &signature)
        .map_err(ProvenanceError::TransparencyLogEntryMismatch)?;

    let predicate_type = verify_statement(&payload, name, version, tarball_sha512)?;
    certificate_identity(
        &leaf,
        bundle.media_type.clone(),
        predicate_type,
        integrated_time,
        entry.log_index,
    )
}

/// Rekor's signed entry timestamp: its signature over the canonical JSON (RFC 8785: keys sorted,
/// no spaces) of the entry's body, time, log id and index. Returns the log that signed it.
fn verify_signed_entry_timestamp<'r>(
    entry: &TlogEntryJson,
    body: &[u8],
    integrated_time: i64,
    root: &'r TrustedRoot,
) -> Result<&'r TransparencyLog, ProvenanceError> {
    let log_id = base64_field(&entry.log_id.key_id, "the log id")?;
    let log = root
        .logs
        .iter()
        .find(|l| l.log_id == log_id && l.validity.contains(integrated_time))
        .ok_or_else(|| ProvenanceError::UnknownTransparencyLog(hex::encode(&log_id)))?;
    let promise = entry
        .inclusion_promise
        .as_ref()
        .ok_or(ProvenanceError::MissingSignedEntryTimestamp)?;
    let set = base64_field(
        &promise.signed_entry_timestamp,
        "the signed entry timestamp",
    )?;
    // Every value is base64, hex or a number, none needing JSON escapes, so formatting is exact.
    let signed = format!(
        r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
        BASE64.encode(body),
        integrated_time,
        hex::encode(&log_id),
        entry.log_index,
    );
    if log.key.verifies(signed.as_bytes(), &set) {
        Ok(log)
    } else {
        Err(ProvenanceError::InvalidSignedEntryTimestamp)
    }
}

/// The entry's RFC 6962 inclusion proof up to the root hash of a checkpoint that `log` signed
/// (a signed note: `origin\nsize\nroot\n\n— name keyhint+signature\n`).
fn verify_inclusion_proof(
    proof: &InclusionProofJson,
    body: &[u8],
    log: &TransparencyLog,
) -> Result<(), String> {
    let envelope = &proof.checkpoint.envelope;
    let split = envelope
        .find("\n\n")
        .ok_or("the checkpoint has no signature separator")?;
    let note = &envelope[..=split];
    let hint = log.log_id.get(..4).ok_or("the log id is too short")?;
    let signed = envelope[split + 2..].lines().any(|line| {
        let Some((name, sig)) = line
            .strip_prefix("\u{2014} ")
            .and_then(|l| l.split_once(' '))
        else {
            return false;
        };
        let Some(sig) = decode_base64(sig) else {
            return false;
        };
        sig.len() > 4
            && sig[..4] == *hint
            && log.base_url.contains(name)
            && log.key.verifies(note.as_bytes(), &sig[4..])
    });
    if !signed {
        return Err("no checkpoint signature of the entry's log verifies".into());
    }
    let mut lines = note.lines();
    let (_origin, size, root) = (lines.next(), lines.next(), lines.next());
    let size: u64 = size
        .and_then(|s| s.parse().ok())
        .ok_or("the checkpoint has no tree size")?;
    let root = root
        .and_then(decode_base64)
        .ok_or("the checkpoint has no root hash")?;
    let proof_root =
        decode_base64(&proof.root_hash).ok_or("the proof's root hash is not base64")?;
    if size != proof.tree_size || root != proof_root {
        return Err("the proof is not for the signed checkpoint".into());
    }
    let index = proof.log_index;
    if index >= size {
        return Err(format!("index {index} is outside a tree of {size}"));
    }
    // The path splits where the paths to `index` and to the last leaf diverge: below it the
    // proof's hashes are siblings left or right by the index's bits, above it all are left.
    let inner = (u64::BITS - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    if proof.hashes.len() != inner + border {
        return Err("the proof has the wrong number of hashes".into());
    }
    let mut hash: [u8; 32] = Sha256::new()
        .chain_update([0u8])
        .chain_update(body)
        .finalize()
        .into();
    for (i, sibling) in proof.hashes.iter().enumerate() {
        let sibling = decode_base64(sibling).ok_or("a proof hash is not base64")?;
        let node = Sha256::new().chain_update([1u8]);
        let node = if i >= inner || (index >> i) & 1 == 1 {
            node.chain_update(&sibling).chain_update(hash)
        } else {
            node.chain_update(hash).chain_update(&sibling)
        };
        hash = node.finalize().into();
    }
    if hash.as_slice() == root.as_slice() {
        Ok(())
    } else {
        Err("the computed root hash is not the checkpoint's".into())
    }
}

/// The leaf's chain to a Fulcio CA current at `time`, with webpki: signatures, validity of every
/// certificate at `time`, CA constraints, and the code-signing EKU.
fn verify_chain(
    leaf_der: &[u8],
    time: DateTime<Utc>,
    root: &TrustedRoot,
) -> Result<(), ProvenanceError> {
    let leaf = CertificateDer::from(leaf_der);
    let leaf = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| ProvenanceError::InvalidCertificate(e.to_string()))?;
    let seconds = u64::try_from(time.timestamp()).unwrap_or(0);
    let at = UnixTime::since_unix_epoch(Duration::from_secs(seconds));
    let mut refusal = ProvenanceError::UntrustedCertificate;
    for ca in root
        .authorities
        .iter()
        .filter(|ca| ca.validity.contains(time.timestamp()))
    {
        let result = leaf.verify_for_usage(
            CHAIN_ALGORITHMS,
            std::slice::from_ref(&ca.anchor),
            &ca.intermediates,
            at,
            webpki::KeyUsage::required(EKU_CODE_SIGNING),
            None,
            None,
        );
        let Err(error) = result else {
            return Ok(());
        };
        // Another CA's "unknown issuer" says less than this one's specific reason.
        refusal = match error {
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => continue,
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                ProvenanceError::CertificateNotValidAtIntegratedTime(time)
            }
            webpki::Error::RequiredEkuNotFoundContext(_) => {
                ProvenanceError::NotCodeSigningCertificate
            }
            other => ProvenanceError::InvalidCertificate(other.to_string()),
        };
    }
    Err(refusal)
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

fn verify_dsse_signature(
    leaf: &Certificate,
    payload_type: &str,
    payload: &[u8],
    signature: &[u8],
) -> Result<(), ProvenanceError> {
    let spki = leaf
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| ProvenanceError::InvalidCertificate(e.to_string()))?;
    let key = log_key(&spki)
        .ok_or_else(|| ProvenanceError::InvalidCertificate("unsupported public key type".into()))?;
    if key.verifies(&pae(payload_type, payload), signature) {
        Ok(())
    } else {
        Err(ProvenanceError::InvalidSignature)
    }
}

/// That the log entry records this signature, certificate and payload. Rekor's `intoto` v0.0.2
/// entries (npm until 2024) hold the envelope with its signature base64-encoded twice; `dsse`
/// v0.0.1 entries (since) hold the signature and a verifier; both hold the PEM certificate
/// base64-encoded and the payload's sha256.
fn verify_entry_body(
    entry: &TlogEntryJson,
    body: &[u8],
    leaf_der: &[u8],
    payload: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "its body is not JSON".to_string())?;
    let (kind, version) = (&entry.kind_version.kind, &entry.kind_version.version);
    if body["kind"] != kind.as_str() || body["apiVersion"] != version.as_str() {
        return Err(format!("its body is not of kind {kind} {version}"));
    }
    let spec = &body["spec"];
    let (signatures, payload_hash, sig_field, key_field, double_encoded) =
        match (kind.as_str(), version.as_str()) {
            ("intoto", "0.0.2") => (
                &spec["content"]["envelope"]["signatures"],
                &spec["content"]["payloadHash"],
                "sig",
                "publicKey",
                true,
            ),
            ("dsse", "0.0.1") => (
                &spec["signatures"],
                &spec["payloadHash"],
                "signature",
                "verifier",
                false,
            ),
            _ => {
                return Err(format!(
                    "entries of kind {kind} {version} are not supported"
                ));
            }
        };
    let [recorded] = signatures.as_array().map(Vec::as_slice).unwrap_or_default() else {
        return Err("it does not record exactly one signature".into());
    };
    let decode = |v: &serde_json::Value| v.as_str().and_then(decode_base64);
    let mut recorded_sig = decode(&recorded[sig_field]);
    if double_encoded {
        recorded_sig = recorded_sig.and_then(|s| decode_base64(std::str::from_utf8(&s).ok()?));
    }
    if recorded_sig.as_deref() != Some(signature) {
        return Err("it records another signature".into());
    }
    let recorded_cert = decode(&recorded[key_field]).and_then(|pem| pem_certificate(&pem));
    if recorded_cert.as_deref() != Some(leaf_der) {
        return Err("it records another certificate".into());
    }
    let digest = hex::encode(Sha256::digest(payload));
    if payload_hash["algorithm"] != "sha256"
        || !payload_hash["value"]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case(&digest))
    {
        return Err("it records another payload".into());
    }
    Ok(())
}

/// The DER of the first PEM `CERTIFICATE` block in `pem`.
fn pem_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let (_, rest) = text.split_once("-----BEGIN CERTIFICATE-----")?;
    let (body, _) = rest.split_once("-----END CERTIFICATE-----")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    decode_base64(&b64)
}

/// The statement's type, predicate type and subject; returns the predicate type.
fn verify_statement(
    payload: &[u8],
    name: &str,
    version: &str,
    tarball_sha512: &[u8; 64],
) -> Result<String, ProvenanceError> {
    let statement: StatementJson = serde_json::from_slice(payload)
        .map_err(|e| ProvenanceError::MalformedStatement(e.to_string()))?;
    if !STATEMENT_TYPES.contains(&statement.statement_type.as_str()) {
        return Err(ProvenanceError::UnsupportedStatementType(
            statement.statement_type,
        ));
    }
    if ![SLSA_PROVENANCE_V0_2, SLSA_PROVENANCE_V1].contains(&statement.predicate_type.as_str()) {
        return Err(ProvenanceError::UnsupportedPredicateType(
            statement.predicate_type,
        ));
    }
    let expected = npm_package_url(name, version);
    let Some(subject) = statement.subject.iter().find(|s| s.name == expected) else {
        let found: Vec<&str> = statement.subject.iter().map(|s| s.name.as_str()).collect();
        return Err(ProvenanceError::SubjectNameMismatch {
            expected,
            found: found.join(", "),
        });
    };
    let digest = subject
        .digest
        .get("sha512")
        .and_then(|d| hex::decode(d).ok());
    if digest.as_deref() != Some(tarball_sha512.as_slice()) {
        return Err(ProvenanceError::SubjectDigestMismatch(expected));
    }
    Ok(statement.predicate_type)
}

/// The build identity in the certificate's Fulcio extensions, with what the bundle said. Arcs 1 to 6 hold raw strings, 8
/// and later DER UTF8Strings (Fulcio's docs/oid-info.md); where a newer one supersedes an older
/// one, the newer wins.
fn certificate_identity(
    leaf: &Certificate,
    bundle_media_type: String,
    predicate_type: String,
    integrated_time: DateTime<Utc>,
    log_index: u64,
) -> Result<Provenance, ProvenanceError> {
    let mut raw: BTreeMap<u32, String> = BTreeMap::new();
    for extension in leaf.tbs_certificate().extensions().into_iter().flatten() {
        let oid = extension.extn_id;
        if oid.parent() != Some(FULCIO_ARC) {
            continue;
        }
        // Only the extensions read below are decoded, so that a new one of another encoding
        // does not turn every certificate away.
        let Some(arc) = oid
            .arc(oid.len() - 1)
            .filter(|a| FULCIO_ARCS_READ.contains(a))
        else {
            continue;
        };
        let bytes = extension.extn_value.as_bytes();
        let value = if arc <= 6 {
            std::str::from_utf8(bytes).ok().map(str::to_string)
        } else {
            Utf8StringRef::from_der(bytes)
                .ok()
                .map(|s| s.as_str().to_string())
        };
        let malformed = || ProvenanceError::MalformedCertificateExtension(oid.to_string());
        let value = value.ok_or_else(malformed)?;
        if raw.insert(arc, value).is_some() {
            return Err(malformed());
        }
    }
    let take = |arc: u32| raw.get(&arc).filter(|v| !v.is_empty()).cloned();
    let issuer = take(8)
        .or_else(|| take(1))
        .ok_or(ProvenanceError::MissingCertificateExtension("issuer"))?;
    // Before the generic extensions (early 2023), only GitHub's `owner/repo` was recorded.
    let legacy_repository = take(5)
        .filter(|_| issuer == GITHUB_ACTIONS_ISSUER)
        .map(|repo| format!("https://github.com/{repo}"));
    let subject_alternative_name = leaf
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .map_err(|e| ProvenanceError::InvalidCertificate(e.to_string()))?
        .and_then(|(_, san)| {
            san.0.into_iter().find_map(|name| match name {
                GeneralName::UniformResourceIdentifier(uri) => Some(uri.as_str().to_string()),
                GeneralName::Rfc822Name(email) => Some(email.as_str().to_string()),
                _ => None,
            })
        });
    Ok(Provenance {
        bundle_media_type,
        predicate_type,
        issuer,
        build_signer_uri: take(9).or_else(|| subject_alternative_name.clone()),
        subject_alternative_name,
        source_repository_uri: take(12).or(legacy_repository),
        source_repository_identifier: take(15),
        source_repository_owner_uri: take(16),
        source_repository_owner_identifier: take(17),
        source_repository_ref: take(14).or_else(|| take(6)),
        source_repository_digest: take(13).or_else(|| take(3)),
        build_config_uri: take(18),
        build_trigger: take(20).or_else(|| take(2)),
        run_invocation_uri: take(21),
        runner_environment: take(11),
        integrated_time,
        log_index,
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{KeyPair, PublicKeyData};

    use crate::testing::sigstore::{TestCa, TestSigstore, sign_entry as resign_entry, utf8};
    use serde_json::{Value, json};
    use sha2::Sha512;

    use super::*;

    /// A real npm provenance bundle and the real tarball it is for (tests/fixtures/provenance).
    struct Real {
        bundle: &'static [u8],
        tarball: &'static [u8],
        name: &'static str,
        version: &'static str,
    }

    const TRUSTED_ROOT: &[u8] = include_bytes!("../../sigstore/trusted_root.json");

    /// Bundle v0.1, SLSA v0.2, January 2023: a certificate with only the legacy (raw string)
    /// GitHub extensions.
    const SIGSTORE_0_4_0: Real = Real {
        bundle: include_bytes!("../../../tests/fixtures/provenance/sigstore-0.4.0.sigstore"),
        tarball: include_bytes!("../../../tests/fixtures/provenance/sigstore-0.4.0.tgz"),
        name: "sigstore",
        version: "0.4.0",
    };

    /// Bundle v0.1, SLSA v0.2, April 2023: legacy and generic extensions.
    const SIGSTORE_1_3_0: Real = Real {
        bundle: include_bytes!("../../../tests/fixtures/provenance/sigstore-1.3.0.sigstore"),
        tarball: include_bytes!("../../../tests/fixtures/provenance/sigstore-1.3.0.tgz"),
        name: "sigstore",
        version: "1.3.0",
    };

    /// Bundle v0.2, SLSA v1, May 2024: an `intoto` entry with an inclusion proof.
    const SIGSTORE_2_3_1: Real = Real {
        bundle: include_bytes!("../../../tests/fixtures/provenance/sigstore-2.3.1.sigstore"),
        tarball: include_bytes!("../../../tests/fixtures/provenance/sigstore-2.3.1.tgz"),
        name: "sigstore",
        version: "2.3.1",
    };

    /// Bundle v0.3, SLSA v1, February 2026, scoped: a `dsse` entry with an inclusion proof.
    const PLAYWRIGHT_CLI_0_1_1: Real = Real {
        bundle: include_bytes!("../../../tests/fixtures/provenance/playwright-cli-0.1.1.sigstore"),
        tarball: include_bytes!("../../../tests/fixtures/provenance/playwright-cli-0.1.1.tgz"),
        name: "@playwright/cli",
        version: "0.1.1",
    };

    const ALL: [&Real; 4] = [
        &SIGSTORE_0_4_0,
        &SIGSTORE_1_3_0,
        &SIGSTORE_2_3_1,
        &PLAYWRIGHT_CLI_0_1_1,
    ];

    fn root() -> TrustedRoot {
        TrustedRoot::from_json(TRUSTED_ROOT).expect("the pinned trusted root reads")
    }

    fn sha512(bytes: &[u8]) -> [u8; 64] {
        Sha512::digest(bytes).into()
    }

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("fixture JSON")
    }

    fn bytes_of(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).expect("JSON serialises")
    }

    /// Verifies a (possibly altered) bundle of `real` against `root`.
    fn check_with(
        real: &Real,
        bundle: &Value,
        root: &TrustedRoot,
    ) -> Result<Provenance, ProvenanceError> {
        verify(
            &bytes_of(bundle),
            real.name,
            real.version,
            &sha512(real.tarball),
            root,
        )
    }

    fn check(real: &Real, bundle: &Value) -> Result<Provenance, ProvenanceError> {
        check_with(real, bundle, &root())
    }

    fn b64(bytes: &[u8]) -> String {
        BASE64.encode(bytes)
    }

    fn unb64(value: &Value) -> Vec<u8> {
        BASE64
            .decode(value.as_str().expect("a string"))
            .expect("base64")
    }

    /// The GitHub Actions identity of a sigstore-js release, as its certificate states it.
    fn assert_sigstore_js(p: &Provenance, workflow: &str) {
        assert_eq!(p.issuer, GITHUB_ACTIONS_ISSUER);
        assert_eq!(
            p.source_repository_uri.as_deref(),
            Some("https://github.com/sigstore/sigstore-js")
        );
        assert_eq!(
            p.github_repository(),
            RepoRef::new("SigStore", "Sigstore-JS")
        );
        assert_eq!(p.workflow_file().as_deref(), Some(workflow));
    }

    #[test]
    fn real_bundles_verify() {
        let root = root();
        let verified = |real: &Real| {
            verify(
                real.bundle,
                real.name,
                real.version,
                &sha512(real.tarball),
                &root,
            )
            .unwrap_or_else(|e| panic!("{}@{}: {e}", real.name, real.version))
        };

        // January 2023: only the legacy GitHub extensions; the repository comes from
        // 1.3.6.1.4.1.57264.1.5 and the workflow from the SAN.
        let p = verified(&SIGSTORE_0_4_0);
        assert_sigstore_js(&p, ".github/workflows/publish.yml");
        assert_eq!(p.bundle_media_type, BUNDLE_MEDIA_TYPES[0]);
        assert_eq!(p.predicate_type, SLSA_PROVENANCE_V0_2);
        assert_eq!(p.build_config_uri, None);
        assert_eq!(
            p.subject_alternative_name.as_deref(),
            Some(
                "https://github.com/sigstore/sigstore-js/.github/workflows/publish.yml@refs/tags/v0.4.0"
            )
        );
        assert_eq!(p.source_repository_ref.as_deref(), Some("refs/tags/v0.4.0"));
        assert_eq!(
            p.source_repository_digest.as_deref(),
            Some("8a2ee2fd20dda58ffa4a8d808a65cb1e04711c03")
        );
        assert_eq!(p.build_trigger.as_deref(), Some("release"));
        assert_eq!(p.source_repository_identifier, None);
        assert_eq!(p.integrated_time.timestamp(), 1_673_458_312);
        assert_eq!(p.log_index, 10_960_845);

        // April 2023: the generic (DER) extensions too.
        let p = verified(&SIGSTORE_1_3_0);
        assert_sigstore_js(&p, ".github/workflows/release.yml");
        assert_eq!(p.predicate_type, SLSA_PROVENANCE_V0_2);
        assert_eq!(p.source_repository_identifier.as_deref(), Some("495574555"));
        assert_eq!(
            p.source_repository_owner_uri.as_deref(),
            Some("https://github.com/sigstore")
        );
        assert_eq!(
            p.source_repository_owner_identifier.as_deref(),
            Some("71096353")
        );
        assert_eq!(p.build_trigger.as_deref(), Some("push"));
        assert_eq!(p.runner_environment.as_deref(), Some("github-hosted"));
        assert_eq!(p.integrated_time.timestamp(), 1_681_839_912);

        let p = verified(&SIGSTORE_2_3_1);
        assert_sigstore_js(&p, ".github/workflows/release.yml");
        assert_eq!(p.bundle_media_type, BUNDLE_MEDIA_TYPES[1]);
        assert_eq!(p.predicate_type, SLSA_PROVENANCE_V1);
        assert_eq!(p.integrated_time.timestamp(), 1_715_879_523);

        let p = verified(&PLAYWRIGHT_CLI_0_1_1);
        assert_eq!(p.bundle_media_type, BUNDLE_MEDIA_TYPES[3]);
        assert_eq!(p.predicate_type, SLSA_PROVENANCE_V1);
        assert_eq!(p.issuer, GITHUB_ACTIONS_ISSUER);
        assert_eq!(
            p.github_repository(),
            RepoRef::new("microsoft", "playwright-cli")
        );
        assert_eq!(
            p.workflow_file().as_deref(),
            Some(".github/workflows/publish.yml")
        );
        assert_eq!(
            p.build_config_uri.as_deref(),
            Some(
                "https://github.com/microsoft/playwright-cli/.github/workflows/publish.yml@refs/tags/v0.1.1"
            )
        );
        assert_eq!(p.source_repository_ref.as_deref(), Some("refs/tags/v0.1.1"));
        assert_eq!(p.source_repository_identifier.as_deref(), Some("273562379"));
        assert_eq!(
            p.source_repository_owner_identifier.as_deref(),
            Some("6154722")
        );
        assert_eq!(p.build_trigger.as_deref(), Some("release"));
        assert_eq!(
            p.run_invocation_uri.as_deref(),
            Some("https://github.com/microsoft/playwright-cli/actions/runs/22026075834/attempts/1")
        );
        assert_eq!(p.integrated_time.timestamp(), 1_771_111_723);
        assert_eq!(p.log_index, 953_297_574);
    }

    #[test]
    fn scoped_names_are_written_as_npm_writes_them() {
        assert_eq!(
            npm_package_url("@playwright/cli", "0.1.1"),
            "pkg:npm/%40playwright/cli@0.1.1"
        );
        assert_eq!(
            npm_package_url("sigstore", "2.3.1"),
            "pkg:npm/sigstore@2.3.1"
        );
        let statement = json_of(&unb64(
            &json_of(PLAYWRIGHT_CLI_0_1_1.bundle)["dsseEnvelope"]["payload"],
        ));
        assert_eq!(
            statement["subject"][0]["name"],
            "pkg:npm/%40playwright/cli@0.1.1"
        );
    }

    #[test]
    fn a_changed_payload_fails_the_signature() {
        for real in ALL {
            let mut bundle = json_of(real.bundle);
            let mut payload = unb64(&bundle["dsseEnvelope"]["payload"]);
            // A byte inside the statement's `_type` URL: still JSON, no longer what was signed.
            payload[12] ^= 0x01;
            bundle["dsseEnvelope"]["payload"] = json!(b64(&payload));
            assert_eq!(check(real, &bundle), Err(ProvenanceError::InvalidSignature));
        }
    }

    #[test]
    fn a_changed_signature_fails() {
        for real in ALL {
            let mut bundle = json_of(real.bundle);
            let mut sig = unb64(&bundle["dsseEnvelope"]["signatures"][0]["sig"]);
            let last = sig.len() - 1;
            sig[last] ^= 0x01;
            bundle["dsseEnvelope"]["signatures"][0]["sig"] = json!(b64(&sig));
            assert_eq!(check(real, &bundle), Err(ProvenanceError::InvalidSignature));
        }
    }

    #[test]
    fn another_tarball_name_or_version_is_refused() {
        let real = &PLAYWRIGHT_CLI_0_1_1;
        let root = root();
        let digest = sha512(real.tarball);
        assert_eq!(
            verify(
                real.bundle,
                real.name,
                real.version,
                &sha512(b"another tarball"),
                &root
            ),
            Err(ProvenanceError::SubjectDigestMismatch(
                "pkg:npm/%40playwright/cli@0.1.1".into()
            ))
        );
        assert_eq!(
            verify(real.bundle, "@playwright/cli", "0.1.2", &digest, &root),
            Err(ProvenanceError::SubjectNameMismatch {
                expected: "pkg:npm/%40playwright/cli@0.1.2".into(),
                found: "pkg:npm/%40playwright/cli@0.1.1".into(),
            })
        );
        assert_eq!(
            verify(real.bundle, "@playwright/kit", "0.1.1", &digest, &root),
            Err(ProvenanceError::SubjectNameMismatch {
                expected: "pkg:npm/%40playwright/kit@0.1.1".into(),
                found: "pkg:npm/%40playwright/cli@0.1.1".into(),
            })
        );
        let real = &SIGSTORE_2_3_1;
        assert!(matches!(
            verify(
                real.bundle,
                "sigstore",
                "2.3.0",
                &sha512(real.tarball),
                &root
            ),
            Err(ProvenanceError::SubjectNameMismatch { .. })
        ));
        assert!(matches!(
            verify(
                real.bundle,
                "sigstore",
                "2.3.1",
                &sha512(SIGSTORE_1_3_0.tarball),
                &root
            ),
            Err(ProvenanceError::SubjectDigestMismatch(_))
        ));
    }

    #[test]
    fn another_payload_type_is_refused() {
        let mut bundle = json_of(SIGSTORE_2_3_1.bundle);
        bundle["dsseEnvelope"]["payloadType"] = json!("application/json");
        assert_eq!(
            check(&SIGSTORE_2_3_1, &bundle),
            Err(ProvenanceError::WrongPayloadType("application/json".into()))
        );
    }

    #[test]
    fn bundles_of_other_shapes_are_refused() {
        let real = &SIGSTORE_2_3_1;
        assert!(matches!(
            verify(
                b"{not json",
                real.name,
                real.version,
                &sha512(real.tarball),
                &root()
            ),
            Err(ProvenanceError::MalformedBundle(_))
        ));

        let mut bundle = json_of(real.bundle);
        bundle["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.4");
        assert!(matches!(
            check(real, &bundle),
            Err(ProvenanceError::UnsupportedMediaType(_))
        ));

        // npm's own publish attestation is signed with the registry's key, not a certificate.
        let mut bundle = json_of(real.bundle);
        bundle["verificationMaterial"]
            .as_object_mut()
            .expect("an object")
            .remove("x509CertificateChain");
        bundle["verificationMaterial"]["publicKey"] = json!({"hint": "SHA256:abc"});
        assert_eq!(
            check(real, &bundle),
            Err(ProvenanceError::NoSigningCertificate)
        );

        let mut bundle = json_of(real.bundle);
        let signature = bundle["dsseEnvelope"]["signatures"][0].clone();
        bundle["dsseEnvelope"]["signatures"] = json!([signature.clone(), signature]);
        assert_eq!(
            check(real, &bundle),
            Err(ProvenanceError::SignatureCount(2))
        );

        let mut bundle = json_of(real.bundle);
        bundle["verificationMaterial"]["tlogEntries"] = json!([]);
        assert_eq!(
            check(real, &bundle),
            Err(ProvenanceError::NoTransparencyLogEntry)
        );
    }

    #[test]
    fn protobuf_json_variants_of_a_bundle_verify() {
        // protobuf's JSON mapping lets int64 be numbers and bytes be unpadded or URL-safe base64.
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let real = &SIGSTORE_2_3_1;
        let mut bundle = json_of(real.bundle);
        let entry = &mut bundle["verificationMaterial"]["tlogEntries"][0];
        entry["logIndex"] = json!(94_408_136);
        entry["integratedTime"] = json!(1_715_879_523);
        let sig = unb64(&bundle["dsseEnvelope"]["signatures"][0]["sig"]);
        bundle["dsseEnvelope"]["signatures"][0]["sig"] = json!(URL_SAFE_NO_PAD.encode(sig));
        assert!(check(real, &bundle).is_ok());
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        for real in ALL {
            let mut bundle = json_of(real.bundle);
            let at = bundle["verificationMaterial"]["tlogEntries"][0]["integratedTime"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("integratedTime");
            let key = KeyPair::generate().expect("a key");
            let leaf = TestCa::new(at).leaf(at, &key, true, Vec::new());
            let material = &mut bundle["verificationMaterial"];
            if material.get("certificate").is_some() {
                material["certificate"]["rawBytes"] = json!(b64(&leaf));
            } else {
                material["x509CertificateChain"]["certificates"][0]["rawBytes"] = json!(b64(&leaf));
            }
            assert_eq!(
                check(real, &bundle),
                Err(ProvenanceError::UntrustedCertificate)
            );
        }
    }

    /// The pinned root with the Rekor key whose id `log_id` is replaced by `key`, so that a test
    /// can sign entries "from" that log.
    fn root_with_log_key(log_id: &Value, key: &KeyPair) -> TrustedRoot {
        let mut root = json_of(TRUSTED_ROOT);
        for log in root["tlogs"].as_array_mut().expect("tlogs") {
            if &log["logId"]["keyId"] == log_id {
                log["publicKey"]["rawBytes"] = json!(b64(&key.subject_public_key_info()));
            }
        }
        TrustedRoot::from_json(&bytes_of(&root)).expect("the altered root reads")
    }

    #[test]
    fn a_time_outside_the_certificate_validity_is_refused() {
        let real = &SIGSTORE_2_3_1;
        let key = KeyPair::generate().expect("a key");
        let mut bundle = json_of(real.bundle);
        let root = root_with_log_key(
            &bundle["verificationMaterial"]["tlogEntries"][0]["logId"]["keyId"],
            &key,
        );

        // The same entry re-signed by the stand-in key verifies: the setup is sound.
        resign_entry(&mut bundle, &key);
        assert!(check_with(real, &bundle, &root).is_ok());

        // Fulcio certificates live ten minutes; an hour later the certificate had expired, and
        // a day earlier it did not exist yet.
        for shift in [3_600, -86_400] {
            let mut bundle = bundle.clone();
            let at = 1_715_879_523 + shift;
            bundle["verificationMaterial"]["tlogEntries"][0]["integratedTime"] =
                json!(at.to_string());
            resign_entry(&mut bundle, &key);
            assert_eq!(
                check_with(real, &bundle, &root),
                Err(ProvenanceError::CertificateNotValidAtIntegratedTime(
                    DateTime::from_timestamp(at, 0).expect("a time")
                ))
            );
        }
    }

    #[test]
    fn a_changed_signed_entry_timestamp_is_refused() {
        for real in ALL {
            // The time moved by a second: Rekor did not sign that.
            let mut bundle = json_of(real.bundle);
            let entry = &mut bundle["verificationMaterial"]["tlogEntries"][0];
            let at: i64 = entry["integratedTime"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("a time");
            entry["integratedTime"] = json!((at + 1).to_string());
            assert_eq!(
                check(real, &bundle),
                Err(ProvenanceError::InvalidSignedEntryTimestamp)
            );

            // Signed, but not by the log.
            let mut bundle = json_of(real.bundle);
            resign_entry(&mut bundle, &KeyPair::generate().expect("a key"));
            assert_eq!(
                check(real, &bundle),
                Err(ProvenanceError::InvalidSignedEntryTimestamp)
            );

            let mut bundle = json_of(real.bundle);
            let entry = &mut bundle["verificationMaterial"]["tlogEntries"][0];
            entry
                .as_object_mut()
                .expect("an entry")
                .remove("inclusionPromise");
            assert_eq!(
                check(real, &bundle),
                Err(ProvenanceError::MissingSignedEntryTimestamp)
            );

            let mut bundle = json_of(real.bundle);
            bundle["verificationMaterial"]["tlogEntries"][0]["logId"]["keyId"] =
                json!(b64(&[7; 32]));
            assert_eq!(
                check(real, &bundle),
                Err(ProvenanceError::UnknownTransparencyLog(hex::encode(
                    [7; 32]
                )))
            );
        }
    }

    #[test]
    fn a_changed_inclusion_proof_is_refused() {
        for real in [&SIGSTORE_2_3_1, &PLAYWRIGHT_CLI_0_1_1] {
            let mut bundle = json_of(real.bundle);
            let proof = &mut bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"];
            let mut hash = unb64(&proof["hashes"][0]);
            hash[0] ^= 0x01;
            proof["hashes"][0] = json!(b64(&hash));
            assert!(matches!(
                check(real, &bundle),
                Err(ProvenanceError::InvalidInclusionProof(m)) if m.contains("root hash")
            ));

            let mut bundle = json_of(real.bundle);
            let proof = &mut bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"];
            let index: u64 = proof["logIndex"]
                .as_str()
                .and_then(|i| i.parse().ok())
                .expect("an index");
            proof["logIndex"] = json!((index + 1).to_string());
            assert!(matches!(
                check(real, &bundle),
                Err(ProvenanceError::InvalidInclusionProof(_))
            ));

            // A checkpoint for a bigger tree, not signed by the log.
            let mut bundle = json_of(real.bundle);
            let proof = &mut bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"];
            let envelope = proof["checkpoint"]["envelope"]
                .as_str()
                .expect("an envelope");
            let size = proof["treeSize"].as_str().expect("a size").to_string();
            let bigger = (size.parse::<u64>().expect("a size") + 1).to_string();
            proof["checkpoint"]["envelope"] = json!(envelope.replacen(&size, &bigger, 1));
            proof["treeSize"] = json!(bigger);
            assert!(matches!(
                check(real, &bundle),
                Err(ProvenanceError::InvalidInclusionProof(m)) if m.contains("checkpoint signature")
            ));
        }
    }

    #[test]
    fn a_log_entry_of_another_signature_is_refused() {
        // sigstore@2.3.1's bundle with the (genuine, intoto 0.0.2) entry of sigstore@1.3.0,
        // signed by the stand-in log key: the time would be Rekor's, but for another signature.
        let real = &SIGSTORE_2_3_1;
        let key = KeyPair::generate().expect("a key");
        let mut bundle = json_of(real.bundle);
        let root = root_with_log_key(
            &bundle["verificationMaterial"]["tlogEntries"][0]["logId"]["keyId"],
            &key,
        );
        let other = json_of(SIGSTORE_1_3_0.bundle);
        bundle["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"] =
            other["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"].clone();
        resign_entry(&mut bundle, &key);
        assert_eq!(
            check_with(real, &bundle, &root),
            Err(ProvenanceError::TransparencyLogEntryMismatch(
                "it records another signature".into()
            ))
        );

        // An entry claiming another kind than its body's.
        let mut bundle = json_of(real.bundle);
        bundle["verificationMaterial"]["tlogEntries"][0]["kindVersion"] =
            json!({"kind": "dsse", "version": "0.0.1"});
        resign_entry(&mut bundle, &key);
        assert!(matches!(
            check_with(real, &bundle, &root),
            Err(ProvenanceError::TransparencyLogEntryMismatch(m)) if m.contains("not of kind dsse")
        ));
    }

    /// A whole bundle made here (`testing::sigstore`): a CA and a log in a test trusted root, a
    /// certificate with the given Fulcio extensions, a DSSE envelope of `statement`, and the
    /// log's entry of it.
    fn synthetic(
        statement: &Value,
        eku: bool,
        extensions: &[(u64, &[u8])],
    ) -> (TrustedRoot, Vec<u8>) {
        let sigstore = TestSigstore::new();
        let root =
            TrustedRoot::from_json(&sigstore.trusted_root_json()).expect("the test root reads");
        (root, sigstore.bundle(statement, eku, extensions))
    }

    fn statement(predicate_type: &str) -> Value {
        json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "pkg:npm/%40o/p@1.0.0", "digest": {"sha512": hex::encode(sha512(b"tarball"))}}],
            "predicateType": predicate_type,
            "predicate": {},
        })
    }

    #[test]
    fn a_synthetic_bundle_reads_every_extension() {
        let issuer = utf8(GITHUB_ACTIONS_ISSUER);
        let repo = utf8("https://github.com/o/r");
        let config =
            utf8("https://github.com/o/r/.github/workflows/ci/publish.yml@refs/heads/main");
        let trigger = utf8("workflow_dispatch");
        let (root, bundle) = synthetic(
            &statement(SLSA_PROVENANCE_V1),
            true,
            &[
                (8, &issuer),
                (12, &repo),
                (18, &config),
                (20, &trigger),
                (2, b"push"),
            ],
        );
        let p = verify(&bundle, "@o/p", "1.0.0", &sha512(b"tarball"), &root).expect("verifies");
        assert_eq!(p.issuer, GITHUB_ACTIONS_ISSUER);
        assert_eq!(p.github_repository(), RepoRef::new("o", "r"));
        assert_eq!(
            p.workflow_file().as_deref(),
            Some(".github/workflows/ci/publish.yml")
        );
        // The generic extension wins over the legacy one.
        assert_eq!(p.build_trigger.as_deref(), Some("workflow_dispatch"));
        assert_eq!(p.integrated_time.timestamp(), 1_750_000_000);
        assert_eq!(p.log_index, 42);
    }

    #[test]
    fn a_synthetic_bundle_of_another_kind_is_refused() {
        let issuer = utf8(GITHUB_ACTIONS_ISSUER);
        let check = |statement: &Value, eku: bool, extensions: &[(u64, &[u8])]| {
            let (root, bundle) = synthetic(statement, eku, extensions);
            verify(&bundle, "@o/p", "1.0.0", &sha512(b"tarball"), &root)
        };
        assert_eq!(
            check(
                &statement("https://github.com/npm/attestation/tree/main/specs/publish/v0.1"),
                true,
                &[(8, &issuer)]
            ),
            Err(ProvenanceError::UnsupportedPredicateType(
                "https://github.com/npm/attestation/tree/main/specs/publish/v0.1".into()
            ))
        );
        let mut other = statement(SLSA_PROVENANCE_V1);
        other["_type"] = json!("https://in-toto.io/Statement/v2");
        assert!(matches!(
            check(&other, true, &[(8, &issuer)]),
            Err(ProvenanceError::UnsupportedStatementType(_))
        ));
        assert_eq!(
            check(&statement(SLSA_PROVENANCE_V1), false, &[(8, &issuer)]),
            Err(ProvenanceError::NotCodeSigningCertificate)
        );
        assert_eq!(
            check(&statement(SLSA_PROVENANCE_V1), true, &[]),
            Err(ProvenanceError::MissingCertificateExtension("issuer"))
        );
        // A raw string where a DER UTF8String belongs.
        assert_eq!(
            check(
                &statement(SLSA_PROVENANCE_V1),
                true,
                &[(8, GITHUB_ACTIONS_ISSUER.as_bytes())]
            ),
            Err(ProvenanceError::MalformedCertificateExtension(
                "1.3.6.1.4.1.57264.1.8".into()
            ))
        );
        // An extension not read is not decoded: a raw string under a new arc is let be.
        assert!(
            check(
                &statement(SLSA_PROVENANCE_V1),
                true,
                &[(8, &issuer), (30, b"raw")]
            )
            .is_ok()
        );
    }

    #[test]
    fn github_repositories_are_read_from_uris() {
        assert_eq!(
            github_repository("https://github.com/Owner/Repo"),
            RepoRef::new("owner", "repo")
        );
        assert_eq!(
            github_repository("https://github.com/owner/repo")
                .map(|r| r.to_string())
                .as_deref(),
            Some("owner/repo")
        );
        assert_eq!(
            github_repository("https://GitHub.com/owner/repo/"),
            RepoRef::new("owner", "repo")
        );
        for other in [
            "https://gitlab.com/owner/repo",
            "http://github.com/owner/repo",
            "https://github.com/owner",
            "https://github.com/owner/repo/tree/main",
            "https://github.com.evil.test/owner/repo",
            "github.com/owner/repo",
        ] {
            assert_eq!(github_repository(other), None, "{other}");
        }
    }

    #[test]
    fn trusted_roots_that_cannot_verify_are_refused() {
        assert!(matches!(
            TrustedRoot::from_json(b"{not json"),
            Err(TrustedRootError::Json(_))
        ));
        let mut root = json_of(TRUSTED_ROOT);
        root["certificateAuthorities"] = json!([]);
        assert!(matches!(
            TrustedRoot::from_json(&bytes_of(&root)),
            Err(TrustedRootError::Empty(_))
        ));
        let mut root = json_of(TRUSTED_ROOT);
        root["tlogs"][0]["publicKey"]["rawBytes"] = json!("not base64!");
        assert!(matches!(
            TrustedRoot::from_json(&bytes_of(&root)),
            Err(TrustedRootError::Unusable(_))
        ));
        let root = TrustedRoot::from_json(TRUSTED_ROOT).expect("reads");
        // Fulcio's 2021 root alone, and its 2022 root with the intermediate; Rekor's ECDSA key and
        // the Ed25519 key of its 2025 shard.
        assert_eq!(root.authorities.len(), 2);
        assert_eq!(root.logs.len(), 2);
    }
}
