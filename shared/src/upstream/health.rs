//! Whether an upstream is up: after `max_fails` failures in a row it is marked down for
//! `fail_timeout` (Verdaccio's `max_fails` and `fail_timeout`), so requests meanwhile are
//! answered from what is kept at once instead of each waiting for a timeout. Then one request
//! probes it: if that fails too, it is marked down again at once (the failures in a row are
//! counted until an answer comes, as Verdaccio counts them).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One upstream's recent failures.
pub struct Health {
    max_fails: u32,
    fail_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    fails: u32,
    down_until: Option<Instant>,
}

impl Health {
    /// Marks down after `max_fails` failures in a row, for `fail_timeout`.
    pub fn new(max_fails: u32, fail_timeout: Duration) -> Self {
        Self {
            max_fails: max_fails.max(1),
            fail_timeout,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the upstream is marked down now (then it is not asked).
    pub fn is_down(&self) -> bool {
        self.is_down_at(Instant::now())
    }

    fn is_down_at(&self, now: Instant) -> bool {
        self.lock().down_until.is_some_and(|until| now < until)
    }

    /// Records an answer.
    pub fn succeeded(&self) {
        let mut state = self.lock();
        state.fails = 0;
        state.down_until = None;
    }

    /// Records a failure; says whether it marked the upstream down.
    pub fn failed(&self) -> bool {
        self.failed_at(Instant::now())
    }

    fn failed_at(&self, now: Instant) -> bool {
        let mut state = self.lock();
        state.fails = state.fails.saturating_add(1);
        if state.fails >= self.max_fails {
            state.down_until = Some(now + self.fail_timeout);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_max_fails_until_the_timeout() {
        let h = Health::new(2, Duration::from_millis(50));
        assert!(!h.failed());
        assert!(!h.is_down());
        assert!(h.failed());
        assert!(h.is_down());
        assert!(
            !h.is_down_at(Instant::now() + Duration::from_millis(60)),
            "probed again after the timeout"
        );
        h.succeeded();
        assert!(!h.failed(), "the count starts again");
    }

    #[test]
    fn a_failed_probe_after_the_timeout_marks_it_down_again_at_once() {
        let h = Health::new(3, Duration::from_millis(50));
        let start = Instant::now();
        for _ in 0..2 {
            assert!(!h.failed_at(start));
        }
        assert!(h.failed_at(start), "the third failure in a row");
        let later = start + Duration::from_millis(60);
        assert!(!h.is_down_at(later), "one request probes it");
        assert!(h.failed_at(later), "the probe failed: down again");
        assert!(h.is_down_at(later + Duration::from_millis(40)));
        h.succeeded();
        assert!(!h.is_down_at(later));
        assert!(!h.failed_at(later), "an answer ends the failures in a row");
    }
}
