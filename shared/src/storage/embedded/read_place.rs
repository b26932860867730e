//! Where a read of the database runs: on the async worker that asked, or on the blocking pool.
//!
//! A read of pages the OS holds in memory takes microseconds, less than a hand-off to another
//! thread and back (measured: a fifth more CPU per cold packument read), so reads run in place.
//! But a read that waits on the disk holds one of the few async workers (one per core) for that
//! wait: with 64 cold reads at once and 2 workers, only 2 waited on the disk at a time, and
//! every read of pages in memory queued behind them. So once an in-place read has read from
//! the disk, reads go to the blocking pool for a while, where many wait on the disk side by
//! side; they come back in place once none has read from the disk for that long.
//!
//! Whether a read went to the disk is what the kernel counted for the thread (blocks read in,
//! `getrusage`), not how long it took: on a busy machine a read in memory can take long too,
//! when its thread waits for a core, and that is no reason to leave the workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long reads stay on the blocking pool after the last one that read from the disk.
const OFF_FOR: Duration = Duration::from_secs(1);

/// Whether reads run in place, decided by whether the latest ones read from the disk.
pub(super) struct ReadPlace {
    /// When this was made: times below are microseconds since then.
    origin: Instant,
    /// Until when reads run on the blocking pool.
    off_until: AtomicU64,
}

impl ReadPlace {
    pub(super) fn new() -> Self {
        ReadPlace {
            origin: Instant::now(),
            off_until: AtomicU64::new(0),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether the next read may run on the async worker.
    pub(super) fn in_place(&self) -> bool {
        self.in_place_at(Instant::now())
    }

    fn in_place_at(&self, at: Instant) -> bool {
        self.micros(at) >= self.off_until.load(Ordering::Relaxed)
    }

    /// Runs `read` on this thread, and if it read from the disk, sends the reads after it off
    /// the async workers for `OFF_FOR`.
    pub(super) fn run<T>(&self, read: impl FnOnce() -> T) -> T {
        let before = blocks_read_in();
        let out = read();
        if blocks_read_in() > before {
            self.went_to_disk(Instant::now());
        }
        out
    }

    pub(super) fn went_to_disk(&self, at: Instant) {
        self.off_until
            .fetch_max(self.micros(at + OFF_FOR), Ordering::Relaxed);
    }
}

/// Blocks this thread has read from storage so far (page-cache misses; reads the OS answered
/// from memory do not count). Zero where the kernel does not say.
#[cfg(target_os = "linux")]
fn blocks_read_in() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` writes a whole `rusage` to the pointer it is given, which points to
    // one; on failure (it has none for `RUSAGE_THREAD`) it is left zeroed, also a valid value.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    u64::try_from(usage.ru_inblock).unwrap_or(0)
}

#[cfg(not(target_os = "linux"))]
fn blocks_read_in() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_read_from_the_disk_sends_the_next_ones_off_the_workers_for_a_while() {
        let place = ReadPlace::new();
        assert!(place.in_place());
        let sum = place.run(|| (0..1000u64).sum::<u64>());
        assert_eq!(sum, 499_500);
        assert!(place.in_place(), "a read in memory changes nothing");
        let now = Instant::now();
        place.went_to_disk(now);
        assert!(
            !place.in_place_at(now),
            "after a read from the disk, reads leave the workers"
        );
        assert!(!place.in_place_at(now + OFF_FOR / 2));
        assert!(
            place.in_place_at(now + OFF_FOR),
            "and come back once none read from it"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_the_page_cache_answers_stay_in_place_and_reads_from_the_disk_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        // Just written: its pages are in memory, and reading them reads nothing from the disk.
        let place = ReadPlace::new();
        place.run(|| {
            let mut bytes = Vec::new();
            std::fs::File::open(&path)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
        });
        assert!(place.in_place());

        // Its pages dropped from memory (written out first): the read goes to the disk.
        let file = std::fs::File::open(&path).unwrap();
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        place.run(|| {
            let mut bytes = Vec::new();
            (&file).read_to_end(&mut bytes).unwrap();
            assert_eq!(bytes.len(), 1 << 20);
        });
        assert!(!place.in_place(), "a read from the disk is seen as one");
    }
}
