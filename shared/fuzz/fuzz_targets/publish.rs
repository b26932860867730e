//! Publish documents: `publish::parse_put`, then `PendingPublish::verify` with small limits.
//!
//! The first byte picks the mode. Even: the rest is the raw `PUT /NAME` body. Odd: the rest is
//! `MANIFEST \0 TAR`, and the harness wraps it in a publish document whose base64, length and
//! digests are right (the tar gzipped), so the fuzzer reaches the tarball and manifest checks
//! behind the ones a random body cannot pass.
//!
//! Properties: nothing panics; a publish that passes `verify` is for a version without build
//! metadata, has at least one valid tag, carries a tarball that inspects within the limits with a
//! `package.json` naming this package and version, digests that are the tarball's, a storage key
//! that leads back to the name and version, and a stored manifest that is a JSON object within
//! the size limit and without the fields the registry derives.
#![no_main]

use std::io::Write;

use base64::Engine;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use registry::domain::integrity::Digests;
use registry::domain::publish::{MAX_MANIFEST_BYTES, PutDocument, parse_put};
use registry::domain::tarball::{self, TarballLimits};
use registry::domain::{DistTag, PackageName, TarballKey};
use serde_json::Value;

const LIMITS: TarballLimits = TarballLimits {
    max_unpacked_bytes: 1 << 20,
    max_entries: 64,
    max_manifest_bytes: 64 << 10,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let name = PackageName::parse(if mode & 2 == 0 { "@s/p" } else { "p" }).unwrap();
    let body = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let Some(doc) = wrap(&name, rest) else {
            return;
        };
        doc
    };
    let Ok(PutDocument::Publish(pending)) = parse_put(&name, Bytes::from(body)) else {
        return;
    };
    let version = pending.version.clone();
    assert!(version.build.is_empty(), "{version}");
    let Ok(valid) = pending.verify(&name, LIMITS) else {
        return;
    };

    assert_eq!(valid.version, version);
    assert!(!valid.tags.is_empty());
    for tag in &valid.tags {
        assert_eq!(DistTag::parse(tag.as_str()).as_ref(), Ok(tag));
    }

    let summary = tarball::inspect(&valid.tarball, LIMITS).expect("a verified tarball inspects");
    assert!(summary.file_count <= LIMITS.max_entries);
    assert!(summary.unpacked_size <= LIMITS.max_unpacked_bytes);
    assert_eq!(summary.manifest["name"], name.as_str());
    let dist = &valid.live.dist;
    assert_eq!(
        (dist.file_count, dist.unpacked_size),
        (summary.file_count, summary.unpacked_size)
    );
    let digests = Digests::of(&valid.tarball);
    assert_eq!(dist.shasum, digests.sha1_hex);
    assert_eq!(dist.integrity, digests.integrity);
    let (_, key_name, key_version) =
        TarballKey::parse(dist.tarball_key.as_str()).expect("own key parses");
    assert_eq!((key_name, key_version), (name, version));

    let manifest = valid.live.manifest.json();
    assert!(manifest.len() <= MAX_MANIFEST_BYTES);
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(manifest) else {
        panic!("stored manifest is not a JSON object: {manifest}");
    };
    for derived in [
        "dist",
        "_id",
        "_rev",
        "_attachments",
        "readme",
        "readmeFilename",
    ] {
        assert!(
            !fields.contains_key(derived),
            "stored manifest keeps {derived}"
        );
    }
});

/// A publish document for `name` whose version manifest is the text before the first NUL and whose
/// tarball is the rest, gzipped; length and digests declared correctly.
fn wrap(name: &PackageName, rest: &[u8]) -> Option<Vec<u8>> {
    let split = rest.iter().position(|&b| b == 0)?;
    let (manifest, tar) = (&rest[..split], &rest[split + 1..]);
    let manifest: serde_json::Map<String, Value> = serde_json::from_slice(manifest).ok()?;
    let version = manifest
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or("1.0.0")
        .to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    let tgz = gz.finish().unwrap();
    let digests = Digests::of(&tgz);
    let mut manifest = manifest;
    manifest.entry("dist").or_insert_with(
        || serde_json::json!({"shasum": digests.sha1_hex, "integrity": digests.integrity}),
    );
    let doc = serde_json::json!({
        "_id": name.as_str(),
        "name": name.as_str(),
        "dist-tags": {"latest": version},
        "versions": {version.clone(): manifest},
        "_attachments": {format!("{name}-{version}.tgz"): {
            "content_type": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(&tgz),
            "length": tgz.len(),
        }},
    });
    Some(serde_json::to_vec(&doc).unwrap())
}
