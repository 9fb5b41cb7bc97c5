//! `Timers`: the supervisor's deadlines (SIGKILL after `kill_timeout`, readiness timeouts,
//! leftover groups), ordered so the loop sleeps exactly until the nearest one. A deadline that
//! no longer applies (the process exited, or became ready) is cancelled, so an idle clusterd
//! never wakes up for nothing; when one fires, the supervisor still checks it applies.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::supervisor::process_control::SpawnId;
use crate::unit::MAX_DURATION;

/// `Serialize`: the re-exec state writes armed timers down as they are (`snapshot.rs`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Timer {
    /// SIGKILL this process's group if it is still alive.
    Kill(SpawnId),
    /// Send `kill_signal` to a process still running after it was asked to leave (a Node
    /// worker's disconnect, the unit's `stop_message`).
    KillSignal(SpawnId),
    /// The process was expected to be ready by now.
    ReadyTimeout(SpawnId),
    /// The process has run its unit's `ready_after`: ready now if it would be.
    ReadyAfter(SpawnId),
    /// A Node worker of a `ready = "listening"` unit has not listened within
    /// `listen_timeout`: it counts as ready anyway.
    ListenTimeout(SpawnId),
    /// SIGKILL what is left of an instance (spawn id, pid) whose own process has exited.
    KillLeftovers(SpawnId, #[serde(with = "raw_pid")] Pid),
    /// What is left of an instance (spawn id, pid) got SIGKILL `AFTER_SIGKILL` ago: stop
    /// waiting for it.
    GiveUpOnLeftovers(SpawnId, #[serde(with = "raw_pid")] Pid),
    /// SIGKILL the group of an `on_giveup` hook still running `kill_timeout` after clusterd
    /// asked it to stop (at shutdown).
    KillHook(#[serde(with = "raw_pid")] Pid),
    /// Start the missing instances of this unit again: their start failed because the
    /// system was out of resources.
    RetryStarts(String),
    /// Check this unit's instances against its `memory_max`.
    MemoryCheck(String),
    /// Restart instance `index` of the unit: its `restart_delay` or backoff has passed.
    Restart(String, u32),
    /// The unit's `cron_restart` time: a rolling reload.
    Cron(String),
    /// A one-shot's `schedule` is due: a run.
    Schedule(String),
    /// The unit's watched files have been quiet for `watch_delay` after a change: reload.
    WatchReload(String),
    /// The process's `watchdog` may have run out: re-armed from its last sign of life, or
    /// it is replaced.
    Watchdog(SpawnId),
    /// Start the process's next `[health]` check.
    HealthCheck(SpawnId),
    /// The process's running `[health]` check has taken its `timeout`.
    ProbeTimeout(SpawnId),
    /// `shutdown_delay` after SIGTERM/SIGINT: stop everything now.
    ShutdownDelay,
    /// A second shutdown signal sent SIGKILL to everything `AFTER_SIGKILL` ago: end without
    /// what is still running.
    ShutdownDeadline,
}

/// A pid as its number, for serde (nix's `Pid` has no serde).
mod raw_pid {
    use nix::unistd::Pid;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(pid: &Pid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(pid.as_raw())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Pid, D::Error> {
        i32::deserialize(d).map(Pid::from_raw)
    }
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    /// (deadline, insertion number, timer); the number keeps equal deadlines in order.
    queue: BTreeSet<(Instant, u64, Timer)>,
    /// Where each armed timer sits in `queue`: a timer is armed at most once.
    armed: HashMap<Timer, (Instant, u64)>,
    inserted: u64,
}

impl Timers {
    /// Arms `timer` at `at`. If it is already armed, the earlier deadline stands: a stop
    /// after a suicide must not postpone the SIGKILL the suicide already scheduled.
    pub(super) fn add(&mut self, at: Instant, timer: Timer) {
        if self
            .armed
            .get(&timer)
            .is_some_and(|&(armed_at, _)| armed_at <= at)
        {
            return;
        }
        self.cancel(timer.clone());
        self.inserted += 1;
        self.queue.insert((at, self.inserted, timer.clone()));
        self.armed.insert(timer, (at, self.inserted));
    }

    /// Arms `timer` `delay` after `now`. A delay too long for the clock fires at the latest
    /// instant it can represent rather than overflow (unit files bound delays already; this
    /// keeps a deadline computation from ever panicking).
    pub(super) fn add_after(&mut self, now: Instant, delay: Duration, timer: Timer) {
        let at = now
            .checked_add(delay)
            .or_else(|| now.checked_add(MAX_DURATION))
            .unwrap_or(now);
        self.add(at, timer);
    }

    pub(super) fn cancel(&mut self, timer: Timer) {
        if let Some((at, n)) = self.armed.remove(&timer) {
            self.queue.remove(&(at, n, timer));
        }
    }

    /// When `timer` fires, if it is armed.
    pub(super) fn deadline_of(&self, timer: &Timer) -> Option<Instant> {
        self.armed.get(timer).map(|&(at, _)| at)
    }

    pub(super) fn is_armed(&self, timer: &Timer) -> bool {
        self.armed.contains_key(timer)
    }

    /// Every armed timer with its deadline, earliest first.
    pub(super) fn armed(&self) -> impl Iterator<Item = (Instant, &Timer)> {
        self.queue.iter().map(|(at, _, timer)| (*at, timer))
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let &(at, _, _) = self.queue.first()?;
        if at > now {
            return None;
        }
        let (_, _, timer) = self.queue.pop_first()?;
        self.armed.remove(&timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_past_the_end_of_the_clock_does_not_overflow() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.add_after(t0, Duration::MAX, Timer::Kill(1));
        assert!(timers.next_deadline().is_some_and(|at| at > t0));
    }

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

    #[test]
    fn a_cancelled_timer_is_no_deadline_and_rearming_keeps_the_earlier_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.add(t0 + Duration::from_secs(1), Timer::ReadyTimeout(7));
        timers.cancel(Timer::ReadyTimeout(7));
        assert_eq!(timers.next_deadline(), None);
        timers.add(t0 + Duration::from_secs(3), Timer::Kill(7));
        timers.add(t0 + Duration::from_secs(1), Timer::Kill(7));
        timers.add(t0 + Duration::from_secs(5), Timer::Kill(7));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(2)),
            Some(Timer::Kill(7))
        );
        assert_eq!(timers.next_deadline(), None);
    }
}
