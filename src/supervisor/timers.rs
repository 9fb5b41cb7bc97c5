//! `Timers`: the supervisor's deadlines (SIGKILL after `kill_timeout`, readiness timeouts),
//! kept in a heap so the loop sleeps exactly until the nearest one. Timers are never
//! cancelled: when one fires, the supervisor checks whether it still applies.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use nix::unistd::Pid;

use crate::process_control::SpawnId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// SIGKILL this process's group if it is still alive.
    Kill(SpawnId),
    /// The process was expected to be ready by now.
    ReadyTimeout(SpawnId),
    /// SIGKILL what is left of the group of an instance that has already exited.
    KillLeftovers(Pid),
}

#[derive(Debug, Default)]
pub struct Timers {
    /// (deadline, insertion number, timer); the number keeps equal deadlines in order.
    heap: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    inserted: u64,
}

impl Timers {
    pub fn add(&mut self, at: Instant, timer: Timer) {
        self.inserted += 1;
        self.heap.push(Reverse((at, self.inserted, timer)));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse((_, _, t))| t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_deadline_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.add(t0 + Duration::from_secs(2), Timer::Kill(2));
        timers.add(t0 + Duration::from_secs(1), Timer::Kill(1));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(5)),
            Some(Timer::Kill(1))
        );
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(5)),
            Some(Timer::Kill(2))
        );
        assert_eq!(timers.next_deadline(), None);
    }
}
