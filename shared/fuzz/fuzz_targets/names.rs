//! Package names: `PackageName::parse` and `parse_new` on arbitrary text.
//!
//! Properties: nothing panics; an accepted name round-trips (text, `Display`, serde, its parts);
//! it holds only what a URL path segment and a storage key may hold; `parse_new` accepts a subset
//! of what `parse` accepts; and every accepted name is routable in each encoding clients send.
#![no_main]

use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use registry::domain::{PackageName, TarballKey};
use registry::http::routes::{MetadataRoute, Route, TarballFile, TarballRoute, resolve};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let new = PackageName::parse_new(text);
    let Ok(name) = PackageName::parse(text) else {
        assert!(
            new.is_err(),
            "parse_new accepted {text:?}, which parse refuses"
        );
        return;
    };
    if let Ok(new) = &new {
        assert_eq!(new, &name);
        assert!(!text.chars().any(|c| c.is_ascii_uppercase()), "{text:?}");
    }

    // Round trips.
    assert_eq!(name.as_str(), text);
    assert_eq!(name.to_string(), text);
    assert_eq!(PackageName::parse(name.as_str()).as_ref(), Ok(&name));
    let json = serde_json::to_string(&name).unwrap();
    assert_eq!(serde_json::from_str::<PackageName>(&json).unwrap(), name);
    match name.scope() {
        Some(scope) => assert_eq!(format!("@{scope}/{}", name.base_name()), text),
        None => assert_eq!(name.base_name(), text),
    }

    // Safe in a path segment and a storage key.
    assert!(text.len() <= 214);
    assert_eq!(
        text.matches('/').count(),
        usize::from(name.scope().is_some())
    );
    for part in name.scope().into_iter().chain([name.base_name()]) {
        assert!(
            !part.is_empty() && !part.starts_with(['.', '_']),
            "{text:?}"
        );
        assert!(
            part.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()".contains(c)),
            "{text:?}"
        );
    }

    // Every accepted name is routable, escaped or not; except a base name of `-`, which request
    // paths cannot carry unambiguously (and `parse_new` refuses).
    if name.base_name() == "-" {
        assert!(new.is_err(), "{text:?} may be created but not routed");
        return;
    }
    let packument = Ok(Route::Metadata(MetadataRoute::Packument {
        name: name.clone(),
    }));
    assert_eq!(
        resolve(&Method::GET, &format!("/{}", name.escaped())),
        packument
    );
    assert_eq!(resolve(&Method::GET, &format!("/{text}")), packument);
    assert_eq!(
        resolve(
            &Method::GET,
            &format!("/{}/-/{}", name.escaped(), tarball(&name))
        ),
        Ok(Route::Tarball(TarballRoute::Download {
            name: name.clone(),
            file: TarballFile::parse(&name, &tarball(&name)),
        }))
    );
    assert_eq!(
        resolve(
            &Method::GET,
            &format!("/-/package/{}/dist-tags", name.escaped())
        ),
        Ok(Route::Metadata(MetadataRoute::DistTags {
            name: name.clone()
        }))
    );

    // Its own tarball's file name carries the version.
    assert_eq!(
        TarballFile::parse(&name, &tarball(&name)).version(),
        Some(&semver::Version::parse("1.2.3-rc.1").unwrap())
    );

    // Its storage key leads back to it.
    let version = semver::Version::parse("1.2.3-rc.1").unwrap();
    let key = TarballKey::new(&name, &version, "0123456789abcdef");
    let (parsed, key_name, key_version) = TarballKey::parse(key.as_str()).expect("own key parses");
    assert_eq!((parsed, key_name, key_version), (key, name, version));
});

fn tarball(name: &PackageName) -> String {
    name.tarball_file_name(&semver::Version::parse("1.2.3-rc.1").unwrap())
}
