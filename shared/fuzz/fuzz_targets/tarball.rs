//! Tarball inspection: `tarball::inspect` with small limits.
//!
//! The first byte picks the mode. Even: the rest is the `.tgz` as uploaded. Odd: the rest is a
//! plain tar that the harness gzips, so the fuzzer works on the tar headers rather than on
//! deflate streams it would rarely get right.
//!
//! Properties: nothing panics and no input unpacks past the bound; an accepted tarball stays
//! within the entry and size limits and has a JSON object for its `package.json`.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use registry::domain::tarball::{TarballLimits, inspect};

const LIMITS: TarballLimits = TarballLimits {
    max_unpacked_bytes: 1 << 20,
    max_entries: 64,
    max_manifest_bytes: 64 << 10,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tgz = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(rest).unwrap();
        gz.finish().unwrap()
    };
    let Ok(summary) = inspect(&tgz, LIMITS) else {
        return;
    };
    assert!(summary.manifest.is_object());
    assert!(summary.file_count <= LIMITS.max_entries);
    assert!(summary.unpacked_size <= LIMITS.max_unpacked_bytes);
});
