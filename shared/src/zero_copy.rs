//! Buffers whose bytes live in a sealed in-memory file, which the local listener sends with
//! `sendfile(2)`: the kernel hands the file's pages to the socket by reference instead of copying
//! the bytes in from the process's memory, as nginx does for static files. On a warm read of a
//! document of tens of kilobytes that copy was a fifth of the server's CPU.
//!
//! A file-backed buffer is an ordinary `Bytes` (over a read-only mapping of the file), so
//! everything else reads it as memory; the listener recognises it by address
//! ([`region_of`]) when hyper hands it a response body to write. Only the local server turns this
//! on ([`enable`]): a Lambda function's responses are copied into its runtime's API anyway.
//!
//! Soundness of the mapping: the file is sealed against writes, shrinking and growing before it is
//! mapped (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`), so the mapped bytes can never change or
//! vanish under a reader, and the mapping lives exactly as long as the last `Bytes` over it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

/// Buffers smaller than this stay on the heap: the file and mapping cost more than the copy.
pub const MIN_BYTES: usize = 32 * 1024;

/// Slices shorter than this are not looked up (a response head; the end of a body written in
/// part): copying them costs less than finding their file.
pub const MIN_SENT_BYTES: usize = 4 * 1024;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Bytes sent from file-backed buffers so far (by the listener's `sendfile`).
static SENT: AtomicU64 = AtomicU64::new(0);

/// Lets [`file_backed`] make file-backed buffers from now on (the local listener calls it).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// `parts` joined in a file-backed buffer, or `None` where that is off, not worth it (under
/// [`MIN_BYTES`]) or not possible now (the caller then joins them on the heap).
pub(crate) fn file_backed(parts: &[&[u8]]) -> Option<Bytes> {
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    if len < MIN_BYTES || !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    imp::file_backed(len, parts)
}

/// The file behind the file-backed buffer that `bytes` starts in, and where in the file `bytes`
/// starts: `None` for any other memory, or if fewer than `bytes.len()` file bytes follow.
#[cfg(target_os = "linux")]
pub fn region_of(bytes: &[u8]) -> Option<(std::sync::Arc<std::os::fd::OwnedFd>, u64)> {
    if bytes.len() < MIN_SENT_BYTES {
        return None;
    }
    imp::region_of(bytes)
}

/// Counts `n` bytes sent from a file-backed buffer.
pub(crate) fn record_sent(n: usize) {
    SENT.fetch_add(n as u64, Ordering::Relaxed);
}

/// Bytes sent from file-backed buffers so far.
pub fn sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, RwLock};

    use bytes::Bytes;
    use rustix::fs::{MemfdFlags, SealFlags};
    use rustix::mm::{MapFlags, ProtFlags};

    /// At most this many file-backed buffers at once (each holds a file descriptor): beyond it new
    /// buffers go on the heap, so descriptors stay free for connections.
    const MOST_LIVE: usize = 256;

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    /// Every live mapping: start address -> (length, its file).
    static REGIONS: RwLock<BTreeMap<usize, (usize, Arc<OwnedFd>)>> = RwLock::new(BTreeMap::new());

    fn regions_read() -> std::sync::RwLockReadGuard<'static, BTreeMap<usize, (usize, Arc<OwnedFd>)>>
    {
        REGIONS
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn regions_write()
    -> std::sync::RwLockWriteGuard<'static, BTreeMap<usize, (usize, Arc<OwnedFd>)>> {
        REGIONS
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sealed file's read-only mapping, registered while it lives.
    struct Mapping {
        addr: usize,
        len: usize,
    }

    impl AsRef<[u8]> for Mapping {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: `addr..addr + len` is a live read-only mapping of a file sealed against
            // writes, shrinking and growing (see `file_backed`); it is unmapped only in `drop`.
            unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // Unregistered first: once unmapped, the addresses may be reused by other memory.
            regions_write().remove(&self.addr);
            // SAFETY: the mapping was made by `file_backed` with this address and length, and no
            // `Bytes` over it is left (this is its owner's drop).
            let _ = unsafe { rustix::mm::munmap(self.addr as *mut std::ffi::c_void, self.len) };
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(super) fn file_backed(len: usize, parts: &[&[u8]]) -> Option<Bytes> {
        if LIVE.fetch_add(1, Ordering::Relaxed) >= MOST_LIVE {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let made = make(len, parts);
        if made.is_none() {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
        made
    }

    fn make(len: usize, parts: &[&[u8]]) -> Option<Bytes> {
        let fd =
            rustix::fs::memfd_create("packument", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .ok()?;
        let mut file = std::fs::File::from(fd);
        let mut slices: Vec<std::io::IoSlice<'_>> =
            parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        // `write_all_vectored` is unstable: the same loop by hand.
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return None,
                Ok(n) => std::io::IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let fd = OwnedFd::from(file);
        rustix::fs::fcntl_add_seals(
            &fd,
            SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        )
        .ok()?;
        // SAFETY: a fresh read-only shared mapping of `len` bytes of a file that holds exactly
        // `len` bytes and is sealed so they cannot change or go away.
        let addr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                // Populated: the pages count in the process's resident set, as heap bytes would.
                MapFlags::SHARED | MapFlags::POPULATE,
                &fd,
                0,
            )
        }
        .ok()? as usize;
        regions_write().insert(addr, (len, Arc::new(fd)));
        Some(Bytes::from_owner(Mapping { addr, len }))
    }

    pub(super) fn region_of(bytes: &[u8]) -> Option<(Arc<OwnedFd>, u64)> {
        let start = bytes.as_ptr() as usize;
        let regions = regions_read();
        let (&base, (len, fd)) = regions.range(..=start).next_back()?;
        let offset = start - base;
        (offset + bytes.len() <= *len).then(|| (fd.clone(), offset as u64))
    }

    #[cfg(test)]
    pub(super) fn registered(addr: usize) -> bool {
        regions_read().contains_key(&addr)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use bytes::Bytes;

    pub(super) fn file_backed(_: usize, _: &[&[u8]]) -> Option<Bytes> {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..=255u8)
            .cycle()
            .take(len)
            .map(|b| b.wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn a_file_backed_buffer_holds_its_parts_and_is_found_by_address_while_it_lives() {
        enable();
        let (a, b) = (pattern(40_000, 1), pattern(30_000, 2));
        let joined = file_backed(&[&a, &b]).expect("file-backed");
        assert_eq!(joined.len(), 70_000);
        assert_eq!(&joined[..40_000], &a[..]);
        assert_eq!(&joined[40_000..], &b[..]);

        // The whole buffer, and a tail of it (as a partly written body is handed back).
        let (file, offset) = region_of(&joined).expect("the whole buffer");
        assert_eq!(offset, 0);
        let mut read = vec![0; 70_000];
        rustix::io::pread(&*file, &mut read, 0).unwrap();
        assert_eq!(read, joined[..]);
        let (_, offset) = region_of(&joined[1_000..]).expect("a tail");
        assert_eq!(offset, 1_000);
        // A clone shares the mapping; heap memory and short slices are not file-backed.
        assert_eq!(region_of(&joined.clone()).map(|(_, o)| o), Some(0));
        assert!(region_of(&a).is_none());
        assert!(region_of(&joined[..MIN_SENT_BYTES - 1]).is_none());
        assert!(region_of(&joined[60_000..]).is_some());

        let addr = joined.as_ptr() as usize;
        drop(file);
        drop(joined);
        assert!(
            !imp::registered(addr),
            "unregistered when the last Bytes goes"
        );
    }

    #[test]
    fn small_buffers_stay_on_the_heap() {
        enable();
        assert!(file_backed(&[&pattern(MIN_BYTES - 1, 3)]).is_none());
        assert!(file_backed(&[&pattern(MIN_BYTES / 2, 3), &pattern(MIN_BYTES / 2, 4)]).is_some());
    }
}
