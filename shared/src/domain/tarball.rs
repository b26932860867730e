//! Reading a published tarball, bounded, to find and check its `package.json`.

use std::io::Read;
use std::path::Component;

/// Limits that keep a hostile tarball (a gzip bomb, millions of entries) from exhausting the server.
#[derive(Debug, Clone, Copy)]
pub struct TarballLimits {
    /// Most bytes the tarball may unpack to.
    pub max_unpacked_bytes: u64,
    /// Most entries it may hold.
    pub max_entries: u64,
    /// Largest `package.json` read.
    pub max_manifest_bytes: u64,
}

impl Default for TarballLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 1 << 30,
            max_entries: 200_000,
            max_manifest_bytes: 4 << 20,
        }
    }
}

/// What is wrong with a tarball.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarballError {
    #[error("tarball is not gzip-compressed")]
    NotGzip,
    #[error("tarball could not be read: {0}")]
    Corrupt(String),
    #[error("tarball entry '{0}' escapes the package directory")]
    UnsafePath(String),
    #[error("tarball unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("tarball has more than {0} entries")]
    TooManyEntries(u64),
    #[error("tarball has no package/package.json")]
    NoManifest,
    #[error("package.json in the tarball is not valid JSON: {0}")]
    BadManifest(String),
}

/// What the tarball says about itself.
#[derive(Debug, Clone)]
pub struct TarballSummary {
    /// The parsed `package/package.json`.
    pub manifest: serde_json::Value,
    /// Regular files in the tarball (`dist.fileCount`).
    pub file_count: u64,
    /// Their total size (`dist.unpackedSize`).
    pub unpacked_size: u64,
    /// Whether the package directory holds a `*.gyp` file at its top (npm then sets
    /// `scripts.install` to `node-gyp rebuild` when the package has no install script).
    pub has_gyp_file: bool,
}

/// Gunzips and walks the tarball, checking every entry's path and reading `package/package.json`.
///
/// Like npm's own extractor, the first path component is the package directory whatever its name
/// (`package/` in everything `npm pack` makes, other names in some old tarballs).
pub fn inspect(bytes: &[u8], limits: TarballLimits) -> Result<TarballSummary, TarballError> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Err(TarballError::NotGzip);
    }
    // The bound on the decompressed stream is what stops a gzip bomb: reading past it fails.
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(BoundedReader {
        inner: gz,
        remaining: limits.max_unpacked_bytes.saturating_add(1 << 20),
        limit: limits.max_unpacked_bytes,
    });
    let corrupt = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            TarballError::TooLarge(limits.max_unpacked_bytes)
        } else {
            TarballError::Corrupt(e.to_string())
        }
    };
    let mut manifest = None;
    let mut fallback_manifest = None;
    let mut has_gyp_file = false;
    let mut file_count = 0u64;
    let mut unpacked_size = 0u64;
    let mut entries_seen = 0u64;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(TarballError::TooManyEntries(limits.max_entries));
        }
        let path = entry.path().map_err(corrupt)?.into_owned();
        let shown = path.to_string_lossy().into_owned();
        let mut components = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => components.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => return Err(TarballError::UnsafePath(shown)),
            }
        }
        let kind = entry.header().entry_type();
        if (kind.is_hard_link() || kind.is_symlink())
            && let Some(target) = entry.link_name().map_err(corrupt)?
            && target
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(TarballError::UnsafePath(shown));
        }
        if !kind.is_file() {
            continue;
        }
        file_count += 1;
        unpacked_size = unpacked_size.saturating_add(entry.size());
        if unpacked_size > limits.max_unpacked_bytes {
            return Err(TarballError::TooLarge(limits.max_unpacked_bytes));
        }
        // npm looks with the glob `*.gyp`: case-sensitive, and not matching dotfiles.
        has_gyp_file |= components.len() == 2
            && std::path::Path::new(&components[1])
                .extension()
                .is_some_and(|e| e == "gyp");
        let is_manifest = components.len() == 2 && components[1] == "package.json";
        if is_manifest && (manifest.is_none() || fallback_manifest.is_none()) {
            if entry.size() > limits.max_manifest_bytes {
                return Err(TarballError::BadManifest(
                    "package.json is too large".into(),
                ));
            }
            let mut text = String::new();
            entry
                .by_ref()
                .take(limits.max_manifest_bytes)
                .read_to_string(&mut text)
                .map_err(|e| TarballError::BadManifest(e.to_string()))?;
            if components[0] == "package" {
                manifest = Some(text);
            } else if fallback_manifest.is_none() {
                fallback_manifest = Some(text);
            }
        }
    }
    let text = manifest
        .or(fallback_manifest)
        .ok_or(TarballError::NoManifest)?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TarballError::BadManifest(e.to_string()))?;
    if !manifest.is_object() {
        return Err(TarballError::BadManifest("not a JSON object".into()));
    }
    Ok(TarballSummary {
        manifest,
        file_count,
        unpacked_size,
        has_gyp_file,
    })
}

/// The paths below `dir` of the package directory (files, and the directories that hold them),
/// relative to `dir`: what npm's `directories.bin` expands to. A second walk of a tarball that
/// `inspect` has already checked, made only for a package that names a bin directory.
pub fn paths_under(bytes: &[u8], dir: &str, limits: TarballLimits) -> Vec<String> {
    let dir: Vec<&str> = dir
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(BoundedReader {
        inner: gz,
        remaining: limits.max_unpacked_bytes.saturating_add(1 << 20),
        limit: limits.max_unpacked_bytes,
    });
    let mut found = std::collections::BTreeSet::new();
    let Ok(entries) = archive.entries() else {
        return Vec::new();
    };
    for entry in entries.take(usize::try_from(limits.max_entries).unwrap_or(usize::MAX)) {
        let Ok(entry) = entry else { break };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Ok(path) = entry.path() else { continue };
        let parts: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        // parts[0] is the package directory, whatever its name.
        let Some(rest) = parts.get(1..) else { continue };
        if rest.len() <= dir.len() || rest.iter().zip(&dir).any(|(a, b)| a != b) {
            continue;
        }
        let below = &rest[dir.len()..];
        for depth in 1..=below.len() {
            found.insert(below[..depth].join("/"));
        }
    }
    found.into_iter().collect()
}

/// A reader that fails with `FileTooLarge` once more than `remaining` bytes have come through.
struct BoundedReader<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.remaining = self.remaining.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("unpacks to more than {} bytes", self.limit),
            )
        })?;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::tgz;

    #[test]
    fn reads_package_json() {
        let manifest = br#"{"name":"a","version":"1.0.0"}"#;
        let t = tgz(&[
            ("package/package.json", manifest),
            ("package/index.js", b"x"),
        ]);
        let s = inspect(&t, TarballLimits::default()).unwrap();
        assert_eq!(s.manifest["name"], "a");
        assert_eq!(s.file_count, 2);
        assert_eq!(s.unpacked_size, manifest.len() as u64 + 1);
    }

    #[test]
    fn rejects_bad_tarballs() {
        let lim = TarballLimits::default();
        assert_eq!(inspect(b"plain", lim).unwrap_err(), TarballError::NotGzip);
        assert_eq!(
            inspect(&tgz(&[("package/index.js", b"x")]), lim).unwrap_err(),
            TarballError::NoManifest
        );
        assert!(matches!(
            inspect(&tgz(&[("package/../../etc/passwd", b"x")]), lim).unwrap_err(),
            TarballError::UnsafePath(_)
        ));
        assert!(matches!(
            inspect(&tgz(&[("package/package.json", b"{nope")]), lim).unwrap_err(),
            TarballError::BadManifest(_)
        ));
    }

    #[test]
    fn gzip_bomb_is_bounded() {
        let big = vec![0u8; 4 << 20];
        let t = tgz(&[("package/package.json", b"{}"), ("package/zeros", &big)]);
        let lim = TarballLimits {
            max_unpacked_bytes: 1 << 20,
            ..TarballLimits::default()
        };
        assert!(matches!(
            inspect(&t, lim).unwrap_err(),
            TarballError::TooLarge(_)
        ));
    }
}
