//! Builders for tests (the `test-util` feature): tarballs, publish documents as npm sends them,
//! and package directories for the npm CLI. One copy here instead of one per test file, so a
//! change in what npm sends is made once. They panic on failure: they build test input, they
//! never read it.

pub mod sigstore;

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};
use sha1::Digest;

/// Builds a gzipped tarball from (path, contents) pairs; paths are written raw (not through
/// `set_path`, which refuses `..`), so hostile archives can be built too.
pub fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let name = &mut header.as_old_mut().name;
        assert!(path.len() <= name.len(), "tar path too long: {path}");
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder
            .append(&header, *data)
            .expect("appending to an in-memory tar");
    }
    let tar = builder.into_inner().expect("finishing an in-memory tar");
    gzip(&tar)
}

/// Gzips bytes (e.g. to make a gzip stream that is not a tar).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}

/// The tarball of a minimal package: `package/package.json` and `package/index.js`.
pub fn package_tgz(name: &str, version: &str) -> Vec<u8> {
    let manifest = serde_json::to_vec(&json!({ "name": name, "version": version }))
        .expect("a JSON object serialises");
    tgz(&[
        ("package/package.json", &manifest),
        ("package/index.js", b"module.exports = 1;\n"),
    ])
}

/// `sha512-…` of the bytes, as `dist.integrity` carries it.
pub fn integrity(bytes: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes))
    )
}

/// A publish document exactly as libnpmpublish builds it, for one version carrying `tarball`.
pub fn publish_doc(name: &str, version: &str, tarball: &[u8]) -> Value {
    json!({
        "_id": name,
        "name": name,
        "description": "test",
        "dist-tags": { "latest": version },
        "versions": { version: {
            "name": name, "version": version, "_id": format!("{name}@{version}"),
            "dist": {
                "integrity": integrity(tarball),
                "shasum": hex::encode(sha1::Sha1::digest(tarball)),
                "tarball": format!("http://ignored/{name}/-/{name}-{version}.tgz"),
            }
        }},
        "access": null,
        "_attachments": { format!("{name}-{version}.tgz"): {
            "content_type": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(tarball),
            "length": tarball.len(),
        }}
    })
}

/// Writes a package directory for `npm publish`: package.json (with the fields of `extra`
/// merged in), index.js and README.md. Returns the directory.
pub fn write_package(dir: &Path, name: &str, version: &str, extra: Value) -> PathBuf {
    std::fs::create_dir_all(dir).expect("creating the package directory");
    let mut manifest = json!({
        "name": name,
        "version": version,
        "description": format!("{name} test package"),
        "main": "index.js",
        "license": "MIT",
    });
    if let (Some(m), Value::Object(e)) = (manifest.as_object_mut(), extra) {
        m.extend(e);
    }
    let write = |file: &str, contents: String| {
        std::fs::write(dir.join(file), contents).expect("writing the package directory");
    };
    write(
        "package.json",
        serde_json::to_string_pretty(&manifest).expect("a JSON object serialises"),
    );
    write(
        "index.js",
        format!("module.exports = {{ name: {name:?}, version: {version:?} }};\n"),
    );
    write("README.md", format!("# {name}\n"));
    dir.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tarball::{TarballLimits, inspect};

    #[test]
    fn a_package_tarball_reads_back_with_its_manifest() {
        let summary = inspect(&package_tgz("@a/b", "1.2.3"), TarballLimits::default())
            .expect("the built tarball inspects");
        assert_eq!(summary.manifest["name"], "@a/b");
        assert_eq!(summary.manifest["version"], "1.2.3");
    }

    #[test]
    fn a_publish_document_carries_the_digests_of_its_tarball() {
        let tarball = package_tgz("a", "1.0.0");
        let doc = publish_doc("a", "1.0.0", &tarball);
        let dist = &doc["versions"]["1.0.0"]["dist"];
        assert_eq!(dist["integrity"], integrity(&tarball));
        assert_eq!(dist["shasum"], hex::encode(sha1::Sha1::digest(&tarball)));
        assert_eq!(doc["_attachments"]["a-1.0.0.tgz"]["length"], tarball.len());
    }
}
