//! Versions and dist-tags: `publish::parse_version` and `DistTag::parse` on arbitrary text.
//!
//! Properties: nothing panics; an accepted version has no build metadata and round-trips through
//! its text; an accepted tag is URL-safe, at most 128 bytes, round-trips, and is never something
//! npm would read as a version or a range (so `npm install pkg@TAG` is never ambiguous); no
//! version's text is an acceptable tag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry::domain::DistTag;
use registry::domain::publish::parse_version;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(version) = parse_version(text) {
        assert!(version.build.is_empty(), "{text:?}");
        assert_eq!(parse_version(&version.to_string()).as_ref(), Ok(&version));
        for spelled in [version.to_string(), format!("v{version}")] {
            assert!(
                DistTag::parse(&spelled).is_err(),
                "version {spelled:?} accepted as a tag"
            );
        }
    }

    if let Ok(tag) = DistTag::parse(text) {
        assert_eq!(tag.as_str(), text);
        assert!(!text.is_empty() && text.len() <= 128);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{text:?}"
        );
        assert!(
            semver::Version::parse(text).is_err(),
            "tag {text:?} is a version"
        );
        assert!(
            semver::VersionReq::parse(text).is_err(),
            "tag {text:?} is a range"
        );
        let json = serde_json::to_string(&tag).unwrap();
        assert_eq!(serde_json::from_str::<DistTag>(&json).unwrap(), tag);
    }
});
