//! `RestartLimiter`: the sliding-window budget of automatic restarts ("at most `burst`
//! restarts in any `interval`"). Time is passed in, so tests drive it with a fake clock.
//!
//! A sliding window rather than systemd's fixed window: a crash loop that straddles a window
//! boundary cannot get twice the budget.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct RestartLimiter {
    burst: u32,
    interval: Duration,
    /// When the restarts still inside the window were made, oldest first.
    recent: VecDeque<Instant>,
}

impl RestartLimiter {
    pub(crate) fn new(burst: u32, interval: Duration) -> Self {
        RestartLimiter {
            burst,
            interval,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now` and returns true if it fits the budget; returns false, and
    /// records nothing, if it would be restart number `burst + 1` within `interval`.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> bool {
        // A restart made exactly `interval` ago has left the window.
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.interval {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.burst as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// When the restarts still inside the window were made, oldest first (the re-exec
    /// state writes them down).
    pub(crate) fn history(&self) -> impl Iterator<Item = Instant> + '_ {
        self.recent.iter().copied()
    }

    /// Takes back the restarts of [`RestartLimiter::history`] (the re-exec's new image).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn restore(&mut self, history: impl IntoIterator<Item = Instant>) {
        self.recent = history.into_iter().collect();
    }

    /// Forgets past restarts (a manual start or restart clears a give-up).
    pub(crate) fn reset(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn tenth_restart_is_allowed_and_eleventh_refused() {
        let t0 = Instant::now();
        let mut limiter = RestartLimiter::new(10, 60 * SECOND);
        for i in 0..10 {
            assert!(
                limiter.try_acquire(t0 + i * SECOND),
                "restart {} refused",
                i + 1
            );
        }
        assert!(
            !limiter.try_acquire(t0 + 10 * SECOND),
            "11th restart allowed"
        );
        // A refused restart is not recorded: it does not extend the penalty.
        assert!(!limiter.try_acquire(t0 + 59 * SECOND));
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let mut limiter = RestartLimiter::new(10, 60 * SECOND);
        for i in 0..10 {
            assert!(limiter.try_acquire(t0 + i * SECOND));
        }
        // Just before the first restart leaves the window: still full.
        assert!(!limiter.try_acquire(t0 + 60 * SECOND - Duration::from_millis(1)));
        // Exactly 60 s after the first restart, that one has left: one slot frees up.
        assert!(limiter.try_acquire(t0 + 60 * SECOND));
        assert!(!limiter.try_acquire(t0 + 60 * SECOND + Duration::from_millis(500)));
        // One second later the second restart has left too.
        assert!(limiter.try_acquire(t0 + 61 * SECOND));
    }

    #[test]
    fn restarts_spread_wider_than_the_window_never_run_out() {
        let t0 = Instant::now();
        let mut limiter = RestartLimiter::new(10, 60 * SECOND);
        for i in 0..1000 {
            assert!(limiter.try_acquire(t0 + i * 7 * SECOND));
        }
    }

    #[test]
    fn reset_clears_the_window() {
        let t0 = Instant::now();
        let mut limiter = RestartLimiter::new(2, 60 * SECOND);
        assert!(limiter.try_acquire(t0));
        assert!(limiter.try_acquire(t0));
        assert!(!limiter.try_acquire(t0));
        limiter.reset();
        assert!(limiter.try_acquire(t0));
    }

    #[test]
    fn a_zero_burst_refuses_every_restart() {
        let mut limiter = RestartLimiter::new(0, 60 * SECOND);
        assert!(!limiter.try_acquire(Instant::now()));
    }
}
