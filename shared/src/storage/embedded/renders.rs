//! Rendered packuments kept between runs (`RenderStore`), one file each under `renders/` in the
//! data directory: the pieces `http::incremental` keeps, then their CRC-32.
//!
//! Files rather than database values: a value of megabytes is read whole into a page that the
//! database's cache then also holds, so a big package's first read after a start took three
//! copies of its document; a file is read once, into the buffer the pieces are then slices of.
//! They are a cache: written without fsync, and a file that does not check out (a crash cut
//! it short) reads as absent, so the package is built from its records again.

use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;

use super::dir::DataDir;
use super::internal;
use crate::storage::StoreError;

/// The kept pieces in `file`, if it is whole (its CRC-32 matches).
pub(super) fn read(mut file: std::fs::File, path: &Path) -> Result<Option<Bytes>, StoreError> {
    let len = file.metadata().map_err(internal)?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(internal)?;
    let Some(body_len) = bytes.len().checked_sub(4) else {
        tracing::warn!(file = %path.display(), "a kept render is damaged; building instead");
        return Ok(None);
    };
    let mut crc = [0; 4];
    crc.copy_from_slice(&bytes[body_len..]);
    bytes.truncate(body_len);
    if crc32fast::hash(&bytes) != u32::from_le_bytes(crc) {
        tracing::warn!(file = %path.display(), "a kept render is damaged; building instead");
        return Ok(None);
    }
    Ok(Some(Bytes::from(bytes)))
}

/// Writes `render` to `path` (through a temporary file, renamed into place, so a reader sees
/// the old file or the new one).
pub(super) fn write(dir: &DataDir, path: &Path, mut render: Vec<u8>) -> Result<(), StoreError> {
    let crc = crc32fast::hash(&render);
    render.extend_from_slice(&crc.to_le_bytes());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(internal)?;
    }
    std::fs::create_dir_all(dir.tmp()).map_err(internal)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&dir.tmp_prefix)
        .tempfile_in(dir.tmp())
        .map_err(internal)?;
    tmp.write_all(&render).map_err(internal)?;
    tmp.persist(path).map_err(|e| internal(e.error))?;
    Ok(())
}
