//! Upstream packuments as this registry serves them (pure: no I/O): the upstream's document
//! with every `dist.tarball` and `dist.attestations.url` pointing here, plus the versions kept
//! here that the upstream no longer lists or now lists with other bytes (retention), and what a
//! tarball fetch needs to know of one version.

use semver::Version;
use serde_json::{Map, Value};

use crate::domain::PackageName;
use crate::domain::integrity::sri_agrees;
use crate::domain::packument::{ABBREVIATED_FIELDS, attestations_url, tarball_url};

/// A version installed through the cache: kept installable here whatever the upstream does
/// later (stored under `upstream::KEPT_NAMESPACE`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeptVersion {
    /// The version.
    pub version: Version,
    /// The stored tarball's key (`UpstreamStore::tarball`).
    pub tarball_key: String,
    /// `dist.integrity` of the stored bytes (always sha512).
    pub integrity: String,
    /// `dist.shasum` of the stored bytes.
    pub shasum: String,
    /// The version's manifest as the upstream served it when the tarball was fetched.
    pub manifest: Value,
    /// The upstream's `time[version]`, if it gave one.
    pub time: Option<String>,
}

/// What fetching one version's tarball needs from the upstream document.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDist {
    /// Where the upstream serves the bytes.
    pub tarball: String,
    /// The SRI the bytes must match (`dist.integrity`, or the sha1 `shasum` as SRI).
    pub integrity: String,
    /// The version's manifest, to keep with the bytes.
    pub manifest: Value,
    /// `time[version]`, when the document has it.
    pub time: Option<String>,
}

/// Why an upstream document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON, or not an object.
    #[error("the upstream's document of {0} is not a JSON object")]
    NotAnObject(String),
    /// Names another package.
    #[error("the upstream answered for {found} when asked for {asked}")]
    WrongName {
        /// The name asked for.
        asked: String,
        /// The name in the document.
        found: String,
    },
}

/// Parses an upstream document, checking it is an object naming `name` (an upstream that
/// answers with another package's document must not poison this one's cache).
pub fn parse(name: &PackageName, bytes: &[u8]) -> Result<Map<String, Value>, DocumentError> {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(DocumentError::NotAnObject(name.to_string()));
    };
    match doc.get("name").and_then(Value::as_str) {
        Some(found) if found != name.as_str() => Err(DocumentError::WrongName {
            asked: name.to_string(),
            found: found.to_string(),
        }),
        _ => Ok(doc),
    }
}

/// The dist of `version` in an upstream document, if it lists the version with a tarball URL
/// and a digest.
pub fn dist_of(doc: &Map<String, Value>, version: &Version) -> Option<UpstreamDist> {
    let manifest = doc.get("versions")?.get(version.to_string())?;
    let tarball = manifest.get("dist")?.get("tarball")?.as_str()?.to_string();
    let integrity = declared_sri(manifest)?;
    Some(UpstreamDist {
        tarball,
        integrity,
        manifest: manifest.clone(),
        time: doc
            .get("time")
            .and_then(|t| t.get(version.to_string()))
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The digest a version manifest declares of its tarball: `dist.integrity`, else the sha1
/// `dist.shasum` as SRI.
fn declared_sri(manifest: &Value) -> Option<String> {
    let dist = manifest.get("dist")?;
    match dist.get("integrity").and_then(Value::as_str) {
        Some(sri) => Some(sri.to_string()),
        None => sha1_sri(dist.get("shasum")?.as_str()?),
    }
}

/// Whether an upstream manifest describes the bytes kept of its version: only then is it served
/// for them (its signatures and attestations are about those bytes).
fn describes(manifest: &Value, kept: &KeptVersion) -> bool {
    declared_sri(manifest).is_some_and(|sri| sri_agrees(&sri, &kept.integrity, &kept.shasum))
}

/// A kept version's manifest as served: the one kept with its bytes, with their integrity and
/// shasum. What the upstream said of other bytes than those (a sha1-only `dist` whose sha512 was
/// computed here cannot be told apart) is dropped: `signatures` and `attestations` are
/// statements about `dist.integrity`.
fn kept_manifest(name: &PackageName, kept: &KeptVersion, abbreviated: bool) -> Value {
    let mut manifest = if abbreviated {
        abbreviate(&kept.manifest)
    } else {
        kept.manifest.clone()
    };
    let signed_these_bytes = kept
        .manifest
        .get("dist")
        .and_then(|d| d.get("integrity"))
        .and_then(Value::as_str)
        == Some(kept.integrity.as_str());
    if let Some(m) = manifest.as_object_mut() {
        m.insert("name".into(), Value::String(name.to_string()));
        m.insert("version".into(), Value::String(kept.version.to_string()));
        let dist = m.entry("dist").or_insert_with(|| Value::Object(Map::new()));
        if !dist.is_object() {
            *dist = Value::Object(Map::new());
        }
        if let Some(dist) = dist.as_object_mut() {
            dist.insert("integrity".into(), Value::String(kept.integrity.clone()));
            dist.insert("shasum".into(), Value::String(kept.shasum.clone()));
            if !signed_these_bytes {
                for statement in ["signatures", "attestations", "npm-signature"] {
                    dist.remove(statement);
                }
            }
        }
    }
    manifest
}

/// Whether an upstream's attestations of a version (`{attestations: [{predicateType, bundle}]}`)
/// are about the bytes whose SRI is `integrity`: each bundle's statement names their sha512 as
/// its first subject's digest, which is what npm checks before it verifies a bundle. Attestations
/// of other bytes (a version changed upstream) are never kept nor served for these.
pub fn attestations_attest(body: &[u8], integrity: &str) -> bool {
    use base64::Engine;
    let Some(sha512_hex) = crate::domain::integrity::Digests::declared_sha512_hex(integrity) else {
        return false;
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(listed) = body.get("attestations").and_then(Value::as_array) else {
        return false;
    };
    !listed.is_empty()
        && listed.iter().all(|attestation| {
            attestation
                .pointer("/bundle/dsseEnvelope/payload")
                .and_then(Value::as_str)
                .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
                .and_then(|statement| {
                    statement
                        .pointer("/subject/0/digest/sha512")
                        .and_then(Value::as_str)
                        .map(|digest| digest.eq_ignore_ascii_case(&sha512_hex))
                })
                .unwrap_or(false)
        })
}

/// A hex sha1 as SRI.
fn sha1_sri(hex_digest: &str) -> Option<String> {
    use base64::Engine;
    let raw = hex::decode(hex_digest).ok().filter(|r| r.len() == 20)?;
    Some(format!(
        "sha1-{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

/// The document this registry serves for an upstream name: the upstream's (`None` when the
/// upstream no longer has the package), with the kept versions it lacks added back, and every
/// tarball and attestations URL pointing at `base_url`. `None` when there is nothing to serve.
/// An install view asked of a whole upstream document (kept while the upstream is down) is cut
/// down to it.
///
/// A kept version the upstream still lists is served as the upstream lists it only while that
/// describes the kept bytes (the same digest: then its signatures, attestations and deprecation
/// are current). Changed upstream since it was kept, it is served as kept: the tarball served
/// is the kept one, and its manifest (dependencies, scripts, `bin`) must be the one that came
/// with those bytes, not the upstream's new one; only the upstream's deprecation of the version
/// is taken (a deprecation is about the version, whatever its bytes).
pub fn render(
    name: &PackageName,
    upstream: Option<&Map<String, Value>>,
    kept: &[KeptVersion],
    abbreviated: bool,
    base_url: &str,
) -> Option<Vec<u8>> {
    if upstream.is_none() && kept.is_empty() {
        return None;
    }
    let mut doc = upstream.cloned().unwrap_or_else(|| {
        let mut doc = Map::new();
        doc.insert("name".into(), Value::String(name.to_string()));
        doc
    });
    doc.remove("_attachments");
    if abbreviated && doc.contains_key("time") {
        doc.retain(|key, _| matches!(key.as_str(), "name" | "dist-tags" | "versions" | "modified"));
        if let Some(versions) = doc.get_mut("versions").and_then(Value::as_object_mut) {
            for manifest in versions.values_mut() {
                *manifest = abbreviate(manifest);
            }
        }
    }
    let mut added = Vec::new();
    {
        let versions = doc
            .entry("versions")
            .or_insert_with(|| Value::Object(Map::new()));
        if !versions.is_object() {
            *versions = Value::Object(Map::new());
        }
        let versions = versions.as_object_mut()?;
        for k in kept {
            let key = k.version.to_string();
            let deprecation = match versions.get(&key) {
                // The upstream's own describes the kept bytes: it is served.
                Some(listed) if describes(listed, k) => continue,
                // Changed upstream: the kept manifest, deprecated as the upstream says now.
                Some(listed) => Some(listed.get("deprecated").cloned()),
                None => None,
            };
            let mut manifest = kept_manifest(name, k, abbreviated);
            match deprecation {
                Some(deprecated) => {
                    if let Some(m) = manifest.as_object_mut() {
                        match deprecated {
                            Some(message) => m.insert("deprecated".into(), message),
                            None => m.remove("deprecated"),
                        };
                    }
                }
                None => added.push(k),
            }
            versions.insert(key, manifest);
        }
        for (version, manifest) in versions.iter_mut() {
            let Ok(version) = Version::parse(version) else {
                continue;
            };
            if let Some(dist) = manifest.get_mut("dist").and_then(Value::as_object_mut) {
                dist.insert(
                    "tarball".into(),
                    Value::String(tarball_url(base_url, name, &version)),
                );
                // npm fetches them from the registry it installs from: served here too.
                if let Some(attestations) =
                    dist.get_mut("attestations").and_then(Value::as_object_mut)
                {
                    attestations.insert(
                        "url".into(),
                        Value::String(attestations_url(base_url, name, &version)),
                    );
                }
            }
        }
    }
    if !added.is_empty() {
        if !abbreviated {
            let time = doc
                .entry("time")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(time) = time.as_object_mut() {
                for k in &added {
                    if let Some(t) = &k.time {
                        time.insert(k.version.to_string(), Value::String(t.clone()));
                    }
                }
            }
        }
        // A package gone from the upstream keeps a `latest` among what is kept.
        let tags = doc
            .entry("dist-tags")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(tags) = tags.as_object_mut() {
            let latest_listed = tags
                .get("latest")
                .and_then(Value::as_str)
                .is_some_and(|l| upstream.is_some_and(|u| listed(u, l)));
            if !latest_listed && let Some(highest) = kept.iter().map(|k| &k.version).max() {
                tags.insert("latest".into(), Value::String(highest.to_string()));
            }
        }
    }
    serde_json::to_vec(&doc).ok()
}

/// Whether the upstream document lists `version`.
fn listed(doc: &Map<String, Value>, version: &str) -> bool {
    doc.get("versions").and_then(|v| v.get(version)).is_some()
}

/// The install view of a full manifest: what npm's abbreviated document keeps.
fn abbreviate(manifest: &Value) -> Value {
    let Some(full) = manifest.as_object() else {
        return manifest.clone();
    };
    let mut out = Map::new();
    for key in ["name", "version", "deprecated", "dist", "hasInstallScript"]
        .iter()
        .chain(ABBREVIATED_FIELDS)
    {
        if let Some(v) = full.get(*key) {
            out.insert((*key).to_string(), v.clone());
        }
    }
    if !out.contains_key("hasInstallScript")
        && full
            .get("scripts")
            .and_then(Value::as_object)
            .is_some_and(|s| {
                ["preinstall", "install", "postinstall"]
                    .iter()
                    .any(|k| s.contains_key(*k))
            })
    {
        out.insert("hasInstallScript".into(), Value::Bool(true));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn name(n: &str) -> PackageName {
        PackageName::parse(n).unwrap()
    }

    fn upstream() -> Map<String, Value> {
        let doc = json!({
            "name": "left-pad",
            "dist-tags": {"latest": "1.1.0"},
            "versions": {
                "1.1.0": {"name": "left-pad", "version": "1.1.0", "deprecated": "use String.prototype.padStart",
                          "dist": {"tarball": "https://up.example/left-pad/-/left-pad-1.1.0.tgz",
                                   "integrity": "sha512-AAAA", "shasum": "00"}}
            },
            "time": {"1.1.0": "2020-01-01T00:00:00.000Z"}
        });
        doc.as_object().unwrap().clone()
    }

    fn kept(v: &str) -> KeptVersion {
        KeptVersion {
            version: Version::parse(v).unwrap(),
            tarball_key: format!("left-pad/{v}-ab.tgz"),
            integrity: "sha512-KEPT".into(),
            shasum: "11".into(),
            manifest: json!({"name": "left-pad", "version": v, "scripts": {"install": "x"},
                             "description": "d", "dist": {"tarball": "https://up.example/x.tgz"}}),
            time: Some("2019-01-01T00:00:00.000Z".into()),
        }
    }

    #[test]
    fn tarballs_point_here_and_deprecations_come_from_upstream() {
        let out = render(
            &name("left-pad"),
            Some(&upstream()),
            &[],
            false,
            "http://r.test/",
        )
        .unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            doc["versions"]["1.1.0"]["dist"]["tarball"],
            "http://r.test/left-pad/-/left-pad-1.1.0.tgz"
        );
        assert_eq!(
            doc["versions"]["1.1.0"]["deprecated"],
            "use String.prototype.padStart"
        );
    }

    /// `kept(v)` of the very bytes the upstream lists for it.
    fn kept_as_listed(v: &str) -> KeptVersion {
        KeptVersion {
            integrity: "sha512-AAAA".into(),
            shasum: "00".into(),
            ..kept(v)
        }
    }

    #[test]
    fn kept_versions_the_upstream_dropped_are_served() {
        let out = render(
            &name("left-pad"),
            Some(&upstream()),
            &[kept("1.0.0"), kept_as_listed("1.1.0")],
            true,
            "http://r.test",
        )
        .unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        let v = &doc["versions"]["1.0.0"];
        assert_eq!(
            v["dist"]["tarball"],
            "http://r.test/left-pad/-/left-pad-1.0.0.tgz"
        );
        assert_eq!(v["dist"]["integrity"], "sha512-KEPT");
        assert_eq!(v["hasInstallScript"], true);
        assert!(v.get("description").is_none(), "abbreviated");
        assert_eq!(
            doc["versions"]["1.1.0"]["dist"]["integrity"], "sha512-AAAA",
            "upstream's own wins"
        );
        assert_eq!(doc["dist-tags"]["latest"], "1.1.0");
    }

    /// The upstream republished 1.1.0 with other bytes and a dependency more after this
    /// registry kept it: the kept manifest is served, with the kept bytes' digests and the
    /// signatures and attestations made for them; the upstream's deprecation still shows.
    #[test]
    fn a_version_changed_upstream_is_served_as_kept() {
        let mut up = upstream();
        up["versions"]["1.1.0"]["dependencies"] = json!({"added-upstream": "^1.0.0"});
        up["versions"]["1.1.0"]["dist"]["signatures"] = json!([{"keyid": "k", "sig": "NEW"}]);
        up["versions"]["1.1.0"]["dist"]["attestations"] = json!({"url": "https://up.example/-/npm/v1/attestations/left-pad@1.1.0",
                   "provenance": {"predicateType": "https://slsa.dev/provenance/v1"}});
        let mut changed = kept("1.1.0");
        changed.manifest = json!({"name": "left-pad", "version": "1.1.0", "dependencies": {},
            "dist": {"integrity": "sha512-KEPT", "shasum": "11",
                     "tarball": "https://up.example/left-pad/-/left-pad-1.1.0.tgz",
                     "signatures": [{"keyid": "k", "sig": "OLD"}],
                     "attestations": {"url": "https://up.example/-/npm/v1/attestations/left-pad@1.1.0",
                                      "provenance": {"predicateType": "https://slsa.dev/provenance/v0.2"}}}});
        for abbreviated in [false, true] {
            let out = render(
                &name("left-pad"),
                Some(&up),
                std::slice::from_ref(&changed),
                abbreviated,
                "http://r.test",
            )
            .unwrap();
            let doc: Value = serde_json::from_slice(&out).unwrap();
            let v = &doc["versions"]["1.1.0"];
            assert_eq!(v["dist"]["integrity"], "sha512-KEPT", "{v}");
            assert_eq!(v["dist"]["shasum"], "11");
            assert_eq!(
                v["dist"]["signatures"],
                json!([{"keyid": "k", "sig": "OLD"}])
            );
            assert_eq!(
                v["dist"]["attestations"],
                json!({"url": "http://r.test/-/npm/v1/attestations/left-pad@1.1.0",
                       "provenance": {"predicateType": "https://slsa.dev/provenance/v0.2"}})
            );
            assert_eq!(
                v["dist"]["tarball"],
                "http://r.test/left-pad/-/left-pad-1.1.0.tgz"
            );
            assert_eq!(v["dependencies"], json!({}), "the kept manifest's");
            assert_eq!(v["deprecated"], "use String.prototype.padStart");
            assert_eq!(doc["dist-tags"]["latest"], "1.1.0");
        }
        // No longer deprecated upstream: no longer deprecated here.
        up["versions"]["1.1.0"]
            .as_object_mut()
            .unwrap()
            .remove("deprecated");
        changed.manifest["deprecated"] = json!("old news");
        let out = render(
            &name("left-pad"),
            Some(&up),
            &[changed],
            false,
            "http://r.test",
        )
        .unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert!(doc["versions"]["1.1.0"].get("deprecated").is_none());
    }

    /// A kept manifest that declared only a sha1 (the sha512 served was computed here) keeps no
    /// statement the upstream made about its `dist.integrity`.
    #[test]
    fn statements_about_other_digests_are_dropped_from_a_kept_manifest() {
        let mut old = kept("1.0.0");
        old.manifest["dist"] = json!({"shasum": "11", "signatures": [{"keyid": "k", "sig": "S"}],
                                      "npm-signature": "-----BEGIN PGP SIGNATURE-----"});
        let out = render(&name("left-pad"), None, &[old], false, "http://r.test").unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        let dist = &doc["versions"]["1.0.0"]["dist"];
        assert_eq!(dist["integrity"], "sha512-KEPT");
        assert!(dist.get("signatures").is_none(), "{dist}");
        assert!(dist.get("npm-signature").is_none(), "{dist}");
    }

    #[test]
    fn attestations_urls_point_here() {
        let mut up = upstream();
        up["versions"]["1.1.0"]["dist"]["attestations"] = json!({"url": "https://up.example/-/npm/v1/attestations/left-pad@1.1.0",
                   "provenance": {"predicateType": "https://slsa.dev/provenance/v1"}});
        let out = render(&name("left-pad"), Some(&up), &[], true, "http://r.test/").unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            doc["versions"]["1.1.0"]["dist"]["attestations"]["url"],
            "http://r.test/-/npm/v1/attestations/left-pad@1.1.0"
        );
    }

    #[test]
    fn attestations_must_name_the_bytes_served() {
        use base64::Engine;
        let bytes = b"a tarball";
        let digests = crate::domain::integrity::Digests::of(bytes);
        let body = |sha512: &str| {
            let statement =
                json!({"subject": [{"name": "pkg:npm/x@1.0.0", "digest": {"sha512": sha512}}]});
            let payload = base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&statement).unwrap());
            serde_json::to_vec(&json!({"attestations": [
                {"predicateType": "p", "bundle": {"dsseEnvelope": {"payload": payload}}}
            ]}))
            .unwrap()
        };
        assert!(attestations_attest(
            &body(&digests.sha512_hex),
            &digests.integrity
        ));
        let other = crate::domain::integrity::Digests::of(b"other bytes");
        assert!(!attestations_attest(
            &body(&other.sha512_hex),
            &digests.integrity
        ));
        assert!(!attestations_attest(
            b"{\"attestations\": []}",
            &digests.integrity
        ));
        assert!(!attestations_attest(b"not json", &digests.integrity));
        assert!(!attestations_attest(
            &body(&digests.sha512_hex),
            "sha1-AAAA"
        ));
    }

    #[test]
    fn a_whole_document_is_cut_to_the_install_view() {
        let out = render(
            &name("left-pad"),
            Some(&upstream()),
            &[],
            true,
            "http://r.test",
        )
        .unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert!(doc.get("time").is_none());
        assert_eq!(
            doc["versions"]["1.1.0"]["deprecated"],
            "use String.prototype.padStart"
        );
        assert_eq!(
            doc["versions"]["1.1.0"]["dist"]["tarball"],
            "http://r.test/left-pad/-/left-pad-1.1.0.tgz"
        );
    }

    #[test]
    fn a_package_gone_upstream_serves_what_is_kept() {
        let out = render(
            &name("left-pad"),
            None,
            &[kept("1.0.0")],
            false,
            "http://r.test",
        )
        .unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
        assert_eq!(doc["time"]["1.0.0"], "2019-01-01T00:00:00.000Z");
        assert!(render(&name("left-pad"), None, &[], false, "http://r.test").is_none());
    }

    #[test]
    fn dist_of_a_listed_version() {
        let d = dist_of(&upstream(), &Version::parse("1.1.0").unwrap()).unwrap();
        assert_eq!(
            d.tarball,
            "https://up.example/left-pad/-/left-pad-1.1.0.tgz"
        );
        assert_eq!(d.integrity, "sha512-AAAA");
        assert_eq!(d.time.as_deref(), Some("2020-01-01T00:00:00.000Z"));
        assert!(dist_of(&upstream(), &Version::parse("9.0.0").unwrap()).is_none());
    }

    #[test]
    fn another_packages_document_is_refused() {
        assert!(parse(&name("left-pad"), br#"{"name":"right-pad"}"#).is_err());
        assert!(parse(&name("left-pad"), b"[]").is_err());
        assert!(parse(&name("left-pad"), br#"{"name":"left-pad"}"#).is_ok());
    }
}
