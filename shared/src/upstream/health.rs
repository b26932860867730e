//! Whether an upstream is up: after `max_fails` failures in a row it is marked down for
//! `fail_timeout` (Verdaccio's `max_fails` and `fail_timeout`), so requests meanwhile are
//! answered from what is kept at once instead of each waiting for a timeout.

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
        let mut state = self.lock();
        state.fails += 1;
        if state.fails >= self.max_fails {
            state.fails = 0;
            state.down_until = Some(Instant::now() + self.fail_timeout);
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
}
